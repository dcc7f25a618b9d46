//! Multi-range GETs (RFC 9110 §14, as Swift answers them): `Range: bytes=0-9,20-29,-5` gets a
//! 206 whose body is `multipart/byteranges`, each part with its own `Content-Type` and
//! `Content-Range`. The parts are streamed one after the other, each range opened through the
//! data path only once the previous one has been sent; the object is never held whole.

use std::ops::Range as ByteRange;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use nimbus_core::index::IndexEntry;

use s3s::S3Result;

use super::large::{self, Segment};
use crate::data::BodyStream;
use crate::s3::S3State;
use crate::s3::objects::open_body;

/// Where an object's bytes come from: its entry, or a large object's segments.
#[derive(Debug)]
pub enum Source {
    /// The live entry of `container/key`.
    Entry {
        /// The container.
        container: String,
        /// The key.
        key: String,
        /// The entry.
        entry: Box<IndexEntry>,
    },
    /// The segments of a large object, `size` bytes in all.
    Large {
        /// The segments.
        segments: Vec<Segment>,
        /// Their bytes in all.
        size: u64,
    },
}

impl Source {
    /// Opens bytes `range` of the object (all when `None`).
    ///
    /// # Errors
    /// The bytes (or a large object's first segment) could not be opened.
    pub async fn open(
        &self,
        state: &Arc<S3State>,
        account: &str,
        range: Option<ByteRange<u64>>,
    ) -> S3Result<BodyStream> {
        match self {
            Source::Entry {
                container,
                key,
                entry,
            } => open_body(state, account, container, key, entry, range).await,
            Source::Large { segments, size } => {
                let range = range.unwrap_or(0..*size);
                large::open(Arc::clone(state), account.to_owned(), segments, range).await
            }
        }
    }
}

/// The most ranges one request may ask for; with more, the header is ignored and the whole
/// object is answered (HTTP lets a server ignore `Range`), so a request cannot make the
/// proxy open thousands of reads of one object.
pub const MAX_RANGES: usize = 50;

/// What a `Range` header asks of an object of a given size.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranges {
    /// The whole object: no header, one that does not parse, or too many ranges.
    Whole,
    /// These byte ranges, in the order asked, each within the object and not empty.
    Some(Vec<ByteRange<u64>>),
    /// Ranges that all lie beyond the object (416).
    Unsatisfiable,
}

