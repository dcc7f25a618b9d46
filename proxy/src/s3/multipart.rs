//! Multipart uploads. An upload is a record in the bucket's `#uploads` index container
//! (key `object key NUL upload id`, carrying the object's future content type and
//! metadata); each part is stored like an object (its own version's fragments under the
//! object's path) and recorded in the `#parts` container (key `upload id/part number`).
//! Completing writes the object's index entry listing its parts, then retires the upload's
//! records; parts left out are garbage for the collector, as are the parts of an aborted
//! upload. Bucket names cannot contain `#`, so these containers never meet a bucket.

mod checksums;
mod part_copy;

use md5::Digest as _;
use nimbus_core::ids::VersionId;
use nimbus_core::index::{EntryData, IndexEntry, IndexRecord, Part as StoredPart};
use nimbus_ring::map::Bucket;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::S3State;
use super::buckets::owned;
use super::error::to_s3;
use super::objects::{
    ChecksumPlan, Standard, Stored, check_key, content_md5, declared_length, etag_value,
    last_modified, metadata_pairs, output_checksums, store_body,
};
use crate::index::{Condition, IndexClient};

pub use part_copy::upload_part_copy;

/// Every part but the last must have at least this many bytes (S3's rule).
pub const MIN_PART_BYTES: u64 = 5 << 20;
/// Part numbers run from 1 to this.
pub const MAX_PART_NUMBER: i32 = 10_000;
/// The most parts or uploads one listing answers.
const MAX_LISTED: usize = 1000;

pub(crate) fn uploads_container(bucket: &str) -> String {
    format!("{bucket}#uploads")
}

pub(crate) fn parts_container(bucket: &str) -> String {
    format!("{bucket}#parts")
}

fn upload_key(key: &str, upload_id: &str) -> String {
    format!("{key}\0{upload_id}")
}

fn part_key(upload_id: &str, part: i32) -> String {
    format!("{upload_id}/{part:05}")
}

/// Upload ids: the initiation version (so one key's uploads sort by time) and 64 random
/// bits, in hex.
fn new_upload_id(state: &S3State) -> (nimbus_core::ids::VersionId, String) {
    let version = state.data.clock.next();
    let mut random = [0u8; 8];
    // Without randomness the version alone still names the upload uniquely per proxy.
    let _ = getrandom::fill(&mut random);
    (version, format!("{version}{}", hex::encode(random)))
}

fn check_upload_id(upload_id: &str) -> S3Result<()> {
    if upload_id.len() == 32 && upload_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(s3_error!(NoSuchUpload))
    }
}

/// Reads the upload's record, or `NoSuchUpload`.
async fn upload_record(
    state: &S3State,
    account: &str,
    bucket: &Bucket,
    name: &str,
    key: &str,
    upload_id: &str,
) -> S3Result<IndexEntry> {
    check_upload_id(upload_id)?;
    let container = uploads_container(name);
    let ukey = upload_key(key, upload_id);
    let shard = IndexClient::shard_of(account, &container, &ukey, bucket.shards);
    match state.index.read(&shard, &ukey).await.map_err(to_s3)? {
        Some(r) if !r.entry.is_tombstone() => Ok(r.entry),
        _ => Err(s3_error!(NoSuchUpload)),
    }
}

/// The bucket (owned by `account`) and the upload's record, or the S3 error saying which
/// of them is missing.
async fn open_upload(
    state: &S3State,
    account: &str,
    name: &str,
    key: &str,
    upload_id: &str,
) -> S3Result<(Bucket, IndexEntry)> {
    let bucket = owned(state, account, name)?;
    check_key(key)?;
    let upload = upload_record(state, account, &bucket, name, key, upload_id).await?;
    Ok((bucket, upload))
}

