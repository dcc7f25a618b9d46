//! The background workers of a device (DESIGN.md, "Background workers"): pass after pass over
//! the device's partitions, each partition is
//!
//! 1. **moved** (`mover`): a fragment whose slot belongs to another device (a handoff kept
//!    while the owner was down, or a slot the ring gave away) is copied to the owner and
//!    deleted here only once the owner has committed it;
//! 2. **rebuilt** (`rebuild`): where this device owns a slot, the other slots are compared
//!    (digests, then listings) and fragments missing here are rebuilt from any `k` others;
//! 3. **collected** (`gc`): fragment files no index entry references (overwritten and
//!    deleted versions, PUTs that never committed) are removed once older than the grace
//!    period.
//!
//! The workers are clients of the cluster like a proxy is: they follow the cluster map
//! (`nimbus_proxy::cluster`), call other nodes with the signed internal API
//! (`nimbus_proxy::node_client`) and read the index through `nimbus_proxy::index`.
//!
//! **Invariant:** a fragment leaves this device only after another device holds it committed,
//! or after the index, read from a majority, says no entry references its version.

mod gc;
mod index_sync;
mod mover;
mod rebuild;
mod throttle;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use nimbus_core::ids::PartitionId;
use nimbus_proxy::cluster::Cluster;
use nimbus_proxy::error::DataError;
use nimbus_proxy::index::IndexClient;
use nimbus_proxy::node_client::NodeClient;
use nimbus_ring::map::{ClusterMap, DeviceKey};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::store::{FragmentStore, StoreError};

pub use gc::Collected;
pub use throttle::Throttle;

/// How a device's workers pace themselves.
#[derive(Clone, Copy, Debug)]
pub struct WorkerConfig {
    /// Bytes per second read to move or rebuild fragments, at most.
    pub bytes_per_sec: u64,
    /// The pause between the end of one pass and the start of the next.
    pub pass_pause: Duration,
    /// Partitions worked on at once.
    pub concurrent_partitions: usize,
    /// How long a fragment file must be unchanged before the collector may remove it.
    pub gc_grace: Duration,
    /// How often index replicas are compared (index anti-entropy).
    pub index_sync: Duration,
    /// How long a delete's tombstone is kept before anti-entropy forgets it everywhere.
    pub tombstone_grace: Duration,
}

/// Why a step on one partition failed; the pass goes on with the next partition.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The cluster (index, other nodes) did not answer as needed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Another node answered with an error.
    #[error("{0}")]
    Peer(String),
}

/// What a device's workers have done (monotonic counters) and are doing.
#[derive(Debug, Default)]
pub struct WorkerStats {
    passes: AtomicU64,
    pass_partitions: AtomicU64,
    pass_done: AtomicU64,
    pass_started_unix: AtomicU64,
    last_pass_secs: AtomicU64,
    moved_fragments: AtomicU64,
    moved_bytes: AtomicU64,
    rebuilt_fragments: AtomicU64,
    rebuilt_bytes: AtomicU64,
    reclaimed_fragments: AtomicU64,
    reclaimed_bytes: AtomicU64,
    misplaced: AtomicU64,
    degraded_partitions: AtomicU64,
    errors: AtomicU64,
    index_records_repaired: AtomicU64,
    index_syncs: AtomicU64,
    index_tombstones_purged: AtomicU64,
    index_copies_dropped: AtomicU64,
    /// Counted during the running pass; published into `misplaced` and
    /// `degraded_partitions` when the pass ends.
    counting_misplaced: AtomicU64,
    counting_degraded: AtomicU64,
}

/// A copy of [`WorkerStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkerReport {
    /// Whole passes completed.
    pub passes: u64,
    /// Partitions in the running pass (0 between passes).
    pub pass_partitions: u64,
    /// Partitions of the running pass done.
    pub pass_done: u64,
    /// When the running pass started (Unix seconds; 0 before the first).
    pub pass_started_unix: u64,
    /// How long the last whole pass took, in seconds.
    pub last_pass_secs: u64,
    /// Fragments copied to the device that owns their slot (then deleted here).
    pub moved_fragments: u64,
    /// Their data bytes.
    pub moved_bytes: u64,
    /// Fragments rebuilt here from others.
    pub rebuilt_fragments: u64,
    /// Their data bytes.
    pub rebuilt_bytes: u64,
    /// Fragment files removed as garbage or orphans.
    pub reclaimed_fragments: u64,
    /// Their bytes on disk.
    pub reclaimed_bytes: u64,
    /// Committed fragments on this device whose slot another device owns, as the last pass
    /// found them.
    pub misplaced: u64,
    /// Partitions this device owns a slot of where some version lacked a fragment at its
    /// owner, as the last pass found them.
    pub degraded_partitions: u64,
    /// Steps that failed (each is retried by the next pass).
    pub errors: u64,
    /// Index records copied between replicas of a shard by anti-entropy.
    pub index_records_repaired: u64,
    /// Whole anti-entropy passes over this device's index shards.
    pub index_syncs: u64,
    /// Tombstones forgotten (on every replica) after the grace period.
    pub index_tombstones_purged: u64,
    /// Copies of shards the index ring no longer places here, forgotten once every replica
    /// held their records.
    pub index_copies_dropped: u64,
}

