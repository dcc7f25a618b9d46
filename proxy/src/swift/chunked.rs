//! Swift PUTs of unknown length (`Transfer-Encoding: chunked`, no `Content-Length`).
//!
//! The data path writes fragments of a length known up front, so the body is cut into
//! pieces of [`PIECE_SEGMENTS`] segments, each held in memory while it is stored (never more
//! than one piece per request). A body that ends within `inline_max` is stored inline; one
//! that ends within the first piece becomes an ordinary fragments entry; a longer one becomes
//! an entry in parts, exactly as an S3 multipart upload (each piece its own part, read back
//! by the same code). The ETag is the MD5 of the whole body, as for any Swift PUT.

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use md5::{Digest, Md5};
use nimbus_core::ids::VersionId;
use nimbus_core::index::{EntryData, MAX_PARTS, Part};
use s3s::S3Error;
use s3s::dto::StreamingBlob;

use crate::data::Digests;
use crate::s3::S3State;
use crate::s3::objects::{ChecksumPlan, Stored, store_body};

/// Segments per piece of a chunked body: the most bytes of one request held in memory.
pub const PIECE_SEGMENTS: u64 = 4;

/// The largest object a chunked PUT stores: Swift's default `max_file_size` (5 GiB + 2).
pub const MAX_OBJECT_BYTES: u64 = 5 * 1024 * 1024 * 1024 + 2;

/// Why a chunked PUT stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum ChunkedError {
    /// The body grew past [`MAX_OBJECT_BYTES`] (413).
    #[error("the body is longer than {MAX_OBJECT_BYTES} bytes")]
    TooLarge,
    /// The body's MD5 is not the `ETag` the client sent (422).
    #[error("the body does not match its ETag")]
    BadEtag,
    /// The client's body stream failed (400: it is the client's connection that broke).
    #[error("reading the request body: {0}")]
    Body(String),
    /// The data path or the index failed.
    #[error("storing a piece: {0:?}")]
    Store(S3Error),
}

/// A chunked body being read: the bytes read but not yet stored, and the digest so far.
struct Reader<S> {
    stream: S,
    pending: BytesMut,
    md5: Md5,
    bytes: u64,
    ended: bool,
}

impl<S, E> Reader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    /// Reads until more than `limit` bytes are pending or the body ended.
    async fn fill(&mut self, limit: u64) -> Result<(), ChunkedError> {
        while !self.ended && self.pending.len() as u64 <= limit {
            match self.stream.next().await {
                None => self.ended = true,
                Some(Err(e)) => return Err(ChunkedError::Body(e.to_string())),
                Some(Ok(chunk)) => {
                    self.bytes += chunk.len() as u64;
                    if self.bytes > MAX_OBJECT_BYTES {
                        return Err(ChunkedError::TooLarge);
                    }
                    self.md5.update(&chunk);
                    self.pending.extend_from_slice(&chunk);
                }
            }
        }
        Ok(())
    }

    /// The body's MD5, checked against the client's `ETag`; only once the body ended.
    fn md5(&self, expected: Option<[u8; 16]>) -> Result<[u8; 16], ChunkedError> {
        let md5: [u8; 16] = self.md5.clone().finalize().into();
        match expected {
            Some(e) if e != md5 => Err(ChunkedError::BadEtag),
            _ => Ok(md5),
        }
    }
}

/// Stores a body of unknown length as `account/container/key` with `policy`; returns the
/// entry's version and what was stored. `expected_md5` is the client's `ETag`, checked before
/// the last piece is committed (earlier pieces of a refused body are left to garbage
/// collection, as an aborted multipart upload's parts are).
///
/// # Errors
/// [`ChunkedError`].
pub async fn store_unsized<S, E>(
    state: &S3State,
    (account, container, key): (&str, &str, &str),
    policy: &str,
    stream: S,
    expected_md5: Option<[u8; 16]>,
) -> Result<(VersionId, Stored), ChunkedError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut reader = Reader {
        stream,
        pending: BytesMut::new(),
        md5: Md5::new(),
        bytes: 0,
        ended: false,
    };
    let none = ChecksumPlan::of(&hyper::HeaderMap::new(), None).map_err(ChunkedError::Store)?;
    reader.fill(state.inline_max).await?;
    if reader.ended && reader.pending.len() as u64 <= state.inline_max {
        let md5 = reader.md5(expected_md5)?;
        let bytes = reader.pending.split().freeze();
        let digests = Digests {
            md5,
            blake3: *blake3::hash(&bytes).as_bytes(),
            checksums: Vec::new(),
            bytes: bytes.len() as u64,
        };
        let version = state.data.clock.next();
        let data = EntryData::Inline(bytes.to_vec());
        return Ok((version, Stored { digests, data }));
    }
    let piece_bytes = u64::from(state.data.segment_bytes) * PIECE_SEGMENTS;
    let store = |version: VersionId, piece: Bytes, md5: Option<[u8; 16]>| {
        let declared = piece.len() as u64;
        let body = StreamingBlob::wrap(futures_util::stream::once(async move {
            Ok::<_, std::io::Error>(piece)
        }));
        let none = &none;
        async move {
            store_body(
                state,
                account,
                container,
                key,
                policy,
                version,
                Some(body),
                declared,
                md5,
                none,
                false,
            )
            .await
            .map_err(ChunkedError::Store)
        }
    };
    let mut parts = Vec::new();
    loop {
        reader.fill(piece_bytes).await?;
        if reader.ended && parts.is_empty() {
            // The whole body in one piece: an ordinary entry of fragments.
            let md5 = reader.md5(expected_md5)?;
            let version = state.data.clock.next();
            let piece = reader.pending.split().freeze();
            let stored = store(version, piece, Some(md5)).await?;
            return Ok((version, stored));
        }
        let take = (reader.pending.len() as u64).min(piece_bytes) as usize;
        let piece = reader.pending.split_to(take).freeze();
        let last = reader.ended && reader.pending.is_empty();
        if last {
            reader.md5(expected_md5)?;
        }
        if parts.len() == MAX_PARTS {
            return Err(ChunkedError::TooLarge);
        }
        let version = state.data.clock.next();
        let stored = store(version, piece, None).await?;
        let segment_bytes = match stored.data {
            EntryData::Fragments { segment_bytes } => segment_bytes,
            _ => state.data.segment_bytes,
        };
        parts.push(Part {
            version,
            size: stored.digests.bytes,
            segment_bytes,
            blake3: stored.digests.blake3,
        });
        if last {
            break;
        }
    }
    let digests = Digests {
        md5: reader.md5(expected_md5)?,
        // As for multipart entries: each part carries its own blake3.
        blake3: [0; 32],
        checksums: Vec::new(),
        bytes: reader.bytes,
    };
    let version = state.data.clock.next();
    let data = EntryData::Parts(parts);
    Ok((version, Stored { digests, data }))
}
