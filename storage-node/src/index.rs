//! The index store of one device: the index entries of every index shard the device holds,
//! in one redb database, with each shard's sequence numbers and conditional writes.
//!
//! # Tables
//!
//! Every key starts with its shard's prefix,
//! `u16 BE len | account | u16 BE len | container | shard u16 BE`, a prefix-free code: the
//! keys of one shard are one contiguous range, and no container or shard bleeds into another
//! (container `a` and `ab`, shard 1 and 2). Integers in keys are big-endian so they sort as
//! numbers; integers in values are little-endian, as in every Nimbus format.
//!
//! ```text
//! table    key                          value
//! entries  prefix | object key bytes    seq u64 LE | IndexEntry encoding (nimbus_core::index)
//! seqs     prefix | seq u64 BE          object key bytes
//! shards   prefix                       last seq u64 LE
//! format   "version"                    layout version u32 LE (1)
//! ```
//!
//! `entries` serves reads and listings in key order; `seqs` serves "entries newer than seq"
//! (peering, anti-entropy) in sequence order; `shards` holds each shard's last sequence number.
//!
//! **Invariants:**
//! - Each stored entry has exactly one `seqs` row, the row of its own sequence number: a write
//!   that replaces an entry removes the old entry's row in the same transaction. (After
//!   replicas diverged, a row may outlive its entry; readers skip a row whose entry carries
//!   another number.)
//! - A shard's last sequence number is at least every sequence number stored in it, and a
//!   primary's write takes the next one: sequence numbers of a shard never repeat on a primary.
//! - Nothing is acknowledged before it is durable: a batch of writes is appended to the
//!   write-ahead log beside the database and synced (group commit, see `writer` and `wal`)
//!   before any caller hears of them, and before any reader can see them.
//! - No redb call runs on a tokio worker: writes run on the store's writer thread, reads on
//!   tokio's blocking pool, at most [`MAX_CONCURRENT_READS`] at once.
//! - Bytes read back are decoded, never trusted: damage is an [`IndexError::Corrupt`].

mod error;
mod layout;
mod read;
mod wal;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use nimbus_core::ids::VersionId;
use nimbus_core::index::{IndexEntry, IndexRecord, ShardId, validate_key};
use redb::Database;
use tokio::sync::{Semaphore, mpsc, oneshot};

pub use error::{
    ApplyError, CloseError, Corruption, IndexError, OpenError, ReplicateError, StorageFailure,
};

use layout::ShardPrefix;
use writer::{ApplyWrite, Counters, DropWrite, Job, PurgeWrite, ReplicatedWrite, Request};

/// The most records one read returns, whatever limit is asked for.
pub const MAX_RECORDS_PER_READ: usize = 10_000;

/// The most reads of one store running at once on the blocking pool.
pub const MAX_CONCURRENT_READS: u32 = 64;

/// How many writes may wait for the writer thread; more wait for room (backpressure).
const WRITE_QUEUE: usize = writer::MAX_BATCH;

/// What a write requires of the key's current entry, checked in the transaction that writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Nothing.
    None,
    /// No live entry: the key is absent or its entry is a tombstone (`If-None-Match: *`).
    IfNoneMatch,
    /// A live entry whose ETag is exactly this (`If-Match: etag`).
    IfMatch(String),
    /// An entry, tombstone or not, of exactly this version (compare-and-swap on versions).
    IfVersion(VersionId),
}

impl Precondition {
    /// Returns whether the precondition holds when `current` is the key's entry.
    #[must_use]
    pub fn admits(&self, current: Option<&IndexEntry>) -> bool {
        match self {
            Precondition::None => true,
            Precondition::IfNoneMatch => current.is_none_or(IndexEntry::is_tombstone),
            Precondition::IfMatch(etag) => {
                current.is_some_and(|e| !e.is_tombstone() && e.etag == *etag)
            }
            Precondition::IfVersion(version) => current.is_some_and(|e| e.version == *version),
        }
    }
}

