//! Objects: PUT streams through the data path (or inline into the index entry), then
//! writes the index entry, then answers; GET and HEAD read the index entry first.

use std::ops::Range as ByteRange;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use hyper::StatusCode;
use nimbus_core::checksum::{ChecksumAlgorithm, to_base64};
use nimbus_core::ids::VersionId;
use nimbus_core::index::{EntryData, IndexEntry, Part, validate_object_key};
use nimbus_ring::map::{Bucket, Versioning};
use s3s::dto::*;
use s3s::{S3Error, S3Request, S3Response, S3Result, TrailingHeaders, s3_error};

use super::S3State;
use super::buckets::owned;
use super::error::to_s3;
use super::tagging;
use crate::data::{self, FragmentName, PutBody, Shape};
use crate::error::DataError;
use crate::index::{Condition, IndexClient};
use crate::placement::Place;

/// Names under which the standard headers are kept among an entry's metadata pairs: a
/// leading ':' cannot begin a user metadata name (an HTTP header name), so they never clash.
const CACHE_CONTROL: &str = ":cache-control";
const CONTENT_DISPOSITION: &str = ":content-disposition";
const CONTENT_ENCODING: &str = ":content-encoding";
const CONTENT_LANGUAGE: &str = ":content-language";
const EXPIRES: &str = ":expires";
/// When the object expires (Swift's `X-Delete-At`), in unix seconds: from then on it reads as
/// absent through both APIs, and the first read that finds it writes its tombstone.
pub(crate) const DELETE_AT: &str = ":delete-at";

/// Tells whether a reserved pair holds one of the standard headers or the expiry (what a
/// Swift POST replaces), rather than a pair of the system's own.
pub(crate) fn is_header_pair(name: &str) -> bool {
    matches!(
        name,
        CACHE_CONTROL
            | CONTENT_DISPOSITION
            | CONTENT_ENCODING
            | CONTENT_LANGUAGE
            | EXPIRES
            | DELETE_AT
    )
}

/// Marks a Swift Static Large Object: the entry's bytes are its manifest (JSON), the value
/// is the total size of its segments, which clients see as the object's.
pub(crate) const SLO: &str = ":slo";
/// Marks a Swift Dynamic Large Object: the value is `container/prefix` of its segments.
pub(crate) const DLO: &str = ":dlo";

/// The value of reserved pair `name` of `entry`.
pub(crate) fn reserved<'a>(entry: &'a IndexEntry, name: &str) -> Option<&'a str> {
    entry
        .user_metadata
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The segments, size and ETag of `entry` when it is a Swift large object (static or
/// dynamic), which S3 reads as the concatenation too.
///
/// # Errors
/// Reading the manifest or listing the segments failed.
async fn large_object(
    state: &S3State,
    account: &str,
    path: (&str, &str),
    entry: &IndexEntry,
) -> S3Result<Option<crate::swift::large::Large>> {
    if reserved(entry, SLO).is_none() && reserved(entry, DLO).is_none() {
        return Ok(None);
    }
    crate::swift::large::of(state, account, path, entry).await
}

/// The size clients see of `entry`: a Static Large Object's total, else its own.
pub(crate) fn listed_size(entry: &IndexEntry) -> u64 {
    reserved(entry, SLO)
        .and_then(|v| v.parse().ok())
        .unwrap_or(entry.size)
}

/// The unix second at which `entry` expires, if it was given one.
pub(crate) fn delete_at(entry: &IndexEntry) -> Option<u64> {
    reserved(entry, DELETE_AT).and_then(|v| v.parse().ok())
}

/// Tells whether `entry` has expired at unix second `now` (Swift: at `X-Delete-At` itself).
pub(crate) fn is_expired(entry: &IndexEntry, now: u64) -> bool {
    delete_at(entry).is_some_and(|at| at <= now)
}

/// The current unix second.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn check_key(key: &str) -> S3Result<()> {
    validate_object_key(key).map_err(|e| {
        if key.is_empty() {
            s3_error!(InvalidArgument, "{e}")
        } else {
            s3_error!(KeyTooLongError, "{e}")
        }
    })
}

pub(crate) fn object_path(account: &str, bucket: &str, key: &str) -> String {
    format!("{account}/{bucket}/{key}")
}

pub(crate) fn last_modified(version: VersionId) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_micros(version.micros()))
}

pub(crate) fn etag_value(etag: &str) -> ETag {
    ETag::Strong(etag.to_owned())
}

pub(crate) fn format_http_date(t: &Timestamp) -> Option<String> {
    let mut buf = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
    String::from_utf8(buf).ok()
}

/// The standard headers an object keeps (`Cache-Control` and friends).
#[derive(Default)]
pub(crate) struct Standard {
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub expires: Option<Timestamp>,
}

/// The user metadata and standard headers of a PUT, as entry pairs.
pub(crate) fn metadata_pairs(
    metadata: Option<&Metadata>,
    standard: Standard,
) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = metadata
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    pairs.sort();
    let standard = [
        (CACHE_CONTROL, standard.cache_control),
        (CONTENT_DISPOSITION, standard.content_disposition),
        (CONTENT_ENCODING, standard.content_encoding),
        (CONTENT_LANGUAGE, standard.content_language),
        (
            EXPIRES,
            standard.expires.as_ref().and_then(format_http_date),
        ),
    ];
    for (name, value) in standard {
        if let Some(v) = value {
            pairs.push((name.to_owned(), v));
        }
    }
    pairs
}

/// What a GET or HEAD answers besides the body, from an entry.
pub(crate) struct Described {
    pub metadata: Metadata,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub expires: Option<Timestamp>,
    /// The number of tags (`x-amz-tagging-count`), when there are any.
    pub tag_count: Option<i32>,
    /// Swift's `X-Delete-At`.
    pub delete_at: Option<u64>,
}

