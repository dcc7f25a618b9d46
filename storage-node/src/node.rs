//! Starting a storage node: read the secret, open every device (engine, fragment store,
//! index store), start the metadata member if configured, bind the internal API, start
//! heartbeats if configured, and serve until told to stop.
//!
//! **Invariant:** every task the node spawns is owned by its [`RunningNode`] and stopped by
//! [`RunningNode::wait`] once the server has stopped.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::auth::{AuthError, ClusterSecret};
use nimbus_proxy::cluster::Cluster;
use nimbus_proxy::index::IndexClient;
use nimbus_proxy::node_client::NodeClient;
use nimbus_ring::map::DeviceKey;
use nimbus_ring::raft::group::{MetaConfig, MetaNode, RaftTuning};
use nimbus_ring::raft::network::PeerClient;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::api::{self, Device, NodeState};
use crate::audit::{AuditConfig, AuditStats, Auditor};
use crate::config::Config;
use crate::heartbeat::Heartbeats;
use crate::index::{IndexOptions, IndexStore};
use crate::io::Engine;
use crate::store::{FragmentStore, StoreConfig, StoreError};
use crate::workers::{Collected, Ctx, Throttle, WorkerConfig, WorkerStats, Workers};

/// Why a node could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is not usable.
    #[error("{0}")]
    Config(String),
    /// The secret file cannot be read or is malformed.
    #[error("cluster secret {}: {reason}", path.display())]
    Secret {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A device could not be opened.
    #[error("device {name}: {source}")]
    Device {
        /// The device's name.
        name: String,
        /// Why.
        source: StoreError,
    },
    /// The metadata member could not start.
    #[error("metadata member: {0}")]
    Meta(String),
    /// A device's index store could not be opened.
    #[error("device {name}: index store: {reason}")]
    Index {
        /// The device's name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The I/O engine could not start.
    #[error("device {name}: I/O engine: {source}")]
    Engine {
        /// The device's name.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// The listen address could not be bound, or serving failed.
    #[error("internal API on {addr}: {source}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A node that is serving.
pub struct RunningNode {
    /// The address the internal API listens on (useful with port 0).
    pub local_addr: SocketAddr,
    /// Engine of each device, by name (their kind is logged at start).
    pub engines: Vec<(String, &'static str)>,
    /// The metadata member this node hosts, if configured.
    pub meta: Option<MetaNode>,
    server: JoinHandle<Result<(), NodeError>>,
    heartbeats: Option<RunningHeartbeats>,
    audits: RunningAudits,
    workers: Option<RunningWorkers>,
}

/// The task that starts the devices' workers once the cluster map is read, and the sender
/// that stops them.
struct RunningWorkers {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The devices' auditors and the sender that stops them.
struct RunningAudits {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// The heartbeat task and the sender that stops it.
struct RunningHeartbeats {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// How long the heartbeat task may take to stop (it stops at once, even mid-call).
const HEARTBEAT_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl RunningNode {
    /// Waits until the server stops (after the shutdown future given to [`start`] resolves),
    /// then stops the heartbeats and the metadata member.
    ///
    /// # Errors
    /// [`NodeError::Serve`] when serving failed.
    pub async fn wait(self) -> Result<(), NodeError> {
        let served = self.server.await.unwrap_or_else(|join| {
            Err(NodeError::Serve {
                addr: self.local_addr,
                source: std::io::Error::other(join.to_string()),
            })
        });
        if let Some(RunningHeartbeats { stop, task }) = self.heartbeats {
            stop.send_replace(true);
            let abort = task.abort_handle();
            match tokio::time::timeout(HEARTBEAT_STOP_TIMEOUT, task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat task failed"),
                Err(_) => {
                    tracing::warn!("heartbeat task did not stop in time; aborting it");
                    abort.abort();
                }
            }
        }
        // Auditors only read: stopping them mid-fragment loses nothing.
        self.audits.stop.send_replace(true);
        for task in self.audits.tasks {
            task.abort();
        }
        // Workers commit a fragment elsewhere before deleting it here, and write through the
        // store's two phases: stopping them mid-step leaves at worst a second copy or a
        // pending file, which the next pass settles.
        if let Some(RunningWorkers { stop, task }) = self.workers {
            stop.send_replace(true);
            task.abort();
        }
        if let Some(meta) = &self.meta {
            meta.shutdown().await;
        }
        served
    }
}

/// Opens the devices and starts serving; the server stops when `shutdown` resolves.
///
/// # Errors
/// [`NodeError`] naming what failed.
pub async fn start(
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningNode, NodeError> {
    config
        .validate()
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let kind = config.io_engine_kind().map_err(NodeError::Config)?;
    let secret_path = &config.cluster_secret_file;
    let read_path = secret_path.clone();
    let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(read_path))
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|e| NodeError::Secret {
            path: secret_path.clone(),
            reason: e.to_string(),
        })?;
    let secret = ClusterSecret::from_hex(&text).map_err(|e: AuthError| NodeError::Secret {
        path: secret_path.clone(),
        reason: e.to_string(),
    })?;

    let mut devices = HashMap::new();
    let mut engines = Vec::new();
    let mut auditors = Vec::new();
    let mut worker_devices = Vec::new();
    for d in &config.devices {
        let engine =
            Engine::new(kind, config.engine_config()).map_err(|source| NodeError::Engine {
                name: d.name.clone(),
                source,
            })?;
        tracing::info!(device = %d.name, path = %d.path.display(), engine = engine.name(), "device opened");
        engines.push((d.name.clone(), engine.name()));
        let store_config = StoreConfig {
            reserve_bytes: d.reserve_bytes,
            direct_io: d.direct_io,
            summary_max_age: Duration::from_secs(config.workers.summary_max_age_secs),
            ..StoreConfig::default()
        };
        let fragments = FragmentStore::open(&d.path, engine, store_config)
            .await
            .map_err(|source| NodeError::Device {
                name: d.name.clone(),
                source,
            })?;
        let index_options = IndexOptions {
            wal_bytes: config.index.wal_bytes,
            ..IndexOptions::default()
        };
        let index = IndexStore::open_with(d.path.join("index.redb"), index_options)
            .await
            .map_err(|e| NodeError::Index {
                name: d.name.clone(),
                reason: e.to_string(),
            })?;
        let audit = Arc::new(AuditStats::default());
        let wake = Arc::new(Notify::new());
        auditors.push(
            Auditor::new(
                fragments.clone(),
                AuditConfig {
                    bytes_per_sec: config.audit.bytes_per_sec,
                    cycle_pause: Duration::from_secs(config.audit.cycle_pause_secs),
                },
                Arc::clone(&audit),
            )
            .waking(Arc::clone(&wake)),
        );
        let worker_stats = Arc::new(WorkerStats::default());
        worker_devices.push((
            d.name.clone(),
            fragments.clone(),
            Arc::clone(&worker_stats),
            wake,
        ));
        devices.insert(
            d.name.clone(),
            Device {
                fragments,
                index,
                audit,
                workers: worker_stats,
            },
        );
    }
    let meta = match &config.meta {
        Some(m) => {
            let node = MetaNode::start(MetaConfig {
                id: m.id,
                dir: m.dir.clone(),
                listen: m.listen,
                advertise: m.advertise.clone(),
                secret: secret.clone(),
                tuning: RaftTuning {
                    snapshot_every_logs: m.snapshot_every_logs,
                    logs_kept_after_snapshot: m.logs_kept_after_snapshot,
                    ..RaftTuning::default()
                },
            })
            .await
            .map_err(|e| NodeError::Meta(format!("{e:#}")))?;
            tracing::info!(id = m.id, addr = node.addr(), "metadata member started");
            Some(node)
        }
        None => None,
    };
    let device_names = config.devices.iter().map(|d| d.name.clone()).collect();
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| NodeError::Serve {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| NodeError::Serve {
        addr: config.listen,
        source,
    })?;
    let node_addr = config
        .heartbeat
        .as_ref()
        .and_then(|h| h.node)
        .unwrap_or(local_addr);
    let leases = Arc::new(crate::lease::Leases::default());
    let state = Arc::new(NodeState::new(
        secret.clone(),
        devices,
        0,
        Some(node_addr),
        Arc::clone(&leases),
    ));
    let workers = config
        .heartbeat
        .as_ref()
        .filter(|_| config.workers.bytes_per_sec > 0)
        .map(|h| {
            let (stop, stopped) = watch::channel(false);
            let members = h.members.clone();
            let settings = config.workers;
            let secret = secret.clone();
            let task = tokio::spawn(run_workers(
                secret,
                members,
                node_addr,
                worker_devices,
                settings,
                stopped,
            ));
            RunningWorkers { stop, task }
        });
    let heartbeats = config.heartbeat.as_ref().map(|h| {
        let node = h.node.unwrap_or(local_addr);
        let sender = Heartbeats::new(
            PeerClient::new(secret),
            h.members.clone(),
            node,
            device_names,
            h.interval(),
            leases,
        );
        let (stop, stopped) = watch::channel(false);
        tracing::info!(%node, members = ?h.members, interval_ms = h.interval_ms, "heartbeats started");
        RunningHeartbeats {
            stop,
            task: tokio::spawn(sender.run(stopped)),
        }
    });
    let (stop_audits, audits_stopped) = watch::channel(false);
    let audits = auditors
        .into_iter()
        .map(|a| tokio::spawn(a.run(audits_stopped.clone())))
        .collect();
    let app = api::router(state);
    let server = tokio::spawn(async move {
        // Answers go out as written (no Nagle): a fragment or response whose last bytes wait
        // for the peer's delayed ACK costs a request tens of milliseconds.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set on an accepted connection");
            }
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| NodeError::Serve {
                addr: local_addr,
                source,
            })
    });
    Ok(RunningNode {
        local_addr,
        engines,
        meta,
        server,
        heartbeats,
        audits: RunningAudits {
            stop: stop_audits,
            tasks: audits,
        },
        workers,
    })
}

/// How long the workers wait for the cluster map at each attempt.
const MAP_WAIT: Duration = Duration::from_secs(30);

/// Reads the cluster map (retrying until a metadata member answers), then runs every
/// device's workers until `stop` turns true.
async fn run_workers(
    secret: ClusterSecret,
    members: Vec<String>,
    node: SocketAddr,
    devices: Vec<(String, FragmentStore, Arc<WorkerStats>, Arc<Notify>)>,
    settings: crate::config::WorkersSection,
    mut stop: watch::Receiver<bool>,
) {
    let (cluster, _watcher) = loop {
        let start = Cluster::start(PeerClient::new(secret.clone()), members.clone(), MAP_WAIT);
        tokio::select! {
            started = start => match started {
                Ok(c) => break c,
                Err(e) => tracing::warn!(error = %e, "workers: cluster map not read yet; trying again"),
            },
            _ = stop.changed() => return,
        }
    };
    let nodes = NodeClient::new(secret);
    // The workers' reads decide what may be removed: they ask majorities (or every
    // replica), never a primary alone.
    let index = IndexClient::new(nodes.clone(), cluster.clone(), false);
    let config = WorkerConfig {
        bytes_per_sec: settings.bytes_per_sec,
        pass_pause: Duration::from_secs(settings.pass_pause_secs),
        concurrent_partitions: settings.concurrent_partitions,
        gc_grace: Duration::from_secs(settings.gc_grace_secs),
        index_sync: Duration::from_secs(settings.index_sync_secs),
        tombstone_grace: Duration::from_secs(settings.tombstone_grace_secs),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (name, store, stats, wake) in devices {
        let ctx = Ctx {
            device: DeviceKey { node, device: name },
            store,
            cluster: cluster.clone(),
            nodes: nodes.clone(),
            index: index.clone(),
            throttle: Throttle::new(config.bytes_per_sec),
            stats,
            config,
            collected: Collected::default(),
        };
        tasks.spawn(Workers::new(ctx, wake).run(stop.clone()));
    }
    tracing::info!(devices = tasks.len(), "background workers started");
    while tasks.join_next().await.is_some() {}
}
