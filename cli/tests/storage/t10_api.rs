//! The internal API: authentication, the write-commit-read cycle, and bad input.

use nimbus_core::auth::ClusterSecret;

use crate::client::{Auth, fragment_url, put_and_commit, send, signed};
use crate::{Node, files_under};

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(167).wrapping_add(seed))
        .collect()
}

fn sizes(len: usize) -> [(&'static str, String); 2] {
    [
        ("x-nimbus-data-bytes", len.to_string()),
        ("x-nimbus-segment-bytes", "1048576".to_string()),
    ]
}

#[test]
fn fragments_are_written_committed_read_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let health = send(node.addr, "GET", "/health", &Auth::None, &[], &[], None).unwrap();
    assert_eq!(health.status, 200);

    let url = fragment_url("d0", "ec4+2", 7, 0x1234, 2, "AUTH_t/photos/2024/cat.jpg");
    let bytes = data(1, 300_000);
    let put = signed(&node, "PUT", &url, &sizes(bytes.len()), &bytes);
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    let reply: serde_json::Value = serde_json::from_slice(&put.body).unwrap();
    assert_eq!(reply["blake3"], blake3::hash(&bytes).to_hex().to_string());
    // written but not committed: not readable
    assert_eq!(signed(&node, "GET", &url, &[], &[]).status, 404);
    let (path, query) = url.split_once('?').unwrap();
    let commit = format!("{path}/commit?{query}");
    assert_eq!(signed(&node, "POST", &commit, &[], &[]).status, 204);
    let get = signed(&node, "GET", &url, &[], &[]);
    assert_eq!(get.status, 200);
    assert_eq!(get.body, bytes);
    assert_eq!(
        get.header("x-nimbus-blake3").unwrap(),
        blake3::hash(&bytes).to_hex().as_str()
    );
    let ranged = signed(
        &node,
        "GET",
        &format!("{url}&offset=100000&length=70000"),
        &[],
        &[],
    );
    assert_eq!(ranged.body, &bytes[100_000..170_000]);
    let listing = signed(&node, "GET", "/v1/partitions/d0/ec4+2/7", &[], &[]);
    let listing: serde_json::Value = serde_json::from_slice(&listing.body).unwrap();
    assert_eq!(listing["fragments"][0]["durable"], true);
    assert_eq!(signed(&node, "DELETE", &url, &[], &[]).status, 204);
    assert_eq!(signed(&node, "GET", &url, &[], &[]).status, 404);
}

#[test]
fn unauthenticated_or_badly_signed_requests_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let url = fragment_url("d0", "rep3", 1, 1, 0, "a/c/o");
    let body = data(2, 1000);
    let r = send(
        node.addr,
        "PUT",
        &url,
        &Auth::None,
        &sizes(1000),
        &body,
        None,
    )
    .unwrap();
    assert_eq!(r.status, 401);
    let wrong = ClusterSecret::new([1; 32]);
    let cases = [
        Auth::Signed {
            secret: &wrong,
            epoch: 1,
            skew_secs: 0,
        },
        Auth::Signed {
            secret: &node.secret,
            epoch: 1,
            skew_secs: 3600,
        },
        Auth::Signed {
            secret: &node.secret,
            epoch: 1,
            skew_secs: -3600,
        },
    ];
    for auth in &cases {
        let r = send(node.addr, "PUT", &url, auth, &sizes(1000), &body, None).unwrap();
        assert_eq!(r.status, 403);
    }
    // a signature for another path does not carry over
    let mut forged = url.clone();
    forged = forged.replace("a%2Fc%2Fo", "a%2Fc%2Fx");
    let auth = Auth::Signed {
        secret: &node.secret,
        epoch: 1,
        skew_secs: 0,
    };
    let good = send(node.addr, "PUT", &url, &auth, &sizes(1000), &body, None).unwrap();
    assert_eq!(good.status, 201);
    let r = send(node.addr, "DELETE", &forged, &Auth::None, &[], &[], None).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(files_under(&dir.path().join("d0/objects")).len(), 1);
}

