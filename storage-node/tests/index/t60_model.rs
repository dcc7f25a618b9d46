//! A model test: random writes, conditional writes, deletes, listings and sequence scans on two
//! neighbouring shards agree with a `BTreeMap` per shard, before and after reopening.

use std::collections::BTreeMap;

use nimbus_core::index::{IndexRecord, ShardId};
use nimbus_storage_node::index::{ApplyError, IndexStore, ListQuery, Precondition};
use proptest::prelude::*;

use crate::{cases, db_path, entry, shard, tombstone};

#[derive(Clone, Debug)]
enum Op {
    Put {
        shard: usize,
        key: String,
        etag: u8,
        cond: Cond,
    },
    Delete {
        shard: usize,
        key: String,
    },
    List {
        shard: usize,
        query: ListQuery,
    },
    Since {
        shard: usize,
        seq: u64,
        limit: usize,
    },
}

#[derive(Clone, Debug)]
enum Cond {
    None,
    IfNoneMatch,
    IfMatch(u8),
}

impl Cond {
    fn precondition(&self) -> Precondition {
        match self {
            Cond::None => Precondition::None,
            Cond::IfNoneMatch => Precondition::IfNoneMatch,
            Cond::IfMatch(n) => Precondition::IfMatch(etag(*n)),
        }
    }
}

fn etag(n: u8) -> String {
    format!("e{n}")
}

/// Two shards whose prefixes are as alike as they can be.
fn shards() -> [ShardId; 2] {
    [shard("acct", "c", 1), shard("acct", "c", 2)]
}

fn key() -> impl Strategy<Value = String> {
    "[ab]{1,3}"
}

fn op() -> impl Strategy<Value = Op> {
    let shard = 0usize..2;
    let cond = prop_oneof![
        Just(Cond::None),
        Just(Cond::IfNoneMatch),
        (0u8..3).prop_map(Cond::IfMatch)
    ];
    let query = (
        "[ab]{0,2}",
        prop::option::of(key()),
        0usize..6,
        any::<bool>(),
    )
        .prop_map(
            |(prefix, start_after, limit, include_tombstones)| ListQuery {
                prefix,
                start_after,
                limit,
                include_tombstones,
            },
        );
    prop_oneof![
        4 => (shard.clone(), key(), 0u8..3, cond)
            .prop_map(|(shard, key, etag, cond)| Op::Put { shard, key, etag, cond }),
        2 => (shard.clone(), key()).prop_map(|(shard, key)| Op::Delete { shard, key }),
        2 => (shard.clone(), query).prop_map(|(shard, query)| Op::List { shard, query }),
        1 => (shard, 0u64..12, 0usize..6)
            .prop_map(|(shard, seq, limit)| Op::Since { shard, seq, limit }),
    ]
}

/// What one shard should hold.
#[derive(Default)]
struct Model {
    records: BTreeMap<String, IndexRecord>,
    last_seq: u64,
}

impl Model {
    fn list(&self, q: &ListQuery) -> Vec<IndexRecord> {
        self.records
            .values()
            .filter(|r| r.key.starts_with(&q.prefix))
            .filter(|r| q.start_after.as_ref().is_none_or(|after| r.key > *after))
            .filter(|r| q.include_tombstones || !r.entry.is_tombstone())
            .take(q.limit)
            .cloned()
            .collect()
    }

    fn since(&self, seq: u64, limit: usize) -> Vec<IndexRecord> {
        let mut newer: Vec<IndexRecord> = self
            .records
            .values()
            .filter(|r| r.seq > seq)
            .cloned()
            .collect();
        newer.sort_by_key(|r| r.seq);
        newer.truncate(limit);
        newer
    }
}

async fn check(store: &IndexStore, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let shards = shards();
    let mut models = [Model::default(), Model::default()];
    for (version, op) in (1u64..).zip(ops) {
        match op {
            Op::Put {
                shard,
                key,
                etag: n,
                cond,
            } => {
                let e = entry(version, &etag(n));
                let model = &mut models[shard];
                let current = model.records.get(&key);
                let got = store
                    .apply(&shards[shard], &key, e.clone(), cond.precondition())
                    .await;
                if cond
                    .precondition()
                    .admits(current.map(|record| &record.entry))
                {
                    let seq = got.map_err(|e| TestCaseError::fail(format!("{e}")))?;
                    prop_assert_eq!(seq, model.last_seq + 1);
                    model.last_seq = seq;
                    model
                        .records
                        .insert(key.clone(), IndexRecord { seq, key, entry: e });
                } else {
                    match got {
                        Err(ApplyError::PreconditionFailed { current: c, .. }) => {
                            prop_assert_eq!(c.map(|c| *c), current.cloned());
                        }
                        other => prop_assert!(false, "expected a failed precondition: {other:?}"),
                    }
                }
            }
            Op::Delete { shard, key } => {
                let model = &mut models[shard];
                let t = tombstone(version);
                let seq = store
                    .apply(&shards[shard], &key, t.clone(), Precondition::None)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{e}")))?;
                prop_assert_eq!(seq, model.last_seq + 1);
                model.last_seq = seq;
                model
                    .records
                    .insert(key.clone(), IndexRecord { seq, key, entry: t });
            }
            Op::List { shard, query } => {
                let got = store.list(&shards[shard], &query).await.unwrap();
                prop_assert_eq!(got, models[shard].list(&query), "{:?}", query);
            }
            Op::Since { shard, seq, limit } => {
                let got = store
                    .entries_since(&shards[shard], seq, limit)
                    .await
                    .unwrap();
                prop_assert_eq!(got, models[shard].since(seq, limit));
            }
        }
    }
    for (sh, model) in shards.iter().zip(&models) {
        prop_assert_eq!(store.last_seq(sh).await.unwrap(), model.last_seq);
        prop_assert_eq!(
            store.entries_since(sh, 0, 1000).await.unwrap(),
            model.since(0, 1000)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(24)))]

    #[test]
    fn random_operations_agree_with_a_btreemap_model(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = IndexStore::open(db_path(&dir)).await.unwrap();
            check(&store, ops).await?;
            // Everything acknowledged is still there after a reopen.
            let all = ListQuery { limit: 1000, include_tombstones: true, ..ListQuery::default() };
            let mut before = Vec::new();
            for sh in shards() {
                before.push(store.list(&sh, &all).await.unwrap());
            }
            store.close().await.unwrap();
            let store = IndexStore::open(db_path(&dir)).await.unwrap();
            for (sh, records) in shards().into_iter().zip(before) {
                prop_assert_eq!(store.list(&sh, &all).await.unwrap(), records);
            }
            store.close().await.unwrap();
            Ok(())
        })?;
    }
}
