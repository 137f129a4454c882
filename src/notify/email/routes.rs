//! Handlers of `/channels/{id}/emails/...` (a channel's e-mail subscriptions, their
//! confirmation and delivery log; the owner's, with a JWT) and of the public link routes
//! `/emails/confirm/{token}` and `/emails/unsubscribe/{token}` (the recipient's, with the
//! token as the only credential). Another tenant's channel, subscription or delivery is a 404
//! on every owner's route.
//!
//! A link's `GET` only shows a page with a button; the button's `POST` acts. Mail scanners and
//! link previews fetch links, and must not confirm a subscription on the recipient's behalf.

use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::store::{self as email_store, EmailRow, LinkError, LinkOutcome, Pacing, Queued};
use crate::auth::extract::AuthUser;
use crate::error::{ApiError, Problem};
use crate::notify::links::{LinkKey, Purpose};
use crate::notify::log::{DeliveriesPage, DeliveriesQuery, DeliveryQueued, SettableStatus};
use crate::notify::store::Limits;
use crate::notify::{mailer, recipient};
use crate::state::AppState;

/// Longest description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 1000;

/// The body of `POST /channels/{id}/emails/`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEmail {
    /// Exactly one plain address (`alice@example.com`): no display name, no second recipient,
    /// ASCII only, at most 254 bytes.
    #[schema(min_length = 3, max_length = 254)]
    pub to: String,
    /// A note for yourself (at most 1000 characters).
    #[schema(max_length = 1000)]
    pub description: Option<String>,
}

/// The body of `PATCH /channels/{id}/emails/{eid}/`: any subset.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEmail {
    /// A new description; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(max_length = 1000, value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// `active` (resume) or `paused` (messages held until resumed).
    pub status: Option<SettableStatus>,
    /// `true` is `status: paused`, `false` is `status: active`.
    pub paused: Option<bool>,
}

fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// An e-mail subscription as the API describes it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmailBody {
    /// The subscription's public id.
    pub email_id: Uuid,
    /// The channel whose events it receives.
    pub channel_id: Uuid,
    /// The recipient.
    pub to: String,
    /// The owner's note.
    pub description: Option<String>,
    /// `unconfirmed` (the recipient has not confirmed: nothing but the confirmation is sent),
    /// `active`, `paused` (messages held) or `disabled` (see `disabled_reason`: the recipient
    /// unsubscribed, or messages failed for too long).
    pub status: String,
    /// Whether the recipient confirmed.
    pub confirmed: bool,
    /// When the recipient confirmed.
    pub confirmed_at: Option<DateTime<Utc>>,
    /// When the newest confirmation message was queued; `null` when none was (the address had
    /// one within the interval: resend it from `confirmation_retry_at`).
    pub confirmation_sent_at: Option<DateTime<Utc>>,
    /// Until when the newest confirmation link works.
    pub confirmation_expires_at: Option<DateTime<Utc>>,
    /// When the recipient unsubscribed; such a subscription cannot be resumed.
    pub unsubscribed_at: Option<DateTime<Utc>>,
    /// Why it is disabled.
    pub disabled_reason: Option<String>,
    /// Since when every message has failed; `null` while it is healthy.
    pub failing_since: Option<DateTime<Utc>>,
    /// When the last message of events was accepted by the SMTP server.
    pub last_sent_at: Option<DateTime<Utc>>,
    /// Where its delivery log is.
    pub deliveries_url: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl From<EmailRow> for EmailBody {
    fn from(e: EmailRow) -> Self {
        let status = if e.status == "active" && e.confirmed_at.is_none() {
            "unconfirmed".to_owned()
        } else {
            e.status
        };
        Self {
            deliveries_url: format!(
                "/channels/{}/emails/{}/deliveries/",
                e.channel_id, e.subscription_id
            ),
            email_id: e.subscription_id,
            channel_id: e.channel_id,
            to: e.email,
            description: e.description,
            status,
            confirmed: e.confirmed_at.is_some(),
            confirmed_at: e.confirmed_at,
            confirmation_sent_at: e.confirmation_sent_at,
            confirmation_expires_at: e.confirm_expires_at,
            unsubscribed_at: e.unsubscribed_at,
            disabled_reason: e.disabled_reason,
            failing_since: e.failing_since,
            last_sent_at: e.last_sent_at,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// A new subscription, and when its confirmation can be sent if it was not.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEmail {
    /// The subscription.
    #[serde(flatten)]
    pub email: EmailBody,
    /// When the confirmation was held back (the address had one within
    /// `TDC_EMAIL_CONFIRM_RESEND_SECS`): from when a resend is accepted.
    pub confirmation_retry_at: Option<DateTime<Utc>>,
}

fn channel_id(raw: &str) -> Result<Uuid, ApiError> {
    ApiError::id_in_path(raw, "channel")
}

fn email_path(path: &(String, String)) -> Result<(Uuid, Uuid), ApiError> {
    Ok((
        channel_id(&path.0)?,
        ApiError::id_in_path(&path.1, "e-mail subscription")?,
    ))
}

/// 503 `email_not_configured` unless the operator configured SMTP.
fn require_smtp(state: &AppState) -> Result<(), ApiError> {
    if state.mailer_configured {
        Ok(())
    } else {
        Err(ApiError::Unavailable {
            code: "email_not_configured",
            detail: "this service sends no e-mail: the operator has not set TDC_SMTP_URL and \
                     TDC_SMTP_FROM"
                .to_owned(),
        })
    }
}

fn pacing(state: &AppState) -> Pacing {
    Pacing {
        ttl: state.settings.email_confirm_ttl,
        resend: state.settings.email_confirm_resend,
        per_tenant_per_hour: state.settings.email_confirmations_per_tenant_per_hour,
        per_address_per_hour: state.settings.email_confirmations_per_address_per_hour,
    }
}

fn checked_description(description: Option<&str>) -> Result<Option<&str>, ApiError> {
    match description {
        Some(d) if d.chars().count() > MAX_DESCRIPTION_CHARS => Err(ApiError::bad_request(
            "invalid_description",
            format!("the description is longer than {MAX_DESCRIPTION_CHARS} characters"),
        )),
        Some(d) if d.contains('\0') => Err(ApiError::bad_request(
            "invalid_description",
            "the description contains a NUL character",
        )),
        other => Ok(other),
    }
}

/// Subscribe an address to a channel's events by e-mail.
///
/// The address receives one confirmation message with a link, and nothing else until the
/// recipient confirms through it. Addresses are counted normalised (case, `+tag` and dots of
/// the local part ignored). One tenant sends at most one confirmation to an address per
/// `TDC_EMAIL_CONFIRM_RESEND_SECS`, and an address gets at most
/// `TDC_EMAIL_CONFIRMATIONS_PER_ADDRESS_PER_HOUR` over every tenant: past either, the
/// subscription is created without one (`confirmation_sent_at` null, `confirmation_retry_at`
/// says when to resend). A tenant may have `TDC_EMAIL_CONFIRMATIONS_PER_TENANT_PER_HOUR`
/// confirmations sent per rolling hour: past it, 429. An address whose recipient followed an
/// unsubscribe link is refused for good: 409 `email_suppressed`, nothing created (the attempt
/// counts toward the hourly budget).
#[utoipa::path(post, path = "/channels/{id}/emails/", tag = "emails", request_body = CreateEmail,
    params(("id" = Uuid, Path, description = "channel id")),
    responses((status = 201, body = CreatedEmail),
        (status = 400, body = Problem, description = "`invalid_email` (the problem's `field` is `to`), `invalid_description`"),
        (status = 404, body = Problem),
        (status = 409, body = Problem, description = "`too_many_emails` on the channel, `too_many_subscriptions` for the tenant, `email_suppressed`: the recipient refused mail from this service"),
        (status = 429, body = Problem, description = "`too_many_confirmations`: the tenant's confirmation messages in the last hour reached `TDC_EMAIL_CONFIRMATIONS_PER_TENANT_PER_HOUR` (`Retry-After`, `retry_at`)"),
        (status = 503, body = Problem, description = "`email_not_configured`: the operator has not configured SMTP")),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, channel = %path.as_str()))]