pub(crate) fn describe(entry: &IndexEntry) -> Described {
    let mut d = Described {
        metadata: Metadata::new(),
        cache_control: None,
        content_disposition: None,
        content_encoding: None,
        content_language: None,
        expires: None,
        tag_count: None,
        delete_at: None,
    };
    for (k, v) in &entry.user_metadata {
        match k.as_str() {
            CACHE_CONTROL => d.cache_control = Some(v.clone()),
            CONTENT_DISPOSITION => d.content_disposition = Some(v.clone()),
            CONTENT_ENCODING => d.content_encoding = Some(v.clone()),
            CONTENT_LANGUAGE => d.content_language = Some(v.clone()),
            EXPIRES => d.expires = Timestamp::parse(TimestampFormat::HttpDate, v).ok(),
            tagging::TAGGING => {
                d.tag_count = i32::try_from(tagging::count(v)).ok().filter(|n| *n > 0);
            }
            DELETE_AT => d.delete_at = v.parse().ok(),
            // Other reserved pairs (':' never begins a user's name) are Nimbus's own.
            _ if k.starts_with(':') => {}
            _ => {
                d.metadata.insert(k.clone(), v.clone());
            }
        }
    }
    d
}

fn condition_of(input: &PutObjectInput) -> S3Result<Condition> {
    match (&input.if_none_match, &input.if_match) {
        (Some(_), Some(_)) => Err(s3_error!(
            InvalidArgument,
            "If-Match and If-None-Match together are not supported"
        )),
        (Some(c), None) if c.is_any() => Ok(Condition::IfNoneMatch),
        (Some(_), None) => Err(s3_error!(
            NotImplemented,
            "If-None-Match on PUT takes only *"
        )),
        (None, Some(c)) => match c.as_etag() {
            Some(etag) => Ok(Condition::IfMatch(etag.value().to_owned())),
            None => Err(s3_error!(
                NotImplemented,
                "If-Match: * on PUT is not supported"
            )),
        },
        (None, None) => Ok(Condition::None),
    }
}

/// Parses `Content-MD5`: the base64 of 16 bytes.
pub(crate) fn content_md5(value: Option<&String>) -> S3Result<Option<[u8; 16]>> {
    let Some(b64) = value else { return Ok(None) };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .filter(|b| b.len() == 16)
        .ok_or_else(|| s3_error!(InvalidDigest, "Content-MD5 is not the base64 of 16 bytes"))?;
    let mut md5 = [0u8; 16];
    md5.copy_from_slice(&bytes);
    Ok(Some(md5))
}

/// The declared length of a body, or the S3 error for its absence.
pub(crate) fn declared_length(content_length: Option<i64>) -> S3Result<u64> {
    match content_length {
        Some(n) if n >= 0 => Ok(n as u64),
        Some(_) => Err(s3_error!(InvalidArgument, "negative Content-Length")),
        None => Err(s3_error!(MissingContentLength)),
    }
}

/// The client checksums of an upload (`x-amz-checksum-*`): the values sent as headers, the
/// algorithms whose values follow the body as trailers, and what is to be computed.
pub(crate) struct ChecksumPlan {
    algorithms: Vec<ChecksumAlgorithm>,
    in_headers: Vec<(ChecksumAlgorithm, Vec<u8>)>,
    in_trailers: Vec<ChecksumAlgorithm>,
    trailers: Option<TrailingHeaders>,
}

impl ChecksumPlan {
    /// Reads the plan from a request's headers: `x-amz-checksum-<alg>` values,
    /// `x-amz-trailer` (values to come after the body) and `x-amz-sdk-checksum-algorithm`.
    pub(crate) fn of(
        headers: &hyper::HeaderMap,
        trailers: Option<TrailingHeaders>,
    ) -> S3Result<ChecksumPlan> {
        let mut plan = ChecksumPlan {
            algorithms: Vec::new(),
            in_headers: Vec::new(),
            in_trailers: Vec::new(),
            trailers,
        };
        for algorithm in ChecksumAlgorithm::ALL {
            if let Some(value) = headers.get(algorithm.header_name()) {
                let value = value
                    .to_str()
                    .ok()
                    .and_then(|v| algorithm.parse_base64(v).ok())
                    .ok_or_else(|| {
                        s3_error!(
                            InvalidRequest,
                            "Value for {} header is invalid.",
                            algorithm.header_name()
                        )
                    })?;
                plan.in_headers.push((algorithm, value));
                plan.algorithms.push(algorithm);
            }
        }
        if let Some(trailer) = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()) {
            for name in trailer.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if let Some(algorithm) = ChecksumAlgorithm::from_header_name(name) {
                    plan.in_trailers.push(algorithm);
                    plan.algorithms.push(algorithm);
                }
            }
        }
        if let Some(name) = headers
            .get("x-amz-sdk-checksum-algorithm")
            .and_then(|v| v.to_str().ok())
        {
            let algorithm: ChecksumAlgorithm = name
                .parse()
                .map_err(|_| s3_error!(InvalidRequest, "unknown checksum algorithm {name}"))?;
            plan.algorithms.push(algorithm);
        }
        plan.algorithms.sort_by_key(|a| a.s3_name());
        plan.algorithms.dedup();
        if plan.algorithms.len() > 1 {
            return Err(s3_error!(
                InvalidRequest,
                "Expecting a single x-amz-checksum- header"
            ));
        }
        Ok(plan)
    }

    /// Tells whether the body's checksum of `algorithm` is sent or to be computed.
    pub(crate) fn covers(&self, algorithm: ChecksumAlgorithm) -> bool {
        self.algorithms.contains(&algorithm)
    }

    /// Checks the computed checksums against the values the client sent.
    fn verify(&self, computed: &[(ChecksumAlgorithm, Vec<u8>)]) -> Result<(), DataError> {
        for (algorithm, value) in computed {
            let expected =
                if let Some((_, v)) = self.in_headers.iter().find(|(a, _)| a == algorithm) {
                    Some(v.clone())
                } else if self.in_trailers.contains(algorithm) {
                    let sent = self
                        .trailers
                        .as_ref()
                        .and_then(|t| {
                            t.read(|h| {
                                h.get(algorithm.header_name())
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned)
                            })
                        })
                        .flatten()
                        .ok_or_else(|| {
                            DataError::BadRequest(format!(
                                "the trailer {} did not arrive",
                                algorithm.header_name()
                            ))
                        })?;
                    Some(algorithm.parse_base64(&sent).map_err(|e| {
                        DataError::BadRequest(format!("trailer {}: {e}", algorithm.header_name()))
                    })?)
                } else {
                    None
                };
            if expected.is_some_and(|e| e != *value) {
                return Err(DataError::BadDigest(format!(
                    "The {} you specified did not match the calculated checksum.",
                    algorithm.s3_name()
                )));
            }
        }
        Ok(())
    }
}

