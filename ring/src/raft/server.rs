//! A metadata member's HTTP API: the Raft RPCs its peers send, client writes, and reads of
//! the map. Every route is authenticated with the cluster secret (`nimbus_core::auth`,
//! the internal API's scheme): missing credentials get 401, wrong ones 403, and either way
//! no handler runs.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | POST | `/raft/append` | openraft `AppendEntriesRequest`, JSON | 200, `Result<AppendEntriesResponse, RaftError>` JSON |
//! | POST | `/raft/vote` | openraft `VoteRequest`, JSON | 200, `Result<VoteResponse, RaftError>` JSON |
//! | POST | `/raft/snapshot` | openraft `InstallSnapshotRequest` (one chunk), JSON | 200, `Result<InstallSnapshotResponse, RaftError>` JSON |
//! | POST | `/meta/write` | a [`MapCommand`], JSON | 200 once committed, the [`MapResponse`] JSON (`{"Ok":…}` or `{"Err":…}`: a command the map refused is committed and answered too) |
//! | GET | `/meta/map[?linearizable=true]` | — | 200, [`ClusterMap::encode`] bytes, with [`VERSION_HEADER`] |
//! | GET | `/meta/map?since=V[&wait_ms=N][&linearizable=true]` | — | a watch: 200 and the map as above once this member's map is newer than version `V` (at once if it already is), waiting up to `N` ms (default 0, at most [`MAX_WATCH_WAIT`]); else 304 with [`VERSION_HEADER`] and no body |
//! | POST | `/meta/heartbeat` | [`HeartbeatRequest`] JSON: `{"node": "10.0.0.7:6200", "devices": ["sdb", "sdc"]}` | 200, [`HeartbeatResponse`] JSON, once the leader recorded it (leader only; the time is the leader's) |
//! | POST | `/meta/init` | [`InitRequest`] JSON: `{"members": {"1": "10.0.0.1:7001", …}}` | 200, the [`MembershipView`] JSON, once this member is initialized |
//! | POST | `/meta/learners` | [`AddLearnerRequest`] JSON: `{"id": 4, "addr": …}` | 200, the [`MembershipView`] JSON, once committed (leader only) |
//! | POST | `/meta/learners/remove` | [`RemoveLearnerRequest`] JSON: `{"id": 4}` | 200, the [`MembershipView`] JSON, once the learner is removed (leader only; 409 for a voter or an unknown member) |
//! | POST | `/meta/voters` | [`VotersRequest`] JSON: `{"voters": [1, 2, 3]}` | 200, the [`MembershipView`] JSON, once committed (leader only) |
//! | GET | `/meta/status` | — | 200, this member's [`MemberStatus`] JSON |
//!
//! Other answers, each with a JSON body `{"error": code, "message": …}`; a membership
//! change is refused before anything is proposed with 400 or 409:
//!
//! ```text
//! 400 bad_request     the body or query does not parse (or `wait_ms` without `since`, or
//!                     a heartbeat naming too many devices or a malformed name)
//! 400 no_voters       /meta/init or /meta/voters named no member
//! 400 bad_address     a member address is not host:port
//! 400 not_in_members  /meta/init reached a member that is not among those named
//! 409 already_initialized  /meta/init on a member that is in a group already
//! 409 member_exists   /meta/learners named a member that is in the group at another address
//! 409 unknown_member  /meta/voters named a member that is not in the group (add a learner)
//! 409 would_lose_quorum    /meta/voters named voters whose majority is not caught up
//! 409 membership_change_refused  Raft refused the change (another one is in progress)
//! 401 unauthenticated a credential header is missing
//! 403 forbidden       malformed credentials, a bad signature, or a date too far off
//! 421 not_leader      /meta/write, /meta/learners, /meta/voters, /meta/heartbeat or a
//!                     linearizable read reached a member that is not the leader; the
//!                     body adds "leader_id" and "leader_addr" so the caller resends
//!                     there. Members do not forward: one hop, no loops.
//! 421 wrong_member    a Raft RPC named another member in x-nimbus-raft-target
//! 503 no_leader       no leader is known yet (nothing was proposed; retry)
//! 503 unavailable     no quorum answered, or the member stopped (a write may be applied;
//!                     a watch ends with it when its member stops)
//! 504 timeout         a write or membership change was not committed in time; it may
//!                     still be
//! 500 internal        Raft failed on this member (details in its log)
//! ```
//!
//! A watch holds its request open for at most [`MAX_WATCH_WAIT`], and at most
//! [`MAX_WATCHERS`] watches wait at once per member; beyond that a watch is answered at once,
//! as with `wait_ms=0`. A watcher's client timeout must exceed its `wait_ms`.
//!
//! **Boundary:** this is the wire contract between metadata members, and with the
//! storage nodes and proxies that write to and read the map.

