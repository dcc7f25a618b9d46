//! Read leases (storage node's `lease`): a shard's primary answers reads alone only while the
//! metadata leader confirms its epoch. Here the primary's heartbeats go through a forwarder
//! the test cuts: the primary stops answering alone within its lease, the leader marks it
//! down, a new primary takes the next write, and a read sent to the old primary under the
//! old epoch (as a proxy with a stale map would send it) is not answered alone.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;

use crate::cluster::{Cluster, bytes, index_shard, runtime, wait_for};
use crate::load::get;

/// A TCP forwarder to one address that the test can cut: open connections are shut and new
/// ones closed at once.
struct Forwarder {
    addr: String,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Forwarder {
    fn start(to: String) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (cut2, open2) = (Arc::clone(&cut), Arc::clone(&open));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&to) else {
                    continue;
                };
                let mut kept = open2.lock().unwrap();
                for s in [&client, &server] {
                    kept.push(s.try_clone().unwrap());
                }
                drop(kept);
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || into.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = into.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Forwarder { addr, cut, open }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// The cluster map's epoch, as metadata member 1 has it.
fn epoch(cluster: &Cluster) -> u64 {
    let map: serde_json::Value =
        serde_json::from_str(&cluster.admin(&["--json", "map", "show"])).unwrap();
    map["epoch"].as_u64().unwrap()
}

/// Sends node `i` a signed read of `path` under `epoch` that asks for a lease, naming
/// `replicas`; returns the status and whether the answer came under the lease.
fn leased_get(cluster: &Cluster, i: u16, path: &str, epoch: u64, replicas: &str) -> (u16, bool) {
    let secret = nimbus_core::auth::ClusterSecret::from_hex(
        &std::fs::read_to_string(cluster.path().join("cluster-secret")).unwrap(),
    )
    .unwrap();
    let date = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-D", "-", "--max-time", "10"])
        .arg("-H")
        .arg(format!(
            "authorization: {}",
            secret.sign("GET", path, date, epoch)
        ))
        .arg("-H")
        .arg(format!("{}: {date}", nimbus_core::auth::DATE_HEADER))
        .arg("-H")
        .arg(format!("{}: {epoch}", nimbus_core::auth::EPOCH_HEADER))
        .arg("-H")
        .arg(format!("{}: 1", nimbus_storage_node::api::LEASE_READ))
        .arg("-H")
        .arg(format!("x-nimbus-replicas: {replicas}"))
        .arg(format!("http://127.0.0.1:{}{path}", cluster.base_port + i))
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let leased = head
        .lines()
        .any(|l| l.starts_with(&format!("{}:", nimbus_storage_node::api::LEASED)));
    (status, leased)
}

#[test]
fn a_primary_cut_off_from_the_leader_stops_answering_alone_before_another_takes_writes() {
    let cluster = Cluster::start();
    let rt = runtime();
    let s3 = cluster.client();
    let key = "leased";
    let (v1, v2) = (bytes(2_000, 1), bytes(2_000, 2));
    let (owner, shard, slots) = rt.block_on(async {
        s3.create_bucket().bucket("leases").send().await.unwrap();
        s3.put_object()
            .bucket("leases")
            .key(key)
            .body(ByteStream::from(v1.clone()))
            .send()
            .await
            .unwrap();
        index_shard(&cluster, "leases", key).await
    });
    let (primary, device) = slots[0].clone();
    let path = format!("/v1/index/{device}/{owner}/leases/{shard}?key={key}");
    let replicas = slots
        .iter()
        .map(|(n, d)| format!("127.0.0.1:{}/{d}", cluster.base_port + n))
        .collect::<Vec<_>>()
        .join(",");

    // The primary's heartbeats (and its workers' map reads) through forwarders.
    let config = cluster
        .path()
        .join(format!("node{primary}"))
        .join("storage.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let forwarders: Vec<Forwarder> = (1..=5)
        .map(|m| Forwarder::start(format!("127.0.0.1:{}", cluster.base_port + 100 + m)))
        .collect();
    let members = forwarders
        .iter()
        .map(|f| format!("\"{}\"", f.addr))
        .collect::<Vec<_>>()
        .join(", ");
    let (head, tail) = text.split_once("[heartbeat]\nmembers = [").unwrap();
    let (_, rest) = tail.split_once(']').unwrap();
    std::fs::write(
        &config,
        format!("{head}[heartbeat]\nmembers = [{members}]{rest}"),
    )
    .unwrap();
    cluster.detach_supervisor();
    cluster.kill_node(usize::from(primary));
    cluster.restart_node(usize::from(primary));

    // Before the cut: it answers alone (so the checks below can fail).
    let before = epoch(&cluster);
    wait_for(
        Duration::from_secs(20),
        "a leased read before the cut",
        || leased_get(&cluster, primary, &path, before, &replicas) == (200, true),
    );

    for f in &forwarders {
        f.cut();
    }
    let cut = Instant::now();
    // Within its lease (2 s from its last heartbeat's sending) it stops answering alone.
    let lapsed = wait_for(Duration::from_secs(10), "the lease lapsing", || {
        !leased_get(&cluster, primary, &path, before, &replicas).1
    });
    eprintln!("lease lapsed {lapsed:?} after the cut");
    // The leader marks its devices down (no heartbeats for 15 s): a new epoch.
    wait_for(Duration::from_secs(60), "a new epoch", || {
        epoch(&cluster) > before
    });
    eprintln!("new epoch {:?} after the cut", cut.elapsed());
    rt.block_on(async {
        s3.put_object()
            .bucket("leases")
            .key(key)
            .body(ByteStream::from(v2.clone()))
            .send()
            .await
            .unwrap();
    });
    // A proxy still on the old map asks the old primary: no answer under the lease (a
    // majority read then finds the new write).
    let (status, leased) = leased_get(&cluster, primary, &path, before, &replicas);
    assert!(
        !leased,
        "the old primary answered alone ({status}) after another took a write"
    );
    assert!(rt.block_on(get(&s3, "leases", key)).unwrap() == v2);
}
