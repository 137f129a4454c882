#!/usr/bin/env python3
"""The receiver and driver of scripts/bench-webhooks.sh (run by it, not by hand).

One asyncio process: a minimal HTTP/1.1 receiver (keep-alive, answers every POST `200` at once
with an empty body, records the receipt time, path and body) and the driver that refreshes the
view through the service's API and waits for the deliveries. Receipt times and the driver's
times come from the same clock, and the service stamps `refreshed_at` from the same machine's
clock. The phases, in order:

  one     1 subscription: ROUNDS_ONE refreshes in sequence, each waiting for its delivery;
          latency refreshed_at -> receipt and refresh answer -> receipt.
  fanout  SUBS subscriptions on the channel: ROUNDS_FANOUT refreshes, each waiting for all
          SUBS deliveries; latency of every delivery and of the last one of each refresh.
  backlog all SUBS subscriptions paused (in SQL, one statement), BACKLOG / SUBS refreshes queue
          BACKLOG deliveries, all resumed in one statement: deliveries per second until the
          last arrives, with the CPU seconds serve, PostgreSQL and the receiver spent meanwhile.
  wrk     the receiver's own capacity: wrk POSTing a recorded delivery (same body and
          headers) with CONCURRENCY connections, the service's attempt concurrency.

Prints one `RESULT {json}` line at the end.
"""

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime

CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


class Receiver:
    """What arrived: a count always, (time, path, head, body) while `recording`."""

    def __init__(self):
        self.count = 0
        self.recording = False
        self.records = []
        self.target = None
        self.reached = asyncio.Event()

    def got(self, at, head, body):
        self.count += 1
        if self.recording:
            self.records.append((at, head, body))
        if self.target is not None and self.count >= self.target:
            self.reached.set()

    def expect(self, more):
        """Arms the wait for `more` further requests."""
        self.reached.clear()
        self.target = self.count + more

    async def wait(self, timeout):
        await asyncio.wait_for(self.reached.wait(), timeout)
        self.target = None


class Connection(asyncio.Protocol):
    def __init__(self, receiver):
        self.receiver = receiver
        self.buffer = b""
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        at = time.time()
        buffer = self.buffer + data if self.buffer else data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            length = CONTENT_LENGTH.search(buffer, 0, end)
            size = int(length.group(1)) if length else 0
            if len(buffer) < end + 4 + size:
                break
            self.receiver.got(at, buffer[:end], buffer[end + 4 : end + 4 + size])
            buffer = buffer[end + 4 + size :]
            self.transport.write(ANSWER)
        self.buffer = buffer


def path_of(head):
    return head.split(b" ", 2)[1].decode()


def header_of(head, name):
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode()
    return None


