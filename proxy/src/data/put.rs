//! A PUT's fragments: the body cut into segments, each encoded into one fragment per slot,
//! streamed to the slot devices in parallel (a device that fails before its first segment is
//! replaced by a handoff, replaying that segment), then committed once a quorum of the
//! fragments is durable.

use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use hyper::{Method, StatusCode};
use nimbus_core::checksum::{ChecksumAlgorithm, Checksummer};
use nimbus_ring::map::DeviceKey;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{DataPath, FragmentName, Md5Body, Shape};
use crate::error::DataError;
use crate::node_client::{SmallCall, channel_body, error_chain};
use crate::placement::Place;

/// Segments buffered per slot between the encoder and the slot's upload.
const SLOT_QUEUE: usize = 2;
/// How long a commit may take.
const COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the proxy computed over a body as it streamed.
#[derive(Clone, Debug)]
pub struct Digests {
    /// MD5 (the S3/Swift ETag of a single-part object).
    pub md5: [u8; 16],
    /// blake3, end to end.
    pub blake3: [u8; 32],
    /// The client checksums asked for, by algorithm.
    pub checksums: Vec<(ChecksumAlgorithm, Vec<u8>)>,
    /// Bytes.
    pub bytes: u64,
}

impl Digests {
    /// The client checksums as an index entry stores them: by S3 algorithm name.
    #[must_use]
    pub fn client_checksums(&self) -> Vec<(String, Vec<u8>)> {
        self.checksums
            .iter()
            .map(|(a, v)| (a.s3_name().to_owned(), v.clone()))
            .collect()
    }
}

/// A body, its declared length, and the client checksums to compute over it.
pub struct PutBody<S> {
    /// The chunks.
    pub stream: S,
    /// The length the client declared.
    pub declared: u64,
    /// Checksums to compute (S3's `x-amz-checksum-*`).
    pub checksums: Vec<ChecksumAlgorithm>,
}

/// Hashes a body as it arrives and checks it against its declared length.
struct Hashing {
    md5: Md5Body,
    blake3: blake3::Hasher,
    checksummers: Vec<Checksummer>,
    bytes: u64,
    declared: u64,
}

impl Hashing {
    fn new(md5: Md5Body, declared: u64, checksums: &[ChecksumAlgorithm]) -> Self {
        Hashing {
            md5,
            blake3: blake3::Hasher::new(),
            checksummers: checksums.iter().map(|a| a.checksummer()).collect(),
            bytes: 0,
            declared,
        }
    }

    async fn update(&mut self, chunk: &Bytes) -> Result<(), DataError> {
        self.bytes += chunk.len() as u64;
        if self.bytes > self.declared {
            return Err(DataError::BodyTooLong {
                declared: self.declared,
            });
        }
        self.md5.update(chunk).await?;
        self.blake3.update(chunk);
        for c in &mut self.checksummers {
            c.update(chunk);
        }
        Ok(())
    }

    async fn finish(self) -> Result<Digests, DataError> {
        if self.bytes < self.declared {
            return Err(DataError::IncompleteBody {
                got: self.bytes,
                declared: self.declared,
            });
        }
        Ok(Digests {
            md5: self.md5.finish().await?,
            blake3: *self.blake3.finalize().as_bytes(),
            checksums: self
                .checksummers
                .into_iter()
                .map(|c| (c.algorithm(), c.finish()))
                .collect(),
            bytes: self.bytes,
        })
    }
}

/// Reads a whole (small) body, hashing it; for inline objects.
///
/// # Errors
/// [`DataError::IncompleteBody`], [`DataError::BodyTooLong`], [`DataError::Body`].
pub async fn read_small<S, E>(body: PutBody<S>) -> Result<(Bytes, Digests), DataError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    let PutBody {
        mut stream,
        declared,
        checksums,
    } = body;
    let mut hashing = Hashing::new(Md5Body::here(), declared, &checksums);
    let mut buf = BytesMut::with_capacity(usize::try_from(declared).unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| DataError::Body(e.to_string()))?;
        hashing.update(&chunk).await?;
        buf.extend_from_slice(&chunk);
    }
    let digests = hashing.finish().await?;
    Ok((buf.freeze(), digests))
}

