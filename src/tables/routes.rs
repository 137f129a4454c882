//! Handlers of `/tables/...`.

use std::path::PathBuf;

use actix_multipart::Multipart;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::ingest::{self, DeclaredColumn, IngestError, Plan};
use super::name::table_name;
use super::store::{self, ColumnInfo};
use crate::auth::extract::AuthUser;
use crate::db::ident::Ident;
use crate::db::quota::{self, Counted};
use crate::db::tenant;
use crate::error::{ApiError, Problem};
use crate::state::AppState;

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        let code = match &e {
            IngestError::InvalidParquet(_) => "invalid_parquet",
            IngestError::ColumnMismatch(_) => "column_mismatch",
            IngestError::InvalidColumnName(_) => "invalid_column_name",
            IngestError::InvalidJson { .. } => "invalid_json",
            IngestError::UnsupportedType(_) => "unsupported_type",
            IngestError::InvalidValue { .. } | IngestError::InvalidRow { .. } => "invalid_value",
        };
        ApiError::bad_request(code, e.to_string())
    }
}

/// A table as the API describes it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TableBody {
    /// The (lower-case) table name.
    pub table_name: String,
    /// Columns in order, with their PostgreSQL types.
    pub columns: Vec<ColumnInfo>,
    /// Exact number of rows.
    pub row_count: i64,
    /// Bytes on disk, indexes and TOAST included.
    pub size_bytes: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change of its rows.
    pub updated_at: DateTime<Utc>,
}

/// A table in a listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct TableSummary {
    /// The table name.
    pub table_name: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change of its rows.
    pub updated_at: DateTime<Utc>,
}

/// The parts of a create-table upload.
/// A multipart form: the `file` part saved to a temporary file, the other parts as text.
struct Form {
    file: Option<tempfile::TempPath>,
    fields: std::collections::HashMap<String, String>,
}

impl Form {
    fn take_file(&mut self) -> Result<tempfile::TempPath, ApiError> {
        self.file.take().ok_or_else(|| {
            ApiError::bad_request(
                "invalid_form",
                "the form field file (the Parquet file) is missing",
            )
        })
    }
}

const SMALL_FIELD_LIMIT: usize = 256 * 1024;

async fn read_small_field(
    field: &mut actix_multipart::Field,
    name: &str,
) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.try_next().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > SMALL_FIELD_LIMIT {
            return Err(ApiError::PayloadTooLarge {
                detail: format!("the form field {name} exceeds {SMALL_FIELD_LIMIT} bytes"),
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| {
        ApiError::bad_request(
            "invalid_form",
            format!("the form field {name} is not UTF-8"),
        )
    })
}

fn multipart_error(e: actix_multipart::MultipartError) -> ApiError {
    ApiError::bad_request("invalid_form", format!("malformed multipart body: {e}"))
}

/// Streams a multipart body: `file` to a temporary file (bounded by `limit`), the text fields
/// named in `fields` into memory; any other part is refused.
async fn read_form(mut payload: Multipart, limit: u64, fields: &[&str]) -> Result<Form, ApiError> {
    let mut form = Form {
        file: None,
        fields: std::collections::HashMap::new(),
    };
    while let Some(mut field) = payload.try_next().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            form.file = Some(save_file(&mut field, limit).await?);
        } else if fields.contains(&name.as_str()) {
            let text = read_small_field(&mut field, &name).await?;
            form.fields.insert(name, text);
        } else {
            return Err(ApiError::bad_request(
                "invalid_form",
                format!(
                    "unknown form field {name:?}; expected file and {}",
                    fields.join(", ")
                ),
            ));
        }
    }
    Ok(form)
}

/// Streams a file field to a temporary file, refusing it past `limit` bytes.
async fn save_file(
    field: &mut actix_multipart::Field,
    limit: u64,
) -> Result<tempfile::TempPath, ApiError> {
    let temp = tempfile::NamedTempFile::new()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("creating a temporary file: {e}")))?;
    let (std_file, path) = temp.into_parts();
    let mut file = tokio::fs::File::from_std(std_file);
    let mut written: u64 = 0;
    while let Some(chunk) = field.try_next().await.map_err(multipart_error)? {
        written += chunk.len() as u64;
        if written > limit {
            return Err(ApiError::PayloadTooLarge {
                detail: format!("the upload exceeds the limit of {limit} bytes"),
            });
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("writing the upload: {e}")))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("writing the upload: {e}")))?;
    Ok(path)
}

