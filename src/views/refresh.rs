//! The one refresh function, used by the API and by the scheduler: refreshes a view as
//! its tenant with the limits, skips the work when nothing it depends on changed, and records
//! the outcome.

use std::fmt;
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgPool;

use uuid::Uuid;

use super::incremental::{
    self,
    refresh::{BucketRange, Mode},
};
use super::store::{self, RefreshRecord, RefreshStatus, ViewRow};
use crate::channels::events::{self, EventStatus, RefreshEvent};
use crate::db::ident::Ident;
use crate::db::tenant::{self, ServiceTx};
use crate::error::ApiError;

/// Maps a PostgreSQL error in tenant SQL to a 400 that quotes PostgreSQL (message, detail and
/// hint), never a 500. PostgreSQL's character position is left out: it counts in a statement
/// the user did not write (see [`view_sql_error`]).
pub fn tenant_sql_error(e: sqlx::Error) -> ApiError {
    sql_error(e, None)
}

/// [`tenant_sql_error`] for a refresh: a repeated key (or row) is the view's `unique_key` meeting
/// rows that repeat it (two NULLs included: the key's index treats NULLs as equal), a 400
/// `duplicate_unique_key` naming the key and the repeated value, not an SQL error.
/// The history of a refresh that did not run (skipped, or failed and rolled back) is written
/// after the fact: a view deleted meanwhile is gone, a 404, not an error of ours.
fn deleted_meanwhile(e: sqlx::Error, view: &ViewRow) -> ApiError {
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => ApiError::NotFound {
            detail: format!("view {:?} was deleted while it refreshed", view.view_name),
        },
        _ => ApiError::from(e),
    }
}

/// How many more times an incremental refresh runs after a serialization failure (waits of
/// 10, 20, 40, 80 and 160 ms).
const SNAPSHOT_RETRIES: u32 = 5;

fn refresh_error(e: sqlx::Error, unique_key: Option<&[String]>) -> ApiError {
    if tenant::serialization_failure(&e) {
        return ApiError::Conflict {
            code: "refresh_conflict",
            detail: "the view's channels or refresh history changed while it refreshed, every time it was tried; nothing was changed: send the refresh again".to_owned(),
        };
    }
    if let (sqlx::Error::Database(db), Some(key)) = (&e, unique_key)
        // unique_violation, or cardinality_violation: `REFRESH ... CONCURRENTLY` finding whole
        // rows repeated ("new data ... contains duplicate rows") before the index does.
        && matches!(db.code().as_deref(), Some("23505" | "21000"))
    {
        let repeated = db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(sqlx::postgres::PgDatabaseError::detail)
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        return ApiError::bad_request(
            "duplicate_unique_key",
            format!(
                "the view's unique_key {key:?} is repeated in the new rows{repeated}; a key identifies rows (two NULLs in it count as a repeat), so the refresh was rolled back. Make the key unique in the view's SQL, or create the view with another unique_key"
            ),
        );
    }
    tenant_sql_error(e)
}

/// [`tenant_sql_error`] for the statement that creates a view: `head` (the text before the
/// user's query in that statement) is taken off PostgreSQL's position, which then names the
/// line and column in `user_sql` (the user's own text) and the text found there.
pub fn view_sql_error(e: sqlx::Error, user_sql: &str, head: &str) -> ApiError {
    sql_error(e, Some((user_sql, head.chars().count())))
}

