//! Bucket versioning: every version kept while Enabled, the null version of objects from
//! before, delete markers, reads and deletes by version id, ListObjectVersions with its
//! markers, and Suspended replacing the null version.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};

use crate::cluster::{Cluster, bytes, complete_one_part, runtime};

async fn put(s3: &Client, key: &str, body: &[u8]) -> Option<String> {
    s3.put_object()
        .bucket("ver")
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap()
        .version_id()
        .map(str::to_owned)
}

/// The body and version id of a GET (of a version, if given).
async fn get(s3: &Client, key: &str, version: Option<&str>) -> Result<(Vec<u8>, String), String> {
    match s3
        .get_object()
        .bucket("ver")
        .key(key)
        .set_version_id(version.map(str::to_owned))
        .send()
        .await
    {
        Ok(out) => {
            let id = out.version_id().unwrap_or_default().to_owned();
            let body = out.body.collect().await.unwrap().into_bytes().to_vec();
            Ok((body, id))
        }
        Err(e) => Err(e
            .as_service_error()
            .and_then(|s| aws_sdk_s3::error::ProvideErrorMetadata::code(s))
            .unwrap_or("no code")
            .to_owned()),
    }
}

/// Every version of keys under `prefix`, as (key, version id, is latest, is a delete
/// marker), following the markers `page` at a time.
async fn versions(s3: &Client, prefix: &str, page: i32) -> Vec<(String, String, bool, bool)> {
    let mut all = Vec::new();
    let (mut key_marker, mut version_marker) = (None, None);
    loop {
        let out = s3
            .list_object_versions()
            .bucket("ver")
            .prefix(prefix)
            .max_keys(page)
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(version_marker.clone())
            .send()
            .await
            .unwrap();
        let mut rows: Vec<(String, String, bool, bool)> = Vec::new();
        for v in out.versions() {
            rows.push((
                v.key().unwrap().to_owned(),
                v.version_id().unwrap().to_owned(),
                v.is_latest().unwrap(),
                false,
            ));
        }
        if !out.delete_markers().is_empty() {
            for m in out.delete_markers() {
                rows.push((
                    m.key().unwrap().to_owned(),
                    m.version_id().unwrap().to_owned(),
                    m.is_latest().unwrap(),
                    true,
                ));
            }
            // Versions and markers come in two lists: key order, then newest first (ids
            // grow with time; in these tests the null version is the oldest), puts them
            // back together.
            let age = |id: &str| {
                if id == "null" {
                    String::new()
                } else {
                    id.to_owned()
                }
            };
            rows.sort_by(|a, b| a.0.cmp(&b.0).then(age(&b.1).cmp(&age(&a.1))));
        }
        all.extend(rows);
        if out.is_truncated() != Some(true) {
            return all;
        }
        key_marker = out.next_key_marker().map(str::to_owned);
        version_marker = out.next_version_id_marker().map(str::to_owned);
        assert!(
            key_marker.is_some(),
            "a truncated page says where to resume"
        );
    }
}