mod heartbeat;
mod membership;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nimbus_core::auth::{
    ClusterSecret, DATE_HEADER, EPOCH_HEADER, RequestAuthError, RequestCredentials,
};
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{BasicNode, Raft};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{Semaphore, watch};

use super::group::{Membership, MembershipError};
use super::liveness::Liveness;
use super::network::{TARGET_HEADER, paths};
use super::state_machine::MapReader;
use super::{MapRaft, NodeId};
use crate::map::{ClusterMap, MapCommand};

pub use heartbeat::{HeartbeatRequest, HeartbeatResponse, MAX_HEARTBEAT_DEVICES};
pub use membership::{AddLearnerRequest, InitRequest, RemoveLearnerRequest, VotersRequest};

#[cfg(doc)]
use super::MapResponse;
#[cfg(doc)]
use super::group::{MemberStatus, MembershipView};

/// Header of `GET /meta/map` answers: the map's [`ClusterMap::version`].
pub const VERSION_HEADER: &str = "x-nimbus-map-version";

/// The largest Raft RPC body accepted: a snapshot chunk (at most
/// [`super::group::SNAPSHOT_CHUNK_BYTES`]) is JSON, up to 4 bytes per byte.
pub const MAX_RAFT_BODY_BYTES: usize = 16 << 20;

/// The largest `/meta/write` body accepted.
pub const MAX_WRITE_BODY_BYTES: usize = 1 << 20;

/// The longest a watch (`GET /meta/map?since=…&wait_ms=…`) waits for a newer map; a
/// longer `wait_ms` is cut to it.
pub const MAX_WATCH_WAIT: Duration = Duration::from_secs(30);

/// The most watches that wait at once on one member.
pub const MAX_WATCHERS: usize = 4096;

/// The error code of a 503 answer to a request that was refused before anything was
/// proposed, because no leader is known yet (an election is under way): safe to retry.
pub const NO_LEADER: &str = "no_leader";

/// Where the leader is, as a member that is not the leader knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    /// The leader's id, when known.
    pub leader_id: Option<NodeId>,
    /// The leader's address, when known.
    pub leader_addr: Option<String>,
}

impl From<ForwardToLeader<NodeId, BasicNode>> for LeaderHint {
    fn from(f: ForwardToLeader<NodeId, BasicNode>) -> Self {
        LeaderHint {
            leader_id: f.leader_id,
            leader_addr: f.leader_node.map(|n| n.addr),
        }
    }
}

/// What every handler shares.
pub struct ServerState {
    /// This member's id.
    pub id: NodeId,
    /// Its Raft node.
    pub raft: Raft<MapRaft>,
    /// Its applied map.
    pub reader: MapReader,
    /// Its membership operations.
    pub membership: Membership,
    /// The cluster secret requests are checked with.
    pub secret: ClusterSecret,
    /// How long a write or a linearizable read may wait for Raft.
    pub request_timeout: Duration,
    /// The liveness duty that heartbeats are recorded by.
    pub liveness: Arc<Liveness>,
    /// Turns `true` when the member stops: waiting watches end at once.
    pub stopping: watch::Receiver<bool>,
    /// Permits of the watches that may wait at once ([`MAX_WATCHERS`]).
    pub watchers: Semaphore,
    /// The newest placement epoch a heartbeat answer named, and when this member first
    /// named it (the epoch was applied here by then).
    pub epoch_seen: std::sync::Mutex<Option<(u64, std::time::Instant)>>,
}

