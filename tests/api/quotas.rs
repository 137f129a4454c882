//! Per-tenant quotas: counts that hold when creations race, and the storage quota at ingest and
//! refresh.

use std::sync::Arc;

use arrow::array::{ArrayRef, DictionaryArray, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::Int32Type;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_problem, parquet_bytes, spawn_app_with};
use crate::helpers::{WALKTHROUGH_COLUMNS, walkthrough_file};

/// A Parquet file of `rows` rows of one 200-character string, dictionary encoded: a few KB on
/// the wire, about 230 bytes a row in PostgreSQL.
fn inflating_file(rows: usize) -> Vec<u8> {
    let values = StringArray::from(vec!["x".repeat(200)]);
    let keys = Int32Array::from(vec![0; rows]);
    let strings = DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values)).expect("dict");
    let batch = RecordBatch::try_from_iter([("s", Arc::new(strings) as ArrayRef)]).expect("batch");
    parquet_bytes(&batch, None)
}

/// Rows of a registry table (`tables`, `views`, `jobs`, `channels`).
async fn registered(app: &TestApp, registry: &'static str) -> i64 {
    let sql = match registry {
        "tables" => "SELECT count(*) FROM tinydevcrm.tables",
        "views" => "SELECT count(*) FROM tinydevcrm.views",
        "jobs" => "SELECT count(*) FROM tinydevcrm.jobs",
        _ => "SELECT count(*) FROM tinydevcrm.channels",
    };
    sqlx::query_scalar(sql)
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

/// Relations in tenant schemas, as PostgreSQL has them (the registry aside).
async fn tenant_relations(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname LIKE 't\\_%' AND c.relkind IN ('r', 'm', 'v')",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count")
}

/// Counts the answers of parallel creations: how many were 201; every other one must be 409
/// with `code`.
async fn created_count(responses: Vec<reqwest::Response>, code: &str) -> usize {
    let mut created = 0;
    for res in responses {
        if res.status() == StatusCode::CREATED {
            created += 1;
        } else {
            assert_problem(res, StatusCode::CONFLICT, code).await;
        }
    }
    created
}

#[tokio::test]
async fn parallel_table_creations_never_exceed_the_table_quota() {
    // Arrange
    let app = spawn_app_with(|s| {
        s.max_tables_per_tenant = 3;
        s.tenant_concurrent_uploads = 16;
    })
    .await;
    let user = app.signed_up_user().await;

    // Act
    let attempts = (0..9).map(|i| {
        let (app, access) = (&app, &user.access);
        async move {
            app.create_table(access, inflating_file(10), &format!("t{i}"), None)
                .await
        }
    });
    let responses = join_all(attempts).await;

    // Assert
    assert_eq!(created_count(responses, "too_many_tables").await, 3);
    assert_eq!(registered(&app, "tables").await, 3);
    assert_eq!(
        tenant_relations(&app).await,
        3,
        "no table left unregistered"
    );
}

#[tokio::test]
async fn views_count_toward_the_table_quota_even_when_created_in_parallel() {
    // Arrange: one table, so two of the views fit.
    let app = spawn_app_with(|s| {
        s.max_tables_per_tenant = 3;
        s.tenant_concurrent_queries = 16;
    })
    .await;
    let user = app.signed_up_user().await;
    let res = app
        .create_table(&user.access, inflating_file(10), "base", None)
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);

    // Act
    let attempts = (0..9).map(|i| {
        let (app, access) = (&app, &user.access);
        async move {
            app.post_as(
                access,
                "/views/create/",
                &json!({"view_name": format!("v{i}"), "sql_query": "SELECT s FROM base"}),
            )
            .await
        }
    });
    let responses = join_all(attempts).await;

    // Assert
    assert_eq!(created_count(responses, "too_many_tables").await, 2);
    assert_eq!(registered(&app, "views").await, 2);
    assert_eq!(tenant_relations(&app).await, 3);
    let res = app
        .create_table(&user.access, inflating_file(10), "another", None)
        .await;
    let body = assert_problem(res, StatusCode::CONFLICT, "too_many_tables").await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("at most 3 tables and views")
    );
}

#[tokio::test]
async fn parallel_job_and_channel_creations_never_exceed_their_quotas() {
    // Arrange
    let app = spawn_app_with(|s| {
        s.max_jobs_per_tenant = 3;
        s.max_channels_per_tenant = 3;
        s.scheduler = false;
    })
    .await;
    let user = app.user_with_view().await;

    // Act
    let jobs = join_all((0..9).map(|_| {
        let (app, access) = (&app, &user.access);
        async move {
            app.post_as(
                access,
                "/jobs/create/",
                &json!({"view_name": "someview", "crontab_def": "0 * * * *"}),
            )
            .await
        }
    }))
    .await;
    let channels = join_all((0..9).map(|_| {
        let (app, access) = (&app, &user.access);
        async move {
            app.post_as(
                access,
                "/channels/create/",
                &json!({"view_name": "someview"}),
            )
            .await
        }
    }))
    .await;

    // Assert
    assert_eq!(created_count(jobs, "too_many_jobs").await, 3);
    assert_eq!(created_count(channels, "too_many_channels").await, 3);
    assert_eq!(registered(&app, "jobs").await, 3);
    assert_eq!(registered(&app, "channels").await, 3);
}

