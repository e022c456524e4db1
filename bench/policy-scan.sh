#!/usr/bin/env bash
# Benchmarks the policy scan (`gpair policy run --dry-run` without the RPC: the example
# backend/examples/policy_scan.rs runs the same scan function) next to
# `find -printf '%s %T@ %A@'` on the same tree, in one run: entries per second, warm (metadata
# in the kernel's caches) and cold (`echo 3 > /proc/sys/vm/drop_caches` before each run).
# The scan does what find does (a readdir and a statx per entry) plus what a policy needs: the
# pin attribute of every file, the stub record of files whose blocks look released, and the
# rules. It runs with the daemon's walker threads (twice the cores, 2 to 16) and, for
# comparison, with one. Goal: >= 0.5x find, warm. See docs/benchmarks.md, "Policy scan".
#
# usage: bench/policy-scan.sh [--entries N] [--per-dir N] [--rounds K] [--out FILE.jsonl]
#                             [--keep] [--no-build]
#
#   --entries N   files in the tree (default 200000), with 1 in 8 older than the rule
#   --per-dir N   files per directory (default 100)
#   --rounds K    measured runs of each tool per mode (default 5; medians are reported)
#   --cold-rounds K  cold runs per tool (default 3; each drops the page cache: needs root)
#   --out FILE    JSON lines of every run (default bench/results/policy-scan-DATE.jsonl)
#   --keep        keep the tree
#   --no-build    use the example already built in release mode
set -euo pipefail

ENTRIES=200000
PER_DIR=100
ROUNDS=5
COLD_ROUNDS=3
OUT=""
KEEP=0
BUILD=1
while [ $# -gt 0 ]; do
    case $1 in
    --entries) ENTRIES=$2; shift 2 ;;
    --per-dir) PER_DIR=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --cold-rounds) COLD_ROUNDS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --no-build) BUILD=0; shift ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

if [ "$BUILD" = 1 ]; then
    echo "== building (release)" >&2
    cargo build --release -p gpair-backend --example policy_scan
fi
prepare_run policy-scan "$TARGET/release/examples/policy_scan"
SCAN=$WORK/bin/policy_scan
TREE=$WORK/tree
cleanup() {
    if [ "$KEEP" = 1 ]; then echo "kept $WORK" >&2; else rm -rf --one-file-system "$WORK"; fi
}
trap cleanup EXIT

echo "== making $ENTRIES files, $PER_DIR per directory, under $TREE" >&2
python3 - "$TREE" "$ENTRIES" "$PER_DIR" <<'PY'
import os, sys, time
root, n, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
now = time.time()
for i in range(n):
    d = os.path.join(root, "d%05d" % (i // per))
    if i % per == 0:
        os.makedirs(d, exist_ok=True)
    p = os.path.join(d, "f%03d.%s" % (i % per, "db" if i % 50 == 0 else "bin"))
    with open(p, "wb") as f:
        f.write(b"x" * (i % 7))
    age = (40 if i % 8 == 0 else 3) * 86400
    os.utime(p, (now - age, now - age))
PY

# timed CMD...: seconds the command took (its output discarded).
timed() {
    local t0=$EPOCHREALTIME
    "$@" >/dev/null
    awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.6f", b - a }'
}
run_find() { find "$TREE" -printf '%s %T@ %A@\n'; }
run_scan() { "$SCAN" "$TREE" 30; }
run_scan1() { "$SCAN" "$TREE" 30 1; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

record() { # MODE TOOL SECS
    printf '{"mode": "%s", "tool": "%s", "secs": %s, "entries": %s}\n' "$1" "$2" "$3" "$ENTRIES" >>"$OUT"
    awk -v m="$1" -v t="$2" -v s="$3" -v n="$ENTRIES" \
        'BEGIN { printf "   %-5s %-5s %8.3f s  %10.0f entries/s\n", m, t, s, n / s }' >&2
}

echo "== one scan's answer: $(run_scan)" >&2
run_find >/dev/null
echo "== warm, $ROUNDS rounds" >&2
for _ in $(seq 1 "$ROUNDS"); do
    record warm find "$(timed run_find)"
    record warm scan "$(timed run_scan)"
    record warm scan1 "$(timed run_scan1)"
done
if [ -w /proc/sys/vm/drop_caches ]; then
    echo "== cold, $COLD_ROUNDS rounds" >&2
    for _ in $(seq 1 "$COLD_ROUNDS"); do
        drop
        record cold find "$(timed run_find)"
        drop
        record cold scan "$(timed run_scan)"
        drop
        record cold scan1 "$(timed run_scan1)"
    done
else
    echo "== cold runs skipped: /proc/sys/vm/drop_caches is not writable (needs root)" >&2
fi

python3 - "$OUT" "$SOURCE" <<'PY' | tee "${OUT%.jsonl}.txt"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("source: %s" % sys.argv[2])
print()
print("| mode | find entries/s | scan entries/s | scan / find | scan, 1 thread | 1 thread / find |")
print("|---|---|---|---|---|---|")
verdict = None
for mode in ("warm", "cold"):
    sec = {t: [r["secs"] for r in rows if r["mode"] == mode and r["tool"] == t] for t in ("find", "scan", "scan1")}
    if not sec["find"] or not sec["scan"] or not sec["scan1"]:
        continue
    n = rows[0]["entries"]
    f, s = n / statistics.median(sec["find"]), n / statistics.median(sec["scan"])
    s1 = n / statistics.median(sec["scan1"])
    print("| %s | %.0f | %.0f | %.2f | %.0f | %.2f |" % (mode, f, s, s / f, s1, s1 / f))
    if mode == "warm":
        verdict = "%s policy scan warm: >= 0.5x find: %.2fx" % ("PASS" if s / f >= 0.5 else "MISS", s / f)
print()
print("Medians of the rounds; %d entries." % rows[0]["entries"])
print()
print("```")
print(verdict or "(no warm rounds)")
print("```")
PY
