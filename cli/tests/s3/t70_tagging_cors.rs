//! Object and bucket tagging, bucket CORS (configuration and the preflight and response
//! headers, S3 and Swift paths) and UploadPartCopy, on a real cluster.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, CorsConfiguration, CorsRule, Tag, Tagging,
    TaggingDirective,
};

use crate::cluster::{Cluster, bytes, complete_one_part, etag, runtime};

/// Runs curl; returns (status, headers, body). With `signed`, the request carries SigV4.
fn curl(cluster: &Cluster, signed: bool, args: &[&str]) -> (u16, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let body = dir.path().join("body");
    let mut command = std::process::Command::new("curl");
    command
        .args(["-s", "--max-time", "20", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"]);
    if signed {
        command
            .args(["--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
            .arg(format!("{}:{}", cluster.access_key, cluster.secret_key))
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]);
    }
    let out = command.args(args).output().unwrap();
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let headers = std::fs::read_to_string(&headers).unwrap_or_default();
    let body = String::from_utf8_lossy(&std::fs::read(&body).unwrap_or_default()).into_owned();
    (status, headers, body)
}

/// The value of header `name` in curl's dump of the (last) response's headers.
fn header(headers: &str, name: &str) -> Option<String> {
    headers.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// The S3 error code of an SDK error.
fn code<E: aws_sdk_s3::error::ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("").to_owned()
}

fn tagging(pairs: &[(&str, &str)]) -> Tagging {
    Tagging::builder()
        .set_tag_set(Some(
            pairs
                .iter()
                .map(|(k, v)| Tag::builder().key(*k).value(*v).build().unwrap())
                .collect(),
        ))
        .build()
        .unwrap()
}

fn pairs(tags: &[Tag]) -> Vec<(String, String)> {
    tags.iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A Swift token and storage URL for the cluster's Swift user.
fn swift_login(cluster: &Cluster) -> (String, String) {
    let env = std::fs::read_to_string(cluster.path().join("dev.env")).unwrap();
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_owned())
            .unwrap_or_else(|| panic!("{name} in dev.env"))
    };
    let (status, headers, _) = curl(
        cluster,
        false,
        &[
            "-H",
            &format!("X-Auth-User: {}", var("ST_USER")),
            "-H",
            &format!("X-Auth-Key: {}", var("ST_KEY")),
            &var("ST_AUTH"),
        ],
    );
    assert_eq!(status, 200);
    (
        header(&headers, "x-auth-token").unwrap(),
        header(&headers, "x-storage-url").unwrap(),
    )
}

#[test]
fn tags_live_with_the_object_and_the_bucket_and_parts_copy_ranges() {
    let cluster = Cluster::start();
    let s3 = cluster.client_no_retry();
    runtime().block_on(async {
        s3.create_bucket().bucket("tags").send().await.unwrap();
        let data = bytes(10_000, 70);

        // x-amz-tagging on PUT: kept in order, counted on GET and HEAD, never user metadata.
        let put = s3
            .put_object()
            .bucket("tags")
            .key("a")
            .metadata("owner", "ana")
            .tagging("project=blue&note=two%20words&empty=")
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        let got = s3
            .get_object_tagging()
            .bucket("tags")
            .key("a")
            .send()
            .await
            .unwrap();
        assert_eq!(
            pairs(got.tag_set()),
            owned(&[("project", "blue"), ("note", "two words"), ("empty", "")])
        );
        let object = s3
            .get_object()
            .bucket("tags")
            .key("a")
            .send()
            .await
            .unwrap();
        assert_eq!(object.tag_count(), Some(3));
        let metadata = object.metadata().cloned().unwrap_or_default();
        assert_eq!(metadata.len(), 1, "{metadata:?}");
        let last_modified = object.last_modified().cloned();
        let (status, headers, _) = curl(
            &cluster,
            true,
            &["-I", &format!("{}/tags/a", cluster.endpoint)],
        );
        assert_eq!(status, 200);
        assert_eq!(
            header(&headers, "x-amz-tagging-count").as_deref(),
            Some("3")
        );
        assert!(
            !headers.to_ascii_lowercase().contains("tagging="),
            "{headers}"
        );

        // PutObjectTagging replaces the set; same version: ETag, Last-Modified, bytes, metadata.
        s3.put_object_tagging()
            .bucket("tags")
            .key("a")
            .tagging(tagging(&[("k", "v"), ("ünï", "cödé")]))
            .send()
            .await
            .unwrap();
        let got = s3
            .get_object_tagging()
            .bucket("tags")
            .key("a")
            .send()
            .await
            .unwrap();
        assert_eq!(pairs(got.tag_set()), owned(&[("k", "v"), ("ünï", "cödé")]));
        let object = s3
            .get_object()
            .bucket("tags")
            .key("a")
            .send()
            .await
            .unwrap();
        assert_eq!(object.tag_count(), Some(2));
        assert_eq!(object.e_tag(), put.e_tag());
        assert_eq!(object.last_modified().cloned(), last_modified);
        assert_eq!(
            object.metadata().and_then(|m| m.get("owner")).cloned(),
            Some("ana".to_owned())
        );
        assert!(object.body.collect().await.unwrap().into_bytes().as_ref() == data.as_slice());

        // Through Swift the object shows its metadata, never the tags.
        let (token, url) = swift_login(&cluster);
        let (status, headers, _) = curl(
            &cluster,
            false,
            &[
                "-I",
                "-H",
                &format!("X-Auth-Token: {token}"),
                &format!("{url}/tags/a"),
            ],
        );
        assert_eq!(status, 200, "{headers}");
        assert_eq!(
            header(&headers, "x-object-meta-owner").as_deref(),
            Some("ana")
        );
        assert!(
            !headers.to_ascii_lowercase().contains("tagging"),
            "{headers}"
        );

        // Bad tag sets: InvalidTag (400), nothing changed.
        let eleven: Vec<(String, String)> =
            (0..11).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        let eleven: Vec<(&str, &str)> = eleven
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let long_key = "k".repeat(129);
        let long_value = "v".repeat(257);
        for bad in [
            eleven.clone(),
            vec![("dup", "1"), ("dup", "2")],
            vec![(long_key.as_str(), "v")],
            vec![("k", long_value.as_str())],
            vec![("", "v")],
        ] {
            let err = s3
                .put_object_tagging()
                .bucket("tags")
                .key("a")
                .tagging(tagging(&bad))
                .send()
                .await
                .unwrap_err();
            assert_eq!(code(&err), "InvalidTag", "{bad:?}");
            assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
        }
        let err = s3
            .put_object()
            .bucket("tags")
            .key("b")
            .tagging("a=1&a=2")
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err), "InvalidTag");
        let err = s3
            .head_object()
            .bucket("tags")
            .key("b")
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
        let got = s3
            .get_object_tagging()
            .bucket("tags")
            .key("a")
            .send()
            .await
            .unwrap();
        assert_eq!(got.tag_set().len(), 2);

        // DeleteObjectTagging; tags on keys that are not there.
        s3.delete_object_tagging()
            .bucket("tags")
            .key("a")
            .send()
            .await
            .unwrap();
        let got = s3
            .get_object_tagging()
            .bucket("tags")
            .key("a")
            .send()
            .await
            .unwrap();
        assert!(got.tag_set().is_empty());
        let object = s3
            .get_object()
            .bucket("tags")
            .key("a")
            .send()
            .await
            .unwrap();
        assert_eq!(object.tag_count(), None);
        for key in ["never-written", "deleted"] {
            if key == "deleted" {
                s3.put_object()
                    .bucket("tags")
                    .key(key)
                    .tagging("x=1")
                    .body(ByteStream::from_static(b"x"))
                    .send()
                    .await
                    .unwrap();
                s3.delete_object()
                    .bucket("tags")
                    .key(key)
                    .send()
                    .await
                    .unwrap();
            }
            let err = s3
                .put_object_tagging()
                .bucket("tags")
                .key(key)
                .tagging(tagging(&[("k", "v")]))
                .send()
                .await
                .unwrap_err();
            assert_eq!(code(&err), "NoSuchKey", "{key}");
            let err = s3
                .get_object_tagging()
                .bucket("tags")
                .key(key)
                .send()
                .await
                .unwrap_err();
            assert_eq!(code(&err), "NoSuchKey", "{key}");
        }
        let err = s3
            .get_object_tagging()
            .bucket("no-such-bucket")
            .key("a")
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err), "NoSuchBucket");

        // Tag changes racing PUTs of the key never bring an older version back: each
        // rewrite is conditional on the version it read.
        for round in 0..12u64 {
            let data = bytes(100, 1000 + round);
            let (put, tag) = tokio::join!(
                s3.put_object()
                    .bucket("tags")
                    .key("raced")
                    .body(ByteStream::from(data.clone()))
                    .send(),
                s3.put_object_tagging()
                    .bucket("tags")
                    .key("raced")
                    .tagging(tagging(&[("round", "x")]))
                    .send(),
            );
            put.unwrap();
            if let Err(e) = tag {
                assert!(
                    ["OperationAborted", "NoSuchKey"].contains(&code(&e).as_str()),
                    "{e:?}"
                );
            }
            let got = s3
                .get_object()
                .bucket("tags")
                .key("raced")
                .send()
                .await
                .unwrap();
            let body = got.body.collect().await.unwrap().into_bytes();
            assert!(
                body.as_ref() == data.as_slice(),
                "round {round}: an older version came back"
            );
        }

        // A new PUT of the key is a new object: no tags.
        s3.put_object_tagging()
            .bucket("tags")
            .key("a")
            .tagging(tagging(&[("k", "v")]))
            .send()
            .await
            .unwrap();
        s3.put_object()
            .bucket("tags")
            .key("a")
            .body(ByteStream::from_static(b"new"))
            .send()
            .await
            .unwrap();
        let got = s3
            .get_object_tagging()
            .bucket("tags")
            .key("a")
            .send()
            .await
            .unwrap();
        assert!(got.tag_set().is_empty());

        // CopyObject: COPY keeps the source's tags, REPLACE takes the request's.
        s3.put_object()
            .bucket("tags")
            .key("src")
            .tagging("from=source")
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        s3.copy_object()
            .bucket("tags")
            .key("copy-kept")
            .copy_source("tags/src")
            .send()
            .await
            .unwrap();
        let got = s3
            .get_object_tagging()
            .bucket("tags")
            .key("copy-kept")
            .send()
            .await
            .unwrap();
        assert_eq!(pairs(got.tag_set()), owned(&[("from", "source")]));
        s3.copy_object()
            .bucket("tags")
            .key("copy-replaced")
            .copy_source("tags/src")
            .tagging_directive(TaggingDirective::Replace)
            .tagging("from=request&second=2")
            .send()
            .await
            .unwrap();
        let got = s3
            .get_object_tagging()
            .bucket("tags")
            .key("copy-replaced")
            .send()
            .await
            .unwrap();
        assert_eq!(
            pairs(got.tag_set()),
            owned(&[("from", "request"), ("second", "2")])
        );
        s3.copy_object()
            .bucket("tags")
            .key("copy-untagged")
            .copy_source("tags/src")
            .tagging_directive(TaggingDirective::Replace)
            .send()
            .await
            .unwrap();
        let got = s3
            .get_object_tagging()
            .bucket("tags")
            .key("copy-untagged")
            .send()
            .await
            .unwrap();
        assert!(got.tag_set().is_empty());

        // Multipart: the tags of CreateMultipartUpload apply at Complete.
        let upload = s3
            .create_multipart_upload()
            .bucket("tags")
            .key("mp")
            .tagging("multi=part")
            .send()
            .await
            .unwrap();
        let id = upload.upload_id().unwrap();
        let part = s3
            .upload_part()
            .bucket("tags")
            .key("mp")
            .upload_id(id)
            .part_number(1)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        complete_one_part(&s3, "tags", "mp", id, part.e_tag().unwrap()).await;
        let got = s3
            .get_object_tagging()
            .bucket("tags")
            .key("mp")
            .send()
            .await
            .unwrap();
        assert_eq!(pairs(got.tag_set()), owned(&[("multi", "part")]));

        // Bucket tagging: NoSuchTagSet, then a set (up to 50), then deleted.
        let err = s3
            .get_bucket_tagging()
            .bucket("tags")
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err), "NoSuchTagSet");
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
        let fifty: Vec<(String, String)> = (0..50)
            .map(|i| (format!("key{i:02}"), format!("value {i}")))
            .collect();
        let fifty_refs: Vec<(&str, &str)> = fifty
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        s3.put_bucket_tagging()
            .bucket("tags")
            .tagging(tagging(&fifty_refs))
            .send()
            .await
            .unwrap();
        let got = s3.get_bucket_tagging().bucket("tags").send().await.unwrap();
        assert_eq!(pairs(got.tag_set()), fifty);
        let mut fifty_one = fifty_refs.clone();
        fifty_one.push(("one-more", "x"));
        let err = s3
            .put_bucket_tagging()
            .bucket("tags")
            .tagging(tagging(&fifty_one))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err), "InvalidTag");
        s3.delete_bucket_tagging()
            .bucket("tags")
            .send()
            .await
            .unwrap();
        let err = s3
            .get_bucket_tagging()
            .bucket("tags")
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err), "NoSuchTagSet");
        let err = s3
            .put_bucket_tagging()
            .bucket("no-such-bucket")
            .tagging(tagging(&[("k", "v")]))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err), "NoSuchBucket");

        upload_part_copies(&s3).await;
        composite_checksums(&s3).await;
    });
}

