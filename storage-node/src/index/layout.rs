//! The index store's tables, how shard ids, object keys, sequence numbers and entries become
//! their keys and values (the layout is drawn in the parent module's documentation), and
//! opening a database: creating the tables, checking the layout version.
//!
//! **Invariants:** shard prefixes are prefix-free: no shard's prefix is a prefix of another's,
//! so the keys of one shard are exactly the keys that start with its prefix, one contiguous
//! range. Within a shard, entry keys sort as object keys do (by UTF-8 bytes) and sequence keys
//! sort as sequence numbers do (big-endian). Every decoder here refuses bytes it did not write
//! with a [`Corruption`], never a panic.

use std::path::Path;

use nimbus_core::index::{EntryError, IndexEntry, IndexRecord, ShardId};
use redb::{Database, ReadableTable, TableDefinition};

use super::IndexOptions;
use super::error::{Corruption, OpenError, StorageFailure};

/// `shard prefix | object key bytes` → `seq u64 LE | encoded IndexEntry`.
pub(super) const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");

/// `shard prefix | seq u64 BE` → object key bytes.
pub(super) const SEQS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("seqs");

/// `shard prefix` → the shard's last sequence number, `u64 LE`.
pub(super) const SHARDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("shards");

/// `"version"` → the layout version, `u32 LE`; `"wal"` → the write-ahead log's generation,
/// `u64 LE` (see `wal`).
pub(super) const FORMAT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("format");

/// The key of the layout version in [`FORMAT`].
pub(super) const FORMAT_KEY: &[u8] = b"version";

/// The key of the log's generation in [`FORMAT`].
pub(super) const WAL_KEY: &[u8] = b"wal";

/// The layout version this build writes and the newest it reads. Version 2 added the
/// write-ahead log: a database of version 2 may hold less than its log, so a build that does
/// not replay the log must not open it. Version 1 databases are raised to 2 on open.
pub(super) const FORMAT_VERSION: u32 = 2;

const SEQ_BYTES: usize = 8;

/// A digest of a shard's (key, sequence number) pairs in key order, and how many: equal on
/// two replicas that hold the same writes.
pub(super) struct ShardDigest {
    hasher: blake3::Hasher,
    count: u64,
}

impl ShardDigest {
    pub(super) fn new() -> Self {
        ShardDigest {
            hasher: blake3::Hasher::new(),
            count: 0,
        }
    }

    /// Adds the next pair (keys in order).
    pub(super) fn add(&mut self, key: &[u8], seq: u64) {
        self.hasher.update(&(key.len() as u64).to_le_bytes());
        self.hasher.update(key);
        self.hasher.update(&seq.to_le_bytes());
        self.count += 1;
    }

    pub(super) fn finish(&self) -> ([u8; 32], u64) {
        (*self.hasher.finalize().as_bytes(), self.count)
    }
}

/// The bytes every key of one shard starts with:
/// `u16 BE len | account | u16 BE len | container | shard u16 BE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ShardPrefix(Vec<u8>);

impl ShardPrefix {
    /// Returns the prefix of a shard whose names [`ShardId::validate`] accepts.
    pub(super) fn new(shard: &ShardId) -> Result<ShardPrefix, EntryError> {
        shard.validate()?;
        let mut bytes = Vec::with_capacity(6 + shard.account.len() + shard.container.len());
        for name in [&shard.account, &shard.container] {
            let len = u16::try_from(name.len()).expect("validated: names are at most 256 bytes");
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(name.as_bytes());
        }
        bytes.extend_from_slice(&shard.shard.to_be_bytes());
        Ok(ShardPrefix(bytes))
    }

    /// Reads a shard id back from its prefix (a key of [`SHARDS`]).
    pub(super) fn decode(bytes: &[u8]) -> Result<ShardId, Corruption> {
        let mut rest = bytes;
        let mut names = Vec::with_capacity(2);
        for _ in 0..2 {
            let (len, tail) = rest
                .split_first_chunk::<2>()
                .ok_or(Corruption::ForeignKey)?;
            let len = usize::from(u16::from_be_bytes(*len));
            let name = tail.get(..len).ok_or(Corruption::ForeignKey)?;
            names.push(decode_key(name)?);
            rest = &tail[len..];
        }
        let shard: [u8; 2] = rest.try_into().map_err(|_| Corruption::ForeignKey)?;
        let container = names.pop().ok_or(Corruption::ForeignKey)?;
        let account = names.pop().ok_or(Corruption::ForeignKey)?;
        Ok(ShardId {
            account,
            container,
            shard: u16::from_be_bytes(shard),
        })
    }

