//! Figures: per-operation latency histograms (HdrHistogram, microseconds, three
//! significant digits), counts, bytes and errors by kind, gathered per worker and merged;
//! the result of a run as JSON (with its configuration, commit and time) and as a table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::driver::{ErrorKind, OpError};
use crate::units::{format_micros, format_size};
use crate::workload::OpKind;

/// Highest latency a histogram holds, in microseconds (one hour); longer ones saturate.
const LATENCY_MAX_MICROS: u64 = 3_600_000_000;

/// Percentiles kept in the JSON for latency CDF plots.
const CDF_PERCENTILES: [f64; 27] = [
    0.0, 1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 85.0, 90.0, 92.5, 95.0,
    97.0, 98.0, 99.0, 99.5, 99.7, 99.9, 99.95, 99.99, 99.995, 99.999, 100.0,
];

/// The live figures of one operation kind, as one worker gathers them.
#[derive(Debug, Clone)]
pub struct OpRecorder {
    latency: Histogram<u64>,
    ops: u64,
    bytes: u64,
    errors: BTreeMap<ErrorKind, u64>,
    first_errors: BTreeMap<ErrorKind, String>,
}

impl Default for OpRecorder {
    fn default() -> Self {
        OpRecorder {
            latency: Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 3)
                .expect("constant bounds: low 1, high above 2 × low, 3 significant figures"),
            ops: 0,
            bytes: 0,
            errors: BTreeMap::new(),
            first_errors: BTreeMap::new(),
        }
    }
}

impl OpRecorder {
    fn merge(&mut self, other: &OpRecorder) {
        // Same bounds on both sides: add cannot fail.
        let _ = self.latency.add(&other.latency);
        self.ops += other.ops;
        self.bytes += other.bytes;
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
        for (kind, detail) in &other.first_errors {
            self.first_errors
                .entry(kind.clone())
                .or_insert_with(|| detail.clone());
        }
    }
}

/// Every operation kind's live figures, for one worker or merged.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    ops: BTreeMap<OpKind, OpRecorder>,
}

impl Recorder {
    /// Records a successful operation that moved `bytes` and took `micros`.
    pub fn record_ok(&mut self, kind: OpKind, bytes: u64, micros: u64) {
        let op = self.ops.entry(kind).or_default();
        op.latency.saturating_record(micros.max(1));
        op.ops += 1;
        op.bytes += bytes;
    }

    /// Records a failed operation (its latency is not recorded).
    pub fn record_error(&mut self, kind: OpKind, error: OpError) {
        let op = self.ops.entry(kind).or_default();
        *op.errors.entry(error.kind.clone()).or_default() += 1;
        op.first_errors.entry(error.kind).or_insert(error.detail);
    }

    /// Adds another recorder's figures to these.
    pub fn merge(&mut self, other: &Recorder) {
        for (kind, op) in &other.ops {
            self.ops.entry(*kind).or_default().merge(op);
        }
    }

    /// Summarizes each kind (and all together) over `elapsed_secs`.
    #[must_use]
    pub fn summarize(&self, elapsed_secs: f64) -> (OpSummary, Vec<OpSummary>) {
        let mut total = OpRecorder::default();
        let mut per_kind = Vec::new();
        for kind in OpKind::ALL {
            if let Some(op) = self.ops.get(&kind) {
                total.merge(op);
                per_kind.push(OpSummary::from_recorder(kind.name(), op, elapsed_secs));
            }
        }
        (
            OpSummary::from_recorder("total", &total, elapsed_secs),
            per_kind,
        )
    }
}

/// Latency figures in microseconds, of successful operations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Mean.
    pub mean: f64,
    /// Fastest.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest.
    pub max: u64,
}

/// One operation kind's figures over the measured window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpSummary {
    /// The operation (`put`, `get`, …) or `total`.
    pub op: String,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Payload bytes moved by successful operations (bodies sent or received).
    pub bytes: u64,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Payload MiB (2^20 bytes) per second.
    pub mib_per_sec: f64,
    /// Latency of successful operations, in microseconds.
    pub latency_us: Latency,
    /// Failed operations by kind (`http 503 SlowDown`, `timeout`, `connection`, …).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// The first message seen for each error kind.
    pub first_errors: BTreeMap<String, String>,
    /// Latency CDF: `[percentile, microseconds]` pairs.
    pub cdf: Vec<[f64; 2]>,
}

