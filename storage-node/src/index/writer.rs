//! The writer thread: the only code that writes the index database.
//!
//! It takes every request waiting in its channel (at most [`MAX_BATCH`]), applies them in
//! arrival order in one write transaction, makes the batch durable with one append and one
//! `fdatasync` of the write-ahead log (see `wal`), commits it without a sync of the database's
//! own, and only then answers each request. When the log is full, the batch commits durably
//! instead (a checkpoint) and the log starts again.
//!
//! **Invariants:**
//! - No request is answered before the batch holding it is durable; a failed batch fails
//!   every request of its batch, including those whose answer was a failed precondition,
//!   since that answer may rest on a write that was lost.
//! - A request that fails alone (a precondition, a corrupt current entry) fails before it
//!   changes any table, so it never leaves a partial write in the batch.
//! - A batch that changed nothing (only failed preconditions and ignored records) is
//!   aborted, not committed: it costs no fsync.
//! - Every change to a table goes through [`Tables::put`] or [`Tables::delete`], which log it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nimbus_core::index::ShardId;
use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::Precondition;
use super::error::{ApplyError, Corruption, IndexError, ReplicateError, StorageFailure};
use super::layout::{self, ENTRIES, SEQS, SHARDS, ShardPrefix};
use super::wal::{self, Changes, TableId, Wal};

/// The most requests one transaction applies: the channel's capacity, so a full channel is
/// drained in one commit.
pub(super) const MAX_BATCH: usize = 1024;

/// What the writer has done, for [`super::IndexStats`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) writes: AtomicU64,
    pub(super) commits: AtomicU64,
    pub(super) checkpoints: AtomicU64,
}

/// A write as the shard's primary: check the precondition, assign the next sequence number.
#[derive(Debug)]
pub(super) struct ApplyWrite {
    pub(super) shard: ShardId,
    pub(super) prefix: ShardPrefix,
    pub(super) key: String,
    /// The encoded, validated entry.
    pub(super) entry: Vec<u8>,
    pub(super) cond: Precondition,
    /// The least sequence number to assign (see [`super::IndexStore::apply_from`]).
    pub(super) seq_floor: u64,
}

/// A write as a replica: store the primary's record unless a newer one is stored.
#[derive(Debug)]
pub(super) struct ReplicatedWrite {
    pub(super) shard: ShardId,
    pub(super) prefix: ShardPrefix,
    pub(super) key: String,
    pub(super) seq: u64,
    /// The encoded, validated entry.
    pub(super) entry: Vec<u8>,
}

/// Forgetting a tombstone: remove the key's record only if it is still the tombstone of
/// sequence number `seq`.
#[derive(Debug)]
pub(super) struct PurgeWrite {
    pub(super) shard: ShardId,
    pub(super) prefix: ShardPrefix,
    pub(super) key: String,
    pub(super) seq: u64,
}

/// Forgetting this device's copy of a shard (one the index ring no longer places here, whose
/// records every replica holds): only if its digest is still `digest`, so that a write that
/// reached the copy after it was compared is not lost with it.
#[derive(Debug)]
pub(super) struct DropWrite {
    pub(super) shard: ShardId,
    pub(super) prefix: ShardPrefix,
    pub(super) digest: [u8; 32],
}

/// One kind of write the writer applies.
pub(super) trait Write {
    /// What a successful write answers.
    type Output;
    /// What a failed write answers.
    type Error: From<IndexError>;

    fn shard(&self) -> &ShardId;

    fn key(&self) -> &str;

    /// Applies the write to the batch's tables. `Err` is a database failure that fails the
    /// whole batch; `Ok(Err(_))` fails this write alone, before it changed anything.
    fn run(&self, tables: &mut Tables<'_>) -> Result<Result<Self::Output, Self::Error>, RunError>;

    /// Returns whether this outcome changed the database.
    fn wrote(output: &Self::Output) -> bool;
}

/// A write and the caller waiting for its answer.
pub(super) struct Job<W: Write> {
    write: W,
    reply: oneshot::Sender<Result<W::Output, W::Error>>,
    result: Option<Result<W::Output, W::Error>>,
}

impl<W: Write> Job<W> {
    pub(super) fn new(write: W, reply: oneshot::Sender<Result<W::Output, W::Error>>) -> Self {
        Job {
            write,
            reply,
            result: None,
        }
    }