#[test]
fn bad_input_gets_a_4xx_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let body = data(3, 5000);
    let bad_urls = [
        "/v1/fragments/d0/..%2F..%2Fetc/1/0000000000000001/0?path=a%2Fc%2Fo".to_owned(),
        "/v1/fragments/d0/ec4%2B2%2F..%2F..%2F/1/0000000000000001/0?path=a%2Fc%2Fo".to_owned(),
        "/v1/fragments/d0/EC/1/0000000000000001/0?path=a%2Fc%2Fo".to_owned(),
        "/v1/fragments/d9/ec4+2/1/0000000000000001/0?path=a%2Fc%2Fo".to_owned(),
        "/v1/fragments/d0/ec4+2/x/0000000000000001/0?path=a%2Fc%2Fo".to_owned(),
        "/v1/fragments/d0/ec4+2/1/zz/0?path=a%2Fc%2Fo".to_owned(),
        "/v1/fragments/d0/ec4+2/1/0000000000000001/999?path=a%2Fc%2Fo".to_owned(),
        fragment_url("d0", "ec4+2", 1, 1, 0, "a/c"),
        fragment_url("d0", "ec4+2", 1, 1, 0, "a//o"),
        fragment_url("d0", "ec4+2", 1, 1, 0, &"x/".repeat(2000)),
        "/v1/fragments/d0/ec4+2/1/0000000000000001/0".to_owned(),
    ];
    for url in &bad_urls {
        let r = signed(&node, "PUT", url, &sizes(body.len()), &body);
        assert!((400..500).contains(&r.status), "{url}: {}", r.status);
    }
    let url = fragment_url("d0", "ec4+2", 1, 1, 0, "a/c/o");
    // no declared size; a declared size that is not a number
    assert_eq!(
        signed(
            &node,
            "PUT",
            &url,
            &[("x-nimbus-segment-bytes", "1".into())],
            &body
        )
        .status,
        400
    );
    assert_eq!(
        signed(
            &node,
            "PUT",
            &url,
            &[
                ("x-nimbus-data-bytes", "lots".into()),
                ("x-nimbus-segment-bytes", "1".into())
            ],
            &body
        )
        .status,
        400
    );
    // wrong sizes: shorter and longer than declared
    assert_eq!(signed(&node, "PUT", &url, &sizes(6000), &body).status, 400);
    assert_eq!(signed(&node, "PUT", &url, &sizes(4000), &body).status, 400);
    // a truncated body: Content-Length promises more than is sent before the connection ends
    let auth = Auth::Signed {
        secret: &node.secret,
        epoch: 1,
        skew_secs: 0,
    };
    let truncated = send(
        node.addr,
        "PUT",
        &url,
        &auth,
        &sizes(5000),
        &body[..2500],
        Some(5000),
    );
    if let Ok(r) = truncated {
        assert!(
            (400..500).contains(&r.status),
            "truncated body: {}",
            r.status
        );
    }
    // a commit for a write that never happened
    let (path, query) = url.split_once('?').unwrap();
    assert_eq!(
        signed(&node, "POST", &format!("{path}/commit?{query}"), &[], &[]).status,
        404
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    for device in ["d0", "d1"] {
        assert!(
            files_under(&dir.path().join(device).join("objects")).is_empty(),
            "{device}"
        );
        assert!(
            files_under(&dir.path().join(device).join("tmp")).is_empty(),
            "{device} tmp"
        );
    }
    // epochs: a newer one is taken, an older one is refused as stale
    let newer = Auth::Signed {
        secret: &node.secret,
        epoch: 5,
        skew_secs: 0,
    };
    assert_eq!(
        send(
            node.addr,
            "GET",
            "/v1/partitions/d0/ec4+2/1",
            &newer,
            &[],
            &[],
            None
        )
        .unwrap()
        .status,
        200
    );
    let stale = Auth::Signed {
        secret: &node.secret,
        epoch: 4,
        skew_secs: 0,
    };
    assert_eq!(
        send(
            node.addr,
            "GET",
            "/v1/partitions/d0/ec4+2/1",
            &stale,
            &[],
            &[],
            None
        )
        .unwrap()
        .status,
        409
    );
}

#[test]
fn a_corrupt_fragment_is_refused_and_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let url = fragment_url("d1", "rep3", 3, 9, 1, "AUTH_t/c/doc.txt");
    let bytes = data(4, 200_000);
    assert_eq!(put_and_commit(&node, &url, &bytes), (201, 204));
    let file = files_under(&dir.path().join("d1/objects")).pop().unwrap();
    let mut raw = std::fs::read(&file).unwrap();
    raw[4096 + 1000] ^= 0x20; // inside the first block's data
    std::fs::write(&file, raw).unwrap();
    let r = signed(&node, "GET", &url, &[], &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-nimbus-quarantined"), Some("true"));
    assert!(std::fs::metadata(&file).is_err());
    assert_eq!(files_under(&dir.path().join("d1/quarantine")).len(), 1);
}
