//! Whether any index entry still references an object version's fragments: the question
//! the storage nodes' collector asks before removing a fragment file. The answer knows every
//! place the proxy keeps references:
//!
//! - the key's current entry (its own version, or the versions of its parts);
//! - the bucket's version records (`#versions`, key `object key NUL inverted version`), kept
//!   while S3 versioning has kept old versions;
//! - the parts of the key's multipart uploads in progress (`#uploads`, key `object key NUL
//!   upload id`; `#parts`, key `upload id/part number`).
//!
//! Before removing fragments, the current entry is read from every replica, not a majority
//! ([`Asked::EveryReplica`]): a write that was never acknowledged may have left its record
//! on one replica only, and read repair or anti-entropy may later copy it to all. Its
//! fragments must then still be there, or the object would be listed and never readable. (The listings below are answered by the
//! shard's primary after it peers with the other replicas.)
//! **Invariant:** any doubt (a bucket this map does not know, an index that does not answer)
//! answers "referenced": the collector keeps what it cannot prove dead.

use std::collections::HashSet;

use nimbus_core::ids::VersionId;
use nimbus_core::index::{EntryData, IndexEntry};
use nimbus_ring::map::ClusterMap;

use crate::error::DataError;
use crate::index::IndexClient;
use crate::s3::multipart::{MAX_PART_NUMBER, parts_container, uploads_container};
use crate::s3::versions::versions_container;

/// The most version records or uploads of one key read per page.
const PAGE: usize = 1000;

/// Which replicas of the key's shard answer the question about its current entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asked {
    /// Every replica: before removing fragments, where a reference that only one replica
    /// holds must count.
    EveryReplica,
    /// A majority: before rebuilding fragments, which must not wait for every replica (a
    /// reference that only one replica holds is rebuilt once it has spread).
    Majority,
}

/// Tells whether `version`'s fragments under `object_path` (`account/container/key`) are
/// referenced by an index entry.
///
/// # Errors
/// [`DataError::Unavailable`] when a replica of the key's shard did not answer, or the
/// listings could not be read; the caller keeps the fragments.
pub async fn is_referenced(
    index: &IndexClient,
    map: &ClusterMap,
    object_path: &str,
    version: VersionId,
    asked: Asked,
) -> Result<bool, DataError> {
    let dead = unreferenced_versions(index, map, object_path, &[version], asked).await?;
    Ok(!dead.contains(&version))
}

/// Returns which of `versions` (all of one key, `object_path` = `account/container/key`) no
/// index entry references: [`is_referenced`] for many versions at the cost of one, since the
/// key's entry and its listings are read once, whatever the number of versions.
///
/// # Errors
/// As [`is_referenced`]; the caller then keeps every version's fragments.
pub async fn unreferenced_versions(
    index: &IndexClient,
    map: &ClusterMap,
    object_path: &str,
    versions: &[VersionId],
    asked: Asked,
) -> Result<HashSet<VersionId>, DataError> {
    // The versions no reference was found for yet; each place references live is read
    // until none is left.
    let mut open: HashSet<VersionId> = versions.iter().copied().collect();
    let note = |entry: &IndexEntry, open: &mut HashSet<VersionId>| {
        open.retain(|v| !references(entry, *v));
        open.is_empty()
    };
    let mut parts = object_path.splitn(3, '/');
    let (Some(account), Some(container), Some(key)) = (parts.next(), parts.next(), parts.next())
    else {
        return Ok(HashSet::new()); // not a path the proxy writes: not ours to judge
    };
    let Some(bucket) = map.bucket(container).filter(|b| b.owner == account) else {
        // A bucket created after this map, or deleted (only when empty of live objects).
        return Ok(HashSet::new());
    };
    if open.is_empty() {
        return Ok(open);
    }
    let shard = IndexClient::shard_of(account, container, key, bucket.shards);
    let current = match asked {
        Asked::EveryReplica => index.read_every_replica(&shard, key).await?,
        Asked::Majority => index.read(&shard, key).await?,
    };
    if let Some(current) = current
        && note(&current.entry, &mut open)
    {
        return Ok(open);
    }
    let record_prefix = format!("{key}\0");
    let versions = versions_container(container);
    if any_page(
        index,
        account,
        &versions,
        bucket.shards,
        &record_prefix,
        |r| note(r, &mut open),
    )
    .await?
    {
        return Ok(open);
    }
    let uploads = index
        .list(
            account,
            &uploads_container(container),
            bucket.shards,
            &record_prefix,
            None,
            PAGE,
        )
        .await?;
    let parts = parts_container(container);
    for upload in uploads {
        let Some(upload_id) = upload.key.strip_prefix(&record_prefix) else {
            continue;
        };
        let recorded = index
            .list(
                account,
                &parts,
                bucket.shards,
                &format!("{upload_id}/"),
                None,
                MAX_PART_NUMBER as usize,
            )
            .await?;
        if recorded.iter().any(|r| note(&r.entry, &mut open)) {
            return Ok(open);
        }
    }
    Ok(open)
}

/// Reads `container`'s live records under `prefix`, page by page, until `found` holds for
/// one.
async fn any_page(
    index: &IndexClient,
    account: &str,
    container: &str,
    shards: u16,
    prefix: &str,
    mut found: impl FnMut(&IndexEntry) -> bool,
) -> Result<bool, DataError> {
    let mut after: Option<String> = None;
    loop {
        let page = index
            .list(account, container, shards, prefix, after.as_deref(), PAGE)
            .await?;
        if page.iter().any(|r| found(&r.entry)) {
            return Ok(true);
        }
        if page.len() < PAGE {
            return Ok(false);
        }
        after = page.last().map(|r| r.key.clone());
    }
}

/// Whether `entry` reads its bytes from `version`'s fragments.
#[must_use]
pub fn references(entry: &IndexEntry, version: VersionId) -> bool {
    match &entry.data {
        EntryData::Fragments { .. } => entry.version == version,
        EntryData::Parts(parts) => parts.iter().any(|p| p.version == version),
        EntryData::Tombstone | EntryData::Inline(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_core::index::Part;

    fn entry(version: u64, data: EntryData) -> IndexEntry {
        let mut e = IndexEntry::tombstone(VersionId(version), "ec4+2");
        e.data = data;
        e
    }

    #[test]
    fn an_entry_references_its_own_fragments_or_its_parts() {
        let whole = entry(
            7,
            EntryData::Fragments {
                segment_bytes: 1 << 20,
            },
        );
        assert!(references(&whole, VersionId(7)));
        assert!(!references(&whole, VersionId(6)));
        let part = |v| Part {
            version: VersionId(v),
            size: 1,
            segment_bytes: 1 << 20,
            blake3: [0; 32],
        };
        let parts = entry(9, EntryData::Parts(vec![part(3), part(5)]));
        assert!(references(&parts, VersionId(5)));
        assert!(!references(&parts, VersionId(9)));
        assert!(!references(&entry(7, EntryData::Tombstone), VersionId(7)));
        assert!(!references(
            &entry(7, EntryData::Inline(vec![1])),
            VersionId(7)
        ));
    }
}
