# Shell helpers shared by the bench scripts (bench/sync.sh, bench/migrate.sh): sourced, not run.
# Expects LOG_LEVEL and TCK (clock ticks per second) to be set by the caller where used.

# need CMD PACKAGE: installs PACKAGE with apt-get when CMD is missing.
need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "== $1 is missing; installing it with apt-get" >&2
    apt-get install -y "$2" >/dev/null || { echo "cannot install $2; install it and retry" >&2; exit 1; }
}

# stop PID: SIGTERM, then wait for it to end (SIGKILL after 35 s).
stop() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 350); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# stop_bg: SIGINT to the counters and profilers in BG_PIDS (they write their results), wait.
stop_bg() {
    local p
    for p in "${BG_PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    BG_PIDS=()
}

# start NAME DIR CMD...: starts CMD with stdout and stderr in DIR/NAME.{stdout,stderr}; sets PID.
# The files exist when it returns (wait_line reads them at once).
start() {
    local name=$1 dir=$2
    shift 2
    : >"$dir/$name.stdout"
    : >"$dir/$name.stderr"
    RUST_LOG=$LOG_LEVEL "$@" >>"$dir/$name.stdout" 2>>"$dir/$name.stderr" &
    PID=$!
}

# wait_line PID FILE PATTERN WHAT: waits for a line in FILE (sed pattern), prints its match.
wait_line() {
    local pid=$1 file=$2 pattern=$3 what=$4 got=""
    for _ in $(seq 1 600); do
        got=$(sed -n "$pattern" "$file" | head -n1)
        [ -n "$got" ] && { echo "$got"; return; }
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$what did not start; stderr:" >&2
    cat "${file%.stdout}.stderr" >&2
    exit 1
}

# cpu_s PID: utime + stime of PID (all threads, living and exited), seconds; "null" without PID.
cpu_s() {
    if [ -z "$1" ]; then echo null; return; fi
    awk -v t="$TCK" '{ sub(/^.*\) /, ""); split($0, f, " "); printf "%.2f\n", (f[12] + f[13]) / t }' "/proc/$1/stat"
}

# prepare_run KIND BINARY...: what every benchmark run sets up. SOURCE says what was measured
# (the commit, the source directories that differ from it, when the first BINARY was built);
# OUT is --out or bench/results/KIND-DATE.jsonl (emptied); WORK a new work directory under
# TMPDIR, with copies of the BINARY paths in WORK/bin (a build in the shared target directory
# during the run cannot mix two versions).
prepare_run() {
    local kind=$1 dirty
    shift
    SOURCE="git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    dirty=$(git status --porcelain -- s3fs-gateway backend gpair-cli proto Cargo.toml Cargo.lock 2>/dev/null | awk '{print $2}' | tr '\n' ' ')
    [ -n "$dirty" ] && SOURCE="$SOURCE + uncommitted changes in: $dirty"
    # With --no-build the binaries may be older than the tree: say when they were built.
    SOURCE="$SOURCE; binaries built $(date -u -r "$1" +%Y-%m-%dT%H:%M:%SZ)"
    STAMP=$(date +%Y%m%d-%H%M%S)
    if [ -z "$OUT" ]; then
        mkdir -p "$REPO/bench/results"
        OUT=$REPO/bench/results/$kind-$STAMP.jsonl
    fi
    : >"$OUT"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$kind-bench.XXXXXX")
    mkdir -p "$WORK/bin"
    cp "$@" "$WORK/bin/"
}

# helper ARGS...: the script's python helper ($HELPER).
helper() { python3 "$HELPER" "$@"; }
# jget JSON KEY: one top-level value of a JSON object ("" when missing or null).
jget() { python3 -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"; }

# start_bound_daemon CONFIG REMOTE: starts gpair-backend ($DAEMON) with CONFIG, adds the gateway
# ($ENDPOINT, backend key $AK/$SK) as gpeer west and binds gpair $NAME ($SHARE <-> REMOTE).
# Sets D_PID, and G to the gpair command line for $SOCK.
start_bound_daemon() {
    start daemon "$WORK" "$DAEMON" --config "$1"
    D_PID=$PID
    wait_line "$D_PID" "$WORK/daemon.stdout" 's#^gpair-backend listening on ##p' gpair-backend >/dev/null
    G=("$GPAIR" --backend "$SOCK")
    GPAIR_SECRET_KEY=$SK "${G[@]}" gpeer add west --endpoint "$ENDPOINT" --cluster-id LC_222 \
        --access-key "$AK" >/dev/null
    "${G[@]}" bind "$NAME" --gpeer west --local "$SHARE" --remote "$2" >/dev/null
}
