#!/usr/bin/env bash
# Long west fault stress: the scenarios of tests/tests/faults_west.rs (gateway SIGKILLs and a
# long stop during mixed offload/recall/sync; netem delay/loss and a full partition between
# backend and gateway in a network namespace; a hanging and a garbage-answering gateway behind
# the fault proxy; a multipart upload cut mid-way) at a larger scale than CI, each ending with
# DESIGN's invariants I1-I5.
#
#   bench/stress-faults.sh [FILES] [STOP_SECS] [PARTITION_SECS] [KILLS]
#       defaults: 80 files, a 60 s gateway stop, a 30 s partition, 10 SIGKILLs
#
# The namespace scenario needs root (and netem for its delay/loss phase); without them it says
# SKIPPED and the rest still runs. Debug build with the backend's failpoints feature, like
# scripts/test.sh, so both share one set of artifacts.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

FILES=${1:-80}
STOP=${2:-60}
PARTITION=${3:-30}
KILLS=${4:-10}
for v in FILES STOP PARTITION KILLS; do
    [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || { echo "error: $v must be a positive number, not '${!v}'" >&2; exit 2; }
done

cargo build --workspace --bins --features gpair-backend/failpoints
export GPAIR_BIN_DIR=${CARGO_TARGET_DIR:-$PWD/target}/debug
export GPAIR_FAULTS_FILES=$FILES GPAIR_FAULTS_STOP_SECS=$STOP GPAIR_FAULTS_PARTITION_SECS=$PARTITION
export GPAIR_FAULTS_KILLS=$KILLS GPAIR_FAULTS_HANG_SECS=$((STOP / 2 > 5 ? STOP / 2 : 5))
start=$SECONDS
log=$(mktemp -t stress-faults.XXXXXX.log)
cargo test -p gpair-tests --test faults_west --no-run >>"$log" 2>&1
# One scenario at a time: they are long, and the numbers should not depend on each other.
status=0
failed=()
for t in $(cargo test -p gpair-tests --test faults_west -- --list 2>/dev/null | sed -n 's/: test$//p'); do
    t0=$SECONDS
    s=0
    cargo test -p gpair-tests --test faults_west -- --exact "$t" --nocapture >>"$log" 2>&1 || s=$?
    if [[ $s -eq 0 ]]; then
        printf '%-70s ok      %4d s
' "$t" $((SECONDS - t0))
    else
        printf '%-70s FAILED  %4d s
' "$t" $((SECONDS - t0))
        failed+=("$t")
        status=$s
    fi
done
grep -E 'SKIPPED|netem unavailable' "$log" | sort -u || true
if [[ $status -ne 0 ]]; then
    echo "stress-faults: FAILED: ${failed[*]} ($((SECONDS - start)) s); full output in $log" >&2
    exit "$status"
fi
echo "full output: $log"
echo "stress-faults: $FILES files, $KILLS gateway kills, ${STOP} s gateway stop, ${PARTITION} s partition, hang/garbage ${GPAIR_FAULTS_HANG_SECS} s: invariants held ($((SECONDS - start)) s)"
