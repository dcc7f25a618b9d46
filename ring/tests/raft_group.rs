//! The cluster map's Raft group over real HTTP on 127.0.0.1: several metadata members in
//! one test process, each with its own directory and port. Writes go through followers,
//! leaders are killed mid-stream, members restart from their directories, a new member
//! catches up from a snapshot, and bad requests are refused at the door.

#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nimbus_core::auth::{ClusterSecret, DATE_HEADER, EPOCH_HEADER};
use nimbus_ring::map::{ClusterMap, MapCommand, MapError, MapOutcome};
use nimbus_ring::raft::NodeId;
use nimbus_ring::raft::group::{MembershipError, MetaConfig, MetaNode, RaftTuning};
use nimbus_ring::raft::network::TARGET_HEADER;
use nimbus_ring::raft::server::VERSION_HEADER;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, sleep};

const OWNER: &str = "AUTH_test";

fn secret() -> ClusterSecret {
    ClusterSecret::new([0x5a; 32])
}

fn config(dir: &TempDir, id: NodeId, listen: SocketAddr, tuning: &RaftTuning) -> MetaConfig {
    MetaConfig {
        id,
        dir: dir.path().join(format!("member-{id}")),
        listen,
        advertise: None,
        secret: secret(),
        tuning: tuning.clone(),
    }
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A group of members started in one test, stopped on [`Group::stop`].
struct Group {
    dir: TempDir,
    tuning: RaftTuning,
    members: BTreeMap<NodeId, Arc<MetaNode>>,
}

impl Group {
    /// Starts members `1..=voters` and initializes them as the group's voters.
    async fn start(voters: u64, tuning: RaftTuning) -> Group {
        let dir = TempDir::new().unwrap();
        let mut members = BTreeMap::new();
        for id in 1..=voters {
            let member = MetaNode::start(config(&dir, id, any_port(), &tuning))
                .await
                .unwrap();
            members.insert(id, Arc::new(member));
        }
        let addrs = members
            .iter()
            .map(|(&id, m)| (id, m.addr().to_owned()))
            .collect();
        members[&1].initialize(addrs).await.unwrap();
        let group = Group {
            dir,
            tuning,
            members,
        };
        group.leader(Duration::from_secs(10)).await;
        group
    }

    fn member(&self, id: NodeId) -> &Arc<MetaNode> {
        &self.members[&id]
    }

    /// Waits until every member agrees on a leader among them; returns it.
    async fn leader(&self, within: Duration) -> NodeId {
        let deadline = Instant::now() + within;
        loop {
            let seen: BTreeSet<Option<NodeId>> =
                self.members.values().map(|m| m.leader()).collect();
            if let [Some(leader)] = seen.iter().copied().collect::<Vec<_>>()[..]
                && self.members.contains_key(&leader)
            {
                return leader;
            }
            assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
            sleep(Duration::from_millis(20)).await;
        }
    }

    async fn follower(&self) -> NodeId {
        let leader = self.leader(Duration::from_secs(10)).await;
        *self.members.keys().find(|&&id| id != leader).unwrap()
    }

    /// Waits until every member's map is the leader's linearizable map, byte for byte.
    async fn converged(&self) -> Arc<ClusterMap> {
        let leader = self.leader(Duration::from_secs(10)).await;
        let truth = self.member(leader).linearizable_map().await.unwrap();
        let expected = truth.encode();
        let deadline = Instant::now() + Duration::from_secs(10);
        for (id, member) in &self.members {
            while member.map().encode() != expected {
                assert!(
                    Instant::now() < deadline,
                    "member {id} stuck at map version {} (leader at {})",
                    member.map().version(),
                    truth.version()
                );
                sleep(Duration::from_millis(20)).await;
            }
        }
        truth
    }

    async fn stop(self) {
        for member in self.members.values() {
            member.shutdown().await;
        }
    }
}

fn create_policy() -> MapCommand {
    MapCommand::CreatePolicy {
        spec: "rep3".into(),
        part_power: 4,
        min_part_hours: 0,
        seed: 7,
        hash_key: [9; 32],
        make_default: true,
    }
}

fn create_account() -> MapCommand {
    MapCommand::CreateAccount {
        name: OWNER.into(),
        now_ms: 1,
    }
}

fn create_bucket(name: &str) -> MapCommand {
    MapCommand::CreateBucket {
        name: name.into(),
        owner: OWNER.into(),
        policy: None,
        shards: None,
        now_ms: 2,
    }
}

/// Writes the policy and the account every bucket needs.
async fn set_up_map(member: &MetaNode) {
    for command in [create_policy(), create_account()] {
        assert_eq!(member.write(command).await.unwrap(), Ok(MapOutcome::Done));
    }
}

fn bucket_names(map: &ClusterMap) -> BTreeSet<String> {
    map.buckets_of(OWNER).map(|(n, _)| n.to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_a_follower_converge_on_every_member() {
    let group = Group::start(3, RaftTuning::default()).await;
    let follower = group.member(group.follower().await).clone();
    set_up_map(&follower).await;
    for i in 0..10 {
        let answer = follower.write(create_bucket(&format!("photos-{i}"))).await;
        assert_eq!(answer.unwrap(), Ok(MapOutcome::Done));
    }
    // A refused command is answered with the map's error, through the follower too.
    let again = follower.write(create_account()).await.unwrap();
    assert_eq!(again, Err(MapError::AccountExists { name: OWNER.into() }));

    let map = group.converged().await;
    assert_eq!(map.version(), 12);
    assert_eq!(bucket_names(&map).len(), 10);
    // A follower's linearizable read is the leader's map.
    let read = follower.linearizable_map().await.unwrap();
    assert_eq!(read.encode(), map.encode());
    group.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_stream_loses_no_acknowledged_create() {
    const BUCKETS: usize = 40;
    let mut group = Group::start(3, RaftTuning::default()).await;
    let old_leader = group.leader(Duration::from_secs(10)).await;
    let client = group.member(group.follower().await).clone();
    set_up_map(&client).await;

    let acknowledged = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let client = Arc::clone(&client);
        let acknowledged = Arc::clone(&acknowledged);
        async move {
            let mut acked = Vec::new();
            let mut retried = 0;
            for i in 0..BUCKETS {
                let name = format!("stream-{i:03}");
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    match client.write(create_bucket(&name)).await {
                        Ok(Ok(_)) => break,
                        // Our own earlier attempt landed: the same create.
                        Ok(Err(MapError::BucketExists { owner, .. }))
                            if attempts > 1 && owner == OWNER =>
                        {
                            eprintln!("create {name}: an earlier attempt landed");
                            break;
                        }
                        Ok(Err(e)) => panic!("create {name} refused: {e}"),
                        Err(e) => {
                            retried += 1;
                            eprintln!("create {name} attempt {attempts}: {e}");
                            assert!(Instant::now() < deadline, "create {name}: {e}");
                            sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                acked.push(name);
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }
            eprintln!(
                "{} creates acknowledged, {retried} attempts retried",
                acked.len()
            );
            acked
        }
    });

    while acknowledged.load(Ordering::SeqCst) < BUCKETS / 4 {
        sleep(Duration::from_millis(5)).await;
    }
    let killed = group.members.remove(&old_leader).unwrap();
    let killed_at = Instant::now();
    killed.shutdown().await;
    let new_leader = group.leader(Duration::from_secs(5)).await;
    let election = killed_at.elapsed();
    assert_ne!(new_leader, old_leader);
    assert!(
        election < Duration::from_secs(5),
        "election took {election:?}"
    );
    eprintln!("member {new_leader} leads {election:?} after member {old_leader} was killed");

    let acked = writer.await.unwrap();
    assert_eq!(acked.len(), BUCKETS);
    let map = group.converged().await;
    for member in group.members.values() {
        let local = member.map();
        assert_eq!(
            bucket_names(&local),
            acked.iter().cloned().collect::<BTreeSet<_>>()
        );
        // Every create applied exactly once: a second apply would have been refused, so
        // the version counts policy, account and one change per bucket.
        assert_eq!(local.version(), 2 + BUCKETS as u64);
    }
    assert_eq!(map.version(), 2 + BUCKETS as u64);
    group.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_restarted_from_their_directories_hold_the_same_map() {
    // Snapshots every few entries, so restarts go through a snapshot and a log suffix.
    let tuning = RaftTuning {
        snapshot_every_logs: 8,
        logs_kept_after_snapshot: 2,
        ..RaftTuning::default()
    };
    let mut group = Group::start(3, tuning).await;
    let leader = group
        .member(group.leader(Duration::from_secs(10)).await)
        .clone();
    set_up_map(&leader).await;
    for i in 0..19 {
        let answer = leader.write(create_bucket(&format!("keep-{i}"))).await;
        assert_eq!(answer.unwrap(), Ok(MapOutcome::Done));
    }
    let before = group.converged().await.encode();

    // The whole group stops and comes back, each member on its own directory and port.
    let addrs: BTreeMap<NodeId, SocketAddr> = group
        .members
        .iter()
        .map(|(&id, m)| (id, m.local_addr()))
        .collect();
    for member in group.members.values() {
        member.shutdown().await;
    }
    for (&id, &addr) in &addrs {
        let restarted = MetaNode::start(config(&group.dir, id, addr, &group.tuning))
            .await
            .unwrap();
        group.members.insert(id, Arc::new(restarted));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (id, member) in &group.members {
        while member.map().encode() != before {
            assert!(
                Instant::now() < deadline,
                "member {id} did not rebuild its map"
            );
            sleep(Duration::from_millis(20)).await;
        }
    }
    // The restarted group elects a leader and takes writes again.
    let follower = group.member(group.follower().await).clone();
    let answer = follower.write(create_bucket("after-restart")).await;
    assert_eq!(answer.unwrap(), Ok(MapOutcome::Done));
    let map = group.converged().await;
    assert!(map.bucket("after-restart").is_some());
    assert_eq!(map.version(), 2 + 19 + 1);
    group.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_member_catches_up_from_a_snapshot_and_becomes_a_voter() {
    let tuning = RaftTuning {
        snapshot_every_logs: 16,
        logs_kept_after_snapshot: 0,
        ..RaftTuning::default()
    };
    let mut group = Group::start(3, tuning.clone()).await;
    let leader_id = group.leader(Duration::from_secs(10)).await;
    let leader = group.member(leader_id).clone();
    set_up_map(&leader).await;
    // Concurrent creates, so that the leader snapshots and purges quickly.
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..48 {
        let leader = Arc::clone(&leader);
        writes.spawn(async move { leader.write(create_bucket(&format!("early-{i:02}"))).await });
    }
    while let Some(answer) = writes.join_next().await {
        assert_eq!(answer.unwrap().unwrap(), Ok(MapOutcome::Done));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let purged = loop {
        if let Some(purged) = leader.metrics().borrow().purged {
            break purged;
        }
        assert!(Instant::now() < deadline, "the leader never purged its log");
        sleep(Duration::from_millis(20)).await;
    };

    let newcomer = Arc::new(
        MetaNode::start(config(&group.dir, 4, any_port(), &tuning))
            .await
            .unwrap(),
    );
    leader.add_learner(4, newcomer.addr()).await.unwrap();
    leader
        .wait_caught_up(4, Duration::from_secs(10))
        .await
        .unwrap();
    // It could only catch up from a snapshot: the entries it lacked are gone.
    let installed = newcomer.metrics().borrow().snapshot;
    assert!(
        installed.is_some_and(|s| s.index >= purged.index),
        "snapshot {installed:?}, leader purged {purged:?}"
    );
    let snapshot_file = group.dir.path().join("member-4/snapshots/current.snapshot");
    assert!(std::fs::exists(&snapshot_file).unwrap());

    // Membership changes that would stall the group are refused before being proposed.
    assert!(matches!(
        leader.change_membership(BTreeSet::new()).await,
        Err(MembershipError::NoVoters)
    ));
    assert!(matches!(
        leader
            .change_membership(BTreeSet::from([1, 2, 3, 4, 9]))
            .await,
        Err(MembershipError::UnknownMember(9))
    ));
    let follower_id = group.follower().await;
    assert!(matches!(
        group.member(follower_id).change_membership(BTreeSet::from([1, 2, 3, 4])).await,
        Err(MembershipError::NotLeader(hint)) if hint.leader_id == Some(leader_id)
    ));
    // Two learners nobody runs: a configuration needing one of them for a quorum.
    for (id, addr) in [(5, "127.0.0.1:9"), (6, "127.0.0.1:9")] {
        leader.add_learner(id, addr).await.unwrap();
    }
    assert!(matches!(
        leader
            .change_membership(BTreeSet::from([leader_id, 5, 6]))
            .await,
        Err(MembershipError::WouldLoseQuorum {
            caught_up: 1,
            needed: 2,
            ..
        })
    ));

    leader
        .change_membership(BTreeSet::from([1, 2, 3, 4]))
        .await
        .unwrap();
    let voters: BTreeSet<NodeId> = leader
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, BTreeSet::from([1, 2, 3, 4]));
    group.members.insert(4, newcomer);
    let answer = group.member(4).write(create_bucket("late")).await;
    assert_eq!(answer.unwrap(), Ok(MapOutcome::Done));
    let map = group.converged().await;
    assert_eq!(bucket_names(&map).len(), 49);
    group.stop().await;
}

/// Sends one HTTP/1.1 request over a fresh connection; returns the status, the headers
/// (lowercased) and the body.
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(response[..split].to_vec()).unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head.to_lowercase(), response[split + 4..].to_vec())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The credential headers of a request signed with `secret` at `date`.
fn signed(
    secret: &ClusterSecret,
    method: &str,
    path: &str,
    date: u64,
) -> Vec<(&'static str, String)> {
    vec![
        (DATE_HEADER, date.to_string()),
        (EPOCH_HEADER, "0".to_owned()),
        ("authorization", secret.sign(method, path, date, 0)),
    ]
}

fn json_body(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_over_http_are_refused_and_change_nothing() {
    let group = Group::start(3, RaftTuning::default()).await;
    let leader_id = group.leader(Duration::from_secs(10)).await;
    let leader = group.member(leader_id).clone();
    set_up_map(&leader).await;
    let addr = leader.addr().to_owned();
    let version = leader.map().version();
    let ok = &secret();
    let write = |bucket: &str| serde_json::to_vec(&create_bucket(bucket)).unwrap();

    // No credentials: 401, on every route.
    for (method, path) in [
        ("POST", "/meta/write"),
        ("GET", "/meta/map"),
        ("POST", "/raft/vote"),
    ] {
        let (status, _, _) = http(&addr, method, path, &[], &write("unsigned")).await;
        assert_eq!(status, 401, "{method} {path}");
    }
    // Wrong secret, a signature over another path, a date far off: 403.
    let other = ClusterSecret::new([1; 32]);
    for headers in [
        signed(&other, "POST", "/meta/write", now_secs()),
        signed(ok, "POST", "/meta/map", now_secs()),
        signed(ok, "POST", "/meta/write", now_secs() - 3600),
    ] {
        let (status, _, _) = http(&addr, "POST", "/meta/write", &headers, &write("forged")).await;
        assert_eq!(status, 403);
    }
    let mut garbled = signed(ok, "POST", "/meta/write", now_secs());
    garbled[2].1 = "NIMBUS-HMAC-SHA256 zz".to_owned();
    let (status, _, _) = http(&addr, "POST", "/meta/write", &garbled, &write("garbled")).await;
    assert_eq!(status, 403);

    // Signed, but not a command / not a raft message: 400.
    let headers = signed(ok, "POST", "/meta/write", now_secs());
    for body in [
        &b"{\"command\": \"create_bu"[..],
        b"{\"command\": \"launch\"}",
        b"",
    ] {
        let (status, _, answer) = http(&addr, "POST", "/meta/write", &headers, body).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&answer));
        assert_eq!(json_body(&answer)["error"], "bad_request");
    }
    let headers = signed(ok, "POST", "/raft/append", now_secs());
    let (status, _, _) = http(&addr, "POST", "/raft/append", &headers, b"[1, 2]").await;
    assert_eq!(status, 400);
    // A raft message meant for another member is refused, not acted on.
    let mut misdirected = signed(ok, "POST", "/raft/vote", now_secs());
    misdirected.push((TARGET_HEADER, (leader_id + 10).to_string()));
    let (status, _, answer) = http(&addr, "POST", "/raft/vote", &misdirected, b"{}").await;
    assert_eq!(status, 421);
    assert_eq!(json_body(&answer)["error"], "wrong_member");

    // A well-formed command the map refuses: committed, answered with the map's error.
    let headers = signed(ok, "POST", "/meta/write", now_secs());
    let (status, _, answer) =
        http(&addr, "POST", "/meta/write", &headers, &write("Bad_Name")).await;
    assert_eq!(status, 200);
    let answer: Result<MapOutcome, MapError> = serde_json::from_slice(&answer).unwrap();
    assert!(
        matches!(answer, Err(MapError::Invalid { .. })),
        "{answer:?}"
    );
    assert_eq!(leader.map().version(), version);
    assert!(leader.map().bucket("Bad_Name").is_none());

    // A follower sends writers and linearizable readers to the leader.
    let follower_id = group.follower().await;
    let follower_addr = group.member(follower_id).addr().to_owned();
    let headers = signed(ok, "POST", "/meta/write", now_secs());
    let (status, _, answer) = http(
        &follower_addr,
        "POST",
        "/meta/write",
        &headers,
        &write("via-follower"),
    )
    .await;
    assert_eq!(status, 421);
    let hint = json_body(&answer);
    assert_eq!(hint["leader_id"], leader_id);
    assert_eq!(hint["leader_addr"], addr.as_str());
    let path = "/meta/map?linearizable=true";
    let (status, _, _) = http(
        &follower_addr,
        "GET",
        path,
        &signed(ok, "GET", path, now_secs()),
        b"",
    )
    .await;
    assert_eq!(status, 421);

    // The leader's map, read over HTTP, is its local map; nothing above changed it.
    for path in ["/meta/map", "/meta/map?linearizable=true"] {
        let (status, head, body) = http(
            &addr,
            "GET",
            path,
            &signed(ok, "GET", path, now_secs()),
            b"",
        )
        .await;
        assert_eq!(status, 200);
        assert!(
            head.contains(&format!("{VERSION_HEADER}: {version}")),
            "{head}"
        );
        let map = ClusterMap::decode(&body).unwrap();
        assert_eq!(map.encode(), leader.map().encode());
        assert_eq!(map.version(), version);
    }
    let path = "/meta/map?linearizable=perhaps";
    let (status, _, _) = http(
        &addr,
        "GET",
        path,
        &signed(ok, "GET", path, now_secs()),
        b"",
    )
    .await;
    assert_eq!(status, 400);

    // Through the API too: an invalid name is the map's answer, and the map is unchanged.
    let answer = group
        .member(follower_id)
        .write(create_bucket("Bad_Name"))
        .await;
    assert!(matches!(answer.unwrap(), Err(MapError::Invalid { .. })));
    let map = group.converged().await;
    assert_eq!(map.version(), version);
    group.stop().await;
}
