//! Realtime benchmark: SSE fan-out latency and memory, and scheduler precision.
//!
//! Driven by `scripts/bench-realtime.sh`, which starts a `serve` process on a fresh managed
//! cluster, creates a user, a table, a volatile view and a channel, and then runs:
//!
//! ```text
//! realtime sse   --base URL --channel ID --view NAME --listeners N [--rounds 20]
//!                [--interval-ms 1000] [--serve-pid PID] [--net 1] [--settle-secs 3]
//!                [--label serve]
//! realtime sched --base URL --every-second 50 [--spread 0] [--idle 0] [--secs 25] [--warmup-secs 4]
//!                [--pghost DIR --pgport PORT]
//! ```
//!
//! The access token comes from `TDC_BENCH_TOKEN`. Every result is printed as one line
//! `RESULT {json}` (plus human-readable progress on stderr).
//!
//! `sse` opens N raw HTTP/1.1 connections to `/channels/<id>/listen/` (spread over source
//! addresses `127.0.<net>.2`, `127.0.<net>.3`, ... 5,000 per address), reads the server's
//! `VmRSS` before and after they are all connected and idle, then triggers `--rounds` refreshes
//! with `POST /views/<view>/refresh/` and computes, for every listener and every round,
//! latency = time the bytes were read here − the event's `refreshed_at` (same machine clock),
//! and the same from the time the refresh request returned here (`latency_from_return`). The
//! same client loads the reference broadcaster (`benches/sse_reference.rs`, `--label
//! reference`), which answers the same requests.
//!
//! `sched` creates `--every-second` volatile views, each with one job `* * * * * *`, and
//! optionally `--spread` more jobs `S * * * * *` (S = i % 60, on `ceil(spread / 60)` views so
//! jobs due in the same second refresh different views); then, over a `--secs` window, runs a
//! plain tokio `sleep_until` timer for the same schedule in this process (the baseline) and
//! reads the lag `started_at − scheduled_for` of every run in the window from
//! `tinydevcrm.job_runs` (as the superuser, over the cluster's Unix socket).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::{Semaphore, watch};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Opts(HashMap<String, String>);

