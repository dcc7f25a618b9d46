//! `nimbus admin …`: the cluster's metadata, through its metadata members' HTTP API
//! (`nimbus_ring::raft::server`): the Raft group's membership (`meta`), and the cluster
//! map's storage policies, devices, rings, accounts, credentials and buckets.
//!
//! Every command sends one request (a write follows the leader: see [`client`]) and prints
//! one line of text, or JSON with `--json`; `ring show`, `bucket list`, `map show` and
//! `meta status --all` print a few lines. A change the map refuses exits non-zero with the
//! map's own message (and, with `--json`, its error as JSON on stdout); the map is then
//! unchanged.
//!
//! **Invariants:**
//! - Arguments are checked before anything is sent; times, seeds and keys are drawn here,
//!   so that the map applies commands deterministically.
//! - A generated secret (S3 secret key, Swift key) is printed once, by the command that
//!   created it; the map never returns it.

pub(crate) mod client;
pub(crate) mod map;
mod output;
mod placement;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use nimbus_core::auth::ClusterSecret;
use nimbus_ring::map::MapError;
use nimbus_ring::raft::NodeId;

use client::MetaClient;
use output::Report;

/// Arguments of `nimbus admin`.
#[derive(Args)]
pub struct AdminArgs {
    /// A metadata member, host:port; repeat for more (asked in order until one answers).
    #[arg(
        long = "meta",
        value_name = "ADDR",
        env = "NIMBUS_META",
        value_delimiter = ',',
        global = true
    )]
    meta: Vec<String>,
    /// File holding the cluster secret: 64 hex digits.
    #[arg(long, value_name = "PATH", env = "NIMBUS_SECRET_FILE", global = true)]
    secret_file: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// The metadata members' Raft group: initialize it, add members, choose voters.
    #[command(subcommand)]
    Meta(MetaCommand),
    /// Storage policies, each with its ring.
    #[command(subcommand)]
    Policy(map::PolicyCommand),
    /// The devices of a policy's ring (placed by the next `ring rebalance`).
    #[command(subcommand)]
    Device(map::DeviceCommand),
    /// Rebalance or show a policy's ring.
    #[command(subcommand)]
    Ring(map::RingCommand),
    /// Accounts: the owners of buckets and credentials.
    #[command(subcommand)]
    Account(map::AccountCommand),
    /// S3 access keys and Swift users.
    #[command(subcommand)]
    Credential(map::CredentialCommand),
    /// Buckets (containers).
    #[command(subcommand)]
    Bucket(map::BucketCommand),
    /// The cluster map as a whole.
    #[command(subcommand)]
    Map(map::MapViewCommand),
    /// What each storage node's background workers are doing and have done, device by
    /// device: the auditor (passes, fragments and bytes verified, corrupt fragments
    /// quarantined) and the mover, reconstructor and collector (the running pass with its
    /// rate and ETA; fragments moved, rebuilt, reclaimed; misplaced; degraded partitions).
    Status {
        /// Redraw every this many seconds until interrupted.
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
    },
    /// Fragments not at the device the ring gives their slot, and partitions below full
    /// redundancy, per policy: both 0 on a healthy cluster. Asks every device (a full scan).
    Placement,
}

#[derive(Subcommand)]
enum MetaCommand {
    /// Initialize a new group with these voters, on one of them: `init 1=10.0.0.1:7001 2=… 3=…`.
    Init {
        /// Each first voter as its id and the address members reach it at.
        #[arg(required = true, value_name = "ID=ADDR", value_parser = parse_member)]
        members: Vec<(NodeId, String)>,
    },
    /// Add a member as a learner: it receives the map without voting.
    AddLearner {
        /// Its id.
        id: NodeId,
        /// The address members reach it at, host:port.
        addr: String,
    },
    /// Remove a learner from the group (a voter leaves through `voters` first).
    RemoveLearner {
        /// Its id.
        id: NodeId,
    },
    /// Make exactly these members the voters; members left out leave the group.
    Voters {
        /// The voters' ids.
        #[arg(value_name = "ID")]
        voters: Vec<NodeId>,
    },
    /// Show a member's view: its role, the leader, its log, the members, its map version.
    Status {
        /// Ask every member of the group, not just the first that answers.
        #[arg(long)]
        all: bool,
    },
}

/// Runs `nimbus admin …`.
///
/// # Errors
/// A missing or bad secret, no member reachable, a refused request or change.
pub fn run(args: AdminArgs) -> Result<ExitCode> {
    let secret = load_secret(args.secret_file.as_deref())?;
    let client = MetaClient::new(args.meta, secret)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let json = args.json;
    if let AdminCommand::Status { watch: Some(secs) } = args.command {
        return watch(&runtime, &client, json, Duration::from_secs(secs.max(1)));
    }
    match runtime.block_on(execute(&client, args.command)) {
        Ok(report) => {
            report.print(json)?;
            Ok(report.exit_code())
        }
        Err(e) => {
            if json && let Some(refusal) = e.downcast_ref::<MapError>() {
                output::refusal(refusal)?;
            }
            Err(e)
        }
    }
}

