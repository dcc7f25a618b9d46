//! `nimbus storage --config FILE`: runs a storage node until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use nimbus_storage_node::config::Config;

/// Arguments of `nimbus storage`.
#[derive(Args)]
pub struct StorageArgs {
    /// The node's configuration (TOML; every option is in etc/storage.example.toml).
    #[arg(long)]
    config: PathBuf,
    /// Listen on this address instead of the file's `listen` (port 0: any free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// I/O engine instead of the file's `io_engine`: uring, portable or auto.
    #[arg(long)]
    io_engine: Option<String>,
}

/// Runs the node.
///
/// # Errors
/// A bad configuration, a device that cannot be opened, an address that cannot be bound.
pub fn run(args: StorageArgs) -> Result<ExitCode> {
    crate::telemetry::init();
    if !crate::shutdown::follow_supervisor() {
        bail!("nimbus dev, which started this node, is gone");
    }
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("read {}", args.config.display()))?;
    let mut config = Config::parse(&text)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(engine) = args.io_engine {
        config.io_engine = engine;
    }
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async {
        let node = nimbus_storage_node::node::start(&config, crate::shutdown::signal())
            .await
            .context("start storage node")?;
        // One line on stdout that scripts and test harnesses wait for.
        let mut out = std::io::stdout().lock();
        writeln!(out, "nimbus storage listening on {}", node.local_addr)?;
        if let Some(meta) = &node.meta {
            writeln!(
                out,
                "nimbus meta {} listening on {}",
                meta.id(),
                meta.local_addr()
            )?;
        }
        out.flush()?;
        drop(out);
        node.wait().await.context("serve")?;
        tracing::info!("storage node stopped");
        Ok(ExitCode::SUCCESS)
    })
}
