//! The scheduler loop that runs in every `serve` process.
//!
//! Exactly once across processes: due jobs are locked with `FOR UPDATE SKIP LOCKED`, and in the
//! same transaction `next_run_at` moves past now and the tick's run row is inserted (unique on
//! `(job_id, scheduled_for)`). A job late by several ticks runs once for the first missed tick
//! and then continues from the next tick after now. A run holds a lease on its job for its
//! longest possible duration, so a job never overlaps itself, and a process that dies mid-run
//! only delays the job until the lease expires.
//!
//! The loop sleeps until the earliest `next_run_at` and wakes early on `LISTEN tdc_jobs`
//! (sent when jobs change and when runs end).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Semaphore, watch};
use uuid::Uuid;

use super::claims::{self, Claim, DueJob, SkipReason, TickAction};
use super::runs::RunOutcome;
use super::schedule::Schedule;
use super::states::{Overlap, RunStatus};
use super::store;
use crate::db::tenant::tenant_name;
use crate::error::ApiError;
use crate::views::refresh::Refreshed;
use crate::views::refresh::{Trigger, refresh_view};
use crate::views::store::RefreshStatus;

/// How the scheduler behaves.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Statement timeout of a refresh.
    pub statement_timeout: Duration,
    /// Storage a tenant's tables and views may take; a refresh beyond it fails.
    pub storage_quota: u64,
    /// Runs one process executes at once.
    pub concurrency: usize,
    /// Runs one tenant may have in progress at once, across every process.
    pub tenant_concurrency: i64,
    /// Most ticks claimed per transaction.
    pub batch: i64,
    /// First retry delay; doubles per attempt.
    pub retry_backoff: Duration,
    /// Longest sleep without a wake-up (a safety net for lost notifications).
    pub max_sleep: Duration,
}

/// Names this process in run rows.
pub fn worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    format!(
        "{host}:{}:{}",
        std::process::id(),
        &Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Starts the scheduler loop on the current runtime. Its [`Drain`](crate::drain::Drain) stops it claiming at
/// shutdown and lets the runs it started finish (a run cut off mid-way would leave its tick
/// without its refresh until the lease expired).
pub fn spawn(
    pool: PgPool,
    config: SchedulerConfig,
) -> (tokio::task::JoinHandle<()>, crate::drain::Drain) {
    crate::drain::spawn("scheduler", move |stopped| run(pool, config, stopped))
}

async fn run(pool: PgPool, config: SchedulerConfig, mut stopped: watch::Receiver<bool>) {
    let worker: Arc<str> = Arc::from(worker_name());
    let concurrency = config.concurrency.max(1);
    let slots = Arc::new(Semaphore::new(concurrency));
    claim_until_stopped(&pool, &config, &worker, &slots, &mut stopped).await;
    // Every permit back: every run this process started has ended.
    let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    tracing::info!(worker = %worker, "scheduler stopped; its runs ended");
}

/// Resolves when a stop is asked for; never when nobody can ask any more (a server built
/// without signal handling drops its [`Drain`](crate::drain::Drain)).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    if stopped.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn claim_until_stopped(
    pool: &PgPool,
    config: &SchedulerConfig,
    worker: &Arc<str>,
    slots: &Arc<Semaphore>,
    stopped: &mut watch::Receiver<bool>,
) {
    let (pool, config, worker, slots) = (
        pool.clone(),
        config.clone(),
        Arc::clone(worker),
        Arc::clone(slots),
    );
    let mut listener: Option<PgListener> = None;
    tracing::info!(worker = %worker, "scheduler started");
    loop {
        if *stopped.borrow() {
            return;
        }
        if listener.is_none() {
            listener = listen(&pool)
                .await
                .inspect_err(|e| tracing::warn!(error = %format!("{e:#}"), "scheduler: no LISTEN connection; polling"))
                .ok();
        }
        // Claim no more than this process can start now: the other processes take the rest.
        let first = match Arc::clone(&slots).acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => return,
        };
        if *stopped.borrow() {
            return;
        }
        let room = i64::try_from(slots.available_permits() + 1).unwrap_or(1);
        let claimed = match claim(&pool, config.batch.min(room), &config, &worker).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "scheduler: claiming due jobs failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Skipped ticks fill a batch too: there may be more due jobs behind them.
        let full = claimed.picked >= config.batch.min(room);
        let mut first = Some(first);
        for run in claimed.runs {
            let permit = match first.take() {
                Some(permit) => permit,
                None => match Arc::clone(&slots).acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let pool = pool.clone();
            let config = config.clone();
            tokio::spawn(async move {
                let _permit = permit;
                execute(&pool, &config, run).await;
            });
        }
        drop(first);
        if full {
            continue;
        }
        let next_due = claims::next_due(&pool, config.tenant_concurrency)
            .await
            .context("reading the next due time");
        let wait = match next_due {
            Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO),
            Ok(None) => config.max_sleep,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "scheduler: looking ahead failed");
                Duration::from_secs(1)
            }
        }
        .min(config.max_sleep);
        if wait.is_zero() {
            continue;
        }
        match listener.as_mut() {
            Some(l) => {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop_requested(stopped) => {}
                    woke = l.try_recv() => {
                        if !matches!(woke, Ok(Some(_))) {
                            // Connection lost: listen again, and look at the jobs at once.
                            listener = None;
                        }
                    }
                }
            }
            None => tokio::select! {
                () = tokio::time::sleep(wait.min(Duration::from_secs(1))) => {}
                () = stop_requested(stopped) => {}
            },
        }
    }
}

