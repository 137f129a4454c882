//! SQL of views: the registry, the DDL run as the tenant, and the refresh history with its
//! [`RefreshStatus`]. Registry statements are checked at compile time; the DDL names the
//! tenant's relations, so it goes through `QueryBuilder` with [`Ident`]s.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::db::ident::{ColumnIdent, Ident};
use crate::db::notify::{self, Notice};
use crate::db::tenant::ServiceTx;
use crate::error::{ApiError, ResultExt};
use crate::tables::name::table_name;

/// A registry row.
#[derive(Debug, Clone)]
pub struct ViewRow {
    /// Primary key.
    pub view_id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Folded name.
    pub view_name: String,
    /// The checked, re-serialised SQL.
    pub sql_query: String,
    /// Columns of the unique index that allows concurrent refreshes.
    pub unique_key: Option<Vec<String>>,
    /// Calls a volatile or time-dependent function.
    pub volatile: bool,
    /// Tables and views it reads.
    pub base_relations: Vec<String>,
    /// Sum of the base tables' change counters at the last successful refresh.
    pub refreshed_changes: Option<i64>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A view by id (the scheduler's lookup).
pub async fn by_id(pool: &PgPool, view_id: Uuid) -> Result<Option<ViewRow>, sqlx::Error> {
    sqlx::query_as!(
        ViewRow,
        "SELECT view_id, user_id, view_name, sql_query, unique_key, volatile, base_relations,
                refreshed_changes, created_at
         FROM tinydevcrm.views WHERE view_id = $1",
        view_id,
    )
    .fetch_optional(pool)
    .await
}

/// A user's view by name; another user's is simply not found.
pub async fn find(pool: &PgPool, user_id: Uuid, name: &Ident) -> Result<ViewRow, ApiError> {
    sqlx::query_as!(
        ViewRow,
        "SELECT view_id, user_id, view_name, sql_query, unique_key, volatile, base_relations,
                refreshed_changes, created_at
         FROM tinydevcrm.views WHERE user_id = $1 AND view_name = $2",
        user_id,
        name.as_str(),
    )
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ApiError::NotFound {
        detail: format!("no view named {:?}", name.as_str()),
    })
}

/// A user's views, by name.
pub async fn list(pool: &PgPool, user_id: Uuid) -> Result<Vec<ViewRow>, ApiError> {
    Ok(sqlx::query_as!(
        ViewRow,
        "SELECT view_id, user_id, view_name, sql_query, unique_key, volatile, base_relations,
                refreshed_changes, created_at
         FROM tinydevcrm.views WHERE user_id = $1 ORDER BY view_name",
        user_id,
    )
    .fetch_all(pool)
    .await?)
}

/// Names of the user's tables and views (one namespace, like the schema's).
pub async fn relation_names(pool: &PgPool, user_id: Uuid) -> Result<HashSet<String>, ApiError> {
    let names = sqlx::query_scalar!(
        r#"SELECT table_name AS "name!" FROM tinydevcrm.tables WHERE user_id = $1
           UNION ALL SELECT view_name FROM tinydevcrm.views WHERE user_id = $1"#,
        user_id,
    )
    .fetch_all(pool)
    .await?;
    Ok(names.into_iter().collect())
}

/// What comes before the tenant's text in [`create_view`]'s statement. PostgreSQL's error
/// positions count from the start of the statement: taking this off points into the user's text.
pub fn create_view_head(schema: &Ident, name: &Ident) -> String {
    format!("CREATE MATERIALIZED VIEW {schema}.{name} AS\n")
}

/// `CREATE MATERIALIZED VIEW ... WITH NO DATA` from the tenant's own text, run as the tenant.
/// Nothing of the query runs: PostgreSQL only parses and resolves it, and `views::resolved`
/// then decides on what it resolved to. The line breaks keep a trailing `--` comment from
/// swallowing `WITH NO DATA`; any other way of escaping the clause is a syntax error, and the
/// check verifies that the view is unpopulated.
pub async fn create_view(
    conn: &mut PgConnection,
    schema: &Ident,
    name: &Ident,
    checked_sql: &str,
) -> Result<(), sqlx::Error> {
    let mut ddl = QueryBuilder::new(create_view_head(schema, name));
    ddl.push(checked_sql).push("\nWITH NO DATA");
    ddl.build().execute(conn).await?;
    Ok(())
}

/// A unique index on the given columns (makes `REFRESH ... CONCURRENTLY` possible). A key
/// identifies rows, so a refresh that leaves a NULL in it fails ([`null_key_column`]); the
/// index says so to the reader (`NULLS NOT DISTINCT` on a view: see
/// `query::relation`), whose keyset pages then start at the cursor in the index.
pub async fn create_unique_index(
    conn: &mut PgConnection,
    schema: &Ident,
    name: &Ident,
    columns: &[ColumnIdent],
) -> Result<(), sqlx::Error> {
    let mut ddl = QueryBuilder::new("CREATE UNIQUE INDEX ON ");
    ddl.push(schema).push(".").push(name).push(" (");
    for (i, column) in columns.iter().enumerate() {
        if i > 0 {
            ddl.push(", ");
        }
        ddl.push(column);
    }
    ddl.push(") NULLS NOT DISTINCT");
    ddl.build().execute(conn).await?;
    Ok(())
}

/// The first `unique_key` column that is NULL in some row of the view, if any (one index
/// probe per column: `IS NULL` is an index condition). Run as the tenant after a refresh.
pub async fn null_key_column(
    conn: &mut PgConnection,
    schema: &Ident,
    name: &Ident,
    unique_key: &[String],
) -> Result<Option<String>, sqlx::Error> {
    for column in unique_key {
        let Ok(ident) = ColumnIdent::new(column.clone()) else {
            continue;
        };
        let mut probe = QueryBuilder::new("SELECT EXISTS (SELECT 1 FROM ");
        probe
            .push(schema)
            .push(".")
            .push(name)
            .push(" WHERE ")
            .push(&ident)
            .push(" IS NULL)");
        if probe
            .build_query_scalar::<bool>()
            .fetch_one(&mut *conn)
            .await?
        {
            return Ok(Some(column.clone()));
        }
    }
    Ok(None)
}

/// `REFRESH MATERIALIZED VIEW [CONCURRENTLY]`, run as the tenant.
pub async fn refresh(
    conn: &mut PgConnection,
    schema: &Ident,
    name: &Ident,
    concurrently: bool,
) -> Result<(), sqlx::Error> {
    let mut sql = QueryBuilder::new("REFRESH MATERIALIZED VIEW ");
    if concurrently {
        sql.push("CONCURRENTLY ");
    }
    sql.push(schema).push(".").push(name);
    sql.build().execute(conn).await?;
    Ok(())
}

/// Registers a view, as the service role.
pub async fn register(
    conn: &mut ServiceTx,
    user_id: Uuid,
    name: &Ident,
    sql_query: &str,
    unique_key: Option<&[String]>,
    volatile: bool,
    base_relations: &[String],
) -> Result<ViewRow, ApiError> {
    sqlx::query_as!(
        ViewRow,
        "INSERT INTO tinydevcrm.views
             (view_id, user_id, view_name, sql_query, unique_key, volatile, base_relations)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING view_id, user_id, view_name, sql_query, unique_key, volatile, base_relations,
                   refreshed_changes, created_at",
        Uuid::new_v4(),
        user_id,
        name.as_str(),
        sql_query,
        unique_key,
        volatile,
        base_relations,
    )
    .fetch_one(&mut **conn)
    .await
    .on_constraint("views_user_id_view_name_key", || name_taken(name))
}

/// The 409 for a name already used by a table or view.
pub fn name_taken(name: &Ident) -> ApiError {
    ApiError::Conflict {
        code: "name_taken",
        detail: format!(
            "a table, view or index named {:?} already exists (indexes share the names of tables and views)",
            name.as_str()
        ),
    }
}

/// Sum of the change counters of the view's base tables, and whether it reads other views.
pub async fn base_changes(
    conn: impl sqlx::PgExecutor<'_>,
    view: &ViewRow,
) -> Result<(i64, bool), sqlx::Error> {
    let counted = sqlx::query!(
        r#"SELECT COALESCE(sum(change_count), 0)::bigint AS "changes!", count(*) AS "tables!"
           FROM tinydevcrm.tables WHERE user_id = $1 AND table_name = ANY($2)"#,
        view.user_id,
        &view.base_relations,
    )
    .fetch_one(conn)
    .await?;
    let reads_views = usize::try_from(counted.tables).unwrap_or(0) < view.base_relations.len();
    Ok((counted.changes, reads_views))
}

/// How a refresh ended, as `tinydevcrm.view_refreshes.status` and the API spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum RefreshStatus {
    /// Refreshed; its events were appended in the same transaction.
    Refreshed,
    /// Nothing it reads changed since the last refresh: not run.
    Skipped,
    /// Rolled back; the previous contents stay readable.
    Failed,
}

