//! Database plumbing: the connection pool, migrations, validated identifiers, tenant
//! provisioning and the managed local PostgreSQL cluster.

pub mod ident;
pub mod local_cluster;
pub mod tenant;

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
    let options = options.options([("search_path", "public")]);
    PgPoolOptions::new()
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
