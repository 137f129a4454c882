//! Handlers of `/jobs/...`.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::runs::{self, RunRow};
use super::schedule::Schedule;
use super::states::Overlap;
use super::store::{self, JobBody, NewJob, job_id};
use crate::auth::extract::AuthUser;
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use crate::views::store::lookup_name;

/// The body of `POST /jobs/create/`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// The view to refresh.
    #[schema(min_length = 1)]
    pub view_name: String,
    /// 5 fields (minute hour day-of-month month day-of-week), 6 with leading seconds, or a
    /// macro (`@hourly`, `@daily`, ...).
    pub crontab_def: String,
    /// IANA time zone the crontab is read in (default `UTC`).
    pub timezone: Option<String>,
    /// `skip` (default) or `queue`.
    pub overlap: Option<Overlap>,
    /// Extra attempts after a failed refresh, with exponential backoff (0 to 10, default 0).
    #[schema(minimum = 0, maximum = 10)]
    #[serde(default, deserialize_with = "whole_number")]
    pub retries: Option<i32>,
    /// Create the job paused (default false).
    pub paused: Option<bool>,
    /// Deprecated: the opposite of `paused`, kept for old clients.
    #[schema(deprecated)]
    pub enabled: Option<bool>,
}

/// The body of `PATCH /jobs/{id}/`: any subset.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateJob {
    /// Pause (`true`) or resume (`false`).
    pub paused: Option<bool>,
    /// Deprecated: the opposite of `paused`, kept for old clients.
    #[schema(deprecated)]
    pub enabled: Option<bool>,
    /// A new schedule.
    pub crontab_def: Option<String>,
    /// A new time zone.
    pub timezone: Option<String>,
    /// A new overlap rule.
    pub overlap: Option<Overlap>,
    /// New retry count (0 to 10).
    #[schema(minimum = 0, maximum = 10)]
    #[serde(default, deserialize_with = "whole_number")]
    pub retries: Option<i32>,
}

/// An optional integer that may be written as a number with a zero fraction (`7.0`), which JSON
/// Schema counts as an integer too.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = number.as_i64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= f64::from(i32::MAX))
            .map(|f| f as i64)
    });
    whole
        .and_then(|n| i32::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom(format!("{number} is not a whole number of the i32 range"))
        })
}

fn bad_schedule(e: super::schedule::ScheduleError) -> ApiError {
    use super::schedule::ScheduleError;
    let code = match e {
        ScheduleError::TimeZone(_) => "invalid_timezone",
        _ => "invalid_crontab",
    };
    let error = ApiError::bad_request(code, e.to_string());
    match e {
        ScheduleError::Field {
            field,
            value,
            allowed,
            ..
        } => error.with_members(serde_json::json!({
            "field": field,
            "value": value,
            "allowed": allowed,
        })),
        _ => error,
    }
}

/// Whether a job runs, from `paused` or its deprecated alias `enabled` (the opposite); both
/// may be given only when they agree.
fn enabled_from(paused: Option<bool>, enabled: Option<bool>) -> Result<Option<bool>, ApiError> {
    match (paused, enabled) {
        (Some(p), Some(e)) if p == e => Err(ApiError::bad_request(
            "invalid_job",
            format!(
                "paused ({p}) and its deprecated alias enabled ({e}) contradict each other; send paused only"
            ),
        )),
        (Some(p), _) => Ok(Some(!p)),
        (None, e) => Ok(e),
    }
}

fn check_retries(retries: i32) -> Result<i32, ApiError> {
    if (0..=10).contains(&retries) {
        Ok(retries)
    } else {
        Err(ApiError::bad_request(
            "invalid_retries",
            format!("retries is {retries}; it must be between 0 and 10"),
        ))
    }
}

/// Create a cron job that refreshes a view.
#[utoipa::path(post, path = "/jobs/create/", tag = "jobs", request_body = CreateJob,
    responses((status = 201, body = JobBody), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "the tenant has its most jobs")),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user = %user.user_id, view = %body.view_name))]
pub async fn create_job(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<CreateJob>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let timezone = body.timezone.unwrap_or_else(|| "UTC".to_owned());
    let schedule = Schedule::parse(&body.crontab_def, &timezone).map_err(bad_schedule)?;
    let retries = check_retries(body.retries.unwrap_or(0))?;
    let name = lookup_name(body.view_name.trim())?;
    let view = crate::views::store::find(&state.pool, user.user_id, &name).await?;
    let enabled = enabled_from(body.paused, body.enabled)?.unwrap_or(true);
    let job = store::create(
        &state.pool,
        &NewJob {
            user_id: user.user_id,
            view_id: view.view_id,
            crontab_def: body.crontab_def.trim(),
            timezone: schedule.timezone().name(),
            overlap: body.overlap.unwrap_or_default(),
            retries,
            enabled,
            next_run_at: enabled.then(|| schedule.next_after(Utc::now())).flatten(),
        },
        state.settings.max_jobs_per_tenant,
    )
    .await?;
    tracing::info!(job_id = %job.job_id, view = %job.view_name, "created a job");
    Ok(HttpResponse::Created().json(JobBody::new(job, None)))
}