fn require_multipart(req: &HttpRequest) -> Result<(), ApiError> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if is_multipart {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType {
            detail: "expected Content-Type: multipart/form-data with the fields file, table_name and columns".to_owned(),
        })
    }
}

async fn on_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("a blocking task failed: {e}")))
}

/// Create a table from a Parquet file (multipart: `file`, `table_name`, optional `columns`).
#[utoipa::path(post, path = "/tables/create/", tag = "tables",
    request_body(content_type = "multipart/form-data", description = "`file` (Parquet), `table_name`, optional `columns` (JSON list of `{column_name, column_type}`)"),
    responses((status = 201, body = TableBody), (status = 400, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem)),
    security(("jwt" = [])))]
pub async fn create_table(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: AuthUser,
    payload: Multipart,
) -> Result<HttpResponse, ApiError> {
    require_multipart(&req)?;
    let settings = state.settings.clone();
    let mut form = read_form(
        payload,
        settings.upload_limit_bytes,
        &["table_name", "columns"],
    )
    .await?;
    let raw_name = form.fields.remove("table_name").ok_or_else(|| {
        ApiError::bad_request("invalid_form", "the form field table_name is missing")
    })?;
    let name = table_name(raw_name.trim())?;
    let file = form.take_file()?;
    let declared: Option<Vec<DeclaredColumn>> = match form.fields.get("columns").map(|c| c.trim()) {
        None | Some("") => None,
        Some(text) => Some(serde_json::from_str(text).map_err(|e| {
            ApiError::bad_request(
                "invalid_columns",
                format!("columns must be a JSON list of {{\"column_name\", \"column_type\"}}: {e}"),
            )
        })?),
    };

    let tenant = user.tenant.clone();
    // Early and unlocked, to spare the upload when the tenant is already full; the check that
    // holds under concurrency is the locked one before registering.
    quota::check(
        quota::count(&state.pool, user.user_id, Counted::Relations).await?,
        settings.max_tables_per_tenant,
        Counted::Relations,
    )?;

    let path: PathBuf = file.to_path_buf();
    let plan_path = path.clone();
    let plan = on_blocking(move || ingest::plan(&plan_path, declared.as_deref())).await??;
    if plan.columns.len() > settings.max_columns {
        return Err(ApiError::bad_request(
            "too_many_columns",
            format!(
                "the table would have {} columns; at most {} are allowed",
                plan.columns.len(),
                settings.max_columns
            ),
        ));
    }

    let mut tx = tenant::begin_as(&state.pool, &tenant, settings.tenant_statement_timeout).await?;
    store::create_table(&mut tx, &tenant, &name, &plan).await?;
    copy_file(
        &mut tx,
        &tenant,
        &name,
        plan,
        path,
        settings.tenant_storage_bytes,
    )
    .await?;
    let mut tx = tx.into_service().await?;
    quota::check_locked(
        &mut tx,
        user.user_id,
        Counted::Relations,
        settings.max_tables_per_tenant,
    )
    .await?;
    let row = store::register(&mut tx, user.user_id, &name).await?;
    tx.commit().await?;
    drop(file);
    tracing::info!(table = %name.as_str(), "created a table");
    let body = describe(&state, &tenant, &name, row).await?;
    Ok(HttpResponse::Created().json(body))
}

/// Streams the file through the binary COPY encoder into the table, within the tenant's
/// storage quota.
async fn copy_file(
    conn: &mut tenant::TenantTx,
    schema: &Ident,
    name: &Ident,
    plan: Plan,
    path: PathBuf,
    storage_quota: u64,
) -> Result<u64, ApiError> {
    let statement = store::copy_statement(schema, name, &plan)?;
    copy_from(conn, schema, storage_quota, &statement, move |sender| {
        ingest::encode_file(path, plan, sender)
    })
    .await
}

/// Binary COPY's fixed header (signature, no flags, no extension) and trailer, as pgpq writes
/// them: a long stream is cut into several COPY statements at batch boundaries, each framed so.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
const COPY_TRAILER: &[u8] = b"\xff\xff";

