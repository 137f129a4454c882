//! Logging with `tracing`: `RUST_LOG` filters (default `info`), `LOG_FORMAT` picks pretty or
//! JSON lines; colours only when standard error is a terminal. Every HTTP request gets a span
//! and one access line ([`AccessLog`]).

use std::io::IsTerminal;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage, HttpRequest};
use tracing::Span;
use tracing::field::Empty;
use tracing_actix_web::{RequestId, RootSpan, RootSpanBuilder};
use tracing_subscriber::EnvFilter;
use uuid::Uuid;

use crate::config::LogFormat;

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes are for people at a terminal, not for log files and collectors.
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// When the request arrived, kept in its extensions for the access line.
#[derive(Debug, Clone, Copy)]
struct Arrived(Instant);

/// The request span and the access log: the span `request` carries the method, the target
/// (query tokens already stripped), the request id and, once known, the route pattern, the
/// status and the caller (`user_id`, `tenant`); at the end of each request one `access` line
/// at info (error for 5xx) gives method, route, status and latency. The route is the pattern
/// (`/tables/{name}/rows`), `unmatched` when no route matched. The latency is the time to the
/// response head: a stream is logged when it starts.
#[derive(Debug, Clone, Copy)]
pub struct AccessLog;

impl RootSpanBuilder for AccessLog {
    fn on_request_start(request: &ServiceRequest) -> Span {
        request.extensions_mut().insert(Arrived(Instant::now()));
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        tracing::info_span!(
            "request",
            method = %request.method(),
            target = %request.uri().path_and_query().map_or("", |p| p.as_str()),
            request_id = %request_id,
            route = Empty,
            status = Empty,
            user_id = Empty,
            tenant = Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let (status, request) = match outcome {
            Ok(response) => (response.status(), Some(response.request())),
            Err(error) => (error.as_response_error().status_code(), None),
        };
        let route = request
            .and_then(HttpRequest::match_pattern)
            .unwrap_or_else(|| "unmatched".to_owned());
        let latency_ms = request
            .and_then(|r| r.extensions().get::<Arrived>().copied())
            .map_or(0.0, |Arrived(at)| {
                (at.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0
            });
        let method = request.map(|r| r.method().to_string()).unwrap_or_default();
        let status = status.as_u16();
        span.record("route", tracing::field::display(&route));
        span.record("status", status);
        span.in_scope(|| {
            if status >= 500 {
                tracing::error!(target: "access", %method, %route, status, latency_ms, "request failed");
            } else {
                tracing::info!(target: "access", %method, %route, status, latency_ms, "request");
            }
        });
    }
}

/// Records the authenticated caller on the request's span, for its access line.
pub fn record_caller(req: &HttpRequest, user_id: Uuid, tenant: &str) {
    if let Some(span) = req.extensions().get::<RootSpan>() {
        span.record("user_id", tracing::field::display(user_id));
        span.record("tenant", tracing::field::display(tenant));
    }
}
