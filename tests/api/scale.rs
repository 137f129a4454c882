//! Tenant scale (issue 13 §4): the catalog lookups a request makes must cost the same with one
//! tenant or ten thousand. Not timed: each test reads the plan PostgreSQL actually ran (with
//! `EXPLAIN ANALYZE`) and counts the `pg_class` rows it visited, with many other schemas
//! holding a relation of the same name, as tenants that all follow one tutorial do.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app, superuser};

/// Other schemas, each with a table `sometable` and a materialized view `someview`.
const OTHERS: i32 = 300;

async fn crowded_app() -> (TestApp, Uuid, String) {
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let me: Value = app.me(&user.access).await.json().await.expect("json");
    let id = Uuid::parse_str(me["id"].as_str().expect("id")).expect("uuid");
    let mut admin = superuser(&app.db).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DO $$ BEGIN FOR i IN 1..{OTHERS} LOOP
             EXECUTE format('CREATE SCHEMA other_%s', i);
             EXECUTE format('CREATE TABLE other_%s.sometable (n int)', i);
             EXECUTE format('CREATE MATERIALIZED VIEW other_%s.someview AS SELECT 1 AS n', i);
         END LOOP; END $$;
         ANALYZE pg_catalog.pg_class; ANALYZE pg_catalog.pg_namespace; ANALYZE pg_catalog.pg_depend"
    )))
    .execute(&mut admin)
    .await
    .expect("other schemas");
    (app, id, format!("t_{}", id.simple()))
}

/// The most `pg_class` rows any one node of the plan visited (rows times loops; an index scan
/// that a filter later thins out counts what the index returned).
fn pg_class_rows(plan: &Value) -> f64 {
    let here = if plan["Relation Name"] == "pg_class" {
        let rows = plan["Actual Rows"].as_f64().unwrap_or(0.0)
            + plan["Rows Removed by Filter"].as_f64().unwrap_or(0.0)
            + plan["Rows Removed by Index Recheck"]
                .as_f64()
                .unwrap_or(0.0);
        rows * plan["Actual Loops"].as_f64().unwrap_or(1.0)
    } else {
        0.0
    };
    let below = plan["Plans"]
        .as_array()
        .map(|plans| plans.iter().map(pg_class_rows).fold(0.0, f64::max))
        .unwrap_or(0.0);
    here.max(below)
}

async fn explain(
    conn: &mut PgConnection,
    query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Value {
    let plan: Value = query
        .fetch_one(conn)
        .await
        .map(|row| {
            use sqlx::Row;
            row.get::<sqlx::types::Json<Value>, _>(0).0
        })
        .expect("explain");
    plan[0]["Plan"].clone()
}

#[tokio::test]
async fn a_rows_request_finds_its_relation_without_visiting_other_tenants_of_the_same_name() {
    let (app, user_id, tenant) = crowded_app().await;
    let sql = format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) {}",
        tinydevcrm::query::FIND_SQL
    );
    let mut conn = app.pool.acquire().await.expect("connection");
    for (name, kind) in [("someview", "view"), ("sometable", "table")] {
        for ordered in [false, true] {
            let plan = explain(
                &mut conn,
                sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(user_id)
                    .bind(name)
                    .bind(&tenant)
                    .bind(kind)
                    .bind(ordered),
            )
            .await;
            let visited = pg_class_rows(&plan);
            assert!(
                visited <= 2.0,
                "the lookup of {kind} {name} visited {visited} pg_class rows (of {OTHERS} others): {plan}"
            );
        }
    }
}

#[tokio::test]
async fn measuring_a_tenants_storage_visits_only_its_own_relations() {
    let (app, _, tenant) = crowded_app().await;
    let mut conn = app.pool.acquire().await.expect("connection");
    let sql = format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) {}",
        tinydevcrm::db::quota::STORAGE_BYTES_SQL
    );
    let plan = explain(
        &mut conn,
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&tenant),
    )
    .await;
    let visited = pg_class_rows(&plan);
    assert!(
        visited <= 4.0,
        "measuring the storage of one tenant visited {visited} pg_class rows (of {}): {plan}",
        3 * OTHERS
    );
    // And it still measures: the table and the view of the tenant.
    let ident = tinydevcrm::db::ident::Ident::new(tenant).expect("ident");
    let used = tinydevcrm::db::quota::storage_bytes(&mut conn, &ident)
        .await
        .expect("bytes");
    assert!(used > 0, "{used}");
}
