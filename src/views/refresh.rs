//! The one refresh function, used by the API and (later) by the scheduler: refreshes a view as
//! its tenant with the limits, skips the work when nothing it depends on changed, and records
//! the outcome.

use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgPool;

use super::store::{self, RefreshRecord, ViewRow};
use crate::db::ident::Ident;
use crate::db::tenant;
use crate::error::ApiError;

/// Maps a PostgreSQL error in tenant SQL to a 400 that quotes PostgreSQL (message and
/// position), never a 500.
pub fn tenant_sql_error(e: sqlx::Error) -> ApiError {
    match tenant::classify_error(e, "invalid_sql") {
        Ok(classified) => classified,
        Err(sqlx::Error::Database(db)) => {
            let position = db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|pg| match pg.position() {
                    Some(sqlx::postgres::PgErrorPosition::Original(p)) => {
                        Some(format!(" (at character {p})"))
                    }
                    _ => None,
                })
                .unwrap_or_default();
            ApiError::bad_request(
                "invalid_sql",
                format!("PostgreSQL: {}{position}", db.message()),
            )
        }
        Err(other) => ApiError::from(other),
    }
}

/// Refreshes `view`: skipped when it is not volatile, reads only tables, and none of them
/// changed since the last successful refresh; otherwise `REFRESH` (concurrently when it has a
/// unique key) as the tenant. A failure leaves the previous contents readable.
pub async fn refresh_view(
    pool: &PgPool,
    statement_timeout: Duration,
    tenant: &Ident,
    view: &ViewRow,
) -> Result<RefreshRecord, ApiError> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let (changes, reads_views) = store::base_changes(pool, view).await?;
    let name = Ident::new(view.view_name.clone())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("BUG: stored view name: {e}")))?;
    let elapsed_ms =
        |clock: Instant| i64::try_from(clock.elapsed().as_millis()).unwrap_or(i64::MAX);

    if !view.volatile && !reads_views && view.refreshed_changes == Some(changes) {
        let record = RefreshRecord {
            started_at,
            finished_at: Utc::now(),
            status: "skipped".to_owned(),
            row_count: None,
            duration_ms: elapsed_ms(clock),
            error: None,
        };
        store::record_refresh(pool, view.view_id, &record, None).await?;
        return Ok(record);
    }

    let outcome = async {
        let mut tx = tenant::begin_as(pool, tenant, statement_timeout).await?;
        // CONCURRENTLY needs a populated view: the first fill is a plain refresh.
        let concurrently = view.unique_key.is_some() && view.refreshed_changes.is_some();
        store::refresh(&mut tx, tenant, &name, concurrently).await?;
        let rows = crate::tables::store::row_count(&mut tx, tenant, &name).await;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(rows)
    }
    .await;
    match outcome {
        Ok(rows) => {
            let record = RefreshRecord {
                started_at,
                finished_at: Utc::now(),
                status: "refreshed".to_owned(),
                row_count: rows.ok(),
                duration_ms: elapsed_ms(clock),
                error: None,
            };
            store::record_refresh(pool, view.view_id, &record, Some(changes)).await?;
            Ok(record)
        }
        Err(e) => {
            let error = tenant_sql_error(e);
            let record = RefreshRecord {
                started_at,
                finished_at: Utc::now(),
                status: "failed".to_owned(),
                row_count: None,
                duration_ms: elapsed_ms(clock),
                error: Some(error.to_string()),
            };
            store::record_refresh(pool, view.view_id, &record, None).await?;
            Err(error)
        }
    }
}
