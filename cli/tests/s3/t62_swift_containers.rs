//! Swift accounts and containers beyond the basics: metadata (POST), container ACLs for
//! other accounts' users and anonymous clients, reverse listings, bulk delete and TempURLs
//! (signed here by Python's `hmac`, an implementation independent of Nimbus's).

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cluster::Cluster;
use crate::swift_http::{Swift, credentials, curl, header};

/// HMAC of `message` with `key`, by Python's standard library, in hex.
fn hmac_hex(digest: &str, key: &str, message: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import hmac, hashlib, sys; print(hmac.new(sys.argv[2].encode(), sys.argv[3].encode(), getattr(hashlib, sys.argv[1])).hexdigest())",
            digest,
            key,
            message,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn lines(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn metadata_acls_listings_bulk_delete_and_temp_urls() {
    let cluster = Cluster::start();
    let (auth, _, _) = credentials(&cluster);
    let dev = Swift::login(&cluster);
    let account = dev.url.rsplit('/').next().unwrap().to_owned();

    // Account metadata: set, shown, removed; Swift's bounds refused with 400.
    let (status, _, _) = dev.call("POST", "", &["-H", "X-Account-Meta-Color: blue"]);
    assert_eq!(status, 204);
    let (status, headers) = dev.head("");
    assert_eq!(status, 204);
    assert_eq!(
        header(&headers, "x-account-meta-color").as_deref(),
        Some("blue")
    );
    let (status, _, _) = dev.call("POST", "", &["-H", "X-Remove-Account-Meta-Color: x"]);
    assert_eq!(status, 204);
    let (_, headers) = dev.head("");
    assert_eq!(header(&headers, "x-account-meta-color"), None);
    let long = format!("X-Account-Meta-Big: {}", "v".repeat(257));
    assert_eq!(dev.call("POST", "", &["-H", &long]).0, 400);

    // Container metadata on PUT and POST; a missing container is 404.
    let (status, _, _) = dev.call("PUT", "box", &["-H", "X-Container-Meta-A: 1"]);
    assert_eq!(status, 201);
    let (status, _, _) = dev.call("POST", "box", &["-H", "X-Container-Meta-B: two"]);
    assert_eq!(status, 204);
    let (_, headers) = dev.head("box");
    assert_eq!(header(&headers, "x-container-meta-a").as_deref(), Some("1"));
    assert_eq!(
        header(&headers, "x-container-meta-b").as_deref(),
        Some("two")
    );
    assert_eq!(
        dev.call("POST", "nobox", &["-H", "X-Container-Meta-A: 1"])
            .0,
        404
    );
    let many: Vec<String> = (0..91)
        .map(|i| format!("X-Container-Meta-K{i}: v"))
        .collect();
    let mut args = Vec::new();
    for h in &many {
        args.extend(["-H", h.as_str()]);
    }
    assert_eq!(dev.call("POST", "box", &args).0, 400);
    assert_eq!(
        dev.call(
            "PUT",
            "badacl",
            &["-H", "X-Container-Read: .r:-evil.example"]
        )
        .0,
        400
    );
    assert_eq!(dev.head("badacl").0, 404, "nothing made");

    // Reverse listings: order, markers, limit, delimiter.
    for key in ["a", "b", "c", "d/1", "d/2", "e"] {
        let (status, _, _) = dev.call("PUT", &format!("box/{key}"), &["--data-binary", key]);
        assert_eq!(status, 201, "{key}");
    }
    let list = |query: &str| lines(&dev.call("GET", &format!("box?{query}"), &[]).2);
    assert_eq!(list("reverse=on"), ["e", "d/2", "d/1", "c", "b", "a"]);
    assert_eq!(list("reverse=on&marker=c"), ["b", "a"]);
    assert_eq!(list("reverse=on&end_marker=c"), ["e", "d/2", "d/1"]);
    assert_eq!(list("reverse=on&limit=2"), ["e", "d/2"]);
    assert_eq!(list("reverse=on&delimiter=/"), ["e", "d/", "c", "b", "a"]);
    assert_eq!(list("reverse=on&delimiter=/&marker=d/"), ["c", "b", "a"]);
    assert_eq!(list("reverse=on&prefix=d/"), ["d/2", "d/1"]);
    assert_eq!(list("marker=b&end_marker=e"), ["c", "d/1", "d/2"]);

    // ACLs: a user of another account, and anonymous clients.
    cluster.admin(&["account", "create", "other"]);
    cluster.admin(&[
        "credential",
        "create-swift",
        "other",
        "bob",
        "--key",
        "bob-secret-key",
    ]);
    let bob = Swift::login_as(&auth, "other:bob", "bob-secret-key");
    let bob_at = |method: &str, path: &str, extra: &[&str]| {
        let url = format!("{}{path}", dev.url);
        let mut args = vec!["-X", method, "-H", bob.token.as_str()];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    };
    let anonymous = |path: &str| curl(&[&format!("{}{path}", dev.url)]);
    assert_eq!(bob_at("GET", "/box/a", &[]).0, 403);
    assert_eq!(anonymous("/box/a").0, 401);
    assert_eq!(bob_at("GET", "", &[]).0, 403, "never the account");
    let (status, _, _) = dev.call("POST", "box", &["-H", "X-Container-Read: other:bob"]);
    assert_eq!(status, 204);
    let (status, _, body) = bob_at("GET", "/box/a", &[]);
    assert_eq!((status, body.as_slice()), (200, b"a".as_slice()));
    let (status, headers, _) = bob_at("GET", "/box", &[]);
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "x-container-read"),
        None,
        "ACLs are the owner's"
    );
    assert_eq!(bob_at("PUT", "/box/bob", &["--data-binary", "x"]).0, 403);
    assert_eq!(
        bob_at("POST", "/box", &["-H", "X-Container-Read: *"]).0,
        403
    );
    let (status, _, _) = dev.call("POST", "box", &["-H", "X-Container-Write: other"]);
    assert_eq!(status, 204);
    assert_eq!(bob_at("PUT", "/box/bob", &["--data-binary", "x"]).0, 201);
    assert_eq!(bob_at("DELETE", "/box/bob", &[]).0, 204);
    assert_eq!(
        bob_at(
            "PUT",
            "/box/copy",
            &["-H", "X-Copy-From: box/a", "--data-binary", ""]
        )
        .0,
        403,
        "copies need the owner"
    );
    assert_eq!(anonymous("/box/a").0, 401);
    let (status, _, _) = dev.call("POST", "box", &["-H", "X-Container-Read: .r:*"]);
    assert_eq!(status, 204);
    let (status, _, body) = anonymous("/box/a");
    assert_eq!((status, body.as_slice()), (200, b"a".as_slice()));
    assert_eq!(anonymous("/box").0, 401, "listing needs .rlistings");
    let (status, _, _) = dev.call("POST", "box", &["-H", "X-Container-Read: .r:*,.rlistings"]);
    assert_eq!(status, 204);
    let (status, _, body) = anonymous("/box");
    assert_eq!(status, 200);
    assert_eq!(lines(&body).len(), 6);
    assert_eq!(bob_at("GET", "/box/a", &[]).0, 200, ".r:* is everyone");
    assert_eq!(bob_at("GET", "/box", &[]).0, 200, ".rlistings too");
    assert_eq!(anonymous("/box/a").0, 200);
    let (status, _, _) = dev.call("POST", "box", &["-H", "X-Remove-Container-Read: x"]);
    assert_eq!(status, 204);
    assert_eq!(anonymous("/box/a").0, 401);
    assert_eq!(
        curl(&[
            "-H",
            "X-Auth-Token: AUTH_tkforged.00",
            &format!("{}/box/a", dev.url)
        ])
        .0,
        401
    );

    // TempURLs: signed with the account's key, for one method, until they expire.
    let (status, _, _) = dev.call("POST", "", &["-H", "X-Account-Meta-Temp-URL-Key: sekrit"]);
    assert_eq!(status, 204);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let path = format!("/v1/{account}/box/c");
    let signed = |method: &str, expires: u64, digest: &str, key: &str| {
        let sig = hmac_hex(digest, key, &format!("{method}\n{expires}\n{path}"));
        format!(
            "{}/box/c?temp_url_sig={sig}&temp_url_expires={expires}",
            dev.url
        )
    };
    let (status, headers, body) = curl(&[&signed("GET", now + 600, "sha1", "sekrit")]);
    assert_eq!((status, body.as_slice()), (200, b"c".as_slice()));
    assert_eq!(
        header(&headers, "content-disposition").as_deref(),
        Some("attachment; filename=\"c\"")
    );
    let (status, _, _) = curl(&["-I", &signed("GET", now + 600, "sha256", "sekrit")]);
    assert_eq!(status, 200, "HEAD with a GET signature, SHA-256");
    assert_eq!(
        curl(&[&signed("GET", now - 1, "sha1", "sekrit")]).0,
        401,
        "expired"
    );
    assert_eq!(
        curl(&[&signed("GET", now + 600, "sha1", "wrong")]).0,
        401,
        "bad key"
    );
    assert_eq!(
        curl(&[
            "-X",
            "PUT",
            "--data-binary",
            "x",
            &signed("GET", now + 600, "sha1", "sekrit")
        ])
        .0,
        401,
        "a GET signature does not PUT"
    );
    let put_url = signed("PUT", now + 600, "sha1", "sekrit");
    assert_eq!(
        curl(&["-X", "PUT", "--data-binary", "new c", &put_url]).0,
        201
    );
    assert_eq!(dev.call("GET", "box/c", &[]).2, b"new c");
    let other = format!(
        "{}/box/a?temp_url_sig={}&temp_url_expires={}",
        dev.url,
        hmac_hex("sha1", "sekrit", &format!("GET\n{}\n{path}", now + 600)),
        now + 600
    );
    assert_eq!(curl(&[&other]).0, 401, "signed for another object");

    // Bulk delete: objects, a missing one, a container emptied by the same request.
    assert_eq!(dev.call("PUT", "gone", &[]).0, 201);
    for key in ["x", "y y"] {
        let path = format!("gone/{}", key.replace(' ', "%20"));
        assert_eq!(dev.call("PUT", &path, &["--data-binary", "z"]).0, 201);
    }
    let (status, _, body) = dev.call(
        "POST",
        "?bulk-delete",
        &[
            "-H",
            "Accept: application/json",
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            "/gone/x\ngone/y%20y\n/gone/missing\n/gone\n/box\n",
        ],
    );
    assert_eq!(status, 200);
    let report: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(report["Number Deleted"], 3, "{report}");
    assert_eq!(report["Number Not Found"], 1, "{report}");
    assert_eq!(report["Errors"][0][0], "/box", "{report}");
    assert_eq!(report["Errors"][0][1], "409 Conflict", "{report}");
    assert_eq!(dev.head("gone").0, 404);
    assert_eq!(dev.head("box").0, 204);

    // `nimbus admin status`: every node's devices, their auditors and workers.
    let status: serde_json::Value =
        serde_json::from_str(&cluster.admin(&["--json", "status"])).unwrap();
    let nodes = status.as_array().unwrap();
    assert_eq!(nodes.len(), 6, "{status}");
    for node in nodes {
        let devices = node["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 2, "{node}");
        for d in devices {
            assert!(d["audit"]["fragments"].is_u64(), "{d}");
            assert_eq!(d["audit"]["corrupt"], 0, "{d}");
            assert!(d["workers"]["passes"].is_u64(), "{d}");
        }
    }
    // Two lines per device: its auditor, its workers.
    let text = cluster.admin(&["status"]);
    assert_eq!(text.lines().count(), 24, "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains(": workers ")).count(),
        12,
        "{text}"
    );
}
