//! Storage nodes die: with 2 of 6 down every object at full redundancy still reads and PUTs
//! succeed through handoffs; with 3 down requests fail with 503, never with wrong bytes; once they are back
//! everything reads.

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;

use crate::cluster::{Cluster, bytes, check_all, runtime};

const SIZES: [usize; 4] = [100, 5000, 1 << 20, (3 << 20) + 7];

#[test]
fn objects_survive_two_nodes_down_and_fail_cleanly_with_three() {
    let cluster = Cluster::start();
    let s3 = cluster.client();
    runtime().block_on(async {
        s3.create_bucket().bucket("faults").send().await.unwrap();
        let mut objects = Vec::new();
        for (i, size) in SIZES.into_iter().enumerate() {
            for copy in 0..3 {
                let key = format!("before-{size}-{copy}");
                let data = bytes(size, (i * 10 + copy) as u64);
                s3.put_object()
                    .bucket("faults")
                    .key(&key)
                    .body(ByteStream::from(data.clone()))
                    .send()
                    .await
                    .unwrap();
                objects.push((key, data));
            }
        }

        // A PUT is acknowledged once k+1 of its k+m fragments are committed: the objects
        // survive any two nodes only once the reconstructors have brought every one to
        // full redundancy.
        cluster.wait_full_redundancy(Duration::from_secs(90));
        cluster.detach_supervisor();
        cluster.kill_node(2);
        cluster.kill_node(5);
        check_all(&s3, "faults", &objects).await;
        for (i, size) in SIZES.into_iter().enumerate() {
            let key = format!("during-{size}");
            let data = bytes(size, 500 + i as u64);
            s3.put_object()
                .bucket("faults")
                .key(&key)
                .body(ByteStream::from(data.clone()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("PUT {key} with 2 nodes down: {e:?}"));
            objects.push((key, data));
        }
        check_all(&s3, "faults", &objects).await;

        // A third node down: more than the policy tolerates. Requests fail with a clear
        // 503 (or succeed where enough survives), never with wrong bytes.
        cluster.kill_node(3);
        let s3_once = cluster.client_no_retry();
        for (key, data) in &objects {
            match s3_once.get_object().bucket("faults").key(key).send().await {
                Ok(got) => {
                    if let Ok(body) = got.body.collect().await {
                        assert!(
                            body.into_bytes().as_ref() == data.as_slice(),
                            "{key} differs with 3 down"
                        );
                    }
                }
                Err(e) => {
                    let status = e.raw_response().map(|r| r.status().as_u16());
                    assert_eq!(status, Some(503), "{key} with 3 down: {e:?}");
                }
            }
        }

        for node in [2, 3, 5] {
            cluster.restart_node(node);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        check_all(&s3, "faults", &objects).await;
    });
}
