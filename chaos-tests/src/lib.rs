//! `nimbus-chaos`: starts a real multi-process Nimbus cluster (each storage node in a network
//! namespace of its own), runs a recorded S3 workload against it while injecting faults on a
//! seeded schedule, and checks the history: nothing acknowledged lost, no corrupt or stale
//! read, listings that converge, full redundancy again within a bound.

#![allow(clippy::disallowed_methods)] // the harness's own threads may block

pub mod checkers;
pub mod cluster;
pub mod faults;
pub mod history;
pub mod interrupt;
pub mod net;
pub mod payload;
pub mod report;
pub mod run;
pub mod scenarios;
pub mod workload;