    /// Returns the prefix itself: the shard's key in [`SHARDS`].
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Returns the key of an object key (or of a key prefix) in [`ENTRIES`].
    pub(super) fn entry_key(&self, key: &str) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.0.len() + key.len());
        bytes.extend_from_slice(&self.0);
        bytes.extend_from_slice(key.as_bytes());
        bytes
    }

    /// Returns the key of a sequence number in [`SEQS`].
    pub(super) fn seq_key(&self, seq: u64) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.0.len() + SEQ_BYTES);
        bytes.extend_from_slice(&self.0);
        bytes.extend_from_slice(&seq.to_be_bytes());
        bytes
    }

    /// Returns the object key of an [`ENTRIES`] key of this shard.
    pub(super) fn object_key(&self, entry_key: &[u8]) -> Result<String, Corruption> {
        let rest = entry_key
            .strip_prefix(self.0.as_slice())
            .ok_or(Corruption::ForeignKey)?;
        decode_key(rest)
    }

    /// Returns the sequence number of a [`SEQS`] key of this shard.
    pub(super) fn seq_of(&self, seq_key: &[u8]) -> Result<u64, Corruption> {
        let rest = seq_key
            .strip_prefix(self.0.as_slice())
            .ok_or(Corruption::ForeignKey)?;
        let bytes: [u8; SEQ_BYTES] = rest
            .try_into()
            .map_err(|_| Corruption::SeqKeyLength { len: rest.len() })?;
        Ok(u64::from_be_bytes(bytes))
    }
}

/// Returns an object key stored as bytes.
pub(super) fn decode_key(bytes: &[u8]) -> Result<String, Corruption> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Corruption::KeyNotUtf8)
}

/// Returns the [`ENTRIES`] value of an entry written with `seq`.
pub(super) fn entry_value(seq: u64, entry: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(SEQ_BYTES + entry.len());
    bytes.extend_from_slice(&seq.to_le_bytes());
    bytes.extend_from_slice(entry);
    bytes
}

/// Splits an [`ENTRIES`] value into its sequence number and encoded entry.
pub(super) fn split_entry_value(value: &[u8]) -> Result<(u64, &[u8]), Corruption> {
    let Some((seq, entry)) = value.split_first_chunk::<SEQ_BYTES>() else {
        return Err(Corruption::ShortEntryValue { len: value.len() });
    };
    Ok((u64::from_le_bytes(*seq), entry))
}

/// Returns the record an [`ENTRIES`] value holds for `key`.
pub(super) fn decode_record(key: String, value: &[u8]) -> Result<IndexRecord, Corruption> {
    let (seq, entry) = split_entry_value(value)?;
    Ok(IndexRecord {
        seq,
        key,
        entry: IndexEntry::decode(entry)?,
    })
}

/// Returns the [`SHARDS`] value for a last sequence number.
pub(super) fn last_seq_value(seq: u64) -> [u8; SEQ_BYTES] {
    seq.to_le_bytes()
}

/// Reads a [`SHARDS`] value.
pub(super) fn decode_last_seq(value: &[u8]) -> Result<u64, Corruption> {
    let bytes: [u8; SEQ_BYTES] = value
        .try_into()
        .map_err(|_| Corruption::LastSeqLength { len: value.len() })?;
    Ok(u64::from_le_bytes(bytes))
}

