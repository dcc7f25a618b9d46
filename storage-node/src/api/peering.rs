//! Peering (DESIGN.md, "Index"): before a device serves a shard as its primary in a ring
//! epoch, it collects the shard's records from a majority of the shard's replicas, so it
//! holds every write a majority acknowledged. The proxy names the shard's replicas (its
//! slot devices, in slot order) in [`REPLICAS`]; a shard is peered once per epoch.
//!
//! A replica may have missed any write (a replica is told of writes one by one, and some
//! may fail), so peering asks for the whole shard, not only what is newer than this
//! device's newest record. That is O(shard) once per shard per epoch; a per-replica
//! "complete through" mark (as Ceph's `last_complete`) would make it O(missed).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use nimbus_core::index::{ShardId, decode_records};
use nimbus_ring::raft::network::PeerClient;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::ApiError;
use crate::index::IndexStore;
use crate::lease::Leases;

/// The header naming a shard's replicas: `ip:port/device` separated by commas, in slot
/// order, this device among them.
pub const REPLICAS: &str = "x-nimbus-replicas";

/// Records asked for per call.
const PAGE: usize = 1000;
/// How long one call to a replica may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The most replicas a request may name in one set.
const MAX_REPLICAS: usize = 16;
/// The most previous sets a request may name.
const MAX_PREVIOUS: usize = 8;

/// The header naming, while the index ring is in transition, the shard's replicas in each
/// ring a rebalance replaced: sets separated by `;`, each as [`REPLICAS`]. Peering then needs
/// a majority of each set as well (the acknowledged writes of an earlier ring are on a
/// majority of its replicas, which the new ones may not hold yet).
pub const PREVIOUS_REPLICAS: &str = "x-nimbus-previous-replicas";

/// One replica of a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// Its node.
    pub node: SocketAddr,
    /// Its device there.
    pub device: String,
}

/// Parses the [`REPLICAS`] header, if present.
///
/// # Errors
/// [`ApiError::BadRequest`] when it is malformed.
pub fn parse_replicas(headers: &HeaderMap) -> Result<Option<Vec<Replica>>, ApiError> {
    let Some(value) = headers.get(REPLICAS) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| bad_list(REPLICAS))?;
    parse_list(REPLICAS, text).map(Some)
}

/// Parses the [`PREVIOUS_REPLICAS`] header: no sets when absent.
///
/// # Errors
/// [`ApiError::BadRequest`] when it is malformed.
pub fn parse_previous(headers: &HeaderMap) -> Result<Vec<Vec<Replica>>, ApiError> {
    let Some(value) = headers.get(PREVIOUS_REPLICAS) else {
        return Ok(Vec::new());
    };
    let text = value.to_str().map_err(|_| bad_list(PREVIOUS_REPLICAS))?;
    let sets = text
        .split(';')
        .map(|set| parse_list(PREVIOUS_REPLICAS, set))
        .collect::<Result<Vec<_>, ApiError>>()?;
    if sets.len() > MAX_PREVIOUS {
        return Err(bad_list(PREVIOUS_REPLICAS));
    }
    Ok(sets)
}

fn bad_list(header: &str) -> ApiError {
    ApiError::BadRequest(format!("{header}: not a list of ip:port/device"))
}