fn sql_error(e: sqlx::Error, source: Option<(&str, usize)>) -> ApiError {
    match tenant::classify_error(e, "invalid_sql") {
        Ok(classified) => classified,
        Err(sqlx::Error::Database(db)) => {
            let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>();
            let mut detail = format!("PostgreSQL: {}", db.message());
            let mut members = serde_json::Map::new();
            let position = match (pg.and_then(|pg| pg.position()), source) {
                (Some(sqlx::postgres::PgErrorPosition::Original(p)), Some((sql, head))) => p
                    .checked_sub(head)
                    .filter(|at| (1..=sql.chars().count()).contains(at))
                    .map(|at| (sql, at)),
                _ => None,
            };
            if let Some((sql, at)) = position {
                let (line, column, near) = locate(sql, at);
                detail.push_str(&format!(
                    " (sql_query line {line}, column {column}, at {near:?})"
                ));
                members.insert("position".to_owned(), at.into());
                members.insert("line".to_owned(), line.into());
                members.insert("line_column".to_owned(), column.into());
            }
            if let Some(pg) = pg {
                if let Some(more) = pg.detail() {
                    detail.push_str(&format!("; detail: {more}"));
                    members.insert("sql_detail".to_owned(), more.into());
                }
                if let Some(hint) = pg.hint() {
                    detail.push_str(&format!("; hint: {hint}"));
                    members.insert("hint".to_owned(), hint.into());
                }
            }
            ApiError::bad_request("invalid_sql", detail)
                .with_members(serde_json::Value::Object(members))
        }
        Err(other) => ApiError::from(other),
    }
}

/// The 1-based line and column of the 1-based character position `at` in `sql`, and the text
/// from there to the next blank (at most 40 characters). Characters are Unicode scalar values,
/// as PostgreSQL counts them; blanks are PostgreSQL's (space, tab, line feed, carriage return,
/// form feed): a Unicode space such as U+2028 is part of a PostgreSQL identifier.
fn locate(sql: &str, at: usize) -> (usize, usize, String) {
    let is_blank = |c: &char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c');
    let mut line = 1;
    let mut column = 1;
    for c in sql.chars().take(at.saturating_sub(1)) {
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    let near: String = sql
        .chars()
        .skip(at.saturating_sub(1))
        .take_while(|c| !is_blank(c))
        .take(40)
        .collect();
    (line, column, near)
}

/// What asked for a refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A request to the API (creating the view, or `POST /views/{name}/refresh/`).
    Api,
    /// A run of a job (the scheduler).
    Job {
        /// The job.
        job_id: Uuid,
        /// Its run, recorded as the refresh's `job_run_id`.
        run_id: Uuid,
    },
}

impl Trigger {
    /// The job, when a job run asked.
    pub fn job_id(self) -> Option<Uuid> {
        match self {
            Self::Api => None,
            Self::Job { job_id, .. } => Some(job_id),
        }
    }

    /// The job run, when a job run asked.
    pub fn run_id(self) -> Option<Uuid> {
        match self {
            Self::Api => None,
            Self::Job { run_id, .. } => Some(run_id),
        }
    }
}

/// For logs: `api`, or `job <job_id> run <run_id>`.
impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Api => f.write_str("api"),
            Self::Job { job_id, run_id } => write!(f, "job {job_id} run {run_id}"),
        }
    }
}

/// What a refresh of a view does, decided before any of the tenant's SQL runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Nothing it reads changed since its last successful refresh: recorded, not run.
    Skip,
    /// `REFRESH MATERIALIZED VIEW`, `CONCURRENTLY` when it may be.
    Refresh { concurrently: bool },
}

/// Skips only what is certain not to change: a view that is not volatile, reads tables only
/// (a view it reads changes without a counter of its own), and whose tables' change count is
/// the one of its last successful refresh. `CONCURRENTLY` needs the unique key and a populated
/// view, so the first fill is a plain refresh.
fn plan(view: &ViewRow, changes: i64, reads_views: bool) -> Plan {
    if !view.volatile && !reads_views && view.refreshed_changes == Some(changes) {
        return Plan::Skip;
    }
    Plan::Refresh {
        concurrently: view.unique_key.is_some() && view.refreshed_changes.is_some(),
    }
}

