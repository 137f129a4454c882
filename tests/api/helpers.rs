//! The test harness: a managed cluster per run, a database per test, an app per call.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::{Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tinydevcrm::app::build_server;
use tinydevcrm::config::Settings;
use tinydevcrm::db::{
    self,
    local_cluster::{ClusterOptions, LocalCluster},
};
use uuid::Uuid;

use crate::sse::SseStream;

/// Where test databases come from.
enum TestCluster {
    /// Our own managed cluster (the default).
    Managed {
        cluster: LocalCluster,
        password: SecretString,
    },
    /// `DATABASE_URL`: a role that may create databases.
    External(Box<PgConnectOptions>),
}

static CLUSTER: OnceLock<TestCluster> = OnceLock::new();

/// A private temporary directory, short enough for a Unix socket path.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}",
        &Uuid::new_v4().simple().to_string()[..12]
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn cluster() -> &'static TestCluster {
    CLUSTER.get_or_init(|| {
        // Started on a plain thread with its own runtime: the caller is inside a test's runtime.
        std::thread::spawn(start_cluster)
            .join()
            .expect("starting the test cluster panicked")
    })
}

fn start_cluster() -> TestCluster {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return TestCluster::External(Box::new(url.parse().expect("DATABASE_URL is a valid URL")));
    }
    let dir = temp_dir("tdc-test");
    let mut options = ClusterOptions::new(&dir);
    options.durable = false;
    options.settings = vec![
        ("max_connections".into(), "600".into()),
        ("temp_file_limit".into(), "64MB".into()),
    ];
    let cluster = LocalCluster::start(&options).expect("start the managed test cluster");
    remove_when_done(cluster.pid().expect("running"), &dir);
    let password = SecretString::from(Uuid::new_v4().simple().to_string());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(cluster.ensure_service_role(&password))
        .expect("create the service role");
    TestCluster::Managed { cluster, password }
}

/// Statics are never dropped, so a small watchdog stops the cluster and removes its directory
/// once this test process has exited. It outlives us by design: nobody waits for it.
#[expect(
    clippy::zombie_processes,
    reason = "the watchdog must outlive the test process"
)]
fn remove_when_done(postgres_pid: u32, dir: &std::path::Path) {
    let script = r#"while kill -0 "$0" 2>/dev/null; do sleep 0.5; done
kill -INT "$1" 2>/dev/null
while kill -0 "$1" 2>/dev/null; do sleep 0.2; done
rm -rf "$2""#;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(std::process::id().to_string())
        .arg(postgres_pid.to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn the cluster watchdog");
}

/// Creates a fresh, migrated-later database and returns the service role's options for it.
pub async fn fresh_database() -> PgConnectOptions {
    fresh_database_hardened(true).await
}

/// How the database of a test is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// `harden.sql` applied, as on a cluster of our own.
    Hardened,
    /// Not hardened, the service role a plain `CREATEROLE` owner: a managed PostgreSQL.
    Plain,
}

/// An app on a fresh database set up as `setup` says, with adjusted settings.
pub async fn spawn_app_in(setup: Setup, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings();
    adjust(&mut settings);
    spawn_app_on(
        fresh_database_hardened(setup == Setup::Hardened).await,
        settings,
    )
    .await
}

/// [`fresh_database`], with or without `harden.sql` (a `DATABASE_URL` database never is).
pub async fn fresh_database_hardened(harden: bool) -> PgConnectOptions {
    let name = format!("test_{}", Uuid::new_v4().simple());
    match cluster() {
        TestCluster::Managed { cluster, password } => {
            cluster
                .ensure_database_hardened(&name, harden)
                .await
                .expect("create test database");
            cluster.service_options(&name, password)
        }
        TestCluster::External(admin) => {
            let mut conn = PgConnection::connect_with(admin.as_ref())
                .await
                .expect("connect DATABASE_URL");
            let stmt: String = sqlx::query_scalar("SELECT format('CREATE DATABASE %I', $1::text)")
                .bind(&name)
                .fetch_one(&mut conn)
                .await
                .expect("format");
            sqlx::raw_sql(sqlx::AssertSqlSafe(stmt))
                .execute(&mut conn)
                .await
                .expect("create database");
            admin.as_ref().clone().database(&name)
        }
    }
}

