//! The reconstructor: where this device owns slot `i` of a partition, it compares the
//! partition with the other slots' owners (those the map has up) and rebuilds every object
//! version committed at `k` or more of them but with no fragment `i` here.
//!
//! The comparison costs one 32-byte digest per other slot when nothing differs: each side
//! hashes the (object hash, version) pairs its slot holds committed. The other devices'
//! digests come for a whole policy in one call per device and pass
//! (`GET /v1/partitions/{device}/{policy}?digest=objects`, kept in `peers::PEER_DIGESTS`).
//! Only the slots whose digest differs are listed in full, fresh, with the object paths
//! (`?paths=1`), which a rebuild needs to name the fragments it reads ([`peers`]); the
//! fragments are then rebuilt ([`fragment`]).
//!
//! A fragment is rebuilt from `k` others, segment by segment: for erasure coding, the
//! segment's `k` fragment pieces are read (data fragments first) and fragment `i`'s piece is
//! computed from them (`Codec::reconstruct` for a data fragment, `Codec::reconstruct_all`
//! for a parity one; the object is never decoded whole); for replication one other copy is
//! read. The result is written through the local store's two phases, like a PUT's fragment,
//! with the same header fields.
//!
//! **Invariant:** a rebuilt fragment is committed only after all its bytes are written and
//! durable; a version with a `.pending` fragment `i` here (a PUT under way) is left to its
//! PUT.

mod fragment;
mod peers;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt;
use nimbus_core::ids::{PartitionId, VersionId};
use nimbus_proxy::data::Shape;
use nimbus_proxy::references::{Asked, is_referenced};
use nimbus_ring::map::{ClusterMap, DeviceKey};

pub(super) use fragment::transfer_timeout;
use fragment::{copy_fragment, reconstruct_fragment};
use peers::{PeerFragment, peer_digest};
pub(super) use peers::{key, peer_listing};

use super::{Ctx, WorkerError, owned_slot};
use crate::store::{FragmentId, ListedFragment};

/// Fragments of one partition rebuilt at once.
const REBUILDS_AT_ONCE: usize = 4;

/// One fragment to rebuild here.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rebuild {
    path: String,
    version: VersionId,
    object_bytes: Option<u64>,
    segment_bytes: u32,
    /// Other slots holding it committed: (device, fragment index there).
    sources: Vec<(DeviceKey, usize)>,
}

/// What a partition needs here.
#[derive(Debug, Default)]
struct Plan {
    /// Some version is committed elsewhere but has no fragment here.
    degraded: bool,
    /// Versions committed at `needed` or more other slots, to rebuild.
    rebuilds: Vec<Rebuild>,
    /// How many versions are committed at `needed` or more other slots, whether or not
    /// their rows had the header fields a rebuild needs (listings without paths have none).
    rebuildable: usize,
}

/// Decides what to rebuild at `slot`: every (object, version) committed at `needed` or more
/// of the listed other slots (each counting only its own fragment index), with no fragment
/// `slot` here, committed or pending.
fn plan(
    slot: usize,
    local: &[ListedFragment],
    peers: &[(usize, DeviceKey, Vec<PeerFragment>)],
    needed: usize,
) -> Plan {
    let here: HashSet<(&str, VersionId)> = local
        .iter()
        .filter(|f| usize::from(f.index) == slot)
        .map(|f| (f.object_hash.as_str(), f.version))
        .collect();
    // Per missing version: the slots holding it, and the rebuild once a row names it.
    let mut wanted: BTreeMap<(&str, VersionId), (usize, Option<Rebuild>)> = BTreeMap::new();
    for (j, device, rows) in peers {
        for row in rows {
            let Some(version) = row.version_id() else {
                continue;
            };
            if !row.durable || usize::from(row.index) != *j {
                continue;
            }
            let pair = (row.object_hash.as_str(), version);
            if here.contains(&pair) {
                continue;
            }
            let (holders, entry) = wanted.entry(pair).or_default();
            *holders += 1;
            match (entry.as_mut(), &row.path, row.segment_bytes) {
                (Some(r), _, _) => r.sources.push((device.clone(), *j)),
                // The path must be the one the listed hash names, or the rebuilt file
                // would land in another object's directory.
                (None, Some(path), Some(segment_bytes))
                    if blake3::hash(path.as_bytes()).to_hex().as_str() == row.object_hash =>
                {
                    *entry = Some(Rebuild {
                        path: path.clone(),
                        version,
                        object_bytes: row.object_bytes,
                        segment_bytes,
                        sources: vec![(device.clone(), *j)],
                    });
                }
                // A row without its header fields cannot be named: it still shows the
                // partition is degraded.
                (None, _, _) => {}
            }
        }
    }
    Plan {
        degraded: !wanted.is_empty(),
        rebuildable: wanted.values().filter(|(n, _)| *n >= needed).count(),
        rebuilds: wanted
            .into_values()
            .filter_map(|(_, r)| r)
            .filter(|r| r.sources.len() >= needed)
            .collect(),
    }
}

