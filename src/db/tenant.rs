//! Tenants in PostgreSQL: each user gets a role and a schema of its own with an opaque name
//! derived from the user id (never the e-mail, since every tenant can read schema names in the
//! catalogs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Postgres, QueryBuilder, SqlSafeStr, Transaction};
use uuid::Uuid;

use super::ident::Ident;
use crate::error::ApiError;

/// The role and schema name of a user's tenant: `t_` and the user id in hex.
pub fn tenant_name(user_id: Uuid) -> Ident {
    Ident::new(format!("t_{}", user_id.simple()))
        .expect("BUG: t_ + hex is always a valid identifier")
}

/// Creates the tenant's role and schema inside the caller's transaction, so a failed
/// registration leaves neither behind.
///
/// The role cannot log in and inherits nothing; the service role becomes a member so it can
/// later run tenant SQL with `SET LOCAL ROLE`. The schema belongs to the tenant role, and a new
/// schema grants nothing to anyone else. Nothing else is granted per tenant: what a tenant
/// needs beyond its schema (`TEMPORARY` on the database) `PUBLIC` holds (migration 0010), so a
/// sign-up writes no shared catalog row that grows with the number of tenants.
///
/// What still grows: PostgreSQL 15 rebuilds the service role's list of roles it belongs to on
/// every backend after each sign-up, in time that grows with the number of tenants
/// (docs/SCALING.md).
pub async fn provision(conn: &mut PgConnection, user_id: Uuid) -> Result<Ident, sqlx::Error> {
    let name = tenant_name(user_id);
    let mut create_role = QueryBuilder::new("CREATE ROLE ");
    create_role
        .push(&name)
        .push(" NOLOGIN NOINHERIT NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS");
    let mut grant = QueryBuilder::new("GRANT ");
    grant.push(&name).push(" TO CURRENT_USER");
    let mut create_schema = QueryBuilder::new("CREATE SCHEMA ");
    create_schema
        .push(&name)
        .push(" AUTHORIZATION ")
        .push(&name);
    for mut statement in [create_role, grant, create_schema] {
        statement.build().execute(&mut *conn).await?;
    }
    Ok(name)
}

/// A transaction whose statements run as a tenant's role. Tenant SQL runs only on this; the
/// way back to the service role is [`TenantTx::into_service`], which consumes it.
#[derive(Debug)]
pub struct TenantTx(Transaction<'static, Postgres>);

/// A transaction that runs as the service role: registry writes, run records and events take
/// this, so they cannot be handed a connection that is still a tenant.
#[derive(Debug)]
pub struct ServiceTx(Transaction<'static, Postgres>);

impl std::ops::Deref for TenantTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.0
    }
}

impl std::ops::DerefMut for TenantTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.0
    }
}

impl std::ops::Deref for ServiceTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.0
    }
}

impl std::ops::DerefMut for ServiceTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.0
    }
}

impl TenantTx {
    /// Back to the service role in the same transaction, once the tenant's statements are done.
    pub async fn into_service(mut self) -> Result<ServiceTx, sqlx::Error> {
        sqlx::raw_sql("RESET ROLE; SET LOCAL search_path = public")
            .execute(&mut *self.0)
            .await?;
        Ok(ServiceTx(self.0))
    }

    /// Commits the tenant's statements.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.0.commit().await
    }

    /// The storage of `tenant` measured as the service role, in the middle of this tenant
    /// transaction (between two `COPY` segments): nothing of the tenant's runs while the role
    /// is switched, and the tenant role is back before this returns.
    pub async fn storage_bytes(&mut self, tenant: &Ident) -> Result<i64, sqlx::Error> {
        sqlx::query("RESET ROLE").execute(&mut *self.0).await?;
        let used = super::quota::storage_bytes(&mut self.0, tenant).await?;
        let mut role = QueryBuilder::new("SET LOCAL ROLE ");
        role.push(tenant);
        role.build().execute(&mut *self.0).await?;
        Ok(used)
    }
}

impl ServiceTx {
    /// A service-role transaction on a pooled connection.
    pub async fn begin(pool: &PgPool) -> Result<Self, sqlx::Error> {
        Ok(Self(pool.begin().await?))
    }

    /// Back to the tenant role in the same transaction (after [`TenantTx::into_service`]), with
    /// the settings [`begin_as`] makes. This backend already took the role in this
    /// transaction, so no membership cache can refuse it.
    pub async fn into_tenant(
        mut self,
        tenant: &Ident,
        statement_timeout: Duration,
    ) -> Result<TenantTx, sqlx::Error> {
        sqlx::raw_sql(AssertSqlSafe(settings_sql(tenant, statement_timeout)))
            .execute(&mut *self.0)
            .await?;
        Ok(TenantTx(self.0))
    }

    /// Commits.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.0.commit().await
    }
}

/// Begins a transaction that runs as the tenant role, with the tenant's schema as search path
/// and a statement timeout. Settings end with the transaction, so the pooled connection comes
/// back clean.
pub async fn begin_as(
    pool: &PgPool,
    tenant: &Ident,
    statement_timeout: Duration,
) -> Result<TenantTx, sqlx::Error> {
    begin_as_on(pool, pool.acquire().await?, tenant, statement_timeout).await
}

