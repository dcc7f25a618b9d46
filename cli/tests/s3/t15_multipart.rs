//! Multipart uploads: parts of unequal size, the `md5-of-md5s-N` ETag, reads across part
//! boundaries, listings of uploads and parts, abort, and the rules on part sizes and order.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use crate::cluster::{Cluster, bytes, runtime};

const MIB: usize = 1 << 20;

fn multipart_etag(parts: &[&[u8]]) -> String {
    use md5::Digest as _;
    let mut all = md5::Md5::new();
    for p in parts {
        all.update(md5::Md5::digest(p));
    }
    format!("\"{}-{}\"", hex::encode(all.finalize()), parts.len())
}

#[test]
fn multipart_uploads_of_unequal_parts_read_back_whole_and_in_ranges() {
    let cluster = Cluster::start();
    let s3 = cluster.client();
    runtime().block_on(async {
        s3.create_bucket().bucket("multi").send().await.unwrap();
        let sizes = [5 * MIB, 7 * MIB + 3, MIB + 1];
        let parts: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| bytes(n, 70 + i as u64))
            .collect();
        let upload = s3
            .create_multipart_upload()
            .bucket("multi")
            .key("big")
            .content_type("video/x-test")
            .metadata("origin", "parts")
            .send()
            .await
            .unwrap();
        let id = upload.upload_id().unwrap().to_owned();
        let listed = s3
            .list_multipart_uploads()
            .bucket("multi")
            .send()
            .await
            .unwrap();
        assert_eq!(listed.uploads().len(), 1);
        assert_eq!(listed.uploads()[0].upload_id(), Some(id.as_str()));
        // Upload out of order; part 2 twice (the second wins).
        let mut completed = Vec::new();
        for (i, data) in parts.iter().enumerate().rev() {
            let number = i as i32 + 1;
            if number == 2 {
                s3.upload_part()
                    .bucket("multi")
                    .key("big")
                    .upload_id(&id)
                    .part_number(2)
                    .body(ByteStream::from(vec![0u8; 6 * MIB]))
                    .send()
                    .await
                    .unwrap();
            }
            let part = s3
                .upload_part()
                .bucket("multi")
                .key("big")
                .upload_id(&id)
                .part_number(number)
                .body(ByteStream::from(data.clone()))
                .send()
                .await
                .unwrap();
            completed.push(
                CompletedPart::builder()
                    .part_number(number)
                    .e_tag(part.e_tag().unwrap())
                    .build(),
            );
        }
        completed.reverse();
        let listed = s3
            .list_parts()
            .bucket("multi")
            .key("big")
            .upload_id(&id)
            .send()
            .await
            .unwrap();
        let listed: Vec<_> = listed
            .parts()
            .iter()
            .map(|p| (p.part_number().unwrap(), p.size().unwrap()))
            .collect();
        assert_eq!(
            listed,
            [
                (1, sizes[0] as i64),
                (2, sizes[1] as i64),
                (3, sizes[2] as i64)
            ]
        );

        // Out of order in the completion: refused, the upload stays.
        let err = s3
            .complete_multipart_upload()
            .bucket("multi")
            .key("big")
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .parts(completed[1].clone())
                    .parts(completed[0].clone())
                    .build(),
            )
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));

        let done = s3
            .complete_multipart_upload()
            .bucket("multi")
            .key("big")
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        assert_eq!(done.e_tag(), Some(multipart_etag(&slices).as_str()));
        let whole: Vec<u8> = parts.concat();

        let got = s3
            .get_object()
            .bucket("multi")
            .key("big")
            .send()
            .await
            .unwrap();
        assert_eq!(got.content_length(), Some(whole.len() as i64));
        assert_eq!(got.content_type(), Some("video/x-test"));
        assert_eq!(
            got.metadata()
                .and_then(|m| m.get("origin"))
                .map(String::as_str),
            Some("parts")
        );
        let body = got.body.collect().await.unwrap().into_bytes();
        assert!(
            body.as_ref() == whole.as_slice(),
            "multipart object differs"
        );
        // Ranges inside a part, across the part boundaries, and the end.
        let b1 = sizes[0];
        let b2 = sizes[0] + sizes[1];
        for (first, last) in [
            (0, 10),
            (b1 - 5, b1 + 5),
            (b1 - 1, b2),
            (b2 - 100, whole.len() - 1),
            (3 * MIB, 9 * MIB),
        ] {
            let got = s3
                .get_object()
                .bucket("multi")
                .key("big")
                .range(format!("bytes={first}-{last}"))
                .send()
                .await
                .unwrap();
            let body = got.body.collect().await.unwrap().into_bytes();
            assert!(
                body.as_ref() == &whole[first..=last],
                "range {first}-{last} differs"
            );
        }
        let listed = s3
            .list_multipart_uploads()
            .bucket("multi")
            .send()
            .await
            .unwrap();
        assert!(listed.uploads().is_empty(), "a completed upload is gone");

        // A part too small before the last one.
        let small = s3
            .create_multipart_upload()
            .bucket("multi")
            .key("small")
            .send()
            .await
            .unwrap();
        let sid = small.upload_id().unwrap().to_owned();
        let mut done_parts = Vec::new();
        for n in 1..=2 {
            let p = s3
                .upload_part()
                .bucket("multi")
                .key("small")
                .upload_id(&sid)
                .part_number(n)
                .body(ByteStream::from(vec![n as u8; 1000]))
                .send()
                .await
                .unwrap();
            done_parts.push(
                CompletedPart::builder()
                    .part_number(n)
                    .e_tag(p.e_tag().unwrap())
                    .build(),
            );
        }
        let err = s3
            .complete_multipart_upload()
            .bucket("multi")
            .key("small")
            .upload_id(&sid)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done_parts))
                    .build(),
            )
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            err.as_service_error()
                .and_then(aws_sdk_s3::error::ProvideErrorMetadata::code),
            Some("EntityTooSmall")
        );
        // Abort: the upload is gone and the key was never written.
        s3.abort_multipart_upload()
            .bucket("multi")
            .key("small")
            .upload_id(&sid)
            .send()
            .await
            .unwrap();
        let err = s3
            .list_parts()
            .bucket("multi")
            .key("small")
            .upload_id(&sid)
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
        let err = s3
            .head_object()
            .bucket("multi")
            .key("small")
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
        // A made-up upload id.
        let err = s3
            .upload_part()
            .bucket("multi")
            .key("x")
            .upload_id("00000000000000000000000000000000")
            .part_number(1)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            err.as_service_error()
                .and_then(aws_sdk_s3::error::ProvideErrorMetadata::code),
            Some("NoSuchUpload")
        );
    });
}
