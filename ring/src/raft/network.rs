//! The Raft group's client side over HTTP/1.1: [`PeerClient`] sends signed requests to
//! metadata members (from other members, and from `nimbus admin`), and
//! [`HttpNetworkFactory`] builds openraft's per-target [`RaftNetwork`] clients on it.
//!
//! A Raft RPC is `POST http://{addr}/raft/append|vote|snapshot` with openraft's request as a
//! JSON body; the answer is `200` with openraft's `Result<response, RaftError>` as JSON (see
//! `raft::server`). Every request is signed with the cluster secret exactly as the internal
//! API's are (`nimbus_core::auth`: method, path and query, date in Unix seconds, epoch 0),
//! and names the member it is meant for in [`TARGET_HEADER`], so that a request reaching
//! another member on a reused address is refused instead of acted on.
//!
//! How failures reach openraft:
//!
//! ```text
//! failure                                  openraft sees        openraft then
//! no connection (refused, unroutable)      Unreachable          backs off, retries
//! no answer within the RPC's deadline      Timeout              retries
//! connection broke, unreadable answer      NetworkError         retries at once
//! refused by the peer (401, 403, 421, …)   Unreachable          backs off, retries
//! the peer's Raft answered with an error   RemoteError          acts on it
//! ```
//!
//! **Invariants:**
//! - Every call has a deadline: the RPC's `hard_ttl` from openraft, or the caller's.
//! - Answers are read up to a size limit; nothing a peer sends is trusted before it decodes.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::http::{HeaderValue, Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use nimbus_core::auth::{ClusterSecret, DATE_HEADER, EPOCH_HEADER};
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::debug;

use super::server::LeaderHint;
use super::{MapRaft, NodeId};

/// Header naming the member a Raft RPC is meant for.
pub const TARGET_HEADER: &str = "x-nimbus-raft-target";

/// Paths of the metadata members' HTTP API.
pub mod paths {
    /// Raft AppendEntries.
    pub const APPEND: &str = "/raft/append";
    /// Raft RequestVote.
    pub const VOTE: &str = "/raft/vote";
    /// Raft InstallSnapshot (one chunk).
    pub const SNAPSHOT: &str = "/raft/snapshot";
    /// A client write: a map command, answered once committed.
    pub const WRITE: &str = "/meta/write";
    /// The encoded map.
    pub const MAP: &str = "/meta/map";
    /// Initializes a new group.
    pub const INIT: &str = "/meta/init";
    /// Adds a learner.
    pub const LEARNERS: &str = "/meta/learners";
    /// Removing a learner.
    pub const REMOVE_LEARNER: &str = "/meta/learners/remove";
    /// Sets the voters.
    pub const VOTERS: &str = "/meta/voters";
    /// A member's view of the group and its map.
    pub const STATUS: &str = "/meta/status";
    /// A storage node's heartbeat: the devices it runs (leader only).
    pub const HEARTBEAT: &str = "/meta/heartbeat";
}

/// The largest answer read from a Raft RPC (they are small: a vote, a log id).
pub const MAX_RPC_RESPONSE_BYTES: usize = 1 << 20;

/// How long to wait before retrying a member that could not be reached.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(250);

/// How long an idle pooled connection to a member is kept.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Why a request to a member failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No connection could be made: the request was never sent, so retrying it is safe.
    #[error("connect to metadata member {addr}")]
    Connect {
        /// The member's address.
        addr: String,
        /// What the client reported.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// No complete answer within the deadline: the request may or may not have been acted
    /// on.
    #[error("metadata member {addr} did not answer within {after:?}")]
    Timeout {
        /// The member's address.
        addr: String,
        /// The deadline.
        after: Duration,
    },
    /// The connection failed after the request may have been sent.
    #[error("request to metadata member {addr} failed")]
    Transport {
        /// The member's address.
        addr: String,
        /// What the client reported.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The answer's body could not be read, or was larger than allowed.
    #[error("read the answer of metadata member {addr}: {reason}")]
    Body {
        /// The member's address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The request could not be built (a malformed address).
    #[error("build a request to metadata member {addr}: {reason}")]
    Request {
        /// The member's address.
        addr: String,
        /// What was wrong.
        reason: String,
    },
    /// The request body could not be encoded as JSON.
    #[error("encode a request to metadata member as JSON")]
    Encode {
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },
}

impl PeerError {
    /// Returns whether the request certainly never reached the member (so a retry cannot
    /// apply it twice).
    #[must_use]
    pub fn not_sent(&self) -> bool {
        matches!(
            self,
            PeerError::Connect { .. } | PeerError::Request { .. } | PeerError::Encode { .. }
        )
    }
}

/// A member's answer: its status and body.
#[derive(Debug, Clone)]
pub struct PeerResponse {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body, read in full.
    pub body: Bytes,
}

impl PeerResponse {
    /// Returns the `error` code of an error answer (`{"error": code, "message": …}`).
    #[must_use]
    pub fn error_code(&self) -> Option<String> {
        let value: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        value.get("error")?.as_str().map(str::to_owned)
    }

    /// Returns the `message` of an error answer, or else the start of the body as text.
    #[must_use]
    pub fn error_message(&self) -> String {
        let message = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_owned));
        message.unwrap_or_else(|| {
            String::from_utf8_lossy(&self.body)
                .chars()
                .take(200)
                .collect()
        })
    }

    /// Returns the leader hint of a `421 not_leader` answer (empty when unreadable).
    #[must_use]
    pub fn leader_hint(&self) -> LeaderHint {
        serde_json::from_slice(&self.body).unwrap_or(LeaderHint {
            leader_id: None,
            leader_addr: None,
        })
    }
}