pub async fn create_email(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    body: web::Json<CreateEmail>,
) -> Result<HttpResponse, ApiError> {
    let channel = channel_id(&path)?;
    require_smtp(&state)?;
    let address = recipient::parse(&body.to).map_err(|why| {
        ApiError::bad_request("invalid_email", why).with_members(json!({"field": "to"}))
    })?;
    let description = checked_description(body.description.as_deref())?;
    let limits = Limits {
        per_channel: state.settings.max_emails_per_channel,
        per_tenant: state.settings.max_subscriptions_per_tenant,
    };
    let (row, queued) = email_store::create(
        &state.pool,
        user.user_id,
        channel,
        address.as_ref(),
        description,
        limits,
        pacing(&state),
    )
    .await?;
    Ok(HttpResponse::Created().json(CreatedEmail {
        email: row.into(),
        confirmation_retry_at: match queued {
            Queued::Yes => None,
            Queued::NotBefore(at) => Some(at),
        },
    }))
}

/// A channel's e-mail subscriptions.
#[utoipa::path(get, path = "/channels/{id}/emails/", tag = "emails",
    params(("id" = Uuid, Path, description = "channel id")),
    responses((status = 200, body = Vec<EmailBody>), (status = 404, body = Problem)),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, channel = %path.as_str()))]
pub async fn list_emails(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let channel = crate::channels::store::find(&state.pool, user.user_id, channel_id(&path)?)
        .await?
        .channel_id;
    let emails: Vec<EmailBody> = email_store::list(&state.pool, user.user_id, channel)
        .await?
        .into_iter()
        .map(EmailBody::from)
        .collect();
    Ok(HttpResponse::Ok().json(emails))
}

/// One e-mail subscription.
#[utoipa::path(get, path = "/channels/{id}/emails/{eid}/", tag = "emails",
    params(("id" = Uuid, Path, description = "channel id"), ("eid" = Uuid, Path, description = "e-mail subscription id")),
    responses((status = 200, body = EmailBody), (status = 404, body = Problem)),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, email = %path.1))]
pub async fn describe_email(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (channel, email) = email_path(&path)?;
    let row = email_store::find(&state.pool, user.user_id, channel, email).await?;
    Ok(HttpResponse::Ok().json(EmailBody::from(row)))
}

/// Change an e-mail subscription's description, pause it or resume it.
///
/// A paused subscription's events are queued and held; resuming sends them (in one message,
/// within the interval). One the recipient unsubscribed from cannot be resumed.
#[utoipa::path(patch, path = "/channels/{id}/emails/{eid}/", tag = "emails", request_body = UpdateEmail,
    params(("id" = Uuid, Path, description = "channel id"), ("eid" = Uuid, Path, description = "e-mail subscription id")),
    responses((status = 200, body = EmailBody),
        (status = 400, body = Problem, description = "`invalid_description`, `invalid_email_update` (`status` and `paused` disagree)"),
        (status = 404, body = Problem),
        (status = 409, body = Problem, description = "`email_unsubscribed`: the recipient unsubscribed")),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, email = %path.1))]
pub async fn update_email(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(String, String)>,
    body: web::Json<UpdateEmail>,
) -> Result<HttpResponse, ApiError> {
    let (channel, email) = email_path(&path)?;
    let body = body.into_inner();
    let paused = body.paused.map(|paused| {
        if paused {
            SettableStatus::Paused
        } else {
            SettableStatus::Active
        }
    });
    let status = match (body.status, paused) {
        (Some(status), Some(paused)) if status.as_str() != paused.as_str() => {
            return Err(ApiError::bad_request(
                "invalid_email_update",
                "status and paused disagree; send one of them",
            ));
        }
        (status, paused) => status.or(paused),
    };
    let description = match &body.description {
        Some(d) => Some(checked_description(d.as_deref())?),
        None => None,
    };
    let row = email_store::update(
        &state.pool,
        user.user_id,
        channel,
        email,
        description,
        status.map(SettableStatus::as_str),
    )
    .await?;
    Ok(HttpResponse::Ok().json(EmailBody::from(row)))
}

