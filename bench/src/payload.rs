//! Object content that depends on the object's key and size only, so a later run (or
//! another client) can check a GET without any shared state. Content is a window into a
//! fixed pseudo-random pool, starting at an offset hashed from key and size; bodies up to
//! the pool's length are zero-copy slices of it.

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};

use crate::workload::{Rng, mix64};

/// The pool's length: not a power of two, so that content does not repeat in step with
/// segment or part boundaries.
const POOL_LEN: usize = (1 << 20) - 3;

/// The pool, twice over, so that any window of up to `POOL_LEN` bytes is contiguous.
fn pool() -> &'static Bytes {
    static POOL: OnceLock<Bytes> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut rng = Rng::new(0x6e69_6d62_7573_2d62); // "nimbus-b"
        let mut once = Vec::with_capacity(POOL_LEN);
        while once.len() < POOL_LEN {
            once.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        once.truncate(POOL_LEN);
        let mut twice = once.clone();
        twice.extend_from_slice(&once);
        Bytes::from(twice)
    })
}

/// Where an object's content starts in the pool.
#[must_use]
pub fn content_seed(key: &str, size: u64) -> u64 {
    // FNV-1a over the key, then mixed with the size.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h ^ mix64(size)) % POOL_LEN as u64
}

/// Returns bytes `offset..offset + len` of the object whose content seed is `seed`.
#[must_use]
pub fn body(seed: u64, offset: u64, len: u64) -> Bytes {
    let pool = pool();
    let start = ((seed + offset) % POOL_LEN as u64) as usize;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len <= POOL_LEN {
        return pool.slice(start..start + len);
    }
    let mut out = BytesMut::with_capacity(len);
    let mut at = start;
    while out.len() < len {
        let take = (len - out.len()).min(POOL_LEN);
        out.extend_from_slice(&pool[at..at + take]);
        at = (at + take) % POOL_LEN;
    }
    out.freeze()
}

/// Bodies at least this long have their SHA-256 kept for the next upload of the same
/// content; shorter ones hash in less time than a lookup takes to matter.
const SHA256_KEPT_FROM: u64 = 64 << 10;
/// At most this many SHA-256 kept; past it they are all dropped and kept again as used (a
/// run's key space is bounded, so this only matters for runs over more keys than this).
const SHA256_KEPT_MAX: usize = 1 << 14;

/// An object's content, to upload: a window of the pool, sent as zero-copy slices of it
/// however long, with its SHA-256 (the SigV4 payload hash) computed once per content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Payload {
    seed: u64,
    len: u64,
}

impl Payload {
    /// The content of object `key` of `size` bytes.
    #[must_use]
    pub fn of(key: &str, size: u64) -> Self {
        Payload {
            seed: content_seed(key, size),
            len: size,
        }
    }

    /// Its bytes in one buffer (a copy when longer than the pool).
    #[must_use]
    pub fn bytes(&self) -> Bytes {
        body(self.seed, 0, self.len)
    }

    /// Its bytes as an HTTP body of pool slices.
    #[must_use]
    pub fn body(&self) -> PayloadBody {
        PayloadBody {
            at: (self.seed % POOL_LEN as u64) as usize,
            left: self.len,
        }
    }

    /// Its SHA-256 in lowercase hex.
    #[must_use]
    pub fn sha256_hex(&self) -> String {
        use sha2::Digest;
        type Kept = std::collections::HashMap<Payload, String>;
        static KEPT: OnceLock<std::sync::Mutex<Kept>> = OnceLock::new();
        let kept = KEPT.get_or_init(Default::default);
        let lock = || {
            kept.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let keep = self.len >= SHA256_KEPT_FROM;
        if keep && let Some(hex) = lock().get(self) {
            return hex.clone();
        }
        let mut sha = sha2::Sha256::new();
        let mut chunks = self.body();
        while let Some(chunk) = chunks.next_chunk() {
            sha.update(&chunk);
        }
        let hex = hex::encode(sha.finalize());
        if keep {
            let mut kept = lock();
            if kept.len() >= SHA256_KEPT_MAX {
                kept.clear();
            }
            kept.insert(*self, hex.clone());
        }
        hex
    }
}

/// A [`Payload`] as an HTTP body: pool slices of up to the pool's length, never copied.
#[derive(Debug)]
pub struct PayloadBody {
    at: usize,
    left: u64,
}

impl PayloadBody {
    /// An empty body.
    #[must_use]
    pub fn empty() -> Self {
        PayloadBody { at: 0, left: 0 }
    }

