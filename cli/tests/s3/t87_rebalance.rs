//! Growing and shrinking a running cluster: two storage nodes are added to the `ec4+2` ring
//! and the ring rebalanced while clients PUT and GET; then one of them is removed (drained by
//! rebalances, then stopped). Throughout, no client request fails; afterwards every object
//! reads back identical and `nimbus admin placement` reports nothing misplaced. And while a
//! move is under way, reads find fragments at the slots' previous owners.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::cluster::{
    Cluster, add_devices, bytes, device_ids, remove_devices, runtime, start_node,
};
use crate::load::{Load, fill, get};

/// Waits until the placement report shows nothing misplaced — and, when no client is
/// writing (`quiet`), no partition below full redundancy (under load, a PUT under way
/// leaves its partition's slots briefly different) — rebalancing again if `rebalance` (a
/// rebalance moves at most `m` slots of a partition).
fn settle(cluster: &Cluster, rebalance: bool, quiet: bool, what: &str) {
    let started = Instant::now();
    loop {
        if rebalance {
            let _ = cluster.admin_status(&["ring", "rebalance", "ec4+2"]);
        }
        let now = cluster.placement();
        if now.0 == 0 && (now.1 == 0 || !quiet) {
            eprintln!("{what}: placement settled in {:?}", started.elapsed());
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "{what}: still {now:?} misplaced/degraded after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Fragment files under `dir`.
fn fragment_count(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                fragment_count(&path)
            } else {
                usize::from(
                    path.extension()
                        .is_some_and(|x| x.to_str().is_some_and(|x| x.parse::<u8>().is_ok())),
                )
            }
        })
        .sum()
}

#[test]
fn adding_then_removing_nodes_under_load_loses_nothing() {
    let cluster = Cluster::start();
    let rt = runtime();
    let s3 = cluster.client();
    let objects = rt.block_on(fill(&s3, "grow", "base/", 40, 600_000));
    let _seven = start_node(&cluster, 7);
    let eight = start_node(&cluster, 8);
    let load = Load::start(&rt, &s3, "grow", 600_000, objects);

    // Grow: the new devices join the ring; the workers move slots to them.
    add_devices(&cluster, "ec4+2", [7, 8]);
    settle(&cluster, true, false, "after adding nodes 7 and 8");
    assert!(
        fragment_count(&cluster.path().join("node8")) > 0,
        "node 8 was given fragments"
    );

    // Shrink: node 8's devices are removed; rebalances drain them; then it stops.
    remove_devices(&cluster, "ec4+2", [8]);
    settle(&cluster, true, false, "after removing node 8");
    let started = Instant::now();
    while fragment_count(&cluster.path().join("node8")) > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "node 8 still holds fragments"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(eight);

    let objects = rt.block_on(load.stop());
    eprintln!(
        "{} requests under load, {} objects",
        load.ops.load(Ordering::Relaxed),
        objects.len()
    );
    rt.block_on(async {
        for (key, seed) in &objects {
            let body = get(&s3, "grow", key)
                .await
                .unwrap_or_else(|e| panic!("GET {key}: {e}"));
            assert!(body == bytes(600_000, *seed), "{key} changed");
        }
    });
    settle(&cluster, false, true, "at the end");
}

/// Nodes 1 and 2 leave the `ec4+2` ring for nodes 7 and 8, which never start: every
/// partition's slots on nodes 1 and 2 (each node holds one slot of every partition) move to
/// devices that are not there, so the movers cannot hand anything over. With node 3 down
/// too, only three of an object's slots hold its fragments; GETs still read every object
/// whole, from the slots' previous owners.
#[test]
fn reads_find_fragments_at_the_previous_owners_during_a_move() {
    let cluster = Cluster::start();
    let rt = runtime();
    let s3 = cluster.client();
    let objects = rt.block_on(fill(&s3, "grow", "moving/", 24, 300_000));
    cluster.wait_full_redundancy(Duration::from_secs(60));
    add_devices(&cluster, "ec4+2", [7, 8]);
    remove_devices(&cluster, "ec4+2", [1, 2]);
    cluster.admin(&["ring", "rebalance", "ec4+2"]);
    assert!(
        [1, 2]
            .iter()
            .all(|&i| device_ids(&cluster, "ec4+2", i).is_empty()),
        "nodes 1 and 2 left the ring in one rebalance"
    );
    cluster.detach_supervisor();
    cluster.kill_node(3);
    rt.block_on(async {
        for (key, seed) in &objects {
            let body = get(&s3, "grow", key)
                .await
                .unwrap_or_else(|e| panic!("GET {key}: {e}"));
            assert!(body == bytes(300_000, *seed), "{key} changed");
        }
    });
}
