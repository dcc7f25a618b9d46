#!/usr/bin/env bash
# The background workers measured on a local cluster: rebalance rate, foreground GET latency
# during a rebalance against idle, and the rebuild of a wiped device.
#
#   bench/repair.sh [--nimbus PATH] [--bench PATH]
#
# 1. Builds release `nimbus` and `nimbus-bench` (unless both paths are given).
# 2. Starts `nimbus dev` (6 nodes × 2 devices, ec4+2) under $BASE and loads OBJECTS objects
#    of SIZE through S3 (nimbus-bench's prepare phase), then measures GETs at CLIENTS clients
#    for DURATION while nothing else runs (idle).
# 3. Starts two more storage nodes, adds their four devices to the ec4+2 ring, rebalances,
#    and measures the same GETs while the workers move slots (default throttle); the
#    rebalance is done when `nimbus admin placement` reports 0 misplaced and 0 partitions
#    below full redundancy. Rate = the bytes the workers moved and rebuilt (their /metrics)
#    over that time.
# 4. Removes one device's objects/ tree (a replaced disk) and times the reconstructors until
#    placement is back to 0/0; rate = bytes rebuilt over that time.
# 5. Prints a Markdown table; stops everything and removes $BASE at exit.
#
# Knobs (environment): BASE=/var/tmp/nimbus-repair OBJECTS=400 SIZE=1MiB CLIENTS=4
# DURATION=20s PORT=19000 (S3; nodes on PORT+1…, metadata members on PORT+101…)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
nimbus_bin=
bench_bin=
while (($#)); do
    case $1 in
    --nimbus) nimbus_bin=$2; shift ;;
    --bench) bench_bin=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
BASE=${BASE:-/var/tmp/nimbus-repair}
OBJECTS=${OBJECTS:-400}
SIZE=${SIZE:-1MiB}
CLIENTS=${CLIENTS:-4}
DURATION=${DURATION:-20s}
PORT=${PORT:-19000}

if [[ -z $nimbus_bin || -z $bench_bin ]]; then
    (cd "$root" && cargo build --release --locked -p nimbus -p nimbus-bench)
    nimbus_bin=$root/target/release/nimbus
    bench_bin=$root/target/release/nimbus-bench
fi

data=$BASE/dev
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$BASE"
}
trap cleanup EXIT
rm -rf "$BASE" && mkdir -p "$BASE"

"$nimbus_bin" dev --data "$data" --port "$PORT" --base-port "$PORT" >"$BASE/dev.out" 2>"$BASE/dev.err" &
pids+=($!)
for _ in $(seq 600); do
    grep -q "Ctrl-C stops the cluster" "$BASE/dev.out" 2>/dev/null && break
    sleep 0.5
done
grep -q "Ctrl-C stops the cluster" "$BASE/dev.out" || { cat "$BASE/dev.err" >&2; exit 1; }
printed() { sed -n "s/^ *$1 *//p" "$BASE/dev.out" | head -1; }
endpoint=$(printed "S3 endpoint:")
access=$(printed "S3 access key:")
secret=$(printed "S3 secret key:")
admin() { "$nimbus_bin" admin --meta "127.0.0.1:$((PORT + 101))" --secret-file "$data/cluster-secret" "$@"; }
bench() {
    "$bench_bin" run --endpoint "$endpoint" --access-key "$access" --secret-key "$secret" --path-style \
        --bucket repair --op get --size "$SIZE" --objects "$OBJECTS" -c "$CLIENTS" --no-progress "$@"
}
p99_ms() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%.1f" % (r["total"]["latency_us"]["p99"]/1000))' "$1"; }
errors() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total"]["errors"])' "$1"; }
# Sum of a worker counter over every node (1..8) that answers.
metric() {
    local sum=0 v
    for i in $(seq 8); do
        v=$(curl -sf "http://127.0.0.1:$((PORT + i))/metrics" 2>/dev/null |
            awk -v m="$1" 'index($0, m "{") == 1 { s += $NF } END { print s + 0 }') || v=0
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}
settled() { admin --json placement 2>/dev/null | python3 -c 'import json,sys; r=json.load(sys.stdin); sys.exit(0 if r["misplaced"]==0 and r["below_full_redundancy"]==0 else 1)'; }
wait_settled() {
    local rebalance=$1 start=$SECONDS
    until settled; do
        ((SECONDS - start < 1800)) || { echo "placement did not settle" >&2; exit 1; }
        [[ $rebalance == 1 ]] && admin ring rebalance ec4+2 >/dev/null 2>&1 || true
        sleep 2
    done
}

