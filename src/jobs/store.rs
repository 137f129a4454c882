//! SQL of jobs: the registry, claiming due ticks, and the run history.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::quota::{self, Counted};
use crate::error::ApiError;

/// The `NOTIFY` channel that wakes schedulers when jobs change or a run ends.
pub const NOTIFY_CHANNEL: &str = "tdc_jobs";

/// A job as stored, with its view's name.
#[derive(Debug, Clone, sqlx::FromRow)]
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
    /// `skip` or `queue`.
    pub overlap: String,
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

const SELECT_JOB: &str =
    "SELECT j.job_id, j.user_id, j.view_id, v.view_name, j.crontab_def, j.timezone, j.overlap,
        j.retries, j.enabled, j.next_run_at, j.lease_until, j.created_at, j.updated_at
 FROM tinydevcrm.jobs j JOIN tinydevcrm.views v USING (view_id)";

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
    /// `skip` or `queue`.
    pub overlap: &'a str,
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
    sqlx::query(
        "INSERT INTO tinydevcrm.jobs (job_id, user_id, view_id, crontab_def, timezone, overlap, retries, enabled, next_run_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(job_id)
    .bind(job.user_id)
    .bind(job.view_id)
    .bind(job.crontab_def)
    .bind(job.timezone)
    .bind(job.overlap)
    .bind(job.retries)
    .bind(job.enabled)
    .bind(job.next_run_at)
    .execute(&mut *tx)
    .await?;
    wake_schedulers(&mut tx).await?;
    let row = find_in(&mut tx, job.user_id, job_id).await?;
    tx.commit().await?;
    Ok(row)
}

/// Tells every scheduler (at commit) to look at the jobs again.
pub async fn wake_schedulers(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(NOTIFY_CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

async fn find_in(conn: &mut PgConnection, user_id: Uuid, job_id: Uuid) -> Result<JobRow, ApiError> {
    sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(format!(
        "{SELECT_JOB} WHERE j.user_id = $1 AND j.job_id = $2"
    )))
    .bind(user_id)
    .bind(job_id)
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
    sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(format!(
        "{SELECT_JOB} WHERE j.user_id = $1 AND j.job_id = $2 FOR UPDATE OF j"
    )))
    .bind(user_id)
    .bind(job_id)
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
    Ok(sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(format!(
        "{SELECT_JOB} WHERE j.user_id = $1 AND ($2::uuid IS NULL OR j.view_id = $2) ORDER BY j.created_at, j.job_id"
    )))
    .bind(user_id)
    .bind(view_id)
    .fetch_all(pool)
    .await?)
}

/// Writes a locked job's new settings (and its new `updated_at`) and wakes the schedulers.
pub async fn update(conn: &mut PgConnection, job: &mut JobRow) -> Result<(), ApiError> {
    job.updated_at = sqlx::query_scalar(
        "UPDATE tinydevcrm.jobs SET crontab_def = $2, timezone = $3, overlap = $4, retries = $5,
             enabled = $6, next_run_at = $7, updated_at = now()
         WHERE job_id = $1 RETURNING updated_at",
    )
    .bind(job.job_id)
    .bind(&job.crontab_def)
    .bind(&job.timezone)
    .bind(&job.overlap)
    .bind(job.retries)
    .bind(job.enabled)
    .bind(job.next_run_at)
    .fetch_one(&mut *conn)
    .await?;
    wake_schedulers(conn).await?;
    Ok(())
}

/// Deletes a user's job (its runs go with it).
pub async fn delete(pool: &PgPool, user_id: Uuid, job_id: Uuid) -> Result<(), ApiError> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query("DELETE FROM tinydevcrm.jobs WHERE user_id = $1 AND job_id = $2")
        .bind(user_id)
        .bind(job_id)
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

