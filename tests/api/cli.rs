//! The command-line client: the real `tinydevcrm` binary run as a user would, against a server of
//! the test's own (in-process, or a real `serve` process where it must restart), with its config
//! in a fresh directory (`TDC_CONFIG_DIR`) and nothing of the caller's environment.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, database_url, spawn_app, spawn_app_with, temp_dir};
use crate::processes::{Serve, serve, wait_until_up};

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The client as one user at one server: a config directory of its own.
struct Client {
    url: String,
    home: PathBuf,
}

impl Client {
    fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            home: temp_dir("tdc-cli"),
        }
    }

    /// `TDC_CONFIG_DIR`: a directory the client creates itself (so its mode is the client's).
    fn config_dir(&self) -> PathBuf {
        self.home.join("config")
    }

    fn config(&self) -> Value {
        let text = std::fs::read_to_string(self.config_dir().join("config.json")).expect("config");
        serde_json::from_str(&text).expect("config is JSON")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tinydevcrm"));
        command
            .args(args)
            .current_dir(&self.home)
            .env_clear()
            .env("HOME", &self.home)
            .env("TDC_URL", &self.url)
            .env("TDC_CONFIG_DIR", self.config_dir())
            .stdin(Stdio::null());
        command
    }

    /// Runs the binary with `args` (and `stdin`, `env`) to its end, off the test's runtime.
    async fn run_with(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
        let mut command = self.command(args);
        command.envs(env.iter().copied());
        let stdin = stdin.map(str::to_owned);
        if stdin.is_some() {
            command.stdin(Stdio::piped());
        }
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let output = tokio::task::spawn_blocking(move || {
            let mut child = command.spawn().expect("start the client");
            if let Some(text) = stdin {
                use std::io::Write;
                let mut pipe = child.stdin.take().expect("stdin");
                pipe.write_all(text.as_bytes()).expect("write stdin");
            }
            child.wait_with_output().expect("the client ran")
        })
        .await
        .expect("join");
        Run {
            code: output.status.code().expect("an exit code"),
            stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
        }
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None, &[]).await
    }

    /// Runs and asserts exit 0; standard output.
    async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        run.stdout
    }

    /// Runs with `--json` and asserts exit 0; the output as JSON.
    async fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.ok(&args).await;
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
    }

    /// Logs `user` in with the password on standard input.
    async fn login(&self, user: &TestUser) {
        let run = self
            .run_with(
                &["login", "--email", &user.email, "--password-stdin"],
                Some(&format!("{}\n", user.password)),
                &[],
            )
            .await;
        assert_eq!(run.code, 0, "login: {run:?}");
        assert!(run.stdout.contains("logged in"), "{run:?}");
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn sample() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample.parquet")
        .display()
        .to_string()
}

/// Escape sequences and carriage returns: what a progress bar draws with.
fn has_terminal_codes(text: &str) -> bool {
    text.contains('\u{1b}') || text.contains('\r')
}

