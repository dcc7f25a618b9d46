//! The expirer: objects given an expiry (Swift's `X-Delete-At`) are deleted once it passes,
//! whether or not anything reads them. Every write of such an object also queues it in the
//! bucket's `#expiring` index container, under `delete-at (16 hex digits) NUL key`, so the
//! queue sorts by time; the record carries the object's version. Each proxy walks the queues
//! every interval and, for each record that is due, writes the object's tombstone under
//! `IfVersion` (a newer write, which may have changed or dropped the expiry, stays), then
//! retires the record. Proxies racing on one record do the same idempotent steps.
//!
//! The same passes abort multipart uploads initiated more than `abandoned_upload_secs` ago
//! (the upload id begins with its initiation version), so that their parts become garbage.

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::ids::VersionId;
use nimbus_core::index::{EntryData, IndexEntry};
use nimbus_ring::map::{Bucket, Versioning};
use tokio::sync::watch;

use crate::error::DataError;
use crate::index::{Condition, IndexClient};
use crate::s3::S3State;
use crate::s3::objects::{delete_at, unix_now};
use crate::s3::{multipart, versions};

/// Records read from one queue per pass.
const BATCH: usize = 1000;

fn queue_container(bucket: &str) -> String {
    format!("{bucket}#expiring")
}

fn queue_key(at: u64, key: &str) -> String {
    format!("{at:016x}\0{key}")
}

/// The expiry and object key of a queue key.
fn parse_queue_key(text: &str) -> Option<(u64, &str)> {
    let (at, key) = text.split_once('\0')?;
    if at.len() != 16 {
        return None;
    }
    Some((u64::from_str_radix(at, 16).ok()?, key))
}

/// Queues `entry`, just written for `key`, if it has an expiry.
///
/// # Errors
/// The queue record could not be written (the object then expires on its first read only).
pub(crate) async fn enqueue(
    state: &S3State,
    account: &str,
    (name, bucket): (&str, &Bucket),
    key: &str,
    entry: &IndexEntry,
) -> Result<(), DataError> {
    let Some(at) = delete_at(entry) else {
        return Ok(());
    };
    let container = queue_container(name);
    let qkey = queue_key(at, key);
    let shard = IndexClient::shard_of(account, &container, &qkey, bucket.shards);
    let record = IndexEntry {
        data: EntryData::Inline(Vec::new()),
        size: 0,
        ..IndexEntry::tombstone(entry.version, bucket.policy.clone())
    };
    state
        .index
        .write(&shard, &qkey, &record, &Condition::None)
        .await
        .map(|_| ())
}

/// Runs passes every `interval` until `stop` turns true; each pass also aborts multipart
/// uploads older than `abandoned_uploads`, if set.
pub async fn run(
    state: Arc<S3State>,
    interval: Duration,
    abandoned_uploads: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let buckets: Vec<(String, Bucket)> = state
            .cluster
            .map()
            .buckets()
            .map(|(n, b)| (n.to_owned(), b.clone()))
            .collect();
        for (name, bucket) in buckets {
            if let Err(e) = pass(&state, &name, &bucket).await {
                tracing::debug!(bucket = name, error = %e, "expirer pass cut short");
            }
            if let Some(age) = abandoned_uploads
                && let Err(e) = multipart::abort_abandoned(&state, &name, &bucket, age).await
            {
                tracing::debug!(bucket = name, error = %e, "aborting abandoned uploads cut short");
            }
        }
    }
}

/// Deletes what is due in one bucket's queue.
async fn pass(state: &S3State, name: &str, bucket: &Bucket) -> Result<(), DataError> {
    let container = queue_container(name);
    let account = bucket.owner.as_str();
    let now = unix_now();
    let records = state
        .index
        .list(account, &container, bucket.shards, "", None, BATCH)
        .await?;
    for record in records {
        let Some((at, key)) = parse_queue_key(&record.key) else {
            continue;
        };
        if at > now {
            // The queue sorts by time: nothing after this is due.
            break;
        }
        expire(state, (name, bucket), key, record.entry.version).await?;
        let shard = IndexClient::shard_of(account, &container, &record.key, bucket.shards);
        let done = IndexEntry::tombstone(state.data.clock.next(), bucket.policy.clone());
        state
            .index
            .write(&shard, &record.key, &done, &Condition::None)
            .await?;
    }
    Ok(())
}

/// Writes the tombstone of `key` if its entry is still `version`.
async fn expire(
    state: &S3State,
    (name, bucket): (&str, &Bucket),
    key: &str,
    version: VersionId,
) -> Result<(), DataError> {
    let shard = IndexClient::shard_of(&bucket.owner, name, key, bucket.shards);
    let tombstone = IndexEntry::tombstone(state.data.clock.next(), bucket.policy.clone());
    if bucket.versioning != Versioning::Unversioned {
        // A delete marker, kept with the versions.
        let condition = Condition::IfVersion(version);
        let owner = bucket.owner.as_str();
        return match versions::commit(state, owner, name, bucket, key, tombstone, &condition).await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code().as_str() == "PreconditionFailed" => Ok(()),
            Err(e) => Err(DataError::Unavailable(format!(
                "expiring {name}/{key}: {e:?}"
            ))),
        };
    }
    match state
        .index
        .write(&shard, key, &tombstone, &Condition::IfVersion(version))
        .await
    {
        // Replaced or deleted since: nothing of this version is left to expire.
        Ok(_) | Err(DataError::PreconditionFailed) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_sort_by_time_and_parse_back() {
        let a = queue_key(9, "zz");
        let b = queue_key(10, "aa");
        assert!(a < b);
        assert_eq!(parse_queue_key(&b), Some((10, "aa")));
        assert_eq!(parse_queue_key(&queue_key(1, "x\0y")), Some((1, "x\0y")));
        assert_eq!(parse_queue_key("nonsense"), None);
    }
}
