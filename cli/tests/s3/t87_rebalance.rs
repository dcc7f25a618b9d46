//! Growing and shrinking a running cluster: two storage nodes are added to the `ec4+2` ring
//! and the ring rebalanced while clients PUT and GET; then one of them is removed (drained by
//! rebalances, then stopped). Throughout, no client request fails; afterwards every object
//! reads back identical and `nimbus admin placement` reports nothing misplaced.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::cluster::{Cluster, bytes, runtime};

/// A storage node the test added, stopped when dropped.
struct ExtraNode(Child);

impl Drop for ExtraNode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts storage node `i` (7, 8, …) beside the dev cluster's six, configured as node 6
/// is (node 6 hosts no metadata member), and waits until it listens.
fn start_node(cluster: &Cluster, i: u16) -> ExtraNode {
    let template = std::fs::read_to_string(cluster.path().join("node6/storage.toml")).unwrap();
    let dir = cluster.path().join(format!("node{i}"));
    for device in ["d0", "d1"] {
        std::fs::create_dir_all(dir.join(device)).unwrap();
    }
    let text = template.replace("node6", &format!("node{i}")).replace(
        &format!("127.0.0.1:{}", cluster.base_port + 6),
        &format!("127.0.0.1:{}", cluster.base_port + i),
    );
    let config = dir.join("storage.toml");
    std::fs::write(&config, text).unwrap();
    let log = std::fs::File::create(dir.join("storage.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .arg("storage")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let node = ExtraNode(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", cluster.base_port + i)).is_err() {
        assert!(Instant::now() < deadline, "node {i} did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    node
}

fn location(cluster: &Cluster, i: u16, device: &str) -> String {
    format!("r1z{i}-127.0.0.1:{}/{device}", cluster.base_port + i)
}

/// The ids of the `ec4+2` ring's devices on node `i`.
fn device_ids(cluster: &Cluster, i: u16) -> Vec<String> {
    let ring: Value =
        serde_json::from_str(&cluster.admin(&["--json", "ring", "show", "ec4+2"])).unwrap();
    let needle = format!("127.0.0.1:{}/", cluster.base_port + i);
    ring["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["location"].as_str().unwrap_or_default().contains(&needle))
        .map(|d| d["id"].to_string())
        .collect()
}

/// Waits until the placement report shows nothing misplaced — and, when no client is
/// writing (`quiet`), no partition below full redundancy (under load, a PUT under way
/// leaves its partition's slots briefly different) — rebalancing again if `rebalance` (a
/// rebalance moves at most `m` slots of a partition).
fn settle(cluster: &Cluster, rebalance: bool, quiet: bool, what: &str) {
    let started = Instant::now();
    loop {
        if rebalance {
            let _ = cluster.admin_status(&["ring", "rebalance", "ec4+2"]);
        }
        let now = cluster.placement();
        if now.0 == 0 && (now.1 == 0 || !quiet) {
            eprintln!("{what}: placement settled in {:?}", started.elapsed());
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "{what}: still {now:?} misplaced/degraded after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Fragment files under `dir`.
fn fragment_count(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                fragment_count(&path)
            } else {
                usize::from(
                    path.extension()
                        .is_some_and(|x| x.to_str().is_some_and(|x| x.parse::<u8>().is_ok())),
                )
            }
        })
        .sum()
}

/// Clients PUTting new keys and GETting known ones until told to stop; every failure is
/// kept.
struct Load {
    stop: Arc<AtomicBool>,
    errors: Arc<Mutex<Vec<String>>>,
    ops: Arc<AtomicU64>,
    objects: Arc<Mutex<Vec<(String, u64)>>>,
}

impl Load {
    fn start(rt: &tokio::runtime::Runtime, s3: &Client, objects: Vec<(String, u64)>) -> Load {
        let load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            errors: Arc::new(Mutex::new(Vec::new())),
            ops: Arc::new(AtomicU64::new(0)),
            objects: Arc::new(Mutex::new(objects)),
        };
        for worker in 0..2u64 {
            let (stop, errors, ops, objects, s3) = (
                Arc::clone(&load.stop),
                Arc::clone(&load.errors),
                Arc::clone(&load.ops),
                Arc::clone(&load.objects),
                s3.clone(),
            );
            rt.spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let seed = 1_000_000 * (worker + 1) + n;
                    let key = format!("load/{worker}/{n}");
                    let put = s3
                        .put_object()
                        .bucket("grow")
                        .key(&key)
                        .body(ByteStream::from(bytes(600_000, seed)))
                        .send()
                        .await;
                    match put {
                        Ok(_) => objects.lock().await.push((key, seed)),
                        Err(e) => errors.lock().await.push(format!("PUT {key}: {e:?}")),
                    }
                    let pick = {
                        let all = objects.lock().await;
                        all[(n as usize * 7919) % all.len()].clone()
                    };
                    match get(&s3, &pick.0).await {
                        Ok(body) if body == bytes(600_000, pick.1) => {}
                        Ok(_) => errors
                            .lock()
                            .await
                            .push(format!("GET {}: wrong bytes", pick.0)),
                        Err(e) => errors.lock().await.push(format!("GET {}: {e}", pick.0)),
                    }
                    ops.fetch_add(2, Ordering::Relaxed);
                }
            });
        }
        load
    }

    async fn stop(&self) -> Vec<(String, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let errors = self.errors.lock().await;
        assert!(errors.is_empty(), "client errors: {errors:#?}");
        self.objects.lock().await.clone()
    }
}

