//! Prometheus metrics: every metric of the process is listed in [`METRICS`], described (HELP)
//! and registered at zero when the recorder is installed, so a scrape shows all of them from
//! the start. Durations and sizes are histograms (buckets, not quantiles), so that several
//! processes can be summed. Request counts and latency are recorded by [`record`], the pool
//! gauges at scrape time, the rest where it happens.

use std::sync::OnceLock;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::jobs::states::RunStatus;
use crate::state::AppState;
use crate::views::store::RefreshStatus;

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// One metric of the process: its name, kind, unit and help text.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// The exposed name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Its unit.
    pub unit: Unit,
    /// The HELP text.
    pub help: &'static str,
}

const fn metric(name: &'static str, kind: Kind, unit: Unit, help: &'static str) -> Metric {
    Metric {
        name,
        kind,
        unit,
        help,
    }
}

/// Every metric this process exposes (docs/OPERATIONS.md lists them too).
pub const METRICS: &[Metric] = &[
    metric(
        "http_requests_total",
        Kind::Counter,
        Unit::Count,
        "HTTP requests answered, by method, route pattern (or `unmatched`) and status",
    ),
    metric(
        "http_request_duration_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time to the response head, by method, route pattern and status",
    ),
    metric(
        "db_pool_connections",
        Kind::Gauge,
        Unit::Count,
        "Connections the pool holds (set at scrape time)",
    ),
    metric(
        "db_pool_idle_connections",
        Kind::Gauge,
        Unit::Count,
        "Idle connections in the pool (set at scrape time)",
    ),
    metric(
        "db_pool_max_connections",
        Kind::Gauge,
        Unit::Count,
        "The pool's connection limit",
    ),
    metric(
        "tdc_pool_role_leaks_total",
        Kind::Counter,
        Unit::Count,
        "Pooled connections found still in a tenant role and closed",
    ),
    metric(
        "tdc_set_role_retries_total",
        Kind::Counter,
        Unit::Count,
        "SET ROLE to a tenant role refused by a backend and tried again on another connection",
    ),
    metric(
        "tdc_scheduler_lag_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time from a job tick's scheduled time to the start of its run",
    ),
    metric(
        "tdc_job_runs_total",
        Kind::Counter,
        Unit::Count,
        "Finished job runs, by status",
    ),
    metric(
        "tdc_view_refresh_duration_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Duration of view refreshes (API and scheduled), by status",
    ),
    metric(
        "tdc_ingest_rows",
        Kind::Histogram,
        Unit::Count,
        "Rows copied per upload (table creation or added rows)",
    ),
    metric(
        "tdc_ingest_bytes",
        Kind::Histogram,
        Unit::Bytes,
        "COPY bytes sent to PostgreSQL per upload",
    ),
    metric(
        "tdc_hardening",
        Kind::Gauge,
        Unit::Count,
        "Whether a protection of src/db/harden.sql is in force (1) or not (0), by check, read at start",
    ),
    metric(
        "tdc_sse_streams",
        Kind::Gauge,
        Unit::Count,
        "Open SSE listen streams",
    ),
    metric(
        "tdc_sse_events_sent_total",
        Kind::Counter,
        Unit::Count,
        "Refresh events sent on SSE streams (replayed and live)",
    ),
    metric(
        "tdc_sse_lagged_total",
        Kind::Counter,
        Unit::Count,
        "SSE streams ended for falling too far behind",
    ),
    metric(
        "tdc_sse_sessions_ended_total",
        Kind::Counter,
        Unit::Count,
        "Sessions whose streams this process ended at revocation or expiry",
    ),
    metric(
        "tdc_hub_reconnects_total",
        Kind::Counter,
        Unit::Count,
        "Reconnections of the channel hub's LISTEN connection",
    ),
    metric(
        "tdc_webhook_attempts_total",
        Kind::Counter,
        Unit::Count,
        "Webhook delivery attempts, by outcome (succeeded, retried, failed, gone)",
    ),
    metric(
        "tdc_webhook_attempt_duration_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Duration of webhook delivery attempts, answer or not",
    ),
    metric(
        "tdc_email_messages_total",
        Kind::Counter,
        Unit::Count,
        "E-mail notification messages, by outcome (succeeded, retried, failed)",
    ),
    metric(
        "tdc_managed_postgres_restarts_total",
        Kind::Counter,
        Unit::Count,
        "Restarts of the managed PostgreSQL after it died",
    ),
];

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const LONG_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
const ROWS_BUCKETS: &[f64] = &[1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8];
const BYTES_BUCKETS: &[f64] = &[
    1024.0,
    16384.0,
    131_072.0,
    1_048_576.0,
    8_388_608.0,
    67_108_864.0,
    536_870_912.0,
    4_294_967_296.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

fn recorder()
-> Result<metrics_exporter_prometheus::PrometheusRecorder, metrics_exporter_prometheus::BuildError>
{
    Ok(PrometheusBuilder::new()
        // Buckets for every histogram: without them the exporter renders summaries, whose
        // quantiles cannot be added up across processes.
        .set_buckets(LATENCY_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full("tdc_scheduler_lag_seconds".to_owned()),
            LONG_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("tdc_view_refresh_duration_seconds".to_owned()),
            LONG_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("tdc_webhook_attempt_duration_seconds".to_owned()),
            LONG_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Full("tdc_ingest_rows".to_owned()), ROWS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full("tdc_ingest_bytes".to_owned()), BYTES_BUCKETS)?
        .build_recorder())
}

/// Installs the process-wide recorder once (several apps in one process share it), describes
/// and registers every metric, and returns the handle that renders it.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = recorder().expect("BUG: constant buckets are not empty");
            let handle = recorder.handle();
            if ::metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            register_all();
            handle
        })
        .clone()
}