/// COPY data between two storage measurements: an eighth of the quota, within 1 to 64 MiB, so
/// a file that inflates far beyond its size is stopped soon after it crosses the quota.
fn measure_every(storage_quota: u64) -> usize {
    usize::try_from((storage_quota / 8).clamp(1 << 20, 64 << 20)).unwrap_or(64 << 20)
}

/// Runs `COPY ... FROM STDIN` fed by `produce`, which runs on a blocking thread and sends binary
/// COPY chunks (or the error that stopped it) through a bounded channel. `conn` runs as the
/// tenant `schema`; the tenant's storage is measured every [`measure_every`] bytes and at the
/// end, and above `storage_quota` the copy stops with 409 `storage_quota_exceeded` (the caller's
/// transaction then rolls everything back).
async fn copy_from(
    conn: &mut tenant::TenantTx,
    schema: &Ident,
    storage_quota: u64,
    statement: &str,
    produce: impl FnOnce(mpsc::Sender<Result<bytes::Bytes, IngestError>>) + Send + 'static,
) -> Result<u64, ApiError> {
    let (sender, mut receiver) = mpsc::channel(4);
    let producer = tokio::task::spawn_blocking(move || produce(sender));
    let result = copy_segments(conn, schema, storage_quota, statement, &mut receiver).await;
    drop(receiver);
    let _ = producer.await;
    result
}

async fn copy_segments(
    conn: &mut tenant::TenantTx,
    schema: &Ident,
    storage_quota: u64,
    statement: &str,
    receiver: &mut mpsc::Receiver<Result<bytes::Bytes, IngestError>>,
) -> Result<u64, ApiError> {
    let every = measure_every(storage_quota);
    let mut written = 0;
    let mut since_measured = 0;
    let mut copy = conn.copy_in_raw(statement).await?;
    while let Some(chunk) = receiver.recv().await {
        let bytes = match chunk {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = copy.abort("upload refused").await;
                return Err(ApiError::from(e));
            }
        };
        if since_measured >= every {
            if let Err(e) = copy.send(COPY_TRAILER).await {
                let _ = copy.abort("upload refused").await;
                return Err(copy_error(e));
            }
            written += copy.finish().await.map_err(copy_error)?;
            since_measured = 0;
            let used = conn.storage_bytes(schema).await?;
            quota::check_storage(used, storage_quota)?;
            copy = conn.copy_in_raw(statement).await?;
            if let Err(e) = copy.send(COPY_HEADER).await {
                let _ = copy.abort("upload refused").await;
                return Err(copy_error(e));
            }
        }
        since_measured += bytes.len();
        if let Err(e) = copy.send(bytes).await {
            let _ = copy.abort("upload refused").await;
            return Err(copy_error(e));
        }
    }
    written += copy.finish().await.map_err(copy_error)?;
    let used = conn.storage_bytes(schema).await?;
    quota::check_storage(used, storage_quota)?;
    Ok(written)
}

/// A COPY rejected by PostgreSQL is about the data (a value out of range for its type, say).
fn copy_error(e: sqlx::Error) -> ApiError {
    tenant::classify_error(e, "invalid_value").unwrap_or_else(ApiError::from)
}

async fn describe(
    state: &AppState,
    tenant: &Ident,
    name: &Ident,
    row: store::TableRow,
) -> Result<TableBody, ApiError> {
    let columns = store::columns(&state.pool, tenant, name).await?;
    let size_bytes = store::size_bytes(&state.pool, tenant, name).await?;
    let mut tx =
        tenant::begin_as(&state.pool, tenant, state.settings.tenant_statement_timeout).await?;
    let row_count = store::row_count(&mut tx, tenant, name).await?;
    tx.commit().await?;
    Ok(TableBody {
        table_name: row.table_name,
        columns,
        row_count,
        size_bytes,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// The caller's tables.
#[utoipa::path(get, path = "/tables/", tag = "tables",
    responses((status = 200, body = Vec<TableSummary>), (status = 401, body = Problem)),
    security(("jwt" = [])))]
pub async fn list_tables(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let tables: Vec<TableSummary> = store::list(&state.pool, user.user_id)
        .await?
        .into_iter()
        .map(|t| TableSummary {
            table_name: t.table_name,
            created_at: t.created_at,
            updated_at: t.updated_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(tables))
}

/// One table: columns, types, row count, size.
#[utoipa::path(get, path = "/tables/{name}/", tag = "tables",
    params(("name" = String, Path, description = "table name")),
    responses((status = 200, body = TableBody), (status = 404, body = Problem)),
    security(("jwt" = [])))]
