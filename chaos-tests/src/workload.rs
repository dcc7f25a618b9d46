//! The client workload: concurrent S3 clients doing PUT (small inline objects to multi-MiB
//! erasure-coded ones, in `ec4+2` and `rep3` buckets), overwrite, multipart upload, GET,
//! ranged GET, DELETE and LIST on a small key space, each request recorded with its times,
//! outcome and what it saw. No request is retried: the history holds exactly what was sent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::history::{History, Observed, Op, Outcome, Phase, Record, WriteId};
use crate::payload;

/// The user metadata naming an object's write.
const WRITE_META: &str = "chaos-write";
/// Bytes of every part of a multipart upload but the last (S3's least).
const PART_BYTES: u64 = 5 << 20;
/// How long one request may take before its outcome is unknown.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the clients do.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    /// Concurrent clients.
    pub clients: u32,
    /// Keys per bucket.
    pub keys: u32,
    /// The largest single PUT, in bytes.
    pub max_object_bytes: u64,
}

/// The recorder every client writes to.
pub struct Recorder {
    started: Instant,
    next_id: AtomicU64,
    records: Mutex<Vec<Record>>,
    /// The size of every write, by id, for checking what reads return.
    sizes: Mutex<HashMap<WriteId, u64>>,
    next_write: AtomicU64,
}

impl Recorder {
    /// A recorder whose clock starts now; write ids start at `first_write` (so that runs on
    /// one cluster never reuse one).
    #[must_use]
    pub fn new(first_write: WriteId) -> Recorder {
        Recorder {
            started: Instant::now(),
            next_id: AtomicU64::new(0),
            records: Mutex::new(Vec::new()),
            sizes: Mutex::new(HashMap::new()),
            next_write: AtomicU64::new(first_write),
        }
    }

    /// Microseconds since the recorder started.
    #[must_use]
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn new_write(&self, size: u64) -> WriteId {
        let id = self.next_write.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut sizes) = self.sizes.lock() {
            sizes.insert(id, size);
        }
        id
    }

    fn size_of(&self, write: WriteId) -> Option<u64> {
        self.sizes.lock().ok()?.get(&write).copied()
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        client: u32,
        phase: Phase,
        bucket: &str,
        key: &str,
        op: Op,
        start_us: u64,
        outcome: Outcome,
        observed: Observed,
    ) {
        let record = Record {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            client,
            phase,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            op,
            start_us,
            end_us: self.now_us(),
            outcome,
            observed,
        };
        if let Ok(mut records) = self.records.lock() {
            records.push(record);
        }
    }

    /// The history so far, in answer order.
    #[must_use]
    pub fn history(&self) -> History {
        let mut records = self.records.lock().map(|r| r.clone()).unwrap_or_default();
        records.sort_by_key(|r| (r.end_us, r.id));
        History { records }
    }

    /// Requests recorded so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed)
    }

    /// The next write id after every one used.
    #[must_use]
    pub fn next_write(&self) -> WriteId {
        self.next_write.load(Ordering::Relaxed)
    }
}

/// An SDK client for `endpoint` that never retries.
#[must_use]
pub fn client(endpoint: &str, credentials: &(String, String)) -> Client {
    let http = aws_smithy_http_client::Builder::new().build_http();
    let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(REQUEST_TIMEOUT)
        .build();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            &credentials.0,
            &credentials.1,
            None,
            None,
            "chaos",
        ))
        .force_path_style(true)
        .http_client(http)
        .timeout_config(timeouts)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

