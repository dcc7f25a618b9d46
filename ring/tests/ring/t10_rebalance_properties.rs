//! The builder's promises, over random topologies.

use std::collections::{HashMap, HashSet};

use nimbus_core::ids::DeviceId;
use proptest::prelude::*;

use crate::{Topo, assignment, balanced_topo, cases, minutes, spec, t0, topo};

/// Slots of a partition per region, by device id.
fn region_of(b: &nimbus_ring::RingBuilder) -> HashMap<u32, (u32, u32)> {
    b.devices()
        .iter()
        .map(|d| {
            let l = &d.device.location;
            (d.device.id.0, (l.region, l.zone))
        })
        .collect()
}

/// The smallest cap such that domains of the given capacities hold `needed` slots.
fn min_cap(capacities: &[u32], needed: u32) -> u32 {
    (1..=needed)
        .find(|&c| capacities.iter().map(|&k| k.min(c)).sum::<u32>() >= needed)
        .unwrap_or(needed)
}

fn check_valid(b: &nimbus_ring::RingBuilder) -> Result<(), TestCaseError> {
    for (p, devs) in assignment(b).iter().enumerate() {
        let set: HashSet<_> = devs.iter().collect();
        prop_assert_eq!(set.len(), devs.len(), "partition {} repeats a device", p);
        prop_assert!(
            devs.iter().all(Option::is_some),
            "partition {} has an empty slot",
            p
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(48)))]

    #[test]
    fn every_partition_gets_distinct_devices_dispersed_as_widely_as_possible(t in topo()) {
        let r = t.slots();
        prop_assume!(t.active() >= r);
        let mut b = t.builder(1);
        b.rebalance(t0()).unwrap();
        check_valid(&b)?;
        prop_assert_eq!(b.dispersion_report().partitions_crowded, 0);

        // Independently of the builder: the fewest slots a region must hold.
        let mut per_region: HashMap<u32, u32> = HashMap::new();
        for &(reg, _, _, w) in &t.devices {
            if w > 0.0 {
                *per_region.entry(reg).or_default() += 1;
            }
        }
        let caps: Vec<u32> = per_region.values().copied().collect();
        let region_cap = min_cap(&caps, r as u32);
        let where_is = region_of(&b);
        let single_region = per_region.len() == 1;
        let mut per_zone: HashMap<u32, u32> = HashMap::new();
        for &(_, z, _, w) in &t.devices {
            if w > 0.0 {
                *per_zone.entry(z).or_default() += 1;
            }
        }
        let zone_cap = min_cap(&per_zone.values().copied().collect::<Vec<_>>(), r as u32);
        for devs in assignment(&b) {
            let mut regions: HashMap<u32, u32> = HashMap::new();
            let mut zones: HashMap<u32, u32> = HashMap::new();
            for d in devs.iter().flatten() {
                let (reg, zone) = where_is[d];
                *regions.entry(reg).or_default() += 1;
                *zones.entry(zone).or_default() += 1;
            }
            prop_assert!(regions.values().all(|&c| c <= region_cap));
            if single_region {
                // e.g. with at least k+m zones, no zone holds two slots of a partition
                prop_assert!(zones.values().all(|&c| c <= zone_cap));
            }
        }
    }

    #[test]
    fn devices_get_their_weight_share_or_the_report_says_why(t in topo()) {
        prop_assume!(t.active() >= t.slots());
        let mut b = t.builder(1);
        b.rebalance(t0()).unwrap();
        let report = b.balance_report();
        prop_assert_eq!(report.slots_off_target, 0);
        for d in report.devices.iter().filter(|d| d.weight > 0.0) {
            let slots = d.slots as f64;
            match &d.reason {
                None => {
                    // Within one slot of the weight share: so within 1% wherever the share
                    // is at least 100 slots (below that, one slot is more than 1%).
                    prop_assert!(
                        (slots - d.wanted).abs() < 1.0 + 1e-6,
                        "device {} holds {} slots, its weight asks {:.3}", d.id, slots, d.wanted
                    );
                    if d.wanted >= 100.0 {
                        prop_assert!((slots - d.wanted).abs() <= 0.01 * d.wanted);
                    }
                }
                Some(reason) => {
                    // Dispersion changed its target; it holds exactly that, and says why.
                    prop_assert!(!reason.is_empty());
                    prop_assert_eq!(d.slots, d.target);
                }
            }
        }
    }

    #[test]
    fn adding_a_device_moves_little_more_than_its_share(t in balanced_topo(), which: prop::sample::Index) {
        prop_assume!(t.active() >= t.slots());
        let mut b = t.builder(1);
        b.rebalance(t0()).unwrap();
        prop_assume!(b.balance_report().devices.iter().all(|d| d.reason.is_none()));
        let before = assignment(&b);

        let (r, z, n, _) = t.devices[which.index(t.devices.len())];
        let w = 100.0;
        let total_weight: f64 = t.devices.iter().map(|d| d.3).sum();
        let total_slots = (b.partitions() as usize * t.slots()) as f64;
        let expected = total_slots * w / (total_weight + w);
        prop_assume!(expected >= 20.0);
        b.add_device(spec(r, z, n, "new", w), None).unwrap();
        prop_assume!(b.balance_report().devices.iter().all(|d| d.reason.is_none()));
        let report = b.rebalance(t0() + minutes(120)).unwrap();

        let moved: usize = before.iter().zip(assignment(&b))
            .map(|(o, n)| o.iter().zip(&n).filter(|(a, b)| a != b).count())
            .sum();
        prop_assert_eq!(moved as u64, report.slots_moved);
        prop_assert!(
            moved as f64 <= 1.1 * expected,
            "moved {} slots for a device whose share is {:.1}", moved, expected
        );
    }

    #[test]
    fn rebalances_move_at_most_the_allowed_slots_and_respect_min_part_hours(
        t in topo(),
        changes in prop::collection::vec((0u8..3, any::<prop::sample::Index>(), 0.0f64..200.0), 1..5),
    ) {
        prop_assume!(t.active() >= t.slots());
        let max_moves = t.policy.parse::<nimbus_core::policy::StoragePolicy>()
            .unwrap().max_slot_moves() as usize;
        let mut b = t.builder(1);
        b.rebalance(t0()).unwrap();

        let apply = |b: &mut nimbus_ring::RingBuilder, round: usize| {
            for (i, (kind, which, w)) in changes.iter().enumerate() {
                let live: Vec<DeviceId> = b.devices().iter()
                    .filter(|d| !d.removed).map(|d| d.device.id).collect();
                if live.is_empty() {
                    return;
                }
                let id = live[which.index(live.len())];
                let _ = match kind {
                    0 => b.set_weight(id, *w),
                    1 => b.remove_device(id),
                    _ => b.add_device(
                        spec(9, i as u32, round as u32, &format!("x{i}"), w.max(1.0)), None,
                    ).map(|_| ()),
                };
            }
        };

        apply(&mut b, 0);
        let before = assignment(&b);
        let first = b.rebalance(t0() + minutes(120));
        let Ok(first) = first else {
            // too few devices left with weight: refused, and nothing changed
            prop_assert_eq!(assignment(&b), before);
            return Ok(());
        };
        check_valid(&b)?;
        let after = assignment(&b);
        let mut moved_partitions = HashSet::new();
        for (p, (o, n)) in before.iter().zip(&after).enumerate() {
            let moved = o.iter().zip(n).filter(|(a, b)| a != b).count();
            prop_assert!(moved <= max_moves, "partition {} moved {} slots", p, moved);
            if moved > 0 {
                moved_partitions.insert(p);
            }
        }
        prop_assert_eq!(moved_partitions.len() as u64, first.partitions_moved);

        // 30 minutes later, with min_part_hours = 1: the partitions that just moved stay.
        apply(&mut b, 1);
        if b.rebalance(t0() + minutes(150)).is_ok() {
            check_valid(&b)?;
            for (p, (o, n)) in after.iter().zip(assignment(&b)).enumerate() {
                if moved_partitions.contains(&p) {
                    prop_assert_eq!(o, &n, "partition {} moved again within min_part_hours", p);
                }
            }
        }
    }

    #[test]
    fn the_same_seed_builds_the_same_ring(t in topo()) {
        prop_assume!(t.active() >= t.slots());
        let mut a = t.builder(1);
        let mut b = t.builder(1);
        a.rebalance(t0()).unwrap();
        b.rebalance(t0()).unwrap();
        prop_assert_eq!(a.encode(), b.encode());
    }
}

