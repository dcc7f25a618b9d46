//! Composite checksums of multipart uploads (S3's `ChecksumType=COMPOSITE`). An upload
//! created with `x-amz-checksum-algorithm` keeps that algorithm in its record (a client
//! checksum with an empty value); every part must then carry a checksum of it, verified and
//! stored with the part; completing computes the algorithm over the parts' checksums,
//! concatenated in part order, and stores it on the object under the name `ALG-N` (N parts),
//! which S3 answers as `base64-N`.

use nimbus_core::checksum::{ChecksumAlgorithm, Checksummer, from_base64};
use nimbus_core::index::IndexEntry;
use s3s::dto::{CompletedPart, CreateMultipartUploadInput};
use s3s::{S3Result, s3_error};

/// The algorithm a CreateMultipartUpload asks for, if any.
///
/// # Errors
/// `InvalidRequest` for an unknown algorithm; `NotImplemented` for `FULL_OBJECT` checksums.
pub(super) fn requested(input: &CreateMultipartUploadInput) -> S3Result<Option<ChecksumAlgorithm>> {
    if let Some(kind) = &input.checksum_type
        && !kind.as_str().eq_ignore_ascii_case("COMPOSITE")
    {
        return Err(s3_error!(
            NotImplemented,
            "only COMPOSITE multipart checksums are supported, not {}",
            kind.as_str()
        ));
    }
    input
        .checksum_algorithm
        .as_ref()
        .map(|a| {
            a.as_str()
                .parse()
                .map_err(|_| s3_error!(InvalidRequest, "unknown checksum algorithm {}", a.as_str()))
        })
        .transpose()
}

/// The upload record's client checksums marking `algorithm`.
pub(super) fn marker(algorithm: Option<ChecksumAlgorithm>) -> Vec<(String, Vec<u8>)> {
    algorithm
        .map(|a| (a.s3_name().to_owned(), Vec::new()))
        .into_iter()
        .collect()
}

/// The algorithm an upload was created with, from its record.
pub(super) fn of_upload(upload: &IndexEntry) -> Option<ChecksumAlgorithm> {
    upload
        .client_checksums
        .iter()
        .find_map(|(name, _)| name.parse().ok())
}

/// The value of `algorithm` a part of a CompleteMultipartUpload names, in base64.
fn asked(algorithm: ChecksumAlgorithm, part: &CompletedPart) -> Option<&String> {
    match algorithm {
        ChecksumAlgorithm::Crc32 => part.checksum_crc32.as_ref(),
        ChecksumAlgorithm::Crc32c => part.checksum_crc32c.as_ref(),
        ChecksumAlgorithm::Crc64Nvme => part.checksum_crc64nvme.as_ref(),
        ChecksumAlgorithm::Sha1 => part.checksum_sha1.as_ref(),
        ChecksumAlgorithm::Sha256 => part.checksum_sha256.as_ref(),
    }
}

/// The composite checksum being computed over the parts of a CompleteMultipartUpload.
pub(super) struct Composite {
    hasher: Checksummer,
    parts: usize,
}

impl Composite {
    pub(super) fn new(algorithm: ChecksumAlgorithm) -> Composite {
        Composite {
            hasher: algorithm.checksummer(),
            parts: 0,
        }
    }

    /// Adds part `number`'s stored checksum, after checking it against the one the request
    /// names for it, if any.
    ///
    /// # Errors
    /// `InvalidPart` when the part has no checksum of the algorithm or the request names
    /// another.
    pub(super) fn add(
        &mut self,
        number: i32,
        stored: &IndexEntry,
        part: &CompletedPart,
    ) -> S3Result<()> {
        let algorithm = self.hasher.algorithm();
        let value = stored
            .client_checksums
            .iter()
            .find(|(name, _)| name.parse::<ChecksumAlgorithm>().ok() == Some(algorithm))
            .map(|(_, v)| v)
            .ok_or_else(|| s3_error!(InvalidPart, "part {number} has no {algorithm} checksum"))?;
        if let Some(sent) = asked(algorithm, part)
            && from_base64(sent).ok().as_ref() != Some(value)
        {
            return Err(s3_error!(
                InvalidPart,
                "part {number}'s {algorithm} checksum does not match"
            ));
        }
        self.hasher.update(value);
        self.parts += 1;
        Ok(())
    }

    /// The object's client checksum: `ALG-N` and the checksum of the parts' checksums.
    pub(super) fn finish(self) -> (String, Vec<u8>) {
        let name = format!("{}-{}", self.hasher.algorithm().s3_name(), self.parts);
        (name, self.hasher.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_core::ids::VersionId;

    fn part_with(algorithm: ChecksumAlgorithm, data: &[u8]) -> (IndexEntry, Vec<u8>) {
        let mut h = algorithm.checksummer();
        h.update(data);
        let value = h.finish();
        let mut entry = IndexEntry::tombstone(VersionId(1), "ec4+2");
        entry.client_checksums = vec![(algorithm.s3_name().to_owned(), value.clone())];
        (entry, value)
    }

    #[test]
    fn the_composite_is_the_checksum_of_the_part_checksums() {
        let a = ChecksumAlgorithm::Crc32;
        let (p1, v1) = part_with(a, b"first part");
        let (p2, v2) = part_with(a, b"second");
        let mut composite = Composite::new(a);
        composite.add(1, &p1, &CompletedPart::default()).unwrap();
        let named = CompletedPart {
            checksum_crc32: Some(nimbus_core::checksum::to_base64(&v2)),
            ..Default::default()
        };
        composite.add(2, &p2, &named).unwrap();
        let (name, value) = composite.finish();
        let mut expected = a.checksummer();
        expected.update(&[v1, v2].concat());
        assert_eq!(name, "CRC32-2");
        assert_eq!(value, expected.finish());

        let mut composite = Composite::new(a);
        let wrong = CompletedPart {
            checksum_crc32: Some("AAAAAA==".to_owned()),
            ..Default::default()
        };
        let e = composite.add(1, &p1, &wrong).unwrap_err();
        assert_eq!(e.code().as_str(), "InvalidPart");
        let (sha, _) = part_with(ChecksumAlgorithm::Sha256, b"x");
        let e = composite
            .add(1, &sha, &CompletedPart::default())
            .unwrap_err();
        assert_eq!(e.code().as_str(), "InvalidPart");
    }
}
