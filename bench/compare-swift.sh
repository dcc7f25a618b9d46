#!/usr/bin/env bash
# Nimbus against OpenStack Swift on this machine, in one run, and the machine's own limits.
#
#   bench/compare-swift.sh [--quick] [--nimbus PATH] [--bench PATH] [--out FILE]
#
# 1. Builds release `nimbus` and `nimbus-bench` (unless --nimbus and --bench are given).
# 2. Measures the limits on the data disk (a temp dir under $BASE, where both systems keep
#    their data): fio sequential write and read (1 MiB, direct, io_uring) and 4 KiB
#    write+fdatasync IOPS at 1 and 16 jobs; nginx serving a 4 KiB and a 64 MiB file on
#    loopback, loaded by nimbus-bench itself at 1 and 16 clients.
# 3. Starts `nimbus dev`, runs the workloads, stops it; then starts the Swift all-in-one of
#    ../shared/peers/swift-saio (setup.sh), runs the same workloads, stops it (stop.sh).
#    Never both at once. Workloads: PUT and GET × sizes × clients × API (S3, Swift) ×
#    policy (EC 4+2, replicated), each a `nimbus-bench run --json`.
# 4. Writes RESULTS.md (bench/RESULTS.md; in --quick mode RESULTS-quick.md in the results
#    dir, marked as a smoke run) with the limits, Nimbus vs Swift, the ceilings and aims of
#    issue 6.
# 5. Stops everything it started on exit (trap) and removes its data.
#
# Knobs (environment; --quick changes the defaults marked q:):
#   BASE=/var/tmp/nimbus-compare   data (removed at exit) and results-<stamp>/ (kept)
#   DURATION=20s WARMUP=3s         per run                      q: 3s, 1s
#   DURATION_LARGE=60s             per run of objects > 8 MiB (one 64 MiB operation on
#                                  Swift at 16 clients takes seconds)  q: 3s
#   SIZES="4KiB 1MiB 64MiB"        object sizes                 q: "4KiB 1MiB"
#   CLIENTS="1 16"                 concurrencies
#   APIS="s3 swift" POLICIES="ec rep" SYSTEMS="nimbus swift"
#   OBJECTS_SMALL=2000 OBJECTS_MEDIUM=256 OBJECTS_LARGE=16
#                                  keys per run for sizes <= 64 KiB, <= 8 MiB, larger
#                                                               q: 200, 32, 4
#   TIMEOUT=300s                   per operation (64 MiB × 16 clients on Swift is slow)
#   VERIFY=0                       1 = GETs check every payload byte (costs client CPU)
#   FIO_RUNTIME=10 FIO_SIZE_MIB=auto   seconds per fio job; file size (auto: <= 2 GiB,
#                                  <= 1/10 of the free space)   q: 3, 256
#   FIO_ENGINE=io_uring            falls back to libaio, then psync, if it cannot run
#   SKIP_LIMITS=0                  1 = no fio / nginx (the ceilings then stay blank)
#   SWIFT_DEVICE_MODE=dir          SAIO_DEVICE_MODE for setup.sh (dir: plain dirs on the same
#                                  filesystem as Nimbus and fio; xfs: a loopback image there)
#   SAIO_PEER=../shared/peers/swift-saio (relative to the repository)
#   CODEC_MD5_GIBS=0.50 CODEC_ENCODE_GIBS=5.9 CODEC_BLAKE3_GIBS=6.7 CODEC_SHA256_GIBS=1.04
#                                  per-core GiB/s for the CPU bound (core/README.md,
#                                  `cargo bench -p nimbus-core --bench codec`)
#   NIMBUS_GC_GRACE=30             `nimbus dev --gc-grace-secs`: superseded fragments are
#                                  removed this long after an overwrite (dev default 60)
#   OUT=bench/RESULTS.md           where the report goes
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
quick=0
nimbus_bin=
bench_bin=
out=${OUT:-}
while (($#)); do
    case $1 in
    --quick) quick=1 ;;
    --nimbus) nimbus_bin=$2; shift ;;
    --bench) bench_bin=$2; shift ;;
    --out) out=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if ((quick)); then
    DURATION=${DURATION:-3s} DURATION_LARGE=${DURATION_LARGE:-3s} WARMUP=${WARMUP:-1s} SIZES=${SIZES:-4KiB 1MiB}
    OBJECTS_SMALL=${OBJECTS_SMALL:-200} OBJECTS_MEDIUM=${OBJECTS_MEDIUM:-32} OBJECTS_LARGE=${OBJECTS_LARGE:-4}
    FIO_RUNTIME=${FIO_RUNTIME:-3} FIO_SIZE_MIB=${FIO_SIZE_MIB:-256}
fi
BASE=${BASE:-/var/tmp/nimbus-compare}
DURATION=${DURATION:-20s} DURATION_LARGE=${DURATION_LARGE:-60s} WARMUP=${WARMUP:-3s} SIZES=${SIZES:-4KiB 1MiB 64MiB}
CLIENTS=${CLIENTS:-1 16} APIS=${APIS:-s3 swift} POLICIES=${POLICIES:-ec rep}
SYSTEMS=${SYSTEMS:-nimbus swift}
OBJECTS_SMALL=${OBJECTS_SMALL:-2000} OBJECTS_MEDIUM=${OBJECTS_MEDIUM:-256} OBJECTS_LARGE=${OBJECTS_LARGE:-16}
TIMEOUT=${TIMEOUT:-300s} VERIFY=${VERIFY:-0}
FIO_RUNTIME=${FIO_RUNTIME:-10} FIO_SIZE_MIB=${FIO_SIZE_MIB:-auto} FIO_ENGINE=${FIO_ENGINE:-io_uring}
SKIP_LIMITS=${SKIP_LIMITS:-0}
SWIFT_DEVICE_MODE=${SWIFT_DEVICE_MODE:-dir}
SAIO_PEER=${SAIO_PEER:-$root/../shared/peers/swift-saio}
CODEC_MD5_GIBS=${CODEC_MD5_GIBS:-0.50} CODEC_ENCODE_GIBS=${CODEC_ENCODE_GIBS:-5.9} CODEC_BLAKE3_GIBS=${CODEC_BLAKE3_GIBS:-6.7}
CODEC_SHA256_GIBS=${CODEC_SHA256_GIBS:-1.04}
NIMBUS_GC_GRACE=${NIMBUS_GC_GRACE:-30}

