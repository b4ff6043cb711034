#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and in-process HTTP tests, the
# tests against the real binary, then the end-to-end tests against a running
# `berth serve` (OCI conformance suite, real clients, memory, the operator on a
# real API server). berth is compiled once, in the ci-test profile (Cargo.toml):
# the real-binary tests and the e2e scripts run the `berth` that `cargo test`
# builds beside its tests, not a separate release build (11 of 49 minutes on 2
# cores from an empty cache).
# Installs what it needs on a fresh Debian machine. Run from anywhere:
#   ./e2e/test-all.sh
# The last line is "N passed, N failed" over cargo tests and e2e scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# Keep the build cache outside the work tree so fresh clones build warm.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/berth/target}"
mkdir -p "$CARGO_TARGET_DIR"

# Each phase's duration, printed as a table at the end of the log, before
# the last line (or last of all when a phase fails and stops the script).
phases=()
phase_start=$SECONDS
phase=""
printed=""
end_phase() {
    if [ -n "$phase" ]; then
        phases+=("$phase|$((SECONDS - phase_start))")
    fi
    phase=""
}
print_phases() {
    [ -z "$printed" ] || return 0
    printed=1
    end_phase
    printf '\n==== phase durations ====\n'
    printf '%-28s %8s\n' phase seconds
    local p total=0
    for p in "${phases[@]}"; do
        printf '%-28s %8s\n' "${p%|*}" "${p##*|}"
        total=$((total + ${p##*|}))
    done
    printf '%-28s %8s\n' total "$total"
}
trap 'print_phases' EXIT
step() {
    end_phase
    phase="$*"
    phase_start=$SECONDS
    printf '\n==== %s (%s) ====\n' "$*" "$(date +%H:%M:%S)"
}

step "toolchain"
cargo --version
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "cargo fmt --check"
cargo fmt --all -- --check

# The core (oci, storage, metadata, auth, lifecycle, registry) never reaches
# kube, k8s_openapi or src/kubernetes; no import circle; config a leaf.
step "layering check"
python3 .ci/layering.py

# Lints need no optimised build: clippy in the dev profile.
step "cargo clippy -D warnings"
cargo clippy --all-targets -- -D warnings

# The tests start their own PostgreSQL (tests/common/postgres.rs): its
# programs must be here.
step "install PostgreSQL"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends postgresql >/dev/null
fi
ls -d /usr/lib/postgresql/*/bin

# The S3 store's tests and the e2e runs on S3 use a real S3-compatible
# server, s3s-fs from crates.io (tests/common/s3.rs starts it), built once
# into the tools cache (about 2 minutes on 2 cores). 0.14.1 is the newest
# that builds with the pinned toolchain (0.15 needs Rust 1.96).
step "install s3s-fs"
S3S_FS_VERSION=0.14.1
tools="${XDG_CACHE_HOME:-$HOME/.cache}/berth/tools"
if ! [ -x "$tools/bin/s3s-fs" ] || ! grep -qs "\"s3s-fs $S3S_FS_VERSION " "$tools/.crates.toml"; then
    CARGO_TARGET_DIR="$tools/target" cargo install --quiet --locked --features binary \
        --version "$S3S_FS_VERSION" --root "$tools" s3s-fs
    rm -rf "$tools/target"
fi
ls -l "$tools/bin/s3s-fs"
export BERTH_S3S_FS="$tools/bin/s3s-fs"

# Unit tests, the integration tests (one binary, tests/it) and the examples'
# build, in the quick-to-build ci-test profile (Cargo.toml); the tests that
# run the real berth (crash, disk-full, slow clients) run the binary Cargo
# builds with them (CARGO_BIN_EXE_berth), which the e2e scripts run too.
step "cargo test"
log="$CARGO_TARGET_DIR/cargo-test.log"
unset BERTH_BIN
BERTH="$CARGO_TARGET_DIR/ci-test/berth"
cargo test --profile ci-test 2>&1 | tee "$log"
[ -x "$BERTH" ] || { echo "cargo test built no $BERTH" >&2; exit 1; }
"$BERTH" --version
# The library's unit tests run the metadata tests on SQLite and PostgreSQL;
# the integration tests run once more with their metadata on PostgreSQL (a
# server the tests start, tests/common/postgres.rs).
step "cargo test (integration, PostgreSQL)"
BERTH_TEST_BACKEND=postgres cargo test --profile ci-test --test it 2>&1 | tee -a "$log"
read -r cargo_passed cargo_failed < <(grep -E '^test result:' "$log" | awk '{p+=$4; f+=$6} END {print p+0, f+0}')
echo "cargo tests: $cargo_passed passed, $cargo_failed failed"

step "end-to-end tests"
e2e_log="$CARGO_TARGET_DIR/e2e.log"
e2e_rc=0
BERTH_BIN="$BERTH" ./e2e/run-all.sh 2>&1 | tee "$e2e_log" || e2e_rc=$?
read -r e2e_passed e2e_failed < <(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$e2e_log" | tail -1 | awk '{print $1, $3}')
e2e_passed=${e2e_passed:-0}; e2e_failed=${e2e_failed:-1}

step "summary"
echo "cargo tests:  $cargo_passed passed, $cargo_failed failed"
echo "e2e scripts:  $e2e_passed passed, $e2e_failed failed"
[ -d artifacts/ui ] && echo "web UI screenshots (artifacts): $PWD/artifacts/ui"
print_phases
echo "$((cargo_passed + e2e_passed)) passed, $((cargo_failed + e2e_failed)) failed"
[ "$e2e_rc" -eq 0 ] && [ "$e2e_failed" -eq 0 ]
