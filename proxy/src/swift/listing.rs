//! Swift accounts and containers: the account's containers are the buckets it owns;
//! a container's listing is the bucket's index, as text, JSON or XML. Account and container
//! metadata and ACLs are attributes in the cluster map (`swift::meta`).

use std::collections::VecDeque;
use std::fmt::Write as _;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use nimbus_core::index::IndexRecord;
use nimbus_ring::map::Bucket;
use s3s::S3Error;

use super::meta::{self, Level};
use super::{from_s3, not_implemented, text};
use crate::error::DataError;
use crate::s3::S3State;
use crate::s3::buckets::{create_named, delete as delete_bucket};
use crate::s3::list::{Query, Resume, page};

/// The most entries one listing answers (and the default).
pub const MAX_LIMIT: usize = 10_000;
/// Records read per call when adding up a container's usage.
const USAGE_PAGE: usize = 1000;

/// Records asked for per call when a reverse listing walks its range.
const REVERSE_PAGE: usize = 1000;

/// A listing's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    Plain,
    Json,
    Xml,
}

pub(super) fn query_pairs(request: &Request) -> Vec<(String, String)> {
    request
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_owned(), unescape(v))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Decodes a query value (`%XX` and `+`).
fn unescape(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn format_of(pairs: &[(String, String)], headers: &HeaderMap) -> Format {
    let asked = pairs
        .iter()
        .find(|(k, _)| k == "format")
        .map(|(_, v)| v.as_str());
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match asked {
        Some("json") => Format::Json,
        Some("xml") => Format::Xml,
        Some(_) => Format::Plain,
        None if accept.contains("application/json") => Format::Json,
        None if accept.contains("xml") => Format::Xml,
        None => Format::Plain,
    }
}

pub(super) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn listing_response(
    format: Format,
    body: String,
    empty: bool,
    headers: Vec<(String, String)>,
) -> Response {
    let content_type = match format {
        Format::Plain => "text/plain; charset=utf-8",
        Format::Json => "application/json; charset=utf-8",
        Format::Xml => "application/xml; charset=utf-8",
    };
    // Swift answers an empty plain listing with 204.
    let status = if empty && format == Format::Plain {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::OK
    };
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", content_type);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder
        .body(if status == StatusCode::NO_CONTENT {
            Body::empty()
        } else {
            Body::from(body)
        })
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Error"))
}

/// Objects and bytes in a container, added up from its index.
async fn usage(
    state: &S3State,
    account: &str,
    name: &str,
    bucket: &Bucket,
) -> Result<(u64, u64), S3Error> {
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut after: Option<String> = None;
    loop {
        let records = state
            .index
            .list(
                account,
                name,
                bucket.shards,
                "",
                after.as_deref(),
                USAGE_PAGE,
            )
            .await
            .map_err(crate::s3::to_s3)?;
        count += records.len() as u64;
        bytes += records.iter().map(|r| r.entry.size).sum::<u64>();
        match records.last() {
            Some(last) if records.len() == USAGE_PAGE => after = Some(last.key.clone()),
            _ => return Ok((count, bytes)),
        }
    }
}

/// The answer to a metadata change.
fn stored(result: Result<(), DataError>, success: StatusCode) -> Response {
    match result {
        Ok(()) => text(success, ""),
        Err(DataError::NoSuchBucket) => text(StatusCode::NOT_FOUND, "Not Found"),
        Err(DataError::BadRequest(m)) => text(StatusCode::BAD_REQUEST, m),
        Err(e) => from_s3(&crate::s3::to_s3(e)),
    }
}

/// Reads the metadata changes of a request and stores them on the account or container.
async fn store_metadata(
    state: &S3State,
    account: &str,
    container: Option<&str>,
    headers: &HeaderMap,
    success: StatusCode,
) -> Response {
    let level = if container.is_some() {
        Level::Container
    } else {
        Level::Account
    };
    let changes = match meta::changes(headers, level) {
        Ok(c) => c,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.0),
    };
    let current = {
        let map = state.cluster.map();
        match container {
            Some(c) => map.bucket(c).map(|b| b.attributes.clone()),
            None => map.account(account).map(|a| a.attributes.clone()),
        }
    };
    let Some(current) = current else {
        return text(StatusCode::NOT_FOUND, "Not Found");
    };
    if let Err(e) = meta::check_bounds(&current, &changes) {
        return text(StatusCode::BAD_REQUEST, e.0);
    }
    stored(
        meta::store(&state.cluster, account, container, changes).await,
        success,
    )
}

