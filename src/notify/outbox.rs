//! The outbox drainer: the background task of every `serve` process that sends the webhook
//! deliveries the events trigger wrote (migrations/0011), retries them on a schedule, and keeps
//! the delivery log within its retention.
//!
//! At least once, never silently lost: a delivery is claimed in one statement (`FOR UPDATE
//! SKIP LOCKED`, so processes share the outbox and never claim the same row at once) that moves
//! its `next_attempt_at` past the attempt's timeout. That is the lease: a process killed in
//! the middle of an attempt leaves the delivery due again once the lease has passed, and some
//! process sends it again, with the same `webhook-id` so the receiver can tell. An outcome is
//! recorded only by the attempt that holds the lease (the claim's `attempts` value).
//!
//! Each process makes at most `concurrency` attempts at once and at most `per_host` to one
//! destination host, and claims only what it can start now: the rest stays in the table for
//! the other processes or the next look, and a slow receiver holds its own slots only.
//! Hosts are told apart by the subscription's `host` column (the URL's host as the URL parser
//! gives it, written with the URL; migrations/0012).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore, watch};
use uuid::Uuid;

use crate::config::Settings;
use crate::notify::client::{DeliveryClient, DeliveryError};
use crate::notify::signature::{WebhookSecret, signature_header};
use crate::notify::states::{DeliveryStatus, SubscriptionStatus};

/// Bytes of a receiver's answer kept in the delivery log; the rest is never read.
pub const RESPONSE_PREFIX_BYTES: usize = 1024;

/// The `outcome` label values of `tdc_webhook_attempts_total`.
pub const OUTCOMES: [&str; 4] = ["succeeded", "retried", "failed", "gone"];

/// How often finished deliveries past their retention are deleted.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Most finished deliveries deleted per statement (a big backlog goes in several).
const RETENTION_BATCH: i64 = 10_000;

/// How the drainer behaves.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// Longest wait between looks at the outbox without a wake-up.
    pub poll: Duration,
    /// Time one attempt may take (the client enforces it; the lease covers it).
    pub timeout: Duration,
    /// What the lease adds to `timeout`: time to record the outcome.
    pub lease_margin: Duration,
    /// Attempts this process makes at once.
    pub concurrency: usize,
    /// Attempts this process makes at once to one host.
    pub per_host: usize,
    /// Delay before each retry; after the last, the delivery fails.
    pub schedule: Vec<Duration>,
    /// A subscription failing for longer than this is disabled.
    pub disable_after: Duration,
    /// Finished deliveries are deleted after this.
    pub retention: Duration,
}

impl OutboxConfig {
    /// The drainer the operator's settings describe.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            poll: settings.outbox_poll,
            timeout: settings.webhook_timeout,
            lease_margin: settings.webhook_lease_margin,
            concurrency: settings.webhook_concurrency.max(1),
            per_host: settings.webhook_concurrency_per_host.max(1),
            schedule: settings.webhook_retry_schedule.clone(),
            disable_after: settings.webhook_disable_after,
            retention: settings.delivery_retention,
        }
    }

    fn lease(&self) -> Duration {
        self.timeout + self.lease_margin
    }
}

/// Starts the drainer on the current runtime; `due` is the hub's wake-up for new deliveries.
pub fn spawn(
    pool: PgPool,
    client: DeliveryClient,
    due: Arc<Notify>,
    config: OutboxConfig,
) -> (tokio::task::JoinHandle<()>, crate::drain::Drain) {
    crate::drain::spawn("outbox", move |stopped| async move {
        let drainer = Drainer {
            pool,
            client,
            slots: Arc::new(Semaphore::new(config.concurrency)),
            hosts: Arc::new(Mutex::new(HashMap::new())),
            finished: Arc::new(Notify::new()),
            config,
        };
        drainer.run(due, stopped).await;
    })
}

