//! One tenant cannot degrade another: reads and exports take per-tenant slots and never hold a
//! pooled connection for a client that stops reading, `/health` answers whatever the pool
//! does, and the scheduler shares its run slots between tenants and caps each tenant's runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{
    TestApp, TestUser, WALKTHROUGH_COLUMNS, assert_problem, parquet_bytes, spawn_app_with,
    superuser, walkthrough_file,
};

const SECOND: Duration = Duration::from_secs(1);

/// What a read of another tenant may take at most while one tenant misbehaves. The failure
/// this tells apart is a request that waits for a pooled connection the misbehaving tenant
/// holds: it waits the pool's 5 s acquire timeout (and then answers 503), or until the stalled
/// exports end (`export_write_stall`, 5 s and more here). A healthy read takes milliseconds, so
/// 4 s is generous for a loaded CI machine and still below both.
const BOUNDED: Duration = Duration::from_secs(4);

/// A Parquet file whose exports are about 10 MB: more than the socket buffers between the
/// server and a client that reads nothing (the kernel lets a send buffer grow to 4 MB), so
/// its download stalls.
fn big_file() -> Vec<u8> {
    let filler = "the quick brown fox jumps over the lazy dog ".repeat(5);
    let n = 40_000i64;
    let batch = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
        ),
        (
            "note",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("{i:08} {filler}")),
            )) as ArrayRef,
        ),
    ])
    .expect("batch");
    parquet_bytes(&batch, None)
}

impl TestApp {
    /// A user with the table `big` (see [`big_file`]).
    async fn user_with_big_table(&self) -> TestUser {
        let user = self.signed_up_user().await;
        let res = self
            .create_table(&user.access, big_file(), "big", None)
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        user
    }

    /// Sends `GET path` on a raw socket with a tiny receive buffer and returns the socket
    /// (never read further) and the response's status code.
    async fn unread_get(&self, access: &str, path: &str) -> (TcpStream, u16) {
        let addr: std::net::SocketAddr = self
            .address
            .trim_start_matches("http://")
            .parse()
            .expect("address");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(2048).expect("rcvbuf");
        let mut stream = socket.connect(addr).await.expect("connect");
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {access}\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .expect("request");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        let read_status = async {
            while !head.ends_with(b"\r\n") {
                let n = stream.read(&mut byte).await.expect("read");
                assert!(n > 0, "the server closed the connection");
                head.push(byte[0]);
            }
        };
        // Generous: an export is written in full before its status line, on a shared machine.
        tokio::time::timeout(30 * SECOND, read_status)
            .await
            .expect("a status line within 30 s");
        let line = String::from_utf8_lossy(&head).into_owned();
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {line:?}"));
        (stream, status)
    }
}

/// Asserts that `request` answers `expected` within [`BOUNDED`].
async fn answers_quickly(
    what: &str,
    expected: StatusCode,
    request: impl Future<Output = reqwest::Response>,
) {
    let start = Instant::now();
    let res = tokio::time::timeout(BOUNDED, request)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {BOUNDED:?}"));
    assert_eq!(res.status(), expected, "{what}");
    let _ = res.bytes().await;
    assert!(
        start.elapsed() < BOUNDED,
        "{what} took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn unread_exports_take_their_tenants_read_slots_and_no_one_elses_connections() {
    // Arrange: the test pool has 5 connections; tenant A may have 4 reads at once.
    let app = spawn_app_with(|s| s.tenant_concurrent_reads = 4).await;
    let a = app.user_with_big_table().await;
    let b = app.user_with_big_table().await;

    // Act: A opens more exports than the pool has connections and reads none of them.
    let mut statuses = Vec::new();
    let mut sockets = Vec::new();
    for i in 0..7 {
        let format = if i % 2 == 0 { "csv" } else { "parquet" };
        let (socket, status) = app
            .unread_get(&a.access, &format!("/tables/big/rows/?format={format}"))
            .await;
        statuses.push(status);
        sockets.push(socket);
    }

    // Assert: A got its 4 slots and 429 beyond them...
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429, 429]);
    let res = app.get_as(&a.access, "/tables/big/rows/?limit=1").await;
    assert_eq!(
        res.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    // ...while B's reads, B's exports and /health keep answering at once.
    for _ in 0..5 {
        answers_quickly(
            "B's page",
            StatusCode::OK,
            app.get_as(&b.access, "/tables/big/rows/?limit=100"),
        )
        .await;
        answers_quickly("/health", StatusCode::OK, app.get("/health")).await;
    }
    let start = Instant::now();
    let csv = app
        .get_as(&b.access, "/tables/big/rows/?format=csv")
        .await
        .text()
        .await
        .expect("B's export");
    assert_eq!(csv.lines().count(), 40_001);
    // Spooling 10 MB takes a second or two; waiting on A's stalled exports would take their
    // 30 s write stall. 15 s is generous for a loaded machine and still tells them apart.
    assert!(
        start.elapsed() < 15 * SECOND,
        "B's export took {:?}",
        start.elapsed()
    );
    drop(sockets);
}

