//! The consistent ring: which devices hold each object's fragments.
//!
//! - [`builder`] keeps the operator's devices and assigns each partition's slots to devices:
//!   in proportion to weight, dispersed across failure domains, moving as little as possible.
//! - [`placement`] is the built, immutable [`Ring`]: object path → partition → devices in O(1),
//!   and the handoff order used when a primary is unavailable.
//! - [`report`] explains a ring: balance, dispersion and what a change moves.
//! - [`format`](mod@format) and [`file`](mod@file) keep rings and builders on disk in a versioned, checksummed format
//!   that is never half-written.
//!
//! **Invariant:** `builder`, `placement` and `report` are pure: no I/O, no clock, no global
//! randomness. Time and seeds come in as arguments, so every member of the cluster that applies
//! the same changes computes the same ring.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod builder;
pub mod device;
pub mod error;
pub mod file;
pub mod format;
pub mod liveness;
pub mod map;
pub mod placement;
pub mod raft;
pub mod report;
mod rng;
mod topology;

pub use builder::{RebalanceReport, RingBuilder};
pub use device::{Device, DeviceSpec, Location, Tier};
pub use error::{BuilderError, FormatError, RingFileError};
pub use placement::{Handoffs, Ring};
