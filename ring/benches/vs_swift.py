#!/usr/bin/python3
"""Nimbus's ring builder beside OpenStack Swift's, on the same topology, in the same run.

    /usr/bin/python3 ring/benches/vs_swift.py [--part-power 20] [--nimbus target/release/nimbus]

`--skewed` runs a second topology where weight and dispersion disagree (see `topology`).

Needs Debian's `swift` package (`apt-get install swift`; this script installs it if missing)
and a release build of `nimbus`. Both build an ec4+2-shaped ring (6 slots per partition) over
1,000 devices of weights 8/12/16 in 4 regions x 4 zones, 12 devices per node, then add 10
devices and rebalance again. Reported for each: rebalance wall time, slots moved, worst
balance against weight, and partitions whose 6 slots are not spread over 6 zones (with 16
zones, none need share one). Nimbus is timed through its CLI, so its figures include
process start-up and reading and writing the builder file; Swift is timed inside Python,
rebalance only.
"""
import argparse
import array
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REGIONS, ZONES, DEVICES, PER_NODE, SLOTS = 4, 4, 1000, 12, 6
WEIGHTS = [8.0, 12.0, 16.0]


SKEWED = False


def topology(extra=False):
    """(region, zone, ip, name, weight) for the 1,000 devices, or the 10 added ones.

    With SKEWED: one region of 8 zones, 2 nodes x 6 devices each, zones 1 and 2 with twice
    the weight of the others: by weight alone they would hold 1.2 of each partition's 6
    slots, so some partitions would get two fragments in one zone.
    """
    if SKEWED:
        if extra:
            for i in range(2):
                yield (1, 3 + i, f"10.0.{3 + i}.9", f"n{i}", 8.0)
            return
        for z in range(1, 9):
            for node in range(2):
                for d in range(6):
                    yield (1, z, f"10.0.{z}.{node}", f"d{d}", 16.0 if z <= 2 else 8.0)
        return
    if extra:
        for i in range(10):
            z = i % 16
            yield (z // 4 + 1, z % 4 + 1, f"10.{z // 4}.{z % 4}.{200 + i}", f"n{i}", 12.0)
        return
    for i in range(DEVICES):
        z = i % 16
        node = i // 16 // PER_NODE
        yield (z // 4 + 1, z % 4 + 1, f"10.{z // 4}.{z % 4}.{node}", f"d{i}", WEIGHTS[i % 3])


def crowded(parts, zone_of):
    """Partitions with two slots in one zone."""
    return sum(1 for devs in parts if len({zone_of[d] for d in devs}) < len(devs))


def run_swift(part_power):
    from swift.common.ring import RingBuilder

    b = RingBuilder(part_power, SLOTS, 1)
    for r, z, ip, name, w in topology():
        b.add_dev({"region": r, "zone": z, "ip": ip, "port": 6200, "device": name, "weight": w})
    out = {}
    t = time.monotonic()
    b.rebalance(seed=1)
    out["build_s"] = time.monotonic() - t
    out["build_balance_pct"] = b.get_balance()
    before = [array.array("H", row) for row in b._replica2part2dev]
    for r, z, ip, name, w in topology(extra=True):
        b.add_dev({"region": r, "zone": z, "ip": ip, "port": 6200, "device": name, "weight": w})
    b.pretend_min_part_hours_passed()
    t = time.monotonic()
    b.rebalance(seed=2)
    out["add10_s"] = time.monotonic() - t
    after = b._replica2part2dev
    parts = 1 << part_power
    out["add10_moved"] = sum(
        1 for r in range(SLOTS) for p in range(parts) if before[r][p] != after[r][p]
    )
    out["add10_balance_pct"] = b.get_balance()
    zone_of = {d["id"]: (d["region"], d["zone"]) for d in b.devs if d}
    out["crowded"] = crowded(
        ([after[r][p] for r in range(SLOTS)] for p in range(parts)), zone_of
    )
    return out


def nimbus(binary, *args):
    t = time.monotonic()
    proc = subprocess.run([binary, "ring", *args, "--json"], capture_output=True, text=True)
    elapsed = time.monotonic() - t
    if proc.returncode != 0:
        sys.exit(f"nimbus ring {' '.join(args[:2])} failed: {proc.stderr}")
    return json.loads(proc.stdout), elapsed


def add_args(devices):
    args = []
    for r, z, ip, name, w in devices:
        args += [f"r{r}z{z}-{ip}:6200/{name}", str(w)]
    return args


def run_nimbus(binary, part_power, workdir):
    f = os.path.join(workdir, "obj.builder")
    nimbus(binary, "create", f, "--policy", "ec4+2", "--part-power", str(part_power),
           "--seed", "1", "--min-part-hours", "0")
    nimbus(binary, "add", f, *add_args(topology()))
    out = {}
    report, out["build_s"] = nimbus(binary, "rebalance", f)
    r = report["rebalance"]
    out["build_balance_pct"] = max(r["worst_over_pct"], -r["worst_under_pct"])
    nimbus(binary, "add", f, *add_args(topology(extra=True)))
    report, out["add10_s"] = nimbus(binary, "rebalance", f)
    r = report["rebalance"]
    out["add10_moved"] = r["slots_moved"]
    out["add10_balance_pct"] = max(r["worst_over_pct"], -r["worst_under_pct"])
    dispersion, _ = nimbus(binary, "dispersion", f)
    zone_row = next(t for t in dispersion["tiers"] if t["tier"] == "zone")
    assert zone_row["max_cap"] == 1, "both topologies have more zones than slots"
    out["crowded"] = zone_row["partitions_crowded"]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part-power", type=int, default=20)
    ap.add_argument("--nimbus", default="target/release/nimbus")
    ap.add_argument("--skewed", action="store_true", help="8 zones, two of double weight")
    a = ap.parse_args()
    global SKEWED
    SKEWED = a.skewed
    if shutil.which("swift-ring-builder") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "swift"], check=True)
    total = SLOTS << a.part_power
    added = sum(w for *_, w in topology(extra=True))
    share = added / (sum(w for *_, w in topology()) + added)
    with tempfile.TemporaryDirectory() as d:
        n = run_nimbus(a.nimbus, a.part_power, d)
    s = run_swift(a.part_power)
    shape = ("96 devices in 8 zones, two of double weight; then +2 devices"
             if SKEWED else
             f"{DEVICES} devices in {REGIONS} regions x {ZONES} zones; then +10 devices")
    print(f"2^{a.part_power} partitions x {SLOTS} slots, {shape} "
          f"(weight share of the added: {share * 100:.3f}% = {share * total:.0f} slots)")
    print(f"{'':34} {'nimbus':>12} {'swift':>12}")
    rows = [
        ("build: rebalance time (s)", "build_s", "{:.2f}"),
        ("build: worst balance (%)", "build_balance_pct", "{:.3f}"),
        ("add: rebalance time (s)", "add10_s", "{:.2f}"),
        ("add: slots moved", "add10_moved", "{}"),
        ("add: worst balance (%)", "add10_balance_pct", "{:.3f}"),
        ("partitions with 2 slots in a zone", "crowded", "{}"),
    ]
    for label, key, fmt in rows:
        print(f"{label:34} {fmt.format(n[key]):>12} {fmt.format(s[key]):>12}")


if __name__ == "__main__":
    main()