def stamp(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def pct(values, p):
    """Nearest-rank percentile, in the values' unit."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_ms(seconds):
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 1) if ms else None,
        "p99_ms": round(pct(ms, 99), 1) if ms else None,
        "max_ms": round(max(ms), 1) if ms else None,
    }


class Api:
    def __init__(self, base, token):
        self.base = base
        self.token = token

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                text = response.read()
                return response.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            raise SystemExit(f"{method} {path}: {e.code} {e.read()[:300]!r}") from e

    async def __call__(self, method, path, body=None):
        return await asyncio.get_running_loop().run_in_executor(None, self.call, method, path, body)


def psql(sql):
    return subprocess.run(["psql", "-qAtc", sql], check=True, capture_output=True, text=True).stdout.strip()


def cpu_seconds(pids):
    """utime + stime of these processes, in seconds (ended ones count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tick


def postgres_pids(postmaster):
    """The cluster's postmaster and its children (backends, background workers)."""
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == postmaster:
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def explain_claim(concurrency, before, lease_ms=45000):
    """The plan and timing of the drainer's claim statement (text from the offline query cache
    `.sqlx/`), as a generic plan (what a prepared statement gets after 5 executions) and with
    this process's busy hosts empty, after the statement `before`; in a transaction rolled
    back."""
    query = next(q for q in (json.load(open(os.path.join(".sqlx", f)))["query"]
                             for f in sorted(os.listdir(".sqlx")) if f.endswith(".json"))
                 if "FOR UPDATE OF d SKIP LOCKED" in q and q.startswith("WITH due AS"))
    scan = max(concurrency * 4, 64)
    sql = (f"BEGIN; {before}; SET LOCAL plan_cache_mode = force_generic_plan;"
           f" PREPARE claim(text[], bigint, text[], bigint[], bigint, bigint, bigint) AS {query};"
           f" EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE claim('{{}}', {scan}, '{{}}', '{{}}', {concurrency}, {concurrency}, {lease_ms});"
           f" ROLLBACK;")
    return subprocess.run(["psql", "-qAt"], input=sql, check=True, capture_output=True, text=True).stdout


def metrics(base):
    """Sum and count of the attempt-duration histogram, and attempts by outcome."""
    with urllib.request.urlopen(base + "/metrics", timeout=30) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("tdc_webhook_attempt_duration_seconds_sum"):
            out["attempt_seconds_sum"] = float(line.split()[-1])
        elif line.startswith("tdc_webhook_attempt_duration_seconds_count"):
            out["attempt_count"] = float(line.split()[-1])
        elif line.startswith("tdc_webhook_attempts_total"):
            out[line.split("{", 1)[1].split("}", 1)[0]] = float(line.split()[-1])
    return out


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--view", required=True)
    parser.add_argument("--subs", type=int, default=1000)
    parser.add_argument("--rounds-one", type=int, default=200)
    parser.add_argument("--rounds-fanout", type=int, default=10)
    parser.add_argument("--backlog", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--wrk-secs", type=int, default=10)
    parser.add_argument("--serve-pid", type=int, required=True)
    parser.add_argument("--postmaster-pid", type=int, required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--phases", default="one fanout backlog wrk")
    parser.add_argument("--explain", action="store_true",
                        help="print the claim statement's plan with the backlog queued, before the resume")
    parser.add_argument("--analyze", action="store_true",
                        help="ANALYZE subscriptions and deliveries once the subscriptions exist, deliveries once the backlog is queued")
    args = parser.parse_args()
    phases = args.phases.split()
    api = Api(args.base, args.token)
    receiver = Receiver()
    server = await asyncio.get_running_loop().create_server(
        lambda: Connection(receiver), "127.0.0.1", 0, backlog=1024
    )
    port = server.sockets[0].getsockname()[1]
    here = f"http://127.0.0.1:{port}"
    print(f"receiver on {here} (pid {os.getpid()})", flush=True)
    result = {"kind": "webhooks", "subs": args.subs, "concurrency": args.concurrency}
    refresh = f"/views/{args.view}/refresh/"
    hooks = f"/channels/{args.channel}/webhooks/"
    sample = None  # a delivery as it arrived: (head, body), for wrk

    if "one" in phases:
        print(f"== 1 subscription: {args.rounds_one} refreshes in sequence", flush=True)
        _, one = await api("POST", hooks, {"url": f"{here}/one", "description": "bench: one"})
        warmup = 5
        commit, answer = [], []
        receiver.recording = True
        for i in range(warmup + args.rounds_one):
            receiver.records.clear()
            receiver.expect(1)
            await api("POST", refresh, {})
            answered = time.time()
            await receiver.wait(30)
            at, head, body = receiver.records[0]
            event = json.loads(body)
            if i >= warmup:
                commit.append(at - stamp(event["refreshed_at"]))
                answer.append(at - answered)
            sample = (head, body)
        receiver.recording = False
        await api("DELETE", f"{hooks}{one['webhook_id']}/")
        result["one"] = {"commit_to_receipt": summary_ms(commit), "answer_to_receipt": summary_ms(answer)}
        print(f"  refreshed_at -> receipt: {result['one']['commit_to_receipt']}", flush=True)
        print(f"  refresh answer -> receipt: {result['one']['answer_to_receipt']}", flush=True)

    if {"fanout", "backlog"} & set(phases):
        print(f"== creating {args.subs} subscriptions on the channel", flush=True)
        started = time.time()
        gate = asyncio.Semaphore(4)

        async def create(i):
            async with gate:
                await api("POST", hooks, {"url": f"{here}/s/{i}"})

        await asyncio.gather(*(create(i) for i in range(args.subs)))
        print(f"  {args.subs} created in {time.time() - started:.1f} s", flush=True)
        if args.analyze:
            psql("ANALYZE tinydevcrm.subscriptions, tinydevcrm.deliveries")

    if "fanout" in phases:
        print(f"== {args.subs} subscriptions: {args.rounds_fanout} refreshes, each waiting for all", flush=True)
        every, last, last_answer, spans = [], [], [], []
        pgs = postgres_pids(args.postmaster_pid)
        cpu0 = (cpu_seconds([args.serve_pid]), cpu_seconds(pgs), time.process_time(), time.time())
        receiver.recording = True
        for i in range(args.rounds_fanout):
            receiver.records.clear()
            receiver.expect(args.subs)
            await api("POST", refresh, {})
            answered = time.time()
            await receiver.wait(300)
            times = [at for at, _, _ in receiver.records]
            events = {json.loads(body)["refreshed_at"] for _, _, body in receiver.records}
            if len(events) != 1 or len({path_of(h) for _, h, _ in receiver.records}) != args.subs:
                raise SystemExit(f"round {i}: {len(events)} events, expected the one refresh's at every subscription")
            committed = stamp(events.pop())
            every += [at - committed for at in times]
            last.append(max(times) - committed)
            last_answer.append(max(times) - answered)
            spans.append(max(times) - min(times))
            sample = receiver.records[-1][1:]
            await asyncio.sleep(0.5)
        receiver.recording = False
        cpu1 = (cpu_seconds([args.serve_pid]), cpu_seconds(pgs), time.process_time(), time.time())
        result["fanout"] = {
            "every_delivery": summary_ms(every),
            "last_of_each_refresh": summary_ms(last),
            "last_from_answer": summary_ms(last_answer),
            "first_to_last": summary_ms(spans),
            "last_per_round_ms": [round(x * 1000) for x in last],
            "cpu_s": {"serve": round(cpu1[0] - cpu0[0], 2), "postgres": round(cpu1[1] - cpu0[1], 2),
                      "receiver": round(cpu1[2] - cpu0[2], 2), "wall": round(cpu1[3] - cpu0[3], 2)},
        }
        for key, value in result["fanout"].items():
            print(f"  {key}: {value}", flush=True)

    if "backlog" in phases:
        refreshes = max(1, args.backlog // args.subs)
        n = refreshes * args.subs
        print(f"== backlog: {refreshes} refreshes x {args.subs} paused subscriptions = {n} deliveries", flush=True)
        for _ in range(300):  # the last outcomes of the phase before are recorded
            if psql("SELECT count(*) FROM tinydevcrm.deliveries WHERE status = 'pending'") == "0":
                break
            await asyncio.sleep(0.1)
        psql(f"UPDATE tinydevcrm.subscriptions SET status = 'paused' WHERE channel_id = '{args.channel}'")
        for _ in range(refreshes):
            await api("POST", refresh, {})
        pending = int(psql("SELECT count(*) FROM tinydevcrm.deliveries WHERE status = 'pending'"))
        if pending != n:
            raise SystemExit(f"{pending} deliveries pending, expected {n}")
        if args.analyze:
            # Not subscriptions: paused now, their statistics would tell the planner that no
            # subscription is active (and it would pick the plan that scans every due delivery
            # once per subscription).
            psql("ANALYZE tinydevcrm.deliveries")
        resume = f"UPDATE tinydevcrm.subscriptions SET status = 'active' WHERE channel_id = '{args.channel}'"
        print("  what the planner knows (pg_class.reltuples, pg_stat_user_tables):", flush=True)
        print("    " + psql(
            "SELECT string_agg(format('%s: reltuples %s, live %s, dead %s, last analyze %s', c.relname, c.reltuples,"
            " t.n_live_tup, t.n_dead_tup, coalesce(t.last_autoanalyze, t.last_analyze)::text), E'\\n    ')"
            " FROM pg_class c JOIN pg_stat_user_tables t ON t.relid = c.oid"
            " WHERE t.schemaname = 'tinydevcrm' AND c.relname IN ('deliveries', 'subscriptions')"), flush=True)
        if args.explain:
            print(f"  the claim statement with {n} deliveries due (resumed in a transaction rolled back):", flush=True)
            print("    " + explain_claim(args.concurrency, resume).replace("\n", "\n    "), flush=True)
        pgs = postgres_pids(args.postmaster_pid)
        m0 = metrics(args.base)
        cpu0 = (cpu_seconds([args.serve_pid]), cpu_seconds(pgs), time.process_time())
        receiver.recording = True
        receiver.records.clear()
        receiver.expect(n)
        resumed = time.time()
        # Resumed all at once, and the drainers woken as a refresh would (else the poll finds them).
        await asyncio.get_running_loop().run_in_executor(None, psql,
            f"{resume}; SELECT pg_notify('tdc_events', 'deliveries')")
        await receiver.wait(600)
        cpu1 = (cpu_seconds([args.serve_pid]), cpu_seconds(pgs), time.process_time())
        receiver.recording = False
        times = sorted(at for at, _, _ in receiver.records)
        # Wait until every outcome is recorded, then read the attempts' figures.
        for _ in range(100):
            if psql("SELECT count(*) FROM tinydevcrm.deliveries WHERE status = 'pending'") == "0":
                break
            await asyncio.sleep(0.1)
        m1 = metrics(args.base)
        attempts = m1.get("attempt_count", 0) - m0.get("attempt_count", 0)
        attempt_s = m1.get("attempt_seconds_sum", 0) - m0.get("attempt_seconds_sum", 0)
        wall = times[-1] - resumed
        result["backlog"] = {
            "deliveries": n,
            "received": len(times),
            "per_s_first_to_last": round((len(times) - 1) / (times[-1] - times[0]), 1),
            "per_s_from_resume": round(len(times) / wall, 1),
            "first_receipt_after_resume_ms": round((times[0] - resumed) * 1000, 1),
            "wall_s": round(wall, 2),
            "cpu_s": {"serve": round(cpu1[0] - cpu0[0], 2), "postgres": round(cpu1[1] - cpu0[1], 2),
                      "receiver": round(cpu1[2] - cpu0[2], 2)},
            "attempts": attempts,
            "mean_attempt_ms": round(attempt_s / attempts * 1000, 2) if attempts else None,
            "outcomes": {k: m1[k] - m0.get(k, 0) for k in m1 if k.startswith("outcome=")},
            "distinct_paths": len({path_of(h) for _, h, _ in receiver.records}),
        }
        for key, value in result["backlog"].items():
            print(f"  {key}: {value}", flush=True)

    if "wrk" in phases:
        if sample is None:
            raise SystemExit("the wrk phase needs a delivery recorded by an earlier phase")
        head, body = sample
        headers = {}
        for name in ("content-type", "webhook-id", "webhook-timestamp", "webhook-signature", "user-agent"):
            value = header_of(head, name.encode())
            if value is not None:
                headers[name] = value
        lua = os.path.join(args.work, "post.lua")
        with open(lua, "w") as f:
            f.write('wrk.method = "POST"\n')
            f.write(f"wrk.body = {json.dumps(body.decode())}\n")
            for name, value in headers.items():
                f.write(f'wrk.headers["{name}"] = {json.dumps(value)}\n')
        print(f"== receiver capacity: wrk -t1 -c{args.concurrency} -d{args.wrk_secs}s, "
              f"a {len(body)}-byte body and the delivery's headers", flush=True)
        before = receiver.count
        cpu0 = time.process_time()
        wrk = await asyncio.create_subprocess_exec(
            "wrk", "-t1", f"-c{args.concurrency}", f"-d{args.wrk_secs}s", "-s", lua, f"{here}/wrk",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out = (await wrk.communicate())[0].decode()
        rate = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))
        result["wrk"] = {"requests_per_s": rate, "received": receiver.count - before,
                         "receiver_cpu_s": round(time.process_time() - cpu0, 2),
                         "non_2xx": "Non-2xx" in out or "Socket errors" in out}
        print(out.rstrip(), flush=True)
        if "backlog" in result:
            result["ratio_deliveries_to_capacity"] = round(result["backlog"]["per_s_first_to_last"] / rate, 3)
    server.close()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
