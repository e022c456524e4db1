#!/usr/bin/env bash
# Benchmarks reads through gpair-mount next to peers run in the same invocation, against one
# s3fs-gateway and the same objects: a stock s3fs-fuse mount and `rclone mount` (defaults, and
# tuned) of the bucket, and a plain GET of the object (curl, presigned URL). The large and the
# small files are offloaded by gpair first, so their west objects (PREFIX/relative/path) hold
# the data the peers read. Four measurements:
#
#   1. cold sequential read (dd bs=1M, open to EOF) of the offloaded large file: MB/s;
#      goal gpair >= 3x max(s3fs, rclone)
#   2. cold time to first byte of that file (open + 1-byte O_DIRECT read), median of the
#      samples: ms; goal gpair < 5 ms. The floor next to it: a cold ranged GET of byte 0 (curl's
#      time to the first byte)
#   3. cold read of the offloaded small files (open, read to EOF, close each): files/s; next to
#      it, plain GETs of the same objects over one connection (python http.client)
#   4. warm re-read of a local (not offloaded) file of the same size through gpair-mount (FUSE
#      passthrough; --no-passthrough also shown) and straight from the share: MB/s; goal >= 0.9x
#
# "Cold" means a fresh mount of the tool (no FUSE-side cache survives) and `sync; echo 3 >
# /proc/sys/vm/drop_caches` right before the read (so the gateway reads its disk too). Prints a
# table of medians with ratios and PASS/MISS for the goals. Needs root, /dev/fuse, s3fs, rclone,
# curl, python3.
#
# usage: bench/mount.sh [--rounds K] [--large-mib N] [--small-files N] [--ttfb-samples N]
#                       [--local-reps N] [--parts LIST] [--rclone-tuned "FLAGS"]
#                       [--out FILE.jsonl] [--keep] [--no-build]
#
#   --rounds K             rounds of parts 1, 3 and 4 (default 3; medians are reported); every
#                          round reads once with each tool, in an order that rotates per round
#   --large-mib N          size of the offloaded large file and of the local one (default 1024)
#   --small-files N        offloaded small files, 4..64 KiB uniform, 100 per dir (default 1000)
#   --ttfb-samples N       samples of part 2 per tool, each from a fresh mount (default 10)
#   --local-reps N         measured warm reads per tool and round in part 4, interleaved
#                          (default 5; one read of 1 GiB from the page cache takes ~70 ms)
#   --parts LIST           which parts to run, comma separated, of: large, ttfb, small, local
#                          (default all)
#   --rclone-tuned "FLAGS" the tuned rclone mount's flags (default "--vfs-read-chunk-size 16M
#                          --buffer-size 64M"); both rclone variants run with
#                          --vfs-cache-mode off
#   --out FILE             JSON lines of every measurement (default
#                          bench/results/mount-DATE.jsonl; the table goes to the same name .txt)
#   --keep                 keep the work directory (data, gateway root, catalog, mount logs)
#   --no-build             use the release binaries already in the target directory
#
# Everything (the share, the gateway root, the catalog, mount points, logs) lives in one work
# directory under TMPDIR (default /tmp), which must have user xattrs and hole punching (ext4,
# xfs, btrfs). Every mount is undone on exit, failure included.
#
# Environment: TMPDIR, BENCH_RUST_LOG (RUST_LOG for the daemon and the gateway, default "warn"),
# BENCH_MOUNT_LOG (RUST_LOG for gpair-mount, default "info": its exit line counts the ranged
# GETs), CARGO_TARGET_DIR.
set -euo pipefail

ROUNDS=3
LARGE_MIB=1024
SMALL_FILES=1000
TTFB_SAMPLES=10
LOCAL_REPS=5
PARTS_LIST="large,ttfb,small,local"
RCLONE_TUNED="--vfs-read-chunk-size 16M --buffer-size 64M"
OUT=""
KEEP=0
BUILD=1
ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --large-mib) LARGE_MIB="$2"; shift 2 ;;
        --small-files) SMALL_FILES="$2"; shift 2 ;;
        --ttfb-samples) TTFB_SAMPLES="$2"; shift 2 ;;
        --local-reps) LOCAL_REPS="$2"; shift 2 ;;
        --parts) PARTS_LIST="$2"; shift 2 ;;
        --rclone-tuned) RCLONE_TUNED="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,50p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