/// `GET`/`HEAD`/`POST /v1/AUTH_<account>` (a `POST` with `?bulk-delete` is a bulk delete).
pub async fn account(state: &S3State, account: &str, request: Request) -> Response {
    let method = request.method().clone();
    if method == Method::POST || method == Method::DELETE {
        let bulk = request.uri().query().is_some_and(|q| {
            q.split('&')
                .any(|p| p.split('=').next() == Some("bulk-delete"))
        });
        if bulk {
            return super::bulk::delete(state, account, request).await;
        }
        if method == Method::POST {
            return store_metadata(
                state,
                account,
                None,
                request.headers(),
                StatusCode::NO_CONTENT,
            )
            .await;
        }
    }
    if method != Method::GET && method != Method::HEAD {
        return not_implemented(&method);
    }
    let pairs = query_pairs(&request);
    let format = format_of(&pairs, request.headers());
    drop(request);
    let map = state.cluster.map();
    let buckets: Vec<(String, Bucket)> = map
        .buckets_of(account)
        .map(|(n, b)| (n.to_owned(), b.clone()))
        .collect();
    let attributes = map
        .account(account)
        .map(|a| a.attributes.clone())
        .unwrap_or_default();
    drop(map);
    let mut rows = Vec::with_capacity(buckets.len());
    let (mut objects, mut bytes) = (0u64, 0u64);
    for (name, bucket) in &buckets {
        let (c, b) = match usage(state, account, name, bucket).await {
            Ok(u) => u,
            Err(e) => return from_s3(&e),
        };
        objects += c;
        bytes += b;
        rows.push((name.clone(), c, b));
    }
    let mut headers = vec![
        (
            "x-account-container-count".to_owned(),
            buckets.len().to_string(),
        ),
        ("x-account-object-count".to_owned(), objects.to_string()),
        ("x-account-bytes-used".to_owned(), bytes.to_string()),
    ];
    headers.extend(meta::headers(&attributes, Level::Account));
    if method == Method::HEAD {
        return listing_response(Format::Plain, String::new(), true, headers);
    }
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let prefix = get("prefix").unwrap_or_default();
    let marker = get("marker").unwrap_or_default();
    let end_marker = get("end_marker");
    let limit = get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(MAX_LIMIT)
        .min(MAX_LIMIT);
    let reverse = is_reverse(&pairs);
    let mut rows: Vec<_> = rows
        .into_iter()
        .filter(|(n, _, _)| {
            let (low, high) = if reverse {
                (
                    end_marker.as_deref(),
                    (!marker.is_empty()).then_some(marker.as_str()),
                )
            } else {
                (
                    (!marker.is_empty()).then_some(marker.as_str()),
                    end_marker.as_deref(),
                )
            };
            n.starts_with(&prefix)
                && low.is_none_or(|l| n.as_str() > l)
                && high.is_none_or(|h| n.as_str() < h)
        })
        .collect();
    if reverse {
        rows.reverse();
    }
    rows.truncate(limit);
    let body = match format {
        Format::Plain => rows.iter().map(|(n, _, _)| format!("{n}\n")).collect(),
        Format::Json => serde_json::Value::Array(
            rows.iter()
                .map(|(n, c, b)| serde_json::json!({"name": n, "count": c, "bytes": b}))
                .collect(),
        )
        .to_string(),
        Format::Xml => {
            let mut x = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<account name=\"{}\">",
                xml_escape(account)
            );
            for (n, c, b) in &rows {
                let _ = write!(
                    x,
                    "<container><name>{}</name><count>{c}</count><bytes>{b}</bytes></container>",
                    xml_escape(n)
                );
            }
            x.push_str("</account>");
            x
        }
    };
    listing_response(format, body, rows.is_empty(), headers)
}

/// Whether a listing asks for `reverse`.
fn is_reverse(pairs: &[(String, String)]) -> bool {
    pairs.iter().any(|(k, v)| {
        k == "reverse"
            && matches!(
                v.to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on" | "t" | "y"
            )
    })
}

