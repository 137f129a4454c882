#!/usr/bin/env bash
# The production topology without Docker: one PostgreSQL cluster, two `serve` replicas that
# both run the scheduler, and Debian's nginx in front with infra-prod/nginx.conf (the same
# template the compose file runs, filled in from the environment here).
#
#   infra-prod/local.sh up           start everything (a fresh cluster on first use); prints the URL
#   infra-prod/local.sh down         stop everything (the data stays in TDC_LOCAL_DIR)
#   infra-prod/local.sh status       which pieces run
#   infra-prod/local.sh stop N       SIGTERM replica N (1 or 2) and wait until it has drained
#   infra-prod/local.sh kill N       SIGKILL replica N
#   infra-prod/local.sh start N      start replica N and wait until /health is UP
#   infra-prod/local.sh restart N    stop N, start N, wait 3 s (one step of a rolling restart)
#
# Settings (environment): TDC_LOCAL_DIR (state, default .tinydevcrm-prod in the repository),
# TDC_BIN (the binary; default target/release/tinydevcrm, built when missing), TDC_NGINX_PORT
# (8080), TDC_APP_PORT_1 / TDC_APP_PORT_2 (8001 / 8002), TDC_UPLOAD_LIMIT_BYTES (the service's
# default, 1 GiB). Ports are kept in TDC_LOCAL_DIR/env on first `up`; that file can be sourced:
# it holds TDC_URL (nginx) and DATABASE_URL (the service role). Other TDC_* variables set when
# calling `up`/`start` reach the replicas.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DIR=${TDC_LOCAL_DIR:-$REPO/.tinydevcrm-prod}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
STATE=$DIR/env