for n in "$ROUNDS" "$LARGE_MIB" "$SMALL_FILES" "$TTFB_SAMPLES" "$LOCAL_REPS"; do
    [[ $n =~ ^[0-9]+$ ]] || { echo "not a number: $n" >&2; exit 2; }
done
[ "$ROUNDS" -ge 1 ] && [ "$LARGE_MIB" -ge 1 ] && [ "$SMALL_FILES" -ge 1 ] && [ "$LOCAL_REPS" -ge 1 ] || {
    echo "--rounds, --large-mib, --small-files and --local-reps must be at least 1" >&2; exit 2; }
IFS=, read -r -a PARTS <<<"$PARTS_LIST"
for p in "${PARTS[@]}"; do
    case "$p" in large|ttfb|small|local) ;; *) echo "--parts: large, ttfb, small, local; not $p" >&2; exit 2 ;; esac
done
want() { [[ ",$PARTS_LIST," == *",$1,"* ]]; }

[ "$(id -u)" = 0 ] || { echo "run as root: the bench drops the page cache and mounts FUSE" >&2; exit 1; }
[ -c /dev/fuse ] || { echo "/dev/fuse is missing" >&2; exit 1; }

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
LOG_LEVEL=${BENCH_RUST_LOG:-warn}
MOUNT_LOG=${BENCH_MOUNT_LOG:-info}
HELPER=$REPO/bench/mount_helper.py
MHELPER=$REPO/bench/migrate_helper.py
TCK=$(getconf CLK_TCK)

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
need python3 python3
need s3fs s3fs
need rclone rclone
need curl curl
need fusermount3 fuse3
need mountpoint util-linux

if [ "$BUILD" = 1 ]; then
    echo "== building (release)" >&2
    cargo build --release --bins -p s3fs-gateway -p gpair-backend -p gpair-cli
fi

prepare_run mount "$TARGET/release/gpair-mount" "$TARGET/release/s3fs-gateway" \
    "$TARGET/release/gpair-backend" "$TARGET/release/gpair"
GW=$WORK/bin/s3fs-gateway
DAEMON=$WORK/bin/gpair-backend
GPAIR=$WORK/bin/gpair
GMOUNT=$WORK/bin/gpair-mount
SHARE=$WORK/share          # the east share (bound to the gpair)
ROOT=$WORK/root            # the gateway root
MNT=$WORK/mnt              # one mount point per tool
LOGS=$WORK/logs            # one stdout/stderr pair per mount and per measured command
AK=AKGPAIRBENCH0000001
SK=bench-secret-key-not-a-secret-00000000001
BUCKET=bench
PREFIX=gpair
NAME=mnt
GW_PID=""
D_PID=""
M_PID=""                   # the FUSE process of the mount in use
M_TOOL=""
M_LOG=""
SEQ=0

