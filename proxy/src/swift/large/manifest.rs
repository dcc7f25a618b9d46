//! Static Large Object manifests written and deleted: `PUT ?multipart-manifest=put` checks
//! the segments and stores the manifest; `DELETE ?multipart-manifest=delete` takes the
//! segments with it.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use nimbus_core::index::IndexEntry;
use nimbus_ring::map::Bucket;
use s3s::dto::StreamingBlob;
use s3s::{S3Result, s3_error};
use serde::Deserialize;

use super::{
    DLO, MAX_MANIFEST_BYTES, MAX_MANIFEST_SEGMENTS, SLO, StoredSegment, no_conditions, parse_range,
    reserved, slo_etag, split_path, stored_manifest,
};
use crate::index::Condition;
use crate::s3::S3State;
use crate::s3::objects::{ChecksumPlan, Stored, live_entry, readable_entry, store_body};
use crate::swift::objects::header;
use crate::swift::{from_s3, text};

/// A segment as a manifest PUT names it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentSpec {
    /// `/container/object`.
    pub path: String,
    /// The segment's ETag, checked when given.
    #[serde(default)]
    pub etag: Option<String>,
    /// The segment's size, checked when given.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// The bytes of the segment used (`a-b`, `a-`, `-n`), all when absent.
    #[serde(default)]
    pub range: Option<String>,
}

/// A validated manifest: the JSON to store, the ETag and the total size.
#[derive(Debug)]
pub struct Manifest {
    /// What is stored as the object's bytes.
    pub json: Vec<u8>,
    /// The SLO ETag.
    pub etag: String,
    /// The segments' bytes in all.
    pub size: u64,
}

/// Checks a manifest PUT's body against the segment objects: the manifest to store, or
/// Swift's "Errors:" lines (`path, reason`; one line for a body that is not a manifest).
///
/// # Errors
/// The index could not be read.
pub async fn check_manifest(
    state: &S3State,
    account: &str,
    body: Bytes,
) -> S3Result<Result<Manifest, Vec<String>>> {
    // Up to 8 MiB of JSON: parsed off the async threads.
    let parsed =
        tokio::task::spawn_blocking(move || serde_json::from_slice::<Vec<SegmentSpec>>(&body))
            .await
            .map_err(|e| s3_error!(InternalError, "manifest parse task: {e}"))?;
    let specs = match parsed {
        Ok(s) => s,
        Err(_) => return Ok(Err(vec!["Manifest must be valid JSON.".to_owned()])),
    };
    if specs.is_empty() {
        return Ok(Err(vec![
            "Manifest must have at least one segment.".to_owned(),
        ]));
    }
    if specs.len() > MAX_MANIFEST_SEGMENTS {
        return Ok(Err(vec![format!(
            "Number of segments must be <= {MAX_MANIFEST_SEGMENTS}"
        )]));
    }
    // Eight segments looked up at a time.
    let mut lookups = Vec::with_capacity(specs.len());
    for chunk in specs.chunks(8) {
        let batch = chunk.iter().map(|spec| lookup(state, account, &spec.path));
        lookups.extend(futures_util::future::join_all(batch).await);
    }
    let mut errors = Vec::new();
    let mut stored = Vec::with_capacity(specs.len());
    let mut size = 0u64;
    for (spec, lookup) in specs.iter().zip(lookups) {
        let path = &spec.path;
        if split_path(path).is_none() {
            errors.push(format!(
                "{path}, path does not refer to an object. Path must be of the form /container/object."
            ));
            continue;
        }
        let Some(entry) = lookup? else {
            errors.push(format!("{path}, 404 Not Found"));
            continue;
        };
        if reserved(&entry, SLO).is_some() || reserved(&entry, DLO).is_some() {
            errors.push(format!("{path}, Nested manifests are not supported"));
            continue;
        }
        if spec
            .etag
            .as_ref()
            .is_some_and(|e| e.trim_matches('"') != entry.etag)
        {
            errors.push(format!("{path}, Etag Mismatch"));
            continue;
        }
        if spec.size_bytes.is_some_and(|s| s != entry.size) {
            errors.push(format!("{path}, Size Mismatch"));
            continue;
        }
        if entry.size == 0 {
            errors.push(format!(
                "{path}, Too small; each segment must be at least 1 byte."
            ));
            continue;
        }
        let range = match &spec.range {
            None => None,
            Some(r) => match parse_range(r, entry.size) {
                Some(r) => Some(r),
                None => {
                    errors.push(format!("{path}, Unsatisfiable Range"));
                    continue;
                }
            },
        };
        size += range.as_ref().map_or(entry.size, |r| r.end - r.start);
        stored.push(StoredSegment {
            name: format!("/{}", path.strip_prefix('/').unwrap_or(path)),
            bytes: entry.size,
            hash: entry.etag.clone(),
            content_type: entry.content_type.clone(),
            last_modified: crate::swift::objects::iso_time(entry.version),
            range: range.map(|r| format!("{}-{}", r.start, r.end - 1)),
        });
    }
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    let json = serde_json::to_vec(&stored)
        .map_err(|e| s3_error!(InternalError, "manifest encoding: {e}"))?;
    Ok(Ok(Manifest {
        etag: slo_etag(&stored),
        json,
        size,
    }))
}

/// The live entry a manifest's path names, if any.
async fn lookup(state: &S3State, account: &str, path: &str) -> S3Result<Option<IndexEntry>> {
    let Some((container, key)) = split_path(path) else {
        return Ok(None);
    };
    match readable_entry(state, account, &container, &key, &no_conditions()).await {
        Ok(entry) => Ok(Some(entry)),
        Err(e) if matches!(e.code().as_str(), "NoSuchKey" | "NoSuchBucket") => Ok(None),
        Err(e) => Err(e),
    }
}

