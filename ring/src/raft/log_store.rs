//! The Raft log store of one metadata voter: log entries, vote, committed log id and last
//! purged log id, in one redb database file, for openraft's storage-v2 API
//! ([`RaftLogStorage`], [`RaftLogReader`]). Generic over the type config, so it stores
//! whatever entries the cluster map's state machine defines.
//!
//! # Tables
//!
//! Keys of `entries` are redb `u64` keys (8 bytes, ordered as numbers); the other keys are
//! short ASCII names. Entries, votes and log ids are serde_json, as openraft's `serde`
//! feature defines them; the layout version is a `u32` little-endian.
//!
//! ```text
//! table    key              value
//! entries  log index        the entry (C::Entry), serde_json
//! state    "vote"           the last saved vote, serde_json        (absent: none saved)
//!          "committed"      the last saved committed log id, json  (absent: none saved)
//!          "last_purged"    the last purged log id, serde_json     (absent: none purged)
//! format   "version"        layout version u32 LE (1)
//! ```
//!
//! **Invariants:**
//! - Every entry is stored under its own log index; reads check it.
//! - Every stored entry's index is above the last purged log id's: a purge records the log
//!   id and deletes the entries it covers in one transaction, and the last purged log id
//!   never moves backwards.
//! - Durable before acknowledged: each mutation is one write transaction committed with
//!   [`Durability::Immediate`] before the call returns or the append callback fires.
//! - Mutations reach the database in the order they were called: each holds the store's
//!   write lock from before its transaction begins until it has committed, and the lock
//!   travels into the blocking task, so dropping a caller's future cannot let a later write
//!   overtake an earlier one still running.
//! - No redb call runs on a tokio worker: every one runs on tokio's blocking pool.
//! - Bytes read back are decoded, never trusted: damage is a [`LogStoreError`], never a
//!   panic.
//!
//! Openraft keeps the log consecutive by the calls it makes (append after the last entry,
//! truncate a suffix, purge a prefix); the store does not check it again on append.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogId, LogState, NodeId, OptionalSend, RaftLogId,
    RaftLogReader, RaftTypeConfig, StorageError, StorageIOError, Vote,
};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use tracing::{debug, info};

/// Log index → the entry, serde_json.
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");

/// [`VOTE`], [`COMMITTED`], [`LAST_PURGED`] → serde_json values.
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");

/// `"version"` → the layout version, `u32 LE`.
const FORMAT: TableDefinition<&str, &[u8]> = TableDefinition::new("format");

const FORMAT_KEY: &str = "version";
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// The layout version this build writes and the newest it reads.
pub const LAYOUT_VERSION: u32 = 1;

/// The most memory redb's page cache may take: the log of the cluster map is small, and
/// the storage node's index stores share the machine.
const CACHE_SIZE_BYTES: usize = 64 << 20;

