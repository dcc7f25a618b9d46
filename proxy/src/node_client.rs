//! The proxy's client of the internal API (docs/internal-api.md): signed HTTP/1.1 requests to
//! storage nodes over pooled connections, with streaming bodies both ways.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use nimbus_core::auth::{ClusterSecret, DATE_HEADER, EPOCH_HEADER};
use nimbus_ring::map::DeviceKey;
use tokio::sync::mpsc;

/// A request body: a whole buffer or a stream of chunks.
pub type RequestBody = BoxBody<Bytes, std::io::Error>;

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);
/// How long a node may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest small (JSON or index) answer read in full.
pub const MAX_SMALL_ANSWER: usize = 16 << 20;

/// Why a call to a storage node failed before it answered.
#[derive(Debug, thiserror::Error)]
pub enum NodeCallError {
    /// The request could not be built (a bad path: a bug).
    #[error("request to {node}: {reason}")]
    Request {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// The node did not answer (refused, reset, timed out).
    #[error("{node}: {reason}")]
    Unreachable {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
}

/// Sends signed requests to storage nodes. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct NodeClient {
    secret: ClusterSecret,
    http: Client<HttpConnector, RequestBody>,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient").finish_non_exhaustive()
    }
}

/// A small answer read in full.
#[derive(Debug)]
pub struct SmallAnswer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: hyper::HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl SmallAnswer {
    /// Returns the `error` code of an error answer (`{"error": code, …}`), if any.
    #[must_use]
    pub fn error_code(&self) -> Option<String> {
        let value: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        value.get("error")?.as_str().map(str::to_owned)
    }
}

/// Returns a body of one buffer.
#[must_use]
pub fn full_body(bytes: Bytes) -> RequestBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Returns an empty body.
#[must_use]
pub fn empty_body() -> RequestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Returns a body streamed from a channel, and the channel's sender. Dropping the sender
/// ends the body; sending an error aborts the request.
#[must_use]
pub fn channel_body(depth: usize) -> (mpsc::Sender<Result<Bytes, std::io::Error>>, RequestBody) {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(depth);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item.map(Frame::data), rx))
    });
    (tx, BodyExt::boxed(StreamBody::new(Box::pin(stream))))
}

impl NodeClient {
    /// Returns a client signing with `secret`.
    #[must_use]
    pub fn new(secret: ClusterSecret) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        NodeClient { secret, http }
    }

    /// Sends a request to `node` and returns the answer's head with its body unread. No
    /// timeout: callers bound the call as a whole.
    ///
    /// # Errors
    /// [`NodeCallError`] when the node did not answer.
    pub async fn send(
        &self,
        node: std::net::SocketAddr,
        method: Method,
        path_and_query: &str,
        epoch: u64,
        headers: &[(&str, String)],
        body: RequestBody,
    ) -> Result<Response<Incoming>, NodeCallError> {
        let date = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let authorization = self
            .secret
            .sign(method.as_str(), path_and_query, date, epoch);
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("http://{node}{path_and_query}"))
            .header(DATE_HEADER, date)
            .header(EPOCH_HEADER, epoch)
            .header("authorization", authorization);
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        let request = builder.body(body).map_err(|e| NodeCallError::Request {
            node: node.to_string(),
            reason: e.to_string(),
        })?;
        self.http
            .request(request)
            .await
            .map_err(|e| NodeCallError::Unreachable {
                node: node.to_string(),
                reason: error_chain(&e),
            })
    }

    /// Sends `call` to `device`'s node and reads an answer of at most
    /// [`MAX_SMALL_ANSWER`] bytes in full, all within the call's timeout.
    ///
    /// # Errors
    /// [`NodeCallError`] when the node did not answer in time.
    pub async fn call(
        &self,
        device: &DeviceKey,
        call: SmallCall<'_>,
    ) -> Result<SmallAnswer, NodeCallError> {
        let node = device.node;
        let SmallCall {
            method,
            path,
            epoch,
            headers,
            body,
            timeout,
        } = call;
        let exchange = async {
            let response = self
                .send(node, method, &path, epoch, &headers, full_body(body))
                .await?;
            let (parts, body) = response.into_parts();
            let (status, headers) = (parts.status, parts.headers);
            let body = Limited::new(body, MAX_SMALL_ANSWER)
                .collect()
                .await
                .map_err(|e| NodeCallError::Unreachable {
                    node: node.to_string(),
                    reason: format!("reading the answer: {e}"),
                })?
                .to_bytes();
            Ok(SmallAnswer {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| NodeCallError::Unreachable {
                node: node.to_string(),
                reason: format!("no answer within {timeout:?}"),
            })?
    }
}

/// A request whose answer is small and read in full ([`NodeClient::call`]).
#[derive(Debug)]
pub struct SmallCall<'a> {
    method: Method,
    path: String,
    epoch: u64,
    headers: Vec<(&'a str, String)>,
    body: Bytes,
    timeout: Duration,
}

impl<'a> SmallCall<'a> {
    /// A request without headers or body, signed for `epoch`, bounded by `timeout`.
    #[must_use]
    pub fn new(method: Method, path: String, epoch: u64, timeout: Duration) -> Self {
        SmallCall {
            method,
            path,
            epoch,
            headers: Vec::new(),
            body: Bytes::new(),
            timeout,
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: &'a str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn body(mut self, body: Bytes) -> Self {
        self.body = body;
        self
    }
}

/// Formats an error with its sources, which hyper keeps the useful part in.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// A stream of a channel's items: what response bodies are made of.
#[derive(Debug)]
pub struct ChannelStream<T>(pub mpsc::Receiver<T>);

impl<T> futures_util::Stream for ChannelStream<T> {
    type Item = T;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
#[must_use]
pub fn encode_query(value: &str) -> String {
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
