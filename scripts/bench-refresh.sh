#!/usr/bin/env bash
# Refresh benchmark (issue 12 §4). On one `serve` (release build, fresh managed cluster):
#   (1) full refresh of a view aggregating a ROWS-row table: ours (POST /views/big/refresh/,
#       wall time) vs `REFRESH MATERIALIZED VIEW` of the same SQL run straight in psql;
#   (2) deciding "unchanged, skipped" for that view: REPEAT refreshes with no change in
#       between, wall time per request (goal <= 10 ms), next to a bare `GET /health/`;
#   (3) refresh throughput of a small volatile view (never skipped) for SECS seconds: one
#       tenant (at its TDC_TENANT_CONCURRENT_QUERIES = 4 slots), and TENANTS tenants with
#       CLIENTS clients, vs pgbench refreshing the same number of identical matviews directly.
# Usage: scripts/bench-refresh.sh   (knobs below as environment variables)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-10000000}
REPEAT=${REPEAT:-200}
SECS=${SECS:-15}
TENANTS=${TENANTS:-100}
CLIENTS=${CLIENTS:-32}
for tool in wrk pgbench curl jq; do
  command -v "$tool" >/dev/null || { echo "bench-refresh needs $tool"; exit 1; }
done
. scripts/bench-lib.sh
bench_start refresh TDC_SCHEDULER=false TDC_TENANT_STATEMENT_TIMEOUT_SECS=600 TDC_LOGIN_PER_IP_PER_MINUTE=100000
TOKEN=$(bench_user bench@example.com)
H="Authorization: Bearer $TOKEN"
json() { curl -sf -H "$1" -H 'Content-Type: application/json' -d "$3" "$B$2"; }

echo "== data: $ROWS call records"
$BIN sample --calls $((ROWS / 2)) --out "$WORK/calls.parquet" > /dev/null
curl -sf -H "$H" -F "file=@$WORK/calls.parquet" -F table_name=calls "$B/tables/create/" > /dev/null
rm "$WORK/calls.parquet"
SCHEMA=$(psql -Atc "SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\_%' LIMIT 1")
BIG_SQL="SELECT source, count(*) AS records, min(record_timestamp) AS first, max(record_timestamp) AS last FROM calls GROUP BY source"
json "$H" /views/create/ "$(jq -n --arg sql "$BIG_SQL" '{view_name: "big", sql_query: $sql}')" > /dev/null
psql -qc "VACUUM ANALYZE $SCHEMA.calls"

now_ms() { date +%s%3N; }
echo "== (1) full refresh of big (after appending one call, so it is not skipped)"
$BIN sample --calls 1 --seed 7 --out "$WORK/one.parquet" > /dev/null
curl -sf -H "$H" -F "file=@$WORK/one.parquet" "$B/tables/calls/rows/" > /dev/null
T0=$(now_ms); R=$(json "$H" /views/big/refresh/ '{}'); T1=$(now_ms)
OURS_FULL=$((T1 - T0))
echo "  ours: $OURS_FULL ms wall ($(echo "$R" | jq -c '{status, row_count, duration_ms}'))"
psql -qc "CREATE MATERIALIZED VIEW public.bench_big AS $(echo "$BIG_SQL" | sed "s/FROM calls/FROM $SCHEMA.calls/") WITH NO DATA"
T0=$(now_ms); psql -qc "REFRESH MATERIALIZED VIEW public.bench_big"; T1=$(now_ms)
PSQL_FULL=$((T1 - T0))
echo "  psql REFRESH MATERIALIZED VIEW: $PSQL_FULL ms"

echo "== (2) unchanged: $REPEAT refreshes of big, nothing changed"
curl_ms() { curl -sf -o /dev/null -w '%{time_total}\n' "$@"; }
pct() { sort -n | awk '{a[NR]=$1} END {printf "%.2f %.2f\n", a[int(NR*0.5)+1]*1000, a[int(NR*0.99)]*1000}'; }
for _ in $(seq 1 "$REPEAT"); do
  curl_ms -H "$H" -H 'Content-Type: application/json' -d '{}' "$B/views/big/refresh/"
done > "$WORK/skip.txt"
STATUS=$(json "$H" /views/big/refresh/ '{}' | jq -r .status)
for _ in $(seq 1 "$REPEAT"); do curl_ms "$B/health/"; done > "$WORK/health.txt"
read -r SKIP50 SKIP99 < <(pct < "$WORK/skip.txt")
read -r H50 H99 < <(pct < "$WORK/health.txt")
echo "  ours (status $STATUS): p50 $SKIP50 ms, p99 $SKIP99 ms; GET /health/: p50 $H50 ms, p99 $H99 ms"

