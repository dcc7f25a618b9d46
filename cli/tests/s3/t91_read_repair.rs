//! Read repair: with index anti-entropy held off, a replica that was down while an object was
//! written gets its record back from the reads that ask it — and from nothing else.

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use nimbus_core::auth::ClusterSecret;
use nimbus_core::index::shard_of;
use nimbus_ring::map::ClusterMap;
use nimbus_ring::raft::network::PeerClient;

use crate::cluster::{Cluster, bytes, internal, runtime};

/// The index shard of `key` in `bucket`: the owner account, the shard number and its
/// replicas as (node 1 to 6, device), in slot order.
async fn replicas(cluster: &Cluster, bucket: &str, key: &str) -> (String, u16, Vec<(u16, String)>) {
    let secret = std::fs::read_to_string(cluster.path().join("cluster-secret")).unwrap();
    let client = PeerClient::new(ClusterSecret::from_hex(&secret).unwrap());
    let member = format!("127.0.0.1:{}", cluster.base_port + 101);
    let answer = client
        .get(&member, "/meta/map", Duration::from_secs(5), 64 << 20)
        .await
        .unwrap();
    let map = ClusterMap::decode(&answer.body).unwrap();
    let b = map.bucket(bucket).unwrap();
    let ring = map
        .policy(map.index_policy().unwrap())
        .unwrap()
        .ring
        .as_ref()
        .unwrap();
    let shard = shard_of(key, b.shards);
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

#[test]
fn a_replica_that_missed_a_write_gets_it_back_from_reads() {
    let cluster = Cluster::start_with(&["--index-sync-secs", "3600"]);
    let rt = runtime();
    let s3 = cluster.client();
    let key = "repaired";
    let (owner, shard, slots) = rt.block_on(async {
        s3.create_bucket().bucket("repair").send().await.unwrap();
        replicas(&cluster, "repair", key).await
    });
    // The second slot: among the three replicas a read asks first once its node is up
    // again, and not the primary.
    let (victim, device) = slots[1].clone();
    let path = format!("/v1/index/{device}/{owner}/repair/{shard}?key={key}");
    cluster.detach_supervisor();
    cluster.kill_node(usize::from(victim));
    let body = bytes(3_000, 7);
    rt.block_on(async {
        s3.put_object()
            .bucket("repair")
            .key(key)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
    });
    cluster.restart_node(usize::from(victim));
    assert!(
        internal(&cluster, "GET", victim, &path, None).is_none(),
        "node {victim} missed the write"
    );
    // Reads repair it; nothing else would (anti-entropy passes once an hour here).
    let started = Instant::now();
    loop {
        let got = rt.block_on(async {
            s3.get_object()
                .bucket("repair")
                .key(key)
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes()
        });
        assert!(got == body, "the object reads back identical");
        if internal(&cluster, "GET", victim, &path, None).is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "node {victim} never got the record back"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "repaired by reads {:?} after the restart",
        started.elapsed()
    );
}
