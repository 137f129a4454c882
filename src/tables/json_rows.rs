//! Stage 2 of a JSON upload (the sibling of [`parquet`](super::parquet)): rows sent as JSON or
//! NDJSON instead of Parquet, checked against the table's columns and decoded into record
//! batches that then take the same path as a file's, through [`convert`](super::convert) into
//! [`copy`](super::copy).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::convert;
use super::copy;
use super::plan::{BATCH_ROWS, ColumnPlan, IngestError, Plan};
use super::types::{PgType, check_castable};
use crate::db::ident::Ident;
use crate::db::tenant::TenantTx;
use crate::error::ApiError;

/// The Arrow type a JSON value of a `pg` column is decoded into before conversion.
fn json_decode_type(pg: PgType) -> DataType {
    match pg {
        PgType::Int2 => DataType::Int16,
        PgType::Int4 => DataType::Int32,
        PgType::Int8 => DataType::Int64,
        PgType::Float4 => DataType::Float32,
        PgType::Float8 => DataType::Float64,
        PgType::Numeric(Some((p, s))) => DataType::Decimal128(p, s),
        PgType::Bool => DataType::Boolean,
        PgType::Date => DataType::Date32,
        PgType::Timestamp => DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
        PgType::Timestamptz => DataType::Timestamp(
            arrow::datatypes::TimeUnit::Microsecond,
            Some("+00:00".into()),
        ),
        _ => DataType::Utf8,
    }
}

/// A JSON syntax error at its place in the body; `line` overrides the parser's line for NDJSON,
/// which is parsed one line at a time.
fn invalid_json(e: &serde_json::Error, line: Option<usize>) -> IngestError {
    // serde_json's message ends with its own "at line L column C"; keep only the reason.
    let text = e.to_string();
    let reason = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(reason, _)| reason)
        .to_owned();
    IngestError::InvalidJson {
        line: line.unwrap_or_else(|| e.line()),
        column: e.column(),
        reason,
    }
}

/// An integer column's JSON value as a JSON integer. The Arrow decoder would truncate `1.9` to
/// 1, so fractions are refused here; a number that is integral (`2.0`, `1e3`) or a string
/// holding one is that integer. Range is checked by the decoder.
fn json_integer(value: &serde_json::Value) -> Result<serde_json::Value, String> {
    let number = match value {
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => return Ok(value.clone()),
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(text) => {
            let text = text.trim();
            if let Ok(n) = text.parse::<i64>() {
                return Ok(serde_json::Value::from(n));
            }
            text.parse::<f64>().ok()
        }
        other => return Ok(other.clone()),
    };
    match number {
        // Integral and well inside the i64 range, so the conversion is exact.
        #[expect(clippy::cast_possible_truncation, reason = "integral, range checked")]
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(serde_json::Value::from(f as i64)),
        Some(f) if f.fract() == 0.0 => Err(format!(
            "{value} is written as a floating-point number too large to be exact; write it as an integer"
        )),
        _ => Err(format!("{value} is not an integer")),
    }
}

