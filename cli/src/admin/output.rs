//! How `nimbus admin` prints: a line of text for people, JSON (`--json`) for scripts. Pure
//! formatting of values already fetched; writes go through `io::Result` so a closed pipe
//! ends the command with an error, not a panic.

use std::fmt::Display;
use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{Result, bail};
use nimbus_ring::map::{ClusterMap, DeviceKey, MapError, Versioning};
use nimbus_ring::raft::NodeId;
use nimbus_ring::raft::group::{MemberStatus, MembershipView};
use serde_json::{Value, json};

/// How many names `map show` lists per kind before it only counts.
const NAMES_SHOWN: usize = 10;

/// What a command prints, both ways, and how it exits.
pub struct Report {
    text: String,
    json: Value,
    failed: bool,
}

impl Report {
    /// The same report, failed (exit status 1) if `failed`.
    #[must_use]
    pub fn failed_if(mut self, failed: bool) -> Self {
        self.failed |= failed;
        self
    }

    /// Returns a successful report.
    pub fn new(text: String, json: Value) -> Self {
        Report {
            text,
            json,
            failed: false,
        }
    }

    /// Prints the text, or the JSON when `json`.
    pub fn print(&self, json: bool) -> Result<()> {
        let mut out = io::stdout().lock();
        if json {
            serde_json::to_writer_pretty(&mut out, &self.json)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}", self.text)?;
        }
        Ok(())
    }

    /// Returns how the command exits.
    pub fn exit_code(&self) -> ExitCode {
        if self.failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// Prints a change the map refused, as JSON: its error code and fields, and its message.
pub fn refusal(e: &MapError) -> Result<()> {
    let mut value = serde_json::to_value(e)?;
    value["message"] = json!(e.to_string());
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &value)?;
    writeln!(out)?;
    Ok(())
}

/// Joins displayable values with ", ", or says "none".
fn list<T: Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// "1=10.0.0.1:7001, 2=…", or "none".
fn members(members: &std::collections::BTreeMap<NodeId, String>) -> String {
    list(members.iter().map(|(id, addr)| format!("{id}={addr}")))
}

fn or_dash(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The group's membership after a change: "{done}: voters …; learners …".
pub fn membership(done: &str, view: &MembershipView) -> Report {
    Report::new(
        format!(
            "{done}: voters {}; learners {}",
            members(&view.voters),
            members(&view.learners)
        ),
        json!({ "voters": view.voters, "learners": view.learners }),
    )
}

fn status_line(s: &MemberStatus) -> String {
    let view = &s.membership;
    if view.voters.is_empty() && view.learners.is_empty() {
        return format!(
            "member {}: in no group yet; start one with `nimbus admin meta init ID=ADDR…`",
            s.id
        );
    }
    let leader = match (s.leader_id, &s.leader_addr) {
        (Some(id), Some(addr)) => format!("leader {id} at {addr}"),
        (Some(id), None) => format!("leader {id}"),
        (None, _) => "no leader known".to_owned(),
    };
    format!(
        "member {}: {}, term {}, {leader}, log {} applied {}, map version {} epoch {}; voters {}; learners {}",
        s.id,
        s.state,
        s.term,
        or_dash(s.last_log_index),
        or_dash(s.last_applied),
        s.map_version,
        s.map_epoch,
        members(&view.voters),
        members(&view.learners)
    )
}

/// One member's status.
pub fn status(s: &MemberStatus) -> Report {
    Report::new(status_line(s), json!(s))
}

/// Every member's status, one line each; fails if a member gave none.
pub fn statuses(all: &[(NodeId, String, Result<MemberStatus>)]) -> Report {
    let mut lines = Vec::new();
    let mut values = Vec::new();
    let mut failed = false;
    for (id, addr, status) in all {
        match status {
            Ok(s) => {
                lines.push(status_line(s));
                values.push(json!(s));
            }
            Err(e) => {
                failed = true;
                lines.push(format!("member {id} at {addr}: no status: {e:#}"));
                values.push(json!({ "id": id, "addr": addr, "error": format!("{e:#}") }));
            }
        }
    }
    Report {
        text: lines.join("\n"),
        json: Value::Array(values),
        failed,
    }
}

/// A policy's ring: its epoch and settings, then a table of devices.
pub fn ring(map: &ClusterMap, policy: &str) -> Result<Report> {
    let Some(entry) = map.policy(policy) else {
        bail!(
            "no storage policy {policy} (policies: {})",
            list(map.policy_names())
        );
    };
    let b = &entry.builder;
    let ring_epoch = entry.ring.as_ref().map(|r| r.epoch().0);
    let slots = b.slot_counts();
    let mut rows = vec![[
        "ID".to_owned(),
        "LOCATION".to_owned(),
        "WEIGHT".to_owned(),
        "SLOTS".to_owned(),
        "STATE".to_owned(),
    ]];
    let mut devices = Vec::new();
    for (d, &slots) in b.devices().iter().zip(&slots) {
        let key = DeviceKey {
            node: d.device.location.node,
            device: d.device.location.name.clone(),
        };
        let state = if d.removed {
            "removed"
        } else if map.is_up(&key) {
            "up"
        } else {
            "down"
        };
        rows.push([
            d.device.id.to_string(),
            d.device.location.to_string(),
            d.device.weight.to_string(),
            slots.to_string(),
            state.to_owned(),
        ]);
        devices.push(json!({
            "id": d.device.id,
            "location": d.device.location.to_string(),
            "weight": d.device.weight,
            "slots": slots,
            "state": state,
        }));
    }
    let epoch = match ring_epoch {
        Some(e) => format!("ring epoch {e}"),
        None => "not rebalanced yet".to_owned(),
    };
    let pending = if b.has_pending_changes() {
        "; devices changed since the last rebalance"
    } else {
        ""
    };
    let mut text = format!(
        "{policy}: {epoch}, {} partitions (part power {}), {} slots each, min_part_hours {}, {} device(s){pending}; map version {} epoch {}",
        b.partitions(),
        b.part_power(),
        b.slot_count(),
        b.min_part_hours(),
        b.devices().len(),
        map.version(),
        map.epoch()
    );
    if !devices.is_empty() {
        text.push('\n');
        text.push_str(&table(&rows));
    }
    Ok(Report::new(
        text,
        json!({
            "policy": policy,
            "ring_epoch": ring_epoch,
            "builder_epoch": b.epoch(),
            "part_power": b.part_power(),
            "slots_per_partition": b.slot_count(),
            "min_part_hours": b.min_part_hours(),
            "pending_changes": b.has_pending_changes(),
            "devices": devices,
            "map_version": map.version(),
            "map_epoch": map.epoch(),
        }),
    ))
}

/// Aligns rows into columns, two spaces apart.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn versioning_word(v: Versioning) -> &'static str {
    match v {
        Versioning::Unversioned => "unversioned",
        Versioning::Enabled => "enabled",
        Versioning::Suspended => "suspended",
    }
}

