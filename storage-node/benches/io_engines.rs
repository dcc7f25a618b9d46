//! The I/O engines against fio, on one device, in one run (release mode):
//!
//!     cargo bench -p nimbus-storage-node --bench io_engines [-- DIR]
//!
//! DIR (default: a temporary directory under the current one) must be on the disk to
//! measure. Workloads, each run by the io_uring engine, the portable engine and fio
//! (`--ioengine=io_uring`) with the same block size, queue depth, sync policy and file
//! layout:
//!
//! - `seq-write-1m`: 1 GiB in 1 MiB O_DIRECT writes, 8 in flight, fdatasync at the end;
//! - `seq-read-1m`: the same file read back in 1 MiB O_DIRECT reads, 8 in flight;
//! - `rand-read-4k-qd1`: 20,000 random 4 KiB O_DIRECT reads of that file, one at a time
//!   (per-operation latency);
//! - `write-4k-fsync`: 8 writers, each appending 4 KiB O_DIRECT writes to its own new file
//!   with an fdatasync after every write (the small-object pattern: the fragment store
//!   appends to new files), 512 writes each;
//! - `write-4k-fsync-linked`: the same, each write and its fdatasync submitted together
//!   (`Engine::write_all_synced_at`: an io_uring linked pair), against the same fio job.
//!
//! The small-write workloads are short and the disk's sync latency drifts, so they run in
//! rounds (`NIMBUS_BENCH_ROUNDS`, default 7), each round running the three columns back to
//! back on fresh files, in an order that rotates from round to round; the table shows each
//! column's median over the rounds, and the median of the rounds' ratios.
//!
//! File layout of the small writes: by default every column appends to a new, empty file,
//! so each write allocates a block and moves the end of file (fio: `--fallocate=none
//! --file_append=1`; without them fio would `fallocate` the whole file before timing, and
//! its writes would land in preallocated space while the engines' extend the file). With
//! `NIMBUS_BENCH_PREALLOCATE=1` every column writes into a file preallocated with
//! `fallocate(fd, 0, 0, size)` before timing instead (fio's default).
//!
//! Other knobs: `NIMBUS_BENCH_WRITERS` (small-write writers, default 8) and
//! `NIMBUS_BENCH_ONLY` (run only the workloads whose name contains it).
//!
//! The small-write workloads also run fio's blocking engine (`--ioengine=psync`) on the same
//! job, printed after the table: how far plain threads get on this kernel and file system.
//!
//! Then 64 concurrent fragment writes of 16 MiB through the fragment store, reporting the
//! peak RSS of this process. fio must be installed (`apt-get install fio`); without it, the
//! fio column is empty.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark that cannot set up should stop

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use nimbus_core::fragment::FragmentHeader;
use nimbus_core::ids::{PartitionId, VersionId};
use nimbus_storage_node::io::{Engine, EngineConfig, File, IoEngineKind, OpenMode, SyncKind};
use nimbus_storage_node::store::{FragmentId, FragmentStore, StoreConfig};

