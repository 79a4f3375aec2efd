//! netpath as a CNI plugin: the same binary, run by a container runtime with
//! `CNI_COMMAND` in its environment. A thin client of the agent's socket: the agent
//! does the plumbing, as for `netpath endpoint add`, so there is one code path for both.
//!
//! The endpoint of a container is named after its ID (`cni-` and the ID's first twelve
//! characters, as `docker ps` shortens it) and records the full ID as its owner: an add
//! repeated by the same container is idempotent, one by another container whose ID
//! shares the prefix is refused, and a delete takes only the owner's endpoint.
mod gc;
pub mod spec;

use std::{
    io::Read as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::ExitCode,
};

use serde_json::{json, Value};

use self::spec::{code, Added, CniError, NetConf, PortMapping};
use crate::{
    api::{CheckExpect, EndpointSpec, PortSpec, Reply, Request},
    cli::client::{self, NoAgent, Refused},
    paths::Paths,
    state::{parse_mac, Mode, Proto},
};

/// Was this process started by a runtime as a CNI plugin?
pub fn invoked() -> bool {
    std::env::var_os("CNI_COMMAND").is_some()
}

/// Runs the command a runtime asked for: the result (or nothing) on stdout and exit 0,
/// or the spec's error object on stdout and exit 1.
pub fn main() -> ExitCode {
    match run() {
        Ok(Some(result)) => {
            println!("{result}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{}", serde_json::to_string(&e).unwrap_or_default());
            ExitCode::FAILURE
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn required(name: &str) -> Result<String, CniError> {
    env(name).ok_or_else(|| {
        CniError::new(code::INVALID_ENVIRONMENT, format!("{name} is not set; a runtime sets it"))
    })
}

fn run() -> Result<Option<Value>, CniError> {
    let command = env("CNI_COMMAND").unwrap_or_default();
    let mut stdin = String::new();
    std::io::stdin().read_to_string(&mut stdin).map_err(|e| {
        CniError::new(code::IO_FAILURE, format!("cannot read the network configuration from stdin: {e}"))
    })?;
    if command == "VERSION" {
        let asked = serde_json::from_str::<Value>(&stdin).ok();
        let version = asked
            .as_ref()
            .and_then(|v| v["cniVersion"].as_str())
            .filter(|v| spec::SUPPORTED.contains(v))
            .unwrap_or(spec::DEFAULT);
        return Ok(Some(json!({ "cniVersion": version, "supportedVersions": spec::SUPPORTED })));
    }
    if !["ADD", "DEL", "CHECK", "STATUS", "GC"].contains(&command.as_str()) {
        return Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("CNI_COMMAND {command:?} is not a command: use ADD, DEL, CHECK, STATUS, GC or VERSION"),
        ));
    }
    let conf: NetConf = serde_json::from_str(&stdin).map_err(|e| {
        CniError::new(code::DECODE_FAILURE, format!("the network configuration on stdin is not valid: {e}"))
    })?;
    if !spec::SUPPORTED.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {:?} is not supported: netpath speaks {}",
                conf.cni_version,
                spec::SUPPORTED.join(", ")
            ),
        ));
    }
    let with_version = |mut e: CniError| {
        e.cni_version = conf.cni_version.clone();
        e
    };
    let call = Call { paths: paths(&conf.run_dir) };
    // Neither is about one container: the netconf is all they get.
    match command.as_str() {
        "STATUS" => return status(&call).map(|()| None).map_err(with_version),
        "GC" => return gc::gc(&call, &conf).map(|()| None).map_err(with_version),
        _ => {}
    }
    let container = Container::from_env();
    let container = container.map_err(with_version)?;
    match command.as_str() {
        "ADD" => add(&call, &conf, &container).map(Some),
        "DEL" => del(&call, &container).map(|()| None),
        _ => check(&call, &conf, &container).map(|()| None),
    }
    .map_err(with_version)
}

