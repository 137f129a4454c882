//! Tables from Parquet: create, infer, declare, refuse, isolate, list, describe, delete.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, DictionaryArray,
    FixedSizeBinaryArray, Float16Array, Float32Array, Float64Array, Int8Array, Int16Array,
    Int32Array, Int64Array, LargeStringArray, ListArray, RecordBatch, StringArray, StructArray,
    Time64MicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray, UInt8Array,
    UInt16Array, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema};
use parquet::basic::{BrotliLevel, Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    TestApp, TestUser, assert_problem, parquet_bytes, spawn_app, spawn_app_with, superuser,
};

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .expect("batch")
}

/// The file of the original walkthrough: `SomeNumber` int64 and `SomeString`.
fn walkthrough_file() -> Vec<u8> {
    parquet_bytes(
        &batch(vec![
            (
                "SomeNumber",
                Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 0])),
            ),
            (
                "SomeString",
                Arc::new(StringArray::from(vec![
                    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j",
                ])),
            ),
        ]),
        None,
    )
}

const WALKTHROUGH_COLUMNS: &str = r#"[{"column_name": "SomeNumber", "column_type":"int"},{"column_name":"SomeString","column_type":"varchar(256)"}]"#;

async fn user(app: &TestApp) -> TestUser {
    app.signed_up_user().await
}

async fn table_names(app: &TestApp, access: &str) -> Vec<String> {
    let list: Value = app
        .get_as(access, "/tables/")
        .await
        .json()
        .await
        .expect("json");
    list.as_array()
        .expect("a list")
        .iter()
        .map(|t| t["table_name"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test]
async fn the_walkthrough_upload_with_declared_columns_creates_the_table() {
    let app = spawn_app().await;
    let user = user(&app).await;

    let res = app
        .create_table(
            &user.access,
            walkthrough_file(),
            "sometable",
            Some(WALKTHROUGH_COLUMNS),
        )
        .await;

    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["table_name"], "sometable");
    assert_eq!(body["row_count"], 10);
    assert_eq!(body["columns"][0]["column_name"], "SomeNumber");
    assert_eq!(body["columns"][0]["column_type"], "integer");
    assert_eq!(body["columns"][1]["column_name"], "SomeString");
    assert_eq!(body["columns"][1]["column_type"], "character varying(256)");
    let values = app
        .column_texts("sometable", &user.access, "SomeNumber")
        .await;
    assert_eq!(
        values.iter().flatten().cloned().collect::<Vec<_>>(),
        ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"]
    );
}

#[tokio::test]
async fn sample_parquet_uploads_without_columns_with_inferred_types() {
    let app = spawn_app().await;
    let user = user(&app).await;
    let file = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/sample.parquet"))
        .expect("sample.parquet");

    let res = app
        .create_table(&user.access, file, "CallRecords", None)
        .await;

    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        body["table_name"], "callrecords",
        "names fold to lower case"
    );
    assert_eq!(body["row_count"], 6000);
    let types: Vec<(&str, &str)> = body["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            (
                c["column_name"].as_str().expect("n"),
                c["column_type"].as_str().expect("t"),
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            ("record_id", "bigint"),
            ("record_type", "text"),
            ("record_timestamp", "timestamp with time zone"),
            ("call_id", "bigint"),
            ("source", "text"),
            ("destination", "text"),
        ]
    );
    let kinds = app
        .column_texts("callrecords", &user.access, "record_type")
        .await;
    assert_eq!(
        kinds
            .iter()
            .filter(|k| k.as_deref() == Some("start"))
            .count(),
        3000
    );
}