/// Attempts in flight per host, shared by the loop and the attempts.
type HostCounts = Arc<Mutex<HashMap<String, usize>>>;

struct Drainer {
    pool: PgPool,
    client: DeliveryClient,
    config: OutboxConfig,
    slots: Arc<Semaphore>,
    hosts: HostCounts,
    /// Woken whenever an attempt ends, freeing a slot.
    finished: Arc<Notify>,
}

/// A delivery claimed for one attempt.
#[derive(Debug)]
struct Claimed {
    delivery_id: Uuid,
    seq: Option<i64>,
    payload: Value,
    /// The attempt's number (1 for the first); also the lease's token.
    attempts: i32,
    url: String,
    secret: String,
    previous_secret: Option<String>,
    host: String,
}

/// Resolves when a stop is asked for; never when nobody can ask any more (a server built
/// without signal handling drops its [`Drain`](crate::drain::Drain)).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    if stopped.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Drainer {
    async fn run(self, due: Arc<Notify>, mut stopped: watch::Receiver<bool>) {
        tracing::info!("outbox drainer started");
        let mut pruned_at: Option<Instant> = None;
        loop {
            if *stopped.borrow() {
                break;
            }
            // Registered before looking, so a wake-up sent while we look is not lost.
            let woken = due.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let freed = self.finished.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();

            if pruned_at.is_none_or(|at| at.elapsed() >= RETENTION_EVERY) {
                pruned_at = Some(Instant::now());
                if let Err(e) = prune(&self.pool, self.config.retention).await {
                    tracing::warn!(error = %e, "outbox: deleting old deliveries failed");
                }
            }
            let room = self.slots.available_permits();
            let mut wait = self.config.poll;
            if room > 0 {
                match self.claim(room).await {
                    // Something started and slots are left: there may be more due right now.
                    Ok(started) if started > 0 && started < room => continue,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox: claiming deliveries failed; retrying");
                        wait = wait.min(Duration::from_secs(1));
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut woken => {}
                () = &mut freed => {}
                () = stop_requested(&mut stopped) => {}
            }
        }
        // Every permit back: every attempt this process started has ended.
        let all = u32::try_from(self.config.concurrency).unwrap_or(u32::MAX);
        let _ = self.slots.acquire_many(all).await;
        tracing::info!("outbox drainer stopped; its attempts ended");
    }

    /// Claims at most `room` due deliveries that can start now and starts them; how many.
    ///
    /// The subscription of each due delivery is looked up per delivery (a lateral subquery the
    /// planner may not flatten), so the statement always walks the due deliveries and costs
    /// at most one key lookup each. As a plain join, a planner without fresh statistics on
    /// this queue table (a new cluster, or one analysed while it was empty) started from the
    /// subscriptions and re-scanned every due delivery for each one: 88 ms instead of 15 ms
    /// per claim with 1,000 webhooks and 5,000 due (0.3 ms either way once analysed).
    async fn claim(&self, room: usize) -> Result<usize, sqlx::Error> {
        let (full, busy_hosts, busy_counts) = {
            let hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
            let full: Vec<String> = hosts
                .iter()
                .filter(|(_, n)| **n >= self.config.per_host)
                .map(|(host, _)| host.clone())
                .collect();
            let (names, counts): (Vec<String>, Vec<i64>) = hosts
                .iter()
                .map(|(host, n)| (host.clone(), i64::try_from(*n).unwrap_or(i64::MAX)))
                .unzip();
            (full, names, counts)
        };
        let room_i64 = i64::try_from(room).unwrap_or(i64::MAX);
        // Look at more rows than can start, so that one host's backlog does not hide others'.
        let scan = room_i64.saturating_mul(4).max(64);
        let per_host = i64::try_from(self.config.per_host).unwrap_or(i64::MAX);
        let lease_ms = millis(self.config.lease());
        let rows = sqlx::query!(
            r#"WITH due AS (
                 SELECT d.delivery_id, d.next_attempt_at, s.status AS sub_status, s.host
                 FROM tinydevcrm.deliveries d
                 CROSS JOIN LATERAL (
                     SELECT s.status, s.host FROM tinydevcrm.subscriptions s
                     WHERE s.subscription_id = d.subscription_id
                       AND s.kind = 'webhook' AND s.status IN ('active', 'disabled')
                       AND s.host <> ALL($1::text[])
                     OFFSET 0
                 ) s
                 WHERE d.status = 'pending' AND d.next_attempt_at <= now()
                 ORDER BY d.next_attempt_at
                 LIMIT $2
                 FOR UPDATE OF d SKIP LOCKED
             ), dropped AS (
                 UPDATE tinydevcrm.deliveries d
                 SET status = 'failed', finished_at = now(), last_error = 'subscription disabled'
                 FROM due WHERE d.delivery_id = due.delivery_id AND due.sub_status = 'disabled'
                 RETURNING d.delivery_id
             ), ranked AS (
                 SELECT due.delivery_id, due.next_attempt_at, due.host,
                        row_number() OVER (PARTITION BY due.host ORDER BY due.next_attempt_at, due.delivery_id) AS n
                 FROM due WHERE due.sub_status = 'active'
             ), picked AS (
                 SELECT r.delivery_id, r.host FROM ranked r
                 LEFT JOIN unnest($3::text[], $4::bigint[]) AS busy(host, n) ON busy.host = r.host
                 WHERE r.n + coalesce(busy.n, 0) <= $5
                 ORDER BY r.next_attempt_at, r.delivery_id
                 LIMIT $6
             )
             UPDATE tinydevcrm.deliveries d
             SET next_attempt_at = now() + $7::bigint * interval '1 millisecond',
                 attempts = d.attempts + 1
             FROM picked, tinydevcrm.subscriptions s
             WHERE d.delivery_id = picked.delivery_id AND s.subscription_id = d.subscription_id
             RETURNING d.delivery_id, d.seq, d.payload, d.attempts, s.url AS "url!",
                       s.secret AS "secret!",
                       CASE WHEN s.previous_secret_until > now() THEN s.previous_secret END AS previous_secret,
                       picked.host AS "host!""#,
            &full,
            scan,
            &busy_hosts,
            &busy_counts,
            per_host,
            room_i64,
            lease_ms,
        )
        .fetch_all(&self.pool)
        .await?;
        let started = rows.len();
        for row in rows {
            let claimed = Claimed {
                delivery_id: row.delivery_id,
                seq: row.seq,
                payload: row.payload,
                attempts: row.attempts,
                url: row.url,
                secret: row.secret,
                previous_secret: row.previous_secret,
                host: row.host,
            };
            let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
                // Cannot happen (only this loop takes slots, and it claimed no more than were
                // free); the delivery is sent after its lease if it ever does.
                tracing::error!(delivery_id = %claimed.delivery_id, "outbox: no slot for a claimed delivery");
                continue;
            };
            let host = HostSlot::take(&self.hosts, &claimed.host);
            let (pool, client, config, finished) = (
                self.pool.clone(),
                self.client.clone(),
                self.config.clone(),
                Arc::clone(&self.finished),
            );
            tokio::spawn(async move {
                attempt(&pool, &client, &config, claimed).await;
                drop(host);
                drop(permit);
                finished.notify_one();
            });
        }
        Ok(started)
    }
}

