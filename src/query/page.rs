//! The JSON answer to a rows request: one page, built in memory up to a byte limit, with the
//! cursor of the next page.

use actix_web::HttpResponse;
use futures_util::StreamExt;
use sqlx::{Postgres, QueryBuilder, Row};

use super::limits::ReadLimits;
use super::params::{Cursor, Position, RowsQuery, order_key};
use super::statement::{Paging, query_error};
use crate::db::tenant::TenantTx;
use crate::error::ApiError;

/// Answers with one JSON page: `{"rows": [...], "next_cursor": ...}` (plus `page`, `size` and
/// `has_more` in page mode), refusing a page larger than the response limit.
pub(super) async fn json_page(
    mut tx: TenantTx,
    limits: ReadLimits,
    mut sql: QueryBuilder<Postgres>,
    query: &RowsQuery,
    compared: &[(String, String)],
    paging: Paging,
) -> Result<HttpResponse, ApiError> {
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    let mut stream = sql.build().fetch(&mut *tx);
    while let Some(row) = stream.next().await {
        let row = row.map_err(|e| query_error(e, compared))?;
        bytes += row.try_get::<&str, _>(1)?.len();
        if bytes > limits.page_limit_bytes {
            return Err(ApiError::bad_request(
                "response_too_large",
                format!(
                    "this page of rows is larger than {} bytes (TDC_ROWS_RESPONSE_LIMIT_BYTES); ask for fewer rows with limit, fewer columns with select, or export it with format=csv or format=parquet",
                    limits.page_limit_bytes
                ),
            ));
        }
        rows.push(row);
    }
    drop(stream);
    tx.commit().await?;
    let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    let mut body = String::from("{\"rows\":[");
    let mut last_tid = None;
    let mut last_values = None;
    for (i, row) in rows.iter().take(limit).enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(row.try_get::<&str, _>(1)?);
        last_tid = Some(row.try_get::<String, _>(0)?);
        if paging.keyset {
            last_values = Some(row.try_get::<&str, _>(2)?);
        }
    }
    body.push_str("],\"next_cursor\":");
    let next = match (&query.position, more) {
        (_, false) => None,
        (Position::Cursor(_), true) if query.order.is_empty() => last_tid.map(Cursor::After),
        (Position::Cursor(_), true) if paging.keyset => match last_values {
            Some(values) => Some(Cursor::Keyset {
                order: order_key(&query.order),
                values: serde_json::from_str(values).map_err(anyhow::Error::from)?,
                tid: if paging.unique { None } else { last_tid },
            }),
            None => None,
        },
        (Position::Cursor(Some(Cursor::Offset(n))), true) => Some(Cursor::Offset(n + query.limit)),
        (Position::Cursor(_), true) => Some(Cursor::Offset(query.limit)),
        (Position::Page { .. }, true) => None,
    };
    match next {
        Some(cursor) => {
            body.push_str(&serde_json::to_string(&cursor.encode()).map_err(anyhow::Error::from)?)
        }
        None => body.push_str("null"),
    }
    if let Position::Page { page, size } = query.position {
        body.push_str(&format!(
            ",\"page\":{page},\"size\":{size},\"has_more\":{more}"
        ));
    }
    body.push('}');
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}
