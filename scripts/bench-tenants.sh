#!/usr/bin/env bash
# Tenant-scale benchmark (issue 13 §4). On one `serve` (release build, fresh managed cluster),
# every tenant is a full sign-up: register, log in, upload a 100-row table `calls`, create the
# view `v` over it (unique key record_id). Measured at BASE tenants and again at N tenants:
#   - register latency p50/p99: REG_SAMPLE registrations one after another (nothing else
#     running), the tenants BASE+1.. at the start and the last REG_SAMPLE at the end;
#   - a tenant's 100-row read p50/p99: GET /views/v/rows/?limit=100 with wrk, CLIENTS
#     connections for SECS seconds, every request as a random tenant among READ_SAMPLE of them;
#   - the catalog (pg_class, pg_namespace, pg_authid rows; database size; pg_class and
#     pg_attribute sizes) and the restart time: serve stopped, then started again on the same
#     data directory, split into the managed cluster being up and /health answering UP.
# Between the two, tenants are added PAR at a time until TENANTS exist, or until GROW_SECS
# have passed: then N is what was reached, and the figures for TENANTS are printed as a
# projection (marked as such) from the growth rate.
# BIN_AFTER=path: after the figures at N, serve is restarted once more on that other build and
# the read and the restart are measured again, on the same data (an A/B of two builds at N).
# Usage: nice scripts/bench-tenants.sh   (knobs below as environment variables; SKIP_BUILD=1
# to use target/release/tinydevcrm as built, BIN= another binary)
set -euo pipefail
cd "$(dirname "$0")/.."
TENANTS=${TENANTS:-10000}
BASE=${BASE:-10}
REG_SAMPLE=${REG_SAMPLE:-50}
READ_SAMPLE=${READ_SAMPLE:-1000}
CLIENTS=${CLIENTS:-4}
SECS=${SECS:-15}
PAR=${PAR:-8}
CHUNK=${CHUNK:-400}
GROW_SECS=${GROW_SECS:-1200}
BIN_AFTER=${BIN_AFTER:-}
# LOG_DIR=path: serve's logs (and the managed cluster's) are copied there before the temp dir goes.
LOG_DIR=${LOG_DIR:-}
# ON_PHASE=command: run as `command measure` before each measured part and `command grow` before
# the growth, e.g. to pause other work on a shared machine while latencies are measured.
ON_PHASE=${ON_PHASE:-}
phase() { [ -z "$ON_PHASE" ] || $ON_PHASE "$1" || true; }
for tool in wrk curl jq psql shuf; do
  command -v "$tool" >/dev/null || { echo "bench-tenants needs $tool"; exit 1; }
done
. scripts/bench-lib.sh
# Tokens must outlive the growth; the login limiter would refuse one address's sign-ups.
SERVE_ENV=(TDC_SCHEDULER=true TDC_ACCESS_TOKEN_TTL_SECS=86400 TDC_LOGIN_PER_IP_PER_MINUTE=1000000
  TDC_LOGIN_PER_ACCOUNT_PER_MINUTE=1000)
bench_start tenants "${SERVE_ENV[@]}"
$BIN sample --calls 50 --out "$WORK/calls.parquet" > /dev/null
TOKENS=$WORK/tokens
FAILED=$WORK/failed
: > "$TOKENS"
: > "$FAILED"

# One tenant's sign-up after its registration: log in, upload, create the view; the token is
# appended to TOKENS (one short line: appends of concurrent workers do not interleave).
finish_tenant() { # i
  local auth="{\"primary_email\":\"t$1@example.com\",\"password\":\"benchmark\"}" token
  token=$(curl -sf -H 'Content-Type: application/json' -d "$auth" "$B/auth/tokens/obtain/" | jq -r .access) &&
    curl -sf -H "Authorization: Bearer $token" -F "file=@$WORK/calls.parquet" -F table_name=calls \
      "$B/tables/create/" > /dev/null &&
    curl -sf -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
      -d '{"view_name":"v","sql_query":"SELECT * FROM calls","unique_key":["record_id"]}' \
      "$B/views/create/" > /dev/null &&
    echo "$token" >> "$TOKENS" || echo "$1 finish" >> "$FAILED"
}
register() { # i -> seconds on stdout
  curl -sf -o /dev/null -w '%{time_total}\n' -H 'Content-Type: application/json' \
    -d "{\"primary_email\":\"t$1@example.com\",\"password\":\"benchmark\"}" "$B/auth/users/register/" ||
    { echo "$1 register" >> "$FAILED"; return 0; }
}
tenant() { register "$1" > /dev/null && finish_tenant "$1"; }
export B WORK TOKENS FAILED
export -f finish_tenant register tenant

