#!/usr/bin/env bash
# Benchmarks metadata sync (gpair-backend → s3fs-gateway) on a tree of many small files, next
# to two peers run in the same invocation on the same tree: `find -printf` (the walk alone, an
# upper bound for a scan) and `rclone copy` into the same gateway (a generic tool uploading
# every file as an object). Prints a table of medians over the rounds and PASS/MISS for the
# goals. See docs/benchmarks.md, "Metadata sync".
#
# usage: bench/sync.sh [--entries N] [--rounds N] [--files-per-dir N] [--touch-pct P]
#                      [--rclone-entries N] [--rclone-transfers N] [--tree-dir DIR]
#                      [--fsync-counter perf|strace|none] [--out FILE.jsonl] [--perf] [--keep]
#
#   --entries N           entries in the tree, directories included (default 200000)
#   --files-per-dir N     files per directory (default 99: 2,000 dirs x 99 files = 200,000)
#   --rounds N            rounds (default 3); every round has a fresh gateway root, catalog
#                         and tree
#   --touch-pct P         phase 2 touches (utime) P % of the files (default 10)
#   --rclone-entries N    rclone copies the first N entries of the tree (whole directories;
#                         default min(entries, 20000); 0 skips rclone)
#   --rclone-transfers N  rclone --transfers and --checkers (default 16 = the daemon's
#                         sync.workers)
#   --tree-dir DIR        where the east trees are generated (default /dev/shm if it is a
#                         writable tmpfs, else TMPDIR; see docs/benchmarks.md)
#   --fsync-counter C     how fsync/fdatasync/syncfs calls are counted per phase: perf (kernel
#                         syscall tracepoints, no ptrace; the default when available), strace
#                         (`strace -f -c -w -p PID`: slows the traced processes down a lot,
#                         use only where perf cannot), none
#   --out FILE            JSON lines of every measurement (default
#                         bench/results/sync-DATE.jsonl; the table goes to the same name .txt)
#   --perf                also profile the daemon and the gateway during both phases with
#                         `perf record -g` (reports next to the results, FILE-perf-*.txt)
#   --keep                keep the work directory and trees (logs, counters) for inspection
#
# Environment: TMPDIR (gateway roots and catalogs; must support user xattrs),
# BENCH_RUST_LOG (RUST_LOG for the daemon and the gateway, default "warn"), CARGO_TARGET_DIR.
set -euo pipefail

ENTRIES=200000
FILES_PER_DIR=99
ROUNDS=3
TOUCH_PCT=10
RCLONE_ENTRIES=""
RCLONE_TRANSFERS=16
TREE_DIR=""
OUT=""
COUNTER=""
PERF=0
KEEP=0
ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --entries) ENTRIES="$2"; shift 2 ;;
        --files-per-dir) FILES_PER_DIR="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --touch-pct) TOUCH_PCT="$2"; shift 2 ;;
        --rclone-entries) RCLONE_ENTRIES="$2"; shift 2 ;;
        --rclone-transfers) RCLONE_TRANSFERS="$2"; shift 2 ;;
        --tree-dir) TREE_DIR="$2"; shift 2 ;;
        --fsync-counter) COUNTER="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --perf) PERF=1; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$RCLONE_ENTRIES" ]; then
    RCLONE_ENTRIES=$((ENTRIES < 20000 ? ENTRIES : 20000))
fi
case "$COUNTER" in ""|perf|strace|none) ;; *) echo "--fsync-counter: perf, strace or none" >&2; exit 2 ;; esac

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
LOG_LEVEL=${BENCH_RUST_LOG:-warn}
GW=$TARGET/release/s3fs-gateway
DAEMON=$TARGET/release/gpair-backend
GPAIR=$TARGET/release/gpair
TCK=$(getconf CLK_TCK)
SYNC_EVENTS=syscalls:sys_enter_fsync,syscalls:sys_exit_fsync,syscalls:sys_enter_fdatasync,syscalls:sys_exit_fdatasync,syscalls:sys_enter_syncfs,syscalls:sys_exit_syncfs

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
perf_tracepoints_work() {
    command -v perf >/dev/null 2>&1 &&
        perf record -q -e "$SYNC_EVENTS" -o /dev/null -- true >/dev/null 2>&1
}
need python3 python3
[ "$RCLONE_ENTRIES" -gt 0 ] && need rclone rclone
[ "$PERF" = 1 ] && need perf linux-perf
case "$COUNTER" in
    "")
        if perf_tracepoints_work; then
            COUNTER=perf
        else
            need strace strace
            echo "== perf cannot record syscall tracepoints here: counting fsyncs with strace -p" \
                "(which slows the traced processes down: the timings of this run are not comparable)" >&2
            COUNTER=strace
        fi ;;
    perf)
        perf_tracepoints_work || { echo "perf cannot record the syscalls:sys_enter_fsync tracepoints here" >&2; exit 1; } ;;
    strace) need strace strace ;;
