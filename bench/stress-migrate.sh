#!/usr/bin/env bash
# Long crash-safety stress of the migration engine: the randomized kill loop of
# tests/tests/backend_migrate.rs (SIGKILL of gpair-backend at random moments of a mixed
# offload/recall workload, then DESIGN's invariants I1-I5 checked) with many more rounds and
# files than CI runs.
#
#   bench/stress-migrate.sh [ROUNDS] [FILES]     defaults: 30 rounds, 300 files
#
# CI (scripts/test.sh) runs the same test with 3 rounds of 40 files. Debug build with the
# backend's failpoints feature, like scripts/test.sh, so both share one set of artifacts.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

ROUNDS=${1:-30}
FILES=${2:-300}
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -gt 0 ]] || { echo "error: ROUNDS must be a positive number, not '$ROUNDS'" >&2; exit 2; }
[[ $FILES =~ ^[0-9]+$ && $FILES -gt 0 ]] || { echo "error: FILES must be a positive number, not '$FILES'" >&2; exit 2; }

cargo build --workspace --bins --features gpair-backend/failpoints
export GPAIR_BIN_DIR=${CARGO_TARGET_DIR:-$PWD/target}/debug
export GPAIR_KILL_LOOP_N=$ROUNDS GPAIR_KILL_LOOP_FILES=$FILES
start=$SECONDS
cargo test -p gpair-tests --test backend_migrate -- --exact randomized_kill_loop --nocapture
echo "stress-migrate: $ROUNDS kills over $FILES files: invariants held ($((SECONDS - start)) s)"
