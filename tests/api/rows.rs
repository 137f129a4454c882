//! Reading rows back: JSON, CSV and Parquet, filters, order, select, cursor and page paging.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array,
    Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_problem, parquet_bytes, spawn_app};

fn typed_file() -> Vec<u8> {
    typed_file_with_ids([Some(9_007_199_254_740_993), Some(2), Some(3), None])
}

/// [`typed_file`] with other values in `id`.
fn typed_file_with_ids(ids: [Option<i64>; 4]) -> Vec<u8> {
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("Name", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
        Field::new("small", DataType::Int32, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("day", DataType::Date32, true),
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("price", DataType::Decimal128(20, 4), true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.to_vec())),
        Arc::new(StringArray::from(vec![
            Some("alpha"),
            Some("Beta"),
            None,
            Some("gamma, \"quoted\""),
        ])),
        Arc::new(Float64Array::from(vec![
            Some(0.1),
            Some(2.5),
            Some(-1e10),
            None,
        ])),
        Arc::new(Int32Array::from(vec![Some(1), Some(2), Some(3), Some(4)])),
        Arc::new(BooleanArray::from(vec![
            Some(true),
            Some(false),
            None,
            Some(true),
        ])),
        Arc::new(Date32Array::from(vec![
            Some(0),
            Some(19_000),
            None,
            Some(-1),
        ])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![
                Some(1_700_000_000_123_456),
                None,
                Some(0),
                Some(-1),
            ])
            .with_timezone("UTC"),
        ),
        Arc::new(
            Decimal128Array::from(vec![Some(123_456_789_012_345_678), Some(1), None, Some(-5)])
                .with_precision_and_scale(20, 4)
                .expect("decimal"),
        ),
    ];
    parquet_bytes(
        &RecordBatch::try_new(Arc::new(schema), columns).expect("batch"),
        None,
    )
}

async fn with_table(app: &TestApp) -> TestUser {
    let user = app.signed_up_user().await;
    let res = app
        .create_table(&user.access, typed_file(), "things", None)
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    user
}

async fn rows(app: &TestApp, user: &TestUser, query: &str) -> Value {
    let res = app
        .get_as(&user.access, &format!("/tables/things/rows/?{query}"))
        .await;
    assert_eq!(res.status(), StatusCode::OK, "{query}");
    res.json().await.expect("json")
}

#[tokio::test]
async fn json_keeps_int64_exact_numeric_as_strings_and_timestamps_in_rfc3339() {
    let app = spawn_app().await;
    let user = with_table(&app).await;

    let body = rows(&app, &user, "").await;

    let first = &body["rows"][0];
    assert_eq!(
        first["id"].to_string(),
        "9007199254740993",
        "int64 beyond 2^53 stays exact"
    );
    assert_eq!(first["Name"], "alpha");
    assert_eq!(first["score"], 0.1);
    assert_eq!(first["ok"], true);
    assert_eq!(first["day"], "1970-01-01");
    assert_eq!(first["at"], "2023-11-14T22:13:20.123456+00:00");
    assert_eq!(
        first["price"], "12345678901234.5678",
        "numeric goes out as a string"
    );
    assert_eq!(body["rows"][3]["id"], Value::Null);
    assert_eq!(body["rows"][3]["Name"], "gamma, \"quoted\"");
    assert_eq!(body["rows"][3]["day"], "1969-12-31");
    assert_eq!(body["next_cursor"], Value::Null);
}

