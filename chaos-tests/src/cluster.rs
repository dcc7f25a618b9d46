//! The cluster under test: storage nodes (the first five also metadata members) and proxies,
//! all separate `nimbus` processes with their data and logs under one directory, on a
//! [`Network`] that can cut and slow each node off. Set up through `nimbus admin`, as an
//! operator would.
//!
//! Nodes past [`ClusterSpec::nodes`] are spares, started and added to the rings only by a
//! ring change.

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

use crate::net::namespaces::Namespaces;
use crate::net::proxied::Proxied;
use crate::net::{Network, is_root};

/// Metadata members: hosted by nodes `1..=META_MEMBERS`.
pub const META_MEMBERS: u16 = 5;
/// Devices per node.
pub const DEVICES: [&str; 2] = ["d0", "d1"];
/// The storage policies: the default erasure-coded one, a replicated one, and the index's.
pub const POLICIES: [&str; 3] = ["ec4+2", "rep3", "rep5"];
/// The device that can be filled: node 6's `d1`, on a small filesystem of its own.
pub const SMALL_DEVICE: (u16, &str) = (6, "d1");
/// The small filesystem's size.
const SMALL_DEVICE_BYTES: u64 = 512 << 20;
/// Each device keeps this much free (`reserve_bytes`).
pub const RESERVE_BYTES: u64 = 64 << 20;
/// The account the workload uses.
const ACCOUNT: &str = "chaos";
/// How long a process may take to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Storage nodes in the rings from the start.
    pub nodes: u16,
    /// Spare nodes, for ring changes.
    pub spares: u16,
    /// Proxies.
    pub proxies: u16,
    /// The `nimbus` binary.
    pub nimbus: PathBuf,
    /// Where everything goes.
    pub dir: PathBuf,
    /// Drawn from the run's seed: the cluster secret, the rings' seeds.
    pub seed: u64,
    /// Passed to every proxy (`NIMBUS_INJECT_BUG`), for the harness's own test.
    pub inject_bug: Option<String>,
    /// The network's shape; `None`: namespaces as root (proxies should they fail), proxies
    /// otherwise.
    pub network: Option<NetworkKind>,
    /// Put [`SMALL_DEVICE`] on a small tmpfs of its own, so that it can be filled (needs
    /// root); left `false` by [`Cluster::start`] when the mount fails.
    pub small_device: bool,
}

/// How the nodes are connected (see [`crate::net`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkKind {
    /// A network namespace per node (needs root).
    Namespaces,
    /// Loopback behind the harness's fault-injecting TCP proxies.
    Proxied,
}

/// One process and how it was started.
struct Process {
    name: String,
    /// What its command line starts with (`ip netns exec NS`), if anything.
    prefix: Vec<String>,
    args: Vec<String>,
    /// Where it answers when ready.
    ready_at: Vec<SocketAddr>,
    child: Option<Child>,
    stopped: bool,
}

/// A running cluster.
pub struct Cluster {
    /// The spec it was started with.
    pub spec: ClusterSpec,
    /// Its network.
    pub net: Box<dyn Network>,
    nodes: Vec<Process>,
    proxies: Vec<Process>,
    /// The proxies' S3 endpoints.
    pub endpoints: Vec<String>,
    /// The S3 access key and secret.
    pub credentials: (String, String),
    /// Mounted filesystems to unmount.
    mounts: Vec<PathBuf>,
    /// Processes that exited on their own (which they never should), as noticed.
    pub exits: Vec<String>,
}

#[derive(Deserialize)]
struct MetaStatus {
    leader_id: Option<u64>,
    term: u64,
}

/// What `nimbus admin placement --json` says.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Placement {
    /// Partitions below full redundancy.
    pub below_full_redundancy: u64,
    /// Fragments away from their slot's device.
    pub misplaced: u64,
    /// Devices that did not answer.
    pub unreachable: Vec<serde_json::Value>,
}

impl Placement {
    /// Healthy: everything where it belongs, every device answering.
    #[must_use]
    pub fn healthy(&self) -> bool {
        self.below_full_redundancy == 0 && self.misplaced == 0 && self.unreachable.is_empty()
    }
}