#[test]
fn versions_are_kept_read_listed_and_deleted_by_id() {
    let cluster = Cluster::start();
    let s3 = cluster.client_no_retry();
    runtime().block_on(async {
        s3.create_bucket().bucket("ver").send().await.unwrap();
        assert_eq!(put(&s3, "k", b"zero").await, None, "not versioned yet");
        let status = s3
            .get_bucket_versioning()
            .bucket("ver")
            .send()
            .await
            .unwrap();
        assert_eq!(status.status(), None);
        let enable = |status: BucketVersioningStatus| {
            s3.put_bucket_versioning()
                .bucket("ver")
                .versioning_configuration(VersioningConfiguration::builder().status(status).build())
                .send()
        };
        enable(BucketVersioningStatus::Enabled).await.unwrap();
        let status = s3
            .get_bucket_versioning()
            .bucket("ver")
            .send()
            .await
            .unwrap();
        assert_eq!(status.status(), Some(&BucketVersioningStatus::Enabled));

        // Versions pile up; the object from before is the null version.
        let v1 = put(&s3, "k", b"one").await.unwrap();
        let v2 = put(&s3, "k", b"two").await.unwrap();
        assert_ne!(v1, v2);
        assert_eq!(v1.len(), 16);
        assert_eq!(get(&s3, "k", None).await, Ok((b"two".to_vec(), v2.clone())));
        assert_eq!(
            get(&s3, "k", Some(&v1)).await,
            Ok((b"one".to_vec(), v1.clone()))
        );
        assert_eq!(
            get(&s3, "k", Some("null")).await,
            Ok((b"zero".to_vec(), "null".to_owned()))
        );
        let head = s3
            .head_object()
            .bucket("ver")
            .key("k")
            .version_id(&v1)
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_length(), Some(3));
        assert_eq!(head.version_id(), Some(v1.as_str()));
        assert_eq!(
            versions(&s3, "k", 1000).await,
            [
                ("k".to_owned(), v2.clone(), true, false),
                ("k".to_owned(), v1.clone(), false, false),
                ("k".to_owned(), "null".to_owned(), false, false),
            ]
        );

        // Tags of one version: an older one's by its id, the current one's without.
        let tag_set = |k: &str, v: &str| {
            aws_sdk_s3::types::Tagging::builder()
                .tag_set(
                    aws_sdk_s3::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap()
        };
        let tags_of = |version: Option<String>| {
            let s3 = s3.clone();
            async move {
                let out = s3
                    .get_object_tagging()
                    .bucket("ver")
                    .key("k")
                    .set_version_id(version)
                    .send()
                    .await
                    .unwrap();
                let pairs: Vec<(String, String)> = out
                    .tag_set()
                    .iter()
                    .map(|t| (t.key().to_owned(), t.value().to_owned()))
                    .collect();
                (pairs, out.version_id().map(str::to_owned))
            }
        };
        let tagged = s3
            .put_object_tagging()
            .bucket("ver")
            .key("k")
            .version_id(&v1)
            .tagging(tag_set("age", "old"))
            .send()
            .await
            .unwrap();
        assert_eq!(tagged.version_id(), Some(v1.as_str()));
        s3.put_object_tagging()
            .bucket("ver")
            .key("k")
            .tagging(tag_set("age", "new"))
            .send()
            .await
            .unwrap();
        let pair = |v: &str| vec![("age".to_owned(), v.to_owned())];
        assert_eq!(
            tags_of(Some(v1.clone())).await,
            (pair("old"), Some(v1.clone()))
        );
        assert_eq!(tags_of(None).await, (pair("new"), Some(v2.clone())));
        assert_eq!(
            tags_of(Some(v2.clone())).await,
            (pair("new"), Some(v2.clone()))
        );
        assert_eq!(
            get(&s3, "k", Some(&v1)).await,
            Ok((b"one".to_vec(), v1.clone()))
        );

        // A delete without a version id adds a delete marker; the versions stay.
        let del = s3
            .delete_object()
            .bucket("ver")
            .key("k")
            .send()
            .await
            .unwrap();
        assert_eq!(del.delete_marker(), Some(true));
        let marker = del.version_id().unwrap().to_owned();
        assert_eq!(get(&s3, "k", None).await, Err("NoSuchKey".to_owned()));
        assert_eq!(
            get(&s3, "k", Some(&v1)).await,
            Ok((b"one".to_vec(), v1.clone()))
        );
        assert_eq!(
            get(&s3, "k", Some(&marker)).await,
            Err("MethodNotAllowed".to_owned())
        );
        let listed = versions(&s3, "k", 1000).await;
        assert_eq!(listed[0], ("k".to_owned(), marker.clone(), true, true));
        assert_eq!(listed.len(), 4);
        let plain = s3.list_objects_v2().bucket("ver").send().await.unwrap();
        assert_eq!(plain.key_count(), Some(0), "a deleted key is not listed");

        // Deleting the marker brings the object back; deleting the current version, the
        // one before it.
        let del = s3
            .delete_object()
            .bucket("ver")
            .key("k")
            .version_id(&marker)
            .send()
            .await
            .unwrap();
        assert_eq!(del.delete_marker(), Some(true));
        assert_eq!(get(&s3, "k", None).await, Ok((b"two".to_vec(), v2.clone())));
        s3.delete_object()
            .bucket("ver")
            .key("k")
            .version_id(&v2)
            .send()
            .await
            .unwrap();
        assert_eq!(get(&s3, "k", None).await, Ok((b"one".to_vec(), v1.clone())));
        assert_eq!(
            get(&s3, "k", Some(&v2)).await,
            Err("NoSuchVersion".to_owned())
        );
        assert_eq!(
            get(&s3, "k", Some("bad")).await,
            Err("InvalidArgument".to_owned())
        );
        assert_eq!(
            get(&s3, "k", Some("00000000000000ff")).await,
            Err("NoSuchVersion".to_owned())
        );

        // Multipart uploads are versions too.
        let big = bytes(5 << 20, 7);
        let up = s3
            .create_multipart_upload()
            .bucket("ver")
            .key("k")
            .send()
            .await
            .unwrap();
        let part = s3
            .upload_part()
            .bucket("ver")
            .key("k")
            .upload_id(up.upload_id().unwrap())
            .part_number(1)
            .body(ByteStream::from(big.clone()))
            .send()
            .await
            .unwrap();
        let done = complete_one_part(
            &s3,
            "ver",
            "k",
            up.upload_id().unwrap(),
            part.e_tag().unwrap(),
        )
        .await;
        let v3 = done.version_id().unwrap().to_owned();
        assert_eq!(get(&s3, "k", Some(&v3)).await.unwrap().0, big);
        assert_eq!(get(&s3, "k", Some(&v1)).await.unwrap().0, b"one");

        // A copy of an older version: its bytes, the source version named, a new version.
        let copied = s3
            .copy_object()
            .bucket("ver")
            .key("copy")
            .copy_source(format!("ver/k?versionId={v1}"))
            .send()
            .await
            .unwrap();
        assert_eq!(copied.copy_source_version_id(), Some(v1.as_str()));
        let copy_id = copied.version_id().unwrap().to_owned();
        assert_eq!(get(&s3, "copy", None).await, Ok((b"one".to_vec(), copy_id)));
        let missing = s3
            .copy_object()
            .bucket("ver")
            .key("copy")
            .copy_source("ver/k?versionId=00000000000000ff")
            .send()
            .await;
        assert!(missing.is_err());

        // Pages of versions: every one exactly once, in order, over several keys.
        let mut expected = Vec::new();
        for key in ["p/a", "p/b", "p/c"] {
            let mut ids = Vec::new();
            for i in 0..3 {
                ids.push(put(&s3, key, format!("{key}{i}").as_bytes()).await.unwrap());
            }
            for (i, id) in ids.iter().enumerate().rev() {
                expected.push((key.to_owned(), id.clone(), i == 2, false));
            }
        }
        for page in [1, 2, 4, 1000] {
            assert_eq!(versions(&s3, "p/", page).await, expected, "pages of {page}");
        }

        // DeleteObjects: a version by its id, and a key (a delete marker).
        let gone = expected[0].1.clone();
        let id = |key: &str, version: Option<&str>| {
            aws_sdk_s3::types::ObjectIdentifier::builder()
                .key(key)
                .set_version_id(version.map(str::to_owned))
                .build()
                .unwrap()
        };
        let batch = s3
            .delete_objects()
            .bucket("ver")
            .delete(
                aws_sdk_s3::types::Delete::builder()
                    .objects(id("p/a", Some(&gone)))
                    .objects(id("p/b", None))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert!(batch.errors().is_empty(), "{:?}", batch.errors());
        assert_eq!(batch.deleted().len(), 2);
        assert_eq!(
            get(&s3, "p/a", None).await.unwrap().1,
            expected[1].1,
            "the one before"
        );
        assert_eq!(get(&s3, "p/b", None).await, Err("NoSuchKey".to_owned()));
        let listed = versions(&s3, "p/b", 1000).await;
        assert_eq!((listed.len(), listed[0].2, listed[0].3), (4, true, true));

        // With a delimiter: keys under p/ fold into one common prefix, across pages too.
        let flat: Vec<(String, String)> = versions(&s3, "", 1000)
            .await
            .into_iter()
            .filter(|v| !v.0.contains('/'))
            .map(|v| (v.0, v.1))
            .collect();
        for page in [1, 2, 1000] {
            let (mut prefixes, mut seen) = (Vec::new(), Vec::new());
            let (mut key_marker, mut version_marker) = (None, None);
            loop {
                let out = s3
                    .list_object_versions()
                    .bucket("ver")
                    .delimiter("/")
                    .max_keys(page)
                    .set_key_marker(key_marker.clone())
                    .set_version_id_marker(version_marker.clone())
                    .send()
                    .await
                    .unwrap();
                prefixes.extend(
                    out.common_prefixes()
                        .iter()
                        .map(|p| p.prefix().unwrap().to_owned()),
                );
                seen.extend(out.versions().iter().map(|v| {
                    (
                        v.key().unwrap().to_owned(),
                        v.version_id().unwrap().to_owned(),
                    )
                }));
                seen.extend(out.delete_markers().iter().map(|m| {
                    (
                        m.key().unwrap().to_owned(),
                        m.version_id().unwrap().to_owned(),
                    )
                }));
                if out.is_truncated() != Some(true) {
                    break;
                }
                key_marker = out.next_key_marker().map(str::to_owned);
                version_marker = out.next_version_id_marker().map(str::to_owned);
            }
            assert_eq!(prefixes, ["p/"], "pages of {page}");
            let mut seen_sorted = seen.clone();
            seen_sorted.sort();
            let mut flat_sorted = flat.clone();
            flat_sorted.sort();
            assert_eq!(seen_sorted, flat_sorted, "pages of {page}");
        }

        // Suspended: a new write is the null version, replacing the old null one.
        enable(BucketVersioningStatus::Suspended).await.unwrap();
        assert_eq!(put(&s3, "k", b"three").await.as_deref(), Some("null"));
        assert_eq!(
            get(&s3, "k", Some("null")).await,
            Ok((b"three".to_vec(), "null".to_owned()))
        );
        let ids: Vec<String> = versions(&s3, "k", 1000)
            .await
            .into_iter()
            .map(|v| v.1)
            .collect();
        assert_eq!(ids, ["null".to_owned(), v3.clone(), v1.clone()]);
        assert_eq!(put(&s3, "k", b"four").await.as_deref(), Some("null"));
        let ids: Vec<String> = versions(&s3, "k", 1000)
            .await
            .into_iter()
            .map(|v| v.1)
            .collect();
        assert_eq!(ids, ["null".to_owned(), v3, v1.clone()]);
        assert_eq!(
            get(&s3, "k", None).await,
            Ok((b"four".to_vec(), "null".to_owned()))
        );

        // Versioning cannot be turned off again, nor set to nonsense.
        let off = s3
            .put_bucket_versioning()
            .bucket("ver")
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::from("Off"))
                    .build(),
            )
            .send()
            .await;
        assert!(off.is_err());
    });
}
