//! The per-process hub: one `PgListener` on `tdc_events` feeds one bounded broadcast per
//! channel that has listeners in this process. A notification ([`Notice::Event`]) carries only
//! the channel and the new event's seq; the hub reads the events after the last one it
//! broadcast from the table, so a lost or coalesced notification costs nothing but latency.
//! After the listener's connection drops (a killed backend, a PostgreSQL restart), the hub
//! reconnects and re-reads every watched channel from its last broadcast event: nothing is
//! lost.
//!
//! The hub also ends streams whose session is revoked. Every stream registers the session of
//! its access token, or the id of its API key ([`Hub::watch_session`]; a deleted key is
//! announced as a revoked session under its key id, migration 0015); a revocation (logout, refresh-token reuse) sends
//! [`Notice::SessionRevoked`] on the same `NOTIFY` channel in the revoking transaction, and every
//! process ends that session's streams at once. A notification sent while the listener was
//! reconnecting is lost, so the hub also re-checks the sessions of its open streams against
//! `tinydevcrm.stream_principals` (sessions and keys) after every reconnect and every `recheck` interval: a missed
//! revocation (or a session that expired) ends its streams within that interval at worst.
//!
//! Background code: its errors are `anyhow` with context, logged by the loops that retry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use super::events;
use crate::db::notify::{NOTIFY_CHANNEL, Notice, Revocations};

/// An event as broadcast: encoded once into its SSE frame, whose bytes every listener sends.
#[derive(Debug)]
pub struct HubEvent {
    /// Per-channel sequence number.
    pub seq: i64,
    /// The `refresh` event's frame (`id:`, `event:`, `data:`).
    pub frame: bytes::Bytes,
}

#[derive(Debug)]
struct Slot {
    sender: broadcast::Sender<Arc<HubEvent>>,
    last_seq: i64,
}

/// What a catch-up of one channel's slot does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NextRead {
    /// Nobody in this process listens any more: drop the slot.
    Forget,
    /// Everything announced was already broadcast.
    UpToDate,
    /// Read the events after this seq.
    After(i64),
}

impl Slot {
    /// `announced` is the seq a notification named (`None` after a reconnect: read whatever
    /// is there). A notification for events already broadcast (coalesced, or read by an
    /// earlier page) costs no read.
    fn next_read(&self, announced: Option<i64>) -> NextRead {
        if self.sender.receiver_count() == 0 {
            NextRead::Forget
        } else if announced.is_some_and(|seq| seq <= self.last_seq) {
            NextRead::UpToDate
        } else {
            NextRead::After(self.last_seq)
        }
    }

    /// Broadcasts, in order, the events after the last one broadcast; older ones (a page read
    /// while another catch-up already sent them) are dropped, so no listener sees one twice.
    fn publish(&mut self, events: Vec<events::StoredEvent>) {
        for event in events {
            if event.seq > self.last_seq {
                self.last_seq = event.seq;
                // No receiver left is fine: the slot goes at the next event.
                let _ = self.sender.send(Arc::new(HubEvent {
                    seq: event.seq,
                    frame: super::frame::event("refresh", Some(event.seq), &event.data),
                }));
            }
        }
    }
}

/// Why a session's streams end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Logged out, revoked for refresh-token reuse, or gone.
    Revoked,
    /// Past its `expires_at` (found by the periodic re-check).
    Expired,
}

/// The streams of one session in this process: they all watch one value, set once when the
/// session ends.
#[derive(Debug)]
struct SessionEntry {
    sender: watch::Sender<Option<SessionEnd>>,
    streams: usize,
}

/// Live events of the channels this process streams.
#[derive(Debug)]
pub struct Hub {
    pool: PgPool,
    capacity: usize,
    recheck: Duration,
    slots: Mutex<HashMap<Uuid, Slot>>,
    sessions: Mutex<HashMap<Uuid, SessionEntry>>,
    closed: AtomicBool,
    /// Moved by every revocation notice and every change of the listener's state, for the
    /// session cache (`auth::sessions`).
    revocations: Arc<Revocations>,
    /// Woken by every [`Notice::DeliveriesDue`], for the processes draining the notification
    /// outbox (which also poll, since a notice is lost while the listener is down).
    deliveries_due: Arc<tokio::sync::Notify>,
}

/// A stream's registration with the hub under its session: tells the stream when the session
/// ends, and unregisters when the stream goes.
#[derive(Debug)]
pub struct SessionWatch {
    hub: Arc<Hub>,
    session_id: Uuid,
    receiver: watch::Receiver<Option<SessionEnd>>,
}

impl SessionWatch {
    /// Whether (and why) the session has ended.
    pub fn ended(&self) -> Option<SessionEnd> {
        *self.receiver.borrow()
    }

