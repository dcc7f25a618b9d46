//! The I/O engines against fio, on one device, in one run (release mode):
//!
//!     cargo bench -p nimbus-storage-node --bench io_engines [-- DIR]
//!
//! DIR (default: a temporary directory under the current one) must be on the disk to
//! measure. Workloads, each run by the io_uring engine, the portable engine and fio
//! (`--ioengine=io_uring`) with the same block size, queue depth and sync policy:
//!
//! - `seq-write-1m`: 1 GiB in 1 MiB O_DIRECT writes, 8 in flight, fdatasync at the end;
//! - `seq-read-1m`: the same file read back in 1 MiB O_DIRECT reads, 8 in flight;
//! - `rand-read-4k-qd1`: 20,000 random 4 KiB O_DIRECT reads of that file, one at a time
//!   (per-operation latency);
//! - `write-4k-fsync`: 8 writers, each appending 4 KiB O_DIRECT writes to its own file with
//!   an fdatasync after every write (the small-object pattern), 512 writes each;
//! - `write-4k-fsync-linked`: the same, each write and its fdatasync submitted together
//!   (`Engine::write_all_synced_at`: an io_uring linked pair), against the same fio job.
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

/// Write+fdatasync operations per second, `small_writers()` writers each on its own file;
/// with `linked`, each write and its sync are submitted together.
async fn small_sync_writes(e: &Engine, dir: &Path, linked: bool) -> f64 {
    let secs = concurrently(small_writers(), |t| {
        let e = e.clone();
        let path = dir.join(format!("small-{}-{linked}-{t}", e.name()));
        async move {
            let f = open(&e, &path, true).await;
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
    let mut rows: Vec<(&str, String, Vec<Option<f64>>)> = Vec::new();
    let (mut w, mut r, mut s, mut l) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut q = Vec::new();
    for kind in [IoEngineKind::Uring, IoEngineKind::Portable] {
        let e = engine(kind);
        let file = dir.path().join(format!("seq-{}", e.name()));
        rt.block_on(async {
            w.push(Some(seq_write(&e, &file).await));
            r.push(Some(seq_read(&e, &file).await));
            q.push(Some(random_reads(&e, &file).await));
            s.push(Some(small_sync_writes(&e, dir.path(), false).await));
            l.push(Some(small_sync_writes(&e, dir.path(), true).await));
        });
        std::fs::remove_file(&file).unwrap();
    }
    let size = format!("--size={}", SEQ_BYTES);
    w.push(
        fio(
            dir.path(),
            "seqwrite",
            &[
                "--rw=write",
                "--bs=1M",
                "--iodepth=8",
                &size,
                "--end_fsync=1",
            ],
        )
        .map(|x| x.0),
    );
    r.push(
        fio(
            dir.path(),
            "seqwrite",
            &["--rw=read", "--bs=1M", "--iodepth=8", &size],
        )
        .map(|x| x.0),
    );
    let reads = format!("--number_ios={RANDOM_READS}");
    q.push(
        fio(
            dir.path(),
            "seqwrite",
            &["--rw=randread", "--bs=4k", "--iodepth=1", &size, &reads],
        )
        .map(|x| x.1),
    );
    let small_size = format!("--size={}", SMALL * SMALL_WRITES);
    let jobs = format!("--numjobs={}", small_writers());
    let fio_small = fio(
        dir.path(),
        "small",
        &[
            "--rw=write",
            "--bs=4k",
            "--iodepth=1",
            "--fdatasync=1",
            &small_size,
            &jobs,
        ],
    )
    .map(|x| x.1);
    s.push(fio_small);
    l.push(fio_small);
    rows.push(("seq-write-1m", "MiB/s".into(), w));
    rows.push(("seq-read-1m", "MiB/s".into(), r));
    rows.push(("rand-read-4k-qd1", "ops/s".into(), q));
    rows.push(("write-4k-fsync", "ops/s".into(), s));
    rows.push(("write-4k-fsync-linked", "ops/s".into(), l));

    println!(
        "| workload | unit | uring | portable | fio (io_uring) | uring / fio | portable / fio |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, unit, v) in &rows {
        let cell = |x: Option<f64>| x.map_or("–".to_owned(), |x| format!("{x:.0}"));
        let ratio = |x: Option<f64>| match (x, v[2]) {
            (Some(a), Some(f)) if f > 0.0 => format!("{:.2}", a / f),
            _ => "–".to_owned(),
        };
        println!(
            "| {name} | {unit} | {} | {} | {} | {} | {} |",
            cell(v[0]),
            cell(v[1]),
            cell(v[2]),
            ratio(v[0]),
            ratio(v[1])
        );
    }
    let streams_dir = dir.path().join("streams");
    std::fs::create_dir_all(&streams_dir).unwrap();
    let (secs, rss) = rt.block_on(concurrent_streams(&streams_dir));
    println!(
        "\n64 concurrent 16 MiB fragment writes through the store: {:.0} MiB/s, peak RSS {rss:.0} MiB",
        64.0 * 16.0 / secs
    );
}
