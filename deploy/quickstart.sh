#!/usr/bin/env bash
# gpair quickstart: the whole east -> west loop on loopback, with everything under ./var/.
#
#   deploy/quickstart.sh          build s3fs-gateway, gpair-backend and gpair; start the gateway
#                                 on 127.0.0.1:9000 (west tree ./var/west) and the backend
#                                 (config ./var/gpair-backend.toml, socket ./var/backend.sock,
#                                 catalog ./var/catalog); add the gateway as gpeer 'west' and bind
#                                 gpair 'demo' (./var/east <-> bucket demo, prefix east); write
#                                 sample files, offload them all (gpair migrate), show their tier
#                                 state, disk usage and west copy, recall one and compare it byte
#                                 for byte; mount the share with gpair-mount on ./var/mnt (where
#                                 /dev/fuse exists) and read an offloaded file through it; list
#                                 the jobs and the quota, and print how to use it
#   deploy/quickstart.sh stop     unmount, stop the backend, then the gateway (SIGTERM, SIGKILL
#                                 if stuck)
#   deploy/quickstart.sh status   say whether each daemon and the mount are running
#
# Running it again reuses the running daemons (restarting one whose binary was rebuilt), the
# gpeer, the gpair and the mount, and replaces the sample files. Needs cargo, python3 (3.11+)
# and the AWS CLI (`pip install awscli`; scripts/test.sh installs it where missing); the mount
# needs /dev/fuse and root (or fuse3's fusermount3 for a user).
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."
REPO_ROOT=$PWD

VAR=var
ABS_VAR=$REPO_ROOT/$VAR
WEST_ROOT=$VAR/west
EAST=$ABS_VAR/east
LISTEN=127.0.0.1:9000
ENDPOINT=http://$LISTEN
GW_PID_FILE=$VAR/s3fs-gateway.pid
GW_LOG=$VAR/s3fs-gateway.log
CREDENTIALS=$WEST_ROOT/.gpair-gateway/credentials.toml
BE_CONFIG=$VAR/gpair-backend.toml
BE_PID_FILE=$VAR/gpair-backend.pid
BE_LOG=$VAR/gpair-backend.log
SOCKET=$ABS_VAR/backend.sock
CATALOG=$ABS_VAR/catalog
EAST_CLUSTER=LC_111
WEST_CLUSTER=LC_222
GPEER=west
GPAIR=demo
BUCKET=demo
PREFIX=east
WORK=$VAR/quickstart
MNT=$ABS_VAR/mnt
MNT_PID_FILE=$VAR/gpair-mount.pid
MNT_LOG=$VAR/gpair-mount.log
BIN_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug

