//! Live sessions this process has seen recently, so that an authenticated request does not pay
//! a query (and a pooled connection) to learn that its session is still live.
//!
//! Safe because every revocation is announced: logout and refresh-token reuse send
//! `Notice::SessionRevoked` in the revoking transaction, the hub's listener moves the
//! [`Revocations`] epoch when it arrives, and an entry counts only at the epoch it was read at
//! and while the listener is up. The window left is the notice's delivery after the revoking
//! commit (milliseconds) on other processes; this process forgets at once. An entry also never
//! outlives its session's expiry as read, nor `ttl`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::db::ident::Ident;
use crate::db::notify::Revocations;

/// Entries beyond this are dropped wholesale: a bound, not an eviction policy.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone)]
struct Entry {
    user_id: Uuid,
    tenant: Ident,
    epoch: u64,
    until: Instant,
}

/// Live sessions by id, each with the epoch it was read at.
#[derive(Debug)]
pub struct SessionCache {
    ttl: Duration,
    revocations: Arc<Revocations>,
    entries: Mutex<HashMap<Uuid, Entry>>,
}

/// What a lookup needs to remember its answer: the epoch read before the query.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(Option<u64>);

impl SessionCache {
    /// A cache whose entries live at most `ttl` (zero turns it off).
    pub fn new(ttl: Duration, revocations: Arc<Revocations>) -> Self {
        Self {
            ttl,
            revocations,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tenant of `session_id` when a live answer for it is remembered.
    pub fn get(&self, session_id: Uuid, user_id: Uuid) -> Option<Ident> {
        let epoch = self.revocations.epoch()?;
        let entries = self.entries();
        let entry = entries.get(&session_id)?;
        (entry.epoch == epoch && entry.user_id == user_id && entry.until > Instant::now())
            .then(|| entry.tenant.clone())
    }

    /// Take before reading the session: an answer read after a revocation's notice arrived
    /// can only be remembered under the epoch that notice moved to.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.revocations.epoch())
    }

    /// Remembers that `session_id` was live when read, with `lifetime` left before it expires.
    pub fn remember(
        &self,
        ticket: Ticket,
        session_id: Uuid,
        user_id: Uuid,
        tenant: Ident,
        lifetime: Duration,
    ) {
        let Ticket(Some(epoch)) = ticket else { return };
        if self.ttl.is_zero() {
            return;
        }
        let until = Instant::now() + self.ttl.min(lifetime);
        let mut entries = self.entries();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            session_id,
            Entry {
                user_id,
                tenant,
                epoch,
                until,
            },
        );
    }

    /// Forgets one session (its row changed in this process: refreshed, revoked).
    pub fn forget(&self, session_id: Uuid) {
        self.entries().remove(&session_id);
    }

    /// A session was revoked by this process: nothing remembered counts any more, here at
    /// once (other processes hear it from the notice).
    pub fn revoked(&self, session_id: Uuid) {
        self.forget(session_id);
        self.revocations.revoked();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listening_cache(ttl: Duration) -> (SessionCache, Arc<Revocations>) {
        let revocations = Arc::new(Revocations::default());
        revocations.listening();
        (SessionCache::new(ttl, revocations.clone()), revocations)
    }

    fn tenant() -> Ident {
        Ident::new("t_0123").expect("valid")
    }

    #[test]
    fn a_session_read_live_is_remembered_for_its_user_only() {
        let (cache, _) = listening_cache(Duration::from_secs(10));
        let (sid, uid) = (Uuid::now_v7(), Uuid::now_v7());
        let ticket = cache.ticket();
        cache.remember(ticket, sid, uid, tenant(), Duration::from_secs(3600));
        assert_eq!(cache.get(sid, uid), Some(tenant()));
        assert_eq!(cache.get(sid, Uuid::now_v7()), None, "another user's token");
    }

    #[test]
    fn a_revocation_noticed_while_the_session_was_read_keeps_the_answer_out() {
        let (cache, revocations) = listening_cache(Duration::from_secs(10));
        let (sid, uid) = (Uuid::now_v7(), Uuid::now_v7());
        let ticket = cache.ticket();
        // The notice arrives between the read and the remembering.
        revocations.revoked();
        cache.remember(ticket, sid, uid, tenant(), Duration::from_secs(3600));
        assert_eq!(cache.get(sid, uid), None);
    }

    #[test]
    fn any_revocation_or_a_deaf_listener_voids_what_was_remembered() {
        let (cache, revocations) = listening_cache(Duration::from_secs(10));
        let (sid, uid) = (Uuid::now_v7(), Uuid::now_v7());
        cache.remember(
            cache.ticket(),
            sid,
            uid,
            tenant(),
            Duration::from_secs(3600),
        );
        revocations.revoked();
        assert_eq!(cache.get(sid, uid), None, "after a revocation");

        cache.remember(
            cache.ticket(),
            sid,
            uid,
            tenant(),
            Duration::from_secs(3600),
        );
        revocations.deaf();
        assert_eq!(cache.get(sid, uid), None, "while nobody listens");
        cache.remember(
            cache.ticket(),
            sid,
            uid,
            tenant(),
            Duration::from_secs(3600),
        );
        revocations.listening();
        assert_eq!(cache.get(sid, uid), None, "read while nobody listened");
    }

    #[test]
    fn nothing_outlives_the_session_or_the_ttl_and_zero_turns_it_off() {
        let (cache, _) = listening_cache(Duration::from_secs(10));
        let (sid, uid) = (Uuid::now_v7(), Uuid::now_v7());
        cache.remember(cache.ticket(), sid, uid, tenant(), Duration::ZERO);
        assert_eq!(cache.get(sid, uid), None, "a session expiring now");

        let (off, _) = listening_cache(Duration::ZERO);
        off.remember(off.ticket(), sid, uid, tenant(), Duration::from_secs(3600));
        assert_eq!(off.get(sid, uid), None, "ttl zero");
    }

    #[test]
    fn this_process_forgets_its_own_revocation_at_once() {
        let (cache, _) = listening_cache(Duration::from_secs(10));
        let (sid, uid) = (Uuid::now_v7(), Uuid::now_v7());
        cache.remember(
            cache.ticket(),
            sid,
            uid,
            tenant(),
            Duration::from_secs(3600),
        );
        cache.revoked(sid);
        assert_eq!(cache.get(sid, uid), None);
    }
}
