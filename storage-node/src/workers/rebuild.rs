//! The reconstructor: where this device owns slot `i` of a partition, it compares the
//! partition with the other slots' owners (those the map has up) and rebuilds every object
//! version committed at `k` or more of them but with no fragment `i` here.
//!
//! The comparison costs one 32-byte digest per other slot when nothing differs: each side
//! hashes the (object hash, version) pairs its slot holds committed. The other devices'
//! digests come for a whole policy in one call per device and pass
//! (`GET /v1/partitions/{device}/{policy}?digest=objects`, kept in [`PEER_DIGESTS`]). Only
//! the slots whose digest differs are listed in full, fresh, with the object paths
//! (`?paths=1`), which a rebuild needs to name the fragments it reads.
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Bytes, HttpBody};
use axum::http::{Method, StatusCode};
use bytes_buf::BytesBuf;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use nimbus_core::codec::Codec;
use nimbus_core::fragment::{DEFAULT_BLOCK_RECORD_BYTES, FragmentHeader};
use nimbus_core::ids::{PartitionId, VersionId};
use nimbus_proxy::data::{FragmentName, Shape};
use nimbus_proxy::node_client::{SmallCall, empty_body, encode_query};
use nimbus_ring::map::{ClusterMap, DeviceKey};
use serde::Deserialize;

use super::{Ctx, WorkerError, owned_slot};
use crate::api::headers;
use crate::store::{FragmentId, ListedFragment, objects_digest};

/// How long a partition digest or listing may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);
/// Fragments of one partition rebuilt at once.
const REBUILDS_AT_ONCE: usize = 4;
/// How long opening a fragment to read may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// The least rate a rebuild or move may run at before it is given up (bytes per second),
/// beyond a fixed minute.
const SLOWEST_BYTES_PER_SEC: u64 = 1 << 20;

/// A fragment as another device's partition listing shows it.
#[derive(Clone, Debug, Deserialize)]
pub(super) struct PeerFragment {
    /// Hex blake3 of the object path.
    pub object_hash: String,
    /// The version, 16 hex digits.
    pub version: String,
    /// The fragment index.
    pub index: u8,
    /// Committed, or only written.
    pub durable: bool,
    /// The object path (with `?paths=1`, committed fragments only).
    #[serde(default)]
    pub path: Option<String>,
    /// The object's bytes, if the fragment's header has them (with `?paths=1`).
    #[serde(default)]
    pub object_bytes: Option<u64>,
    /// Bytes per segment (with `?paths=1`).
    #[serde(default)]
    pub segment_bytes: Option<u32>,
}

impl PeerFragment {
    /// The version, if well formed.
    pub(super) fn version_id(&self) -> Option<VersionId> {
        (self.version.len() == 16)
            .then(|| u64::from_str_radix(&self.version, 16).ok())
            .flatten()
            .map(VersionId)
    }
}

#[derive(Deserialize)]
struct Listing {
    fragments: Vec<PeerFragment>,
}

/// Returns the device key of a ring device.
pub(super) fn key(d: &nimbus_ring::device::Device) -> DeviceKey {
    DeviceKey {
        node: d.location.node,
        device: d.location.name.clone(),
    }
}

/// The internal API path of a partition's listing on `device`, with `query`.
fn listing_path(device: &DeviceKey, policy: &str, partition: PartitionId, query: &str) -> String {
    format!(
        "/v1/partitions/{}/{}/{}{query}",
        encode_query(&device.device),
        encode_query(policy),
        partition.0
    )
}

/// Sends a listing call and reads its JSON answer.
async fn listing_call<T: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    device: &DeviceKey,
    path: String,
    epoch: u64,
) -> Result<T, WorkerError> {
    let peer =
        |what: String| WorkerError::Peer(format!("{}/{}: {what}", device.node, device.device));
    let answer = ctx
        .nodes
        .call(
            device,
            SmallCall::new(Method::GET, path, epoch, LIST_TIMEOUT),
        )
        .await
        .map_err(|e| WorkerError::Peer(e.to_string()))?;
    if answer.status != StatusCode::OK {
        return Err(peer(format!(
            "partition listing answered {}",
            answer.status
        )));
    }
    serde_json::from_slice(&answer.body).map_err(|e| peer(format!("partition listing: {e}")))
}