/// Creates the buckets of a scenario: `NAME-ec` (the default `ec4+2`) and `NAME-rep` (`rep3`).
///
/// # Errors
/// A bucket could not be created (after retries: the cluster is healthy at this point).
pub async fn create_buckets(s3: &Client, name: &str) -> anyhow::Result<Vec<String>> {
    let buckets = vec![format!("{name}-ec"), format!("{name}-rep")];
    for (n, bucket) in buckets.iter().enumerate() {
        let mut last = None;
        for _ in 0..10 {
            let mut request = s3.create_bucket().bucket(bucket).customize();
            if n == 1 {
                request = request.mutate_request(|r| {
                    r.headers_mut().insert("x-nimbus-storage-policy", "rep3");
                });
            }
            match request.send().await {
                Ok(_) => {
                    last = None;
                    break;
                }
                Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(format!("{e:?}")),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if let Some(e) = last {
            anyhow::bail!("create bucket {bucket}: {e}");
        }
    }
    Ok(buckets)
}

/// Classifies a failed request: a 4xx took no effect; anything else may have.
fn failure<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> Outcome {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let what = e
        .code()
        .map(str::to_owned)
        .or_else(|| e.message().map(str::to_owned))
        .unwrap_or_else(|| e.to_string());
    match status {
        Some(s) if (400..500).contains(&s) => Outcome::Failed(format!("{s} {what}")),
        Some(s) => Outcome::Unknown(format!("{s} {what}")),
        None => Outcome::Unknown(what),
    }
}

/// One client's loop.
struct Worker {
    id: u32,
    s3: Client,
    rng: StdRng,
    buckets: Vec<String>,
    spec: WorkloadSpec,
    recorder: Arc<Recorder>,
    /// The size of the last write this client saw on each key, to aim ranges.
    sizes: BTreeMap<(String, String), u64>,
}

impl Worker {
    async fn step(&mut self) {
        let bucket = self.buckets[self.rng.random_range(0..self.buckets.len())].clone();
        let key = format!("k{:03}", self.rng.random_range(0..self.spec.keys));
        match self.rng.random_range(0..100) {
            0..35 => self.put(&bucket, &key, false).await,
            35..42 => self.put(&bucket, &key, true).await,
            42..70 => self.get(&bucket, &key, None).await,
            70..82 => {
                let size = self
                    .sizes
                    .get(&(bucket.clone(), key.clone()))
                    .copied()
                    .unwrap_or(4096)
                    .max(1);
                let start = self.rng.random_range(0..size);
                let end = self.rng.random_range(start + 1..=size);
                self.get(&bucket, &key, Some((start, end))).await;
            }
            82..95 => self.delete(&bucket, &key).await,
            _ => self.list(&bucket).await,
        }
    }

    fn draw_size(&mut self) -> u64 {
        let max = self.spec.max_object_bytes.max(8192);
        match self.rng.random_range(0..100) {
            0..5 => 0,
            5..40 => self.rng.random_range(1..=4096),
            40..70 => self.rng.random_range(4097..=1 << 20),
            _ => self.rng.random_range(1 << 20..=max),
        }
    }

    /// A PUT, or an upload of two to four parts (only its completion can make it visible).
    async fn put(&mut self, bucket: &str, key: &str, multipart: bool) {
        let size = if multipart {
            let parts = self.rng.random_range(2..=4u64);
            (parts - 1) * PART_BYTES + self.rng.random_range(1..=PART_BYTES / 4)
        } else {
            self.draw_size()
        };
        let write = self.recorder.new_write(size);
        let start = self.recorder.now_us();
        let outcome = if multipart {
            self.multipart_upload(bucket, key, write, size).await
        } else {
            self.single_put(bucket, key, write, size).await
        };
        if outcome == Outcome::Ok {
            self.sizes.insert((bucket.to_owned(), key.to_owned()), size);
        }
        let op = Op::Put {
            write,
            size,
            multipart,
        };
        self.recorder.record(
            self.id,
            Phase::Load,
            bucket,
            key,
            op,
            start,
            outcome,
            Observed::Nothing,
        );
    }

    async fn single_put(&self, bucket: &str, key: &str, write: WriteId, size: u64) -> Outcome {
        let result = self
            .s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .metadata(WRITE_META, write.to_string())
            .body(ByteStream::from(payload::bytes(write, size)))
            .send()
            .await;
        match result {
            Ok(_) => Outcome::Ok,
            Err(e) => failure(&e),
        }
    }

    async fn multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        write: WriteId,
        size: u64,
    ) -> Outcome {
        let created = match self
            .s3
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .metadata(WRITE_META, write.to_string())
            .send()
            .await
        {
            Ok(c) => c,
            Err(e) => return not_completed(&failure(&e)),
        };
        let Some(upload) = created.upload_id() else {
            return Outcome::Failed("no upload id".into());
        };
        let data = payload::bytes(write, size);
        let mut completed = Vec::new();
        let mut offset = 0u64;
        let mut number = 1;
        while offset < size {
            let end = (offset + PART_BYTES).min(size);
            let part = data.slice(offset as usize..end as usize);
            match self
                .s3
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload)
                .part_number(number)
                .body(ByteStream::from(part))
                .send()
                .await
            {
                Ok(done) => completed.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(done.e_tag().map(str::to_owned))
                        .build(),
                ),
                Err(e) => {
                    let _ = self
                        .s3
                        .abort_multipart_upload()
                        .bucket(bucket)
                        .key(key)
                        .upload_id(upload)
                        .send()
                        .await;
                    return not_completed(&failure(&e));
                }
            }
            offset = end;
            number += 1;
        }
        let upload_parts = CompletedMultipartUpload::builder()
            .set_parts(Some(completed))
            .build();
        match self
            .s3
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload)
            .multipart_upload(upload_parts)
            .send()
            .await
        {
            Ok(_) => Outcome::Ok,
            Err(e) => failure(&e),
        }
    }

    async fn get(&mut self, bucket: &str, key: &str, range: Option<(u64, u64)>) {
        let (_, observed) = read_recorded(
            &self.s3,
            &self.recorder,
            self.id,
            Phase::Load,
            bucket,
            key,
            range,
        )
        .await;
        if let Observed::Object { write: Some(w), .. } = observed
            && let Some(size) = self.recorder.size_of(w)
        {
            self.sizes.insert((bucket.to_owned(), key.to_owned()), size);
        }
    }

    async fn delete(&mut self, bucket: &str, key: &str) {
        let start = self.recorder.now_us();
        let outcome = match self.s3.delete_object().bucket(bucket).key(key).send().await {
            Ok(_) => Outcome::Ok,
            Err(e) => failure(&e),
        };
        self.recorder.record(
            self.id,
            Phase::Load,
            bucket,
            key,
            Op::Delete,
            start,
            outcome,
            Observed::Nothing,
        );
    }

    async fn list(&mut self, bucket: &str) {
        let start = self.recorder.now_us();
        let (outcome, observed) = list(&self.s3, bucket).await;
        self.recorder.record(
            self.id,
            Phase::Load,
            bucket,
            "",
            Op::List,
            start,
            outcome,
            observed,
        );
    }
}