echo "== (3) throughput: small volatile views, $SECS s"
SMALL_SQL="SELECT count(*) AS n, now() AS at FROM tiny"
$BIN sample --calls 5 --out "$WORK/tiny.parquet" > /dev/null
tenant_setup() { # token
  local h="Authorization: Bearer $1"
  curl -sf -H "$h" -F "file=@$WORK/tiny.parquet" -F table_name=tiny "$B/tables/create/" > /dev/null
  json "$h" /views/create/ "$(jq -n --arg sql "$SMALL_SQL" '{view_name: "small", sql_query: $sql}')" > /dev/null
}
tenant_setup "$TOKEN"
echo "$TOKEN" > "$WORK/tokens"
for i in $(seq 2 "$TENANTS"); do
  t=$(bench_user "bench$i@example.com")
  tenant_setup "$t"
  echo "$t" >> "$WORK/tokens"
done
cat > "$WORK/refresh.lua" <<LUA
local tokens = {}
for line in io.lines("$WORK/tokens") do tokens[#tokens + 1] = line end
local n = tonumber(os.getenv("BENCH_TENANTS") or #tokens)
local i = 0
request = function()
  i = i % n + 1
  return wrk.format("POST", "/views/small/refresh/",
    {["Authorization"] = "Bearer " .. tokens[i], ["Content-Type"] = "application/json"}, "{}")
end
LUA
ok_rate() { # wrk output -> 2xx per second
  awk '/requests in/ {n = $1; s = $4 + 0} /Non-2xx/ {bad = $NF} END {printf "%.1f", (n - bad) / s}'
}
O1=$(BENCH_TENANTS=1 wrk -t1 -c4 -d"${SECS}s" -s "$WORK/refresh.lua" "$B" 2>&1)
ON=$(BENCH_TENANTS=$TENANTS wrk -t2 -c"$CLIENTS" -d"${SECS}s" -s "$WORK/refresh.lua" "$B" 2>&1)
# The same refreshes straight in PostgreSQL: identical matviews, one per tenant.
for i in $(seq 1 "$TENANTS"); do
  echo "CREATE MATERIALIZED VIEW public.bench_small_$i AS SELECT count(*) AS n, now() AS at FROM $SCHEMA.tiny;"
done | psql -q
echo "REFRESH MATERIALIZED VIEW public.bench_small_1;" > "$WORK/one.sql"
printf '\\set t random(1, %s)\nREFRESH MATERIALIZED VIEW public.bench_small_:t;\n' "$TENANTS" > "$WORK/many.sql"
P1=$(pgbench -n -c4 -j1 -T "$SECS" -f "$WORK/one.sql" 2>&1 | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
PN=$(pgbench -n -c"$CLIENTS" -j2 -T "$SECS" -f "$WORK/many.sql" 2>&1 | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
R1=$(echo "$O1" | ok_rate); RN=$(echo "$ON" | ok_rate)

echo
echo "RESULT refresh $(date -u +%FT%TZ) rows=$ROWS repeat=$REPEAT secs=$SECS tenants=$TENANTS clients=$CLIENTS"
printf '%-52s %12s %12s %8s\n' figure ours baseline ratio
printf '%-52s %12s %12s %8.2f\n' "(1) full refresh of big, ms (psql REFRESH)" "$OURS_FULL" "$PSQL_FULL" "$(awk -v a="$OURS_FULL" -v b="$PSQL_FULL" 'BEGIN {print a / b}')"
printf '%-52s %12s %12s %8.2f\n' "(2) unchanged -> skipped, p50 ms (GET /health/)" "$SKIP50" "$H50" "$(awk -v a="$SKIP50" -v b="$H50" 'BEGIN {print a / b}')"
printf '%-52s %12s %12s %8.2f\n' "(2) unchanged -> skipped, p99 ms (GET /health/)" "$SKIP99" "$H99" "$(awk -v a="$SKIP99" -v b="$H99" 'BEGIN {print a / b}')"
printf '%-52s %12s %12s %8.2f\n' "(3) small view, 1 tenant x 4, refreshes/s (pgbench)" "$R1" "$P1" "$(awk -v a="$R1" -v b="$P1" 'BEGIN {print a / b}')"
printf '%-52s %12s %12s %8.2f\n' "(3) small views, $TENANTS tenants, $CLIENTS clients, /s (pgbench)" "$RN" "$PN" "$(awk -v a="$RN" -v b="$PN" 'BEGIN {print a / b}')"
echo "skip status: $STATUS (must be skipped); non-2xx: 1 tenant $(echo "$O1" | awk '/Non-2xx/ {print $NF}'), $TENANTS tenants $(echo "$ON" | awk '/Non-2xx/ {print $NF}')"
