//! Runs a rows request as the tenant and writes the answer: JSON (one page, with the cursor of
//! the next one), or CSV/Parquet written to a temporary file and then streamed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::header;
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use futures_util::StreamExt;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::params::{Cursor, Filter, Format, Op, Position, RowsQuery};
use crate::config::Settings;
use crate::db::ident::{ColumnIdent, Ident};
use crate::db::tenant::{self, TenantSlots};
use crate::error::ApiError;
use crate::tables::store::ColumnInfo;
use crate::tables::types::PgType;

/// A table or view to read.
#[derive(Debug, Clone)]
pub struct Relation {
    /// The tenant schema (and role).
    pub schema: Ident,
    /// The relation.
    pub name: Ident,
    /// Its columns, in order.
    pub columns: Vec<ColumnInfo>,
}

/// Output columns: name and type (when the type is one we know).
type OutputColumns = Vec<(String, Option<PgType>)>;

struct Column {
    ident: ColumnIdent,
    pg: Option<PgType>,
    /// The catalog's type name (`json`, `point`, ...), for error messages.
    type_name: String,
}

/// Columns a statement filters or orders on, by name and catalog type: when PostgreSQL finds
/// no operator for one of them, the error names it.
type Compared = Vec<(String, String)>;

impl Relation {
    fn column(&self, name: &str) -> Result<Column, ApiError> {
        let info = self
            .columns
            .iter()
            .find(|c| c.column_name == name)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "unknown_column",
                    format!("{:?} has no column {name:?}", self.name.as_str()),
                )
            })?;
        Ok(Column {
            ident: ColumnIdent::new(info.column_name.clone()).map_err(|e| {
                ApiError::Internal(anyhow::anyhow!("BUG: catalog column name: {e}"))
            })?,
            pg: PgType::parse(&info.column_type).ok(),
            type_name: info.column_type.clone(),
        })
    }
}

/// `json` (unlike `jsonb`) has no equality or ordering operator; saying so up front beats
/// PostgreSQL's "operator does not exist: json = jsonb".
fn refuse_json(column: &Column, what: &str) -> Result<(), ApiError> {
    if column.type_name == "json" {
        return Err(ApiError::bad_request(
            "unsupported_operation",
            format!(
                "column {:?} is of type json, which PostgreSQL cannot {what}; use like, ilike or is on it, or cast it to jsonb in the view (SELECT {}::jsonb AS {} ...)",
                column.ident.as_str(),
                column.ident,
                column.ident
            ),
        ));
    }
    Ok(())
}

/// Whether the value goes out as text (exact numerics, and everything Parquet cannot type).
fn as_text(pg: Option<PgType>, format: Format) -> bool {
    let exact_numeric = matches!(pg, Some(PgType::Numeric(_))) && format != Format::Parquet;
    let untyped_in_parquet = format == Format::Parquet
        && matches!(
            pg,
            None | Some(
                PgType::Numeric(None)
                    | PgType::Interval
                    | PgType::Uuid
                    | PgType::Bytea
                    | PgType::Jsonb
            )
        );
    exact_numeric || untyped_in_parquet
}

fn push_value(query: &mut QueryBuilder<Postgres>, column: &Column, value: String) {
    match column.pg {
        Some(pg) => {
            query
                .push("CAST(")
                .push_bind(value)
                .push(" AS ")
                .push(pg.to_string())
                .push(")");
        }
        None => {
            query.push_bind(value);
        }
    }
}

fn push_lhs(query: &mut QueryBuilder<Postgres>, column: &Column) {
    query.push("t.").push(&column.ident);
    if column.pg.is_none() {
        query.push("::text");
    }
}