pub async fn create(
    state: &S3State,
    account: &str,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let mut input = req.input;
    let bucket = owned(state, account, &input.bucket)?;
    check_key(&input.key)?;
    let algorithm = checksums::requested(&input)?;
    let (version, upload_id) = new_upload_id(state);
    let standard = Standard {
        cache_control: input.cache_control.take(),
        content_disposition: input.content_disposition.take(),
        content_encoding: input.content_encoding.take(),
        content_language: input.content_language.take(),
        expires: input.expires.take(),
    };
    let record = IndexEntry {
        version,
        size: 0,
        etag: String::new(),
        blake3: [0; 32],
        client_checksums: checksums::marker(algorithm),
        content_type: input.content_type.take().unwrap_or_default(),
        // The tags wait in the upload's record with the metadata; Complete applies both.
        user_metadata: metadata_pairs(input.metadata.as_ref(), standard)
            .into_iter()
            .chain(super::tagging::pair_of_header(input.tagging.as_deref())?)
            .collect(),
        policy: bucket.policy.clone(),
        data: EntryData::Inline(Vec::new()),
    };
    record
        .validate()
        .map_err(|e| s3_error!(MetadataTooLarge, "{e}"))?;
    let container = uploads_container(&input.bucket);
    let ukey = upload_key(&input.key, &upload_id);
    let shard = IndexClient::shard_of(account, &container, &ukey, bucket.shards);
    state
        .index
        .write(&shard, &ukey, &record, &Condition::None)
        .await
        .map_err(to_s3)?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(upload_id),
        checksum_algorithm: algorithm.map(|a| ChecksumAlgorithm::from(a.s3_name().to_owned())),
        checksum_type: algorithm.map(|_| ChecksumType::from(ChecksumType::COMPOSITE.to_owned())),
        ..Default::default()
    }))
}

pub async fn upload_part(
    state: &S3State,
    account: &str,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let plan = ChecksumPlan::of(&req.headers, req.trailing_headers.clone())?;
    let mut input = req.input;
    if !(1..=MAX_PART_NUMBER).contains(&input.part_number) {
        return Err(s3_error!(
            InvalidArgument,
            "part numbers run from 1 to {MAX_PART_NUMBER}"
        ));
    }
    let (bucket, upload) =
        open_upload(state, account, &input.bucket, &input.key, &input.upload_id).await?;
    if let Some(algorithm) = checksums::of_upload(&upload)
        && !plan.covers(algorithm)
    {
        return Err(s3_error!(
            InvalidRequest,
            "The upload was created using a {algorithm} checksum. The part upload request must include a checksum of the same algorithm."
        ));
    }
    let declared = declared_length(input.content_length)?;
    let md5 = content_md5(input.content_md5.as_ref())?;
    let version = state.data.clock.next();
    // Parts are always fragments (never inline): the object's entry lists them by version.
    let Stored { digests, data } = store_body(
        state,
        account,
        &input.bucket,
        &input.key,
        &upload.policy,
        version,
        input.body.take(),
        declared,
        md5,
        &plan,
        false,
    )
    .await?;
    let record = part_record(version, digests, data, &upload.policy);
    let place = (&bucket, input.bucket.as_str(), input.upload_id.as_str());
    record_part(state, account, place, input.part_number, &record).await?;
    let etag = record.etag;
    let c = output_checksums(&record.client_checksums);
    Ok(S3Response::new(UploadPartOutput {
        e_tag: Some(etag_value(&etag)),
        checksum_crc32: c.crc32,
        checksum_crc32c: c.crc32c,
        checksum_crc64nvme: c.crc64nvme,
        checksum_sha1: c.sha1,
        checksum_sha256: c.sha256,
        ..Default::default()
    }))
}

/// The record of a part stored as `version`.
fn part_record(
    version: VersionId,
    digests: crate::data::Digests,
    data: EntryData,
    policy: &str,
) -> IndexEntry {
    IndexEntry {
        version,
        size: digests.bytes,
        etag: hex::encode(digests.md5),
        blake3: digests.blake3,
        client_checksums: digests.client_checksums(),
        content_type: String::new(),
        user_metadata: Vec::new(),
        policy: policy.to_owned(),
        data,
    }
}

/// Records part `number` of upload `upload_id` in bucket `name` (replacing an earlier one).
async fn record_part(
    state: &S3State,
    account: &str,
    (bucket, name, upload_id): (&Bucket, &str, &str),
    number: i32,
    record: &IndexEntry,
) -> S3Result<()> {
    let container = parts_container(name);
    let pkey = part_key(upload_id, number);
    let shard = IndexClient::shard_of(account, &container, &pkey, bucket.shards);
    state
        .index
        .write(&shard, &pkey, record, &Condition::None)
        .await
        .map_err(to_s3)?;
    Ok(())
}