say() { printf '\n==> %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
# Show a command, then run it.
run() {
    printf '$ %s\n' "$*"
    "$@"
}

# The pid in PID_FILE, if that process is alive and is NAME.
running_pid() {
    local name=$1 pid_file=$2 pid
    [[ -f $pid_file ]] || return 1
    pid=$(cat "$pid_file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ $(ps -p "$pid" -o comm= 2>/dev/null) == "$name"* ]] || return 1
    echo "$pid"
}

# SIGTERM, wait up to WAIT_SECS for the daemon to drain and exit, then SIGKILL.
stop_daemon() {
    local name=$1 pid_file=$2 wait_secs=$3 pid
    if ! pid=$(running_pid "$name" "$pid_file"); then
        echo "$name is not running"
        rm -f "$pid_file"
        return 0
    fi
    echo "stopping $name (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 $((wait_secs * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$name still running after $wait_secs s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pid_file"
    echo "stopped $name"
}

stop() {
    # The mount first (SIGTERM unmounts it); a mount point left dead by a crash is detached.
    stop_daemon gpair-mount "$MNT_PID_FILE" 10
    if grep -qs " $MNT fuse" /proc/self/mounts; then
        umount -l "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null || true
    fi
    # The backend next: it gives its in-flight west calls shutdown_grace_secs (10 s here),
    # which needs the gateway; the gateway then drains its requests (up to 30 s).
    stop_daemon gpair-backend "$BE_PID_FILE" 15
    stop_daemon s3fs-gateway "$GW_PID_FILE" 35
}

status() {
    local pid
    if pid=$(running_pid s3fs-gateway "$GW_PID_FILE"); then
        echo "s3fs-gateway is running (pid $pid) on $ENDPOINT, west root ./$WEST_ROOT"
    else
        echo "s3fs-gateway is not running"
    fi
    if pid=$(running_pid gpair-backend "$BE_PID_FILE"); then
        echo "gpair-backend is running (pid $pid) on $SOCKET, config ./$BE_CONFIG"
        if [[ -x $BIN_DIR/gpair ]]; then
            "$BIN_DIR/gpair" --backend "$SOCKET" --timeout 5 status | sed 's/^/    /' ||
                echo "    (it does not answer on $SOCKET; see ./$BE_LOG)"
        fi
    else
        echo "gpair-backend is not running"
    fi
    if pid=$(running_pid gpair-mount "$MNT_PID_FILE"); then
        echo "gpair-mount is running (pid $pid): $EAST mounted on $MNT"
    else
        echo "gpair-mount is not running"
    fi
}

case ${1:-start} in
start) ;;
stop)
    stop
    exit 0
    ;;
status)
    status
    exit 0
    ;;
*) die "usage: $0 [start|stop|status]" ;;
esac

