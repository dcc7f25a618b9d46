//! The cluster map's Raft group, measured (release mode):
//!
//!     cargo bench -p nimbus-ring --bench raft
//!
//! Three voters in this process, talking HTTP over loopback, each with its own Raft log
//! (redb, fsynced) in a temporary directory on the current disk. Reported:
//! - commit latency of `CreateBucket` writes sent one at a time to the leader (p50, p99, max);
//! - commits per second with 32 writes in flight;
//! - time from shutting the leader down to the next committed write through a survivor.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark that cannot set up should stop

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nimbus_core::auth::ClusterSecret;
use nimbus_ring::map::MapCommand;
use nimbus_ring::raft::group::{MetaConfig, MetaNode, RaftTuning};

const SEQUENTIAL: usize = 500;
const CONCURRENT: usize = 2000;
const IN_FLIGHT: usize = 32;

fn bucket(i: usize) -> MapCommand {
    MapCommand::CreateBucket {
        name: format!("bucket-{i:06}"),
        owner: "AUTH_bench".into(),
        policy: None,
        shards: None,
        now_ms: 1,
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn leader_of(members: &BTreeMap<u64, Arc<MetaNode>>) -> u64 {
    loop {
        let seen: Vec<_> = members.values().filter_map(|m| m.leader()).collect();
        if let Some(&l) = seen.first()
            && seen.iter().all(|&x| x == l)
            && members.contains_key(&l)
        {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn run() {
    let dir = tempfile::tempdir_in(".").unwrap();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let config = MetaConfig {
            id,
            dir: dir.path().join(format!("m{id}")),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            secret: ClusterSecret::new([1; 32]),
            tuning: RaftTuning::default(),
        };
        members.insert(id, Arc::new(MetaNode::start(config).await.unwrap()));
    }
    let addrs = members
        .iter()
        .map(|(&id, m)| (id, m.addr().to_owned()))
        .collect();
    members[&1].initialize(addrs).await.unwrap();
    let leader = members[&leader_of(&members).await].clone();
    leader
        .write(MapCommand::CreatePolicy {
            spec: "rep3".into(),
            part_power: 4,
            min_part_hours: 0,
            seed: 1,
            hash_key: [2; 32],
            make_default: true,
        })
        .await
        .unwrap()
        .unwrap();
    leader
        .write(MapCommand::CreateAccount {
            name: "AUTH_bench".into(),
            now_ms: 1,
        })
        .await
        .unwrap()
        .unwrap();

    let mut latencies = Vec::with_capacity(SEQUENTIAL);
    for i in 0..SEQUENTIAL {
        let start = Instant::now();
        leader.write(bucket(i)).await.unwrap().unwrap();
        latencies.push(start.elapsed());
    }
    latencies.sort();
    println!(
        "commit latency, one at a time ({SEQUENTIAL} creates): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(&latencies, 0.50).as_secs_f64() * 1e3,
        pct(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3
    );

    let start = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(SEQUENTIAL));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (leader, next) = (leader.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= SEQUENTIAL + CONCURRENT {
                    return;
                }
                leader.write(bucket(i)).await.unwrap().unwrap();
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    println!(
        "commits per second with {IN_FLIGHT} in flight ({CONCURRENT} creates): {:.0}",
        CONCURRENT as f64 / start.elapsed().as_secs_f64()
    );

    let old = leader.id();
    let survivor = members.values().find(|m| m.id() != old).unwrap().clone();
    let start = Instant::now();
    leader.shutdown().await;
    let mut i = SEQUENTIAL + CONCURRENT;
    loop {
        i += 1;
        match survivor.write(bucket(i)).await {
            Ok(Ok(_)) => break,
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    println!(
        "from leader shutdown to the next commit: {:.0} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    for m in members.values() {
        m.shutdown().await;
    }
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}