/// A multipart upload that was never completed took no effect, whatever failed.
fn not_completed(why: &Outcome) -> Outcome {
    match why {
        Outcome::Failed(w) | Outcome::Unknown(w) => Outcome::Failed(format!("not completed: {w}")),
        Outcome::Ok => Outcome::Failed("not completed".into()),
    }
}

/// GETs `key` (bytes `range` of it), records the request as client `client`'s, and returns
/// what it recorded.
async fn read_recorded(
    s3: &Client,
    recorder: &Recorder,
    client: u32,
    phase: Phase,
    bucket: &str,
    key: &str,
    range: Option<(u64, u64)>,
) -> (Outcome, Observed) {
    let start = recorder.now_us();
    let (outcome, observed) = read(s3, recorder, bucket, key, range).await;
    recorder.record(
        client,
        phase,
        bucket,
        key,
        Op::Get { range },
        start,
        outcome.clone(),
        observed.clone(),
    );
    (outcome, observed)
}

/// One GET, not recorded.
async fn read(
    s3: &Client,
    recorder: &Recorder,
    bucket: &str,
    key: &str,
    range: Option<(u64, u64)>,
) -> (Outcome, Observed) {
    let mut request = s3.get_object().bucket(bucket).key(key);
    if let Some((start, end)) = range {
        request = request.range(format!("bytes={start}-{}", end - 1));
    }
    let got = match request.send().await {
        Ok(got) => got,
        Err(e) if e.code() == Some("NoSuchKey") => return (Outcome::Ok, Observed::NotFound),
        Err(e) => return (failure(&e), Observed::Nothing),
    };
    let write: Option<WriteId> = got
        .metadata()
        .and_then(|m| m.get(WRITE_META))
        .and_then(|w| w.parse().ok());
    let body = match got.body.collect().await {
        Ok(b) => b.into_bytes(),
        // The body broke off: the client did not accept these bytes.
        Err(e) => return (Outcome::Unknown(format!("body: {e}")), Observed::Nothing),
    };
    let intact = write
        .and_then(|w| recorder.size_of(w).map(|size| (w, size)))
        .is_some_and(|(w, size)| payload::matches(w, size, range, &body));
    (Outcome::Ok, Observed::Object { write, intact })
}

