//! Handlers of `/channels/...`; the listen handler answers with the stream of
//! `channels::stream`.

use std::time::Duration;

use std::convert::Infallible;

use actix_web::http::header::{
    CacheControl, CacheDirective, ContentEncoding, HeaderName, HeaderValue,
};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use futures_util::StreamExt as _;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::store::{self, ChannelBody};
use super::stream::Listening;
use crate::auth::caller::{Caller, Granted};
use crate::auth::extract::{AuthUser, authenticate_claims};
use crate::auth::jwt::TokenType;
use crate::auth::keys::{Scope, is_key};
use crate::auth::query_token::header_or_query_token;
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use crate::views::store::lookup_name;

/// The body of `POST /channels/create/`: a job (its view is watched) or a view.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    /// Watch the view this job refreshes.
    pub job_id: Option<String>,
    /// Watch this view.
    pub view_name: Option<String>,
}

// The document's view of `CreateChannel`, whose handler rejects anything else.
/// What a channel watches: exactly one of `job_id` and `view_name`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CreateChannelDoc {
    /// Watch the view a job refreshes.
    Job(ChannelOfJob),
    /// Watch a view.
    View(ChannelOfView),
}

/// A channel on the view a job refreshes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelOfJob {
    /// The job's id.
    pub job_id: Uuid,
}

/// A channel on a view.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelOfView {
    /// The view's name.
    #[schema(min_length = 1)]
    pub view_name: String,
}

/// The longest a stream on a key without expiry stays open: a year.
const MAX_STREAM_SECS: u64 = 365 * 24 * 3600;

fn channel_id(raw: &str) -> Result<Uuid, ApiError> {
    ApiError::id_in_path(raw, "channel")
}

/// Create a channel that gets an event at every refresh of a view.
#[utoipa::path(post, path = "/channels/create/", tag = "channels", request_body = CreateChannelDoc,
    responses((status = 201, body = ChannelBody), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "the tenant has its most channels")),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id))]
pub async fn create_channel(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<CreateChannel>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let (view_id, job_id) = match (&body.job_id, &body.view_name) {
        (Some(job), None) => {
            let job = crate::jobs::store::find(
                &state.pool,
                user.user_id,
                crate::jobs::store::job_id(job)?,
            )
            .await?;
            (job.view_id, Some(job.job_id))
        }
        (None, Some(view)) => {
            let name = lookup_name(view.trim())?;
            let view = crate::views::store::find(&state.pool, user.user_id, &name).await?;
            (view.view_id, None)
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_channel",
                "send exactly one of job_id and view_name",
            ));
        }
    };
    let channel = store::create(
        &state.pool,
        user.user_id,
        view_id,
        job_id,
        state.settings.max_channels_per_tenant,
    )
    .await?;
    Ok(HttpResponse::Created().json(ChannelBody::from(channel)))
}

/// The caller's channels.
#[utoipa::path(get, path = "/channels/", tag = "channels",
    responses((status = 200, body = Vec<ChannelBody>)), security(("jwt" = []), ("api_key" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %caller.user_id()))]
pub async fn list_channels(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let user = caller.require(Scope::List)?;
    let channels: Vec<ChannelBody> = store::list(&state.pool, user.user_id, None)
        .await?
        .into_iter()
        .map(ChannelBody::from)
        .collect();
    Ok(HttpResponse::Ok().json(channels))
}

/// One channel. A key that may listen to it may read it (a dashboard finds its view's name).
#[utoipa::path(get, path = "/channels/{id}/", tag = "channels",
    params(("id" = Uuid, Path, description = "channel id")),
    responses((status = 200, body = ChannelBody), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("jwt" = []), ("api_key" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %caller.user_id(), channel = %path.as_str()))]
pub async fn describe_channel(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = channel_id(&path)?;
    let user = caller.require(Scope::ChannelsListen(id))?;
    let channel = store::find(&state.pool, user.user_id, id).await?;
    Ok(HttpResponse::Ok().json(ChannelBody::from(channel)))
}

/// Delete a channel (its open streams end).
#[utoipa::path(delete, path = "/channels/{id}/", tag = "channels",
    params(("id" = Uuid, Path, description = "channel id")),
    responses((status = 204), (status = 404, body = Problem)), security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, channel = %path.as_str()))]
pub async fn delete_channel(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    store::delete(&state.pool, user.user_id, channel_id(&path)?).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Listen: `text/event-stream`, one `refresh` event per refresh of the watched view.
///
/// Sends the missed events after `Last-Event-ID` (or `?last_event_id=`) first (a `reset` event when they were deleted by
/// retention), then live ones; heartbeat comments; ends when the access token expires
/// (`token_expired` event), when its session is revoked by logout or refresh-token reuse on any
/// process (`revoked` event, within a second) or found expired (`session_expired` event), or
/// when the client is too slow for its queue (it reconnects with `Last-Event-ID` and replays).
#[utoipa::path(get, path = "/channels/{id}/listen/", tag = "channels",
    params(("id" = Uuid, Path, description = "channel id"),
        ("access_token" = Option<String>, Query, description = "for EventSource, which cannot send headers"),
        ("last_event_id" = Option<i64>, Query, nullable = false, minimum = 0, description = "resume after this event, for a new EventSource (the header wins)"),
        ("Last-Event-ID" = Option<i64>, Header, nullable = false, minimum = 0, description = "resume after this event")),
    responses((status = 200, description = "text/event-stream", content_type = "text/event-stream"),
        (status = 400, body = Problem, description = "`Last-Event-ID` is not an event id"),
        (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 429, body = Problem, description = "the tenant has as many streams open as it may, or the API key its requests this minute")),
    security(("jwt" = []), ("api_key" = [])))]