#[tokio::test]
async fn the_cli_logs_in_uploads_with_progress_to_a_pipe_and_reads_rows_as_json_and_csv() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let cli = Client::new(&app.address);

    cli.login(&user).await;
    // The tokens are a login: only their owner may read them.
    let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&cli.config_dir().join("config.json")), 0o600);
    assert_eq!(mode(&cli.config_dir()), 0o700);
    assert_eq!(
        cli.config()["profiles"]["default"]["url"],
        json!(app.address)
    );

    let upload = cli
        .run(&["tables", "upload", &sample(), "--name", "calls"])
        .await;
    assert_eq!(upload.code, 0, "{upload:?}");
    assert!(
        upload.stdout.contains("created table calls") && upload.stdout.contains(": 6000 rows"),
        "the rows the server counted: {upload:?}"
    );
    assert!(
        !has_terminal_codes(&upload.stderr) && !has_terminal_codes(&upload.stdout),
        "no progress bar drawn into a pipe: {upload:?}"
    );
    let appended = cli
        .json(&[
            "tables",
            "upload",
            &sample(),
            "--name",
            "calls",
            "--mode",
            "append",
        ])
        .await;
    assert_eq!(appended["rows_written"], 6000);
    assert_eq!(appended["row_count"], 12000);

    // Piped, rows are JSON: an array of objects in column order.
    let out = cli
        .ok(&[
            "tables",
            "rows",
            "calls",
            "--limit",
            "2",
            "--filter",
            "record_type=eq.start",
        ])
        .await;
    assert!(
        out.starts_with(r#"[{"record_id":1,"record_type":"start","record_timestamp":"#),
        "{out}"
    );
    let rows: Value = serde_json::from_str(&out).expect("JSON rows");
    assert_eq!(rows.as_array().map(Vec::len), Some(2));
    assert!(
        rows.as_array()
            .into_iter()
            .flatten()
            .all(|r| r["record_type"] == "start")
    );
    let csv = cli
        .ok(&[
            "tables",
            "rows",
            "calls",
            "--limit",
            "3",
            "--order",
            "record_id.desc",
            "--format",
            "csv",
        ])
        .await;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert_eq!(
        lines[0],
        "record_id,record_type,record_timestamp,call_id,source,destination"
    );
    assert!(lines[1].starts_with("6000,"), "{csv}");

    let tables = cli.json(&["tables", "ls"]).await;
    assert_eq!(tables[0]["table_name"], "calls");
    assert_eq!(
        cli.json(&["tables", "show", "calls"]).await["row_count"],
        12000
    );

    let file = cli.home.join("calls.parquet");
    let export = cli
        .run(&[
            "tables",
            "export",
            "calls",
            "--format",
            "parquet",
            "-o",
            &file.display().to_string(),
            "--limit",
            "10",
        ])
        .await;
    assert_eq!(export.code, 0, "{export:?}");
    assert!(!has_terminal_codes(&export.stderr), "{export:?}");
    let bytes = std::fs::read(&file).expect("the export");
    assert!(
        bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"),
        "a Parquet file"
    );
    let json_file = cli.home.join("calls.json");
    cli.ok(&[
        "tables",
        "export",
        "calls",
        "--format",
        "json",
        "-o",
        &json_file.display().to_string(),
        "--limit",
        "3",
    ])
    .await;
    let exported: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_file).expect("json export"))
            .expect("JSON");
    assert_eq!(exported.as_array().map(Vec::len), Some(3), "{exported}");

    cli.ok(&["tables", "drop", "calls"]).await;
    assert_eq!(cli.json(&["tables", "ls"]).await, json!([]));
}

#[tokio::test]
async fn views_jobs_and_channels_round_trip_through_the_cli() {
    let app = spawn_app_with(|s| s.scheduler = false).await;
    let user = app.signed_up_user().await;
    let cli = Client::new(&app.address);
    cli.login(&user).await;
    cli.ok(&["tables", "upload", &sample(), "--name", "calls"])
        .await;
    let sql = cli.home.join("starts.sql");
    std::fs::write(
        &sql,
        "SELECT record_type, count(*) AS n FROM calls GROUP BY 1",
    )
    .expect("sql");

    let view = cli
        .json(&[
            "views",
            "create",
            "starts",
            "--sql-file",
            &sql.display().to_string(),
        ])
        .await;
    assert_eq!(view["row_count"], 2, "{view}");
    assert_eq!(cli.json(&["views", "ls"]).await[0]["view_name"], "starts");
    assert_eq!(
        cli.json(&["views", "show", "starts"]).await["view_name"],
        "starts"
    );
    let refreshed = cli.json(&["views", "refresh", "starts"]).await;
    assert!(
        refreshed["status"] == "refreshed" || refreshed["status"] == "skipped",
        "{refreshed}"
    );
    let rows = cli
        .json(&["views", "rows", "starts", "--order", "record_type"])
        .await;
    assert_eq!(
        rows,
        json!([{"record_type": "end", "n": 3000}, {"record_type": "start", "n": 3000}])
    );

    let job = cli
        .json(&[
            "jobs",
            "create",
            "starts",
            "--cron",
            "0 3 * * *",
            "--tz",
            "Europe/Paris",
            "--overlap",
            "queue",
            "--retries",
            "2",
        ])
        .await;
    let job_id = job["job_id"].as_str().expect("job_id").to_owned();
    assert_eq!(
        (
            &job["crontab_def"],
            &job["timezone"],
            &job["overlap"],
            &job["retries"],
            &job["paused"]
        ),
        (
            &json!("0 3 * * *"),
            &json!("Europe/Paris"),
            &json!("queue"),
            &json!(2),
            &json!(false)
        )
    );
    assert_eq!(cli.json(&["jobs", "ls"]).await[0]["job_id"], json!(job_id));
    assert_eq!(cli.json(&["jobs", "pause", &job_id]).await["paused"], true);
    assert_eq!(cli.json(&["jobs", "show", &job_id]).await["paused"], true);
    assert_eq!(
        cli.json(&["jobs", "resume", &job_id]).await["paused"],
        false
    );
    assert_eq!(
        cli.json(&["jobs", "runs", &job_id]).await["runs"],
        json!([])
    );

    let channel = cli.json(&["channels", "create", "--job", &job_id]).await;
    assert_eq!(channel["view_name"], "starts");
    let channels = cli.json(&["channels", "ls"]).await;
    assert_eq!(channels[0]["channel_id"], channel["channel_id"]);

    cli.ok(&["jobs", "delete", &job_id]).await;
    assert_eq!(cli.json(&["jobs", "ls"]).await, json!([]));
    cli.ok(&["views", "drop", "starts"]).await;
    assert_eq!(cli.json(&["views", "ls"]).await, json!([]));
    assert_eq!(
        cli.json(&["channels", "ls"]).await,
        json!([]),
        "the view's channels went with it"
    );
}