/// Why a log store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The database file could not be opened, created, checked or initialized.
    #[error("open raft log database {}", path.display())]
    Database {
        /// The file.
        path: PathBuf,
        /// What the database reported.
        #[source]
        source: redb::Error,
    },
    /// The file was written by a newer Nimbus.
    #[error(
        "raft log database {}: layout version {version} was written by a newer Nimbus; this one reads up to version {supported}",
        path.display()
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// The file's layout version.
        version: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// The layout version record is not a version this store writes.
    #[error("raft log database {}: the layout version record is damaged", path.display())]
    CorruptFormat {
        /// The file.
        path: PathBuf,
    },
    /// The blocking task opening the file panicked or was cancelled.
    #[error("open raft log database {}: the opening task failed", path.display())]
    Task {
        /// The file.
        path: PathBuf,
        /// What the runtime reported.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Why an operation of an open log store failed. Openraft sees it as a [`StorageError`]
/// (see [`LogStoreError::into_storage_error`]), which stops the Raft node: the voter must
/// be repaired or rebuilt from its peers.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// The database failed (an I/O error, a full disk, a failed commit). For a write,
    /// nothing of it was stored.
    #[error("raft log database: {op} failed")]
    Database {
        /// What the store was doing.
        op: &'static str,
        /// What the database reported.
        #[source]
        source: redb::Error,
    },
    /// A value to store could not be encoded as JSON.
    #[error("encode {what} as JSON")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },
    /// A stored log entry does not decode.
    #[error("the stored log entry at index {index} does not decode")]
    CorruptEntry {
        /// The index it is stored under.
        index: u64,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },
    /// A stored log entry carries another index than the one it is stored under.
    #[error("the log entry stored at index {index} has log index {found}")]
    MisplacedEntry {
        /// The index it is stored under.
        index: u64,
        /// The index in its log id.
        found: u64,
    },
    /// A stored vote, committed or last purged log id does not decode.
    #[error("the stored {key} does not decode")]
    CorruptState {
        /// Which one: `"vote"`, `"committed"` or `"last_purged"`.
        key: &'static str,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },
    /// A blocking task of the store panicked or was cancelled by a runtime shutdown.
    #[error("a raft log store task failed")]
    Task {
        /// What the runtime reported.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl LogStoreError {
    /// Returns the openraft error for this failure while doing `verb` to `subject`. Damage
    /// to one stored entry names that entry's index instead of `subject`.
    #[must_use]
    pub fn into_storage_error<NID: NodeId>(
        self,
        subject: ErrorSubject<NID>,
        verb: ErrorVerb,
    ) -> StorageError<NID> {
        let subject = match &self {
            LogStoreError::CorruptEntry { index, .. }
            | LogStoreError::MisplacedEntry { index, .. } => ErrorSubject::LogIndex(*index),
            _ => subject,
        };
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}

/// The Raft log store of one voter (see the module documentation). Openraft owns it and
/// calls it through [`RaftLogStorage`]; replication tasks read through [`LogReader`]s.
pub struct LogStore<C: RaftTypeConfig> {
    db: Arc<Database>,
    path: PathBuf,
    /// Serializes mutations in call order; see the module invariants.
    write_lock: Arc<Mutex<()>>,
    _config: PhantomData<fn() -> C>,
}

impl<C: RaftTypeConfig> fmt::Debug for LogStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<C: RaftTypeConfig> LogStore<C> {
    /// Opens the log store in the database file at `path`, creating the file and its
    /// tables when absent. The parent directory must exist.
    ///
    /// # Errors
    /// [`OpenError`] when the file cannot be opened or initialized, or was written by a
    /// newer Nimbus.
    ///
    /// # Cancel safety
    /// Not cancel safe: the file is opened on the blocking pool, and dropping the future
    /// does not stop that; a new open of the same file fails until it has finished.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, OpenError> {
        let path = path.into();
        let task_path = path.clone();
        let db = tokio::task::spawn_blocking(move || open_database(&task_path))
            .await
            .map_err(|source| OpenError::Task {
                path: path.clone(),
                source,
            })??;
        info!(path = %path.display(), "raft log store opened");
        Ok(LogStore {
            db: Arc::new(db),
            path,
            write_lock: Arc::new(Mutex::new(())),
            _config: PhantomData,
        })
    }

    /// Returns the database file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns a reader of the log, sharing the database.
    #[must_use]
    pub fn reader(&self) -> LogReader<C> {
        LogReader {
            db: Arc::clone(&self.db),
            _config: PhantomData,
        }
    }

    /// Runs `f` on the blocking pool holding the write lock until it has returned.
    async fn write<T, F>(&self, f: F) -> Result<T, LogStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, LogStoreError> + Send + 'static,
    {
        let guard = Arc::clone(&self.write_lock).lock_owned().await;
        let db = Arc::clone(&self.db);
        blocking(move || {
            let _held_until_committed = guard;
            f(&db)
        })
        .await
    }

    /// Runs `f` on the blocking pool, with no lock: redb reads see the last commit.
    async fn read<T, F>(&self, f: F) -> Result<T, LogStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, LogStoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        blocking(move || f(&db)).await
    }
}

/// Reads log entries for openraft's replication tasks. Cheap to clone; reads see every
/// mutation the [`LogStore`] has returned from.
pub struct LogReader<C: RaftTypeConfig> {
    db: Arc<Database>,
    _config: PhantomData<fn() -> C>,
}

impl<C: RaftTypeConfig> Clone for LogReader<C> {
    fn clone(&self) -> Self {
        LogReader {
            db: Arc::clone(&self.db),
            _config: PhantomData,
        }
    }
}

impl<C: RaftTypeConfig> fmt::Debug for LogReader<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogReader").finish_non_exhaustive()
    }
}