fn push_filter(query: &mut QueryBuilder<Postgres>, column: &Column, filter: &Filter) {
    let comparison = |op: &str| op.to_owned();
    match &filter.op {
        Op::Eq(v) | Op::Neq(v) | Op::Gt(v) | Op::Gte(v) | Op::Lt(v) | Op::Lte(v) => {
            let op = match &filter.op {
                Op::Eq(_) => "=",
                Op::Neq(_) => "<>",
                Op::Gt(_) => ">",
                Op::Gte(_) => ">=",
                Op::Lt(_) => "<",
                _ => "<=",
            };
            push_lhs(query, column);
            query.push(format!(" {} ", comparison(op)));
            push_value(query, column, v.clone());
        }
        Op::Like(pattern) | Op::Ilike(pattern) => {
            let op = if matches!(filter.op, Op::Like(_)) {
                " LIKE "
            } else {
                " ILIKE "
            };
            query
                .push("t.")
                .push(&column.ident)
                .push("::text")
                .push(op)
                .push_bind(pattern.clone());
        }
        Op::In(values) => {
            push_lhs(query, column);
            query.push(" = ANY(");
            match column.pg {
                Some(pg) => {
                    query
                        .push("CAST(")
                        .push_bind(values.clone())
                        .push(" AS ")
                        .push(pg.to_string())
                        .push("[]))");
                }
                None => {
                    query.push_bind(values.clone()).push(")");
                }
            }
        }
        Op::IsNull => {
            query.push("t.").push(&column.ident).push(" IS NULL");
        }
        Op::IsNotNull => {
            query.push("t.").push(&column.ident).push(" IS NOT NULL");
        }
    }
}

/// Builds `SELECT t.ctid, to_json(x.*) FROM relation t, LATERAL (SELECT ...) x ...` for a
/// request. User columns may carry any name, the aliases `t` and `x` included, so every
/// reference is qualified: a bare `x` would resolve to a column named `x` first.
fn build(
    relation: &Relation,
    query: &RowsQuery,
) -> Result<(QueryBuilder<Postgres>, OutputColumns, Compared), ApiError> {
    let mut compared = Compared::new();
    let selected: Vec<String> = match &query.select {
        Some(names) => names.clone(),
        None => relation
            .columns
            .iter()
            .map(|c| c.column_name.clone())
            .collect(),
    };
    let mut sql = QueryBuilder::new("SELECT t.ctid::text, to_json(x.*)::text FROM ");
    sql.push(&relation.schema)
        .push(".")
        .push(&relation.name)
        .push(" t, LATERAL (SELECT ");
    let mut out = Vec::with_capacity(selected.len());
    for (i, name) in selected.iter().enumerate() {
        let column = relation.column(name)?;
        if i > 0 {
            sql.push(", ");
        }
        sql.push("t.").push(&column.ident);
        if as_text(column.pg, query.format) {
            sql.push("::text");
        }
        sql.push(" AS ").push(&column.ident);
        out.push((name.clone(), column.pg));
    }
    sql.push(") x WHERE true");
    for filter in &query.filters {
        let column = relation.column(&filter.column)?;
        if !matches!(
            filter.op,
            Op::Like(_) | Op::Ilike(_) | Op::IsNull | Op::IsNotNull
        ) {
            refuse_json(&column, "compare")?;
        }
        compared.push((filter.column.clone(), column.type_name.clone()));
        sql.push(" AND ");
        push_filter(&mut sql, &column, filter);
    }
    if let Position::Cursor(Some(Cursor::After(tid))) = &query.position {
        if !query.order.is_empty() {
            return Err(ApiError::bad_request(
                "invalid_cursor",
                "this cursor belongs to another order",
            ));
        }
        sql.push(" AND t.ctid > CAST(")
            .push_bind(tid.clone())
            .push(" AS tid)");
    }
    sql.push(" ORDER BY ");
    for order in &query.order {
        let column = relation.column(&order.column)?;
        refuse_json(&column, "order")?;
        compared.push((order.column.clone(), column.type_name.clone()));
        sql.push("t.")
            .push(&column.ident)
            .push(if order.desc { " DESC" } else { " ASC" });
        match order.nulls_first {
            Some(true) => sql.push(" NULLS FIRST"),
            Some(false) => sql.push(" NULLS LAST"),
            None => &mut sql,
        };
        sql.push(", ");
    }
    sql.push("t.ctid");
    let offset = match &query.position {
        Position::Page { page, size } => (page - 1).saturating_mul(*size),
        Position::Cursor(Some(Cursor::Offset(n))) => *n,
        Position::Cursor(_) => 0,
    };
    if query.format == Format::Json {
        // One more than asked: whether it exists says if there is a next page.
        sql.push(" LIMIT ").push_bind(query.limit.saturating_add(1));
    } else if query.limit != i64::MAX {
        sql.push(" LIMIT ").push_bind(query.limit);
    }
    if offset > 0 {
        sql.push(" OFFSET ").push_bind(offset);
    }
    Ok((sql, out, compared))
}