pub async fn describe_table(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = lookup_name(&path)?;
    let row = store::find(&state.pool, user.user_id, &name).await?;
    let tenant = user.tenant.clone();
    Ok(HttpResponse::Ok().json(describe(&state, &tenant, &name, row).await?))
}

/// Query of `DELETE /tables/{name}/`.
#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    /// Also drop the views that depend on the table.
    #[serde(default)]
    pub cascade: bool,
}

/// Delete a table (409 while views depend on it, unless `?cascade=true`).
#[utoipa::path(delete, path = "/tables/{name}/", tag = "tables",
    params(("name" = String, Path, description = "table name"), ("cascade" = Option<bool>, Query, description = "also drop dependent views")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("jwt" = [])))]
pub async fn delete_table(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    query: web::Query<DeleteQuery>,
) -> Result<HttpResponse, ApiError> {
    let name = lookup_name(&path)?;
    let row = store::find(&state.pool, user.user_id, &name).await?;
    let tenant = user.tenant.clone();
    let mut tx = tenant::begin_as(
        &state.pool,
        &tenant,
        state.settings.tenant_statement_timeout,
    )
    .await?;
    store::drop_table(&mut tx, &tenant, &name, query.cascade).await?;
    let mut tx = tx.into_service().await?;
    store::unregister(&mut tx, row.table_id).await?;
    crate::views::store::forget_dropped(&mut tx, user.user_id, &tenant).await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A name in a path: an invalid one cannot exist, so it is a 404 like any unknown table.
fn lookup_name(raw: &str) -> Result<Ident, ApiError> {
    table_name(raw).map_err(|_| ApiError::NotFound {
        detail: format!("no table named {raw:?}"),
    })
}

/// Rows of a table: filters (`col=op.value`), `select`, `order`, `limit` + `cursor` or `page` +
/// `size`, `format=json|csv|parquet`.
#[utoipa::path(get, path = "/tables/{name}/rows/", tag = "tables",
    params(("name" = String, Path, description = "table name"),
        ("limit" = Option<i64>, Query, description = "rows per page (JSON: at most 10000)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("page" = Option<i64>, Query, description = "1-based page (with size)"),
        ("size" = Option<i64>, Query, description = "rows per page"),
        ("order" = Option<String>, Query, description = "e.g. `record_timestamp.desc,call_id`"),
        ("select" = Option<String>, Query, description = "comma-separated columns"),
        ("format" = Option<String>, Query, description = "json (default), csv or parquet")),
    responses((status = 200, description = "rows"), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("jwt" = [])))]
pub async fn list_rows(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let name = lookup_name(&path)?;
    store::find(&state.pool, user.user_id, &name).await?;
    let tenant = user.tenant.clone();
    crate::query::rows::read(
        &state.pool,
        &state.read_slots,
        crate::query::rows::ReadLimits::from_settings(&state.settings),
        tenant,
        name,
        &query,
    )
    .await
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

/// Query of `POST /tables/{name}/rows/`.
#[derive(Debug, Deserialize)]
pub struct RowsQueryString {
    /// `append` or `replace`; kept as text so an unknown mode is `invalid_mode`, not the
    /// query extractor's generic 400.
    pub mode: Option<String>,
}

/// What an ingest of more rows did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RowsWritten {
    /// The table.
    pub table_name: String,
    /// `append` or `replace`.
    pub mode: Mode,
    /// Rows this request wrote.
    pub rows_written: u64,
    /// Rows in the table now.
    pub row_count: i64,
}

fn parse_mode(text: &str) -> Result<Mode, ApiError> {
    match text.trim() {
        "append" => Ok(Mode::Append),
        "replace" => Ok(Mode::Replace),
        other => Err(ApiError::bad_request(
            "invalid_mode",
            format!(
                "mode {other:?} is not an upload mode; use mode=append (the default) or mode=replace"
            ),
        )),
    }
}

