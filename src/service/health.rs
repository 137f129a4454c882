//! `/health`: up when the database answers within a second, on a connection of its own.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, Problem};
use crate::state::AppState;

/// How long a health check may take before it answers 503.
const DEADLINE: Duration = Duration::from_secs(2);

/// The health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `UP`.
    #[schema(example = "UP")]
    pub status: &'static str,
}

/// Liveness and readiness: `UP` when the database answers, 503 otherwise.
#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, body = Health), (status = 503, body = Problem)))]
pub async fn health(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match tokio::time::timeout(DEADLINE, state.health.ping()).await {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(Health { status: "UP" })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: database error");
            Err(unavailable())
        }
        Err(_) => Err(unavailable()),
    }
}

fn unavailable() -> ApiError {
    ApiError::Unavailable {
        code: "database_unavailable",
        detail: "the database does not answer".to_owned(),
    }
}
