//! The fragment store on real files, with both I/O engines: the write protocol, verified
//! reads, quarantine, full devices and bad input.

#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic

use std::path::Path;
use std::time::Duration;

use nimbus_core::fragment::FragmentHeader;
use nimbus_core::ids::{PartitionId, VersionId};
use nimbus_storage_node::io::{Engine, EngineConfig, IoEngineKind};
use nimbus_storage_node::store::{FragmentId, FragmentStore, StoreConfig, StoreError};

fn engine(kind: IoEngineKind) -> Engine {
    Engine::new(
        kind,
        EngineConfig {
            buffers: 8,
            buffer_bytes: 256 * 1024,
            ring_entries: 64,
        },
    )
    .unwrap()
}

fn config() -> StoreConfig {
    StoreConfig {
        reserve_bytes: 0,
        block_record_bytes: 8192,
        direct_io: true,
        summary_max_age: Duration::from_secs(600),
    }
}

async fn store(kind: IoEngineKind, root: &Path) -> FragmentStore {
    FragmentStore::open(root, engine(kind), config())
        .await
        .unwrap()
}

fn id(object: &str, version: u64, index: u8) -> FragmentId {
    FragmentId {
        policy: "ec4+2".into(),
        partition: PartitionId(17),
        object_path: format!("AUTH_test/photos/{object}"),
        version: VersionId(version),
        index,
    }
}

fn header(id: &FragmentId) -> FragmentHeader {
    FragmentHeader {
        version: id.version,
        fragment_index: id.index,
        policy: id.policy.clone(),
        object_path: id.object_path.clone(),
        object_bytes: None,
        segment_bytes: 1 << 20,
        block_record_bytes: 8192,
        metadata: Vec::new(),
    }
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(131).wrapping_add(seed))
        .collect()
}

/// Writes and commits a fragment in uneven pieces.
async fn put(s: &FragmentStore, id: &FragmentId, bytes: &[u8]) {
    let mut w = s.begin_write(id.clone(), header(id)).await.unwrap();
    for piece in bytes.chunks(7777) {
        w.write(piece).await.unwrap();
    }
    let footer = w.finish(Some(bytes.len() as u64)).await.unwrap();
    assert_eq!(footer.blake3, *blake3::hash(bytes).as_bytes());
    s.commit(id).await.unwrap();
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                out.extend(files_under(&e.path()));
            } else {
                out.push(e.path().to_string_lossy().into_owned());
            }
        }
    }
    out
}

async fn committed_fragments_read_back_whole_and_in_ranges(kind: IoEngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let s = store(kind, dir.path()).await;
    let f = id("cat.jpg", 1, 2);
    let bytes = data(1, 600_000);
    put(&s, &f, &bytes).await;
    let whole = s
        .read(&f, 0..u64::MAX)
        .await
        .unwrap()
        .read_to_end()
        .await
        .unwrap();
    assert_eq!(whole, bytes);
    for (a, b) in [
        (0, 1),
        (8187, 8189),
        (100_000, 300_001),
        (599_999, 600_000),
        (599_999, 700_000),
    ] {
        let got = s.read(&f, a..b).await.unwrap().read_to_end().await.unwrap();
        assert_eq!(
            got,
            &bytes[a as usize..(b as usize).min(bytes.len())],
            "{a}..{b}"
        );
    }
    let empty = s
        .read(&f, 700_000..800_000)
        .await
        .unwrap()
        .read_to_end()
        .await
        .unwrap();
    assert!(empty.is_empty());
    s.read(&f, 0..10)
        .await
        .unwrap()
        .verify_whole()
        .await
        .unwrap();
    // an empty fragment
    let e = id("empty", 1, 0);
    put(&s, &e, &[]).await;
    assert!(
        s.read(&e, 0..10)
            .await
            .unwrap()
            .read_to_end()
            .await
            .unwrap()
            .is_empty()
    );
}

