//! The one `NOTIFY` channel that tells every `serve` process about new events, deleted channels
//! and revoked sessions, and [`Notice`], the payload it carries. Below the features: `auth`,
//! `views` and `channels` all announce on it, `channels::hub` listens.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sqlx::PgConnection;
use uuid::Uuid;

/// The `NOTIFY` channel every [`Notice`] is sent on.
pub const NOTIFY_CHANNEL: &str = "tdc_events";

/// What one notification on [`NOTIFY_CHANNEL`] announces. Carries ids only: a listener reads
/// whatever else it needs from the tables, so a lost or coalesced notice costs only latency.
///
/// Wire format (the `Display` and `FromStr` below are its only writer and reader):
/// `"<channel_id> <seq>"`, `"<channel_id> deleted"`, `"session <session_id> revoked"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Event `seq` of the channel was committed.
    Event {
        /// The channel.
        channel_id: Uuid,
        /// Its per-channel sequence number.
        seq: i64,
    },
    /// The channel was deleted: its streams end.
    ChannelDeleted {
        /// The channel.
        channel_id: Uuid,
    },
    /// The session was revoked (logout, refresh-token reuse): its streams end.
    SessionRevoked {
        /// The session.
        session_id: Uuid,
    },
    /// Notification deliveries were written (by the trigger on events, migration 0011): the
    /// processes draining the outbox look for due ones now rather than at their next poll.
    DeliveriesDue,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Event { channel_id, seq } => write!(f, "{channel_id} {seq}"),
            Self::ChannelDeleted { channel_id } => write!(f, "{channel_id} deleted"),
            Self::SessionRevoked { session_id } => write!(f, "session {session_id} revoked"),
            Self::DeliveriesDue => f.write_str("deliveries"),
        }
    }
}

/// A payload that is not a [`Notice`].
#[derive(Debug, thiserror::Error)]
#[error("not a notice: {0:?}")]
pub struct NotANotice(String);

impl FromStr for Notice {
    type Err = NotANotice;

    fn from_str(payload: &str) -> Result<Self, Self::Err> {
        let junk = || NotANotice(payload.chars().take(120).collect());
        let words: Vec<&str> = payload.split(' ').collect();
        let id = |word: &str| Uuid::parse_str(word).map_err(|_| junk());
        match words.as_slice() {
            ["deliveries"] => Ok(Self::DeliveriesDue),
            ["session", session_id, "revoked"] => Ok(Self::SessionRevoked {
                session_id: id(session_id)?,
            }),
            [channel_id, "deleted"] => Ok(Self::ChannelDeleted {
                channel_id: id(channel_id)?,
            }),
            [channel_id, seq] => Ok(Self::Event {
                channel_id: id(channel_id)?,
                seq: seq.parse().map_err(|_| junk())?,
            }),
            _ => Err(junk()),
        }
    }
}

/// What this process knows of revocations, for the caches that remember live sessions: an
/// epoch that moves at every revocation announced on [`NOTIFY_CHANNEL`] (and at every change of
/// the listener's state), and whether the listener is up. A cache entry made at one epoch is
/// good only while the epoch has not moved and the listener is up: a revocation that commits
/// after the entry's read reaches this process as a notice and moves the epoch; while nobody
/// listens, notices are lost, so nothing cached counts.
#[derive(Debug, Default)]
pub struct Revocations {
    epoch: AtomicU64,
    listening: AtomicBool,
}

impl Revocations {
    /// The current epoch, or `None` while the listener is down (trust no cached session).
    pub fn epoch(&self) -> Option<u64> {
        // Epoch first: `deaf` clears the flag before it moves the epoch, so an epoch read here
        // with the flag still set is one that `deaf` then leaves behind.
        let epoch = self.epoch.load(Ordering::SeqCst);
        self.listening.load(Ordering::SeqCst).then_some(epoch)
    }

