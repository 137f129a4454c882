//! Handlers of `/channels/{id}/webhooks/...`: a channel's webhook subscriptions, their secrets,
//! test deliveries and delivery log. Another tenant's channel, webhook or delivery is a 404 on
//! every route, as for channels themselves.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::destination::DestinationPolicy;
pub use super::log::{DeliveriesPage, DeliveriesQuery, DeliveryQueued, SettableStatus};
use super::signature::WebhookSecret;
use super::states::SubscriptionStatus;
use super::store::{self, Change, Limits, WebhookRow, WebhookUrl};
use crate::auth::extract::AuthUser;
use crate::error::{ApiError, Problem};
use crate::state::AppState;

/// Longest description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 1000;

/// The body of `POST /channels/{id}/webhooks/`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where to deliver: `https://` (plain `http://` only when the operator allows it), not an
    /// internal address unless the operator allows its range.
    #[schema(min_length = 1, max_length = 2048)]
    pub url: String,
    /// A note for yourself (at most 1000 characters).
    #[schema(max_length = 1000)]
    pub description: Option<String>,
}

/// The body of `PATCH /channels/{id}/webhooks/{wid}/`: any subset.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    /// A new description; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(max_length = 1000, value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// A new URL, checked like a new webhook's.
    #[schema(min_length = 1, max_length = 2048)]
    pub url: Option<String>,
    /// `active` (resume, or re-enable a disabled webhook) or `paused`.
    pub status: Option<SettableStatus>,
    /// `true` is `status: paused`, `false` is `status: active` (the form the API contract's
    /// table shows).
    pub paused: Option<bool>,
}

/// A field that is present (even as `null`): `Some(value)`; absent, serde's default (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A webhook as the API describes it; never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookBody {
    /// The webhook's public id.
    pub webhook_id: Uuid,
    /// The channel whose events it receives.
    pub channel_id: Uuid,
    /// Where deliveries go.
    pub url: String,
    /// The owner's note.
    pub description: Option<String>,
    /// `active`, `paused` (deliveries held) or `disabled` (by the service; see
    /// `disabled_reason`; no deliveries are queued until it is set `active` again).
    pub status: SubscriptionStatus,
    /// Why the service disabled it (a `410 Gone`, or failing for too long).
    pub disabled_reason: Option<String>,
    /// Since when every delivery has failed; `null` while it is healthy.
    pub failing_since: Option<DateTime<Utc>>,
    /// Until when the previous secret also signs, after a rotation.
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// Where its delivery log is.
    pub deliveries_url: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl From<WebhookRow> for WebhookBody {
    fn from(w: WebhookRow) -> Self {
        Self {
            deliveries_url: format!(
                "/channels/{}/webhooks/{}/deliveries/",
                w.channel_id, w.subscription_id
            ),
            webhook_id: w.subscription_id,
            channel_id: w.channel_id,
            url: w.url,
            description: w.description,
            status: w.status,
            disabled_reason: w.disabled_reason,
            failing_since: w.failing_since,
            previous_secret_until: w.previous_secret_until,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// A webhook with its signing secret: the answer of creation and rotation, the only two that
/// show the secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookWithSecret {
    /// The webhook.
    #[serde(flatten)]
    pub webhook: WebhookBody,
    /// The signing secret (`whsec_` and base64): keep it; it is not shown again.
    pub secret: String,
}

fn channel_id(raw: &str) -> Result<Uuid, ApiError> {
    ApiError::id_in_path(raw, "channel")
}

fn webhook_path(path: &(String, String)) -> Result<(Uuid, Uuid), ApiError> {
    Ok((
        channel_id(&path.0)?,
        ApiError::id_in_path(&path.1, "webhook")?,
    ))
}

/// Parses and judges a webhook URL; its normalised form and host are what is stored.
fn checked_url(state: &AppState, url: &str) -> Result<WebhookUrl, ApiError> {
    let invalid = |detail: String| ApiError::bad_request("invalid_webhook_url", detail);
    let url = DestinationPolicy::from_settings(&state.settings)
        .check_url(url)
        .map_err(|refused| invalid(refused.to_string()))?;
    // The check refuses a URL without a host, so this is only a guard.
    WebhookUrl::from_checked(&url).ok_or_else(|| invalid("the URL has no host".to_owned()))
}

fn checked_description(description: Option<&str>) -> Result<Option<&str>, ApiError> {
    match description {
        Some(d) if d.chars().count() > MAX_DESCRIPTION_CHARS => Err(ApiError::bad_request(
            "invalid_description",
            format!("the description is longer than {MAX_DESCRIPTION_CHARS} characters"),
        )),
        // PostgreSQL text cannot hold a NUL: refused here, or the insert fails as a 500.
        Some(d) if d.contains('\0') => Err(ApiError::bad_request(
            "invalid_description",
            "the description contains a NUL character",
        )),
        other => Ok(other),
    }
}

/// Subscribe a webhook to a channel's events.
///
/// The answer carries the signing secret, shown here and on rotation only.
#[utoipa::path(post, path = "/channels/{id}/webhooks/", tag = "webhooks", request_body = CreateWebhook,
    params(("id" = Uuid, Path, description = "channel id")),
    responses((status = 201, body = WebhookWithSecret),
        (status = 400, body = Problem, description = "`invalid_webhook_url` (the refusal and the operator setting that would allow it), `invalid_description`"),
        (status = 404, body = Problem),
        (status = 409, body = Problem, description = "`too_many_webhooks` on the channel, `too_many_subscriptions` for the tenant")),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, channel = %path.as_str()))]
