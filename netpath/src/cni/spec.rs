//! The CNI specification's data (1.0.0, and 0.4.0 where it differs): the network
//! configuration a runtime passes on stdin, the result and the error object the plugin
//! prints. <https://github.com/containernetworking/cni/blob/main/SPEC.md>
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The versions this plugin speaks, as VERSION reports them. 1.1.0's result is 1.0.0's;
/// it adds the STATUS and GC commands.
pub const SUPPORTED: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// The version of an answer when the runtime's is unknown (an error before the netconf is
/// read), and of the conflist netpath prints: podman 4.3's libcni refuses a conflist of
/// 1.1.0, which it does not know.
pub const DEFAULT: &str = "1.0.0";

/// Well-known error codes (spec, "Error").
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD now (the agent is not there or not usable).
    pub const NOT_AVAILABLE: u32 = 50;
    /// Plugin-specific (100+): the agent refused the request; `msg` is its reason.
    pub const AGENT_REFUSED: u32 = 100;
    /// Plugin-specific: CHECK found the container's network not as it was added.
    pub const DRIFT: u32 = 101;
}

/// The network configuration on stdin; only the keys netpath reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    /// Where the agent's socket is (`--run-dir` of the agent).
    #[serde(default = "default_run_dir")]
    pub run_dir: PathBuf,
    /// Passed through to the result, as the spec's `dns` key.
    #[serde(default)]
    pub dns: Option<Value>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub prev_result: Option<Value>,
}

fn default_run_dir() -> PathBuf {
    PathBuf::from("/run/netpath")
}

/// What a runtime adds per container for the capabilities a conflist declares.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// Addresses asked for, `10.77.0.9/24` or `10.77.0.9`.
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub mac: Option<String>,
}

/// The `portMappings` capability's entry (as the `portmap` plugin reads it).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i64,
    pub container_port: i64,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

/// The spec's error object: printed on stdout, with a non-zero exit.
#[derive(Debug, Serialize)]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError { cni_version: DEFAULT.into(), code, msg: msg.into(), details: String::new() }
    }

    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
}

/// What ADD reports: the two interfaces, the address with its gateway, the default
/// route, and the configuration's DNS.
pub struct Added<'a> {
    pub version: &'a str,
    pub host_ifname: &'a str,
    pub host_mac: &'a str,
    pub ifname: &'a str,
    pub mac: &'a str,
    pub sandbox: &'a str,
    pub address: String,
    pub gateway: String,
    pub dns: Option<&'a Value>,
}

impl Added<'_> {
    pub fn to_json(&self) -> Value {
        let mut ip = json!({ "address": self.address, "gateway": self.gateway, "interface": 1 });
        // 0.4.0 tags each address with its family; 1.0.0 dropped the key.
        if self.version.starts_with("0.") {
            ip["version"] = json!("4");
        }
        json!({
            "cniVersion": self.version,
            "interfaces": [
                { "name": self.host_ifname, "mac": self.host_mac },
                { "name": self.ifname, "mac": self.mac, "sandbox": self.sandbox },
            ],
            "ips": [ip],
            "routes": [{ "dst": "0.0.0.0/0", "gw": self.gateway }],
            "dns": self.dns.cloned().unwrap_or_else(|| json!({})),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_podman_netconf_with_its_runtime_config() {
        let conf: NetConf = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","name":"np","type":"netpath","runDir":"/tmp/r",
                "dns":{"nameservers":["10.0.0.53"]},
                "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":""}],
                                 "ips":["10.77.0.9/24"],"mac":"0a:58:0a:4d:00:09"}}"#,
        )
        .unwrap();
        assert_eq!(conf.run_dir, PathBuf::from("/tmp/r"));
        assert_eq!(conf.runtime_config.port_mappings[0].host_port, 8080);
        assert_eq!(conf.runtime_config.port_mappings[0].host_ip.as_deref(), Some(""));
        assert_eq!(conf.runtime_config.ips, ["10.77.0.9/24"]);
        let bare: NetConf =
            serde_json::from_str(r#"{"cniVersion":"0.4.0","name":"np","type":"netpath"}"#).unwrap();
        assert_eq!(bare.run_dir, PathBuf::from("/run/netpath"));
    }

    #[test]
    fn results_follow_the_version_asked_for() {
        let dns = json!({"nameservers": ["10.0.0.53"]});
        let mut added = Added {
            version: "1.0.0",
            host_ifname: "np0123456789",
            host_mac: "0e:00:00:00:00:01",
            ifname: "eth0",
            mac: "0a:58:0a:4d:00:02",
            sandbox: "/run/netns/c",
            address: "10.77.0.2/32".into(),
            gateway: "10.77.0.1".into(),
            dns: Some(&dns),
        };
        let v = added.to_json();
        assert_eq!(v["ips"][0], json!({"address": "10.77.0.2/32", "gateway": "10.77.0.1", "interface": 1}));
        assert_eq!(v["interfaces"][1]["sandbox"], "/run/netns/c");
        assert_eq!(v["dns"], dns);
        added.version = "0.4.0";
        assert_eq!(added.to_json()["ips"][0]["version"], "4");
        let e = serde_json::to_value(CniError::new(code::TRY_AGAIN_LATER, "no agent")).unwrap();
        assert_eq!(e, json!({"cniVersion": "1.0.0", "code": 11, "msg": "no agent"}));
    }
}