impl ServerState {
    /// Returns how long, at least, this member has had `epoch` applied, as of `now`, in
    /// milliseconds: the time since a heartbeat answer first named it (0 the first time).
    fn epoch_age(&self, epoch: u64, now: std::time::Instant) -> u64 {
        let mut seen = self
            .epoch_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *seen {
            Some((e, since)) if e == epoch => {
                u64::try_from(now.saturating_duration_since(since).as_millis()).unwrap_or(u64::MAX)
            }
            _ => {
                *seen = Some((epoch, now));
                0
            }
        }
    }
}

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Returns the member's router (see the module documentation).
pub fn router(state: Arc<ServerState>) -> Router {
    let raft = Router::new()
        .route(paths::APPEND, post(append))
        .route(paths::VOTE, post(vote))
        .route(paths::SNAPSHOT, post(snapshot))
        .layer(DefaultBodyLimit::max(MAX_RAFT_BODY_BYTES));
    let meta = Router::new()
        .route(paths::WRITE, post(write))
        .route(paths::MAP, get(map))
        .route(paths::INIT, post(membership::init))
        .route(paths::LEARNERS, post(membership::add_learner))
        .route(paths::REMOVE_LEARNER, post(membership::remove_learner))
        .route(paths::VOTERS, post(membership::voters))
        .route(paths::STATUS, get(membership::status))
        .route(paths::HEARTBEAT, post(heartbeat::heartbeat))
        .layer(DefaultBodyLimit::max(MAX_WRITE_BODY_BYTES));
    raft.merge(meta)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            authenticate,
        ))
        .with_state(state)
}

/// Every error the API answers, mapped to a status in [`IntoResponse`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No credentials.
    #[error("authentication required")]
    Unauthenticated,
    /// Credentials that do not verify.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A body or query that does not parse.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A Raft RPC meant for another member.
    #[error("this is member {this}, not member {meant}")]
    WrongMember {
        /// This member.
        this: NodeId,
        /// The member the sender meant.
        meant: String,
    },
    /// Not the leader; it may be known.
    #[error("not the leader")]
    NotLeader(LeaderHint),
    /// No leader known, no quorum, or Raft stopped.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A write not committed within the deadline; it may still be.
    #[error("not committed within {0:?}; the write may still be applied")]
    Timeout(Duration),
    /// A membership operation was refused or failed (never
    /// [`MembershipError::NotLeader`]: that one is [`ApiError::NotLeader`]).
    #[error("{0}")]
    Membership(MembershipError),
    /// Raft failed on this member.
    #[error("raft: {0}")]
    Internal(String),
}