# ---------------------------------------------------------------------------------------------
# Preconditions, each with the fix.
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs)"
command -v python3 >/dev/null || die "python3 not found"
python3 -c 'import tomllib' 2>/dev/null || die "python3 is older than 3.11 (no tomllib)"
command -v aws >/dev/null || die "the AWS CLI is not installed: pip install awscli (scripts/test.sh does)"
# A Unix socket path holds at most 107 bytes.
((${#SOCKET} <= 107)) ||
    die "the backend socket path $SOCKET is longer than 107 bytes: run from a checkout with a shorter path"

mkdir -p "$WEST_ROOT" "$EAST" "$WORK"

# The backend keeps each stub's record in a user.* extended attribute and releases the data
# with fallocate(PUNCH_HOLE): check the filesystem under ./var/ can do both.
python3 - "$EAST" <<'PY' || die "the filesystem under ./$VAR cannot hold stubs (see above); use a checkout on ext4, xfs, btrfs or tmpfs"
import ctypes, ctypes.util, os, sys, tempfile
fd, path = tempfile.mkstemp(dir=sys.argv[1], prefix=".quickstart-probe-")
try:
    try:
        os.setxattr(path, "user.gpair-probe", b"1")
    except OSError as e:
        sys.exit(f"user extended attributes are not supported in {sys.argv[1]}: {e}")
    os.write(fd, b"x" * 65536)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    if libc.fallocate(fd, 0x01 | 0x02, 0, 65536) != 0:  # KEEP_SIZE | PUNCH_HOLE
        sys.exit(f"fallocate(PUNCH_HOLE) fails in {sys.argv[1]}: {os.strerror(ctypes.get_errno())}")
finally:
    os.close(fd)
    os.unlink(path)
PY

# The gateway's port must be free unless this checkout's gateway holds it.
if ! running_pid s3fs-gateway "$GW_PID_FILE" >/dev/null; then
    if ! python3 -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))' "${LISTEN%:*}" "${LISTEN##*:}" 2>/dev/null; then
        holder=$(ss -ltnpH "sport = :${LISTEN##*:}" 2>/dev/null | grep -o 'users:.*' || true)
        die "$LISTEN is already in use by another process${holder:+ ($holder)}, not this checkout's gateway: stop it and run again"
    fi
fi

say "building s3fs-gateway, gpair-backend and gpair (cargo build --bins -p s3fs-gateway -p gpair-backend -p gpair-cli)"
cargo build --bins -p s3fs-gateway -p gpair-backend -p gpair-cli ||
    die "cargo build failed (see the errors above)"
BIN_DIR=$(readlink -f "$BIN_DIR")
for b in s3fs-gateway gpair-backend gpair; do
    [[ -x $BIN_DIR/$b ]] || die "$BIN_DIR/$b was not built (is build.target-dir set elsewhere? set CARGO_TARGET_DIR)"
done
GPAIR_BIN=$BIN_DIR/gpair
# Every gpair call names the socket: a GPAIR_BACKEND in the environment must not redirect it.
gp() { "$GPAIR_BIN" --backend "$SOCKET" "$@"; }
# Show a gpair command as a user would type it (gpair on PATH), then run it.
gpr() {
    printf '$ gpair --backend %s %s\n' "$SOCKET" "$*"
    gp "$@"
}
# Print a Python expression over the JSON document on stdin (bound to `d`).
json() { python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }

# Wait for READY in the log of NAME (just started as PID); on failure show the log, forget
# the pid file and die with HINT.
wait_ready() {
    local name=$1 pid=$2 pid_file=$3 log=$4 ready=$5 hint=$6
    for _ in $(seq 1 300); do
        grep -q "$ready" "$log" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "--- $log ---" >&2
    cat "$log" >&2
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        rm -f "$pid_file"
        die "$name did not report '$ready' within 30 s; stopped it"
    fi
    rm -f "$pid_file"
    die "$name exited during start-up ($hint)"
}

# ---------------------------------------------------------------------------------------------
# A daemon still running the binary that this build just replaced is restarted.
if pid=$(running_pid s3fs-gateway "$GW_PID_FILE") && ! [[ /proc/$pid/exe -ef $BIN_DIR/s3fs-gateway ]]; then
    say "s3fs-gateway (pid $pid) runs an older build: restarting it"
    stop_daemon s3fs-gateway "$GW_PID_FILE" 35
fi
if pid=$(running_pid s3fs-gateway "$GW_PID_FILE"); then
    say "s3fs-gateway already running (pid $pid), reusing it"
else
    rm -f "$GW_PID_FILE"
    say "starting s3fs-gateway --root ./$WEST_ROOT --listen $LISTEN"
    # The gateway prints generated credentials once on stdout, which goes to this log: keep it
    # as private as the credentials file.
    (umask 077 && : >"$GW_LOG")
    chmod 600 "$GW_LOG"
    # setsid: a Ctrl-C in this terminal later must not reach the daemons.
    NO_COLOR=1 setsid nohup "$BIN_DIR/s3fs-gateway" --root "./$WEST_ROOT" --listen "$LISTEN" \
        >>"$GW_LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$GW_PID_FILE"
    wait_ready s3fs-gateway "$pid" "$GW_PID_FILE" "$GW_LOG" "s3fs-gateway listening on " \
        "is $LISTEN already in use?"
    grep "s3fs-gateway listening on " "$GW_LOG" | head -n 1
fi

# Credentials: the backend key of the gateway's credentials file (generated at its first start;
# the gateway also printed it once, to its log).
[[ -f $CREDENTIALS ]] || die "no credentials: ./$CREDENTIALS does not exist (the gateway writes it at its first start)"
read -r ACCESS_KEY SECRET_KEY < <(
    python3 - "$CREDENTIALS" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    keys = tomllib.load(f).get("keys", [])
key = next((k for k in keys if k.get("role") == "backend"), None)
if key is None:
    sys.exit("no key with role = \"backend\" in " + sys.argv[1])
print(key["access_key"], key["secret_key"])
PY
) || true
[[ -n ${ACCESS_KEY:-} && -n ${SECRET_KEY:-} ]] || die "could not read the backend key from ./$CREDENTIALS"
echo "using the backend key $ACCESS_KEY from ./$CREDENTIALS"

# ---------------------------------------------------------------------------------------------
# The backend's config: the defaults of deploy/gpair-backend.toml, sized for a laptop, with
# every path under ./var/. Rewritten each run; a running backend started with another config
# is restarted.
cfg_new=$(
    cat <<EOF
# Written by deploy/quickstart.sh (rewritten on every run). Every key: deploy/gpair-backend.toml.
cluster_id = "$EAST_CLUSTER"
catalog = "$CATALOG"
socket = "$SOCKET"
socket_mode = 0o600
shutdown_grace_secs = 10

[sync]
workers = 4
walk_threads = 2
reconcile_interval_secs = 600
watch = true
retry_base_ms = 500
retry_max_ms = 60000
gpeer_backoff_max_ms = 10000

[tier]
stub_xattr = "user.gpair"
transfers = 4
# Small parts so the 20 MiB sample goes up in three parts.
multipart_threshold_mib = 8
part_size_mib = 8
streams_per_file = 4
EOF
)
if pid=$(running_pid gpair-backend "$BE_PID_FILE"); then
    if ! [[ /proc/$pid/exe -ef $BIN_DIR/gpair-backend ]]; then
        say "gpair-backend (pid $pid) runs an older build: restarting it"
        stop_daemon gpair-backend "$BE_PID_FILE" 15
    elif [[ $cfg_new != "$(cat "$BE_CONFIG" 2>/dev/null)" ]]; then
        say "gpair-backend (pid $pid) runs with an older ./$BE_CONFIG: restarting it"
        stop_daemon gpair-backend "$BE_PID_FILE" 15
    else
        say "gpair-backend already running (pid $pid), reusing it"
    fi
fi
if ! pid=$(running_pid gpair-backend "$BE_PID_FILE"); then
    rm -f "$BE_PID_FILE"
    # Another backend answering on our socket (say, started by hand) would get our requests.
    if [[ -S $SOCKET ]] && gp --timeout 5 status >/dev/null 2>&1; then
        die "a gpair-backend this script did not start already listens on $SOCKET (ss -xlp shows its pid): stop it and run again"
    fi
    printf '%s\n' "$cfg_new" >"$BE_CONFIG"
    say "starting gpair-backend --config ./$BE_CONFIG"
    sed 's/^/    /' "$BE_CONFIG"
    : >"$BE_LOG"
    NO_COLOR=1 setsid nohup "$BIN_DIR/gpair-backend" --config "$BE_CONFIG" \
        >>"$BE_LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$BE_PID_FILE"
    wait_ready gpair-backend "$pid" "$BE_PID_FILE" "$BE_LOG" "gpair-backend listening on " \
        "is the catalog ./$VAR/catalog in use by another process?"
    grep "gpair-backend listening on " "$BE_LOG" | head -n 1
fi
gp status >/dev/null || die "gpair-backend does not answer on $SOCKET; see ./$BE_LOG"

# ---------------------------------------------------------------------------------------------
# The gpeer and the gpair, unless they are already there (as this script made them).
say "gpeer '$GPEER': the gateway at $ENDPOINT"
rc=0
out=$(gp --output json gpeer show "$GPEER" 2>&1) || rc=$?
case $rc in
0)
    have=$(json 'd["endpoint"] + " " + d["access_key"]' <<<"$out")
    [[ $have == "$ENDPOINT $ACCESS_KEY" ]] ||
        die "gpeer '$GPEER' exists with endpoint and access key '$have', not '$ENDPOINT $ACCESS_KEY' (was ./$WEST_ROOT recreated?): start over with: deploy/quickstart.sh stop && rm -rf ./$VAR"
    echo "gpeer '$GPEER' already added; checking it"
    gpr gpeer check "$GPEER" ||
        die "gpeer '$GPEER' does not pass its check (see above); start over with: deploy/quickstart.sh stop && rm -rf ./$VAR"
    ;;