/// Refreshes `view`: skipped when it is not volatile, reads only tables, and none of them
/// changed since the last successful refresh; otherwise `REFRESH` (concurrently when it has a
/// unique key) as the tenant. A failure leaves the previous contents readable; so does a
/// refresh that takes the tenant's storage over `storage_quota` (409 `storage_quota_exceeded`).
///
/// A successful refresh, its history row and one event per watching channel commit in one
/// transaction: an event is never announced for a refresh that did not commit, and a committed
/// refresh never loses its event. Skips and failures are recorded but announce nothing.
/// A refresh's answer: its record, and how the view was recomputed (what its event says).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Refreshed {
    #[serde(flatten)]
    pub record: RefreshRecord,
    /// `full`, or `incremental` for an incremental view's bucket refresh; null when the
    /// refresh was skipped.
    pub mode: Option<Mode>,
    /// The first and last bucket recomputed (inclusive); null unless `mode` is `incremental`
    /// and some bucket was recomputed.
    pub buckets: Option<BucketRange>,
}

#[tracing::instrument(skip_all, fields(view = %view.view_name, trigger = %trigger))]
pub async fn refresh_view(
    pool: &PgPool,
    statement_timeout: Duration,
    storage_quota: u64,
    tenant: &Ident,
    view: &ViewRow,
    trigger: Trigger,
) -> Result<Refreshed, ApiError> {
    let clock = Instant::now();
    let result = refresh(
        pool,
        statement_timeout,
        storage_quota,
        tenant,
        view,
        trigger,
    )
    .await;
    let status = match &result {
        Ok(done) => done.record.status,
        Err(_) => RefreshStatus::Failed,
    };
    metrics::histogram!("tdc_view_refresh_duration_seconds", "status" => status.as_str())
        .record(clock.elapsed().as_secs_f64());
    result
}

