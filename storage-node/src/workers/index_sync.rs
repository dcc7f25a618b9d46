//! Index anti-entropy: replicas of an index shard converge. Every `index_sync` period, for
//! each shard this device holds: the shard's primary (its first slot the map has up) compares
//! the shard's digest with each other replica's; another replica compares with the primary
//! (which may never have heard of the shard); a copy left on a device the index ring no
//! longer gives the shard is compared with every replica. Where two digests differ, it
//! reads both sides whole and copies each record to the side where it is missing or older
//! (by sequence number: the newest write wins; tombstones are records like any other and
//! travel the same way). Read repair does the same for single keys on reads.
//!
//! A copy left behind by a rebalance of the index ring still counts for reads and writes
//! while the rebalance's transition lasts (`ring::map::PreviousRing`). Once it is over, and
//! once every replica is up and already held the copy's records, the copy is dropped.
//!
//! Tombstones are kept for `tombstone_grace`, then forgotten — by the shard's primary, on
//! every replica, and only in a sync where all of them were up and already agreed, so that
//! no replica that missed the delete can bring the deleted record back.
//!
//! All of it goes through the internal API, this device's own included, as replication does.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use nimbus_core::index::{IndexRecord, ShardId, decode_records};
use nimbus_proxy::node_client::{SmallCall, encode_query};
use nimbus_proxy::placement::Place;
use nimbus_ring::map::{ClusterMap, DeviceKey};
use serde::Deserialize;
use std::time::Duration;

use super::{Ctx, WorkerError, WorkerStats};

/// Records read per call.
const PAGE: usize = 1000;
/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
struct Shards {
    shards: Vec<Listed>,
}

#[derive(Deserialize)]
struct Listed {
    account: String,
    container: String,
    shard: u16,
}

#[derive(Deserialize)]
struct Digest {
    digest: String,
}