impl<C> RaftLogReader<C> for LogReader<C>
where
    C: RaftTypeConfig,
    C::Entry: 'static,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        let db = Arc::clone(&self.db);
        entries_in::<C>(db, index_range(&range)).await
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: 'static,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        let db = Arc::clone(&self.db);
        entries_in::<C>(db, index_range(&range)).await
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: 'static,
{
    type LogReader = LogReader<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        let (last_purged_log_id, last_entry) = self
            .read(|db| {
                let txn = db.begin_read().map_err(database("read log state"))?;
                let state = txn.open_table(STATE).map_err(database("read log state"))?;
                let last_purged = get_json::<LogId<C::NodeId>>(&state, LAST_PURGED)?;
                let entries = txn
                    .open_table(ENTRIES)
                    .map_err(database("read log state"))?;
                let last = entries.last().map_err(database("read log state"))?;
                let last_entry = match last {
                    Some((index, bytes)) => {
                        let entry = decode_entry::<C>(index.value(), bytes.value())?;
                        Some(entry.get_log_id().clone())
                    }
                    None => None,
                };
                Ok((last_purged, last_entry))
            })
            .await
            .map_err(|e| e.into_storage_error(ErrorSubject::Logs, ErrorVerb::Read))?;
        // With every entry purged, the last log id is the last purged one.
        let last_log_id = last_entry.or_else(|| last_purged_log_id.clone());
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let fail = |e: LogStoreError| e.into_storage_error(ErrorSubject::Vote, ErrorVerb::Write);
        let bytes = encode("vote", vote).map_err(fail)?;
        self.write(move |db| put_state(db, "save vote", VOTE, Some(&bytes)))
            .await
            .map_err(fail)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        self.read(|db| read_state(db, "read vote", VOTE))
            .await
            .map_err(|e| e.into_storage_error(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), StorageError<C::NodeId>> {
        let fail = |e: LogStoreError| e.into_storage_error(ErrorSubject::Store, ErrorVerb::Write);
        let bytes = committed
            .as_ref()
            .map(|log_id| encode("committed log id", log_id))
            .transpose()
            .map_err(fail)?;
        self.write(move |db| put_state(db, "save committed", COMMITTED, bytes.as_deref()))
            .await
            .map_err(fail)
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        self.read(|db| read_state(db, "read committed", COMMITTED))
            .await
            .map_err(|e| e.into_storage_error(ErrorSubject::Store, ErrorVerb::Read))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<C::Entry> = entries.into_iter().collect();
        if !entries.is_empty() {
            self.write(move |db| append_entries::<C>(db, &entries))
                .await
                .map_err(|e| e.into_storage_error(ErrorSubject::Logs, ErrorVerb::Write))?;
        }
        // Only now: the entries are committed, durably.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let since = log_id.index;
        self.write(move |db| {
            commit(db, "truncate log", |txn| {
                let mut entries = txn.open_table(ENTRIES).map_err(database("truncate log"))?;
                entries
                    .retain_in(since.., |_, _| false)
                    .map_err(database("truncate log"))
            })
        })
        .await
        .map_err(|e| e.into_storage_error(ErrorSubject::Log(log_id.clone()), ErrorVerb::Delete))?;
        debug!(since, "raft log truncated");
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let subject = ErrorSubject::Log(log_id.clone());
        let upto = log_id.index;
        let bytes = encode("last purged log id", &log_id)
            .map_err(|e| e.into_storage_error(subject.clone(), ErrorVerb::Delete))?;
        self.write(move |db| purge_entries::<C>(db, &log_id, &bytes))
            .await
            .map_err(|e| e.into_storage_error(subject, ErrorVerb::Delete))?;
        debug!(upto, "raft log purged");
        Ok(())
    }
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, LogStoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, LogStoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| LogStoreError::Task { source })?
}