started_at=$(date -u +%s)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$BASE"
BASE=$(cd "$BASE" && pwd)
work=$(mktemp -d "$BASE/run.XXXXXX")
results=$BASE/results-$stamp
mkdir -p "$results/runs" "$results/logs" "$results/limits"
if [[ -z $out ]]; then
    if ((quick)); then out=$results/RESULTS-quick.md; else out=$root/bench/RESULTS.md; fi
fi
log() { printf '[compare %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- cleanup
nginx_pid='' dev_pid='' saio_dir=''
stop_group() { # pid: INT the leader, wait, then KILL its whole process group
    local pid=$1 sig=$2
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 120); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
stop_nginx() { [[ -z $nginx_pid ]] || stop_group "$nginx_pid" QUIT; nginx_pid=; }
stop_nimbus() { [[ -z $dev_pid ]] || stop_group "$dev_pid" INT; dev_pid=; }
stop_swift() {
    if [[ -n $saio_dir ]]; then
        "$SAIO_PEER/stop.sh" "$saio_dir" --purge >>"$results/logs/swift-stop.txt" 2>&1 || true
    fi
    saio_dir=
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_nginx
    stop_nimbus
    stop_swift
    rm -rf "$work"
    log "results in $results"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need() { # command, apt packages to try in order
    local cmd=$1; shift
    command -v "$cmd" >/dev/null && return 0
    log "installing $cmd"
    # Debian's nginx would start on port 80: keep services down while installing.
    local added=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && added=1
    fi
    apt-get update -qq >/dev/null || true
    local p
    for p in "$@"; do
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
            --no-install-recommends "$p" >/dev/null && break
    done
    ((added)) && rm -f /usr/sbin/policy-rc.d
    command -v "$cmd" >/dev/null || { log "cannot install $cmd"; return 1; }
}
need python3 python3-minimal
need curl curl

# ---------------------------------------------------------------- build
if [[ -z $nimbus_bin || -z $bench_bin ]]; then
    log "building release nimbus and nimbus-bench"
    (cd "$root" && cargo build --release -p nimbus -p nimbus-bench) >"$results/logs/build.txt" 2>&1 ||
        { tail -20 "$results/logs/build.txt" >&2; exit 1; }
    target=${CARGO_TARGET_DIR:-$root/target}
    nimbus_bin=${nimbus_bin:-$target/release/nimbus}
    bench_bin=${bench_bin:-$target/release/nimbus-bench}
fi
[[ -x $nimbus_bin && -x $bench_bin ]] || { log "no binary at $nimbus_bin or $bench_bin"; exit 1; }

# ---------------------------------------------------------------- machine
dev=$(df --output=source "$work" | tail -1)
kname=$(lsblk -no PKNAME "$dev" 2>/dev/null | head -1 || true)
kname=${kname:-$(basename "$dev")}
{
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "dirty=$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null | wc -l)"
    echo "nproc=$(nproc)"
    echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "ram_kib=$(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)"
    echo "kernel=$(uname -r)"
    echo "disk_dev=$dev"
    echo "disk_fs=$(df --output=fstype "$work" | tail -1)"
    echo "disk_size=$(df -h --output=size "$work" | tail -1 | tr -d ' ')"
    echo "disk_avail=$(df -h --output=avail "$work" | tail -1 | tr -d ' ')"
    echo "disk_rota=$(cat "/sys/block/$kname/queue/rotational" 2>/dev/null || echo '?')"
    echo "disk_model=$( { xargs <"/sys/block/$kname/device/model"; } 2>/dev/null || true)"
    echo "load=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "base=$BASE"
    echo "results=$results"
    echo "quick=$quick"
    echo "duration=$DURATION"
    echo "duration_large=$DURATION_LARGE"
    echo "warmup=$WARMUP"
    echo "objects=$OBJECTS_SMALL/$OBJECTS_MEDIUM/$OBJECTS_LARGE"
    echo "verify=$VERIFY"
    echo "codec=$CODEC_MD5_GIBS/$CODEC_ENCODE_GIBS/$CODEC_BLAKE3_GIBS/$CODEC_SHA256_GIBS"
} >"$results/meta.txt"

size_bytes() { # 4KiB, 1MiB, 64MiB, 4096 → bytes
    local s=$1 n=${1%%[!0-9]*}
    case ${s#"$n"} in
    KiB | K) echo $((n << 10)) ;;
    MiB | M) echo $((n << 20)) ;;
    GiB | G) echo $((n << 30)) ;;
    "" | B) echo "$n" ;;
    *) log "size $s: use B, KiB, MiB or GiB"; exit 2 ;;
    esac
}
objects_for() {
    local b
    b=$(size_bytes "$1")
    if ((b <= 64 << 10)); then echo "$OBJECTS_SMALL"
    elif ((b <= 8 << 20)); then echo "$OBJECTS_MEDIUM"
    else echo "$OBJECTS_LARGE"; fi
}
for s in $SIZES; do size_bytes "$s" >/dev/null; done

