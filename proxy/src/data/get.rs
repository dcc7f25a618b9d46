//! A GET's fragments: `k` fragment streams opened on the range's fragment bytes (slot
//! devices first, then handoffs; parity fragments when a data fragment cannot be had), read
//! segment by segment, decoded only when a data fragment is missing. A stream that fails
//! mid-way is reopened elsewhere at the segment it was reading, so degraded reads are
//! transparent to the client. A whole-object read is checked against its blake3 at the end;
//! a mismatch breaks the body off rather than let it complete.
//!
//! Bytes are not copied on the way through unless a segment must be decoded: a fragment's
//! piece of a segment is the node's body frames as they came (a [`Piece`]), and a segment
//! whose `k` data fragments all came is those pieces in order, sliced to what was asked.

use std::collections::VecDeque;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, StatusCode};
use nimbus_core::codec::SegmentSpan;
use nimbus_ring::map::DeviceKey;
use tokio::sync::mpsc;

use super::{DataPath, FragmentName, Shape};
use crate::error::DataError;
use crate::node_client::empty_body;
use crate::placement::Place;

/// A response body: the object's bytes (or range), streamed.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync>>;

/// Segments decoded ahead of the client.
const AHEAD: usize = 2;

/// How long a device may take to answer a fragment GET, or to send the next piece of one,
/// before the read goes elsewhere: a hung node must not hang the client's read.
const STALL: Duration = Duration::from_secs(5);

/// Where a fragment may be: a device and the fragment file's index there.
type Source = (DeviceKey, usize);

/// One fragment's byte stream from one device.
struct FragmentStream {
    /// The logical fragment (its index in the codec: data `0..k`, parity `k..k+m`).
    fragment: usize,
    /// Places still untried.
    sources: VecDeque<Source>,
    body: Incoming,
    /// Bytes received and not yet read: body frames as they came, without copies.
    buf: Piece,
    /// The fragment offset of `buf`'s first byte.
    offset: u64,
}

/// Bytes in order, held as the chunks they arrived in.
#[derive(Debug, Default)]
struct Piece {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl Piece {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// Takes the first `n` bytes (at most `len`), splitting a chunk where `n` falls in it.
    fn split_to(&mut self, n: usize) -> Piece {
        let mut out = Piece::default();
        while out.len < n {
            let Some(mut chunk) = self.chunks.pop_front() else {
                break;
            };
            let want = n - out.len;
            if chunk.len() > want {
                self.chunks.push_front(chunk.split_off(want));
            }
            self.len -= chunk.len();
            out.push(chunk);
        }
        out
    }

    /// Drops the first `n` bytes.
    fn advance(&mut self, n: usize) {
        drop(self.split_to(n));
    }

    /// The bytes in one buffer: a copy, for the decoder.
    fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for chunk in &self.chunks {
            out.extend_from_slice(chunk);
        }
        out
    }
}

/// A response body made of the segments a read task sends: each segment's chunks in order.
struct SegmentStream {
    rx: mpsc::Receiver<Result<Piece, std::io::Error>>,
    pending: VecDeque<Bytes>,
}

impl futures_util::Stream for SegmentStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(chunk)));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(piece))) => self.pending = piece.chunks,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// What a read needs to open fragment streams.
struct Opener {
    data: DataPath,
    name: FragmentName,
    epoch: u64,
    /// Per logical fragment, where it may be, best first.
    sources: Vec<VecDeque<Source>>,
    /// The fragment bytes the whole read needs.
    end: u64,
}