/// Returns `device`'s listing of a partition (with object paths when `paths`).
///
/// # Errors
/// [`WorkerError::Peer`] when the device does not answer 200 with a listing.
pub(super) async fn peer_listing(
    ctx: &Ctx,
    device: &DeviceKey,
    policy: &str,
    partition: PartitionId,
    epoch: u64,
    paths: bool,
) -> Result<Vec<PeerFragment>, WorkerError> {
    let query = if paths { "?paths=1" } else { "" };
    let path = listing_path(device, policy, partition, query);
    let listing: Listing = listing_call(ctx, device, path, epoch).await?;
    Ok(listing.fragments)
}

/// Another device's objects digests of one policy: partition → fragment index → hex digest.
type PolicyDigests = HashMap<u32, HashMap<u8, String>>;

#[derive(Deserialize)]
struct PolicyDigestsAnswer {
    partitions: PolicyDigests,
}

/// What a device learnt of another device's digests in one pass.
type CachedDigests = (u64, Option<Arc<PolicyDigests>>);

/// This device, the other device, the policy.
type DigestsKey = (DeviceKey, DeviceKey, String);

/// Other devices' digests, fetched once per pass: keyed by (this device, the other device,
/// policy), with the pass number they were fetched in (`None`: the fetch failed that pass,
/// so the other device is not asked again until the next). Fetching per pass rather than per
/// partition costs a device one call per other device and policy instead of one per
/// partition and slot (thousands per pass on a small cluster). A digest up to a pass old is
/// only a hint: a difference is checked against fresh listings.
static PEER_DIGESTS: LazyLock<Mutex<HashMap<DigestsKey, CachedDigests>>> =
    LazyLock::new(Mutex::default);

/// Returns `device`'s objects digest of fragment index `index` in a partition (hex), from
/// its digests of the whole policy, fetched once per pass.
async fn peer_digest(
    ctx: &Ctx,
    device: &DeviceKey,
    policy: &str,
    partition: PartitionId,
    index: usize,
    epoch: u64,
) -> Result<String, WorkerError> {
    let pass = ctx.stats.passes.load(Ordering::Relaxed);
    let key = (ctx.device.clone(), device.clone(), policy.to_owned());
    let cached = PEER_DIGESTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
        .filter(|(p, _)| *p == pass)
        .map(|(_, d)| d.clone());
    let digests = match cached {
        Some(Some(digests)) => digests,
        Some(None) => {
            return Err(WorkerError::Peer(format!(
                "{}/{}: digests unavailable this pass",
                device.node, device.device
            )));
        }
        None => {
            let path = format!(
                "/v1/partitions/{}/{}?digest=objects",
                encode_query(&device.device),
                encode_query(policy)
            );
            let fetched = listing_call::<PolicyDigestsAnswer>(ctx, device, path, epoch)
                .await
                .map(|a| Arc::new(a.partitions));
            PEER_DIGESTS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key, (pass, fetched.as_ref().ok().cloned()));
            fetched?
        }
    };
    let Ok(index) = u8::try_from(index) else {
        return Ok(String::new());
    };
    Ok(digests
        .get(&partition.0)
        .and_then(|m| m.get(&index))
        .cloned()
        .unwrap_or_else(|| hex::encode(objects_digest(&[], Some(index)))))
}

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
    let mut wanted: BTreeMap<(&str, VersionId), Option<Rebuild>> = BTreeMap::new();
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
            let entry = wanted.entry(pair).or_default();
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
        rebuilds: wanted
            .into_values()
            .flatten()
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
    let local = ctx.store.list_partition(policy, partition).await?;
    let mine = hex::encode(objects_digest(&local, Some(index)));
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
    let listings = futures_util::future::join_all(
        differing
            .iter()
            .map(|(_, d)| peer_listing(ctx, d, policy, partition, epoch, true)),
    )
    .await;
    let mut peers = Vec::with_capacity(differing.len());
    for ((j, device), listing) in differing.into_iter().zip(listings) {
        match listing {
            Ok(rows) => peers.push((j, device, rows)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let plan = plan(slot, &local, &peers, shape.codec.data());
    if plan.degraded {
        ctx.stats.found_degraded();
    }
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

/// How long moving or rebuilding `bytes` may take at most.
pub(super) fn transfer_timeout(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / SLOWEST_BYTES_PER_SEC)
}

/// A fragment's data arriving from another device.
type DataStream = BoxStream<'static, Result<Bytes, String>>;

/// Opens fragment `index` on `device` for reading all of it; returns its data bytes (as
/// the device declares them) and its stream.
async fn open_source(
    ctx: &Ctx,
    epoch: u64,
    name: &FragmentName,
    device: &DeviceKey,
    index: usize,
) -> Result<(u64, DataStream), WorkerError> {
    let peer =
        |what: String| WorkerError::Peer(format!("{}/{}: {what}", device.node, device.device));
    let path = name.api_path(device, index, "");
    let answer = tokio::time::timeout(
        OPEN_TIMEOUT,
        ctx.nodes
            .send(device.node, Method::GET, &path, epoch, &[], empty_body()),
    )
    .await
    .map_err(|_| peer(format!("no answer within {OPEN_TIMEOUT:?}")))?
    .map_err(|e| WorkerError::Peer(e.to_string()))?;
    if answer.status() != StatusCode::OK {
        return Err(peer(format!("fragment read answered {}", answer.status())));
    }
    let data_bytes = answer
        .headers()
        .get(headers::DATA_BYTES)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| peer(format!("no {} on a fragment read", headers::DATA_BYTES)))?;
    let body = answer.into_body();
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        loop {
            match futures_util::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx))
                .await
            {
                None => return None,
                Some(Err(e)) => return Some((Err(e.to_string()), body)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Some((Ok(data), body));
                    }
                }
            }
        }
    });
    Ok((data_bytes, stream.boxed()))
}

