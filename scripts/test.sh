#!/usr/bin/env bash
# The one command that runs gpair's whole test suite on a fresh Debian 12 machine that has Rust,
# cargo-nextest and Python 3.11 with pip.
#
#   1. installs what the tests need, only where it is missing:
#        Debian: rclone, s3fs (s3fs-fuse), fuse3, attr, libclang-dev (RocksDB), hyperfine
#        PyPI:   boto3, awscli, moto[server] (moto.server needs flask and flask-cors)
#   2. cargo fmt --check, cargo clippy -D warnings, cargo build of every binary
#   3. cargo nextest run over the whole workspace (the end-to-end tests in tests/ start the
#      binaries just built, found through GPAIR_BIN_DIR)
#
# Debug builds only: nothing here builds in release mode. Everything is built with the backend's
# `failpoints` feature (crash-test hooks, inert unless FAILPOINTS is set), so clippy, the build and
# the tests share one set of artifacts and the crash matrix runs. Run from anywhere; `.ci/run`
# calls this.
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."
REPO_ROOT=$PWD

START_ALL=$SECONDS
STEP_NAME=""
STEP_START=$SECONDS
section() {
    if [[ -n $STEP_NAME ]]; then
        printf -- '----- %s: ok (%ds)\n' "$STEP_NAME" $((SECONDS - STEP_START))
    fi
    STEP_NAME=$1
    STEP_START=$SECONDS
    printf '\n===== %s =====\n' "$1"
}

trap 'printf "\n===== FAILED: %s =====\n" "$STEP_NAME" >&2' ERR

# Root runs apt-get directly; anyone else goes through sudo.
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    SUDO=(sudo)
fi

# ---------------------------------------------------------------------------------------------
section "system packages (apt, only where missing)"
apt_missing=()
need_cmd() { # need_cmd COMMAND PACKAGE
    if command -v "$1" >/dev/null 2>&1; then
        echo "ok       $1 ($(command -v "$1"))"
    else
        echo "missing  $1 -> apt package $2"
        apt_missing+=("$2")
    fi
}
need_cmd rclone rclone
need_cmd s3fs s3fs
need_cmd fusermount3 fuse3
need_cmd getfattr attr
need_cmd hyperfine hyperfine
need_cmd openssl openssl
# The mount tests drive these through gpair-mount.
need_cmd vim vim
need_cmd rsync rsync
need_cmd git git
need_cmd tar tar
# The west fault suite makes network namespaces and netem/tbf qdiscs.
need_cmd ip iproute2
need_cmd tc iproute2
if dpkg -s libclang-dev >/dev/null 2>&1; then
    echo "ok       libclang-dev (dpkg)"
else
    echo "missing  libclang-dev (needed to build RocksDB)"
    apt_missing+=(libclang-dev)
fi
if ((${#apt_missing[@]} > 0)); then
    echo "installing: ${apt_missing[*]}"
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${apt_missing[@]}"
else
    echo "nothing to install"
fi

# ---------------------------------------------------------------------------------------------
section "python packages (pip, only where missing)"
# pip --user puts console scripts (aws) here.
export PATH="$HOME/.local/bin:$PATH"
pip_missing=()
need_py() { # need_py MODULE PACKAGE
    if python3 -c "import $1" >/dev/null 2>&1; then
        echo "ok       python module $1"
    else
        echo "missing  python module $1 -> pip package $2"
        pip_missing+=("$2")
    fi
}
need_py boto3 boto3
need_py moto.server "moto[server]"
if command -v aws >/dev/null 2>&1; then
    echo "ok       aws ($(command -v aws))"
else
    echo "missing  aws -> pip package awscli"
    pip_missing+=(awscli)
fi
if ((${#pip_missing[@]} > 0)); then
    echo "installing: ${pip_missing[*]}"
    pip_args=(install --quiet --disable-pip-version-check)
    # A system Python (PEP 668, "externally managed") refuses plain installs: use --user there.
    if python3 -c 'import sys; sys.exit(0 if sys.prefix != sys.base_prefix else 1)' ||
        [[ -w $(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') ]]; then
        python3 -m pip "${pip_args[@]}" "${pip_missing[@]}" ||
            python3 -m pip "${pip_args[@]}" --break-system-packages "${pip_missing[@]}"
    else
        python3 -m pip "${pip_args[@]}" --user "${pip_missing[@]}" ||
            python3 -m pip "${pip_args[@]}" --user --break-system-packages "${pip_missing[@]}"
    fi
    # pyenv only sees new console scripts (aws) after a rehash.
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
    command -v aws >/dev/null 2>&1 || {
        echo "error: awscli installed but \`aws\` is not on PATH" >&2
        exit 1
    }
else
    echo "nothing to install"
fi

# ---------------------------------------------------------------------------------------------
section "rust toolchain"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "error: cargo-nextest is missing; install it with" >&2
    echo "  cargo install --locked cargo-nextest   (or see https://nexte.st/)" >&2
    exit 1
fi
cargo --version
cargo nextest --version | head -n 1
if [[ -e /dev/fuse ]]; then
    echo "/dev/fuse present: FUSE tests will mount"
else
    echo "note: /dev/fuse is missing: FUSE tests will print SKIP and pass without mounting"
fi

# ---------------------------------------------------------------------------------------------
section "cargo fmt --all -- --check"
cargo fmt --all -- --check

FEATURES=(--features gpair-backend/failpoints)

section "cargo clippy --workspace --all-targets ${FEATURES[*]} -- -D warnings"
cargo clippy --workspace --all-targets "${FEATURES[@]}" -- -D warnings

section "cargo build --workspace --bins ${FEATURES[*]}"
cargo build --workspace --bins "${FEATURES[@]}"

section "cargo nextest run --workspace --no-fail-fast"
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
export GPAIR_BIN_DIR="$TARGET_DIR/debug"
echo "GPAIR_BIN_DIR=$GPAIR_BIN_DIR"
cargo nextest run --workspace --no-fail-fast "${FEATURES[@]}"

printf -- '----- %s: ok (%ds)\n' "$STEP_NAME" $((SECONDS - STEP_START))
printf '\n===== all steps passed in %ds =====\n' $((SECONDS - START_ALL))
