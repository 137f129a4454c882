//! Handlers of `/tables/...`.

use std::path::PathBuf;

use actix_multipart::Multipart;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::indexes;
use super::json_rows::{self, copy_rows};
use super::name::table_name;
use super::parquet::{self, copy_file};
pub use super::plan::Mode;
use super::plan::{DeclaredColumn, Plan, RangeTracker};
use super::store::{self, ColumnInfo};
use super::types::PgType;
use super::upload::{on_blocking, read_body, read_form, require_multipart};
use crate::auth::{caller::Caller, extract::AuthUser, keys::Scope};
use crate::db::ident::Ident;
use crate::db::quota::{self, Counted};
use crate::db::tenant;
use crate::error::{ApiError, Problem};
use crate::query::rows::{RowsPage, RowsParams};
use crate::state::AppState;
use crate::views::incremental::store::{record_changes, tracker};

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

/// The multipart form of a table upload.
#[derive(Debug, ToSchema)]
pub struct CreateTableForm {
    /// The Parquet file.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    pub file: String,
    /// A letter or `_`, then letters, digits and `_`; at most 63 characters, not a reserved SQL
    /// word, not starting with `pg_` (surrounding blanks are trimmed).
    #[schema(pattern = r"^\s*[A-Za-z_][A-Za-z0-9_]{0,62}\s*$")]
    pub table_name: String,
    /// A JSON list of `{"column_name", "column_type"}` overriding the file's types.
    pub columns: Option<String>,
    /// A JSON list of column lists to index, e.g. `[["source"], ["record_timestamp"]]`.
    pub indexes: Option<String>,
    /// A JSON list of column lists that are unique keys (their columns become `NOT NULL`).
    pub unique: Option<String>,
}

/// The form of a Parquet upload to `POST /tables/{name}/rows/`.
#[derive(Debug, ToSchema)]
pub struct AddRowsForm {
    /// The Parquet file.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    pub file: String,
    /// `append` (default) or `replace`; overrides the query's `mode`.
    pub mode: Option<Mode>,
}

/// The JSON body of `POST /tables/{name}/rows/`: an array of row objects, or one row object.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum JsonRows {
    /// Rows.
    Many(Vec<serde_json::Map<String, serde_json::Value>>),
    /// One row.
    One(serde_json::Map<String, serde_json::Value>),
}

/// Create a table from a Parquet file (multipart: `file`, `table_name`, optional `columns`,
/// `indexes` and `unique`; at most 8 indexes of at most 8 columns).
#[utoipa::path(post, path = "/tables/create/", tag = "tables",
    request_body(content = CreateTableForm, content_type = "multipart/form-data", description = "`file` (Parquet), `table_name`, optional `columns` (JSON list of `{column_name, column_type}`), `indexes` and `unique` (JSON lists of column lists)"),
    responses((status = 201, body = TableBody), (status = 400, body = Problem), (status = 409, body = Problem, description = "the name is taken, or a quota is reached"), (status = 413, body = Problem),
        (status = 429, body = Problem, description = "all of the tenant's upload slots are busy")),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user = %user.user_id, table = tracing::field::Empty))]
pub async fn create_table(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: AuthUser,
    payload: Multipart,
) -> Result<HttpResponse, ApiError> {
    require_multipart(&req)?;
    let _slot = state.upload_slots.admit(&user.tenant)?;
    let settings = state.settings.clone();
    let fields = ["table_name", "columns", "indexes", "unique"];
    let mut form = read_form(payload, settings.upload_limit_bytes, &fields).await?;
    let raw_name = form.fields.remove("table_name").ok_or_else(|| {
        ApiError::bad_request("invalid_form", "the form field table_name is missing")
    })?;
    let name = table_name(raw_name.trim())?;
    tracing::Span::current().record("table", tracing::field::display(name.as_str()));
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
    let plan = on_blocking(move || parquet::plan(&plan_path, declared.as_deref())).await??;
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

    let field = |f: &str| form.fields.get(f).map(String::as_str);
    let specs = indexes::declared(field("indexes"), field("unique"), &plan)?;
    let mut tx = tenant::begin_as(&state.pool, &tenant, settings.tenant_statement_timeout).await?;
    store::create_table(&mut tx, &tenant, &name, &plan).await?;
    copy_file(
        &mut tx,
        &tenant,
        &name,
        plan,
        path,
        settings.tenant_storage_bytes,
        RangeTracker::default(),
    )
    .await?;
    indexes::create_declared(
        &mut tx,
        &tenant,
        &name,
        &specs,
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
    security(("jwt" = []), ("api_key" = [])))]
#[tracing::instrument(skip_all, fields(user = %caller.user_id()))]
pub async fn list_tables(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let user = caller.require(Scope::List)?;
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
    security(("jwt" = []), ("api_key" = [])))]
