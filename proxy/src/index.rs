//! The proxy's side of index replication (DESIGN.md, "Index"). A container's index is split
//! into shards (`core::index::shard_of`); a shard lives on the `r` slot devices of its
//! partition in the index policy's ring. Writes go to the shard's primary (the first slot
//! device the map has up), which applies the write and any condition atomically and gives
//! it the shard's next sequence number; the write is then copied to the other replicas and
//! acknowledged once a majority of the `r` hold it durably. A read asks the primary alone
//! first: it answers alone while it holds a read lease (storage node's `lease`). Otherwise
//! reads ask a majority of the replicas (those the map has up first; another for each that
//! fails, the rest after a short wait) and take the newest record among a majority of
//! answers, so a read sees every acknowledged write even while the map still names a dead
//! primary. While the index ring is in transition after a rebalance, writes and reads need a
//! majority of the replicas of each ring in effect (no leased reads then).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hyper::{Method, StatusCode};
use nimbus_core::ids::VersionId;
use nimbus_core::index::{IndexEntry, IndexRecord, decode_records, shard_of};
use nimbus_ring::map::{ClusterMap, DeviceKey};
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::error::DataError;
use crate::node_client::{NodeClient, SmallAnswer, SmallCall, encode_query};
use crate::placement::Place;

/// How long one call to a replica may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write or read keeps retrying while the map catches up with a dead primary
/// (the metadata leader marks a silent device down after its liveness timeout).
const RETRY_DEADLINE: Duration = Duration::from_secs(30);
/// How long a read keeps trying to reach a majority: replicas that refuse connections are
/// down, and a newer map does not bring them back.
const READ_DEADLINE: Duration = Duration::from_secs(3);
/// How long a majority read waits for its first replicas before asking the others too.
const HEDGE: Duration = Duration::from_millis(50);
/// How long to wait for a newer map before retrying anyway.
const MAP_WAIT: Duration = Duration::from_millis(500);
/// The header of a primary write's condition (storage node's `api::PRECONDITION`).
const PRECONDITION: &str = "x-nimbus-precondition";
/// The header naming a shard's replicas on requests to its primary, which peers with them
/// first in each new epoch (storage node's `api::peering::REPLICAS`).
const REPLICAS: &str = "x-nimbus-replicas";

/// The header of a read that the primary may answer alone under its lease (storage node's
/// `api::LEASE_READ`).
const LEASE_READ: &str = "x-nimbus-lease-read";
/// The header of an answer given under the lease (storage node's `api::LEASED`).
const LEASED: &str = "x-nimbus-leased";

/// The header naming, during a transition of the index ring, the shard's replicas in each
/// ring a rebalance replaced (storage node's `api::peering::PREVIOUS_REPLICAS`).
const PREVIOUS_REPLICAS: &str = "x-nimbus-previous-replicas";

/// Devices as the replica headers name them.
fn device_list(set: &[(DeviceKey, bool)]) -> String {
    set.iter()
        .map(|(d, _)| format!("{}/{}", d.node, d.device))
        .collect::<Vec<_>>()
        .join(",")
}

/// Names a shard's replicas to the device asked to act as its primary, which peers with
/// them first: every slot device in slot order and, during a transition, every previous set.
fn with_replicas<'a>(call: SmallCall<'a>, place: &Place) -> SmallCall<'a> {
    let call = call.header(REPLICAS, device_list(&place.slots));
    if place.previous.is_empty() {
        return call;
    }
    let previous = place
        .previous
        .iter()
        .map(|set| device_list(set))
        .collect::<Vec<_>>()
        .join(";");
    call.header(PREVIOUS_REPLICAS, previous)
}

/// A write's condition, checked by the shard's primary atomically with the write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// None.
    None,
    /// No live entry (`If-None-Match: *`).
    IfNoneMatch,
    /// A live entry with this ETag (`If-Match`).
    IfMatch(String),
    /// An entry of exactly this version: rewrites of an object's metadata (tagging, Swift
    /// POST) that must not undo a newer PUT or DELETE.
    IfVersion(VersionId),
}