say() { echo "local.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# PostgreSQL's server binaries and nginx (Debian packages), installed only when missing.
install_missing() {
  local packages=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 ||
    packages+=(postgresql)
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || packages+=(nginx)
  command -v curl >/dev/null 2>&1 || packages+=(curl)
  command -v envsubst >/dev/null 2>&1 || packages+=(gettext-base)
  if [ "${#packages[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${packages[*]}; install them (apt-get install ${packages[*]})"
    say "installing ${packages[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# First `up`: ports, secrets and the service role's password, kept for every later command.
write_state() {
  [ -f "$STATE" ] && return
  local password secret pg_port
  password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  secret=$(head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n')
  pg_port=$(free_port)
  umask 077
  cat > "$STATE" <<EOF
TDC_URL=http://127.0.0.1:${TDC_NGINX_PORT:-8080}
TDC_NGINX_PORT=${TDC_NGINX_PORT:-8080}
TDC_APP_PORT_1=${TDC_APP_PORT_1:-8001}
TDC_APP_PORT_2=${TDC_APP_PORT_2:-8002}
PG_PORT=$pg_port
PG_SOCKET_DIR=$DIR/pg-run
DATABASE_URL=postgres://tinydevcrm:$password@127.0.0.1:$pg_port/tinydevcrm
JWT_SECRET=$secret
EOF
}

load_state() {
  [ -f "$STATE" ] || die "nothing set up in $DIR; run: infra-prod/local.sh up"
  # shellcheck disable=SC1090
  . "$STATE"
}

binary() {
  BIN=${TDC_BIN:-$REPO/target/release/tinydevcrm}
  if [ ! -x "$BIN" ]; then
    [ -z "${TDC_BIN:-}" ] || die "TDC_BIN=$BIN is not an executable"
    say "building the release binary"
    (cd "$REPO" && cargo build --release --quiet)
  fi
}

# --- PostgreSQL -------------------------------------------------------------------------------
as_postgres=()
pg_bin() {
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r | head -1)
  [ -n "$PG_BIN" ] || PG_BIN=$(dirname "$(command -v initdb)")
  # PostgreSQL refuses to run as root: its files belong to the `postgres` system user then.
  if [ "$(id -u)" = 0 ]; then as_postgres=(runuser -u postgres --); fi
}

pg_running() { [ -f "$DIR/pg/postmaster.pid" ] && "${as_postgres[@]}" "$PG_BIN/pg_ctl" -D "$DIR/pg" status >/dev/null 2>&1; }

psql_super() {
  "${as_postgres[@]}" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U postgres "$@"
}

pg_up() {
  pg_bin
  mkdir -p "$PG_SOCKET_DIR"
  chmod 755 "$DIR"
  if [ "$(id -u)" = 0 ]; then chown postgres "$PG_SOCKET_DIR"; fi
  local fresh=0
  if [ ! -f "$DIR/pg/PG_VERSION" ]; then
    mkdir -p "$DIR/pg"
    if [ "$(id -u)" = 0 ]; then chown postgres "$DIR/pg"; fi
    "${as_postgres[@]}" "$PG_BIN/initdb" -D "$DIR/pg" -U postgres --auth-local=trust \
      --auth-host=scram-sha-256 >/dev/null
    fresh=1
  fi
  if ! pg_running; then
    "${as_postgres[@]}" "$PG_BIN/pg_ctl" -D "$DIR/pg" -w -l "$DIR/pg/server.log" \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $PG_SOCKET_DIR -c max_connections=200" start >/dev/null
  fi
  if [ "$fresh" = 1 ]; then
    # The service role as docs/OPERATIONS.md asks: LOGIN CREATEROLE, not a superuser; its
    # database; then the privilege hardening, as the superuser.
    local password=${DATABASE_URL#postgres://tinydevcrm:}
    password=${password%%@*}
    psql_super -d postgres -v pw="$password" <<'SQL'
CREATE ROLE tinydevcrm LOGIN CREATEROLE NOSUPERUSER PASSWORD :'pw';
CREATE DATABASE tinydevcrm OWNER tinydevcrm;
SQL
    psql_super -d tinydevcrm -f "$REPO/src/db/harden.sql" >/dev/null
    DATABASE_URL=$DATABASE_URL "$BIN" migrate
  fi
}

pg_down() {
  pg_bin
  if pg_running; then "${as_postgres[@]}" "$PG_BIN/pg_ctl" -D "$DIR/pg" -m fast -w stop >/dev/null; fi
}

# --- the replicas ------------------------------------------------------------------------------
app_port() { local v="TDC_APP_PORT_$1"; echo "${!v}"; }
app_pid() { cat "$DIR/app$1.pid" 2>/dev/null || true; }
app_running() { local pid; pid=$(app_pid "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

app_start() {
  local n=$1 port
  port=$(app_port "$n")
  if app_running "$n"; then say "replica $n already runs"; return; fi
  mkdir -p "$DIR/app$n"
  # One HTTP worker per replica (TDC_WORKERS, overridable): sqlx binds a connection to the
  # runtime that opened it, and actix-web runs each worker on a runtime of its own that ends
  # when that worker has drained; with several, a request still draining on one worker could
  # use a pooled connection of a worker already gone (a 500 seen 1 in ~8 rolling restarts).
  # Replicas, not workers, add capacity here.
  DATABASE_URL=$DATABASE_URL JWT_SECRET=$JWT_SECRET TDC_DATA_DIR="$DIR/app$n" \
    TDC_WORKERS=${TDC_WORKERS:-1} \
    TDC_BIND="127.0.0.1:$port" TDC_STREAM_BIND= TDC_TRUST_FORWARDED_FOR=true \
    setsid "$BIN" serve >> "$DIR/app$n.log" 2>&1 < /dev/null &
  echo $! > "$DIR/app$n.pid"
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && { say "replica $n up on 127.0.0.1:$port (pid $!)"; return; }
    kill -0 "$(app_pid "$n")" 2>/dev/null || { tail -20 "$DIR/app$n.log" >&2; die "replica $n exited"; }
    sleep 0.1
  done
  die "replica $n did not answer /health within 30 s (log: $DIR/app$n.log)"
}

app_stop() {
  local n=$1 signal=${2:-TERM} pid
  pid=$(app_pid "$n")
  if ! app_running "$n"; then rm -f "$DIR/app$n.pid"; return; fi
  kill "-$signal" "$pid"
  for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && die "replica $n (pid $pid) did not stop within 30 s"
  rm -f "$DIR/app$n.pid"
  say "replica $n stopped ($signal)"
}

# --- nginx ------------------------------------------------------------------------------------
nginx_bin() { command -v nginx 2>/dev/null || echo /usr/sbin/nginx; }
nginx_running() { [ -f "$DIR/nginx/nginx.pid" ] && kill -0 "$(cat "$DIR/nginx/nginx.pid")" 2>/dev/null; }

nginx_up() {
  mkdir -p "$DIR/nginx"
  local limit=${TDC_UPLOAD_LIMIT_BYTES:-1073741824}
  # Exactly the names the template uses, so nginx's own $variables stay as they are.
  TDC_NGINX_LISTEN="127.0.0.1:$TDC_NGINX_PORT" TDC_UPSTREAM_1="127.0.0.1:$TDC_APP_PORT_1" \
    TDC_UPSTREAM_2="127.0.0.1:$TDC_APP_PORT_2" TDC_UPLOAD_LIMIT_BYTES=$limit \
    TDC_NGINX_PREFIX_DIR="$DIR/nginx" \
    envsubst '${TDC_NGINX_LISTEN} ${TDC_UPSTREAM_1} ${TDC_UPSTREAM_2} ${TDC_UPLOAD_LIMIT_BYTES} ${TDC_NGINX_PREFIX_DIR}' \
    < "$REPO/infra-prod/nginx.conf" > "$DIR/nginx/nginx.conf"
  # As root the workers would run as `nobody`, who cannot enter a private state directory.
  local run_as=()
  if [ "$(id -u)" = 0 ]; then run_as=(-g "user root;"); fi
  "$(nginx_bin)" -t -q -e "$DIR/nginx/error.log" -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" "${run_as[@]}"
  if nginx_running; then
    "$(nginx_bin)" -e "$DIR/nginx/error.log" -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" "${run_as[@]}" -s reload
  else
    "$(nginx_bin)" -e "$DIR/nginx/error.log" -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" "${run_as[@]}"
  fi
  say "nginx on $TDC_URL"
}

nginx_down() {
  if nginx_running; then
    local pid
    pid=$(cat "$DIR/nginx/nginx.pid")
    kill -QUIT "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
}

case "${1:-}" in
  up)
    install_missing
    write_state
    load_state
    binary
    pg_up
    app_start 1
    app_start 2
    nginx_up
    echo "$TDC_URL"
    ;;
  down)
    load_state
    nginx_down
    app_stop 1
    app_stop 2
    pg_down
    say "stopped; data kept in $DIR"
    ;;
  status)
    load_state
    pg_bin
    pg_running && echo "postgresql: up (port $PG_PORT)" || echo "postgresql: down"
    for n in 1 2; do app_running "$n" && echo "replica $n: up (127.0.0.1:$(app_port "$n"), pid $(app_pid "$n"))" || echo "replica $n: down"; done
    nginx_running && echo "nginx: up ($TDC_URL)" || echo "nginx: down"
    ;;
  stop|kill|start|restart)
    [[ "${2:-}" =~ ^[12]$ ]] || die "usage: $0 $1 1|2"
    load_state
    binary
    case "$1" in
      stop) app_stop "$2" TERM ;;
      kill) app_stop "$2" KILL ;;
      start) app_start "$2" ;;
      # nginx marks a stopped replica down for its fail_timeout (2 s): wait it out, so the
      # next step of a rolling restart never finds both replicas marked down.
      restart) app_stop "$2" TERM; app_start "$2"; sleep 3 ;;
    esac
    ;;
  *)
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
