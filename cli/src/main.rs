//! `nimbus`: the one binary operators run: `nimbus dev` (a whole local cluster), `nimbus ring …`
//! (ring builder files, usable before any cluster exists), `nimbus storage` (a storage node),
//! `nimbus proxy` (the S3 front door) and `nimbus admin …` (a running cluster's metadata).

#![forbid(unsafe_code)]

mod admin;
mod dev;
mod proxy;
mod ring;
mod shutdown;
mod storage;
mod telemetry;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Nimbus: a distributed, erasure-coded object store speaking S3 and Swift.
#[derive(Parser)]
#[command(name = "nimbus", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local cluster on loopback: storage nodes, metadata members and a proxy, set
    /// up on first run; prints the S3 endpoint and credentials.
    Dev(dev::DevArgs),
    /// Build and inspect rings: which devices hold each object's fragments.
    Ring(ring::RingArgs),
    /// Run a storage node: the process that owns a machine's disks.
    Storage(storage::StorageArgs),
    /// Run a proxy: the S3 front door of a cluster.
    Proxy(proxy::ProxyArgs),
    /// Administer a running cluster through its metadata members: membership, storage
    /// policies and rings, accounts, credentials, buckets.
    Admin(admin::AdminArgs),
}

/// Every Nimbus process allocates through mimalloc: the request paths allocate small buffers
/// at a high rate across threads, where it costs less CPU than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev(args) => dev::run(args),
        Command::Ring(args) => ring::run(args),
        Command::Storage(args) => storage::run(args),
        Command::Proxy(args) => proxy::run(args),
        Command::Admin(args) => admin::run(args),
    };
    match result {
        Ok(code) => code,
        // A reader that went away (`nimbus ring show … | head`) is not an error to report.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
