//! Handlers of `/channels/...`, with the Server-Sent Events stream.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, Responder, web};
use actix_web_lab::sse;
use bytestring::ByteString;
use chrono::Utc;
use serde::Deserialize;
use sqlx::PgPool;
use tokio::sync::broadcast;
use utoipa::ToSchema;
use uuid::Uuid;

use super::events;
use super::hub::{HubEvent, SessionEnd, SessionWatch};
use super::store::{self, ChannelBody};
use crate::auth::extract::{AuthUser, authenticate_claims};
use crate::auth::jwt::TokenType;
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

fn channel_id(raw: &str) -> Result<Uuid, ApiError> {
    ApiError::id_in_path(raw, "channel")
}

/// Create a channel that gets an event at every refresh of a view.
#[utoipa::path(post, path = "/channels/create/", tag = "channels", request_body = CreateChannel,
    responses((status = 201, body = ChannelBody), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("jwt" = [])))]
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
    responses((status = 200, body = Vec<ChannelBody>)), security(("jwt" = [])))]
pub async fn list_channels(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let channels: Vec<ChannelBody> = store::list(&state.pool, user.user_id, None)
        .await?
        .into_iter()
        .map(ChannelBody::from)
        .collect();
    Ok(HttpResponse::Ok().json(channels))
}

/// One channel.
#[utoipa::path(get, path = "/channels/{id}/", tag = "channels",
    params(("id" = Uuid, Path, description = "channel id")),
    responses((status = 200, body = ChannelBody), (status = 404, body = Problem)), security(("jwt" = [])))]
pub async fn describe_channel(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let channel = store::find(&state.pool, user.user_id, channel_id(&path)?).await?;
    Ok(HttpResponse::Ok().json(ChannelBody::from(channel)))
}

/// Delete a channel (its open streams end).
#[utoipa::path(delete, path = "/channels/{id}/", tag = "channels",
    params(("id" = Uuid, Path, description = "channel id")),
    responses((status = 204), (status = 404, body = Problem)), security(("jwt" = [])))]
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
/// Sends `Last-Event-ID`'s missed events first (a `reset` event when they were deleted by
/// retention), then live ones; heartbeat comments; ends when the access token expires
/// (`token_expired` event), when its session is revoked by logout or refresh-token reuse on any
/// process (`revoked` event, within a second) or found expired (`session_expired` event), or
/// when the client is too slow for its queue (it reconnects with `Last-Event-ID` and replays).
#[utoipa::path(get, path = "/channels/{id}/listen/", tag = "channels",
    params(("id" = Uuid, Path, description = "channel id"),
        ("access_token" = Option<String>, Query, description = "for EventSource, which cannot send headers"),
        ("Last-Event-ID" = Option<i64>, Header, description = "resume after this event")),
    responses((status = 200, description = "text/event-stream", content_type = "text/event-stream"),
        (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("jwt" = [])))]
pub async fn listen(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<impl Responder, ApiError> {
    let token = header_or_query_token(&req)?;
    let claims = state.jwt.verify(&token, TokenType::Access)?;
    // Registered before the session is checked: a revocation committed after the check is
    // announced to this registration, one committed before it fails the check.
    let session = state.hub.watch_session(claims.sid);
    let user = authenticate_claims(&state, claims).await?;
    if session.ended().is_some() {
        return Err(ApiError::unauthorized(
            "token_revoked",
            "the session of this token has been revoked",
        ));
    }
    let channel = store::find(&state.pool, user.user_id, channel_id(&path)?).await?;
    let last_event_id = match req.headers().get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|id| *id >= 0)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_last_event_id",
                        "Last-Event-ID must be an event id (a non-negative integer)",
                    )
                })?,
        ),
    };
    let receiver = state.hub.subscribe(channel.channel_id, channel.last_seq);
    let mut backlog = VecDeque::new();
    let cursor = match last_event_id {
        Some(id) if id < channel.pruned_through || id > channel.last_seq => {
            // Events after `id` are gone (or never were): the client must start over.
            backlog.push_back(Outgoing::Reset {
                data: ByteString::from(
                    serde_json::json!({
                        "channel_id": channel.channel_id,
                        "last_event_id": id,
                        "oldest_event_id": channel.pruned_through + 1,
                        "current_event_id": channel.last_seq,
                    })
                    .to_string(),
                ),
                seq: channel.last_seq,
            });
            channel.last_seq
        }
        Some(id) => id,
        None => channel.last_seq,
    };
    let now = Utc::now().timestamp();
    let token_left = Duration::from_secs(u64::try_from(user.expires_at - now).unwrap_or(0));
    metrics::gauge!("tdc_sse_streams").increment(1.0);
    let stream = futures_util::stream::unfold(
        Listening {
            pool: state.pool.clone(),
            channel_id: channel.channel_id,
            backlog,
            replaying: true,
            sent: cursor,
            receiver,
            expires: Box::pin(tokio::time::sleep(token_left)),
            session,
            done: false,
            _gauge: StreamGauge,
        },
        next_event,
    );
    Ok(sse::Sse::from_infallible_stream(stream)
        .with_keep_alive(state.settings.sse_heartbeat)
        .with_retry_duration(Duration::from_secs(3))
        .customize()
        .insert_header((
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        )))
}