/// The `(id, run_id)` of each event line `listen --json` printed so far.
fn events(path: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(event["event"], "refresh", "{line}");
            (
                event["id"].as_u64().expect("a numeric id"),
                event["data"]["run_id"].as_str().expect("run_id").to_owned(),
            )
        })
        .collect()
}

async fn wait_for_events(path: &Path, n: usize, listener: &mut std::process::Child) {
    let began = Instant::now();
    while events(path).len() < n {
        assert!(
            listener.try_wait().expect("status").is_none(),
            "listen exited: {}",
            std::fs::read_to_string(path.with_extension("err")).unwrap_or_default()
        );
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "{n} events expected, got {:?}; stderr: {}",
            events(path),
            std::fs::read_to_string(path.with_extension("err")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `serve` process on `port`, sharing the test app's database and key, with 3-second access
/// tokens (so a listen outlives its token).
async fn serve_on(app: &TestApp, port: u16, log: &Path) -> Serve {
    let process = serve(
        &database_url(&app.db),
        log,
        &[
            (
                "JWT_SECRET",
                app.settings.jwt_secret.expose_secret().to_owned(),
            ),
            ("TDC_BIND", format!("127.0.0.1:{port}")),
            ("TDC_SCHEDULER", "false".to_owned()),
            ("TDC_ACCESS_TOKEN_TTL_SECS", "3".to_owned()),
        ],
    );
    wait_until_up(&app.client, &format!("http://127.0.0.1:{port}")).await;
    process
}

#[tokio::test]
async fn listen_prints_each_event_once_across_a_server_restart_and_token_expiry() {
    // Arrange: the user, view and channel through the in-process app; the CLI talks to a
    // real serve process on a fixed port, which is killed and started again.
    let app = spawn_app_with(|s| s.scheduler = false).await;
    let (user, channel) = app.user_with_channel().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let cli = Client::new(&format!("http://127.0.0.1:{port}"));
    let log = cli.home.join("serve.log");
    let mut process = serve_on(&app, port, &log).await;
    cli.login(&user).await;
    // A listen without `--last-event-id` starts with live events: refresh once it says it is
    // connected.
    let (out, mut listener) = listening(&cli, &channel, &[]).await;
    let mut runs = Vec::new();
    for _ in 0..2 {
        runs.push(app.refresh_view(&user.access, "someview").await["refresh_id"].clone());
    }
    wait_for_events(&out, 2, &mut listener).await;

    // Act: the server dies mid-stream; events happen while it is down; it comes back on the
    // same port. The 3-second access token expires on the way.
    let _ = process.0.kill();
    let _ = process.0.wait();
    for _ in 0..2 {
        runs.push(app.refresh_view(&user.access, "someview").await["refresh_id"].clone());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    process = serve_on(&app, port, &log).await;
    wait_for_events(&out, 4, &mut listener).await;
    // Past the token's life: the server ends the stream with `token_expired`, the client
    // refreshes and resumes.
    tokio::time::sleep(Duration::from_secs(4)).await;
    runs.push(app.refresh_view(&user.access, "someview").await["refresh_id"].clone());
    wait_for_events(&out, 5, &mut listener).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Assert: every event once, in order.
    let seen = events(&out);
    let _ = listener.kill();
    let _ = listener.wait();
    drop(process);
    let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5], "{seen:?}");
    let run_ids: Vec<Value> = seen.iter().map(|(_, r)| json!(r)).collect();
    assert_eq!(run_ids, runs, "the events are the refreshes, in order");
    let stderr = std::fs::read_to_string(out.with_extension("err")).expect("stderr");
    assert!(
        stderr.contains("reconnecting"),
        "the drop was noticed: {stderr}"
    );
    let config = cli.config();
    assert_ne!(
        config["profiles"]["default"]["access"],
        json!(null),
        "still logged in"
    );
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_and_saved_transparently() {
    let app = spawn_app_with(|s| s.access_token_ttl = Duration::from_secs(1)).await;
    let user = app.signed_up_user().await;
    let cli = Client::new(&app.address);
    cli.login(&user).await;
    let before = cli.config()["profiles"]["default"].clone();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let old = app.me(before["access"].as_str().expect("access")).await;
    assert_eq!(
        old.status(),
        StatusCode::UNAUTHORIZED,
        "the saved token has expired"
    );

    assert_eq!(cli.json(&["tables", "ls"]).await, json!([]));

    let after = cli.config()["profiles"]["default"].clone();
    assert_ne!(
        after["access"], before["access"],
        "a new access token was saved"
    );
    assert_ne!(
        after["refresh"], before["refresh"],
        "and the rotated refresh token"
    );
    let res = app
        .refresh(before["refresh"].as_str().expect("refresh"))
        .await;
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "the old refresh token is spent"
    );
}

#[tokio::test]
async fn a_file_the_server_refuses_gives_its_message_and_exit_code_2() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let cli = Client::new(&app.address);
    cli.login(&user).await;
    let file = cli.home.join("notes.parquet");
    std::fs::write(&file, "id,name\n1,a\n").expect("file");

    let run = cli
        .run(&[
            "tables",
            "upload",
            &file.display().to_string(),
            "--name",
            "notes",
        ])
        .await;

    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("the file is not Parquet")
            && run.stderr.contains("(invalid_parquet, HTTP 400)"),
        "the server's detail and code: {run:?}"
    );
    assert!(run.stdout.is_empty(), "{run:?}");
}

