//! SQL of incremental views: the objects in the tenant's schema (the table readers see and the
//! two definitions it is computed from), the registry column, and the pending changes appends
//! leave for the next refresh.

use chrono::NaiveDateTime;
use sqlx::{PgConnection, PgPool, QueryBuilder};
use uuid::Uuid;

use super::Incremental;
use crate::db::ident::Ident;
use crate::db::tenant::ServiceTx;
use crate::error::ApiError;
use crate::tables::plan::{ColumnPlan, Mode, RangeTracker};

/// The definitions of an incremental view, in the tenant's schema: the whole query (`full`)
/// and the query bounded on the source column (`range`). Plain views: PostgreSQL keeps their
/// resolved trees and their dependencies on the tables they read. Their names start with
/// `pg_`, which no table or view name of a user may ([`crate::tables::name::table_name`]).
pub fn definitions(view_id: Uuid) -> (Ident, Ident) {
    let id = view_id.simple();
    let name = |kind: &str| {
        Ident::new(format!("pg_incr_{kind}_{id}"))
            .unwrap_or_else(|_| unreachable!("a uuid in hex is a valid identifier"))
    };
    (name("full"), name("range"))
}

/// The stored shape of an incremental view, or `None` for a materialized view.
pub async fn load(pool: &PgPool, view_id: Uuid) -> Result<Option<Incremental>, ApiError> {
    let stored: Option<Option<sqlx::types::Json<Incremental>>> =
        sqlx::query_scalar("SELECT incremental FROM tinydevcrm.views WHERE view_id = $1")
            .bind(view_id)
            .fetch_optional(pool)
            .await?;
    Ok(stored.flatten().map(|j| j.0))
}

/// Stores the shape of a just-registered view.
pub async fn save(conn: &mut ServiceTx, view_id: Uuid, inc: &Incremental) -> Result<(), ApiError> {
    sqlx::query("UPDATE tinydevcrm.views SET incremental = $2 WHERE view_id = $1")
        .bind(view_id)
        .bind(sqlx::types::Json(inc))
        .execute(&mut **conn)
        .await?;
    Ok(())
}

/// Columns of `table` that incremental views compute buckets from: an append records the
/// range of each.
pub async fn tracked_columns(
    pool: &PgPool,
    user_id: Uuid,
    table: &str,
) -> Result<Vec<String>, ApiError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT incremental->>'source_column' FROM tinydevcrm.views
         WHERE user_id = $1 AND incremental->>'source_table' = $2",
    )
    .bind(user_id)
    .bind(table)
    .fetch_all(pool)
    .await?)
}

/// A tracker of the columns of `plan_columns` that incremental views compute buckets from.
pub async fn tracker(
    pool: &PgPool,
    user_id: Uuid,
    table: &str,
    plan_columns: &[ColumnPlan],
) -> Result<RangeTracker, ApiError> {
    let watched = tracked_columns(pool, user_id, table).await?;
    Ok(RangeTracker::new(
        watched
            .into_iter()
            .filter_map(|name| {
                let index = plan_columns.iter().position(|c| c.name == name)?;
                Some((index, name))
            })
            .collect(),
    ))
}

/// What the tracker saw, per column; a range chrono cannot hold is left unbounded.
fn touched(tracker: &RangeTracker) -> Vec<Touched> {
    tracker
        .columns()
        .into_iter()
        .map(|c| {
            let at = |us| chrono::DateTime::from_timestamp_micros(us).map(|t| t.naive_utc());
            let range = c.min.zip(c.max).and_then(|(lo, hi)| at(lo).zip(at(hi)));
            Touched {
                nulls: c.nulls || (c.min.is_some() && range.is_none()),
                range,
                column: c.name,
            }
        })
        .collect()
}

/// What an append saw of one tracked column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touched {
    /// The column.
    pub column: String,
    /// Least and greatest value written (UTC wall-clock time for `timestamptz`); `None` when
    /// no row was written.
    pub range: Option<(NaiveDateTime, NaiveDateTime)>,
    /// Some written row held NULL there (its bucket is NULL, which no range names).
    pub nulls: bool,
}

