//! Reads of the index database. Each runs in one read transaction, a consistent snapshot of
//! everything committed when it began, on a blocking thread (never a tokio worker).
//!
//! **Invariant:** scans touch only the range of the shard and prefix asked for: they seek to
//! its first key and stop at the first key past it.

use std::ops::Bound;

use nimbus_core::index::{IndexRecord, ShardId};
use redb::{Database, ReadableDatabase, ReadableTable};
use tracing::debug;

use super::error::{Corruption, IndexError, StorageFailure};
use super::layout::{self, ENTRIES, SEQS, SHARDS, ShardPrefix};
use super::{ListQuery, MAX_RECORDS_PER_READ};

/// Returns a mapper from a database error to [`IndexError::Storage`].
fn storage<'a, E: Into<redb::Error>>(
    shard: &'a ShardId,
    op: &'static str,
) -> impl FnOnce(E) -> IndexError + 'a {
    move |e| IndexError::Storage {
        shard: shard.clone(),
        op,
        source: StorageFailure::new(e),
    }
}

fn corrupt(shard: &ShardId, key: impl Into<String>, source: Corruption) -> IndexError {
    IndexError::Corrupt {
        shard: shard.clone(),
        key: key.into(),
        source,
    }
}

/// Returns the stored record of `key`, tombstone or not.
pub(super) fn get(
    db: &Database,
    shard: &ShardId,
    prefix: &ShardPrefix,
    key: &str,
) -> Result<Option<IndexRecord>, IndexError> {
    let txn = db
        .begin_read()
        .map_err(storage(shard, "begin index read"))?;
    let entries = txn
        .open_table(ENTRIES)
        .map_err(storage(shard, "open index entries"))?;
    let found = entries
        .get(prefix.entry_key(key).as_slice())
        .map_err(storage(shard, "read index entry"))?;
    let Some(value) = found else {
        return Ok(None);
    };
    layout::decode_record(key.to_owned(), value.value())
        .map(Some)
        .map_err(|source| corrupt(shard, key, source))
}

/// Returns the records of the shard whose keys match the query, in key order.
pub(super) fn list(
    db: &Database,
    shard: &ShardId,
    prefix: &ShardPrefix,
    query: &ListQuery,
) -> Result<Vec<IndexRecord>, IndexError> {
    let limit = query.limit.min(MAX_RECORDS_PER_READ);
    let mut records = Vec::new();
    if limit == 0 {
        return Ok(records);
    }
    // Every key in range starts with `scan`; the scan begins at the larger of the prefix and
    // `start_after` (exclusive), which sort the same as object keys do.
    let scan = prefix.entry_key(&query.prefix);
    let start = match &query.start_after {
        Some(after) if after.as_str() >= query.prefix.as_str() => {
            Bound::Excluded(prefix.entry_key(after))
        }
        _ => Bound::Included(scan.clone()),
    };
    let txn = db
        .begin_read()
        .map_err(storage(shard, "begin index read"))?;
    let entries = txn
        .open_table(ENTRIES)
        .map_err(storage(shard, "open index entries"))?;
    let range = entries
        .range::<&[u8]>((start.as_ref().map(Vec::as_slice), Bound::Unbounded))
        .map_err(storage(shard, "list index entries"))?;
    for item in range {
        let (entry_key, value) = item.map_err(storage(shard, "list index entries"))?;
        let entry_key = entry_key.value();
        if !entry_key.starts_with(&scan) {
            break;
        }
        let damaged = |source| {
            let raw = entry_key
                .get(prefix.as_bytes().len()..)
                .unwrap_or(entry_key);
            corrupt(shard, String::from_utf8_lossy(raw), source)
        };
        let key = prefix.object_key(entry_key).map_err(damaged)?;
        let record = layout::decode_record(key, value.value()).map_err(damaged)?;
        if record.entry.is_tombstone() && !query.include_tombstones {
            continue;
        }
        records.push(record);
        if records.len() == limit {
            break;
        }
    }
    Ok(records)
}