/// Maps a failure of the rows statement: a type without the operator a filter or order needs
/// (`point` has no ordering, say) is the client's 400 naming the column, data errors are 400s
/// as everywhere, the rest is a 500.
fn query_error(e: sqlx::Error, compared: &[(String, String)]) -> ApiError {
    if let sqlx::Error::Database(db) = &e
        // undefined_function (no such operator), indeterminate_datatype, ambiguous_function
        && matches!(db.code().as_deref(), Some("42883" | "42P18" | "42725"))
    {
        let message = db.message();
        let mut named: Vec<&(String, String)> = compared
            .iter()
            .filter(|(_, type_name)| message.contains(type_name.as_str()))
            .collect();
        if named.is_empty() {
            named = compared.iter().collect();
        }
        let columns = named
            .iter()
            .map(|(name, type_name)| format!("{name:?} ({type_name})"))
            .collect::<Vec<_>>()
            .join(", ");
        return ApiError::bad_request(
            "unsupported_operation",
            format!(
                "column {columns} cannot be filtered or ordered that way (PostgreSQL: {message}); use like, ilike or is, or cast the column to a comparable type in the view"
            ),
        );
    }
    tenant::classify_error(e, "invalid_filter").unwrap_or_else(ApiError::from)
}

/// What bounds a rows request besides its parameters.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Statement timeout of the query.
    pub statement_timeout: Duration,
    /// Largest export file written before it is sent (`export_too_large` beyond).
    pub spool_limit_bytes: u64,
    /// How long an export waits for a client that reads nothing before it ends the stream.
    pub write_stall: Duration,
    /// Largest JSON page, in bytes: a page is built in memory, so huge rows must not add up.
    pub page_limit_bytes: usize,
}

impl ReadLimits {
    /// The limits the settings give.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            statement_timeout: settings.tenant_statement_timeout,
            spool_limit_bytes: settings.export_spool_limit_bytes,
            write_stall: settings.export_write_stall,
            page_limit_bytes: settings.rows_response_limit_bytes,
        }
    }
}

