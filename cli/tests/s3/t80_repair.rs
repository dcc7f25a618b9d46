//! The mover and the reconstructor on a live cluster: a wiped device gets every fragment
//! back (erasure-coded ones reconstructed, replicated ones copied), fragments written to
//! handoffs while a node was down go home once it is back, and a fragment the auditor
//! quarantined is rebuilt byte for byte; objects read back identical throughout.
//!
//! `NIMBUS_T80_LOAD_MIB` (default 24) sets how many MiB the wiped-device test loads; it
//! prints the rebuild rate it saw (the figure in `storage-node/README.md`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;

use crate::cluster::{Cluster, bytes, check_all, runtime, wait_for};
use crate::swift_http::{Swift, curl};

const BUCKET: &str = "repair";
/// Fragments per object (the dev cluster's default policy, ec4+2).
const FRAGMENTS: usize = 6;

/// The `workers` counters of every device of node `i`, by device name.
fn workers(cluster: &Cluster, i: usize) -> BTreeMap<String, serde_json::Value> {
    device_reports(cluster, i, "workers")
}

fn device_reports(cluster: &Cluster, i: usize, what: &str) -> BTreeMap<String, serde_json::Value> {
    let url = format!("http://127.0.0.1:{}/health", cluster.base_port + i as u16);
    let (status, _, body) = curl(&[&url]);
    if status != 200 {
        return BTreeMap::new(); // a node restarting
    }
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    health["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["name"].as_str().unwrap().to_owned(), d[what].clone()))
        .collect()
}

/// Sums counter `name` over every device of every node.
fn total(cluster: &Cluster, name: &str) -> u64 {
    (1..=6)
        .flat_map(|i| workers(cluster, i).into_values())
        .map(|w| w[name].as_u64().unwrap_or(0))
        .sum()
}

/// Committed fragment files under `dir` (recursively).
fn committed_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                dirs.push(path);
            } else if !path.to_string_lossy().ends_with(".pending") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The `objects/` directory of device `device` of node `i`.
fn objects_dir(cluster: &Cluster, i: usize, device: &str) -> PathBuf {
    cluster
        .path()
        .join(format!("node{i}"))
        .join(device)
        .join("objects")
}

/// Every committed fragment file of the cluster: (node, device, path below `objects/`).
fn all_fragments(cluster: &Cluster) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for i in 1..=6 {
        for device in ["d0", "d1"] {
            let root = objects_dir(cluster, i, device);
            for path in committed_under(&root) {
                let rel = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((i, device.to_owned(), rel));
            }
        }
    }
    out
}

/// Checks that every object version has each of its fragments exactly once in the cluster.
fn assert_each_fragment_once(cluster: &Cluster, versions: usize) {
    assert_each_fragment_once_of(cluster, versions, FRAGMENTS);
}

/// As [`assert_each_fragment_once`], for a policy of `fragments` per version.
fn assert_each_fragment_once_of(cluster: &Cluster, versions: usize, fragments: usize) {
    let all = all_fragments(cluster);
    let mut seen: BTreeMap<&str, Vec<(usize, &str)>> = BTreeMap::new();
    for (node, device, rel) in &all {
        seen.entry(rel).or_default().push((*node, device));
    }
    let doubles: Vec<_> = seen.iter().filter(|(_, at)| at.len() > 1).collect();
    assert!(doubles.is_empty(), "fragments held twice: {doubles:?}");
    assert_eq!(all.len(), versions * fragments, "fragments in the cluster");
}

/// PUTs `count` objects named `prefix-N` of about `size` bytes; returns (key, bytes).
async fn load(
    s3: &aws_sdk_s3::Client,
    prefix: &str,
    count: usize,
    size: usize,
) -> Vec<(String, Vec<u8>)> {
    let mut objects = Vec::new();
    for n in 0..count {
        let key = format!("{prefix}-{n}");
        let data = bytes(size + n * 4099, n as u64 + prefix.len() as u64 * 1000);
        s3.put_object()
            .bucket(BUCKET)
            .key(&key)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {key}: {e:?}"));
        objects.push((key, data));
    }
    objects
}