const SEQ_BYTES: u64 = 1 << 30;
const BLOCK: usize = 1 << 20;
const DEPTH: usize = 8;
const SMALL: usize = 4096;
/// Writers of the small-write workloads (`NIMBUS_BENCH_WRITERS` to explore others).
fn small_writers() -> usize {
    std::env::var("NIMBUS_BENCH_WRITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}
const SMALL_WRITES: usize = 512;
const RANDOM_READS: usize = 20_000;

fn engine(kind: IoEngineKind) -> Engine {
    Engine::new(
        kind,
        EngineConfig {
            buffers: 64,
            buffer_bytes: BLOCK,
            ring_entries: 256,
        },
    )
    .expect("engine starts")
}

/// Runs `per_task` for task ids `0..tasks` concurrently; returns elapsed seconds.
async fn concurrently<F, Fut>(tasks: usize, per_task: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        set.spawn(per_task(t));
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    start.elapsed().as_secs_f64()
}

async fn open(e: &Engine, path: &Path, create: bool) -> File {
    e.open(
        path,
        OpenMode {
            create_new: create,
            write: create,
            direct: true,
        },
    )
    .await
    .unwrap()
}

/// MiB/s of sequential 1 MiB writes, `DEPTH` in flight, one fdatasync at the end.
async fn seq_write(e: &Engine, path: &Path) -> f64 {
    let f = open(e, path, true).await;
    assert!(f.is_direct(), "O_DIRECT unavailable on {}", path.display());
    let blocks = SEQ_BYTES / BLOCK as u64;
    let secs = concurrently(DEPTH, |t| {
        let (e, f) = (e.clone(), f.clone());
        async move {
            let mut b = t as u64;
            while b < blocks {
                let mut buf = e.buffer().await;
                buf.set_len(BLOCK);
                let (r, _) = e.write_all_at(&f, buf, b * BLOCK as u64).await;
                r.unwrap();
                b += DEPTH as u64;
            }
        }
    })
    .await;
    let start = Instant::now();
    e.sync(&f, SyncKind::Data).await.unwrap();
    SEQ_BYTES as f64 / (1 << 20) as f64 / (secs + start.elapsed().as_secs_f64())
}

/// MiB/s of sequential 1 MiB reads, `DEPTH` in flight.
async fn seq_read(e: &Engine, path: &Path) -> f64 {
    let f = open(e, path, false).await;
    let blocks = SEQ_BYTES / BLOCK as u64;
    let secs = concurrently(DEPTH, |t| {
        let (e, f) = (e.clone(), f.clone());
        async move {
            let mut b = t as u64;
            while b < blocks {
                let (r, _) = e
                    .read_at(&f, e.buffer().await, b * BLOCK as u64, BLOCK)
                    .await;
                assert_eq!(r.unwrap(), BLOCK);
                b += DEPTH as u64;
            }
        }
    })
    .await;
    SEQ_BYTES as f64 / (1 << 20) as f64 / secs
}

/// Random 4 KiB O_DIRECT reads per second, one at a time: the engine's per-operation
/// latency, where the disk answers fastest.
async fn random_reads(e: &Engine, path: &Path) -> f64 {
    let f = open(e, path, false).await;
    let blocks = SEQ_BYTES / SMALL as u64;
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let start = Instant::now();
    for _ in 0..RANDOM_READS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (r, _) = e
            .read_at(&f, e.buffer().await, (x % blocks) * SMALL as u64, SMALL)
            .await;
        assert_eq!(r.unwrap(), SMALL);
    }
    RANDOM_READS as f64 / start.elapsed().as_secs_f64()
}

/// Whether the small writes go into preallocated files (`NIMBUS_BENCH_PREALLOCATE=1`).
fn preallocate() -> bool {
    std::env::var("NIMBUS_BENCH_PREALLOCATE").is_ok_and(|v| v == "1")
}

/// Rounds of the small-write workloads (`NIMBUS_BENCH_ROUNDS`).
fn rounds() -> usize {
    std::env::var("NIMBUS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
}

/// Whether to run the workload `name` (`NIMBUS_BENCH_ONLY` filters by substring).
fn selected(name: &str) -> bool {
    std::env::var("NIMBUS_BENCH_ONLY").map_or(true, |only| name.contains(&only))
}

/// Write+fdatasync operations per second, `small_writers()` writers each on its own new file
/// in `dir`; with `linked`, each write and its sync are submitted together. Files are
/// created (and preallocated) before the clock starts, as fio does.
async fn small_sync_writes(e: &Engine, dir: &Path, linked: bool) -> f64 {
    let mut files = Vec::new();
    for t in 0..small_writers() {
        let path = dir.join(format!("small-{}-{linked}-{t}", e.name()));
        if preallocate() {
            // As fio lays out its files: allocated, unwritten, at full length.
            let f = std::fs::File::create_new(&path).unwrap();
            let len = (SMALL * SMALL_WRITES) as u64;
            rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, len).unwrap();
            f.sync_all().unwrap();
        }
        let mode = OpenMode {
            create_new: !preallocate(),
            write: true,
            direct: true,
        };
        let f = e.open(&path, mode).await.unwrap();
        assert!(f.is_direct(), "O_DIRECT unavailable on {}", path.display());
        files.push(f);
    }
    let secs = concurrently(small_writers(), |t| {
        let (e, f) = (e.clone(), files[t].clone());
        async move {
            for i in 0..SMALL_WRITES {
                let mut buf = e.buffer().await;
                buf.set_len(SMALL);
                let offset = (i * SMALL) as u64;
                if linked {
                    let (r, _) = e.write_all_synced_at(&f, buf, offset, SyncKind::Data).await;
                    r.unwrap();
                } else {
                    let (r, _) = e.write_all_at(&f, buf, offset).await;
                    r.unwrap();
                    e.sync(&f, SyncKind::Data).await.unwrap();
                }
            }
        }
    })
    .await;
    (small_writers() * SMALL_WRITES) as f64 / secs
}

/// fio's small-write job in `dir` (which must hold no files of a former run): ops/s. With
/// `psync`, fio's blocking engine (`pwrite` then `fdatasync`, one thread per job) instead of
/// io_uring.
fn fio_small_writes(dir: &Path, psync: bool) -> Option<f64> {
    let size = format!("--size={}", SMALL * SMALL_WRITES);
    let jobs = format!("--numjobs={}", small_writers());
    let mut args = vec![
        "--rw=write",
        "--bs=4k",
        "--iodepth=1",
        "--fdatasync=1",
        &size,
        &jobs,
    ];
    if !preallocate() {
        args.extend(["--fallocate=none", "--file_append=1"]);
    }
    if psync {
        args.push("--ioengine=psync"); // overrides fio()'s io_uring
    }
    fio(dir, "small", &args).map(|x| x.1)
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied()
}

/// Runs fio; returns (MiB/s, IOPS) of the job.
fn fio(dir: &Path, name: &str, args: &[&str]) -> Option<(f64, f64)> {
    let out = Command::new("fio")
        .arg(format!("--name={name}"))
        .arg(format!("--directory={}", dir.display()))
        .args([
            "--ioengine=io_uring",
            "--direct=1",
            "--output-format=json",
            "--group_reporting",
        ])
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "fio {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let job = &v["jobs"][0];
    let side = if job["write"]["io_bytes"].as_u64().unwrap_or(0) > 0 {
        "write"
    } else {
        "read"
    };
    Some((
        job[side]["bw_bytes"].as_f64()? / (1 << 20) as f64,
        job[side]["iops"].as_f64()?,
    ))
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// 64 fragment writes of 16 MiB at once through the store; returns (seconds, peak RSS MiB).
async fn concurrent_streams(dir: &Path) -> (f64, f64) {
    let store = FragmentStore::open(
        dir,
        engine(IoEngineKind::Auto),
        StoreConfig {
            reserve_bytes: 0,
            ..StoreConfig::default()
        },
    )
    .await
    .unwrap();
    let chunk = vec![0x5au8; 256 * 1024];
    let secs = concurrently(64, |t| {
        let (store, chunk) = (store.clone(), chunk.clone());
        async move {
            let id = FragmentId {
                policy: "ec4+2".into(),
                partition: PartitionId(t as u32),
                object_path: format!("bench/streams/{t}"),
                version: VersionId(1),
                index: 0,
            };
            let header = FragmentHeader {
                version: id.version,
                fragment_index: 0,
                policy: id.policy.clone(),
                object_path: id.object_path.clone(),
                object_bytes: None,
                segment_bytes: 1 << 20,
                block_record_bytes: nimbus_core::fragment::DEFAULT_BLOCK_RECORD_BYTES,
                metadata: Vec::new(),
            };
            let mut w = store.begin_write(id.clone(), header).await.unwrap();
            for _ in 0..64 {
                w.write(&chunk).await.unwrap();
            }
            w.finish(None).await.unwrap();
            store.commit(&id).await.unwrap();
        }
    })
    .await;
    (secs, peak_rss_mib())
}

fn main() {
    let base: PathBuf = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let dir = tempfile::Builder::new()
        .prefix("nimbus-io-bench")
        .tempdir_in(&base)
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engines = [engine(IoEngineKind::Uring), engine(IoEngineKind::Portable)];
    // Each row: workload, unit, (uring, portable, fio), (uring / fio, portable / fio).
    #[allow(clippy::type_complexity)]
    let mut rows: Vec<(&str, &str, [Option<f64>; 3], [Option<f64>; 2])> = Vec::new();
    // fio's blocking engine on the small-write job, for reference: workload, ops/s, ratio.
    let mut psync = Vec::new();

    let size = format!("--size={SEQ_BYTES}");
    let seq = ["seq-write-1m", "seq-read-1m", "rand-read-4k-qd1"];
    if seq.iter().any(|name| selected(name)) {
        let (mut w, mut r, mut q) = (Vec::new(), Vec::new(), Vec::new());
        for e in &engines {
            let file = dir.path().join(format!("seq-{}", e.name()));
            rt.block_on(async {
                w.push(Some(seq_write(e, &file).await));
                r.push(Some(seq_read(e, &file).await));
                q.push(Some(random_reads(e, &file).await));
            });
            std::fs::remove_file(&file).unwrap();
        }
        let write = [
            "--rw=write",
            "--bs=1M",
            "--iodepth=8",
            &size,
            "--end_fsync=1",
        ];
        w.push(fio(dir.path(), "seqwrite", &write).map(|x| x.0));
        let read = ["--rw=read", "--bs=1M", "--iodepth=8", &size];
        r.push(fio(dir.path(), "seqwrite", &read).map(|x| x.0));
        let reads = format!("--number_ios={RANDOM_READS}");
        let random = ["--rw=randread", "--bs=4k", "--iodepth=1", &size, &reads];
        q.push(fio(dir.path(), "seqwrite", &random).map(|x| x.1));
        for (name, unit, v) in [
            (seq[0], "MiB/s", w),
            (seq[1], "MiB/s", r),
            (seq[2], "ops/s", q),
        ] {
            let ratio = |x: Option<f64>| x.zip(v[2]).map(|(x, fio)| x / fio);
            rows.push((name, unit, [v[0], v[1], v[2]], [ratio(v[0]), ratio(v[1])]));
        }
    }
    for (name, linked) in [("write-4k-fsync", false), ("write-4k-fsync-linked", true)] {
        if !selected(name) {
            continue;
        }
        // Per round: uring, portable, fio, fio psync (in an order that rotates, so that no
        // column always follows the same one), and each column's ratio to fio that round.
        let mut columns: [Vec<f64>; 4] = Default::default();
        let mut ratios: [Vec<f64>; 4] = Default::default();
        for round in 0..rounds() {
            let mut result = [None; 4];
            for column in (0..4).map(|c| (c + round) % 4) {
                let round_dir = dir.path().join(format!("{name}-{column}-{round}"));
                std::fs::create_dir(&round_dir).unwrap();
                result[column] = match engines.get(column) {
                    Some(e) => Some(rt.block_on(small_sync_writes(e, &round_dir, linked))),
                    None => fio_small_writes(&round_dir, column == 3),
                };
                std::fs::remove_dir_all(&round_dir).unwrap();
            }
            for (column, x) in columns.iter_mut().zip(result) {
                column.extend(x);
            }
            for (ratio, x) in ratios.iter_mut().zip(result) {
                if let (Some(x), Some(fio)) = (x, result[2]) {
                    ratio.push(x / fio);
                }
            }
        }
        let [u, p, f, ps] = columns.map(median);
        let [ru, rp, _, rps] = ratios.map(median);
        rows.push((name, "ops/s", [u, p, f], [ru, rp]));
        psync.push((name, ps, rps));
    }
    drop(engines);

    println!(
        "| workload | unit | uring | portable | fio (io_uring) | uring / fio | portable / fio |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, unit, v, r) in &rows {
        let cell = |x: Option<f64>| x.map_or("–".to_owned(), |x| format!("{x:.0}"));
        let ratio = |x: Option<f64>| x.map_or("–".to_owned(), |x| format!("{x:.2}"));
        println!(
            "| {name} | {unit} | {} | {} | {} | {} | {} |",
            cell(v[0]),
            cell(v[1]),
            cell(v[2]),
            ratio(r[0]),
            ratio(r[1])
        );
    }
    for (name, ops, ratio) in psync {
        let cell = |x: Option<f64>, digits| x.map_or("–".to_owned(), |x| format!("{x:.digits$}"));
        println!(
            "\n{name}, fio with --ioengine=psync (blocking pwrite + fdatasync): {} ops/s, {} of fio's io_uring job",
            cell(ops, 0),
            cell(ratio, 2)
        );
    }
    if !selected("streams") {
        return;
    }
    let streams_dir = dir.path().join("streams");
    std::fs::create_dir_all(&streams_dir).unwrap();
    let (secs, rss) = rt.block_on(concurrent_streams(&streams_dir));
    println!(
        "\n64 concurrent 16 MiB fragment writes through the store: {:.0} MiB/s, peak RSS {rss:.0} MiB",
        64.0 * 16.0 / secs
    );
}
