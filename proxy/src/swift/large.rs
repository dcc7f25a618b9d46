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

mod manifest;

pub use manifest::{delete_slo, put_slo};

use std::ops::Range as ByteRange;
use std::sync::Arc;

use futures_util::StreamExt;
use md5::{Digest, Md5};
use nimbus_core::index::IndexEntry;
use s3s::{S3Result, s3_error};
use serde::{Deserialize, Serialize};

use crate::data::BodyStream;
use crate::s3::S3State;
use crate::s3::list::{Query, page};
use crate::s3::objects::{DLO, ReadConditions, SLO, open_body, readable_entry, reserved, unix_now};

/// The largest manifest a PUT may send (Swift's default `max_manifest_size`).
pub const MAX_MANIFEST_BYTES: usize = 8 * 1024 * 1024;
/// The most segments of one SLO (Swift's default `max_manifest_segments`).
pub const MAX_MANIFEST_SEGMENTS: usize = 1000;
/// The most segments a DLO read gathers from its listing.
pub const MAX_DLO_SEGMENTS: usize = 10_000;

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
    // Parsed off the async threads: a manifest of 1,000 segments is a few hundred KiB.
    tokio::task::spawn_blocking(move || serde_json::from_slice(&json))
        .await
        .map_err(|e| s3_error!(InternalError, "manifest parse task: {e}"))?
        .map_err(|e| s3_error!(InternalError, "stored manifest: {e}"))
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
