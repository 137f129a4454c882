//! Awkward but legal names and values, and malformed requests: each is answered correctly or
//! with a 4xx problem that names what to change, never with a 500.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Decimal128Array, Float32Array, Float64Array, Int64Array, StringArray,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_problem, parquet_of, spawn_app};

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
        .create_table(&user.access, parquet_of(columns), "aliases", None)
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
                .create_table(&user.access, parquet_of(columns.clone()), "sys", declared)
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
    // A view cannot have one either; PostgreSQL's refusal is the client's error.
    let res = app
        .post_as(
            &user.access,
            "/views/create/",
            &json!({"view_name": "sysview", "sql_query": "SELECT 1 AS ctid"}),
        )
        .await;
    assert!(res.status().is_client_error(), "{:?}", res.text().await);
}

#[tokio::test]
async fn filtering_or_ordering_a_json_view_column_is_a_400_naming_it() {
    // Arrange
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    create_view(
        &app,
        &user,
        "jsonview",
        r#"SELECT to_json("SomeString") AS doc, to_jsonb("SomeString") AS docb, "SomeNumber" AS n FROM sometable"#,
    )
    .await;

    // Act + Assert: json has no equality or ordering operator.
    for query in [
        "doc=eq.%22s1%22",
        "doc=neq.%22s1%22",
        "doc=gt.%22s1%22",
        "doc=in.(1,2)",
        "order=doc",
        "order=n,doc.desc",
    ] {
        for format in ["json", "csv", "parquet"] {
            let res = app
                .get_as(
                    &user.access,
                    &format!("/views/jsonview/rows/?{query}&format={format}"),
                )
                .await;
            let body = assert_problem(res, StatusCode::BAD_REQUEST, "unsupported_operation").await;
            let detail = body["detail"].as_str().expect("detail");
            assert!(
                detail.contains("\"doc\"") && detail.contains("jsonb"),
                "{query}: {detail}"
            );
        }
    }
    // What json does support, and jsonb, still work.
    for query in [
        "doc=like.*s1*",
        "doc=is.null",
        "docb=eq.%22s1%22",
        "order=docb",
    ] {
        let res = app
            .get_as(&user.access, &format!("/views/jsonview/rows/?{query}"))
            .await;
        assert_eq!(res.status(), StatusCode::OK, "{query}");
    }
}

