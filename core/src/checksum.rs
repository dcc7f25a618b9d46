//! The checksums clients send and expect: S3's `x-amz-checksum-*` algorithms (CRC32, CRC32C,
//! CRC64NVME, SHA1, SHA256), computed as the body streams by, and MD5 for ETags and
//! `Content-MD5`.
//!
//! A checksum's value is the bytes S3 defines: a CRC is its integer in big-endian order, a hash
//! its digest. S3 headers carry the value in base64 ([`to_base64`], [`from_base64`]), ETags
//! carry MD5 in lowercase hex.
//!
//! **Invariant:** pure functions over bytes; no I/O.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use md5::Digest as _;

/// A checksum algorithm S3 clients may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChecksumAlgorithm {
    /// CRC-32/ISO-HDLC (zlib's CRC32): 4 bytes.
    Crc32,
    /// CRC-32C (Castagnoli, iSCSI): 4 bytes.
    Crc32c,
    /// CRC-64/NVME: 8 bytes; S3's default for new uploads.
    Crc64Nvme,
    /// SHA-1: 20 bytes.
    Sha1,
    /// SHA-256: 32 bytes.
    Sha256,
}

impl ChecksumAlgorithm {
    /// Every algorithm, in the order S3's documentation lists them.
    pub const ALL: [ChecksumAlgorithm; 5] = [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32c,
        ChecksumAlgorithm::Crc64Nvme,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
    ];

    /// Returns the name S3 uses (`x-amz-checksum-algorithm`, `x-amz-sdk-checksum-algorithm`,
    /// XML bodies): `CRC32`, `CRC32C`, `CRC64NVME`, `SHA1` or `SHA256`.
    #[must_use]
    pub fn s3_name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "CRC32",
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Crc64Nvme => "CRC64NVME",
            ChecksumAlgorithm::Sha1 => "SHA1",
            ChecksumAlgorithm::Sha256 => "SHA256",
        }
    }

    /// Returns the header that carries this checksum, in lowercase (HTTP/2 spells headers so;
    /// compare case-insensitively): `x-amz-checksum-crc32` etc.
    #[must_use]
    pub fn header_name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "x-amz-checksum-crc32",
            ChecksumAlgorithm::Crc32c => "x-amz-checksum-crc32c",
            ChecksumAlgorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            ChecksumAlgorithm::Sha1 => "x-amz-checksum-sha1",
            ChecksumAlgorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// Returns the algorithm whose header is `name`, compared case-insensitively, or `None`
    /// for any other header.
    #[must_use]
    pub fn from_header_name(name: &str) -> Option<ChecksumAlgorithm> {
        ChecksumAlgorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.header_name().eq_ignore_ascii_case(name))
    }

    /// Returns the bytes of a checksum's value: 4, 8, 20 or 32.
    #[must_use]
    pub fn value_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32c => 4,
            ChecksumAlgorithm::Crc64Nvme => 8,
            ChecksumAlgorithm::Sha1 => 20,
            ChecksumAlgorithm::Sha256 => 32,
        }
    }

    /// Returns a new hasher for this algorithm.
    #[must_use]
    pub fn checksummer(self) -> Checksummer {
        Checksummer::new(self)
    }

    /// Returns the value carried by a header in base64, after checking it is as long as this
    /// algorithm's values.
    ///
    /// # Errors
    /// [`ChecksumError::Base64`] when it is not base64; [`ChecksumError::Length`] when it
    /// decodes to the wrong number of bytes.
    pub fn parse_base64(self, value: &str) -> Result<Vec<u8>, ChecksumError> {
        let bytes = from_base64(value)?;
        if bytes.len() != self.value_len() {
            return Err(ChecksumError::Length {
                algorithm: self,
                expected: self.value_len(),
                actual: bytes.len(),
            });
        }
        Ok(bytes)
    }
}

impl fmt::Display for ChecksumAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.s3_name())
    }
}

/// Parses an S3 algorithm name (`CRC32`, `CRC32C`, `CRC64NVME`, `SHA1`, `SHA256`) in any case.
impl FromStr for ChecksumAlgorithm {
    type Err = ChecksumError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        ChecksumAlgorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.s3_name().eq_ignore_ascii_case(name))
            .ok_or_else(|| ChecksumError::UnknownAlgorithm {
                name: name.to_owned(),
            })
    }
}

/// A checksum being computed over a stream: [`Checksummer::update`] with each piece in order,
/// then [`Checksummer::finish`].
#[derive(Clone)]
pub struct Checksummer {
    state: State,
}