    fn run(&mut self, tables: &mut Tables<'_>) -> Result<(), redb::Error> {
        let result = match self.write.run(tables) {
            Ok(result) => result,
            Err(RunError::Storage(e)) => return Err(e),
            Err(RunError::Corrupt(source)) => Err(IndexError::Corrupt {
                shard: self.write.shard().clone(),
                key: self.write.key().to_owned(),
                source,
            }
            .into()),
        };
        self.result = Some(result);
        Ok(())
    }

    fn wrote(&self) -> bool {
        matches!(&self.result, Some(Ok(output)) if W::wrote(output))
    }

    /// Answers the caller: the write's result once its batch committed, else the batch's
    /// failure. A caller that went away is not an error: its write stands or falls with the
    /// batch all the same.
    fn answer(self, batch: Result<(), &StorageFailure>) {
        let answer = match batch {
            Ok(()) => self.result.expect("every job of a committed batch has run"),
            Err(failure) => Err(IndexError::Storage {
                shard: self.write.shard().clone(),
                op: "commit index writes",
                source: failure.clone(),
            }
            .into()),
        };
        let _ = self.reply.send(answer);
    }
}

/// A request to the writer thread.
pub(super) enum Request {
    Apply(Job<ApplyWrite>),
    Replicate(Job<ReplicatedWrite>),
    Purge(Job<PurgeWrite>),
    Drop(Job<DropWrite>),
}

impl Request {
    fn run(&mut self, tables: &mut Tables<'_>) -> Result<(), redb::Error> {
        match self {
            Request::Apply(job) => job.run(tables),
            Request::Replicate(job) => job.run(tables),
            Request::Purge(job) => job.run(tables),
            Request::Drop(job) => job.run(tables),
        }
    }

    fn wrote(&self) -> bool {
        match self {
            Request::Apply(job) => job.wrote(),
            Request::Replicate(job) => job.wrote(),
            Request::Purge(job) => job.wrote(),
            Request::Drop(job) => job.wrote(),
        }
    }

    fn answer(self, batch: Result<(), &StorageFailure>) {
        match self {
            Request::Apply(job) => job.answer(batch),
            Request::Replicate(job) => job.answer(batch),
            Request::Purge(job) => job.answer(batch),
            Request::Drop(job) => job.answer(batch),
        }
    }
}

/// Why a write could not run: the database failed (the batch fails), or what it read is
/// corrupt (the write fails alone).
pub(super) enum RunError {
    Storage(redb::Error),
    Corrupt(Corruption),
}

impl<E: Into<redb::Error>> From<E> for RunError {
    fn from(e: E) -> Self {
        RunError::Storage(e.into())
    }
}

impl From<Corruption> for RunError {
    fn from(c: Corruption) -> Self {
        RunError::Corrupt(c)
    }
}

/// Runs the writer until every sender is gone and the channel is empty, then checkpoints so
/// that the log is empty when the store closes.
pub(super) fn run(
    db: Arc<Database>,
    mut wal: Wal,
    mut rx: mpsc::Receiver<Request>,
    counters: Arc<Counters>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        write_batch(&db, &mut wal, &mut batch, &counters);
    }
    if let Err(e) = checkpoint(&db, &mut wal) {
        warn!(error = %e, "the index store closes without a final checkpoint; its log is replayed at the next open");
    }
}

