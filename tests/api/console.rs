//! The browser console at `/console/`: how the binary serves its files, and the console itself
//! driven in headless Chromium (Debian's `chromium`) by `tests/console/console.mjs` through
//! `playwright-core` from npm, against a real `serve` process that the test restarts on the
//! same port. Without `tests/console/node_modules` (`npm ci` there) or `node`, the browser test
//! says "SKIPPED"; with `TDC_REQUIRE_CONSOLE=1` (CI) it fails instead.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};

use crate::helpers::{database_url, spawn_app, spawn_app_with, temp_dir};
use crate::processes::{Serve, serve, wait_until_up};

const FILES: [(&str, &str); 5] = [
    ("/console/", "text/html; charset=utf-8"),
    ("/console/app.js", "text/javascript; charset=utf-8"),
    ("/console/live.js", "text/javascript; charset=utf-8"),
    ("/console/console.css", "text/css; charset=utf-8"),
    ("/console/icon.svg", "image/svg+xml"),
];

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn console_files_load_without_a_token_with_their_types_and_a_strict_policy() {
    let app = spawn_app().await;
    for (path, content_type) in FILES {
        let res = app.get(path).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&res, "content-type"), content_type, "{path}");
        assert_eq!(header(&res, "x-content-type-options"), "nosniff", "{path}");
        let csp = header(&res, "content-security-policy").to_owned();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "require-trusted-types-for 'script'",
        ] {
            assert!(csp.contains(directive), "{path}: {directive} not in {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{path}: {csp}"
        );
        assert!(header(&res, "etag").starts_with('"'), "{path}");
        assert!(!res.bytes().await.expect("body").is_empty(), "{path}");
    }
}

