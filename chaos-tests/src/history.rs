//! The history of a run: every request a client sent, when it was sent and answered, how it
//! ended and what it saw. The checkers judge a run from this alone.
//!
//! Times are microseconds since the run started, read from one monotonic clock by every
//! client. A request *precedes* another when it was answered before the other was sent
//! (`a.end_us < b.start_us`); requests that overlap may take effect in either order.

use serde::{Deserialize, Serialize};

/// Which write put an object's bytes: unique in a run, carried in the object's user metadata
/// (`x-amz-meta-chaos-write`), and the seed of its bytes ([`crate::payload`]).
pub type WriteId = u64;

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Acknowledged: a 2xx (for a GET, also a 404 that says the key is absent).
    Ok,
    /// Refused with a 4xx: it took no effect.
    Failed(String),
    /// A 5xx, a timeout or a broken connection: it may or may not have taken effect.
    Unknown(String),
}

/// What a request asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A PUT (or, with `multipart`, a multipart upload completed) of `size` bytes made by
    /// write `write`.
    Put {
        /// The write.
        write: WriteId,
        /// Bytes.
        size: u64,
        /// Uploaded in parts.
        multipart: bool,
    },
    /// A DELETE.
    Delete,
    /// A GET, of bytes `start..end` when ranged.
    Get {
        /// The range asked for, if any.
        range: Option<(u64, u64)>,
    },
    /// A LIST of the whole bucket (`key` is empty).
    List,
}

/// What a request saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observed {
    /// Nothing to see: a write, a delete, or a request that did not succeed.
    Nothing,
    /// A GET answered 404: the key is absent.
    NotFound,
    /// A GET returned an object.
    Object {
        /// The write its metadata names; `None` when it names none (bytes no one wrote).
        write: Option<WriteId>,
        /// The bytes returned are exactly that write's bytes (or the range of them asked
        /// for): same length, same content.
        intact: bool,
    },
    /// A LIST returned these keys, in order.
    Keys(Vec<String>),
}

/// When a request was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// During the load, while faults come and go.
    Load,
    /// After the faults stopped and the cluster healed: the final reads and listings.
    Final,
}

/// One request and its outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Its place in the history.
    pub id: u64,
    /// The client that sent it.
    pub client: u32,
    /// The phase it was sent in.
    pub phase: Phase,
    /// The bucket.
    pub bucket: String,
    /// The key (empty for a LIST).
    pub key: String,
    /// What it asked for.
    pub op: Op,
    /// Sent at.
    pub start_us: u64,
    /// Answered (or given up) at.
    pub end_us: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// What it saw.
    pub observed: Observed,
}

impl Record {
    /// Whether it changes its key: a PUT or a DELETE.
    #[must_use]
    pub fn is_mutation(&self) -> bool {
        matches!(self.op, Op::Put { .. } | Op::Delete)
    }

    /// Whether it was acknowledged.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }

    /// Whether it may have taken effect: acknowledged or unknown.
    #[must_use]
    pub fn may_have_applied(&self) -> bool {
        !matches!(self.outcome, Outcome::Failed(_))
    }

    /// Whether it was answered before `other` was sent.
    #[must_use]
    pub fn precedes(&self, other: &Record) -> bool {
        self.end_us < other.start_us
    }

    /// The write it made, for a PUT.
    #[must_use]
    pub fn write(&self) -> Option<WriteId> {
        match self.op {
            Op::Put { write, .. } => Some(write),
            _ => None,
        }
    }
}

/// A whole run's requests, in the order they were answered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Every request.
    pub records: Vec<Record>,
}