/// Which records of a shard a listing returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only keys starting with this (all keys when empty).
    pub prefix: String,
    /// Only keys sorting after this one (S3's `start-after`, Swift's `marker`).
    pub start_after: Option<String>,
    /// The most records returned (capped at [`MAX_RECORDS_PER_READ`]).
    pub limit: usize,
    /// Whether tombstones are returned; they never count towards the limit when not.
    pub include_tombstones: bool,
}

/// Counters of the writer thread since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Writes stored (replicated records that were ignored, failed preconditions and failed
    /// batches excluded).
    pub writes: u64,
    /// Batches made durable (each one fsync); below `writes` when writes share commits.
    pub commits: u64,
    /// Of those, batches committed durably to the database (checkpoints): the others went
    /// through the write-ahead log.
    pub checkpoints: u64,
}

/// Sizes and checks of an index store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexOptions {
    /// Bytes of memory the database may use to cache pages. Default 128 MiB.
    pub cache_size_bytes: u64,
    /// Whether opening verifies the checksum of every page, so that a file damaged outside
    /// the store fails to open instead of failing later. It reads the whole file. Default on.
    pub check_integrity_on_open: bool,
    /// The most bytes the write-ahead log holds before the database commits durably (a
    /// checkpoint) and the log starts again; also the most an open replays. Default 16 MiB.
    pub wal_bytes: u64,
}

/// The default of [`IndexOptions::wal_bytes`].
pub const DEFAULT_WAL_BYTES: u64 = 16 << 20;

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            cache_size_bytes: 128 << 20,
            check_integrity_on_open: true,
            wal_bytes: DEFAULT_WAL_BYTES,
        }
    }
}

/// The index store of one device (see the module documentation).
///
/// Dropping the store stops its writer thread once it has written every request it holds; the
/// database file closes when the thread ends. Use [`IndexStore::close`] to wait for that, for
/// example before opening the same path again.
pub struct IndexStore {
    path: PathBuf,
    db: Arc<Database>,
    writes: mpsc::Sender<Request>,
    writer: JoinHandle<()>,
    reads: Arc<Semaphore>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for IndexStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexStore")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl IndexStore {
    /// Opens the index database at `path`, creating it if absent, with default options.
    ///
    /// # Errors
    /// See [`IndexStore::open_with`].
    pub async fn open(path: impl AsRef<Path>) -> Result<IndexStore, OpenError> {
        IndexStore::open_with(path, IndexOptions::default()).await
    }

