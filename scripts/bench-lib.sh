# Shared by the bench-*.sh scripts (sourced, not run): one release `serve` on a fresh managed
# cluster in a temp dir, stopped and removed at exit, and a registered user.
#   bench_start NAME [VAR=value ...]   starts serve (extra environment given as VAR=value);
#                                      sets WORK, SERVE_PID, B (base URL), PGHOST/PGPORT/PGUSER/PGDATABASE
#   bench_user EMAIL                   registers EMAIL and prints its access token
# SKIP_BUILD=1 uses target/release/tinydevcrm as built; BIN=path another binary.

bench_cleanup() {
  if [ -n "${SERVE_PID:-}" ]; then
    kill "$SERVE_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$SERVE_PID" 2>/dev/null || true
  fi
  # The managed PostgreSQL normally stops with serve; make sure it is gone before removing it.
  if [ -f "$WORK/data/pgdata/postmaster.pid" ]; then
    kill -INT "$(head -1 "$WORK/data/pgdata/postmaster.pid")" 2>/dev/null || true
    sleep 2
  fi
  rm -rf "$WORK"
}

bench_start() {
  local name=$1
  shift
  WORK=$(mktemp -d "/tmp/tdc-bench-$name-XXXXXX")
  chmod 755 "$WORK"
  SERVE_PID=
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  [ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --quiet
  BIN=${BIN:-target/release/tinydevcrm}
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  env TDC_DATA_DIR="$WORK/data" TDC_BIND="127.0.0.1:$port" TDC_STREAM_BIND= \
    TDC_ACCESS_TOKEN_TTL_SECS=3600 RUST_LOG=warn "$@" "$BIN" serve > "$WORK/serve.log" 2>&1 &
  SERVE_PID=$!
  B="http://127.0.0.1:$port"
  for _ in $(seq 1 150); do curl -sf "$B/health" > /dev/null && break; sleep 0.2; done
  curl -sf "$B/health" > /dev/null || { cat "$WORK/serve.log"; exit 1; }
  export PGHOST="$WORK/data/run" PGUSER=postgres PGDATABASE=tinydevcrm
  PGPORT=$(sed -n 4p "$WORK/data/pgdata/postmaster.pid")
  export PGPORT
}

bench_user() {
  local auth="{\"primary_email\":\"$1\",\"password\":\"benchmark\"}"
  curl -sf -H 'Content-Type: application/json' -d "$auth" "$B/auth/users/register/" > /dev/null
  curl -sf -H 'Content-Type: application/json' -d "$auth" "$B/auth/tokens/obtain/" | jq -r .access
}

# A wrk Lua `response` hook that reports the first answer that is not a 200 (on stderr).
lua_first_failure() {
  cat <<'LUA'
local told = false
response = function(status, headers, body)
  if status ~= 200 and not told then
    told = true
    io.stderr:write("first non-200 answer: " .. status .. " " .. body:sub(1, 300) .. "\n")
  end
end
LUA
}
