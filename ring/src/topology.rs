//! The failure-domain tree of a builder's devices, and what each domain should hold.
//!
//! Targets are computed top down. A domain's *cap* is the most slots of one partition it may
//! hold: the smallest count that still lets its parent's slots fit among its siblings, so that
//! every partition is spread as widely as the topology allows (region first, then zone, node,
//! device). Within the caps, a domain's *target* (expected slots per partition) follows its
//! weight: the parent's target is water-filled over the children in proportion to weight, a
//! child that reaches its cap is held there and the rest is shared by the others. A domain's
//! *quota* is its target over the whole ring in whole slots, rounded so that the children's
//! quotas add up to the parent's exactly, preferring the rounding that moves nothing.
//!
//! When a domain's target differs from what its weight alone asks, [`Topology::reason`] says
//! why: the ring chooses dispersion over balance, because a partition crowded into one failure
//! domain is lost with it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::device::{Location, Tier};
use crate::rng::mix64;

/// Index of a domain in [`Topology::domains`].
pub(crate) type DomainIdx = u32;

/// One failure domain: the root (everything), a region, zone, node or device.
#[derive(Debug, Clone)]
pub(crate) struct Domain {
    /// `None` for the root.
    pub tier: Option<Tier>,
    /// `r1`, `r1z2`, `r1z2-10.0.0.5:6200`, `r1z2-10.0.0.5:6200/sdb`.
    pub label: String,
    pub parent: Option<DomainIdx>,
    pub children: Vec<DomainIdx>,
    /// Sum of the weights of the devices below.
    pub weight: f64,
    /// Devices below with weight > 0: a partition can put at most this many slots here.
    pub capacity: u32,
    /// The most slots of one partition this domain may hold.
    pub cap: u32,
    /// Expected slots per partition, after dispersion.
    pub target: f64,
    /// Expected slots per partition by weight alone.
    pub weighted: f64,
    /// Slots over the whole ring.
    pub quota: u64,
}

/// The failure-domain tree. Domains are stored parents before children; devices are leaves.
#[derive(Debug, Clone)]
pub(crate) struct Topology {
    pub domains: Vec<Domain>,
    /// For each builder device: its region, zone, node and device domains.
    pub paths: Vec<[DomainIdx; 4]>,
    pub slots: u32,
}

/// What the topology is built from: one entry per builder device.
pub(crate) struct DeviceInput<'a> {
    pub location: &'a Location,
    /// 0 for removed devices.
    pub weight: f64,
    /// Slots the device holds now (for rounding that moves nothing).
    pub current: u64,
}