/// Records, in the append's transaction, what each incremental view reading `table` must
/// recompute: the touched range of its source column for an append to its source table, a
/// full refresh for anything else (a replace, or a change to a table it joins).
pub async fn record_changes(
    conn: &mut ServiceTx,
    user_id: Uuid,
    table: &str,
    mode: Mode,
    tracker: &RangeTracker,
) -> Result<(), ApiError> {
    let append = mode == Mode::Append;
    let touched = touched(tracker);
    // The views' rows are held until the append commits: a view dropped meanwhile is either
    // gone before this reads (and skipped) or waits, never a foreign-key error that would roll
    // the rows back.
    let views: Vec<(Uuid, sqlx::types::Json<Incremental>)> = sqlx::query_as(
        "SELECT view_id, incremental FROM tinydevcrm.views
         WHERE user_id = $1 AND incremental IS NOT NULL AND $2 = ANY (base_relations)
         FOR KEY SHARE",
    )
    .bind(user_id)
    .bind(table)
    .fetch_all(&mut **conn)
    .await?;
    for (view_id, inc) in views {
        let seen = touched.iter().find(|t| t.column == inc.source_column);
        let (range, full) = match seen {
            Some(t) if append && inc.source_table == table && !t.nulls => (t.range, false),
            _ => (None, true),
        };
        sqlx::query(
            "INSERT INTO tinydevcrm.view_pending (view_id, range_from, range_to, full_refresh)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(view_id)
        .bind(range.map(|r| r.0))
        .bind(range.map(|r| r.1))
        .bind(full)
        .execute(&mut **conn)
        .await?;
    }
    Ok(())
}

/// A pending change.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Pending {
    /// Its id, consumed by the refresh that read it.
    pub pending_id: i64,
    /// Least source value touched.
    pub range_from: Option<NaiveDateTime>,
    /// Greatest source value touched.
    pub range_to: Option<NaiveDateTime>,
    /// Cannot be bounded.
    pub full_refresh: bool,
}

/// The view's pending changes.
pub async fn pending(
    conn: impl sqlx::PgExecutor<'_>,
    view_id: Uuid,
) -> Result<Vec<Pending>, sqlx::Error> {
    sqlx::query_as(
        "SELECT pending_id, range_from, range_to, full_refresh FROM tinydevcrm.view_pending
         WHERE view_id = $1 ORDER BY pending_id",
    )
    .bind(view_id)
    .fetch_all(conn)
    .await
}

/// Removes the changes a committed refresh accounted for (in its transaction).
pub async fn consume(conn: &mut ServiceTx, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM tinydevcrm.view_pending WHERE pending_id = ANY ($1)")
        .bind(ids)
        .execute(&mut **conn)
        .await?;
    Ok(())
}

/// `SET LOCAL ROLE` to the tenant (and its schema) inside a service transaction, for DDL that
/// must be the tenant's; [`as_service`] goes back.
pub async fn as_tenant(conn: &mut PgConnection, tenant: &Ident) -> Result<(), sqlx::Error> {
    let mut sql = QueryBuilder::<sqlx::Postgres>::new("SET LOCAL search_path = ");
    sql.push(tenant).push("; SET LOCAL ROLE ").push(tenant);
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.sql().as_str().to_owned()))
        .execute(conn)
        .await?;
    Ok(())
}

/// Back to the service role after [`as_tenant`].
pub async fn as_service(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql("RESET ROLE; SET LOCAL search_path = public")
        .execute(conn)
        .await?;
    Ok(())
}

/// `CREATE VIEW schema.name AS <sql>`, as the tenant: resolved, nothing run.
pub async fn create_definition(
    conn: &mut PgConnection,
    schema: &Ident,
    name: &Ident,
    sql: &str,
) -> Result<(), sqlx::Error> {
    let mut ddl = QueryBuilder::new("CREATE VIEW ");
    ddl.push(schema)
        .push(".")
        .push(name)
        .push(" AS\n")
        .push(sql)
        .push("\n");
    ddl.build().execute(conn).await?;
    Ok(())
}

/// The table readers see, shaped like the full definition, empty, with an index on the bucket
/// column (each refresh deletes by it).
pub async fn create_storage(
    conn: &mut PgConnection,
    schema: &Ident,
    name: &Ident,
    full: &Ident,
    bucket: &crate::db::ident::ColumnIdent,
) -> Result<(), sqlx::Error> {
    let mut ddl = QueryBuilder::new("CREATE TABLE ");
    ddl.push(schema).push(".").push(name);
    ddl.push(" AS SELECT * FROM ")
        .push(schema)
        .push(".")
        .push(full);
    ddl.push(" WITH NO DATA");
    ddl.build().execute(&mut *conn).await?;
    let mut index = QueryBuilder::new("CREATE INDEX ON ");
    index
        .push(schema)
        .push(".")
        .push(name)
        .push(" (")
        .push(bucket)
        .push(")");
    index.build().execute(conn).await?;
    Ok(())
}

/// The stored query tree (`pg_rewrite.ev_action`) and relation id of a view or materialized
/// view in `schema`, read as the service role.
pub async fn stored_tree(
    conn: &mut PgConnection,
    schema: &Ident,
    name: &Ident,
) -> Result<(u32, String), sqlx::Error> {
    let (relid, text): (i64, String) = sqlx::query_as(
        "SELECT c.oid::int8, r.ev_action::text
         FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_catalog.pg_rewrite r ON r.ev_class = c.oid AND r.rulename = '_RETURN'
         WHERE n.nspname = $1 AND c.relname = $2",
    )
    .bind(schema.as_str())
    .bind(name.as_str())
    .fetch_one(conn)
    .await?;
    Ok((u32::try_from(relid).unwrap_or(0), text))
}