/// The caller's jobs.
#[utoipa::path(get, path = "/jobs/", tag = "jobs",
    responses((status = 200, body = Vec<JobBody>)), security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user = %user.user_id))]
pub async fn list_jobs(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let mut last_runs = runs::last_runs(&state.pool, user.user_id, None).await?;
    let jobs: Vec<JobBody> = store::list(&state.pool, user.user_id, None)
        .await?
        .into_iter()
        .map(|j| {
            let last = last_runs.remove(&j.job_id);
            JobBody::new(j, last)
        })
        .collect();
    Ok(HttpResponse::Ok().json(jobs))
}

/// One job, with its next tick and latest run.
#[utoipa::path(get, path = "/jobs/{id}/", tag = "jobs",
    params(("id" = Uuid, Path, description = "job id")),
    responses((status = 200, body = JobBody), (status = 404, body = Problem)), security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user = %user.user_id, job = %path.as_str()))]
pub async fn describe_job(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job = store::find(&state.pool, user.user_id, job_id(&path)?).await?;
    let last = runs::last_run(&state.pool, job.job_id).await?;
    Ok(HttpResponse::Ok().json(JobBody::new(job, last)))
}

/// Pause, resume, or change the schedule of a job.
#[utoipa::path(patch, path = "/jobs/{id}/", tag = "jobs", request_body = UpdateJob,
    params(("id" = Uuid, Path, description = "job id")),
    responses((status = 200, body = JobBody), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user = %user.user_id, job = %path.as_str()))]
pub async fn update_job(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    body: web::Json<UpdateJob>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let id = job_id(&path)?;
    let enabled = enabled_from(body.paused, body.enabled)?;
    let mut tx = state.pool.begin().await?;
    let mut job = store::lock(&mut tx, user.user_id, id).await?;
    let schedule_changed = body.crontab_def.is_some() || body.timezone.is_some();
    if let Some(crontab) = body.crontab_def {
        job.crontab_def = crontab.trim().to_owned();
    }
    if let Some(tz) = body.timezone {
        job.timezone = tz;
    }
    let schedule = Schedule::parse(&job.crontab_def, &job.timezone).map_err(bad_schedule)?;
    job.timezone = schedule.timezone().name().to_owned();
    if let Some(overlap) = body.overlap {
        job.overlap = overlap;
    }
    if let Some(retries) = body.retries {
        job.retries = check_retries(retries)?;
    }
    let resumed = enabled == Some(true) && !job.enabled;
    if let Some(enabled) = enabled {
        job.enabled = enabled;
    }
    if !job.enabled {
        job.next_run_at = None;
    } else if schedule_changed || resumed || job.next_run_at.is_none() {
        // A resumed job starts from the next tick: the paused ones are not made up for.
        job.next_run_at = schedule.next_after(Utc::now());
    }
    store::update(&mut tx, &mut job).await?;
    tx.commit().await?;
    let last = runs::last_run(&state.pool, job.job_id).await?;
    Ok(HttpResponse::Ok().json(JobBody::new(job, last)))
}

/// Delete a job (its runs go with it; channels created from it keep watching its view).
#[utoipa::path(delete, path = "/jobs/{id}/", tag = "jobs",
    params(("id" = Uuid, Path, description = "job id")),
    responses((status = 204), (status = 404, body = Problem)), security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user = %user.user_id, job = %path.as_str()))]
pub async fn delete_job(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    store::delete(&state.pool, user.user_id, job_id(&path)?).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Query of `GET /jobs/{id}/runs/`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// Page size (1 to 1000, default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Cursor: runs scheduled before this time (the `next_cursor` of the previous page).
    pub before: Option<DateTime<Utc>>,
}

/// A page of run history.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunsPage {
    /// Runs, newest tick first.
    pub runs: Vec<RunRow>,
    /// Pass as `before` for the next page; `null` on the last page.
    pub next_cursor: Option<DateTime<Utc>>,
}

/// Run history of a job, newest first.
#[utoipa::path(get, path = "/jobs/{id}/runs/", tag = "jobs",
    params(("id" = Uuid, Path, description = "job id"), RunsQuery),
    responses((status = 200, body = RunsPage), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user = %user.user_id, job = %path.as_str()))]
pub async fn list_runs(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    query: web::Query<RunsQuery>,
) -> Result<HttpResponse, ApiError> {
    let job = store::find(&state.pool, user.user_id, job_id(&path)?).await?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit is {limit}; it must be between 1 and 1000"),
        ));
    }
    let runs = runs::runs(&state.pool, job.job_id, query.before, limit).await?;
    let next_cursor = if runs.len() as i64 == limit {
        runs.last().map(|r| r.scheduled_for)
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(RunsPage { runs, next_cursor }))
}