#[tokio::test]
async fn every_supported_arrow_type_is_inferred_and_stored_exactly() {
    let app = spawn_app().await;
    let user = user(&app).await;
    let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
        Some(vec![Some(1), None, Some(3)]),
        None,
    ]);
    let strukt = StructArray::from(vec![
        (
            Arc::new(Field::new("a", DataType::Int32, true)),
            Arc::new(Int32Array::from(vec![Some(1), None])) as ArrayRef,
        ),
        (
            Arc::new(Field::new("b", DataType::Utf8, true)),
            Arc::new(StringArray::from(vec![Some("x"), Some("y")])) as ArrayRef,
        ),
    ]);
    let dictionary: DictionaryArray<Int32Type> = vec![Some("red"), None].into_iter().collect();
    let original = batch(vec![
        ("i8", Arc::new(Int8Array::from(vec![Some(-128), None]))),
        ("i16", Arc::new(Int16Array::from(vec![Some(-32768), None]))),
        (
            "i32",
            Arc::new(Int32Array::from(vec![Some(i32::MIN), None])),
        ),
        (
            "i64",
            Arc::new(Int64Array::from(vec![Some(i64::MAX), None])),
        ),
        ("u8", Arc::new(UInt8Array::from(vec![Some(255), None]))),
        ("u16", Arc::new(UInt16Array::from(vec![Some(65535), None]))),
        (
            "u32",
            Arc::new(UInt32Array::from(vec![Some(u32::MAX), None])),
        ),
        (
            "u64",
            Arc::new(UInt64Array::from(vec![Some(u64::MAX), None])),
        ),
        (
            "f16",
            Arc::new(Float16Array::from(vec![
                Some(half::f16::from_f32(1.5)),
                None,
            ])),
        ),
        (
            "f32",
            Arc::new(Float32Array::from(vec![Some(0.25f32), None])),
        ),
        ("f64", Arc::new(Float64Array::from(vec![Some(1e300), None]))),
        (
            "dec",
            Arc::new(
                Decimal128Array::from(vec![Some(12345678901234567890123456789i128), None])
                    .with_precision_and_scale(38, 4)
                    .expect("decimal"),
            ),
        ),
        (
            "utf8",
            Arc::new(StringArray::from(vec![Some("héllo"), None])),
        ),
        (
            "large",
            Arc::new(LargeStringArray::from(vec![Some("big"), None])),
        ),
        ("dict", Arc::new(dictionary)),
        ("bool", Arc::new(BooleanArray::from(vec![Some(true), None]))),
        (
            "date",
            Arc::new(Date32Array::from(vec![Some(19_000), None])),
        ),
        (
            "time",
            Arc::new(Time64MicrosecondArray::from(vec![
                Some(3_723_000_001),
                None,
            ])),
        ),
        (
            "ts_ms",
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(1_700_000_000_123),
                None,
            ])),
        ),
        (
            "ts_ns_utc",
            Arc::new(
                TimestampNanosecondArray::from(vec![Some(1_700_000_000_123_456_789), None])
                    .with_timezone("UTC"),
            ),
        ),
        (
            "bin",
            Arc::new(BinaryArray::from(vec![Some(&b"\x00\x01\xff"[..]), None])),
        ),
        (
            "fixed",
            Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                    vec![Some(vec![7u8; 4]), None].into_iter(),
                    4,
                )
                .expect("fixed"),
            ),
        ),
        ("list", Arc::new(list)),
        ("struct", Arc::new(strukt)),
    ]);
    let file = parquet_bytes(&original, None);

    let res = app.create_table(&user.access, file, "alltypes", None).await;

    assert_eq!(res.status(), StatusCode::CREATED, "{:?}", res.text().await);
    let expected: &[(&str, &str, &str)] = &[
        ("i8", "smallint", "-128"),
        ("i16", "smallint", "-32768"),
        ("i32", "integer", "-2147483648"),
        ("i64", "bigint", "9223372036854775807"),
        ("u8", "smallint", "255"),
        ("u16", "integer", "65535"),
        ("u32", "bigint", "4294967295"),
        ("u64", "numeric(20,0)", "18446744073709551615"),
        ("f16", "real", "1.5"),
        ("f32", "real", "0.25"),
        ("f64", "double precision", "1e+300"),
        ("dec", "numeric(38,4)", "1234567890123456789012345.6789"),
        ("utf8", "text", "héllo"),
        ("large", "text", "big"),
        ("dict", "text", "red"),
        ("bool", "boolean", "true"),
        ("date", "date", "2022-01-08"),
        ("time", "time without time zone", "01:02:03.000001"),
        (
            "ts_ms",
            "timestamp without time zone",
            "2023-11-14 22:13:20.123",
        ),
        (
            "ts_ns_utc",
            "timestamp with time zone",
            "2023-11-14 22:13:20.123456+00",
        ),
        ("bin", "bytea", "\\x0001ff"),
        ("fixed", "bytea", "\\x07070707"),
        ("list", "jsonb", "[1, null, 3]"),
        ("struct", "jsonb", r#"{"a": 1, "b": "x"}"#),
    ];
    // The same values through the JSON API: exact integers, numerics as strings, RFC 3339.
    let json: Value = app
        .get_as(&user.access, "/tables/alltypes/rows/")
        .await
        .json()
        .await
        .expect("json");
    let expected_json = serde_json::json!({
        "i8": -128, "i16": -32768, "i32": -2147483648i64, "i64": 9223372036854775807i64,
        "u8": 255, "u16": 65535, "u32": 4294967295u64, "u64": "18446744073709551615",
        "f16": 1.5, "f32": 0.25, "f64": 1e300, "dec": "1234567890123456789012345.6789",
        "utf8": "héllo", "large": "big", "dict": "red", "bool": true, "date": "2022-01-08",
        "time": "01:02:03.000001", "ts_ms": "2023-11-14T22:13:20.123",
        "ts_ns_utc": "2023-11-14T22:13:20.123456+00:00", "bin": "\\x0001ff", "fixed": "\\x07070707",
        "list": [1, null, 3], "struct": {"a": 1, "b": "x"}
    });
    assert_eq!(json["rows"][0], expected_json);
    // And through a Parquet export: every column whose type Parquet keeps comes back equal
    // (bytea, jsonb go out as text; nanoseconds were truncated to microseconds on the way in).
    let exported = app
        .get_as(&user.access, "/tables/alltypes/rows/?format=parquet")
        .await
        .bytes()
        .await
        .expect("bytes");
    let back = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(exported)
        .expect("parquet")
        .build()
        .expect("reader")
        .next()
        .expect("a batch")
        .expect("batch");
    for field in original.schema().fields() {
        if ["bin", "fixed", "list", "struct", "ts_ns_utc"].contains(&field.name().as_str()) {
            continue;
        }
        let ours = back.column_by_name(field.name()).expect("exported column");
        let ours = arrow::compute::cast(ours, field.data_type()).expect("cast back");
        let theirs = original
            .column_by_name(field.name())
            .expect("original column");
        assert_eq!(
            ours.to_data(),
            theirs.to_data(),
            "column {} after a Parquet round trip",
            field.name()
        );
    }
    let second = json["rows"][1].as_object().expect("row");
    assert!(
        second
            .iter()
            .filter(|(k, _)| *k != "struct")
            .all(|(_, v)| v.is_null()),
        "{second:?}"
    );
    let described: Value = app
        .get_as(&user.access, "/tables/alltypes/")
        .await
        .json()
        .await
        .expect("json");
    for (i, (name, pg_type, first)) in expected.iter().enumerate() {
        assert_eq!(described["columns"][i]["column_name"], *name);
        assert_eq!(
            described["columns"][i]["column_type"], *pg_type,
            "type of {name}"
        );
        let values = app.column_texts("alltypes", &user.access, name).await;
        assert_eq!(values[0].as_deref(), Some(*first), "value of {name}");
        if *name != "struct" {
            assert_eq!(values[1], None, "{name} keeps its null");
        }
    }
}

