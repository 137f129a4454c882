//! SQL of the job registry: creating, reading, changing and deleting jobs, and the job as the
//! API describes it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::runs::RunRow;
use super::states::Overlap;
use crate::db::quota::{self, Counted};
use crate::error::ApiError;

/// The `NOTIFY` channel that wakes schedulers when jobs change or a run ends.
pub const NOTIFY_CHANNEL: &str = "tdc_jobs";

/// A job as stored, with its view's name.
#[derive(Debug, Clone)]
pub struct JobRow {
    /// Primary key.
    pub job_id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// The view it refreshes.
    pub view_id: Uuid,
    /// That view's name.
    pub view_name: String,
    /// The crontab as given.
    pub crontab_def: String,
    /// IANA time zone the crontab is read in.
    pub timezone: String,
    /// What a tick does while the previous run goes on.
    pub overlap: Overlap,
    /// Extra attempts after a failure.
    pub retries: i32,
    /// Paused when false.
    pub enabled: bool,
    /// The next tick to run.
    pub next_run_at: Option<DateTime<Utc>>,
    /// Set while a run is in progress.
    pub lease_until: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

fn not_found(job_id: Uuid) -> ApiError {
    ApiError::NotFound {
        detail: format!("no job {job_id}"),
    }
}

/// What a new job is made of.
#[derive(Debug)]
pub struct NewJob<'a> {
    /// Owner.
    pub user_id: Uuid,
    /// The view to refresh.
    pub view_id: Uuid,
    /// The crontab (already checked).
    pub crontab_def: &'a str,
    /// IANA time zone (already checked).
    pub timezone: &'a str,
    /// What a tick does while the previous run goes on.
    pub overlap: Overlap,
    /// Extra attempts after a failure.
    pub retries: i32,
    /// Starts paused when false.
    pub enabled: bool,
    /// First tick (`None` when paused).
    pub next_run_at: Option<DateTime<Utc>>,
}

/// Inserts a job and wakes the schedulers; 409 `too_many_jobs` when the user already has
/// `max_jobs` (checked atomically with the insert).
pub async fn create(pool: &PgPool, job: &NewJob<'_>, max_jobs: i64) -> Result<JobRow, ApiError> {
    let mut tx = pool.begin().await?;
    quota::check_locked(&mut tx, job.user_id, Counted::Jobs, max_jobs).await?;
    let job_id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO tinydevcrm.jobs (job_id, user_id, view_id, crontab_def, timezone, overlap, retries, enabled, next_run_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        job_id,
        job.user_id,
        job.view_id,
        job.crontab_def,
        job.timezone,
        job.overlap.as_str(),
        job.retries,
        job.enabled,
        job.next_run_at,
    )
    .execute(&mut *tx)
    .await?;
    wake_schedulers(&mut tx).await?;
    let row = find_in(&mut tx, job.user_id, job_id).await?;
    tx.commit().await?;
    Ok(row)
}

/// Tells every scheduler (at commit) to look at the jobs again.
pub async fn wake_schedulers(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

async fn find_in(conn: &mut PgConnection, user_id: Uuid, job_id: Uuid) -> Result<JobRow, ApiError> {
    sqlx::query_as!(
        JobRow,
        r#"SELECT j.job_id, j.user_id, j.view_id, v.view_name, j.crontab_def, j.timezone,
                  j.overlap AS "overlap: Overlap", j.retries, j.enabled, j.next_run_at,
                  j.lease_until, j.created_at, j.updated_at
           FROM tinydevcrm.jobs j JOIN tinydevcrm.views v USING (view_id)
           WHERE j.user_id = $1 AND j.job_id = $2"#,
        user_id,
        job_id,
    )
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| not_found(job_id))
}

/// A user's job; another user's is simply not found.
pub async fn find(pool: &PgPool, user_id: Uuid, job_id: Uuid) -> Result<JobRow, ApiError> {
    let mut conn = pool.acquire().await?;
    find_in(&mut conn, user_id, job_id).await
}

