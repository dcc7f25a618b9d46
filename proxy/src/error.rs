//! What can go wrong on the data path, in terms a client API maps to its own errors (S3
//! codes and statuses in `s3::error`).

/// A data-path failure.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// No such bucket.
    #[error("no such bucket")]
    NoSuchBucket,
    /// No such key (or its newest version is a delete).
    #[error("no such key")]
    NoSuchKey,
    /// A condition (`If-Match`, `If-None-Match`) does not hold.
    #[error("precondition failed")]
    PreconditionFailed,
    /// Too few storage nodes answered: retry later.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The body's digest differs from the one the client declared.
    #[error("the body does not match its digest: {0}")]
    BadDigest(String),
    /// The body ended before its declared length.
    #[error("the body ended after {got} of {declared} bytes")]
    IncompleteBody {
        /// Bytes received.
        got: u64,
        /// Bytes declared.
        declared: u64,
    },
    /// The body is longer than declared.
    #[error("the body is longer than its declared {declared} bytes")]
    BodyTooLong {
        /// Bytes declared.
        declared: u64,
    },
    /// The client's body stream failed.
    #[error("reading the request body: {0}")]
    Body(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// A bug or an invariant broken; details are in the log.
    #[error("internal error: {0}")]
    Internal(String),
}