#[tokio::test]
async fn a_parquet_export_round_trips_value_by_value() {
    let app = spawn_app().await;
    let user = with_table(&app).await;
    let original = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(typed_file()))
        .expect("reader")
        .build()
        .expect("reader")
        .next()
        .expect("a batch")
        .expect("batch");

    let res = app
        .get_as(&user.access, "/tables/things/rows/?format=parquet")
        .await;

    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["content-disposition"],
        "attachment; filename=\"things.parquet\""
    );
    let exported = res.bytes().await.expect("bytes");
    let batch = ParquetRecordBatchReaderBuilder::try_new(exported)
        .expect("the export is Parquet")
        .build()
        .expect("reader")
        .next()
        .expect("a batch")
        .expect("batch");
    assert_eq!(batch.num_rows(), original.num_rows());
    for (i, field) in original.schema().fields().iter().enumerate() {
        let theirs = original.column(i);
        let ours = batch.column_by_name(field.name()).expect("same column");
        let ours = arrow::compute::cast(ours, theirs.data_type()).expect("same type family");
        assert_eq!(ours.to_data(), theirs.to_data(), "column {}", field.name());
    }
    // And back in: the export uploads as a table equal to the first.
    let res = app
        .create_table(&user.access, batch_bytes(&batch), "again", None)
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let again: Value = app
        .get_as(&user.access, "/tables/again/rows/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["rows"], rows(&app, &user, "").await["rows"]);
}

fn batch_bytes(batch: &RecordBatch) -> Vec<u8> {
    parquet_bytes(batch, None)
}

#[tokio::test]
async fn csv_has_a_header_quotes_where_needed_and_a_file_name() {
    let app = spawn_app().await;
    let user = with_table(&app).await;

    let res = app
        .get_as(
            &user.access,
            "/tables/things/rows/?format=csv&select=id,Name,price",
        )
        .await;

    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/csv")
    );
    assert_eq!(
        res.headers()["content-disposition"],
        "attachment; filename=\"things.csv\""
    );
    let text = res.text().await.expect("text");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "id,Name,price");
    assert_eq!(lines[1], "9007199254740993,alpha,12345678901234.5678");
    assert_eq!(lines[3], "3,,");
    assert_eq!(lines[4], r#","gamma, ""quoted""",-0.0005"#);
}

#[tokio::test]
async fn filters_select_and_order_work_like_postgrest() {
    let app = spawn_app().await;
    let user = with_table(&app).await;
    let ids = |body: &Value| -> Vec<Value> {
        body["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r["small"].clone())
            .collect()
    };

    assert_eq!(
        ids(&rows(&app, &user, "small=gt.2").await),
        [json!(3), json!(4)]
    );
    assert_eq!(
        ids(&rows(&app, &user, "small=gte.2&small=lt.4").await),
        [json!(2), json!(3)]
    );
    assert_eq!(
        ids(&rows(&app, &user, "small=neq.1&ok=eq.true").await),
        [json!(4)]
    );
    assert_eq!(
        ids(&rows(&app, &user, "Name=like.*a").await),
        [json!(1), json!(2)]
    );
    assert_eq!(ids(&rows(&app, &user, "Name=ilike.BETA").await), [json!(2)]);
    assert_eq!(
        ids(&rows(&app, &user, "small=in.(1,4)").await),
        [json!(1), json!(4)]
    );
    assert_eq!(ids(&rows(&app, &user, "Name=is.null").await), [json!(3)]);
    assert_eq!(
        ids(&rows(&app, &user, "id=is.notnull&order=small.desc").await),
        [json!(3), json!(2), json!(1)]
    );
    assert_eq!(
        ids(&rows(&app, &user, "day=lte.1970-01-01").await),
        [json!(1), json!(4)]
    );
    assert_eq!(
        ids(&rows(&app, &user, "order=score.desc.nullslast").await),
        [json!(2), json!(1), json!(3), json!(4)]
    );
    let picked = rows(&app, &user, "select=Name,small&small=eq.2").await;
    assert_eq!(picked["rows"], json!([{"Name": "Beta", "small": 2}]));
    // A filter value is bound, never spliced: this is just a string that matches nothing.
    assert!(
        rows(&app, &user, "Name=eq.x' OR '1'='1").await["rows"]
            .as_array()
            .expect("rows")
            .is_empty()
    );
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_problem() {
    let app = spawn_app().await;
    let user = with_table(&app).await;

    let cases = [
        ("nope=eq.1", "unknown_column"),
        ("select=id,nope", "unknown_column"),
        ("order=nope", "unknown_column"),
        ("small=between.1", "invalid_filter"),
        ("small=gt.abc", "invalid_filter"),
        ("limit=0", "invalid_parameter"),
        ("limit=100000", "invalid_parameter"),
        ("format=xml", "invalid_format"),
        ("cursor=forged", "invalid_cursor"),
        ("order=small.sideways", "invalid_order"),
    ];
    for (query, code) in cases {
        let res = app
            .get_as(&user.access, &format!("/tables/things/rows/?{query}"))
            .await;
        assert_problem(res, StatusCode::BAD_REQUEST, code).await;
    }
}

#[tokio::test]
async fn cursor_pages_cover_every_row_once_and_pages_follow_page_and_size() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let n = 1000i64;
    let file = parquet_bytes(
        &RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from_iter_values(0..n))],
        )
        .expect("batch"),
        None,
    );
    assert_eq!(
        app.create_table(&user.access, file, "numbers", None)
            .await
            .status(),
        StatusCode::CREATED
    );

    for order in ["", "&order=n.desc"] {
        let mut seen = HashSet::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/tables/numbers/rows/?limit=128{order}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let body: Value = app
                .get_as(&user.access, &path)
                .await
                .json()
                .await
                .expect("json");
            for row in body["rows"].as_array().expect("rows") {
                assert!(
                    seen.insert(row["n"].as_i64().expect("n")),
                    "a row came twice"
                );
            }
            pages += 1;
            match body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen.len() as i64, n, "order {order:?}");
        assert_eq!(pages, 8);
    }

    let page: Value = app
        .get_as(&user.access, "/tables/numbers/rows/?page=3&size=15&order=n")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["rows"][0]["n"], 30);
    assert_eq!(page["rows"].as_array().expect("rows").len(), 15);
    assert_eq!(page["has_more"], true);
}