    /// Bytes not sent yet.
    #[must_use]
    pub fn remaining(&self) -> u64 {
        self.left
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.left == 0 {
            return None;
        }
        let take = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(POOL_LEN);
        let chunk = pool().slice(self.at..self.at + take);
        self.at = (self.at + take) % POOL_LEN;
        self.left -= take as u64;
        Some(chunk)
    }
}

impl hyper::body::Body for PayloadBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.next_chunk().map(|c| Ok(hyper::body::Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}

/// Checks received bytes against the content expected at `offset` of the object whose
/// content seed is `seed`; returns whether they match.
#[must_use]
pub fn matches(seed: u64, offset: u64, chunk: &[u8]) -> bool {
    let pool = pool();
    let mut at = ((seed + offset) % POOL_LEN as u64) as usize;
    let mut rest = chunk;
    while !rest.is_empty() {
        let take = rest.len().min(POOL_LEN);
        if rest[..take] != pool[at..at + take] {
            return false;
        }
        rest = &rest[take..];
        at = (at + take) % POOL_LEN;
    }
    true
}

/// Checks a GET body chunk by chunk as it arrives, without buffering it.
#[derive(Debug, Clone)]
pub struct Verifier {
    seed: u64,
    offset: u64,
    ok: bool,
}

impl Verifier {
    /// Checks the bytes of object `key` (whose whole size is `size`) from `offset` on.
    #[must_use]
    pub fn new(key: &str, size: u64, offset: u64) -> Verifier {
        Verifier {
            seed: content_seed(key, size),
            offset,
            ok: true,
        }
    }

    /// Checks the next chunk.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.ok && !matches(self.seed, self.offset, chunk) {
            self.ok = false;
        }
        self.offset += chunk.len() as u64;
    }

    /// Whether every byte fed so far matched.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.ok
    }
}

/// Reads the object's whole size from a `Content-Range: bytes A-B/SIZE` value.
#[must_use]
pub fn size_from_content_range(value: &str) -> Option<u64> {
    value
        .rsplit_once('/')
        .and_then(|(_, size)| size.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn content_depends_on_key_and_size() {
        assert_eq!(content_seed("a", 10), content_seed("a", 10));
        assert_ne!(content_seed("a", 10), content_seed("b", 10));
        assert_ne!(content_seed("a", 10), content_seed("a", 11));
    }

    #[test]
    fn verifier_checks_chunk_by_chunk() {
        let body = body(content_seed("k", 5000), 100, 4900);
        let mut v = Verifier::new("k", 5000, 100);
        for chunk in body.chunks(333) {
            v.feed(chunk);
        }
        assert!(v.ok());
        let mut wrong = Verifier::new("k", 5000, 101);
        wrong.feed(&body);
        assert!(!wrong.ok());
        assert_eq!(size_from_content_range("bytes 0-99/5000"), Some(5000));
        assert_eq!(size_from_content_range("bytes 0-99/*"), None);
    }

    #[test]
    fn bodies_longer_than_the_pool_wrap_around() {
        let seed = content_seed("big", 3 << 20);
        let whole = body(seed, 0, 3 << 20);
        assert_eq!(whole.len(), 3 << 20);
        assert!(matches(seed, 0, &whole));
        assert_eq!(whole[POOL_LEN..POOL_LEN + 100], whole[..100]);
    }

    #[test]
    fn a_payload_streams_and_hashes_its_content() {
        use sha2::Digest;
        for size in [0, 1, 4096, POOL_LEN as u64, POOL_LEN as u64 + 1, 5 << 20] {
            let p = Payload::of("k", size);
            let whole = p.bytes();
            assert_eq!(whole.len() as u64, size);
            assert!(matches(content_seed("k", size), 0, &whole));
            let mut body = p.body();
            assert_eq!(body.remaining(), size);
            let mut streamed = Vec::new();
            while let Some(chunk) = body.next_chunk() {
                assert!(!chunk.is_empty() && chunk.len() <= POOL_LEN);
                streamed.extend_from_slice(&chunk);
            }
            assert_eq!(streamed, whole, "{size} bytes");
            let expected = hex::encode(sha2::Sha256::digest(&whole));
            assert_eq!(p.sha256_hex(), expected, "{size} bytes");
            assert_eq!(p.sha256_hex(), expected, "{size} bytes, kept");
        }
    }

    proptest! {
        #[test]
        fn any_window_matches_the_whole(seed in 0u64..POOL_LEN as u64, offset in 0u64..4 << 20, len in 0u64..1 << 16) {
            let part = body(seed, offset, len);
            let whole = body(seed, 0, offset + len);
            prop_assert_eq!(&part[..], &whole[offset as usize..]);
            prop_assert!(matches(seed, offset, &part));
        }

        #[test]
        fn a_flipped_byte_is_caught(seed in 0u64..POOL_LEN as u64, len in 1u64..1 << 12, at: prop::sample::Index) {
            let mut bytes = body(seed, 0, len).to_vec();
            let i = at.index(bytes.len());
            bytes[i] ^= 1;
            prop_assert!(!matches(seed, 0, &bytes));
        }
    }
}