/// One attempt's hold on its host's count; released when dropped.
struct HostSlot {
    hosts: HostCounts,
    host: String,
}

impl HostSlot {
    fn take(hosts: &HostCounts, host: &str) -> Self {
        *hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(host.to_owned())
            .or_insert(0) += 1;
        Self {
            hosts: Arc::clone(hosts),
            host: host.to_owned(),
        }
    }
}

impl Drop for HostSlot {
    fn drop(&mut self) {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = hosts.get_mut(&self.host) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                hosts.remove(&self.host);
            }
        }
    }
}

/// What one attempt came to, and what follows from it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// 2xx: delivered.
    Succeeded,
    /// Worth another attempt after the delay, if the schedule has one left.
    Retry { retry_after: Option<Duration> },
    /// 410 Gone: the receiver asks for no more; the subscription is disabled.
    Gone,
    /// Failed for good: retrying cannot help.
    Failed,
}

/// Judges an HTTP answer. A redirect is not followed (it would lead to an unchecked URL) and
/// fails at once like any other 4xx but 410 and 429: those answers do not change by asking
/// again, and the owner sees the status and reason in the delivery log and can redeliver by
/// hand once the receiver is fixed.
fn judge(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Verdict::Succeeded,
        410 => Verdict::Gone,
        429 | 500..=599 => Verdict::Retry { retry_after },
        _ => Verdict::Failed,
    }
}

