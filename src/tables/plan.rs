//! What every stage of an upload hands on: the [`Plan`] (the table's columns and where each
//! one's values come from) and [`IngestError`] (why an upload was refused, always a 400). It
//! names no stage, so every stage, and the SQL in `store`, can use it.

use arrow::datatypes::DataType;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::types::PgType;
use crate::error::ApiError;

/// Rows per record batch: large enough to amortise per-batch costs, small enough to keep memory
/// flat.
pub(super) const BATCH_ROWS: usize = 8192;

/// Why an upload was refused; every variant is a client error.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The file is not readable Parquet.
    #[error("the file is not valid Parquet: {0}")]
    InvalidParquet(String),
    /// The file is not Parquet at all (empty, CSV, JSON, ...): say what is accepted and where
    /// JSON rows go.
    #[error(
        "the file is not Parquet: {0}. Only Parquet files are accepted in the form field file; send rows as JSON to POST /tables/{{name}}/rows/ with Content-Type: application/json (an array of objects) or application/x-ndjson (one object per line)"
    )]
    NotParquet(String),
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
    #[error("row {row}, column {column:?}: {reason}")]
    InvalidValue {
        /// The column.
        column: String,
        /// 1-based row number in the file or body.
        row: usize,
        /// What is wrong (names the value when it is known).
        reason: String,
        /// The value as sent (JSON text for JSON rows), when known.
        value: Option<String>,
        /// The column's type (`date`, `smallint`, ...).
        expected_type: String,
    },
}

/// Each refusal is a 400 whose `code` names its kind.
impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        let code = match &e {
            IngestError::InvalidParquet(_) | IngestError::NotParquet(_) => "invalid_parquet",
            IngestError::ColumnMismatch(_) => "column_mismatch",
            IngestError::InvalidColumnName(_) => "invalid_column_name",
            IngestError::InvalidJson { .. } => "invalid_json",
            IngestError::UnsupportedType(_) => "unsupported_type",
            IngestError::InvalidValue { .. } | IngestError::InvalidRow { .. } => "invalid_value",
        };
        let members = match &e {
            IngestError::InvalidValue {
                column,
                row,
                value,
                expected_type,
                ..
            } => serde_json::json!({
                "row": row,
                "column": column,
                "value": value,
                "expected_type": expected_type,
            }),
            IngestError::InvalidRow { row, .. } => serde_json::json!({ "row": row }),
            IngestError::InvalidJson { line, column, .. } => {
                serde_json::json!({ "line": line, "line_column": column })
            }
            _ => serde_json::Value::Null,
        };
        ApiError::bad_request(code, e.to_string()).with_members(members)
    }
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

/// One column a [`RangeTracker`] watches, and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedColumn {
    /// Its position among the plan's columns (the converted batches' order).
    pub index: usize,
    /// Its name.
    pub name: String,
    /// Least value written, microseconds since 1970 (UTC for `timestamptz`).
    pub min: Option<i64>,
    /// Greatest value written.
    pub max: Option<i64>,
    /// Some written row held NULL there.
    pub nulls: bool,
}

/// The least and greatest values of some timestamp columns over the rows an upload writes,
/// taken from the converted batches as they are encoded (no second pass over the table): what
/// incremental views recompute. Shared with the encoding thread.
#[derive(Debug, Clone, Default)]
pub struct RangeTracker(std::sync::Arc<std::sync::Mutex<Vec<TrackedColumn>>>);

impl RangeTracker {
    /// Watches the columns at these plan positions.
    pub fn new(columns: Vec<(usize, String)>) -> Self {
        let columns = columns
            .into_iter()
            .map(|(index, name)| TrackedColumn {
                index,
                name,
                min: None,
                max: None,
                nulls: false,
            })
            .collect();
        Self(std::sync::Arc::new(std::sync::Mutex::new(columns)))
    }

    /// Takes in one converted batch. A watched column that is not a microsecond timestamp
    /// (never, for a `timestamp` or `timestamptz` column) counts as holding NULLs, which makes
    /// the change unbounded: a full refresh, never a missed bucket.
    pub fn observe(&self, batch: &arrow::array::RecordBatch) {
        use arrow::array::{Array, TimestampMicrosecondArray};
        let Ok(mut columns) = self.0.lock() else {
            return;
        };
        for column in columns.iter_mut() {
            let values = batch
                .columns()
                .get(column.index)
                .and_then(|a| a.as_any().downcast_ref::<TimestampMicrosecondArray>());
            let Some(values) = values else {
                column.nulls |= batch.num_rows() > 0;
                continue;
            };
            column.nulls |= values.null_count() > 0;
            if let Some(min) = arrow::compute::min(values) {
                column.min = Some(column.min.map_or(min, |m| m.min(min)));
            }
            if let Some(max) = arrow::compute::max(values) {
                column.max = Some(column.max.map_or(max, |m| m.max(max)));
            }
        }
    }

    /// What each watched column saw.
    pub fn columns(&self) -> Vec<TrackedColumn> {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// `append` (default) or `replace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Add the rows.
    Append,
    /// Replace every row, atomically for readers.
    Replace,
}