#[tokio::test]
async fn every_compression_codec_and_several_row_groups_load() {
    let app = spawn_app().await;
    let user = user(&app).await;
    let rows = 10_000i64;
    let data = batch(vec![
        ("n", Arc::new(Int64Array::from_iter_values(0..rows))),
        (
            "s",
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| format!("row {i}")),
            )),
        ),
    ]);
    let codecs = [
        ("snappy", Compression::SNAPPY),
        ("zstd", Compression::ZSTD(ZstdLevel::default())),
        ("gzip", Compression::GZIP(GzipLevel::default())),
        ("lz4", Compression::LZ4_RAW),
        ("brotli", Compression::BROTLI(BrotliLevel::default())),
        ("none", Compression::UNCOMPRESSED),
    ];
    for (name, codec) in codecs {
        let properties = WriterProperties::builder()
            .set_compression(codec)
            .set_max_row_group_row_count(Some(3000))
            .build();
        let res = app
            .create_table(
                &user.access,
                parquet_bytes(&data, Some(properties)),
                name,
                None,
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "{name}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["row_count"], rows, "{name}");
    }
}

#[tokio::test]
async fn an_empty_file_makes_an_empty_table() {
    let app = spawn_app().await;
    let user = user(&app).await;
    let empty = batch(vec![("n", Arc::new(Int64Array::from(Vec::<i64>::new())))]);

    let res = app
        .create_table(&user.access, parquet_bytes(&empty, None), "empty", None)
        .await;

    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["row_count"], 0);
    assert_eq!(body["columns"][0]["column_type"], "bigint");
}

