//! The e-mail drainer: the background task of every `serve` process (beside the webhook
//! drainer of [`crate::notify::outbox`]) that sends the e-mail deliveries of the outbox, retries them
//! on the webhook schedule, and keeps to one message per subscription per interval.
//!
//! Unlike a webhook delivery, an e-mail delivery is not sent on its own: a process claims a
//! *subscription* (`FOR UPDATE SKIP LOCKED` on its row, then a lease in `email_claim` /
//! `email_claim_until`), takes every due delivery of it, and sends them as one message. The
//! claimed deliveries' `next_attempt_at` moves past the lease as well, so a process killed in
//! the middle leaves the subscription and its deliveries due again once the lease has passed,
//! and another process sends them (at least once). An outcome is recorded only by the process
//! whose claim is still the subscription's.
//!
//! Pacing: a subscription's events are due when its last message of events went out at least
//! `interval` ago (`last_sent_at`, set only when one is accepted by the SMTP server); the first
//! event after a quiet interval goes at once, those that arrive within the interval wait and go
//! together. A confirmation message (a delivery without an event) is never held by the interval
//! and is sent alone.
//!
//! Fairness: a claim takes the subscriptions whose mail has been due longest first, and no
//! tenant gets more than `per_tenant` of this process's slots at once (counting what it has in
//! flight), so one tenant's backlog cannot hold every slot while another tenant's mail waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use lettre::Address;
use rand::Rng;
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore, watch};
use uuid::Uuid;

use crate::config::Settings;
use crate::notify::links::{self, LinkKey, Purpose};
use crate::notify::mailer::{self, EventLine, Mailer, SendFailure};
use crate::notify::outbox::next_delay;
use crate::notify::recipient;

/// What the lease adds to the SMTP timeout: time to record the outcome. The send itself is
/// cut at the SMTP timeout ([`Mailer::send`]), so no attempt outlives its lease and no other
/// process takes a subscription over while its message is still on the wire.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// The `outcome` label values of `tdc_email_messages_total`.
pub const OUTCOMES: [&str; 3] = ["succeeded", "retried", "failed"];

/// How often the per-address confirmation records past their interval are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Most events one message lists; more wait for the next message.
const MAX_EVENTS_PER_MESSAGE: i64 = 100;

/// How the e-mail drainer behaves.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// Longest wait between looks without a wake-up (also the pace at which held events
    /// become due when their interval ends).
    pub poll: Duration,
    /// Messages this process sends at once.
    pub concurrency: usize,
    /// Messages this process sends at once for one tenant.
    pub per_tenant: usize,
    /// At most one message of events per subscription per this.
    pub interval: Duration,
    /// Delays before each retry, as for webhooks.
    pub schedule: Vec<Duration>,
    /// A subscription failing for longer than this is disabled.
    pub disable_after: Duration,
    /// What a claim may take before another process may take it over.
    pub lease: Duration,
    /// The base of the links in messages.
    pub public_url: String,
    /// How long a confirmation link works (said in the message).
    pub confirm_ttl: Duration,
    /// The per-(tenant, address) confirmation interval: log rows older than it and than an
    /// hour are deleted.
    pub confirm_resend: Duration,
}

impl EmailConfig {
    /// The drainer the operator's settings describe.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            poll: settings.outbox_poll,
            concurrency: settings.email_concurrency.max(1),
            per_tenant: settings.email_concurrency_per_tenant.max(1),
            interval: settings.email_interval,
            schedule: settings.webhook_retry_schedule.clone(),
            disable_after: settings.webhook_disable_after,
            lease: settings.smtp_timeout + LEASE_MARGIN,
            public_url: settings.public_url.clone(),
            confirm_ttl: settings.email_confirm_ttl,
            confirm_resend: settings.email_confirm_resend,
        }
    }
}

/// Starts the e-mail drainer; `due` is the hub's wake-up for new deliveries.
pub fn spawn(
    pool: PgPool,
    mailer: Mailer,
    key: LinkKey,
    due: Arc<Notify>,
    config: EmailConfig,
) -> (tokio::task::JoinHandle<()>, crate::drain::Drain) {
    crate::drain::spawn("email", move |stopped| async move {
        let drainer = Drainer {
            pool,
            mailer,
            key,
            slots: Arc::new(Semaphore::new(config.concurrency)),
            tenants: Arc::new(Mutex::new(HashMap::new())),
            finished: Arc::new(Notify::new()),
            config,
        };
        drainer.run(due, stopped).await;
    })
}