/// One request to a member.
struct PeerCall<'a> {
    method: Method,
    epoch: u64,
    addr: &'a str,
    path_and_query: &'a str,
    body: Bytes,
    target: Option<NodeId>,
    timeout: Duration,
    max_response_bytes: usize,
}

/// Sends signed HTTP/1.1 requests to metadata members over pooled connections. Cheap to
/// clone: clones share the pool.
#[derive(Clone)]
pub struct PeerClient {
    secret: ClusterSecret,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerClient").finish_non_exhaustive()
    }
}

impl PeerClient {
    /// Returns a client signing with `secret`.
    #[must_use]
    pub fn new(secret: ClusterSecret) -> Self {
        let mut connector = HttpConnector::new();
        // Raft messages are small and latency-bound: no Nagle delay.
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        PeerClient { secret, http }
    }

    /// Posts `body` as JSON to `path` of the member at `addr`, naming `target` as the member
    /// meant (see [`TARGET_HEADER`]), and reads an answer of up to `max_response_bytes`.
    ///
    /// # Errors
    /// [`PeerError`]; [`PeerError::not_sent`] tells whether a retry is safe.
    pub async fn post_json<T: Serialize>(
        &self,
        addr: &str,
        path: &str,
        body: &T,
        target: Option<NodeId>,
        timeout: Duration,
        max_response_bytes: usize,
    ) -> Result<PeerResponse, PeerError> {
        let body = serde_json::to_vec(body).map_err(|source| PeerError::Encode { source })?;
        self.send(PeerCall {
            method: Method::POST,
            addr,
            path_and_query: path,
            body: Bytes::from(body),
            epoch: 0,
            target,
            timeout,
            max_response_bytes,
        })
        .await
    }

    /// Sends `GET path_and_query` to the member at `addr` and reads an answer of up to
    /// `max_response_bytes`.
    ///
    /// # Errors
    /// [`PeerError`].
    pub async fn get(
        &self,
        addr: &str,
        path_and_query: &str,
        timeout: Duration,
        max_response_bytes: usize,
    ) -> Result<PeerResponse, PeerError> {
        self.send(PeerCall {
            method: Method::GET,
            addr,
            path_and_query,
            body: Bytes::new(),
            epoch: 0,
            target: None,
            timeout,
            max_response_bytes,
        })
        .await
    }

    /// Sends `method path_and_query` with a binary `body`, signed for ring epoch `epoch`
    /// (storage nodes refuse requests from epochs older than they have seen), and reads an
    /// answer of up to `max_response_bytes`.
    ///
    /// # Errors
    /// [`PeerError`]; [`PeerError::not_sent`] tells whether a retry is safe.
    #[allow(clippy::too_many_arguments)] // one call, spelled out
    pub async fn send_bytes(
        &self,
        method: Method,
        addr: &str,
        path_and_query: &str,
        epoch: u64,
        body: Bytes,
        timeout: Duration,
        max_response_bytes: usize,
    ) -> Result<PeerResponse, PeerError> {
        self.send(PeerCall {
            method,
            addr,
            path_and_query,
            body,
            epoch,
            target: None,
            timeout,
            max_response_bytes,
        })
        .await
    }