async fn refresh(
    pool: &PgPool,
    statement_timeout: Duration,
    storage_quota: u64,
    tenant: &Ident,
    view: &ViewRow,
    trigger: Trigger,
) -> Result<Refreshed, ApiError> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let refresh_id = Uuid::new_v4();
    let job_run_id = trigger.run_id();
    let (changes, reads_views) = store::base_changes(pool, view).await?;
    let inc = incremental::store::load(pool, view.view_id).await?;
    let name = Ident::new(view.view_name.clone())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("BUG: stored view name: {e}")))?;
    let elapsed_ms =
        |clock: Instant| i64::try_from(clock.elapsed().as_millis()).unwrap_or(i64::MAX);
    let record = |status, row_count, error| RefreshRecord {
        refresh_id,
        started_at,
        finished_at: Utc::now(),
        status,
        row_count,
        duration_ms: elapsed_ms(clock),
        error,
    };

    let concurrently = match plan(view, changes, reads_views) {
        Plan::Refresh { concurrently } => concurrently,
        Plan::Skip => {
            let skipped = record(RefreshStatus::Skipped, None, None);
            let mut tx = ServiceTx::begin(pool).await?;
            store::record_refresh(
                &mut tx,
                view.view_id,
                refresh_id,
                job_run_id,
                &skipped,
                None,
            )
            .await
            .map_err(|e| deleted_meanwhile(e, view))?;
            tx.commit().await?;
            return Ok(Refreshed {
                record: skipped,
                mode: None,
                buckets: None,
            });
        }
    };

    let attempt = async || {
        let (mut tx, changes, pending, refreshed) = match &inc {
            // An incremental view reads what appends left to recompute, the change count and
            // the source rows on one snapshot, taken once this view's lock is held: an append
            // is wholly in this refresh (its range included) or wholly left for the next.
            Some(_) => {
                let mut tx = tenant::begin_snapshot_as(pool, tenant, statement_timeout).await?;
                incremental::refresh::lock(&mut tx, tenant, &name).await?;
                let mut service = tx.into_service().await?;
                let (changes, _) = store::base_changes(&mut *service, view).await?;
                let pending = incremental::store::pending(&mut *service, view.view_id).await?;
                let refreshed = store::last_refreshed(&mut *service, view.view_id).await?;
                let tx = service.into_tenant(tenant, statement_timeout).await?;
                (tx, changes, pending, refreshed)
            }
            None => (
                tenant::begin_as(pool, tenant, statement_timeout).await?,
                changes,
                Vec::new(),
                (view.refreshed_changes, None),
            ),
        };
        let (refreshed_changes, previous_rows) = refreshed;
        let (mode, buckets, rows_delta) = match &inc {
            Some(inc) => {
                let work = incremental::refresh::work(refreshed_changes, changes, &pending);
                let done =
                    incremental::refresh::run(&mut tx, tenant, &name, view.view_id, inc, &work)
                        .await?;
                (done.mode, done.buckets, done.rows_delta)
            }
            None => {
                store::refresh(&mut tx, tenant, &name, concurrently).await?;
                (Mode::Full, None, None)
            }
        };
        if let Some(key) = &view.unique_key
            && let Some(column) = store::null_key_column(&mut tx, tenant, &name, key).await?
        {
            return Ok(Err(ApiError::bad_request(
                "null_unique_key",
                format!(
                    "the view's unique_key column {column:?} would be NULL in some row; a key identifies rows, so the refresh was rolled back. Leave those rows out (WHERE {column} IS NOT NULL) or fill them (COALESCE) in the view's SQL"
                ),
            ))); // rolls the refresh back
        }
        // Only some buckets recomputed: the last count plus what changed (counting every row
        // of a large view would cost more than the recompute).
        let rows = match previous_rows.zip(rows_delta) {
            Some((before, delta)) if before.checked_add(delta).is_some_and(|n| n >= 0) => {
                before.checked_add(delta)
            }
            _ => crate::tables::store::row_count(&mut tx, tenant, &name)
                .await
                .ok(),
        };
        // The tenant SQL is done (REFRESH is security-restricted; nothing of the tenant's runs
        // after it): back to the service role to write the history and the events.
        let mut tx = tx.into_service().await?;
        let used = crate::db::quota::storage_bytes(&mut tx, tenant).await?;
        if let Err(over) = crate::db::quota::check_storage(used, storage_quota) {
            return Ok(Err(over)); // rolls the refresh back
        }
        let consumed: Vec<i64> = pending.iter().map(|p| p.pending_id).collect();
        incremental::store::consume(&mut tx, &consumed).await?;
        let done = record(RefreshStatus::Refreshed, rows, None);
        store::record_refresh(
            &mut tx,
            view.view_id,
            refresh_id,
            job_run_id,
            &done,
            Some(changes),
        )
        .await?;
        let event = RefreshEvent {
            view_name: view.view_name.clone(),
            job_id: trigger.job_id(),
            run_id: job_run_id.unwrap_or(refresh_id),
            refreshed_at: done.finished_at,
            row_count: done.row_count,
            duration_ms: done.duration_ms,
            status: EventStatus::Succeeded,
            mode,
            buckets: buckets.clone(),
        };
        events::append(&mut tx, view.view_id, &event).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(Ok(Refreshed {
            record: done,
            mode: Some(mode),
            buckets,
        }))
    };
    // A snapshot transaction meets a row changed after its snapshot (a channel of the view
    // deleted, or pruned by the retention task, while the refresh writes its events): the
    // refresh is tried again after a short wait, and past the last try answers 409.
    let mut tries = 0;
    let outcome = loop {
        match attempt().await {
            Err(e) if tenant::serialization_failure(&e) && tries < SNAPSHOT_RETRIES => {
                tokio::time::sleep(Duration::from_millis(10 << tries)).await;
                tries += 1;
            }
            result => break result,
        }
    };
    match outcome
        .map_err(|e| refresh_error(e, view.unique_key.as_deref()))
        .and_then(|done| done)
    {
        Ok(done) => Ok(done),
        Err(error) => {
            let failed = record(RefreshStatus::Failed, None, Some(error.to_string()));
            let mut tx = ServiceTx::begin(pool).await?;
            store::record_refresh(&mut tx, view.view_id, refresh_id, job_run_id, &failed, None)
                .await
                .map_err(|e| deleted_meanwhile(e, view))?;
            tx.commit().await?;
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_is_located_by_line_and_column_in_the_users_text() {
        let sql = "SELECT 1 AS a,\n  \"SomeNumbr\"\nFROM t";
        assert_eq!(locate(sql, 1), (1, 1, "SELECT".to_owned()));
        assert_eq!(locate(sql, 18), (2, 3, "\"SomeNumbr\"".to_owned()));
        assert_eq!(locate(sql, 30), (3, 1, "FROM".to_owned()));
        // Characters, not bytes, as PostgreSQL counts.
        assert_eq!(locate("SELECT 'é', x", 13), (1, 13, "x".to_owned()));
    }

    #[test]
    fn positions_around_wide_characters_and_odd_blanks_stay_in_the_users_text() {
        // 4-byte, combining and emoji characters just before the position.
        let sql = "SELECT '𝔘e\u{301}😀', nope";
        assert_eq!(locate(sql, 16), (1, 16, "nope".to_owned()));
        // CRLF: the line counts at the line feed, the carriage return ends the text shown.
        assert_eq!(
            locate("SELECT 1,\r\n  nope\r\nFROM t", 14),
            (2, 3, "nope".to_owned())
        );
        assert_eq!(locate("SELECT\tnope", 8), (1, 8, "nope".to_owned()));
        // U+2028 is no blank to PostgreSQL: it starts the identifier it names.
        assert_eq!(
            locate("SELECT 1,\u{2028}nope", 10),
            (1, 10, "\u{2028}nope".to_owned())
        );
        // The first and the last character; `at` 0 (never sent) does not underflow.
        assert_eq!(locate("x", 1), (1, 1, "x".to_owned()));
        assert_eq!(locate("ab 😀", 4), (1, 4, "😀".to_owned()));
        assert_eq!(locate("ab", 0), (1, 1, "ab".to_owned()));
    }

    fn view(refreshed_changes: Option<i64>, unique_key: bool, volatile: bool) -> ViewRow {
        ViewRow {
            view_id: Uuid::nil(),
            user_id: Uuid::nil(),
            view_name: "bill".to_owned(),
            sql_query: "SELECT 1".to_owned(),
            unique_key: unique_key.then(|| vec!["id".to_owned()]),
            volatile,
            base_relations: vec!["calls".to_owned()],
            refreshed_changes,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn an_unchanged_view_over_tables_is_skipped() {
        assert_eq!(plan(&view(Some(7), false, false), 7, false), Plan::Skip);
        assert_eq!(plan(&view(Some(7), true, false), 7, false), Plan::Skip);
    }

    #[test]
    fn a_change_to_any_table_it_reads_refreshes_it() {
        assert_eq!(
            plan(&view(Some(7), false, false), 8, false),
            Plan::Refresh {
                concurrently: false
            }
        );
    }

    #[test]
    fn a_view_never_refreshed_is_filled_plainly_even_with_a_unique_key() {
        for changes in [0, 7] {
            assert_eq!(
                plan(&view(None, true, false), changes, false),
                Plan::Refresh {
                    concurrently: false
                }
            );
        }
    }

    #[test]
    fn a_populated_view_with_a_unique_key_refreshes_concurrently() {
        assert_eq!(
            plan(&view(Some(7), true, false), 9, false),
            Plan::Refresh { concurrently: true }
        );
    }

    #[test]
    fn volatile_views_and_views_over_views_are_never_skipped() {
        for (volatile, reads_views) in [(true, false), (false, true), (true, true)] {
            assert_eq!(
                plan(&view(Some(7), true, volatile), 7, reads_views),
                Plan::Refresh { concurrently: true },
                "volatile {volatile}, reads views {reads_views}"
            );
        }
    }
}
