#!/usr/bin/env bash
# Webhook benchmark (issue 14). On one `serve` (release build, fresh managed cluster), with a
# local receiver (scripts/bench-webhooks.py: asyncio, answers 200 at once, records receipt
# times) and, in the same run:
#   (1) 1 subscription: ROUNDS_ONE refreshes in sequence; time refresh commit -> receipt;
#   (2) SUBS subscriptions on one channel: ROUNDS_FANOUT refreshes, each fanning out to SUBS
#       deliveries; time commit -> receipt of every delivery and of the last of each refresh;
#   (3) deliveries per second over a backlog of BACKLOG deliveries queued while the
#       subscriptions were paused, then resumed at once;
#   (4) the baseline: the receiver's own capacity, wrk POSTing a recorded delivery (same body
#       and headers) with CONCURRENCY connections, and the ratio (3) / (4).
# "Commit" is the event's `refreshed_at` (stamped just before the refresh's transaction
# commits); the time from the refresh's HTTP answer is printed too.
# The service attempts CONCURRENCY deliveries at once, all of them to the one receiver host
# (TDC_WEBHOOK_CONCURRENCY_PER_HOST = CONCURRENCY, so the per-host limit is not what is measured).
# Usage: scripts/bench-webhooks.sh   (knobs below as environment variables; SKIP_BUILD=1 uses
# target/release/tinydevcrm as built; PROFILE=1 records serve and PostgreSQL with `perf`
# during the phase PROFILE_PHASE (fanout or backlog, default backlog); SLOW_MS=N logs the
# statements slower than N ms (PostgreSQL's log_min_duration_statement) and summarises them;
# EXPLAIN=1 prints the outbox claim statement's plan with the backlog queued; ANALYZE=1 runs
# ANALYZE on subscriptions and deliveries once the subscriptions exist, and on deliveries once
# the backlog is queued (by default the planner has only what autovacuum gathered so far on the
# fresh cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
SUBS=${SUBS:-1000}
ROUNDS_ONE=${ROUNDS_ONE:-200}
ROUNDS_FANOUT=${ROUNDS_FANOUT:-10}
BACKLOG=${BACKLOG:-5000}
CONCURRENCY=${CONCURRENCY:-16}
WRK_SECS=${WRK_SECS:-10}
PHASES=${PHASES:-one fanout backlog wrk}
PROFILE=${PROFILE:-0}
PROFILE_PHASE=${PROFILE_PHASE:-backlog}
SLOW_MS=${SLOW_MS:-}
EXPLAIN=${EXPLAIN:-0}
ANALYZE=${ANALYZE:-0}
for tool in wrk psql curl jq python3; do
  command -v "$tool" >/dev/null || { echo "bench-webhooks needs $tool"; exit 1; }
done
. scripts/bench-lib.sh
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/tinydevcrm}
SETTINGS=(
  TDC_WEBHOOK_ALLOW_HTTP=true TDC_WEBHOOK_ALLOW_CIDRS=127.0.0.0/8
  TDC_WEBHOOK_CONCURRENCY="$CONCURRENCY" TDC_WEBHOOK_CONCURRENCY_PER_HOST="$CONCURRENCY"
  TDC_MAX_WEBHOOKS_PER_CHANNEL="$SUBS" TDC_MAX_SUBSCRIPTIONS_PER_TENANT=$((SUBS + 10))
  TDC_SCHEDULER=false
)
bench_start webhooks "${SETTINGS[@]}"
echo "settings: ${SETTINGS[*]} (others at their defaults: TDC_OUTBOX_POLL_MS=1000, TDC_DB_MAX_CONNECTIONS=20, TDC_WORKERS = cores)"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) before the run"
TOKEN=$(bench_user bench@example.com)
H="Authorization: Bearer $TOKEN"
curl -sf -H "$H" -F "file=@sample.parquet" -F table_name=calls "$B/tables/create/" > /dev/null
# A volatile view (now()), so that no refresh is skipped as unchanged.
curl -sf -H "$H" -H 'Content-Type: application/json' \
  -d '{"view_name":"live","sql_query":"SELECT count(*) AS n, now() AS at FROM calls"}' "$B/views/create/" > /dev/null
CHANNEL=$(curl -sf -H "$H" -H 'Content-Type: application/json' -d '{"view_name":"live"}' "$B/channels/create/" | jq -r .channel_id)
POSTMASTER=$(head -1 "$WORK/data/pgdata/postmaster.pid")
if [ -n "$SLOW_MS" ]; then
  psql -qc "ALTER SYSTEM SET log_min_duration_statement = $SLOW_MS" -c "SELECT pg_reload_conf()" > /dev/null
fi
echo "serve pid $SERVE_PID on $B, postmaster $POSTMASTER; channel $CHANNEL"

PERF_PID=
# perf starts when the phase prints its header and stops at the next header (see below).
case $PROFILE_PHASE in
  fanout) PROFILE_HEADER="$SUBS subscriptions:" ;;
  *) PROFILE_HEADER=$PROFILE_PHASE ;;
