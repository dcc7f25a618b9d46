//! The erasure codec: Reed-Solomon over GF(2^8), `k` data and `m` parity fragments per segment.
//!
//! An object is written in segments of `segment_bytes` (the last may be shorter). A segment of
//! `len` bytes is split into `k` data fragments of [`Codec::segment_fragment_len`]`(len) =
//! ceil(len / k)` bytes each, the last zero-padded, and `m` parity fragments of the same length
//! are computed from them. Fragment `i` of the object, the one a fragment file holds, is the
//! concatenation over the segments, in order, of fragment `i` of each segment; so segment `s`
//! starts at offset `s * segment_fragment_len(segment_bytes)` of every fragment.
//!
//! ```text
//! segment (len bytes):   | d0 | d1 | d2 | d3 |      k = 4, the last padded with zeros
//! its fragments:         | d0 | d1 | d2 | d3 | p0 | p1 |      m = 2, each ceil(len / k) bytes
//! fragment file i:       fragment i of segment 0, of segment 1, …, of the last segment
//! ```
//!
//! The code is systematic: the data fragments are the segment's bytes, so a reader holding the
//! `k` data fragments only concatenates them, and decodes only when one of them is missing.
//! Replication policies need no codec: each of their fragments is the whole object.
//!
//! **Invariant:** pure functions over bytes; no I/O. Fragments come from disks and networks, so
//! nothing here trusts them: a wrong count or length is a [`CodecError`], never a panic.

use std::ops::Range;

use bytes::Bytes;
use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::policy::{PolicyKind, StoragePolicy};

/// The most fragments (data + parity) a segment may have: the order of GF(2^8).
pub const MAX_FRAGMENTS: usize = 256;

/// A Reed-Solomon codec for `k` data and `m` parity fragments per segment.
///
/// Building one computes the encoding matrix; keep it (one per storage policy) and share it:
/// it is `Send + Sync`, and caches the decoding matrices of the erasure patterns it has seen.
#[derive(Clone, Debug)]
pub struct Codec {
    data: usize,
    parity: usize,
    /// `None` when `parity` is 0: the segment is only split, there is nothing to compute.
    rs: Option<ReedSolomon>,
}

impl Codec {
    /// Returns a codec for `data` data fragments and `parity` parity fragments per segment.
    ///
    /// `parity` may be 0 (the segment is only striped; storage policies never ask for that).
    ///
    /// # Errors
    /// [`CodecError::ZeroData`] when `data` is 0; [`CodecError::TooManyFragments`] when `data +
    /// parity` exceeds [`MAX_FRAGMENTS`].
    pub fn new(data: usize, parity: usize) -> Result<Codec, CodecError> {
        if data == 0 {
            return Err(CodecError::ZeroData);
        }
        let total = data.saturating_add(parity);
        if total > MAX_FRAGMENTS {
            return Err(CodecError::TooManyFragments { total });
        }
        let rs = if parity == 0 {
            None
        } else {
            let rs = ReedSolomon::new(data, parity).map_err(|error| CodecError::Refused {
                reason: error.to_string(),
            })?;
            Some(rs)
        };
        Ok(Codec { data, parity, rs })
    }

    /// Returns the codec of an erasure-coded storage policy.
    ///
    /// # Errors
    /// [`CodecError::NotErasureCoded`] for a replication policy, whose fragments are whole
    /// copies of the object.
    pub fn for_policy(policy: &StoragePolicy) -> Result<Codec, CodecError> {
        match policy.kind() {
            PolicyKind::ErasureCoding { data, parity } => {
                Codec::new(usize::from(data), usize::from(parity))
            }
            PolicyKind::Replication { .. } => Err(CodecError::NotErasureCoded {
                policy: policy.name().to_owned(),
            }),
        }
    }

    /// Returns the number of data fragments per segment (`k`).
    #[must_use]
    pub fn data(&self) -> usize {
        self.data
    }

    /// Returns the number of parity fragments per segment (`m`).
    #[must_use]
    pub fn parity(&self) -> usize {
        self.parity
    }

    /// Returns the number of fragments per segment (`k + m`).
    #[must_use]
    pub fn total(&self) -> usize {
        self.data + self.parity
    }

    /// Returns the bytes of each of the `k + m` fragments of a segment of `segment_len` bytes:
    /// `ceil(segment_len / k)`.
    #[must_use]
    pub fn segment_fragment_len(&self, segment_len: usize) -> usize {
        segment_len.div_ceil(self.data)
    }

