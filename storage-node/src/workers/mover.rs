//! The mover: rebalancing and handoff revert are one mechanism. A committed fragment here
//! whose fragment index names a slot another device owns in the current ring (a handoff kept
//! while its owner was down, or a slot the ring gave away) is counted as misplaced and, when
//! the map has the owner up, copied to it under the same name and header fields (a PUT, then
//! a commit, like a proxy's), then deleted here.
//!
//! **Invariant:** a fragment is deleted here only after its owner answered 201 then 204 for
//! it, or listed it as committed: never before another device holds it durable.
//!
//! Fragments of an unknown policy, or with an index beyond the policy's slots, are left alone.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use nimbus_core::ids::{PartitionId, VersionId};
use nimbus_proxy::data::FragmentName;
use nimbus_proxy::node_client::{SmallCall, channel_body};
use nimbus_ring::map::{ClusterMap, DeviceKey};

use super::rebuild::{key, peer_listing, transfer_timeout};
use super::{Ctx, WorkerError};
use crate::api::headers;
use crate::store::{FragmentId, FragmentReader, ListedFragment};

/// How long a commit may take.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Chunks queued between the local reader and the upload.
const QUEUE: usize = 2;

/// What the mover found in a partition.
#[derive(Debug, Default, PartialEq, Eq)]
struct Misplaced<'a> {
    /// Committed fragments whose slot another device owns, with that slot.
    moves: Vec<(&'a ListedFragment, usize)>,
    /// Committed fragments whose index is beyond the policy's slots.
    strays: Vec<&'a ListedFragment>,
}

/// Sorts the committed fragments of `local` whose slot (their index) `owners` gives to a
/// device other than `me`.
fn misplaced<'a>(
    local: &'a [ListedFragment],
    owners: &[DeviceKey],
    me: &DeviceKey,
) -> Misplaced<'a> {
    let mut out = Misplaced::default();
    for f in local.iter().filter(|f| f.durable) {
        let slot = usize::from(f.index);
        match owners.get(slot) {
            None => out.strays.push(f),
            Some(owner) if owner != me => out.moves.push((f, slot)),
            Some(_) => {}
        }
    }
    out
}