impl Condition {
    fn header(&self) -> String {
        match self {
            Condition::None => "none".to_owned(),
            Condition::IfNoneMatch => "if-none-match".to_owned(),
            Condition::IfMatch(etag) => format!("if-match {etag}"),
            Condition::IfVersion(version) => format!("if-version {version}"),
        }
    }
}

/// A shard of a container.
#[derive(Clone, Debug)]
pub struct Shard<'a> {
    /// The account.
    pub account: &'a str,
    /// The container.
    pub container: &'a str,
    /// The shard number.
    pub shard: u16,
}

impl Shard<'_> {
    /// The name the index ring places the shard by.
    #[must_use]
    pub fn name(&self) -> String {
        format!("{}/{}/{}", self.account, self.container, self.shard)
    }

    fn path(&self, device: &DeviceKey, rest: &str) -> String {
        format!(
            "/v1/index/{}/{}/{}/{}{rest}",
            encode_query(&device.device),
            encode_query(self.account),
            encode_query(self.container),
            self.shard
        )
    }
}

/// Returns the index policy's name.
///
/// # Errors
/// [`DataError::Unavailable`] when the map names none.
pub fn index_policy(map: &ClusterMap) -> Result<&str, DataError> {
    map.index_policy()
        .ok_or_else(|| DataError::Unavailable("the cluster map names no index policy".into()))
}

/// Reads and writes index entries. Cheap to clone.
#[derive(Clone, Debug)]
pub struct IndexClient {
    nodes: NodeClient,
    cluster: Cluster,
    /// Whether reads ask the shard's primary alone first, for an answer under its lease.
    leased_reads: bool,
}

impl IndexClient {
    /// Returns a client over `nodes`, placing shards by `cluster`'s newest map; with
    /// `leased_reads`, reads ask a shard's primary alone first.
    #[must_use]
    pub fn new(nodes: NodeClient, cluster: Cluster, leased_reads: bool) -> Self {
        IndexClient {
            nodes,
            cluster,
            leased_reads,
        }
    }

    fn place(map: &ClusterMap, shard: &Shard<'_>) -> Result<Place, DataError> {
        Place::of_shard(map, index_policy(map)?, &shard.name())
    }

    /// Returns the shard of `key` in a container of `shards` shards.
    #[must_use]
    pub fn shard_of<'a>(account: &'a str, container: &'a str, key: &str, shards: u16) -> Shard<'a> {
        Shard {
            account,
            container,
            shard: shard_of(key, shards),
        }
    }

    /// Writes `entry` for `key` under `condition`; returns its sequence number once a
    /// majority of the shard's replicas hold it durably.
    ///
    /// # Errors
    /// [`DataError::PreconditionFailed`], or [`DataError::Unavailable`] when no primary or
    /// too few replicas answered before the deadline.
    pub async fn write(
        &self,
        shard: &Shard<'_>,
        key: &str,
        entry: &IndexEntry,
        condition: &Condition,
    ) -> Result<u64, DataError> {
        let body = Bytes::from(entry.encode());
        let query = format!("?key={}", encode_query(key));
        let started = Instant::now();
        let mut last = String::from("no primary");
        loop {
            let map = self.cluster.map();
            let place = Self::place(&map, shard)?;
            if let Some((primary, _)) = place.slots.iter().find(|(_, up)| *up) {
                let answer = self
                    .nodes
                    .call(
                        primary,
                        with_replicas(
                            SmallCall::new(
                                Method::PUT,
                                shard.path(primary, &query),
                                place.epoch,
                                CALL_TIMEOUT,
                            )
                            .header(PRECONDITION, condition.header()),
                            &place,
                        )
                        .body(body.clone()),
                    )
                    .await;
                match answer {
                    Ok(a) if a.status == StatusCode::OK => {
                        let seq = parse_seq(&a)?;
                        let primary = primary.clone();
                        self.replicate_until_majority(shard, &primary, key, seq, &body, started)
                            .await?;
                        return Ok(seq);
                    }
                    Ok(a) if a.status == StatusCode::PRECONDITION_FAILED => {
                        // A retry of a write that did land (its answer was lost with a
                        // primary that died) finds itself: that is success, not a conflict.
                        return match current_of(&a) {
                            Some((seq, version)) if version == entry.version.to_string() => Ok(seq),
                            _ => Err(DataError::PreconditionFailed),
                        };
                    }
                    Ok(a) if a.status == StatusCode::BAD_REQUEST => {
                        return Err(DataError::BadRequest(answer_text(&a)));
                    }
                    Ok(a) => last = format!("{}: {} {}", primary.node, a.status, answer_text(&a)),
                    Err(e) => last = e.to_string(),
                }
            }
            if started.elapsed() > RETRY_DEADLINE {
                return Err(DataError::Unavailable(format!(
                    "index shard {}: {last}",
                    shard.name()
                )));
            }
            self.cluster.newer_than(map.version(), MAP_WAIT).await;
        }
    }