    /// Returns the bytes of one fragment of a whole object of `object_bytes`, written in
    /// segments of `segment_bytes`: the sum of [`Codec::segment_fragment_len`] over its
    /// segments. An empty object has empty fragments.
    ///
    /// # Errors
    /// [`CodecError::ZeroSegmentBytes`] when `segment_bytes` is 0.
    pub fn fragment_bytes(&self, object_bytes: u64, segment_bytes: u32) -> Result<u64, CodecError> {
        if segment_bytes == 0 {
            return Err(CodecError::ZeroSegmentBytes);
        }
        let segment_bytes = u64::from(segment_bytes);
        let full = object_bytes / segment_bytes;
        let rest = object_bytes % segment_bytes;
        Ok(full * self.fragment_len_u64(segment_bytes) + self.fragment_len_u64(rest))
    }

    /// Returns the segments that hold the bytes `range` of an object of `object_bytes` written
    /// in segments of `segment_bytes`, in order, each with where its fragment lies in every
    /// fragment file and which of its bytes were asked for. A ranged GET reads only these.
    ///
    /// The spans are computed as they are iterated, so a range over a huge object costs no
    /// memory. An empty range yields no span.
    ///
    /// # Errors
    /// [`CodecError::ZeroSegmentBytes`] when `segment_bytes` is 0;
    /// [`CodecError::RangeOutOfBounds`] unless `range.start <= range.end <= object_bytes`.
    pub fn segment_spans(
        &self,
        object_bytes: u64,
        segment_bytes: u32,
        range: Range<u64>,
    ) -> Result<SegmentSpans, CodecError> {
        if segment_bytes == 0 {
            return Err(CodecError::ZeroSegmentBytes);
        }
        if range.start > range.end || range.end > object_bytes {
            return Err(CodecError::RangeOutOfBounds {
                start: range.start,
                end: range.end,
                object_bytes,
            });
        }
        let bytes = u64::from(segment_bytes);
        let (next, end) = if range.is_empty() {
            (0, 0)
        } else {
            (range.start / bytes, (range.end - 1) / bytes + 1)
        };
        Ok(SegmentSpans {
            object_bytes,
            segment_bytes: bytes,
            fragment_stride: self.fragment_len_u64(bytes),
            data: self.data as u64,
            range,
            next,
            end,
        })
    }

    /// Returns the `k + m` fragments of `segment`: the `k` data fragments, then the `m` parity
    /// fragments, each [`Codec::segment_fragment_len`] bytes.
    ///
    /// Cost: one allocation of `(k + m) * segment_fragment_len` bytes, one copy of the segment
    /// into it (memcpy speed, a few percent of the encoding time; see `core/README.md`), the
    /// padding and parity zeroed, and parity computed in place. The fragments returned are views
    /// of that one buffer, which lives until the last of them is dropped. When the segment is
    /// already in a [`Bytes`], [`Codec::encode_bytes`] avoids the copy.
    ///
    /// # Errors
    /// [`CodecError::EmptySegment`] for an empty segment.
    pub fn encode(&self, segment: &[u8]) -> Result<Vec<Bytes>, CodecError> {
        if segment.is_empty() {
            return Err(CodecError::EmptySegment);
        }
        let len = self.segment_fragment_len(segment.len());
        let mut buffer = Vec::with_capacity(len * self.total());
        buffer.extend_from_slice(segment);
        buffer.resize(len * self.total(), 0);
        if let Some(rs) = &self.rs {
            let (data, parity) = buffer.split_at_mut(len * self.data);
            let data: Vec<&[u8]> = data.chunks(len).collect();
            let mut parity: Vec<&mut [u8]> = parity.chunks_mut(len).collect();
            rs.encode_sep(&data, &mut parity).map_err(refused)?;
        }
        let buffer = Bytes::from(buffer);
        Ok((0..self.total())
            .map(|i| buffer.slice(i * len..(i + 1) * len))
            .collect())
    }

