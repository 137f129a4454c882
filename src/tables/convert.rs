//! Stage 3 of an upload: Arrow columns to the Arrow types their PostgreSQL columns are encoded from, with
//! the first value that does not fit reported by column and row. Nested values become JSON text.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BinaryBuilder, RecordBatch, StringArray, StringBuilder};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema};

use super::plan::{ColumnPlan, IngestError, Plan};
use super::types::{PgType, is_nested, is_string, value_type};

/// The batches with each of the plan's columns (at `positions` in a batch) converted, in the
/// plan's order. Rows are counted across batches, so an error names the row in the whole upload.
pub(super) fn converted<'a>(
    batches: impl Iterator<Item = Result<RecordBatch, IngestError>> + 'a,
    plan: &'a Plan,
    positions: &'a [usize],
) -> impl Iterator<Item = Result<RecordBatch, IngestError>> + 'a {
    let mut row_offset = 0usize;
    batches.map(move |batch| {
        let batch = batch?;
        let converted = convert_batch(&batch, plan, positions, row_offset)?;
        row_offset += batch.num_rows();
        Ok(converted)
    })
}

/// One batch converted; `row_offset` is the number of rows before it in the upload.
fn convert_batch(
    batch: &RecordBatch,
    plan: &Plan,
    positions: &[usize],
    row_offset: usize,
) -> Result<RecordBatch, IngestError> {
    let mut fields = Vec::with_capacity(plan.columns.len());
    let mut arrays = Vec::with_capacity(plan.columns.len());
    for (column, position) in plan.columns.iter().zip(positions) {
        let array = batch.column(*position);
        let converted = convert_column(array, column, row_offset)?;
        fields.push(Field::new(
            &column.name,
            converted.data_type().clone(),
            true,
        ));
        arrays.push(converted);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| IngestError::UnsupportedType(format!("building a batch: {e}")))
}

fn invalid(
    column: &ColumnPlan,
    row_offset: usize,
    index: usize,
    reason: impl Into<String>,
) -> IngestError {
    IngestError::InvalidValue {
        column: column.name.clone(),
        row: row_offset + index + 1,
        reason: reason.into(),
        value: None,
        expected_type: column.pg.to_string(),
    }
}

/// `error` with the offending value (as text) attached for the problem's `value` member.
fn with_value(mut error: IngestError, shown: impl Into<String>) -> IngestError {
    if let IngestError::InvalidValue { value, .. } = &mut error {
        *value = Some(shown.into());
    }
    error
}

fn cast_to(
    array: &ArrayRef,
    target: &DataType,
    column: &ColumnPlan,
    row_offset: usize,
) -> Result<ArrayRef, IngestError> {
    if array.data_type() == target {
        return Ok(array.clone());
    }
    let options = CastOptions {
        safe: true,
        ..CastOptions::default()
    };
    let cast = cast_with_options(array, target, &options).map_err(|e| {
        invalid(
            column,
            row_offset,
            0,
            format!("cannot convert to {}: {e}", column.pg),
        )
    })?;
    // A safe cast turns values that do not fit into nulls: find the first such row.
    if cast.null_count() != array.null_count()
        && let Some(i) = (0..array.len()).find(|&i| array.is_valid(i) && cast.is_null(i))
    {
        let shown = arrow::util::display::array_value_to_string(array, i).unwrap_or_default();
        return Err(with_value(
            invalid(
                column,
                row_offset,
                i,
                format!("the value {shown:?} does not fit {}", column.pg),
            ),
            shown,
        ));
    }
    Ok(cast)
}

fn strings(
    array: &ArrayRef,
    column: &ColumnPlan,
    row_offset: usize,
) -> Result<StringArray, IngestError> {
    let cast = if is_nested(value_type(array.data_type())) {
        json_texts(array, column, row_offset)?
    } else {
        cast_to(array, &DataType::Utf8, column, row_offset)?
    };
    cast.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| invalid(column, row_offset, 0, "cannot convert to text"))
}

