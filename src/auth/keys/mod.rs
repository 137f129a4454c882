//! API keys: long-lived credentials for dashboards and services that must not hold a login
//! session. A key is `tdc_` and 32 random bytes (URL-safe base64); only its SHA-256 is stored,
//! with a short non-secret prefix to tell keys apart. A key grants exactly its scopes
//! ([`Grant`]): handlers name the scope they need ([`Scope`]) through `auth::caller::Caller`,
//! and every route that does not is closed to keys (the `AuthUser` extractor refuses them).
//!
//! Keys are revoked by deleting their row: the deletion is announced like a revoked session
//! under the key's id (migration 0015), so [`KeyCache`] forgets on every process at once (the
//! same epoch as the session cache) and the hub ends the key's streams.

pub mod routes;

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore as _;
use sha2::Digest as _;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::ident::Ident;
use crate::db::notify::Revocations;
use crate::error::ApiError;

/// What every key starts with: tells keys from JWTs (which start with `eyJ`) without a lookup.
pub const KEY_PREFIX: &str = "tdc_";

/// Random bytes in a key: 256 bits, so its SHA-256 cannot be reversed by guessing.
const KEY_BYTES: usize = 32;

/// Characters of the key after `tdc_` kept as its display prefix (48 of its 256 bits).
const DISPLAY_CHARS: usize = 8;

/// The most keys one account may hold.
pub const MAX_KEYS_PER_USER: i64 = 100;

/// The most scopes one key may hold.
pub const MAX_SCOPES: usize = 100;

/// The highest per-key rate limit a key may ask for.
pub const MAX_RATE_LIMIT_PER_MINUTE: u32 = 1_000_000;

/// Whether a bearer token is an API key (rather than a JWT).
pub fn is_key(token: &str) -> bool {
    token.starts_with(KEY_PREFIX)
}

/// A freshly generated key: the secret (answered once), its hash and its display prefix.
pub struct NewKey {
    /// `tdc_...`: shown to the caller once, never stored.
    pub secret: String,
    /// SHA-256 of the secret: what is stored and looked up.
    pub hash: [u8; 32],
    /// The first characters of the secret, for listings.
    pub prefix: String,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NewKey({}...)", self.prefix)
    }
}

/// A new key from the operating system's CSPRNG (through `rand`'s thread generator, which
/// reseeds from it).
pub fn generate() -> NewKey {
    let mut bytes = [0u8; KEY_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let prefix = secret
        .chars()
        .take(KEY_PREFIX.len() + DISPLAY_CHARS)
        .collect();
    NewKey {
        hash: hash(&secret),
        secret,
        prefix,
    }
}

/// The stored form of a key. A plain SHA-256 suffices: a key has 256 random bits, so there is
/// nothing to guess faster than the key itself (a slow hash protects low-entropy passwords).
pub fn hash(secret: &str) -> [u8; 32] {
    sha2::Sha256::digest(secret.as_bytes()).into()
}

/// One scope a key holds, parsed from `<resource>:<action>[:<name>]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Grant {
    /// `views:read:<name>`: the view's rows, exports and description.
    ViewsRead(Ident),
    /// `tables:read:<name>`: the table's rows, exports and description.
    TablesRead(Ident),
    /// `tables:append:<name>`: append rows (never replace).
    TablesAppend(Ident),
    /// `channels:listen:<id>`: the channel's event stream.
    ChannelsListen(Uuid),
    /// `views:refresh:<name>`: refresh the view now.
    ViewsRefresh(Ident),
    /// `*:read`: every read above on everything the tenant owns, and the listings.
    ReadAll,
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ViewsRead(n) => write!(f, "views:read:{}", n.as_str()),
            Self::TablesRead(n) => write!(f, "tables:read:{}", n.as_str()),
            Self::TablesAppend(n) => write!(f, "tables:append:{}", n.as_str()),
            Self::ChannelsListen(id) => write!(f, "channels:listen:{id}"),
            Self::ViewsRefresh(n) => write!(f, "views:refresh:{}", n.as_str()),
            Self::ReadAll => f.write_str("*:read"),
        }
    }
}

