//! A real browser on another origin: headless Chromium (Debian's `chromium`) loads a page from
//! a small server of the test's own on another port; the page calls the API through CORS and
//! reports what it saw by sending JSON back (`POST /report`) to that server. Without Chromium
//! these tests say "SKIPPED: chromium not found"; with `TDC_REQUIRE_CHROMIUM=1` (CI) they fail
//! instead.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tinydevcrm::config::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::helpers::{TestApp, spawn_app_with, temp_dir};

const SECOND: Duration = Duration::from_secs(1);

/// The Chromium binary, or `None` (after saying so) when the machine has none and CI did not
/// ask for it.
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        })
    });
    if found.is_none() {
        assert!(
            std::env::var("TDC_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "TDC_REQUIRE_CHROMIUM=1 but no chromium on PATH (apt-get install chromium)"
        );
        // Straight to stderr: libtest would hide an eprintln! of a passing test.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"SKIPPED: chromium not found; the browser tests checked nothing\n",
        );
    }
    found
}

/// Headless Chromium showing `url`, in a process group of its own, killed (all of it) when
/// dropped.
struct Browser {
    child: Child,
    profile: PathBuf,
}

impl Browser {
    fn open(binary: &std::path::Path, url: &str) -> Self {
        let profile = temp_dir("tdc-chromium");
        let child = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromium");
        Self { child, profile }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The page's server: `GET /` is the page, `POST /report` a JSON report, handed to the test.
struct PageServer {
    origin: String,
    reports: mpsc::UnboundedReceiver<Value>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PageServer {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the page server");
        let port = listener.local_addr().expect("address").port();
        let (sender, reports) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(answer(socket, sender.clone()));
            }
        });
        Self {
            origin: format!("http://127.0.0.1:{port}"),
            reports,
            task,
        }
    }

    /// The next report, or a panic naming `what` after `timeout`.
    async fn report(&mut self, timeout: Duration, what: &str) -> Value {
        tokio::time::timeout(timeout, self.reports.recv())
            .await
            .unwrap_or_else(|_| panic!("the page did not report {what} within {timeout:?}"))
            .expect("the page server is running")
    }
}

/// One HTTP/1.1 exchange (then the connection closes).
async fn answer(mut socket: tokio::net::TcpStream, reports: mpsc::UnboundedSender<Value>) {
    let mut data = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head, body_start) = loop {
        let Ok(n) = socket.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        data.extend_from_slice(&chunk[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break (String::from_utf8_lossy(&data[..end]).into_owned(), end + 4);
        }
    };
    let length: usize = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    while data.len() < body_start + length {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&chunk[..n]),
        }
    }
    let request_line = head.lines().next().unwrap_or_default().to_owned();
    let response = if request_line.starts_with("GET / ") {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{PAGE}",
            PAGE.len()
        )
    } else if request_line.starts_with("POST /report ") {
        let body = &data[body_start..body_start + length];
        if let Ok(report) = serde_json::from_slice::<Value>(body) {
            let _ = reports.send(report);
        }
        "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n".to_owned()
    } else {
        "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned()
    };
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}

/// The page. Its URL fragment says what to do (`mode`), where the API is (`app`, and `other`:
/// an API that does not allow this origin), the channel and the tokens.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>tinydevcrm browser test</title></head><body><script>
"use strict";
const p = new URLSearchParams(location.hash.slice(1));
const app = p.get("app"), other = p.get("other"), channel = p.get("channel");
let access = p.get("access"), refresh = p.get("refresh");
let n = 0;
function report(o) {
  o.n = n++;
  return fetch("/report", {method: "POST", body: JSON.stringify(o)}).catch(() => {});
}
const sleep = ms => new Promise(r => setTimeout(r, ms));
const listenUrl = last =>
  `${app}/channels/${channel}/listen/?access_token=${encodeURIComponent(access)}&last_event_id=${last}`;