#[tokio::test]
async fn another_tenants_rows_are_404() {
    let app = spawn_app().await;
    let _owner = with_table(&app).await;
    let other = app.signed_up_user().await;

    for format in ["json", "csv", "parquet"] {
        let res = app
            .get_as(
                &other.access,
                &format!("/tables/things/rows/?format={format}"),
            )
            .await;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
}

async fn post_rows(
    app: &TestApp,
    user: &TestUser,
    table: &str,
    query: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/tables/{table}/rows/{query}")))
        .header("Authorization", format!("Bearer {}", user.access))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .expect("request")
}

async fn post_parquet(
    app: &TestApp,
    user: &TestUser,
    table: &str,
    mode: Option<&str>,
    file: Vec<u8>,
) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(file).file_name("more.parquet"),
    );
    if let Some(mode) = mode {
        form = form.text("mode", mode.to_owned());
    }
    app.client
        .post(app.url(&format!("/tables/{table}/rows/")))
        .header("Authorization", format!("Bearer {}", user.access))
        .multipart(form)
        .send()
        .await
        .expect("request")
}

async fn change_count(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar("SELECT change_count FROM tinydevcrm.tables WHERE table_name = $1")
        .bind(table)
        .fetch_one(&app.pool)
        .await
        .expect("registry row")
}

#[tokio::test]
async fn more_parquet_rows_append_or_replace_and_bump_the_change_counter() {
    let app = spawn_app().await;
    let user = with_table(&app).await;
    let before = change_count(&app, "things").await;

    let res = post_parquet(&app, &user, "things", None, typed_file()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        (
            body["mode"].as_str(),
            body["rows_written"].as_i64(),
            body["row_count"].as_i64()
        ),
        (Some("append"), Some(4), Some(8))
    );

    // Replaced by different rows: only the new ones are there.
    let fresh = typed_file_with_ids([Some(101), Some(102), Some(103), Some(104)]);
    let res = post_parquet(&app, &user, "things", Some("replace"), fresh).await;
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        (body["mode"].as_str(), body["row_count"].as_i64()),
        (Some("replace"), Some(4))
    );
    let ids: Vec<Option<i64>> = rows(&app, &user, "order=id").await["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["id"].as_i64())
        .collect();
    assert_eq!(ids, [Some(101), Some(102), Some(103), Some(104)]);
    assert_eq!(change_count(&app, "things").await, before + 2);
}