/// [`begin_as`] in `REPEATABLE READ`: every statement from the first read on sees the database
/// at one point in time. Statements that take no snapshot (`LOCK TABLE`, `SET`) may come
/// first, so the snapshot can be taken after a lock is held. A write that meets a row changed
/// after the snapshot fails with `40001` ([`serialization_failure`]): try again.
pub async fn begin_snapshot_as(
    pool: &PgPool,
    tenant: &Ident,
    statement_timeout: Duration,
) -> Result<TenantTx, sqlx::Error> {
    begin_with(
        pool,
        pool.acquire().await?,
        tenant,
        statement_timeout,
        "BEGIN ISOLATION LEVEL REPEATABLE READ",
    )
    .await
}

/// A `REPEATABLE READ` transaction met a row another changed after its snapshot.
pub fn serialization_failure(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("40001"))
}

/// How many more connections [`begin_as_on`] tries when PostgreSQL refuses `SET ROLE` to a
/// tenant role; the waits before them double from [`SET_ROLE_RETRY_WAIT`] (300 ms in all).
const SET_ROLE_RETRIES: u32 = 4;
const SET_ROLE_RETRY_WAIT: Duration = Duration::from_millis(20);
static SET_ROLE_RETRIED: AtomicU64 = AtomicU64::new(0);

/// Refused `SET ROLE`s tried again on another connection since the process started (also
/// counted in `tdc_set_role_retries_total`).
pub fn set_role_retries() -> u64 {
    SET_ROLE_RETRIED.load(Ordering::Relaxed)
}

/// `SET ROLE` refused: the service role is not (or, for this backend, seems not to be) a member.
fn set_role_refused(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if db.code().as_deref() == Some("42501")
            && db.message().starts_with("permission denied to set role"))
}

/// Makes every backend rebuild its list of the service role's memberships: a backend whose
/// list was built while a grant committed keeps it without that tenant until some role
/// changes, which after the last sign-up of a burst may be never. Rewriting the tenant's own
/// `pg_authid` row (to what it already is) is such a change. Best effort: the retry that
/// follows is what answers the request.
async fn nudge_membership_caches(pool: &PgPool, tenant: &Ident) {
    let mut nudge = QueryBuilder::new("ALTER ROLE ");
    nudge.push(tenant).push(" NOLOGIN");
    if let Err(e) = nudge.build().execute(pool).await {
        tracing::warn!(%tenant, error = %e, "could not rewrite a tenant role to refresh membership caches");
    }
}

/// [`begin_as`] on a connection the caller already holds (a read that first looked its
/// relation up as the service role checks out one connection, not two).
///
/// A refused `SET ROLE` is tried again on other connections of `pool`. Every tenant role is
/// granted to the service role when it is created, yet PostgreSQL (15 at least) can refuse it:
/// each backend caches the roles its user is a member of, and a backend that was building that
/// list (which takes longer the more tenants there are: 15 ms at 2,000) while another
/// registration committed keeps a list without the newest tenants until the next role change.
/// Under steady sign-ups, a new tenant's first requests then failed with 500 now and then
/// (issue 13 §4). The refused connection is left in a failed transaction, which the pool's
/// release check closes, so it is not met again, and the other backends are made to rebuild
/// their lists ([`nudge_membership_caches`]).
pub async fn begin_as_on(
    pool: &PgPool,
    conn: PoolConnection<Postgres>,
    tenant: &Ident,
    statement_timeout: Duration,
) -> Result<TenantTx, sqlx::Error> {
    begin_with(pool, conn, tenant, statement_timeout, "BEGIN").await
}

