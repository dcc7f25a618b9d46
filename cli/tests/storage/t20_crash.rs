//! Crash safety: SIGKILL a node in the middle of writes, many times, at random points, and
//! restart it. Every write that was acknowledged (a committed fragment, an applied index
//! entry) is there and verifies; no file under a final or pending name is partial or
//! unreadable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nimbus_core::fragment::{
    CRC_BYTES, FOOTER_BYTES, FragmentFooter, FragmentHeader, HEADER_BYTES, verify_block,
};

use crate::client::{Auth, fragment_url, send, signed, try_put_and_commit};
use crate::t30_index::{entry, shard_url};
use crate::{Node, files_under};

/// The URL and bytes of a fragment whose commit was acknowledged.
type Acked = (String, Vec<u8>);

/// Small deterministic generator, so a failure can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Reads a fragment file whole and checks every byte of it.
fn verify_file(path: &std::path::Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes.len() < (HEADER_BYTES + FOOTER_BYTES) as usize {
        return Err(format!("{} bytes", bytes.len()));
    }
    let header = FragmentHeader::decode(&bytes).map_err(|e| e.to_string())?;
    let footer = FragmentFooter::decode(&bytes[bytes.len() - FOOTER_BYTES as usize..])
        .map_err(|e| e.to_string())?;
    let layout = header.layout();
    if layout.file_bytes(footer.data_bytes) != bytes.len() as u64 {
        return Err("length does not match the footer".into());
    }
    let mut hasher = blake3::Hasher::new();
    for b in 0..layout.blocks(footer.data_bytes) {
        let at = layout.block_offset(b) as usize;
        let len = (layout.block_data_len(b, footer.data_bytes) + CRC_BYTES) as usize;
        hasher.update(verify_block(b, &bytes[at..at + len]).map_err(|e| e.to_string())?);
    }
    if *hasher.finalize().as_bytes() != footer.blake3 {
        return Err("blake3 mismatch".into());
    }
    Ok(())
}