    /// Copies the primary's record to the other replicas until a majority holds it, with the
    /// newest map at each attempt: replicas that saw a newer ring epoch (a device marked down
    /// while the write was under way) refuse copies sent under the older one.
    ///
    /// # Errors
    /// [`DataError::Unavailable`] when no majority held it before the write's deadline.
    async fn replicate_until_majority(
        &self,
        shard: &Shard<'_>,
        primary: &DeviceKey,
        key: &str,
        seq: u64,
        body: &Bytes,
        started: Instant,
    ) -> Result<(), DataError> {
        loop {
            let map = self.cluster.map();
            let place = Self::place(&map, shard)?;
            match self.replicate(&place, shard, primary, key, seq, body).await {
                Ok(()) => return Ok(()),
                Err(e) if started.elapsed() > RETRY_DEADLINE => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "index write short of a majority; trying again");
                    self.cluster.newer_than(map.version(), MAP_WAIT).await;
                }
            }
        }
    }

    /// Copies the primary's record to the other replicas; returns once a majority of all
    /// `r` (the primary included) hold it, and, during a transition of the index ring, a
    /// majority of each previous set too. The copies still under way go on in the
    /// background.
    async fn replicate(
        &self,
        place: &Place,
        shard: &Shard<'_>,
        primary: &DeviceKey,
        key: &str,
        seq: u64,
        body: &Bytes,
    ) -> Result<(), DataError> {
        let mut held: Vec<DeviceKey> = vec![primary.clone()];
        if place.majorities(|d| held.contains(d)) {
            return Ok(());
        }
        let query = format!("/replicated?key={}&seq={seq}", encode_query(key));
        let replicas = place.replicas();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<DeviceKey>>(replicas.len());
        let mut sent = 0usize;
        for (device, up) in replicas {
            if device == primary || !*up {
                continue;
            }
            sent += 1;
            let nodes = self.nodes.clone();
            let device = device.clone();
            let path = shard.path(&device, &query);
            let body = body.clone();
            let epoch = place.epoch;
            let tx = tx.clone();
            tokio::spawn(async move {
                let ok = matches!(
                    nodes
                        .call(&device, SmallCall::new(Method::PUT, path, epoch, CALL_TIMEOUT).body(body))
                        .await,
                    Ok(a) if a.status == StatusCode::OK
                );
                let _ = tx.send(ok.then_some(device)).await;
            });
        }
        drop(tx);
        let mut answered = 0usize;
        while let Some(ok) = rx.recv().await {
            answered += 1;
            held.extend(ok);
            if place.majorities(|d| held.contains(d)) {
                return Ok(());
            }
            if answered == sent {
                break;
            }
        }
        Err(DataError::Unavailable(format!(
            "index shard {}: the write reached {} of {} replicas, short of a majority{}",
            shard.name(),
            held.len(),
            place.slots.len(),
            if place.previous.is_empty() {
                ""
            } else {
                " of the current and previous rings"
            }
        )))
    }

    /// Reads `key`'s newest record (tombstones included) from a majority of the shard's
    /// replicas.
    ///
    /// # Errors
    /// [`DataError::Unavailable`] when fewer than a majority answered before the deadline.
    pub async fn read(
        &self,
        shard: &Shard<'_>,
        key: &str,
    ) -> Result<Option<IndexRecord>, DataError> {
        self.read_from(shard, key, false).await
    }

    /// Reads `key`'s newest record from *every* replica of the shard: the collector's
    /// question. A write that was never acknowledged may have left its record on a single
    /// replica, which read repair or anti-entropy may later copy to all; a majority read can
    /// miss it, this one cannot.
    ///
    /// # Errors
    /// [`DataError::Unavailable`] when a replica did not answer before the deadline.
    pub async fn read_every_replica(
        &self,
        shard: &Shard<'_>,
        key: &str,
    ) -> Result<Option<IndexRecord>, DataError> {
        self.read_from(shard, key, true).await
    }

    async fn read_from(
        &self,
        shard: &Shard<'_>,
        key: &str,
        every_replica: bool,
    ) -> Result<Option<IndexRecord>, DataError> {
        let query = format!("?key={}", encode_query(key));
        let started = Instant::now();
        loop {
            let map = self.cluster.map();
            let place = Self::place(&map, shard)?;
            let replicas = place.replicas();
            let enough = |held: &[(&DeviceKey, u64)]| {
                let answered = |d: &DeviceKey| held.iter().any(|(h, _)| *h == d);
                if every_replica {
                    replicas.iter().all(|(d, _)| answered(d))
                } else {
                    place.majorities(answered)
                }
            };
            // Every replica may be asked, those the map has down too: a device marked down
            // may well answer (a late heartbeat), and any majority of the `r` meets every
            // write's (of each ring, during a transition). A plain majority read asks a
            // majority first, those the map has up first, and another replica for each that
            // fails; all the rest once the first have taken longer than `HEDGE`. A leased
            // read asks the primary alone first: under its lease its answer is enough;
            // without, it counts as one of the majority.
            let mut order: VecDeque<&DeviceKey> = replicas
                .iter()
                .filter(|(_, up)| *up)
                .chain(replicas.iter().filter(|(_, up)| !*up))
                .map(|(d, _)| d)
                .collect();
            let all = every_replica || !place.previous.is_empty();
            let primary = place.slots.iter().find(|(_, up)| *up).map(|(d, _)| d);
            let leased = self.leased_reads && !all && primary.is_some();
            let want = if all {
                order.len()
            } else {
                place.slots.len() / 2 + 1
            };
            let ask = |device| {
                let path = shard.path(device, &query);
                let nodes = &self.nodes;
                let mut call = SmallCall::new(Method::GET, path, place.epoch, CALL_TIMEOUT);
                if leased && primary == Some(device) {
                    call = with_replicas(call.header(LEASE_READ, "1".to_owned()), &place);
                }
                async move { (device, nodes.call(device, call).await) }
            };
            let mut calls: FuturesUnordered<_> = order
                .drain(..(if leased { 1 } else { want }).min(order.len()))
                .map(ask)
                .collect();
            let hedge = tokio::time::sleep(HEDGE);
            tokio::pin!(hedge);
            // The sequence number each answering replica holds for the key (0: none).
            let mut held: Vec<(&DeviceKey, u64)> = Vec::new();
            let mut newest: Option<IndexRecord> = None;
            let mut last = String::from("no replica up");
            loop {
                let (device, answer) = tokio::select! {
                    next = calls.next() => match next {
                        Some(next) => next,
                        None => break,
                    },
                    () = &mut hedge, if !order.is_empty() => {
                        calls.extend(order.drain(..).map(ask));
                        continue;
                    }
                };
                match answer {
                    Ok(a) if a.status == StatusCode::OK || a.status == StatusCode::NOT_FOUND => {
                        let mut seq = 0;
                        if a.status == StatusCode::OK {
                            let records = decode_records(&a.body)
                                .map_err(|e| DataError::Internal(format!("index answer: {e}")))?;
                            for r in records {
                                seq = seq.max(r.seq);
                                if newest.as_ref().is_none_or(|n| r.seq > n.seq) {
                                    newest = Some(r);
                                }
                            }
                        }
                        if leased && a.headers.contains_key(LEASED) && primary == Some(device) {
                            return Ok(newest);
                        }
                        held.push((device, seq));
                    }
                    Ok(a) => last = format!("{} {}", a.status, answer_text(&a)),
                    Err(e) => last = e.to_string(),
                }
                // Keep enough calls under way to make up a majority.
                while held.len() + calls.len() < want
                    && let Some(next) = order.pop_front()
                {
                    calls.push(ask(next));
                }
                if enough(&held) {
                    if let Some(n) = &newest {
                        self.repair(&place, shard, n, &held);
                    }
                    return Ok(newest);
                }
            }
            let answers = held.len();
            if started.elapsed() > READ_DEADLINE {
                return Err(DataError::Unavailable(format!(
                    "index shard {}: {answers} of {} replicas answered, short of {} ({last})",
                    shard.name(),
                    replicas.len(),
                    if every_replica { "all" } else { "a majority" }
                )));
            }
            self.cluster.newer_than(map.version(), MAP_WAIT).await;
        }
    }

    /// Read repair: copies `newest` to the replicas among those that answered a read which
    /// hold an older record of its key, or none, in the background. Once a read has returned
    /// a record, any later read's majority then finds it, even if the write that made it was
    /// never acknowledged (its primary kept it alone) and that primary is gone.
    fn repair(
        &self,
        place: &Place,
        shard: &Shard<'_>,
        newest: &IndexRecord,
        held: &[(&DeviceKey, u64)],
    ) {
        let stale: Vec<DeviceKey> = held
            .iter()
            .filter(|(_, seq)| *seq < newest.seq)
            .map(|(device, _)| (*device).clone())
            .collect();
        if stale.is_empty() {
            return;
        }
        let query = format!(
            "/replicated?key={}&seq={}",
            encode_query(&newest.key),
            newest.seq
        );
        let body = Bytes::from(newest.entry.encode());
        for device in stale {
            let nodes = self.nodes.clone();
            let path = shard.path(&device, &query);
            let (body, epoch) = (body.clone(), place.epoch);
            tokio::spawn(async move {
                let call = SmallCall::new(Method::PUT, path, epoch, CALL_TIMEOUT).body(body);
                if let Err(e) = nodes.call(&device, call).await {
                    tracing::debug!(node = %device.node, error = %e, "read repair failed");
                }
            });
        }
    }

    /// Lists up to `limit` live records of one shard with keys after `start_after` that
    /// start with `prefix`, in key order, from its primary (or the next replica up).
    async fn list_shard(
        &self,
        shard: &Shard<'_>,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<IndexRecord>, DataError> {
        let mut query = format!("/list?prefix={}&limit={limit}", encode_query(prefix));
        if let Some(after) = start_after {
            query.push_str(&format!("&start_after={}", encode_query(after)));
        }
        let started = Instant::now();
        loop {
            let map = self.cluster.map();
            let place = Self::place(&map, shard)?;
            let mut last = String::from("no replica up");
            // The primary, peering first; should it fail, the next replica up becomes the
            // one asked (and peers in turn).
            // Replicas the map has up first, then the others (a device marked down may
            // still answer).
            let ordered = place
                .slots
                .iter()
                .filter(|(_, up)| *up)
                .chain(place.slots.iter().filter(|(_, up)| !*up));
            for (device, _) in ordered {
                let path = shard.path(device, &query);
                match self
                    .nodes
                    .call(
                        device,
                        with_replicas(
                            SmallCall::new(Method::GET, path, place.epoch, CALL_TIMEOUT),
                            &place,
                        ),
                    )
                    .await
                {
                    Ok(a) if a.status == StatusCode::OK => {
                        return decode_records(&a.body)
                            .map_err(|e| DataError::Internal(format!("index answer: {e}")));
                    }
                    Ok(a) => last = format!("{} {}", a.status, answer_text(&a)),
                    Err(e) => last = e.to_string(),
                }
            }
            if started.elapsed() > RETRY_DEADLINE {
                return Err(DataError::Unavailable(format!(
                    "index shard {}: {last}",
                    shard.name()
                )));
            }
            self.cluster.newer_than(map.version(), MAP_WAIT).await;
        }
    }

    /// Lists up to `limit` live records of a container of `shards` shards, merging the
    /// shards in key order.
    ///
    /// # Errors
    /// [`DataError::Unavailable`] when a shard could not be read.
    pub async fn list(
        &self,
        account: &str,
        container: &str,
        shards: u16,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<IndexRecord>, DataError> {
        let this = Arc::new(self.clone());
        let calls = (0..shards.max(1)).map(|shard| {
            let this = Arc::clone(&this);
            async move {
                let shard = Shard {
                    account,
                    container,
                    shard,
                };
                this.list_shard(&shard, prefix, start_after, limit).await
            }
        });
        let pages = futures_util::future::try_join_all(calls).await?;
        Ok(merge(pages, limit))
    }

    /// Tells whether a container has no live entries.
    ///
    /// # Errors
    /// As [`IndexClient::list`].
    pub async fn is_empty(
        &self,
        account: &str,
        container: &str,
        shards: u16,
    ) -> Result<bool, DataError> {
        Ok(self
            .list(account, container, shards, "", None, 1)
            .await?
            .is_empty())
    }
}