/// Returns up to `limit` records of the shard written with a sequence number above `seq`, in
/// sequence order.
pub(super) fn entries_since(
    db: &Database,
    shard: &ShardId,
    prefix: &ShardPrefix,
    seq: u64,
    limit: usize,
) -> Result<Vec<IndexRecord>, IndexError> {
    let limit = limit.min(MAX_RECORDS_PER_READ);
    let mut records = Vec::new();
    let Some(first) = seq.checked_add(1) else {
        return Ok(records);
    };
    if limit == 0 {
        return Ok(records);
    }
    let txn = db
        .begin_read()
        .map_err(storage(shard, "begin index read"))?;
    let seqs = txn
        .open_table(SEQS)
        .map_err(storage(shard, "open index sequence rows"))?;
    let entries = txn
        .open_table(ENTRIES)
        .map_err(storage(shard, "open index entries"))?;
    let (low, high) = (prefix.seq_key(first), prefix.seq_key(u64::MAX));
    let range = seqs
        .range::<&[u8]>(low.as_slice()..=high.as_slice())
        .map_err(storage(shard, "scan index sequence rows"))?;
    for item in range {
        let (seq_key, key) = item.map_err(storage(shard, "scan index sequence rows"))?;
        let key_bytes = key.value();
        let row_seq = prefix
            .seq_of(seq_key.value())
            .map_err(|source| corrupt(shard, String::from_utf8_lossy(key_bytes), source))?;
        let key = layout::decode_key(key_bytes)
            .map_err(|source| corrupt(shard, String::from_utf8_lossy(key_bytes), source))?;
        let found = entries
            .get(prefix.entry_key(&key).as_slice())
            .map_err(storage(shard, "read index entry"))?;
        let record = match found {
            Some(value) => layout::decode_record(key, value.value())
                .map_err(|source| corrupt(shard, String::from_utf8_lossy(key_bytes), source))?,
            None => {
                debug!(
                    shard = shard.shard,
                    seq = row_seq,
                    "skipping a sequence row with no entry"
                );
                continue;
            }
        };
        if record.seq != row_seq {
            // A row left behind when a corrupt entry was replaced: the entry's own row is
            // elsewhere in the scan.
            debug!(
                shard = shard.shard,
                seq = row_seq,
                "skipping a stale sequence row"
            );
            continue;
        }
        records.push(record);
        if records.len() == limit {
            break;
        }
    }
    Ok(records)
}

/// Returns the shard's last sequence number (0 for a shard never written).
pub(super) fn last_seq(
    db: &Database,
    shard: &ShardId,
    prefix: &ShardPrefix,
) -> Result<u64, IndexError> {
    let txn = db
        .begin_read()
        .map_err(storage(shard, "begin index read"))?;
    let shards = txn
        .open_table(SHARDS)
        .map_err(storage(shard, "open index shards"))?;
    let found = shards
        .get(prefix.as_bytes())
        .map_err(storage(shard, "read index shard"))?;
    match found {
        Some(value) => {
            layout::decode_last_seq(value.value()).map_err(|source| corrupt(shard, "", source))
        }
        None => Ok(0),
    }
}

/// Returns a digest of the shard's (key, sequence number) pairs, tombstones included, and
/// how many there are: equal on two replicas that hold the same writes.
pub(super) fn digest(
    db: &Database,
    shard: &ShardId,
    prefix: &ShardPrefix,
) -> Result<([u8; 32], u64), IndexError> {
    let txn = db
        .begin_read()
        .map_err(storage(shard, "begin index read"))?;
    let entries = txn
        .open_table(ENTRIES)
        .map_err(storage(shard, "open index entries"))?;
    let start = prefix.as_bytes();
    let range = entries
        .range::<&[u8]>(start..)
        .map_err(storage(shard, "scan index entries"))?;
    let mut digest = layout::ShardDigest::new();
    for item in range {
        let (entry_key, value) = item.map_err(storage(shard, "scan index entries"))?;
        let entry_key = entry_key.value();
        let Some(key) = entry_key.strip_prefix(start) else {
            break;
        };
        let (seq, _) = layout::split_entry_value(value.value())
            .map_err(|source| corrupt(shard, String::from_utf8_lossy(key), source))?;
        digest.add(key, seq);
    }
    Ok(digest.finish())
}

/// Returns every shard the store has written to.
pub(super) fn shards(db: &Database) -> Result<Vec<ShardId>, IndexError> {
    let all = ShardId {
        account: "*".into(),
        container: "*".into(),
        shard: 0,
    };
    let txn = db.begin_read().map_err(storage(&all, "begin index read"))?;
    let table = txn
        .open_table(SHARDS)
        .map_err(storage(&all, "open index shards"))?;
    let mut out = Vec::new();
    for item in table.iter().map_err(storage(&all, "scan index shards"))? {
        let (key, _) = item.map_err(storage(&all, "scan index shards"))?;
        let id = ShardPrefix::decode(key.value())
            .map_err(|source| corrupt(&all, String::from_utf8_lossy(key.value()), source))?;
        out.push(id);
    }
    Ok(out)
}
