//! Throughput of the erasure codec and the checksums, per 1 MiB segment, in GiB/s.
//!
//! `cargo bench -p nimbus-core --bench codec`; results and the machine are in core/README.md.
//! The codec is compared with the raw `reed-solomon-erasure` calls it wraps (buffers allocated
//! once, outside the timing) and with `reed-solomon-simd` (encoder and decoder reused). Inputs
//! consumed by a step are built and dropped outside the timing; what a step returns (the
//! codec's fragments and segments) is dropped inside it, as its callers would.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use nimbus_core::checksum::{ChecksumAlgorithm, Md5Hasher};
use nimbus_core::codec::Codec;
use reed_solomon_erasure::galois_8::ReedSolomon;
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

const SEGMENT_BYTES: usize = 1 << 20;
const SHAPES: [(usize, usize); 2] = [(4, 2), (8, 3)];

fn segment() -> Vec<u8> {
    // Deterministic, incompressible enough: a 64-bit LCG.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..SEGMENT_BYTES)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (x >> 56) as u8
        })
        .collect()
}

fn configure(
    c: &mut Criterion,
    name: String,
) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .throughput(Throughput::Bytes(SEGMENT_BYTES as u64))
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group
}

fn encode(c: &mut Criterion) {
    let segment = segment();
    let mut group = configure(c, "copy".to_owned());
    group.bench_function("memcpy 1 MiB", |b| {
        let mut buffer = vec![0u8; SEGMENT_BYTES];
        b.iter(|| buffer.copy_from_slice(black_box(&segment)));
    });
    group.finish();

    for (k, m) in SHAPES {
        let codec = Codec::new(k, m).unwrap();
        let len = codec.segment_fragment_len(SEGMENT_BYTES);
        let mut group = configure(c, format!("encode ec{k}+{m}"));
        group.bench_function("Codec::encode", |b| {
            b.iter(|| codec.encode(black_box(&segment)).unwrap());
        });
        let shared = Bytes::from(segment.clone());
        group.bench_function("Codec::encode_bytes", |b| {
            b.iter(|| codec.encode_bytes(black_box(shared.clone())).unwrap());
        });
        group.bench_function("reed-solomon-erasure", |b| {
            let rs = ReedSolomon::new(k, m).unwrap();
            let mut shards: Vec<Vec<u8>> = segment.chunks(len).map(<[u8]>::to_vec).collect();
            shards.resize(k + m, vec![0; len]);
            b.iter(|| rs.encode(black_box(&mut shards)).unwrap());
        });
        group.bench_function("reed-solomon-simd", |b| {
            let mut encoder = ReedSolomonEncoder::new(k, m, len).unwrap();
            b.iter(|| {
                for shard in segment.chunks(len) {
                    encoder.add_original_shard(black_box(shard)).unwrap();
                }
                let result = encoder.encode().unwrap();
                black_box(result.recovery(0).unwrap()[0]);
            });
        });
        group.finish();
    }
}

fn reconstruct(c: &mut Criterion) {
    let segment = segment();
    for (k, m) in SHAPES {
        let codec = Codec::new(k, m).unwrap();
        let fragments: Vec<Vec<u8>> = codec
            .encode(&segment)
            .unwrap()
            .iter()
            .map(|f| f.to_vec())
            .collect();
        let len = fragments[0].len();
        // Losing data fragments is the costly case: lost parity needs no decoding to read.
        for lost in [1, 2] {
            let partial: Vec<Option<Vec<u8>>> = fragments
                .iter()
                .enumerate()
                .map(|(i, f)| (i >= lost).then(|| f.clone()))
                .collect();
            let mut group = configure(c, format!("reconstruct ec{k}+{m}, {lost} lost"));
            group.bench_function("Codec::reconstruct", |b| {
                b.iter_batched(
                    || partial.clone(),
                    |mut partial| {
                        let segment = codec.reconstruct(&mut partial, SEGMENT_BYTES).unwrap();
                        (partial, segment)
                    },
                    BatchSize::LargeInput,
                );
            });
            group.bench_function("reed-solomon-erasure", |b| {
                let rs = ReedSolomon::new(k, m).unwrap();
                b.iter_batched(
                    || partial.clone(),
                    |mut partial| {
                        rs.reconstruct_data(&mut partial).unwrap();
                        partial
                    },
                    BatchSize::LargeInput,
                );
            });
            group.bench_function("reed-solomon-simd", |b| {
                let mut decoder = ReedSolomonDecoder::new(k, m, len).unwrap();
                b.iter(|| {
                    for (i, fragment) in fragments.iter().enumerate().skip(lost) {
                        if i < k {
                            decoder.add_original_shard(i, fragment).unwrap();
                        } else {
                            decoder.add_recovery_shard(i - k, fragment).unwrap();
                        }
                    }
                    let result = decoder.decode().unwrap();
                    black_box(result.restored_original(0).unwrap()[0]);
                });
            });
            group.finish();
        }
    }
}

fn hash(c: &mut Criterion) {
    let segment = segment();
    let mut group = configure(c, "hash".to_owned());
    group.bench_function("MD5", |b| {
        b.iter(|| {
            let mut md5 = Md5Hasher::new();
            md5.update(black_box(&segment));
            md5.finish()
        });
    });
    group.bench_function("blake3", |b| b.iter(|| blake3::hash(black_box(&segment))));
    for algorithm in [
        ChecksumAlgorithm::Crc32c,
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc64Nvme,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
    ] {
        group.bench_function(algorithm.s3_name(), |b| {
            b.iter(|| {
                let mut checksummer = algorithm.checksummer();
                checksummer.update(black_box(&segment));
                checksummer.finish()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, encode, reconstruct, hash);
criterion_main!(benches);
