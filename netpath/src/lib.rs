//! netpath: container networking on an eBPF datapath.
//!
//! The library does the work; `main.rs` is a thin CLI on top. Data flows one way:
//! CLI -> agent API (Unix socket) -> state + maps -> eBPF programs. Read-only
//! inspection (`netpath stats`) reads the pinned maps directly, so it works while the
//! agent is stopped.

pub mod agent;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod cni;
pub mod datapath;
pub mod drift;
pub mod paths;
pub mod plumbing;
pub mod state;
