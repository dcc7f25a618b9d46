//! The Swift driver: v1 auth (`X-Auth-User`/`X-Auth-Key` → `X-Auth-Token`,
//! `X-Storage-Url`), then plain HTTP/1.1 requests with hyper on a pooled client.
//! The token is taken once, at setup: runs longer than its lifetime see 401s.

use http_body_util::BodyExt;
use hyper::header::{CONTENT_LENGTH, HeaderValue, RANGE};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::driver::http::{drain, encode_path, encode_query, header_u64, read_object};
use crate::driver::{ByteRange, ErrorKind, GetOutcome, OpError};
use crate::error::SetupError;
use crate::payload::{Payload, PayloadBody};

/// Where and as whom the Swift driver connects.
#[derive(Debug, Clone)]
pub struct SwiftSettings {
    /// The v1 auth URL, e.g. `http://127.0.0.1:8080/auth/v1.0`.
    pub auth_url: String,
    /// The user, as `account:user`.
    pub user: String,
    /// The key.
    pub key: String,
    /// The container the run uses.
    pub container: String,
}

/// The Swift driver: a hyper client, the token and the storage URL.
#[derive(Debug, Clone)]
pub struct SwiftDriver {
    client: Client<HttpConnector, PayloadBody>,
    token: HeaderValue,
    /// `X-Storage-Url` without a trailing slash, then `/` and the container.
    container_url: String,
    container: String,
}

impl SwiftDriver {
    /// Authenticates (one request to the auth URL).
    ///
    /// # Errors
    ///
    /// [`SetupError::Url`] for a URL that is not plain http (TLS is not built in),
    /// [`SetupError::Auth`] when auth fails or lacks a token or storage URL.
    pub async fn connect(settings: &SwiftSettings) -> Result<SwiftDriver, SetupError> {
        let client = Client::builder(TokioExecutor::new()).build_http::<PayloadBody>();
        let uri = parse_http_uri(&settings.auth_url)?;
        let auth_error = |reason: String| SetupError::Auth {
            url: settings.auth_url.clone(),
            reason,
        };
        let request = Request::get(uri)
            .header("X-Auth-User", &settings.user)
            .header("X-Auth-Key", &settings.key)
            .body(PayloadBody::empty())
            .map_err(|e| auth_error(e.to_string()))?;
        let response = client
            .request(request)
            .await
            .map_err(|e| auth_error(e.to_string()))?;
        if !response.status().is_success() {
            return Err(auth_error(format!("status {}", response.status())));
        }
        let headers = response.headers();
        let token = headers
            .get("x-auth-token")
            .cloned()
            .ok_or_else(|| auth_error("no X-Auth-Token".to_owned()))?;
        let storage_url = headers
            .get("x-storage-url")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| auth_error("no X-Storage-Url".to_owned()))?
            .trim_end_matches('/')
            .to_owned();
        parse_http_uri(&storage_url)?;
        Ok(SwiftDriver {
            client,
            token,
            container_url: format!("{storage_url}/{}", encode_path(&settings.container)),
            container: settings.container.clone(),
        })
    }

    /// PUTs the container (Swift answers 201 or 202 whether it existed or not).
    ///
    /// # Errors
    ///
    /// [`SetupError::Bucket`] for another answer.
    pub async fn ensure_container(&self) -> Result<(), SetupError> {
        self.send(Method::PUT, &self.container_url, PayloadBody::empty(), None)
            .await
            .map(|_| ())
            .map_err(|e| SetupError::Bucket {
                bucket: self.container.clone(),
                reason: e.to_string(),
            })
    }

    fn object_url(&self, key: &str) -> String {
        format!("{}/{}", self.container_url, encode_path(key))
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        body: PayloadBody,
        range: Option<ByteRange>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, OpError> {
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .header("X-Auth-Token", self.token.clone())
            .header(CONTENT_LENGTH, body.remaining());
        if let Some(range) = range {
            request = request.header(RANGE, range.header());
        }
        let request = request
            .body(body)
            .map_err(|e| OpError::new(ErrorKind::Other, e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| OpError::new(ErrorKind::Connection, format!("{url}: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            // Drain the (short) error body so the connection can be reused.
            let _ = response.into_body().collect().await;
            return Err(OpError::new(
                ErrorKind::Status {
                    status: status.as_u16(),
                    code: None,
                },
                format!("{url}: {status}"),
            ));
        }
        Ok(response)
    }

    /// PUT object.
    ///
    /// # Errors
    ///
    /// The classified failure.
    pub async fn put(&self, key: &str, payload: &Payload) -> Result<(), OpError> {
        let response = self
            .send(Method::PUT, &self.object_url(key), payload.body(), None)
            .await?;
        drain(response).await.map(|_| ())
    }

    /// GET object, streaming the body (checked as it arrives when `verify`).
    ///
    /// # Errors
    ///
    /// The classified failure; [`ErrorKind::Verify`] for a wrong byte or length.
    pub async fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
        verify: bool,
    ) -> Result<GetOutcome, OpError> {
        let response = self
            .send(
                Method::GET,
                &self.object_url(key),
                PayloadBody::empty(),
                range,
            )
            .await?;
        read_object(key, response, range, verify).await
    }

    /// HEAD object; returns its size.
    ///
    /// # Errors
    ///
    /// The classified failure.
    pub async fn head(&self, key: &str) -> Result<u64, OpError> {
        let response = self
            .send(
                Method::HEAD,
                &self.object_url(key),
                PayloadBody::empty(),
                None,
            )
            .await?;
        Ok(header_u64(&response, CONTENT_LENGTH.as_str()).unwrap_or(0))
    }

    /// DELETE object.
    ///
    /// # Errors
    ///
    /// The classified failure.
    pub async fn delete(&self, key: &str) -> Result<(), OpError> {
        let response = self
            .send(
                Method::DELETE,
                &self.object_url(key),
                PayloadBody::empty(),
                None,
            )
            .await?;
        drain(response).await.map(|_| ())
    }

    /// GET container as plain text, one page; returns how many names came.
    ///
    /// # Errors
    ///
    /// The classified failure.
    pub async fn list(&self, prefix: &str, max_keys: u32) -> Result<u64, OpError> {
        let url = format!(
            "{}?prefix={}&limit={max_keys}",
            self.container_url,
            encode_query(prefix)
        );
        let response = self
            .send(Method::GET, &url, PayloadBody::empty(), None)
            .await?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| OpError::new(ErrorKind::Connection, format!("body: {e}")))?
            .to_bytes();
        Ok(body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64)
    }
}

fn parse_http_uri(url: &str) -> Result<Uri, SetupError> {
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| SetupError::Url {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
    if uri.scheme_str() != Some("http") {
        return Err(SetupError::Url {
            url: url.to_owned(),
            reason: "only http:// is supported by the Swift driver".to_owned(),
        });
    }
    Ok(uri)
}
