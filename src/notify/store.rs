//! SQL of webhook subscriptions (rows of `tinydevcrm.subscriptions` with kind `webhook`) and
//! their delivery log (`tinydevcrm.deliveries`). Every statement names the owner, so another
//! tenant's channel, webhook or delivery is simply not found.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::states::{DeliveryStatus, SubscriptionStatus};
use crate::db::notify::{self, Notice};
use crate::error::ApiError;

/// A webhook subscription as stored, without its secrets.
#[derive(Debug, Clone)]
pub struct WebhookRow {
    /// Primary key (public, unguessable).
    pub subscription_id: Uuid,
    /// The channel whose events it receives.
    pub channel_id: Uuid,
    /// Where deliveries go (as the URL parser normalised it).
    pub url: String,
    /// The owner's note.
    pub description: Option<String>,
    /// Whether it is delivered to.
    pub status: SubscriptionStatus,
    /// Why the delivery worker disabled it.
    pub disabled_reason: Option<String>,
    /// Since when every delivery has failed.
    pub failing_since: Option<DateTime<Utc>>,
    /// Until when the previous secret signs too, after a rotation.
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change by its owner or the worker.
    pub updated_at: DateTime<Utc>,
}

/// A webhook URL the destination check accepted, and its host.
#[derive(Debug, Clone)]
pub struct WebhookUrl {
    /// The URL as the parser serialises it: what is stored and delivered to.
    pub url: String,
    /// Its host as the parser gives it (lower-case, IPv4 dotted, IPv6 in brackets): what the
    /// outbox counts attempts per host by.
    pub host: String,
}

impl WebhookUrl {
    /// The stored form of a checked URL; `None` for a URL without a host, which the check
    /// refuses before this is reached.
    pub fn from_checked(url: &url::Url) -> Option<Self> {
        Some(Self {
            host: url.host_str()?.to_ascii_lowercase(),
            url: url.to_string(),
        })
    }
}

/// How many subscriptions a channel and a tenant may have.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Webhooks per channel.
    pub per_channel: i64,
    /// Subscriptions (webhooks and e-mail) per tenant.
    pub per_tenant: i64,
}

fn no_webhook(webhook_id: Uuid) -> ApiError {
    ApiError::NotFound {
        detail: format!("no webhook {webhook_id}"),
    }
}

fn no_channel(channel_id: Uuid) -> ApiError {
    ApiError::NotFound {
        detail: format!("no channel {channel_id}"),
    }
}