#[test]
fn a_wiped_device_gets_every_fragment_back() {
    let mib: usize = std::env::var("NIMBUS_T80_LOAD_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let cluster = Cluster::start_with(&["--gc-grace-secs", "3600"]);
    let s3 = cluster.client();
    let rt = runtime();
    let objects = rt.block_on(async {
        s3.create_bucket().bucket(BUCKET).send().await.unwrap();
        load(&s3, "wipe", mib, 1 << 20).await
    });
    let victim = objects_dir(&cluster, 1, "d0");
    let before = committed_under(&victim);
    assert!(!before.is_empty(), "node1/d0 holds fragments");
    let held = all_fragments(&cluster).len();
    assert_eq!(held, objects.len() * FRAGMENTS);
    let idle = workers(&cluster, 1)["d0"].clone();
    let rebuilt_before = idle["rebuilt_bytes"].as_u64().unwrap();
    println!(
        "node1/d0 before the wipe: {} passes, the last of {} s",
        idle["passes"], idle["last_pass_secs"]
    );

    // A replaced disk: the objects tree is gone while the node runs.
    std::fs::remove_dir_all(&victim).unwrap();
    let wiped = Instant::now();
    let mut first_byte = None;
    let limit = Duration::from_secs(45 + mib as u64 / 2);
    let took = wait_for(limit, "every fragment rebuilt", || {
        let rebuilt = workers(&cluster, 1)
            .get("d0")
            .and_then(|w| w["rebuilt_bytes"].as_u64())
            .unwrap_or(0);
        if rebuilt > rebuilt_before && first_byte.is_none() {
            first_byte = Some(wiped.elapsed());
        }
        committed_under(&victim) == before
    });
    let report = workers(&cluster, 1)["d0"].clone();
    let fragments = report["rebuilt_fragments"].as_u64().unwrap();
    let rebuilt_bytes = report["rebuilt_bytes"].as_u64().unwrap() - rebuilt_before;
    assert!(fragments >= before.len() as u64, "counted: {report}");
    let busy = took
        .saturating_sub(first_byte.unwrap_or_default())
        .as_secs_f64();
    println!(
        "rebuilt {} fragments, {:.1} MiB in {:.1} s after the wipe ({:.1} s from the first rebuilt \
         byte): {:.1} MiB/s",
        before.len(),
        rebuilt_bytes as f64 / f64::from(1 << 20),
        took.as_secs_f64(),
        busy,
        rebuilt_bytes as f64 / f64::from(1 << 20) / busy.max(0.1)
    );
    assert_each_fragment_once(&cluster, objects.len());
    rt.block_on(check_all(&s3, BUCKET, &objects));
}

#[test]
fn fragments_written_to_handoffs_go_home() {
    let cluster = Cluster::start_with(&["--gc-grace-secs", "3600"]);
    let s3 = cluster.client();
    let rt = runtime();
    let mut objects = rt.block_on(async {
        s3.create_bucket().bucket(BUCKET).send().await.unwrap();
        load(&s3, "before", 4, 300_000).await
    });
    cluster.detach_supervisor();
    cluster.kill_node(6);
    // Node 6's slots fail at once (the map still has it up): its fragments go to handoffs.
    objects.extend(rt.block_on(load(&s3, "during", 12, 300_000)));
    let on_node6 = |c: &Cluster| {
        all_fragments(c)
            .iter()
            .filter(|(node, _, _)| *node == 6)
            .count()
    };
    let held_by_6 = on_node6(&cluster);
    cluster.restart_node(6);

    // Home again: node 6 holds its share again, no fragment is held twice, and a pass that
    // ran after the moves found nothing misplaced anywhere.
    wait_for(
        Duration::from_secs(45),
        "handoff fragments moved home",
        || {
            all_fragments(&cluster).len() == objects.len() * FRAGMENTS
                && on_node6(&cluster) > held_by_6
        },
    );
    // Two more passes on every device: the second started after the first ended.
    let passes = |c: &Cluster| -> Vec<u64> {
        (1..=6)
            .flat_map(|i| workers(c, i).into_values())
            .map(|w| w["passes"].as_u64().unwrap_or(0))
            .collect()
    };
    let then = passes(&cluster);
    assert_eq!(then.len(), 12, "every device reports");
    wait_for(Duration::from_secs(40), "a clean pass everywhere", || {
        let now = passes(&cluster);
        now.len() == 12
            && now.iter().zip(&then).all(|(n, t)| *n >= t + 2)
            && (1..=6).all(|i| workers(&cluster, i).values().all(|w| w["misplaced"] == 0))
    });
    assert!(
        total(&cluster, "moved_fragments") > 0,
        "handoff fragments counted as moved"
    );
    assert_each_fragment_once(&cluster, objects.len());
    rt.block_on(check_all(&s3, BUCKET, &objects));
}

#[test]
fn a_flipped_byte_is_quarantined_and_rebuilt_identical() {
    let cluster = Cluster::start_with(&["--gc-grace-secs", "3600"]);
    let s3 = cluster.client();
    let rt = runtime();
    let objects = rt.block_on(async {
        s3.create_bucket().bucket(BUCKET).send().await.unwrap();
        load(&s3, "flip", 4, 400_000).await
    });
    // The first device holding a fragment, from node 3 on (4 objects leave a device empty
    // one time in 16).
    let (node, device, victim) = [3, 4, 5, 6, 2]
        .into_iter()
        .flat_map(|i| ["d1", "d0"].map(|d| (i, d)))
        .find_map(|(i, d)| {
            let files = committed_under(&objects_dir(&cluster, i, d));
            files.first().map(|f| (i, d, f.clone()))
        })
        .expect("a device holds fragments");
    let original = std::fs::read(&victim).unwrap();
    let mut flipped = original.clone();
    flipped[4096 + 1000] ^= 0x01; // inside the first data block
    std::fs::write(&victim, &flipped).unwrap();

    // The auditor reads every fragment once when the node starts.
    cluster.detach_supervisor();
    cluster.kill_node(node);
    cluster.restart_node(node);
    wait_for(Duration::from_secs(45), "the flip quarantined", || {
        device_reports(&cluster, node, "audit")
            .get(device)
            .is_some_and(|a| a["corrupt"] == 1)
    });
    wait_for(Duration::from_secs(45), "the fragment rebuilt", || {
        std::fs::read(&victim).is_ok_and(|now| now == original)
    });
    assert!(
        workers(&cluster, node)[device]["rebuilt_fragments"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert_each_fragment_once(&cluster, objects.len());
    rt.block_on(check_all(&s3, BUCKET, &objects));
}

#[test]
fn a_wiped_device_gets_its_replicated_fragments_back() {
    let cluster = Cluster::start_with(&["--gc-grace-secs", "3600"]);
    let swift = Swift::login(&cluster);
    let (status, _, _) = swift.call("PUT", "rep", &["-H", "X-Storage-Policy: rep3"]);
    assert!(matches!(status, 201 | 202), "container: {status}");
    let dir = tempfile::tempdir().unwrap();
    let mut objects = Vec::new();
    for n in 0..12 {
        let data = bytes(200_000 + n * 4099, 700 + n as u64);
        let file = dir.path().join(format!("o{n}"));
        std::fs::write(&file, &data).unwrap();
        let body = format!("@{}", file.display());
        let (status, _, _) = swift.call("PUT", &format!("rep/o{n}"), &["--data-binary", &body]);
        assert_eq!(status, 201, "PUT rep/o{n}");
        objects.push((format!("rep/o{n}"), data));
    }
    let (node, device) = (1..=6)
        .flat_map(|i| ["d0", "d1"].map(|d| (i, d)))
        .find(|(i, d)| !committed_under(&objects_dir(&cluster, *i, d).join("rep3")).is_empty())
        .expect("a device holds rep3 fragments");
    let victim = objects_dir(&cluster, node, device);
    let before = committed_under(&victim);
    std::fs::remove_dir_all(&victim).unwrap();
    wait_for(Duration::from_secs(45), "every copy rebuilt", || {
        committed_under(&victim) == before
    });
    assert!(
        workers(&cluster, node)[device]["rebuilt_fragments"]
            .as_u64()
            .unwrap()
            >= before.len() as u64
    );
    assert_each_fragment_once_of(&cluster, objects.len(), 3);
    for (path, data) in &objects {
        let (status, _, body) = swift.call("GET", path, &[]);
        assert_eq!(status, 200, "GET {path}");
        assert!(body == *data, "{path} differs");
    }
}
