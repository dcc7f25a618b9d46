//! Data-path errors as S3 errors: one `match`, so every operation answers a failure the
//! same way.

use s3s::{S3Error, s3_error};

use crate::error::DataError;

/// Maps a data-path error to its S3 error (code and status).
#[must_use]
pub fn to_s3(e: DataError) -> S3Error {
    match e {
        DataError::NoSuchBucket => s3_error!(NoSuchBucket),
        DataError::NoSuchKey => s3_error!(NoSuchKey),
        DataError::PreconditionFailed => s3_error!(PreconditionFailed),
        DataError::Unavailable(m) => {
            tracing::warn!(error = %m, "503 to the client");
            s3_error!(ServiceUnavailable, "{m}")
        }
        DataError::BadDigest(m) => s3_error!(BadDigest, "{m}"),
        DataError::IncompleteBody { got, declared } => s3_error!(
            IncompleteBody,
            "the body ended after {got} of the {declared} bytes declared"
        ),
        DataError::BodyTooLong { declared } => s3_error!(
            InvalidRequest,
            "the body is longer than the {declared} bytes declared"
        ),
        DataError::Body(m) => s3_error!(IncompleteBody, "reading the body: {m}"),
        DataError::BadRequest(m) => s3_error!(InvalidArgument, "{m}"),
        DataError::Internal(m) => {
            tracing::error!(error = %m, "internal error");
            s3_error!(InternalError)
        }
    }
}
