//! The metadata group hosted by storage-node processes: kill -9 the Raft leader during a
//! stream of bucket creates; no acknowledged create is lost, none is applied twice, and the
//! killed member catches up when it returns.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nimbus_ring::map::ClusterMap;
use serde_json::{Value, json};

use crate::Node;
use crate::client::{Auth, send};

/// Sends a signed JSON request to a metadata member.
fn call(
    node: &Node,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &Value,
) -> std::io::Result<(u16, Value)> {
    let auth = Auth::Signed {
        secret: &node.secret,
        epoch: 0,
        skew_secs: 0,
    };
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(body).unwrap()
    };
    let extra = [("content-type", "application/json".to_owned())];
    let r = send(addr, method, path, &auth, &extra, &bytes, None)?;
    let value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    Ok((r.status, value))
}

/// Writes a map command through any live member, following leader hints and retrying
/// while a leader is elected. Returns the committed response, or an error when the outcome
/// is unknown.
fn write(nodes: &[Option<Node>], command: &Value) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let live: Vec<&Node> = nodes.iter().flatten().collect();
    let mut target = live[0].meta_addr.unwrap();
    while Instant::now() < deadline {
        match call(live[0], target, "POST", "/meta/write", command) {
            Ok((200, v)) => return Ok(v),
            Ok((421, v)) => {
                if let Some(addr) = v["leader_addr"].as_str().and_then(|a| a.parse().ok()) {
                    target = addr;
                    continue;
                }
            }
            Ok((503, v)) if v["error"] == "no_leader" => {}
            Ok((status, v)) => return Err(format!("{status}: {v}")),
            Err(_) => {}
        }
        // the member is down or has no leader yet: try another one
        std::thread::sleep(Duration::from_millis(100));
        let i = live
            .iter()
            .position(|n| n.meta_addr == Some(target))
            .map_or(0, |i| i + 1);
        target = live[i % live.len()].meta_addr.unwrap();
    }
    Err("no leader within 20 s".into())
}

fn map_of(node: &Node) -> ClusterMap {
    let auth = Auth::Signed {
        secret: &node.secret,
        epoch: 0,
        skew_secs: 0,
    };
    let r = send(
        node.meta_addr.unwrap(),
        "GET",
        "/meta/map",
        &auth,
        &[],
        &[],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 200);
    ClusterMap::decode(&r.body).unwrap()
}

