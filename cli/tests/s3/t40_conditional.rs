//! Conditional PUTs are atomic: of racing `If-None-Match: *` PUTs exactly one wins.

use aws_sdk_s3::primitives::ByteStream;

use crate::cluster::{Cluster, runtime};

async fn race(s3: &aws_sdk_s3::Client, key: &str, n: usize) -> (usize, usize, Vec<String>) {
    let calls = (0..n).map(|i| {
        let s3 = s3.clone();
        let key = key.to_owned();
        async move {
            s3.put_object()
                .bucket("race")
                .key(&key)
                .if_none_match("*")
                .body(ByteStream::from(format!("writer {i}").into_bytes()))
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
            let (won, lost, other) = race(&s3, &key, 50).await;
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
