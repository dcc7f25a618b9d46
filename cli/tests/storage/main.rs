//! `nimbus storage` as a real process on loopback: the internal API, its authentication and
//! bad input, and crash safety under SIGKILL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot set itself up should panic
#![allow(clippy::disallowed_methods)] // blocking test threads, no async runtime here

mod client;
mod t10_api;
mod t20_crash;
mod t30_index;
mod t40_meta;
mod t50_partition;
mod t60_audit;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nimbus_core::auth::ClusterSecret;

/// A storage node process with two devices under one temp dir; killed on drop.
pub struct Node {
    pub dir: PathBuf,
    pub addr: SocketAddr,
    /// The metadata member's address, when the node hosts one.
    pub meta_addr: Option<SocketAddr>,
    pub secret: ClusterSecret,
    child: Child,
}

impl Node {
    /// Starts a node on `dir` (created if new; reused across restarts).
    pub fn start(dir: &Path) -> Node {
        Node::start_with(dir, None)
    }

    /// Starts a node that also hosts metadata member `meta` (listening on `meta_port`, 0 for
    /// any free port).
    pub fn start_with(dir: &Path, meta: Option<(u64, u16)>) -> Node {
        Node::start_configured(dir, meta, "")
    }

    /// As [`Node::start_with`], with `extra` TOML sections appended to the configuration.
    pub fn start_configured(dir: &Path, meta: Option<(u64, u16)>, extra: &str) -> Node {
        let secret = ClusterSecret::new([42; 32]);
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("secret"), secret.to_hex()).unwrap();
        let config = format!(
            r#"
            listen = "127.0.0.1:0"
            cluster_secret_file = "{dir}/secret"
            [engine]
            buffers = 16
            buffer_bytes = 262144
            [[device]]
            name = "d0"
            path = "{dir}/d0"
            reserve_bytes = 0
            [[device]]
            name = "d1"
            path = "{dir}/d1"
            reserve_bytes = 0
            {meta}
            {extra}
            "#,
            dir = dir.display(),
            meta = meta.map_or(String::new(), |(id, port)| format!(
                // Small snapshots that purge the whole log: a member that joins late can
                // only catch up through a snapshot.
                "[meta]\nid = {id}\ndir = \"{}/meta\"\nlisten = \"127.0.0.1:{port}\"\nsnapshot_every_logs = 16\nlogs_kept_after_snapshot = 0",
                dir.display()
            )),
        );
        std::fs::write(dir.join("storage.toml"), config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_nimbus"))
            .args(["storage", "--config"])
            .arg(dir.join("storage.toml"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(addr) = line.strip_prefix("nimbus storage listening on ") {
                    let _ = tx.send((false, addr.parse::<SocketAddr>().unwrap()));
                } else if let Some(rest) = line.strip_prefix("nimbus meta ")
                    && let Some((_, addr)) = rest.split_once(" listening on ")
                {
                    let _ = tx.send((true, addr.parse::<SocketAddr>().unwrap()));
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut addr, mut meta_addr) = (None, None);
        while addr.is_none() || (meta.is_some() && meta_addr.is_none()) {
            let (is_meta, a) = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the node did not start within 20 s");
            if is_meta {
                meta_addr = Some(a);
            } else {
                addr = Some(a);
            }
        }
        Node {
            dir: dir.to_path_buf(),
            addr: addr.expect("checked above"),
            meta_addr,
            secret,
            child,
        }
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, no goodbye.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file below `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}