# One nimbus-bench run; its failure is recorded, not fatal.
# bench NAME API(s3|swift) BUCKET SIZE CLIENTS OP [extra flags...]; bench_objects and
# bench_prefix, when set, replace the key count and prefix.
bench() {
    local name=$1 api=$2 bucket=$3 size=$4 c=$5 op=$6
    shift 6
    local conn duration=$DURATION
    (($(size_bytes "$size") <= 8 << 20)) || duration=$DURATION_LARGE
    if [[ $api == s3 ]]; then
        conn=(--endpoint "$s3_endpoint" --access-key "$s3_access" --secret-key "$s3_secret"
            --region "$s3_region" --path-style)
    else
        conn=(--api swift --auth-url "$st_auth" --user "$st_user" --key "$st_key")
    fi
    log "run $name"
    if ! "$bench_bin" run "${conn[@]}" --op "$op" --size "$size" --objects "${bench_objects:-$(objects_for "$size")}" \
        -c "$c" --duration "$duration" --warmup "$WARMUP" --timeout "$TIMEOUT" \
        --bucket "$bucket" --prefix "${bench_prefix:-$size/}" --label "$name" --no-progress \
        --json "$results/runs/$name.json" "$@" >"$results/logs/$name.txt" 2>&1; then
        log "  $name failed: $(tail -1 "$results/logs/$name.txt")"
        echo "$name" >>"$results/failed.txt"
    fi
}

# ---------------------------------------------------------------- limits: fio
fio_limits() {
    need fio fio
    local dir=$work/fio size_mib=$FIO_SIZE_MIB
    mkdir -p "$dir"
    if [[ $size_mib == auto ]]; then
        local avail_mib
        avail_mib=$(($(df --output=avail -k "$dir" | tail -1) / 1024))
        size_mib=$((avail_mib / 10 < 2048 ? avail_mib / 10 : 2048))
    fi
    ((size_mib >= 64)) || { log "too little free space for fio (${size_mib} MiB)"; return 1; }
    local engine
    for engine in "$FIO_ENGINE" libaio psync; do
        if fio --name=probe --directory="$dir" --rw=write --bs=4k --size=1m --ioengine="$engine" \
            --direct=1 >/dev/null 2>"$results/logs/fio-probe-$engine.txt"; then
            break
        fi
        log "fio: ioengine $engine does not run here; trying the next"
    done
    rm -f "$dir"/probe*
    echo "fio_engine=$engine" >>"$results/meta.txt"
    echo "fio_size_mib=$size_mib" >>"$results/meta.txt"
    # fio_job OUTPUT JOBNAME RW BS NUMJOBS SIZE_PER_JOB [flags...]; the same JOBNAME reads
    # the files its write laid out.
    fio_job() {
        local outname=$1 name=$2 rw=$3 bs=$4 jobs=$5 size=$6
        shift 6
        log "fio $outname"
        fio --name="$name" --directory="$dir" --rw="$rw" --bs="$bs" --numjobs="$jobs" \
            --size="$size" --ioengine="$engine" --runtime="$FIO_RUNTIME" --time_based \
            --group_reporting --output-format=json --output="$results/limits/fio-$outname.json" \
            "$@" >>"$results/logs/fio.txt" 2>&1 || log "fio $outname failed (logs/fio.txt)"
    }
    fio_job seqwrite-1 seq1 write 1M 1 "${size_mib}M" --direct=1 --iodepth=16
    fio_job seqread-1 seq1 read 1M 1 "${size_mib}M" --direct=1 --iodepth=16
    rm -f "$dir"/seq1*
    fio_job seqwrite-16 seq16 write 1M 16 "$((size_mib / 16))M" --direct=1 --iodepth=1
    fio_job seqread-16 seq16 read 1M 16 "$((size_mib / 16))M" --direct=1 --iodepth=1
    rm -f "$dir"/seq16*
    fio_job fsync4k-1 sync1 write 4k 1 64M --fdatasync=1 --iodepth=1
    fio_job fsync4k-16 sync16 write 4k 16 16M --fdatasync=1 --iodepth=1
    rm -rf "$dir"
}

# ---------------------------------------------------------------- limits: nginx
# nimbus-bench's Swift driver loads nginx: nginx answers the v1 auth request with a token
# and a storage URL pointing at itself, 201 to the container PUT, and serves the file as
# the object `nb/0000000000` of that container.
free_port_block() { # N: prints a base port with N free ports above it
    python3 - "$1" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
for _ in range(500):
    base = random.randrange(20000, 60000 - n, 100)
    socks = []
    try:
        for p in range(base, base + n):
            s = socket.socket(); s.bind(("127.0.0.1", p)); socks.append(s)
        print(base)
        break
    except OSError:
        pass
    finally:
        for s in socks:
            s.close()
PY
}
wait_port() { # port, seconds
    local t=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        sleep 0.2
        t=$((t + 1))
        ((t < $2 * 5)) || return 1
    done
}
nginx_limits() {
    need nginx nginx-light nginx
    local dir=$work/nginx port
    port=$(free_port_block 1)
    mkdir -p "$dir/logs" "$dir/tmp" "$dir/www/v1/nginx-4k/nb" "$dir/www/v1/nginx-64m/nb"
    head -c 4096 /dev/urandom >"$dir/www/v1/nginx-4k/nb/0000000000"
    head -c $((64 << 20)) /dev/urandom >"$dir/www/v1/nginx-64m/nb/0000000000"
    cat >"$dir/nginx.conf" <<EOF
user root;
worker_processes $(nproc);
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path $dir/tmp;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$port;
        root $dir/www;
        location = /auth/v1.0 {
            add_header X-Auth-Token nginx;
            add_header X-Storage-Url http://127.0.0.1:$port/v1;
            return 200;
        }
        location ~ ^/v1/[^/]+\$ { return 201; }
    }
}
EOF
    setsid nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' >"$results/logs/nginx.txt" 2>&1 &
    nginx_pid=$!
    wait_port "$port" 20 || { log "nginx did not start (logs/nginx.txt)"; cat "$dir/logs/error.log" >&2; return 1; }
    echo "nginx_version=$(nginx -v 2>&1 | sed 's/.*nginx\///')" >>"$results/meta.txt"
    local st_auth=http://127.0.0.1:$port/auth/v1.0 st_user=nginx st_key=nginx c
    for c in $CLIENTS; do
        bench_objects=1 bench_prefix=nb/ bench "nginx-4KiB-c$c-get" swift nginx-4k 4KiB "$c" get --no-prepare
        bench_objects=1 bench_prefix=nb/ bench "nginx-64MiB-c$c-get" swift nginx-64m 64MiB "$c" get --no-prepare
    done
    mv "$results"/runs/nginx-*.json "$results/limits/" 2>/dev/null || true
    stop_nginx
}

