//! infra-prod's steps without Docker: the compose file's one-shot `db-setup.sh`, then
//! `tinydevcrm migrate` and `serve` as the service role it created, with the image's settings.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use crate::helpers::{managed_port, managed_superuser_env, superuser, temp_dir};
use crate::processes::serve;

/// `infra-prod/db-setup.sh` as the compose file runs it (psql as the superuser).
fn db_setup(role: &str, password: &str, database: &str) -> std::process::Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Command::new("sh")
        .arg(root.join("infra-prod/db-setup.sh"))
        .envs(managed_superuser_env().expect("the managed cluster"))
        .env("TDC_DB_USER", role)
        .env("TDC_DB_PASSWORD", password)
        .env("TDC_DB_NAME", database)
        .env("HARDEN_SQL", root.join("src/db/harden.sql"))
        .output()
        .expect("run db-setup.sh")
}

#[tokio::test]
async fn db_setup_makes_a_hardened_database_that_migrate_and_serve_run_on_without_warnings() {
    if managed_superuser_env().is_none() {
        eprintln!("skipped: needs the managed test cluster (DATABASE_URL is set)");
        return;
    }
    // Arrange: names of this test only (roles are cluster-wide).
    let id = &Uuid::new_v4().simple().to_string()[..12];
    let (role, database) = (format!("svc_{id}"), format!("deploy_{id}"));
    let password = Uuid::new_v4().simple().to_string();

    // Act: db-setup twice (it runs at every `prod-up`), then migrate.
    for run in 1..=2 {
        let output = db_setup(&role, &password, &database);
        assert!(
            output.status.success(),
            "db-setup run {run}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let port = managed_port().expect("managed");
    let url = format!("postgres://{role}:{password}@127.0.0.1:{port}/{database}");
    let migrate = Command::new(env!("CARGO_BIN_EXE_tinydevcrm"))
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .env("TDC_REQUIRE_DATABASE_URL", "true")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run migrate");

    // Assert: the role and the database as docs/OPERATIONS.md says, hardened.
    assert!(
        migrate.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let options = PgConnectOptions::new().database(&database);
    let mut admin = superuser(&options).await;
    let (superuser_role, createrole, owner, public_set_config, public_catalog): (
        bool,
        bool,
        String,
        bool,
        bool,
    ) = sqlx::query_as(
        "SELECT r.rolsuper, r.rolcreaterole, pg_get_userbyid(d.datdba)::text,
                has_function_privilege('public', 'pg_catalog.set_config(text, text, boolean)', 'EXECUTE'),
                has_table_privilege('public', 'pg_catalog.pg_class', 'SELECT')
         FROM pg_roles r, pg_database d WHERE r.rolname = $1 AND d.datname = $2",
    )
    .bind(&role)
    .bind(&database)
    .fetch_one(&mut admin)
    .await
    .expect("the role and the database");
    assert!(
        !superuser_role && createrole,
        "the service role: CREATEROLE, not a superuser"
    );
    assert_eq!(owner, role, "the database is the service role's");
    assert!(
        !public_set_config && !public_catalog,
        "harden.sql was applied: PUBLIC may run set_config {public_set_config}, read pg_class {public_catalog}"
    );

    // serve on it, as in the image: up, and no warning about privileges at start.
    let logs = temp_dir("tdc-deploy");
    let bind = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = bind.local_addr().expect("address").to_string();
    drop(bind);
    let _serve = serve(
        &url,
        &logs.join("serve.log"),
        &[
            ("TDC_BIND", address.clone()),
            ("TDC_REQUIRE_DATABASE_URL", "true".to_owned()),
        ],
    );
    let mut up = false;
    for _ in 0..100 {
        let health = Command::new(env!("CARGO_BIN_EXE_tinydevcrm"))
            .args(["health", "--url", &format!("http://{address}")])
            .env("RUST_LOG", "off")
            .output()
            .expect("run health");
        if health.status.success() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(logs.join("serve.log")).expect("the log");
    assert!(up, "serve never answered UP: {log}");
    assert!(
        !log.contains("not hardened") && !log.contains("superuser"),
        "serve warned at start: {log}"
    );
}
