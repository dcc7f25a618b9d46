//! How index records travel between nodes (the internal API's index endpoints): a count,
//! then each record's sequence number, key and entry encoding.
//!
//! ```text
//! u32 count, then per record: u64 seq | u16 key length | key | u32 entry length | entry
//! ```

use super::{EntryDecodeError, IndexEntry, IndexRecord, MAX_INDEX_KEY_BYTES, validate_key};
use crate::encoding::{DecodeError, Reader, Writer};

/// The most records one frame may carry.
pub const MAX_RECORDS_PER_FRAME: usize = 100_000;

/// Encodes records for the wire.
///
/// # Panics
/// If a record's key is longer than [`MAX_INDEX_KEY_BYTES`] or its entry is invalid: stores only
/// hold valid records.
#[must_use]
pub fn encode_records(records: &[IndexRecord]) -> Vec<u8> {
    let mut w = Writer::with_capacity(64 * records.len() + 4);
    w.put_u32(u32::try_from(records.len()).expect("fewer than 2^32 records"));
    for r in records {
        assert!(
            r.key.len() <= MAX_INDEX_KEY_BYTES,
            "key longer than allowed"
        );
        w.put_u64(r.seq);
        w.put_str(&r.key);
        let entry = r.entry.encode();
        w.put_u32(u32::try_from(entry.len()).expect("entries are bounded"));
        w.put_bytes(&entry);
    }
    w.into_inner()
}

/// Decodes records from the wire, validating every key and entry.
///
/// # Errors
/// [`EntryDecodeError`] for anything malformed, out of bounds or left over.
pub fn decode_records(bytes: &[u8]) -> Result<Vec<IndexRecord>, EntryDecodeError> {
    let mut r = Reader::new(bytes);
    let count = r.u32("record count")? as usize;
    if count > MAX_RECORDS_PER_FRAME {
        return Err(DecodeError::Truncated {
            field: "record count beyond the frame limit",
        }
        .into());
    }
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let seq = r.u64("seq")?;
        let key = r.str("key")?.to_owned();
        validate_key(&key)?;
        let len = r.u32("entry length")? as usize;
        let entry = IndexEntry::decode(r.bytes(len, "entry")?)?;
        out.push(IndexRecord { seq, key, entry });
    }
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ids::VersionId;

    #[test]
    fn records_round_trip() {
        let records: Vec<IndexRecord> = (0..5)
            .map(|i| IndexRecord {
                seq: i + 1,
                key: format!("photos/{i}.jpg"),
                entry: IndexEntry::tombstone(VersionId(i), "ec4+2"),
            })
            .collect();
        assert_eq!(decode_records(&encode_records(&records)).unwrap(), records);
        assert!(decode_records(&encode_records(&[])).unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_records(&bytes);
        }
    }
}