#[tracing::instrument(skip_all, fields(user = %caller.user_id(), table = %path.as_str()))]
pub async fn describe_table(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = lookup_name(&path)?;
    let user = caller.require(Scope::TablesRead(&name))?;
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
#[tracing::instrument(skip_all, fields(user = %user.user_id, table = %path.as_str()))]
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
    params(("name" = String, Path, description = "table name"), RowsParams),
    responses((status = 200, description = "rows: a JSON page, or a CSV or Parquet export",
            content((RowsPage = "application/json"), (String = "text/csv"), (Vec<u8> = "application/vnd.apache.parquet"))),
        (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "the table stayed locked past the lock timeout (`lock_timeout`)"),
        (status = 429, body = Problem, description = "all of the tenant's read slots are busy")),
    security(("jwt" = []), ("api_key" = [])))]
#[tracing::instrument(skip_all, fields(user = %caller.user_id(), table = %path.as_str()))]
pub async fn list_rows(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let name = lookup_name(&path)?;
    let user = caller.require(Scope::TablesRead(&name))?;
    crate::query::rows::read(
        &state.pool,
        &state.read_slots,
        crate::query::rows::ReadLimits::from_settings(&state.settings),
        (user.user_id, crate::query::rows::Kind::Table),
        user.tenant,
        name,
        &query,
    )
    .await
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

/// Add rows to a table: a Parquet file (multipart `file`, optional `mode`), or a JSON array of
/// row objects (`application/json`), or NDJSON (`application/x-ndjson`).
#[utoipa::path(post, path = "/tables/{name}/rows/", tag = "tables",
    params(("name" = String, Path, description = "table name"), ("mode" = Option<Mode>, Query, description = "append (default) or replace")),
    request_body(description = "a Parquet file, a JSON array of row objects (or one object), or NDJSON (one row object a line)",
        content((AddRowsForm = "multipart/form-data"), (JsonRows = "application/json"), (String = "application/x-ndjson"))),
    responses((status = 200, body = RowsWritten), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "the tenant's storage quota would be exceeded, or the table stayed locked past the lock timeout"), (status = 413, body = Problem), (status = 415, body = Problem),
        (status = 429, body = Problem, description = "all of the tenant's upload slots are busy")),
    security(("jwt" = []), ("api_key" = [])))]
#[tracing::instrument(skip_all, fields(user = %caller.user_id(), table = %path.as_str()))]
pub async fn add_rows(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<RowsQueryString>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let name = lookup_name(&path)?;
    let mut mode = match query.mode.as_deref() {
        Some(text) => parse_mode(text)?,
        None => Mode::Append,
    };
    // Checked again below for a mode sent in the form.
    let user = caller.require(Scope::rows_written(&name, mode == Mode::Replace))?;
    let row = store::find(&state.pool, user.user_id, &name).await?;
    let tenant = user.tenant.clone();
    // Before the body is read: the slot bounds the connections and the memory one tenant's
    // uploads take.
    let _slot = state.upload_slots.admit(&tenant)?;
    let columns = store::columns(&state.pool, &tenant, &name).await?;
    let settings = state.settings.clone();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();

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
        let plan = on_blocking(move || parquet::plan(&plan_path, Some(&declared))).await??;
        Source::File(file, plan)
    } else if content_type.starts_with("application/json")
        || content_type.starts_with("application/x-ndjson")
        || content_type.starts_with("application/jsonl")
    {
        let ndjson = !content_type.starts_with("application/json");
        let body = read_body(payload, settings.rows_body_limit_bytes).await?;
        let table: Vec<(String, PgType)> = columns
            .iter()
            .map(|c| {
                PgType::parse(&c.column_type)
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
            on_blocking(move || json_rows::json_rows(&body, ndjson, &table)).await??;
        Source::Json(plan, batches)
    } else {
        return Err(ApiError::UnsupportedMediaType {
            detail: "send rows as multipart/form-data (a Parquet file), application/json (an array of objects) or application/x-ndjson".to_owned(),
        });
    };
    let (Source::File(_, plan) | Source::Json(plan, _)) = &source;
    let tracker = tracker(&state.pool, user.user_id, &row.table_name, &plan.columns).await?;
    let mut tx = tenant::begin_as(&state.pool, &tenant, settings.tenant_statement_timeout).await?;
    if mode == Mode::Replace {
        caller.require(Scope::rows_written(&name, true))?;
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
                tracker.clone(),
            )
            .await?;
            drop(file);
            written
        }
        Source::Json(plan, batches) => {
            copy_rows(
                &mut tx,
                &tenant,
                &name,
                plan,
                batches,
                settings.tenant_storage_bytes,
                tracker.clone(),
            )
            .await?
        }
    };
    let row_count = store::row_count(&mut tx, &tenant, &name).await?;
    let mut tx = tx.into_service().await?;
    store::bump_change_count(&mut tx, row.table_id).await?;
    record_changes(&mut tx, user.user_id, &row.table_name, mode, &tracker).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(RowsWritten {
        table_name: row.table_name,
        mode,
        rows_written: written,
        row_count,
    }))
}