if [[ $SKIP_LIMITS != 1 ]]; then
    fio_limits || log "fio limits incomplete"
    nginx_limits || { log "nginx limits incomplete"; stop_nginx; }
fi

# ---------------------------------------------------------------- workloads
# run_workloads SYSTEM POLICY_EC POLICY_REP: buckets cmp-ec and cmp-rep exist with those
# policies; the same container serves both APIs (same account), under one prefix per size.
run_workloads() {
    local system=$1 api pol size c
    local -A prepared=()
    local get_clients apis
    # S3 first: on s3api, S3 cannot read what the Swift API wrote (no S3 ACL on it)
    apis=$(tr ' ' '\n' <<<"$APIS" | sort | xargs)
    get_clients=$(tr ' ' '\n' <<<"$CLIENTS" | sort -rn | xargs) # prepare with the most clients
    for api in $apis; do
        for pol in $POLICIES; do
            for size in $SIZES; do
                for c in $CLIENTS; do
                    bench "$system-$api-$pol-$size-c$c-put" "$api" "cmp-$pol" "$size" "$c" put
                done
                for c in $get_clients; do
                    local extra=()
                    if [[ -n ${prepared[$pol/$size]:-} ]]; then extra+=(--no-prepare); fi
                    if [[ $VERIFY == 1 ]]; then extra+=(--verify); fi
                    bench "$system-$api-$pol-$size-c$c-get" "$api" "cmp-$pol" "$size" "$c" get "${extra[@]}"
                    [[ -f $results/runs/$system-$api-$pol-$size-c$c-get.json ]] && prepared[$pol/$size]=1
                done
            done
        done
    done
}

swift_token() { # prints "storage_url token"
    curl -fsS -m 20 -D - -o /dev/null -H "X-Auth-User: $st_user" -H "X-Auth-Key: $st_key" "$st_auth" |
        tr -d '\r' | awk 'tolower($1)=="x-storage-url:"{u=$2} tolower($1)=="x-auth-token:"{t=$2} END{print u, t}'
}
# make_container NAME POLICY: Swift container PUT with X-Storage-Policy, then checks it.
make_container() {
    local url token got
    read -r url token < <(swift_token)
    curl -fsS -m 30 -o /dev/null -X PUT -H "X-Auth-Token: $token" -H "X-Storage-Policy: $2" "$url/$1"
    got=$(curl -fsS -m 30 -I -H "X-Auth-Token: $token" "$url/$1" | tr -d '\r' |
        awk 'tolower($1)=="x-storage-policy:"{print $2}')
    echo "$system_name: container $1 policy $got (asked $2)" >>"$results/policies.txt"
    [[ $got == "$2" ]] || { log "container $1 has policy '$got', not '$2'"; return 1; }
}
# s3_create_bucket NAME: an S3 CreateBucket by nimbus-bench (it creates a missing bucket)
# and one 4 KiB PUT; the bucket gets the server's default policy.
s3_create_bucket() {
    "$bench_bin" run --endpoint "$s3_endpoint" --access-key "$s3_access" --secret-key "$s3_secret" \
        --region "$s3_region" --path-style --op put --size 4KiB --objects 1 --ops 1 -c 1 \
        --bucket "$1" --prefix init/ --no-progress >>"$results/logs/create-buckets.txt" 2>&1
}

run_nimbus() {
    system_name=nimbus
    local data=$work/nimbus port
    port=$(free_port_block 110)
    log "starting nimbus dev on port $port (data $data)"
    # Overwrites leave superseded fragments that the collector removes after its grace;
    # Swift's object servers drop a superseded .data at once. A grace longer than any PUT
    # here, but short, keeps large overwrites from filling the disk (NIMBUS_GC_GRACE).
    setsid "$nimbus_bin" dev --data "$data" --port "$port" --base-port $((port + 1)) \
        --gc-grace-secs "$NIMBUS_GC_GRACE" >"$results/logs/nimbus-dev.txt" 2>&1 &
    dev_pid=$!
    for _ in $(seq 1 600); do
        grep -q '^Ctrl-C stops the cluster' "$results/logs/nimbus-dev.txt" && break
        kill -0 "$dev_pid" 2>/dev/null || break
        sleep 0.2
    done
    grep -q '^Ctrl-C stops the cluster' "$results/logs/nimbus-dev.txt" ||
        { log "nimbus dev did not start (logs/nimbus-dev.txt)"; return 1; }
    local AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_ENDPOINT_URL AWS_DEFAULT_REGION ST_AUTH ST_USER ST_KEY
    # shellcheck disable=SC1091
    . "$data/dev.env"
    s3_endpoint=$AWS_ENDPOINT_URL s3_access=$AWS_ACCESS_KEY_ID s3_secret=$AWS_SECRET_ACCESS_KEY
    s3_region=$AWS_DEFAULT_REGION st_auth=$ST_AUTH st_user=$ST_USER st_key=$ST_KEY
    # Nimbus: the Swift API makes the container with its policy; S3 and Swift share the
    # account, so the S3 runs use the same bucket.
    make_container cmp-ec ec4+2 || return 1
    make_container cmp-rep rep3 || return 1
    run_workloads nimbus
    log "stopping nimbus dev"
    stop_nimbus
    rm -rf "$data"
}