/// Delete an e-mail subscription and its delivery log.
#[utoipa::path(delete, path = "/channels/{id}/emails/{eid}/", tag = "emails",
    params(("id" = Uuid, Path, description = "channel id"), ("eid" = Uuid, Path, description = "e-mail subscription id")),
    responses((status = 204), (status = 404, body = Problem)),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, email = %path.1))]
pub async fn delete_email(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (channel, email) = email_path(&path)?;
    email_store::delete(&state.pool, user.user_id, channel, email).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Send the confirmation message again, with a new link (earlier links stop working).
///
/// The limits of creation apply: within this tenant's `TDC_EMAIL_CONFIRM_RESEND_SECS` for the
/// address, or past the address's hourly cap, 429 `too_many_requests`; past the tenant's
/// hourly budget, 429 `too_many_confirmations`; both with `Retry-After` and `retry_at`.
#[utoipa::path(post, path = "/channels/{id}/emails/{eid}/resend-confirmation/", tag = "emails",
    params(("id" = Uuid, Path, description = "channel id"), ("eid" = Uuid, Path, description = "e-mail subscription id")),
    responses((status = 202, body = EmailBody), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "`email_already_confirmed`, `email_unsubscribed`, `email_suppressed`"),
        (status = 429, body = Problem, description = "`too_many_requests`: the address had a confirmation from this tenant within the interval, or its hourly cap; `too_many_confirmations`: the tenant's hourly budget"),
        (status = 503, body = Problem, description = "`email_not_configured`")),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, email = %path.1))]
pub async fn resend_confirmation(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (channel, email) = email_path(&path)?;
    require_smtp(&state)?;
    let row =
        email_store::resend(&state.pool, user.user_id, channel, email, pacing(&state)).await?;
    Ok(HttpResponse::Accepted().json(EmailBody::from(row)))
}

/// An e-mail subscription's delivery log, newest first: one entry per event (the events a
/// message listed share its outcome) and one per confirmation message.
#[utoipa::path(get, path = "/channels/{id}/emails/{eid}/deliveries/", tag = "emails",
    params(("id" = Uuid, Path, description = "channel id"), ("eid" = Uuid, Path, description = "e-mail subscription id"), DeliveriesQuery),
    responses((status = 200, body = DeliveriesPage),
        (status = 400, body = Problem, description = "`invalid_limit`, `invalid_cursor`"),
        (status = 404, body = Problem)),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, email = %path.1))]
pub async fn list_email_deliveries(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(String, String)>,
    query: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let (channel, email) = email_path(&path)?;
    let position = query.position(email)?;
    let row = email_store::find(&state.pool, user.user_id, channel, email).await?;
    let page = crate::notify::log::page(&state.pool, row.subscription_id, position).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Send an event delivery that succeeded or failed again (in the next message).
#[utoipa::path(post, path = "/channels/{id}/emails/{eid}/deliveries/{did}/retry/", tag = "emails",
    params(("id" = Uuid, Path, description = "channel id"), ("eid" = Uuid, Path, description = "e-mail subscription id"),
        ("did" = Uuid, Path, description = "delivery id")),
    responses((status = 202, body = DeliveryQueued), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "`delivery_pending`; `confirmation_not_retried` (use resend-confirmation)"),
        (status = 503, body = Problem, description = "`email_not_configured`")),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, email = %path.1, delivery = %path.2))]
pub async fn retry_email_delivery(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let channel = channel_id(&path.0)?;
    let email = ApiError::id_in_path(&path.1, "e-mail subscription")?;
    let delivery_id = ApiError::id_in_path(&path.2, "delivery")?;
    require_smtp(&state)?;
    email_store::retry(&state.pool, user.user_id, channel, email, delivery_id).await?;
    Ok(HttpResponse::Accepted().json(DeliveryQueued { delivery_id }))
}

fn page(title: &str, text: &str, action: Option<&str>, button: &str) -> Result<String, ApiError> {
    mailer::render(
        "page.html",
        minijinja::context! { title, text, action, button },
    )
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("rendering a page failed: {e}")))
}

fn html(status: actix_web::http::StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(ContentType::html())
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("X-Robots-Tag", "noindex"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; form-action 'self'",
        ))
        .body(body)
}