/// Returns a mapper of any redb error into [`LogStoreError::Database`].
fn database<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> LogStoreError {
    move |e| LogStoreError::Database {
        op,
        source: e.into(),
    }
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, LogStoreError> {
    serde_json::to_vec(value).map_err(|source| LogStoreError::Encode { what, source })
}

/// Runs `f` in one write transaction and commits it durably: when this returns `Ok`, what
/// `f` wrote survives a crash. When `f` fails, the transaction is dropped, so aborted.
fn commit<T>(
    db: &Database,
    op: &'static str,
    f: impl FnOnce(&WriteTransaction) -> Result<T, LogStoreError>,
) -> Result<T, LogStoreError> {
    let mut txn = db.begin_write().map_err(database(op))?;
    txn.set_durability(Durability::Immediate)
        .map_err(database(op))?;
    let value = f(&txn)?;
    txn.commit().map_err(database(op))?;
    Ok(value)
}

/// Returns the log index range `start..end` of `range`, or `None` when it holds no index
/// (including reversed ranges, which redb would refuse).
fn index_range(range: &impl RangeBounds<u64>) -> Option<(u64, Bound<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    match range.end_bound() {
        Bound::Included(&e) if e < start => None,
        Bound::Excluded(&e) if e <= start => None,
        end => Some((start, end.cloned())),
    }
}

/// Reads the entries in `range` (from [`index_range`]) on the blocking pool.
async fn entries_in<C>(
    db: Arc<Database>,
    range: Option<(u64, Bound<u64>)>,
) -> Result<Vec<C::Entry>, StorageError<C::NodeId>>
where
    C: RaftTypeConfig,
    C::Entry: 'static,
{
    let Some((start, end)) = range else {
        return Ok(Vec::new());
    };
    blocking(move || {
        let txn = db.begin_read().map_err(database("read log entries"))?;
        let table = txn
            .open_table(ENTRIES)
            .map_err(database("read log entries"))?;
        let rows = table
            .range::<u64>((Bound::Included(start), end))
            .map_err(database("read log entries"))?;
        let mut entries = Vec::new();
        for row in rows {
            let (index, bytes) = row.map_err(database("read log entries"))?;
            entries.push(decode_entry::<C>(index.value(), bytes.value())?);
        }
        Ok(entries)
    })
    .await
    .map_err(|e| e.into_storage_error(ErrorSubject::Logs, ErrorVerb::Read))
}

/// Decodes the entry stored under `index` and checks it belongs there.
fn decode_entry<C: RaftTypeConfig>(index: u64, bytes: &[u8]) -> Result<C::Entry, LogStoreError> {
    let entry: C::Entry = serde_json::from_slice(bytes)
        .map_err(|source| LogStoreError::CorruptEntry { index, source })?;
    let found = entry.get_log_id().index;
    if found != index {
        return Err(LogStoreError::MisplacedEntry { index, found });
    }
    Ok(entry)
}

/// Stores `entries` under their indexes in one durable transaction.
fn append_entries<C: RaftTypeConfig>(
    db: &Database,
    entries: &[C::Entry],
) -> Result<(), LogStoreError> {
    const OP: &str = "append log entries";
    let encoded = entries
        .iter()
        .map(|entry| Ok((entry.get_log_id().index, encode("log entry", entry)?)))
        .collect::<Result<Vec<_>, LogStoreError>>()?;
    commit(db, OP, |txn| {
        let mut table = txn.open_table(ENTRIES).map_err(database(OP))?;
        for (index, bytes) in &encoded {
            table
                .insert(*index, bytes.as_slice())
                .map_err(database(OP))?;
        }
        Ok(())
    })
}

/// Deletes the entries up to `log_id` and records it as last purged, in one durable
/// transaction. A purge behind the recorded one changes nothing.
fn purge_entries<C: RaftTypeConfig>(
    db: &Database,
    log_id: &LogId<C::NodeId>,
    encoded: &[u8],
) -> Result<(), LogStoreError> {
    const OP: &str = "purge log";
    commit(db, OP, |txn| {
        let mut state = txn.open_table(STATE).map_err(database(OP))?;
        let current = get_json::<LogId<C::NodeId>>(&state, LAST_PURGED)?;
        if current.is_some_and(|current| current >= *log_id) {
            return Ok(());
        }
        state.insert(LAST_PURGED, encoded).map_err(database(OP))?;
        let mut entries = txn.open_table(ENTRIES).map_err(database(OP))?;
        entries
            .retain_in(..=log_id.index, |_, _| false)
            .map_err(database(OP))
    })
}

/// Sets (`Some`) or removes (`None`) one [`STATE`] value in one durable transaction.
fn put_state(
    db: &Database,
    op: &'static str,
    key: &'static str,
    value: Option<&[u8]>,
) -> Result<(), LogStoreError> {
    commit(db, op, |txn| {
        let mut state = txn.open_table(STATE).map_err(database(op))?;
        match value {
            Some(bytes) => state.insert(key, bytes).map(drop),
            None => state.remove(key).map(drop),
        }
        .map_err(database(op))
    })
}

/// Reads one [`STATE`] value in its own read transaction.
fn read_state<T: DeserializeOwned>(
    db: &Database,
    op: &'static str,
    key: &'static str,
) -> Result<Option<T>, LogStoreError> {
    let txn = db.begin_read().map_err(database(op))?;
    let state = txn.open_table(STATE).map_err(database(op))?;
    get_json(&state, key)
}

/// Decodes the JSON value of `key` in a [`STATE`] table, if present.
fn get_json<T: DeserializeOwned>(
    state: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &'static str,
) -> Result<Option<T>, LogStoreError> {
    let Some(guard) = state.get(key).map_err(database("read log state"))? else {
        return Ok(None);
    };
    serde_json::from_slice(guard.value())
        .map(Some)
        .map_err(|source| LogStoreError::CorruptState { key, source })
}

/// Opens or creates the database, creates its tables and checks its layout version.
fn open_database(path: &Path) -> Result<Database, OpenError> {
    let failed = |e: redb::Error| OpenError::Database {
        path: path.to_path_buf(),
        source: e,
    };
    let db = Database::builder()
        .set_cache_size(CACHE_SIZE_BYTES)
        .create(path)
        .map_err(|e| failed(e.into()))?;
    let mut txn = db.begin_write().map_err(|e| failed(e.into()))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| failed(e.into()))?;
    {
        let mut format = txn.open_table(FORMAT).map_err(|e| failed(e.into()))?;
        txn.open_table(ENTRIES).map_err(|e| failed(e.into()))?;
        txn.open_table(STATE).map_err(|e| failed(e.into()))?;
        let found = format
            .get(FORMAT_KEY)
            .map_err(|e| failed(e.into()))?
            .map(|v| v.value().to_vec());
        match found {
            None => {
                format
                    .insert(FORMAT_KEY, LAYOUT_VERSION.to_le_bytes().as_slice())
                    .map_err(|e| failed(e.into()))?;
            }
            Some(bytes) => {
                let corrupt = || OpenError::CorruptFormat {
                    path: path.to_path_buf(),
                };
                let bytes: [u8; 4] = bytes.as_slice().try_into().map_err(|_| corrupt())?;
                let version = u32::from_le_bytes(bytes);
                if version == 0 {
                    return Err(corrupt());
                }
                if version > LAYOUT_VERSION {
                    return Err(OpenError::NewerFormat {
                        path: path.to_path_buf(),
                        version,
                        supported: LAYOUT_VERSION,
                    });
                }
            }
        }
    }
    txn.commit().map_err(|e| failed(e.into()))?;
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_range_keeps_bounds_of_a_forward_range() {
        assert_eq!(index_range(&(3..7)), Some((3, Bound::Excluded(7))));
        assert_eq!(index_range(&(3..=7)), Some((3, Bound::Included(7))));
        assert_eq!(index_range(&(3..)), Some((3, Bound::Unbounded)));
        assert_eq!(index_range(&..), Some((0, Bound::Unbounded)));
        assert_eq!(index_range(&(5..=5)), Some((5, Bound::Included(5))));
    }

    #[test]
    fn index_range_is_none_for_empty_and_reversed_ranges() {
        // As tuples of bounds: openraft passes any `RangeBounds`, reversed ones included.
        let empty = [
            (Bound::Included(5), Bound::Excluded(5)),
            (Bound::Included(7), Bound::Excluded(3)),
            (Bound::Included(5), Bound::Included(4)),
            (Bound::Excluded(5), Bound::Included(5)),
            (Bound::Excluded(u64::MAX), Bound::Unbounded),
        ];
        for range in empty {
            assert_eq!(index_range(&range), None, "{range:?}");
        }
    }
}
