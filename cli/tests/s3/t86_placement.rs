//! `nimbus admin placement` and the nodes' `/metrics`: a healthy cluster reports 0
//! misplaced fragments and 0 partitions below full redundancy; a fragment moved by hand to a
//! device that does not own its slot is reported, the workers move it home, and the report
//! returns to 0 while the object reads back identical.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;

use crate::cluster::{Cluster, bytes, runtime};

/// Every committed fragment file under `dir`.
fn fragment_paths(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            fragment_paths(&path, out);
        } else if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && let Some((version, index)) = name.split_once('.')
            && version.len() == 16
            && index.parse::<u8>().is_ok()
        {
            out.push(path);
        }
    }
}

fn ureq_get(url: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sf", url])
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {url}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn placement_reports_a_misplaced_fragment_until_the_workers_move_it_home() {
    let cluster = Cluster::start();
    let rt = runtime();
    let data = bytes(3 << 20, 42);
    rt.block_on(async {
        let s3 = cluster.client();
        s3.create_bucket().bucket("place").send().await.unwrap();
        s3.put_object()
            .bucket("place")
            .key("obj")
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
    });
    assert_eq!(cluster.placement(), (0, 0), "a healthy cluster");
    let help = ureq_get(&format!(
        "http://127.0.0.1:{}/metrics",
        cluster.base_port + 1
    ));
    assert!(
        help.contains("# TYPE nimbus_worker_misplaced_fragments gauge"),
        "{help}"
    );
    assert!(
        help.contains("nimbus_audit_fragments_total{device=\"d0\"}"),
        "{help}"
    );

    // Move one fragment file to another node's device, as a handoff would have it.
    let mut files = Vec::new();
    fragment_paths(cluster.path(), &mut files);
    assert_eq!(
        files.len(),
        6,
        "ec4+2: six fragments of one object: {files:?}"
    );
    // Six fragments on six nodes, one device each: the other device of the node holding
    // `files[1]` owns no slot of this partition.
    let within = |f: &Path| f.strip_prefix(cluster.path()).unwrap().to_path_buf();
    let from = &files[0];
    let (node_a, node_b) = (within(from), within(&files[1]));
    let node_of = |p: &Path| p.components().next().unwrap().as_os_str().to_owned();
    assert_ne!(node_of(&node_a), node_of(&node_b), "one fragment per node");
    let device_b = node_b.components().nth(1).unwrap().as_os_str().to_owned();
    let stranger = cluster
        .path()
        .join(node_of(&node_b))
        .join(if device_b == "d0" { "d1" } else { "d0" });
    let relative: PathBuf = node_a.components().skip(2).collect();
    let to = stranger.join(&relative);
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::rename(from, &to).unwrap();
    let (misplaced, degraded) = cluster.placement();
    assert!(
        misplaced >= 1 && degraded >= 1,
        "after moving {from:?} to {to:?}: {misplaced} misplaced, {degraded} degraded"
    );

    // The workers (a pass every 3 s) move it home.
    let started = Instant::now();
    loop {
        let now = cluster.placement();
        if now == (0, 0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still {now:?} misplaced/degraded after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(from.exists(), "the fragment is back at {from:?}");
    assert!(!to.exists(), "and gone from {to:?}");
    let moved = cluster.metric("nimbus_worker_moved_fragments_total");
    assert_eq!(moved, 1, "one fragment moved, by the metrics");
    rt.block_on(async {
        let got = cluster
            .client()
            .get_object()
            .bucket("place")
            .key("obj")
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        assert!(
            got.as_ref() == data.as_slice(),
            "the object reads back identical"
        );
    });
}