/// Keeps `tdc_sse_streams` right however a stream ends.
struct StreamGauge;

impl Drop for StreamGauge {
    fn drop(&mut self) {
        metrics::gauge!("tdc_sse_streams").decrement(1.0);
    }
}

enum Outgoing {
    Event(Arc<HubEvent>),
    Reset { data: ByteString, seq: i64 },
}

struct Listening {
    pool: PgPool,
    channel_id: Uuid,
    backlog: VecDeque<Outgoing>,
    /// Still reading missed events from the table.
    replaying: bool,
    /// The last event id sent (or skipped as already seen).
    sent: i64,
    receiver: broadcast::Receiver<Arc<HubEvent>>,
    expires: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// The access token's session: its revocation ends the stream.
    session: SessionWatch,
    done: bool,
    _gauge: StreamGauge,
}

fn refresh_event(event: &HubEvent) -> sse::Event {
    sse::Event::Data(
        sse::Data::new(event.data.clone())
            .event("refresh")
            .id(event.seq.to_string()),
    )
}

/// The last event of a stream whose session ended; the client must log in again rather than
/// reconnect with the same token.
fn session_ended_event(why: SessionEnd) -> sse::Event {
    let (name, data) = match why {
        SessionEnd::Revoked => (
            "revoked",
            "{\"code\":\"token_revoked\",\"detail\":\"the session of this stream was revoked (logout or refresh-token reuse); log in again\"}",
        ),
        SessionEnd::Expired => (
            "session_expired",
            "{\"code\":\"token_revoked\",\"detail\":\"the session of this stream expired; log in again\"}",
        ),
    };
    sse::Event::Data(sse::Data::new(data).event(name))
}

