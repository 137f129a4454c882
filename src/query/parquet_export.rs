//! The Parquet export: JSON rows decoded into Arrow batches of the columns' types and written
//! to the spool; a value Arrow cannot hold is a 400 naming its column and row.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use futures_util::StreamExt;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use super::limits::ReadLimits;
use super::spool::{Output, Spool, SpoolError, spool_error};
use super::statement::{Relation, query_error};
use crate::db::tenant;
use crate::error::ApiError;
use crate::tables::types::PgType;

/// The Arrow type a column is exported as; text for everything else.
fn arrow_type(pg: Option<PgType>) -> DataType {
    match pg {
        Some(PgType::Int2) => DataType::Int16,
        Some(PgType::Int4) => DataType::Int32,
        Some(PgType::Int8) => DataType::Int64,
        Some(PgType::Float4) => DataType::Float32,
        Some(PgType::Float8) => DataType::Float64,
        Some(PgType::Numeric(Some((p, s)))) => DataType::Decimal128(p, s),
        Some(PgType::Bool) => DataType::Boolean,
        Some(PgType::Date) => DataType::Date32,
        Some(PgType::Time) => DataType::Time64(TimeUnit::Microsecond),
        Some(PgType::Timestamp) => DataType::Timestamp(TimeUnit::Microsecond, None),
        Some(PgType::Timestamptz) => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
        }
        _ => DataType::Utf8,
    }
}

/// Rows per record batch of a Parquet export.
const PARQUET_BATCH_ROWS: usize = 8192;
/// Bytes of JSON rows after which a Parquet batch is written whatever its row count.
const PARQUET_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// Decodes one batch of JSON rows and appends it to the Parquet file; a value Arrow cannot hold
/// (an infinite timestamp, a year past 9999, `NaN` numeric, `24:00`) is a 400 naming it.
fn write_batch(
    decoder: &mut arrow::json::reader::Decoder,
    writer: &mut parquet::arrow::ArrowWriter<Spool>,
    full: &AtomicBool,
    lines: &[String],
    rows_before: usize,
    columns: &[(String, Option<PgType>)],
) -> Result<(), SpoolError> {
    if lines.is_empty() {
        return Ok(());
    }
    let decoded = lines
        .iter()
        .try_for_each(|line| decoder.decode(line.as_bytes()).map(|_| ()))
        .and_then(|()| decoder.flush());
    match decoded {
        Ok(Some(batch)) => writer.write(&batch).map_err(|e| spool_error(full, e))?,
        Ok(None) => {}
        Err(e) => {
            return Err(SpoolError::Api(
                unrepresentable(lines, rows_before, columns).unwrap_or_else(|| {
                    ApiError::Internal(anyhow::Error::from(e).context("decoding a Parquet export"))
                }),
            ));
        }
    }
    Ok(())
}

/// The first value of `lines` that its column's Arrow type cannot hold, as a 400; found by
/// decoding value by value, which is slow but only runs once a batch has failed.
fn unrepresentable(
    lines: &[String],
    rows_before: usize,
    columns: &[(String, Option<PgType>)],
) -> Option<ApiError> {
    for (i, line) in lines.iter().enumerate() {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).ok()?;
        for (name, pg) in columns {
            let data_type = arrow_type(*pg);
            let value = object.get(name).filter(|v| !v.is_null());
            let (Some(pg), Some(value)) = (pg, value) else {
                continue;
            };
            if data_type == DataType::Utf8 {
                continue;
            }
            let field = Field::new(name, data_type.clone(), true);
            let mut one = arrow::json::ReaderBuilder::new(Arc::new(Schema::new(vec![field])))
                .build_decoder()
                .ok()?;
            let mut single = serde_json::Map::new();
            single.insert(name.clone(), value.clone());
            let line = serde_json::Value::Object(single).to_string();
            if one
                .decode(line.as_bytes())
                .and_then(|_| one.flush())
                .is_err()
            {
                return Some(ApiError::bad_request(
                    "unrepresentable_value",
                    format!(
                        "column {name:?}, row {} of the export: the {pg} value {value} has no Parquet equivalent ({data_type}); export with format=csv or format=json, which carry it as text, or filter the row out",
                        rows_before + i + 1
                    ),
                ));
            }
        }
    }
    None
}

/// Spools the result as Parquet, in batches of at most [`PARQUET_BATCH_ROWS`] rows or about
/// [`PARQUET_BATCH_BYTES`] of JSON.
pub(super) async fn spool_parquet(
    pool: &PgPool,
    limits: ReadLimits,
    relation: &Relation,
    mut sql: QueryBuilder<Postgres>,
    out: Output<'_>,
    spool: Spool,
) -> Result<std::fs::File, SpoolError> {
    let Output { columns, compared } = out;
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, pg)| Field::new(name, arrow_type(*pg), true))
            .collect::<Vec<_>>(),
    ));
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(PARQUET_BATCH_ROWS)
        .build_decoder()
        .map_err(anyhow::Error::from)?;
    let full = Arc::clone(&spool.full);
    let mut writer = parquet::arrow::ArrowWriter::try_new(spool, schema, None)
        .map_err(|e| spool_error(&full, e))?;
    let mut tx = tenant::begin_as(pool, &relation.schema, limits.statement_timeout).await?;
    let mut rows = sql.build().fetch(&mut *tx);
    // The rows of the batch being built: a value Parquet cannot hold is a 400, and these lines
    // say which one it was.
    let mut lines: Vec<String> = Vec::with_capacity(PARQUET_BATCH_ROWS);
    let mut rows_before = 0usize;
    let mut line_bytes = 0usize;
    while let Some(row) = rows.next().await {
        let row = row.map_err(|e| query_error(e, compared))?;
        let line = row.try_get::<String, _>(1)?;
        line_bytes += line.len();
        lines.push(line);
        // Huge rows make a batch early, so a batch never holds much more than this in memory.
        if lines.len() == PARQUET_BATCH_ROWS || line_bytes >= PARQUET_BATCH_BYTES {
            write_batch(
                &mut decoder,
                &mut writer,
                &full,
                &lines,
                rows_before,
                columns,
            )?;
            rows_before += lines.len();
            lines.clear();
            line_bytes = 0;
        }
    }
    drop(rows);
    tx.commit().await?;
    write_batch(
        &mut decoder,
        &mut writer,
        &full,
        &lines,
        rows_before,
        columns,
    )?;
    let spool = writer.into_inner().map_err(|e| spool_error(&full, e))?;
    Ok(spool.file)
}
