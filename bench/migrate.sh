#!/usr/bin/env bash
# Benchmarks migration (gpair migrate / gpair recall, gpair-backend ⇄ s3fs-gateway) next to
# peers run in the same invocation, on the same data and the same gateway (same fsync setting):
# `rclone copy` to and from the gateway (with its defaults and tuned) and `cp -r` + `sync` to a
# directory on the same file system (the local physical limit). Two data sets, measured
# separately: many small files and a few large ones. Prints a table of medians per data set and
# direction, the ratios gpair/rclone and gpair/(cp+sync), and PASS/MISS for the goals. See
# docs/benchmarks.md, "Migration".
#
# usage: bench/migrate.sh [--small-files N] [--files-per-dir N] [--large-gib "G..."] [--rounds K]
#                         [--rclone LIST] [--rclone-tuned "FLAGS"] [--tier "KEY = VALUE; ..."]
#                         [--gateway-fsync true|false] [--out FILE.jsonl] [--perf] [--keep]
#                         [--no-verify] [--no-build]
#
#   --small-files N        small files, 4 KiB..1 MiB, log-normal sizes with median 32 KiB
#                          (default 10000; 0 skips the small set)
#   --files-per-dir N      small files per directory (default 100)
#   --large-gib "G..."     sizes of the large files in GiB, fractions allowed (default "1 2";
#                          "" skips the large set)
#   --rounds K             rounds (default 3); every round migrates and recalls everything once
#                          (the recall is what resets the share for the next round) and runs each
#                          peer once (its copies are deleted after it)
#   --rclone LIST          rclone variants, comma separated, of: default, tuned (default both;
#                          "" skips rclone); the report compares with the better one
#   --rclone-tuned "FLAGS" the tuned variant's flags (default "--transfers 16 --checkers 16
#                          --s3-upload-concurrency 8 --s3-chunk-size 16M --multi-thread-streams 8")
#   --tier "K = V; ..."    extra [tier] settings of the daemon, e.g. "transfers = 16" (default:
#                          none, the daemon's defaults)
#   --gateway-fsync B      the gateway's fsync setting (default true, the gateway's default)
#   --out FILE             JSON lines of every measurement (default
#                          bench/results/migrate-DATE.jsonl; the table goes to the same name .txt)
#   --perf                 also profile the daemon and the gateway during the gpair phases with
#                          `perf record -g` (reports next to the results, FILE-perf-*.txt)
#   --keep                 keep the work directory (data, gateway root, catalog, logs)
#   --no-verify            skip the final byte-for-byte check of the share against the generator
#   --no-build             use the release binaries already in the target directory
#
# Everything (the share, the gateway root, the catalog, rclone's and cp's copies) lives in one
# work directory under TMPDIR (default /tmp), so on one file system, which must have user xattrs
# and hole punching (ext4, xfs, btrfs).
#
# Environment: TMPDIR, BENCH_RUST_LOG (RUST_LOG for the daemon and the gateway, default "warn"),
# CARGO_TARGET_DIR.
set -euo pipefail

SMALL_FILES=10000
FILES_PER_DIR=100
LARGE_GIB="1 2"
ROUNDS=3
RCLONE_VARIANTS="default,tuned"
RCLONE_TUNED="--transfers 16 --checkers 16 --s3-upload-concurrency 8 --s3-chunk-size 16M --multi-thread-streams 8"
TIER=""
GW_FSYNC=true
OUT=""
PERF=0
KEEP=0
VERIFY=1
BUILD=1
ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --small-files) SMALL_FILES="$2"; shift 2 ;;
        --files-per-dir) FILES_PER_DIR="$2"; shift 2 ;;
        --large-gib) LARGE_GIB="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --rclone) RCLONE_VARIANTS="$2"; shift 2 ;;
        --rclone-tuned) RCLONE_TUNED="$2"; shift 2 ;;
        --tier) TIER="$2"; shift 2 ;;
        --gateway-fsync) GW_FSYNC="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --perf) PERF=1; shift ;;
        --keep) KEEP=1; shift ;;
        --no-verify) VERIFY=0; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,43p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$GW_FSYNC" in true|false) ;; *) echo "--gateway-fsync: true or false" >&2; exit 2 ;; esac