#[derive(Clone)]
enum State {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Crc64Nvme(crc_fast::Digest),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Checksummer {
    /// Returns a hasher for `algorithm` that has seen no bytes.
    #[must_use]
    pub fn new(algorithm: ChecksumAlgorithm) -> Checksummer {
        let state = match algorithm {
            ChecksumAlgorithm::Crc32 => State::Crc32(crc32fast::Hasher::new()),
            ChecksumAlgorithm::Crc32c => State::Crc32c(0),
            ChecksumAlgorithm::Crc64Nvme => {
                State::Crc64Nvme(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme))
            }
            ChecksumAlgorithm::Sha1 => State::Sha1(sha1::Sha1::new()),
            ChecksumAlgorithm::Sha256 => State::Sha256(sha2::Sha256::new()),
        };
        Checksummer { state }
    }

    /// Returns the algorithm.
    #[must_use]
    pub fn algorithm(&self) -> ChecksumAlgorithm {
        match self.state {
            State::Crc32(_) => ChecksumAlgorithm::Crc32,
            State::Crc32c(_) => ChecksumAlgorithm::Crc32c,
            State::Crc64Nvme(_) => ChecksumAlgorithm::Crc64Nvme,
            State::Sha1(_) => ChecksumAlgorithm::Sha1,
            State::Sha256(_) => ChecksumAlgorithm::Sha256,
        }
    }

    /// Adds the next bytes of the stream.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.state {
            State::Crc32(hasher) => hasher.update(bytes),
            State::Crc32c(crc) => *crc = crc32c::crc32c_append(*crc, bytes),
            State::Crc64Nvme(digest) => digest.update(bytes),
            State::Sha1(hasher) => hasher.update(bytes),
            State::Sha256(hasher) => hasher.update(bytes),
        }
    }

    /// Returns the checksum of every byte given, as S3 defines its value: a CRC's integer in
    /// big-endian order, or the hash's digest; [`ChecksumAlgorithm::value_len`] bytes.
    #[must_use]
    pub fn finish(self) -> Vec<u8> {
        match self.state {
            State::Crc32(hasher) => hasher.finalize().to_be_bytes().to_vec(),
            State::Crc32c(crc) => crc.to_be_bytes().to_vec(),
            State::Crc64Nvme(digest) => digest.finalize().to_be_bytes().to_vec(),
            State::Sha1(hasher) => hasher.finalize().to_vec(),
            State::Sha256(hasher) => hasher.finalize().to_vec(),
        }
    }

    /// Returns [`Checksummer::finish`] in base64, as S3's headers carry it.
    #[must_use]
    pub fn finish_base64(self) -> String {
        to_base64(&self.finish())
    }
}

impl fmt::Debug for Checksummer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checksummer")
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

/// MD5 over a stream, for ETags (lowercase hex) and `Content-MD5` (base64).
#[derive(Clone, Default)]
pub struct Md5Hasher {
    hasher: md5::Md5,
}

impl Md5Hasher {
    /// Returns a hasher that has seen no bytes.
    #[must_use]
    pub fn new() -> Md5Hasher {
        Md5Hasher::default()
    }

    /// Adds the next bytes of the stream.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    /// Returns the 16-byte digest of every byte given.
    #[must_use]
    pub fn finish(self) -> [u8; 16] {
        self.hasher.finalize().into()
    }

    /// Returns the digest in lowercase hex, as a single-part ETag (without its quotes).
    #[must_use]
    pub fn finish_hex(self) -> String {
        hex::encode(self.finish())
    }
}

impl fmt::Debug for Md5Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Md5Hasher").finish_non_exhaustive()
    }
}

/// Returns `bytes` in standard, padded base64, as S3 checksum headers and `Content-MD5` carry
/// them.
#[must_use]
pub fn to_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Returns the bytes of standard, padded base64 text.
///
/// # Errors
/// [`ChecksumError::Base64`] when `text` is not padded standard base64.
pub fn from_base64(text: &str) -> Result<Vec<u8>, ChecksumError> {
    STANDARD
        .decode(text)
        .map_err(|error| ChecksumError::Base64 {
            reason: error.to_string(),
        })
}

