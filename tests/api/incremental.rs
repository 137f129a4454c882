//! Incremental views (issue 16): which shapes are accepted, that an incremental refresh reads
//! the same as a full one on random appends, the refresh event, and that a failed refresh
//! leaves the view as it was.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, parquet_of, spawn_app, spawn_app_with, superuser};

/// Microseconds of 2026-01-01 00:00 UTC.
const DAY0: i64 = 1_767_225_600_000_000;
const HOUR: i64 = 3_600_000_000;

/// `calls` (`id`, `source`, `record_timestamp`, `duration`) with a few rows, and `sources` (`source`,
/// `label`), for a new user.
async fn user_with_calls(app: &TestApp) -> TestUser {
    let user = app.signed_up_user().await;
    let calls = parquet_of(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
        (
            "source",
            Arc::new(StringArray::from(vec!["a", "b", "a"])) as ArrayRef,
        ),
        (
            "record_timestamp",
            Arc::new(TimestampMicrosecondArray::from(vec![
                DAY0,
                DAY0 + HOUR,
                DAY0 + 2 * HOUR,
            ])) as ArrayRef,
        ),
        (
            "duration",
            Arc::new(Int64Array::from(vec![10, 20, 30])) as ArrayRef,
        ),
    ]);
    let res = app.create_table(&user.access, calls, "calls", None).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let sources = parquet_of(vec![
        (
            "source",
            Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
        ),
        (
            "label",
            Arc::new(StringArray::from(vec!["A", "B", "B"])) as ArrayRef,
        ),
    ]);
    let res = app
        .create_table(&user.access, sources, "sources", None)
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    user
}

async fn schema_of(app: &TestApp, user: &TestUser) -> String {
    let me: Value = app.me(&user.access).await.json().await.expect("json");
    format!(
        "t_{}",
        uuid::Uuid::parse_str(me["id"].as_str().expect("id"))
            .expect("uuid")
            .simple()
    )
}

fn hourly(sql: &str) -> Value {
    json!({"bucket_column": "hour", "source_column": "record_timestamp", "_sql": sql})
}

async fn create(
    app: &TestApp,
    user: &TestUser,
    name: &str,
    sql: &str,
    spec: Value,
) -> reqwest::Response {
    let mut spec = spec;
    if let Some(o) = spec.as_object_mut() {
        o.remove("_sql");
    }
    app.post_as(
        &user.access,
        "/views/create/",
        &json!({"view_name": name, "sql_query": sql, "incremental": spec}),
    )
    .await
}

#[tokio::test]
async fn bucketed_group_bys_are_accepted_in_several_spellings() {
    let app = spawn_app().await;
    let user = user_with_calls(&app).await;
    let schema = schema_of(&app, &user).await;
    let accepted = [
        (
            "SELECT date_trunc('hour', c.record_timestamp) AS hour, count(*) AS n FROM calls c GROUP BY 1",
            "hour",
        ),
        (
            r#"SELECT "date_trunc"('HOUR', "c"."record_timestamp") AS "hour", count(*) FROM "calls" AS "c" GROUP BY "hour""#,
            "hour",
        ),
        (
            &format!(
                "SELECT date_trunc('day', calls.record_timestamp) AS day, sum(duration) AS total FROM {schema}.calls GROUP BY 1"
            ),
            "day",
        ),
        (
            "SELECT date_trunc('hour', record_timestamp::timestamp) AS hour, avg(duration), min(duration), max(duration) FROM calls GROUP BY hour",
            "hour",
        ),
        (
            "SELECT date_bin('15 minutes', c.record_timestamp, TIMESTAMP '2001-01-01') AS slot, count(*) FROM calls c GROUP BY 1",
            "slot",
        ),
        (
            "SELECT date_trunc('hour', c.record_timestamp) AS hour, s.label, count(*) FROM calls c JOIN sources s ON s.source = c.source WHERE c.duration > 0 OR c.id < 0 GROUP BY 1, 2",
            "hour",
        ),
        (
            "SELECT s.label, (date_trunc('minute', c.record_timestamp)) AS minute, count(*) FROM calls c, sources s WHERE s.source = c.source GROUP BY s.label, 2",
            "minute",
        ),
    ];
    for (i, (sql, bucket)) in accepted.iter().enumerate() {
        let name = format!("ok{i}");
        let spec = json!({"bucket_column": bucket, "source_column": "record_timestamp"});
        let res = create(&app, &user, &name, sql, spec).await;
        let status = res.status();
        let body: Value = res.json().await.expect("json");
        assert_eq!(status, StatusCode::CREATED, "{sql}: {body}");
        assert_eq!(body["incremental"]["bucket_column"], *bucket, "{body}");
        assert!(
            body["row_count"].as_i64().expect("rows") > 0,
            "{sql}: {body}"
        );
    }
}