run_swift() {
    system_name=swift
    saio_dir=$work/saio
    local port
    port=$(free_port_block 60)
    export SAIO_PROXY_PORT=$port SAIO_MEMCACHED_PORT=$((port + 1)) SAIO_PORT_BASE=$((port + 10))
    export SAIO_DEVICE_MODE=$SWIFT_DEVICE_MODE
    # s3api gives a new bucket the default policy, and (s3_acl) denies S3 access to a
    # container made through the Swift API, or to objects written through it: so each
    # policy gets its bucket from S3 while it is the default, one Swift start per policy
    # (the containers keep their policy), and the S3 runs come before the Swift-API runs.
    local pol swift_pol try
    for pol in rep ec; do
        if [[ $pol == rep ]]; then export SAIO_DEFAULT_POLICY=replicated; else export SAIO_DEFAULT_POLICY=ec; fi
        for try in 1 2; do
            log "starting Swift all-in-one (default policy $SAIO_DEFAULT_POLICY, proxy port $port)"
            if "$SAIO_PEER/setup.sh" "$saio_dir" >>"$results/logs/swift-setup.txt" 2>&1; then
                break
            fi
            # on a busy machine a server may take longer than setup.sh waits for its port
            log "Swift setup failed (logs/swift-setup.txt): $(tail -1 "$results/logs/swift-setup.txt")"
            mkdir -p "$results/logs/saio-$pol-$try"
            cp -r "$saio_dir/log/." "$results/logs/saio-$pol-$try/" 2>/dev/null || true
            "$SAIO_PEER/stop.sh" "$saio_dir" --keep-mounted >>"$results/logs/swift-stop.txt" 2>&1
            ((try < 2)) || return 1
        done
        # shellcheck disable=SC1091
        . "$saio_dir/saio.env"
        # shellcheck disable=SC2153 # S3_* come from saio.env
        s3_endpoint=$S3_ENDPOINT s3_access=$S3_ACCESS_KEY s3_secret=$S3_SECRET_KEY s3_region=$S3_REGION
        st_auth=$ST_AUTH st_user=$ST_USER st_key=$ST_KEY
        if [[ $pol == rep ]]; then swift_pol=$SWIFT_POLICY_REPLICATED; else swift_pol=$SWIFT_POLICY_EC; fi
        s3_create_bucket "cmp-$pol" || { log "CreateBucket cmp-$pol failed (logs/create-buckets.txt)"; return 1; }
        make_container "cmp-$pol" "$swift_pol" || return 1
        if [[ $pol == rep ]]; then
            "$SAIO_PEER/stop.sh" "$saio_dir" --keep-mounted >>"$results/logs/swift-stop.txt" 2>&1
        fi
    done
    sed -n 's/.*\] up: /swift_setup=/p' "$results/logs/swift-setup.txt" | tail -1 >>"$results/meta.txt"
    echo "swift_version=$(dpkg-query -W -f '${Version}' swift 2>/dev/null || echo '?')" >>"$results/meta.txt"
    run_workloads swift
    log "stopping Swift"
    stop_swift
}

for system in $SYSTEMS; do
    case $system in
    nimbus) run_nimbus || { log "Nimbus phase failed"; echo "nimbus (phase)" >>"$results/failed.txt"; stop_nimbus; } ;;
    swift) run_swift || { log "Swift phase failed"; echo "swift (phase)" >>"$results/failed.txt"; stop_swift; } ;;
    *) log "unknown system $system" ;;
    esac
done
echo "elapsed_min=$((($(date -u +%s) - started_at + 30) / 60))" >>"$results/meta.txt"

# ---------------------------------------------------------------- report
log "writing $out"
python3 - "$results" "$out" <<'PY'
import glob, json, os, sys

results, out = sys.argv[1], sys.argv[2]
meta = {}
for line in open(os.path.join(results, "meta.txt")):
    k, _, v = line.rstrip("\n").partition("=")
    meta[k] = v
quick = meta.get("quick") == "1"
nproc = int(meta.get("nproc", "1"))
K, M = 4, 2

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def fio(name):
    r = load(os.path.join(results, "limits", f"fio-{name}.json"))
    if not r or not r.get("jobs"):
        return None
    j = r["jobs"][0]
    side = j["read"] if j["read"]["io_bytes"] else j["write"]
    return {"mibs": side["bw_bytes"] / 2**20, "iops": side["iops"]}

def run(path):
    r = load(path)
    if not r:
        return None
    t = r["total"]
    if t["ops"] == 0:
        return {"ops": 0.0, "mibs": 0.0, "p99": None, "errors": t["errors"], "cpu": r["cpu"]["percent_of_one_core"],
                "none": True}
    return {"ops": t["ops_per_sec"], "mibs": t["mib_per_sec"], "p99": t["latency_us"]["p99"] / 1000,
            "errors": t["errors"], "cpu": r["cpu"]["percent_of_one_core"]}

