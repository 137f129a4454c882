//! Stage 2 of an upload: what a Parquet file (or a table's declared columns) becomes. Reads
//! the file's footer and schema, names each column's PostgreSQL type, and refuses what cannot be
//! stored before a byte is copied. The [`Plan`] and [`IngestError`] are what later stages use.

use std::collections::HashSet;
use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use arrow::compute::can_cast_types;
use arrow::datatypes::{DataType, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::LogicalType;
use serde::Deserialize;

use super::types::{PgType, is_nested};

/// Rows per record batch: large enough to amortise per-batch costs, small enough to keep memory
/// flat.
pub(super) const BATCH_ROWS: usize = 8192;

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

pub(super) fn guarded<T>(
    what: &str,
    work: impl FnOnce() -> Result<T, IngestError>,
) -> Result<T, IngestError> {
    // A hostile file must not take the server down: a panic in a reader becomes a 400.
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| {
        Err(IngestError::InvalidParquet(format!(
            "the reader failed while {what}"
        )))
    })
}

pub(super) fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, IngestError> {
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
pub(super) const SYSTEM_COLUMNS: [&str; 6] = ["ctid", "xmin", "xmax", "cmin", "cmax", "tableoid"];

/// Refuses system column names, in any case: quoting would keep `"CTID"` apart from `ctid`,
/// but the same name unquoted in a view's SQL would silently mean the system column.
pub(super) fn check_not_system_column(name: &str) -> Result<(), IngestError> {
    if SYSTEM_COLUMNS.iter().any(|s| s.eq_ignore_ascii_case(name)) {
        return Err(IngestError::InvalidColumnName(format!(
            "column {name:?} has the name of a PostgreSQL system column ({}); rename it in the file",
            SYSTEM_COLUMNS.join(", ")
        )));
    }
    Ok(())
}

pub(super) fn plan_declared(
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

pub(super) fn value_type(data_type: &DataType) -> &DataType {
    match data_type {
        DataType::Dictionary(_, value) => value_type(value),
        other => other,
    }
}

pub(super) fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

pub(super) fn is_binary(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_)
    )
}

pub(super) fn check_castable(source: &DataType, pg: PgType) -> Result<(), String> {
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
