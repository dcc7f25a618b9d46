//! `GET /metrics`: the node's figures in the Prometheus text format (version 0.0.4), device by
//! device — the auditor's and the workers' counters, the placement the workers last found,
//! free space. Open, as `/health` is: it names no object.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::NodeState;

/// One metric: name, type, help, and a value per device.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    values: Vec<(String, u64)>,
}

pub(super) async fn metrics(State(state): State<Arc<NodeState>>) -> Response {
    let mut families = vec![
        family(
            "nimbus_audit_passes_total",
            "counter",
            "Whole passes of the auditor over the device.",
        ),
        family(
            "nimbus_audit_fragments_total",
            "counter",
            "Fragments the auditor verified.",
        ),
        family(
            "nimbus_audit_bytes_total",
            "counter",
            "Bytes the auditor read verifying fragments.",
        ),
        family(
            "nimbus_audit_corrupt_total",
            "counter",
            "Fragments the auditor found corrupt and quarantined.",
        ),
        family(
            "nimbus_audit_unreadable_total",
            "counter",
            "Fragments the auditor could not read.",
        ),
        family(
            "nimbus_worker_passes_total",
            "counter",
            "Whole passes of the workers over the device's partitions.",
        ),
        family(
            "nimbus_worker_pass_partitions_left",
            "gauge",
            "Partitions the running pass has still to do.",
        ),
        family(
            "nimbus_worker_moved_fragments_total",
            "counter",
            "Fragments moved to the device owning their slot.",
        ),
        family(
            "nimbus_worker_moved_bytes_total",
            "counter",
            "Data bytes of the fragments moved.",
        ),
        family(
            "nimbus_worker_rebuilt_fragments_total",
            "counter",
            "Fragments rebuilt from other fragments.",
        ),
        family(
            "nimbus_worker_rebuilt_bytes_total",
            "counter",
            "Data bytes of the fragments rebuilt.",
        ),
        family(
            "nimbus_worker_reclaimed_fragments_total",
            "counter",
            "Fragment files removed as garbage or orphans.",
        ),
        family(
            "nimbus_worker_reclaimed_bytes_total",
            "counter",
            "Bytes on disk of the files removed.",
        ),
        family(
            "nimbus_worker_misplaced_fragments",
            "gauge",
            "Committed fragments here whose slot another device owns (last pass).",
        ),
        family(
            "nimbus_worker_degraded_partitions",
            "gauge",
            "Partitions with a slot here found below full redundancy (last pass).",
        ),
        family(
            "nimbus_worker_errors_total",
            "counter",
            "Worker steps that failed (retried next pass).",
        ),
        family(
            "nimbus_index_sync_passes_total",
            "counter",
            "Index anti-entropy passes over the device's shards.",
        ),
        family(
            "nimbus_index_records_repaired_total",
            "counter",
            "Index records copied between a shard's replicas by anti-entropy.",
        ),
        family(
            "nimbus_device_available_bytes",
            "gauge",
            "Bytes free on the device's file system.",
        ),
    ];
    let mut names: Vec<&String> = state.devices.keys().collect();
    names.sort();
    for name in names {
        let Some(d) = state.devices.get(name) else {
            continue;
        };
        let a = d.audit.report();
        let w = d.workers.report();
        let available = d
            .fragments
            .engine()
            .space(d.fragments.root())
            .await
            .map_or(0, |s| s.0);
        let values = [
            a.cycles,
            a.fragments,
            a.bytes,
            a.corrupt,
            a.errors,
            w.passes,
            w.pass_partitions.saturating_sub(w.pass_done),
            w.moved_fragments,
            w.moved_bytes,
            w.rebuilt_fragments,
            w.rebuilt_bytes,
            w.reclaimed_fragments,
            w.reclaimed_bytes,
            w.misplaced,
            w.degraded_partitions,
            w.errors,
            w.index_syncs,
            w.index_records_repaired,
            available,
        ];
        for (f, v) in families.iter_mut().zip(values) {
            f.values.push((name.clone(), v));
        }
    }
    let mut text = String::new();
    for f in &families {
        let _ = writeln!(text, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(text, "# TYPE {} {}", f.name, f.kind);
        for (device, value) in &f.values {
            let _ = writeln!(text, "{}{{device=\"{}\"}} {value}", f.name, escape(device));
        }
    }
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn family(name: &'static str, kind: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind,
        help,
        values: Vec::new(),
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