/// Reads a `Range` header value for an object of `size` bytes. Specs that lie wholly
/// beyond the end are dropped; a spec that does not parse makes the whole header ignored.
#[must_use]
pub fn parse(value: &str, size: u64) -> Ranges {
    let Some(specs) = value.trim().strip_prefix("bytes=") else {
        return Ranges::Whole;
    };
    let specs: Vec<&str> = specs.split(',').map(str::trim).collect();
    if specs.len() > MAX_RANGES {
        return Ranges::Whole;
    }
    let mut ranges = Vec::with_capacity(specs.len());
    for spec in specs {
        let Some((first, last)) = spec.split_once('-') else {
            return Ranges::Whole;
        };
        let number = |s: &str| -> Option<u64> {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        let range = match (first.is_empty(), last.is_empty()) {
            // `-n`: the last n bytes.
            (true, false) => {
                let Some(n) = number(last) else {
                    return Ranges::Whole;
                };
                size.saturating_sub(n)..size
            }
            // `a-`: from a to the end.
            (false, true) => {
                let Some(a) = number(first) else {
                    return Ranges::Whole;
                };
                a..size
            }
            (false, false) => {
                let (Some(a), Some(b)) = (number(first), number(last)) else {
                    return Ranges::Whole;
                };
                if b < a {
                    return Ranges::Whole;
                }
                a..b.saturating_add(1).min(size)
            }
            (true, true) => return Ranges::Whole,
        };
        if range.start < range.end {
            ranges.push(range);
        }
    }
    if ranges.is_empty() {
        Ranges::Unsatisfiable
    } else {
        Ranges::Some(ranges)
    }
}

/// A `multipart/byteranges` body: the boundary, and the header text before each part.
#[derive(Debug)]
pub struct Multipart {
    /// The boundary between parts.
    pub boundary: String,
    /// Each range with the text sent before its bytes.
    parts: Vec<(ByteRange<u64>, Bytes)>,
    /// The text after the last part.
    end: Bytes,
}

impl Multipart {
    /// Lays out the parts of `ranges` of an object of `size` bytes and `content_type`.
    #[must_use]
    pub fn new(ranges: Vec<ByteRange<u64>>, size: u64, content_type: &str) -> Multipart {
        let mut random = [0u8; 16];
        // The boundary only has to be absent from the object's bytes: 128 random bits are.
        let _ = getrandom::fill(&mut random);
        let boundary = hex::encode(random);
        let parts = ranges
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                // As Swift writes it: the boundary line, the part's headers, a blank line;
                // every part but the first begins with the CRLF that ends the previous one.
                let head = format!(
                    "{}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {}-{}/{size}\r\n\r\n",
                    if i == 0 { "" } else { "\r\n" },
                    r.start,
                    r.end - 1,
                );
                (r, Bytes::from(head))
            })
            .collect();
        let end = Bytes::from(format!("\r\n--{boundary}--"));
        Multipart {
            boundary,
            parts,
            end,
        }
    }

    /// The body's length in bytes.
    #[must_use]
    pub fn content_length(&self) -> u64 {
        self.parts
            .iter()
            .map(|(r, head)| head.len() as u64 + (r.end - r.start))
            .sum::<u64>()
            + self.end.len() as u64
    }

    /// The body: each part's header text, then its bytes from the data path, opened in turn.
    /// A range that cannot be opened breaks the body off (the status is already sent).
    pub fn stream(self, state: Arc<S3State>, account: String, source: Source) -> BodyStream {
        let source = Arc::new(source);
        let parts = futures_util::stream::iter(self.parts).then(move |(range, head)| {
            let state = Arc::clone(&state);
            let source = Arc::clone(&source);
            let account = account.clone();
            async move {
                let head = futures_util::stream::once(async move { Ok(head) });
                let bytes: BodyStream = match source.open(&state, &account, Some(range)).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = ?e, "a range of a multi-range GET failed");
                        Box::pin(futures_util::stream::once(async {
                            Err(std::io::Error::other("range read failed"))
                        }))
                    }
                };
                head.chain(bytes)
            }
        });
        let end = self.end;
        Box::pin(
            parts
                .flatten()
                .chain(futures_util::stream::once(async move { Ok(end) })),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // a list of one range is what is meant
    fn range_lists_parse_as_rfc_9110_says() {
        assert_eq!(
            parse("bytes=0-9,20-29,-5", 100),
            Ranges::Some(vec![0..10, 20..30, 95..100])
        );
        assert_eq!(
            parse("bytes=90-,5-5", 100),
            Ranges::Some(vec![90..100, 5..6])
        );
        // Past the end: clamped, or dropped when it starts there.
        assert_eq!(
            parse("bytes=95-200,100-110", 100),
            Ranges::Some(vec![95..100])
        );
        assert_eq!(parse("bytes=100-,200-300", 100), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 100), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=-500", 100), Ranges::Some(vec![0..100]));
        // Bad syntax anywhere: the header is ignored.
        assert_eq!(parse("bytes=5-1,0-1", 100), Ranges::Whole);
        assert_eq!(parse("bytes=a-1", 100), Ranges::Whole);
        assert_eq!(parse("bytes=-", 100), Ranges::Whole);
        assert_eq!(parse("items=0-1", 100), Ranges::Whole);
        assert_eq!(parse("bytes=+1-2", 100), Ranges::Whole);
        let many = format!("bytes={}", vec!["0-0"; MAX_RANGES + 1].join(","));
        assert_eq!(parse(&many, 100), Ranges::Whole);
    }

    #[test]
    fn the_declared_length_is_the_bodys() {
        let m = Multipart::new(vec![0..10, 20..30], 100, "text/plain");
        let mut expected = 0;
        for (i, (r, head)) in m.parts.iter().enumerate() {
            let text = std::str::from_utf8(head).unwrap();
            assert!(text.contains(&format!("--{}\r\n", m.boundary)));
            assert!(text.contains(&format!(
                "Content-Range: bytes {}-{}/100",
                r.start,
                r.end - 1
            )));
            assert_eq!(text.starts_with("\r\n"), i > 0);
            expected += head.len() as u64 + (r.end - r.start);
        }
        expected += m.end.len() as u64;
        assert_eq!(m.content_length(), expected);
        assert!(m.end.ends_with(format!("--{}--", m.boundary).as_bytes()));
    }

    proptest::proptest! {
        #[test]
        fn any_header_parses_without_panic_into_ranges_inside_the_object(
            value in "\\PC{0,60}",
            size in 0u64..1000,
        ) {
            if let Ranges::Some(ranges) = parse(&value, size) {
                for r in ranges {
                    proptest::prop_assert!(r.start < r.end && r.end <= size);
                }
            }
        }
    }
}
