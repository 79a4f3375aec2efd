//! The agent's API: one JSON request per line on a Unix socket, one JSON reply line.
//! The CLI and the agent share these types instead of parsing each other's output.
use std::{net::Ipv4Addr, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::EndpointRecord;

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

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    EndpointAdd(EndpointSpec),
    EndpointDel { name: String },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Reply {
    Endpoint(EndpointRecord),
    Deleted { existed: bool },
    Error { message: String },
}