async fn written_is_not_readable_until_committed(kind: IoEngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let s = store(kind, dir.path()).await;
    let f = id("dog.jpg", 2, 0);
    let mut w = s.begin_write(f.clone(), header(&f)).await.unwrap();
    w.write(&data(2, 50_000)).await.unwrap();
    w.finish(None).await.unwrap();
    assert!(matches!(
        s.read(&f, 0..10).await,
        Err(StoreError::NotFound { .. })
    ));
    let listed = s.list_partition("ec4+2", PartitionId(17)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(!listed[0].durable);
    let before = s.partition_digest("ec4+2", PartitionId(17)).await.unwrap();
    s.commit(&f).await.unwrap();
    s.commit(&f).await.unwrap(); // again: still fine
    let after = s.partition_digest("ec4+2", PartitionId(17)).await.unwrap();
    assert_ne!(before, after);
    assert!(s.list_partition("ec4+2", PartitionId(17)).await.unwrap()[0].durable);
    assert_eq!(
        s.read(&f, 0..u64::MAX)
            .await
            .unwrap()
            .read_to_end()
            .await
            .unwrap(),
        data(2, 50_000)
    );
    assert!(matches!(
        s.commit(&id("nothing", 9, 9)).await,
        Err(StoreError::NotFound { .. })
    ));
    s.delete(&f).await.unwrap();
    assert!(matches!(
        s.read(&f, 0..10).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.delete(&f).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn a_flipped_byte_is_never_served_and_the_file_is_quarantined(kind: IoEngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let s = store(kind, dir.path()).await;
    let bytes = data(3, 40_000);
    let mut rng = 0x1234_5678u64;
    for round in 0..40u64 {
        let f = id(&format!("obj{round}"), round + 1, 1);
        put(&s, &f, &bytes).await;
        let path = files_under(&dir.path().join("objects"))
            .into_iter()
            .find(|p| p.ends_with(&format!("{:016x}.1", round + 1)))
            .unwrap();
        let mut file = std::fs::read(&path).unwrap();
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let at = (rng >> 33) as usize % file.len();
        file[at] ^= 1 << (round % 8);
        std::fs::write(&path, &file).unwrap();
        match s.read(&f, 0..u64::MAX).await {
            Ok(reader) => match reader.read_to_end().await {
                // the flip landed in padding, which is never read: the data is intact
                Ok(read) => assert_eq!(read, bytes, "round {round}: corrupt bytes served"),
                Err(StoreError::Corrupt { .. }) => {
                    assert!(
                        std::fs::metadata(&path).is_err(),
                        "corrupt file left in place"
                    );
                }
                Err(e) => panic!("round {round}: {e}"),
            },
            Err(StoreError::Corrupt { .. }) => {
                assert!(
                    std::fs::metadata(&path).is_err(),
                    "corrupt file left in place"
                );
            }
            Err(e) => panic!("round {round}: {e}"),
        }
    }
    let quarantined = files_under(&dir.path().join("quarantine"));
    assert!(
        quarantined.len() > 20,
        "only {} quarantined",
        quarantined.len()
    );
}

async fn bad_input_is_refused_and_stores_nothing(kind: IoEngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let s = store(kind, dir.path()).await;
    for policy in ["../etc", "a/b", "", ".hidden", "EC"] {
        let mut f = id("x", 1, 0);
        f.policy = policy.into();
        let mut h = header(&f);
        h.policy = "ec4+2".into();
        let err = s.begin_write(f.clone(), h).await.unwrap_err();
        assert!(
            matches!(err, StoreError::BadRequest { .. }),
            "{policy}: {err}"
        );
        assert!(matches!(
            s.read(&f, 0..1).await,
            Err(StoreError::BadRequest { .. })
        ));
    }
    // a header that does not match the id
    let f = id("x", 1, 0);
    let mut h = header(&f);
    h.fragment_index = 5;
    assert!(matches!(
        s.begin_write(f.clone(), h).await,
        Err(StoreError::BadRequest { .. })
    ));
    // truncated and overlong bodies
    for (declared, sent) in [(1000u64, 999usize), (1000, 1001)] {
        let mut w = s.begin_write(f.clone(), header(&f)).await.unwrap();
        w.write(&data(4, sent)).await.unwrap();
        assert!(matches!(
            w.finish(Some(declared)).await,
            Err(StoreError::BadRequest { .. })
        ));
    }
    // an abandoned write
    let mut w = s.begin_write(f.clone(), header(&f)).await.unwrap();
    w.write(&data(4, 100_000)).await.unwrap();
    drop(w);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(files_under(&dir.path().join("objects")).is_empty());
    assert!(files_under(&dir.path().join("tmp")).is_empty());
    assert!(matches!(
        s.commit(&f).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn below_the_reserve_writes_are_refused(kind: IoEngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.reserve_bytes = u64::MAX;
    let s = FragmentStore::open(dir.path(), engine(kind), cfg)
        .await
        .unwrap();
    let f = id("x", 1, 0);
    assert!(matches!(
        s.begin_write(f.clone(), header(&f)).await,
        Err(StoreError::Full { .. })
    ));
}

async fn leftovers_of_a_crash_are_cleared_on_open(kind: IoEngineKind) {
    let dir = tempfile::tempdir().unwrap();
    {
        let _s = store(kind, dir.path()).await;
    }
    std::fs::write(dir.path().join("tmp/half-written"), b"partial").unwrap();
    let _s = store(kind, dir.path()).await;
    assert!(files_under(&dir.path().join("tmp")).is_empty());
}

/// The kept partition summaries follow every change the store makes at once, and changes
/// made behind its back: a wiped partition at once, a file removed by hand within
/// `summary_max_age`.
async fn partition_summaries_follow_the_store_and_the_disk(kind: IoEngineKind) {
    use nimbus_storage_node::store::objects_digest;
    let dir = tempfile::tempdir().unwrap();
    let s = FragmentStore::open(
        dir.path(),
        engine(kind),
        StoreConfig {
            summary_max_age: Duration::from_millis(300),
            ..config()
        },
    )
    .await
    .unwrap();
    let p = PartitionId(17);
    let indexes = |s: &FragmentStore| {
        let s = s.clone();
        async move {
            let summary = s.partition_summary("ec4+2", p).await.unwrap();
            summary.indexes().collect::<Vec<_>>()
        }
    };
    assert!(indexes(&s).await.is_empty());
    let (a, b) = (id("a", 1, 0), id("b", 2, 3));
    put(&s, &a, &data(1, 10_000)).await;
    put(&s, &b, &data(2, 10_000)).await;
    assert_eq!(indexes(&s).await, [0, 3]);
    let listed = s.list_partition("ec4+2", p).await.unwrap();
    let summary = s.partition_summary("ec4+2", p).await.unwrap();
    assert_eq!(summary.digest(0), objects_digest(&listed, Some(0)));
    assert_eq!(summary.digest(5), objects_digest(&[], Some(5)));
    let digests = s.policy_objects_digests("ec4+2").await.unwrap();
    assert_eq!(digests, vec![(p, summary.digests.clone())]);

    // Written, not committed: not in the summary; committed: in it.
    let c = id("c", 3, 1);
    let mut w = s.begin_write(c.clone(), header(&c)).await.unwrap();
    w.write(&data(3, 10_000)).await.unwrap();
    w.finish(None).await.unwrap();
    assert_eq!(indexes(&s).await, [0, 3]);
    s.commit(&c).await.unwrap();
    assert_eq!(indexes(&s).await, [0, 1, 3]);
    s.delete(&b).await.unwrap();
    assert_eq!(indexes(&s).await, [0, 1]);

    // Quarantined on a corrupt read.
    let path = files_under(&dir.path().join("objects"))
        .into_iter()
        .find(|f| f.ends_with(&format!("{:016x}.0", 1)))
        .unwrap();
    let mut file = std::fs::read(&path).unwrap();
    for quarter in 1..4 {
        let at = file.len() * quarter / 4;
        file[at] ^= 0x40;
    }
    std::fs::write(&path, &file).unwrap();
    let read = match s.read(&a, 0..u64::MAX).await {
        Ok(r) => r.read_to_end().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(matches!(read, Err(StoreError::Corrupt { .. })), "{read:?}");
    assert_eq!(indexes(&s).await, [1]);

    // Behind the store's back: a file removed by hand counts until the summary is
    // `summary_max_age` old...
    let path = files_under(&dir.path().join("objects")).pop().unwrap();
    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(indexes(&s).await.is_empty(), "{path:?} removed by hand");
    // ...and a wiped partition at once.
    put(&s, &a, &data(1, 10_000)).await;
    assert_eq!(indexes(&s).await, [0]);
    std::fs::remove_dir_all(dir.path().join("objects/ec4+2/17")).unwrap();
    assert!(indexes(&s).await.is_empty(), "partition wiped");
}

macro_rules! suite {
    ($($engine:ident => $kind:expr),*) => {$(
        mod $engine {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn read_back() { committed_fragments_read_back_whole_and_in_ranges($kind).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn commit() { written_is_not_readable_until_committed($kind).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn corruption() { a_flipped_byte_is_never_served_and_the_file_is_quarantined($kind).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bad_input() { bad_input_is_refused_and_stores_nothing($kind).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reserve() { below_the_reserve_writes_are_refused($kind).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn crash_leftovers() { leftovers_of_a_crash_are_cleared_on_open($kind).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn summaries() { partition_summaries_follow_the_store_and_the_disk($kind).await }
        }
    )*};
}

suite!(uring => IoEngineKind::Uring, portable => IoEngineKind::Portable);

/// A real full file system: a 4 MiB tmpfs mounted by the test (root only; elsewhere the
/// reserve test above covers the refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_device_refuses_writes_and_keeps_what_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(dir.path())
        .status();
    if !mount.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot mount a tmpfs here (not root?)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(dir.path());
    let s = store(IoEngineKind::Auto, dir.path()).await;
    let kept = id("kept", 1, 0);
    put(&s, &kept, &data(5, 500_000)).await;
    let mut full = false;
    for i in 0..20 {
        let f = id(&format!("filler{i}"), 2, 0);
        let result = async {
            let mut w = s.begin_write(f.clone(), header(&f)).await?;
            w.write(&data(6, 500_000)).await?;
            w.finish(None).await?;
            s.commit(&f).await
        }
        .await;
        match result {
            Ok(()) => {}
            Err(StoreError::Full { .. }) => {
                full = true;
                break;
            }
            Err(e) => panic!("unexpected error on a full device: {e}"),
        }
    }
    assert!(full, "4 MiB never filled up");
    let read = s
        .read(&kept, 0..u64::MAX)
        .await
        .unwrap()
        .read_to_end()
        .await
        .unwrap();
    assert_eq!(read, data(5, 500_000));
}

fn faulty_store_config() -> EngineConfig {
    EngineConfig {
        buffers: 8,
        buffer_bytes: 256 * 1024,
        ring_entries: 64,
    }
}

/// A device that fills up mid-fragment: the write is refused as full, and nothing of it is
/// left visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_space_mid_write_leaves_nothing_visible() {
    use nimbus_storage_node::io::Faults;
    for kind in [IoEngineKind::Uring, IoEngineKind::Portable] {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults {
            enospc_after_bytes: Some(300_000),
            ..Faults::default()
        };
        let e = Engine::with_faults(kind, faulty_store_config(), faults).unwrap();
        let s = FragmentStore::open(dir.path(), e, config()).await.unwrap();
        let f = id("big", 1, 0);
        let result = async {
            let mut w = s.begin_write(f.clone(), header(&f)).await?;
            w.write(&data(7, 1_000_000)).await?;
            w.finish(None).await
        }
        .await;
        assert!(
            matches!(result, Err(StoreError::Full { .. })),
            "{kind:?}: {result:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(files_under(&dir.path().join("objects")).is_empty());
        assert!(files_under(&dir.path().join("tmp")).is_empty());
    }
}

/// A torn write (the device wrote half, then failed) never becomes visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_write_never_becomes_visible() {
    use nimbus_storage_node::io::Faults;
    for kind in [IoEngineKind::Uring, IoEngineKind::Portable] {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults {
            torn_writes: true,
            ..Faults::default()
        };
        let e = Engine::with_faults(kind, faulty_store_config(), faults).unwrap();
        let s = FragmentStore::open(dir.path(), e, config()).await.unwrap();
        let f = id("torn", 1, 0);
        let result = async {
            let mut w = s.begin_write(f.clone(), header(&f)).await?;
            w.write(&data(8, 100_000)).await?;
            w.finish(None).await
        }
        .await;
        assert!(
            matches!(result, Err(StoreError::Io { .. })),
            "{kind:?}: {result:?}"
        );
        assert!(matches!(
            s.commit(&f).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(files_under(&dir.path().join("objects")).is_empty());
    }
}

/// A read error is an I/O error, not corruption: the file is kept (the disk may recover;
/// the auditor decides), and no byte is returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_error_is_reported_and_the_file_kept() {
    use nimbus_storage_node::io::Faults;
    let dir = tempfile::tempdir().unwrap();
    let f = id("kept", 1, 0);
    {
        let s = store(IoEngineKind::Portable, dir.path()).await;
        put(&s, &f, &data(9, 50_000)).await;
    }
    let faults = Faults {
        eio_on_read: true,
        ..Faults::default()
    };
    let e = Engine::with_faults(IoEngineKind::Auto, faulty_store_config(), faults).unwrap();
    let s = FragmentStore::open(dir.path(), e, config()).await.unwrap();
    assert!(matches!(
        s.read(&f, 0..10).await,
        Err(StoreError::Io { .. })
    ));
    assert_eq!(files_under(&dir.path().join("objects")).len(), 1);
    assert!(files_under(&dir.path().join("quarantine")).is_empty());
}