/// The checksums of an entry as S3 output fields: (crc32, crc32c, crc64nvme, sha1, sha256).
pub(crate) struct OutputChecksums {
    pub crc32: Option<String>,
    pub crc32c: Option<String>,
    pub crc64nvme: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
}

pub(crate) fn output_checksums(checksums: &[(String, Vec<u8>)]) -> OutputChecksums {
    let mut out = OutputChecksums {
        crc32: None,
        crc32c: None,
        crc64nvme: None,
        sha1: None,
        sha256: None,
    };
    for (name, value) in checksums {
        // A multipart object's composite checksum is kept as `ALG-N`, answered `base64-N`.
        let (name, parts) = match name.split_once('-') {
            Some((name, parts)) => (name, format!("-{parts}")),
            None => (name.as_str(), String::new()),
        };
        let encoded = Some(to_base64(value) + &parts);
        match name.parse::<ChecksumAlgorithm>() {
            Ok(ChecksumAlgorithm::Crc32) => out.crc32 = encoded,
            Ok(ChecksumAlgorithm::Crc32c) => out.crc32c = encoded,
            Ok(ChecksumAlgorithm::Crc64Nvme) => out.crc64nvme = encoded,
            Ok(ChecksumAlgorithm::Sha1) => out.sha1 = encoded,
            Ok(ChecksumAlgorithm::Sha256) => out.sha256 = encoded,
            Err(_) => {}
        }
    }
    out
}

fn checksums_wanted(mode: Option<&ChecksumMode>) -> bool {
    mode.is_some_and(|m| m.as_str().eq_ignore_ascii_case("ENABLED"))
}

/// A body stored: its digests and where its bytes are.
pub(crate) struct Stored {
    pub digests: data::Digests,
    pub data: EntryData,
}

/// Stores a body as version `version` of `account/bucket/key`: inline when `inline` allows
/// and it is small enough, else as fragments of `policy`; checks `Content-MD5` before
/// anything is committed.
#[allow(clippy::too_many_arguments)] // one call site each, spelled out
pub(crate) async fn store_body(
    state: &S3State,
    account: &str,
    bucket: &str,
    key: &str,
    policy: &str,
    version: VersionId,
    body: Option<StreamingBlob>,
    declared: u64,
    md5: Option<[u8; 16]>,
    checksums: &ChecksumPlan,
    inline: bool,
) -> S3Result<Stored> {
    let body = PutBody {
        stream: body.unwrap_or_else(|| {
            StreamingBlob::wrap(futures_util::stream::empty::<Result<Bytes, std::io::Error>>())
        }),
        declared,
        checksums: checksums.algorithms.clone(),
    };
    let check_md5 = |digests: &data::Digests| -> Result<(), DataError> {
        match md5 {
            Some(expected) if expected != digests.md5 => Err(DataError::BadDigest(
                "the Content-MD5 you specified did not match what we received".into(),
            )),
            _ => checksums.verify(&digests.checksums),
        }
    };
    if declared == 0 || (inline && declared <= state.inline_max) {
        let (bytes, digests) = data::read_small(body).await.map_err(to_s3)?;
        check_md5(&digests).map_err(to_s3)?;
        return Ok(Stored {
            digests,
            data: EntryData::Inline(bytes.to_vec()),
        });
    }
    let path = object_path(account, bucket, key);
    let map = state.cluster.map();
    let place = Place::of(&map, policy, &path).map_err(to_s3)?;
    let shape = Shape::of(&place.policy).map_err(to_s3)?;
    let name = FragmentName {
        policy: policy.to_owned(),
        partition: place.partition,
        version,
        path,
    };
    let digests = data::put_fragments(&state.data, &place, &name, &shape, body, check_md5)
        .await
        .map_err(to_s3)?;
    Ok(Stored {
        digests,
        data: EntryData::Fragments {
            segment_bytes: state.data.segment_bytes,
        },
    })
}

