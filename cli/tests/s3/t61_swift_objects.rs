//! Swift object operations beyond PUT/GET/DELETE, against `nimbus dev`: object POST,
//! expiry (`X-Delete-At`/`X-Delete-After`, seen through both APIs), multi-range GETs,
//! chunked PUTs, and Static and Dynamic Large Objects.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::primitives::ByteStream;

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

/// HEAD of an object given `X-Delete-After: 2` at unix second `before`: its `X-Delete-At`
/// (or, on a machine slow enough that the time already passed, its 404).
fn expiry_of(swift: &Swift, path: &str, before: u64) -> u64 {
    let (status, headers) = swift.head(path);
    let after = now();
    if status == 404 {
        assert!(after >= before + 2, "{path} gone before its time");
        return before + 2;
    }
    assert_eq!(status, 200, "{path}");
    let at: u64 = header(&headers, "x-delete-at").unwrap().parse().unwrap();
    assert!((before + 2..=after + 2).contains(&at), "{path}: {at}");
    at
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

    // POSTs racing PUTs and DELETEs never bring back what those replaced: the POST's
    // rewrite holds only while the entry it read is current.
    for round in 0..8 {
        let (old, new) = (format!("old-{round}"), format!("new-{round}"));
        assert_eq!(
            swift.call("PUT", "meta/raced", &["--data-binary", &old]).0,
            201
        );
        std::thread::scope(|s| {
            let post = s.spawn(|| {
                swift
                    .call("POST", "meta/raced", &["-H", "X-Object-Meta-R: 1"])
                    .0
            });
            let put = s.spawn(|| swift.call("PUT", "meta/raced", &["--data-binary", &new]).0);
            assert!(matches!(post.join().unwrap(), 202 | 409));
            assert_eq!(put.join().unwrap(), 201);
        });
        assert_eq!(swift.call("GET", "meta/raced", &[]).2, new.as_bytes());
        std::thread::scope(|s| {
            let post = s.spawn(|| {
                swift
                    .call("POST", "meta/raced", &["-H", "X-Object-Meta-R: 2"])
                    .0
            });
            let delete = s.spawn(|| swift.call("DELETE", "meta/raced", &[]).0);
            assert!(matches!(post.join().unwrap(), 202 | 404 | 409));
            assert_eq!(delete.join().unwrap(), 204);
        });
        assert_eq!(swift.head("meta/raced").0, 404, "round {round}");
    }

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

    // One that nothing will read, in a container of its own: the expirer deletes it.
    assert_eq!(swift.call("PUT", "exp", &[]).0, 201);
    let (status, _, _) = swift.call(
        "PUT",
        "exp/unread",
        &["-H", "X-Delete-After: 2", "--data-binary", "never read"],
    );
    assert_eq!(status, 201);
    assert_eq!(
        swift.call("PUT", "exp/stays", &["--data-binary", "s"]).0,
        201
    );
    // An object expiring in 2 s (inline), one given 2 s by a POST (fragments), one by a
    // copy; one whose expiry a later POST takes away, and one with a far X-Delete-At.
    let mut latest = 0;
    let before = now();
    let (status, _, _) = swift.call(
        "PUT",
        "meta/soon-inline",
        &["-H", "X-Delete-After: 2", "--data-binary", "short-lived"],
    );
    assert_eq!(status, 201);
    latest = latest.max(expiry_of(&swift, "meta/soon-inline", before));
    assert_eq!(
        swift
            .call("PUT", "meta/soon-big", &["--data-binary", &body])
            .0,
        201
    );
    let before = now();
    let (status, _, _) = swift.call("POST", "meta/soon-big", &["-H", "X-Delete-After: 2"]);
    assert_eq!(status, 202);
    latest = latest.max(expiry_of(&swift, "meta/soon-big", before));
    let before = now();
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
    latest = latest.max(expiry_of(&swift, "meta/soon-copy", before));
    let (status, _, _) = swift.call(
        "PUT",
        "meta/kept",
        &["-H", "X-Delete-After: 600", "--data-binary", "kept"],
    );
    assert_eq!(status, 201);
    assert!(header(&swift.head("meta/kept").1, "x-delete-at").is_some());
    assert_eq!(swift.call("POST", "meta/kept", &[]).0, 202);
    assert_eq!(header(&swift.head("meta/kept").1, "x-delete-at"), None);
    let far = (now() + 3600).to_string();
    let h = format!("X-Delete-At: {far}");
    let (status, _, _) = swift.call("PUT", "meta/far", &["-H", &h, "--data-binary", "far"]);
    assert_eq!(status, 201);
    let (_, headers) = swift.head("meta/far");
    assert_eq!(header(&headers, "x-delete-at").unwrap(), far);
    // The copy's source keeps no expiry.
    assert_eq!(header(&swift.head("meta/post.bin").1, "x-delete-at"), None);

    while now() <= latest {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Gone from the listings of both APIs before anything read them...
    let expected = ["far", "kept", "post.bin"];
    assert_eq!(swift_names(&swift, "meta"), expected);
    assert_eq!(s3_keys(&cluster, "meta"), expected);
    // ...and a create conditional on absence succeeds on a key nothing read since.
    let (status, _, _) = swift.call(
        "PUT",
        "meta/soon-copy",
        &["-H", "If-None-Match: *", "--data-binary", "anew"],
    );
    assert_eq!(status, 201);
    assert_eq!(swift.call("GET", "meta/soon-copy", &[]).2, b"anew");
    // Reads through both APIs find them gone.
    for key in ["soon-inline", "soon-big"] {
        assert_eq!(swift.head(&format!("meta/{key}")).0, 404, "{key}");
        assert_eq!(swift.call("GET", &format!("meta/{key}"), &[]).0, 404);
        assert_eq!(s3_head_status(&cluster, "meta", key), 404, "{key}");
    }
    assert_eq!(s3_head_status(&cluster, "meta", "far"), 200);
    assert_eq!(swift.call("POST", "meta/soon-big", &[]).0, 404);
    // The reads wrote its tombstone: a PUT conditional on the expired version's ETag fails
    // (it would succeed on the expired entry itself).
    runtime().block_on(async {
        let e = s3
            .put_object()
            .bucket("meta")
            .key("soon-big")
            .if_match(etag(&data))
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(e.raw_response().unwrap().status().as_u16(), 412);
    });
    let (status, _, _) = swift.call(
        "PUT",
        "meta/soon-big",
        &["-H", "If-None-Match: *", "--data-binary", "again"],
    );
    assert_eq!(status, 201);
    assert_eq!(swift.call("GET", "meta/soon-big", &[]).2, b"again");

    // The expirer deleted the unread one: the container counts only what stays (counts are
    // added up from the index, which still held the expired entry until then).
    let count = || {
        header(&swift.head("exp").1, "x-container-object-count")
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the expirer did not delete exp/unread within 60 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

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
fn chunked_puts_and_large_objects_read_back_whole_through_both_apis() {
    let cluster = Cluster::start();
    let swift = Swift::login(&cluster);
    chunked_puts_store_bodies_of_any_length(&cluster, &swift);
    static_large_objects_read_as_their_segments(&cluster, &swift);
    dynamic_large_objects_read_as_the_objects_under_their_prefix(&cluster, &swift);
}

fn md5_hex(data: &[u8]) -> String {
    etag(data).trim_matches('"').to_owned()
}

fn chunked_puts_store_bodies_of_any_length(cluster: &Cluster, swift: &Swift) {
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

fn static_large_objects_read_as_their_segments(cluster: &Cluster, swift: &Swift) {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(swift.call("PUT", "segs", &[]).0, 201);
    assert_eq!(swift.call("PUT", "big", &[]).0, 201);
    let s1 = bytes(1_200_000, 11);
    let s2 = bytes(100, 12);
    let seg3 = bytes(2 * 1024 * 1024, 13);
    for (name, data) in [("s1", &s1), ("s2", &s2), ("s3", &seg3)] {
        let body = file(&dir, name, data);
        let (status, _, _) = swift.call("PUT", &format!("segs/{name}"), &["--data-binary", &body]);
        assert_eq!(status, 201);
    }
    let manifest = serde_json::json!([
        {"path": "/segs/s1", "etag": md5_hex(&s1), "size_bytes": s1.len()},
        {"path": "/segs/s2", "etag": null, "size_bytes": null},
        {"path": "segs/s3", "range": "100-1048675"},
    ]);
    let body = file(&dir, "manifest", manifest.to_string().as_bytes());
    let (status, headers, _) = swift.call(
        "PUT",
        "big/slo?multipart-manifest=put",
        &[
            "-H",
            "Content-Type: text/x-slo",
            "-H",
            "X-Object-Meta-Kind: slo",
            "--data-binary",
            &body,
        ],
    );
    assert_eq!(status, 201);
    let slo_etag = md5_hex(
        format!(
            "{}{}{}:100-1048675;",
            md5_hex(&s1),
            md5_hex(&s2),
            md5_hex(&seg3)
        )
        .as_bytes(),
    );
    assert_eq!(header(&headers, "etag").unwrap(), format!("\"{slo_etag}\""));
    let mut whole = s1.clone();
    whole.extend_from_slice(&s2);
    whole.extend_from_slice(&seg3[100..=1_048_675]);

    let (status, headers, got) = swift.call("GET", "big/slo", &[]);
    assert_eq!(status, 200);
    assert!(got == whole, "{} bytes for {}", got.len(), whole.len());
    assert_eq!(header(&headers, "etag").unwrap(), format!("\"{slo_etag}\""));
    assert_eq!(header(&headers, "x-static-large-object").unwrap(), "True");
    assert_eq!(header(&headers, "content-type").unwrap(), "text/x-slo");
    assert_eq!(header(&headers, "x-object-meta-kind").unwrap(), "slo");
    let (status, headers) = swift.head("big/slo");
    assert_eq!(status, 200);
    let length: usize = header(&headers, "content-length").unwrap().parse().unwrap();
    assert_eq!(length, whole.len());
    // Ranges across segment edges, one and several.
    let (a, b) = (1_199_990, 1_200_120);
    let (status, _, got) = swift.call("GET", "big/slo", &["-H", &format!("Range: bytes={a}-{b}")]);
    assert_eq!(status, 206);
    assert_eq!(got, &whole[a..=b]);
    let (status, headers, got) = swift.call("GET", "big/slo", &["-H", "Range: bytes=0-4,-3"]);
    assert_eq!(status, 206);
    let boundary = header(&headers, "content-type")
        .unwrap()
        .strip_prefix("multipart/byteranges;boundary=")
        .unwrap()
        .to_owned();
    let n = whole.len();
    let mut expected =
        format!("--{boundary}\r\nContent-Type: text/x-slo\r\nContent-Range: bytes 0-4/{n}\r\n\r\n")
            .into_bytes();
    expected.extend_from_slice(&whole[..5]);
    expected.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Type: text/x-slo\r\nContent-Range: bytes {}-{}/{n}\r\n\r\n",
            n - 3,
            n - 1
        )
        .as_bytes(),
    );
    expected.extend_from_slice(&whole[n - 3..]);
    expected.extend_from_slice(format!("\r\n--{boundary}--").as_bytes());
    assert_eq!(got, expected);
    // Listings give the total.
    let (_, _, body) = swift.call("GET", "big?format=json", &[]);
    let listing: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(listing[0]["name"], "slo");
    assert_eq!(listing[0]["bytes"].as_u64(), Some(whole.len() as u64));
    assert_eq!(listing[0]["hash"].as_str(), Some(slo_etag.as_str()));
    // Through S3: the same bytes, whole and ranged, and the same size in listings.
    let s3 = cluster.client();
    runtime().block_on(async {
        let got = s3
            .get_object()
            .bucket("big")
            .key("slo")
            .send()
            .await
            .unwrap();
        assert_eq!(got.content_length(), Some(whole.len() as i64));
        let body = got.body.collect().await.unwrap().into_bytes();
        assert!(body.as_ref() == whole.as_slice());
        let got = s3
            .get_object()
            .bucket("big")
            .key("slo")
            .range(format!("bytes={a}-{b}"))
            .send()
            .await
            .unwrap();
        let body = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(body.as_ref(), &whole[a..=b]);
        let head = s3
            .head_object()
            .bucket("big")
            .key("slo")
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_length(), Some(whole.len() as i64));
        assert_eq!(head.e_tag(), Some(format!("\"{slo_etag}\"").as_str()));
        let listed = s3.list_objects_v2().bucket("big").send().await.unwrap();
        assert_eq!(listed.contents()[0].size(), Some(whole.len() as i64));
    });
    // A POST changes its metadata and leaves it a large object.
    let (status, _, _) = swift.call("POST", "big/slo", &["-H", "X-Object-Meta-Kind: posted"]);
    assert_eq!(status, 202);
    let (_, headers) = swift.head("big/slo");
    assert_eq!(header(&headers, "x-object-meta-kind").unwrap(), "posted");
    assert_eq!(header(&headers, "x-static-large-object").unwrap(), "True");
    assert_eq!(
        header(&headers, "content-length").unwrap(),
        whole.len().to_string()
    );
    // A copy of it is an ordinary object holding its bytes (as Swift copies one), through
    // either API.
    let (status, _, _) = swift.call("COPY", "big/slo", &["-H", "Destination: big/slo-copy"]);
    assert_eq!(status, 201);
    let (status, headers, got) = swift.call("GET", "big/slo-copy", &[]);
    assert_eq!(status, 200);
    assert!(got == whole, "{} bytes for {}", got.len(), whole.len());
    assert_eq!(header(&headers, "x-static-large-object"), None);
    assert_eq!(
        header(&headers, "etag").unwrap().trim_matches('"'),
        md5_hex(&whole)
    );
    runtime().block_on(async {
        let copied = cluster
            .client()
            .copy_object()
            .bucket("big")
            .key("slo-copy-s3")
            .copy_source("big/slo")
            .send()
            .await
            .unwrap();
        let etag = copied.copy_object_result().and_then(|r| r.e_tag()).unwrap();
        assert_eq!(etag.trim_matches('"'), md5_hex(&whole));
    });
    assert_eq!(swift.call("GET", "big/slo-copy-s3", &[]).2, whole);
    // The manifest itself.
    let (status, headers, body) = swift.call("GET", "big/slo?multipart-manifest=get", &[]);
    assert_eq!(status, 200);
    assert!(
        header(&headers, "content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let stored: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(stored.as_array().unwrap().len(), 3);
    assert_eq!(stored[0]["name"], "/segs/s1");
    assert_eq!(stored[0]["hash"].as_str(), Some(md5_hex(&s1).as_str()));
    assert_eq!(stored[2]["range"], "100-1048675");
    assert_eq!(stored[2]["bytes"].as_u64(), Some(seg3.len() as u64));

    // Bad manifests: Swift's "Errors:" body, nothing stored.
    for (manifest, error) in [
        (
            serde_json::json!([{"path": "/segs/nope"}]),
            "/segs/nope, 404 Not Found",
        ),
        (
            serde_json::json!([{"path": "/segs/s1", "etag": "00000000000000000000000000000000"}]),
            "/segs/s1, Etag Mismatch",
        ),
        (
            serde_json::json!([{"path": "/segs/s2", "size_bytes": 99}]),
            "/segs/s2, Size Mismatch",
        ),
        (
            serde_json::json!([{"path": "/segs/s2", "range": "200-300"}]),
            "/segs/s2, Unsatisfiable Range",
        ),
        (
            serde_json::json!([]),
            "Manifest must have at least one segment.",
        ),
        (
            serde_json::json!({"path": "/segs/s1"}),
            "Manifest must be valid JSON.",
        ),
    ] {
        let body = file(&dir, "bad", manifest.to_string().as_bytes());
        let (status, _, got) = swift.call(
            "PUT",
            "big/bad?multipart-manifest=put",
            &["--data-binary", &body],
        );
        assert_eq!(status, 400, "{manifest}");
        let text = String::from_utf8(got).unwrap();
        assert!(text.starts_with("Errors:\n"), "{text}");
        assert!(text.contains(error), "{text}");
    }
    assert_eq!(swift.head("big/bad").0, 404);

    // Deleting with multipart-manifest=delete takes the segments too.
    let (status, _, body) = swift.call("DELETE", "big/slo?multipart-manifest=delete", &[]);
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("Number Deleted: 4"), "{text}");
    assert!(text.contains("Number Not Found: 0"), "{text}");
    for path in ["big/slo", "segs/s1", "segs/s2", "segs/s3"] {
        assert_eq!(swift.head(path).0, 404, "{path}");
    }
}

fn dynamic_large_objects_read_as_the_objects_under_their_prefix(cluster: &Cluster, swift: &Swift) {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(swift.call("PUT", "dsegs", &[]).0, 201);
    let parts = [bytes(1000, 21), bytes(1_500_000, 22), bytes(10, 23)];
    for (i, data) in parts.iter().enumerate() {
        let body = file(&dir, &format!("p{i}"), data);
        let (status, _, _) = swift.call(
            "PUT",
            &format!("dsegs/part-{i:03}"),
            &["--data-binary", &body],
        );
        assert_eq!(status, 201);
    }
    // Not a segment: outside the prefix.
    assert_eq!(
        swift
            .call("PUT", "dsegs/other", &["--data-binary", "zzz"])
            .0,
        201
    );
    let (status, _, _) = swift.call(
        "PUT",
        "big/dlo",
        &["-H", "X-Object-Manifest: dsegs/part-", "--data-binary", ""],
    );
    assert_eq!(status, 201);
    let check = |parts: &[Vec<u8>]| {
        let whole: Vec<u8> = parts.concat();
        let etags: String = parts.iter().map(|p| md5_hex(p)).collect();
        let (status, headers, got) = swift.call("GET", "big/dlo", &[]);
        assert_eq!(status, 200);
        assert!(got == whole, "{} bytes for {}", got.len(), whole.len());
        assert_eq!(
            header(&headers, "etag").unwrap(),
            format!("\"{}\"", md5_hex(etags.as_bytes()))
        );
        assert_eq!(
            header(&headers, "x-object-manifest").unwrap(),
            "dsegs/part-"
        );
        let (a, b) = (990, 1010);
        let (status, _, got) =
            swift.call("GET", "big/dlo", &["-H", &format!("Range: bytes={a}-{b}")]);
        assert_eq!(status, 206);
        assert_eq!(got, &whole[a..=b]);
        // Through S3: the same bytes, size and ETag.
        let s3 = cluster.client();
        runtime().block_on(async {
            let got = s3
                .get_object()
                .bucket("big")
                .key("dlo")
                .send()
                .await
                .unwrap();
            assert_eq!(got.content_length(), Some(whole.len() as i64));
            assert_eq!(
                got.e_tag(),
                Some(format!("\"{}\"", md5_hex(etags.as_bytes())).as_str())
            );
            let body = got.body.collect().await.unwrap().into_bytes();
            assert!(body.as_ref() == whole.as_slice());
            let head = s3
                .head_object()
                .bucket("big")
                .key("dlo")
                .send()
                .await
                .unwrap();
            assert_eq!(head.content_length(), Some(whole.len() as i64));
        });
    };
    check(&parts);
    // A segment added later is part of it.
    let (status, _, _) = swift.call("PUT", "dsegs/part-003", &["--data-binary", "tail"]);
    assert_eq!(status, 201);
    let mut more = parts.to_vec();
    more.push(b"tail".to_vec());
    check(&more);
    // The manifest itself: empty.
    let (status, headers, body) = swift.call("GET", "big/dlo?multipart-manifest=get", &[]);
    assert_eq!(status, 200);
    assert!(body.is_empty());
    assert_eq!(
        header(&headers, "x-object-manifest").unwrap(),
        "dsegs/part-"
    );
    // A malformed manifest header is refused.
    let (status, _, _) = swift.call(
        "PUT",
        "big/dlo2",
        &["-H", "X-Object-Manifest: nocontainer", "--data-binary", ""],
    );
    assert_eq!(status, 400);
}
