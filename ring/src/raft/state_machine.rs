//! The cluster map as openraft's state machine ([`RaftStateMachine`] for [`MapRaft`]): it
//! applies committed [`MapCommand`]s to a [`ClusterMap`], answers each with its
//! [`MapResponse`], and keeps its snapshots (the encoded map) in snapshot files.
//!
//! Readers never touch the state machine: every applied batch publishes the new map as an
//! `Arc<ClusterMap>` on a watch channel, and a [`MapReader`] reads it (a pointer copy) or
//! waits for the next one.
//!
//! **Invariants:**
//! - The published map, the last applied log id and the membership always move together:
//!   a batch is applied to a copy of the map, which replaces the current one (and is
//!   published) only once the whole batch has been applied.
//! - A refused command is an answer, not a failure: it is applied (the map stays as it was,
//!   [`ClusterMap::apply`] guarantees it), its log id becomes the last applied, and its
//!   [`MapError`](crate::map::MapError) goes back to the proposer.
//! - Saved before returned: [`RaftSnapshotBuilder::build_snapshot`] and
//!   [`RaftStateMachine::install_snapshot`] return only once the snapshot file holds the
//!   snapshot, because openraft purges the log it covers as soon as they return.
//! - The snapshot file never goes back: snapshots are saved one at a time (a lock travels
//!   into the blocking task that writes), and a snapshot built from an older state than
//!   the saved one is handed to openraft but not written over it.
//! - At start the map is the saved snapshot's (or empty); openraft then re-applies the
//!   committed entries after it.
//! - No encoding, decoding or applying runs on a tokio worker: the map can be large (ring
//!   builders), so that work goes to the blocking pool.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use tokio::sync::{Mutex, watch};
use tracing::{debug, info};

use super::snapshot_file::{self, SnapshotFileError, StoredSnapshot};
use super::{MapRaft, MapResponse, NodeId};
use crate::error::FormatError;
use crate::map::{ClusterMap, MapCommand, MapOutcome};