/// Applies, commits and answers one batch, leaving `batch` empty.
fn write_batch(db: &Database, wal: &mut Wal, batch: &mut Vec<Request>, counters: &Counters) {
    match apply_batch(db, wal, batch) {
        Ok(outcome) => {
            if outcome != Outcome::Aborted {
                let writes = batch.iter().filter(|r| r.wrote()).count() as u64;
                counters.writes.fetch_add(writes, Ordering::Relaxed);
                counters.commits.fetch_add(1, Ordering::Relaxed);
            }
            if outcome == Outcome::Checkpoint {
                counters.checkpoints.fetch_add(1, Ordering::Relaxed);
            }
            for request in batch.drain(..) {
                request.answer(Ok(()));
            }
        }
        Err(e) => {
            let failure = StorageFailure::new(e);
            for request in batch.drain(..) {
                request.answer(Err(&failure));
            }
        }
    }
}

/// How a batch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Nothing changed: the transaction was aborted.
    Aborted,
    /// Logged, then committed without a sync of the database.
    Logged,
    /// Committed durably, and the log started again.
    Checkpoint,
}

/// Applies a batch in one transaction and makes it durable: through the log, or as a
/// checkpoint when the log has no room for it.
fn apply_batch(
    db: &Database,
    wal: &mut Wal,
    batch: &mut [Request],
) -> Result<Outcome, redb::Error> {
    let mut txn = db.begin_write()?;
    let (wrote, changes) = {
        let mut tables = Tables::open(&txn)?;
        for request in batch.iter_mut() {
            request.run(&mut tables)?;
        }
        (batch.iter().any(Request::wrote), tables.changes)
    };
    if !wrote {
        txn.abort()?;
        return Ok(Outcome::Aborted);
    }
    if !wal.fits(&changes) {
        commit_checkpoint(txn, wal)?;
        return Ok(Outcome::Checkpoint);
    }
    txn.set_durability(Durability::None)?;
    if let Err(e) = wal.append(&changes) {
        txn.abort()?;
        return Err(e.into());
    }
    txn.commit().inspect_err(|_| wal.commit_failed())?;
    Ok(Outcome::Logged)
}

/// Commits `txn` durably with the log's next generation, then starts that generation.
fn commit_checkpoint(mut txn: WriteTransaction, wal: &mut Wal) -> Result<(), redb::Error> {
    txn.set_durability(Durability::Immediate)?;
    wal::set_generation(&txn, wal.next_generation())?;
    txn.commit().inspect_err(|_| wal.commit_failed())?;
    wal.checkpointed();
    Ok(())
}

/// A checkpoint of its own: makes every logged batch durable in the database and empties the
/// log.
fn checkpoint(db: &Database, wal: &mut Wal) -> Result<(), redb::Error> {
    commit_checkpoint(db.begin_write()?, wal)
}

type BytesTable<'txn> = Table<'txn, &'static [u8], &'static [u8]>;