/// A `DATABASE_URL` for a test database, for `serve` processes started by a test.
pub fn database_url(options: &PgConnectOptions) -> String {
    let database = options.get_database().expect("database set");
    match cluster() {
        TestCluster::Managed { cluster, password } => format!(
            "postgres://{}:{}@127.0.0.1:{}/{database}",
            options.get_username(),
            password.expose_secret(),
            cluster.port()
        ),
        TestCluster::External(_) => {
            let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
            let base = url.split('?').next().unwrap_or(&url);
            let (server, _) = base.rsplit_once('/').expect("a URL with a database");
            format!("{server}/{database}")
        }
    }
}

/// libpq's variables (`PGHOST`, `PGPORT`, `PGUSER`) that give `psql` the superuser of the
/// managed test cluster; `None` on a `DATABASE_URL` cluster.
pub fn managed_superuser_env() -> Option<Vec<(&'static str, String)>> {
    match cluster() {
        TestCluster::Managed { cluster, .. } => {
            let options = cluster.superuser_options("postgres");
            let socket = options.get_socket()?.display().to_string();
            Some(vec![
                ("PGHOST", socket),
                ("PGPORT", options.get_port().to_string()),
                ("PGUSER", options.get_username().to_owned()),
            ])
        }
        TestCluster::External(_) => None,
    }
}

/// The managed test cluster's port on 127.0.0.1.
pub fn managed_port() -> Option<u16> {
    match cluster() {
        TestCluster::Managed { cluster, .. } => Some(cluster.port()),
        TestCluster::External(_) => None,
    }
}

/// Superuser access to a test database, for assertions about roles and schemas.
pub async fn superuser(options: &PgConnectOptions) -> PgConnection {
    let database = options.get_database().expect("database set").to_owned();
    let admin = match cluster() {
        TestCluster::Managed { cluster, .. } => cluster.superuser_options(&database),
        TestCluster::External(admin) => admin.as_ref().clone().database(&database),
    };
    PgConnection::connect_with(&admin)
        .await
        .expect("superuser connection")
}

/// The defaults (with a random JWT secret) on one worker.
pub fn test_settings() -> Settings {
    let mut settings = Settings::defaults();
    settings.workers = Some(1);
    settings
}

/// A running app and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    pub db: PgConnectOptions,
    pub settings: Settings,
    /// Connections the server's pool closed for coming back under a tenant role.
    pub role_leaks: Arc<AtomicU64>,
}

/// A registered user with a live session.
pub struct TestUser {
    pub email: String,
    pub password: String,
    pub access: String,
    pub refresh: String,
}

/// An app on a fresh database with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// An app on a fresh database with adjusted settings.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings();
    adjust(&mut settings);
    spawn_app_on(fresh_database().await, settings).await
}

/// With `TEST_LOG` set, the service's logs go to stderr (`LOG_FORMAT=json` for JSON lines), so
/// one failing test's requests and job runs can be read; without it tests stay quiet.
fn init_test_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
            tinydevcrm::telemetry::init(if json {
                tinydevcrm::config::LogFormat::Json
            } else {
                tinydevcrm::config::LogFormat::Pretty
            });
        }
    });
}

/// An app on the given database (a second process on the same database, say).
pub async fn spawn_app_on(db: PgConnectOptions, settings: Settings) -> TestApp {
    let role_leaks = Arc::default();
    let pool = db::pool_counting_role_leaks(db.clone(), 5, Arc::clone(&role_leaks));
    db::migrate(&pool).await.expect("migrate");
    start(db, pool, settings, role_leaks)
}

/// An app whose database does not answer.
pub fn spawn_app_without_database() -> TestApp {
    let db = nowhere();
    let pool = db::pool(db.clone(), 1);
    start(db, pool, test_settings(), Arc::default())
}

/// Connect options of a database that is not there.
fn nowhere() -> PgConnectOptions {
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(1)
        .username("nobody")
        .database("nothing")
}

