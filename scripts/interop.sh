#!/usr/bin/env bash
# Interop with real S3 clients: starts `nimbus dev` on its own data directory and ports, then
# runs awscli, boto3, rclone, s3cmd, python-swiftclient and curl (virtual-host style)
# against it: make a bucket, upload a 1 KiB and a 100 MiB file (multipart where the client
# does it), list, download and compare, delete. Installs the clients it lacks (apt-get for
# rclone and s3cmd, pip for awscli, boto3 and python-swiftclient).
#
#   scripts/interop.sh [path/to/nimbus]     (default: target/release/nimbus, built if absent)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
nimbus=${1:-$root/target/release/nimbus}
if [[ ! -x $nimbus ]]; then
    (cd "$root" && cargo build --release --locked -p nimbus)
fi

need_apt=()
command -v rclone >/dev/null || need_apt+=(rclone)
command -v s3cmd >/dev/null || need_apt+=(s3cmd)
if ((${#need_apt[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v aws >/dev/null || pip install -q awscli
python3 -c 'import boto3' 2>/dev/null || pip install -q boto3
# python-swiftclient from PyPI, run through this python3: a `swift` found first on PATH may be
# another release (Debian's python3-swiftclient 4.1.0, which OpenStack Swift's own packages
# bring, refuses `upload --object-name` as used below).
python3 -c 'import swiftclient' 2>/dev/null || pip install -q python-swiftclient
swift() { python3 -m swiftclient.shell "$@"; }

work=$(mktemp -d)
dev_pid=
cleanup() {
    if [[ -n $dev_pid ]]; then
        kill -INT "$dev_pid" 2>/dev/null || true
        wait "$dev_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# A block of free ports: the proxy at PORT, nodes at PORT+2.., metadata members at +102..
free_block() {
    python3 - <<'PY'
import random, socket
for _ in range(200):
    base = random.randrange(20000, 30000, 10)
    ports = [base] + [base + 1 + i for i in range(1, 7)] + [base + 1 + 100 + i for i in range(1, 6)]
    try:
        socks = []
        for p in ports:
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
port=${NIMBUS_INTEROP_PORT:-$(free_block)}
"$nimbus" dev --data "$work/data" --port "$port" --base-port $((port + 1)) >"$work/dev.out" 2>&1 &
dev_pid=$!
for _ in $(seq 1 300); do
    grep -q '^Ctrl-C stops the cluster' "$work/dev.out" && break
    kill -0 "$dev_pid" 2>/dev/null || { cat "$work/dev.out"; exit 1; }
    sleep 0.2
done
grep -q '^Ctrl-C stops the cluster' "$work/dev.out" || { echo "nimbus dev did not start"; cat "$work/dev.out"; exit 1; }
# shellcheck disable=SC1091
. "$work/data/dev.env"
endpoint=$AWS_ENDPOINT_URL
hostport=${endpoint#http://}

head -c 1024 /dev/urandom >"$work/small"
head -c $((100 << 20)) /dev/urandom >"$work/big"
passed=0
ok() { echo "interop: $1 ok"; passed=$((passed + 1)); }

# awscli: `aws s3` switches to multipart above 8 MiB.
aws s3 mb s3://interop-awscli
aws s3 cp --only-show-errors "$work/small" s3://interop-awscli/small
aws s3 cp --only-show-errors "$work/big" s3://interop-awscli/dir/big
listing=$(aws s3 ls --recursive s3://interop-awscli)
grep -q 'dir/big' <<<"$listing"
aws s3 cp --only-show-errors s3://interop-awscli/small "$work/small.aws"
aws s3 cp --only-show-errors s3://interop-awscli/dir/big "$work/big.aws"
cmp "$work/small" "$work/small.aws" && cmp "$work/big" "$work/big.aws"
aws s3 rm --recursive s3://interop-awscli
aws s3 rb s3://interop-awscli
ok awscli

# boto3: upload_file uses multipart above 8 MiB.
python3 - "$work" <<'PY'
import filecmp, sys, boto3
work = sys.argv[1]
s3 = boto3.client("s3")
s3.create_bucket(Bucket="interop-boto3")
s3.upload_file(f"{work}/small", "interop-boto3", "small")
s3.upload_file(f"{work}/big", "interop-boto3", "big")
keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="interop-boto3")["Contents"])
assert keys == ["big", "small"], keys
assert s3.head_object(Bucket="interop-boto3", Key="big")["ETag"].endswith('-13"'), "multipart ETag"
s3.download_file("interop-boto3", "small", f"{work}/small.boto3")
s3.download_file("interop-boto3", "big", f"{work}/big.boto3")
assert filecmp.cmp(f"{work}/small", f"{work}/small.boto3", shallow=False)
assert filecmp.cmp(f"{work}/big", f"{work}/big.boto3", shallow=False)
for key in keys:
    s3.delete_object(Bucket="interop-boto3", Key=key)
s3.delete_bucket(Bucket="interop-boto3")
PY
# Browser uploads: POST policies signed by boto3 (SigV4 and SigV2), sent as forms by curl;
# an altered signature, a body over the policy's content-length-range, an expired policy.
python3 - "$work" <<'PY'
import filecmp, subprocess, sys, boto3
from botocore.config import Config
work = sys.argv[1]
s3 = boto3.client("s3", config=Config(signature_version="s3v4"))
s3.create_bucket(Bucket="interop-post")
open(f"{work}/toobig", "wb").write(b"y" * (2 << 20))
def send(post, path, **changed):
    fields = dict(post["fields"], **changed)
    args = ["curl", "-s", "-o", f"{work}/post.out", "-w", "%{http_code}"]
    for k, v in fields.items():
        args += ["--form-string", f"{k}={v}"]
    args += ["-F", f"file=@{path}", post["url"]]
    code = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return code, open(f"{work}/post.out").read()
for version, sig in [("s3v4", "x-amz-signature"), ("s3", "signature")]:
    signer = boto3.client("s3", config=Config(signature_version=version))
    key = f"form/{version}"
    post = signer.generate_presigned_post(
        "interop-post", key, Conditions=[["content-length-range", 1, 1 << 20]], ExpiresIn=600)
    code, body = send(post, f"{work}/small")
    assert code == "204", (version, code, body)
    s3.download_file("interop-post", key, f"{work}/small.post")
    assert filecmp.cmp(f"{work}/small", f"{work}/small.post", shallow=False)
    altered = post["fields"][sig][:-4] + ("AAAA" if post["fields"][sig][-4:] != "AAAA" else "BBBB")
    code, body = send(post, f"{work}/small", **{sig: altered})
    assert code == "403" and "SignatureDoesNotMatch" in body, (version, code, body)
    code, body = send(post, f"{work}/toobig")
    assert code == "400" and "EntityTooLarge" in body, (version, code, body)
    late = signer.generate_presigned_post("interop-post", "form/late", ExpiresIn=-10)
    code, body = send(late, f"{work}/small")
    assert code == "403", (version, code, body)
    s3.delete_object(Bucket="interop-post", Key=key)
s3.delete_bucket(Bucket="interop-post")
PY
ok boto3

# rclone (its AWS SDK cannot apply a CA bundle to its own transport: none is needed here).
unset AWS_CA_BUNDLE
# rclone: multipart above its 200 MiB cutoff is lowered to 16 MiB so the big file uses it.
export RCLONE_CONFIG_NIMBUS_TYPE=s3 RCLONE_CONFIG_NIMBUS_PROVIDER=Other \
    RCLONE_CONFIG_NIMBUS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID \
    RCLONE_CONFIG_NIMBUS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
    RCLONE_CONFIG_NIMBUS_ENDPOINT=$endpoint RCLONE_CONFIG_NIMBUS_REGION=$AWS_DEFAULT_REGION \
    RCLONE_CONFIG_NIMBUS_FORCE_PATH_STYLE=true
mkdir -p "$work/rclone-up" "$work/rclone-down"
cp "$work/small" "$work/big" "$work/rclone-up/"
rclone mkdir nimbus:interop-rclone
rclone copy --s3-upload-cutoff 16M --s3-chunk-size 16M "$work/rclone-up" nimbus:interop-rclone
listing=$(rclone ls nimbus:interop-rclone)
grep -q big <<<"$listing"
rclone copy nimbus:interop-rclone "$work/rclone-down"
cmp "$work/small" "$work/rclone-down/small" && cmp "$work/big" "$work/rclone-down/big"
rclone delete nimbus:interop-rclone
rclone rmdir nimbus:interop-rclone
ok rclone

# s3cmd: path style (host-bucket without %(bucket)s), multipart in 15 MiB chunks.
s3c=(s3cmd --no-ssl --host="$hostport" --host-bucket="$hostport" --region="$AWS_DEFAULT_REGION"
    --access_key="$AWS_ACCESS_KEY_ID" --secret_key="$AWS_SECRET_ACCESS_KEY" --config=/dev/null)
"${s3c[@]}" mb s3://interop-s3cmd >/dev/null
"${s3c[@]}" put "$work/small" s3://interop-s3cmd/small >/dev/null
"${s3c[@]}" put "$work/big" s3://interop-s3cmd/big >/dev/null
listing=$("${s3c[@]}" ls s3://interop-s3cmd)
grep -q big <<<"$listing"
"${s3c[@]}" get s3://interop-s3cmd/small "$work/small.s3cmd" >/dev/null
"${s3c[@]}" get s3://interop-s3cmd/big "$work/big.s3cmd" >/dev/null
cmp "$work/small" "$work/small.s3cmd" && cmp "$work/big" "$work/big.s3cmd"
"${s3c[@]}" del s3://interop-s3cmd/small s3://interop-s3cmd/big >/dev/null
"${s3c[@]}" rb s3://interop-s3cmd >/dev/null
ok s3cmd

# python-swiftclient, through the Swift API, on the same cluster (ST_AUTH, ST_USER, ST_KEY).
swift post interop-swift
swift upload --object-name small interop-swift "$work/small" >/dev/null
swift upload --object-name big interop-swift "$work/big" >/dev/null
listing=$(swift list interop-swift)
grep -q big <<<"$listing"
swift download interop-swift small -o "$work/small.swift" >/dev/null
swift download interop-swift big -o "$work/big.swift" >/dev/null
cmp "$work/small" "$work/small.swift" && cmp "$work/big" "$work/big.swift"
# The same objects through S3.
aws s3 cp --only-show-errors s3://interop-swift/big "$work/big.swift-s3"
cmp "$work/big" "$work/big.swift-s3"
# Container metadata, a TempURL signed by swiftclient, an anonymous read through an ACL.
swift post -m color:blue interop-swift
swift stat interop-swift | grep -q 'Meta Color: blue'
swift post -m Temp-URL-Key:interop-key
storage_url=$(swift auth | sed -n 's/^export OS_STORAGE_URL=//p' | tr -d "'\"")
account_path=/v1/${storage_url##*/v1/}
temp_path=$(swift tempurl GET 600 "$account_path/interop-swift/small" interop-key)
curl -sf "${storage_url%%/v1/*}$temp_path" -o "$work/small.tempurl"
cmp "$work/small" "$work/small.tempurl"
swift post -r '.r:*' interop-swift
curl -sf "$storage_url/interop-swift/small" -o "$work/small.public"
cmp "$work/small" "$work/small.public"
# Large objects (segments of 8 MiB; the segment container named as buckets must be, not
# swiftclient's default `<container>_segments`), metadata and expiry.
swift post interop-swift-segments
swift upload --use-slo -S $((8 << 20)) --segment-container interop-swift-segments \
    --object-name slo interop-swift "$work/big" >/dev/null
swift upload --use-dlo -S $((8 << 20)) --segment-container interop-swift-segments \
    --object-name dlo interop-swift "$work/big" >/dev/null
swift download interop-swift slo -o "$work/slo.swift" >/dev/null
swift download interop-swift dlo -o "$work/dlo.swift" >/dev/null
cmp "$work/big" "$work/slo.swift" && cmp "$work/big" "$work/dlo.swift"
aws s3 cp --only-show-errors s3://interop-swift/slo "$work/slo.swift-s3"
cmp "$work/big" "$work/slo.swift-s3"
swift post -m color:blue -H 'X-Delete-After: 3600' interop-swift small
stat=$(swift stat interop-swift small)
grep -q 'Meta Color: blue' <<<"$stat" && grep -q 'X-Delete-At:' <<<"$stat"
# Several objects at once: swiftclient uses bulk delete, which /info advertises.
swift delete interop-swift small big slo dlo >/dev/null
[[ -z $(swift list interop-swift-segments) ]]
swift delete interop-swift >/dev/null
swift delete interop-swift-segments >/dev/null
# python-swiftclient's Python API: the same through its Connection, and the errors it sees.
python3 - <<'PY'
import os, time, urllib.error, urllib.request
import swiftclient
from swiftclient.utils import generate_temp_url
auth, user, key = os.environ["ST_AUTH"], os.environ["ST_USER"], os.environ["ST_KEY"]
conn = swiftclient.client.Connection(authurl=auth, user=user, key=key, retries=0)
conn.put_container("interop-pyswift", headers={"X-Container-Meta-Owner": "py"})
assert conn.head_container("interop-pyswift")["x-container-meta-owner"] == "py"
etag = conn.put_object("interop-pyswift", "a/b", contents=b"hello", content_type="text/plain",
                       headers={"X-Object-Meta-Color": "red"})
conn.put_object("interop-pyswift", "c", contents=b"x")
headers, body = conn.get_object("interop-pyswift", "a/b")
assert body == b"hello" and headers["etag"] == etag and headers["x-object-meta-color"] == "red"
conn.post_object("interop-pyswift", "a/b", headers={"X-Object-Meta-Color": "blue"})
assert conn.head_object("interop-pyswift", "a/b")["x-object-meta-color"] == "blue"
_, listing = conn.get_container("interop-pyswift", delimiter="/")
assert [e.get("subdir", e.get("name")) for e in listing] == ["a/", "c"], listing
_, listing = conn.get_container("interop-pyswift", query_string="reverse=on")
assert [e["name"] for e in listing] == ["c", "a/b"], listing
def status_of(call):
    try:
        call()
    except swiftclient.ClientException as e:
        return e.http_status
    return 200
assert status_of(lambda: conn.get_object("interop-pyswift", "missing")) == 404
bad = swiftclient.client.Connection(authurl=auth, user=user, key="wrong-key-123", retries=0)
assert status_of(bad.head_account) == 401
conn.post_account({"X-Account-Meta-Temp-URL-Key": "py-key"})
path = conn.url.split("://", 1)[1].split("/", 1)[1]
base = conn.url[: conn.url.index("/v1/")]
def fetch(url):
    try:
        return urllib.request.urlopen(base + url).status
    except urllib.error.HTTPError as e:
        return e.code
ok_url = generate_temp_url(f"/{path}/interop-pyswift/a/b", 600, "py-key", "GET")
assert fetch(ok_url) == 200
late = generate_temp_url(f"/{path}/interop-pyswift/a/b", int(time.time()) - 10, "py-key", "GET",
                         absolute=True)
assert fetch(late) == 401
for name in ("a/b", "c"):
    conn.delete_object("interop-pyswift", name)
conn.delete_container("interop-pyswift")
PY
ok "python-swiftclient"

# Virtual-host style with curl's SigV4: the bucket in the host name (BUCKET.localhost,
# resolved by curl itself), the key in the path.
port_only=${hostport##*:}
vhost=(curl -sf --aws-sigv4 "aws:amz:$AWS_DEFAULT_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY"
    --resolve "interop-vhost.localhost:$port_only:127.0.0.1")
aws s3 mb s3://interop-vhost >/dev/null
"${vhost[@]}" -X PUT -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' --data-binary @"$work/small" \
    "http://interop-vhost.localhost:$port_only/small"
"${vhost[@]}" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "http://interop-vhost.localhost:$port_only/small" -o "$work/small.vhost"
cmp "$work/small" "$work/small.vhost"
listing=$("${vhost[@]}" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "http://interop-vhost.localhost:$port_only/?list-type=2")
grep -q '<Key>small</Key>' <<<"$listing"
aws s3 rm s3://interop-vhost/small >/dev/null
aws s3 rb s3://interop-vhost >/dev/null
ok "curl (virtual-host style)"

echo "interop: $passed of 6 clients passed"
