//! Parquet to PostgreSQL, streaming: the arrow reader walks the file in record batches, each
//! column is converted to the Arrow type its table column is encoded from (with the first value
//! that does not fit reported by column and row), and pgpq encodes the batch into PostgreSQL's
//! binary COPY format. Runs on a blocking thread; memory is bounded by one batch.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BinaryBuilder, RecordBatch, StringArray, StringBuilder};
use arrow::compute::{CastOptions, can_cast_types, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::{Bytes, BytesMut};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::LogicalType;
use pgpq::ArrowToPostgresBinaryEncoder;
use pgpq::encoders::{EncoderBuilder, StringEncoderBuilder};
use pgpq::pg_schema::PostgresType;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::types::{PgType, is_nested};

/// Rows per record batch: large enough to amortise per-batch costs, small enough to keep memory
/// flat.
const BATCH_ROWS: usize = 8192;

/// Why an upload was refused; every variant is a client error.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The file is not readable Parquet.
    #[error("the file is not valid Parquet: {0}")]
    InvalidParquet(String),
    /// The declared columns and the file's columns disagree.
    #[error("{0}")]
    ColumnMismatch(String),
    /// A column type cannot be stored.
    #[error("{0}")]
    UnsupportedType(String),
    /// A column name PostgreSQL reserves.
    #[error("{0}")]
    InvalidColumnName(String),
    /// The body is not JSON at all.
    #[error("the body is not valid JSON at line {line} column {column}: {reason}")]
    InvalidJson {
        /// 1-based line of the syntax error.
        line: usize,
        /// 1-based column of the syntax error.
        column: usize,
        /// What the parser expected.
        reason: String,
    },
    /// A row of a JSON body is malformed.
    #[error("row {row}: {reason}")]
    InvalidRow {
        /// 1-based row number.
        row: usize,
        /// What is wrong.
        reason: String,
    },
    /// A value does not fit its column.
    #[error("column {column:?}, row {row}: {reason}")]
    InvalidValue {
        /// The column.
        column: String,
        /// 1-based row number in the file.
        row: usize,
        /// What is wrong.
        reason: String,
    },
}

/// A column as the user declares it in `columns`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredColumn {
    /// Name in the file and in the table (case kept).
    pub column_name: String,
    /// A PostgreSQL type name.
    pub column_type: String,
}

/// One table column and where its values come from.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    /// Column name (as in the file).
    pub name: String,
    /// Index of the column among the file's top-level columns.
    pub file_index: usize,
    /// The file's Arrow type.
    pub source: DataType,
    /// The table column's type.
    pub pg: PgType,
}

/// What the file holds and how it becomes a table.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The table's columns in table order.
    pub columns: Vec<ColumnPlan>,
    /// Rows the footer claims.
    pub rows: i64,
}

fn guarded<T>(what: &str, work: impl FnOnce() -> Result<T, IngestError>) -> Result<T, IngestError> {
    // A hostile file must not take the server down: a panic in a reader becomes a 400.
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| {
        Err(IngestError::InvalidParquet(format!(
            "the reader failed while {what}"
        )))
    })
}

fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, IngestError> {
    let file = File::open(path)
        .map_err(|e| IngestError::InvalidParquet(format!("cannot open the upload: {e}")))?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| {
        let text = e.to_string();
        if text.contains("encrypt") {
            IngestError::UnsupportedType(
                "encrypted Parquet files are not supported; upload a decrypted copy".to_owned(),
            )
        } else {
            IngestError::InvalidParquet(text)
        }
    })
}

/// Reads the footer and decides the table's columns: the declared ones (which must be exactly
/// the file's columns, in any order, with castable types) or types inferred from the file.
pub fn plan(path: &Path, declared: Option<&[DeclaredColumn]>) -> Result<Plan, IngestError> {
    guarded("reading the footer", || {
        let builder = open(path)?;
        let schema = builder.schema().clone();
        let rows = builder.metadata().file_metadata().num_rows();
        let uuid_columns: HashSet<String> = builder
            .parquet_schema()
            .root_schema()
            .get_fields()
            .iter()
            .filter(|f| {
                f.is_primitive()
                    && matches!(
                        f.get_basic_info().logical_type_ref(),
                        Some(LogicalType::Uuid)
                    )
            })
            .map(|f| f.name().to_owned())
            .collect();
        let mut seen = HashSet::new();
        for field in schema.fields() {
            if !seen.insert(field.name().as_str()) {
                return Err(IngestError::ColumnMismatch(format!(
                    "the file has two columns named {:?}",
                    field.name()
                )));
            }
            if field.name().is_empty() || field.name().len() > 63 || field.name().contains('\0') {
                return Err(IngestError::ColumnMismatch(format!(
                    "column name {:?} must be 1 to 63 bytes without NUL",
                    field.name()
                )));
            }
            check_not_system_column(field.name())?;
        }
        let columns = match declared {
            None => schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let pg = PgType::infer(f.data_type(), uuid_columns.contains(f.name()))
                        .map_err(|why| {
                            IngestError::UnsupportedType(format!("column {:?}: {why}", f.name()))
                        })?;
                    Ok(ColumnPlan {
                        name: f.name().clone(),
                        file_index: i,
                        source: f.data_type().clone(),
                        pg,
                    })
                })
                .collect::<Result<Vec<_>, IngestError>>()?,
            Some(declared) => plan_declared(&schema, declared)?,
        };
        if columns.is_empty() {
            return Err(IngestError::ColumnMismatch(
                "the file has no columns".to_owned(),
            ));
        }
        Ok(Plan { columns, rows })
    })
}