impl WorkerStats {
    /// The counters now.
    #[must_use]
    pub fn report(&self) -> WorkerReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerReport {
            passes: get(&self.passes),
            pass_partitions: get(&self.pass_partitions),
            pass_done: get(&self.pass_done),
            pass_started_unix: get(&self.pass_started_unix),
            last_pass_secs: get(&self.last_pass_secs),
            moved_fragments: get(&self.moved_fragments),
            moved_bytes: get(&self.moved_bytes),
            rebuilt_fragments: get(&self.rebuilt_fragments),
            rebuilt_bytes: get(&self.rebuilt_bytes),
            reclaimed_fragments: get(&self.reclaimed_fragments),
            reclaimed_bytes: get(&self.reclaimed_bytes),
            misplaced: get(&self.misplaced),
            degraded_partitions: get(&self.degraded_partitions),
            errors: get(&self.errors),
            index_records_repaired: get(&self.index_records_repaired),
            index_syncs: get(&self.index_syncs),
            index_tombstones_purged: get(&self.index_tombstones_purged),
            index_copies_dropped: get(&self.index_copies_dropped),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a fragment moved to its owner.
    pub(crate) fn moved(&self, bytes: u64) {
        Self::add(&self.moved_fragments, 1);
        Self::add(&self.moved_bytes, bytes);
    }

    /// Counts a fragment rebuilt here.
    pub(crate) fn rebuilt(&self, bytes: u64) {
        Self::add(&self.rebuilt_fragments, 1);
        Self::add(&self.rebuilt_bytes, bytes);
    }

    /// Counts a file removed as garbage or an orphan.
    pub(crate) fn reclaimed(&self, bytes: u64) {
        Self::add(&self.reclaimed_fragments, 1);
        Self::add(&self.reclaimed_bytes, bytes);
    }

    /// Counts fragments found here whose slot another device owns (this pass).
    pub(crate) fn found_misplaced(&self, n: u64) {
        Self::add(&self.counting_misplaced, n);
    }

    /// Counts a partition found below full redundancy (this pass).
    pub(crate) fn found_degraded(&self) {
        Self::add(&self.counting_degraded, 1);
    }
}

/// What every step of a device's workers uses.
pub struct Ctx {
    /// This device, as the ring names it.
    pub device: DeviceKey,
    /// Its fragment store.
    pub store: FragmentStore,
    /// The cluster map, kept current.
    pub cluster: Cluster,
    /// Signed calls to other nodes.
    pub nodes: NodeClient,
    /// Index reads (majority, with read repair).
    pub index: IndexClient,
    /// The device's byte budget for moving and rebuilding.
    pub throttle: Throttle,
    /// Counters.
    pub stats: Arc<WorkerStats>,
    /// Pace.
    pub config: WorkerConfig,
    /// When the collector last went over each partition.
    pub collected: Collected,
}

/// One device's workers.
pub struct Workers {
    ctx: Arc<Ctx>,
    /// When index anti-entropy last ran.
    index_synced: std::sync::Mutex<Option<Instant>>,
    /// Woken to start a pass at once (the auditor quarantined a fragment).
    wake: Arc<Notify>,
}

impl Workers {
    /// Workers for the device in `ctx`; `wake` starts a pass early.
    #[must_use]
    pub fn new(ctx: Ctx, wake: Arc<Notify>) -> Self {
        Workers {
            ctx: Arc::new(ctx),
            index_synced: std::sync::Mutex::new(None),
            wake,
        }
    }

