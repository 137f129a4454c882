//! SQL of the scheduler: picking and locking due jobs, recording the claimed ticks, ending a
//! run (lease release and wake-up) and the next time to look.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::runs::RunOutcome;
use super::states::{Overlap, RunStatus};
use super::store::NOTIFY_CHANNEL;

/// A due job claimed by this process.
#[derive(Debug, Clone)]
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
    /// What a tick does while the previous run goes on.
    pub overlap: Overlap,
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
    let picked = sqlx::query!(
        r#"WITH running AS (
             SELECT user_id, count(*) AS n FROM tinydevcrm.jobs
             WHERE lease_until >= $1 GROUP BY user_id
         ), due AS (
             SELECT job_id, user_id, overlap, next_run_at,
                    coalesce(lease_until >= $1, false) AS leased
             FROM tinydevcrm.jobs
             WHERE enabled AND next_run_at <= $1
               AND (overlap = $4 OR lease_until IS NULL OR lease_until < $1)
         ), ranked AS (
             SELECT d.*, coalesce(r.n, 0) AS running,
                    row_number() OVER (PARTITION BY d.user_id, d.leased
                                       ORDER BY d.next_run_at, d.job_id) AS rank
             FROM due d LEFT JOIN running r USING (user_id)
         )
         SELECT job_id AS "job_id!", user_id AS "user_id!" FROM ranked
         WHERE leased OR overlap = $4 OR rank <= $3 - running
         ORDER BY running + rank, next_run_at, job_id LIMIT $2"#,
        now,
        limit,
        tenant_cap,
        Overlap::Skip.as_str(),
    )
    .fetch_all(conn)
    .await?;
    Ok(picked.into_iter().map(|p| (p.job_id, p.user_id)).collect())
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
    sqlx::query_scalar!(
        "SELECT count(pg_advisory_xact_lock(hashtextextended('tdc_jobs_tenant:' || u::text, 0)))
         FROM (SELECT u FROM unnest($1::uuid[]) AS u ORDER BY u) ordered",
        users,
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// Runs in progress (live leases) of each of `users`.
pub async fn running_per_tenant(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    users: &[Uuid],
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    let running = sqlx::query!(
        r#"SELECT user_id, count(*) AS "running!" FROM tinydevcrm.jobs
           WHERE user_id = ANY($1) AND lease_until >= $2 GROUP BY user_id"#,
        users,
        now,
    )
    .fetch_all(conn)
    .await?;
    Ok(running
        .into_iter()
        .map(|r| (r.user_id, r.running))
        .collect())
}

/// Locks those of `job_ids` that are still due and that no other process holds (`SKIP
/// LOCKED`). A `queue` job whose previous run still holds its lease waits; a `skip` job is
/// returned (its tick is recorded as skipped).
pub async fn lock_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    job_ids: &[Uuid],
) -> Result<Vec<DueJob>, sqlx::Error> {
    sqlx::query_as!(
        DueJob,
        r#"SELECT job_id, user_id, view_id, crontab_def, timezone, overlap AS "overlap: Overlap",
                  retries, next_run_at AS "next_run_at!", lease_until
           FROM tinydevcrm.jobs
           WHERE job_id = ANY($2) AND enabled AND next_run_at <= $1
             AND (overlap = $3 OR lease_until IS NULL OR lease_until < $1)
           FOR UPDATE SKIP LOCKED"#,
        now,
        job_ids,
        Overlap::Skip.as_str(),
    )
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
    /// Whether it runs now or is recorded as skipped.
    pub action: TickAction,
    /// The run row's id.
    pub run_id: Uuid,
}

/// What a claimed tick does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickAction {
    /// It runs now and holds the job's lease until this time at the latest.
    Run {
        /// The lease's end.
        lease_until: DateTime<Utc>,
    },
    /// Its run row says `skipped`, with this reason.
    Skip(SkipReason),
}

/// Why a claimed tick is not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The job's previous run still holds its lease.
    PreviousRunGoingOn,
    /// The tenant has as many runs in progress as it may, and the job's rule is `skip`.
    TenantAtLimit,
}

impl SkipReason {
    /// The `error` of the skipped run row.
    pub const fn message(self) -> &'static str {
        match self {
            Self::PreviousRunGoingOn => "the previous run was still running",
            Self::TenantAtLimit => "the tenant's limit of runs in progress was reached",
        }
    }
}

