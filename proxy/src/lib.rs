//! The proxy: stateless front end of a Nimbus cluster. It speaks S3 to clients, hashes each
//! object onto the ring, streams erasure-coded fragments to the storage nodes and reads them
//! back, and keeps no per-object state between requests.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod config;
pub mod cors;
pub mod data;
pub mod error;
pub mod expirer;
pub mod index;
pub mod meta_write;
pub mod node_client;
pub mod placement;
pub mod references;
pub mod s3;
pub mod server;
pub mod swift;

pub use config::ProxyConfig;
pub use server::{ProxyError, RunningProxy, start};
