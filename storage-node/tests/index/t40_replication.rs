//! Sequence numbers as replication sees them: entries since a sequence number, and replicas
//! applying the primary's records idempotently.

use nimbus_core::index::IndexRecord;
use nimbus_storage_node::index::{ListQuery, Precondition, ReplicateError};

use crate::{Fixture, entry, photos, shard, tombstone};

fn record(seq: u64, key: &str, etag: &str) -> IndexRecord {
    IndexRecord {
        seq,
        key: key.to_owned(),
        entry: entry(seq, etag),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_since_returns_newer_records_in_seq_order() {
    let f = Fixture::new().await;
    let s = &f.store;
    for key in ["m", "c", "x", "a"] {
        s.apply(&photos(), key, entry(1, key), Precondition::None)
            .await
            .unwrap();
    }
    let since = s.entries_since(&photos(), 1, 100).await.unwrap();
    let got: Vec<(u64, &str)> = since.iter().map(|r| (r.seq, r.key.as_str())).collect();
    assert_eq!(got, [(2, "c"), (3, "x"), (4, "a")]);
    assert!(s.entries_since(&photos(), 4, 100).await.unwrap().is_empty());
    assert!(
        s.entries_since(&photos(), u64::MAX, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let limited = s.entries_since(&photos(), 0, 2).await.unwrap();
    let got: Vec<u64> = limited.iter().map(|r| r.seq).collect();
    assert_eq!(got, [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_key_appears_once_with_its_new_seq() {
    let f = Fixture::new().await;
    let s = &f.store;
    for (key, etag) in [
        ("a", "a1"),
        ("b", "b1"),
        ("a", "a2"),
        ("c", "c1"),
        ("a", "a3"),
    ] {
        s.apply(&photos(), key, entry(1, etag), Precondition::None)
            .await
            .unwrap();
    }
    s.apply(&photos(), "b", tombstone(9), Precondition::None)
        .await
        .unwrap();
    let since = s.entries_since(&photos(), 0, 100).await.unwrap();
    let got: Vec<(u64, &str, &str)> = since
        .iter()
        .map(|r| (r.seq, r.key.as_str(), r.entry.etag.as_str()))
        .collect();
    // Tombstones travel too: replicas must learn of deletes.
    assert_eq!(got, [(4, "c", "c1"), (5, "a", "a3"), (6, "b", "")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_replicated_is_idempotent_and_ignores_older_seqs() {
    let f = Fixture::new().await;
    let s = &f.store;
    assert!(
        s.apply_replicated(&photos(), record(5, "k", "v5"))
            .await
            .unwrap()
    );
    assert!(
        !s.apply_replicated(&photos(), record(5, "k", "v5"))
            .await
            .unwrap()
    );
    assert!(
        !s.apply_replicated(&photos(), record(3, "k", "v3"))
            .await
            .unwrap()
    );
    assert_eq!(
        s.get(&photos(), "k").await.unwrap().unwrap(),
        record(5, "k", "v5")
    );
    assert_eq!(s.last_seq(&photos()).await.unwrap(), 5);

    // A newer record replaces it; an older one for another key still lands.
    assert!(
        s.apply_replicated(&photos(), record(9, "k", "v9"))
            .await
            .unwrap()
    );
    assert!(
        s.apply_replicated(&photos(), record(7, "j", "v7"))
            .await
            .unwrap()
    );
    assert_eq!(
        s.last_seq(&photos()).await.unwrap(),
        9,
        "last_seq = max of seqs"
    );
    let since = s.entries_since(&photos(), 0, 100).await.unwrap();
    assert_eq!(since, [record(7, "j", "v7"), record(9, "k", "v9")]);
    assert_eq!(s.stats().writes, 3);

    // A primary's next write continues after the highest seq it learned of.
    let seq = s
        .apply(&photos(), "new", entry(1, "n"), Precondition::None)
        .await
        .unwrap();
    assert_eq!(seq, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_fed_the_primarys_records_converges_whatever_the_order_and_repeats() {
    let primary = Fixture::new().await;
    let replica = Fixture::new().await;
    let p = &primary.store;
    for i in 0..30u64 {
        let key = format!("k{}", i % 7);
        let e = if i % 5 == 4 {
            tombstone(i)
        } else {
            entry(i, &format!("e{i}"))
        };
        p.apply(&photos(), &key, e, Precondition::None)
            .await
            .unwrap();
    }
    let mut records = p.entries_since(&photos(), 0, 1000).await.unwrap();
    records.reverse();
    let again = records.clone();
    for r in records.into_iter().chain(again) {
        replica.store.apply_replicated(&photos(), r).await.unwrap();
    }
    let all = ListQuery {
        limit: 1000,
        include_tombstones: true,
        ..ListQuery::default()
    };
    assert_eq!(
        replica.store.list(&photos(), &all).await.unwrap(),
        p.list(&photos(), &all).await.unwrap()
    );
    assert_eq!(
        replica
            .store
            .entries_since(&photos(), 0, 1000)
            .await
            .unwrap(),
        p.entries_since(&photos(), 0, 1000).await.unwrap()
    );
    assert_eq!(
        replica.store.last_seq(&photos()).await.unwrap(),
        p.last_seq(&photos()).await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_record_takes_its_number_from_a_diverged_write() {
    // The replica holds seq 2 for "old" (a write of a primary that no majority acknowledged);
    // the new primary's seq 2 is for "new". After it, "new" owns seq 2 in entries_since.
    let f = Fixture::new().await;
    let s = &f.store;
    let sh = shard("acct", "c", 0);
    s.apply_replicated(&sh, record(1, "base", "b"))
        .await
        .unwrap();
    s.apply_replicated(&sh, record(2, "old", "o"))
        .await
        .unwrap();
    s.apply_replicated(&sh, record(2, "new", "n"))
        .await
        .unwrap();
    let since = s.entries_since(&sh, 0, 100).await.unwrap();
    let got: Vec<(u64, &str)> = since.iter().map(|r| (r.seq, r.key.as_str())).collect();
    assert_eq!(got, [(1, "base"), (2, "new")]);
    // Replacing "old" later must not remove "new"'s row.
    s.apply_replicated(&sh, record(3, "old", "o3"))
        .await
        .unwrap();
    let since = s.entries_since(&sh, 1, 100).await.unwrap();
    let got: Vec<(u64, &str)> = since.iter().map(|r| (r.seq, r.key.as_str())).collect();
    assert_eq!(got, [(2, "new"), (3, "old")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_with_impossible_seqs_are_refused() {
    let f = Fixture::new().await;
    for seq in [0, u64::MAX] {
        let err = f
            .store
            .apply_replicated(&photos(), record(seq, "k", "v"))
            .await
            .unwrap_err();
        assert!(matches!(err, ReplicateError::InvalidSeq { .. }), "{err:?}");
        assert!(!err.is_retryable());
    }
    assert_eq!(f.store.last_seq(&photos()).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_holding_the_same_writes_have_equal_digests_and_list_their_shards() {
    let (a, b) = (Fixture::new().await, Fixture::new().await);
    let records = [
        record(1, "x", "x1"),
        record(2, "y", "y1"),
        record(3, "x", "x2"),
    ];
    for r in &records {
        a.store
            .apply_replicated(&photos(), r.clone())
            .await
            .unwrap();
    }
    // The same writes, in another order, one of them missed at first.
    for r in records.iter().rev().skip(1) {
        b.store
            .apply_replicated(&photos(), r.clone())
            .await
            .unwrap();
    }
    let (da, na) = a.store.digest(&photos()).await.unwrap();
    let (db, _) = b.store.digest(&photos()).await.unwrap();
    assert_eq!(na, 2, "two keys");
    assert_ne!(da, db, "b missed x's newest write");
    b.store
        .apply_replicated(&photos(), records[2].clone())
        .await
        .unwrap();
    assert_eq!(b.store.digest(&photos()).await.unwrap().0, da);
    // Another shard of the same container differs and is listed apart.
    let other = shard("acct", "photos", 1);
    a.store
        .apply_replicated(&other, record(1, "z", "z1"))
        .await
        .unwrap();
    let mut shards = a.store.shards().await.unwrap();
    shards.sort();
    assert_eq!(shards, vec![other, photos()]);
    assert_eq!(a.store.digest(&photos()).await.unwrap().0, da);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_is_purged_only_while_it_is_still_that_tombstone() {
    let f = Fixture::new().await;
    let s = &f.store;
    s.apply_replicated(&photos(), record(1, "a", "a1"))
        .await
        .unwrap();
    assert!(
        !s.purge_tombstone(&photos(), "a", 1).await.unwrap(),
        "a live entry stays"
    );
    let deleted = IndexRecord {
        seq: 2,
        key: "a".into(),
        entry: tombstone(2),
    };
    s.apply_replicated(&photos(), deleted).await.unwrap();
    assert!(
        !s.purge_tombstone(&photos(), "a", 1).await.unwrap(),
        "another seq"
    );
    assert!(!s.purge_tombstone(&photos(), "nothing", 2).await.unwrap());
    assert!(s.purge_tombstone(&photos(), "a", 2).await.unwrap());
    assert_eq!(s.get(&photos(), "a").await.unwrap(), None);
    assert!(
        s.entries_since(&photos(), 0, 10).await.unwrap().is_empty(),
        "no sequence row left"
    );
    // The key can be written again, with a higher number.
    s.apply(&photos(), "a", entry(1, "a3"), Precondition::IfNoneMatch)
        .await
        .unwrap();
    assert!(s.last_seq(&photos()).await.unwrap() > 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_is_dropped_only_while_it_still_has_the_digest_compared() {
    let f = Fixture::new().await;
    let s = &f.store;
    let other = shard("AUTH_a", "photos", 1);
    for key in ["a", "b", "c"] {
        s.apply(&photos(), key, entry(1, key), Precondition::None)
            .await
            .unwrap();
    }
    s.apply(&other, "z", entry(1, "z"), Precondition::None)
        .await
        .unwrap();
    let (compared, _) = s.digest(&photos()).await.unwrap();
    // A write reached the copy after it was compared: the copy stays, whole.
    s.apply_replicated(&photos(), record(9, "d", "late"))
        .await
        .unwrap();
    assert!(!s.drop_copy(&photos(), compared).await.unwrap());
    assert_eq!(s.digest(&photos()).await.unwrap().1, 4);
    assert!(!s.drop_copy(&photos(), [0; 32]).await.unwrap());
    // Its current digest drops it: every entry and sequence row, and the shard itself.
    let (now, _) = s.digest(&photos()).await.unwrap();
    assert!(s.drop_copy(&photos(), now).await.unwrap());
    assert_eq!(s.get(&photos(), "a").await.unwrap(), None);
    assert!(s.entries_since(&photos(), 0, 100).await.unwrap().is_empty());
    assert_eq!(s.last_seq(&photos()).await.unwrap(), 0);
    assert_eq!(s.shards().await.unwrap(), std::slice::from_ref(&other));
    // Another shard of the same container is untouched; an empty copy is not "dropped".
    assert_eq!(s.get(&other, "z").await.unwrap().unwrap().entry.etag, "z");
    assert!(!s.drop_copy(&photos(), now).await.unwrap());
}
