//! Index anti-entropy: a node that was down while objects were written comes back missing
//! their index records; without any read touching them, the shards' replicas converge —
//! every replica of every shard ends with the same digest.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;

use crate::cluster::{Cluster, internal, runtime};

/// For every shard of `container`, the digest each device holding it reports.
fn digests(cluster: &Cluster, container: &str) -> BTreeMap<u64, Vec<String>> {
    let get = |node: u16, path: &str| -> Option<Value> {
        serde_json::from_slice(&internal(cluster, "GET", node, path, None)?).ok()
    };
    let mut out: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for node in 1..=6u16 {
        for device in ["d0", "d1"] {
            let Some(listed) = get(node, &format!("/v1/index/{device}")) else {
                continue;
            };
            for shard in listed["shards"].as_array().unwrap() {
                if shard["container"] != container {
                    continue;
                }
                let (account, n) = (
                    shard["account"].as_str().unwrap(),
                    shard["shard"].as_u64().unwrap(),
                );
                let path = format!("/v1/index/{device}/{account}/{container}/{n}/digest");
                if let Some(d) = get(node, &path) {
                    out.entry(n)
                        .or_default()
                        .push(d["digest"].as_str().unwrap().to_owned());
                }
            }
        }
    }
    out
}

fn converged(digests: &BTreeMap<u64, Vec<String>>) -> bool {
    !digests.is_empty()
        && digests
            .values()
            .all(|d| d.len() == 5 && d.iter().all(|x| x == &d[0]))
}

#[test]
fn index_replicas_that_missed_writes_converge_without_reads() {
    let cluster = Cluster::start();
    let rt = runtime();
    let s3 = cluster.client();
    rt.block_on(async {
        s3.create_bucket().bucket("sync").send().await.unwrap();
    });
    cluster.detach_supervisor();
    cluster.kill_node(6);
    rt.block_on(async {
        for i in 0..40 {
            s3.put_object()
                .bucket("sync")
                .key(format!("k{i}"))
                .body(ByteStream::from(format!("small {i}").into_bytes()))
                .send()
                .await
                .unwrap();
        }
    });
    cluster.restart_node(6);
    let started = Instant::now();
    loop {
        let now = digests(&cluster, "sync");
        if converged(&now) {
            eprintln!("index replicas converged in {:?}", started.elapsed());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "replicas still differ after {:?}: {now:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // Nothing read the objects: the records node 6 missed were copied by anti-entropy.
    let repaired = cluster.metric("nimbus_index_records_repaired_total");
    assert!(repaired > 0, "no index record was repaired");
}
