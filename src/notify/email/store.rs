//! SQL of e-mail subscriptions (rows of `tinydevcrm.subscriptions` with kind `email`), their
//! confirmation and unsubscribe links, and their delivery log. Every owner's statement names
//! the owner, so another tenant's channel, subscription or delivery is simply not found; the
//! public link statements name the subscription the verified token is for.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::db::notify::{self, Notice};
use crate::error::ApiError;
use crate::notify::links::{self, LinkKey, Purpose, Token};
use crate::notify::recipient;
use crate::notify::store::Limits;

/// An e-mail subscription as stored, without its nonces.
#[derive(Debug, Clone)]
pub struct EmailRow {
    /// Primary key (public, unguessable).
    pub subscription_id: Uuid,
    /// The channel whose events it receives.
    pub channel_id: Uuid,
    /// The recipient.
    pub email: String,
    /// The owner's note.
    pub description: Option<String>,
    /// `active`, `paused` or `disabled`.
    pub status: String,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// Since when every message has failed.
    pub failing_since: Option<DateTime<Utc>>,
    /// When the recipient confirmed.
    pub confirmed_at: Option<DateTime<Utc>>,
    /// When the newest confirmation message was queued.
    pub confirmation_sent_at: Option<DateTime<Utc>>,
    /// Until when its link works.
    pub confirm_expires_at: Option<DateTime<Utc>>,
    /// When the recipient unsubscribed.
    pub unsubscribed_at: Option<DateTime<Utc>>,
    /// When the last message of events went out.
    pub last_sent_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// How confirmations are paced and limited (see [`admit`]).
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// How long a confirmation link works.
    pub ttl: Duration,
    /// At most one confirmation message per (tenant, normalised address) per this.
    pub resend: Duration,
    /// Confirmation messages one tenant may have queued in any rolling hour.
    pub per_tenant_per_hour: i64,
    /// Confirmation messages one normalised address may get in any rolling hour, over every
    /// tenant.
    pub per_address_per_hour: i64,
}

/// Whether a confirmation message was queued.
#[derive(Debug, Clone, Copy)]
pub enum Queued {
    /// Queued now.
    Yes,
    /// The address had one within the interval; another may be queued at this time.
    NotBefore(DateTime<Utc>),
}

/// The rolling window of the hourly limits, in milliseconds.
const HOUR_MS: i64 = 3_600_000;

/// What the limits say about one more confirmation message to an address.
enum Admission {
    /// Send it.
    Yes,
    /// Not now (this tenant's interval for the address, or the address's hourly cap).
    NotBefore(DateTime<Utc>),
    /// The recipient refused mail from this service.
    Suppressed,
}

fn suppressed() -> ApiError {
    ApiError::Conflict {
        code: "email_suppressed",
        detail: "the recipient of this address refused mail from this service (they followed an \
                 unsubscribe link): no subscription to it can be created or confirmed. Only \
                 the recipient can lift that, by asking the operator"
            .to_owned(),
    }
}

fn retry_secs(at: DateTime<Utc>) -> u64 {
    u64::try_from((at - Utc::now()).num_seconds().max(1)).unwrap_or(1)
}

