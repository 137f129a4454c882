//! Runs a rows request as the tenant and writes the answer: JSON (one page, with the cursor of
//! the next one; `page`), or CSV/Parquet written to a temporary file and then streamed
//! (`export`). The statement itself is built in `statement`.

use std::time::Duration;

use actix_web::HttpResponse;
use sqlx::PgPool;

use super::export::{Export, export};
use super::page::json_page;
use super::params::{Format, RowsQuery};
use super::statement::{Relation, build};
use crate::config::Settings;
use crate::db::ident::Ident;
use crate::db::tenant::TenantSlots;
use crate::error::ApiError;

/// What bounds a rows request besides its parameters.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Statement timeout of the query.
    pub statement_timeout: Duration,
    /// Largest export file written before it is sent (`export_too_large` beyond).
    pub spool_limit_bytes: u64,
    /// How long an export waits for a client that reads nothing before it ends the stream.
    pub write_stall: Duration,
    /// Largest JSON page, in bytes: a page is built in memory, so huge rows must not add up.
    pub page_limit_bytes: usize,
}

impl ReadLimits {
    /// The limits the settings give.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            statement_timeout: settings.tenant_statement_timeout,
            spool_limit_bytes: settings.export_spool_limit_bytes,
            write_stall: settings.export_write_stall,
            page_limit_bytes: settings.rows_response_limit_bytes,
        }
    }
}

/// Answers `GET .../rows/` on the tenant's relation `name` (a table or a view the caller has
/// already been found to own): takes one of the tenant's read slots (429 when all are busy),
/// parses the parameters, reads the columns, runs as the tenant.
pub async fn read(
    pool: &PgPool,
    slots: &TenantSlots,
    limits: ReadLimits,
    tenant: Ident,
    name: Ident,
    pairs: &[(String, String)],
) -> Result<HttpResponse, ApiError> {
    // A slot is per process and held until the answer is fully sent, so one tenant's slow
    // or stalled downloads only ever queue behind each other.
    let slot = slots
        .try_acquire(&tenant)
        .ok_or(ApiError::TooManyRequests {
            retry_after_secs: 1,
        })?;
    let query = RowsQuery::parse(pairs)?;
    let columns = crate::tables::store::columns(pool, &tenant, &name).await?;
    let relation = Relation {
        schema: tenant,
        name,
        columns,
    };
    let (sql, columns, compared) = build(&relation, &query)?;
    match query.format {
        Format::Json => json_page(pool, limits, &relation, sql, &query, &compared).await,
        Format::Csv | Format::Parquet => {
            let export_of = Export {
                relation,
                sql,
                columns,
                compared,
                format: query.format,
            };
            export(pool, limits, export_of, slot).await
        }
    }
}