impl Grant {
    /// The table or view a scope names, if it names one.
    pub fn name(&self) -> Option<&Ident> {
        match self {
            Self::ViewsRead(n)
            | Self::TablesRead(n)
            | Self::TablesAppend(n)
            | Self::ViewsRefresh(n) => Some(n),
            Self::ChannelsListen(_) | Self::ReadAll => None,
        }
    }
}

/// The scopes a key may hold, for error messages.
const KNOWN: &str = "views:read:<name>, tables:read:<name>, tables:append:<name>, channels:listen:<id>, views:refresh:<name>, *:read";

impl Grant {
    /// Parses a scope as a client sends it; 400 `invalid_scope` naming it otherwise. Names are
    /// validated and folded as table and view names are, so a scope names what a path names.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let bad = |why: String| {
            ApiError::bad_request("invalid_scope", format!("scope {raw:?} {why}"))
                .with_members(serde_json::json!({ "scope": raw }))
        };
        if raw == "*:read" {
            return Ok(Self::ReadAll);
        }
        let mut parts = raw.splitn(3, ':');
        let (resource, action, name) = (parts.next(), parts.next(), parts.next());
        let (Some(resource), Some(action), Some(name)) = (resource, action, name) else {
            return Err(bad(format!("is not a scope; scopes are {KNOWN}")));
        };
        // Folded as table and view names are; `routes` adds their other rules at creation.
        let ident = || {
            Ident::new(name.to_ascii_lowercase()).map_err(|_| {
                bad("does not name a table or view (letters, digits and _, not starting with a digit, at most 63)".to_owned())
            })
        };
        match (resource, action) {
            ("views", "read") => Ok(Self::ViewsRead(ident()?)),
            ("views", "refresh") => Ok(Self::ViewsRefresh(ident()?)),
            ("tables", "read") => Ok(Self::TablesRead(ident()?)),
            ("tables", "append") => Ok(Self::TablesAppend(ident()?)),
            ("channels", "listen") => Uuid::parse_str(name)
                .map(Self::ChannelsListen)
                .map_err(|_| bad("does not name a channel id (a UUID)".to_owned())),
            ("views" | "tables" | "channels", _) => Err(bad(format!(
                "has an unknown action {action:?}; scopes are {KNOWN}"
            ))),
            _ => Err(bad(format!(
                "has an unknown resource {resource:?}; scopes are {KNOWN}"
            ))),
        }
    }
}

