//! The database layer under the API: what a tenant transaction sets, and the pool's last line
//! of defence against a connection that comes back as a tenant.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use sqlx::{Connection, Row};
use tinydevcrm::db::ident::Ident;
use tinydevcrm::db::tenant::begin_as;

use crate::helpers::{TestApp, spawn_app};

async fn tenant_of_new_user(app: &TestApp) -> Ident {
    let user = app.signed_up_user().await;
    let me: Value = app.me(&user.access).await.json().await.expect("json");
    let id = uuid::Uuid::parse_str(me["id"].as_str().expect("id")).expect("uuid");
    Ident::new(format!("t_{}", id.simple())).expect("a tenant name")
}

#[tokio::test]
async fn a_tenant_transaction_runs_as_the_tenant_with_every_limit_and_leaves_nothing_behind() {
    let app = spawn_app().await;
    let tenant = tenant_of_new_user(&app).await;

    let mut tx = begin_as(&app.pool, &tenant, Duration::from_millis(1500))
        .await
        .expect("begin");
    let row = sqlx::query(
        "SELECT current_user::text AS role, current_setting('search_path') AS path,
                current_setting('statement_timeout') AS statement_timeout,
                current_setting('lock_timeout') AS lock_timeout,
                current_setting('work_mem') AS work_mem,
                current_setting('idle_in_transaction_session_timeout') AS idle",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("settings");
    let got: Vec<String> = [
        "role",
        "path",
        "statement_timeout",
        "lock_timeout",
        "work_mem",
        "idle",
    ]
    .iter()
    .map(|c| row.get::<String, _>(*c))
    .collect();
    assert_eq!(
        got,
        [
            tenant.as_str(),
            tenant.as_str(),
            "1500ms",
            "10s",
            "32MB",
            "1min"
        ]
    );
    tx.commit().await.expect("commit");

    // Every pooled connection afterwards is the service role with the server's defaults.
    for _ in 0..3 {
        let row = sqlx::query(
            "SELECT current_user::text AS role, current_setting('statement_timeout') AS statement_timeout,
                    current_setting('work_mem') AS work_mem",
        )
        .fetch_one(&app.pool)
        .await
        .expect("settings");
        assert_eq!(row.get::<String, _>("role"), "tinydevcrm");
        assert_ne!(row.get::<String, _>("statement_timeout"), "1500ms");
        assert_ne!(row.get::<String, _>("work_mem"), "32MB");
    }
    app.assert_no_role_leaked();
}

#[tokio::test]
async fn a_connection_released_as_a_tenant_is_closed_by_the_pool_and_counted() {
    let app = spawn_app().await;
    let tenant = tenant_of_new_user(&app).await;
    let mut conn = app.pool.acquire().await.expect("a connection");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
        .expect("pid");

    // A session-level role switch: what the transaction-scoped one must never become.
    let mut set_role = sqlx::QueryBuilder::new("SET SESSION ROLE ");
    set_role.push(&tenant);
    set_role
        .build()
        .execute(&mut *conn)
        .await
        .expect("set role");
    drop(conn);

    // The release hook runs in the background: wait for its verdict.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.role_leaks.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hook never judged the connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.role_leaks.load(Ordering::Relaxed), 1);
    for _ in 0..5 {
        let row = sqlx::query("SELECT current_user::text AS role, pg_backend_pid() AS pid")
            .fetch_one(&app.pool)
            .await
            .expect("query");
        assert_eq!(row.get::<String, _>("role"), "tinydevcrm");
        assert_ne!(
            row.get::<i32, _>("pid"),
            pid,
            "the tenant connection was reused"
        );
    }
}

/// The checks that are in force on `options`' database, by name.
async fn in_force(options: &sqlx::postgres::PgConnectOptions) -> Vec<&'static str> {
    let pool = tinydevcrm::db::pool(options.clone(), 1);
    let checks = tinydevcrm::db::hardening::checks(&pool)
        .await
        .expect("checks");
    assert_eq!(checks.len(), 10, "{checks:?}");
    checks
        .into_iter()
        .filter(|c| c.in_force)
        .map(|c| c.name)
        .collect()
}

#[tokio::test]
async fn every_hardening_check_is_in_force_where_harden_sql_ran_as_a_superuser() {
    let options = crate::helpers::fresh_database_hardened(true).await;
    assert_eq!(in_force(&options).await.len(), 10);
}

#[tokio::test]
async fn on_a_database_nobody_hardened_only_postgresql_15s_own_default_is_in_force() {
    let options = crate::helpers::fresh_database_hardened(false).await;
    // PostgreSQL 15 no longer lets PUBLIC create in the public schema.
    assert_eq!(in_force(&options).await, ["public_schema"]);
}

/// What an administrator who is not a superuser (Amazon RDS's master user, a `CREATEROLE`
/// database owner) gets from running `harden.sql`: the database's own grants, nothing of the
/// catalogs' or of `pg_catalog`'s functions, which belong to the bootstrap superuser. The
/// script still runs to the end (PostgreSQL only warns about grants it cannot take back).
#[tokio::test]
async fn harden_sql_run_by_a_database_owner_who_is_no_superuser_takes_away_only_the_databases_own_grants()
 {
    let options = crate::helpers::fresh_database_hardened(false).await;
    let mut owner = sqlx::PgConnection::connect_with(&options)
        .await
        .expect("connect as the service role");
    let superuser: bool =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut owner)
            .await
            .expect("rolsuper");
    assert!(!superuser, "the service role of the tests is no superuser");
    sqlx::raw_sql(include_str!("../../src/db/harden.sql"))
        .execute(&mut owner)
        .await
        .expect("harden.sql runs to the end as the owner");
    assert_eq!(
        in_force(&options).await,
        ["database_connect", "public_schema"]
    );
}

/// PostgreSQL can refuse `SET ROLE` to a tenant role the service role was granted, when the
/// backend's cached membership list was built while the grant committed (issue 13 §4, seen
/// under steady sign-ups). Simulated here with a grant that commits only after the first
/// refusal: the tenant transaction is tried again on another connection and then begins.
#[tokio::test]
async fn a_refused_set_role_is_tried_again_on_another_connection() {
    let app = spawn_app().await;
    let tenant = tenant_of_new_user(&app).await;
    let mut admin = crate::helpers::superuser(&app.db).await;
    let mut revoke = sqlx::QueryBuilder::new("REVOKE ");
    revoke.push(&tenant).push(" FROM tinydevcrm");
    revoke.build().execute(&mut admin).await.expect("revoke");
    let mut grant_tx = admin.begin().await.expect("begin");
    let mut grant = sqlx::QueryBuilder::new("GRANT ");
    grant.push(&tenant).push(" TO tinydevcrm");
    grant.build().execute(&mut *grant_tx).await.expect("grant");

    let before = tinydevcrm::db::tenant::set_role_retries();
    let pool = app.pool.clone();
    let name = tenant.clone();
    let begun = tokio::spawn(async move { begin_as(&pool, &name, Duration::from_secs(5)).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tinydevcrm::db::tenant::set_role_retries() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a refused SET ROLE was never tried again: {:?}",
            begun.is_finished()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    grant_tx.commit().await.expect("commit the grant");

    let mut tx = begun
        .await
        .expect("task")
        .expect("begins on another connection");
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut *tx)
        .await
        .expect("role");
    assert_eq!(role, tenant.as_str());
    tx.commit().await.expect("commit");
}