#[tokio::test]
async fn declared_columns_must_match_the_file() {
    let app = spawn_app().await;
    let user = user(&app).await;
    let cases = [
        (
            r#"[{"column_name": "SomeNumber", "column_type":"int"}]"#,
            "SomeString",
        ),
        (
            r#"[{"column_name": "somenumber", "column_type":"int"},{"column_name":"SomeString","column_type":"text"}]"#,
            "somenumber",
        ),
        (
            r#"[{"column_name": "SomeNumber", "column_type":"int"},{"column_name":"SomeString","column_type":"money"}]"#,
            "money",
        ),
        (
            r#"[{"column_name": "SomeNumber", "column_type":"date"},{"column_name":"SomeString","column_type":"text"}]"#,
            "SomeNumber",
        ),
        (
            r#"[{"column_name": "SomeNumber", "column_type":"int"},{"column_name":"SomeNumber","column_type":"int"}]"#,
            "twice",
        ),
    ];
    for (columns, named) in cases {
        let res = app
            .create_table(&user.access, walkthrough_file(), "t", Some(columns))
            .await;
        let body = assert_problem(res, StatusCode::BAD_REQUEST, "column_mismatch").await;
        assert!(
            body["detail"].as_str().expect("detail").contains(named),
            "{body}"
        );
    }
    let res = app
        .create_table(&user.access, walkthrough_file(), "t", Some("not json"))
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_columns").await;
    assert!(table_names(&app, &user.access).await.is_empty());
}