impl RefreshStatus {
    /// The one spelling, in the table and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refreshed => "refreshed",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for RefreshStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored status that is not a [`RefreshStatus`] (the table's check constraint forbids it).
#[derive(Debug, thiserror::Error)]
#[error("not a refresh status: {0:?}")]
pub struct NotARefreshStatus(String);

impl FromStr for RefreshStatus {
    type Err = NotARefreshStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Refreshed, Self::Skipped, Self::Failed]
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| NotARefreshStatus(s.to_owned()))
    }
}

impl serde::Serialize for RefreshStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

// Stored as `text`: written with `as_str`, read with `FromStr`.
impl sqlx::Type<Postgres> for RefreshStatus {
    fn type_info() -> PgTypeInfo {
        <&str as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <&str as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for RefreshStatus {
    fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(<&str as sqlx::Decode<'r, Postgres>>::decode(value)?.parse()?)
    }
}

/// One refresh as recorded.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RefreshRecord {
    /// This refresh's id (the `run_id` of its channel events when no job ran it).
    pub refresh_id: Uuid,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// `refreshed`, `skipped` or `failed`.
    pub status: RefreshStatus,
    /// Rows in the view afterwards.
    pub row_count: Option<i64>,
    /// How long it took.
    pub duration_ms: i64,
    /// Why it failed.
    pub error: Option<String>,
}

/// Appends to the refresh history, and remembers the base changes a success saw, inside the
/// caller's transaction (as the service role).
pub async fn record_refresh(
    conn: &mut ServiceTx,
    view_id: Uuid,
    refresh_id: Uuid,
    job_run_id: Option<Uuid>,
    record: &RefreshRecord,
    changes: Option<i64>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO tinydevcrm.view_refreshes (refresh_id, view_id, started_at, finished_at, status, row_count, duration_ms, error, job_run_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        refresh_id,
        view_id,
        record.started_at,
        record.finished_at,
        record.status.as_str(),
        record.row_count,
        record.duration_ms,
        record.error,
        job_run_id,
    )
    .execute(&mut **conn)
    .await?;
    if let Some(changes) = changes {
        sqlx::query!(
            "UPDATE tinydevcrm.views SET refreshed_changes = $2, refreshed_rows = $3, refreshed_rows_changes = $2
             WHERE view_id = $1",
            view_id,
            changes,
            record.row_count,
        )
        .execute(&mut **conn)
        .await?;
    }
    Ok(())
}

/// What the view's last successful refresh saw and left: the change count of its tables and
/// its row count. Read in an incremental refresh's snapshot, after its lock: the refresh that
/// committed last wrote them, whatever order refreshes started in.
pub async fn last_refreshed(
    conn: impl sqlx::PgExecutor<'_>,
    view_id: Uuid,
) -> Result<(Option<i64>, Option<i64>), sqlx::Error> {
    let row: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT refreshed_changes,
                CASE WHEN refreshed_rows_changes = refreshed_changes THEN refreshed_rows END
         FROM tinydevcrm.views WHERE view_id = $1",
    )
    .bind(view_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.unwrap_or((None, None)))
}