/// Why a state machine could not be opened from its snapshot directory.
#[derive(Debug, thiserror::Error)]
pub enum StateMachineOpenError {
    /// The snapshot file could not be read or is damaged.
    #[error("load the last snapshot")]
    Snapshot {
        /// What the snapshot file reported.
        #[source]
        source: SnapshotFileError,
    },
    /// The snapshot file is sound but the map inside does not decode.
    #[error("snapshot {} holds a cluster map that does not decode", path.display())]
    Map {
        /// The snapshot file.
        path: PathBuf,
        /// What the map's decoder reported.
        #[source]
        source: FormatError,
    },
    /// The blocking task decoding the map panicked or was cancelled.
    #[error("the task decoding the snapshot's map failed")]
    Task {
        /// What the runtime reported.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Why waiting for a newer map ended without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the metadata member stopped: no newer map will come")]
pub struct MapClosed;

/// A cheap, cloneable read handle on the map a member has applied.
#[derive(Debug, Clone)]
pub struct MapReader {
    rx: watch::Receiver<Arc<ClusterMap>>,
}

impl MapReader {
    /// Returns the map as last applied on this member (possibly behind the leader's).
    #[must_use]
    pub fn current(&self) -> Arc<ClusterMap> {
        Arc::clone(&self.rx.borrow())
    }

    /// Returns a watch receiver that sees every map this member applies from now on (for
    /// long polls).
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterMap>> {
        self.rx.clone()
    }

    /// Returns the first map whose [`ClusterMap::version`] is above `version`: at once if
    /// the current one is, otherwise when one is applied.
    ///
    /// # Errors
    /// [`MapClosed`] when the member stopped first.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads a watch channel.
    pub async fn wait_newer_than(&self, version: u64) -> Result<Arc<ClusterMap>, MapClosed> {
        let mut rx = self.rx.clone();
        let map = rx
            .wait_for(|map| map.version() > version)
            .await
            .map_err(|_| MapClosed)?;
        Ok(Arc::clone(&map))
    }
}

/// The last log id held by the snapshot file, guarding its writes (see the module doc).
type SavedSnapshot = Arc<Mutex<Option<LogId<NodeId>>>>;

/// The cluster map's state machine. See the module documentation.
#[derive(Debug)]
pub struct MapStateMachine {
    map: Arc<ClusterMap>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    snapshot_dir: PathBuf,
    saved: SavedSnapshot,
    published: watch::Sender<Arc<ClusterMap>>,
    snapshots_built: u64,
}

impl MapStateMachine {
    /// Opens the state machine whose snapshots live in `snapshot_dir`: the map, last applied
    /// log id and membership of the saved snapshot, or an empty map when there is none.
    ///
    /// # Errors
    /// [`StateMachineOpenError`] when the snapshot cannot be read or decoded; a damaged
    /// snapshot is never replaced by an empty map.
    pub async fn open(snapshot_dir: impl Into<PathBuf>) -> Result<Self, StateMachineOpenError> {
        let snapshot_dir = snapshot_dir.into();
        let stored = snapshot_file::load_latest::<MapRaft>(snapshot_dir.clone())
            .await
            .map_err(|source| StateMachineOpenError::Snapshot { source })?;
        let (map, last_applied, membership) = match stored {
            None => (ClusterMap::new(), None, StoredMembership::default()),
            Some(StoredSnapshot { meta, data }) => {
                let map = tokio::task::spawn_blocking(move || ClusterMap::decode(&data))
                    .await
                    .map_err(|source| StateMachineOpenError::Task { source })?
                    .map_err(|source| StateMachineOpenError::Map {
                        path: snapshot_file::snapshot_path(&snapshot_dir),
                        source,
                    })?;
                (map, meta.last_log_id, meta.last_membership)
            }
        };
        info!(
            dir = %snapshot_dir.display(),
            version = map.version(),
            last_applied = ?last_applied,
            "cluster map state machine opened"
        );
        let map = Arc::new(map);
        let (published, _) = watch::channel(Arc::clone(&map));
        Ok(MapStateMachine {
            map,
            last_applied,
            membership,
            snapshot_dir,
            saved: Arc::new(Mutex::new(last_applied)),
            published,
            snapshots_built: 0,
        })
    }

    /// Returns a read handle on the applied map.
    #[must_use]
    pub fn reader(&self) -> MapReader {
        MapReader {
            rx: self.published.subscribe(),
        }
    }

    /// Returns the directory of the snapshot file.
    #[must_use]
    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshot_dir
    }
}

/// Builds a snapshot of the state the state machine had when openraft asked for a builder.
#[derive(Debug)]
pub struct MapSnapshotBuilder {
    map: Arc<ClusterMap>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    snapshot_dir: PathBuf,
    saved: SavedSnapshot,
    sequence: u64,
}

impl RaftSnapshotBuilder<MapRaft> for MapSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<MapRaft>, StorageError<NodeId>> {
        let snapshot_id = match self.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, self.sequence),
            None => format!("empty-{}", self.sequence),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let map = Arc::clone(&self.map);
        let data = tokio::task::spawn_blocking(move || map.encode())
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let written = save_unless_older(&self.saved, &self.snapshot_dir, &meta, &data).await?;
        debug!(snapshot = %meta.snapshot_id, written, "cluster map snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// Saves a snapshot file unless the saved one is newer; returns whether it wrote.
///
/// # Cancel safety
/// The write, once started, finishes even if this future is dropped, and holds the lock
/// until it has: no later save can overtake it.
async fn save_unless_older(
    saved: &SavedSnapshot,
    dir: &Path,
    meta: &SnapshotMeta<NodeId, BasicNode>,
    data: &[u8],
) -> Result<bool, StorageError<NodeId>> {
    let guard = Arc::clone(saved).lock_owned().await;
    if *guard > meta.last_log_id {
        return Ok(false);
    }
    save_locked(guard, dir, meta, data).await?;
    Ok(true)
}

/// Writes the snapshot file while holding `guard`, then records its last log id in it.
async fn save_locked(
    mut guard: tokio::sync::OwnedMutexGuard<Option<LogId<NodeId>>>,
    dir: &Path,
    meta: &SnapshotMeta<NodeId, BasicNode>,
    data: &[u8],
) -> Result<(), StorageError<NodeId>> {
    let signature = meta.signature();
    let dir = dir.to_path_buf();
    let meta = meta.clone();
    let data = data.to_vec();
    tokio::task::spawn_blocking(move || {
        snapshot_file::save_blocking::<MapRaft>(&dir, &meta, &data)?;
        *guard = meta.last_log_id;
        Ok::<_, SnapshotFileError>(())
    })
    .await
    .map_err(|source| SnapshotFileError::Task {
        verb: openraft::ErrorVerb::Write,
        source,
    })
    .and_then(|r| r)
    .map_err(|e| e.into_storage_error(Some(signature)))
}

/// What applying a batch produced.
struct Applied {
    /// Each entry's answer, in order.
    responses: Vec<MapResponse>,
    /// The batch's last log id.
    last: Option<LogId<NodeId>>,
    /// The batch's last membership, if it had one.
    membership: Option<StoredMembership<NodeId, BasicNode>>,
}

/// Applies a batch to `map`.
fn apply_batch(map: &mut ClusterMap, entries: Vec<Entry<MapRaft>>) -> Applied {
    let mut applied = Applied {
        responses: Vec::with_capacity(entries.len()),
        last: None,
        membership: None,
    };
    for entry in entries {
        applied.last = Some(entry.log_id);
        let response = match entry.payload {
            EntryPayload::Blank => Ok(MapOutcome::Done),
            EntryPayload::Normal(command) => apply_command(map, &command),
            EntryPayload::Membership(m) => {
                applied.membership = Some(StoredMembership::new(Some(entry.log_id), m));
                Ok(MapOutcome::Done)
            }
        };
        applied.responses.push(response);
    }
    applied
}

fn apply_command(map: &mut ClusterMap, command: &MapCommand) -> MapResponse {
    let response = map.apply(command);
    if let Err(e) = &response {
        debug!(error = %e, "map command refused");
    }
    response
}

impl RaftStateMachine<MapRaft> for MapStateMachine {
    type SnapshotBuilder = MapSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MapResponse>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<MapRaft>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let Some(first) = entries.first().map(|e| e.log_id) else {
            return Ok(Vec::new());
        };
        let changes_map = entries
            .iter()
            .any(|e| matches!(e.payload, EntryPayload::Normal(_)));
        let applied = if changes_map {
            // A copy, so that readers holding the current map keep a consistent one.
            let current = Arc::clone(&self.map);
            let (map, applied) = tokio::task::spawn_blocking(move || {
                let mut map = ClusterMap::clone(&current);
                let applied = apply_batch(&mut map, entries);
                (map, applied)
            })
            .await
            .map_err(|e| StorageIOError::apply(first, &e))?;
            self.map = Arc::new(map);
            applied
        } else {
            apply_batch(&mut ClusterMap::new(), entries)
        };
        self.last_applied = applied.last;
        if let Some(membership) = applied.membership {
            self.membership = membership;
        }
        if changes_map {
            self.published.send_replace(Arc::clone(&self.map));
        }
        Ok(applied.responses)
    }

    async fn get_snapshot_builder(&mut self) -> MapSnapshotBuilder {
        self.snapshots_built += 1;
        MapSnapshotBuilder {
            map: Arc::clone(&self.map),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
            saved: Arc::clone(&self.saved),
            sequence: self.snapshots_built,
        }
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
        let data = snapshot.into_inner();
        let signature = meta.signature();
        // Decoded first: a snapshot that does not decode is never saved.
        let (map, data) = tokio::task::spawn_blocking(move || (ClusterMap::decode(&data), data))
            .await
            .map_err(|e| StorageIOError::read_snapshot(Some(signature.clone()), &e))?;
        let map = map.map_err(|e| StorageIOError::read_snapshot(Some(signature), &e))?;
        // Saved before installed: once openraft hears of it, it purges the log it covers.
        let guard = Arc::clone(&self.saved).lock_owned().await;
        save_locked(guard, &self.snapshot_dir, meta, &data).await?;
        info!(
            snapshot = %meta.snapshot_id,
            version = map.version(),
            "cluster map snapshot installed"
        );
        self.map = Arc::new(map);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.published.send_replace(Arc::clone(&self.map));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<MapRaft>>, StorageError<NodeId>> {
        let stored = snapshot_file::load_latest::<MapRaft>(self.snapshot_dir.clone())
            .await
            .map_err(|e| e.into_storage_error(None))?;
        Ok(stored.map(StoredSnapshot::into_snapshot))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{CommittedLeaderId, Membership};

    use super::*;
    use crate::map::MapError;

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn normal(index: u64, command: MapCommand) -> Entry<MapRaft> {
        Entry {
            log_id: log_id(index),
            payload: EntryPayload::Normal(command),
        }
    }

    fn account(name: &str) -> MapCommand {
        MapCommand::CreateAccount {
            name: name.to_owned(),
            now_ms: 1,
        }
    }

    fn membership(index: u64) -> Entry<MapRaft> {
        let nodes = BTreeMap::from([(1, BasicNode::new("127.0.0.1:1"))]);
        Entry {
            log_id: log_id(index),
            payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1])], nodes)),
        }
    }

    #[tokio::test]
    async fn refused_command_is_an_answer_and_still_applied() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut sm = MapStateMachine::open(dir.path().join("snapshots"))
            .await
            .unwrap();
        let reader = sm.reader();
        let answers = sm
            .apply([
                membership(1),
                normal(2, account("AUTH_a")),
                normal(3, account("AUTH_a")),
            ])
            .await
            .unwrap();
        assert_eq!(answers[0], Ok(MapOutcome::Done));
        assert_eq!(answers[1], Ok(MapOutcome::Done));
        assert!(matches!(answers[2], Err(MapError::AccountExists { .. })));
        let (applied, members) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(3)));
        assert_eq!(members.log_id(), &Some(log_id(1)));
        assert_eq!(reader.current().version(), 1);
    }

    #[tokio::test]
    async fn reopen_restores_the_map_of_the_last_built_snapshot() {
        let dir = tempfile::TempDir::new().unwrap();
        let snapshots = dir.path().join("snapshots");
        let mut sm = MapStateMachine::open(&snapshots).await.unwrap();
        sm.apply([membership(1), normal(2, account("AUTH_a"))])
            .await
            .unwrap();
        let built = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        // Applied after the snapshot: gone after a reopen, until openraft re-applies it.
        sm.apply([normal(3, account("AUTH_b"))]).await.unwrap();
        let encoded = sm.reader().current().encode();
        drop(sm);

        let mut reopened = MapStateMachine::open(&snapshots).await.unwrap();
        let (applied, _) = reopened.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(2)));
        assert_eq!(applied, built.meta.last_log_id);
        assert!(reopened.reader().current().account("AUTH_a").is_some());
        assert!(reopened.reader().current().account("AUTH_b").is_none());
        reopened
            .apply([normal(3, account("AUTH_b"))])
            .await
            .unwrap();
        assert_eq!(reopened.reader().current().encode(), encoded);
    }

    #[tokio::test]
    async fn older_snapshot_does_not_overwrite_a_newer_saved_one() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut sm = MapStateMachine::open(dir.path()).await.unwrap();
        sm.apply([membership(1)]).await.unwrap();
        let mut old_builder = sm.get_snapshot_builder().await;
        sm.apply([normal(2, account("AUTH_a"))]).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let old = old_builder.build_snapshot().await.unwrap();
        assert_eq!(old.meta.last_log_id, Some(log_id(1)));
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.last_log_id, Some(log_id(2)));
    }

    #[tokio::test]
    async fn waiting_for_a_newer_map_returns_once_one_is_applied() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut sm = MapStateMachine::open(dir.path()).await.unwrap();
        let reader = sm.reader();
        let waiter = tokio::spawn({
            let reader = reader.clone();
            async move { reader.wait_newer_than(0).await }
        });
        sm.apply([normal(1, account("AUTH_a"))]).await.unwrap();
        let map = waiter.await.unwrap().unwrap();
        assert_eq!(map.version(), 1);
        drop(sm);
        assert_eq!(reader.wait_newer_than(1).await, Err(MapClosed));
    }
}