impl Opener {
    fn new(data: &DataPath, place: &Place, name: &FragmentName, shape: &Shape, end: u64) -> Self {
        // Slots the map has up come first, then their previous owners (after a rebalance,
        // until the mover has handed their fragments over), then the handoffs, then the slots
        // the map has down: the map lags a node that has just come back, and a slot it still
        // calls down may well answer.
        let slots = |up: bool| {
            place
                .slots
                .iter()
                .enumerate()
                .filter(move |(_, (_, is_up))| *is_up == up)
                .map(|(i, (d, _))| (d.clone(), i))
        };
        let previous = |slot: Option<usize>| {
            let mut out: Vec<Source> = Vec::new();
            for set in place.previous.iter().rev() {
                for (i, (d, _)) in set.iter().enumerate() {
                    let moved = place.slots.get(i).is_none_or(|(now, _)| now != d);
                    if slot.is_none_or(|s| s == i) && moved && !out.contains(&(d.clone(), i)) {
                        out.push((d.clone(), i));
                    }
                }
            }
            out
        };
        let sources = if shape.copies {
            // Any replica is "fragment 0"; each is stored under its slot's index.
            let mut all: VecDeque<Source> = slots(true).collect();
            all.extend(previous(None));
            for h in &place.handoffs {
                for i in 0..shape.slots {
                    all.push_back((h.clone(), i));
                }
            }
            all.extend(slots(false));
            vec![all]
        } else {
            (0..shape.slots)
                .map(|i| {
                    let mut s: VecDeque<Source> =
                        slots(true).filter(|(_, slot)| *slot == i).collect();
                    s.extend(previous(Some(i)));
                    s.extend(place.handoffs.iter().map(|h| (h.clone(), i)));
                    s.extend(slots(false).filter(|(_, slot)| *slot == i));
                    s
                })
                .collect()
        };
        Opener {
            data: data.clone(),
            name: name.clone(),
            epoch: place.epoch,
            sources,
            end,
        }
    }

    /// Opens logical fragment `fragment` at `offset`, trying its sources in order.
    async fn open(
        &self,
        fragment: usize,
        mut sources: VecDeque<Source>,
        offset: u64,
    ) -> Result<FragmentStream, String> {
        let mut last = String::from("no source");
        while let Some((device, index)) = sources.pop_front() {
            let path = format!(
                "{}&offset={offset}&length={}",
                self.name.api_path(&device, index, ""),
                self.end - offset
            );
            let answer = self.data.nodes.send(
                device.node,
                Method::GET,
                &path,
                self.epoch,
                &[],
                empty_body(),
            );
            match tokio::time::timeout(STALL, answer).await {
                Err(_) => {
                    last = format!(
                        "{}/{}: no answer within {STALL:?}",
                        device.node, device.device
                    )
                }
                Ok(Ok(answer)) if answer.status() == StatusCode::OK => {
                    return Ok(FragmentStream {
                        fragment,
                        sources,
                        body: answer.into_body(),
                        buf: Piece::default(),
                        offset,
                    });
                }
                Ok(Ok(answer)) => {
                    last = format!("{}/{}: {}", device.node, device.device, answer.status())
                }
                Ok(Err(e)) => last = e.to_string(),
            }
        }
        Err(last)
    }
}

impl FragmentStream {
    /// Reads the next `n` bytes.
    async fn read_exact(&mut self, n: usize) -> Result<Piece, String> {
        while self.buf.len < n {
            let frame = tokio::time::timeout(STALL, self.body.frame())
                .await
                .map_err(|_| format!("no fragment bytes within {STALL:?}"))?;
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.push(data);
                    }
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("fragment body ended early".into()),
            }
        }
        self.offset += n as u64;
        Ok(self.buf.split_to(n))
    }
}

/// Which bytes of a stored object (or part) to read.
#[derive(Clone, Debug)]
pub struct Extent {
    /// The object's (or part's) bytes.
    pub size: u64,
    /// The segment size it was written with.
    pub segment_bytes: u32,
    /// The bytes wanted.
    pub range: Range<u64>,
    /// Its blake3, to check at the end, when the whole object is read.
    pub blake3: Option<[u8; 32]>,
}