#[tokio::test]
async fn a_value_that_does_not_fit_names_column_and_row_and_creates_nothing() {
    let app = spawn_app().await;
    let user = user(&app).await;
    let too_big = parquet_bytes(
        &batch(vec![
            (
                "SomeNumber",
                Arc::new(Int64Array::from(vec![1, 2, 3_000_000_000])),
            ),
            (
                "SomeString",
                Arc::new(StringArray::from(vec!["a", "b", "c"])),
            ),
        ]),
        None,
    );
    let too_long = parquet_bytes(
        &batch(vec![
            ("SomeNumber", Arc::new(Int64Array::from(vec![1, 2]))),
            (
                "SomeString",
                Arc::new(StringArray::from(vec!["short", "much too long"])),
            ),
        ]),
        None,
    );
    let columns = r#"[{"column_name": "SomeNumber", "column_type":"int"},{"column_name":"SomeString","column_type":"varchar(5)"}]"#;
    let bad_uuid = parquet_bytes(
        &batch(vec![(
            "id",
            Arc::new(StringArray::from(vec![
                "6f1c0a4e-9b8b-4c3e-8a51-0f2e5d6c7b8a",
                "nope",
            ])),
        )]),
        None,
    );

    let body = assert_problem(
        app.create_table(&user.access, too_big, "t", Some(columns))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_value",
    )
    .await;
    let detail = body["detail"].as_str().expect("detail");
    assert!(
        detail.contains("SomeNumber") && detail.contains("row 3"),
        "{detail}"
    );
    let body = assert_problem(
        app.create_table(&user.access, too_long, "t", Some(columns))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_value",
    )
    .await;
    let detail = body["detail"].as_str().expect("detail");
    assert!(
        detail.contains("SomeString") && detail.contains("row 2"),
        "{detail}"
    );
    let body = assert_problem(
        app.create_table(
            &user.access,
            bad_uuid,
            "t",
            Some(r#"[{"column_name":"id","column_type":"uuid"}]"#),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_value",
    )
    .await;
    assert!(body["detail"].as_str().expect("detail").contains("row 2"));

    assert!(table_names(&app, &user.access).await.is_empty());
    let mut admin = superuser(&app.db).await;
    let leftovers: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename = 't'")
        .fetch_one(&mut admin)
        .await
        .expect("count");
    assert_eq!(leftovers, 0, "a failed upload left a half-made table");
}

#[tokio::test]
async fn files_that_are_not_parquet_are_refused() {
    let app = spawn_app().await;
    let user = user(&app).await;
    let good = walkthrough_file();
    let truncated = good[..good.len() / 2].to_vec();
    let mut corrupt_footer = good.clone();
    let n = corrupt_footer.len();
    corrupt_footer[n - 12..n - 4].copy_from_slice(&[0xff; 8]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("text", b"SomeNumber,SomeString\n1,a\n".to_vec()),
        ("empty", Vec::new()),
        ("truncated", truncated),
        ("footer", corrupt_footer),
        ("magic only", b"PAR1PAR1".to_vec()),
    ];
    for (what, bytes) in cases {
        let res = app.create_table(&user.access, bytes, "t", None).await;
        let status = res.status();
        let body: Value = res.json().await.expect("problem JSON");
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_parquet")),
            "{what}: {body}"
        );
    }
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    assert!(table_names(&app, &user.access).await.is_empty());
}

#[tokio::test]
async fn a_csv_or_empty_file_sent_as_parquet_says_only_parquet_is_accepted_and_where_json_rows_go()
{
    let app = spawn_app().await;
    let user = user(&app).await;
    let cases: [(&str, &[u8]); 4] = [
        ("it looks like CSV", b"SomeNumber,SomeString\n1,a\n"),
        ("the file is empty", b""),
        ("it looks like JSON", br#"[{"SomeNumber": 1}]"#),
        ("it does not start with PAR1", b"\x00\x01\xfe\xff"),
    ];
    for (looks, bytes) in cases {
        let res = app
            .create_table(&user.access, bytes.to_vec(), "t", None)
            .await;
        let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_parquet").await;
        let detail = body["detail"].as_str().expect("detail");
        assert!(
            detail.starts_with(&format!("the file is not Parquet: {looks}"))
                && detail.contains("Only Parquet files are accepted")
                && detail.contains("POST /tables/{name}/rows/ with Content-Type: application/json"),
            "{looks}: {detail}"
        );
    }
    assert!(table_names(&app, &user.access).await.is_empty());
}

#[tokio::test]
async fn duplicate_column_names_in_the_file_are_refused() {
    let app = spawn_app().await;
    let user = user(&app).await;
    let schema = Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("a", DataType::Int64, true),
    ]);
    let data = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(Int64Array::from(vec![2])),
        ],
    )
    .expect("batch");

    let res = app
        .create_table(&user.access, parquet_bytes(&data, None), "t", None)
        .await;

    let body = assert_problem(res, StatusCode::BAD_REQUEST, "column_mismatch").await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("two columns named")
    );
}

#[tokio::test]
async fn table_names_follow_the_rules() {
    let app = spawn_app().await;
    let user = user(&app).await;

    for bad in [
        "select",
        "1abc",
        "a-b",
        "pg_stuff",
        &"a".repeat(64),
        "",
        "x y",
    ] {
        let res = app
            .create_table(&user.access, walkthrough_file(), bad, None)
            .await;
        assert_problem(res, StatusCode::BAD_REQUEST, "invalid_table_name").await;
    }
    assert_eq!(
        app.create_table(&user.access, walkthrough_file(), "MyTable", None)
            .await
            .status(),
        StatusCode::CREATED
    );
    let res = app
        .create_table(&user.access, walkthrough_file(), "MYTABLE", None)
        .await;
    assert_problem(res, StatusCode::CONFLICT, "table_exists").await;
    assert_eq!(table_names(&app, &user.access).await, ["mytable"]);
}

