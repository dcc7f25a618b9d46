//! Object and bucket tagging, bucket CORS (configuration and the preflight and response
//! headers, S3 and Swift paths) and UploadPartCopy, on a real cluster.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Tag, Tagging, TaggingDirective};

use crate::cluster::{Cluster, bytes, runtime};

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
fn tags_live_with_the_object_version_and_with_the_bucket() {
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
        s3.complete_multipart_upload()
            .bucket("tags")
            .key("mp")
            .upload_id(id)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .parts(
                        aws_sdk_s3::types::CompletedPart::builder()
                            .part_number(1)
                            .e_tag(part.e_tag().unwrap())
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
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
    });
}