/// `nimbus admin status --watch`: the status redrawn every `every` until interrupted.
fn watch(
    runtime: &tokio::runtime::Runtime,
    client: &MetaClient,
    json: bool,
    every: Duration,
) -> Result<ExitCode> {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        let report = runtime.block_on(workers(client))?;
        if terminal && !json {
            // Clear the screen and go home, as `watch(1)` does.
            print!("\x1b[2J\x1b[H");
        }
        report.print(json)?;
        runtime.block_on(tokio::time::sleep(every));
    }
}

/// Reads the cluster secret from `path`.
pub(crate) fn load_secret(path: Option<&Path>) -> Result<ClusterSecret> {
    let path = path.ok_or_else(|| {
        anyhow!("no cluster secret: pass --secret-file PATH (or set NIMBUS_SECRET_FILE)")
    })?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read the cluster secret from {}", path.display()))?;
    ClusterSecret::from_hex(&text)
        .with_context(|| format!("read the cluster secret from {}", path.display()))
}

async fn execute(client: &MetaClient, command: AdminCommand) -> Result<Report> {
    match command {
        AdminCommand::Meta(c) => meta(client, c).await,
        AdminCommand::Policy(c) => map::policy(client, c).await,
        AdminCommand::Device(c) => map::device(client, c).await,
        AdminCommand::Ring(c) => map::ring(client, c).await,
        AdminCommand::Account(c) => map::account(client, c).await,
        AdminCommand::Credential(c) => map::credential(client, c).await,
        AdminCommand::Bucket(c) => map::bucket(client, c).await,
        AdminCommand::Map(c) => map::map_view(client, c).await,
        AdminCommand::Status { .. } => workers(client).await,
        AdminCommand::Placement => placement::placement(client).await,
    }
}

async fn meta(client: &MetaClient, command: MetaCommand) -> Result<Report> {
    match command {
        MetaCommand::Init { members } => {
            let mut named = BTreeMap::new();
            for (id, addr) in members {
                if named.insert(id, addr).is_some() {
                    bail!("member {id} is named twice");
                }
            }
            let view = client.init(named).await?;
            Ok(output::membership("initialized the metadata group", &view))
        }
        MetaCommand::AddLearner { id, addr } => {
            let view = client.add_learner(id, addr.clone()).await?;
            Ok(output::membership(
                &format!("member {id} at {addr} is a learner"),
                &view,
            ))
        }
        MetaCommand::RemoveLearner { id } => {
            let view = client.remove_learner(id).await?;
            Ok(output::membership(
                &format!("member {id} left the group"),
                &view,
            ))
        }
        MetaCommand::Voters { voters } => {
            let voters: BTreeSet<NodeId> = voters.into_iter().collect();
            let view = client.set_voters(voters).await?;
            Ok(output::membership("changed the voters", &view))
        }
        MetaCommand::Status { all: false } => Ok(output::status(&client.status().await?)),
        MetaCommand::Status { all: true } => {
            let first = client.status().await?;
            let view = &first.membership;
            let mut statuses = Vec::new();
            for (&id, addr) in view.voters.iter().chain(&view.learners) {
                let status = if id == first.id {
                    Ok(first.clone())
                } else {
                    client.status_of(addr).await
                };
                statuses.push((id, addr.clone(), status));
            }
            if statuses.is_empty() {
                return Ok(output::status(&first));
            }
            Ok(output::statuses(&statuses))
        }
    }
}

/// `nimbus admin status`: every storage node of the map's rings, asked for its health.
async fn workers(client: &MetaClient) -> Result<Report> {
    let map = client.map().await?;
    let nodes: BTreeSet<String> = map
        .policy_names()
        .filter_map(|p| map.policy(p))
        .flat_map(|entry| entry.builder.devices().iter().filter(|d| !d.removed))
        .map(|d| d.device.location.node.to_string())
        .collect();
    let mut answers = Vec::new();
    for node in nodes {
        let health = client.node_health(&node).await;
        answers.push((node, health));
    }
    Ok(output::workers(&answers))
}

/// Parses `ID=ADDR`.
fn parse_member(text: &str) -> Result<(NodeId, String), String> {
    let (id, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not ID=ADDR (e.g. 1=10.0.0.1:7001)"))?;
    let id = id
        .trim()
        .parse::<NodeId>()
        .map_err(|_| format!("{text:?}: the member id {id:?} is not a number"))?;
    let addr = addr.trim();
    if addr.is_empty() {
        return Err(format!("{text:?}: the address is empty"));
    }
    Ok((id, addr.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_as_id_equals_address() {
        assert_eq!(
            parse_member("3=10.0.0.3:7001"),
            Ok((3, "10.0.0.3:7001".to_owned()))
        );
        for bad in ["3", "x=10.0.0.3:7001", "3=", "=10.0.0.3:7001"] {
            assert!(parse_member(bad).is_err(), "{bad}");
        }
    }
}
