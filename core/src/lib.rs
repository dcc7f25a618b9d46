//! Nimbus's shared vocabulary: the ids and quantities every crate speaks of, storage policies,
//! the little-endian binary encoding that Nimbus's on-disk formats are written in, the erasure
//! codec, and the checksums clients send.
//!
//! **Invariant:** this crate does no I/O and starts no runtime; everything here is a pure value
//! or a pure function over values.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod checksum;
pub mod codec;
pub mod encoding;
pub mod fragment;
pub mod ids;
pub mod index;
pub mod policy;
