//! The internal HTTP API: what proxies and other nodes call. Every `/v1/…` request is
//! authenticated (HMAC with the cluster secret, `nimbus_core::auth`) and carries the sender's
//! ring epoch; `/health` is open. Handlers are thin: they parse, call the store, and map
//! errors to statuses in one place ([`ApiError`]).
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/health` | node status: devices, space, auditor and worker counters (open) |
//! | GET | `/metrics` | the same figures in Prometheus text format (open) |
//! | GET | `/v1/placement/{device}` | per partition: committed fragments by index, (object, version) digest |
//! | PUT | `/v1/fragments/{device}/{policy}/{partition}/{version}/{index}?path=` | write a fragment (phase 1) → 201 |
//! | POST | `…/commit?path=` | make it durable (phase 2) → 204 |
//! | GET | `…?path=[&offset=&length=]` | read (a range of) its data → 200 |
//! | DELETE | `…?path=` | remove it → 204 |
//! | GET | `/v1/partitions/{device}/{policy}/{partition}[?paths=1]` | list a partition's fragments and digests (with object paths) |
//! | GET | `/v1/partitions/{device}/{policy}/{partition}?digest=objects[&index=]` | the digest of its committed object versions only |
//! | GET | `/v1/partitions/{device}/{policy}?digest=objects` | those digests for every partition of the policy, per fragment index |
//! | PUT, GET | `/v1/index/{device}/{account}/{container}/{shard}[/…]` | index entries (see `api::index`) |
//!
//! **Boundary:** this is the wire contract with proxies; `docs/internal-api.md` documents it.

mod auth;
mod fragments;
mod index;
mod metrics;
pub mod peering;
mod placement;

pub use index::{LEASE_READ, LEASED, PRECONDITION};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_core::auth::ClusterSecret;
use serde_json::json;

use crate::index::IndexStore;
use crate::lease::Leases;
use crate::store::{FragmentStore, StoreError};

/// Headers of the internal API.
pub mod headers {
    /// Fragment data bytes the sender declares (PUT) or the fragment has (GET).
    pub const DATA_BYTES: &str = "x-nimbus-data-bytes";
    /// Bytes per segment of the object (PUT).
    pub const SEGMENT_BYTES: &str = "x-nimbus-segment-bytes";
    /// Bytes of the whole object, if known (PUT).
    pub const OBJECT_BYTES: &str = "x-nimbus-object-bytes";
    /// Hex blake3 of the fragment's data (GET).
    pub const BLAKE3: &str = "x-nimbus-blake3";
    /// Set on a 404 when the fragment was corrupt and has been quarantined.
    pub const QUARANTINED: &str = "x-nimbus-quarantined";
}

/// One device as the API sees it.
#[derive(Debug)]
pub struct Device {
    /// Its fragment store.
    pub fragments: FragmentStore,
    /// Its index store.
    pub index: IndexStore,
    /// What its auditor has done.
    pub audit: Arc<crate::audit::AuditStats>,
    /// What its background workers have done.
    pub workers: Arc<crate::workers::WorkerStats>,
}

/// What every handler shares.
#[derive(Debug)]
pub struct NodeState {
    secret: ClusterSecret,
    devices: HashMap<String, Device>,
    /// The newest ring epoch seen; requests from older epochs are refused as stale.
    epoch: AtomicU64,
    /// Peering with other nodes' replicas of a shard.
    peering: peering::Peering,
    /// The node's read lease, kept by its heartbeats (`crate::lease`).
    leases: Arc<Leases>,
    /// Held shared by every index write from the moment it checks its epoch until it is
    /// applied, and taken exclusively, once, by a request that raised the node's epoch
    /// before it goes on: so once a request of a newer epoch is served (a new primary's
    /// peering pull among them), every write of an older one has either been applied or
    /// will be refused. A write that missed the new primary's peering can then never reach
    /// a majority.
    epoch_gate: tokio::sync::RwLock<()>,
    /// Reads answered alone under the lease.
    leased_reads: AtomicU64,
    /// Reads that asked for the lease and were answered without it.
    unleased_reads: AtomicU64,
    /// Primary writes that waited for older leases to run out.
    lease_waits: AtomicU64,
}

impl NodeState {
    /// Returns the state for a node with these devices, placed in the rings at `node`.
    #[must_use]
    pub fn new(
        secret: ClusterSecret,
        devices: HashMap<String, Device>,
        epoch: u64,
        node: Option<std::net::SocketAddr>,
        leases: Arc<Leases>,
    ) -> Self {
        NodeState {
            peering: peering::Peering::new(
                nimbus_ring::raft::network::PeerClient::new(secret.clone()),
                node,
                Arc::clone(&leases),
            ),
            secret,
            devices,
            epoch: AtomicU64::new(epoch),
            leases,
            epoch_gate: tokio::sync::RwLock::new(()),
            leased_reads: AtomicU64::new(0),
            unleased_reads: AtomicU64::new(0),
            lease_waits: AtomicU64::new(0),
        }
    }

    fn device(&self, name: &str) -> Result<&Device, ApiError> {
        self.devices.get(name).ok_or_else(|| ApiError::NotFound {
            what: format!("device {name:?}"),
        })
    }

    /// Returns the newest epoch seen.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Records a sender's epoch; refuses it if older than the newest seen. Tells whether it
    /// raised the newest seen.
    fn observe_epoch(&self, epoch: u64) -> Result<bool, ApiError> {
        let seen = self.epoch.fetch_max(epoch, Ordering::AcqRel);
        if epoch < seen {
            return Err(ApiError::StaleEpoch {
                sent: epoch,
                current: seen,
            });
        }
        Ok(epoch > seen)
    }

    /// After a request raised the node's epoch: notes when, and waits for the index writes
    /// of older epochs under way (see `epoch_gate`).
    async fn epoch_raised(&self, epoch: u64) {
        self.leases.saw(epoch, tokio::time::Instant::now());
        drop(self.epoch_gate.write().await);
    }

    /// Holds the epoch gate for an index write of `epoch`; refuses it if the node has seen a
    /// newer epoch since the request was authenticated.
    async fn write_gate(
        &self,
        epoch: u64,
    ) -> Result<tokio::sync::RwLockReadGuard<'_, ()>, ApiError> {
        let gate = self.epoch_gate.read().await;
        let current = self.epoch();
        if epoch < current {
            return Err(ApiError::StaleEpoch {
                sent: epoch,
                current,
            });
        }
        Ok(gate)
    }
}

/// Returns the API's router.
pub fn router(state: Arc<NodeState>) -> Router {
    let v1 = fragments::routes()
        .merge(index::routes())
        .merge(placement::routes())
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::authenticate,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics::metrics))
        .merge(v1)
        .with_state(state)
}

async fn health(axum::extract::State(state): axum::extract::State<Arc<NodeState>>) -> Response {
    let mut devices = Vec::new();
    for (name, d) in &state.devices {
        let space = d.fragments.engine().space(d.fragments.root()).await.ok();
        devices.push(json!({
            "name": name,
            "engine": d.fragments.engine().name(),
            "available_bytes": space.map(|s| s.0),
            "audit": d.audit.report(),
            "workers": d.workers.report(),
        }));
    }
    axum::Json(json!({ "status": "ok", "epoch": state.epoch(), "devices": devices }))
        .into_response()
}

/// Every error the API returns, mapped to a status in [`IntoResponse`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No credentials.
    #[error("authentication required")]
    Unauthenticated,
    /// Credentials that do not verify.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A request from an older ring epoch: the sender should refresh its ring and retry.
    #[error("stale ring epoch {sent}, this node has seen {current}")]
    StaleEpoch {
        /// The sender's epoch.
        sent: u64,
        /// The newest this node has seen.
        current: u64,
    },
    /// Malformed request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Nothing there.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// Too few peers answered (peering a shard): retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A store error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The index store failed (the request may succeed on another replica).
    #[error("index store: {0}")]
    Index(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::StaleEpoch { .. } => (StatusCode::CONFLICT, "stale_epoch"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::BadRequest(_) | ApiError::Store(StoreError::BadRequest { .. }) => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            ApiError::NotFound { .. } | ApiError::Store(StoreError::NotFound { .. }) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            ApiError::Store(StoreError::Corrupt { .. }) => (StatusCode::NOT_FOUND, "quarantined"),
            ApiError::Store(StoreError::Full { .. }) => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
            }
            ApiError::Store(StoreError::Io { .. }) | ApiError::Index(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "internal API request failed");
            "internal error; see the node's log".to_owned()
        } else {
            tracing::debug!(error = %self, "internal API request refused");
            self.to_string()
        };
        let mut response = (
            status,
            axum::Json(json!({ "error": code, "message": message })),
        )
            .into_response();
        if matches!(self, ApiError::Store(StoreError::Corrupt { .. })) {
            response.headers_mut().insert(
                headers::QUARANTINED,
                axum::http::HeaderValue::from_static("true"),
            );
        }
        response
    }
}