#[tokio::test]
async fn other_shapes_are_refused_with_a_reason_and_leave_nothing_behind() {
    let app = spawn_app().await;
    let user = user_with_calls(&app).await;
    let schema = schema_of(&app, &user).await;
    // A function named date_trunc in the tenant's schema: PostgreSQL picks it for a bigint.
    let mut admin = superuser(&app.db).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION {schema}.date_trunc(text, bigint) RETURNS timestamp LANGUAGE sql IMMUTABLE AS 'SELECT now()::timestamp'; ALTER FUNCTION {schema}.date_trunc(text, bigint) OWNER TO {schema}"
    )))
    .execute(&mut admin)
    .await
    .expect("a look-alike function");
    let t = "record_timestamp";
    let refused: Vec<(String, Value)> = [
        // window functions, DISTINCT ON, LIMIT, OFFSET, HAVING, DISTINCT
        format!("SELECT date_trunc('hour', {t}) AS hour, count(*), rank() OVER (ORDER BY count(*)) FROM calls GROUP BY 1"),
        format!("SELECT DISTINCT ON (1) date_trunc('hour', {t}) AS hour, count(*) FROM calls GROUP BY 1 ORDER BY 1"),
        format!("SELECT date_trunc('hour', {t}) AS hour, count(*) FROM calls GROUP BY 1 LIMIT 5"),
        format!("SELECT date_trunc('hour', {t}) AS hour, count(*) FROM calls GROUP BY 1 OFFSET 1"),
        format!("SELECT date_trunc('hour', {t}) AS hour, count(*) FROM calls GROUP BY 1 HAVING count(*) > 1"),
        format!("SELECT DISTINCT date_trunc('hour', {t}) AS hour, count(*) FROM calls GROUP BY 1"),
        // set operations, CTEs, nested subqueries, sublinks
        format!("SELECT date_trunc('hour', {t}) AS hour, count(*) FROM calls GROUP BY 1 UNION ALL SELECT date_trunc('hour', {t}), count(*) FROM calls GROUP BY 1"),
        format!("WITH x AS (SELECT * FROM calls) SELECT date_trunc('hour', x.{t}) AS hour, count(*) FROM x GROUP BY 1"),
        format!("WITH x AS MATERIALIZED (SELECT * FROM calls) SELECT date_trunc('hour', x.{t}) AS hour, count(*) FROM x GROUP BY 1"),
        format!("SELECT date_trunc('hour', s.{t}) AS hour, count(*) FROM (SELECT * FROM calls) s GROUP BY 1"),
        format!("SELECT date_trunc('hour', {t}) AS hour, count(*) FROM calls WHERE duration > (SELECT avg(duration) FROM calls) GROUP BY 1"),
        format!("SELECT date_trunc('hour', {t}) AS hour, count(*) FROM calls WHERE source IN (SELECT source FROM sources) GROUP BY 1"),
        // volatile functions
        format!("SELECT date_trunc('hour', {t}) AS hour, count(*) FROM calls WHERE {t} < now() GROUP BY 1"),
        format!("SELECT date_trunc('hour', {t}) AS hour, sum(random()) FROM calls GROUP BY 1"),
        // the clock read through stable functions and run-time text conversions
        format!("SELECT date_trunc('hour', {t}) AS hour, max(('now'::text)::timestamptz) AS at FROM calls GROUP BY 1"),
        format!("SELECT date_trunc('hour', {t}) AS hour, count(*) FILTER (WHERE {t} < CAST('today' AS text)::date) FROM calls GROUP BY 1"),
        format!("SELECT date_trunc('hour', {t}) AS hour, max(age({t})) FROM calls GROUP BY 1"),
        format!("SELECT date_trunc('hour', {t}) AS hour, date_part('epoch', 'now'::text::timestamp) AS at FROM calls GROUP BY 1"),
        format!("SELECT date_trunc('hour', {t}) AS hour, max(NULLIF(source, source)::date) FROM calls GROUP BY 1"),
        format!("SELECT date_trunc('hour', {t}) AS hour, count(*) FROM calls WHERE {t} = ANY('{{now,today}}'::text::timestamp[]) GROUP BY 1"),
        format!("SELECT date_trunc('hour', {t}) AS hour, max(CAST(E'\\x6eow' AS text)::time) FROM calls GROUP BY 1"),
        format!("SELECT date_trunc('hour', {t}) AS hour, count(*), ('22:00+00'::timetz AT TIME ZONE 'America/New_York') AS close_ny FROM calls GROUP BY 1"),
        // not a bucket of a plain column
        format!("SELECT {t} AS hour, count(*) FROM calls GROUP BY 1"),
        format!("SELECT date_trunc('hour', {t} + interval '1 hour') AS hour, count(*) FROM calls GROUP BY 1"),
        format!("SELECT date_trunc('hour', {t}::date) AS hour, count(*) FROM calls GROUP BY 1"),
        format!("SELECT date_trunc('hour', {t}::timestamptz) AS hour, count(*) FROM calls GROUP BY 1"),
        format!("SELECT date_trunc(CASE WHEN id > 0 THEN 'hour' ELSE 'day' END, {t}) AS hour, count(*) FROM calls GROUP BY 1"),
        "SELECT date_trunc('hour', id) AS hour, count(*) FROM calls GROUP BY 1".to_owned(),
        format!("SELECT date_trunc('hour', max({t})) AS hour, source FROM calls GROUP BY source"),
        format!("SELECT date_bin('1 month', {t}, TIMESTAMP '2001-01-01') AS hour, count(*) FROM calls GROUP BY 1"),
        // aggregates that are not recomputed per bucket here, self and outer joins
        format!("SELECT date_trunc('hour', {t}) AS hour, string_agg(source, ',') FROM calls GROUP BY 1"),
        format!("SELECT date_trunc('hour', a.{t}) AS hour, count(*) FROM calls a JOIN calls b ON a.id = b.id GROUP BY 1"),
        format!("SELECT date_trunc('hour', c.{t}) AS hour, count(*) FROM sources s LEFT JOIN calls c ON s.source = c.source GROUP BY 1"),
        format!("SELECT date_trunc('hour', c.{t}) AS hour, count(*) FROM calls c FULL JOIN sources s ON s.source = c.source GROUP BY 1"),
        // grouping sets
        format!("SELECT date_trunc('hour', {t}) AS hour, source, count(*) FROM calls GROUP BY ROLLUP (1, 2)"),
    ]
    .into_iter()
    .map(|sql| {
        let spec = json!({"bucket_column": "hour", "source_column": t});
        (sql, spec)
    })
    .chain([
        // The spec names another column, or a column that is not the bucket.
        (
            format!("SELECT date_trunc('hour', {t}) AS hour, count(*) FROM calls GROUP BY 1"),
            json!({"bucket_column": "hour", "source_column": "duration"}),
        ),
        (
            format!("SELECT date_trunc('hour', {t}) AS hour, count(*) AS n FROM calls GROUP BY 1"),
            json!({"bucket_column": "n", "source_column": t}),
        ),
        (
            format!("SELECT date_trunc('hour', {t}) AS hour, count(*) FROM calls GROUP BY 1"),
            json!({"bucket_column": "nope", "source_column": t}),
        ),
    ])
    .collect();
    for (i, (sql, spec)) in refused.iter().enumerate() {
        let name = format!("no{i}");
        let res = create(&app, &user, &name, sql, spec.clone()).await;
        let status = res.status();
        let body: Value = res.json().await.expect("json");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sql}: {body}");
        let code = body["code"].as_str().unwrap_or_default();
        assert!(
            code == "invalid_incremental" || code == "sql_rejected" || code == "invalid_sql",
            "{sql}: {body}"
        );
        assert!(
            body["detail"].as_str().unwrap_or_default().len() > 20,
            "{body}"
        );
        let res = app.get_as(&user.access, &format!("/views/{name}/")).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{sql}");
    }
    // With a unique key: refused, it names why.
    let res = app
        .post_as(
            &user.access,
            "/views/create/",
            &json!({"view_name": "keyed", "sql_query": "SELECT date_trunc('hour', record_timestamp) AS hour, count(*) FROM calls GROUP BY 1",
                    "unique_key": ["hour"], "incremental": {"bucket_column": "hour", "source_column": t}}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // Nothing of the refused views is left in the schema.
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN ('v', 'm')",
    )
    .bind(&schema)
    .fetch_one(&mut admin)
    .await
    .expect("count");
    assert_eq!(left, 0);
}

