//! `nimbus-bench`: run a workload against an S3 or Swift endpoint, compare results, plot
//! them. Parses flags, sets the driver up and hands over to the library.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use nimbus_bench::driver::Driver;
use nimbus_bench::driver::s3::{S3Client, S3Driver, S3Settings};
use nimbus_bench::driver::swift::{SwiftDriver, SwiftSettings};
use nimbus_bench::report::{RunConfigRecord, RunResult, rfc3339_utc};
use nimbus_bench::runner::{self, RunSpec};
use nimbus_bench::units::{parse_duration, parse_size};
use nimbus_bench::workload::{KeyDist, Mix, OpKind, SizeSpec};
use nimbus_bench::{compare, plot};

/// Load generator for S3 and Swift endpoints.
#[derive(Debug, Parser)]
#[command(name = "nimbus-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a workload and report throughput, latency percentiles and errors.
    Run(Box<RunArgs>),
    /// Set results side by side, with ratios to the first.
    Compare {
        /// Result files written by `run --json`.
        #[arg(required = true)]
        results: Vec<PathBuf>,
    },
    /// Draw throughput-by-size and latency CDF charts (SVG).
    Plot {
        /// Result files written by `run --json`.
        #[arg(required = true)]
        results: Vec<PathBuf>,
        /// Directory for the charts.
        #[arg(long, default_value = "bench-plots")]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Api {
    S3,
    Swift,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// API to drive.
    #[arg(long, value_enum, default_value = "s3")]
    api: Api,
    /// Operation, or a mix with weights: put, get, get-range, head, delete, list,
    /// multipart; e.g. `put=20,get=70,delete=10`.
    #[arg(long, visible_alias = "op")]
    mix: Mix,
    /// Object size: `4KiB`, a uniform range `4KiB..1MiB`, or weights `4KiB:70,1MiB:30`
    /// (each key keeps one size for a given seed).
    #[arg(long, default_value = "4KiB")]
    size: SizeSpec,
    /// Keys in the key space.
    #[arg(long, default_value_t = 1000)]
    objects: u64,
    /// Draw keys from a Zipf distribution with this exponent (default: uniform).
    #[arg(long)]
    zipf: Option<f64>,
    /// Concurrent clients.
    #[arg(long, short = 'c', default_value_t = 16)]
    concurrency: u32,
    /// Measured duration (after warmup); 30s unless --ops is given.
    #[arg(long, value_parser = parse_duration, conflicts_with = "ops")]
    duration: Option<Duration>,
    /// Measured operations (after warmup) instead of a duration.
    #[arg(long)]
    ops: Option<u64>,
    /// Warmup, run but excluded from the figures.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    warmup: Duration,
    /// Open loop: start operations at this rate (ops/s) whatever the latency; latency
    /// counts from when each was due.
    #[arg(long)]
    rate: Option<f64>,
    /// Bytes read by each get-range.
    #[arg(long, value_parser = parse_size, default_value = "64KiB")]
    range_bytes: u64,
    /// Part size of multipart uploads.
    #[arg(long, value_parser = parse_size, default_value = "8MiB")]
    part_size: u64,
    /// Keys per list request.
    #[arg(long, default_value_t = 1000)]
    list_max_keys: u32,
    /// Check every GET payload (and HEAD length) against the expected content.
    #[arg(long)]
    verify: bool,
    /// Per-operation timeout.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    timeout: Duration,
    /// Seed of every random choice (keys, sizes, operations).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Skip uploading the data set before reads (it is already there).
    #[arg(long)]
    no_prepare: bool,
    /// Bucket (S3) or container (Swift); created if missing.
    #[arg(long, default_value = "nimbus-bench")]
    bucket: String,
    /// Key prefix.
    #[arg(long, default_value = "nb/")]
    prefix: String,
    /// Write the full result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A label for compare and plot.
    #[arg(long, default_value = "")]
    label: String,
    /// No progress line (it is shown only when stderr is a terminal anyway).
    #[arg(long)]
    no_progress: bool,
    /// S3 endpoint URL.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint: Option<String>,
    /// S3 access key id.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    access_key: Option<String>,
    /// S3 secret key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// S3 region.
    #[arg(long, env = "AWS_DEFAULT_REGION", default_value = "us-east-1")]
    region: String,
    /// S3 path-style addressing (default: virtual-host style; the SDK uses path style by
    /// itself for IP-address endpoints).
    #[arg(long)]
    path_style: bool,
    /// How S3 object requests are sent: `http` signs PUT, GET, HEAD and DELETE with the
    /// SDK's SigV4 signer and sends them on a plain hyper client, as the Swift driver sends
    /// its requests (plain http:// endpoints; the SDK sends the rest); `sdk` sends every
    /// request through the AWS SDK, which costs the client several times the CPU.
    #[arg(long, value_enum, default_value = "http")]
    s3_client: S3Client,
    /// Swift v1 auth URL.
    #[arg(long, env = "ST_AUTH")]
    auth_url: Option<String>,
    /// Swift user (`account:user`).
    #[arg(long, env = "ST_USER")]
    user: Option<String>,
    /// Swift key.
    #[arg(long, env = "ST_KEY", hide_env_values = true)]
    key: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run(args) => run(*args),
        Command::Compare { results } => compare_files(&results),
        Command::Plot { results, out } => plot_files(&results, &out),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nimbus-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn compare_files(paths: &[PathBuf]) -> anyhow::Result<()> {
    let results = paths
        .iter()
        .map(|p| compare::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    print!("{}", compare::table(&results)?);
    Ok(())
}

fn plot_files(paths: &[PathBuf], out: &std::path::Path) -> anyhow::Result<()> {
    let results = paths
        .iter()
        .map(|p| compare::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    for path in plot::plot(&results, out)? {
        println!("{}", path.display());
    }
    Ok(())
}

/// Checks what clap cannot; returns the run's spec.
fn spec(args: &RunArgs) -> anyhow::Result<RunSpec> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if args.objects == 0 {
        bail!("--objects must be at least 1");
    }
    if args.list_max_keys == 0 {
        bail!("--list-max-keys must be at least 1");
    }
    if let Some(s) = args.zipf
        && !(s.is_finite() && s > 0.0)
    {
        bail!("--zipf must be a positive number");
    }
    if let Some(r) = args.rate
        && !(r.is_finite() && r > 0.0)
    {
        bail!("--rate must be a positive number of operations per second");
    }
    if args.api == Api::Swift && args.mix.kinds().any(|k| k == OpKind::Multipart) {
        bail!("multipart is an S3 operation (Swift SLO/DLO uploads are not driven yet)");
    }
    if args.mix.kinds().any(|k| k == OpKind::Multipart) && args.part_size == 0 {
        bail!("--part-size must be above 0");
    }
    Ok(RunSpec {
        mix: args.mix.clone(),
        sizes: args.size.clone(),
        objects: args.objects,
        keys: args.zipf.map_or(KeyDist::Uniform, |s| KeyDist::Zipf { s }),
        prefix: args.prefix.clone(),
        concurrency: args.concurrency,
        duration: match (args.duration, args.ops) {
            (_, Some(_)) => None,
            (Some(d), None) => Some(d),
            (None, None) => Some(Duration::from_secs(30)),
        },
        ops: args.ops,
        warmup: args.warmup,
        rate: args.rate,
        range_bytes: args.range_bytes,
        part_size: args.part_size,
        list_max_keys: args.list_max_keys,
        verify: args.verify,
        timeout: args.timeout,
        seed: args.seed,
        progress: !args.no_progress && std::io::stderr().is_terminal(),
    })
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let spec = spec(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let result = runtime.block_on(run_async(&args, &spec))?;
    print!("{}", result.to_table());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&result).context("encode the result")?;
        std::fs::write(path, json + "\n").with_context(|| format!("write {}", path.display()))?;
        println!("result written to {}", path.display());
    }
    Ok(())
}

async fn connect(args: &RunArgs) -> anyhow::Result<(Driver, String)> {
    match args.api {
        Api::S3 => {
            let settings = S3Settings {
                endpoint: args
                    .endpoint
                    .clone()
                    .context("missing the S3 endpoint: --endpoint or AWS_ENDPOINT_URL")?,
                access_key: args
                    .access_key
                    .clone()
                    .context("missing the access key: --access-key or AWS_ACCESS_KEY_ID")?,
                secret_key: args
                    .secret_key
                    .clone()
                    .context("missing the secret key: --secret-key or AWS_SECRET_ACCESS_KEY")?,
                region: args.region.clone(),
                path_style: args.path_style,
                bucket: args.bucket.clone(),
                client: args.s3_client,
            };
            let endpoint = settings.endpoint.clone();
            Ok((Driver::S3(Box::new(S3Driver::new(&settings)?)), endpoint))
        }
        Api::Swift => {
            let settings = SwiftSettings {
                auth_url: args
                    .auth_url
                    .clone()
                    .context("missing the Swift auth URL: --auth-url or ST_AUTH")?,
                user: args
                    .user
                    .clone()
                    .context("missing the Swift user: --user or ST_USER")?,
                key: args
                    .key
                    .clone()
                    .context("missing the Swift key: --key or ST_KEY")?,
                container: args.bucket.clone(),
            };
            let endpoint = settings.auth_url.clone();
            Ok((
                Driver::Swift(Box::new(SwiftDriver::connect(&settings).await?)),
                endpoint,
            ))
        }
    }
}

async fn run_async(args: &RunArgs, spec: &RunSpec) -> anyhow::Result<RunResult> {
    let (driver, endpoint) = connect(args).await.context("set the driver up")?;
    driver
        .ensure_bucket()
        .await
        .context("create the bucket or container")?;
    let prepare = if spec.mix.reads_existing() && !args.no_prepare {
        eprintln!(
            "nimbus-bench: prepare: uploading {} objects ({})",
            spec.objects, spec.sizes
        );
        Some(
            runner::prepare(&driver, spec)
                .await
                .context("prepare the data set")?,
        )
    } else {
        None
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let on_signal = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nnimbus-bench: stopping (operations in flight finish)");
            let _ = stop_tx.send(true);
        }
    });
    let time_utc = rfc3339_utc(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    let measured = runner::run(&driver, spec, stop_rx).await;
    on_signal.abort();
    let elapsed_secs = measured.elapsed.as_secs_f64();
    let (total, ops) = measured.recorder.summarize(elapsed_secs);
    Ok(RunResult {
        tool: "nimbus-bench".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        commit: commit(),
        time_utc,
        config: RunConfigRecord {
            api: match args.api {
                Api::S3 => "s3",
                Api::Swift => "swift",
            }
            .to_owned(),
            endpoint,
            path_style: args.path_style,
            // What was used: an https:// endpoint goes through the SDK whatever was asked.
            s3_client: match &driver {
                Driver::S3(d) => d.client().name().to_owned(),
                Driver::Swift(_) => String::new(),
            },
            bucket: args.bucket.clone(),
            prefix: spec.prefix.clone(),
            mix: spec.mix.to_string(),
            sizes: spec.sizes.to_string(),
            size_mean_bytes: spec.sizes.mean(),
            objects: spec.objects,
            keys: match spec.keys {
                KeyDist::Uniform => "uniform".to_owned(),
                KeyDist::Zipf { s } => format!("zipf({s})"),
            },
            concurrency: spec.concurrency,
            duration_secs: spec.duration.map(|d| d.as_secs_f64()),
            ops: spec.ops,
            warmup_secs: spec.warmup.as_secs_f64(),
            rate: spec.rate,
            range_bytes: spec.range_bytes,
            part_size_bytes: spec.part_size,
            verify: spec.verify,
            timeout_secs: spec.timeout.as_secs_f64(),
            seed: spec.seed,
            label: args.label.clone(),
        },
        prepare,
        elapsed_secs,
        total,
        ops,
        cpu: measured.cpu,
        interrupted: measured.interrupted,
    })
}

/// `git rev-parse HEAD` in the current directory, or `unknown`.
fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
