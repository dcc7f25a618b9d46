//! Index endpoints: one shard's entries on one device. Bodies are binary: an entry in
//! `nimbus_core::index`'s encoding, or a frame of records (`encode_records`).
//!
//! | method | path (under `/v1/index/{device}/{account}/{container}/{shard}`) | does |
//! |---|---|---|
//! | PUT | `?key=` + `x-nimbus-precondition` [+ `x-nimbus-replicas`] | apply as the shard's primary (peering first, see `api::peering`) → `{"seq"}`, or 412 |
//! | PUT | `/replicated?key=&seq=` | apply a primary's write as a replica → `{"applied"}` |
//! | GET | `?key=` [+ `x-nimbus-lease-read`, `x-nimbus-replicas`] | the key's record (tombstones included), or 404; as primary (peering first) marked `x-nimbus-leased` when under the lease |
//! | DELETE | `?key=&seq=` | forget the key's tombstone if it is still the one of `seq` → `{"purged"}` (anti-entropy) |
//! | GET | `/list?prefix=&start_after=&limit=&tombstones=` [+ `x-nimbus-replicas`] | records in key order (as primary: peering first) |
//! | GET | `/since?seq=&limit=` | records newer than `seq`, in seq order |
//! | GET | `/last-seq` | `{"seq"}` |
//! | GET | `/digest` | `{"digest", "keys"}`: a digest of the shard's (key, seq) pairs, tombstones included |
//!
//! and `GET /v1/index/{device}` → `{"shards": [{"account", "container", "shard"}]}`: every
//! shard the device holds writes of (for anti-entropy).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use nimbus_core::ids::VersionId;
use nimbus_core::index::{IndexEntry, IndexRecord, ShardId, encode_records};
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::{ApiError, NodeState, peering};
use crate::index::{ApplyError, IndexStore, ListQuery, Precondition, ReplicateError};

/// Header carrying a primary write's condition: `none`, `if-none-match`, `if-match <etag>`
/// or `if-version <16 hex digits>`.
pub const PRECONDITION: &str = "x-nimbus-precondition";

/// Header of a read sent to a shard's primary that may be answered under its lease.
pub const LEASE_READ: &str = "x-nimbus-lease-read";

/// Header of an answer given under the lease: no other replica need be asked.
pub const LEASED: &str = "x-nimbus-leased";

const SHARD: &str = "/v1/index/{device}/{account}/{container}/{shard}";

pub(super) fn routes() -> Router<Arc<NodeState>> {
    Router::new()
        .route(SHARD, get(get_key).put(apply).delete(purge))
        .route(&format!("{SHARD}/replicated"), put(apply_replicated))
        .route(&format!("{SHARD}/list"), get(list))
        .route(&format!("{SHARD}/since"), get(since))
        .route(&format!("{SHARD}/last-seq"), get(last_seq))
        .route(&format!("{SHARD}/digest"), get(digest))
        .route(&format!("{SHARD}/copy"), delete(drop_copy))
        .route("/v1/index/{device}", get(shards))
}

type ShardPath = Path<(String, String, String, u16)>;

fn shard(
    state: &NodeState,
    (device, account, container, shard): (String, String, String, u16),
) -> Result<(&IndexStore, ShardId), ApiError> {
    let index = &state.device(&device)?.index;
    let id = ShardId {
        account,
        container,
        shard,
    };
    id.validate()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok((index, id))
}