const QUOTA: u64 = 4 * 1024 * 1024;

async fn me(app: &TestApp, user: &TestUser) -> Value {
    let res = app.me(&user.access).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.expect("json")
}

#[tokio::test]
async fn a_tiny_file_that_inflates_beyond_the_storage_quota_is_refused_and_leaves_no_table() {
    // Arrange (the file first: building it takes a while, and a pooled client connection left
    // idle meanwhile would be closed by the server's keep-alive under the next request)
    let file = inflating_file(1_000_000);
    let app = spawn_app_with(|s| s.tenant_storage_bytes = QUOTA).await;
    let user = app.signed_up_user().await;
    assert!(file.len() < 64 * 1024, "the file is {} bytes", file.len());

    // Act
    let res = app.create_table(&user.access, file, "bomb", None).await;

    // Assert
    let body = assert_problem(res, StatusCode::CONFLICT, "storage_quota_exceeded").await;
    let detail = body["detail"].as_str().expect("detail");
    assert!(
        detail.contains(&format!("storage quota of {QUOTA} bytes")) && detail.contains("Delete"),
        "{detail}"
    );
    assert_eq!(registered(&app, "tables").await, 0);
    assert_eq!(
        tenant_relations(&app).await,
        0,
        "the half-made table rolled back"
    );
    let usage = me(&app, &user).await;
    assert_eq!(usage["storage_bytes"], 0);
    assert_eq!(usage["storage_quota_bytes"], QUOTA);
}

#[tokio::test]
async fn uploads_under_the_storage_quota_work_and_more_rows_beyond_it_change_nothing() {
    // Arrange
    let too_much = inflating_file(1_000_000);
    let app = spawn_app_with(|s| s.tenant_storage_bytes = QUOTA).await;
    let user = app.signed_up_user().await;
    let res = app
        .create_table(
            &user.access,
            walkthrough_file(),
            "sometable",
            Some(WALKTHROUGH_COLUMNS),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .create_table(&user.access, inflating_file(1000), "strings", None)
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let used = me(&app, &user).await["storage_bytes"]
        .as_i64()
        .expect("storage_bytes");
    assert!(used > 200_000 && used < 1_000_000, "{used} bytes");

    // Act
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(too_much).file_name("more.parquet"),
    );
    let res = app
        .client
        .post(app.url("/tables/strings/rows/"))
        .header("Authorization", format!("Bearer {}", user.access))
        .multipart(form)
        .send()
        .await
        .expect("request");

    // Assert
    assert_problem(res, StatusCode::CONFLICT, "storage_quota_exceeded").await;
    let table: Value = app
        .get_as(&user.access, "/tables/strings/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(table["row_count"], 1000);
}

#[tokio::test]
async fn a_view_beyond_the_storage_quota_fails_to_refresh_and_keeps_its_rows() {
    // Arrange: a cross join of 20 rows is small; of 300 rows it is about 20 MB.
    let app = spawn_app_with(|s| s.tenant_storage_bytes = QUOTA).await;
    let user = app.signed_up_user().await;
    let res = app
        .create_table(&user.access, inflating_file(20), "base", None)
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let sql = "SELECT a.s AS s1, b.s AS s2 FROM base a CROSS JOIN base b";
    app.created(
        &user.access,
        "/views/create/",
        json!({"view_name": "pairs", "sql_query": sql}),
    )
    .await;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(inflating_file(280)).file_name("more.parquet"),
    );
    let res = app
        .client
        .post(app.url("/tables/base/rows/"))
        .header("Authorization", format!("Bearer {}", user.access))
        .multipart(form)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);

    // Act
    let refresh = app
        .post_as(&user.access, "/views/pairs/refresh/", &json!({}))
        .await;
    let create = app
        .post_as(
            &user.access,
            "/views/create/",
            &json!({"view_name": "more_pairs", "sql_query": sql}),
        )
        .await;

    // Assert
    assert_problem(refresh, StatusCode::CONFLICT, "storage_quota_exceeded").await;
    let view: Value = app
        .get_as(&user.access, "/views/pairs/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(view["row_count"], 400, "the previous contents stay");
    assert_eq!(view["last_refresh"]["status"], "failed");
    assert_problem(create, StatusCode::CONFLICT, "storage_quota_exceeded").await;
    assert_eq!(registered(&app, "views").await, 1);
}
