#!/usr/bin/env bash
# Ingest benchmark (issue: tables from Parquet). Loads the same N call records three ways, in
# one run, on one managed cluster, and prints rows/s and ratios:
#   ours     POST /tables/create/ with the Parquet file (streamed, binary COPY as the tenant)
#   (a)      server-side COPY ... FROM a CSV file of the same rows (psql, superuser)
#   (b)      a Python loader as a user would write it: pyarrow reads, psycopg 3 copy writes
# plus the serve process's peak RSS (VmHWM). Usage: scripts/bench-ingest.sh [CALLS]
# (rows = 2 x CALLS; default 5,000,000 calls = 10M rows).
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${1:-5000000}
ROWS=$((CALLS * 2))
WORK=$(mktemp -d /tmp/tdc-bench-XXXXXX)
chmod 755 "$WORK"
trap 'kill "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT

cargo build --release --quiet
BIN=target/release/tinydevcrm

echo "generating $ROWS rows..."
$BIN sample --calls "$CALLS" --out "$WORK/calls.parquet"
ls -l "$WORK/calls.parquet" | awk '{printf "parquet file: %.1f MiB\n", $5/1048576}'

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TDC_DATA_DIR="$WORK/data" TDC_BIND="127.0.0.1:$PORT" TDC_STREAM_BIND= TDC_UPLOAD_LIMIT_BYTES=$((4 * 1024 * 1024 * 1024)) \
  TDC_TENANT_STATEMENT_TIMEOUT_SECS=3600 RUST_LOG=warn $BIN serve > "$WORK/serve.log" 2>&1 &
SERVE_PID=$!
B="http://127.0.0.1:$PORT"
for _ in $(seq 1 100); do curl -sf "$B/health" > /dev/null && break; sleep 0.2; done
curl -sf -H 'Content-Type: application/json' -d '{"primary_email":"bench@example.com","password":"benchmark"}' "$B/auth/users/register/" > /dev/null
ACCESS=$(curl -sf -H 'Content-Type: application/json' -d '{"primary_email":"bench@example.com","password":"benchmark"}' "$B/auth/tokens/obtain/" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access"])')
RSS_BEFORE=$(awk '/VmRSS/ {print $2}' /proc/$SERVE_PID/status)

now() { date +%s.%N; }

t0=$(now)
curl -sf -H "Authorization: Bearer $ACCESS" -F "file=@$WORK/calls.parquet" -F table_name=calls "$B/tables/create/" > "$WORK/create.json"
t1=$(now)
OURS=$(python3 -c "print($t1 - $t0)")
HWM=$(awk '/VmHWM/ {print $2}' /proc/$SERVE_PID/status)
python3 -c "import json; d=json.load(open('$WORK/create.json')); assert d['row_count']==$ROWS, d['row_count']"

# The same rows as CSV, written by our own export (not timed).
curl -sf -H "Authorization: Bearer $ACCESS" "$B/tables/calls/rows/?format=csv" -o "$WORK/calls.csv"
chmod 644 "$WORK/calls.csv"

PGHOST="$WORK/data/run"
PGPORT=$(sed -n 4p "$WORK/data/pgdata/postmaster.pid")
export PGHOST PGPORT PGUSER=postgres PGDATABASE=tinydevcrm
DDL='(record_id bigint, record_type text, record_timestamp timestamptz, call_id bigint, source text, destination text)'
psql -q -c "CREATE TABLE bench_csv $DDL; CREATE TABLE bench_py $DDL;"

t0=$(now)
psql -q -c "COPY bench_csv FROM '$WORK/calls.csv' (FORMAT csv, HEADER)"
t1=$(now)
CSV=$(python3 -c "print($t1 - $t0)")

VENV="$WORK/venv"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q pyarrow 'psycopg[binary]'
cat > "$WORK/load.py" <<'PY'
import sys, pyarrow.parquet as pq, psycopg
path, dsn = sys.argv[1], sys.argv[2]
with psycopg.connect(dsn) as conn, conn.cursor() as cur:
    with cur.copy("COPY bench_py (record_id, record_type, record_timestamp, call_id, source, destination) FROM STDIN") as copy:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65536):
            for row in batch.to_pylist():
                copy.write_row(tuple(row.values()))
PY
t0=$(now)
"$VENV/bin/python" "$WORK/load.py" "$WORK/calls.parquet" "host=$PGHOST port=$PGPORT user=postgres dbname=tinydevcrm"
t1=$(now)
PY=$(python3 -c "print($t1 - $t0)")

psql -q -At -c "SELECT 'check: csv rows ' || (SELECT count(*) FROM bench_csv) || ', python rows ' || (SELECT count(*) FROM bench_py)"
python3 - "$ROWS" "$OURS" "$CSV" "$PY" "$HWM" "$RSS_BEFORE" <<'PY'
import sys
rows, ours, csv, py, hwm, before = int(sys.argv[1]), *map(float, sys.argv[2:5]), int(sys.argv[5]), int(sys.argv[6])
fmt = lambda s: f"{rows / s:>12,.0f} rows/s  ({s:6.1f} s)"
print(f"rows                         {rows:,}")
print(f"ours: POST /tables/create/   {fmt(ours)}")
print(f"(a) COPY FROM csv file       {fmt(csv)}")
print(f"(b) pyarrow + psycopg copy   {fmt(py)}")
print(f"ratio ours / (a)             {csv / ours:.2f}x   (target >= 0.9)")
print(f"ratio ours / (b)             {py / ours:.2f}x   (target >= 3)")
print(f"serve peak RSS (VmHWM)       {hwm / 1024:.0f} MiB (idle before upload {before / 1024:.0f} MiB; target <= 256)")
PY
