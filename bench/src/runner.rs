//! Drives a workload against a [`Driver`]: the prepare phase (uploads the data set), then
//! `concurrency` workers, closed loop (each issues its next operation when the last one
//! ends) or open loop (operations are due at a fixed rate; latency counts from when an
//! operation was due, so a server that falls behind is not flattered: no coordinated
//! omission). Warmup operations run but are not recorded. A progress line is redrawn on
//! stderr when asked.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cpu::CpuTimes;
use crate::driver::{ByteRange, Driver, ErrorKind, OpError};
use crate::error::SetupError;
use crate::payload;
use crate::report::{CpuUsage, PrepareSummary, Recorder};
use crate::workload::{KeyDist, KeySampler, Mix, OpKind, Rng, SizeSpec, key_name, key_size, mix64};

/// Draws of a key that is not deleted before an operation that reads goes ahead anyway.
const PRESENT_KEY_DRAWS: u32 = 8;

/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What a run does (validated by the command line).
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The operations and their weights.
    pub mix: Mix,
    /// Object sizes (fixed per key, see [`key_size`]).
    pub sizes: SizeSpec,
    /// Keys in the key space.
    pub objects: u64,
    /// How keys are drawn.
    pub keys: KeyDist,
    /// Key prefix.
    pub prefix: String,
    /// Concurrent workers (at least 1).
    pub concurrency: u32,
    /// Measured duration (after warmup); `None` with `ops`.
    pub duration: Option<Duration>,
    /// Measured operations; `None` with `duration`.
    pub ops: Option<u64>,
    /// Warmup, run but not recorded.
    pub warmup: Duration,
    /// Open-loop rate, operations per second (> 0); `None` for closed loop.
    pub rate: Option<f64>,
    /// Bytes per ranged GET.
    pub range_bytes: u64,
    /// Multipart part size.
    pub part_size: u64,
    /// Keys per list page.
    pub list_max_keys: u32,
    /// Whether to verify GET payloads.
    pub verify: bool,
    /// Per-operation timeout.
    pub timeout: Duration,
    /// Seed of every random choice.
    pub seed: u64,
    /// Whether to redraw a progress line on stderr.
    pub progress: bool,
}

/// What the measured phase gathered.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Merged figures of all workers.
    pub recorder: Recorder,
    /// Measured wall time (warmup excluded).
    pub elapsed: Duration,
    /// The client's CPU use over warmup and measured time.
    pub cpu: CpuUsage,
    /// Whether a stop (Ctrl-C) cut the run short.
    pub interrupted: bool,
}

/// Counters the progress line reads.
#[derive(Debug, Default)]
struct Progress {
    ops: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

/// Redraws `phase` figures on stderr every second until `done` is set.
async fn show_progress(
    phase: &'static str,
    progress: Arc<Progress>,
    total: Option<u64>,
    done: Arc<AtomicBool>,
) {
    let start = Instant::now();
    let (mut last_ops, mut last_bytes, mut last_at) = (0u64, 0u64, start);
    while !done.load(Ordering::Relaxed) {
        tokio::time::sleep(PROGRESS_EVERY).await;
        let now = Instant::now();
        let ops = progress.ops.load(Ordering::Relaxed);
        let bytes = progress.bytes.load(Ordering::Relaxed);
        let secs = now.duration_since(last_at).as_secs_f64().max(1e-9);
        let of = total.map_or(String::new(), |t| format!("/{t}"));
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{phase} {:>5.0}s  {ops}{of} ops  {:.0} ops/s  {:.1} MiB/s  errors {}",
            now.duration_since(start).as_secs_f64(),
            (ops - last_ops) as f64 / secs,
            (bytes - last_bytes) as f64 / secs / f64::from(1u32 << 20),
            progress.errors.load(Ordering::Relaxed)
        );
        let _ = err.flush();
        (last_ops, last_bytes, last_at) = (ops, bytes, now);
    }
    let _ = write!(std::io::stderr(), "\r\x1b[2K");
}

