#!/usr/bin/env bash
# Incremental refresh benchmark (issue 16). On one `serve` (release build, fresh managed
# cluster): a ROWS-row call table (indexed on record_timestamp), an hourly usage view over it
# twice, incremental (`usage_inc`) and a plain materialized view of the same SQL
# (`usage_full`); then APPEND rows are added into the last hour and both are refreshed, each
# timed as the wall time of POST /views/{name}/refresh/. Prints both, the ratio, and checks
# that both views hold the same rows.
# Usage: scripts/bench-incremental.sh   (ROWS, APPEND as environment variables)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-10000000}
APPEND=${APPEND:-10000}
for tool in curl jq psql python3; do
  command -v "$tool" >/dev/null || { echo "bench-incremental needs $tool"; exit 1; }
done
. scripts/bench-lib.sh
bench_start incremental TDC_SCHEDULER=false TDC_TENANT_STATEMENT_TIMEOUT_SECS=1200 \
  TDC_ROWS_BODY_LIMIT_BYTES=67108864
TOKEN=$(bench_user bench@example.com)
H="Authorization: Bearer $TOKEN"
json() { curl -sf -H "$1" -H 'Content-Type: application/json' -d "$3" "$B$2"; }
now_ms() { date +%s%3N; }

echo "== data: $ROWS call records"
$BIN sample --calls $((ROWS / 2)) --out "$WORK/calls.parquet" > /dev/null
curl -sf -H "$H" -F "file=@$WORK/calls.parquet" -F table_name=calls \
  -F 'indexes=[["record_timestamp"]]' "$B/tables/create/" > /dev/null
rm "$WORK/calls.parquet"
SCHEMA=$(psql -Atc "SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\_%' LIMIT 1")
psql -qc "VACUUM ANALYZE $SCHEMA.calls"
SQL="SELECT date_trunc('hour', c.record_timestamp) AS hour, c.source, count(*) AS records FROM calls c GROUP BY 1, 2"
T0=$(now_ms)
json "$H" /views/create/ "$(jq -n --arg sql "$SQL" \
  '{view_name: "usage_inc", sql_query: $sql, incremental: {bucket_column: "hour", source_column: "record_timestamp"}}')" > /dev/null
T1=$(now_ms)
json "$H" /views/create/ "$(jq -n --arg sql "$SQL" '{view_name: "usage_full", sql_query: $sql}')" > /dev/null
T2=$(now_ms)
echo "  created usage_inc in $((T1 - T0)) ms, usage_full in $((T2 - T1)) ms (first fills)"

LAST=$(psql -Atc "SELECT to_char(date_trunc('hour', max(record_timestamp) AT TIME ZONE 'UTC'), 'YYYY-MM-DD\"T\"HH24') FROM $SCHEMA.calls")
echo "== append $APPEND rows into the last hour ($LAST:00 UTC)"
python3 - "$APPEND" "$LAST" > "$WORK/append.json" <<'PY'
import json, random, sys
n, hour = int(sys.argv[1]), sys.argv[2]
random.seed(16)
rows = [{"record_id": 10**12 + i, "record_type": "start",
         "record_timestamp": f"{hour}:{random.randrange(60):02d}:{random.randrange(60):02d}Z",
         "call_id": 10**12 + i, "source": str(random.randrange(10**9)),
         "destination": str(random.randrange(10**9))} for i in range(n)]
print(json.dumps(rows))
PY
curl -sf -H "$H" -H 'Content-Type: application/json' --data-binary "@$WORK/append.json" \
  "$B/tables/calls/rows/" > /dev/null

T0=$(now_ms); RI=$(json "$H" /views/usage_inc/refresh/ '{}'); T1=$(now_ms)
INC=$((T1 - T0))
T0=$(now_ms); RF=$(json "$H" /views/usage_full/refresh/ '{}'); T1=$(now_ms)
FULL=$((T1 - T0))
echo "  incremental refresh (usage_inc): $INC ms wall ($(echo "$RI" | jq -c '{status, row_count, duration_ms}'))"
echo "  full refresh (usage_full):       $FULL ms wall ($(echo "$RF" | jq -c '{status, row_count, duration_ms}'))"
python3 -c "print('  ratio full/incremental: %.1fx' % ($FULL / max($INC, 1)))"
DIFF=$(psql -Atc "SELECT count(*) FROM ((TABLE $SCHEMA.usage_inc EXCEPT ALL TABLE $SCHEMA.usage_full) UNION ALL (TABLE $SCHEMA.usage_full EXCEPT ALL TABLE $SCHEMA.usage_inc)) d")
echo "  rows differing between the two views: $DIFF"
[ "$DIFF" = 0 ]
