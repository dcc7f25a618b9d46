//! The proxy: stateless front end of a Nimbus cluster. It speaks S3 to clients, hashes each
//! object onto the ring, streams erasure-coded fragments to the storage nodes and reads them
//! back, and keeps no per-object state between requests.

#![forbid(unsafe_code)]

pub mod config;
pub mod server;

pub use config::ProxyConfig;
pub use server::{ProxyError, RunningProxy, start};