/// Every recorded part of an upload, in part order (at most [`MAX_PART_NUMBER`]).
async fn recorded_parts(
    state: &S3State,
    account: &str,
    bucket: &Bucket,
    name: &str,
    upload_id: &str,
    after: Option<i32>,
    limit: usize,
) -> S3Result<Vec<(i32, IndexRecord)>> {
    let container = parts_container(name);
    let prefix = format!("{upload_id}/");
    let start_after = after.map(|n| part_key(upload_id, n));
    let records = state
        .index
        .list(
            account,
            &container,
            bucket.shards,
            &prefix,
            start_after.as_deref(),
            limit,
        )
        .await
        .map_err(to_s3)?;
    Ok(records
        .into_iter()
        .filter_map(|r| {
            let number = r.key.get(prefix.len()..)?.parse().ok()?;
            Some((number, r))
        })
        .collect())
}

/// Aborts the uploads of bucket `name` initiated more than `max_age` ago, as
/// AbortMultipartUpload would; their parts' fragments are then garbage for the storage
/// nodes' collector. Returns how many were aborted.
///
/// # Errors
/// [`DataError`] when the index could not be read or written.
pub(crate) async fn abort_abandoned(
    state: &S3State,
    name: &str,
    bucket: &Bucket,
    max_age: std::time::Duration,
) -> Result<usize, crate::error::DataError> {
    let container = uploads_container(name);
    let account = bucket.owner.as_str();
    let now = super::objects::unix_now().saturating_mul(1_000_000);
    let age = u64::try_from(max_age.as_micros()).unwrap_or(u64::MAX);
    let mut aborted = 0;
    let mut after: Option<String> = None;
    loop {
        let page = state
            .index
            .list(
                account,
                &container,
                bucket.shards,
                "",
                after.as_deref(),
                MAX_LISTED,
            )
            .await?;
        for record in &page {
            let Some((key, upload_id)) = record.key.rsplit_once('\0') else {
                continue;
            };
            let initiated = upload_id
                .get(..16)
                .and_then(|v| u64::from_str_radix(v, 16).ok())
                .map(|v| VersionId(v).micros());
            if initiated.is_none_or(|t| t.saturating_add(age) > now) {
                continue;
            }
            retire(
                state,
                account,
                bucket,
                name,
                key,
                upload_id,
                &record.entry.policy,
            )
            .await
            .map_err(|e| crate::error::DataError::Unavailable(format!("{e:?}")))?;
            tracing::info!(
                bucket = name,
                key,
                upload_id,
                "abandoned multipart upload aborted"
            );
            aborted += 1;
        }
        if page.len() < MAX_LISTED {
            return Ok(aborted);
        }
        after = page.last().map(|r| r.key.clone());
    }
}

/// Retires an upload: its record and its parts' records become tombstones.
async fn retire(
    state: &S3State,
    account: &str,
    bucket: &Bucket,
    name: &str,
    key: &str,
    upload_id: &str,
    policy: &str,
) -> S3Result<()> {
    let parts = recorded_parts(
        state,
        account,
        bucket,
        name,
        upload_id,
        None,
        MAX_PART_NUMBER as usize,
    )
    .await?;
    let pcontainer = parts_container(name);
    for (number, _) in parts {
        let pkey = part_key(upload_id, number);
        let shard = IndexClient::shard_of(account, &pcontainer, &pkey, bucket.shards);
        let tombstone = IndexEntry::tombstone(state.data.clock.next(), policy);
        state
            .index
            .write(&shard, &pkey, &tombstone, &Condition::None)
            .await
            .map_err(to_s3)?;
    }
    let ucontainer = uploads_container(name);
    let ukey = upload_key(key, upload_id);
    let shard = IndexClient::shard_of(account, &ucontainer, &ukey, bucket.shards);
    let tombstone = IndexEntry::tombstone(state.data.clock.next(), policy);
    state
        .index
        .write(&shard, &ukey, &tombstone, &Condition::None)
        .await
        .map_err(to_s3)?;
    Ok(())
}

