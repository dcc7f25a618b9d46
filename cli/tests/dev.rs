//! `nimbus dev` as a developer runs it: the real binary starting a real cluster of processes
//! on loopback (on ports this test picks, so that it runs beside other tests), set up once,
//! stopped by SIGINT without leaving a process behind, and started again on the same data
//! with the same credentials and map.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot set itself up should panic
#![allow(clippy::disallowed_methods)] // blocking test threads, no async runtime here

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long a debug build may take to start the cluster.
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// A running `nimbus dev`; SIGKILLed on drop (its children then get SIGTERM from the kernel).
struct Dev {
    child: Child,
    /// Its stdout, line by line.
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Dev {
    /// Starts `nimbus dev --data DATA`, with `--port` and `--base-port` when `ports` are
    /// given, and waits until it printed everything.
    fn start(data: &Path, ports: Option<(u16, u16)>) -> Dev {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nimbus"));
        command.arg("dev").arg("--data").arg(data);
        if let Some((port, base_port)) = ports {
            command
                .args(["--port", &port.to_string()])
                .args(["--base-port", &base_port.to_string()]);
        }
        let mut child = command
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
        let mut dev = Dev {
            child,
            lines,
            stdout: Vec::new(),
            stderr,
        };
        dev.wait_for_line("Ctrl-C stops the cluster");
        dev
    }

    /// Reads stdout until a line starting with `prefix`.
    fn wait_for_line(&mut self, prefix: &str) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.starts_with(prefix);
                    self.stdout.push(line);
                    if done {
                        return;
                    }
                }
                Err(_) => panic!(
                    "nimbus dev printed no {prefix:?} line; stdout {:?}, stderr {}",
                    self.stdout,
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// The value printed after `label` (e.g. "S3 endpoint:").
    fn printed(&self, label: &str) -> String {
        self.stdout
            .iter()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} in {:?}", self.stdout))
            .trim()
            .to_owned()
    }