/// Rows of a relation as sorted text, read as the superuser.
async fn rows_of(app: &TestApp, schema: &str, relation: &str) -> Vec<String> {
    let mut admin = superuser(&app.db).await;
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT r::text FROM {schema}.{relation} r ORDER BY 1"
    )))
    .fetch_all(&mut admin)
    .await
    .expect("rows")
}

fn random_rows(rng: &mut StdRng, latest_hour: i64, n: usize, next_id: &mut i64) -> Value {
    let rows: Vec<Value> = (0..n)
        .map(|_| {
            *next_id += 1;
            // Mostly the latest hours, sometimes late into old ones, rarely no time at all.
            let hour = if rng.random_bool(0.8) {
                latest_hour - rng.random_range(0..2)
            } else {
                rng.random_range(0..=latest_hour)
            };
            let at = DAY0 + hour * HOUR + rng.random_range(0..HOUR);
            let when = if rng.random_bool(0.03) {
                Value::Null
            } else {
                let t = chrono::DateTime::from_timestamp_micros(at).expect("time");
                json!(t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
            };
            let source = ["a", "b", "c", "d"][rng.random_range(0..4)];
            json!({"id": *next_id, "source": source,
                   "record_timestamp": when, "duration": rng.random_range(0..100)})
        })
        .collect();
    json!(rows)
}

#[tokio::test]
async fn incremental_refreshes_read_the_same_as_full_ones_on_random_changes() {
    let app = spawn_app().await;
    let user = user_with_calls(&app).await;
    let schema = schema_of(&app, &user).await;
    let a = &user.access;
    let views = [
        (
            "SELECT date_trunc('hour', c.record_timestamp) AS hour, s.label, count(*) AS calls, sum(c.duration) AS total, min(c.duration) AS shortest, max(c.duration) AS longest, avg(c.duration) AS mean FROM calls c JOIN sources s ON s.source = c.source WHERE c.duration >= 5 GROUP BY 1, 2",
            "hour",
        ),
        (
            "SELECT date_bin('20 minutes', record_timestamp, TIMESTAMP '2001-01-01 00:07') AS slot, count(*) AS n, sum(duration) AS total FROM calls GROUP BY 1",
            "slot",
        ),
    ];
    for (i, (sql, bucket)) in views.iter().enumerate() {
        let spec = json!({"bucket_column": bucket, "source_column": "record_timestamp"});
        let res = create(&app, &user, &format!("inc{i}"), sql, spec).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        app.created(
            a,
            "/views/create/",
            json!({"view_name": format!("full{i}"), "sql_query": sql}),
        )
        .await;
        app.created(
            a,
            "/channels/create/",
            json!({"view_name": format!("inc{i}")}),
        )
        .await;
    }
    // A seeded random loop (no proptest: the loop needs the server and database anyway).
    let seed = 16;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut next_id = 100;
    let mut latest_hour = 3;
    for step in 0..60 {
        let roll = rng.random_range(0..100);
        if roll < 70 {
            if rng.random_bool(0.3) {
                latest_hour += 1;
            }
            let n = if rng.random_bool(0.1) {
                0
            } else {
                rng.random_range(1..30)
            };
            let rows = random_rows(&mut rng, latest_hour, n, &mut next_id);
            let res = app.post_as(a, "/tables/calls/rows/", &rows).await;
            assert_eq!(res.status(), StatusCode::OK, "step {step}");
        } else if roll < 78 {
            let n = rng.random_range(1..40);
            let rows = random_rows(&mut rng, latest_hour, n, &mut next_id);
            let res = app
                .post_as(a, "/tables/calls/rows/?mode=replace", &rows)
                .await;
            assert_eq!(res.status(), StatusCode::OK, "step {step}");
        } else if roll < 83 {
            let label = if rng.random_bool(0.5) { "A" } else { "C" };
            let res = app
                .post_as(
                    a,
                    "/tables/sources/rows/",
                    &json!([{"source": "d", "label": label}]),
                )
                .await;
            assert_eq!(res.status(), StatusCode::OK, "step {step}");
        }
        // Refresh now and then, so that several changes are merged into one refresh.
        if rng.random_bool(0.6) {
            for i in 0..views.len() {
                let inc = app.refresh_view(a, &format!("inc{i}")).await;
                let full = app.refresh_view(a, &format!("full{i}")).await;
                // Counted from the last count and what changed, the same as counted anew.
                if full["status"] == "refreshed" && inc["status"] == "refreshed" {
                    assert_eq!(
                        inc["row_count"], full["row_count"],
                        "seed {seed}, step {step}, view {i}: {inc}"
                    );
                }
                assert_eq!(
                    rows_of(&app, &schema, &format!("inc{i}")).await,
                    rows_of(&app, &schema, &format!("full{i}")).await,
                    "seed {seed}, step {step}, view {i}"
                );
            }
        }
    }
    // The incremental path was taken, and so was the full one (replaces, dimension changes).
    let mut admin = superuser(&app.db).await;
    let modes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT data->>'mode', count(*) FROM tinydevcrm.events GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&mut admin)
    .await
    .expect("modes");
    assert!(
        modes.len() == 2 && modes.iter().all(|(_, n)| *n >= 3),
        "{modes:?}"
    );
}