/// `PUT`/`POST`/`GET`/`HEAD`/`DELETE /v1/AUTH_<account>/<container>`; `owner` tells whether
/// the caller owns the account (others, admitted by an ACL, do not see the ACLs).
pub async fn container(
    state: &S3State,
    account: &str,
    name: &str,
    request: Request,
    owner: bool,
) -> Response {
    let method = request.method().clone();
    if method == Method::POST {
        return store_metadata(
            state,
            account,
            Some(name),
            request.headers(),
            StatusCode::NO_CONTENT,
        )
        .await;
    }
    if method == Method::PUT {
        let policy = request
            .headers()
            .get("x-storage-policy")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Checked before the container is made, so a bad header creates nothing.
        if let Err(e) = meta::changes(request.headers(), Level::Container)
            .and_then(|c| meta::check_bounds(&Default::default(), &c))
        {
            return text(StatusCode::BAD_REQUEST, e.0);
        }
        return match create_named(state, account, name, policy).await {
            Ok(()) => {
                store_metadata(
                    state,
                    account,
                    Some(name),
                    request.headers(),
                    StatusCode::CREATED,
                )
                .await
            }
            Err(e) if e.code().as_str() == "BucketAlreadyOwnedByYou" => {
                store_metadata(
                    state,
                    account,
                    Some(name),
                    request.headers(),
                    StatusCode::ACCEPTED,
                )
                .await
            }
            Err(e) if e.code().as_str() == "BucketAlreadyExists" => {
                text(StatusCode::CONFLICT, "Conflict")
            }
            Err(e) if e.code().as_str() == "InvalidBucketName" => text(
                StatusCode::BAD_REQUEST,
                "Container names follow the S3 bucket naming rules here",
            ),
            Err(e) => from_s3(&e),
        };
    }
    let map = state.cluster.map();
    let bucket = match map.bucket(name) {
        Some(b) if b.owner == account => b.clone(),
        _ => return text(StatusCode::NOT_FOUND, "Not Found"),
    };
    match method {
        Method::DELETE => match delete_bucket(state, account, name).await {
            Ok(_) => text(StatusCode::NO_CONTENT, ""),
            Err(e) => from_s3(&e),
        },
        Method::GET | Method::HEAD => {
            let (count, bytes) = match usage(state, account, name, &bucket).await {
                Ok(u) => u,
                Err(e) => return from_s3(&e),
            };
            let mut headers = vec![
                ("x-container-object-count".to_owned(), count.to_string()),
                ("x-container-bytes-used".to_owned(), bytes.to_string()),
                ("x-storage-policy".to_owned(), bucket.policy.clone()),
                (
                    "x-timestamp".to_owned(),
                    format!("{:.5}", bucket.created_ms as f64 / 1000.0),
                ),
            ];
            headers.extend(
                meta::headers(&bucket.attributes, Level::Container)
                    .into_iter()
                    .filter(|(k, _)| {
                        owner
                            || !k.starts_with("x-container-read")
                                && !k.starts_with("x-container-write")
                    }),
            );
            if method == Method::HEAD {
                return listing_response(Format::Plain, String::new(), true, headers);
            }
            let pairs = query_pairs(&request);
            let format = format_of(&pairs, request.headers());
            list_container(state, account, name, &bucket, pairs, format, headers).await
        }
        other => not_implemented(&other),
    }
}

/// One row of a container listing.
enum Item {
    Object(Box<IndexRecord>),
    Subdir(String),
}

impl Item {
    fn name(&self) -> &str {
        match self {
            Item::Object(r) => &r.key,
            Item::Subdir(p) => p,
        }
    }
}

/// A page's objects and subdirectories as rows in key order.
fn rows(listed: crate::s3::list::Page) -> Vec<Item> {
    let mut items: Vec<Item> = listed
        .objects
        .into_iter()
        .map(|r| Item::Object(Box::new(r)))
        .chain(listed.prefixes.into_iter().map(Item::Subdir))
        .collect();
    items.sort_by(|a, b| a.name().cmp(b.name()));
    items
}

/// What a reverse listing asks for.
struct Span<'a> {
    prefix: &'a str,
    delimiter: Option<&'a str>,
    end_marker: Option<&'a str>,
    marker: Option<&'a str>,
    limit: usize,
}