/// The limits on confirmation messages, in the order a hostile tenant meets them; the caller
/// holds the tenant's row lock (so one tenant's requests are counted one at a time), and this
/// takes the address's advisory lock (so two tenants' requests to one address are too).
///
/// 1. The tenant's budget per rolling hour: 429 `too_many_confirmations`.
/// 2. The suppression list: [`Admission::Suppressed`] (the caller records the attempt, which
///    counts toward the budget, so probing which addresses refused mail is as slow as mailing).
/// 3. One per (tenant, address) per `resend`, and the address's cap per rolling hour over
///    every tenant, which is higher than one tenant's share: another tenant looping
///    create/delete on an address uses its own interval, and cannot use up the cap alone.
async fn admit(
    tx: &mut Transaction<'_, Postgres>,
    user_id: Uuid,
    hash: &[u8],
    pacing: Pacing,
) -> Result<Admission, ApiError> {
    sqlx::query_scalar!(
        r#"SELECT count(pg_advisory_xact_lock(
                      hashtextextended('tdc_email_address:' || encode($1::bytea, 'hex'), 0))) AS "n!""#,
        hash,
    )
    .fetch_one(&mut **tx)
    .await?;
    let counts = sqlx::query!(
        r#"SELECT
             (SELECT count(*) FROM tinydevcrm.email_confirmation_log
               WHERE user_id = $1 AND sent_at > now() - $3::bigint * interval '1 millisecond') AS "tenant!",
             (SELECT min(sent_at) + $3::bigint * interval '1 millisecond'
                FROM tinydevcrm.email_confirmation_log
               WHERE user_id = $1 AND sent_at > now() - $3::bigint * interval '1 millisecond') AS tenant_free_at,
             (SELECT max(sent_at) + $4::bigint * interval '1 millisecond'
                FROM tinydevcrm.email_confirmation_log
               WHERE user_id = $1 AND address_hash = $2
                 AND sent_at > now() - $4::bigint * interval '1 millisecond') AS pair_free_at,
             (SELECT count(*) FROM tinydevcrm.email_confirmation_log
               WHERE address_hash = $2 AND sent_at > now() - $3::bigint * interval '1 millisecond') AS "address!",
             (SELECT min(sent_at) + $3::bigint * interval '1 millisecond'
                FROM tinydevcrm.email_confirmation_log
               WHERE address_hash = $2 AND sent_at > now() - $3::bigint * interval '1 millisecond') AS address_free_at,
             EXISTS (SELECT 1 FROM tinydevcrm.email_suppressions WHERE address_hash = $2) AS "suppressed!""#,
        user_id,
        hash,
        HOUR_MS,
        millis(pacing.resend),
    )
    .fetch_one(&mut **tx)
    .await?;
    if counts.tenant >= pacing.per_tenant_per_hour {
        let at = counts.tenant_free_at.unwrap_or_else(Utc::now);
        return Err(ApiError::Throttled {
            code: "too_many_confirmations",
            detail: format!(
                "this account has had {} confirmation messages sent in the last hour, its \
                 limit: retry later, or ask the operator to raise \
                 TDC_EMAIL_CONFIRMATIONS_PER_TENANT_PER_HOUR",
                counts.tenant
            ),
            retry_after_secs: retry_secs(at),
        }
        .with_members(serde_json::json!({"retry_at": at})));
    }
    if counts.suppressed {
        return Ok(Admission::Suppressed);
    }
    if let Some(at) = counts.pair_free_at {
        return Ok(Admission::NotBefore(at));
    }
    if counts.address >= pacing.per_address_per_hour {
        return Ok(Admission::NotBefore(
            counts.address_free_at.unwrap_or_else(Utc::now),
        ));
    }
    Ok(Admission::Yes)
}