fn link_error(e: LinkError) -> ApiError {
    match e {
        LinkError::Invalid => ApiError::NotFound {
            detail: e.to_string(),
        },
        LinkError::Expired => ApiError::Conflict {
            code: "link_expired",
            detail: e.to_string(),
        },
        LinkError::Database(e) => e.into(),
    }
}

fn key(state: &AppState) -> &LinkKey {
    &state.links
}

/// The page of a confirmation link: what it is about and a button; it confirms nothing (mail
/// scanners fetch links).
#[utoipa::path(get, path = "/emails/confirm/{token}", tag = "emails",
    params(("token" = String, Path, description = "the token of the confirmation link")),
    responses((status = 200, content_type = "text/html", body = String, description = "a page whose button POSTs the confirmation"),
        (status = 404, body = Problem, description = "not a valid link (used, replaced, mistyped)"),
        (status = 409, body = Problem, description = "`link_expired`")))]
pub async fn confirm_page(
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    email_store::check(&state.pool, key(&state), Purpose::Confirm, &token)
        .await
        .map_err(link_error)?;
    let body = page(
        "Confirm e-mail notifications",
        "Press the button to receive e-mail notifications of a tinydevcrm channel at this address.",
        Some(&format!("{}{}", Purpose::Confirm.path(), token.as_str())),
        "Confirm",
    )?;
    Ok(html(actix_web::http::StatusCode::OK, body))
}

/// Confirm an e-mail subscription (the button of the confirmation page). The link works once.
#[utoipa::path(post, path = "/emails/confirm/{token}", tag = "emails",
    params(("token" = String, Path, description = "the token of the confirmation link")),
    responses((status = 200, content_type = "text/html", body = String, description = "confirmed"),
        (status = 404, body = Problem, description = "not a valid link (used, replaced, mistyped)"),
        (status = 409, body = Problem, description = "`link_expired`")))]
pub async fn confirm(
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let outcome = email_store::follow(&state.pool, key(&state), Purpose::Confirm, &token)
        .await
        .map_err(link_error)?;
    debug_assert_eq!(outcome, LinkOutcome::Confirmed);
    let body = page(
        "Confirmed",
        "This address now receives the channel's notifications. Every message has a link to stop them.",
        None,
        "",
    )?;
    Ok(html(actix_web::http::StatusCode::OK, body))
}

/// The page of an unsubscribe link: a button; it changes nothing.
#[utoipa::path(get, path = "/emails/unsubscribe/{token}", tag = "emails",
    params(("token" = String, Path, description = "the token of the unsubscribe link")),
    responses((status = 200, content_type = "text/html", body = String, description = "a page whose button POSTs the unsubscription"),
        (status = 404, body = Problem, description = "not a valid link")))]
pub async fn unsubscribe_page(
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    email_store::check(&state.pool, key(&state), Purpose::Unsubscribe, &token)
        .await
        .map_err(link_error)?;
    let body = page(
        "Stop e-mail notifications",
        "Press the button and this address receives no more messages from this subscription, \
         and no tinydevcrm user can subscribe it again (no more confirmation requests either).",
        Some(&format!(
            "{}{}",
            Purpose::Unsubscribe.path(),
            token.as_str()
        )),
        "Unsubscribe",
    )?;
    Ok(html(actix_web::http::StatusCode::OK, body))
}

/// Unsubscribe (the page's button, or a mail client's RFC 8058 one-click `POST` with the body
/// `List-Unsubscribe=One-Click`). Repeating it answers the same.
#[utoipa::path(post, path = "/emails/unsubscribe/{token}", tag = "emails",
    params(("token" = String, Path, description = "the token of the unsubscribe link")),
    responses((status = 200, content_type = "text/html", body = String, description = "unsubscribed"),
        (status = 404, body = Problem, description = "not a valid link")))]
pub async fn unsubscribe(
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    email_store::follow(&state.pool, key(&state), Purpose::Unsubscribe, &token)
        .await
        .map_err(link_error)?;
    let body = page(
        "Unsubscribed",
        "This address receives no more messages from this subscription, and no tinydevcrm \
         user can subscribe it again.",
        None,
        "",
    )?;
    Ok(html(actix_web::http::StatusCode::OK, body))
}