impl Opts {
    fn str(&self, key: &str) -> Res<String> {
        self.0
            .get(key)
            .cloned()
            .ok_or_else(|| format!("missing --{key}").into())
    }
    fn str_or(&self, key: &str, default: &str) -> String {
        self.0
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    }
    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Res<T> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{key}: bad value {v:?}").into()),
        }
    }
}

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let command = args.next().unwrap_or_default();
    let mut map = HashMap::new();
    let rest: Vec<String> = args.collect();
    let mut i = 0;
    while i < rest.len() {
        let key = rest[i]
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {:?}", rest[i]))?;
        let value = rest
            .get(i + 1)
            .cloned()
            .ok_or_else(|| format!("--{key} needs a value"))?;
        map.insert(key.to_owned(), value);
        i += 2;
    }
    let opts = Opts(map);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command.as_str() {
            "sse" => sse(&opts).await,
            "sched" => sched(&opts).await,
            other => Err(format!("unknown command {other:?}: use sse or sched").into()),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

fn token() -> Res<String> {
    std::env::var("TDC_BENCH_TOKEN").map_err(|_| "TDC_BENCH_TOKEN is not set".into())
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(field)?
            .trim_start_matches(':')
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Percentile by nearest rank over a sorted slice.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    json!({
        "n": v.len(),
        "p50_ms": round3(pct(&v, 50.0)),
        "p90_ms": round3(pct(&v, 90.0)),
        "p99_ms": round3(pct(&v, 99.0)),
        "max_ms": round3(v.last().copied().unwrap_or(f64::NAN)),
        "min_ms": round3(v.first().copied().unwrap_or(f64::NAN)),
        "mean_ms": round3(if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }),
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn result(kind: &str, mut body: Value) {
    body["kind"] = json!(kind);
    println!("RESULT {body}");
}

async fn api(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Res<Value> {
    // Retries 429 (the tenant's heavy-statement slots) with a short pause.
    for _ in 0..200 {
        let mut req = client.request(method.clone(), &url).bearer_auth(token()?);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        if status.as_u16() == 429 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let text = resp.text().await?;
        if !status.is_success() {
            return Err(format!("{url}: {status}: {text}").into());
        }
        return Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        });
    }
    Err(format!("{url}: still 429 after 200 tries").into())
}

// ---------------------------------------------------------------------------------------------
// SSE fan-out

/// What one listener saw per refresh event: (event id, latency from `refreshed_at` in ms, time
/// read in µs since the epoch).
type Seen = Vec<(i64, f64, i64)>;

/// Incremental `Transfer-Encoding: chunked` decoder.
enum Chunk {
    Size,
    Data(usize),
    Crlf,
    Done,
}

struct Listener {
    raw: Vec<u8>,
    body: Vec<u8>,
    chunked: bool,
    headers_done: bool,
    state: Chunk,
}

impl Listener {
    /// Feeds bytes read at `now`; returns complete SSE events' (id, latency ms) for `refresh`.
    fn feed(&mut self, bytes: &[u8], now: DateTime<Utc>, out: &mut Seen) -> Res<()> {
        self.raw.extend_from_slice(bytes);
        if !self.headers_done {
            let Some(end) = find(&self.raw, b"\r\n\r\n") else {
                return Ok(());
            };
            let head = String::from_utf8_lossy(&self.raw[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(format!("listen: {}", head.lines().next().unwrap_or("")).into());
            }
            self.chunked = head.contains("transfer-encoding: chunked");
            self.raw.drain(..end + 4);
            self.headers_done = true;
        }
        if self.chunked {
            loop {
                match self.state {
                    Chunk::Size => {
                        let Some(end) = find(&self.raw, b"\r\n") else {
                            break;
                        };
                        let line = std::str::from_utf8(&self.raw[..end])?;
                        let size =
                            usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)?;
                        self.raw.drain(..end + 2);
                        self.state = if size == 0 {
                            Chunk::Done
                        } else {
                            Chunk::Data(size)
                        };
                    }
                    Chunk::Data(left) => {
                        if self.raw.is_empty() {
                            break;
                        }
                        let take = left.min(self.raw.len());
                        self.body.extend(self.raw.drain(..take));
                        self.state = if take == left {
                            Chunk::Crlf
                        } else {
                            Chunk::Data(left - take)
                        };
                    }
                    Chunk::Crlf => {
                        if self.raw.len() < 2 {
                            break;
                        }
                        self.raw.drain(..2);
                        self.state = Chunk::Size;
                    }
                    Chunk::Done => break,
                }
            }
        } else {
            self.body.append(&mut self.raw);
        }
        // Complete SSE events end with a blank line.
        while let Some(end) = find(&self.body, b"\n\n") {
            let event: Vec<u8> = self.body.drain(..end + 2).collect();
            let text = std::str::from_utf8(&event)?;
            let mut id = None;
            let mut kind = "message";
            let mut data = "";
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse::<i64>().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = v.trim();
                }
            }
            if kind == "refresh" {
                // The stored JSON is PostgreSQL's jsonb text: `"refreshed_at": "..."`.
                let key = "\"refreshed_at\"";
                let at = data
                    .find(key)
                    .map(|i| data[i + key.len()..].trim_start_matches([':', ' ', '"']))
                    .and_then(|rest| rest.split('"').next())
                    .ok_or("refresh event without refreshed_at")?;
                let at = DateTime::parse_from_rfc3339(at)?.with_timezone(&Utc);
                let latency = (now - at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0;
                out.push((id.unwrap_or(-1), latency, now.timestamp_micros()));
            } else if kind == "token_expired" {
                return Err("the access token expired mid-benchmark".into());
            }
        }
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Shared {
    connected: AtomicUsize,
    failed: AtomicUsize,
    /// Listeners that received event `base + 1 + i`, per round i.
    per_round: Vec<AtomicUsize>,
    base_seq: i64,
}

async fn listen_one(
    server: SocketAddr,
    source: Ipv4Addr,
    request: Arc<[u8]>,
    shared: Arc<Shared>,
    connect_slots: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> Res<Seen> {
    let mut seen = Seen::new();
    let mut listener = Listener {
        raw: Vec::new(),
        body: Vec::new(),
        chunked: false,
        headers_done: false,
        state: Chunk::Size,
    };
    let mut buf = [0u8; 2048];
    let permit = connect_slots.acquire().await?;
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let mut stream = socket.connect(server).await?;
    stream.write_all(&request).await?;
    // Wait for the response head.
    while !listener.headers_done {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err("connection closed before the response head".into());
        }
        listener.feed(&buf[..n], Utc::now(), &mut seen)?;
    }
    drop(permit);
    shared.connected.fetch_add(1, Ordering::SeqCst);
    let mut counted = 0;
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => {
                let now = Utc::now();
                let n = read?;
                if n == 0 {
                    return Err("the server closed the stream".into());
                }
                listener.feed(&buf[..n], now, &mut seen)?;
                for (id, _, _) in &seen[counted..] {
                    let round = id - shared.base_seq - 1;
                    if let Some(c) = usize::try_from(round).ok().and_then(|r| shared.per_round.get(r)) {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                }
                counted = seen.len();
            }
            _ = stop.changed() => break,
        }
    }
    Ok(seen)
}

async fn sse(opts: &Opts) -> Res<()> {
    let base = opts.str("base")?;
    let channel = opts.str("channel")?;
    let view = opts.str("view")?;
    let n: usize = opts.num("listeners", 1)?;
    let rounds: usize = opts.num("rounds", 20)?;
    let interval = Duration::from_millis(opts.num("interval-ms", 1000)?);
    let net: u8 = opts.num("net", 1)?;
    let settle = Duration::from_secs(opts.num("settle-secs", 3)?);
    let serve_pid: Option<u32> = opts.0.get("serve-pid").and_then(|p| p.parse().ok());
    let per_source: usize = opts.num("per-source", 5000)?;
    let token = token()?;
    let client = reqwest::Client::new();

    let hostport = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let server: SocketAddr = hostport.parse()?;
    let channel_info = api(
        &client,
        reqwest::Method::GET,
        format!("{base}/channels/{channel}/"),
        None,
    )
    .await?;
    let base_seq = channel_info["last_event_id"]
        .as_i64()
        .ok_or("no last_event_id")?;
    let request: Arc<[u8]> = format!(
        "GET /channels/{channel}/listen/ HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .into_bytes()
    .into();

    let rss_before = serve_pid.and_then(|p| proc_status_kib(p, "VmRSS"));
    // The idle RSS of the process before any listener phase (freed memory of an earlier phase
    // is reused by the allocator, so "before this phase" would undercount a later phase).
    let rss_ref: Option<u64> = opts
        .0
        .get("rss-baseline-kib")
        .and_then(|v| v.parse().ok())
        .or(rss_before);
    let fds_before = serve_pid.map(open_fds);
    let shared = Arc::new(Shared {
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        per_round: (0..rounds).map(|_| AtomicUsize::new(0)).collect(),
        base_seq,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let connect_slots = Arc::new(Semaphore::new(256));
    let t_connect = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let source = Ipv4Addr::new(127, 0, net, u8::try_from(2 + i / per_source)?);
        let shared2 = Arc::clone(&shared);
        let fut = listen_one(
            server,
            source,
            Arc::clone(&request),
            Arc::clone(&shared),
            Arc::clone(&connect_slots),
            stop_rx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = fut.await;
            if let Err(e) = &r
                && shared2.failed.fetch_add(1, Ordering::SeqCst) < 5
            {
                eprintln!("listener: {e}");
            }
            r
        }));
    }
    let mut last_report = Instant::now();
    loop {
        let connected = shared.connected.load(Ordering::SeqCst);
        let failed = shared.failed.load(Ordering::SeqCst);
        if connected + failed >= n {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  {connected}/{n} connected, {failed} failed");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_secs = t_connect.elapsed().as_secs_f64();
    let connected = shared.connected.load(Ordering::SeqCst);
    eprintln!(
        "  {connected}/{n} connected in {connect_secs:.1} s ({} failed); settling {settle:?}",
        shared.failed.load(Ordering::SeqCst)
    );
    tokio::time::sleep(settle).await;
    let rss_idle = serve_pid.and_then(|p| proc_status_kib(p, "VmRSS"));
    let fds_idle = serve_pid.map(open_fds);

    // Refresh rounds.
    let mut refresh_ms = Vec::new();
    // When each refresh request returned here (µs since the epoch).
    let mut returned_at = Vec::new();
    let mut round_complete = Vec::new();
    for r in 0..rounds {
        let start = Instant::now();
        api(
            &client,
            reqwest::Method::POST,
            format!("{base}/views/{view}/refresh/"),
            Some(json!({})),
        )
        .await?;
        refresh_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        returned_at.push(Utc::now().timestamp_micros());
        let deadline = start + Duration::from_secs(10);
        while shared.per_round[r].load(Ordering::SeqCst) < connected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        round_complete.push(start.elapsed().as_secs_f64() * 1000.0);
        let next = start + interval;
        tokio::time::sleep_until(next.into()).await;
    }
    let rss_after = serve_pid.and_then(|p| proc_status_kib(p, "VmRSS"));
    let hwm = serve_pid.and_then(|p| proc_status_kib(p, "VmHWM"));
    let _ = stop_tx.send(true);
    let mut latencies = Vec::with_capacity(connected * rounds);
    let mut from_return = Vec::with_capacity(connected * rounds);
    let mut per_round_max = vec![f64::MIN; rounds];
    for t in tasks {
        if let Ok(Ok(seen)) = t.await {
            for (id, ms, read_at) in seen {
                let round = id - base_seq - 1;
                if let Some(r) = usize::try_from(round).ok().filter(|r| *r < rounds) {
                    per_round_max[r] = per_round_max[r].max(ms);
                    latencies.push(ms);
                    if let Some(ret) = returned_at.get(r) {
                        from_return.push((read_at - ret) as f64 / 1000.0);
                    }
                }
            }
        }
    }
    let expected = connected * rounds;
    let received = latencies.len();
    let per_conn = match (rss_ref, rss_idle) {
        (Some(b), Some(a)) if connected > 0 => {
            Some((a as f64 - b as f64) * 1024.0 / connected as f64)
        }
        _ => None,
    };
    let per_conn_after = match (rss_ref, rss_after) {
        (Some(b), Some(a)) if connected > 0 => {
            Some((a as f64 - b as f64) * 1024.0 / connected as f64)
        }
        _ => None,
    };
    result(
        "sse",
        json!({
            "label": opts.str_or("label", "serve"),
            "listeners": n,
            "connected": connected,
            "failed": shared.failed.load(Ordering::SeqCst),
            "connect_secs": round3(connect_secs),
            "rounds": rounds,
            "received": received,
            "expected": expected,
            "latency": summary(latencies),
            // Receipt − when the refresh request returned to this client (negative: the event
            // arrived before the response).
            "latency_from_return": summary(from_return),
            "per_round_max_ms": per_round_max.iter().map(|x| round3(*x)).collect::<Vec<_>>(),
            "round_complete_ms": summary(round_complete),
            "refresh_request_ms": summary(refresh_ms),
            "rss_before_kib": rss_before,
            "rss_reference_kib": rss_ref,
            "rss_idle_kib": rss_idle,
            "rss_after_rounds_kib": rss_after,
            "vmhwm_kib": hwm,
            "fds_before": fds_before,
            "fds_idle": fds_idle,
            "bytes_per_conn_idle": per_conn.map(|x| x.round()),
            "bytes_per_conn_after_rounds": per_conn_after.map(|x| x.round()),
        }),
    );
    // Let the server notice the closed connections before the next phase.
    if let (Some(pid), Some(before)) = (serve_pid, fds_before) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while open_fds(pid) > before + 5 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("  server fds back to {} (before: {before})", open_fds(pid));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Scheduler precision

/// Creates `count` volatile views named `<prefix><i>` (skipping existing ones).
async fn create_views(
    client: &reqwest::Client,
    base: &str,
    prefix: &str,
    count: usize,
) -> Res<Vec<String>> {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
    let slots = Arc::new(Semaphore::new(3));
    let mut tasks = Vec::new();
    for name in names.clone() {
        let client = client.clone();
        let base = base.to_owned();
        let slots = Arc::clone(&slots);
        tasks.push(tokio::spawn(async move {
            let _p = slots.acquire().await?;
            api(
                &client,
                reqwest::Method::POST,
                format!("{base}/views/create/"),
                Some(json!({"view_name": name, "sql_query": "SELECT count(*) AS n, now() AS at FROM calls"})),
            )
            .await
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(names)
}

/// Creates jobs (view, crontab) with a few requests in flight; returns their ids.
async fn create_jobs(
    client: &reqwest::Client,
    base: &str,
    jobs: Vec<(String, String)>,
) -> Res<Vec<String>> {
    let slots = Arc::new(Semaphore::new(6));
    let mut tasks = Vec::new();
    for (view, crontab) in jobs {
        let client = client.clone();
        let base = base.to_owned();
        let slots = Arc::clone(&slots);
        tasks.push(tokio::spawn(async move {
            let _p = slots.acquire().await?;
            let body: Value = api(
                &client,
                reqwest::Method::POST,
                format!("{base}/jobs/create/"),
                Some(json!({"view_name": view, "crontab_def": crontab, "timezone": "UTC"})),
            )
            .await?;
            body["job_id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| "no job_id".into())
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        let joined: Res<String> = t.await?;
        ids.push(joined?);
    }
    Ok(ids)
}

fn next_whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp() + 1, 0).unwrap_or(t)
}

/// A plain tokio timer for the schedule: `every` tasks firing each second, `spread` tasks
/// firing at second `i % 60` of each minute, over `[from, to)`. Returns lateness in ms.
async fn raw_timer(
    every: usize,
    spread: usize,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<f64> {
    let anchor_utc = Utc::now();
    let anchor = tokio::time::Instant::now();
    let to_instant =
        move |t: DateTime<Utc>| anchor + (t - anchor_utc).to_std().unwrap_or(Duration::ZERO);
    let mut tasks = Vec::new();
    for i in 0..every + spread {
        let second = if i < every {
            None
        } else {
            Some(((i - every) % 60) as u32)
        };
        tasks.push(tokio::spawn(async move {
            use chrono::Timelike;
            let mut late = Vec::new();
            let mut tick = from;
            while tick < to {
                if second.is_none_or(|s| tick.second() == s) {
                    tokio::time::sleep_until(to_instant(tick)).await;
                    let now = Utc::now();
                    late.push((now - tick).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                }
                tick += chrono::Duration::seconds(1);
            }
            late
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(v) = t.await {
            all.extend(v);
        }
    }
    all
}

async fn sched(opts: &Opts) -> Res<()> {
    let base = opts.str("base")?;
    let every: usize = opts.num("every-second", 50)?;
    let spread: usize = opts.num("spread", 0)?;
    let idle: usize = opts.num("idle", 0)?;
    let secs: i64 = opts.num("secs", 25)?;
    let warmup: i64 = opts.num("warmup-secs", 4)?;
    let label = opts.str_or("label", "sched");
    let client = reqwest::Client::new();
    let pg = sqlx::postgres::PgConnectOptions::new()
        .socket(opts.str("pghost")?)
        .port(opts.num("pgport", 5432)?)
        .username("postgres")
        .database("tinydevcrm");
    let db = sqlx::PgPool::connect_with(pg).await?;

    // The every-second probe jobs (created once; a later phase finds them by view name).
    let probe_views = create_views_if_missing(&client, &base, "bench_probe_", every).await?;
    let existing = api(&client, reqwest::Method::GET, format!("{base}/jobs/"), None).await?;
    let mut probe_ids: Vec<String> = existing
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|j| {
                    j["view_name"]
                        .as_str()
                        .is_some_and(|v| v.starts_with("bench_probe_"))
                })
                .filter_map(|j| j["job_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if probe_ids.is_empty() {
        let t = Instant::now();
        probe_ids = create_jobs(
            &client,
            &base,
            probe_views
                .iter()
                .map(|v| (v.clone(), "* * * * * *".to_owned()))
                .collect(),
        )
        .await?;
        eprintln!(
            "  created {} every-second jobs in {:.1} s",
            probe_ids.len(),
            t.elapsed().as_secs_f64()
        );
    }
    if spread > 0 {
        let t = Instant::now();
        let views = create_views(&client, &base, "bench_spread_", spread.div_ceil(60)).await?;
        eprintln!(
            "  created {} views in {:.1} s",
            views.len(),
            t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        let ids = create_jobs(
            &client,
            &base,
            (0..spread)
                .map(|i| (views[i / 60].clone(), format!("{} * * * * *", i % 60)))
                .collect(),
        )
        .await?;
        eprintln!(
            "  created {} spread jobs in {:.1} s",
            ids.len(),
            t.elapsed().as_secs_f64()
        );
    }
    if idle > 0 {
        // Enabled jobs that do not fire in the window (yearly): the cost of many jobs to the
        // claim and next-due queries, without more work to do.
        let t = Instant::now();
        let views = create_views(&client, &base, "bench_idle_", 1).await?;
        let ids = create_jobs(
            &client,
            &base,
            (0..idle)
                .map(|_| (views[0].clone(), "0 0 0 1 1 *".to_owned()))
                .collect(),
        )
        .await?;
        eprintln!(
            "  created {} idle (yearly) jobs in {:.1} s",
            ids.len(),
            t.elapsed().as_secs_f64()
        );
    }
    let enabled: i64 = sqlx::query_scalar("SELECT count(*) FROM tinydevcrm.jobs WHERE enabled")
        .fetch_one(&db)
        .await?;

    let from = next_whole_second(Utc::now() + chrono::Duration::seconds(warmup));
    let to = from + chrono::Duration::seconds(secs);
    eprintln!("  window {from} .. {to} ({enabled} enabled jobs); raw timer runs alongside");
    let timer = raw_timer(every, spread, from, to).await;
    // The timer tasks end with the window, but there may be none (--every-second 0).
    if let Ok(left) = (to - Utc::now()).to_std() {
        tokio::time::sleep(left).await;
    }
    // Let the window's last runs finish and record their start.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let probe_uuids: Vec<uuid::Uuid> = probe_ids.iter().filter_map(|s| s.parse().ok()).collect();
    let rows: Vec<(bool, String, Option<f64>)> = sqlx::query_as(
        "SELECT job_id = ANY($3), status,
                (extract(epoch FROM started_at - scheduled_for) * 1000)::float8
         FROM tinydevcrm.job_runs WHERE scheduled_for >= $1 AND scheduled_for < $2",
    )
    .bind(from)
    .bind(to)
    .bind(&probe_uuids)
    .fetch_all(&db)
    .await?;
    let mut statuses: HashMap<String, usize> = HashMap::new();
    let mut lag_all = Vec::new();
    let mut lag_probe = Vec::new();
    for (probe, status, lag) in rows {
        *statuses.entry(status.clone()).or_default() += 1;
        if status == "succeeded"
            && let Some(l) = lag
        {
            lag_all.push(l);
            if probe {
                lag_probe.push(l);
            }
        }
    }
    let expected_probe = every * secs as usize;
    let expected_spread: usize = (0..spread)
        .filter(|i| {
            let s = (i % 60) as i64;
            (0..secs).any(|k| (from.timestamp() + k).rem_euclid(60) == s)
        })
        .count();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let ratio = |ours: &Value, raw: &Value, key: &str| match (ours[key].as_f64(), raw[key].as_f64())
    {
        (Some(a), Some(b)) if b > 0.0 => json!(round3(a / b)),
        _ => Value::Null,
    };
    let _ = mean;
    let all = summary(lag_all);
    let probe = summary(lag_probe);
    let raw = summary(timer);
    result(
        "sched",
        json!({
            "label": label,
            "enabled_jobs": enabled,
            "window_secs": secs,
            "window_from": from,
            "expected_runs": expected_probe + expected_spread,
            "expected_probe_runs": expected_probe,
            "statuses": statuses,
            "lag_all": all,
            "lag_probe": probe,
            "raw_timer": raw,
            "ratio_p50": ratio(&all, &raw, "p50_ms"),
            "ratio_p99": ratio(&all, &raw, "p99_ms"),
            "ratio_max": ratio(&all, &raw, "max_ms"),
        }),
    );
    Ok(())
}

async fn create_views_if_missing(
    client: &reqwest::Client,
    base: &str,
    prefix: &str,
    count: usize,
) -> Res<Vec<String>> {
    let listing = api(client, reqwest::Method::GET, format!("{base}/views/"), None).await?;
    let have = listing.as_array().map_or(0, |a| {
        a.iter()
            .filter(|v| {
                v["view_name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .count()
    });
    if have >= count {
        return Ok((0..count).map(|i| format!("{prefix}{i}")).collect());
    }
    create_views(client, base, prefix, count).await
}