/// Locks a user's job for an update.
pub async fn lock(
    conn: &mut PgConnection,
    user_id: Uuid,
    job_id: Uuid,
) -> Result<JobRow, ApiError> {
    sqlx::query_as!(
        JobRow,
        r#"SELECT j.job_id, j.user_id, j.view_id, v.view_name, j.crontab_def, j.timezone,
                  j.overlap AS "overlap: Overlap", j.retries, j.enabled, j.next_run_at,
                  j.lease_until, j.created_at, j.updated_at
           FROM tinydevcrm.jobs j JOIN tinydevcrm.views v USING (view_id)
           WHERE j.user_id = $1 AND j.job_id = $2
           FOR UPDATE OF j"#,
        user_id,
        job_id,
    )
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| not_found(job_id))
}

/// A user's jobs, oldest first; `view_id` narrows to one view's.
pub async fn list(
    pool: &PgPool,
    user_id: Uuid,
    view_id: Option<Uuid>,
) -> Result<Vec<JobRow>, ApiError> {
    Ok(sqlx::query_as!(
        JobRow,
        r#"SELECT j.job_id, j.user_id, j.view_id, v.view_name, j.crontab_def, j.timezone,
                  j.overlap AS "overlap: Overlap", j.retries, j.enabled, j.next_run_at,
                  j.lease_until, j.created_at, j.updated_at
           FROM tinydevcrm.jobs j JOIN tinydevcrm.views v USING (view_id)
           WHERE j.user_id = $1 AND ($2::uuid IS NULL OR j.view_id = $2)
           ORDER BY j.created_at, j.job_id"#,
        user_id,
        view_id,
    )
    .fetch_all(pool)
    .await?)
}

/// Writes a locked job's new settings (and its new `updated_at`) and wakes the schedulers.
pub async fn update(conn: &mut PgConnection, job: &mut JobRow) -> Result<(), ApiError> {
    job.updated_at = sqlx::query_scalar!(
        "UPDATE tinydevcrm.jobs SET crontab_def = $2, timezone = $3, overlap = $4, retries = $5,
             enabled = $6, next_run_at = $7, updated_at = now()
         WHERE job_id = $1 RETURNING updated_at",
        job.job_id,
        job.crontab_def,
        job.timezone,
        job.overlap.as_str(),
        job.retries,
        job.enabled,
        job.next_run_at,
    )
    .fetch_one(&mut *conn)
    .await?;
    wake_schedulers(conn).await?;
    Ok(())
}

/// Deletes a user's job (its runs go with it).
pub async fn delete(pool: &PgPool, user_id: Uuid, job_id: Uuid) -> Result<(), ApiError> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query!(
        "DELETE FROM tinydevcrm.jobs WHERE user_id = $1 AND job_id = $2",
        user_id,
        job_id,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if deleted == 0 {
        return Err(not_found(job_id));
    }
    wake_schedulers(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// A job id from the path or a body.
pub fn job_id(raw: &str) -> Result<Uuid, ApiError> {
    ApiError::id_in_path(raw, "job")
}

/// A job as the API describes it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobBody {
    /// The job's id.
    pub job_id: Uuid,
    /// The view it refreshes.
    pub view_name: String,
    /// The crontab as given.
    pub crontab_def: String,
    /// IANA time zone.
    pub timezone: String,
    /// What a tick does while the previous run goes on.
    pub overlap: Overlap,
    /// Extra attempts after a failure.
    pub retries: i32,
    /// Whether it is paused (no ticks run; `next_run_at` is null).
    pub paused: bool,
    /// Deprecated: the opposite of `paused`, kept for old clients.
    #[schema(deprecated)]
    pub enabled: bool,
    /// The next tick (`null` while paused).
    pub next_run_at: Option<DateTime<Utc>>,
    /// The latest run.
    pub last_run: Option<RunRow>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl JobBody {
    /// The description of a stored job.
    pub fn new(job: JobRow, last_run: Option<RunRow>) -> Self {
        Self {
            job_id: job.job_id,
            view_name: job.view_name,
            crontab_def: job.crontab_def,
            timezone: job.timezone,
            overlap: job.overlap,
            retries: job.retries,
            paused: !job.enabled,
            enabled: job.enabled,
            next_run_at: job.next_run_at,
            last_run,
            created_at: job.created_at,
            updated_at: job.updated_at,
        }
    }
}
