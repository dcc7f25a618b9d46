//! The faults: what each does to the cluster when it starts, and how it is undone when it
//! ends. A fault held for no time (flipped bytes, a wiped device) is not undone: the cluster
//! must repair it.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rand::Rng;
use rand::rngs::StdRng;
use serde::Serialize;

use crate::cluster::{Cluster, DEVICES, RESERVE_BYTES, SMALL_DEVICE};

/// One fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Fault {
    /// SIGKILL a storage node; start it again when the fault ends.
    KillNode(u16),
    /// SIGKILL a proxy (uploads through it break off); start it again at the end.
    KillProxy(u16),
    /// SIGKILL the node whose metadata member leads the Raft group (found when the fault
    /// starts); start it again at the end.
    KillLeader,
    /// SIGSTOP a node (a hung process that keeps its connections); SIGCONT at the end.
    HangNode(u16),
    /// Cut these nodes off the network; join them again at the end.
    Partition(Vec<u16>),
    /// Make a node's link slow and lossy (kbit/s); normal again at the end.
    SlowLink(u16, u32),
    /// Flip one byte in each of this many random fragment files.
    FlipBytes(u32),
    /// Replace a device of a node with an empty one: the node is killed, everything on the
    /// device removed (fragments and index shards), the node started again.
    WipeDevice(u16, &'static str),
    /// Fill the small device until less than its reserve is free; free it at the end.
    FillDevice,
    /// Add a spare node's devices to the `ec4+2`, `rep3` and index (`rep5`) rings and
    /// rebalance.
    AddNode(u16),
    /// Remove a node's devices from the `ec4+2`, `rep3` and index (`rep5`) rings and
    /// rebalance.
    RemoveNode(u16),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillNode(i) => write!(f, "kill node {i}"),
            Fault::KillProxy(j) => write!(f, "kill proxy {j}"),
            Fault::KillLeader => write!(f, "kill the metadata leader's node"),
            Fault::HangNode(i) => write!(f, "hang node {i} (SIGSTOP)"),
            Fault::Partition(nodes) => write!(f, "partition nodes {nodes:?}"),
            Fault::SlowLink(i, kbit) => write!(f, "slow lossy link to node {i} ({kbit} kbit/s)"),
            Fault::FlipBytes(n) => write!(f, "flip a byte in {n} fragments"),
            Fault::WipeDevice(i, d) => write!(f, "replace node {i}'s {d} with an empty one"),
            Fault::FillDevice => write!(f, "fill node {}'s {}", SMALL_DEVICE.0, SMALL_DEVICE.1),
            Fault::AddNode(i) => write!(f, "add node {i} to the rings"),
            Fault::RemoveNode(i) => write!(f, "remove node {i} from the rings"),
        }
    }
}

/// The rings a ring change touches: both data policies and the index's.
const CHANGING_POLICIES: [&str; 3] = ["ec4+2", "rep3", "rep5"];

/// What an applied fault needs to be undone.
#[derive(Debug)]
pub enum Undo {
    /// Nothing.
    Nothing,
    /// Start node `i` again.
    StartNode(u16),
    /// Start proxy `j` again.
    StartProxy(u16),
    /// SIGCONT node `i`.
    Continue(u16),
    /// Reconnect these nodes.
    Reconnect(Vec<u16>),
    /// Unslow node `i`'s link.
    Unslow(u16),
    /// Remove the ballast file.
    RemoveBallast(PathBuf),
}

