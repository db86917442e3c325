#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests and benchmarks, from Debian's `postgresql`
# package (installed if missing): its own data directory and a unix socket under DIR, no TCP.
# As root, the server runs as the `postgres` user, which must reach DIR: put it under /tmp
# (short, too: a socket's path must stay under about 100 bytes).
#   scripts/pg-cluster.sh start DIR   prints the database URL to use (postgres://…?host=DIR)
#   scripts/pg-cluster.sh halt DIR    stops it, keeping its data (start brings it back)
#   scripts/pg-cluster.sh stop DIR    stops it and removes DIR
# FSYNC=off (the default here) trades durability for speed: for tests only. Benchmarks pass
# FSYNC=on so a commit means what it means in production. TLS_PORT=N also listens on
# 127.0.0.1:N with TLS only (a certificate for localhost from a throwaway CA, DIR/ca.crt).
set -euo pipefail
cmd=${1:?start|halt|stop}
dir=${2:?directory for the cluster}
fsync=${FSYNC:-off}

say() { printf '==> %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

# initdb and postgres refuse to run as root: run them as the `postgres` user then.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$cmd" in
  start)
    if ! bindir >/dev/null; then
      say "installing Debian's postgresql package (once)"
      as_root apt-get update >&2
      DEBIAN_FRONTEND=noninteractive as_root apt-get install -y postgresql >&2
    fi
    bin=$(bindir)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ "$(id -u)" -eq 0 ]; then
      chown postgres "$dir"
      if ! runuser -u postgres -- test -w "$dir"; then
        echo "the postgres user cannot reach $dir: use a directory under /tmp" >&2
        exit 1
      fi
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_owner "$bin/initdb" -D "$dir/data" -U gc_status --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    listen="-c listen_addresses="
    if [ -n "${TLS_PORT:-}" ]; then
      if [ ! -f "$dir/server.key" ]; then
        # A throwaway CA (DIR/ca.crt, what clients verify against) and a server certificate
        # for localhost signed by it.
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=gc-status test CA" \
          -keyout "$dir/ca.key" -out "$dir/ca.crt" >/dev/null 2>&1
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
          -keyout "$dir/server.key" -out "$dir/server.csr" >/dev/null 2>&1
        printf 'basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$dir/server.ext"
        openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
          -CAcreateserial -days 2 -extfile "$dir/server.ext" -out "$dir/server.crt" >/dev/null 2>&1
        chmod 600 "$dir/server.key"
        [ "$(id -u)" -ne 0 ] || chown postgres "$dir/server.key" "$dir/server.crt"
      fi
      # TCP only with TLS: `hostssl` lines accept, plain `host` ones are refused.
      printf 'local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n' \
        > "$dir/pg_hba.conf"
      [ "$(id -u)" -ne 0 ] || chown postgres "$dir/pg_hba.conf"
      listen="-c listen_addresses=127.0.0.1 -p $TLS_PORT -c ssl=on -c ssl_cert_file=$dir/server.crt \
              -c ssl_key_file=$dir/server.key -c hba_file=$dir/pg_hba.conf"
    fi
    if ! as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start \
        -o "-k $dir $listen -c fsync=$fsync -c full_page_writes=$fsync \
            -c max_connections=400 -c shared_buffers=256MB" >/dev/null
    fi
    if [ -n "${TLS_PORT:-}" ]; then
      echo "postgres://gc_status@localhost:$TLS_PORT/postgres"
    else
      echo "postgres://gc_status@localhost/postgres?host=$dir"
    fi
    ;;
  halt)
    bin=$(bindir)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  stop)
    if [ -d "$dir/data" ] && bin=$(bindir); then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 start|halt|stop DIR" >&2; exit 2 ;;
esac
