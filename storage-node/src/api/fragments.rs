//! Fragment endpoints: write (phase 1), commit (phase 2), read, delete, partition listing.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use nimbus_core::fragment::{DEFAULT_BLOCK_RECORD_BYTES, FragmentHeader};
use nimbus_core::ids::{PartitionId, VersionId};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, NodeState, headers};
use crate::store::FragmentId;

/// The longest object path accepted (it must fit in a fragment header).
const MAX_OBJECT_PATH_BYTES: usize = 3072;

pub(super) fn routes() -> Router<Arc<NodeState>> {
    Router::new()
        .route(
            "/v1/fragments/{device}/{policy}/{partition}/{version}/{index}",
            get(read).put(write).delete(delete),
        )
        .route(
            "/v1/fragments/{device}/{policy}/{partition}/{version}/{index}/commit",
            post(commit),
        )
        .route("/v1/partitions/{device}/{policy}/{partition}", get(list))
        .route("/v1/partitions/{device}/{policy}", get(policy_digests))
}

/// What a policy-wide digest call asks for.
#[derive(Deserialize)]
struct PolicyQuery {
    /// Must be `objects`.
    digest: String,
}

/// The objects digests of every partition of a policy on a device, per fragment index.
async fn policy_digests(
    State(state): State<Arc<NodeState>>,
    Path((device, policy)): Path<(String, String)>,
    Query(query): Query<PolicyQuery>,
) -> Result<Response, ApiError> {
    if query.digest != "objects" {
        return Err(ApiError::BadRequest(format!(
            "digest={:?}: the only digest is \"objects\"",
            query.digest
        )));
    }
    let store = &state.device(&device)?.fragments;
    let mut partitions = serde_json::Map::new();
    for (partition, digests) in store.policy_objects_digests(&policy).await? {
        let per_index: serde_json::Map<String, serde_json::Value> = digests
            .into_iter()
            .map(|(index, d)| (index.to_string(), json!(hex::encode(d))))
            .collect();
        partitions.insert(partition.0.to_string(), per_index.into());
    }
    Ok(axum::Json(json!({ "partitions": partitions })).into_response())
}

type FragmentPath = Path<(String, String, u32, String, u8)>;

#[derive(Deserialize)]
struct ObjectQuery {
    path: String,
    offset: Option<u64>,
    length: Option<u64>,
}

/// Checks an object path: `account/container/object`, none empty, no NUL, not too long.
fn check_object_path(path: &str) -> Result<(), ApiError> {
    let mut parts = path.splitn(3, '/');
    let ok = parts.by_ref().take(3).filter(|p| !p.is_empty()).count() == 3
        && path.len() <= MAX_OBJECT_PATH_BYTES
        && !path.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "object path {path:?} is not account/container/object (at most {MAX_OBJECT_PATH_BYTES} bytes)"
        )))
    }
}

fn fragment_id(
    (policy, partition, version, index): (String, u32, String, u8),
    query: &ObjectQuery,
) -> Result<FragmentId, ApiError> {
    check_object_path(&query.path)?;
    if version.len() != 16 {
        return Err(ApiError::BadRequest(format!(
            "version {version:?} is not 16 hex digits"
        )));
    }
    let version = u64::from_str_radix(&version, 16)
        .map_err(|_| ApiError::BadRequest(format!("version {version:?} is not 16 hex digits")))?;
    Ok(FragmentId {
        policy,
        partition: PartitionId(partition),
        object_path: query.path.clone(),
        version: VersionId(version),
        index,
    })
}

/// The device's store and the fragment a request names.
fn resolve<'a>(
    state: &'a NodeState,
    (device, policy, partition, version, index): (String, String, u32, String, u8),
    query: &ObjectQuery,
) -> Result<(&'a crate::store::FragmentStore, FragmentId), ApiError> {
    let store = &state.device(&device)?.fragments;
    Ok((
        store,
        fragment_id((policy, partition, version, index), query)?,
    ))
}

fn header_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ApiError::BadRequest(format!("{name} is not a number")))
        })
        .transpose()
}

async fn write(
    State(state): State<Arc<NodeState>>,
    Path(path): FragmentPath,
    Query(query): Query<ObjectQuery>,
    request_headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (store, id) = resolve(&state, path, &query)?;
    let declared = header_u64(&request_headers, headers::DATA_BYTES)?
        .ok_or_else(|| ApiError::BadRequest(format!("{} is required", headers::DATA_BYTES)))?;
    let segment_bytes = header_u64(&request_headers, headers::SEGMENT_BYTES)?
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!("{} is required (u32)", headers::SEGMENT_BYTES))
        })?;
    let header = FragmentHeader {
        version: id.version,
        fragment_index: id.index,
        policy: id.policy.clone(),
        object_path: id.object_path.clone(),
        object_bytes: header_u64(&request_headers, headers::OBJECT_BYTES)?,
        segment_bytes,
        block_record_bytes: DEFAULT_BLOCK_RECORD_BYTES,
        metadata: Vec::new(),
    };
    let mut writer = store.begin_write(id, header).await?;
    let mut received: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        // A body that breaks off (the sender died, the connection dropped) ends the write;
        // dropping the writer removes what it wrote.
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("body ended early: {e}")))?;
        received += chunk.len() as u64;
        if received > declared {
            return Err(ApiError::BadRequest(format!(
                "body longer than the {declared} bytes declared"
            )));
        }
        writer.write(&chunk).await?;
    }
    let footer = writer.finish(Some(declared)).await?;
    let body = json!({
        "data_bytes": footer.data_bytes,
        "blake3": hex::encode(footer.blake3),
    });
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

