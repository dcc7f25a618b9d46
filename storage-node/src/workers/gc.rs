//! The collector: removes the fragment files of this device that nothing will read again.
//!
//! - A committed fragment is garbage when no index entry references its version
//!   (`nimbus_proxy::references`: the key's current entry, its S3 version records, its
//!   multipart uploads in progress): an overwritten or deleted version, the parts an upload
//!   left out, an aborted upload's parts, a PUT whose index write never happened.
//! - A `.pending` fragment is an orphan: a PUT that never committed.
//!
//! Either is removed only once its file has been unchanged for the grace period, which must
//! exceed the longest PUT: a fragment is committed before its index entry is written, so a
//! young unreferenced fragment may be one whose entry is on its way. A partition is
//! collected at most once per grace period: each check costs index reads.
//!
//! **Invariant:** a committed fragment is removed only after every replica of its key's
//! index shard answered and none references it (and the listings of versions and uploads
//! name none); any error, any replica silent, keeps it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use nimbus_core::ids::{PartitionId, VersionId};
use nimbus_proxy::references::{Asked, unreferenced_versions};
use nimbus_ring::map::ClusterMap;
use tokio::time::Instant;

use super::{Ctx, WorkerError};
use crate::store::{FragmentId, ListedFragment, StoreError, parse_fragment_name};

/// When each partition of a device was last collected.
#[derive(Debug, Default)]
pub struct Collected(Mutex<HashMap<(String, PartitionId), Instant>>);

impl Collected {
    /// Whether `(policy, partition)` is due (not collected within `every`); marks it
    /// collected now if so.
    fn due(&self, policy: &str, partition: PartitionId, every: std::time::Duration) -> bool {
        let Ok(mut last) = self.0.lock() else {
            return true; // a panicked holder: collecting again is harmless
        };
        let key = (policy.to_owned(), partition);
        let now = Instant::now();
        match last.get(&key) {
            Some(t) if now.duration_since(*t) < every => false,
            _ => {
                last.insert(key, now);
                true
            }
        }
    }
}

/// Collects one partition's garbage and orphans, if the partition is due.
pub(super) async fn partition(
    ctx: &Ctx,
    map: &ClusterMap,
    policy: &str,
    partition: PartitionId,
) -> Result<(), WorkerError> {
    let grace = ctx.config.gc_grace;
    if !ctx.collected.due(policy, partition, grace) {
        return Ok(());
    }
    let base = ctx
        .store
        .root()
        .join("objects")
        .join(policy)
        .join(partition.0.to_string());
    let engine = ctx.store.engine();
    let list = |dir: &Path| {
        let dir = dir.to_path_buf();
        async move {
            engine
                .list_dir(&dir)
                .await
                .map_err(|e| StoreError::io(&dir, e))
        }
    };
    let mut failed = None;
    for prefix in list(&base).await? {
        for object_hash in list(&base.join(&prefix)).await? {
            let dir = base.join(&prefix).join(&object_hash);
            if let Err(e) = object_dir(ctx, map, policy, partition, &dir, &object_hash).await {
                tracing::debug!(error = %e, dir = %dir.display(), "collector: object skipped");
                failed = Some(e);
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Collects one object directory: orphans first, then each old version nothing references.
async fn object_dir(
    ctx: &Ctx,
    map: &ClusterMap,
    policy: &str,
    partition: PartitionId,
    dir: &Path,
    object_hash: &str,
) -> Result<(), WorkerError> {
    let engine = ctx.store.engine();
    let names = engine
        .list_dir(dir)
        .await
        .map_err(|e| StoreError::io(dir, e))?;
    let now = SystemTime::now();
    // Old committed fragments, by version: (fragment, bytes on disk).
    let mut old: Vec<(ListedFragment, u64)> = Vec::new();
    for name in names {
        let Some(fragment) = parse_fragment_name(object_hash, &name) else {
            continue; // temporary files of a write under way, or not ours
        };
        let path = dir.join(&name);
        let (bytes, changed) = match engine.stat(&path).await {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io(&path, e).into()),
        };
        let age = now.duration_since(changed).unwrap_or_default();
        if age < ctx.config.gc_grace {
            continue;
        }
        if fragment.durable {
            old.push((fragment, bytes));
        } else {
            match engine.remove_file(&path).await {
                Ok(()) => {
                    ctx.stats.reclaimed(bytes);
                    tracing::info!(path = %path.display(), "collector: orphan removed (never committed)");
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&path, e).into()),
            }
        }
    }
    let Some((first, _)) = old.first() else {
        return Ok(());
    };
    // Every fragment of the directory names the same object: read its path from one header.
    let first_path = dir.join(format!("{}.{}", first.version, first.index));
    let object_path = match ctx.store.open_path(first_path).await {
        Ok(reader) => reader.header().object_path.clone(),
        Err(StoreError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    // One round of index reads decides every old version of the object.
    let versions: Vec<VersionId> = old.iter().map(|(f, _)| f.version).collect();
    let dead = unreferenced_versions(
        &ctx.index,
        map,
        &object_path,
        &versions,
        Asked::EveryReplica,
    )
    .await?;
    for (fragment, bytes) in old {
        if !dead.contains(&fragment.version) {
            continue;
        }
        let id = FragmentId {
            policy: policy.to_owned(),
            partition,
            object_path: object_path.clone(),
            version: fragment.version,
            index: fragment.index,
        };
        match ctx.store.delete(&id).await {
            Ok(()) => {
                ctx.stats.reclaimed(bytes);
                tracing::debug!(path = %object_path, version = %fragment.version, index = fragment.index, "collector: unreferenced fragment removed");
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_partition_is_due_once_per_period() {
        let collected = Collected::default();
        let p = PartitionId(3);
        assert!(collected.due("ec4+2", p, Duration::from_secs(60)));
        assert!(!collected.due("ec4+2", p, Duration::from_secs(60)));
        assert!(collected.due("rep3", p, Duration::from_secs(60)));
        assert!(collected.due("ec4+2", p, Duration::ZERO));
    }
}