impl Cluster {
    /// Starts the nodes and spares, forms the metadata group, creates the policies with
    /// their rings over the first `spec.nodes` nodes, an account and its S3 key, then the
    /// proxies.
    ///
    /// # Errors
    /// A process that does not start, a setup step that fails.
    pub fn start(spec: ClusterSpec) -> Result<Cluster> {
        let nodes = spec.nodes + spec.spares;
        let net: Box<dyn Network> = match spec.network {
            Some(NetworkKind::Namespaces) => {
                if !is_root() {
                    bail!("--network namespaces needs root; --network proxied runs without");
                }
                Box::new(Namespaces::create(nodes)?)
            }
            Some(NetworkKind::Proxied) => Box::new(Proxied::create(nodes)?),
            None if is_root() => match Namespaces::create(nodes) {
                Ok(net) => Box::new(net),
                Err(e) => {
                    eprintln!("nimbus-chaos: no network namespaces ({e:#}); using proxies");
                    Box::new(Proxied::create(nodes)?)
                }
            },
            None => Box::new(Proxied::create(nodes)?),
        };
        std::fs::create_dir_all(spec.dir.join("logs"))?;
        let secret = format!("{:016x}", spec.seed).repeat(4);
        std::fs::write(spec.dir.join("cluster-secret"), format!("{secret}\n"))?;
        let mut cluster = Cluster {
            spec: spec.clone(),
            net,
            nodes: Vec::new(),
            proxies: Vec::new(),
            endpoints: Vec::new(),
            credentials: (String::new(), String::new()),
            mounts: Vec::new(),
            exits: Vec::new(),
        };
        for i in 1..=spec.nodes + spec.spares {
            cluster.write_node_config(i)?;
            let config = spec.dir.join(format!("node{i}/storage.toml"));
            let mut ready_at = vec![cluster.node_addr(i)];
            if i <= META_MEMBERS {
                ready_at.push(cluster.meta_addr(i));
            }
            cluster.nodes.push(Process {
                name: format!("node{i}"),
                prefix: cluster.net.command_prefix(i),
                args: vec![
                    "storage".into(),
                    "--config".into(),
                    config.to_string_lossy().into_owned(),
                ],
                ready_at,
                child: None,
                stopped: false,
            });
        }
        for i in 1..=spec.nodes {
            cluster.start_node(i)?;
        }
        for i in 1..=spec.nodes {
            cluster.wait_node(i)?;
        }
        cluster.bootstrap()?;
        for j in 1..=spec.proxies {
            let port = free_port()?;
            let config = spec.dir.join(format!("proxy{j}.toml"));
            let members = cluster.meta_list();
            std::fs::write(
                &config,
                format!(
                    "listen = \"127.0.0.1:{port}\"\n\
                     cluster_secret_file = \"{}\"\n\
                     meta = [{members}]\n\
                     region = \"us-east-1\"\n\
                     s3_domains = []\n\
                     expirer_interval_secs = 5\n\
                     abandoned_upload_secs = 600\n",
                    spec.dir.join("cluster-secret").display()
                ),
            )?;
            cluster.proxies.push(Process {
                name: format!("proxy{j}"),
                prefix: Vec::new(),
                args: vec![
                    "proxy".into(),
                    "--config".into(),
                    config.to_string_lossy().into_owned(),
                ],
                ready_at: vec![SocketAddr::from(([127, 0, 0, 1], port))],
                child: None,
                stopped: false,
            });
            cluster.endpoints.push(format!("http://127.0.0.1:{port}"));
            cluster.start_proxy(j)?;
        }
        Ok(cluster)
    }

    /// Node `i`'s storage address.
    #[must_use]
    pub fn node_addr(&self, i: u16) -> SocketAddr {
        self.net.node_addr(i)
    }

    fn meta_addr(&self, i: u16) -> SocketAddr {
        self.net.meta_addr(i)
    }

