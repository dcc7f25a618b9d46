//! A run: one cluster, then each scenario in turn on its own buckets — the workload under
//! the scenario's faults, the faults undone, the wait for full redundancy, the final reads,
//! the checkers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

use crate::checkers::{self, Verdict};
use crate::cluster::{Cluster, ClusterSpec};
use crate::faults::{self, Fault, Undo};
use crate::history::History;
use crate::interrupt::interrupted;
use crate::scenarios::{self, Shape, Step};
use crate::workload::{self, Recorder, WorkloadSpec};

/// What to run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The seed of everything drawn.
    pub seed: u64,
    /// The scenarios, in order.
    pub scenarios: Vec<String>,
    /// How long each scenario's workload runs.
    pub duration: Duration,
    /// The clients.
    pub workload: WorkloadSpec,
    /// How long the cluster may take to return to full redundancy after the faults.
    pub heal_limit: Duration,
}

/// One fault as it happened.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Seconds from the scenario's start.
    pub at_secs: f64,
    /// What happened.
    pub what: String,
}

/// What one scenario showed.
#[derive(Debug, Serialize)]
pub struct ScenarioReport {
    /// The scenario.
    pub scenario: String,
    /// Its seed.
    pub seed: u64,
    /// The checkers' verdict.
    pub verdict: Verdict,
    /// Seconds from the end of the faults to full redundancy; `None` when not within the
    /// limit.
    pub heal_secs: Option<f64>,
    /// The faults, as they were applied and undone.
    pub events: Vec<Event>,
    /// What went wrong beside the history: processes that died on their own, faults that
    /// could not be applied, no full redundancy in time.
    pub problems: Vec<String>,
    /// The records around each of the first violations, printable.
    pub context: Vec<String>,
}

impl ScenarioReport {
    /// Nothing lost, corrupt or wrong, and healed in time.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.verdict.passed() && self.problems.is_empty() && self.heal_secs.is_some()
    }
}

/// Starts a cluster and runs every scenario of `spec` on it; returns their reports.
///
/// # Errors
/// The cluster could not start, or a scenario could not be set up.
pub fn run(spec: &RunSpec, cluster_spec: ClusterSpec) -> Result<Vec<ScenarioReport>> {
    let started = Instant::now();
    let mut cluster = Cluster::start(cluster_spec).context("start the cluster")?;
    eprintln!(
        "nimbus-chaos: cluster up in {:.1}s ({}); proxies {}; data and logs in {}",
        started.elapsed().as_secs_f64(),
        cluster.net.describe(),
        cluster.endpoints.join(", "),
        cluster.spec.dir.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut reports = Vec::new();
    let mut next_write = 1;
    for (n, name) in spec.scenarios.iter().enumerate() {
        let seed = spec.seed.wrapping_add(n as u64);
        if name == "full-device" && !cluster.spec.small_device {
            eprintln!("nimbus-chaos: full-device skipped: no small device to fill");
            continue;
        }
        let report = scenario(spec, &mut cluster, &runtime, name, seed, &mut next_write)?;
        if interrupted() {
            anyhow::bail!("interrupted during {name}");
        }
        eprintln!(
            "nimbus-chaos: {name}: {} ({} requests, {} lost, {} corrupt, healed in {})",
            if report.passed() { "passed" } else { "FAILED" },
            report.verdict.operations,
            report.verdict.lost,
            report.verdict.corrupt_reads,
            report
                .heal_secs
                .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}s"))
        );
        reports.push(report);
    }
    Ok(reports)
}