esac
if [ "$COUNTER" = strace ] && ! strace -qq -e trace=fsync -o /dev/null true 2>/dev/null; then
    echo "== strace cannot trace here (ptrace not permitted?): the fsync columns are skipped" >&2
    COUNTER=none
fi

if [ -z "$TREE_DIR" ]; then
    if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] && [ -w /dev/shm ]; then
        TREE_DIR=/dev/shm
    else
        TREE_DIR=${TMPDIR:-/tmp}
    fi
fi

echo "== building (release)" >&2
cargo build --release -p s3fs-gateway -p gpair-backend -p gpair-cli

# What was measured: the commit, and whether the working tree differed from it.
SOURCE="git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY=$(git status --porcelain --untracked-files=no -- s3fs-gateway backend gpair-cli proto Cargo.toml Cargo.lock 2>/dev/null | awk '{print $2}' | tr '\n' ' ')
[ -n "$DIRTY" ] && SOURCE="$SOURCE + uncommitted changes in: $DIRTY"
STAMP=$(date +%Y%m%d-%H%M%S)
if [ -z "$OUT" ]; then
    mkdir -p "$REPO/bench/results"
    OUT=$REPO/bench/results/sync-$STAMP.jsonl
fi
: >"$OUT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sync-bench.XXXXXX")
TREES=$(mktemp -d "$TREE_DIR/sync-bench-tree.XXXXXX")
AK=AKGPAIRBENCH0000001
SK=bench-secret-key-not-a-secret-00000000001
BUCKET=bench
GW_PID=""
D_PID=""
BG_PIDS=()     # counters and profilers of the current phase

