//! A metadata member: one voter (or learner) of the cluster map's Raft group, with its log,
//! state machine and HTTP server, started by [`MetaNode::start`].
//!
//! ```text
//! <dir>/raft-log.redb          log_store::LogStore
//! <dir>/snapshots/             snapshot_file, written by state_machine::MapStateMachine
//! http://<listen>/raft/…       peers' Raft RPCs      (server)
//! http://<listen>/meta/…       writes, map reads     (server)
//!                              and watches,
//!                              membership, status,
//!                              heartbeats            (server → liveness)
//! ```
//!
//! Writes go to the leader from any member: [`MetaNode::write`] proposes locally when this
//! member leads, and otherwise sends the command to the leader's `/meta/write`, following
//! the leader hints members answer with, until a deadline.
//!
//! Storage nodes heartbeat to the leader; its liveness task (`raft::liveness`) marks their
//! devices down and up in the map. Every member runs that task; it acts only while its
//! member leads, with a fresh tracker per term.
//!
//! **Invariants:**
//! - A write is retried only when it certainly was not proposed: a member that is not the
//!   leader refused it, or no connection was made. Any other failure after it may have
//!   been proposed is [`WriteError::OutcomeUnknown`]: the caller decides whether to retry
//!   (a retried create then answers "exists").
//! - Every wait is bounded: by [`RaftTuning::request_timeout`] for writes, reads and
//!   membership checks, by the RPC deadlines of `raft::network` for peers.
//! - Every task a member spawns (its HTTP server, its liveness task) is owned by the
//!   [`MetaNode`] and stopped by [`MetaNode::shutdown`].
//! - Membership changes go through [`Membership`] (also behind the HTTP API), which refuses
//!   a change that would leave no voter, name a member the group does not know, or make
//!   voters whose majority is not caught up with the leader before anything is proposed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use nimbus_core::auth::ClusterSecret;
use openraft::{BasicNode, Config, Raft, RaftMetrics, SnapshotPolicy};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

mod forward;
mod membership;

pub use membership::{
    MemberState, MemberStatus, Membership, MembershipError, MembershipView, check_voters,
};

use super::liveness::Liveness;
use super::log_store::{LogStore, OpenError};
use super::network::{HttpNetworkFactory, PeerClient};
use super::server::{self, ServerState};
use super::state_machine::{MapReader, MapStateMachine, StateMachineOpenError};
use super::{MapRaft, NodeId};
use crate::error::FormatError;
use crate::liveness::LivenessConfig;
use crate::map::ClusterMap;

/// Snapshot chunk size sent per `/raft/snapshot` request.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;

/// A learner within this many entries of the leader's last log counts as caught up.
pub const CAUGHT_UP_LAG_ENTRIES: u64 = 100;

/// How long to pause before asking again who leads, while an election is under way.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// How long the liveness task may take to stop (it stops between Raft writes).
const LIVENESS_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a stopping server may take to finish its requests before it is dropped.
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long [`MetaNode::start`] waits for the previous owner of its log database in this
/// process (a member just shut down) to release it.
const LOG_OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Raft timing and log compaction of a member.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    /// How often the leader sends heartbeats; also the deadline of each AppendEntries RPC.
    /// Default 100 ms.
    pub heartbeat_interval: Duration,
    /// Shortest wait without a leader before a follower stands for election. Default 300 ms.
    pub election_timeout_min: Duration,
    /// Longest such wait (each follower picks at random in between). Default 600 ms.
    pub election_timeout_max: Duration,
    /// Deadline of each snapshot chunk RPC, installation included. Default 3 s.
    pub install_snapshot_timeout: Duration,
    /// A snapshot is built once this many entries were applied since the last. Default 1000.
    pub snapshot_every_logs: u64,
    /// Entries kept in the log behind the last snapshot, so that a briefly lagging member
    /// catches up without a snapshot. Default 1000.
    pub logs_kept_after_snapshot: u64,
    /// Deadline of [`MetaNode::write`], [`MetaNode::linearizable_map`], of membership
    /// changes and of the HTTP handlers behind them, and of each device state change the
    /// leader's liveness task writes. Default 5 s.
    pub request_timeout: Duration,
    /// When the leader marks a device down (unheard of for `timeout_ms`, default 15 s) and
    /// how it damps flapping; see [`LivenessConfig`].
    pub liveness: LivenessConfig,
    /// How often the leader compares heartbeats with the map and proposes the changes.
    /// Default 1 s.
    pub liveness_tick: Duration,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            install_snapshot_timeout: Duration::from_secs(3),
            snapshot_every_logs: 1000,
            logs_kept_after_snapshot: 1000,
            request_timeout: Duration::from_secs(5),
            liveness: LivenessConfig::default(),
            liveness_tick: Duration::from_secs(1),
        }
    }
}