#[tokio::test]
async fn usage_errors_exit_1_and_an_unreachable_server_exits_3() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let cli = Client::new(&app.address);

    let not_logged_in = cli.run(&["tables", "ls"]).await;
    assert_eq!(not_logged_in.code, 1, "{not_logged_in:?}");
    assert!(
        not_logged_in.stderr.contains("tinydevcrm login"),
        "{not_logged_in:?}"
    );
    cli.login(&user).await;
    for args in [
        &["tables", "rows"][..],
        &["tables", "frobnicate"],
        &[
            "jobs",
            "create",
            "v",
            "--cron",
            "* * * * *",
            "--retries",
            "x",
        ],
        &["views", "create", "v"],
        &["tables", "upload", "/nonexistent.parquet", "--name", "t"],
        &["tables", "rows", "t", "--filter", "no-equals-sign"],
    ] {
        let run = cli.run(args).await;
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        assert!(!run.stderr.is_empty(), "{args:?} says why");
    }
    let help = cli.run(&["tables", "--help"]).await;
    assert_eq!(help.code, 0, "{help:?}");

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let closed_url = format!("http://127.0.0.1:{closed}");
    let run = cli
        .run_with(&["tables", "ls"], None, &[("TDC_URL", &closed_url)])
        .await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("cannot reach"), "{run:?}");
}

#[tokio::test]
async fn logout_revokes_the_session_and_forgets_its_tokens() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let cli = Client::new(&app.address);
    cli.login(&user).await;
    let saved = cli.config()["profiles"]["default"].clone();

    cli.ok(&["logout"]).await;

    let after = cli.config()["profiles"]["default"].clone();
    assert_eq!(
        (&after["access"], &after["refresh"]),
        (&Value::Null, &Value::Null),
        "{after}"
    );
    let res = app
        .refresh(saved["refresh"].as_str().expect("refresh"))
        .await;
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "the session is revoked on the server"
    );
    let res = app.me(saved["access"].as_str().expect("access")).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(cli.run(&["tables", "ls"]).await.code, 1, "logged out");
}

#[tokio::test]
async fn profiles_keep_two_accounts_apart_in_one_file() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signed_up_user().await, app.signed_up_user().await);
    let cli = Client::new(&app.address);
    cli.login(&alice).await;
    let run = cli
        .run_with(
            &["login", "--profile", "bob", "--email", &bob.email],
            None,
            &[("TDC_PASSWORD", &bob.password)],
        )
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    cli.ok(&["tables", "upload", &sample(), "--name", "alices"])
        .await;

    assert_eq!(cli.json(&["tables", "ls"]).await[0]["table_name"], "alices");
    assert_eq!(
        cli.json(&["tables", "ls", "--profile", "bob"]).await,
        json!([])
    );
    let config = cli.config();
    assert_eq!(config["profiles"]["default"]["email"], json!(alice.email));
    assert_eq!(config["profiles"]["bob"]["email"], json!(bob.email));
}

