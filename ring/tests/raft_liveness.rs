//! Watches and liveness on a real metadata group over HTTP on 127.0.0.1 (several members in
//! one test process, short timeouts): a watch of the map is answered as soon as the map
//! changes and with 304 when it does not; devices whose heartbeats stop are marked down
//! within the liveness timeout plus a tick, and up again when heartbeats return; only the
//! leader takes heartbeats.

#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nimbus_core::auth::{ClusterSecret, DATE_HEADER, EPOCH_HEADER};
use nimbus_ring::liveness::LivenessConfig;
use nimbus_ring::map::{ClusterMap, DeviceKey, MapCommand, MapOutcome};
use nimbus_ring::raft::NodeId;
use nimbus_ring::raft::group::{MetaConfig, MetaNode, RaftTuning};
use nimbus_ring::raft::network::PeerClient;
use nimbus_ring::raft::server::{HeartbeatRequest, HeartbeatResponse, VERSION_HEADER};
use nimbus_ring::{DeviceSpec, Location};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, sleep};

/// The liveness timeout of these tests.
const TIMEOUT_MS: u64 = 600;
/// How often the leader proposes changes.
const TICK: Duration = Duration::from_millis(100);
/// How often the test's node heartbeats.
const BEAT: Duration = Duration::from_millis(100);
/// Room for a Raft commit and a busy test machine.
const SLACK: Duration = Duration::from_millis(900);

fn secret() -> ClusterSecret {
    ClusterSecret::new([0x5a; 32])
}

fn tuning() -> RaftTuning {
    RaftTuning {
        liveness: LivenessConfig {
            timeout_ms: TIMEOUT_MS,
            flap_window_ms: 60_000,
            max_flaps: 16,
            hold_down_ms: 0,
        },
        liveness_tick: TICK,
        ..RaftTuning::default()
    }
}

/// Members started in one test, stopped on [`Group::stop`].
struct Group {
    _dir: TempDir,
    members: BTreeMap<NodeId, Arc<MetaNode>>,
}

impl Group {
    /// Starts members `1..=voters`, initialized as the group's voters.
    async fn start(voters: u64) -> Group {
        let dir = TempDir::new().unwrap();
        let mut members = BTreeMap::new();
        for id in 1..=voters {
            let member = MetaNode::start(MetaConfig {
                id,
                dir: dir.path().join(format!("member-{id}")),
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                advertise: None,
                secret: secret(),
                tuning: tuning(),
            })
            .await
            .unwrap();
            members.insert(id, Arc::new(member));
        }
        let addrs = members
            .iter()
            .map(|(&id, m)| (id, m.addr().to_owned()))
            .collect();
        members[&1].initialize(addrs).await.unwrap();
        let group = Group { _dir: dir, members };
        group.leader().await;
        group
    }

    fn member(&self, id: NodeId) -> &Arc<MetaNode> {
        &self.members[&id]
    }

    fn addrs(&self) -> Vec<String> {
        self.members.values().map(|m| m.addr().to_owned()).collect()
    }

    /// Waits until every member agrees on a leader among them; returns it.
    async fn leader(&self) -> NodeId {
        let deadline = Instant::now() + Duration::from_secs(10);
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
        let leader = self.leader().await;
        *self.members.keys().find(|&&id| id != leader).unwrap()
    }

    /// Waits until `check` holds of every member's map; returns how long that took.
    async fn until_all(&self, within: Duration, what: &str, check: impl Fn(&ClusterMap) -> bool) {
        let deadline = Instant::now() + within;
        for (id, member) in &self.members {
            while !check(&member.map()) {
                assert!(Instant::now() < deadline, "member {id}: not {what}");
                sleep(Duration::from_millis(10)).await;
            }
        }
    }

    async fn stop(self) {
        for member in self.members.values() {
            member.shutdown().await;
        }
    }
}

const NODE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7001);

fn key(device: &str) -> DeviceKey {
    DeviceKey {
        node: NODE,
        device: device.to_owned(),
    }
}