pub async fn put(
    state: &S3State,
    account: &str,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let plan = ChecksumPlan::of(&req.headers, req.trailing_headers.clone())?;
    let mut input = req.input;
    let bucket = owned(state, account, &input.bucket)?;
    check_key(&input.key)?;
    let declared = declared_length(input.content_length)?;
    let md5 = content_md5(input.content_md5.as_ref())?;
    let condition = condition_of(&input)?;
    let tags = tagging::pair_of_header(input.tagging.as_deref())?;
    let version = state.data.clock.next();
    let Stored { digests, data } = store_body(
        state,
        account,
        &input.bucket,
        &input.key,
        &bucket.policy,
        version,
        input.body.take(),
        declared,
        md5,
        &plan,
        true,
    )
    .await?;
    let etag = hex::encode(digests.md5);
    let client_checksums = digests.client_checksums();
    let standard = Standard {
        cache_control: input.cache_control.take(),
        content_disposition: input.content_disposition.take(),
        content_encoding: input.content_encoding.take(),
        content_language: input.content_language.take(),
        expires: input.expires.take(),
    };
    let entry = IndexEntry {
        version,
        size: digests.bytes,
        etag: etag.clone(),
        blake3: digests.blake3,
        client_checksums: client_checksums.clone(),
        content_type: input.content_type.clone().unwrap_or_default(),
        user_metadata: metadata_pairs(input.metadata.as_ref(), standard)
            .into_iter()
            .chain(tags)
            .collect(),
        policy: bucket.policy.clone(),
        data,
    };
    entry
        .validate()
        .map_err(|e| s3_error!(MetadataTooLarge, "{e}"))?;
    let version_id = super::versions::commit(
        state,
        account,
        &input.bucket,
        &bucket,
        &input.key,
        entry,
        &condition,
    )
    .await?;
    let c = output_checksums(&client_checksums);
    Ok(S3Response::new(PutObjectOutput {
        version_id,
        e_tag: Some(etag_value(&etag)),
        size: Some(digests.bytes as i64),
        checksum_crc32: c.crc32,
        checksum_crc32c: c.crc32c,
        checksum_crc64nvme: c.crc64nvme,
        checksum_sha1: c.sha1,
        checksum_sha256: c.sha256,
        ..Default::default()
    }))
}

/// Reads the key's live entry, or `NoSuchKey`.
pub(crate) async fn live_entry(
    state: &S3State,
    account: &str,
    bucket: &Bucket,
    name: &str,
    key: &str,
) -> S3Result<IndexEntry> {
    check_key(key)?;
    let shard = IndexClient::shard_of(account, name, key, bucket.shards);
    match state.index.read(&shard, key).await.map_err(to_s3)? {
        Some(record) if is_expired(&record.entry, unix_now()) => {
            reclaim_expired(state, &shard, key, bucket, record.entry.version).await;
            Err(s3_error!(NoSuchKey))
        }
        Some(record) if !record.entry.is_tombstone() => Ok(record.entry),
        _ => Err(s3_error!(NoSuchKey)),
    }
}

/// Writes a PUT's new entry for `key` under `condition`. Should `If-None-Match: *` fail only
/// because the current entry has expired (absent to every reader, its tombstone not written
/// yet), the tombstone is written and the write tried once more.
pub(crate) async fn write_new_entry(
    state: &S3State,
    bucket: &Bucket,
    shard: &crate::index::Shard<'_>,
    key: &str,
    entry: &IndexEntry,
    condition: &Condition,
) -> Result<u64, DataError> {
    match state.index.write(shard, key, entry, condition).await {
        Err(DataError::PreconditionFailed) if *condition == Condition::IfNoneMatch => {
            match state.index.read(shard, key).await? {
                Some(r) if is_expired(&r.entry, unix_now()) => {
                    reclaim_expired(state, shard, key, bucket, r.entry.version).await;
                    state.index.write(shard, key, entry, condition).await
                }
                _ => Err(DataError::PreconditionFailed),
            }
        }
        other => other,
    }
}

/// How long a read waits for the tombstone of an expired entry it found.
const RECLAIM_TIMEOUT: Duration = Duration::from_secs(3);

/// Deletes an expired entry: a tombstone written only if the entry is still `version` (a
/// newer PUT stays). Its fragments are left to garbage collection, as any overwritten
/// version's are (the collector is another issue's work). Failing here costs nothing: the
/// entry reads as absent anyway, and the next read tries again.
async fn reclaim_expired(
    state: &S3State,
    shard: &crate::index::Shard<'_>,
    key: &str,
    bucket: &Bucket,
    version: VersionId,
) {
    let tombstone = IndexEntry::tombstone(state.data.clock.next(), bucket.policy.clone());
    let condition = Condition::IfVersion(version);
    let write = state.index.write(shard, key, &tombstone, &condition);
    match tokio::time::timeout(RECLAIM_TIMEOUT, write).await {
        Ok(Ok(_) | Err(DataError::PreconditionFailed)) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "tombstone of an expired entry not written"),
        Err(_) => tracing::debug!("tombstone of an expired entry timed out"),
    }
}

/// The key's live entry in a bucket `account` owns, if the read conditions let it be read.
pub(crate) async fn readable_entry(
    state: &S3State,
    account: &str,
    name: &str,
    key: &str,
    conditions: &ReadConditions<'_>,
) -> S3Result<IndexEntry> {
    let bucket = owned(state, account, name)?;
    let entry = live_entry(state, account, &bucket, name, key).await?;
    conditions.check(&entry)?;
    Ok(entry)
}

/// The read conditions of GET and HEAD, checked in RFC 9110's order: `If-Match`, then
/// `If-Unmodified-Since` (412), then `If-None-Match`, then `If-Modified-Since` (304).
pub(crate) struct ReadConditions<'a> {
    pub if_match: Option<&'a IfMatch>,
    pub if_unmodified_since: Option<&'a Timestamp>,
    pub if_none_match: Option<&'a IfNoneMatch>,
    pub if_modified_since: Option<&'a Timestamp>,
}

pub(crate) fn etag_matches(condition: &ETagCondition, etag: &str) -> bool {
    match condition.as_etag() {
        None => true,
        Some(e) => e.value() == etag,
    }
}

