//! What the store keeps: entries exactly as given, across closing and reopening; and files
//! it cannot use are errors, not panics.

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::ids::VersionId;
use nimbus_core::index::{EntryData, IndexEntry, IndexRecord};
use nimbus_storage_node::index::{IndexStore, ListQuery, OpenError, Precondition};
use tokio::task::JoinSet;

use crate::{Fixture, db_path, entry, inline, photos, tombstone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_data_and_every_field_round_trip() {
    let f = Fixture::new().await;
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
    let e = IndexEntry {
        client_checksums: vec![
            ("crc32c".to_owned(), vec![9, 8, 7, 6]),
            ("sha256".to_owned(), vec![5; 32]),
        ],
        user_metadata: vec![
            ("b-second".to_owned(), "é".to_owned()),
            ("a-first".to_owned(), String::new()),
        ],
        content_type: "application/octet-stream".to_owned(),
        ..inline(77, &bytes)
    };
    let seq = f
        .store
        .apply(&photos(), "small.bin", e.clone(), Precondition::None)
        .await
        .unwrap();
    let got = f.store.get(&photos(), "small.bin").await.unwrap().unwrap();
    assert_eq!(
        got,
        IndexRecord {
            seq,
            key: "small.bin".to_owned(),
            entry: e
        }
    );
    assert_eq!(got.entry.data, EntryData::Inline(bytes));
    assert_eq!(f.store.get(&photos(), "absent").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_after_close_keeps_every_acknowledged_write() {
    let f = Fixture::new().await;
    let store = Arc::new(f.store);
    let mut tasks = JoinSet::new();
    for i in 0..64u64 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let key = format!("obj-{i:02}");
            let e = if i % 8 == 0 {
                tombstone(i)
            } else {
                inline(i, key.as_bytes())
            };
            store.apply(&photos(), &key, e, Precondition::None).await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap().unwrap();
    }
    let all = ListQuery {
        limit: 1000,
        include_tombstones: true,
        ..ListQuery::default()
    };
    let before = store.list(&photos(), &all).await.unwrap();
    assert_eq!(before.len(), 64);
    let store = Arc::into_inner(store).unwrap();
    store.close().await.unwrap();

    let reopened = IndexStore::open(db_path(&f.dir)).await.unwrap();
    assert_eq!(reopened.list(&photos(), &all).await.unwrap(), before);
    assert_eq!(reopened.last_seq(&photos()).await.unwrap(), 64);
    let seq = reopened
        .apply(&photos(), "after", entry(1, "e"), Precondition::None)
        .await
        .unwrap();
    assert_eq!(seq, 65, "sequence numbers continue after a reopen");
    reopened.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_store_lets_go_of_its_file_once_its_writer_ends() {
    let f = Fixture::new().await;
    f.store
        .apply(&photos(), "k", entry(1, "e"), Precondition::None)
        .await
        .unwrap();
    drop(f.store);
    // The writer thread ends on its own; until it has, the file is still open.
    let mut reopened = None;
    for _ in 0..500 {
        match IndexStore::open(db_path(&f.dir)).await {
            Ok(store) => {
                reopened = Some(store);
                break;
            }
            Err(OpenError::Database { .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    let reopened = reopened.expect("the file was released within 5 seconds");
    let got = reopened.get(&photos(), "k").await.unwrap().unwrap();
    assert_eq!(got.entry.version, VersionId(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_open_in_another_store_is_refused() {
    let f = Fixture::new().await;
    let second = IndexStore::open(db_path(&f.dir)).await;
    assert!(
        matches!(second, Err(OpenError::Database { .. })),
        "{second:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_an_index_database_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let garbage: Vec<u8> = (0..16384u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&path, garbage).unwrap();
    let opened = IndexStore::open(&path).await;
    assert!(
        matches!(opened, Err(OpenError::Database { .. })),
        "{opened:?}"
    );
}