/// One run of a job.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct RunRow {
    /// The run's id (the `run_id` of its channel events).
    pub run_id: Uuid,
    /// The tick it ran for.
    pub scheduled_for: DateTime<Utc>,
    /// When the refresh started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// `running`, `succeeded`, `failed`, `skipped` or `timed_out`.
    pub status: String,
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
    Ok(sqlx::query_as::<_, RunRow>(
        "SELECT run_id, scheduled_for, started_at, finished_at, status, attempts, row_count, duration_ms, error
         FROM tinydevcrm.job_runs WHERE job_id = $1 AND ($2::timestamptz IS NULL OR scheduled_for < $2)
         ORDER BY scheduled_for DESC LIMIT $3",
    )
    .bind(job_id)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// The latest run of a job.
pub async fn last_run(pool: &PgPool, job_id: Uuid) -> Result<Option<RunRow>, ApiError> {
    Ok(runs(pool, job_id, None, 1).await?.into_iter().next())
}

/// A due job claimed by this process.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueJob {
    /// The job.
    pub job_id: Uuid,
    /// Owner (its tenant runs the refresh).
    pub user_id: Uuid,
    /// The view to refresh.
    pub view_id: Uuid,
    /// Crontab.
    pub crontab_def: String,
    /// Time zone.
    pub timezone: String,
    /// `skip` or `queue`.
    pub overlap: String,
    /// Extra attempts.
    pub retries: i32,
    /// The tick being claimed.
    pub next_run_at: DateTime<Utc>,
    /// A run in progress holds this.
    pub lease_until: Option<DateTime<Utc>>,
}

/// Picks up to `limit` due jobs, taking turns between tenants: each tenant's due jobs are
/// ranked by their tick and the first of every tenant comes before the second of any, so one
/// tenant's hundred due jobs do not delay another's one. A `queue` job that its tenant's
/// runs in progress (`tenant_cap`) would hold back is left out (it stays due); a `skip` one is
/// picked so its tick can be recorded. Nothing is locked here: [`lock_due`] does that.
pub async fn pick_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
    tenant_cap: i64,
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "WITH running AS (
             SELECT user_id, count(*) AS n FROM tinydevcrm.jobs
             WHERE lease_until >= $1 GROUP BY user_id
         ), due AS (
             SELECT job_id, user_id, overlap, next_run_at,
                    coalesce(lease_until >= $1, false) AS leased
             FROM tinydevcrm.jobs
             WHERE enabled AND next_run_at <= $1
               AND (overlap = 'skip' OR lease_until IS NULL OR lease_until < $1)
         ), ranked AS (
             SELECT d.*, coalesce(r.n, 0) AS running,
                    row_number() OVER (PARTITION BY d.user_id, d.leased
                                       ORDER BY d.next_run_at, d.job_id) AS rank
             FROM due d LEFT JOIN running r USING (user_id)
         )
         SELECT job_id, user_id FROM ranked
         WHERE leased OR overlap = 'skip' OR rank <= $3 - running
         ORDER BY running + rank, next_run_at, job_id LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .bind(tenant_cap)
    .fetch_all(conn)
    .await
}

/// Takes, until the transaction ends, the claim lock of each of `users` (sorted), waiting
/// for a claim of another process to commit: one claim at a time per tenant across processes,
/// so the count of its runs in progress read next (in a later statement, with a newer
/// snapshot) cannot be raced. Locks are taken in the order given, so two claims never
/// deadlock; a claim holds them for a few short statements.
pub async fn lock_tenants(conn: &mut PgConnection, users: &[Uuid]) -> Result<(), sqlx::Error> {
    debug_assert!(
        users.is_sorted(),
        "tenant claim locks are taken in id order"
    );
    sqlx::query(
        "SELECT count(pg_advisory_xact_lock(hashtextextended('tdc_jobs_tenant:' || u::text, 0)))
         FROM (SELECT u FROM unnest($1::uuid[]) AS u ORDER BY u) ordered",
    )
    .bind(users)
    .execute(conn)
    .await?;
    Ok(())
}

/// Runs in progress (live leases) of each of `users`.
pub async fn running_per_tenant(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    users: &[Uuid],
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, count(*) FROM tinydevcrm.jobs
         WHERE user_id = ANY($1) AND lease_until >= $2 GROUP BY user_id",
    )
    .bind(users)
    .bind(now)
    .fetch_all(conn)
    .await
}