/// Uploads every key of the key space (its size from [`key_size`]) with `concurrency`
/// workers.
///
/// # Errors
///
/// [`SetupError::Prepare`] when any upload failed (the data set would be incomplete).
pub async fn prepare(driver: &Driver, spec: &RunSpec) -> Result<PrepareSummary, SetupError> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Progress::default());
    let done = Arc::new(AtomicBool::new(false));
    let shown = spec.progress.then(|| {
        tokio::spawn(show_progress(
            "prepare",
            Arc::clone(&progress),
            Some(spec.objects),
            Arc::clone(&done),
        ))
    });
    let mut workers = JoinSet::new();
    for _ in 0..spec.concurrency {
        let (driver, spec, next, progress) = (
            driver.clone(),
            spec.clone(),
            Arc::clone(&next),
            Arc::clone(&progress),
        );
        workers.spawn(async move {
            let mut first: Option<OpError> = None;
            let mut failed = 0u64;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= spec.objects {
                    break;
                }
                let key = key_name(&spec.prefix, index);
                let size = key_size(&spec.sizes, spec.seed, index);
                let payload = payload::Payload::of(&key, size);
                let put = tokio::time::timeout(spec.timeout, driver.put(&key, &payload)).await;
                match put.unwrap_or_else(|_| Err(timeout_error(spec.timeout))) {
                    Ok(()) => {
                        progress.bytes.fetch_add(size, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed += 1;
                        progress.errors.fetch_add(1, Ordering::Relaxed);
                        first.get_or_insert(e);
                    }
                }
                progress.ops.fetch_add(1, Ordering::Relaxed);
            }
            (failed, first)
        });
    }
    let mut failed = 0;
    let mut first = None;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok((n, e)) => {
                failed += n;
                if first.is_none() {
                    first = e.map(|e| e.to_string());
                }
            }
            Err(e) => {
                failed += 1;
                first.get_or_insert_with(|| format!("worker: {e}"));
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    if let Some(shown) = shown {
        let _ = shown.await;
    }
    if failed > 0 {
        return Err(SetupError::Prepare {
            objects: spec.objects,
            failed,
            first: first.unwrap_or_default(),
        });
    }
    Ok(PrepareSummary {
        objects: spec.objects,
        bytes: progress.bytes.load(Ordering::Relaxed),
        secs: started.elapsed().as_secs_f64(),
    })
}

fn timeout_error(timeout: Duration) -> OpError {
    OpError::new(ErrorKind::Timeout, format!("no answer within {timeout:?}"))
}

/// State the workers share.
#[derive(Debug)]
struct Shared {
    driver: Driver,
    spec: RunSpec,
    sampler: KeySampler,
    /// Whether each key is believed present (deletes clear it, puts set it).
    present: Vec<AtomicBool>,
    /// Deletes started on each key, so a read can tell whether one overlapped it.
    deletes: Vec<AtomicU64>,
    start: Instant,
    warm_end: Instant,
    deadline: Option<Instant>,
    /// Measured operations left to issue, with `--ops`.
    budget: Option<AtomicU64>,
    /// Open loop: operations issued so far (the next one is due at `start + n / rate`).
    ticks: AtomicU64,
    progress: Arc<Progress>,
}