impl OpSummary {
    fn from_recorder(name: &str, op: &OpRecorder, elapsed_secs: f64) -> OpSummary {
        let h = &op.latency;
        let secs = elapsed_secs.max(1e-9);
        let empty = h.is_empty();
        let at = |q: f64| if empty { 0 } else { h.value_at_quantile(q) };
        OpSummary {
            op: name.to_owned(),
            ops: op.ops,
            errors: op.errors.values().sum(),
            bytes: op.bytes,
            ops_per_sec: op.ops as f64 / secs,
            mib_per_sec: op.bytes as f64 / secs / (1u64 << 20) as f64,
            latency_us: Latency {
                mean: if empty { 0.0 } else { h.mean() },
                min: if empty { 0 } else { h.min() },
                p50: at(0.5),
                p90: at(0.9),
                p99: at(0.99),
                p999: at(0.999),
                max: if empty { 0 } else { h.max() },
            },
            errors_by_kind: op.errors.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            first_errors: op
                .first_errors
                .iter()
                .map(|(k, d)| (k.to_string(), d.clone()))
                .collect(),
            cdf: if empty {
                Vec::new()
            } else {
                CDF_PERCENTILES
                    .iter()
                    .map(|p| [*p, at(p / 100.0) as f64])
                    .collect()
            },
        }
    }
}

/// The client's own CPU use over the run (prepare excluded, warmup included).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUsage {
    /// User-mode CPU seconds.
    pub user_secs: f64,
    /// Kernel-mode CPU seconds.
    pub system_secs: f64,
    /// (user + system) / wall time, in percent of one core.
    pub percent_of_one_core: f64,
    /// Cores the client could use.
    pub cores: u32,
}

/// The prepare phase: the data set uploaded before the measured run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrepareSummary {
    /// Objects uploaded.
    pub objects: u64,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Wall time, in seconds.
    pub secs: f64,
}

/// The settings of a run, as recorded in its result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunConfigRecord {
    /// `s3` or `swift`.
    pub api: String,
    /// S3 endpoint or Swift auth URL.
    pub endpoint: String,
    /// S3 path style (false: virtual-host style).
    pub path_style: bool,
    /// How S3 object requests were sent: `http` or `sdk` (`sdk` for an https:// endpoint
    /// whatever was asked; empty for Swift, and in results of versions before the choice,
    /// which sent everything through the SDK).
    #[serde(default)]
    pub s3_client: String,
    /// Bucket or container.
    pub bucket: String,
    /// Key prefix.
    pub prefix: String,
    /// The mix, as `put=20%,get=80%` or a single operation.
    pub mix: String,
    /// Object sizes, as given (normalized).
    pub sizes: String,
    /// Mean object size, in bytes.
    pub size_mean_bytes: f64,
    /// Objects in the key space.
    pub objects: u64,
    /// `uniform` or `zipf(S)`.
    pub keys: String,
    /// Concurrent clients.
    pub concurrency: u32,
    /// Measured duration asked for, in seconds (none with `--ops`).
    pub duration_secs: Option<f64>,
    /// Measured operations asked for.
    pub ops: Option<u64>,
    /// Warmup excluded from the figures, in seconds.
    pub warmup_secs: f64,
    /// Open-loop rate in operations per second (none: closed loop).
    pub rate: Option<f64>,
    /// Bytes per ranged GET.
    pub range_bytes: u64,
    /// Multipart part size, in bytes.
    pub part_size_bytes: u64,
    /// Whether GET payloads were verified.
    pub verify: bool,
    /// Per-operation timeout, in seconds.
    pub timeout_secs: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// A free label for comparisons and plots.
    pub label: String,
}

/// A run's full result: what `--json` writes and `compare` and `plot` read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Always `nimbus-bench`.
    pub tool: String,
    /// nimbus-bench's version.
    pub version: String,
    /// `git rev-parse HEAD` where the client ran, or `unknown`.
    pub commit: String,
    /// When the run started, UTC, RFC 3339.
    pub time_utc: String,
    /// The settings.
    pub config: RunConfigRecord,
    /// The prepare phase, when there was one.
    pub prepare: Option<PrepareSummary>,
    /// Measured wall time, in seconds (warmup excluded).
    pub elapsed_secs: f64,
    /// All operations together.
    pub total: OpSummary,
    /// Each operation kind.
    pub ops: Vec<OpSummary>,
    /// The client's CPU use.
    pub cpu: CpuUsage,
    /// Whether the run was interrupted (Ctrl-C) before its end.
    pub interrupted: bool,
}

