//! Per-tenant quotas that hold under concurrency: how many tables and views, jobs and channels a
//! tenant has (counted under a lock on the tenant's user row, in the transaction that inserts),
//! and how much storage its tables and views take (measured by PostgreSQL).

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::ident::Ident;
use crate::error::ApiError;

/// What a count quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Tables and views together: they share the tenant's schema.
    Relations,
    /// Jobs.
    Jobs,
    /// Channels.
    Channels,
}

impl Counted {
    fn count_sql(self) -> &'static str {
        match self {
            Self::Relations => {
                "SELECT (SELECT count(*) FROM tinydevcrm.tables WHERE user_id = $1)
                      + (SELECT count(*) FROM tinydevcrm.views WHERE user_id = $1)"
            }
            Self::Jobs => "SELECT count(*) FROM tinydevcrm.jobs WHERE user_id = $1",
            Self::Channels => "SELECT count(*) FROM tinydevcrm.channels WHERE user_id = $1",
        }
    }

    fn code(self) -> &'static str {
        match self {
            Self::Relations => "too_many_tables",
            Self::Jobs => "too_many_jobs",
            Self::Channels => "too_many_channels",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Self::Relations => "tables and views (together)",
            Self::Jobs => "jobs",
            Self::Channels => "channels",
        }
    }
}

/// How many `what` the user has now (no lock: a quick early refusal before expensive work).
pub async fn count(
    conn: impl PgExecutor<'_>,
    user_id: Uuid,
    what: Counted,
) -> Result<i64, ApiError> {
    Ok(sqlx::query_scalar(what.count_sql())
        .bind(user_id)
        .fetch_one(conn)
        .await?)
}

/// 409 when the user already has `max` of `what`.
pub fn check(count: i64, max: i64, what: Counted) -> Result<(), ApiError> {
    ApiError::check_quota(count, max, what.code(), what.plural())
}

/// Checks a count quota atomically, as the service role, inside the transaction that will
/// insert the new row: the user's row is locked until commit, so parallel creations of one
/// tenant count one after another and never together exceed `max`.
///
/// `FOR NO KEY UPDATE` rather than `FOR UPDATE`: it conflicts with itself but not with the
/// `KEY SHARE` locks that foreign-key checks of other inserts (sessions, ...) take.
pub async fn check_locked(
    conn: &mut PgConnection,
    user_id: Uuid,
    what: Counted,
    max: i64,
) -> Result<(), ApiError> {
    sqlx::query("SELECT 1 FROM tinydevcrm.users WHERE user_id = $1 FOR NO KEY UPDATE")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    check(count(&mut *conn, user_id, what).await?, max, what)
}

/// The statement of [`storage_bytes`]; binds the schema name.
#[doc(hidden)]
pub const STORAGE_BYTES_SQL: &str = "WITH busy AS (
             SELECT l.relation FROM pg_catalog.pg_locks l
              WHERE l.mode = 'AccessExclusiveLock' AND l.relation IS NOT NULL
                AND l.pid <> pg_catalog.pg_backend_pid()
                AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                                   WHERE d.datname = pg_catalog.current_database()))
         SELECT coalesce(sum(CASE WHEN c.oid IN (SELECT relation FROM busy)
                                  THEN c.relpages::bigint
                                       * pg_catalog.current_setting('block_size')::bigint
                                  ELSE pg_catalog.pg_total_relation_size(c.oid) END), 0)::bigint
           FROM pg_catalog.pg_depend d
           JOIN pg_catalog.pg_class c ON c.oid = d.objid
          WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
            AND d.refobjid = (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = $1)
            AND d.refobjsubid = 0 AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
            AND c.relkind IN ('r', 'm')";

/// Bytes the tenant's tables and materialized views take now, indexes and TOAST included, as
/// PostgreSQL measures them; in a transaction that writes, its own uncommitted rows count.
/// Run as the service role (tenants may not read the catalogs).
///
/// Measuring a relation takes a share lock on it until the transaction ends. A relation that
/// another transaction holds (or waits for) exclusively, a view in the middle of a plain
/// refresh, is counted at its last recorded size (`relpages`) instead: two refreshes that each
/// hold their own view and then measured the other's would deadlock.
///
/// The schema's relations are found through `pg_depend` (each one depends on its schema, and
/// that catalog is indexed by the object depended on): `pg_class` has no index on the schema
/// alone, and scanning it all took 19 ms at 2,600 tenants, on every upload (issue 13 §4).
pub async fn storage_bytes(conn: &mut PgConnection, tenant: &Ident) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(STORAGE_BYTES_SQL)
        .bind(tenant.as_str())
        .fetch_one(conn)
        .await
}

/// The 409 `storage_quota_exceeded` when `used` is above `quota`.
pub fn check_storage(used: i64, quota: u64) -> Result<(), ApiError> {
    if u64::try_from(used).unwrap_or(0) <= quota {
        return Ok(());
    }
    Err(ApiError::Conflict {
        code: "storage_quota_exceeded",
        detail: format!(
            "this would take the tenant's tables and views to at least {used} bytes, over the \
             storage quota of {quota} bytes; nothing was changed. Delete tables or views you no \
             longer need, write fewer rows, or ask the operator for a larger quota \
             (TDC_TENANT_STORAGE_BYTES)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_up_to_the_quota_is_allowed_and_one_byte_more_is_refused() {
        assert!(check_storage(100, 100).is_ok());

        let refused = check_storage(101, 100).expect_err("over");

        assert_eq!(refused.code(), "storage_quota_exceeded");
        let detail = refused.to_string();
        assert!(
            detail.contains("101 bytes") && detail.contains("100 bytes"),
            "{detail}"
        );
    }
}