#[tokio::test]
async fn malformed_forms_are_refused_clearly() {
    let app = spawn_app().await;
    let user = user(&app).await;

    let res = app
        .client
        .post(app.url("/tables/create/"))
        .header("Authorization", format!("JWT {}", user.access))
        .json(&serde_json::json!({"table_name": "t"}))
        .send()
        .await
        .expect("request");
    assert_problem(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    let form = reqwest::multipart::Form::new().text("table_name", "t");
    let res = app
        .client
        .post(app.url("/tables/create/"))
        .header("Authorization", format!("JWT {}", user.access))
        .multipart(form)
        .send()
        .await
        .expect("request");
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_form").await;
    assert!(body["detail"].as_str().expect("detail").contains("file"));

    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(walkthrough_file()));
    let res = app
        .client
        .post(app.url("/tables/create/"))
        .header("Authorization", format!("JWT {}", user.access))
        .multipart(form)
        .send()
        .await
        .expect("request");
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_form").await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("table_name")
    );

    let res = app
        .client
        .post(app.url("/tables/create/"))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::UNAUTHORIZED, "token_missing").await;
}

#[tokio::test]
async fn an_upload_over_the_limit_is_413_and_leaves_nothing() {
    let app = spawn_app_with(|s| s.upload_limit_bytes = 1000).await;
    let user = user(&app).await;
    let big = parquet_bytes(
        &batch(vec![(
            "s",
            Arc::new(StringArray::from_iter_values(
                (0..2000).map(|i| format!("value {i}")),
            )),
        )]),
        None,
    );

    let res = app.create_table(&user.access, big, "big", None).await;

    assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert!(table_names(&app, &user.access).await.is_empty());
}

#[tokio::test]
async fn two_tenants_have_tables_of_the_same_name_and_never_see_each_other() {
    let app = spawn_app().await;
    let alice = user(&app).await;
    let bob = user(&app).await;
    let small = parquet_bytes(
        &batch(vec![("n", Arc::new(Int64Array::from(vec![1, 2])))]),
        None,
    );

    assert_eq!(
        app.create_table(&alice.access, walkthrough_file(), "calls", None)
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.create_table(&bob.access, small, "calls", None)
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.create_table(&alice.access, walkthrough_file(), "alice_only", None)
            .await
            .status(),
        StatusCode::CREATED
    );

    let alice_calls: Value = app
        .get_as(&alice.access, "/tables/calls/")
        .await
        .json()
        .await
        .expect("json");
    let bob_calls: Value = app
        .get_as(&bob.access, "/tables/calls/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(alice_calls["row_count"], 10);
    assert_eq!(bob_calls["row_count"], 2);
    assert_eq!(table_names(&app, &bob.access).await, ["calls"]);
    let res = app.get_as(&bob.access, "/tables/alice_only/").await;
    let body = assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    assert!(!body.to_string().contains(&alice.email));
    let res = app
        .client
        .delete(app.url("/tables/alice_only/"))
        .header("Authorization", format!("JWT {}", bob.access))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(
        table_names(&app, &alice.access).await,
        ["alice_only", "calls"]
    );
}

#[tokio::test]
async fn delete_drops_the_table_and_then_it_is_gone() {
    let app = spawn_app().await;
    let user = user(&app).await;
    assert_eq!(
        app.create_table(&user.access, walkthrough_file(), "gone", None)
            .await
            .status(),
        StatusCode::CREATED
    );

    let res = app
        .client
        .delete(app.url("/tables/gone/"))
        .header("Authorization", format!("JWT {}", user.access))
        .send()
        .await
        .expect("request");

    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_problem(
        app.get_as(&user.access, "/tables/gone/").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(
        app.create_table(&user.access, walkthrough_file(), "gone", None)
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn column_and_table_limits_are_enforced_with_clear_codes() {
    let app = spawn_app_with(|s| {
        s.max_columns = 1;
        s.max_tables_per_tenant = 1;
    })
    .await;
    let user = user(&app).await;
    let one_column = parquet_bytes(
        &batch(vec![("n", Arc::new(Int64Array::from(vec![1])))]),
        None,
    );

    let res = app
        .create_table(&user.access, walkthrough_file(), "wide", None)
        .await;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "too_many_columns").await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("at most 1")
    );
    assert_eq!(
        app.create_table(&user.access, one_column.clone(), "first", None)
            .await
            .status(),
        StatusCode::CREATED
    );
    let res = app
        .create_table(&user.access, one_column, "second", None)
        .await;
    assert_problem(res, StatusCode::CONFLICT, "too_many_tables").await;
}

#[tokio::test]
async fn the_pyarrow_walkthrough_file_in_the_docs_uploads_as_printed() {
    let app = spawn_app().await;
    let user = user(&app).await;
    let file = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/examples/walkthrough.parquet"
    ))
    .expect("example");

    let res = app
        .create_table(&user.access, file, "sometable", Some(WALKTHROUGH_COLUMNS))
        .await;

    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["row_count"], 10);
    assert_eq!(body["columns"][1]["column_type"], "character varying(256)");
}

