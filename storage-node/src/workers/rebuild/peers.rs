//! The reconstructor's and the mover's view of other devices: their partition listings
//! and, once per pass, their objects digests of a whole policy.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use nimbus_core::ids::{PartitionId, VersionId};
use nimbus_proxy::node_client::{SmallCall, encode_query};
use nimbus_ring::map::DeviceKey;
use serde::Deserialize;

use crate::store::objects_digest;
use crate::workers::{Ctx, WorkerError};

/// How long a partition digest or listing may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// A fragment as another device's partition listing shows it.
#[derive(Clone, Debug, Deserialize)]
pub(in crate::workers) struct PeerFragment {
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
    pub(in crate::workers) fn version_id(&self) -> Option<VersionId> {
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
pub(in crate::workers) fn key(d: &nimbus_ring::device::Device) -> DeviceKey {
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
pub(in crate::workers) async fn peer_listing(
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
pub(super) async fn peer_digest(
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
