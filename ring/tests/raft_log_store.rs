//! The raft log store and snapshot files against openraft's own storage test suite, and
//! across reopens: what a voter stored survives it being dropped (as a killed process would
//! be), and a damaged snapshot file is refused.
//!
//! The state machine here is a small in-memory key-value map that keeps its snapshots with
//! `nimbus_ring::raft::snapshot_file`, the way the cluster map's store is meant to.

#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};

use nimbus_ring::error::FormatError;
use nimbus_ring::raft::log_store::LogStore;
use nimbus_ring::raft::snapshot_file::{self, SnapshotFileError};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, LogState, Membership, RaftLogReader,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

/// A write to the test state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    key: String,
    value: String,
}

/// What a write replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replaced {
    previous: Option<String>,
}

openraft::declare_raft_types!(
    /// The test cluster: u64 node ids, `Set` writes, snapshots held in memory.
    pub TestConfig:
        D = Set,
        R = Replaced,
        SnapshotData = Cursor<Vec<u8>>,
);

type NodeId = u64;

/// An in-memory key-value state machine whose snapshots are snapshot files.
#[derive(Debug, Clone)]
pub struct MemStateMachine {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    data: BTreeMap<String, String>,
    snapshot_dir: PathBuf,
    snapshots_built: u64,
}

impl MemStateMachine {
    fn new(snapshot_dir: PathBuf) -> Self {
        MemStateMachine {
            last_applied: None,
            membership: StoredMembership::default(),
            data: BTreeMap::new(),
            snapshot_dir,
            snapshots_built: 0,
        }
    }
}

fn snapshot_error(e: SnapshotFileError) -> StorageError<NodeId> {
    e.into_storage_error(None)
}

impl RaftSnapshotBuilder<TestConfig> for MemStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TestConfig>, StorageError<NodeId>> {
        self.snapshots_built += 1;
        let last = self.last_applied.map_or(0, |id| id.index);
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("{last}-{}", self.snapshots_built),
        };
        let data = serde_json::to_vec(&self.data).unwrap();
        snapshot_file::save::<TestConfig>(self.snapshot_dir.clone(), meta.clone(), data.clone())
            .await
            .map_err(snapshot_error)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TestConfig> for MemStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Replaced>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TestConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut replies = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let previous = match entry.payload {
                EntryPayload::Blank => None,
                EntryPayload::Normal(Set { key, value }) => self.data.insert(key, value),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    None
                }
            };
            replies.push(Replaced { previous });
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let data: BTreeMap<String, String> = serde_json::from_slice(&bytes).unwrap();
        // Saved first: once installed, the snapshot must survive a crash.
        snapshot_file::save::<TestConfig>(self.snapshot_dir.clone(), meta.clone(), bytes)
            .await
            .map_err(snapshot_error)?;
        self.data = data;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TestConfig>>, StorageError<NodeId>> {
        let stored = snapshot_file::load_latest::<TestConfig>(self.snapshot_dir.clone())
            .await
            .map_err(snapshot_error)?;
        Ok(stored.map(snapshot_file::StoredSnapshot::into_snapshot))
    }
}

/// Builds each store of the suite in a new temporary directory, dropped with the guard.
struct Builder;

impl StoreBuilder<TestConfig, LogStore<TestConfig>, MemStateMachine, TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore<TestConfig>, MemStateMachine), StorageError<NodeId>> {
        let dir = TempDir::new().unwrap();
        let log = LogStore::open(dir.path().join("raft-log.redb"))
            .await
            .unwrap();
        let sm = MemStateMachine::new(dir.path().join("snapshots"));
        Ok((dir, log, sm))
    }
}

#[test]
fn log_store_passes_openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn set(term: u64, index: u64) -> Entry<TestConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Set {
            key: format!("k{index}"),
            value: format!("v{index}"),
        }),
    }
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("raft-log.redb")
}

