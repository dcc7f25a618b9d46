//! nimbus-bench against a real `nimbus dev`, as an operator runs it: the `nimbus-bench`
//! binary (built by Cargo for this test) drives the `nimbus` binary's local cluster over
//! S3, then compares and plots the results.
//!
//! Where `nimbus` comes from: Cargo gives a test the path of its own package's binaries
//! only (`CARGO_BIN_EXE_*`), and artifact dependencies are unstable. The test binary runs
//! from `<target>/<profile>/deps/`, and Cargo puts the workspace's binaries of the same
//! build in `<target>/<profile>/`, so `nimbus` is looked up there (any `CARGO_TARGET_DIR`,
//! any profile); `cargo test --workspace` builds it, `cargo test -p nimbus-bench` needs
//! `cargo build -p nimbus` first. `NIMBUS_BIN` overrides the path.
//!
//! The Swift driver test runs only when `NIMBUS_BENCH_SWIFT=1` and `ST_AUTH`, `ST_USER`,
//! `ST_KEY` point at a Swift endpoint (e.g. `. /tmp/swift-saio/saio.env` after
//! `shared/peers/swift-saio/setup.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot set itself up should panic
#![allow(clippy::disallowed_methods)] // blocking test threads, no async runtime here

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nimbus_testkit::DevCluster;
use serde_json::Value;

/// A running `nimbus dev` and its S3 credentials.
struct Dev {
    endpoint: String,
    access_key: String,
    secret_key: String,
    _cluster: DevCluster,
}

fn nimbus_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("NIMBUS_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("nimbus");
    assert!(
        std::fs::metadata(&bin).is_ok(),
        "no {}: build it with `cargo build -p nimbus` (cargo test --workspace does), or set NIMBUS_BIN",
        bin.display()
    );
    bin
}

fn start_dev() -> Dev {
    let data = tempfile::Builder::new()
        .prefix("nimbus-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let cluster = DevCluster::start(&nimbus_bin(), data);
    Dev {
        endpoint: cluster.endpoint(),
        access_key: cluster.access_key(),
        secret_key: cluster.secret_key(),
        _cluster: cluster,
    }
}

/// Runs `nimbus-bench ARGS` with no AWS_*/ST_* variables from the environment.
fn bench(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nimbus-bench"));
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") || name.starts_with("ST_") {
            command.env_remove(name);
        }
    }
    let output = command.args(args).output().unwrap();
    assert!(
        output.status.success(),
        "nimbus-bench {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn s3_run(dev: &Dev, json: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "run",
        "--endpoint",
        &dev.endpoint,
        "--access-key",
        &dev.access_key,
        "--secret-key",
        &dev.secret_key,
        "--path-style",
        "--json",
        json.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let output = bench(&args);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("p99.9"), "{table}");
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

/// Checks what every sane result shows: operations done, none failed, ordered percentiles.
fn assert_sane(result: &Value, op_names: &[&str]) {
    let total = &result["total"];
    assert!(total["ops"].as_u64().unwrap() > 0, "{result}");
    assert_eq!(total["errors"].as_u64(), Some(0), "{result}");
    assert!(total["ops_per_sec"].as_f64().unwrap() > 0.0);
    for name in op_names {
        let op = result["ops"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["op"] == *name)
            .unwrap_or_else(|| panic!("no {name} in {result}"));
        assert!(op["ops"].as_u64().unwrap() > 0, "no {name} done: {result}");
        let l = &op["latency_us"];
        let p: Vec<u64> = ["min", "p50", "p90", "p99", "p999", "max"]
            .iter()
            .map(|k| l[k].as_u64().unwrap())
            .collect();
        assert!(p[0] > 0, "{l}");
        assert!(
            p.windows(2).all(|w| w[0] <= w[1]),
            "percentiles out of order: {l}"
        );
    }
    assert_eq!(result["tool"], "nimbus-bench");
    assert!(!result["commit"].as_str().unwrap().is_empty());
    assert!(result["time_utc"].as_str().unwrap().ends_with('Z'));
    assert!(result["cpu"]["cores"].as_u64().unwrap() >= 1);
}

