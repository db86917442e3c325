#!/usr/bin/env bash
# Sets up what is missing, builds the release app and runs it on its embedded SQLite database
# (data/gc-status.db). Settings come from .env, created with fresh random secrets on first run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PWD/end2end/node_modules/.bin:$PATH"

# --split: the admin pages' code is loaded only when they are opened (lazy routes).
cargo leptos build --release --split

if [ ! -f .env ]; then
  random() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
  sed -e "s/^GC_STATUS_HMAC_SECRETS=.*/GC_STATUS_HMAC_SECRETS=$(random)/" \
      -e "s/^GC_STATUS_ADMIN_TOKEN=.*/GC_STATUS_ADMIN_TOKEN=$(random)/" \
      .env.example > .env
  chmod 600 .env
  echo "==> created .env with a random webhook secret and admin token (see .env)"
fi
set -a
# shellcheck disable=SC1091
. ./.env
set +a

echo "==> gc-status on http://${LEPTOS_SITE_ADDR:-127.0.0.1:3000} (Ctrl-C stops it)"
exec target/release/gc-status "$@"
