//! Indexes on tables: declared at creation, added concurrently, listed, dropped, counted in the
//! storage quota; and the reads that use them (keyset pages of unique orders, read from the
//! plan).

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tinydevcrm::query::rows::Kind;

use crate::helpers::{
    TestApp, TestUser, assert_problem, parquet_of, spawn_app, spawn_app_with, superuser,
};

/// `POST /tables/create/` with the optional `indexes` and `unique` fields.
async fn create(
    app: &TestApp,
    user: &TestUser,
    file: Vec<u8>,
    name: &str,
    indexes: Option<&str>,
    unique: Option<&str>,
) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(file).file_name("upload.parquet"),
        )
        .text("table_name", name.to_owned());
    if let Some(indexes) = indexes {
        form = form.text("indexes", indexes.to_owned());
    }
    if let Some(unique) = unique {
        form = form.text("unique", unique.to_owned());
    }
    app.client
        .post(app.url("/tables/create/"))
        .header("Authorization", format!("Bearer {}", user.access))
        .multipart(form)
        .send()
        .await
        .expect("request")
}

/// A file of `n` calls: `record_id` 0..n, `source` one of 100, `note` text.
fn calls(n: i64, duplicate: bool) -> Vec<u8> {
    let ids: Vec<i64> = (0..n)
        .map(|i| if duplicate && i == 1 { 0 } else { i })
        .collect();
    parquet_of(vec![
        ("record_id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        (
            "source",
            Arc::new(StringArray::from(
                (0..n).map(|i| format!("s{}", i % 100)).collect::<Vec<_>>(),
            )),
        ),
        (
            "note",
            Arc::new(StringArray::from(
                (0..n).map(|i| format!("note {i}")).collect::<Vec<_>>(),
            )),
        ),
    ])
}

async fn indexes(app: &TestApp, user: &TestUser, table: &str) -> Vec<Value> {
    let res = app
        .get_as(&user.access, &format!("/tables/{table}/indexes/"))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    body.as_array().expect("a list").clone()
}

async fn schema_of(app: &TestApp, user: &TestUser) -> String {
    format!("t_{}", id_of(app, user).await.simple())
}

async fn id_of(app: &TestApp, user: &TestUser) -> uuid::Uuid {
    let me: Value = app.me(&user.access).await.json().await.expect("json");
    uuid::Uuid::parse_str(me["id"].as_str().expect("id")).expect("uuid")
}