#[derive(Clone)]
struct Drainer {
    pool: PgPool,
    mailer: Mailer,
    key: LinkKey,
    config: EmailConfig,
    slots: Arc<Semaphore>,
    /// Messages in flight per tenant in this process.
    tenants: TenantCounts,
    finished: Arc<Notify>,
}

type TenantCounts = Arc<Mutex<HashMap<Uuid, usize>>>;

/// One message's hold on its tenant's count; released when dropped.
struct TenantSlot {
    tenants: TenantCounts,
    user_id: Uuid,
}

impl TenantSlot {
    fn take(tenants: &TenantCounts, user_id: Uuid) -> Self {
        *tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(user_id)
            .or_insert(0) += 1;
        Self {
            tenants: Arc::clone(tenants),
            user_id,
        }
    }
}

impl Drop for TenantSlot {
    fn drop(&mut self) {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = tenants.get_mut(&self.user_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                tenants.remove(&self.user_id);
            }
        }
    }
}

/// A subscription claimed for one message.
#[derive(Debug)]
struct Claim {
    subscription_id: Uuid,
    user_id: Uuid,
    channel_id: Uuid,
    claim: Uuid,
    email: String,
    view_name: Option<String>,
    confirm_nonce: Option<Vec<u8>>,
    unsubscribe_nonce: Vec<u8>,
    /// Whether its events may go now (confirmed, and the interval has passed).
    events_due: bool,
}

/// A delivery claimed into a message.
#[derive(Debug)]
struct Taken {
    delivery_id: Uuid,
    seq: Option<i64>,
    payload: serde_json::Value,
    attempts: i32,
}

