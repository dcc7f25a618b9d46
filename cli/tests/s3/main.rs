//! The S3 API end to end: `nimbus dev` (real processes on loopback: 6 storage nodes, 5 of
//! them metadata voters, and a proxy) driven by the official AWS SDK for Rust.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot set itself up should panic
#![allow(clippy::disallowed_methods)] // test threads may block

mod cluster;
mod load;
mod swift_http;
mod t10_objects;
mod t15_multipart;
mod t16_copy;
mod t17_presigned;
mod t18_versioning;
mod t20_list;
mod t30_errors;
mod t35_checksums;
mod t40_conditional;
mod t50_faults;
mod t60_swift;
mod t61_swift_objects;
mod t62_swift_containers;
mod t70_tagging_cors;
mod t80_repair;
mod t85_gc;
mod t86_placement;
mod t87_rebalance;
mod t88_index_sync;
mod t89_gc_lone_reference;
mod t90_index_rebalance;
mod t91_read_repair;
mod t92_leases;