#[tokio::test]
async fn declared_indexes_are_built_with_the_table_listed_and_kept_by_a_replace() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    let res = create(
        &app,
        &user,
        calls(50, false),
        "calls",
        Some(r#"[["source"], ["source", "note"]]"#),
        Some(r#"[["record_id"]]"#),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);

    let listed = indexes(&app, &user, "calls").await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    let mut columns: Vec<(Value, bool)> = listed
        .iter()
        .map(|i| (i["columns"].clone(), i["unique"].as_bool().expect("unique")))
        .collect();
    columns.sort_by_key(|c| c.0.to_string());
    assert_eq!(
        columns,
        [
            (json!(["record_id"]), true),
            (json!(["source", "note"]), false),
            (json!(["source"]), false),
        ]
    );
    for index in &listed {
        assert!(
            index["index_name"]
                .as_str()
                .expect("name")
                .starts_with("ix_")
        );
        assert!(index["size_bytes"].as_i64().expect("size") > 0, "{index}");
        assert_eq!(index["valid"], true);
    }

    // A replace keeps them (and the key still holds).
    let res = app
        .post_as(
            &user.access,
            "/tables/calls/rows/?mode=replace",
            &json!([{"record_id": 7, "source": "x", "note": "n"}]),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(indexes(&app, &user, "calls").await.len(), 3);
    let res = app
        .post_as(
            &user.access,
            "/tables/calls/rows/",
            &json!([{"record_id": 7, "source": "y", "note": "again"}]),
        )
        .await;
    let problem = assert_problem(res, StatusCode::CONFLICT, "duplicate_key").await;
    let detail = problem["detail"].as_str().expect("detail");
    assert!(detail.contains("(record_id)=(7)"), "{detail}");
    let res = app
        .post_as(
            &user.access,
            "/tables/calls/rows/",
            &json!([{"record_id": null, "source": "y", "note": "no key"}]),
        )
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_value").await;
}

#[tokio::test]
async fn a_unique_index_over_duplicates_fails_the_creation_naming_the_duplicate_and_leaves_nothing()
{
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    let res = create(
        &app,
        &user,
        calls(10, true),
        "calls",
        None,
        Some(r#"[["record_id"]]"#),
    )
    .await;
    let problem = assert_problem(res, StatusCode::BAD_REQUEST, "index_failed").await;
    let detail = problem["detail"].as_str().expect("detail");
    assert!(
        detail.contains("index ix_") && detail.contains("(record_id)=(0)"),
        "{detail}"
    );

    let res = app.get_as(&user.access, "/tables/calls/").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let mut admin = superuser(&app.db).await;
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1",
    )
    .bind(schema_of(&app, &user).await)
    .fetch_one(&mut admin)
    .await
    .expect("count");
    assert_eq!(left, 0, "no table or index is left behind");
    let res = create(
        &app,
        &user,
        calls(10, false),
        "calls",
        None,
        Some(r#"[["record_id"]]"#),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn malformed_or_excessive_declarations_are_refused() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let nine = format!("[{}]", [r#"["source"]"#; 9].join(","));
    let too_wide = json!([vec!["source"; 9]]).to_string();
    for (indexes, unique, code) in [
        (Some(r#"[["nope"]]"#), None, "unknown_column"),
        (None, Some(r#"["record_id"]"#), "invalid_index"),
        (Some(nine.as_str()), None, "too_many_indexes"),
        (Some(too_wide.as_str()), None, "invalid_index"),
        (Some(r#"[[]]"#), None, "invalid_index"),
    ] {
        let res = create(&app, &user, calls(3, false), "calls", indexes, unique).await;
        assert_problem(res, StatusCode::BAD_REQUEST, code).await;
    }
}

#[tokio::test]
async fn an_index_is_built_concurrently_while_reads_and_writes_of_the_table_go_on() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let res = create(&app, &user, calls(1000, false), "calls", None, None).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let schema = schema_of(&app, &user).await;

    // An open writing transaction: a concurrent build waits for it to end.
    let mut holder = superuser(&app.db).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; LOCK TABLE {schema}.calls IN ROW EXCLUSIVE MODE"
    )))
    .execute(&mut holder)
    .await
    .expect("hold");
    let build = {
        let (client, url, access) = (
            app.client.clone(),
            app.url("/tables/calls/indexes/"),
            user.access.clone(),
        );
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(access)
                .json(&json!({"columns": ["source"]}))
                .send()
                .await
                .expect("request")
        })
    };
    let mut admin = superuser(&app.db).await;
    let mut waiting = false;
    for _ in 0..100 {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE query LIKE 'CREATE %INDEX %' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut admin)
        .await
        .expect("activity");
        if n == 1 {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        waiting,
        "the build started and waits for the open transaction"
    );

    let read = tokio::time::timeout(
        Duration::from_secs(5),
        app.get_as(&user.access, "/tables/calls/rows/?source=eq.s1&limit=5"),
    )
    .await
    .expect("a read completes while the index builds");
    assert_eq!(read.status(), StatusCode::OK);
    let write = tokio::time::timeout(
        Duration::from_secs(5),
        app.post_as(
            &user.access,
            "/tables/calls/rows/",
            &json!([{"record_id": 1000, "source": "s1", "note": "during the build"}]),
        ),
    )
    .await
    .expect("a write completes while the index builds");
    assert_eq!(write.status(), StatusCode::OK);
    assert!(!build.is_finished(), "the build was still held");

    sqlx::raw_sql("COMMIT")
        .execute(&mut holder)
        .await
        .expect("release");
    let res = build.await.expect("task");
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["columns"], json!(["source"]));
    assert_eq!(body["valid"], true);
    app.assert_no_role_leaked();
}

#[tokio::test]
async fn a_failed_concurrent_build_is_dropped_and_explained_and_indexes_are_dropped_by_name() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let res = create(&app, &user, calls(20, true), "calls", None, None).await;
    assert_eq!(res.status(), StatusCode::CREATED);

    let res = app
        .post_as(
            &user.access,
            "/tables/calls/indexes/",
            &json!({"columns": ["record_id"], "unique": true}),
        )
        .await;
    let problem = assert_problem(res, StatusCode::BAD_REQUEST, "index_failed").await;
    let detail = problem["detail"].as_str().expect("detail");
    assert!(detail.contains("(record_id)=(0)"), "{detail}");
    assert_eq!(
        indexes(&app, &user, "calls").await,
        Vec::<Value>::new(),
        "the invalid index is gone"
    );

    for (body, code) in [
        (json!({"columns": ["nope"]}), "unknown_column"),
        (json!({"columns": []}), "invalid_index"),
        (json!({"columns": ["note", "note"]}), "invalid_index"),
    ] {
        let res = app
            .post_as(&user.access, "/tables/calls/indexes/", &body)
            .await;
        assert_problem(res, StatusCode::BAD_REQUEST, code).await;
    }

    let res = app
        .post_as(
            &user.access,
            "/tables/calls/indexes/",
            &json!({"columns": ["source", "record_id"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let name = res.json::<Value>().await.expect("json")["index_name"]
        .as_str()
        .expect("name")
        .to_owned();
    let other = app.signed_up_user().await;
    for (who, path) in [
        (&other, format!("/tables/calls/indexes/{name}/")),
        (
            &user,
            "/tables/calls/indexes/ix_0000000000000000/".to_owned(),
        ),
        (
            &user,
            "/tables/calls/indexes/Robert'); DROP TABLE calls; --/".to_owned(),
        ),
    ] {
        let res = app.delete_as(&who.access, &path).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let res = app.get_as(&other.access, "/tables/calls/indexes/").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = app
        .delete_as(&user.access, &format!("/tables/calls/indexes/{name}/"))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(indexes(&app, &user, "calls").await.is_empty());
    app.assert_no_role_leaked();
}

#[tokio::test]
async fn a_column_without_an_ordering_cannot_be_indexed() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let res = create(&app, &user, calls(3, false), "calls", None, None).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let schema = schema_of(&app, &user).await;
    let mut admin = superuser(&app.db).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE {schema}.calls ADD COLUMN spot point"
    )))
    .execute(&mut admin)
    .await
    .expect("alter");

    let res = app
        .post_as(
            &user.access,
            "/tables/calls/indexes/",
            &json!({"columns": ["source", "spot"]}),
        )
        .await;
    let problem = assert_problem(res, StatusCode::BAD_REQUEST, "unsupported_operation").await;
    let detail = problem["detail"].as_str().expect("detail");
    assert!(
        detail.contains("\"spot\"") && detail.contains("point"),
        "{detail}"
    );
}

#[tokio::test]
async fn an_index_counts_in_the_storage_quota() {
    // One 8 KiB heap page fits; its index (two more pages) does not.
    let app = spawn_app_with(|s| s.tenant_storage_bytes = 16 * 1024).await;
    let user = app.signed_up_user().await;
    let file = parquet_of(vec![(
        "n",
        Arc::new(Int64Array::from((0..100).collect::<Vec<i64>>())) as ArrayRef,
    )]);
    let res = create(&app, &user, file.clone(), "small", None, None).await;
    assert_eq!(res.status(), StatusCode::CREATED);

    let res = app
        .post_as(
            &user.access,
            "/tables/small/indexes/",
            &json!({"columns": ["n"]}),
        )
        .await;
    assert_problem(res, StatusCode::CONFLICT, "storage_quota_exceeded").await;
    assert!(
        indexes(&app, &user, "small").await.is_empty(),
        "dropped again"
    );

    let res = create(&app, &user, file, "declared", Some(r#"[["n"]]"#), None).await;
    assert_problem(res, StatusCode::CONFLICT, "storage_quota_exceeded").await;
    app.assert_no_role_leaked();
}

/// The plan of a rows request, as the superuser reads it.
async fn plan(
    app: &TestApp,
    user: &TestUser,
    (kind, relation): (Kind, &str),
    query: &[(&str, &str)],
) -> String {
    let id = id_of(app, user).await;
    let schema = format!("t_{}", id.simple());
    let mut admin = superuser(&app.db).await;
    let pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tinydevcrm::query::rows::explain(
        &app.pool,
        &mut admin,
        (id, kind),
        tinydevcrm::db::ident::Ident::new(schema).expect("schema"),
        tinydevcrm::db::ident::Ident::new(relation).expect("relation"),
        &pairs,
    )
    .await
    .expect("explain")
    .join("\n")
}

#[tokio::test]
async fn filters_and_ordered_keyset_pages_on_indexed_columns_are_index_scans_without_a_sort() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let res = create(
        &app,
        &user,
        calls(100_000, false),
        "calls",
        Some(r#"[["source"]]"#),
        Some(r#"[["record_id"]]"#),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);

    let filtered = plan(&app, &user, (Kind::Table, "calls"), &[("source", "eq.s42")]).await;
    assert!(
        filtered.contains("Index Scan")
            && filtered.contains(" ix_")
            && !filtered.contains("Seq Scan"),
        "a filter on an indexed column reads the index:\n{filtered}"
    );
    let one = plan(
        &app,
        &user,
        (Kind::Table, "calls"),
        &[("record_id", "eq.4242")],
    )
    .await;
    assert!(
        one.contains("Index Scan using ix_") && !one.contains("Seq Scan"),
        "{one}"
    );

    for order in ["record_id", "record_id.desc"] {
        let first: Value = app
            .get_as(
                &user.access,
                &format!("/tables/calls/rows/?order={order}&limit=100"),
            )
            .await
            .json()
            .await
            .expect("json");
        let cursor = first["next_cursor"].as_str().expect("a next page");
        for query in [
            vec![("order", order)],
            vec![("order", order), ("cursor", cursor)],
        ] {
            let text = plan(&app, &user, (Kind::Table, "calls"), &query).await;
            assert!(
                text.contains("Index Scan") && !text.contains("Sort") && !text.contains("Seq Scan"),
                "{query:?}:\n{text}"
            );
        }
        let keyset = plan(
            &app,
            &user,
            (Kind::Table, "calls"),
            &[("order", order), ("cursor", cursor)],
        )
        .await;
        assert!(
            keyset.contains("Index Cond: ") && keyset.contains("record_id"),
            "the page starts at the cursor in the index, no offset:\n{keyset}"
        );
        let second: Value = app
            .get_as(
                &user.access,
                &format!("/tables/calls/rows/?order={order}&limit=100&cursor={cursor}"),
            )
            .await
            .json()
            .await
            .expect("json");
        let expected = if order == "record_id" { 100 } else { 99_899 };
        assert_eq!(second["rows"][0]["record_id"], expected, "{order}");
    }
}

/// Every row once, in the order a single read gives, however the order places NULLs and
/// duplicates and whether or not it is unique.
#[tokio::test]
async fn keyset_pages_walk_every_order_exactly_like_one_read() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let n = 60_i64;
    let file = parquet_of(vec![
        (
            "id",
            Arc::new(Int64Array::from((0..n).collect::<Vec<_>>())) as ArrayRef,
        ),
        (
            "a",
            Arc::new(Int64Array::from(
                (0..n)
                    .map(|i| (i % 7 != 3).then_some(i % 5))
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "b",
            Arc::new(StringArray::from(
                (0..n)
                    .map(|i| (i % 4 != 0).then(|| format!("v{}", i % 3)))
                    .collect::<Vec<_>>(),
            )),
        ),
    ]);
    let res = create(&app, &user, file, "mixed", None, Some(r#"[["id"]]"#)).await;
    assert_eq!(res.status(), StatusCode::CREATED);

    for order in [
        "a",
        "a.desc",
        "a.nullsfirst",
        "a.desc.nullslast,b",
        "b.desc,a.nullsfirst",
        "a,b.desc.nullsfirst",
        "a.desc,id",
        "b,id.desc",
        "id.desc",
    ] {
        let all: Value = app
            .get_as(
                &user.access,
                &format!("/tables/mixed/rows/?order={order}&limit=1000"),
            )
            .await
            .json()
            .await
            .expect("json");
        let expected: Vec<Value> = all["rows"].as_array().expect("rows").clone();
        assert_eq!(expected.len() as i64, n);
        let mut walked = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/tables/mixed/rows/?order={order}&limit=7");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let res = app.get_as(&user.access, &path).await;
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            let body: Value = res.json().await.expect("json");
            walked.extend(body["rows"].as_array().expect("rows").iter().cloned());
            match body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(walked, expected, "order {order}");
        let mut ids: Vec<i64> = walked
            .iter()
            .map(|r| r["id"].as_i64().expect("id"))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len() as i64, n, "order {order}: every row exactly once");
    }

    // A cursor of one order under another is refused.
    let first: Value = app
        .get_as(&user.access, "/tables/mixed/rows/?order=a&limit=5")
        .await
        .json()
        .await
        .expect("json");
    let cursor = first["next_cursor"].as_str().expect("cursor");
    for other in ["order=a.desc&", "order=b&", "order=a,b&", ""] {
        let res = app
            .get_as(
                &user.access,
                &format!("/tables/mixed/rows/?{other}cursor={cursor}"),
            )
            .await;
        assert_problem(res, StatusCode::BAD_REQUEST, "invalid_cursor").await;
    }
}

#[tokio::test]
async fn keyset_pages_of_a_view_by_its_unique_key_start_at_the_cursor_in_its_index() {
    // Arrange: a view over 20,000 calls whose unique key is record_id.
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let res = create(&app, &user, calls(20_000, false), "calls", None, None).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .post_as(
            &user.access,
            "/views/create/",
            &json!({"view_name": "bill", "sql_query": "SELECT * FROM calls", "unique_key": ["record_id"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let first: Value = app
        .get_as(&user.access, "/views/bill/rows/?order=record_id&limit=100")
        .await
        .json()
        .await
        .expect("json");
    let cursor = first["next_cursor"].as_str().expect("a next page");

    // Act
    let text = plan(
        &app,
        &user,
        (Kind::View, "bill"),
        &[("order", "record_id"), ("cursor", cursor)],
    )
    .await;

    // Assert: no sort, no tie-break, and the scan starts at the cursor.
    assert!(
        text.contains("Index Cond: ") && !text.contains("Sort") && !text.contains("Seq Scan"),
        "{text}"
    );
    let second: Value = app
        .get_as(
            &user.access,
            &format!("/views/bill/rows/?order=record_id&limit=100&cursor={cursor}"),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(second["rows"][0]["record_id"], 100, "{second}");
}

#[tokio::test]
async fn a_refresh_that_would_leave_a_null_in_a_views_unique_key_fails_and_keeps_the_rows() {
    // Arrange: a view keyed by a column that only some rows have.
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let res = create(&app, &user, calls(10, false), "calls", None, None).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let sql = "SELECT CASE WHEN record_id < 10 THEN record_id END AS k FROM calls";
    let res = app
        .post_as(
            &user.access,
            "/views/create/",
            &json!({"view_name": "keyed", "sql_query": sql, "unique_key": ["k"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);

    // Act: one more call, whose record_id (10) makes k NULL.
    let res = app
        .post_as(
            &user.access,
            "/tables/calls/rows/",
            &json!([{"record_id": 10}]),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .post_as(&user.access, "/views/keyed/refresh/", &json!({}))
        .await;

    // Assert
    let problem = assert_problem(res, StatusCode::BAD_REQUEST, "null_unique_key").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("\"k\""),
        "{problem}"
    );
    let rows: Value = app
        .get_as(&user.access, "/views/keyed/rows/?limit=100")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(rows["rows"].as_array().map(Vec::len), Some(10), "{rows}");
}

#[tokio::test]
async fn concurrent_index_builds_of_many_tenants_stay_within_the_pools_connections() {
    // Arrange: three tenants with a table each, each table held in SHARE mode for two seconds
    // by a superuser (a build waits for it, holding its connection), and a watcher of the
    // test database's connections made by the service role.
    let app = spawn_app_with(|s| s.tenant_concurrent_queries = 4).await;
    let mut users = Vec::new();
    for _ in 0..3 {
        let user = app.signed_up_user().await;
        let res = create(&app, &user, calls(1_000, false), "calls", None, None).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        users.push(user);
    }
    let mut holders = Vec::new();
    for user in &users {
        let mut admin = superuser(&app.db).await;
        let schema = schema_of(&app, user).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "BEGIN; LOCK TABLE {schema}.calls IN SHARE MODE"
        )))
        .execute(&mut admin)
        .await
        .expect("lock");
        holders.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            sqlx::raw_sql("COMMIT")
                .execute(&mut admin)
                .await
                .expect("commit");
        }));
    }
    let database = app.db.get_database().expect("a database").to_owned();
    let service_role = app.db.get_username().to_owned();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, mut admin) = (Arc::clone(&stop), superuser(&app.db).await);
        tokio::spawn(async move {
            let mut most = 0_i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let now: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
                )
                .bind(&database)
                .bind(&service_role)
                .fetch_one(&mut admin)
                .await
                .expect("pg_stat_activity");
                most = most.max(now);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            most
        })
    };

    // Act: four builds per tenant at once, each on a connection that stays the tenant's.
    let bodies = [
        json!({"columns": ["source"]}),
        json!({"columns": ["record_id"]}),
        json!({"columns": ["note"]}),
        json!({"columns": ["source", "note"]}),
    ];
    let builds = users.iter().flat_map(|user| {
        bodies
            .iter()
            .map(|body| app.post_as(&user.access, "/tables/calls/indexes/", body))
    });
    let answers = futures_util::future::join_all(builds).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let most = watcher.await.expect("watcher");
    for holder in holders {
        holder.await.expect("lock holder");
    }

    // Assert: the waiting builds queued for the pool's 5 connections instead of each opening
    // one of its own (one more: the hub's LISTEN connection, outside the pool).
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert!(
        most <= 6,
        "the service role held {most} connections to the database at once (pool of 5): {statuses:?}"
    );
    // Builds wait for each other's snapshots too: beyond the pool's acquire timeout a build is
    // a 503 (retry), one PostgreSQL cancels in a deadlock a 409; never a 500. Once the burst
    // is over, a build goes through.
    assert!(
        statuses.iter().all(|s| [201, 409, 503].contains(s)),
        "builds went through, or said to try again: {statuses:?}"
    );
    let again = app
        .post_as(
            &users[0].access,
            "/tables/calls/indexes/",
            &json!({"columns": ["record_id", "source"]}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::CREATED);
}