/// The `Retry-After` header: delta-seconds or an HTTP-date, as the time from `now`.
fn retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// The delay before retry number `attempts` (the attempt that just failed), with ±10% jitter,
/// and never less than the receiver's `Retry-After` capped at the schedule's longest step;
/// `None` when the schedule is exhausted.
pub(crate) fn next_delay(
    schedule: &[Duration],
    attempts: i32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Option<Duration> {
    let index = usize::try_from(attempts).ok()?.checked_sub(1)?;
    let step = schedule.get(index)?.mul_f64(jitter.clamp(0.9, 1.1));
    let longest = schedule.iter().max().copied().unwrap_or_default();
    Some(step.max(retry_after.unwrap_or_default().min(longest)))
}

/// The body a receiver gets: the event as the SSE stream sends it, plus its `seq` and the
/// `delivery_id` when the event does not carry them.
fn body_of(payload: Value, seq: Option<i64>, delivery_id: Uuid) -> Vec<u8> {
    let payload = match payload {
        Value::Object(mut map) => {
            if let Some(seq) = seq {
                map.entry("seq").or_insert(Value::from(seq));
            }
            map.entry("delivery_id")
                .or_insert(Value::from(delivery_id.to_string()));
            Value::Object(map)
        }
        other => other,
    };
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// The Standard Webhooks message id of a delivery: the same at every attempt.
pub fn webhook_id(delivery_id: Uuid) -> String {
    format!("msg_{}", delivery_id.simple())
}

/// What the attempt records in the delivery log.
#[derive(Debug, Default)]
struct Record {
    status_code: Option<i32>,
    latency_ms: Option<i32>,
    response: Option<String>,
    error: Option<String>,
}

/// Makes one attempt and records its outcome.
#[tracing::instrument(skip_all, fields(delivery_id = %claimed.delivery_id, attempt = claimed.attempts))]
async fn attempt(pool: &PgPool, client: &DeliveryClient, config: &OutboxConfig, claimed: Claimed) {
    let started_at = Utc::now();
    let started = Instant::now();
    let (verdict, record) = send(client, &claimed, config.timeout).await;
    let elapsed = started.elapsed();
    let delay = match &verdict {
        Verdict::Retry { retry_after } => next_delay(
            &config.schedule,
            claimed.attempts,
            *retry_after,
            rand::rng().random_range(0.9..=1.1),
        ),
        _ => None,
    };
    let (status, outcome) = match (&verdict, delay) {
        (Verdict::Succeeded, _) => (DeliveryStatus::Succeeded, "succeeded"),
        (Verdict::Retry { .. }, Some(_)) => (DeliveryStatus::Pending, "retried"),
        (Verdict::Retry { .. }, None) | (Verdict::Failed, _) => (DeliveryStatus::Failed, "failed"),
        (Verdict::Gone, _) => (DeliveryStatus::Failed, "gone"),
    };
    metrics::counter!("tdc_webhook_attempts_total", "outcome" => outcome).increment(1);
    metrics::histogram!("tdc_webhook_attempt_duration_seconds").record(elapsed.as_secs_f64());
    let error = match (&verdict, delay, record.error.clone()) {
        (Verdict::Retry { .. }, None, Some(e)) => Some(format!(
            "{e}; no retries left ({} attempts)",
            claimed.attempts
        )),
        (Verdict::Retry { .. }, None, None) => {
            Some(format!("no retries left ({} attempts)", claimed.attempts))
        }
        (_, _, e) => e,
    };
    let succeeded = verdict == Verdict::Succeeded;
    let gone_reason = (verdict == Verdict::Gone)
        .then(|| "the receiver answered 410 Gone: it asks for no more deliveries".to_owned());
    let result = sqlx::query!(
        r#"WITH d AS (
             UPDATE tinydevcrm.deliveries
             SET status = $3,
                 next_attempt_at = CASE WHEN $4::bigint IS NULL THEN next_attempt_at
                                        ELSE now() + $4::bigint * interval '1 millisecond' END,
                 finished_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END,
                 last_attempt_at = $5,
                 last_status_code = $6,
                 last_latency_ms = $7,
                 last_response = $8,
                 last_error = $9
             WHERE delivery_id = $1 AND attempts = $2 AND status = 'pending'
             RETURNING subscription_id
         )
         UPDATE tinydevcrm.subscriptions s
         SET failing_since = CASE WHEN $10 THEN NULL ELSE coalesce(s.failing_since, now()) END,
             status = CASE
                 WHEN s.status = 'disabled' THEN s.status
                 WHEN $11::text IS NOT NULL THEN 'disabled'
                 WHEN NOT $10 AND s.failing_since < now() - $12::bigint * interval '1 millisecond' THEN 'disabled'
                 ELSE s.status END,
             disabled_reason = CASE
                 WHEN s.status = 'disabled' THEN s.disabled_reason
                 WHEN $11::text IS NOT NULL THEN $11
                 WHEN NOT $10 AND s.failing_since < now() - $12::bigint * interval '1 millisecond'
                     THEN 'deliveries have failed without a success since ' || to_char(s.failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                 ELSE s.disabled_reason END,
             updated_at = now()
         FROM d
         WHERE s.subscription_id = d.subscription_id
           AND (NOT $10 OR s.failing_since IS NOT NULL)
         RETURNING s.status AS "status!: SubscriptionStatus", s.disabled_reason"#,
        claimed.delivery_id,
        claimed.attempts,
        status.as_str(),
        delay.map(millis),
        started_at,
        record.status_code,
        record.latency_ms,
        record.response,
        error,
        succeeded,
        gone_reason,
        millis(config.disable_after),
    )
    .fetch_optional(pool)
    .await;
    match result {
        Ok(Some(sub)) if sub.status == SubscriptionStatus::Disabled => tracing::info!(
            reason = sub.disabled_reason.as_deref().unwrap_or(""),
            "outbox: subscription disabled"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(
            error = %e,
            "outbox: recording an attempt failed; the delivery is tried again after its lease"
        ),
    }
    tracing::debug!(outcome, status_code = record.status_code, "webhook attempt");
}

/// Sends the delivery once: the verdict and what to record. Reads at most
/// [`RESPONSE_PREFIX_BYTES`] of the answer's body.
async fn send(client: &DeliveryClient, claimed: &Claimed, timeout: Duration) -> (Verdict, Record) {
    let msg_id = webhook_id(claimed.delivery_id);
    let body = body_of(claimed.payload.clone(), claimed.seq, claimed.delivery_id);
    let secrets: Vec<WebhookSecret> = [Some(&claimed.secret), claimed.previous_secret.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|text| match WebhookSecret::parse(text) {
            Ok(secret) => Some(secret),
            Err(e) => {
                tracing::error!(error = %e, "outbox: a stored webhook secret does not parse");
                None
            }
        })
        .collect();
    if secrets.is_empty() {
        return (
            Verdict::Failed,
            Record {
                error: Some("the subscription's secret does not parse".to_owned()),
                ..Record::default()
            },
        );
    }
    let timestamp = Utc::now().timestamp();
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set(
        "webhook-signature",
        signature_header(&secrets, &msg_id, timestamp, &body),
    );
    set("webhook-id", msg_id);
    set("webhook-timestamp", timestamp.to_string());
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let started = Instant::now();
    let sent = client.post(&claimed.url, headers, body).await;
    let latency_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
    match sent {
        Ok(mut response) => {
            let status = response.status();
            let after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, Utc::now()));
            let mut verdict = judge(status.as_u16(), after);
            let (prefix, read_error) = read_prefix(&mut response).await;
            let mut error = match &verdict {
                Verdict::Succeeded => None,
                _ if status.is_redirection() => Some(format!(
                    "HTTP {status}: redirects are not followed; point the subscription at the final URL"
                )),
                _ => Some(format!("HTTP {status}")),
            };
            // The answer cut off by the timeout: a 2xx head is not a delivery we can vouch for.
            if let Some(e) = read_error {
                if verdict == Verdict::Succeeded {
                    verdict = Verdict::Retry { retry_after: None };
                }
                error = Some(match error {
                    Some(first) => format!("{first}; reading the answer failed: {e}"),
                    None => format!("reading the answer failed: {e}"),
                });
            }
            (
                verdict,
                Record {
                    status_code: Some(i32::from(status.as_u16())),
                    latency_ms: Some(latency_ms),
                    response: Some(prefix),
                    error,
                },
            )
        }
        Err(DeliveryError::Refused(refused)) => (
            Verdict::Failed,
            Record {
                latency_ms: Some(latency_ms),
                error: Some(refused.to_string()),
                ..Record::default()
            },
        ),
        Err(e) => {
            let error = if e.is_timeout() {
                format!("no answer within {} s (timed out)", timeout.as_secs_f64())
            } else {
                format!("{:#}", anyhow::Error::from(e))
            };
            (
                Verdict::Retry { retry_after: None },
                Record {
                    latency_ms: Some(latency_ms),
                    error: Some(error),
                    ..Record::default()
                },
            )
        }
    }
}

/// The first [`RESPONSE_PREFIX_BYTES`] of the body as text (NULs dropped: PostgreSQL text
/// holds none), read chunk by chunk so a huge answer is never held; and the error that cut
/// the body short before that, if any (the rest of a longer body is not read at all).
async fn read_prefix(response: &mut reqwest::Response) -> (String, Option<String>) {
    let mut bytes = Vec::with_capacity(RESPONSE_PREFIX_BYTES);
    let mut error = None;
    while bytes.len() < RESPONSE_PREFIX_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(RESPONSE_PREFIX_BYTES - bytes.len());
                bytes.extend_from_slice(&chunk[..take]);
            }
            Ok(None) => break,
            Err(e) => {
                error = Some(if e.is_timeout() {
                    "timed out".to_owned()
                } else {
                    e.to_string()
                });
                break;
            }
        }
    }
    (String::from_utf8_lossy(&bytes).replace('\0', ""), error)
}