impl Topology {
    /// Builds the tree and computes caps, targets and quotas.
    ///
    /// The caller guarantees that at least `slots` devices have weight > 0.
    pub(crate) fn build(devices: &[DeviceInput<'_>], slots: u32, partitions: u64) -> Self {
        type Nodes = BTreeMap<SocketAddr, Vec<usize>>;
        let mut tree: BTreeMap<u32, BTreeMap<u32, Nodes>> = BTreeMap::new();
        for (i, d) in devices.iter().enumerate() {
            let l = d.location;
            let zones = tree.entry(l.region).or_default();
            zones
                .entry(l.zone)
                .or_default()
                .entry(l.node)
                .or_default()
                .push(i);
        }

        let mut topo = Topology {
            domains: vec![Domain::new(None, String::new(), None)],
            paths: vec![[0; 4]; devices.len()],
            slots,
        };
        for (region, zones) in &tree {
            let r = topo.push(Tier::Region, format!("r{region}"), 0);
            for (zone, nodes) in zones {
                let z = topo.push(Tier::Zone, format!("r{region}z{zone}"), r);
                for (node, members) in nodes {
                    let n = topo.push(Tier::Node, format!("r{region}z{zone}-{node}"), z);
                    for &i in members {
                        let label = devices[i].location.to_string();
                        let d = topo.push(Tier::Device, label, n);
                        topo.paths[i] = [r, z, n, d];
                    }
                }
            }
        }

        let mut current = vec![0u64; topo.domains.len()];
        for (i, d) in devices.iter().enumerate() {
            let active = d.weight > 0.0;
            for idx in std::iter::once(0).chain(topo.paths[i]) {
                let dom = &mut topo.domains[idx as usize];
                dom.weight += d.weight;
                dom.capacity += u32::from(active);
                current[idx as usize] += d.current;
            }
        }
        topo.distribute(partitions, &current);
        topo
    }

    fn push(&mut self, tier: Tier, label: String, parent: DomainIdx) -> DomainIdx {
        let idx = DomainIdx::try_from(self.domains.len()).expect("fewer domains than devices");
        self.domains
            .push(Domain::new(Some(tier), label, Some(parent)));
        self.domains[parent as usize].children.push(idx);
        idx
    }

    /// Computes caps, targets and quotas, parents before children.
    fn distribute(&mut self, partitions: u64, current: &[u64]) {
        let slots = f64::from(self.slots);
        let total_weight = self.domains[0].weight;
        let root = &mut self.domains[0];
        root.cap = self.slots;
        root.target = slots;
        root.weighted = slots;
        root.quota = u64::from(self.slots) * partitions;

        for parent in 0..self.domains.len() {
            let kids = self.domains[parent].children.clone();
            if kids.is_empty() {
                continue;
            }
            let (parent_cap, parent_target, parent_quota) = {
                let p = &self.domains[parent];
                (p.cap, p.target, p.quota)
            };
            let capacities: Vec<u32> = kids
                .iter()
                .map(|&k| self.domains[k as usize].capacity)
                .collect();
            let cap = dispersion_cap(&capacities, parent_cap);
            let caps: Vec<f64> = capacities.iter().map(|&c| f64::from(c.min(cap))).collect();
            let weights: Vec<f64> = kids
                .iter()
                .map(|&k| self.domains[k as usize].weight)
                .collect();
            let targets = waterfill(parent_target, &weights, &caps);
            let limits: Vec<u64> = caps.iter().map(|&c| c as u64 * partitions).collect();
            let sticky: Vec<u64> = kids.iter().map(|&k| current[k as usize]).collect();
            // Each child's exact share of the whole ring, not of the parent's rounded quota:
            // so every quota, at every level, is its exact share rounded down or up.
            let exact: Vec<f64> = targets.iter().map(|t| t * partitions as f64).collect();
            let quotas = apportion(parent_quota, &exact, &limits, &sticky, parent as u64);
            for (i, &k) in kids.iter().enumerate() {
                let d = &mut self.domains[k as usize];
                d.cap = capacities[i].min(cap);
                d.target = targets[i];
                d.weighted = if total_weight > 0.0 {
                    slots * d.weight / total_weight
                } else {
                    0.0
                };
                d.quota = quotas[i];
            }
        }
    }

    /// Returns the domain at `idx`.
    pub(crate) fn domain(&self, idx: DomainIdx) -> &Domain {
        &self.domains[idx as usize]
    }

    /// Explains why a device's target differs from what its weight asks, naming the widest
    /// domain on its path whose target was changed by dispersion, or `None` when it was not.
    pub(crate) fn reason(&self, device: usize) -> Option<String> {
        let slots = self.slots;
        for &idx in &self.paths[device] {
            let d = self.domain(idx);
            let tolerance = 1e-9 * f64::from(slots);
            if (d.target - d.weighted).abs() <= tolerance {
                continue;
            }
            let tier = d.tier.map_or("domain", Tier::name);
            let parent = self.domain(d.parent.unwrap_or(0));
            let siblings = parent
                .children
                .iter()
                .filter(|&&k| self.domain(k).capacity > 0)
                .count();
            let within = if parent.tier.is_some() {
                format!(" in {}", parent.label)
            } else {
                String::new()
            };
            return Some(if d.target < d.weighted {
                let why = if d.tier == Some(Tier::Device) {
                    "a device holds at most one slot of a partition".to_owned()
                } else if d.cap == d.capacity {
                    format!("it has only {} device(s) with weight", d.capacity)
                } else {
                    format!(
                        "dispersion: up to {} slots{within} spread over {siblings} {tier}s",
                        parent.cap
                    )
                };
                format!(
                    "{tier} {} may hold at most {} of the {slots} slots of each partition ({why}); its weight asks {:.2}",
                    d.label, d.cap, d.weighted
                )
            } else {
                format!(
                    "{tier} {} takes {:.2} slots per partition where its weight asks {:.2}: other {tier}s{within} are capped by dispersion",
                    d.label, d.target, d.weighted
                )
            });
        }
        None
    }
}

impl Domain {
    fn new(tier: Option<Tier>, label: String, parent: Option<DomainIdx>) -> Self {
        Domain {
            tier,
            label,
            parent,
            children: Vec::new(),
            weight: 0.0,
            capacity: 0,
            cap: 0,
            target: 0.0,
            weighted: 0.0,
            quota: 0,
        }
    }
}

/// Returns the smallest per-child cap `c` such that children of the given capacities can
/// hold `needed` slots of one partition with at most `c` each.
pub(crate) fn dispersion_cap(capacities: &[u32], needed: u32) -> u32 {
    let fits = |c: u32| capacities.iter().map(|&k| k.min(c)).sum::<u32>() >= needed;
    (1..=needed).find(|&c| fits(c)).unwrap_or(needed)
}

/// Shares `total` among children in proportion to `weights`, none above its cap; what a
/// capped child cannot take goes to the others, again in proportion to weight.
pub(crate) fn waterfill(total: f64, weights: &[f64], caps: &[f64]) -> Vec<f64> {
    let n = weights.len();
    let active: Vec<bool> = (0..n).map(|k| weights[k] > 0.0 && caps[k] > 0.0).collect();
    let mut targets = vec![0.0; n];
    let mut fixed = vec![false; n];
    loop {
        let mut rest = total;
        let mut free_weight = 0.0;
        for k in 0..n {
            if fixed[k] {
                rest -= targets[k];
            } else if active[k] {
                free_weight += weights[k];
            }
        }
        if free_weight <= 0.0 {
            return targets;
        }
        let level = rest.max(0.0) / free_weight;
        let mut capped_any = false;
        for k in 0..n {
            if active[k] && !fixed[k] && level * weights[k] > caps[k] {
                targets[k] = caps[k];
                fixed[k] = true;
                capped_any = true;
            }
        }
        if !capped_any {
            for k in 0..n {
                if active[k] && !fixed[k] {
                    targets[k] = level * weights[k];
                }
            }
            return targets;
        }
    }
}

/// Splits the integer `total` into parts each equal to its `exact` value rounded down or up
/// (the exact values add up to `total`, give or take float error), no part above its limit.
/// Parts that already hold at least the rounded-up amount (`current`) are rounded up first,
/// so that re-running a rebalance with nothing changed moves nothing; then the largest
/// fractions. Rounding a tree of domains this way level by level keeps every domain within
/// one slot of its exact share: the children's floors never add up to more than the
/// parent's floor, nor their ceilings to less than its ceiling.
pub(crate) fn apportion(
    total: u64,
    exact: &[f64],
    limits: &[u64],
    current: &[u64],
    salt: u64,
) -> Vec<u64> {
    let n = exact.len();
    let mut parts: Vec<u64> = (0..n)
        .map(|k| (exact[k].max(0.0).floor() as u64).min(limits[k]))
        .collect();
    let mut given: u64 = parts.iter().sum();
    // Float error can make the floors overshoot by a slot or two: take back from the parts
    // whose exact share is furthest below what they got.
    while given > total {
        let Some(k) = (0..n).filter(|&k| parts[k] > 0).min_by(|&a, &b| {
            let da = exact[a] - parts[a] as f64;
            let db = exact[b] - parts[b] as f64;
            da.total_cmp(&db)
        }) else {
            break;
        };
        parts[k] -= 1;
        given -= 1;
    }
    let mut order: Vec<usize> = (0..n).filter(|&k| exact[k] > 0.0).collect();
    order.sort_by(|&a, &b| {
        let sticky_a = current[a] > parts[a];
        let sticky_b = current[b] > parts[b];
        let frac_a = exact[a] - parts[a] as f64;
        let frac_b = exact[b] - parts[b] as f64;
        sticky_b
            .cmp(&sticky_a)
            .then(frac_b.total_cmp(&frac_a))
            .then(mix64(salt ^ a as u64).cmp(&mix64(salt ^ b as u64)))
    });
    while given < total {
        let before = given;
        for &k in &order {
            if given == total {
                break;
            }
            if parts[k] < limits[k] {
                parts[k] += 1;
                given += 1;
            }
        }
        if given == before {
            break; // every part is at its limit; the caller's caps guarantee this never happens
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn dispersion_cap_is_the_smallest_that_fits() {
        assert_eq!(dispersion_cap(&[10, 10, 10, 10], 6), 2);
        assert_eq!(dispersion_cap(&[10; 6], 6), 1);
        assert_eq!(dispersion_cap(&[1, 10], 6), 5);
        assert_eq!(dispersion_cap(&[10], 3), 3);
    }

    #[test]
    fn waterfill_caps_and_redistributes() {
        let t = waterfill(6.0, &[1.0, 1.0, 4.0], &[2.0, 2.0, 2.0]);
        assert_eq!(t, vec![2.0, 2.0, 2.0]);
        let t = waterfill(3.0, &[1.0, 1.0, 4.0], &[2.0, 2.0, 2.0]);
        assert!((t[0] - 0.5).abs() < 1e-12 && (t[2] - 2.0).abs() < 1e-12);
        let t = waterfill(1.0, &[0.0, 1.0], &[1.0, 1.0]);
        assert_eq!(t, vec![0.0, 1.0]);
    }

    proptest! {
        #[test]
        fn apportion_is_exact_and_within_one_of_the_share(
            shares in proptest::collection::vec(0.0f64..100.0, 1..30),
            total in 0u64..100_000,
            salt: u64,
        ) {
            let n = shares.len();
            let sum: f64 = shares.iter().sum();
            prop_assume!(sum > 0.0);
            let exact: Vec<f64> = shares.iter().map(|s| total as f64 * s / sum).collect();
            let parts = apportion(total, &exact, &vec![u64::MAX; n], &vec![0; n], salt);
            prop_assert_eq!(parts.iter().sum::<u64>(), total);
            for k in 0..n {
                prop_assert!((parts[k] as f64 - exact[k]).abs() < 1.0 + 1e-6);
            }
        }

        #[test]
        fn waterfill_respects_caps_and_sums_to_total(
            kids in proptest::collection::vec((0.0f64..10.0, 0u32..4), 1..12),
            total_pct in 0.0f64..1.0,
        ) {
            let weights: Vec<f64> = kids.iter().map(|k| k.0).collect();
            let caps: Vec<f64> = kids.iter().map(|k| f64::from(k.1)).collect();
            let room: f64 = kids.iter().filter(|k| k.0 > 0.0).map(|k| f64::from(k.1)).sum();
            let total = room * total_pct;
            let t = waterfill(total, &weights, &caps);
            prop_assert!((t.iter().sum::<f64>() - total).abs() < 1e-9 * (1.0 + total));
            for k in 0..t.len() {
                prop_assert!(t[k] <= caps[k] + 1e-12);
            }
        }
    }
}
