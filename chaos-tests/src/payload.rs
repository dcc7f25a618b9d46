//! Every write's bytes, drawn from its [`WriteId`]: the checker need keep no byte of them to
//! tell whether a read returned exactly what a write wrote.

use bytes::Bytes;

use crate::history::WriteId;

/// The bytes of write `write`, `size` of them: SplitMix64's stream from the write id, eight
/// bytes at a time (cheap enough that checking reads never slows the clients).
#[must_use]
pub fn bytes(write: WriteId, size: u64) -> Bytes {
    let len = usize::try_from(size).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(len + 8);
    let mut state = write ^ 0x6a09_e667_f3bc_c908;
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Whether `got` is exactly bytes `range` (all of them when `None`) of write `write`, which
/// wrote `size` bytes. A range past the end is cut at it, as S3 does.
#[must_use]
pub fn matches(write: WriteId, size: u64, range: Option<(u64, u64)>, got: &[u8]) -> bool {
    let (start, end) = range.unwrap_or((0, size));
    let end = end.min(size);
    if start > end || got.len() as u64 != end - start {
        return false;
    }
    let all = bytes(write, end);
    all.get(usize::try_from(start).unwrap_or(usize::MAX)..) == Some(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_matches_itself_whole_and_in_ranges_and_nothing_else() {
        let data = bytes(7, 1000);
        assert_eq!(data, bytes(7, 1000));
        assert!(matches(7, 1000, None, &data));
        assert!(matches(7, 1000, Some((10, 20)), &data[10..20]));
        assert!(matches(7, 1000, Some((990, 2000)), &data[990..]));
        assert!(!matches(8, 1000, None, &data));
        assert!(!matches(7, 1000, None, &data[1..]));
        let mut flipped = data.to_vec();
        flipped[500] ^= 1;
        assert!(!matches(7, 1000, None, &flipped));
        assert!(matches(7, 0, None, &[]));
    }
}