/// What a member needs to start.
#[derive(Debug, Clone)]
pub struct MetaConfig {
    /// Its Raft id, stable across restarts.
    pub id: NodeId,
    /// Its metadata directory (created when absent).
    pub dir: PathBuf,
    /// Where its HTTP server listens; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The address other members reach it at; the bound address when `None`.
    pub advertise: Option<String>,
    /// The cluster secret requests are signed and checked with.
    pub secret: ClusterSecret,
    /// Raft timing and compaction.
    pub tuning: RaftTuning,
}

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The metadata directory could not be created.
    #[error("create metadata directory {}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The Raft log could not be opened.
    #[error("open the raft log")]
    Log(#[from] OpenError),
    /// The state machine could not be rebuilt from its snapshot.
    #[error("open the cluster map state machine")]
    StateMachine(#[from] StateMachineOpenError),
    /// The tuning is not a valid Raft configuration.
    #[error("raft configuration")]
    Config(#[from] Box<openraft::ConfigError>),
    /// Raft failed to start (reading its state from storage).
    #[error("start raft")]
    Raft(#[from] openraft::error::Fatal<NodeId>),
    /// The HTTP server could not listen.
    #[error("listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// Why a write got no answer from the map.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No leader accepted it before the deadline; it was never proposed.
    #[error("no leader accepted the write within {0:?}; it was not applied")]
    NoLeader(Duration),
    /// It may have been proposed, and may yet be applied.
    #[error("the write may or may not be applied: {0}")]
    OutcomeUnknown(String),
    /// This member stopped.
    #[error("this metadata member stopped")]
    Stopped,
    /// A member refused the request itself (authentication, a malformed command).
    #[error("metadata member refused the write with status {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// What it said.
        message: String,
    },
}

/// Why a linearizable read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No leader confirmed the read before the deadline.
    #[error("no leader confirmed the read within {0:?}")]
    NoLeader(Duration),
    /// This member stopped.
    #[error("this metadata member stopped")]
    Stopped,
    /// The leader's answer was refused or unreadable.
    #[error("read the map from the leader: {0}")]
    Leader(String),
    /// The leader's map does not decode.
    #[error("the leader's map does not decode")]
    Decode(#[source] FormatError),
}

/// A running metadata member. Stop it with [`MetaNode::shutdown`]; dropping it leaves Raft
/// and the server running until the runtime ends.
pub struct MetaNode {
    id: NodeId,
    addr: String,
    local_addr: SocketAddr,
    raft: Raft<MapRaft>,
    reader: MapReader,
    client: PeerClient,
    membership: Membership,
    tuning: RaftTuning,
    running: StdMutex<Option<Running>>,
}

/// The member's tasks and the senders that stop them.
struct Running {
    /// Stops the HTTP server (gracefully: requests in flight finish).
    stop_server: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
    /// Turns `true` to stop the liveness task and end waiting watches.
    stopping: watch::Sender<bool>,
    liveness: JoinHandle<()>,
}

impl fmt::Debug for MetaNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaNode")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MetaNode {
    /// Opens the member's log and state machine from `config.dir`, starts Raft and serves
    /// its HTTP API on `config.listen`. A new member waits for [`MetaNode::initialize`] or
    /// to be added by a leader; a restarted one rejoins its group.
    ///
    /// # Errors
    /// [`StartError`].
    pub async fn start(config: MetaConfig) -> Result<MetaNode, StartError> {
        let dir = config.dir.clone();
        let create = dir.clone();
        tokio::task::spawn_blocking(move || std::fs::create_dir_all(create))
            .await
            .map_err(std::io::Error::other)
            .and_then(|created| created)
            .map_err(|source| StartError::Dir {
                path: dir.clone(),
                source,
            })?;
        let log = open_log(dir.join("raft-log.redb")).await?;
        let state_machine = MapStateMachine::open(dir.join("snapshots")).await?;
        let reader = state_machine.reader();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
        let addr = config
            .advertise
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        let tuning = config.tuning;
        let client = PeerClient::new(config.secret.clone());
        let network = HttpNetworkFactory::new(config.id, client.clone());
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config(&tuning)?),
            network,
            log,
            state_machine,
        )
        .await?;

        let membership = Membership::new(
            config.id,
            raft.clone(),
            reader.clone(),
            tuning.request_timeout,
        );
        let liveness = Arc::new(Liveness::new(
            config.id,
            raft.clone(),
            reader.clone(),
            tuning.liveness,
            tuning.liveness_tick,
            tuning.request_timeout,
        ));
        let (stopping, stopping_rx) = watch::channel(false);
        let state = Arc::new(ServerState {
            id: config.id,
            raft: raft.clone(),
            reader: reader.clone(),
            membership: membership.clone(),
            secret: config.secret,
            request_timeout: tuning.request_timeout,
            liveness: Arc::clone(&liveness),
            stopping: stopping_rx.clone(),
            watchers: Semaphore::new(server::MAX_WATCHERS),
            epoch_seen: std::sync::Mutex::new(None),
        });
        let liveness = tokio::spawn(async move { liveness.run(stopping_rx).await });
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let app = server::router(state);
        let serving = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // A dropped sender stops the server too.
                    let _ = stop_rx.await;
                })
                .await
        });
        info!(id = config.id, %addr, dir = %dir.display(), "metadata member started");
        Ok(MetaNode {
            id: config.id,
            addr,
            local_addr,
            raft,
            reader,
            client,
            membership,
            tuning,
            running: StdMutex::new(Some(Running {
                stop_server: stop_tx,
                server: serving,
                stopping,
                liveness,
            })),
        })
    }

    /// Returns this member's id.
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Returns the address other members reach this one at.
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Returns the address the HTTP server is bound to.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Returns the map this member has applied (cheap; possibly behind the leader's).
    #[must_use]
    pub fn map(&self) -> Arc<ClusterMap> {
        self.reader.current()
    }

    /// Returns a read handle on the applied map, to wait for changes.
    #[must_use]
    pub fn reader(&self) -> MapReader {
        self.reader.clone()
    }

    /// Returns Raft's metrics of this member (state, leader, log positions).
    #[must_use]
    pub fn metrics(&self) -> watch::Receiver<RaftMetrics<NodeId, BasicNode>> {
        self.raft.metrics()
    }

    /// Returns the leader this member knows of.
    #[must_use]
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Returns this member's membership operations (what the HTTP API calls too).
    #[must_use]
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Returns this member's view of the group and of its map.
    #[must_use]
    pub fn status(&self) -> MemberStatus {
        self.membership.status()
    }

    /// Initializes a new group whose voters are `members` (id → address); call it on one
    /// of them. See [`Membership::initialize`].
    ///
    /// # Errors
    /// [`MembershipError`].
    pub async fn initialize(
        &self,
        members: BTreeMap<NodeId, String>,
    ) -> Result<(), MembershipError> {
        self.membership.initialize(members).await.map(drop)
    }

    /// Adds member `id` at `addr` as a learner (on the leader): it starts receiving the log,
    /// or a snapshot when the log it needs was purged. Returns once the change is committed.
    /// See [`Membership::add_learner`].
    ///
    /// # Errors
    /// [`MembershipError`].
    pub async fn add_learner(&self, id: NodeId, addr: &str) -> Result<(), MembershipError> {
        self.membership.add_learner(id, addr).await.map(drop)
    }

    /// Waits until the leader (this member) has replicated its whole log, as of the call, to
    /// member `id`.
    ///
    /// # Errors
    /// [`MembershipError::NotLeader`] or [`MembershipError::NotCaughtUp`].
    pub async fn wait_caught_up(
        &self,
        id: NodeId,
        timeout: Duration,
    ) -> Result<(), MembershipError> {
        self.membership.wait_caught_up(id, timeout).await
    }

    /// Makes `voters` the group's voters (on the leader), through a joint configuration;
    /// voters left out are removed from the group. Returns once the change is committed.
    /// See [`Membership::change_membership`].
    ///
    /// # Errors
    /// [`MembershipError::NoVoters`], [`MembershipError::UnknownMember`] and
    /// [`MembershipError::WouldLoseQuorum`] before anything is proposed;
    /// [`MembershipError::NotLeader`] or a failure of Raft.
    pub async fn change_membership(&self, voters: BTreeSet<NodeId>) -> Result<(), MembershipError> {
        self.membership.change_membership(voters).await.map(drop)
    }

    /// Stops the liveness task, Raft and the HTTP server (waiting watches are answered
    /// 503). The member's files stay; a new [`MetaNode::start`] on the same directory
    /// resumes it.
    pub async fn shutdown(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(Running {
            stop_server,
            server: serving,
            stopping,
            liveness,
        }) = running
        else {
            return;
        };
        stopping.send_replace(true);
        let abort = liveness.abort_handle();
        match tokio::time::timeout(LIVENESS_STOP_TIMEOUT, liveness).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(id = self.id, error = %e, "liveness task failed"),
            Err(_) => {
                warn!(
                    id = self.id,
                    "liveness task did not stop in time; aborting it"
                );
                abort.abort();
            }
        }
        let _ = stop_server.send(());
        if let Err(e) = self.raft.shutdown().await {
            warn!(id = self.id, error = %e, "raft task ended abnormally");
        }
        let abort = serving.abort_handle();
        match tokio::time::timeout(SERVER_STOP_TIMEOUT, serving).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(id = self.id, error = %e, "metadata server failed"),
            Ok(Err(e)) => warn!(id = self.id, error = %e, "metadata server task failed"),
            Err(_) => {
                warn!(
                    id = self.id,
                    "metadata server did not stop in time; dropping it"
                );
                abort.abort();
            }
        }
        info!(id = self.id, "metadata member stopped");
    }
}

/// Opens the log store, waiting a bounded time for a previous owner in this process (a
/// member shut down a moment ago, whose replication tasks still hold the database) to let
/// go of it.
async fn open_log(path: PathBuf) -> Result<LogStore<MapRaft>, OpenError> {
    let deadline = Instant::now() + LOG_OPEN_TIMEOUT;
    loop {
        match LogStore::open(path.clone()).await {
            Err(OpenError::Database {
                source: redb::Error::DatabaseAlreadyOpen,
                ..
            }) if Instant::now() < deadline => tokio::time::sleep(RETRY_PAUSE).await,
            result => return result,
        }
    }
}

fn raft_config(tuning: &RaftTuning) -> Result<Config, Box<openraft::ConfigError>> {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Config {
        cluster_name: "nimbus-meta".to_owned(),
        heartbeat_interval: millis(tuning.heartbeat_interval),
        election_timeout_min: millis(tuning.election_timeout_min),
        election_timeout_max: millis(tuning.election_timeout_max),
        install_snapshot_timeout: millis(tuning.install_snapshot_timeout),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every_logs),
        max_in_snapshot_log_to_keep: tuning.logs_kept_after_snapshot,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        ..Config::default()
    }
    .validate()
    .map_err(Box::new)
}
