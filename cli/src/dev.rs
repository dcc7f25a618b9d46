//! `nimbus dev`: a whole cluster on loopback, as separate processes of this binary, with
//! its data under one directory: six storage nodes of two devices each (the first five also
//! host the metadata members) and a proxy. The first run sets the cluster up
//! ([`bootstrap`]); later runs start the same cluster again, with the same ports and
//! credentials. It runs until SIGINT or SIGTERM, or until a process dies.
//!
//! **Invariant:** when `nimbus dev` returns, none of its processes runs (see [`supervisor`]).

mod bootstrap;
mod layout;
mod supervisor;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Args;

use crate::admin::client::MetaClient;
use layout::{Credentials, Layout, META_MEMBERS, NODES};
use supervisor::Supervisor;

/// How long a process may take to say it is listening.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Arguments of `nimbus dev`.
#[derive(Args)]
pub struct DevArgs {
    /// The directory of everything: data, configurations, logs, credentials (kept across
    /// runs; remove it to start over).
    #[arg(long, value_name = "DIR", default_value = "nimbus-data")]
    data: PathBuf,
    /// The proxy's S3 port on 127.0.0.1 [default: 9000, or the first run's].
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// Storage node i listens on BASE+i (1 to 6) and metadata member i on BASE+100+i (1 to
    /// 5) [default: 6200, or the first run's].
    #[arg(long, value_name = "PORT")]
    base_port: Option<u16>,
    /// Seconds a fragment no index entry references stays before the collector removes it,
    /// and a delete's tombstone before anti-entropy forgets it (production defaults 3600 and
    /// 7 days; short here, so that deletes free space while you watch).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    gc_grace_secs: u64,
    /// Seconds after which the proxy aborts a multipart upload never completed (production
    /// default: 7 days).
    #[arg(long, value_name = "SECS", default_value_t = 7 * 24 * 3600)]
    abandoned_upload_secs: u64,
    /// Seconds between index anti-entropy passes, in which each shard's replicas compare
    /// and converge (production default 600).
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    index_sync_secs: u64,
    /// Bytes each device's index write-ahead log holds before a checkpoint; 0 commits every
    /// batch of index writes durably to the database, without the log.
    #[arg(long, value_name = "BYTES", default_value_t = nimbus_storage_node::index::DEFAULT_WAL_BYTES)]
    index_wal_bytes: u64,
    /// Index reads always ask a majority of a shard's replicas, never its primary alone
    /// under its read lease.
    #[arg(long)]
    no_leased_reads: bool,
}

/// Runs the dev cluster until SIGINT or SIGTERM (exit 0) or until one of its processes
/// dies (an error naming it and its log).
///
/// # Errors
/// A data directory in use or unusable, a process that does not start, a bootstrap that
/// fails, a process that dies.
pub fn run(args: DevArgs) -> Result<ExitCode> {
    crate::telemetry::init();
    let layout = Layout::open(&args.data, args.port, args.base_port)?;
    let _lock = layout.lock()?;
    layout.save_ports()?;
    layout.ensure_secret()?;
    layout.write_configs(&layout::Tunables {
        gc_grace_secs: args.gc_grace_secs,
        abandoned_upload_secs: args.abandoned_upload_secs,
        index_sync_secs: args.index_sync_secs,
        index_wal_bytes: args.index_wal_bytes,
        leased_reads: !args.no_leased_reads,
    })?;
    let secret = crate::admin::load_secret(Some(&layout.secret_file()))?;
    let client = MetaClient::new(layout.meta_members(), secret)?;
    // One thread: children must be started from the main thread (see `supervisor`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(supervise(&layout, &client))
}

/// Starts the cluster, then watches it; stops it on a signal or a death.
async fn supervise(layout: &Layout, client: &MetaClient) -> Result<ExitCode> {
    let mut supervisor = Supervisor::new(layout.logs_dir());
    let stop = crate::shutdown::signal();
    tokio::pin!(stop);
    let started = tokio::select! {
        // First, so that the signal handlers are installed before any child starts.
        biased;
        () = &mut stop => None,
        started = start(&mut supervisor, layout, client) => Some(started),
    };
    let credentials = match started {
        Some(Ok(credentials)) => credentials,
        Some(Err(e)) => {
            eprintln!("nimbus dev: could not start the cluster; stopping what was started");
            stop_all(&mut supervisor).await;
            return Err(e);
        }
        None => {
            eprintln!("nimbus dev: interrupted while starting; stopping");
            stop_all(&mut supervisor).await;
            return Ok(ExitCode::SUCCESS);
        }
    };
    if let Err(e) = print_banner(layout, &credentials) {
        stop_all(&mut supervisor).await;
        return Err(anyhow::Error::from(e).context("print the endpoints"));
    }
    let died = tokio::select! {
        biased;
        () = &mut stop => None,
        died = supervisor.next_death() => Some(died),
    };
    match died {
        None => {
            eprintln!("nimbus dev: stopping");
            stop_all(&mut supervisor).await;
            Ok(ExitCode::SUCCESS)
        }
        Some(Ok(death)) => {
            let error = anyhow!(
                "{} exited unexpectedly ({}); see {}",
                death.name,
                death.status,
                death.log.display()
            );
            eprintln!("nimbus dev: {error}; stopping the others");
            stop_all(&mut supervisor).await;
            Err(error)
        }
        Some(Err(e)) => {
            stop_all(&mut supervisor).await;
            Err(e)
        }
    }
}