/// Answers `GET .../rows/` on the tenant's relation `name` (a table or a view the caller has
/// already been found to own): takes one of the tenant's read slots (429 when all are busy),
/// parses the parameters, reads the columns, runs as the tenant.
pub async fn read(
    pool: &PgPool,
    slots: &TenantSlots,
    limits: ReadLimits,
    tenant: Ident,
    name: Ident,
    pairs: &[(String, String)],
) -> Result<HttpResponse, ApiError> {
    // A slot is per process and held until the answer is fully sent, so one tenant's slow
    // or stalled downloads only ever queue behind each other.
    let slot = slots
        .try_acquire(&tenant)
        .ok_or(ApiError::TooManyRequests {
            retry_after_secs: 1,
        })?;
    let query = RowsQuery::parse(pairs)?;
    let columns = crate::tables::store::columns(pool, &tenant, &name).await?;
    let relation = Relation {
        schema: tenant,
        name,
        columns,
    };
    let (sql, columns, compared) = build(&relation, &query)?;
    match query.format {
        Format::Json => json_page(pool, limits, &relation, sql, &query, &compared).await,
        Format::Csv | Format::Parquet => {
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

async fn json_page(
    pool: &PgPool,
    limits: ReadLimits,
    relation: &Relation,
    mut sql: QueryBuilder<Postgres>,
    query: &RowsQuery,
    compared: &[(String, String)],
) -> Result<HttpResponse, ApiError> {
    let mut tx = tenant::begin_as(pool, &relation.schema, limits.statement_timeout).await?;
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
    for (i, row) in rows.iter().take(limit).enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(row.try_get::<&str, _>(1)?);
        last_tid = Some(row.try_get::<String, _>(0)?);
    }
    body.push_str("],\"next_cursor\":");
    let next = match (&query.position, more) {
        (_, false) => None,
        (Position::Cursor(_), true) if query.order.is_empty() => last_tid.map(Cursor::After),
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

/// Answers a CSV or Parquet export: the whole result is written to a temporary file first and
/// the transaction ends before the first byte goes out, so a client that reads slowly or not at
/// all holds a file and its tenant's read slot, never a pooled connection. Errors (a bad filter,
/// a timeout, an export beyond the spool limit) are therefore still problem JSON.
/// What an export reads and how it writes it.
struct Export {
    relation: Relation,
    sql: QueryBuilder<Postgres>,
    columns: OutputColumns,
    compared: Compared,
    format: Format,
}

async fn export(
    pool: &PgPool,
    limits: ReadLimits,
    export_of: Export,
    slot: OwnedSemaphorePermit,
) -> Result<HttpResponse, ApiError> {
    let Export {
        relation,
        sql,
        columns,
        compared,
        format,
    } = export_of;
    let spool = Spool::new(limits.spool_limit_bytes)?;
    let out = Output {
        columns: &columns,
        compared: &compared,
    };
    let result = match format {
        Format::Csv => spool_csv(pool, limits, &relation, sql, out, spool).await,
        _ => spool_parquet(pool, limits, &relation, sql, out, spool).await,
    };
    let file = result.map_err(|e| match e {
        SpoolError::TooLarge => ApiError::bad_request(
            "export_too_large",
            format!(
                "the export is larger than {} bytes (TDC_EXPORT_SPOOL_LIMIT_BYTES); narrow it with filters, select or limit",
                limits.spool_limit_bytes
            ),
        ),
        SpoolError::Api(e) => e,
    })?;
    let (content_type, extension) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        _ => ("application/vnd.apache.parquet", "parquet"),
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"{}.{extension}\"",
                relation.name.as_str()
            ),
        ))
        .streaming(send_file(file, slot, limits.write_stall)))
}

/// Why spooling an export stopped.
enum SpoolError {
    /// The file reached the spool limit.
    TooLarge,
    /// Anything else, already an answer.
    Api(ApiError),
}

impl<E: Into<ApiError>> From<E> for SpoolError {
    fn from(e: E) -> Self {
        Self::Api(e.into())
    }
}

/// The temporary file an export is written to, refusing writes beyond its limit.
struct Spool {
    file: std::fs::File,
    written: u64,
    limit: u64,
    /// Set when a write was refused; the writers above wrap the I/O error in their own.
    full: Arc<AtomicBool>,
}