    /// Works pass after pass until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        if self.ctx.config.bytes_per_sec == 0 {
            return;
        }
        loop {
            tokio::select! {
                () = self.pass() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(self.ctx.config.pass_pause) => {}
                () = self.wake.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One pass over every partition this device holds fragments of or owns a slot of.
    async fn pass(&self) {
        let ctx = &self.ctx;
        let started = Instant::now();
        let map = ctx.cluster.map();
        let partitions = match self.partitions(&map).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, device = %ctx.device.device, "worker pass: partitions not listed");
                WorkerStats::add(&ctx.stats.errors, 1);
                return;
            }
        };
        let stats = &ctx.stats;
        stats
            .pass_partitions
            .store(partitions.len() as u64, Ordering::Relaxed);
        stats.pass_done.store(0, Ordering::Relaxed);
        stats.pass_started_unix.store(unix_now(), Ordering::Relaxed);
        stats.counting_misplaced.store(0, Ordering::Relaxed);
        stats.counting_degraded.store(0, Ordering::Relaxed);
        futures_util::stream::iter(partitions)
            .for_each_concurrent(ctx.config.concurrent_partitions, |(policy, partition)| {
                let map = Arc::clone(&map);
                async move {
                    if let Err(e) = partition_steps(ctx, &map, &policy, partition).await {
                        tracing::debug!(error = %e, device = %ctx.device.device, %policy, partition = partition.0, "worker step failed");
                        WorkerStats::add(&ctx.stats.errors, 1);
                    }
                    WorkerStats::add(&ctx.stats.pass_done, 1);
                }
            })
            .await;
        let take = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        stats
            .misplaced
            .store(take(&stats.counting_misplaced), Ordering::Relaxed);
        stats
            .degraded_partitions
            .store(take(&stats.counting_degraded), Ordering::Relaxed);
        stats.pass_partitions.store(0, Ordering::Relaxed);
        if self.index_sync_due() {
            match index_sync::pass(ctx, &map).await {
                Ok(()) => WorkerStats::add(&stats.index_syncs, 1),
                Err(e) => {
                    tracing::debug!(error = %e, device = %ctx.device.device, "index anti-entropy pass cut short");
                    WorkerStats::add(&stats.errors, 1);
                }
            }
        }
        stats
            .last_pass_secs
            .store(started.elapsed().as_secs(), Ordering::Relaxed);
        WorkerStats::add(&stats.passes, 1);
    }

    /// Whether index anti-entropy is due; marks it run now if so.
    fn index_sync_due(&self) -> bool {
        let Ok(mut last) = self.index_synced.lock() else {
            return true;
        };
        let due = last.is_none_or(|t| t.elapsed() >= self.ctx.config.index_sync);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// The (policy, partition) pairs of a pass: those where the ring gives this device a
    /// slot (a wiped device has no directories), then those it only holds fragments of. That
    /// order is the workers' priority: repairing what this device is responsible for comes
    /// before handing healthy data on to its new owners.
    async fn partitions(&self, map: &ClusterMap) -> Result<Vec<(String, PartitionId)>, StoreError> {
        let ctx = &self.ctx;
        let mut owned = BTreeSet::new();
        for name in map.policy_names() {
            let Some(ring) = map.policy(name).and_then(|p| p.ring.as_ref()) else {
                continue;
            };
            for p in 0..ring.partitions() {
                let partition = PartitionId(p);
                if owned_slot(ring, partition, &ctx.device).is_some() {
                    owned.insert((name.to_owned(), partition));
                }
            }
        }
        let held: BTreeSet<(String, PartitionId)> = ctx
            .store
            .partitions_on_disk()
            .await?
            .into_iter()
            .filter(|p| !owned.contains(p))
            .collect();
        Ok(owned.into_iter().chain(held).collect())
    }
}

/// The steps of one partition, in order: move what belongs elsewhere, rebuild what is
/// missing here, collect garbage.
async fn partition_steps(
    ctx: &Ctx,
    map: &ClusterMap,
    policy: &str,
    partition: PartitionId,
) -> Result<(), WorkerError> {
    mover::partition(ctx, map, policy, partition).await?;
    rebuild::partition(ctx, map, policy, partition).await?;
    gc::partition(ctx, map, policy, partition).await
}

/// The slot `device` owns in `partition` of `ring`, if any.
#[must_use]
pub fn owned_slot(
    ring: &nimbus_ring::placement::Ring,
    partition: PartitionId,
    device: &DeviceKey,
) -> Option<usize> {
    ring.primaries(partition)
        .position(|d| d.location.node == device.node && d.location.name == device.device)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A device on 127.0.0.1:`port` named `d0`, for the workers' unit tests.
#[cfg(test)]
fn test_device(port: u16) -> DeviceKey {
    DeviceKey {
        node: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        device: "d0".into(),
    }
}