#[tokio::test]
async fn a_failed_replace_keeps_the_previous_rows() {
    let app = spawn_app().await;
    let user = with_table(&app).await;
    let wrong = parquet_bytes(
        &RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "other",
                DataType::Int64,
                true,
            )])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .expect("batch"),
        None,
    );

    let res = post_parquet(&app, &user, "things", Some("replace"), wrong).await;

    assert_problem(res, StatusCode::BAD_REQUEST, "column_mismatch").await;
    assert_eq!(
        rows(&app, &user, "").await["rows"]
            .as_array()
            .expect("rows")
            .len(),
        4
    );
    let res = post_parquet(&app, &user, "things", Some("sideways"), typed_file()).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_mode").await;
}

#[tokio::test]
async fn json_and_ndjson_rows_feed_a_table_like_the_sim_usage_stream() {
    let app = spawn_app().await;
    let user = with_table(&app).await;

    let array = json!([
        {"id": 10, "Name": "sim-89440001", "small": 5, "ok": true, "day": "2020-02-01", "at": "2020-02-01T10:00:00Z", "price": "1.25"},
        {"id": 11, "small": 6}
    ]);
    let res = post_rows(
        &app,
        &user,
        "things",
        "",
        "application/json",
        array.to_string().into_bytes(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK, "{:?}", res.text().await);
    let ndjson = "{\"id\": 12, \"small\": 7, \"Name\": 42}\n{\"id\": 13, \"small\": 8}\n";
    let res = post_rows(
        &app,
        &user,
        "things",
        "",
        "application/x-ndjson",
        ndjson.as_bytes().to_vec(),
    )
    .await;
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["rows_written"], 2);
    assert_eq!(body["row_count"], 8);

    let added = rows(&app, &user, "small=gte.5&order=small").await;
    assert_eq!(added["rows"][0]["at"], "2020-02-01T10:00:00+00:00");
    assert_eq!(added["rows"][0]["price"], "1.2500");
    assert_eq!(added["rows"][1]["Name"], Value::Null);
    assert_eq!(added["rows"][2]["Name"], "42");
}

