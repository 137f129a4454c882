#!/usr/bin/env bash
# Realtime benchmark (issue: SSE fan-out and scheduler precision). On one `serve` process with a
# fresh managed cluster in a temp dir, measures and prints, with baselines from the same run:
#   (a) SSE fan-out: 1 listener (baseline), then LISTENERS and MAX_LISTENERS concurrent
#       listeners on one channel; latency refresh commit -> receipt at every listener for ROUNDS
#       refreshes; serve RSS per idle connection and the listeners 1 GiB would hold (projected).
#       Then the same-run reference: a minimal tokio + hyper broadcaster (benches/sse_reference.rs,
#       a broadcast of pre-encoded Bytes) loaded by the same client with the same flags, 1 and
#       LISTENERS listeners (REFERENCE=0 skips it); the ratios ours / reference are printed.
#   (b) scheduler precision: lag scheduled_for -> started_at over EVERY jobs "* * * * * *" for
#       SCHED_SECS seconds, then again with SPREAD more enabled jobs "S * * * * *" (S = i % 60)
#       for SPREAD_SECS seconds; baseline: a plain tokio sleep_until timer for the same schedule
#       in the bench process, during the same window. Phase `fit`: FIT (<= the scheduler's
#       concurrency) jobs every second for FIT_SECS, then the same with IDLE more enabled jobs
#       that do not fire in the window.
# Usage: scripts/bench-realtime.sh   (knobs below as environment variables)
# Results (RESULT lines, JSON) are also kept in target/bench-realtime/results-<UTC time>.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
LISTENERS=${LISTENERS:-10000}
MAX_LISTENERS=${MAX_LISTENERS:-18000}
ROUNDS=${ROUNDS:-20}
EVERY=${EVERY:-50}
SCHED_SECS=${SCHED_SECS:-25}
SPREAD=${SPREAD:-10000}
SPREAD_SECS=${SPREAD_SECS:-60}
SCHED_CONCURRENCY=${SCHED_CONCURRENCY:-8}
FIT=${FIT:-8}
FIT_SECS=${FIT_SECS:-125}
IDLE=${IDLE:-10000}
PHASES=${PHASES:-sse sched fit}
REFERENCE=${REFERENCE:-1}
TARGET=${CARGO_TARGET_DIR:-target}

