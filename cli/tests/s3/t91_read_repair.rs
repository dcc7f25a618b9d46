//! Read repair: with index anti-entropy held off, a replica that was down while an object was
//! written gets its record back from the reads that ask it — and from nothing else. Reads
//! ask majorities here (`--no-leased-reads`): a primary answering alone under its lease asks
//! no other replica, so repairs none.

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;

use crate::cluster::{Cluster, bytes, index_shard, internal, runtime};
use crate::load::get;

#[test]
fn a_replica_that_missed_a_write_gets_it_back_from_reads() {
    let cluster = Cluster::start_with(&["--index-sync-secs", "3600", "--no-leased-reads"]);
    let rt = runtime();
    let s3 = cluster.client();
    let key = "repaired";
    let (owner, shard, slots) = rt.block_on(async {
        s3.create_bucket().bucket("repair").send().await.unwrap();
        index_shard(&cluster, "repair", key).await
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
        let got = rt.block_on(get(&s3, "repair", key)).unwrap();
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
