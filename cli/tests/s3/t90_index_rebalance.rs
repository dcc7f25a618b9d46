//! Changing the index ring under load: four nodes join the ring of the index policy (`rep5`)
//! and four of the first six leave it, so that one rebalance moves up to four of a shard's
//! five replicas to devices that hold nothing yet. Index anti-entropy is held off (a pass an
//! hour), so nothing hands the records over: reads and writes need a majority of the
//! shard's previous replicas as well as of its new ones, and a new primary peers from both.
//! Every object stays readable and listed, and a conditional write still sees what was
//! written before the change.
//!
//! Then, with anti-entropy at its dev pace: once a short transition is over, the copies left
//! on the devices that left the ring are dropped, and the new replicas alone serve every
//! read, listing and conditional write.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;

use crate::cluster::{
    Cluster, ExtraNode, add_devices, bytes, device_ids, internal, remove_devices, runtime,
    start_node,
};
use crate::load::{Load, fill, get};

const BUCKET: &str = "shift";
/// Small enough that most objects are inline in their index entry.
const SIZE: usize = 3_000;

/// Every key of the bucket, as a listing gives them.
async fn listed(s3: &Client) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(BUCKET)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("LIST: {e:?}"));
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            return keys;
        }
    }
}

/// Checks that every object written so far is listed and reads back identical.
async fn check(s3: &Client, load: &Load, what: &str) {
    let objects = load.objects().await;
    let keys = listed(s3).await;
    let missing: Vec<_> = objects
        .iter()
        .filter(|(key, _)| !keys.contains(key))
        .map(|(key, _)| key)
        .collect();
    assert!(missing.is_empty(), "{what}: not listed: {missing:?}");
    for (key, seed) in &objects {
        let body = get(s3, BUCKET, key)
            .await
            .unwrap_or_else(|e| panic!("{what}: GET {key}: {e}"));
        assert!(body == bytes(SIZE, *seed), "{what}: {key} changed");
    }
    eprintln!("{what}: {} objects listed and identical", objects.len());
}

/// Rebalances the index ring, with `extra` arguments.
fn rebalance(cluster: &Cluster, extra: &[&str]) {
    let args: Vec<&str> = ["ring", "rebalance", "rep5"]
        .iter()
        .chain(extra)
        .copied()
        .collect();
    let (_, out) = cluster.admin_status(&args);
    eprintln!("rebalance: {}", out.trim());
}

/// Checks that an `If-None-Match: *` PUT of each key is refused: the shards' primaries
/// know every one of them.
async fn conditional_puts_refused(s3: &Client, keys: &[String]) {
    for key in keys {
        let put = s3
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .if_none_match("*")
            .body(ByteStream::from(bytes(SIZE, 9_999)))
            .send()
            .await;
        let status = put
            .as_ref()
            .err()
            .and_then(|e| e.raw_response())
            .map(|r| r.status().as_u16());
        assert_eq!(
            status,
            Some(412),
            "If-None-Match on existing {key}: {put:?}"
        );
    }
}

/// How many shards of [`BUCKET`] node `i`'s devices hold.
fn shards_held(cluster: &Cluster, i: u16) -> usize {
    ["d0", "d1"]
        .iter()
        .map(|device| {
            let listed = internal(cluster, "GET", i, &format!("/v1/index/{device}"), None)
                .unwrap_or_else(|| panic!("node {i} did not list its shards"));
            let listed: serde_json::Value = serde_json::from_slice(&listed).unwrap();
            listed["shards"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["container"] == BUCKET)
                .count()
        })
        .sum()
}

#[test]
fn moving_most_of_the_index_to_new_devices_loses_nothing() {
    let cluster = Cluster::start_with(&["--index-sync-secs", "3600"]);
    let rt = runtime();
    let s3 = cluster.client();
    let objects = rt.block_on(fill(&s3, BUCKET, "base/", 150, SIZE));
    let base: Vec<String> = objects.iter().map(|(k, _)| k.clone()).collect();
    let _nodes: Vec<ExtraNode> = (7..=10).map(|i| start_node(&cluster, i)).collect();
    let load = Load::start(&rt, &s3, BUCKET, SIZE, objects);

    add_devices(&cluster, "rep5", 7..=10);
    remove_devices(&cluster, "rep5", 1..=4);
    rebalance(&cluster, &[]);
    rt.block_on(async {
        for round in 1..=3 {
            check(
                &s3,
                &load,
                &format!("after the first rebalance, round {round}"),
            )
            .await;
        }
        // The shards' new primaries know every key written before the change.
        conditional_puts_refused(&s3, &base[..40]).await;
    });

    // Removed devices keep slots a rebalance could not move yet (at most four of a
    // partition's five per rebalance); the next rebalances drain them, under load.
    let started = Instant::now();
    while (1..=4).any(|i| !device_ids(&cluster, "rep5", i).is_empty()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nodes 1 to 4 never left the index ring"
        );
        rebalance(&cluster, &[]);
        rt.block_on(check(&s3, &load, "after another rebalance"));
    }

    let objects = rt.block_on(load.stop());
    eprintln!(
        "{} requests under load, {} objects",
        load.ops.load(std::sync::atomic::Ordering::Relaxed),
        objects.len()
    );
    rt.block_on(check(&s3, &load, "at the end"));
}

#[test]
fn once_the_transition_is_over_the_copies_left_behind_go() {
    let cluster = Cluster::start();
    let rt = runtime();
    let s3 = cluster.client();
    let objects = rt.block_on(fill(&s3, BUCKET, "base/", 60, SIZE));
    let base: Vec<String> = objects.iter().map(|(k, _)| k.clone()).collect();
    let _nodes: Vec<ExtraNode> = (7..=8).map(|i| start_node(&cluster, i)).collect();
    let held_before = shards_held(&cluster, 1) + shards_held(&cluster, 2);
    assert!(
        held_before > 0,
        "nodes 1 and 2 hold some of the bucket's shards"
    );
    add_devices(&cluster, "rep5", 7..=8);
    remove_devices(&cluster, "rep5", 1..=2);
    let load = Load::start(&rt, &s3, BUCKET, SIZE, objects);
    let started = Instant::now();
    rebalance(&cluster, &["--transition-secs", "15"]);
    assert!(
        (1..=2).all(|i| device_ids(&cluster, "rep5", i).is_empty()),
        "nodes 1 and 2 left the index ring in one rebalance"
    );
    // Their copies stay while the transition lasts, then go once every replica holds
    // their records (anti-entropy every 5 s here).
    loop {
        let held = shards_held(&cluster, 1) + shards_held(&cluster, 2);
        if held == 0 {
            break;
        }
        assert!(
            started.elapsed() > Duration::from_secs(15) || held == held_before,
            "a copy went during the transition"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "nodes 1 and 2 still hold {held} of the bucket's shards"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "copies on nodes 1 and 2 dropped {:?} after the rebalance",
        started.elapsed()
    );
    assert!(cluster.metric("nimbus_index_copies_dropped_total") > 0);
    rt.block_on(async {
        check(&s3, &load, "with the old copies gone").await;
        conditional_puts_refused(&s3, &base).await;
    });
    rt.block_on(load.stop());
    rt.block_on(check(&s3, &load, "at the end"));
}