/// Whole seconds, as HTTP dates carry them.
fn seconds(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

impl ReadConditions<'_> {
    pub(crate) fn check(&self, entry: &IndexEntry) -> S3Result<()> {
        let modified = seconds(&last_modified(entry.version));
        if let Some(c) = self.if_match {
            if !etag_matches(c, &entry.etag) {
                return Err(s3_error!(PreconditionFailed));
            }
        } else if let Some(t) = self.if_unmodified_since
            && modified > seconds(t)
        {
            return Err(s3_error!(PreconditionFailed));
        }
        if let Some(c) = self.if_none_match {
            if etag_matches(c, &entry.etag) {
                return Err(not_modified(entry));
            }
        } else if let Some(t) = self.if_modified_since
            && modified <= seconds(t)
        {
            return Err(not_modified(entry));
        }
        Ok(())
    }
}

fn not_modified(entry: &IndexEntry) -> S3Error {
    let mut e = s3_error!(NotModified);
    let mut headers = hyper::HeaderMap::new();
    if let Ok(v) = etag_value(&entry.etag).to_http_header() {
        headers.insert(hyper::header::ETAG, v);
    }
    e.set_headers(headers);
    e
}

pub(crate) fn byte_range(range: Option<&Range>, size: u64) -> S3Result<Option<ByteRange<u64>>> {
    match range {
        None => Ok(None),
        Some(r) => r.check(size).map(Some).map_err(|_| {
            s3_error!(
                InvalidRange,
                "the range is not satisfiable for an object of {size} bytes"
            )
        }),
    }
}

/// Opens the bytes `range` (all when `None`) of `entry`, the live entry of
/// `account/bucket/key`.
pub(crate) async fn open_body(
    state: &S3State,
    account: &str,
    bucket: &str,
    key: &str,
    entry: &IndexEntry,
    range: Option<ByteRange<u64>>,
) -> S3Result<data::BodyStream> {
    let size = entry.size;
    let wanted = range.clone().unwrap_or(0..size);
    Ok(match &entry.data {
        EntryData::Inline(bytes) => {
            let slice = Bytes::copy_from_slice(&bytes[wanted.start as usize..wanted.end as usize]);
            Box::pin(futures_util::stream::iter([Ok(slice)]))
        }
        EntryData::Fragments { segment_bytes } => {
            let path = object_path(account, bucket, key);
            let map = state.cluster.map();
            let place = Place::of(&map, &entry.policy, &path).map_err(to_s3)?;
            let shape = Shape::of(&place.policy).map_err(to_s3)?;
            let name = FragmentName {
                policy: entry.policy.clone(),
                partition: place.partition,
                version: entry.version,
                path,
            };
            let extent = data::Extent {
                size,
                segment_bytes: *segment_bytes,
                range: wanted,
                blake3: range.is_none().then_some(entry.blake3),
            };
            data::read_object(&state.data, &place, &name, &shape, extent)
                .await
                .map_err(to_s3)?
        }
        EntryData::Parts(parts) => {
            read_parts(
                state,
                object_path(account, bucket, key),
                &entry.policy,
                parts,
                wanted,
            )
            .await?
        }
        EntryData::Tombstone => return Err(s3_error!(NoSuchKey)),
    })
}

/// What GET and HEAD read: the entry (the current one, or the version asked for), the
/// version id to report, and, when the entry is a Swift large object (static or dynamic),
/// its segments, which S3 reads as the object's bytes too (one namespace).
struct Found {
    entry: IndexEntry,
    version_id: Option<String>,
    large: Option<crate::swift::large::Large>,
    /// The bytes a client reads: the large object's, else the entry's.
    size: u64,
    /// The ETag a client sees: the large object's, else the entry's.
    etag: String,
}

async fn found(
    state: &S3State,
    account: &str,
    (bucket, key): (&str, &str),
    version: Option<&str>,
    conditions: &ReadConditions<'_>,
) -> S3Result<Found> {
    let (entry, version_id) =
        super::versions::read(state, account, bucket, key, version, conditions).await?;
    let large = large_object(state, account, (bucket, key), &entry).await?;
    let (size, etag) = match &large {
        Some(l) => (l.size, l.etag.clone()),
        None => (entry.size, entry.etag.clone()),
    };
    Ok(Found {
        entry,
        version_id,
        large,
        size,
        etag,
    })
}

pub async fn get(
    state: &std::sync::Arc<S3State>,
    account: &str,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let input = req.input;
    let conditions = ReadConditions {
        if_match: input.if_match.as_ref(),
        if_unmodified_since: input.if_unmodified_since.as_ref(),
        if_none_match: input.if_none_match.as_ref(),
        if_modified_since: input.if_modified_since.as_ref(),
    };
    let path = (input.bucket.as_str(), input.key.as_str());
    let Found {
        entry,
        version_id,
        large,
        size,
        etag,
    } = found(
        state,
        account,
        path,
        input.version_id.as_deref(),
        &conditions,
    )
    .await?;
    let range = byte_range(input.range.as_ref(), size)?;
    let wanted = range.clone().unwrap_or(0..size);
    let body = match &large {
        Some(l) => {
            let state = std::sync::Arc::clone(state);
            crate::swift::large::open(state, account.to_owned(), &l.segments, wanted.clone())
                .await?
        }
        None => {
            open_body(
                state,
                account,
                &input.bucket,
                &input.key,
                &entry,
                range.clone(),
            )
            .await?
        }
    };
    let d = describe(&entry);
    let c = output_checksums(
        if checksums_wanted(input.checksum_mode.as_ref()) && range.is_none() {
            &entry.client_checksums
        } else {
            &[]
        },
    );
    let output = GetObjectOutput {
        checksum_crc32: c.crc32,
        checksum_crc32c: c.crc32c,
        checksum_crc64nvme: c.crc64nvme,
        checksum_sha1: c.sha1,
        checksum_sha256: c.sha256,
        body: Some(StreamingBlob::wrap(body)),
        accept_ranges: Some("bytes".to_owned()),
        content_length: Some((wanted.end - wanted.start) as i64),
        content_range: range
            .as_ref()
            .map(|r| format!("bytes {}-{}/{size}", r.start, r.end.saturating_sub(1))),
        content_type: Some(
            input
                .response_content_type
                .clone()
                .unwrap_or_else(|| entry.content_type.clone()),
        )
        .filter(|t| !t.is_empty()),
        cache_control: input.response_cache_control.clone().or(d.cache_control),
        content_disposition: input
            .response_content_disposition
            .clone()
            .or(d.content_disposition),
        content_encoding: input
            .response_content_encoding
            .clone()
            .or(d.content_encoding),
        content_language: input
            .response_content_language
            .clone()
            .or(d.content_language),
        expires: input.response_expires.clone().or(d.expires),
        tag_count: d.tag_count,
        e_tag: Some(etag_value(&etag)),
        last_modified: Some(last_modified(entry.version)),
        metadata: Some(d.metadata).filter(|m| !m.is_empty()),
        version_id,
        ..Default::default()
    };
    if range.is_some() {
        Ok(S3Response::with_status(output, StatusCode::PARTIAL_CONTENT))
    } else {
        Ok(S3Response::new(output))
    }
}