pub async fn complete(
    state: &S3State,
    account: &str,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let input = req.input;
    let (bucket, upload) =
        open_upload(state, account, &input.bucket, &input.key, &input.upload_id).await?;
    let requested = input
        .multipart_upload
        .as_ref()
        .and_then(|m| m.parts.as_ref())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| s3_error!(MalformedXML, "CompleteMultipartUpload names no parts"))?;
    let recorded = recorded_parts(
        state,
        account,
        &bucket,
        &input.bucket,
        &input.upload_id,
        None,
        MAX_PART_NUMBER as usize,
    )
    .await?;
    let recorded: std::collections::HashMap<i32, IndexEntry> =
        recorded.into_iter().map(|(n, r)| (n, r.entry)).collect();
    let mut previous = 0;
    let mut parts = Vec::with_capacity(requested.len());
    let mut md5s = md5::Md5::new();
    let mut composite = checksums::of_upload(&upload).map(checksums::Composite::new);
    let mut size = 0u64;
    for (i, p) in requested.iter().enumerate() {
        let number = p
            .part_number
            .ok_or_else(|| s3_error!(MalformedXML, "a part without PartNumber"))?;
        if number <= previous {
            return Err(s3_error!(InvalidPartOrder));
        }
        previous = number;
        let entry = recorded
            .get(&number)
            .filter(|e| !e.is_tombstone())
            .ok_or_else(|| s3_error!(InvalidPart, "part {number} was not uploaded"))?;
        let asked = p
            .e_tag
            .as_ref()
            .map(|e| e.value().trim_matches('"').to_owned());
        if asked.as_deref() != Some(entry.etag.as_str()) {
            return Err(s3_error!(
                InvalidPart,
                "part {number}'s ETag does not match"
            ));
        }
        if i + 1 < requested.len() && entry.size < MIN_PART_BYTES {
            return Err(s3_error!(
                EntityTooSmall,
                "part {number} has {} bytes; all but the last need {MIN_PART_BYTES}",
                entry.size
            ));
        }
        if let Some(c) = composite.as_mut() {
            c.add(number, entry, p)?;
        }
        let md5 = hex::decode(&entry.etag).map_err(|_| s3_error!(InternalError))?;
        md5s.update(&md5);
        size += entry.size;
        match &entry.data {
            EntryData::Fragments { segment_bytes } => parts.push(StoredPart {
                version: entry.version,
                size: entry.size,
                segment_bytes: *segment_bytes,
                blake3: entry.blake3,
            }),
            // An empty part holds no bytes: nothing to list.
            EntryData::Inline(bytes) if bytes.is_empty() => {}
            _ => return Err(s3_error!(InternalError)),
        }
    }
    let etag = format!("{}-{}", hex::encode(md5s.finalize()), requested.len());
    let version = state.data.clock.next();
    let data = if parts.is_empty() {
        EntryData::Inline(Vec::new())
    } else {
        EntryData::Parts(parts)
    };
    let entry = IndexEntry {
        version,
        size,
        etag: etag.clone(),
        blake3: [0; 32],
        client_checksums: composite
            .map(checksums::Composite::finish)
            .into_iter()
            .collect(),
        content_type: upload.content_type.clone(),
        user_metadata: upload.user_metadata.clone(),
        policy: upload.policy.clone(),
        data,
    };
    entry
        .validate()
        .map_err(|e| s3_error!(InvalidRequest, "{e}"))?;
    let condition = match (&input.if_none_match, &input.if_match) {
        (Some(c), None) if c.is_any() => Condition::IfNoneMatch,
        (None, Some(c)) => match c.as_etag() {
            Some(e) => Condition::IfMatch(e.value().to_owned()),
            None => Condition::None,
        },
        _ => Condition::None,
    };
    let checksums = entry.client_checksums.clone();
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
    retire(
        state,
        account,
        &bucket,
        &input.bucket,
        &input.key,
        &input.upload_id,
        &upload.policy,
    )
    .await?;
    let c = output_checksums(&checksums);
    let composite = !checksums.is_empty();
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        checksum_crc32: c.crc32,
        checksum_crc32c: c.crc32c,
        checksum_crc64nvme: c.crc64nvme,
        checksum_sha1: c.sha1,
        checksum_sha256: c.sha256,
        checksum_type: composite.then(|| ChecksumType::from(ChecksumType::COMPOSITE.to_owned())),
        bucket: Some(input.bucket.clone()),
        key: Some(input.key.clone()),
        e_tag: Some(etag_value(&etag)),
        location: Some(format!("/{}/{}", input.bucket, input.key)),
        version_id,
        ..Default::default()
    }))
}