/// Rewrites the first page header's `uncompressed_page_size` (a 4-byte thrift varint) to the
/// largest 4-byte value: the page then claims about 128 MiB for a 4 MiB payload.
fn claim_a_huge_page(mut file: Vec<u8>) -> Vec<u8> {
    assert_eq!(&file[..4], b"PAR1");
    assert_eq!(
        (file[4], file[6]),
        (0x15, 0x15),
        "page header fields 1 and 2 are i32"
    );
    let varint_len = file[7..]
        .iter()
        .position(|b| b & 0x80 == 0)
        .expect("varint end")
        + 1;
    assert_eq!(varint_len, 4, "a page of about 4 MiB has a 4-byte size");
    file[7..11].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
    file
}

#[tokio::test]
async fn a_page_claiming_far_more_bytes_than_it_has_is_refused_and_the_server_survives() {
    let app = spawn_app().await;
    let user = user(&app).await;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(false)
        .set_data_page_size_limit(8 * 1024 * 1024)
        .set_data_page_row_count_limit(1_000_000)
        .build();
    let file = parquet_bytes(
        &batch(vec![("n", Arc::new(Int64Array::from(vec![0i64; 524_288])))]),
        Some(properties),
    );

    let res = app
        .create_table(&user.access, claim_a_huge_page(file), "hostile", None)
        .await;

    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_parquet").await;
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    assert!(table_names(&app, &user.access).await.is_empty());
}

#[tokio::test]
async fn sample_parquet_reads_back_identical() {
    let app = spawn_app().await;
    let user = user(&app).await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/sample.parquet");
    let original = std::fs::read(path).expect("sample.parquet");
    assert_eq!(
        app.create_table(&user.access, original.clone(), "calls", None)
            .await
            .status(),
        StatusCode::CREATED
    );

    let res = app
        .get_as(&user.access, "/tables/calls/rows/?format=parquet")
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let exported = res.bytes().await.expect("bytes");

    let read = |bytes: bytes::Bytes| -> RecordBatch {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .expect("parquet")
            .build()
            .expect("reader");
        let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
        arrow::compute::concat_batches(&batches[0].schema(), &batches).expect("concat")
    };
    let (theirs, ours) = (read(bytes::Bytes::from(original)), read(exported));
    assert_eq!(ours.num_rows(), 6000);
    for (i, field) in theirs.schema().fields().iter().enumerate() {
        let mine = arrow::compute::cast(
            ours.column_by_name(field.name()).expect("column"),
            field.data_type(),
        )
        .expect("cast");
        assert_eq!(
            mine.to_data(),
            theirs.column(i).to_data(),
            "column {}",
            field.name()
        );
    }
}