/// The tables of one write transaction, and the changes made to them for the log.
pub(super) struct Tables<'txn> {
    entries: BytesTable<'txn>,
    seqs: BytesTable<'txn>,
    shards: BytesTable<'txn>,
    changes: Changes,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Tables {
            entries: txn.open_table(ENTRIES)?,
            seqs: txn.open_table(SEQS)?,
            shards: txn.open_table(SHARDS)?,
            changes: Changes::default(),
        })
    }

    fn table(&mut self, table: TableId) -> &mut BytesTable<'txn> {
        match table {
            TableId::Entries => &mut self.entries,
            TableId::Seqs => &mut self.seqs,
            TableId::Shards => &mut self.shards,
        }
    }

    /// Stores `value` under `key` in `table`, and logs it.
    fn put(&mut self, table: TableId, key: &[u8], value: &[u8]) -> Result<(), redb::Error> {
        self.table(table).insert(key, value)?;
        self.changes.put(table, key, value);
        Ok(())
    }

    /// Removes `key` from `table`, and logs it.
    fn delete(&mut self, table: TableId, key: &[u8]) -> Result<(), redb::Error> {
        self.table(table).remove(key)?;
        self.changes.remove(table, key);
        Ok(())
    }

    /// Returns the stored value of an entry key.
    fn entry(&self, entry_key: &[u8]) -> Result<Option<Vec<u8>>, RunError> {
        Ok(self.entries.get(entry_key)?.map(|v| v.value().to_vec()))
    }

    fn last_seq(&self, prefix: &ShardPrefix) -> Result<u64, RunError> {
        match self.shards.get(prefix.as_bytes())? {
            Some(v) => Ok(layout::decode_last_seq(v.value())?),
            None => Ok(0),
        }
    }

    /// Removes `key`'s entry and its sequence row (if that row still names the key).
    fn remove(&mut self, prefix: &ShardPrefix, key: &str, seq: u64) -> Result<(), RunError> {
        let seq_key = prefix.seq_key(seq);
        let ours = self
            .seqs
            .get(seq_key.as_slice())?
            .is_some_and(|v| v.value() == key.as_bytes());
        if ours {
            self.delete(TableId::Seqs, &seq_key)?;
        }
        self.delete(TableId::Entries, &prefix.entry_key(key))?;
        Ok(())
    }

    /// Stores `entry` for `key` under `seq`, replacing the entry of sequence `old_seq`.
    fn store(
        &mut self,
        prefix: &ShardPrefix,
        key: &str,
        entry: &[u8],
        seq: u64,
        old_seq: Option<u64>,
        last_seq: u64,
    ) -> Result<(), RunError> {
        if let Some(old_seq) = old_seq {
            // Only the row that still names this key: after replicas diverged, another key
            // may have taken the number over (see `ReplicatedWrite::run`).
            let old_key = prefix.seq_key(old_seq);
            let ours = self
                .seqs
                .get(old_key.as_slice())?
                .is_some_and(|v| v.value() == key.as_bytes());
            if ours {
                self.delete(TableId::Seqs, &old_key)?;
            }
        }
        let value = layout::entry_value(seq, entry);
        self.put(TableId::Entries, &prefix.entry_key(key), &value)?;
        self.put(TableId::Seqs, &prefix.seq_key(seq), key.as_bytes())?;
        let last = layout::last_seq_value(last_seq.max(seq));
        self.put(TableId::Shards, prefix.as_bytes(), &last)?;
        Ok(())
    }
}

impl Write for ApplyWrite {
    type Output = u64;
    type Error = ApplyError;

    fn shard(&self) -> &ShardId {
        &self.shard
    }

    fn key(&self) -> &str {
        &self.key
    }

    fn run(&self, tables: &mut Tables<'_>) -> Result<Result<u64, ApplyError>, RunError> {
        // Everything that may fail alone is read and checked before the first change.
        let current = tables.entry(&self.prefix.entry_key(&self.key))?;
        let old_seq = match &current {
            Some(value) => Some(layout::split_entry_value(value)?.0),
            None => None,
        };
        if self.cond != Precondition::None {
            let record = match current {
                Some(value) => Some(layout::decode_record(self.key.clone(), &value)?),
                None => None,
            };
            if !self.cond.admits(record.as_ref().map(|r| &r.entry)) {
                return Ok(Err(ApplyError::PreconditionFailed {
                    shard: self.shard.clone(),
                    key: self.key.clone(),
                    current: record.map(Box::new),
                }));
            }
        }
        let last_seq = tables.last_seq(&self.prefix)?;
        let seq = last_seq
            .checked_add(1)
            .ok_or(Corruption::SeqExhausted)?
            .max(self.seq_floor);
        tables.store(&self.prefix, &self.key, &self.entry, seq, old_seq, last_seq)?;
        Ok(Ok(seq))
    }

    fn wrote(_: &u64) -> bool {
        true
    }
}

impl Write for ReplicatedWrite {
    type Output = bool;
    type Error = ReplicateError;

    fn shard(&self) -> &ShardId {
        &self.shard
    }

    fn key(&self) -> &str {
        &self.key
    }

