//! The listen stream of one client: a `futures::stream::unfold` state machine (no task per
//! client) that replays missed events from the table, then follows the hub's broadcast,
//! dropping what it already sent and replaying any gap, until the token expires, the session
//! ends, the channel goes or the client falls behind its queue.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix_web_lab::sse;
use bytestring::ByteString;
use futures_util::Stream;
use sqlx::PgPool;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::events;
use super::hub::{HubEvent, SessionEnd, SessionWatch};
use super::store::ChannelRow;

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

/// The state of one client's stream (see the module docs).
pub struct Listening {
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

impl Listening {
    /// A stream of `channel` for a client that last saw `last_event_id` (`None`: only what
    /// comes next). Events after it that retention deleted, or an id the channel never reached,
    /// start the stream with a `reset` event. `receiver` is already subscribed and the replay
    /// reads the table only afterwards, so no event falls between the replay and the live ones.
    pub fn new(
        pool: PgPool,
        channel: &ChannelRow,
        last_event_id: Option<i64>,
        receiver: broadcast::Receiver<Arc<HubEvent>>,
        session: SessionWatch,
        token_left: Duration,
    ) -> Self {
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
        metrics::gauge!("tdc_sse_streams").increment(1.0);
        Self {
            pool,
            channel_id: channel.channel_id,
            backlog,
            replaying: true,
            sent: cursor,
            receiver,
            expires: Box::pin(tokio::time::sleep(token_left)),
            session,
            done: false,
            _gauge: StreamGauge,
        }
    }

    /// The SSE events of this stream.
    pub fn into_stream(self) -> impl Stream<Item = sse::Event> + 'static {
        futures_util::stream::unfold(self, next_event)
    }
}

fn refresh_event(event: &HubEvent) -> sse::Event {
    metrics::counter!("tdc_sse_events_sent_total").increment(1);
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
                        tracing::warn!(
                            error = %format_args!("{e:#}"),
                            "listen: checking the session failed; ending the stream"
                        );
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