#[test]
fn killing_the_metadata_leader_loses_no_acknowledged_bucket_create() {
    let (dirs, ports, mut nodes) = start_group(3);

    let policy = json!({"command": "create_policy", "spec": "rep3", "part_power": 4, "min_part_hours": 0,
        "seed": 1, "hash_key": vec![7u8; 32], "make_default": true});
    write(&nodes, &policy).unwrap();
    write(
        &nodes,
        &json!({"command": "create_account", "name": "AUTH_a", "now_ms": 1}),
    )
    .unwrap();
    let base = map_of(nodes[0].as_ref().unwrap()).version();

    let mut acknowledged = BTreeSet::new();
    let mut attempted = BTreeSet::new();
    let mut killed = None;
    for i in 0..60 {
        let name = format!("bucket-{i:03}");
        attempted.insert(name.clone());
        let create = json!({"command": "create_bucket", "name": name, "owner": "AUTH_a",
            "policy": null, "shards": null, "now_ms": 2});
        match write(&nodes, &create) {
            Ok(v) if v.get("Ok").is_some() => {
                acknowledged.insert(name);
            }
            // a retry of a create whose first attempt landed
            Ok(v) if v["Err"]["error"] == "bucket_exists" => {
                acknowledged.insert(name);
            }
            Ok(v) => panic!("{name}: refused: {v}"),
            Err(e) => eprintln!("{name}: outcome unknown: {e}"),
        }
        if i == 20 {
            // find the leader through a follower's hint, and kill -9 it
            let probe = json!({"command": "delete_bucket", "name": "no-such-bucket"});
            let live = nodes.iter().flatten().next().unwrap();
            let mut leader = None;
            for n in nodes.iter().flatten() {
                if let Ok((421, v)) =
                    call(live, n.meta_addr.unwrap(), "POST", "/meta/write", &probe)
                {
                    leader = v["leader_addr"].as_str().map(str::to_owned);
                    break;
                }
            }
            let leader = leader.expect("a follower knows the leader");
            let index = nodes
                .iter()
                .position(|n| {
                    n.as_ref()
                        .is_some_and(|n| n.meta_addr.unwrap().to_string() == leader)
                })
                .unwrap();
            nodes[index].take().unwrap().kill();
            killed = Some(index);
            let killed_at = Instant::now();
            let probe =
                json!({"command": "create_account", "name": "AUTH_after_kill", "now_ms": 3});
            write(&nodes, &probe).unwrap();
            eprintln!(
                "killed the leader (member {}); next commit {} ms later",
                index + 1,
                killed_at.elapsed().as_millis()
            );
        }
    }
    let killed = killed.unwrap();
    assert!(
        acknowledged.len() >= 50,
        "only {} creates acknowledged",
        acknowledged.len()
    );

    // The survivors' local maps may trail the leader's commit by a moment: wait for them
    // to agree, then check.
    let deadline = Instant::now() + Duration::from_secs(20);
    let map = loop {
        let maps: Vec<ClusterMap> = nodes.iter().flatten().map(map_of).collect();
        if maps.windows(2).all(|w| w[0].encode() == w[1].encode())
            && maps[0].version() > base + acknowledged.len() as u64
        {
            break maps.into_iter().next().unwrap();
        }
        assert!(Instant::now() < deadline, "the survivors did not converge");
        std::thread::sleep(Duration::from_millis(50));
    };
    let buckets: BTreeSet<String> = map
        .buckets_of("AUTH_a")
        .map(|(n, _)| n.to_owned())
        .collect();
    for name in &acknowledged {
        assert!(buckets.contains(name), "acknowledged {name} is lost");
    }
    assert!(buckets.is_subset(&attempted));
    // each create applied once: the map's version counts one change per bucket (and the
    // one account created right after the kill)
    assert_eq!(map.version(), base + buckets.len() as u64 + 1);

    // the killed member comes back and catches up from its files and the leader
    nodes[killed] = Some(Node::start_with(
        dirs[killed].path(),
        Some((killed as u64 + 1, ports[killed])),
    ));
    let back = nodes[killed].as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while map_of(back).encode() != map.encode() {
        assert!(
            Instant::now() < deadline,
            "the restarted member did not catch up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `n` nodes hosting members `1..=n` on fixed ports and initializes the group.
fn start_group(n: usize) -> (Vec<tempfile::TempDir>, Vec<u16>, Vec<Option<Node>>) {
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..n)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let nodes: Vec<Option<Node>> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| Some(Node::start_with(d.path(), Some((i as u64 + 1, ports[i])))))
        .collect();
    let members: serde_json::Map<String, Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                (i + 1).to_string(),
                json!(n.as_ref().unwrap().meta_addr.unwrap().to_string()),
            )
        })
        .collect();
    let first = nodes[0].as_ref().unwrap();
    let (status, body) = call(
        first,
        first.meta_addr.unwrap(),
        "POST",
        "/meta/init",
        &json!({ "members": members }),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    (dirs, ports, nodes)
}

fn account(name: &str) -> Value {
    json!({"command": "create_account", "name": name, "now_ms": 1})
}

#[test]
fn five_voters_commit_with_any_two_killed_and_all_restart_to_the_same_map() {
    let (dirs, ports, mut nodes) = start_group(5);
    for i in 0..10 {
        write(&nodes, &account(&format!("AUTH_{i}"))).unwrap();
    }
    // kill -9 two members at once (the first two: the leader among them or not)
    for i in [0, 1] {
        nodes[i].take().unwrap().kill();
    }
    for i in 10..20 {
        write(&nodes, &account(&format!("AUTH_{i}"))).unwrap();
    }
    wait_converged(&nodes, 20);

    // every process stops; all restart from their files and agree on the same map
    for n in &mut nodes {
        if let Some(n) = n.take() {
            n.kill();
        }
    }
    let nodes: Vec<Option<Node>> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| Some(Node::start_with(d.path(), Some((i as u64 + 1, ports[i])))))
        .collect();
    write(&nodes, &account("AUTH_after_restart")).unwrap();
    wait_converged(&nodes, 21);
}

