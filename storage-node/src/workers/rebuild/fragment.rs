//! Rebuilding one fragment from other devices: a copy for replication, a reconstruction
//! segment by segment for erasure coding; either written through the local store's two
//! phases.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Bytes, HttpBody};
use axum::http::{Method, StatusCode};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use nimbus_core::codec::Codec;
use nimbus_core::fragment::{DEFAULT_BLOCK_RECORD_BYTES, FragmentHeader};
use nimbus_proxy::data::FragmentName;
use nimbus_proxy::node_client::empty_body;
use nimbus_ring::map::DeviceKey;

use self::bytes_buf::BytesBuf;
use super::Rebuild;
use crate::api::headers;
use crate::store::FragmentId;
use crate::workers::{Ctx, WorkerError};

/// How long opening a fragment to read may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// The least rate a rebuild or move may run at before it is given up (bytes per second),
/// beyond a fixed minute.
const SLOWEST_BYTES_PER_SEC: u64 = 1 << 20;

/// How long moving or rebuilding `bytes` may take at most.
pub(in crate::workers) fn transfer_timeout(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / SLOWEST_BYTES_PER_SEC)
}

/// A fragment's data arriving from another device.
type DataStream = BoxStream<'static, Result<Bytes, String>>;

/// Opens fragment `index` on `device` for reading all of it; returns its data bytes (as
/// the device declares them) and its stream.
async fn open_source(
    ctx: &Ctx,
    epoch: u64,
    name: &FragmentName,
    device: &DeviceKey,
    index: usize,
) -> Result<(u64, DataStream), WorkerError> {
    let peer =
        |what: String| WorkerError::Peer(format!("{}/{}: {what}", device.node, device.device));
    let path = name.api_path(device, index, "");
    let answer = tokio::time::timeout(
        OPEN_TIMEOUT,
        ctx.nodes
            .send(device.node, Method::GET, &path, epoch, &[], empty_body()),
    )
    .await
    .map_err(|_| peer(format!("no answer within {OPEN_TIMEOUT:?}")))?
    .map_err(|e| WorkerError::Peer(e.to_string()))?;
    if answer.status() != StatusCode::OK {
        return Err(peer(format!("fragment read answered {}", answer.status())));
    }
    let data_bytes = answer
        .headers()
        .get(headers::DATA_BYTES)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| peer(format!("no {} on a fragment read", headers::DATA_BYTES)))?;
    let body = answer.into_body();
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        loop {
            match futures_util::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx))
                .await
            {
                None => return None,
                Some(Err(e)) => return Some((Err(e.to_string()), body)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Some((Ok(data), body));
                    }
                }
            }
        }
    });
    Ok((data_bytes, stream.boxed()))
}

/// The header of a fragment rebuilt here.
fn rebuilt_header(id: &FragmentId, r: &Rebuild) -> FragmentHeader {
    FragmentHeader {
        version: id.version,
        fragment_index: id.index,
        policy: id.policy.clone(),
        object_path: id.object_path.clone(),
        object_bytes: r.object_bytes,
        segment_bytes: r.segment_bytes,
        block_record_bytes: DEFAULT_BLOCK_RECORD_BYTES,
        metadata: Vec::new(),
    }
}

fn name_of(id: &FragmentId) -> FragmentName {
    FragmentName {
        policy: id.policy.clone(),
        partition: id.partition,
        version: id.version,
        path: id.object_path.clone(),
    }
}

/// Copies another slot's copy (replication); returns the data bytes.
pub(super) async fn copy_fragment(
    ctx: &Ctx,
    epoch: u64,
    id: &FragmentId,
    r: &Rebuild,
) -> Result<u64, WorkerError> {
    let name = name_of(id);
    let mut last = None;
    for (device, index) in &r.sources {
        let (data_bytes, mut stream) = match open_source(ctx, epoch, &name, device, *index).await {
            Ok(opened) => opened,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        if let Some(expected) = r.object_bytes
            && expected != data_bytes
        {
            return Err(WorkerError::Peer(format!(
                "{}/{}: a copy of {data_bytes} bytes of an object of {expected}",
                device.node, device.device
            )));
        }
        let copy = async {
            let mut writer = ctx
                .store
                .begin_write(id.clone(), rebuilt_header(id, r))
                .await?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(WorkerError::Peer)?;
                ctx.throttle.take(chunk.len() as u64).await;
                writer.write(&chunk).await?;
            }
            writer.finish(Some(data_bytes)).await?;
            ctx.store.commit(id).await?;
            Ok::<_, WorkerError>(data_bytes)
        };
        return tokio::time::timeout(transfer_timeout(data_bytes), copy)
            .await
            .map_err(|_| WorkerError::Peer("copy timed out".into()))?;
    }
    Err(last.unwrap_or_else(|| WorkerError::Peer("no copy to read".into())))
}

/// One source fragment read piece by piece.
struct Source {
    index: usize,
    stream: DataStream,
    buf: BytesBuf,
}

