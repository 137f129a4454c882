//! Stage 2 of a Parquet upload: the file's footer becomes the [`Plan`] (declared or inferred
//! column types; what cannot be stored is refused before a byte is copied), then the file is
//! read in batches that go through [`convert`](super::convert) into [`copy`](super::copy).
//! Reader panics on a hostile file are caught and answered as 400.

use std::collections::HashSet;
use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use arrow::datatypes::Schema;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::LogicalType;
use tokio::sync::mpsc;

use super::convert;
use super::copy;
use super::plan::{BATCH_ROWS, ColumnPlan, DeclaredColumn, IngestError, Plan, RangeTracker};
use super::types::{PgType, check_castable};
use crate::db::ident::Ident;
use crate::db::tenant::TenantTx;
use crate::error::ApiError;

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

/// The declared columns, checked against the file: each exactly once, each castable, none
/// missing from the declaration.
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

/// Runs `work`, turning a panic in the Parquet or Arrow reader into a 400.
fn guarded<T>(what: &str, work: impl FnOnce() -> Result<T, IngestError>) -> Result<T, IngestError> {
    // A hostile file must not take the server down: a panic in a reader becomes a 400.
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| {
        Err(IngestError::InvalidParquet(format!(
            "the reader failed while {what}"
        )))
    })
}

/// The reader of the uploaded file; an encrypted file is `unsupported_type`, anything else
/// unreadable `invalid_parquet`.
fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, IngestError> {
    let mut file = File::open(path)
        .map_err(|e| IngestError::InvalidParquet(format!("cannot open the upload: {e}")))?;
    check_magic(&mut file)?;
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

/// A Parquet file starts with `PAR1` (`PARE` when its footer is encrypted): anything else (an empty file, CSV, JSON) is refused
/// saying what it looks like, before the reader complains about a footer.
fn check_magic(file: &mut File) -> Result<(), IngestError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => {
                return Err(IngestError::InvalidParquet(format!(
                    "cannot read the upload: {e}"
                )));
            }
        }
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| IngestError::InvalidParquet(format!("cannot read the upload: {e}")))?;
    let head = &head[..read];
    // `PARE` marks a file with an encrypted footer: the reader refuses it as such.
    if head.starts_with(b"PAR1") || head.starts_with(b"PARE") {
        return Ok(());
    }
    Err(IngestError::NotParquet(looks_like(head)))
}

/// What the first bytes of a file that is not Parquet suggest it is.
fn looks_like(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(head);
    let start = text.trim_start();
    // Text, possibly cut in the middle of a character at the end of the sample.
    let is_text = std::str::from_utf8(head).map_or_else(|e| e.error_len().is_none(), |_| true)
        && !head.contains(&0);
    if head.is_empty() {
        "the file is empty".to_owned()
    } else if start.starts_with('[') || start.starts_with('{') {
        "it looks like JSON".to_owned()
    } else if is_text && start.contains([',', ';', '\t']) {
        "it looks like CSV (text with separators)".to_owned()
    } else if is_text {
        "it looks like text".to_owned()
    } else {
        "it does not start with PAR1, the mark of a Parquet file".to_owned()
    }
}

/// Copies the file's rows into the tenant's table `schema.name` (whose columns are the plan's),
/// within the tenant's storage quota; returns the rows written.
pub(super) async fn copy_file(
    conn: &mut TenantTx,
    schema: &Ident,
    name: &Ident,
    plan: Plan,
    path: PathBuf,
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
            encode_file(&path, &plan, &sink, &tracker);
        },
    )
    .await
}

/// Reads the file's planned columns in batches of [`BATCH_ROWS`] rows, converts them and sends
/// them to `sink` as binary COPY data; the first error is sent too and ends the stream.
fn encode_file(
    path: &Path,
    plan: &Plan,
    sink: &mpsc::Sender<Result<Bytes, IngestError>>,
    tracker: &RangeTracker,
) {
    let result = guarded("decoding the data", || {
        let projection: Vec<usize> = plan.columns.iter().map(|c| c.file_index).collect();
        let builder = open(path)?;
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
        copy::encode_batches(
            convert::converted(batches, plan, &positions),
            plan,
            sink,
            tracker,
        )
    });
    if let Err(e) = result {
        let _ = sink.blocking_send(Err(e));
    }
}