/// `PUT ?multipart-manifest=put`: checks the manifest against its segments, then stores it
/// as the object's bytes with the `:slo` pair. 201 with the SLO ETag (quoted); 400 with
/// Swift's "Errors:" body when a segment is missing or differs; 413 past
/// [`MAX_MANIFEST_BYTES`]; 422 when the request's `ETag` is not the SLO ETag.
pub async fn put_slo(
    state: &Arc<S3State>,
    account: &str,
    (container, key): (&str, &str),
    bucket: &Bucket,
    request: Request,
) -> Response {
    let headers = request.headers().clone();
    let mut pairs = match crate::swift::post::swift_pairs(&headers) {
        Ok(pairs) => pairs,
        Err(e) => return e.answer(),
    };
    pairs.retain(|(n, _)| n != DLO);
    let body = match axum::body::to_bytes(request.into_body(), MAX_MANIFEST_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Manifest File > {MAX_MANIFEST_BYTES} bytes"),
            );
        }
    };
    let manifest = match check_manifest(state, account, body).await {
        Ok(Ok(m)) => m,
        Ok(Err(lines)) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("Errors:\n{}\n", lines.join("\n")),
            );
        }
        Err(e) => return from_s3(&e),
    };
    if header(&headers, "etag").is_some_and(|e| e.trim_matches('"') != manifest.etag) {
        return text(StatusCode::UNPROCESSABLE_ENTITY, "Unprocessable Entity");
    }
    let none = match ChecksumPlan::of(&hyper::HeaderMap::new(), None) {
        Ok(p) => p,
        Err(e) => return from_s3(&e),
    };
    let version = state.data.clock.next();
    let declared = manifest.json.len() as u64;
    let json = Bytes::from(manifest.json);
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(json) });
    let stored = store_body(
        state,
        account,
        container,
        key,
        &bucket.policy,
        version,
        Some(StreamingBlob::wrap(stream)),
        declared,
        None,
        &none,
        true,
    )
    .await;
    let Stored { digests, data } = match stored {
        Ok(s) => s,
        Err(e) => return from_s3(&e),
    };
    pairs.push((SLO.to_owned(), manifest.size.to_string()));
    let entry = IndexEntry {
        version,
        size: digests.bytes,
        etag: manifest.etag.clone(),
        blake3: digests.blake3,
        client_checksums: Vec::new(),
        content_type: header(&headers, "content-type")
            .unwrap_or_default()
            .to_owned(),
        user_metadata: pairs,
        policy: bucket.policy.clone(),
        data,
    };
    if entry.validate().is_err() {
        return text(StatusCode::BAD_REQUEST, "Metadata too large");
    }
    match crate::s3::versions::commit(
        state,
        account,
        container,
        bucket,
        key,
        entry,
        &Condition::None,
    )
    .await
    {
        Ok(_) => {
            let mut response = text(StatusCode::CREATED, "");
            if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", manifest.etag)) {
                response.headers_mut().insert("etag", v);
            }
            response
        }
        Err(e) => from_s3(&e),
    }
}

/// Writes a tombstone for `container/key` if it is live; tells whether it was.
async fn delete_one(state: &S3State, account: &str, container: &str, key: &str) -> S3Result<bool> {
    let bucket = match crate::s3::buckets::owned(state, account, container) {
        Ok(b) => b,
        Err(e) if e.code().as_str() == "NoSuchBucket" => return Ok(false),
        Err(e) => return Err(e),
    };
    match crate::swift::objects::delete_live(state, account, (container, &bucket), key).await {
        Ok(()) => {}
        Err(e) if e.code().as_str() == "NoSuchKey" => return Ok(false),
        Err(e) => return Err(e),
    }
    Ok(true)
}

/// `DELETE ?multipart-manifest=delete`: an SLO's segments, then its manifest (any other
/// object alone). 200 with Swift's bulk-delete summary, 404 when there is no object.
pub async fn delete_slo(
    state: &Arc<S3State>,
    account: &str,
    (container, key): (&str, &str),
    bucket: &Bucket,
) -> Response {
    let entry = match live_entry(state, account, bucket, container, key).await {
        Ok(e) => e,
        Err(e) => return from_s3(&e),
    };
    let mut paths = Vec::new();
    if reserved(&entry, SLO).is_some() {
        match stored_manifest(state, account, (container, key), &entry).await {
            Ok(stored) => paths.extend(stored.into_iter().filter_map(|s| split_path(&s.name))),
            Err(e) => return from_s3(&e),
        }
    }
    paths.push((container.to_owned(), key.to_owned()));
    let (mut deleted, mut not_found) = (0usize, 0usize);
    let mut errors = Vec::new();
    for (c, k) in &paths {
        match delete_one(state, account, c, k).await {
            Ok(true) => deleted += 1,
            Ok(false) => not_found += 1,
            Err(e) => errors.push(format!("/{c}/{k}, {}", e.code().as_str())),
        }
    }
    let status = if errors.is_empty() {
        "200 OK"
    } else {
        "400 Bad Request"
    };
    text(
        StatusCode::OK,
        format!(
            "Number Deleted: {deleted}\nNumber Not Found: {not_found}\nResponse Body: \nResponse Status: {status}\nErrors:\n{}",
            errors.iter().map(|e| format!("{e}\n")).collect::<String>()
        ),
    )
}