    async fn send(&self, call: PeerCall<'_>) -> Result<PeerResponse, PeerError> {
        let addr = call.addr;
        let request = self.build(&call)?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|source| {
                if source.is_connect() {
                    PeerError::Connect {
                        addr: addr.to_owned(),
                        source,
                    }
                } else {
                    PeerError::Transport {
                        addr: addr.to_owned(),
                        source,
                    }
                }
            })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), call.max_response_bytes)
                .collect()
                .await
                .map_err(|e| PeerError::Body {
                    addr: addr.to_owned(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            Ok(PeerResponse { status, body })
        };
        tokio::time::timeout(call.timeout, exchange)
            .await
            .map_err(|_| PeerError::Timeout {
                addr: addr.to_owned(),
                after: call.timeout,
            })?
    }

    fn build(&self, call: &PeerCall<'_>) -> Result<Request<Full<Bytes>>, PeerError> {
        let bad = |reason: String| PeerError::Request {
            addr: call.addr.to_owned(),
            reason,
        };
        let date = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let authorization =
            self.secret
                .sign(call.method.as_str(), call.path_and_query, date, call.epoch);
        let mut builder = Request::builder()
            .method(call.method.clone())
            .uri(format!("http://{}{}", call.addr, call.path_and_query))
            .header(DATE_HEADER, date)
            .header(EPOCH_HEADER, call.epoch)
            .header("authorization", authorization);
        if !call.body.is_empty() {
            builder = builder.header("content-type", HeaderValue::from_static("application/json"));
        }
        if let Some(target) = call.target {
            builder = builder.header(TARGET_HEADER, target);
        }
        builder
            .body(Full::new(call.body.clone()))
            .map_err(|e| bad(e.to_string()))
    }
}

/// Builds openraft's clients to the other members, addressed by their [`BasicNode::addr`].
#[derive(Debug, Clone)]
pub struct HttpNetworkFactory {
    id: NodeId,
    client: PeerClient,
}

impl HttpNetworkFactory {
    /// Returns the factory of member `id`, sending with `client`.
    #[must_use]
    pub fn new(id: NodeId, client: PeerClient) -> Self {
        HttpNetworkFactory { id, client }
    }
}

impl RaftNetworkFactory<MapRaft> for HttpNetworkFactory {
    type Network = HttpPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> HttpPeer {
        HttpPeer {
            source: self.id,
            target,
            node: node.clone(),
            client: self.client.clone(),
        }
    }
}

/// Openraft's client to one member (connections come from the shared pool).
#[derive(Debug)]
pub struct HttpPeer {
    source: NodeId,
    target: NodeId,
    node: BasicNode,
    client: PeerClient,
}

/// A member refused a Raft RPC at the HTTP level (authentication, wrong target).
#[derive(Debug, thiserror::Error)]
#[error("metadata member {addr} refused a raft request with status {status}: {body}")]
struct Refused {
    addr: String,
    status: StatusCode,
    body: String,
}

impl HttpPeer {
    async fn rpc<Req, Resp, E>(
        &self,
        action: RPCTypes,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let timeout = option.hard_ttl();
        let answer = self
            .client
            .post_json(
                &self.node.addr,
                path,
                request,
                Some(self.target),
                timeout,
                MAX_RPC_RESPONSE_BYTES,
            )
            .await
            .map_err(|e| {
                debug!(target_id = self.target, error = %e, "raft rpc failed");
                match e {
                    PeerError::Timeout { .. } => RPCError::Timeout(Timeout {
                        action,
                        id: self.source,
                        target: self.target,
                        timeout,
                    }),
                    PeerError::Connect { .. } | PeerError::Request { .. } => {
                        RPCError::Unreachable(Unreachable::new(&e))
                    }
                    PeerError::Transport { .. }
                    | PeerError::Body { .. }
                    | PeerError::Encode { .. } => RPCError::Network(NetworkError::new(&e)),
                }
            })?;
        if answer.status != StatusCode::OK {
            let refused = Refused {
                addr: self.node.addr.clone(),
                status: answer.status,
                body: String::from_utf8_lossy(&answer.body)
                    .chars()
                    .take(200)
                    .collect(),
            };
            debug!(target_id = self.target, error = %refused, "raft rpc refused");
            return Err(RPCError::Unreachable(Unreachable::new(&refused)));
        }
        let result: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&answer.body)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<MapRaft> for HttpPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<MapRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(RPCTypes::AppendEntries, paths::APPEND, &rpc, &option)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<MapRaft>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(RPCTypes::InstallSnapshot, paths::SNAPSHOT, &rpc, &option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(RPCTypes::Vote, paths::VOTE, &rpc, &option).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }
}