#[tracing::instrument(skip_all, fields(channel = %path.as_str(), user_id = tracing::field::Empty))]
pub async fn listen(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let token = header_or_query_token(&req)?;
    let (user, session, expires_at, key_slot) = if is_key(&token) {
        let caller = Caller::from_token(&state, &req, &token).await?;
        let user = caller.require(Scope::ChannelsListen(channel_id(&path)?))?;
        let Caller::Key(key) = caller else {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "BUG: a key authenticated as a session"
            )));
        };
        // The key was read (or remembered) before this registration: re-read it after, so a
        // revocation is either seen here or announced to the registration.
        let session = state.hub.watch_session(key.key_id);
        session.confirm().await.map_err(ApiError::Internal)?;
        let expires_at = key.expires_at.map_or(i64::MAX, |at| at.timestamp());
        // A key's streams come out of its tenant's: at most its own share of them.
        let key_slot = state.key_stream_slots.admit_for(&key.key_id.to_string())?;
        (user, session, expires_at, Some(key_slot))
    } else {
        let claims = state.jwt.verify(&token, TokenType::Access)?;
        // Registered before the session is checked: a revocation committed after the check is
        // announced to this registration, one committed before it fails the check.
        let session = state.hub.watch_session(claims.sid);
        let user = authenticate_claims(&state, claims).await?;
        crate::telemetry::record_caller(&req, user.user_id, user.tenant.as_str());
        let expires_at = user.expires_at;
        (
            Granted {
                user_id: user.user_id,
                tenant: user.tenant,
            },
            session,
            expires_at,
            None,
        )
    };
    tracing::Span::current().record("user_id", tracing::field::display(user.user_id));
    if session.ended().is_some() {
        return Err(ApiError::unauthorized(
            "token_revoked",
            "the session or API key of this token has been revoked",
        ));
    }
    let channel = store::find(&state.pool, user.user_id, channel_id(&path)?).await?;
    let last_event_id = last_event_id(&req)?;
    // Held as long as the stream: a tenant's streams take at most their share of sockets.
    let slot = state.stream_slots.admit(&user.tenant)?;
    let receiver = state.hub.subscribe(channel.channel_id, channel.last_seq);
    let now = Utc::now().timestamp();
    // A key without expiry: a stream still ends some day (tokio caps far deadlines anyway).
    let token_left = Duration::from_secs(
        u64::try_from(expires_at.saturating_sub(now))
            .unwrap_or(0)
            .min(MAX_STREAM_SECS),
    );
    let stream = Listening::new(
        state.pool.clone(),
        &channel,
        last_event_id,
        receiver,
        session,
        state.heartbeat.receiver(),
        std::iter::once(slot).chain(key_slot).collect(),
        token_left,
    )
    .into_stream()
    .map(Ok::<_, Infallible>);
    // The frames are ready-made bytes (shared by every listener of an event); the body sends
    // them as they come.
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(ContentEncoding::Identity)
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .insert_header((
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ))
        .streaming(stream))
}

/// Where to resume: the `Last-Event-ID` header, else the `?last_event_id=` query parameter (a
/// browser cannot set the header on a new `EventSource`). The header wins: `EventSource` sends
/// it when it reconnects by itself, with the newest id it saw, while the URL keeps the id the
/// stream was opened with. Either, when present, must be an event id (400 otherwise); sent more
/// than once (two headers, a repeated parameter), every copy must be an event id and the same
/// one, rather than the first silently winning.
fn last_event_id(req: &HttpRequest) -> Result<Option<i64>, ApiError> {
    let header = agreed(
        "Last-Event-ID",
        req.headers()
            .get_all("last-event-id")
            .map(|v| v.to_str().ok().and_then(event_id)),
    )?;
    let query = agreed(
        "last_event_id",
        serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
            .unwrap_or_default()
            .into_iter()
            .filter(|(key, _)| key == "last_event_id")
            .map(|(_, value)| event_id(&value)),
    )?;
    Ok(header.or(query))
}

/// The one event id all copies of `what` give (`None` for no copy): each must be an event id,
/// and all the same.
fn agreed(what: &str, ids: impl Iterator<Item = Option<i64>>) -> Result<Option<i64>, ApiError> {
    let mut agreed = None;
    for id in ids {
        let id = id.ok_or_else(|| invalid_last_event_id(what))?;
        if agreed.is_some_and(|first| first != id) {
            return Err(ApiError::bad_request(
                "invalid_last_event_id",
                format!("{what} is sent more than once with different event ids; send it once"),
            ));
        }
        agreed = Some(id);
    }
    Ok(agreed)
}

/// A non-negative event id.
fn event_id(value: &str) -> Option<i64> {
    value.trim().parse::<i64>().ok().filter(|id| *id >= 0)
}

fn invalid_last_event_id(what: &str) -> ApiError {
    ApiError::bad_request(
        "invalid_last_event_id",
        format!("{what} must be an event id (a non-negative integer)"),
    )
}
