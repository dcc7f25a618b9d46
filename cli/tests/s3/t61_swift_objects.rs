//! Swift object operations beyond PUT/GET/DELETE, against `nimbus dev`: object POST,
//! expiry (`X-Delete-At`/`X-Delete-After`, seen through both APIs), multi-range GETs and
//! chunked PUTs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cluster::{Cluster, bytes, etag, runtime};
use crate::swift_http::{Swift, header};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Writes `data` to a file in `dir` for curl's `--data-binary @file`.
fn file(dir: &tempfile::TempDir, name: &str, data: &[u8]) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, data).unwrap();
    format!("@{}", path.display())
}

/// The names in a Swift JSON listing of `container`.
fn swift_names(swift: &Swift, container: &str) -> Vec<String> {
    let (status, _, body) = swift.call("GET", &format!("{container}?format=json"), &[]);
    assert_eq!(status, 200);
    let listing: serde_json::Value = serde_json::from_slice(&body).unwrap();
    listing
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The keys in an S3 listing of `bucket`.
fn s3_keys(cluster: &Cluster, bucket: &str) -> Vec<String> {
    let s3 = cluster.client();
    runtime().block_on(async {
        let out = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
        out.contents()
            .iter()
            .map(|o| o.key().unwrap().to_owned())
            .collect()
    })
}

/// The HTTP status of an S3 HEAD of `bucket/key`.
fn s3_head_status(cluster: &Cluster, bucket: &str, key: &str) -> u16 {
    let s3 = cluster.client();
    runtime().block_on(async {
        match s3.head_object().bucket(bucket).key(key).send().await {
            Ok(_) => 200,
            Err(e) => e.raw_response().unwrap().status().as_u16(),
        }
    })
}

#[test]
fn post_rewrites_metadata_expiry_removes_objects_and_ranges_come_in_parts() {
    let cluster = Cluster::start();
    let swift = Swift::login(&cluster);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(swift.call("PUT", "meta", &[]).0, 201);

    // POST replaces the user metadata and Content-Type; bytes and ETag stay.
    let data = bytes(300 * 1024, 1);
    let body = file(&dir, "data", &data);
    let (status, headers, _) = swift.call(
        "PUT",
        "meta/post.bin",
        &[
            "-H",
            "X-Object-Meta-Color: blue",
            "-H",
            "Content-Type: text/x-old",
            "-H",
            "Content-Disposition: inline",
            "--data-binary",
            &body,
        ],
    );
    assert_eq!(status, 201);
    let put_etag = header(&headers, "etag").unwrap();
    let (status, _, _) = swift.call(
        "POST",
        "meta/post.bin",
        &[
            "-H",
            "X-Object-Meta-Shape: round",
            "-H",
            "Content-Type: text/x-new",
        ],
    );
    assert_eq!(status, 202);
    let (status, headers, got) = swift.call("GET", "meta/post.bin", &[]);
    assert_eq!(status, 200);
    assert_eq!(got, data);
    assert_eq!(header(&headers, "etag").unwrap(), put_etag);
    assert_eq!(header(&headers, "content-type").unwrap(), "text/x-new");
    assert_eq!(header(&headers, "x-object-meta-shape").unwrap(), "round");
    assert_eq!(header(&headers, "x-object-meta-color"), None);
    assert_eq!(header(&headers, "content-disposition"), None);
    // The same metadata through S3.
    let s3 = cluster.client();
    runtime().block_on(async {
        let head = s3
            .head_object()
            .bucket("meta")
            .key("post.bin")
            .send()
            .await
            .unwrap();
        let metadata = head.metadata().unwrap();
        assert_eq!(metadata.get("shape").map(String::as_str), Some("round"));
        assert_eq!(metadata.len(), 1);
        assert_eq!(head.e_tag(), Some(format!("\"{put_etag}\"").as_str()));
        assert_eq!(head.content_type(), Some("text/x-new"));
    });
    // POST without a Content-Type keeps it; on a missing object it is a 404.
    let (status, _, _) = swift.call("POST", "meta/post.bin", &["-H", "X-Object-Meta-A: 1"]);
    assert_eq!(status, 202);
    let (_, headers) = swift.head("meta/post.bin");
    assert_eq!(header(&headers, "content-type").unwrap(), "text/x-new");
    assert_eq!(header(&headers, "x-object-meta-a").unwrap(), "1");
    assert_eq!(header(&headers, "x-object-meta-shape"), None);
    assert_eq!(swift.call("POST", "meta/nothing", &[]).0, 404);

    // Expiry: bad values are refused, and nothing is stored.
    for (name, value, message) in [
        ("X-Delete-At", "soon", "Non-integer X-Delete-At"),
        ("X-Delete-At", "1000", "X-Delete-At in past"),
        ("X-Delete-After", "-5", "X-Delete-After in past"),
        ("X-Delete-After", "1.5", "Non-integer X-Delete-After"),
    ] {
        let h = format!("{name}: {value}");
        let (status, _, body) = swift.call("PUT", "meta/bad", &["-H", &h, "--data-binary", "x"]);
        assert_eq!(
            (status, String::from_utf8_lossy(&body).as_ref()),
            (400, message)
        );
        let (status, _, _) = swift.call("POST", "meta/post.bin", &["-H", &h]);
        assert_eq!(status, 400);
    }
    assert_eq!(swift.head("meta/bad").0, 404);

    // An object expiring in 2 s (inline), one given 2 s by a POST (fragments), one by a
    // copy; one whose expiry a later POST takes away, and one with a far X-Delete-At.
    let start = now();
    let (status, _, _) = swift.call(
        "PUT",
        "meta/soon-inline",
        &["-H", "X-Delete-After: 2", "--data-binary", "short-lived"],
    );
    assert_eq!(status, 201);
    assert_eq!(
        swift
            .call("PUT", "meta/soon-big", &["--data-binary", &body])
            .0,
        201
    );
    let (status, _, _) = swift.call("POST", "meta/soon-big", &["-H", "X-Delete-After: 2"]);
    assert_eq!(status, 202);
    let (status, _, _) = swift.call(
        "COPY",
        "meta/post.bin",
        &[
            "-H",
            "Destination: meta/soon-copy",
            "-H",
            "X-Delete-After: 2",
        ],
    );
    assert_eq!(status, 201);
    let (status, _, _) = swift.call(
        "PUT",
        "meta/kept",
        &["-H", "X-Delete-After: 2", "--data-binary", "kept"],
    );
    assert_eq!(status, 201);
    assert_eq!(swift.call("POST", "meta/kept", &[]).0, 202);
    let far = (now() + 3600).to_string();
    let h = format!("X-Delete-At: {far}");
    let (status, _, _) = swift.call("PUT", "meta/far", &["-H", &h, "--data-binary", "far"]);
    assert_eq!(status, 201);
    let (_, headers) = swift.head("meta/far");
    assert_eq!(header(&headers, "x-delete-at").unwrap(), far);
    for key in ["soon-inline", "soon-big", "soon-copy"] {
        let (status, headers) = swift.head(&format!("meta/{key}"));
        assert_eq!(status, 200, "{key}");
        let at: u64 = header(&headers, "x-delete-at").unwrap().parse().unwrap();
        assert!((start + 2..=now() + 2).contains(&at), "{key}: {at}");
    }
    assert_eq!(header(&swift.head("meta/kept").1, "x-delete-at"), None);
    assert_eq!(header(&swift.head("meta/post.bin").1, "x-delete-at"), None);
    assert_eq!(swift_names(&swift, "meta").len(), 6);

    std::thread::sleep(Duration::from_secs(4));
    // Gone from the listings of both APIs before anything read them...
    let expected = ["far", "kept", "post.bin"];
    assert_eq!(swift_names(&swift, "meta"), expected);
    assert_eq!(s3_keys(&cluster, "meta"), expected);
    // ...and from reads through both.
    for key in ["soon-inline", "soon-big", "soon-copy"] {
        assert_eq!(swift.head(&format!("meta/{key}")).0, 404, "{key}");
        assert_eq!(swift.call("GET", &format!("meta/{key}"), &[]).0, 404);
        assert_eq!(s3_head_status(&cluster, "meta", key), 404, "{key}");
    }
    assert_eq!(s3_head_status(&cluster, "meta", "far"), 200);
    assert_eq!(swift.call("POST", "meta/soon-big", &[]).0, 404);
    // The read wrote a tombstone: a conditional create succeeds on the key.
    let (status, _, _) = swift.call(
        "PUT",
        "meta/soon-big",
        &["-H", "If-None-Match: *", "--data-binary", "again"],
    );
    assert_eq!(status, 201);
    assert_eq!(swift.call("GET", "meta/soon-big", &[]).2, b"again");

    // Multi-range GETs: a 2.5 MiB object (three segments of 1 MiB).
    let data = bytes(2_500_000, 7);
    let body = file(&dir, "ranged", &data);
    let (status, _, _) = swift.call(
        "PUT",
        "meta/ranged",
        &["-H", "Content-Type: text/x-r", "--data-binary", &body],
    );
    assert_eq!(status, 201);
    let size = data.len();
    for (spec, ranges) in [
        (
            "bytes=0-9,20-29,-5",
            vec![(0, 9), (20, 29), (size - 5, size - 1)],
        ),
        (
            "bytes=1048570-1048580,2000000-2000010,2499990-",
            vec![
                (1_048_570, 1_048_580),
                (2_000_000, 2_000_010),
                (2_499_990, size - 1),
            ],
        ),
    ] {
        let h = format!("Range: {spec}");
        let (status, headers, got) = swift.call("GET", "meta/ranged", &["-H", &h]);
        assert_eq!(status, 206, "{spec}");
        let content_type = header(&headers, "content-type").unwrap();
        let boundary = content_type
            .strip_prefix("multipart/byteranges;boundary=")
            .unwrap();
        let mut expected = Vec::new();
        for (i, (a, b)) in ranges.iter().enumerate() {
            if i > 0 {
                expected.extend_from_slice(b"\r\n");
            }
            expected.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Type: text/x-r\r\nContent-Range: bytes {a}-{b}/{size}\r\n\r\n"
                )
                .as_bytes(),
            );
            expected.extend_from_slice(&data[*a..=*b]);
        }
        expected.extend_from_slice(format!("\r\n--{boundary}--").as_bytes());
        assert_eq!(got, expected, "{spec}");
        let length: usize = header(&headers, "content-length").unwrap().parse().unwrap();
        assert_eq!(length, expected.len());
    }
    // One satisfiable range of several: the single-part answer.
    let (status, headers, got) =
        swift.call("GET", "meta/ranged", &["-H", "Range: bytes=10-19,9000000-"]);
    assert_eq!(status, 206);
    assert_eq!(
        header(&headers, "content-range").unwrap(),
        format!("bytes 10-19/{size}")
    );
    assert_eq!(got, &data[10..20]);
    // None: 416.
    let (status, headers, _) = swift.call(
        "GET",
        "meta/ranged",
        &["-H", "Range: bytes=9000000-,9100000-9100001"],
    );
    assert_eq!(status, 416);
    assert_eq!(
        header(&headers, "content-range").unwrap(),
        format!("bytes */{size}")
    );
    // A malformed list is ignored: the whole object.
    let (status, _, got) = swift.call("GET", "meta/ranged", &["-H", "Range: bytes=5-1,0-1"]);
    assert_eq!(status, 200);
    assert_eq!(got, data);
}