/// Rows sent as JSON (an array of objects, or NDJSON): checked against the table's columns
/// (unknown keys refused, missing keys null) and decoded into record batches for the same
/// conversion and COPY path as Parquet.
pub fn json_rows(
    body: &[u8],
    ndjson: bool,
    table: &[(String, PgType)],
) -> Result<(Plan, Vec<RecordBatch>), IngestError> {
    // JSON is UTF-8: say where it is not, for both shapes, before any parser reports it as a
    // syntax error.
    let text = std::str::from_utf8(body).map_err(|e| {
        let valid = &body[..e.valid_up_to()];
        let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        IngestError::InvalidJson {
            line: valid.iter().filter(|b| **b == b'\n').count() + 1,
            column: valid.len() - line_start + 1,
            reason: format!(
                "byte {} (counting from 0) is not UTF-8; send the body as UTF-8",
                e.valid_up_to()
            ),
        }
    })?;
    let rows: Vec<serde_json::Value> = if ndjson {
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| serde_json::from_str(line).map_err(|e| invalid_json(&e, Some(i + 1))))
            .collect::<Result<_, _>>()?
    } else {
        match serde_json::from_str(text) {
            Ok(serde_json::Value::Array(rows)) => rows,
            Ok(object @ serde_json::Value::Object(_)) => vec![object],
            Ok(_) => {
                return Err(IngestError::ColumnMismatch(
                    "the body must be a JSON array of row objects".to_owned(),
                ));
            }
            Err(e) if e.is_syntax() || e.is_eof() => return Err(invalid_json(&e, None)),
            Err(e) => {
                return Err(IngestError::ColumnMismatch(format!(
                    "the body is not a JSON array of row objects: {e}"
                )));
            }
        }
    };
    let schema = Arc::new(Schema::new(
        table
            .iter()
            .map(|(name, pg)| Field::new(name, json_decode_type(*pg), true))
            .collect::<Vec<_>>(),
    ));
    let plan = Plan {
        columns: table
            .iter()
            .enumerate()
            .map(|(i, (name, pg))| {
                let source = json_decode_type(*pg);
                check_castable(&source, *pg).map_err(|why| {
                    IngestError::ColumnMismatch(format!(
                        "column {name:?} of type {pg} cannot be sent as JSON: {why}"
                    ))
                })?;
                Ok(ColumnPlan {
                    name: name.clone(),
                    file_index: i,
                    source,
                    pg: *pg,
                })
            })
            .collect::<Result<Vec<_>, IngestError>>()?,
        rows: i64::try_from(rows.len()).unwrap_or(i64::MAX),
    };
    let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(&schema))
        .with_batch_size(BATCH_ROWS)
        .build_decoder()
        .map_err(|e| IngestError::UnsupportedType(e.to_string()))?;
    let mut batches = Vec::new();
    // The rows since the last flush (1-based number of the first): a value the decoder refuses
    // only when flushing is traced back to its row through them.
    let mut pending: Vec<String> = Vec::new();
    let mut first_pending = 1;
    for (i, row) in rows.into_iter().enumerate() {
        let serde_json::Value::Object(mut object) = row else {
            return Err(IngestError::InvalidRow {
                row: i + 1,
                reason: "the row is not a JSON object".to_owned(),
            });
        };
        if let Some(unknown) = object
            .keys()
            .find(|k| !table.iter().any(|(name, _)| name == *k))
        {
            return Err(IngestError::ColumnMismatch(format!(
                "row {}: the table has no column {unknown:?}",
                i + 1
            )));
        }
        for (name, pg) in table {
            let Some(value) = object.get_mut(name) else {
                continue;
            };
            if let (PgType::Numeric(_), serde_json::Value::String(text)) = (pg, &*value)
                && let Some(problem) = convert::numeric_text_problem(text)
            {
                // Arrow's decimal parsers overflow on such text (see `numeric_text_problem`).
                return Err(IngestError::InvalidValue {
                    column: name.clone(),
                    row: i + 1,
                    reason: format!("{problem}, too much for {pg}"),
                });
            }
            if matches!(pg, PgType::Int2 | PgType::Int4 | PgType::Int8) {
                *value = json_integer(value).map_err(|reason| IngestError::InvalidValue {
                    column: name.clone(),
                    row: i + 1,
                    reason: format!("{reason} for a {pg} column"),
                })?;
            }
            // Text-like columns take any JSON value as its text; jsonb keeps its structure.
            let textual = json_decode_type(*pg) == DataType::Utf8;
            let needs_text = !value.is_null() && (!value.is_string() || *pg == PgType::Jsonb);
            if textual && needs_text {
                *value = serde_json::Value::String(value.to_string());
            }
        }
        let line = serde_json::Value::Object(object).to_string();
        decoder
            .decode(line.as_bytes())
            .map_err(|e| IngestError::InvalidRow {
                row: i + 1,
                reason: e.to_string(),
            })?;
        pending.push(line);
        if decoder.len() >= BATCH_ROWS {
            let flushed = decoder
                .flush()
                .map_err(|e| flush_error(&schema, &pending, first_pending, &e))?;
            batches.extend(flushed);
            pending.clear();
            first_pending = i + 2;
        }
    }
    let flushed = decoder
        .flush()
        .map_err(|e| flush_error(&schema, &pending, first_pending, &e))?;
    batches.extend(flushed);
    Ok((plan, batches))
}

/// The decoder refuses some values (a date that is no date) only when it flushes a batch,
/// without saying which row: decode the batch's rows one by one to name the first bad one.
fn flush_error(
    schema: &SchemaRef,
    rows: &[String],
    first_row: usize,
    error: &arrow::error::ArrowError,
) -> IngestError {
    let alone = |line: &String| {
        let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(schema)).build_decoder()?;
        decoder.decode(line.as_bytes())?;
        decoder.flush()
    };
    match rows
        .iter()
        .enumerate()
        .find_map(|(i, line)| alone(line).err().map(|e| (i, e)))
    {
        Some((i, e)) => IngestError::InvalidRow {
            row: first_row + i,
            reason: e.to_string(),
        },
        None => IngestError::InvalidRow {
            row: first_row,
            reason: format!("in the batch of rows from here: {error}"),
        },
    }
}

/// Copies rows decoded by [`json_rows`] into the tenant's table `schema.name`, within the
/// tenant's storage quota; returns the rows written.
pub(super) async fn copy_rows(
    conn: &mut TenantTx,
    schema: &Ident,
    name: &Ident,
    plan: Plan,
    batches: Vec<RecordBatch>,
    storage_quota: u64,
) -> Result<u64, ApiError> {
    copy::copy_into(
        conn,
        schema,
        name,
        plan,
        storage_quota,
        move |plan, sink| {
            // The decoded batches hold the table's columns in order.
            let positions: Vec<usize> = (0..plan.columns.len()).collect();
            let converted = convert::converted(batches.into_iter().map(Ok), &plan, &positions);
            if let Err(e) = copy::encode_batches(converted, &plan, &sink) {
                let _ = sink.blocking_send(Err(e));
            }
        },
    )
    .await
}