/// Why a checksum name or value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    /// A name that is none of S3's checksum algorithms.
    #[error(
        "unknown checksum algorithm {name:?}: expected CRC32, CRC32C, CRC64NVME, SHA1 or SHA256"
    )]
    UnknownAlgorithm {
        /// What was given.
        name: String,
    },
    /// A value that is not base64.
    #[error("checksum value is not base64: {reason}")]
    Base64 {
        /// The decoder's message.
        reason: String,
    },
    /// A value of the wrong length for its algorithm.
    #[error("a {algorithm} checksum is {expected} bytes, not {actual}")]
    Length {
        /// The algorithm.
        algorithm: ChecksumAlgorithm,
        /// [`ChecksumAlgorithm::value_len`].
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const CHECK_INPUT: &[u8] = b"123456789";

    fn checksum(algorithm: ChecksumAlgorithm, pieces: &[&[u8]]) -> Vec<u8> {
        let mut checksummer = algorithm.checksummer();
        for piece in pieces {
            checksummer.update(piece);
        }
        checksummer.finish()
    }

    #[test]
    fn crcs_match_their_catalogue_check_values() {
        // The "check" values of the CRC catalogue: the CRC of the ASCII bytes "123456789".
        let cases = [
            (ChecksumAlgorithm::Crc32, 0xCBF4_3926_u64),
            (ChecksumAlgorithm::Crc32c, 0xE306_9283),
            (ChecksumAlgorithm::Crc64Nvme, 0xAE8B_1486_0A79_9888),
        ];
        for (algorithm, check) in cases {
            let value = checksum(algorithm, &[CHECK_INPUT]);
            let expected = check.to_be_bytes()[8 - algorithm.value_len()..].to_vec();
            assert_eq!(value, expected, "{algorithm}");
            // Split anywhere, the stream gives the same value.
            for split in 0..=CHECK_INPUT.len() {
                let (a, b) = CHECK_INPUT.split_at(split);
                assert_eq!(
                    checksum(algorithm, &[a, b]),
                    expected,
                    "{algorithm} at {split}"
                );
            }
        }
    }

    #[test]
    fn values_in_base64_are_what_s3_sends() {
        // Header values (big-endian value, standard padded base64) for the body "123456789"
        // and for an empty body, cross-checked with Python's zlib, hashlib and base64.
        let cases = [
            (ChecksumAlgorithm::Crc32, "y/Q5Jg==", "AAAAAA=="),
            (ChecksumAlgorithm::Crc32c, "4waSgw==", "AAAAAA=="),
            (ChecksumAlgorithm::Crc64Nvme, "rosUhgp5mIg=", "AAAAAAAAAAA="),
            (
                ChecksumAlgorithm::Sha1,
                "98O8HYCOBHMq32eZZczDTKeuNEE=",
                "2jmj7l5rSw0yVb/vlWAYkK/YBwk=",
            ),
            (
                ChecksumAlgorithm::Sha256,
                "FeKw08M4keuw8e9gnsQZQgwg4yDOlMZfvIwzEkSOsiU=",
                "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            ),
        ];
        for (algorithm, check, empty) in cases {
            let mut checksummer = Checksummer::new(algorithm);
            checksummer.update(CHECK_INPUT);
            assert_eq!(checksummer.algorithm(), algorithm);
            assert_eq!(checksummer.finish_base64(), check, "{algorithm}");
            assert_eq!(to_base64(&checksum(algorithm, &[])), empty, "{algorithm}");
            assert_eq!(
                algorithm.parse_base64(check).unwrap(),
                checksum(algorithm, &[CHECK_INPUT])
            );
        }
    }

    #[test]
    fn sha_and_md5_match_published_digests() {
        // FIPS 180 and RFC 1321 test vectors.
        assert_eq!(
            hex::encode(checksum(ChecksumAlgorithm::Sha1, &[b"a", b"bc"])),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex::encode(checksum(ChecksumAlgorithm::Sha256, &[b"ab", b"c"])),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            Md5Hasher::new().finish_hex(),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        let mut md5 = Md5Hasher::new();
        md5.update(b"message ");
        md5.update(b"digest");
        assert_eq!(md5.clone().finish_hex(), "f96b697d7cb7938d525a2f31aaf161d0");
        // Content-MD5 is the same digest in base64.
        assert_eq!(to_base64(&md5.finish()), "+WtpfXy3k41SWi8xqvFh0A==");
    }

    #[test]
    fn names_parse_in_any_case() {
        for algorithm in ChecksumAlgorithm::ALL {
            let name = algorithm.s3_name();
            assert_eq!(name.parse::<ChecksumAlgorithm>().unwrap(), algorithm);
            assert_eq!(
                name.to_lowercase().parse::<ChecksumAlgorithm>().unwrap(),
                algorithm
            );
            assert_eq!(algorithm.to_string(), name);
            let header = algorithm.header_name();
            assert_eq!(header, format!("x-amz-checksum-{}", name.to_lowercase()));
            assert_eq!(ChecksumAlgorithm::from_header_name(header), Some(algorithm));
            assert_eq!(
                ChecksumAlgorithm::from_header_name(&header.to_uppercase()),
                Some(algorithm)
            );
        }
        assert!("CRC64".parse::<ChecksumAlgorithm>().is_err());
        assert!("MD5".parse::<ChecksumAlgorithm>().is_err());
        assert_eq!(
            ChecksumAlgorithm::from_header_name("x-amz-checksum-type"),
            None
        );
        assert_eq!(
            ChecksumAlgorithm::from_header_name("x-amz-checksum-algorithm"),
            None
        );
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(matches!(
            from_base64("not base64!"),
            Err(ChecksumError::Base64 { .. })
        ));
        assert_eq!(
            ChecksumAlgorithm::Crc32.parse_base64("rosUhgp5mIg="),
            Err(ChecksumError::Length {
                algorithm: ChecksumAlgorithm::Crc32,
                expected: 4,
                actual: 8
            })
        );
    }
}
