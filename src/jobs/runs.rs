//! SQL of the run history: reading a job's runs and pruning old ones.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::states::RunStatus;
use crate::error::ApiError;

/// One run of a job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunRow {
    /// The run's id (the `run_id` of its channel events).
    pub run_id: Uuid,
    /// The tick it ran for.
    pub scheduled_for: DateTime<Utc>,
    /// When the refresh started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Where the run is.
    pub status: RunStatus,
    /// Attempts made (retries included).
    pub attempts: i32,
    /// Rows in the view afterwards.
    pub row_count: Option<i64>,
    /// How long it took, retries included.
    pub duration_ms: Option<i64>,
    /// Why it failed or was skipped.
    pub error: Option<String>,
}

/// A page of a job's runs, newest tick first, before `before` when given.
pub async fn runs(
    pool: &PgPool,
    job_id: Uuid,
    before: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<RunRow>, ApiError> {
    Ok(sqlx::query_as!(
        RunRow,
        r#"SELECT run_id, scheduled_for, started_at, finished_at, status AS "status: RunStatus",
                  attempts, row_count, duration_ms, error
           FROM tinydevcrm.job_runs
           WHERE job_id = $1 AND ($2::timestamptz IS NULL OR scheduled_for < $2)
           ORDER BY scheduled_for DESC LIMIT $3"#,
        job_id,
        before,
        limit,
    )
    .fetch_all(pool)
    .await?)
}

/// The latest run of each of a user's jobs that has one (of one view's when `view_id` is given),
/// by job id: the listing shows the same `last_run` as a job's own description.
pub async fn last_runs(
    pool: &PgPool,
    user_id: Uuid,
    view_id: Option<Uuid>,
) -> Result<std::collections::HashMap<Uuid, RunRow>, ApiError> {
    let rows = sqlx::query!(
        r#"SELECT j.job_id, r.run_id, r.scheduled_for, r.started_at, r.finished_at,
                  r.status AS "status: RunStatus", r.attempts, r.row_count, r.duration_ms, r.error
           FROM tinydevcrm.jobs j
           CROSS JOIN LATERAL (
               SELECT * FROM tinydevcrm.job_runs
               WHERE job_id = j.job_id
               ORDER BY scheduled_for DESC LIMIT 1
           ) r
           WHERE j.user_id = $1 AND ($2::uuid IS NULL OR j.view_id = $2)"#,
        user_id,
        view_id,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.job_id,
                RunRow {
                    run_id: r.run_id,
                    scheduled_for: r.scheduled_for,
                    started_at: r.started_at,
                    finished_at: r.finished_at,
                    status: r.status,
                    attempts: r.attempts,
                    row_count: r.row_count,
                    duration_ms: r.duration_ms,
                    error: r.error,
                },
            )
        })
        .collect())
}

/// The latest run of a job.
pub async fn last_run(pool: &PgPool, job_id: Uuid) -> Result<Option<RunRow>, ApiError> {
    Ok(runs(pool, job_id, None, 1).await?.into_iter().next())
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// When the first attempt started.
    pub started_at: DateTime<Utc>,
    /// When the last attempt ended.
    pub finished_at: DateTime<Utc>,
    /// How it ended (never `running`).
    pub status: RunStatus,
    /// Attempts made.
    pub attempts: i32,
    /// Rows in the view afterwards.
    pub row_count: Option<i64>,
    /// Why it failed, or why the refresh was skipped.
    pub error: Option<String>,
}

/// Deletes finished runs older than `max_age`, and beyond the newest `keep` of each job (the
/// janitor's work, hence `anyhow`).
pub async fn prune_runs(
    pool: &PgPool,
    max_age: chrono::Duration,
    keep: i64,
) -> anyhow::Result<u64> {
    let cutoff = Utc::now() - max_age;
    let by_age = sqlx::query!(
        "DELETE FROM tinydevcrm.job_runs WHERE status <> $2 AND finished_at < $1",
        cutoff,
        RunStatus::Running.as_str(),
    )
    .execute(pool)
    .await
    .with_context(|| format!("deleting job runs that finished before {cutoff}"))?
    .rows_affected();
    let by_count = sqlx::query!(
        "DELETE FROM tinydevcrm.job_runs r USING (
             SELECT run_id FROM (
                 SELECT run_id, status,
                        row_number() OVER (PARTITION BY job_id ORDER BY scheduled_for DESC) AS n
                 FROM tinydevcrm.job_runs
             ) ranked WHERE n > $1 AND status <> $2
         ) old WHERE r.run_id = old.run_id",
        keep,
        RunStatus::Running.as_str(),
    )
    .execute(pool)
    .await
    .with_context(|| format!("deleting job runs beyond the newest {keep} of each job"))?
    .rows_affected();
    Ok(by_age + by_count)
}
