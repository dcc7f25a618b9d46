//! How `nimbus ring` prints: aligned text for people, JSON (`--json`) for scripts. Writes go
//! through `io::Result` so a closed pipe ends the command with an error, not a panic.

use std::fmt::Display;
use std::io::{self, Write};
use std::path::Path;

use anyhow::Result;
use nimbus_core::ids::PartitionId;
use nimbus_ring::builder::{RebalanceReport, RingBuilder};
use nimbus_ring::report::DispersionReport;
use nimbus_ring::{Device, Ring};
use serde::Serialize;
use serde_json::json;

fn emit_json(value: &impl Serialize) -> Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Joins displayable values with ", ".
pub fn join<T: Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Formats an integer with thousands separators.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn pct(v: f64) -> String {
    format!("{v:+.2}%")
}

/// A short description of a builder, also the JSON of `validate`.
pub fn builder_summary(b: &RingBuilder) -> serde_json::Value {
    json!({
        "kind": "builder",
        "policy": b.policy(),
        "part_power": b.part_power(),
        "partitions": b.partitions(),
        "slots_per_partition": b.slot_count(),
        "min_part_hours": b.min_part_hours(),
        "seed": b.seed(),
        "epoch": b.epoch(),
        "pending_changes": b.has_pending_changes(),
        "devices": b.devices().len(),
    })
}

/// A short description of a ring.
pub fn ring_summary(ring: &Ring) -> serde_json::Value {
    json!({
        "kind": "ring",
        "policy": ring.policy(),
        "part_power": ring.part_power(),
        "partitions": ring.partitions(),
        "slots_per_partition": ring.policy().slot_count(),
        "epoch": ring.epoch(),
        "devices": ring.devices().len(),
    })
}

/// "policy …, N partitions (part power P), S slots each, min_part_hours H".
fn settings(b: &RingBuilder) -> String {
    format!(
        "policy {}, {} partitions (part power {}), {} slots each, min_part_hours {}",
        b.policy(),
        count(u64::from(b.partitions())),
        b.part_power(),
        b.slot_count(),
        b.min_part_hours()
    )
}

pub fn created(file: &Path, b: &RingBuilder, json: bool) -> Result<()> {
    if json {
        return emit_json(&json!({ "created": file, "builder": builder_summary(b) }));
    }
    let mut o = io::stdout().lock();
    writeln!(
        o,
        "created {}: {}, seed {}",
        file.display(),
        settings(b),
        b.seed()
    )?;
    writeln!(
        o,
        "next: add devices with `nimbus ring add {} r1z1-10.0.0.1:6200/sdb 100`, then `nimbus ring rebalance {}`",
        file.display(),
        file.display()
    )?;
    Ok(())
}

pub fn changed(done: &str, json: bool) -> Result<()> {
    if json {
        return emit_json(&json!({ "done": done }));
    }
    let mut o = io::stdout().lock();
    writeln!(o, "{done}")?;
    writeln!(
        o,
        "not rebalanced yet: `nimbus ring rebalance --dry-run` shows what would move"
    )?;
    Ok(())
}

pub fn dry_run(done: &str, report: &RebalanceReport, json: bool) -> Result<()> {
    if json {
        return emit_json(&json!({ "dry_run": true, "change": done, "rebalance": report }));
    }
    let mut o = io::stdout().lock();
    writeln!(o, "dry run, nothing written: {done}")?;
    write_rebalance(&mut o, report, "a rebalance now would move")
}

pub fn rebalanced(report: &RebalanceReport, ring_file: Option<&Path>, json: bool) -> Result<()> {
    if json {
        return emit_json(&json!({
            "dry_run": ring_file.is_none(),
            "rebalance": report,
            "ring_file": ring_file,
        }));
    }
    let mut o = io::stdout().lock();
    let verb = if ring_file.is_some() {
        "moved"
    } else {
        "dry run, nothing written: would move"
    };
    write_rebalance(&mut o, report, verb)?;
    if let Some(file) = ring_file {
        writeln!(o, "wrote {} (epoch {})", file.display(), report.epoch)?;
    }
    Ok(())
}