    /// Re-reads the session and ends its streams when it is revoked, gone or expired. Events
    /// read straight from the table (a replay) do not wait behind the revocation's notice, so a
    /// replay confirms the session before it sends what it read: a revocation that committed
    /// before those events is then seen.
    pub async fn confirm(&self) -> anyhow::Result<()> {
        let state = sqlx::query!(
            r#"SELECT live AS "live!", expires_at > now() AS "unexpired!"
               FROM tinydevcrm.stream_principals WHERE principal_id = $1"#,
            self.session_id,
        )
        .fetch_optional(&self.hub.pool)
        .await
        .with_context(|| format!("reading session {}", self.session_id))?;
        match state.map(|s| (s.live, s.unexpired)) {
            Some((true, true)) => {}
            Some((true, false)) => self.hub.end_session(self.session_id, SessionEnd::Expired),
            _ => self.hub.end_session(self.session_id, SessionEnd::Revoked),
        }
        Ok(())
    }

    /// Resolves when the session's state changes (check [`Self::ended`] then). Cancel-safe;
    /// never resolves once the hub is gone (the stream then ends with the hub's other ways).
    pub async fn changed(&mut self) {
        if self.receiver.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for SessionWatch {
    fn drop(&mut self) {
        let mut sessions = self.hub.sessions();
        if let Some(entry) = sessions.get_mut(&self.session_id) {
            entry.streams = entry.streams.saturating_sub(1);
            if entry.streams == 0 {
                sessions.remove(&self.session_id);
            }
        }
    }
}

impl Hub {
    /// A hub whose per-channel queues hold `capacity` events (a listener further behind is
    /// disconnected and replays from the table when it reconnects).
    /// `recheck` is how often the sessions of open streams are re-read from the database.
    pub fn new(pool: PgPool, capacity: usize, recheck: Duration) -> Arc<Self> {
        Arc::new(Self {
            pool,
            capacity: capacity.max(1),
            recheck: recheck.max(Duration::from_millis(100)),
            slots: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            revocations: Arc::new(Revocations::default()),
            deliveries_due: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// Woken when notification deliveries were written anywhere (`notify_waiters`: a drainer
    /// that is busy misses the wake-up and finds the deliveries at its next look).
    pub fn deliveries_due(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.deliveries_due)
    }

    /// What this hub's listener has heard of revocations.
    pub fn revocations(&self) -> Arc<Revocations> {
        Arc::clone(&self.revocations)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, SessionEntry>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a stream of `session_id`. Register before checking that the session is live,
    /// so that a revocation committed after the check cannot slip between the two.
    pub fn watch_session(self: &Arc<Self>, session_id: Uuid) -> SessionWatch {
        let mut sessions = self.sessions();
        let entry = sessions.entry(session_id).or_insert_with(|| SessionEntry {
            sender: watch::channel(None).0,
            streams: 0,
        });
        entry.streams += 1;
        SessionWatch {
            hub: Arc::clone(self),
            session_id,
            receiver: entry.sender.subscribe(),
        }
    }

    /// Ends every stream of a session in this process.
    pub fn end_session(&self, session_id: Uuid, why: SessionEnd) {
        if let Some(entry) = self.sessions().get(&session_id) {
            if entry.sender.borrow().is_none() {
                metrics::counter!("tdc_sse_sessions_ended_total").increment(1);
            }
            entry.sender.send_replace(Some(why));
        }
    }

    /// Re-reads the sessions of open streams and ends those revoked, deleted or expired: the
    /// backstop for revocation notices lost while the listener was away.
    pub async fn recheck_sessions(&self) -> anyhow::Result<()> {
        let live: Vec<Uuid> = self
            .sessions()
            .iter()
            .filter(|(_, entry)| entry.sender.borrow().is_none())
            .map(|(id, _)| *id)
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        let ended = sqlx::query!(
            r#"SELECT ids.id AS "session_id!",
                      (s.principal_id IS NOT NULL AND s.live) AS "expired!"
               FROM unnest($1::uuid[]) AS ids(id)
               LEFT JOIN tinydevcrm.stream_principals s ON s.principal_id = ids.id
               WHERE s.principal_id IS NULL OR NOT s.live OR s.expires_at <= now()"#,
            &live,
        )
        .fetch_all(&self.pool)
        .await
        .with_context(|| format!("re-reading {} stream sessions", live.len()))?;
        for ended in ended {
            let why = if ended.expired {
                SessionEnd::Expired
            } else {
                SessionEnd::Revoked
            };
            self.end_session(ended.session_id, why);
        }
        Ok(())
    }

    async fn recheck_loop(&self) {
        let mut tick = tokio::time::interval(self.recheck);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.recheck_sessions().await {
                tracing::warn!(
                    error = %format_args!("{e:#}"),
                    "hub: re-checking stream sessions failed"
                );
            }
            if let Err(e) = self.drop_deleted_channels().await {
                tracing::warn!(
                    error = %format_args!("{e:#}"),
                    "hub: re-checking watched channels failed"
                );
            }
        }
    }

    /// Live events of a channel from now on. `stored_last_seq` is the channel's `last_seq` as
    /// just read from the table; the caller replays anything older from the table itself.
    pub fn subscribe(
        &self,
        channel_id: Uuid,
        stored_last_seq: i64,
    ) -> broadcast::Receiver<Arc<HubEvent>> {
        if self.closed.load(Ordering::SeqCst) {
            // Shutting down: a receiver whose sender is gone ends its stream at once.
            return broadcast::channel(1).1;
        }
        let mut slots = self.slots();
        let slot = slots.entry(channel_id).or_insert_with(|| Slot {
            sender: broadcast::channel(self.capacity).0,
            last_seq: stored_last_seq,
        });
        slot.sender.subscribe()
    }

    /// Ends every stream of this process (at shutdown, so the HTTP server drains at once;
    /// clients reconnect elsewhere and resume with `Last-Event-ID`).
    pub fn close_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.slots().clear();
    }

    /// Starts the listener and the session re-check on the current runtime (one task:
    /// aborting it stops both).
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let hub = Arc::clone(self);
        tokio::spawn(async move {
            tokio::join!(hub.run(), hub.recheck_loop());
        })
    }

    async fn run(&self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut listener = match self.connect().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(
                        error = %format_args!("{e:#}"),
                        "hub: LISTEN failed; retrying"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            self.revocations.listening();
            // Revocations announced while nobody listened are in the sessions table. Read
            // first: an event that committed after a revocation must not reach the revoked
            // session's streams through the catch-up below (seen when the LISTEN connection of
            // a fresh process came up after both had committed).
            if let Err(e) = self.recheck_sessions().await {
                tracing::warn!(
                    error = %format_args!("{e:#}"),
                    "hub: re-checking stream sessions failed"
                );
            }
            // Whatever was committed while nobody listened is in the table.
            if let Err(e) = self.catch_up_all().await {
                tracing::warn!(
                    error = %format_args!("{e:#}"),
                    "hub: catching up failed; reconnecting"
                );
                self.revocations.deaf();
                tokio::time::sleep(backoff).await;
                continue;
            }
            backoff = Duration::from_millis(100);
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        if let Err(e) = self.on_notification(notification.payload()).await {
                            tracing::warn!(
                                error = %format_args!("{e:#}"),
                                "hub: reading events failed; reconnecting"
                            );
                            break;
                        }
                    }
                    Ok(None) => {
                        tracing::warn!("hub: the LISTEN connection was lost; reconnecting");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "hub: LISTEN failed; reconnecting");
                        break;
                    }
                }
            }
            self.revocations.deaf();
            metrics::counter!("tdc_hub_reconnects_total").increment(1);
        }
    }

    async fn connect(&self) -> anyhow::Result<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .context("opening the LISTEN connection")?;
        listener
            .listen(NOTIFY_CHANNEL)
            .await
            .with_context(|| format!("LISTEN {NOTIFY_CHANNEL}"))?;
        Ok(listener)
    }

    async fn on_notification(&self, payload: &str) -> anyhow::Result<()> {
        let notice = match payload.parse::<Notice>() {
            Ok(notice) => notice,
            Err(e) => {
                // Not ours to act on (nothing else should send on this channel): ignore it.
                tracing::warn!(error = %e, "hub: ignoring a notification");
                return Ok(());
            }
        };
        match notice {
            Notice::Event { channel_id, seq } => self.catch_up(channel_id, Some(seq)).await,
            Notice::ChannelDeleted { channel_id } => {
                // Dropping the sender ends every stream of the channel.
                self.slots().remove(&channel_id);
                Ok(())
            }
            Notice::SessionRevoked { session_id } => {
                self.revocations.revoked();
                self.end_session(session_id, SessionEnd::Revoked);
                Ok(())
            }
            Notice::DeliveriesDue => {
                self.deliveries_due.notify_waiters();
                Ok(())
            }
        }
    }

    async fn catch_up_all(&self) -> anyhow::Result<()> {
        self.drop_deleted_channels().await?;
        let channels: Vec<Uuid> = self.slots().keys().copied().collect();
        for channel_id in channels {
            self.catch_up(channel_id, None).await?;
        }
        Ok(())
    }

    /// Ends the streams of watched channels that no longer exist: a deletion's notice is lost
    /// while the LISTEN connection is down or not yet up (a stream opened on a fresh process).
    async fn drop_deleted_channels(&self) -> anyhow::Result<()> {
        let watched: Vec<Uuid> = self.slots().keys().copied().collect();
        if watched.is_empty() {
            return Ok(());
        }
        let alive: std::collections::HashSet<Uuid> = sqlx::query_scalar!(
            "SELECT channel_id FROM tinydevcrm.channels WHERE channel_id = ANY($1)",
            &watched
        )
        .fetch_all(&self.pool)
        .await
        .context("reading which watched channels still exist")?
        .into_iter()
        .collect();
        // Only channels watched before the read can be judged by it.
        self.slots()
            .retain(|id, _| !watched.contains(id) || alive.contains(id));
        Ok(())
    }

    /// Broadcasts the channel's events after the last one broadcast (up to `seen`, when a
    /// notification says how far there is to go).
    async fn catch_up(&self, channel_id: Uuid, seen: Option<i64>) -> anyhow::Result<()> {
        loop {
            let last = {
                let mut slots = self.slots();
                let Some(slot) = slots.get(&channel_id) else {
                    return Ok(());
                };
                match slot.next_read(seen) {
                    NextRead::Forget => {
                        slots.remove(&channel_id);
                        return Ok(());
                    }
                    NextRead::UpToDate => return Ok(()),
                    NextRead::After(last) => last,
                }
            };
            let page = events::page_after(&self.pool, channel_id, last)
                .await
                .with_context(|| format!("reading events of channel {channel_id} after {last}"))?;
            if let Some(slot) = self.slots().get_mut(&channel_id) {
                slot.publish(page.events);
            } else {
                return Ok(());
            }
            if !page.more {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(last_seq: i64) -> (Slot, broadcast::Receiver<Arc<HubEvent>>) {
        let (sender, receiver) = broadcast::channel(16);
        (Slot { sender, last_seq }, receiver)
    }

    fn stored(seqs: &[i64]) -> Vec<events::StoredEvent> {
        seqs.iter()
            .map(|&seq| events::StoredEvent {
                seq,
                data: format!("{{\"n\":{seq}}}"),
            })
            .collect()
    }

    fn received(receiver: &mut broadcast::Receiver<Arc<HubEvent>>) -> Vec<(i64, String)> {
        std::iter::from_fn(|| receiver.try_recv().ok())
            .map(|e| (e.seq, String::from_utf8_lossy(&e.frame).into_owned()))
            .collect()
    }

    #[test]
    fn a_notification_past_the_last_broadcast_reads_from_there() {
        let (slot, _listener) = slot(4);
        assert_eq!(slot.next_read(Some(5)), NextRead::After(4));
        assert_eq!(slot.next_read(Some(90)), NextRead::After(4));
    }

    #[test]
    fn a_notification_for_events_already_broadcast_reads_nothing() {
        let (slot, _listener) = slot(4);
        assert_eq!(slot.next_read(Some(4)), NextRead::UpToDate);
        assert_eq!(slot.next_read(Some(2)), NextRead::UpToDate);
    }

    #[test]
    fn after_a_reconnect_the_hub_reads_whatever_followed_its_last_broadcast() {
        let (slot, _listener) = slot(4);
        assert_eq!(slot.next_read(None), NextRead::After(4));
    }

    #[test]
    fn a_slot_nobody_listens_to_is_forgotten() {
        let (slot, listener) = slot(4);
        drop(listener);
        assert_eq!(slot.next_read(Some(5)), NextRead::Forget);
        assert_eq!(slot.next_read(None), NextRead::Forget);
    }

    #[test]
    fn a_page_is_broadcast_in_order_and_moves_the_mark() {
        let (mut slot, mut listener) = slot(4);
        slot.publish(stored(&[5, 6, 9]));
        assert_eq!(
            received(&mut listener),
            [
                (5, "id: 5\nevent: refresh\ndata: {\"n\":5}\n\n".to_owned()),
                (6, "id: 6\nevent: refresh\ndata: {\"n\":6}\n\n".to_owned()),
                (9, "id: 9\nevent: refresh\ndata: {\"n\":9}\n\n".to_owned())
            ]
        );
        assert_eq!(slot.last_seq, 9);
        assert_eq!(slot.next_read(Some(9)), NextRead::UpToDate);
    }

    #[test]
    fn events_already_broadcast_are_never_sent_twice() {
        let (mut slot, mut listener) = slot(4);
        slot.publish(stored(&[3, 4, 5]));
        slot.publish(stored(&[5, 6]));
        let seqs: Vec<i64> = received(&mut listener)
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(seqs, [5, 6]);
    }

    #[test]
    fn publishing_without_listeners_is_harmless_and_still_moves_the_mark() {
        let (mut slot, listener) = slot(0);
        drop(listener);
        slot.publish(stored(&[1, 2]));
        assert_eq!(slot.last_seq, 2);
    }
}