/// The buckets, of one owner or all, as a table.
pub fn buckets(map: &ClusterMap, owner: Option<&str>) -> Report {
    let chosen: Vec<_> = map
        .buckets()
        .filter(|(_, b)| owner.is_none_or(|o| b.owner == o))
        .collect();
    let values: Vec<Value> = chosen
        .iter()
        .map(|(name, b)| {
            json!({
                "name": name,
                "owner": b.owner,
                "policy": b.policy,
                "versioning": b.versioning,
                "shards": b.shards,
                "created_ms": b.created_ms,
            })
        })
        .collect();
    if chosen.is_empty() {
        let text = match owner {
            Some(o) => format!("no buckets owned by {o}"),
            None => "no buckets".to_owned(),
        };
        return Report::new(text, Value::Array(values));
    }
    let mut rows = vec![[
        "NAME".to_owned(),
        "OWNER".to_owned(),
        "POLICY".to_owned(),
        "VERSIONING".to_owned(),
        "SHARDS".to_owned(),
    ]];
    for (name, b) in &chosen {
        rows.push([
            (*name).to_owned(),
            b.owner.clone(),
            b.policy.clone(),
            versioning_word(b.versioning).to_owned(),
            b.shards.to_string(),
        ]);
    }
    Report::new(table(&rows), Value::Array(values))
}

/// "N: a, b, c" with at most [`NAMES_SHOWN`] names.
fn counted(names: &[&str]) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    let shown = names[..names.len().min(NAMES_SHOWN)].join(", ");
    let more = if names.len() > NAMES_SHOWN {
        ", …"
    } else {
        ""
    };
    format!("{} ({shown}{more})", names.len())
}

