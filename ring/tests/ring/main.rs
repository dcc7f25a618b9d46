//! Integration tests of the ring crate through its public API: property tests over random
//! topologies, bad input, the file formats and placement.

#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic

mod t10_rebalance_properties;
mod t20_bad_input;
mod t30_format;
mod t40_placement;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nimbus_core::ids::PartitionId;
use nimbus_ring::builder::BuilderSettings;
use nimbus_ring::{DeviceSpec, Location, RingBuilder};
use proptest::prelude::*;

/// A point in time for rebalances: tests move it forward by hand.
pub fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

pub fn minutes(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

/// A random topology: devices as (region, zone, node, weight).
#[derive(Debug, Clone)]
pub struct Topo {
    pub policy: &'static str,
    pub part_power: u32,
    pub seed: u64,
    pub devices: Vec<(u32, u32, u32, f64)>,
}

pub fn node_addr(region: u32, zone: u32, node: u32) -> SocketAddr {
    SocketAddr::from(([10, region as u8, zone as u8, node as u8], 6200))
}

pub fn spec(region: u32, zone: u32, node: u32, name: &str, weight: f64) -> DeviceSpec {
    DeviceSpec {
        location: Location {
            region,
            zone,
            node: node_addr(region, zone, node),
            name: name.to_owned(),
        },
        weight,
    }
}

impl Topo {
    pub fn slots(&self) -> usize {
        self.policy
            .parse::<nimbus_core::policy::StoragePolicy>()
            .unwrap()
            .slot_count() as usize
    }

    pub fn active(&self) -> usize {
        self.devices.iter().filter(|d| d.3 > 0.0).count()
    }

    pub fn builder(&self, min_part_hours: u32) -> RingBuilder {
        let mut b = RingBuilder::new(BuilderSettings {
            policy: self.policy.parse().unwrap(),
            part_power: self.part_power,
            min_part_hours,
            seed: self.seed,
            hash_key: [7; 32],
        })
        .unwrap();
        for (i, &(r, z, n, w)) in self.devices.iter().enumerate() {
            b.add_device(spec(r, z, n, &format!("d{i}"), w), None)
                .unwrap();
        }
        b
    }
}

/// Weights: mostly comparable disks, sometimes a small or an empty one.
fn weight() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => 50.0f64..150.0,
        1 => 1.0f64..50.0,
        1 => Just(0.0),
    ]
}

/// Regions × zones × nodes × devices, each level 1 to a few wide.
pub fn topo() -> impl Strategy<Value = Topo> {
    let policy = prop_oneof![
        Just("rep3"),
        Just("ec4+2"),
        Just("ec2+1"),
        Just("rep2"),
        Just("ec3+2")
    ];
    let tree = prop::collection::vec(
        prop::collection::vec(
            prop::collection::vec(prop::collection::vec(weight(), 1..=3), 1..=3),
            1..=4,
        ),
        1..=3,
    );
    (policy, 8u32..=10, any::<u64>(), tree).prop_map(|(policy, part_power, seed, tree)| {
        let mut devices = Vec::new();
        for (r, zones) in tree.iter().enumerate() {
            for (z, nodes) in zones.iter().enumerate() {
                for (n, devs) in nodes.iter().enumerate() {
                    for &w in devs {
                        devices.push((r as u32, z as u32, n as u32, w));
                    }
                }
            }
        }
        Topo {
            policy,
            part_power,
            seed,
            devices,
        }
    })
}

/// Topologies where no domain's weight asks for more than dispersion allows (one region,
/// at least twice as many zones as slots, comparable weights): every device's target is its
/// weight share.
pub fn balanced_topo() -> impl Strategy<Value = Topo> {
    let policy = prop_oneof![Just("rep3"), Just("ec4+2"), Just("ec2+1")];
    (policy, any::<u64>(), 0usize..4).prop_flat_map(|(policy, seed, extra_zones)| {
        let slots = if policy == "ec4+2" { 6 } else { 3 };
        let zones = prop::collection::vec(
            prop::collection::vec(prop::collection::vec(80.0f64..120.0, 1..=2), 1..=2),
            2 * slots + extra_zones,
        );
        zones.prop_map(move |zones| {
            let mut devices = Vec::new();
            for (z, nodes) in zones.iter().enumerate() {
                for (n, devs) in nodes.iter().enumerate() {
                    for &w in devs {
                        devices.push((0, z as u32, n as u32, w));
                    }
                }
            }
            Topo {
                policy,
                part_power: 10,
                seed,
                devices,
            }
        })
    })
}

/// Proptest cases: `n`, or `PROPTEST_CASES` when set (for long runs).
pub fn cases(n: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n)
}

/// The devices of every partition, by device id.
pub fn assignment(b: &RingBuilder) -> Vec<Vec<Option<u32>>> {
    (0..b.partitions())
        .map(|p| {
            b.partition_devices(PartitionId(p))
                .into_iter()
                .map(|d| d.map(|d| d.0))
                .collect()
        })
        .collect()
}
