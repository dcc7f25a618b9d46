//! Starting a proxy: read the secret, bind the S3 API and serve until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::ProxyConfig;

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
    /// The listen address could not be bound, or serving failed.
    #[error("S3 API on {addr}: {source}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A proxy that is serving.
pub struct RunningProxy {
    /// The address the S3 API listens on (useful with port 0).
    pub local_addr: SocketAddr,
    server: JoinHandle<Result<(), ProxyError>>,
}

impl RunningProxy {
    /// Waits until the server stops (after the shutdown future given to [`start`] resolves).
    ///
    /// # Errors
    /// [`ProxyError::Serve`] when serving failed.
    pub async fn wait(self) -> Result<(), ProxyError> {
        self.server.await.unwrap_or_else(|join| {
            Err(ProxyError::Serve {
                addr: self.local_addr,
                source: std::io::Error::other(join.to_string()),
            })
        })
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
    let app = Router::new().route("/health", get(|| async { "ok" }));
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| ProxyError::Serve {
                addr: local_addr,
                source,
            })
    });
    Ok(RunningProxy { local_addr, server })
}
