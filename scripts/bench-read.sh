#!/usr/bin/env bash
# Read-path benchmark (issue 12 §1). On one `serve` process (release build) with a fresh managed
# cluster in a temp dir, measures keyset pages of rows over HTTP with wrk, and the same page
# read straight from PostgreSQL with pgbench (prepared statements, Unix socket) in the same run,
# and prints the ratios:
#   (1) 100-row keyset page of a ROWS-row view with a unique key (record_id), CLIENTS clients,
#       SECS seconds: requests/s ours vs transactions/s pgbench;
#   (2) the same at 1 client: latency p50/p99 ours vs pgbench;
#   (3) a 100-row page of a 10-column table, CLIENTS clients: ours vs pgbench.
# Pages start at CURSORS positions spread over the relation (cursors the API itself issued);
# pgbench starts at a random record_id. Both return the same 100 rows per request.
# Usage: scripts/bench-read.sh   (knobs below as environment variables; SKIP_BUILD=1 to use
# target/release/tinydevcrm as built)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}
CLIENTS=${CLIENTS:-64}
SECS=${SECS:-20}
CURSORS=${CURSORS:-100}
# The page order: record_id (a keyset on the unique key); empty for the default order (ctid).
ORDER=${ORDER-record_id}
O=${ORDER:+&order=$ORDER}

for tool in wrk pgbench curl jq; do
  command -v "$tool" >/dev/null || { echo "bench-read needs $tool (Debian: wrk, postgresql-client, curl, jq)"; exit 1; }
done
. scripts/bench-lib.sh
# One tenant holds all the clients: its read slots must not be the limit being measured.
bench_start read TDC_SCHEDULER=false TDC_TENANT_CONCURRENT_READS=$((CLIENTS * 2))
TOKEN=$(bench_user bench@example.com)
H="Authorization: Bearer $TOKEN"
json() { curl -sf -H "$H" -H 'Content-Type: application/json' -d "$2" "$B$1"; }

echo "== data: $ROWS call records, the view bill (unique key record_id), the 10-column table wide"
$BIN sample --calls $((ROWS / 2)) --out "$WORK/calls.parquet" > /dev/null
curl -sf -H "$H" -F "file=@$WORK/calls.parquet" -F table_name=calls "$B/tables/create/" > /dev/null
json /views/create/ '{"view_name":"bill","sql_query":"SELECT * FROM calls","unique_key":["record_id"]}' > /dev/null
json /views/create/ '{"view_name":"wide_src","sql_query":"SELECT record_id, record_type, record_timestamp, call_id, source, destination, record_id * 2 AS doubled, length(source) AS source_len, record_timestamp::date AS day, call_id % 7 AS bucket FROM calls"}' > /dev/null
curl -sf -H "$H" "$B/views/wide_src/rows/?format=parquet" -o "$WORK/wide.parquet"
curl -sf -H "$H" -F "file=@$WORK/wide.parquet" -F table_name=wide -F 'unique=[["record_id"]]' "$B/tables/create/" > /dev/null
SCHEMA=$(psql -Atc "SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\_%' LIMIT 1")
for r in calls bill wide; do psql -qc "VACUUM ANALYZE $SCHEMA.$r" > /dev/null; done

