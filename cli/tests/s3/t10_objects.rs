//! Objects round-trip byte for byte, at every size that matters to the data path.

use aws_sdk_s3::primitives::ByteStream;

use crate::cluster::{Cluster, bytes, create_bucket_in, etag, runtime};

/// The proxy's default inline_max and segment size.
const INLINE_MAX: usize = 4096;
const MIB: usize = 1 << 20;

#[test]
fn objects_round_trip_at_every_size_range_and_policy() {
    let cluster = Cluster::start();
    let s3 = cluster.client();
    runtime().block_on(async {
        s3.create_bucket().bucket("sizes").send().await.unwrap();
        let listed = s3.list_buckets().send().await.unwrap();
        assert!(listed.buckets().iter().any(|b| b.name() == Some("sizes")));
        s3.head_bucket().bucket("sizes").send().await.unwrap();

        let sizes = [
            0,
            1,
            INLINE_MAX,
            INLINE_MAX + 1,
            MIB - 1,
            MIB,
            MIB + 1,
            64 * MIB,
        ];
        for (i, &size) in sizes.iter().enumerate() {
            let data = bytes(size, i as u64);
            let key = format!("object-{size}");
            let put = s3
                .put_object()
                .bucket("sizes")
                .key(&key)
                .content_type("application/x-test")
                .metadata("color", "blue")
                .body(ByteStream::from(data.clone()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("PUT {size}: {e:?}"));
            assert_eq!(put.e_tag(), Some(etag(&data).as_str()), "ETag of {size}");
            // Visible to HEAD, GET and LIST the moment the PUT returned.
            let head = s3
                .head_object()
                .bucket("sizes")
                .key(&key)
                .send()
                .await
                .unwrap();
            assert_eq!(head.content_length(), Some(size as i64));
            assert_eq!(head.e_tag(), Some(etag(&data).as_str()));
            assert_eq!(head.content_type(), Some("application/x-test"));
            assert_eq!(
                head.metadata()
                    .and_then(|m| m.get("color"))
                    .map(String::as_str),
                Some("blue")
            );
            let got = s3
                .get_object()
                .bucket("sizes")
                .key(&key)
                .send()
                .await
                .unwrap();
            assert_eq!(got.e_tag(), Some(etag(&data).as_str()));
            let body = got.body.collect().await.unwrap().into_bytes();
            assert!(
                body.as_ref() == data.as_slice(),
                "GET of {size} bytes differs"
            );
            let list = s3
                .list_objects_v2()
                .bucket("sizes")
                .prefix(&key)
                .send()
                .await
                .unwrap();
            assert_eq!(list.contents().len(), 1, "LIST after PUT of {size}");
            assert_eq!(list.contents()[0].size(), Some(size as i64));
        }

        // Ranges at segment edges of a 3 MiB + 5 object.
        let size = 3 * MIB + 5;
        let data = bytes(size, 99);
        s3.put_object()
            .bucket("sizes")
            .key("ranged")
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        let ranges: [(usize, usize); 8] = [
            (0, 0),
            (0, MIB - 1),
            (MIB - 1, MIB),
            (MIB, 2 * MIB - 1),
            (MIB - 7, 2 * MIB + 7),
            (3 * MIB, size - 1),
            (size - 1, size - 1),
            (17, size - 1),
        ];
        for (first, last) in ranges {
            let got = s3
                .get_object()
                .bucket("sizes")
                .key("ranged")
                .range(format!("bytes={first}-{last}"))
                .send()
                .await
                .unwrap();
            assert_eq!(
                got.content_range(),
                Some(format!("bytes {first}-{last}/{size}").as_str())
            );
            let body = got.body.collect().await.unwrap().into_bytes();
            assert!(
                body.as_ref() == &data[first..=last],
                "range {first}-{last} differs"
            );
        }
        let suffix = s3
            .get_object()
            .bucket("sizes")
            .key("ranged")
            .range("bytes=-10")
            .send()
            .await
            .unwrap();
        let body = suffix.body.collect().await.unwrap().into_bytes();
        assert!(body.as_ref() == &data[size - 10..]);

        // The replicated policy, through the bucket's policy header.
        create_bucket_in(&s3, "replicated", "rep3").await;
        for (i, size) in [INLINE_MAX + 1, 2 * MIB + 3].into_iter().enumerate() {
            let data = bytes(size, 1000 + i as u64);
            s3.put_object()
                .bucket("replicated")
                .key("r")
                .body(ByteStream::from(data.clone()))
                .send()
                .await
                .unwrap();
            let got = s3
                .get_object()
                .bucket("replicated")
                .key("r")
                .send()
                .await
                .unwrap();
            let body = got.body.collect().await.unwrap().into_bytes();
            assert!(
                body.as_ref() == data.as_slice(),
                "rep3 object of {size} differs"
            );
            let got = s3
                .get_object()
                .bucket("replicated")
                .key("r")
                .range("bytes=5-4000")
                .send()
                .await
                .unwrap();
            let body = got.body.collect().await.unwrap().into_bytes();
            assert!(body.as_ref() == &data[5..=4000]);
        }

        // response-* overrides and the standard headers kept from the PUT.
        s3.put_object()
            .bucket("sizes")
            .key("styled")
            .cache_control("max-age=60")
            .content_disposition("inline")
            .content_language("fr")
            .body(ByteStream::from_static(b"bonjour"))
            .send()
            .await
            .unwrap();
        let plain = s3
            .get_object()
            .bucket("sizes")
            .key("styled")
            .send()
            .await
            .unwrap();
        assert_eq!(plain.cache_control(), Some("max-age=60"));
        assert_eq!(plain.content_disposition(), Some("inline"));
        assert_eq!(plain.content_language(), Some("fr"));
        let overridden = s3
            .get_object()
            .bucket("sizes")
            .key("styled")
            .response_content_type("text/plain")
            .response_content_disposition("attachment; filename=\"b.txt\"")
            .response_cache_control("no-cache")
            .send()
            .await
            .unwrap();
        assert_eq!(overridden.content_type(), Some("text/plain"));
        assert_eq!(
            overridden.content_disposition(),
            Some("attachment; filename=\"b.txt\"")
        );
        assert_eq!(overridden.cache_control(), Some("no-cache"));

        // Overwrite, then delete.
        s3.put_object()
            .bucket("sizes")
            .key("object-1")
            .body(ByteStream::from_static(b"second"))
            .send()
            .await
            .unwrap();
        let got = s3
            .get_object()
            .bucket("sizes")
            .key("object-1")
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.body.collect().await.unwrap().into_bytes().as_ref(),
            b"second"
        );
        s3.delete_object()
            .bucket("sizes")
            .key("object-1")
            .send()
            .await
            .unwrap();
        let gone = s3
            .get_object()
            .bucket("sizes")
            .key("object-1")
            .send()
            .await
            .unwrap_err();
        assert!(gone.into_service_error().is_no_such_key());
        let gone = s3
            .head_object()
            .bucket("sizes")
            .key("object-1")
            .send()
            .await
            .unwrap_err();
        assert_eq!(gone.raw_response().map(|r| r.status().as_u16()), Some(404));
    });
}
