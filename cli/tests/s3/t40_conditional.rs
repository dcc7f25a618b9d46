//! Conditional PUTs are atomic: of racing `If-None-Match: *` PUTs exactly one wins.

use aws_sdk_s3::primitives::ByteStream;

use std::time::Duration;

use crate::cluster::{Cluster, index_shard, runtime};

async fn race(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    n: usize,
) -> (usize, usize, Vec<String>) {
    let calls = (0..n).map(|i| {
        let s3 = s3.clone();
        let key = key.to_owned();
        async move {
            let mut body = format!("writer {i} ").into_bytes();
            body.resize(64 << 10, b'.');
            s3.put_object()
                .bucket(bucket)
                .key(&key)
                .if_none_match("*")
                .body(ByteStream::from(body))
                .send()
                .await
        }
    });
    let mut won = 0;
    let mut lost = 0;
    let mut other = Vec::new();
    for result in futures_util::future::join_all(calls).await {
        match result {
            Ok(_) => won += 1,
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(412) => lost += 1,
            Err(e) => other.push(format!("{e:?}")),
        }
    }
    (won, lost, other)
}

#[test]
fn fifty_racing_if_none_match_puts_have_exactly_one_winner() {
    let cluster = Cluster::start();
    let s3 = cluster.client_no_retry();
    runtime().block_on(async {
        s3.create_bucket().bucket("race").send().await.unwrap();
        for round in 0..3 {
            let key = format!("key-{round}");
            let (won, lost, other) = race(&s3, "race", &key, 50).await;
            assert_eq!(
                (won, lost),
                (1, 49),
                "round {round}: other outcomes {other:?}"
            );
            // The winner's bytes are what a GET returns.
            let got = s3
                .get_object()
                .bucket("race")
                .key(&key)
                .send()
                .await
                .unwrap();
            let body = got.body.collect().await.unwrap().into_bytes();
            assert!(body.starts_with(b"writer "));
        }
        // If-Match: only with the current ETag.
        let etag = s3
            .head_object()
            .bucket("race")
            .key("key-0")
            .send()
            .await
            .unwrap()
            .e_tag()
            .unwrap()
            .to_owned();
        let err = s3
            .put_object()
            .bucket("race")
            .key("key-0")
            .if_match("\"abc\"")
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(412));
        s3.put_object()
            .bucket("race")
            .key("key-0")
            .if_match(&etag)
            .body(ByteStream::from_static(b"y"))
            .send()
            .await
            .unwrap();
    });
}

#[test]
fn racing_if_none_match_puts_have_one_winner_while_the_shards_primary_dies() {
    let cluster = Cluster::start();
    let s3 = cluster.client_no_retry();
    runtime().block_on(async {
        s3.create_bucket().bucket("race2").send().await.unwrap();
        let key = "contended";
        let primary = usize::from(index_shard(&cluster, "race2", key).await.2[0].0);
        cluster.detach_supervisor();
        let killer = async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            cluster.kill_node(primary);
        };
        let ((won, lost, other), ()) = tokio::join!(race(&s3, "race2", key, 50), killer);
        assert_eq!((won, lost), (1, 49), "other outcomes: {other:?}");
        let got = s3
            .get_object()
            .bucket("race2")
            .key(key)
            .send()
            .await
            .unwrap();
        let body = got.body.collect().await.unwrap().into_bytes();
        assert!(body.starts_with(b"writer "));
        // Once the old primary is back, the key still has exactly the winner's bytes.
        cluster.restart_node(primary);
        let again = s3
            .get_object()
            .bucket("race2")
            .key(key)
            .send()
            .await
            .unwrap();
        assert_eq!(again.body.collect().await.unwrap().into_bytes(), body);
    });
}
