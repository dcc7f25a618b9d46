//! The auditor: a byte flipped in a committed fragment is found by the next pass over the
//! device, the file quarantined and counted; the healthy fragments stay and read.

use std::time::{Duration, Instant};

use crate::client::{Auth, fragment_url, put_and_commit, send, signed};
use crate::{Node, files_under};

/// The audit counters of device `name` from the node's `/health`.
fn audit(node: &Node, name: &str) -> serde_json::Value {
    let r = send(node.addr, "GET", "/health", &Auth::None, &[], &[], None).unwrap();
    assert_eq!(r.status, 200);
    let health: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    health["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap()["audit"]
        .clone()
}

#[test]
fn the_auditor_quarantines_a_flipped_byte_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_configured(
        dir.path(),
        None,
        "[audit]\nbytes_per_sec = 104857600\ncycle_pause_secs = 1",
    );
    let urls: Vec<String> = (0..3)
        .map(|i| fragment_url("d1", "rep3", 7, 100 + i, 0, &format!("AUTH_t/c/o{i}")))
        .collect();
    for (i, url) in urls.iter().enumerate() {
        let body: Vec<u8> = (0..300_000u32).map(|j| (j as u8) ^ (i as u8)).collect();
        assert_eq!(put_and_commit(&node, url, &body), (201, 204));
    }
    // Wait for a clean pass over all three, so that the flip below is found by a later one.
    let deadline = Instant::now() + Duration::from_secs(60);
    while audit(&node, "d1")["fragments"].as_u64().unwrap() < 3 {
        assert!(
            Instant::now() < deadline,
            "the fragments were not audited within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(audit(&node, "d1")["corrupt"], 0);
    assert!(audit(&node, "d1")["bytes"].as_u64().unwrap() >= 3 * 300_000);

    let mut files = files_under(&dir.path().join("d1/objects"));
    files.sort();
    let victim = files[1].clone();
    let mut raw = std::fs::read(&victim).unwrap();
    raw[4096 + 123_456] ^= 0x01; // inside a data block
    std::fs::write(&victim, raw).unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    while audit(&node, "d1")["corrupt"].as_u64().unwrap() < 1 {
        assert!(
            Instant::now() < deadline,
            "the flip was not found within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(std::fs::metadata(&victim).is_err(), "quarantined");
    assert_eq!(files_under(&dir.path().join("d1/quarantine")).len(), 1);
    let healthy: usize = urls
        .iter()
        .filter(|url| signed(&node, "GET", url, &[], &[]).status == 200)
        .count();
    assert_eq!(healthy, 2, "the other fragments still read");
    assert_eq!(audit(&node, "d0")["corrupt"], 0);
}