echo "loading $OBJECTS × $SIZE, then idle GETs ($CLIENTS clients, $DURATION)" >&2
bench --duration "$DURATION" --json "$BASE/idle.json" >/dev/null
wait_settled 0

# Two more nodes, configured as node 6 is.
for i in 7 8; do
    mkdir -p "$data/node$i/d0" "$data/node$i/d1"
    sed -e "s/node6/node$i/g" -e "s/127.0.0.1:$((PORT + 6))/127.0.0.1:$((PORT + i))/" \
        "$data/node6/storage.toml" >"$data/node$i/storage.toml"
    "$nimbus_bin" storage --config "$data/node$i/storage.toml" >"$BASE/node$i.out" 2>&1 &
    pids+=($!)
done
sleep 2
moved0=$(($(metric nimbus_worker_moved_bytes_total) + $(metric nimbus_worker_rebuilt_bytes_total)))
for i in 7 8; do
    for d in d0 d1; do
        admin device add ec4+2 "r1z$i-127.0.0.1:$((PORT + i))/$d" 1 >/dev/null
    done
done
start=$(date +%s.%N)
admin ring rebalance ec4+2 >/dev/null
echo "rebalancing onto 2 new nodes while measuring GETs" >&2
bench --no-prepare --duration "$DURATION" --json "$BASE/rebalance.json" >/dev/null &
bench_pid=$!
wait_settled 1
end=$(date +%s.%N)
wait "$bench_pid"
moved=$(($(metric nimbus_worker_moved_bytes_total) + $(metric nimbus_worker_rebuilt_bytes_total) - moved0))
rebalance_secs=$(python3 -c "print('%.1f' % ($end - $start))")
rebalance_rate=$(python3 -c "print('%.1f' % ($moved / 1048576 / ($end - $start)))")

rebuilt0=$(metric nimbus_worker_rebuilt_bytes_total)
wiped=$data/node3/d0/objects
wiped_mib=$(du -sm "$wiped" | cut -f1)
start=$(date +%s.%N)
rm -rf "$wiped"
echo "rebuilding a wiped device ($wiped_mib MiB on disk)" >&2
wait_settled 0
end=$(date +%s.%N)
rebuilt=$(($(metric nimbus_worker_rebuilt_bytes_total) - rebuilt0))
rebuild_secs=$(python3 -c "print('%.1f' % ($end - $start))")
rebuild_rate=$(python3 -c "print('%.1f' % ($rebuilt / 1048576 / ($end - $start)))")

idle=$(p99_ms "$BASE/idle.json")
during=$(p99_ms "$BASE/rebalance.json")
cat <<EOF
| measure | value |
|---|---|
| data set | $OBJECTS × $SIZE, ec4+2, 6 nodes × 2 devices, +2 nodes |
| rebalance onto 2 new nodes: time to placement 0/0 | $rebalance_secs s |
| bytes moved and rebuilt by the workers | $((moved / 1048576)) MiB ($rebalance_rate MiB/s) |
| GET p99, idle ($CLIENTS clients) | $idle ms ($(errors "$BASE/idle.json") errors) |
| GET p99 during the rebalance | $during ms ($(errors "$BASE/rebalance.json") errors) |
| ratio (aim ≤ 1.5) | $(python3 -c "print('%.2f' % ($during / $idle))") |
| wiped device ($wiped_mib MiB on disk): time to placement 0/0 | $rebuild_secs s |
| bytes rebuilt | $((rebuilt / 1048576)) MiB ($rebuild_rate MiB/s) |
EOF
