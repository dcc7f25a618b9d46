//! `nimbus-chaos`: starts a real multi-process Nimbus cluster, runs a recorded S3 workload
//! against it while injecting faults on a seeded schedule, and checks the history.

#![allow(clippy::disallowed_methods)] // the harness's own threads may block

pub mod checkers;
pub mod history;
pub mod payload;
