//! SSE channels, through the real HTTP API with a real SSE client: the walkthrough's events,
//! resuming, retention, faults, access, slow clients, heartbeats.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    WALKTHROUGH_COLUMNS, assert_first_event_is_the_first_success, assert_problem, spawn_app,
    spawn_app_on, spawn_app_with, superuser, walkthrough_file,
};
use crate::sse::{Next, SseStream};

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().expect("timestamp"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn walkthrough_steps_3_to_9_deliver_a_refresh_event_per_run() {
    let app = spawn_app().await;
    // Steps 3 and 4, exact payloads.
    let res = app
        .post_json(
            "/auth/users/register/",
            &json!({"primary_email": "me@yingw787.com", "password": "test1234"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let user = app.login("me@yingw787.com", "test1234").await;
    let access = user.access.clone();
    // Step 5.
    let res = app
        .create_table(
            &access,
            walkthrough_file(),
            "sometable",
            Some(WALKTHROUGH_COLUMNS),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // Step 6, the original's SQL.
    let view = app
        .created(
            &access,
            "/views/create/",
            json!({"view_name": "someview", "sql_query": "SELECT * FROM sometable WHERE \"SomeNumber\" = CAST( EXTRACT( SECOND FROM NOW()) * 1000000 AS INTEGER) % 10"}),
        )
        .await;
    assert_eq!(view["volatile"], true);
    // Step 7 with a 6-field every-second crontab to keep the test quick.
    let job = app
        .client
        .post(app.url("/jobs/create/"))
        .header("Content-Type", "application/json")
        .header("Authorization", format!("JWT {access}"))
        .body(r#"{"view_name": "someview", "crontab_def": "* * * * * *"}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(job.status(), StatusCode::CREATED);
    let job: Value = job.json().await.expect("json");
    let job_id = job["job_id"].as_str().expect("job_id").to_owned();
    assert_eq!(job["timezone"], "UTC");
    assert!(time(&job["next_run_at"]) > Utc::now() - chrono::Duration::seconds(1));
    // Step 8.
    let channel = app
        .client
        .post(app.url("/channels/create/"))
        .header("Content-Type", "application/json")
        .header("Authorization", format!("JWT {access}"))
        .body(format!(r#"{{"job_id": "{job_id}"}}"#))
        .send()
        .await
        .expect("request");
    assert_eq!(channel.status(), StatusCode::CREATED);
    let channel: Value = channel.json().await.expect("json");
    let channel_id = channel["channel_id"].as_str().expect("uuid").to_owned();
    uuid::Uuid::parse_str(&channel_id).expect("a UUID");
    // Step 9, the original's headers.
    let mut stream = SseStream::open(
        &app,
        &format!("/channels/{channel_id}/listen/"),
        &[
            ("Content-Type", "application/json".to_owned()),
            ("Authorization", format!("JWT {access}")),
        ],
    )
    .await;
    assert_eq!(stream.headers()["x-accel-buffering"], "no");
    assert_eq!(stream.headers()["cache-control"], "no-cache");
    let first = stream.expect_event(5 * SECOND).await;
    let second = stream.expect_event(5 * SECOND).await;
    assert_eq!(stream.retry.as_deref(), Some("3000"));
    for event in [&first, &second] {
        assert_eq!(event.event.as_deref(), Some("refresh"));
        let data = event.json();
        assert_eq!(data["channel_id"], channel_id.as_str());
        assert_eq!(data["view_name"], "someview");
        assert_eq!(data["job_id"], job_id.as_str());
        assert_eq!(data["status"], "succeeded");
        assert!(data["row_count"].is_i64() && data["duration_ms"].is_i64());
        time(&data["refreshed_at"]);
    }
    assert_eq!(second.seq(), first.seq() + 1);
    // The event's run is in the job's history, succeeded.
    let run_id = second.json()["run_id"].as_str().expect("run").to_owned();
    let runs = app
        .wait_for_runs(&access, &job_id, 5 * SECOND, |runs| {
            runs.iter()
                .any(|r| r["run_id"] == run_id.as_str() && r["status"] == "succeeded")
        })
        .await;
    let run = runs
        .iter()
        .find(|r| r["run_id"] == run_id.as_str())
        .expect("run");
    assert!(time(&run["started_at"]) >= time(&run["scheduled_for"]));
    assert_eq!(run["attempts"], 1);
    // The view's description lists the job and the channel.
    let described: Value = app
        .get_as(&access, "/views/someview/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(described["jobs"][0]["job_id"], job_id.as_str());
    assert_eq!(described["channels"][0]["channel_id"], channel_id.as_str());
}

#[tokio::test]
async fn manual_refreshes_reach_listeners_and_resume_with_last_event_id() {
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let a = &user.access;
    let channel = app
        .created(a, "/channels/create/", json!({"view_name": "someview"}))
        .await;
    let cid = channel["channel_id"].as_str().expect("id").to_owned();
    assert_eq!(channel["last_event_id"], 0);
    let mut stream = app.listen(a, &cid).await;
    let mut refresh_ids = Vec::new();
    for _ in 0..3 {
        refresh_ids.push(app.refresh_view(a, "someview").await["refresh_id"].clone());
    }
    for (i, refresh_id) in refresh_ids.iter().enumerate() {
        let event = stream.expect_event(5 * SECOND).await;
        assert_eq!(event.seq(), i as i64 + 1);
        let data = event.json();
        assert!(data["job_id"].is_null());
        assert_eq!(&data["run_id"], refresh_id);
    }
    drop(stream);
    for _ in 0..3 {
        app.refresh_view(a, "someview").await;
    }
    let mut resumed = SseStream::open(
        &app,
        &format!("/channels/{cid}/listen/"),
        &[
            ("Authorization", format!("Bearer {a}")),
            ("Last-Event-ID", "3".to_owned()),
        ],
    )
    .await;
    for seq in 4..=6 {
        assert_eq!(resumed.expect_event(5 * SECOND).await.seq(), seq);
    }
    app.refresh_view(a, "someview").await;
    assert_eq!(resumed.expect_event(5 * SECOND).await.seq(), 7);
    // From the start, through ?access_token= as a browser EventSource sends it.
    let mut replay = SseStream::open(
        &app,
        &format!("/channels/{cid}/listen/?access_token={a}"),
        &[("Last-Event-ID", "0".to_owned())],
    )
    .await;
    for seq in 1..=7 {
        assert_eq!(replay.expect_event(5 * SECOND).await.seq(), seq);
    }
    let described: Value = app
        .get_as(a, &format!("/channels/{cid}/"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(described["last_event_id"], 7);
    // Neither stream holds anything else: the next event of both is the next refresh's.
    app.refresh_view(a, "someview").await;
    assert_eq!(resumed.expect_event(5 * SECOND).await.seq(), 8);
    assert_eq!(replay.expect_event(5 * SECOND).await.seq(), 8);
    // A skipped refresh (nothing changed, not volatile) announces nothing.
    app.created(
        a,
        "/views/create/",
        json!({"view_name": "stable", "sql_query": "SELECT count(*) AS n FROM sometable"}),
    )
    .await;
    let stable = app
        .created(a, "/channels/create/", json!({"view_name": "stable"}))
        .await;
    let sid = stable["channel_id"].as_str().expect("id").to_owned();
    let mut quiet = app.listen(a, &sid).await;
    assert_eq!(app.refresh_view(a, "stable").await["status"], "skipped");
    // The first event it gets is the first real refresh's, numbered 1.
    app.add_some_rows(a, None, json!([{"SomeNumber": 1, "SomeString": "x"}]))
        .await;
    assert_eq!(app.refresh_view(a, "stable").await["status"], "refreshed");
    assert_first_event_is_the_first_success(&mut quiet).await;
}

#[tokio::test]
async fn a_last_event_id_older_than_retention_gets_a_reset_event() {
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let a = &user.access;
    let channel = app
        .created(a, "/channels/create/", json!({"view_name": "someview"}))
        .await;
    let cid = channel["channel_id"].as_str().expect("id").to_owned();
    for _ in 0..4 {
        app.refresh_view(a, "someview").await;
    }
    // Retention deleted events 1 and 2.
    let mut admin = superuser(&app.db).await;
    sqlx::query(
        "UPDATE tinydevcrm.events SET created_at = now() - interval '30 days' WHERE seq <= 2",
    )
    .execute(&mut admin)
    .await
    .expect("age events");
    let pruned = tinydevcrm::channels::events::prune(&app.pool, chrono::Duration::days(7))
        .await
        .expect("prune");
    assert_eq!(pruned, 2);
    let path = format!("/channels/{cid}/listen/");
    let open_from = |id: &str| {
        let headers = vec![
            ("Authorization", format!("Bearer {a}")),
            ("Last-Event-ID", id.to_owned()),
        ];
        let (app, path) = (&app, path.clone());
        async move { SseStream::open(app, &path, &headers).await }
    };
    for (current, stale) in [(4, "1"), (5, "99")] {
        let mut stream = open_from(stale).await;
        let reset = stream.expect_event(5 * SECOND).await;
        assert_eq!(reset.event.as_deref(), Some("reset"));
        assert_eq!(reset.seq(), current);
        assert_eq!(reset.json()["oldest_event_id"], 3);
        app.refresh_view(a, "someview").await;
    }
    // Still retained: replayed normally.
    let mut stream = open_from("2").await;
    for seq in 3..=6 {
        let event = stream.expect_event(5 * SECOND).await;
        assert_eq!(
            (event.event.as_deref(), event.seq()),
            (Some("refresh"), seq)
        );
    }
    let res = SseStream::request(
        &app,
        &format!("/channels/{cid}/listen/"),
        &[
            ("Authorization", format!("Bearer {a}")),
            ("Last-Event-ID", "abc".to_owned()),
        ],
    )
    .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_last_event_id").await;
}

#[tokio::test]
async fn no_event_is_lost_when_the_listener_backend_is_killed() {
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let a = &user.access;
    let channel = app
        .created(a, "/channels/create/", json!({"view_name": "someview"}))
        .await;
    let cid = channel["channel_id"].as_str().expect("id").to_owned();
    let mut stream = app.listen(a, &cid).await;
    let mut admin = superuser(&app.db).await;
    for i in 1..=20 {
        app.refresh_view(a, "someview").await;
        if i % 5 == 0 {
            // The hub's LISTEN connection (it comes back after each kill).
            let started = std::time::Instant::now();
            loop {
                let killed: Vec<bool> = sqlx::query_scalar(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = current_database() AND query LIKE 'LISTEN%tdc_events%'",
                )
                .fetch_all(&mut admin)
                .await
                .expect("terminate");
                if !killed.is_empty() {
                    break;
                }
                assert!(
                    started.elapsed() < 10 * SECOND,
                    "the hub did not listen again"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    for seq in 1..=20 {
        assert_eq!(stream.expect_event(10 * SECOND).await.seq(), seq);
    }
}

#[tokio::test]
async fn a_listener_on_one_process_gets_events_of_a_job_run_by_another() {
    let listener_app = spawn_app_with(|s| s.scheduler = false).await;
    let user = listener_app.user_with_view().await;
    let a = &user.access;
    let mut settings = listener_app.settings.clone();
    settings.scheduler = true;
    let runner = spawn_app_on(listener_app.db.clone(), settings).await;
    let job_id = listener_app
        .every_second_job(a, "someview", json!({}))
        .await;
    let channel = listener_app
        .created(a, "/channels/create/", json!({"job_id": job_id}))
        .await;
    let cid = channel["channel_id"].as_str().expect("id").to_owned();
    let mut stream = listener_app.listen(a, &cid).await;
    let event = stream.expect_event(5 * SECOND).await;
    assert_eq!(event.json()["job_id"], job_id.as_str());
    // Only the runner has a scheduler: it ran the job.
    let run_id = event.json()["run_id"].as_str().expect("run").to_owned();
    let runs = runner.runs(a, &job_id).await;
    assert!(runs.iter().any(|r| r["run_id"] == run_id.as_str()));
}

#[tokio::test]
async fn only_the_owner_may_listen() {
    let app = spawn_app().await;
    let owner = app.user_with_view().await;
    let channel = app
        .created(
            &owner.access,
            "/channels/create/",
            json!({"view_name": "someview"}),
        )
        .await;
    let cid = channel["channel_id"].as_str().expect("id").to_owned();
    let other = app.signed_up_user().await;
    let listen = format!("/channels/{cid}/listen/");
    let res = SseStream::request(
        &app,
        &listen,
        &[("Authorization", format!("Bearer {}", other.access))],
    )
    .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = SseStream::request(
        &app,
        &format!("{listen}?access_token={}", other.access),
        &[],
    )
    .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    for res in [
        app.get_as(&other.access, &format!("/channels/{cid}/"))
            .await,
        app.delete_as(&other.access, &format!("/channels/{cid}/"))
            .await,
        app.post_as(
            &other.access,
            "/channels/create/",
            &json!({"view_name": "someview"}),
        )
        .await,
    ] {
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
    let theirs: Value = app
        .get_as(&other.access, "/channels/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(theirs, json!([]));
    let res = SseStream::request(&app, &listen, &[]).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "token_missing").await;
    let res = SseStream::request(&app, &format!("{listen}?access_token=garbage"), &[]).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "token_invalid").await;
    // The refresh token is not an access token.
    let res = SseStream::request(
        &app,
        &format!("{listen}?access_token={}", owner.refresh),
        &[],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // A revoked session cannot listen either.
    app.blacklist(&owner.refresh).await;
    let res = SseStream::request(
        &app,
        &format!("{listen}?access_token={}", owner.access),
        &[],
    )
    .await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "token_revoked").await;
    let res = app
        .post_as(
            &other.access,
            "/channels/create/",
            &json!({"job_id": "x", "view_name": "y"}),
        )
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_channel").await;
}

#[tokio::test]
async fn the_stream_ends_when_the_access_token_expires() {
    let app = spawn_app_with(|s| s.access_token_ttl = Duration::from_secs(2)).await;
    let user = app.user_with_view().await;
    let channel = app
        .created(
            &user.access,
            "/channels/create/",
            json!({"view_name": "someview"}),
        )
        .await;
    let cid = channel["channel_id"].as_str().expect("id").to_owned();
    let mut stream = app.listen(&user.access, &cid).await;
    let expired = stream.expect_event(5 * SECOND).await;
    assert_eq!(expired.event.as_deref(), Some("token_expired"));
    let end = stream.next(5 * SECOND).await;
    assert!(matches!(end, Next::End), "{end:?}");
}

#[tokio::test]
async fn deleting_a_channel_ends_its_streams_and_deleting_a_view_takes_its_jobs_and_channels() {
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let a = &user.access;
    let channel = app
        .created(a, "/channels/create/", json!({"view_name": "someview"}))
        .await;
    let cid = channel["channel_id"].as_str().expect("id").to_owned();
    let mut stream = app.listen(a, &cid).await;
    let res = app.delete_as(a, &format!("/channels/{cid}/")).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // Generous: the hub hears of the deletion through LISTEN, late on a loaded machine.
    let end = stream.next(15 * SECOND).await;
    assert!(matches!(end, Next::End), "{end:?}");

    let job = app
        .created(
            a,
            "/jobs/create/",
            json!({"view_name": "someview", "crontab_def": "@daily"}),
        )
        .await;
    let channel = app
        .created(a, "/channels/create/", json!({"job_id": job["job_id"]}))
        .await;
    let mut watching = app
        .listen(a, channel["channel_id"].as_str().expect("id"))
        .await;
    let res = app.delete_as(a, "/views/someview/").await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let end = watching.next(15 * SECOND).await;
    assert!(matches!(end, Next::End), "{end:?}");
    let jobs: Value = app.get_as(a, "/jobs/").await.json().await.expect("json");
    assert_eq!(jobs, json!([]));
    let res = app
        .get_as(
            a,
            &format!("/channels/{}/", channel["channel_id"].as_str().expect("id")),
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_client_that_reads_nothing_delays_no_one_and_loses_nothing() {
    let app = spawn_app_with(|s| s.sse_queue = 8).await;
    let user = app.user_with_view().await;
    let a = &user.access;
    let channel = app
        .created(a, "/channels/create/", json!({"view_name": "someview"}))
        .await;
    let cid = channel["channel_id"].as_str().expect("id").to_owned();
    // A client that connects with a tiny receive buffer and then reads nothing.
    let addr: std::net::SocketAddr = app
        .address
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(2048).expect("rcvbuf");
    let mut slow = socket.connect(addr).await.expect("connect");
    slow.write_all(
        format!("GET /channels/{cid}/listen/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("request");
    // Its stream starts at the channel's newest event: wait for the headers, so no refresh
    // below comes before it (under load the server may take a while to answer).
    let mut received = Vec::new();
    let mut head = [0u8; 1024];
    while !String::from_utf8_lossy(&received).contains("\r\n\r\n") {
        let n = tokio::time::timeout(10 * SECOND, slow.read(&mut head))
            .await
            .expect("the slow client's headers")
            .expect("read");
        assert!(n > 0, "the server closed the slow client's stream");
        received.extend_from_slice(&head[..n]);
    }
    let status = String::from_utf8_lossy(&received).to_lowercase();
    assert!(
        status.starts_with("http/1.1 200") && status.contains("text/event-stream"),
        "{status}"
    );
    let mut fast = app.listen(a, &cid).await;
    let total = 300;
    for seq in 1..=total {
        app.refresh_view(a, "someview").await;
        // The reader keeps up while the other one reads nothing.
        assert_eq!(fast.expect_event(5 * SECOND).await.seq(), seq);
    }
    // Now the slow client reads. Either the kernel's socket buffers held everything, or its
    // stream was ended when it fell more than the queue behind (the lag path itself is
    // covered by a unit test of the stream); either way, what it got is in order with none
    // missing, and a reconnect with its last id replays the rest.
    let read_all = async {
        let mut buf = [0u8; 8192];
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    received.extend_from_slice(&buf[..n]);
                    if String::from_utf8_lossy(&received).contains(&format!("id: {total}\n")) {
                        break;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(10 * SECOND, read_all).await;
    let text = String::from_utf8_lossy(&received);
    let ids: Vec<i64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: ").or_else(|| l.strip_prefix("id:")))
        .map(|id| id.trim().parse().expect("id"))
        .collect();
    let last = ids.last().copied().unwrap_or(0);
    assert!(last >= 1, "the slow client received no event: {text:?}");
    assert_eq!(
        ids,
        (1..=last).collect::<Vec<_>>(),
        "in order, none missing"
    );
    // Reconnecting with its last id replays the rest.
    let mut resumed = SseStream::open(
        &app,
        &format!("/channels/{cid}/listen/"),
        &[
            ("Authorization", format!("Bearer {a}")),
            ("Last-Event-ID", last.to_string()),
        ],
    )
    .await;
    for seq in last + 1..=total {
        assert_eq!(resumed.expect_event(5 * SECOND).await.seq(), seq);
    }
    // Nothing else was queued: the next event it gets is the next refresh's.
    app.refresh_view(a, "someview").await;
    assert_eq!(resumed.expect_event(5 * SECOND).await.seq(), total + 1);
}

#[tokio::test]
async fn idle_streams_get_heartbeat_comments() {
    let app = spawn_app_with(|s| s.sse_heartbeat = SECOND).await;
    let user = app.user_with_view().await;
    let channel = app
        .created(
            &user.access,
            "/channels/create/",
            json!({"view_name": "someview"}),
        )
        .await;
    let mut stream = app
        .listen(&user.access, channel["channel_id"].as_str().expect("id"))
        .await;
    assert!(matches!(
        stream.next(Duration::from_millis(2500)).await,
        Next::Timeout
    ));
    assert!(stream.comments >= 2, "{} heartbeats", stream.comments);
}

#[tokio::test]
async fn a_failed_run_sends_no_event() {
    // Arrange: a view that fails while a row has SomeNumber = 42, a channel on it, a listener.
    let app = spawn_app().await;
    let user = app.user_with_fragile_view().await;
    let a = &user.access;
    let channel = app
        .created(a, "/channels/create/", json!({"view_name": "fragile"}))
        .await;
    let mut stream = app
        .listen(a, channel["channel_id"].as_str().expect("id"))
        .await;

    // Act: a job's runs fail; then the row goes (replace) and a refresh succeeds.
    let id = app.every_second_job(a, "fragile", json!({})).await;
    app.wait_for_runs(a, &id, 10 * SECOND, |runs| {
        runs.iter().any(|r| r["status"] == "failed")
    })
    .await;
    app.add_some_rows(
        a,
        Some("replace"),
        json!([{"SomeNumber": 1, "SomeString": "fine"}]),
    )
    .await;
    assert_eq!(app.refresh_view(a, "fragile").await["status"], "refreshed");

    // Assert: the first event the listener gets is the first success's, numbered 1.
    assert_first_event_is_the_first_success(&mut stream).await;
}

#[tokio::test]
async fn deleting_a_job_keeps_its_channel_and_the_views_events() {
    // Arrange: a channel created from a job, with one event.
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let a = &user.access;
    let job = app
        .created(
            a,
            "/jobs/create/",
            json!({"view_name": "someview", "crontab_def": "@daily"}),
        )
        .await;
    let channel = app
        .created(a, "/channels/create/", json!({"job_id": job["job_id"]}))
        .await;
    let cid = channel["channel_id"].as_str().expect("id").to_owned();
    app.refresh_view(a, "someview").await;

    // Act
    let res = app
        .delete_as(
            a,
            &format!("/jobs/{}/", job["job_id"].as_str().expect("id")),
        )
        .await;

    // Assert: the channel still watches the view, keeps its event and gets new ones.
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let described: Value = app
        .get_as(a, &format!("/channels/{cid}/"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(described["view_name"], "someview", "{described}");
    assert_eq!(described["last_event_id"], 1, "{described}");
    let mut stream = SseStream::open(
        &app,
        &format!("/channels/{cid}/listen/"),
        &[
            ("Authorization", format!("Bearer {a}")),
            ("Last-Event-ID", "0".to_owned()),
        ],
    )
    .await;
    assert_eq!(stream.expect_event(5 * SECOND).await.seq(), 1);
    app.refresh_view(a, "someview").await;
    assert_eq!(stream.expect_event(5 * SECOND).await.seq(), 2);
}
