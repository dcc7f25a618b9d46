//! The data path (DESIGN.md, "Objects and fragments"): a PUT cut into segments, each
//! erasure-coded (or copied, for replication) into one fragment per slot and streamed to the
//! slot devices in parallel, made durable in two phases; a GET that reads the first `k`
//! fragments that answer, decodes only when a data fragment is missing, and reads only the
//! segments a range touches. The proxy never holds more than a few segments of a request.

mod get;
mod md5;
mod put;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nimbus_core::codec::Codec;
use nimbus_core::ids::{PartitionId, VersionId};
use nimbus_core::policy::{PolicyKind, StoragePolicy};
use nimbus_ring::map::DeviceKey;

pub use get::{BodyStream, Extent, read_object};
pub use md5::{Md5Body, Md5Lanes};
pub use put::{Digests, PutBody, put_fragments, read_small};

use crate::error::DataError;
use crate::node_client::{NodeClient, encode_query};

/// How a policy turns a segment into fragments.
#[derive(Clone, Debug)]
pub struct Shape {
    /// The codec: `k + m` for erasure coding, `1 + 0` for replication (every slot holds the
    /// whole segment).
    pub codec: Codec,
    /// Whether slots hold copies (replication) rather than distinct fragments.
    pub copies: bool,
    /// Slots per partition.
    pub slots: usize,
    /// Durable fragments a PUT needs: `k + 1` for erasure coding (`k` when `m = 1`), a
    /// majority for replication.
    pub quorum: usize,
}

impl Shape {
    /// Returns the shape of `policy`.
    ///
    /// # Errors
    /// [`DataError::Internal`] if the codec refuses the policy's parameters.
    pub fn of(policy: &StoragePolicy) -> Result<Shape, DataError> {
        let codec_error = |e: nimbus_core::codec::CodecError| DataError::Internal(e.to_string());
        Ok(match policy.kind() {
            PolicyKind::Replication { replicas } => Shape {
                codec: Codec::new(1, 0).map_err(codec_error)?,
                copies: true,
                slots: usize::from(replicas),
                quorum: usize::from(replicas) / 2 + 1,
            },
            PolicyKind::ErasureCoding { data, parity } => Shape {
                codec: Codec::new(usize::from(data), usize::from(parity)).map_err(codec_error)?,
                copies: false,
                slots: usize::from(data) + usize::from(parity),
                quorum: if parity <= 1 {
                    usize::from(data)
                } else {
                    usize::from(data) + 1
                },
            },
        })
    }
}

/// What names one object version's fragments.
#[derive(Clone, Debug)]
pub struct FragmentName {
    /// The policy's name.
    pub policy: String,
    /// The partition.
    pub partition: PartitionId,
    /// The version.
    pub version: VersionId,
    /// `account/container/object`.
    pub path: String,
}

impl FragmentName {
    /// The internal API path of fragment `index` on `device`, with `suffix` (`/commit`) and
    /// the object path query.
    #[must_use]
    pub fn api_path(&self, device: &DeviceKey, index: usize, suffix: &str) -> String {
        format!(
            "/v1/fragments/{}/{}/{}/{}/{index}{suffix}?path={}",
            encode_query(&device.device),
            encode_query(&self.policy),
            self.partition.0,
            self.version,
            encode_query(&self.path)
        )
    }
}

/// Issues versions: the proxy's clock in microseconds, never going back, with a random
/// tiebreak fixed per proxy so two proxies never issue the same version.
#[derive(Debug)]
pub struct VersionClock {
    last_micros: AtomicU64,
    tiebreak: u16,
}

impl VersionClock {
    /// Returns a clock with a random tiebreak.
    #[must_use]
    pub fn new() -> Self {
        let mut bytes = [0u8; 2];
        // A failed random source leaves tiebreak 0: versions stay ordered, only the
        // cross-proxy tiebreak weakens.
        let _ = getrandom::fill(&mut bytes);
        VersionClock {
            last_micros: AtomicU64::new(0),
            tiebreak: u16::from_le_bytes(bytes) & 0xfff,
        }
    }

    /// Returns a version later than every one this clock issued before.
    pub fn next(&self) -> VersionId {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX >> 12)
        });
        let mut prev = self.last_micros.load(Ordering::Relaxed);
        loop {
            let next = now.max(prev + 1);
            match self.last_micros.compare_exchange_weak(
                prev,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return VersionId::from_parts(next, self.tiebreak),
                Err(p) => prev = p,
            }
        }
    }
}

impl Default for VersionClock {
    fn default() -> Self {
        VersionClock::new()
    }
}

/// What the data path shares between requests.
#[derive(Clone, Debug)]
pub struct DataPath {
    /// The storage nodes' client.
    pub nodes: NodeClient,
    /// Bytes per segment of new objects.
    pub segment_bytes: u32,
    /// Versions.
    pub clock: Arc<VersionClock>,
    /// The MD5 of large bodies.
    pub md5: Md5Lanes,
}