/// A client of a server started elsewhere (`infra-prod/local.sh`): its `pool` and `db` point
/// nowhere and must not be used.
pub fn remote_app(address: &str) -> TestApp {
    let db = nowhere();
    TestApp {
        address: address.to_owned(),
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        pool: db::pool(db.clone(), 1),
        db,
        settings: test_settings(),
        role_leaks: Arc::default(),
    }
}

fn start(
    db: PgConnectOptions,
    pool: PgPool,
    settings: Settings,
    role_leaks: Arc<AtomicU64>,
) -> TestApp {
    init_test_logs();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let port = listener.local_addr().expect("address").port();
    let server = build_server(listener, pool.clone(), settings.clone()).expect("build server");
    tokio::spawn(server);
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        pool,
        db,
        settings,
        role_leaks,
    }
}

impl TestApp {
    /// The server's pool never had to close a connection that came back as a tenant (its
    /// release hook would hide such a leak from a `current_user` asked afterwards).
    pub fn assert_no_role_leaked(&self) {
        assert_eq!(
            self.role_leaks.load(Ordering::Relaxed),
            0,
            "a pooled connection came back under a tenant role"
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn get_with(&self, path: &str, authorization: &str) -> Response {
        self.client
            .get(self.url(path))
            .header("Authorization", authorization)
            .send()
            .await
            .expect("request")
    }

    pub async fn me(&self, access: &str) -> Response {
        self.get_with("/auth/users/me/", &format!("JWT {access}"))
            .await
    }

    pub async fn register(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/auth/users/register/",
            &json!({"primary_email": email, "password": password}),
        )
        .await
    }

    pub async fn obtain(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/auth/tokens/obtain/",
            &json!({"primary_email": email, "password": password}),
        )
        .await
    }

    pub async fn refresh(&self, refresh: &str) -> Response {
        self.post_json("/auth/tokens/refresh/", &json!({"refresh": refresh}))
            .await
    }

    pub async fn blacklist(&self, refresh: &str) -> Response {
        self.post_json("/auth/tokens/blacklist/", &json!({"refresh": refresh}))
            .await
    }

    /// Logs an existing user in.
    pub async fn login(&self, email: &str, password: &str) -> TestUser {
        let res = self.obtain(email, password).await;
        assert_eq!(res.status(), StatusCode::OK, "obtain failed");
        let body: Value = res.json().await.expect("json");
        TestUser {
            email: email.to_owned(),
            password: password.to_owned(),
            access: body["access"].as_str().expect("access").to_owned(),
            refresh: body["refresh"].as_str().expect("refresh").to_owned(),
        }
    }

    /// Registers a new user and logs in.
    pub async fn signed_up_user(&self) -> TestUser {
        let email = format!("user-{}@example.com", Uuid::new_v4().simple());
        let password = "correct horse battery".to_owned();
        let res = self.register(&email, &password).await;
        assert_eq!(res.status(), StatusCode::CREATED, "register failed");
        self.login(&email, &password).await
    }
}

/// Asserts a problem JSON answer with the given status and code, and returns the body.
pub async fn assert_problem(res: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(res.status(), status, "unexpected status");
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/problem+json"),
        "content type was {content_type}"
    );
    let body: Value = res.json().await.expect("problem JSON");
    assert_eq!(body["code"], code, "unexpected problem: {body}");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string());
    body
}

/// Writes a record batch as Parquet bytes with the given writer properties.
pub fn parquet_bytes(
    batch: &arrow::array::RecordBatch,
    properties: Option<parquet::file::properties::WriterProperties>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), properties).expect("writer");
    writer.write(batch).expect("write");
    writer.close().expect("close");
    out
}

/// A Parquet file of the given columns (all nullable).
pub fn parquet_of(columns: Vec<(&str, arrow::array::ArrayRef)>) -> Vec<u8> {
    let schema = arrow::datatypes::Schema::new(
        columns
            .iter()
            .map(|(name, array)| {
                arrow::datatypes::Field::new(*name, array.data_type().clone(), true)
            })
            .collect::<Vec<_>>(),
    );
    let arrays = columns.into_iter().map(|(_, array)| array).collect();
    parquet_bytes(
        &arrow::array::RecordBatch::try_new(std::sync::Arc::new(schema), arrays).expect("batch"),
        None,
    )
}