/// The latest refresh of a view.
pub async fn last_refresh(pool: &PgPool, view_id: Uuid) -> Result<Option<RefreshRecord>, ApiError> {
    Ok(sqlx::query_as!(
        RefreshRecord,
        r#"SELECT refresh_id, started_at, finished_at, status AS "status: RefreshStatus", row_count,
                  duration_ms, error
           FROM tinydevcrm.view_refreshes WHERE view_id = $1 ORDER BY started_at DESC LIMIT 1"#,
        view_id,
    )
    .fetch_optional(pool)
    .await?)
}

/// Drops a view as the tenant; dependent views make it a 409 unless `cascade`.
pub async fn drop_view(
    conn: &mut PgConnection,
    schema: &Ident,
    name: &Ident,
    cascade: bool,
) -> Result<(), ApiError> {
    crate::tables::store::drop_relation(
        conn,
        "DROP MATERIALIZED VIEW ",
        schema,
        name,
        cascade,
        || ApiError::Conflict {
            code: "view_has_dependents",
            detail: format!(
                "other views depend on {:?}; delete them first or pass ?cascade=true",
                name.as_str()
            ),
        },
    )
    .await
}

/// Forgets registry rows whose materialized view no longer exists (after a cascading drop);
/// their jobs and channels go with them, and a [`Notice::ChannelDeleted`] per channel, sent in
/// the caller's transaction, ends those channels' streams on every process once it commits.
pub async fn forget_dropped(
    conn: &mut ServiceTx,
    user_id: Uuid,
    schema: &Ident,
) -> Result<(), ApiError> {
    // An incremental view whose definitions went with a table goes too (its table is left).
    super::incremental::store::drop_orphans(conn, user_id, schema).await?;
    // The channel rows go by cascade; the outer SELECT still sees them (one snapshot). An
    // incremental view is a table of the service's ('r'), any other a materialized view.
    let channels = sqlx::query_scalar!(
        "WITH gone AS (
             DELETE FROM tinydevcrm.views v WHERE v.user_id = $1 AND NOT EXISTS (
                 SELECT 1 FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $2::text AND c.relname = v.view_name
                   AND c.relkind::text = CASE WHEN v.incremental IS NULL THEN 'm' ELSE 'r' END)
             RETURNING v.view_id
         )
         SELECT c.channel_id FROM tinydevcrm.channels c JOIN gone USING (view_id)",
        user_id,
        schema.as_str(),
    )
    .fetch_all(&mut **conn)
    .await?;
    let notices: Vec<Notice> = channels
        .into_iter()
        .map(|channel_id| Notice::ChannelDeleted { channel_id })
        .collect();
    notify::send(conn, &notices).await?;
    Ok(())
}

