//! Index entries: what the index of a container knows about one object key, and the binary
//! encoding entries are stored and shipped in.
//!
//! An [`IndexEntry`] is the source of truth for which version of an object is current: its
//! size, hashes, metadata, storage policy, and where its bytes are ([`EntryData`]): nowhere (a
//! tombstone), inside the entry (a small object), or in fragment files named by its version.
//! An [`IndexRecord`] is an entry as an index shard stores it, with the shard sequence number
//! that wrote it; a [`ShardId`] names the shard.
//!
//! # Encoding (format version 1)
//!
//! All integers little-endian; `str` is a `u16` byte length and UTF-8 bytes
//! ([`Writer::put_str`]).
//!
//! ```text
//! field              encoding
//! format version     u8 (1)
//! version            u64
//! size               u64
//! etag               str
//! blake3             32 bytes
//! client checksums   u8 count, then per checksum: str algorithm, u16 length + value bytes
//! content type       str
//! user metadata      u16 count, then per pair: str name, str value
//! policy             str
//! data               u8 kind: 0 tombstone | 1 inline, then u32 length + bytes
//!                                         | 2 fragments, then u32 segment bytes
//! ```
//!
//! **Invariants:** an entry that [`IndexEntry::validate`] accepts always encodes, and decodes
//! back to itself; [`IndexEntry::decode`] accepts exactly what [`IndexEntry::encode`] writes
//! for valid entries (it refuses unknown format versions, unknown data kinds, trailing bytes
//! and entries that break a bound) and never panics, whatever the bytes.

mod records;

pub use records::{MAX_RECORDS_PER_FRAME, decode_records, encode_records};

use crate::encoding::{DecodeError, Reader, Writer};
use crate::ids::VersionId;
use crate::policy;

/// The entry format version this build writes and the only one it reads.
pub const ENTRY_FORMAT_VERSION: u8 = 1;

/// The longest object key, in bytes (S3's and Swift's limit).
pub const MAX_KEY_BYTES: usize = 1024;

/// The longest key the index stores: an object key and what the proxy adds to it to name
/// the record of one of its versions.
pub const MAX_INDEX_KEY_BYTES: usize = MAX_KEY_BYTES + 64;

/// The longest account or container name, in bytes (Swift's container limit; S3 bucket names
/// are shorter).
pub const MAX_NAME_BYTES: usize = 256;

/// The longest ETag, in bytes: an MD5 in hex is 32, a multipart one a few more.
pub const MAX_ETAG_BYTES: usize = 128;

/// The most client checksums one entry carries (one per algorithm a client may send).
pub const MAX_CLIENT_CHECKSUMS: usize = 8;

/// The longest client checksum algorithm name, in bytes.
pub const MAX_CHECKSUM_NAME_BYTES: usize = 32;

/// The longest client checksum value, in bytes (SHA-256 needs 32).
pub const MAX_CHECKSUM_VALUE_BYTES: usize = 64;

/// The longest content type, in bytes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 1024;

/// The most user metadata pairs on one object.
pub const MAX_USER_METADATA_PAIRS: usize = 128;

/// The most user metadata bytes on one object: names and values together (Swift allows 4 KiB,
/// S3 2 KiB).
pub const MAX_USER_METADATA_BYTES: usize = 8192;

/// The most bytes an entry may hold inline. The configured inline threshold (default 4 KiB)
/// may not exceed it: large values slow every read of the index.
pub const MAX_INLINE_BYTES: usize = 1024 * 1024;

const KIND_TOMBSTONE: u8 = 0;
const KIND_INLINE: u8 = 1;
const KIND_FRAGMENTS: u8 = 2;
const KIND_PARTS: u8 = 3;

/// The most parts a multipart object has (S3's limit).
pub const MAX_PARTS: usize = 10_000;

/// One part of an object uploaded in parts: its own fragments, named by the part's version
/// under the object's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The version naming the part's fragments.
    pub version: VersionId,
    /// The part's bytes.
    pub size: u64,
    /// Bytes per segment of the part's fragments; never zero.
    pub segment_bytes: u32,
    /// The blake3 of the part's bytes.
    pub blake3: [u8; 32],
}