#[tokio::test]
async fn server_text_cannot_drive_the_terminal() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let cli = Client::new(&app.address);
    cli.login(&user).await;
    cli.ok(&["tables", "upload", &sample(), "--name", "calls"])
        .await;
    let evil = "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m\u{202e}gnp.exe";
    let res = app
        .post_as(
            &user.access,
            "/tables/calls/rows/",
            &json!([{"record_id": 9999, "record_type": evil, "source": "x\ny"}]),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK, "{:?}", res.text().await);

    // Piped CSV is the data as it is (a terminal would get it escaped, like the table).
    let csv = cli
        .ok(&[
            "tables",
            "rows",
            "calls",
            "--filter",
            "record_id=eq.9999",
            "--format",
            "csv",
        ])
        .await;
    assert!(csv.contains(evil), "{csv:?}");
    for format in ["table", "json"] {
        let out = cli
            .ok(&[
                "tables",
                "rows",
                "calls",
                "--filter",
                "record_id=eq.9999",
                "--format",
                format,
            ])
            .await;
        for c in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'] {
            assert!(!out.contains(c), "{format} output carries {c:?}: {out:?}");
        }
        assert!(
            out.contains("gnp.exe"),
            "{format}: the text is still shown: {out:?}"
        );
    }
    let table = cli
        .ok(&[
            "tables",
            "rows",
            "calls",
            "--filter",
            "record_id=eq.9999",
            "--format",
            "table",
        ])
        .await;
    assert!(
        table.contains("\\u{1b}[2J") && table.contains("x\\ny"),
        "escaped visibly: {table}"
    );
    let json = cli
        .ok(&[
            "tables",
            "rows",
            "calls",
            "--filter",
            "record_id=eq.9999",
            "--format",
            "json",
        ])
        .await;
    let rows: Value = serde_json::from_str(&json).expect("still JSON");
    assert_eq!(
        rows[0]["record_type"], evil,
        "JSON carries the value exactly"
    );
}

/// A client logged in (a token in its profile, written as the client would) to a server that
/// never checks it: for the fake servers below.
fn client_with_token(url: &str) -> Client {
    let cli = Client::new(url);
    let dir = cli.config_dir();
    std::fs::create_dir_all(&dir).expect("config dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let config = json!({"profiles": {"default": {"url": url, "access": "a", "refresh": "r"}}});
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
    cli
}

/// A server that answers every request with `head` and then `body` forever (or, with `stall`,
/// `head` and then nothing, the connection held open); the bytes of body it got out.
async fn fake_server(head: &'static str, body: Option<&'static [u8]>) -> (String, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                match body {
                    Some(body) => {
                        while socket.write_all(body).await.is_ok() {
                            counter.fetch_add(body.len() as u64, Ordering::Relaxed);
                        }
                    }
                    None => tokio::time::sleep(Duration::from_secs(600)).await,
                }
            });
        }
    });
    (url, sent)
}

#[tokio::test]
async fn a_server_that_stalls_mid_answer_times_out_with_exit_3() {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n[";
    let (url, _) = fake_server(head, None).await;
    let cli = client_with_token(&url);
    let started = Instant::now();
    let run = tokio::time::timeout(
        Duration::from_secs(30),
        cli.run_with(&["tables", "ls"], None, &[("TDC_READ_TIMEOUT", "1")]),
    )
    .await
    .expect("the client gives up on a stalled answer");
    assert_eq!(run.code, 3, "{run:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "{run:?}");
}

#[tokio::test]
async fn endless_answers_are_read_only_up_to_a_bound() {
    const CHUNK: &[u8] = &[b'x'; 64 * 1024];
    // An error page without end: the client shows its start, exit 2.
    let head = "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/html\r\nconnection: close\r\n\r\n";
    let (url, sent) = fake_server(head, Some(CHUNK)).await;
    let cli = client_with_token(&url);
    let run = tokio::time::timeout(Duration::from_secs(60), cli.run(&["tables", "ls"]))
        .await
        .expect("the client stops reading");
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("xxxx") && run.stderr.len() < 1000,
        "{run:?}"
    );
    // What the sockets' buffers took, not the gigabytes an unbounded read would have.
    assert!(sent.load(Ordering::Relaxed) < 64 << 20, "{sent:?}");

    // A "JSON" answer without end: refused, exit 2.
    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n";
    let (url, sent) = fake_server(head, Some(CHUNK)).await;
    let cli = client_with_token(&url);
    let run = tokio::time::timeout(Duration::from_secs(60), cli.run(&["tables", "ls"]))
        .await
        .expect("the client stops reading");
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("larger than"), "{run:?}");
    assert!(sent.load(Ordering::Relaxed) < 128 << 20, "{sent:?}");
}

