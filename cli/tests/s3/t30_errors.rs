//! Bad input gets the right S3 error and stores nothing.

use aws_sdk_s3::primitives::ByteStream;

use crate::cluster::{Cluster, client, runtime};

fn status<E>(err: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> u16 {
    err.raw_response().map_or(0, |r| r.status().as_u16())
}

fn code<E: aws_sdk_s3::error::ProvideErrorMetadata>(
    err: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> String {
    err.as_service_error()
        .and_then(|e| e.code())
        .unwrap_or("")
        .to_owned()
}

/// Runs curl with SigV4 against the cluster; returns (status, body).
fn curl(cluster: &Cluster, args: &[&str]) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--max-time",
            "5",
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
        ])
        .arg(format!("{}:{}", cluster.access_key, cluster.secret_key))
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn malformed_requests_on_the_wire_store_nothing() {
    let cluster = Cluster::start();
    let s3 = cluster.client_no_retry();
    let url = |path: &str| format!("{}/{path}", cluster.endpoint);
    runtime().block_on(async {
        s3.create_bucket().bucket("wire").send().await.unwrap();
    });
    // A body shorter than its Content-Length: the connection ends (curl gives up), nothing
    // is stored, small or large.
    for declared in ["1000", "3000000"] {
        let (status, _) = curl(
            &cluster,
            &[
                "-X",
                "PUT",
                "-H",
                &format!("Content-Length: {declared}"),
                "--data-binary",
                "only this",
                &url("wire/short"),
            ],
        );
        assert_ne!(status, 200, "a short body must not succeed");
    }
    // Malformed XML completing an upload.
    let upload = runtime().block_on(async {
        s3.create_multipart_upload()
            .bucket("wire")
            .key("mpu")
            .send()
            .await
            .unwrap()
    });
    let id = upload.upload_id().unwrap();
    let (answered, body) = curl(
        &cluster,
        &[
            "-X",
            "POST",
            "--data-binary",
            "<CompleteMultipartUpload><Part>",
            &url(&format!("wire/mpu?uploadId={id}")),
        ],
    );
    assert_eq!(answered, 400, "{body}");
    assert!(body.contains("MalformedXML"), "{body}");
    runtime().block_on(async {
        // A request signed an hour ago.
        let late = crate::cluster::client_at(&cluster, std::time::Duration::from_secs(3600));
        let err = late
            .list_objects_v2()
            .bucket("wire")
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            (status(&err), code(&err).as_str()),
            (403, "RequestTimeTooSkewed")
        );
        for key in ["short", "mpu"] {
            let err = s3
                .head_object()
                .bucket("wire")
                .key(key)
                .send()
                .await
                .unwrap_err();
            assert_eq!(status(&err), 404, "{key} must not be stored");
        }
    });
}

#[test]
fn bad_requests_get_s3_errors_and_store_nothing() {
    let cluster = Cluster::start();
    let s3 = cluster.client_no_retry();
    runtime().block_on(async {
        s3.create_bucket().bucket("errors").send().await.unwrap();

        let wrong_secret = client(
            &cluster.endpoint,
            &cluster.access_key,
            "not-the-secret-at-all",
            1,
        );
        let err = wrong_secret.list_buckets().send().await.unwrap_err();
        assert_eq!(
            (status(&err), code(&err).as_str()),
            (403, "SignatureDoesNotMatch")
        );

        let unknown = client(
            &cluster.endpoint,
            "AKIAUNKNOWNKEY000000",
            "whatever-secret",
            1,
        );
        let err = unknown.list_buckets().send().await.unwrap_err();
        assert_eq!(
            (status(&err), code(&err).as_str()),
            (403, "InvalidAccessKeyId")
        );

        // Content-MD5 that does not match the body: BadDigest, nothing stored.
        let err = s3
            .put_object()
            .bucket("errors")
            .key("md5")
            .content_md5("1B2M2Y8AsgTpgAmY7PhCfg==") // the MD5 of nothing
            .body(ByteStream::from_static(b"something"))
            .send()
            .await
            .unwrap_err();
        assert_eq!((status(&err), code(&err).as_str()), (400, "BadDigest"));
        // Large enough for fragments, and wrong too.
        let err = s3
            .put_object()
            .bucket("errors")
            .key("md5-big")
            .content_md5("1B2M2Y8AsgTpgAmY7PhCfg==")
            .body(ByteStream::from(vec![7u8; 300_000]))
            .send()
            .await
            .unwrap_err();
        assert_eq!((status(&err), code(&err).as_str()), (400, "BadDigest"));
        for key in ["md5", "md5-big"] {
            let err = s3
                .head_object()
                .bucket("errors")
                .key(key)
                .send()
                .await
                .unwrap_err();
            assert_eq!(status(&err), 404, "{key} must not be stored");
        }

        // A range past the end.
        s3.put_object()
            .bucket("errors")
            .key("small")
            .body(ByteStream::from_static(b"0123456789"))
            .send()
            .await
            .unwrap();
        let err = s3
            .get_object()
            .bucket("errors")
            .key("small")
            .range("bytes=10-20")
            .send()
            .await
            .unwrap_err();
        assert_eq!((status(&err), code(&err).as_str()), (416, "InvalidRange"));

        // Invalid bucket names, unknown buckets and keys.
        let err = s3
            .create_bucket()
            .bucket("Bad_Name")
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            (status(&err), code(&err).as_str()),
            (400, "InvalidBucketName")
        );
        let err = s3
            .get_object()
            .bucket("no-such-bucket")
            .key("k")
            .send()
            .await
            .unwrap_err();
        assert_eq!((status(&err), code(&err).as_str()), (404, "NoSuchBucket"));
        let err = s3
            .get_object()
            .bucket("errors")
            .key("no-such-key")
            .send()
            .await
            .unwrap_err();
        assert_eq!((status(&err), code(&err).as_str()), (404, "NoSuchKey"));
        let long_key = "k".repeat(1025);
        let err = s3
            .put_object()
            .bucket("errors")
            .key(&long_key)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(status(&err), 400);

        // Creating a bucket twice.
        let err = s3
            .create_bucket()
            .bucket("errors")
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            (status(&err), code(&err).as_str()),
            (409, "BucketAlreadyOwnedByYou")
        );

        // Conditional reads.
        let etag = s3
            .head_object()
            .bucket("errors")
            .key("small")
            .send()
            .await
            .unwrap()
            .e_tag()
            .unwrap()
            .to_owned();
        let err = s3
            .get_object()
            .bucket("errors")
            .key("small")
            .if_match("\"0000\"")
            .send()
            .await
            .unwrap_err();
        assert_eq!(status(&err), 412);
        let err = s3
            .get_object()
            .bucket("errors")
            .key("small")
            .if_none_match(&etag)
            .send()
            .await
            .unwrap_err();
        assert_eq!(status(&err), 304);
        s3.get_object()
            .bucket("errors")
            .key("small")
            .if_match(&etag)
            .send()
            .await
            .unwrap();

        // The bucket is still usable, and only what succeeded is in it.
        let list = s3.list_objects_v2().bucket("errors").send().await.unwrap();
        let keys: Vec<_> = list.contents().iter().map(|o| o.key().unwrap()).collect();
        assert_eq!(keys, ["small"]);
    });
}
