//! The errors of the library, one enum per thing that can fail: parsing a flag, setting a
//! driver up, running a workload, reading or plotting results.

use std::path::PathBuf;

/// A command-line value that does not parse (a size, a duration, a mix, a size spec).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The value is empty.
    #[error("empty value")]
    Empty,
    /// A number that does not parse or is out of range.
    #[error("bad number {0:?}")]
    Number(String),
    /// A unit that is not one of those listed.
    #[error(
        "unknown unit {unit:?} in {value:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB; ms, s, m, h)"
    )]
    Unit {
        /// The whole value.
        value: String,
        /// The unit that was not understood.
        unit: String,
    },
    /// An operation name that is not known.
    #[error("unknown operation {0:?} (use put, get, get-range, head, delete, list, multipart)")]
    Operation(String),
    /// A mix or size list entry without `=weight` / `:weight`, or with a zero total.
    #[error("bad weighted list {value:?}: {reason}")]
    Weights {
        /// The whole value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A range `A..B` with `A > B`.
    #[error("empty size range {0:?}: the lower bound is above the upper one")]
    Range(String),
}

/// A driver that cannot be set up: missing credentials, a bad endpoint, a failed auth.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A required setting is missing (flag or environment variable named).
    #[error("missing {0}")]
    Missing(&'static str),
    /// The endpoint or storage URL does not parse as an http(s) URL.
    #[error("bad url {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// Swift v1 auth did not answer with a token and a storage URL.
    #[error("swift auth at {url} failed: {reason}")]
    Auth {
        /// The auth URL.
        url: String,
        /// Status or transport error.
        reason: String,
    },
    /// Creating the bucket or container failed.
    #[error("create bucket/container {bucket:?}: {reason}")]
    Bucket {
        /// Its name.
        bucket: String,
        /// The error kind as reported.
        reason: String,
    },
    /// The workload asks for something this API does not do.
    #[error("{0}")]
    Unsupported(String),
    /// The prepare phase could not upload the data set.
    #[error("prepare: {failed} of {objects} uploads failed, first: {first}")]
    Prepare {
        /// Objects in the data set.
        objects: u64,
        /// Uploads that failed.
        failed: u64,
        /// The first failure's kind.
        first: String,
    },
}

/// A results file that cannot be read, or a chart that cannot be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file that is not a nimbus-bench result.
    #[error("{path}: not a nimbus-bench result: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// plotters failed to draw.
    #[error("draw {path}: {reason}")]
    Plot {
        /// The chart being drawn.
        path: PathBuf,
        /// The drawing error.
        reason: String,
    },
    /// Nothing to compare or plot.
    #[error("{0}")]
    Empty(&'static str),
}