/// Writes a row of the confirmation log: a message queued, or a suppressed address tried.
async fn log_confirmation(
    tx: &mut Transaction<'_, Postgres>,
    user_id: Uuid,
    hash: &[u8],
) -> Result<(), ApiError> {
    sqlx::query!(
        "INSERT INTO tinydevcrm.email_confirmation_log (user_id, address_hash) VALUES ($1, $2)",
        user_id,
        hash,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn no_email(id: Uuid) -> ApiError {
    ApiError::NotFound {
        detail: format!("no e-mail subscription {id}"),
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Creates an e-mail subscription on a user's channel (unconfirmed) and queues its
/// confirmation message unless a limit holds it back (see [`admit`]); 404 when the channel is
/// not theirs, 409 `too_many_emails` / `too_many_subscriptions` past the limits, 429
/// `too_many_confirmations` past the tenant's hourly budget, 409 `email_suppressed` (nothing
/// created) when the recipient refused mail. The locks are those of webhook creation (see
/// [`crate::notify::store::create`]).
#[allow(clippy::too_many_arguments)]
pub async fn create(
    pool: &PgPool,
    user_id: Uuid,
    channel_id: Uuid,
    email: &str,
    description: Option<&str>,
    limits: Limits,
    pacing: Pacing,
) -> Result<(EmailRow, Queued), ApiError> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "SELECT 1 AS one FROM tinydevcrm.users WHERE user_id = $1 FOR NO KEY UPDATE",
        user_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query!(
        "SELECT channel_id FROM tinydevcrm.channels
          WHERE user_id = $1 AND channel_id = $2 FOR NO KEY UPDATE",
        user_id,
        channel_id,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::NotFound {
        detail: format!("no channel {channel_id}"),
    })?;
    let counts = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE channel_id = $2 AND kind = 'email') AS "on_channel!",
                  count(*) AS "of_tenant!"
             FROM tinydevcrm.subscriptions WHERE user_id = $1"#,
        user_id,
        channel_id,
    )
    .fetch_one(&mut *tx)
    .await?;
    if counts.on_channel >= limits.per_channel {
        return Err(ApiError::Conflict {
            code: "too_many_emails",
            detail: format!(
                "a channel may have at most {} e-mail subscriptions; delete one \
                 (DELETE /channels/{channel_id}/emails/{{id}}/) or ask the operator to raise \
                 TDC_MAX_EMAILS_PER_CHANNEL",
                limits.per_channel
            ),
        });
    }
    if counts.of_tenant >= limits.per_tenant {
        return Err(ApiError::Conflict {
            code: "too_many_subscriptions",
            detail: format!(
                "a tenant may have at most {} notification subscriptions over all its channels; \
                 delete one or ask the operator to raise TDC_MAX_SUBSCRIPTIONS_PER_TENANT",
                limits.per_tenant
            ),
        });
    }
    let hash = recipient::address_hash(email);
    let admission = admit(&mut tx, user_id, &hash, pacing).await?;
    if let Admission::Suppressed = admission {
        // The attempt counts toward the budget: committed, though the answer is an error.
        log_confirmation(&mut tx, user_id, &hash).await?;
        tx.commit().await?;
        return Err(suppressed());
    }
    let id = Uuid::new_v4();
    sqlx::query!(
        "INSERT INTO tinydevcrm.subscriptions
                (subscription_id, user_id, channel_id, kind, description, email, unsubscribe_nonce)
         VALUES ($1, $2, $3, 'email', $4, $5, $6)",
        id,
        user_id,
        channel_id,
        description,
        email,
        links::nonce(),
    )
    .execute(&mut *tx)
    .await?;
    let queued = match admission {
        Admission::NotBefore(at) => Queued::NotBefore(at),
        _ => {
            log_confirmation(&mut tx, user_id, &hash).await?;
            queue_confirmation(&mut tx, id, channel_id, pacing).await?;
            Queued::Yes
        }
    };
    let row = fetch(&mut tx, user_id, channel_id, id).await?;
    tx.commit().await?;
    Ok((row, queued))
}

/// Queues a confirmation message for subscription `id` (the caller admitted and logged it):
/// a new nonce (the links of earlier messages stop working), a new expiry, a delivery without
/// an event (`seq` NULL), and the wake-up. Pending earlier confirmations are failed as
/// superseded.
async fn queue_confirmation(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    channel_id: Uuid,
    pacing: Pacing,
) -> Result<(), ApiError> {
    sqlx::query!(
        "UPDATE tinydevcrm.deliveries
            SET status = 'failed', finished_at = now(),
                last_error = 'superseded by a newer confirmation message'
          WHERE subscription_id = $1 AND seq IS NULL AND status = 'pending'",
        id,
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!(
        "UPDATE tinydevcrm.subscriptions
            SET confirm_nonce = $2, confirmation_sent_at = now(),
                confirm_expires_at = now() + $3::bigint * interval '1 millisecond',
                updated_at = now()
          WHERE subscription_id = $1",
        id,
        links::nonce(),
        millis(pacing.ttl),
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!(
        "INSERT INTO tinydevcrm.deliveries (delivery_id, subscription_id, channel_id, seq, payload)
         VALUES ($1, $2, $3, NULL, $4)",
        Uuid::new_v4(),
        id,
        channel_id,
        serde_json::json!({"type": "email_confirmation"}),
    )
    .execute(&mut **tx)
    .await?;
    notify::send(tx, &[Notice::DeliveriesDue]).await?;
    Ok(())
}

async fn fetch(
    tx: &mut Transaction<'_, Postgres>,
    user_id: Uuid,
    channel_id: Uuid,
    id: Uuid,
) -> Result<EmailRow, ApiError> {
    sqlx::query_as!(
        EmailRow,
        r#"SELECT subscription_id, channel_id, email AS "email!", description, status,
                  disabled_reason, failing_since, confirmed_at, confirmation_sent_at,
                  confirm_expires_at, unsubscribed_at, last_sent_at, created_at, updated_at
             FROM tinydevcrm.subscriptions
            WHERE user_id = $1 AND channel_id = $2 AND subscription_id = $3 AND kind = 'email'"#,
        user_id,
        channel_id,
        id,
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| no_email(id))
}

/// One of a user's e-mail subscriptions on one of their channels.
pub async fn find(
    pool: &PgPool,
    user_id: Uuid,
    channel_id: Uuid,
    id: Uuid,
) -> Result<EmailRow, ApiError> {
    let mut tx = pool.begin().await?;
    let row = fetch(&mut tx, user_id, channel_id, id).await?;
    tx.commit().await?;
    Ok(row)
}

/// A user's e-mail subscriptions on a channel, oldest first (the caller checked the channel).
pub async fn list(
    pool: &PgPool,
    user_id: Uuid,
    channel_id: Uuid,
) -> Result<Vec<EmailRow>, ApiError> {
    Ok(sqlx::query_as!(
        EmailRow,
        r#"SELECT subscription_id, channel_id, email AS "email!", description, status,
                  disabled_reason, failing_since, confirmed_at, confirmation_sent_at,
                  confirm_expires_at, unsubscribed_at, last_sent_at, created_at, updated_at
             FROM tinydevcrm.subscriptions
            WHERE user_id = $1 AND channel_id = $2 AND kind = 'email'
            ORDER BY created_at, subscription_id"#,
        user_id,
        channel_id,
    )
    .fetch_all(pool)
    .await?)
}

/// Changes the description and/or status (`active`, `paused`). A subscription its recipient
/// unsubscribed from cannot be resumed: 409 `email_unsubscribed` (the address is on the
/// suppression list too: subscribing it again answers 409 `email_suppressed`).
pub async fn update(
    pool: &PgPool,
    user_id: Uuid,
    channel_id: Uuid,
    id: Uuid,
    description: Option<Option<&str>>,
    status: Option<&'static str>,
) -> Result<EmailRow, ApiError> {
    let mut tx = pool.begin().await?;
    let current = fetch(&mut tx, user_id, channel_id, id).await?;
    if status.is_some() && current.unsubscribed_at.is_some() {
        return Err(ApiError::Conflict {
            code: "email_unsubscribed",
            detail: "the recipient unsubscribed: no more mail goes to this address from this \
                     service, and it cannot be subscribed again"
                .to_owned(),
        });
    }
    let (set_description, description) = match description {
        Some(d) => (true, d),
        None => (false, None),
    };
    sqlx::query!(
        "UPDATE tinydevcrm.subscriptions
            SET description = CASE WHEN $2 THEN $3 ELSE description END,
                status = coalesce($4, status),
                disabled_reason = CASE WHEN $4::text IS NULL THEN disabled_reason END,
                failing_since = CASE WHEN $4::text = 'active' THEN NULL ELSE failing_since END,
                updated_at = now()
          WHERE subscription_id = $1",
        id,
        set_description,
        description,
        status,
    )
    .execute(&mut *tx)
    .await?;
    if status == Some("active") {
        // Held deliveries are due now.
        notify::send(&mut tx, &[Notice::DeliveriesDue]).await?;
    }
    let row = fetch(&mut tx, user_id, channel_id, id).await?;
    tx.commit().await?;
    Ok(row)
}

/// Deletes an e-mail subscription and its delivery log.
pub async fn delete(
    pool: &PgPool,
    user_id: Uuid,
    channel_id: Uuid,
    id: Uuid,
) -> Result<(), ApiError> {
    if !crate::notify::store::delete_owned(pool, user_id, channel_id, id, "email").await? {
        return Err(no_email(id));
    }
    Ok(())
}

/// Sends the confirmation again: 409 `email_already_confirmed`, `email_unsubscribed` or
/// `email_suppressed`, 429 past the limits of [`admit`].
pub async fn resend(
    pool: &PgPool,
    user_id: Uuid,
    channel_id: Uuid,
    id: Uuid,
    pacing: Pacing,
) -> Result<EmailRow, ApiError> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "SELECT 1 AS one FROM tinydevcrm.users WHERE user_id = $1 FOR NO KEY UPDATE",
        user_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let row = fetch(&mut tx, user_id, channel_id, id).await?;
    if row.unsubscribed_at.is_some() {
        return Err(ApiError::Conflict {
            code: "email_unsubscribed",
            detail: "the recipient unsubscribed; no confirmation is sent to them again from \
                     this subscription"
                .to_owned(),
        });
    }
    if row.confirmed_at.is_some() {
        return Err(ApiError::Conflict {
            code: "email_already_confirmed",
            detail: "the recipient has confirmed this subscription already".to_owned(),
        });
    }
    let hash = recipient::address_hash(&row.email);
    match admit(&mut tx, user_id, &hash, pacing).await? {
        Admission::Yes => {
            log_confirmation(&mut tx, user_id, &hash).await?;
            queue_confirmation(&mut tx, id, channel_id, pacing).await?;
        }
        Admission::Suppressed => {
            log_confirmation(&mut tx, user_id, &hash).await?;
            tx.commit().await?;
            return Err(suppressed());
        }
        Admission::NotBefore(at) => {
            return Err(ApiError::TooManyRequests {
                retry_after_secs: retry_secs(at),
            }
            .with_members(serde_json::json!({"retry_at": at})));
        }
    }
    let row = fetch(&mut tx, user_id, channel_id, id).await?;
    tx.commit().await?;
    Ok(row)
}

/// Makes a finished event delivery due again now; 409 `delivery_pending` while it is pending,
/// 409 `confirmation_not_retried` for a confirmation message (resend it: that route applies
/// the per-address limit).
pub async fn retry(
    pool: &PgPool,
    user_id: Uuid,
    channel_id: Uuid,
    id: Uuid,
    delivery_id: Uuid,
) -> Result<(), ApiError> {
    let mut tx = pool.begin().await?;
    let found = sqlx::query!(
        "SELECT d.status, d.seq FROM tinydevcrm.deliveries d
           JOIN tinydevcrm.subscriptions s USING (subscription_id)
          WHERE d.delivery_id = $1 AND s.subscription_id = $2 AND s.channel_id = $3
            AND s.user_id = $4 AND s.kind = 'email'
            FOR UPDATE OF d",
        delivery_id,
        id,
        channel_id,
        user_id,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::NotFound {
        detail: format!("no delivery {delivery_id}"),
    })?;
    if found.seq.is_none() {
        return Err(ApiError::Conflict {
            code: "confirmation_not_retried",
            detail: format!(
                "this is a confirmation message; send a new one with \
                 POST /channels/{channel_id}/emails/{id}/resend-confirmation/"
            ),
        });
    }
    if found.status == "pending" {
        return Err(ApiError::Conflict {
            code: "delivery_pending",
            detail: "this delivery is still pending: it will be sent (or is being sent) without \
                     a retry; retry it once it has succeeded or failed"
                .to_owned(),
        });
    }
    sqlx::query!(
        "UPDATE tinydevcrm.deliveries
            SET status = 'pending', next_attempt_at = now(), finished_at = NULL
          WHERE delivery_id = $1",
        delivery_id,
    )
    .execute(&mut *tx)
    .await?;
    notify::send(&mut tx, &[Notice::DeliveriesDue]).await?;
    tx.commit().await?;
    Ok(())
}

/// What a public link did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOutcome {
    /// Confirmed now.
    Confirmed,
    /// Unsubscribed now (or it already was).
    Unsubscribed,
}

/// Why a public link did nothing.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Not a token, no such subscription, a wrong HMAC, or a nonce since cleared or replaced
    /// (used, resent, unsubscribed).
    #[error("this link is not valid (it was used already, replaced by a newer one, or mistyped)")]
    Invalid,
    /// The confirmation link is past its time.
    #[error("this confirmation link has expired; ask the subscription's owner to send a new one")]
    Expired,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Checks a public link's token for `purpose` without acting on it (the page `GET` shows).
pub async fn check(
    pool: &PgPool,
    key: &LinkKey,
    purpose: Purpose,
    token: &str,
) -> Result<(), LinkError> {
    let mut tx = pool.begin().await?;
    verified(&mut tx, key, purpose, token, false).await?;
    tx.commit().await?;
    Ok(())
}

/// Verifies a token against its subscription's current nonce (locking the row when `lock`);
/// the subscription's id.
async fn verified(
    tx: &mut Transaction<'_, Postgres>,
    key: &LinkKey,
    purpose: Purpose,
    token: &str,
    lock: bool,
) -> Result<Uuid, LinkError> {
    let token = Token::parse(token).ok_or(LinkError::Invalid)?;
    let row = if lock {
        sqlx::query!(
            r#"SELECT confirm_nonce, unsubscribe_nonce, confirm_expires_at < now() AS "expired?"
                 FROM tinydevcrm.subscriptions
                WHERE subscription_id = $1 AND kind = 'email' FOR UPDATE"#,
            token.subscription_id,
        )
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| (r.confirm_nonce, r.unsubscribe_nonce, r.expired))
    } else {
        sqlx::query!(
            r#"SELECT confirm_nonce, unsubscribe_nonce, confirm_expires_at < now() AS "expired?"
                 FROM tinydevcrm.subscriptions
                WHERE subscription_id = $1 AND kind = 'email'"#,
            token.subscription_id,
        )
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| (r.confirm_nonce, r.unsubscribe_nonce, r.expired))
    };
    let (confirm_nonce, unsubscribe_nonce, expired) = row.ok_or(LinkError::Invalid)?;
    let nonce = match purpose {
        Purpose::Confirm => confirm_nonce,
        Purpose::Unsubscribe => unsubscribe_nonce,
    }
    .ok_or(LinkError::Invalid)?;
    if !key.verifies(purpose, &token, &nonce) {
        return Err(LinkError::Invalid);
    }
    if purpose == Purpose::Confirm && expired != Some(false) {
        return Err(LinkError::Expired);
    }
    Ok(token.subscription_id)
}