/// Applies `fault`; says what was done (naming the leader, the files) and how to undo it.
///
/// # Errors
/// The fault could not be applied.
pub fn apply(cluster: &mut Cluster, fault: &Fault, rng: &mut StdRng) -> Result<(String, Undo)> {
    let said = fault.to_string();
    Ok(match fault {
        Fault::KillNode(i) => {
            cluster.kill_node(*i);
            (said, Undo::StartNode(*i))
        }
        Fault::KillProxy(j) => {
            cluster.kill_proxy(*j);
            (said, Undo::StartProxy(*j))
        }
        Fault::KillLeader => {
            let leader = cluster.leader()?;
            cluster.kill_node(leader);
            (format!("{said}: node {leader}"), Undo::StartNode(leader))
        }
        Fault::HangNode(i) => {
            cluster.pause_node(*i, true);
            (said, Undo::Continue(*i))
        }
        Fault::Partition(nodes) => {
            for i in nodes {
                cluster.net.set_connected(*i, false)?;
            }
            (said, Undo::Reconnect(nodes.clone()))
        }
        Fault::SlowLink(i, kbit) => {
            cluster.net.set_slow(*i, Some(*kbit))?;
            (said, Undo::Unslow(*i))
        }
        Fault::FlipBytes(n) => {
            let mut files = Vec::new();
            for i in 1..=cluster.spec.nodes {
                for device in DEVICES {
                    committed_fragments(&cluster.node_dir(i).join(device), &mut files);
                }
            }
            let mut flipped = Vec::new();
            for _ in 0..*n {
                if files.is_empty() {
                    break;
                }
                let file = files.swap_remove(rng.random_range(0..files.len()));
                if flip_byte(&file, rng).is_ok() {
                    flipped.push(file.display().to_string());
                }
            }
            (format!("{said}: {flipped:?}"), Undo::Nothing)
        }
        Fault::WipeDevice(i, device) => {
            // A replaced disk: the node goes down, comes back with the device empty (its
            // fragments and its index shards gone), and must be filled again by its peers.
            cluster.kill_node(*i);
            let dir = cluster.node_dir(*i).join(device);
            for entry in std::fs::read_dir(&dir)?.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
            cluster.start_node(*i)?;
            (said, Undo::Nothing)
        }
        Fault::FillDevice => {
            let dir = cluster.node_dir(SMALL_DEVICE.0).join(SMALL_DEVICE.1);
            let ballast = dir.join("chaos-ballast");
            let free = free_bytes(&dir)?;
            let size = free.saturating_sub(RESERVE_BYTES / 2);
            let file = std::fs::File::create(&ballast)?;
            file.set_len(size)?;
            // tmpfs allocates on write: write it for real.
            write_zeros(&ballast, size)?;
            (
                format!("{said}: {size} bytes"),
                Undo::RemoveBallast(ballast),
            )
        }
        Fault::AddNode(i) => {
            cluster.start_node(*i)?;
            cluster.wait_node(*i)?;
            for policy in CHANGING_POLICIES {
                for device in DEVICES {
                    let location = cluster.location(*i, device);
                    cluster.admin(&["device", "add", policy, &location, "1"])?;
                }
                cluster.admin(&["ring", "rebalance", policy])?;
            }
            (said, Undo::Nothing)
        }
        Fault::RemoveNode(i) => {
            for policy in CHANGING_POLICIES {
                for id in device_ids(cluster, policy, *i)? {
                    cluster.admin(&["device", "remove", policy, &id])?;
                }
                cluster.admin(&["ring", "rebalance", policy])?;
            }
            (said, Undo::Nothing)
        }
    })
}

/// Undoes an applied fault.
///
/// # Errors
/// It could not be undone.
pub fn undo(cluster: &mut Cluster, undo: Undo) -> Result<()> {
    match undo {
        Undo::Nothing => Ok(()),
        Undo::StartNode(i) => cluster.start_node(i),
        Undo::StartProxy(j) => cluster.start_proxy(j),
        Undo::Continue(i) => {
            cluster.pause_node(i, false);
            Ok(())
        }
        Undo::Reconnect(nodes) => {
            for i in nodes {
                cluster.net.set_connected(i, true)?;
            }
            Ok(())
        }
        Undo::Unslow(i) => cluster.net.set_slow(i, None),
        Undo::RemoveBallast(path) => {
            std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))
        }
    }
}

/// The device ids of node `i` in `policy`'s ring.
fn device_ids(cluster: &Cluster, policy: &str, i: u16) -> Result<Vec<String>> {
    let shown: serde_json::Value =
        serde_json::from_str(&cluster.admin(&["ring", "show", policy])?)?;
    let node = cluster.node_addr(i).to_string();
    let devices = shown["devices"].as_array().cloned().unwrap_or_default();
    Ok(devices
        .iter()
        .filter(|d| {
            d["location"]
                .as_str()
                .is_some_and(|l| l.contains(&format!("-{node}/")))
                && d["removed"].as_bool() != Some(true)
        })
        .filter_map(|d| d["id"].as_u64().map(|id| id.to_string()))
        .collect())
}

/// Committed fragment files under a device directory (not `.pending`, not quarantined).
fn committed_fragments(dir: &Path, out: &mut Vec<PathBuf>) {
    let objects = dir.join("objects");
    let mut dirs = vec![objects];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if !path.to_string_lossy().ends_with(".pending") {
                out.push(path);
            }
        }
    }
}

/// Flips one bit of one byte of `file` in place, as bitrot would.
fn flip_byte(file: &Path, rng: &mut StdRng) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)?;
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let at = rng.random_range(0..len);
    let mut byte = [0u8];
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(&mut byte)?;
    byte[0] ^= 1 << rng.random_range(0..8);
    f.seek(SeekFrom::Start(at))?;
    f.write_all(&byte)?;
    Ok(())
}

fn free_bytes(dir: &Path) -> Result<u64> {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("df {}: {text}", dir.display()))
}

fn write_zeros(path: &Path, size: u64) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64);
        file.write_all(&chunk[..usize::try_from(n).unwrap_or(0)])?;
        left -= n;
    }
    Ok(())
}