/// What one slot's upload reports.
struct SlotResult {
    slot: usize,
    outcome: Result<DeviceKey, String>,
}

/// Streams a body's fragments to `place`'s devices and commits them; returns the body's
/// digests once a quorum of fragments is durable. `check` runs after the body ended and
/// before anything is committed (the client's digests); an error there, a short or long
/// body, or too few durable fragments leave nothing committed.
///
/// # Errors
/// [`DataError`]: the body's faults, `check`'s, or [`DataError::Unavailable`].
pub async fn put_fragments<S, E>(
    data: &DataPath,
    place: &Place,
    name: &FragmentName,
    shape: &Shape,
    body: PutBody<S>,
    check: impl FnOnce(&Digests) -> Result<(), DataError>,
) -> Result<Digests, DataError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    let PutBody {
        mut stream,
        declared,
        checksums,
    } = body;
    let segment_bytes = data.segment_bytes;
    let fragment_bytes = shape
        .codec
        .fragment_bytes(declared, segment_bytes)
        .map_err(|e| DataError::Internal(e.to_string()))?;
    // Handoffs are shared: each is used by at most one slot.
    let handoffs = Arc::new(Handoffs {
        devices: place.handoffs.clone(),
        next: AtomicUsize::new(0),
    });
    let mut uploads = JoinSet::new();
    let mut senders: Vec<Option<mpsc::Sender<Bytes>>> = Vec::with_capacity(shape.slots);
    for (slot, (device, up)) in place.slots.iter().enumerate() {
        let first = if *up {
            Some(device.clone())
        } else {
            handoffs.take()
        };
        let (tx, rx) = mpsc::channel(SLOT_QUEUE);
        let upload = SlotUpload {
            data: data.clone(),
            name: name.clone(),
            slot,
            epoch: place.epoch,
            headers: vec![
                ("x-nimbus-data-bytes", fragment_bytes.to_string()),
                ("x-nimbus-segment-bytes", segment_bytes.to_string()),
                ("x-nimbus-object-bytes", declared.to_string()),
                ("content-length", fragment_bytes.to_string()),
            ],
            fragment_bytes,
            handoffs: Arc::clone(&handoffs),
        };
        uploads.spawn(async move {
            SlotResult {
                slot,
                outcome: upload.run(first, rx).await,
            }
        });
        senders.push(Some(tx));
    }

    // On any error before the queues close, the uploads are aborted first, so no device
    // sees a complete body (closing a queue would end a fragment's body normally).
    let hashing = Hashing::new(data.md5.body(declared), declared, &checksums);
    let digests = match feed(
        shape,
        segment_bytes,
        hashing,
        &mut stream,
        &mut senders,
        check,
    )
    .await
    {
        Ok(digests) => digests,
        Err(e) => {
            uploads.abort_all();
            return Err(e);
        }
    };
    // The body is complete and verified: closing the queues ends each fragment's body.
    senders.clear();
    let mut stored: Vec<(usize, DeviceKey)> = Vec::with_capacity(shape.slots);
    let mut errors = Vec::new();
    while let Some(joined) = uploads.join_next().await {
        match joined {
            Ok(SlotResult {
                slot,
                outcome: Ok(device),
            }) => stored.push((slot, device)),
            Ok(SlotResult {
                slot,
                outcome: Err(e),
            }) => errors.push(format!("fragment {slot}: {e}")),
            Err(e) => errors.push(format!("upload task: {e}")),
        }
    }
    if stored.len() < shape.quorum {
        return Err(DataError::Unavailable(format!(
            "{} of {} fragments durable, {} needed: {}",
            stored.len(),
            shape.slots,
            shape.quorum,
            errors.join("; ")
        )));
    }
    if !errors.is_empty() {
        tracing::warn!(path = %name.path, version = %name.version, errors = %errors.join("; "), "PUT stored fewer fragments than slots");
    }
    commit(data, place.epoch, name, &stored, shape.quorum).await?;
    Ok(digests)
}

