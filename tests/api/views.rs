//! Materialized views: create, read, refresh (and skip), delete; the sandbox's refusals.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_problem, parquet_bytes, spawn_app, spawn_app_with};

fn walkthrough_file() -> Vec<u8> {
    let schema = Schema::new(vec![
        Field::new("SomeNumber", DataType::Int64, true),
        Field::new("SomeString", DataType::Utf8, true),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from((0..10).collect::<Vec<i64>>())),
            Arc::new(StringArray::from_iter_values(
                (0..10).map(|i| format!("s{i}")),
            )),
        ],
    )
    .expect("batch");
    parquet_bytes(&batch, None)
}

async fn with_tables(app: &TestApp) -> TestUser {
    let user = app.signed_up_user().await;
    let columns = r#"[{"column_name": "SomeNumber", "column_type":"int"},{"column_name":"SomeString","column_type":"varchar(256)"}]"#;
    assert_eq!(
        app.create_table(&user.access, walkthrough_file(), "sometable", Some(columns))
            .await
            .status(),
        StatusCode::CREATED
    );
    let sample =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/sample.parquet")).expect("sample");
    assert_eq!(
        app.create_table(&user.access, sample, "calls", None)
            .await
            .status(),
        StatusCode::CREATED
    );
    user
}

async fn create_view(app: &TestApp, user: &TestUser, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/views/create/"))
        .header("Authorization", format!("JWT {}", user.access))
        .json(&body)
        .send()
        .await
        .expect("request")
}