/// A connection listening for job changes and ended runs; without one the loop polls.
async fn listen(pool: &PgPool) -> anyhow::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool)
        .await
        .context("opening the LISTEN connection")?;
    listener
        .listen(store::NOTIFY_CHANNEL)
        .await
        .with_context(|| format!("LISTEN {}", store::NOTIFY_CHANNEL))?;
    Ok(listener)
}

/// Claims due ticks in one transaction and returns the ones to run now.
///
/// Fairness between tenants: jobs are picked in turns across tenants ([`claims::pick_due`]),
/// and a tenant never has more than `tenant_concurrency` runs in progress across all
/// processes: one claim at a time holds a tenant's advisory lock (waiting for another
/// process's claim of that tenant to commit) and counts its live leases under it. A tick
/// beyond the limit follows the job's overlap rule: `skip` records it as skipped, `queue`
/// leaves it due until one of the tenant's runs ends.
#[tracing::instrument(skip_all, fields(limit = limit, claimed = tracing::field::Empty))]
async fn claim(
    pool: &PgPool,
    limit: i64,
    config: &SchedulerConfig,
    worker: &str,
) -> anyhow::Result<Claimed> {
    let now = Utc::now();
    let mut tx = pool.begin().await.context("beginning a claim")?;
    let picked = claims::pick_due(&mut tx, now, limit, config.tenant_concurrency)
        .await
        .context("picking due jobs")?;
    if picked.is_empty() {
        tx.rollback().await.context("ending an empty claim")?;
        return Ok(Claimed {
            runs: Vec::new(),
            picked: 0,
        });
    }
    let mut users: Vec<Uuid> = picked.iter().map(|(_, user)| *user).collect();
    users.sort_unstable();
    users.dedup();
    claims::lock_tenants(&mut tx, &users)
        .await
        .with_context(|| format!("taking the claim locks of {} tenants", users.len()))?;
    let mut running: HashMap<Uuid, i64> = claims::running_per_tenant(&mut tx, now, &users)
        .await
        .context("counting the tenants' runs in progress")?
        .into_iter()
        .collect();
    let ids: Vec<Uuid> = picked.iter().map(|(job, _)| *job).collect();
    let picked_count = i64::try_from(ids.len()).unwrap_or(i64::MAX);
    let due = claims::lock_due(&mut tx, now, &ids)
        .await
        .context("locking the picked jobs")?;
    let decisions = decide(
        due,
        &ids,
        &mut running,
        now,
        config.tenant_concurrency,
        |retries| lease_length(config, retries),
    );
    for (job_id, error) in &decisions.unparsable {
        tracing::error!(job_id = %job_id, error = %error, "a stored crontab does not parse; pausing the job");
        claims::disable(&mut tx, *job_id)
            .await
            .with_context(|| format!("pausing job {job_id}"))?;
    }
    let (jobs, decided): (Vec<DueJob>, Vec<Claim>) = decisions.ticks.into_iter().unzip();
    let inserted = claims::record_claims(&mut tx, &decided, now, worker)
        .await
        .with_context(|| format!("recording {} claimed ticks", decided.len()))?;
    tx.commit().await.context("committing a claim")?;
    let runs: Vec<ClaimedRun> = jobs
        .into_iter()
        .zip(decided)
        .filter(|(_, c)| inserted.contains(&c.run_id))
        .filter_map(|(job, c)| match c.action {
            TickAction::Run { lease_until } => Some(ClaimedRun {
                job,
                run_id: c.run_id,
                scheduled_for: c.scheduled_for,
                lease_until,
            }),
            TickAction::Skip(_) => None,
        })
        .collect();
    tracing::Span::current().record("claimed", runs.len());
    Ok(Claimed {
        runs,
        picked: picked_count,
    })
}

