//! UploadPartCopy: a part made of the bytes of an existing object (all of them, or the
//! `x-amz-copy-source-range`), streamed from its fragments through the data path into the
//! part's own, never held whole.

use std::ops::Range as ByteRange;

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::{MAX_PART_NUMBER, open_upload, part_record, record_part};
use crate::s3::S3State;
use crate::s3::objects::{
    ChecksumPlan, ReadConditions, Stored, copy_source, etag_value, last_modified, open_body,
    output_checksums, store_body,
};
use crate::s3::versions;

/// The most bytes one UploadPartCopy copies (S3's limit on a part).
const MAX_PART_BYTES: u64 = 5 << 30;

/// Reads `x-amz-copy-source-range` (`bytes=first-last`, both offsets given, inclusive)
/// against a source of `size` bytes.
fn copy_source_range(range: Option<&str>, size: u64) -> S3Result<Option<ByteRange<u64>>> {
    let Some(text) = range else { return Ok(None) };
    let malformed = || {
        s3_error!(
            InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy"
        )
    };
    let (first, last) = text
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(malformed)?;
    let first: u64 = first.trim().parse().map_err(|_| malformed())?;
    let last: u64 = last.trim().parse().map_err(|_| malformed())?;
    if first > last {
        return Err(malformed());
    }
    if last >= size {
        return Err(s3_error!(
            InvalidRange,
            "Range specified is not valid for source object of size: {size}"
        ));
    }
    Ok(Some(first..last + 1))
}

/// UploadPartCopy: bytes of an object (all, or `x-amz-copy-source-range`), readable under the
/// copy-source conditions, streamed through the data path into a new part.
pub async fn upload_part_copy(
    state: &S3State,
    account: &str,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let input = req.input;
    if !(1..=MAX_PART_NUMBER).contains(&input.part_number) {
        return Err(s3_error!(
            InvalidArgument,
            "part numbers run from 1 to {MAX_PART_NUMBER}"
        ));
    }
    let (src_bucket, src_key, src_version) = copy_source(&input.copy_source)?;
    let (bucket, upload) =
        open_upload(state, account, &input.bucket, &input.key, &input.upload_id).await?;
    let conditions = ReadConditions {
        if_match: input.copy_source_if_match.as_ref(),
        if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
        if_none_match: input.copy_source_if_none_match.as_ref(),
        if_modified_since: input.copy_source_if_modified_since.as_ref(),
    };
    let source = versions::read(
        state,
        account,
        &src_bucket,
        &src_key,
        src_version.as_deref(),
        &conditions,
    )
    .await
    .map(|(entry, _)| entry)
    // A source that is not modified answers 412 to a copy, not 304.
    .map_err(|e| {
        if e.code().as_str() == "NotModified" {
            s3_error!(PreconditionFailed)
        } else {
            e
        }
    })?;
    let range = copy_source_range(input.copy_source_range.as_deref(), source.size)?;
    let wanted = range.clone().unwrap_or(0..source.size);
    let bytes = wanted.end - wanted.start;
    if bytes > MAX_PART_BYTES {
        return Err(s3_error!(
            InvalidRequest,
            "The specified copy source is larger than the maximum allowable size for a copy source: {MAX_PART_BYTES}"
        ));
    }
    let body = open_body(state, account, &src_bucket, &src_key, &source, range).await?;
    let version = state.data.clock.next();
    // A part of an upload with a checksum algorithm gets its checksum computed.
    let mut headers = hyper::HeaderMap::new();
    if let Some(algorithm) = super::checksums::of_upload(&upload) {
        headers.insert(
            "x-amz-sdk-checksum-algorithm",
            hyper::header::HeaderValue::from_static(algorithm.s3_name()),
        );
    }
    let plan = ChecksumPlan::of(&headers, None)?;
    let Stored { digests, data } = store_body(
        state,
        account,
        &input.bucket,
        &input.key,
        &upload.policy,
        version,
        Some(StreamingBlob::wrap(body)),
        bytes,
        None,
        &plan,
        false,
    )
    .await?;
    let record = part_record(version, digests, data, &upload.policy);
    let place = (&bucket, input.bucket.as_str(), input.upload_id.as_str());
    record_part(state, account, place, input.part_number, &record).await?;
    let c = output_checksums(&record.client_checksums);
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            checksum_crc32: c.crc32,
            checksum_crc32c: c.crc32c,
            checksum_crc64nvme: c.crc64nvme,
            checksum_sha1: c.sha1,
            checksum_sha256: c.sha256,
            e_tag: Some(etag_value(&record.etag)),
            last_modified: Some(last_modified(version)),
        }),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_ranges_are_inclusive_and_inside_the_source() {
        assert_eq!(copy_source_range(None, 10).unwrap(), None);
        assert_eq!(
            copy_source_range(Some("bytes=0-9"), 10).unwrap(),
            Some(0..10)
        );
        assert_eq!(
            copy_source_range(Some("bytes=3-3"), 10).unwrap(),
            Some(3..4)
        );
        for malformed in ["bytes=5-2", "bytes=-3", "bytes=4-", "4-5", "bytes=a-b", ""] {
            let e = copy_source_range(Some(malformed), 10).unwrap_err();
            assert_eq!(e.code().as_str(), "InvalidArgument", "{malformed}");
        }
        let e = copy_source_range(Some("bytes=5-10"), 10).unwrap_err();
        assert_eq!(e.code().as_str(), "InvalidRange");
        let e = copy_source_range(Some("bytes=0-0"), 0).unwrap_err();
        assert_eq!(e.code().as_str(), "InvalidRange");
    }
}
