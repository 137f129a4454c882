//! The outbox drainer against a real HTTP receiver on loopback whose answers each test scripts
//! (200, 500, 429 with Retry-After, 410, a hang past the timeout, a redirect), and which checks
//! every signature. Channels, subscriptions and events come from the real API (the receiver is
//! told each subscription's secret as the API answers it); only states the API cannot reach
//! in a test's time (failing for minutes, old finished deliveries) are written as rows.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tinydevcrm::config::Settings;
use tinydevcrm::notify::outbox::webhook_id;
use tinydevcrm::notify::signature::{self, WebhookSecret};
use uuid::Uuid;

use crate::helpers::{TestApp, database_url, spawn_app_with, temp_dir};
use crate::processes::{Serve, serve};

type Spans = Arc<Mutex<Vec<(Instant, Instant)>>>;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
enum Reply {
    /// This status, body `received`.
    Status(u16),
    /// This status with `Retry-After: secs`.
    RetryAfter(u16, u64),
    /// 200, but only after this long.
    Hang(Duration),
    /// 302 to another path of the receiver.
    Redirect,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    at: Instant,
    path: String,
    id: String,
    body: Value,
    /// `webhook-timestamp`, as sent.
    timestamp: String,
    /// `webhook-signature`, as sent.
    signature: String,
    /// The body's bytes, as sent (what the signatures cover).
    raw: Bytes,
    /// Whether `webhook-signature` verified with the secret of the subscription at this path.
    signed: bool,
}

impl Hit {
    /// Whether the signature header verifies with exactly these secrets.
    fn verifies_with(&self, secrets: &[WebhookSecret]) -> bool {
        self.timestamp.parse::<i64>().is_ok_and(|ts| {
            signature::verify(
                &self.signature,
                secrets,
                &self.id,
                ts,
                &self.raw,
                Duration::from_secs(300),
            )
            .is_ok()
        })
    }
}

/// The secrets a receiver accepts signatures of, by the path their subscription delivers to.
type Secrets = Arc<Mutex<HashMap<String, Vec<WebhookSecret>>>>;

/// A webhook receiver on 127.0.0.1 that answers from its script (then `fallback`) and records
/// every request, checking its signature against the secret it was told for the request's
/// path ([`Receiver::trust`]). Each subscription gets its own path ([`Receiver::url`]), so a
/// delivery signed with another subscription's secret does not pass.
struct Receiver {
    addr: SocketAddr,
    /// Paths handed out so far.
    paths: AtomicUsize,
    hits: Arc<Mutex<Vec<Hit>>>,
    secrets: Secrets,
    /// When each answered request arrived and was answered.
    spans: Spans,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(script: Vec<Reply>, fallback: Reply) -> Self {
        Self::start_on("127.0.0.1:0", script, fallback).await
    }