/// Writes a `rep1` policy and adds devices `names` of [`NODE`] to it.
async fn add_devices(member: &MetaNode, names: &[&str]) {
    let policy = MapCommand::CreatePolicy {
        spec: "rep1".into(),
        part_power: 2,
        min_part_hours: 0,
        seed: 1,
        hash_key: [3; 32],
        make_default: true,
    };
    assert_eq!(member.write(policy).await.unwrap(), Ok(MapOutcome::Done));
    for name in names {
        let add = MapCommand::AddDevice {
            policy: "rep1".into(),
            device: DeviceSpec {
                location: Location {
                    region: 0,
                    zone: 0,
                    node: NODE,
                    name: (*name).to_owned(),
                },
                weight: 1.0,
            },
            id: None,
        };
        let added = member.write(add).await.unwrap();
        assert!(
            matches!(added, Ok(MapOutcome::DeviceAdded { .. })),
            "{added:?}"
        );
    }
}

/// A storage node's heartbeats, as the test sets them: every [`BEAT`], the devices last
/// sent on the channel, to whichever member leads (following hints, trying each member).
fn heartbeat(members: Vec<String>, devices: watch::Receiver<Vec<String>>) -> HeartbeatTask {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let client = PeerClient::new(secret());
        let mut target = 0;
        let work = async {
            loop {
                let request = HeartbeatRequest {
                    node: NODE,
                    devices: devices.borrow().clone(),
                };
                for _ in 0..2 * members.len() {
                    let addr = &members[target % members.len()];
                    let answer = client
                        .post_json(addr, "/meta/heartbeat", &request, None, BEAT, 1 << 16)
                        .await;
                    match answer {
                        Ok(a) if a.status == 200 => break,
                        Ok(a) if a.status == 421 => {
                            let leader = a.leader_hint().leader_addr;
                            target = members
                                .iter()
                                .position(|m| Some(m) == leader.as_ref())
                                .unwrap_or(target + 1);
                        }
                        _ => target += 1,
                    }
                }
                sleep(BEAT).await;
            }
        };
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => {}
            () = work => {}
        }
    });
    HeartbeatTask { stop, task }
}

