//! Reports that explain a ring to its operator: how each device's slots compare with its
//! weight (and why, where they differ), and how well partitions are spread over failure
//! domains.

use nimbus_core::ids::{DeviceId, PartitionId};
use serde::Serialize;

use crate::builder::{NONE, RingBuilder};
use crate::device::{Location, Tier};
use crate::topology::Topology;

/// Below this many slots wanted, one slot is more than 1% of a device's share: the report
/// suggests a higher part power.
const SLOTS_FOR_ONE_PCT: f64 = 100.0;

/// Each device's slots against its weight.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BalanceReport {
    /// All slots in the ring.
    pub total_slots: u64,
    /// One row per device.
    pub devices: Vec<DeviceBalance>,
    /// The highest balance among devices with weight, in percent.
    pub worst_over_pct: f64,
    /// The lowest balance among devices with weight, in percent.
    pub worst_under_pct: f64,
    /// Slots above their device's target, summed over devices: what another rebalance would
    /// still move.
    pub slots_off_target: u64,
    /// Set when the ring has too few partitions for 1% balance.
    pub note: Option<String>,
}

/// One device's balance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceBalance {
    /// The device.
    pub id: DeviceId,
    /// Where it sits.
    #[serde(flatten)]
    pub location: Location,
    /// Its weight.
    pub weight: f64,
    /// Removed, waiting to be drained.
    pub removed: bool,
    /// Slots it holds.
    pub slots: u64,
    /// Slots its weight asks for: `total_slots × weight / total weight`.
    pub wanted: f64,
    /// Slots the builder aims for after dispersion.
    pub target: u64,
    /// `100 × (slots − wanted) / wanted`; `None` for a device of weight 0.
    pub balance_pct: Option<f64>,
    /// Why `target` differs from `wanted`, when dispersion made it differ.
    pub reason: Option<String>,
}

impl BalanceReport {
    pub(crate) fn new(builder: &RingBuilder, topo: &Topology) -> Self {
        let counts = builder.slot_counts();
        let total_slots = builder.table.len() as u64;
        let partitions = f64::from(builder.partitions());
        let mut devices = Vec::with_capacity(counts.len());
        let (mut worst_over, mut worst_under) = (0.0f64, 0.0f64);
        let mut off_target = 0;
        let mut smallest_wanted = f64::INFINITY;
        for (i, (d, &slots)) in builder.devices.iter().zip(&counts).enumerate() {
            let leaf = topo.domain(topo.paths[i][3]);
            let wanted = leaf.weighted * partitions;
            let balance_pct = (wanted > 0.0).then(|| 100.0 * (slots as f64 - wanted) / wanted);
            if let Some(b) = balance_pct {
                worst_over = worst_over.max(b);
                worst_under = worst_under.min(b);
                smallest_wanted = smallest_wanted.min(wanted);
            }
            off_target += slots.saturating_sub(leaf.quota);
            devices.push(DeviceBalance {
                id: d.device.id,
                location: d.device.location.clone(),
                weight: d.device.weight,
                removed: d.removed,
                slots,
                wanted,
                target: leaf.quota,
                balance_pct,
                reason: topo.reason(i),
            });
        }
        let note = (smallest_wanted < SLOTS_FOR_ONE_PCT).then(|| {
            format!(
                "the smallest device's share is {smallest_wanted:.1} slots, so one slot is more than 1% of it: a higher part power balances more finely"
            )
        });
        BalanceReport {
            total_slots,
            devices,
            worst_over_pct: worst_over,
            worst_under_pct: worst_under,
            slots_off_target: off_target,
            note,
        }
    }
}

/// How well partitions are spread over failure domains.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DispersionReport {
    /// Partitions in the ring.
    pub partitions: u64,
    /// Partitions with more slots in some failure domain than that domain's cap: they would
    /// lose more slots than necessary if the domain failed.
    pub partitions_crowded: u64,
    /// Per tier (region, zone, node).
    pub tiers: Vec<TierDispersion>,
    /// Up to ten crowded partitions, for a closer look.
    pub examples: Vec<CrowdedPartition>,
}

/// Dispersion at one tier.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TierDispersion {
    /// The tier.
    pub tier: Tier,
    /// Domains of this tier that hold devices with weight.
    pub domains: usize,
    /// The most slots of one partition any domain of this tier may hold.
    pub max_cap: u32,
    /// The most slots of one partition any domain of this tier does hold.
    pub max_seen: u32,
    /// Partitions with more slots in a domain of this tier than its cap.
    pub partitions_crowded: u64,
}

/// A partition with more slots in a domain than the domain's cap.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CrowdedPartition {
    /// The partition.
    pub partition: PartitionId,
    /// The crowded domain.
    pub domain: String,
    /// Slots of the partition in it.
    pub slots: u32,
    /// The most it should hold.
    pub cap: u32,
}

impl DispersionReport {
    pub(crate) fn new(builder: &RingBuilder, topo: &Topology) -> Self {
        let slots = usize::from(builder.slot_count());
        let tiers = [Tier::Region, Tier::Zone, Tier::Node];
        let mut rows: Vec<TierDispersion> = tiers
            .iter()
            .map(|&tier| {
                let at_tier = topo
                    .domains
                    .iter()
                    .filter(|d| d.tier == Some(tier) && d.capacity > 0);
                TierDispersion {
                    tier,
                    domains: at_tier.clone().count(),
                    max_cap: at_tier.map(|d| d.cap).max().unwrap_or(0),
                    max_seen: 0,
                    partitions_crowded: 0,
                }
            })
            .collect();
        let mut crowded_total = 0;
        let mut examples = Vec::new();
        for (p, devs) in builder.table.chunks_exact(slots).enumerate() {
            let mut crowded = false;
            for (t, row) in rows.iter_mut().enumerate() {
                let mut tier_crowded = false;
                for (i, &dev) in devs.iter().enumerate() {
                    if dev == NONE {
                        continue;
                    }
                    let dom = topo.paths[usize::from(dev)][t];
                    if devs[..i]
                        .iter()
                        .any(|&d| d != NONE && topo.paths[usize::from(d)][t] == dom)
                    {
                        continue; // counted at its first slot
                    }
                    let count = devs[i..]
                        .iter()
                        .filter(|&&d| d != NONE && topo.paths[usize::from(d)][t] == dom)
                        .count() as u32;
                    row.max_seen = row.max_seen.max(count);
                    let domain = topo.domain(dom);
                    if domain.capacity > 0 && count > domain.cap {
                        tier_crowded = true;
                        if examples.len() < 10 {
                            examples.push(CrowdedPartition {
                                partition: PartitionId(p as u32),
                                domain: domain.label.clone(),
                                slots: count,
                                cap: domain.cap,
                            });
                        }
                    }
                }
                row.partitions_crowded += u64::from(tier_crowded);
                crowded |= tier_crowded;
            }
            crowded_total += u64::from(crowded);
        }
        DispersionReport {
            partitions: u64::from(builder.partitions()),
            partitions_crowded: crowded_total,
            tiers: rows,
            examples,
        }
    }
}
