//! The network as root: one network namespace per storage node, each joined
//! to a bridge in the harness's own namespace by a veth pair, addresses `10.77.S.i/24` with
//! the bridge at `10.77.S.254` (the proxies run beside the harness and reach the nodes
//! through it). A node is cut off by taking its veth down; a link is made slow and lossy by
//! a token-bucket filter with a short queue on both ends (the kernel here has no `netem`).
//!
//! **Invariant:** every namespace and link made here is named after the run's subnet `S`,
//! and dropping the [`Namespaces`] removes them all.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::Network;

/// The namespaces and links of one run.
pub struct Namespaces {
    subnet: u8,
    nodes: Vec<u16>,
}

/// Runs `ip`/`tc` with `args`; fails with what it printed.
fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `args` inside namespace `ns`.
fn run_in(ns: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

impl Namespaces {
    /// Makes the bridge and a namespace for each of `nodes` (numbered from 1), on the first
    /// subnet whose bridge does not exist yet.
    ///
    /// # Errors
    /// Not root, no `ip`, or no free subnet.
    pub fn create(nodes: u16) -> Result<Namespaces> {
        let first = (std::process::id() % 200) as u8;
        for step in 0..200u16 {
            let subnet = ((u16::from(first) + step) % 200) as u8;
            let bridge = bridge_name(subnet);
            if run("ip", &["link", "add", &bridge, "type", "bridge"]).is_err() {
                continue; // taken by another run
            }
            let mut net = Namespaces {
                subnet,
                nodes: Vec::new(),
            };
            let gateway = format!("{}/24", net.gateway());
            run("ip", &["addr", "add", &gateway, "dev", &bridge])?;
            run("ip", &["link", "set", &bridge, "up"])?;
            for i in 1..=nodes {
                net.add_node(i)?;
            }
            return Ok(net);
        }
        bail!("no free subnet 10.77.S.0/24 for a bridge")
    }

    fn add_node(&mut self, i: u16) -> Result<()> {
        let ns = self.namespace(i);
        let veth = self.veth(i);
        let _ = run("ip", &["netns", "del", &ns]); // a leftover of a killed run
        run("ip", &["netns", "add", &ns])?;
        self.nodes.push(i);
        run(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        )?;
        run(
            "ip",
            &["link", "set", &veth, "master", &bridge_name(self.subnet)],
        )?;
        run("ip", &["link", "set", &veth, "up"])?;
        let address = format!("{}/24", self.node_ip(i));
        run_in(&ns, &["ip", "addr", "add", &address, "dev", "eth0"])?;
        run_in(&ns, &["ip", "link", "set", "eth0", "up"])?;
        run_in(&ns, &["ip", "link", "set", "lo", "up"])?;
        let gateway = self.gateway().to_string();
        run_in(&ns, &["ip", "route", "add", "default", "via", &gateway])
    }

    /// Node `i`'s address.
    #[must_use]
    pub fn node_ip(&self, i: u16) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, u8::try_from(i).unwrap_or(250))
    }

    /// The bridge's address, which the proxies and the harness use.
    #[must_use]
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 254)
    }

    /// Node `i`'s namespace.
    #[must_use]
    pub fn namespace(&self, i: u16) -> String {
        format!("nch{}n{i}", self.subnet)
    }

    fn veth(&self, i: u16) -> String {
        format!("nch{}v{i}", self.subnet)
    }

    /// Cuts node `i` off from every other process (`false`), or joins it again (`true`).
    ///
    /// # Errors
    /// `ip` failed.
    pub fn set_connected(&self, i: u16, connected: bool) -> Result<()> {
        let state = if connected { "up" } else { "down" };
        run("ip", &["link", "set", &self.veth(i), state])
    }

    /// Makes node `i`'s link slow and lossy (`Some(kbit/s)`: a token bucket of that rate
    /// whose short queue drops what does not fit), or normal again (`None`).
    ///
    /// # Errors
    /// `tc` failed.
    pub fn set_slow(&self, i: u16, rate_kbit: Option<u32>) -> Result<()> {
        let veth = self.veth(i);
        let ns = self.namespace(i);
        let _ = run("tc", &["qdisc", "del", "dev", &veth, "root"]);
        let _ = run_in(&ns, &["tc", "qdisc", "del", "dev", "eth0", "root"]);
        let Some(rate) = rate_kbit else {
            return Ok(());
        };
        let rate = format!("{rate}kbit");
        let tbf = [
            "root", "tbf", "rate", &rate, "burst", "16kb", "limit", "48kb",
        ];
        let mut out = vec!["qdisc", "add", "dev", veth.as_str()];
        out.extend_from_slice(&tbf);
        run("tc", &out)?;
        let mut inside = vec!["tc", "qdisc", "add", "dev", "eth0"];
        inside.extend_from_slice(&tbf);
        run_in(&ns, &inside)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for i in self.nodes.clone() {
            let _ = run("ip", &["netns", "del", &self.namespace(i)]);
        }
        let _ = run("ip", &["link", "del", &bridge_name(self.subnet)]);
    }
}

fn bridge_name(subnet: u8) -> String {
    format!("nch{subnet}br")
}

/// The storage nodes' port in their namespaces.
const NODE_PORT: u16 = 6000;
/// The metadata members' port in their namespaces.
const META_PORT: u16 = 6100;

impl Network for Namespaces {
    fn node_addr(&self, i: u16) -> SocketAddr {
        SocketAddr::from((self.node_ip(i), NODE_PORT))
    }

    fn node_listen(&self, i: u16) -> SocketAddr {
        self.node_addr(i)
    }

    fn meta_addr(&self, i: u16) -> SocketAddr {
        SocketAddr::from((self.node_ip(i), META_PORT))
    }

    fn meta_listen(&self, i: u16) -> SocketAddr {
        self.meta_addr(i)
    }

    fn command_prefix(&self, i: u16) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.namespace(i),
        ]
    }

    fn set_connected(&self, i: u16, connected: bool) -> Result<()> {
        Namespaces::set_connected(self, i, connected)
    }

    fn set_slow(&self, i: u16, rate_kbit: Option<u32>) -> Result<()> {
        Namespaces::set_slow(self, i, rate_kbit)
    }

    fn describe(&self) -> String {
        format!(
            "each storage node in a network namespace of its own, 10.77.{}.i behind bridge {}",
            self.subnet,
            bridge_name(self.subnet)
        )
    }
}