/// Opens the parts of one multipart object.
#[derive(Clone)]
struct PartReader {
    data: data::DataPath,
    place: Place,
    shape: Shape,
    path: String,
    policy: String,
}

impl PartReader {
    /// Opens bytes `within` of `part`, checking the part's blake3 when it is read whole.
    async fn open(
        &self,
        part: &Part,
        within: ByteRange<u64>,
    ) -> Result<data::BodyStream, DataError> {
        let name = FragmentName {
            policy: self.policy.clone(),
            partition: self.place.partition,
            version: part.version,
            path: self.path.clone(),
        };
        let whole = (within.start == 0 && within.end == part.size).then_some(part.blake3);
        let extent = data::Extent {
            size: part.size,
            segment_bytes: part.segment_bytes,
            range: within,
            blake3: whole,
        };
        data::read_object(&self.data, &self.place, &name, &self.shape, extent).await
    }
}

/// Reads `range` of an object stored in parts: each part that the range touches, in order,
/// reading only the segments it needs. The first part is opened before this returns (so an
/// unreadable object fails before any byte is sent); a later part that cannot be read
/// breaks the body off.
async fn read_parts(
    state: &S3State,
    path: String,
    policy: &str,
    parts: &[Part],
    range: ByteRange<u64>,
) -> S3Result<data::BodyStream> {
    let map = state.cluster.map();
    let place = Place::of(&map, policy, &path).map_err(to_s3)?;
    let reader = PartReader {
        data: state.data.clone(),
        shape: Shape::of(&place.policy).map_err(to_s3)?,
        place,
        path,
        policy: policy.to_owned(),
    };
    // (part, range within it) for every part the range touches.
    let mut pieces = Vec::new();
    let mut start = 0u64;
    for part in parts {
        let end = start + part.size;
        let (lo, hi) = (range.start.max(start), range.end.min(end));
        if lo < hi {
            pieces.push((part.clone(), lo - start..hi - start));
        }
        start = end;
    }
    let mut pieces = pieces.into_iter();
    let Some((first, within)) = pieces.next() else {
        return Ok(Box::pin(futures_util::stream::empty()));
    };
    let first = reader.open(&first, within).await.map_err(to_s3)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        let mut next = Some(first);
        loop {
            let mut stream = match next.take() {
                Some(s) => s,
                None => match pieces.next() {
                    None => return,
                    Some((part, within)) => match reader.open(&part, within).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                            return;
                        }
                    },
                },
            };
            while let Some(item) = futures_util::StreamExt::next(&mut stream).await {
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        }
    });
    Ok(Box::pin(crate::node_client::ChannelStream(rx)))
}

pub async fn head(
    state: &S3State,
    account: &str,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let input = req.input;
    let conditions = ReadConditions {
        if_match: input.if_match.as_ref(),
        if_unmodified_since: input.if_unmodified_since.as_ref(),
        if_none_match: input.if_none_match.as_ref(),
        if_modified_since: input.if_modified_since.as_ref(),
    };
    let path = (input.bucket.as_str(), input.key.as_str());
    let Found {
        entry,
        version_id,
        large: _,
        size,
        etag,
    } = found(
        state,
        account,
        path,
        input.version_id.as_deref(),
        &conditions,
    )
    .await?;
    let range = byte_range(input.range.as_ref(), size)?;
    let d = describe(&entry);
    let tag_count = d.tag_count;
    let c = output_checksums(if checksums_wanted(input.checksum_mode.as_ref()) {
        &entry.client_checksums
    } else {
        &[]
    });
    let output = HeadObjectOutput {
        checksum_crc32: c.crc32,
        checksum_crc32c: c.crc32c,
        checksum_crc64nvme: c.crc64nvme,
        checksum_sha1: c.sha1,
        checksum_sha256: c.sha256,
        accept_ranges: Some("bytes".to_owned()),
        content_length: Some(range.as_ref().map_or(size, |r| r.end - r.start) as i64),
        content_range: range
            .as_ref()
            .map(|r| format!("bytes {}-{}/{}", r.start, r.end.saturating_sub(1), size)),
        content_type: Some(entry.content_type.clone()).filter(|t| !t.is_empty()),
        cache_control: d.cache_control,
        content_disposition: d.content_disposition,
        content_encoding: d.content_encoding,
        content_language: d.content_language,
        expires: d.expires,
        e_tag: Some(etag_value(&etag)),
        last_modified: Some(last_modified(entry.version)),
        metadata: Some(d.metadata).filter(|m| !m.is_empty()),
        version_id,
        ..Default::default()
    };
    let mut response = if range.is_some() {
        S3Response::with_status(output, StatusCode::PARTIAL_CONTENT)
    } else {
        S3Response::new(output)
    };
    // HeadObjectOutput has no field for it; S3 sends it on HEAD as on GET.
    if let Some(n) = tag_count {
        response
            .headers
            .insert("x-amz-tagging-count", hyper::header::HeaderValue::from(n));
    }
    Ok(response)
}