#[tokio::test]
async fn api_answers_carry_nosniff_and_refuse_to_be_framed() {
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let access = user.access.as_str();
    let answers = [
        ("json", app.get_as(access, "/tables/").await),
        (
            "csv",
            app.get_as(access, "/tables/sometable/rows/?format=csv")
                .await,
        ),
        (
            "problem",
            app.get_as(access, "/tables/no_such_table/").await,
        ),
        ("unrouted problem", app.get("/no/such/route").await),
        ("console 404", app.get("/console/nope.js").await),
    ];
    for (what, res) in answers {
        assert_eq!(header(&res, "x-content-type-options"), "nosniff", "{what}");
        assert!(
            header(&res, "content-security-policy").contains("frame-ancestors 'none'"),
            "{what}"
        );
    }
    let json = app.get_as(access, "/tables/").await;
    assert_eq!(json.status(), StatusCode::OK);
    assert_eq!(header(&json, "x-frame-options"), "DENY");
    // Swagger UI still answers (framing is all the default policy speaks of).
    assert_eq!(app.get("/docs/index.html").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_bare_console_path_redirects_to_the_index_keeping_the_query() {
    let app = spawn_app().await;
    let res = app.get("/console").await;
    assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(&res, "location"), "/console/");
    let res = app.get("/console?x=1").await;
    assert_eq!(header(&res, "location"), "/console/?x=1");
    // The index itself does not redirect (NormalizePath makes both one path inside).
    let res = app.get("/console/").await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_unknown_console_file_is_a_404_problem() {
    let app = spawn_app().await;
    for path in [
        "/console/nope.js",
        "/console/..%2Fapp.rs",
        "/console/app.js.map",
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(
            header(&res, "content-type").starts_with("application/problem+json"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_console_file_the_browser_has_is_answered_304() {
    let app = spawn_app().await;
    let res = app.get("/console/app.js").await;
    let etag = header(&res, "etag").to_owned();
    assert_eq!(header(&res, "cache-control"), "no-cache");
    let again = app
        .client
        .get(app.url("/console/app.js"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("request");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert!(again.bytes().await.expect("body").is_empty());
    let stale = app
        .client
        .get(app.url("/console/app.js"))
        .header("If-None-Match", "\"something-else\"")
        .send()
        .await
        .expect("request");
    assert_eq!(stale.status(), StatusCode::OK);
}

/// `node`, when it and `tests/console/node_modules` are there; `None` (after saying so) when
/// they are not and CI did not ask for them.
fn console_tools() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let modules = dir.join("node_modules/playwright-core").is_dir();
    let chromium =
        Path::new("/usr/bin/chromium").is_file() || std::env::var_os("CHROMIUM").is_some();
    if node_ok && modules && chromium {
        return Some(dir);
    }
    assert!(
        std::env::var("TDC_REQUIRE_CONSOLE").as_deref() != Ok("1"),
        "TDC_REQUIRE_CONSOLE=1 but node ({node_ok}), tests/console/node_modules ({modules}) or \
         chromium ({chromium}) is missing (.ci/run installs them: apt-get install nodejs npm \
         chromium; npm ci in tests/console)"
    );
    // Straight to stderr: libtest would hide an eprintln! of a passing test.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        b"SKIPPED: node, tests/console/node_modules or chromium not found; the console test checked nothing\n",
    );
    None
}

#[tokio::test]
async fn the_console_uploads_creates_and_shows_live_events_once_across_a_server_restart() {
    let Some(dir) = console_tools() else {
        return;
    };
    // Arrange: a database, and a real `serve` on it that can be stopped and started again on
    // the same port. A 20 s access token makes the page renew it mid-stream.
    let api = spawn_app_with(|s| s.scheduler = false).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let env = [
        (
            "JWT_SECRET",
            api.settings.jwt_secret.expose_secret().to_owned(),
        ),
        ("TDC_BIND", format!("127.0.0.1:{port}")),
        ("TDC_ACCESS_TOKEN_TTL_SECS", "20".to_owned()),
    ];
    let logs = temp_dir("tdc-console");
    let url = database_url(&api.db);
    let mut server = Some(serve(&url, &logs.join("serve-1.log"), &env));
    let client = reqwest::Client::new();
    wait_until_up(&client, &base).await;
    // Each test has a fresh database: a plain address (it shows in the README screenshot).
    let email = "ada@example.com".to_owned();
    let password = "correct horse battery";
    let shots = logs.join("shots");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));

    // Act: the script drives the page, and asks for the restart.
    let began = Instant::now();
    let mut command = std::process::Command::new("node");
    command
        .current_dir(&dir)
        .arg("console.mjs")
        .arg(&base)
        .args(["--email", &email, "--password", password])
        .arg("--parquet")
        .arg(repo.join("sample.parquet"))
        .arg("--shots")
        .arg(&shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // TDC_CONSOLE_SCREENSHOT=docs/console-live.png renews the README's screenshot.
    if let Ok(target) = std::env::var("TDC_CONSOLE_SCREENSHOT") {
        command.arg("--doc-shot").arg(repo.join(target));
    }
    // Killed when dropped, like a serve process.
    let mut node = Serve(command.spawn().expect("start node"));
    let mut stdin = node.0.stdin.take().expect("stdin");
    let stdout = node.0.stdout.take().expect("stdout");
    let (sender, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut report = None;
    let mut restart_took = None;
    while let Some(line) = tokio::time::timeout(Duration::from_secs(300), lines.recv())
        .await
        .expect("the console script said nothing for 300 s")
    {
        if line == "RESTART" {
            let stopped = Instant::now();
            drop(server.take());
            // Down for longer than the stream's `retry: 3000`: the browser's own reconnection
            // fails at least once.
            tokio::time::sleep(Duration::from_secs(4)).await;
            server = Some(serve(&url, &logs.join("serve-2.log"), &env));
            wait_until_up(&client, &base).await;
            restart_took = Some(stopped.elapsed());
            stdin
                .write_all(b"RESTARTED\n")
                .and_then(|()| stdin.flush())
                .expect("answer the script");
        } else if let Some(json) = line.strip_prefix("REPORT ") {
            report = Some(serde_json::from_str::<Value>(json).expect("a JSON report"));
        }
    }
    drop(node);
    drop(server);
    let took = began.elapsed();
    let report = report.expect("the script reported");
    eprintln!(
        "console test: {:.1} s in the browser (restart {:?})",
        took.as_secs_f64(),
        restart_took
    );

    // Assert
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(
        report["url_after_redirect"],
        format!("{base}/console/"),
        "{report:#}"
    );
    assert_eq!(report["signed_in_as"], email.as_str());
    for list in ["page_errors", "csp_violations", "foreign_requests"] {
        assert_eq!(report[list], serde_json::json!([]), "{list}: {report:#}");
    }
    // The upload: the bar reached the file's size, reported by XMLHttpRequest's progress.
    let upload = &report["upload"];
    assert!(
        upload["text"]
            .as_str()
            .is_some_and(|t| t.contains("calls has 6000 rows")),
        "{upload}"
    );
    assert!(upload["progress"]["events"].as_u64() >= Some(1), "{upload}");
    assert!(
        upload["progress"]["value"].as_f64() >= upload["file_bytes"].as_f64(),
        "{upload}"
    );
    assert!(
        report["table"]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("6000 rows")),
        "{report:#}"
    );
    assert_eq!(report["table"]["rows_shown"], 25);
    // Filters and pages.
    assert_eq!(report["filter"]["record_types"], serde_json::json!(["end"]));
    assert_eq!(
        report["filter"]["second_page_types"],
        serde_json::json!(["end"])
    );
    assert_eq!(report["filter"]["pages_overlap"], false);
    assert_eq!(report["filter"]["page_sizes"], serde_json::json!([25, 25]));
    // Tenant markup is text.
    let xss = &report["xss"];
    assert_eq!(xss["shown"], xss["expected"], "{xss}");
    assert_eq!(xss["img_elements"], 0, "{xss}");
    assert_eq!(xss["ran"], false, "{xss}");
    // A bidi override in a cell is shown, not obeyed.
    assert_eq!(
        report["bidi"]["shown"], "\\u{202e}gnp.exe",
        "{}",
        report["bidi"]
    );
    // A malformed address: not found, and the job page's poller stopped.
    let malformed = &report["malformed_hash"];
    assert!(
        malformed["notice"]
            .as_str()
            .is_some_and(|n| n.contains("Not found")),
        "{malformed}"
    );
    assert_eq!(malformed["polls_after"], 0, "{malformed}");
    let view = &report["view"];
    assert_eq!(view["sql_shown"], view["sql_expected"], "{view}");
    assert_eq!(view["labels"], serde_json::json!(["<b>bold</b>"]), "{view}");
    assert_eq!(view["bold_elements"], 0, "{view}");
    assert_eq!(view["record_types"], serde_json::json!(["end", "start"]));
    // The job's runs: status, lag and duration shown; the page paused and resumed it.
    let runs = report["job_runs"].as_array().expect("runs");
    assert!(
        runs.iter().any(|r| r[1] == "succeeded"
            && r[2].as_str().is_some_and(|lag| lag.ends_with(" s"))
            && r[3].as_str().is_some_and(|d| d.ends_with(" ms"))),
        "{runs:?}"
    );
    assert_eq!(report["job_paused_by_the_page"], true);
    assert_eq!(report["job_resumed_by_the_page"], true);
    // The live view: the token was renewed mid-stream, the restart was seen, and every event
    // shown once, in order, up to the server's last.
    assert!(
        report["opens_before_restart"].as_u64() >= Some(2),
        "{report:#}"
    );
    let after = &report["live_after_restart"];
    let ids: Vec<i64> = after["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_i64().expect("an id"))
        .collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "ids shown are not consecutive and unique: {ids:?}"
    );
    assert_eq!(ids.last().copied(), after["event"].as_i64(), "{after}");
    assert_eq!(
        after["event"], after["last_event_id_on_server"],
        "an event came after the one the test made: {after}"
    );
    assert!(
        ids.contains(
            &report["live_before_restart"]["manual_event"]
                .as_i64()
                .expect("id")
        ),
        "{ids:?}"
    );
    assert_eq!(after["count_text"], format!("{} events", ids.len()));
    let states = report["states_during_restart"].to_string();
    assert!(
        states.contains("reconnecting") || states.contains("connecting"),
        "the page never showed the stream down: {states}"
    );
    // Screenshots: pixels, not one colour.
    let screenshots = report["screenshots"].as_object().expect("screenshots");
    for name in ["tables", "jobs", "live", "live-after-restart"] {
        let s = &screenshots[name];
        assert!(s["distinct_colors"].as_u64() > Some(20), "{name}: {s}");
        assert!(s["dominant_share"].as_f64() < Some(0.9), "{name}: {s}");
    }
    let _ = std::fs::remove_dir_all(&logs);
}