/// Where an object version's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryData {
    /// None: the object was deleted. The tombstone keeps the delete's version so that replicas
    /// and listings agree on what came last.
    Tombstone,
    /// In the entry itself: a small object, replicated as the index is.
    Inline(Vec<u8>),
    /// In fragment files named by the entry's version, written in segments of this many bytes
    /// (the last segment may be shorter).
    Fragments {
        /// Bytes per segment, before erasure coding; never zero.
        segment_bytes: u32,
    },
    /// In parts (a multipart upload), in order, each in fragment files of its own version;
    /// their sizes add up to the entry's size.
    Parts(Vec<Part>),
}

/// What the index knows about one object key: its current version and how to read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The version this entry describes (for a tombstone, the delete's version).
    pub version: VersionId,
    /// The object's size in bytes (0 for a tombstone; the inline length for inline data).
    pub size: u64,
    /// The S3/Swift ETag, as returned to clients (at most [`MAX_ETAG_BYTES`]).
    pub etag: String,
    /// The blake3 of the object's bytes, end to end.
    pub blake3: [u8; 32],
    /// The checksums the client sent, by algorithm (e.g. `("crc32c", 4 bytes)`), verified on
    /// upload and returned on request.
    pub client_checksums: Vec<(String, Vec<u8>)>,
    /// The object's content type.
    pub content_type: String,
    /// User metadata as (name, value) pairs, in the order the client gave them.
    pub user_metadata: Vec<(String, String)>,
    /// The name of the storage policy the object's fragments were written with.
    pub policy: String,
    /// Where the bytes are.
    pub data: EntryData,
}

/// An index entry as a shard stores it: the object key and the shard sequence number of the
/// write that stored it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexRecord {
    /// The shard sequence number that wrote this entry: unique within the shard, and higher for
    /// every later write to it.
    pub seq: u64,
    /// The object key.
    pub key: String,
    /// The entry.
    pub entry: IndexEntry,
}

/// Names one shard of a container's index.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId {
    /// The account.
    pub account: String,
    /// The container (bucket).
    pub container: String,
    /// The shard: `hash(key) % S` for the container's shard count `S`.
    pub shard: u16,
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}#{}", self.account, self.container, self.shard)
    }
}

impl ShardId {
    /// Checks that the account and container names are 1 to [`MAX_NAME_BYTES`] bytes.
    ///
    /// # Errors
    /// [`EntryError::Empty`] or [`EntryError::FieldTooLong`] naming the field.
    pub fn validate(&self) -> Result<(), EntryError> {
        check_len("account", self.account.len(), 1, MAX_NAME_BYTES)?;
        check_len("container", self.container.len(), 1, MAX_NAME_BYTES)
    }
}