#[test]
fn a_big_ring_balances_within_one_percent_of_weight() {
    // 2^14 partitions × 6 slots over 48 devices of three sizes, 4 regions × 3 zones.
    let mut devices = Vec::new();
    for r in 0..4 {
        for z in 0..3 {
            for n in 0..2 {
                for d in 0..2u32 {
                    devices.push((r, z, n, [100.0, 200.0, 400.0][(d + n) as usize % 3]));
                }
            }
        }
    }
    let t = Topo {
        policy: "ec4+2",
        part_power: 14,
        seed: 1,
        devices,
    };
    let mut b = t.builder(1);
    b.rebalance(t0()).unwrap();
    let report = b.balance_report();
    assert!(report.devices.iter().all(|d| d.reason.is_none()));
    assert!(report.worst_over_pct <= 1.0, "{report:?}");
    assert!(report.worst_under_pct >= -1.0, "{report:?}");
    assert_eq!(b.dispersion_report().partitions_crowded, 0);
}

#[test]
fn dispersion_wins_over_weight_and_the_report_explains() {
    // ec4+2 over 6 zones: every zone must hold one slot of every partition, whatever its
    // weight, so that losing a zone loses one fragment.
    let weights = [100.0, 100.0, 100.0, 100.0, 100.0, 20.0];
    let devices = weights
        .iter()
        .enumerate()
        .flat_map(|(z, &w)| (0..2).map(move |n| (0, z as u32, n, w)))
        .collect();
    let t = Topo {
        policy: "ec4+2",
        part_power: 10,
        seed: 3,
        devices,
    };
    let mut b = t.builder(1);
    b.rebalance(t0()).unwrap();
    let report = b.balance_report();
    let small: Vec<_> = report.devices.iter().filter(|d| d.weight == 20.0).collect();
    for d in &small {
        assert_eq!(
            d.slots, 512,
            "each small device holds half of its zone's slots"
        );
        let reason = d.reason.as_deref().unwrap();
        assert!(reason.contains("zone r0z5"), "{reason}");
    }
    let big = report.devices.iter().find(|d| d.weight == 100.0).unwrap();
    assert_eq!(big.slots, 512);
    assert!(big.reason.is_some());
}

