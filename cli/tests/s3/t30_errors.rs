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