1)
    printf '$ GPAIR_SECRET_KEY=... gpair --backend %s gpeer add %s --endpoint %s --cluster-id %s --access-key %s\n' \
        "$SOCKET" "$GPEER" "$ENDPOINT" "$WEST_CLUSTER" "$ACCESS_KEY"
    GPAIR_SECRET_KEY=$SECRET_KEY gp gpeer add "$GPEER" --endpoint "$ENDPOINT" \
        --cluster-id "$WEST_CLUSTER" --access-key "$ACCESS_KEY"
    ;;
*)
    printf '%s\n' "$out" >&2
    die "gpair gpeer show $GPEER failed (exit $rc)"
    ;;
esac

say "gpair '$GPAIR': $EAST <-> $BUCKET/$PREFIX on gpeer '$GPEER'"
rc=0
out=$(gp --output json show "$GPAIR" 2>&1) || rc=$?
case $rc in
0)
    have=$(json 'd["gpeer"] + " " + d["local_path"] + " " + d["remote_bucket"] + "/" + d["remote_prefix"]' <<<"$out")
    [[ $have == "$GPEER $EAST $BUCKET/$PREFIX" ]] ||
        die "gpair '$GPAIR' exists as '$have', not '$GPEER $EAST $BUCKET/$PREFIX': start over with: deploy/quickstart.sh stop && rm -rf ./$VAR"
    echo "gpair '$GPAIR' already bound"
    gpr show "$GPAIR"
    ;;
