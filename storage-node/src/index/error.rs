//! The index store's errors: one enum per operation where callers branch ([`ApplyError`],
//! [`ReplicateError`], [`OpenError`], [`CloseError`]), sharing [`IndexError`] for what the
//! store itself failed at.
//!
//! The line between "stop" and "retry": an answer about the request (a precondition that does
//! not hold, an entry out of bounds) is final, and the same request gets the same answer
//! anywhere; an [`IndexError`] is about this device, and the request may succeed on another
//! replica or once the device is repaired.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use nimbus_core::index::{EntryDecodeError, EntryError, IndexRecord, ShardId};

/// A failure of the embedded database, shared by every request of a write batch it failed.
/// Its message and source chain are the database's; its type is not part of the API.
#[derive(Debug, Clone)]
pub struct StorageFailure(Arc<redb::Error>);

impl StorageFailure {
    pub(super) fn new(error: impl Into<redb::Error>) -> StorageFailure {
        StorageFailure(Arc::new(error.into()))
    }
}

impl fmt::Display for StorageFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StorageFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// What is wrong with bytes found in the index database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// An entry value too short to hold its sequence number.
    #[error("an entry value of {len} bytes is too short to hold a sequence number")]
    ShortEntryValue {
        /// Its length.
        len: usize,
    },
    /// The entry does not decode.
    #[error("the entry does not decode")]
    Entry(#[from] EntryDecodeError),
    /// A stored object key is not UTF-8.
    #[error("a stored object key is not UTF-8")]
    KeyNotUtf8,
    /// A key found in a shard's range does not start with the shard's prefix.
    #[error("a key in the shard's range belongs to another shard")]
    ForeignKey,
    /// A sequence key whose sequence number is not 8 bytes.
    #[error("a sequence key holds {len} bytes after the shard prefix, not 8")]
    SeqKeyLength {
        /// The bytes after the prefix.
        len: usize,
    },
    /// A last-sequence value that is not 8 bytes.
    #[error("the shard's last sequence number is {len} bytes long, not 8")]
    LastSeqLength {
        /// Its length.
        len: usize,
    },
    /// The shard's last sequence number is `u64::MAX`: no write can follow it.
    #[error("the shard's sequence numbers are exhausted")]
    SeqExhausted,
}

/// Why the index store failed an operation: the device's fault, not the request's.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The database failed (an I/O error, a full disk, a failed commit). For a write, nothing
    /// of the request's batch was stored.
    #[error("index shard {shard}: {op} failed")]
    Storage {
        /// The shard being read or written.
        shard: ShardId,
        /// What the store was doing.
        op: &'static str,
        /// What the database reported.
        #[source]
        source: StorageFailure,
    },
    /// Stored bytes are not what this store writes: the entry must be rebuilt from a replica.
    #[error("index shard {shard}: the stored entry for key {key:?} is corrupt")]
    Corrupt {
        /// The shard.
        shard: ShardId,
        /// The object key (lossily decoded when the key itself is damaged).
        key: String,
        /// What is wrong.
        #[source]
        source: Corruption,
    },
    /// The shard id breaks a bound ([`ShardId::validate`]): no such shard can exist.
    #[error("invalid index shard {shard}")]
    InvalidShard {
        /// The shard id given.
        shard: ShardId,
        /// Which bound.
        #[source]
        source: EntryError,
    },
    /// The store's writer thread is gone: it was closed or has failed.
    #[error("the index store is closed")]
    Closed,
    /// A blocking read task of the store panicked or was cancelled by a runtime shutdown.
    #[error("an index store task failed")]
    Task {
        /// What the runtime reported.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Why [`IndexStore::apply`](super::IndexStore::apply) did not store an entry.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The precondition does not hold for the current entry: final for this request (S3's
    /// 412), and retrying it gives the same answer until the entry changes.
    #[error("index shard {shard}: the precondition does not hold for key {key:?}")]
    PreconditionFailed {
        /// The shard.
        shard: ShardId,
        /// The object key.
        key: String,
        /// The entry the precondition was checked against (a tombstone included), if any.
        current: Option<Box<IndexRecord>>,
    },
    /// The key or entry breaks a bound: final for this request.
    #[error("index shard {shard}: invalid write of key {key:?}")]
    Invalid {
        /// The shard.
        shard: ShardId,
        /// The object key.
        key: String,
        /// Which bound.
        #[source]
        source: EntryError,
    },
    /// The store failed: the write may succeed on another replica or later.
    #[error(transparent)]
    Index(#[from] IndexError),
}

impl ApplyError {
    /// Returns whether the failure is the device's, not the request's: the same request may
    /// succeed elsewhere or later. Precondition failures and invalid writes are final.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, ApplyError::Index(_))
    }
}

