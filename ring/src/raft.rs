//! The Raft layer that replicates the cluster map: everything that touches openraft lives
//! under this module (DESIGN.md, "Cluster metadata (Raft)").
//!
//! # What is persisted where
//!
//! A metadata voter keeps two things on disk, in its metadata directory:
//!
//! ```text
//! file                      owner                   holds
//! raft-log.redb             log_store::LogStore     log entries, vote, committed log id,
//!                                                   last purged log id
//! snapshots/current.snapshot  snapshot_file         the last snapshot: its meta (last log
//!                                                   id, membership, id) and the state
//!                                                   machine's bytes
//! ```
//!
//! The state machine itself (the cluster map) is rebuilt at start from the snapshot, then
//! from the log entries after it up to the committed log id, which openraft re-applies.
//!
//! # Crash safety
//!
//! A voter killed at any point restarts from these files and has lost nothing it told anyone
//! it had stored:
//!
//! - [`log_store`]: every mutation (append, vote, committed, truncate, purge) is one redb
//!   write transaction committed with [`redb::Durability::Immediate`], and openraft hears of
//!   it (the append callback fires, the call returns) only once that commit returned. A redb
//!   commit is atomic: after a crash the database holds the state before it or after it,
//!   never a mix. So a vote is on disk before the vote response leaves, an entry before it is
//!   acknowledged to the leader; a purge moves the last purged log id and deletes the entries
//!   it covers in the same transaction, so the log never has a hole.
//! - [`snapshot_file`]: a snapshot is written to a temporary file, fsynced, renamed over the
//!   old one and the directory fsynced; a crash leaves the old snapshot or the new one. Its
//!   frame carries a blake3 checksum: a torn or damaged file is reported as an error, never
//!   trusted and never a panic.
//!
//! **Invariant:** no redb call and no file I/O runs on a tokio worker thread: the async
//! entry points move them to tokio's blocking pool.

pub mod group;
pub mod liveness;
pub mod log_store;
pub mod network;
pub mod server;
pub mod snapshot_file;
pub mod state_machine;

use crate::map::{MapCommand, MapError, MapOutcome};

/// A metadata member's Raft node id.
pub type NodeId = u64;

/// What applying a command answers: its outcome, or why the map refused it (a refused
/// command is still a committed log entry; it just changed nothing).
pub type MapResponse = Result<MapOutcome, MapError>;

openraft::declare_raft_types!(
    /// The cluster map's Raft group: map commands in, their outcomes out, snapshots (the
    /// encoded map) held in memory.
    pub MapRaft:
        D = MapCommand,
        R = MapResponse,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);