#[tokio::test]
async fn a_refresh_event_says_incremental_and_which_buckets_changed() {
    let app = spawn_app().await;
    let user = user_with_calls(&app).await;
    let a = &user.access;
    let sql =
        "SELECT date_trunc('hour', record_timestamp) AS hour, count(*) AS n FROM calls GROUP BY 1";
    let res = create(&app, &user, "usage", sql, hourly(sql)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let channel = app
        .created(a, "/channels/create/", json!({"view_name": "usage"}))
        .await;
    let cid = channel["channel_id"].as_str().expect("id").to_owned();
    let mut stream = app.listen(a, &cid).await;
    let rows = json!([
        {"id": 10, "source": "a", "record_timestamp": "2026-01-01T05:10:00", "duration": 1},
        {"id": 11, "source": "a", "record_timestamp": "2026-01-01T01:59:59", "duration": 1}
    ]);
    let res = app.post_as(a, "/tables/calls/rows/", &rows).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.post_as(a, "/views/usage/refresh/", &json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    // The answer says what the event says.
    let answer: Value = res.json().await.expect("json");
    assert_eq!(answer["mode"], "incremental", "{answer}");
    assert_eq!(answer["buckets"]["from"], "2026-01-01 01:00:00", "{answer}");
    assert_eq!(answer["buckets"]["to"], "2026-01-01 05:00:00", "{answer}");
    let event = stream.expect_event(Duration::from_secs(10)).await.json();
    assert_eq!(event["mode"], "incremental", "{event}");
    assert_eq!(event["buckets"]["from"], "2026-01-01 01:00:00", "{event}");
    assert_eq!(event["buckets"]["to"], "2026-01-01 05:00:00", "{event}");
    assert_eq!(event["view_name"], "usage");
    assert_eq!(event["status"], "succeeded");
    assert_eq!(event["row_count"], 4, "{event}");
    // A replace cannot be bounded: full, no buckets.
    let res = app
        .post_as(a, "/tables/calls/rows/?mode=replace", &rows)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let answer = app.refresh_view(a, "usage").await;
    assert_eq!(answer["mode"], "full", "{answer}");
    assert_eq!(answer["buckets"], Value::Null, "{answer}");
    // Nothing changed since: skipped, and no mode.
    let answer = app.refresh_view(a, "usage").await;
    assert_eq!(answer["status"], "skipped", "{answer}");
    assert_eq!(answer["mode"], Value::Null, "{answer}");
    let event = stream.expect_event(Duration::from_secs(10)).await.json();
    assert_eq!(event["mode"], "full", "{event}");
    assert_eq!(event["buckets"], Value::Null, "{event}");
    assert_eq!(event["row_count"], 2, "{event}");
}

#[tokio::test]
async fn a_failed_incremental_refresh_leaves_the_view_as_it_was() {
    let app = spawn_app().await;
    let user = user_with_calls(&app).await;
    let schema = schema_of(&app, &user).await;
    let a = &user.access;
    let sql = "SELECT date_trunc('hour', record_timestamp) AS hour, count(*) AS n, sum(100 / duration) AS per FROM calls GROUP BY 1";
    let res = create(&app, &user, "fragile", sql, hourly(sql)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // One good row and one that divides by zero, both in the first hour (already in the view).
    let rows = json!([
        {"id": 10, "source": "a", "record_timestamp": "2026-01-01T00:30:00", "duration": 5},
        {"id": 11, "source": "a", "record_timestamp": "2026-01-01T00:40:00", "duration": 0}
    ]);
    let before = rows_of(&app, &schema, "fragile").await;
    let res = app.post_as(a, "/tables/calls/rows/", &rows).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.post_as(a, "/views/fragile/refresh/", &json!({})).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(rows_of(&app, &schema, "fragile").await, before);
    // The change is still pending: once the rows are fixed, the refresh takes it.
    let good = json!([{"id": 12, "source": "a", "record_timestamp": "2026-01-01T00:30:00", "duration": 5}]);
    let res = app
        .post_as(a, "/tables/calls/rows/?mode=replace", &good)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let record = app.refresh_view(a, "fragile").await;
    assert_eq!(record["status"], "refreshed");
    assert_eq!(rows_of(&app, &schema, "fragile").await.len(), 1);
}

#[tokio::test]
async fn an_incremental_view_reads_lists_and_deletes_like_any_view() {
    let app = spawn_app().await;
    let user = user_with_calls(&app).await;
    let a = &user.access;
    let sql =
        "SELECT date_trunc('hour', record_timestamp) AS hour, count(*) AS n FROM calls GROUP BY 1";
    let res = create(&app, &user, "usage", sql, hourly(sql)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let list: Value = app.get_as(a, "/views/").await.json().await.expect("json");
    assert_eq!(list[0]["view_name"], "usage");
    let page: Value = app
        .get_as(
            a,
            "/views/usage/rows/?order=hour&hour=gte.2026-01-01T01:00:00",
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["rows"].as_array().map(Vec::len), Some(2), "{page}");
    // Unchanged tables: skipped, as for any view.
    let record = app.refresh_view(a, "usage").await;
    assert_eq!(record["status"], "skipped");
    // Its source table cannot go without cascade; with cascade the view goes too.
    let res = app.delete_as(a, "/tables/calls/").await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let res = app.delete_as(a, "/tables/calls/?cascade=true").await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app.get_as(a, "/views/usage/").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // A new view of that name can be made again.
    let res = app.delete_as(a, "/tables/sources/").await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

/// Creates `sql` as an incremental view `inc_<i>` and as a materialized view `full_<i>`.
async fn twins(app: &TestApp, user: &TestUser, i: usize, sql: &str, bucket: &str) {
    let spec = json!({"bucket_column": bucket, "source_column": "record_timestamp"});
    let res = create(app, user, &format!("inc_{i}"), sql, spec).await;
    let status = res.status();
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{sql}: {}",
        res.text().await.unwrap_or_default()
    );
    app.created(
        &user.access,
        "/views/create/",
        json!({"view_name": format!("full_{i}"), "sql_query": sql}),
    )
    .await;
}

#[tokio::test]
async fn the_range_is_on_the_checked_bucket_column_whatever_the_aliases_spell() {
    let app = spawn_app().await;
    let user = user_with_calls(&app).await;
    let schema = schema_of(&app, &user).await;
    let a = &user.access;
    // PostgreSQL folds only ASCII letters of unquoted names: `É` stays `É`, not `é`. Each
    // view has a look-alike output column over a shifted or cast expression of the same
    // column, listed before the bucket; a range on it would drop buckets.
    let views = [
        (
            "SELECT date_trunc('day', c.record_timestamp - interval '2 days') AS É, date_trunc('day', c.record_timestamp) AS \"é\", count(*) AS n FROM calls c GROUP BY 1, 2",
            "é",
        ),
        (
            "SELECT date_trunc('hour', c.record_timestamp + interval '3 hours') AS Ä, date_trunc('hour', c.record_timestamp) AS \"ä\", count(*) AS n FROM calls c GROUP BY 1, 2",
            "ä",
        ),
        (
            "SELECT date_trunc('hour', (c.record_timestamp::date)::timestamp) AS Ω, date_trunc('hour', c.record_timestamp) AS \"ω\", count(*) AS n FROM calls AS c GROUP BY 1, 2",
            "ω",
        ),
        // Quoted and unquoted look-alikes the other way round, the table's alias non-ASCII.
        (
            "SELECT date_trunc('hour', Ü.record_timestamp) AS \"Ö\", date_trunc('hour', Ü.record_timestamp - interval '5 hours') AS ö, count(*) AS n FROM calls Ü GROUP BY 1, 2",
            "Ö",
        ),
        // The bucket's name reused as the table's alias, and an alias that needs quoting.
        (
            "SELECT date_trunc('hour', hour.record_timestamp) AS hour, count(*) AS n FROM calls hour GROUP BY 1",
            "hour",
        ),
        (
            "SELECT date_trunc('hour', \"a\"\"b\".record_timestamp) AS \"a\"\"b\", count(*) AS n FROM calls AS \"a\"\"b\" GROUP BY 1",
            "a\"b",
        ),
    ];
    for (i, (sql, bucket)) in views.iter().enumerate() {
        twins(&app, &user, i, sql, bucket).await;
        app.created(
            a,
            "/channels/create/",
            json!({"view_name": format!("inc_{i}")}),
        )
        .await;
    }
    // Late rows into the first hour and day, and new hours.
    let rows = json!([
        {"id": 10, "source": "a", "record_timestamp": "2026-01-01T00:30:00", "duration": 1},
        {"id": 11, "source": "b", "record_timestamp": "2026-01-01T05:10:00", "duration": 1},
        {"id": 12, "source": "a", "record_timestamp": "2026-01-02T07:00:00", "duration": 1}
    ]);
    let res = app.post_as(a, "/tables/calls/rows/", &rows).await;
    assert_eq!(res.status(), StatusCode::OK);
    for (i, (sql, _)) in views.iter().enumerate() {
        app.refresh_view(a, &format!("inc_{i}")).await;
        app.refresh_view(a, &format!("full_{i}")).await;
        assert_eq!(
            rows_of(&app, &schema, &format!("inc_{i}")).await,
            rows_of(&app, &schema, &format!("full_{i}")).await,
            "{sql}"
        );
    }
    // The incremental path was taken (not a full refresh that would hide a wrong range).
    let mut admin = superuser(&app.db).await;
    let incremental: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tinydevcrm.events WHERE data->>'mode' = 'incremental'",
    )
    .fetch_one(&mut admin)
    .await
    .expect("count");
    assert_eq!(incremental, i64::try_from(views.len()).expect("few"));
}

#[tokio::test]
async fn an_incremental_view_over_another_ones_table_is_refused_and_a_plain_one_is_not() {
    let app = spawn_app().await;
    let user = user_with_calls(&app).await;
    let schema = schema_of(&app, &user).await;
    let a = &user.access;
    let sql = "SELECT date_trunc('hour', record_timestamp) AS hour, source, count(*) AS n FROM calls GROUP BY 1, 2";
    let res = create(&app, &user, "hourly", sql, hourly(sql)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // Its table is a plain table, but its refreshes record no changes for a view over it.
    let over = [
        (
            "SELECT date_trunc('day', h.hour) AS day, sum(h.n) AS n FROM hourly h GROUP BY 1".to_owned(),
            json!({"bucket_column": "day", "source_column": "hour"}),
        ),
        (
            format!("SELECT date_trunc('day', \"hour\") AS day, sum(n) AS n FROM \"{schema}\".\"hourly\" GROUP BY 1"),
            json!({"bucket_column": "day", "source_column": "hour"}),
        ),
        // Only joined: the source is an uploaded table, the other one is not.
        (
            "SELECT date_trunc('hour', c.record_timestamp) AS hour, count(*) AS n FROM calls c JOIN hourly h ON h.source = c.source GROUP BY 1".to_owned(),
            json!({"bucket_column": "hour", "source_column": "record_timestamp"}),
        ),
        (
            "SELECT date_trunc('hour', c.record_timestamp) AS hour, count(*) AS n FROM hourly h, calls c WHERE h.hour = date_trunc('hour', c.record_timestamp) GROUP BY 1".to_owned(),
            json!({"bucket_column": "hour", "source_column": "record_timestamp"}),
        ),
    ];
    for (i, (sql, spec)) in over.iter().enumerate() {
        let name = format!("over{i}");
        let res = create(&app, &user, &name, sql, spec.clone()).await;
        let status = res.status();
        let body: Value = res.json().await.expect("json");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sql}: {body}");
        assert_eq!(body["code"], "invalid_incremental", "{body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("\"hourly\" is not an uploaded table"),
            "{body}"
        );
        let res = app.get_as(a, &format!("/views/{name}/")).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        // Without incremental it is a materialized view, refreshed whole.
        app.created(
            a,
            "/views/create/",
            json!({"view_name": name, "sql_query": sql}),
        )
        .await;
    }
}

#[tokio::test]
async fn extreme_timestamps_make_a_full_refresh_never_an_error() {
    let app = spawn_app().await;
    let user = user_with_calls(&app).await;
    let schema = schema_of(&app, &user).await;
    let a = &user.access;
    let views = [
        "SELECT date_trunc('hour', record_timestamp) AS b, count(*) AS n FROM calls GROUP BY 1",
        "SELECT date_trunc('millennium', record_timestamp) AS b, count(*) AS n FROM calls GROUP BY 1",
        "SELECT date_bin('7 hours', record_timestamp, TIMESTAMP '2001-01-01') AS b, count(*) AS n FROM calls GROUP BY 1",
    ];
    for (i, sql) in views.iter().enumerate() {
        twins(&app, &user, i, sql, "b").await;
    }
    // Year 1 (its bucket's widened bounds are BC), 1 BC, the ends of PostgreSQL's range.
    let extremes = [
        "0001-01-01T00:30:00",
        "0001-01-01T00:00:00Z",
        "0000-12-31T00:00:00Z",
        "0001-06-01T00:00:00",
        "-4712-01-01T00:30:00",
        "4714-11-24T00:30:00 BC",
        "294276-12-31T23:00:00",
        "262142-12-31T23:00:00",
        "infinity",
        "-infinity",
    ];
    let mut next_id = 100;
    let mut accepted = 0;
    for when in extremes {
        next_id += 1;
        let rows = json!([
            {"id": next_id, "source": "a", "record_timestamp": when, "duration": 1},
            {"id": next_id + 1000, "source": "a", "record_timestamp": "2026-01-01T00:10:00", "duration": 1}
        ]);
        let res = app.post_as(a, "/tables/calls/rows/", &rows).await;
        if res.status() != StatusCode::OK {
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{when}");
            continue;
        }
        accepted += 1;
        for i in 0..views.len() {
            for name in [format!("inc_{i}"), format!("full_{i}")] {
                let res = app
                    .post_as(a, &format!("/views/{name}/refresh/"), &json!({}))
                    .await;
                assert_eq!(
                    res.status(),
                    StatusCode::OK,
                    "{when}, {name}: {}",
                    res.text().await.unwrap_or_default()
                );
            }
            assert_eq!(
                rows_of(&app, &schema, &format!("inc_{i}")).await,
                rows_of(&app, &schema, &format!("full_{i}")).await,
                "{when}, view {i}"
            );
        }
    }
    assert!(
        accepted >= 3,
        "{accepted} of the extreme values were accepted"
    );
    // Appends refuse years before 1 BC, but a pending range at PostgreSQL's lowest timestamp
    // (recorded as an append would, with its change counted) cannot be widened by a bucket:
    // a full refresh too.
    let mut admin = superuser(&app.db).await;
    sqlx::raw_sql(
        "UPDATE tinydevcrm.tables SET change_count = change_count + 1 WHERE table_name = 'calls';
         INSERT INTO tinydevcrm.view_pending (view_id, range_from, range_to, full_refresh)
         SELECT view_id, '4714-11-24 00:30:00 BC', '4714-11-24 00:30:00 BC', false
         FROM tinydevcrm.views WHERE view_name LIKE 'inc\\_%'",
    )
    .execute(&mut admin)
    .await
    .expect("a pending range at the lowest timestamp");
    for i in 0..views.len() {
        let res = app
            .post_as(a, &format!("/views/inc_{i}/refresh/"), &json!({}))
            .await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "view {i}: {}",
            res.text().await.unwrap_or_default()
        );
    }
    // Nothing is left pending: the fallback consumed what it recomputed.
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM tinydevcrm.view_pending")
        .fetch_one(&mut admin)
        .await
        .expect("count");
    assert_eq!(pending, 0);
}

#[tokio::test]
async fn a_create_whose_first_fill_times_out_answers_query_timeout_and_leaves_nothing() {
    let app = spawn_app_with(|s| s.tenant_statement_timeout = Duration::from_secs(1)).await;
    let user = user_with_calls(&app).await;
    let schema = schema_of(&app, &user).await;
    let a = &user.access;
    let big = parquet_of(vec![(
        "x",
        Arc::new(Int64Array::from((0..2000).collect::<Vec<i64>>())) as ArrayRef,
    )]);
    let res = app.create_table(a, big, "big", None).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // Billions of rows: the first fill cannot finish in a second.
    let slow = "SELECT date_trunc('hour', c.record_timestamp) AS hour, count(*) AS n FROM calls c, big p, big q, big r WHERE p.x + q.x + r.x >= 0 GROUP BY 1";
    let attempts = [
        json!({"view_name": "slow", "sql_query": slow,
               "incremental": {"bucket_column": "hour", "source_column": "record_timestamp"}}),
        json!({"view_name": "slow", "sql_query": slow}),
        json!({"view_name": "slow", "sql_query": slow.replace("date_trunc('hour'", "date_trunc('day'"),
               "incremental": {"bucket_column": "hour", "source_column": "record_timestamp"}}),
    ];
    let mut admin = superuser(&app.db).await;
    for body in attempts {
        let res = app.post_as(a, "/views/create/", &body).await;
        let status = res.status();
        let problem: Value = res.json().await.expect("json");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert_eq!(problem["code"], "query_timeout", "{problem}");
        let res = app.get_as(a, "/views/slow/").await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let left: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'v', 'm') ORDER BY 1",
        )
        .bind(&schema)
        .fetch_all(&mut admin)
        .await
        .expect("relations");
        assert_eq!(left, ["big", "calls", "sources"], "{body}");
        let registered: i64 = sqlx::query_scalar("SELECT count(*) FROM tinydevcrm.views")
            .fetch_one(&mut admin)
            .await
            .expect("count");
        assert_eq!(registered, 0, "{body}");
    }
    // The name is free again.
    let quick =
        "SELECT date_trunc('hour', record_timestamp) AS hour, count(*) AS n FROM calls GROUP BY 1";
    let res = create(&app, &user, "slow", quick, hourly(quick)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

/// A refresh held at its lock while an upload commits, then let go.
async fn refresh_across_an_upload(
    app: &TestApp,
    user: &TestUser,
    schema: &str,
    upload: (&str, &Value),
) -> Value {
    let mut admin = superuser(&app.db).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; LOCK TABLE {schema}.usage IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut admin)
    .await
    .expect("lock");
    let refresh = {
        let client = app.client.clone();
        let url = app.url("/views/usage/refresh/");
        let access = user.access.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(access)
                .json(&json!({}))
                .send()
                .await
                .expect("refresh")
        })
    };
    // Until the refresh waits for the lock.
    let waiting = format!(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = '{schema}.usage'::regclass"
    );
    let mut monitor = superuser(&app.db).await;
    for _ in 0..200 {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(waiting.clone()))
            .fetch_one(&mut monitor)
            .await
            .expect("locks");
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (path, rows) = upload;
    let res = app.post_as(&user.access, path, rows).await;
    assert_eq!(res.status(), StatusCode::OK);
    sqlx::raw_sql("COMMIT")
        .execute(&mut admin)
        .await
        .expect("unlock");
    let res = refresh.await.expect("task");
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.expect("json")
}

