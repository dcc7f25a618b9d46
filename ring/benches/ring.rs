//! Ring benchmarks (release mode): building a large ring, rebalancing it after a change, and
//! object-path lookups. `cargo bench -p nimbus-ring --bench ring`; figures in ring/README.md.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use nimbus_ring::builder::BuilderSettings;
use nimbus_ring::{DeviceSpec, Location, RingBuilder};

const PART_POWER: u32 = 20;
const DEVICES: u32 = 1_000;
const DEVICES_PER_NODE: u32 = 12;

/// 1,000 devices of mixed sizes in 4 regions × 4 zones, 12 devices per node.
fn builder() -> RingBuilder {
    let mut b = RingBuilder::new(BuilderSettings {
        policy: "ec4+2".parse().expect("valid policy"),
        part_power: PART_POWER,
        min_part_hours: 1,
        seed: 2026,
        hash_key: [9; 32],
    })
    .expect("valid settings");
    for i in 0..DEVICES {
        let zone_index = i % 16;
        let node = i / 16 / DEVICES_PER_NODE;
        b.add_device(
            spec(
                zone_index / 4,
                zone_index % 4,
                node,
                i,
                [8.0, 12.0, 16.0][i as usize % 3],
            ),
            None,
        )
        .expect("valid device");
    }
    b
}

fn spec(region: u32, zone: u32, node: u32, i: u32, weight: f64) -> DeviceSpec {
    DeviceSpec {
        location: Location {
            region,
            zone,
            node: SocketAddr::from(([10, region as u8, zone as u8, node as u8], 6200)),
            name: format!("d{i}"),
        },
        weight,
    }
}

fn add_ten(b: &mut RingBuilder) {
    for i in 0..10 {
        let zone_index = i % 16;
        b.add_device(
            spec(zone_index / 4, zone_index % 4, 200 + i, 5000 + i, 12.0),
            None,
        )
        .expect("valid device");
    }
}

fn benches(c: &mut Criterion) {
    let now = SystemTime::now();
    let mut built = builder();
    let first = built.rebalance(now).expect("enough devices");
    let mut grown = built.clone();
    add_ten(&mut grown);
    let second = grown.rebalance(now).expect("enough devices");
    eprintln!(
        "build: {} slots placed, balance {:+.3}% / {:+.3}%, {} partitions crowded",
        first.slots_placed, first.worst_over_pct, first.worst_under_pct, first.partitions_crowded
    );
    eprintln!(
        "add 10 devices: {} slots moved ({:.3}%), in {} partitions, balance {:+.3}% / {:+.3}%",
        second.slots_moved,
        second.moved_pct,
        second.partitions_moved,
        second.worst_over_pct,
        second.worst_under_pct
    );

    let mut group = c.benchmark_group("ring");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(40))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("build 2^20 partitions x 6 slots, 1000 devices", |bench| {
        bench.iter_batched(
            builder,
            |mut b| b.rebalance(now).expect("enough devices"),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("rebalance after adding 10 devices", |bench| {
        bench.iter_batched(
            || {
                let mut b = built.clone();
                add_ten(&mut b);
                b
            },
            |mut b| b.rebalance(now).expect("enough devices"),
            BatchSize::PerIteration,
        );
    });
    group.finish();

    let ring = built.ring().expect("built");
    let names: Vec<String> = (0..4096)
        .map(|i| format!("photos-{i}/IMG_{i:06}.jpg"))
        .collect();
    let mut lookups = c.benchmark_group("lookup");
    lookups.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    lookups.bench_function("object path -> partition -> 6 devices", |bench| {
        bench.iter(|| {
            i = (i + 1) & 4095;
            let p = ring.object_partition("AUTH_bench", "container", &names[i]);
            let mut sum = 0u32;
            for d in ring.primaries(p) {
                sum = sum.wrapping_add(d.id.0);
            }
            black_box(sum)
        });
    });
    // Baseline: the keyed hash alone, the part of a lookup no table can avoid.
    let key = *ring.hash_key();
    lookups.bench_function("baseline: blake3 keyed hash of the path", |bench| {
        bench.iter(|| {
            i = (i + 1) & 4095;
            let mut hasher = blake3::Hasher::new_keyed(&key);
            hasher.update(b"AUTH_bench/container/");
            hasher.update(names[i].as_bytes());
            black_box(hasher.finalize())
        });
    });
    lookups.bench_function("first handoff", |bench| {
        bench.iter(|| {
            i = (i + 1) & 4095;
            let p = ring.object_partition("AUTH_bench", "container", &names[i]);
            black_box(ring.handoffs(p).next().map(|d| d.id))
        });
    });
    lookups.finish();
}

criterion_group!(ring_benches, benches);
criterion_main!(ring_benches);