    /// Returns the `k + m` fragments of `segment`, as [`Codec::encode`] does, without copying
    /// the segment: the data fragments are views of `segment` (but for the last, copied when it
    /// needs padding), and the parity fragments share one new buffer of `m` fragments.
    ///
    /// # Errors
    /// [`CodecError::EmptySegment`] for an empty segment.
    pub fn encode_bytes(&self, segment: Bytes) -> Result<Vec<Bytes>, CodecError> {
        if segment.is_empty() {
            return Err(CodecError::EmptySegment);
        }
        let len = self.segment_fragment_len(segment.len());
        let mut fragments = Vec::with_capacity(self.total());
        for i in 0..self.data {
            let start = (i * len).min(segment.len());
            let end = ((i + 1) * len).min(segment.len());
            if end - start == len {
                fragments.push(segment.slice(start..end));
            } else {
                let mut padded = Vec::with_capacity(len);
                padded.extend_from_slice(&segment[start..end]);
                padded.resize(len, 0);
                fragments.push(Bytes::from(padded));
            }
        }
        if let Some(rs) = &self.rs {
            let mut parity = vec![0; len * self.parity];
            let mut parity_fragments: Vec<&mut [u8]> = parity.chunks_mut(len).collect();
            rs.encode_sep(&fragments, &mut parity_fragments)
                .map_err(refused)?;
            let parity = Bytes::from(parity);
            fragments.extend((0..self.parity).map(|i| parity.slice(i * len..(i + 1) * len)));
        }
        Ok(fragments)
    }

    /// Returns the `segment_len` bytes of a segment from its fragments, `fragments[i]` being
    /// fragment `i` (`None` when missing). Decodes only when a data fragment is missing, and
    /// then fills in the missing data fragments (not the parity ones) in `fragments`; when all
    /// `k` data fragments are present it only concatenates them. Either way the result is one
    /// copy of the segment's bytes.
    ///
    /// # Errors
    /// [`CodecError::EmptySegment`] when `segment_len` is 0, [`CodecError::WrongFragmentCount`]
    /// unless there are `k + m` entries, [`CodecError::FragmentLength`] when a fragment is not
    /// [`Codec::segment_fragment_len`]`(segment_len)` bytes, [`CodecError::TooFewFragments`]
    /// when fewer than `k` are present.
    pub fn reconstruct(
        &self,
        fragments: &mut [Option<Vec<u8>>],
        segment_len: usize,
    ) -> Result<Bytes, CodecError> {
        let len = self.check_fragments(fragments, segment_len)?;
        if fragments[..self.data].iter().any(Option::is_none)
            && let Some(rs) = &self.rs
        {
            rs.reconstruct_data(fragments).map_err(refused)?;
        }
        let mut segment = Vec::with_capacity(segment_len);
        for (index, fragment) in fragments[..self.data].iter().enumerate() {
            let Some(fragment) = fragment else {
                // Unreachable after check_fragments and reconstruct_data; refuse rather than
                // return a short segment.
                return Err(CodecError::Refused {
                    reason: format!("data fragment {index} was not reconstructed"),
                });
            };
            let take = len.min(segment_len - segment.len());
            segment.extend_from_slice(&fragment[..take]);
        }
        Ok(Bytes::from(segment))
    }

    /// Fills in every missing fragment, data and parity, of a segment of `segment_len` bytes:
    /// what the reconstructor does to rebuild a lost fragment file.
    ///
    /// # Errors
    /// As [`Codec::reconstruct`].
    pub fn reconstruct_all(
        &self,
        fragments: &mut [Option<Vec<u8>>],
        segment_len: usize,
    ) -> Result<(), CodecError> {
        self.check_fragments(fragments, segment_len)?;
        if let Some(rs) = &self.rs
            && fragments.iter().any(Option::is_none)
        {
            rs.reconstruct(fragments).map_err(refused)?;
        }
        Ok(())
    }

    /// Checks the shape of a segment's fragments and returns the length each must have.
    fn check_fragments(
        &self,
        fragments: &[Option<Vec<u8>>],
        segment_len: usize,
    ) -> Result<usize, CodecError> {
        if segment_len == 0 {
            return Err(CodecError::EmptySegment);
        }
        if fragments.len() != self.total() {
            return Err(CodecError::WrongFragmentCount {
                expected: self.total(),
                actual: fragments.len(),
            });
        }
        let expected = self.segment_fragment_len(segment_len);
        let mut present = 0;
        for (index, fragment) in fragments.iter().enumerate() {
            if let Some(fragment) = fragment {
                if fragment.len() != expected {
                    return Err(CodecError::FragmentLength {
                        index,
                        expected,
                        actual: fragment.len(),
                    });
                }
                present += 1;
            }
        }
        if present < self.data {
            return Err(CodecError::TooFewFragments {
                present,
                needed: self.data,
            });
        }
        Ok(expected)
    }

    fn fragment_len_u64(&self, segment_bytes: u64) -> u64 {
        segment_bytes.div_ceil(self.data as u64)
    }
}

fn refused(error: reed_solomon_erasure::Error) -> CodecError {
    CodecError::Refused {
        reason: error.to_string(),
    }
}