IFS=, read -r -a RCLONES <<<"$RCLONE_VARIANTS"
for v in "${RCLONES[@]}"; do
    case "$v" in default|tuned) ;; *) echo "--rclone: default and/or tuned, not $v" >&2; exit 2 ;; esac
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
LOG_LEVEL=${BENCH_RUST_LOG:-warn}
GW=$TARGET/release/s3fs-gateway
DAEMON=$TARGET/release/gpair-backend
GPAIR=$TARGET/release/gpair
HELPER=$REPO/bench/migrate_helper.py
TCK=$(getconf CLK_TCK)

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
need python3 python3
[ "${#RCLONES[@]}" -gt 0 ] && need rclone rclone
[ "$PERF" = 1 ] && need perf linux-perf

if [ "$BUILD" = 1 ]; then
    echo "== building (release)" >&2
    cargo build --release -p s3fs-gateway -p gpair-backend -p gpair-cli
fi

prepare_run migrate "$DAEMON" "$GW" "$GPAIR"
GW=$WORK/bin/s3fs-gateway
DAEMON=$WORK/bin/gpair-backend
GPAIR=$WORK/bin/gpair
SHARE=$WORK/share          # the east share (bound to the gpair)
ROOT=$WORK/root            # the gateway root
COPIES=$WORK/copies        # cp's copies and rclone's downloads (outside the share)
AK=AKGPAIRBENCH0000001
SK=bench-secret-key-not-a-secret-00000000001
BUCKET=bench
NAME=mig
GW_PID=""
D_PID=""
BG_PIDS=()

cleanup() {
    stop_bg
    stop "$D_PID"; D_PID=""
    stop "$GW_PID"; GW_PID=""
    if [ "$KEEP" = 1 ]; then
        echo "== kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM


logs_tail() {
    echo "--- daemon log (tail) ---" >&2; tail -n 30 "$WORK/daemon.stderr" >&2 || true
    echo "--- gateway log (tail) ---" >&2; tail -n 30 "$WORK/gateway.stderr" >&2 || true
}

# ------------------------------------------------------------------ data, gateway, daemon

FS=$(df --output=fstype "$WORK" | tail -n1)
echo "== $ROUNDS rounds; small: $SMALL_FILES files ($FILES_PER_DIR per dir); large: ${LARGE_GIB:-none} GiB; rclone: ${RCLONE_VARIANTS:-none}; gateway fsync $GW_FSYNC; work dir $WORK ($FS); results in $OUT" >&2
echo "== generating the data, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
GEN=$(helper gen "$SHARE" "$SMALL_FILES" "$FILES_PER_DIR" "$LARGE_GIB")
echo "   $GEN" >&2
SETS=()
if [ "$(jget "$GEN" small_files)" -gt 0 ]; then SETS+=(small); fi
if [ "$(jget "$GEN" large_files)" -gt 0 ]; then SETS+=(large); fi
[ "${#SETS[@]}" -gt 0 ] || { echo "no data: --small-files 0 and --large-gib \"\"" >&2; exit 2; }
NEED=$(( $(jget "$GEN" small_bytes) + $(jget "$GEN" large_bytes) ))
AVAIL=$(( $(df --output=avail -B1 "$WORK" | tail -n1) ))
if [ "$AVAIL" -lt $((NEED * 4)) ]; then
    echo "== WARNING: $((AVAIL >> 30)) GiB free next to $WORK; this run needs about $(((NEED * 4) >> 30)) GiB" >&2
fi
sync

mkdir -p "$ROOT/$BUCKET" "$COPIES"
(umask 077; printf '[[keys]]\naccess_key = "%s"\nsecret_key = "%s"\nrole = "backend"\n' \
    "$AK" "$SK" >"$WORK/credentials.toml")
chmod 600 "$WORK/credentials.toml"
printf 'credentials = "%s"\nfsync = %s\n' "$WORK/credentials.toml" "$GW_FSYNC" >"$WORK/gateway.toml"
start gateway "$WORK" "$GW" --root "$ROOT" --listen 127.0.0.1:0 --config "$WORK/gateway.toml"
GW_PID=$PID
ADDR=$(wait_line "$GW_PID" "$WORK/gateway.stdout" 's#^s3fs-gateway listening on http://##p' s3fs-gateway)
ENDPOINT=http://$ADDR

SOCK=$WORK/backend.sock
{
    printf 'cluster_id = "LC_111"\ncatalog = "%s"\nsocket = "%s"\n\n' "$WORK/catalog" "$SOCK"
    printf '[sync]\nreconcile_interval_secs = 0\n\n[tier]\n'
    if [ -n "$TIER" ]; then tr ';' '\n' <<<"$TIER" | sed 's/^ *//'; fi
} >"$WORK/backend.toml"
TRANSFERS=$(sed -n 's/^ *transfers *= *\([0-9]*\).*/\1/p' "$WORK/backend.toml" | tail -n1)
TRANSFERS=${TRANSFERS:-8}   # the daemon's default tier.transfers
start_bound_daemon "$WORK/backend.toml" "$BUCKET/gpair"
echo "== gateway $ENDPOINT (pid $GW_PID), daemon pid $D_PID; waiting for the metadata sync of the share" >&2
S=$(helper settle "$GPAIR" "$SOCK" "$NAME" "$D_PID" 3600)
echo "   metadata sync settled: $S" >&2

RCLONE_ENV=(env -u AWS_CA_BUNDLE -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY
    RCLONE_CONFIG="$WORK/no-rclone.conf"
    RCLONE_CONFIG_WEST_TYPE=s3 RCLONE_CONFIG_WEST_PROVIDER=Other RCLONE_CONFIG_WEST_ENV_AUTH=false
    RCLONE_CONFIG_WEST_ACCESS_KEY_ID="$AK" RCLONE_CONFIG_WEST_SECRET_ACCESS_KEY="$SK"
    RCLONE_CONFIG_WEST_ENDPOINT="$ENDPOINT" RCLONE_CONFIG_WEST_REGION=us-east-1
    RCLONE_CONFIG_WEST_FORCE_PATH_STYLE=true)
rclone_flags() { # rclone_flags VARIANT
    case "$1" in
        default) echo "" ;;
        tuned) echo "$RCLONE_TUNED" ;;
    esac
}