    /// The processes whose parent is `nimbus dev`.
    fn children(&self) -> Vec<u32> {
        let me = self.child.id();
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid …": comm may hold spaces, so split after its ')'.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
            if ppid == Some(me) {
                out.push(pid);
            }
        }
        out
    }

    /// Sends SIGINT and waits for the exit.
    fn interrupt(mut self) -> (ExitStatus, String) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread catch the last bytes.
                std::thread::sleep(Duration::from_millis(100));
                return (status, self.stderr.lock().unwrap().clone());
            }
            assert!(Instant::now() < deadline, "nimbus dev did not stop in 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port for the proxy, and a base port with base+1..=base+6 and base+101..=base+105
/// free, below the kernel's range of ephemeral ports so that no other test is handed them.
fn free_ports() -> (u16, u16) {
    let proxy = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for _ in 0..200 {
        let base = 10_000 + (getrandom::u32().unwrap() % 20_000) as u16;
        let ports = (1..=6).chain(101..=105).map(|i| base + i);
        let listeners: Vec<_> = ports.map(|p| TcpListener::bind(("127.0.0.1", p))).collect();
        if listeners.iter().all(Result::is_ok) {
            return (proxy, base);
        }
    }
    panic!("no free base port found");
}

/// Sends `GET path` to 127.0.0.1:port; returns the status line.
fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

/// `nimbus admin map show --json` against metadata member 1.
fn map_show(data: &Path, base_port: u16) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .env_remove("NIMBUS_META")
        .env_remove("NIMBUS_SECRET_FILE")
        .args([
            "admin",
            "--json",
            "--meta",
            &format!("127.0.0.1:{}", base_port + 101),
        ])
        .arg("--secret-file")
        .arg(data.join("cluster-secret"))
        .args(["map", "show"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "map show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `export NAME=value` lines of dev.env.
fn env_file(path: &PathBuf) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .map(|l| {
            let (name, value) = l.split_once('=').unwrap();
            (name.to_owned(), value.trim_matches('\'').to_owned())
        })
        .collect()
}

/// The map's content that a restart must keep (not its version: heartbeats may mark
/// devices down and up).
fn lasting(map: &Value) -> Value {
    serde_json::json!({
        "default_policy": map["default_policy"],
        "index_policy": map["index_policy"],
        "policies": map["policies"],
        "accounts": map["accounts"],
        "credential_ids": map["credential_ids"],
        "buckets": map["buckets"],
    })
}

fn process_exists(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would still show "Z".
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn nimbus_dev_starts_a_cluster_once_and_restarts_it_with_the_same_credentials() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    let (port, base) = free_ports();

    let dev = Dev::start(&data, Some((port, base)));
    let endpoint = format!("http://127.0.0.1:{port}");
    assert_eq!(dev.printed("S3 endpoint:"), endpoint);
    assert_eq!(
        dev.printed("Swift auth URL:"),
        format!("{endpoint}/auth/v1.0")
    );
    let access_key = dev.printed("S3 access key:");
    let secret_key = dev.printed("S3 secret key:");
    let swift_key = dev.printed("Swift key:");
    assert_eq!(dev.printed("Swift user:"), "dev:admin");
    assert_eq!(access_key.len(), 20);
    assert!(
        access_key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    );
    assert_eq!(secret_key.len(), 40);
    assert!(
        dev.printed("Try:")
            .contains(&format!("aws --endpoint-url {endpoint} ")),
        "{:?}",
        dev.stdout
    );

    let env = env_file(&data.join("dev.env"));
    let expected: BTreeMap<String, String> = [
        ("AWS_ACCESS_KEY_ID", access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", &secret_key),
        ("AWS_ENDPOINT_URL", &endpoint),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("ST_AUTH", &format!("{endpoint}/auth/v1.0")),
        ("ST_USER", "dev:admin"),
        ("ST_KEY", &swift_key),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(env, expected);
    let secret = std::fs::read_to_string(data.join("cluster-secret")).unwrap();
    assert_eq!(secret.trim().len(), 64);

    assert_eq!(http_get(port, "/health"), "HTTP/1.1 200 OK");

    let map = map_show(&data, base);
    let policies = map["policies"].as_array().unwrap();
    let names: Vec<&str> = policies
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ec4+2", "rep3", "rep5"]);
    for p in policies {
        assert_eq!(p["devices"], 12, "{p}");
        assert!(p["ring_epoch"].is_u64(), "not rebalanced: {p}");
    }
    assert_eq!(map["default_policy"], "ec4+2");
    assert_eq!(map["index_policy"], "rep5");
    assert_eq!(map["accounts"], serde_json::json!(["dev"]));
    let mut ids = vec![access_key.clone(), "dev:admin".to_owned()];
    ids.sort();
    assert_eq!(map["credential_ids"], serde_json::json!(ids));

    // Six storage nodes and a proxy; SIGINT stops them all and exits 0.
    let children = dev.children();
    assert_eq!(children.len(), 7, "children: {children:?}");
    let (status, stderr) = dev.interrupt();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("first run"), "{stderr}");
    let left: Vec<u32> = children
        .into_iter()
        .filter(|&pid| process_exists(pid))
        .collect();
    assert!(left.is_empty(), "still running after nimbus dev: {left:?}");

    // Again, on the same data, without the ports (the first run's are kept): no second
    // bootstrap, the same credentials and map.
    let marker = std::fs::read_to_string(data.join("dev.json")).unwrap();
    let dev = Dev::start(&data, None);
    assert_eq!(dev.printed("S3 access key:"), access_key);
    assert_eq!(dev.printed("S3 secret key:"), secret_key);
    assert_eq!(dev.printed("Swift key:"), swift_key);
    assert_eq!(
        std::fs::read_to_string(data.join("dev.json")).unwrap(),
        marker
    );
    assert_eq!(env_file(&data.join("dev.env")), expected);
    assert_eq!(http_get(port, "/health"), "HTTP/1.1 200 OK");
    assert_eq!(lasting(&map_show(&data, base)), lasting(&map));
    let children = dev.children();
    assert_eq!(children.len(), 7);
    let (status, stderr) = dev.interrupt();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        !stderr.contains("first run"),
        "bootstrapped again: {stderr}"
    );
    assert!(children.iter().all(|&pid| !process_exists(pid)));

    // Other ports on the same data are refused, before anything starts.
    let out = Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .arg("dev")
        .arg("--data")
        .arg(&data)
        .args(["--base-port", &(base + 1).to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("was created with --base-port {base}")),
        "{out:?}"
    );
}