#[test]
fn chunked_puts_store_bodies_of_any_length() {
    let cluster = Cluster::start();
    let swift = Swift::login(&cluster);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(swift.call("PUT", "chunks", &[]).0, 201);
    let chunked = ["-H", "Transfer-Encoding: chunked"];
    let s3 = cluster.client();
    // Empty, inline, one piece, and several pieces (4 segments of 1 MiB each).
    for (name, len) in [
        ("empty", 0),
        ("small", 3 * 1024),
        ("medium", 1_500_000),
        ("big", 5 * 1024 * 1024),
        ("bigger", 9 * 1024 * 1024 + 17),
    ] {
        let data = bytes(len, len as u64);
        let body = file(&dir, name, &data);
        let mut args = chunked.to_vec();
        args.extend(["-H", "X-Object-Meta-Kind: chunked", "--data-binary", &body]);
        let (status, headers, _) = swift.call("PUT", &format!("chunks/{name}"), &args);
        assert_eq!(status, 201, "{name}");
        let quoted = etag(&data);
        assert_eq!(header(&headers, "etag").unwrap(), quoted.trim_matches('"'));
        let (status, headers, got) = swift.call("GET", &format!("chunks/{name}"), &[]);
        assert_eq!(status, 200);
        assert_eq!(got.len(), data.len(), "{name}");
        assert!(got == data, "{name}");
        assert_eq!(header(&headers, "x-object-meta-kind").unwrap(), "chunked");
        runtime().block_on(async {
            let got = s3
                .get_object()
                .bucket("chunks")
                .key(name)
                .send()
                .await
                .unwrap();
            assert_eq!(got.e_tag(), Some(quoted.as_str()));
            assert_eq!(got.content_length(), Some(len as i64));
            let body = got.body.collect().await.unwrap().into_bytes();
            assert!(body.as_ref() == data.as_slice(), "{name}");
        });
        if len > 4 * 1024 * 1024 {
            // A range across the first piece's end.
            let (a, b) = (4 * 1024 * 1024 - 5, 4 * 1024 * 1024 + 5);
            let h = format!("Range: bytes={a}-{b}");
            let (status, _, got) = swift.call("GET", &format!("chunks/{name}"), &["-H", &h]);
            assert_eq!(status, 206);
            assert_eq!(got, &data[a..=b]);
        }
    }
    let names: Vec<String> = {
        let (_, _, body) = swift.call("GET", "chunks", &[]);
        String::from_utf8(body)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(names, ["big", "bigger", "empty", "medium", "small"]);

    // A wrong ETag is refused, big or small, and stores nothing.
    for (name, len) in [("bad-small", 100), ("bad-big", 6 * 1024 * 1024)] {
        let body = file(&dir, name, &bytes(len, 3));
        let mut args = chunked.to_vec();
        args.extend([
            "-H",
            "ETag: 00000000000000000000000000000000",
            "--data-binary",
            &body,
        ]);
        let (status, _, _) = swift.call("PUT", &format!("chunks/{name}"), &args);
        assert_eq!(status, 422, "{name}");
        assert_eq!(swift.head(&format!("chunks/{name}")).0, 404);
    }
    // Neither a length nor chunked: 411.
    assert_eq!(swift.call("PUT", "chunks/nolength", &[]).0, 411);
}
