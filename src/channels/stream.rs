//! The listen stream of one client: a `futures::stream::unfold` state machine (no task per
//! client) that replays missed events from the table, then follows the hub's broadcast,
//! dropping what it already sent and replaying any gap, until the token expires, the session
//! ends, the channel goes or the client falls behind its queue.
//!
//! It yields ready-made SSE frames (`Bytes`): a live event's frame was encoded once by the hub
//! and is shared by every stream; heartbeats come from the process's one [`Heartbeat`]. What a
//! stream keeps is this state (a few hundred bytes: rare, large futures such as a replay's
//! query are boxed only while they run) and actix-web's connection.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, broadcast, watch};
use uuid::Uuid;

use super::events;
use super::frame;
use super::hub::{HubEvent, SessionEnd, SessionWatch};
use super::store::ChannelRow;

/// Keeps `tdc_sse_streams` right however a stream ends.
struct StreamGauge;

impl Drop for StreamGauge {
    fn drop(&mut self) {
        metrics::gauge!("tdc_sse_streams").decrement(1.0);
    }
}

/// A frame waiting to be sent, and the event id it moves the stream to.
struct Queued {
    seq: i64,
    frame: Bytes,
    /// A `refresh` event (counted as sent), not a `reset`.
    refresh: bool,
}

/// The state of one client's stream (see the module docs).
pub struct Listening {
    pool: PgPool,
    channel_id: Uuid,
    backlog: VecDeque<Queued>,
    /// Still reading missed events from the table.
    replaying: bool,
    /// The last event id sent (or skipped as already seen).
    sent: i64,
    receiver: broadcast::Receiver<Arc<HubEvent>>,
    expires: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// The access token's session: its revocation ends the stream.
    session: SessionWatch,
    /// The process's heartbeat.
    heartbeat: watch::Receiver<()>,
    /// The `retry:` frame went out.
    greeted: bool,
    done: bool,
    /// `tdc_sse_events_sent_total`, looked up once per stream rather than once per event.
    sent_total: metrics::Counter,
    /// The tenant's stream slot (and the API key's), held as long as the stream.
    /// Boxed: a `Vec` would add a word to every idle stream's state.
    _slots: Box<[OwnedSemaphorePermit]>,
    _gauge: StreamGauge,
}