/// Parses `ip:port/device` items separated by commas.
fn parse_list(header: &str, text: &str) -> Result<Vec<Replica>, ApiError> {
    let bad = || bad_list(header);
    let replicas = text
        .split(',')
        .map(|item| {
            let (node, device) = item.trim().split_once('/').ok_or_else(bad)?;
            Ok(Replica {
                node: node.parse().map_err(|_| bad())?,
                device: device.to_owned(),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    if replicas.is_empty() || replicas.len() > MAX_REPLICAS {
        return Err(bad());
    }
    Ok(replicas)
}

/// A node's peering: its client of other nodes, its own address, and for each (device,
/// shard) the epoch it was last peered in.
#[derive(Debug)]
pub struct Peering {
    client: PeerClient,
    me: Option<SocketAddr>,
    /// Per (device, shard), under a lock of its own: a shard's peering makes only that
    /// shard's requests wait (it may take a call timeout when a replica hangs).
    peered: std::sync::Mutex<HashMap<(String, ShardId), Arc<ShardSlot>>>,
    /// The node's leases: what a new primary's wait starts from.
    leases: Arc<Leases>,
}

/// One shard's lock and its primacy on one device.
type ShardSlot = Mutex<Option<Primacy>>;

/// A device's time as a shard's primary.
#[derive(Clone, Copy, Debug)]
struct Primacy {
    /// The epoch it was last peered in (asked to act as the primary).
    epoch: u64,
    /// When it may take writes as the primary: when the leases of the shard's earlier
    /// primaries have run out (`crate::lease`). Kept while it is the primary in one epoch
    /// after another.
    writable_at: Instant,
}

impl Peering {
    /// Returns the peering of the node at `me` (its address as the rings place it), with
    /// the node's `leases`.
    #[must_use]
    pub fn new(client: PeerClient, me: Option<SocketAddr>, leases: Arc<Leases>) -> Self {
        Peering {
            client,
            me,
            peered: std::sync::Mutex::new(HashMap::new()),
            leases,
        }
    }

    /// Makes sure `device`'s copy of `shard` holds every record a majority of `replicas`
    /// holds, and a majority of each of the `previous` sets, as of `epoch`; peers at most
    /// once per epoch (concurrent callers for the same shard wait; other shards do not).
    /// Returns when the device may take writes
    /// as the shard's primary: at once if it was the primary in the epoch before too (and
    /// its wait then is over), else [`crate::lease::WAIT`] after `epoch` was committed.
    ///
    /// # Errors
    /// [`ApiError::Unavailable`] when fewer than a majority of a set answered.
    pub async fn ensure(
        &self,
        index: &IndexStore,
        device: &str,
        shard: &ShardId,
        epoch: u64,
        replicas: &[Replica],
        previous: &[Vec<Replica>],
    ) -> Result<Instant, ApiError> {
        let slot = {
            let mut peered = self
                .peered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(
                peered
                    .entry((device.to_owned(), shard.clone()))
                    .or_default(),
            )
        };
        let mut primacy = slot.lock().await;
        let before = *primacy;
        if let Some(p) = before.filter(|p| p.epoch >= epoch) {
            return Ok(p.writable_at);
        }
        let is_me = |r: &Replica| r.device == device && self.me.is_none_or(|m| m == r.node);
        let mut others: Vec<&Replica> = Vec::new();
        for r in std::iter::once(replicas)
            .chain(previous.iter().map(Vec::as_slice))
            .flatten()
        {
            if !is_me(r) && !others.contains(&r) {
                others.push(r);
            }
        }
        let pulls = others
            .iter()
            .map(|r| pull(&self.client, index, r, shard, epoch));
        let results = futures_util::future::join_all(pulls).await;
        let mut answered: Vec<&Replica> = Vec::new();
        let mut errors = Vec::new();
        for (r, result) in others.iter().zip(results) {
            match result {
                Ok(()) => answered.push(r),
                Err(e) => errors.push(e),
            }
        }
        for set in std::iter::once(replicas).chain(previous.iter().map(Vec::as_slice)) {
            let majority = set.len() / 2 + 1;
            let held = set
                .iter()
                .filter(|r| is_me(r) || answered.contains(r))
                .count();
            if held < majority {
                return Err(ApiError::Unavailable(format!(
                    "peering {shard}: {held} of {} replicas of a set answered, {majority} needed: {}",
                    set.len(),
                    errors.join("; ")
                )));
            }
        }
        tracing::debug!(%shard, epoch, answered = answered.len(), "shard peered");
        let writable_at = match before {
            Some(p) if p.epoch + 1 == epoch => p.writable_at,
            _ => self.leases.writable_at(epoch, Instant::now()),
        };
        *primacy = Some(Primacy { epoch, writable_at });
        Ok(writable_at)
    }
}

/// Copies every record of `shard` that `replica` holds into `index` (each kept only if
/// newer than what is there).
async fn pull(
    client: &PeerClient,
    index: &IndexStore,
    replica: &Replica,
    shard: &ShardId,
    epoch: u64,
) -> Result<(), String> {
    let mut from = 0u64;
    loop {
        let path = format!(
            "/v1/index/{}/{}/{}/{}/since?seq={from}&limit={PAGE}",
            encode(&replica.device),
            encode(&shard.account),
            encode(&shard.container),
            shard.shard
        );
        let answer = client
            .send_bytes(
                Method::GET,
                &replica.node.to_string(),
                &path,
                epoch,
                Bytes::new(),
                CALL_TIMEOUT,
                64 << 20,
            )
            .await
            .map_err(|e| format!("{}: {e}", replica.node))?;
        if answer.status != StatusCode::OK {
            return Err(format!("{}: {}", replica.node, answer.status));
        }
        let records = decode_records(&answer.body).map_err(|e| format!("{}: {e}", replica.node))?;
        let count = records.len();
        for record in records {
            from = from.max(record.seq);
            index
                .apply_replicated(shard, record)
                .await
                .map_err(|e| format!("applying a record from {}: {e}", replica.node))?;
        }
        if count < PAGE {
            return Ok(());
        }
    }
}

/// Percent-encodes a path segment.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use nimbus_core::auth::ClusterSecret;

    use super::*;
    use crate::lease::WAIT;

    #[tokio::test]
    async fn a_device_waits_out_older_leases_when_it_becomes_primary_and_not_while_it_stays() {
        let dir = tempfile::tempdir().unwrap();
        let index = IndexStore::open(dir.path().join("index.redb"))
            .await
            .unwrap();
        let me: SocketAddr = "127.0.0.1:6200".parse().unwrap();
        let leases = Arc::new(Leases::default());
        let peering = Peering::new(
            PeerClient::new(ClusterSecret::new([1; 32])),
            Some(me),
            Arc::clone(&leases),
        );
        let shard = ShardId {
            account: "a".into(),
            container: "c".into(),
            shard: 0,
        };
        // A shard of one replica: this device (peering asks no one).
        let replicas = [Replica {
            node: me,
            device: "d1".into(),
        }];
        let t0 = Instant::now();
        leases.saw(5, t0);
        let ensure = |epoch| peering.ensure(&index, "d1", &shard, epoch, &replicas, &[]);
        let first = ensure(5).await.unwrap();
        assert!(
            first >= t0 + WAIT,
            "primary in a new epoch: waits from the epoch's commit"
        );
        assert!(first <= Instant::now() + WAIT);
        // Asked again in the same epoch, and in the next: the same wait, nothing longer.
        assert_eq!(ensure(5).await.unwrap(), first);
        leases.saw(6, Instant::now());
        assert_eq!(ensure(6).await.unwrap(), first);
        // Not asked in epoch 7 (another device may have been the primary): it waits again.
        let t8 = Instant::now();
        leases.saw(8, t8);
        let again = ensure(8).await.unwrap();
        assert!(again >= t8 + WAIT);
        // Another device of the node keeps its own.
        let other = peering
            .ensure(
                &index,
                "d2",
                &shard,
                8,
                &[Replica {
                    node: me,
                    device: "d2".into(),
                }],
                &[],
            )
            .await
            .unwrap();
        assert!(other >= t8 + WAIT);
    }

    #[tokio::test]
    async fn a_shard_whose_replica_hangs_keeps_no_other_shard_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(
            IndexStore::open(dir.path().join("index.redb"))
                .await
                .unwrap(),
        );
        let me: SocketAddr = "127.0.0.1:6200".parse().unwrap();
        let peering = Arc::new(Peering::new(
            PeerClient::new(ClusterSecret::new([1; 32])),
            Some(me),
            Arc::new(Leases::default()),
        ));
        // A replica that takes connections and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = silent.accept().await {
                open.push(conn);
            }
        });
        let shard = |n| ShardId {
            account: "a".into(),
            container: "c".into(),
            shard: n,
        };
        let mine = Replica {
            node: me,
            device: "d1".into(),
        };
        let hanging = vec![
            mine.clone(),
            Replica {
                node: silent_addr,
                device: "d1".into(),
            },
            Replica {
                node: silent_addr,
                device: "d2".into(),
            },
        ];
        let (p, i) = (Arc::clone(&peering), Arc::clone(&index));
        let stuck =
            tokio::spawn(async move { p.ensure(&i, "d1", &shard(0), 1, &hanging, &[]).await });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let other = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            peering.ensure(&index, "d1", &shard(1), 1, &[mine], &[]),
        )
        .await;
        assert!(
            other.is_ok_and(|r| r.is_ok()),
            "shard 1 waited for shard 0's peering"
        );
        assert!(
            !stuck.is_finished(),
            "shard 0 is still peering with its silent replicas"
        );
        stuck.abort();
    }
}
