//! Integration tests of the index store through its public API, on real redb files in
//! temporary directories: conditional writes, group commit, listings, sequence numbers and
//! replication, durability across reopening, and a model test against a `BTreeMap`.

#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic

mod t10_conditional;
mod t20_group_commit;
mod t30_list;
mod t40_replication;
mod t50_durability;
mod t60_model;

use nimbus_core::ids::VersionId;
use nimbus_core::index::{EntryData, IndexEntry, ShardId};
use nimbus_storage_node::index::IndexStore;
use tempfile::TempDir;

/// A store in its own temporary directory, removed when the test ends.
pub struct Fixture {
    pub dir: TempDir,
    pub store: IndexStore,
}

impl Fixture {
    pub async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = IndexStore::open(db_path(&dir)).await.unwrap();
        Fixture { dir, store }
    }
}

pub fn db_path(dir: &TempDir) -> std::path::PathBuf {
    dir.path().join("index.redb")
}

pub fn shard(account: &str, container: &str, shard: u16) -> ShardId {
    ShardId {
        account: account.to_owned(),
        container: container.to_owned(),
        shard,
    }
}

/// The shard most tests write to.
pub fn photos() -> ShardId {
    shard("acct", "photos", 3)
}

/// A live entry whose data is in fragments.
pub fn entry(version: u64, etag: &str) -> IndexEntry {
    IndexEntry {
        version: VersionId(version),
        size: 1 << 20,
        etag: etag.to_owned(),
        blake3: [7; 32],
        client_checksums: vec![("crc32c".to_owned(), vec![1, 2, 3, 4])],
        content_type: "image/jpeg".to_owned(),
        user_metadata: vec![("camera".to_owned(), "pinhole".to_owned())],
        policy: "ec4+2".to_owned(),
        data: EntryData::Fragments {
            segment_bytes: 1 << 20,
        },
    }
}

/// A live entry holding its bytes inline.
pub fn inline(version: u64, bytes: &[u8]) -> IndexEntry {
    IndexEntry {
        size: bytes.len() as u64,
        etag: format!("etag-{version}"),
        data: EntryData::Inline(bytes.to_vec()),
        ..entry(version, "")
    }
}

pub fn tombstone(version: u64) -> IndexEntry {
    IndexEntry::tombstone(VersionId(version), "ec4+2")
}

/// Proptest cases: `n`, or `PROPTEST_CASES` when set (for long runs).
pub fn cases(n: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n)
}