    fn run(&self, tables: &mut Tables<'_>) -> Result<Result<bool, ReplicateError>, RunError> {
        let current = tables.entry(&self.prefix.entry_key(&self.key))?;
        let old_seq = match current.as_deref().map(layout::split_entry_value) {
            Some(Ok((seq, _))) => Some(seq),
            Some(Err(_)) => {
                // The primary's record is the repair: store it. The old sequence row cannot
                // be found; readers skip rows whose entry carries another number.
                warn!(
                    shard = self.shard.shard,
                    seq = self.seq,
                    "a replicated write replaces a corrupt index entry"
                );
                None
            }
            None => None,
        };
        if old_seq.is_some_and(|old| old >= self.seq) {
            return Ok(Ok(false));
        }
        let last_seq = tables.last_seq(&self.prefix)?;
        let taken = tables
            .seqs
            .get(self.prefix.seq_key(self.seq).as_slice())?
            .is_some_and(|v| v.value() != self.key.as_bytes());
        if taken {
            // This replica holds a write the new primary never had (it was not acknowledged
            // by a majority): the primary's record wins the number, and the other key's entry
            // stays until peering or anti-entropy replaces it.
            warn!(
                shard = self.shard.shard,
                seq = self.seq,
                "a replicated write takes over a sequence number another key held"
            );
        }
        tables.store(
            &self.prefix,
            &self.key,
            &self.entry,
            self.seq,
            old_seq,
            last_seq,
        )?;
        Ok(Ok(true))
    }

    fn wrote(applied: &bool) -> bool {
        *applied
    }
}

impl Write for PurgeWrite {
    type Output = bool;
    type Error = IndexError;

    fn shard(&self) -> &ShardId {
        &self.shard
    }

    fn key(&self) -> &str {
        &self.key
    }

    fn run(&self, tables: &mut Tables<'_>) -> Result<Result<bool, IndexError>, RunError> {
        let Some(value) = tables.entry(&self.prefix.entry_key(&self.key))? else {
            return Ok(Ok(false));
        };
        let record = layout::decode_record(self.key.clone(), &value)?;
        if record.seq != self.seq || !record.entry.is_tombstone() {
            return Ok(Ok(false)); // written again since: it stays
        }
        tables.remove(&self.prefix, &self.key, self.seq)?;
        Ok(Ok(true))
    }

    fn wrote(purged: &bool) -> bool {
        *purged
    }
}

impl Write for DropWrite {
    type Output = bool;
    type Error = IndexError;

    fn shard(&self) -> &ShardId {
        &self.shard
    }

    fn key(&self) -> &str {
        ""
    }

    fn run(&self, tables: &mut Tables<'_>) -> Result<Result<bool, IndexError>, RunError> {
        let start = self.prefix.as_bytes();
        let mut digest = layout::ShardDigest::new();
        let mut entry_keys = Vec::new();
        for item in tables.entries.range::<&[u8]>(start..)? {
            let (entry_key, value) = item?;
            let Some(key) = entry_key.value().strip_prefix(start) else {
                break;
            };
            let (seq, _) = layout::split_entry_value(value.value())?;
            digest.add(key, seq);
            entry_keys.push(entry_key.value().to_vec());
        }
        if entry_keys.is_empty() || digest.finish().0 != self.digest {
            return Ok(Ok(false));
        }
        let mut seq_keys = Vec::new();
        for item in tables.seqs.range::<&[u8]>(start..)? {
            let (seq_key, _) = item?;
            if !seq_key.value().starts_with(start) {
                break;
            }
            seq_keys.push(seq_key.value().to_vec());
        }
        for key in entry_keys {
            tables.delete(TableId::Entries, &key)?;
        }
        for key in seq_keys {
            tables.delete(TableId::Seqs, &key)?;
        }
        tables.delete(TableId::Shards, start)?;
        Ok(Ok(true))
    }

    fn wrote(dropped: &bool) -> bool {
        *dropped
    }
}