/// A view name from a path or body; one that cannot exist is simply not found.
pub fn lookup_name(raw: &str) -> Result<Ident, ApiError> {
    table_name(raw).map_err(|_| ApiError::NotFound {
        detail: format!("no view named {raw:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [RefreshStatus; 3] = [
        RefreshStatus::Refreshed,
        RefreshStatus::Skipped,
        RefreshStatus::Failed,
    ];

    #[test]
    fn every_status_reads_back_as_itself_and_is_spelled_as_the_table_allows() {
        let spelled: Vec<&str> = ALL.iter().map(|s| s.as_str()).collect();
        // The values of the check constraint view_refreshes_status_check.
        assert_eq!(spelled, ["refreshed", "skipped", "failed"]);
        for status in ALL {
            assert_eq!(status.as_str().parse::<RefreshStatus>().ok(), Some(status));
            assert_eq!(status.to_string(), status.as_str());
        }
    }

    #[test]
    fn other_spellings_are_not_statuses() {
        for junk in [
            "",
            "Refreshed",
            "SKIPPED",
            "succeeded",
            "failed ",
            "running",
        ] {
            assert!(junk.parse::<RefreshStatus>().is_err(), "{junk:?}");
        }
    }

    #[test]
    fn a_refresh_record_is_the_same_json_as_when_its_status_was_a_string() {
        let at = DateTime::parse_from_rfc3339("2024-05-06T07:08:09.123Z")
            .expect("a time")
            .with_timezone(&Utc);
        let record = RefreshRecord {
            refresh_id: Uuid::nil(),
            started_at: at,
            finished_at: at,
            status: RefreshStatus::Skipped,
            row_count: Some(3),
            duration_ms: 4,
            error: None,
        };
        assert_eq!(
            serde_json::to_string(&record).expect("json"),
            r#"{"refresh_id":"00000000-0000-0000-0000-000000000000","started_at":"2024-05-06T07:08:09.123Z","finished_at":"2024-05-06T07:08:09.123Z","status":"skipped","row_count":3,"duration_ms":4,"error":null}"#
        );
        for status in ALL {
            assert_eq!(
                serde_json::to_string(&status).expect("json"),
                format!("\"{}\"", status.as_str())
            );
        }
    }
}