    fn meta_list(&self) -> String {
        (1..=META_MEMBERS)
            .map(|i| format!("\"{}\"", self.meta_addr(i)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Node `i`'s directory.
    #[must_use]
    pub fn node_dir(&self, i: u16) -> PathBuf {
        self.spec.dir.join(format!("node{i}"))
    }

    /// Where device `device` of node `i` sits in the rings.
    #[must_use]
    pub fn location(&self, i: u16, device: &str) -> String {
        format!("r1z{i}-{}/{device}", self.node_addr(i))
    }

    fn write_node_config(&mut self, i: u16) -> Result<()> {
        let dir = self.node_dir(i);
        let mut text = format!(
            "listen = \"{}\"\ncluster_secret_file = \"{}\"\nio_engine = \"auto\"\n\n\
             [engine]\nbuffers = 16\nbuffer_bytes = 262144\n",
            self.net.node_listen(i),
            self.spec.dir.join("cluster-secret").display()
        );
        for device in DEVICES {
            let path = dir.join(device);
            std::fs::create_dir_all(&path)?;
            if (i, device) == SMALL_DEVICE
                && self.spec.small_device
                && let Err(e) = self.mount_small(&path)
            {
                eprintln!("nimbus-chaos: {e:#}: full-device will be skipped");
                self.spec.small_device = false;
            }
            text.push_str(&format!(
                "\n[[device]]\nname = \"{device}\"\npath = \"{}\"\nreserve_bytes = {RESERVE_BYTES}\n",
                path.display()
            ));
        }
        if i <= META_MEMBERS {
            text.push_str(&format!(
                "\n[meta]\nid = {i}\ndir = \"{}\"\nlisten = \"{}\"\n",
                dir.join("meta").display(),
                self.net.meta_listen(i)
            ));
        }
        // Quick passes and a short collector grace, so that each scenario heals within
        // seconds; 15 s still outlasts every PUT's commit-to-index window (the proxy's index
        // calls time out after 5 s).
        text.push_str(&format!(
            "\n[heartbeat]\nmembers = [{}]\nnode = \"{}\"\ninterval_ms = 500\n\n\
             [audit]\nbytes_per_sec = 67108864\ncycle_pause_secs = 5\n\n\
             [workers]\nbytes_per_sec = 67108864\npass_pause_secs = 2\ngc_grace_secs = 15\n\
             index_sync_secs = 5\ntombstone_grace_secs = 60\n",
            self.meta_list(),
            self.node_addr(i)
        ));
        std::fs::write(dir.join("storage.toml"), text)?;
        Ok(())
    }

    /// Mounts a small tmpfs at `path`: the device a full-device fault fills.
    fn mount_small(&mut self, path: &Path) -> Result<()> {
        let size = format!("size={SMALL_DEVICE_BYTES}");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "nimbus-chaos"])
            .arg(path)
            .status()
            .context("run mount")?;
        if !status.success() {
            bail!("mount a tmpfs at {}", path.display());
        }
        self.mounts.push(path.to_path_buf());
        Ok(())
    }

    /// Runs `nimbus admin --json ARGS` against the metadata members; returns what it printed.
    ///
    /// # Errors
    /// It failed: the error holds what it printed.
    pub fn admin(&self, args: &[&str]) -> Result<String> {
        let mut command = Command::new(&self.spec.nimbus);
        command.arg("admin");
        for i in 1..=META_MEMBERS {
            command.args(["--meta", &self.meta_addr(i).to_string()]);
        }
        let out = command
            .arg("--secret-file")
            .arg(self.spec.dir.join("cluster-secret"))
            .arg("--json")
            .args(args)
            .output()
            .context("run nimbus admin")?;
        if !out.status.success() {
            bail!(
                "nimbus admin {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `admin` again and again until it succeeds or `limit` passes.
    fn admin_retrying(&self, args: &[&str], limit: Duration) -> Result<String> {
        let started = Instant::now();
        loop {
            match self.admin(args) {
                Ok(out) => return Ok(out),
                Err(e) if started.elapsed() > limit => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(300)),
            }
        }
    }

    fn bootstrap(&mut self) -> Result<()> {
        let members: Vec<String> = (1..=META_MEMBERS)
            .map(|i| format!("{i}={}", self.meta_addr(i)))
            .collect();
        let mut init = vec!["meta", "init"];
        init.extend(members.iter().map(String::as_str));
        self.admin_retrying(&init, Duration::from_secs(30))?;
        self.leader()?;
        let hash_key = format!("{:016x}", self.spec.seed.rotate_left(17)).repeat(4);
        for (n, policy) in POLICIES.into_iter().enumerate() {
            let seed = (self.spec.seed ^ n as u64).to_string();
            let mut args = vec![
                "policy",
                "create",
                policy,
                "--part-power",
                "6",
                "--min-part-hours",
                "0",
                "--seed",
                &seed,
                "--hash-key",
                &hash_key,
            ];
            if n == 0 {
                args.push("--default");
            }
            if policy == "rep5" {
                args.push("--index");
            }
            self.admin_retrying(&args, Duration::from_secs(30))?;
            for i in 1..=self.spec.nodes {
                for device in DEVICES {
                    let location = self.location(i, device);
                    self.admin_retrying(
                        &["device", "add", policy, &location, "1"],
                        Duration::from_secs(30),
                    )?;
                }
            }
            self.admin_retrying(&["ring", "rebalance", policy], Duration::from_secs(30))?;
        }
        self.admin_retrying(&["account", "create", ACCOUNT], Duration::from_secs(30))?;
        let access = "CHAOSCHAOSCHAOS00001".to_owned();
        let secret = format!("{:016x}", self.spec.seed.rotate_left(29)).repeat(2);
        self.admin_retrying(
            &[
                "credential",
                "create-s3",
                ACCOUNT,
                "--access-key",
                &access,
                "--secret",
                &secret,
            ],
            Duration::from_secs(30),
        )?;
        self.credentials = (access, secret);
        Ok(())
    }

    /// The node whose metadata member leads the group now: every member is asked at once
    /// (a hung member must not hold the question up), and the answer of the highest term
    /// that names a leader wins.
    ///
    /// # Errors
    /// No leader within 30 s.
    pub fn leader(&self) -> Result<u16> {
        let started = Instant::now();
        loop {
            let mut asking = Vec::new();
            for i in 1..=META_MEMBERS {
                let child = Command::new(&self.spec.nimbus)
                    .arg("admin")
                    .args(["--meta", &self.meta_addr(i).to_string()])
                    .arg("--secret-file")
                    .arg(self.spec.dir.join("cluster-secret"))
                    .args(["--json", "meta", "status"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("run nimbus admin")?;
                asking.push(child);
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut best: Option<(u64, u64)> = None; // (term, leader)
            for mut child in asking {
                while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let Ok(out) = child.wait_with_output() else {
                    continue;
                };
                if let Ok(status) = serde_json::from_slice::<MetaStatus>(&out.stdout)
                    && let Some(leader) = status.leader_id
                    && best.is_none_or(|(term, _)| status.term > term)
                {
                    best = Some((status.term, leader));
                }
            }
            if let Some((_, id)) = best {
                return u16::try_from(id).map_err(|_| anyhow!("leader id {id}"));
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("no metadata leader after 30 s");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// What `nimbus admin placement` reports, or `None` when it could not run.
    #[must_use]
    pub fn placement(&self) -> Option<Placement> {
        let out = self.admin(&["placement"]).ok()?;
        serde_json::from_str(&out).ok()
    }

    fn spawn(&self, p: &Process) -> Result<Child> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.spec.dir.join("logs").join(format!("{}.log", p.name)))?;
        let mut command = match p.prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&self.spec.nimbus);
                c
            }
            None => Command::new(&self.spec.nimbus),
        };
        // A group of its own: a Ctrl-C at the terminal reaches the harness alone, which then
        // stops the cluster itself.
        command
            .process_group(0)
            .args(&p.args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(bug) = &self.spec.inject_bug {
            command.env("NIMBUS_INJECT_BUG", bug);
        }
        command.spawn().with_context(|| format!("start {}", p.name))
    }

    /// Starts node `i` (if it is not running).
    ///
    /// # Errors
    /// It could not be started.
    pub fn start_node(&mut self, i: u16) -> Result<()> {
        let index = usize::from(i - 1);
        if self.nodes[index].child.is_some() {
            return Ok(());
        }
        let child = self.spawn(&self.nodes[index])?;
        self.nodes[index].child = Some(child);
        self.nodes[index].stopped = false;
        Ok(())
    }

    /// Waits until node `i` listens.
    ///
    /// # Errors
    /// It did not within a minute.
    pub fn wait_node(&self, i: u16) -> Result<()> {
        wait_listening(&self.nodes[usize::from(i - 1)])
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill_node(&mut self, i: u16) {
        kill(&mut self.nodes[usize::from(i - 1)]);
    }

    /// Stops (`true`, SIGSTOP) or continues (`false`, SIGCONT) node `i`.
    pub fn pause_node(&mut self, i: u16, pause: bool) {
        let p = &mut self.nodes[usize::from(i - 1)];
        if let Some(child) = &p.child {
            let signal = if pause { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            p.stopped = pause;
        }
    }

    /// Starts proxy `j` and waits until it listens.
    ///
    /// # Errors
    /// It did not start.
    pub fn start_proxy(&mut self, j: u16) -> Result<()> {
        let index = usize::from(j - 1);
        if self.proxies[index].child.is_none() {
            let child = self.spawn(&self.proxies[index])?;
            self.proxies[index].child = Some(child);
        }
        wait_listening(&self.proxies[index])
    }

    /// Kills proxy `j` with SIGKILL.
    pub fn kill_proxy(&mut self, j: u16) {
        kill(&mut self.proxies[usize::from(j - 1)]);
    }

    /// Brings every process of the rings back: continues the stopped, starts the dead
    /// (noting in [`Cluster::exits`] any that exited on its own), reconnects and unslows
    /// every link; waits until each listens.
    ///
    /// # Errors
    /// A process that does not come back.
    pub fn restore_all(&mut self) -> Result<()> {
        self.reap_exited();
        let total = u16::try_from(self.nodes.len()).unwrap_or(u16::MAX);
        for i in 1..=total {
            self.net.set_connected(i, true)?;
            self.net.set_slow(i, None)?;
            if self.nodes[usize::from(i - 1)].stopped {
                self.pause_node(i, false);
            }
        }
        for i in 1..=self.spec.nodes {
            self.start_node(i)?;
        }
        for i in 1..=self.spec.nodes {
            self.wait_node(i)?;
        }
        for j in 1..=self.spec.proxies {
            self.start_proxy(j)?;
        }
        Ok(())
    }

    /// Notes in [`Cluster::exits`] the processes that exited on their own since last asked.
    pub fn reap_exited(&mut self) {
        for p in self.nodes.iter_mut().chain(self.proxies.iter_mut()) {
            if let Some(child) = &mut p.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.exits
                    .push(format!("{} exited on its own: {status}", p.name));
                p.child = None;
                p.stopped = false;
            }
        }
    }

    /// Whether node `i` runs.
    #[must_use]
    pub fn node_running(&self, i: u16) -> bool {
        self.nodes[usize::from(i - 1)].child.is_some()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in self.proxies.iter_mut().chain(self.nodes.iter_mut()) {
            if p.stopped
                && let Some(child) = &p.child
            {
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .status();
            }
            kill(p);
        }
        for mount in &self.mounts {
            let _ = Command::new("umount").arg(mount).status();
        }
    }
}

fn kill(p: &mut Process) {
    if let Some(mut child) = p.child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    p.stopped = false;
}

fn wait_listening(p: &Process) -> Result<()> {
    let started = Instant::now();
    for addr in &p.ready_at {
        while TcpStream::connect_timeout(addr, Duration::from_millis(500)).is_err() {
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "{} does not listen on {addr} after {READY_TIMEOUT:?}",
                    p.name
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// A port free on 127.0.0.1 now.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}
