//! Every write's bytes, drawn from its [`WriteId`]: the checker need keep no byte of them to
//! tell whether a read returned exactly what a write wrote.

use bytes::Bytes;
use rand::{RngCore, SeedableRng};

use crate::history::WriteId;

/// The bytes of write `write`, `size` of them.
#[must_use]
pub fn bytes(write: WriteId, size: u64) -> Bytes {
    let mut out = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)];
    rand::rngs::StdRng::seed_from_u64(write).fill_bytes(&mut out);
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