def f_num(x, unit=""):
    if x is None:
        return "–"
    if x >= 1000:
        return f"{x:,.0f}{unit}"
    if x >= 100:
        return f"{x:.0f}{unit}"
    if x >= 10:
        return f"{x:.1f}{unit}"
    return f"{x:.2f}{unit}"

def f_ms(x):
    return "–" if x is None else (f"{x:,.0f} ms" if x >= 100 else f"{x:.1f} ms")

def f_ratio(a, b):
    return "–" if a is None or b is None or b == 0 else f"{a / b:.2f}×"

L = []
w = L.append
if quick:
    w("> **SMOKE RUN of bench/compare-swift.sh --quick: the figures below have no meaning for")
    w("> performance** (a few seconds per run, few objects, a subset of sizes, on a shared busy")
    w("> machine). They only show that the script ran end to end.")
    w("")
w("# Nimbus vs OpenStack Swift, and the machine's limits")
w("")
dirty = " (with uncommitted changes)" if meta.get("dirty", "0") != "0" else ""
w(f"Written by `bench/compare-swift.sh{' --quick' if quick else ''}` on {meta.get('date')}, commit "
  f"`{meta.get('commit')}`{dirty}; the whole run took {meta.get('elapsed_min')} min. Each figure is one "
  f"`nimbus-bench run` of {meta.get('duration')} ({meta.get('duration_large')} for objects over 8 MiB) "
  f"measured after a {meta.get('warmup')} warmup "
  f"(closed loop; keys per run for ≤ 64 KiB / ≤ 8 MiB / larger objects: {meta.get('objects')}; "
  f"GET payloads {'verified' if meta.get('verify') == '1' else 'not verified'}); raw JSON and logs in "
  f"`{results}`. S3 runs send their object requests without the AWS SDK (`nimbus-bench "
  f"--s3-client http`, the default: the SDK's SigV4 signer on a plain hyper client, as the Swift-API "
  f"runs and the nginx limit send theirs).")
w("")
w("## Machine")
w("")
ram = int(meta.get("ram_kib", "0") or 0) / 2**20
w("| CPUs (nproc) | CPU | RAM | kernel | data disk | load at start |")
w("|---|---|---|---|---|---|")
rota = {"0": "the kernel says non-rotational", "1": "the kernel says rotational"}.get(meta.get("disk_rota"), "?")
model = meta.get("disk_model") or "model unknown"
w(f"| {nproc} | {meta.get('cpu')} | {ram:.1f} GiB | {meta.get('kernel')} | {meta.get('disk_dev')} "
  f"({meta.get('disk_fs')}, {meta.get('disk_size')}, {meta.get('disk_avail')} free, {rota}, {model}) | "
  f"{meta.get('load')} |")
w("")
w(f"Both systems, fio and nginx ran one after the other, with their data under `{meta.get('base')}`, and "
  "the client (nimbus-bench) on the same machine. Nimbus: `nimbus dev` (six storage nodes, five "
  "metadata members, one proxy). Swift: the all-in-one of `shared/peers/swift-saio` "
  f"({meta.get('swift_setup', 'not started')}; Debian swift {meta.get('swift_version', '?')}).")
w("")

# ---- limits
w("## The machine's limits, measured in the same run")
w("")
lim = {n: fio(n) for n in ["seqwrite-1", "seqwrite-16", "seqread-1", "seqread-16", "fsync4k-1", "fsync4k-16"]}
ng = {}
for n in ["4KiB", "64MiB"]:
    for c in ["1", "16"]:
        ng[(n, c)] = run(os.path.join(results, "limits", f"nginx-{n}-c{c}-get.json"))
w(f"fio {meta.get('fio_size_mib', '?')} MiB files, ioengine {meta.get('fio_engine', '?')}; nginx "
  f"{meta.get('nginx_version', '?')} on loopback, loaded by nimbus-bench itself (its Swift driver: nginx "
  "answers the v1 auth with a token and a storage URL pointing at itself, and serves the static "
  "file as the object), so nginx and the stores face the same client.")
w("")
w("| limit | 1 job / client | 16 jobs / clients |")
w("|---|---|---|")
def lv(x, key, unit):
    return f_num(x[key], unit) if x else "–"
w(f"| fio sequential write, 1 MiB, direct | {lv(lim['seqwrite-1'], 'mibs', ' MiB/s')} | {lv(lim['seqwrite-16'], 'mibs', ' MiB/s')} |")
w(f"| fio sequential read, 1 MiB, direct | {lv(lim['seqread-1'], 'mibs', ' MiB/s')} | {lv(lim['seqread-16'], 'mibs', ' MiB/s')} |")
w(f"| fio 4 KiB write + fdatasync | {lv(lim['fsync4k-1'], 'iops', ' IOPS')} | {lv(lim['fsync4k-16'], 'iops', ' IOPS')} |")
for n in ["4KiB", "64MiB"]:
    a, b = ng[(n, "1")], ng[(n, "16")]
    cell = lambda r: "–" if not r else f"{f_num(r['ops'])} ops/s, {f_num(r['mibs'])} MiB/s, p99 {f_ms(r['p99'])}"
    w(f"| nginx GET {n} static file | {cell(a)} | {cell(b)} |")
w("")

# ---- Nimbus vs Swift
runs = {}
for p in glob.glob(os.path.join(results, "runs", "*.json")):
    name = os.path.basename(p)[:-5]
    system, api, pol, size, c, op = name.split("-")
    runs[(system, api, pol, size, c[1:], op)] = run(p)