/// Runs the measured phase until its duration or operation count is reached, or `stop`
/// turns true (then operations in flight finish, bounded by the timeout).
pub async fn run(driver: &Driver, spec: &RunSpec, stop: watch::Receiver<bool>) -> Measured {
    let key_count = usize::try_from(spec.objects).unwrap_or(usize::MAX);
    let start = Instant::now();
    let warm_end = start + spec.warmup;
    let shared = Arc::new(Shared {
        driver: driver.clone(),
        spec: spec.clone(),
        sampler: KeySampler::new(spec.objects, spec.keys),
        present: (0..key_count).map(|_| AtomicBool::new(true)).collect(),
        deletes: (0..key_count).map(|_| AtomicU64::new(0)).collect(),
        start,
        warm_end,
        deadline: spec.duration.map(|d| warm_end + d),
        budget: spec.ops.map(AtomicU64::new),
        ticks: AtomicU64::new(0),
        progress: Arc::new(Progress::default()),
    });
    let cpu_before = CpuTimes::now();
    let done = Arc::new(AtomicBool::new(false));
    let shown = spec.progress.then(|| {
        let total = spec.ops;
        tokio::spawn(show_progress(
            "run",
            Arc::clone(&shared.progress),
            total,
            Arc::clone(&done),
        ))
    });
    let mut workers = JoinSet::new();
    for id in 0..spec.concurrency {
        workers.spawn(worker(u64::from(id), Arc::clone(&shared), stop.clone()));
    }
    let mut recorder = Recorder::default();
    while let Some(joined) = workers.join_next().await {
        if let Ok(r) = joined {
            recorder.merge(&r);
        }
    }
    let end = Instant::now();
    done.store(true, Ordering::Relaxed);
    if let Some(shown) = shown {
        let _ = shown.await;
    }
    let cpu_after = CpuTimes::now();
    let wall = end.duration_since(start).as_secs_f64().max(1e-9);
    let user_secs = cpu_after.user_secs - cpu_before.user_secs;
    let system_secs = cpu_after.system_secs - cpu_before.system_secs;
    Measured {
        recorder,
        elapsed: end.saturating_duration_since(warm_end),
        cpu: CpuUsage {
            user_secs,
            system_secs,
            percent_of_one_core: 100.0 * (user_secs + system_secs) / wall,
            cores: std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
        },
        interrupted: *stop.borrow(),
    }
}

/// One worker: draws operations and runs them until the run ends; returns its figures.
async fn worker(id: u64, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) -> Recorder {
    let spec = &shared.spec;
    let mut rng = Rng::new(mix64(spec.seed ^ mix64(id + 1)));
    let mut recorder = Recorder::default();
    loop {
        if *stop.borrow() {
            break;
        }
        let due = match spec.rate {
            Some(rate) => {
                let n = shared.ticks.fetch_add(1, Ordering::Relaxed);
                let due = shared.start + Duration::from_secs_f64(n as f64 / rate);
                if shared.deadline.is_some_and(|d| due >= d) {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(due.into()) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                due
            }
            None => Instant::now(),
        };
        if shared.deadline.is_some_and(|d| due >= d) {
            break;
        }
        let measured = due >= shared.warm_end;
        if measured
            && let Some(budget) = &shared.budget
            && budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_err()
        {
            break;
        }
        let kind = spec.mix.sample(&mut rng);
        let result = tokio::time::timeout(spec.timeout, execute(&shared, kind, &mut rng))
            .await
            .unwrap_or_else(|_| Err(timeout_error(spec.timeout)));
        let micros = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
        shared.progress.ops.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(bytes) => {
                shared.progress.bytes.fetch_add(bytes, Ordering::Relaxed);
                if measured {
                    recorder.record_ok(kind, bytes, micros);
                }
            }
            Err(e) => {
                shared.progress.errors.fetch_add(1, Ordering::Relaxed);
                if measured {
                    recorder.record_error(kind, e);
                }
            }
        }
    }
    recorder
}

/// Draws a key believed present (a few tries), for operations that read.
fn present_key(shared: &Shared, rng: &mut Rng) -> u64 {
    let mut index = shared.sampler.sample(rng);
    for _ in 1..PRESENT_KEY_DRAWS {
        if shared
            .present
            .get(usize::try_from(index).unwrap_or(usize::MAX))
            .is_none_or(|p| p.load(Ordering::Relaxed))
        {
            break;
        }
        index = shared.sampler.sample(rng);
    }
    index
}

