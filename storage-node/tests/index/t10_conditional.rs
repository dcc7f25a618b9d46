//! Conditional writes: preconditions are checked atomically with the write they guard.

use std::sync::Arc;

use nimbus_core::ids::VersionId;
use nimbus_core::index::EntryData;
use nimbus_storage_node::index::{ApplyError, Precondition};
use tokio::task::JoinSet;

use crate::{Fixture, entry, photos, shard, tombstone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_if_none_match_writes_have_exactly_one_winner() {
    let f = Fixture::new().await;
    let store = Arc::new(f.store);
    let mut tasks = JoinSet::new();
    for i in 0..32u64 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let etag = format!("etag-{i}");
            let result = store
                .apply(
                    &photos(),
                    "cat.jpg",
                    entry(i, &etag),
                    Precondition::IfNoneMatch,
                )
                .await;
            (etag, result)
        });
    }
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            (etag, Ok(seq)) => winners.push((etag, seq)),
            (_, Err(ApplyError::PreconditionFailed { current, .. })) => losers.push(current),
            (_, Err(e)) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert_eq!(losers.len(), 31);
    let (winner_etag, winner_seq) = &winners[0];
    assert_eq!(*winner_seq, 1);
    for current in losers {
        // Every loser saw the winner's entry, never an absent key.
        assert_eq!(&current.unwrap().entry.etag, winner_etag);
    }
    let stored = store.get(&photos(), "cat.jpg").await.unwrap().unwrap();
    assert_eq!(&stored.entry.etag, winner_etag);
    assert_eq!(store.last_seq(&photos()).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_with_a_stale_etag_fails_and_with_the_current_one_succeeds() {
    let f = Fixture::new().await;
    let s = &f.store;
    s.apply(&photos(), "k", entry(1, "v1"), Precondition::None)
        .await
        .unwrap();
    s.apply(&photos(), "k", entry(2, "v2"), Precondition::None)
        .await
        .unwrap();
    let stale = s
        .apply(
            &photos(),
            "k",
            entry(3, "v3"),
            Precondition::IfMatch("v1".to_owned()),
        )
        .await;
    match stale {
        Err(e @ ApplyError::PreconditionFailed { .. }) => {
            assert!(!e.is_retryable());
            let ApplyError::PreconditionFailed { current, key, .. } = e else {
                unreachable!()
            };
            assert_eq!(key, "k");
            let current = current.unwrap();
            assert_eq!(current.entry.etag, "v2");
            assert_eq!(current.seq, 2);
        }
        other => panic!("expected a failed precondition, got {other:?}"),
    }
    let seq = s
        .apply(
            &photos(),
            "k",
            entry(3, "v3"),
            Precondition::IfMatch("v2".to_owned()),
        )
        .await
        .unwrap();
    assert_eq!(seq, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_fails_on_an_absent_key_and_on_a_tombstone() {
    let f = Fixture::new().await;
    let s = &f.store;
    let if_match = || Precondition::IfMatch(String::new());
    let absent = s.apply(&photos(), "k", entry(1, "v1"), if_match()).await;
    assert!(matches!(
        absent,
        Err(ApplyError::PreconditionFailed { current: None, .. })
    ));
    s.apply(&photos(), "k", tombstone(2), Precondition::None)
        .await
        .unwrap();
    // A tombstone's etag is empty, yet it matches nothing.
    let deleted = s.apply(&photos(), "k", entry(3, "v3"), if_match()).await;
    assert!(matches!(
        deleted,
        Err(ApplyError::PreconditionFailed { current: Some(c), .. }) if c.entry.is_tombstone()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_succeeds_over_a_tombstone_but_not_over_a_live_entry() {
    let f = Fixture::new().await;
    let s = &f.store;
    s.apply(&photos(), "k", entry(1, "v1"), Precondition::IfNoneMatch)
        .await
        .unwrap();
    assert!(matches!(
        s.apply(&photos(), "k", entry(2, "v2"), Precondition::IfNoneMatch)
            .await,
        Err(ApplyError::PreconditionFailed { .. })
    ));
    s.apply(&photos(), "k", tombstone(3), Precondition::None)
        .await
        .unwrap();
    let seq = s
        .apply(&photos(), "k", entry(4, "v4"), Precondition::IfNoneMatch)
        .await
        .unwrap();
    assert_eq!(seq, 3, "the failed write took no sequence number");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_version_compares_the_current_version_tombstones_included() {
    let f = Fixture::new().await;
    let s = &f.store;
    let if_version = |v| Precondition::IfVersion(VersionId(v));
    assert!(
        s.apply(&photos(), "k", entry(1, "v1"), if_version(1))
            .await
            .is_err()
    );
    s.apply(&photos(), "k", entry(10, "v10"), Precondition::None)
        .await
        .unwrap();
    assert!(
        s.apply(&photos(), "k", entry(11, "v11"), if_version(9))
            .await
            .is_err()
    );
    s.apply(&photos(), "k", tombstone(11), if_version(10))
        .await
        .unwrap();
    s.apply(&photos(), "k", entry(12, "v12"), if_version(11))
        .await
        .unwrap();
    let current = s.get(&photos(), "k").await.unwrap().unwrap();
    assert_eq!(current.entry.version, VersionId(12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_precondition_changes_nothing() {
    let f = Fixture::new().await;
    let s = &f.store;
    s.apply(&photos(), "k", entry(1, "v1"), Precondition::None)
        .await
        .unwrap();
    let before = s.stats();
    let _ = s
        .apply(&photos(), "k", entry(2, "v2"), Precondition::IfNoneMatch)
        .await
        .unwrap_err();
    assert_eq!(s.last_seq(&photos()).await.unwrap(), 1);
    assert_eq!(
        s.get(&photos(), "k").await.unwrap().unwrap().entry.etag,
        "v1"
    );
    assert_eq!(s.stats(), before, "nothing was written, nothing committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_writes_are_refused_as_final_answers() {
    let f = Fixture::new().await;
    let s = &f.store;
    let mut wrong_size = entry(1, "v1");
    wrong_size.data = EntryData::Inline(b"abc".to_vec());
    let cases = [
        (photos(), "k".to_owned(), wrong_size),
        (photos(), String::new(), entry(1, "v1")),
        (
            photos(),
            "k".repeat(nimbus_core::index::MAX_INDEX_KEY_BYTES + 1),
            entry(1, "v1"),
        ),
        (shard("acct", "", 0), "k".to_owned(), entry(1, "v1")),
    ];
    for (shard, key, e) in cases {
        let err = s
            .apply(&shard, &key, e, Precondition::None)
            .await
            .unwrap_err();
        assert!(matches!(err, ApplyError::Invalid { .. }), "{err:?}");
        assert!(!err.is_retryable());
    }
    assert_eq!(s.stats().writes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_shard_numbers_its_own_writes() {
    let f = Fixture::new().await;
    let s = &f.store;
    let (one, two) = (shard("acct", "c", 1), shard("acct", "c", 2));
    let mut seqs = Vec::new();
    for (sh, key) in [
        (&one, "a"),
        (&one, "b"),
        (&two, "a"),
        (&one, "a"),
        (&two, "z"),
    ] {
        seqs.push(
            s.apply(sh, key, entry(1, "e"), Precondition::None)
                .await
                .unwrap(),
        );
    }
    assert_eq!(seqs, [1, 2, 1, 3, 2]);
    assert_eq!(s.last_seq(&one).await.unwrap(), 3);
    assert_eq!(s.last_seq(&two).await.unwrap(), 2);
    assert_eq!(s.last_seq(&shard("acct", "c", 3)).await.unwrap(), 0);
}
