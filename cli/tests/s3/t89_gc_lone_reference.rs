//! The collector keeps fragments that a single index replica still references. A write that
//! was never acknowledged can leave its record on one replica only; should that replica be
//! down while the collector looks, a majority of the others says "unreferenced". Once the
//! replica is back, anti-entropy copies its (newest) record to all: had the fragments gone,
//! the object would be listed and never readable. Found by thinking through what
//! `nimbus-chaos` checks: an unknown write must be there whole or not at all.
//!
//! The object is in a `rep3` bucket and the replica that goes down holds none of its
//! copies: a node down that holds a slot of the partition stops the collector's pass over
//! it anyway, which would hide the question.

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use nimbus_core::index::decode_records;
use serde_json::Value;

use crate::cluster::{Cluster, bytes, create_bucket_in, internal, runtime};

/// Whether node `i` holds any `rep3` fragment file.
fn holds_rep3(cluster: &Cluster, i: u16) -> bool {
    ["d0", "d1"].iter().any(|d| {
        let dir = cluster.path().join(format!("node{i}/{d}/objects/rep3"));
        std::fs::read_dir(dir).is_ok_and(|mut e| e.next().is_some())
    })
}

/// Where the index record of `key` in `container` lives: (node, index path of its shard,
/// the record's bytes as that replica holds them).
fn replicas_of(cluster: &Cluster, container: &str, key: &str) -> Vec<(u16, String, Vec<u8>)> {
    let mut out = Vec::new();
    for node in 1..=6u16 {
        for device in ["d0", "d1"] {
            let Some(listed) = internal(cluster, "GET", node, &format!("/v1/index/{device}"), None)
            else {
                continue;
            };
            let listed: Value = serde_json::from_slice(&listed).unwrap();
            for shard in listed["shards"].as_array().unwrap() {
                if shard["container"] != container {
                    continue;
                }
                let path = format!(
                    "/v1/index/{device}/{}/{container}/{}",
                    shard["account"].as_str().unwrap(),
                    shard["shard"]
                );
                if let Some(record) =
                    internal(cluster, "GET", node, &format!("{path}?key={key}"), None)
                {
                    out.push((node, path, record));
                }
            }
        }
    }
    out
}

#[test]
fn fragments_that_only_a_downed_replica_references_are_kept() {
    let cluster = Cluster::start_with(&["--gc-grace-secs", "3"]);
    let s3 = cluster.client();
    let rt = runtime();
    let first = bytes(1 << 20, 1);
    let second = bytes(1 << 20, 2);
    rt.block_on(async {
        create_bucket_in(&s3, "lone", "rep3").await;
        s3.put_object()
            .bucket("lone")
            .key("a")
            .body(ByteStream::from(first.clone()))
            .send()
            .await
            .unwrap();
    });
    let replicas = replicas_of(&cluster, "lone", "a");
    assert_eq!(replicas.len(), 5, "the index policy is rep5");
    let (node, shard, record) = replicas
        .into_iter()
        .find(|(i, _, _)| !holds_rep3(&cluster, *i))
        .expect("5 index replicas on 6 nodes, 3 copies: 2 replicas hold none");
    let v1 = decode_records(&record).unwrap().remove(0);
    cluster.detach_supervisor();

    // The first version is overwritten; then one replica alone is handed a newer record
    // naming it again (as a write that reached only that replica would leave it), and goes
    // down before anything copies it on. All of this within the collector's grace.
    rt.block_on(async {
        s3.put_object()
            .bucket("lone")
            .key("a")
            .body(ByteStream::from(second))
            .send()
            .await
            .unwrap();
    });
    let seq = v1.seq + 1_000_000;
    let lone = format!("{shard}/replicated?key=a&seq={seq}");
    internal(&cluster, "PUT", node, &lone, Some(&v1.entry.encode())).unwrap();
    cluster.kill_node(usize::from(node));

    // Past the grace, with passes to spare: the collectors look while the replica is down.
    std::thread::sleep(Duration::from_secs(15));
    eprintln!(
        "fragments reclaimed while node {node} was down: {}",
        cluster.metric("nimbus_worker_reclaimed_fragments_total")
    );
    cluster.restart_node(usize::from(node));

    // Anti-entropy spreads the newest record, which names the first version: it must read
    // back whole.
    let started = Instant::now();
    let s3_once = cluster.client_no_retry();
    loop {
        let got = rt.block_on(async {
            let got = s3_once
                .get_object()
                .bucket("lone")
                .key("a")
                .send()
                .await
                .ok()?;
            Some(got.body.collect().await.ok()?.into_bytes())
        });
        if got.as_deref() == Some(first.as_slice()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first version does not read back (its fragments were collected?)"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}