/// The rows of a reverse listing: those between `end_marker` (exclusive, the low end) and
/// `marker` (exclusive, the high end), last first, at most `limit`. The index is read
/// forwards, so this walks the whole range and keeps its last `limit` rows: its cost grows
/// with the range, not the answer.
async fn reverse_rows(
    state: &S3State,
    account: &str,
    name: &str,
    bucket: &Bucket,
    span: Span<'_>,
) -> Result<Vec<Item>, S3Error> {
    let Span {
        prefix,
        delimiter,
        end_marker,
        marker,
        limit,
    } = span;
    let mut kept: VecDeque<Item> = VecDeque::with_capacity(limit.min(REVERSE_PAGE));
    let mut resume = end_marker.map(|e| match delimiter {
        Some(d) if e.ends_with(d) && e.starts_with(prefix) => Resume::Prefix(e.to_owned()),
        _ => Resume::Key(e.to_owned()),
    });
    if limit == 0 {
        return Ok(Vec::new());
    }
    loop {
        let query = Query {
            prefix,
            delimiter,
            resume: resume.take(),
            max_keys: REVERSE_PAGE,
        };
        let listed = page(state, account, name, bucket.shards, query).await?;
        let (truncated, next) = (listed.truncated, listed.next.clone());
        for item in rows(listed) {
            if marker.is_some_and(|m| item.name() >= m) {
                return Ok(kept.into_iter().rev().collect());
            }
            if kept.len() == limit {
                kept.pop_front();
            }
            kept.push_back(item);
        }
        match next {
            Some(n) if truncated => resume = Some(n),
            _ => return Ok(kept.into_iter().rev().collect()),
        }
    }
}

#[allow(clippy::too_many_lines)]
async fn list_container(
    state: &S3State,
    account: &str,
    name: &str,
    bucket: &Bucket,
    pairs: Vec<(String, String)>,
    format: Format,
    headers: Vec<(String, String)>,
) -> Response {
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let prefix = get("prefix").unwrap_or_default();
    let delimiter = get("delimiter").filter(|d| !d.is_empty());
    let marker = get("marker").filter(|m| !m.is_empty());
    let end_marker = get("end_marker").filter(|e| !e.is_empty());
    let limit = match get("limit").map(|l| l.parse::<usize>()) {
        None => MAX_LIMIT,
        Some(Ok(l)) if l <= MAX_LIMIT => l,
        Some(_) => {
            return text(
                StatusCode::PRECONDITION_FAILED,
                format!("Maximum limit is {MAX_LIMIT}"),
            );
        }
    };
    let items = if is_reverse(&pairs) {
        let span = Span {
            prefix: &prefix,
            delimiter: delimiter.as_deref(),
            end_marker: end_marker.as_deref(),
            marker: marker.as_deref(),
            limit,
        };
        match reverse_rows(state, account, name, bucket, span).await {
            Ok(items) => items,
            Err(e) => return from_s3(&e),
        }
    } else {
        let query = Query {
            prefix: &prefix,
            delimiter: delimiter.as_deref(),
            // A marker that is a subdirectory resumes after everything under it, as Swift
            // does (clients page with the last name they got, a subdirectory's too).
            resume: marker.map(|m| match &delimiter {
                Some(d) if m.ends_with(d.as_str()) && m.starts_with(&prefix) => Resume::Prefix(m),
                _ => Resume::Key(m),
            }),
            max_keys: limit,
        };
        match page(state, account, name, bucket.shards, query).await {
            Ok(p) => rows(p)
                .into_iter()
                .filter(|i| end_marker.as_ref().is_none_or(|e| i.name() < e.as_str()))
                .collect(),
            Err(e) => return from_s3(&e),
        }
    };
    let body = match format {
        Format::Plain => items.iter().map(|i| format!("{}\n", i.name())).collect(),
        Format::Json => serde_json::Value::Array(
            items
                .iter()
                .map(|item| match item {
                    Item::Object(r) => serde_json::json!({
                        "name": r.key,
                        "hash": r.entry.etag,
                        "bytes": crate::s3::objects::listed_size(&r.entry),
                        "content_type": if r.entry.content_type.is_empty() { "application/octet-stream" } else { r.entry.content_type.as_str() },
                        "last_modified": super::objects::iso_time(r.entry.version),
                    }),
                    Item::Subdir(p) => serde_json::json!({ "subdir": p }),
                })
                .collect(),
        )
        .to_string(),
        Format::Xml => {
            let mut x = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<container name=\"{}\">", xml_escape(name));
            for item in &items {
                match item {
                    Item::Object(r) => {
                        let _ = write!(
                            x,
                            "<object><name>{}</name><hash>{}</hash><bytes>{}</bytes><content_type>{}</content_type><last_modified>{}</last_modified></object>",
                            xml_escape(&r.key),
                            xml_escape(&r.entry.etag),
                            crate::s3::objects::listed_size(&r.entry),
                            xml_escape(&r.entry.content_type),
                            super::objects::iso_time(r.entry.version)
                        );
                    }
                    Item::Subdir(p) => {
                        let _ = write!(x, "<subdir name=\"{0}\"><name>{0}</name></subdir>", xml_escape(p));
                    }
                }
            }
            x.push_str("</container>");
            x
        }
    };
    listing_response(format, body, items.is_empty(), headers)
}