/// One pass over the shards this device holds.
pub(super) async fn pass(ctx: &Ctx, map: &ClusterMap) -> Result<(), WorkerError> {
    let Some(policy) = map.index_policy() else {
        return Ok(());
    };
    let epoch = map.epoch().0;
    let me = &ctx.device;
    let listed = call(
        ctx,
        me,
        Method::GET,
        format!("/v1/index/{}", encode_query(&me.device)),
        epoch,
        None,
    )
    .await?;
    let shards: Shards = serde_json::from_slice(&listed)
        .map_err(|e| WorkerError::Peer(format!("shard list of {}: {e}", me.device)))?;
    let mut failed = None;
    for Listed {
        account,
        container,
        shard,
    } in shards.shards
    {
        let shard = ShardId {
            account,
            container,
            shard,
        };
        let name = nimbus_proxy::index::Shard {
            account: &shard.account,
            container: &shard.container,
            shard: shard.shard,
        }
        .name();
        let place = Place::of_shard(map, policy, &name)?;
        let primary = place.slots.iter().find(|(_, up)| *up).map(|(d, _)| d);
        let in_slots = place.slots.iter().any(|(d, _)| d == me);
        // A replaced ring's replicas still count while its transition lasts; a copy no ring
        // in effect places here is leaving.
        let in_previous = place.previous.iter().flatten().any(|(d, _)| d == me);
        let leaving = !in_slots && !in_previous;
        // The primary reconciles every replica; any other holder reconciles with the
        // primary (which may lack the shard altogether: it was down while it was written);
        // a copy the ring no longer places here is handed to every replica.
        let partners: Vec<&DeviceKey> = if !in_slots || primary == Some(me) {
            place
                .slots
                .iter()
                .filter(|(d, up)| *up && d != me)
                .map(|(d, _)| d)
                .collect()
        } else {
            primary.into_iter().collect()
        };
        let mut all_agree = true;
        let mut agreed_on = None;
        for replica in &partners {
            match reconcile(ctx, &shard, replica, epoch, leaving).await {
                Ok(Some(digest)) => agreed_on = Some(digest),
                Ok(None) => all_agree = false,
                Err(e) => {
                    tracing::debug!(error = %e, %shard, replica = %replica.node, "index anti-entropy step failed");
                    all_agree = false;
                    failed = Some(e);
                }
            }
        }
        // Tombstones are forgotten only by the primary, and only when every one of the
        // shard's replicas is up and already held the same records: no replica can bring
        // back what a tombstone deleted.
        let every_slot_up = place.slots.iter().all(|(_, up)| *up);
        // A copy no ring in effect places here is forgotten once every replica is up and
        // already held the same records (the digest guards against a write that reached the
        // copy since).
        if leaving
            && all_agree
            && every_slot_up
            && let Some(digest) = &agreed_on
            && let Err(e) = drop_copy(ctx, &shard, digest, epoch).await
        {
            tracing::debug!(error = %e, %shard, "stale index copy not dropped");
            failed = Some(e);
        }
        if primary == Some(me)
            && all_agree
            && every_slot_up
            && let Err(e) = purge_tombstones(ctx, &shard, &place.slots, epoch).await
        {
            tracing::debug!(error = %e, %shard, "tombstones not purged");
            failed = Some(e);
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Makes this device's copy of `shard` and `replica`'s hold the same newest records — or,
/// for a copy the ring no longer places here (`leaving`), only hands this device's records
/// over, since nothing reads the copy once its transition is over. Returns this device's
/// digest if `replica` already held every record it has.
async fn reconcile(
    ctx: &Ctx,
    shard: &ShardId,
    replica: &DeviceKey,
    epoch: u64,
    leaving: bool,
) -> Result<Option<String>, WorkerError> {
    let me = &ctx.device;
    let (my_digest, theirs) = (
        digest(ctx, me, shard, epoch).await?,
        digest(ctx, replica, shard, epoch).await?,
    );
    if my_digest == theirs {
        return Ok(Some(my_digest));
    }
    let mine = records(ctx, me, shard, epoch).await?;
    let theirs = records(ctx, replica, shard, epoch).await?;
    let directions: &[_] = if leaving {
        &[(&mine, replica, &theirs)]
    } else {
        &[(&mine, replica, &theirs), (&theirs, me, &mine)]
    };
    let mut copied = 0u64;
    let mut handed_over = 0u64;
    for &(from, to, missing) in directions {
        for record in from.values() {
            let newer = missing.get(&record.key).is_none_or(|r| r.seq < record.seq);
            if newer {
                push(ctx, to, shard, record, epoch).await?;
                copied += 1;
                handed_over += u64::from(to == replica);
            }
        }
    }
    ctx.stats.index_repaired(copied);
    tracing::info!(%shard, replica = %replica.node, device = %replica.device, copied, "index replicas reconciled");
    // A leaving copy whose records the replica all held (at the same or a newer sequence
    // number) has nothing more to give; its digest, read first, guards its drop against a
    // write that reached it since.
    Ok((leaving && handed_over == 0).then_some(my_digest))
}

/// Forgets this device's copy of `shard` if it still has `digest`.
async fn drop_copy(
    ctx: &Ctx,
    shard: &ShardId,
    digest: &str,
    epoch: u64,
) -> Result<(), WorkerError> {
    let me = &ctx.device;
    let path = shard_path(me, shard, &format!("/copy?digest={digest}"));
    let body = call(ctx, me, Method::DELETE, path, epoch, None).await?;
    let dropped = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["dropped"].as_bool())
        .unwrap_or(false);
    if dropped {
        ctx.stats.copy_dropped();
        tracing::info!(%shard, device = %me.device, "index copy the ring no longer places here dropped");
    }
    Ok(())
}

/// Forgets, on every replica, the tombstones of `shard` older than the grace period.
async fn purge_tombstones(
    ctx: &Ctx,
    shard: &ShardId,
    slots: &[(DeviceKey, bool)],
    epoch: u64,
) -> Result<(), WorkerError> {
    let now_micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let grace = u64::try_from(ctx.config.tombstone_grace.as_micros()).unwrap_or(u64::MAX);
    let old: Vec<IndexRecord> = records(ctx, &ctx.device, shard, epoch)
        .await?
        .into_values()
        // A tombstone that carries pairs (an S3 delete marker's current entry, `:vid`) says
        // more than "absent": it stays.
        .filter(|r| {
            r.entry.is_tombstone()
                && r.entry.user_metadata.is_empty()
                && r.entry.version.micros().saturating_add(grace) < now_micros
        })
        .collect();
    for record in &old {
        for (device, _) in slots {
            let path = shard_path(
                device,
                shard,
                &format!("?key={}&seq={}", encode_query(&record.key), record.seq),
            );
            call(ctx, device, Method::DELETE, path, epoch, None).await?;
        }
    }
    if !old.is_empty() {
        ctx.stats.tombstones_purged(old.len() as u64);
        tracing::debug!(%shard, purged = old.len(), "tombstones purged");
    }
    Ok(())
}

fn shard_path(device: &DeviceKey, shard: &ShardId, rest: &str) -> String {
    format!(
        "/v1/index/{}/{}/{}/{}{rest}",
        encode_query(&device.device),
        encode_query(&shard.account),
        encode_query(&shard.container),
        shard.shard
    )
}

async fn digest(
    ctx: &Ctx,
    device: &DeviceKey,
    shard: &ShardId,
    epoch: u64,
) -> Result<String, WorkerError> {
    let body = call(
        ctx,
        device,
        Method::GET,
        shard_path(device, shard, "/digest"),
        epoch,
        None,
    )
    .await?;
    let d: Digest = serde_json::from_slice(&body)
        .map_err(|e| WorkerError::Peer(format!("digest of {shard} on {}: {e}", device.node)))?;
    Ok(d.digest)
}

/// Every record of `shard` on `device`, tombstones included, by key.
async fn records(
    ctx: &Ctx,
    device: &DeviceKey,
    shard: &ShardId,
    epoch: u64,
) -> Result<HashMap<String, IndexRecord>, WorkerError> {
    let mut out = HashMap::new();
    let mut from = 0u64;
    loop {
        let path = shard_path(device, shard, &format!("/since?seq={from}&limit={PAGE}"));
        let body = call(ctx, device, Method::GET, path, epoch, None).await?;
        let page = decode_records(&body).map_err(|e| {
            WorkerError::Peer(format!("records of {shard} on {}: {e}", device.node))
        })?;
        let count = page.len();
        for record in page {
            from = from.max(record.seq);
            out.insert(record.key.clone(), record);
        }
        if count < PAGE {
            return Ok(out);
        }
    }
}

async fn push(
    ctx: &Ctx,
    device: &DeviceKey,
    shard: &ShardId,
    record: &IndexRecord,
    epoch: u64,
) -> Result<(), WorkerError> {
    let path = shard_path(
        device,
        shard,
        &format!(
            "/replicated?key={}&seq={}",
            encode_query(&record.key),
            record.seq
        ),
    );
    let body = Bytes::from(record.entry.encode());
    call(ctx, device, Method::PUT, path, epoch, Some(body)).await?;
    Ok(())
}

/// A signed call whose answer must be 200; returns its body.
async fn call(
    ctx: &Ctx,
    device: &DeviceKey,
    method: Method,
    path: String,
    epoch: u64,
    body: Option<Bytes>,
) -> Result<Bytes, WorkerError> {
    let mut call = SmallCall::new(method, path.clone(), epoch, CALL_TIMEOUT);
    if let Some(body) = body {
        call = call.body(body);
    }
    let answer = ctx
        .nodes
        .call(device, call)
        .await
        .map_err(|e| WorkerError::Peer(e.to_string()))?;
    if answer.status != StatusCode::OK {
        return Err(WorkerError::Peer(format!(
            "{} {path}: {}",
            device.node, answer.status
        )));
    }
    Ok(answer.body)
}

impl WorkerStats {
    /// Counts index records copied between replicas.
    pub(crate) fn index_repaired(&self, n: u64) {
        WorkerStats::add(&self.index_records_repaired, n);
    }

    /// Counts copies of shards forgotten where the ring no longer places them.
    pub(crate) fn copy_dropped(&self) {
        WorkerStats::add(&self.index_copies_dropped, 1);
    }

    /// Counts tombstones forgotten on every replica.
    pub(crate) fn tombstones_purged(&self, n: u64) {
        WorkerStats::add(&self.index_tombstones_purged, n);
    }
}
