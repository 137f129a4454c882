//! Runs a rows request as the tenant and writes the answer: JSON (one page, with the cursor of
//! the next one; `page`), or CSV/Parquet written to a temporary file and then streamed
//! (`export`). The statement itself is built in `statement`.

use actix_web::HttpResponse;
use sqlx::PgPool;

use super::export::{Export, export};
use super::page::json_page;
use super::params::{Format, RowsQuery};
use super::statement::{Relation, build};
use crate::db::ident::Ident;
use crate::db::tenant::TenantSlots;
use crate::error::ApiError;

// Defined in `limits`, below `page` and `export` that take it, so no module circle forms;
// callers name it here, next to `read`.
pub use super::limits::ReadLimits;

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