async fn begin_with(
    pool: &PgPool,
    conn: PoolConnection<Postgres>,
    tenant: &Ident,
    statement_timeout: Duration,
    begin: &'static str,
) -> Result<TenantTx, sqlx::Error> {
    let mut conn = conn;
    let mut retried = 0;
    loop {
        let begin = AssertSqlSafe(format!(
            "{begin}; {}",
            settings_sql(tenant, statement_timeout)
        ));
        match Transaction::begin(conn, Some(begin.into_sql_str())).await {
            Ok(tx) => return Ok(TenantTx(tx)),
            Err(e) if retried < SET_ROLE_RETRIES && set_role_refused(&e) => {
                SET_ROLE_RETRIED.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tdc_set_role_retries_total").increment(1);
                tracing::warn!(%tenant, retried, "SET ROLE to a tenant role was refused; trying another connection");
                nudge_membership_caches(pool, tenant).await;
                tokio::time::sleep(SET_ROLE_RETRY_WAIT * 2u32.pow(retried)).await;
                retried += 1;
                conn = pool.acquire().await?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// `BEGIN`, every setting, then the role, as one simple query: one round trip. `SET LOCAL` ends
/// with the transaction, `SET LOCAL ROLE` makes the same membership check as `SET ROLE`, and
/// the role comes last so the settings are made by the service role. Nothing here comes from a
/// request: the tenant is a validated identifier (rendered quoted), the timeout a number. If a
/// statement fails (the role was dropped meanwhile), the connection is left in a failed
/// transaction, which the pool's release check closes.
fn settings_sql(tenant: &Ident, statement_timeout: Duration) -> String {
    format!(
        "SET LOCAL statement_timeout = {}; SET LOCAL lock_timeout = '10s'; \
         SET LOCAL work_mem = '32MB'; SET LOCAL idle_in_transaction_session_timeout = '60s'; \
         SET LOCAL search_path = {tenant}; SET LOCAL ROLE {tenant}",
        statement_timeout.as_millis()
    )
}

/// Per-tenant slots for heavy work (creating and refreshing views): beyond the limit a tenant
/// gets 429 instead of taking every connection from the others. Per process.
#[derive(Debug)]
pub struct TenantSlots {
    per_tenant: usize,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl TenantSlots {
    /// At most `per_tenant` heavy statements per tenant at once.
    pub fn new(per_tenant: usize) -> Self {
        Self {
            per_tenant: per_tenant.max(1),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for `tenant`, held until the permit drops; 429 `too_many_requests` (retry in a
    /// second) when all are taken.
    pub fn admit(&self, tenant: &Ident) -> Result<OwnedSemaphorePermit, ApiError> {
        self.try_acquire(tenant).ok_or(ApiError::TooManyRequests {
            retry_after_secs: 1,
        })
    }

    /// A slot for `tenant`, held until the permit drops; `None` when all are taken.
    pub fn try_acquire(&self, tenant: &Ident) -> Option<OwnedSemaphorePermit> {
        self.try_acquire_for(tenant.as_str())
    }

    /// A slot for any holder named by `name` (an API key's id, say); 429 when all are taken.
    pub fn admit_for(&self, name: &str) -> Result<OwnedSemaphorePermit, ApiError> {
        self.try_acquire_for(name).ok_or(ApiError::TooManyRequests {
            retry_after_secs: 1,
        })
    }

    fn try_acquire_for(&self, name: &str) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut slots = self
                .slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            slots
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
                .clone()
        };
        semaphore.try_acquire_owned().ok()
    }
}

/// A read of a tenant's relation found a round trip earlier (as the service role, nothing held
/// on it in between) that PostgreSQL refused because the tenant changed the relation meanwhile:
/// PostgreSQL's verdict is the answer, not a 500. It is gone (`undefined_table`: 404 as if never
/// found), it has other columns now (`undefined_column`: 409, read again), or it is a view
/// registered but not filled yet, between its creation's commit and its first refresh or after
/// that refresh failed (`object_not_in_prerequisite_state`: 409, retry). `None` for any other
/// failure.
pub fn relation_changed(e: &sqlx::Error) -> Option<ApiError> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    match db.code().as_deref() {
        Some("42P01") => Some(ApiError::NotFound {
            detail: "the table or view was deleted while it was being read".to_owned(),
        }),
        Some("42703") => Some(ApiError::Conflict {
            code: "relation_changed",
            detail: "the table or view was replaced while it was being read and its columns changed; read again".to_owned(),
        }),
        Some("55000") => Some(ApiError::Conflict {
            code: "view_not_populated",
            detail: "the view is not filled yet: its creation has not finished (or its first refresh failed and it is being removed); retry in a moment".to_owned(),
        }),
        _ => None,
    }
}

/// The failures of a statement run as a tenant that are the tenant's doing: the statement
/// timeout (`query_timeout`), a lock held past the lock timeout or a deadlock (409
/// `lock_timeout`, safe to retry), a
/// resource limit such as `temp_file_limit`
/// (`resource_limit_exceeded`), and data that does not fit (SQLSTATE class 22, answered with
/// `data_code`). Anything else comes back unchanged for the caller to decide.
pub fn classify_error(e: sqlx::Error, data_code: &'static str) -> Result<ApiError, sqlx::Error> {
    let sqlx::Error::Database(db) = &e else {
        return Err(e);
    };
    match db.code().as_deref() {
        Some("57014") => Ok(ApiError::bad_request(
            "query_timeout",
            "the query ran longer than the statement timeout and was cancelled",
        )),

        Some("55P03") => Ok(ApiError::lock_timeout()),
        // Two concurrent index builds (or a build and a drop) of one table wait for each
        // other's snapshots; PostgreSQL cancels one. Nothing is left behind: safe to retry.
        Some("40P01") => Ok(ApiError::Conflict {
            code: "lock_timeout",
            detail: "another statement on the same table deadlocked with this one and PostgreSQL cancelled it; retry".to_owned(),
        }),
        Some("53400") => Ok(ApiError::bad_request(
            "resource_limit_exceeded",
            format!(
                "the query hit a resource limit and was cancelled: {}",
                db.message()
            ),
        )),
        Some(code) if code.starts_with("22") => Ok(ApiError::bad_request(
            data_code,
            format!("PostgreSQL: {}", db.message()),
        )),
        _ => Err(e),
    }
}
