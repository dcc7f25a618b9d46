//! The drivers: one per API, each turning an operation into requests and its outcome into
//! bytes moved or a classified error. [`Driver`] is an enum over them, so the runner calls
//! one type without boxing futures.

mod http;
pub mod s3;
mod s3_http;
pub mod swift;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::SetupError;

/// How an operation failed, in classes that a report can count: an HTTP status (with the
/// S3 error code when the server sent one), a client-side timeout, a connection failure,
/// a payload that did not verify, or anything else.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The server answered with an error status.
    Status {
        /// The HTTP status.
        status: u16,
        /// The S3 error code, when the body had one.
        code: Option<String>,
    },
    /// The operation did not finish within `--timeout`.
    Timeout,
    /// Connecting, sending or receiving failed (including a body cut short).
    Connection,
    /// The payload (or its length) was not what `--verify` expected.
    Verify,
    /// Anything else (a response that did not parse, a request the client refused).
    Other,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Status {
                status,
                code: Some(code),
            } => write!(f, "http {status} {code}"),
            ErrorKind::Status { status, code: None } => write!(f, "http {status}"),
            ErrorKind::Timeout => f.write_str("timeout"),
            ErrorKind::Connection => f.write_str("connection"),
            ErrorKind::Verify => f.write_str("verify"),
            ErrorKind::Other => f.write_str("other"),
        }
    }
}

/// A failed operation: its class and a message for the first one of each class.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct OpError {
    /// The class, counted in reports.
    pub kind: ErrorKind,
    /// What the client or server said.
    pub detail: String,
}

impl OpError {
    /// Returns an error of `kind` with `detail`.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> OpError {
        OpError {
            kind,
            detail: detail.into(),
        }
    }
}

/// What a GET returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetOutcome {
    /// Body bytes received.
    pub bytes: u64,
    /// The object's whole size, from Content-Length or Content-Range.
    pub object_size: u64,
}

/// A GET's outcome once its body has been read: `bytes` received of an object of
/// `object_size` bytes, checked by `verifier` when there is one.
///
/// # Errors
///
/// [`ErrorKind::Verify`] for a wrong byte, or fewer or more bytes than the range asked for.
pub(crate) fn outcome(
    key: &str,
    verifier: Option<crate::payload::Verifier>,
    bytes: u64,
    range: Option<ByteRange>,
    object_size: u64,
) -> Result<GetOutcome, OpError> {
    if let Some(v) = verifier {
        let want = range.map_or(object_size, |r| {
            r.len.min(object_size.saturating_sub(r.offset))
        });
        if !v.ok() || bytes != want {
            return Err(OpError::new(
                ErrorKind::Verify,
                format!(
                    "{key}: {bytes} bytes received, {want} expected, content ok: {}",
                    v.ok()
                ),
            ));
        }
    }
    Ok(GetOutcome { bytes, object_size })
}

/// A ranged read: `len` bytes from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub offset: u64,
    /// Bytes wanted (at least 1).
    pub len: u64,
}

impl ByteRange {
    /// The `Range` header value.
    #[must_use]
    pub fn header(&self) -> String {
        format!(
            "bytes={}-{}",
            self.offset,
            self.offset + self.len.max(1) - 1
        )
    }
}

/// A driver for one API, set up (authenticated, bucket or container created).
#[derive(Debug, Clone)]
pub enum Driver {
    /// S3 through the AWS SDK for Rust.
    S3(Box<s3::S3Driver>),
    /// Swift v1 over plain HTTP.
    Swift(Box<swift::SwiftDriver>),
}

impl Driver {
    /// Creates the bucket or container if it does not exist.
    ///
    /// # Errors
    ///
    /// [`SetupError::Bucket`] when the server refuses.
    pub async fn ensure_bucket(&self) -> Result<(), SetupError> {
        match self {
            Driver::S3(d) => d.ensure_bucket().await,
            Driver::Swift(d) => d.ensure_container().await,
        }
    }

    /// Uploads `payload` as object `key` in one request.
    ///
    /// # Errors
    ///
    /// [`OpError`] with the failure's class.
    pub async fn put(&self, key: &str, payload: &crate::payload::Payload) -> Result<(), OpError> {
        match self {
            Driver::S3(d) => d.put(key, payload).await,
            Driver::Swift(d) => d.put(key, payload).await,
        }
    }

    /// Uploads object `key` of `size` bytes (content from [`crate::payload`]) in parts of
    /// `part_size` bytes.
    ///
    /// # Errors
    ///
    /// [`OpError`] with the failure's class; Swift answers [`ErrorKind::Other`] (no
    /// multipart driver for Swift yet, refused before the run).
    pub async fn multipart(&self, key: &str, size: u64, part_size: u64) -> Result<(), OpError> {
        match self {
            Driver::S3(d) => d.multipart(key, size, part_size).await,
            Driver::Swift(_) => Err(OpError::new(
                ErrorKind::Other,
                "multipart is an S3 operation",
            )),
        }
    }

    /// Downloads object `key` (or `range` of it), verifying the content when `verify`.
    ///
    /// # Errors
    ///
    /// [`OpError`] with the failure's class; [`ErrorKind::Verify`] for a wrong byte.
    pub async fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
        verify: bool,
    ) -> Result<GetOutcome, OpError> {
        match self {
            Driver::S3(d) => d.get(key, range, verify).await,
            Driver::Swift(d) => d.get(key, range, verify).await,
        }
    }

    /// Reads object `key`'s metadata; returns its size.
    ///
    /// # Errors
    ///
    /// [`OpError`] with the failure's class.
    pub async fn head(&self, key: &str) -> Result<u64, OpError> {
        match self {
            Driver::S3(d) => d.head(key).await,
            Driver::Swift(d) => d.head(key).await,
        }
    }

    /// Deletes object `key`.
    ///
    /// # Errors
    ///
    /// [`OpError`] with the failure's class.
    pub async fn delete(&self, key: &str) -> Result<(), OpError> {
        match self {
            Driver::S3(d) => d.delete(key).await,
            Driver::Swift(d) => d.delete(key).await,
        }
    }

    /// Lists one page of at most `max_keys` keys under `prefix`; returns how many came.
    ///
    /// # Errors
    ///
    /// [`OpError`] with the failure's class.
    pub async fn list(&self, prefix: &str, max_keys: u32) -> Result<u64, OpError> {
        match self {
            Driver::S3(d) => d.list(prefix, max_keys).await,
            Driver::Swift(d) => d.list(prefix, max_keys).await,
        }
    }
}
