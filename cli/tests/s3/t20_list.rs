//! Listings over many keys: prefixes, delimiters and pagination, V2 and V1.

use std::collections::BTreeSet;

use aws_sdk_s3::primitives::ByteStream;
use futures_util::StreamExt;

use crate::cluster::{Cluster, runtime};

/// `dir{0..5}/sub{0..5}/file{0..100}`: 2,500 keys, and one top-level key.
fn keys() -> Vec<String> {
    let mut keys = Vec::new();
    for d in 0..5 {
        for s in 0..5 {
            for f in 0..100 {
                keys.push(format!("dir{d}/sub{s}/file{f:03}"));
            }
        }
    }
    keys.push("top".to_owned());
    keys
}

#[test]
fn listings_paginate_and_fold_prefixes_over_2500_keys() {
    let cluster = Cluster::start();
    let s3 = cluster.client();
    runtime().block_on(async {
        s3.create_bucket().bucket("many").send().await.unwrap();
        let all = keys();
        futures_util::stream::iter(all.clone())
            .for_each_concurrent(16, |key| {
                let s3 = s3.clone();
                async move {
                    s3.put_object()
                        .bucket("many")
                        .key(&key)
                        .body(ByteStream::from(key.clone().into_bytes()))
                        .send()
                        .await
                        .unwrap();
                }
            })
            .await;
        let expected: BTreeSet<String> = all.iter().cloned().collect();

        // V2, no delimiter, pages of 1000 then of 333: every key once, in order.
        for page_size in [1000, 333] {
            let mut seen = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let page = s3
                    .list_objects_v2()
                    .bucket("many")
                    .max_keys(page_size)
                    .set_continuation_token(token.clone())
                    .send()
                    .await
                    .unwrap();
                assert!(page.contents().len() <= page_size as usize);
                seen.extend(page.contents().iter().map(|o| o.key().unwrap().to_owned()));
                if page.is_truncated() != Some(true) {
                    break;
                }
                token = page.next_continuation_token().map(str::to_owned);
                assert!(token.is_some());
            }
            assert_eq!(seen.len(), expected.len(), "page size {page_size}");
            assert!(seen.windows(2).all(|w| w[0] < w[1]), "keys in order");
            assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), expected);
        }

        // Delimiter at the top: 5 common prefixes and one key.
        let top = s3
            .list_objects_v2()
            .bucket("many")
            .delimiter("/")
            .send()
            .await
            .unwrap();
        let prefixes: Vec<_> = top
            .common_prefixes()
            .iter()
            .map(|p| p.prefix().unwrap().to_owned())
            .collect();
        assert_eq!(prefixes, ["dir0/", "dir1/", "dir2/", "dir3/", "dir4/"]);
        let keys: Vec<_> = top.contents().iter().map(|o| o.key().unwrap()).collect();
        assert_eq!(keys, ["top"]);

        // Prefix and delimiter, paginated two at a time across common prefixes.
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = s3
                .list_objects_v2()
                .bucket("many")
                .prefix("dir2/")
                .delimiter("/")
                .max_keys(2)
                .set_continuation_token(token.clone())
                .send()
                .await
                .unwrap();
            seen.extend(
                page.common_prefixes()
                    .iter()
                    .map(|p| p.prefix().unwrap().to_owned()),
            );
            assert!(page.contents().is_empty());
            if page.is_truncated() != Some(true) {
                break;
            }
            token = page.next_continuation_token().map(str::to_owned);
        }
        assert_eq!(
            seen,
            [
                "dir2/sub0/",
                "dir2/sub1/",
                "dir2/sub2/",
                "dir2/sub3/",
                "dir2/sub4/"
            ]
        );

        // A deep prefix: exactly its 100 keys; start-after inside it.
        let deep = s3
            .list_objects_v2()
            .bucket("many")
            .prefix("dir3/sub4/")
            .send()
            .await
            .unwrap();
        assert_eq!(deep.contents().len(), 100);
        let after = s3
            .list_objects_v2()
            .bucket("many")
            .prefix("dir3/sub4/")
            .start_after("dir3/sub4/file089")
            .send()
            .await
            .unwrap();
        let keys: Vec<_> = after.contents().iter().map(|o| o.key().unwrap()).collect();
        assert_eq!(keys.len(), 10);
        assert_eq!(keys[0], "dir3/sub4/file090");

        // V1 with markers.
        let mut seen = 0;
        let mut marker: Option<String> = None;
        loop {
            let page = s3
                .list_objects()
                .bucket("many")
                .prefix("dir1/")
                .max_keys(150)
                .set_marker(marker.clone())
                .send()
                .await
                .unwrap();
            seen += page.contents().len();
            if page.is_truncated() != Some(true) {
                break;
            }
            marker = page
                .contents()
                .last()
                .and_then(|o| o.key())
                .map(str::to_owned);
        }
        assert_eq!(seen, 500);

        // encoding-type=url on a key that needs it.
        s3.put_object()
            .bucket("many")
            .key("space key+é")
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
        let encoded = s3
            .list_objects_v2()
            .bucket("many")
            .prefix("space")
            .encoding_type(aws_sdk_s3::types::EncodingType::Url)
            .send()
            .await
            .unwrap();
        // The Rust SDK hands url-encoded keys over as they came.
        assert_eq!(encoded.contents()[0].key(), Some("space%20key%2B%C3%A9"));

        // DeleteObjects: 100 keys of one directory at once, quiet, and 2 loudly (one absent,
        // which S3 reports as deleted too).
        let batch: Vec<_> = (0..100)
            .map(|f| {
                aws_sdk_s3::types::ObjectIdentifier::builder()
                    .key(format!("dir4/sub4/file{f:03}"))
                    .build()
                    .unwrap()
            })
            .collect();
        let quiet = aws_sdk_s3::types::Delete::builder()
            .set_objects(Some(batch))
            .quiet(true)
            .build()
            .unwrap();
        let done = s3
            .delete_objects()
            .bucket("many")
            .delete(quiet)
            .send()
            .await
            .unwrap();
        assert!(done.deleted().is_empty() && done.errors().is_empty());
        let left = s3
            .list_objects_v2()
            .bucket("many")
            .prefix("dir4/sub4/")
            .send()
            .await
            .unwrap();
        assert_eq!(left.key_count(), Some(0));
        let loud = aws_sdk_s3::types::Delete::builder()
            .objects(
                aws_sdk_s3::types::ObjectIdentifier::builder()
                    .key("top")
                    .build()
                    .unwrap(),
            )
            .objects(
                aws_sdk_s3::types::ObjectIdentifier::builder()
                    .key("never-was")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let done = s3
            .delete_objects()
            .bucket("many")
            .delete(loud)
            .send()
            .await
            .unwrap();
        let keys: Vec<_> = done.deleted().iter().filter_map(|d| d.key()).collect();
        assert_eq!(keys, ["top", "never-was"]);

        // A bucket with keys cannot be deleted.
        let err = s3.delete_bucket().bucket("many").send().await.unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(409));
    });
}
