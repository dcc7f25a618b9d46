//! Lookups and handoffs on a built ring.

use std::collections::HashSet;

use nimbus_core::ids::PartitionId;
use nimbus_ring::Ring;

use crate::{Topo, t0};

/// 3 regions × 3 zones × 2 nodes × 2 devices, ec4+2.
fn ring() -> Ring {
    let mut devices = Vec::new();
    for r in 0..3 {
        for z in 0..3 {
            for n in 0..2 {
                devices.push((r, z, n, 100.0));
                devices.push((r, z, n, 100.0));
            }
        }
    }
    let t = Topo {
        policy: "ec4+2",
        part_power: 10,
        seed: 11,
        devices,
    };
    let mut b = t.builder(1);
    b.rebalance(t0()).unwrap();
    b.ring().unwrap()
}

#[test]
fn an_object_path_maps_to_one_partition() {
    let ring = ring();
    let p = ring.partition_of("AUTH_test/photos/cat.jpg");
    assert_eq!(p, ring.object_partition("AUTH_test", "photos", "cat.jpg"));
    assert!(p.0 < ring.partitions());
    // keyed: another hash key moves objects elsewhere, over many objects
    let mut seen = HashSet::new();
    for i in 0..10_000 {
        seen.insert(ring.partition_of(&format!("a/c/o{i}")));
    }
    assert!(
        seen.len() > 990,
        "10,000 objects hit only {} of 1,024 partitions",
        seen.len()
    );
}

#[test]
fn primaries_are_the_slots_in_order() {
    let ring = ring();
    let p = PartitionId(5);
    let primaries: Vec<_> = ring.primaries(p).map(|d| d.id).collect();
    assert_eq!(primaries.len(), 6);
    for (slot, id) in primaries.iter().enumerate() {
        assert_eq!(ring.slot_device(p, slot).id, *id);
    }
}

#[test]
fn handoffs_prefer_unused_failure_domains_and_are_deterministic() {
    let ring = ring();
    for p in (0..ring.partitions()).step_by(37).map(PartitionId) {
        let primaries: Vec<_> = ring.primaries(p).collect();
        let handoffs: Vec<_> = ring.handoffs(p).collect();
        assert_eq!(primaries.len() + handoffs.len(), ring.devices().len());
        let ids: HashSet<_> = primaries.iter().chain(&handoffs).map(|d| d.id).collect();
        assert_eq!(ids.len(), ring.devices().len(), "a device repeats");
        // ec4+2 over 9 zones uses 6: the first 3 handoffs are in the 3 unused zones
        let used: HashSet<_> = primaries
            .iter()
            .map(|d| (d.location.region, d.location.zone))
            .collect();
        let first: HashSet<_> = handoffs[..3]
            .iter()
            .map(|d| (d.location.region, d.location.zone))
            .collect();
        assert_eq!(first.len(), 3);
        assert!(first.is_disjoint(&used));
        let again: Vec<_> = ring.handoffs(p).map(|d| d.id).collect();
        assert_eq!(again, handoffs.iter().map(|d| d.id).collect::<Vec<_>>());
    }
}