#[test]
fn s3_runs_report_figures_that_compare_and_plot() {
    let dev = start_dev();
    let dir = tempfile::tempdir().unwrap();
    let put = dir.path().join("put.json");
    let get = dir.path().join("get.json");
    let mix = dir.path().join("mix.json");

    let result = s3_run(
        &dev,
        &put,
        &[
            "--op",
            "put",
            "--size",
            "4KiB",
            "--objects",
            "40",
            "-c",
            "4",
            "--ops",
            "60",
            "--label",
            "put 4KiB",
        ],
    );
    assert_sane(&result, &["put"]);
    assert_eq!(result["total"]["bytes"].as_u64(), Some(60 * 4096));
    assert_eq!(result["config"]["verify"], false);

    // The prepare phase uploads the 40 keys, then every GET is checked byte for byte.
    let result = s3_run(
        &dev,
        &get,
        &[
            "--op",
            "get",
            "--verify",
            "--size",
            "1KiB..96KiB",
            "--objects",
            "40",
            "-c",
            "4",
            "--ops",
            "80",
            "--zipf",
            "1.1",
            "--label",
            "get verified",
        ],
    );
    assert_sane(&result, &["get"]);
    assert_eq!(result["config"]["verify"], true);
    assert_eq!(result["config"]["s3_client"], "http");
    assert_eq!(result["prepare"]["objects"].as_u64(), Some(40));

    // The same keys through the SDK, and missing keys through either: errors by S3 code.
    let sdk = dir.path().join("sdk.json");
    let result = s3_run(
        &dev,
        &sdk,
        &[
            "--s3-client",
            "sdk",
            "--op",
            "get",
            "--verify",
            "--no-prepare",
            "--size",
            "1KiB..96KiB",
            "--objects",
            "40",
            "-c",
            "2",
            "--ops",
            "20",
        ],
    );
    assert_sane(&result, &["get"]);
    assert_eq!(result["config"]["s3_client"], "sdk");
    for client in ["http", "sdk"] {
        let result = s3_run(
            &dev,
            &sdk,
            &[
                "--s3-client",
                client,
                "--op",
                "get",
                "--no-prepare",
                "--prefix",
                "missing/",
                "--objects",
                "3",
                "-c",
                "1",
                "--ops",
                "3",
            ],
        );
        let get = &result["ops"][0];
        assert_eq!(get["errors"].as_u64(), Some(3), "{client}: {result}");
        assert_eq!(
            get["errors_by_kind"]["http 404 NoSuchKey"].as_u64(),
            Some(3),
            "{client}: {result}"
        );
    }

    let result = s3_run(
        &dev,
        &mix,
        &[
            "--mix",
            "put=30,get=30,get-range=15,head=15,list=5,delete=5",
            "--size",
            "1KiB..64KiB",
            "--range-bytes",
            "4KiB",
            "--objects",
            "30",
            "-c",
            "4",
            "--duration",
            "4s",
            "--warmup",
            "1s",
            "--verify",
            "--label",
            "mix",
        ],
    );
    assert_sane(&result, &["put", "get", "get-range", "head"]);
    assert!(result["elapsed_secs"].as_f64().unwrap() >= 3.9);

    // Two parts each (S3 wants 5 MiB parts but the last), then read back and verified.
    let multipart = dir.path().join("multipart.json");
    let result = s3_run(
        &dev,
        &multipart,
        &[
            "--op",
            "multipart",
            "--size",
            "6MiB",
            "--part-size",
            "5MiB",
            "--objects",
            "2",
            "-c",
            "2",
            "--ops",
            "2",
            "--prefix",
            "mpu/",
        ],
    );
    assert_sane(&result, &["multipart"]);
    let result = s3_run(
        &dev,
        &multipart,
        &[
            "--op",
            "get",
            "--verify",
            "--no-prepare",
            "--size",
            "6MiB",
            "--objects",
            "2",
            "-c",
            "2",
            "--ops",
            "4",
            "--prefix",
            "mpu/",
        ],
    );
    assert_sane(&result, &["get"]);
    assert_eq!(result["total"]["bytes"].as_u64(), Some(4 * (6 << 20)));

    let compared = bench(&[
        "compare",
        put.to_str().unwrap(),
        get.to_str().unwrap(),
        mix.to_str().unwrap(),
    ]);
    let table = String::from_utf8_lossy(&compared.stdout);
    assert!(table.contains("put ops/s"), "{table}");
    assert!(table.contains("get p99.9"), "{table}");
    assert!(table.contains("x)"), "no ratio in {table}");

    let plots = dir.path().join("plots");
    bench(&[
        "plot",
        put.to_str().unwrap(),
        get.to_str().unwrap(),
        mix.to_str().unwrap(),
        "--out",
        plots.to_str().unwrap(),
    ]);
    for chart in ["throughput.svg", "latency-cdf.svg"] {
        let svg = std::fs::read_to_string(plots.join(chart)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("<polyline"),
            "{chart}: {svg:.200}"
        );
    }
}

#[test]
fn bad_flags_are_refused_before_any_request() {
    let output = Command::new(env!("CARGO_BIN_EXE_nimbus-bench"))
        .args(["run", "--op", "fly", "--endpoint", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown operation"));
    let output = Command::new(env!("CARGO_BIN_EXE_nimbus-bench"))
        .args(["run", "--op", "put", "--size", "4 parsecs"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown unit"));
}

/// Opt-in: `NIMBUS_BENCH_SWIFT=1` with ST_AUTH, ST_USER and ST_KEY of a Swift endpoint.
#[test]
fn swift_runs_against_a_swift_endpoint_when_asked() {
    if std::env::var("NIMBUS_BENCH_SWIFT").as_deref() != Ok("1") {
        eprintln!("skipped: set NIMBUS_BENCH_SWIFT=1 and ST_AUTH, ST_USER, ST_KEY to run it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("swift.json");
    let output = Command::new(env!("CARGO_BIN_EXE_nimbus-bench"))
        .args([
            "run",
            "--api",
            "swift",
            "--mix",
            "put=30,get=40,get-range=10,head=10,list=5,delete=5",
            "--size",
            "1KiB..64KiB",
            "--objects",
            "30",
            "-c",
            "4",
            "--ops",
            "120",
            "--verify",
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_sane(&result, &["put", "get", "get-range", "head"]);
}