/// The stream's state machine: replay from the table, then live from the hub (skipping what
/// the replay already sent), until the token expires, the session is revoked, the channel goes,
/// or the client lags. A revoked session wins over anything still queued: nothing is sent after
/// the hub learns of the revocation.
async fn next_event(mut s: Listening) -> Option<(sse::Event, Listening)> {
    if s.done {
        return None;
    }
    loop {
        if let Some(why) = s.session.ended() {
            s.done = true;
            return Some((session_ended_event(why), s));
        }
        if let Some(out) = s.backlog.pop_front() {
            return Some(match out {
                Outgoing::Event(event) => {
                    s.sent = event.seq;
                    (refresh_event(&event), s)
                }
                Outgoing::Reset { data, seq } => {
                    s.sent = seq;
                    (
                        sse::Event::Data(sse::Data::new(data).event("reset").id(seq.to_string())),
                        s,
                    )
                }
            });
        }
        if s.replaying {
            match events::page_after(&s.pool, s.channel_id, s.sent).await {
                Ok(page) => {
                    s.replaying = page.more;
                    if !page.events.is_empty()
                        && let Err(e) = s.session.confirm().await
                    {
                        tracing::warn!(error = %e, "listen: checking the session failed; ending the stream");
                        return None;
                    }
                    s.backlog.extend(page.events.into_iter().map(|e| {
                        Outgoing::Event(Arc::new(HubEvent {
                            seq: e.seq,
                            data: ByteString::from(e.data),
                        }))
                    }));
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listen: replay failed; ending the stream");
                    return None;
                }
            }
        }
        tokio::select! {
            biased;
            () = s.session.changed() => {}
            () = &mut s.expires => {
                s.done = true;
                let data = sse::Data::new("{\"detail\":\"the access token expired; reconnect with a fresh one and Last-Event-ID\"}")
                    .event("token_expired");
                return Some((sse::Event::Data(data), s));
            }
            received = s.receiver.recv() => match received {
                Ok(event) if event.seq <= s.sent => {}
                Ok(event) if event.seq == s.sent + 1 => {
                    s.sent = event.seq;
                    return Some((refresh_event(&event), s));
                }
                // A gap (this stream fell behind the hub): replay it from the table.
                Ok(event) => {
                    s.replaying = true;
                    drop(event);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow for its queue: end it; the client resumes from Last-Event-ID.
                    metrics::counter!("tdc_sse_lagged_total").increment(1);
                    return None;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64) -> Arc<HubEvent> {
        Arc::new(HubEvent {
            seq,
            data: ByteString::from_static("{}"),
        })
    }

    fn lazy_pool() -> PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("lazy pool")
    }

    fn state(receiver: broadcast::Receiver<Arc<HubEvent>>, sent: i64) -> Listening {
        let hub = super::super::hub::Hub::new(lazy_pool(), 16, Duration::from_secs(3600));
        state_in(&hub, Uuid::nil(), receiver, sent)
    }

    fn state_in(
        hub: &Arc<super::super::hub::Hub>,
        session_id: Uuid,
        receiver: broadcast::Receiver<Arc<HubEvent>>,
        sent: i64,
    ) -> Listening {
        Listening {
            // Never used: nothing is replayed in these tests.
            pool: lazy_pool(),
            channel_id: Uuid::nil(),
            backlog: VecDeque::new(),
            replaying: false,
            sent,
            receiver,
            expires: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            session: hub.watch_session(session_id),
            done: false,
            _gauge: StreamGauge,
        }
    }

    fn id_of(e: &sse::Event) -> String {
        format!("{e:?}")
    }

    #[tokio::test]
    async fn live_events_skip_what_was_already_sent() {
        let (sender, receiver) = broadcast::channel(16);
        for seq in 1..=4 {
            sender.send(event(seq)).expect("send");
        }
        let (first, s) = next_event(state(receiver, 2)).await.expect("an event");
        assert!(id_of(&first).contains("\"3\""), "{first:?}");
        let (second, _) = next_event(s).await.expect("an event");
        assert!(id_of(&second).contains("\"4\""), "{second:?}");
    }

    #[tokio::test]
    async fn a_listener_further_behind_than_its_queue_is_ended() {
        let (sender, receiver) = broadcast::channel(2);
        for seq in 1..=5 {
            sender.send(event(seq)).expect("send");
        }
        assert!(next_event(state(receiver, 0)).await.is_none());
    }

    #[tokio::test]
    async fn the_stream_ends_when_the_channel_goes() {
        let (sender, receiver) = broadcast::channel(2);
        drop(sender);
        assert!(next_event(state(receiver, 0)).await.is_none());
    }

    #[tokio::test]
    async fn a_revoked_session_ends_its_stream_before_anything_queued_and_spares_other_sessions() {
        let hub = super::super::hub::Hub::new(lazy_pool(), 16, Duration::from_secs(3600));
        let (revoked, kept) = (Uuid::new_v4(), Uuid::new_v4());
        let (sender, receiver) = broadcast::channel(16);
        let mine = state_in(&hub, revoked, receiver, 0);
        let other = state_in(&hub, kept, sender.subscribe(), 0);
        hub.end_session(revoked, SessionEnd::Revoked);
        sender.send(event(1)).expect("send");
        let (last, mine) = next_event(mine).await.expect("a final event");
        assert!(format!("{last:?}").contains("revoked"), "{last:?}");
        assert!(next_event(mine).await.is_none());
        let (first, _) = next_event(other).await.expect("an event");
        assert!(id_of(&first).contains("\"1\""), "{first:?}");
    }

    #[tokio::test]
    async fn a_stream_waiting_for_events_wakes_up_when_its_session_is_revoked() {
        let hub = super::super::hub::Hub::new(lazy_pool(), 16, Duration::from_secs(3600));
        let session = Uuid::new_v4();
        let (_sender, receiver) = broadcast::channel(16);
        let waiting = tokio::spawn(next_event(state_in(&hub, session, receiver, 0)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        hub.end_session(session, SessionEnd::Expired);
        let (last, _) = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken within a second")
            .expect("joined")
            .expect("a final event");
        assert!(format!("{last:?}").contains("session_expired"), "{last:?}");
    }
}
