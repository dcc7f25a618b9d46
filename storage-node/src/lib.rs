//! The storage node: the process that owns a machine's disks and keeps fragments and index
//! entries on them.
//!
//! - [`io`]: the one door to disks; engines `uring` (io_uring, a ring per device on its own
//!   thread) and `portable` (blocking calls on a dedicated pool), behind [`io::Engine`].
//! - [`store`]: fragment files: write protocol, range reads that verify, quarantine.
//! - [`index`]: the index store: index entries per shard, sequence numbers, conditional apply.
//! - [`heartbeat`]: heartbeats of the node's devices to the metadata leader.
//! - [`audit`], [`workers`]: the background workers: auditor; mover, reconstructor, collector.
//!
//! **Invariant:** only `io::uring` contains `unsafe` code.

#![deny(unsafe_code)]

pub mod api;
pub mod audit;
pub mod config;
pub mod heartbeat;
pub mod index;
pub mod io;
pub mod lease;
pub mod node;
pub mod store;
pub mod workers;