/// The rebuild step of one partition.
pub(super) async fn partition(
    ctx: &Ctx,
    map: &ClusterMap,
    policy: &str,
    partition: PartitionId,
) -> Result<(), WorkerError> {
    let Some(ring) = map.policy(policy).and_then(|p| p.ring.as_ref()) else {
        return Ok(());
    };
    let Some(slot) = owned_slot(ring, partition, &ctx.device) else {
        return Ok(());
    };
    let Ok(index) = u8::try_from(slot) else {
        return Ok(());
    };
    let shape = Shape::of(ring.policy())?;
    let epoch = map.epoch().0;
    let mine = hex::encode(
        ctx.store
            .partition_summary(policy, partition)
            .await?
            .digest(index),
    );
    let others: Vec<(usize, DeviceKey)> = ring
        .primaries(partition)
        .map(key)
        .enumerate()
        .filter(|(j, d)| *j != slot && *d != ctx.device && map.is_up(d))
        .collect();
    let digests = futures_util::future::join_all(
        others
            .iter()
            .map(|(j, d)| peer_digest(ctx, d, policy, partition, *j, epoch)),
    )
    .await;
    let mut first_error = None;
    let mut differing = Vec::new();
    for ((j, device), digest) in others.into_iter().zip(digests) {
        match digest {
            Ok(d) if d == mine => {}
            Ok(_) => differing.push((j, device)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if differing.is_empty() {
        return first_error.map_or(Ok(()), Err);
    }
    // Names first (a walk of each directory): while writes are under way digests differ
    // often, and a listing with paths reads the header of every fragment.
    let local = ctx.store.list_partition(policy, partition).await?;
    let peers = peer_listings(
        ctx,
        &differing,
        (policy, partition),
        epoch,
        false,
        &mut first_error,
    )
    .await;
    let mut plan = plan(slot, &local, &peers, shape.codec.data());
    if plan.rebuildable > 0 {
        let peers = peer_listings(
            ctx,
            &differing,
            (policy, partition),
            epoch,
            true,
            &mut first_error,
        )
        .await;
        let local = ctx.store.list_partition(policy, partition).await?;
        plan = self::plan(slot, &local, &peers, shape.codec.data());
    }
    if plan.degraded {
        ctx.stats.found_degraded();
    }
    // Not what another device holds as fragment `index`: a handoff, or the slot's previous
    // owner, whose mover hands it over whole (cheaper than rebuilding it from `k`).
    if !plan.rebuilds.is_empty() {
        let entry = map.policy(policy);
        let moved = entry.and_then(|e| e.builder.last_moved(partition));
        let held = held_elsewhere(ctx, map, ring, moved, (policy, partition), slot, epoch).await;
        plan.rebuilds.retain(|r| {
            let hash = blake3::hash(r.path.as_bytes()).to_hex().to_string();
            !held.contains(&(hash, r.version))
        });
    }
    // Only what the index still references: a version the collectors are removing slot by
    // slot (or a PUT whose entry is not written yet) is not rebuilt; the next pass sees
    // the entry if it comes.
    let mut referenced = Vec::with_capacity(plan.rebuilds.len());
    for r in plan.rebuilds.drain(..) {
        match is_referenced(&ctx.index, map, &r.path, r.version, Asked::Majority).await {
            Ok(true) => referenced.push(r),
            Ok(false) => {}
            Err(e) => {
                first_error.get_or_insert(e.into());
            }
        }
    }
    plan.rebuilds = referenced;
    let codec = Arc::new(shape.codec.clone());
    // A few fragments at once: one rebuild mostly waits on fsyncs and on other nodes.
    let results: Vec<_> = futures_util::stream::iter(plan.rebuilds.iter().cloned())
        .map(|r: Rebuild| {
            let id = FragmentId {
                policy: policy.to_owned(),
                partition,
                object_path: r.path.clone(),
                version: r.version,
                index,
            };
            let codec = &codec;
            async move {
                if shape.copies {
                    copy_fragment(ctx, epoch, &id, &r).await
                } else {
                    reconstruct_fragment(ctx, epoch, &id, &r, codec).await
                }
            }
        })
        .buffered(REBUILDS_AT_ONCE)
        .collect()
        .await;
    for (r, result) in plan.rebuilds.iter().zip(results) {
        match result {
            Ok(bytes) => {
                tracing::debug!(%policy, partition = partition.0, version = %r.version, fragment_index = slot, bytes, "fragment rebuilt");
                ctx.stats.rebuilt(bytes);
            }
            Err(e) => {
                tracing::debug!(%policy, partition = partition.0, version = %r.version, fragment_index = slot, error = %e, "fragment not rebuilt");
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The listings of the `differing` slots' devices (with object paths when `paths`), each
/// with its slot; a device that fails is left out, its error kept in `first_error`.
async fn peer_listings(
    ctx: &Ctx,
    differing: &[(usize, DeviceKey)],
    (policy, partition): (&str, PartitionId),
    epoch: u64,
    paths: bool,
    first_error: &mut Option<WorkerError>,
) -> Vec<(usize, DeviceKey, Vec<PeerFragment>)> {
    let listings = futures_util::future::join_all(
        differing
            .iter()
            .map(|(_, d)| peer_listing(ctx, d, policy, partition, epoch, paths)),
    )
    .await;
    let mut peers = Vec::with_capacity(differing.len());
    for ((j, device), listing) in differing.iter().zip(listings) {
        match listing {
            Ok(rows) => peers.push((*j, device.clone(), rows)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    peers
}

/// For how long after a partition moved its previous owners may still hold its fragments,
/// as far as the reconstructor looks: then it asks every device of the ring, not only the
/// handoffs.
const MOVED_RECENTLY: std::time::Duration = std::time::Duration::from_secs(3600);
/// Handoffs asked otherwise (the proxies write to the first ones).
const HANDOFFS_ASKED: usize = 8;

/// The (object hash, version) pairs whose fragment `slot` a device other than the
/// partition's slots holds committed. Devices that do not answer are passed over: their
/// fragments are then rebuilt, which costs work, not correctness.
async fn held_elsewhere(
    ctx: &Ctx,
    map: &ClusterMap,
    ring: &nimbus_ring::Ring,
    moved: Option<std::time::SystemTime>,
    (policy, partition): (&str, PartitionId),
    slot: usize,
    epoch: u64,
) -> HashSet<(String, VersionId)> {
    let slots: HashSet<DeviceKey> = ring.primaries(partition).map(key).collect();
    let recently = moved.is_some_and(|t| t.elapsed().is_ok_and(|age| age < MOVED_RECENTLY));
    let candidates: Vec<DeviceKey> = if recently {
        ring.devices().iter().map(key).collect()
    } else {
        ring.handoffs(partition)
            .take(HANDOFFS_ASKED)
            .map(key)
            .collect()
    };
    let asked: Vec<DeviceKey> = candidates
        .into_iter()
        .filter(|d| !slots.contains(d) && *d != ctx.device && map.is_up(d))
        .collect();
    let listings = futures_util::future::join_all(
        asked
            .iter()
            .map(|d| peer_listing(ctx, d, policy, partition, epoch, false)),
    )
    .await;
    listings
        .into_iter()
        .flatten()
        .flatten()
        .filter(|row| row.durable && usize::from(row.index) == slot)
        .filter_map(|row| Some((row.object_hash.clone(), row.version_id()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::workers::test_device as dev;

    /// A listing row of object `a/c/{name}`.
    fn row(name: &str, version: u64, index: u8, durable: bool) -> PeerFragment {
        let path = format!("a/c/{name}");
        PeerFragment {
            object_hash: blake3::hash(path.as_bytes()).to_hex().to_string(),
            version: VersionId(version).to_string(),
            index,
            durable,
            path: Some(path),
            object_bytes: Some(10),
            segment_bytes: Some(4),
        }
    }

    fn listed(name: &str, version: u64, index: u8, durable: bool) -> ListedFragment {
        ListedFragment {
            object_hash: blake3::hash(format!("a/c/{name}").as_bytes())
                .to_hex()
                .to_string(),
            version: VersionId(version),
            index,
            durable,
        }
    }

    #[test]
    fn a_version_at_k_other_slots_and_missing_here_is_rebuilt() {
        let peers: Vec<_> = (1..=2)
            .map(|j| (j, dev(j as u16), vec![row("aaa1", 7, j as u8, true)]))
            .collect();
        let plan = plan(0, &[], &peers, 2);
        assert!(plan.degraded);
        assert_eq!(plan.rebuilds.len(), 1);
        assert_eq!(plan.rebuilds[0].path, "a/c/aaa1");
        assert_eq!(plan.rebuilds[0].sources, vec![(dev(1), 1), (dev(2), 2)]);
    }

    #[test]
    fn too_few_sources_pending_here_and_foreign_indexes_rebuild_nothing() {
        // Fewer than k committed elsewhere: degraded, not rebuildable.
        let peers = vec![(1, dev(1), vec![row("aaa1", 7, 1, true)])];
        let plan1 = plan(0, &[], &peers, 2);
        assert!(plan1.degraded && plan1.rebuilds.is_empty());
        // Pending here: a PUT is under way.
        let peers: Vec<_> = (1..=2)
            .map(|j| (j, dev(j as u16), vec![row("aaa1", 7, j as u8, true)]))
            .collect();
        let plan2 = plan(0, &[listed("aaa1", 7, 0, false)], &peers, 2);
        assert!(!plan2.degraded && plan2.rebuilds.is_empty());
        // Rows of another index than the peer's slot, or pending, do not count.
        let peers = vec![
            (1, dev(1), vec![row("aaa1", 7, 3, true)]),
            (2, dev(2), vec![row("aaa1", 7, 2, false)]),
        ];
        let plan3 = plan(0, &[], &peers, 1);
        assert!(!plan3.degraded && plan3.rebuilds.is_empty());
        // A path that does not hash to the listed object: degraded, never written.
        let mut wrong = row("aaa1", 7, 1, true);
        wrong.path = Some("a/c/other".into());
        let plan4 = plan(0, &[], &[(1, dev(1), vec![wrong])], 1);
        assert!(plan4.degraded && plan4.rebuilds.is_empty());
    }
}