/// Names of PostgreSQL's system columns: a table column cannot take them.
const SYSTEM_COLUMNS: [&str; 6] = ["ctid", "xmin", "xmax", "cmin", "cmax", "tableoid"];

/// Refuses system column names, in any case: quoting would keep `"CTID"` apart from `ctid`,
/// but the same name unquoted in a view's SQL would silently mean the system column.
fn check_not_system_column(name: &str) -> Result<(), IngestError> {
    if SYSTEM_COLUMNS.iter().any(|s| s.eq_ignore_ascii_case(name)) {
        return Err(IngestError::InvalidColumnName(format!(
            "column {name:?} has the name of a PostgreSQL system column ({}); rename it in the file",
            SYSTEM_COLUMNS.join(", ")
        )));
    }
    Ok(())
}

fn plan_declared(
    schema: &Schema,
    declared: &[DeclaredColumn],
) -> Result<Vec<ColumnPlan>, IngestError> {
    let mut names = HashSet::new();
    let mut columns = Vec::with_capacity(declared.len());
    for column in declared {
        if !names.insert(column.column_name.as_str()) {
            return Err(IngestError::ColumnMismatch(format!(
                "column {:?} is declared twice",
                column.column_name
            )));
        }
        let (file_index, field) = schema.fields().find(&column.column_name).ok_or_else(|| {
            IngestError::ColumnMismatch(format!(
                "column {:?} is declared but the file has no such column (it has {})",
                column.column_name,
                schema
                    .fields()
                    .iter()
                    .map(|f| format!("{:?}", f.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let pg = PgType::parse(&column.column_type).map_err(|why| {
            IngestError::ColumnMismatch(format!("column {:?}: {why}", column.column_name))
        })?;
        if let Err(why) = check_castable(field.data_type(), pg) {
            return Err(IngestError::ColumnMismatch(format!(
                "column {:?} holds {} in the file, which cannot become {pg}: {why}",
                column.column_name,
                field.data_type()
            )));
        }
        columns.push(ColumnPlan {
            name: column.column_name.clone(),
            file_index,
            source: field.data_type().clone(),
            pg,
        });
    }
    if let Some(extra) = schema
        .fields()
        .iter()
        .find(|f| !names.contains(f.name().as_str()))
    {
        return Err(IngestError::ColumnMismatch(format!(
            "the file has column {:?}, which is not declared in columns",
            extra.name()
        )));
    }
    Ok(columns)
}

fn value_type(data_type: &DataType) -> &DataType {
    match data_type {
        DataType::Dictionary(_, value) => value_type(value),
        other => other,
    }
}

fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

fn is_binary(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_)
    )
}

fn check_castable(source: &DataType, pg: PgType) -> Result<(), String> {
    let source = value_type(source);
    let ok = match pg {
        PgType::Jsonb => {
            is_nested(source)
                || is_string(source)
                || source.is_numeric()
                || *source == DataType::Boolean
        }
        PgType::Uuid => matches!(source, DataType::FixedSizeBinary(16)) || is_string(source),
        PgType::Bytea => is_binary(source) || is_string(source),
        PgType::Text | PgType::Varchar(_) | PgType::Char(_) => {
            is_nested(source) || can_cast_types(source, &DataType::Utf8)
        }
        // Only the conversions PostgreSQL itself would make (no integer to date, say), then
        // only those Arrow can make.
        other => {
            let family_ok = match other {
                PgType::Int2
                | PgType::Int4
                | PgType::Int8
                | PgType::Float4
                | PgType::Float8
                | PgType::Numeric(_) => source.is_numeric() || is_string(source),
                PgType::Bool => {
                    *source == DataType::Boolean || source.is_integer() || is_string(source)
                }
                PgType::Date | PgType::Timestamp | PgType::Timestamptz => {
                    source.is_temporal()
                        && !matches!(
                            source,
                            DataType::Time32(_)
                                | DataType::Time64(_)
                                | DataType::Duration(_)
                                | DataType::Interval(_)
                        )
                        || is_string(source)
                }
                PgType::Time => {
                    matches!(source, DataType::Time32(_) | DataType::Time64(_)) || is_string(source)
                }
                PgType::Interval => matches!(source, DataType::Duration(_)),
                _ => false,
            };
            family_ok && can_cast_types(source, &other.arrow_target(source))
        }
    };
    if ok {
        Ok(())
    } else {
        Err("no conversion exists".to_owned())
    }
}

/// Streams the file's rows as binary COPY data into `sink`: the header, one chunk per batch,
/// the trailer. Stops at the first error, which is also sent.
pub fn encode_file(path: PathBuf, plan: Plan, sink: mpsc::Sender<Result<Bytes, IngestError>>) {
    let result = guarded("decoding the data", || {
        let projection: Vec<usize> = plan.columns.iter().map(|c| c.file_index).collect();
        let builder = open(&path)?;
        let mask =
            parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), projection.clone());
        let reader = builder
            .with_batch_size(BATCH_ROWS)
            .with_projection(mask)
            .build()
            .map_err(|e| IngestError::InvalidParquet(e.to_string()))?;
        // The projection keeps file order; find each table column in the projected batch.
        let mut sorted = projection.clone();
        sorted.sort_unstable();
        let positions: Vec<usize> = projection
            .iter()
            .map(|i| sorted.binary_search(i).unwrap_or_default())
            .collect();
        let batches = reader.map(|b| b.map_err(|e| IngestError::InvalidParquet(e.to_string())));
        encode_batches(batches, &plan, &positions, &sink)
    });
    if let Err(e) = result {
        let _ = sink.blocking_send(Err(e));
    }
}

/// Converts and encodes batches (whose columns sit at `positions` for the plan's columns) into
/// binary COPY chunks sent to `sink`: header, one chunk per batch, trailer.
pub fn encode_batches(
    batches: impl Iterator<Item = Result<RecordBatch, IngestError>>,
    plan: &Plan,
    positions: &[usize],
    sink: &mpsc::Sender<Result<Bytes, IngestError>>,
) -> Result<(), IngestError> {
    let mut encoder: Option<ArrowToPostgresBinaryEncoder> = None;
    let mut row_offset = 0usize;
    for batch in batches {
        let batch = batch?;
        let converted = convert_batch(&batch, plan, positions, row_offset)?;
        row_offset += batch.num_rows();
        let mut buf = BytesMut::new();
        let encoder = match &mut encoder {
            Some(encoder) => encoder,
            None => {
                let mut fresh = new_encoder(&converted.schema(), plan)?;
                fresh
                    .write_header(&mut buf)
                    .map_err(|e| IngestError::UnsupportedType(format!("{e:?}")))?;
                encoder.insert(fresh)
            }
        };
        encoder
            .write_batch(&converted, &mut buf)
            .map_err(|e| IngestError::UnsupportedType(format!("encoding failed: {e:?}")))?;
        if sink.blocking_send(Ok(buf.freeze())).is_err() {
            return Ok(()); // the receiver gave up; it reports its own error
        }
    }
    let mut buf = BytesMut::new();
    let mut encoder = match encoder {
        Some(encoder) => encoder,
        None => {
            // No rows at all: a header for the right columns, then the trailer.
            let schema = Schema::new(
                plan.columns
                    .iter()
                    .map(|c| Field::new(&c.name, c.pg.arrow_target(value_type(&c.source)), true))
                    .collect::<Vec<_>>(),
            );
            let mut fresh = new_encoder(&schema, plan)?;
            fresh
                .write_header(&mut buf)
                .map_err(|e| IngestError::UnsupportedType(format!("{e:?}")))?;
            fresh
        }
    };
    encoder
        .write_footer(&mut buf)
        .map_err(|e| IngestError::UnsupportedType(format!("{e:?}")))?;
    let _ = sink.blocking_send(Ok(buf.freeze()));
    Ok(())
}

fn new_encoder(schema: &Schema, plan: &Plan) -> Result<ArrowToPostgresBinaryEncoder, IngestError> {
    let unsupported = |e: pgpq::error::ErrorKind| IngestError::UnsupportedType(format!("{e:?}"));
    let mut encoders: HashMap<String, EncoderBuilder> = pgpq::build_encoders(schema.fields())
        .map_err(unsupported)?
        .into_iter()
        .collect();
    for (field, column) in schema.fields().iter().zip(&plan.columns) {
        if column.pg == PgType::Jsonb {
            let builder = StringEncoderBuilder::new_with_output(field.clone(), PostgresType::Jsonb)
                .map_err(unsupported)?;
            encoders.insert(field.name().clone(), EncoderBuilder::String(builder));
        }
    }
    ArrowToPostgresBinaryEncoder::try_new_with_encoders(schema, &encoders).map_err(unsupported)
}

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
    }
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
        return Err(invalid(
            column,
            row_offset,
            i,
            format!("the value does not fit {}", column.pg),
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
                        return Err(invalid(
                            column,
                            row_offset,
                            i,
                            "the value is not valid JSON",
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
                            return Err(invalid(
                                column,
                                row_offset,
                                i,
                                format!("{text:?} is not a UUID"),
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
                return Err(invalid(
                    column,
                    row_offset,
                    i,
                    format!("the value is longer than {limit} characters"),
                ));
            }
            Ok(Arc::new(texts))
        }
        PgType::Text | PgType::Varchar(None) => Ok(Arc::new(strings(array, column, row_offset)?)),
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
            return Err(invalid(
                column,
                row_offset,
                i,
                format!(
                    "{} is not an integer; a {} column takes whole numbers only",
                    texts.value(i),
                    column.pg
                ),
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
