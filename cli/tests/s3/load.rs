//! A running load for tests that change the cluster underneath it: clients PUTting new
//! keys and GETting known ones, every answer checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use tokio::sync::Mutex;

use crate::cluster::bytes;

/// Clients PUTting new keys and GETting known ones until told to stop; every failure is
/// kept.
pub struct Load {
    bucket: &'static str,
    size: usize,
    stop: Arc<AtomicBool>,
    errors: Arc<Mutex<Vec<String>>>,
    /// Requests made so far.
    pub ops: Arc<AtomicU64>,
    objects: Arc<Mutex<Vec<(String, u64)>>>,
}

impl Load {
    /// Starts two clients on `bucket`, which holds `objects` (key, seed of `size` bytes),
    /// PUTting objects of `size` bytes.
    pub fn start(
        rt: &tokio::runtime::Runtime,
        s3: &Client,
        bucket: &'static str,
        size: usize,
        objects: Vec<(String, u64)>,
    ) -> Load {
        let load = Load {
            bucket,
            size,
            stop: Arc::new(AtomicBool::new(false)),
            errors: Arc::new(Mutex::new(Vec::new())),
            ops: Arc::new(AtomicU64::new(0)),
            objects: Arc::new(Mutex::new(objects)),
        };
        for worker in 0..2u64 {
            let (stop, errors, ops, objects, s3) = (
                Arc::clone(&load.stop),
                Arc::clone(&load.errors),
                Arc::clone(&load.ops),
                Arc::clone(&load.objects),
                s3.clone(),
            );
            let (bucket, size) = (load.bucket, load.size);
            rt.spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let seed = 1_000_000 * (worker + 1) + n;
                    let key = format!("load/{worker}/{n}");
                    let put = s3
                        .put_object()
                        .bucket(bucket)
                        .key(&key)
                        .body(ByteStream::from(bytes(size, seed)))
                        .send()
                        .await;
                    match put {
                        Ok(_) => objects.lock().await.push((key, seed)),
                        Err(e) => errors.lock().await.push(format!("PUT {key}: {e:?}")),
                    }
                    let pick = {
                        let all = objects.lock().await;
                        all[(n as usize * 7919) % all.len()].clone()
                    };
                    match get(&s3, bucket, &pick.0).await {
                        Ok(body) if body == bytes(size, pick.1) => {}
                        Ok(_) => errors
                            .lock()
                            .await
                            .push(format!("GET {}: wrong bytes", pick.0)),
                        Err(e) => errors.lock().await.push(format!("GET {}: {e}", pick.0)),
                    }
                    ops.fetch_add(2, Ordering::Relaxed);
                }
            });
        }
        load
    }

    /// The objects written so far (those the load started with included).
    pub async fn objects(&self) -> Vec<(String, u64)> {
        self.objects.lock().await.clone()
    }

    /// Stops the clients; fails the test if any request failed; returns every object.
    pub async fn stop(&self) -> Vec<(String, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let errors = self.errors.lock().await;
        assert!(errors.is_empty(), "client errors: {errors:#?}");
        self.objects.lock().await.clone()
    }
}

/// GETs `key` of `bucket` whole.
pub async fn get(s3: &Client, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(out
        .body
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .into_bytes()
        .to_vec())
}

/// Creates `bucket` and PUTs `count` objects of `size` bytes into it, keys `prefix` and a
/// number, each the bytes of its number as seed; returns them as (key, seed).
pub async fn fill(
    s3: &Client,
    bucket: &str,
    prefix: &str,
    count: u64,
    size: usize,
) -> Vec<(String, u64)> {
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    let mut objects = Vec::new();
    for i in 0..count {
        let key = format!("{prefix}{i}");
        s3.put_object()
            .bucket(bucket)
            .key(&key)
            .body(ByteStream::from(bytes(size, i)))
            .send()
            .await
            .unwrap();
        objects.push((key, i));
    }
    objects
}