/// Reads the body, cutting it into segments queued to the slots; checks it once it ended.
async fn feed<S, E>(
    shape: &Shape,
    segment_bytes: u32,
    mut hashing: Hashing,
    stream: &mut S,
    senders: &mut [Option<mpsc::Sender<Bytes>>],
    check: impl FnOnce(&Digests) -> Result<(), DataError>,
) -> Result<Digests, DataError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    let mut segment = BytesMut::with_capacity(segment_bytes as usize);
    let mut failed = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| DataError::Body(e.to_string()))?;
        hashing.update(&chunk).await?;
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let take = (segment_bytes as usize - segment.len()).min(rest.len());
            segment.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if segment.len() == segment_bytes as usize {
                failed += send_segment(shape, senders, segment.split().freeze()).await?;
                if failed > shape.slots - shape.quorum {
                    return Err(DataError::Unavailable(format!(
                        "{failed} of {} fragment uploads failed",
                        shape.slots
                    )));
                }
            }
        }
    }
    let digests = hashing.finish().await?;
    check(&digests)?;
    if !segment.is_empty() {
        send_segment(shape, senders, segment.split().freeze()).await?;
    }
    Ok(digests)
}

/// Encodes one segment and queues fragment `i` for slot `i`; returns how many slots newly
/// failed (their upload ended).
async fn send_segment(
    shape: &Shape,
    senders: &mut [Option<mpsc::Sender<Bytes>>],
    segment: Bytes,
) -> Result<usize, DataError> {
    let fragments = if shape.copies {
        vec![segment; shape.slots]
    } else {
        shape
            .codec
            .encode_bytes(segment)
            .map_err(|e| DataError::Internal(e.to_string()))?
    };
    let mut failed = 0;
    for (sender, fragment) in senders.iter_mut().zip(fragments) {
        if let Some(tx) = sender
            && tx.send(fragment).await.is_err()
        {
            *sender = None;
            failed += 1;
        }
    }
    Ok(failed)
}

