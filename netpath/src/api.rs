//! The agent's API: one JSON request per line on a Unix socket, one JSON reply line.
//! The CLI and the agent share these types instead of parsing each other's output.
use std::{net::Ipv4Addr, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::{EndpointRecord, PortRecord, Proto};

/// What a user asks for when attaching a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    pub name: String,
    /// The container's network namespace (a bind-mounted netns file or /proc/PID/ns/net).
    pub netns: PathBuf,
    /// Interface name inside the container.
    pub ifname: String,
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
}

/// What a user asks for when publishing a port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub proto: Proto,
    pub host_port: u16,
    pub host_ip: Option<Ipv4Addr>,
    pub endpoint: String,
    /// Defaults to the host port.
    pub container_port: Option<u16>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    EndpointAdd(EndpointSpec),
    EndpointDel { name: String },
    PortAdd(PortSpec),
    PortDel { proto: Proto, host_port: u16, host_ip: Option<Ipv4Addr> },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Reply {
    Endpoint(EndpointRecord),
    Port(PortRecord),
    Deleted { existed: bool },
    Error { message: String },
}