pub async fn create_webhook(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    body: web::Json<CreateWebhook>,
) -> Result<HttpResponse, ApiError> {
    let channel = channel_id(&path)?;
    let url = checked_url(&state, &body.url)?;
    let description = checked_description(body.description.as_deref())?;
    let secret = WebhookSecret::generate().expose();
    let limits = Limits {
        per_channel: state.settings.max_webhooks_per_channel,
        per_tenant: state.settings.max_subscriptions_per_tenant,
    };
    let row = store::create(
        &state.pool,
        user.user_id,
        channel,
        &url,
        description,
        &secret,
        limits,
    )
    .await?;
    Ok(HttpResponse::Created().json(WebhookWithSecret {
        webhook: row.into(),
        secret,
    }))
}

/// A channel's webhooks.
#[utoipa::path(get, path = "/channels/{id}/webhooks/", tag = "webhooks",
    params(("id" = Uuid, Path, description = "channel id")),
    responses((status = 200, body = Vec<WebhookBody>), (status = 404, body = Problem)),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, channel = %path.as_str()))]
pub async fn list_webhooks(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let channel = crate::channels::store::find(&state.pool, user.user_id, channel_id(&path)?)
        .await?
        .channel_id;
    let webhooks: Vec<WebhookBody> = store::list(&state.pool, user.user_id, channel)
        .await?
        .into_iter()
        .map(WebhookBody::from)
        .collect();
    Ok(HttpResponse::Ok().json(webhooks))
}

/// One webhook.
#[utoipa::path(get, path = "/channels/{id}/webhooks/{wid}/", tag = "webhooks",
    params(("id" = Uuid, Path, description = "channel id"), ("wid" = Uuid, Path, description = "webhook id")),
    responses((status = 200, body = WebhookBody), (status = 404, body = Problem)),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, webhook = %path.1))]
pub async fn describe_webhook(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (channel, webhook) = webhook_path(&path)?;
    let row = store::find(&state.pool, user.user_id, channel, webhook).await?;
    Ok(HttpResponse::Ok().json(WebhookBody::from(row)))
}

/// Change a webhook's URL or description, pause it, or resume it (which also re-enables a
/// webhook the service disabled).
#[utoipa::path(patch, path = "/channels/{id}/webhooks/{wid}/", tag = "webhooks", request_body = UpdateWebhook,
    params(("id" = Uuid, Path, description = "channel id"), ("wid" = Uuid, Path, description = "webhook id")),
    responses((status = 200, body = WebhookBody),
        (status = 400, body = Problem, description = "`invalid_webhook_url`, `invalid_description`, `invalid_webhook` (`status` and `paused` disagree)"),
        (status = 404, body = Problem)),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, webhook = %path.1))]
pub async fn update_webhook(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(String, String)>,
    body: web::Json<UpdateWebhook>,
) -> Result<HttpResponse, ApiError> {
    let (channel, webhook) = webhook_path(&path)?;
    let body = body.into_inner();
    let paused = body.paused.map(|paused| {
        if paused {
            SettableStatus::Paused
        } else {
            SettableStatus::Active
        }
    });
    let status = match (body.status, paused) {
        (Some(status), Some(paused))
            if SubscriptionStatus::from(status) != SubscriptionStatus::from(paused) =>
        {
            return Err(ApiError::bad_request(
                "invalid_webhook",
                "status and paused disagree; send one of them",
            ));
        }
        (status, paused) => status.or(paused),
    };
    let url = body
        .url
        .as_deref()
        .map(|url| checked_url(&state, url))
        .transpose()?;
    let description = match &body.description {
        Some(d) => Some(checked_description(d.as_deref())?),
        None => None,
    };
    let change = Change {
        description,
        url: url.as_ref(),
        status: status.map(SubscriptionStatus::from),
    };
    let row = store::update(&state.pool, user.user_id, channel, webhook, change).await?;
    Ok(HttpResponse::Ok().json(WebhookBody::from(row)))
}