fn scenario(
    spec: &RunSpec,
    cluster: &mut Cluster,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    seed: u64,
    next_write: &mut u64,
) -> Result<ScenarioReport> {
    let shape = Shape {
        nodes: cluster.spec.nodes,
        proxies: cluster.spec.proxies,
    };
    let steps = scenarios::schedule(name, seed, spec.duration, shape)?;
    let endpoints = cluster.endpoints.clone();
    let credentials = cluster.credentials.clone();
    let buckets = runtime.block_on(async {
        let s3 = workload::client(&endpoints[0], &credentials);
        workload::create_buckets(&s3, name).await
    })?;
    let recorder = Arc::new(Recorder::new(*next_write));
    let stop = Arc::new(AtomicBool::new(false));
    let mut events = Vec::new();
    let mut problems = Vec::new();
    std::thread::scope(|scope| {
        let faults = scope.spawn(|| {
            let out = inject(cluster, &steps, &recorder, seed, spec.duration);
            stop.store(true, Ordering::Relaxed);
            out
        });
        runtime.block_on(workload::run(
            &spec.workload,
            &endpoints,
            &credentials,
            &buckets,
            seed,
            Arc::clone(&recorder),
            Arc::clone(&stop),
        ));
        match faults.join() {
            Ok((e, p)) => {
                events = e;
                problems = p;
            }
            Err(_) => problems.push("the fault thread panicked".into()),
        }
    });
    // Faults over: everything back, then the wait for full redundancy.
    let faults_ended = Instant::now();
    let at = |r: &Recorder| r.now_us() as f64 / 1e6;
    cluster.restore_all()?;
    events.push(Event {
        at_secs: at(&recorder),
        what: "every process running and connected".into(),
    });
    let changed_rings = steps
        .iter()
        .any(|s| matches!(s.fault, Fault::AddNode(_) | Fault::RemoveNode(_)));
    let heal_secs = loop {
        if changed_rings {
            for policy in ["ec4+2", "rep3"] {
                let _ = cluster.admin(&["ring", "rebalance", policy]);
            }
        }
        if cluster.placement().is_some_and(|p| p.healthy()) {
            break Some(faults_ended.elapsed().as_secs_f64());
        }
        if interrupted() {
            break None;
        }
        if faults_ended.elapsed() > spec.heal_limit {
            problems.push(format!(
                "not at full redundancy {}s after the faults: {:?}",
                spec.heal_limit.as_secs(),
                cluster.placement()
            ));
            break None;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    events.push(Event {
        at_secs: at(&recorder),
        what: match heal_secs {
            Some(s) => format!("full redundancy, {s:.1}s after the faults"),
            None => "no full redundancy in time".into(),
        },
    });
    if interrupted() {
        anyhow::bail!("interrupted");
    }
    runtime.block_on(workload::final_reads(
        &endpoints,
        &credentials,
        &buckets,
        &recorder,
    ));
    cluster.reap_exited();
    problems.append(&mut cluster.exits);
    *next_write = recorder.next_write();
    let history = recorder.history();
    let verdict = checkers::check(&history);
    let context = verdict
        .violations
        .iter()
        .take(5)
        .map(|v| render_context(&history, v))
        .collect();
    if let Ok(json) = serde_json::to_vec(&history) {
        let _ = std::fs::write(cluster.spec.dir.join(format!("history-{name}.json")), json);
    }
    Ok(ScenarioReport {
        scenario: name.to_owned(),
        seed,
        verdict,
        heal_secs,
        events,
        problems,
        context,
    })
}

/// Applies the schedule's faults at their times and undoes each when its hold ends; returns
/// the events and any fault that could not be applied or undone. Returns when the run's
/// duration has passed, with every fault undone.
fn inject(
    cluster: &mut Cluster,
    steps: &[Step],
    recorder: &Recorder,
    seed: u64,
    duration: Duration,
) -> (Vec<Event>, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut events = Vec::new();
    let mut problems = Vec::new();
    // Faults applied and not undone yet: (when to undo, how).
    let mut pending: Vec<(Duration, Undo, String)> = Vec::new();
    let mut next = 0;
    let now = |r: &Recorder| Duration::from_micros(r.now_us());
    loop {
        let t = now(recorder);
        pending.sort_by_key(|p| p.0);
        while pending.first().is_some_and(|p| p.0 <= t) {
            let (_, how, what) = pending.remove(0);
            if matches!(how, Undo::Nothing) {
                continue;
            }
            match faults::undo(cluster, how) {
                Ok(()) => events.push(Event {
                    at_secs: now(recorder).as_secs_f64(),
                    what: format!("end: {what}"),
                }),
                Err(e) => problems.push(format!("undo {what}: {e:#}")),
            }
        }
        if interrupted() {
            for (_, how, what) in pending.drain(..) {
                if let Err(e) = faults::undo(cluster, how) {
                    problems.push(format!("undo {what}: {e:#}"));
                }
            }
            return (events, problems);
        }
        if let Some(step) = steps.get(next)
            && step.at <= t
        {
            next += 1;
            match faults::apply(cluster, &step.fault, &mut rng) {
                Ok((what, how)) => {
                    events.push(Event {
                        at_secs: now(recorder).as_secs_f64(),
                        what: what.clone(),
                    });
                    pending.push((now(recorder) + step.hold, how, what));
                }
                Err(e) => problems.push(format!("apply {}: {e:#}", step.fault)),
            }
            continue;
        }
        if next >= steps.len() && pending.is_empty() && t >= duration {
            return (events, problems);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The records around a violation, one per line.
fn render_context(history: &History, violation: &checkers::Violation) -> String {
    let mut out = format!(
        "{} on {}/{}: {}\n",
        violation.checker, violation.bucket, violation.key, violation.what
    );
    for r in checkers::context(history, violation, 20) {
        out.push_str(&format!(
            "  #{:<6} client {:<3} {:>9.3}s..{:>9.3}s {:?} {:?} -> {:?} {:?}\n",
            r.id,
            r.client,
            r.start_us as f64 / 1e6,
            r.end_us as f64 / 1e6,
            r.phase,
            r.op,
            r.outcome,
            r.observed
        ));
    }
    out
}
