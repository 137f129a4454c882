//! The attack suite: tenant B tries, through the public API only, to break out of its schema.
//! Every test asserts that the request fails cleanly and that nothing leaked or changed: the
//! victim's rows, the role of pooled connections, the server's health.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_problem, parquet_bytes, spawn_app_with};

struct Scene {
    app: TestApp,
    victim: TestUser,
    victim_schema: String,
    attacker: TestUser,
}

fn numbers(n: i64) -> Vec<u8> {
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from_iter_values(0..n))],
    )
    .expect("batch");
    parquet_bytes(&batch, None)
}

async fn scene(timeout: Duration) -> Scene {
    let app = spawn_app_with(|s| {
        s.tenant_statement_timeout = timeout;
        s.tenant_concurrent_queries = 2;
    })
    .await;
    let victim = app.signed_up_user().await;
    assert_eq!(
        app.create_table(&victim.access, numbers(100), "secret", None)
            .await
            .status(),
        StatusCode::CREATED
    );
    let me: Value = app.me(&victim.access).await.json().await.expect("json");
    let victim_schema = format!(
        "t_{}",
        uuid::Uuid::parse_str(me["id"].as_str().expect("id"))
            .expect("uuid")
            .simple()
    );
    let attacker = app.signed_up_user().await;
    assert_eq!(
        app.create_table(&attacker.access, numbers(10), "mine", None)
            .await
            .status(),
        StatusCode::CREATED
    );
    Scene {
        app,
        victim,
        victim_schema,
        attacker,
    }
}

impl Scene {
    async fn create_view(&self, sql: &str) -> reqwest::Response {
        self.app
            .client
            .post(self.app.url("/views/create/"))
            .header("Authorization", format!("JWT {}", self.attacker.access))
            .json(&json!({"view_name": "attack", "sql_query": sql}))
            .send()
            .await
            .expect("request")
    }

    /// Nothing leaked or changed: the victim still has its 100 rows, every pooled connection is
    /// the service role again, the attacker has no view, the server answers.
    async fn assert_unharmed(&self) {
        let body: Value = self
            .app
            .get_as(&self.victim.access, "/tables/secret/")
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(body["row_count"], 100, "the victim's table changed");
        for _ in 0..5 {
            let role: String = sqlx::query_scalar("SELECT current_user::text")
                .fetch_one(&self.app.pool)
                .await
                .expect("query");
            assert_eq!(role, "tinydevcrm", "a pooled connection kept a tenant role");
        }
        let views: Value = self
            .app
            .get_as(&self.attacker.access, "/views/")
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(views, json!([]), "the attack left a view behind");
        assert_eq!(self.app.get("/health").await.status(), StatusCode::OK);
    }
}

/// An attack the sandbox must refuse (400 `sql_rejected`), naming what is not allowed.
async fn refused(sql_for: impl Fn(&str) -> String, why: &str) {
    let scene = scene(Duration::from_secs(5)).await;
    let sql = sql_for(&scene.victim_schema);

    let res = scene.create_view(&sql).await;

    let body = assert_problem(res, StatusCode::BAD_REQUEST, "sql_rejected").await;
    let detail = body["detail"].as_str().expect("detail");
    assert!(detail.contains(why), "{sql}: {detail}");
    assert!(
        !detail.contains(&scene.victim_schema) || sql.contains(&scene.victim_schema),
        "no leak of names"
    );
    scene.assert_unharmed().await;
}

/// An attack that parses but must be stopped by PostgreSQL's limits: the statement timeout or,
/// when it spills to disk first, `temp_file_limit`.
async fn stopped(sql: &str, timeout: Duration, codes: &[&str]) {
    let scene = scene(timeout).await;

    let res = scene.create_view(sql).await;

    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.expect("problem JSON");
    assert!(
        codes.contains(&body["code"].as_str().unwrap_or_default()),
        "{sql}: {body}"
    );
    scene.assert_unharmed().await;
}

const LIMITS: &[&str] = &["query_timeout", "resource_limit_exceeded"];

macro_rules! refused {
    ($($name:ident: $sql:expr => $why:expr;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                refused($sql, $why).await;
            }
        )*
    };
}