/// LISTs the whole bucket, not recorded.
async fn list(s3: &Client, bucket: &str) -> (Outcome, Observed) {
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token.clone())
            .send()
            .await;
        match page {
            Ok(page) => {
                keys.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_owned)),
                );
                match page.next_continuation_token() {
                    Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                    _ => return (Outcome::Ok, Observed::Keys(keys)),
                }
            }
            Err(e) => return (failure(&e), Observed::Nothing),
        }
    }
}

/// Runs `spec.clients` clients over `endpoints` (client `c` uses endpoint `c mod n`) until
/// `stop` is set.
pub async fn run(
    spec: &WorkloadSpec,
    endpoints: &[String],
    credentials: &(String, String),
    buckets: &[String],
    seed: u64,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) {
    let mut tasks = Vec::new();
    for c in 0..spec.clients {
        let endpoint = &endpoints[c as usize % endpoints.len()];
        let mut worker = Worker {
            id: c,
            s3: client(endpoint, credentials),
            rng: StdRng::seed_from_u64(seed ^ (u64::from(c) << 32)),
            buckets: buckets.to_vec(),
            spec: spec.clone(),
            recorder: Arc::clone(&recorder),
            sizes: BTreeMap::new(),
        };
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) && !crate::interrupt::interrupted() {
                worker.step().await;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// After healing: one GET of every key the history touched and one LIST of every bucket,
/// recorded in the final phase. A read that does not succeed is tried twice more
/// (each try a fresh request; only the last is recorded).
pub async fn final_reads(
    endpoints: &[String],
    credentials: &(String, String),
    buckets: &[String],
    recorder: &Recorder,
) {
    let s3 = client(&endpoints[0], credentials);
    let keys: BTreeSet<(String, String)> = recorder
        .history()
        .records
        .iter()
        .filter(|r| r.is_mutation())
        .map(|r| (r.bucket.clone(), r.key.clone()))
        .collect();
    for (bucket, key) in keys {
        let get = Op::Get { range: None };
        final_request(recorder, &bucket, &key, get, || {
            read(&s3, recorder, &bucket, &key, None)
        })
        .await;
    }
    for bucket in buckets {
        final_request(recorder, bucket, "", Op::List, || list(&s3, bucket)).await;
    }
}

/// One final-phase request, tried up to three times a second apart until it succeeds; only
/// the last try is recorded.
async fn final_request<F, Fut>(recorder: &Recorder, bucket: &str, key: &str, op: Op, mut send: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (Outcome, Observed)>,
{
    for attempt in 0..3 {
        let start = recorder.now_us();
        let (outcome, observed) = send().await;
        if outcome == Outcome::Ok || attempt == 2 {
            let op = op.clone();
            recorder.record(
                u32::MAX,
                Phase::Final,
                bucket,
                key,
                op,
                start,
                outcome,
                observed,
            );
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