fn is_present(shared: &Shared, index: u64) -> bool {
    shared
        .present
        .get(usize::try_from(index).unwrap_or(usize::MAX))
        .is_none_or(|p| p.load(Ordering::Relaxed))
}

/// Deletes started on key `index` so far.
fn deletes_of(shared: &Shared, index: u64) -> u64 {
    shared
        .deletes
        .get(usize::try_from(index).unwrap_or(usize::MAX))
        .map_or(0, |d| d.load(Ordering::Relaxed))
}

/// A read's 404 on a key that a delete of this very run removed, or was removing while the
/// read ran (`deletes_before` is [`deletes_of`] when the read was drawn), is the workload's
/// doing, not the server's: it counts as done, moving no bytes. Any other 404 stays an error.
fn absent_ok(
    shared: &Shared,
    index: u64,
    deletes_before: u64,
    result: Result<u64, OpError>,
) -> Result<u64, OpError> {
    match result {
        Err(e)
            if matches!(e.kind, ErrorKind::Status { status: 404, .. })
                && (!is_present(shared, index) || deletes_of(shared, index) != deletes_before) =>
        {
            Ok(0)
        }
        other => other,
    }
}

fn mark(shared: &Shared, index: u64, present: bool) {
    if let Some(p) = shared
        .present
        .get(usize::try_from(index).unwrap_or(usize::MAX))
    {
        p.store(present, Ordering::Relaxed);
    }
}

/// Runs one operation; returns the payload bytes it moved.
async fn execute(shared: &Shared, kind: OpKind, rng: &mut Rng) -> Result<u64, OpError> {
    let spec = &shared.spec;
    let driver = &shared.driver;
    match kind {
        OpKind::Put | OpKind::Multipart => {
            let index = shared.sampler.sample(rng);
            let key = key_name(&spec.prefix, index);
            let size = key_size(&spec.sizes, spec.seed, index);
            if kind == OpKind::Put {
                driver.put(&key, &payload::Payload::of(&key, size)).await?;
            } else {
                driver.multipart(&key, size, spec.part_size).await?;
            }
            mark(shared, index, true);
            Ok(size)
        }
        OpKind::Get | OpKind::GetRange => {
            let index = present_key(shared, rng);
            let key = key_name(&spec.prefix, index);
            let size = key_size(&spec.sizes, spec.seed, index);
            let range = (kind == OpKind::GetRange && size > 0).then(|| {
                let len = spec.range_bytes.clamp(1, size);
                ByteRange {
                    offset: rng.below(size - len + 1),
                    len,
                }
            });
            let before = deletes_of(shared, index);
            let got = driver.get(&key, range, spec.verify).await.map(|g| g.bytes);
            absent_ok(shared, index, before, got)
        }
        OpKind::Head => {
            let index = present_key(shared, rng);
            let key = key_name(&spec.prefix, index);
            let before = deletes_of(shared, index);
            let size = match driver.head(&key).await {
                Err(e) => return absent_ok(shared, index, before, Err(e)),
                Ok(size) => size,
            };
            let want = key_size(&spec.sizes, spec.seed, index);
            if spec.verify && size != want {
                return Err(OpError::new(
                    ErrorKind::Verify,
                    format!("{key}: HEAD says {size} bytes, {want} expected"),
                ));
            }
            Ok(0)
        }
        OpKind::Delete => {
            let index = present_key(shared, rng);
            let key = key_name(&spec.prefix, index);
            // Marked gone first, so reads drawn meanwhile skip it or forgive its 404.
            mark(shared, index, false);
            if let Some(d) = shared
                .deletes
                .get(usize::try_from(index).unwrap_or(usize::MAX))
            {
                d.fetch_add(1, Ordering::Relaxed);
            }
            if let Err(e) = driver.delete(&key).await {
                mark(shared, index, true);
                return Err(e);
            }
            Ok(0)
        }
        OpKind::List => {
            driver.list(&spec.prefix, spec.list_max_keys).await?;
            Ok(0)
        }
    }
}
