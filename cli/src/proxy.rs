//! `nimbus proxy --config FILE`: runs a proxy (the S3 front door) until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use nimbus_proxy::ProxyConfig;

/// Arguments of `nimbus proxy`.
#[derive(Args)]
pub struct ProxyArgs {
    /// The proxy's configuration (TOML; every option is in etc/proxy.example.toml).
    #[arg(long)]
    config: PathBuf,
    /// Listen on this address instead of the file's `listen` (port 0: any free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

/// Runs the proxy.
///
/// # Errors
/// A bad configuration, an unreadable secret, an address that cannot be bound.
pub fn run(args: ProxyArgs) -> Result<ExitCode> {
    crate::telemetry::init();
    if !crate::shutdown::follow_supervisor() {
        bail!("nimbus dev, which started this proxy, is gone");
    }
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("read {}", args.config.display()))?;
    let mut config =
        ProxyConfig::parse(&text).with_context(|| format!("read {}", args.config.display()))?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async {
        let proxy = nimbus_proxy::start(&config, crate::shutdown::signal())
            .await
            .context("start proxy")?;
        // One line on stdout that scripts and test harnesses wait for.
        let mut out = std::io::stdout().lock();
        writeln!(out, "nimbus proxy listening on {}", proxy.local_addr)?;
        out.flush()?;
        drop(out);
        proxy.wait().await.context("serve")?;
        tracing::info!("proxy stopped");
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_parses() {
        let text = include_str!("../../etc/proxy.example.toml");
        let c = ProxyConfig::parse(text).unwrap();
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(c.meta.len(), 3);
        assert_eq!(c.region, "us-east-1");
        assert_eq!(c.segment_bytes, 1024 * 1024);
        assert_eq!(c.inline_max, 4096);
    }
}