#[tokio::test]
async fn bad_json_rows_are_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    let user = with_table(&app).await;
    let cases: [(&str, &str, &str); 5] = [
        (
            "application/json",
            r#"[{"id": 1, "nope": 2}]"#,
            "column_mismatch",
        ),
        (
            "application/json",
            r#"[{"id": 1}, {"small": 3000000000}]"#,
            "invalid_value",
        ),
        ("application/json", r#"[1, 2]"#, "invalid_value"),
        ("application/json", r#"{"id": "#, "invalid_json"),
        (
            "application/x-ndjson",
            "{\"id\": 1}\nnot json\n",
            "invalid_json",
        ),
    ];
    for (content_type, body, code) in cases {
        let res = post_rows(
            &app,
            &user,
            "things",
            "",
            content_type,
            body.as_bytes().to_vec(),
        )
        .await;
        assert_problem(res, StatusCode::BAD_REQUEST, code).await;
    }
    let res = post_rows(&app, &user, "things", "", "text/plain", b"1,2".to_vec()).await;
    assert_problem(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert_eq!(
        rows(&app, &user, "").await["rows"]
            .as_array()
            .expect("rows")
            .len(),
        4
    );
    let other = app.signed_up_user().await;
    let res = post_rows(
        &app,
        &other,
        "things",
        "",
        "application/json",
        b"[]".to_vec(),
    )
    .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_json_row_with_a_bad_value_names_row_column_value_and_type_in_the_problem() {
    let app = spawn_app().await;
    let user = with_table(&app).await;
    for (content_type, body) in [
        (
            "application/json",
            r#"[{"id": 1}, {"id": 2, "day": "31/01/2026"}]"#,
        ),
        (
            "application/x-ndjson",
            "{\"id\": 1}\n\n{\"id\": 2, \"day\": \"31/01/2026\"}\n",
        ),
    ] {
        let res = post_rows(
            &app,
            &user,
            "things",
            "",
            content_type,
            body.as_bytes().to_vec(),
        )
        .await;
        let problem = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_value").await;
        assert_eq!(
            problem["detail"],
            r#"row 2, column "day": "31/01/2026" is not a valid date; expected a date such as "2026-01-31""#,
            "{content_type}"
        );
        assert_eq!(
            (
                &problem["row"],
                &problem["column"],
                &problem["value"],
                &problem["expected_type"]
            ),
            (
                &json!(2),
                &json!("day"),
                &json!("\"31/01/2026\""),
                &json!("date")
            ),
            "{content_type}"
        );
    }
    assert_eq!(
        rows(&app, &user, "").await["rows"]
            .as_array()
            .expect("rows")
            .len(),
        4
    );
}

#[tokio::test]
async fn a_bad_filter_on_a_csv_or_parquet_export_is_a_400_not_a_broken_download() {
    let app = spawn_app().await;
    let user = with_table(&app).await;

    for format in ["csv", "parquet", "json"] {
        for (query, code) in [
            ("no_such_column=eq.1", "unknown_column"),
            ("id=between.1", "invalid_filter"),
            ("order=nowhere", "unknown_column"),
        ] {
            let res = app
                .get_as(
                    &user.access,
                    &format!("/tables/things/rows/?format={format}&{query}"),
                )
                .await;
            let status = res.status();
            let content_type = res.headers()["content-type"]
                .to_str()
                .expect("ascii")
                .to_owned();
            let body: Value = res.json().await.expect("problem JSON, not a file");
            assert_eq!(
                (status, body["code"].as_str()),
                (StatusCode::BAD_REQUEST, Some(code)),
                "{format} {query}: {body}"
            );
            assert!(
                content_type.starts_with("application/problem+json"),
                "{format} {query}: {content_type}"
            );
        }
    }
}

#[tokio::test]
async fn a_column_type_the_converter_cannot_store_is_unsupported_type_naming_the_column() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    // Decimals wider than 38 digits have no conversion path (PostgreSQL's numeric could hold
    // them; the COPY encoder cannot).
    let huge =
        arrow::array::Decimal256Array::from(vec![Some(arrow::datatypes::i256::from_i128(5))])
            .with_precision_and_scale(50, 2)
            .expect("decimal");
    let file = parquet_bytes(
        &RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("huge", DataType::Decimal256(50, 2), true),
            ])),
            vec![Arc::new(Int64Array::from(vec![1])), Arc::new(huge)],
        )
        .expect("batch"),
        None,
    );

    let res = app.create_table(&user.access, file, "odd", None).await;

    let body = assert_problem(res, StatusCode::BAD_REQUEST, "unsupported_type").await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("\"huge\"")),
        "{body}"
    );
    assert_eq!(
        app.get_as(&user.access, "/tables/odd/").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_rows_body_over_the_limit_is_413_and_adds_nothing() {
    let app = crate::helpers::spawn_app_with(|s| s.rows_body_limit_bytes = 1024).await;
    let user = with_table(&app).await;
    let many: Vec<Value> = (0..100)
        .map(|i| json!({"id": i, "Name": "padding padding"}))
        .collect();

    let res = app
        .client
        .post(app.url("/tables/things/rows/"))
        .header("Authorization", format!("Bearer {}", user.access))
        .json(&many)
        .send()
        .await
        .expect("request");

    let body = assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains("1024")),
        "{body}"
    );
    assert_eq!(
        rows(&app, &user, "").await["rows"].as_array().map(Vec::len),
        Some(4)
    );
}

