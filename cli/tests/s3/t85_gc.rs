//! Garbage collection on a real cluster: the fragments of overwritten and deleted objects,
//! of an aborted multipart upload and of one abandoned past its age leave the disks once
//! the grace period has passed, and so do the deletes' tombstones, while every live object — old versions of a versioned
//! bucket and a multipart object's part included — reads back identical.

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};

use crate::cluster::{Cluster, bytes, complete_one_part, runtime};

/// Committed fragment files (`<16 hex>.<index>`) under `dir`, and their bytes.
fn fragment_files(dir: &Path) -> (usize, u64) {
    let mut found = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            let (n, b) = fragment_files(&path);
            found.0 += n;
            found.1 += b;
        } else if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && let Some((version, index)) = name.split_once('.')
            && version.len() == 16
            && index.parse::<u8>().is_ok()
            && path.components().any(|c| c.as_os_str() == "objects")
        {
            found.0 += 1;
            found.1 += meta.len();
        }
    }
    found
}

async fn put(s3: &Client, bucket: &str, key: &str, body: &[u8]) -> Option<String> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap()
        .version_id()
        .map(str::to_owned)
}

async fn get(s3: &Client, bucket: &str, key: &str, version: Option<&str>) -> Vec<u8> {
    s3.get_object()
        .bucket(bucket)
        .key(key)
        .set_version_id(version.map(str::to_owned))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {bucket}/{key} {version:?}: {e:?}"))
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
        .to_vec()
}

/// Starts an upload of `key` with one 5 MiB part; returns its id.
async fn upload_one_part(s3: &Client, key: &str, seed: u64) -> String {
    let upload = s3
        .create_multipart_upload()
        .bucket("gcb")
        .key(key)
        .send()
        .await
        .unwrap();
    let id = upload.upload_id().unwrap().to_owned();
    s3.upload_part()
        .bucket("gcb")
        .key(key)
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(bytes(5 << 20, seed)))
        .send()
        .await
        .unwrap();
    id
}

#[test]
fn space_of_dead_versions_orphans_and_abandoned_uploads_is_reclaimed() {
    let cluster = Cluster::start_with(&["--gc-grace-secs", "2", "--abandoned-upload-secs", "4"]);
    let rt = runtime();
    rt.block_on(async {
        let s3 = cluster.client();
        s3.create_bucket().bucket("gcb").send().await.unwrap();
        s3.create_bucket().bucket("kept").send().await.unwrap();
        s3.put_bucket_versioning()
            .bucket("kept")
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let size = 2 << 20; // erasure coded: 6 fragment files per version
        let mut live: Vec<(String, Vec<u8>)> = Vec::new();
        for i in 0..6u64 {
            let key = format!("obj{i}");
            put(&s3, "gcb", &key, &bytes(size, i)).await;
            live.push((key, bytes(size, i)));
        }
        // Overwrite three, delete two: five dead versions.
        for (i, (key, data)) in live.iter_mut().enumerate().take(3) {
            *data = bytes(size, 100 + i as u64);
            put(&s3, "gcb", key, data).await;
        }
        for key in ["obj4", "obj5"] {
            s3.delete_object()
                .bucket("gcb")
                .key(key)
                .send()
                .await
                .unwrap();
        }
        live.truncate(4);
        // A versioned key: both versions stay readable.
        let v1 = put(&s3, "kept", "doc", &bytes(size, 7)).await.unwrap();
        let v2 = put(&s3, "kept", "doc", &bytes(size, 8)).await.unwrap();
        // An aborted upload and an abandoned one.
        let aborted = upload_one_part(&s3, "big-aborted", 11).await;
        s3.abort_multipart_upload()
            .bucket("gcb")
            .key("big-aborted")
            .upload_id(&aborted)
            .send()
            .await
            .unwrap();
        upload_one_part(&s3, "big-abandoned", 12).await;
        // A completed upload: the part it names stays; its first copy, replaced by a second
        // upload of part 1, goes.
        let done = upload_one_part(&s3, "big-done", 13).await;
        let part = s3
            .upload_part()
            .bucket("gcb")
            .key("big-done")
            .upload_id(&done)
            .part_number(1)
            .body(ByteStream::from(bytes(5 << 20, 14)))
            .send()
            .await
            .unwrap();
        complete_one_part(&s3, "gcb", "big-done", &done, part.e_tag().unwrap()).await;
        live.push(("big-done".into(), bytes(5 << 20, 14)));

        let (files_before, bytes_before) = fragment_files(cluster.path());
        // Live versions: 4 objects and a completed upload's part in gcb, 2 versions in
        // kept; 6 fragment files each.
        let live_files = (5 + 2) * 6;
        // The collector may have begun already (the grace is 2 s).
        assert!(
            files_before > live_files,
            "{files_before} fragment files before collection, {live_files} live"
        );
        let started = Instant::now();
        let deadline = started + Duration::from_secs(90);
        let (files_after, bytes_after) = loop {
            let (files, bytes) = fragment_files(cluster.path());
            if files == live_files {
                break (files, bytes);
            }
            assert!(
                files >= live_files,
                "a live fragment was collected: {files} files left, {live_files} live"
            );
            assert!(
                Instant::now() < deadline,
                "still {files} fragment files after {:?}, {live_files} live",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        eprintln!(
            "reclaimed {} files, {} of {} bytes, in {:?}",
            files_before - files_after,
            bytes_before - bytes_after,
            bytes_before,
            started.elapsed()
        );
        for (key, data) in &live {
            assert!(get(&s3, "gcb", key, None).await == *data, "{key} changed");
        }
        assert!(get(&s3, "kept", "doc", Some(&v1)).await == bytes(size, 7));
        assert!(get(&s3, "kept", "doc", Some(&v2)).await == bytes(size, 8));
        // The deletes' tombstones are forgotten too, once every replica holds them; the
        // deleted keys stay deleted.
        let started = Instant::now();
        while cluster.metric("nimbus_index_tombstones_purged_total") == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no tombstone purged after {:?}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for key in ["obj4", "obj5"] {
            let gone = s3.get_object().bucket("gcb").key(key).send().await;
            assert!(gone.is_err(), "{key} came back");
        }
        let listed = s3.list_objects_v2().bucket("gcb").send().await.unwrap();
        let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
        assert_eq!(keys, ["big-done", "obj0", "obj1", "obj2", "obj3"]);
        let uploads = s3
            .list_multipart_uploads()
            .bucket("gcb")
            .send()
            .await
            .unwrap();
        assert!(
            uploads.uploads().is_empty(),
            "the abandoned upload is still listed: {:?}",
            uploads.uploads()
        );
    });
}