/// The header of a fragment rebuilt here.
fn rebuilt_header(id: &FragmentId, r: &Rebuild) -> FragmentHeader {
    FragmentHeader {
        version: id.version,
        fragment_index: id.index,
        policy: id.policy.clone(),
        object_path: id.object_path.clone(),
        object_bytes: r.object_bytes,
        segment_bytes: r.segment_bytes,
        block_record_bytes: DEFAULT_BLOCK_RECORD_BYTES,
        metadata: Vec::new(),
    }
}

fn name_of(id: &FragmentId) -> FragmentName {
    FragmentName {
        policy: id.policy.clone(),
        partition: id.partition,
        version: id.version,
        path: id.object_path.clone(),
    }
}

/// Copies another slot's copy (replication); returns the data bytes.
async fn copy_fragment(
    ctx: &Ctx,
    epoch: u64,
    id: &FragmentId,
    r: &Rebuild,
) -> Result<u64, WorkerError> {
    let name = name_of(id);
    let mut last = None;
    for (device, index) in &r.sources {
        let (data_bytes, mut stream) = match open_source(ctx, epoch, &name, device, *index).await {
            Ok(opened) => opened,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        if let Some(expected) = r.object_bytes
            && expected != data_bytes
        {
            return Err(WorkerError::Peer(format!(
                "{}/{}: a copy of {data_bytes} bytes of an object of {expected}",
                device.node, device.device
            )));
        }
        let copy = async {
            let mut writer = ctx
                .store
                .begin_write(id.clone(), rebuilt_header(id, r))
                .await?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(WorkerError::Peer)?;
                ctx.throttle.take(chunk.len() as u64).await;
                writer.write(&chunk).await?;
            }
            writer.finish(Some(data_bytes)).await?;
            ctx.store.commit(id).await?;
            Ok::<_, WorkerError>(data_bytes)
        };
        return tokio::time::timeout(transfer_timeout(data_bytes), copy)
            .await
            .map_err(|_| WorkerError::Peer("copy timed out".into()))?;
    }
    Err(last.unwrap_or_else(|| WorkerError::Peer("no copy to read".into())))
}

/// One source fragment read piece by piece.
struct Source {
    index: usize,
    stream: DataStream,
    buf: BytesBuf,
}

impl Source {
    async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, WorkerError> {
        while self.buf.len() < n {
            match self.stream.next().await {
                Some(Ok(data)) => self.buf.extend(&data),
                Some(Err(e)) => return Err(WorkerError::Peer(e)),
                None => {
                    return Err(WorkerError::Peer(format!(
                        "fragment {} ended early",
                        self.index
                    )));
                }
            }
        }
        Ok(self.buf.take(n))
    }
}