/// One segment touched by a byte range of an object: see [`Codec::segment_spans`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSpan {
    /// The segment's index in the object, from 0.
    pub segment: u64,
    /// The segment's bytes: `segment_bytes`, or fewer for the last segment.
    pub segment_len: usize,
    /// Where the segment's fragment lies in every fragment file's data: read this from `k`
    /// fragment files to rebuild the segment.
    pub fragment_range: Range<u64>,
    /// The bytes of the decoded segment that the range asked for.
    pub segment_range: Range<usize>,
}

impl SegmentSpan {
    /// Returns where the requested bytes of this segment lie in the object.
    #[must_use]
    pub fn object_range(&self, segment_bytes: u32) -> Range<u64> {
        let start = self.segment * u64::from(segment_bytes);
        start + self.segment_range.start as u64..start + self.segment_range.end as u64
    }
}

/// The segments touched by a byte range, in order: see [`Codec::segment_spans`].
#[derive(Clone, Debug)]
pub struct SegmentSpans {
    object_bytes: u64,
    segment_bytes: u64,
    /// Bytes of a full segment's fragment: where each segment starts in a fragment file.
    fragment_stride: u64,
    data: u64,
    range: Range<u64>,
    next: u64,
    end: u64,
}

impl Iterator for SegmentSpans {
    type Item = SegmentSpan;

    fn next(&mut self) -> Option<SegmentSpan> {
        if self.next >= self.end {
            return None;
        }
        let segment = self.next;
        self.next += 1;
        let start = segment * self.segment_bytes;
        let len = self.segment_bytes.min(self.object_bytes - start);
        let fragment_start = segment * self.fragment_stride;
        // Every value below is at most `segment_bytes`, a u32, so it fits in a usize.
        Some(SegmentSpan {
            segment,
            segment_len: len as usize,
            fragment_range: fragment_start..fragment_start + len.div_ceil(self.data),
            segment_range: (self.range.start.max(start) - start) as usize
                ..(self.range.end.min(start + len) - start) as usize,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.end - self.next).ok();
        (left.unwrap_or(usize::MAX), left)
    }
}

/// Why the codec refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A codec needs at least one data fragment.
    #[error("an erasure code needs at least one data fragment")]
    ZeroData,
    /// More fragments per segment than GF(2^8) allows.
    #[error("an erasure code may have at most {MAX_FRAGMENTS} fragments per segment, not {total}")]
    TooManyFragments {
        /// Data + parity fragments asked for.
        total: usize,
    },
    /// A codec was asked for a replication policy.
    #[error("storage policy {policy:?} replicates whole objects; it has no erasure codec")]
    NotErasureCoded {
        /// The policy's name.
        policy: String,
    },
    /// A segment of 0 bytes: segments are at least one byte.
    #[error("a segment is at least one byte")]
    EmptySegment,
    /// A segment size of 0 bytes.
    #[error("segment size 0 is not allowed")]
    ZeroSegmentBytes,
    /// A byte range that is reversed or reaches past the object's end.
    #[error("byte range {start}..{end} is not within the object's {object_bytes} bytes")]
    RangeOutOfBounds {
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// The object's size.
        object_bytes: u64,
    },
    /// Not one entry (present or missing) per fragment.
    #[error("expected {expected} fragment entries (k + m), got {actual}")]
    WrongFragmentCount {
        /// `k + m`.
        expected: usize,
        /// Entries given.
        actual: usize,
    },
    /// A fragment whose length is not the segment's fragment length: truncated or corrupt.
    #[error("fragment {index} is {actual} bytes; this segment's fragments are {expected} bytes")]
    FragmentLength {
        /// The fragment's index.
        index: usize,
        /// [`Codec::segment_fragment_len`] of the segment.
        expected: usize,
        /// Its length.
        actual: usize,
    },
    /// Fewer than `k` fragments present: the segment cannot be rebuilt (yet; more may answer).
    #[error("{present} fragments present; at least {needed} are needed to rebuild the segment")]
    TooFewFragments {
        /// Fragments present.
        present: usize,
        /// `k`.
        needed: usize,
    },
    /// The Reed-Solomon library refused the input; the checks above should make this
    /// unreachable.
    #[error("reed-solomon refused the fragments: {reason}")]
    Refused {
        /// The library's message.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn encode_splits_pads_and_adds_parity() {
        let codec = Codec::new(4, 2).unwrap();
        let fragments = codec.encode(b"0123456789").unwrap();
        assert_eq!(fragments.len(), 6);
        assert!(fragments.iter().all(|f| f.len() == 3));
        assert_eq!(&fragments[0][..], b"012");
        assert_eq!(&fragments[3][..], b"9\0\0");
        assert_eq!(
            codec
                .encode_bytes(Bytes::from_static(b"0123456789"))
                .unwrap(),
            fragments
        );
    }

