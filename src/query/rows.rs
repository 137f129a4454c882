//! Runs a rows request as the tenant and writes the answer: JSON (one page, with the cursor of
//! the next one; `page`), or CSV/Parquet written to a temporary file and then streamed
//! (`export`). The statement itself is built in `statement`.

use actix_web::HttpResponse;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::export::{Export, export};
use super::page::json_page;
use super::params::{Format, RowsQuery};
use super::relation::find;
pub use super::relation::{Kind, OrderKeys};
use super::statement::{Relation, build, build_after, cursor_check, cursor_error};
use crate::db::ident::Ident;
use crate::db::tenant::{self, TenantSlots};
use crate::error::ApiError;

// Defined in `limits`, below `page` and `export` that take it, so no module circle forms;
// callers name it here, next to `read`.
pub use super::limits::ReadLimits;

/// Answers `GET .../rows/` on the relation `name` of `kind` that `user_id` owns in its schema
/// `tenant`: finds it with its columns and keys (404 first, as before), takes one of the
/// tenant's read slots (429 when all are busy), parses the parameters, runs as the tenant. A
/// JSON page costs four round trips on one connection: the lookup, `BEGIN` with the tenant's
/// settings and role, the page, `COMMIT` (and the pool's role check on release).
pub async fn read(
    pool: &PgPool,
    slots: &TenantSlots,
    limits: ReadLimits,
    (user_id, kind): (Uuid, Kind),
    tenant: Ident,
    name: Ident,
    pairs: &[(String, String)],
) -> Result<HttpResponse, ApiError> {
    let mut conn = pool.acquire().await?;
    // Which orders are unique is read only for a custom order; a query that does not parse
    // needs the keys of no order (it is refused after the 404 below).
    let ordered = RowsQuery::parse(pairs).is_ok_and(|q| !q.order.is_empty());
    let found = find(&mut conn, user_id, kind, &tenant, &name, ordered).await?;
    // A slot is per process and held until the answer is fully sent, so one tenant's slow
    // or stalled downloads only ever queue behind each other.
    let slot = slots.admit(&tenant)?;
    let query = RowsQuery::parse(pairs)?;
    let relation = Relation {
        schema: tenant,
        name,
        columns: found.columns,
        keys: found.keys,
    };
    let (sql, columns, compared, paging) = build(&relation, &query)?;
    match query.format {
        Format::Json => {
            let tx =
                tenant::begin_as_on(pool, conn, &relation.schema, limits.statement_timeout).await?;
            match json_page(tx, limits, sql, &query, &compared, paging).await {
                // A value that does not fit its column: the cursor's fault when its values do
                // not cast (asked only now, so a good page costs no extra round trip).
                Err(ApiError::BadRequest {
                    code: "invalid_filter",
                    detail,
                }) => {
                    check_cursor(pool, &relation, &query).await?;
                    Err(ApiError::BadRequest {
                        code: "invalid_filter",
                        detail,
                    })
                }
                answer => answer,
            }
        }
        Format::Csv | Format::Parquet => {
            check_cursor(&mut *conn, &relation, &query).await?;
            drop(conn);
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

/// 400 `invalid_cursor` when the request's keyset cursor has values that do not cast to its
/// order's columns (a cursor issued for another table or view, or before a replace), run as
/// the service role: casts of bound values to fixed types, nothing of the tenant's is read.
async fn check_cursor<'c>(
    on: impl sqlx::PgExecutor<'c>,
    relation: &Relation,
    query: &RowsQuery,
) -> Result<(), ApiError> {
    if let Some(mut check) = cursor_check(relation, query)? {
        check.build().execute(on).await.map_err(cursor_error)?;
    }
    Ok(())
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
/// ask why a read is slow. The relation is found as [`read`] finds it (on the pool); nothing of
/// the statement is executed.
pub async fn explain(
    pool: &PgPool,
    conn: &mut PgConnection,
    (user_id, kind): (Uuid, Kind),
    tenant: Ident,
    name: Ident,
    pairs: &[(String, String)],
) -> Result<Vec<String>, ApiError> {
    let query = RowsQuery::parse(pairs)?;
    let found = find(
        &mut *pool.acquire().await?,
        user_id,
        kind,
        &tenant,
        &name,
        true,
    )
    .await?;
    let relation = Relation {
        schema: tenant,
        name,
        columns: found.columns,
        keys: found.keys,
    };
    let (mut sql, ..) = build_after(&relation, &query, "EXPLAIN ")?;
    Ok(sql.build_query_scalar::<String>().fetch_all(conn).await?)
}