cleanup() {
    stop_bg
    stop "$D_PID"; D_PID=""
    stop "$GW_PID"; GW_PID=""
    if [ "$KEEP" = 1 ]; then
        echo "== kept $WORK and $TREES" >&2
    else
        rm -rf "$WORK" "$TREES"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helper (Python)
cat >"$WORK/helper.py" <<'PY'
"""Tree generation, timed phases and the report of bench/sync.sh."""
import json, os, resource, statistics, subprocess, sys, time


def gen(root, entries, per_dir):
    """entries = dirs + files; directories d00000.. each with up to per_dir files."""
    os.makedirs(root, exist_ok=True)
    ndirs = -(-entries // (per_dir + 1))
    files = entries - ndirs
    width = max(4, len(str(ndirs - 1)))
    body = b"gpair!\n"
    made = 0
    for d in range(ndirs):
        dp = os.path.join(root, "d%0*d" % (width, d))
        os.mkdir(dp)
        n = min(per_dir, files - made)
        for f in range(n):
            fd = os.open(os.path.join(dp, "f%02d" % f), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, body)
            os.close(fd)
        made += n
    print(json.dumps({"dirs": ndirs, "files": files, "entries": ndirs + files, "width": width}))


def status(gpair, sock, name):
    r = subprocess.run([gpair, "--backend", sock, "--output", "json", "sync", "status", name],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("gpair sync status: " + r.stderr.strip())
    return json.loads(r.stdout)[0]


def alive(pid):
    try:
        os.kill(int(pid), 0)
        return True
    except OSError:
        return False


def wait_until(gpair, sock, name, pid, done, limit):
    """Polls `sync status` every 100 ms until done(st); returns (st, first_time_scan_done)."""
    deadline = time.monotonic() + limit
    scan_done_at = None
    max_pending = 0
    while True:
        st = status(gpair, sock, name)
        now = time.monotonic()
        max_pending = max(max_pending, st.get("pending", 0))
        if scan_done_at is None and st.get("initial_sync_done"):
            scan_done_at = now
        if done(st):
            return st, now, scan_done_at, max_pending
        if not alive(pid):
            raise RuntimeError("gpair-backend exited")
        if now > deadline:
            raise RuntimeError("timed out after %ds; last status: %s" % (limit, json.dumps(st)))
        time.sleep(0.1)


def phase1(gpair, sock, name, pid, expected, bind_args):
    t0 = time.monotonic()
    r = subprocess.run([gpair, "--backend", sock] + bind_args, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("gpair bind: " + r.stderr.strip())
    st, t1, scan_done, max_pending = wait_until(
        gpair, sock, name, pid,
        lambda s: s.get("initial_sync_done") and s.get("pending", 1) == 0, 7200)
    secs = t1 - t0
    print(json.dumps({"secs": secs, "entries": expected, "entries_per_s": expected / secs,
                      "scan_secs": (scan_done - t0) if scan_done else None,
                      "max_pending": max_pending, "status": st}))


def phase2(gpair, sock, name, pid, root, pct):
    step = max(1, round(100 / pct))
    before = status(gpair, sock, name)
    if before.get("pending", 0) != 0:
        raise RuntimeError("phase 2 starts with pending work: %s" % json.dumps(before))
    paths = []
    k = 0
    for d in sorted(os.listdir(root)):
        dp = os.path.join(root, d)
        for f in sorted(os.listdir(dp)):
            if k % step == 0:
                paths.append(os.path.join(dp, f))
            k += 1
    n = len(paths)
    t0 = time.monotonic()
    for p in paths:
        os.utime(p)
    t_touched = time.monotonic()
    want = before.get("applied", 0) + n
    st, t1, _, max_pending = wait_until(
        gpair, sock, name, pid,
        lambda s: s.get("applied", 0) >= want and s.get("pending", 1) == 0, 3600)
    secs = t1 - t0
    print(json.dumps({"secs": secs, "entries": n, "entries_per_s": n / secs,
                      "touch_secs": t_touched - t0, "lag_after_last_touch_secs": t1 - t_touched,
                      "applied_extra": st.get("applied", 0) - want,
                      "max_pending": max_pending, "status": st}))


def timed(argv):
    """Runs argv with stdout to /dev/null; prints wall seconds and the child's CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    secs = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (argv[0], r.returncode, r.stderr[-2000:]))
    print(json.dumps({"secs": secs, "client_cpu_s": cpu}))


# ------------------------------------------------------------------------ report

ROWS = [("initial", "ours: initial sync"), ("incremental", "ours: incremental (touch)"),
        ("find", "find -printf (walk only)"), ("rclone", "rclone copy")]


def fmt(x):
    if x is None:
        return "-"
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1000:
        return "%.0f" % x
    if a >= 100:
        return "%.1f" % x
    if a >= 1:
        return "%.2f" % x
    return "%.3g" % x


def med(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None
    m = statistics.median(vals)
    spread = (max(vals) - min(vals)) / 2 / m * 100 if m else 0.0
    return m, spread


def cell(vals, spread=True):
    m, s = med(vals)
    if m is None:
        return "-"
    return fmt(m) + (" ±%.0f%%" % s if spread and len(vals) > 1 else "")


def report(path):
    lines = [json.loads(l) for l in open(path) if l.strip()]
    by = {}
    for l in lines:
        by.setdefault(l["what"], []).append(l)

    def per_k(l, key):
        v = l.get(key)
        return None if v is None else v * 1000.0 / l["entries"]

    def cpu_us(l):
        parts = [l.get(k) for k in ("daemon_cpu_s", "gateway_cpu_s", "client_cpu_s")]
        parts = [p for p in parts if p is not None]
        return sum(parts) * 1e6 / l["entries"] if parts else None

    out = []
    out.append("| phase | entries | secs | entries/s | daemon fsyncs /1000 | gateway fsyncs /1000 "
               "| daemon s in fsync | gateway s in fsync "
               "| daemon CPU s | gateway CPU s | client CPU s | total CPU µs/entry |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for what, label in ROWS:
        ls = by.get(what)
        if not ls:
            continue
        col = lambda f: [f(l) for l in ls]
        out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            label, cell(col(lambda l: l["entries"]), False), cell(col(lambda l: l["secs"])),
            cell(col(lambda l: l["entries_per_s"])),
            cell(col(lambda l: per_k(l, "daemon_fsyncs"))),
            cell(col(lambda l: per_k(l, "gateway_fsyncs"))),
            cell(col(lambda l: l.get("daemon_fsync_s"))),
            cell(col(lambda l: l.get("gateway_fsync_s"))),
            cell(col(lambda l: l.get("daemon_cpu_s"))), cell(col(lambda l: l.get("gateway_cpu_s"))),
            cell(col(lambda l: l.get("client_cpu_s"))), cell(col(cpu_us))))
    out.append("")
    out.append("Medians over %d round(s); ±x%% = half the min-max spread relative to the median." %
               max(len(v) for v in by.values()))
    out.append("")

    def m(what, key="entries_per_s"):
        return med([l.get(key) for l in by.get(what, [])])[0]

    ini, inc, fnd, rcl = m("initial"), m("incremental"), m("find"), m("rclone")
    extra = {}
    for what in ("initial", "incremental"):
        for key in ("scan_secs", "lag_after_last_touch_secs", "max_pending"):
            v = m(what, key)
            if v is not None:
                extra["%s %s" % (what, key)] = v
    if extra:
        out.append("Details (medians): " + ", ".join("%s %s" % (k, fmt(v)) for k, v in extra.items()))
        out.append("")
    out.append("Ratios (entries/s):")
    out.append("")
    out.append("```")
    for a, an in ((ini, "initial"), (inc, "incremental")):
        if a is None:
            continue
        if rcl:
            out.append("ours %-11s / rclone = %s / %s = %.2f" % (an, fmt(a), fmt(rcl), a / rcl))
        if fnd:
            out.append("ours %-11s / find   = %s / %s = %.3f" % (an, fmt(a), fmt(fnd), a / fnd))
    out.append("```")
    out.append("")
    out.append("Goals:")
    out.append("")
    out.append("```")
    if inc is not None:
        out.append("%s incremental >= 20000 entries/s: %s entries/s" % (
            "PASS" if inc >= 20000 else "MISS", fmt(inc)))
    fs = [(w, med([per_k(l, "daemon_fsyncs") for l in by.get(w, [])])[0]) for w in ("initial", "incremental")]
    fs = [(w, v) for w, v in fs if v is not None]
    if fs:
        ok = all(v <= 100 for _, v in fs)
        out.append("%s group commits: daemon fsyncs per 1000 entries <= 100 (one per entry would be 1000): %s" % (
            "PASS" if ok else "MISS", ", ".join("%s %s" % (w, fmt(v)) for w, v in fs)))
    else:
        out.append("SKIP group commits: fsyncs were not counted (--fsync-counter none)")
    out.append("```")
    print("\n".join(out))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    try:
        if cmd == "gen":
            gen(args[0], int(args[1]), int(args[2]))
        elif cmd == "phase1":
            phase1(args[0], args[1], args[2], args[3], int(args[4]), args[5:])
        elif cmd == "phase2":
            phase2(args[0], args[1], args[2], args[3], args[4], float(args[5]))
        elif cmd == "timed":
            timed(args)
        elif cmd == "report":
            report(args[0])
        else:
            raise SystemExit("unknown helper command " + cmd)
    except RuntimeError as e:
        print("sync bench: %s" % e, file=sys.stderr)
        sys.exit(1)
PY
helper() { python3 "$WORK/helper.py" "$@"; }

# ---------------------------------------------------------------- processes

# ---------------------------------------------------------------- per-phase measurements

# counter_start NAME PID: counts PID's fsync/fdatasync/syncfs calls (all threads, also those
# started later) until phase_end.
counter_start() {
    local name=$1 pid=$2
    [ -n "$pid" ] || return 0
    case "$COUNTER" in
        perf)
            perf record -q -e "$SYNC_EVENTS" -p "$pid" -o "$PD/$name.sync.data" \
                >/dev/null 2>"$PD/$name.sync.log" &
            BG_PIDS+=($!) ;;
        strace)
            strace -f -c -w -e trace=fsync,fdatasync,syncfs -p "$pid" -o "$PD/$name.strace" \
                2>"$PD/$name.strace.log" &
            BG_PIDS+=($!) ;;
    esac
}
# counter_result NAME: "CALLS SECONDS" (seconds inside the calls, summed over threads, so it
# can exceed the wall time), or "null null".
counter_result() {
    local name=$1
    case "$COUNTER" in
        perf)
            if [ -s "$PD/$name.sync.data" ]; then
                perf script -i "$PD/$name.sync.data" -F tid,time,event 2>/dev/null | awk '
                    { tid = $1; t = $2 + 0 }
                    /sys_enter_/ { n++; start[tid] = t }
                    /sys_exit_/ && (tid in start) { s += t - start[tid]; delete start[tid] }
                    END { printf "%d %.3f\n", n, s }'
            else
                echo "null null"
            fi ;;
        strace)
            if [ -s "$PD/$name.strace" ]; then
                awk '$NF ~ /^(fsync|fdatasync|syncfs)$/ { s += $2; n += $4 } END { printf "%d %.3f\n", n, s }' \
                    "$PD/$name.strace"
            else
                echo "null null"
            fi ;;
        *) echo "null null" ;;
    esac
}
# profile_start NAME PID: perf record -g of PID until phase_end (--perf only).
profile_start() {
    [ "$PERF" = 1 ] && [ -n "$2" ] || return 0
    perf record -q -F 499 -g -p "$2" -o "$PD/$1.prof.data" >/dev/null 2>"$PD/$1.prof.log" &
    BG_PIDS+=($!)
}

# phase_begin WHAT: starts the counters (and profilers) on the daemon and the gateway.
phase_begin() {
    PHASE=$1
    PD=$RD/$PHASE
    mkdir -p "$PD"
    sync                       # earlier writeback must not land in this phase
    counter_start daemon "$D_PID"
    counter_start gateway "$GW_PID"
    if [ "$PHASE" = initial ] || [ "$PHASE" = incremental ]; then
        profile_start daemon "$D_PID"
        profile_start gateway "$GW_PID"
    fi
    [ "${#BG_PIDS[@]}" -gt 0 ] && sleep 1   # let them attach
    CPU0="$(cpu_s "$D_PID") $(cpu_s "$GW_PID")"
}
# phase_end RESULT_JSON: stops the counters, appends the phase's JSON line to $OUT.
phase_end() {
    local result=$1
    local cpu1
    cpu1="$(cpu_s "$D_PID") $(cpu_s "$GW_PID")"
    stop_bg
    local dsync gsync
    dsync=$(counter_result daemon)
    gsync=$(counter_result gateway)
    if [ "$PERF" = 1 ]; then
        local n
        for n in daemon gateway; do
            [ -s "$PD/$n.prof.data" ] || continue
            perf report -i "$PD/$n.prof.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
                | grep -v '^$' | head -n 600 >"${OUT%.jsonl}-perf-r$ROUND-$PHASE-$n.txt" || true
            echo "   perf report: ${OUT%.jsonl}-perf-r$ROUND-$PHASE-$n.txt" >&2
        done
    fi
    python3 - "$PHASE" "$ROUND" "$result" "$CPU0" "$cpu1" "$dsync" "$gsync" \
        "$(cut -d' ' -f1-3 /proc/loadavg)" "$TREE_FS" "$COUNTER" >>"$OUT" <<'PY'
import json, sys
what, rnd, result, c0, c1, dsync, gsync, load, treefs, counter = sys.argv[1:]
r = json.loads(result)
r.pop("status", None)
def delta(i):
    a, b = c0.split()[i], c1.split()[i]
    return None if "null" in (a, b) else round(float(b) - float(a), 2)
num = lambda v, f: None if v == "null" else f(v)
dn, ds = dsync.split()
gn, gs = gsync.split()
line = {"bench": "sync", "round": int(rnd), "what": what}
line.update(r)
line.update({"daemon_cpu_s": delta(0), "gateway_cpu_s": delta(1),
             "daemon_fsyncs": num(dn, int), "daemon_fsync_s": num(ds, float),
             "gateway_fsyncs": num(gn, int), "gateway_fsync_s": num(gs, float),
             "fsync_counter": counter, "loadavg": load, "tree_fs": treefs})
print(json.dumps(line))
PY
}
show() { # show FORMAT: one line about the phase just recorded (last line of $OUT)
    python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print(sys.argv[2] % {k: float("nan") if v is None else v for k, v in r.items()})' "$OUT" "$1" >&2
}

TREE_FS=$(df --output=fstype "$TREES" | tail -n1)
echo "== $ROUNDS rounds, $ENTRIES entries ($FILES_PER_DIR files per dir), touch $TOUCH_PCT %, rclone on $RCLONE_ENTRIES entries, fsyncs counted with $COUNTER; trees in $TREES ($TREE_FS), roots in $WORK; results in $OUT" >&2

for ROUND in $(seq 1 "$ROUNDS"); do
    RD=$WORK/round-$ROUND
    TREE=$TREES/round-$ROUND
    mkdir -p "$RD/root/$BUCKET"

    echo "== round $ROUND: generating the tree, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    GEN=$(helper gen "$TREE" "$ENTRIES" "$FILES_PER_DIR")
    N=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["entries"])' "$GEN")
    WIDTH=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["width"])' "$GEN")

    # Gateway: fresh root, one backend key, fsync on.
    (umask 077; printf '[[keys]]\naccess_key = "%s"\nsecret_key = "%s"\nrole = "backend"\n' \
        "$AK" "$SK" >"$RD/credentials.toml")
    chmod 600 "$RD/credentials.toml"
    printf 'credentials = "%s"\nfsync = true\n' "$RD/credentials.toml" >"$RD/gateway.toml"
    start gateway "$RD" "$GW" --root "$RD/root" --listen 127.0.0.1:0 --config "$RD/gateway.toml"
    GW_PID=$PID
    ADDR=$(wait_line "$GW_PID" "$RD/gateway.stdout" 's#^s3fs-gateway listening on http://##p' s3fs-gateway)
    ENDPOINT=http://$ADDR

    # Daemon: fresh catalog, no periodic reconciliation.
    SOCK=$RD/backend.sock
    cat >"$RD/backend.toml" <<TOML
cluster_id = "LC_111"
catalog = "$RD/catalog"
socket = "$SOCK"

[sync]
reconcile_interval_secs = 0
TOML
    start daemon "$RD" "$DAEMON" --config "$RD/backend.toml"
    D_PID=$PID
    wait_line "$D_PID" "$RD/daemon.stdout" 's#^gpair-backend listening on ##p' gpair-backend >/dev/null
    GPAIR_SECRET_KEY=$SK "$GPAIR" --backend "$SOCK" gpeer add west --endpoint "$ENDPOINT" \
        --cluster-id LC_222 --access-key "$AK" >/dev/null
    echo "== round $ROUND: gateway $ENDPOINT (pid $GW_PID), daemon pid $D_PID, tree $N entries" >&2

    # Peer: the walk alone.
    phase_begin find
    R=$(helper timed find "$TREE" -printf '%p %s %m %U %G %T@\n')
    R=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); n=int(sys.argv[2]); r.update(entries=n, entries_per_s=n/r["secs"]); print(json.dumps(r))' "$R" "$N")
    phase_end "$R"
    show '   find:        %(entries)d entries in %(secs).2f s = %(entries_per_s).0f entries/s'

    # Phase 1: initial sync, from `bind` until initial_sync_done and nothing pending.
    phase_begin initial
    R=$(helper phase1 "$GPAIR" "$SOCK" sync1 "$D_PID" "$N" \
        bind sync1 --gpeer west --local "$TREE" --remote "$BUCKET/sync")
    phase_end "$R"
    show '   initial:     %(entries)d entries in %(secs).2f s = %(entries_per_s).0f entries/s (scan done after %(scan_secs).2f s); daemon %(daemon_fsyncs)s fsyncs, %(daemon_cpu_s)s CPU-s; gateway %(gateway_fsyncs)s fsyncs (%(gateway_fsync_s)s s inside), %(gateway_cpu_s)s CPU-s'
    WEST=$(find "$RD/root/$BUCKET/sync" -mindepth 1 | wc -l)
    [ "$WEST" = "$N" ] || echo "   WARNING: west holds $WEST entries under sync/, expected $N" >&2

    # Phase 2: touch TOUCH_PCT % of the files; until all of them are applied.
    sleep 1
    phase_begin incremental
    R=$(helper phase2 "$GPAIR" "$SOCK" sync1 "$D_PID" "$TREE" "$TOUCH_PCT")
    phase_end "$R"
    show '   incremental: %(entries)d entries in %(secs).2f s = %(entries_per_s).0f entries/s (touching took %(touch_secs).2f s, lag after the last touch %(lag_after_last_touch_secs).2f s); daemon %(daemon_fsyncs)s fsyncs, %(daemon_cpu_s)s CPU-s; gateway %(gateway_fsyncs)s fsyncs (%(gateway_fsync_s)s s inside), %(gateway_cpu_s)s CPU-s'
    stop "$D_PID"; D_PID=""

    # Peer: rclone copy of (a subset of) the same tree into another prefix of the same gateway.
    if [ "$RCLONE_ENTRIES" -gt 0 ]; then
        NDIRS=$(( (RCLONE_ENTRIES + FILES_PER_DIR) / (FILES_PER_DIR + 1) ))
        python3 - "$NDIRS" "$WIDTH" >"$RD/rclone.filter" <<'PY'
import sys
n, w = int(sys.argv[1]), int(sys.argv[2])
for d in range(n):
    print("+ /d%0*d/**" % (w, d))
print("- **")
PY
        # Entries of the subset: its directories and their files (rclone uploads the files;
        # the directories appear on west as their parents).
        RFILES=$(find "$TREE" -mindepth 2 -type f | awk -F/ -v n="$NDIRS" '{ if (substr($(NF-1), 2) + 0 < n) c++ } END { print c + 0 }')
        phase_begin rclone
        R=$(helper timed env -u AWS_CA_BUNDLE \
            RCLONE_CONFIG="$RD/no-rclone.conf" \
            RCLONE_CONFIG_WEST_TYPE=s3 RCLONE_CONFIG_WEST_PROVIDER=Other RCLONE_CONFIG_WEST_ENV_AUTH=false \
            RCLONE_CONFIG_WEST_ACCESS_KEY_ID="$AK" RCLONE_CONFIG_WEST_SECRET_ACCESS_KEY="$SK" \
            RCLONE_CONFIG_WEST_ENDPOINT="$ENDPOINT" RCLONE_CONFIG_WEST_REGION=us-east-1 \
            RCLONE_CONFIG_WEST_FORCE_PATH_STYLE=true \
            rclone copy "$TREE" "west:$BUCKET/rclone" --filter-from "$RD/rclone.filter" \
            --transfers "$RCLONE_TRANSFERS" --checkers "$RCLONE_TRANSFERS" \
            --retries 1 --low-level-retries 1 --s3-no-check-bucket)
        R=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); n=int(sys.argv[2]); r.update(entries=n, files=int(sys.argv[3]), entries_per_s=n/r["secs"]); print(json.dumps(r))' "$R" "$((NDIRS + RFILES))" "$RFILES")
        phase_end "$R"
        show '   rclone:      %(entries)d entries (%(files)d files) in %(secs).2f s = %(entries_per_s).0f entries/s; gateway %(gateway_fsyncs)s fsyncs (%(gateway_fsync_s)s s inside), %(gateway_cpu_s)s CPU-s'
        WEST=$(find "$RD/root/$BUCKET/rclone" -type f | wc -l)
        [ "$WEST" = "$RFILES" ] || echo "   WARNING: west holds $WEST objects under rclone/, expected $RFILES" >&2
    fi
    stop "$GW_PID"; GW_PID=""
    # The tree (tmpfs by default) goes now; the gateway root stays until the end: deleting
    # 200,000 inodes on the file system the next round's gateway allocates from would make
    # that round pay for it (ext4 without a journal skips recently deleted inodes, see
    # docs/benchmarks.md).
    [ "$KEEP" = 1 ] || rm -rf "$TREE"
done

{
    echo "command: bench/sync.sh${ARGS[*]:+ ${ARGS[*]}}"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine: $(nproc) cores, $(uname -sr), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), load average now $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "tree: $ENTRIES entries, $FILES_PER_DIR files per directory, on $TREE_FS; gateway roots and catalogs on $(df --output=fstype "$WORK" | tail -n1); touch $TOUCH_PCT %; rclone on $RCLONE_ENTRIES entries, --transfers/--checkers $RCLONE_TRANSFERS; fsyncs counted with $COUNTER"
    echo "source: $SOURCE"
    echo "results: $OUT"
    echo
    helper report "$OUT"
} | tee "${OUT%.jsonl}.txt"