impl From<MembershipError> for ApiError {
    fn from(e: MembershipError) -> Self {
        match e {
            MembershipError::NotLeader(hint) => ApiError::NotLeader(hint),
            other => ApiError::Membership(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::WrongMember { .. } => (StatusCode::MISDIRECTED_REQUEST, "wrong_member"),
            ApiError::NotLeader(hint) if hint.leader_addr.is_some() => {
                (StatusCode::MISDIRECTED_REQUEST, "not_leader")
            }
            ApiError::NotLeader(_) => (StatusCode::SERVICE_UNAVAILABLE, NO_LEADER),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ApiError::Membership(e) => match e {
                MembershipError::NoVoters => (StatusCode::BAD_REQUEST, "no_voters"),
                MembershipError::BadAddress { .. } => (StatusCode::BAD_REQUEST, "bad_address"),
                MembershipError::NotInMembers { .. } => (StatusCode::BAD_REQUEST, "not_in_members"),
                MembershipError::AlreadyInitialized => {
                    (StatusCode::CONFLICT, "already_initialized")
                }
                MembershipError::MemberExists { .. } => (StatusCode::CONFLICT, "member_exists"),
                MembershipError::UnknownMember(_) => (StatusCode::CONFLICT, "unknown_member"),
                MembershipError::WouldLoseQuorum { .. } => {
                    (StatusCode::CONFLICT, "would_lose_quorum")
                }
                MembershipError::NotCaughtUp { .. } => (StatusCode::CONFLICT, "not_caught_up"),
                MembershipError::Refused(_) => (StatusCode::CONFLICT, "membership_change_refused"),
                MembershipError::NotLeader(_) => (StatusCode::MISDIRECTED_REQUEST, "not_leader"),
                MembershipError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                MembershipError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                MembershipError::Raft(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            },
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "metadata API request failed");
            "internal error; see the member's log".to_owned()
        } else {
            tracing::debug!(error = %self, "metadata API request refused");
            self.to_string()
        };
        let mut body = json!({ "error": code, "message": message });
        if let ApiError::NotLeader(hint) = &self {
            body["leader_id"] = json!(hint.leader_id);
            body["leader_addr"] = json!(hint.leader_addr);
        }
        (status, axum::Json(body)).into_response()
    }
}

async fn authenticate(
    State(state): State<Arc<ServerState>>,
    request: Request,
    next: Next,
) -> Response {
    match check_signature(&state.secret, &request) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

fn check_signature(secret: &ClusterSecret, request: &Request) -> Result<(), ApiError> {
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let credentials = RequestCredentials {
        authorization: header(header::AUTHORIZATION.as_str()),
        date: header(DATE_HEADER),
        epoch: header(EPOCH_HEADER),
    };
    let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    secret
        .check_request(credentials, request.method().as_str(), path_and_query, now)
        .map(|_epoch| ())
        .map_err(|e| match e {
            RequestAuthError::Missing => ApiError::Unauthenticated,
            RequestAuthError::Forbidden(why) => ApiError::Forbidden(why),
        })
}

/// Parses a JSON body, or refuses it with 400.
fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Refuses a Raft RPC that names another member than this one.
fn check_target(state: &ServerState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(meant) = headers.get(TARGET_HEADER) else {
        return Ok(());
    };
    let meant = meant.to_str().unwrap_or("?");
    if meant.parse::<NodeId>() == Ok(state.id) {
        Ok(())
    } else {
        Err(ApiError::WrongMember {
            this: state.id,
            meant: meant.to_owned(),
        })
    }
}

async fn append(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_target(&state, &headers)?;
    let rpc = parse_json(&body)?;
    Ok(axum::Json(state.raft.append_entries(rpc).await).into_response())
}

async fn vote(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_target(&state, &headers)?;
    let rpc = parse_json(&body)?;
    Ok(axum::Json(state.raft.vote(rpc).await).into_response())
}

async fn snapshot(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_target(&state, &headers)?;
    let rpc = parse_json(&body)?;
    Ok(axum::Json(state.raft.install_snapshot(rpc).await).into_response())
}

async fn write(State(state): State<Arc<ServerState>>, body: Bytes) -> Result<Response, ApiError> {
    let command: MapCommand = parse_json(&body)?;
    let written = tokio::time::timeout(state.request_timeout, state.raft.client_write(command))
        .await
        .map_err(|_| ApiError::Timeout(state.request_timeout))?;
    match written {
        Ok(response) => Ok(axum::Json(response.data).into_response()),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(ApiError::NotLeader(f.into()))
        }
        Err(RaftError::APIError(e @ ClientWriteError::ChangeMembershipError(_))) => {
            Err(ApiError::Internal(e.to_string()))
        }
        Err(RaftError::Fatal(e)) => Err(fatal(&e)),
    }
}

/// The query of `GET /meta/map`.
#[derive(Debug, Deserialize)]
struct MapQuery {
    /// Confirm leadership with a quorum (read index) before reading.
    linearizable: Option<bool>,
    /// Watch: answer with a map newer than this version, or 304.
    since: Option<u64>,
    /// Watch: how long to wait for a newer map, in milliseconds. Default 0.
    wait_ms: Option<u64>,
}

async fn map(
    State(state): State<Arc<ServerState>>,
    query: Result<Query<MapQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if query.wait_ms.is_some() && query.since.is_none() {
        return Err(ApiError::BadRequest("wait_ms needs since".to_owned()));
    }
    if query.linearizable == Some(true) {
        ensure_linearizable(&state).await?;
    }
    let Some(since) = query.since else {
        return encoded_map_response(state.reader.current()).await;
    };
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0)).min(MAX_WATCH_WAIT);
    match watch_map(&state, since, wait).await? {
        Some(map) => encoded_map_response(map).await,
        None => Ok(not_modified(&state.reader.current())),
    }
}