/// Waits until every live member's local map is the same and holds `accounts` accounts.
fn wait_converged(nodes: &[Option<Node>], accounts: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let maps: Vec<Vec<u8>> = nodes.iter().flatten().map(|n| map_of(n).encode()).collect();
        let all_equal = maps.windows(2).all(|w| w[0] == w[1]);
        let complete = ClusterMap::decode(&maps[0]).unwrap().accounts().count() == accounts;
        if all_equal && complete {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the members did not converge on {accounts} accounts"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn membership_changes_under_load_lose_no_write() {
    let (mut dirs, mut ports, mut nodes) = start_group(3);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let nodes_for_writer: Vec<SocketAddr> = nodes
        .iter()
        .flatten()
        .map(|n| n.meta_addr.unwrap())
        .collect();
    let secret = nodes[0].as_ref().unwrap().secret.clone();
    // a writer streaming account creates through the first three members
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let name = format!("AUTH_load_{i}");
                if write_to(&secret, &nodes_for_writer, &account(&name)).is_ok() {
                    acknowledged.push(name);
                }
            }
            acknowledged
        })
    };
    // enough writes that the leader has snapshotted and purged its whole log (the members
    // snapshot every 16 entries and keep none behind): the newcomer can only catch up
    // through a snapshot
    for i in 0..40 {
        write(&nodes, &account(&format!("AUTH_early_{i}"))).unwrap();
    }
    // a fourth node joins as a learner, then becomes a voter; then member 3 is removed
    dirs.push(tempfile::tempdir().unwrap());
    ports.push(
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
    );
    nodes.push(Some(Node::start_with(dirs[3].path(), Some((4, ports[3])))));
    let new_addr = nodes[3].as_ref().unwrap().meta_addr.unwrap().to_string();
    let learner = json!({"id": 4, "addr": new_addr});
    post_to_leader(&nodes, "/meta/learners", &learner);
    post_to_leader(&nodes, "/meta/voters", &json!({"voters": [1, 2, 3, 4]}));
    post_to_leader(&nodes, "/meta/voters", &json!({"voters": [1, 2, 4]}));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged = writer.join().unwrap();
    assert!(
        acknowledged.len() > 10,
        "only {} writes acknowledged",
        acknowledged.len()
    );

    assert!(
        dirs[3]
            .path()
            .join("meta/snapshots/current.snapshot")
            .is_file(),
        "the new member holds no snapshot"
    );
    // members 1, 2 and 4 hold every acknowledged write
    nodes[2].take().unwrap().kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let maps: Vec<ClusterMap> = nodes.iter().flatten().map(map_of).collect();
        let agree = maps.windows(2).all(|w| w[0].encode() == w[1].encode());
        if agree && acknowledged.iter().all(|a| maps[0].account(a).is_some()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "members did not converge on every acknowledged write"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes through the given member addresses, following hints (no `Node` needed).
fn write_to(
    secret: &nimbus_core::auth::ClusterSecret,
    addrs: &[SocketAddr],
    command: &Value,
) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut target = addrs[0];
    let auth = Auth::Signed {
        secret,
        epoch: 0,
        skew_secs: 0,
    };
    let body = serde_json::to_vec(command).unwrap();
    let extra = [("content-type", "application/json".to_owned())];
    while Instant::now() < deadline {
        match send(target, "POST", "/meta/write", &auth, &extra, &body, None) {
            Ok(r) if r.status == 200 => {
                return Ok(serde_json::from_slice(&r.body).unwrap_or(Value::Null));
            }
            Ok(r) if r.status == 421 => {
                let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                if let Some(a) = v["leader_addr"].as_str().and_then(|a| a.parse().ok()) {
                    target = a;
                    continue;
                }
            }
            Ok(r) if r.status == 503 => {}
            Ok(r) => return Err(format!("{}", r.status)),
            Err(e) => return Err(e.to_string()),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("timeout".into())
}

/// Posts a membership request to whichever member leads.
fn post_to_leader(nodes: &[Option<Node>], path: &str, body: &Value) {
    let live: Vec<&Node> = nodes.iter().flatten().collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for n in &live {
            if let Ok((status, v)) = call(n, n.meta_addr.unwrap(), "POST", path, body) {
                if status == 200 {
                    return;
                }
                assert!(status == 421 || status == 503, "{path}: {status} {v}");
            }
        }
        assert!(Instant::now() < deadline, "{path}: no leader took it");
        std::thread::sleep(Duration::from_millis(50));
    }
}