#[test]
fn removed_devices_are_drained_then_forgotten() {
    let devices = (0..8).map(|i| (0, i % 4, i, 100.0)).collect();
    let t = Topo {
        policy: "rep3",
        part_power: 8,
        seed: 5,
        devices,
    };
    let mut b = t.builder(0);
    b.rebalance(t0()).unwrap();
    let gone = b.devices()[0].device.id;
    b.remove_device(gone).unwrap();
    let report = b.rebalance(t0() + minutes(1)).unwrap();
    assert_eq!(report.devices_dropped, vec![gone]);
    assert!(b.devices().iter().all(|d| d.device.id != gone));
    assert!(assignment(&b).iter().flatten().all(|d| *d != Some(gone.0)));
    assert_eq!(b.balance_report().slots_off_target, 0);
}

#[test]
fn rebalancing_twice_moves_nothing_the_second_time() {
    let devices = (0..12)
        .map(|i| (i % 2, i % 3, i, 50.0 + i as f64))
        .collect();
    let t = Topo {
        policy: "ec4+2",
        part_power: 10,
        seed: 9,
        devices,
    };
    let mut b = t.builder(0);
    let first = b.rebalance(t0()).unwrap();
    let second = b.rebalance(t0() + minutes(1)).unwrap();
    assert!(first.new_epoch);
    assert_eq!(second.slots_moved, 0);
    assert!(!second.new_epoch);
    assert_eq!(second.epoch, first.epoch);
}