# ------------------------------------------------------------------ measurements

profile_start() { # profile_start NAME PID (--perf only)
    [ "$PERF" = 1 ] || return 0
    perf record -q -F 499 -g -p "$2" -o "$PD/$1.prof.data" >/dev/null 2>"$PD/$1.prof.log" &
    BG_PIDS+=($!)
}
profile_end() {
    stop_bg
    [ "$PERF" = 1 ] || return 0
    local n
    for n in daemon gateway; do
        [ -s "$PD/$n.prof.data" ] || continue
        {   # flat profile first, then the call graphs
            perf report -i "$PD/$n.prof.data" --no-children --sort dso,symbol -g none \
                --percent-limit 0.5 --stdio 2>/dev/null | grep -v '^$'
            perf report -i "$PD/$n.prof.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
                | grep -v '^$' | head -n 600
        } >"${OUT%.jsonl}-perf-r$ROUND-$PHASE-$n.txt" || true
        echo "   perf report: ${OUT%.jsonl}-perf-r$ROUND-$PHASE-$n.txt" >&2
    done
}

# measure TOOL SET DIR CMD...: runs CMD timed (sync first, not timed), with the CPU time of the
# daemon and the gateway around it; for gpair, until the metadata sync has settled again (the
# CPU of that tail counts, the seconds do not). Appends one JSON line to $OUT.
measure() {
    local tool=$1 set=$2 dir=$3
    shift 3
    PHASE=$set-$dir-$tool
    PD=$WORK/r$ROUND-$PHASE
    mkdir -p "$PD"
    sync
    local load c0 c1 r extra="{}" alloc0="" alloc1="" applied0=""
    if [ "$tool" = gpair ] && [ "$dir" = offload ]; then alloc0=$(helper alloc "$SHARE/$set"); fi
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    if [ "$tool" = gpair ]; then
        applied0=$(helper applied "$GPAIR" "$SOCK" "$NAME")
        profile_start daemon "$D_PID"
        profile_start gateway "$GW_PID"
        if [ "${#BG_PIDS[@]}" -gt 0 ]; then sleep 1; fi
    fi
    c0="$(cpu_s "$D_PID") $(cpu_s "$GW_PID")"
    r=$(helper timed "$PD/stdout" "$PD/stderr" "$@")
    if [ "$(jget "$r" rc)" != 0 ]; then
        echo "== $PHASE failed (exit $(jget "$r" rc)): $*" >&2
        tail -n 40 "$PD/stderr" "$PD/stdout" >&2
        logs_tail
        exit 1
    fi
    if [ "$tool" = gpair ]; then
        extra=$(helper job "$PD/stdout")
        local s
        s=$(helper settle "$GPAIR" "$SOCK" "$NAME" "$D_PID" 3600 "$applied0")
        extra=$(python3 -c 'import json,sys; a=json.loads(sys.argv[1]); a.update(json.loads(sys.argv[2])); a["tier_transfers"]=int(sys.argv[3]); print(json.dumps(a))' "$extra" "$s" "$TRANSFERS")
        if [ "$dir" = offload ]; then alloc1=$(helper alloc "$SHARE/$set"); fi
    fi
    c1="$(cpu_s "$D_PID") $(cpu_s "$GW_PID")"
    profile_end
    if [ "$dir" = recall ] && [ "$tool" != gpair ]; then
        # rclone does not fsync what it downloads (gpair recall fsyncs every file): how long
        # a sync right after it takes is recorded, not counted.
        local t0
        t0=$(date +%s.%N)
        sync
        extra=$(python3 -c 'import sys,time; print("{\"sync_after_secs\": %.3f}" % (time.time() - float(sys.argv[1])))' "$t0")
    fi
    python3 - "$tool" "$set" "$dir" "$ROUND" "$r" "$extra" "$c0" "$c1" "$load" "$GEN" \
        "$alloc0" "$alloc1" "$FS" "$*" >>"$OUT" <<'PY'
import json, sys
tool, dset, d, rnd, r, extra, c0, c1, load, gen, a0, a1, fs, cmd = sys.argv[1:]
r, extra, gen = json.loads(r), json.loads(extra), json.loads(gen)
files, nbytes = gen[dset + "_files"], gen[dset + "_bytes"]
delta = lambda i: round(float(c1.split()[i]) - float(c0.split()[i]), 2)
line = {"bench": "migrate", "round": int(rnd), "set": dset, "dir": d, "tool": tool,
        "files": files, "bytes": nbytes, "secs": round(r["secs"], 3),
        "files_per_s": files / r["secs"], "mb_per_s": nbytes / r["secs"] / 1e6,
        "daemon_cpu_s": delta(0), "gateway_cpu_s": delta(1), "client_cpu_s": r["client_cpu_s"],
        "loadavg": load, "fs": fs,
        "cmd": cmd[cmd.index(" rclone ") + 1:] if cmd.startswith("env ") else cmd}
if a0:
    line["east_alloc_before"] = int(a0)
if a1:
    line["east_alloc_after"] = int(a1)
line.update(extra)
if tool == "gpair":
    want = files
    if extra.get("job_state") != "done" or extra.get("job_files_done") != want \
            or extra.get("job_bytes_done") != nbytes:
        line["error"] = "job did not move everything"
print(json.dumps(line))
PY
    python3 - "$OUT" <<'PY' >&2
import json, sys
l = json.loads(open(sys.argv[1]).read().splitlines()[-1])
cpu = sum(l[k] for k in ("daemon_cpu_s", "gateway_cpu_s", "client_cpu_s") if l.get(k) is not None)
s = "   %-5s %-7s %-14s %6d files %8.3f GiB in %7.2f s = %8.1f files/s %7.1f MB/s; CPU s daemon %.2f gateway %.2f client %.2f = %.2f CPU-s/GiB; load %s" % (
    l["set"], l["dir"], l["tool"], l["files"], l["bytes"] / 2**30, l["secs"], l["files_per_s"],
    l["mb_per_s"], l["daemon_cpu_s"], l["gateway_cpu_s"], l["client_cpu_s"],
    cpu / (l["bytes"] / 2**30), l["loadavg"].split()[0])
if "job_secs" in l:
    s += "; job %.2f s, settled %.2f s later (%d west updates applied by the sync)" % (
        l["job_secs"], l.get("settle_secs", 0), l.get("sync_applied", 0))
if "east_alloc_after" in l:
    s += "; east allocation %.1f -> %.1f MiB" % (l["east_alloc_before"] / 2**20, l["east_alloc_after"] / 2**20)
print(s)
if l.get("error"):
    print("   ERROR: %s: %s" % (l["error"], json.dumps({k: v for k, v in l.items() if k.startswith("job_")})))
    sys.exit(1)
PY
}

