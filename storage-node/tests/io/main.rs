//! One conformance suite, run on every I/O engine: they must behave alike. Tests are named
//! after the hazards they guard against.

#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nimbus_storage_node::io::{Engine, EngineConfig, IoBuf, IoEngineKind, OpenMode, SyncKind};

mod t10_runtimes;

pub(crate) fn engine(kind: IoEngineKind, buffers: usize) -> Engine {
    Engine::new(
        kind,
        EngineConfig {
            buffers,
            buffer_bytes: 256 * 1024,
            ring_entries: 64,
        },
    )
    .unwrap()
}

pub(crate) fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub(crate) async fn create(e: &Engine, path: &Path) -> nimbus_storage_node::io::File {
    e.open(
        path,
        OpenMode {
            create_new: true,
            write: true,
            direct: false,
        },
    )
    .await
    .unwrap()
}

async fn write_file(e: &Engine, path: &Path, data: &[u8], direct: bool) {
    let f = e
        .open(
            path,
            OpenMode {
                create_new: true,
                write: true,
                direct,
            },
        )
        .await
        .unwrap();
    let mut buf = e.buffer().await;
    assert_eq!(buf.extend_from_slice(data), data.len());
    let (r, _) = e.write_all_at(&f, buf, 0).await;
    r.unwrap();
    e.sync(&f, SyncKind::Data).await.unwrap();
}