/// Only the socket is used; the other paths are the agent's business.
fn paths(run_dir: &Path) -> Paths {
    Paths {
        run_dir: run_dir.to_path_buf(),
        bpffs_dir: PathBuf::from("/sys/fs/bpf/netpath"),
        state_dir: PathBuf::from("/var/lib/netpath"),
    }
}

/// The container the runtime names in the environment.
struct Container {
    id: String,
    ifname: String,
    netns: Option<String>,
    /// `IP=` of CNI_ARGS, the older way to ask for an address.
    args_ip: Option<String>,
}

impl Container {
    fn from_env() -> Result<Container, CniError> {
        let id = required("CNI_CONTAINERID")?;
        if !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!(
                    "CNI_CONTAINERID {id:?} is not a container ID: use letters, digits, '-', '_' and '.'"
                ),
            ));
        }
        let args_ip = env("CNI_ARGS")
            .and_then(|args| args.split(';').find_map(|kv| kv.strip_prefix("IP=").map(str::to_string)));
        Ok(Container { id, ifname: required("CNI_IFNAME")?, netns: env("CNI_NETNS"), args_ip })
    }

    fn endpoint(&self) -> String {
        endpoint_name(&self.id, &self.ifname)
    }
}

/// The name of container `id`'s endpoint for interface `ifname`: the ID shortened, and
/// the interface when it is not eth0. GC tells the plugin's endpoints by it.
fn endpoint_name(id: &str, ifname: &str) -> String {
    let short: String = id.chars().take(12).collect();
    if ifname == "eth0" {
        return format!("cni-{short}");
    }
    let ifname: String = ifname
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect();
    format!("cni-{short}-{ifname}")
}

/// How long the plugin waits for the agent's answer: it carries out one request at a
/// time, and a node starting many containers at once queues them.
const AGENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Requests to the agent, with its failures as the spec's errors.
struct Call {
    paths: Paths,
}

impl Call {
    fn send(&self, req: &Request) -> Result<Reply, CniError> {
        client::call_within(&self.paths, req, AGENT_TIMEOUT).map_err(|e| {
            let io = e.downcast_ref::<std::io::Error>().map(std::io::Error::kind);
            if let Some(no) = e.downcast_ref::<NoAgent>() {
                // Absent or not listening: a runtime retries. Anything else (a socket it
                // may not open) retried would fail the same way for ever.
                let socket = no.path.display();
                let (code, msg) = match no.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => (
                        code::TRY_AGAIN_LATER,
                        format!(
                            "the netpath agent is not running: nothing listens on {socket}; start `netpath agent --run-dir {}` (the netconf's runDir)",
                            self.paths.run_dir.display()
                        ),
                    ),
                    _ => (code::IO_FAILURE, format!("cannot reach the netpath agent at {socket}")),
                };
                let cause = std::error::Error::source(no).map(ToString::to_string).unwrap_or_default();
                CniError::new(code, msg).details(cause)
            } else if matches!(io, Some(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)) {
                CniError::new(
                    code::TRY_AGAIN_LATER,
                    format!("the netpath agent did not answer within {} s", AGENT_TIMEOUT.as_secs()),
                )
                .details(format!("{e:#}"))
            } else if let Some(Refused(why)) = e.downcast_ref::<Refused>() {
                CniError::new(code::AGENT_REFUSED, why.clone())
            } else {
                CniError::new(code::IO_FAILURE, format!("{e:#}"))
            }
        })
    }
}

