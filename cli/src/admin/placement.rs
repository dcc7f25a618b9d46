//! `nimbus admin placement`: where the cluster's fragments are against where the ring wants
//! them. Every device of the rings is asked what it holds (per partition: committed
//! fragments by index and a digest of its (object, version) set); then, per policy,
//!
//! - a fragment is **misplaced** when the device holding it is not the one the ring gives
//!   its slot (a handoff not yet reverted, a slot the ring moved);
//! - a partition is **below full redundancy** when it has misplaced fragments, when its
//!   slots' devices do not all hold the same (object, version) set, or when one of them did
//!   not answer.
//!
//! Both are 0 on a healthy cluster. It is a full scan: one directory walk per device.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use nimbus_ring::map::{ClusterMap, DeviceKey};
use serde_json::{Value, json};

use super::client::MetaClient;
use super::output::Report;

/// Examples of partitions below full redundancy listed per policy.
const EXAMPLES: usize = 10;

/// What one device holds of one partition.
struct Holding {
    device: DeviceKey,
    /// Committed fragments by fragment index.
    indexes: BTreeMap<usize, u64>,
    digest: String,
}

/// Per policy: the figures, and some partitions below full redundancy.
#[derive(Default)]
struct PolicyFigures {
    partitions_with_data: u64,
    fragments: u64,
    misplaced: u64,
    degraded: u64,
    examples: Vec<String>,
}

/// Runs the scan and reports it.
///
/// # Errors
/// The map could not be read.
pub async fn placement(client: &MetaClient) -> Result<Report> {
    let map = client.map().await?;
    let epoch = map.epoch().0;
    let devices = ring_devices(&map);
    let mut holdings: BTreeMap<(String, u32), Vec<Holding>> = BTreeMap::new();
    let mut unreachable = Vec::new();
    for device in &devices {
        let answer = client
            .node_placement(&device.node.to_string(), &device.device, epoch)
            .await;
        let value = match answer {
            Ok(v) => v,
            Err(e) => {
                unreachable.push((device.clone(), format!("{e:#}")));
                continue;
            }
        };
        for p in value["partitions"].as_array().into_iter().flatten() {
            let (Some(policy), Some(partition)) = (p["policy"].as_str(), p["partition"].as_u64())
            else {
                continue;
            };
            let indexes = p["indexes"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(i, n)| Some((i.parse().ok()?, n.as_u64()?)))
                .collect();
            holdings
                .entry((
                    policy.to_owned(),
                    u32::try_from(partition).unwrap_or(u32::MAX),
                ))
                .or_default()
                .push(Holding {
                    device: device.clone(),
                    indexes,
                    digest: p["digest"].as_str().unwrap_or_default().to_owned(),
                });
        }
    }
    let unreachable_set: BTreeSet<&DeviceKey> = unreachable.iter().map(|(d, _)| d).collect();
    let mut figures: BTreeMap<String, PolicyFigures> = BTreeMap::new();
    for ((policy, partition), held) in &holdings {
        let f = figures.entry(policy.clone()).or_default();
        f.partitions_with_data += 1;
        let Some(ring) = map.policy(policy).and_then(|p| p.ring.as_ref()) else {
            let n: u64 = held.iter().flat_map(|h| h.indexes.values()).sum();
            f.fragments += n;
            f.misplaced += n;
            f.degraded += 1;
            continue;
        };
        let owners: Vec<DeviceKey> = ring
            .primaries(nimbus_core::ids::PartitionId(*partition))
            .map(|d| DeviceKey {
                node: d.location.node,
                device: d.location.name.clone(),
            })
            .collect();
        let mut misplaced = 0;
        for h in held {
            for (&index, &n) in &h.indexes {
                f.fragments += n;
                if owners.get(index) != Some(&h.device) {
                    misplaced += n;
                }
            }
        }
        let digests: BTreeSet<&str> = owners
            .iter()
            .map(|o| {
                held.iter()
                    .find(|h| &h.device == o)
                    .map_or("none", |h| h.digest.as_str())
            })
            .collect();
        let silent = owners.iter().any(|o| unreachable_set.contains(o));
        f.misplaced += misplaced;
        if misplaced > 0 || digests.len() > 1 || silent {
            f.degraded += 1;
            if f.examples.len() < EXAMPLES {
                f.examples.push(format!(
                    "{policy}/{partition}: {misplaced} misplaced, {} distinct slot contents{}",
                    digests.len(),
                    if silent {
                        ", a slot's device did not answer"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    Ok(report(&devices, &unreachable, &figures))
}

/// Every device of every policy's ring, once.
fn ring_devices(map: &ClusterMap) -> Vec<DeviceKey> {
    let set: BTreeSet<DeviceKey> = map
        .policy_names()
        .filter_map(|p| map.policy(p)?.ring.as_ref())
        .flat_map(|ring| ring.devices().iter())
        .map(|d| DeviceKey {
            node: d.location.node,
            device: d.location.name.clone(),
        })
        .collect();
    set.into_iter().collect()
}

fn report(
    devices: &[DeviceKey],
    unreachable: &[(DeviceKey, String)],
    figures: &BTreeMap<String, PolicyFigures>,
) -> Report {
    let mut lines = vec![format!(
        "{} devices asked, {} answered",
        devices.len(),
        devices.len() - unreachable.len()
    )];
    let (mut misplaced, mut degraded) = (0, 0);
    let mut policies = Vec::new();
    for (policy, f) in figures {
        misplaced += f.misplaced;
        degraded += f.degraded;
        lines.push(format!(
            "{policy}: {} fragments in {} partitions; {} misplaced; {} partitions below full redundancy",
            f.fragments, f.partitions_with_data, f.misplaced, f.degraded
        ));
        lines.extend(f.examples.iter().map(|e| format!("  {e}")));
        policies.push(json!({
            "policy": policy,
            "fragments": f.fragments,
            "partitions_with_data": f.partitions_with_data,
            "misplaced": f.misplaced,
            "below_full_redundancy": f.degraded,
            "examples": f.examples,
        }));
    }
    for (d, e) in unreachable {
        lines.push(format!("{}/{}: no answer: {e}", d.node, d.device));
    }
    lines.push(format!(
        "total: {misplaced} misplaced fragments, {degraded} partitions below full redundancy"
    ));
    Report::new(
        lines.join("\n"),
        json!({
            "misplaced": misplaced,
            "below_full_redundancy": degraded,
            "policies": policies,
            "unreachable": unreachable
                .iter()
                .map(|(d, e)| json!({"node": d.node.to_string(), "device": d.device, "error": e}))
                .collect::<Vec<Value>>(),
        }),
    )
    .failed_if(!unreachable.is_empty())
}