/// A summary of the whole map (the JSON also lists every credential id).
pub fn map_summary(map: &ClusterMap) -> Report {
    let mut lines = vec![format!(
        "map version {}, epoch {}, default policy {}, index policy {}",
        map.version(),
        map.epoch(),
        map.default_policy().unwrap_or("none"),
        map.index_policy().unwrap_or("none")
    )];
    let mut policies = Vec::new();
    for name in map.policy_names() {
        let Some(entry) = map.policy(name) else {
            continue;
        };
        let ring_epoch = entry.ring.as_ref().map(|r| r.epoch().0);
        let devices = entry
            .builder
            .devices()
            .iter()
            .filter(|d| !d.removed)
            .count();
        let epoch = match ring_epoch {
            Some(e) => format!("ring epoch {e}"),
            None => "not rebalanced yet".to_owned(),
        };
        lines.push(format!("policy {name}: {epoch}, {devices} device(s)"));
        policies.push(json!({ "name": name, "ring_epoch": ring_epoch, "devices": devices }));
    }
    if policies.is_empty() {
        lines.push("policies: none".to_owned());
    }
    let accounts: Vec<&str> = map.accounts().map(|(n, _)| n).collect();
    // Ids only: the map holds the secrets, which are never shown again.
    let credentials: Vec<&str> = map.credentials().map(|(id, _)| id).collect();
    let buckets: Vec<&str> = map.buckets().map(|(n, _)| n).collect();
    let down: Vec<Value> = map
        .down_devices()
        .map(|(key, since_ms)| {
            json!({ "node": key.node, "device": key.device, "since_ms": since_ms })
        })
        .collect();
    lines.push(format!("accounts: {}", counted(&accounts)));
    lines.push(format!("credentials: {}", credentials.len()));
    lines.push(format!("buckets: {}", counted(&buckets)));
    lines.push(format!(
        "down devices: {}",
        list(
            map.down_devices()
                .map(|(k, _)| format!("{}/{}", k.node, k.device))
        )
    ));
    Report::new(
        lines.join("\n"),
        json!({
            "version": map.version(),
            "epoch": map.epoch(),
            "default_policy": map.default_policy(),
            "index_policy": map.index_policy(),
            "policies": policies,
            "accounts": accounts,
            "credentials": credentials.len(),
            "credential_ids": credentials,
            "buckets": buckets,
            "down_devices": down,
        }),
    )
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One device's workers: the running pass (partitions done, rate, ETA) and the counters.
fn worker_line(w: &Value, now: u64) -> String {
    let n = |k: &str| w[k].as_u64().unwrap_or(0);
    let pass = if n("pass_partitions") > 0 {
        let (done, total) = (n("pass_done"), n("pass_partitions"));
        let elapsed = now.saturating_sub(n("pass_started_unix")).max(1);
        let rate = done as f64 / elapsed as f64;
        let eta = if rate > 0.0 {
            format!("{:.0} s", (total - done.min(total)) as f64 / rate)
        } else {
            "unknown".to_owned()
        };
        format!(
            "pass {}: {done}/{total} partitions ({:.1}/s, ETA {eta})",
            n("passes") + 1,
            rate
        )
    } else if w.is_null() {
        return "not reported".to_owned();
    } else {
        format!(
            "{} passes done (last {} s)",
            n("passes"),
            n("last_pass_secs")
        )
    };
    format!(
        "{pass}; moved {} ({} bytes), rebuilt {} ({} bytes), reclaimed {} ({} bytes); {} misplaced, {} partitions degraded; {} errors",
        n("moved_fragments"),
        n("moved_bytes"),
        n("rebuilt_fragments"),
        n("rebuilt_bytes"),
        n("reclaimed_fragments"),
        n("reclaimed_bytes"),
        n("misplaced"),
        n("degraded_partitions"),
        n("errors"),
    )
}

/// The workers of each storage node, one line per device; fails if a node gave no answer.
pub fn workers(nodes: &[(String, Result<Value>)]) -> Report {
    let mut lines = Vec::new();
    let mut values = Vec::new();
    let mut failed = false;
    for (node, health) in nodes {
        match health {
            Ok(h) => {
                for d in h["devices"].as_array().into_iter().flatten() {
                    let a = &d["audit"];
                    lines.push(format!(
                        "{node} {}: audit {} passes, {} fragments ({} bytes) verified, {} corrupt quarantined, {} unreadable",
                        d["name"].as_str().unwrap_or("?"),
                        a["cycles"],
                        a["fragments"],
                        a["bytes"],
                        a["corrupt"],
                        a["errors"],
                    ));
                    lines.push(format!(
                        "{node} {}: workers {}",
                        d["name"].as_str().unwrap_or("?"),
                        worker_line(&d["workers"], now_unix())
                    ));
                }
                values.push(json!({ "node": node, "devices": h["devices"] }));
            }
            Err(e) => {
                failed = true;
                lines.push(format!("{node}: no answer: {e:#}"));
                values.push(json!({ "node": node, "error": format!("{e:#}") }));
            }
        }
    }
    Report {
        text: lines.join("\n"),
        json: Value::Array(values),
        failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let rows = [
            ["ID".to_owned(), "NAME".to_owned()],
            ["10".to_owned(), "x".to_owned()],
        ];
        assert_eq!(table(&rows), "ID  NAME\n10  x");
    }

    #[test]
    fn long_name_lists_are_counted_and_cut() {
        let names: Vec<String> = (0..12).map(|i| format!("b{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let text = counted(&names);
        assert!(text.starts_with("12 (b0, b1"), "{text}");
        assert!(text.ends_with("b9, …)"), "{text}");
        assert_eq!(counted(&[]), "none");
    }
}