1)
    gpr bind "$GPAIR" --gpeer "$GPEER" --local "$EAST" --remote "$BUCKET/$PREFIX" --create-bucket
    ;;
*)
    printf '%s\n' "$out" >&2
    die "gpair show $GPAIR failed (exit $rc)"
    ;;
esac

# Wait until the gpair is active with nothing queued for west, then show its sync status.
settle() {
    local out state=""
    for _ in $(seq 1 600); do
        out=$(gp --output json sync status "$GPAIR") || die "gpair sync status $GPAIR failed"
        state=$(json 'd[0]["state"] + " " + str(d[0]["initial_sync_done"]) + " " + str(d[0]["pending"]) + " " + str(d[0]["failing"])' <<<"$out")
        [[ $state == "active True 0 0" ]] && break
        sleep 0.1
    done
    gpr sync status "$GPAIR"
    [[ $state == "active True 0 0" ]] ||
        die "the metadata sync of '$GPAIR' did not settle within 60 s (state, initial sync done, pending, failing: $state); see ./$BE_LOG"
}
say "waiting for the metadata sync of '$GPAIR' to settle"
settle

# ---------------------------------------------------------------------------------------------
# Sample files. A re-run deletes the previous ones first (stubs too: their west data goes with
# them) and writes fresh ones.
SAMPLES=(hello.txt docs/notes.md docs/todo.txt data/small.bin data/big.bin)
say "writing sample files under ./$VAR/east"
for f in "${SAMPLES[@]}"; do rm -f "$EAST/$f"; done
mkdir -p "$EAST/docs" "$EAST/data" "$WORK/saved"
printf 'hello from gpair east\n' >"$EAST/hello.txt"
printf '# notes\n\nA file in a subdirectory.\n' >"$EAST/docs/notes.md"
printf -- '- offload\n- recall\n' >"$EAST/docs/todo.txt"
head -c $((3 * 1024 * 1024)) /dev/urandom >"$EAST/data/small.bin"
head -c $((20 * 1024 * 1024)) /dev/urandom >"$EAST/data/big.bin" # > 8 MiB: multipart
cp "$EAST/data/big.bin" "$WORK/saved/big.bin"
cp "$EAST/data/small.bin" "$WORK/saved/small.bin"
(cd "$EAST" && run ls -lR .)
settle

ABS_SAMPLES=()
for f in "${SAMPLES[@]}"; do ABS_SAMPLES+=("$EAST/$f"); done

