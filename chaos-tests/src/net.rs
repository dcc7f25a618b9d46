//! The network of a cluster under test, in one of two shapes:
//!
//! - [`namespaces`] (as root, the default there): each storage node runs in a network
//!   namespace of its own. A partition takes its link down, both ways, for everything. A
//!   slow link is shaped in the kernel.
//! - [`proxied`] (without root, or with `--network proxied`): every node listens on loopback
//!   behind a fault-injecting TCP proxy of the harness, and the rings, heartbeats and Raft
//!   know each node by its proxy's address. A partition stops the proxy's traffic, in both
//!   directions, for connections *to* the node: what the node itself sends to others still
//!   goes through. A slow and lossy link is a rate, a delay and now and then a reset
//!   connection in the proxy.

pub mod namespaces;
pub mod proxied;

use std::net::SocketAddr;

use anyhow::Result;

/// What the cluster and the faults need of a network.
pub trait Network: Send {
    /// Where node `i`'s storage API is reached: its ring locations and heartbeats name it.
    fn node_addr(&self, i: u16) -> SocketAddr;
    /// Where node `i`'s storage API listens.
    fn node_listen(&self, i: u16) -> SocketAddr;
    /// Where metadata member `i` is reached.
    fn meta_addr(&self, i: u16) -> SocketAddr;
    /// Where metadata member `i` listens.
    fn meta_listen(&self, i: u16) -> SocketAddr;
    /// What node `i`'s command line starts with (`ip netns exec NS`), if anything.
    fn command_prefix(&self, i: u16) -> Vec<String>;
    /// Cuts node `i` off (`false`) or joins it again (`true`).
    ///
    /// # Errors
    /// The network could not be changed.
    fn set_connected(&self, i: u16, connected: bool) -> Result<()>;
    /// Makes node `i`'s link slow and lossy at about `Some(kbit/s)`, or normal (`None`).
    ///
    /// # Errors
    /// The network could not be changed.
    fn set_slow(&self, i: u16, rate_kbit: Option<u32>) -> Result<()>;
    /// One line for the log.
    fn describe(&self) -> String;
}

/// Whether this process runs as root.
#[must_use]
pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
