#!/usr/bin/env bash
# gpair quickstart: a west S3 gateway on loopback, with everything under ./var/.
#
#   deploy/quickstart.sh          build and start s3fs-gateway on 127.0.0.1:9000 (west tree in
#                                 ./var/west), then upload, list, download and compare sample
#                                 files with the AWS CLI, and print how to use it
#   deploy/quickstart.sh stop     stop the gateway (SIGTERM; it drains in-flight requests)
#   deploy/quickstart.sh status   say whether it is running
#
# Running it again reuses the running gateway and its credentials. Needs cargo, python3 and the
# AWS CLI (`pip install awscli`; scripts/test.sh installs it where missing).
#
# Today only the gateway exists; the backend daemon and the FUSE mount will join this script
# (bind a demo gpair, offload and recall sample files) as they land.
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."
REPO_ROOT=$PWD

VAR=var
WEST_ROOT=$VAR/west
LISTEN=127.0.0.1:9000
ENDPOINT=http://$LISTEN
PID_FILE=$VAR/s3fs-gateway.pid
LOG=$VAR/s3fs-gateway.log
CREDENTIALS=$WEST_ROOT/.gpair-gateway/credentials.toml
BUCKET=demo
WORK=$VAR/quickstart
BIN=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/s3fs-gateway

say() { printf '\n==> %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# The pid in the pid file, if that process is alive and is our gateway.
running_pid() {
    [[ -f $PID_FILE ]] || return 1
    local pid
    pid=$(cat "$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ $(ps -p "$pid" -o comm= 2>/dev/null) == s3fs-gateway* ]] || return 1
    echo "$pid"
}

stop() {
    local pid
    if ! pid=$(running_pid); then
        echo "s3fs-gateway is not running"
        rm -f "$PID_FILE"
        return 0
    fi
    echo "stopping s3fs-gateway (pid $pid)"
    kill -TERM "$pid"
    # The gateway lets in-flight requests finish for up to 30 s.
    for _ in $(seq 1 350); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "still running after 35 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
    echo "stopped"
}

case ${1:-start} in
start) ;;
stop)
    stop
    exit 0
    ;;
status)
    if pid=$(running_pid); then
        echo "s3fs-gateway is running (pid $pid) on $ENDPOINT, west root $WEST_ROOT"
    else
        echo "s3fs-gateway is not running"
    fi
    exit 0
    ;;
*) die "usage: $0 [start|stop|status]" ;;
esac

command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs)"
command -v python3 >/dev/null || die "python3 not found"
command -v aws >/dev/null || die "the AWS CLI is not installed: pip install awscli (scripts/test.sh does)"

mkdir -p "$WEST_ROOT" "$WORK"

say "building s3fs-gateway (cargo build -p s3fs-gateway)"
cargo build -p s3fs-gateway
[[ -x $BIN ]] || die "$BIN was not built"

# ---------------------------------------------------------------------------------------------
if pid=$(running_pid); then
    say "s3fs-gateway already running (pid $pid), reusing it"
else
    say "starting s3fs-gateway --root ./$WEST_ROOT --listen $LISTEN"
    # The gateway prints generated credentials once on stdout, which goes to this log: keep it
    # as private as the credentials file.
    (umask 077 && : >"$LOG")
    chmod 600 "$LOG"
    # setsid: a Ctrl-C in this terminal later must not reach the gateway.
    NO_COLOR=1 setsid nohup "$BIN" --root "./$WEST_ROOT" --listen "$LISTEN" >>"$LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"
    for _ in $(seq 1 300); do
        grep -q "s3fs-gateway listening on " "$LOG" && break
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            echo "--- $LOG ---" >&2
            cat "$LOG" >&2
            die "s3fs-gateway exited during start-up (is $LISTEN already in use?)"
        fi
        sleep 0.1
    done
    grep -q "s3fs-gateway listening on " "$LOG" || {
        cat "$LOG" >&2
        die "s3fs-gateway did not report 'listening on' within 30 s"
    }
    grep "s3fs-gateway listening on " "$LOG" | head -n 1
fi