/// What a claim decided for the jobs it locked.
#[derive(Debug)]
struct Decisions {
    /// Each tick to record, with its job: run now or skipped.
    ticks: Vec<(DueJob, Claim)>,
    /// Jobs whose stored crontab no longer parses (and why): paused, not run.
    unparsable: Vec<(Uuid, String)>,
}

/// Decides each locked tick, in the order the jobs were picked so that each tenant's
/// earliest ticks get its free run slots: a job whose previous run holds its lease is skipped;
/// a tenant with `tenant_cap` runs in progress (`running`, counted across processes and
/// updated here) gets no more, and its jobs follow their overlap rule (`queue`: left due, not
/// recorded; `skip`: recorded as skipped). The next tick counts from the later of now and the
/// claimed tick, so a job late by several ticks runs once.
fn decide(
    mut due: Vec<DueJob>,
    picked: &[Uuid],
    running: &mut HashMap<Uuid, i64>,
    now: DateTime<Utc>,
    tenant_cap: i64,
    lease: impl Fn(i32) -> chrono::Duration,
) -> Decisions {
    due.sort_by_key(|job| picked.iter().position(|id| *id == job.job_id));
    let mut decisions = Decisions {
        ticks: Vec::with_capacity(due.len()),
        unparsable: Vec::new(),
    };
    for job in due {
        let schedule = match Schedule::parse(&job.crontab_def, &job.timezone) {
            Ok(schedule) => schedule,
            Err(e) => {
                decisions.unparsable.push((job.job_id, e.to_string()));
                continue;
            }
        };
        let scheduled_for = job.next_run_at;
        let next_run_at = schedule.next_after(now.max(scheduled_for));
        let leased = job.lease_until.is_some_and(|lease| lease >= now);
        let in_progress = running.entry(job.user_id).or_insert(0);
        let action = if leased {
            TickAction::Skip(SkipReason::PreviousRunGoingOn)
        } else if *in_progress >= tenant_cap {
            match job.overlap {
                // Stays due: it runs when one of its tenant's runs ends.
                Overlap::Queue => continue,
                Overlap::Skip => TickAction::Skip(SkipReason::TenantAtLimit),
            }
        } else {
            *in_progress += 1;
            TickAction::Run {
                lease_until: now + lease(job.retries),
            }
        };
        let claim = Claim {
            job_id: job.job_id,
            scheduled_for,
            next_run_at,
            action,
            run_id: Uuid::now_v7(),
        };
        decisions.ticks.push((job, claim));
    }
    decisions
}

/// What one claim got.
struct Claimed {
    /// The ticks to run now.
    runs: Vec<ClaimedRun>,
    /// Jobs picked for tenants this claim held (run, skipped or held back).
    picked: i64,
}

/// A tick this process claimed and runs now.
struct ClaimedRun {
    /// The job, as claimed.
    job: DueJob,
    /// Its run row.
    run_id: Uuid,
    /// The tick.
    scheduled_for: DateTime<Utc>,
    /// The lease the run holds; released when it ends if it is still this one.
    lease_until: DateTime<Utc>,
}