WORK=$(mktemp -d /tmp/tdc-bench-rt-XXXXXX)
chmod 755 "$WORK"
SERVE_PID=
REF_PID=
cleanup() {
  if [ -n "$REF_PID" ]; then kill "$REF_PID" 2>/dev/null || true; wait "$REF_PID" 2>/dev/null || true; fi
  if [ -n "$SERVE_PID" ]; then
    kill "$SERVE_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
  fi
  # The managed PostgreSQL normally stops with serve; make sure it is gone before removing it.
  if [ -f "$WORK/data/pgdata/postmaster.pid" ]; then
    PG_PID=$(head -1 "$WORK/data/pgdata/postmaster.pid")
    kill -INT "$PG_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.2; done
  fi
  # Keep the server's log next to the results.
  if [ -n "${OUT:-}" ] && [ -f "$WORK/serve.log" ]; then cp "$WORK/serve.log" "${OUT%.jsonl}.serve.log"; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# SKIP_BUILD=1 uses the binaries already built ($TARGET/release/tinydevcrm and the benches).
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --quiet
bench_exe() {
  if [ "${SKIP_BUILD:-0}" = 1 ]; then
    ls -t "$TARGET"/release/deps/"$1"-* | grep -v '\.d$' | head -1
  else
    cargo bench --bench "$1" --no-run --message-format=json 2>/dev/null |
      python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$1"
  fi
}
BENCH=$(bench_exe realtime)
REF_BIN=$(bench_exe sse_reference)
BIN=$TARGET/release/tinydevcrm
mkdir -p target/bench-realtime
OUT="target/bench-realtime/results-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
echo "results: $OUT"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TDC_DATA_DIR="$WORK/data" TDC_BIND="127.0.0.1:$PORT" TDC_STREAM_BIND= \
  TDC_ACCESS_TOKEN_TTL_SECS=3600 TDC_MAX_JOBS_PER_TENANT=20000 TDC_TENANT_MAX_STREAMS=100000 \
  TDC_SCHEDULER_CONCURRENCY="$SCHED_CONCURRENCY" TDC_SCHEDULER_TENANT_CONCURRENCY="$SCHED_CONCURRENCY" RUST_LOG=warn \
  $BIN serve > "$WORK/serve.log" 2>&1 &
SERVE_PID=$!
B="http://127.0.0.1:$PORT"
for _ in $(seq 1 150); do curl -sf "$B/health" > /dev/null && break; sleep 0.2; done
curl -sf "$B/health" > /dev/null || { cat "$WORK/serve.log"; exit 1; }
AUTH='{"primary_email":"bench@example.com","password":"benchmark"}'
curl -sf -H 'Content-Type: application/json' -d "$AUTH" "$B/auth/users/register/" > /dev/null
TDC_BENCH_TOKEN=$(curl -sf -H 'Content-Type: application/json' -d "$AUTH" "$B/auth/tokens/obtain/" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access"])')
export TDC_BENCH_TOKEN
H="Authorization: Bearer $TDC_BENCH_TOKEN"
curl -sf -H "$H" -F "file=@sample.parquet" -F table_name=calls "$B/tables/create/" > /dev/null
curl -sf -H "$H" -H 'Content-Type: application/json' \
  -d '{"view_name":"live","sql_query":"SELECT count(*) AS n, now() AS at FROM calls"}' "$B/views/create/" > /dev/null
CHANNEL=$(curl -sf -H "$H" -H 'Content-Type: application/json' -d '{"view_name":"live"}' "$B/channels/create/" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["channel_id"])')
PGHOST="$WORK/data/run"
PGPORT=$(sed -n 4p "$WORK/data/pgdata/postmaster.pid")
sleep 2
RSS0=$(awk '/VmRSS/ {print $2}' /proc/$SERVE_PID/status)
echo "serve pid $SERVE_PID on $B, idle RSS ${RSS0} KiB; channel $CHANNEL"

run() {
  "$BENCH" "$@" | tee -a "$OUT"
  kill -0 "$SERVE_PID" 2>/dev/null || { echo "serve exited:"; tail -20 "$WORK/serve.log"; exit 1; }
}
for phase in $PHASES; do
  case $phase in
  sse)
    echo "== (a) SSE baseline: 1 listener"
    run sse --base "$B" --channel "$CHANNEL" --view live --listeners 1 --rounds "$ROUNDS" --net 1 \
      --serve-pid "$SERVE_PID" --rss-baseline-kib "$RSS0"
    echo "== (a) SSE: $LISTENERS listeners"
    run sse --base "$B" --channel "$CHANNEL" --view live --listeners "$LISTENERS" --rounds "$ROUNDS" --net 2 \
      --serve-pid "$SERVE_PID" --rss-baseline-kib "$RSS0"
    if [ "$MAX_LISTENERS" -gt 0 ]; then
      echo "== (a) SSE: $MAX_LISTENERS listeners (near the 20,000 open-file limit)"
      run sse --base "$B" --channel "$CHANNEL" --view live --listeners "$MAX_LISTENERS" --rounds "$ROUNDS" --net 3 \
        --serve-pid "$SERVE_PID" --rss-baseline-kib "$RSS0"
    fi
    if [ "$REFERENCE" = 1 ]; then
      # The reference: same client, same flags, its own process (2 runtime threads, as serve
      # has 2 HTTP workers), started fresh so its idle RSS is the baseline of its per-connection cost.
      RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
      "$REF_BIN" --bind "127.0.0.1:$RPORT" --threads 2 --heartbeat-secs 15 > "$WORK/reference.log" 2>&1 &
      REF_PID=$!
      R="http://127.0.0.1:$RPORT"
      for _ in $(seq 1 100); do curl -sf "$R/health" > /dev/null && break; sleep 0.1; done
      sleep 2
      RRSS0=$(awk '/VmRSS/ {print $2}' /proc/$REF_PID/status)
      echo "== (a) reference broadcaster (pid $REF_PID, idle RSS ${RRSS0} KiB): 1 listener"
      run sse --label reference --base "$R" --channel ref --view ref --listeners 1 --rounds "$ROUNDS" --net 4 \
        --serve-pid "$REF_PID" --rss-baseline-kib "$RRSS0"
      echo "== (a) reference broadcaster: $LISTENERS listeners"
      run sse --label reference --base "$R" --channel ref --view ref --listeners "$LISTENERS" --rounds "$ROUNDS" --net 5 \
        --serve-pid "$REF_PID" --rss-baseline-kib "$RRSS0"
      kill "$REF_PID" 2>/dev/null || true
      wait "$REF_PID" 2>/dev/null || true
      REF_PID=
    fi
    ;;
  sched)
    echo "== (b) scheduler: $EVERY jobs every second, ${SCHED_SECS} s"
    run sched --base "$B" --every-second "$EVERY" --secs "$SCHED_SECS" --label "$EVERY every-second jobs" \
      --pghost "$PGHOST" --pgport "$PGPORT"
    if [ "$SPREAD" -gt 0 ]; then
      echo "== (b) scheduler: the same plus $SPREAD jobs firing once a minute (S = i % 60), ${SPREAD_SECS} s"
      run sched --base "$B" --every-second "$EVERY" --spread "$SPREAD" --secs "$SPREAD_SECS" \
        --label "$EVERY every-second + $SPREAD per-minute jobs" --pghost "$PGHOST" --pgport "$PGPORT"
    fi
    ;;
  fit)
    # Within capacity: no more jobs due per second than the scheduler runs at once, so the lag
    # is the scheduler's own precision, not queueing; then with IDLE more enabled jobs that do
    # not fire in the window (yearly), the cost of a large jobs table to every claim.
    echo "== (b) scheduler within capacity: $FIT jobs every second, ${FIT_SECS} s"
    run sched --base "$B" --every-second "$FIT" --secs "$FIT_SECS" --label "$FIT every-second jobs" \
      --pghost "$PGHOST" --pgport "$PGPORT"
    echo "== (b) scheduler within capacity: the same $FIT jobs with $IDLE more enabled (yearly), ${FIT_SECS} s"
    run sched --base "$B" --every-second 0 --idle "$IDLE" --secs "$FIT_SECS" \
      --label "$FIT every-second jobs + $IDLE enabled idle jobs" --pghost "$PGHOST" --pgport "$PGPORT"
    ;;
  esac
