//! What handlers and background tasks share: the pool, settings, keys, limiters and the hub.
//! Below every route module and above the features' domain code, so no feature imports `app`.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::auth;
use crate::auth::jwt::JwtKeys;
use crate::auth::throttle::LoginThrottle;
use crate::channels::heartbeat::Heartbeat;
use crate::channels::hub::Hub;
use crate::config::Settings;
use crate::db;

/// State shared by every handler.
#[derive(Debug)]
pub struct AppState {
    /// The service role's pool.
    pub pool: PgPool,
    /// Resolved settings.
    pub settings: Arc<Settings>,
    /// JWT keys and validation rules.
    pub jwt: JwtKeys,
    /// Login limiters.
    pub login_throttle: LoginThrottle,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Per-tenant limits on heavy statements.
    pub tenant_slots: db::tenant::TenantSlots,
    /// Per-tenant limits on reads and exports in progress.
    pub read_slots: db::tenant::TenantSlots,
    /// Per-tenant limits on uploads in progress.
    pub upload_slots: db::tenant::TenantSlots,
    /// Per-tenant limits on open listen streams.
    pub stream_slots: db::tenant::TenantSlots,
    /// Per API key, inside its tenant's: stream slots of a key (by key id).
    pub key_stream_slots: db::tenant::TenantSlots,
    /// `/health`'s own database connection.
    pub health: db::probe::Probe,
    /// Sessions recently found live, trusted until a revocation is announced.
    pub sessions: auth::sessions::SessionCache,
    /// API keys recently found live, trusted until a revocation is announced.
    pub keys: auth::keys::KeyCache,
    /// Per-key request counts of this process (the keys' rate limits).
    pub key_meter: auth::keys::KeyMeter,
    /// Live channel events of this process.
    pub hub: Arc<Hub>,
    /// The one heartbeat of this process's SSE streams.
    pub heartbeat: Heartbeat,
    /// The key of e-mail confirmation and unsubscribe links.
    pub links: crate::notify::links::LinkKey,
    /// Whether SMTP is configured (else the e-mail routes that would send answer 503).
    pub mailer_configured: bool,
    /// The hub listener, the scheduler and the janitor: aborted when the server's state goes.
    pub background: Background,
}

/// Background tasks that end with the server.
#[derive(Debug, Default)]
pub struct Background(Vec<tokio::task::JoinHandle<()>>);

impl Background {
    /// Tasks to abort when the state is dropped.
    pub fn new(tasks: Vec<tokio::task::JoinHandle<()>>) -> Self {
        Self(tasks)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