async fn open(dir: &Path) -> LogStore<TestConfig> {
    LogStore::open(log_path(dir)).await.unwrap()
}

async fn indexes(store: &mut LogStore<TestConfig>) -> Vec<u64> {
    let entries = store.try_get_log_entries(..).await.unwrap();
    entries.iter().map(|e| e.log_id.index).collect()
}

#[tokio::test]
async fn reopen_after_drop_keeps_vote_entries_and_committed() {
    let dir = TempDir::new().unwrap();
    let vote = Vote::new_committed(2, 1);
    let entries: Vec<_> = (1..=5).map(|i| set(2, i)).collect();
    {
        let mut store = open(dir.path()).await;
        store.save_vote(&vote).await.unwrap();
        store.blocking_append(entries.clone()).await.unwrap();
        store.save_committed(Some(log_id(2, 4))).await.unwrap();
    }
    let mut store = open(dir.path()).await;
    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(2, 4)));
    assert_eq!(store.try_get_log_entries(1..=5).await.unwrap(), entries);
    assert_eq!(
        store.get_log_state().await.unwrap(),
        LogState {
            last_purged_log_id: None,
            last_log_id: Some(log_id(2, 5)),
        }
    );
}

#[tokio::test]
async fn fresh_store_has_no_vote_committed_or_entries() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path()).await;
    assert_eq!(store.read_vote().await.unwrap(), None);
    assert_eq!(store.read_committed().await.unwrap(), None);
    assert!(indexes(&mut store).await.is_empty());
    assert_eq!(store.get_log_state().await.unwrap(), LogState::default());
}

#[tokio::test]
async fn purge_and_truncate_survive_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let mut store = open(dir.path()).await;
        store
            .blocking_append((1..=10).map(|i| set(1, i)).collect::<Vec<_>>())
            .await
            .unwrap();
        store.purge(log_id(1, 3)).await.unwrap();
        store.truncate(log_id(1, 8)).await.unwrap();
    }
    let mut store = open(dir.path()).await;
    assert_eq!(indexes(&mut store).await, vec![4, 5, 6, 7]);
    assert_eq!(
        store.get_log_state().await.unwrap(),
        LogState {
            last_purged_log_id: Some(log_id(1, 3)),
            last_log_id: Some(log_id(1, 7)),
        }
    );
    // A new leader's entries replace the truncated ones, after the reopen too.
    store.blocking_append([set(2, 8)]).await.unwrap();
    drop(store);
    let mut store = open(dir.path()).await;
    assert_eq!(indexes(&mut store).await, vec![4, 5, 6, 7, 8]);
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(log_id(2, 8))
    );
}

#[tokio::test]
async fn purge_past_the_last_entry_leaves_the_purged_id_as_last_after_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let mut store = open(dir.path()).await;
        store.blocking_append([set(1, 1), set(1, 2)]).await.unwrap();
        // As after installing a snapshot that is ahead of the log.
        store.purge(log_id(3, 20)).await.unwrap();
    }
    let mut store = open(dir.path()).await;
    assert!(indexes(&mut store).await.is_empty());
    assert_eq!(
        store.get_log_state().await.unwrap(),
        LogState {
            last_purged_log_id: Some(log_id(3, 20)),
            last_log_id: Some(log_id(3, 20)),
        }
    );
}

#[tokio::test]
async fn older_purge_does_not_move_last_purged_back() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path()).await;
    store
        .blocking_append((1..=6).map(|i| set(1, i)).collect::<Vec<_>>())
        .await
        .unwrap();
    store.purge(log_id(1, 4)).await.unwrap();
    store.purge(log_id(1, 2)).await.unwrap();
    assert_eq!(
        store.get_log_state().await.unwrap().last_purged_log_id,
        Some(log_id(1, 4))
    );
    assert_eq!(indexes(&mut store).await, vec![5, 6]);
}