struct HeartbeatTask {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl HeartbeatTask {
    async fn stop(self) {
        self.stop.send_replace(true);
        self.task.await.unwrap();
    }
}

fn names(devices: &[&str]) -> Vec<String> {
    devices.iter().map(|&d| d.to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_device_is_marked_down_in_time_and_up_again_when_heartbeats_resume() {
    let group = Group::start(3).await;
    let leader = group.member(group.leader().await).clone();
    // Heartbeats first, so the devices are heard of from the moment they are added.
    let (devices, heard) = watch::channel(names(&["d0", "d1"]));
    let beats = heartbeat(group.addrs(), heard);
    add_devices(&leader, &["d0", "d1"]).await;
    let added = leader.map().version();
    let epoch = leader.map().epoch();

    // Heard of: nothing changes over more than a timeout.
    sleep(Duration::from_millis(TIMEOUT_MS) + 3 * TICK).await;
    let map = leader.map();
    assert!(map.is_up(&key("d0")) && map.is_up(&key("d1")));
    assert_eq!(
        (map.version(), map.epoch()),
        (added, epoch),
        "no change proposed"
    );

    // d1 falls silent: down after the timeout, within timeout + tick (+ a commit).
    devices.send_replace(names(&["d0"]));
    let silent_at = Instant::now();
    while leader.map().is_up(&key("d1")) {
        sleep(Duration::from_millis(10)).await;
    }
    let took = silent_at.elapsed();
    eprintln!("d1 marked down {took:?} after its heartbeats stopped");
    let timeout = Duration::from_millis(TIMEOUT_MS);
    assert!(took + 2 * BEAT >= timeout, "marked down after {took:?}");
    assert!(took <= timeout + TICK + SLACK, "marked down after {took:?}");
    let down = leader.map();
    assert!(down.epoch() > epoch, "marking a device down is a new epoch");
    assert!(down.is_up(&key("d0")));
    group
        .until_all(Duration::from_secs(5), "d1 down", |m| !m.is_up(&key("d1")))
        .await;

    // Heartbeats name d1 again: up at the next tick.
    devices.send_replace(names(&["d0", "d1"]));
    let back_at = Instant::now();
    while !leader.map().is_up(&key("d1")) {
        sleep(Duration::from_millis(10)).await;
    }
    let took = back_at.elapsed();
    eprintln!("d1 marked up {took:?} after its heartbeats resumed");
    assert!(took <= BEAT + TICK + SLACK, "marked up after {took:?}");
    assert!(leader.map().epoch() > down.epoch());
    group
        .until_all(Duration::from_secs(5), "d1 up", |m| m.is_up(&key("d1")))
        .await;
    beats.stop().await;
    group.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_marks_nothing_down_while_heartbeats_follow_it() {
    let mut group = Group::start(3).await;
    let old = group.leader().await;
    let (_devices, heard) = watch::channel(names(&["d0"]));
    let beats = heartbeat(group.addrs(), heard);
    add_devices(group.member(old), &["d0"]).await;
    let epoch = group.member(old).map().epoch();

    let killed = group.members.remove(&old).unwrap();
    killed.shutdown().await;
    let new = group.leader().await;
    assert_ne!(new, old);
    // Longer than the timeout under the new leader: heartbeats found it, d0 stayed up.
    sleep(Duration::from_millis(2 * TIMEOUT_MS)).await;
    for (id, member) in &group.members {
        let map = member.map();
        assert!(map.is_up(&key("d0")), "member {id} marked d0 down");
        assert_eq!(map.epoch(), epoch);
    }
    beats.stop().await;
    group.stop().await;
}

/// Sends one HTTP/1.1 request over a fresh connection; returns the status, the head
/// (lowercased) and the body.
async fn http(addr: &str, method: &str, path: &str, signed: bool, body: &[u8]) -> Raw {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if signed {
        let date = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let authorization = secret().sign(method, path, date, 0);
        head.push_str(&format!(
            "{DATE_HEADER}: {date}\r\n{EPOCH_HEADER}: 0\r\nauthorization: {authorization}\r\n"
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(response[..split].to_vec()).unwrap();
    Raw {
        status: head[9..12].parse().unwrap(),
        head: head.to_lowercase(),
        body: response[split + 4..].to_vec(),
    }
}

struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn version(&self) -> u64 {
        let line = self
            .head
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{VERSION_HEADER}: ")))
            .unwrap();
        line.trim().parse().unwrap()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_takes_signed_heartbeats() {
    let group = Group::start(3).await;
    let leader_id = group.leader().await;
    let leader = group.member(leader_id).addr().to_owned();
    let follower = group.member(group.follower().await).addr().to_owned();
    let body = br#"{"node": "127.0.0.1:7001", "devices": ["d0", "d1"]}"#;

    let answer = http(&leader, "POST", "/meta/heartbeat", true, body).await;
    assert_eq!(answer.status, 200);
    let taken: HeartbeatResponse = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(taken.map_version, group.member(leader_id).map().version());
    assert!(
        taken.confirmed,
        "the leader confirmed its leadership with a quorum"
    );
    // The epoch's age grows while the epoch stays (what a new primary's wait starts from).
    sleep(Duration::from_millis(300)).await;
    let answer = http(&leader, "POST", "/meta/heartbeat", true, body).await;
    let later: HeartbeatResponse = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(later.epoch, taken.epoch);
    assert!(
        later.epoch_age_ms >= taken.epoch_age_ms + 300,
        "{later:?} after {taken:?}"
    );

    let answer = http(&follower, "POST", "/meta/heartbeat", true, body).await;
    assert_eq!(answer.status, 421);
    let hint = answer.json();
    assert_eq!(hint["error"], "not_leader");
    assert_eq!(hint["leader_id"], leader_id);
    assert_eq!(hint["leader_addr"], leader.as_str());

    for addr in [&leader, &follower] {
        let answer = http(addr, "POST", "/meta/heartbeat", false, body).await;
        assert_eq!(answer.status, 401);
    }
    for bad in [
        &br#"{"node": "127.0.0.1", "devices": []}"#[..],
        br#"{"node": "127.0.0.1:7001", "devices": [""]}"#,
        br#"{"node": "127.0.0.1:7001", "devices": [], "now_ms": 1}"#,
    ] {
        let answer = http(&leader, "POST", "/meta/heartbeat", true, bad).await;
        assert_eq!(answer.status, 400, "{}", String::from_utf8_lossy(bad));
    }
    // A leader without its quorum grants no lease: it answers unconfirmed, or not at all.
    for (&id, member) in &group.members {
        if id != leader_id {
            member.shutdown().await;
        }
    }
    let answer = http(&leader, "POST", "/meta/heartbeat", true, body).await;
    if answer.status == 200 {
        let alone: HeartbeatResponse = serde_json::from_slice(&answer.body).unwrap();
        assert!(!alone.confirmed, "{alone:?}");
    } else {
        assert_eq!(answer.status, 421);
    }
    group.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_is_answered_when_the_map_changes_and_with_304_when_it_does_not() {
    let group = Group::start(3).await;
    let leader = group.member(group.leader().await).clone();
    let follower_id = group.follower().await;
    let follower = group.member(follower_id).clone();
    let addr = follower.addr().to_owned();
    add_devices(&leader, &[]).await;
    let v = leader.map().version();
    group
        .until_all(Duration::from_secs(5), "caught up", |m| m.version() == v)
        .await;

    // Already newer than `since`: at once, whatever the wait.
    let started = Instant::now();
    let path = format!("/meta/map?since={}&wait_ms=10000", v - 1);
    let answer = http(&addr, "GET", &path, true, b"").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.version(), v);
    assert_eq!(ClusterMap::decode(&answer.body).unwrap().version(), v);
    assert!(started.elapsed() < Duration::from_secs(2));

    // Blocked on the current version: answered as soon as a write is applied.
    let path = format!("/meta/map?since={v}&wait_ms=10000");
    let watch = tokio::spawn({
        let addr = addr.clone();
        async move { http(&addr, "GET", &path, true, b"").await }
    });
    sleep(Duration::from_millis(300)).await;
    assert!(!watch.is_finished(), "the watch did not wait");
    let written_at = Instant::now();
    let account = MapCommand::CreateAccount {
        name: "AUTH_watch".into(),
        now_ms: 1,
    };
    assert_eq!(leader.write(account).await.unwrap(), Ok(MapOutcome::Done));
    let answer = watch.await.unwrap();
    let took = written_at.elapsed();
    eprintln!("watch answered {took:?} after the write");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.version(), v + 1);
    let map = ClusterMap::decode(&answer.body).unwrap();
    assert!(map.account("AUTH_watch").is_some());
    assert!(
        took < Duration::from_secs(2),
        "answered {took:?} after the write"
    );

    // Nothing changes: 304 once the wait is over, with the version and no body.
    let started = Instant::now();
    let path = format!("/meta/map?since={}&wait_ms=400", v + 1);
    let answer = http(&addr, "GET", &path, true, b"").await;
    let took = started.elapsed();
    assert_eq!(answer.status, 304);
    assert_eq!(answer.version(), v + 1);
    assert!(answer.body.is_empty());
    assert!(took >= Duration::from_millis(400), "304 after {took:?}");
    assert!(took < Duration::from_secs(3), "304 after {took:?}");
    let path = format!("/meta/map?since={}", v + 1);
    assert_eq!(http(&addr, "GET", &path, true, b"").await.status, 304);

    // On the leader, a linearizable watch; a wait without `since` is refused.
    let path = format!("/meta/map?since={v}&wait_ms=1000&linearizable=true");
    let answer = http(leader.addr(), "GET", &path, true, b"").await;
    assert_eq!((answer.status, answer.version()), (200, v + 1));
    let answer = http(&addr, "GET", "/meta/map?wait_ms=10", true, b"").await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        http(&addr, "GET", "/meta/map", false, b"").await.status,
        401
    );

    // A member that stops answers its waiting watches at once.
    let path = format!("/meta/map?since={}&wait_ms=20000", v + 1);
    let watch = tokio::spawn({
        let addr = addr.clone();
        async move { http(&addr, "GET", &path, true, b"").await }
    });
    sleep(Duration::from_millis(200)).await;
    let stopping = Instant::now();
    follower.shutdown().await;
    let answer = watch.await.unwrap();
    assert_eq!(answer.status, 503);
    assert!(stopping.elapsed() < Duration::from_secs(2));
    group.stop().await;
}