fn decode_entry(body: &[u8]) -> Result<IndexEntry, ApiError> {
    IndexEntry::decode(body).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn records(records: &[IndexRecord]) -> Response {
    (
        [("content-type", "application/octet-stream")],
        encode_records(records),
    )
        .into_response()
}

fn parse_precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    let Some(value) = headers.get(PRECONDITION) else {
        return Ok(Precondition::None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::BadRequest(format!("{PRECONDITION} is not text")))?;
    let bad = || {
        ApiError::BadRequest(format!(
            "{PRECONDITION}: {text:?} is not none, if-none-match, if-match ETAG or if-version VERSION"
        ))
    };
    Ok(match text.split_once(' ') {
        None if text == "none" => Precondition::None,
        None if text == "if-none-match" => Precondition::IfNoneMatch,
        Some(("if-match", etag)) => Precondition::IfMatch(etag.to_owned()),
        Some(("if-version", v)) if v.len() == 16 => {
            Precondition::IfVersion(VersionId(u64::from_str_radix(v, 16).map_err(|_| bad())?))
        }
        _ => return Err(bad()),
    })
}

#[derive(Deserialize)]
struct KeyQuery {
    key: String,
}

/// The epoch a request was signed for (checked by authentication before any handler).
fn request_epoch(headers: &HeaderMap) -> u64 {
    headers
        .get(nimbus_core::auth::EPOCH_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Peers the shard first when the request names its replicas (it comes to this device as
/// the shard's primary); returns, if it did, when the device may take writes as the
/// primary (`Peering::ensure`).
async fn peer_if_primary(
    state: &NodeState,
    device: &str,
    index: &IndexStore,
    id: &ShardId,
    headers: &HeaderMap,
) -> Result<Option<Instant>, ApiError> {
    let Some(replicas) = peering::parse_replicas(headers)? else {
        return Ok(None);
    };
    let previous = peering::parse_previous(headers)?;
    let writable_at = state
        .peering
        .ensure(
            index,
            device,
            id,
            request_epoch(headers),
            &replicas,
            &previous,
        )
        .await?;
    Ok(Some(writable_at))
}

async fn apply(
    State(state): State<Arc<NodeState>>,
    Path(path): ShardPath,
    Query(q): Query<KeyQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let device = path.0.clone();
    let (index, id) = shard(&state, path)?;
    let entry = decode_entry(&body)?;
    let condition = parse_precondition(&headers)?;
    // A primary named with its replicas peers first, waits for the leases of the shard's
    // earlier primaries to run out (`crate::lease`), and numbers above every primary of an
    // earlier epoch (see `IndexStore::apply_from`).
    let epoch = request_epoch(&headers);
    let floor = match peer_if_primary(&state, &device, index, &id, &headers).await? {
        Some(writable_at) => {
            if writable_at > Instant::now() {
                state.lease_waits.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep_until(writable_at).await;
            }
            epoch << 32
        }
        None => 0,
    };
    let _gate = state.write_gate(epoch).await?;
    match index.apply_from(&id, &q.key, entry, condition, floor).await {
        Ok(seq) => Ok(axum::Json(json!({ "seq": seq })).into_response()),
        Err(ApplyError::PreconditionFailed { current, .. }) => {
            let current = current.map(|r| {
                json!({
                    "seq": r.seq,
                    "version": r.entry.version.to_string(),
                    "etag": r.entry.etag,
                    "tombstone": r.entry.is_tombstone(),
                })
            });
            let body = json!({ "error": "precondition_failed", "current": current });
            Ok((StatusCode::PRECONDITION_FAILED, axum::Json(body)).into_response())
        }
        Err(ApplyError::Invalid { source, .. }) => Err(ApiError::BadRequest(source.to_string())),
        Err(ApplyError::Index(e)) => Err(ApiError::Index(e.to_string())),
    }
}

#[derive(Deserialize)]
struct ReplicatedQuery {
    key: String,
    seq: u64,
}

async fn apply_replicated(
    State(state): State<Arc<NodeState>>,
    Path(path): ShardPath,
    Query(q): Query<ReplicatedQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (index, id) = shard(&state, path)?;
    let record = IndexRecord {
        seq: q.seq,
        key: q.key,
        entry: decode_entry(&body)?,
    };
    let _gate = state.write_gate(request_epoch(&headers)).await?;
    match index.apply_replicated(&id, record).await {
        Ok(applied) => Ok(axum::Json(json!({ "applied": applied })).into_response()),
        Err(ReplicateError::Index(e)) => Err(ApiError::Index(e.to_string())),
        Err(e) => Err(ApiError::BadRequest(e.to_string())),
    }
}

/// Reads a key's record. A request that asks for a lease ([`LEASE_READ`], with the
/// shard's replicas) comes to the shard's primary, which peers first; its answer carries
/// [`LEASED`] when the node holds a lease on the request's epoch (`crate::lease`), and the
/// proxy then needs no other replica's.
async fn get_key(
    State(state): State<Arc<NodeState>>,
    Path(path): ShardPath,
    Query(q): Query<KeyQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let device = path.0.clone();
    let (index, id) = shard(&state, path)?;
    nimbus_core::index::validate_key(&q.key).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let leased = headers.contains_key(LEASE_READ) && {
        let epoch = request_epoch(&headers);
        match peer_if_primary(&state, &device, index, &id, &headers).await {
            // Checked before the read: every write acknowledged until now is in this copy.
            Ok(Some(_)) => state.epoch() == epoch && state.leases.holds(epoch, Instant::now()),
            Ok(None) => false,
            Err(e) => {
                tracing::debug!(%id, error = %e, "no leased read: peering failed");
                false
            }
        }
    };
    let record = index
        .get(&id, &q.key)
        .await
        .map_err(|e| ApiError::Index(e.to_string()))?;
    let mut response = match record {
        Some(record) => records(&[record]),
        None => ApiError::NotFound {
            what: format!("key {:?} in {id}", q.key),
        }
        .into_response(),
    };
    if leased {
        state.leased_reads.fetch_add(1, Ordering::Relaxed);
        response
            .headers_mut()
            .insert(LEASED, axum::http::HeaderValue::from_static("1"));
    } else if headers.contains_key(LEASE_READ) {
        state.unleased_reads.fetch_add(1, Ordering::Relaxed);
    }
    Ok(response)
}

#[derive(Deserialize)]
struct ListParams {
    #[serde(default)]
    prefix: String,
    start_after: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    tombstones: bool,
}

async fn list(
    State(state): State<Arc<NodeState>>,
    Path(path): ShardPath,
    Query(q): Query<ListParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let device = path.0.clone();
    let (index, id) = shard(&state, path)?;
    peer_if_primary(&state, &device, index, &id, &headers).await?;
    let query = ListQuery {
        prefix: q.prefix,
        start_after: q.start_after,
        limit: q.limit.unwrap_or(1000),
        include_tombstones: q.tombstones,
    };
    let found = index
        .list(&id, &query)
        .await
        .map_err(|e| ApiError::Index(e.to_string()))?;
    Ok(records(&found))
}

#[derive(Deserialize)]
struct SinceParams {
    seq: u64,
    limit: Option<usize>,
}

async fn since(
    State(state): State<Arc<NodeState>>,
    Path(path): ShardPath,
    Query(q): Query<SinceParams>,
) -> Result<Response, ApiError> {
    let (index, id) = shard(&state, path)?;
    let found = index
        .entries_since(&id, q.seq, q.limit.unwrap_or(1000))
        .await
        .map_err(|e| ApiError::Index(e.to_string()))?;
    Ok(records(&found))
}

async fn last_seq(
    State(state): State<Arc<NodeState>>,
    Path(path): ShardPath,
) -> Result<Response, ApiError> {
    let (index, id) = shard(&state, path)?;
    let seq = index
        .last_seq(&id)
        .await
        .map_err(|e| ApiError::Index(e.to_string()))?;
    Ok(axum::Json(json!({ "seq": seq })).into_response())
}

async fn digest(
    State(state): State<Arc<NodeState>>,
    Path(path): ShardPath,
) -> Result<Response, ApiError> {
    let (index, id) = shard(&state, path)?;
    let (digest, keys) = index
        .digest(&id)
        .await
        .map_err(|e| ApiError::Index(e.to_string()))?;
    Ok(axum::Json(json!({ "digest": hex::encode(digest), "keys": keys })).into_response())
}

#[derive(Deserialize)]
struct DigestQuery {
    digest: String,
}

/// Forgets this device's copy of the shard if its digest is still the one given.
async fn drop_copy(
    State(state): State<Arc<NodeState>>,
    Path(path): ShardPath,
    Query(q): Query<DigestQuery>,
) -> Result<Response, ApiError> {
    let (index, id) = shard(&state, path)?;
    let digest: [u8; 32] = hex::decode(&q.digest)
        .ok()
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| ApiError::BadRequest("digest: not 64 hex digits".into()))?;
    let dropped = index
        .drop_copy(&id, digest)
        .await
        .map_err(|e| ApiError::Index(e.to_string()))?;
    Ok(axum::Json(json!({ "dropped": dropped })).into_response())
}

async fn shards(
    State(state): State<Arc<NodeState>>,
    Path(device): Path<String>,
) -> Result<Response, ApiError> {
    let index = &state.device(&device)?.index;
    let shards = index
        .shards()
        .await
        .map_err(|e| ApiError::Index(e.to_string()))?;
    let shards: Vec<_> = shards
        .into_iter()
        .map(|s| json!({ "account": s.account, "container": s.container, "shard": s.shard }))
        .collect();
    Ok(axum::Json(json!({ "shards": shards })).into_response())
}

async fn purge(
    State(state): State<Arc<NodeState>>,
    Path(path): ShardPath,
    Query(q): Query<ReplicatedQuery>,
) -> Result<Response, ApiError> {
    let (index, id) = shard(&state, path)?;
    nimbus_core::index::validate_key(&q.key).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let purged = index
        .purge_tombstone(&id, &q.key, q.seq)
        .await
        .map_err(|e| ApiError::Index(e.to_string()))?;
    Ok(axum::Json(json!({ "purged": purged })).into_response())
}