#[tokio::test]
async fn an_upload_that_commits_while_a_refresh_waits_is_wholly_in_it() {
    let app = spawn_app().await;
    let user = user_with_calls(&app).await;
    let schema = schema_of(&app, &user).await;
    let a = &user.access;
    let sql = "SELECT date_trunc('hour', record_timestamp) AS hour, source, count(*) AS n, sum(duration) AS d FROM calls GROUP BY 1, 2";
    let res = create(&app, &user, "usage", sql, hourly(sql)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    app.created(
        a,
        "/views/create/",
        json!({"view_name": "usage_full", "sql_query": sql}),
    )
    .await;
    // One append waits to be recomputed (hour 0); another, in that hour and in a far one,
    // commits while the refresh waits for the view's lock.
    let first = json!([{"id": 20, "source": "a", "record_timestamp": "2026-01-01T00:30:00", "duration": 5}]);
    let res = app.post_as(a, "/tables/calls/rows/", &first).await;
    assert_eq!(res.status(), StatusCode::OK);
    let second = json!([
        {"id": 21, "source": "a", "record_timestamp": "2026-01-01T00:40:00", "duration": 7},
        {"id": 22, "source": "z", "record_timestamp": "2026-03-01T09:00:00", "duration": 9}
    ]);
    let answer =
        refresh_across_an_upload(&app, &user, &schema, ("/tables/calls/rows/", &second)).await;
    assert_eq!(answer["mode"], "incremental", "{answer}");
    app.refresh_view(a, "usage_full").await;
    assert_eq!(
        rows_of(&app, &schema, "usage").await,
        rows_of(&app, &schema, "usage_full").await,
        "the view after one refresh holds both uploads wholly"
    );
    // A replace that commits while the refresh waits makes it full.
    let replaced = json!([{"id": 30, "source": "q", "record_timestamp": "2027-01-01T00:00:00", "duration": 1}]);
    let res = app.post_as(a, "/tables/calls/rows/", &first).await;
    assert_eq!(res.status(), StatusCode::OK);
    let answer = refresh_across_an_upload(
        &app,
        &user,
        &schema,
        ("/tables/calls/rows/?mode=replace", &replaced),
    )
    .await;
    assert_eq!(answer["mode"], "full", "{answer}");
    app.refresh_view(a, "usage_full").await;
    assert_eq!(
        rows_of(&app, &schema, "usage").await,
        rows_of(&app, &schema, "usage_full").await,
        "the view after one refresh is the replaced table's"
    );
}

#[tokio::test]
async fn an_append_that_meets_a_view_being_deleted_still_succeeds() {
    let app = spawn_app().await;
    let user = user_with_calls(&app).await;
    let a = &user.access;
    let sql =
        "SELECT date_trunc('hour', record_timestamp) AS hour, count(*) AS n FROM calls GROUP BY 1";
    let res = create(&app, &user, "usage", sql, hourly(sql)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // A deletion of the view's row that is under way (row locked) when the append records
    // what the view must recompute, and commits while the append waits.
    let mut admin = superuser(&app.db).await;
    sqlx::raw_sql("BEGIN; SELECT 1 FROM tinydevcrm.views WHERE view_name = 'usage' FOR UPDATE")
        .execute(&mut admin)
        .await
        .expect("lock");
    let append = {
        let client = app.client.clone();
        let url = app.url("/tables/calls/rows/");
        let access = a.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(access)
                .json(&json!([{"id": 40, "source": "a", "record_timestamp": "2026-01-01T00:10:00", "duration": 1}]))
                .send()
                .await
                .expect("append")
        })
    };
    let mut monitor = superuser(&app.db).await;
    for _ in 0..200 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND (query LIKE '%view_pending%' OR query LIKE '%FOR KEY SHARE%')",
        )
        .fetch_one(&mut monitor)
        .await
        .expect("activity");
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    sqlx::raw_sql("DELETE FROM tinydevcrm.views WHERE view_name = 'usage'; COMMIT")
        .execute(&mut admin)
        .await
        .expect("delete");
    let res = append.await.expect("task");
    let status = res.status();
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let table: Value = app
        .get_as(a, "/tables/calls/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(table["row_count"], 4, "the append's row is there: {table}");
}