fn convert_column(
    array: &ArrayRef,
    column: &ColumnPlan,
    row_offset: usize,
) -> Result<ArrayRef, IngestError> {
    let source = value_type(array.data_type()).clone();
    match column.pg {
        PgType::Jsonb => {
            if is_nested(&source) {
                return json_texts(array, column, row_offset);
            }
            let texts = strings(array, column, row_offset)?;
            if is_string(&source) {
                for (i, text) in texts.iter().enumerate() {
                    if let Some(text) = text
                        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_err()
                    {
                        return Err(with_value(
                            invalid(column, row_offset, i, "the value is not valid JSON"),
                            text,
                        ));
                    }
                }
            }
            Ok(Arc::new(texts))
        }
        PgType::Uuid if is_string(&source) => {
            let texts = strings(array, column, row_offset)?;
            let mut out = BinaryBuilder::with_capacity(texts.len(), texts.len() * 16);
            for (i, text) in texts.iter().enumerate() {
                match text {
                    None => out.append_null(),
                    Some(text) => match uuid::Uuid::parse_str(text) {
                        Ok(uuid) => out.append_value(uuid.as_bytes()),
                        Err(_) => {
                            return Err(with_value(
                                invalid(column, row_offset, i, format!("{text:?} is not a UUID")),
                                text,
                            ));
                        }
                    },
                }
            }
            Ok(Arc::new(out.finish()))
        }
        PgType::Varchar(Some(limit)) | PgType::Char(limit) => {
            let texts = strings(array, column, row_offset)?;
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            if let Some(i) = texts
                .iter()
                .position(|t| t.is_some_and(|t| t.chars().count() > limit))
            {
                return Err(with_value(
                    invalid(
                        column,
                        row_offset,
                        i,
                        format!("the value is longer than {limit} characters"),
                    ),
                    texts.value(i),
                ));
            }
            Ok(Arc::new(texts))
        }
        PgType::Text | PgType::Varchar(None) => Ok(Arc::new(strings(array, column, row_offset)?)),
        PgType::Numeric(_) if is_string(&source) => {
            let texts = strings(array, column, row_offset)?;
            check_numeric_texts(texts.iter(), column, row_offset)?;
            cast_to(array, &column.pg.arrow_target(&source), column, row_offset)
        }
        PgType::Int2 | PgType::Int4 | PgType::Int8 => {
            check_integral(array, column, row_offset)?;
            cast_to(array, &column.pg.arrow_target(&source), column, row_offset)
        }
        other => {
            let target = other.arrow_target(&source);
            cast_to(array, &target, column, row_offset)
        }
    }
}

/// The longest text taken as a `numeric` value. Arrow's decimal parsers recurse once per 38
/// digits (a long enough string overflows the stack, which aborts the whole process, not just
/// the request) and count digits in a `u8` (which overflows past 255); no value that fits a
/// Decimal128's 38 digits needs more than this.
const MAX_NUMERIC_TEXT: usize = 200;

/// The most digits taken in the exponent of a `numeric` value written in e-notation: Arrow
/// reads the exponent into an `i16`, so `1e99999` would overflow (a panic in a debug build, a
/// silently wrong value in a release build); any exponent a Decimal128 can use has fewer.
const MAX_NUMERIC_EXPONENT_DIGITS: usize = 4;

/// Why the text of a `numeric` value is refused before any Arrow parser sees it, if it is.
pub(super) fn numeric_text_problem(text: &str) -> Option<String> {
    if text.len() > MAX_NUMERIC_TEXT {
        return Some(format!(
            "the value is written with more than {MAX_NUMERIC_TEXT} characters"
        ));
    }
    let exponent = text
        .split_once(['e', 'E'])
        .map(|(_, e)| e.trim_start_matches(['+', '-']));
    if exponent.is_some_and(|e| e.len() > MAX_NUMERIC_EXPONENT_DIGITS) {
        return Some(format!(
            "the value's exponent has more than {MAX_NUMERIC_EXPONENT_DIGITS} digits"
        ));
    }
    None
}

/// Whether a number written as text has a non-zero fraction (`1.5`, not `2.0` or `7`).
fn has_fraction(text: &str) -> bool {
    text.trim()
        .split_once('.')
        .is_some_and(|(_, fraction)| fraction.chars().any(|c| c.is_ascii_digit() && c != '0'))
}