/// Stops every process; says which did not stop cleanly.
async fn stop_all(supervisor: &mut Supervisor) {
    for problem in supervisor.stop().await {
        eprintln!("nimbus dev: {problem}");
    }
}

/// Starts the storage nodes, sets the cluster up on the first run (or checks it on later
/// ones), then starts the proxy; returns the credentials.
async fn start(
    supervisor: &mut Supervisor,
    layout: &Layout,
    client: &MetaClient,
) -> Result<Credentials> {
    eprintln!(
        "nimbus dev: starting {NODES} storage nodes ({META_MEMBERS} of them metadata members) in {}",
        layout.data.display()
    );
    for i in 1..=NODES {
        let config = layout.node_config(i);
        let args = ["storage".as_ref(), "--config".as_ref(), config.as_os_str()];
        supervisor.spawn(&format!("node{i}"), &args)?;
    }
    for i in 1..=NODES {
        let mut ready = vec!["nimbus storage listening on ".to_owned()];
        if i <= META_MEMBERS {
            ready.push(format!("nimbus meta {i} listening on "));
        }
        supervisor
            .wait_ready(&format!("node{i}"), &ready, READY_TIMEOUT)
            .await?;
    }
    let credentials = match layout.credentials()? {
        Some(credentials) => {
            let map = bootstrap::wait_for_map(client).await?;
            bootstrap::check_credentials(&map, &credentials).with_context(|| {
                format!(
                    "{} does not match the cluster's map; remove {} to start over",
                    layout.credentials_file().display(),
                    layout.data.display()
                )
            })?;
            credentials
        }
        None => {
            eprintln!(
                "nimbus dev: first run: forming the metadata group, creating policies ec4+2 (default), rep3 and rep5 (index) over 12 devices, account dev and its credentials"
            );
            let credentials = bootstrap::run(client, layout)
                .await
                .context("set up the cluster (run nimbus dev again to finish)")?;
            // The marker of a finished bootstrap, written last.
            layout.save_credentials(&credentials)?;
            credentials
        }
    };
    layout.write_env(&credentials)?;
    let config = layout.proxy_config();
    let args = ["proxy".as_ref(), "--config".as_ref(), config.as_os_str()];
    supervisor.spawn("proxy", &args)?;
    let ready = ["nimbus proxy listening on ".to_owned()];
    supervisor
        .wait_ready("proxy", &ready, READY_TIMEOUT)
        .await?;
    Ok(credentials)
}

/// Prints where the cluster answers and how to reach it.
fn print_banner(layout: &Layout, c: &Credentials) -> std::io::Result<()> {
    let endpoint = layout.endpoint();
    let data = layout.data.display();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "nimbus dev: {NODES} storage nodes ({META_MEMBERS} metadata members) and a proxy are running; data in {data}, logs in {}",
        layout.logs_dir().display()
    )?;
    writeln!(out, "S3 endpoint:     {endpoint}")?;
    writeln!(out, "Swift auth URL:  {endpoint}/auth/v1.0")?;
    writeln!(out, "S3 access key:   {}", c.access_key)?;
    writeln!(out, "S3 secret key:   {}", c.secret_key)?;
    writeln!(out, "Swift user:      {}", c.swift_user)?;
    writeln!(out, "Swift key:       {}", c.swift_key)?;
    writeln!(
        out,
        "Try:             AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} aws --endpoint-url {endpoint} --region us-east-1 s3 ls",
        c.access_key, c.secret_key
    )?;
    writeln!(
        out,
        "or:              . {} && aws s3 ls",
        layout.env_file().display()
    )?;
    writeln!(
        out,
        "Ctrl-C stops the cluster; `nimbus dev --data {data}` starts it again."
    )?;
    out.flush()
}
