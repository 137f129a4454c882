//! Stage 2 of a JSON upload (the sibling of [`parquet`](super::parquet)): rows sent as JSON or
//! NDJSON instead of Parquet, checked against the table's columns and decoded into record
//! batches that then take the same path as a file's, through [`convert`](super::convert) into
//! [`copy`](super::copy).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::convert;
use super::copy;
use super::plan::{BATCH_ROWS, ColumnPlan, IngestError, Plan, RangeTracker};
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

/// The most characters of a refused value an error quotes (in `detail` and in `value`): a
/// value of megabytes is cut there and ends in `...`, so the refusal stays small.
pub const MAX_SHOWN_VALUE_CHARS: usize = 64;

/// A refused value as its error quotes it: its JSON text, cut after [`MAX_SHOWN_VALUE_CHARS`]
/// characters.
fn shown_value(value: &serde_json::Value) -> String {
    shown_text(&value.to_string())
}

fn shown_text(text: &str) -> String {
    match text.char_indices().nth(MAX_SHOWN_VALUE_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
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
            "{} is written as a floating-point number too large to be exact; write it as an integer",
            shown_value(value)
        )),
        _ => Err(format!("{} is not an integer", shown_value(value))),
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
                    // The start is enough to find it; the whole may be megabytes.
                    value: Some(shown_text(text)),
                    expected_type: pg.to_string(),
                });
            }
            if matches!(pg, PgType::Int2 | PgType::Int4 | PgType::Int8) {
                *value = json_integer(value).map_err(|reason| IngestError::InvalidValue {
                    column: name.clone(),
                    row: i + 1,
                    reason: format!("{reason} for a {pg} column"),
                    value: Some(shown_value(value)),
                    expected_type: pg.to_string(),
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
            .map_err(|e| refused_row(table, &line, i + 1, &e))?;
        pending.push(line);
        if decoder.len() >= BATCH_ROWS {
            let flushed = decoder
                .flush()
                .map_err(|e| flush_error(&schema, table, &pending, first_pending, &e))?;
            batches.extend(flushed);
            pending.clear();
            first_pending = i + 2;
        }
    }
    let flushed = decoder
        .flush()
        .map_err(|e| flush_error(&schema, table, &pending, first_pending, &e))?;
    batches.extend(flushed);
    Ok((plan, batches))
}

/// Decodes one JSON object alone with `schema`, to find which row or value is refused.
fn decode_alone(schema: &SchemaRef, line: &str) -> Result<(), arrow::error::ArrowError> {
    let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(schema)).build_decoder()?;
    decoder.decode(line.as_bytes())?;
    decoder.flush().map(|_| ())
}

/// The decoder refuses some values (a date that is no date) only when it flushes a batch,
/// without saying which row: decode the batch's rows one by one to name the first bad one.
fn flush_error(
    schema: &SchemaRef,
    table: &[(String, PgType)],
    rows: &[String],
    first_row: usize,
    error: &arrow::error::ArrowError,
) -> IngestError {
    match rows
        .iter()
        .enumerate()
        .find_map(|(i, line)| decode_alone(schema, line).err().map(|e| (i, line, e)))
    {
        Some((i, line, e)) => refused_row(table, line, first_row + i, &e),
        None => {
            // Debug-formatted: a value in the decoder's text cannot start a log line of its own.
            tracing::debug!(error = ?error.to_string(), first_row, "the JSON decoder refused a batch no row explains");
            IngestError::InvalidRow {
                row: first_row,
                reason: "a row from here on could not be read with the table's column types"
                    .to_owned(),
            }
        }
    }
}

/// Why the decoder refused row `row` (`line`, the row as given to the decoder), in the user's
/// terms: the first column whose value does not decode alone, with the value and its type.
/// The decoder's own text ("whilst decoding field ...") is logged, not sent.
fn refused_row(
    table: &[(String, PgType)],
    line: &str,
    row: usize,
    error: &arrow::error::ArrowError,
) -> IngestError {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(line).unwrap_or_default();
    for (name, pg) in table {
        let Some(value) = object.get(name).filter(|v| !v.is_null()) else {
            continue;
        };
        let schema = Arc::new(Schema::new(vec![Field::new(
            name,
            json_decode_type(*pg),
            true,
        )]));
        let mut alone = serde_json::Map::new();
        alone.insert(name.clone(), value.clone());
        if decode_alone(&schema, &serde_json::Value::Object(alone).to_string()).is_err() {
            return IngestError::InvalidValue {
                column: name.clone(),
                row,
                reason: value_reason(*pg, value),
                value: Some(shown_value(value)),
                expected_type: pg.to_string(),
            };
        }
    }
    tracing::debug!(error = ?error.to_string(), row, "the JSON decoder refused a row no single value explains");
    IngestError::InvalidRow {
        row,
        reason: "the row could not be read with the table's column types".to_owned(),
    }
}

/// Why `value` (JSON) is not a `pg`, and what the column takes.
fn value_reason(pg: PgType, value: &serde_json::Value) -> String {
    let shown = shown_value(value);
    if let serde_json::Value::Array(_) | serde_json::Value::Object(_) = value {
        let kind = if value.is_array() {
            "an array"
        } else {
            "an object"
        };
        return format!("{shown} is {kind}; a {pg} column takes a single value");
    }
    let number_like = value.is_number()
        || value
            .as_str()
            .is_some_and(|t| t.trim().parse::<f64>().is_ok_and(f64::is_finite));
    let expected = match pg {
        PgType::Int2 | PgType::Int4 | PgType::Int8 if value.is_i64() || value.is_u64() => {
            let range = match pg {
                PgType::Int2 => "-32768 to 32767",
                PgType::Int4 => "-2147483648 to 2147483647",
                _ => "-9223372036854775808 to 9223372036854775807",
            };
            return format!("{shown} is out of range for {pg} ({range})");
        }
        PgType::Int2 | PgType::Int4 | PgType::Int8 => "a whole number",
        PgType::Numeric(Some((precision, scale))) if number_like => {
            let before = i16::from(precision) - i16::from(scale);
            return format!(
                "{shown} does not fit {pg}: at most {before} digits before the decimal point"
            );
        }
        PgType::Float4 | PgType::Float8 | PgType::Numeric(_) => "a number",
        PgType::Bool => "true or false",
        PgType::Date => "a date such as \"2026-01-31\"",
        PgType::Timestamp => "a date and time such as \"2026-01-31T10:00:00\"",
        PgType::Timestamptz => "a date and time such as \"2026-01-31T10:00:00Z\"",
        _ => "a value of that type",
    };
    format!("{shown} is not a valid {pg}; expected {expected}")
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
    tracker: RangeTracker,
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
            if let Err(e) = copy::encode_batches(converted, &plan, &sink, &tracker) {
                let _ = sink.blocking_send(Err(e));
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests;