/// Acts on a public link: confirms (the nonce is cleared, so the link works once) or
/// unsubscribes (the subscription is disabled for good and its pending mail dropped; the link
/// keeps answering, as mail clients may repeat the one-click `POST`). Unsubscribing also puts
/// the address on the suppression list: no tenant can subscribe it again, and pending
/// confirmations to it from other subscriptions are dropped.
pub async fn follow(
    pool: &PgPool,
    key: &LinkKey,
    purpose: Purpose,
    token: &str,
) -> Result<LinkOutcome, LinkError> {
    let mut tx = pool.begin().await?;
    let id = verified(&mut tx, key, purpose, token, true).await?;
    let outcome = match purpose {
        Purpose::Confirm => {
            sqlx::query!(
                "UPDATE tinydevcrm.subscriptions
                    SET confirmed_at = now(), confirm_nonce = NULL, confirm_expires_at = NULL,
                        updated_at = now()
                  WHERE subscription_id = $1",
                id,
            )
            .execute(&mut *tx)
            .await?;
            LinkOutcome::Confirmed
        }
        Purpose::Unsubscribe => {
            sqlx::query!(
                "UPDATE tinydevcrm.subscriptions
                    SET status = 'disabled', confirm_nonce = NULL, confirm_expires_at = NULL,
                        unsubscribed_at = coalesce(unsubscribed_at, now()),
                        disabled_reason = 'the recipient unsubscribed', updated_at = now()
                  WHERE subscription_id = $1",
                id,
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query!(
                "UPDATE tinydevcrm.deliveries
                    SET status = 'failed', finished_at = now(),
                        last_error = 'the recipient unsubscribed'
                  WHERE subscription_id = $1 AND status = 'pending'",
                id,
            )
            .execute(&mut *tx)
            .await?;
            let email = sqlx::query_scalar!(
                r#"SELECT email AS "email!" FROM tinydevcrm.subscriptions WHERE subscription_id = $1"#,
                id,
            )
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query!(
                "INSERT INTO tinydevcrm.email_suppressions (address_hash) VALUES ($1)
                 ON CONFLICT (address_hash) DO NOTHING",
                recipient::address_hash(&email),
            )
            .execute(&mut *tx)
            .await?;
            LinkOutcome::Unsubscribed
        }
    };
    tx.commit().await?;
    Ok(outcome)
}
