//! The per-process hub: one `PgListener` on `tdc_events` feeds one bounded broadcast per
//! channel that has listeners in this process. A notification carries only `"<channel> <seq>"`;
//! the hub reads the events after the last one it broadcast from the table, so a lost or
//! coalesced notification costs nothing but latency. After the listener's connection drops
//! (a killed backend, a PostgreSQL restart), the hub reconnects and re-reads every watched
//! channel from its last broadcast event: nothing is lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytestring::ByteString;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::events::{self, NOTIFY_CHANNEL};

/// An event as broadcast: serialized once, shared by every listener.
#[derive(Debug)]
pub struct HubEvent {
    /// Per-channel sequence number.
    pub seq: i64,
    /// The JSON `data:`.
    pub data: ByteString,
}

#[derive(Debug)]
struct Slot {
    sender: broadcast::Sender<Arc<HubEvent>>,
    last_seq: i64,
}

/// Live events of the channels this process streams.
#[derive(Debug)]
pub struct Hub {
    pool: PgPool,
    capacity: usize,
    slots: Mutex<HashMap<Uuid, Slot>>,
    closed: AtomicBool,
}

/// Rows read per query when catching up.
const PAGE: i64 = 500;

impl Hub {
    /// A hub whose per-channel queues hold `capacity` events (a listener further behind is
    /// disconnected and replays from the table when it reconnects).
    pub fn new(pool: PgPool, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            pool,
            capacity: capacity.max(1),
            slots: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// Starts the listener task on the current runtime.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let hub = Arc::clone(self);
        tokio::spawn(async move { hub.run().await })
    }

    async fn run(&self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut listener = match self.connect().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "hub: LISTEN failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            // Whatever was committed while nobody listened is in the table.
            if let Err(e) = self.catch_up_all().await {
                tracing::warn!(error = %e, "hub: catching up failed; reconnecting");
                tokio::time::sleep(backoff).await;
                continue;
            }
            backoff = Duration::from_millis(100);
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        if let Err(e) = self.on_notification(notification.payload()).await {
                            tracing::warn!(error = %e, "hub: reading events failed; reconnecting");
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
            metrics::counter!("tdc_hub_reconnects_total").increment(1);
        }
    }

    async fn connect(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        Ok(listener)
    }

    async fn on_notification(&self, payload: &str) -> Result<(), sqlx::Error> {
        let mut parts = payload.split(' ');
        let Some(channel_id) = parts.next().and_then(|c| Uuid::parse_str(c).ok()) else {
            return Ok(());
        };
        match parts.next() {
            Some("deleted") => {
                // Dropping the sender ends every stream of the channel.
                self.slots().remove(&channel_id);
                Ok(())
            }
            Some(seq) => match seq.parse::<i64>() {
                Ok(seq) => self.catch_up(channel_id, Some(seq)).await,
                Err(_) => Ok(()),
            },
            None => Ok(()),
        }
    }

    async fn catch_up_all(&self) -> Result<(), sqlx::Error> {
        let channels: Vec<Uuid> = self.slots().keys().copied().collect();
        for channel_id in channels {
            self.catch_up(channel_id, None).await?;
        }
        Ok(())
    }

    /// Broadcasts the channel's events after the last one broadcast (up to `seen`, when a
    /// notification says how far there is to go).
    async fn catch_up(&self, channel_id: Uuid, seen: Option<i64>) -> Result<(), sqlx::Error> {
        loop {
            let last = {
                let mut slots = self.slots();
                let Some(slot) = slots.get(&channel_id) else {
                    return Ok(());
                };
                if slot.sender.receiver_count() == 0 {
                    slots.remove(&channel_id);
                    return Ok(());
                }
                if seen.is_some_and(|seen| seen <= slot.last_seq) {
                    return Ok(());
                }
                slot.last_seq
            };
            let page = events::after(&self.pool, channel_id, last, PAGE).await?;
            let full = page.len() as i64 == PAGE;
            {
                let mut slots = self.slots();
                let Some(slot) = slots.get_mut(&channel_id) else {
                    return Ok(());
                };
                for event in page {
                    if event.seq > slot.last_seq {
                        slot.last_seq = event.seq;
                        // No receiver left is fine: the slot goes at the next event.
                        let _ = slot.sender.send(Arc::new(HubEvent {
                            seq: event.seq,
                            data: ByteString::from(event.data),
                        }));
                    }
                }
            }
            if !full {
                return Ok(());
            }
        }
    }
}