    async fn start_on(addr: &str, script: Vec<Reply>, fallback: Reply) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let hits = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let spans: Spans = Arc::default();
        let secrets: Secrets = Arc::default();
        let (log, queue, secret, answered) = (
            Arc::clone(&hits),
            Arc::clone(&script),
            Arc::clone(&secrets),
            Arc::clone(&spans),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (log, queue, secret, fallback, answered) = (
                    Arc::clone(&log),
                    Arc::clone(&queue),
                    Arc::clone(&secret),
                    fallback.clone(),
                    Arc::clone(&answered),
                );
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        answer(
                            Arc::clone(&log),
                            Arc::clone(&answered),
                            Arc::clone(&queue),
                            Arc::clone(&secret),
                            fallback.clone(),
                            req,
                        )
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            paths: AtomicUsize::new(0),
            hits,
            secrets,
            spans,
            task,
        }
    }

    /// Accepts signatures made with `secret` on requests to `url`'s path from now on.
    fn trust(&self, url: &str, secret: WebhookSecret) {
        let path = url::Url::parse(url).expect("a URL").path().to_owned();
        self.secrets
            .lock()
            .expect("not poisoned")
            .entry(path)
            .or_default()
            .push(secret);
    }

    /// A URL of the receiver no subscription has had yet.
    fn url(&self) -> String {
        let n = self.paths.fetch_add(1, Ordering::Relaxed);
        format!("http://{}/hook/{n}", self.addr)
    }

    /// The most requests that were being answered at one time.
    fn most_at_once(&self) -> usize {
        let spans = self.spans.lock().expect("not poisoned").clone();
        spans
            .iter()
            .map(|(start, _)| {
                spans
                    .iter()
                    .filter(|(s, e)| s <= start && start < e)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("not poisoned").clone()
    }

    /// Waits until the receiver has had `n` requests (or panics after `limit`).
    async fn wait_for_hits(&self, n: usize, limit: Duration) -> Vec<Hit> {
        let start = Instant::now();
        loop {
            let hits = self.hits();
            if hits.len() >= n {
                return hits;
            }
            assert!(
                start.elapsed() < limit,
                "{} of {n} requests within {limit:?}",
                hits.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn answer(
    log: Arc<Mutex<Vec<Hit>>>,
    answered: Spans,
    script: Arc<Mutex<VecDeque<Reply>>>,
    secrets: Secrets,
    fallback: Reply,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let path = req.uri().path().to_owned();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, timestamp, sig) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let json_type = header("content-type") == "application/json";
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut hit = Hit {
        at,
        path,
        id,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        timestamp,
        signature: sig,
        raw: body,
        signed: false,
    };
    let trusted = secrets
        .lock()
        .expect("not poisoned")
        .get(&hit.path)
        .cloned()
        .unwrap_or_default();
    hit.signed = json_type && hit.verifies_with(&trusted);
    log.lock().expect("not poisoned").push(hit);
    let reply = script
        .lock()
        .expect("not poisoned")
        .pop_front()
        .unwrap_or(fallback);
    let mut response = Response::new(Full::new(Bytes::from_static(b"received")));
    match reply {
        Reply::Status(code) => {
            *response.status_mut() = StatusCode::from_u16(code).expect("a status");
        }
        Reply::RetryAfter(code, secs) => {
            *response.status_mut() = StatusCode::from_u16(code).expect("a status");
            response.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                secs.to_string().parse().expect("a header value"),
            );
        }
        Reply::Hang(how_long) => tokio::time::sleep(how_long).await,
        Reply::Redirect => {
            *response.status_mut() = StatusCode::FOUND;
            response.headers_mut().insert(
                hyper::header::LOCATION,
                "/elsewhere".parse().expect("a header value"),
            );
        }
    }
    answered
        .lock()
        .expect("not poisoned")
        .push((at, Instant::now()));
    Ok(response)
}

/// Test settings that deliver to loopback over http, retry on `schedule_ms`, time an attempt
/// out after 1 s, and look at the outbox every 50 ms.
fn webhooks_to_loopback(settings: &mut Settings, schedule_ms: &[u64]) {
    settings.webhook_allow_http = true;
    settings.webhook_allow_cidrs = vec!["127.0.0.0/8".parse().expect("a CIDR")];
    settings.webhook_retry_schedule = schedule_ms
        .iter()
        .map(|ms| Duration::from_millis(*ms))
        .collect();
    settings.webhook_timeout = Duration::from_secs(1);
    settings.outbox_poll = Duration::from_millis(50);
    settings.scheduler = false;
    settings.max_webhooks_per_channel = 1000;
    settings.max_subscriptions_per_tenant = 1000;
}

/// A user with `someview`, a channel on it; the app, the user's access token, the channel id.
async fn channel(schedule_ms: &[u64]) -> (TestApp, String, String) {
    let app = spawn_app_with(|s| webhooks_to_loopback(s, schedule_ms)).await;
    let (user, cid) = app.user_with_channel().await;
    (app, user.access, cid)
}

/// Subscribes a webhook to the channel through the API; its id and the secret the API answered.
async fn subscribe_url(
    app: &TestApp,
    access: &str,
    channel_id: &str,
    url: &str,
) -> (Uuid, WebhookSecret) {
    let created = app
        .created(
            access,
            &format!("/channels/{channel_id}/webhooks/"),
            json!({"url": url}),
        )
        .await;
    let id = created["webhook_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a webhook id");
    let secret = WebhookSecret::parse(created["secret"].as_str().expect("a secret"))
        .expect("a whsec_ secret");
    (id, secret)
}

/// Subscribes the receiver (at a path of its own) and tells it the secret; the id.
async fn subscribe(app: &TestApp, access: &str, channel_id: &str, receiver: &Receiver) -> Uuid {
    subscribe_as(app, access, channel_id, receiver, &receiver.url()).await
}

/// [`subscribe`] at another URL that reaches the receiver.
async fn subscribe_as(
    app: &TestApp,
    access: &str,
    channel_id: &str,
    receiver: &Receiver,
    url: &str,
) -> Uuid {
    let (id, secret) = subscribe_url(app, access, channel_id, url).await;
    receiver.trust(url, secret);
    id
}

/// A delivery row, as the log would show it.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Delivery {
    delivery_id: Uuid,
    seq: Option<i64>,
    status: String,
    attempts: i32,
    last_status_code: Option<i32>,
    last_response: Option<String>,
    last_error: Option<String>,
    finished: bool,
}

async fn deliveries(app: &TestApp, subscription: Uuid) -> Vec<Delivery> {
    sqlx::query_as(
        "SELECT delivery_id, seq, status, attempts, last_status_code, last_response, last_error,
                finished_at IS NOT NULL AS finished
         FROM tinydevcrm.deliveries WHERE subscription_id = $1 ORDER BY seq",
    )
    .bind(subscription)
    .fetch_all(&app.pool)
    .await
    .expect("deliveries")
}

/// Waits until every delivery of the subscription has finished (or panics after `limit`).
async fn wait_until_finished(app: &TestApp, subscription: Uuid, limit: Duration) -> Vec<Delivery> {
    let start = Instant::now();
    loop {
        let rows = deliveries(app, subscription).await;
        if !rows.is_empty() && rows.iter().all(|d| d.status != "pending") {
            return rows;
        }
        assert!(
            start.elapsed() < limit,
            "deliveries still pending after {limit:?}: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn subscription_state(app: &TestApp, subscription: Uuid) -> (String, Option<String>, bool) {
    sqlx::query_as(
        "SELECT status, disabled_reason, failing_since IS NOT NULL
         FROM tinydevcrm.subscriptions WHERE subscription_id = $1",
    )
    .bind(subscription)
    .fetch_one(&app.pool)
    .await
    .expect("the subscription")
}

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_refresh_event_is_delivered_once_signed_with_the_events_json() {
    let receiver = Receiver::start(vec![], Reply::Status(200)).await;
    let (app, access, cid) = channel(&[100]).await;
    let sub = subscribe(&app, &access, &cid, &receiver).await;

    let refreshed = app.refresh_view(&access, "someview").await;

    let rows = wait_until_finished(&app, sub, LIMIT).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 1, "{hits:#?}");
    let (hit, row) = (&hits[0], &rows[0]);
    assert!(hit.signed, "the signature did not verify: {hit:?}");
    assert_eq!(hit.id, format!("msg_{}", row.delivery_id.simple()));
    let event: Value = sqlx::query_scalar(
        "SELECT data FROM tinydevcrm.events WHERE channel_id = $1::uuid AND seq = 1",
    )
    .bind(&cid)
    .fetch_one(&app.pool)
    .await
    .expect("the event");
    let mut expected = event.clone();
    expected["seq"] = json!(1);
    expected["delivery_id"] = json!(row.delivery_id.to_string());
    assert_eq!(hit.body, expected);
    assert_eq!(hit.body["channel_id"], json!(cid));
    assert_eq!(hit.body["run_id"], refreshed["refresh_id"]);
    assert_eq!(hit.body["view_name"], "someview");
    assert_eq!(
        (row.status.as_str(), row.attempts, row.last_status_code),
        ("succeeded", 1, Some(200))
    );
    assert_eq!(row.last_response.as_deref(), Some("received"));
    assert!(row.finished);
    assert_eq!(row.seq, Some(1));
}

#[tokio::test]
async fn a_500_is_retried_with_the_same_webhook_id_and_body_until_a_200() {
    let receiver = Receiver::start(
        vec![Reply::Status(500), Reply::Status(503)],
        Reply::Status(200),
    )
    .await;
    let (app, access, cid) = channel(&[100, 100, 100]).await;
    let sub = subscribe(&app, &access, &cid, &receiver).await;

    app.refresh_view(&access, "someview").await;

    let rows = wait_until_finished(&app, sub, LIMIT).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 3, "{hits:#?}");
    assert!(hits.iter().all(|h| h.signed), "{hits:#?}");
    assert!(
        hits.iter()
            .all(|h| h.id == hits[0].id && h.body == hits[0].body)
    );
    assert!(
        hits[1].at - hits[0].at >= Duration::from_millis(90),
        "the schedule's step"
    );
    assert_eq!(
        (
            rows[0].status.as_str(),
            rows[0].attempts,
            rows[0].last_status_code
        ),
        ("succeeded", 3, Some(200))
    );
    let (status, _, failing) = subscription_state(&app, sub).await;
    assert_eq!(status, "active");
    assert!(!failing, "a success clears failing_since");
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_no_sooner_than_it_asks() {
    let receiver = Receiver::start(vec![Reply::RetryAfter(429, 1)], Reply::Status(200)).await;
    // The schedule's own first step is 50 ms; its longest, 2 s, caps Retry-After.
    let (app, access, cid) = channel(&[50, 2000]).await;
    let sub = subscribe(&app, &access, &cid, &receiver).await;

    app.refresh_view(&access, "someview").await;

    let rows = wait_until_finished(&app, sub, LIMIT).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 2, "{hits:#?}");
    let waited = hits[1].at - hits[0].at;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    assert_eq!(hits[0].id, hits[1].id);
    assert_eq!(
        (rows[0].status.as_str(), rows[0].attempts),
        ("succeeded", 2)
    );
}

#[tokio::test]
async fn a_410_fails_the_delivery_and_disables_the_subscription_with_the_reason() {
    let receiver = Receiver::start(vec![Reply::Status(410)], Reply::Status(200)).await;
    let (app, access, cid) = channel(&[50, 50, 50]).await;
    let sub = subscribe(&app, &access, &cid, &receiver).await;

    app.refresh_view(&access, "someview").await;

    let rows = wait_until_finished(&app, sub, LIMIT).await;
    assert_eq!(
        (
            rows[0].status.as_str(),
            rows[0].attempts,
            rows[0].last_status_code
        ),
        ("failed", 1, Some(410))
    );
    let (status, reason, _) = subscription_state(&app, sub).await;
    assert_eq!(status, "disabled");
    assert!(
        reason.as_deref().is_some_and(|r| r.contains("410")),
        "{reason:?}"
    );
    // A delivery of the disabled subscription still in the outbox (here a test delivery queued
    // through the API) is failed when seen, unsent.
    let res = app
        .post_as(
            &access,
            &format!("/channels/{cid}/webhooks/{sub}/test/"),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), reqwest::StatusCode::ACCEPTED);
    let queued: Value = res.json().await.expect("json");
    let late_id: Uuid = queued["delivery_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a delivery id");
    let rows = wait_until_finished(&app, sub, LIMIT).await;
    let late = rows
        .iter()
        .find(|d| d.delivery_id == late_id)
        .expect("the late one");
    assert_eq!(
        (
            late.status.as_str(),
            late.attempts,
            late.last_error.as_deref()
        ),
        ("failed", 0, Some("subscription disabled"))
    );
    assert_eq!(receiver.hits().len(), 1, "nothing sent after the 410");
}

#[tokio::test]
async fn a_receiver_that_hangs_past_the_timeout_is_retried_with_the_same_id() {
    let receiver = Receiver::start(
        vec![Reply::Hang(Duration::from_secs(5))],
        Reply::Status(200),
    )
    .await;
    let (app, access, cid) = channel(&[50, 50]).await;
    let sub = subscribe(&app, &access, &cid, &receiver).await;

    app.refresh_view(&access, "someview").await;

    let hits = receiver.wait_for_hits(1, LIMIT).await;
    // While the first attempt hangs the delivery is pending under its lease; after the
    // 1 s timeout it is retried.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.hits().len(), 1, "retried before the timeout");
    let rows = wait_until_finished(&app, sub, LIMIT).await;
    let hits_after = receiver.hits();
    assert_eq!(hits_after.len(), 2, "{hits_after:#?}");
    assert_eq!(hits_after[1].id, hits[0].id);
    assert!(hits_after[1].at - hits[0].at >= Duration::from_secs(1));
    assert_eq!(
        (rows[0].status.as_str(), rows[0].attempts),
        ("succeeded", 2)
    );
}

#[tokio::test]
async fn a_timeout_is_recorded_as_such_when_the_schedule_has_no_retry() {
    let receiver = Receiver::start(vec![], Reply::Hang(Duration::from_secs(5))).await;
    let (app, access, cid) = channel(&[]).await;
    let sub = subscribe(&app, &access, &cid, &receiver).await;

    app.refresh_view(&access, "someview").await;

    let rows = wait_until_finished(&app, sub, LIMIT).await;
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("failed", 1));
    let error = rows[0].last_error.clone().unwrap_or_default();
    assert!(
        error.contains("timed out") && error.contains("no retries left"),
        "{error}"
    );
    assert_eq!(rows[0].last_status_code, None);
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_fails_at_once() {
    let receiver = Receiver::start(vec![Reply::Redirect], Reply::Status(200)).await;
    let (app, access, cid) = channel(&[50, 50]).await;
    let sub = subscribe(&app, &access, &cid, &receiver).await;

    app.refresh_view(&access, "someview").await;

    let rows = wait_until_finished(&app, sub, LIMIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 1, "{hits:#?}");
    assert!(
        hits[0].path.starts_with("/hook/"),
        "the redirect was followed"
    );
    assert_eq!(
        (
            rows[0].status.as_str(),
            rows[0].attempts,
            rows[0].last_status_code
        ),
        ("failed", 1, Some(302))
    );
    let error = rows[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("redirects are not followed"), "{error}");
    let (status, _, failing) = subscription_state(&app, sub).await;
    assert_eq!(status, "active");
    assert!(failing, "a failure sets failing_since");
}

#[tokio::test]
async fn after_the_last_scheduled_retry_the_delivery_fails_and_stays_in_the_log() {
    let receiver = Receiver::start(vec![], Reply::Status(500)).await;
    let (app, access, cid) = channel(&[50, 50]).await;
    let sub = subscribe(&app, &access, &cid, &receiver).await;

    app.refresh_view(&access, "someview").await;

    let rows = wait_until_finished(&app, sub, LIMIT).await;
    assert_eq!(receiver.hits().len(), 3);
    assert_eq!(
        (
            rows[0].status.as_str(),
            rows[0].attempts,
            rows[0].last_status_code
        ),
        ("failed", 3, Some(500))
    );
    let error = rows[0].last_error.clone().unwrap_or_default();
    assert!(
        error.contains("HTTP 500") && error.contains("no retries left"),
        "{error}"
    );
    // Kept: the drainer's retention pass (at its start) deletes only what is a week old.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(deliveries(&app, sub).await.len(), 1);
}

#[tokio::test]
async fn a_subscription_failing_for_longer_than_the_limit_is_disabled_with_the_reason() {
    let receiver = Receiver::start(vec![], Reply::Status(500)).await;
    let app = spawn_app_with(|s| {
        webhooks_to_loopback(s, &[50, 50, 50]);
        s.webhook_disable_after = Duration::from_secs(60);
    })
    .await;
    let (user, cid) = app.user_with_channel().await;
    let sub = subscribe(&app, &user.access, &cid, &receiver).await;
    sqlx::query("UPDATE tinydevcrm.subscriptions SET failing_since = now() - interval '2 minutes' WHERE subscription_id = $1")
        .bind(sub)
        .execute(&app.pool)
        .await
        .expect("failing for two minutes");

    app.refresh_view(&user.access, "someview").await;

    let rows = wait_until_finished(&app, sub, LIMIT).await;
    let (status, reason, _) = subscription_state(&app, sub).await;
    assert_eq!(status, "disabled");
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("failed without a success")),
        "{reason:?}"
    );
    assert_eq!(rows[0].status, "failed");
    assert_eq!(receiver.hits().len(), 1, "disabled after the first failure");
}

