//! A `nimbus dev` cluster for one test, and an S3 client for it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region};
use nimbus_testkit::DevCluster;

/// A running `nimbus dev` (see `nimbus_testkit::DevCluster`), its credentials, and the
/// nodes a test restarted by hand.
pub struct Cluster {
    dev: DevCluster,
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    /// Node `i` listens on `base_port + i`, metadata member `i` on `base_port + 100 + i`.
    pub base_port: u16,
    /// Nodes the test restarted by hand.
    restarted: Mutex<Vec<Child>>,
}

impl Cluster {
    /// Starts a cluster and waits until it printed its endpoint and credentials.
    pub fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    /// As [`Cluster::start`], with more `nimbus dev` arguments.
    pub fn start_with(extra: &[&str]) -> Cluster {
        let data = tempfile::Builder::new()
            .prefix("nimbus-s3-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let dev = DevCluster::start_with(Path::new(env!("CARGO_BIN_EXE_nimbus")), data, extra);
        Cluster {
            endpoint: dev.endpoint(),
            access_key: dev.access_key(),
            secret_key: dev.secret_key(),
            base_port: dev.base_port,
            dev,
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

    /// Runs `nimbus admin ARGS` against the cluster; returns its standard output, and
    /// panics if it fails.
    pub fn admin(&self, args: &[&str]) -> String {
        let (ok, out) = self.admin_status(args);
        assert!(ok, "nimbus admin {args:?}: {out}");
        out
    }

    /// Runs `nimbus admin ARGS`; returns whether it succeeded and its standard output.
    pub fn admin_status(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_nimbus"))
            .arg("admin")
            .arg("--meta")
            .arg(format!("127.0.0.1:{}", self.base_port + 101))
            .arg("--secret-file")
            .arg(self.path().join("cluster-secret"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// `nimbus admin placement`: (fragments misplaced, partitions below full redundancy);
    /// `u64::MAX` for a figure it did not report (a device that did not answer).
    pub fn placement(&self) -> (u64, u64) {
        let (_, out) = self.admin_status(&["--json", "placement"]);
        let report: Option<serde_json::Value> = serde_json::from_str(&out).ok();
        let figure = |k: &str| {
            report
                .as_ref()
                .and_then(|r| r[k].as_u64())
                .unwrap_or(u64::MAX)
        };
        (figure("misplaced"), figure("below_full_redundancy"))
    }

    /// Waits until `nimbus admin placement` reports nothing misplaced and no partition
    /// below full redundancy; panics after `limit`.
    pub fn wait_full_redundancy(&self, limit: Duration) {
        let started = std::time::Instant::now();
        loop {
            let now = self.placement();
            if now == (0, 0) {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "not at full redundancy after {limit:?}: {now:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A storage node metric (`/metrics`), summed over the devices of every node that
    /// answers among the first eight.
    pub fn metric(&self, name: &str) -> u64 {
        (1..=8u16)
            .map(|i| {
                let Ok(out) = Command::new("curl")
                    .args([
                        "-sf",
                        &format!("http://127.0.0.1:{}/metrics", self.base_port + i),
                    ])
                    .output()
                else {
                    return 0;
                };
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.starts_with(&format!("{name}{{")))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                    .sum::<u64>()
            })
            .sum()
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        self.dev.data.path()
    }

    /// The pid of storage node `i` (1 to 6).
    pub fn node_pid(&self, i: usize) -> u32 {
        self.dev.process_with(&format!("node{i}/storage.toml"))
    }

    /// Freezes `nimbus dev` itself (SIGSTOP), so that it does not stop the cluster when a
    /// test kills a node; the test then restarts nodes by hand.
    pub fn detach_supervisor(&self) {
        let status = Command::new("kill")
            .args(["-STOP", &self.dev.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Starts storage node `i` again on its data, as a child of the test; waits until it
    /// listens.
    pub fn restart_node(&self, i: usize) {
        let dir = self.path().join(format!("node{i}"));
        let config = dir.join("storage.toml");
        // Its log, kept: a node that fails to start says why there.
        let log = dir.join("restarted.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_nimbus"))
            .arg("storage")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_else(|| {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("node {i} exited before listening ({status}):\n{log}")
        });
        assert!(first.contains("listening"), "node {i} printed {first:?}");
        // Keep reading so the pipe never fills.
        std::thread::spawn(move || for _ in lines {});
        self.restarted.lock().unwrap().push(child);
    }

    /// Kills storage node `i` with SIGKILL (call [`Cluster::detach_supervisor`] first) and
    /// waits until every thread of it has exited. Its main thread turns zombie first (no
    /// one reaps it: the supervisor is frozen) while another may still be inside an
    /// `fdatasync`; until that one is out, the process keeps its files open, and with them
    /// the index database's lock, which a node restarted at once then finds taken.
    pub fn kill_node(&self, i: usize) {
        let pid = self.node_pid(i);
        let status = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let started = Instant::now();
        // A thread gone, or a zombie.
        let exited = |task: &std::path::Path| {
            std::fs::read_to_string(task.join("status")).map_or(true, |s| s.contains("State:\tZ"))
        };
        loop {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                return;
            };
            let living = tasks.flatten().filter(|t| !exited(&t.path())).count();
            if living == 0 {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "node {i} (pid {pid}): {living} threads still running 30 s after SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for mut child in self.restarted.lock().unwrap().drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A signed call to the internal API of storage node `i` (`method`, `path` with its query,
/// `body`), as the proxies make them; the answer's body when it is a 2xx.
pub fn internal(
    cluster: &Cluster,
    method: &str,
    i: u16,
    path: &str,
    body: Option<&[u8]>,
) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let secret = nimbus_core::auth::ClusterSecret::from_hex(
        &std::fs::read_to_string(cluster.path().join("cluster-secret")).unwrap(),
    )
    .unwrap();
    let map: serde_json::Value =
        serde_json::from_str(&cluster.admin(&["--json", "map", "show"])).unwrap();
    let epoch = map["epoch"].as_u64().unwrap();
    let date = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut child = Command::new("curl")
        .args(["-sf", "--max-time", "10", "-X", method])
        .arg("-H")
        .arg(format!(
            "authorization: {}",
            secret.sign(method, path, date, epoch)
        ))
        .arg("-H")
        .arg(format!("{}: {date}", nimbus_core::auth::DATE_HEADER))
        .arg("-H")
        .arg(format!("{}: {epoch}", nimbus_core::auth::EPOCH_HEADER))
        .args(body.map(|_| ["--data-binary", "@-"]).into_iter().flatten())
        .arg(format!("http://127.0.0.1:{}{path}", cluster.base_port + i))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(body.unwrap_or_default()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    out.status.success().then_some(out.stdout)
}

/// Polls `done` every 100 ms until it holds, failing after `limit` with `what`; returns how
/// long it took.
pub fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// Creates `bucket` in storage policy `policy` (the policy header S3 clients of Nimbus send).
pub async fn create_bucket_in(s3: &Client, bucket: &str, policy: &'static str) {
    s3.create_bucket()
        .bucket(bucket)
        .customize()
        .mutate_request(move |r| {
            r.headers_mut().insert("x-nimbus-storage-policy", policy);
        })
        .send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {bucket} in {policy}: {e:?}"));
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

/// Completes upload `upload_id` of `bucket/key` with its one part, of ETag `etag`.
pub async fn complete_one_part(
    s3: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    etag: &str,
) -> aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(CompletedPart::builder().part_number(1).e_tag(etag).build())
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("complete {bucket}/{key}: {e:?}"))
}

/// Reads every `(key, bytes)` of `objects` back from `bucket` and checks the bytes.
pub async fn check_all(s3: &Client, bucket: &str, objects: &[(String, Vec<u8>)]) {
    for (key, data) in objects {
        let got = s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {key}: {e:?}"));
        let body = got.body.collect().await.unwrap().into_bytes();
        assert!(body.as_ref() == data.as_slice(), "{key} differs");
    }
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
/// A storage node the test added, stopped when dropped.
pub struct ExtraNode(Child);

impl Drop for ExtraNode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts storage node `i` (7, 8, …) beside the dev cluster's six, configured as node 6
/// is (node 6 hosts no metadata member), and waits until it listens.
pub fn start_node(cluster: &Cluster, i: u16) -> ExtraNode {
    let template = std::fs::read_to_string(cluster.path().join("node6/storage.toml")).unwrap();
    let dir = cluster.path().join(format!("node{i}"));
    for device in ["d0", "d1"] {
        std::fs::create_dir_all(dir.join(device)).unwrap();
    }
    let text = template.replace("node6", &format!("node{i}")).replace(
        &format!("127.0.0.1:{}", cluster.base_port + 6),
        &format!("127.0.0.1:{}", cluster.base_port + i),
    );
    let config = dir.join("storage.toml");
    std::fs::write(&config, text).unwrap();
    let log = std::fs::File::create(dir.join("storage.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .arg("storage")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let node = ExtraNode(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", cluster.base_port + i)).is_err() {
        assert!(Instant::now() < deadline, "node {i} did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    node
}

pub fn location(cluster: &Cluster, i: u16, device: &str) -> String {
    format!("r1z{i}-127.0.0.1:{}/{device}", cluster.base_port + i)
}

/// The ids of `policy`'s ring's devices on node `i`.
pub fn device_ids(cluster: &Cluster, policy: &str, i: u16) -> Vec<String> {
    let ring: serde_json::Value =
        serde_json::from_str(&cluster.admin(&["--json", "ring", "show", policy])).unwrap();
    let needle = format!("127.0.0.1:{}/", cluster.base_port + i);
    ring["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["location"].as_str().unwrap_or_default().contains(&needle))
        .map(|d| d["id"].to_string())
        .collect()
}

/// Adds the devices of nodes `nodes` (`d0` and `d1`, as [`start_node`] configures them) to
/// `policy`'s ring, weight 1.
pub fn add_devices(cluster: &Cluster, policy: &str, nodes: impl IntoIterator<Item = u16>) {
    for i in nodes {
        for device in ["d0", "d1"] {
            cluster.admin(&["device", "add", policy, &location(cluster, i, device), "1"]);
        }
    }
}

/// Removes the devices of nodes `nodes` from `policy`'s ring (the next rebalances drain them).
pub fn remove_devices(cluster: &Cluster, policy: &str, nodes: impl IntoIterator<Item = u16>) {
    for i in nodes {
        for id in device_ids(cluster, policy, i) {
            cluster.admin(&["device", "remove", policy, &id]);
        }
    }
}

/// Where the index keeps `key` of `bucket`: the owner account, the shard number, and the
/// shard's replicas as (node 1 to 6, device), in slot order (the first is its primary).
pub async fn index_shard(
    cluster: &Cluster,
    bucket: &str,
    key: &str,
) -> (String, u16, Vec<(u16, String)>) {
    let secret = std::fs::read_to_string(cluster.path().join("cluster-secret")).unwrap();
    let client = nimbus_ring::raft::network::PeerClient::new(
        nimbus_core::auth::ClusterSecret::from_hex(&secret).unwrap(),
    );
    let member = format!("127.0.0.1:{}", cluster.base_port + 101);
    let answer = client
        .get(&member, "/meta/map", Duration::from_secs(5), 64 << 20)
        .await
        .unwrap();
    let map = nimbus_ring::map::ClusterMap::decode(&answer.body).unwrap();
    let b = map.bucket(bucket).unwrap();
    let ring = map
        .policy(map.index_policy().unwrap())
        .unwrap()
        .ring
        .as_ref()
        .unwrap();
    let shard = nimbus_core::index::shard_of(key, b.shards);
    let partition = ring.partition_of(&format!("{}/{bucket}/{shard}", b.owner));
    let slots = ring
        .primaries(partition)
        .map(|d| {
            (
                d.location.node.port() - cluster.base_port,
                d.location.name.clone(),
            )
        })
        .collect();
    (b.owner.clone(), shard, slots)
}