async fn written_data_reads_back(kind: IoEngineKind, direct: bool) {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(kind, 8);
    let path = dir.path().join("f");
    let data = pattern(1, 192 * 1024);
    write_file(&e, &path, &data, direct).await;
    let f = e
        .open(
            &path,
            OpenMode {
                direct,
                ..OpenMode::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(e.file_len(&f).await.unwrap(), data.len() as u64);
    let buf = e.buffer().await;
    let (r, buf) = e.read_exact_at(&f, buf, 0, data.len()).await;
    r.unwrap();
    assert_eq!(buf.as_slice(), &data[..]);
    // an aligned read in the middle
    let (r, buf) = e.read_at(&f, buf, 64 * 1024, 4096).await;
    assert_eq!(r.unwrap(), 4096);
    assert_eq!(buf.as_slice(), &data[64 * 1024..68 * 1024]);
}

async fn reads_at_the_end_are_short_and_past_it_empty(kind: IoEngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(kind, 4);
    let path = dir.path().join("f");
    write_file(&e, &path, &pattern(2, 10_000), false).await;
    let f = e.open(&path, OpenMode::default()).await.unwrap();
    let (r, buf) = e.read_at(&f, e.buffer().await, 8192, 8192).await;
    assert_eq!(r.unwrap(), 10_000 - 8192);
    assert_eq!(buf.len(), 10_000 - 8192);
    let (r, buf) = e.read_at(&f, buf, 20_000, 4096).await;
    assert_eq!(r.unwrap(), 0);
    assert!(buf.is_empty());
    let (r, _) = e.read_exact_at(&f, e.buffer().await, 8192, 8192).await;
    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
}

async fn many_operations_in_flight_stay_apart(kind: IoEngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(kind, 16);
    let path = dir.path().join("f");
    let f = create(&e, &path).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64u8 {
        let (e, f) = (e.clone(), f.clone());
        tasks.spawn(async move {
            let data = pattern(i, 16 * 1024);
            let mut buf = e.buffer().await;
            buf.extend_from_slice(&data);
            let (r, _) = e.write_all_at(&f, buf, u64::from(i) * 16 * 1024).await;
            r.unwrap();
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    e.sync(&f, SyncKind::All).await.unwrap();
    for i in 0..64u8 {
        let (r, buf) = e
            .read_exact_at(&f, e.buffer().await, u64::from(i) * 16 * 1024, 16 * 1024)
            .await;
        r.unwrap();
        assert_eq!(buf.as_slice(), &pattern(i, 16 * 1024)[..], "block {i}");
    }
}

async fn a_dropped_operation_returns_its_buffer_and_leaves_the_engine_working(kind: IoEngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(kind, 4);
    let path = dir.path().join("f");
    let f = create(&e, &path).await;
    for round in 0..50u64 {
        let (e2, f2) = (e.clone(), f.clone());
        let task = tokio::spawn(async move {
            let mut buf = e2.buffer().await;
            buf.extend_from_slice(&[7u8; 256 * 1024]);
            let _ = e2.write_all_at(&f2, buf, round * 256 * 1024).await;
            let _ = e2.sync(&f2, SyncKind::Data).await;
        });
        if round % 2 == 0 {
            tokio::task::yield_now().await;
        }
        task.abort();
        let _ = task.await;
    }
    // every buffer comes back to the pool once the kernel is done with it
    let all = async {
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(e.buffer().await);
        }
        held
    };
    let held = tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .expect("buffers leaked");
    drop(held);
    let data = pattern(9, 4096);
    let mut buf = e.buffer().await;
    buf.extend_from_slice(&data);
    let (r, _) = e.write_all_at(&f, buf, 0).await;
    r.unwrap();
    let (r, buf) = e.read_exact_at(&f, e.buffer().await, 0, 4096).await;
    r.unwrap();
    assert_eq!(buf.as_slice(), &data[..]);
}

async fn closing_a_file_mid_operation_keeps_its_descriptor_until_completion(kind: IoEngineKind) {
    // If a descriptor were closed while the kernel still had a write queued on it, the next
    // open would reuse its number and the stale write would land in the wrong file.
    let dir = tempfile::tempdir().unwrap();
    let e = engine(kind, 4);
    for round in 0..20 {
        let old = dir.path().join(format!("old{round}"));
        let f = create(&e, &old).await;
        let (e2, f2) = (e.clone(), f.clone());
        drop(f);
        let task = tokio::spawn(async move {
            let mut buf = e2.buffer().await;
            buf.extend_from_slice(&[0xAA; 200_000]);
            let _ = e2.write_all_at(&f2, buf, 0).await;
        });
        tokio::task::yield_now().await;
        task.abort();
        let _ = task.await; // every handle to `old` is gone; an op may still be in flight

        let new = dir.path().join(format!("new{round}"));
        write_file(&e, &new, &pattern(5, 50_000), false).await;
        assert_eq!(
            std::fs::read(&new).unwrap(),
            pattern(5, 50_000),
            "round {round}"
        );
    }
}

async fn errors_are_returned_not_panicked(kind: IoEngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(kind, 2);
    let missing = e.open(&dir.path().join("nope"), OpenMode::default()).await;
    assert_eq!(missing.unwrap_err().kind(), std::io::ErrorKind::NotFound);
    let path = dir.path().join("f");
    write_file(&e, &path, b"data", false).await;
    let read_only = e.open(&path, OpenMode::default()).await.unwrap();
    let mut buf = e.buffer().await;
    buf.extend_from_slice(b"more");
    let (r, _) = e.write_at(&read_only, buf, 0).await;
    assert!(r.is_err(), "a write to a read-only descriptor succeeded");
    let again = e
        .open(
            &path,
            OpenMode {
                create_new: true,
                write: true,
                direct: false,
            },
        )
        .await;
    assert_eq!(again.unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
}

async fn shutting_down_with_operations_in_flight_is_clean(kind: IoEngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(kind, 8);
    let path = dir.path().join("f");
    let f = create(&e, &path).await;
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let (e, f) = (e.clone(), f.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = e.buffer().await;
            buf.extend_from_slice(&[1u8; 200_000]);
            e.write_all_at(&f, buf, i * 200_000).await.0
        }));
    }
    drop(e);
    for t in tasks {
        // each op either finished or was refused cleanly: none hangs, none panics
        let r = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("op hung");
        r.unwrap().unwrap();
    }
}

async fn a_write_and_its_sync_go_together(kind: IoEngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(kind, 4);
    let path = dir.path().join("f");
    let f = create(&e, &path).await;
    for i in 0..32u64 {
        let mut buf = e.buffer().await;
        buf.extend_from_slice(&pattern(i as u8, 4096));
        let (r, _) = e
            .write_all_synced_at(&f, buf, i * 4096, SyncKind::Data)
            .await;
        r.unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    for i in 0..32usize {
        assert_eq!(
            &bytes[i * 4096..(i + 1) * 4096],
            &pattern(i as u8, 4096)[..]
        );
    }
    // a failing write fails the pair
    let read_only = e.open(&path, OpenMode::default()).await.unwrap();
    let mut buf = e.buffer().await;
    buf.extend_from_slice(b"x");
    let (r, _) = e
        .write_all_synced_at(&read_only, buf, 0, SyncKind::Data)
        .await;
    assert!(r.is_err());
}

async fn many_linked_pairs_in_flight_stay_apart(kind: IoEngineKind) {
    // Several files, several writers each, write+sync pairs mixed with plain writes and
    // reads: every result and buffer must reach the task that submitted it, whichever
    // thread reaped its completion.
    let dir = tempfile::tempdir().unwrap();
    let e = engine(kind, 16);
    let mut files = Vec::new();
    for n in 0..4 {
        files.push(create(&e, &dir.path().join(format!("f{n}"))).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32u8 {
        let (e, f) = (e.clone(), files[usize::from(i) % 4].clone());
        tasks.spawn(async move {
            for round in 0..8u8 {
                let block = u64::from(i / 4) * 8 + u64::from(round);
                let data = pattern(i ^ round.wrapping_mul(17), 4096);
                let mut buf = e.buffer().await;
                buf.extend_from_slice(&data);
                let (r, back) = if round % 2 == 0 {
                    e.write_all_synced_at(&f, buf, block * 4096, SyncKind::Data)
                        .await
                } else {
                    e.write_all_at(&f, buf, block * 4096).await
                };
                r.unwrap();
                assert_eq!(back.as_slice(), &data[..], "a buffer came back changed");
                let (r, read) = e.read_exact_at(&f, back, block * 4096, 4096).await;
                r.unwrap();
                assert_eq!(read.as_slice(), &data[..], "writer {i} round {round}");
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
}

async fn a_dropped_linked_pair_returns_its_buffer(kind: IoEngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(kind, 2);
    let f = create(&e, &dir.path().join("f")).await;
    for round in 0..50u64 {
        let (e2, f2) = (e.clone(), f.clone());
        let task = tokio::spawn(async move {
            let mut buf = e2.buffer().await;
            buf.extend_from_slice(&[3u8; 64 * 1024]);
            let _ = e2
                .write_all_synced_at(&f2, buf, round * 64 * 1024, SyncKind::Data)
                .await;
        });
        if round % 2 == 0 {
            tokio::task::yield_now().await;
        }
        task.abort();
        let _ = task.await;
    }
    let all = async { (e.buffer().await, e.buffer().await) };
    tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .expect("buffers leaked");
}

async fn directories_sync_and_list(kind: IoEngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(kind, 2);
    let sub = dir.path().join("a/b");
    e.create_dir_all(&sub).await.unwrap();
    write_file(&e, &sub.join("x.tmp"), b"x", false).await;
    e.rename(&sub.join("x.tmp"), &sub.join("x")).await.unwrap();
    e.sync_dir(&sub).await.unwrap();
    assert_eq!(e.list_dir(&sub).await.unwrap(), vec!["x".to_owned()]);
    assert!(
        e.list_dir(&dir.path().join("none"))
            .await
            .unwrap()
            .is_empty()
    );
    e.remove_file(&sub.join("x")).await.unwrap();
    let (free, total) = e.space(dir.path()).await.unwrap();
    assert!(total >= free && total > 0);
}

macro_rules! conformance {
    ($($engine:ident => $kind:expr),*) => {$(
        mod $engine {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn written_data_reads_back_buffered() { written_data_reads_back($kind, false).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn written_data_reads_back_with_o_direct() { written_data_reads_back($kind, true).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn short_read_at_the_end() { reads_at_the_end_are_short_and_past_it_empty($kind).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn many_in_flight() { many_operations_in_flight_stay_apart($kind).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn drop_before_completion() { a_dropped_operation_returns_its_buffer_and_leaves_the_engine_working($kind).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn close_mid_operation() { closing_a_file_mid_operation_keeps_its_descriptor_until_completion($kind).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn errors() { errors_are_returned_not_panicked($kind).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn shutdown_with_ops_in_flight() { shutting_down_with_operations_in_flight_is_clean($kind).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn directories() { directories_sync_and_list($kind).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn linked_write_and_sync() { a_write_and_its_sync_go_together($kind).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn many_linked_in_flight() { many_linked_pairs_in_flight_stay_apart($kind).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn linked_drop_before_completion() { a_dropped_linked_pair_returns_its_buffer($kind).await }
            #[tokio::test(flavor = "current_thread")]
            async fn single_threaded_runtime() { many_linked_pairs_in_flight_stay_apart($kind).await }
        }
    )*};
}

conformance!(uring => IoEngineKind::Uring, portable => IoEngineKind::Portable);

#[test]
fn auto_picks_io_uring_where_the_kernel_has_it() {
    let e = engine(IoEngineKind::Auto, 1);
    let direct = Engine::new(IoEngineKind::Uring, EngineConfig::default());
    assert_eq!(e.name(), if direct.is_ok() { "uring" } else { "portable" });
    let _ = Arc::new(IoBuf::new(1));
}