/// Phase two: commits every stored fragment; needs `quorum` commits.
async fn commit(
    data: &DataPath,
    epoch: u64,
    name: &FragmentName,
    stored: &[(usize, DeviceKey)],
    quorum: usize,
) -> Result<(), DataError> {
    let (stored, quorum) = if injected_ack_before_quorum() {
        (&stored[..stored.len().min(1)], 1)
    } else {
        (stored, quorum)
    };
    let calls = stored.iter().map(|(slot, device)| {
        let path = name.api_path(device, *slot, "/commit");
        async move {
            let answer = data
                .nodes
                .call(
                    device,
                    SmallCall::new(Method::POST, path, epoch, COMMIT_TIMEOUT),
                )
                .await;
            match answer {
                Ok(a) if a.status == StatusCode::NO_CONTENT => Ok(()),
                Ok(a) => Err(format!("{}: commit answered {}", device.node, a.status)),
                Err(e) => Err(e.to_string()),
            }
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let committed = results.iter().filter(|r| r.is_ok()).count();
    if committed < quorum {
        let errors: Vec<_> = results.into_iter().filter_map(Result::err).collect();
        return Err(DataError::Unavailable(format!(
            "{committed} fragments committed, {quorum} needed: {}",
            errors.join("; ")
        )));
    }
    Ok(())
}

/// A deliberate bug for the chaos harness's own test, in debug builds only: with
/// `NIMBUS_INJECT_BUG=ack-before-quorum`, a PUT commits one fragment and is acknowledged.
/// `nimbus-chaos run --inject-bug ack-before-quorum --expect-violations` must catch it.
fn injected_ack_before_quorum() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    cfg!(debug_assertions)
        && *ON.get_or_init(|| {
            let on = std::env::var("NIMBUS_INJECT_BUG").is_ok_and(|v| v == "ack-before-quorum");
            if on {
                tracing::error!(
                    "NIMBUS_INJECT_BUG=ack-before-quorum: PUTs are acknowledged after one commit"
                );
            }
            on
        })
}

/// Handoff devices shared by a PUT's slots.
struct Handoffs {
    devices: Vec<DeviceKey>,
    next: AtomicUsize,
}

impl Handoffs {
    fn take(&self) -> Option<DeviceKey> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.devices.get(i).cloned()
    }
}

/// One slot's fragment upload.
struct SlotUpload {
    data: DataPath,
    name: FragmentName,
    slot: usize,
    epoch: u64,
    headers: Vec<(&'static str, String)>,
    /// The fragment's bytes, as declared to the node.
    fragment_bytes: u64,
    handoffs: Arc<Handoffs>,
}

impl SlotUpload {
    /// Streams the fragments arriving on `rx` to `device`; if it fails before the first
    /// segment's fragment has been passed on, moves to the next handoff and replays it.
    /// Returns where the fragment is durable (pending commit).
    async fn run(
        self,
        mut device: Option<DeviceKey>,
        mut rx: mpsc::Receiver<Bytes>,
    ) -> Result<DeviceKey, String> {
        // The fragments fed so far, kept while they are only the first segment's.
        let mut replay: Vec<Bytes> = Vec::new();
        let mut replayable = true;
        let mut last_error = String::from("no device");
        loop {
            let Some(target) = device.take() else {
                return Err(last_error);
            };
            match self
                .attempt(&target, &mut rx, &mut replay, &mut replayable)
                .await
            {
                Ok(()) => return Ok(target),
                Err(e) => {
                    last_error = format!("{}/{}: {e}", target.node, target.device);
                    tracing::debug!(slot = self.slot, error = %last_error, "fragment upload failed");
                    if !replayable {
                        return Err(last_error);
                    }
                    device = self.handoffs.take();
                }
            }
        }
    }

    async fn attempt(
        &self,
        target: &DeviceKey,
        rx: &mut mpsc::Receiver<Bytes>,
        replay: &mut Vec<Bytes>,
        replayable: &mut bool,
    ) -> Result<(), String> {
        let (tx, body) = channel_body(SLOT_QUEUE);
        let path = self.name.api_path(target, self.slot, "");
        let headers: Vec<(&str, String)> =
            self.headers.iter().map(|(n, v)| (*n, v.clone())).collect();
        let request =
            self.data
                .nodes
                .send(target.node, Method::PUT, &path, self.epoch, &headers, body);
        tokio::pin!(request);
        let mut sent = 0u64;
        // Replay what an earlier device was sent.
        for fragment in replay.iter() {
            let len = fragment.len() as u64;
            tokio::select! {
                a = &mut request => return Err(early(a)),
                r = tx.send(Ok(fragment.clone())) => r.map_err(|_| "connection closed".to_owned())?,
            }
            sent += len;
        }
        // The node answers once it has all `fragment_bytes`: an answer before that is a
        // failure; one after it is kept while the queue drains to its end.
        let mut answer = None;
        loop {
            let next = if answer.is_some() {
                rx.recv().await
            } else {
                tokio::select! {
                    a = &mut request => {
                        if sent < self.fragment_bytes {
                            return Err(early(a));
                        }
                        answer = Some(a);
                        continue;
                    }
                    next = rx.recv() => next,
                }
            };
            let Some(fragment) = next else { break };
            // Kept first, so that a failure below can move to a handoff and replay it.
            if *replayable && replay.is_empty() {
                replay.push(fragment.clone());
            } else {
                *replayable = false;
                replay.clear();
            }
            if answer.is_some() {
                return Err("the node answered before the whole fragment was sent".into());
            }
            let len = fragment.len() as u64;
            tokio::select! {
                a = &mut request => return Err(early(a)),
                r = tx.send(Ok(fragment)) => r.map_err(|_| "connection closed".to_owned())?,
            }
            sent += len;
        }
        drop(tx);
        let answer = match answer {
            Some(a) => a,
            None => request.await,
        }
        .map_err(|e| error_chain(&e))?;
        let status = answer.status();
        if status == StatusCode::CREATED {
            return Ok(());
        }
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(
            answer.into_body(),
            4096,
        ))
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
        Err(format!("{status} {body}"))
    }
}

fn early(
    answer: Result<hyper::Response<hyper::body::Incoming>, crate::node_client::NodeCallError>,
) -> String {
    match answer {
        Ok(a) => format!("answered {} before the body ended", a.status()),
        Err(e) => error_chain(&e),
    }
}
