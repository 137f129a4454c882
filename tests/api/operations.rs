//! What an operator sees of a real `serve` process: its log file, `/metrics` from the start,
//! SIGINT draining like SIGTERM, and the managed PostgreSQL restarted after it is killed.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPool};
use tinydevcrm::service::metrics::{Kind, METRICS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, database_url, spawn_app_with, temp_dir, test_settings};
use crate::processes::{Serve, serve, wait_until_up};
use crate::sse::Next;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The test helpers pointed at a `serve` process on `base` (requests only: the pool is lazy).
fn app_at(base: &str, db: PgConnectOptions) -> TestApp {
    TestApp {
        address: base.to_owned(),
        client: reqwest::Client::new(),
        pool: PgPool::connect_lazy_with(db.clone()),
        db,
        settings: test_settings(),
        role_leaks: Arc::default(),
    }
}

/// A `serve` process on a fresh test database (scheduler off), logging at `rust_log`.
async fn serve_on_test_database(log: &Path, rust_log: &str) -> (Serve, String, TestApp) {
    let api = spawn_app_with(|s| s.scheduler = false).await;
    let port = free_port();
    let process = serve(
        &database_url(&api.db),
        log,
        &[
            ("TDC_BIND", format!("127.0.0.1:{port}")),
            ("TDC_SCHEDULER", "false".to_owned()),
            ("TDC_WORKERS", "1".to_owned()),
            ("RUST_LOG", rust_log.to_owned()),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&reqwest::Client::new(), &base).await;
    let app = app_at(&base, api.db.clone());
    (process, base, app)
}

#[tokio::test]
async fn the_log_file_has_no_colour_codes_and_one_access_line_per_request_with_its_route() {
    let logs = temp_dir("tdc-access-log");
    let log = logs.join("serve.log");
    let (process, base, _app) = serve_on_test_database(&log, "info").await;
    let client = reqwest::Client::new();

    // Client errors (no token, no such route) and a success, each marked in its query.
    for i in 0..3 {
        let res = client
            .get(format!("{base}/tables/t{i}/rows/?probe=rows-{i}"))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = client
        .get(format!("{base}/no/such/thing?probe=missing"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = client
        .get(format!("{base}/health?probe=health"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let request_id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id")
        .to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(process);

    let bytes = std::fs::read(&log).expect("log");
    assert!(
        !bytes.contains(&0x1b),
        "colour codes in the log file:\n{}",
        String::from_utf8_lossy(&bytes)
    );
    let text = String::from_utf8(bytes).expect("utf-8 log");
    let access_lines = |probe: &str| -> Vec<&str> {
        text.lines()
            .filter(|l| l.contains(" access: ") && l.contains(&format!("probe={probe}")))
            .collect()
    };
    for i in 0..3 {
        let lines = access_lines(&format!("rows-{i}"));
        assert_eq!(lines.len(), 1, "access lines of request {i}:\n{text}");
        let line = lines[0];
        assert!(line.contains(" INFO "), "{line}");
        assert!(line.contains("method=GET"), "{line}");
        assert!(line.contains("route=/tables/{name}/rows"), "{line}");
        assert!(line.contains("status=401"), "{line}");
        assert!(line.contains("latency_ms="), "{line}");
        assert!(line.contains("request_id="), "{line}");
    }
    let missing = access_lines("missing");
    assert_eq!(missing.len(), 1, "{text}");
    assert!(
        missing[0].contains("route=unmatched") && missing[0].contains("status=404"),
        "{}",
        missing[0]
    );
    let health = access_lines("health");
    assert_eq!(health.len(), 1, "{text}");
    assert!(
        health[0].contains("route=/health")
            && health[0].contains("status=200")
            && health[0].contains(&format!("request_id={request_id}")),
        "{}",
        health[0]
    );
    // Client errors are no warnings, and no span is named after a `default` route.
    assert!(
        !text
            .lines()
            .any(|l| (l.contains(" WARN ") || l.contains(" ERROR ")) && l.contains("probe=")),
        "{text}"
    );
    assert!(!text.contains("route=default"), "{text}");
    let _ = std::fs::remove_dir_all(&logs);
}

#[tokio::test]
async fn an_authenticated_request_names_its_user_and_tenant_on_its_access_line() {
    let logs = temp_dir("tdc-access-user");
    let log = logs.join("serve.log");
    let (process, _base, app) = serve_on_test_database(&log, "info").await;
    let user = app.signed_up_user().await;
    let res = app.get_as(&user.access, "/tables/?probe=mine").await;
    assert_eq!(res.status(), StatusCode::OK);
    let me: Value = app.me(&user.access).await.json().await.expect("json");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(process);

    let text = std::fs::read_to_string(&log).expect("log");
    let line = text
        .lines()
        .find(|l| l.contains(" access: ") && l.contains("probe=mine"))
        .unwrap_or_else(|| panic!("no access line:\n{text}"));
    let id = me["id"].as_str().expect("id");
    assert!(line.contains(&format!("user_id={id}")), "{line}");
    assert!(line.contains("tenant=t_"), "{line}");
    let _ = std::fs::remove_dir_all(&logs);
}

/// The value of the sample `name` (with its labels) in a Prometheus text exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_describes_every_metric_from_the_start_with_histograms_in_buckets() {
    let logs = temp_dir("tdc-metrics");
    let (process, base, app) = serve_on_test_database(&logs.join("serve.log"), "warn").await;
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");

    // Before anything happened: every metric but the per-request ones, with HELP and TYPE.
    for m in METRICS {
        if m.name.starts_with("http_") {
            continue;
        }
        let kind = match m.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        assert!(
            text.contains(&format!("# HELP {} ", m.name)),
            "no HELP for {}:\n{text}",
            m.name
        );
        assert!(
            text.contains(&format!("# TYPE {} {kind}", m.name)),
            "no TYPE {kind} for {}:\n{text}",
            m.name
        );
        if m.kind == Kind::Histogram {
            assert!(
                text.contains(&format!("{}_bucket{{", m.name)),
                "{} has no buckets:\n{text}",
                m.name
            );
        }
    }
    assert!(!text.contains("quantile="), "a summary:\n{text}");
    assert_eq!(
        sample(&text, r#"tdc_job_runs_total{status="timed_out"}"#),
        Some(0.0),
        "{text}"
    );
    assert_eq!(sample(&text, "tdc_ingest_rows_count"), Some(0.0), "{text}");

    // One upload and one refresh count once each.
    let user = app.user_with_view().await;
    let before = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let refreshed = r#"tdc_view_refresh_duration_seconds_count{status="refreshed"}"#;
    let count_before = sample(&before, refreshed).expect("refresh count");
    app.refresh_view(&user.access, "someview").await;
    let after = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert_eq!(
        sample(&after, refreshed),
        Some(count_before + 1.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "tdc_ingest_rows_count"),
        Some(1.0),
        "{after}"
    );
    assert!(
        sample(&after, "tdc_ingest_rows_sum").is_some_and(|rows| rows > 0.0),
        "{after}"
    );
    assert!(
        after.contains("# HELP http_requests_total ")
            && after.contains(r#"http_request_duration_seconds_bucket{"#),
        "{after}"
    );
    drop(process);
    let _ = std::fs::remove_dir_all(&logs);
}

/// Waits (up to 20 s) for `child` to exit; its exit status.
async fn exit_status(child: &mut Child) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "serve did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn signal(child: &Child, signal: Signal) {
    kill(
        Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        signal,
    )
    .expect("signal");
}

#[tokio::test]
async fn sigint_drains_an_in_flight_request_like_sigterm() {
    let logs = temp_dir("tdc-sigint");
    let (mut process, base, app) = serve_on_test_database(&logs.join("serve.log"), "warn").await;
    let address = base.trim_start_matches("http://").to_owned();
    // An open stream, which must end (cleanly) rather than hold the drain.
    let user = app.user_with_view().await;
    let channel = app
        .created(
            &user.access,
            "/channels/create/",
            json!({"view_name": "someview"}),
        )
        .await;
    let mut listener = app
        .listen(&user.access, channel["channel_id"].as_str().expect("id"))
        .await;

    // A registration whose body is only half sent when the signal comes.
    let body = json!({"primary_email": "drain@example.com", "password": "correct horse battery"})
        .to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let head = format!(
        "POST /auth/users/register/ HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(first.as_bytes()).await.expect("body");
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&process.0, Signal::SIGINT);
    match listener.next(Duration::from_secs(5)).await {
        Next::End => {}
        other => panic!("the stream did not end cleanly at SIGINT: {other:?}"),
    }

    // New connections are refused while the request in flight finishes.
    assert!(
        process.0.try_wait().expect("try_wait").is_none(),
        "serve exited with a request in flight"
    );
    assert!(
        reqwest::Client::new()
            .get(format!("{base}/health"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_err(),
        "serve still accepts connections after SIGINT"
    );
    stream.write_all(rest.as_bytes()).await.expect("rest");
    let mut response = String::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("the response came");
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "the in-flight request was cut: {response:?}"
    );
    let status = exit_status(&mut process.0).await;
    assert!(status.success(), "serve exited with {status}");
    let _ = std::fs::remove_dir_all(&logs);
}

/// The managed cluster's postmaster pid, from its `postmaster.pid`.
fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(data_dir.join("pgdata/postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

async fn healthy(client: &reqwest::Client, base: &str) -> bool {
    client
        .get(format!("{base}/health"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .is_ok_and(|r| r.status() == StatusCode::OK)
}

/// A `serve` process with its own cluster under `dir`: if the test fails half-way, the drop
/// still stops serve and its PostgreSQL (a killed serve would leave the server running), and
/// removes the directory.
struct ManagedServe {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for ManagedServe {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            signal(&self.child, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(pid) = postmaster_pid(&self.dir) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(self.dir.with_extension("log"));
    }
}

#[tokio::test]
async fn a_killed_managed_postgres_is_restarted_and_no_row_or_event_is_lost() {
    // A serve process with its own managed cluster.
    let dir = temp_dir("tdc-supervised");
    let log_path = dir.with_extension("log");
    let log = std::fs::File::create(&log_path).expect("log");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut process = ManagedServe {
        dir: dir.clone(),
        child: Command::new(env!("CARGO_BIN_EXE_tinydevcrm"))
            .arg("serve")
            .env_remove("DATABASE_URL")
            .env_remove("JWT_SECRET")
            .env("TDC_DATA_DIR", &dir)
            .env("TDC_BIND", format!("127.0.0.1:{port}"))
            .env("TDC_STREAM_BIND", "")
            .env("TDC_WORKERS", "1")
            .env("TDC_SCHEDULER", "false")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn serve"),
    };
    let client = reqwest::Client::new();
    let started = Instant::now();
    while !healthy(&client, &base).await {
        assert!(
            process.child.try_wait().expect("try_wait").is_none(),
            "serve exited: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "serve never up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let app = app_at(&base, PgConnectOptions::new().port(1));
    let user = app.user_with_view().await;
    let a = user.access.clone();
    let channel = app
        .created(&a, "/channels/create/", json!({"view_name": "someview"}))
        .await;
    let cid = channel["channel_id"].as_str().expect("id").to_owned();
    let mut stream = app.listen(&a, &cid).await;
    app.refresh_view(&a, "someview").await;
    assert_eq!(stream.expect_event(Duration::from_secs(10)).await.seq(), 1);

    // Kill the postmaster outright.
    let pid = postmaster_pid(&dir).expect("postmaster.pid");
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9");
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    while !healthy(&client, &base).await {
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "not healthy again within 15 s:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("healthy again {:?} after kill -9", killed.elapsed());
    for line in std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .lines()
    {
        if line.contains("PostgreSQL") {
            println!("{line}");
        }
    }
    assert_ne!(postmaster_pid(&dir), Some(pid), "the same postmaster?");

    // The rows are there, and the next refresh's event reaches the open stream, next in line.
    let res = app.get_as(&a, "/tables/sometable/rows/").await;
    assert_eq!(res.status(), StatusCode::OK);
    let rows: Value = res.json().await.expect("json");
    assert!(rows.to_string().contains("SomeNumber"), "{rows}");
    let res = app
        .post_as(&a, "/views/someview/refresh/", &json!({}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(stream.expect_event(Duration::from_secs(15)).await.seq(), 2);
    let text = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        text.contains("managed PostgreSQL exited unexpectedly"),
        "{text}"
    );
    assert!(text.contains("managed PostgreSQL restarted"), "{text}");

    // And serve still stops it at the end.
    drop(stream);
    signal(&process.child, Signal::SIGTERM);
    let status = exit_status(&mut process.child).await;
    assert!(status.success(), "serve exited with {status}");
    assert!(postmaster_pid(&dir).is_none(), "PostgreSQL was not stopped");
}
