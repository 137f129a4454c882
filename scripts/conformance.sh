#!/usr/bin/env bash
# API conformance: runs schemathesis against a running `serve` and its /openapi.json, with every
# check on, and fails on any failure. The service runs on a free port with a managed cluster of
# its own in a temporary directory (DATABASE_URL is unset), holding a user with a table (from
# sample.parquet), a view, a job and a channel, so that paths can name real things.
#
#   scripts/conformance.sh            # build, start, test, stop
#   ST_MAX_EXAMPLES=50 scripts/conformance.sh   # more examples per operation (default 25)
#   ST_SEED=7 scripts/conformance.sh            # another seed (default 1: CI is repeatable)
#
# schemathesis comes from PyPI into the venv target/ci-venv (created when missing, reused after).
# Its settings (which statuses count as accepting valid data where the document cannot say
# everything the server checks) are in schemathesis.toml beside the repository's Cargo.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SCHEMATHESIS_VERSION=4.32.5
VENV=${CI_VENV:-$ROOT/target/ci-venv}
MAX_EXAMPLES=${ST_MAX_EXAMPLES:-25}

if ! "$VENV/bin/st" --version 2>/dev/null | grep -q " $SCHEMATHESIS_VERSION\$"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --quiet --bin tinydevcrm
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/debug/tinydevcrm

WORK=$(mktemp -d)
# Run as root, the cluster runs as `postgres`, which must reach its data directory.
chmod 755 "$WORK"
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
(
  unset DATABASE_URL
  export TDC_DATA_DIR=$WORK/data TDC_BIND=127.0.0.1:$PORT TDC_STREAM_BIND=
  # One token serves the whole run; the default 5 minutes could end mid-run.
  export TDC_ACCESS_TOKEN_TTL_SECS=3600
  # E-mail configured, so that its routes answer as in a deployment that sends mail (without
  # it they are 503 `email_not_configured`). Nothing listens on port 9 here: the messages the
  # run queues are tried, fail to connect and wait for their retry; nothing is sent.
  export TDC_SMTP_URL=smtp://127.0.0.1:9 TDC_SMTP_FROM=conformance@example.test
  export LOG_FORMAT=json RUST_LOG=${RUST_LOG:-warn}
  exec "$BIN" serve
) >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!

for _ in $(seq 1 120); do
  if curl -fsS "$BASE/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "conformance: serve exited" >&2; cat "$WORK/serve.log" >&2; exit 1
  fi
  sleep 0.5
done
curl -fsS "$BASE/health" >/dev/null

# Answers the body of a request that must succeed; prints it and fails otherwise.
call() {
  local out
  out=$(curl -sS -w '\n%{http_code}' "$@")
  local status=${out##*$'\n'}
  local body=${out%$'\n'*}
  if [ "${status:0:1}" != 2 ]; then
    echo "conformance: setup request failed ($status): $body" >&2
    exit 1
  fi
  printf '%s' "$body"
}
json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }

CREDENTIALS='{"primary_email": "conformance@example.com", "password": "conformance-password"}'
call -H 'Content-Type: application/json' -d "$CREDENTIALS" "$BASE/auth/users/register/" >/dev/null
ACCESS=$(call -H 'Content-Type: application/json' -d "$CREDENTIALS" "$BASE/auth/tokens/obtain/" | json '["access"]')
AUTH="Authorization: Bearer $ACCESS"
call -H "$AUTH" -F file=@sample.parquet -F table_name=calls "$BASE/tables/create/" >/dev/null
call -H "$AUTH" -H 'Content-Type: application/json' \
  -d '{"view_name": "starts", "sql_query": "SELECT * FROM calls WHERE record_type = '"'start'"'"}' \
  "$BASE/views/create/" >/dev/null
JOB=$(call -H "$AUTH" -H 'Content-Type: application/json' \
  -d '{"view_name": "starts", "crontab_def": "@hourly"}' "$BASE/jobs/create/" | json '["job_id"]')
CHANNEL=$(call -H "$AUTH" -H 'Content-Type: application/json' -d "{\"job_id\": \"$JOB\"}" \
  "$BASE/channels/create/" | json '["channel_id"]')
# Read by schemathesis.toml.
export TDC_CONFORMANCE_TABLE=calls TDC_CONFORMANCE_VIEW=starts
export TDC_CONFORMANCE_JOB=$JOB TDC_CONFORMANCE_CHANNEL=$CHANNEL

echo "conformance: schemathesis $SCHEMATHESIS_VERSION against $BASE (max $MAX_EXAMPLES examples per operation)"
START=$(date +%s)
STATUS=0
# schemathesis keeps the crashes it found (replayed first next time) under the working
# directory's .schemathesis/: keep them out of the work tree.
mkdir -p "$ROOT/target/conformance"
cd "$ROOT/target/conformance"
"$VENV/bin/st" --config-file "$ROOT/schemathesis.toml" run "$BASE/openapi.json" \
  --header "$AUTH" \
  --checks all \
  --max-examples "$MAX_EXAMPLES" \
  --request-timeout 30 \
  --generation-database none \
  --no-color \
  --seed "${ST_SEED:-1}" || STATUS=$?
echo "conformance: schemathesis took $(($(date +%s) - START)) s, exit status $STATUS"
if [ "$STATUS" -ne 0 ]; then
  echo "conformance: the server's log (warnings and errors):" >&2
  tail -n 50 "$WORK/serve.log" >&2
fi
exit "$STATUS"
