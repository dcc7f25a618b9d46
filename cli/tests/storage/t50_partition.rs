//! A metadata member cut off from the others (its network namespace's link down) cannot
//! commit, the others elect a leader and go on, and the member catches up when its link
//! returns. Each member runs in its own network namespace on a bridge the test creates
//! (root only; elsewhere the test says so and returns).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nimbus_core::auth::ClusterSecret;
use nimbus_ring::map::ClusterMap;
use serde_json::{Value, json};

use crate::client::{Auth, send};

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Three namespaces on one bridge; everything is removed on drop.
struct Net {
    tag: String,
    subnet: u8,
    members: Vec<Child>,
}

impl Net {
    fn ns(&self, i: usize) -> String {
        format!("nns{}-{i}", self.tag)
    }

    fn bridge_side(&self, i: usize) -> String {
        format!("nb{}{i}", self.tag)
    }

    fn addr(&self, i: usize, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 201, self.subnet, i as u8 + 1], port))
    }

    /// Creates the bridge and `n` namespaces, or `None` when this machine does not allow it.
    fn create(n: usize) -> Option<Net> {
        let tag = format!("{}", std::process::id() % 100_000);
        let subnet = (std::process::id() % 200) as u8 + 20;
        let net = Net {
            tag,
            subnet,
            members: Vec::new(),
        };
        let bridge = format!("nbr{}", net.tag);
        let gateway = format!("10.201.{subnet}.254/24");
        if !(ip(&["link", "add", &bridge, "type", "bridge"])
            && ip(&["addr", "add", &gateway, "dev", &bridge])
            && ip(&["link", "set", &bridge, "up"]))
        {
            return None;
        }
        for i in 0..n {
            let (ns, inner, outer) = (net.ns(i), format!("nv{}{i}", net.tag), net.bridge_side(i));
            let addr = format!("10.201.{subnet}.{}/24", i + 1);
            let ok = ip(&["netns", "add", &ns])
                && ip(&[
                    "link", "add", &inner, "type", "veth", "peer", "name", &outer,
                ])
                && ip(&["link", "set", &inner, "netns", &ns])
                && ip(&[
                    "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", &inner,
                ])
                && ip(&["netns", "exec", &ns, "ip", "link", "set", &inner, "up"])
                && ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])
                && ip(&["link", "set", &outer, "master", &bridge])
                && ip(&["link", "set", &outer, "up"]);
            if !ok {
                return None;
            }
        }
        Some(net)
    }

    /// Starts `nimbus storage` hosting member `i + 1` inside namespace `i`.
    fn start(&mut self, i: usize, dir: &std::path::Path, secret: &ClusterSecret) -> SocketAddr {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("secret"), secret.to_hex()).unwrap();
        let meta = self.addr(i, 7000);
        let config = format!(
            "listen = \"{storage}\"\ncluster_secret_file = \"{d}/secret\"\n[[device]]\nname = \"d0\"\npath = \"{d}/d0\"\nreserve_bytes = 0\n[meta]\nid = {id}\ndir = \"{d}/meta\"\nlisten = \"{meta}\"\n",
            storage = self.addr(i, 6200),
            d = dir.display(),
            id = i + 1,
        );
        std::fs::write(dir.join("storage.toml"), config).unwrap();
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(i),
                env!("CARGO_BIN_EXE_nimbus"),
                "storage",
                "--config",
            ])
            .arg(dir.join("storage.toml"))
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("nimbus meta ") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("member did not start");
        self.members.push(child);
        meta
    }

    fn link(&self, i: usize, up: bool) {
        assert!(ip(&[
            "link",
            "set",
            &self.bridge_side(i),
            if up { "up" } else { "down" }
        ]));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.members {
            let _ = c.kill();
            let _ = c.wait();
        }
        for i in 0..3 {
            ip(&["link", "del", &self.bridge_side(i)]);
            ip(&["netns", "del", &self.ns(i)]);
        }
        ip(&["link", "del", &format!("nbr{}", self.tag)]);
    }
}