/// Delete a webhook and its delivery log.
#[utoipa::path(delete, path = "/channels/{id}/webhooks/{wid}/", tag = "webhooks",
    params(("id" = Uuid, Path, description = "channel id"), ("wid" = Uuid, Path, description = "webhook id")),
    responses((status = 204), (status = 404, body = Problem)),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, webhook = %path.1))]
pub async fn delete_webhook(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (channel, webhook) = webhook_path(&path)?;
    store::delete(&state.pool, user.user_id, channel, webhook).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Replace a webhook's signing secret.
///
/// The previous secret keeps signing next to the new one (two `v1,` signatures) for
/// `TDC_WEBHOOK_ROTATION_OVERLAP_SECS` (24 h by default), so receivers can switch over.
#[utoipa::path(post, path = "/channels/{id}/webhooks/{wid}/rotate-secret/", tag = "webhooks",
    params(("id" = Uuid, Path, description = "channel id"), ("wid" = Uuid, Path, description = "webhook id")),
    responses((status = 200, body = WebhookWithSecret), (status = 404, body = Problem)),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, webhook = %path.1))]
pub async fn rotate_secret(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (channel, webhook) = webhook_path(&path)?;
    let secret = WebhookSecret::generate().expose();
    let row = store::rotate_secret(
        &state.pool,
        user.user_id,
        channel,
        webhook,
        &secret,
        state.settings.webhook_rotation_overlap,
    )
    .await?;
    Ok(HttpResponse::Ok().json(WebhookWithSecret {
        webhook: row.into(),
        secret,
    }))
}

/// Send a test event (`{"type": "test", "channel_id", "sent_at"}`) to a webhook.
///
/// Queued like any delivery (held while the webhook is paused); follow it in the delivery log.
#[utoipa::path(post, path = "/channels/{id}/webhooks/{wid}/test/", tag = "webhooks",
    params(("id" = Uuid, Path, description = "channel id"), ("wid" = Uuid, Path, description = "webhook id")),
    responses((status = 202, body = DeliveryQueued), (status = 404, body = Problem)),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, webhook = %path.1))]
pub async fn test_webhook(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (channel, webhook) = webhook_path(&path)?;
    let payload = json!({"type": "test", "channel_id": channel, "sent_at": Utc::now()});
    let delivery_id =
        store::enqueue_test(&state.pool, user.user_id, channel, webhook, &payload).await?;
    Ok(HttpResponse::Accepted().json(DeliveryQueued { delivery_id }))
}

/// A webhook's delivery log, newest first.
#[utoipa::path(get, path = "/channels/{id}/webhooks/{wid}/deliveries/", tag = "webhooks",
    params(("id" = Uuid, Path, description = "channel id"), ("wid" = Uuid, Path, description = "webhook id"), DeliveriesQuery),
    responses((status = 200, body = DeliveriesPage),
        (status = 400, body = Problem, description = "`invalid_limit`, `invalid_cursor`"),
        (status = 404, body = Problem)),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, webhook = %path.1))]
pub async fn list_deliveries(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(String, String)>,
    query: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let (channel, webhook) = webhook_path(&path)?;
    let position = query.position(webhook)?;
    let webhook = store::find(&state.pool, user.user_id, channel, webhook).await?;
    let page = super::log::page(&state.pool, webhook.subscription_id, position).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Redeliver a delivery that succeeded or failed, now (its attempts so far are kept).
#[utoipa::path(post, path = "/channels/{id}/webhooks/{wid}/deliveries/{did}/retry/", tag = "webhooks",
    params(("id" = Uuid, Path, description = "channel id"), ("wid" = Uuid, Path, description = "webhook id"),
        ("did" = Uuid, Path, description = "delivery id")),
    responses((status = 202, body = DeliveryQueued), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "`delivery_pending`: it is still queued or being sent")),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, webhook = %path.1, delivery = %path.2))]
pub async fn retry_delivery(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let channel = channel_id(&path.0)?;
    let webhook = ApiError::id_in_path(&path.1, "webhook")?;
    let delivery_id = ApiError::id_in_path(&path.2, "delivery")?;
    store::retry(&state.pool, user.user_id, channel, webhook, delivery_id).await?;
    Ok(HttpResponse::Accepted().json(DeliveryQueued { delivery_id }))
}