keys = sorted({k[1:] for k in runs},
              key=lambda k: (k[0], k[1], ["4KiB", "1MiB", "64MiB"].index(k[2]) if k[2] in ["4KiB", "1MiB", "64MiB"] else 9,
                             int(k[3]), k[4] != "put"))
polname = {"nimbus": {"ec": "ec4+2", "rep": "rep3"}, "swift": {"ec": "ec42 (4+2)", "rep": "replicated (3)"}}
w("## Nimbus vs Swift")
w("")
w("Policy `ec`: `ec4+2` on Nimbus, Swift's `ec42` (4+2); `rep`: `rep3` on Nimbus, Swift's "
  "`replicated` (3 replicas). Ratio: Nimbus/Swift ops/s (the same as MiB/s at one object size); "
  "p99 lower: whether Nimbus's p99 is below Swift's.")
w("")
w("| API | policy | size | clients | op | Nimbus ops/s | MiB/s | p99 | Swift ops/s | MiB/s | p99 | Nimbus/Swift | p99 lower | errors N/S |")
w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
ratios = []
for k in keys:
    n, s = runs.get(("nimbus",) + k), runs.get(("swift",) + k)
    api, pol, size, c, op = k
    r = None if not n or not s or s["ops"] == 0 else n["ops"] / s["ops"]
    if not n or not s:
        lower = "–"
    elif s["p99"] is None or n["p99"] is None:
        lower = "yes" if s["p99"] is None and n["p99"] is not None else "no"
    else:
        lower = "yes" if n["p99"] < s["p99"] else "no"
    if n and s and s["ops"] == 0 and n["ops"] > 0:
        r = float("inf")
    if n and s:
        ratios.append((r, lower == "yes", k))
    e = lambda x: "–" if not x else str(x["errors"])
    w(f"| {api} | {pol} | {size} | {c} | {op.upper()} | {f_num(n and n['ops'])} | {f_num(n and n['mibs'])} | "
      f"{f_ms(n and n['p99'])} | {f_num(s and s['ops'])} | {f_num(s and s['mibs'])} | {f_ms(s and s['p99'])} | "
      f"{'–' if r is None else ('∞ (Swift: none done)' if r == float('inf') else f'{r:.1f}×')} | {lower} | {e(n)}/{e(s)} |")
w("")

# ---- ceilings and aims
w("## Ceilings and aims (issue 6)")
w("")
codec = [float(x) for x in meta.get("codec", "0.5/5.9/6.7").split("/")]
md5, enc, b3 = codec[:3]
sha = codec[3] if len(codec) > 3 else 1.04
def best(*xs):
    xs = [x for x in xs if x]
    return max(xs, key=lambda x: x["mibs"]) if xs else None
wr, rd = best(lim["seqwrite-1"], lim["seqwrite-16"]), best(lim["seqread-1"], lim["seqread-16"])
ng64 = ng[("64MiB", "16")]
# per-core seconds per GiB of object: MD5 of the object, the encode, blake3 of k+m fragments
put_cpu = nproc / (1 / md5 + 1 / sha + 1 / enc + (K + M) / K / b3) * 1024
get_cpu = nproc / (1 / b3) * 1024
put_disk = wr["mibs"] * K / (K + M) if wr else None
get_disk = rd["mibs"] if rd else None
put_loop = ng64["mibs"] / (1 + (K + M) / K) if ng64 else None
get_loop = ng64["mibs"] / 2 if ng64 else None
def lo(*xs):
    xs = [x for x in xs if x is not None]
    return min(xs) if xs else None
put_ceiling, get_ceiling = lo(put_disk, put_cpu, put_loop), lo(get_disk, get_cpu, get_loop)
w("Large objects (64 MiB, `ec4+2`, 16 clients, S3): the ceiling is the lowest of these bounds.")
w("")
w("| bound | PUT | GET | derivation |")
w("|---|---|---|---|")
w(f"| disk | {f_num(put_disk, ' MiB/s')} | {f_num(get_disk, ' MiB/s')} | PUT: fio sequential write (best of 1 and 16 jobs) × k/(k+m) = × 4/6, since every object byte is written (k+m)/k times; GET: fio sequential read (best of 1 and 16 jobs), reads need only the k data fragments |")
w(f"| CPU | {f_num(put_cpu, ' MiB/s')} | {f_num(get_cpu, ' MiB/s')} | {nproc} cores × per-core rates of `cargo bench -p nimbus-core --bench codec` (core/README.md: MD5 {md5} GiB/s, SHA-256 {sha} GiB/s, `Codec::encode` ec4+2 {enc} GiB/s, blake3 {b3} GiB/s). PUT: 1/(1/MD5 + 1/SHA-256 + 1/encode + 1.5/blake3) per core (the ETag, the SigV4 payload hash the client signed and the proxy must check, the encode, a blake3 over the k+m fragments); GET: blake3 over the data fragments. Optimistic: it leaves nothing for the client, the HTTP stacks, copies or the storage nodes |")
w(f"| loopback | {f_num(put_loop, ' MiB/s')} | {f_num(get_loop, ' MiB/s')} | nginx GET 64 MiB at 16 clients, divided by the bytes that cross loopback per object byte: PUT 1 (client → proxy) + 1.5 (proxy → nodes); GET 1 (nodes → proxy) + 1 (proxy → client) |")
w(f"| **ceiling** | **{f_num(put_ceiling, ' MiB/s')}** | **{f_num(get_ceiling, ' MiB/s')}** | the lowest |")
w("")

