//! The attack suite: tenant B tries, through the public API only, to break out of its schema.
//! Every test asserts that the request fails cleanly and that nothing leaked or changed: the
//! victim's rows, the role of pooled connections, the server's health.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Setup, TestApp, TestUser, assert_problem, parquet_bytes, spawn_app_in};

pub(crate) struct Scene {
    pub(crate) app: TestApp,
    pub(crate) victim: TestUser,
    pub(crate) victim_schema: String,
    pub(crate) attacker: TestUser,
}

fn numbers(n: i64) -> Vec<u8> {
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from_iter_values(0..n))],
    )
    .expect("batch");
    parquet_bytes(&batch, None)
}

pub(crate) async fn scene(timeout: Duration) -> Scene {
    scene_in(Setup::Hardened, timeout).await
}

async fn scene_in(setup: Setup, timeout: Duration) -> Scene {
    let app = spawn_app_in(setup, |s| {
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
    /// Deletes the attacker's view `attack`, which must exist.
    async fn delete_attack_view(&self) {
        self.delete_view("attack").await;
    }

    /// Deletes one of the attacker's views, which must exist.
    async fn delete_view(&self, name: &str) {
        let deleted = self
            .app
            .client
            .delete(self.app.url(&format!("/views/{name}/")))
            .header("Authorization", format!("JWT {}", self.attacker.access))
            .send()
            .await
            .expect("request");
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    }

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

    /// Nothing leaked or changed: the victim still has its 100 rows with their values, every
    /// pooled connection is the service role again, the attacker has no view, the server
    /// answers.
    pub(crate) async fn assert_unharmed(&self) {
        self.assert_unharmed_but_views().await;
        let views: Value = self
            .app
            .get_as(&self.attacker.access, "/views/")
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(views, json!([]), "the attack left a view behind");
    }

    /// [`Scene::assert_unharmed`] for a scene where the attacker made views of their own.
    async fn assert_unharmed_but_views(&self) {
        let body: Value = self
            .app
            .get_as(&self.victim.access, "/tables/secret/")
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(body["row_count"], 100, "the victim's table changed");
        let rows: Value = self
            .app
            .get_as(
                &self.victim.access,
                "/tables/secret/rows/?limit=1000&order=n.asc",
            )
            .await
            .json()
            .await
            .expect("json");
        let values: Vec<i64> = rows["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r["n"].as_i64().expect("n"))
            .collect();
        assert_eq!(
            values,
            (0..100).collect::<Vec<_>>(),
            "the victim's rows changed"
        );
        let expected: Vec<Value> = (0..100).map(|n| json!({ "n": n })).collect();
        assert_eq!(
            rows["rows"],
            Value::Array(expected),
            "the victim's rows changed (every column of every row is compared)"
        );
        self.app.assert_no_role_leaked();
        for _ in 0..5 {
            let role: String = sqlx::query_scalar("SELECT current_user::text")
                .fetch_one(&self.app.pool)
                .await
                .expect("query");
            assert_eq!(role, "tinydevcrm", "a pooled connection kept a tenant role");
        }
        assert_eq!(self.app.get("/health").await.status(), StatusCode::OK);
    }
}

/// A schema no tenant has: the same attack aimed at it must get the same answer, or the answer
/// tells the attacker whether the victim's objects exist.
pub(crate) const GHOST_SCHEMA: &str = "t_00000000000000000000000000000000";

/// The answer to `spelling` aimed at the victim equals the answer aimed at [`GHOST_SCHEMA`]
/// (with the names swapped back): the refusal reveals nothing about what the victim has.
async fn assert_no_existence_oracle(scene: &Scene, spelling: &str, answer: &Value) {
    if !spelling.contains("{v}") {
        return;
    }
    let ghost_sql = spelling.replace("{v}", GHOST_SCHEMA);
    let ghost: Value = scene
        .create_view(&ghost_sql)
        .await
        .json()
        .await
        .expect("problem JSON");
    let same = |v: &Value| {
        v.to_string()
            .replace(&scene.victim_schema, "{v}")
            .replace(GHOST_SCHEMA, "{v}")
    };
    assert_eq!(
        same(answer),
        same(&ghost),
        "the answer differs when the victim's schema does not exist: {spelling}"
    );
}

/// An attack the sandbox must refuse (400 `sql_rejected`), naming what is not allowed.
async fn refused(setup: Setup, sql_for: impl Fn(&str) -> String, why: &str) {
    let scene = scene_in(setup, Duration::from_secs(5)).await;
    let sql = sql_for(&scene.victim_schema);

    let res = scene.create_view(&sql).await;

    let body = assert_problem(res, StatusCode::BAD_REQUEST, "sql_rejected").await;
    let detail = body["detail"].as_str().expect("detail");
    assert!(detail.contains(why), "{sql}: {detail}");
    let ghost = sql_for(GHOST_SCHEMA);
    if ghost != sql {
        let answer = scene
            .create_view(&ghost)
            .await
            .json::<Value>()
            .await
            .expect("json");
        assert_eq!(
            answer["detail"]
                .as_str()
                .map(|d| d.replace(GHOST_SCHEMA, &scene.victim_schema)),
            Some(detail.to_owned()),
            "the answer differs when the victim's schema does not exist: {sql}"
        );
    }
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
            mod $name {
                use super::*;

                #[tokio::test]
                async fn on_a_hardened_database() {
                    refused(Setup::Hardened, $sql, $why).await;
                }

                #[tokio::test]
                async fn on_a_plain_database() {
                    refused(Setup::Plain, $sql, $why).await;
                }
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
    scene.delete_view("quoted").await;
    scene.assert_unharmed().await;
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
    scene.delete_view("heavy").await;
    scene.assert_unharmed().await;
}

/// The attacker's tenant (role and schema name).
async fn attacker_tenant(scene: &Scene) -> tinydevcrm::db::ident::Ident {
    let me: Value = scene
        .app
        .me(&scene.attacker.access)
        .await
        .json()
        .await
        .expect("json");
    let id = uuid::Uuid::parse_str(me["id"].as_str().expect("id")).expect("uuid");
    tinydevcrm::db::tenant::tenant_name(id)
}

/// `sql` judged by PostgreSQL's resolution alone, with no parser in front of it, the way the
/// service creates views: `Ok` when the check would let it run, `Err` with PostgreSQL's error
/// or the check's refusal otherwise. Nothing is kept.
async fn resolved_alone(scene: &Scene, sql: &str) -> Result<(), String> {
    use tinydevcrm::db::ident::Ident;
    use tinydevcrm::views::{resolved, sandbox, store};
    let tenant = attacker_tenant(scene).await;
    let name = Ident::new("probe".to_owned()).expect("name");
    let mut tx = tinydevcrm::db::tenant::begin_as(&scene.app.pool, &tenant, Duration::from_secs(5))
        .await
        .expect("begin");
    if let Err(e) = store::create_view(&mut tx, &tenant, &name, sql).await {
        return Err(format!("PostgreSQL: {e}"));
    }
    let mut tx = tx.into_service().await.expect("back to the service role");
    resolved::check(&mut tx, &tenant, &name, sandbox::ALLOWED_FUNCTIONS)
        .await
        .expect("the check runs")
        .map(|_| ())
        .map_err(|refused| refused.0)
}

/// Every spelling of a class is refused by the API, and by PostgreSQL's resolution alone
/// (so no parser differential can let one through); nothing leaks or changes.
async fn class_refused(setup: Setup, spellings: &[&str]) {
    let scene = scene_in(setup, Duration::from_secs(5)).await;
    for spelling in spellings {
        let sql = spelling.replace("{v}", &scene.victim_schema);

        let res = scene.create_view(&sql).await;

        let status = res.status();
        let body: Value = res.json().await.expect("problem JSON");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sql}: {body}");
        let code = body["code"].as_str().unwrap_or_default();
        assert!(
            code == "sql_rejected" || code == "invalid_sql",
            "{sql}: {body}"
        );
        assert_no_existence_oracle(&scene, spelling, &body).await;
        let alone = resolved_alone(&scene, &sql).await;
        assert!(
            alone.is_err(),
            "PostgreSQL's resolution alone let through {sql}"
        );
    }
    scene.assert_unharmed().await;
}

/// Spellings that are harmless must keep working: the checks refuse a class, not a look.
async fn class_allowed(setup: Setup, spellings: &[(&str, Value)]) {
    let scene = scene_in(setup, Duration::from_secs(5)).await;
    for (sql, first_row) in spellings {
        let res = scene.create_view(sql).await;

        let status = res.status();
        let body: Value = res.json().await.expect("JSON");
        assert_eq!(status, StatusCode::CREATED, "{sql}: {body}");
        let rows: Value = scene
            .app
            .get_as(&scene.attacker.access, "/views/attack/rows/?limit=1")
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(&rows["rows"][0], first_row, "{sql}");
        scene.delete_attack_view().await;
    }
    scene.assert_unharmed().await;
}

macro_rules! classes {
    ($($name:ident: $check:ident($spellings:expr);)*) => {
        $(
            mod $name {
                use super::*;

                #[tokio::test]
                async fn on_a_hardened_database() {
                    $check(Setup::Hardened, $spellings).await;
                }

                #[tokio::test]
                async fn on_a_plain_database() {
                    $check(Setup::Plain, $spellings).await;
                }
            }
        )*
    };
}

const CATALOG_READS: &[&str] = &[
    "SELECT relname::text FROM pg_class",
    "SELECT relname::text FROM pg_catalog.pg_class",
    r#"SELECT relname::text FROM "pg_catalog"."pg_class""#,
    "SELECT relname::text FROM PG_CATALOG.PG_CLASS",
    "TABLE pg_class",
    "SELECT nspname::text FROM ONLY pg_catalog.pg_namespace",
    "SELECT s.n, c.relname::text FROM (WITH pg_class AS (SELECT 1 AS n) SELECT n FROM pg_class) s, pg_class c",
    "(WITH pg_class AS (SELECT 'x'::text AS relname) SELECT relname FROM pg_class) UNION ALL SELECT relname::text FROM pg_class",
    "WITH x AS (SELECT relname::text FROM pg_class) SELECT * FROM x",
    "WITH mine AS (SELECT 1 AS n) SELECT n FROM mine UNION SELECT relpages FROM pg_class",
    "SELECT n FROM mine WHERE EXISTS (SELECT 1 FROM pg_class)",
    "SELECT (SELECT count(*) FROM pg_class)",
    "SELECT n, c.relname::text FROM mine, LATERAL (SELECT relname FROM pg_class LIMIT 1) c",
    r#"SELECT 1 UNION SELECT 1 FROM "pg_class""#,
    r#"SELECT 1 FROM mine AS "pg_class" UNION SELECT 1 FROM "pg_class""#,
    "SELECT definition FROM pg_matviews",
    "SELECT definition FROM pg_catalog.pg_views",
    "SELECT statement FROM pg_prepared_statements",
    "SELECT query FROM pg_stat_activity",
    "SELECT table_name::text FROM information_schema.tables",
    r#"SELECT column_name::text FROM "information_schema"."columns""#,
    "SELECT name, setting FROM pg_settings",
    "SELECT reltuples FROM pg_class WHERE relname = 'secret'",
    "SELECT n_live_tup FROM pg_stat_user_tables",
    "SELECT ev_action::text FROM pg_rewrite",
    "VALUES ((SELECT max(relname::text) FROM pg_class))",
    "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r, pg_class WHERE n < 2) SELECT * FROM r",
];

const OTHER_TENANTS: &[&str] = &[
    "SELECT * FROM {v}.secret",
    r#"SELECT * FROM "{v}"."secret""#,
    r#"SELECT * FROM "{v}".secret AS mine"#,
    "WITH s AS (SELECT * FROM {v}.secret) SELECT * FROM s",
    "SELECT n FROM mine UNION SELECT n FROM {v}.secret",
    "SELECT n FROM mine EXCEPT (SELECT n FROM {v}.secret ORDER BY 1)",
    "SELECT (SELECT max(n) FROM {v}.secret)",
    r#"SELECT * FROM mine WHERE n IN (SELECT n FROM "{v}".secret)"#,
    "SELECT * FROM mine, LATERAL (SELECT n AS m FROM {v}.secret) s",
];

const FUNCTIONS: &[&str] = &[
    "SELECT current_setting('server_version')",
    "SELECT pg_catalog.current_setting('data_directory')",
    r#"SELECT "current_setting"('is_superuser')"#,
    r#"SELECT "pg_catalog"."current_setting"('port')"#,
    "SELECT version()",
    "SELECT format('%s', current_setting('port'))",
    "SELECT count(current_setting('port')) FROM mine",
    "SELECT n FROM mine ORDER BY current_setting('port')",
    "WITH c AS (SELECT current_setting('port') AS p) SELECT p FROM c",
    "SELECT 1 UNION SELECT length(current_setting('port'))",
    "SELECT 'x' UNION SELECT \"current_setting\"('port')",
    "SELECT n FROM mine WHERE n::text = ANY (SELECT current_setting('port'))",
    "SELECT count(*) FILTER (WHERE current_setting('port') = '1') FROM mine",
    "SELECT set_config('role', 'postgres', true)",
    "SELECT txid_current()",
    "SELECT pg_backend_pid()",
    "SELECT inet_server_port()",
    "SELECT to_regclass('pg_class')::text",
    "SELECT pg_typeof(1)::text",
    "SELECT pg_sleep(0)",
    "SELECT obj_description(1259)",
    "SELECT has_table_privilege('pg_class', 'select')",
    "SELECT pg_get_viewdef('pg_roles')",
    "SELECT query_to_xml('select 1', true, false, '')::text",
    "SELECT current_database()",
    "SELECT pg_stat_get_backend_activity(1)",
    "SELECT row_number() OVER (ORDER BY current_setting('port')) FROM mine",
];

const CATALOG_TYPES: &[&str] = &[
    "SELECT 'pg_class'::regclass",
    r#"SELECT 'pg_class'::"regclass""#,
    "SELECT 'pg_class'::pg_catalog.regclass",
    r#"SELECT CAST('pg_class' AS "pg_catalog"."regclass")"#,
    "SELECT regclass 'pg_class'",
    "SELECT '{pg_class}'::regclass[]",
    "SELECT 1259::oid::regclass::text",
    "SELECT g::oid::regclass::text FROM generate_series(16384, 16500) g",
    "SELECT n::oid::regtype::text FROM mine",
    "SELECT 'public'::regnamespace::text",
    "SELECT 'now'::regproc::text",
    "SELECT 'english'::regconfig::text",
    "SELECT 1 UNION SELECT 'pg_class'::regclass::oid::int",
    "SELECT '<a/>'::xml::text",
    "SELECT xmlelement(name a)::text",
    "SELECT x FROM XMLTABLE('/a' PASSING '<a>1</a>'::xml COLUMNS x int PATH '.')",
    // Catalog row types carry reg* columns: their text output names any relation by id.
    r#"SELECT ('{"(a,b,c,' || g || ',1,1,1,1,t,1,1)"}')::_pg_sequences::text AS r FROM generate_series(16384, 16700) AS g"#,
    "SELECT (array['(a,b,c,16384,1,1,1,1,t,1,1)'])::\"_pg_sequences\"::text AS r",
    "SELECT '(a,b,c,16384,1,1,1,1,t,1,1)'::pg_catalog.pg_sequences::text AS r",
    "SELECT NULL::pg_type::text AS r",
    "WITH s AS (SELECT '(a,b,c,16384,1,1,1,1,t,1,1)'::pg_sequences AS x) SELECT x::text FROM s",
    "SELECT 1 AS r UNION ALL SELECT length(('{\"(a,b,c,16384,1,1,1,1,t,1,1)\"}')::_pg_sequences::text)",
    // A Unicode-escaped type name, which the parser layer reads as another name.
    r#"SELECT 'pg_class'::U&"\0072egclass"::oid AS a"#,
    r#"SELECT 1259::oid::U&"\0072eg\0063lass"::text AS a"#,
    // An operator run into a comment: sqlparser reads `|--` as one operator and `$$...$$` as
    // a string, PostgreSQL reads `|` and a comment, and the cast in between.
    "SELECT 1 |-- $$\n0 AS z, 'pg_class'::regclass AS b\n--$$ AS z FROM mine",
    "SELECT 1 <-- $$\n1 AS z, 1259::oid::\"regclass\"::text AS b\n--$$ AS z FROM mine",
];

/// Text that a re-printer could unquote: literals and names that look like SQL. Run as the
/// user wrote them, they stay literals and names.
fn harmless_lookalikes() -> Vec<(&'static str, Value)> {
    vec![
        (
            "SELECT $$'; SELECT current_setting('port'); --$$ AS t",
            json!({"t": "'; SELECT current_setting('port'); --"}),
        ),
        (
            r#"SELECT 1 AS "a""; SELECT current_setting('port'); --""#,
            json!({r#"a"; SELECT current_setting('port'); --"#: 1}),
        ),
        (
            "SELECT E'\\'; SELECT 1; --' AS t",
            json!({"t": "'; SELECT 1; --"}),
        ),
        (
            "WITH pg_class AS (SELECT 7 AS relname) SELECT relname FROM pg_class",
            json!({"relname": 7}),
        ),
        (
            r#"SELECT n AS "pg_class" FROM mine AS "pg_namespace" WHERE n = 3 UNION ALL SELECT 4 ORDER BY 1"#,
            json!({"pg_class": 3}),
        ),
        (
            "SELECT n FROM mine WHERE n = 5 -- a trailing comment",
            json!({"n": 5}),
        ),
        ("SELECT count(*)::int AS c FROM mine;", json!({"c": 10})),
    ]
}

async fn lookalikes_allowed(setup: Setup, _: ()) {
    class_allowed(setup, &harmless_lookalikes()).await;
}

classes! {
    every_spelling_of_a_catalog_read_is_refused: class_refused(CATALOG_READS);
    every_spelling_of_another_tenants_relation_is_refused: class_refused(OTHER_TENANTS);
    every_spelling_of_a_forbidden_function_is_refused: class_refused(FUNCTIONS);
    every_spelling_of_a_catalog_type_is_refused: class_refused(CATALOG_TYPES);
    lookalike_literals_and_names_stay_literals_and_names: lookalikes_allowed(());
}

/// Expressions long, deep or wide: each is answered with a 4xx or works, and the server keeps
/// serving (a stack overflow would abort the whole test process).
async fn deep_expressions_are_answered(setup: Setup, _: ()) {
    let scene = scene_in(setup, Duration::from_secs(5)).await;
    let chain = |terms: usize, op: &str| {
        format!(
            "SELECT {} AS x",
            std::iter::repeat_n("1", terms).collect::<Vec<_>>().join(op)
        )
    };
    let nested = |depth: usize, open: &str, close: &str| {
        format!("SELECT {}1{} AS x", open.repeat(depth), close.repeat(depth))
    };
    let attacks = [
        chain(40_000, "+"),
        chain(20_000, " AND "),
        chain(3_900, "+"),
        chain(3_900, " || "),
        format!("SELECT 1 AS x WHERE 1 IN ({})", vec!["1"; 3_000].join(",")),
        nested(5_000, "(", ")"),
        nested(60, "(", ")"),
        nested(5_000, "ARRAY[", "]"),
        nested(3_000, "NOT ", ""),
        nested(3_000, "- ", ""),
        nested(35, "(SELECT ", ")"),
        nested(2_000, "(SELECT ", ")"),
        nested(2_000, "CASE WHEN true THEN ", " END"),
        format!("SELECT 1 AS x {}", "UNION ALL SELECT 1 ".repeat(2_000)),
        format!(
            "WITH {} SELECT 1 AS x",
            (0..1_500)
                .map(|i| format!("c{i} AS (SELECT 1)"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ];
    for sql in &attacks {
        let res = scene.create_view(sql).await;

        let status = res.status();
        assert!(
            status == StatusCode::CREATED || status == StatusCode::BAD_REQUEST,
            "{}...: {status}",
            &sql[..60]
        );
        if status == StatusCode::CREATED {
            scene.delete_attack_view().await;
        }
        assert_eq!(scene.app.get("/health").await.status(), StatusCode::OK);
    }
    scene.assert_unharmed().await;
}

classes! {
    deep_long_and_wide_expressions_never_stop_the_service: deep_expressions_are_answered(());
}

/// SQL from a small grammar of reports over the attacker's table `mine` (column `n`), mixing in
/// atoms that reach outside (catalogs, the victim's table, functions off the allow-list, catalog
/// types) through every construct the grammar has: CTEs in and out of scope, set operations,
/// subqueries, quoting, casts. It remembers whether it used such an atom.
struct SqlGrammar {
    rng: rand::rngs::StdRng,
    victim: String,
    own: String,
    reaches_outside: bool,
    ctes: usize,
}

impl SqlGrammar {
    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        use rand::Rng;
        options[self.rng.random_range(0..options.len())]
    }

    fn chance(&mut self, percent: u32) -> bool {
        use rand::Rng;
        self.rng.random_range(0..100) < percent
    }

    fn outside(&mut self, atom: String) -> String {
        self.reaches_outside = true;
        atom
    }

    /// A text-valued expression over a row with column `n`.
    fn expr(&mut self, depth: usize) -> String {
        if depth > 3 || self.chance(30) {
            return self
                .pick(&["n::text", "'lit'", "(n * 2)::text", "$$d$$"])
                .to_owned();
        }
        if self.chance(12) {
            let atom = self.pick(&[
                "current_setting('port')",
                "pg_catalog.current_setting('port')",
                "\"current_setting\"('port')",
                "version()",
                "pg_backend_pid()::text",
                "to_regclass('pg_class')::text",
                "1259::oid::regclass::text",
                "'pg_class'::\"regclass\"::text",
                "CAST(CAST(n AS oid) AS pg_catalog.regtype)::text",
                "(SELECT relname::text FROM pg_class LIMIT 1)",
                "(SELECT max(n)::text FROM VICTIM.secret)",
                "(SELECT max(n)::text FROM \"VICTIM\".\"secret\")",
                "pg_typeof(n)::text",
                "txid_current()::text",
                "(SELECT statement FROM pg_prepared_statements LIMIT 1)",
                "(SELECT query FROM pg_stat_activity LIMIT 1)",
                "xmlelement(name a)::text",
                "'public'::regnamespace::text",
                "inet_server_port()::text",
                "(SELECT max(table_name)::text FROM information_schema.tables)",
                "(SELECT definition FROM pg_matviews LIMIT 1)",
                "('(a,b,c,' || n || ',1,1,1,1,t,1,1)')::pg_sequences::text",
                "(array['(a,b,c,' || n || ',1,1,1,1,t,1,1)'])::_pg_sequences::text",
            ]);
            let atom = atom.replace("VICTIM", &self.victim);
            return self.outside(atom);
        }
        // Both operands are made only where both are used: an atom made and dropped would be
        // counted as reaching outside.
        let kind = self.pick(&[
            "lower", "md5", "concat", "coalesce", "case", "collate", "cast", "sub", "format",
        ]);
        let a = self.expr(depth + 1);
        let two = matches!(kind, "concat" | "coalesce" | "case" | "format");
        let b = if two {
            self.expr(depth + 1)
        } else {
            String::new()
        };
        match kind {
            "lower" => format!("lower({a})"),
            "md5" => format!("md5({a})"),
            "concat" => format!("{a} || {b}"),
            "coalesce" => format!("coalesce({a}, {b})"),
            "case" => format!("CASE WHEN n > 3 THEN {a} ELSE {b} END"),
            "collate" => format!("({a} COLLATE \"C\")"),
            "cast" => format!("CAST({a} AS varchar(20))::text"),
            "format" => format!("format('%s-%s', {a}, {b})"),
            _ => format!("(SELECT max({a}) FROM mine)"),
        }
    }

    /// A relation with column `n`.
    fn relation(&mut self, depth: usize, ctes: &[String]) -> String {
        if self.chance(10) {
            let atom = self.pick(&[
                "VICTIM.secret",
                "\"VICTIM\".\"secret\"",
                "(SELECT oid::bigint AS n FROM pg_class) s",
                "(SELECT relpages::bigint AS n FROM pg_catalog.pg_class) s",
                "(SELECT n_live_tup AS n FROM pg_stat_user_tables) s",
                "(SELECT pid::bigint AS n FROM \"pg_stat_activity\") s",
            ]);
            let atom = atom.replace("VICTIM", &self.victim);
            return self.outside(atom);
        }
        if !ctes.is_empty() && self.chance(40) {
            let i = {
                use rand::Rng;
                self.rng.random_range(0..ctes.len())
            };
            return ctes[i].clone();
        }
        if depth < 3 && self.chance(20) {
            let inner = self.query(depth + 1, ctes);
            return format!("(SELECT c AS n FROM ({inner}) i) s{depth}");
        }
        match self.pick(&["plain", "quoted", "upper", "qualified"]) {
            "plain" => "mine".to_owned(),
            "quoted" => "\"mine\"".to_owned(),
            "upper" => "MINE".to_owned(),
            _ => format!("\"{}\".mine", self.own),
        }
    }

    /// A query of one text column `c`.
    fn query(&mut self, depth: usize, ctes: &[String]) -> String {
        use rand::Rng;
        match self.rng.random_range(0..10) {
            0..=4 => {
                let from = self.relation(depth, ctes);
                let select = self.expr(0);
                let filter = if self.chance(30) {
                    format!(" WHERE {} <> 'q'", self.expr(1))
                } else {
                    String::new()
                };
                format!("SELECT {select} AS c FROM {from}{filter}")
            }
            5..=6 if depth < 3 => {
                let op = self.pick(&["UNION ALL", "UNION", "EXCEPT", "INTERSECT"]);
                let (a, b) = (self.query(depth + 1, ctes), self.query(depth + 1, ctes));
                format!("({a}) {op} ({b})")
            }
            7..=8 if depth < 3 => {
                // A CTE named like a catalog is fine in its scope; out of it, the name is the
                // catalog again.
                let name = if self.chance(50) {
                    "pg_class".to_owned()
                } else {
                    self.ctes += 1;
                    format!("c{}", self.ctes)
                };
                let body = self.query(depth + 1, ctes);
                let mut inner = ctes.to_vec();
                inner.push(name.clone());
                let rest = self.query(depth + 1, &inner);
                let scoped = format!("WITH {name} AS (SELECT c AS n FROM ({body}) b) {rest}");
                if name == "pg_class" && !ctes.contains(&name) && self.chance(25) {
                    self.reaches_outside = true;
                    format!("SELECT x.c FROM ({scoped}) x, pg_class")
                } else {
                    scoped
                }
            }
            _ => {
                let inner = self.query(depth + 1, ctes);
                format!("SELECT c FROM ({inner}) sub{depth}")
            }
        }
    }
}

/// Whatever the checks accept, PostgreSQL resolved to the tenant's own relations and allowed
/// functions and types only: every generated query that used an outside atom is refused, by
/// both layers together and by PostgreSQL's resolution alone. `TDC_SANDBOX_FUZZ_CASES` sets
/// the number of queries (a short run here; see docs/SECURITY.md for long runs).
async fn generated_queries_never_reach_outside(setup: Setup, _: ()) {
    use rand::SeedableRng;
    use std::collections::HashSet;
    let cases: usize = std::env::var("TDC_SANDBOX_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let seed: u64 = std::env::var("TDC_SANDBOX_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    let scene = scene_in(setup, Duration::from_secs(5)).await;
    let own = attacker_tenant(&scene).await;
    let names: HashSet<String> = std::iter::once("mine".to_owned()).collect();
    let mut grammar = SqlGrammar {
        rng: rand::rngs::StdRng::seed_from_u64(seed),
        victim: scene.victim_schema.clone(),
        own: own.as_str().to_owned(),
        reaches_outside: false,
        ctes: 0,
    };
    let (mut accepted, mut outside, mut refused_by_parser, mut refused_alone) = (0, 0, 0, 0);
    for _ in 0..cases {
        grammar.reaches_outside = false;
        let sql = grammar.query(0, &[]);
        let reaches_outside = grammar.reaches_outside;

        // The server's own path: parsing needs the big stack in unoptimised builds.
        let parser = tinydevcrm::views::sandbox::check_on_own_stack(
            sql.clone(),
            own.as_str().to_owned(),
            names.clone(),
        )
        .await;
        let alone = resolved_alone(&scene, &sql).await;

        if reaches_outside {
            outside += 1;
            assert!(
                alone.is_err(),
                "seed {seed}: PostgreSQL's resolution let through {sql}"
            );
            refused_by_parser += usize::from(parser.is_err());
            refused_alone += usize::from(alone.is_err());
        } else if parser.is_ok() && alone.is_ok() {
            accepted += 1;
        }
    }
    println!(
        "seed {seed}: {cases} queries, {outside} reaching outside (all refused by PostgreSQL's resolution alone: {refused_alone}; also by the parser: {refused_by_parser}), {accepted} harmless ones accepted"
    );
    assert!(
        accepted > cases / 10,
        "the grammar made too few valid queries to mean anything"
    );
    scene.assert_unharmed().await;
}

classes! {
    a_fuzzed_grammar_of_queries_never_reaches_outside: generated_queries_never_reach_outside(());
}

#[tokio::test]
async fn a_page_of_huge_rows_is_refused_instead_of_filling_the_servers_memory() {
    // Arrange: pages of at most 1 MiB, and a view whose rows are 400 KiB each.
    let app = crate::helpers::spawn_app_with(|s| s.rows_response_limit_bytes = 1024 * 1024).await;
    let user = app.signed_up_user().await;
    app.created(
        &user.access,
        "/views/create/",
        json!({"view_name": "wide", "sql_query": "SELECT g, repeat('x', 400000) AS s FROM generate_series(1, 5) AS g"}),
    )
    .await;

    // Act
    let all = app.get_as(&user.access, "/views/wide/rows/?limit=5").await;
    let one = app.get_as(&user.access, "/views/wide/rows/?limit=1").await;

    // Assert: a clear 400 saying what to do; a page within the limit still reads.
    let body = assert_problem(all, StatusCode::BAD_REQUEST, "response_too_large").await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("format=csv")
    );
    assert_eq!(one.status(), StatusCode::OK);
    let rows: Value = one.json().await.expect("json");
    assert_eq!(rows["rows"][0]["s"].as_str().map(str::len), Some(400_000));
}

/// `POST /tables/create/` with the attacker's numbers and the given extra form fields.
async fn create_with_fields(
    scene: &Scene,
    name: &str,
    fields: &[(&str, String)],
) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(numbers(10)).file_name("upload.parquet"),
        )
        .text("table_name", name.to_owned());
    for (field, value) in fields {
        form = form.text((*field).to_owned(), value.clone());
    }
    scene
        .app
        .client
        .post(scene.app.url("/tables/create/"))
        .header("Authorization", format!("Bearer {}", scene.attacker.access))
        .multipart(form)
        .send()
        .await
        .expect("request")
}

/// The victim's one index, built for the attack to aim at; returns its name.
async fn victim_index(scene: &Scene) -> String {
    let built = scene
        .app
        .post_as(
            &scene.victim.access,
            "/tables/secret/indexes/",
            &json!({"columns": ["n"], "unique": true}),
        )
        .await;
    assert_eq!(built.status(), StatusCode::CREATED);
    let body: Value = built.json().await.expect("json");
    body["index_name"].as_str().expect("name").to_owned()
}

/// The victim's index is still there, valid, and the victim's rows are untouched.
async fn assert_victim_index_unharmed(scene: &Scene, index: &str) {
    let listed: Value = scene
        .app
        .get_as(&scene.victim.access, "/tables/secret/indexes/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["index_name"], index, "{listed}");
    assert_eq!(listed[0]["valid"], true, "{listed}");
    scene.assert_unharmed().await;
}

#[tokio::test]
async fn index_requests_in_odd_spellings_are_refused_with_a_clear_code() {
    let scene = scene(Duration::from_secs(5)).await;
    let index = victim_index(&scene).await;
    let long = "x".repeat(64);
    let bodies = [
        (json!({"columns": ["ctid"]}), "unknown_column"),
        (json!({"columns": ["xmin"]}), "unknown_column"),
        (json!({"columns": ["N"]}), "unknown_column"),
        (json!({"columns": ["\"n\""]}), "unknown_column"),
        (json!({"columns": ["a\"\"b"]}), "unknown_column"),
        (
            json!({"columns": ["n\") ; DROP TABLE mine; --"]}),
            "unknown_column",
        ),
        (json!({"columns": ["\u{43f}"]}), "unknown_column"),
        (json!({"columns": [long]}), "unknown_column"),
        (json!({"columns": ["n", "n"]}), "invalid_index"),
        (json!({"columns": []}), "invalid_index"),
        (json!({"columns": vec!["n"; 9]}), "invalid_index"),
        (json!({"columns": [["n"]]}), "invalid_body"),
        (json!({"columns": [1]}), "invalid_body"),
        (json!({"columns": [null]}), "invalid_body"),
        (json!({"columns": ["n"], "unique": "yes"}), "invalid_body"),
        (json!({"columns": ["n"], "name": index}), "invalid_body"),
        (json!([{"columns": ["n"]}]), "invalid_body"),
    ];
    for (body, code) in &bodies {
        let answer = scene
            .app
            .post_as(&scene.attacker.access, "/tables/mine/indexes/", body)
            .await;
        let problem = assert_problem(answer, StatusCode::BAD_REQUEST, code).await;
        assert!(!problem.to_string().contains("t_"), "{problem}");
    }
    // The victim's table, from the attacker: the same 404 as a table nobody has.
    for path in ["/tables/secret/indexes/", "/tables/..%2Fsecret/indexes/"] {
        let answer = scene
            .app
            .post_as(&scene.attacker.access, path, &json!({"columns": ["n"]}))
            .await;
        assert_problem(answer, StatusCode::NOT_FOUND, "not_found").await;
        let answer = scene.app.get_as(&scene.attacker.access, path).await;
        assert_problem(answer, StatusCode::NOT_FOUND, "not_found").await;
    }
    // The victim's index name, through the attacker's table or the victim's.
    for path in [
        format!("/tables/secret/indexes/{index}/"),
        format!("/tables/mine/indexes/{index}/"),
        format!("/tables/mine/indexes/{}/", index.to_uppercase()),
        format!("/tables/mine/indexes/%22{index}%22/"),
        format!("/tables/mine/indexes/..%2Fsecret%2Findexes%2F{index}/"),
        format!("/tables/mine/indexes/{}.{index}/", scene.victim_schema),
        "/tables/mine/indexes/mine/".to_owned(),
        "/tables/mine/indexes/pg_class/".to_owned(),
        format!("/tables/mine/indexes/{long}/"),
    ] {
        let answer = scene.app.delete_as(&scene.attacker.access, &path).await;
        assert_problem(answer, StatusCode::NOT_FOUND, "not_found").await;
    }
    // The same classes in the create form's fields.
    let fields = [
        ("indexes", "{nope".to_owned(), "invalid_index"),
        ("indexes", r#"[[["n"]]]"#.to_owned(), "invalid_index"),
        ("indexes", "[[1]]".to_owned(), "invalid_index"),
        ("unique", r#"["n"]"#.to_owned(), "invalid_index"),
        ("indexes", "[[1e999]]".to_owned(), "invalid_index"),
        ("indexes", r#"[["n", "n"]]"#.to_owned(), "invalid_index"),
        ("unique", r#"[["ctid"]]"#.to_owned(), "unknown_column"),
        ("indexes", r#"[["a""b"]]"#.to_owned(), "invalid_index"),
        (
            "indexes",
            serde_json::to_string(&vec![vec!["n"]; 9]).expect("json"),
            "too_many_indexes",
        ),
    ];
    for (field, value, code) in &fields {
        let answer = create_with_fields(&scene, "odd", &[(*field, value.clone())]).await;
        assert_problem(answer, StatusCode::BAD_REQUEST, code).await;
    }
    let tables: Value = scene
        .app
        .get_as(&scene.attacker.access, "/tables/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(tables.as_array().map(Vec::len), Some(1), "{tables}");
    assert_victim_index_unharmed(&scene, &index).await;
}

#[tokio::test]
async fn racing_index_builds_and_drops_answer_409_or_429_never_500() {
    let scene = scene(Duration::from_secs(5)).await;
    let index = victim_index(&scene).await;
    let app = &scene.app;
    let access = &scene.attacker.access;
    let on_n = json!({"columns": ["n"]});
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let builds = (0..4).map(|_| app.post_as(access, "/tables/mine/indexes/", &on_n));
        statuses.extend(
            futures_util::future::join_all(builds)
                .await
                .into_iter()
                .map(|r| r.status()),
        );
        let listed: Value = app
            .get_as(access, "/tables/mine/indexes/")
            .await
            .json()
            .await
            .expect("json");
        let names: Vec<String> = listed
            .as_array()
            .expect("list")
            .iter()
            .map(|i| i["index_name"].as_str().expect("name").to_owned())
            .collect();
        // Every drop races a build and the other drops (each lists the table first).
        let paths: Vec<String> = names
            .iter()
            .map(|name| format!("/tables/mine/indexes/{name}/"))
            .collect();
        let drops = paths.iter().map(|path| app.delete_as(access, path));
        let build = app.post_as(access, "/tables/mine/indexes/", &on_n);
        let (dropped, built) =
            futures_util::future::join(futures_util::future::join_all(drops), build).await;
        statuses.extend(dropped.into_iter().map(|r| r.status()));
        statuses.push(built.status());
        for leftover in app
            .get_as(access, "/tables/mine/indexes/")
            .await
            .json::<Value>()
            .await
            .expect("json")
            .as_array()
            .expect("list")
        {
            let name = leftover["index_name"].as_str().expect("name");
            app.delete_as(access, &format!("/tables/mine/indexes/{name}/"))
                .await;
        }
    }
    for status in &statuses {
        assert!(
            [201, 204, 409, 429].contains(&status.as_u16()),
            "a racing build or drop answered {status}: {statuses:?}"
        );
    }
    assert_victim_index_unharmed(&scene, &index).await;
}

/// A keyset cursor of the attacker's `mine` with `keyset` replaced by `edit` of it.
fn forged(real: &str, edit: impl FnOnce(&mut Value)) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut json: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(real).expect("base64")).expect("json");
    edit(&mut json["keyset"]);
    URL_SAFE_NO_PAD.encode(json.to_string())
}

#[tokio::test]
async fn forged_keyset_cursors_are_400s_and_reach_nothing() {
    let scene = scene(Duration::from_secs(5)).await;
    let app = &scene.app;
    let access = &scene.attacker.access;
    let page: Value = app
        .get_as(access, "/tables/mine/rows/?order=n.desc&limit=2")
        .await
        .json()
        .await
        .expect("json");
    let real = page["next_cursor"]
        .as_str()
        .expect("a keyset cursor")
        .to_owned();
    let values = |v: Value| move |k: &mut Value| k["values"] = v;
    let cases: Vec<(String, &str)> = vec![
        // Values that do not cast to the column's type: the value is a bind parameter, and the
        // cursor's fault (checked before the rows statement runs).
        (forged(&real, values(json!(["abc"]))), "invalid_cursor"),
        (forged(&real, values(json!(["1.5"]))), "invalid_cursor"),
        (forged(&real, values(json!(["NaN"]))), "invalid_cursor"),
        (
            forged(&real, values(json!(["9".repeat(400)]))),
            "invalid_cursor",
        ),
        (
            forged(&real, values(json!(["2026-01-01T00:00:00Z"]))),
            "invalid_cursor",
        ),
        (
            forged(&real, values(json!(["1) OR true; DROP TABLE mine; --"]))),
            "invalid_cursor",
        ),
        (
            forged(&real, |k| k["ctid"] = json!("(0,70000)")),
            "invalid_cursor",
        ),
        // Shapes the API never issues.
        (forged(&real, values(json!([]))), "invalid_cursor"),
        (forged(&real, values(json!(["1", "2"]))), "invalid_cursor"),
        (forged(&real, values(json!([1]))), "invalid_cursor"),
        (forged(&real, values(json!([["1"]]))), "invalid_cursor"),
        (
            forged(&real, values(json!(vec!["1"; 65]))),
            "invalid_cursor",
        ),
        (
            forged(&real, |k| k["ctid"] = json!("(0,1); SELECT 1")),
            "invalid_cursor",
        ),
        (forged(&real, |k| k["ctid"] = json!(null)), "invalid_cursor"),
        (
            forged(&real, |k| k["order"] = json!([["n", false, null]])),
            "invalid_cursor",
        ),
        (forged(&real, |k| k["order"] = json!("n")), "invalid_cursor"),
        (format!("{real}=="), "invalid_cursor"),
        ("!!!!".to_owned(), "invalid_cursor"),
    ];
    for (cursor, code) in &cases {
        let answer = app
            .get_as(
                access,
                &format!("/tables/mine/rows/?order=n.desc&limit=2&cursor={cursor}"),
            )
            .await;
        assert_problem(answer, StatusCode::BAD_REQUEST, code).await;
    }
    // A cursor of the attacker's order, aimed at the victim's table: the same 404 as no table.
    let answer = app
        .get_as(
            access,
            &format!("/tables/secret/rows/?order=n.desc&limit=2&cursor={real}"),
        )
        .await;
    assert_problem(answer, StatusCode::NOT_FOUND, "not_found").await;
    // A NULL where the column has none is just a position: the page is the attacker's own.
    let answer = app
        .get_as(
            access,
            &format!(
                "/tables/mine/rows/?order=n.desc&limit=2&cursor={}",
                forged(&real, values(json!([null])))
            ),
        )
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    scene.assert_unharmed().await;
}

#[tokio::test]
async fn a_revoked_session_is_refused_at_once_on_the_process_that_cached_it() {
    let scene = scene(Duration::from_secs(5)).await;
    let app = &scene.app;
    // Logout, then the access token it leaves behind: cached live a moment ago.
    let user = app.signed_up_user().await;
    assert_eq!(app.me(&user.access).await.status(), StatusCode::OK);
    assert_eq!(app.blacklist(&user.refresh).await.status(), StatusCode::OK);
    for _ in 0..3 {
        assert_problem(
            app.me(&user.access).await,
            StatusCode::UNAUTHORIZED,
            "token_revoked",
        )
        .await;
    }
    // A refresh token used twice revokes the session: both access tokens die with it.
    let user = app.signed_up_user().await;
    assert_eq!(app.me(&user.access).await.status(), StatusCode::OK);
    let fresh: Value = app.refresh(&user.refresh).await.json().await.expect("json");
    let new_access = fresh["access"].as_str().expect("access").to_owned();
    assert_eq!(app.me(&new_access).await.status(), StatusCode::OK);
    assert_problem(
        app.refresh(&user.refresh).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    for access in [&user.access, &new_access] {
        assert_problem(
            app.me(access).await,
            StatusCode::UNAUTHORIZED,
            "token_revoked",
        )
        .await;
    }
    // Nobody else's session went with them.
    assert_eq!(app.me(&scene.victim.access).await.status(), StatusCode::OK);
    scene.assert_unharmed().await;
}

/// The attacker's schema name, read from `/auth/users/me/`.
async fn schema_of(app: &TestApp, access: &str) -> String {
    let me: Value = app.me(access).await.json().await.expect("json");
    format!(
        "t_{}",
        uuid::Uuid::parse_str(me["id"].as_str().expect("id"))
            .expect("uuid")
            .simple()
    )
}

/// `POST /views/create/` as the attacker.
async fn attacker_view(
    scene: &Scene,
    name: &str,
    sql: &str,
    key: Option<Value>,
) -> reqwest::Response {
    let mut body = json!({"view_name": name, "sql_query": sql});
    if let Some(key) = key {
        body["unique_key"] = key;
    }
    scene
        .app
        .post_as(&scene.attacker.access, "/views/create/", &body)
        .await
}

#[tokio::test]
async fn index_names_collide_with_tables_and_views_as_409s_and_leave_nothing_behind() {
    let scene = scene(Duration::from_secs(5)).await;
    let index = victim_index(&scene).await;
    let app = &scene.app;
    let access = &scene.attacker.access;
    let built: Value = app
        .post_as(
            access,
            "/tables/mine/indexes/",
            &json!({"columns": ["n"], "unique": true}),
        )
        .await
        .json()
        .await
        .expect("json");
    let own = built["index_name"].as_str().expect("name").to_owned();
    // A view with a unique_key gets an index PostgreSQL names `<view>_<column>_idx`.
    let keyed = attacker_view(&scene, "keyed", "SELECT n FROM mine", Some(json!(["n"]))).await;
    assert_eq!(keyed.status(), StatusCode::CREATED);
    for name in [own.as_str(), "keyed_n_idx"] {
        let answer = create_with_fields(&scene, name, &[]).await;
        let problem = assert_problem(answer, StatusCode::CONFLICT, "table_exists").await;
        assert!(
            problem["detail"]
                .as_str()
                .expect("detail")
                .contains("index"),
            "{problem}"
        );
        let answer = attacker_view(&scene, name, "SELECT 1 AS x", None).await;
        let problem = assert_problem(answer, StatusCode::CONFLICT, "name_taken").await;
        assert!(
            problem["detail"]
                .as_str()
                .expect("detail")
                .contains("index"),
            "{problem}"
        );
        let answer = attacker_view(&scene, name, "SELECT n FROM mine", Some(json!(["n"]))).await;
        assert_problem(answer, StatusCode::CONFLICT, "name_taken").await;
    }
    // The victim's index name is no name of the attacker's: it is free in the attacker's schema.
    let answer = attacker_view(&scene, &index, "SELECT 1 AS x", None).await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    scene.delete_view(&index).await;
    // The reverse: a table named like the index a view's key will get; the key index goes
    // under another name.
    assert_eq!(
        create_with_fields(&scene, "other_n_idx", &[])
            .await
            .status(),
        StatusCode::CREATED
    );
    let other = attacker_view(&scene, "other", "SELECT n FROM mine", Some(json!(["n"]))).await;
    assert_eq!(other.status(), StatusCode::CREATED);
    // A replace that repeats the unique key is refused whole; the rows and the index stay.
    let answer = app
        .post_as(
            access,
            "/tables/mine/rows/?mode=replace",
            &json!([{"n": 1}, {"n": 1}]),
        )
        .await;
    assert_problem(answer, StatusCode::CONFLICT, "duplicate_key").await;
    let mine: Value = app
        .get_as(access, "/tables/mine/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(mine["row_count"], 10, "{mine}");
    let listed: Value = app
        .get_as(access, "/tables/mine/indexes/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed[0]["index_name"], own.as_str(), "{listed}");
    // Dropping the table takes its indexes along: their names are free again.
    for view in ["keyed", "other"] {
        scene.delete_view(view).await;
    }
    assert_eq!(
        app.delete_as(access, "/tables/mine/").await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        create_with_fields(&scene, &own, &[]).await.status(),
        StatusCode::CREATED
    );
    for table in [own.as_str(), "other_n_idx"] {
        let path = format!("/tables/{table}/");
        assert_eq!(
            app.delete_as(access, &path).await.status(),
            StatusCode::NO_CONTENT
        );
    }
    assert_victim_index_unharmed(&scene, &index).await;
}

/// The attacker's rows of `path` under `order`, walked page by page with `limit`; panics on
/// any answer but 200.
async fn walk_rows(scene: &Scene, path: &str, order: &str, limit: usize) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut url = format!("{path}?order={order}&limit={limit}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let answer = scene.app.get_as(&scene.attacker.access, &url).await;
        assert_eq!(answer.status(), StatusCode::OK, "{url}");
        let page: Value = answer.json().await.expect("json");
        rows.extend(page["rows"].as_array().expect("rows").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return rows,
        }
    }
    panic!("{path} {order}: the walk never ended");
}

/// The `next_cursor` of the first page of `path` under `order` (2 rows).
async fn first_cursor(scene: &Scene, path: &str, order: &str) -> String {
    let page: Value = scene
        .app
        .get_as(
            &scene.attacker.access,
            &format!("{path}?order={order}&limit=2"),
        )
        .await
        .json()
        .await
        .expect("json");
    page["next_cursor"].as_str().expect("a cursor").to_owned()
}

#[tokio::test]
async fn cursors_reused_across_relations_orders_and_changes_are_invalid_cursor_or_a_true_page() {
    let scene = scene(Duration::from_secs(5)).await;
    let app = &scene.app;
    let access = &scene.attacker.access;
    // Awkward values: NULLs, NaN, -0 and infinities, mixed-case and accented text,
    // timestamps with time zones and microseconds, exact numerics.
    let awkward = "SELECT g AS id,
        CASE WHEN g % 5 = 0 THEN NULL ELSE g % 7 END AS k,
        CASE WHEN g % 6 = 0 THEN 'NaN'::float8 WHEN g % 11 = 0 THEN NULL
             WHEN g % 13 = 0 THEN '-0'::float8 WHEN g % 17 = 0 THEN '-Infinity'::float8
             ELSE (g % 4) / 3.0 END::float8 AS f,
        CASE WHEN g % 4 = 0 THEN NULL
             ELSE (ARRAY['a', 'B', 'b', 'A', 'é', 'e', 'Z', ' z', 'a b', 'ab'])[1 + g % 10] END AS s,
        CASE WHEN g % 9 = 0 THEN NULL
             ELSE timestamptz '2026-01-01 00:00:00.123456+05:30' + (g % 8) * interval '1 hour 0.000001 second' END AS ts,
        (g % 3)::numeric / 7 AS num
      FROM generate_series(1, 41) g";
    for (name, key) in [("awkward", None), ("keyed", Some(json!(["id"])))] {
        let made = attacker_view(&scene, name, awkward, key).await;
        assert_eq!(made.status(), StatusCode::CREATED);
    }
    let sorted = |rows: &[Value]| {
        let mut texts: Vec<String> = rows.iter().map(Value::to_string).collect();
        texts.sort();
        texts
    };
    for view in ["awkward", "keyed"] {
        let path = format!("/views/{view}/rows/");
        for order in [
            "k",
            "k.desc",
            "k.asc.nullsfirst",
            "k.desc.nullslast",
            "f",
            "f.desc.nullslast",
            "s",
            "s.desc",
            "s.asc.nullsfirst",
            "ts",
            "ts.desc.nullslast",
            "num.desc",
            "k.desc,f.asc.nullsfirst",
            "s,ts.desc",
            "f.desc,id",
            "k.nullsfirst,s.desc,f",
        ] {
            let full: Value = app
                .get_as(access, &format!("{path}?order={order}&limit=1000"))
                .await
                .json()
                .await
                .expect("json");
            let full = full["rows"].as_array().expect("rows").clone();
            assert_eq!(full.len(), 41);
            for limit in [1, 4, 7] {
                let walked = walk_rows(&scene, &path, order, limit).await;
                assert_eq!(
                    sorted(&walked),
                    sorted(&full),
                    "{view} {order} by {limit}: rows skipped or repeated"
                );
            }
        }
    }
    // Cursors carried to another relation whose column of the same name has another type.
    let typed = "SELECT 'x' || g AS n, g::float8 / 3 AS id FROM generate_series(1, 5) g";
    assert_eq!(
        attacker_view(&scene, "typed", typed, None).await.status(),
        StatusCode::CREATED
    );
    let text_cursor = first_cursor(&scene, "/views/typed/rows/", "n").await;
    let float_cursor = first_cursor(&scene, "/views/typed/rows/", "id").await;
    let ts_cursor = first_cursor(&scene, "/views/awkward/rows/", "ts").await;
    let nan_cursor = first_cursor(&scene, "/views/awkward/rows/", "f.desc").await;
    for (path, order, cursor) in [
        ("/tables/mine/rows/", "n", &text_cursor),
        ("/views/keyed/rows/", "id", &float_cursor),
        ("/views/keyed/rows/", "id", &text_cursor),
        ("/views/awkward/rows/", "k", &text_cursor),
        ("/views/typed/rows/", "n", &ts_cursor),
    ] {
        let url = format!("{path}?order={order}&limit=2&cursor={cursor}");
        let answer = app.get_as(access, &url).await;
        if answer.status() != StatusCode::OK {
            assert_problem(answer, StatusCode::BAD_REQUEST, "invalid_cursor").await;
        }
    }
    for (path, order) in [("/tables/mine/rows/", "n"), ("/views/keyed/rows/", "id")] {
        // Not this relation's order at all, or a value that does not cast to the column.
        for cursor in [&ts_cursor, &nan_cursor] {
            let url = format!("{path}?order={order}&limit=2&cursor={cursor}");
            assert_problem(
                app.get_as(access, &url).await,
                StatusCode::BAD_REQUEST,
                "invalid_cursor",
            )
            .await;
        }
    }
    let url = format!("/tables/mine/rows/?order=n&limit=2&cursor={text_cursor}");
    let problem = assert_problem(
        app.get_as(access, &url).await,
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
    )
    .await;
    assert!(!problem.to_string().contains("t_"), "{problem}");
    // An order on a column the table lacks is refused before any cursor is read.
    let url = format!("/tables/mine/rows/?order=id&limit=2&cursor={float_cursor}");
    assert_problem(
        app.get_as(access, &url).await,
        StatusCode::BAD_REQUEST,
        "unknown_column",
    )
    .await;
    let typed_n = first_cursor(&scene, "/views/typed/rows/", "n.desc").await;
    let url = format!("/tables/mine/rows/?order=n.desc&limit=2&cursor={typed_n}");
    assert_problem(
        app.get_as(access, &url).await,
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
    )
    .await;
    // A cursor of the table before it was replaced by one with another type.
    let before = first_cursor(&scene, "/tables/mine/rows/", "n.desc").await;
    assert_eq!(
        app.delete_as(access, "/tables/mine/").await.status(),
        StatusCode::NO_CONTENT
    );
    let texts = arrow::array::StringArray::from(vec!["a", "b", "c"]);
    let file = crate::helpers::parquet_of(vec![("n", Arc::new(texts))]);
    assert_eq!(
        app.create_table(access, file, "mine", None).await.status(),
        StatusCode::CREATED
    );
    let url = format!("/tables/mine/rows/?order=n.desc&limit=2&cursor={before}");
    let answer = app.get_as(access, &url).await;
    assert_eq!(
        answer.status(),
        StatusCode::OK,
        "a number is a text too: a position"
    );
    // Offset and physical cursors swapped with keyset ones.
    let physical: Value = app
        .get_as(access, "/tables/mine/rows/?limit=1")
        .await
        .json()
        .await
        .expect("json");
    let physical = physical["next_cursor"].as_str().expect("cursor").to_owned();
    let url = format!("/tables/mine/rows/?order=n&limit=1&cursor={physical}");
    assert_problem(
        app.get_as(access, &url).await,
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
    )
    .await;
    let url = format!("/tables/mine/rows/?limit=1&cursor={typed_n}");
    assert_problem(
        app.get_as(access, &url).await,
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
    )
    .await;
    for view in ["awkward", "keyed", "typed"] {
        scene.delete_view(view).await;
    }
    scene.assert_unharmed().await;
}

#[tokio::test]
async fn a_failed_index_build_leaves_nothing_behind_even_while_the_table_is_being_read() {
    let scene = scene(Duration::from_secs(1)).await;
    let app = &scene.app;
    let access = &scene.attacker.access;
    let schema = schema_of(app, access).await;
    let repeats = Int64Array::from(vec![1, 1, 2, 3]);
    let file = crate::helpers::parquet_of(vec![("n", Arc::new(repeats))]);
    assert_eq!(
        app.create_table(access, file, "twice", None).await.status(),
        StatusCode::CREATED
    );
    let unique_n = json!({"columns": ["n"], "unique": true});
    for hold in [Duration::from_millis(1500), Duration::from_millis(2500)] {
        // A reader of the table (the tenant's own, say a slow refresh) that the drop of the
        // failed build must wait for: longer than the statement timeout.
        let mut reader = crate::helpers::superuser(&app.db).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "BEGIN; LOCK TABLE {schema}.twice IN ACCESS SHARE MODE"
        )))
        .execute(&mut reader)
        .await
        .expect("lock");
        let release = async {
            tokio::time::sleep(hold).await;
            sqlx::raw_sql("COMMIT")
                .execute(&mut reader)
                .await
                .expect("commit");
        };
        let build = app.post_as(access, "/tables/twice/indexes/", &unique_n);
        let (answer, ()) = futures_util::future::join(build, release).await;
        assert_problem(answer, StatusCode::BAD_REQUEST, "index_failed").await;
        let listed: Value = app
            .get_as(access, "/tables/twice/indexes/")
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(listed, json!([]), "the failed build left an index behind");
    }
    scene.assert_unharmed().await;
}

/// Polls `GET path` with `access` until it is a 401 `token_revoked`, for at most 2 s (the
/// notice of a change made in SQL arrives a moment after its commit); well inside the session
/// cache's 10 s, so a refusal here is the notice's doing, not the cache's expiry.
async fn refused_soon(app: &TestApp, access: &str, path: &str) {
    assert!(app.settings.session_cache >= Duration::from_secs(10));
    let started = std::time::Instant::now();
    loop {
        let answer = app.get_as(access, path).await;
        if answer.status() == StatusCode::UNAUTHORIZED || started.elapsed() > Duration::from_secs(2)
        {
            assert_problem(answer, StatusCode::UNAUTHORIZED, "token_revoked").await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sessions_ended_by_hand_in_sql_are_refused_at_once_even_where_cached() {
    let scene = scene(Duration::from_secs(5)).await;
    let app = &scene.app;
    let user = app.signed_up_user().await;
    let me: Value = app.me(&user.access).await.json().await.expect("json");
    let user_id = uuid::Uuid::parse_str(me["id"].as_str().expect("id")).expect("uuid");
    // Each way of ending a session in SQL, with the session cached a moment before.
    for end in [
        "UPDATE tinydevcrm.sessions SET revoked_at = now(), revoked_reason = 'logout' WHERE user_id = $1",
        "DELETE FROM tinydevcrm.sessions WHERE user_id = $1",
    ] {
        let user = app.login(&user.email, &user.password).await;
        assert_eq!(
            app.get_as(&user.access, "/tables/").await.status(),
            StatusCode::OK
        );
        sqlx::query(sqlx::AssertSqlSafe(end))
            .bind(user_id)
            .execute(&app.pool)
            .await
            .expect("end");
        refused_soon(app, &user.access, "/tables/").await;
    }
    // The user deleted: the cached token creates nothing (it was a 500), and a user
    // registered again with the same e-mail is someone else.
    let user = app.login(&user.email, &user.password).await;
    assert_eq!(
        app.get_as(&user.access, "/tables/").await.status(),
        StatusCode::OK
    );
    sqlx::query("DELETE FROM tinydevcrm.users WHERE user_id = $1")
        .bind(user_id)
        .execute(&app.pool)
        .await
        .expect("delete");
    refused_soon(app, &user.access, "/tables/").await;
    let answer = app
        .create_table(&user.access, numbers(3), "ghost", None)
        .await;
    assert_problem(answer, StatusCode::UNAUTHORIZED, "token_revoked").await;
    let answer = app
        .post_as(
            &user.access,
            "/views/create/",
            &json!({"view_name": "ghost", "sql_query": "SELECT 1 AS x"}),
        )
        .await;
    assert_problem(answer, StatusCode::UNAUTHORIZED, "token_revoked").await;
    assert_eq!(
        app.register(&user.email, &user.password).await.status(),
        StatusCode::CREATED
    );
    for path in ["/tables/", "/auth/users/me/"] {
        assert_problem(
            app.get_as(&user.access, path).await,
            StatusCode::UNAUTHORIZED,
            "token_revoked",
        )
        .await;
    }
    assert_problem(
        app.refresh(&user.refresh).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    let again = app.login(&user.email, &user.password).await;
    let tables: Value = app
        .get_as(&again.access, "/tables/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(tables, json!([]));
    assert_eq!(app.me(&scene.victim.access).await.status(), StatusCode::OK);
    scene.assert_unharmed().await;
}

#[tokio::test]
async fn view_unique_keys_in_odd_spellings_and_repeats_are_clear_400s() {
    let scene = scene(Duration::from_secs(5)).await;
    let app = &scene.app;
    let access = &scene.attacker.access;
    let sql = "SELECT n AS id, NULLIF(n % 3, 0) AS maybe, n % 2 AS \"Parity\" FROM mine";
    let cases = [
        (json!(["id", "id"]), "invalid_unique_key"),
        (json!(["ID"]), "invalid_unique_key"),
        (json!(["parity"]), "invalid_unique_key"),
        (json!(["\"Parity\""]), "invalid_unique_key"),
        (json!(["lower(id)"]), "invalid_unique_key"),
        (json!(["id + 1"]), "invalid_unique_key"),
        (json!(["ctid"]), "invalid_unique_key"),
        (json!(["xmin"]), "invalid_unique_key"),
        (json!(["n"]), "invalid_unique_key"),
        (json!(["*"]), "invalid_unique_key"),
        (json!([]), "invalid_unique_key"),
        (json!(["id;DROP TABLE mine"]), "invalid_unique_key"),
        (json!(["Parity"]), "duplicate_unique_key"),
        (json!(["maybe"]), "duplicate_unique_key"),
        (json!([null]), "invalid_body"),
    ];
    for (key, code) in &cases {
        let answer = attacker_view(&scene, "keyed", sql, Some(key.clone())).await;
        let problem = assert_problem(answer, StatusCode::BAD_REQUEST, code).await;
        assert!(!problem.to_string().contains("t_"), "{key}: {problem}");
    }
    // `SELECT *` and a key of two columns are fine.
    let star = attacker_view(&scene, "keyed", "SELECT * FROM mine", Some(json!(["n"]))).await;
    assert_eq!(star.status(), StatusCode::CREATED);
    // A refresh that repeats the key, once with values and once with two NULLs; then one NULL.
    for (rows, code) in [
        (json!([{"n": 3}]), "duplicate_unique_key"),
        (json!([{"n": null}, {"n": null}]), "duplicate_unique_key"),
        (json!([{"n": null}]), "null_unique_key"),
    ] {
        let added = app.post_as(access, "/tables/mine/rows/", &rows).await;
        assert_eq!(added.status(), StatusCode::OK);
        let answer = app
            .post_as(access, "/views/keyed/refresh/", &json!({}))
            .await;
        let problem = assert_problem(answer, StatusCode::BAD_REQUEST, code).await;
        assert!(
            problem["detail"]
                .as_str()
                .expect("detail")
                .contains("\"n\""),
            "{problem}"
        );
        let replaced = app
            .client
            .post(app.url("/tables/mine/rows/?mode=replace"))
            .header("Authorization", format!("JWT {access}"))
            .multipart(reqwest::multipart::Form::new().part(
                "file",
                reqwest::multipart::Part::bytes(numbers(10)).file_name("upload.parquet"),
            ))
            .send()
            .await
            .expect("request");
        assert_eq!(replaced.status(), StatusCode::OK);
        // The view still has its last good rows.
        let rows: Value = app
            .get_as(access, "/views/keyed/rows/?order=n")
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(rows["rows"].as_array().map(Vec::len), Some(10), "{rows}");
    }
    scene.delete_view("keyed").await;
    scene.assert_unharmed().await;
}

#[tokio::test]
async fn indexes_never_take_a_tenant_past_its_quota_even_when_their_drop_must_wait() {
    let app = spawn_app_in(Setup::Hardened, |s| {
        s.tenant_statement_timeout = Duration::from_secs(1);
        s.tenant_storage_bytes = 1_500_000;
    })
    .await;
    let user = app.signed_up_user().await;
    let access = &user.access;
    let wide: Vec<String> = (0..2000).map(|i| format!("{i:0>200}")).collect();
    let file =
        crate::helpers::parquet_of(vec![("s", Arc::new(arrow::array::StringArray::from(wide)))]);
    assert_eq!(
        app.create_table(access, file.clone(), "wide", None)
            .await
            .status(),
        StatusCode::CREATED
    );
    let schema = schema_of(&app, access).await;
    let on_s = json!({"columns": ["s"]});
    let mut statuses = Vec::new();
    for _ in 0..6 {
        // A reader of the table that the drop of an index over the quota must wait for,
        // longer than the statement timeout.
        let mut reader = crate::helpers::superuser(&app.db).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "BEGIN; LOCK TABLE {schema}.wide IN ACCESS SHARE MODE"
        )))
        .execute(&mut reader)
        .await
        .expect("lock");
        let release = async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            sqlx::raw_sql("COMMIT")
                .execute(&mut reader)
                .await
                .expect("commit");
        };
        let build = app.post_as(access, "/tables/wide/indexes/", &on_s);
        let (answer, ()) = futures_util::future::join(build, release).await;
        let status = answer.status();
        statuses.push(status);
        if status != StatusCode::CREATED {
            assert_problem(answer, StatusCode::CONFLICT, "storage_quota_exceeded").await;
        }
        let me: Value = app.me(access).await.json().await.expect("json");
        assert!(
            me["storage_bytes"].as_i64().expect("bytes") <= 1_500_000,
            "over the quota after {statuses:?}: {me}"
        );
        let listed: Value = app
            .get_as(access, "/tables/wide/indexes/")
            .await
            .json()
            .await
            .expect("json");
        for index in listed.as_array().expect("list") {
            assert_eq!(index["valid"], true, "{listed}");
        }
    }
    assert!(statuses.contains(&StatusCode::CONFLICT), "{statuses:?}");
    // The create form with indexes that do not fit: refused whole, no table left.
    let eight = serde_json::to_string(&vec![vec!["s"]; 8]).expect("json");
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(file).file_name("upload.parquet"),
        )
        .text("table_name", "wider")
        .text("indexes", eight);
    let answer = app
        .client
        .post(app.url("/tables/create/"))
        .header("Authorization", format!("JWT {access}"))
        .multipart(form)
        .send()
        .await
        .expect("request");
    assert_problem(answer, StatusCode::CONFLICT, "storage_quota_exceeded").await;
    let tables: Value = app
        .get_as(access, "/tables/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(tables.as_array().map(Vec::len), Some(1), "{tables}");
}

/// The rows lookup reads one view of both registries (`tinydevcrm.relations`): a table's route
/// must never find a view, a view's route never a table, and neither another tenant's, in any
/// of the read paths (page, ordered page with its keys, export).
#[tokio::test]
async fn the_rows_routes_find_only_the_callers_relation_of_their_own_kind() {
    let scene = scene(Duration::from_secs(5)).await;
    let app = &scene.app;
    for (access, body) in [
        (
            &scene.victim.access,
            json!({"view_name": "vsecret", "sql_query": "SELECT n FROM secret", "unique_key": ["n"]}),
        ),
        (
            &scene.attacker.access,
            json!({"view_name": "vmine", "sql_query": "SELECT n FROM mine", "unique_key": ["n"]}),
        ),
    ] {
        let res = app.post_as(access, "/views/create/", &body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let own = app
        .get_as(&scene.attacker.access, "/views/vmine/rows/?order=n&limit=2")
        .await;
    assert_eq!(own.status(), StatusCode::OK, "the control: its own view");
    for relation in [
        "/tables/vmine/",
        "/views/mine/",
        "/tables/vsecret/",
        "/views/vsecret/",
        "/views/secret/",
        "/tables/secret/",
    ] {
        for query in [
            "",
            "?order=n&limit=2",
            "?order=n.desc",
            "?format=csv",
            "?format=parquet",
        ] {
            let path = format!("{relation}rows/{query}");
            let answer = app.get_as(&scene.attacker.access, &path).await;
            let problem = assert_problem(answer, StatusCode::NOT_FOUND, "not_found").await;
            assert!(
                !problem.to_string().contains(&scene.victim_schema),
                "{path}: {problem}"
            );
        }
    }
    let deleted = app.delete_as(&scene.attacker.access, "/views/vmine/").await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    scene.assert_unharmed().await;
}

/// The read spellings of one relation: default page, keyset page, page/size, CSV, Parquet.
const READS: [&str; 5] = [
    "",
    "?order=n.desc&limit=2",
    "?page=2&size=3",
    "?format=csv",
    "?format=parquet",
];

/// The rows lookup runs a round trip before the rows statement and holds nothing on the
/// relation: what the tenant does to it in between (a drop, a rename, a replaced column list,
/// a view registered but not filled yet) must come back as PostgreSQL's verdict, a 4xx, never
/// a 500. The moment is made certain by holding the table's lock as the superuser until the
/// read waits on it, then changing the table and letting the read go.
#[tokio::test]
async fn a_relation_changed_between_its_lookup_and_its_read_is_a_4xx_never_a_500() {
    let scene = scene(Duration::from_secs(5)).await;
    let app = &scene.app;
    let access = &scene.attacker.access;
    let schema = schema_of(app, access).await;
    let oid: i64 = sqlx::query_scalar("SELECT $1::regclass::oid::int8")
        .bind(format!("{schema}.mine"))
        .fetch_one(&app.pool)
        .await
        .expect("oid");
    let mine = format!("\"{schema}\".mine");
    // (change, undo, status, code): the read finds `mine`, then meets the change.
    let changes = [
        (
            format!("ALTER TABLE {mine} RENAME TO gone"),
            format!("ALTER TABLE \"{schema}\".gone RENAME TO mine"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            format!("ALTER TABLE {mine} RENAME COLUMN n TO m"),
            format!("ALTER TABLE {mine} RENAME COLUMN m TO n"),
            StatusCode::CONFLICT,
            "relation_changed",
        ),
    ];
    let mut admin = crate::helpers::superuser(&app.db).await;
    // The describe route counts the rows as the tenant after its lookup too.
    let reads = READS
        .iter()
        .map(|read| format!("/tables/mine/rows/{read}"))
        .chain(["/tables/mine/".to_owned()]);
    for (change, undo, status, code) in &changes {
        for path in reads.clone() {
            // The describe route reads no column by name: a replaced column list is no matter.
            if path == "/tables/mine/" && *code == "relation_changed" {
                continue;
            }
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "BEGIN; LOCK TABLE {mine} IN ACCESS EXCLUSIVE MODE"
            )))
            .execute(&mut admin)
            .await
            .expect("lock");
            let change_when_waited = async {
                for _ in 0..500 {
                    let waiting: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM pg_catalog.pg_locks
                          WHERE relation = $1::oid AND NOT granted",
                    )
                    .bind(oid)
                    .fetch_one(&app.pool)
                    .await
                    .expect("locks");
                    if waiting > 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{change}; COMMIT")))
                    .execute(&mut admin)
                    .await
                    .expect("change");
            };
            let (answer, ()) = tokio::join!(app.get_as(access, &path), change_when_waited);
            let problem = assert_problem(answer, *status, code).await;
            assert!(!problem.to_string().contains(&schema), "{path}: {problem}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(undo.clone()))
                .execute(&mut admin)
                .await
                .expect("undo");
        }
    }
    // A view registered and not filled: the moment between its creation's commit and its
    // first refresh (or after that refresh failed, until it is removed).
    let made = attacker_view(&scene, "unfilled", "SELECT n FROM mine", Some(json!(["n"]))).await;
    assert_eq!(made.status(), StatusCode::CREATED);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "REFRESH MATERIALIZED VIEW \"{schema}\".unfilled WITH NO DATA"
    )))
    .execute(&mut admin)
    .await
    .expect("unfill");
    let reads = READS
        .iter()
        .map(|read| format!("/views/unfilled/rows/{read}"))
        .chain(["/views/unfilled/".to_owned()]);
    for path in reads {
        let answer = app.get_as(access, &path).await;
        assert_problem(answer, StatusCode::CONFLICT, "view_not_populated").await;
    }
    scene.delete_view("unfilled").await;
    scene.assert_unharmed().await;
}

/// Names in the path that resolve to nothing of the caller's: the victim's table in every
/// spelling a path can carry (case, percent- and double encoding, schema-qualified, quoted,
/// look-alikes, combining marks, trailing dot, blank, NUL, longer than 63 bytes), catalogs and
/// the service's own relations. Each is the same 404 as a name nobody has, on both routes and
/// every read, and names no schema.
#[tokio::test]
async fn relation_names_in_any_spelling_find_only_the_callers_own_relation() {
    let scene = scene(Duration::from_secs(5)).await;
    let app = &scene.app;
    let v = &scene.victim_schema;
    let long = format!("secret{}", "_".repeat(60));
    let spellings: Vec<String> = vec![
        "secret".into(),
        "SECRET".into(),
        "sEcReT".into(),
        "%73ecret".into(),
        "%2573ecret".into(),
        "%22secret%22".into(),
        format!("{v}.secret"),
        format!("{v}%2Esecret"),
        format!("%22{v}%22.%22secret%22"),
        "secret.".into(),
        "secret%20".into(),
        "secret%00".into(),
        "%C5%BFecret".into(), // U+017F LATIN SMALL LETTER LONG S: upper-cases to S
        "%EF%BD%93ecret".into(), // U+FF53 FULLWIDTH s
        "se%CC%81cret".into(),
        long,
        "pg_catalog.pg_class".into(),
        "pg_class".into(),
        "tinydevcrm.users".into(),
        "users".into(),
        "relations".into(),
        "..%2Fsecret".into(),
    ];
    let access = &scene.attacker.access;
    for route in ["tables", "views"] {
        for spelling in &spellings {
            for read in READS {
                let path = format!("/{route}/{spelling}/rows/{read}");
                let problem = assert_problem(
                    app.get_as(access, &path).await,
                    StatusCode::NOT_FOUND,
                    "not_found",
                )
                .await;
                // The same path aimed at a name and a schema nobody has: the same answer but
                // for the names, so it tells nothing of what the victim has.
                let ghost_path = ["secret", "SECRET", "sEcReT"]
                    .iter()
                    .fold(path.clone(), |p, name| p.replace(name, "nobody"))
                    .replace(v, GHOST_SCHEMA);
                let ghost: Value = app
                    .get_as(access, &ghost_path)
                    .await
                    .json()
                    .await
                    .expect("json");
                let same = |p: &Value| {
                    ["secret", "SECRET", "sEcReT"]
                        .iter()
                        .fold(p.to_string(), |t, name| t.replace(name, "nobody"))
                        .replace(GHOST_SCHEMA, v)
                };
                assert_eq!(same(&problem), same(&ghost), "{path}");
            }
        }
    }
    scene.assert_unharmed().await;
}

/// Column names that are not the relation's own user columns: system columns, the lookup's
/// own output columns and the catalog's, whole-row and qualified references, the aliases of
/// the statement, and a column only the victim's table has. As a filter, an order or a
/// selection each is 400 `unknown_column`, and the page never holds another's values.
#[tokio::test]
async fn columns_that_are_not_the_relations_own_are_unknown_wherever_they_are_named() {
    let scene = scene(Duration::from_secs(5)).await;
    let app = &scene.app;
    let only_victim = crate::helpers::parquet_of(vec![(
        "only_victim",
        Arc::new(Int64Array::from(vec![987_654_321])) as arrow::array::ArrayRef,
    )]);
    let made = app
        .create_table(&scene.victim.access, only_victim, "mine", None)
        .await;
    assert_eq!(made.status(), StatusCode::CREATED);
    for column in [
        "ctid",
        "xmin",
        "xmax",
        "cmin",
        "cmax",
        "tableoid",
        "oid",
        "column_name",
        "column_type",
        "not_null",
        "unique_keys",
        "keys",
        "attname",
        "relation_name",
        "user_id",
        "mine",
        "t",
        "x",
        "*",
        "t.*",
        "x.n",
        "mine.n",
        "%22n%22",
        "N",
        "only_victim",
    ] {
        for query in [
            format!("{column}=eq.1"),
            format!("{column}=is.null"),
            format!("order={column}"),
            format!("order=n,{column}.desc"),
            format!("select={column}"),
            format!("select=n,{column}&format=csv"),
        ] {
            let path = format!("/tables/mine/rows/?{query}");
            let answer = app.get_as(&scene.attacker.access, &path).await;
            assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{path}");
            let problem: Value = answer.json().await.expect("problem JSON");
            // `t.*` in an order reads as column `t` with the modifier `*`.
            assert!(
                ["unknown_column", "invalid_order"]
                    .contains(&problem["code"].as_str().unwrap_or("")),
                "{path}: {problem}"
            );
            assert!(
                !problem.to_string().contains("987654321"),
                "{path}: {problem}"
            );
        }
    }
    scene.assert_unharmed().await;
}

/// The webhook scene: the victim and the attacker each have a view, a channel on it and a
/// paused webhook (so no worker sends anything) with one failed delivery; the attacker also
/// has a second webhook. Ids: (channel, webhook, delivery) per tenant.
struct WebhookScene {
    scene: Scene,
    victim: (uuid::Uuid, uuid::Uuid, uuid::Uuid),
    attacker: (uuid::Uuid, uuid::Uuid, uuid::Uuid),
    attacker_second: uuid::Uuid,
}

fn uuid_of(v: &Value, key: &str) -> uuid::Uuid {
    v[key].as_str().expect(key).parse().expect("uuid")
}

/// A channel on a new view of `table`, a paused webhook on it and one failed test delivery.
async fn hooked(app: &TestApp, access: &str, table: &str) -> (uuid::Uuid, uuid::Uuid, uuid::Uuid) {
    app.created(
        access,
        "/views/create/",
        json!({"view_name": "hooked", "sql_query": format!("SELECT count(*) AS n FROM {table}")}),
    )
    .await;
    let channel = app
        .created(access, "/channels/create/", json!({"view_name": "hooked"}))
        .await;
    let channel = uuid_of(&channel, "channel_id");
    let webhook = paused_webhook(app, access, channel).await;
    let res = app
        .post_as(
            access,
            &format!("/channels/{channel}/webhooks/{webhook}/test/"),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let delivery = uuid_of(&res.json().await.expect("json"), "delivery_id");
    sqlx::query("UPDATE tinydevcrm.deliveries SET status = 'failed' WHERE delivery_id = $1")
        .bind(delivery)
        .execute(&app.pool)
        .await
        .expect("fail it");
    (channel, webhook, delivery)
}

async fn paused_webhook(app: &TestApp, access: &str, channel: uuid::Uuid) -> uuid::Uuid {
    let created = app
        .created(
            access,
            &format!("/channels/{channel}/webhooks/"),
            json!({"url": "https://hooks.example.com/tdc"}),
        )
        .await;
    let webhook = uuid_of(&created, "webhook_id");
    let res = app
        .patch_as(
            access,
            &format!("/channels/{channel}/webhooks/{webhook}/"),
            &json!({"status": "paused"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    webhook
}

async fn webhook_scene() -> WebhookScene {
    let scene = scene(Duration::from_secs(5)).await;
    let victim = hooked(&scene.app, &scene.victim.access, "secret").await;
    let attacker = hooked(&scene.app, &scene.attacker.access, "mine").await;
    let attacker_second = paused_webhook(&scene.app, &scene.attacker.access, attacker.0).await;
    WebhookScene {
        scene,
        victim,
        attacker,
        attacker_second,
    }
}

impl WebhookScene {
    /// Every subscription and delivery row of `channel`, whole, as JSON.
    async fn rows_of(&self, channel: uuid::Uuid) -> Value {
        sqlx::query_scalar(
            "SELECT json_build_object(
                 'subscriptions', (SELECT coalesce(json_agg(s ORDER BY s.subscription_id), '[]')
                                     FROM tinydevcrm.subscriptions s WHERE s.channel_id = $1),
                 'deliveries', (SELECT coalesce(json_agg(d ORDER BY d.delivery_id), '[]')
                                  FROM tinydevcrm.deliveries d
                                  JOIN tinydevcrm.subscriptions s USING (subscription_id)
                                 WHERE s.channel_id = $1))",
        )
        .bind(channel)
        .fetch_one(&self.scene.app.pool)
        .await
        .expect("rows")
    }
}

/// Ways to write one UUID that `Uuid::parse_str` reads as the same id.
fn id_spellings(id: uuid::Uuid) -> Vec<String> {
    vec![
        id.to_string(),
        id.to_string().to_uppercase(),
        id.simple().to_string(),
        id.braced().to_string(),
        id.urn().to_string(),
        format!("%20{id}"),
    ]
}

#[tokio::test]
async fn another_tenants_webhook_ids_in_any_spelling_and_mix_are_not_found_and_change_nothing() {
    let ws = webhook_scene().await;
    let app = &ws.scene.app;
    let a = &ws.scene.attacker.access;
    let (vc, vw, vd) = ws.victim;
    let (ac, aw, _) = ws.attacker;
    let victim_before = ws.rows_of(vc).await;
    let attacker_before = ws.rows_of(ac).await;

    let mut paths = Vec::new();
    for (c, w) in [(vc, vw), (ac, vw), (vc, aw)] {
        for (cs, ws_) in id_spellings(c).into_iter().zip(id_spellings(w)) {
            paths.push((cs.clone(), ws_.clone()));
            paths.push((c.to_string(), ws_));
            paths.push((cs, w.to_string()));
        }
    }
    for (c, w) in &paths {
        let base = format!("/channels/{c}/webhooks/{w}");
        for (what, res) in [
            ("get", app.get_as(a, &format!("{base}/")).await),
            (
                "patch",
                app.patch_as(
                    a,
                    &format!("{base}/"),
                    &json!({"url": "https://evil.example.com/", "status": "active"}),
                )
                .await,
            ),
            (
                "rotate",
                app.post_as(a, &format!("{base}/rotate-secret/"), &json!({}))
                    .await,
            ),
            (
                "test",
                app.post_as(a, &format!("{base}/test/"), &json!({})).await,
            ),
            ("log", app.get_as(a, &format!("{base}/deliveries/")).await),
            (
                "retry",
                app.post_as(a, &format!("{base}/deliveries/{vd}/retry/"), &json!({}))
                    .await,
            ),
            ("delete", app.delete_as(a, &format!("{base}/")).await),
        ] {
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{what} {base}");
        }
    }
    // The attacker's own channel and webhook with the victim's delivery.
    for d in id_spellings(vd) {
        let path = format!("/channels/{ac}/webhooks/{aw}/deliveries/{d}/retry/");
        let res = app.post_as(a, &path, &json!({})).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // The victim's channel: list and create.
    for c in id_spellings(vc) {
        let path = format!("/channels/{c}/webhooks/");
        assert_eq!(
            app.get_as(a, &path).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
        let res = app
            .post_as(a, &path, &json!({"url": "https://evil.example.com/"}))
            .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }

    assert_eq!(
        ws.rows_of(vc).await,
        victim_before,
        "the victim's rows changed"
    );
    assert_eq!(
        ws.rows_of(ac).await,
        attacker_before,
        "a mixed path reached the attacker's rows"
    );
    ws.scene.assert_unharmed_but_views().await;
}

#[tokio::test]
async fn internal_addresses_smuggled_through_url_spellings_are_refused_on_create_and_patch() {
    let ws = webhook_scene().await;
    let app = &ws.scene.app;
    let a = &ws.scene.attacker.access;
    let (vc, _, _) = ws.victim;
    let (ac, aw, _) = ws.attacker;
    let victim_before = ws.rows_of(vc).await;
    let attacker_before = ws.rows_of(ac).await;
    const RANGE: &str = "TDC_WEBHOOK_ALLOW_CIDRS";
    let long = format!("https://hooks.example.com/{}", "a".repeat(10 * 1024));

    for (url, says) in [
        ("https://[::1]/", RANGE),
        ("https://[::ffff:127.0.0.1]/", "127.0.0.1"),
        ("https://[::ffff:7f00:1]/", "127.0.0.1"),
        ("https://[0:0:0:0:0:ffff:169.254.169.254]/", "metadata"),
        ("https://[::ffff:a9fe:a9fe]/latest/", "metadata"),
        ("https://[64:ff9b::a9fe:a9fe]/", "metadata"),
        ("https://[::127.0.0.1]/", "127.0.0.1"),
        ("https://0.0.0.0/", RANGE),
        ("https://127.1/", "127.0.0.1"),
        ("https://127\u{3002}0\u{3002}0\u{3002}1/", "127.0.0.1"),
        ("https://127\u{ff0e}0\u{ff0e}0\u{ff0e}1/", "127.0.0.1"),
        ("https://\u{ff11}\u{ff12}\u{ff17}.0.0.1/", "127.0.0.1"),
        ("https://evil.com@127.0.0.1/", "user name or password"),
        (
            "https://evil.com:x@hooks.example.com/",
            "user name or password",
        ),
        ("https:\\\\127.0.0.1\\hook", "127.0.0.1"),
        ("https:/\\169.254.169.254/", "metadata"),
        ("https://127.0.0.\t1/", "127.0.0.1"),
        ("https://127.0.\n0.1/", "127.0.0.1"),
        ("\thttps://10.0.0.1/\r\n", RANGE),
        ("https://[fe80::1%25eth0]/", "absolute URL"),
        ("https://hooks.example.com\u{0}/", "absolute URL"),
        ("http://hooks.example.com/", "https://"),
        ("HTTPS://LOCALHOST.:0x1bb@0x7f.1/", "user name or password"),
        (long.as_str(), "longer than"),
    ] {
        for res in [
            app.post_as(
                a,
                &format!("/channels/{ac}/webhooks/"),
                &json!({ "url": url }),
            )
            .await,
            app.patch_as(
                a,
                &format!("/channels/{ac}/webhooks/{aw}/"),
                &json!({ "url": url }),
            )
            .await,
        ] {
            let problem = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_webhook_url").await;
            let detail = problem["detail"].as_str().expect("detail");
            assert!(detail.contains(says), "{url:?}: {detail}");
        }
    }
    // A NUL in a description is refused as a bad request, not a database error.
    for res in [
        app.post_as(
            a,
            &format!("/channels/{ac}/webhooks/"),
            &json!({"url": "https://hooks.example.com/", "description": "a\u{0}b"}),
        )
        .await,
        app.patch_as(
            a,
            &format!("/channels/{ac}/webhooks/{aw}/"),
            &json!({"description": "a\u{0}b"}),
        )
        .await,
    ] {
        assert_problem(res, StatusCode::BAD_REQUEST, "invalid_description").await;
    }
    assert_eq!(
        ws.rows_of(ac).await,
        attacker_before,
        "a refused URL was stored"
    );

    // Host names are taken as written and judged when they resolve, at every delivery attempt
    // (`notify::client`); the stored URL is the parser's normal form.
    for (url, stored) in [
        ("https://localhost/", "https://localhost/"),
        ("https://127.0.0.1.nip.io/", "https://127.0.0.1.nip.io/"),
        ("https://LOCALHOST\u{3002}/x", "https://localhost./x"),
    ] {
        let created = app
            .created(
                a,
                &format!("/channels/{ac}/webhooks/"),
                json!({ "url": url }),
            )
            .await;
        assert_eq!(created["url"], stored, "{url:?}");
        let path = format!(
            "/channels/{ac}/webhooks/{}/",
            uuid_of(&created, "webhook_id")
        );
        assert_eq!(
            app.delete_as(a, &path).await.status(),
            StatusCode::NO_CONTENT
        );
    }
    assert_eq!(
        ws.rows_of(vc).await,
        victim_before,
        "the victim's rows changed"
    );
    ws.scene.assert_unharmed_but_views().await;
}

#[tokio::test]
async fn forged_delivery_log_cursors_are_refused_and_none_reads_another_webhooks_log() {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let ws = webhook_scene().await;
    let app = &ws.scene.app;
    let a = &ws.scene.attacker.access;
    let (vc, vw, vd) = ws.victim;
    let (ac, aw, _) = ws.attacker;
    let victim_before = ws.rows_of(vc).await;
    // A second delivery, so that a page of one has a next_cursor.
    let res = app
        .post_as(
            a,
            &format!("/channels/{ac}/webhooks/{aw}/test/"),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let log = format!("/channels/{ac}/webhooks/{aw}/deliveries/");
    let page: Value = app
        .get_as(a, &format!("{log}?limit=1"))
        .await
        .json()
        .await
        .expect("json");
    let real = page["next_cursor"]
        .as_str()
        .expect("next_cursor")
        .to_owned();
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(&real).expect("base64")).expect("utf8");
    let mut parts = text.splitn(3, '.');
    let (webhook, micros) = (
        parts.next().expect("cursor text"),
        parts.next().expect("cursor text"),
    );
    assert_eq!(webhook, aw.to_string(), "the cursor names its webhook");
    let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);

    let forged = [
        String::new(),
        "=".to_owned(),
        "%00".to_owned(),
        "!!!!".to_owned(),
        // The standard alphabet, padded (the text's length may need no padding: add one).
        format!("{}%3D", STANDARD.encode(&text)),
        format!("{real}%3D%3D"),
        real.to_uppercase(),
        b64(&format!(
            "{aw}.{micros}.{}",
            vd.simple().to_string().repeat(2)
        )),
        b64(&format!("{aw}.99999999999999999999.{vd}")),
        b64(&format!("{aw}.-1000000000000000000.{vd}")),
        b64(&format!("{aw}.-9223372036854775808.{vd}")),
        b64(&format!("{aw}.{micros}.{vd}.{vd}")),
        b64(micros),
        b64(&format!("{aw}.{micros}")),
        b64(&format!("{aw}.{micros}.' OR 1=1 --")),
        // Cursors of the form before they named their webhook.
        b64(&format!("{micros}.{vd}")),
        // The victim's webhook in place of the attacker's.
        b64(&format!("{vw}.{micros}.{vd}")),
        b64(&format!(
            r#"{{"created_at": "{micros}", "delivery_id": "{vd}", "subscription_id": "{vw}"}}"#
        )),
        b64(&format!("{aw}.{micros}\u{0}.{vd}")),
        b64(&"9".repeat(4000)),
        "A".repeat(6000),
    ];
    for cursor in &forged {
        let path = format!("{log}?cursor={cursor}");
        assert_problem(
            app.get_as(a, &path).await,
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        )
        .await;
    }
    // A far-future position (year 255,000, inside both chrono's and PostgreSQL's ranges) is
    // a position like any other: the log before it, the attacker's own two deliveries.
    let far = format!(
        "{log}?cursor={}",
        b64(&format!("{aw}.8000000000000000000.{vd}"))
    );
    let page: Value = app.get_as(a, &far).await.json().await.expect("json");
    assert_eq!(
        page["deliveries"].as_array().map(Vec::len),
        Some(2),
        "{page}"
    );
    assert!(!page.to_string().contains(&vd.to_string()), "{page}");
    for query in [
        "limit=-1",
        "limit=1e3",
        "limit=99999999999999999999",
        "limit=1&limit=2",
        &format!("cursor={real}&cursor={real}"),
        "cursor[]=x",
        "webhook_id=x",
    ] {
        let res = app.get_as(a, &format!("{log}?{query}")).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{query}");
    }
    // A real cursor on another webhook of the attacker's, and on the victim's webhook: not a
    // position in either log. The cursor is checked before the webhook is looked up, so the
    // answer is the same whether the webhook exists or not.
    for path in [
        format!(
            "/channels/{ac}/webhooks/{}/deliveries/?cursor={real}",
            ws.attacker_second
        ),
        format!("/channels/{vc}/webhooks/{vw}/deliveries/?cursor={real}"),
        format!(
            "/channels/{vc}/webhooks/{}/deliveries/?cursor={real}",
            uuid::Uuid::new_v4()
        ),
    ] {
        assert_problem(
            app.get_as(a, &path).await,
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        )
        .await;
    }
    let res = app
        .get_as(a, &format!("/channels/{vc}/webhooks/{vw}/deliveries/"))
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(
        !app.get_as(a, &log)
            .await
            .text()
            .await
            .expect("text")
            .contains(&vd.to_string())
    );
    assert_eq!(
        ws.rows_of(vc).await,
        victim_before,
        "the victim's rows changed"
    );
    ws.scene.assert_unharmed_but_views().await;
}

/// Two tenants with a channel and an e-mail subscription each (unconfirmed, their confirmation
/// queued). SMTP points at a port nothing listens on and no drainer runs, so the rows stay
/// exactly as the API left them.
struct EmailScene {
    app: TestApp,
    victim: TestUser,
    attacker: TestUser,
    /// Channel, subscription, and the confirmation delivery.
    victim_ids: (uuid::Uuid, uuid::Uuid, uuid::Uuid),
    attacker_ids: (uuid::Uuid, uuid::Uuid, uuid::Uuid),
}

async fn email_scene() -> EmailScene {
    let port = crate::smtp::free_port();
    let app = crate::helpers::spawn_app_with(|s| {
        s.smtp_url = Some(secrecy::SecretString::from(format!(
            "smtp://127.0.0.1:{port}"
        )));
        s.smtp_from = Some("noreply@example.com".to_owned());
        s.outbox = false;
        s.email_confirm_resend = Duration::ZERO;
    })
    .await;
    let (victim, vc) = app.user_with_channel().await;
    let (attacker, ac) = app.user_with_channel().await;
    let mut ids = Vec::new();
    for (user, channel, to) in [
        (&victim, &vc, "victim@example.com"),
        (&attacker, &ac, "attacker@example.com"),
    ] {
        let created = app
            .created(
                &user.access,
                &format!("/channels/{channel}/emails/"),
                json!({"to": to}),
            )
            .await;
        let email = created["email_id"].as_str().expect("id").to_owned();
        let log: Value = app
            .get_as(
                &user.access,
                &format!("/channels/{channel}/emails/{email}/deliveries/"),
            )
            .await
            .json()
            .await
            .expect("json");
        let parse = |s: &str| uuid::Uuid::parse_str(s).expect("uuid");
        ids.push((
            parse(channel),
            parse(&email),
            parse(
                log["deliveries"][0]["delivery_id"]
                    .as_str()
                    .expect("delivery"),
            ),
        ));
    }
    EmailScene {
        app,
        victim,
        attacker,
        victim_ids: ids[0],
        attacker_ids: ids[1],
    }
}

impl EmailScene {
    /// Every subscription and delivery row of `channel`, and every per-address confirmation
    /// record, whole, as JSON.
    async fn rows_of(&self, channel: uuid::Uuid) -> Value {
        sqlx::query_scalar(
            "SELECT json_build_object(
                 'subscriptions', (SELECT coalesce(json_agg(s ORDER BY s.subscription_id), '[]')
                                     FROM tinydevcrm.subscriptions s WHERE s.channel_id = $1),
                 'deliveries', (SELECT coalesce(json_agg(d ORDER BY d.delivery_id), '[]')
                                  FROM tinydevcrm.deliveries d
                                  JOIN tinydevcrm.subscriptions s USING (subscription_id)
                                 WHERE s.channel_id = $1),
                 'confirmations', (SELECT coalesce(json_agg(c ORDER BY c.user_id, c.sent_at), '[]')
                                     FROM tinydevcrm.email_confirmation_log c),
                 'suppressions', (SELECT coalesce(json_agg(x ORDER BY x.address_hash), '[]')
                                    FROM tinydevcrm.email_suppressions x))",
        )
        .bind(channel)
        .fetch_one(&self.app.pool)
        .await
        .expect("rows")
    }
}

#[tokio::test]
async fn another_tenants_email_ids_in_any_spelling_are_not_found_on_every_email_route() {
    let es = email_scene().await;
    let app = &es.app;
    let a = &es.attacker.access;
    let (vc, ve, vd) = es.victim_ids;
    let (ac, ae, _) = es.attacker_ids;
    let victim_before = es.rows_of(vc).await;
    let attacker_before = es.rows_of(ac).await;

    let mut paths = Vec::new();
    for (c, e) in [(vc, ve), (ac, ve), (vc, ae)] {
        for (cs, es_) in id_spellings(c).into_iter().zip(id_spellings(e)) {
            paths.push((cs.clone(), es_.clone()));
            paths.push((c.to_string(), es_));
            paths.push((cs, e.to_string()));
        }
    }
    for (c, e) in &paths {
        let base = format!("/channels/{c}/emails/{e}");
        for (what, res) in [
            ("get", app.get_as(a, &format!("{base}/")).await),
            (
                "patch",
                app.patch_as(a, &format!("{base}/"), &json!({"status": "paused"}))
                    .await,
            ),
            (
                "resend",
                app.post_as(a, &format!("{base}/resend-confirmation/"), &json!({}))
                    .await,
            ),
            ("log", app.get_as(a, &format!("{base}/deliveries/")).await),
            (
                "retry",
                app.post_as(a, &format!("{base}/deliveries/{vd}/retry/"), &json!({}))
                    .await,
            ),
            ("delete", app.delete_as(a, &format!("{base}/")).await),
        ] {
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{what} {base}");
        }
    }
    // The attacker's own subscription with the victim's delivery.
    for d in id_spellings(vd) {
        let path = format!("/channels/{ac}/emails/{ae}/deliveries/{d}/retry/");
        let res = app.post_as(a, &path, &json!({})).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // The victim's channel: list and create.
    for c in id_spellings(vc) {
        let path = format!("/channels/{c}/emails/");
        assert_eq!(
            app.get_as(a, &path).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
        let res = app
            .post_as(a, &path, &json!({"to": "someone@example.com"}))
            .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }

    assert_eq!(
        es.rows_of(vc).await,
        victim_before,
        "the victim's rows changed"
    );
    assert_eq!(
        es.rows_of(ac).await,
        attacker_before,
        "a mixed path reached the attacker's rows"
    );
    // The victim still sees theirs.
    let res = app
        .get_as(&es.victim.access, &format!("/channels/{vc}/emails/{ve}/"))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn hostile_to_values_are_refused_naming_the_field_and_queue_no_mail() {
    let es = email_scene().await;
    let app = &es.app;
    let a = &es.attacker.access;
    let (ac, _, _) = es.attacker_ids;
    let before = es.rows_of(ac).await;
    let path = format!("/channels/{ac}/emails/");
    let long_local = format!("{}@example.com", "a".repeat(65));
    let overlong = format!(
        "{}@{}.example.com",
        "a".repeat(60),
        "b".repeat(63).repeat(3)
    );

    let hostile: Vec<(&str, String)> = [
        // Header injection: CR/LF in every spelling, raw and encoded.
        ("crlf", "a@example.com\r\nBcc: victim@example.org"),
        ("lf", "a@example.com\nBcc: victim@example.org"),
        ("cr", "a@example.com\rBcc: victim@example.org"),
        (
            "crlf in the local part",
            "a\r\nBcc: v@example.org\r\n@example.com",
        ),
        ("nul", "a@example.com\u{0}victim@example.org"),
        (
            "unicode line separator",
            "a@example.com\u{2028}Bcc: v@example.org",
        ),
        ("next line", "a@example.com\u{85}Bcc: v@example.org"),
        ("percent-encoded crlf", "a%0d%0aBcc:v@example.com"),
        (
            "encoded word",
            "=?utf-8?q?a=0D=0ABcc:_v@example.org?=@example.com",
        ),
        (
            "encoded word b",
            "=?utf-8?b?YQ0KQmNjOiB2QGV4YW1wbGUub3Jn?=@example.com",
        ),
        ("tab", "a@example.com\tBcc: v@example.org"),
        // Several recipients.
        ("comma", "a@example.com,b@example.com"),
        ("comma space", "a@example.com, b@example.com"),
        ("semicolon", "a@example.com;b@example.com"),
        ("space", "a@example.com b@example.com"),
        ("group", "friends: a@example.com, b@example.com;"),
        ("empty group", "undisclosed-recipients:;"),
        ("two ats", "a@b@example.com"),
        // Display names and angle brackets.
        ("display name", "Alice <a@example.com>"),
        ("quoted display name", "\"Alice\" <a@example.com>"),
        ("angle brackets", "<a@example.com>"),
        (
            "display name hiding another",
            "a@example.com <b@example.org>",
        ),
        // Quoted local parts and comments.
        ("quoted local part", "\"a b\"@example.com"),
        (
            "quoted local part with at",
            "\"a@evil.example\"@example.com",
        ),
        ("quoted crlf", "\"a\r\nBcc: v@example.org\"@example.com"),
        ("comment", "a(comment)@example.com"),
        ("trailing comment", "a@example.com(comment)"),
        ("comment with recipient", "a@example.com (b@example.org)"),
        // Source routes and address literals.
        ("source route", "@relay.example.org:a@example.com"),
        ("percent hack", "a%example.org@example.com"),
        ("ipv4 literal", "a@[127.0.0.1]"),
        ("ipv6 literal", "a@[IPv6:::1]"),
        ("single label", "a@localhost"),
        // IP addresses in any spelling, without brackets.
        ("dotted ipv4", "a@127.0.0.1"),
        ("private ipv4", "a@10.0.0.1"),
        ("hex ipv4", "a@0x7f.0.0.1"),
        ("hex last part", "a@127.0.0.0x1"),
        ("numeric last label", "a@x.123"),
        ("decimal ipv4", "a@2130706433"),
        // UUCP bang paths and mail-to-program spellings.
        ("bang path", "x.test!a@y.test"),
        ("pipe to a program", "|/bin/sh@x.test"),
        ("pipe inside", "a|b@x.test"),
        ("file path", "/tmp/x@x.test"),
        ("backticks", "a`id`@x.test"),
        ("shell variable", "a$HOME@x.test"),
        ("ampersand", "a&b@x.test"),
        ("leading dash", "-oQ@x.test"),
        // Look-alikes and non-ASCII.
        ("cyrillic a in the domain", "a@ex\u{430}mple.com"),
        ("cyrillic o in the local part", "b\u{43e}b@example.com"),
        ("fullwidth at", "a\u{ff20}example.com"),
        ("zero-width space", "a\u{200b}@example.com"),
        ("right-to-left override", "a\u{202e}moc.elpmaxe@example.com"),
        // Empty and overlong.
        ("empty", ""),
        ("spaces", "   "),
        ("no at", "a.example.com"),
        ("empty local part", "@example.com"),
        ("empty domain", "a@"),
        ("dot dot domain", "a@example..com"),
    ]
    .into_iter()
    .map(|(what, to)| (what, to.to_owned()))
    .chain([
        ("local part over 64", long_local),
        ("over 254 bytes", overlong),
    ])
    .collect();

    for (what, to) in &hostile {
        let res = app.post_as(a, &path, &json!({"to": to})).await;
        let problem = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_email").await;
        assert_eq!(problem["field"], "to", "{what}: {problem}");
    }
    // Not a string at all.
    for to in [
        json!(["a@example.com", "b@example.com"]),
        json!({"a": 1}),
        json!(null),
    ] {
        let res = app.post_as(a, &path, &json!({"to": to})).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{to}");
    }

    assert_eq!(es.rows_of(ac).await, before, "a refused value left a row");
}

/// API key scopes: every spelling that is not exactly a known action on one plainly named
/// resource is refused at creation (case, quoting, encoding, look-alikes, wildcards, schema
/// qualification, extra parts); a key never reaches key management, whatever the header says.
#[tokio::test]
async fn api_key_scopes_in_every_spelling_grant_nothing_beyond_their_name() {
    let app = crate::helpers::spawn_app().await;
    let user = app.signed_up_user().await;
    for scope in [
        "TABLES:read:calls",
        "tables:READ:calls",
        "*:READ",
        "tables:read:\"calls\"",
        "tables:read:%63alls",
        "tables:read:public.calls",
        "tables:read:c alls",
        "tables:read:\u{ff43}alls",
        "tables:read:\u{212a}ey",
        "views:read:*",
        "*:*",
        "tables:*:calls",
        "tables:read:",
        "tables:read:calls:extra",
        "tables:replace:calls",
        "keys:read:all",
        "tables:read:pg_class",
    ] {
        let res = app
            .post_as(
                &user.access,
                "/auth/keys/",
                &json!({"name": "k", "scopes": [scope]}),
            )
            .await;
        assert_problem(res, StatusCode::BAD_REQUEST, "invalid_scope").await;
    }
    let created = app
        .created(
            &user.access,
            "/auth/keys/",
            json!({"name": "k", "scopes": ["*:read"]}),
        )
        .await;
    let key = created["key"].as_str().expect("key");
    for header in [
        format!("Bearer {key}"),
        format!("JWT {key}"),
        format!("bearer {key}"),
    ] {
        let res = app.get_with("/auth/keys/", &header).await;
        assert_problem(res, StatusCode::FORBIDDEN, "key_not_allowed").await;
    }
}

/// Incremental views in the spellings a tenant who read `views::incremental` would try:
/// comments where the service adds its conditions, dollar quotes and escapes, hostile aliases
/// and qualification, no-op casts, zones across a daylight-saving fold, odd `date_bin`
/// strides and origins, and `WHERE` operators written every way. Each is accepted only if,
/// after appends into new, old and folded hours and a refresh, it reads exactly like the same
/// SQL as a plain view; the ones it cannot keep are a 400 that says why, leaving nothing.
#[tokio::test]
async fn incremental_views_in_hostile_spellings_read_like_full_ones_or_are_refused() {
    let scene = scene(Duration::from_secs(30)).await;
    let (app, me) = (&scene.app, &scene.attacker);
    let a = &me.access;
    let sample =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/sample.parquet")).expect("sample");
    for table in ["calls", "dim"] {
        let res = app.create_table(a, sample.clone(), table, None).await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let me_json: Value = app.me(a).await.json().await.expect("json");
    let schema = format!(
        "t_{}",
        uuid::Uuid::parse_str(me_json["id"].as_str().expect("id"))
            .expect("uuid")
            .simple()
    );
    let tail = "count(*) AS n, count(DISTINCT c.source) AS s FROM calls c";
    let accepted: Vec<(String, &str)> = vec![
        // comments, nested comments and a line comment where conditions would be added
        (format!("SELECT date_trunc('hour', c.record_timestamp) /* x */ AS hour, {tail} GROUP BY 1 -- trailing"), "hour"),
        (format!("SELECT date_trunc(/* /* nested */ */ 'hour', c.record_timestamp) AS hour, {tail} WHERE c.record_type = 'start' -- and 1=0\nGROUP BY /* */ 1"), "hour"),
        (format!("SELECT date_trunc('hour', c.record_timestamp) AS hour, {tail} GROUP BY 1 -- WHERE"), "hour"),
        // dollar quotes and escape strings
        (format!("SELECT date_trunc($$hour$$, c.record_timestamp) AS hour, {tail} GROUP BY 1"), "hour"),
        (format!("SELECT date_trunc($t$hour$t$, c.record_timestamp) AS hour, {tail} WHERE c.record_type <> $q$x' OR 1=1 --$q$ GROUP BY 1"), "hour"),
        (format!("SELECT date_trunc(E'\\x68our', c.record_timestamp) AS hour, {tail} GROUP BY 1"), "hour"),
        // aliases that look like node text, quoting, qualification by the own schema
        ("SELECT date_trunc('hour', \"(({:\".record_timestamp) AS hour, count(*) AS n FROM calls AS \"(({:\" GROUP BY 1".to_owned(), "hour"),
        ("SELECT date_trunc('hour', \"a\"\"b\".record_timestamp) AS \"h\"\"} :resjunk true\", count(*) AS n FROM calls AS \"a\"\"b\" GROUP BY 1".to_owned(), "h\"} :resjunk true"),
        (format!("SELECT date_trunc('hour', {schema}.calls.record_timestamp) AS hour, count(*) AS n FROM {schema}.calls GROUP BY 1"), "hour"),
        // the names swapped between two tables
        ("SELECT date_trunc('hour', calls.record_timestamp) AS hour, count(*) AS n FROM dim AS calls JOIN calls AS dim ON dim.record_id = calls.record_id GROUP BY 1".to_owned(), "hour"),
        // no-op casts; a zone across the autumn fold; odd date_bin strides and origins
        (format!("SELECT date_trunc('hour', c.record_timestamp::timestamptz) AS hour, {tail} GROUP BY 1"), "hour"),
        (format!("SELECT date_trunc('minute', c.record_timestamp, 'America/New_York') AS hour, {tail} GROUP BY 1"), "hour"),
        (format!("SELECT date_trunc('day', c.record_timestamp, 'Australia/Lord_Howe') AS hour, {tail} GROUP BY 1"), "hour"),
        (format!("SELECT date_bin('7 minutes 3 seconds', c.record_timestamp, '2001-02-03 04:05:06.789+05:30') AS hour, {tail} GROUP BY 1"), "hour"),
        (format!("SELECT date_bin('1 microsecond', c.record_timestamp, TIMESTAMPTZ '2000-01-01') AS hour, {tail} GROUP BY 1"), "hour"),
        // WHERE written with every operator spelling
        (format!("SELECT date_trunc('hour', c.record_timestamp) AS hour, {tail} WHERE c.record_type OPERATOR(pg_catalog.=) 'start' AND c.source IS DISTINCT FROM 'x' AND (c.record_id, c.call_id) <> (0, 0) GROUP BY 1"), "hour"),
        (format!("SELECT date_trunc('hour', c.record_timestamp) AS hour, {tail} WHERE c.record_type = ANY('{{start,stop}}') AND c.source SIMILAR TO '[0-9]+' AND c.record_timestamp AT TIME ZONE 'Asia/Tokyo' > '2000-01-01' GROUP BY 1"), "hour"),
    ];
    let refused: Vec<String> = vec![
        format!(
            "SELECT date_trunc('hour', c.record_timestamp::timestamp) AS hour, {tail} GROUP BY 1"
        ),
        format!(
            "SELECT date_trunc('hour', c.record_timestamp) AT TIME ZONE 'UTC' AS hour, {tail} GROUP BY 1"
        ),
        format!(
            "SELECT date_trunc('hour', c.record_timestamp) AS hour, {tail} GROUP BY 1 UNION SELECT date_trunc('hour', c.record_timestamp), count(*), 0 FROM calls c GROUP BY 1"
        ),
        format!(
            "SELECT date_trunc('hour', c.record_timestamp) AS hour, {tail} WHERE c.record_id IN (SELECT record_id FROM dim) GROUP BY 1"
        ),
        format!(
            "SELECT date_trunc('hour', c.record_timestamp) AS hour, {tail} GROUP BY 1 HAVING count(*) > 1"
        ),
        format!(
            "SELECT date_bin('1 day', c.record_timestamp, '2000-01-01') AS hour, {tail} GROUP BY 1"
        ),
        format!(
            "SELECT date_trunc('hour', c.record_timestamp) AS hour, max(('now'::text)::timestamptz) AS at, {tail} GROUP BY 1"
        ),
        format!(
            "SELECT date_trunc('hour', c.record_timestamp) AS hour, {tail} TABLESAMPLE SYSTEM (50) GROUP BY 1"
        ),
    ];
    for (i, (sql, bucket)) in accepted.iter().enumerate() {
        let body = json!({"view_name": format!("inc{i}"), "sql_query": sql,
            "incremental": {"bucket_column": bucket, "source_column": "record_timestamp"}});
        let res = app.post_as(a, "/views/create/", &body).await;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::CREATED, "{sql}: {text}");
        app.created(
            a,
            "/views/create/",
            json!({"view_name": format!("full{i}"), "sql_query": sql}),
        )
        .await;
    }
    for (i, sql) in refused.iter().enumerate() {
        let body = json!({"view_name": format!("no{i}"), "sql_query": sql,
            "incremental": {"bucket_column": "hour", "source_column": "record_timestamp"}});
        let res = app.post_as(a, "/views/create/", &body).await;
        let status = res.status();
        let problem: Value = res.json().await.expect("json");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sql}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap_or_default().len() > 20,
            "{sql}: {problem}"
        );
        let res = app.get_as(a, &format!("/views/no{i}/")).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{sql}: nothing left");
    }
    // New, late and folded hours (2026-11-01 05:30Z and 06:30Z are both 01:30 in New York).
    let rows = |id: i64, at: &str| {
        json!({"record_id": id, "record_type": "start", "record_timestamp": at,
               "call_id": id, "source": format!("{id}"), "destination": "1"})
    };
    let batches = [
        json!([
            rows(90001, "2026-11-01T05:30:10Z"),
            rows(90002, "2026-11-01T06:30:20Z")
        ]),
        json!([
            rows(90003, "2026-11-01T06:30:30.999999Z"),
            rows(90004, "1999-12-31T23:59:59.999999Z")
        ]),
        json!([rows(90005, "2030-06-01T00:00:00Z")]),
    ];
    let mut admin = crate::helpers::superuser(&app.db).await;
    for batch in &batches {
        let res = app.post_as(a, "/tables/calls/rows/", batch).await;
        assert_eq!(res.status(), StatusCode::OK);
        for (i, (sql, _)) in accepted.iter().enumerate() {
            let answer = app.refresh_view(a, &format!("inc{i}")).await;
            assert_eq!(answer["status"], "refreshed", "{answer}");
            app.refresh_view(a, &format!("full{i}")).await;
            let diff: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM ((TABLE {schema}.inc{i} EXCEPT ALL TABLE {schema}.full{i})
                 UNION ALL (TABLE {schema}.full{i} EXCEPT ALL TABLE {schema}.inc{i})) d"
            )))
            .fetch_one(&mut admin)
            .await
            .expect("diff");
            assert_eq!(diff, 0, "{sql}: {answer}");
        }
    }
    scene.assert_unharmed_but_views().await;
}