/// Rebuilds an erasure-coded fragment from `k` others, segment by segment; returns the data
/// bytes.
async fn reconstruct_fragment(
    ctx: &Ctx,
    epoch: u64,
    id: &FragmentId,
    r: &Rebuild,
    codec: &Arc<Codec>,
) -> Result<u64, WorkerError> {
    let internal = |e: nimbus_core::codec::CodecError| {
        WorkerError::Data(nimbus_proxy::error::DataError::Internal(e.to_string()))
    };
    let Some(object_bytes) = r.object_bytes else {
        return Err(WorkerError::Peer(format!(
            "fragment of {} {} without its object's size",
            id.object_path, id.version
        )));
    };
    let data_bytes = codec
        .fragment_bytes(object_bytes, r.segment_bytes)
        .map_err(internal)?;
    let spans = codec
        .segment_spans(object_bytes, r.segment_bytes, 0..object_bytes)
        .map_err(internal)?;
    let k = codec.data();
    let name = name_of(id);
    let work = async {
        let mut sources: Vec<Source> = Vec::with_capacity(k);
        let mut last = None;
        if data_bytes > 0 {
            // Data fragments first: with all of them the segment needs no decoding, and a
            // missing data fragment is computed alone (parity ones only when asked for).
            let mut ordered: Vec<&(DeviceKey, usize)> = r.sources.iter().collect();
            ordered.sort_by_key(|(_, j)| (*j >= k, *j));
            for (device, index) in ordered {
                if sources.len() == k {
                    break;
                }
                match open_source(ctx, epoch, &name, device, *index).await {
                    Ok((bytes, stream)) if bytes == data_bytes => sources.push(Source {
                        index: *index,
                        stream,
                        buf: BytesBuf::default(),
                    }),
                    Ok((bytes, _)) => {
                        last = Some(WorkerError::Peer(format!(
                            "{}/{}: fragment {index} of {bytes} bytes, {data_bytes} expected",
                            device.node, device.device
                        )));
                    }
                    Err(e) => last = Some(e),
                }
            }
            if sources.len() < k {
                return Err(last.unwrap_or_else(|| {
                    WorkerError::Peer(format!("{} of {k} fragments readable", sources.len()))
                }));
            }
        }
        let mut writer = ctx
            .store
            .begin_write(id.clone(), rebuilt_header(id, r))
            .await?;
        let target = usize::from(id.index);
        for span in spans {
            let len = (span.fragment_range.end - span.fragment_range.start) as usize;
            ctx.throttle.take((len * k) as u64).await;
            let pieces =
                futures_util::future::join_all(sources.iter_mut().map(|s| s.read_exact(len))).await;
            let mut fragments: Vec<Option<Vec<u8>>> = vec![None; codec.total()];
            for (source, piece) in sources.iter().zip(pieces) {
                fragments[source.index] = Some(piece?);
            }
            let codec = Arc::clone(codec);
            let segment_len = span.segment_len;
            let piece = tokio::task::spawn_blocking(move || {
                if target < codec.data() {
                    codec.reconstruct(&mut fragments, segment_len)?;
                } else {
                    codec.reconstruct_all(&mut fragments, segment_len)?;
                }
                Ok::<_, nimbus_core::codec::CodecError>(fragments.swap_remove(target))
            })
            .await
            .map_err(|e| {
                WorkerError::Data(nimbus_proxy::error::DataError::Internal(e.to_string()))
            })?
            .map_err(internal)?;
            let piece = piece.ok_or_else(|| {
                WorkerError::Data(nimbus_proxy::error::DataError::Internal(
                    "reconstruction left the fragment out".into(),
                ))
            })?;
            writer.write(&piece).await?;
        }
        writer.finish(Some(data_bytes)).await?;
        ctx.store.commit(id).await?;
        Ok(data_bytes)
    };
    tokio::time::timeout(transfer_timeout(data_bytes), work)
        .await
        .map_err(|_| WorkerError::Peer("reconstruction timed out".into()))?
}

/// Bytes received and not yet used.
mod bytes_buf {
    /// A growable byte queue.
    #[derive(Debug, Default)]
    pub(super) struct BytesBuf(Vec<u8>);

    impl BytesBuf {
        pub(super) fn len(&self) -> usize {
            self.0.len()
        }

        pub(super) fn extend(&mut self, data: &[u8]) {
            self.0.extend_from_slice(data);
        }

        /// Removes and returns the first `n` bytes (`n <= len`).
        pub(super) fn take(&mut self, n: usize) -> Vec<u8> {
            let rest = self.0.split_off(n);
            std::mem::replace(&mut self.0, rest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(port: u16) -> DeviceKey {
        DeviceKey {
            node: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            device: "d0".into(),
        }
    }

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
