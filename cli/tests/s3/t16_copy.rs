//! Server-side copies: CopyObject with the COPY and REPLACE metadata directives, of a
//! single-part and a multipart source, with copy-source conditions.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};

use crate::cluster::{Cluster, bytes, etag, runtime};

#[test]
fn copies_stream_the_bytes_and_keep_or_replace_the_metadata() {
    let cluster = Cluster::start();
    let s3 = cluster.client_no_retry();
    runtime().block_on(async {
        s3.create_bucket().bucket("src").send().await.unwrap();
        s3.create_bucket().bucket("dst").send().await.unwrap();
        let data = bytes((2 << 20) + 77, 5);
        s3.put_object()
            .bucket("src")
            .key("a")
            .content_type("image/x-test")
            .metadata("owner", "ana")
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();

        // COPY (the default): bytes, type and metadata as the source's.
        let copied = s3
            .copy_object()
            .bucket("dst")
            .key("a-copy")
            .copy_source("src/a")
            .send()
            .await
            .unwrap();
        assert_eq!(
            copied.copy_object_result().and_then(|r| r.e_tag()),
            Some(etag(&data).as_str())
        );
        let got = s3
            .get_object()
            .bucket("dst")
            .key("a-copy")
            .send()
            .await
            .unwrap();
        assert_eq!(got.content_type(), Some("image/x-test"));
        assert_eq!(
            got.metadata()
                .and_then(|m| m.get("owner"))
                .map(String::as_str),
            Some("ana")
        );
        assert!(got.body.collect().await.unwrap().into_bytes().as_ref() == data.as_slice());

        // REPLACE: the request's type and metadata; onto itself only with REPLACE.
        let err = s3
            .copy_object()
            .bucket("src")
            .key("a")
            .copy_source("src/a")
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
        s3.copy_object()
            .bucket("src")
            .key("a")
            .copy_source("src/a")
            .metadata_directive(MetadataDirective::Replace)
            .content_type("text/x-other")
            .metadata("owner", "bo")
            .send()
            .await
            .unwrap();
        let head = s3
            .head_object()
            .bucket("src")
            .key("a")
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_type(), Some("text/x-other"));
        assert_eq!(
            head.metadata()
                .and_then(|m| m.get("owner"))
                .map(String::as_str),
            Some("bo")
        );
        assert_eq!(head.content_length(), Some(data.len() as i64));

        // Copy-source conditions.
        let err = s3
            .copy_object()
            .bucket("dst")
            .key("cond")
            .copy_source("src/a")
            .copy_source_if_match("\"0000\"")
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(412));
        let err = s3
            .copy_object()
            .bucket("dst")
            .key("cond")
            .copy_source("src/missing")
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));

        // A multipart source becomes one whole object.
        let part1 = bytes(5 << 20, 6);
        let part2 = bytes(1234, 7);
        let up = s3
            .create_multipart_upload()
            .bucket("src")
            .key("mp")
            .send()
            .await
            .unwrap();
        let id = up.upload_id().unwrap();
        let mut done = Vec::new();
        for (n, p) in [(1, &part1), (2, &part2)] {
            let r = s3
                .upload_part()
                .bucket("src")
                .key("mp")
                .upload_id(id)
                .part_number(n)
                .body(ByteStream::from(p.clone()))
                .send()
                .await
                .unwrap();
            done.push(
                CompletedPart::builder()
                    .part_number(n)
                    .e_tag(r.e_tag().unwrap())
                    .build(),
            );
        }
        s3.complete_multipart_upload()
            .bucket("src")
            .key("mp")
            .upload_id(id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        s3.copy_object()
            .bucket("dst")
            .key("mp-copy")
            .copy_source("src/mp")
            .send()
            .await
            .unwrap();
        let whole = [part1, part2].concat();
        let got = s3
            .get_object()
            .bucket("dst")
            .key("mp-copy")
            .send()
            .await
            .unwrap();
        assert_eq!(got.e_tag(), Some(etag(&whole).as_str()));
        assert!(got.body.collect().await.unwrap().into_bytes().as_ref() == whole.as_slice());
    });
}
