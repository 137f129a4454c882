//! The production topology without Docker (`infra-prod/local.sh`): nginx with
//! `infra-prod/nginx.conf` in front of two `serve` replicas that both run the scheduler, on
//! one PostgreSQL. Every request goes through nginx, as a deployment's would. Needs Debian's
//! nginx: skipped (saying so) where it is missing, unless `TDC_REQUIRE_NGINX=1` (CI).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Int64Array};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{Connection, PgConnection};

use crate::helpers::{TestApp, parquet_of, remote_app, temp_dir};
use crate::sse::{Next, SseStream};

/// The topology of `local.sh`, in a directory of its own, taken down when dropped.
struct Topology {
    dir: PathBuf,
    url: String,
    database_url: String,
    app_ports: [u16; 2],
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn nginx_present() -> bool {
    Path::new("/usr/sbin/nginx").exists()
        || Command::new("nginx")
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success())
}

impl Topology {
    fn local_sh(dir: &Path, args: &[&str]) {
        let repo = env!("CARGO_MANIFEST_DIR");
        let out = Command::new("bash")
            .arg(format!("{repo}/infra-prod/local.sh"))
            .args(args)
            .env("TDC_LOCAL_DIR", dir)
            .env("TDC_BIN", env!("CARGO_BIN_EXE_tinydevcrm"))
            .env("RUST_LOG", "warn")
            .output()
            .expect("run local.sh");
        assert!(
            out.status.success(),
            "local.sh {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn up() -> Self {
        let dir = temp_dir("topology");
        let ports = [free_port(), free_port(), free_port()];
        let repo = env!("CARGO_MANIFEST_DIR");
        let out = Command::new("bash")
            .arg(format!("{repo}/infra-prod/local.sh"))
            .arg("up")
            .env("TDC_LOCAL_DIR", &dir)
            .env("TDC_BIN", env!("CARGO_BIN_EXE_tinydevcrm"))
            .env("TDC_NGINX_PORT", ports[0].to_string())
            .env("TDC_APP_PORT_1", ports[1].to_string())
            .env("TDC_APP_PORT_2", ports[2].to_string())
            .env("RUST_LOG", "warn")
            .output()
            .expect("run local.sh up");
        let topology = Self {
            url: format!("http://127.0.0.1:{}", ports[0]),
            database_url: read_var(&dir, "DATABASE_URL"),
            app_ports: [ports[1], ports[2]],
            dir,
        };
        assert!(
            out.status.success(),
            "local.sh up failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        topology
    }

    fn replica(&self, action: &str, n: usize) {
        Self::local_sh(&self.dir, &[action, &n.to_string()]);
    }

    /// The replica (1 or 2) whose `tdc_sse_streams` gauge counts the one open stream.
    async fn stream_holder(&self, client: &reqwest::Client) -> usize {
        let mut holders = Vec::new();
        for (i, port) in self.app_ports.iter().enumerate() {
            let text = client
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            let open = text
                .lines()
                .find_map(|l| l.strip_prefix("tdc_sse_streams "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            if open >= 1.0 {
                holders.push(i + 1);
            }
        }
        assert_eq!(
            holders.len(),
            1,
            "one replica holds the stream: {holders:?}"
        );
        holders[0]
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let repo = env!("CARGO_MANIFEST_DIR");
        let _ = Command::new("bash")
            .arg(format!("{repo}/infra-prod/local.sh"))
            .arg("down")
            .env("TDC_LOCAL_DIR", &self.dir)
            .env("TDC_BIN", env!("CARGO_BIN_EXE_tinydevcrm"))
            .output();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn read_var(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join("env")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_default()
        .to_owned()
}

/// An SSE listener through nginx that reconnects with `Last-Event-ID` whenever its stream
/// ends or breaks, and keeps every event id it was given.
struct Listener {
    client: reqwest::Client,
    url: String,
    access: String,
    stream: Option<SseStream>,
    seqs: Vec<i64>,
    reconnects: usize,
    /// Streams that ended cleanly with the server's hint to reconnect soon (`retry: 500`).
    hinted_ends: usize,
}

impl Listener {
    async fn open(&mut self) {
        let mut headers = vec![("Authorization", format!("Bearer {}", self.access))];
        if let Some(last) = self.seqs.last() {
            headers.push(("Last-Event-ID", last.to_string()));
        }
        // While a replica goes away nginx may still pick it once (then marks it down): a
        // listener tries again, as EventSource does.
        for _ in 0..100 {
            let mut req = self.client.get(&self.url);
            for (name, value) in &headers {
                req = req.header(*name, value);
            }
            if let Ok(res) = req.send().await
                && res.status() == StatusCode::OK
            {
                self.stream = Some(SseStream::from_response(res));
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the listener could not reconnect through nginx");
    }

    /// Reads events until `until` of them were received in all, reconnecting as needed.
    async fn read_until(&mut self, until: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.seqs.len() < until {
            assert!(
                Instant::now() < deadline,
                "only {} of {until} events within {limit:?}: {:?}",
                self.seqs.len(),
                self.seqs
            );
            if self.stream.is_none() {
                self.open().await;
                self.reconnects += 1;
            }
            let stream = self.stream.as_mut().expect("open");
            match stream.next(Duration::from_secs(5)).await {
                Next::Event(event) => self.seqs.push(event.seq()),
                Next::End => {
                    if stream.retry.as_deref() == Some("500") {
                        self.hinted_ends += 1;
                    }
                    self.stream = None;
                }
                Next::Broken(_) => self.stream = None,
                Next::Timeout => {}
            }
        }
    }
}

/// The channel's event ids as the database has them.
async fn stored_seqs(database_url: &str, channel_id: &str) -> Vec<i64> {
    let mut conn = PgConnection::connect(database_url).await.expect("connect");
    sqlx::query_scalar("SELECT seq FROM tinydevcrm.events WHERE channel_id = $1::uuid ORDER BY seq")
        .bind(channel_id)
        .fetch_all(&mut conn)
        .await
        .expect("events")
}

/// The processes that ran the job's successful runs.
async fn workers(database_url: &str, job_id: &str) -> BTreeSet<String> {
    let mut conn = PgConnection::connect(database_url).await.expect("connect");
    sqlx::query_scalar(
        "SELECT DISTINCT worker FROM tinydevcrm.job_runs WHERE job_id = $1::uuid AND status = 'succeeded'",
    )
    .bind(job_id)
    .fetch_all(&mut conn)
    .await
    .expect("runs")
    .into_iter()
    .collect()
}

/// Steady requests through nginx until `stop`: reads, or (`write`) one-row appends, one at a
/// time with a short pause (a tenant's fair share, not a flood its limits would answer with
/// 429); every failure is kept with its cause.
fn load(
    app: &TestApp,
    access: &str,
    write: bool,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Vec<String>> {
    let (client, base, access) = (app.client.clone(), app.address.clone(), access.to_owned());
    tokio::spawn(async move {
        let mut failures = Vec::new();
        let mut i = 0_i64;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let (what, req) = match (write, i % 2) {
                (true, _) => (
                    "POST /tables/writes/rows/",
                    client
                        .post(format!("{base}/tables/writes/rows/"))
                        .json(&json!([{"n": i}])),
                ),
                (false, 0) => (
                    "GET /views/live/rows/",
                    client.get(format!("{base}/views/live/rows/?limit=10")),
                ),
                (false, _) => ("GET /tables/", client.get(format!("{base}/tables/"))),
            };
            match req.bearer_auth(&access).send().await {
                Ok(res) if res.status().is_success() => {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(res) => failures.push(format!(
                    "{what}: {} {}",
                    res.status(),
                    res.text().await.unwrap_or_default()
                )),
                Err(e) => failures.push(format!("{what}: {e:?}")),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        failures
    })
}

#[tokio::test]
async fn two_replicas_behind_nginx_lose_no_event_and_fail_no_request_across_kills_and_restarts() {
    if !nginx_present() {
        assert!(
            std::env::var("TDC_REQUIRE_NGINX").is_err(),
            "TDC_REQUIRE_NGINX is set and nginx is missing"
        );
        eprintln!("skipped: nginx is not installed (Debian package nginx; .ci/run installs it)");
        return;
    }
    let topology = Topology::up();
    let app = remote_app(&topology.url);

    // Arrange: a user, sample.parquet, a view that changes at every refresh, a channel on it,
    // a listener through nginx, then a job that refreshes the view every second.
    let user = app.signed_up_user().await;
    let access = user.access.clone();
    let sample = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("sample.parquet"))
        .expect("sample.parquet");
    let res = app.create_table(&access, sample, "calls", None).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let writes = parquet_of(vec![(
        "n",
        Arc::new(Int64Array::from(vec![0_i64])) as ArrayRef,
    )]);
    let res = app.create_table(&access, writes, "writes", None).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    app.created(
        &access,
        "/views/create/",
        json!({"view_name": "live", "sql_query": "SELECT count(*) AS n, now() AS at FROM calls"}),
    )
    .await;
    let channel = app
        .created(&access, "/channels/create/", json!({"view_name": "live"}))
        .await;
    let channel_id = channel["channel_id"]
        .as_str()
        .expect("channel_id")
        .to_owned();
    let mut listener = Listener {
        client: app.client.clone(),
        url: app.url(&format!("/channels/{channel_id}/listen/")),
        access: access.clone(),
        stream: None,
        seqs: Vec::new(),
        reconnects: 0,
        hinted_ends: 0,
    };
    listener.open().await;
    let job_id = app.every_second_job(&access, "live", json!({})).await;

    // Act 1: events of runs made by either replica.
    let mut wanted = 4;
    let start = Instant::now();
    loop {
        listener.read_until(wanted, Duration::from_secs(30)).await;
        if workers(&topology.database_url, &job_id).await.len() >= 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "one replica ran every run: {:?}",
            workers(&topology.database_url, &job_id).await
        );
        wanted += 1;
    }

    // Act 2: kill -9 the replica holding the stream; the listener comes back through nginx.
    let holder = topology.stream_holder(&app.client).await;
    topology.replica("kill", holder);
    let killed_at = listener.seqs.len();
    listener
        .read_until(killed_at + 3, Duration::from_secs(30))
        .await;
    topology.replica("start", holder);

    // Act 3: a rolling restart (SIGTERM, start, then the other) under steady reads and writes.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let loads: Vec<_> = [false, false, true]
        .into_iter()
        .map(|write| load(&app, &access, write, Arc::clone(&stop), Arc::clone(&done)))
        .collect();
    let before_restarts = listener.seqs.len();
    let restarting = {
        let dir = topology.dir.clone();
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_secs(2));
            for n in [1, 2] {
                Topology::local_sh(&dir, &["restart", &n.to_string()]);
            }
        })
    };
    while !restarting.is_finished() {
        let have = listener.seqs.len();
        listener.read_until(have + 1, Duration::from_secs(30)).await;
    }
    restarting.await.expect("the restarts");
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for l in loads {
        failures.extend(l.await.expect("load task"));
    }
    let have = listener.seqs.len();
    listener.read_until(have + 2, Duration::from_secs(30)).await;

    // Assert: every request answered, and the listener got every event the database holds
    // in its range, once each, in order.
    let requests = done.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the rolling restart: {failures:#?}",
        failures.len(),
        requests + failures.len()
    );
    assert!(
        requests > 30,
        "the load was too light to mean anything: {requests}"
    );
    let got = &listener.seqs;
    let stored = stored_seqs(&topology.database_url, &channel_id).await;
    let (first, last) = (got[0], got[got.len() - 1]);
    let expected: Vec<i64> = stored
        .into_iter()
        .filter(|s| (first..=last).contains(s))
        .collect();
    assert_eq!(got, &expected, "events missing, repeated or out of order");
    assert_eq!(
        first, 1,
        "the listener, open before the job, saw its first event"
    );
    // The kill ends the stream, and so does the restart of whichever replica then holds it.
    assert!(
        listener.reconnects >= 2,
        "the kill and a restart each ended the stream: {} reconnects",
        listener.reconnects
    );
    // A replica stopped with SIGTERM drains: it ends its streams cleanly, with the hint.
    assert!(
        listener.hinted_ends >= 1,
        "no stream ended with the reconnect hint during the rolling restart"
    );
    eprintln!(
        "topology: {} events (1..={last}) received in order, {} during the restarts; {} stream reconnects ({} clean ends with the reconnect hint); {requests} requests through nginx during the rolling restart, 0 failed",
        got.len(),
        got.len() - before_restarts,
        listener.reconnects,
        listener.hinted_ends
    );
}