fn write_rebalance(o: &mut impl Write, r: &RebalanceReport, verb: &str) -> Result<()> {
    writeln!(
        o,
        "{verb} {} slots ({:.2}% of {}) in {} partitions",
        count(r.slots_moved),
        r.moved_pct,
        count(r.total_slots),
        count(r.partitions_moved)
    )?;
    if r.slots_placed > 0 {
        writeln!(
            o,
            "placed {} slots that had no device (no data moves)",
            count(r.slots_placed)
        )?;
    }
    let epoch = if r.new_epoch {
        format!("new epoch {}", r.epoch)
    } else {
        format!("nothing changed, epoch stays {}", r.epoch)
    };
    writeln!(o, "{epoch}")?;
    writeln!(
        o,
        "balance against weight: worst {} / {}",
        pct(r.worst_over_pct),
        pct(r.worst_under_pct)
    )?;
    if r.partitions_crowded == 0 {
        writeln!(
            o,
            "dispersion: every partition is spread as widely as the topology allows"
        )?;
    } else {
        writeln!(
            o,
            "dispersion: {} partitions are crowded into a failure domain (see `nimbus ring dispersion`)",
            count(r.partitions_crowded)
        )?;
    }
    if r.slots_off_target > 0 {
        writeln!(
            o,
            "{} slots could not move yet (min_part_hours, or at most m slots of a partition per rebalance): rebalance again later",
            count(r.slots_off_target)
        )?;
    }
    if r.frozen_partitions > 0 {
        writeln!(
            o,
            "{} partitions moved within min_part_hours and were left alone",
            count(r.frozen_partitions)
        )?;
    }
    if !r.devices_dropped.is_empty() {
        writeln!(
            o,
            "drained and forgot removed device(s) {}",
            join(&r.devices_dropped)
        )?;
    }
    Ok(())
}

pub fn show(file: &Path, b: &RingBuilder, json: bool) -> Result<()> {
    let balance = b.balance_report();
    let dispersion = b.dispersion_report();
    if json {
        return emit_json(&json!({
            "file": file,
            "builder": builder_summary(b),
            "balance": balance,
            "partitions_crowded": dispersion.partitions_crowded,
        }));
    }
    let mut o = io::stdout().lock();
    writeln!(
        o,
        "{}: {}, epoch {}{}",
        file.display(),
        settings(b),
        b.epoch(),
        if b.has_pending_changes() {
            " (changes not rebalanced yet)"
        } else {
            ""
        }
    )?;
    let total_weight: f64 = b
        .devices()
        .iter()
        .filter(|d| !d.removed)
        .map(|d| d.device.weight)
        .sum();
    writeln!(
        o,
        "{} devices, total weight {total_weight}; balance against weight: worst {} / {}; {} partitions crowded",
        b.devices().len(),
        pct(balance.worst_over_pct),
        pct(balance.worst_under_pct),
        count(dispersion.partitions_crowded)
    )?;
    writeln!(o)?;
    writeln!(
        o,
        "{:>6} {:>6} {:>6}  {:<22} {:<12} {:>10} {:>9} {:>9} {:>9}",
        "id", "region", "zone", "node", "device", "weight", "slots", "target", "balance"
    )?;
    for d in &balance.devices {
        let l = &d.location;
        let balance_pct = match d.balance_pct {
            Some(v) => pct(v),
            None if d.removed => "removed".to_owned(),
            None => "weight 0".to_owned(),
        };
        writeln!(
            o,
            "{:>6} {:>6} {:>6}  {:<22} {:<12} {:>10} {:>9} {:>9} {:>9}",
            d.id.0,
            l.region,
            l.zone,
            l.node.to_string(),
            l.name,
            d.weight,
            d.slots,
            d.target,
            balance_pct
        )?;
    }
    let mut reasons: Vec<&str> = balance
        .devices
        .iter()
        .filter_map(|d| d.reason.as_deref())
        .collect();
    reasons.dedup();
    reasons.sort_unstable();
    reasons.dedup();
    if !reasons.is_empty() || balance.note.is_some() {
        writeln!(o)?;
        writeln!(o, "why some devices are off their weight share:")?;
        for r in reasons {
            writeln!(o, "  - {r}")?;
        }
        if let Some(note) = &balance.note {
            writeln!(o, "  - {note}")?;
        }
    }
    Ok(())
}