/// Opens or creates the database, creates its tables and checks its layout version.
pub(super) fn open_database(path: &Path, options: IndexOptions) -> Result<Database, OpenError> {
    let failed = |e: redb::Error| OpenError::Database {
        path: path.to_path_buf(),
        source: StorageFailure::new(e),
    };
    let db = Database::builder()
        .set_cache_size(usize::try_from(options.cache_size_bytes).unwrap_or(usize::MAX))
        .set_check_integrity_on_open(options.check_integrity_on_open)
        .create(path)
        .map_err(|e| failed(e.into()))?;
    let txn = db.begin_write().map_err(|e| failed(e.into()))?;
    {
        let open = |def| txn.open_table(def).map_err(|e| failed(e.into()));
        let mut format = open(FORMAT)?;
        open(ENTRIES)?;
        open(SEQS)?;
        open(SHARDS)?;
        let found = format
            .get(FORMAT_KEY)
            .map_err(|e| failed(e.into()))?
            .map(|v| v.value().to_vec());
        match found {
            None => {
                format
                    .insert(FORMAT_KEY, FORMAT_VERSION.to_le_bytes().as_slice())
                    .map_err(|e| failed(e.into()))?;
            }
            Some(bytes) => {
                let bytes: [u8; 4] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| OpenError::CorruptFormat {
                            path: path.to_path_buf(),
                        })?;
                let version = u32::from_le_bytes(bytes);
                if version == 0 {
                    return Err(OpenError::CorruptFormat {
                        path: path.to_path_buf(),
                    });
                }
                if version > FORMAT_VERSION {
                    return Err(OpenError::NewerFormat {
                        path: path.to_path_buf(),
                        version,
                        supported: FORMAT_VERSION,
                    });
                }
                if version < FORMAT_VERSION {
                    format
                        .insert(FORMAT_KEY, FORMAT_VERSION.to_le_bytes().as_slice())
                        .map_err(|e| failed(e.into()))?;
                }
            }
        }
    }
    txn.commit().map_err(|e| failed(e.into()))?;
    Ok(db)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn shard(account: &str, container: &str, shard: u16) -> ShardId {
        ShardId {
            account: account.to_owned(),
            container: container.to_owned(),
            shard,
        }
    }

    fn prefix(account: &str, container: &str, n: u16) -> ShardPrefix {
        ShardPrefix::new(&shard(account, container, n)).unwrap()
    }

    fn shard_id() -> impl Strategy<Value = ShardId> {
        ("[ab]{1,3}", "[ab]{1,3}", 0u16..3).prop_map(|(a, c, s)| shard(&a, &c, s))
    }

    proptest! {
        #[test]
        fn no_shard_prefix_is_a_prefix_of_another_shards(a in shard_id(), b in shard_id()) {
            prop_assume!(a != b);
            let (pa, pb) = (ShardPrefix::new(&a).unwrap(), ShardPrefix::new(&b).unwrap());
            prop_assert!(!pb.as_bytes().starts_with(pa.as_bytes()));
            prop_assert!(!pa.as_bytes().starts_with(pb.as_bytes()));
        }

        #[test]
        fn entry_keys_of_a_shard_sort_as_object_keys_do(x in "\\PC{0,8}", y in "\\PC{0,8}") {
            let p = prefix("acct", "c", 1);
            prop_assert_eq!(p.entry_key(&x).cmp(&p.entry_key(&y)), x.as_bytes().cmp(y.as_bytes()));
            prop_assert_eq!(p.object_key(&p.entry_key(&x)).unwrap(), x);
        }

        #[test]
        fn a_shard_id_decodes_back_from_its_prefix(a in shard_id()) {
            prop_assert_eq!(ShardPrefix::decode(ShardPrefix::new(&a).unwrap().as_bytes()).unwrap(), a);
        }

        #[test]
        fn decoding_any_bytes_as_a_prefix_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = ShardPrefix::decode(&bytes);
        }

        #[test]
        fn seq_keys_of_a_shard_sort_as_numbers_do(x: u64, y: u64) {
            let p = prefix("acct", "c", 1);
            prop_assert_eq!(p.seq_key(x).cmp(&p.seq_key(y)), x.cmp(&y));
            prop_assert_eq!(p.seq_of(&p.seq_key(x)).unwrap(), x);
        }
    }

    #[test]
    fn similar_containers_and_shards_have_distinct_prefixes() {
        let a = prefix("acct", "a", 1);
        let ab = prefix("acct", "ab", 1);
        let a2 = prefix("acct", "a", 2);
        assert!(!ab.entry_key("x").starts_with(a.as_bytes()));
        assert!(!a2.entry_key("x").starts_with(a.as_bytes()));
        assert!(!a.entry_key("bx").starts_with(ab.as_bytes()));
    }

    #[test]
    fn invalid_shard_names_have_no_prefix() {
        assert!(ShardPrefix::new(&shard("", "c", 0)).is_err());
        assert!(ShardPrefix::new(&shard("a", &"c".repeat(300), 0)).is_err());
    }

    #[test]
    fn damaged_values_are_corruption_not_panics() {
        assert_eq!(
            split_entry_value(&[1, 2, 3]),
            Err(Corruption::ShortEntryValue { len: 3 })
        );
        assert_eq!(
            decode_last_seq(&[0; 7]),
            Err(Corruption::LastSeqLength { len: 7 })
        );
        assert!(matches!(
            decode_record("k".to_owned(), &entry_value(1, &[9, 9])),
            Err(Corruption::Entry(_))
        ));
        let p = prefix("acct", "c", 1);
        assert_eq!(
            p.object_key(&prefix("acct", "d", 1).entry_key("k")),
            Err(Corruption::ForeignKey)
        );
        assert_eq!(
            p.object_key(&[p.as_bytes(), &[0xff, 0xfe]].concat()),
            Err(Corruption::KeyNotUtf8)
        );
    }
}