/// Locks those of `job_ids` that are still due and that no other process holds (`SKIP
/// LOCKED`). A `queue` job whose previous run still holds its lease waits; a `skip` job is
/// returned (its tick is recorded as skipped).
pub async fn lock_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    job_ids: &[Uuid],
) -> Result<Vec<DueJob>, sqlx::Error> {
    sqlx::query_as::<_, DueJob>(
        "SELECT job_id, user_id, view_id, crontab_def, timezone, overlap, retries, next_run_at, lease_until
         FROM tinydevcrm.jobs
         WHERE job_id = ANY($2) AND enabled AND next_run_at <= $1
           AND (overlap = 'skip' OR lease_until IS NULL OR lease_until < $1)
         FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .bind(job_ids)
    .fetch_all(conn)
    .await
}

/// What the scheduler decided for one claimed tick.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The job.
    pub job_id: Uuid,
    /// The tick.
    pub scheduled_for: DateTime<Utc>,
    /// The job's next tick (`None`: the schedule has no more).
    pub next_run_at: Option<DateTime<Utc>>,
    /// The new lease when this tick runs; `None` when it is skipped.
    pub lease_until: Option<DateTime<Utc>>,
    /// Why a skipped tick was skipped.
    pub skip_reason: &'static str,
    /// The run row's id.
    pub run_id: Uuid,
}

/// Advances the claimed jobs and records their runs (`running`, or `skipped` while a previous
/// run holds the lease), in the claiming transaction. Returns the run ids actually inserted:
/// a tick that already has a run row is not run again.
pub async fn record_claims(
    conn: &mut PgConnection,
    claims: &[Claim],
    now: DateTime<Utc>,
    worker: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let job_ids: Vec<Uuid> = claims.iter().map(|c| c.job_id).collect();
    let next: Vec<Option<DateTime<Utc>>> = claims.iter().map(|c| c.next_run_at).collect();
    let leases: Vec<Option<DateTime<Utc>>> = claims.iter().map(|c| c.lease_until).collect();
    let ticks: Vec<DateTime<Utc>> = claims.iter().map(|c| c.scheduled_for).collect();
    let run_ids: Vec<Uuid> = claims.iter().map(|c| c.run_id).collect();
    let reasons: Vec<&str> = claims.iter().map(|c| c.skip_reason).collect();
    // A run whose process died left its lease to expire: its row says so now.
    sqlx::query(
        "UPDATE tinydevcrm.job_runs r SET status = 'failed', finished_at = $2,
             error = 'the serve process running it stopped before it finished'
         FROM tinydevcrm.jobs j
         WHERE r.job_id = j.job_id AND j.job_id = ANY($1) AND r.status = 'running'
           AND j.lease_until < $2",
    )
    .bind(&job_ids)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE tinydevcrm.jobs j SET next_run_at = u.next_run_at,
             lease_until = CASE WHEN u.lease_until IS NULL THEN j.lease_until ELSE u.lease_until END
         FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[]) AS u(job_id, next_run_at, lease_until)
         WHERE j.job_id = u.job_id",
    )
    .bind(&job_ids)
    .bind(&next)
    .bind(&leases)
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar(
        "INSERT INTO tinydevcrm.job_runs (run_id, job_id, scheduled_for, claimed_at, started_at, finished_at, status, error, worker)
         SELECT u.run_id, u.job_id, u.scheduled_for, $5,
                CASE WHEN u.lease_until IS NULL THEN $5 END,
                CASE WHEN u.lease_until IS NULL THEN $5 END,
                CASE WHEN u.lease_until IS NULL THEN 'skipped' ELSE 'running' END,
                CASE WHEN u.lease_until IS NULL THEN u.reason END,
                $6
         FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::timestamptz[], $7::text[])
              AS u(run_id, job_id, scheduled_for, lease_until, reason)
         ON CONFLICT (job_id, scheduled_for) DO NOTHING
         RETURNING run_id",
    )
    .bind(&run_ids)
    .bind(&job_ids)
    .bind(&ticks)
    .bind(&leases)
    .bind(now)
    .bind(worker)
    .bind(&reasons)
    .fetch_all(&mut *conn)
    .await
}

