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
        // SIGKILL mid-write: the writers still hold the node, so kill its process by pid.
        let status = std::process::Command::new("kill")
            .args(["-9", &node.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            let _ = w.join();
        }
        drop(node);

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
