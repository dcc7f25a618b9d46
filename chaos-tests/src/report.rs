//! The report of a run: a table for people, JSON for tools.

use std::fmt::Write as _;

use serde::Serialize;

use crate::run::ScenarioReport;

/// A whole run's report, as `--json` writes it.
#[derive(Serialize)]
pub struct Report<'a> {
    /// The run's seed.
    pub seed: u64,
    /// Seconds each scenario's workload ran.
    pub duration_secs: u64,
    /// The commit of the `nimbus` binary's source, when known.
    pub commit: Option<String>,
    /// Every scenario.
    pub scenarios: &'a [ScenarioReport],
    /// Every scenario passed.
    pub passed: bool,
}

/// The table: one row per scenario.
#[must_use]
pub fn table(reports: &[ScenarioReport]) -> String {
    let mut out = String::from(
        "| scenario | requests | acknowledged writes | lost | unreadable after heal | corrupt reads | stale reads | listing errors | unavailable s | time to heal s | result |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in reports {
        let v = &r.verdict;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            v.operations,
            v.acknowledged_writes,
            v.lost,
            v.unreadable_after_heal,
            v.corrupt_reads,
            v.stale_reads,
            v.listing_errors,
            v.unavailable_seconds,
            r.heal_secs
                .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}")),
            if r.passed() { "pass" } else { "FAIL" }
        );
    }
    out
}

/// What a failing scenario prints: its seed, its fault schedule as it ran, its problems and
/// the history around its first violations.
#[must_use]
pub fn failure(r: &ScenarioReport) -> String {
    let mut out = format!(
        "scenario {} FAILED (seed {}; rerun: nimbus-chaos run --seed {} --scenario {})\n",
        r.scenario, r.seed, r.seed, r.scenario
    );
    out.push_str("faults:\n");
    for e in &r.events {
        let _ = writeln!(out, "  {:>8.3}s {}", e.at_secs, e.what);
    }
    for p in &r.problems {
        let _ = writeln!(out, "problem: {p}");
    }
    let v = &r.verdict;
    if v.violations.len() > r.context.len() {
        let _ = writeln!(
            out,
            "{} violations; the first {}:",
            v.violations.len(),
            r.context.len()
        );
    }
    for c in &r.context {
        out.push_str(c);
    }
    out
}