/// The longest a run may take: every attempt at the statement timeout, the backoffs between
/// them, and a minute for the bookkeeping.
fn lease_length(config: &SchedulerConfig, retries: i32) -> chrono::Duration {
    let attempts = u32::try_from(retries).unwrap_or(0) + 1;
    let backoff: Duration = (0..attempts.saturating_sub(1))
        .map(|i| backoff(config, i))
        .sum();
    let total = config.statement_timeout * attempts + backoff + Duration::from_secs(60);
    chrono::Duration::from_std(total).unwrap_or(chrono::Duration::hours(24))
}

fn backoff(config: &SchedulerConfig, attempt: u32) -> Duration {
    (config.retry_backoff * 2u32.saturating_pow(attempt)).min(Duration::from_secs(300))
}

/// Runs one claimed tick: the refresh (with retries), then its run row and the lease. Its span
/// names the run, so every line the run logs (the refresh's included) can be found by it.
#[tracing::instrument(name = "job_run", skip_all, fields(job = %run.job.job_id, run = %run.run_id, view = %run.job.view_id))]
async fn execute(pool: &PgPool, config: &SchedulerConfig, run: ClaimedRun) {
    let ClaimedRun {
        job,
        run_id,
        scheduled_for,
        lease_until,
    } = run;
    let started_at = Utc::now();
    let lag_ms = (started_at - scheduled_for).num_milliseconds();
    metrics::histogram!("tdc_scheduler_lag_seconds").record(lag_ms as f64 / 1000.0);
    let outcome = attempt_all(pool, config, &job, run_id, started_at).await;
    metrics::counter!("tdc_job_runs_total", "status" => outcome.status.as_str()).increment(1);
    tracing::info!(job_id = %job.job_id, run_id = %run_id, status = outcome.status.as_str(), lag_ms, "job run");
    let queued = job.overlap == Overlap::Queue;
    let finished = claims::finish_run(pool, job.job_id, run_id, lease_until, queued, &outcome)
        .await
        .context("recording the end of the run");
    if let Err(e) = finished {
        tracing::error!(job_id = %job.job_id, run_id = %run_id, error = %format!("{e:#}"), "its lease will expire");
    }
}

/// Refreshes the job's view, retrying a failure with backoff, and says how the run ended.
async fn attempt_all(
    pool: &PgPool,
    config: &SchedulerConfig,
    job: &DueJob,
    run_id: Uuid,
    started_at: DateTime<Utc>,
) -> RunOutcome {
    let max_attempts = job.retries.max(0) + 1;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let Attempt {
            status,
            row_count,
            error,
        } = attempt(pool, config, job, run_id).await;
        if !(status.is_failure() && attempts < max_attempts) {
            return RunOutcome {
                started_at,
                finished_at: Utc::now(),
                status,
                attempts,
                row_count,
                error,
            };
        }
        let attempt = u32::try_from(attempts - 1).unwrap_or(0);
        tokio::time::sleep(backoff(config, attempt)).await;
    }
}

/// How one attempt ended, as its run row records it.
struct Attempt {
    status: RunStatus,
    row_count: Option<i64>,
    /// Why it failed or was skipped, as the run row says it.
    error: Option<String>,
}

impl Attempt {
    fn failed(error: String) -> Self {
        Self {
            status: RunStatus::Failed,
            row_count: None,
            error: Some(error),
        }
    }

    /// Reads a refresh's result. The refresh is shared with the API, so it answers in the
    /// API's terms (its record's status text and `ApiError` codes); this is the one place the
    /// scheduler reads them. A failure is the run's outcome, recorded with the refresh's own
    /// message, not an error of the scheduler.
    fn of_refresh(result: Result<Refreshed, ApiError>) -> Self {
        match result.map(|done| done.record) {
            Ok(record) if record.status == RefreshStatus::Skipped => Self {
                status: RunStatus::Skipped,
                row_count: None,
                error: Some("nothing the view reads changed since its last refresh".to_owned()),
            },
            Ok(record) => Self {
                status: RunStatus::Succeeded,
                row_count: record.row_count,
                error: None,
            },
            Err(e) if e.code() == "query_timeout" => Self {
                status: RunStatus::TimedOut,
                row_count: None,
                error: Some(e.to_string()),
            },
            Err(e) => Self::failed(e.to_string()),
        }
    }
}