impl TestApp {
    /// `POST /tables/create/` as the original walkthrough sends it.
    pub async fn create_table(
        &self,
        access: &str,
        file: Vec<u8>,
        table_name: &str,
        columns: Option<&str>,
    ) -> Response {
        let mut form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(file).file_name("upload.parquet"),
            )
            .text("table_name", table_name.to_owned());
        if let Some(columns) = columns {
            form = form.text("columns", columns.to_owned());
        }
        self.client
            .post(self.url("/tables/create/"))
            .header("Authorization", format!("JWT {access}"))
            .multipart(form)
            .send()
            .await
            .expect("request")
    }

    /// `GET` with a bearer token.
    pub async fn get_as(&self, access: &str, path: &str) -> Response {
        self.get_with(path, &format!("Bearer {access}")).await
    }

    /// Text of every value of a column, in row order, read as the superuser.
    pub async fn column_texts(
        &self,
        table: &str,
        owner_access: &str,
        column: &str,
    ) -> Vec<Option<String>> {
        let me: Value = self.me(owner_access).await.json().await.expect("json");
        let schema = format!(
            "t_{}",
            Uuid::parse_str(me["id"].as_str().expect("id"))
                .expect("uuid")
                .simple()
        );
        let mut admin = superuser(&self.db).await;
        let col = column.replace('"', "\"\"");
        let sql = format!("SELECT \"{col}\"::text FROM {schema}.{table} ORDER BY ctid");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut admin)
            .await
            .expect("read column")
    }
}

pub const WALKTHROUGH_COLUMNS: &str = r#"[{"column_name": "SomeNumber", "column_type":"int"},{"column_name":"SomeString","column_type":"varchar(256)"}]"#;

/// The original walkthrough's file (written by pyarrow).
pub fn walkthrough_file() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/examples/walkthrough.parquet"
    ))
    .expect("docs/examples/walkthrough.parquet")
}

