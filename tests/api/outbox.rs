//! The outbox drainer against a real HTTP receiver on loopback whose answers each test scripts
//! (200, 500, 429 with Retry-After, 410, a hang past the timeout, a redirect), and which checks
//! every signature. Channels and events come from the real API; subscriptions are inserted as
//! rows (their routes are tested elsewhere).

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
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
use tinydevcrm::notify::signature::{self, WebhookSecret};
use uuid::Uuid;

use crate::helpers::{TestApp, database_url, spawn_app_with, temp_dir};
use crate::processes::serve;

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
    /// Whether `webhook-signature` verified with the receiver's secret.
    signed: bool,
}

/// A webhook receiver on 127.0.0.1 that answers from its script (then `fallback`) and records
/// every request, checking its signature with `secret`.
struct Receiver {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
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
    async fn start(secret: &WebhookSecret, script: Vec<Reply>, fallback: Reply) -> Self {
        Self::start_on("127.0.0.1:0", secret, script, fallback).await
    }

    async fn start_on(
        addr: &str,
        secret: &WebhookSecret,
        script: Vec<Reply>,
        fallback: Reply,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let hits = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let spans: Spans = Arc::default();
        let (log, queue, secret, answered) = (
            Arc::clone(&hits),
            Arc::clone(&script),
            secret.clone(),
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
                    secret.clone(),
                    fallback.clone(),
                    Arc::clone(&answered),
                );
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        answer(
                            Arc::clone(&log),
                            Arc::clone(&answered),
                            Arc::clone(&queue),
                            secret.clone(),
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
            hits,
            spans,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
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
    secret: WebhookSecret,
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
    let signed = json_type
        && timestamp.parse::<i64>().is_ok_and(|ts| {
            signature::verify(
                &sig,
                std::slice::from_ref(&secret),
                &id,
                ts,
                &body,
                Duration::from_secs(300),
            )
            .is_ok()
        });
    log.lock().expect("not poisoned").push(Hit {
        at,
        path,
        id,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        signed,
    });
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
}

/// A user with `someview`, a channel on it; the app, the user's access token, the channel id.
async fn channel(schedule_ms: &[u64]) -> (TestApp, String, String) {
    let app = spawn_app_with(|s| webhooks_to_loopback(s, schedule_ms)).await;
    let (user, cid) = app.user_with_channel().await;
    (app, user.access, cid)
}

/// Inserts a webhook subscription of the channel (as the routes would); its id.
async fn subscribe(app: &TestApp, channel_id: &str, url: &str, secret: &WebhookSecret) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO tinydevcrm.subscriptions (subscription_id, user_id, channel_id, kind, url, secret)
         SELECT gen_random_uuid(), user_id, channel_id, 'webhook', $2, $3
         FROM tinydevcrm.channels WHERE channel_id = $1::uuid
         RETURNING subscription_id",
    )
    .bind(channel_id)
    .bind(url)
    .bind(secret.expose())
    .fetch_one(&app.pool)
    .await
    .expect("a subscription")
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
    let secret = WebhookSecret::generate();
    let receiver = Receiver::start(&secret, vec![], Reply::Status(200)).await;
    let (app, access, cid) = channel(&[100]).await;
    let sub = subscribe(&app, &cid, &receiver.url(), &secret).await;

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
    let secret = WebhookSecret::generate();
    let receiver = Receiver::start(
        &secret,
        vec![Reply::Status(500), Reply::Status(503)],
        Reply::Status(200),
    )
    .await;
    let (app, access, cid) = channel(&[100, 100, 100]).await;
    let sub = subscribe(&app, &cid, &receiver.url(), &secret).await;

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
    let secret = WebhookSecret::generate();
    let receiver =
        Receiver::start(&secret, vec![Reply::RetryAfter(429, 1)], Reply::Status(200)).await;
    // The schedule's own first step is 50 ms; its longest, 2 s, caps Retry-After.
    let (app, access, cid) = channel(&[50, 2000]).await;
    let sub = subscribe(&app, &cid, &receiver.url(), &secret).await;

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
    let secret = WebhookSecret::generate();
    let receiver = Receiver::start(&secret, vec![Reply::Status(410)], Reply::Status(200)).await;
    let (app, access, cid) = channel(&[50, 50, 50]).await;
    let sub = subscribe(&app, &cid, &receiver.url(), &secret).await;

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
    // A delivery of the disabled subscription still in the outbox is failed when seen, unsent.
    sqlx::query(
        "INSERT INTO tinydevcrm.deliveries (delivery_id, subscription_id, channel_id, seq, payload)
         VALUES (gen_random_uuid(), $1, $2::uuid, 99, '{}')",
    )
    .bind(sub)
    .bind(&cid)
    .execute(&app.pool)
    .await
    .expect("a delivery");
    let rows = wait_until_finished(&app, sub, LIMIT).await;
    let late = rows
        .iter()
        .find(|d| d.seq == Some(99))
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
    let secret = WebhookSecret::generate();
    let receiver = Receiver::start(
        &secret,
        vec![Reply::Hang(Duration::from_secs(5))],
        Reply::Status(200),
    )
    .await;
    let (app, access, cid) = channel(&[50, 50]).await;
    let sub = subscribe(&app, &cid, &receiver.url(), &secret).await;

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
    let secret = WebhookSecret::generate();
    let receiver = Receiver::start(&secret, vec![], Reply::Hang(Duration::from_secs(5))).await;
    let (app, access, cid) = channel(&[]).await;
    let sub = subscribe(&app, &cid, &receiver.url(), &secret).await;

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
    let secret = WebhookSecret::generate();
    let receiver = Receiver::start(&secret, vec![Reply::Redirect], Reply::Status(200)).await;
    let (app, access, cid) = channel(&[50, 50]).await;
    let sub = subscribe(&app, &cid, &receiver.url(), &secret).await;