/// One refresh of the job's view, as its tenant.
async fn attempt(pool: &PgPool, config: &SchedulerConfig, job: &DueJob, run_id: Uuid) -> Attempt {
    let view = match crate::views::store::by_id(pool, job.view_id).await {
        Ok(Some(view)) => view,
        Ok(None) => return Attempt::failed("the job's view no longer exists".to_owned()),
        Err(e) => return Attempt::failed(e.to_string()),
    };
    let result = refresh_view(
        pool,
        config.statement_timeout,
        config.storage_quota,
        &tenant_name(job.user_id),
        &view,
        Trigger::Job {
            job_id: job.job_id,
            run_id,
        },
    )
    .await;
    Attempt::of_refresh(result)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    const LEASE: chrono::Duration = chrono::Duration::minutes(10);

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 30).unwrap()
    }

    fn job(user_id: Uuid, overlap: Overlap) -> DueJob {
        DueJob {
            job_id: Uuid::new_v4(),
            user_id,
            view_id: Uuid::new_v4(),
            crontab_def: "* * * * *".to_owned(),
            timezone: "UTC".to_owned(),
            overlap,
            retries: 0,
            next_run_at: now() - chrono::Duration::seconds(30),
            lease_until: None,
        }
    }

    fn decide_all(due: &[DueJob], running: &mut HashMap<Uuid, i64>, cap: i64) -> Decisions {
        let picked: Vec<Uuid> = due.iter().map(|j| j.job_id).collect();
        decide(due.to_vec(), &picked, running, now(), cap, |_| LEASE)
    }

    fn actions(decisions: &Decisions) -> Vec<(Uuid, TickAction)> {
        decisions
            .ticks
            .iter()
            .map(|(job, claim)| (job.job_id, claim.action))
            .collect()
    }

    #[test]
    fn a_free_tenant_runs_its_tick_with_a_lease_and_moves_to_the_next_tick() {
        let due = [job(Uuid::new_v4(), Overlap::Skip)];
        let decisions = decide_all(&due, &mut HashMap::new(), 2);
        let (_, claim) = &decisions.ticks[0];
        assert_eq!(
            claim.action,
            TickAction::Run {
                lease_until: now() + LEASE
            }
        );
        assert_eq!(claim.scheduled_for, due[0].next_run_at);
        assert_eq!(
            claim.next_run_at,
            Some(Utc.with_ymd_and_hms(2026, 3, 1, 12, 1, 0).unwrap())
        );
    }

    #[test]
    fn a_job_late_by_many_ticks_runs_once_and_continues_after_now() {
        let mut late = job(Uuid::new_v4(), Overlap::Skip);
        late.next_run_at = now() - chrono::Duration::hours(5);
        let decisions = decide_all(&[late.clone()], &mut HashMap::new(), 2);
        assert_eq!(decisions.ticks.len(), 1);
        let (_, claim) = &decisions.ticks[0];
        assert_eq!(claim.scheduled_for, late.next_run_at);
        assert!(claim.next_run_at.is_some_and(|next| next > now()));
    }

    #[test]
    fn a_job_whose_previous_run_holds_its_lease_is_skipped_whatever_its_rule() {
        for overlap in [Overlap::Skip, Overlap::Queue] {
            let mut busy = job(Uuid::new_v4(), overlap);
            busy.lease_until = Some(now() + chrono::Duration::seconds(1));
            let mut running = HashMap::new();
            let decisions = decide_all(&[busy], &mut running, 2);
            assert_eq!(
                decisions.ticks[0].1.action,
                TickAction::Skip(SkipReason::PreviousRunGoingOn),
                "{overlap:?}"
            );
            assert_eq!(running.values().sum::<i64>(), 0, "a skip takes no run slot");
        }
    }

    #[test]
    fn an_expired_lease_does_not_hold_the_job_back() {
        let mut orphan = job(Uuid::new_v4(), Overlap::Queue);
        orphan.lease_until = Some(now() - chrono::Duration::seconds(1));
        let decisions = decide_all(&[orphan], &mut HashMap::new(), 1);
        assert!(matches!(
            decisions.ticks[0].1.action,
            TickAction::Run { .. }
        ));
    }

    #[test]
    fn a_tenant_at_its_limit_gets_no_more_runs_and_its_jobs_follow_their_rule() {
        let busy = Uuid::new_v4();
        let (skip, queue) = (job(busy, Overlap::Skip), job(busy, Overlap::Queue));
        let mut running = HashMap::from([(busy, 2)]);
        let decisions = decide_all(&[skip.clone(), queue], &mut running, 2);
        assert_eq!(
            actions(&decisions),
            [(skip.job_id, TickAction::Skip(SkipReason::TenantAtLimit))],
            "the queue job stays due (not recorded), the skip job's tick is recorded as skipped"
        );
        assert_eq!(running[&busy], 2);
    }

    #[test]
    fn the_limit_counts_the_runs_this_claim_starts_and_spares_other_tenants() {
        let (greedy, other) = (Uuid::new_v4(), Uuid::new_v4());
        let due = [
            job(greedy, Overlap::Skip),
            job(greedy, Overlap::Skip),
            job(greedy, Overlap::Queue),
            job(other, Overlap::Skip),
        ];
        let mut running = HashMap::from([(greedy, 1)]);
        let decisions = decide_all(&due, &mut running, 2);
        let ran: Vec<Uuid> = actions(&decisions)
            .into_iter()
            .filter(|(_, a)| matches!(a, TickAction::Run { .. }))
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ran, [due[0].job_id, due[3].job_id]);
        assert_eq!(
            decisions.ticks[1].1.action,
            TickAction::Skip(SkipReason::TenantAtLimit)
        );
        assert_eq!(decisions.ticks.len(), 3, "the queued job is left due");
        assert_eq!((running[&greedy], running[&other]), (2, 1));
    }

    #[test]
    fn free_slots_go_to_the_ticks_picked_first_whatever_order_the_locks_came_back_in() {
        let tenant = Uuid::new_v4();
        let (first, second) = (job(tenant, Overlap::Skip), job(tenant, Overlap::Skip));
        let picked = [first.job_id, second.job_id];
        let decisions = decide(
            vec![second.clone(), first.clone()],
            &picked,
            &mut HashMap::new(),
            now(),
            1,
            |_| LEASE,
        );
        assert_eq!(
            actions(&decisions),
            [
                (
                    first.job_id,
                    TickAction::Run {
                        lease_until: now() + LEASE
                    }
                ),
                (second.job_id, TickAction::Skip(SkipReason::TenantAtLimit)),
            ]
        );
    }

    #[test]
    fn a_stored_crontab_that_no_longer_parses_is_set_aside_and_the_rest_still_run() {
        let mut broken = job(Uuid::new_v4(), Overlap::Skip);
        broken.crontab_def = "61 * * * *".to_owned();
        let mut bad_zone = job(Uuid::new_v4(), Overlap::Skip);
        bad_zone.timezone = "Mars/Olympus".to_owned();
        let fine = job(Uuid::new_v4(), Overlap::Skip);
        let decisions = decide_all(
            &[broken.clone(), bad_zone.clone(), fine.clone()],
            &mut HashMap::new(),
            1,
        );
        let set_aside: Vec<Uuid> = decisions.unparsable.iter().map(|(id, _)| *id).collect();
        assert_eq!(set_aside, [broken.job_id, bad_zone.job_id]);
        assert!(decisions.unparsable.iter().all(|(_, why)| !why.is_empty()));
        assert_eq!(actions(&decisions).len(), 1);
        assert_eq!(decisions.ticks[0].0.job_id, fine.job_id);
    }

    #[test]
    fn the_lease_covers_every_attempt_its_backoffs_and_a_minute() {
        let config = SchedulerConfig {
            statement_timeout: Duration::from_secs(30),
            storage_quota: 0,
            concurrency: 1,
            tenant_concurrency: 1,
            batch: 1,
            retry_backoff: Duration::from_secs(2),
            max_sleep: Duration::from_secs(1),
        };
        assert_eq!(lease_length(&config, 0), chrono::Duration::seconds(90));
        // 3 attempts of 30 s, backoffs 2 s + 4 s, and the minute.
        assert_eq!(lease_length(&config, 2), chrono::Duration::seconds(156));
        assert_eq!(
            lease_length(&config, -1),
            lease_length(&config, 0),
            "a negative retry count is no retry"
        );
    }
}