pub fn dispersion(r: &DispersionReport, json: bool) -> Result<()> {
    if json {
        return emit_json(r);
    }
    let mut o = io::stdout().lock();
    writeln!(
        o,
        "{} of {} partitions have more slots in a failure domain than the topology forces",
        count(r.partitions_crowded),
        count(r.partitions)
    )?;
    writeln!(o)?;
    writeln!(
        o,
        "{:<8} {:>8} {:>22} {:>22} {:>10}",
        "tier", "domains", "max slots allowed", "max slots seen", "crowded"
    )?;
    for t in &r.tiers {
        writeln!(
            o,
            "{:<8} {:>8} {:>22} {:>22} {:>10}",
            t.tier.name(),
            t.domains,
            t.max_cap,
            t.max_seen,
            count(t.partitions_crowded)
        )?;
    }
    if !r.examples.is_empty() {
        writeln!(o)?;
        writeln!(o, "for example:")?;
        for e in &r.examples {
            writeln!(
                o,
                "  partition {} has {} slots in {} (at most {})",
                e.partition, e.slots, e.domain, e.cap
            )?;
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct PlacedDevice<'a> {
    slot: Option<usize>,
    #[serde(flatten)]
    device: &'a Device,
}

pub fn lookup(
    ring: &Ring,
    path: &str,
    partition: PartitionId,
    handoffs: usize,
    json: bool,
) -> Result<()> {
    let primaries: Vec<PlacedDevice<'_>> = ring
        .primaries(partition)
        .enumerate()
        .map(|(slot, device)| PlacedDevice {
            slot: Some(slot),
            device,
        })
        .collect();
    let handoffs: Vec<PlacedDevice<'_>> = ring
        .handoffs(partition)
        .take(handoffs)
        .map(|device| PlacedDevice { slot: None, device })
        .collect();
    if json {
        return emit_json(&json!({
            "path": path,
            "partition": partition,
            "epoch": ring.epoch(),
            "policy": ring.policy(),
            "primaries": primaries,
            "handoffs": handoffs,
        }));
    }
    let mut o = io::stdout().lock();
    writeln!(
        o,
        "{path}: partition {partition} of {} (ring epoch {}, policy {})",
        ring.partitions(),
        ring.epoch(),
        ring.policy()
    )?;
    writeln!(o, "primaries:")?;
    for p in &primaries {
        writeln!(
            o,
            "  slot {:<3} device {:<6} {}",
            p.slot.unwrap_or(0),
            p.device.id.0,
            p.device.location
        )?;
    }
    writeln!(o, "handoffs:")?;
    for (i, h) in handoffs.iter().enumerate() {
        writeln!(
            o,
            "  {:<8} device {:<6} {}",
            i + 1,
            h.device.id.0,
            h.device.location
        )?;
    }
    Ok(())
}

pub fn validation(
    path: &Path,
    summary: &serde_json::Value,
    errors: &[String],
    warnings: &[String],
    json: bool,
) -> Result<()> {
    if json {
        return emit_json(&json!({
            "file": path,
            "valid": errors.is_empty(),
            "summary": summary,
            "errors": errors,
            "warnings": warnings,
        }));
    }
    let mut o = io::stdout().lock();
    let kind = summary["kind"].as_str().unwrap_or("file");
    if errors.is_empty() {
        writeln!(
            o,
            "{}: a valid {kind} (epoch {}, {} partitions, {} devices)",
            path.display(),
            summary["epoch"],
            summary["partitions"],
            summary["devices"]
        )?;
    } else {
        writeln!(o, "{}: NOT usable", path.display())?;
    }
    for e in errors {
        writeln!(o, "  error: {e}")?;
    }
    for w in warnings {
        writeln!(o, "  warning: {w}")?;
    }
    Ok(())
}