async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload
        .try_next()
        .await
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?
    {
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge {
                detail: format!(
                    "the body exceeds the limit of {limit} bytes; send large loads as Parquet"
                ),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Add rows to a table: a Parquet file (multipart `file`, optional `mode`), or a JSON array of
/// row objects (`application/json`), or NDJSON (`application/x-ndjson`).
#[utoipa::path(post, path = "/tables/{name}/rows/", tag = "tables",
    params(("name" = String, Path, description = "table name"), ("mode" = Option<String>, Query, description = "append (default) or replace")),
    responses((status = 200, body = RowsWritten), (status = 400, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem)),
    security(("jwt" = [])))]
pub async fn add_rows(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    query: web::Query<RowsQueryString>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let name = lookup_name(&path)?;
    let row = store::find(&state.pool, user.user_id, &name).await?;
    let tenant = user.tenant.clone();
    let columns = store::columns(&state.pool, &tenant, &name).await?;
    let settings = state.settings.clone();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut mode = match query.mode.as_deref() {
        Some(text) => parse_mode(text)?,
        None => Mode::Append,
    };

    enum Source {
        File(tempfile::TempPath, Plan),
        Json(Plan, Vec<arrow::array::RecordBatch>),
    }
    let source = if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::new(req.headers(), payload);
        let mut form = read_form(multipart, settings.upload_limit_bytes, &["mode"]).await?;
        if let Some(text) = form.fields.get("mode") {
            mode = parse_mode(text)?;
        }
        let file = form.take_file()?;
        let declared: Vec<DeclaredColumn> = columns
            .iter()
            .map(|c| DeclaredColumn {
                column_name: c.column_name.clone(),
                column_type: c.column_type.clone(),
            })
            .collect();
        let plan_path = file.to_path_buf();
        let plan = on_blocking(move || ingest::plan(&plan_path, Some(&declared))).await??;
        Source::File(file, plan)
    } else if content_type.starts_with("application/json")
        || content_type.starts_with("application/x-ndjson")
        || content_type.starts_with("application/jsonl")
    {
        let ndjson = !content_type.starts_with("application/json");
        let body = read_body(payload, settings.rows_body_limit_bytes).await?;
        let table: Vec<(String, super::types::PgType)> = columns
            .iter()
            .map(|c| {
                super::types::PgType::parse(&c.column_type)
                    .map(|pg| (c.column_name.clone(), pg))
                    .map_err(|e| {
                        ApiError::Internal(anyhow::anyhow!(
                            "BUG: catalog type {:?}: {e}",
                            c.column_type
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        let (plan, batches) =
            on_blocking(move || ingest::json_rows(&body, ndjson, &table)).await??;
        Source::Json(plan, batches)
    } else {
        return Err(ApiError::UnsupportedMediaType {
            detail: "send rows as multipart/form-data (a Parquet file), application/json (an array of objects) or application/x-ndjson".to_owned(),
        });
    };

    let mut tx = tenant::begin_as(&state.pool, &tenant, settings.tenant_statement_timeout).await?;
    if mode == Mode::Replace {
        store::delete_all_rows(&mut tx, &tenant, &name).await?;
    }
    let written = match source {
        Source::File(file, plan) => {
            let written = copy_file(
                &mut tx,
                &tenant,
                &name,
                plan,
                file.to_path_buf(),
                settings.tenant_storage_bytes,
            )
            .await?;
            drop(file);
            written
        }
        Source::Json(plan, batches) => {
            let statement = store::copy_statement(&tenant, &name, &plan)?;
            let positions: Vec<usize> = (0..plan.columns.len()).collect();
            copy_from(
                &mut tx,
                &tenant,
                settings.tenant_storage_bytes,
                &statement,
                move |sender| {
                    if let Err(e) = ingest::encode_batches(
                        batches.into_iter().map(Ok),
                        &plan,
                        &positions,
                        &sender,
                    ) {
                        let _ = sender.blocking_send(Err(e));
                    }
                },
            )
            .await?
        }
    };
    let row_count = store::row_count(&mut tx, &tenant, &name).await?;
    let mut tx = tx.into_service().await?;
    store::bump_change_count(&mut tx, row.table_id).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(RowsWritten {
        table_name: row.table_name,
        mode,
        rows_written: written,
        row_count,
    }))
}
