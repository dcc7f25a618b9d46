//! Reads results and sets them side by side: one column per result, one row per figure,
//! with each value's ratio to the first result's.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use crate::error::ResultsError;
use crate::report::{OpSummary, RunResult};
use crate::units::format_micros;

/// Reads a result written by `nimbus-bench run --json`.
///
/// # Errors
///
/// [`ResultsError::Io`] or [`ResultsError::Json`].
pub fn load(path: &Path) -> Result<RunResult, ResultsError> {
    let text = std::fs::read_to_string(path).map_err(|source| ResultsError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ResultsError::Json {
        path: path.to_owned(),
        source,
    })
}

/// One figure of a row: how to read it from an operation's summary and how to show it.
struct Figure {
    name: &'static str,
    value: fn(&OpSummary) -> f64,
    latency: bool,
}

const FIGURES: [Figure; 8] = [
    Figure {
        name: "ops/s",
        value: |s| s.ops_per_sec,
        latency: false,
    },
    Figure {
        name: "MiB/s",
        value: |s| s.mib_per_sec,
        latency: false,
    },
    Figure {
        name: "p50",
        value: |s| s.latency_us.p50 as f64,
        latency: true,
    },
    Figure {
        name: "p90",
        value: |s| s.latency_us.p90 as f64,
        latency: true,
    },
    Figure {
        name: "p99",
        value: |s| s.latency_us.p99 as f64,
        latency: true,
    },
    Figure {
        name: "p99.9",
        value: |s| s.latency_us.p999 as f64,
        latency: true,
    },
    Figure {
        name: "max",
        value: |s| s.latency_us.max as f64,
        latency: true,
    },
    Figure {
        name: "errors",
        value: |s| s.errors as f64,
        latency: false,
    },
];

/// Renders the side-by-side table of `results` (named by their labels, else their
/// workloads), ratios against the first.
///
/// # Errors
///
/// [`ResultsError::Empty`] without results.
pub fn table(results: &[RunResult]) -> Result<String, ResultsError> {
    let Some(first) = results.first() else {
        return Err(ResultsError::Empty("nothing to compare"));
    };
    let mut ops: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    for r in results {
        for s in r.ops.iter().chain(std::iter::once(&r.total)) {
            if seen.insert(s.op.clone()) {
                ops.push(s.op.clone());
            }
        }
    }
    // `total` last.
    ops.sort_by_key(|op| op == "total");
    let width = 22;
    let mut out = String::new();
    let _ = write!(out, "{:<18}", "");
    for (i, r) in results.iter().enumerate() {
        let name: String = format!("[{}] {}", i + 1, r.name())
            .chars()
            .take(width)
            .collect();
        let _ = write!(out, " {name:>width$}");
    }
    out.push('\n');
    for op in &ops {
        let base = find(first, op);
        for figure in &FIGURES {
            let _ = write!(out, "{:<18}", format!("{op} {}", figure.name));
            for r in results {
                let cell = match find(r, op) {
                    None => "-".to_owned(),
                    Some(s) => {
                        let v = (figure.value)(s);
                        let shown = if figure.latency {
                            format_micros(v)
                        } else if figure.name == "errors" {
                            format!("{v:.0}")
                        } else {
                            format!("{v:.1}")
                        };
                        match base.map(|b| (figure.value)(b)) {
                            Some(b) if !std::ptr::eq(r, first) && b > 0.0 => {
                                format!("{shown} ({:.2}x)", v / b)
                            }
                            _ => shown,
                        }
                    }
                };
                let _ = write!(out, " {cell:>width$}");
            }
            out.push('\n');
        }
    }
    let _ = write!(out, "{:<18}", "client cpu %");
    for r in results {
        let _ = write!(
            out,
            " {:>width$}",
            format!("{:.0}", r.cpu.percent_of_one_core)
        );
    }
    out.push('\n');
    for (i, r) in results.iter().enumerate() {
        let _ = writeln!(
            out,
            "[{}] {} · {} {} · commit {} · {}",
            i + 1,
            r.name(),
            r.config.api,
            r.config.endpoint,
            r.commit,
            r.time_utc
        );
    }
    Ok(out)
}

fn find<'a>(r: &'a RunResult, op: &str) -> Option<&'a OpSummary> {
    if op == "total" {
        Some(&r.total)
    } else {
        r.ops.iter().find(|s| s.op == op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(label: &str, ops_per_sec: f64) -> RunResult {
        let put = OpSummary {
            op: "put".to_owned(),
            ops: 10,
            ops_per_sec,
            ..OpSummary::default()
        };
        RunResult {
            total: OpSummary {
                op: "total".to_owned(),
                ..put.clone()
            },
            ops: vec![put],
            config: crate::report::RunConfigRecord {
                label: label.to_owned(),
                ..Default::default()
            },
            ..RunResult::default()
        }
    }

    #[test]
    fn ratios_are_against_the_first_result() {
        let t = table(&[result("a", 100.0), result("b", 150.0)]).unwrap();
        let row = t.lines().find(|l| l.starts_with("put ops/s")).unwrap();
        assert!(row.contains("100.0"), "{row}");
        assert!(row.contains("150.0 (1.50x)"), "{row}");
        assert!(table(&[]).is_err());
    }
}
