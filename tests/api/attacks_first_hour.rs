//! The attack suite on the code of the first-hour issue (11): a tenant who has read it spells
//! `?last_event_id=`, cron fields, view SQL around its error positions and refused JSON row
//! values to break them. Every test asserts the status, the problem `code` and the member that
//! names the problem, that nothing of another tenant is reached, and that the server still
//! serves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Date32Array, Int64Array, StringArray};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_problem, parquet_of, spawn_app};
use crate::sse::SseStream;

/// Extra request headers.
type Headers<'a> = &'a [(&'a str, &'a str)];

async fn assert_healthy(app: &TestApp) {
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
}

/// `GET /channels/{channel}/listen/{query}` with the user's token and extra headers.
async fn listen_raw(
    app: &TestApp,
    user: &TestUser,
    channel: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut all = vec![("Authorization", format!("JWT {}", user.access))];
    all.extend(headers.iter().map(|(k, v)| (*k, (*v).to_owned())));
    SseStream::request(app, &format!("/channels/{channel}/listen/{query}"), &all).await
}

/// The id of the first event of a stream that must open.
async fn first_event_id(
    app: &TestApp,
    user: &TestUser,
    channel: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> (String, String) {
    let mut all = vec![("Authorization", format!("JWT {}", user.access))];
    all.extend(headers.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let mut stream =
        SseStream::open(app, &format!("/channels/{channel}/listen/{query}"), &all).await;
    let event = stream.expect_event(Duration::from_secs(3)).await;
    (
        event.event.unwrap_or_default(),
        event.id.unwrap_or_default(),
    )
}

/// A user with `someview` and a channel on it that has `events` events; the channel's id.
async fn channel_with_events(app: &TestApp, user: &TestUser, events: usize) -> String {
    let channel = app
        .created(
            &user.access,
            "/channels/create/",
            json!({"view_name": "someview"}),
        )
        .await;
    for _ in 0..events {
        app.refresh_view(&user.access, "someview").await;
    }
    channel["channel_id"]
        .as_str()
        .expect("channel_id")
        .to_owned()
}

#[tokio::test]
async fn last_event_id_spellings_resume_exactly_or_are_refused_and_stay_in_the_tenant() {
    let app = spawn_app().await;
    let attacker = app.user_with_view().await;
    let victim = app.user_with_view().await;
    let mine = channel_with_events(&app, &attacker, 3).await;
    let theirs = channel_with_events(&app, &victim, 5).await;

    // Spellings of 1 that resume after event 1, the same as the header would.
    for query in [
        "?last_event_id=1",
        "?last_event_id=%2B1",
        "?last_event_id=0001",
        "?last_event_id=%201%20",
        "?%6Cast_event_id=1",
        "?last_event_id=1&last_event_id=1",
        "?last_event_id=1&x=%FF",
    ] {
        let got = first_event_id(&app, &attacker, &mine, query, &[]).await;
        assert_eq!(got, ("refresh".to_owned(), "2".to_owned()), "{query}");
    }
    // The header wins over the parameter; an id past the channel's last (another channel's, or
    // i64::MAX) is a reset to this channel's own last id, never another channel's events.
    let got = first_event_id(
        &app,
        &attacker,
        &mine,
        "?last_event_id=0",
        &[("Last-Event-ID", "2")],
    )
    .await;
    assert_eq!(got, ("refresh".to_owned(), "3".to_owned()));
    for query in ["?last_event_id=5", "?last_event_id=9223372036854775807"] {
        let got = first_event_id(&app, &attacker, &mine, query, &[]).await;
        assert_eq!(got, ("reset".to_owned(), "3".to_owned()), "{query}");
    }

    // Not an event id, in the parameter or the header, or copies that disagree: 400.
    let refused: &[(&str, Headers<'_>, &str)] = &[
        ("?last_event_id=-1", &[], "last_event_id must be"),
        ("?last_event_id=", &[], "last_event_id must be"),
        ("?last_event_id", &[], "last_event_id must be"),
        ("?last_event_id=abc", &[], "last_event_id must be"),
        (
            "?last_event_id=9223372036854775808",
            &[],
            "last_event_id must be",
        ),
        ("?last_event_id=1.0", &[], "last_event_id must be"),
        ("?last_event_id=1e1", &[], "last_event_id must be"),
        ("?last_event_id=0x1", &[], "last_event_id must be"),
        ("?last_event_id=%D9%A1", &[], "last_event_id must be"),
        ("?last_event_id=1%00", &[], "last_event_id must be"),
        ("?last_event_id=1;2", &[], "last_event_id must be"),
        ("?last_event_id=%FF", &[], "last_event_id must be"),
        // A repeated parameter: the first copy used to win silently, a bad second was ignored.
        ("?last_event_id=1&last_event_id=2", &[], "more than once"),
        (
            "?last_event_id=1&last_event_id=abc",
            &[],
            "last_event_id must be",
        ),
        (
            "?last_event_id=abc&last_event_id=1",
            &[],
            "last_event_id must be",
        ),
        ("", &[("Last-Event-ID", "-1")], "Last-Event-ID must be"),
        ("", &[("Last-Event-ID", "x")], "Last-Event-ID must be"),
        (
            "",
            &[("Last-Event-ID", "1"), ("Last-Event-ID", "2")],
            "more than once",
        ),
        (
            "?last_event_id=x",
            &[("Last-Event-ID", "1")],
            "last_event_id must be",
        ),
        (
            "?last_event_id=1",
            &[("Last-Event-ID", "x")],
            "Last-Event-ID must be",
        ),
    ];
    for (query, headers, detail) in refused {
        let res = listen_raw(&app, &attacker, &mine, query, headers).await;
        let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_last_event_id").await;
        assert!(
            body["detail"].as_str().unwrap_or_default().contains(detail),
            "{query} {headers:?}: {body}"
        );
    }

    // The victim's channel, with any id, valid or not: not found, nothing of it said.
    for query in [
        "?last_event_id=1",
        "?last_event_id=x",
        "?last_event_id=1&last_event_id=2",
    ] {
        let res = listen_raw(&app, &attacker, &theirs, query, &[]).await;
        let body = assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
        assert!(!body.to_string().contains("someview"), "{body}");
    }
    assert_healthy(&app).await;
}

/// `POST /jobs/create/` on `someview` with `crontab_def`, timed.
async fn create_job(
    app: &TestApp,
    user: &TestUser,
    crontab: &str,
) -> (reqwest::Response, Duration) {
    let clock = Instant::now();
    let res = app
        .post_as(
            &user.access,
            "/jobs/create/",
            &json!({"view_name": "someview", "crontab_def": crontab}),
        )
        .await;
    (res, clock.elapsed())
}

#[tokio::test]
async fn cron_spellings_are_refused_fast_naming_the_users_field_and_its_range() {
    let app = spawn_app().await;
    let attacker = app.user_with_view().await;
    let list = |item: &str, n: usize| vec![item; n].join(",");
    let cases: Vec<(String, &str, &str)> = vec![
        // Once a panic in debug builds (u32 overflow) and a silent Sunday in release ones.
        (
            "0 0 * * 1/4294967295".into(),
            "day-of-week",
            "larger than 7",
        ),
        (
            "0 0 * * 6/4294967290".into(),
            "day-of-week",
            "larger than 7",
        ),
        (
            "*/999999999999999999999 * * * *".into(),
            "minute",
            "larger than 59",
        ),
        ("*/60 * * * *".into(), "minute", "larger than 59"),
        ("0 */4294967295 * * *".into(), "hour", "larger than 23"),
        (
            "0-999999999999999999999 * * * *".into(),
            "minute",
            "out of range",
        ),
        (
            "*/+5 * * * *".into(),
            "minute",
            "not a positive whole number",
        ),
        (
            "*/5/5 * * * *".into(),
            "minute",
            "not a positive whole number",
        ),
        ("1-2-3 * * * *".into(), "minute", "not a number"),
        ("+1 * * * *".into(), "minute", "not a number"),
        ("\u{661} * * * *".into(), "minute", "not a number"),
        ("\u{ff11} * * * *".into(), "minute", "not a number"),
        (
            "0 0 * * \u{1f600}".into(),
            "day-of-week",
            "neither a number nor a name",
        ),
        ("JAN * * * *".into(), "minute", "not a number"),
        ("0 0 * MON *".into(), "month", "neither a number nor a name"),
        ("0 0 L * *".into(), "day-of-month", "not a number"),
        ("0 0 15W * *".into(), "day-of-month", "not a number"),
        (
            "0 0 * * 5L".into(),
            "day-of-week",
            "neither a number nor a name",
        ),
        (
            "0 0 * * 5#3".into(),
            "day-of-week",
            "neither a number nor a name",
        ),
        ("? * * * *".into(), "minute", "not a number"),
        ("61 * * * *".into(), "minute", "out of range"),
        // Long lists: a 256 KB day-of-week list took minutes of a server thread.
        (
            format!("{} * * * *", list("1", 10_000)),
            "minute",
            "characters long",
        ),
        (
            format!("0 0 * * {},{}", list("TUE", 30_000), list("1", 60_000)),
            "day-of-week",
            "characters long",
        ),
        (
            format!("0 0 * * {}", list("*", 100_000)),
            "day-of-week",
            "characters long",
        ),
    ];
    for (crontab, field, reason) in &cases {
        let short = crontab.chars().take(40).collect::<String>();
        let (res, took) = create_job(&app, &attacker, crontab).await;
        assert!(took < Duration::from_secs(2), "{short}: {took:?}");
        let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_crontab").await;
        assert_eq!(body["field"], *field, "{short}: {body}");
        assert!(body["allowed"].is_string(), "{short}: {body}");
        let value = body["value"].as_str().unwrap_or_default();
        assert!(value.chars().count() <= 67, "{short}: {value}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(reason), "{short}: {detail}");
        assert!(detail.len() < 600, "{short}: {} bytes", detail.len());
    }
    // Field counts (6 vs 7, whitespace that is no blank) and macros: no field to name.
    for crontab in [
        "0 0 0 * * * 2026",
        "0 0 * *",
        "0\u{200b}0 * * *",
        "@reboot",
        "",
    ] {
        let (res, _) = create_job(&app, &attacker, crontab).await;
        let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_crontab").await;
        assert!(body.get("field").is_none(), "{crontab:?}: {body}");
    }
    let (res, _) = create_job(&app, &attacker, &format!("@{}", "x".repeat(200_000))).await;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_crontab").await;
    assert!(
        body.to_string().len() < 600,
        "{} bytes",
        body.to_string().len()
    );
    // Blanks of any kind between fields are fine.
    for crontab in [
        "0\t0\t*\t*\t*",
        "0\u{a0}0 * * *",
        "0\n0\n*\n*\n*",
        "0 0 * * 7/7",
    ] {
        let (res, _) = create_job(&app, &attacker, crontab).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{crontab:?}");
    }
    assert_healthy(&app).await;
}

/// `POST /views/create/` as `user` with `sql`.
async fn create_view(app: &TestApp, user: &TestUser, sql: &str) -> reqwest::Response {
    app.post_as(
        &user.access,
        "/views/create/",
        &json!({"view_name": "attack", "sql_query": sql}),
    )
    .await
}

#[tokio::test]
async fn view_sql_error_positions_point_into_the_users_text_around_wide_characters() {
    let app = spawn_app().await;
    let attacker = app.user_with_view().await;
    // Each names `nope`: the position, line and column must find it in the text as sent.
    let comment = format!("/* {} */", "\u{1f600}e\u{301}".repeat(8_000));
    let cases = [
        "SELECT nope FROM sometable".to_owned(),
        "SELECT '\u{1f600}\u{1f600}' AS e, nope FROM sometable".to_owned(),
        "SELECT '\u{1d518}e\u{301}' AS u,\n  nope FROM sometable".to_owned(),
        "   SELECT 1 AS a,\r\n\tnope\r\nFROM sometable".to_owned(),
        "SELECT 1 AS a,\rnope FROM sometable".to_owned(),
        "SELECT count(*) AS n FROM sometable GROUP BY nope;;  \n".to_owned(),
        format!("{comment}\nSELECT nope FROM sometable"),
        "SELECT nope FROM sometable -- \u{1f600}".to_owned(),
    ];
    for sql in &cases {
        let short = sql.chars().take(40).collect::<String>();
        let res = create_view(&app, &attacker, sql).await;
        let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_sql").await;
        let byte = sql.find("nope").expect("nope");
        let position = sql[..byte].chars().count() + 1;
        let line = sql[..byte].matches('\n').count() + 1;
        let column = sql[..byte]
            .rsplit('\n')
            .next()
            .map_or(0, |l| l.chars().count())
            + 1;
        assert_eq!(body["position"], position, "{short:?}: {body}");
        assert_eq!(body["line"], line, "{short:?}: {body}");
        assert_eq!(body["line_column"], column, "{short:?}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("at \"nope\")"), "{short:?}: {detail}");
    }
    // U+2028 is no blank to PostgreSQL: it is part of the identifier the error names.
    let res = create_view(&app, &attacker, "SELECT 1 AS a,\u{2028}nope FROM sometable").await;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_sql").await;
    assert_eq!(body["position"], 15, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    // (quoted as Rust quotes it: the separator escaped, so the detail stays on one line)
    assert!(detail.contains(r#"at "\u{2028}nope")"#), "{detail}");
    // A hint is kept.
    let res = create_view(&app, &attacker, "SELECT \"SomeNumbr\" FROM sometable").await;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_sql").await;
    assert!(
        body["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("SomeNumber"),
        "{body}"
    );
    // A NUL ends the statement in PostgreSQL's protocol: refused before PostgreSQL sees it
    // (it answered "insufficient data left in message", reading the rest as parameter types).
    for sql in [
        "SELECT 1 AS x --\u{0}\u{0}\u{4}abcd",
        "SELECT 'a\u{0}b' AS x",
        "SELECT 1 AS x /* \u{0} */",
    ] {
        let res = create_view(&app, &attacker, sql).await;
        let body = assert_problem(res, StatusCode::BAD_REQUEST, "sql_rejected").await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("NUL character"),
            "{sql:?}: {body}"
        );
    }
    let views: Value = app
        .get_as(&attacker.access, "/views/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(views.as_array().map(Vec::len), Some(1), "{views}");
    assert_healthy(&app).await;
}

/// The attacker's table `typed` with columns `d` (date), `i` (bigint) and `t` (text).
async fn typed_table(app: &TestApp, user: &TestUser) {
    let file = parquet_of(vec![
        ("d", Arc::new(Date32Array::from(vec![0]))),
        ("i", Arc::new(Int64Array::from(vec![1]))),
        ("t", Arc::new(StringArray::from(vec!["a"]))),
    ]);
    let res = app.create_table(&user.access, file, "typed", None).await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

/// `POST /tables/typed/rows/` with a raw body, timed.
async fn post_rows(
    app: &TestApp,
    user: &TestUser,
    content_type: &str,
    body: Vec<u8>,
) -> (reqwest::Response, Duration) {
    let clock = Instant::now();
    let res = app
        .client
        .post(app.url("/tables/typed/rows/"))
        .header("Authorization", format!("JWT {}", user.access))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .expect("request");
    (res, clock.elapsed())
}

#[tokio::test]
async fn refused_json_values_are_quoted_short_as_json_and_found_fast_in_big_batches() {
    let app = spawn_app().await;
    let attacker = app.signed_up_user().await;
    typed_table(&app, &attacker).await;

    // Megabytes refused: quoted by their start only (a 2 MB value of control characters came
    // back as 29 MB, the value twice and each character escaped twice).
    let ctl = "\\u0001".repeat(1 << 18);
    let huge_values = [
        (format!(r#"[{{"d": "{ctl}"}}]"#), "d"),
        (format!(r#"[{{"d": "{}"}}]"#, "x".repeat(1 << 19)), "d"),
        (format!(r#"[{{"i": "1.{}"}}]"#, "5".repeat(1 << 19)), "i"),
        (
            format!(r#"[{{"d": {{"k": ["{}"]}}}}]"#, "y".repeat(1 << 18)),
            "d",
        ),
    ];
    for (body, column) in huge_values {
        let (res, took) = post_rows(&app, &attacker, "application/json", body.into_bytes()).await;
        assert!(took < Duration::from_secs(4), "{column}: {took:?}");
        let res = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_value").await;
        assert_eq!(res["column"], column, "{res}");
        assert_eq!(res["row"], 1, "{res}");
        let value = res["value"].as_str().unwrap_or_default();
        assert!(
            value.ends_with("...") && value.chars().count() <= 67,
            "{value}"
        );
        assert!(
            res.to_string().len() < 1200,
            "{} bytes",
            res.to_string().len()
        );
    }

    // Markup and control characters come back as JSON text in a problem+json body.
    let tricky = "<script>alert(1)</script>\n{\"level\":\"ERROR\"}\r\n\u{1b}[31m";
    let body = json!([{"d": tricky}]).to_string().into_bytes();
    let (res, _) = post_rows(&app, &attacker, "application/json", body).await;
    let text_of = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let res = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_value").await;
    let value = text_of(&res["value"]);
    assert!(
        value.starts_with("\"<script>alert(1)</script>\\n"),
        "{value}"
    );
    assert!(
        !value.contains('\n') && !value.contains('\u{1b}'),
        "{value:?}"
    );
    // A lone surrogate is no JSON text.
    let (res, _) = post_rows(
        &app,
        &attacker,
        "application/json",
        br#"[{"t": "\ud800x"}]"#.to_vec(),
    )
    .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_json").await;

    // The refused row of a full batch is found by decoding its rows one by one: bounded by the
    // batch (8,192 rows), whichever batch holds it.
    for (rows, bad) in [(8_192, 8_192), (16_384, 16_384), (8_193, 8_193)] {
        let body: Vec<Value> = (1..=rows)
            .map(|r| json!({"d": if r == bad { "not a date" } else { "2026-01-31" }, "i": r}))
            .collect();
        let (res, took) = post_rows(
            &app,
            &attacker,
            "application/json",
            serde_json::to_vec(&body).expect("json"),
        )
        .await;
        assert!(took < Duration::from_secs(4), "{rows}/{bad}: {took:?}");
        let res = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_value").await;
        assert_eq!(res["row"], bad, "{res}");
        assert_eq!(res["value"], "\"not a date\"", "{res}");
    }
    let table: Value = app
        .get_as(&attacker.access, "/tables/typed/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(table["row_count"], 1, "{table}");
    assert_healthy(&app).await;
}