impl RunResult {
    /// A short name for tables and legends: the label, else `mix sizes cN`.
    #[must_use]
    pub fn name(&self) -> String {
        if self.config.label.is_empty() {
            format!(
                "{} {} c{}",
                self.config.mix, self.config.sizes, self.config.concurrency
            )
        } else {
            self.config.label.clone()
        }
    }

    /// Renders the result as a table for a terminal.
    #[must_use]
    pub fn to_table(&self) -> String {
        let c = &self.config;
        let mut out = String::new();
        let length = match (c.duration_secs, c.ops) {
            (_, Some(ops)) => format!("{ops} ops"),
            (Some(secs), None) => format!("{secs}s"),
            (None, None) => "until stopped".to_owned(),
        };
        let _ = writeln!(
            out,
            "nimbus-bench {} · {} {} · {}/{}",
            self.version, c.api, c.endpoint, c.bucket, c.prefix
        );
        let _ = writeln!(
            out,
            "{} · sizes {} · {} objects ({} keys) · {} clients{} · {length} (+{}s warmup) · verify {}",
            c.mix,
            c.sizes,
            c.objects,
            c.keys,
            c.concurrency,
            c.rate
                .map_or(String::new(), |r| format!(" · open loop {r} ops/s")),
            c.warmup_secs,
            if c.verify { "on" } else { "off" }
        );
        if let Some(p) = &self.prepare {
            let _ = writeln!(
                out,
                "prepare: {} objects, {} in {:.1}s",
                p.objects,
                format_size(p.bytes),
                p.secs
            );
        }
        let _ = writeln!(
            out,
            "\n{:<10} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "op", "ops", "ops/s", "MiB/s", "p50", "p90", "p99", "p99.9", "max", "errors"
        );
        let rows = self
            .ops
            .iter()
            .chain((self.ops.len() > 1).then_some(&self.total));
        for s in rows {
            let l = &s.latency_us;
            let _ = writeln!(
                out,
                "{:<10} {:>9} {:>10.1} {:>9.2} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
                s.op,
                s.ops,
                s.ops_per_sec,
                s.mib_per_sec,
                format_micros(l.p50 as f64),
                format_micros(l.p90 as f64),
                format_micros(l.p99 as f64),
                format_micros(l.p999 as f64),
                format_micros(l.max as f64),
                s.errors
            );
        }
        for s in &self.ops {
            for (kind, n) in &s.errors_by_kind {
                let first = s.first_errors.get(kind).map_or("", String::as_str);
                let _ = writeln!(out, "errors: {} {kind}: {n} (first: {first})", s.op);
            }
        }
        let _ = writeln!(
            out,
            "\nmeasured {:.2}s{} · client cpu {:.2}s user + {:.2}s system = {:.0}% of one core ({} cores)",
            self.elapsed_secs,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
            self.cpu.user_secs,
            self.cpu.system_secs,
            self.cpu.percent_of_one_core,
            self.cpu.cores
        );
        let _ = writeln!(out, "commit {} · {}", self.commit, self.time_utc);
        out
    }
}

/// Formats seconds since the Unix epoch as RFC 3339 UTC (`2026-11-23T10:04:05Z`).
#[must_use]
pub fn rfc3339_utc(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn summaries_merge_workers_and_count_errors() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        for i in 1..=100 {
            a.record_ok(OpKind::Get, 10, i * 10);
        }
        b.record_ok(OpKind::Put, 4096, 5000);
        b.record_error(
            OpKind::Put,
            OpError::new(
                ErrorKind::Status {
                    status: 503,
                    code: Some("SlowDown".to_owned()),
                },
                "slow",
            ),
        );
        a.merge(&b);
        let (total, ops) = a.summarize(2.0);
        assert_eq!(total.ops, 101);
        assert_eq!(total.errors, 1);
        assert_eq!(ops[0].op, "put");
        assert_eq!(ops[0].errors_by_kind["http 503 SlowDown"], 1);
        let get = &ops[1];
        assert_eq!(get.ops_per_sec, 50.0);
        assert!((495..=505).contains(&get.latency_us.p50));
        assert!(get.latency_us.p99 <= get.latency_us.p999);
        assert_eq!(get.latency_us.max, 1000);
        assert!(get.cdf.windows(2).all(|w| w[0][1] <= w[1][1]));
    }
}