#[tokio::test]
async fn a_server_url_with_credentials_is_refused_and_never_printed() {
    let cli = Client::new("http://127.0.0.1:1");
    for args in [
        &["tables", "ls", "--url", "http://user:s3cret@127.0.0.1:1"][..],
        &[
            "login",
            "--email",
            "a@example.com",
            "--password-stdin",
            "--url",
            "http://user@127.0.0.1:1",
        ],
    ] {
        let run = cli.run_with(args, Some("pw\n"), &[]).await;
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        assert!(run.stderr.contains("user name or password"), "{run:?}");
        assert!(!run.stderr.contains("s3cret"), "{run:?}");
    }
    assert!(!cli.config_dir().join("config.json").exists());
}

#[tokio::test]
async fn a_config_directory_others_can_write_or_own_is_refused() {
    let cli = client_with_token("http://127.0.0.1:1");
    let dir = cli.config_dir();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let run = cli.run(&["tables", "ls"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("chmod 700"), "{run:?}");

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    if nix::unistd::geteuid().is_root() {
        // Root can give the directory away; another user's directory is refused too.
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown");
        let run = cli.run(&["tables", "ls"]).await;
        assert_eq!(run.code, 1, "{run:?}");
        assert!(run.stderr.contains("another user"), "{run:?}");
        std::os::unix::fs::chown(&dir, Some(0), Some(0)).expect("chown back");
    }

    // A planted `config.lock` link is not followed (the lock would create its target).
    let planted = cli.home.join("planted");
    std::os::unix::fs::symlink(&planted, dir.join("config.lock")).expect("link");
    let run = cli.run(&["logout"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(!planted.exists(), "{run:?}");
}

#[tokio::test]
async fn a_failed_export_leaves_the_destination_as_it_was() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let cli = Client::new(&app.address);
    cli.login(&user).await;
    let existing = cli.home.join("precious.csv");
    std::fs::write(&existing, "old contents\n").expect("write");
    let path = existing.to_str().expect("utf-8");

    let missing = cli
        .run(&[
            "tables",
            "export",
            "no_such_table",
            "-o",
            path,
            "--format",
            "csv",
        ])
        .await;
    assert_eq!(missing.code, 2, "{missing:?}");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let unreachable = cli
        .run(&[
            "tables",
            "export",
            "no_such_table",
            "-o",
            path,
            "--format",
            "csv",
            "--url",
            &format!("http://127.0.0.1:{closed}"),
        ])
        .await;
    assert_eq!(unreachable.code, 3, "{unreachable:?}");
    assert_eq!(
        std::fs::read_to_string(&existing).expect("still there"),
        "old contents\n"
    );

    // A device (through a link, so nothing outside the test's directory is at stake) is
    // written to, never removed.
    let device = cli.home.join("null");
    std::os::unix::fs::symlink("/dev/null", &device).expect("link");
    let run = cli
        .run(&[
            "tables",
            "export",
            "no_such_table",
            "-o",
            device.to_str().expect("utf-8"),
        ])
        .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(std::fs::symlink_metadata(&device).is_ok(), "{run:?}");
    // No temporary file is left behind.
    let left: Vec<_> = std::fs::read_dir(&cli.home)
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tdc-export"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A user logged in through the CLI with table `calls` (the sample) and view `starts` over it.
async fn user_with_starts(app: &TestApp) -> (TestUser, Client) {
    let user = app.signed_up_user().await;
    let cli = Client::new(&app.address);
    cli.login(&user).await;
    cli.ok(&["tables", "upload", &sample(), "--name", "calls"])
        .await;
    cli.ok(&[
        "views",
        "create",
        "starts",
        "--sql",
        "SELECT record_type, count(*) AS n FROM calls GROUP BY 1",
    ])
    .await;
    (user, cli)
}

/// `keys create` with `extra` flags, run in a pipe: standard output must be the key alone.
async fn create_key(cli: &Client, name: &str, scopes: &[&str], extra: &[&str]) -> String {
    let mut args = vec!["keys", "create", "--name", name];
    for scope in scopes {
        args.extend(["--scope", scope]);
    }
    args.extend(extra);
    let run = cli.run(&args).await;
    assert_eq!(run.code, 0, "{run:?}");
    let key = run.stdout.trim_end_matches('\n');
    assert!(
        key.starts_with("tdc_") && !key.contains(char::is_whitespace),
        "only the key on standard output: {run:?}"
    );
    assert!(run.stderr.contains("created key"), "{run:?}");
    assert!(
        !run.stderr.contains(key),
        "the key once, on stdout: {run:?}"
    );
    key.to_owned()
}

/// Asserts a failed run never shows `key`, in either stream.
fn hides(run: &Run, key: &str) {
    assert!(
        !run.stderr.contains(key) && !run.stdout.contains(key),
        "the key was printed: {run:?}"
    );
}

#[tokio::test]
async fn a_key_from_keys_create_reads_its_view_and_nothing_else() {
    let app = spawn_app_with(|s| s.scheduler = false).await;
    let (_user, cli) = user_with_starts(&app).await;
    let key = create_key(&cli, "wall", &["views:read:starts"], &[]).await;
    let with_key = [("TDC_KEY", key.as_str())];

    // A client that never logged in reads the view with the key alone, and writes no config.
    let reader = Client::new(&app.address);
    let run = reader
        .run_with(
            &["views", "rows", "starts", "--order", "record_type"],
            None,
            &with_key,
        )
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    let rows: Value = serde_json::from_str(&run.stdout).expect("JSON rows");
    assert_eq!(
        rows,
        json!([{"record_type": "end", "n": 3000}, {"record_type": "start", "n": 3000}])
    );
    assert!(!reader.config_dir().exists(), "a key needs no config");

    // The key, not the profile's session, is what the logged-in client sends when TDC_KEY is
    // set: the session could read the table, the key cannot.
    let before = cli.config();
    let run = cli
        .run_with(&["tables", "rows", "calls"], None, &with_key)
        .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("missing_scope") && run.stderr.contains("tables:read:calls"),
        "{run:?}"
    );
    hides(&run, &key);
    assert_eq!(
        cli.config(),
        before,
        "the profile's tokens were not touched"
    );

    // A route for sessions only says what to do about it.
    let run = reader
        .run_with(&["views", "refresh", "starts"], None, &with_key)
        .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("missing_scope"), "{run:?}");
    let run = reader.run_with(&["jobs", "ls"], None, &with_key).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("key_not_allowed") && run.stderr.contains("login session"),
        "{run:?}"
    );
    hides(&run, &key);

    // `keys` commands refuse a key before sending anything, and say why.
    let run = cli.run_with(&["keys", "ls"], None, &with_key).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("TDC_KEY") && run.stderr.contains("key_not_allowed"),
        "{run:?}"
    );
    hides(&run, &key);

    // The session lists the key (never the key itself) and revokes it.
    let listed = cli.json(&["keys", "ls"]).await;
    assert_eq!(listed[0]["name"], "wall", "{listed}");
    assert_eq!(listed[0]["scopes"], json!(["views:read:starts"]));
    assert!(!listed.to_string().contains(&key), "{listed}");
    let id = listed[0]["id"].as_str().expect("id").to_owned();
    let out = cli.ok(&["keys", "revoke", &id]).await;
    assert!(out.contains("revoked key"), "{out}");
    let run = reader
        .run_with(&["views", "rows", "starts"], None, &with_key)
        .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("revoked") && run.stderr.contains("token_invalid"),
        "{run:?}"
    );
    hides(&run, &key);
}