/// The move step of one partition.
pub(super) async fn partition(
    ctx: &Ctx,
    map: &ClusterMap,
    policy: &str,
    partition: PartitionId,
) -> Result<(), WorkerError> {
    let summary = ctx.store.partition_summary(policy, partition).await?;
    if summary.digests.is_empty() {
        return Ok(());
    }
    let Some(ring) = map.policy(policy).and_then(|p| p.ring.as_ref()) else {
        tracing::warn!(%policy, partition = partition.0, device = %ctx.device.device, "fragments of an unknown policy left alone");
        return Ok(());
    };
    let owners: Vec<DeviceKey> = ring.primaries(partition).map(key).collect();
    // Only fragment indexes this device owns: nothing to move, no need to list.
    if summary
        .indexes()
        .all(|i| owners.get(usize::from(i)) == Some(&ctx.device))
    {
        return Ok(());
    }
    let local = ctx.store.list_partition(policy, partition).await?;
    let found = misplaced(&local, &owners, &ctx.device);
    if !found.strays.is_empty() {
        tracing::warn!(%policy, partition = partition.0, device = %ctx.device.device, count = found.strays.len(), slots = owners.len(), "fragments with an index beyond the policy's slots left alone");
    }
    if found.moves.is_empty() {
        return Ok(());
    }
    ctx.stats.found_misplaced(found.moves.len() as u64);
    let epoch = map.epoch().0;
    let mut by_owner: BTreeMap<usize, Vec<&ListedFragment>> = BTreeMap::new();
    for (f, slot) in found.moves {
        by_owner.entry(slot).or_default().push(f);
    }
    let mut first_error = None;
    for (slot, fragments) in by_owner {
        let owner = &owners[slot];
        if !map.is_up(owner) {
            continue;
        }
        let held: HashSet<(String, VersionId, u8)> =
            match peer_listing(ctx, owner, policy, partition, epoch, false).await {
                Ok(rows) => rows
                    .into_iter()
                    .filter(|r| r.durable)
                    .filter_map(|r| Some((r.version_id()?, r)))
                    .map(|(v, r)| (r.object_hash, v, r.index))
                    .collect(),
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
        for f in fragments {
            let owner_has = held.contains(&(f.object_hash.clone(), f.version, f.index));
            match move_one(ctx, epoch, policy, partition, f, owner, owner_has).await {
                Ok(bytes) => ctx.stats.moved(bytes),
                Err(e) => {
                    tracing::debug!(%policy, partition = partition.0, version = %f.version, fragment_index = f.index, owner = %owner.node, error = %e, "fragment not moved");
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Makes sure `owner` holds `f` committed (copying it unless `owner_has` it), then deletes it
/// here; returns its data bytes.
async fn move_one(
    ctx: &Ctx,
    epoch: u64,
    policy: &str,
    partition: PartitionId,
    f: &ListedFragment,
    owner: &DeviceKey,
    owner_has: bool,
) -> Result<u64, WorkerError> {
    let reader = ctx.store.open_listed(policy, partition, f).await?;
    let header = reader.header().clone();
    let data_bytes = reader.footer().data_bytes;
    let name = FragmentName {
        policy: policy.to_owned(),
        partition,
        version: header.version,
        path: header.object_path.clone(),
    };
    let index = usize::from(header.fragment_index);
    if header.fragment_index != f.index || header.version != f.version {
        return Err(WorkerError::Peer(format!(
            "fragment file {} names fragment {} of {}",
            reader.path().display(),
            header.fragment_index,
            header.version
        )));
    }
    if !owner_has {
        let mut fields = vec![
            (headers::DATA_BYTES, data_bytes.to_string()),
            (headers::SEGMENT_BYTES, header.segment_bytes.to_string()),
            ("content-length", data_bytes.to_string()),
        ];
        if let Some(object_bytes) = header.object_bytes {
            fields.push((headers::OBJECT_BYTES, object_bytes.to_string()));
        }
        let path = name.api_path(owner, index, "");
        let peer =
            |what: String| WorkerError::Peer(format!("{}/{}: {what}", owner.node, owner.device));
        let (tx, body) = channel_body(QUEUE);
        let request = ctx
            .nodes
            .send(owner.node, Method::PUT, &path, epoch, &fields, body);
        let feed = feed(ctx, reader, tx);
        let (answer, fed) = tokio::time::timeout(transfer_timeout(data_bytes), async {
            tokio::join!(request, feed)
        })
        .await
        .map_err(|_| peer("fragment upload timed out".into()))?;
        fed?;
        let answer = answer.map_err(|e| WorkerError::Peer(e.to_string()))?;
        if answer.status() != StatusCode::CREATED {
            return Err(peer(format!(
                "fragment upload answered {}",
                answer.status()
            )));
        }
        let commit = ctx
            .nodes
            .call(
                owner,
                SmallCall::new(
                    Method::POST,
                    name.api_path(owner, index, "/commit"),
                    epoch,
                    COMMIT_TIMEOUT,
                ),
            )
            .await
            .map_err(|e| WorkerError::Peer(e.to_string()))?;
        if commit.status != StatusCode::NO_CONTENT {
            return Err(peer(format!("fragment commit answered {}", commit.status)));
        }
    }
    // The owner holds it durable: only now does it leave this device.
    ctx.store
        .delete(&FragmentId {
            policy: policy.to_owned(),
            partition,
            object_path: header.object_path,
            version: header.version,
            index: header.fragment_index,
        })
        .await?;
    tracing::debug!(%policy, partition = partition.0, version = %f.version, fragment_index = f.index, owner = %owner.node, copied = !owner_has, "fragment moved to its owner");
    Ok(data_bytes)
}

/// Streams a local fragment's data into an upload body, through the throttle. A read error
/// aborts the upload (the owner keeps nothing of it).
async fn feed(
    ctx: &Ctx,
    mut reader: FragmentReader,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), WorkerError> {
    let range = reader.range();
    let mut left = range.end - range.start;
    let step = ctx.store.engine().buffer_bytes() as u64;
    loop {
        ctx.throttle.take(left.min(step)).await;
        match reader.next_chunk().await {
            Ok(Some(chunk)) => {
                left = left.saturating_sub(chunk.len() as u64);
                if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                    // The upload ended (its answer says why).
                    return Ok(());
                }
            }
            Ok(None) => return Ok(()),
            Err(e) => {
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                return Err(e.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::workers::test_device as dev;

    fn listed(index: u8, durable: bool) -> ListedFragment {
        ListedFragment {
            object_hash: "abc".into(),
            version: VersionId(1),
            index,
            durable,
        }
    }

    #[test]
    fn only_committed_fragments_of_slots_owned_elsewhere_move() {
        let owners = vec![dev(1), dev(2), dev(3)];
        let local = vec![
            listed(0, true),  // mine
            listed(1, true),  // owned by dev(2): moves
            listed(2, false), // pending: left to its PUT or the collector
            listed(5, true),  // beyond the slots: left alone
        ];
        let found = misplaced(&local, &owners, &dev(1));
        assert_eq!(found.moves, vec![(&local[1], 1)]);
        assert_eq!(found.strays, vec![&local[3]]);
    }
}