pub async fn delete(
    state: &S3State,
    account: &str,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let input = req.input;
    let bucket = owned(state, account, &input.bucket)?;
    check_key(&input.key)?;
    if input.version_id.is_some() || bucket.versioning != Versioning::Unversioned {
        return super::versions::delete(state, account, &bucket, &input).await;
    }
    let shard = IndexClient::shard_of(account, &input.bucket, &input.key, bucket.shards);
    // Deleting a key that is absent succeeds, as in S3; the tombstone orders the delete
    // after every earlier write.
    let tombstone = IndexEntry::tombstone(state.data.clock.next(), bucket.policy.clone());
    state
        .index
        .write(&shard, &input.key, &tombstone, &Condition::None)
        .await
        .map_err(to_s3)?;
    Ok(S3Response::new(DeleteObjectOutput::default()))
}

/// What a copy's entry takes from its request rather than its source: the content type and
/// the metadata pairs (`REPLACE`), or nothing (`COPY`).
pub(crate) type Replacement = Option<(String, Vec<(String, String)>)>;

/// What a copy's tags are: the source's (`COPY`, the default) or the request's (`REPLACE`,
/// the checked metadata pair, none for no tags).
pub(crate) enum TagsDirective {
    Copy,
    Replace(Option<(String, String)>),
}

/// Copies `account/src_bucket/src_key` (readable under `conditions`) to
/// `account/dst_bucket/dst_key`: the bytes streamed through the data path into a new version
/// of the destination, never held whole; the index entry written last. Returns the new entry.
pub(crate) async fn copy_entry(
    state: &std::sync::Arc<S3State>,
    account: &str,
    (src_bucket, src_key): (&str, &str),
    (dst_bucket, dst_key): (&str, &str),
    conditions: &ReadConditions<'_>,
    replacement: Replacement,
) -> S3Result<IndexEntry> {
    let keep = TagsDirective::Copy;
    let (src, dst) = ((src_bucket, src_key, None), (dst_bucket, dst_key));
    copy_entry_tagged(state, account, src, dst, conditions, replacement, keep)
        .await
        .map(|(entry, _)| entry)
}

/// [`copy_entry`], with the destination's tags chosen by `tags`.
pub(crate) async fn copy_entry_tagged(
    state: &std::sync::Arc<S3State>,
    account: &str,
    (src_bucket, src_key, src_version): (&str, &str, Option<&str>),
    (dst_bucket, dst_key): (&str, &str),
    conditions: &ReadConditions<'_>,
    replacement: Replacement,
    tags: TagsDirective,
) -> S3Result<(IndexEntry, Option<String>)> {
    let destination = owned(state, account, dst_bucket)?;
    check_key(dst_key)?;
    let (source, _) =
        super::versions::read(state, account, src_bucket, src_key, src_version, conditions).await?;
    // A Swift large object is copied as its bytes (its segments'), as Swift does: the copy is
    // an ordinary object.
    let large = large_object(state, account, (src_bucket, src_key), &source).await?;
    let (body, size) = match &large {
        Some(l) => {
            let whole = 0..l.size;
            let stream = crate::swift::large::open(
                std::sync::Arc::clone(state),
                account.to_owned(),
                &l.segments,
                whole,
            )
            .await?;
            (stream, l.size)
        }
        None => (
            open_body(state, account, src_bucket, src_key, &source, None).await?,
            source.size,
        ),
    };
    let version = state.data.clock.next();
    let none = ChecksumPlan::of(&hyper::HeaderMap::new(), None)?;
    let Stored { digests, data } = store_body(
        state,
        account,
        dst_bucket,
        dst_key,
        &destination.policy,
        version,
        Some(StreamingBlob::wrap(body)),
        size,
        None,
        &none,
        true,
    )
    .await?;
    let (content_type, mut user_metadata) =
        replacement.unwrap_or((source.content_type.clone(), source.user_metadata.clone()));
    // The copy holds the bytes themselves, not a manifest.
    user_metadata.retain(|(k, _)| k != SLO && k != DLO);
    let tags = match tags {
        TagsDirective::Copy => tagging::pair_of(&source),
        TagsDirective::Replace(pair) => pair,
    };
    tagging::replace_pair(&mut user_metadata, tags);
    let entry = IndexEntry {
        version,
        size: digests.bytes,
        etag: hex::encode(digests.md5),
        blake3: digests.blake3,
        // The source's client checksums hold for the same bytes, when it had one part (a
        // composite `ALG-N` one never does: the copy has one part).
        client_checksums: match source.data {
            _ if large.is_some() => Vec::new(),
            EntryData::Parts(_) => Vec::new(),
            _ => source
                .client_checksums
                .iter()
                .filter(|(name, _)| !name.contains('-'))
                .cloned()
                .collect(),
        },
        content_type,
        user_metadata,
        policy: destination.policy.clone(),
        data,
    };
    entry
        .validate()
        .map_err(|e| s3_error!(MetadataTooLarge, "{e}"))?;
    let version_id = super::versions::commit(
        state,
        account,
        dst_bucket,
        &destination,
        dst_key,
        entry.clone(),
        &Condition::None,
    )
    .await?;
    Ok((entry, version_id))
}