fn call(
    secret: &ClusterSecret,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &Value,
) -> Option<(u16, Value)> {
    let auth = Auth::Signed {
        secret,
        epoch: 0,
        skew_secs: 0,
    };
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(body).unwrap()
    };
    let r = send(
        addr,
        method,
        path,
        &auth,
        &[("content-type", "application/json".into())],
        &bytes,
        None,
    )
    .ok()?;
    Some((
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    ))
}

fn status(secret: &ClusterSecret, addr: SocketAddr) -> Option<Value> {
    call(secret, addr, "GET", "/meta/status", &Value::Null)
        .filter(|(s, _)| *s == 200)
        .map(|(_, v)| v)
}

fn map(secret: &ClusterSecret, addr: SocketAddr) -> Option<ClusterMap> {
    let auth = Auth::Signed {
        secret,
        epoch: 0,
        skew_secs: 0,
    };
    let r = send(addr, "GET", "/meta/map", &auth, &[], &[], None).ok()?;
    ClusterMap::decode(&r.body).ok()
}

#[test]
fn a_cut_off_member_cannot_commit_and_catches_up_when_it_returns() {
    let Some(mut net) = Net::create(3) else {
        eprintln!("skipped: cannot create network namespaces here (not root?)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let secret = ClusterSecret::new([0x44; 32]);
    let addrs: Vec<SocketAddr> = (0..3)
        .map(|i| net.start(i, &dir.path().join(format!("m{i}")), &secret))
        .collect();
    let members: serde_json::Map<String, Value> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| ((i + 1).to_string(), json!(a.to_string())))
        .collect();
    let (code, body) = call(
        &secret,
        addrs[0],
        "POST",
        "/meta/init",
        &json!({ "members": members }),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");

    // find the leader once one is elected
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        if let Some(s) = status(&secret, addrs[0])
            && let Some(id) = s["leader_id"].as_u64()
        {
            break id as usize - 1;
        }
        assert!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(50));
    };
    let account = |name: &str| json!({"command": "create_account", "name": name, "now_ms": 1});
    assert_eq!(
        call(
            &secret,
            addrs[leader],
            "POST",
            "/meta/write",
            &account("AUTH_before")
        )
        .unwrap()
        .0,
        200
    );

    // cut the leader off: a client inside its namespace reaches it, but it cannot commit
    net.link(leader, false);
    let outside = call(
        &secret,
        addrs[leader],
        "POST",
        "/meta/write",
        &account("AUTH_x"),
    );
    assert!(
        outside.is_none(),
        "the cut-off member answered through a link that is down"
    );
    let secret_file = dir.path().join(format!("m{leader}")).join("secret");
    let inside = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.ns(leader),
            env!("CARGO_BIN_EXE_nimbus"),
            "admin",
            "--meta",
        ])
        .arg(addrs[leader].to_string())
        .arg("--secret-file")
        .arg(&secret_file)
        .args(["account", "create", "AUTH_lost"])
        .output()
        .unwrap();
    assert!(
        !inside.status.success(),
        "a cut-off member committed a write: {}",
        String::from_utf8_lossy(&inside.stdout)
    );
    // the other two elect a leader and commit
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut done = false;
        for &i in &others {
            if let Some((200, v)) = call(
                &secret,
                addrs[i],
                "POST",
                "/meta/write",
                &account("AUTH_during"),
            ) {
                assert!(
                    v.get("Ok").is_some() || v["Err"]["error"] == "account_exists",
                    "{v}"
                );
                done = true;
                break;
            }
        }
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the majority did not commit without the cut-off member"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // the link returns: the member catches up, and what it could not commit is nowhere
    net.link(leader, true);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let maps: Vec<Option<ClusterMap>> = addrs.iter().map(|&a| map(&secret, a)).collect();
        if let [Some(a), Some(b), Some(c)] = &maps[..]
            && a.encode() == b.encode()
            && b.encode() == c.encode()
            && a.account("AUTH_during").is_some()
        {
            assert!(a.account("AUTH_before").is_some());
            assert!(
                a.account("AUTH_lost").is_none(),
                "a write the cut-off member could not commit appeared"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the member did not catch up after its link returned"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
