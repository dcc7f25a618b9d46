//! Swift objects: the same entries and bytes as S3's (`X-Object-Meta-Foo` is S3's
//! `x-amz-meta-foo`), through the same data path.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use nimbus_core::ids::VersionId;
use nimbus_core::index::IndexEntry;
use s3s::dto::{ETag, ETagCondition, Range, StreamingBlob, Timestamp, TimestampFormat};

use super::chunked::{self, ChunkedError};
use super::large;
use super::ranges::{self, Multipart, Ranges, Source};
use super::{from_s3, not_implemented, text};
use crate::index::Condition;
use crate::s3::S3State;
use crate::s3::objects::{
    ChecksumPlan, DELETE_AT, DLO, ReadConditions, SLO, Stored, byte_range, check_key, copy_entry,
    describe, format_http_date, last_modified, live_entry, readable_entry, reserved, store_body,
};
use crate::s3::versions;

/// The prefix of user metadata headers.
pub(crate) const META: &str = "x-object-meta-";

/// Swift's time format in listings: `2026-11-23T10:00:00.123456`.
pub fn iso_time(version: VersionId) -> String {
    let micros = version.micros();
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// An ETag condition as Swift clients send it: `*`, or a value with or without quotes.
fn etag_condition(value: Option<&str>) -> Option<ETagCondition> {
    value.map(|v| match v.trim() {
        "*" => ETagCondition::Any,
        v => ETagCondition::ETag(ETag::Strong(v.trim_matches('"').to_owned())),
    })
}

pub(crate) fn http_date(value: Option<&str>) -> Option<Timestamp> {
    value.and_then(|v| Timestamp::parse(TimestampFormat::HttpDate, v).ok())
}

/// Serves `/v1/AUTH_<account>/<container>/<object>`.
pub async fn object(
    state: &Arc<S3State>,
    account: &str,
    container: &str,
    key: &str,
    request: Request,
) -> Response {
    if let Err(e) = check_key(key) {
        return from_s3(&e);
    }
    let map = state.cluster.map();
    let bucket = match map.bucket(container) {
        Some(b) if b.owner == account => b.clone(),
        _ => return text(StatusCode::NOT_FOUND, "Not Found"),
    };
    drop(map);
    let method = request.method().clone();
    if method.as_str() == "COPY"
        || (method == Method::PUT && request.headers().contains_key("x-copy-from"))
    {
        return copy(state, account, container, key, request.headers()).await;
    }
    let query = request.uri().query().map(str::to_owned);
    let query = query.as_deref();
    if method == Method::PUT && query_has(query, "multipart-manifest", "put") {
        return large::put_slo(state, account, (container, key), &bucket, request).await;
    }
    if method == Method::DELETE && query_has(query, "multipart-manifest", "delete") {
        return large::delete_slo(state, account, (container, key), &bucket).await;
    }
    match method {
        Method::PUT => put(state, account, container, key, &bucket, request).await,
        Method::GET | Method::HEAD => get(state, account, container, key, request).await,
        Method::POST => {
            super::post::post(state, account, container, key, &bucket, request.headers()).await
        }
        Method::DELETE => match delete_live(state, account, (container, &bucket), key).await {
            Ok(()) => text(StatusCode::NO_CONTENT, ""),
            Err(e) => from_s3(&e),
        },
        other => not_implemented(&other),
    }
}

/// Deletes `key` if it is live (`NoSuchKey` if not), through versioning: in an
/// S3-versioned bucket a delete marker. Swift's DELETE, bulk delete and SLO deletes share it.
pub(crate) async fn delete_live(
    state: &S3State,
    account: &str,
    (container, bucket): (&str, &nimbus_ring::map::Bucket),
    key: &str,
) -> s3s::S3Result<()> {
    live_entry(state, account, bucket, container, key).await?;
    let tombstone = IndexEntry::tombstone(state.data.clock.next(), bucket.policy.clone());
    versions::commit(
        state,
        account,
        container,
        bucket,
        key,
        tombstone,
        &Condition::None,
    )
    .await
    .map(|_| ())
}

async fn put(
    state: &S3State,
    account: &str,
    container: &str,
    key: &str,
    bucket: &nimbus_ring::map::Bucket,
    request: Request,
) -> Response {
    let headers = request.headers().clone();
    let declared = match header(&headers, "content-length") {
        Some(v) => match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => return text(StatusCode::BAD_REQUEST, "Invalid Content-Length"),
        },
        None => None,
    };
    let chunked = header(&headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if declared.is_none() && !chunked {
        return text(StatusCode::LENGTH_REQUIRED, "Length Required");
    }
    let user_metadata = match super::post::swift_pairs(&headers) {
        Ok(pairs) => pairs,
        Err(e) => return e.answer(),
    };
    let md5 = match header(&headers, "etag").map(|e| hex::decode(e.trim_matches('"'))) {
        None => None,
        Some(Ok(bytes)) if bytes.len() == 16 => {
            let mut md5 = [0u8; 16];
            md5.copy_from_slice(&bytes);
            Some(md5)
        }
        Some(_) => return text(StatusCode::UNPROCESSABLE_ENTITY, "Unprocessable Entity"),
    };
    let condition = match header(&headers, "if-none-match") {
        Some("*") => Condition::IfNoneMatch,
        Some(_) => return text(StatusCode::BAD_REQUEST, "If-None-Match only accepts '*'"),
        None => Condition::None,
    };
    let plan = match ChecksumPlan::of(&headers, None) {
        Ok(p) => p,
        Err(e) => return from_s3(&e),
    };
    let content_type = header(&headers, "content-type")
        .unwrap_or_default()
        .to_owned();
    let (version, Stored { digests, data }) = match declared {
        Some(declared) => {
            let version = state.data.clock.next();
            let body = StreamingBlob::from(s3s::Body::http_body_unsync(request.into_body()));
            let stored = store_body(
                state,
                account,
                container,
                key,
                &bucket.policy,
                version,
                Some(body),
                declared,
                md5,
                &plan,
                true,
            )
            .await;
            match stored {
                Ok(s) => (version, s),
                Err(e) => return from_s3(&e),
            }
        }
        None => {
            let stream = request.into_body().into_data_stream();
            let path = (account, container, key);
            match chunked::store_unsized(state, path, &bucket.policy, stream, md5).await {
                Ok(stored) => stored,
                Err(ChunkedError::TooLarge) => {
                    return text(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
                }
                Err(ChunkedError::BadEtag) => {
                    return text(StatusCode::UNPROCESSABLE_ENTITY, "Unprocessable Entity");
                }
                Err(ChunkedError::Body(e)) => {
                    tracing::debug!(error = %e, "chunked body broke off");
                    return text(StatusCode::BAD_REQUEST, "Bad Request");
                }
                Err(ChunkedError::Store(e)) => return from_s3(&e),
            }
        }
    };
    let etag = hex::encode(digests.md5);
    let entry = IndexEntry {
        version,
        size: digests.bytes,
        etag: etag.clone(),
        blake3: digests.blake3,
        client_checksums: digests.client_checksums(),
        content_type,
        user_metadata,
        policy: bucket.policy.clone(),
        data,
    };
    if entry.validate().is_err() {
        return text(StatusCode::BAD_REQUEST, "Metadata too large");
    }
    // Through versioning: in an S3-versioned bucket a new version.
    match versions::commit(state, account, container, bucket, key, entry, &condition).await {
        Ok(_) => {
            let mut response = text(StatusCode::CREATED, "");
            set(response.headers_mut(), "etag", &etag);
            if let Some(date) = format_http_date(&last_modified(version)) {
                set(response.headers_mut(), "last-modified", &date);
            }
            response
        }
        Err(e) => from_s3(&e),
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

async fn get(
    state: &Arc<S3State>,
    account: &str,
    container: &str,
    key: &str,
    request: Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let headers = &parts.headers;
    let if_match = etag_condition(header(headers, "if-match"));
    let if_none_match = etag_condition(header(headers, "if-none-match"));
    let if_modified_since = http_date(header(headers, "if-modified-since"));
    let if_unmodified_since = http_date(header(headers, "if-unmodified-since"));
    let conditions = ReadConditions {
        if_match: if_match.as_ref(),
        if_unmodified_since: if_unmodified_since.as_ref(),
        if_none_match: if_none_match.as_ref(),
        if_modified_since: if_modified_since.as_ref(),
    };
    let entry = match readable_entry(state, account, container, key, &conditions).await {
        Ok(e) => e,
        Err(e) if e.code().as_str() == "NotModified" => {
            let mut response = text(StatusCode::NOT_MODIFIED, "");
            response.headers_mut().clear();
            return response;
        }
        Err(e) => return from_s3(&e),
    };
    let manifest_get = query_has(parts.uri.query(), "multipart-manifest", "get");
    let large = if manifest_get {
        None
    } else {
        match large::of(state, account, (container, key), &entry).await {
            Ok(l) => l,
            Err(e) => return from_s3(&e),
        }
    };
    let slo = reserved(&entry, SLO).is_some();
    let content_type = if manifest_get && slo {
        "application/json; charset=utf-8".to_owned()
    } else if entry.content_type.is_empty() {
        "application/octet-stream".to_owned()
    } else {
        entry.content_type.clone()
    };
    // A large object's ETag is quoted, as Swift sends it.
    let (size, etag) = match &large {
        Some(l) => (l.size, format!("\"{}\"", l.etag)),
        None => (entry.size, entry.etag.clone()),
    };
    let mut multipart = None;
    let range = match header(headers, "range") {
        Some(r) if r.contains(',') => match ranges::parse(r, size) {
            Ranges::Whole => None,
            Ranges::Unsatisfiable => return unsatisfiable(size),
            Ranges::Some(mut list) if list.len() == 1 => list.pop(),
            Ranges::Some(list) => {
                multipart = Some(Multipart::new(list, size, &content_type));
                None
            }
        },
        Some(r) => match Range::parse(r) {
            Ok(range) => match byte_range(Some(&range), size) {
                Ok(r) => r,
                Err(_) => return unsatisfiable(size),
            },
            // An unparsable Range is ignored, as HTTP says.
            Err(_) => None,
        },
        None => None,
    };
    let head = parts.method == Method::HEAD;
    let length = match &multipart {
        Some(m) => m.content_length(),
        None => range.as_ref().map_or(size, |r| r.end - r.start),
    };
    let mut builder = Response::builder()
        .status(if range.is_some() || multipart.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header("content-length", length)
        .header("accept-ranges", "bytes")
        .header("etag", etag)
        .header(
            "x-timestamp",
            format!("{:.5}", entry.version.micros() as f64 / 1e6),
        )
        .header(
            "content-type",
            match &multipart {
                Some(m) => format!("multipart/byteranges;boundary={}", m.boundary),
                None => content_type.clone(),
            },
        );
    if let Some(date) = format_http_date(&last_modified(entry.version)) {
        builder = builder.header("last-modified", date);
    }
    if let Some(r) = &range {
        builder = builder.header(
            "content-range",
            format!("bytes {}-{}/{size}", r.start, r.end.saturating_sub(1)),
        );
    }
    if slo {
        builder = builder.header("x-static-large-object", "True");
    }
    if let Some(manifest) = reserved(&entry, DLO)
        && let Ok(v) = HeaderValue::from_str(manifest)
    {
        builder = builder.header("x-object-manifest", v);
    }
    let d = describe(&entry);
    for (name, value) in &d.metadata {
        if let Ok(v) = HeaderValue::from_str(value) {
            builder = builder.header(format!("{META}{name}"), v);
        }
    }
    for (name, value) in [
        ("cache-control", d.cache_control),
        ("content-disposition", d.content_disposition),
        ("content-encoding", d.content_encoding),
        ("content-language", d.content_language),
        ("expires", d.expires.as_ref().and_then(format_http_date)),
        ("x-delete-at", d.delete_at.map(|at| at.to_string())),
    ] {
        if let Some(v) = value {
            builder = builder.header(name, v);
        }
    }
    let source = match large {
        Some(l) => Source::Large {
            segments: l.segments,
            size,
        },
        None => Source::Entry {
            container: container.to_owned(),
            key: key.to_owned(),
            entry: Box::new(entry),
        },
    };
    let body = if head {
        Body::empty()
    } else if let Some(m) = multipart {
        Body::from_stream(m.stream(Arc::clone(state), account.to_owned(), source))
    } else {
        match source.open(state, account, range).await {
            Ok(stream) => Body::from_stream(stream),
            Err(e) => return from_s3(&e),
        }
    };
    builder
        .body(body)
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Error"))
}

/// Tells whether a query string has `name=value`.
pub(crate) fn query_has(query: Option<&str>, name: &str, value: &str) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.split_once('=').unwrap_or((pair, "")) == (name, value))
    })
}

/// 416 for ranges that all lie beyond an object of `size` bytes.
fn unsatisfiable(size: u64) -> Response {
    let mut response = text(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "Requested Range Not Satisfiable",
    );
    set(
        response.headers_mut(),
        "content-range",
        &format!("bytes */{size}"),
    );
    response
}

/// Splits `container/object` (with or without a leading `/`, percent-encoded) in two.
fn split_path(value: &str) -> Option<(String, String)> {
    let (c, o) = value.trim_start_matches('/').split_once('/')?;
    let c = super::decode(c).ok()?;
    let o = super::decode(o).ok()?;
    (!c.is_empty() && !o.is_empty()).then_some((c, o))
}

/// A server-side copy: `PUT` with `X-Copy-From: /container/object`, or `COPY` of this
/// object with `Destination: container/object`. The copy keeps the source's content type
/// and metadata, with the request's `X-Object-Meta-*` and `Content-Type` laid over them
/// (in place of them with `X-Fresh-Metadata: true`).
async fn copy(
    state: &Arc<S3State>,
    account: &str,
    container: &str,
    key: &str,
    headers: &HeaderMap,
) -> Response {
    let (source, destination) = if let Some(from) = header(headers, "x-copy-from") {
        let Some(source) = split_path(from) else {
            return text(
                StatusCode::PRECONDITION_FAILED,
                "X-Copy-From header must be of the form <container name>/<object name>",
            );
        };
        (source, (container.to_owned(), key.to_owned()))
    } else {
        let Some(destination) = header(headers, "destination").and_then(split_path) else {
            return text(
                StatusCode::PRECONDITION_FAILED,
                "Destination header must be of the form <container name>/<object name>",
            );
        };
        ((container.to_owned(), key.to_owned()), destination)
    };
    let map = state.cluster.map();
    let source_bucket = match map.bucket(&source.0) {
        Some(b) if b.owner == account => b.clone(),
        _ => return text(StatusCode::NOT_FOUND, "Not Found"),
    };
    drop(map);
    let current = match live_entry(state, account, &source_bucket, &source.0, &source.1).await {
        Ok(e) => e,
        Err(e) => return from_s3(&e),
    };
    let delete_at = match super::post::delete_at_of(headers) {
        Ok(at) => at,
        Err(e) => return e.answer(),
    };
    let fresh = header(headers, "x-fresh-metadata").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mut pairs: Vec<(String, String)> = if fresh {
        Vec::new()
    } else {
        current.user_metadata.clone()
    };
    for (name, value) in headers {
        if let (Some(field), Ok(value)) = (name.as_str().strip_prefix(META), value.to_str()) {
            let field = field.to_ascii_lowercase();
            pairs.retain(|(n, _)| *n != field);
            pairs.push((field, value.to_owned()));
        }
    }
    pairs.sort();
    // The copy expires when the request says, not when its source does.
    pairs.retain(|(n, _)| n != DELETE_AT);
    pairs.extend(delete_at.map(super::post::delete_at_pair));
    let content_type =
        header(headers, "content-type").map_or(current.content_type.clone(), str::to_owned);
    let conditions = ReadConditions {
        if_match: None,
        if_unmodified_since: None,
        if_none_match: None,
        if_modified_since: None,
    };
    match copy_entry(
        state,
        account,
        (&source.0, &source.1),
        (&destination.0, &destination.1),
        &conditions,
        Some((content_type, pairs)),
    )
    .await
    {
        Ok(entry) => {
            let mut response = text(StatusCode::CREATED, "");
            set(response.headers_mut(), "etag", &entry.etag);
            set(
                response.headers_mut(),
                "x-copied-from",
                &format!("{}/{}", source.0, source.1),
            );
            response
        }
        Err(e) => from_s3(&e),
    }
}