#[tokio::test]
async fn ordering_by_a_type_without_an_ordering_operator_is_a_400_naming_the_column() {
    // Arrange: point has no default ordering (and no equality) operator.
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    create_view(
        &app,
        &user,
        "pointview",
        r#"SELECT ('(' || "SomeNumber" || ',1)')::point AS p, "SomeNumber" AS n FROM sometable"#,
    )
    .await;

    // Act
    let res = app
        .get_as(&user.access, "/views/pointview/rows/?order=p")
        .await;

    // Assert
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "unsupported_operation").await;
    let detail = body["detail"].as_str().expect("detail");
    assert!(detail.contains("\"p\""), "{detail}");
    // Equality on its text still works, as for every type the API does not know.
    let res = app
        .get_as(&user.access, "/views/pointview/rows/?p=eq.(1,1)")
        .await;
    assert_eq!(ok_json(res).await["rows"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_parquet_export_of_values_arrow_cannot_hold_is_a_400_naming_column_row_and_value() {
    // Arrange
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let cases = [
        (
            "infts",
            "SELECT 'infinity'::timestamptz AS at",
            "at",
            "infinity",
        ),
        (
            "ninfts",
            "SELECT n, CASE WHEN n = 3 THEN '-infinity'::timestamp ELSE now()::timestamp END AS at FROM generate_series(1, 5) AS n",
            "at",
            "-infinity",
        ),
        ("infdate", "SELECT 'infinity'::date AS d", "d", "infinity"),
        (
            "fardate",
            "SELECT '294277-01-01'::date AS d",
            "d",
            "294277-01-01",
        ),
        ("nannum", "SELECT 'NaN'::numeric(10,2) AS n", "n", "NaN"),
        ("midnight", "SELECT '24:00'::time AS t", "t", "24:00:00"),
    ];
    for (view, sql, column, value) in cases {
        create_view(&app, &user, view, sql).await;

        // Act
        let res = app
            .get_as(&user.access, &format!("/views/{view}/rows/?format=parquet"))
            .await;

        // Assert
        let body = assert_problem(res, StatusCode::BAD_REQUEST, "unrepresentable_value").await;
        let detail = body["detail"].as_str().expect("detail");
        assert!(
            detail.contains(&format!("{column:?}"))
                && detail.contains(value)
                && detail.contains("row ")
                && detail.contains("format=csv"),
            "{view}: {detail}"
        );
        if view == "ninfts" {
            assert!(detail.contains("row 3"), "{detail}");
        }
        // CSV and JSON carry the same values as text.
        for format in ["csv", "json"] {
            let res = app
                .get_as(
                    &user.access,
                    &format!("/views/{view}/rows/?format={format}"),
                )
                .await;
            assert_eq!(res.status(), StatusCode::OK, "{view} as {format}");
            assert!(res.text().await.expect("text").contains(value), "{view}");
        }
    }
    // Special floats are values Parquet has.
    create_view(
        &app,
        &user,
        "floats",
        "SELECT 'NaN'::float8 AS f, '-Infinity'::real AS g",
    )
    .await;
    let res = app
        .get_as(&user.access, "/views/floats/rows/?format=parquet")
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    // Filtering the value out makes the Parquet export work.
    let res = app
        .get_as(&user.access, "/views/ninfts/rows/?format=parquet&n=neq.3")
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_invalid_json_with_line_and_column() {
    // Arrange
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let columns: Vec<(&str, ArrayRef)> = vec![("id", Arc::new(Int64Array::from(vec![1])))];
    let res = app
        .create_table(&user.access, parquet_of(columns), "t1", None)
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);

    for (content_type, body, position) in [
        (
            "application/json",
            "[{\"id\": 1},\n {\"id\": }]",
            "line 2 column 9",
        ),
        ("application/json", "{\"id\": ", "line 1 column 7"),
        (
            "application/x-ndjson",
            "{\"id\": 1}\n{\"id\": 2\n",
            "line 2 column 8",
        ),
        (
            "application/x-ndjson",
            "{\"id\": 1}\n\nnot json\n",
            "line 3 column 2",
        ),
    ] {
        // Act
        let res = post_rows(&app, &user, "/tables/t1/rows/", content_type, body).await;

        // Assert
        let problem = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_json").await;
        let detail = problem["detail"].as_str().expect("detail");
        assert!(detail.contains(position), "{body:?}: {detail}");
    }
    // Bytes that are not UTF-8 are placed the same way.
    let res = app
        .client
        .post(app.url("/tables/t1/rows/"))
        .header("Authorization", format!("Bearer {}", user.access))
        .header("Content-Type", "application/x-ndjson")
        .body(b"{\"id\": 1}\n{\"id\": \xff}\n".to_vec())
        .send()
        .await
        .expect("request");
    let problem = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_json").await;
    let detail = problem["detail"].as_str().expect("detail");
    assert!(detail.contains("line 2 column 8"), "{detail}");
}

#[tokio::test]
async fn an_unknown_upload_mode_is_invalid_mode_listing_the_modes() {
    // Arrange
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let columns: Vec<(&str, ArrayRef)> = vec![("id", Arc::new(Int64Array::from(vec![1])))];
    let res = app
        .create_table(&user.access, parquet_of(columns), "t1", None)
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);

    for mode in ["sideways", "APPEND", ""] {
        // Act
        let res = post_rows(
            &app,
            &user,
            &format!("/tables/t1/rows/?mode={mode}"),
            "application/json",
            r#"[{"id": 2}]"#,
        )
        .await;

        // Assert
        let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_mode").await;
        let detail = body["detail"].as_str().expect("detail");
        assert!(
            detail.contains("mode") && detail.contains("append") && detail.contains("replace"),
            "{detail}"
        );
    }
    let res = post_rows(
        &app,
        &user,
        "/tables/t1/rows/?mode=replace",
        "application/json",
        r#"[{"id": 2}]"#,
    )
    .await;
    assert_eq!(ok_json(res).await["row_count"], 1);
}

#[tokio::test]
async fn a_fraction_written_to_an_integer_column_is_refused_naming_row_column_and_value() {
    // Arrange
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("s", Arc::new(Int64Array::from(vec![1]))),
        ("i", Arc::new(Int64Array::from(vec![1]))),
        ("b", Arc::new(Int64Array::from(vec![1]))),
    ];
    let declared = r#"[{"column_name":"s","column_type":"smallint"},{"column_name":"i","column_type":"integer"},{"column_name":"b","column_type":"bigint"}]"#;
    let res = app
        .create_table(&user.access, parquet_of(columns), "ints", Some(declared))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);

    for (column, ty) in [("s", "smallint"), ("i", "integer"), ("b", "bigint")] {
        for value in ["1.9", "-0.5", "\"1.9\"", "\" 7.25 \""] {
            let array = format!(r#"[{{"{column}": 2}}, {{"{column}": {value}}}]"#);
            let ndjson = format!("{{\"{column}\": 2}}\n{{\"{column}\": {value}}}\n");
            for (content_type, body) in [
                ("application/json", array),
                ("application/x-ndjson", ndjson),
            ] {
                // Act
                let res = post_rows(&app, &user, "/tables/ints/rows/", content_type, &body).await;

                // Assert
                let problem = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_value").await;
                let detail = problem["detail"].as_str().expect("detail");
                let shown = value.trim_matches('"');
                assert!(
                    detail.contains(&format!("{column:?}"))
                        && detail.contains("row 2")
                        && detail.contains(shown)
                        && detail.contains(ty),
                    "{body}: {detail}"
                );
            }
        }
        // An integral value written with a fraction part is the integer.
        let res = post_rows(
            &app,
            &user,
            "/tables/ints/rows/",
            "application/json",
            &format!(r#"[{{"{column}": 2.0}}, {{"{column}": "3"}}]"#),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK, "{:?}", res.text().await);
    }
    assert_eq!(
        app.column_texts("ints", &user.access, "b").await,
        vec![
            Some("1".to_owned()),
            None,
            None,
            None,
            None,
            Some("2".to_owned()),
            Some("3".to_owned())
        ]
    );

    // Parquet: floats and decimals declared as integers.
    let floats: Vec<(&str, ArrayRef)> = vec![
        ("s", Arc::new(Float32Array::from(vec![1.0, 1.9]))),
        ("i", Arc::new(Float64Array::from(vec![1.0, 2.0]))),
        ("b", Arc::new(Float64Array::from(vec![3.0, 4.0]))),
    ];
    let decimals: Vec<(&str, ArrayRef)> = vec![
        ("s", Arc::new(Int64Array::from(vec![1, 2]))),
        ("i", Arc::new(Int64Array::from(vec![1, 2]))),
        (
            "b",
            Arc::new(
                Decimal128Array::from(vec![300, 190])
                    .with_precision_and_scale(10, 2)
                    .expect("decimal"),
            ),
        ),
    ];
    for (columns, column, value) in [(floats, "s", "1.9"), (decimals, "b", "1.90")] {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(parquet_of(columns)).file_name("more.parquet"),
        );
        let res = app
            .client
            .post(app.url("/tables/ints/rows/"))
            .header("Authorization", format!("Bearer {}", user.access))
            .multipart(form)
            .send()
            .await
            .expect("request");
        let problem = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_value").await;
        let detail = problem["detail"].as_str().expect("detail");
        assert!(
            detail.contains(&format!("{column:?}"))
                && detail.contains("row 2")
                && detail.contains(value),
            "{detail}"
        );
    }
}

#[tokio::test]
async fn a_json_rows_body_that_is_not_utf8_is_invalid_json_naming_the_byte_offset() {
    // Arrange
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from(vec![1]))),
        ("name", Arc::new(StringArray::from(vec!["a"]))),
    ];
    let res = app
        .create_table(&user.access, parquet_of(columns), "t1", None)
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);

    for (content_type, body, offset) in [
        (
            "application/json",
            b"[{\"id\": 1, \"name\": \"caf\xe9\"}]".to_vec(),
            23,
        ),
        (
            "application/x-ndjson",
            b"{\"id\": 1, \"name\": \"ok\"}\n{\"id\": 2, \"name\": \"\xff\"}\n".to_vec(),
            43,
        ),
    ] {
        // Act
        let res = app
            .client
            .post(app.url("/tables/t1/rows/"))
            .header("Authorization", format!("Bearer {}", user.access))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");

        // Assert
        let problem = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_json").await;
        let detail = problem["detail"].as_str().expect("detail");
        assert!(
            detail.contains("UTF-8") && detail.contains(&format!("byte {offset}")),
            "{content_type}: {detail}"
        );
    }
    let rows: Value = ok_json(app.get_as(&user.access, "/tables/t1/rows/").await).await;
    assert_eq!(
        rows["rows"].as_array().map(Vec::len),
        Some(1),
        "nothing was added"
    );
}