/// HELP for every metric, and a zero for every series whose labels are known in advance (the
/// request metrics get theirs with the first request of each route and status).
fn register_all() {
    for m in METRICS {
        match m.kind {
            Kind::Counter => ::metrics::describe_counter!(m.name, m.unit, m.help),
            Kind::Gauge => ::metrics::describe_gauge!(m.name, m.unit, m.help),
            Kind::Histogram => ::metrics::describe_histogram!(m.name, m.unit, m.help),
        }
        match m.name {
            "http_requests_total" | "http_request_duration_seconds" => {}
            "tdc_job_runs_total" => {
                for status in RunStatus::ALL {
                    if status != RunStatus::Running {
                        ::metrics::counter!(m.name, "status" => status.as_str()).increment(0);
                    }
                }
            }
            "tdc_view_refresh_duration_seconds" => {
                for status in [
                    RefreshStatus::Refreshed,
                    RefreshStatus::Skipped,
                    RefreshStatus::Failed,
                ] {
                    drop(::metrics::histogram!(m.name, "status" => status.as_str()));
                }
            }
            "tdc_webhook_attempts_total" => {
                for outcome in crate::notify::outbox::OUTCOMES {
                    ::metrics::counter!(m.name, "outcome" => outcome).increment(0);
                }
            }
            "tdc_email_messages_total" => {
                for outcome in crate::notify::email::OUTCOMES {
                    ::metrics::counter!(m.name, "outcome" => outcome).increment(0);
                }
            }
            name => match m.kind {
                Kind::Counter => ::metrics::counter!(name).increment(0),
                Kind::Gauge => ::metrics::gauge!(name).increment(0.0),
                Kind::Histogram => drop(::metrics::histogram!(name)),
            },
        }
    }
}

/// Middleware: counts every request and records its latency by method, route pattern (never
/// the raw path, which would explode cardinality) and status.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().to_string();
    let res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = res.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    ::metrics::counter!("http_requests_total", &labels).increment(1);
    ::metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    Ok(res)
}

/// The Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn render(state: web::Data<AppState>) -> HttpResponse {
    let pool = &state.pool;
    #[expect(clippy::cast_precision_loss, reason = "pool sizes are small")]
    {
        ::metrics::gauge!("db_pool_connections").set(pool.size() as f64);
        ::metrics::gauge!("db_pool_idle_connections").set(pool.num_idle() as f64);
        ::metrics::gauge!("db_pool_max_connections")
            .set(pool.options().get_max_connections() as f64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
