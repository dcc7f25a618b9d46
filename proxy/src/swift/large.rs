//! Swift large objects: Static (SLO, `?multipart-manifest=put`) and Dynamic (DLO,
//! `X-Object-Manifest: container/prefix`).
//!
//! An SLO is stored as Swift stores it: an object whose bytes are its manifest (JSON: each
//! segment's `name`, `bytes`, `hash` and optional `range`), flagged with the reserved pair
//! `:slo` holding the total size; its ETag is the MD5 of the segments' ETags (with their
//! ranges), as Swift computes it. A DLO is any object with the reserved pair `:dlo`; its
//! segments are the objects under the prefix at read time, in listing order.
//!
//! Reads stream the segments one after the other, each opened through the data path only when
//! the previous one has been sent, and each checked against the ETag the manifest (or the
//! listing) gave it: a segment that changed breaks the body off rather than serve other bytes.

use std::ops::Range as ByteRange;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use md5::{Digest, Md5};
use nimbus_core::index::IndexEntry;
use nimbus_ring::map::Bucket;
use s3s::dto::StreamingBlob;
use s3s::{S3Result, s3_error};
use serde::{Deserialize, Serialize};

use super::objects::header;
use super::{from_s3, text};
use crate::data::BodyStream;
use crate::index::{Condition, IndexClient};
use crate::s3::S3State;
use crate::s3::list::{Query, page};
use crate::s3::objects::{
    ChecksumPlan, DLO, ReadConditions, SLO, Stored, live_entry, open_body, readable_entry,
    reserved, store_body, unix_now,
};

/// The largest manifest a PUT may send (Swift's default `max_manifest_size`).
pub const MAX_MANIFEST_BYTES: usize = 8 * 1024 * 1024;
/// The most segments of one SLO (Swift's default `max_manifest_segments`).
pub const MAX_MANIFEST_SEGMENTS: usize = 1000;
/// The most segments a DLO read gathers from its listing.
pub const MAX_DLO_SEGMENTS: usize = 10_000;

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

/// A segment as the stored manifest records it (Swift's format).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct StoredSegment {
    /// `/container/object`.
    pub name: String,
    /// The segment object's size.
    pub bytes: u64,
    /// The segment object's ETag.
    pub hash: String,
    /// The segment object's content type.
    #[serde(default)]
    pub content_type: String,
    /// When the segment was written.
    #[serde(default)]
    pub last_modified: String,
    /// The bytes used, `first-last`, when not all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
}

/// One segment to read: an object, the ETag it must still have, and the bytes of it used.
#[derive(Clone, Debug)]
pub struct Segment {
    container: String,
    key: String,
    etag: String,
    range: ByteRange<u64>,
}

/// A large object's segments and what clients see of it.
#[derive(Debug)]
pub struct Large {
    /// The segments, in order.
    pub segments: Vec<Segment>,
    /// The total size.
    pub size: u64,
    /// The ETag (unquoted).
    pub etag: String,
}

/// Splits `/container/object` (the leading `/` optional).
fn split_path(path: &str) -> Option<(String, String)> {
    let (c, o) = path.strip_prefix('/').unwrap_or(path).split_once('/')?;
    (!c.is_empty() && !o.is_empty()).then(|| (c.to_owned(), o.to_owned()))
}

/// Reads a manifest range (`a-b`, `a-`, `-n`) within an object of `size` bytes.
fn parse_range(spec: &str, size: u64) -> Option<ByteRange<u64>> {
    match crate::swift::ranges::parse(&format!("bytes={spec}"), size) {
        crate::swift::ranges::Ranges::Some(r) if r.len() == 1 => r.into_iter().next(),
        _ => None,
    }
}

fn no_conditions() -> ReadConditions<'static> {
    ReadConditions {
        if_match: None,
        if_unmodified_since: None,
        if_none_match: None,
        if_modified_since: None,
    }
}