/// Creates a webhook on a user's channel with the given secret; 404 when the channel is not
/// theirs, 409 `too_many_webhooks` / `too_many_subscriptions` past the limits.
///
/// The counts are taken under locks held until commit: the tenant's user row (every creation of
/// the tenant, on any channel, waits for the one before, so the tenant limit holds) and then the
/// channel row (which also keeps the channel from being deleted in between). Both `FOR NO KEY
/// UPDATE`: they conflict with each other but not with the key-share locks that foreign-key
/// checks take, so events and sessions are not held up.
pub async fn create(
    pool: &PgPool,
    user_id: Uuid,
    channel_id: Uuid,
    url: &WebhookUrl,
    description: Option<&str>,
    secret: &str,
    limits: Limits,
) -> Result<WebhookRow, ApiError> {
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
    .ok_or_else(|| no_channel(channel_id))?;
    let counts = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE channel_id = $2 AND kind = 'webhook') AS "on_channel!",
                  count(*) AS "of_tenant!"
             FROM tinydevcrm.subscriptions WHERE user_id = $1"#,
        user_id,
        channel_id,
    )
    .fetch_one(&mut *tx)
    .await?;
    if counts.on_channel >= limits.per_channel {
        return Err(ApiError::Conflict {
            code: "too_many_webhooks",
            detail: format!(
                "a channel may have at most {} webhooks; delete one \
                 (DELETE /channels/{channel_id}/webhooks/{{id}}/) or ask the operator to raise \
                 TDC_MAX_WEBHOOKS_PER_CHANNEL",
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
    let row = sqlx::query_as!(
        WebhookRow,
        r#"INSERT INTO tinydevcrm.subscriptions
                (subscription_id, user_id, channel_id, kind, description, url, host, secret)
           VALUES ($1, $2, $3, 'webhook', $4, $5, $6, $7)
           RETURNING subscription_id, channel_id, url AS "url!", description, status AS "status: SubscriptionStatus",
                     disabled_reason, failing_since, previous_secret_until, created_at, updated_at"#,
        Uuid::new_v4(),
        user_id,
        channel_id,
        description,
        url.url,
        url.host,
        secret,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// One of a user's webhooks on one of their channels.
pub async fn find(
    pool: &PgPool,
    user_id: Uuid,
    channel_id: Uuid,
    webhook_id: Uuid,
) -> Result<WebhookRow, ApiError> {
    sqlx::query_as!(
        WebhookRow,
        r#"SELECT subscription_id, channel_id, url AS "url!", description, status AS "status: SubscriptionStatus",
                  disabled_reason, failing_since, previous_secret_until, created_at, updated_at
             FROM tinydevcrm.subscriptions
            WHERE user_id = $1 AND channel_id = $2 AND subscription_id = $3 AND kind = 'webhook'"#,
        user_id,
        channel_id,
        webhook_id,
    )
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| no_webhook(webhook_id))
}

/// A user's webhooks on a channel, oldest first (the caller has checked the channel is theirs).
pub async fn list(
    pool: &PgPool,
    user_id: Uuid,
    channel_id: Uuid,
) -> Result<Vec<WebhookRow>, ApiError> {
    Ok(sqlx::query_as!(
        WebhookRow,
        r#"SELECT subscription_id, channel_id, url AS "url!", description, status AS "status: SubscriptionStatus",
                  disabled_reason, failing_since, previous_secret_until, created_at, updated_at
             FROM tinydevcrm.subscriptions
            WHERE user_id = $1 AND channel_id = $2 AND kind = 'webhook'
            ORDER BY created_at, subscription_id"#,
        user_id,
        channel_id,
    )
    .fetch_all(pool)
    .await?)
}

/// What a `PATCH` changes; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct Change<'a> {
    /// A new description (`Some(None)` removes it).
    pub description: Option<Option<&'a str>>,
    /// A new, already checked, URL.
    pub url: Option<&'a WebhookUrl>,
    /// `active` or `paused` (the owner's decision; `disabled` is the worker's).
    pub status: Option<SubscriptionStatus>,
}

/// Applies a [`Change`]. Setting a status is the owner's decision, so it clears the reason the
/// worker disabled the webhook; setting `active`, or a different URL, also clears
/// `failing_since`, so a webhook re-enabled or moved to a fixed receiver gets the whole failure
/// period again before it is disabled.
pub async fn update(
    pool: &PgPool,
    user_id: Uuid,
    channel_id: Uuid,
    webhook_id: Uuid,
    change: Change<'_>,
) -> Result<WebhookRow, ApiError> {
    let (set_description, description) = match change.description {
        Some(description) => (true, description),
        None => (false, None),
    };
    sqlx::query_as!(
        WebhookRow,
        r#"UPDATE tinydevcrm.subscriptions
              SET description = CASE WHEN $4 THEN $5 ELSE description END,
                  url = coalesce($6, url),
                  host = coalesce($8, host),
                  status = coalesce($7, status),
                  disabled_reason = CASE WHEN $7::text IS NULL THEN disabled_reason END,
                  failing_since = CASE WHEN $7::text = 'active' OR $6::text <> url THEN NULL
                                       ELSE failing_since END,
                  updated_at = now()
            WHERE user_id = $1 AND channel_id = $2 AND subscription_id = $3 AND kind = 'webhook'
        RETURNING subscription_id, channel_id, url AS "url!", description, status AS "status: SubscriptionStatus",
                  disabled_reason, failing_since, previous_secret_until, created_at, updated_at"#,
        user_id,
        channel_id,
        webhook_id,
        set_description,
        description,
        change.url.map(|u| u.url.as_str()),
        change.status.map(SubscriptionStatus::as_str),
        change.url.map(|u| u.host.as_str()),
    )
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| no_webhook(webhook_id))
}

/// Deletes a webhook; its deliveries go with it (the foreign key cascades).
pub async fn delete(
    pool: &PgPool,
    user_id: Uuid,
    channel_id: Uuid,
    webhook_id: Uuid,
) -> Result<(), ApiError> {
    if !delete_owned(pool, user_id, channel_id, webhook_id, "webhook").await? {
        return Err(no_webhook(webhook_id));
    }
    Ok(())
}

/// Deletes the user's subscription `id` of `kind` (`webhook` or `email`) on the channel, and
/// with it its delivery log (the foreign key cascades); whether there was one. One statement
/// for both kinds, so the owner check is written once.
pub(crate) async fn delete_owned(
    pool: &PgPool,
    user_id: Uuid,
    channel_id: Uuid,
    id: Uuid,
    kind: &'static str,
) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query!(
        "DELETE FROM tinydevcrm.subscriptions
          WHERE user_id = $1 AND channel_id = $2 AND subscription_id = $3 AND kind = $4",
        user_id,
        channel_id,
        id,
        kind,
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(deleted > 0)
}

/// Replaces the secret; the one it replaces keeps signing next to it for `overlap`. Only two
/// secrets sign at once: rotating again within the overlap drops the oldest.
pub async fn rotate_secret(
    pool: &PgPool,
    user_id: Uuid,
    channel_id: Uuid,
    webhook_id: Uuid,
    secret: &str,
    overlap: Duration,
) -> Result<WebhookRow, ApiError> {
    sqlx::query_as!(
        WebhookRow,
        r#"UPDATE tinydevcrm.subscriptions
              SET previous_secret = secret,
                  secret = $4,
                  previous_secret_until = now() + $5 * interval '1 second',
                  updated_at = now()
            WHERE user_id = $1 AND channel_id = $2 AND subscription_id = $3 AND kind = 'webhook'
        RETURNING subscription_id, channel_id, url AS "url!", description, status AS "status: SubscriptionStatus",
                  disabled_reason, failing_since, previous_secret_until, created_at, updated_at"#,
        user_id,
        channel_id,
        webhook_id,
        secret,
        overlap.as_secs_f64(),
    )
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| no_webhook(webhook_id))
}

/// Queues a test delivery (no event: `seq` NULL) with `payload`, and wakes the delivery workers
/// of every process when it commits; its id.
pub async fn enqueue_test(
    pool: &PgPool,
    user_id: Uuid,
    channel_id: Uuid,
    webhook_id: Uuid,
    payload: &serde_json::Value,
) -> Result<Uuid, ApiError> {
    let delivery_id = Uuid::new_v4();
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query!(
        "INSERT INTO tinydevcrm.deliveries (delivery_id, subscription_id, channel_id, seq, payload)
         SELECT $1, subscription_id, channel_id, NULL, $5
           FROM tinydevcrm.subscriptions
          WHERE user_id = $2 AND channel_id = $3 AND subscription_id = $4 AND kind = 'webhook'",
        delivery_id,
        user_id,
        channel_id,
        webhook_id,
        payload,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(no_webhook(webhook_id));
    }
    notify::send(&mut tx, &[Notice::DeliveriesDue]).await?;
    tx.commit().await?;
    Ok(delivery_id)
}

/// Makes a finished delivery (succeeded or failed) due again now, keeping its attempts and last
/// answer, and wakes the delivery workers; 409 `delivery_pending` while it is still pending (it
/// will be sent, or is being sent).
pub async fn retry(
    pool: &PgPool,
    user_id: Uuid,
    channel_id: Uuid,
    webhook_id: Uuid,
    delivery_id: Uuid,
) -> Result<(), ApiError> {
    let mut tx = pool.begin().await?;
    let status = sqlx::query_scalar!(
        r#"SELECT d.status AS "status: DeliveryStatus" FROM tinydevcrm.deliveries d
           JOIN tinydevcrm.subscriptions s USING (subscription_id)
          WHERE d.delivery_id = $1 AND s.subscription_id = $2 AND s.channel_id = $3
            AND s.user_id = $4 AND s.kind = 'webhook'
            FOR UPDATE OF d"#,
        delivery_id,
        webhook_id,
        channel_id,
        user_id,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::NotFound {
        detail: format!("no delivery {delivery_id}"),
    })?;
    if status == DeliveryStatus::Pending {
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

/// One entry of a webhook's delivery log.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryBody {
    /// The delivery's id (also its `webhook-id` header: stable across retries).
    pub delivery_id: Uuid,
    /// The event's id on the channel; `null` for a test delivery.
    pub seq: Option<i64>,
    /// Where it is.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: i32,
    /// HTTP status of the last answer, if one came.
    pub last_status_code: Option<i32>,
    /// How long the last attempt took, in milliseconds.
    pub last_latency_ms: Option<i32>,
    /// The first bytes of the last answer's body.
    pub last_response: Option<String>,
    /// Why the last attempt failed, when it did.
    pub last_error: Option<String>,
    /// When the last attempt was made.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When the next attempt is due; only while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the delivery was queued.
    pub created_at: DateTime<Utc>,
    /// When it succeeded or finally failed.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Characters of a response body the log shows.
const RESPONSE_PREFIX_CHARS: i32 = 1024;

/// A page of a webhook's deliveries, newest first (ties by id), after the position
/// `(created_at, delivery_id)` of the previous page's last one. The order is the index's
/// (`subscription_id, created_at DESC, delivery_id`), so a page is a range scan.
pub async fn deliveries(
    pool: &PgPool,
    webhook_id: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<DeliveryBody>, ApiError> {
    let (after_at, after_id) = after.unzip();
    Ok(sqlx::query_as!(
        DeliveryBody,
        r#"SELECT delivery_id, seq, status AS "status: DeliveryStatus", attempts, last_status_code, last_latency_ms,
                  left(last_response, $5) AS last_response, last_error, last_attempt_at,
                  CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at,
                  created_at, finished_at
             FROM tinydevcrm.deliveries
            WHERE subscription_id = $1
              AND ($2::timestamptz IS NULL
                   OR created_at < $2 OR (created_at = $2 AND delivery_id > $3))
            ORDER BY created_at DESC, delivery_id
            LIMIT $4"#,
        webhook_id,
        after_at,
        after_id,
        limit,
        RESPONSE_PREFIX_CHARS,
    )
    .fetch_all(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_host_is_the_parsers_lower_case_with_ipv6_in_brackets() {
        for (url, host) in [
            ("https://Hooks.EXAMPLE.com:8443/In?q=1", "hooks.example.com"),
            ("http://[::1]:8080/hook", "[::1]"),
            ("http://[0:0:0:0:0:ffff:7f00:1]/", "[::ffff:7f00:1]"),
            ("http://2130706433/", "127.0.0.1"),
            ("https://bücher.example/", "xn--bcher-kva.example"),
        ] {
            let parsed = url::Url::parse(url).expect(url);
            let stored = WebhookUrl::from_checked(&parsed).expect(url);
            assert_eq!(stored.host, host, "{url}");
            assert_eq!(stored.url, parsed.as_str());
        }
    }
}
