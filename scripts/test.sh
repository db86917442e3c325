#!/usr/bin/env bash
# Sets up what is missing, then runs every test: unit and integration tests (cargo test), then
# the browser tests (Playwright + Chromium) against the release binary.
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
cargo test --release --features ssr
(cd end2end && npx playwright test)
echo "==> all tests passed"