/// Returns the index shard of `key` in a container of `shards` shards: the first 8 bytes of
/// the key's blake3, little-endian, modulo `shards` (0 when `shards` is 0). Every proxy and
/// node computes the same shard for a key; the shard count is fixed when the container is
/// created.
#[must_use]
pub fn shard_of(key: &str, shards: u16) -> u16 {
    if shards == 0 {
        return 0;
    }
    let hash = blake3::hash(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    (u64::from_le_bytes(first) % u64::from(shards)) as u16
}

/// Checks that an object key, as a client names it, is 1 to [`MAX_KEY_BYTES`] bytes.
///
/// # Errors
/// [`EntryError::Empty`] or [`EntryError::FieldTooLong`].
pub fn validate_object_key(key: &str) -> Result<(), EntryError> {
    check_len("key", key.len(), 1, MAX_KEY_BYTES)
}

/// Checks that a key the index stores is 1 to [`MAX_INDEX_KEY_BYTES`] bytes: an object key,
/// or one the proxy derives from it (a version's record).
///
/// # Errors
/// [`EntryError::Empty`] or [`EntryError::FieldTooLong`].
pub fn validate_key(key: &str) -> Result<(), EntryError> {
    check_len("key", key.len(), 1, MAX_INDEX_KEY_BYTES)
}

fn check_len(field: &'static str, len: usize, min: usize, max: usize) -> Result<(), EntryError> {
    if len < min {
        return Err(EntryError::Empty { field });
    }
    if len > max {
        return Err(EntryError::FieldTooLong { field, len, max });
    }
    Ok(())
}

fn check_count(field: &'static str, count: usize, max: usize) -> Result<(), EntryError> {
    if count > max {
        return Err(EntryError::TooMany { field, count, max });
    }
    Ok(())
}

impl EntryData {
    /// Returns whether this is a tombstone.
    #[must_use]
    pub fn is_tombstone(&self) -> bool {
        matches!(self, EntryData::Tombstone)
    }
}

impl IndexEntry {
    /// Returns a tombstone for a delete with this version, under this policy.
    #[must_use]
    pub fn tombstone(version: VersionId, policy: impl Into<String>) -> IndexEntry {
        IndexEntry {
            version,
            size: 0,
            etag: String::new(),
            blake3: [0; 32],
            client_checksums: Vec::new(),
            content_type: String::new(),
            user_metadata: Vec::new(),
            policy: policy.into(),
            data: EntryData::Tombstone,
        }
    }

    /// Returns whether this entry is a tombstone.
    #[must_use]
    pub fn is_tombstone(&self) -> bool {
        self.data.is_tombstone()
    }

    /// Checks every bound of the module's constants, and that the parts agree: a tombstone has
    /// size 0, inline data is `size` bytes long, a segment is at least one byte.
    ///
    /// # Errors
    /// The first [`EntryError`] found.
    pub fn validate(&self) -> Result<(), EntryError> {
        let checksums = self.client_checksums.len();
        check_count("client checksums", checksums, MAX_CLIENT_CHECKSUMS)?;
        let pairs = self.user_metadata.len();
        check_count("user metadata", pairs, MAX_USER_METADATA_PAIRS)?;
        let metadata_bytes = self.user_metadata.iter().map(|(n, v)| n.len() + v.len());
        check_len(
            "user metadata",
            metadata_bytes.sum(),
            0,
            MAX_USER_METADATA_BYTES,
        )?;
        check_len("etag", self.etag.len(), 0, MAX_ETAG_BYTES)?;
        check_len(
            "content type",
            self.content_type.len(),
            0,
            MAX_CONTENT_TYPE_BYTES,
        )?;
        check_len("policy", self.policy.len(), 1, policy::MAX_NAME_BYTES)?;
        for (name, value) in &self.client_checksums {
            let (field, max) = ("client checksum algorithm", MAX_CHECKSUM_NAME_BYTES);
            check_len(field, name.len(), 1, max)?;
            let (field, max) = ("client checksum value", MAX_CHECKSUM_VALUE_BYTES);
            check_len(field, value.len(), 0, max)?;
        }
        for (name, _) in &self.user_metadata {
            check_len("user metadata name", name.len(), 1, MAX_USER_METADATA_BYTES)?;
        }
        match &self.data {
            EntryData::Tombstone if self.size != 0 => {
                Err(EntryError::TombstoneWithSize { size: self.size })
            }
            EntryData::Inline(bytes) => {
                check_len("inline data", bytes.len(), 0, MAX_INLINE_BYTES)?;
                if bytes.len() as u64 != self.size {
                    return Err(EntryError::InlineSizeMismatch {
                        size: self.size,
                        inline_bytes: bytes.len(),
                    });
                }
                Ok(())
            }
            EntryData::Fragments { segment_bytes: 0 } => Err(EntryError::ZeroSegmentBytes),
            EntryData::Parts(parts) => {
                check_count("parts", parts.len(), MAX_PARTS)?;
                if parts.is_empty() {
                    return Err(EntryError::Empty { field: "parts" });
                }
                if parts.iter().any(|p| p.segment_bytes == 0) {
                    return Err(EntryError::ZeroSegmentBytes);
                }
                let total = parts
                    .iter()
                    .try_fold(0u64, |sum, p| sum.checked_add(p.size));
                if total != Some(self.size) {
                    return Err(EntryError::PartsSizeMismatch { size: self.size });
                }
                Ok(())
            }
            EntryData::Tombstone | EntryData::Fragments { .. } => Ok(()),
        }
    }

    /// Returns the entry's encoding (see the module documentation).
    ///
    /// # Panics
    /// If the entry is not valid ([`IndexEntry::validate`]): a length might not fit its
    /// prefix. Callers validate entries where they enter the system.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        assert!(
            self.validate().is_ok(),
            "index entries are validated before they are encoded"
        );
        let inline_len = match &self.data {
            EntryData::Inline(bytes) => bytes.len(),
            _ => 0,
        };
        let mut w = Writer::with_capacity(128 + inline_len);
        w.put_u8(ENTRY_FORMAT_VERSION);
        w.put_u64(self.version.0);
        w.put_u64(self.size);
        w.put_str(&self.etag);
        w.put_bytes(&self.blake3);
        w.put_u8(u8::try_from(self.client_checksums.len()).expect("validated: at most 8"));
        for (name, value) in &self.client_checksums {
            w.put_str(name);
            w.put_u16(u16::try_from(value.len()).expect("validated: at most 64 bytes"));
            w.put_bytes(value);
        }
        w.put_str(&self.content_type);
        w.put_u16(u16::try_from(self.user_metadata.len()).expect("validated: at most 128"));
        for (name, value) in &self.user_metadata {
            w.put_str(name);
            w.put_str(value);
        }
        w.put_str(&self.policy);
        match &self.data {
            EntryData::Tombstone => w.put_u8(KIND_TOMBSTONE),
            EntryData::Inline(bytes) => {
                w.put_u8(KIND_INLINE);
                w.put_u32(u32::try_from(bytes.len()).expect("validated: at most 1 MiB"));
                w.put_bytes(bytes);
            }
            EntryData::Fragments { segment_bytes } => {
                w.put_u8(KIND_FRAGMENTS);
                w.put_u32(*segment_bytes);
            }
            EntryData::Parts(parts) => {
                w.put_u8(KIND_PARTS);
                w.put_u32(u32::try_from(parts.len()).expect("validated: at most 10,000"));
                for p in parts {
                    w.put_u64(p.version.0);
                    w.put_u64(p.size);
                    w.put_u32(p.segment_bytes);
                    w.put_bytes(&p.blake3);
                }
            }
        }
        w.into_inner()
    }

    /// Reads an entry written by [`IndexEntry::encode`], checking every bound.
    ///
    /// # Errors
    /// [`EntryDecodeError`] when the bytes are of another format version, malformed, followed
    /// by trailing bytes, or describe an entry [`IndexEntry::validate`] refuses.
    pub fn decode(bytes: &[u8]) -> Result<IndexEntry, EntryDecodeError> {
        let mut r = Reader::new(bytes);
        let format = r.u8("format version")?;
        if format != ENTRY_FORMAT_VERSION {
            return Err(EntryDecodeError::UnknownFormat { version: format });
        }
        let version = VersionId(r.u64("version")?);
        let size = r.u64("size")?;
        let etag = r.str("etag")?.to_owned();
        let mut blake3 = [0; 32];
        blake3.copy_from_slice(r.bytes(32, "blake3")?);
        let checksum_count = usize::from(r.u8("client checksum count")?);
        check_count("client checksums", checksum_count, MAX_CLIENT_CHECKSUMS)?;
        let mut client_checksums = Vec::with_capacity(checksum_count);
        for _ in 0..checksum_count {
            let name = r.str("client checksum algorithm")?.to_owned();
            let len = usize::from(r.u16("client checksum length")?);
            check_len("client checksum value", len, 0, MAX_CHECKSUM_VALUE_BYTES)?;
            let value = r.bytes(len, "client checksum value")?.to_vec();
            client_checksums.push((name, value));
        }
        let content_type = r.str("content type")?.to_owned();
        let pair_count = usize::from(r.u16("user metadata count")?);
        check_count("user metadata", pair_count, MAX_USER_METADATA_PAIRS)?;
        let mut user_metadata = Vec::with_capacity(pair_count);
        for _ in 0..pair_count {
            let name = r.str("user metadata name")?.to_owned();
            let value = r.str("user metadata value")?.to_owned();
            user_metadata.push((name, value));
        }
        let policy = r.str("policy")?.to_owned();
        let data = match r.u8("data kind")? {
            KIND_TOMBSTONE => EntryData::Tombstone,
            KIND_INLINE => {
                // Checked before reading, so a forged length never sizes an allocation.
                let len = r.u32("inline length")?;
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                check_len("inline data", len, 0, MAX_INLINE_BYTES)?;
                EntryData::Inline(r.bytes(len, "inline data")?.to_vec())
            }
            KIND_FRAGMENTS => EntryData::Fragments {
                segment_bytes: r.u32("segment bytes")?,
            },
            KIND_PARTS => {
                let count = usize::try_from(r.u32("part count")?).unwrap_or(usize::MAX);
                check_count("parts", count, MAX_PARTS)?;
                let mut parts = Vec::with_capacity(count);
                for _ in 0..count {
                    let version = VersionId(r.u64("part version")?);
                    let size = r.u64("part size")?;
                    let segment_bytes = r.u32("part segment bytes")?;
                    let mut blake3 = [0; 32];
                    blake3.copy_from_slice(r.bytes(32, "part blake3")?);
                    parts.push(Part {
                        version,
                        size,
                        segment_bytes,
                        blake3,
                    });
                }
                EntryData::Parts(parts)
            }
            kind => return Err(EntryDecodeError::UnknownDataKind { kind }),
        };
        r.finish()?;
        let entry = IndexEntry {
            version,
            size,
            etag,
            blake3,
            client_checksums,
            content_type,
            user_metadata,
            policy,
            data,
        };
        entry.validate()?;
        Ok(entry)
    }
}