#[tokio::test]
async fn reader_sees_appends_of_the_store() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path()).await;
    let mut reader = store.get_log_reader().await;
    store.blocking_append([set(1, 1), set(1, 2)]).await.unwrap();
    let read = reader.try_get_log_entries(2..).await.unwrap();
    assert_eq!(read, vec![set(1, 2)]);
}

#[tokio::test]
async fn second_open_of_a_store_in_use_is_refused() {
    let dir = TempDir::new().unwrap();
    let _store = open(dir.path()).await;
    assert!(
        LogStore::<TestConfig>::open(log_path(dir.path()))
            .await
            .is_err()
    );
}

fn snapshot_meta(index: u64) -> SnapshotMeta<NodeId, BasicNode> {
    SnapshotMeta {
        last_log_id: Some(log_id(1, index)),
        last_membership: StoredMembership::new(
            Some(log_id(1, 1)),
            Membership::new(vec![BTreeSet::from([1, 2, 3])], None),
        ),
        snapshot_id: format!("snap-{index}"),
    }
}

#[tokio::test]
async fn saved_snapshot_is_loaded_back_and_replaced_by_the_next() {
    let dir = TempDir::new().unwrap();
    let snapshots = dir.path().join("snapshots");
    assert!(
        snapshot_file::load_latest::<TestConfig>(snapshots.clone())
            .await
            .unwrap()
            .is_none()
    );
    for index in [5, 9] {
        let data = format!("state at {index}").into_bytes();
        snapshot_file::save::<TestConfig>(snapshots.clone(), snapshot_meta(index), data)
            .await
            .unwrap();
    }
    let loaded = snapshot_file::load_latest::<TestConfig>(snapshots.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.meta, snapshot_meta(9));
    assert_eq!(loaded.data, b"state at 9");
    // Only the current file is left: no temporary file outlives a save.
    let names: Vec<_> = std::fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![snapshot_file::SNAPSHOT_FILE_NAME]);
}

#[test]
fn corrupt_snapshot_file_is_refused() {
    let dir = TempDir::new().unwrap();
    snapshot_file::save_blocking::<TestConfig>(dir.path(), &snapshot_meta(7), b"the map").unwrap();
    let path = snapshot_file::snapshot_path(dir.path());
    let good = std::fs::read(&path).unwrap();

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    std::fs::write(&path, &flipped).unwrap();
    let err = snapshot_file::load_latest_blocking::<TestConfig>(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotFileError::Format {
                source: FormatError::ChecksumMismatch,
                ..
            }
        ),
        "{err:?}"
    );

    std::fs::write(&path, &good[..good.len() - 1]).unwrap();
    let err = snapshot_file::load_latest_blocking::<TestConfig>(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotFileError::Format {
                source: FormatError::WrongLength { .. },
                ..
            }
        ),
        "{err:?}"
    );

    std::fs::write(&path, b"").unwrap();
    let err = snapshot_file::load_latest_blocking::<TestConfig>(dir.path()).unwrap_err();
    assert!(matches!(err, SnapshotFileError::Format { .. }), "{err:?}");
    // Openraft hears of it as a failed snapshot read.
    let err = err.into_storage_error::<NodeId>(None);
    assert!(err.to_string().contains("Read"), "{err}");
}

#[test]
fn save_removes_a_temporary_file_a_crash_left_behind() {
    let dir = TempDir::new().unwrap();
    // What an interrupted save of a process with our pid would have left.
    let stale = dir.path().join(format!(
        ".{}.tmp.{}",
        snapshot_file::SNAPSHOT_FILE_NAME,
        std::process::id()
    ));
    std::fs::write(&stale, b"half a snapshot").unwrap();
    snapshot_file::save_blocking::<TestConfig>(dir.path(), &snapshot_meta(3), b"ok").unwrap();
    assert!(!std::fs::exists(&stale).unwrap());
    let loaded = snapshot_file::load_latest_blocking::<TestConfig>(dir.path())
        .unwrap()
        .unwrap();
    assert_eq!(loaded.data, b"ok");
}
