//! `nimbus ring …` as an operator runs it: the real binary on real files in a temp dir.

#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Self {
        Dir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn nimbus(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_nimbus"))
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.nimbus(args);
        assert!(
            out.status.success(),
            "nimbus {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    /// Runs a command that must fail, and checks that it named the problem and left `file`
    /// byte for byte as it was.
    fn refused(&self, args: &[&str], file: &Path, expect: &str) {
        let before = std::fs::read(file).ok();
        let out = self.nimbus(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "nimbus {args:?} succeeded");
        assert!(
            stderr.contains(expect),
            "nimbus {args:?}: expected {expect:?} in {stderr:?}"
        );
        assert_eq!(
            std::fs::read(file).ok(),
            before,
            "nimbus {args:?} changed the file"
        );
    }

    /// An ec4+2 builder over 8 zones of one region, 2 nodes each.
    fn cluster(&self) -> &'static str {
        self.ok(&[
            "ring",
            "create",
            "obj.builder",
            "--policy",
            "ec4+2",
            "--part-power",
            "8",
            "--seed",
            "42",
        ]);
        for z in 1..=8 {
            // two devices per command, one per command, as operators do both
            let a = format!("r1z{z}-10.0.{z}.1:6200/sdb");
            let b = format!("r1z{z}-10.0.{z}.2:6200/sdb");
            if z % 2 == 0 {
                self.ok(&["ring", "add", "obj.builder", &a, "100", &b, "100"]);
            } else {
                self.ok(&["ring", "add", "obj.builder", &a, "100"]);
                self.ok(&["ring", "add", "obj.builder", &b, "100"]);
            }
        }
        "obj.builder"
    }
}