    #[test]
    fn reconstruct_rebuilds_lost_data_and_parity() {
        let codec = Codec::new(4, 2).unwrap();
        let segment: Vec<u8> = (0..=250).collect();
        let encoded = codec.encode(&segment).unwrap();
        let mut fragments: Vec<_> = encoded.iter().map(|f| Some(f.to_vec())).collect();
        fragments[1] = None;
        fragments[5] = None;
        assert_eq!(
            codec.reconstruct(&mut fragments, segment.len()).unwrap(),
            segment
        );
        assert_eq!(fragments[1].as_deref(), Some(&encoded[1][..]));
        assert!(
            fragments[5].is_none(),
            "reconstruct fills in data fragments only"
        );
        codec
            .reconstruct_all(&mut fragments, segment.len())
            .unwrap();
        assert_eq!(fragments[5].as_deref(), Some(&encoded[5][..]));
    }

    #[test]
    fn reconstruct_refuses_bad_input() {
        let codec = Codec::new(2, 1).unwrap();
        let mut fragments = vec![Some(vec![1, 2]), None, None];
        assert_eq!(
            codec.reconstruct(&mut fragments, 4),
            Err(CodecError::TooFewFragments {
                present: 1,
                needed: 2
            })
        );
        let mut fragments = vec![Some(vec![1, 2]), Some(vec![3]), None];
        assert_eq!(
            codec.reconstruct(&mut fragments, 4),
            Err(CodecError::FragmentLength {
                index: 1,
                expected: 2,
                actual: 1
            })
        );
        assert!(matches!(
            codec.reconstruct(&mut [Some(vec![1])], 1),
            Err(CodecError::WrongFragmentCount { .. })
        ));
        assert_eq!(codec.reconstruct(&mut [], 0), Err(CodecError::EmptySegment));
    }

    #[test]
    fn refuses_bad_shapes() {
        assert_eq!(Codec::new(0, 2).unwrap_err(), CodecError::ZeroData);
        assert!(Codec::new(200, 57).is_err());
        assert!(Codec::new(200, 56).is_ok());
        let rep = "rep3".parse().unwrap();
        assert!(matches!(
            Codec::for_policy(&rep),
            Err(CodecError::NotErasureCoded { .. })
        ));
        let ec = Codec::for_policy(&"ec4+2".parse().unwrap()).unwrap();
        assert_eq!((ec.data(), ec.parity(), ec.total()), (4, 2, 6));
        assert_eq!(ec.encode(b""), Err(CodecError::EmptySegment));
        assert_eq!(ec.fragment_bytes(1, 0), Err(CodecError::ZeroSegmentBytes));
        assert!(ec.segment_spans(10, 4, 5..11).is_err());
    }

    #[test]
    fn fragment_bytes_sums_segments() {
        let codec = Codec::new(4, 2).unwrap();
        // Two full segments of 1 MiB (256 KiB fragments each) and one of 10 bytes (3).
        let object_bytes = 2 * (1 << 20) + 10;
        assert_eq!(
            codec.fragment_bytes(object_bytes, 1 << 20).unwrap(),
            2 * (1 << 18) + 3
        );
        assert_eq!(codec.fragment_bytes(0, 1 << 20).unwrap(), 0);
    }

    #[test]
    fn segment_spans_map_a_range_across_segments() {
        let codec = Codec::new(4, 2).unwrap();
        // Segments of 100 bytes (fragments of 25); the object is 250 bytes.
        let spans: Vec<_> = codec.segment_spans(250, 100, 90..230).unwrap().collect();
        assert_eq!(
            spans,
            [
                SegmentSpan {
                    segment: 0,
                    segment_len: 100,
                    fragment_range: 0..25,
                    segment_range: 90..100
                },
                SegmentSpan {
                    segment: 1,
                    segment_len: 100,
                    fragment_range: 25..50,
                    segment_range: 0..100
                },
                SegmentSpan {
                    segment: 2,
                    segment_len: 50,
                    fragment_range: 50..63,
                    segment_range: 0..30
                },
            ]
        );
        assert_eq!(spans[2].object_range(100), 200..230);
        assert_eq!(codec.segment_spans(250, 100, 7..7).unwrap().count(), 0);
    }
}
