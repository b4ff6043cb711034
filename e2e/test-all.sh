#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and in-process HTTP tests,
# then the end-to-end tests against a running `berth serve` (OCI conformance
# suite, real clients, memory). Installs what it needs on a fresh Debian
# machine. Run from anywhere: ./e2e/test-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n==== %s ====\n' "$*"; }

step "toolchain"
cargo --version
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --all-targets --release -- -D warnings

step "cargo build --release"
cargo build --release

step "cargo test"
cargo test --release 2>&1 | tee target/cargo-test.log
grep -E '^test result:' target/cargo-test.log | awk '{p+=$4; f+=$6} END {printf "cargo tests: %d passed, %d failed\n", p, f}'

if [ -x e2e/run-all.sh ]; then
  step "end-to-end tests"
  BERTH_BIN="$PWD/target/release/berth" ./e2e/run-all.sh
fi