#[tokio::test]
async fn a_key_file_others_can_read_is_refused_and_a_private_one_is_used() {
    let app = spawn_app_with(|s| s.scheduler = false).await;
    let (_user, cli) = user_with_starts(&app).await;
    let key = create_key(&cli, "file", &["views:read:starts"], &[]).await;
    let reader = Client::new(&app.address);
    let file = reader.home.join("tdc.key");
    std::fs::write(&file, format!("{key}\nsecond line ignored\n")).expect("key file");
    let path = file.display().to_string();

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let run = reader
        .run(&["views", "rows", "starts", "--key-file", &path])
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&format!("chmod 600 {path}")),
        "says what to run: {run:?}"
    );
    hides(&run, &key);

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let run = reader
        .run(&["views", "rows", "starts", "--key-file", &path])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout)
            .expect("rows")
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // Something that is not a key is described, never echoed.
    let run = reader
        .run_with(
            &["views", "rows", "starts"],
            None,
            &[("TDC_KEY", "hunter2-not-a-key")],
        )
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("TDC_KEY"), "{run:?}");
    hides(&run, "hunter2");
}

#[tokio::test]
async fn an_expired_key_exits_2_saying_so_without_refreshing_anything() {
    let app = spawn_app_with(|s| s.scheduler = false).await;
    let (_user, cli) = user_with_starts(&app).await;
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let key = create_key(
        &cli,
        "brief",
        &["views:read:starts"],
        &["--expires-at", &at.to_rfc3339()],
    )
    .await;
    let with_key = [("TDC_KEY", key.as_str())];
    let run = cli
        .run_with(&["views", "rows", "starts"], None, &with_key)
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    let wait = (at - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(500)).await;

    let before = cli.config();
    let run = cli
        .run_with(&["views", "rows", "starts"], None, &with_key)
        .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("key_expired") && run.stderr.contains("expired"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("keys create"),
        "says what to do: {run:?}"
    );
    hides(&run, &key);
    assert_eq!(cli.config(), before, "no refresh, no token saved");
}