/// What a handler needs the caller to hold, named before it touches the tenant.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Read a view (rows, exports, description).
    ViewsRead(&'a Ident),
    /// Read a table (rows, exports, description).
    TablesRead(&'a Ident),
    /// Append rows to a table.
    TablesAppend(&'a Ident),
    /// Replace a table's rows: no key scope grants it.
    TablesReplace(&'a Ident),
    /// Listen on a channel.
    ChannelsListen(Uuid),
    /// Refresh a view.
    ViewsRefresh(&'a Ident),
    /// List the tenant's tables, views or channels.
    List,
}

impl<'a> Scope<'a> {
    /// What writing rows to `name` needs: appending is `tables:append`; replacing deletes every
    /// row, more than appending allows, so no key may.
    pub fn rows_written(name: &'a Ident, replace: bool) -> Self {
        if replace {
            Self::TablesReplace(name)
        } else {
            Self::TablesAppend(name)
        }
    }

    /// Whether holding `grant` allows this.
    pub fn granted_by(self, grant: &Grant) -> bool {
        match (self, grant) {
            (
                Self::ViewsRead(_) | Self::TablesRead(_) | Self::ChannelsListen(_) | Self::List,
                Grant::ReadAll,
            ) => true,
            (Self::ViewsRead(n), Grant::ViewsRead(g))
            | (Self::TablesRead(n), Grant::TablesRead(g))
            | (Self::TablesAppend(n), Grant::TablesAppend(g))
            | (Self::ViewsRefresh(n), Grant::ViewsRefresh(g)) => n == g,
            (Self::ChannelsListen(id), Grant::ChannelsListen(g)) => id == *g,
            _ => false,
        }
    }

    /// The scope to name in a 403: the narrowest one that would allow this.
    pub fn needed(self) -> String {
        match self {
            Self::ViewsRead(n) => Grant::ViewsRead(n.clone()).to_string(),
            Self::TablesRead(n) => Grant::TablesRead(n.clone()).to_string(),
            Self::TablesAppend(n) => Grant::TablesAppend(n.clone()).to_string(),
            Self::TablesReplace(n) => format!("tables:replace:{}", n.as_str()),
            Self::ChannelsListen(id) => Grant::ChannelsListen(id).to_string(),
            Self::ViewsRefresh(n) => Grant::ViewsRefresh(n.clone()).to_string(),
            Self::List => Grant::ReadAll.to_string(),
        }
    }
}

/// A live key, as authenticated.
#[derive(Debug, Clone)]
pub struct KeyAuth {
    /// The key's id (also what its streams register under with the hub).
    pub key_id: Uuid,
    /// The owner.
    pub user_id: Uuid,
    /// The owner's tenant role and schema.
    pub tenant: Ident,
    /// What the key may do.
    pub grants: Vec<Grant>,
    /// Requests per minute.
    pub rate_limit: NonZeroU32,
    /// When the key stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key row as listed (never with its hash).
#[derive(Debug, Clone)]
pub struct KeyRow {
    /// Id.
    pub key_id: Uuid,
    /// The caller's label.
    pub name: String,
    /// The first characters of the key.
    pub prefix: String,
    /// Scopes, canonical.
    pub scopes: Vec<String>,
    /// The key's own limit, when it has one.
    pub rate_limit_per_minute: Option<i32>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last used (updated at most about once a minute per process).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// What [`create`] stores.
#[derive(Debug)]
pub struct NewKeyRow<'a> {
    /// The caller's label.
    pub name: &'a str,
    /// Scopes, canonical.
    pub scopes: &'a [String],
    /// Per-key limit, or the default.
    pub rate_limit_per_minute: Option<i32>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Stores a new key of `user_id`; 409 `too_many_keys` at the account's limit.
pub async fn create(
    pool: &PgPool,
    user_id: Uuid,
    key: &NewKey,
    row: NewKeyRow<'_>,
) -> Result<KeyRow, ApiError> {
    let mut tx = pool.begin().await?;
    // Serializes the count and the insert per user: two concurrent creations cannot both pass.
    sqlx::query!(
        "SELECT user_id FROM tinydevcrm.users WHERE user_id = $1 FOR UPDATE",
        user_id
    )
    .fetch_one(&mut *tx)
    .await?;
    let count = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM tinydevcrm.api_keys WHERE user_id = $1"#,
        user_id
    )
    .fetch_one(&mut *tx)
    .await?;
    ApiError::check_quota(count, MAX_KEYS_PER_USER, "too_many_keys", "API keys")?;
    let stored = sqlx::query_as!(
        KeyRow,
        r#"INSERT INTO tinydevcrm.api_keys
               (key_id, user_id, name, prefix, key_hash, scopes, rate_limit_per_minute, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           RETURNING key_id, name, prefix, scopes, rate_limit_per_minute, created_at,
                     last_used_at, expires_at"#,
        Uuid::now_v7(),
        user_id,
        row.name,
        key.prefix,
        &key.hash[..],
        row.scopes,
        row.rate_limit_per_minute,
        row.expires_at,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(stored)
}

/// The keys of `user_id`, newest first.
pub async fn list(pool: &PgPool, user_id: Uuid) -> Result<Vec<KeyRow>, ApiError> {
    Ok(sqlx::query_as!(
        KeyRow,
        r#"SELECT key_id, name, prefix, scopes, rate_limit_per_minute, created_at,
                  last_used_at, expires_at
           FROM tinydevcrm.api_keys WHERE user_id = $1 ORDER BY created_at DESC, key_id DESC"#,
        user_id
    )
    .fetch_all(pool)
    .await?)
}

/// Revokes (deletes) a key of `user_id`; 404 when it has no such key. The deletion's trigger
/// announces it to every process in the same transaction.
pub async fn delete(pool: &PgPool, user_id: Uuid, key_id: Uuid) -> Result<(), ApiError> {
    let deleted = sqlx::query!(
        "DELETE FROM tinydevcrm.api_keys WHERE key_id = $1 AND user_id = $2",
        key_id,
        user_id
    )
    .execute(pool)
    .await?
    .rows_affected();
    if deleted == 0 {
        return Err(ApiError::NotFound {
            detail: format!("no API key {key_id}"),
        });
    }
    Ok(())
}

/// Why a key is refused.
fn refused(code: &'static str, detail: &str) -> ApiError {
    ApiError::unauthorized(code, detail)
}

/// Reads the key whose hash is `hash`: the key, or 401 (`token_invalid` when unknown or
/// revoked, `key_expired` past its expiry).
pub async fn lookup(
    pool: &PgPool,
    hash: &[u8; 32],
    default_limit: NonZeroU32,
) -> Result<KeyAuth, ApiError> {
    let row = sqlx::query!(
        r#"SELECT k.key_id, k.user_id, u.tenant_role, k.scopes, k.rate_limit_per_minute,
                  k.expires_at, (k.expires_at IS NOT NULL AND k.expires_at <= now()) AS "expired!"
           FROM tinydevcrm.api_keys k JOIN tinydevcrm.users u USING (user_id)
           WHERE k.key_hash = $1"#,
        &hash[..]
    )
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| {
        refused(
            "token_invalid",
            "the API key is not valid (unknown or revoked)",
        )
    })?;
    if row.expired {
        return Err(refused("key_expired", "the API key has expired"));
    }
    let tenant = Ident::new(row.tenant_role).map_err(|e| {
        ApiError::Internal(anyhow::anyhow!("BUG: stored tenant role is invalid: {e}"))
    })?;
    let grants = row
        .scopes
        .iter()
        .map(|s| Grant::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("BUG: a stored scope is invalid: {e}")))?;
    let rate_limit = row
        .rate_limit_per_minute
        .and_then(|n| u32::try_from(n).ok())
        .and_then(NonZeroU32::new)
        .unwrap_or(default_limit);
    Ok(KeyAuth {
        key_id: row.key_id,
        user_id: row.user_id,
        tenant,
        grants,
        rate_limit,
        expires_at: row.expires_at,
    })
}

/// Records that a key was used. Called at most once a minute per key and process.
pub async fn touch(pool: &PgPool, key_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tinydevcrm.api_keys SET last_used_at = now() WHERE key_id = $1",
        key_id
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Entries beyond this are dropped wholesale: a bound, not an eviction policy.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug)]
struct CacheEntry {
    key: Arc<KeyAuth>,
    epoch: u64,
    until: Instant,
}

/// Keys recently found live, by hash, trusted on the terms of `auth::sessions`: only at the
/// revocation epoch they were read at and while the hub listens, so a key deleted on any
/// process stops working here as soon as its notice arrives; never past its expiry nor `ttl`.
#[derive(Debug)]
pub struct KeyCache {
    ttl: Duration,
    revocations: Arc<Revocations>,
    entries: Mutex<HashMap<[u8; 32], CacheEntry>>,
}

impl KeyCache {
    /// A cache whose entries live at most `ttl` (zero turns it off).
    pub fn new(ttl: Duration, revocations: Arc<Revocations>) -> Self {
        Self {
            ttl,
            revocations,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], CacheEntry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live key of `hash`: remembered, or read (and remembered).
    pub async fn authenticate(
        &self,
        pool: &PgPool,
        hash: &[u8; 32],
        default_limit: NonZeroU32,
    ) -> Result<Arc<KeyAuth>, ApiError> {
        if let Some(epoch) = self.revocations.epoch()
            && let Some(entry) = self.entries().get(hash)
            && entry.epoch == epoch
            && entry.until > Instant::now()
        {
            return Ok(Arc::clone(&entry.key));
        }
        // Taken before the read: an answer read after a revocation's notice arrived is kept
        // only under the epoch that notice moved to.
        let ticket = self.revocations.epoch();
        let key = Arc::new(lookup(pool, hash, default_limit).await?);
        if let Some(epoch) = ticket
            && !self.ttl.is_zero()
        {
            let left = key.expires_at.map_or(self.ttl, |at| {
                (at - Utc::now()).to_std().unwrap_or(Duration::ZERO)
            });
            let until = Instant::now() + self.ttl.min(left);
            let mut entries = self.entries();
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(
                *hash,
                CacheEntry {
                    key: Arc::clone(&key),
                    epoch,
                    until,
                },
            );
        }
        Ok(key)
    }

    /// A key was revoked by this process: nothing remembered counts any more, here at once
    /// (other processes hear it from the notice).
    pub fn revoked(&self) {
        self.entries().clear();
        self.revocations.revoked();
    }
}

/// The rate-limit state of one key-authenticated answer, sent as `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    /// Requests per window.
    pub limit: u32,
    /// Requests left in this window.
    pub remaining: u32,
    /// Seconds until the window resets.
    pub reset_secs: u64,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

/// Per-key request counters of this process: a fixed one-minute window per key, started by
/// its first request. Per process (docs/API.md): with N processes behind a balancer a key gets
/// at most N times its limit; sharing the count would cost a database write per request.
#[derive(Debug)]
pub struct KeyMeter {
    window: Duration,
    windows: Mutex<HashMap<Uuid, Window>>,
}

impl Default for KeyMeter {
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

/// What [`KeyMeter::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// The headers to send.
    pub state: RateState,
    /// Whether the request is over the limit (429).
    pub refused: bool,
    /// Whether this request opened a new window: the moment to record `last_used_at`, so it
    /// is written at most once a window per key and process.
    pub new_window: bool,
}

impl KeyMeter {
    /// Counters over windows of `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request of `key_id` against `limit` requests per window.
    pub fn admit(&self, key_id: Uuid, limit: NonZeroU32) -> Admission {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if windows.len() >= MAX_ENTRIES {
            windows.retain(|_, w| now.duration_since(w.start) < self.window);
        }
        let mut new_window = false;
        let window = windows.entry(key_id).or_insert_with(|| {
            new_window = true;
            Window {
                start: now,
                count: 0,
            }
        });
        if now.duration_since(window.start) >= self.window {
            *window = Window {
                start: now,
                count: 0,
            };
            new_window = true;
        }
        let refused = window.count >= limit.get();
        if !refused {
            window.count += 1;
        }
        let left = self.window.saturating_sub(now.duration_since(window.start));
        Admission {
            state: RateState {
                limit: limit.get(),
                remaining: limit.get().saturating_sub(window.count),
                // Rounded up: a client waiting this long finds the new window.
                reset_secs: left.as_secs() + u64::from(left.subsec_nanos() > 0),
            },
            refused,
            new_window,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_only_their_prefix_is_shown() {
        let (a, b) = (generate(), generate());
        assert_ne!(a.secret, b.secret);
        assert!(
            a.secret.starts_with("tdc_") && a.secret.len() == 4 + 43,
            "{}",
            a.secret
        );
        assert!(a.secret.starts_with(&a.prefix) && a.prefix.len() == 12);
        assert_eq!(a.hash, hash(&a.secret));
        assert!(!format!("{a:?}").contains(&a.secret));
    }

    #[test]
    fn scopes_read_back_as_themselves_and_names_fold_like_table_names() {
        let id = "0190f3a2-7c4e-7d2a-9b1e-3f5a6c7d8e9f";
        for scope in [
            "views:read:sales".to_owned(),
            "tables:read:calls".to_owned(),
            "tables:append:calls".to_owned(),
            format!("channels:listen:{id}"),
            "views:refresh:sales".to_owned(),
            "*:read".to_owned(),
        ] {
            assert_eq!(Grant::parse(&scope).expect(&scope).to_string(), scope);
        }
        assert_eq!(
            Grant::parse("views:read:Sales").expect("folds").to_string(),
            "views:read:sales"
        );
    }

    #[test]
    fn unknown_scopes_are_refused_naming_them() {
        for bad in [
            "",
            "*",
            "*:write",
            "views:write:sales",
            "views:read",
            "views:read:",
            "views:read:1abc",
            "views:read:a b",
            "keys:read:x",
            "tables:replace:calls",
            "channels:listen:not-a-uuid",
            "*:read:x",
        ] {
            let err = Grant::parse(bad).expect_err(bad);
            assert_eq!(err.code(), "invalid_scope", "{bad}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn each_grant_allows_its_own_action_on_its_own_resource_only() {
        let (a, b) = (Ident::new("a").expect("a"), Ident::new("b").expect("b"));
        let (c1, c2) = (Uuid::now_v7(), Uuid::now_v7());
        let needs = [
            Scope::ViewsRead(&a),
            Scope::ViewsRead(&b),
            Scope::TablesRead(&a),
            Scope::TablesAppend(&a),
            Scope::TablesReplace(&a),
            Scope::ChannelsListen(c1),
            Scope::ChannelsListen(c2),
            Scope::ViewsRefresh(&a),
            Scope::List,
        ];
        let allowed = |grant: &Grant| -> Vec<String> {
            needs
                .iter()
                .filter(|n| n.granted_by(grant))
                .map(|n| n.needed())
                .collect()
        };
        assert_eq!(allowed(&Grant::ViewsRead(a.clone())), ["views:read:a"]);
        assert_eq!(allowed(&Grant::TablesRead(a.clone())), ["tables:read:a"]);
        assert_eq!(
            allowed(&Grant::TablesAppend(a.clone())),
            ["tables:append:a"]
        );
        assert_eq!(
            allowed(&Grant::ViewsRefresh(a.clone())),
            ["views:refresh:a"]
        );
        assert_eq!(
            allowed(&Grant::ChannelsListen(c1)),
            [format!("channels:listen:{c1}")]
        );
        assert_eq!(
            allowed(&Grant::ReadAll),
            [
                "views:read:a".to_owned(),
                "views:read:b".to_owned(),
                "tables:read:a".to_owned(),
                format!("channels:listen:{c1}"),
                format!("channels:listen:{c2}"),
                "*:read".to_owned(),
            ]
        );
    }

    #[test]
    fn a_key_gets_its_limit_per_window_then_429_until_the_window_resets() {
        let meter = KeyMeter::new(Duration::from_millis(300));
        let (key, other) = (Uuid::now_v7(), Uuid::now_v7());
        let two = NonZeroU32::new(2).expect("2");
        let first = meter.admit(key, two);
        assert!(first.new_window && !first.refused);
        assert_eq!((first.state.limit, first.state.remaining), (2, 1));
        let second = meter.admit(key, two);
        assert!(!second.new_window && !second.refused && second.state.remaining == 0);
        let third = meter.admit(key, two);
        assert!(third.refused && third.state.remaining == 0 && third.state.reset_secs == 1);
        assert!(
            !meter.admit(other, two).refused,
            "another key has its own count"
        );
        std::thread::sleep(Duration::from_millis(350));
        let later = meter.admit(key, two);
        assert!(later.new_window && !later.refused && later.state.remaining == 1);
    }
}