fn add(call: &Call, conf: &NetConf, c: &Container) -> Result<Value, CniError> {
    let netns = c.netns.clone().ok_or_else(|| {
        CniError::new(code::INVALID_ENVIRONMENT, "CNI_NETNS is not set; ADD needs the container's namespace")
    })?;
    let name = c.endpoint();
    let ports = port_specs(&conf.runtime_config.port_mappings, &name)?;
    // Read before the add: nothing to undo when it fails.
    let pod_cidr = usable_agent(call)?;
    // One request, all or nothing: the agent checks the ports before it makes anything
    // and takes the endpoint away again when one cannot be published.
    let spec = EndpointSpec {
        name: name.clone(),
        netns: PathBuf::from(&netns),
        ifname: c.ifname.clone(),
        ip: requested_ip(conf, c)?,
        ip6: None,
        mac: requested_mac(conf)?,
        mtu: None,
        owner: Some(c.id.clone()),
        ports,
    };
    let rec = match call.send(&Request::EndpointAdd(spec))? {
        Reply::Endpoint(rec) => rec,
        other => return Err(unexpected(other)),
    };
    let prefix = match rec.mode {
        // Bridge: the pod CIDR's prefix, as docker0's containers have.
        Mode::Bridge => pod_cidr.prefix_len(),
        // Routed: a /32, everything goes to the gateway (the datapath).
        Mode::Routed => 32,
        // A sub-interface: the parent's subnet's.
        Mode::Macvlan | Mode::Ipvlan => rec.prefix.unwrap_or(32),
    };
    let added = Added {
        version: &conf.cni_version,
        host_ifname: &rec.host_ifname,
        host_mac: &rec.host_mac,
        ifname: &rec.ifname,
        mac: &rec.mac,
        sandbox: &netns,
        address: format!("{}/{prefix}", rec.ip),
        gateway: rec.gateway.to_string(),
        address6: rec.ip6.map(|ip6| format!("{ip6}/128")),
        dns: conf.dns.as_ref(),
    };
    Ok(added.to_json())
}

/// The pod CIDR of an agent that can take containers: one that answers, and is not older
/// than this plugin (it would drop the owner and the ports unread).
fn usable_agent(call: &Call) -> Result<ipnet::Ipv4Net, CniError> {
    match call.send(&Request::Status)? {
        Reply::Status(s) => s.pod_cidr.ok_or_else(|| {
            CniError::new(
                code::TRY_AGAIN_LATER,
                format!("the running agent (PID {}) is older than this plugin; restart it (systemctl restart netpath)", s.pid),
            )
        }),
        other => Err(unexpected(other)),
    }
}

/// Ready when an ADD would find an agent to serve it; whatever stands in the way is the
/// spec's "not available", with the reason ADD would give.
fn status(call: &Call) -> Result<(), CniError> {
    usable_agent(call).map(drop).map_err(|e| CniError { code: code::NOT_AVAILABLE, ..e })
}

/// Succeeds when there is nothing left to delete: the container, its namespace or the
/// agent's record already gone (the spec asks DEL to be idempotent).
fn del(call: &Call, c: &Container) -> Result<(), CniError> {
    match call.send(&Request::EndpointDel {
        name: c.endpoint(),
        owner: Some(c.id.clone()),
        no_wait: false,
    })? {
        Reply::Deleted { .. } => Ok(()),
        other => Err(unexpected(other)),
    }
}

fn check(call: &Call, conf: &NetConf, c: &Container) -> Result<(), CniError> {
    let name = c.endpoint();
    let ports = port_specs(&conf.runtime_config.port_mappings, &name)?;
    // What the runtime knows: the container, and what ADD returned (prevResult).
    let prev = conf.prev_result.as_ref();
    let ip =
        prev.and_then(|p| p["ips"][0]["address"].as_str()).and_then(|a| a.split('/').next()?.parse().ok());
    let mac = prev
        .and_then(|p| p["interfaces"].as_array())
        .and_then(|i| i.iter().find(|i| i.get("sandbox").is_some()))
        .and_then(|i| i["mac"].as_str().map(str::to_ascii_lowercase));
    let expect = CheckExpect {
        owner: Some(c.id.clone()),
        netns: c.netns.as_ref().map(PathBuf::from),
        ifname: Some(c.ifname.clone()),
        ip,
        mac,
    };
    let drift = match call.send(&Request::EndpointCheck { name: name.clone(), ports, expect })? {
        Reply::Checked { drift } => drift,
        other => return Err(unexpected(other)),
    };
    if drift.is_empty() {
        return Ok(());
    }
    Err(CniError::new(code::DRIFT, format!("container {}'s network drifted: {}", c.id, drift.join("; ")))
        .details("`netpath reconcile` repairs it; `netpath doctor` shows the node"))
}