/// SIGKILLs the node while `writers` still write to it (they hold it, so its process is
/// killed by pid), then stops and joins them.
fn kill_mid_write(node: Arc<Node>, stop: &AtomicBool, writers: Vec<std::thread::JoinHandle<()>>) {
    let status = std::process::Command::new("kill")
        .args(["-9", &node.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
}

#[test]
fn sigkill_mid_write_never_loses_an_acknowledged_fragment_nor_shows_a_partial_one() {
    let seed = std::env::var("NIMBUS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    let rounds: usize = std::env::var("NIMBUS_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    eprintln!("crash test seed {seed}, {rounds} rounds (NIMBUS_CRASH_SEED, NIMBUS_CRASH_ROUNDS)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    // (url, data) of every fragment whose commit was acknowledged
    let acknowledged: Arc<Mutex<Vec<Acked>>> = Arc::default();
    // (url, version) of every index entry whose write was acknowledged
    let indexed: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let mut next_version = 1u64;

    for round in 0..rounds {
        let node = Arc::new(Node::start(dir.path()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..4u64 {
            let (node, stop, acknowledged) = (
                Arc::clone(&node),
                Arc::clone(&stop),
                Arc::clone(&acknowledged),
            );
            let indexed = Arc::clone(&indexed);
            let mut wrng = Rng(seed ^ (round as u64) << 8 ^ w);
            let base = next_version + w * 100_000;
            writers.push(std::thread::spawn(move || {
                let mut version = base;
                while !stop.load(Ordering::Relaxed) {
                    version += 1;
                    let len = (wrng.next() % 400_000) as usize;
                    let data: Vec<u8> = (0..len).map(|_| wrng.next() as u8).collect();
                    let device = if version.is_multiple_of(2) {
                        "d0"
                    } else {
                        "d1"
                    };
                    let url = fragment_url(
                        device,
                        "ec4+2",
                        (version % 8) as u32,
                        version,
                        (w % 6) as u8,
                        &format!("AUTH_c/b/o{version}"),
                    );
                    // Once the node is killed, requests fail: only what was acknowledged counts.
                    if let Ok((201, 204)) = try_put_and_commit(&node, &url, &data) {
                        acknowledged.lock().unwrap().push((url, data));
                        // and its index entry, as a proxy writes it after the commits
                        let key = format!("o{version}");
                        let index_url = format!("{}?key={key}", shard_url(device, "crash"));
                        let e = entry(version, &format!("etag-{version}"));
                        let auth = Auth::Signed {
                            secret: &node.secret,
                            epoch: 1,
                            skew_secs: 0,
                        };
                        if let Ok(r) =
                            send(node.addr, "PUT", &index_url, &auth, &[], &e.encode(), None)
                            && r.status == 200
                        {
                            indexed.lock().unwrap().push((index_url, version));
                        }
                    }
                }
            }));
        }
        next_version += 1_000_000;
        std::thread::sleep(Duration::from_millis(150 + rng.next() % 600));
        kill_mid_write(node, &stop, writers);

        // Restarted: everything acknowledged reads back, byte for byte.
        let node = Node::start(dir.path());
        let acked = acknowledged.lock().unwrap().clone();
        for (url, data) in &acked {
            let r = signed(&node, "GET", url, &[], &[]);
            assert_eq!(
                r.status, 200,
                "round {round}: acknowledged {url} is gone (seed {seed})"
            );
            assert!(
                r.body == *data,
                "round {round}: {url} reads back different bytes (seed {seed})"
            );
        }
        for (url, version) in indexed.lock().unwrap().iter() {
            let r = signed(&node, "GET", url, &[], &[]);
            assert_eq!(
                r.status, 200,
                "round {round}: acknowledged index entry {url} is gone (seed {seed})"
            );
            let records = nimbus_core::index::decode_records(&r.body).unwrap();
            assert_eq!(
                records[0].entry,
                entry(*version, &format!("etag-{version}"))
            );
        }
        node.kill();
        // No file under a final or pending name is partial or unreadable.
        for device in ["d0", "d1"] {
            for file in files_under(&dir.path().join(device).join("objects")) {
                if let Err(e) = verify_file(&file) {
                    panic!(
                        "round {round}: {} is visible but broken: {e} (seed {seed})",
                        file.display()
                    );
                }
            }
        }
        eprintln!(
            "round {round}: {} fragments and {} index entries acknowledged so far, all intact",
            acked.len(),
            indexed.lock().unwrap().len()
        );
    }
    assert!(
        !indexed.lock().unwrap().is_empty(),
        "no index write was ever acknowledged"
    );
    assert!(
        !acknowledged.lock().unwrap().is_empty(),
        "no write was ever acknowledged"
    );
}

/// The sum over devices of a counter in the node's `/metrics`.
fn counter(node: &Node, name: &str) -> u64 {
    let r = signed(node, "GET", "/metrics", &[], &[]);
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn sigkill_mid_index_writes_never_loses_an_acknowledged_entry_logged_or_checkpointed() {
    let seed = std::env::var("NIMBUS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x10c_u64);
    eprintln!("index crash test seed {seed} (NIMBUS_CRASH_SEED)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    // A small log: batches go through it and checkpoints come every few dozen writes.
    let config = "[index]\nwal_bytes = 65536";
    // (url, last acknowledged version, last attempted version) per key
    type Written = std::collections::HashMap<String, (u64, u64)>;
    let written: Arc<Mutex<Written>> = Arc::default();
    let (mut logged, mut checkpoints) = (0, 0);
    for round in 0..6u64 {
        let node = Arc::new(Node::start_configured(dir.path(), None, config));
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..6u64 {
            let (node, stop, written) =
                (Arc::clone(&node), Arc::clone(&stop), Arc::clone(&written));
            writers.push(std::thread::spawn(move || {
                let device = if w % 2 == 0 { "d0" } else { "d1" };
                let mut version = (round << 40) | (w << 32);
                while !stop.load(Ordering::Relaxed) {
                    version += 1;
                    // each writer its own keys, overwritten again and again
                    let url = format!("{}?key=w{w}-{}", shard_url(device, "crash"), version % 40);
                    let data = vec![(version % 251) as u8; 3000];
                    let e = nimbus_core::index::IndexEntry {
                        size: data.len() as u64,
                        blake3: *blake3::hash(&data).as_bytes(),
                        data: nimbus_core::index::EntryData::Inline(data),
                        ..entry(version, &format!("etag-{version}"))
                    };
                    written
                        .lock()
                        .unwrap()
                        .entry(url.clone())
                        .or_insert((0, 0))
                        .1 = version;
                    let auth = Auth::Signed {
                        secret: &node.secret,
                        epoch: 1,
                        skew_secs: 0,
                    };
                    if let Ok(r) = send(node.addr, "PUT", &url, &auth, &[], &e.encode(), None)
                        && r.status == 200
                    {
                        written
                            .lock()
                            .unwrap()
                            .get_mut(&url)
                            .expect("noted above")
                            .0 = version;
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(300 + rng.next() % 600));
        logged += counter(&node, "nimbus_index_commits_total");
        checkpoints += counter(&node, "nimbus_index_checkpoints_total");
        kill_mid_write(node, &stop, writers);

        // Restarted: every key holds its last acknowledged write, or a later one that was
        // under way when the node died.
        let node = Node::start_configured(dir.path(), None, config);
        let written = written.lock().unwrap().clone();
        for (url, (acked, attempted)) in &written {
            let r = signed(&node, "GET", url, &[], &[]);
            if *acked == 0 {
                continue;
            }
            assert_eq!(
                r.status, 200,
                "round {round}: acknowledged {url} is gone (seed {seed})"
            );
            let records = nimbus_core::index::decode_records(&r.body).unwrap();
            let version = records[0].entry.version.0;
            assert!(
                (*acked..=*attempted).contains(&version),
                "round {round}: {url} holds version {version:#x}, acknowledged {acked:#x} (seed {seed})"
            );
        }
        node.kill();
        eprintln!("round {round}: {} keys intact", written.len());
    }
    eprintln!("{logged} batches made durable, {checkpoints} of them checkpoints");
    assert!(
        checkpoints > 0 && logged > checkpoints,
        "{logged} batches made durable, {checkpoints} of them checkpoints: both paths must run"
    );
}