impl TickAction {
    /// The lease a running tick sets; `None` for a skipped one.
    pub const fn lease_until(self) -> Option<DateTime<Utc>> {
        match self {
            Self::Run { lease_until } => Some(lease_until),
            Self::Skip(_) => None,
        }
    }
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
    let leases: Vec<Option<DateTime<Utc>>> =
        claims.iter().map(|c| c.action.lease_until()).collect();
    let ticks: Vec<DateTime<Utc>> = claims.iter().map(|c| c.scheduled_for).collect();
    let run_ids: Vec<Uuid> = claims.iter().map(|c| c.run_id).collect();
    let reasons: Vec<Option<&str>> = claims
        .iter()
        .map(|c| match c.action {
            TickAction::Run { .. } => None,
            TickAction::Skip(reason) => Some(reason.message()),
        })
        .collect();
    // A run whose process died left its lease to expire: its row says so now.
    sqlx::query!(
        "UPDATE tinydevcrm.job_runs r SET status = $3, finished_at = $2,
             error = 'the serve process running it stopped before it finished'
         FROM tinydevcrm.jobs j
         WHERE r.job_id = j.job_id AND j.job_id = ANY($1) AND r.status = $4
           AND j.lease_until < $2",
        &job_ids,
        now,
        RunStatus::Failed.as_str(),
        RunStatus::Running.as_str(),
    )
    .execute(&mut *conn)
    .await?;
    // The arrays with NULL elements are typed by hand: `query!` checks array binds only
    // against arrays of non-null elements.
    sqlx::query!(
        "UPDATE tinydevcrm.jobs j SET next_run_at = u.next_run_at,
             lease_until = CASE WHEN u.lease_until IS NULL THEN j.lease_until ELSE u.lease_until END
         FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[]) AS u(job_id, next_run_at, lease_until)
         WHERE j.job_id = u.job_id",
        &job_ids,
        &next as &[Option<DateTime<Utc>>],
        &leases as &[Option<DateTime<Utc>>],
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar!(
        "INSERT INTO tinydevcrm.job_runs (run_id, job_id, scheduled_for, claimed_at, started_at, finished_at, status, error, worker)
         SELECT u.run_id, u.job_id, u.scheduled_for, $5::timestamptz,
                CASE WHEN u.lease_until IS NULL THEN $5::timestamptz END,
                CASE WHEN u.lease_until IS NULL THEN $5::timestamptz END,
                CASE WHEN u.lease_until IS NULL THEN $8 ELSE $9 END,
                CASE WHEN u.lease_until IS NULL THEN u.reason END,
                $6
         FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::timestamptz[], $7::text[])
              AS u(run_id, job_id, scheduled_for, lease_until, reason)
         ON CONFLICT (job_id, scheduled_for) DO NOTHING
         RETURNING run_id",
        &run_ids,
        &job_ids,
        &ticks,
        &leases as &[Option<DateTime<Utc>>],
        now,
        worker,
        &reasons as &[Option<&str>],
        RunStatus::Skipped.as_str(),
        RunStatus::Running.as_str(),
    )
    .fetch_all(&mut *conn)
    .await
}

/// Stops a job whose crontab no longer parses (it was checked when saved; this is a guard).
pub async fn disable(conn: &mut PgConnection, job_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tinydevcrm.jobs SET enabled = false, next_run_at = NULL WHERE job_id = $1",
        job_id,
    )
    .execute(conn)
    .await?;
    Ok(())
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
    sqlx::query!(
        "UPDATE tinydevcrm.job_runs SET status = $2, started_at = $3, finished_at = $4, attempts = $5,
             row_count = $6, duration_ms = $7, error = $8
         WHERE run_id = $1",
        run_id,
        outcome.status.as_str(),
        outcome.started_at,
        outcome.finished_at,
        outcome.attempts,
        outcome.row_count,
        duration_ms,
        outcome.error,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE tinydevcrm.jobs SET lease_until = NULL WHERE job_id = $1 AND lease_until = $2",
        job_id,
        lease_until,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "SELECT pg_notify($1, '') WHERE $2 OR EXISTS (
             SELECT 1 FROM tinydevcrm.jobs w
             WHERE w.user_id = (SELECT user_id FROM tinydevcrm.jobs WHERE job_id = $3)
               AND w.enabled AND w.overlap = $4 AND w.next_run_at <= now())",
        NOTIFY_CHANNEL,
        queued,
        job_id,
        Overlap::Queue.as_str(),
    )
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
    sqlx::query_scalar!(
        "WITH running AS (
             SELECT user_id, count(*) AS n, min(lease_until) AS first_end FROM tinydevcrm.jobs
             WHERE lease_until >= now() GROUP BY user_id
         )
         SELECT min(CASE WHEN j.overlap = $2 AND j.lease_until > j.next_run_at
                         THEN j.lease_until
                         WHEN j.overlap = $2 AND r.n >= $1
                         THEN greatest(j.next_run_at, r.first_end)
                         ELSE j.next_run_at END)
         FROM tinydevcrm.jobs j LEFT JOIN running r USING (user_id)
         WHERE j.enabled AND j.next_run_at IS NOT NULL",
        tenant_cap,
        Overlap::Queue.as_str(),
    )
    .fetch_one(pool)
    .await
}
