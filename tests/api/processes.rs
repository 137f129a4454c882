//! Real `serve` processes on one database, and a PostgreSQL restart under a live stream.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sqlx::Row;
use tinydevcrm::db::local_cluster::{ClusterOptions, LocalCluster};
use uuid::Uuid;

use crate::helpers::{
    database_url, spawn_app, spawn_app_on, spawn_app_with, superuser, temp_dir, test_settings,
};

/// A `serve` process, killed when dropped.
pub(crate) struct Serve(pub(crate) Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tinydevcrm serve` on a test database, logging to `log`; `env` adds or overrides variables.
pub(crate) fn serve(database_url: &str, log: &std::path::Path, env: &[(&str, String)]) -> Serve {
    let log = std::fs::File::create(log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_tinydevcrm"))
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("JWT_SECRET", "a-test-secret-that-is-long-enough-0123456789")
        .env("TDC_BIND", "127.0.0.1:0")
        .env("TDC_STREAM_BIND", "")
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start serve");
    Serve(child)
}

/// Waits (up to 10 s) until a serve process answers on `base`.
pub(crate) async fn wait_until_up(client: &reqwest::Client, base: &str) {
    for _ in 0..100 {
        if client.get(format!("{base}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn each_tick_runs_exactly_once_across_three_serve_processes() {
    // The API app runs no scheduler: only the three processes do.
    let api = spawn_app_with(|s| s.scheduler = false).await;
    let user = api.signed_up_user().await;
    let a = &user.access;
    let res = api
        .create_table(
            a,
            crate::helpers::walkthrough_file(),
            "sometable",
            Some(crate::helpers::WALKTHROUGH_COLUMNS),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    for v in 0..10 {
        api.created(
            a,
            "/views/create/",
            // Reading the clock makes the view volatile: every run refreshes it for real
            // instead of skipping a view whose tables did not change.
            json!({"view_name": format!("v{v}"), "sql_query": "SELECT count(*) AS n, now() AS at FROM sometable"}),
        )
        .await;
    }
    // Forty jobs, each every second, each a real refresh: heavy enough to need three
    // processes' claims interleaved, light enough for a loaded debug build to keep up.
    for j in 0..40 {
        api.created(
            a,
            "/jobs/create/",
            json!({"view_name": format!("v{}", j % 10), "crontab_def": "* * * * * *"}),
        )
        .await;
    }
    let url = database_url(&api.db);
    let logs = temp_dir("tdc-serve-logs");
    let processes: Vec<Serve> = (0..3)
        // One tenant owns all forty jobs here: lift its cap of runs in progress, which has
        // its own test (tests/api/fairness.rs), so that every tick does work.
        .map(|i| {
            serve(
                &url,
                &logs.join(format!("serve-{i}.log")),
                &[("TDC_SCHEDULER_TENANT_CONCURRENCY", "1000".to_owned())],
            )
        })
        .collect();
    // The window starts once the schedulers work (debug processes on a loaded machine take a
    // while to start; ticks missed before that are caught up once, by design).
    let mut admin = superuser(&api.db).await;
    let began = std::time::Instant::now();
    let started: DateTime<Utc> = loop {
        let first: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT min(claimed_at) FROM tinydevcrm.job_runs")
                .fetch_one(&mut admin)
                .await
                .expect("first claim");
        if let Some(first) = first {
            break first;
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "no serve process claimed a job"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Six seconds of warm-up: the first claims catch up on the ticks missed while the
    // processes started, one tenant's claims one process at a time (its claim lock).
    tokio::time::sleep(Duration::from_secs(30)).await;
    let stopped = Utc::now();
    drop(processes);

    // The window ends well before the processes were stopped: every run of a tick inside it
    // has had time to finish, even when a loaded machine starts runs late.
    let window = (
        started + chrono::Duration::seconds(6),
        stopped - chrono::Duration::seconds(6),
    );
    let rows = sqlx::query(
        "SELECT r.job_id, r.scheduled_for, r.status, r.worker, r.error, r.started_at, r.claimed_at,
                (SELECT count(*) FROM tinydevcrm.view_refreshes f WHERE f.job_run_id = r.run_id) AS refreshes
         FROM tinydevcrm.job_runs r WHERE r.scheduled_for BETWEEN $1 AND $2",
    )
    .bind(window.0)
    .bind(window.1)
    .fetch_all(&mut admin)
    .await
    .expect("runs");
    // Skipped runs never start: their lags are NULL.
    type Stats = (String, i64, Option<f64>, Option<f64>, Option<f64>);
    let stats: Vec<Stats> = sqlx::query_as(
        "SELECT status, count(*), avg(extract(epoch FROM started_at - scheduled_for))::float8,
                max(extract(epoch FROM started_at - scheduled_for))::float8, max(duration_ms)::float8
         FROM tinydevcrm.job_runs WHERE scheduled_for BETWEEN $1 AND $2 GROUP BY status",
    )
    .bind(window.0)
    .bind(window.1)
    .fetch_all(&mut admin)
    .await
    .expect("stats");
    eprintln!("runs by status (count, mean lag s, max lag s, max duration ms): {stats:?}");
    let mut ticks: BTreeMap<Uuid, Vec<DateTime<Utc>>> = BTreeMap::new();
    let mut workers = BTreeSet::new();
    for row in &rows {
        let status: String = row.get("status");
        let refreshes: i64 = row.get("refreshes");
        assert_ne!(status, "running", "a run inside the window did not finish");
        let error: Option<String> = row.get("error");
        let claimed: DateTime<Utc> = row.get("claimed_at");
        let scheduled: DateTime<Utc> = row.get("scheduled_for");
        // A tick that found the job's previous run still going is recorded as skipped and
        // does no work (overlap = skip); every other run refreshed its view exactly once.
        let expected = i64::from(error.as_deref() != Some("the previous run was still running"));
        assert_eq!(
            refreshes, expected,
            "a run refreshed its view {refreshes} times: {status} {error:?} scheduled {scheduled} claimed {claimed}"
        );
        ticks
            .entry(row.get("job_id"))
            .or_default()
            .push(row.get("scheduled_for"));
        workers.insert(row.get::<String, _>("worker"));
    }
    // A scheduler that skipped every tick would pass the checks below: most ticks must have
    // refreshed their view for real. (A tick is skipped when the job's previous run still
    // goes; on a quiet machine there are none.)
    let executed = rows
        .iter()
        .filter(|r| r.get::<String, _>("status") == "succeeded")
        .count();
    assert!(
        executed * 10 >= rows.len() * 9,
        "only {executed} of {} runs in the window refreshed their view: {stats:?}",
        rows.len()
    );
    let first = DateTime::from_timestamp(window.0.timestamp() + 1, 0).expect("second");
    let last = DateTime::from_timestamp(window.1.timestamp(), 0).expect("second");
    let expected: Vec<DateTime<Utc>> = (0..=(last - first).num_seconds())
        .map(|s| first + chrono::Duration::seconds(s))
        .collect();
    assert!(expected.len() >= 15, "window too short: {window:?}");
    assert_eq!(ticks.len(), 40, "every job ran");
    for (job, mut got) in ticks {
        got.sort();
        let unique: BTreeSet<_> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "job {job} ran a tick twice");
        let got: Vec<_> = got
            .into_iter()
            .filter(|t| *t >= first && *t <= last)
            .collect();
        assert_eq!(got, expected, "job {job} missed ticks");
    }
    assert!(
        workers.len() >= 2,
        "only {workers:?} ran jobs; the processes did not share the work"
    );
    let _ = std::fs::remove_dir_all(&logs);
}

#[tokio::test]
async fn no_event_is_lost_when_postgresql_restarts_during_a_stream() {
    let dir = temp_dir("tdc-restart");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let mut options = ClusterOptions::new(&dir);
    options.durable = false;
    options.port = Some(port);
    let start = |options: ClusterOptions| {
        std::thread::spawn(move || LocalCluster::start(&options).expect("start cluster"))
            .join()
            .expect("start thread")
    };
    let cluster = start(options.clone());
    let password = SecretString::from(Uuid::new_v4().simple().to_string());
    cluster
        .ensure_service_role(&password)
        .await
        .expect("service role");
    cluster.ensure_database("tdc").await.expect("database");
    let app = spawn_app_on(cluster.service_options("tdc", &password), test_settings()).await;
    let user = app.user_with_view().await;
    let a = user.access.clone();
    let channel = app
        .created(&a, "/channels/create/", json!({"view_name": "someview"}))
        .await;
    let cid = channel["channel_id"].as_str().expect("id").to_owned();
    let mut stream = app.listen(&a, &cid).await;

    // Refreshes go on, as fast as they can, while PostgreSQL stops and starts again.
    let client = app.client.clone();
    let refresh_url = app.url("/views/someview/refresh/");
    let token = a.clone();
    let refresher = tokio::spawn(async move {
        let mut succeeded = 0u32;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
        while tokio::time::Instant::now() < deadline {
            let res = client
                .post(&refresh_url)
                .header("Authorization", format!("Bearer {token}"))
                .send()
                .await;
            if res.is_ok_and(|r| r.status() == StatusCode::OK) {
                succeeded += 1;
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        succeeded
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .expect("stop");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cluster = start(options);
    let succeeded = refresher.await.expect("refresher");
    assert!(succeeded > 10, "too few refreshes: {succeeded}");
    // Every refresh that answered 200 committed: its event arrives, in order, once.
    for seq in 1..=i64::from(succeeded) {
        assert_eq!(
            stream.expect_event(Duration::from_secs(15)).await.seq(),
            seq
        );
    }
    // And nothing else: the next event is the next refresh's.
    app.refresh_view(&a, "someview").await;
    assert_eq!(
        stream.expect_event(Duration::from_secs(15)).await.seq(),
        i64::from(succeeded) + 1
    );
    drop(app);
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .expect("stop");
    let _ = std::fs::remove_dir_all(&dir);
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn listeners_that_never_read_do_not_grow_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // A real serve process, so its memory is its own.
    let api = spawn_app_with(|s| s.scheduler = false).await;
    let user = api.user_with_view().await;
    let a = user.access.clone();
    let channel = api
        .created(&a, "/channels/create/", json!({"view_name": "someview"}))
        .await;
    let cid = channel["channel_id"].as_str().expect("id").to_owned();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let logs = temp_dir("tdc-serve-logs");
    let serve_process = serve(
        &database_url(&api.db),
        &logs.join("serve.log"),
        &[
            (
                "JWT_SECRET",
                api.settings.jwt_secret.expose_secret().to_owned(),
            ),
            ("TDC_BIND", format!("127.0.0.1:{port}")),
            ("TDC_SCHEDULER", "false".to_owned()),
            ("TDC_SSE_QUEUE", "16".to_owned()),
        ],
    );
    let pid = serve_process.0.id();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&client, &base).await;
    // 50 listeners that read nothing, each with a tiny receive window.
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(2048).expect("rcvbuf");
        let mut stream = socket
            .connect(format!("127.0.0.1:{port}").parse().expect("addr"))
            .await
            .expect("connect");
        stream
            .write_all(
                format!(
                    "GET /channels/{cid}/listen/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a}\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .expect("request");
        let head = response_head(&mut stream).await;
        assert!(
            head.starts_with("http/1.1 200 ") && head.contains("content-type: text/event-stream"),
            "a stalled listener was not let in: {head}"
        );
        stalled.push(stream);
    }
    // And one that reads: it must get every event promptly.
    let mut reader = crate::sse::SseStream::open_url(
        &client,
        &format!("{base}/channels/{cid}/listen/"),
        &[("Authorization", format!("Bearer {a}"))],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    for seq in 1..=300 {
        let res = client
            .post(format!("{base}/views/someview/refresh/"))
            .header("Authorization", format!("Bearer {a}"))
            .send()
            .await
            .expect("refresh");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(reader.expect_event(Duration::from_secs(5)).await.seq(), seq);
    }
    let after = rss_kib(pid);
    eprintln!(
        "serve's memory grew by {} KiB",
        after.saturating_sub(before)
    );
    // Memory, unlike time, does not depend on how loaded the machine is: the bound stays.
    // 300 events x 50 stalled listeners would be ~5 MB if each kept its own backlog; what
    // cannot be written waits in the kernel's socket buffers or is dropped with the queue.
    assert!(
        after.saturating_sub(before) < 4096,
        "serve grew from {before} KiB to {after} KiB"
    );
    // Each stalled listener did get the stream: the first event waits in its socket.
    for stream in &mut stalled {
        let mut first = vec![0; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut first))
            .await
            .expect("bytes within 5 s")
            .expect("read");
        let first = String::from_utf8_lossy(&first[..n]);
        assert!(
            first.contains("event: refresh") && first.contains("id: 1\n"),
            "a stalled listener's first bytes: {first:?}"
        );
    }
    drop(stalled);
    drop(serve_process);
    let _ = std::fs::remove_dir_all(&logs);
}

#[tokio::test]
async fn deep_and_long_view_expressions_never_make_serve_exit() {
    // Arrange: a real serve process (an abort would end it, not this test) and a user.
    let api = spawn_app_with(|s| s.scheduler = false).await;
    let user = api.signed_up_user().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let logs = temp_dir("tdc-serve-logs");
    let mut serve_process = serve(
        &database_url(&api.db),
        &logs.join("serve.log"),
        &[
            (
                "JWT_SECRET",
                api.settings.jwt_secret.expose_secret().to_owned(),
            ),
            ("TDC_BIND", format!("127.0.0.1:{port}")),
            ("TDC_SCHEDULER", "false".to_owned()),
        ],
    );
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&client, &base).await;
    let terms = |n: usize, op: &str| vec!["1"; n].join(op);
    let attacks = [
        format!("SELECT {} AS x", terms(40_000, "+")),
        format!("SELECT {} AS x", terms(3_900, "+")),
        format!("SELECT 1 AS x WHERE {}", terms(30_000, " = 1 AND 1")),
        format!("SELECT {}1{} AS x", "(".repeat(20_000), ")".repeat(20_000)),
        format!(
            "SELECT {}1{} AS x",
            "(".repeat(200_000),
            ")".repeat(200_000)
        ),
        format!("SELECT {}1 AS x", "NOT ".repeat(20_000)),
        format!(
            "SELECT {}1{} AS x",
            "(SELECT ".repeat(5_000),
            ")".repeat(5_000)
        ),
    ];

    for sql in attacks {
        // Act
        let res = client
            .post(format!("{base}/views/create/"))
            .header("Authorization", format!("JWT {}", user.access))
            .json(&json!({"view_name": "deep", "sql_query": sql}))
            .send()
            .await
            .expect("the server answered");

        // Assert: a clear answer (or a body over the JSON limit), and the process is still
        // there and serving.
        let status = res.status();
        assert!(
            [
                StatusCode::BAD_REQUEST,
                StatusCode::CREATED,
                StatusCode::PAYLOAD_TOO_LARGE
            ]
            .contains(&status),
            "{status}"
        );
        if status == StatusCode::CREATED {
            let deleted = client
                .delete(format!("{base}/views/deep/"))
                .header("Authorization", format!("JWT {}", user.access))
                .send()
                .await
                .expect("delete");
            assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        }
        assert!(
            serve_process.0.try_wait().expect("status").is_none(),
            "serve exited"
        );
        let health = client
            .get(format!("{base}/health"))
            .send()
            .await
            .expect("health");
        assert_eq!(health.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn query_tokens_in_any_spelling_never_reach_the_log() {
    // Arrange: a real serve process, whose log is the one operators read.
    let api = spawn_app_with(|s| s.scheduler = false).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let logs = temp_dir("tdc-serve-logs");
    let log = logs.join("serve.log");
    let serve_process = serve(
        &database_url(&api.db),
        &log,
        &[
            ("TDC_BIND", format!("127.0.0.1:{port}")),
            ("TDC_SCHEDULER", "false".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ],
    );
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&client, &base).await;
    let listen = format!("{base}/channels/{}/listen/", Uuid::new_v4());
    let spellings = [
        "access_token",
        "ACCESS_TOKEN",
        "Access_Token",
        "%61ccess_token",
        "ACCESS%5FTOKEN",
        "access%5ftoken",
    ];

    // Act: each request fails authentication, which logs its URI.
    for (i, key) in spellings.iter().enumerate() {
        let res = client
            .get(format!("{listen}?{key}=secret-{i}-xyz&probe=visible-{i}"))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{key}");
    }
    drop(serve_process);

    // Assert: the URIs were logged, the tokens were not.
    let text = std::fs::read_to_string(&log).expect("log");
    for (i, key) in spellings.iter().enumerate() {
        assert!(text.contains(&format!("visible-{i}")), "{key}: {text}");
        assert!(!text.contains(&format!("secret-{i}")), "{key}: {text}");
    }
    let _ = std::fs::remove_dir_all(&logs);
}

/// Reads a raw HTTP response's status line and headers (lower-cased), leaving the body unread.
async fn response_head(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("response headers within 10 s")
            .expect("read");
        assert_eq!(n, 1, "the connection closed inside the headers: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_lowercase()
}

#[tokio::test]
async fn serve_refuses_to_start_when_its_stream_port_is_taken() {
    let app = spawn_app().await;
    // Another process's port: serve must not start beside it, or clients of that port would
    // talk to the other process.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let address = held.local_addr().expect("address").to_string();
    let logs = temp_dir("tdc-stream-port");
    let log = logs.join("serve.log");
    let mut process = serve(
        &database_url(&app.db),
        &log,
        &[("TDC_STREAM_BIND", address.clone())],
    );
    let began = std::time::Instant::now();
    let status = loop {
        if let Some(status) = process.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "serve still runs with its stream port {address} taken"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = std::fs::read_to_string(&log).expect("log");
    assert!(!status.success(), "{output}");
    assert!(
        output.contains(&format!("binding the stream port {address}"))
            && output.contains("TDC_STREAM_BIND"),
        "the error names the port and the setting: {output}"
    );
    drop(held);
}

#[test]
fn with_tdc_require_database_url_no_managed_cluster_is_started() {
    // The container image sets it: without DATABASE_URL, serve and migrate must stop at once,
    // saying so, rather than look for PostgreSQL binaries the image does not have.
    let data_dir = temp_dir("tdc-require-url");
    for command in ["migrate", "serve"] {
        let output = Command::new(env!("CARGO_BIN_EXE_tinydevcrm"))
            .arg(command)
            .env_remove("DATABASE_URL")
            .env_remove("JWT_SECRET")
            .env("TDC_REQUIRE_DATABASE_URL", "true")
            .env("TDC_DATA_DIR", &data_dir)
            .env("TDC_BIND", "127.0.0.1:0")
            .env("TDC_STREAM_BIND", "")
            .env("RUST_LOG", "off")
            .stdin(Stdio::null())
            .output()
            .expect("run tinydevcrm");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{command}: {stderr}");
        assert!(
            stderr.contains("DATABASE_URL is not set")
                && stderr.contains("TDC_REQUIRE_DATABASE_URL"),
            "{command}: {stderr}"
        );
        assert!(
            !data_dir.join("pgdata").exists(),
            "{command} created a cluster"
        );
    }
}

#[tokio::test]
async fn a_job_run_in_progress_at_sigterm_finishes_before_the_process_exits() {
    // Arrange: a view whose refresh takes a while, a job that refreshes it every second, and
    // a `serve` process whose scheduler runs it (the API app's runs none).
    let api = spawn_app_with(|s| s.scheduler = false).await;
    let user = api.signed_up_user().await;
    let a = &user.access;
    api.created(
        a,
        "/views/create/",
        json!({"view_name": "slow", "sql_query": "SELECT count(*) AS n, now() AS at FROM generate_series(1, 4000) AS a, generate_series(1, 4000) AS b"}),
    )
    .await;
    let job_id = api.every_second_job(a, "slow", json!({})).await;
    let logs = temp_dir("tdc-drain-logs");
    let mut process = serve(
        &database_url(&api.db),
        &logs.join("serve.log"),
        &[(
            "JWT_SECRET",
            api.settings.jwt_secret.expose_secret().to_owned(),
        )],
    );
    let mut admin = superuser(&api.db).await;
    let running = || {
        sqlx::query_scalar::<_, Uuid>(
            "SELECT run_id FROM tinydevcrm.job_runs WHERE job_id = $1::uuid AND status = 'running'",
        )
        .bind(&job_id)
    };
    let mut caught = None;
    for _ in 0..300 {
        caught = running()
            .fetch_optional(&mut admin)
            .await
            .expect("job runs");
        if caught.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run_id = caught.expect("a run was caught in progress within 15 s");

    // Act: SIGTERM while the run goes on.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(process.0.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let exited = tokio::task::spawn_blocking(move || {
        let status = process.0.wait().expect("wait");
        (process, status)
    })
    .await
    .expect("wait task");
    drop(exited);

    // Assert: the run the signal found in progress ended, and nothing was left running.
    let status: String =
        sqlx::query_scalar("SELECT status FROM tinydevcrm.job_runs WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(&mut admin)
            .await
            .expect("the run");
    assert_eq!(status, "succeeded", "the run cut off at SIGTERM");
    assert_eq!(
        running().fetch_optional(&mut admin).await.expect("runs"),
        None,
        "a run was left running"
    );
    let _ = std::fs::remove_dir_all(&logs);
}