aims = []
def aim(name, measured, target, unit):
    if measured is None or target is None:
        aims.append((name, measured, target, unit, "not measured", ""))
        return
    met = measured >= target
    by = f"{(measured / target - 1) * 100:+.0f} % ({'+' if met else ''}{f_num(abs(measured - target)) if met else '-' + f_num(target - measured)} {unit})"
    aims.append((name, measured, target, unit, "met" if met else "missed", by))

big_put = runs.get(("nimbus", "s3", "ec", "64MiB", "16", "put"))
big_get = runs.get(("nimbus", "s3", "ec", "64MiB", "16", "get"))
aim("PUT 64 MiB, S3, ec4+2, 16 clients ≥ 60 % of the PUT ceiling", big_put and big_put["mibs"],
    put_ceiling and 0.6 * put_ceiling, "MiB/s")
aim("GET 64 MiB, S3, ec4+2, 16 clients ≥ 60 % of the GET ceiling", big_get and big_get["mibs"],
    get_ceiling and 0.6 * get_ceiling, "MiB/s")
sp = runs.get(("nimbus", "s3", "ec", "4KiB", "16", "put"))
sg = runs.get(("nimbus", "s3", "ec", "4KiB", "16", "get"))
aim("PUT 4 KiB, S3, 16 clients ≥ 40 % of fio 4 KiB write+fdatasync IOPS at 16 jobs", sp and sp["ops"],
    lim["fsync4k-16"] and 0.4 * lim["fsync4k-16"]["iops"], "ops/s")
ng4 = ng[("4KiB", "16")]
aim("GET 4 KiB, S3, 16 clients ≥ 30 % of nginx 4 KiB at 16 clients", sg and sg["ops"],
    ng4 and 0.3 * ng4["ops"], "ops/s")
if put_disk and get_disk:
    w(f"Against the disk bounds alone (fio), the large-object targets would be {f_num(0.6 * put_disk)} MiB/s "
      f"(PUT) and {f_num(0.6 * get_disk)} MiB/s (GET); the table uses the lowest bound.")
    w("")
w("| aim | measured | target | | by how much |")
w("|---|---|---|---|---|")
for name, m, t, unit, verdict, by in aims:
    w(f"| {name} | {f_num(m, ' ' + unit)} | {f_num(t, ' ' + unit)} | {verdict} | {by} |")
if ratios:
    met = [x for x in ratios if x[0] is not None and x[0] >= 20]
    low = [x for x in ratios if x[1]]
    worst = min((x for x in ratios if x[0] is not None), key=lambda x: x[0], default=None)
    verdict = "met" if len(met) == len(ratios) and len(low) == len(ratios) else "missed"
    wtxt = "" if not worst else f"; lowest ratio {worst[0]:.1f}× ({' '.join(worst[2][:4])} clients {worst[2][4].upper()})"
    w(f"| ≥ 20× Swift's ops/s and MiB/s on every workload, with lower p99 | ≥ 20× on {len(met)} of "
      f"{len(ratios)} workloads, lower p99 on {len(low)} | 20× on all, lower p99 on all | {verdict} | {wtxt.lstrip('; ')} |")
else:
    w("| ≥ 20× Swift's ops/s and MiB/s on every workload, with lower p99 | – | – | not measured | |")
w("")
mib_ram = int(meta.get("ram_kib", "0") or 0) / 1024
objs = [int(x) for x in meta.get("objects", "0/0/0").split("/")]
big_set = objs[2] * 64 * 1.5
w(f"Page cache: a GET run reads a data set of {objs[2]} × 64 MiB ({big_set:,.0f} MiB on disk with ec4+2) or "
  f"{objs[1]} × 1 MiB, well within the {mib_ram / 1024:.0f} GiB of RAM, so the storage nodes may serve GETs "
  "from memory while the fio read bound is direct I/O: a GET above the disk bound says more about the "
  "cache than the disk (Swift's object servers read through the page cache too).")
w("")
w("The 4 KiB aims read the `s3`/`ec` rows (a 4 KiB object is stored inline in the index whatever "
  "the policy); the Swift-API and `rep` rows are in the table above. The CPU bound does not count "
  "the client, which shares the same cores (its CPU use is in each run's JSON, `cpu`).")
w("")

failed = os.path.join(results, "failed.txt")
bad = [k for k, v in runs.items() if v and v["errors"]]
none = [k for k, v in runs.items() if v and v.get("none")]
name_of = lambda k: f"{k[0]}-{k[1]}-{k[2]}-{k[3]}-c{k[4]}-{k[5]}"
if os.path.exists(failed) or bad or none:
    w("## Failures")
    w("")
    if os.path.exists(failed):
        for line in open(failed):
            w(f"- `{line.strip()}` did not complete: see `logs/{line.strip()}.txt` in the results dir")
    for k in sorted(bad):
        w(f"- `{name_of(k)}`: {runs[k]['errors']} failed operations")
    for k in sorted(none):
        w(f"- `{name_of(k)}`: no operation completed in the measured window (longer than one operation? "
          "raise DURATION_LARGE)")
    w("")
w("## Reproduce")
w("")
w("```sh")
w(f"bench/compare-swift.sh{' --quick' if quick else ''}        # DURATION, WARMUP, SIZES, CLIENTS, … : see bench/README.md")
w(f"nimbus-bench compare {results}/runs/nimbus-s3-ec-4KiB-c16-put.json {results}/runs/swift-s3-ec-4KiB-c16-put.json")
w("```")
with open(out, "w") as f:
    f.write("\n".join(L) + "\n")
PY
log "done in $((($(date -u +%s) - started_at + 30) / 60)) min: $out"
