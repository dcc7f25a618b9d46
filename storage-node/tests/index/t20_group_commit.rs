//! Group commit: concurrent writes share transactions (and fsyncs), and a write that fails
//! alone does not fail the others of its batch.

use std::sync::Arc;

use nimbus_storage_node::index::{ApplyError, IndexStats, Precondition};
use tokio::task::JoinSet;

use crate::{Fixture, entry, photos, shard};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits() {
    let f = Fixture::new().await;
    let store = Arc::new(f.store);
    let mut tasks = JoinSet::new();
    for i in 0..200u64 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            // Two shards, so a batch mixes them.
            let sh = shard("acct", "c", (i % 2) as u16);
            store
                .apply(
                    &sh,
                    &format!("key-{i:03}"),
                    entry(i, "e"),
                    Precondition::None,
                )
                .await
        });
    }
    let mut seqs = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        seqs.push(joined.unwrap().unwrap());
    }
    seqs.sort_unstable();
    let expected: Vec<u64> = (1..=100).flat_map(|s| [s, s]).collect();
    assert_eq!(
        seqs, expected,
        "each shard numbered its 100 writes 1 to 100"
    );
    let IndexStats {
        writes, commits, ..
    } = store.stats();
    assert_eq!(writes, 200);
    assert!(commits >= 1);
    assert!(
        commits < writes,
        "{commits} commits for {writes} writes: no write shared a commit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_preconditions_do_not_fail_the_writes_batched_with_them() {
    let f = Fixture::new().await;
    let store = Arc::new(f.store);
    store
        .apply(&photos(), "taken", entry(1, "e"), Precondition::None)
        .await
        .unwrap();
    let mut tasks = JoinSet::new();
    for i in 0..100u64 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let (key, cond) = if i % 2 == 0 {
                ("taken".to_owned(), Precondition::IfNoneMatch)
            } else {
                (format!("free-{i}"), Precondition::IfNoneMatch)
            };
            (i, store.apply(&photos(), &key, entry(i, "e"), cond).await)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            (i, Ok(_)) => assert_eq!(i % 2, 1),
            (i, Err(ApplyError::PreconditionFailed { .. })) => assert_eq!(i % 2, 0),
            (_, Err(e)) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(store.last_seq(&photos()).await.unwrap(), 51);
    assert_eq!(store.stats().writes, 51);
}