# ---------------------------------------------------------------------------------------------
# Credentials: printed once when the gateway generates them, otherwise in the credentials file.
line=$(grep -m 1 "generated credentials in " "$LOG" || true)
if [[ -n $line ]]; then
    ACCESS_KEY=$(sed -n 's/.*access_key=\([^ ]*\).*/\1/p' <<<"$line")
    SECRET_KEY=$(sed -n 's/.*secret_key=\([^ ]*\).*/\1/p' <<<"$line")
    echo "using the credentials the gateway just generated in $CREDENTIALS"
else
    [[ -f $CREDENTIALS ]] || die "no credentials: $CREDENTIALS does not exist"
    read -r ACCESS_KEY SECRET_KEY < <(python3 - "$CREDENTIALS" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    keys = tomllib.load(f).get("keys", [])
key = next((k for k in keys if k.get("role") == "backend"), None)
if key is None:
    sys.exit("no key with role = \"backend\" in " + sys.argv[1])
print(key["access_key"], key["secret_key"])
PY
    )
    echo "using the backend key from $CREDENTIALS"
fi
[[ -n ${ACCESS_KEY:-} && -n ${SECRET_KEY:-} ]] || die "could not read the gateway's credentials"

export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN
s3() { aws --endpoint-url "$ENDPOINT" "$@"; }

# ---------------------------------------------------------------------------------------------
say "creating bucket $BUCKET"
if s3 s3api head-bucket --bucket "$BUCKET" >/dev/null 2>&1; then
    echo "bucket $BUCKET already exists"
else
    s3 s3 mb "s3://$BUCKET"
fi

say "writing sample files under $WORK/src"
rm -rf "$WORK/src" "$WORK/download"
mkdir -p "$WORK/src/docs" "$WORK/src/data"
printf 'hello from gpair east\n' >"$WORK/src/hello.txt"
printf '# notes\n\nA file in a subdirectory.\n' >"$WORK/src/docs/notes.md"
head -c $((24 * 1024 * 1024)) /dev/urandom >"$WORK/src/data/big.bin" # > 8 MiB: multipart
ls -l "$WORK/src" "$WORK/src/docs" "$WORK/src/data"

say "uploading (aws s3 cp --recursive; big.bin goes up in 8 MiB parts)"
s3 s3 cp --recursive --only-show-errors "$WORK/src" "s3://$BUCKET/samples/"

say "listing (aws s3 ls --recursive s3://$BUCKET/)"
s3 s3 ls --recursive "s3://$BUCKET/"

say "head-object samples/data/big.bin (a multipart ETag ends in -<parts>)"
s3 s3api head-object --bucket "$BUCKET" --key samples/data/big.bin

say "downloading and comparing"
s3 s3 cp --recursive --only-show-errors "s3://$BUCKET/samples/" "$WORK/download"
for f in hello.txt docs/notes.md data/big.bin; do
    cmp "$WORK/src/$f" "$WORK/download/$f"
    echo "identical: $f"
done

say "the west tree: every object is a plain file (ls -lR $WEST_ROOT/$BUCKET)"
ls -lR "$WEST_ROOT/$BUCKET"

pid=$(running_pid) || die "the gateway stopped unexpectedly; see $LOG"
cat <<EOF

==> done
  s3fs-gateway  pid $pid, $ENDPOINT (log: $LOG, pid file: $PID_FILE)
  west tree     ./$WEST_ROOT (bucket '$BUCKET' is the directory ./$WEST_ROOT/$BUCKET)
  credentials   $CREDENTIALS (mode 0600; role backend)
  did           created bucket '$BUCKET', uploaded 3 sample files (one of 24 MiB, multipart),
                listed them, downloaded them and compared them byte for byte

  Use it with any S3 client, e.g. the AWS CLI:
    export AWS_ACCESS_KEY_ID=$ACCESS_KEY
    export AWS_SECRET_ACCESS_KEY='<secret_key from $CREDENTIALS>'
    export AWS_DEFAULT_REGION=us-east-1
    aws --endpoint-url $ENDPOINT s3 ls s3://$BUCKET/ --recursive
    aws --endpoint-url $ENDPOINT s3 cp ./somefile s3://$BUCKET/somefile

  Stop it:   deploy/quickstart.sh stop
  Run again: deploy/quickstart.sh   (reuses the running gateway and its credentials)
  Contract:  docs/gateway.md
EOF