fn unexpected(reply: Reply) -> CniError {
    CniError::new(code::IO_FAILURE, format!("unexpected reply from the agent: {reply:?}"))
}

fn port_spec(m: &PortMapping, endpoint: &str) -> Result<PortSpec, CniError> {
    let port = |n: i64, what: &str| {
        u16::try_from(n).ok().filter(|p| *p != 0).ok_or_else(|| {
            CniError::new(code::INVALID_CONFIG, format!("portMappings {what} {n} is not a port: use 1-65535"))
        })
    };
    let proto = match m.protocol.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("tcp") => Proto::Tcp,
        Some("udp") => Proto::Udp,
        Some(other) => {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                format!("portMappings protocol {other:?} is not supported: netpath publishes tcp and udp"),
            ))
        }
    };
    // "0.0.0.0" is what runtimes send for "every address": both families, as none.
    // "::" is every IPv6 address alone.
    let host_ip = match m.host_ip.as_deref() {
        None | Some("") | Some("0.0.0.0") => None,
        Some(ip) => Some(ip.parse::<IpAddr>().map_err(|_| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("portMappings hostIP {ip:?} is not an IP address: give an IPv4 or IPv6 address, or none for every address"),
            )
        })?),
    };
    Ok(PortSpec {
        proto,
        host_port: port(m.host_port, "hostPort")?,
        host_ip,
        endpoint: endpoint.to_string(),
        container_port: Some(port(m.container_port, "containerPort")?),
        host_port_from: None,
    })
}

/// The port specs of a runtime's portMappings. A mapping on `::` beside the same one on
/// every address (a runtime listing each family's wildcard, 0.0.0.0 and ::) is part of
/// that one, which publishes on both families: kept as well, it would clash with it.
fn port_specs(mappings: &[PortMapping], endpoint: &str) -> Result<Vec<PortSpec>, CniError> {
    let specs: Vec<PortSpec> = mappings.iter().map(|m| port_spec(m, endpoint)).collect::<Result<_, _>>()?;
    let every = |s: &PortSpec| PortSpec { host_ip: None, ..s.clone() };
    let both =
        |s: &PortSpec| s.host_ip == Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)) && specs.contains(&every(s));
    Ok(specs.iter().filter(|s| !both(s)).cloned().collect())
}

/// The address the runtime asks for (`ips` capability, else CNI_ARGS' `IP=`), if any.
fn requested_ip(conf: &NetConf, c: &Container) -> Result<Option<Ipv4Addr>, CniError> {
    let asked: Vec<&str> =
        conf.runtime_config.ips.iter().map(String::as_str).chain(c.args_ip.as_deref()).collect();
    let Some(first) = asked.first() else { return Ok(None) };
    let addr = first.split('/').next().unwrap_or_default();
    addr.parse::<Ipv4Addr>().map(Some).map_err(|_| {
        CniError::new(
            code::INVALID_CONFIG,
            format!("requested address {first:?} is not an IPv4 address (netpath is IPv4 only)"),
        )
    })
}

fn requested_mac(conf: &NetConf) -> Result<Option<[u8; 6]>, CniError> {
    let Some(mac) = conf.runtime_config.mac.as_deref().filter(|m| !m.is_empty()) else { return Ok(None) };
    parse_mac(&mac.to_ascii_lowercase()).map(Some).ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            format!("requested mac {mac:?} is not a MAC address: give aa:bb:cc:dd:ee:ff"),
        )
    })
}

