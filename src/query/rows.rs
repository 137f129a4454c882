//! Runs a rows request as the tenant and writes the answer: JSON (one page, with the cursor of
//! the next one; `page`), or CSV/Parquet written to a temporary file and then streamed
//! (`export`). The statement itself is built in `statement`.

use actix_web::HttpResponse;
use futures_util::future::BoxFuture;
use sqlx::{PgConnection, PgPool};

use super::export::{Export, export};
use super::page::json_page;
use super::params::{Format, RowsQuery};
use super::statement::{Relation, build, build_after, cursor_check, cursor_error};
use crate::db::ident::Ident;
use crate::db::tenant::TenantSlots;
use crate::error::ApiError;
use crate::tables::indexes::OrderKeys;
use crate::tables::store::ColumnInfo;

// Defined in `limits`, below `page` and `export` that take it, so no module circle forms;
// callers name it here, next to `read`.
pub use super::limits::ReadLimits;

/// Finds a relation the caller owns and its columns, as the service role, on the connection
/// given (404 when the caller owns no such relation). Each feature brings its own registry.
pub type FindColumns = Box<
    dyn for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<Vec<ColumnInfo>, ApiError>>
        + Send,
>;

/// Answers `GET .../rows/` on the tenant's relation `name`: finds the relation and its columns
/// with `find` (404 first, as before), takes one of the tenant's read slots (429 when all are
/// busy), parses the parameters, runs as the tenant. A JSON page is read in the transaction
/// `find` began (which then becomes the tenant's).
pub async fn read(
    pool: &PgPool,
    slots: &TenantSlots,
    limits: ReadLimits,
    tenant: Ident,
    name: Ident,
    pairs: &[(String, String)],
    find: FindColumns,
) -> Result<HttpResponse, ApiError> {
    let mut tx = pool.begin().await?;
    let columns = find(&mut tx).await?;
    // A slot is per process and held until the answer is fully sent, so one tenant's slow
    // or stalled downloads only ever queue behind each other.
    let slot = slots.admit(&tenant)?;
    let query = RowsQuery::parse(pairs)?;
    // Which orders are unique (one more catalog read, only for a custom order).
    let keys = if query.order.is_empty() {
        OrderKeys::default()
    } else {
        crate::tables::indexes::order_keys(&mut tx, &tenant, &name).await?
    };
    let relation = Relation {
        schema: tenant,
        name,
        columns,
        keys,
    };
    let (sql, columns, compared, paging) = build(&relation, &query)?;
    if let Some(mut check) = cursor_check(&relation, &query)? {
        check
            .build()
            .execute(&mut *tx)
            .await
            .map_err(cursor_error)?;
    }
    match query.format {
        Format::Json => json_page(tx, limits, &relation, sql, &query, &compared, paging).await,
        Format::Csv | Format::Parquet => {
            drop(tx);
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

/// The parameters of `GET .../rows/` as the OpenAPI document shows them; [`RowsQuery::parse`]
/// reads them (and the filters `column=op.value`, which name the relation's columns and so
/// cannot be listed).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RowsParams {
    /// Rows per response: 1 to 10000 for JSON (default 100); CSV and Parquet exports take
    /// every row unless limited.
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page (not with `page` or `size`): keyset, and only
    /// good for the `order` it was issued with.
    pub cursor: Option<String>,
    /// 1-based page of `size` rows.
    #[param(minimum = 1, maximum = 922_337_203_685_477_i64)]
    pub page: Option<i64>,
    /// Rows per page (1 to 10000).
    #[param(minimum = 1, maximum = 10_000)]
    pub size: Option<i64>,
    /// Sort order, e.g. `record_timestamp.desc,call_id`.
    pub order: Option<String>,
    /// Comma-separated columns to return.
    pub select: Option<String>,
    /// `json` (default), `csv` or `parquet`.
    #[param(inline)]
    pub format: Option<RowsFormat>,
}

/// The output formats of `GET .../rows/`.
#[derive(Debug, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum RowsFormat {
    /// `{"rows": [...], "next_cursor": ...}`.
    Json,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// A Parquet file.
    Parquet,
}

/// One JSON page of rows.
#[derive(Debug, utoipa::ToSchema)]
pub struct RowsPage {
    /// The rows, one object each, keyed by column name.
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Pass as `cursor` for the next page; `null` on the last one (and with `page`).
    pub next_cursor: Option<String>,
    /// With `page`/`size`: the page.
    #[schema(required = false)]
    pub page: Option<i64>,
    /// With `page`/`size`: its size.
    #[schema(required = false)]
    pub size: Option<i64>,
    /// With `page`/`size`: whether a next page exists.
    #[schema(required = false)]
    pub has_more: Option<bool>,
}

/// The plan PostgreSQL chooses for the statement a rows request runs, as `EXPLAIN` prints it
/// (one line a row), run on `conn`: the plan tests run it as a superuser, and an operator can
/// ask why a read is slow. Nothing of the statement is executed.
pub async fn explain(
    pool: &PgPool,
    conn: &mut PgConnection,
    tenant: Ident,
    name: Ident,
    pairs: &[(String, String)],
) -> Result<Vec<String>, ApiError> {
    let query = RowsQuery::parse(pairs)?;
    let columns = crate::tables::store::columns(pool, &tenant, &name).await?;
    let keys = crate::tables::indexes::order_keys(conn, &tenant, &name).await?;
    let relation = Relation {
        schema: tenant,
        name,
        columns,
        keys,
    };
    let (mut sql, ..) = build_after(&relation, &query, "EXPLAIN ")?;
    Ok(sql.build_query_scalar::<String>().fetch_all(conn).await?)
}