/// Why an index entry, key or shard id breaks a bound or does not hold together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// A field that must not be empty is.
    #[error("{field} must not be empty")]
    Empty {
        /// The field.
        field: &'static str,
    },
    /// A field is longer than its bound.
    #[error("{field} is {len} bytes long; at most {max} are allowed")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A list has more items than its bound.
    #[error("{count} {field} given; at most {max} are allowed")]
    TooMany {
        /// The list.
        field: &'static str,
        /// Its length.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A tombstone claims a size.
    #[error("a tombstone has size 0, not {size}")]
    TombstoneWithSize {
        /// The size given.
        size: u64,
    },
    /// Parts whose sizes do not add up to the entry's size.
    #[error("the entry's size is {size} but its parts add up to another")]
    PartsSizeMismatch {
        /// The entry's size.
        size: u64,
    },
    /// Inline data whose length is not the entry's size.
    #[error("the entry's size is {size} but it holds {inline_bytes} inline bytes")]
    InlineSizeMismatch {
        /// The entry's size.
        size: u64,
        /// The inline data's length.
        inline_bytes: usize,
    },
    /// Fragments written in segments of 0 bytes.
    #[error("segment size 0 is not allowed")]
    ZeroSegmentBytes,
}

/// Why bytes are not an encoded index entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryDecodeError {
    /// The entry was written in a format version this build does not read.
    #[error("index entry format version {version} is not supported; this build reads version 1")]
    UnknownFormat {
        /// The version found.
        version: u8,
    },
    /// The data kind byte names no kind.
    #[error("unknown index entry data kind {kind}")]
    UnknownDataKind {
        /// The byte found.
        kind: u8,
    },
    /// A field could not be read, or bytes were left over.
    #[error("malformed index entry: {0}")]
    Malformed(#[from] DecodeError),
    /// The fields were read but break a bound.
    #[error("invalid index entry: {0}")]
    Invalid(#[from] EntryError),
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn data() -> impl Strategy<Value = EntryData> {
        prop_oneof![
            Just(EntryData::Tombstone),
            prop::collection::vec(any::<u8>(), 0..300).prop_map(EntryData::Inline),
            (1u32..).prop_map(|segment_bytes| EntryData::Fragments { segment_bytes }),
            prop::collection::vec(
                (any::<u64>(), 0u64..1 << 40, 1u32.., any::<[u8; 32]>()),
                1..20
            )
            .prop_map(|parts| EntryData::Parts(
                parts
                    .into_iter()
                    .map(|(version, size, segment_bytes, blake3)| Part {
                        version: VersionId(version),
                        size,
                        segment_bytes,
                        blake3,
                    })
                    .collect()
            )),
        ]
    }

    prop_compose! {
        fn entry()(
            version: u64,
            size: u64,
            etag in "[0-9a-f]{0,40}(-[0-9]{1,3})?",
            blake3: [u8; 32],
            client_checksums in prop::collection::vec(
                ("[a-z0-9]{1,12}", prop::collection::vec(any::<u8>(), 0..=64)),
                0..=MAX_CLIENT_CHECKSUMS,
            ),
            content_type in "\\PC{0,40}",
            user_metadata in prop::collection::vec(("[a-z][a-z0-9-]{0,15}", "\\PC{0,30}"), 0..6),
            policy in "rep3|ec4\\+2|ec[1-9]\\+[1-4]",
            data in data(),
        ) -> IndexEntry {
            let size = match &data {
                EntryData::Tombstone => 0,
                EntryData::Inline(bytes) => bytes.len() as u64,
                EntryData::Fragments { .. } => size,
                EntryData::Parts(parts) => parts.iter().map(|p| p.size).sum(),
            };
            IndexEntry {
                version: VersionId(version),
                size,
                etag,
                blake3,
                client_checksums,
                content_type,
                user_metadata,
                policy,
                data,
            }
        }
    }

    #[test]
    fn parts_must_add_up_to_the_size_and_be_at_least_one() {
        let part = |size| Part {
            version: VersionId(7),
            size,
            segment_bytes: 1 << 20,
            blake3: [1; 32],
        };
        let mut e = IndexEntry::tombstone(VersionId(9), "ec4+2");
        e.data = EntryData::Parts(vec![part(5), part(6)]);
        e.size = 11;
        assert_eq!(e.validate(), Ok(()));
        assert_eq!(IndexEntry::decode(&e.encode()), Ok(e.clone()));
        e.size = 12;
        assert_eq!(
            e.validate(),
            Err(EntryError::PartsSizeMismatch { size: 12 })
        );
        e.size = 0;
        e.data = EntryData::Parts(Vec::new());
        assert_eq!(e.validate(), Err(EntryError::Empty { field: "parts" }));
        // A forged part count beyond the bound is refused before anything is allocated.
        e.data = EntryData::Parts(vec![part(0)]);
        let mut bytes = e.encode();
        let at = bytes.len() - (8 + 8 + 4 + 32) - 4;
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(IndexEntry::decode(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn valid_entries_round_trip(e in entry()) {
            prop_assert_eq!(e.validate(), Ok(()));
            prop_assert_eq!(IndexEntry::decode(&e.encode()), Ok(e));
        }

        #[test]
        fn every_truncation_of_an_encoding_is_refused(e in entry(), cut: prop::sample::Index) {
            let bytes = e.encode();
            let cut = cut.index(bytes.len());
            prop_assert!(IndexEntry::decode(&bytes[..cut]).is_err());
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            mut bytes in prop::collection::vec(any::<u8>(), 0..512),
            known_format: bool,
        ) {
            // Half the inputs get past the format version byte, to reach the other fields.
            if let (true, Some(first)) = (known_format, bytes.first_mut()) {
                *first = ENTRY_FORMAT_VERSION;
            }
            let _ = IndexEntry::decode(&bytes);
        }

        #[test]
        fn decoding_an_encoding_with_one_byte_changed_never_panics(
            e in entry(), at: prop::sample::Index, byte: u8,
        ) {
            let mut bytes = e.encode();
            let at = at.index(bytes.len());
            bytes[at] = byte;
            if let Ok(decoded) = IndexEntry::decode(&bytes) {
                prop_assert_eq!(decoded.validate(), Ok(()));
            }
        }
    }

    fn sample() -> IndexEntry {
        IndexEntry {
            version: VersionId(42),
            size: 5,
            etag: "abc".to_owned(),
            blake3: [9; 32],
            client_checksums: vec![("crc32c".to_owned(), vec![1, 2, 3, 4])],
            content_type: "text/plain".to_owned(),
            user_metadata: vec![("color".to_owned(), "blue".to_owned())],
            policy: "rep3".to_owned(),
            data: EntryData::Inline(b"hello".to_vec()),
        }
    }

    #[test]
    fn an_unknown_format_version_is_refused() {
        let mut bytes = sample().encode();
        bytes[0] = 2;
        assert_eq!(
            IndexEntry::decode(&bytes),
            Err(EntryDecodeError::UnknownFormat { version: 2 })
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = sample().encode();
        bytes.push(0);
        assert_eq!(
            IndexEntry::decode(&bytes),
            Err(EntryDecodeError::Malformed(DecodeError::TrailingBytes {
                count: 1
            }))
        );
    }

    #[test]
    fn an_unknown_data_kind_is_refused() {
        let mut e = sample();
        e.data = EntryData::Tombstone;
        e.size = 0;
        let mut bytes = e.encode();
        let last = bytes.len() - 1;
        bytes[last] = 7;
        assert_eq!(
            IndexEntry::decode(&bytes),
            Err(EntryDecodeError::UnknownDataKind { kind: 7 })
        );
    }

    #[test]
    fn a_forged_inline_length_is_refused_before_allocating() {
        let e = sample();
        let mut bytes = e.encode();
        // The inline length sits 4 + 5 bytes from the end.
        let at = bytes.len() - 9;
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            IndexEntry::decode(&bytes),
            Err(EntryDecodeError::Invalid(EntryError::FieldTooLong {
                field: "inline data",
                ..
            }))
        ));
    }

    #[test]
    fn entries_that_do_not_hold_together_are_invalid() {
        let mut e = sample();
        e.size = 6;
        assert_eq!(
            e.validate(),
            Err(EntryError::InlineSizeMismatch {
                size: 6,
                inline_bytes: 5
            })
        );
        let mut e = IndexEntry::tombstone(VersionId(1), "rep3");
        e.size = 1;
        assert_eq!(e.validate(), Err(EntryError::TombstoneWithSize { size: 1 }));
        let mut e = sample();
        e.data = EntryData::Fragments { segment_bytes: 0 };
        assert_eq!(e.validate(), Err(EntryError::ZeroSegmentBytes));
        let mut e = sample();
        e.policy.clear();
        assert_eq!(e.validate(), Err(EntryError::Empty { field: "policy" }));
        let mut e = sample();
        e.etag = "x".repeat(MAX_ETAG_BYTES + 1);
        assert!(matches!(
            e.validate(),
            Err(EntryError::FieldTooLong { field: "etag", .. })
        ));
    }

    #[test]
    fn keys_and_shard_names_are_bounded() {
        assert_eq!(validate_key(""), Err(EntryError::Empty { field: "key" }));
        assert_eq!(validate_object_key(&"k".repeat(MAX_KEY_BYTES)), Ok(()));
        assert!(validate_object_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert_eq!(validate_key(&"k".repeat(MAX_INDEX_KEY_BYTES)), Ok(()));
        assert!(validate_key(&"k".repeat(MAX_INDEX_KEY_BYTES + 1)).is_err());
        let shard = ShardId {
            account: "acct".to_owned(),
            container: String::new(),
            shard: 3,
        };
        assert_eq!(
            shard.validate(),
            Err(EntryError::Empty { field: "container" })
        );
    }
}