#[tokio::test]
async fn an_export_whose_client_stops_reading_is_ended_and_gives_its_slot_back() {
    let app = spawn_app_with(|s| {
        s.tenant_concurrent_reads = 2;
        s.export_write_stall = 5 * SECOND;
    })
    .await;
    let a = app.user_with_big_table().await;
    let (mut stalled, status) = app
        .unread_get(&a.access, "/tables/big/rows/?format=csv")
        .await;
    assert_eq!(status, 200);
    let (_other, status) = app
        .unread_get(&a.access, "/tables/big/rows/?format=csv")
        .await;
    assert_eq!(status, 200);
    let res = app.get_as(&a.access, "/tables/big/rows/?limit=1").await;
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;

    // Seconds after the clients stopped reading, their exports end and the slots are back.
    let start = Instant::now();
    loop {
        let res = app.get_as(&a.access, "/tables/big/rows/?limit=1").await;
        if res.status() == StatusCode::OK {
            break;
        }
        assert!(start.elapsed() < 10 * SECOND, "the slots did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The stalled client then gets a broken transfer, never a short file that looks whole:
    // the server closes the connection without the chunked body's last chunk, which every
    // HTTP client reports as an error.
    let mut body = Vec::new();
    let read = tokio::time::timeout(10 * SECOND, stalled.read_to_end(&mut body)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "the server did not close the stalled export's connection: {read:?}"
    );
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "not a chunked response: {}",
        &text[..text.len().min(300)]
    );
    assert!(
        !text.ends_with("\r\n0\r\n\r\n"),
        "the stalled export ended like a complete one"
    );
    assert!(
        !text.contains("00039999 the quick"),
        "the whole file was sent"
    );
}

#[tokio::test]
async fn an_export_beyond_the_spool_limit_is_a_problem_naming_the_setting() {
    let app = spawn_app_with(|s| s.export_spool_limit_bytes = 64 * 1024).await;
    let a = app.user_with_big_table().await;
    for format in ["csv", "parquet"] {
        let res = app
            .get_as(&a.access, &format!("/tables/big/rows/?format={format}"))
            .await;
        let body = assert_problem(res, StatusCode::BAD_REQUEST, "export_too_large").await;
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("TDC_EXPORT_SPOOL_LIMIT_BYTES")),
            "{body}"
        );
    }
    // A narrower export fits.
    let res = app
        .get_as(&a.access, "/tables/big/rows/?format=csv&limit=100")
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.expect("csv").lines().count(), 101);
    // The slot of a refused export is free again.
    let res = app.get_as(&a.access, "/tables/big/rows/?limit=1").await;
    assert_eq!(res.status(), StatusCode::OK);
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().expect("timestamp"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// The tenant schema of a user.
async fn schema_of(app: &TestApp, user: &TestUser) -> String {
    let me: Value = app.me(&user.access).await.json().await.expect("json");
    format!(
        "t_{}",
        uuid::Uuid::parse_str(me["id"].as_str().expect("id"))
            .expect("uuid")
            .simple()
    )
}

#[tokio::test]
async fn a_tenant_with_unread_exports_and_slow_jobs_leaves_another_its_reads_and_its_ticks() {
    // Arrange. One process with 3 run slots and the tests' pool of 5: before per-tenant
    // limits, A's slow runs took every run slot and A's unread exports every connection.
    let app = spawn_app_with(|s| {
        s.scheduler_concurrency = 3;
        s.scheduler_tenant_concurrency = 2;
        s.tenant_concurrent_reads = 3;
    })
    .await;
    let a = app.user_with_view().await;
    let res = app.create_table(&a.access, big_file(), "big", None).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let b = app.user_with_view().await;
    for v in 0..6 {
        app.created(
            &a.access,
            "/views/create/",
            json!({"view_name": format!("slow{v}"), "sql_query": "SELECT count(*) AS n, now() AS at FROM sometable"}),
        )
        .await;
    }
    // A's refreshes are made slow by a lock on the table they read (slow without burning
    // the CPU that B's runs need; a view may not call pg_sleep).
    let mut admin = superuser(&app.db).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; LOCK TABLE {}.sometable IN ACCESS EXCLUSIVE MODE",
        schema_of(&app, &a).await
    )))
    .execute(&mut admin)
    .await
    .expect("lock");
    let mut a_jobs = Vec::new();
    for v in 0..6 {
        a_jobs.push(
            app.every_second_job(&a.access, &format!("slow{v}"), json!({}))
                .await,
        );
    }
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let (socket, status) = app
            .unread_get(&a.access, "/tables/big/rows/?format=csv")
            .await;
        assert_eq!(status, 200);
        sockets.push(socket);
    }
    let b_job = app.every_second_job(&b.access, "someview", json!({})).await;

    // Act: B reads while A's jobs and exports are stuck.
    let window_start = Utc::now();
    let until = Instant::now() + 8 * SECOND;
    while Instant::now() < until {
        answers_quickly(
            "B's page",
            StatusCode::OK,
            app.get_as(&b.access, "/views/someview/rows/"),
        )
        .await;
        answers_quickly("/health", StatusCode::OK, app.get("/health")).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let window_end = Utc::now();
    let mut check = superuser(&app.db).await;
    let res = app.get_as(&a.access, "/tables/big/rows/?limit=1").await;
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;

    // Assert: B's job ran (not skipped) every tick of the window, each within a second or so.
    let runs = app.runs(&b.access, &b_job).await;
    let first = DateTime::from_timestamp(window_start.timestamp() + 2, 0).expect("second");
    let last = DateTime::from_timestamp(window_end.timestamp() - 1, 0).expect("second");
    let ticks: Vec<&Value> = runs
        .iter()
        .filter(|r| (first..=last).contains(&time(&r["scheduled_for"])))
        .collect();
    let expected = (last - first).num_seconds() + 1;
    assert!(expected >= 5, "window too short");
    assert_eq!(
        ticks.len() as i64,
        expected,
        "B's job missed ticks: {runs:#?}"
    );
    for run in ticks {
        assert_eq!(run["status"], "succeeded", "{run}");
        let lag = time(&run["started_at"]) - time(&run["scheduled_for"]);
        assert!(
            lag < chrono::Duration::milliseconds(1500),
            "B's run started late: {run}"
        );
    }
    // A never had more than its 2 runs in progress (from each run's claim to its end); its
    // other ticks were skipped by the cap.
    let spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT r.claimed_at, coalesce(r.finished_at, now()) FROM tinydevcrm.job_runs r
         JOIN tinydevcrm.jobs j USING (job_id)
         WHERE j.user_id = (SELECT user_id FROM tinydevcrm.jobs WHERE job_id = $1::uuid)
           AND r.status <> 'skipped'",
    )
    .bind(&a_jobs[0])
    .fetch_all(&mut check)
    .await
    .expect("A's runs");
    // A run's claim is stamped by PostgreSQL when its row is inserted and its end by the
    // scheduler before the finishing commit: under load the two clocks' moments can cross by a
    // few milliseconds at a hand-over, which is not two runs at once.
    let grace = chrono::Duration::milliseconds(100);
    for (start, _) in &spans {
        let at_once = spans
            .iter()
            .filter(|(s, e)| s <= start && *start + grace < *e)
            .count();
        assert!(at_once <= 2, "A had {at_once} runs at once: {spans:#?}");
    }
    let mut a_runs = Vec::new();
    for job in &a_jobs {
        a_runs.extend(app.runs(&a.access, job).await);
    }
    assert!(
        a_runs.iter().any(|r| r["status"] == "skipped"
            && r["error"] == "the tenant's limit of runs in progress was reached"),
        "{a_runs:#?}"
    );
    sqlx::raw_sql("COMMIT")
        .execute(&mut admin)
        .await
        .expect("commit");
    drop(sockets);
}