async fn get(s3: &Client, key: &str) -> Result<Vec<u8>, String> {
    let out = s3
        .get_object()
        .bucket("grow")
        .key(key)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(out
        .body
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .into_bytes()
        .to_vec())
}

#[test]
fn adding_then_removing_nodes_under_load_loses_nothing() {
    let cluster = Cluster::start();
    let rt = runtime();
    let s3 = cluster.client();
    let objects: Vec<(String, u64)> = rt.block_on(async {
        s3.create_bucket().bucket("grow").send().await.unwrap();
        let mut objects = Vec::new();
        for i in 0..40u64 {
            let key = format!("base/{i}");
            s3.put_object()
                .bucket("grow")
                .key(&key)
                .body(ByteStream::from(bytes(600_000, i)))
                .send()
                .await
                .unwrap();
            objects.push((key, i));
        }
        objects
    });
    let _seven = start_node(&cluster, 7);
    let eight = start_node(&cluster, 8);
    let load = Load::start(&rt, &s3, objects);

    // Grow: the new devices join the ring; the workers move slots to them.
    for i in [7, 8] {
        for device in ["d0", "d1"] {
            cluster.admin(&[
                "device",
                "add",
                "ec4+2",
                &location(&cluster, i, device),
                "1",
            ]);
        }
    }
    settle(&cluster, true, false, "after adding nodes 7 and 8");
    assert!(
        fragment_count(&cluster.path().join("node8")) > 0,
        "node 8 was given fragments"
    );

    // Shrink: node 8's devices are removed; rebalances drain them; then it stops.
    for id in device_ids(&cluster, 8) {
        cluster.admin(&["device", "remove", "ec4+2", &id]);
    }
    settle(&cluster, true, false, "after removing node 8");
    let started = Instant::now();
    while fragment_count(&cluster.path().join("node8")) > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "node 8 still holds fragments"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(eight);

    let objects = rt.block_on(load.stop());
    eprintln!(
        "{} requests under load, {} objects",
        load.ops.load(Ordering::Relaxed),
        objects.len()
    );
    rt.block_on(async {
        for (key, seed) in &objects {
            let body = get(&s3, key)
                .await
                .unwrap_or_else(|e| panic!("GET {key}: {e}"));
            assert!(body == bytes(600_000, *seed), "{key} changed");
        }
    });
    settle(&cluster, false, true, "at the end");
}