percentiles() { # seconds, one a line -> "p50 p99" in ms
  sort -n | awk '{a[NR] = $1} END {i = int(NR * 0.99); if (i < 1) i = 1; printf "%.1f %.1f\n", a[int((NR + 1) / 2)] * 1000, a[i] * 1000}'
}
# REG_SAMPLE sequential registrations from tenant $1 on, then their sign-ups in parallel.
sample_registrations() { # first -> "p50 p99"
  local first=$1 last=$(($1 + REG_SAMPLE - 1))
  for i in $(seq "$first" "$last"); do register "$i"; done > "$WORK/reg.$first"
  seq "$first" "$last" | xargs -P "$PAR" -I{} bash -c 'finish_tenant {}'
  percentiles < "$WORK/reg.$first"
}
ms() { # wrk latency like 1.23ms / 456.00us / 1.2s -> ms
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /[0-9]s$/ && v !~ /ms$/) n *= 1000; printf "%.2f", n }'
}
reads() { # -> "p50 p99 req/s non2xx" over READ_SAMPLE random tenants' tokens
  shuf -n "$READ_SAMPLE" "$TOKENS" > "$WORK/read.tokens"
  cat > "$WORK/read.lua" <<LUA
local tokens = {}
for line in io.lines("$WORK/read.tokens") do tokens[#tokens + 1] = line end
local seeded = 0
function init(args)
  seeded = seeded + 1
  math.randomseed(os.time() * 1000 + seeded + math.floor(os.clock() * 1000000))
end
request = function()
  return wrk.format("GET", "/views/v/rows/?limit=100",
    {["Authorization"] = "Bearer " .. tokens[math.random(#tokens)]})
end
$(lua_first_failure)
LUA
  curl -sf -H "Authorization: Bearer $(head -1 "$WORK/read.tokens")" "$B/views/v/rows/?limit=100" |
    jq -e '.rows | length == 100' > /dev/null || { echo "a page of v is not 100 rows" >&2; exit 1; }
  local out seen=0
  [ -z "$SERVE_LOG" ] || seen=$(wc -l < "$SERVE_LOG")
  out=$(wrk -t2 -c"$CLIENTS" -d"${SECS}s" --latency -s "$WORK/read.lua" "$B" 2>&1)
  echo "$out" | sed 's/^/    wrk: /' >&2
  # serve's own view of the same requests (its access log, once restarted with info logs):
  # time inside serve only, so a gap to wrk's figures is time spent waiting for a CPU.
  [ -z "$SERVE_LOG" ] || tail -n +"$((seen + 1))" "$SERVE_LOG" |
    jq -r 'select(.target == "access" and .route == "/views/{name}/rows") | .latency_ms' 2>/dev/null | sort -n |
    awk '{a[NR] = $1} END {if (NR) printf "    serve access log: %d requests, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", NR, a[int((NR + 1) / 2)], a[int(NR * 0.99)], a[NR]}' >&2
  echo "$(ms "$(echo "$out" | awk '$1 == "50%" {print $2}')") $(ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")" \
    "$(echo "$out" | awk '/Requests\/sec/ {print $2}')" "$(echo "$out" | awk '/Non-2xx/ {print $NF}' | grep . || echo 0)"
}
catalog() { # -> "pg_class pg_namespace pg_authid db_bytes pg_class_bytes pg_attribute_bytes"
  psql -Atc "SELECT (SELECT count(*) FROM pg_class), (SELECT count(*) FROM pg_namespace),
    (SELECT count(*) FROM pg_authid), pg_database_size(current_database()),
    pg_total_relation_size('pg_class'), pg_total_relation_size('pg_attribute')" | tr '|' ' '
}
now_ms() { date +%s%3N; }
# Stops serve (which stops its cluster), starts it again on the same data directory; sets
# RS_STOP (ms until serve and its cluster are gone), RS_CLUSTER (ms from the start until the
# managed cluster is up) and RS_HEALTH (ms until /health answers UP). Not in a subshell: it
# replaces SERVE_PID, which the exit trap stops.
RESTARTS=0
SERVE_LOG=
restart() {
  local t0 cluster
  RESTARTS=$((RESTARTS + 1))
  SERVE_LOG=$WORK/serve.restart.$RESTARTS.log
  t0=$(now_ms)
  kill "$SERVE_PID"
  while kill -0 "$SERVE_PID" 2>/dev/null; do sleep 0.05; done
  while [ -f "$WORK/data/pgdata/postmaster.pid" ]; do sleep 0.05; done
  RS_STOP=$(($(now_ms) - t0))
  env TDC_DATA_DIR="$WORK/data" TDC_BIND="${B#http://}" TDC_STREAM_BIND= RUST_LOG=info LOG_FORMAT=json \
    "${SERVE_ENV[@]}" "${1:-$BIN}" serve > "$SERVE_LOG" 2>&1 &
  SERVE_PID=$!
  t0=$(now_ms)
  for _ in $(seq 1 6000); do
    curl -sf "$B/health" 2>/dev/null | grep -q UP && break
    sleep 0.05
  done
  RS_HEALTH=$(($(now_ms) - t0))
  # serve's own log says when its cluster answered (JSON lines with UTC timestamps).
  cluster=$(jq -r 'select(.message == "managed PostgreSQL is up") | .timestamp' "$SERVE_LOG" | head -1)
  RS_CLUSTER=$(($(date -d "$cluster" +%s%3N) - t0))
  curl -sf "$B/health" | grep -q UP || { tail -20 "$SERVE_LOG"; exit 1; }
  PGPORT=$(sed -n 4p "$WORK/data/pgdata/postmaster.pid")
}

phase measure
echo "== $BASE tenants"
T0=$(now_ms)
seq 1 "$BASE" | xargs -P "$PAR" -I{} bash -c 'tenant {}'
echo "  $BASE sign-ups in $(($(now_ms) - T0)) ms"
read -r READ10_P50 READ10_P99 READ10_RPS READ10_BAD < <(reads)
read -r CAT10 < <(catalog)
restart
RS10_CLUSTER=$RS_CLUSTER RS10_HEALTH=$RS_HEALTH RS10_STOP=$RS_STOP
echo "  read p50/p99 $READ10_P50/$READ10_P99 ms; catalog $CAT10; restart $RS10_CLUSTER/$RS10_HEALTH ms"
read -r REG10_P50 REG10_P99 < <(sample_registrations $((BASE + 1)))
echo "  register p50/p99 $REG10_P50/$REG10_P99 ms (tenants $((BASE + 1))..$((BASE + REG_SAMPLE)))"

NEXT=$((BASE + REG_SAMPLE + 1))
GOAL=$((TENANTS - REG_SAMPLE))
phase grow
echo "== growing to $TENANTS tenants ($PAR at a time, at most $GROW_SECS s)"
G0=$(now_ms)
while [ "$NEXT" -le "$GOAL" ] && [ $(($(now_ms) - G0)) -lt $((GROW_SECS * 1000)) ]; do
  last=$((NEXT + CHUNK - 1))
  [ "$last" -le "$GOAL" ] || last=$GOAL
  seq "$NEXT" "$last" | xargs -P "$PAR" -I{} bash -c 'tenant {}'
  NEXT=$((last + 1))
  echo "  $((NEXT - 1)) tenants after $((($(now_ms) - G0) / 1000)) s ($(wc -l < "$FAILED") failed)"
done
GROWN=$((NEXT - BASE - REG_SAMPLE - 1))
GROW_MS=$(($(now_ms) - G0))
phase measure
read -r REGN_P50 REGN_P99 < <(sample_registrations "$NEXT")
N=$((NEXT + REG_SAMPLE - 1))
echo "  register p50/p99 $REGN_P50/$REGN_P99 ms (tenants $NEXT..$N)"
echo "== $N tenants"
psql -qc "VACUUM ANALYZE" > /dev/null
read -r READN_P50 READN_P99 READN_RPS READN_BAD < <(reads)
read -r CATN < <(catalog)
restart
RSN_CLUSTER=$RS_CLUSTER RSN_HEALTH=$RS_HEALTH RSN_STOP=$RS_STOP
# The read again after the restart: cold caches of serve (and of the cluster's buffers).
read -r READR_P50 READR_P99 READR_RPS READR_BAD < <(reads)
SERVE_RSS=$(awk '/VmRSS/ {print $2}' "/proc/$SERVE_PID/status")
DB_CONN=$(psql -Atc "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
if [ -n "$BIN_AFTER" ]; then
  echo "== $N tenants on BIN_AFTER=$BIN_AFTER"
  restart "$BIN_AFTER"
  RSA_CLUSTER=$RS_CLUSTER RSA_HEALTH=$RS_HEALTH
  read -r READA_P50 READA_P99 READA_RPS READA_BAD < <(reads)
  read -r READA2_P50 READA2_P99 READA2_RPS READA2_BAD < <(reads)
fi

phase grow
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
echo
echo "RESULT tenants $(date -u +%FT%TZ) tenants=$N (asked $TENANTS) base=$BASE reg_sample=$REG_SAMPLE read_sample=$READ_SAMPLE clients=$CLIENTS secs=$SECS par=$PAR"
printf '%-44s %12s %12s %8s\n' figure "at $BASE" "at $N" ratio
row() { printf '%-44s %12s %12s %8s\n' "$1" "$2" "$3" "$(ratio "$3" "$2")"; }
row "register p50 ms" "$REG10_P50" "$REGN_P50"
row "register p99 ms" "$REG10_P99" "$REGN_P99"
row "100-row read p50 ms ($CLIENTS clients)" "$READ10_P50" "$READN_P50"
row "100-row read p99 ms ($CLIENTS clients)" "$READ10_P99" "$READN_P99"
row "100-row read req/s" "$READ10_RPS" "$READN_RPS"
row "100-row read p99 ms, just after restart" "-" "$READR_P99"
set -- $CAT10
C10=("$@")
set -- $CATN
CN=("$@")
i=0
for name in "pg_class rows" "pg_namespace rows" "pg_authid rows" "pg_database_size MB" "pg_class total size MB" "pg_attribute total size MB"; do
  a=${C10[$i]} b=${CN[$i]}
  if [ "$i" -ge 3 ]; then a=$(awk -v v="$a" 'BEGIN {printf "%.1f", v / 1048576}'); b=$(awk -v v="$b" 'BEGIN {printf "%.1f", v / 1048576}'); fi
  row "$name" "$a" "$b"
  i=$((i + 1))
done
row "restart: managed cluster up, ms" "$RS10_CLUSTER" "$RSN_CLUSTER"
row "restart: /health UP, ms" "$RS10_HEALTH" "$RSN_HEALTH"
row "stop: serve and its cluster gone, ms" "$RS10_STOP" "$RSN_STOP"
if [ -n "$BIN_AFTER" ]; then
  echo "the same $N tenants on BIN_AFTER ($BIN_AFTER), after its restart (two read runs):"
  printf '%-44s %12s %12s %8s\n' figure "$(basename "$BIN")" "$(basename "$BIN_AFTER")" ratio
  row "100-row read p50 ms, just after restart" "$READR_P50" "$READA_P50"
  row "100-row read p99 ms, just after restart" "$READR_P99" "$READA_P99"
  row "100-row read p99 ms, second run" "$READN_P99" "$READA2_P99"
  row "100-row read req/s, second run" "$READN_RPS" "$READA2_RPS"
  row "restart: /health UP, ms" "$RSN_HEALTH" "$RSA_HEALTH"
fi
echo "growth: $GROWN tenants in $((GROW_MS / 1000)) s ($(awk -v n="$GROWN" -v t="$GROW_MS" 'BEGIN {printf "%.1f", n * 1000 / t}') tenants/s at PAR=$PAR); failed sign-ups: $(wc -l < "$FAILED")"
echo "serve VmRSS after restart and reads: $SERVE_RSS KiB; database connections: $DB_CONN"
for bad in "$READ10_BAD" "$READN_BAD" "$READR_BAD" ${READA_BAD:-} ${READA2_BAD:-}; do
  [ "$bad" = 0 ] || echo "WARNING: $bad non-2xx answers in a read run"
done
if [ "$N" -lt "$TENANTS" ]; then
  echo "PROJECTION (not measured): $TENANTS tenants would take $(awk -v n="$GROWN" -v t="$GROW_MS" -v g="$TENANTS" 'BEGIN {printf "%.0f", (g - 60) * t / n / 60000}') min of growth at this rate;" \
    "catalog grows per tenant by $(awk -v a="${C10[0]}" -v b="${CN[0]}" -v n="$N" -v m="$BASE" 'BEGIN {printf "%.1f", (b - a) / (n - m)}') pg_class rows" \
    "and $(awk -v a="${C10[3]}" -v b="${CN[3]}" -v n="$N" -v m="$BASE" 'BEGIN {printf "%.1f", (b - a) / (n - m) / 1024}') KiB of database."
fi
if [ -n "$LOG_DIR" ]; then
  mkdir -p "$LOG_DIR"
  cp "$WORK"/*.log "$LOG_DIR"/ 2>/dev/null || true
  cp -r "$WORK/data/log" "$LOG_DIR/postgresql" 2>/dev/null || true
fi