/// Refuses `numeric` values [`numeric_text_problem`] refuses, and fractions a `numeric` column
/// without a scale would lose (its Arrow type has scale 0), naming the first such row.
fn check_numeric_texts<'t>(
    texts: impl Iterator<Item = Option<&'t str>>,
    column: &ColumnPlan,
    row_offset: usize,
) -> Result<(), IngestError> {
    for (i, text) in texts.enumerate() {
        let Some(text) = text else { continue };
        let problem = if let Some(problem) = numeric_text_problem(text) {
            Some(format!("{problem}, too much for {}", column.pg))
        } else if column.pg == PgType::Numeric(None) && has_fraction(text) {
            Some(format!(
                "{text:?} has a fraction, which a numeric column without a scale would lose \
                 (it takes whole numbers from text and JSON); declare the column with a scale, \
                 for example numeric(12,4)"
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(invalid(column, row_offset, i, problem));
        }
    }
    Ok(())
}

/// Arrow casts floats and decimals to integers by truncating (1.9 becomes 1): refuse any value
/// with a fraction instead, naming it.
fn check_integral(
    array: &ArrayRef,
    column: &ColumnPlan,
    row_offset: usize,
) -> Result<(), IngestError> {
    let source = value_type(array.data_type());
    let is_float = matches!(
        source,
        DataType::Float16 | DataType::Float32 | DataType::Float64
    );
    let is_fractional_decimal = matches!(
        source,
        DataType::Decimal32(_, s)
        | DataType::Decimal64(_, s)
        | DataType::Decimal128(_, s)
        | DataType::Decimal256(_, s)
            if *s > 0
    );
    if !is_float && !is_fractional_decimal {
        return Ok(());
    }
    let cast = |target: &DataType| {
        cast_with_options(array, target, &CastOptions::default()).map_err(|e| {
            invalid(
                column,
                row_offset,
                0,
                format!("cannot convert to {}: {e}", column.pg),
            )
        })
    };
    // The text says what the file holds (1.9 for a float32, not 1.899999976158142).
    let texts = cast(&DataType::Utf8)?;
    let texts = texts
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| invalid(column, row_offset, 0, "cannot convert to text"))?;
    let floats = if is_float {
        Some(cast(&DataType::Float64)?)
    } else {
        None
    };
    let floats = floats
        .as_ref()
        .and_then(|f| f.as_any().downcast_ref::<arrow::array::Float64Array>());
    for i in 0..texts.len() {
        if texts.is_null(i) {
            continue;
        }
        let fractional = match floats {
            Some(floats) => floats.value(i).fract() != 0.0,
            None => texts
                .value(i)
                .split_once('.')
                .is_some_and(|(_, decimals)| decimals.bytes().any(|b| b != b'0')),
        };
        if fractional {
            return Err(with_value(
                invalid(
                    column,
                    row_offset,
                    i,
                    format!(
                        "{} is not an integer; a {} column takes whole numbers only",
                        texts.value(i),
                        column.pg
                    ),
                ),
                texts.value(i),
            ));
        }
    }
    Ok(())
}

/// Nested values (lists, structs, maps) as JSON text, one per row.
fn json_texts(
    array: &ArrayRef,
    column: &ColumnPlan,
    row_offset: usize,
) -> Result<ArrayRef, IngestError> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "v",
        array.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema, vec![array.clone()]).map_err(|e| {
        invalid(
            column,
            row_offset,
            0,
            format!("cannot convert to JSON: {e}"),
        )
    })?;
    let mut lines = Vec::new();
    {
        let mut writer = arrow::json::LineDelimitedWriter::new(&mut lines);
        writer.write(&batch).map_err(|e| {
            invalid(
                column,
                row_offset,
                0,
                format!("cannot convert to JSON: {e}"),
            )
        })?;
        writer.finish().map_err(|e| {
            invalid(
                column,
                row_offset,
                0,
                format!("cannot convert to JSON: {e}"),
            )
        })?;
    }
    let text = String::from_utf8_lossy(&lines);
    let mut out = StringBuilder::with_capacity(array.len(), lines.len());
    for (i, line) in text.lines().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            invalid(
                column,
                row_offset,
                i,
                format!("cannot convert to JSON: {e}"),
            )
        })?;
        match value.get("v") {
            None | Some(serde_json::Value::Null) => out.append_null(),
            Some(v) => out.append_value(v.to_string()),
        }
    }
    Ok(Arc::new(out.finish()))
}