say "offloading everything under ./$VAR/east"
rc=0
gpr migrate -r --wait "$EAST" || rc=$?
((rc == 0)) || die "the migrate job did not end done (exit $rc); see its report above and ./$BE_LOG"

say "tier state: the data is on west, each file is a stub (same size and times)"
gpr state "${ABS_SAMPLES[@]}"
out=$(gp --output json state "${ABS_SAMPLES[@]}")
remote=$(json 'sum(1 for f in d if f["state"] == "remote")' <<<"$out")
((remote == ${#SAMPLES[@]})) || die "only $remote of ${#SAMPLES[@]} sample files are remote after the migrate"

say "disk usage: apparent size (what ls shows) vs blocks held on east (released)"
run du -sh --apparent-size "./$VAR/east"
run du -sh "./$VAR/east"
(cd "$EAST" && run ls -ls data)

export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN
say "the west copy, through the gateway (aws s3 ls --recursive s3://$BUCKET/$PREFIX/)"
run aws --endpoint-url "$ENDPOINT" s3 ls --recursive "s3://$BUCKET/$PREFIX/"
echo "big.bin went up in 8 MiB parts: its ETag ends in -<parts>"
run aws --endpoint-url "$ENDPOINT" s3api head-object --bucket "$BUCKET" --key "$PREFIX/data/big.bin" \
    --query ETag --output text

say "recalling data/big.bin and comparing it with the copy saved before the offload"
rc=0
gpr recall --wait "$EAST/data/big.bin" || rc=$?
((rc == 0)) || die "the recall job did not end done (exit $rc); see its report above and ./$BE_LOG"
run cmp "$EAST/data/big.bin" "$ABS_VAR/quickstart/saved/big.bin"
echo "identical: data/big.bin ($(stat -c %s "$EAST/data/big.bin") bytes)"

say "tier state again: big.bin is local, the others stay remote"
gpr state "${ABS_SAMPLES[@]}"
run du -sh "./$VAR/east"

# ---------------------------------------------------------------------------------------------
# The mount: applications see the share as it was, offloaded files included.
MOUNTED=0
if [[ ! -e /dev/fuse ]]; then
    say "no /dev/fuse here: skipping the gpair-mount part"
else
    if pid=$(running_pid gpair-mount "$MNT_PID_FILE"); then
        if [[ /proc/$pid/exe -ef $BIN_DIR/gpair-mount ]]; then
            say "gpair-mount already running (pid $pid), reusing it"
        else
            say "gpair-mount (pid $pid) runs an older build: restarting it"
            stop_daemon gpair-mount "$MNT_PID_FILE" 10
        fi
    fi
    if ! running_pid gpair-mount "$MNT_PID_FILE" >/dev/null; then
        mkdir -p "$MNT" 2>/dev/null || true # a dead mount left there is detached by gpair-mount
        say "mounting ./$VAR/east on ./$VAR/mnt (gpair-mount)"
        printf '$ gpair-mount %s %s --backend %s\n' "$EAST" "$MNT" "$SOCKET"
        : >"$MNT_LOG"
        NO_COLOR=1 setsid nohup "$BIN_DIR/gpair-mount" "$EAST" "$MNT" --backend "$SOCKET" \
            >>"$MNT_LOG" 2>&1 </dev/null &
        pid=$!
        echo "$pid" >"$MNT_PID_FILE"
        wait_ready gpair-mount "$pid" "$MNT_PID_FILE" "$MNT_LOG" "gpair-mount: " \
            "does this machine allow FUSE mounts (root, or fusermount3 for users)?"
        grep "gpair-mount: " "$MNT_LOG" | head -n 1
    fi
    say "reading the offloaded data/small.bin through the mount (it stays offloaded)"
    (cd "$MNT" && run ls -l data)
    run cmp "$MNT/data/small.bin" "$WORK/saved/small.bin"
    echo "identical: data/small.bin read through ./$VAR/mnt from west, byte for byte"
    out=$(gp --output json state "$EAST/data/small.bin")
    [[ $(json 'd[0]["state"]' <<<"$out") == remote ]] || die "reading through the mount recalled data/small.bin"
    gpr state "$EAST/data/small.bin"
    say "appending to the offloaded docs/todo.txt through the mount: recalled first, then written"
    printf -- '- mount\n' >>"$MNT/docs/todo.txt"
    run cat "$MNT/docs/todo.txt"
    gpr state "$EAST/docs/todo.txt"
    MOUNTED=1
fi

say "jobs and quota"
gpr job ls
gpr quota show "$GPAIR"

running_pid s3fs-gateway "$GW_PID_FILE" >/dev/null || die "the gateway stopped unexpectedly; see ./$GW_LOG"
running_pid gpair-backend "$BE_PID_FILE" >/dev/null || die "the backend stopped unexpectedly; see ./$BE_LOG"
if ((MOUNTED)); then
    running_pid gpair-mount "$MNT_PID_FILE" >/dev/null || die "gpair-mount stopped unexpectedly; see ./$MNT_LOG"
    mount_line="gpair-mount    pid $(running_pid gpair-mount "$MNT_PID_FILE"), ./$VAR/east mounted on ./$VAR/mnt (log ./$MNT_LOG)"
else
    mount_line="gpair-mount    not started (no /dev/fuse)"
fi
gw_pid=$(running_pid s3fs-gateway "$GW_PID_FILE")
be_pid=$(running_pid gpair-backend "$BE_PID_FILE")
cat <<EOF

==> done
  s3fs-gateway   pid $gw_pid, $ENDPOINT, west tree ./$WEST_ROOT
                 (log ./$GW_LOG; credentials ./$CREDENTIALS, mode 0600)
  gpair-backend  pid $be_pid, socket $SOCKET
                 (config ./$BE_CONFIG, catalog ./$VAR/catalog, log ./$BE_LOG)
  gpeer          '$GPEER' = $ENDPOINT (cluster $WEST_CLUSTER)
  gpair          '$GPAIR' = $EAST <-> $BUCKET/$PREFIX
  $mount_line
  did            wrote ${#SAMPLES[@]} sample files (3 text files, 3 MiB and 20 MiB binaries), offloaded
                 them all to west (stubs on east), recalled data/big.bin and compared it byte
                 for byte with a copy saved before the offload; read data/small.bin, still
                 offloaded, through the mount and appended to docs/todo.txt through it

  Drive it with the gpair CLI (docs/cli.md):
    export PATH=$BIN_DIR:\$PATH
    gpair --backend $SOCKET status
    gpair --backend $SOCKET sync status $GPAIR
    gpair --backend $SOCKET migrate -r --wait $EAST/docs
    gpair --backend $SOCKET state $EAST/docs/notes.md
    gpair --backend $SOCKET recall -r --wait $EAST
    gpair --backend $SOCKET job ls
    gpair --backend $SOCKET quota show
  (or export GPAIR_BACKEND=$SOCKET and drop --backend)

  Look at west with any S3 client, e.g. the AWS CLI:
    export AWS_ACCESS_KEY_ID=$ACCESS_KEY
    export AWS_SECRET_ACCESS_KEY='<secret_key from ./$CREDENTIALS>'
    export AWS_DEFAULT_REGION=us-east-1
    aws --endpoint-url $ENDPOINT s3 ls --recursive s3://$BUCKET/$PREFIX/

  Use the mount like any directory: ls -l ./$VAR/mnt/data; vim ./$VAR/mnt/docs/notes.md

  Stop all:   deploy/quickstart.sh stop
  Status:     deploy/quickstart.sh status
  Run again:  deploy/quickstart.sh   (reuses the daemons, the gpeer and the gpair)
  Start over: deploy/quickstart.sh stop && rm -rf ./$VAR
  Docs:       docs/backend.md, docs/cli.md, docs/gateway.md, docs/mount.md
EOF
