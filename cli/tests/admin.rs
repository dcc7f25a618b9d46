//! `nimbus admin …` as an operator runs it: the real binary against metadata members that
//! this test process starts (each test its own group, on free ports, with its own secret
//! file). Checks what each command prints, that changes land in the members' map, and that
//! a refused command exits non-zero with the map's message and leaves the map as it was.

#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use nimbus_core::auth::ClusterSecret;
use nimbus_ring::map::{ClusterMap, CredentialKind, Versioning};
use nimbus_ring::raft::NodeId;
use nimbus_ring::raft::group::{MetaConfig, MetaNode, RaftTuning};
use serde_json::Value;
use tempfile::TempDir;

/// Metadata members served by a runtime of their own, while the test thread runs the
/// binary. Dropping it stops them.
struct Cluster {
    runtime: tokio::runtime::Runtime,
    dir: TempDir,
    members: BTreeMap<NodeId, MetaNode>,
    secret_file: PathBuf,
}

impl Cluster {
    /// Starts members `1..=count`, in no group yet.
    fn start(count: u64) -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = TempDir::new().unwrap();
        let secret = ClusterSecret::new([0x42; 32]);
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, format!("{}\n", secret.to_hex())).unwrap();
        let mut members = BTreeMap::new();
        for id in 1..=count {
            let config = MetaConfig {
                id,
                dir: dir.path().join(format!("member-{id}")),
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                advertise: None,
                secret: secret.clone(),
                tuning: RaftTuning::default(),
            };
            let member = runtime.block_on(MetaNode::start(config)).unwrap();
            members.insert(id, member);
        }
        Cluster {
            runtime,
            dir,
            members,
            secret_file,
        }
    }

    /// Starts three members and forms the group with `nimbus admin meta init`.
    fn start_group() -> Cluster {
        let cluster = Cluster::start(3);
        let out = cluster.ok(&[
            "meta",
            "init",
            &cluster.pair(1),
            &cluster.pair(2),
            &cluster.pair(3),
        ]);
        assert!(
            out.starts_with("initialized the metadata group: voters 1="),
            "{out}"
        );
        cluster
    }

    fn addr(&self, id: NodeId) -> String {
        self.members[&id].addr().to_owned()
    }

    /// `ID=ADDR` of member `id`.
    fn pair(&self, id: NodeId) -> String {
        format!("{id}={}", self.addr(id))
    }

    /// Runs `nimbus admin` with `meta` as the members to ask and the cluster's secret file.
    fn nimbus_via(&self, meta: &[String], args: &[&str]) -> Output {
        self.nimbus_with(meta, Some(&self.secret_file), args)
    }

    /// Runs `nimbus admin` with `meta` as the members to ask and `secret_file`, if any.
    fn nimbus_with(&self, meta: &[String], secret_file: Option<&Path>, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nimbus"));
        command
            .env_remove("NIMBUS_META")
            .env_remove("NIMBUS_SECRET_FILE")
            .arg("admin");
        if let Some(file) = secret_file {
            command.arg("--secret-file").arg(file);
        }
        for addr in meta {
            command.arg("--meta").arg(addr);
        }
        command.args(args).output().unwrap()
    }

    /// Runs `nimbus admin` against member 1.
    fn nimbus(&self, args: &[&str]) -> Output {
        self.nimbus_via(&[self.addr(1)], args)
    }

    fn ok(&self, args: &[&str]) -> String {
        success(args, &self.nimbus(args))
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    /// The leader's map, read linearizably.
    fn map(&self) -> ClusterMap {
        let map = self
            .runtime
            .block_on(self.members[&1].linearizable_map())
            .unwrap();
        (*map).clone()
    }

    /// Waits until the group's first voters, members 1 to 3, name the same leader; returns
    /// it.
    fn leader(&self) -> NodeId {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let leaders: Vec<Option<NodeId>> =
                (1..=3).map(|id| self.members[&id].leader()).collect();
            if let Some(Some(leader)) = leaders.first()
                && leaders.iter().all(|l| l == &Some(*leader))
            {
                return *leader;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no agreed leader: {leaders:?}"
            );
            // The timer is made inside the runtime, which drives it.
            self.runtime
                .block_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
        }
    }

    /// Runs a command that must be refused, checks it said `expect` on stderr, and that
    /// the map is byte for byte what it was.
    fn refused(&self, args: &[&str], expect: &str) -> Output {
        self.refused_with(Some(&self.secret_file), args, expect)
    }

    /// [`Cluster::refused`], with `secret_file` (if any) instead of the cluster's.
    fn refused_with(&self, secret_file: Option<&Path>, args: &[&str], expect: &str) -> Output {
        let before = self.map().encode();
        let out = self.nimbus_with(&[self.addr(1)], secret_file, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "nimbus admin {args:?} succeeded");
        assert!(
            stderr.contains(expect),
            "nimbus admin {args:?}: expected {expect:?} in {stderr:?}"
        );
        assert!(
            self.map().encode() == before,
            "nimbus admin {args:?} changed the map"
        );
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for member in self.members.values() {
            self.runtime.block_on(member.shutdown());
        }
    }
}