    /// Opens the index database at `path`, creating it if absent, replays its write-ahead log
    /// (`path` with extension `wal`), and starts its writer thread.
    ///
    /// # Errors
    /// [`OpenError`] when the file or its log cannot be opened or created (another process or
    /// store has it open, it is damaged, it was written by a newer Nimbus), or the thread
    /// cannot start.
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: IndexOptions,
    ) -> Result<IndexStore, OpenError> {
        let path = path.as_ref().to_path_buf();
        let (db, wal) = tokio::task::spawn_blocking({
            let path = path.clone();
            move || {
                let db = layout::open_database(&path, options)?;
                let wal = wal::Wal::open(&path, &db, options.wal_bytes)?;
                Ok::<_, OpenError>((db, wal))
            }
        })
        .await
        .map_err(|source| OpenError::Task {
            path: path.clone(),
            source,
        })??;
        let db = Arc::new(db);
        let (writes, rx) = mpsc::channel(WRITE_QUEUE);
        let counters = Arc::new(Counters::default());
        let writer = std::thread::Builder::new()
            .name("index-writer".to_owned())
            .spawn({
                let db = Arc::clone(&db);
                let counters = Arc::clone(&counters);
                move || writer::run(db, wal, rx, counters)
            })
            .map_err(|source| OpenError::SpawnWriter { source })?;
        Ok(IndexStore {
            path,
            db,
            writes,
            writer,
            reads: Arc::new(Semaphore::new(MAX_CONCURRENT_READS as usize)),
            counters,
        })
    }

    /// Returns the path of the database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `entry` for `key` as the shard's primary: in one transaction, checks `cond`
    /// against the current entry, gives the write the shard's next sequence number and stores
    /// it, replacing any entry the key had. Returns the sequence number once it is durable.
    ///
    /// # Errors
    /// [`ApplyError::PreconditionFailed`] with the current entry when `cond` does not hold,
    /// [`ApplyError::Invalid`] when the shard id, key or entry breaks a bound, and
    /// [`ApplyError::Index`] when the store failed (see [`ApplyError::is_retryable`]).
    ///
    /// # Cancel safety
    /// Not cancel safe: once the request is queued, dropping the future does not withdraw
    /// it. The write may still be stored (unacknowledged), as after a timeout.
    pub async fn apply(
        &self,
        shard: &ShardId,
        key: &str,
        entry: IndexEntry,
        cond: Precondition,
    ) -> Result<u64, ApplyError> {
        self.apply_from(shard, key, entry, cond, 0).await
    }

    /// As [`IndexStore::apply`], giving the write a sequence number of at least
    /// `seq_floor`. A primary appointed in a later ring epoch starts its numbers above
    /// every number an earlier primary could have given (`epoch << 32`), so that a write
    /// the earlier primary never got acknowledged cannot share a number with a new one.
    ///
    /// # Errors
    /// As [`IndexStore::apply`].
    ///
    /// # Cancel safety
    /// As [`IndexStore::apply`].
    pub async fn apply_from(
        &self,
        shard: &ShardId,
        key: &str,
        entry: IndexEntry,
        cond: Precondition,
        seq_floor: u64,
    ) -> Result<u64, ApplyError> {
        let invalid = |source| ApplyError::Invalid {
            shard: shard.clone(),
            key: key.to_owned(),
            source,
        };
        let prefix = ShardPrefix::new(shard).map_err(invalid)?;
        validate_key(key).map_err(invalid)?;
        entry.validate().map_err(invalid)?;
        let write = ApplyWrite {
            shard: shard.clone(),
            prefix,
            key: key.to_owned(),
            entry: entry.encode(),
            cond,
            seq_floor,
        };
        let (reply, answer) = oneshot::channel();
        self.send(Request::Apply(Job::new(write, reply))).await?;
        answer.await.map_err(|_| IndexError::Closed)?
    }

    /// Stores a record the shard's primary wrote, as one of its replicas. Idempotent: a record
    /// whose sequence number is not above the one stored for its key is ignored. Raises the
    /// shard's last sequence number to the record's. Returns whether the record was stored,
    /// once it is durable.
    ///
    /// # Errors
    /// [`ReplicateError::Invalid`] or [`ReplicateError::InvalidSeq`] when the record breaks a
    /// bound, [`ReplicateError::Index`] when the store failed.
    ///
    /// # Cancel safety
    /// Not cancel safe, as [`IndexStore::apply`].
    pub async fn apply_replicated(
        &self,
        shard: &ShardId,
        record: IndexRecord,
    ) -> Result<bool, ReplicateError> {
        let IndexRecord { seq, key, entry } = record;
        let prefix = match ShardPrefix::new(shard)
            .and_then(|prefix| validate_key(&key).map(|()| prefix))
            .and_then(|prefix| entry.validate().map(|()| prefix))
        {
            Ok(prefix) => prefix,
            Err(source) => {
                return Err(ReplicateError::Invalid {
                    shard: shard.clone(),
                    key,
                    source,
                });
            }
        };
        if seq == 0 || seq == u64::MAX {
            return Err(ReplicateError::InvalidSeq {
                shard: shard.clone(),
                key,
                seq,
            });
        }
        let write = ReplicatedWrite {
            shard: shard.clone(),
            prefix,
            key,
            seq,
            entry: entry.encode(),
        };
        let (reply, answer) = oneshot::channel();
        self.send(Request::Replicate(Job::new(write, reply)))
            .await?;
        answer.await.map_err(|_| IndexError::Closed)?
    }

    /// Returns the record stored for `key`, tombstones included: callers decide what a
    /// tombstone means to them.
    ///
    /// # Errors
    /// [`IndexError`] when the shard id is invalid, the store failed or the entry is corrupt.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn get(&self, shard: &ShardId, key: &str) -> Result<Option<IndexRecord>, IndexError> {
        let key = key.to_owned();
        self.read(shard, move |db, shard, prefix| {
            read::get(db, shard, prefix, &key)
        })
        .await
    }

    /// Returns the shard's records that match `query`, in key order, reading only the range
    /// of keys the query covers.
    ///
    /// # Errors
    /// [`IndexError`] when the shard id is invalid, the store failed or an entry is corrupt.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn list(
        &self,
        shard: &ShardId,
        query: &ListQuery,
    ) -> Result<Vec<IndexRecord>, IndexError> {
        let query = query.clone();
        self.read(shard, move |db, shard, prefix| {
            read::list(db, shard, prefix, &query)
        })
        .await
    }

    /// Returns up to `limit` (at most [`MAX_RECORDS_PER_READ`]) of the shard's records with a
    /// sequence number above `seq`, in sequence order: what a replica that has seen `seq`
    /// lacks. A key written several times appears once, with its latest sequence number.
    ///
    /// # Errors
    /// [`IndexError`] when the shard id is invalid, the store failed or an entry is corrupt.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn entries_since(
        &self,
        shard: &ShardId,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<IndexRecord>, IndexError> {
        self.read(shard, move |db, shard, prefix| {
            read::entries_since(db, shard, prefix, seq, limit)
        })
        .await
    }

    /// Returns the shard's last sequence number: 0 for a shard never written.
    ///
    /// # Errors
    /// [`IndexError`] when the shard id is invalid or the store failed.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn last_seq(&self, shard: &ShardId) -> Result<u64, IndexError> {
        self.read(shard, read::last_seq).await
    }

    /// Forgets `key`'s tombstone if it is still the one of sequence number `seq` (a newer
    /// write stays); returns whether it did. Anti-entropy calls it on every replica once all
    /// hold the tombstone and it is older than the grace period.
    ///
    /// # Errors
    /// [`IndexError`] when the shard id is invalid, the store failed or the entry is corrupt.
    ///
    /// # Cancel safety
    /// Not cancel safe, as [`IndexStore::apply`].
    pub async fn purge_tombstone(
        &self,
        shard: &ShardId,
        key: &str,
        seq: u64,
    ) -> Result<bool, IndexError> {
        let prefix = ShardPrefix::new(shard).map_err(|source| IndexError::InvalidShard {
            shard: shard.clone(),
            source,
        })?;
        let write = PurgeWrite {
            shard: shard.clone(),
            prefix,
            key: key.to_owned(),
            seq,
        };
        let (reply, answer) = oneshot::channel();
        self.send(Request::Purge(Job::new(write, reply))).await?;
        answer.await.map_err(|_| IndexError::Closed)?
    }

    /// Forgets this store's copy of `shard` if its digest (as [`IndexStore::digest`] gives
    /// it) is still `digest`; returns whether it did. Index anti-entropy calls it for a copy
    /// the index ring no longer places here once every replica holds its records.
    ///
    /// # Errors
    /// [`IndexError`] when the shard id is invalid, the store failed or an entry is corrupt.
    ///
    /// # Cancel safety
    /// Not cancel safe, as [`IndexStore::apply`].
    pub async fn drop_copy(&self, shard: &ShardId, digest: [u8; 32]) -> Result<bool, IndexError> {
        let prefix = ShardPrefix::new(shard).map_err(|source| IndexError::InvalidShard {
            shard: shard.clone(),
            source,
        })?;
        let write = DropWrite {
            shard: shard.clone(),
            prefix,
            digest,
        };
        let (reply, answer) = oneshot::channel();
        self.send(Request::Drop(Job::new(write, reply))).await?;
        answer.await.map_err(|_| IndexError::Closed)?
    }

    /// Returns a digest of the shard's (key, sequence number) pairs and their count: two
    /// replicas with equal digests hold the same writes.
    ///
    /// # Errors
    /// [`IndexError`] when the shard id is invalid, the store failed or an entry is corrupt.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn digest(&self, shard: &ShardId) -> Result<([u8; 32], u64), IndexError> {
        self.read(shard, read::digest).await
    }

    /// Returns every shard this store holds writes of.
    ///
    /// # Errors
    /// [`IndexError`] when the store failed or a shard key is corrupt.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn shards(&self) -> Result<Vec<ShardId>, IndexError> {
        let any = ShardId {
            account: "*".into(),
            container: "*".into(),
            shard: 0,
        };
        self.read(&any, |db, _, _| read::shards(db)).await
    }

    /// Returns the writer's counters.
    #[must_use]
    pub fn stats(&self) -> IndexStats {
        IndexStats {
            writes: self.counters.writes.load(Ordering::Relaxed),
            commits: self.counters.commits.load(Ordering::Relaxed),
            checkpoints: self.counters.checkpoints.load(Ordering::Relaxed),
        }
    }

    /// Stops the writer thread once it has written every request it holds, waits for reads
    /// in flight, and closes the database file, so that the path may be opened again.
    ///
    /// # Errors
    /// [`CloseError`] when the writer thread panicked or the file did not close cleanly.
    /// Writes acknowledged before are durable either way.
    pub async fn close(self) -> Result<(), CloseError> {
        let IndexStore {
            path,
            db,
            writes,
            writer,
            reads,
            counters: _,
        } = self;
        drop(writes);
        let task = |source| CloseError::Task {
            path: path.clone(),
            source,
        };
        let joined = tokio::task::spawn_blocking(move || writer.join())
            .await
            .map_err(task)?;
        // Every read holds a permit until its blocking task ends, even one whose caller went
        // away: with all of them, no read is left.
        let all_reads = reads.acquire_many(MAX_CONCURRENT_READS).await;
        drop(all_reads);
        if joined.is_err() {
            return Err(CloseError::WriterPanicked);
        }
        // Nothing else holds the database now; should something, it closes when let go.
        let Ok(db) = Arc::try_unwrap(db) else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || db.close())
            .await
            .map_err(task)?
            .map_err(|e| CloseError::Database {
                path: path.clone(),
                source: StorageFailure::new(e),
            })
    }

    async fn send(&self, request: Request) -> Result<(), IndexError> {
        self.writes
            .send(request)
            .await
            .map_err(|_| IndexError::Closed)
    }

    /// Runs `f` over the database on the blocking pool, holding a read permit.
    async fn read<T, F>(&self, shard: &ShardId, f: F) -> Result<T, IndexError>
    where
        T: Send + 'static,
        F: FnOnce(&Database, &ShardId, &ShardPrefix) -> Result<T, IndexError> + Send + 'static,
    {
        let prefix = ShardPrefix::new(shard).map_err(|source| IndexError::InvalidShard {
            shard: shard.clone(),
            source,
        })?;
        let permit = Arc::clone(&self.reads)
            .acquire_owned()
            .await
            .map_err(|_| IndexError::Closed)?;
        let db = Arc::clone(&self.db);
        let shard = shard.clone();
        tokio::task::spawn_blocking(move || {
            let result = f(&db, &shard, &prefix);
            // The database first: `close` takes every permit, then expects to hold the last
            // reference.
            drop(db);
            drop(permit);
            result
        })
        .await
        .map_err(|source| IndexError::Task { source })?
    }
}