impl TestApp {
    pub async fn post_as(&self, access: &str, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("Authorization", format!("Bearer {access}"))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn patch_as(&self, access: &str, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .patch(self.url(path))
            .header("Authorization", format!("Bearer {access}"))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn delete_as(&self, access: &str, path: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .header("Authorization", format!("Bearer {access}"))
            .send()
            .await
            .expect("request")
    }

    /// A user with table `sometable` (the walkthrough file) and view `someview` (volatile:
    /// refreshed every time).
    pub async fn user_with_view(&self) -> TestUser {
        let user = self.signed_up_user().await;
        let res = self
            .create_table(
                &user.access,
                walkthrough_file(),
                "sometable",
                Some(WALKTHROUGH_COLUMNS),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let res = self
            .post_as(
                &user.access,
                "/views/create/",
                &json!({"view_name": "someview", "sql_query": "SELECT count(*) AS n, now() AS at FROM sometable"}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        user
    }

    /// A user with `someview` (see [`TestApp::user_with_view`]) and a channel on it; the
    /// channel's id.
    pub async fn user_with_channel(&self) -> (TestUser, String) {
        let user = self.user_with_view().await;
        let channel = self
            .created(
                &user.access,
                "/channels/create/",
                json!({"view_name": "someview"}),
            )
            .await;
        let channel_id = channel["channel_id"].as_str().expect("id").to_owned();
        (user, channel_id)
    }

    pub async fn created(&self, access: &str, path: &str, body: Value) -> Value {
        let res = self.post_as(access, path, &body).await;
        let status = res.status();
        let body: Value = res.json().await.expect("json");
        assert_eq!(status, StatusCode::CREATED, "{path}: {body}");
        body
    }

    /// Creates a job on `view` that runs every second, with extra `options`; its id.
    pub async fn every_second_job(&self, access: &str, view: &str, options: Value) -> String {
        let mut body = json!({"view_name": view, "crontab_def": "* * * * * *"});
        if let (Some(body), Some(options)) = (body.as_object_mut(), options.as_object()) {
            body.extend(options.clone());
        }
        let job = self.created(access, "/jobs/create/", body).await;
        job["job_id"].as_str().expect("job_id").to_owned()
    }

    pub async fn refresh_view(&self, access: &str, view: &str) -> Value {
        let res = self
            .post_as(access, &format!("/views/{view}/refresh/"), &json!({}))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.expect("json")
    }

    pub async fn runs(&self, access: &str, job_id: &str) -> Vec<Value> {
        let res = self
            .get_as(access, &format!("/jobs/{job_id}/runs/?limit=1000"))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.expect("json");
        body["runs"].as_array().expect("runs").clone()
    }

    /// Waits until `done(runs)` holds (runs newest first), or panics after `limit`.
    pub async fn wait_for_runs(
        &self,
        access: &str,
        job_id: &str,
        limit: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let start = std::time::Instant::now();
        loop {
            let runs = self.runs(access, job_id).await;
            if done(&runs) {
                return runs;
            }
            assert!(
                start.elapsed() < limit,
                "runs did not reach the expected state within {limit:?}: {runs:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn listen(&self, access: &str, channel_id: &str) -> SseStream {
        SseStream::open(
            self,
            &format!("/channels/{channel_id}/listen/"),
            &[("Authorization", format!("Bearer {access}"))],
        )
        .await
    }
}

impl TestApp {
    /// Sends `rows` (JSON) to the caller's `sometable`, which must take them; `?mode=` when given.
    pub async fn add_some_rows(&self, access: &str, mode: Option<&str>, rows: Value) {
        let path = match mode {
            Some(mode) => format!("/tables/sometable/rows/?mode={mode}"),
            None => "/tables/sometable/rows/".to_owned(),
        };
        let res = self.post_as(access, &path, &rows).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }

    /// A user with `sometable` and the view `fragile`, which fails to refresh (division by
    /// zero) while a row has `SomeNumber = 42`, as one now does.
    pub async fn user_with_fragile_view(&self) -> TestUser {
        let user = self.signed_up_user().await;
        let a = &user.access;
        let res = self
            .create_table(
                a,
                walkthrough_file(),
                "sometable",
                Some(WALKTHROUGH_COLUMNS),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        self.created(
            a,
            "/views/create/",
            json!({"view_name": "fragile", "sql_query": "SELECT 1 / (\"SomeNumber\" - 42) AS x, now() AS at FROM sometable"}),
        )
        .await;
        self.add_some_rows(a, None, json!([{"SomeNumber": 42, "SomeString": "boom"}]))
            .await;
        user
    }

    /// Both tokens of a session are refused as revoked (401 `token_revoked`).
    pub async fn assert_session_dead(&self, access: &str, refresh: &str) {
        assert_problem(
            self.me(access).await,
            StatusCode::UNAUTHORIZED,
            "token_revoked",
        )
        .await;
        assert_problem(
            self.refresh(refresh).await,
            StatusCode::UNAUTHORIZED,
            "token_revoked",
        )
        .await;
    }
}

/// The first event of `stream` is the first successful refresh, numbered 1.
pub async fn assert_first_event_is_the_first_success(stream: &mut SseStream) {
    let first = stream.expect_event(Duration::from_secs(5)).await;
    assert_eq!(
        (first.seq(), first.json()["status"].as_str()),
        (1, Some("succeeded")),
        "{first:?}"
    );
}

/// Holds an exclusive lock on the user's `sometable` for `hold`, so refreshes of views over it
/// wait: a slow refresh without burning CPU.
pub async fn hold_table_lock(app: &TestApp, user: &TestUser, hold: Duration) {
    let me: Value = app.me(&user.access).await.json().await.expect("json");
    let schema = format!(
        "t_{}",
        uuid::Uuid::parse_str(me["id"].as_str().expect("id"))
            .expect("uuid")
            .simple()
    );
    let mut admin = superuser(&app.db).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; LOCK TABLE {schema}.sometable IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut admin)
    .await
    .expect("lock");
    tokio::time::sleep(hold).await;
    sqlx::raw_sql("COMMIT")
        .execute(&mut admin)
        .await
        .expect("commit");
}