async function corsChecks() {
  const out = {kind: "cors"};
  try {
    let r = await fetch(`${app}/auth/users/me/`, {headers: {Authorization: `Bearer ${access}`}});
    out.me = r.status;
    out.me_email = (await r.json()).primary_email;
    out.request_id = r.headers.get("x-request-id");
    r = await fetch(`${app}/views/someview/refresh/`, {method: "POST",
      headers: {Authorization: `Bearer ${access}`, "Content-Type": "application/json"}, body: "{}"});
    out.refresh = r.status;
    r = await fetch(`${app}/auth/users/me/`);
    out.unauthorized = r.status;
    out.unauthorized_code = (await r.json()).code;
    out.www_authenticate = r.headers.get("www-authenticate");
  } catch (e) {
    out.failed = String(e);
  }
  try {
    const r = await fetch(`${other}/health`);
    out.other = `readable ${r.status}`;
  } catch (e) {
    out.other = e.name;
  }
  out.event_id = await new Promise(resolve => {
    const es = new EventSource(listenUrl(0));
    es.addEventListener("refresh", e => { es.close(); resolve(e.lastEventId); });
    es.onerror = () => { es.close(); resolve(`error, readyState ${es.readyState}`); };
  });
  await report(out);
}

// Listens for good: at token_expired or a stream that gave up (401 after an expiry during a
// restart), a new access token from the refresh endpoint and a new EventSource from the last id.
let lastId = 0, es = null, recovering = false;
function listen() {
  es = new EventSource(listenUrl(lastId));
  const mine = es;
  let opened = false;
  // Opened again: the browser's own reconnect, with Last-Event-ID and the same URL.
  es.onopen = () => { report({kind: "open", last: lastId, again: opened}); opened = true; };
  es.addEventListener("refresh", e => {
    lastId = Number(e.lastEventId);
    report({kind: "event", id: lastId});
  });
  es.addEventListener("reset", e => report({kind: "reset", data: e.data}));
  es.addEventListener("token_expired", () => { report({kind: "expired"}); recover(mine); });
  es.onerror = () => {
    report({kind: "error", readyState: mine.readyState});
    // CONNECTING: the browser retries by itself (with Last-Event-ID); CLOSED: it gave up.
    if (mine.readyState === EventSource.CLOSED) recover(mine);
  };
}
async function recover(which) {
  if (recovering || which !== es) return;
  recovering = true;
  es.close();
  for (;;) {
    try {
      const r = await fetch(`${app}/auth/tokens/refresh/`, {method: "POST",
        headers: {"Content-Type": "application/json"}, body: JSON.stringify({refresh})});
      const body = await r.json();
      if (r.ok) { access = body.access; refresh = body.refresh; break; }
      report({kind: "refresh_failed", status: r.status, code: body.code});
      return;
    } catch (e) {
      // The server is down (restarting): try again.
      await sleep(300);
    }
  }
  report({kind: "refreshed"});
  recovering = false;
  listen();
}

if (p.get("mode") === "cors") corsChecks(); else listen();
</script></body></html>
"#;

/// The page URL for `app` (and an API on `other` that does not allow the page's origin).
fn page_url(page: &PageServer, params: &[(&str, &str)]) -> String {
    let fragment = serde_urlencoded::to_string(params).expect("fragment");
    format!("{}/#{fragment}", page.origin)
}