pub async fn abort(
    state: &S3State,
    account: &str,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let input = req.input;
    let (bucket, upload) =
        open_upload(state, account, &input.bucket, &input.key, &input.upload_id).await?;
    retire(
        state,
        account,
        &bucket,
        &input.bucket,
        &input.key,
        &input.upload_id,
        &upload.policy,
    )
    .await?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub async fn list_parts(
    state: &S3State,
    account: &str,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let input = req.input;
    let (bucket, _) =
        open_upload(state, account, &input.bucket, &input.key, &input.upload_id).await?;
    let max = input
        .max_parts
        .map_or(MAX_LISTED, |m| (m.max(0) as usize).min(MAX_LISTED));
    let mut parts = recorded_parts(
        state,
        account,
        &bucket,
        &input.bucket,
        &input.upload_id,
        input.part_number_marker,
        max + 1,
    )
    .await?;
    let truncated = parts.len() > max;
    parts.truncate(max);
    let next = parts.last().map(|(n, _)| *n);
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(input.bucket.clone()),
        key: Some(input.key.clone()),
        upload_id: Some(input.upload_id.clone()),
        max_parts: Some(max as i32),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: if truncated { next } else { None },
        is_truncated: Some(truncated),
        parts: Some(
            parts
                .into_iter()
                .map(|(n, r)| {
                    let c = output_checksums(&r.entry.client_checksums);
                    Part {
                        checksum_crc32: c.crc32,
                        checksum_crc32c: c.crc32c,
                        checksum_crc64nvme: c.crc64nvme,
                        checksum_sha1: c.sha1,
                        checksum_sha256: c.sha256,
                        part_number: Some(n),
                        e_tag: Some(etag_value(&r.entry.etag)),
                        size: Some(r.entry.size as i64),
                        last_modified: Some(last_modified(r.entry.version)),
                    }
                })
                .collect(),
        ),
        ..Default::default()
    }))
}

pub async fn list_uploads(
    state: &S3State,
    account: &str,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let input = req.input;
    let bucket = owned(state, account, &input.bucket)?;
    let max = input
        .max_uploads
        .map_or(MAX_LISTED, |m| (m.max(0) as usize).min(MAX_LISTED));
    let prefix = input.prefix.clone().unwrap_or_default();
    let start_after = match (&input.key_marker, &input.upload_id_marker) {
        (Some(k), Some(u)) => Some(upload_key(k, u)),
        // After every upload of the marker key.
        (Some(k), None) => Some(format!("{k}\u{1}")),
        _ => None,
    };
    let container = uploads_container(&input.bucket);
    let mut records = state
        .index
        .list(
            account,
            &container,
            bucket.shards,
            &prefix,
            start_after.as_deref(),
            max + 1,
        )
        .await
        .map_err(to_s3)?;
    let truncated = records.len() > max;
    records.truncate(max);
    let uploads: Vec<MultipartUpload> = records
        .iter()
        .filter_map(|r| {
            let (key, id) = r.key.split_once('\0')?;
            Some(MultipartUpload {
                key: Some(key.to_owned()),
                upload_id: Some(id.to_owned()),
                initiated: Some(last_modified(r.entry.version)),
                ..Default::default()
            })
        })
        .collect();
    let (next_key, next_id) = match (truncated, uploads.last()) {
        (true, Some(u)) => (u.key.clone(), u.upload_id.clone()),
        _ => (None, None),
    };
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(input.bucket.clone()),
        prefix: input.prefix.clone(),
        key_marker: input.key_marker.clone(),
        upload_id_marker: input.upload_id_marker.clone(),
        max_uploads: Some(max as i32),
        is_truncated: Some(truncated),
        next_key_marker: next_key,
        next_upload_id_marker: next_id,
        uploads: Some(uploads),
        ..Default::default()
    }))
}