/// The bucket, key and version (if named) of a copy's source.
pub(crate) fn copy_source(source: &CopySource) -> S3Result<(String, String, Option<String>)> {
    match source {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => Ok((
            bucket.to_string(),
            key.to_string(),
            version_id.as_ref().map(ToString::to_string),
        )),
        _ => Err(s3_error!(
            NotImplemented,
            "access point and outpost copy sources are not supported"
        )),
    }
}

pub async fn copy(
    state: &std::sync::Arc<S3State>,
    account: &str,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let mut input = req.input;
    let (src_bucket, src_key, src_version) = copy_source(&input.copy_source)?;
    let replace = match input
        .metadata_directive
        .as_ref()
        .map(MetadataDirective::as_str)
    {
        None | Some("COPY") => false,
        Some("REPLACE") => true,
        Some(other) => {
            return Err(s3_error!(
                InvalidArgument,
                "unknown metadata directive {other}"
            ));
        }
    };
    if !replace && src_bucket == input.bucket && src_key == input.key {
        return Err(s3_error!(
            InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata."
        ));
    }
    let replacement = replace.then(|| {
        let standard = Standard {
            cache_control: input.cache_control.take(),
            content_disposition: input.content_disposition.take(),
            content_encoding: input.content_encoding.take(),
            content_language: input.content_language.take(),
            expires: input.expires.take(),
        };
        (
            input.content_type.take().unwrap_or_default(),
            metadata_pairs(input.metadata.as_ref(), standard),
        )
    });
    let tags = match input
        .tagging_directive
        .as_ref()
        .map(TaggingDirective::as_str)
    {
        None | Some("COPY") => TagsDirective::Copy,
        Some("REPLACE") => {
            TagsDirective::Replace(tagging::pair_of_header(input.tagging.as_deref())?)
        }
        Some(other) => {
            return Err(s3_error!(
                InvalidArgument,
                "unknown tagging directive {other}"
            ));
        }
    };
    let conditions = ReadConditions {
        if_match: input.copy_source_if_match.as_ref(),
        if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
        if_none_match: input.copy_source_if_none_match.as_ref(),
        if_modified_since: input.copy_source_if_modified_since.as_ref(),
    };
    let (entry, version_id) = copy_entry_tagged(
        state,
        account,
        (&src_bucket, &src_key, src_version.as_deref()),
        (&input.bucket, &input.key),
        &conditions,
        replacement,
        tags,
    )
    .await
    // A source that is not modified answers 412 to a copy, not 304.
    .map_err(|e| {
        if e.code().as_str() == "NotModified" {
            s3_error!(PreconditionFailed)
        } else {
            e
        }
    })?;
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(etag_value(&entry.etag)),
            last_modified: Some(last_modified(entry.version)),
            ..Default::default()
        }),
        copy_source_version_id: src_version,
        version_id,
        ..Default::default()
    }))
}

/// The most keys one DeleteObjects names (S3's limit).
const MAX_BATCH_DELETE: usize = 1000;

pub async fn delete_many(
    state: &S3State,
    account: &str,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let input = req.input;
    let bucket = owned(state, account, &input.bucket)?;
    let objects = &input.delete.objects;
    if objects.is_empty() || objects.len() > MAX_BATCH_DELETE {
        return Err(s3_error!(
            MalformedXML,
            "a DeleteObjects request names 1 to {MAX_BATCH_DELETE} keys"
        ));
    }
    let quiet = input.delete.quiet.unwrap_or(false);
    let name = input.bucket.as_str();
    // Each key as DeleteObject does it, 16 at a time; every key gets its own outcome.
    let keys: Vec<(String, Option<String>)> = objects
        .iter()
        .map(|o| (o.key.clone(), o.version_id.clone()))
        .collect();
    let bucket = &bucket;
    type Outcome = Result<DeleteObjectOutput, S3Error>;
    let outcomes: Vec<(String, Option<String>, Outcome)> = futures_util::stream::iter(keys)
        .map(|(key, version_id)| async move {
            let outcome = async {
                check_key(&key)?;
                if version_id.is_some() || bucket.versioning != Versioning::Unversioned {
                    let one = DeleteObjectInput {
                        bucket: name.to_owned(),
                        key: key.clone(),
                        version_id: version_id.clone(),
                        ..Default::default()
                    };
                    return super::versions::delete(state, account, bucket, &one)
                        .await
                        .map(|r| r.output);
                }
                let shard = IndexClient::shard_of(account, name, &key, bucket.shards);
                let tombstone =
                    IndexEntry::tombstone(state.data.clock.next(), bucket.policy.clone());
                state
                    .index
                    .write(&shard, &key, &tombstone, &Condition::None)
                    .await
                    .map(|_| DeleteObjectOutput::default())
                    .map_err(to_s3)
            }
            .await;
            (key, version_id, outcome)
        })
        .buffered(16)
        .collect()
        .await;
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for (key, version_id, outcome) in outcomes {
        match outcome {
            Ok(_) if quiet => {}
            Ok(out) => deleted.push(DeletedObject {
                key: Some(key),
                // A delete marker made, or one deleted by its id.
                delete_marker: out.delete_marker,
                delete_marker_version_id: out
                    .delete_marker
                    .and(version_id.is_none().then_some(()))
                    .and(out.version_id.clone()),
                version_id,
            }),
            Err(e) => errors.push(Error {
                code: Some(e.code().as_str().to_owned()),
                key: Some(key),
                message: e.message().map(str::to_owned),
                version_id,
            }),
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: Some(errors),
        ..Default::default()
    }))
}
