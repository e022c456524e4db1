#!/usr/bin/env bash
# Benchmarks s3fs-gateway against s3s-fs 0.14.1 (the s3s framework's own naive file-system
# server) on the same machine, the same data and the same client, and prints a table of medians
# with the ratio ours/s3s-fs for every metric. See docs/benchmarks.md.
#
# usage: bench/gateway.sh [--rounds N] [--out FILE.jsonl] [--servers LIST] [-- GATEWAY-BENCH-RUN-ARGS...]
#
#   --rounds N      rounds per server (default 3); the servers are interleaved in every round
#   --out FILE      JSON lines of every measurement (default target/gateway-bench/run-DATE.jsonl)
#   --servers LIST  comma-separated subset of s3s-fs,ours,ours-fsync (default: all three)
#   -- ARGS         passed to `gateway-bench run`, e.g. -- --small-secs 2 --large-mib 64
#
# Servers:
#   s3s-fs      s3s-fs 0.14.1 (no fsync at all)
#   ours        s3fs-gateway with fsync = false  (the apples-to-apples comparison)
#   ours-fsync  s3fs-gateway with fsync = true   (the default; shown as an extra column)
#
# Environment: TMPDIR (where the server roots live; must support user xattrs, so not an old
# tmpfs), BENCH_RUST_LOG (RUST_LOG for both servers, default "warn"), CARGO_TARGET_DIR.
set -euo pipefail

ROUNDS=3
OUT=""
SERVERS="s3s-fs,ours,ours-fsync"
BENCH_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --servers) SERVERS="$2"; shift 2 ;;
        --) shift; BENCH_ARGS=("$@"); break ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
LOG_LEVEL=${BENCH_RUST_LOG:-warn}
S3SFS_VERSION=0.14.1
S3SFS=$REPO/bench/.tools/bin/s3s-fs
GW=$TARGET/release/s3fs-gateway
BENCH=$TARGET/release/gateway-bench

echo "== building (release)" >&2
cargo build --release -p s3fs-gateway -p gateway-bench
if [ ! -x "$S3SFS" ] || ! "$S3SFS" --version 2>/dev/null | grep -q "$S3SFS_VERSION"; then
    echo "== installing s3s-fs $S3SFS_VERSION into bench/.tools" >&2
    cargo install s3s-fs --version "$S3SFS_VERSION" --features binary --root "$REPO/bench/.tools" --locked
fi

if [ -z "$OUT" ]; then
    mkdir -p "$TARGET/gateway-bench"
    OUT=$TARGET/gateway-bench/run-$(date +%Y%m%d-%H%M%S).jsonl
fi
: >"$OUT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gateway-bench.XXXXXX")
SERVER_PID=""
ENDPOINT=""
AK=AKGPAIRBENCH0000001
SK=bench-secret-key-not-a-secret-00000000001

stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 350); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_ours DIR FSYNC: starts s3fs-gateway on a fresh root; sets SERVER_PID and ENDPOINT.
start_ours() {
    local dir=$1 fsync=$2
    mkdir -p "$dir/root"
    (umask 077; printf '[[keys]]\naccess_key = "%s"\nsecret_key = "%s"\nrole = "backend"\n' \
        "$AK" "$SK" >"$dir/credentials.toml")
    chmod 600 "$dir/credentials.toml"
    printf 'credentials = "%s"\nfsync = %s\n' "$dir/credentials.toml" "$fsync" >"$dir/gateway.toml"
    RUST_LOG=$LOG_LEVEL "$GW" --root "$dir/root" --listen 127.0.0.1:0 --config "$dir/gateway.toml" \
        >"$dir/stdout" 2>"$dir/stderr" &
    SERVER_PID=$!
    local addr=""
    for _ in $(seq 1 300); do
        addr=$(sed -n 's#^s3fs-gateway listening on http://##p' "$dir/stdout" | head -n1)
        [ -n "$addr" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$addr" ]; then
        echo "s3fs-gateway did not start; stderr:" >&2
        cat "$dir/stderr" >&2
        exit 1
    fi
    ENDPOINT=http://$addr
}

# start_s3sfs DIR: starts s3s-fs on a fresh root; sets SERVER_PID and ENDPOINT.
start_s3sfs() {
    local dir=$1
    mkdir -p "$dir/root"
    local port
    port=$("$BENCH" free-port)
    RUST_LOG=$LOG_LEVEL "$S3SFS" --host 127.0.0.1 --port "$port" --access-key "$AK" --secret-key "$SK" \
        "$dir/root" >"$dir/stdout" 2>"$dir/stderr" &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            ENDPOINT=http://127.0.0.1:$port
            return
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "s3s-fs did not start; output:" >&2
    cat "$dir/stdout" "$dir/stderr" >&2
    exit 1
}

run_one() {
    local server=$1 round=$2
    local dir=$WORK/$server-$round
    case "$server" in
        s3s-fs) start_s3sfs "$dir" ;;
        ours) start_ours "$dir" false ;;
        ours-fsync) start_ours "$dir" true ;;
        *) echo "unknown server $server" >&2; exit 2 ;;
    esac
    echo "== round $round: $server at $ENDPOINT (pid $SERVER_PID), load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    BENCH_ACCESS_KEY=$AK BENCH_SECRET_KEY=$SK "$BENCH" run --endpoint "$ENDPOINT" \
        --server-pid "$SERVER_PID" --server "$server" --round "$round" --out "$OUT" \
        "${BENCH_ARGS[@]}" >/dev/null
    stop_server
    rm -rf "$dir"
}

IFS=, read -r -a LIST <<<"$SERVERS"
n=${#LIST[@]}
echo "== $ROUNDS rounds of: ${LIST[*]}; results in $OUT; server roots under $WORK" >&2
for round in $(seq 1 "$ROUNDS"); do
    # Rotate the order every round so that no server always runs first (page cache, thermal).
    for i in $(seq 0 $((n - 1))); do
        run_one "${LIST[$(((i + round - 1) % n))]}" "$round"
    done
done

extra=""
for s in "${LIST[@]}"; do
    case "$s" in s3s-fs|ours) ;; *) extra="${extra:+$extra,}$s" ;; esac
done
{
    echo "command: bench/gateway.sh --rounds $ROUNDS --servers $SERVERS${BENCH_ARGS[*]:+ -- ${BENCH_ARGS[*]}}"
    echo "machine: $(nproc) cores, $(uname -sr), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), load average now $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "results: $OUT"
    "$BENCH" report "$OUT" --baseline s3s-fs --candidate ours --extra "$extra"
} | tee "${OUT%.jsonl}.txt"