#[tokio::test]
async fn a_reader_during_a_replace_sees_all_old_rows_or_all_new_ones() {
    let app = spawn_app().await;
    let user = with_table(&app).await;
    let old: Vec<Option<i64>> = vec![None, Some(2), Some(3), Some(9_007_199_254_740_993)];
    let new: Vec<Option<i64>> = vec![Some(101), Some(102), Some(103), Some(104)];
    let ids = |rows: Value| -> Vec<Option<i64>> {
        let mut ids: Vec<Option<i64>> = rows["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                r["id"]
                    .as_i64()
                    .or_else(|| r["id"].as_str().and_then(|s| s.parse().ok()))
            })
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(rows(&app, &user, "").await), old);

    // Readers keep reading while one replace runs.
    let replace = post_parquet(
        &app,
        &user,
        "things",
        Some("replace"),
        typed_file_with_ids([Some(101), Some(102), Some(103), Some(104)]),
    );
    // Readers start before the replace and read until they see its result.
    let readers = async {
        let mut seen = Vec::new();
        while seen.last() != Some(&new) && seen.len() < 2000 {
            seen.push(ids(rows(&app, &user, "").await));
        }
        seen
    };
    let (res, seen) = tokio::join!(replace, readers);

    assert_eq!(res.status(), StatusCode::OK);
    for ids in &seen {
        assert!(
            *ids == old || *ids == new,
            "a reader saw a half-replaced table: {ids:?}"
        );
    }
    assert_eq!(ids(rows(&app, &user, "").await), new);
}

#[tokio::test]
async fn a_read_that_runs_past_the_statement_timeout_is_query_timeout() {
    // Arrange: reads may take one second; the table is locked for three.
    let app =
        crate::helpers::spawn_app_with(|s| s.tenant_statement_timeout = Duration::from_secs(1))
            .await;
    let user = app.user_with_view().await;
    let read = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.get_as(&user.access, "/tables/sometable/rows/").await
    };

    // Act
    let ((), res) = tokio::join!(
        crate::helpers::hold_table_lock(&app, &user, Duration::from_secs(3)),
        read
    );

    // Assert
    assert_problem(res, StatusCode::BAD_REQUEST, "query_timeout").await;
    assert_eq!(
        app.get_as(&user.access, "/tables/sometable/rows/")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_numeric_column_without_a_scale_refuses_fractions_instead_of_rounding_them() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let file = parquet_bytes(
        &RecordBatch::try_from_iter([(
            "amount",
            Arc::new(StringArray::from(vec!["7"])) as ArrayRef,
        )])
        .expect("batch"),
        None,
    );
    let columns = r#"[{"column_name": "amount", "column_type": "numeric"}]"#;
    let res = app
        .create_table(&user.access, file, "prices", Some(columns))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);

    // Every spelling of a fraction: a JSON number, a string, trailing zeros, a negative one.
    for (i, value) in [json!(1.5), json!("1.5"), json!("0.0010"), json!(-2.25)]
        .into_iter()
        .enumerate()
    {
        let rows = json!([{"amount": 1}, {"amount": value}]);
        let res = app
            .post_as(&user.access, "/tables/prices/rows/", &rows)
            .await;
        let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_value").await;
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("amount")
                && detail.contains("row 2")
                && detail.contains("numeric(12,4)"),
            "case {i} ({value}): {detail}"
        );
    }
    // Whole numbers, however written, are kept; nothing of the refused uploads was.
    let rows = json!([{"amount": 2}, {"amount": "3.000"}, {"amount": "-4"}]);
    let res = app
        .post_as(&user.access, "/tables/prices/rows/", &rows)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let page: Value = app
        .get_as(&user.access, "/tables/prices/rows/")
        .await
        .json()
        .await
        .expect("json");
    let amounts: Vec<&str> = page["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["amount"].as_str().expect("numeric as text"))
        .collect();
    assert_eq!(amounts, ["7", "2", "3", "-4"]);
}

#[tokio::test]
async fn an_upload_that_waits_past_the_lock_timeout_is_a_409_and_changes_nothing() {
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let before: Value = app
        .get_as(&user.access, "/tables/sometable/")
        .await
        .json()
        .await
        .expect("json");

    // An administrator's lock outlasts the tenant's 10 s lock timeout.
    let lock = crate::helpers::hold_table_lock(&app, &user, Duration::from_secs(14));
    let upload = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        app.post_as(
            &user.access,
            "/tables/sometable/rows/?mode=replace",
            &json!([{"SomeNumber": 1}]),
        )
        .await
    };
    let ((), res) = tokio::join!(lock, upload);

    let body = assert_problem(res, StatusCode::CONFLICT, "lock_timeout").await;
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains("retry")),
        "{body}"
    );
    let after: Value = app
        .get_as(&user.access, "/tables/sometable/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(after["row_count"], before["row_count"]);
}