#[tokio::test]
async fn the_row_count_builds_on_the_last_one_only_when_it_belongs_to_the_last_change_count() {
    let app = spawn_app().await;
    let user = user_with_calls(&app).await;
    let a = &user.access;
    let sql =
        "SELECT date_trunc('hour', record_timestamp) AS hour, count(*) AS n FROM calls GROUP BY 1";
    let res = create(&app, &user, "usage", sql, hourly(sql)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let mut admin = superuser(&app.db).await;
    let append = |id: i64, at: &str| json!([{"id": id, "source": "a", "record_timestamp": at, "duration": 1}]);
    // A stored count is built on (a new hour adds one row): a planted one shows through.
    sqlx::query("UPDATE tinydevcrm.views SET refreshed_rows = 1000 WHERE view_name = 'usage'")
        .execute(&mut admin)
        .await
        .expect("plant");
    let res = app
        .post_as(a, "/tables/calls/rows/", &append(50, "2026-01-02T07:00:00"))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let answer = app.refresh_view(a, "usage").await;
    assert_eq!(answer["mode"], "incremental", "{answer}");
    assert_eq!(answer["row_count"], 1001, "{answer}");
    // A process older than migration 0017 moves the change count alone: the count is not
    // trusted and is counted again.
    sqlx::query(
        "UPDATE tinydevcrm.views SET refreshed_rows = 1000, refreshed_rows_changes = refreshed_changes - 1 WHERE view_name = 'usage'",
    )
    .execute(&mut admin)
    .await
    .expect("older process");
    let res = app
        .post_as(a, "/tables/calls/rows/", &append(51, "2026-01-02T08:00:00"))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let answer = app.refresh_view(a, "usage").await;
    assert_eq!(answer["mode"], "incremental", "{answer}");
    assert_eq!(
        answer["row_count"], 5,
        "three first hours and two new: {answer}"
    );
}

#[tokio::test]
async fn a_refresh_whose_channel_changes_after_its_snapshot_runs_again_and_announces_once() {
    let app = spawn_app().await;
    let user = user_with_calls(&app).await;
    let a = &user.access;
    let sql =
        "SELECT date_trunc('hour', record_timestamp) AS hour, count(*) AS n FROM calls GROUP BY 1";
    let res = create(&app, &user, "usage", sql, hourly(sql)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let channel = app
        .created(a, "/channels/create/", json!({"view_name": "usage"}))
        .await;
    let cid = channel["channel_id"].as_str().expect("id").to_owned();
    let res = app
        .post_as(
            a,
            "/tables/calls/rows/",
            &json!([{"id": 60, "source": "a", "record_timestamp": "2026-01-03T01:00:00", "duration": 1}]),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    // The channel's row is held while the refresh takes its snapshot and recomputes; it then
    // changes (as the retention task's pruning changes it) before the refresh may write the
    // event: the refresh's snapshot is stale for that row.
    let mut admin = superuser(&app.db).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; SELECT 1 FROM tinydevcrm.channels WHERE channel_id = '{cid}' FOR UPDATE"
    )))
    .execute(&mut admin)
    .await
    .expect("hold");
    let refresh = {
        let client = app.client.clone();
        let url = app.url("/views/usage/refresh/");
        let access = a.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(access)
                .json(&json!({}))
                .send()
                .await
                .expect("refresh")
        })
    };
    let mut monitor = superuser(&app.db).await;
    for _ in 0..200 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%tinydevcrm.channels%'",
        )
        .fetch_one(&mut monitor)
        .await
        .expect("activity");
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "UPDATE tinydevcrm.channels SET pruned_through = pruned_through WHERE channel_id = '{cid}'; COMMIT"
    )))
    .execute(&mut admin)
    .await
    .expect("change");
    let res = refresh.await.expect("task");
    assert_eq!(res.status(), StatusCode::OK);
    let answer: Value = res.json().await.expect("json");
    assert_eq!(answer["mode"], "incremental", "{answer}");
    let events: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM tinydevcrm.events WHERE channel_id = '{cid}'"
    )))
    .fetch_one(&mut monitor)
    .await
    .expect("events");
    assert_eq!(events, 1, "the first try's event was rolled back");
}
