//! `GET /metrics`: the node's figures in the Prometheus text format (version 0.0.4), device by
//! device — the auditor's and the workers' counters, the placement the workers last found,
//! free space. Open, as `/health` is: it names no object.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::NodeState;
use crate::audit::AuditReport;
use crate::index::IndexStats;
use crate::workers::WorkerReport;

/// One figure of one device: name, type, help, value.
type Figure = (&'static str, &'static str, &'static str, u64);

/// A device's figures, each named, typed and explained beside its value.
fn figures(a: &AuditReport, w: &WorkerReport, i: &IndexStats, available: u64) -> Vec<Figure> {
    vec![
        (
            "nimbus_audit_passes_total",
            "counter",
            "Whole passes of the auditor over the device.",
            a.cycles,
        ),
        (
            "nimbus_audit_fragments_total",
            "counter",
            "Fragments the auditor verified.",
            a.fragments,
        ),
        (
            "nimbus_audit_bytes_total",
            "counter",
            "Bytes the auditor read verifying fragments.",
            a.bytes,
        ),
        (
            "nimbus_audit_corrupt_total",
            "counter",
            "Fragments the auditor found corrupt and quarantined.",
            a.corrupt,
        ),
        (
            "nimbus_audit_unreadable_total",
            "counter",
            "Fragments the auditor could not read.",
            a.errors,
        ),
        (
            "nimbus_worker_passes_total",
            "counter",
            "Whole passes of the workers over the device's partitions.",
            w.passes,
        ),
        (
            "nimbus_worker_pass_partitions_left",
            "gauge",
            "Partitions the running pass has still to do.",
            w.pass_partitions.saturating_sub(w.pass_done),
        ),
        (
            "nimbus_worker_moved_fragments_total",
            "counter",
            "Fragments moved to the device owning their slot.",
            w.moved_fragments,
        ),
        (
            "nimbus_worker_moved_bytes_total",
            "counter",
            "Data bytes of the fragments moved.",
            w.moved_bytes,
        ),
        (
            "nimbus_worker_rebuilt_fragments_total",
            "counter",
            "Fragments rebuilt from other fragments.",
            w.rebuilt_fragments,
        ),
        (
            "nimbus_worker_rebuilt_bytes_total",
            "counter",
            "Data bytes of the fragments rebuilt.",
            w.rebuilt_bytes,
        ),
        (
            "nimbus_worker_reclaimed_fragments_total",
            "counter",
            "Fragment files removed as garbage or orphans.",
            w.reclaimed_fragments,
        ),
        (
            "nimbus_worker_reclaimed_bytes_total",
            "counter",
            "Bytes on disk of the files removed.",
            w.reclaimed_bytes,
        ),
        (
            "nimbus_worker_misplaced_fragments",
            "gauge",
            "Committed fragments here whose slot another device owns (last pass).",
            w.misplaced,
        ),
        (
            "nimbus_worker_degraded_partitions",
            "gauge",
            "Partitions with a slot here found below full redundancy (last pass).",
            w.degraded_partitions,
        ),
        (
            "nimbus_worker_errors_total",
            "counter",
            "Worker steps that failed (retried next pass).",
            w.errors,
        ),
        (
            "nimbus_index_sync_passes_total",
            "counter",
            "Index anti-entropy passes over the device's shards.",
            w.index_syncs,
        ),
        (
            "nimbus_index_records_repaired_total",
            "counter",
            "Index records copied between a shard's replicas by anti-entropy.",
            w.index_records_repaired,
        ),
        (
            "nimbus_index_tombstones_purged_total",
            "counter",
            "Tombstones forgotten on every replica after the grace period.",
            w.index_tombstones_purged,
        ),
        (
            "nimbus_index_copies_dropped_total",
            "counter",
            "Copies of shards the index ring no longer places on the device, forgotten once every replica held their records.",
            w.index_copies_dropped,
        ),
        (
            "nimbus_index_writes_total",
            "counter",
            "Index writes (primary applies, replicated records, purges) the device's index store committed.",
            i.writes,
        ),
        (
            "nimbus_index_commits_total",
            "counter",
            "Batches of index writes the device's index store made durable, each with one fsync: writes arriving together share one (group commit).",
            i.commits,
        ),
        (
            "nimbus_index_checkpoints_total",
            "counter",
            "Of those batches, the ones committed durably to the index database (a checkpoint, when the write-ahead log is full); the others went through the log.",
            i.checkpoints,
        ),
        (
            "nimbus_device_available_bytes",
            "gauge",
            "Bytes free on the device's file system.",
            available,
        ),
    ]
}

pub(super) async fn metrics(State(state): State<Arc<NodeState>>) -> Response {
    let mut names: Vec<&String> = state.devices.keys().collect();
    names.sort();
    // Per figure, in order: its head, then one sample per device.
    let mut families: Vec<(Figure, Vec<(String, u64)>)> = Vec::new();
    for name in names {
        let Some(d) = state.devices.get(name) else {
            continue;
        };
        let available = d
            .fragments
            .engine()
            .space(d.fragments.root())
            .await
            .map_or(0, |s| s.0);
        let index = d.index.stats();
        for (i, figure) in figures(&d.audit.report(), &d.workers.report(), &index, available)
            .into_iter()
            .enumerate()
        {
            if families.len() <= i {
                families.push((figure, Vec::new()));
            }
            families[i].1.push((name.clone(), figure.3));
        }
    }
    let mut text = String::new();
    for ((metric, kind, help, _), samples) in &families {
        let _ = writeln!(text, "# HELP {metric} {help}");
        let _ = writeln!(text, "# TYPE {metric} {kind}");
        for (device, value) in samples {
            let _ = writeln!(text, "{metric}{{device=\"{}\"}} {value}", escape(device));
        }
    }
    let now = tokio::time::Instant::now();
    let node: [Figure; 4] = [
        (
            "nimbus_index_leased_reads_total",
            "counter",
            "Index reads this node answered alone, as a shard's primary under its read lease.",
            state.leased_reads.load(Ordering::Relaxed),
        ),
        (
            "nimbus_index_unleased_reads_total",
            "counter",
            "Index reads that asked this node, as a shard's primary, for an answer under its lease and got one without (no lease on the request's epoch, or peering failed): the proxy then asked a majority.",
            state.unleased_reads.load(Ordering::Relaxed),
        ),
        (
            "nimbus_index_lease_waits_total",
            "counter",
            "Writes this node held, as a shard's new primary, until the leases of earlier primaries ran out.",
            state.lease_waits.load(Ordering::Relaxed),
        ),
        (
            "nimbus_lease_held",
            "gauge",
            "1 while the node holds a read lease on the newest epoch it has seen.",
            u64::from(state.leases.holds(state.epoch(), now)),
        ),
    ];
    for (metric, kind, help, value) in node {
        let _ = writeln!(text, "# HELP {metric} {help}");
        let _ = writeln!(text, "# TYPE {metric} {kind}");
        let _ = writeln!(text, "{metric} {value}");
    }
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
