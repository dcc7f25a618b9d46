//! A `nimbus dev` cluster for one test, and an S3 client for it.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region};
use tempfile::TempDir;

/// How long a debug build may take to start the cluster.
const START_TIMEOUT: Duration = Duration::from_secs(240);

/// A running `nimbus dev` and its data directory. Stopped (SIGKILL; the kernel then stops
/// its children) when dropped.
pub struct Cluster {
    child: Child,
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub data: TempDir,
    /// Node `i` listens on `base_port + i`, metadata member `i` on `base_port + 100 + i`.
    pub base_port: u16,
    stderr: Arc<Mutex<String>>,
    /// Nodes the test restarted by hand.
    restarted: Mutex<Vec<Child>>,
}

/// Port blocks handed out in this test process: each cluster gets its own 120 ports.
static NEXT_BLOCK: AtomicU16 = AtomicU16::new(0);

fn free_port_pair() -> (u16, u16) {
    // A block of ports per cluster, below the kernel's ephemeral range (32768+), spread by
    // process id so that test binaries running at once rarely meet; a block with a port
    // taken is skipped. The proxy at base, nodes at base+1..6, members at base+101..105.
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
            return (base, base);
        }
        assert!(block < 400, "no free block of ports");
    }
}

impl Cluster {
    /// Starts a cluster and waits until it printed its endpoint and credentials.
    pub fn start() -> Cluster {
        let data = tempfile::Builder::new()
            .prefix("nimbus-s3-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let (port, base_port) = free_port_pair();
        Self::start_on(data, port, base_port)
    }

    fn start_on(data: TempDir, port: u16, base_port: u16) -> Cluster {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nimbus"))
            .arg("dev")
            .arg("--data")
            .arg(data.path())
            .args([
                "--port",
                &port.to_string(),
                "--base-port",
                &base_port.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
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
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
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
        let value = |label: &str| {
            printed
                .iter()
                .find_map(|l| l.strip_prefix(label))
                .unwrap_or_else(|| panic!("no {label:?} in {printed:?}"))
                .trim()
                .to_owned()
        };
        Cluster {
            child,
            endpoint: value("S3 endpoint:"),
            access_key: value("S3 access key:"),
            secret_key: value("S3 secret key:"),
            data,
            base_port,
            stderr,
            restarted: Mutex::new(Vec::new()),
        }
    }

    /// An SDK client with the cluster's credentials.
    pub fn client(&self) -> Client {
        client(&self.endpoint, &self.access_key, &self.secret_key, 3)
    }

    /// An SDK client that does not retry (to see errors as they are).
    pub fn client_no_retry(&self) -> Client {
        client(&self.endpoint, &self.access_key, &self.secret_key, 1)
    }

    /// The pid of storage node `i` (1 to 6).
    pub fn node_pid(&self, i: usize) -> u32 {
        let config = self
            .data
            .path()
            .join(format!("node{i}"))
            .join("storage.toml");
        let needle = config.to_string_lossy().into_owned();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) && cmdline.contains(" storage ") {
                return pid;
            }
        }
        panic!("no process for node {i}: {}", self.stderr.lock().unwrap());
    }

    /// Freezes `nimbus dev` itself (SIGSTOP), so that it does not stop the cluster when a
    /// test kills a node; the test then restarts nodes by hand.
    pub fn detach_supervisor(&self) {
        let status = Command::new("kill")
            .args(["-STOP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Starts storage node `i` again on its data, as a child of the test; waits until it
    /// listens.
    pub fn restart_node(&self, i: usize) {
        let config = self
            .data
            .path()
            .join(format!("node{i}"))
            .join("storage.toml");
        let mut child = Command::new(env!("CARGO_BIN_EXE_nimbus"))
            .arg("storage")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().unwrap().unwrap();
        assert!(first.contains("listening"), "node {i} printed {first:?}");
        // Keep reading so the pipe never fills.
        std::thread::spawn(move || for _ in lines {});
        self.restarted.lock().unwrap().push(child);
    }

    /// Kills storage node `i` with SIGKILL (call [`Cluster::detach_supervisor`] first).
    pub fn kill_node(&self, i: usize) {
        let pid = self.node_pid(i);
        let status = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for mut child in self.restarted.lock().unwrap().drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An SDK client for `endpoint`, path style, making at most `attempts` attempts per call.
pub fn client(endpoint: &str, access_key: &str, secret_key: &str, attempts: u32) -> Client {
    let http = aws_smithy_http_client::Builder::new().build_http();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(access_key, secret_key, None, None, "test"))
        .force_path_style(true)
        .http_client(http)
        .retry_config(
            aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(attempts),
        )
        .build();
    Client::from_conf(config)
}

/// A clock running `behind` late.
#[derive(Debug)]
struct LateClock(Duration);

impl aws_smithy_async::time::TimeSource for LateClock {
    fn now(&self) -> std::time::SystemTime {
        std::time::SystemTime::now() - self.0
    }
}

/// A client whose clock runs `behind` late (its signatures carry that date), not retrying.
pub fn client_at(cluster: &Cluster, behind: Duration) -> Client {
    let config = client(
        &cluster.endpoint,
        &cluster.access_key,
        &cluster.secret_key,
        1,
    )
    .config()
    .to_builder()
    .time_source(LateClock(behind))
    .build();
    Client::from_conf(config)
}

/// A runtime for a test's async part.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Deterministic bytes: `len` of them from `seed`.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The S3 ETag of a single-part upload: the hex MD5, quoted.
pub fn etag(data: &[u8]) -> String {
    use md5::Digest as _;
    format!("\"{}\"", hex::encode(md5::Md5::digest(data)))
}