impl Listening {
    /// A stream of `channel` for a client that last saw `last_event_id` (`None`: only what
    /// comes next). Events after it that retention deleted, or an id the channel never reached,
    /// start the stream with a `reset` event. `receiver` is already subscribed and the replay
    /// reads the table only afterwards, so no event falls between the replay and the live ones.
    #[expect(clippy::too_many_arguments, reason = "one stream's every input, once")]
    pub fn new(
        pool: PgPool,
        channel: &ChannelRow,
        last_event_id: Option<i64>,
        receiver: broadcast::Receiver<Arc<HubEvent>>,
        session: SessionWatch,
        heartbeat: watch::Receiver<()>,
        slots: Box<[OwnedSemaphorePermit]>,
        token_left: Duration,
    ) -> Self {
        let mut backlog = VecDeque::new();
        let cursor = match last_event_id {
            Some(id) if id < channel.pruned_through || id > channel.last_seq => {
                // Events after `id` are gone (or never were): the client must start over.
                let data = serde_json::json!({
                    "channel_id": channel.channel_id,
                    "last_event_id": id,
                    "oldest_event_id": channel.pruned_through + 1,
                    "current_event_id": channel.last_seq,
                })
                .to_string();
                backlog.push_back(Queued {
                    seq: channel.last_seq,
                    frame: frame::event("reset", Some(channel.last_seq), &data),
                    refresh: false,
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
            heartbeat,
            greeted: false,
            done: false,
            sent_total: metrics::counter!("tdc_sse_events_sent_total"),
            _slots: slots,
            _gauge: StreamGauge,
        }
    }

    /// The SSE frames of this stream, starting with `retry:`.
    pub fn into_stream(self) -> impl Stream<Item = Bytes> + 'static {
        futures_util::stream::unfold(self, next_event)
    }
}

/// Resolves at the next heartbeat; never, once the heartbeat is gone (at shutdown).
async fn beat(heartbeat: &mut watch::Receiver<()>) {
    if heartbeat.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The last event of a stream whose session ended; the client must log in again rather than
/// reconnect with the same token.
fn session_ended_event(why: SessionEnd) -> Bytes {
    let (name, data) = match why {
        SessionEnd::Revoked => (
            "revoked",
            "{\"code\":\"token_revoked\",\"detail\":\"the session or API key of this stream was revoked (logout, refresh-token reuse, key revoked); log in again or use a live key\"}",
        ),
        SessionEnd::Expired => (
            "session_expired",
            "{\"code\":\"token_revoked\",\"detail\":\"the session of this stream expired; log in again\"}",
        ),
    };
    frame::event(name, None, data)
}

/// The stream's state machine: replay from the table, then live from the hub (skipping what
/// the replay already sent), until the token expires, the session is revoked, the channel goes,
/// or the client lags. A revoked session wins over anything still queued: nothing is sent after
/// the hub learns of the revocation.
async fn next_event(mut s: Listening) -> Option<(Bytes, Listening)> {
    if s.done {
        return None;
    }
    if !s.greeted {
        s.greeted = true;
        return Some((frame::RETRY, s));
    }
    loop {
        if let Some(why) = s.session.ended() {
            s.done = true;
            return Some((session_ended_event(why), s));
        }
        if let Some(out) = s.backlog.pop_front() {
            s.sent = out.seq;
            if out.refresh {
                s.sent_total.increment(1);
            }
            return Some((out.frame, s));
        }
        if s.replaying {
            // Boxed: a query's future is large and most streams never replay; inline, it
            // would be part of every stream's state.
            match Box::pin(events::page_after(&s.pool, s.channel_id, s.sent)).await {
                Ok(page) => {
                    s.replaying = page.more;
                    if !page.events.is_empty()
                        && let Err(e) = Box::pin(s.session.confirm()).await
                    {
                        tracing::warn!(
                            error = %format_args!("{e:#}"),
                            "listen: checking the session failed; ending the stream"
                        );
                        return None;
                    }
                    s.backlog.extend(page.events.into_iter().map(|e| Queued {
                        seq: e.seq,
                        frame: frame::event("refresh", Some(e.seq), &e.data),
                        refresh: true,
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
                let data = "{\"detail\":\"the access token expired; reconnect with a fresh one and Last-Event-ID\"}";
                return Some((frame::event("token_expired", None, data), s));
            }
            received = s.receiver.recv() => match received {
                Ok(event) if event.seq <= s.sent => {}
                Ok(event) if event.seq == s.sent + 1 => {
                    s.sent = event.seq;
                    s.sent_total.increment(1);
                    // The hub's frame: shared, not copied.
                    return Some((event.frame.clone(), s));
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
                // The hub let go: at shutdown, so the HTTP server can drain; a reconnect hint
                // sends EventSource to the other replica at once rather than in 3 s.
                Err(broadcast::error::RecvError::Closed) => {
                    s.done = true;
                    return Some((frame::RECONNECT_SOON, s));
                }
            },
            () = beat(&mut s.heartbeat) => return Some((frame::KEEP_ALIVE, s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64) -> Arc<HubEvent> {
        Arc::new(HubEvent {
            seq,
            frame: frame::event("refresh", Some(seq), "{}"),
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
            heartbeat: super::super::heartbeat::Heartbeat::new().receiver(),
            greeted: true,
            done: false,
            sent_total: metrics::Counter::noop(),
            _slots: Box::default(),
            _gauge: StreamGauge,
        }
    }

    /// The frame as text.
    fn id_of(e: &Bytes) -> String {
        String::from_utf8_lossy(e).into_owned()
    }

    #[tokio::test]
    async fn live_events_skip_what_was_already_sent() {
        let (sender, receiver) = broadcast::channel(16);
        for seq in 1..=4 {
            sender.send(event(seq)).expect("send");
        }
        let (first, s) = next_event(state(receiver, 2)).await.expect("an event");
        assert!(id_of(&first).starts_with("id: 3\n"), "{first:?}");
        let (second, _) = next_event(s).await.expect("an event");
        assert!(id_of(&second).starts_with("id: 4\n"), "{second:?}");
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
    async fn a_stream_the_hub_lets_go_ends_with_a_hint_to_reconnect_soon() {
        let (sender, receiver) = broadcast::channel(2);
        drop(sender);
        let (last, s) = next_event(state(receiver, 0)).await.expect("a last frame");
        assert_eq!(last, frame::RECONNECT_SOON);
        assert_eq!(&last[..], b"retry: 500\n\n");
        assert!(next_event(s).await.is_none());
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
        assert!(id_of(&last).starts_with("event: revoked\n"), "{last:?}");
        assert!(next_event(mine).await.is_none());
        let (first, _) = next_event(other).await.expect("an event");
        assert!(id_of(&first).starts_with("id: 1\n"), "{first:?}");
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
        assert!(
            id_of(&last).starts_with("event: session_expired\n"),
            "{last:?}"
        );
    }

    #[tokio::test]
    async fn a_live_event_is_sent_as_the_hubs_frame_not_a_copy() {
        let (sender, receiver) = broadcast::channel(16);
        let shared = event(1);
        sender.send(Arc::clone(&shared)).expect("send");
        let (sent, _) = next_event(state(receiver, 0)).await.expect("an event");
        assert_eq!(sent, shared.frame);
        assert_eq!(sent.as_ptr(), shared.frame.as_ptr(), "the frame was copied");
    }

    #[tokio::test]
    async fn a_stream_starts_with_retry_and_idles_with_the_shared_heartbeat() {
        let hub = super::super::hub::Hub::new(lazy_pool(), 16, Duration::from_secs(3600));
        let heartbeat = super::super::heartbeat::Heartbeat::new();
        let (_sender, receiver) = broadcast::channel(16);
        let mut s = state_in(&hub, Uuid::new_v4(), receiver, 0);
        s.greeted = false;
        s.heartbeat = heartbeat.receiver();
        let (first, s) = next_event(s).await.expect("retry");
        assert_eq!(first, frame::RETRY);
        let beating = heartbeat.spawn(Duration::from_millis(20));
        let (second, _) = tokio::time::timeout(Duration::from_secs(1), next_event(s))
            .await
            .expect("a heartbeat within a second")
            .expect("a frame");
        assert_eq!(second, frame::KEEP_ALIVE);
        beating.abort();
    }

    #[test]
    fn a_waiting_stream_keeps_a_small_state() {
        // What every idle stream holds: the state and the future of its next frame (792 bytes
        // with rustc 1.95; 832 with the replay's query futures inline). A future awaited inline
        // is in every stream's state whether it runs or not: rare ones are boxed.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let (_sender, receiver) = broadcast::channel(16);
        let waiting = next_event(state(receiver, 0));
        let size = std::mem::size_of_val(&waiting);
        assert!(size <= 800, "next_event's future is {size} bytes");
    }
}