impl Spool {
    fn new(limit: u64) -> Result<Self, ApiError> {
        Ok(Self {
            file: tempfile::tempfile().map_err(anyhow::Error::from)?,
            written: 0,
            limit,
            full: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl std::io::Write for Spool {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        if self.written.saturating_add(len) > self.limit {
            self.full.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other("the export reached the spool limit"));
        }
        let n = self.file.write(buf)?;
        self.written += u64::try_from(n).unwrap_or(u64::MAX);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Maps a writer's failure: `TooLarge` when the spool refused the write.
fn spool_error(full: &AtomicBool, e: impl Into<anyhow::Error>) -> SpoolError {
    if full.load(Ordering::Relaxed) {
        SpoolError::TooLarge
    } else {
        SpoolError::Api(ApiError::Internal(e.into()))
    }
}

/// Streams a spooled export in chunks. A task reads the file ahead of the client; when the
/// client has taken nothing for `stall`, the task gives up, the file and the tenant's slot are
/// released, and the response ends with an error (the client sees a broken transfer, never a
/// short file that looks complete).
fn send_file(
    mut file: std::fs::File,
    slot: OwnedSemaphorePermit,
    stall: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    let (sender, receiver) = mpsc::channel::<Bytes>(1);
    let aborted = Arc::new(AtomicBool::new(false));
    let abort = Arc::clone(&aborted);
    tokio::spawn(async move {
        let _slot = slot;
        let mut at_start = true;
        loop {
            let read = tokio::task::spawn_blocking(move || {
                use std::io::{Read, Seek};
                if at_start {
                    file.seek(std::io::SeekFrom::Start(0))?;
                }
                let mut buf = vec![0u8; 256 * 1024];
                let n = file.read(&mut buf)?;
                buf.truncate(n);
                Ok::<_, std::io::Error>((buf, file))
            })
            .await;
            at_start = false;
            let chunk = match read {
                Ok(Ok((chunk, back))) => {
                    file = back;
                    chunk
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "reading a spooled export failed");
                    abort.store(true, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading a spooled export failed");
                    abort.store(true, Ordering::Relaxed);
                    return;
                }
            };
            if chunk.is_empty() {
                return;
            }
            match tokio::time::timeout(stall, sender.send(Bytes::from(chunk))).await {
                Ok(Ok(())) => {}
                // The client went away.
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::info!(
                        stall_secs = stall.as_secs(),
                        "an export client read nothing for too long; ending its export"
                    );
                    abort.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    });
    futures_util::stream::unfold(Some(receiver), move |receiver| {
        let aborted = Arc::clone(&aborted);
        async move {
            let mut receiver = receiver?;
            match receiver.recv().await {
                Some(bytes) => Some((Ok(bytes), Some(receiver))),
                None if aborted.load(Ordering::Relaxed) => Some((
                    Err(actix_web::error::ErrorInternalServerError(
                        "the export was ended",
                    )),
                    None,
                )),
                None => None,
            }
        }
    })
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

/// What an export holds: its columns, and those it filters or orders on.
struct Output<'a> {
    columns: &'a [(String, Option<PgType>)],
    compared: &'a [(String, String)],
}

fn json_to_csv_field(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn spool_csv(
    pool: &PgPool,
    limits: ReadLimits,
    relation: &Relation,
    mut sql: QueryBuilder<Postgres>,
    out: Output<'_>,
    spool: Spool,
) -> Result<std::fs::File, SpoolError> {
    let Output { columns, compared } = out;
    let full = Arc::clone(&spool.full);
    let mut writer = csv::Writer::from_writer(spool);
    writer
        .write_record(columns.iter().map(|(name, _)| name.as_str()))
        .map_err(|e| spool_error(&full, e))?;
    let mut tx = tenant::begin_as(pool, &relation.schema, limits.statement_timeout).await?;
    let mut rows = sql.build().fetch(&mut *tx);
    while let Some(row) = rows.next().await {
        let row = row.map_err(|e| query_error(e, compared))?;
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(row.try_get::<&str, _>(1)?).map_err(anyhow::Error::from)?;
        writer
            .write_record(columns.iter().map(|(name, _)| {
                json_to_csv_field(object.get(name).unwrap_or(&serde_json::Value::Null))
            }))
            .map_err(|e| spool_error(&full, e))?;
    }
    drop(rows);
    tx.commit().await?;
    let spool = writer
        .into_inner()
        .map_err(|e| spool_error(&full, anyhow::anyhow!("finishing the CSV: {e}")))?;
    Ok(spool.file)
}

async fn spool_parquet(
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
