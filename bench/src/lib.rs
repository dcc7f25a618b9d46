//! nimbus-bench: a load generator for any S3 or Swift endpoint, and the tools to compare
//! and plot its results.
//!
//! - [`workload`]: the operation mix, object sizes, the key space and key distributions
//!   (uniform, Zipf), all drawn from a seeded generator;
//! - [`payload`]: object content that depends on key and size only, so GETs can be
//!   verified without shared state;
//! - [`driver`]: the S3 (AWS SDK for Rust) and Swift (v1 auth, hyper) drivers;
//! - [`runner`]: prepare phase, closed- and open-loop workers, warmup, progress;
//! - [`report`]: histograms, errors by kind, CPU use, the JSON result and its table;
//! - [`compare`] and [`plot`]: side-by-side tables and SVG charts of results.
//!
//! It talks to clusters over their public APIs only, like any user.

#![forbid(unsafe_code)]

pub mod compare;
pub mod cpu;
pub mod driver;
pub mod error;
pub mod payload;
pub mod plot;
pub mod report;
pub mod runner;
pub mod units;
pub mod workload;