#[tokio::test]
async fn a_queue_tick_beyond_the_tenants_cap_waits_for_one_of_its_runs_to_end() {
    // Arrange: three `queue` jobs of one tenant whose refreshes wait on a lock; the cap is 2.
    let app = spawn_app_with(|s| s.scheduler_tenant_concurrency = 2).await;
    let a = app.user_with_view().await;
    for v in 0..3 {
        app.created(
            &a.access,
            "/views/create/",
            json!({"view_name": format!("q{v}"), "sql_query": "SELECT count(*) AS n, now() AS at FROM sometable"}),
        )
        .await;
    }
    let mut admin = superuser(&app.db).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; LOCK TABLE {}.sometable IN ACCESS EXCLUSIVE MODE",
        schema_of(&app, &a).await
    )))
    .execute(&mut admin)
    .await
    .expect("lock");
    let mut jobs = Vec::new();
    for v in 0..3 {
        jobs.push(
            app.every_second_job(&a.access, &format!("q{v}"), json!({"overlap": "queue"}))
                .await,
        );
    }

    // Act and assert: two runs go, the third job's tick waits (not skipped)...
    tokio::time::sleep(3 * SECOND).await;
    let mut all = Vec::new();
    for job in &jobs {
        all.push(app.runs(&a.access, job).await);
    }
    let running = all
        .iter()
        .flatten()
        .filter(|r| r["status"] == "running")
        .count();
    assert_eq!(running, 2, "{all:#?}");
    assert!(
        all.iter().flatten().all(|r| r["status"] != "skipped"),
        "{all:#?}"
    );
    assert_eq!(all.iter().filter(|runs| runs.is_empty()).count(), 1);
    // ...and runs once the tenant's runs end.
    sqlx::raw_sql("COMMIT")
        .execute(&mut admin)
        .await
        .expect("commit");
    for job in &jobs {
        app.wait_for_runs(&a.access, job, 10 * SECOND, |runs| {
            runs.iter().any(|r| r["status"] == "succeeded")
        })
        .await;
    }
}