async fn channel_of(app: &TestApp, access: &str) -> String {
    let channel = app
        .created(
            access,
            "/channels/create/",
            json!({"view_name": "someview"}),
        )
        .await;
    channel["channel_id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn a_page_on_another_origin_calls_the_api_and_listens_through_cors() {
    let Some(chromium) = chromium() else { return };
    let mut page = PageServer::start().await;
    let app = spawn_app_with(|s| s.cors_origins = vec![page.origin.clone()]).await;
    let elsewhere = spawn_app_with(|_| {}).await;
    let user = app.user_with_view().await;
    let cid = channel_of(&app, &user.access).await;

    let _browser = Browser::open(
        &chromium,
        &page_url(
            &page,
            &[
                ("mode", "cors"),
                ("app", &app.address),
                ("other", &elsewhere.address),
                ("channel", &cid),
                ("access", &user.access),
                ("refresh", &user.refresh),
            ],
        ),
    );
    let report = page.report(60 * SECOND, "its CORS checks").await;

    assert_eq!(report["failed"], Value::Null, "{report}");
    assert_eq!(report["me"], 200, "{report}");
    assert_eq!(report["me_email"], user.email.as_str(), "{report}");
    assert!(
        report["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "X-Request-Id is exposed: {report}"
    );
    // A JSON POST with Authorization: the browser sent a preflight first.
    assert_eq!(report["refresh"], 200, "{report}");
    assert_eq!(report["unauthorized"], 401, "{report}");
    assert_eq!(report["unauthorized_code"], "token_missing", "{report}");
    assert!(
        report["www_authenticate"].as_str().is_some(),
        "WWW-Authenticate is exposed: {report}"
    );
    // An API that does not list this origin: the browser refuses the page the answer.
    assert_eq!(report["other"], "TypeError", "{report}");
    // The refresh above is event 1, read by an EventSource with ?access_token= and
    // ?last_event_id=0.
    assert_eq!(report["event_id"], "1", "{report}");
}

/// An app server of the test's own on a fixed address, so that it can be restarted there.
fn serve_at(address: SocketAddr, pool: PgPool, settings: Settings) -> ServerHandle {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    // The stopped server's closed connections linger in TIME_WAIT on this port.
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(address).expect("bind the app's port again");
    let listener = socket
        .listen(1024)
        .expect("listen")
        .into_std()
        .expect("std listener");
    let server = tinydevcrm::app::build_server(listener, pool, settings).expect("build server");
    let handle = server.handle();
    tokio::spawn(server);
    handle
}

#[tokio::test]
async fn a_page_survives_three_token_expiries_and_a_restart_without_missing_or_repeating_an_event()
{
    let Some(chromium) = chromium() else { return };
    let mut page = PageServer::start().await;
    // The setup and the refreshes go through this app (long-lived tokens); the page talks to
    // a server of its own with short-lived access tokens, restarted once.
    let app = spawn_app_with(|_| {}).await;
    let user = app.user_with_view().await;
    let cid = channel_of(&app, &user.access).await;
    let mut settings = app.settings.clone();
    // Long enough for the browser's own reconnect (after `retry: 3000`) to beat the expiry
    // when the restart comes early in a stream, short enough for three expiries in a test.
    settings.access_token_ttl = Duration::from_secs(8);
    settings.cors_origins = vec![page.origin.clone()];
    settings.scheduler = false;
    let address: SocketAddr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("address")
    };
    let mut server = serve_at(address, app.pool.clone(), settings.clone());
    let base = format!("http://{address}");
    let res = app
        .client
        .post(format!("{base}/auth/tokens/obtain/"))
        .json(&json!({"primary_email": user.email, "password": user.password}))
        .send()
        .await
        .expect("obtain");
    assert_eq!(res.status(), StatusCode::OK);
    let tokens: Value = res.json().await.expect("json");

    let _browser = Browser::open(
        &chromium,
        &page_url(
            &page,
            &[
                ("app", &base),
                ("channel", &cid),
                ("access", tokens["access"].as_str().expect("access")),
                ("refresh", tokens["refresh"].as_str().expect("refresh")),
            ],
        ),
    );
    // Chromium may start after the first access token expired: the page then recovers first.
    let mut reports = Vec::new();
    loop {
        let report = page.report(60 * SECOND, "its first open stream").await;
        assert_ne!(report["kind"], "refresh_failed", "{report}");
        reports.push(report.clone());
        if report["kind"] == "open" {
            break;
        }
    }
    let mut expiries = 0;
    let mut events_since_open = 0;
    let mut restarted = false;
    let mut quiet_since: Option<tokio::time::Instant> = None;
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    // Refresh the view four times a second until the page has seen three expiries and the
    // restart is a few seconds behind, then let it catch up.
    loop {
        tokio::select! {
            report = page.reports.recv() => {
                let report = report.expect("the page server is running");
                match report["kind"].as_str() {
                    Some("expired") => expiries += 1,
                    Some("open") => events_since_open = 0,
                    Some("event") => events_since_open += 1,
                    _ => {}
                }
                if ["refresh_failed", "reset"].contains(&report["kind"].as_str().unwrap_or_default()) {
                    panic!("the page hit {report}; so far {reports:#?}");
                }
                reports.push(report);
            }
            _ = tick.tick() => {
                if quiet_since.is_none() {
                    app.refresh_view(&user.access, "someview").await;
                }
                // Restart early in a stream that has had events (so its URL's last_event_id is
                // behind the Last-Event-ID its reconnect sends), and not while the page is
                // refreshing its token: a rotation whose answer the restart cut would be a
                // refresh-token reuse.
                let steady = reports.last().is_some_and(|r| r["kind"] == "event");
                if !restarted && expiries >= 1 && steady && events_since_open >= 2 {
                    server.stop(false).await;
                    server = serve_at(address, app.pool.clone(), settings.clone());
                    restarted = true;
                    reports.push(json!({"kind": "restarted by the test"}));
                }
                if quiet_since.is_none() && restarted && expiries >= 3 {
                    quiet_since = Some(tokio::time::Instant::now());
                }
                if quiet_since.is_some_and(|t| t.elapsed() > 3 * SECOND) {
                    break;
                }
                assert!(
                    started.elapsed() < 120 * SECOND,
                    "no three expiries and a restart within two minutes: {reports:#?}"
                );
            }
        }
    }
    let channel: Value = app
        .get_as(&user.access, &format!("/channels/{cid}/"))
        .await
        .json()
        .await
        .expect("json");
    let newest = channel["last_event_id"].as_i64().expect("last_event_id");
    let ids = |reports: &[Value]| -> Vec<i64> {
        let mut events: Vec<(i64, i64)> = reports
            .iter()
            .filter(|r| r["kind"] == "event")
            .map(|r| {
                (
                    r["n"].as_i64().unwrap_or(-1),
                    r["id"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        events.sort_unstable();
        events.into_iter().map(|(_, id)| id).collect()
    };
    // Reports may still be on their way.
    let deadline = tokio::time::Instant::now() + 30 * SECOND;
    while ids(&reports).len() < usize::try_from(newest).unwrap_or(0)
        && tokio::time::Instant::now() < deadline
    {
        if let Ok(Some(report)) = tokio::time::timeout(SECOND, page.reports.recv()).await {
            reports.push(report);
        }
    }
    server.stop(false).await;

    let opens = reports.iter().filter(|r| r["kind"] == "open").count();
    let errors = reports.iter().filter(|r| r["kind"] == "error").count();
    eprintln!(
        "browser resume: {newest} events, {expiries} token expiries, {opens} streams opened, {errors} stream errors, in {:?}",
        started.elapsed()
    );
    let expected: Vec<i64> = (1..=newest).collect();
    assert!(newest >= 12, "too few events to tell: {newest}");
    assert_eq!(
        ids(&reports),
        expected,
        "the page missed or repeated events; its reports: {reports:#?}"
    );
    assert!(
        expiries >= 3 && opens >= 4,
        "{expiries} expiries, {opens} streams opened: {reports:#?}"
    );
    let after_restart: Vec<&Value> = reports
        .iter()
        .skip_while(|r| r["kind"] != "restarted by the test")
        .collect();
    assert!(
        after_restart.iter().any(|r| r["kind"] == "error"),
        "the restart did not cut the page's stream: {reports:#?}"
    );
    assert!(
        after_restart
            .iter()
            .any(|r| r["kind"] == "open" && r["again"] == true),
        "the browser did not reconnect by itself after the restart: {reports:#?}"
    );
}