/// Merges pages sorted by key into one sorted page of at most `limit`.
fn merge(pages: Vec<Vec<IndexRecord>>, limit: usize) -> Vec<IndexRecord> {
    let mut iters: Vec<_> = pages.into_iter().map(Vec::into_iter).collect();
    let mut heap = BinaryHeap::new();
    let mut heads: Vec<Option<IndexRecord>> = Vec::with_capacity(iters.len());
    for (i, it) in iters.iter_mut().enumerate() {
        let head = it.next();
        if let Some(r) = &head {
            heap.push(Reverse((r.key.clone(), i)));
        }
        heads.push(head);
    }
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(Reverse((_, i))) = heap.pop() else {
            break;
        };
        if let Some(r) = heads[i].take() {
            out.push(r);
        }
        heads[i] = iters[i].next();
        if let Some(r) = &heads[i] {
            heap.push(Reverse((r.key.clone(), i)));
        }
    }
    out
}

fn parse_seq(answer: &SmallAnswer) -> Result<u64, DataError> {
    serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("seq")?.as_u64())
        .ok_or_else(|| DataError::Internal("index write answer without seq".into()))
}

/// The current record's sequence number and version in a 412 answer.
fn current_of(answer: &SmallAnswer) -> Option<(u64, String)> {
    let value: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
    let current = value.get("current")?;
    Some((
        current.get("seq")?.as_u64()?,
        current.get("version")?.as_str()?.to_owned(),
    ))
}

fn answer_text(answer: &SmallAnswer) -> String {
    String::from_utf8_lossy(&answer.body)
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_core::ids::VersionId;

    fn record(key: &str) -> IndexRecord {
        IndexRecord {
            seq: 1,
            key: key.to_owned(),
            entry: IndexEntry::tombstone(VersionId(1), "ec4+2"),
        }
    }

    #[test]
    fn merge_interleaves_shards_in_key_order_up_to_the_limit() {
        let pages = vec![
            vec![record("a"), record("d")],
            vec![],
            vec![record("b"), record("c"), record("e")],
        ];
        let keys: Vec<_> = merge(pages.clone(), 10)
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, ["a", "b", "c", "d", "e"]);
        let keys: Vec<_> = merge(pages, 3).into_iter().map(|r| r.key).collect();
        assert_eq!(keys, ["a", "b", "c"]);
    }
}