#[test]
fn an_operator_builds_a_ring_and_looks_up_an_object() {
    let d = Dir::new();
    let file = d.cluster();
    // the long form of add
    d.ok(&[
        "ring",
        "add",
        file,
        "--region",
        "1",
        "--zone",
        "1",
        "--node",
        "10.0.1.3:6200",
        "--device",
        "sdc",
        "--weight",
        "100",
    ]);

    let r = d.json(&["ring", "rebalance", file]);
    assert_eq!(r["rebalance"]["slots_placed"], 256 * 6);
    assert_eq!(r["rebalance"]["slots_moved"], 0);
    assert_eq!(r["rebalance"]["epoch"], 1);
    assert!(d.path("obj.ring").is_file());

    let show = d.json(&["ring", "show", file]);
    let devices = show["balance"]["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 17);
    let slots: u64 = devices.iter().map(|d| d["slots"].as_u64().unwrap()).sum();
    assert_eq!(slots, 256 * 6);
    assert_eq!(show["partitions_crowded"], 0);

    for source in [file, "obj.ring"] {
        let l = d.json(&["ring", "lookup", source, "AUTH_test/photos/2024/cat.jpg"]);
        let primaries = l["primaries"].as_array().unwrap();
        assert_eq!(primaries.len(), 6);
        let zones: std::collections::HashSet<_> =
            primaries.iter().map(|p| p["zone"].as_u64()).collect();
        assert_eq!(zones.len(), 6, "each fragment in its own zone");
        assert_eq!(l["handoffs"].as_array().unwrap().len(), 3);
    }
    let text = d.ok(&["ring", "lookup", "obj.ring", "a/c/o"]);
    assert!(
        text.contains("primaries:") && text.contains("handoffs:"),
        "{text}"
    );

    let disp = d.json(&["ring", "dispersion", file]);
    assert_eq!(disp["partitions_crowded"], 0);
    for source in [file, "obj.ring"] {
        assert_eq!(d.json(&["ring", "validate", source])["valid"], true);
    }
    let show_text = d.ok(&["ring", "show", file]);
    assert!(show_text.contains("balance"), "{show_text}");
}

#[test]
fn a_dry_run_predicts_the_move_and_writes_nothing() {
    let d = Dir::new();
    let file = d.cluster();
    d.ok(&["ring", "rebalance", file]);
    let builder = d.path(file);
    let before = std::fs::read(&builder).unwrap();
    let preview = d.json(&[
        "ring",
        "add",
        file,
        "r1z9-10.0.9.1:6200/sdb",
        "100",
        "--dry-run",
    ]);
    assert_eq!(std::fs::read(&builder).unwrap(), before);
    let predicted = preview["rebalance"]["slots_moved"].as_u64().unwrap();
    assert!(predicted > 0);

    d.ok(&["ring", "add", file, "r1z9-10.0.9.1:6200/sdb", "100"]);
    let done = d.json(&["ring", "rebalance", file, "--dry-run"]);
    assert_eq!(done["dry_run"], true);
    assert_eq!(
        done["rebalance"]["slots_moved"].as_u64().unwrap(),
        predicted
    );
    let real = d.json(&["ring", "rebalance", file]);
    assert_eq!(
        real["rebalance"]["slots_moved"].as_u64().unwrap(),
        predicted
    );
    assert_eq!(real["rebalance"]["epoch"], 2);
}

#[test]
fn removing_a_device_drains_it() {
    let d = Dir::new();
    let file = d.cluster();
    d.ok(&["ring", "set-min-part-hours", file, "0"]);
    d.ok(&["ring", "rebalance", file]);
    d.ok(&["ring", "remove", file, "3"]);
    let r = d.json(&["ring", "rebalance", file]);
    assert_eq!(r["rebalance"]["devices_dropped"], serde_json::json!([3]));
    let show = d.json(&["ring", "show", file]);
    assert_eq!(show["balance"]["devices"].as_array().unwrap().len(), 15);
}

#[test]
fn bad_input_gets_a_clear_error_and_leaves_the_file_alone() {
    let d = Dir::new();
    let file = d.cluster();
    let path = d.path(file);
    for weight in ["-1", "NaN", "inf", "--weight=-inf", "--weight=nan"] {
        d.refused(
            &["ring", "add", file, "r1z1-10.0.1.9:6200/sdz", weight],
            &path,
            "is not allowed",
        );
    }
    d.refused(
        &["ring", "add", file, "r1z1-10.0.1.1:6200/sdb", "100"],
        &path,
        "duplicate device",
    );
    d.refused(
        &["ring", "add", file, "r1z2-10.0.1.1:6200/sdq", "100"],
        &path,
        "belongs to one zone",
    );
    d.refused(
        &["ring", "add", file, "zone1/sdb", "100"],
        &path,
        "bad device location",
    );
    // one bad device in a batch refuses the whole batch
    d.refused(
        &[
            "ring",
            "add",
            file,
            "r1z1-10.0.1.7:6200/ok",
            "1",
            "r1z1-10.0.1.8:6200/bad",
            "x",
        ],
        &path,
        "is not a number",
    );
    d.refused(
        &[
            "ring",
            "add",
            file,
            "r1z1-10.0.1.7:6200/ok",
            "1",
            "r1z1-10.0.1.8:6200/odd",
        ],
        &path,
        "has no weight",
    );
    d.refused(
        &["ring", "remove", file, "99"],
        &path,
        "no device has id 99",
    );
    d.refused(
        &["ring", "set-weight", file, "99", "1"],
        &path,
        "no device has id 99",
    );
    d.refused(
        &["ring", "set-weight", file, "1", "-5"],
        &path,
        "is not allowed",
    );
    d.refused(
        &[
            "ring",
            "create",
            file,
            "--policy",
            "ec4+2",
            "--part-power",
            "10",
        ],
        &path,
        "already exists",
    );
    let other = d.path("new.builder");
    for (pp, policy, expect) in [
        ("25", "ec4+2", "out of range"),
        ("0", "ec4+2", "out of range"),
        ("10", "ec4", "unrecognized storage policy"),
    ] {
        d.refused(
            &[
                "ring",
                "create",
                "new.builder",
                "--policy",
                policy,
                "--part-power",
                pp,
            ],
            &other,
            expect,
        );
    }
    assert!(!other.try_exists().unwrap());

    // more slots than devices can hold
    d.ok(&[
        "ring",
        "create",
        "small.builder",
        "--policy",
        "ec4+2",
        "--part-power",
        "4",
    ]);
    for n in 1..=5 {
        let loc = format!("r1z1-10.0.0.{n}:6200/sdb");
        d.ok(&["ring", "add", "small.builder", &loc, "1"]);
    }
    d.refused(
        &["ring", "rebalance", "small.builder"],
        &d.path("small.builder"),
        "needs 6 devices with weight > 0",
    );
    assert!(!d.path("small.ring").try_exists().unwrap());
    d.refused(
        &["ring", "lookup", "small.builder", "a/c/o"],
        &d.path("small.builder"),
        "not been rebalanced",
    );
    let v = d.nimbus(&["ring", "validate", "small.builder"]);
    assert!(!v.status.success());
    d.refused(
        &["ring", "lookup", file, "a/c"],
        &path,
        "ACCOUNT/CONTAINER/OBJECT",
    );
}

#[test]
fn a_builder_being_changed_is_not_changed_twice_at_once() {
    let d = Dir::new();
    let file = d.cluster();
    let path = d.path(file);
    let held = std::fs::File::open(&path).unwrap();
    held.try_lock().unwrap();
    d.refused(
        &["ring", "add", file, "r1z9-10.0.9.1:6200/sdb", "100"],
        &path,
        "being changed by another",
    );
    d.refused(
        &["ring", "rebalance", file],
        &path,
        "being changed by another",
    );
    // reading is still fine
    d.ok(&["ring", "show", file]);
    drop(held);
    d.ok(&["ring", "add", file, "r1z9-10.0.9.1:6200/sdb", "100"]);
}

#[test]
fn damaged_files_are_refused_by_name() {
    let d = Dir::new();
    let file = d.cluster();
    d.ok(&["ring", "rebalance", file]);
    let good = std::fs::read(d.path(file)).unwrap();

    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("flipped.builder", flip(&good, good.len() / 2), "checksum"),
        (
            "short.builder",
            good[..good.len() - 100].to_vec(),
            "truncated",
        ),
        ("newer.builder", newer(&good), "newer Nimbus"),
        (
            "other.builder",
            b"hello, world".to_vec(),
            "not a Nimbus ring builder file",
        ),
    ];
    for (name, bytes, expect) in cases {
        let path = d.path(name);
        std::fs::write(&path, &bytes).unwrap();
        d.refused(&["ring", "validate", name], &path, expect);
        d.refused(&["ring", "show", name], &path, expect);
        d.refused(
            &["ring", "add", name, "r1z1-10.0.1.9:6200/sdz", "1"],
            &path,
            expect,
        );
        d.refused(&["ring", "rebalance", name], &path, expect);
    }
    let ring = std::fs::read(d.path("obj.ring")).unwrap();
    std::fs::write(d.path("bad.ring"), flip(&ring, 30)).unwrap();
    d.refused(
        &["ring", "validate", "bad.ring"],
        &d.path("bad.ring"),
        "checksum",
    );
    d.refused(
        &["ring", "lookup", "bad.ring", "a/c/o"],
        &d.path("bad.ring"),
        "checksum",
    );
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at] ^= 0x01;
    out
}

/// The same file with a higher format version and a valid checksum.
fn newer(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[8] = 9;
    let n = out.len() - 32;
    let sum = blake3::hash(&out[..n]);
    out[n..].copy_from_slice(sum.as_bytes());
    out
}