async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    if stopped.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Drainer {
    async fn run(self, due: Arc<Notify>, mut stopped: watch::Receiver<bool>) {
        tracing::info!("e-mail drainer started");
        let mut pruned_at: Option<Instant> = None;
        loop {
            if *stopped.borrow() {
                break;
            }
            if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                pruned_at = Some(Instant::now());
                // A record past every window limits nothing any more.
                if let Err(e) = sqlx::query!(
                    "DELETE FROM tinydevcrm.email_confirmation_log
                      WHERE sent_at < now() - $1::bigint * interval '1 millisecond'",
                    millis(self.config.confirm_resend.max(Duration::from_secs(3600))),
                )
                .execute(&self.pool)
                .await
                {
                    tracing::warn!(error = %e, "e-mail: deleting old confirmation records failed");
                }
            }
            let woken = due.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let freed = self.finished.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let room = self.slots.available_permits();
            let mut wait = self.config.poll;
            if room > 0 {
                match self.claim(room).await {
                    Ok(started) if started > 0 && started < room => continue,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "e-mail: claiming subscriptions failed; retrying");
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
        let all = u32::try_from(self.config.concurrency).unwrap_or(u32::MAX);
        let _ = self.slots.acquire_many(all).await;
        tracing::info!("e-mail drainer stopped; its messages ended");
    }

    /// Claims at most `room` subscriptions with mail due and starts a message for each; how
    /// many started.
    async fn claim(&self, room: usize) -> Result<usize, sqlx::Error> {
        let claim = Uuid::new_v4();
        let room = i64::try_from(room).unwrap_or(i64::MAX);
        let interval = millis(self.config.interval);
        let lease = millis(self.config.lease);
        let mut tx = self.pool.begin().await?;
        // Disabled subscriptions (unsubscribed, or failing too long) get nothing more: their
        // due deliveries fail, as the webhook drainer does.
        sqlx::query!(
            "UPDATE tinydevcrm.deliveries d
                SET status = 'failed', finished_at = now(),
                    last_error = coalesce(s.disabled_reason, 'subscription disabled')
               FROM tinydevcrm.subscriptions s
              WHERE s.subscription_id = d.subscription_id AND s.kind = 'email'
                AND s.status = 'disabled' AND d.status = 'pending' AND d.next_attempt_at <= now()",
        )
        .execute(&mut *tx)
        .await?;
        let (full, busy_users, busy_counts) = {
            let tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
            let full: Vec<Uuid> = tenants
                .iter()
                .filter(|(_, n)| **n >= self.config.per_tenant)
                .map(|(user, _)| *user)
                .collect();
            let (users, counts): (Vec<Uuid>, Vec<i64>) = tenants
                .iter()
                .map(|(user, n)| (*user, i64::try_from(*n).unwrap_or(i64::MAX)))
                .unzip();
            (full, users, counts)
        };
        let per_tenant = i64::try_from(self.config.per_tenant).unwrap_or(i64::MAX);
        // Oldest due first; within what is looked at, no tenant gets more than its share of
        // this process's slots (less what it has in flight), so one tenant's backlog cannot
        // hold every slot while another's mail waits.
        let rows = sqlx::query!(
            r#"WITH due AS (
                 SELECT d.subscription_id, s.user_id, min(d.next_attempt_at) AS due_at
                   FROM tinydevcrm.deliveries d
                   JOIN tinydevcrm.subscriptions s ON s.subscription_id = d.subscription_id
                  WHERE d.status = 'pending' AND d.next_attempt_at <= now()
                    AND s.kind = 'email' AND s.status = 'active'
                    AND s.user_id <> ALL($5::uuid[])
                    AND (s.email_claim_until IS NULL OR s.email_claim_until <= now())
                    AND (d.seq IS NULL
                         OR (s.confirmed_at IS NOT NULL
                             AND (s.last_sent_at IS NULL
                                  OR s.last_sent_at <= now() - $1::bigint * interval '1 millisecond')))
                  GROUP BY d.subscription_id, s.user_id
                  ORDER BY due_at, d.subscription_id
                  LIMIT greatest($2::bigint * 4, 64)
             ), allowed AS (
                 SELECT r.subscription_id, r.due_at FROM (
                     SELECT due.*, row_number() OVER (
                                PARTITION BY due.user_id ORDER BY due.due_at, due.subscription_id) AS n
                       FROM due) r
                   LEFT JOIN unnest($6::uuid[], $7::bigint[]) AS busy(user_id, n)
                          ON busy.user_id = r.user_id
                  WHERE r.n + coalesce(busy.n, 0) <= $8
             ), picked AS (
                 SELECT s.subscription_id FROM tinydevcrm.subscriptions s
                   JOIN allowed a ON a.subscription_id = s.subscription_id
                  WHERE s.status = 'active'
                    AND (s.email_claim_until IS NULL OR s.email_claim_until <= now())
                  ORDER BY a.due_at, s.subscription_id
                  LIMIT $2
                  FOR UPDATE OF s SKIP LOCKED
             )
             UPDATE tinydevcrm.subscriptions s
                SET email_claim = $3, email_claim_until = now() + $4::bigint * interval '1 millisecond'
               FROM picked
              WHERE s.subscription_id = picked.subscription_id
          RETURNING s.subscription_id, s.user_id, s.channel_id, s.email AS "email!", s.confirm_nonce,
                    s.unsubscribe_nonce AS "unsubscribe_nonce!",
                    (s.confirmed_at IS NOT NULL AND (s.last_sent_at IS NULL
                      OR s.last_sent_at <= now() - $1::bigint * interval '1 millisecond')) AS "events_due!",
                    (SELECT v.view_name FROM tinydevcrm.channels c
                       JOIN tinydevcrm.views v ON v.view_id = c.view_id
                      WHERE c.channel_id = s.channel_id) AS view_name"#,
            interval,
            room,
            claim,
            lease,
            &full,
            &busy_users,
            &busy_counts,
            per_tenant,
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut work = Vec::new();
        for row in rows {
            let claimed = Claim {
                subscription_id: row.subscription_id,
                user_id: row.user_id,
                channel_id: row.channel_id,
                claim,
                email: row.email,
                view_name: row.view_name,
                confirm_nonce: row.confirm_nonce,
                unsubscribe_nonce: row.unsubscribe_nonce,
                events_due: row.events_due,
            };
            // A confirmation first, alone; else the due events, oldest first.
            let mut taken = take(&mut tx, claimed.subscription_id, true, 1, lease).await?;
            if taken.is_empty() && claimed.events_due {
                taken = take(
                    &mut tx,
                    claimed.subscription_id,
                    false,
                    MAX_EVENTS_PER_MESSAGE,
                    lease,
                )
                .await?;
            }
            if taken.is_empty() {
                release(&mut tx, claimed.subscription_id).await?;
                continue;
            }
            work.push((claimed, taken));
        }
        tx.commit().await?;
        let started = work.len();
        for (claimed, taken) in work {
            let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
                tracing::error!(subscription_id = %claimed.subscription_id, "e-mail: no slot for a claimed subscription");
                continue;
            };
            let tenant = TenantSlot::take(&self.tenants, claimed.user_id);
            let this = self.clone();
            tokio::spawn(async move {
                this.attempt(claimed, taken).await;
                drop(tenant);
                drop(permit);
                this.finished.notify_one();
            });
        }
        Ok(started)
    }

    /// Sends one message and records its outcome.
    #[tracing::instrument(skip_all, fields(subscription_id = %claimed.subscription_id, deliveries = taken.len()))]
    async fn attempt(&self, claimed: Claim, taken: Vec<Taken>) {
        let started_at = Utc::now();
        let started = Instant::now();
        let confirmation = taken.iter().all(|t| t.seq.is_none());
        let outcome = self.send(&claimed, &taken, confirmation).await;
        let latency_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
        let label = match &outcome {
            Ok(()) => "succeeded",
            Err(SendFailure::Transient { .. }) => "retried",
            Err(SendFailure::Permanent { .. }) => "failed",
        };
        metrics::counter!("tdc_email_messages_total", "outcome" => label).increment(1);
        if let Err(failure) = &outcome {
            tracing::info!(?failure, "e-mail: the message was not accepted");
        }
        if let Err(e) = self
            .record(
                &claimed,
                &taken,
                confirmation,
                &outcome,
                started_at,
                latency_ms,
            )
            .await
        {
            tracing::warn!(error = %e, "e-mail: recording a message failed; it is sent again after its lease");
        }
    }

    async fn send(
        &self,
        claimed: &Claim,
        taken: &[Taken],
        confirmation: bool,
    ) -> Result<(), SendFailure> {
        let permanent = |error: String| SendFailure::Permanent { code: None, error };
        let to: Address = claimed
            .email
            .parse()
            .map_err(|e| permanent(format!("the stored address does not parse: {e}")))?;
        let unsubscribe = links::url(
            &self.config.public_url,
            Purpose::Unsubscribe,
            &self.key.token(
                Purpose::Unsubscribe,
                claimed.subscription_id,
                &claimed.unsubscribe_nonce,
            ),
        );
        let content = if confirmation {
            // Queued before the recipient refused mail through another subscription's link.
            let refused = sqlx::query_scalar!(
                r#"SELECT EXISTS (SELECT 1 FROM tinydevcrm.email_suppressions
                                   WHERE address_hash = $1) AS "refused!""#,
                recipient::address_hash(&claimed.email),
            )
            .fetch_one(&self.pool)
            .await
            .map_err(|e| SendFailure::Transient {
                code: None,
                error: format!("looking up the suppression list failed: {e}"),
            })?;
            if refused {
                return Err(permanent(
                    "the recipient refused mail from this service (suppression list)".to_owned(),
                ));
            }
            let Some(nonce) = &claimed.confirm_nonce else {
                return Err(permanent(
                    "no confirmation is pending any more (confirmed or unsubscribed before it was sent)"
                        .to_owned(),
                ));
            };
            let confirm = links::url(
                &self.config.public_url,
                Purpose::Confirm,
                &self.key.token(Purpose::Confirm, claimed.subscription_id, nonce),
            );
            mailer::confirmation(
                &claimed.email,
                claimed.channel_id,
                claimed.view_name.as_deref(),
                &confirm,
                &unsubscribe,
                self.config.confirm_ttl,
            )
        } else {
            let lines: Vec<EventLine> = taken
                .iter()
                .map(|t| EventLine::from_payload(t.seq, &t.payload))
                .collect();
            mailer::events(&claimed.email, claimed.channel_id, &lines, &unsubscribe)
        }
        .map_err(|e| permanent(format!("rendering the message failed: {e}")))?;
        let message = mailer::message(self.mailer.from(), &to, content, &unsubscribe)
            .map_err(|e| permanent(format!("building the message failed: {e}")))?;
        self.mailer.send(message).await
    }

    /// Records the outcome on every delivery of the message, and on the subscription: its
    /// claim released, `last_sent_at` after a message of events, `failing_since` and, past
    /// `disable_after`, disabled. Nothing is recorded when the claim is no longer ours (the
    /// lease passed and another process took the subscription).
    async fn record(
        &self,
        claimed: &Claim,
        taken: &[Taken],
        confirmation: bool,
        outcome: &Result<(), SendFailure>,
        started_at: chrono::DateTime<Utc>,
        latency_ms: i32,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let ours = sqlx::query_scalar!(
            "SELECT email_claim FROM tinydevcrm.subscriptions WHERE subscription_id = $1 FOR UPDATE",
            claimed.subscription_id,
        )
        .fetch_optional(&mut *tx)
        .await?
        .flatten();
        if ours != Some(claimed.claim) {
            tracing::warn!("e-mail: the claim was lost before the outcome was recorded");
            return Ok(());
        }
        let jitter = rand::rng().random_range(0.9..=1.1);
        let (code, reply) = match outcome {
            Ok(()) => (None, None),
            Err(
                SendFailure::Transient { code, error } | SendFailure::Permanent { code, error },
            ) => (code.map(i32::from), Some(error.clone())),
        };
        for t in taken {
            let delay = match outcome {
                Err(SendFailure::Transient { .. }) => {
                    next_delay(&self.config.schedule, t.attempts, None, jitter)
                }
                _ => None,
            };
            let (status, error) = match (outcome, delay) {
                (Ok(()), _) => ("succeeded", None),
                (Err(SendFailure::Transient { error, .. }), Some(_)) => {
                    ("pending", Some(error.clone()))
                }
                (Err(SendFailure::Transient { error, .. }), None) => (
                    "failed",
                    Some(format!(
                        "{error}; no retries left ({} attempts)",
                        t.attempts
                    )),
                ),
                (Err(SendFailure::Permanent { error, .. }), _) => ("failed", Some(error.clone())),
            };
            sqlx::query!(
                "UPDATE tinydevcrm.deliveries
                    SET status = $2,
                        next_attempt_at = CASE WHEN $3::bigint IS NULL THEN next_attempt_at
                                               ELSE now() + $3::bigint * interval '1 millisecond' END,
                        finished_at = CASE WHEN $2 = 'pending' THEN NULL ELSE now() END,
                        last_attempt_at = $4, last_status_code = $5, last_latency_ms = $6,
                        last_response = $7, last_error = $8
                  WHERE delivery_id = $1 AND status = 'pending'",
                t.delivery_id,
                status,
                delay.map(millis),
                started_at,
                code,
                latency_ms,
                reply,
                error,
            )
            .execute(&mut *tx)
            .await?;
        }
        let succeeded = outcome.is_ok();
        let row = sqlx::query!(
            r#"UPDATE tinydevcrm.subscriptions s
                  SET email_claim = NULL, email_claim_until = NULL,
                      last_sent_at = CASE WHEN $2 AND NOT $3 THEN now() ELSE s.last_sent_at END,
                      failing_since = CASE WHEN $2 THEN NULL ELSE coalesce(s.failing_since, now()) END,
                      status = CASE
                          WHEN NOT $2 AND s.status = 'active'
                               AND s.failing_since < now() - $4::bigint * interval '1 millisecond'
                          THEN 'disabled' ELSE s.status END,
                      disabled_reason = CASE
                          WHEN NOT $2 AND s.status = 'active'
                               AND s.failing_since < now() - $4::bigint * interval '1 millisecond'
                          THEN 'messages have failed without a success since '
                               || to_char(s.failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                          ELSE s.disabled_reason END
                WHERE s.subscription_id = $1
            RETURNING s.status AS "status!""#,
            claimed.subscription_id,
            succeeded,
            confirmation,
            millis(self.config.disable_after),
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        if row.status == "disabled" {
            tracing::info!("e-mail: subscription disabled after failing too long");
        }
        tracing::debug!(succeeded, "e-mail message");
        Ok(())
    }
}

/// Claims the due deliveries of a claimed subscription: its confirmation (`seq` NULL) or its
/// events, at most `limit`, oldest first; each gets an attempt and the lease.
async fn take(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    subscription_id: Uuid,
    confirmation: bool,
    limit: i64,
    lease: i64,
) -> Result<Vec<Taken>, sqlx::Error> {
    let rows = sqlx::query!(
        "UPDATE tinydevcrm.deliveries d
            SET attempts = d.attempts + 1,
                next_attempt_at = now() + $4::bigint * interval '1 millisecond'
          WHERE d.delivery_id IN (
                SELECT delivery_id FROM tinydevcrm.deliveries
                 WHERE subscription_id = $1 AND status = 'pending' AND next_attempt_at <= now()
                   AND (seq IS NULL) = $2
                 ORDER BY created_at, delivery_id
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED)
      RETURNING d.delivery_id, d.seq, d.payload, d.attempts",
        subscription_id,
        confirmation,
        limit,
        lease,
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut taken: Vec<Taken> = rows
        .into_iter()
        .map(|r| Taken {
            delivery_id: r.delivery_id,
            seq: r.seq,
            payload: r.payload,
            attempts: r.attempts,
        })
        .collect();
    taken.sort_by_key(|t| t.seq);
    Ok(taken)
}

async fn release(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    subscription_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tinydevcrm.subscriptions SET email_claim = NULL, email_claim_until = NULL
          WHERE subscription_id = $1",
        subscription_id,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