fn success(args: &[&str], out: &Output) -> String {
    assert!(
        out.status.success(),
        "nimbus admin {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Creates a policy of three devices, rebalanced, an account and a bucket.
fn set_up_map(cluster: &Cluster) {
    cluster.ok(&[
        "policy",
        "create",
        "rep3",
        "--part-power",
        "6",
        "--min-part-hours",
        "0",
    ]);
    for zone in 1..=3 {
        let location = format!("r1z{zone}-127.0.0.1:62{zone:02}/d0");
        cluster.ok(&["device", "add", "rep3", &location, "100"]);
    }
    cluster.ok(&["ring", "rebalance", "rep3"]);
    cluster.ok(&["account", "create", "AUTH_alice"]);
    cluster.ok(&["bucket", "create", "photos", "--owner", "AUTH_alice"]);
}

#[test]
fn an_operator_sets_up_a_cluster_with_admin_commands() {
    let cluster = Cluster::start_group();

    let out = cluster.ok(&[
        "policy",
        "create",
        "rep3",
        "--part-power",
        "6",
        "--min-part-hours",
        "0",
    ]);
    assert!(
        out.starts_with("created storage policy rep3: 2^6 partitions"),
        "{out}"
    );
    for zone in 1..=3u32 {
        let location = format!("r1z{zone}-127.0.0.1:62{zone:02}/d0");
        let out = cluster.ok(&["device", "add", "rep3", &location, "100"]);
        let id = zone - 1;
        assert!(
            out.starts_with(&format!("added device {id} to rep3: {location}")),
            "{out}"
        );
    }
    let out = cluster.ok(&["ring", "rebalance", "rep3"]);
    assert!(out.starts_with("rebalanced rep3: ring epoch 1, "), "{out}");
    let ring = cluster.json(&["ring", "show", "rep3"]);
    assert_eq!(ring["ring_epoch"], 1);
    let devices = ring["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 3);
    assert!(
        devices
            .iter()
            .all(|d| d["slots"] == 64 && d["state"] == "up")
    );
    let table = cluster.ok(&["ring", "show", "rep3"]);
    assert!(
        table.starts_with("rep3: ring epoch 1, 64 partitions"),
        "{table}"
    );
    assert!(
        table.contains("r1z2-127.0.0.1:6202/d0  100     64     up"),
        "{table}"
    );

    assert_eq!(
        cluster.ok(&["account", "create", "AUTH_alice"]),
        "created account AUTH_alice\n"
    );
    let created = cluster.json(&["credential", "create-s3", "AUTH_alice"]);
    let access_key = created["access_key"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap();
    assert_eq!(access_key.len(), 20);
    assert!(
        access_key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    );
    assert_eq!(secret.len(), 40);
    let out = cluster.ok(&[
        "credential",
        "create-swift",
        "AUTH_alice",
        "bob",
        "--key",
        "swordfish1",
    ]);
    assert_eq!(out, "created Swift user AUTH_alice:bob\n");

    assert_eq!(
        cluster.ok(&["bucket", "create", "photos", "--owner", "AUTH_alice"]),
        "created bucket photos for AUTH_alice\n"
    );
    cluster.ok(&[
        "bucket",
        "create",
        "logs",
        "--owner",
        "AUTH_alice",
        "--shards",
        "4",
    ]);
    let out = cluster.ok(&["bucket", "versioning", "photos", "enabled"]);
    assert_eq!(out, "versioning of photos is enabled\n");
    let list = cluster.ok(&["bucket", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(lines[0].starts_with("NAME"), "{list}");
    assert!(
        lines[1].starts_with("logs") && lines[1].ends_with("unversioned  4"),
        "{list}"
    );
    assert!(
        lines[2].starts_with("photos") && lines[2].contains("enabled"),
        "{list}"
    );
    let listed = cluster.json(&["bucket", "list", "--owner", "AUTH_alice"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(
        cluster.ok(&["bucket", "list", "--owner", "AUTH_bob"]),
        "no buckets owned by AUTH_bob\n"
    );

    // Everything above is in the members' map.
    let map = cluster.map();
    let ring = map.policy("rep3").unwrap().ring.as_ref().unwrap();
    assert_eq!(ring.devices().len(), 3);
    let credential = map.credential(access_key).unwrap();
    assert_eq!(
        (credential.account.as_str(), credential.secret.as_str()),
        ("AUTH_alice", secret)
    );
    assert_eq!(
        map.credential("AUTH_alice:bob").unwrap().kind,
        CredentialKind::Swift
    );
    assert_eq!(
        map.bucket("photos").unwrap().versioning,
        Versioning::Enabled
    );
    assert_eq!(map.bucket("logs").unwrap().shards, 4);

    let summary = cluster.ok(&["map", "show"]);
    let version = map.version();
    for expected in [
        format!("map version {version}, epoch 1, default policy rep3"),
        "policy rep3: ring epoch 1, 3 device(s)".to_owned(),
        "accounts: 1 (AUTH_alice)".to_owned(),
        "credentials: 2".to_owned(),
        "buckets: 2 (logs, photos)".to_owned(),
        "down devices: none".to_owned(),
    ] {
        assert!(summary.contains(&expected), "{expected:?} not in {summary}");
    }
    let summary = cluster.json(&["map", "show"]);
    assert_eq!(summary["version"], version);
    assert_eq!(summary["buckets"], serde_json::json!(["logs", "photos"]));

    let status = cluster.ok(&["meta", "status"]);
    assert!(status.starts_with("member 1: "), "{status}");
    assert!(
        status.contains(&format!("map version {version} epoch 1")),
        "{status}"
    );
    assert!(
        status.contains(&format!(
            "voters {}, {}, {}",
            cluster.pair(1),
            cluster.pair(2),
            cluster.pair(3)
        )),
        "{status}"
    );
    let all = cluster.json(&["meta", "status", "--all"]);
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 3);
    let leaders = all.iter().filter(|s| s["state"] == "leader").count();
    assert_eq!(leaders, 1, "{all:?}");
    let leader = cluster.leader();
    assert!(all.iter().all(|s| s["leader_id"] == leader));

    // Undoing it, step by step.
    cluster.ok(&["credential", "revoke", access_key]);
    cluster.ok(&["credential", "revoke", "AUTH_alice:bob"]);
    cluster.ok(&["bucket", "delete", "photos"]);
    cluster.ok(&["bucket", "delete", "logs"]);
    assert_eq!(
        cluster.ok(&["account", "delete", "AUTH_alice"]),
        "deleted account AUTH_alice\n"
    );
    cluster.ok(&["device", "set-weight", "rep3", "1", "50"]);
    let out = cluster.ok(&["device", "remove", "rep3", "2"]);
    assert!(out.starts_with("removed device 2 from rep3"), "{out}");
    let map = cluster.map();
    assert_eq!(map.accounts().count() + map.buckets().count(), 0);
    assert_eq!(map.credentials().count(), 0);
    let devices = map.policy("rep3").unwrap().builder.devices();
    assert_eq!(devices[1].device.weight, 50.0);
    assert!(devices[2].removed);
}

#[test]
fn refused_commands_exit_non_zero_and_leave_the_map_unchanged() {
    let cluster = Cluster::start_group();
    set_up_map(&cluster);

    cluster.refused(
        &["bucket", "create", "Bad_Name", "--owner", "AUTH_alice"],
        "error: invalid request: invalid bucket name \"Bad_Name\"",
    );
    cluster.refused(
        &["bucket", "create", "photos", "--owner", "AUTH_alice"],
        "error: bucket photos exists already (owner AUTH_alice)",
    );
    cluster.refused(
        &["bucket", "create", "videos", "--owner", "AUTH_nobody"],
        "error: no account AUTH_nobody",
    );
    cluster.refused(
        &["account", "delete", "AUTH_alice"],
        "account AUTH_alice still has 1 bucket(s) and 0 credential(s)",
    );
    cluster.refused(
        &["credential", "revoke", "NOSUCHKEY"],
        "no credential NOSUCHKEY",
    );
    cluster.refused(
        &[
            "credential",
            "create-s3",
            "AUTH_alice",
            "--access-key",
            "lower",
        ],
        "an S3 access key id has 16 to 128 of A-Z and 0-9",
    );
    cluster.refused(&["ring", "rebalance", "ec4+2"], "no storage policy ec4+2");
    cluster.refused(
        &["ring", "show", "ec4+2"],
        "no storage policy ec4+2 (policies: rep3)",
    );
    cluster.refused(
        &["device", "add", "rep3", "r1z1-nowhere/d0", "1"],
        "bad device location",
    );
    cluster.refused(
        &["device", "set-weight", "rep3", "0", "-1"],
        "weight -1 is not allowed",
    );

    // With --json, the map's refusal is also on stdout, as its error code and message.
    let out = cluster.refused(
        &[
            "bucket",
            "create",
            "photos",
            "--owner",
            "AUTH_alice",
            "--json",
        ],
        "exists already",
    );
    let refusal: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(refusal["error"], "bucket_exists");
    assert_eq!(
        refusal["message"],
        "bucket photos exists already (owner AUTH_alice)"
    );

    // Membership changes that would break the group are refused by the leader.
    cluster.refused(
        &["meta", "voters"],
        "a configuration needs at least one voter",
    );
    cluster.refused(
        &["meta", "voters", "1", "2", "9"],
        "member 9 is not in the group; add it as a learner first",
    );
    cluster.refused(
        &["meta", "add-learner", "2", "127.0.0.1:1"],
        &format!("member 2 is in the group already, at {}", cluster.addr(2)),
    );
    cluster.refused(&["meta", "add-learner", "7", "nowhere"], "is not host:port");
    cluster.refused(
        &["meta", "init", &cluster.pair(1)],
        "(409): the group is initialized already",
    );

    // Credentials and members that are wrong or missing.
    let forged = cluster.dir.path().join("forged");
    std::fs::write(&forged, ClusterSecret::new([0x43; 32]).to_hex()).unwrap();
    cluster.refused_with(
        Some(&forged),
        &["account", "create", "AUTH_mallory"],
        "(403): forbidden: bad signature; is --secret-file the cluster's secret?",
    );
    std::fs::write(&forged, "not hex").unwrap();
    cluster.refused_with(
        Some(&forged),
        &["map", "show"],
        "the cluster secret must be 64 hex digits",
    );
    cluster.refused_with(
        None,
        &["map", "show"],
        "no cluster secret: pass --secret-file",
    );
    let out = cluster.nimbus_via(&[], &["map", "show"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no metadata member given"));
    let out = cluster.nimbus_via(
        &["127.0.0.1:1".to_owned()],
        &["account", "create", "AUTH_x"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "no metadata member could be reached: connect to metadata member 127.0.0.1:1"
        ),
        "{stderr}"
    );
    assert!(cluster.map().account("AUTH_x").is_none());
}

#[test]
fn commands_reach_the_leader_from_any_member_given() {
    let cluster = Cluster::start(4);
    // Initialized through NIMBUS_META, which lists members comma-separated.
    let out = Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .env("NIMBUS_META", format!("127.0.0.1:1,{}", cluster.addr(1)))
        .env("NIMBUS_SECRET_FILE", &cluster.secret_file)
        .args([
            "admin",
            "meta",
            "init",
            &cluster.pair(1),
            &cluster.pair(2),
            &cluster.pair(3),
        ])
        .output()
        .unwrap();
    success(&["meta", "init"], &out);
    let leader = cluster.leader();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    // An unreachable member first, then a follower: every write lands through the leader.
    let via = ["127.0.0.1:1".to_owned(), cluster.addr(follower)];
    let run = |args: &[&str]| success(args, &cluster.nimbus_via(&via, args));
    run(&["policy", "create", "rep3", "--part-power", "4", "--default"]);
    run(&["account", "create", "AUTH_ops"]);
    run(&["bucket", "create", "from-a-follower", "--owner", "AUTH_ops"]);
    assert!(run(&["bucket", "list"]).contains("from-a-follower"));

    // The fourth member joins as a learner, then as a voter, all through the follower.
    let out = run(&["meta", "add-learner", "4", &cluster.addr(4)]);
    assert!(
        out.starts_with(&format!(
            "member 4 at {} is a learner: voters 1=",
            cluster.addr(4)
        )),
        "{out}"
    );
    assert!(
        out.ends_with(&format!("learners {}\n", cluster.pair(4))),
        "{out}"
    );
    // a learner can leave again, and join again
    let out = run(&["meta", "remove-learner", "4"]);
    assert!(out.starts_with("member 4 left the group"), "{out}");
    assert!(out.ends_with("learners none\n"), "{out}");
    run(&["meta", "add-learner", "4", &cluster.addr(4)]);
    let out = run(&["meta", "voters", "1", "2", "3", "4"]);
    assert_eq!(
        out,
        format!(
            "changed the voters: voters {}, {}, {}, {}; learners none\n",
            cluster.pair(1),
            cluster.pair(2),
            cluster.pair(3),
            cluster.pair(4)
        )
    );
    let statuses = run(&["meta", "status", "--all"]);
    assert_eq!(statuses.lines().count(), 4, "{statuses}");
    assert!(
        statuses.lines().any(|l| l.starts_with("member 4: ")),
        "{statuses}"
    );
    // a voter does not leave as a learner
    let refused = cluster.nimbus_via(&via, &["meta", "remove-learner", "4"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is a voter"),
        "{refused:?}"
    );
    let map = cluster.map();
    assert!(map.bucket("from-a-follower").is_some());
    assert_eq!(map.default_policy(), Some("rep3"));
}

#[test]
fn the_index_policy_is_set_once_and_shown_by_map_show() {
    let cluster = Cluster::start_group();
    let out = cluster.ok(&[
        "policy",
        "create",
        "ec4+2",
        "--part-power",
        "4",
        "--default",
    ]);
    assert!(out.starts_with("created storage policy ec4+2, the default:"));
    // An erasure-coded policy cannot hold the index: refused before anything is sent.
    cluster.refused(
        &["policy", "create", "ec2+1", "--part-power", "4", "--index"],
        "the index policy must be a replication policy (repN), not ec2+1",
    );
    assert!(cluster.map().policy("ec2+1").is_none());
    cluster.refused(
        &["policy", "set-index", "ec4+2"],
        "the index policy must be a replication policy (repN), not ec4+2",
    );
    cluster.refused(&["policy", "set-index", "rep9"], "no storage policy rep9");

    let out = cluster.ok(&["policy", "create", "rep5", "--part-power", "4", "--index"]);
    assert!(
        out.starts_with("created storage policy rep5, the index policy: 2^4 partitions"),
        "{out}"
    );
    assert_eq!(cluster.map().index_policy(), Some("rep5"));
    cluster.ok(&["policy", "create", "rep3", "--part-power", "4"]);
    assert_eq!(
        cluster.ok(&["policy", "set-index", "rep3"]),
        "rep3 is the index policy\n"
    );
    let set = cluster.json(&["policy", "set-index", "rep5"]);
    assert_eq!(set["index_policy"], "rep5");

    // Once a bucket exists, the index policy stays; the same one again is fine.
    cluster.ok(&["account", "create", "AUTH_alice"]);
    cluster.ok(&["credential", "create-s3", "AUTH_alice"]);
    cluster.ok(&["bucket", "create", "photos", "--owner", "AUTH_alice"]);
    cluster.refused(
        &["policy", "set-index", "rep3"],
        "the index policy is rep5 and 1 bucket(s) exist: changing it to rep3 would orphan their index shards",
    );
    cluster.ok(&["policy", "set-index", "rep5"]);

    let summary = cluster.ok(&["map", "show"]);
    assert!(
        summary.contains("default policy ec4+2, index policy rep5"),
        "{summary}"
    );
    let summary = cluster.json(&["map", "show"]);
    assert_eq!(summary["index_policy"], "rep5");
    assert_eq!(summary["default_policy"], "ec4+2");
    assert_eq!(summary["credentials"], 1);
    let ids = summary["credential_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 1);
    assert!(cluster.map().credential(ids[0].as_str().unwrap()).is_some());
}