#[tokio::test]
async fn a_value_refused_in_the_last_partial_batch_names_its_row_not_the_column_count() {
    // Arrange: a table with a timestamp column, and 1,500 rows whose 1,203rd has a date that
    // is no date (the decoder finds it when the last, partial batch is flushed).
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from(vec![1]))),
        ("name", Arc::new(StringArray::from(vec!["a"]))),
        (
            "at",
            Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![0]).with_timezone("UTC")),
        ),
    ];
    let res = app
        .create_table(&user.access, parquet_of(columns), "t1", None)
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let rows: Vec<Value> = (1..=1500)
        .map(|i| {
            let at = if i == 1203 {
                "not a date"
            } else {
                "2026-01-01T00:00:00Z"
            };
            json!({"id": i, "name": format!("n{i}"), "at": at})
        })
        .collect();

    // Act
    let res = app
        .client
        .post(app.url("/tables/t1/rows/"))
        .header("Authorization", format!("Bearer {}", user.access))
        .json(&rows)
        .send()
        .await
        .expect("request");

    // Assert
    let problem = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_value").await;
    let detail = problem["detail"].as_str().expect("detail");
    assert!(detail.contains("row 1203"), "{detail}");
    let rows: Value = ok_json(app.get_as(&user.access, "/tables/t1/rows/").await).await;
    assert_eq!(
        rows["rows"].as_array().map(Vec::len),
        Some(1),
        "nothing was added"
    );
}