/// Stops a job whose crontab no longer parses (it was checked when saved; this is a guard).
pub async fn disable(conn: &mut PgConnection, job_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE tinydevcrm.jobs SET enabled = false, next_run_at = NULL WHERE job_id = $1")
        .bind(job_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// When the first attempt started.
    pub started_at: DateTime<Utc>,
    /// When the last attempt ended.
    pub finished_at: DateTime<Utc>,
    /// `succeeded`, `failed`, `skipped` or `timed_out`.
    pub status: &'static str,
    /// Attempts made.
    pub attempts: i32,
    /// Rows in the view afterwards.
    pub row_count: Option<i64>,
    /// Why it failed, or why the refresh was skipped.
    pub error: Option<String>,
}

/// Records the end of a run and releases the job's lease (if it is still this run's); wakes
/// the schedulers when a `queue` tick may be waiting: this job's own, or one of the tenant's
/// held back by its limit of runs in progress.
pub async fn finish_run(
    pool: &PgPool,
    job_id: Uuid,
    run_id: Uuid,
    lease_until: DateTime<Utc>,
    queued: bool,
    outcome: &RunOutcome,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let duration_ms = (outcome.finished_at - outcome.started_at).num_milliseconds();
    sqlx::query(
        "UPDATE tinydevcrm.job_runs SET status = $2, started_at = $3, finished_at = $4, attempts = $5,
             row_count = $6, duration_ms = $7, error = $8
         WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(outcome.status)
    .bind(outcome.started_at)
    .bind(outcome.finished_at)
    .bind(outcome.attempts)
    .bind(outcome.row_count)
    .bind(duration_ms)
    .bind(&outcome.error)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE tinydevcrm.jobs SET lease_until = NULL WHERE job_id = $1 AND lease_until = $2",
    )
    .bind(job_id)
    .bind(lease_until)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "SELECT pg_notify($1, '') WHERE $2 OR EXISTS (
             SELECT 1 FROM tinydevcrm.jobs w
             WHERE w.user_id = (SELECT user_id FROM tinydevcrm.jobs WHERE job_id = $3)
               AND w.enabled AND w.overlap = 'queue' AND w.next_run_at <= now())",
    )
    .bind(NOTIFY_CHANNEL)
    .bind(queued)
    .bind(job_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// When the scheduler must look again: the earliest tick of an enabled job (a queued job
/// behind a lease counts from the lease's end, and one whose tenant has `tenant_cap` runs in
/// progress from the first of their leases to end; a run that ends sooner wakes the
/// schedulers).
pub async fn next_due(
    pool: &PgPool,
    tenant_cap: i64,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH running AS (
             SELECT user_id, count(*) AS n, min(lease_until) AS first_end FROM tinydevcrm.jobs
             WHERE lease_until >= now() GROUP BY user_id
         )
         SELECT min(CASE WHEN j.overlap = 'queue' AND j.lease_until > j.next_run_at
                         THEN j.lease_until
                         WHEN j.overlap = 'queue' AND r.n >= $1
                         THEN greatest(j.next_run_at, r.first_end)
                         ELSE j.next_run_at END)
         FROM tinydevcrm.jobs j LEFT JOIN running r USING (user_id)
         WHERE j.enabled AND j.next_run_at IS NOT NULL",
    )
    .bind(tenant_cap)
    .fetch_one(pool)
    .await
}

/// Deletes finished runs older than `max_age`, and beyond the newest `keep` of each job.
pub async fn prune_runs(
    pool: &PgPool,
    max_age: chrono::Duration,
    keep: i64,
) -> Result<u64, sqlx::Error> {
    let cutoff = Utc::now() - max_age;
    let by_age = sqlx::query(
        "DELETE FROM tinydevcrm.job_runs WHERE status <> 'running' AND finished_at < $1",
    )
    .bind(cutoff)
    .execute(pool)
    .await?
    .rows_affected();
    let by_count = sqlx::query(
        "DELETE FROM tinydevcrm.job_runs r USING (
             SELECT run_id FROM (
                 SELECT run_id, status,
                        row_number() OVER (PARTITION BY job_id ORDER BY scheduled_for DESC) AS n
                 FROM tinydevcrm.job_runs
             ) ranked WHERE n > $1 AND status <> 'running'
         ) old WHERE r.run_id = old.run_id",
    )
    .bind(keep)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(by_age + by_count)
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
    /// `skip` or `queue`.
    pub overlap: String,
    /// Extra attempts after a failure.
    pub retries: i32,
    /// Whether it runs.
    pub enabled: bool,
    /// `!enabled`.
    pub paused: bool,
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
            enabled: job.enabled,
            paused: !job.enabled,
            next_run_at: job.next_run_at,
            last_run,
            created_at: job.created_at,
            updated_at: job.updated_at,
        }
    }
}
