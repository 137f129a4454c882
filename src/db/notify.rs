//! The one `NOTIFY` channel that tells every `serve` process about new events, deleted channels
//! and revoked sessions. Below the features: `auth`, `views` and `channels` all announce on it.

/// The `NOTIFY` channel. Payloads: `"<channel_id> <seq>"` (a new event), `"<channel_id>
/// deleted"` (the channel's streams end) and `"session <session_id> revoked"` (the session's
/// streams end; sent by `auth::store` in the revoking statement; read by `channels::hub`).
pub const NOTIFY_CHANNEL: &str = "tdc_events";