/// Deletes finished deliveries older than `retention`, in batches; how many.
async fn prune(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query!(
            "DELETE FROM tinydevcrm.deliveries WHERE delivery_id IN (
                 SELECT delivery_id FROM tinydevcrm.deliveries
                 WHERE finished_at < now() - $1::bigint * interval '1 millisecond'
                 LIMIT $2)",
            millis(retention),
            RETENTION_BATCH,
        )
        .execute(pool)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < u64::try_from(RETENTION_BATCH).unwrap_or(u64::MAX) {
            return Ok(total);
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn only_2xx_succeeds_410_disables_429_and_5xx_retry_and_everything_else_fails_at_once() {
        for status in [200, 201, 204, 299] {
            assert_eq!(judge(status, None), Verdict::Succeeded, "{status}");
        }
        assert_eq!(judge(410, None), Verdict::Gone);
        for status in [429, 500, 502, 503, 599] {
            assert_eq!(
                judge(status, Some(S)),
                Verdict::Retry {
                    retry_after: Some(S)
                },
                "{status}"
            );
        }
        for status in [100, 301, 302, 307, 308, 400, 401, 403, 404, 413, 422] {
            assert_eq!(judge(status, None), Verdict::Failed, "{status}");
        }
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_an_http_date() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .expect("date")
            .with_timezone(&Utc);
        assert_eq!(retry_after("120", now), Some(120 * S));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Tue, 01 Dec 2026 10:00:30 GMT", now),
            Some(30 * S)
        );
        assert_eq!(
            retry_after("Tue, 01 Dec 2026 09:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        for bad in ["", "-5", "1.5", "soon", "2026-12-01T10:00:30Z"] {
            assert_eq!(retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn the_schedule_gives_each_retry_its_step_with_jitter_and_then_runs_out() {
        let schedule = [S, 10 * S, 60 * S];
        assert_eq!(next_delay(&schedule, 1, None, 1.0), Some(S));
        assert_eq!(next_delay(&schedule, 2, None, 1.0), Some(10 * S));
        assert_eq!(next_delay(&schedule, 3, None, 1.0), Some(60 * S));
        assert_eq!(next_delay(&schedule, 4, None, 1.0), None);
        assert_eq!(next_delay(&[], 1, None, 1.0), None);
        assert_eq!(next_delay(&schedule, 0, None, 1.0), None);
        assert_eq!(next_delay(&schedule, 2, None, 0.9), Some(9 * S));
        assert_eq!(next_delay(&schedule, 2, None, 1.1), Some(11 * S));
        assert_eq!(
            next_delay(&schedule, 2, None, 5.0),
            Some(11 * S),
            "jitter is at most 10%"
        );
    }

    #[test]
    fn retry_after_lengthens_a_step_up_to_the_longest_step_but_never_shortens_one() {
        let schedule = [S, 10 * S, 60 * S];
        assert_eq!(next_delay(&schedule, 1, Some(30 * S), 1.0), Some(30 * S));
        assert_eq!(
            next_delay(&schedule, 1, Some(3600 * S), 1.0),
            Some(60 * S),
            "capped at the longest step"
        );
        assert_eq!(next_delay(&schedule, 2, Some(S), 1.0), Some(10 * S));
        assert_eq!(next_delay(&schedule, 3, Some(S), 1.0), Some(60 * S));
    }

    #[test]
    fn the_body_is_the_event_plus_seq_and_delivery_id_unless_it_has_them() {
        let id = Uuid::from_u128(7);
        let event = serde_json::json!({"view_name": "v", "channel_id": "c"});
        let body: Value = serde_json::from_slice(&body_of(event, Some(3), id)).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"view_name": "v", "channel_id": "c", "seq": 3, "delivery_id": id.to_string()})
        );
        let own = serde_json::json!({"seq": 9, "delivery_id": "mine"});
        let body: Value = serde_json::from_slice(&body_of(own.clone(), Some(3), id)).expect("json");
        assert_eq!(body, own);
        let test: Value =
            serde_json::from_slice(&body_of(serde_json::json!({}), None, id)).expect("json");
        assert_eq!(test, serde_json::json!({"delivery_id": id.to_string()}));
    }

    #[test]
    fn the_webhook_id_is_msg_and_the_delivery_id_without_dashes() {
        let id = Uuid::parse_str("0190f1a2-b3c4-7d5e-8f60-718293a4b5c6").expect("uuid");
        assert_eq!(webhook_id(id), "msg_0190f1a2b3c47d5e8f60718293a4b5c6");
    }
}
