#!/usr/bin/env bash
# Sets up what is missing, then runs every test: unit and integration tests (cargo test) on
# SQLite and again on PostgreSQL (a throwaway cluster, removed afterwards), then the browser
# tests (Playwright + Chromium) against the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export PATH="$HOME/.cargo/bin:$PWD/end2end/node_modules/.bin:$PATH"
mkdir -p target/tmp
export TMPDIR="$PWD/target/tmp"

cargo fmt --all --check
# Lints for both builds: the server (with tests and benchmarks) and the browser's wasm.
cargo clippy --release --features ssr --all-targets -- -D warnings
cargo clippy --release --lib --target wasm32-unknown-unknown --no-default-features --features hydrate -- -D warnings
# One release build serves everything: cargo-leptos's site, `cargo test` and Playwright.
# --split: the admin pages' code is loaded only when they are opened (lazy routes).
cargo leptos build --release --split

# A throwaway PostgreSQL cluster (Debian's package, a unix socket, fsync off) for the tests
# that need one and for the suite's second run; stopped and removed whatever happens.
pg_dir=$(mktemp -d /tmp/gc-status-pg.XXXXXX)
trap 'scripts/pg-cluster.sh stop "$pg_dir"' EXIT
GC_STATUS_TEST_POSTGRES=$(scripts/pg-cluster.sh start "$pg_dir")
export GC_STATUS_TEST_POSTGRES

echo "==> tests on SQLite"
GC_STATUS_TEST_BACKEND=sqlite cargo test --release --features ssr
echo "==> tests on PostgreSQL"
GC_STATUS_TEST_BACKEND=postgres cargo test --release --features ssr --lib --tests
(cd end2end && npx playwright test)
echo "==> all tests passed"
