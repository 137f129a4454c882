//! SQL of tenant tables: the registry in `tinydevcrm.tables`, the DDL and COPY that run as the
//! tenant, and the catalog reads that describe a table.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, QueryBuilder};
use uuid::Uuid;

use super::plan::Plan;
use crate::db::ident::{ColumnIdent, Ident};
use crate::db::tenant::{self, ServiceTx};
use crate::error::{ApiError, ResultExt};

/// A registry row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TableRow {
    /// Primary key.
    pub table_id: Uuid,
    /// Folded name.
    pub table_name: String,
    /// Bumped by every ingest.
    pub change_count: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last ingest.
    pub updated_at: DateTime<Utc>,
}

/// A user's table by name; another user's table is simply not found.
pub async fn find(pool: &PgPool, user_id: Uuid, name: &Ident) -> Result<TableRow, ApiError> {
    sqlx::query_as!(
        TableRow,
        "SELECT table_id, table_name, change_count, created_at, updated_at
         FROM tinydevcrm.tables WHERE user_id = $1 AND table_name = $2",
        user_id,
        name.as_str(),
    )
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ApiError::NotFound {
        detail: format!("no table named {:?}", name.as_str()),
    })
}

/// A user's tables, by name.
pub async fn list(pool: &PgPool, user_id: Uuid) -> Result<Vec<TableRow>, ApiError> {
    Ok(sqlx::query_as!(
        TableRow,
        "SELECT table_id, table_name, change_count, created_at, updated_at
         FROM tinydevcrm.tables WHERE user_id = $1 ORDER BY table_name",
        user_id,
    )
    .fetch_all(pool)
    .await?)
}

fn column_idents(plan: &Plan) -> Result<Vec<ColumnIdent>, ApiError> {
    plan.columns
        .iter()
        .map(|c| {
            ColumnIdent::new(c.name.clone())
                .map_err(|e| ApiError::bad_request("column_mismatch", e.to_string()))
        })
        .collect()
}

/// `CREATE TABLE` for a plan, run as the tenant.
pub async fn create_table(
    conn: &mut PgConnection,
    schema: &Ident,
    name: &Ident,
    plan: &Plan,
) -> Result<(), ApiError> {
    let mut ddl = QueryBuilder::new("CREATE TABLE ");
    ddl.push(schema).push(".").push(name).push(" (");
    for (i, (ident, column)) in column_idents(plan)?.iter().zip(&plan.columns).enumerate() {
        if i > 0 {
            ddl.push(", ");
        }
        // PgType renders only fixed keywords and numbers.
        ddl.push(ident).push(" ").push(column.pg.to_string());
    }
    ddl.push(")");
    // Tables and views share the schema's namespace: PostgreSQL itself says the name is taken.
    match ddl.build().execute(&mut *conn).await {
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P07") => {
            return Err(table_exists(name));
        }
        other => other?,
    };
    Ok(())
}

/// The `COPY ... FROM STDIN (FORMAT binary)` statement for a plan.
pub fn copy_statement(schema: &Ident, name: &Ident, plan: &Plan) -> Result<String, ApiError> {
    let mut copy = QueryBuilder::<sqlx::Postgres>::new("COPY ");
    copy.push(schema).push(".").push(name).push(" (");
    for (i, ident) in column_idents(plan)?.iter().enumerate() {
        if i > 0 {
            copy.push(", ");
        }
        copy.push(ident);
    }
    copy.push(") FROM STDIN (FORMAT binary)");
    Ok(copy.sql().as_str().to_owned())
}

/// Registers a new table, as the service role; a duplicate name is a 409.
pub async fn register(
    conn: &mut ServiceTx,
    user_id: Uuid,
    name: &Ident,
) -> Result<TableRow, ApiError> {
    sqlx::query_as!(
        TableRow,
        "INSERT INTO tinydevcrm.tables (table_id, user_id, table_name) VALUES ($1, $2, $3)
         RETURNING table_id, table_name, change_count, created_at, updated_at",
        Uuid::new_v4(),
        user_id,
        name.as_str(),
    )
    .fetch_one(&mut **conn)
    .await
    .on_constraint("tables_user_id_table_name_key", || table_exists(name))
}

/// The 409 for a name in use.
pub fn table_exists(name: &Ident) -> ApiError {
    ApiError::Conflict {
        code: "table_exists",
        detail: format!(
            "a table, view or index named {:?} already exists (indexes share the names of tables and views)",
            name.as_str()
        ),
    }
}