/// Deleting `path` is a 409 `code` while views read it, and succeeds with `?cascade=true`.
async fn assert_held_until_cascade(app: &TestApp, user: &TestUser, path: &str, code: &str) {
    assert_problem(delete(app, user, path).await, StatusCode::CONFLICT, code).await;
    assert_eq!(
        delete(app, user, &format!("{path}?cascade=true"))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
}

/// Appends one call on 2030-01-01, a day `calls` has no record of.
async fn add_a_call_on_a_new_day(app: &TestApp, user: &TestUser) {
    let more = json!([{"record_id": 6001, "record_type": "start", "record_timestamp": "2030-01-01T10:00:00Z", "call_id": 3001, "source": "11", "destination": "22"}]);
    let res = app
        .post_as(&user.access, "/tables/calls/rows/", &more)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

async fn post(app: &TestApp, user: &TestUser, path: &str) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("Authorization", format!("JWT {}", user.access))
        .send()
        .await
        .expect("request")
}

async fn delete(app: &TestApp, user: &TestUser, path: &str) -> reqwest::Response {
    app.client
        .delete(app.url(path))
        .header("Authorization", format!("JWT {}", user.access))
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn the_walkthrough_view_is_created_as_printed() {
    let app = spawn_app().await;
    let user = with_tables(&app).await;

    // Step 6 with $YOUR_VIEW_NAME = someview and $YOUR_TABLE_NAME = sometable.
    let res = app
        .client
        .post(app.url("/views/create/"))
        .header("Content-Type", "application/json")
        .header("Authorization", format!("JWT {}", user.access))
        .body(r#"{"view_name": "someview", "sql_query": "SELECT * FROM sometable WHERE \"SomeNumber\" = CAST( EXTRACT( SECOND FROM NOW()) * 1000000 AS INTEGER) % 10"}"#)
        .send()
        .await
        .expect("request");

    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["view_name"], "someview");
    assert_eq!(body["volatile"], true, "it calls NOW(): never skipped");
    assert_eq!(body["columns"][0]["column_name"], "SomeNumber");
    assert_eq!(body["last_refresh"]["status"], "refreshed");
    let rows = body["row_count"].as_i64().expect("count");
    assert!(
        (0..=1).contains(&rows),
        "at most one SomeNumber matches: {rows}"
    );
    assert_eq!(
        post(&app, &user, "/views/someview/refresh/").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_view_that_reads_the_clock_in_any_spelling_is_volatile_and_settings_only_ones_are_not() {
    let app = spawn_app().await;
    let user = with_tables(&app).await;
    let t = "record_timestamp";
    let clock = [
        "SELECT max(('now'::text)::timestamptz) AS at FROM calls".to_owned(),
        format!("SELECT count(*) FILTER (WHERE {t} < CAST('today' AS text)::date) FROM calls"),
        format!("SELECT max(age({t})) AS a FROM calls"),
        "SELECT date_part('epoch', 'now'::text::timestamp) AS at".to_owned(),
        "SELECT max(NULLIF(source, source)::date) AS d FROM calls".to_owned(),
        format!("SELECT count(*) FROM calls WHERE {t} = ANY('{{now}}'::text::timestamp[])"),
        "SELECT CAST(E'\\x6eow' AS text)::time AS at".to_owned(),
        "SELECT CAST('12:00' AS time)::timetz AS at".to_owned(),
        // text parsed at run time into a range, a row of a table, an array
        "SELECT upper(CAST('[2020-01-01,now)' AS text)::tstzrange) AS at".to_owned(),
        "SELECT (CAST('(1,x,now,1,a,b)' AS text)::calls).record_timestamp AS at".to_owned(),
        "SELECT (CAST('{now}' AS text)::date[])[1] AS at".to_owned(),
        // today's offset of a zone, for a time of day
        "SELECT '12:00+00'::timetz AT TIME ZONE 'Australia/Sydney' AS syd".to_owned(),
        "SELECT timezone('Europe/Berlin', '22:00+00'::timetz) AS at".to_owned(),
        format!(
            "SELECT count(*) FILTER (WHERE ({t} AT TIME ZONE 'America/New_York')::time < timezone('America/New_York', '22:00+00'::timetz)::time) FROM calls"
        ),
        "SELECT now() AS at".to_owned(),
        "SELECT CURRENT_DATE AS d".to_owned(),
    ];
    let settled = [
        format!("SELECT date_trunc('hour', {t}) AS hour, count(*) FROM calls GROUP BY 1"),
        format!("SELECT to_char({t}, 'YYYY-MM') AS m, count(*) FROM calls GROUP BY 1"),
        format!("SELECT max(age({t}, {t} - interval '1 day')) AS a FROM calls"),
        format!("SELECT count(*) FROM calls WHERE {t} > '2020-01-01'::timestamptz"),
        format!("SELECT max({t}::timestamptz + interval '1 hour') AS a FROM calls"),
        format!("SELECT format('%s', max({t})) AS f FROM calls"),
        // parsed from text at run time, but with no clock: intervals, numbers in arrays, money
        "SELECT sum((record_id || ' seconds')::interval) AS s FROM calls".to_owned(),
        "SELECT max((('{' || record_id || '}')::int8[])[1]) AS m FROM calls".to_owned(),
        "SELECT max(record_id::text::numeric::money) AS m FROM calls".to_owned(),
        format!("SELECT max({t} AT TIME ZONE 'EST') AS m FROM calls"),
    ];
    let cases = clock
        .iter()
        .map(|sql| (sql, true))
        .chain(settled.iter().map(|sql| (sql, false)));
    for (i, (sql, volatile)) in cases.enumerate() {
        let name = format!("v{i}");
        let res = create_view(&app, &user, json!({"view_name": name, "sql_query": sql})).await;
        let status = res.status();
        let body: Value = res.json().await.expect("json");
        assert_eq!(status, StatusCode::CREATED, "{sql}: {body}");
        assert_eq!(body["volatile"], volatile, "{sql}: {body}");
        // A time-dependent view is refreshed for real each time; the others are skipped.
        let answer = app.refresh_view(&user.access, &name).await;
        let expected = if volatile { "refreshed" } else { "skipped" };
        assert_eq!(answer["status"], expected, "{sql}: {answer}");
    }
}

#[tokio::test]
async fn a_view_reads_like_a_table_and_skips_refreshes_when_nothing_changed() {
    let app = spawn_app().await;
    let user = with_tables(&app).await;
    let res = create_view(
        &app,
        &user,
        json!({"view_name": "calls_per_day", "unique_key": ["day"],
               "sql_query": "SELECT date_trunc('day', record_timestamp) AS day, count(*) AS records FROM calls GROUP BY 1"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED, "{:?}", res.text().await);

    let rows: Value = app
        .get_as(&user.access, "/views/calls_per_day/rows/?order=day&limit=2")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(rows["rows"].as_array().expect("rows").len(), 2);
    let total: i64 = {
        let all: Value = app
            .get_as(&user.access, "/views/calls_per_day/rows/?limit=1000")
            .await
            .json()
            .await
            .expect("json");
        all["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r["records"].as_i64().expect("n"))
            .sum()
    };
    assert_eq!(total, 6000);
    let rows_before = app
        .get_as(&user.access, "/views/calls_per_day/")
        .await
        .json::<Value>()
        .await
        .expect("json")["row_count"]
        .as_i64()
        .expect("row_count");

    let skipped: Value = post(&app, &user, "/views/calls_per_day/refresh/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(skipped["status"], "skipped");

    add_a_call_on_a_new_day(&app, &user).await;
    let refreshed: Value = post(&app, &user, "/views/calls_per_day/refresh/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(refreshed["status"], "refreshed");
    let described: Value = app
        .get_as(&user.access, "/views/calls_per_day/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(described["last_refresh"]["status"], "refreshed");
    assert_eq!(described["unique_key"], json!(["day"]));
    // The refresh (CONCURRENTLY: the view has a unique key) changed the rows: the new day is
    // there with its one record.
    let new_day: Value = app
        .get_as(
            &user.access,
            "/views/calls_per_day/rows/?day=gte.2030-01-01&day=lt.2030-01-02",
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        new_day["rows"],
        json!([{"day": "2030-01-01T00:00:00+00:00", "records": 1}])
    );
    assert_eq!(described["row_count"], rows_before + 1);
}

#[tokio::test]
async fn the_sandbox_refuses_with_sql_rejected_and_postgres_errors_are_400() {
    let app = spawn_app().await;
    let user = with_tables(&app).await;
    let other = app.signed_up_user().await;
    assert_eq!(
        app.create_table(&other.access, walkthrough_file(), "secret", None)
            .await
            .status(),
        StatusCode::CREATED
    );

    let rejected = [
        (
            "SELECT pg_read_file('/etc/passwd')",
            "function pg_read_file is not allowed",
        ),
        ("SELECT set_config('role', 'postgres', false)", "set_config"),
        ("SELECT * FROM secret", "not one of your"),
        ("SELECT * FROM pg_catalog.pg_authid", "not one of your"),
        ("SELECT 1; DROP TABLE calls", "exactly one statement"),
        (
            "WITH d AS (DELETE FROM calls RETURNING *) SELECT * FROM d",
            "only SELECT",
        ),
        ("SELECT * FROM calls FOR UPDATE", "locking"),
    ];
    for (sql, why) in rejected {
        let res = create_view(&app, &user, json!({"view_name": "v", "sql_query": sql})).await;
        let body = assert_problem(res, StatusCode::BAD_REQUEST, "sql_rejected").await;
        assert!(
            body["detail"].as_str().expect("detail").contains(why),
            "{sql}: {body}"
        );
    }
    let res = create_view(
        &app,
        &user,
        json!({"view_name": "v", "sql_query": "SELECT nope FROM calls"}),
    )
    .await;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_sql").await;
    let detail = body["detail"].as_str().expect("detail");
    assert_eq!(
        detail,
        "PostgreSQL: column \"nope\" does not exist (sql_query line 1, column 8, at \"nope\")"
    );
    let views: Value = app
        .get_as(&user.access, "/views/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(views, json!([]));
}

#[tokio::test]
async fn an_sql_error_points_into_the_users_own_text_and_keeps_postgresqls_hint() {
    let app = spawn_app().await;
    let user = with_tables(&app).await;
    // The mistake is on the second line, third character, of what the user wrote.
    let sql = "SELECT 1 AS a,\n  \"SomeNumbr\"\nFROM sometable";
    let res = create_view(&app, &user, json!({"view_name": "v", "sql_query": sql})).await;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_sql").await;
    assert_eq!(
        body["detail"],
        "PostgreSQL: column \"SomeNumbr\" does not exist (sql_query line 2, column 3, at \"\\\"SomeNumbr\\\"\"); hint: Perhaps you meant to reference the column \"sometable.SomeNumber\"."
    );
    assert_eq!(
        (&body["position"], &body["line"], &body["line_column"]),
        (&json!(18), &json!(2), &json!(3))
    );
    assert_eq!(
        body["hint"],
        "Perhaps you meant to reference the column \"sometable.SomeNumber\"."
    );
    // The position is the user's: the text there is what PostgreSQL complained about.
    let at: String = sql.chars().skip(17).take(11).collect();
    assert_eq!(at, "\"SomeNumbr\"");
}

#[tokio::test]
async fn a_runaway_view_is_cancelled_by_the_timeout_and_leaves_nothing() {
    let app = spawn_app_with(|s| s.tenant_statement_timeout = Duration::from_secs(1)).await;
    let user = with_tables(&app).await;

    let res = create_view(&app, &user, json!({"view_name": "forever", "sql_query": "SELECT count(*) FROM calls a, calls b, calls c"})).await;

    assert_problem(res, StatusCode::BAD_REQUEST, "query_timeout").await;
    assert_problem(
        app.get_as(&user.access, "/views/forever/").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&app.pool)
        .await
        .expect("query");
    assert_eq!(
        role, "tinydevcrm",
        "pooled connections are back to the service role"
    );
    app.assert_no_role_leaked();
}

#[tokio::test]
async fn deleting_a_table_a_view_reads_is_409_unless_cascade() {
    let app = spawn_app().await;
    let user = with_tables(&app).await;
    let res = create_view(&app, &user, json!({"view_name": "starts", "sql_query": "SELECT * FROM calls WHERE record_type = 'start'"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);

    assert_held_until_cascade(&app, &user, "/tables/calls/", "table_has_dependents").await;
    assert_problem(
        app.get_as(&user.access, "/views/starts/").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn names_are_shared_with_tables_and_views_of_others_are_404() {
    let app = spawn_app().await;
    let user = with_tables(&app).await;
    let other = app.signed_up_user().await;

    let res = create_view(
        &app,
        &user,
        json!({"view_name": "calls", "sql_query": "SELECT 1"}),
    )
    .await;
    assert_problem(res, StatusCode::CONFLICT, "name_taken").await;
    assert_eq!(
        create_view(
            &app,
            &user,
            json!({"view_name": "mine", "sql_query": "SELECT 1 AS one"})
        )
        .await
        .status(),
        StatusCode::CREATED
    );
    for path in ["/views/mine/", "/views/mine/rows/"] {
        assert_problem(
            app.get_as(&other.access, path).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    assert_problem(
        post(&app, &other, "/views/mine/refresh/").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_problem(
        delete(&app, &other, "/views/mine/").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(
        delete(&app, &user, "/views/mine/").await.status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn a_table_cannot_take_the_name_of_a_view() {
    let app = spawn_app().await;
    let user = with_tables(&app).await;
    assert_eq!(
        create_view(
            &app,
            &user,
            json!({"view_name": "taken", "sql_query": "SELECT 1 AS one"})
        )
        .await
        .status(),
        StatusCode::CREATED
    );

    let res = app
        .create_table(&user.access, walkthrough_file(), "taken", None)
        .await;

    assert_problem(res, StatusCode::CONFLICT, "table_exists").await;
    let rows: Value = app
        .get_as(&user.access, "/views/taken/rows/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(rows["rows"], json!([{"one": 1}]));
}

/// The `status` of a refresh answer and the view's row count afterwards.
async fn refresh_status(app: &TestApp, user: &TestUser, view: &str) -> String {
    let res = post(app, user, &format!("/views/{view}/refresh/")).await;
    assert_eq!(res.status(), StatusCode::OK, "refresh {view}");
    let body: Value = res.json().await.expect("json");
    body["status"].as_str().expect("status").to_owned()
}

#[tokio::test]
async fn a_view_over_a_view_is_never_skipped_and_holds_its_base_view_until_cascade() {
    // Arrange: a daily count over the calls, and a view reading that view.
    let app = spawn_app().await;
    let user = with_tables(&app).await;
    let daily = json!({"view_name": "daily", "sql_query":
        "SELECT date_trunc('day', record_timestamp) AS day, count(*) AS records FROM calls GROUP BY 1"});
    assert_eq!(
        create_view(&app, &user, daily).await.status(),
        StatusCode::CREATED
    );
    let busiest =
        json!({"view_name": "busiest", "sql_query": "SELECT max(records) AS most FROM daily"});
    assert_eq!(
        create_view(&app, &user, busiest).await.status(),
        StatusCode::CREATED
    );

    // Act + Assert: with nothing changed, the base view skips and the dependent one does not
    // (a view's change counter is not tracked, so reading one always refreshes).
    assert_eq!(refresh_status(&app, &user, "daily").await, "skipped");
    assert_eq!(refresh_status(&app, &user, "busiest").await, "refreshed");
    assert_eq!(refresh_status(&app, &user, "busiest").await, "refreshed");

    // The dependent view sees what its base view holds after the base refreshes.
    add_a_call_on_a_new_day(&app, &user).await;
    let most = |rows: Value| rows["rows"][0]["most"].as_i64().expect("most");
    let before = most(
        app.get_as(&user.access, "/views/busiest/rows/")
            .await
            .json()
            .await
            .expect("json"),
    );
    assert_eq!(refresh_status(&app, &user, "daily").await, "refreshed");
    assert_eq!(refresh_status(&app, &user, "busiest").await, "refreshed");
    let after = most(
        app.get_as(&user.access, "/views/busiest/rows/")
            .await
            .json()
            .await
            .expect("json"),
    );
    assert_eq!(
        after, before,
        "one more call on a new day does not change the busiest day"
    );
    let days: Value = app
        .get_as(&user.access, "/views/daily/")
        .await
        .json()
        .await
        .expect("json");
    assert!(days["row_count"].as_i64().expect("row_count") > 1);

    // Deleting the base view is refused while the other reads it, and takes both with cascade.
    assert_held_until_cascade(&app, &user, "/views/daily/", "view_has_dependents").await;
    for gone in ["/views/daily/", "/views/busiest/"] {
        assert_eq!(
            app.get_as(&user.access, gone).await.status(),
            StatusCode::NOT_FOUND,
            "{gone}"
        );
    }
}

#[tokio::test]
async fn a_failed_manual_refresh_is_recorded_and_the_old_rows_stay_readable() {
    // Arrange: a view keyed on SomeString, refreshed CONCURRENTLY, then a duplicate key in
    // its table.
    let app = spawn_app().await;
    let user = with_tables(&app).await;
    let body = json!({"view_name": "by_string", "unique_key": ["s"],
        "sql_query": "SELECT \"SomeString\" AS s, \"SomeNumber\" AS n FROM sometable"});
    assert_eq!(
        create_view(&app, &user, body).await.status(),
        StatusCode::CREATED
    );
    let res = app
        .client
        .post(app.url("/tables/sometable/rows/"))
        .header("Authorization", format!("JWT {}", user.access))
        .json(&json!([{"SomeNumber": 99, "SomeString": "s1"}]))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);

    // Act
    let res = post(&app, &user, "/views/by_string/refresh/").await;

    // Assert: a client error naming the problem, the failure in the view's history, and the
    // rows of the last good refresh still served.
    let status = res.status();
    let problem: Value = res.json().await.expect("problem JSON");
    assert!(status.is_client_error(), "{status} {problem}");
    assert!(
        problem["code"].is_string() && problem["detail"].is_string(),
        "{problem}"
    );
    let described: Value = app
        .get_as(&user.access, "/views/by_string/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(described["last_refresh"]["status"], "failed", "{described}");
    assert!(
        described["last_refresh"]["error"].is_string(),
        "{described}"
    );
    let rows: Value = app
        .get_as(&user.access, "/views/by_string/rows/?order=n&limit=100")
        .await
        .json()
        .await
        .expect("json");
    let ns: Vec<i64> = rows["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["n"].as_i64().expect("n"))
        .collect();
    assert_eq!(ns, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_unique_key_that_is_empty_invalid_or_not_a_column_is_refused_and_leaves_nothing() {
    let app = spawn_app().await;
    let user = with_tables(&app).await;

    for (key, code) in [
        (json!([]), "invalid_unique_key"),
        (json!(["bad name!"]), "invalid_unique_key"),
        (json!(["no_such_column"]), "invalid_unique_key"),
    ] {
        let body = json!({"view_name": "keyed", "unique_key": key,
            "sql_query": "SELECT \"SomeString\" AS s FROM sometable"});
        let res = create_view(&app, &user, body).await;
        let status = res.status();
        let problem: Value = res.json().await.expect("problem JSON");
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{key}: {problem}"
        );
        assert_eq!(
            app.get_as(&user.access, "/views/keyed/").await.status(),
            StatusCode::NOT_FOUND,
            "{key}"
        );
    }
}