async fn commit(
    State(state): State<Arc<NodeState>>,
    Path(path): FragmentPath,
    Query(query): Query<ObjectQuery>,
) -> Result<StatusCode, ApiError> {
    let (store, id) = resolve(&state, path, &query)?;
    store.commit(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete(
    State(state): State<Arc<NodeState>>,
    Path(path): FragmentPath,
    Query(query): Query<ObjectQuery>,
) -> Result<StatusCode, ApiError> {
    let (store, id) = resolve(&state, path, &query)?;
    store.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn read(
    State(state): State<Arc<NodeState>>,
    Path(path): FragmentPath,
    Query(query): Query<ObjectQuery>,
) -> Result<Response, ApiError> {
    let (store, id) = resolve(&state, path, &query)?;
    let offset = query.offset.unwrap_or(0);
    let end = query
        .length
        .map_or(u64::MAX, |len| offset.saturating_add(len));
    let mut reader = store.read(&id, offset..end).await?;
    let range = reader.range();
    let footer = *reader.footer();
    // Verify the first chunk before answering, so that a corrupt fragment is a clean 404
    // rather than a broken-off 200 in the common case.
    let first = reader.next_chunk().await?;
    let stream =
        futures_util::stream::unfold((first, Some(reader)), |(pending, reader)| async move {
            if let Some(chunk) = pending {
                return Some((Ok(Bytes::from(chunk)), (None, reader)));
            }
            let mut reader = reader?;
            match reader.next_chunk().await {
                Ok(Some(chunk)) => Some((Ok(Bytes::from(chunk)), (None, Some(reader)))),
                Ok(None) => None,
                // A later block failed verification: the body breaks off before its bytes,
                // so the receiver sees a short body, never a corrupt one.
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), (None, None))),
            }
        });
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(headers::DATA_BYTES, HeaderValue::from(footer.data_bytes));
    if let Ok(v) = HeaderValue::from_str(&hex::encode(footer.blake3)) {
        h.insert(headers::BLAKE3, v);
    }
    h.insert("content-length", HeaderValue::from(range.end - range.start));
    Ok(response)
}

/// What a partition listing asks for.
#[derive(Deserialize)]
struct ListQuery {
    /// `objects`: answer only the digest of the committed (object hash, version) pairs.
    digest: Option<String>,
    /// With `digest=objects`: only the fragments of this index.
    index: Option<u8>,
    /// `1`: give each committed fragment its object path, object and segment bytes (one
    /// header read per fragment).
    paths: Option<u8>,
}

async fn list(
    State(state): State<Arc<NodeState>>,
    Path((device, policy, partition)): Path<(String, String, u32)>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let store = &state.device(&device)?.fragments;
    let partition = PartitionId(partition);
    if let (Some("objects"), Some(index)) = (query.digest.as_deref(), query.index) {
        let digest = store
            .partition_summary(&policy, partition)
            .await?
            .digest(index);
        return Ok(axum::Json(json!({ "objects_digest": hex::encode(digest) })).into_response());
    }
    let fragments = store.list_partition(&policy, partition).await?;
    match query.digest.as_deref() {
        None => {}
        Some("objects") => {
            let digest = crate::store::objects_digest(&fragments, query.index);
            return Ok(axum::Json(json!({ "objects_digest": hex::encode(digest) })).into_response());
        }
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "digest={other:?}: the only digest is \"objects\""
            )));
        }
    }
    let digest = crate::store::listing_digest(&fragments);
    let with_paths = query.paths == Some(1);
    let mut rows = Vec::with_capacity(fragments.len());
    for f in &fragments {
        let mut row = json!({
            "object_hash": f.object_hash,
            "version": f.version.to_string(),
            "index": f.index,
            "durable": f.durable,
        });
        if with_paths && f.durable {
            match store.open_listed(&policy, partition, f).await {
                Ok(reader) => {
                    let h = reader.header();
                    row["path"] = json!(h.object_path);
                    row["object_bytes"] = json!(h.object_bytes);
                    row["segment_bytes"] = json!(h.segment_bytes);
                }
                // Deleted since it was listed, or quarantined just now: no longer here.
                Err(
                    crate::store::StoreError::NotFound { .. }
                    | crate::store::StoreError::Corrupt { .. },
                ) => {
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        rows.push(row);
    }
    Ok(axum::Json(json!({
        "digest": hex::encode(digest),
        "objects_digest": hex::encode(crate::store::objects_digest(&fragments, None)),
        "fragments": rows,
    }))
    .into_response())
}