/// A column of a table as the catalog has it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct ColumnInfo {
    /// Column name, case kept.
    pub column_name: String,
    /// PostgreSQL type.
    pub column_type: String,
}

/// Columns of a tenant table or view, in order, from the catalogs.
pub async fn columns(
    pool: &PgPool,
    schema: &Ident,
    name: &Ident,
) -> Result<Vec<ColumnInfo>, ApiError> {
    Ok(sqlx::query_as!(
        ColumnInfo,
        r#"SELECT a.attname::text AS "column_name!", format_type(a.atttypid, a.atttypmod) AS "column_type!"
         FROM pg_catalog.pg_attribute a
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum"#,
        schema.as_str(),
        name.as_str(),
    )
    .fetch_all(pool)
    .await?)
}

/// Bytes on disk of a tenant relation, indexes and TOAST included.
pub async fn size_bytes(pool: &PgPool, schema: &Ident, name: &Ident) -> Result<i64, ApiError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT COALESCE(pg_total_relation_size(c.oid), 0) AS "bytes!"
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = $2"#,
        schema.as_str(),
        name.as_str(),
    )
    .fetch_optional(pool)
    .await?
    .unwrap_or(0))
}

/// Exact row count, counted as the tenant. The relation was found a round trip before, so a
/// drop or a view's unfinished creation meanwhile is [`tenant::relation_changed`], not a 500.
pub async fn row_count(
    conn: &mut PgConnection,
    schema: &Ident,
    name: &Ident,
) -> Result<i64, ApiError> {
    let mut query = QueryBuilder::new("SELECT count(*) FROM ");
    query.push(schema).push(".").push(name);
    query
        .build_query_scalar::<i64>()
        .fetch_one(conn)
        .await
        .map_err(|e| tenant::relation_changed(&e).unwrap_or_else(|| ApiError::from(e)))
}

/// Drops a table as the tenant; its dependents (views) make it a 409 unless `cascade`.
pub async fn drop_table(
    conn: &mut PgConnection,
    schema: &Ident,
    name: &Ident,
    cascade: bool,
) -> Result<(), ApiError> {
    drop_relation(conn, "DROP TABLE ", schema, name, cascade, || {
        ApiError::Conflict {
            code: "table_has_dependents",
            detail: format!(
                "views depend on table {:?}; delete them first or pass ?cascade=true",
                name.as_str()
            ),
        }
    })
    .await
}

/// `<drop> schema.name RESTRICT|CASCADE` as the tenant; dependents without `cascade` become
/// the error `dependents` builds.
pub async fn drop_relation(
    conn: &mut PgConnection,
    drop: &'static str,
    schema: &Ident,
    name: &Ident,
    cascade: bool,
    dependents: impl FnOnce() -> ApiError,
) -> Result<(), ApiError> {
    let mut query = QueryBuilder::new(drop);
    query
        .push(schema)
        .push(".")
        .push(name)
        .push(if cascade { " CASCADE" } else { " RESTRICT" });
    match query.build().execute(&mut *conn).await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("2BP01") => {
            Err(dependents())
        }
        Err(e) => Err(ApiError::from(e)),
    }
}

/// Removes the registry row.
pub async fn unregister(conn: &mut ServiceTx, table_id: Uuid) -> Result<(), ApiError> {
    sqlx::query!(
        "DELETE FROM tinydevcrm.tables WHERE table_id = $1",
        table_id
    )
    .execute(&mut **conn)
    .await?;
    Ok(())
}

/// Deletes every row (for `mode=replace`): MVCC keeps readers on the old rows until commit,
/// without blocking them.
pub async fn delete_all_rows(
    conn: &mut PgConnection,
    schema: &Ident,
    name: &Ident,
) -> Result<(), ApiError> {
    let mut query = QueryBuilder::new("DELETE FROM ");
    query.push(schema).push(".").push(name);
    query.build().execute(conn).await?;
    Ok(())
}

/// Records that the table's rows changed (views use the counter to skip needless refreshes).
pub async fn bump_change_count(conn: &mut ServiceTx, table_id: Uuid) -> Result<(), ApiError> {
    sqlx::query!(
        "UPDATE tinydevcrm.tables SET change_count = change_count + 1, updated_at = now() WHERE table_id = $1",
        table_id,
    )
    .execute(&mut **conn)
    .await?;
    Ok(())
}