refused! {
    another_tenants_schema_by_name: |s: &str| format!("SELECT * FROM {s}.secret") => "is not one of your tables";
    set_config_role_for_the_session: |_: &str| "SELECT set_config('role', 'postgres', false)".to_owned() => "function set_config is not allowed";
    set_config_role_for_the_transaction: |_: &str| "SELECT set_config('role', 'postgres', true)".to_owned() => "function set_config is not allowed";
    set_config_then_query_to_xml: |s: &str| format!("SELECT set_config('role', '{s}', false), query_to_xml('select * from {s}.secret', true, false, '')") => "is not allowed";
    statement_timeout_off_then_sleep: |_: &str| "SELECT set_config('statement_timeout', '0', false), pg_sleep(1000)".to_owned() => "is not allowed";
    two_statements: |_: &str| "SELECT * FROM mine; DROP TABLE mine".to_owned() => "exactly one statement";
    select_into: |_: &str| "SELECT * INTO stolen FROM mine".to_owned() => "INTO is not allowed";
    data_modifying_cte: |_: &str| "WITH d AS (DELETE FROM mine RETURNING *) SELECT * FROM d".to_owned() => "only SELECT";
    for_update: |_: &str| "SELECT * FROM mine FOR UPDATE".to_owned() => "locking clauses";
    pg_get_viewdef: |_: &str| "SELECT pg_get_viewdef('pg_roles'::regclass)".to_owned() => "not allowed";
    pg_class: |_: &str| "SELECT relname FROM pg_class".to_owned() => "is not one of your tables";
    pg_stat_all_tables: |_: &str| "SELECT schemaname, relname FROM pg_stat_all_tables".to_owned() => "is not one of your tables";
    information_schema_tables: |_: &str| "SELECT * FROM information_schema.tables".to_owned() => "is not one of your tables";
    pg_read_file: |_: &str| "SELECT pg_read_file('/etc/passwd')".to_owned() => "function pg_read_file is not allowed";
    lo_import: |_: &str| "SELECT lo_import('/etc/passwd')".to_owned() => "function lo_import is not allowed";
    copy_to_program: |_: &str| "COPY (SELECT 1) TO PROGRAM 'id'".to_owned() => "only a SELECT";
    lo_create: |_: &str| "SELECT lo_create(0)".to_owned() => "function lo_create is not allowed";
    dblink: |s: &str| format!("SELECT * FROM dblink('dbname=postgres', 'select * from {s}.secret') AS t(n bigint)") => "function dblink is not allowed";
    nextval_on_another_tenants_sequence: |s: &str| format!("SELECT nextval('{s}.some_seq')") => "function nextval is not allowed";
    pg_terminate_backend_over_pg_stat_activity: |_: &str| "SELECT pg_terminate_backend(pid) FROM pg_stat_activity".to_owned() => "not allowed";
    a_regclass_cast_into_the_catalogs: |_: &str| "SELECT 'pg_authid'::regclass::oid".to_owned() => "type regclass is not allowed";
    qualified_catalog_function: |_: &str| "SELECT pg_catalog.current_setting('data_directory')".to_owned() => "not allowed";
    pg_sleep_for_a_million_seconds: |_: &str| "SELECT pg_sleep(1e6)".to_owned() => "function pg_sleep is not allowed";
    a_view_that_changes_a_setting_or_role: |s: &str| format!("SELECT set_config('search_path', '{s}', false), set_config('role', '{s}', false)") => "function set_config is not allowed";
}

#[tokio::test]
async fn generate_series_to_a_trillion_is_cancelled_by_the_timeout() {
    stopped(
        "SELECT count(*) FROM generate_series(1, 1e12::bigint) g",
        Duration::from_secs(1),
        LIMITS,
    )
    .await;
}

#[tokio::test]
async fn an_unbounded_recursive_cte_is_cancelled_by_the_timeout() {
    stopped(
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
        Duration::from_secs(1),
        LIMITS,
    )
    .await;
}

#[tokio::test]
async fn a_huge_cross_join_is_cancelled_by_the_timeout() {
    stopped("SELECT count(*) FROM mine a, mine b, mine c, mine d, mine e, mine f, mine g, mine h, mine i, mine j", Duration::from_secs(1), LIMITS).await;
}

#[tokio::test]
async fn a_spilling_sort_is_stopped_by_temp_file_limit() {
    // The test cluster runs with temp_file_limit = 64MB and tenants get work_mem = 32MB.
    stopped(
        "SELECT g, md5(g::text) FROM generate_series(1, 5000000) g ORDER BY md5(g::text)",
        Duration::from_secs(120),
        &["resource_limit_exceeded"],
    )
    .await;
}

#[tokio::test]
async fn injection_through_view_and_column_names_goes_nowhere() {
    let scene = scene(Duration::from_secs(5)).await;
    let app = &scene.app;
    let res = app
        .client
        .post(app.url("/views/create/"))
        .header("Authorization", format!("JWT {}", scene.attacker.access))
        .json(&json!({"view_name": "x\"; DROP TABLE mine; --", "sql_query": "SELECT 1"}))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_table_name").await;

    let res = app
        .client
        .post(app.url("/views/create/"))
        .header("Authorization", format!("JWT {}", scene.attacker.access))
        .json(&json!({"view_name": "quoted", "sql_query": r#"SELECT n AS "a""; DROP TABLE mine; --" FROM mine"#}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::CREATED);
    let rows: Value = app
        .get_as(&scene.attacker.access, "/views/quoted/rows/?limit=1")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(rows["rows"][0][r#"a"; DROP TABLE mine; --"#], 0);
    let filtered = app
        .get_as(
            &scene.attacker.access,
            "/views/quoted/rows/?a%22%3B%20DROP%20TABLE%20mine%3B%20--=eq.1",
        )
        .await;
    assert_eq!(filtered.status(), StatusCode::OK);
    let mine: Value = app
        .get_as(&scene.attacker.access, "/tables/mine/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(mine["row_count"], 10, "the attacker's own table is intact");
    let body: Value = app
        .get_as(&scene.victim.access, "/tables/secret/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["row_count"], 100);
}

#[tokio::test]
async fn fifty_concurrent_heavy_refreshes_from_one_tenant_get_429_and_others_are_served() {
    let scene = scene(Duration::from_secs(30)).await;
    let app = &scene.app;
    let res = app
        .client
        .post(app.url("/views/create/"))
        .header("Authorization", format!("JWT {}", scene.attacker.access))
        .json(&json!({"view_name": "heavy", "sql_query": "SELECT count(*), now() FROM generate_series(1, 3000000) g"}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::CREATED);

    let refreshes = (0..50).map(|_| {
        app.client
            .post(app.url("/views/heavy/refresh/"))
            .header("Authorization", format!("JWT {}", scene.attacker.access))
            .send()
    });
    let victim_read = app.get_as(&scene.victim.access, "/tables/secret/rows/?limit=5");
    let (results, victim) = tokio::join!(futures_util::future::join_all(refreshes), victim_read);

    let statuses: Vec<StatusCode> = results
        .into_iter()
        .map(|r| r.expect("response").status())
        .collect();
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert_eq!(
        victim.status(),
        StatusCode::OK,
        "another tenant is still served"
    );
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&app.pool)
        .await
        .expect("query");
    assert_eq!(role, "tinydevcrm");
}
