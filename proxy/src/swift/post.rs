//! Object POST (Swift's "fast POST") and expiry (`X-Delete-At`, `X-Delete-After`).
//!
//! A POST replaces the object's user metadata (`X-Object-Meta-*`), the standard headers Swift
//! lets it set (`Content-Disposition`, `Content-Encoding`, `Content-Language`,
//! `Cache-Control`, `Expires`), its expiry and its `X-Object-Manifest`, and changes `Content-Type` when one is sent;
//! the bytes, ETag and checksums stay. It rewrites the index entry with the same version and
//! data, under `Condition::IfVersion`, so a racing PUT or DELETE is never undone: the POST
//! re-reads and tries again, a few times.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use nimbus_core::index::IndexEntry;
use nimbus_ring::map::Bucket;
use s3s::dto::Metadata;

use super::objects::{META, header, http_date};
use super::{from_s3, text};
use crate::error::DataError;
use crate::index::{Condition, IndexClient};
use crate::s3::S3State;
use crate::s3::objects::{
    DELETE_AT, DLO, Standard, is_header_pair, live_entry, metadata_pairs, unix_now,
};

/// How many times a POST re-reads the entry after a racing write changed it.
const POST_ATTEMPTS: usize = 3;

/// Why an expiry or manifest header is refused (400, with Swift's messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeaderError {
    #[error("Non-integer X-Delete-After")]
    AfterNotInteger,
    #[error("X-Delete-After in past")]
    AfterInPast,
    #[error("Non-integer X-Delete-At")]
    AtNotInteger,
    #[error("X-Delete-At in past")]
    AtInPast,
    #[error("X-Object-Manifest must be in the format container/prefix")]
    ManifestFormat,
}

impl HeaderError {
    /// The 400 answer.
    pub(crate) fn answer(self) -> Response {
        text(StatusCode::BAD_REQUEST, self.to_string())
    }
}

/// Reads `X-Delete-After` (seconds from now) or `X-Delete-At` (unix seconds), as Swift
/// checks them: `X-Delete-After` wins when both are sent.
///
/// # Errors
/// [`HeaderError`] for a value that is not an integer or a time not in the future.
pub(crate) fn delete_at_of(headers: &HeaderMap) -> Result<Option<u64>, HeaderError> {
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    let integer = |name: &str| -> Option<Option<i64>> {
        headers
            .get(name)
            .map(|v| v.to_str().ok().and_then(|v| v.trim().parse().ok()))
    };
    let at = match (integer("x-delete-after"), integer("x-delete-at")) {
        (Some(None), _) => return Err(HeaderError::AfterNotInteger),
        (Some(Some(after)), _) => {
            let at = now.saturating_add(after);
            if at <= now {
                return Err(HeaderError::AfterInPast);
            }
            at
        }
        (None, Some(None)) => return Err(HeaderError::AtNotInteger),
        (None, Some(Some(at))) => {
            if at <= now {
                return Err(HeaderError::AtInPast);
            }
            at
        }
        (None, None) => return Ok(None),
    };
    Ok(u64::try_from(at).ok())
}

/// The reserved pair of an expiry, to add to an entry's metadata.
pub(crate) fn delete_at_pair(at: u64) -> (String, String) {
    (DELETE_AT.to_owned(), at.to_string())
}

/// Reads `X-Object-Manifest` (a Dynamic Large Object's `container/prefix`).
///
/// # Errors
/// [`HeaderError::ManifestFormat`] when it names no container.
pub(crate) fn dlo_of(headers: &HeaderMap) -> Result<Option<String>, HeaderError> {
    let Some(value) = headers.get("x-object-manifest") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .ok()
        .and_then(|v| super::decode(v.trim_start_matches('/')).ok())
        .ok_or(HeaderError::ManifestFormat)?;
    match value.split_once('/') {
        Some((c, _)) if !c.is_empty() => Ok(Some(value)),
        _ => Err(HeaderError::ManifestFormat),
    }
}

/// Everything a PUT or POST sets besides the bytes, as entry pairs: user metadata, standard
/// headers, expiry, Dynamic Large Object manifest.
///
/// # Errors
/// [`HeaderError`] for a bad expiry or manifest header.
pub(crate) fn swift_pairs(headers: &HeaderMap) -> Result<Vec<(String, String)>, HeaderError> {
    let delete_at = delete_at_of(headers)?;
    let mut pairs = request_pairs(headers, delete_at);
    pairs.extend(dlo_of(headers)?.map(|m| (DLO.to_owned(), m)));
    Ok(pairs)
}

/// The user metadata and standard headers a PUT or POST sets, as entry pairs (with the
/// expiry's pair when it has one).
fn request_pairs(headers: &HeaderMap, delete_at: Option<u64>) -> Vec<(String, String)> {
    let mut metadata = Metadata::new();
    for (name, value) in headers {
        if let (Some(field), Ok(value)) = (name.as_str().strip_prefix(META), value.to_str()) {
            metadata.insert(field.to_owned(), value.to_owned());
        }
    }
    let standard = Standard {
        cache_control: header(headers, "cache-control").map(str::to_owned),
        content_disposition: header(headers, "content-disposition").map(str::to_owned),
        content_encoding: header(headers, "content-encoding").map(str::to_owned),
        content_language: header(headers, "content-language").map(str::to_owned),
        expires: http_date(header(headers, "expires")),
    };
    let mut pairs = metadata_pairs(Some(&metadata), standard);
    pairs.extend(delete_at.map(delete_at_pair));
    pairs
}

/// `POST /v1/AUTH_<account>/<container>/<object>`: 202, or 404 when there is no object.
pub(crate) async fn post(
    state: &S3State,
    account: &str,
    container: &str,
    key: &str,
    bucket: &Bucket,
    headers: &HeaderMap,
) -> Response {
    let set = match swift_pairs(headers) {
        Ok(pairs) => pairs,
        Err(e) => return e.answer(),
    };
    let shard = IndexClient::shard_of(account, container, key, bucket.shards);
    for _ in 0..POST_ATTEMPTS {
        let current = match live_entry(state, account, bucket, container, key).await {
            Ok(e) => e,
            Err(e) => return from_s3(&e),
        };
        // The system's own pairs (an SLO's flag, S3 tags) are not POST's; a DLO's manifest
        // is, as in Swift.
        let kept = current
            .user_metadata
            .iter()
            .filter(|(name, _)| name.starts_with(':') && !is_header_pair(name) && name != DLO)
            .cloned();
        let entry = IndexEntry {
            content_type: header(headers, "content-type")
                .map_or_else(|| current.content_type.clone(), str::to_owned),
            user_metadata: set.iter().cloned().chain(kept).collect(),
            ..current.clone()
        };
        if entry.validate().is_err() {
            return text(StatusCode::BAD_REQUEST, "Metadata too large");
        }
        let condition = Condition::IfVersion(current.version);
        match state.index.write(&shard, key, &entry, &condition).await {
            Ok(_) => {
                if let Err(e) =
                    crate::expirer::enqueue(state, account, (container, bucket), key, &entry).await
                {
                    tracing::debug!(error = %e, "expiry not queued; the first read after it deletes");
                }
                return text(StatusCode::ACCEPTED, "");
            }
            // A PUT or DELETE came between the read and the write: read again.
            Err(DataError::PreconditionFailed) => {}
            Err(e) => return from_s3(&crate::s3::to_s3(e)),
        }
    }
    tracing::debug!(
        attempts = POST_ATTEMPTS,
        "object POST kept racing other writes"
    );
    text(
        StatusCode::CONFLICT,
        "There was a conflict when trying to complete your request.",
    )
}