# The peers on one data set; the share is local when they run.
peers() {
    local set=$1 v
    for v in "${RCLONES[@]}"; do
        # shellcheck disable=SC2046
        measure "rclone-$v" "$set" offload "${RCLONE_ENV[@]}" rclone copy "$SHARE/$set" \
            "west:$BUCKET/rclone-$v/$set" $(rclone_flags "$v") \
            --retries 1 --low-level-retries 1 --s3-no-check-bucket
        local n
        n=$(find "$ROOT/$BUCKET/rclone-$v/$set" -type f | wc -l)
        [ "$n" = "$(jget "$GEN" "${set}_files")" ] || echo "   WARNING: west holds $n objects under rclone-$v/$set" >&2
        # shellcheck disable=SC2046
        measure "rclone-$v" "$set" recall "${RCLONE_ENV[@]}" rclone copy \
            "west:$BUCKET/rclone-$v/$set" "$COPIES/rclone-$v/$set" $(rclone_flags "$v") \
            --retries 1 --low-level-retries 1
        "${RCLONE_ENV[@]}" rclone purge "west:$BUCKET/rclone-$v/$set" --s3-no-check-bucket \
            >"$WORK/purge.log" 2>&1 || { cat "$WORK/purge.log" >&2; exit 1; }
        rm -rf "$COPIES/rclone-$v"
    done
    measure cp "$set" offload sh -c 'cp -r "$1" "$2" && sync' sh "$SHARE/$set" "$COPIES/cp-$set"
    rm -rf "$COPIES/cp-$set"
}