done
echo "serve VmHWM: $(awk '/VmHWM/ {print $2}' /proc/$SERVE_PID/status) KiB"
echo "serve log warnings/errors: $(grep -ci 'warn\|error' "$WORK/serve.log" || true)"
grep -i 'warn\|error' "$WORK/serve.log" | tail -5 || true

python3 - "$OUT" <<'PY'
import json, sys
rs = [json.loads(l[7:]) for l in open(sys.argv[1]) if l.startswith("RESULT ")]
sse = [r for r in rs if r["kind"] == "sse"]
ours = [r for r in sse if r.get("label", "serve") == "serve"]
ref = [r for r in sse if r.get("label") == "reference"]
base = next((r for r in ours if r["connected"] == 1), None)
print("\n(a) SSE fan-out: latency refreshed_at -> receipt (ms), every listener x every round")
print(f"{'server':>10} {'listeners':>10} {'recv/expected':>15} {'p50':>8} {'p99':>8} {'max':>8} {'p99/1L':>7} {'B/conn idle':>12} {'B/conn after':>12} {'listeners/GiB (proj.)':>22}")
for r in sse:
    l = r["latency"]
    b = base if r in ours else next((x for x in ref if x["connected"] == 1), None)
    ratio = (l["p99_ms"] / b["latency"]["p99_ms"]) if b and b["latency"]["p99_ms"] else float("nan")
    per = r["bytes_per_conn_idle"]
    proj = f"{(1 << 30) / per:,.0f}" if per and per > 0 and r["connected"] > 1 else "-"
    print(f"{r.get('label', 'serve'):>10} {r['connected']:>10,} {r['received']:>7,}/{r['expected']:<7,} {l['p50_ms']:>8.1f} {l['p99_ms']:>8.1f} {l['max_ms']:>8.1f} {ratio:>7.2f} "
          f"{per if per is not None else '-':>12} {r['bytes_per_conn_after_rounds'] if r['bytes_per_conn_after_rounds'] is not None else '-':>12} {proj:>22}")
if ref:
    print("\n(a) SSE fan-out against the reference broadcaster, same run, same client and flags")
    print(f"{'listeners':>10} {'figure':<44} {'ours':>10} {'reference':>10} {'ratio':>7}")
    for rr in ref:
        o = next((x for x in ours if x["listeners"] == rr["listeners"]), None)
        if not o:
            continue
        rows = [("p99 refresh-return -> receipt (ms)", o.get("latency_from_return", {}).get("p99_ms"), rr.get("latency_from_return", {}).get("p99_ms")),
                ("p50 refresh-return -> receipt (ms)", o.get("latency_from_return", {}).get("p50_ms"), rr.get("latency_from_return", {}).get("p50_ms")),
                ("p99 refreshed_at -> receipt (ms)", o["latency"]["p99_ms"], rr["latency"]["p99_ms"]),
                ("events received", o["received"], rr["received"])]
        if o["connected"] > 1:
            rows.append(("RSS per idle connection (B)", o["bytes_per_conn_idle"], rr["bytes_per_conn_idle"]))
            rows.append(("RSS per connection after the rounds (B)", o["bytes_per_conn_after_rounds"], rr["bytes_per_conn_after_rounds"]))
        for name, a, b in rows:
            ratio = f"{a / b:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0 else "-"
            print(f"{o['connected']:>10,} {name:<44} {a if a is not None else '-':>10} {b if b is not None else '-':>10} {ratio:>7}")
print("\n(b) scheduler lag started_at - scheduled_for (ms), succeeded runs in the window")
print(f"{'phase':<40} {'runs':>7} {'p50':>7} {'p99':>8} {'max':>8} | {'raw timer p50/p99/max':>24} | {'ratio p50/p99':>13}")
nan = float("nan")
for r in (x for x in rs if x["kind"] == "sched"):
    a = r["lag_all"]
    t = {k: (nan if v is None else v) for k, v in r["raw_timer"].items()}
    print(f"{r['label']:<40} {a['n']:>7,} {a['p50_ms']:>7.1f} {a['p99_ms']:>8.1f} {a['max_ms']:>8.1f} | "
          f"{t['p50_ms']:>7.2f} {t['p99_ms']:>7.2f} {t['max_ms']:>8.2f} | {str(r['ratio_p50']):>6} {str(r['ratio_p99']):>6}")
    print(f"{'':<40} expected {r['expected_runs']:,}, statuses {r['statuses']}; every-second jobs only: "
          f"p50 {r['lag_probe']['p50_ms']} p99 {r['lag_probe']['p99_ms']} max {r['lag_probe']['max_ms']} (n={r['lag_probe']['n']})")
print("external reference: pg_cron, published 11-98 ms")
PY
