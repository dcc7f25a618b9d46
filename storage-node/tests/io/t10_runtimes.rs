//! Engines and the tokio runtimes that drive them: an engine may be built outside any
//! runtime, outlive the runtime that first drove it, and must keep the kernel's memory alive
//! when a runtime shuts down with its operations in flight. The io_uring engine reaps
//! completions in a task on the callers' runtime, so these are its hazards; the portable
//! engine must behave alike.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use nimbus_storage_node::io::{Engine, IoEngineKind, SyncKind};

use super::{create, engine, pattern};

const KINDS: [IoEngineKind; 2] = [IoEngineKind::Uring, IoEngineKind::Portable];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A write+sync pair and a read back, on a new file.
async fn round_trip(e: &Engine, path: &Path, seed: u8) {
    let f = create(e, path).await;
    let data = pattern(seed, 8192);
    let mut buf = e.buffer().await;
    buf.extend_from_slice(&data);
    let (r, _) = e.write_all_synced_at(&f, buf, 0, SyncKind::Data).await;
    r.unwrap();
    let (r, buf) = e.read_exact_at(&f, e.buffer().await, 0, 8192).await;
    r.unwrap();
    assert_eq!(buf.as_slice(), &data[..]);
}

async fn round_trip_in_time(e: &Engine, path: &Path, seed: u8) {
    tokio::time::timeout(Duration::from_secs(10), round_trip(e, path, seed))
        .await
        .expect("an operation hung");
}

/// Starts 8 large writes (each then synced) on `rt` and lets them get under way.
fn start_writes(rt: &tokio::runtime::Runtime, e: &Engine, path: &Path) {
    let f = rt.block_on(create(e, path));
    for i in 0..8u64 {
        let (e, f) = (e.clone(), f.clone());
        rt.spawn(async move {
            let mut buf = e.buffer().await;
            buf.extend_from_slice(&[9u8; 200_000]);
            let _ = e.write_all_at(&f, buf, i * 200_000).await;
            let _ = e.sync(&f, SyncKind::Data).await;
        });
    }
    rt.block_on(tokio::task::yield_now());
}

#[test]
fn an_engine_built_outside_a_runtime_serves_one_runtime_after_another() {
    for kind in KINDS {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(kind, 4);
        for n in 0..3u8 {
            let path = dir.path().join(format!("f{n}"));
            runtime().block_on(round_trip_in_time(&e, &path, n));
        }
    }
}

#[test]
fn a_runtime_shut_down_with_operations_in_flight_leaves_the_engine_working() {
    // Regression (io_uring engine): when the runtime dropped the driver, the next operation
    // was to start a new one, but the next caller first waited for a buffer, which only
    // reaping the dropped operations returns: it hung (about one run in ten). Now the
    // dropped driver hands what is in flight to a thread.
    for kind in KINDS {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(kind, 8);
        let rt = runtime();
        start_writes(&rt, &e, &dir.path().join("busy"));
        // Drops the waiting tasks and the io_uring engine's driver with operations in flight.
        drop(rt);
        let rt = runtime();
        rt.block_on(round_trip_in_time(&e, &dir.path().join("after"), 7));
        // every buffer of the dropped operations came back to the pool
        let all = async {
            let mut held = Vec::new();
            for _ in 0..8 {
                held.push(e.buffer().await);
            }
        };
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), all).await })
            .expect("buffers leaked");
    }
}

#[test]
fn the_last_handle_dropped_after_its_runtime_waits_for_operations_in_flight() {
    for kind in KINDS {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(kind, 8);
        let rt = runtime();
        start_writes(&rt, &e, &dir.path().join("busy"));
        drop(rt);
        // With no driver left, the io_uring engine's drop waits for the kernel itself.
        let (done, dropped) = mpsc::channel();
        std::thread::spawn(move || {
            drop(e);
            let _ = done.send(());
        });
        dropped
            .recv_timeout(Duration::from_secs(10))
            .expect("dropping the engine hung");
    }
}

#[test]
fn a_runtime_without_an_io_driver_still_completes_operations() {
    // The io_uring engine cannot watch its eventfd there (tokio panics, which the engine
    // catches: the panic message in the output is expected) and reaps on a thread instead.
    for kind in KINDS {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(kind, 4);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(round_trip_in_time(&e, &dir.path().join("f"), 3));
        drop(e);
    }
}