/// Starts `POST path` with a JSON body that never finishes (a client uploading slowly, or an
/// attacker holding the request open); the socket keeps the request going until dropped.
async fn unfinished_upload(app: &TestApp, access: &str, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .expect("connect");
    stream
        .write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {access}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n[{{\"SomeNumber\": 1}}"
            )
            .as_bytes(),
        )
        .await
        .expect("request");
    stream
}

/// Sends a one-row upload as `access` until it answers `expected` (the server takes or frees
/// a slot a moment after the client acts), for at most 10 s.
async fn upload_until(app: &TestApp, access: &str, expected: StatusCode) {
    let start = Instant::now();
    loop {
        let res = app
            .post_as(
                access,
                "/tables/sometable/rows/",
                &json!([{"SomeNumber": 7}]),
            )
            .await;
        if res.status() == expected {
            if expected == StatusCode::TOO_MANY_REQUESTS {
                assert_problem(res, expected, "too_many_requests").await;
            }
            return;
        }
        assert!(
            start.elapsed() < 10 * SECOND,
            "uploads kept answering {} instead of {expected}",
            res.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_tenants_uploads_beyond_its_slots_get_429_and_other_tenants_still_upload() {
    let app = spawn_app_with(|s| s.tenant_concurrent_uploads = 2).await;
    let a = app.user_with_view().await;
    let b = app.user_with_view().await;

    // A starts three uploads that never finish: two hold its two slots, the third is refused
    // at once (so the two are known to hold them)...
    let mut held = Vec::new();
    for path in [
        "/tables/sometable/rows/",
        "/tables/sometable/rows/?mode=replace",
        "/tables/sometable/rows/",
    ] {
        held.push(unfinished_upload(&app, &a.access, path).await);
    }
    let mut refused = 0;
    for socket in &mut held {
        let mut head = [0u8; 12];
        if let Ok(Ok(n)) = tokio::time::timeout(3 * SECOND, socket.read(&mut head)).await {
            assert_eq!(
                &head[..n],
                b"HTTP/1.1 429",
                "an unfinished upload was answered"
            );
            refused += 1;
        }
    }
    assert_eq!(
        refused, 1,
        "two uploads hold the two slots, the third is refused"
    );
    // ...so its next upload, of rows or of a new table, is refused too,
    upload_until(&app, &a.access, StatusCode::TOO_MANY_REQUESTS).await;
    let res = app
        .create_table(
            &a.access,
            walkthrough_file(),
            "another",
            Some(WALKTHROUGH_COLUMNS),
        )
        .await;
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    // while B uploads and reads as usual.
    for _ in 0..3 {
        answers_quickly(
            "B's upload",
            StatusCode::OK,
            app.post_as(
                &b.access,
                "/tables/sometable/rows/",
                &json!([{"SomeNumber": 1}]),
            ),
        )
        .await;
        answers_quickly(
            "B's page",
            StatusCode::OK,
            app.get_as(&b.access, "/tables/sometable/rows/?limit=1"),
        )
        .await;
    }

    // When A's clients go, its slots come back.
    drop(held);
    upload_until(&app, &a.access, StatusCode::OK).await;
}

#[tokio::test]
async fn a_tenants_listen_streams_beyond_its_share_get_429_and_other_tenants_still_listen() {
    // The server learns that a client went when a heartbeat fails to reach it.
    let app = spawn_app_with(|s| {
        s.tenant_max_streams = 2;
        s.sse_heartbeat = SECOND;
    })
    .await;
    let a = app.user_with_view().await;
    let b = app.user_with_view().await;
    let channel_of = |user: &TestUser| {
        let user = user.access.clone();
        let app = &app;
        async move {
            app.created(&user, "/channels/create/", json!({"view_name": "someview"}))
                .await["channel_id"]
                .as_str()
                .expect("id")
                .to_owned()
        }
    };
    let (a_channel, b_channel) = (channel_of(&a).await, channel_of(&b).await);

    let first = app.listen(&a.access, &a_channel).await;
    let _second = app.listen(&a.access, &a_channel).await;
    let res = app
        .get_as(&a.access, &format!("/channels/{a_channel}/listen/"))
        .await;
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    // B is not counted against A.
    let mut b_stream = app.listen(&b.access, &b_channel).await;
    let res = app
        .post_as(&b.access, "/views/someview/refresh/", &json!({}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(b_stream.expect_event(10 * SECOND).await.seq(), 1);

    // A stream that ends gives its slot back.
    drop(first);
    let start = Instant::now();
    loop {
        let res = app
            .get_as(&a.access, &format!("/channels/{a_channel}/listen/"))
            .await;
        if res.status() == StatusCode::OK {
            break;
        }
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            start.elapsed() < 15 * SECOND,
            "the closed stream's slot did not come back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
