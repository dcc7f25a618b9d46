//! What Nimbus's tests and benchmarks share: a real `nimbus dev` cluster (separate processes
//! on loopback ports of its own), started on a data directory, read from what it prints, and
//! stopped when dropped.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a cluster that cannot start should stop the test
#![allow(clippy::disallowed_methods)] // test threads may block

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a debug build may take to start a cluster.
const START_TIMEOUT: Duration = Duration::from_secs(240);

/// Port blocks handed out in this process: each cluster gets its own.
static NEXT_BLOCK: AtomicU16 = AtomicU16::new(0);

/// Returns a base port whose block is free now: the proxy at `base`, storage nodes at
/// `base+1..=6`, metadata members at `base+101..=105`. Blocks lie below the kernel's
/// ephemeral range and are spread by process id, so test binaries running at once rarely
/// meet; a block with a port taken is skipped.
#[must_use]
pub fn free_port_block() -> u16 {
    let first = 10_000 + (std::process::id() % 20) as u16 * 1000;
    loop {
        let block = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed);
        let base = first + (block % 8) * 120;
        let all_free = [0]
            .into_iter()
            .chain(1..=6)
            .chain(101..=105)
            .all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
        assert!(block < 400, "no free block of ports");
    }
}

/// A running `nimbus dev`; SIGKILLed when dropped (its children then get SIGTERM from the
/// kernel, as `nimbus dev` asks for them).
pub struct DevCluster {
    child: Child,
    printed: Vec<String>,
    stderr: Arc<Mutex<String>>,
    /// The data directory.
    pub data: TempDir,
    /// Node `i` listens on `base_port + i`, metadata member `i` on `base_port + 100 + i`,
    /// the proxy on `base_port`.
    pub base_port: u16,
}

impl DevCluster {
    /// Starts `nimbus` (the binary at `bin`) `dev` on `data` and a free block of ports, and
    /// waits until it printed everything.
    #[must_use]
    pub fn start(bin: &Path, data: TempDir) -> DevCluster {
        DevCluster::start_with(bin, data, &[])
    }

    /// As [`DevCluster::start`], with more `nimbus dev` arguments (`--gc-grace-secs 2`).
    #[must_use]
    pub fn start_with(bin: &Path, data: TempDir, extra: &[&str]) -> DevCluster {
        let base_port = free_port_block();
        let mut child = Command::new(bin)
            .arg("dev")
            .arg("--data")
            .arg(data.path())
            .args([
                "--port",
                &base_port.to_string(),
                "--base-port",
                &base_port.to_string(),
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let collected = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    return;
                }
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut printed = Vec::new();
        loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let done = line.starts_with("Ctrl-C stops the cluster");
                    printed.push(line);
                    if done {
                        break;
                    }
                }
                Err(_) => panic!(
                    "nimbus dev did not start: stdout {printed:?}, stderr {}",
                    stderr.lock().unwrap()
                ),
            }
        }
        DevCluster {
            child,
            printed,
            stderr,
            data,
            base_port,
        }
    }

    /// The value printed after `label` (`"S3 endpoint:"`, `"S3 access key:"`, …).
    #[must_use]
    pub fn printed(&self, label: &str) -> String {
        self.printed
            .iter()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} in {:?}", self.printed))
            .trim()
            .to_owned()
    }

    /// The S3 endpoint.
    #[must_use]
    pub fn endpoint(&self) -> String {
        self.printed("S3 endpoint:")
    }

    /// The S3 access key id.
    #[must_use]
    pub fn access_key(&self) -> String {
        self.printed("S3 access key:")
    }

    /// The S3 secret key.
    #[must_use]
    pub fn secret_key(&self) -> String {
        self.printed("S3 secret key:")
    }

    /// The pid of `nimbus dev` itself.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What `nimbus dev` wrote on stderr so far.
    #[must_use]
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The pid of the cluster's process whose command line mentions `needle` (a path under
    /// the data directory, say `node3/storage.toml` or `proxy.toml`).
    #[must_use]
    pub fn process_with(&self, needle: &str) -> u32 {
        let needle = self.data.path().join(needle).to_string_lossy().into_owned();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            if String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(&needle)
            {
                return pid;
            }
        }
        panic!("no process for {needle}: {}", self.stderr());
    }

    /// Stops the cluster as Ctrl-C does (SIGINT to `nimbus dev`), waiting for it.
    pub fn interrupt(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