/// The SHA-256 of `data`, in base64.
fn sha256_base64(data: &[u8]) -> String {
    let mut h = nimbus_core::checksum::ChecksumAlgorithm::Sha256.checksummer();
    h.update(data);
    h.finish_base64()
}

/// Multipart checksums: per-part SHA-256 verified, stored and listed (copied parts get one
/// computed), and the object's composite checksum (`base64-N`) from Complete, HEAD and GET.
async fn composite_checksums(s3: &aws_sdk_s3::Client) {
    use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode};
    let first = bytes(5 << 20, 73);
    let second = bytes(1000, 74);
    let upload = s3
        .create_multipart_upload()
        .bucket("tags")
        .key("summed")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap();
    let id = upload.upload_id().unwrap();
    let part = |number: i32, data: &[u8], algorithm: ChecksumAlgorithm| {
        s3.upload_part()
            .bucket("tags")
            .key("summed")
            .upload_id(id)
            .part_number(number)
            .checksum_algorithm(algorithm)
            .body(ByteStream::from(data.to_vec()))
            .send()
    };
    // A part checksummed with another algorithm than the upload's is refused.
    let err = part(1, &first, ChecksumAlgorithm::Crc32).await.unwrap_err();
    assert_eq!(code(&err), "InvalidRequest");
    let p1 = part(1, &first, ChecksumAlgorithm::Sha256).await.unwrap();
    assert_eq!(p1.checksum_sha256(), Some(sha256_base64(&first).as_str()));
    // A copied part: its checksum is computed as it streams.
    let p2 = s3
        .upload_part_copy()
        .bucket("tags")
        .key("summed")
        .upload_id(id)
        .part_number(2)
        .copy_source("tags/big")
        .copy_source_range(format!("bytes=0-{}", (5 << 20) - 1))
        .send()
        .await
        .unwrap();
    let copied = &bytes((6 << 20) + 100, 71)[..5 << 20];
    let p2 = p2.copy_part_result().unwrap();
    assert_eq!(p2.checksum_sha256(), Some(sha256_base64(copied).as_str()));
    let p3 = part(3, &second, ChecksumAlgorithm::Sha256).await.unwrap();
    let listed = s3
        .list_parts()
        .bucket("tags")
        .key("summed")
        .upload_id(id)
        .send()
        .await
        .unwrap();
    let listed: Vec<Option<&str>> = listed.parts().iter().map(|p| p.checksum_sha256()).collect();
    assert_eq!(
        listed,
        [
            Some(sha256_base64(&first).as_str()),
            Some(sha256_base64(copied).as_str()),
            Some(sha256_base64(&second).as_str())
        ]
    );
    let completed = |sha: &str, number: i32, etag: &str| {
        CompletedPart::builder()
            .part_number(number)
            .e_tag(etag)
            .checksum_sha256(sha)
            .build()
    };
    // Parts named with another checksum than theirs: InvalidPart.
    let err = s3
        .complete_multipart_upload()
        .bucket("tags")
        .key("summed")
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(completed(&sha256_base64(b"other"), 1, p1.e_tag().unwrap()))
                .parts(completed(
                    p3.checksum_sha256().unwrap(),
                    3,
                    p3.e_tag().unwrap(),
                ))
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "InvalidPart");
    let done = s3
        .complete_multipart_upload()
        .bucket("tags")
        .key("summed")
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(completed(
                    p1.checksum_sha256().unwrap(),
                    1,
                    p1.e_tag().unwrap(),
                ))
                .parts(completed(
                    p2.checksum_sha256().unwrap(),
                    2,
                    p2.e_tag().unwrap(),
                ))
                .parts(completed(
                    p3.checksum_sha256().unwrap(),
                    3,
                    p3.e_tag().unwrap(),
                ))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut composite = nimbus_core::checksum::ChecksumAlgorithm::Sha256.checksummer();
    for data in [&first[..], copied, &second[..]] {
        let mut h = nimbus_core::checksum::ChecksumAlgorithm::Sha256.checksummer();
        h.update(data);
        composite.update(&h.finish());
    }
    let expected = format!("{}-3", composite.finish_base64());
    assert_eq!(done.checksum_sha256(), Some(expected.as_str()));
    let head = s3
        .head_object()
        .bucket("tags")
        .key("summed")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(head.checksum_sha256(), Some(expected.as_str()));
    let got = s3
        .get_object()
        .bucket("tags")
        .key("summed")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(got.checksum_sha256(), Some(expected.as_str()));
    let body = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(body.len(), first.len() + copied.len() + second.len());
    // Without the mode, no checksum.
    let head = s3
        .head_object()
        .bucket("tags")
        .key("summed")
        .send()
        .await
        .unwrap();
    assert_eq!(head.checksum_sha256(), None);
}