/// The SLO ETag of stored segments: MD5 over each ETag, with `:first-last;` for a range.
fn slo_etag(segments: &[StoredSegment]) -> String {
    let mut md5 = Md5::new();
    for s in segments {
        match &s.range {
            Some(r) => md5.update(format!("{}:{r};", s.hash).as_bytes()),
            None => md5.update(s.hash.as_bytes()),
        }
    }
    hex::encode(md5.finalize())
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
    body: &[u8],
) -> S3Result<Result<Manifest, Vec<String>>> {
    let specs: Vec<SegmentSpec> = match serde_json::from_slice(body) {
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
            last_modified: super::objects::iso_time(entry.version),
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

/// Reads the stored manifest of an SLO entry.
///
/// # Errors
/// As [`open_body`]; `InternalError` for a manifest that does not parse.
pub async fn stored_manifest(
    state: &S3State,
    account: &str,
    (container, key): (&str, &str),
    entry: &IndexEntry,
) -> S3Result<Vec<StoredSegment>> {
    let mut stream = open_body(state, account, container, key, entry, None).await?;
    let mut json = Vec::with_capacity(entry.size as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| s3_error!(ServiceUnavailable, "reading a manifest: {e}"))?;
        json.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&json).map_err(|e| s3_error!(InternalError, "stored manifest: {e}"))
}

/// The segments of `entry`, the live entry of `container/key`, when it is a large object.
///
/// # Errors
/// Reading the manifest or listing the segments failed.
pub async fn of(
    state: &S3State,
    account: &str,
    (container, key): (&str, &str),
    entry: &IndexEntry,
) -> S3Result<Option<Large>> {
    if reserved(entry, SLO).is_some() {
        let stored = stored_manifest(state, account, (container, key), entry).await?;
        let mut segments = Vec::with_capacity(stored.len());
        for s in &stored {
            let (c, k) = split_path(&s.name)
                .ok_or_else(|| s3_error!(InternalError, "stored manifest names {}", s.name))?;
            let range = match &s.range {
                Some(r) => parse_range(r, s.bytes)
                    .ok_or_else(|| s3_error!(InternalError, "stored manifest range {r}"))?,
                None => 0..s.bytes,
            };
            segments.push(Segment {
                container: c,
                key: k,
                etag: s.hash.clone(),
                range,
            });
        }
        let size = segments.iter().map(|s| s.range.end - s.range.start).sum();
        return Ok(Some(Large {
            segments,
            size,
            etag: entry.etag.clone(),
        }));
    }
    let Some(manifest) = reserved(entry, DLO) else {
        return Ok(None);
    };
    let Some((c, prefix)) = manifest.split_once('/') else {
        return Ok(None);
    };
    let bucket = match crate::s3::buckets::owned(state, account, c) {
        Ok(b) => b,
        // Segments in a container that is not there: an empty object, as Swift serves it.
        Err(_) => {
            return Ok(Some(Large {
                segments: Vec::new(),
                size: 0,
                etag: hex::encode(Md5::digest(b"")),
            }));
        }
    };
    let listed = page(
        state,
        account,
        c,
        bucket.shards,
        Query {
            prefix,
            delimiter: None,
            resume: None,
            max_keys: MAX_DLO_SEGMENTS,
        },
    )
    .await?;
    let mut md5 = Md5::new();
    let mut segments = Vec::with_capacity(listed.objects.len());
    let now = unix_now();
    for r in listed.objects {
        if crate::s3::objects::is_expired(&r.entry, now) {
            continue;
        }
        md5.update(r.entry.etag.as_bytes());
        if r.entry.size > 0 {
            segments.push(Segment {
                container: c.to_owned(),
                key: r.key,
                etag: r.entry.etag.clone(),
                range: 0..r.entry.size,
            });
        }
    }
    let size = segments.iter().map(|s| s.range.end - s.range.start).sum();
    Ok(Some(Large {
        segments,
        size,
        etag: hex::encode(md5.finalize()),
    }))
}

/// Opens one piece of one segment, checking that the segment is still what the manifest says.
async fn open_piece(
    state: &S3State,
    account: &str,
    segment: &Segment,
    within: ByteRange<u64>,
) -> S3Result<BodyStream> {
    let entry = readable_entry(
        state,
        account,
        &segment.container,
        &segment.key,
        &no_conditions(),
    )
    .await?;
    if entry.etag != segment.etag || within.end > entry.size {
        return Err(s3_error!(
            InternalError,
            "segment {}/{} changed since the manifest was written",
            segment.container,
            segment.key
        ));
    }
    let whole = within.start == 0 && within.end == entry.size;
    let range = (!whole).then_some(within);
    open_body(
        state,
        account,
        &segment.container,
        &segment.key,
        &entry,
        range,
    )
    .await
}

/// Streams bytes `range` of a large object: each segment the range touches, in order. The
/// first is opened before this returns, so a missing segment fails before any byte is sent.
///
/// # Errors
/// The first segment could not be opened.
pub async fn open(
    state: Arc<S3State>,
    account: String,
    segments: &[Segment],
    range: ByteRange<u64>,
) -> S3Result<BodyStream> {
    let mut pieces = Vec::new();
    let mut start = 0u64;
    for segment in segments {
        let len = segment.range.end - segment.range.start;
        let (lo, hi) = (range.start.max(start), range.end.min(start + len));
        if lo < hi {
            // From the object's offsets to the segment's own.
            let at = |offset: u64| offset - start + segment.range.start;
            pieces.push((segment.clone(), at(lo)..at(hi)));
        }
        start += len;
    }
    let mut pieces = pieces.into_iter();
    let Some((segment, within)) = pieces.next() else {
        return Ok(Box::pin(futures_util::stream::empty()));
    };
    let first = open_piece(&state, &account, &segment, within).await?;
    let rest = futures_util::stream::iter(pieces)
        .then(move |(segment, within)| {
            let state = Arc::clone(&state);
            let account = account.clone();
            async move {
                match open_piece(&state, &account, &segment, within).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = ?e, "a large object's segment failed");
                        let failed: BodyStream = Box::pin(futures_util::stream::once(async {
                            Err(std::io::Error::other("segment read failed"))
                        }));
                        failed
                    }
                }
            }
        })
        .flatten();
    Ok(Box::pin(first.chain(rest)))
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
    let mut pairs = match super::post::swift_pairs(&headers) {
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
    let manifest = match check_manifest(state, account, &body).await {
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
    let shard = IndexClient::shard_of(account, container, key, bucket.shards);
    match state
        .index
        .write(&shard, key, &entry, &Condition::None)
        .await
    {
        Ok(_) => {
            let mut response = text(StatusCode::CREATED, "");
            if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", manifest.etag)) {
                response.headers_mut().insert("etag", v);
            }
            response
        }
        Err(e) => from_s3(&crate::s3::to_s3(e)),
    }
}

