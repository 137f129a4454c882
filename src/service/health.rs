//! `/health`: up when the database answers within a second.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::{ApiError, Problem};

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
    let ping = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool);
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => Ok(HttpResponse::Ok().json(Health { status: "UP" })),
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