/// UploadPartCopy: two ranges of a fragmented source (out of order) and a whole inline one
/// from another bucket, assembled into one object; bad ranges, missing sources and copy conditions.
async fn upload_part_copies(s3: &aws_sdk_s3::Client) {
    s3.create_bucket().bucket("other").send().await.unwrap();
    let big = bytes((6 << 20) + 100, 71);
    let small = bytes(3000, 72);
    let big_put = s3
        .put_object()
        .bucket("tags")
        .key("big")
        .body(ByteStream::from(big.clone()))
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket("other")
        .key("small")
        .body(ByteStream::from(small.clone()))
        .send()
        .await
        .unwrap();
    let upload = s3
        .create_multipart_upload()
        .bucket("tags")
        .key("assembled")
        .send()
        .await
        .unwrap();
    let id = upload.upload_id().unwrap();
    let split = 5 << 20;
    let mut completed = Vec::new();
    for (number, source, range, expected) in [
        (
            1,
            "tags/big",
            Some(format!("bytes=100-{}", big.len() - 1)),
            &big[100..],
        ),
        (
            2,
            "tags/big",
            Some(format!("bytes=0-{}", split - 1)),
            &big[..split],
        ),
        (3, "other/small", None, &small[..]),
    ] {
        let copied = s3
            .upload_part_copy()
            .bucket("tags")
            .key("assembled")
            .upload_id(id)
            .part_number(number)
            .copy_source(source)
            .set_copy_source_range(range)
            .send()
            .await
            .unwrap();
        let part_etag = copied.copy_part_result().and_then(|r| r.e_tag()).unwrap();
        assert_eq!(part_etag, etag(expected), "part {number}");
        completed.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(part_etag)
                .build(),
        );
    }
    let parts = s3
        .list_parts()
        .bucket("tags")
        .key("assembled")
        .upload_id(id)
        .send()
        .await
        .unwrap();
    let sizes: Vec<i64> = parts.parts().iter().filter_map(|p| p.size()).collect();
    assert_eq!(sizes, [(big.len() - 100) as i64, split as i64, 3000]);

    // Bad ranges, missing sources, copy-source conditions.
    let copy = |source: &str| {
        s3.upload_part_copy()
            .bucket("tags")
            .key("assembled")
            .upload_id(id)
            .part_number(4)
            .copy_source(source)
    };
    let err = copy("tags/big")
        .copy_source_range(format!("bytes=0-{}", big.len()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "InvalidRange");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(416));
    for malformed in ["bytes=9-3", "bytes=4-", "items=0-3"] {
        let err = copy("tags/big")
            .copy_source_range(malformed)
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err), "InvalidArgument", "{malformed}");
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    }
    let err = copy("tags/nothing-here").send().await.unwrap_err();
    assert_eq!(code(&err), "NoSuchKey");
    let err = copy("no-such-bucket/big").send().await.unwrap_err();
    assert_eq!(code(&err), "NoSuchBucket");
    let err = copy("tags/big")
        .copy_source_if_match("\"0123456789abcdef0123456789abcdef\"")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(412));
    let err = copy("tags/big")
        .copy_source_if_none_match(big_put.e_tag().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(412));
    let err = s3
        .upload_part_copy()
        .bucket("tags")
        .key("assembled")
        .upload_id("0123456789abcdef0123456789abcdef")
        .part_number(1)
        .copy_source("tags/big")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NoSuchUpload");
    copy("tags/big")
        .copy_source_if_match(big_put.e_tag().unwrap())
        .copy_source_range("bytes=0-0")
        .send()
        .await
        .unwrap();

    // Complete with the three copied parts (part 4 left out): the bytes in order.
    s3.complete_multipart_upload()
        .bucket("tags")
        .key("assembled")
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket("tags")
        .key("assembled")
        .send()
        .await
        .unwrap();
    let expected: Vec<u8> = big[100..]
        .iter()
        .chain(&big[..split])
        .chain(&small)
        .copied()
        .collect();
    assert_eq!(got.content_length(), Some(expected.len() as i64));
    assert!(got.body.collect().await.unwrap().into_bytes().as_ref() == expected.as_slice());
}