unmount_all() {
    stop "$M_PID"; M_PID=""
    local mp
    for mp in "$MNT"/*; do
        [ -d "$mp" ] || continue
        if mountpoint -q "$mp"; then
            echo "== $mp still mounted; detaching it" >&2
            umount -l "$mp" 2>/dev/null || fusermount3 -uz "$mp" 2>/dev/null || true
        fi
    done
}

cleanup() {
    set +e
    unmount_all
    stop "$D_PID"; D_PID=""
    stop "$GW_PID"; GW_PID=""
    if [ "$KEEP" = 1 ]; then
        echo "== kept $WORK" >&2
    elif grep -q " $WORK/" /proc/self/mounts; then
        echo "== something is still mounted below $WORK; not deleting it" >&2
    else
        rm -rf --one-file-system "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM


logs_tail() {
    echo "--- daemon log (tail) ---" >&2; tail -n 20 "$WORK/daemon.stderr" >&2 || true
    echo "--- gateway log (tail) ---" >&2; tail -n 20 "$WORK/gateway.stderr" >&2 || true
    if [ -n "$M_LOG" ]; then
        echo "--- $M_TOOL log (tail) ---" >&2; tail -n 30 "$M_LOG.stderr" >&2 || true
    fi
}
die() { echo "== $*" >&2; logs_tail; exit 1; }

# ------------------------------------------------------------------ data, gateway, daemon

FS=$(df --output=fstype "$WORK" | tail -n1)
echo "== $ROUNDS rounds; large file $LARGE_MIB MiB; $SMALL_FILES small files; $TTFB_SAMPLES TTFB samples; parts $PARTS_LIST; work dir $WORK ($FS); results in $OUT" >&2
echo "== generating the data, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
GEN=$(helper gen "$SHARE" "$LARGE_MIB" "$SMALL_FILES")
echo "   $GEN" >&2
LARGE=$(jget "$GEN" large_key)
LOCAL=$(jget "$GEN" local_key)
LARGE_BYTES=$(jget "$GEN" large_bytes)
SMALL_BYTES=$(jget "$GEN" small_bytes)
sync

mkdir -p "$ROOT/$BUCKET" "$ROOT/.gpair-gateway" "$MNT" "$LOGS"
(umask 077; printf '[[keys]]\naccess_key = "%s"\nsecret_key = "%s"\nrole = "backend"\n' \
    "$AK" "$SK" >"$ROOT/.gpair-gateway/credentials.toml")
printf 'credentials = "%s"\n' "$ROOT/.gpair-gateway/credentials.toml" >"$WORK/gateway.toml"
start gateway "$WORK" "$GW" --root "$ROOT" --listen 127.0.0.1:0 --config "$WORK/gateway.toml"
GW_PID=$PID
ADDR=$(wait_line "$GW_PID" "$WORK/gateway.stdout" 's#^s3fs-gateway listening on http://##p' s3fs-gateway)
ENDPOINT=http://$ADDR

SOCK=$WORK/backend.sock
printf 'cluster_id = "LC_111"\ncatalog = "%s"\nsocket = "%s"\n\n[sync]\nreconcile_interval_secs = 0\n' \
    "$WORK/catalog" "$SOCK" >"$WORK/backend.toml"
start_bound_daemon "$WORK/backend.toml" "$BUCKET/$PREFIX"
echo "== gateway $ENDPOINT (pid $GW_PID), daemon pid $D_PID; waiting for the metadata sync" >&2
S=$(python3 "$MHELPER" settle "$GPAIR" "$SOCK" "$NAME" "$D_PID" 3600)
echo "   settled: $S" >&2

echo "== offloading large/ and small/ (local/ stays local)" >&2
"${G[@]}" --output json migrate -r --wait "$SHARE/large" "$SHARE/small" >"$WORK/migrate.json" \
    || { cat "$WORK/migrate.json" >&2; die "gpair migrate failed"; }
J=$(python3 "$MHELPER" job "$WORK/migrate.json")
if [ "$(jget "$J" job_state)" != done ] || [ "$(jget "$J" job_files_done)" != $((SMALL_FILES + 1)) ]; then
    die "gpair migrate did not offload everything: $J"
fi
S=$(python3 "$MHELPER" settle "$GPAIR" "$SOCK" "$NAME" "$D_PID" 3600)
ALLOC=$(python3 "$MHELPER" alloc "$SHARE/large")
echo "   job $(jget "$J" job_id): $(jget "$J" job_files_done) files, $(jget "$J" job_bytes_done) bytes in $(jget "$J" job_secs) s; east allocation of large/ now $ALLOC bytes; $S" >&2
[ "$ALLOC" -lt $((LARGE_BYTES / 100)) ] || die "large/ still holds $ALLOC bytes on disk: not a stub"

printf '%s:%s\n' "$AK" "$SK" >"$WORK/s3fs.passwd"
chmod 600 "$WORK/s3fs.passwd"
RCLONE_ENV=(env -u AWS_CA_BUNDLE -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY
    RCLONE_CONFIG="$WORK/no-rclone.conf"
    RCLONE_CONFIG_WEST_TYPE=s3 RCLONE_CONFIG_WEST_PROVIDER=Other RCLONE_CONFIG_WEST_ENV_AUTH=false
    RCLONE_CONFIG_WEST_ACCESS_KEY_ID="$AK" RCLONE_CONFIG_WEST_SECRET_ACCESS_KEY="$SK"
    RCLONE_CONFIG_WEST_ENDPOINT="$ENDPOINT" RCLONE_CONFIG_WEST_REGION=us-east-1
    RCLONE_CONFIG_WEST_FORCE_PATH_STYLE=true)

# ------------------------------------------------------------------ mounts

# mount_tool TOOL: mounts TOOL's view on $MNT/TOOL and waits until it answers; sets M_PID,
# M_TOOL, M_LOG (logs prefix), MP (the mount point).
#   gpair, gpair-nopt    gpair-mount of the share (the latter with --no-passthrough)
#   s3fs                 s3fs BUCKET:/PREFIX, foreground, stock options
#   rclone-default/tuned rclone mount west:BUCKET/PREFIX --vfs-cache-mode off [tuned flags]
mount_tool() {
    local tool=$1
    MP=$MNT/$tool
    mkdir -p "$MP"
    mountpoint -q "$MP" && die "$MP is already mounted"
    SEQ=$((SEQ + 1))
    local name
    name=$(printf '%03d-%s' "$SEQ" "$tool")
    M_TOOL=$tool
    M_LOG=$LOGS/$name
    case "$tool" in
        gpair|gpair-nopt)
            local extra=()
            [ "$tool" = gpair-nopt ] && extra=(--no-passthrough)
            LOG_LEVEL=$MOUNT_LOG start "$name" "$LOGS" "$GMOUNT" "$SHARE" "$MP" --backend "$SOCK" "${extra[@]}"
            M_PID=$PID
            wait_line "$M_PID" "$M_LOG.stdout" 's#^gpair-mount: .* mounted on ##p' gpair-mount >/dev/null
            ;;
        s3fs)
            start "$name" "$LOGS" s3fs "$BUCKET:/$PREFIX" "$MP" -f -o "url=$ENDPOINT" \
                -o use_path_request_style -o "passwd_file=$WORK/s3fs.passwd"
            M_PID=$PID
            ;;
        rclone-default|rclone-tuned)
            local flags=()
            # shellcheck disable=SC2206
            [ "$tool" = rclone-tuned ] && flags=($RCLONE_TUNED)
            start "$name" "$LOGS" "${RCLONE_ENV[@]}" rclone mount "west:$BUCKET/$PREFIX" "$MP" \
                --vfs-cache-mode off "${flags[@]}"
            M_PID=$PID
            ;;
        *) die "unknown tool $tool" ;;
    esac
    local i
    for i in $(seq 1 300); do
        mountpoint -q "$MP" && stat "$MP" >/dev/null 2>&1 && return 0
        kill -0 "$M_PID" 2>/dev/null || break
        sleep 0.1
    done
    die "$tool did not mount on $MP"
}

# unmount_tool: SIGTERM to the FUSE process (all three unmount cleanly on it), wait; detach
# what is left. For gpair-mount, sets WEST_READS from its exit summary.
unmount_tool() {
    stop "$M_PID"; M_PID=""
    if mountpoint -q "$MP"; then
        echo "   WARNING: $M_TOOL left $MP mounted after SIGTERM; detaching it" >&2
        umount -l "$MP" 2>/dev/null || fusermount3 -uz "$MP" 2>/dev/null || true
    fi
    WEST_READS="{}"
    case "$M_TOOL" in gpair*) WEST_READS=$(helper west-reads "$M_LOG.stderr") ;; esac
}

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# emit PART TOOL JSON...: one JSON line (the objects merged, with the round and the load
# average) appended to $OUT, and a line on stderr.
emit() {
    python3 - "$ROUND" "$1" "$2" "$LOAD" "${@:3}" >>"$OUT" <<'PY'
import json, sys
rnd, part, tool, load = sys.argv[1:5]
line = {"bench": "mount", "part": part, "tool": tool, "round": int(rnd), "loadavg": load}
for a in sys.argv[5:]:
    line.update(json.loads(a))
if "secs" in line and "bytes" in line:
    line["mb_per_s"] = line["bytes"] / line["secs"] / 1e6
if "secs" in line and "files" in line:
    line["files_per_s"] = line["files"] / line["secs"]
print(json.dumps(line))
PY
    python3 - "$OUT" <<'PY' >&2
import json, sys
l = json.loads(open(sys.argv[1]).read().splitlines()[-1])
s = "   %-6s r%-2d %-15s" % (l["part"], l["round"], l["tool"])
if "ms" in l:
    s += " %8.2f ms (read of %s bytes)" % (l["ms"], l.get("read_size"))
else:
    s += " %8.3f s" % l["secs"]
    if "files" in l:
        s += " %8.1f files/s" % l["files_per_s"]
    s += " %8.1f MB/s" % l["mb_per_s"]
cpu = ["%s %.2f" % (k[:-6], l[k]) for k in ("mount_cpu_s", "gateway_cpu_s", "client_cpu_s") if l.get(k) is not None]
if cpu:
    s += "; CPU s " + ", ".join(cpu)
if "west_gets" in l:
    s += "; %d west GETs, %.1f MiB" % (l["west_gets"], l["west_bytes"] / 2**20)
print(s + "; load " + l["loadavg"].split()[0])
PY
}

cpu_pair() { echo "$(cpu_s "$1") $(cpu_s "$GW_PID")"; }
cpu_json() { # cpu_json "BEFORE" "AFTER": mount and gateway CPU seconds between two cpu_pair
    python3 -c 'import json,sys
a, b = sys.argv[1].split(), sys.argv[2].split()
d = lambda i: None if a[i] == "null" else round(float(b[i]) - float(a[i]), 2)
print(json.dumps({"mount_cpu_s": d(0), "gateway_cpu_s": d(1)}))' "$1" "$2"
}

# run_dd PART TOOL FILE BYTES: a timed `dd bs=1M` of FILE to /dev/null (the mount, if any, is
# $M_PID); checks the byte count and emits the measurement.
run_dd() {
    local part=$1 tool=$2 file=$3 bytes=$4 c0 c1 r got pd
    pd=$LOGS/$(printf '%03d' "$SEQ")-$part-$tool-r$ROUND
    LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
    c0=$(cpu_pair "$M_PID")
    r=$(helper timed "$pd.stdout" "$pd.stderr" dd if="$file" of=/dev/null bs=1M)
    c1=$(cpu_pair "$M_PID")
    got=$(helper dd-bytes "$pd.stderr")
    if [ "$(jget "$r" rc)" != 0 ] || [ "$got" != "$bytes" ]; then
        cat "$pd.stderr" >&2
        die "$part $tool: dd of $file failed or read $got bytes, want $bytes"
    fi
    RESULT=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(json.dumps({"secs": round(r["secs"], 4), "client_cpu_s": r["client_cpu_s"], "bytes": int(sys.argv[2])}))' "$r" "$bytes")
    CPU=$(cpu_json "$c0" "$c1")
}

# ------------------------------------------------------------------ the parts

MOUNT_TOOLS=(gpair s3fs rclone-default rclone-tuned)

rotated() { # rotated N WORDS...: WORDS rotated left by N
    local n=$1
    shift
    local a=("$@") i
    for i in $(seq 0 $(($# - 1))); do echo "${a[$(((i + n) % $#))]}"; done
}

# 1. cold sequential read of the offloaded large file.
part_large() {
    local tool
    for tool in $(rotated $((ROUND - 1)) "${MOUNT_TOOLS[@]}" curl); do
        if [ "$tool" = curl ]; then
            local url pd r c0 c1 got
            url=$(helper presign "$ENDPOINT" "$AK" "$SK" "$BUCKET" "$PREFIX/$LARGE")
            drop_caches
            LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
            pd=$LOGS/large-curl-r$ROUND
            c0=$(cpu_pair "")
            r=$(helper timed "$pd.stdout" "$pd.stderr" curl -sS -f -o /dev/null -w '%{size_download}' "$url")
            c1=$(cpu_pair "")
            got=$(cat "$pd.stdout")
            if [ "$(jget "$r" rc)" != 0 ] || [ "$got" != "$LARGE_BYTES" ]; then
                cat "$pd.stderr" >&2
                die "large curl: GET failed or got $got bytes, want $LARGE_BYTES"
            fi
            emit large curl "$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(json.dumps({"secs": round(r["secs"], 4), "client_cpu_s": r["client_cpu_s"], "bytes": int(sys.argv[2])}))' "$r" "$LARGE_BYTES")" \
                "$(cpu_json "$c0" "$c1")"
            continue
        fi
        mount_tool "$tool"
        drop_caches
        run_dd large "$tool" "$MP/$LARGE" "$LARGE_BYTES"
        unmount_tool
        emit large "$tool" "$RESULT" "$CPU" "$WEST_READS"
    done
}

# 2. time to first byte, each sample from a fresh mount and a dropped page cache.
part_ttfb() {
    local i tool r
    for i in $(seq 1 "$TTFB_SAMPLES"); do
        ROUND=$i
        for tool in $(rotated $((i - 1)) "${MOUNT_TOOLS[@]}" curl); do
            if [ "$tool" = curl ]; then
                local url
                url=$(helper presign "$ENDPOINT" "$AK" "$SK" "$BUCKET" "$PREFIX/$LARGE")
                drop_caches
                LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
                r=$(curl -sS -f -o /dev/null -r 0-0 -w '%{time_starttransfer} %{size_download}' "$url") ||
                    die "ttfb curl: ranged GET failed"
                [ "${r#* }" = 1 ] || die "ttfb curl: got ${r#* } bytes for range 0-0"
                emit ttfb curl "{\"ms\": $(awk -v s="${r% *}" 'BEGIN { printf "%.3f", s * 1000 }'), \"read_size\": 1}"
                continue
            fi
            mount_tool "$tool"
            drop_caches
            LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
            r=$(helper ttfb "$MP/$LARGE" 2>"$M_LOG.ttfb.stderr") || {
                cat "$M_LOG.ttfb.stderr" >&2; die "ttfb $tool failed"; }
            unmount_tool
            emit ttfb "$tool" "$r" "$WEST_READS"
        done
    done
}

# 3. cold read of the offloaded small files.
part_small() {
    local tool r
    for tool in $(rotated $((ROUND - 1)) "${MOUNT_TOOLS[@]}" http); do
        if [ "$tool" = http ]; then
            local c0 c1
            drop_caches
            LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
            c0=$(cpu_pair "")
            r=$(helper get-small "$ENDPOINT" "$AK" "$SK" "$BUCKET" "$PREFIX" "$SMALL_FILES") ||
                die "small http: plain GETs failed"
            c1=$(cpu_pair "")
            [ "$(jget "$r" bytes_read)" = "$SMALL_BYTES" ] ||
                die "small http: read $(jget "$r" bytes_read) bytes, want $SMALL_BYTES"
            emit small http "$r" "{\"bytes\": $SMALL_BYTES}" "$(cpu_json "$c0" "$c1")"
            continue
        fi
        mount_tool "$tool"
        drop_caches
        LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
        local c0 c1
        c0=$(cpu_pair "$M_PID")
        r=$(helper read-small "$MP" "$SMALL_FILES" 2>"$M_LOG.small.stderr") || {
            cat "$M_LOG.small.stderr" >&2; die "small $tool failed"; }
        c1=$(cpu_pair "$M_PID")
        unmount_tool
        [ "$(jget "$r" bytes_read)" = "$SMALL_BYTES" ] ||
            die "small $tool: read $(jget "$r" bytes_read) bytes, want $SMALL_BYTES"
        emit small "$tool" "$r" "{\"bytes\": $SMALL_BYTES}" "$(cpu_json "$c0" "$c1")" "$WEST_READS"
    done
}

# 4. warm re-read of the local file: once to warm, then LOCAL_REPS measured reads each, direct
# and through the mount interleaved (who goes first alternates); then the mount without
# passthrough.
part_local() {
    local order=(direct gpair) t k
    mount_tool gpair
    cat "$SHARE/$LOCAL" >/dev/null
    cat "$MP/$LOCAL" >/dev/null
    for k in $(seq 1 "$LOCAL_REPS"); do
        order=(direct gpair)
        [ $(((ROUND + k) % 2)) = 1 ] && order=(gpair direct)
        for t in "${order[@]}"; do
            if [ "$t" = direct ]; then
                run_dd local direct "$SHARE/$LOCAL" "$LARGE_BYTES"
                emit local direct "$RESULT" "$CPU" '{"mount_cpu_s": null}' "{\"rep\": $k}"
            else
                run_dd local gpair "$MP/$LOCAL" "$LARGE_BYTES"
                emit local gpair "$RESULT" "$CPU" "{\"rep\": $k}"
            fi
        done
    done
    unmount_tool
    mount_tool gpair-nopt
    cat "$MP/$LOCAL" >/dev/null
    for k in $(seq 1 "$LOCAL_REPS"); do
        run_dd local gpair-nopt "$MP/$LOCAL" "$LARGE_BYTES"
        emit local gpair-nopt "$RESULT" "$CPU" "{\"rep\": $k}"
    done
    unmount_tool
}

# ------------------------------------------------------------------ run

ROUND=0
echo "== verifying what gpair-mount reads (cold) against the generator" >&2
mount_tool gpair
drop_caches
M5=$(md5sum <"$MP/$LARGE" | cut -d' ' -f1)
[ "$M5" = "$(jget "$GEN" large_md5)" ] || die "large file through gpair-mount: md5 $M5, want $(jget "$GEN" large_md5)"
R=$(helper read-small "$MP" "$SMALL_FILES" md5)
[ "$(jget "$R" md5)" = "$(jget "$GEN" small_md5)" ] || die "small files through gpair-mount: md5 $(jget "$R" md5), want $(jget "$GEN" small_md5)"
M5=$(md5sum <"$MP/$LOCAL" | cut -d' ' -f1)
[ "$M5" = "$(md5sum <"$SHARE/$LOCAL" | cut -d' ' -f1)" ] || die "local file through gpair-mount differs from the share"
unmount_tool
echo "   md5 of the large file, of the $SMALL_FILES small files and of the local file as expected; $(jget "$WEST_READS" west_gets) west GETs, $(jget "$WEST_READS" west_bytes) bytes" >&2

for ROUND in $(seq 1 "$ROUNDS"); do
    echo "== round $ROUND, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    if want large; then part_large; fi
    if want small; then part_small; fi
    if want local; then part_local; fi
done
if want ttfb; then
    echo "== time to first byte, $TTFB_SAMPLES samples per tool" >&2
    part_ttfb
fi

# Reads through the mount must leave the files offloaded (default read policy: stream).
ALLOC2=$(python3 "$MHELPER" alloc "$SHARE/large")
[ "$ALLOC2" -lt $((LARGE_BYTES / 100)) ] || echo "   WARNING: large/ holds $ALLOC2 bytes on disk after the reads (recalled?)" >&2
WARNS=$(cat "$LOGS"/*gpair*.stderr 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | grep -cE ' (WARN|ERROR) ' || true)

{
    echo "command: bench/mount.sh${ARGS[*]:+ ${ARGS[*]}}"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine: $(nproc) cores, $(uname -sr), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), load average now $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "data: large file $LARGE_MIB MiB (offloaded, west key $PREFIX/$LARGE), local file $LARGE_MIB MiB, $SMALL_FILES small files $(jget "$GEN" small_min)..$(jget "$GEN" small_max) bytes (median $(jget "$GEN" small_median)), $SMALL_BYTES bytes; everything on $FS under ${TMPDIR:-/tmp}"
    echo "gpair-mount: default flags; s3fs $(s3fs --version 2>/dev/null | head -n1 | sed -n 's/.*System V\([0-9.]*\).*/\1/p'): -o url=$ENDPOINT -o use_path_request_style -o passwd_file=F (no cache dir)"
    echo "rclone $(rclone version 2>/dev/null | head -n1 | awk '{print $2}') mount --vfs-cache-mode off: default = no other flags; tuned = $RCLONE_TUNED"
    echo "plain GET: curl -o /dev/null of a presigned URL (part 2: with -r 0-0, time_starttransfer); plain GETs of the small files: python http.client, one keep-alive connection, presigned URLs"
    echo "gpair-mount logs: $WARNS WARN/ERROR lines; large/ east allocation after the reads: $ALLOC2 bytes"
    echo "source: $SOURCE"
    echo "results: $OUT"
    echo
    helper report "$OUT"
} | tee "${OUT%.jsonl}.txt"
