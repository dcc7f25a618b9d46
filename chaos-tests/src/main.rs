//! `nimbus-chaos`: runs scenarios against a real cluster and reports what the checkers found.
//!
//! ```text
//! nimbus-chaos run --seed 7 --scenario all --duration 20s --json report.json
//! nimbus-chaos list
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use nimbus_chaos::cluster::{ClusterSpec, NetworkKind};
use nimbus_chaos::net::is_root;
use nimbus_chaos::report::{self, Report};
use nimbus_chaos::run::{self, RunSpec};
use nimbus_chaos::scenarios::SCENARIOS;
use nimbus_chaos::workload::WorkloadSpec;

#[derive(Parser)]
#[command(
    name = "nimbus-chaos",
    version,
    about = "Fault injection against a real Nimbus cluster, with checkers over the recorded history"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a cluster (as root: each storage node in a network namespace of its own), run
    /// scenarios on it, check the history, print the report. Exits 1 when a check fails.
    Run(RunArgs),
    /// List the scenarios.
    List,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The seed of the fault schedules, the workload and the cluster's secrets.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A scenario, `all`, or several separated by commas (see `nimbus-chaos list`).
    #[arg(long, default_value = "all")]
    scenario: String,
    /// How long each scenario's workload runs: `20s`, `5m`, `2h`.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Concurrent S3 clients.
    #[arg(long, default_value_t = 6)]
    clients: u32,
    /// Keys per bucket (few keys: many overwrites and deletes of the same key).
    #[arg(long, default_value_t = 16)]
    keys: u32,
    /// The largest single PUT, in MiB (multipart uploads are 5 to 16 MiB).
    #[arg(long, default_value_t = 32)]
    max_object_mib: u64,
    /// How long the cluster may take to return to full redundancy after the faults.
    #[arg(long, default_value = "180s", value_parser = parse_duration)]
    heal_limit: Duration,
    /// Where the cluster's data, logs and the histories go [default: a new temporary
    /// directory, removed after a passing run].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The `nimbus` binary [default: the one beside this binary].
    #[arg(long)]
    nimbus: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Start the proxies with a deliberate bug (debug builds only): `ack-before-quorum`
    /// acknowledges a PUT once one fragment is committed. The checkers must catch it.
    #[arg(long)]
    inject_bug: Option<String>,
    /// Succeed only if a check fails (with `--inject-bug`: the harness's own test).
    #[arg(long)]
    expect_violations: bool,
    /// How the nodes are connected [default: namespaces as root, proxied otherwise].
    #[arg(long, value_enum)]
    network: Option<NetworkKind>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("not a duration: {text:?} (use 20s, 5m, 2h)")),
    };
    Ok(Duration::from_secs(secs))
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::List => {
            for name in SCENARIOS {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
        Command::Run(args) => match run_command(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("nimbus-chaos: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

fn run_command(args: RunArgs) -> Result<ExitCode> {
    let root = is_root();
    let mut scenarios: Vec<String> = if args.scenario == "all" {
        SCENARIOS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.scenario.split(',').map(str::to_owned).collect()
    };
    if !root && scenarios.iter().any(|s| s == "full-device") {
        if args.scenario != "all" {
            bail!("full-device needs root (a small filesystem of its own to fill)");
        }
        eprintln!("nimbus-chaos: not root: full-device is left out (it fills a tmpfs of its own)");
        scenarios.retain(|s| s != "full-device");
    }
    for name in &scenarios {
        if !SCENARIOS.contains(&name.as_str()) {
            bail!(
                "no scenario {name:?}; there are: all, {}",
                SCENARIOS.join(", ")
            );
        }
    }
    let nimbus = match args.nimbus {
        Some(path) => path,
        None => beside_this_binary()?,
    };
    let (dir, temporary) = match args.dir {
        Some(dir) => (dir, false),
        None => {
            let dir = std::env::temp_dir().join(format!("nimbus-chaos-{}", std::process::id()));
            (dir, true)
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let spec = RunSpec {
        seed: args.seed,
        scenarios,
        duration: args.duration,
        workload: WorkloadSpec {
            clients: args.clients,
            keys: args.keys,
            max_object_bytes: args.max_object_mib << 20,
        },
        heal_limit: args.heal_limit,
    };
    let cluster = ClusterSpec {
        nodes: 6,
        spares: 1,
        proxies: 2,
        nimbus,
        dir: dir.clone(),
        seed: args.seed,
        inject_bug: args.inject_bug.clone(),
        network: args.network,
        small_device: root,
    };
    nimbus_chaos::interrupt::watch().context("watch for Ctrl-C")?;
    let reports = run::run(&spec, cluster)?;
    let passed = reports.iter().all(run::ScenarioReport::passed);
    println!("{}", report::table(&reports));
    for r in reports.iter().filter(|r| !r.passed()) {
        eprintln!("{}", report::failure(r));
    }
    if let Some(path) = &args.json {
        let report = Report {
            seed: args.seed,
            duration_secs: args.duration.as_secs(),
            commit: commit(),
            scenarios: &reports,
            passed,
        };
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    let ok = if args.expect_violations {
        !passed
    } else {
        passed
    };
    if args.expect_violations {
        eprintln!(
            "nimbus-chaos: violations were expected (--expect-violations): {}",
            if ok { "found" } else { "NONE FOUND" }
        );
    }
    if ok && temporary {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!(
            "nimbus-chaos: data, logs and histories kept in {}",
            dir.display()
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The `nimbus` binary beside this one (`target/debug/nimbus` for `target/debug/nimbus-chaos`).
fn beside_this_binary() -> Result<PathBuf> {
    let me = std::env::current_exe().context("find this binary")?;
    let dir = me.parent().context("this binary's directory")?;
    for candidate in [dir.join("nimbus"), dir.join("../nimbus")] {
        if std::fs::metadata(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    bail!(
        "no nimbus binary beside {}; pass --nimbus PATH",
        me.display()
    )
}

/// The commit checked out where this runs, if any.
fn commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