ours() {
    local set=$1
    measure gpair "$set" offload "${G[@]}" --output json migrate -r --wait "$SHARE/$set"
    measure gpair "$set" recall "${G[@]}" --output json recall -r --wait "$SHARE/$set"
}

for ROUND in $(seq 1 "$ROUNDS"); do
    echo "== round $ROUND, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    for set in "${SETS[@]}"; do
        # Alternate who goes first, so that neither always finds the page cache and the
        # gateway's directories in the state the other left.
        if [ $((ROUND % 2)) = 1 ]; then
            peers "$set"; ours "$set"
        else
            ours "$set"; peers "$set"
        fi
    done
done

if [ "$VERIFY" = 1 ]; then
    echo "== verifying every byte of the share after the last recall" >&2
    V=$(helper verify "$SHARE" "$SMALL_FILES" "$FILES_PER_DIR" "$LARGE_GIB") || {
        echo "   VERIFY FAILED: $V" >&2; exit 1; }
    echo "   $V" >&2
fi

{
    echo "command: bench/migrate.sh${ARGS[*]:+ ${ARGS[*]}}"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine: $(nproc) cores, $(uname -sr), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), load average now $(cut -d' ' -f1-3 /proc/loadavg)"
    python3 - "$GEN" <<'PY'
import json, sys
g = json.loads(sys.argv[1])
if g["small_files"]:
    print("small set: %d files in %d dirs, %.1f MiB, sizes median %.1f KiB, mean %.1f KiB, %d..%d bytes" % (
        g["small_files"], g["small_dirs"], g["small_bytes"] / 2**20, g["small_median"] / 1024,
        g["small_mean"] / 1024, g["small_min"], g["small_max"]))
if g["large_files"]:
    print("large set: %d files, %.2f GiB" % (g["large_files"], g["large_bytes"] / 2**30))
PY
    echo "everything on $FS under ${TMPDIR:-/tmp}; gateway fsync = $GW_FSYNC; daemon [tier]: ${TIER:-defaults}"
    echo "rclone $(rclone version 2>/dev/null | head -n1 | awk '{print $2}'): default = no flags; tuned = $RCLONE_TUNED"
    echo "source: $SOURCE"
    echo "results: $OUT"
    echo
    helper report "$OUT"
} | tee "${OUT%.jsonl}.txt"