# Cursors the API issued, spread over the relation: walk it in big pages.
cursors() { # relation
  local step=$((ROWS / CURSORS)) url next
  [ "$step" -le 10000 ] || step=10000
  url="$B/$1/rows/?limit=$step&select=record_id$O"
  next=$(curl -sf -H "$H" "$url" | jq -r .next_cursor)
  local n=0
  while [ "$next" != null ] && [ "$n" -lt "$CURSORS" ]; do
    echo "$next"
    next=$(curl -sf -H "$H" "$url&cursor=$next" | jq -r .next_cursor)
    n=$((n + 1))
  done
}
wrk_script() { # path-prefix cursor-file -> lua
  cat > "$WORK/$3.lua" <<LUA
local paths = {}
for line in io.lines("$2") do paths[#paths + 1] = "$1&cursor=" .. line end
local i = 0
wrk.headers["Authorization"] = "Bearer $TOKEN"
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
$(lua_first_failure)
LUA
}
cursors views/bill > "$WORK/bill.cursors"
cursors tables/wide > "$WORK/wide.cursors"
echo "cursors: $(wc -l < "$WORK/bill.cursors") for bill, $(wc -l < "$WORK/wide.cursors") for wide"
wrk_script "/views/bill/rows/?limit=100$O" "$WORK/bill.cursors" bill
wrk_script "/tables/wide/rows/?limit=100$O" "$WORK/wide.cursors" wide
# Every page must hold 100 rows, as pgbench's do.
for r in views/bill tables/wide; do
  curl -sS -H "$H" "$B/$r/rows/?limit=100$O&cursor=$(head -1 "$WORK/${r#*/}.cursors")" |
    jq -e '.rows | length == 100' > /dev/null || { echo "a page of $r is not 100 rows"; exit 1; }
done

cat > "$WORK/bill.sql" <<SQL
\set k random(1, $ROWS)
SELECT * FROM $SCHEMA.bill WHERE record_id > :k ORDER BY record_id LIMIT 100;
SQL
cat > "$WORK/wide.sql" <<SQL
\set k random(1, $ROWS)
SELECT * FROM $SCHEMA.wide WHERE record_id > :k ORDER BY record_id LIMIT 100;
SQL

ours() { # clients script -> wrk output
  wrk -t"$(($1 < 2 ? 1 : 2))" -c"$1" -d"${SECS}s" --latency -s "$WORK/$2.lua" "$B" 2>&1
}
theirs() { # clients script -> pgbench output
  pgbench -n -M prepared -c "$1" -j 2 -T "$SECS" -f "$WORK/$2.sql" -r 2>&1
}
rps() { awk '/Requests\/sec/ {print $2}'; }
tps() { sed -n 's/^tps = \([0-9.]*\).*/\1/p'; }
non2xx() { awk '/Non-2xx/ {print $NF}'; }

echo "== (1) bill, $CLIENTS clients, ${SECS} s"
O1=$(ours "$CLIENTS" bill); T1=$(theirs "$CLIENTS" bill)
echo "$O1" | sed "s/^/  wrk: /"
echo "  pgbench: tps $(echo "$T1" | tps)"
echo "== (2) bill, 1 client, ${SECS} s"
O2=$(ours 1 bill)
pgbench -n -M prepared -c 1 -j 1 -T "$SECS" -f "$WORK/bill.sql" -l --log-prefix="$WORK/pgb" > /dev/null 2>&1
read -r P50 P99 < <(cat "$WORK"/pgb.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {printf "%.3f %.3f\n", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000}')
echo "$O2" | grep -E ' 50%| 99%' | sed 's/^/  wrk: /'
echo "  pgbench: p50 ${P50} ms, p99 ${P99} ms"
echo "== (3) wide (10 columns), $CLIENTS clients, ${SECS} s"
O3=$(ours "$CLIENTS" wide); T3=$(theirs "$CLIENTS" wide)
echo "$O3" | grep -E 'Requests/sec|Non-2xx' | sed 's/^/  wrk: /' || true
echo "  pgbench: tps $(echo "$T3" | tps)"

ms() { # wrk latency like 1.23ms / 456.00us / 1.2s -> ms
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /[0-9]s$/ && v !~ /ms$/) n *= 1000; printf "%.3f", n }'
}
O2P50=$(ms "$(echo "$O2" | awk '$1 == "50%" {print $2}')")
O2P99=$(ms "$(echo "$O2" | awk '$1 == "99%" {print $2}')")
echo
echo "RESULT read $(date -u +%FT%TZ) rows=$ROWS clients=$CLIENTS secs=$SECS"
printf '%-46s %12s %12s %8s\n' figure ours pgbench ratio
printf '%-46s %12s %12s %8.3f\n' "(1) bill page, $CLIENTS clients (req/s | tps)" "$(echo "$O1" | rps)" "$(echo "$T1" | tps)" \
  "$(awk -v a="$(echo "$O1" | rps)" -v b="$(echo "$T1" | tps)" 'BEGIN {print a / b}')"
printf '%-46s %12s %12s %8.3f\n' "(2) bill page, 1 client, p50 ms (pgbench/ours)" "$O2P50" "$P50" "$(awk -v a="$O2P50" -v b="$P50" 'BEGIN {print b / a}')"
printf '%-46s %12s %12s %8.3f\n' "(2) bill page, 1 client, p99 ms (pgbench/ours)" "$O2P99" "$P99" "$(awk -v a="$O2P99" -v b="$P99" 'BEGIN {print b / a}')"
printf '%-46s %12s %12s %8.3f\n' "(3) wide page, $CLIENTS clients (req/s | tps)" "$(echo "$O3" | rps)" "$(echo "$T3" | tps)" \
  "$(awk -v a="$(echo "$O3" | rps)" -v b="$(echo "$T3" | tps)" 'BEGIN {print a / b}')"
for o in "$O1" "$O2" "$O3"; do
  bad=$(echo "$o" | non2xx)
  [ -z "$bad" ] || echo "WARNING: $bad non-2xx answers in a wrk run (not counted as pages)"
done
echo "serve VmHWM: $(awk '/VmHWM/ {print $2}' /proc/$SERVE_PID/status) KiB"
if [ "${KEEP:-0}" = 1 ]; then
  echo "KEEP=1: serve on $B (PGHOST=$PGHOST PGPORT=$PGPORT, schema $SCHEMA, token in $WORK/token); Ctrl-C ends it"
  echo "$TOKEN" > "$WORK/token"
  wait "$SERVE_PID"
fi
