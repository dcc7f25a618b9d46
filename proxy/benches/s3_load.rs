//! The proxy's throughput and memory on a real local cluster (release mode):
//!
//!     cargo build --release -p nimbus && cargo bench -p nimbus-proxy --bench s3_load
//!
//! Starts `nimbus dev` (`target/release/nimbus`, or `$NIMBUS_BIN`) on a fresh data directory
//! under the current one (or `$NIMBUS_BENCH_DIR`), then drives it with the AWS SDK for Rust:
//!
//! - 4 KiB objects (inline in the index): PUT then GET, 16 clients, ops/s;
//! - 1 MiB objects (`ec4+2`): PUT then GET, 16 clients, MiB/s;
//! - 64 MiB objects: PUT then GET, 4 clients, MiB/s;
//! - memory: 32 clients each uploading one 256 MiB object at once, the proxy's peak RSS
//!   (sampled every 50 ms from /proc, and its VmHWM).
//!
//! One machine runs the clients, the proxy and all six storage nodes, so the figures are
//! the whole cluster's on this machine, not the proxy's alone. A proper harness comes with
//! `nimbus-bench`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark that cannot set up should stop
#![allow(clippy::disallowed_methods)] // setup threads may block

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures_util::StreamExt;
use nimbus_testkit::DevCluster;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

fn start_dev() -> DevCluster {
    let bin = std::env::var("NIMBUS_BIN")
        .unwrap_or_else(|_| format!("{}/../target/release/nimbus", env!("CARGO_MANIFEST_DIR")));
    let base = std::env::var("NIMBUS_BENCH_DIR").unwrap_or_else(|_| ".".to_owned());
    let data = tempfile::Builder::new()
        .prefix("nimbus-s3-load-")
        .tempdir_in(base)
        .unwrap();
    DevCluster::start(Path::new(&bin), data)
}

fn client(dev: &DevCluster) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .endpoint_url(dev.endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            dev.access_key(),
            dev.secret_key(),
            None,
            None,
            "bench",
        ))
        .force_path_style(true)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    Client::from_conf(config)
}

/// A field of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `count` operations on `clients` concurrent tasks; returns seconds.
async fn run<F, Fut>(clients: usize, count: usize, op: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    futures_util::stream::iter(0..count)
        .for_each_concurrent(clients, op)
        .await;
    start.elapsed().as_secs_f64()
}

async fn put_get(
    s3: &Client,
    bucket: &str,
    size: usize,
    clients: usize,
    count: usize,
) -> (f64, f64) {
    let body = Bytes::from((0..size).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>());
    let put = run(clients, count, |i| {
        let s3 = s3.clone();
        let body = body.clone();
        async move {
            s3.put_object()
                .bucket(bucket)
                .key(format!("o{size}-{i}"))
                .body(ByteStream::from(body))
                .send()
                .await
                .unwrap();
        }
    })
    .await;
    let got = Arc::new(AtomicU64::new(0));
    let get = run(clients, count, |i| {
        let s3 = s3.clone();
        let got = Arc::clone(&got);
        async move {
            let o = s3
                .get_object()
                .bucket(bucket)
                .key(format!("o{size}-{i}"))
                .send()
                .await
                .unwrap();
            let mut body = o.body;
            while let Some(chunk) = body.next().await {
                got.fetch_add(chunk.unwrap().len() as u64, Ordering::Relaxed);
            }
        }
    })
    .await;
    assert_eq!(
        got.load(Ordering::Relaxed),
        (size * count) as u64,
        "every byte read back"
    );
    (put, get)
}

fn main() {
    let dev = start_dev();
    let s3 = client(&dev);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        s3.create_bucket().bucket("load").send().await.unwrap();
        println!("workload                         clients  objects      PUT             GET");
        let (count, clients) = (4000, 16);
        let (put, get) = put_get(&s3, "load", 4 * KIB, clients, count).await;
        println!("4 KiB (inline)                   {clients:>7}  {count:>7}  {:>8.0} ops/s  {:>8.0} ops/s", count as f64 / put, count as f64 / get);
        for (size, clients, count) in [(MIB, 16, 512), (64 * MIB, 4, 16)] {
            let (put, get) = put_get(&s3, "load", size, clients, count).await;
            let mib = (size * count) as f64 / MIB as f64;
            println!("{:<32} {clients:>7}  {count:>7}  {:>8.1} MiB/s  {:>8.1} MiB/s", format!("{} MiB (ec4+2)", size / MIB), mib / put, mib / get);
        }

        // Memory: 32 uploads of 256 MiB at once.
        let pid = dev.process_with("proxy.toml");
        let before = status_kib(pid, "VmRSS:");
        let peak = Arc::new(AtomicU64::new(0));
        let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let peak = Arc::clone(&peak);
            let sampling = Arc::clone(&sampling);
            std::thread::spawn(move || {
                while sampling.load(Ordering::Relaxed) {
                    peak.fetch_max(status_kib(pid, "VmRSS:"), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let body = Bytes::from(vec![7u8; 256 * MIB]);
        let secs = run(32, 32, |i| {
            let s3 = s3.clone();
            let body = body.clone();
            async move {
                s3.put_object().bucket("load").key(format!("big-{i}")).body(ByteStream::from(body)).send().await.unwrap();
            }
        })
        .await;
        sampling.store(false, Ordering::Relaxed);
        sampler.join().unwrap();
        println!(
            "32 x 256 MiB uploads at once: {:.1} MiB/s; proxy RSS before {} MiB, peak sampled {} MiB, VmHWM {} MiB",
            (32 * 256) as f64 / secs,
            before / 1024,
            peak.load(Ordering::Relaxed) / 1024,
            status_kib(pid, "VmHWM:") / 1024
        );
    });
}
