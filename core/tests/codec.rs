//! Properties of the erasure codec: any `m` lost fragments decode to exactly the segment, bad
//! fragment lengths are refused without a panic, and the size and range arithmetic agrees with
//! the segment-by-segment layout.

#![allow(clippy::unwrap_used)]

use std::ops::Range;

use nimbus_core::codec::{Codec, CodecError};
use proptest::prelude::*;
use proptest::sample::subsequence;

/// A codec shape, a segment, and which fragments (at most `m`) to lose.
fn segment_with_losses() -> impl Strategy<Value = (usize, usize, Vec<u8>, Vec<usize>)> {
    (1usize..=8, 0usize..=4).prop_flat_map(|(k, m)| {
        (
            Just(k),
            Just(m),
            prop::collection::vec(any::<u8>(), 1..2048),
            (0..=m).prop_flat_map(move |lost| subsequence((0..k + m).collect::<Vec<_>>(), lost)),
        )
    })
}

fn present(fragments: &[bytes::Bytes], lost: &[usize]) -> Vec<Option<Vec<u8>>> {
    fragments
        .iter()
        .enumerate()
        .map(|(i, f)| (!lost.contains(&i)).then(|| f.to_vec()))
        .collect()
}

proptest! {
    #[test]
    fn reconstruct_returns_the_segment_with_up_to_m_fragments_lost(
        (k, m, segment, lost) in segment_with_losses()
    ) {
        let codec = Codec::new(k, m).unwrap();
        let fragments = codec.encode(&segment).unwrap();
        prop_assert_eq!(fragments.len(), k + m);
        let len = codec.segment_fragment_len(segment.len());
        prop_assert!(fragments.iter().all(|f| f.len() == len));
        prop_assert_eq!(&codec.encode_bytes(segment.clone().into()).unwrap(), &fragments);

        let mut partial = present(&fragments, &lost);
        prop_assert_eq!(codec.reconstruct(&mut partial, segment.len()).unwrap(), &segment[..]);

        let mut partial = present(&fragments, &lost);
        codec.reconstruct_all(&mut partial, segment.len()).unwrap();
        for (rebuilt, original) in partial.iter().zip(&fragments) {
            prop_assert_eq!(rebuilt.as_deref(), Some(&original[..]));
        }
    }

    #[test]
    fn reconstruct_refuses_more_than_m_lost(
        (k, m, segment, _) in segment_with_losses(),
        extra in 1usize..=3,
    ) {
        let codec = Codec::new(k, m).unwrap();
        let fragments = codec.encode(&segment).unwrap();
        let lost: Vec<usize> = (0..(m + extra).min(k + m)).collect();
        let mut partial = present(&fragments, &lost);
        let refused = codec.reconstruct(&mut partial, segment.len());
        prop_assert_eq!(
            refused,
            Err(CodecError::TooFewFragments { present: k + m - lost.len(), needed: k })
        );
    }

    #[test]
    fn reconstruct_refuses_fragments_of_the_wrong_length(
        (k, m, segment, lost) in segment_with_losses(),
        victim in any::<prop::sample::Index>(),
        grow in any::<bool>(),
    ) {
        let codec = Codec::new(k, m).unwrap();
        let fragments = codec.encode(&segment).unwrap();
        let mut partial = present(&fragments, &lost);
        let kept: Vec<usize> = (0..k + m).filter(|i| !lost.contains(i)).collect();
        let index = kept[victim.index(kept.len())];
        let fragment = partial[index].as_mut().unwrap();
        let expected = fragment.len();
        if grow { fragment.push(0) } else { fragment.pop(); }
        let actual = fragment.len();
        let refused = codec.reconstruct(&mut partial.clone(), segment.len());
        prop_assert_eq!(&refused, &Err(CodecError::FragmentLength { index, expected, actual }));
        prop_assert_eq!(codec.reconstruct_all(&mut partial, segment.len()), refused.map(|_| ()));
    }

    #[test]
    fn reconstruct_refuses_a_segment_length_that_disagrees(
        (k, m, segment, lost) in segment_with_losses(),
        claimed in 1usize..4096,
    ) {
        let codec = Codec::new(k, m).unwrap();
        let fragments = codec.encode(&segment).unwrap();
        let mut partial = present(&fragments, &lost);
        let result = codec.reconstruct(&mut partial, claimed);
        if codec.segment_fragment_len(claimed) == codec.segment_fragment_len(segment.len()) {
            // Same fragment length: only the length of the output differs (the index entry
            // says how long the segment is; checksums say whether it is right).
            let shorter = claimed.min(segment.len());
            let out = result.unwrap();
            prop_assert_eq!(&out[..shorter], &segment[..shorter]);
            prop_assert_eq!(out.len(), claimed);
        } else {
            let is_length_error = matches!(result, Err(CodecError::FragmentLength { .. }));
            prop_assert!(is_length_error);
        }
    }

    #[test]
    fn fragment_bytes_sums_the_segments(
        k in 1usize..=8,
        object_bytes in 0u64..1_000_000,
        segment_bytes in 1u32..100_000,
    ) {
        let codec = Codec::new(k, 2).unwrap();
        let mut sum = 0;
        let mut left = object_bytes;
        while left > 0 {
            let len = left.min(u64::from(segment_bytes));
            sum += codec.segment_fragment_len(usize::try_from(len).unwrap()) as u64;
            left -= len;
        }
        prop_assert_eq!(codec.fragment_bytes(object_bytes, segment_bytes).unwrap(), sum);
    }

    #[test]
    fn segment_spans_cover_exactly_the_range(
        k in 1usize..=8,
        object_bytes in 1u64..200_000,
        segment_bytes in 1u32..20_000,
        a in any::<prop::sample::Index>(),
        b in any::<prop::sample::Index>(),
    ) {
        let codec = Codec::new(k, 1).unwrap();
        let ends = object_bytes as usize + 1;
        let (x, y) = (a.index(ends) as u64, b.index(ends) as u64);
        let range = x.min(y)..x.max(y);
        let spans: Vec<_> =
            codec.segment_spans(object_bytes, segment_bytes, range.clone()).unwrap().collect();

        // Contiguous, non-empty pieces, in order, exactly covering the range.
        let mut next = range.start;
        let stride = codec.segment_fragment_len(segment_bytes as usize) as u64;
        for span in &spans {
            let object_range = span.object_range(segment_bytes);
            prop_assert_eq!(object_range.start, next);
            prop_assert!(!span.segment_range.is_empty());
            prop_assert!(span.segment_range.end <= span.segment_len);
            next = object_range.end;
            // The segment's place in the object and in every fragment file.
            let segment_start = span.segment * u64::from(segment_bytes);
            let expected_len = (object_bytes - segment_start).min(u64::from(segment_bytes));
            prop_assert_eq!(span.segment_len as u64, expected_len);
            prop_assert_eq!(span.fragment_range.start, span.segment * stride);
            prop_assert_eq!(
                span.fragment_range.end - span.fragment_range.start,
                codec.segment_fragment_len(span.segment_len) as u64
            );
        }
        prop_assert_eq!(next, range.end);
        // The last segment's fragment ends where the fragment file does.
        if let Some(last) = spans.last() && last.object_range(segment_bytes).end == object_bytes {
            prop_assert_eq!(
                last.fragment_range.end,
                codec.fragment_bytes(object_bytes, segment_bytes).unwrap()
            );
        }
    }
}

#[test]
fn segment_spans_refuse_ranges_past_the_end() {
    let codec = Codec::new(4, 2).unwrap();
    assert_eq!(
        codec.segment_spans(10, 4, 3..11).unwrap_err(),
        CodecError::RangeOutOfBounds {
            start: 3,
            end: 11,
            object_bytes: 10
        }
    );
    assert!(
        codec
            .segment_spans(10, 4, Range { start: 6, end: 5 })
            .is_err()
    );
    assert_eq!(codec.segment_spans(0, 4, 0..0).unwrap().count(), 0);
}