#[tokio::test]
async fn events_sent_while_the_receiver_is_down_all_arrive_once_it_is_up() {
    // A port nobody listens on, for now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    let (app, access, cid) = channel(&[100; 30]).await;
    let url = format!("http://127.0.0.1:{port}/hook");
    let (sub, secret) = subscribe_url(&app, &access, &cid, &url).await;
    for _ in 0..5 {
        app.refresh_view(&access, "someview").await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let down = deliveries(&app, sub).await;
    assert_eq!(down.len(), 5);
    assert!(
        down.iter()
            .all(|d| d.status == "pending" && d.attempts >= 1),
        "{down:#?}"
    );

    let receiver =
        Receiver::start_on(&format!("127.0.0.1:{port}"), vec![], Reply::Status(200)).await;
    receiver.trust(&url, secret);

    let rows = wait_until_finished(&app, sub, LIMIT).await;
    assert!(rows.iter().all(|d| d.status == "succeeded"), "{rows:#?}");
    let hits = receiver.hits();
    let seqs: BTreeSet<i64> = hits.iter().filter_map(|h| h.body["seq"].as_i64()).collect();
    assert_eq!(seqs, (1..=5).collect::<BTreeSet<_>>());
    assert_eq!(hits.len(), 5, "{hits:#?}");
    assert!(hits.iter().all(|h| h.signed));
}

/// Settings of `serve` processes that deliver to the test receivers, as [`webhooks_to_loopback`]
/// gives the in-process app; `extra` adds or overrides variables.
fn drainer_env(app: &TestApp, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        (
            "JWT_SECRET",
            app.settings.jwt_secret.expose_secret().to_owned(),
        ),
        ("TDC_SCHEDULER", "false".to_owned()),
        ("TDC_WEBHOOK_ALLOW_HTTP", "true".to_owned()),
        ("TDC_WEBHOOK_ALLOW_CIDRS", "127.0.0.0/8".to_owned()),
        ("TDC_WEBHOOK_RETRY_SCHEDULE", "100ms,100ms,100ms".to_owned()),
        ("TDC_OUTBOX_POLL_MS", "100".to_owned()),
        (
            "RUST_LOG",
            "warn,tinydevcrm::notify::outbox=debug".to_owned(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    env
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Attempts a process finished (the drainer logs each one's outcome at debug).
fn attempts_logged(path: &Path) -> usize {
    read_log(path).matches("webhook attempt").count()
}

/// Starts a real `serve` process per log path on the app's database, and waits until every
/// one's outbox drainer runs.
async fn start_drainers(app: &TestApp, logs: &[PathBuf], env: &[(&str, String)]) -> Vec<Serve> {
    let processes = logs
        .iter()
        .map(|log| serve(&database_url(&app.db), log, env))
        .collect();
    let start = Instant::now();
    while !logs
        .iter()
        .all(|p| read_log(p).contains("outbox drainer started"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the processes did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    processes
}

/// An API app that delivers nothing itself (only the `serve` processes a test starts do), a
/// user and a channel; the app, the user's access token, the channel id.
async fn api_only() -> (TestApp, String, String) {
    let app = spawn_app_with(|s| {
        webhooks_to_loopback(s, &[100]);
        s.outbox = false;
    })
    .await;
    let (user, cid) = app.user_with_channel().await;
    (app, user.access, cid)
}

/// Every delivery of the channel: id, status, attempts, whether an outcome was recorded.
async fn channel_deliveries(app: &TestApp, cid: &str) -> Vec<(Uuid, String, i32, bool)> {
    sqlx::query_as(
        "SELECT delivery_id, status, attempts, last_attempt_at IS NOT NULL
           FROM tinydevcrm.deliveries WHERE channel_id = $1::uuid ORDER BY delivery_id",
    )
    .bind(cid)
    .fetch_all(&app.pool)
    .await
    .expect("deliveries")
}

/// Waits until the channel has `n` deliveries and none is pending (or panics after `limit`).
async fn wait_until_all_finished(
    app: &TestApp,
    cid: &str,
    n: usize,
    limit: Duration,
) -> Vec<(Uuid, String, i32, bool)> {
    let start = Instant::now();
    loop {
        let rows = channel_deliveries(app, cid).await;
        if rows.len() == n && rows.iter().all(|(_, status, _, _)| status != "pending") {
            return rows;
        }
        let pending = rows.iter().filter(|r| r.1 == "pending").count();
        assert!(
            start.elapsed() < limit,
            "{} deliveries, {pending} pending after {limit:?}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many times the receiver got each `webhook-id`.
fn times_received(hits: &[Hit]) -> BTreeMap<String, usize> {
    let mut times = BTreeMap::new();
    for hit in hits {
        *times.entry(hit.id.clone()).or_insert(0) += 1;
    }
    times
}

#[tokio::test]
async fn three_serve_processes_share_1000_deliveries_and_each_arrives_exactly_once() {
    // Each answer takes a moment, so that one process alone could not take them all at once.
    let receiver = Receiver::start(vec![], Reply::Hang(Duration::from_millis(5))).await;
    let (app, access, cid) = api_only().await;
    // 100 webhooks on the channel and 10 refreshes: 1,000 deliveries.
    for _ in 0..100 {
        subscribe(&app, &access, &cid, &receiver).await;
    }
    let logs = temp_dir("tdc-outbox-logs");
    let log_paths: Vec<PathBuf> = (1..=3)
        .map(|i| logs.join(format!("serve-{i}.log")))
        .collect();
    let _processes = start_drainers(
        &app,
        &log_paths,
        &drainer_env(&app, &[("TDC_WEBHOOK_CONCURRENCY_PER_HOST", "8")]),
    )
    .await;

    for _ in 0..10 {
        app.refresh_view(&access, "someview").await;
    }

    receiver.wait_for_hits(1000, Duration::from_secs(60)).await;
    // The receiver records a request before it answers: wait for the answers to be recorded.
    let rows = wait_until_all_finished(&app, &cid, 1000, LIMIT).await;
    // Anything sent twice would arrive by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hits = receiver.hits();
    let times = times_received(&hits);
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "received more than once: {twice:?}");
    let expected: BTreeSet<String> = rows.iter().map(|r| webhook_id(r.0)).collect();
    assert_eq!(
        times.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "every delivery, and only those"
    );
    assert_eq!(hits.len(), 1000);
    assert!(hits.iter().all(|h| h.signed));
    let not_once: Vec<_> = rows
        .iter()
        .filter(|(_, status, attempts, _)| status != "succeeded" || *attempts != 1)
        .collect();
    assert!(not_once.is_empty(), "{not_once:?}");
    let per_process: Vec<usize> = log_paths.iter().map(|p| attempts_logged(p)).collect();
    assert_eq!(per_process.iter().sum::<usize>(), 1000, "{per_process:?}");
    assert!(
        per_process.iter().all(|n| *n > 0),
        "each process delivers some: {per_process:?}"
    );
    let _ = std::fs::remove_dir_all(&logs);
}

#[tokio::test]
async fn a_serve_process_killed_mid_delivery_leaves_what_it_held_to_another_after_its_lease() {
    // An attempt may take 3 s; the lease holds a delivery 0.5 s longer.
    const TIMEOUT: Duration = Duration::from_secs(3);
    // The first four requests hang past the end of the test; every later one is answered.
    let receiver = Receiver::start(
        vec![Reply::Hang(Duration::from_secs(120)); 4],
        Reply::Status(200),
    )
    .await;
    let (app, access, cid) = api_only().await;
    let mut subs = Vec::new();
    for _ in 0..12 {
        subs.push(subscribe(&app, &access, &cid, &receiver).await);
    }
    let logs = temp_dir("tdc-outbox-kill");
    let (log_a, log_b) = (logs.join("serve-a.log"), logs.join("serve-b.log"));
    let env = drainer_env(
        &app,
        &[
            ("TDC_WEBHOOK_TIMEOUT_SECS", "3"),
            ("TDC_WEBHOOK_LEASE_MARGIN_MS", "500"),
            ("TDC_WEBHOOK_CONCURRENCY_PER_HOST", "4"),
        ],
    );
    let mut a = start_drainers(&app, std::slice::from_ref(&log_a), &env)
        .await
        .remove(0);
    app.refresh_view(&access, "someview").await;
    // A sends four (its limit for the host), which hang; the other eight wait in the outbox.
    let held = receiver.wait_for_hits(4, LIMIT).await;
    let in_flight: BTreeSet<String> = held.iter().map(|h| h.id.clone()).collect();
    assert_eq!(in_flight.len(), 4);

    // Act: SIGKILL, while the four attempts are in flight.
    a.0.kill().expect("kill -9");
    a.0.wait().expect("reaped");
    assert!(
        held[0].at.elapsed() < TIMEOUT,
        "the kill came after the attempts timed out: the test proves nothing"
    );
    let at_kill = channel_deliveries(&app, &cid).await;
    let claimed: Vec<_> = at_kill.iter().filter(|r| r.2 == 1).collect();
    assert_eq!(claimed.len(), 4, "{at_kill:?}");
    assert!(
        claimed
            .iter()
            .all(|(id, status, _, recorded)| status == "pending"
                && !recorded
                && in_flight.contains(&webhook_id(*id))),
        "{at_kill:?}"
    );
    assert_eq!(at_kill.iter().filter(|r| r.2 == 0).count(), 8);
    let _b = start_drainers(&app, std::slice::from_ref(&log_b), &env).await;

    // Assert: B sends everything, the four A held once their lease has passed.
    let rows = wait_until_all_finished(&app, &cid, 12, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hits = receiver.hits();
    let times = times_received(&hits);
    let expected: BTreeSet<String> = rows.iter().map(|r| webhook_id(r.0)).collect();
    assert_eq!(
        times.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "none lost"
    );
    let twice: BTreeSet<String> = times
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(twice, in_flight, "duplicates only of what was in flight");
    assert!(times.values().all(|n| *n <= 2), "{times:?}");
    for id in &in_flight {
        let at: Vec<Instant> = hits.iter().filter(|h| &h.id == id).map(|h| h.at).collect();
        let waited = at[1] - at[0];
        assert!(
            waited >= TIMEOUT,
            "{id} was sent again {waited:?} after A took it, inside A's lease"
        );
    }
    assert!(hits.iter().all(|h| h.signed));
    assert_eq!(attempts_logged(&log_a), 0, "A recorded nothing");
    assert_eq!(attempts_logged(&log_b), 12, "B made every recorded attempt");
    // The delivery log, through the API: every delivery succeeded, the held ones at the
    // second attempt.
    for sub in subs {
        let res = app
            .get_as(
                &access,
                &format!("/channels/{cid}/webhooks/{sub}/deliveries/"),
            )
            .await;
        assert_eq!(res.status(), reqwest::StatusCode::OK);
        let page: Value = res.json().await.expect("json");
        let log = page["deliveries"].as_array().expect("deliveries");
        assert_eq!(log.len(), 1, "{page}");
        let id: Uuid = log[0]["delivery_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("id");
        let attempts = if in_flight.contains(&webhook_id(id)) {
            2
        } else {
            1
        };
        assert_eq!(
            (log[0]["status"].as_str(), log[0]["attempts"].as_i64()),
            (Some("succeeded"), Some(attempts)),
            "{page}"
        );
    }
    let _ = std::fs::remove_dir_all(&logs);
}

#[tokio::test]
async fn after_a_rotation_a_delivery_verifies_with_both_secrets_until_the_overlap_ends() {
    let receiver = Receiver::start(vec![], Reply::Status(200)).await;
    let app = spawn_app_with(|s| {
        webhooks_to_loopback(s, &[100]);
        s.webhook_rotation_overlap = Duration::from_secs(3);
    })
    .await;
    let (user, cid) = app.user_with_channel().await;
    let (sub, old) = subscribe_url(&app, &user.access, &cid, &receiver.url()).await;
    let res = app
        .post_as(
            &user.access,
            &format!("/channels/{cid}/webhooks/{sub}/rotate-secret/"),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let rotated: Value = res.json().await.expect("json");
    let new = WebhookSecret::parse(rotated["secret"].as_str().expect("secret")).expect("whsec_");
    let until: chrono::DateTime<chrono::Utc> = rotated["previous_secret_until"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("previous_secret_until");
    let v1_count = |hit: &Hit| {
        hit.signature
            .split(' ')
            .filter(|s| s.starts_with("v1,"))
            .count()
    };

    // During the overlap.
    app.refresh_view(&user.access, "someview").await;
    let during = receiver.wait_for_hits(1, LIMIT).await[0].clone();
    assert!(
        chrono::Utc::now() < until,
        "the overlap ended before the delivery: the test proves nothing"
    );
    assert_eq!(v1_count(&during), 2, "{}", during.signature);
    assert!(
        during.verifies_with(std::slice::from_ref(&old)),
        "the old secret"
    );
    assert!(
        during.verifies_with(std::slice::from_ref(&new)),
        "the new secret"
    );

    // After it.
    let left = (until - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(200)).await;
    app.refresh_view(&user.access, "someview").await;
    let after = receiver.wait_for_hits(2, LIMIT).await[1].clone();
    assert_ne!(after.id, during.id);
    assert_eq!(v1_count(&after), 1, "{}", after.signature);
    assert!(
        after.verifies_with(std::slice::from_ref(&new)),
        "the new secret"
    );
    assert!(
        !after.verifies_with(std::slice::from_ref(&old)),
        "the old secret still signs after the overlap"
    );
    let rows = wait_until_finished(&app, sub, LIMIT).await;
    assert!(rows.iter().all(|d| d.status == "succeeded"), "{rows:#?}");
}

#[tokio::test]
async fn a_slow_receiver_holds_only_its_hosts_slots_and_others_are_delivered_meanwhile() {
    let slow = Receiver::start(vec![], Reply::Hang(Duration::from_millis(700))).await;
    let fast = Receiver::start(vec![], Reply::Status(200)).await;
    // Three attempts at once, two of them to one host.
    let app = spawn_app_with(|s| {
        webhooks_to_loopback(s, &[100]);
        s.webhook_concurrency = 3;
        s.webhook_concurrency_per_host = 2;
    })
    .await;
    let (user, cid) = app.user_with_channel().await;
    let mut slow_subs = Vec::new();
    for _ in 0..12 {
        slow_subs.push(subscribe(&app, &user.access, &cid, &slow).await);
    }
    // A backlog of twelve for the slow host, due before anything for the other one.
    app.refresh_view(&user.access, "someview").await;
    slow.wait_for_hits(2, LIMIT).await;
    // Another host name for the same loopback receiver address family: its own host.
    let fast_url = fast.url().replace("127.0.0.1", "localhost");
    let fast_sub = subscribe_as(&app, &user.access, &cid, &fast, &fast_url).await;

    let refreshed = Instant::now();
    app.refresh_view(&user.access, "someview").await;

    let hits = fast.wait_for_hits(1, LIMIT).await;
    let waited = hits[0].at - refreshed;
    assert!(
        waited < Duration::from_millis(600),
        "the other host waited {waited:?} behind the slow one"
    );
    assert_eq!(
        wait_until_finished(&app, fast_sub, LIMIT).await[0].status,
        "succeeded"
    );
    for sub in slow_subs {
        wait_until_finished(&app, sub, Duration::from_secs(20)).await;
    }
    assert_eq!(slow.hits().len(), 24);
    assert_eq!(slow.most_at_once(), 2, "the per-host limit");
}

#[tokio::test]
async fn finished_deliveries_past_the_retention_are_deleted_and_the_rest_kept() {
    let app = spawn_app_with(|s| {
        webhooks_to_loopback(s, &[100]);
        s.outbox = false;
    })
    .await;
    let (user, cid) = app.user_with_channel().await;
    let (sub, _) = subscribe_url(&app, &user.access, &cid, "http://127.0.0.1:9/hook").await;
    let res = app
        .patch_as(
            &user.access,
            &format!("/channels/{cid}/webhooks/{sub}/"),
            &json!({"status": "paused"}),
        )
        .await;
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    // seq 1: finished two hours ago; 2: finished just now; 3: pending, created two hours ago.
    sqlx::query(
        "INSERT INTO tinydevcrm.deliveries
             (delivery_id, subscription_id, channel_id, seq, payload, status, created_at, finished_at)
         VALUES (gen_random_uuid(), $1, $2::uuid, 1, '{}', 'succeeded', now() - interval '3 hours', now() - interval '2 hours'),
                (gen_random_uuid(), $1, $2::uuid, 2, '{}', 'failed', now() - interval '3 hours', now()),
                (gen_random_uuid(), $1, $2::uuid, 3, '{}', 'pending', now() - interval '2 hours', NULL)",
    )
    .bind(sub)
    .bind(&cid)
    .execute(&app.pool)
    .await
    .expect("deliveries");

    // A process with a one-hour retention prunes as its drainer starts.
    let _drainer = crate::helpers::spawn_app_on(app.db.clone(), {
        let mut settings = crate::helpers::test_settings();
        webhooks_to_loopback(&mut settings, &[100]);
        settings.delivery_retention = Duration::from_secs(3600);
        settings
    })
    .await;

    let start = Instant::now();
    loop {
        let seqs: Vec<Option<i64>> = deliveries(&app, sub).await.iter().map(|d| d.seq).collect();
        if seqs == [Some(2), Some(3)] {
            break;
        }
        assert!(start.elapsed() < LIMIT, "left: {seqs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The paused subscription's pending delivery is held, not attempted.
    let held = deliveries(&app, sub).await;
    assert_eq!((held[1].status.as_str(), held[1].attempts), ("pending", 0));
}
