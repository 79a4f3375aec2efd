//! The CNI specification's data (1.0.0, 1.1.0's GC list, and 0.4.0 where it differs):
//! the network configuration a runtime passes on stdin, the result and the error object
//! the plugin prints. <https://github.com/containernetworking/cni/blob/main/SPEC.md>
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
    /// GC: the attachments still valid. Read as they came, so that a bad shape is named
    /// by [`NetConf::valid_attachments`], and a `null` (libcni's empty list) is told from
    /// an absent key.
    #[serde(default, rename = "cni.dev/valid-attachments", deserialize_with = "present")]
    pub valid_attachments: Option<Value>,
    /// The same list under the name the 1.1.0 text first gave it; libcni sends both.
    #[serde(default, rename = "cni.dev/attachments", deserialize_with = "present")]
    pub attachments: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// An attachment a runtime still holds: GC keeps its endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

impl NetConf {
    /// GC's list of the attachments still valid. An absent list is refused rather than
    /// read as empty: GC would then take every container's network.
    pub fn valid_attachments(&self) -> Result<Vec<Attachment>, CniError> {
        let (key, list) = match (&self.valid_attachments, &self.attachments) {
            (Some(list), _) => ("cni.dev/valid-attachments", list),
            (None, Some(list)) => ("cni.dev/attachments", list),
            (None, None) => {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    "GC needs cni.dev/valid-attachments, the attachments still valid \
                     (an empty list to remove them all); a runtime of CNI 1.1 sends it",
                ))
            }
        };
        let entries = match list {
            Value::Null => return Ok(Vec::new()),
            Value::Array(entries) => entries,
            other => {
                return Err(CniError::new(
                    code::DECODE_FAILURE,
                    format!(
                        "{key} is {other}, not a list: give [{{\"containerID\": ID, \"ifname\": NAME}}, ...]"
                    ),
                ))
            }
        };
        entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                Attachment::deserialize(entry).map_err(|e| {
                    CniError::new(
                        code::DECODE_FAILURE,
                        format!(
                            "{key} entry {i}, {entry}, is not an attachment ({e}): give {{\"containerID\": ID, \"ifname\": NAME}}"
                        ),
                    )
                })
            })
            .collect()
    }
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
    /// The IPv6 address (a /128, gateway fe80::1), when the agent has an IPv6 pod CIDR.
    pub address6: Option<String>,
    pub dns: Option<&'a Value>,
}

