//! Awkward but legal names and values, and malformed requests: each is answered correctly or
//! with a 4xx problem that names what to change, never with a 500.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Decimal128Array, Float32Array, Float64Array, Int64Array, RecordBatch,
};
use arrow::datatypes::{Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_problem, parquet_bytes, spawn_app};

fn file(columns: Vec<(&str, ArrayRef)>) -> Vec<u8> {
    let schema = Schema::new(
        columns
            .iter()
            .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    let arrays = columns.into_iter().map(|(_, array)| array).collect();
    parquet_bytes(
        &RecordBatch::try_new(Arc::new(schema), arrays).expect("batch"),
        None,
    )
}

async fn post_rows(
    app: &TestApp,
    user: &TestUser,
    path: &str,
    content_type: &str,
    body: &str,
) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("Authorization", format!("Bearer {}", user.access))
        .header("Content-Type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .expect("request")
}

async fn create_view(app: &TestApp, user: &TestUser, name: &str, sql: &str) {
    app.created(
        &user.access,
        "/views/create/",
        json!({"view_name": name, "sql_query": sql}),
    )
    .await;
}

async fn ok_json(res: reqwest::Response) -> Value {
    let status = res.status();
    let body = res.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).expect("json")
}

/// Every alias the rows statement uses, and names that look like its parts.
const ALIAS_LIKE_NAMES: [&str; 8] = ["x", "t", "r", "row", "X", "to_json", "text", "tid"];

#[tokio::test]
async fn columns_named_like_the_aliases_of_the_rows_statement_read_filter_order_and_export() {
    // Arrange
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let columns: Vec<(&str, ArrayRef)> = ALIAS_LIKE_NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let offset = i64::try_from(i).expect("small");
            let array: ArrayRef = Arc::new(Int64Array::from(vec![offset, offset + 10]));
            (*name, array)
        })
        .collect();
    let res = app
        .create_table(&user.access, file(columns), "aliases", None)
        .await;
    assert_eq!(res.status(), StatusCode::CREATED, "{:?}", res.text().await);
    create_view(
        &app,
        &user,
        "aliasview",
        r#"SELECT "x", "t", "r", "row" FROM aliases"#,
    )
    .await;

    // Act + Assert: the table, every way it is read.
    let body = ok_json(app.get_as(&user.access, "/tables/aliases/rows/").await).await;
    assert_eq!(body["rows"][0]["x"], 0);
    assert_eq!(body["rows"][1]["tid"], 17);
    for name in ALIAS_LIKE_NAMES {
        let query = serde_urlencoded::to_string([
            ("select", name.to_owned()),
            (name, "gte.0".to_owned()),
            ("order", format!("{name}.desc")),
        ])
        .expect("query");
        let body = ok_json(
            app.get_as(&user.access, &format!("/tables/aliases/rows/?{query}"))
                .await,
        )
        .await;
        let rows = body["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 2, "{name}");
        assert_eq!(rows[0].as_object().expect("row").len(), 1, "{name}");
        assert!(rows[0][name].as_i64() > rows[1][name].as_i64(), "{name}");
    }
    let res = app
        .get_as(&user.access, "/tables/aliases/rows/?format=csv&x=eq.10")
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let csv = res.text().await.expect("csv");
    assert!(csv.starts_with("x,t,r,row,X,to_json,text,tid\n"), "{csv}");
    assert!(csv.contains("\n10,11,12,13,14,15,16,17\n"), "{csv}");
    let res = app
        .get_as(&user.access, "/tables/aliases/rows/?format=parquet")
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let bytes = res.bytes().await.expect("parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("parquet")
        .build()
        .expect("reader");
    let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(rows, 2);

    // And the view over it.
    let body = ok_json(
        app.get_as(&user.access, "/views/aliasview/rows/?x=eq.10&order=t")
            .await,
    )
    .await;
    assert_eq!(
        body["rows"],
        json!([{"x": 10, "t": 11, "r": 12, "row": 13}])
    );
}

#[tokio::test]
async fn system_column_names_in_any_case_are_refused_naming_the_column() {
    // Arrange
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    for name in [
        "ctid", "xmin", "xmax", "cmin", "cmax", "tableoid", "CTID", "XMin", "TableOid",
    ] {
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("id", Arc::new(Int64Array::from(vec![1]))),
            (name, Arc::new(Int64Array::from(vec![2]))),
        ];
        let declared = format!(
            r#"[{{"column_name":"id","column_type":"bigint"}},{{"column_name":"{name}","column_type":"bigint"}}]"#
        );
        for declared in [None, Some(declared.as_str())] {
            // Act
            let res = app
                .create_table(&user.access, file(columns.clone()), "sys", declared)
                .await;

            // Assert
            let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_column_name").await;
            let detail = body["detail"].as_str().expect("detail");
            assert!(
                detail.contains(&format!("{name:?}")) && detail.contains("rename"),
                "{detail}"
            );
        }
    }
    let res = app.get_as(&user.access, "/tables/sys/").await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}