/// Why [`IndexStore::apply_replicated`](super::IndexStore::apply_replicated) did not store a
/// record.
#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    /// The key or entry breaks a bound: final for this record.
    #[error("index shard {shard}: invalid replicated write of key {key:?}")]
    Invalid {
        /// The shard.
        shard: ShardId,
        /// The object key.
        key: String,
        /// Which bound.
        #[source]
        source: EntryError,
    },
    /// A sequence number no primary assigns (0, or `u64::MAX`, after which no write could
    /// follow): final for this record.
    #[error("index shard {shard}: sequence number {seq} of key {key:?} is out of range")]
    InvalidSeq {
        /// The shard.
        shard: ShardId,
        /// The object key.
        key: String,
        /// The sequence number given.
        seq: u64,
    },
    /// The store failed: the record may be stored later.
    #[error(transparent)]
    Index(#[from] IndexError),
}

impl ReplicateError {
    /// Returns whether the failure is the device's, not the record's (see
    /// [`ApplyError::is_retryable`]).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, ReplicateError::Index(_))
    }
}

/// Why an index store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The database file could not be opened, created, checked or initialized.
    #[error("open index database {}", path.display())]
    Database {
        /// The file.
        path: PathBuf,
        /// What the database reported.
        #[source]
        source: StorageFailure,
    },
    /// The file was written by a newer Nimbus.
    #[error(
        "index database {}: layout version {version} was written by a newer Nimbus; this one reads up to version {supported}",
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
    /// The layout version record is not 4 bytes.
    #[error("index database {}: the layout version record is damaged", path.display())]
    CorruptFormat {
        /// The file.
        path: PathBuf,
    },
    /// The write-ahead log beside the database could not be opened or read.
    #[error("open index log {}", path.display())]
    Log {
        /// The log file.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// A frame of the log has a valid checksum but changes that do not parse: written by a
    /// newer Nimbus, or damaged in a way its checksum missed.
    #[error("index log {}: a frame does not parse", path.display())]
    CorruptLog {
        /// The log file.
        path: PathBuf,
    },
    /// The writer thread could not be started.
    #[error("start the index writer thread")]
    SpawnWriter {
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// The blocking task opening the file panicked or was cancelled.
    #[error("open index database {}: the opening task failed", path.display())]
    Task {
        /// The file.
        path: PathBuf,
        /// What the runtime reported.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Why closing an index store did not end cleanly. Writes acknowledged before the close were
/// durable when acknowledged, whatever this says.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    /// The writer thread panicked; the requests it held were answered [`IndexError::Closed`].
    #[error("the index writer thread panicked")]
    WriterPanicked,
    /// The database reported an error while closing.
    #[error("close index database {}", path.display())]
    Database {
        /// The file.
        path: PathBuf,
        /// What the database reported.
        #[source]
        source: StorageFailure,
    },
    /// A blocking task of the close panicked or was cancelled.
    #[error("close index database {}: a closing task failed", path.display())]
    Task {
        /// The file.
        path: PathBuf,
        /// What the runtime reported.
        #[source]
        source: tokio::task::JoinError,
    },
}
