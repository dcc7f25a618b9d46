//! Starting a proxy: read the secret, bind the S3 API and serve until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_core::auth::{AuthError, ClusterSecret};
use nimbus_ring::raft::network::PeerClient;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, Watcher};
use crate::config::ProxyConfig;
use crate::cors::Cors;
use crate::data::{DataPath, Md5Lanes, VersionClock};
use crate::index::IndexClient;
use crate::node_client::NodeClient;
use crate::s3::{Domains, MapAuth, NimbusS3, S3State};

/// How long a starting proxy waits for a metadata member to give it the map.
const MAP_DEADLINE: Duration = Duration::from_secs(60);

/// Why a proxy could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
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
    /// No metadata member gave the proxy the cluster map.
    #[error("{0}")]
    Map(String),
    /// The listen address could not be bound, or serving failed.
    #[error("S3 API on {addr}: {source}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The MD5 hashing thread could not start.
    #[error("starting the MD5 hashing thread: {0}")]
    Thread(std::io::Error),
}

/// A proxy that is serving.
pub struct RunningProxy {
    /// The address the S3 API listens on (useful with port 0).
    pub local_addr: SocketAddr,
    server: JoinHandle<Result<(), ProxyError>>,
    /// The expirer task and the sender that stops it.
    expirer: Option<(tokio::sync::watch::Sender<bool>, JoinHandle<()>)>,
    _watcher: Watcher,
}

impl RunningProxy {
    /// Waits until the server stops (after the shutdown future given to [`start`] resolves).
    ///
    /// # Errors
    /// [`ProxyError::Serve`] when serving failed.
    pub async fn wait(self) -> Result<(), ProxyError> {
        let served = self.server.await.unwrap_or_else(|join| {
            Err(ProxyError::Serve {
                addr: self.local_addr,
                source: std::io::Error::other(join.to_string()),
            })
        });
        // Each of its steps is idempotent: stopping it anywhere loses nothing.
        if let Some((stop, task)) = self.expirer {
            stop.send_replace(true);
            task.abort();
        }
        served
    }
}

/// Binds the S3 API and starts serving; the server stops when `shutdown` resolves.
///
/// # Errors
/// [`ProxyError`] naming what failed.
pub async fn start(
    config: &ProxyConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningProxy, ProxyError> {
    config
        .validate()
        .map_err(|e| ProxyError::Config(e.to_string()))?;
    let secret = read_secret(config).await?;
    let (cluster, watcher) = Cluster::start(
        PeerClient::new(secret.clone()),
        config.meta.clone(),
        MAP_DEADLINE,
    )
    .await
    .map_err(|e| ProxyError::Map(e.to_string()))?;
    let nodes = NodeClient::new(secret.clone());
    let state = Arc::new(S3State {
        cluster: cluster.clone(),
        index: IndexClient::new(nodes.clone(), cluster.clone(), config.leased_reads),
        data: DataPath {
            nodes,
            segment_bytes: config.segment_bytes,
            clock: Arc::new(VersionClock::new()),
            md5: Md5Lanes::start().map_err(ProxyError::Thread)?,
        },
        region: config.region.clone(),
        inline_max: u64::from(config.inline_max),
        secret,
    });
    let mut builder = S3ServiceBuilder::new(NimbusS3(Arc::clone(&state)));
    builder.set_auth(MapAuth(cluster));
    builder.set_host(Domains::new(&config.s3_domains));
    let domains = Arc::new(Domains::new(&config.s3_domains));
    let s3 = builder.build();
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ProxyError::Serve {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ProxyError::Serve {
        addr: config.listen,
        source,
    })?;
    let (stop_expirer, expirer_stopped) = tokio::sync::watch::channel(false);
    let expirer = (config.expirer_interval_secs > 0).then(|| {
        let interval = std::time::Duration::from_secs(config.expirer_interval_secs);
        let abandoned = (config.abandoned_upload_secs > 0)
            .then(|| std::time::Duration::from_secs(config.abandoned_upload_secs));
        tokio::spawn(crate::expirer::run(
            Arc::clone(&state),
            interval,
            abandoned,
            expirer_stopped,
        ))
    });
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .fallback(serve)
        .with_state(Front { s3, state, domains });
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
            .map_err(|source| ProxyError::Serve {
                addr: local_addr,
                source,
            })
    });
    Ok(RunningProxy {
        local_addr,
        server,
        expirer: expirer.map(|task| (stop_expirer, task)),
        _watcher: watcher,
    })
}

/// What the front door routes to.
#[derive(Clone)]
struct Front {
    s3: S3Service,
    state: Arc<S3State>,
    /// The S3 domains (the bucket of a virtual-host request, for CORS).
    domains: Arc<Domains>,
}

/// Preflight `OPTIONS` requests are answered from the bucket's CORS settings; Swift's paths
/// go to the Swift API; everything else but the proxy's own routes is S3. The answer to a
/// request with `Origin` gets the CORS headers its bucket's settings give it.
async fn serve(State(front): State<Front>, request: Request) -> Response {
    let cors = Cors::of(&request, &front.domains);
    if cors.is_preflight() {
        return cors.preflight(&front.state, request.headers());
    }
    let mut response = serve_api(&front, request).await;
    cors.decorate(&front.state, &mut response);
    response
}

async fn serve_api(front: &Front, request: Request) -> Response {
    if crate::swift::is_swift(&request) {
        return crate::swift::handle(Arc::clone(&front.state), request).await;
    }
    match front
        .s3
        .call(request.map(s3s::Body::http_body_unsync))
        .await
    {
        Ok(response) => response.map(axum::body::Body::new).into_response(),
        Err(error) => {
            tracing::error!(?error, "S3 request failed outside any operation");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
            )
                .into_response()
        }
    }
}

async fn read_secret(config: &ProxyConfig) -> Result<ClusterSecret, ProxyError> {
    let path = config.cluster_secret_file.clone();
    let read = path.clone();
    let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(read))
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|e| ProxyError::Secret {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    ClusterSecret::from_hex(&text).map_err(|e: AuthError| ProxyError::Secret {
        path,
        reason: e.to_string(),
    })
}