/// Reads `extent` of an object stored as fragments; opens the fragment streams before
/// returning, so that an object with too few fragments fails before any byte is sent.
///
/// # Errors
/// [`DataError::Unavailable`] when fewer than `k` fragments can be opened.
pub async fn read_object(
    data: &DataPath,
    place: &Place,
    name: &FragmentName,
    shape: &Shape,
    extent: Extent,
) -> Result<BodyStream, DataError> {
    let Extent {
        size,
        segment_bytes,
        range,
        blake3,
    } = extent;
    let codec = &shape.codec;
    let spans = codec
        .segment_spans(size, segment_bytes, range.clone())
        .map_err(|e| DataError::Internal(e.to_string()))?;
    if range.is_empty() {
        return Ok(Box::pin(futures_util::stream::empty()));
    }
    let mut first_spans = codec
        .segment_spans(size, segment_bytes, range.start..range.start + 1)
        .map_err(|e| DataError::Internal(e.to_string()))?;
    let mut last_spans = codec
        .segment_spans(size, segment_bytes, range.end - 1..range.end)
        .map_err(|e| DataError::Internal(e.to_string()))?;
    let (Some(first), Some(last)) = (first_spans.next(), last_spans.next()) else {
        return Err(DataError::Internal(
            "a non-empty range touches no segment".into(),
        ));
    };
    let start = first.fragment_range.start;
    let opener = Opener::new(data, place, name, shape, last.fragment_range.end);
    let k = codec.data();
    let logical = opener.sources.len();
    // Open the data fragments at once; then parity (or, for copies, nothing more) for each
    // that failed.
    let opens = (0..k.min(logical)).map(|i| opener.open(i, opener.sources[i].clone(), start));
    let mut streams = Vec::with_capacity(k);
    let mut errors = Vec::new();
    for opened in futures_util::future::join_all(opens).await {
        match opened {
            Ok(s) => streams.push(s),
            Err(e) => errors.push(e),
        }
    }
    let mut next_fragment = k;
    while streams.len() < k && next_fragment < logical {
        match opener
            .open(next_fragment, opener.sources[next_fragment].clone(), start)
            .await
        {
            Ok(s) => streams.push(s),
            Err(e) => errors.push(e),
        }
        next_fragment += 1;
    }
    if streams.len() < k {
        return Err(DataError::Unavailable(format!(
            "{} of {k} fragments readable: {}",
            streams.len(),
            errors.join("; ")
        )));
    }
    let (tx, rx) = mpsc::channel::<Result<Piece, std::io::Error>>(AHEAD);
    let shape = shape.clone();
    let path = name.path.clone();
    tokio::spawn(async move {
        let mut reading = Reading {
            opener,
            shape,
            streams,
            next_fragment,
            hasher: blake3.map(|b| (blake3::Hasher::new(), b)),
        };
        for span in spans {
            match reading.segment(&span).await {
                Ok(bytes) => {
                    if tx.send(Ok(bytes)).await.is_err() {
                        return; // the client went away
                    }
                }
                Err(e) => {
                    tracing::warn!(%path, error = %e, "GET broke off");
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                    return;
                }
            }
        }
        if let Some((hasher, expected)) = reading.hasher
            && *hasher.finalize().as_bytes() != expected
        {
            tracing::error!(%path, "object bytes do not match their blake3; body broken off");
            let _ = tx
                .send(Err(std::io::Error::other(
                    "object failed its end-to-end check",
                )))
                .await;
        }
    });
    Ok(Box::pin(SegmentStream {
        rx,
        pending: VecDeque::new(),
    }))
}

/// A read under way.
struct Reading {
    opener: Opener,
    shape: Shape,
    streams: Vec<FragmentStream>,
    next_fragment: usize,
    hasher: Option<(blake3::Hasher, [u8; 32])>,
}