#[tokio::test]
async fn listen_with_a_channel_key_prints_events_and_ends_when_the_key_is_revoked() {
    let app = spawn_app_with(|s| s.scheduler = false).await;
    let (user, channel) = app.user_with_channel().await;
    let cli = Client::new(&app.address);
    cli.login(&user).await;
    let key = create_key(
        &cli,
        "listener",
        &[&format!("channels:listen:{channel}")],
        &[],
    )
    .await;

    let reader = Client::new(&app.address);
    std::fs::create_dir_all(&reader.home).expect("home");
    let (out, mut listener) = listening(&reader, &channel, &[("TDC_KEY", &key)]).await;
    let run_id = app.refresh_view(&user.access, "someview").await["refresh_id"].clone();
    wait_for_events(&out, 1, &mut listener).await;
    assert_eq!(events(&out)[0].1, run_id.as_str().expect("run id"));

    // Revoking the key ends the stream and the command: exit 2, saying so.
    let id = cli.json(&["keys", "ls"]).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    cli.ok(&["keys", "revoke", &id]).await;
    let began = Instant::now();
    let status = loop {
        if let Some(status) = listener.try_wait().expect("status") {
            break status;
        }
        if began.elapsed() > Duration::from_secs(30) {
            let _ = listener.kill();
            let _ = listener.wait();
            panic!("listen outlived its key");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stderr = std::fs::read_to_string(out.with_extension("err")).expect("stderr");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("revoked"), "{stderr}");
    assert!(
        !stderr.contains("tinydevcrm login"),
        "a key is not a login: {stderr}"
    );
    assert!(!stderr.contains(&key), "{stderr}");
    assert!(!reader.config_dir().exists(), "a key needs no config");
}

#[tokio::test]
async fn a_rate_limited_key_waits_out_retry_after_on_reads_and_fails_at_once_on_writes() {
    let app = spawn_app_with(|s| s.scheduler = false).await;
    let (_user, cli) = user_with_starts(&app).await;
    let key = create_key(
        &cli,
        "slow",
        &["views:read:starts", "views:refresh:starts"],
        &["--rate-limit", "1"],
    )
    .await;
    let reader = Client::new(&app.address);
    let with_key = [("TDC_KEY", key.as_str())];
    let run = reader
        .run_with(&["views", "rows", "starts"], None, &with_key)
        .await;
    assert_eq!(run.code, 0, "the minute's one request: {run:?}");

    // A POST over the limit is not repeated: exit 2 with the server's message and the wait.
    let began = Instant::now();
    let run = reader
        .run_with(&["views", "refresh", "starts"], None, &with_key)
        .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("rate_limited") && run.stderr.contains("asks to wait"),
        "{run:?}"
    );
    assert!(began.elapsed() < Duration::from_secs(10), "no waiting");
    hides(&run, &key);

    // A GET waits the server's Retry-After (under a minute here) instead of failing.
    let err = reader.home.join("rows.err");
    let mut waiting = reader
        .command(&["views", "rows", "starts"])
        .env("TDC_KEY", &key)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("err"))
        .spawn()
        .expect("start rows");
    let began = Instant::now();
    while !std::fs::read_to_string(&err)
        .unwrap_or_default()
        .contains("(rate limited; trying again in")
    {
        assert!(
            waiting.try_wait().expect("status").is_none(),
            "the read gave up: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        assert!(began.elapsed() < Duration::from_secs(20), "never waited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        waiting.try_wait().expect("status").is_none(),
        "still waiting"
    );
    let _ = waiting.kill();
    let _ = waiting.wait();
}

/// `channels listen CHANNEL --json` started with `env`, once it says it is connected: its
/// events file (stderr beside it, `.err`) and the process.
async fn listening(
    cli: &Client,
    channel: &str,
    env: &[(&str, &str)],
) -> (std::path::PathBuf, std::process::Child) {
    let out = cli.home.join("events.out");
    let err = out.with_extension("err");
    let mut command = cli.command(&["channels", "listen", channel, "--json"]);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut listener = command
        .stdout(std::fs::File::create(&out).expect("out"))
        .stderr(std::fs::File::create(&err).expect("err"))
        .spawn()
        .expect("start listen");
    let began = Instant::now();
    while !std::fs::read_to_string(&err)
        .unwrap_or_default()
        .contains("(listening to channel")
    {
        let said = || std::fs::read_to_string(&err).unwrap_or_default();
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "listen never connected: {}",
            said()
        );
        assert!(
            listener.try_wait().expect("status").is_none(),
            "listen exited: {}",
            said()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (out, listener)
}