esac
mkdir -p target/bench-webhooks
OUT="target/bench-webhooks/results-$(date -u +%Y%m%dT%H%M%SZ).txt"
echo "results: $OUT"
python3 scripts/bench-webhooks.py --base "$B" --token "$TOKEN" --channel "$CHANNEL" --view live \
  --subs "$SUBS" --rounds-one "$ROUNDS_ONE" --rounds-fanout "$ROUNDS_FANOUT" --backlog "$BACKLOG" \
  --concurrency "$CONCURRENCY" --wrk-secs "$WRK_SECS" --phases "$PHASES" \
  --serve-pid "$SERVE_PID" --postmaster-pid "$POSTMASTER" --work "$WORK" $([ "$EXPLAIN" = 1 ] && echo --explain) $([ "$ANALYZE" = 1 ] && echo --analyze) |
  while IFS= read -r line; do
    echo "$line"
    if [ "$PROFILE" = 1 ] && [ -z "$PERF_PID" ] && [[ $line == "== $PROFILE_HEADER"* ]]; then
      # serve and every process of its cluster (the pool's backends are connected by now).
      perf record -F 499 -p "$SERVE_PID,$(pgrep -P "$POSTMASTER" | paste -sd,)" -o "$WORK/perf.data" > /dev/null 2>&1 &
      PERF_PID=$!
    elif [ -n "$PERF_PID" ] && [[ $line == "== "* ]]; then
      kill -INT "$PERF_PID"; wait "$PERF_PID" || true
      perf report -i "$WORK/perf.data" --sort comm,dso,symbol --stdio 2>/dev/null |
        grep '%' | grep -v '^#' | head -40 > "$OUT.perf.txt" || true
      PERF_PID=
    fi
  done | tee "$OUT"
kill -0 "$SERVE_PID" 2>/dev/null || { echo "serve exited:"; tail -20 "$WORK/serve.log"; exit 1; }
if [ -n "$SLOW_MS" ]; then
  echo "statements slower than $SLOW_MS ms over the run (count, total s, mean ms, statement):" | tee -a "$OUT"
  python3 - "$WORK/data/postgres.log" <<'PY' | tee -a "$OUT"
import re, sys
seen = {}
lines = open(sys.argv[1], errors="replace").read().splitlines()
for i, line in enumerate(lines):
    m = re.search(r"duration: ([\d.]+) ms\s+(?:execute [^:]*|statement|parse [^:]*|bind [^:]*):\s*(.*)", line)
    if m:
        text = " ".join([m.group(2)] + [l.strip() for l in lines[i + 1:i + 3] if not re.match(r"^\d{4}-", l)])
        key = re.sub(r"\s+", " ", text)[:110]
        n, total = seen.get(key, (0, 0.0))
        seen[key] = (n + 1, total + float(m.group(1)))
for key, (n, total) in sorted(seen.items(), key=lambda kv: -kv[1][1])[:8]:
    print(f"  {n:>6} {total / 1000:>8.2f} {total / n:>8.1f}  {key}")
PY
fi
echo "serve log warnings/errors: $(grep -ci 'warn\|error' "$WORK/serve.log" || true)"
grep -i 'warn\|error' "$WORK/serve.log" | tail -5 || true

python3 - "$OUT" <<'PY'
import json, sys
r = next(json.loads(l[7:]) for l in open(sys.argv[1]) if l.startswith("RESULT "))
print(f"\nRESULT webhooks: {r['subs']} subscriptions, concurrency {r['concurrency']} (per host too)")
def row(name, s):
    print(f"  {name:<58} {s['p50_ms']:>9.1f} {s['p99_ms']:>9.1f} {s['max_ms']:>9.1f} {s['n']:>7}")
print(f"  {'latency (ms)':<58} {'p50':>9} {'p99':>9} {'max':>9} {'n':>7}")
if "one" in r:
    row("1 subscription: refreshed_at -> receipt", r["one"]["commit_to_receipt"])
    row("1 subscription: refresh answer -> receipt", r["one"]["answer_to_receipt"])
if "fanout" in r:
    f = r["fanout"]
    row(f"{r['subs']} subscriptions: refreshed_at -> receipt, every delivery", f["every_delivery"])
    row(f"{r['subs']} subscriptions: refreshed_at -> last receipt of a refresh", f["last_of_each_refresh"])
    row(f"{r['subs']} subscriptions: refresh answer -> last receipt", f["last_from_answer"])
    row(f"{r['subs']} subscriptions: first -> last receipt of a refresh", f["first_to_last"])
    print(f"  refreshed_at -> last receipt, each refresh in turn (ms): {f['last_per_round_ms']}")
    print(f"  fan-out CPU seconds over the rounds: {f['cpu_s']}")
if "backlog" in r:
    b = r["backlog"]
    print(f"  backlog of {b['deliveries']}: {b['per_s_first_to_last']} deliveries/s (first to last receipt), "
          f"{b['per_s_from_resume']} from the resume; CPU s {b['cpu_s']} over {b['wall_s']} s wall; "
          f"mean attempt {b['mean_attempt_ms']} ms; outcomes {b['outcomes']}")
if "wrk" in r:
    print(f"  receiver capacity (wrk -c{r['concurrency']}): {r['wrk']['requests_per_s']} requests/s, "
          f"receiver CPU {r['wrk']['receiver_cpu_s']} s")
if "ratio_deliveries_to_capacity" in r:
    print(f"  ratio deliveries/s / receiver capacity: {r['ratio_deliveries_to_capacity']}")
PY
if [ -f "$OUT.perf.txt" ]; then echo "profile of serve and PostgreSQL during the $PROFILE_PHASE phase (top symbols): $OUT.perf.txt"; head -25 "$OUT.perf.txt"; fi