impl Reading {
    /// Returns the requested bytes of one segment.
    async fn segment(&mut self, span: &SegmentSpan) -> Result<Piece, String> {
        let len = (span.fragment_range.end - span.fragment_range.start) as usize;
        let mut pieces: Vec<Option<Piece>> = Vec::with_capacity(self.streams.len());
        pieces.resize_with(self.streams.len(), || None);
        let reads = self.streams.iter_mut().map(|s| s.read_exact(len));
        let results = futures_util::future::join_all(reads).await;
        let mut failed = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(b) => pieces[i] = Some(b),
                Err(e) => failed.push((i, e)),
            }
        }
        // Replace each failed stream: the same fragment elsewhere, else another fragment.
        for (i, error) in failed {
            let fragment = self.streams[i].fragment;
            tracing::debug!(fragment, %error, "fragment stream failed; reopening");
            let sources = std::mem::take(&mut self.streams[i].sources);
            let at = span.fragment_range.start;
            let mut replacement = self.opener.open(fragment, sources, at).await;
            while replacement.is_err() && self.next_fragment < self.opener.sources.len() {
                let f = self.next_fragment;
                self.next_fragment += 1;
                replacement = self
                    .opener
                    .open(f, self.opener.sources[f].clone(), at)
                    .await;
            }
            let mut stream = replacement.map_err(|e| format!("too few fragments: {e}"))?;
            pieces[i] = Some(stream.read_exact(len).await?);
            self.streams[i] = stream;
        }
        let mut segment = if self.shape.copies {
            pieces
                .into_iter()
                .next()
                .flatten()
                .ok_or_else(|| "no replica".to_owned())?
        } else {
            let k = self.shape.codec.data();
            let mut data: Vec<Option<Piece>> = Vec::with_capacity(self.shape.slots);
            data.resize_with(self.shape.slots, || None);
            for (stream, piece) in self.streams.iter().zip(pieces) {
                data[stream.fragment] = piece;
            }
            if data[..k].iter().all(Option::is_some) {
                // The data fragments in order are the segment (and its padding): no decode.
                let mut segment = Piece::default();
                for piece in data.into_iter().take(k).flatten() {
                    segment.chunks.extend(piece.chunks);
                    segment.len += piece.len;
                }
                segment
            } else {
                let mut fragments: Vec<Option<Vec<u8>>> =
                    data.iter().map(|p| p.as_ref().map(Piece::to_vec)).collect();
                let mut decoded = Piece::default();
                decoded.push(
                    self.shape
                        .codec
                        .reconstruct(&mut fragments, span.segment_len)
                        .map_err(|e| e.to_string())?,
                );
                decoded
            }
        };
        segment.advance(span.segment_range.start);
        let wanted = segment.split_to(span.segment_range.len());
        if wanted.len != span.segment_range.len() {
            return Err(format!(
                "segment {} has {} bytes, {} wanted",
                span.segment,
                wanted.len,
                span.segment_range.len()
            ));
        }
        if let Some((hasher, _)) = &mut self.hasher {
            for chunk in &wanted.chunks {
                hasher.update(chunk);
            }
        }
        Ok(wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `bytes` as a piece cut at `cuts` (offsets, in any order, duplicates allowed).
    fn piece_of(bytes: &[u8], cuts: &[usize]) -> Piece {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.extend([0, bytes.len()]);
        cuts.sort_unstable();
        let mut piece = Piece::default();
        for w in cuts.windows(2) {
            piece.push(Bytes::copy_from_slice(&bytes[w[0]..w[1]]));
        }
        piece
    }

    fn bytes_of(piece: &Piece) -> Vec<u8> {
        assert_eq!(
            piece.len,
            piece.chunks.iter().map(Bytes::len).sum::<usize>()
        );
        assert!(piece.chunks.iter().all(|c| !c.is_empty()));
        piece.to_vec()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Splitting and skipping a piece gives the bytes slicing the whole buffer gives,
        /// however the piece is cut into chunks.
        #[test]
        fn a_piece_splits_as_its_bytes_do(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            skip in 0usize..700,
            take in 0usize..700,
        ) {
            let mut piece = piece_of(&bytes, &cuts);
            prop_assert_eq!(bytes_of(&piece), bytes.clone());
            piece.advance(skip);
            let skip = skip.min(bytes.len());
            prop_assert_eq!(bytes_of(&piece), bytes[skip..].to_vec());
            let head = piece.split_to(take);
            let end = (skip + take).min(bytes.len());
            prop_assert_eq!(bytes_of(&head), bytes[skip..end].to_vec());
            prop_assert_eq!(bytes_of(&piece), bytes[end..].to_vec());
        }
    }

    /// A body made of segments yields their chunks in order, then an error where one came.
    #[tokio::test]
    async fn a_segment_stream_yields_chunks_in_order() {
        use futures_util::StreamExt;
        let (tx, rx) = mpsc::channel(2);
        let stream = SegmentStream {
            rx,
            pending: VecDeque::new(),
        };
        let sender = tokio::spawn(async move {
            for part in [&b"hello, "[..], b"world"] {
                let mut segment = piece_of(part, &[2, 4]);
                segment.push(Bytes::new());
                tx.send(Ok(segment)).await.ok();
            }
            tx.send(Err(std::io::Error::other("broken"))).await.ok();
        });
        let items: Vec<_> = stream.collect().await;
        sender.await.ok();
        assert!(items.last().is_some_and(Result::is_err));
        let (ok, err): (Vec<_>, Vec<_>) = items.into_iter().partition(Result::is_ok);
        let body: Vec<u8> = ok.into_iter().flatten().flatten().collect();
        assert_eq!(body, b"hello, world");
        assert_eq!(err.len(), 1);
    }
}
