//! The DDL that cannot run in a transaction: `CREATE INDEX CONCURRENTLY` and `DROP INDEX
//! CONCURRENTLY`, as the tenant, on a connection of their own; and the storage measure the
//! handlers check around a build.

use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use tracing::Instrument;

use super::{IndexSpec, build_error, create_statement};
use crate::db::ident::Ident;
use crate::db::{quota, tenant};
use crate::error::ApiError;

/// Bytes the tenant's relations take now, measured as the service role.
pub async fn storage_bytes(pool: &PgPool, schema: &Ident) -> Result<i64, ApiError> {
    let mut conn = pool.acquire().await?;
    Ok(quota::storage_bytes(&mut conn, schema).await?)
}

/// A pooled connection that runs as the tenant for the whole session and is closed, never
/// returned: concurrent index DDL cannot run in a transaction, so `SET LOCAL` is out, and a
/// connection that stays a tenant must never serve anyone else. It stays counted in the pool
/// until it closes, so builds cannot take the process past `TDC_DB_MAX_CONNECTIONS` (a
/// detached one did: the pool opened a replacement for each).
async fn tenant_session(
    pool: &PgPool,
    schema: &Ident,
    statement_timeout: Duration,
) -> Result<PoolConnection<Postgres>, ApiError> {
    let mut conn = pool.acquire().await?;
    conn.close_on_drop();
    sqlx::query(
        "SELECT set_config('statement_timeout', $1, false), set_config('lock_timeout', '10s', false)",
    )
    .bind(format!("{}ms", statement_timeout.as_millis()))
    .execute(&mut *conn)
    .await?;
    let mut path = QueryBuilder::new("SET search_path TO ");
    path.push(schema);
    path.build().execute(&mut *conn).await?;
    let mut role = QueryBuilder::new("SET ROLE ");
    role.push(schema);
    role.build().execute(&mut *conn).await?;
    Ok(conn)
}

/// How long the drop of an index the service itself gives up on (a failed build, one over
/// the quota or the count) may take: `DROP INDEX CONCURRENTLY` waits, twice, for every
/// transaction that holds a lock on the table, each of which the statement timeout bounds.
/// Under the plain timeout the tenant's own reads of the table could make the drop time out
/// and leave the index behind.
fn cleanup_budget(statement_timeout: Duration) -> u128 {
    statement_timeout.as_millis().saturating_mul(3)
}

/// Gives the session the [`cleanup_budget`] as its statement and lock timeouts (with `SET`:
/// the tenant role may not call `set_config`; the number is ours).
async fn allow_cleanup(
    conn: &mut PgConnection,
    statement_timeout: Duration,
) -> Result<(), sqlx::Error> {
    let budget = cleanup_budget(statement_timeout);
    for setting in ["statement_timeout", "lock_timeout"] {
        let mut set = QueryBuilder::new("SET ");
        set.push(setting).push(" = ").push(budget);
        set.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// `DROP INDEX CONCURRENTLY IF EXISTS schema.index`.
async fn drop_statement(
    conn: &mut PgConnection,
    schema: &Ident,
    index: &Ident,
) -> Result<(), sqlx::Error> {
    let mut ddl = QueryBuilder::new("DROP INDEX CONCURRENTLY IF EXISTS ");
    ddl.push(schema).push(".").push(index);
    ddl.build().execute(conn).await.map(|_| ())
}

/// Builds one index with `CREATE INDEX CONCURRENTLY` as the tenant: reads and writes of the
/// table go on meanwhile. A failed build leaves an invalid index behind, which is dropped
/// before the error is returned. Runs in a task of its own, so a client that goes away does
/// not leave a half-built index.
pub async fn build_concurrently(
    pool: &PgPool,
    schema: &Ident,
    table: &Ident,
    spec: IndexSpec,
    statement_timeout: Duration,
) -> Result<(), ApiError> {
    let (pool, schema, table) = (pool.clone(), schema.clone(), table.clone());
    let task = tokio::spawn(
        async move {
        let mut conn = tenant_session(&pool, &schema, statement_timeout).await?;
        let built = create_statement(&schema, &table, &spec, true)
            .build()
            .execute(&mut *conn)
            .await;
        let result = match built {
            Ok(_) => Ok(()),
            Err(e) => {
                let cleanup = match allow_cleanup(&mut conn, statement_timeout).await {
                    Ok(()) => drop_statement(&mut conn, &schema, &spec.name).await,
                    Err(e) => Err(e),
                };
                if let Err(cleanup) = cleanup {
                    tracing::warn!(index = %spec.name.as_str(), error = %cleanup, "dropping a failed index build");
                }
                Err(build_error(e, &spec))
            }
        };
        let _ = conn.close().await;
        result
    }
        .instrument(tracing::Span::current()),
    );
    task.await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("an index build task failed: {e}")))?
}

/// Drops an index the service gives up on (over the quota, or over the count after a race)
/// with `DROP INDEX CONCURRENTLY` as the tenant, under the [`cleanup_budget`].
pub async fn drop_given_up(
    pool: &PgPool,
    schema: &Ident,
    index: &Ident,
    statement_timeout: Duration,
) -> Result<(), ApiError> {
    drop_as_tenant(pool, schema, index, statement_timeout, true).await
}

/// Drops one index with `DROP INDEX CONCURRENTLY` as the tenant.
pub async fn drop_concurrently(
    pool: &PgPool,
    schema: &Ident,
    index: &Ident,
    statement_timeout: Duration,
) -> Result<(), ApiError> {
    drop_as_tenant(pool, schema, index, statement_timeout, false).await
}

/// The drop of both, with the cleanup budget when `cleanup`.
async fn drop_as_tenant(
    pool: &PgPool,
    schema: &Ident,
    index: &Ident,
    statement_timeout: Duration,
    cleanup: bool,
) -> Result<(), ApiError> {
    let mut conn = tenant_session(pool, schema, statement_timeout).await?;
    let mut dropped = if cleanup {
        allow_cleanup(&mut conn, statement_timeout).await
    } else {
        Ok(())
    };
    if dropped.is_ok() {
        dropped = drop_statement(&mut conn, schema, index).await;
    }
    let _ = conn.close().await;
    dropped.map_err(|e| tenant::classify_error(e, "invalid_value").unwrap_or_else(ApiError::from))
}