impl Source {
    async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, WorkerError> {
        while self.buf.len() < n {
            match self.stream.next().await {
                Some(Ok(data)) => self.buf.extend(&data),
                Some(Err(e)) => return Err(WorkerError::Peer(e)),
                None => {
                    return Err(WorkerError::Peer(format!(
                        "fragment {} ended early",
                        self.index
                    )));
                }
            }
        }
        Ok(self.buf.take(n))
    }
}

/// Rebuilds an erasure-coded fragment from `k` others, segment by segment; returns the data
/// bytes.
pub(super) async fn reconstruct_fragment(
    ctx: &Ctx,
    epoch: u64,
    id: &FragmentId,
    r: &Rebuild,
    codec: &Arc<Codec>,
) -> Result<u64, WorkerError> {
    let internal = |e: nimbus_core::codec::CodecError| {
        WorkerError::Data(nimbus_proxy::error::DataError::Internal(e.to_string()))
    };
    let Some(object_bytes) = r.object_bytes else {
        return Err(WorkerError::Peer(format!(
            "fragment of {} {} without its object's size",
            id.object_path, id.version
        )));
    };
    let data_bytes = codec
        .fragment_bytes(object_bytes, r.segment_bytes)
        .map_err(internal)?;
    let spans = codec
        .segment_spans(object_bytes, r.segment_bytes, 0..object_bytes)
        .map_err(internal)?;
    let k = codec.data();
    let name = name_of(id);
    let work = async {
        let mut sources: Vec<Source> = Vec::with_capacity(k);
        let mut last = None;
        if data_bytes > 0 {
            // Data fragments first: with all of them the segment needs no decoding, and a
            // missing data fragment is computed alone (parity ones only when asked for).
            let mut ordered: Vec<&(DeviceKey, usize)> = r.sources.iter().collect();
            ordered.sort_by_key(|(_, j)| (*j >= k, *j));
            for (device, index) in ordered {
                if sources.len() == k {
                    break;
                }
                match open_source(ctx, epoch, &name, device, *index).await {
                    Ok((bytes, stream)) if bytes == data_bytes => sources.push(Source {
                        index: *index,
                        stream,
                        buf: BytesBuf::default(),
                    }),
                    Ok((bytes, _)) => {
                        last = Some(WorkerError::Peer(format!(
                            "{}/{}: fragment {index} of {bytes} bytes, {data_bytes} expected",
                            device.node, device.device
                        )));
                    }
                    Err(e) => last = Some(e),
                }
            }
            if sources.len() < k {
                return Err(last.unwrap_or_else(|| {
                    WorkerError::Peer(format!("{} of {k} fragments readable", sources.len()))
                }));
            }
        }
        let mut writer = ctx
            .store
            .begin_write(id.clone(), rebuilt_header(id, r))
            .await?;
        let target = usize::from(id.index);
        for span in spans {
            let len = (span.fragment_range.end - span.fragment_range.start) as usize;
            ctx.throttle.take((len * k) as u64).await;
            let pieces =
                futures_util::future::join_all(sources.iter_mut().map(|s| s.read_exact(len))).await;
            let mut fragments: Vec<Option<Vec<u8>>> = vec![None; codec.total()];
            for (source, piece) in sources.iter().zip(pieces) {
                fragments[source.index] = Some(piece?);
            }
            let codec = Arc::clone(codec);
            let segment_len = span.segment_len;
            let piece = tokio::task::spawn_blocking(move || {
                if target < codec.data() {
                    codec.reconstruct(&mut fragments, segment_len)?;
                } else {
                    codec.reconstruct_all(&mut fragments, segment_len)?;
                }
                Ok::<_, nimbus_core::codec::CodecError>(fragments.swap_remove(target))
            })
            .await
            .map_err(|e| {
                WorkerError::Data(nimbus_proxy::error::DataError::Internal(e.to_string()))
            })?
            .map_err(internal)?;
            let piece = piece.ok_or_else(|| {
                WorkerError::Data(nimbus_proxy::error::DataError::Internal(
                    "reconstruction left the fragment out".into(),
                ))
            })?;
            writer.write(&piece).await?;
        }
        writer.finish(Some(data_bytes)).await?;
        ctx.store.commit(id).await?;
        Ok(data_bytes)
    };
    tokio::time::timeout(transfer_timeout(data_bytes), work)
        .await
        .map_err(|_| WorkerError::Peer("reconstruction timed out".into()))?
}

/// Bytes received and not yet used.
mod bytes_buf {
    /// A growable byte queue.
    #[derive(Debug, Default)]
    pub(super) struct BytesBuf(Vec<u8>);

    impl BytesBuf {
        pub(super) fn len(&self) -> usize {
            self.0.len()
        }

        pub(super) fn extend(&mut self, data: &[u8]) {
            self.0.extend_from_slice(data);
        }

        /// Removes and returns the first `n` bytes (`n <= len`).
        pub(super) fn take(&mut self, n: usize) -> Vec<u8> {
            let rest = self.0.split_off(n);
            std::mem::replace(&mut self.0, rest)
        }
    }
}