/// A table's name in `schema` and the name and type of its column `attno`.
pub async fn source_column(
    conn: &mut PgConnection,
    schema: &Ident,
    relid: u32,
    attno: i64,
) -> Result<Option<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.relname::text, a.attname::text, a.atttypid::int8
         FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
         WHERE n.nspname = $1 AND c.oid = $2::int8::oid AND a.attnum = $3 AND NOT a.attisdropped",
    )
    .bind(schema.as_str())
    .bind(i64::from(relid))
    .bind(attno)
    .fetch_optional(conn)
    .await
}

/// The first of the tables `relids` (in `schema`) that is not one of the user's uploaded
/// tables (the tables registry), by name.
pub async fn not_uploaded(
    conn: &mut PgConnection,
    user_id: Uuid,
    schema: &Ident,
    relids: &[u32],
) -> Result<Option<String>, sqlx::Error> {
    let relids: Vec<i64> = relids.iter().map(|id| i64::from(*id)).collect();
    sqlx::query_scalar(
        "SELECT coalesce(c.relname::text, r.id::text)
         FROM unnest($3::int8[]) r(id)
         LEFT JOIN pg_catalog.pg_class c ON c.oid = r.id::oid
         LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE NOT EXISTS (SELECT 1 FROM tinydevcrm.tables t
                           WHERE t.user_id = $1 AND t.table_name = c.relname::text
                             AND n.nspname = $2)
         ORDER BY 1 LIMIT 1",
    )
    .bind(user_id)
    .bind(schema.as_str())
    .bind(&relids)
    .fetch_optional(conn)
    .await
}

/// Functions and operators of the ids that are not in `pg_catalog` (the recompute query's
/// added conditions may use only built-ins).
pub async fn outside_catalog(
    conn: &mut PgConnection,
    functions: &[i64],
    operators: &[i64],
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM unnest($1::int8[]) f(id)
                 LEFT JOIN pg_catalog.pg_proc p ON p.oid = f.id::oid
                 WHERE p.pronamespace IS DISTINCT FROM 'pg_catalog'::pg_catalog.regnamespace)
              + (SELECT count(*) FROM unnest($2::int8[]) o(id)
                 LEFT JOIN pg_catalog.pg_operator p ON p.oid = o.id::oid
                 WHERE p.oprnamespace IS DISTINCT FROM 'pg_catalog'::pg_catalog.regnamespace)",
    )
    .bind(functions)
    .bind(operators)
    .fetch_one(conn)
    .await
}

/// Drops an incremental view's table (and, by dependency, views over it only with `cascade`)
/// and its definitions, as the tenant.
pub async fn drop_view(
    conn: &mut PgConnection,
    schema: &Ident,
    name: &Ident,
    view_id: Uuid,
    cascade: bool,
) -> Result<(), ApiError> {
    crate::tables::store::drop_relation(conn, "DROP TABLE ", schema, name, cascade, || {
        ApiError::Conflict {
            code: "view_has_dependents",
            detail: format!(
                "other views depend on {:?}; delete them first or pass ?cascade=true",
                name.as_str()
            ),
        }
    })
    .await?;
    drop_definitions(conn, schema, view_id).await
}

/// Drops an incremental view's definitions, if they are there.
async fn drop_definitions(
    conn: &mut PgConnection,
    schema: &Ident,
    view_id: Uuid,
) -> Result<(), ApiError> {
    let (full, range) = definitions(view_id);
    let mut sql = QueryBuilder::new("DROP VIEW IF EXISTS ");
    sql.push(schema)
        .push(".")
        .push(&full)
        .push(", ")
        .push(schema)
        .push(".")
        .push(&range);
    sql.build().execute(conn).await?;
    Ok(())
}

/// Drops the tables of incremental views whose definitions are gone (a source table dropped
/// with `cascade`), with what depends on them, as the service role (a member of the tenant
/// role, so an owner). The registry rows go in `views::store::forget_dropped`. A view whose
/// table is gone too (a create undone after its first fill failed) has only definitions
/// left, if any: dropping its table again would fail.
pub async fn drop_orphans(
    conn: &mut ServiceTx,
    user_id: Uuid,
    schema: &Ident,
) -> Result<(), ApiError> {
    let orphans: Vec<(Uuid, String, bool)> = sqlx::query_as(
        "SELECT v.view_id, v.view_name, EXISTS (
             SELECT 1 FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $2 AND c.relname = v.view_name AND c.relkind = 'r')
         FROM tinydevcrm.views v
         WHERE v.user_id = $1 AND v.incremental IS NOT NULL AND NOT EXISTS (
             SELECT 1 FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $2 AND c.relname = 'pg_incr_full_' || replace(v.view_id::text, '-', ''))",
    )
    .bind(user_id)
    .bind(schema.as_str())
    .fetch_all(&mut **conn)
    .await?;
    for (view_id, view_name, has_table) in orphans {
        let Ok(name) = Ident::new(view_name) else {
            continue;
        };
        if has_table {
            drop_view(conn, schema, &name, view_id, true).await?;
        } else {
            drop_definitions(conn, schema, view_id).await?;
        }
    }
    Ok(())
}
