//! Jobs and the scheduler, through the real HTTP API: CRUD, runs, overlap, catch-up, retries,
//! pruning.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    assert_problem, hold_table_lock, spawn_app, spawn_app_on, spawn_app_with, superuser,
};

fn url_encode(s: &str) -> String {
    s.replace(':', "%3A").replace('+', "%2B")
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().expect("timestamp"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

fn finished(runs: &[Value]) -> Vec<&Value> {
    runs.iter().filter(|r| r["status"] != "running").collect()
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_crontab_value_out_of_range_names_the_users_field_its_range_and_the_value() {
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let res = app
        .post_as(
            &user.access,
            "/jobs/create/",
            &json!({"view_name": "someview", "crontab_def": "61 * * * *"}),
        )
        .await;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_crontab").await;
    assert_eq!(
        body["detail"],
        "the minute field \"61\" of crontab_def is invalid: 61 is out of range; the minute field takes 0-59"
    );
    assert_eq!(
        (&body["field"], &body["value"], &body["allowed"]),
        (&json!("minute"), &json!("61"), &json!("0-59"))
    );
}

#[tokio::test]
async fn job_crud_and_validation() {
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let a = &user.access;
    for (crontab, field) in [
        ("61 * * * *", "minute"),
        ("* 25 * * *", "hour"),
        ("* * 0 * *", "day-of-month"),
        ("* * * 13 *", "month"),
        ("* * * * 9", "day-of-week"),
        ("60 * * * * *", "second"),
    ] {
        let res = app
            .post_as(
                a,
                "/jobs/create/",
                &json!({"view_name": "someview", "crontab_def": crontab}),
            )
            .await;
        let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_crontab").await;
        assert!(
            body["detail"]
                .as_str()
                .expect("detail")
                .contains(&format!("the {field} field")),
            "{crontab}: {body}"
        );
    }
    for (body, code) in [
        (
            json!({"view_name": "someview", "crontab_def": "* * *"}),
            "invalid_crontab",
        ),
        (
            json!({"view_name": "someview", "crontab_def": "@sometimes"}),
            "invalid_crontab",
        ),
        (
            json!({"view_name": "someview", "crontab_def": "* * * * *", "timezone": "Mars/Base"}),
            "invalid_timezone",
        ),
        (
            json!({"view_name": "someview", "crontab_def": "* * * * *", "retries": 11}),
            "invalid_retries",
        ),
        (
            json!({"view_name": "someview", "crontab_def": "* * * * *", "overlap": "sometimes"}),
            "invalid_body",
        ),
    ] {
        let res = app.post_as(a, "/jobs/create/", &body).await;
        assert_problem(res, StatusCode::BAD_REQUEST, code).await;
    }
    let res = app
        .post_as(
            a,
            "/jobs/create/",
            &json!({"view_name": "nosuchview", "crontab_def": "* * * * *"}),
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;

    // Daily at 09:00 in Paris: 07:00 or 08:00 UTC depending on the season.
    let job = app
        .created(
            a,
            "/jobs/create/",
            json!({"view_name": "someview", "crontab_def": "0 9 * * *", "timezone": "Europe/Paris", "overlap": "queue", "retries": 2}),
        )
        .await;
    let id = job["job_id"].as_str().expect("id").to_owned();
    let next = time(&job["next_run_at"]);
    let paris = next.with_timezone(&chrono_tz::Europe::Paris);
    assert_eq!(paris.format("%H:%M:%S").to_string(), "09:00:00", "{next}");
    assert!(next > Utc::now() && next < Utc::now() + chrono::Duration::days(1));
    assert_eq!(job["overlap"], "queue");
    assert_eq!(job["retries"], 2);
    assert_eq!(job["paused"], false);

    let listed: Value = app.get_as(a, "/jobs/").await.json().await.expect("json");
    assert_eq!(listed.as_array().expect("list").len(), 1);
    let described: Value = app
        .get_as(a, &format!("/jobs/{id}/"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(described["next_run_at"], job["next_run_at"]);

    // Pause, resume, new schedule.
    let paused: Value = app
        .patch_as(a, &format!("/jobs/{id}/"), &json!({"paused": true}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(paused["paused"], true);
    assert!(paused["next_run_at"].is_null());
    let hourly: Value = app
        .patch_as(
            a,
            &format!("/jobs/{id}/"),
            &json!({"paused": false, "crontab_def": "@hourly", "timezone": "UTC"}),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(hourly["paused"], false);
    assert_eq!(hourly["crontab_def"], "@hourly");
    let next = time(&hourly["next_run_at"]);
    assert_eq!(next.format("%M:%S").to_string(), "00:00");
    let res = app
        .patch_as(
            a,
            &format!("/jobs/{id}/"),
            &json!({"crontab_def": "* * * * 8"}),
        )
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_crontab").await;

    // Another tenant sees nothing of it.
    let other = app.signed_up_user().await;
    for res in [
        app.get_as(&other.access, &format!("/jobs/{id}/")).await,
        app.get_as(&other.access, &format!("/jobs/{id}/runs/"))
            .await,
        app.patch_as(
            &other.access,
            &format!("/jobs/{id}/"),
            &json!({"paused": true}),
        )
        .await,
        app.delete_as(&other.access, &format!("/jobs/{id}/")).await,
        app.post_as(&other.access, "/channels/create/", &json!({"job_id": id}))
            .await,
    ] {
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
    let theirs: Value = app
        .get_as(&other.access, "/jobs/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(theirs, json!([]));
    let res = app.get_as(a, "/jobs/not-a-uuid/").await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;

    let res = app.delete_as(a, &format!("/jobs/{id}/")).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app.get_as(a, &format!("/jobs/{id}/")).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn the_job_list_shows_the_same_last_run_and_paused_flag_as_the_job_itself() {
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let a = &user.access;
    let id = app.every_second_job(a, "someview", json!({})).await;
    app.wait_for_runs(a, &id, 15 * SECOND, |runs| !finished(runs).is_empty())
        .await;
    let res = app
        .patch_as(a, &format!("/jobs/{id}/"), &json!({"paused": true}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    // A run may still be finishing after the pause: compare once the job stands still.
    let mut agreed = false;
    for _ in 0..50 {
        let before: Value = app
            .get_as(a, &format!("/jobs/{id}/"))
            .await
            .json()
            .await
            .expect("json");
        let list: Value = app.get_as(a, "/jobs/").await.json().await.expect("json");
        let after: Value = app
            .get_as(a, &format!("/jobs/{id}/"))
            .await
            .json()
            .await
            .expect("json");
        if before != after {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert!(after["last_run"]["run_id"].is_string(), "{after}");
        assert_eq!(list[0], after, "GET /jobs/ and GET /jobs/{{id}}/ disagree");
        assert_eq!(
            (&after["paused"], &after["enabled"]),
            (&json!(true), &json!(false))
        );
        agreed = true;
        break;
    }
    assert!(agreed, "the job never stood still");

    // `paused` is the name on creation too; `enabled` stays as a deprecated alias.
    let job = app
        .created(
            a,
            "/jobs/create/",
            json!({"view_name": "someview", "crontab_def": "@daily", "paused": true}),
        )
        .await;
    assert_eq!(
        (&job["paused"], &job["next_run_at"]),
        (&json!(true), &Value::Null)
    );
    let job = app
        .created(
            a,
            "/jobs/create/",
            json!({"view_name": "someview", "crontab_def": "@daily", "enabled": false}),
        )
        .await;
    assert_eq!(job["paused"], json!(true));
    let res = app
        .post_as(
            a,
            "/jobs/create/",
            &json!({"view_name": "someview", "crontab_def": "@daily", "paused": true, "enabled": true}),
        )
        .await;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_job").await;
    assert_eq!(
        body["detail"],
        "paused (true) and its deprecated alias enabled (true) contradict each other; send paused only"
    );
}

#[tokio::test]
async fn runs_are_recorded_and_paginated() {
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let a = &user.access;
    let id = app.every_second_job(a, "someview", json!({})).await;
    app.wait_for_runs(a, &id, 15 * SECOND, |runs| finished(runs).len() >= 4)
        .await;
    let page: Value = app
        .get_as(a, &format!("/jobs/{id}/runs/?limit=2"))
        .await
        .json()
        .await
        .expect("json");
    let first = page["runs"].as_array().expect("runs").clone();
    assert_eq!(first.len(), 2);
    let cursor = page["next_cursor"].as_str().expect("cursor").to_owned();
    let cursor: String = url_encode(&cursor);
    let res = app
        .get_as(a, &format!("/jobs/{id}/runs/?limit=2&before={cursor}"))
        .await;
    let page: Value = res.json().await.expect("json");
    let second = page["runs"].as_array().expect("runs").clone();
    assert_eq!(second.len(), 2);
    assert!(time(&second[0]["scheduled_for"]) < time(&first[1]["scheduled_for"]));
    // Ticks are whole seconds, one second apart, newest first.
    let all = app.runs(a, &id).await;
    for pair in all.windows(2) {
        let (newer, older) = (
            time(&pair[0]["scheduled_for"]),
            time(&pair[1]["scheduled_for"]),
        );
        assert!(newer > older);
        assert_eq!(newer.timestamp_subsec_nanos(), 0);
    }
    for run in finished(&all) {
        assert_eq!(run["status"], "succeeded", "{run}");
        assert!(run["row_count"].is_i64() && run["duration_ms"].is_i64());
    }
    let res = app.get_as(a, &format!("/jobs/{id}/runs/?limit=0")).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_limit").await;
}

/// Runs that did work never overlap in time.
fn assert_no_overlap(runs: &[Value]) {
    let mut worked: Vec<(DateTime<Utc>, DateTime<Utc>)> = runs
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .map(|r| (time(&r["started_at"]), time(&r["finished_at"])))
        .collect();
    worked.sort();
    for pair in worked.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "runs overlap: {pair:?}");
    }
}

#[tokio::test]
async fn overlap_skip_records_skipped_ticks_while_a_slow_run_goes_on() {
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let a = &user.access;
    let id = app.every_second_job(a, "someview", json!({})).await;
    app.wait_for_runs(a, &id, 10 * SECOND, |runs| !finished(runs).is_empty())
        .await;
    hold_table_lock(&app, &user, Duration::from_millis(3500)).await;
    let runs = app
        .wait_for_runs(a, &id, 15 * SECOND, |runs| {
            runs.iter().any(|r| {
                r["status"] == "succeeded" && r["duration_ms"].as_i64().unwrap_or(0) >= 2500
            }) && runs.iter().filter(|r| r["status"] == "skipped").count() >= 2
        })
        .await;
    let slow = runs
        .iter()
        .find(|r| r["status"] == "succeeded" && r["duration_ms"].as_i64().unwrap_or(0) >= 2500)
        .expect("slow run");
    let (start, end) = (time(&slow["started_at"]), time(&slow["finished_at"]));
    let skipped: Vec<&Value> = runs.iter().filter(|r| r["status"] == "skipped").collect();
    for run in &skipped {
        assert_eq!(run["error"], "the previous run was still running");
        let tick = time(&run["scheduled_for"]);
        assert!(
            tick > start && tick < end,
            "skipped outside the slow run: {run}"
        );
    }
    assert_no_overlap(&runs);
}

#[tokio::test]
async fn overlap_queue_runs_the_tick_after_the_slow_run() {
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let a = &user.access;
    let id = app
        .every_second_job(a, "someview", json!({"overlap": "queue"}))
        .await;
    app.wait_for_runs(a, &id, 10 * SECOND, |runs| !finished(runs).is_empty())
        .await;
    hold_table_lock(&app, &user, Duration::from_millis(3000)).await;
    let runs = app
        .wait_for_runs(a, &id, 15 * SECOND, |runs| {
            let slow = runs.iter().position(|r| {
                r["status"] == "succeeded" && r["duration_ms"].as_i64().unwrap_or(0) >= 2000
            });
            // Newest first: at least two runs after the slow one.
            slow.is_some_and(|i| i >= 2)
        })
        .await;
    assert!(runs.iter().all(|r| r["status"] != "skipped"), "{runs:#?}");
    let i = runs
        .iter()
        .position(|r| r["status"] == "succeeded" && r["duration_ms"].as_i64().unwrap_or(0) >= 2000)
        .expect("slow run");
    let slow_end = time(&runs[i]["finished_at"]);
    // The queued tick came during the slow run and started right after it.
    let queued = &runs[i - 1];
    assert!(time(&queued["scheduled_for"]) < slow_end, "{queued}");
    assert!(time(&queued["started_at"]) >= slow_end);
    assert!(time(&queued["started_at"]) - slow_end < chrono::Duration::seconds(2));
    // The ticks that came during the three-second run collapsed into that one queued run.
    let slow_tick = time(&runs[i]["scheduled_for"]);
    let during: Vec<&Value> = runs
        .iter()
        .filter(|r| time(&r["scheduled_for"]) > slow_tick && time(&r["scheduled_for"]) < slow_end)
        .collect();
    assert_eq!(during.len(), 1, "{during:#?}");
    assert_no_overlap(&runs);
}

#[tokio::test]
async fn after_downtime_a_job_runs_once_not_once_per_missed_tick() {
    let paused_app = crate::helpers::spawn_app_with(|s| s.scheduler = false).await;
    let mut settings = paused_app.settings.clone();
    let user = paused_app.user_with_view().await;
    let a = &user.access;
    let id = paused_app.every_second_job(a, "someview", json!({})).await;
    // Thirty ticks were missed while no scheduler ran.
    let missed_since = Utc::now() - chrono::Duration::seconds(30);
    let missed_since = DateTime::from_timestamp(missed_since.timestamp(), 0).expect("whole second");
    let mut admin = superuser(&paused_app.db).await;
    sqlx::query("UPDATE tinydevcrm.jobs SET next_run_at = $1")
        .bind(missed_since)
        .execute(&mut admin)
        .await
        .expect("set next_run_at");
    settings.scheduler = true;
    let started = Utc::now();
    let app = spawn_app_on(paused_app.db.clone(), settings).await;
    let runs = app
        .wait_for_runs(a, &id, 10 * SECOND, |runs| finished(runs).len() >= 3)
        .await;
    let old: Vec<&Value> = runs
        .iter()
        .filter(|r| time(&r["scheduled_for"]) < started - chrono::Duration::seconds(1))
        .collect();
    assert_eq!(old.len(), 1, "{runs:#?}");
    assert_eq!(time(&old[0]["scheduled_for"]), missed_since);
}

#[tokio::test]
async fn failed_runs_are_retried_with_backoff() {
    let app = spawn_app_with(|s| s.retry_backoff = Duration::from_millis(100)).await;
    // Fine while no row has SomeNumber = 42; one has.
    let user = app.user_with_fragile_view().await;
    let a = &user.access;
    let id = app
        .every_second_job(a, "fragile", json!({"retries": 2}))
        .await;
    let runs = app
        .wait_for_runs(a, &id, 15 * SECOND, |runs| {
            runs.iter().any(|r| r["status"] == "failed")
        })
        .await;
    let failed = runs
        .iter()
        .find(|r| r["status"] == "failed")
        .expect("failed");
    assert_eq!(failed["attempts"], 3);
    assert!(
        failed["error"]
            .as_str()
            .expect("error")
            .contains("division by zero"),
        "{failed}"
    );
    // 100 ms + 200 ms of backoff at least.
    assert!(
        failed["duration_ms"].as_i64().expect("ms") >= 300,
        "{failed}"
    );
}

#[tokio::test]
async fn run_history_is_pruned_by_count_and_by_age() {
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let a = &user.access;
    let id = app.every_second_job(a, "someview", json!({})).await;
    app.wait_for_runs(a, &id, 15 * SECOND, |runs| finished(runs).len() >= 5)
        .await;
    let pause = app
        .patch_as(a, &format!("/jobs/{id}/"), &json!({"paused": true}))
        .await;
    assert_eq!(pause.status(), StatusCode::OK);
    let runs = app
        .wait_for_runs(a, &id, 5 * SECOND, |runs| {
            runs.iter().all(|r| r["status"] != "running")
        })
        .await;
    tinydevcrm::jobs::runs::prune_runs(&app.pool, chrono::Duration::days(30), 2)
        .await
        .expect("prune by count");
    let kept = app.runs(a, &id).await;
    assert_eq!(kept.len(), 2);
    // The newest two are the ones kept.
    assert_eq!(kept[..], runs[..2]);
    let mut admin = superuser(&app.db).await;
    sqlx::query("UPDATE tinydevcrm.job_runs SET finished_at = now() - interval '31 days'")
        .execute(&mut admin)
        .await
        .expect("age runs");
    tinydevcrm::jobs::runs::prune_runs(&app.pool, chrono::Duration::days(30), 1000)
        .await
        .expect("prune by age");
    assert!(app.runs(a, &id).await.is_empty());
}

#[tokio::test]
async fn a_run_left_behind_by_a_dead_process_is_closed_when_its_lease_ends_and_the_work_goes_on() {
    // Arrange: a job whose tick was claimed by a process that died mid-run: a `running` run
    // and a lease ending two seconds from now, and no scheduler anywhere yet.
    let paused_app = crate::helpers::spawn_app_with(|s| s.scheduler = false).await;
    let mut settings = paused_app.settings.clone();
    let user = paused_app.user_with_view().await;
    let a = &user.access;
    let id = paused_app.every_second_job(a, "someview", json!({})).await;
    let job_id = uuid::Uuid::parse_str(&id).expect("uuid");
    let mut admin = superuser(&paused_app.db).await;
    let dead_run = uuid::Uuid::new_v4();
    sqlx::query(
        "WITH lease AS (
             UPDATE tinydevcrm.jobs SET lease_until = now() + interval '2 seconds'
             WHERE job_id = $1 RETURNING job_id
         )
         INSERT INTO tinydevcrm.job_runs (run_id, job_id, scheduled_for, claimed_at, started_at, status, worker)
         SELECT $2, job_id, date_trunc('second', now()), now(), now(), 'running', 'a-dead-process'
         FROM lease",
    )
    .bind(job_id)
    .bind(dead_run)
    .execute(&mut admin)
    .await
    .expect("a run left behind");

    // Act: another process starts scheduling.
    settings.scheduler = true;
    let app = spawn_app_on(paused_app.db.clone(), settings).await;

    // Assert: ticks during the lease are skipped (the job is `skip` by default), the dead run
    // is closed as failed once the lease ends, and later ticks run again.
    let runs = app
        .wait_for_runs(a, &id, 20 * SECOND, |runs| {
            runs.iter()
                .any(|r| r["run_id"] == dead_run.to_string() && r["status"] == "failed")
                && runs.iter().any(|r| r["status"] == "succeeded")
        })
        .await;
    let dead = runs
        .iter()
        .find(|r| r["run_id"] == dead_run.to_string())
        .expect("the dead run");
    assert_eq!(
        dead["error"], "the serve process running it stopped before it finished",
        "{dead}"
    );
    let succeeded: Vec<&Value> = runs.iter().filter(|r| r["status"] == "succeeded").collect();
    assert!(
        succeeded
            .iter()
            .all(|r| time(&r["started_at"])
                >= time(&dead["finished_at"]) - chrono::Duration::seconds(1)),
        "nothing ran while the dead run held the lease: {runs:#?}"
    );
}

#[tokio::test]
async fn a_run_that_hits_the_statement_timeout_is_timed_out_and_its_retry_succeeds() {
    // Arrange: refreshes may take one second; the view's table is locked for three, and a
    // retry waits three. The first attempt (within 1.2 s) times out before the lock goes; the
    // retry (after 4 s at the earliest) finds it gone.
    let app = spawn_app_with(|s| {
        s.tenant_statement_timeout = SECOND;
        s.retry_backoff = 3 * SECOND;
    })
    .await;
    let user = app.user_with_view().await;
    let a = &user.access;
    let locker = {
        let (app, user) = (&app, &user);
        async move { hold_table_lock(app, user, 3 * SECOND).await }
    };

    // Act: a job that retries once, first ticking while the lock is held.
    let id = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.every_second_job(a, "someview", json!({"retries": 1}))
            .await
    };
    let ((), id) = tokio::join!(locker, id);

    // Assert: a run whose first attempt timed out and whose second one (after the backoff,
    // the lock gone) refreshed the view.
    let runs = app
        .wait_for_runs(a, &id, 20 * SECOND, |runs| {
            runs.iter()
                .any(|r| r["status"] == "succeeded" && r["attempts"] == 2)
        })
        .await;
    let retried = runs
        .iter()
        .find(|r| r["status"] == "succeeded" && r["attempts"] == 2)
        .expect("a retried run");
    assert!(
        retried["duration_ms"].as_i64().expect("ms") >= 4000,
        "one second of timeout and three of backoff: {retried}"
    );
    assert!(retried["row_count"].is_number(), "{retried}");
}

#[tokio::test]
async fn a_run_that_only_times_out_is_recorded_as_timed_out() {
    // Arrange: refreshes may take one second; the table stays locked for four.
    let app = spawn_app_with(|s| s.tenant_statement_timeout = SECOND).await;
    let user = app.user_with_view().await;
    let a = &user.access;
    let locker = hold_table_lock(&app, &user, 4 * SECOND);
    let id = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.every_second_job(a, "someview", json!({})).await
    };
    let ((), id) = tokio::join!(locker, id);

    let runs = app
        .wait_for_runs(a, &id, 10 * SECOND, |runs| {
            runs.iter().any(|r| r["status"] == "timed_out")
        })
        .await;
    let timed_out = runs
        .iter()
        .find(|r| r["status"] == "timed_out")
        .expect("timed out");
    assert_eq!(timed_out["attempts"], 1, "{timed_out}");
    assert!(
        timed_out["error"]
            .as_str()
            .is_some_and(|e| e.contains("statement timeout")),
        "{timed_out}"
    );
}

#[tokio::test]
async fn the_openapi_document_lists_the_overlap_rules_and_run_statuses() {
    let app = spawn_app().await;

    let doc: Value = app.get("/openapi.json").await.json().await.expect("json");

    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["Overlap"]["enum"],
        json!(["skip", "queue"]),
        "{schemas}"
    );
    assert_eq!(
        schemas["RunStatus"]["enum"],
        json!(["running", "succeeded", "failed", "skipped", "timed_out"]),
        "{schemas}"
    );
    let refers_to = |schema: &str, field: &str| {
        serde_json::to_string(&schemas[schema]["properties"][field]).expect("json")
    };
    assert!(
        refers_to("JobBody", "overlap").contains("#/components/schemas/Overlap"),
        "{}",
        refers_to("JobBody", "overlap")
    );
    assert!(
        refers_to("RunRow", "status").contains("#/components/schemas/RunStatus"),
        "{}",
        refers_to("RunRow", "status")
    );
}