/// Writes a tombstone for `container/key` if it is live; tells whether it was.
async fn delete_one(state: &S3State, account: &str, container: &str, key: &str) -> S3Result<bool> {
    let bucket = match crate::s3::buckets::owned(state, account, container) {
        Ok(b) => b,
        Err(e) if e.code().as_str() == "NoSuchBucket" => return Ok(false),
        Err(e) => return Err(e),
    };
    match live_entry(state, account, &bucket, container, key).await {
        Ok(_) => {}
        Err(e) if e.code().as_str() == "NoSuchKey" => return Ok(false),
        Err(e) => return Err(e),
    }
    let shard = IndexClient::shard_of(account, container, key, bucket.shards);
    let tombstone = IndexEntry::tombstone(state.data.clock.next(), bucket.policy.clone());
    state
        .index
        .write(&shard, key, &tombstone, &Condition::None)
        .await
        .map_err(crate::s3::to_s3)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slo_etags_are_swifts() {
        let seg = |hash: &str, range: Option<&str>| StoredSegment {
            name: "/c/o".into(),
            bytes: 10,
            hash: hash.into(),
            content_type: String::new(),
            last_modified: String::new(),
            range: range.map(str::to_owned),
        };
        let a = "0cc175b9c0f1b6a831c399e269772661";
        let b = "92eb5ffee6ae2fec3ad71c777531578f";
        let plain = hex::encode(Md5::digest(format!("{a}{b}").as_bytes()));
        assert_eq!(slo_etag(&[seg(a, None), seg(b, None)]), plain);
        let ranged = hex::encode(Md5::digest(format!("{a}:1-2;{b}").as_bytes()));
        assert_eq!(slo_etag(&[seg(a, Some("1-2")), seg(b, None)]), ranged);
    }

    #[test]
    fn manifest_paths_split_into_container_and_object() {
        assert_eq!(
            split_path("/c/a/b"),
            Some(("c".to_owned(), "a/b".to_owned()))
        );
        assert_eq!(split_path("c/o"), Some(("c".to_owned(), "o".to_owned())));
        assert_eq!(split_path("/c/"), None);
        assert_eq!(split_path("/c"), None);
        assert_eq!(parse_range("1-2", 10), Some(1..3));
        assert_eq!(parse_range("-3", 10), Some(7..10));
        assert_eq!(parse_range("20-", 10), None);
    }
}