    /// A session was revoked (announced, or by this process): every cached session is stale.
    pub fn revoked(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The listener is up again (after `LISTEN`): notices arrive from now on.
    pub fn listening(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.listening.store(true, Ordering::SeqCst);
    }

    /// The listener is down: notices may be lost until it is back.
    pub fn deaf(&self) {
        self.listening.store(false, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

/// Sends `notices` on [`NOTIFY_CHANNEL`] inside the caller's transaction: PostgreSQL delivers
/// them when it commits (in this order), never before and never after a rollback.
pub async fn send(conn: &mut PgConnection, notices: &[Notice]) -> Result<(), sqlx::Error> {
    if notices.is_empty() {
        return Ok(());
    }
    let payloads: Vec<String> = notices.iter().map(Notice::to_string).collect();
    sqlx::query!(
        r#"SELECT count(pg_notify($1, payload)) AS "sent!" FROM unnest($2::text[]) AS payload"#,
        NOTIFY_CHANNEL,
        &payloads,
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Notice> {
        let id = Uuid::parse_str("0190f3a2-7c4e-7d2a-9b1e-3f5a6c7d8e9f").expect("a uuid");
        vec![
            Notice::Event {
                channel_id: id,
                seq: 1,
            },
            Notice::Event {
                channel_id: id,
                seq: i64::MAX,
            },
            Notice::ChannelDeleted { channel_id: id },
            Notice::SessionRevoked { session_id: id },
            Notice::DeliveriesDue,
        ]
    }

    #[test]
    fn cached_sessions_count_only_while_listening_and_until_the_next_revocation() {
        let revocations = Revocations::default();
        assert_eq!(
            revocations.epoch(),
            None,
            "nothing counts before the first LISTEN"
        );
        revocations.listening();
        let epoch = revocations.epoch().expect("listening");
        assert_eq!(revocations.epoch(), Some(epoch), "nothing happened");
        revocations.revoked();
        assert_ne!(
            revocations.epoch(),
            Some(epoch),
            "a revocation moves the epoch"
        );
        let epoch = revocations.epoch().expect("listening");
        revocations.deaf();
        assert_eq!(revocations.epoch(), None, "nothing counts while deaf");
        revocations.listening();
        assert_ne!(
            revocations.epoch(),
            Some(epoch),
            "what was cached before the listener went down never counts again"
        );
    }

    #[test]
    fn every_notice_reads_back_as_itself() {
        for notice in all() {
            let payload = notice.to_string();
            assert_eq!(payload.parse::<Notice>().expect(&payload), notice);
        }
    }

    #[test]
    fn the_wire_format_is_the_one_listeners_already_read() {
        let id = "0190f3a2-7c4e-7d2a-9b1e-3f5a6c7d8e9f";
        let payloads: Vec<String> = all().iter().map(Notice::to_string).collect();
        assert_eq!(
            payloads,
            [
                format!("{id} 1"),
                format!("{id} {}", i64::MAX),
                format!("{id} deleted"),
                format!("session {id} revoked"),
                // What the trigger of migration 0011 sends.
                "deliveries".to_owned(),
            ]
        );
    }

    #[test]
    fn junk_payloads_are_refused_not_misread() {
        let id = "0190f3a2-7c4e-7d2a-9b1e-3f5a6c7d8e9f";
        for junk in [
            String::new(),
            " ".to_owned(),
            id.to_owned(),
            format!("{id} "),
            format!("{id}  1"),
            format!("{id} 1 2"),
            format!("{id} 1.5"),
            format!("{id} 99999999999999999999"),
            format!("{id} revoked"),
            format!("{id} Deleted"),
            format!("{id} deleted now"),
            "not-a-uuid 1".to_owned(),
            format!("session {id}"),
            format!("session {id} deleted"),
            format!("session {id} revoked twice"),
            "session not-a-uuid revoked".to_owned(),
            format!("Session {id} revoked"),
            format!("{id}\n1"),
            "\u{0}".repeat(500),
            "é ü ß".to_owned(),
        ] {
            assert!(junk.parse::<Notice>().is_err(), "{junk:?} was accepted");
        }
    }
}