/// Returns this member's map once it is newer than version `since`, or `None` when none
/// came within `wait` (or `wait` is zero, or too many watches wait already).
async fn watch_map(
    state: &ServerState,
    since: u64,
    wait: Duration,
) -> Result<Option<Arc<ClusterMap>>, ApiError> {
    let current = state.reader.current();
    if current.version() > since {
        return Ok(Some(current));
    }
    let Ok(_permit) = state.watchers.try_acquire() else {
        tracing::debug!(since, "too many watches waiting; answering at once");
        return Ok(None);
    };
    let mut stopping = state.stopping.clone();
    let newer = tokio::select! {
        newer = tokio::time::timeout(wait, state.reader.wait_newer_than(since)) => newer,
        _ = stopping.wait_for(|stopped| *stopped) => Ok(Err(super::state_machine::MapClosed)),
    };
    match newer {
        Ok(Ok(map)) => Ok(Some(map)),
        Ok(Err(closed)) => Err(ApiError::Unavailable(closed.to_string())),
        // A map applied just as the wait ran out is still an answer.
        Err(_elapsed) => Ok(Some(state.reader.current()).filter(|m| m.version() > since)),
    }
}

/// The `304 Not Modified` answer of a watch: no body, the member's version and epoch.
fn not_modified(map: &ClusterMap) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    let headers = response.headers_mut();
    headers.insert(VERSION_HEADER, HeaderValue::from(map.version()));
    headers.insert(EPOCH_HEADER, HeaderValue::from(map.epoch().0));
    response
}

/// Waits until this member is the leader confirmed by a quorum and has applied everything
/// committed before the call.
async fn ensure_linearizable(state: &ServerState) -> Result<(), ApiError> {
    let confirmed = tokio::time::timeout(state.request_timeout, state.raft.ensure_linearizable())
        .await
        .map_err(|_| ApiError::Timeout(state.request_timeout))?;
    match confirmed {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
            Err(ApiError::NotLeader(f.into()))
        }
        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
            Err(ApiError::Unavailable(e.to_string()))
        }
        Err(RaftError::Fatal(e)) => Err(fatal(&e)),
    }
}

fn fatal(e: &openraft::error::Fatal<NodeId>) -> ApiError {
    match e {
        openraft::error::Fatal::Stopped => ApiError::Unavailable("raft stopped".to_owned()),
        other => ApiError::Internal(other.to_string()),
    }
}

async fn encoded_map_response(map: Arc<ClusterMap>) -> Result<Response, ApiError> {
    let version = map.version();
    let epoch = map.epoch().0;
    let bytes = tokio::task::spawn_blocking(move || map.encode())
        .await
        .map_err(|e| ApiError::Internal(format!("encode the map: {e}")))?;
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(VERSION_HEADER, HeaderValue::from(version));
    headers.insert(EPOCH_HEADER, HeaderValue::from(epoch));
    Ok(response)
}
