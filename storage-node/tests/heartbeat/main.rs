//! A storage node's heartbeats against real metadata members (in process, short liveness
//! timeout): the devices the node runs stay up, a device it does not run is marked down, once
//! the node stops all of its devices are marked down, and a node that knows only a follower
//! (and a dead address) finds the leader by its hints.

#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use nimbus_core::auth::ClusterSecret;
use nimbus_ring::liveness::LivenessConfig;
use nimbus_ring::map::{ClusterMap, DeviceKey, MapCommand, MapOutcome};
use nimbus_ring::raft::group::{MetaConfig, MetaNode, RaftTuning};
use nimbus_ring::{DeviceSpec, Location};
use nimbus_storage_node::config::Config;
use nimbus_storage_node::node;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep};

const TIMEOUT_MS: u64 = 500;
const TICK: Duration = Duration::from_millis(100);

fn secret() -> ClusterSecret {
    ClusterSecret::new([7; 32])
}

/// Starts members `1..=count` as one group; returns them once member 1 leads.
async fn start_group(dir: &TempDir, count: u64) -> Vec<MetaNode> {
    let mut members = Vec::new();
    for id in 1..=count {
        let member = MetaNode::start(MetaConfig {
            id,
            dir: dir.path().join(format!("meta-{id}")),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            secret: secret(),
            tuning: RaftTuning {
                liveness: LivenessConfig {
                    timeout_ms: TIMEOUT_MS,
                    flap_window_ms: 60_000,
                    max_flaps: 16,
                    hold_down_ms: 0,
                },
                liveness_tick: TICK,
                ..RaftTuning::default()
            },
        })
        .await
        .unwrap();
        members.push(member);
    }
    let addrs: BTreeMap<_, _> = members
        .iter()
        .map(|m| (m.id(), m.addr().to_owned()))
        .collect();
    members[0].initialize(addrs).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while members.iter().any(|m| m.leader().is_none()) {
        assert!(Instant::now() < deadline, "no leader");
        sleep(Duration::from_millis(20)).await;
    }
    members
}

/// Returns the member that leads.
fn leader(members: &[MetaNode]) -> &MetaNode {
    let id = members[0].leader().unwrap();
    members.iter().find(|m| m.id() == id).unwrap()
}

fn node_config(dir: &TempDir, members: &[&str]) -> Config {
    let root = dir.path().display();
    std::fs::write(dir.path().join("secret"), secret().to_hex()).unwrap();
    let text = format!(
        r#"
        listen = "127.0.0.1:0"
        cluster_secret_file = "{root}/secret"
        io_engine = "portable"
        [engine]
        buffers = 4
        buffer_bytes = 65536
        [[device]]
        name = "d0"
        path = "{root}/d0"
        reserve_bytes = 0
        [[device]]
        name = "d1"
        path = "{root}/d1"
        reserve_bytes = 0
        [heartbeat]
        members = {members:?}
        interval_ms = 100
        "#
    );
    Config::from_toml(&text).unwrap()
}

/// Adds devices `names` of `node` to a new `rep1` policy.
async fn add_devices(member: &MetaNode, node: SocketAddr, names: &[&str]) {
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
        let location = Location {
            region: 0,
            zone: 0,
            node,
            name: (*name).to_owned(),
        };
        let add = MapCommand::AddDevice {
            policy: "rep1".into(),
            device: DeviceSpec {
                location,
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

/// Waits up to `within` until `check` holds of the member's map.
async fn until(
    member: &MetaNode,
    within: Duration,
    what: &str,
    check: impl Fn(&ClusterMap) -> bool,
) {
    let deadline = Instant::now() + within;
    while !check(&member.map()) {
        assert!(Instant::now() < deadline, "not {what} within {within:?}");
        sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_keeps_its_devices_up_until_it_stops() {
    let dir = TempDir::new().unwrap();
    let members = start_group(&dir, 1).await;
    let member = &members[0];
    let config = node_config(&dir, &[member.addr()]);
    let (stop, stopped) = oneshot::channel::<()>();
    let running = node::start(&config, async move {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    let addr = running.local_addr;
    let key = |device: &str| DeviceKey {
        node: addr,
        device: device.to_owned(),
    };
    // "ghost" is in the ring but not on the node: nobody heartbeats it.
    add_devices(member, addr, &["d0", "d1", "ghost"]).await;
    let timeout = Duration::from_millis(TIMEOUT_MS);
    until(
        member,
        timeout + TICK + Duration::from_secs(2),
        "ghost down",
        |m| !m.is_up(&key("ghost")),
    )
    .await;
    sleep(timeout + 2 * TICK).await;
    let map = member.map();
    assert!(map.is_up(&key("d0")) && map.is_up(&key("d1")));

    let _ = stop.send(());
    running.wait().await.unwrap();
    let stopped_at = Instant::now();
    until(
        member,
        timeout + TICK + Duration::from_secs(2),
        "all down",
        |m| !m.is_up(&key("d0")) && !m.is_up(&key("d1")),
    )
    .await;
    eprintln!(
        "devices marked down {:?} after the node stopped",
        stopped_at.elapsed()
    );
    member.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_knows_only_a_follower_finds_the_leader() {
    let dir = TempDir::new().unwrap();
    let members = start_group(&dir, 3).await;
    let leader = leader(&members);
    let follower = members.iter().find(|m| m.id() != leader.id()).unwrap();
    // Port 9 (discard) has no listener on loopback: a member that is down.
    let config = node_config(&dir, &["127.0.0.1:9", follower.addr()]);
    let (stop, stopped) = oneshot::channel::<()>();
    let running = node::start(&config, async move {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    let addr = running.local_addr;
    let key = |device: &str| DeviceKey {
        node: addr,
        device: device.to_owned(),
    };
    add_devices(leader, addr, &["d0", "d1", "ghost"]).await;
    let timeout = Duration::from_millis(TIMEOUT_MS);
    until(
        leader,
        timeout + TICK + Duration::from_secs(2),
        "ghost down",
        |m| !m.is_up(&key("ghost")),
    )
    .await;
    sleep(timeout + 2 * TICK).await;
    let map = leader.map();
    assert!(map.is_up(&key("d0")) && map.is_up(&key("d1")));
    let _ = stop.send(());
    running.wait().await.unwrap();
    for member in &members {
        member.shutdown().await;
    }
}