/// Sets attributes of a bucket in the cluster map, as another API (Swift container
/// metadata) would: a map write signed with the cluster secret, sent to each metadata member
/// until the leader takes it.
async fn set_bucket_attributes(cluster: &Cluster, bucket: &str, changes: &[(&str, &str)]) {
    use nimbus_ring::map::MapCommand;
    use nimbus_ring::raft::network::{PeerClient, paths};
    let text = std::fs::read_to_string(cluster.path().join("cluster-secret")).unwrap();
    let secret = nimbus_core::auth::ClusterSecret::from_hex(&text).unwrap();
    let client = PeerClient::new(secret);
    let command = MapCommand::SetBucketAttributes {
        name: bucket.to_owned(),
        changes: changes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Some((*v).to_owned())))
            .collect(),
    };
    for _ in 0..50 {
        for i in 1..=5u16 {
            let addr = format!("127.0.0.1:{}", cluster.base_port + 100 + i);
            let answer = client
                .post_json(
                    &addr,
                    paths::WRITE,
                    &command,
                    None,
                    std::time::Duration::from_secs(10),
                    1 << 20,
                )
                .await;
            if let Ok(a) = answer
                && a.status.as_u16() == 200
            {
                let body = String::from_utf8_lossy(&a.body);
                assert!(body.contains("Ok") || body.contains("ok"), "{body}");
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("no metadata member took the write");
}

fn cors_rule(
    origins: &[&str],
    methods: &[&str],
    headers: &[&str],
    expose: &[&str],
    max_age: Option<i32>,
) -> CorsRule {
    CorsRule::builder()
        .set_allowed_origins(Some(origins.iter().map(|s| (*s).to_owned()).collect()))
        .set_allowed_methods(Some(methods.iter().map(|s| (*s).to_owned()).collect()))
        .set_allowed_headers(
            (!headers.is_empty()).then(|| headers.iter().map(|s| (*s).to_owned()).collect()),
        )
        .set_expose_headers(
            (!expose.is_empty()).then(|| expose.iter().map(|s| (*s).to_owned()).collect()),
        )
        .set_max_age_seconds(max_age)
        .build()
        .unwrap()
}

fn cors_config(rules: Vec<CorsRule>) -> CorsConfiguration {
    CorsConfiguration::builder()
        .set_cors_rules(Some(rules))
        .build()
        .unwrap()
}

/// Sends a preflight for `url`; returns (status, headers, body).
fn preflight(
    cluster: &Cluster,
    url: &str,
    origin: &str,
    method: &str,
    headers: Option<&str>,
) -> (u16, String, String) {
    let mut args = vec![
        "-X".to_owned(),
        "OPTIONS".to_owned(),
        "-H".to_owned(),
        format!("Origin: {origin}"),
        "-H".to_owned(),
        format!("Access-Control-Request-Method: {method}"),
    ];
    if let Some(h) = headers {
        args.push("-H".to_owned());
        args.push(format!("Access-Control-Request-Headers: {h}"));
    }
    args.push(url.to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(cluster, false, &args)
}

#[test]
fn bucket_cors_answers_preflights_and_marks_responses() {
    let cluster = Cluster::start();
    let s3 = cluster.client_no_retry();
    let page = format!("{}/web/page", cluster.endpoint);
    runtime().block_on(async {
        s3.create_bucket().bucket("web").send().await.unwrap();
        s3.put_object()
            .bucket("web")
            .key("page")
            .metadata("owner", "ana")
            .body(ByteStream::from_static(b"<html></html>"))
            .send()
            .await
            .unwrap();

        // No configuration yet: NoSuchCORSConfiguration, and preflights are refused.
        let err = s3.get_bucket_cors().bucket("web").send().await.unwrap_err();
        assert_eq!(code(&err), "NoSuchCORSConfiguration");
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
        let (status, _, body) = preflight(&cluster, &page, "https://app.example.com", "GET", None);
        assert_eq!(status, 403);
        assert!(body.contains("CORSResponse"), "{body}");

        // Bad configurations: 400, nothing stored.
        for (rules, expected) in [
            (
                vec![cors_rule(&["*"], &["PATCH"], &[], &[], None)],
                "InvalidRequest",
            ),
            (
                vec![cors_rule(&["http://*.*.example"], &["GET"], &[], &[], None)],
                "InvalidRequest",
            ),
            (
                (0..101)
                    .map(|_| cors_rule(&["*"], &["GET"], &[], &[], None))
                    .collect(),
                "MalformedXML",
            ),
        ] {
            let err = s3
                .put_bucket_cors()
                .bucket("web")
                .cors_configuration(cors_config(rules))
                .send()
                .await
                .unwrap_err();
            assert_eq!(code(&err), expected);
            assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
        }
        let err = s3.get_bucket_cors().bucket("web").send().await.unwrap_err();
        assert_eq!(code(&err), "NoSuchCORSConfiguration");

        // A configuration: stored and read back as given.
        let rules = vec![
            cors_rule(
                &["https://*.example.com"],
                &["GET", "HEAD"],
                &["x-amz-*"],
                &["ETag", "x-amz-meta-owner"],
                Some(600),
            ),
            cors_rule(&["*"], &["PUT"], &["*"], &[], None),
        ];
        s3.put_bucket_cors()
            .bucket("web")
            .cors_configuration(cors_config(rules.clone()))
            .send()
            .await
            .unwrap();
        let got = s3.get_bucket_cors().bucket("web").send().await.unwrap();
        assert_eq!(got.cors_rules(), rules.as_slice());

        // Preflights: the first rule allowing origin, method and headers answers.
        let (status, headers, _) = preflight(
            &cluster,
            &page,
            "https://app.example.com",
            "GET",
            Some("X-Amz-Date, x-amz-content-sha256"),
        );
        assert_eq!(status, 200, "{headers}");
        let h = |name: &str| header(&headers, name);
        assert_eq!(
            h("access-control-allow-origin").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            h("access-control-allow-methods").as_deref(),
            Some("GET, HEAD")
        );
        assert_eq!(
            h("access-control-allow-headers").as_deref(),
            Some("x-amz-date, x-amz-content-sha256")
        );
        assert_eq!(h("access-control-max-age").as_deref(), Some("600"));
        assert_eq!(
            h("access-control-expose-headers").as_deref(),
            Some("ETag, x-amz-meta-owner")
        );
        let (status, _, body) = preflight(
            &cluster,
            &page,
            "https://app.example.com",
            "GET",
            Some("content-type"),
        );
        assert_eq!(status, 403, "a header no rule allows");
        assert!(body.contains("CORSResponse"), "{body}");
        let (status, _, _) = preflight(&cluster, &page, "https://example.com", "GET", None);
        assert_eq!(status, 403, "the wildcard needs a subdomain");
        let (status, _, _) = preflight(&cluster, &page, "https://app.example.com", "DELETE", None);
        assert_eq!(status, 403, "a method no rule allows");
        let (status, headers, _) = preflight(
            &cluster,
            &page,
            "http://anyone.test",
            "PUT",
            Some("content-type"),
        );
        assert_eq!(status, 200);
        assert_eq!(
            header(&headers, "access-control-allow-origin").as_deref(),
            Some("*")
        );
        // Virtual-host style, and on the bucket itself.
        let (status, _, _) = curl(
            &cluster,
            false,
            &[
                "-X",
                "OPTIONS",
                "-H",
                "Host: web.localhost",
                "-H",
                "Origin: https://app.example.com",
                "-H",
                "Access-Control-Request-Method: HEAD",
                &format!("{}/page", cluster.endpoint),
            ],
        );
        assert_eq!(status, 200);
        let (status, _, _) = preflight(
            &cluster,
            &format!("{}/web", cluster.endpoint),
            "https://app.example.com",
            "GET",
            None,
        );
        assert_eq!(status, 200);
        // Without Origin: not a preflight S3 can answer.
        let (status, _, _) = curl(&cluster, false, &["-X", "OPTIONS", &page]);
        assert_eq!(status, 400);

        // Requests with Origin: the matching rule's headers, on errors too; none otherwise.
        let (status, headers, body) = curl(
            &cluster,
            true,
            &["-H", "Origin: https://app.example.com", &page],
        );
        assert_eq!(status, 200);
        assert_eq!(body, "<html></html>");
        assert_eq!(
            header(&headers, "access-control-allow-origin").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            header(&headers, "access-control-expose-headers").as_deref(),
            Some("ETag, x-amz-meta-owner")
        );
        assert!(header(&headers, "vary").is_some_and(|v| v.contains("Origin")));
        let (status, headers, _) = curl(
            &cluster,
            true,
            &[
                "-H",
                "Origin: https://app.example.com",
                &format!("{}/web/missing", cluster.endpoint),
            ],
        );
        assert_eq!(status, 404);
        assert_eq!(
            header(&headers, "access-control-allow-origin").as_deref(),
            Some("https://app.example.com")
        );
        let (status, headers, _) =
            curl(&cluster, true, &["-H", "Origin: https://evil.test", &page]);
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "access-control-allow-origin"), None);
        let (_, headers, _) = curl(&cluster, true, &[&page]);
        assert_eq!(header(&headers, "access-control-allow-origin"), None);

        // Swift containers: CORS from the container's metadata, on Swift's paths.
        let (token, url) = swift_login(&cluster);
        let swift_page = format!("{url}/web/page");
        let (status, _, _) = preflight(&cluster, &swift_page, "http://swift.test", "GET", None);
        assert_eq!(status, 401, "no container metadata yet");
        set_bucket_attributes(
            &cluster,
            "web",
            &[
                (
                    "meta:access-control-allow-origin",
                    "http://swift.test https://other.test",
                ),
                ("meta:access-control-max-age", "45"),
                ("meta:access-control-expose-headers", "x-object-meta-owner"),
            ],
        )
        .await;
        let mut answered = (0, String::new(), String::new());
        for _ in 0..50 {
            answered = preflight(
                &cluster,
                &swift_page,
                "http://swift.test",
                "PUT",
                Some("x-auth-token"),
            );
            if answered.0 == 200 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let (status, headers, _) = answered;
        assert_eq!(status, 200, "{headers}");
        assert_eq!(
            header(&headers, "access-control-allow-origin").as_deref(),
            Some("http://swift.test")
        );
        assert_eq!(
            header(&headers, "access-control-max-age").as_deref(),
            Some("45")
        );
        assert_eq!(
            header(&headers, "access-control-allow-headers").as_deref(),
            Some("x-auth-token")
        );
        let (status, _, _) = preflight(&cluster, &swift_page, "http://evil.test", "GET", None);
        assert_eq!(status, 401);
        let (status, _, _) = preflight(&cluster, &url, "http://swift.test", "GET", None);
        assert_eq!(status, 401, "an account has no CORS settings");
        let auth = format!("X-Auth-Token: {token}");
        let (status, headers, _) = curl(
            &cluster,
            false,
            &["-H", &auth, "-H", "Origin: https://other.test", &swift_page],
        );
        assert_eq!(status, 200);
        assert_eq!(
            header(&headers, "access-control-allow-origin").as_deref(),
            Some("https://other.test")
        );
        assert!(
            header(&headers, "access-control-expose-headers")
                .is_some_and(|e| e.contains("etag") && e.contains("x-object-meta-owner")),
            "{headers}"
        );
        let (_, headers, _) = curl(
            &cluster,
            false,
            &["-H", &auth, "-H", "Origin: http://evil.test", &swift_page],
        );
        assert_eq!(header(&headers, "access-control-allow-origin"), None);

        // DeleteBucketCors: gone, and preflights are refused again.
        s3.delete_bucket_cors().bucket("web").send().await.unwrap();
        let err = s3.get_bucket_cors().bucket("web").send().await.unwrap_err();
        assert_eq!(code(&err), "NoSuchCORSConfiguration");
        let (status, _, _) = preflight(&cluster, &page, "https://app.example.com", "GET", None);
        assert_eq!(status, 403);
    });
}
