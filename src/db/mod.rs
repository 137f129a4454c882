//! Database plumbing: the connection pool, migrations, validated identifiers, tenant
//! provisioning and the managed local PostgreSQL cluster.

pub mod hardening;
pub mod ident;
pub mod local_cluster;
pub mod notify;
pub mod probe;
pub mod quota;
pub mod tenant;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Opens a pool that gives up quickly when the database is away, so requests fail with a clear
/// 503/500 instead of hanging.
///
/// The search path is pinned to `public`: PostgreSQL's default `"$user", public` would resolve
/// to our `tinydevcrm` schema once it exists (the service role has the same name), and sqlx
/// would then look for its migration table in a different schema on the second start.
pub fn pool(options: PgConnectOptions, max_connections: u32) -> PgPool {
    pool_counting_role_leaks(options, max_connections, Arc::default())
}

/// [`pool`], counting in `role_leaks` each connection its release hook closed for coming back
/// under another role (also counted in `tdc_pool_role_leaks_total`). The hook hides a leak from
/// anyone who asks the pool afterwards, so tests assert on this count instead.
pub fn pool_counting_role_leaks(
    options: PgConnectOptions,
    max_connections: u32,
    role_leaks: Arc<AtomicU64>,
) -> PgPool {
    let options = options.options([("search_path", "public")]);
    let service_role = options.get_username().to_owned();
    PgPoolOptions::new()
        // Last line of defence: a connection that comes back as anyone but the service role
        // (a role switch that outlived its transaction) is closed, never reused.
        .after_release(move |conn, _| {
            let service_role = service_role.clone();
            let role_leaks = Arc::clone(&role_leaks);
            Box::pin(async move {
                let current: String = sqlx::query_scalar("SELECT current_user::text").fetch_one(&mut *conn).await?;
                if current != service_role {
                    role_leaks.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("tdc_pool_role_leaks_total").increment(1);
                    tracing::error!(%current, "a pooled connection came back under another role; closing it");
                }
                Ok(current == service_role)
            })
        })
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Some(Duration::from_secs(60)))
        .connect_lazy_with(options)
}

/// Applies every pending forward-only migration from `migrations/`.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await
}

/// Warns when the service role could be abused (a superuser). What tenants may do is asked
/// separately, check by check ([`hardening`]).
pub async fn check_privileges(pool: &PgPool) -> Result<(), sqlx::Error> {
    let superuser: bool =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(pool)
            .await?;
    if superuser {
        tracing::warn!(
            "the service role is a superuser; use a role with CREATEROLE only (docs/OPERATIONS.md)"
        );
    }
    Ok(())
}