/// The conflist `netpath cni conflist` prints: one plugin, netpath, with the
/// capabilities whose runtime configuration it reads.
pub fn conflist(name: &str, run_dir: &Path) -> Value {
    json!({
        "cniVersion": spec::DEFAULT,
        "name": name,
        "plugins": [{
            "type": "netpath",
            "runDir": run_dir,
            "capabilities": { "portMappings": true, "ips": true, "mac": true },
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, ifname: &str) -> Container {
        Container { id: id.into(), ifname: ifname.into(), netns: None, args_ip: None }
    }

    #[test]
    fn endpoint_names_come_from_the_container_id() {
        let id = "4f1c0ffee5d2a8b1e0c3d4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5";
        assert_eq!(container(id, "eth0").endpoint(), "cni-4f1c0ffee5d2");
        assert_eq!(container(id, "net1").endpoint(), "cni-4f1c0ffee5d2-net1");
        assert_eq!(container("short", "e@1").endpoint(), "cni-short-e_1");
    }

    #[test]
    fn port_mappings_become_port_specs_or_a_spec_error() {
        let m = |host: i64, proto: Option<&str>, ip: Option<&str>| PortMapping {
            host_port: host,
            container_port: 80,
            protocol: proto.map(str::to_string),
            host_ip: ip.map(str::to_string),
        };
        let p = port_spec(&m(8080, Some("UDP"), Some("0.0.0.0")), "cni-x").unwrap();
        assert_eq!((p.proto, p.host_port, p.host_ip, p.container_port), (Proto::Udp, 8080, None, Some(80)));
        let p = port_spec(&m(8080, None, Some("192.0.2.1")), "cni-x").unwrap();
        assert_eq!(p.host_ip, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(port_spec(&m(70000, None, None), "x").unwrap_err().code, code::INVALID_CONFIG);
        assert_eq!(port_spec(&m(0, None, None), "x").unwrap_err().code, code::INVALID_CONFIG);
        let sctp = port_spec(&m(80, Some("sctp"), None), "x").unwrap_err();
        assert_eq!(sctp.code, code::UNSUPPORTED_FIELD);
        assert!(sctp.msg.contains("\"sctp\""), "{}", sctp.msg);
        let bad = port_spec(&m(80, None, Some("node")), "x").unwrap_err();
        assert_eq!(bad.code, code::INVALID_CONFIG);
        assert!(bad.msg.contains("\"node\""), "{}", bad.msg);
    }

    fn mapping(host_port: i64, host_ip: Option<&str>) -> PortMapping {
        PortMapping { host_port, container_port: 80, protocol: None, host_ip: host_ip.map(str::to_string) }
    }

    #[test]
    fn an_ipv6_host_ip_publishes_on_ipv6_alone() {
        let p = port_spec(&mapping(8080, Some("2001:db8::10")), "cni-x").unwrap();
        assert_eq!(p.host_ip, Some("2001:db8::10".parse().unwrap()));
        let p = port_spec(&mapping(8080, Some("::")), "cni-x").unwrap();
        assert_eq!(p.host_ip, Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
        // The agent says whether the address is the node's (::1 is for node processes).
        let p = port_spec(&mapping(8080, Some("::1")), "cni-x").unwrap();
        assert_eq!(p.host_ip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }

    #[test]
    fn each_familys_wildcard_for_one_port_is_one_mapping_on_both() {
        let both = [mapping(8080, Some("0.0.0.0")), mapping(8080, Some("::")), mapping(9090, Some("::"))];
        let specs = port_specs(&both, "cni-x").unwrap();
        let hosts: Vec<_> = specs.iter().map(|s| (s.host_port, s.host_ip)).collect();
        assert_eq!(hosts, [(8080, None), (9090, Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)))]);
        // Another container port is another mapping: the agent refuses the clash.
        let differ = [mapping(8080, None), PortMapping { container_port: 81, ..mapping(8080, Some("::")) }];
        assert_eq!(port_specs(&differ, "cni-x").unwrap().len(), 2);
    }
}