impl Added<'_> {
    pub fn to_json(&self) -> Value {
        // A macvlan/ipvlan endpoint has no host side: the container's is the only one.
        let host =
            (!self.host_ifname.is_empty()).then(|| json!({ "name": self.host_ifname, "mac": self.host_mac }));
        let index = usize::from(host.is_some());
        // No gateway: a sub-interface on a network without a router the node knows.
        let gateway = (self.gateway != "0.0.0.0").then_some(&self.gateway);
        let mut ip = json!({ "address": self.address, "interface": index });
        if let Some(g) = gateway {
            ip["gateway"] = json!(g);
        }
        let gateway6 = std::net::Ipv6Addr::from(netpath_common::GATEWAY6).to_string();
        let mut ip6 =
            self.address6.as_ref().map(|a| json!({ "address": a, "gateway": gateway6, "interface": index }));
        // 0.4.0 tags each address with its family; 1.0.0 dropped the key.
        if self.version.starts_with("0.") {
            ip["version"] = json!("4");
            if let Some(ip6) = &mut ip6 {
                ip6["version"] = json!("6");
            }
        }
        let mut routes: Vec<Value> =
            gateway.map(|g| json!({ "dst": "0.0.0.0/0", "gw": g })).into_iter().collect();
        if ip6.is_some() {
            routes.push(json!({ "dst": "::/0", "gw": gateway6 }));
        }
        json!({
            "cniVersion": self.version,
            "interfaces": host
                .into_iter()
                .chain([json!({ "name": self.ifname, "mac": self.mac, "sandbox": self.sandbox })])
                .collect::<Vec<_>>(),
            "ips": std::iter::once(ip).chain(ip6).collect::<Vec<_>>(),
            "routes": routes,
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

    fn gc_conf(extra: &str) -> NetConf {
        serde_json::from_str(&format!(r#"{{"cniVersion":"1.1.0","name":"np","type":"netpath"{extra}}}"#))
            .unwrap()
    }

    #[test]
    fn gc_reads_the_valid_attachments_under_either_name() {
        let a = |id: &str, ifname: &str| Attachment { container_id: id.into(), ifname: ifname.into() };
        let conf = gc_conf(
            r#","cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"},{"containerID":"c2","ifname":"net1"}]"#,
        );
        assert_eq!(conf.valid_attachments().unwrap(), [a("c1", "eth0"), a("c2", "net1")]);
        let older = gc_conf(r#","cni.dev/attachments":[{"containerID":"c1","ifname":"eth0"}]"#);
        assert_eq!(older.valid_attachments().unwrap(), [a("c1", "eth0")]);
        // libcni sends both; the spec's name is the one read.
        let both = gc_conf(
            r#","cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}],"cni.dev/attachments":[]"#,
        );
        assert_eq!(both.valid_attachments().unwrap(), [a("c1", "eth0")]);
        // Go's nil list is null: no attachment is valid.
        assert!(gc_conf(r#","cni.dev/valid-attachments":null"#).valid_attachments().unwrap().is_empty());
        assert!(gc_conf(r#","cni.dev/valid-attachments":[]"#).valid_attachments().unwrap().is_empty());
    }

    #[test]
    fn gc_refuses_a_missing_or_misshapen_list_naming_it() {
        let missing = gc_conf("").valid_attachments().unwrap_err();
        assert_eq!(missing.code, code::INVALID_CONFIG);
        assert!(missing.msg.contains("cni.dev/valid-attachments"), "{}", missing.msg);
        let bad = |extra: &str| gc_conf(extra).valid_attachments().unwrap_err();
        let e = bad(r#","cni.dev/valid-attachments":{"containerID":"c1","ifname":"eth0"}"#);
        assert_eq!(e.code, code::DECODE_FAILURE);
        assert!(e.msg.contains("not a list"), "{}", e.msg);
        let e = bad(
            r#","cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"},{"containerID":"c2"}]"#,
        );
        assert_eq!(e.code, code::DECODE_FAILURE);
        assert!(e.msg.contains("entry 1") && e.msg.contains("ifname"), "{}", e.msg);
        let e = bad(r#","cni.dev/attachments":["c1"]"#);
        assert!(e.msg.contains("cni.dev/attachments entry 0, \"c1\""), "{}", e.msg);
        let e = bad(r#","cni.dev/valid-attachments":[{"containerID":7,"ifname":"eth0"}]"#);
        assert_eq!(e.code, code::DECODE_FAILURE);
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
            address6: None,
            dns: Some(&dns),
        };
        let v = added.to_json();
        assert_eq!(v["ips"][0], json!({"address": "10.77.0.2/32", "gateway": "10.77.0.1", "interface": 1}));
        assert_eq!(v["ips"].as_array().unwrap().len(), 1);
        added.address6 = Some("fd00:77::2/128".into());
        let v = added.to_json();
        assert_eq!(v["ips"][1], json!({"address": "fd00:77::2/128", "gateway": "fe80::1", "interface": 1}));
        assert_eq!(v["routes"][1], json!({"dst": "::/0", "gw": "fe80::1"}));
        added.address6 = None;
        assert_eq!(v["interfaces"][1]["sandbox"], "/run/netns/c");
        assert_eq!(v["dns"], dns);
        added.version = "0.4.0";
        assert_eq!(added.to_json()["ips"][0]["version"], "4");
        let e = serde_json::to_value(CniError::new(code::TRY_AGAIN_LATER, "no agent")).unwrap();
        assert_eq!(e, json!({"cniVersion": "1.0.0", "code": 11, "msg": "no agent"}));
    }
}
