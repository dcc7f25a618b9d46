//! The index endpoints: conditional writes, reads, listings, replication, bad input.

use nimbus_core::ids::VersionId;
use nimbus_core::index::{EntryData, IndexEntry, decode_records};

use crate::Node;
use crate::client::signed;

pub fn entry(version: u64, etag: &str) -> IndexEntry {
    IndexEntry {
        version: VersionId(version),
        size: 5,
        etag: etag.into(),
        blake3: *blake3::hash(b"hello").as_bytes(),
        client_checksums: Vec::new(),
        content_type: "text/plain".into(),
        user_metadata: vec![("color".into(), "blue".into())],
        policy: "rep3".into(),
        data: EntryData::Inline(b"hello".to_vec()),
    }
}

pub fn shard_url(device: &str, container: &str) -> String {
    format!("/v1/index/{device}/AUTH_test/{container}/3")
}

fn condition(c: &str) -> [(&'static str, String); 1] {
    [("x-nimbus-precondition", c.to_owned())]
}

#[test]
fn index_entries_are_applied_conditionally_read_listed_and_replicated() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let shard = shard_url("d0", "photos");
    let put = |key: &str, e: &IndexEntry, c: &str| {
        signed(
            &node,
            "PUT",
            &format!("{shard}?key={key}"),
            &condition(c),
            &e.encode(),
        )
    };
    let r = put("cat.jpg", &entry(1, "e1"), "if-none-match");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seq: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(seq["seq"], 1);
    let again = put("cat.jpg", &entry(2, "e2"), "if-none-match");
    assert_eq!(again.status, 412);
    let body: serde_json::Value = serde_json::from_slice(&again.body).unwrap();
    assert_eq!(body["current"]["etag"], "e1");
    assert_eq!(put("cat.jpg", &entry(2, "e2"), "if-match e0").status, 412);
    assert_eq!(put("cat.jpg", &entry(2, "e2"), "if-match e1").status, 200);
    assert_eq!(put("dog.jpg", &entry(3, "e3"), "none").status, 200);

    let got = signed(&node, "GET", &format!("{shard}?key=cat.jpg"), &[], &[]);
    assert_eq!(got.status, 200);
    let records = decode_records(&got.body).unwrap();
    assert_eq!(records[0].entry, entry(2, "e2"));
    assert_eq!(records[0].seq, 2);
    assert_eq!(
        signed(&node, "GET", &format!("{shard}?key=none.jpg"), &[], &[]).status,
        404
    );

    let listed = signed(
        &node,
        "GET",
        &format!("{shard}/list?prefix=&limit=10"),
        &[],
        &[],
    );
    let keys: Vec<String> = decode_records(&listed.body)
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(keys, ["cat.jpg", "dog.jpg"]);
    let since = signed(&node, "GET", &format!("{shard}/since?seq=2"), &[], &[]);
    assert_eq!(decode_records(&since.body).unwrap().len(), 1);
    let last = signed(&node, "GET", &format!("{shard}/last-seq"), &[], &[]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&last.body).unwrap()["seq"],
        3
    );

    // a replica takes the primary's write once
    let replica = shard_url("d1", "photos");
    let url = format!("{replica}/replicated?key=cat.jpg&seq=2");
    let r = signed(&node, "PUT", &url, &[], &entry(2, "e2").encode());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["applied"],
        true
    );
    let r = signed(&node, "PUT", &url, &[], &entry(2, "e2").encode());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["applied"],
        false
    );
}

/// A request (URL, headers, body) and the status it must get.
type Case = (String, Vec<(&'static str, String)>, Vec<u8>, u16);

#[test]
fn bad_index_requests_get_a_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let shard = shard_url("d0", "c");
    let good = entry(1, "e").encode();
    let cases: Vec<Case> = vec![
        (
            format!("{shard}?key=k"),
            vec![],
            b"not an entry".to_vec(),
            400,
        ),
        (
            format!("{shard}?key=k"),
            vec![("x-nimbus-precondition", "sometimes".into())],
            good.clone(),
            400,
        ),
        (format!("{shard}?key="), vec![], good.clone(), 400),
        (
            "/v1/index/d9/AUTH_test/c/3?key=k".to_owned(),
            vec![],
            good.clone(),
            404,
        ),
        (
            format!("/v1/index/d0/{}/c/3?key=k", "a".repeat(300)),
            vec![],
            good.clone(),
            400,
        ),
        (
            "/v1/index/d0/AUTH_test/c/99999?key=k".to_owned(),
            vec![],
            good.clone(),
            400,
        ),
        (
            format!("{shard}/replicated?key=k&seq=0"),
            vec![],
            good.clone(),
            400,
        ),
        (format!("{shard}?nokey=1"), vec![], good.clone(), 400),
    ];
    for (url, headers, body, expect) in cases {
        let r = signed(&node, "PUT", &url, &headers, &body);
        assert_eq!(
            r.status,
            expect,
            "{url}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let last = signed(&node, "GET", &format!("{shard}/last-seq"), &[], &[]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&last.body).unwrap()["seq"],
        0
    );
}