    app.refresh_view(&access, "someview").await;

    let rows = wait_until_finished(&app, sub, LIMIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 1, "{hits:#?}");
    assert_eq!(hits[0].path, "/hook", "the redirect was followed");
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
    let secret = WebhookSecret::generate();
    let receiver = Receiver::start(&secret, vec![], Reply::Status(500)).await;
    let (app, access, cid) = channel(&[50, 50]).await;
    let sub = subscribe(&app, &cid, &receiver.url(), &secret).await;

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
    let secret = WebhookSecret::generate();
    let receiver = Receiver::start(&secret, vec![], Reply::Status(500)).await;
    let app = spawn_app_with(|s| {
        webhooks_to_loopback(s, &[50, 50, 50]);
        s.webhook_disable_after = Duration::from_secs(60);
    })
    .await;
    let user = app.user_with_view().await;
    let cid = app
        .created(
            &user.access,
            "/channels/create/",
            json!({"view_name": "someview"}),
        )
        .await["channel_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let sub = subscribe(&app, &cid, &receiver.url(), &secret).await;
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
    let secret = WebhookSecret::generate();
    // A port nobody listens on, for now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    let (app, access, cid) = channel(&[100; 30]).await;
    let sub = subscribe(
        &app,
        &cid,
        &format!("http://127.0.0.1:{port}/hook"),
        &secret,
    )
    .await;
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

    let receiver = Receiver::start_on(
        &format!("127.0.0.1:{port}"),
        &secret,
        vec![],
        Reply::Status(200),
    )
    .await;

    let rows = wait_until_finished(&app, sub, LIMIT).await;
    assert!(rows.iter().all(|d| d.status == "succeeded"), "{rows:#?}");
    let hits = receiver.hits();
    let seqs: BTreeSet<i64> = hits.iter().filter_map(|h| h.body["seq"].as_i64()).collect();
    assert_eq!(seqs, (1..=5).collect::<BTreeSet<_>>());
    assert_eq!(hits.len(), 5, "{hits:#?}");
    assert!(hits.iter().all(|h| h.signed));
}

#[tokio::test]
async fn two_serve_processes_share_200_deliveries_with_none_lost_and_none_twice() {
    let secret = WebhookSecret::generate();
    // Each answer takes a moment, so that one process alone could not take them all at once.
    let receiver = Receiver::start(&secret, vec![], Reply::Hang(Duration::from_millis(20))).await;
    // The API app delivers nothing itself: only the two processes do.
    let app = spawn_app_with(|s| {
        webhooks_to_loopback(s, &[100]);
        s.outbox = false;
    })
    .await;
    let user = app.user_with_view().await;
    let cid = app
        .created(
            &user.access,
            "/channels/create/",
            json!({"view_name": "someview"}),
        )
        .await["channel_id"]
        .as_str()
        .expect("id")
        .to_owned();
    for _ in 0..50 {
        subscribe(&app, &cid, &receiver.url(), &secret).await;
    }
    let logs = temp_dir("tdc-outbox-logs");
    let env = [
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
    let log_paths = [logs.join("serve-1.log"), logs.join("serve-2.log")];
    let _processes: Vec<_> = log_paths
        .iter()
        .map(|log| serve(&database_url(&app.db), log, &env))
        .collect();
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    let start = Instant::now();
    while !log_paths
        .iter()
        .all(|p| read(p).contains("outbox drainer started"))
    {
        assert!(start.elapsed() < LIMIT, "the processes did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for _ in 0..4 {
        app.refresh_view(&user.access, "someview").await;
    }

    let hits = receiver.wait_for_hits(200, Duration::from_secs(20)).await;
    // The receiver records a request before it answers: wait for the answers to be recorded.
    let count = |sql: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .expect("count")
        }
    };
    let start = Instant::now();
    while count("SELECT count(*) FROM tinydevcrm.deliveries WHERE status = 'pending'").await > 0 {
        assert!(start.elapsed() < LIMIT, "deliveries still pending");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let unfinished = count(
        "SELECT count(*) FROM tinydevcrm.deliveries WHERE status <> 'succeeded' OR attempts <> 1",
    )
    .await;
    // Anything sent twice would arrive by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hits_after = receiver.hits();
    assert_eq!(
        hits_after.len(),
        200,
        "duplicates: {}",
        hits_after.len() - 200
    );
    let ids: BTreeSet<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids.len(), 200, "none twice");
    assert!(hits.iter().all(|h| h.signed));
    let total = count("SELECT count(*) FROM tinydevcrm.deliveries").await;
    assert_eq!((total, unfinished), (200, 0));
    let per_process: Vec<usize> = log_paths
        .iter()
        .map(|p| read(p).matches("webhook attempt").count())
        .collect();
    assert_eq!(per_process.iter().sum::<usize>(), 200, "{per_process:?}");
    assert!(
        per_process.iter().all(|n| *n > 0),
        "each process delivers some: {per_process:?}"
    );
    let _ = std::fs::remove_dir_all(&logs);
}

#[tokio::test]
async fn a_slow_receiver_holds_only_its_hosts_slots_and_others_are_delivered_meanwhile() {
    let secret = WebhookSecret::generate();
    let slow = Receiver::start(&secret, vec![], Reply::Hang(Duration::from_millis(700))).await;
    let fast = Receiver::start(&secret, vec![], Reply::Status(200)).await;
    // Three attempts at once, two of them to one host.
    let app = spawn_app_with(|s| {
        webhooks_to_loopback(s, &[100]);
        s.webhook_concurrency = 3;
        s.webhook_concurrency_per_host = 2;
    })
    .await;
    let user = app.user_with_view().await;
    let cid = app
        .created(
            &user.access,
            "/channels/create/",
            json!({"view_name": "someview"}),
        )
        .await["channel_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut slow_subs = Vec::new();
    for _ in 0..12 {
        slow_subs.push(subscribe(&app, &cid, &slow.url(), &secret).await);
    }
    // A backlog of twelve for the slow host, due before anything for the other one.
    app.refresh_view(&user.access, "someview").await;
    slow.wait_for_hits(2, LIMIT).await;
    // Another host name for the same loopback receiver address family: its own host.
    let fast_url = fast.url().replace("127.0.0.1", "localhost");
    let fast_sub = subscribe(&app, &cid, &fast_url, &secret).await;

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
    let secret = WebhookSecret::generate();
    let app = spawn_app_with(|s| {
        webhooks_to_loopback(s, &[100]);
        s.outbox = false;
    })
    .await;
    let user = app.user_with_view().await;
    let cid = app
        .created(
            &user.access,
            "/channels/create/",
            json!({"view_name": "someview"}),
        )
        .await["channel_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let sub = subscribe(&app, &cid, "http://127.0.0.1:9/hook", &secret).await;
    sqlx::query("UPDATE tinydevcrm.subscriptions SET status = 'paused' WHERE subscription_id = $1")
        .bind(sub)
        .execute(&app.pool)
        .await
        .expect("paused");
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
