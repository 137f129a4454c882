//! Handlers of `/views/...`.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::incremental::{self, IncrementalSpec};
use super::refresh::{
    Refreshed, Trigger, refresh_view as run_refresh, tenant_sql_error, view_sql_error,
};
use super::store::{self, RefreshRecord, ViewRow, lookup_name};
use super::{resolved, sandbox};
use crate::auth::caller::Caller;
use crate::auth::extract::AuthUser;
use crate::auth::keys::Scope;
use crate::channels::store as channels_store;
use crate::channels::store::ChannelBody;
use crate::db::ident::{ColumnIdent, Ident};
use crate::db::quota::{self, Counted};
use crate::db::tenant;
use crate::error::{ApiError, Problem};
use crate::jobs::store as jobs_store;
use crate::jobs::store::JobBody;
use crate::query::rows::{RowsPage, RowsParams};
use crate::state::AppState;
use crate::tables::name::table_name;
use crate::tables::store::{self as tables_store, ColumnInfo};

/// The body of `POST /views/create/`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateView {
    /// Name of the view (table-name rules; surrounding blanks are trimmed).
    #[schema(pattern = r"^\s*[A-Za-z_][A-Za-z0-9_]{0,62}\s*$")]
    pub view_name: String,
    /// One read-only SELECT (WITH allowed) over your own tables and views.
    #[schema(min_length = 1)]
    pub sql_query: String,
    /// Columns that identify a row: makes refreshes concurrent, so readers are never blocked.
    #[schema(min_items = 1)]
    pub unique_key: Option<Vec<String>>,
    /// Refresh only the time buckets appends touched (see `IncrementalSpec`); the view is then
    /// kept as a table the service maintains. Not with `unique_key`.
    pub incremental: Option<IncrementalSpec>,
}

/// A view as the API describes it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ViewBody {
    /// The view's name.
    pub view_name: String,
    /// The checked SQL it runs.
    pub sql_query: String,
    /// Columns and types.
    pub columns: Vec<ColumnInfo>,
    /// Rows now.
    pub row_count: i64,
    /// The unique key, if any.
    pub unique_key: Option<Vec<String>>,
    /// Always refreshed (calls `now()`, `random()`, ...).
    pub volatile: bool,
    /// Tables and views it reads.
    pub base_relations: Vec<String>,
    /// Its time bucket, when it is refreshed incrementally.
    pub incremental: Option<IncrementalSpec>,
    /// The latest refresh.
    pub last_refresh: Option<RefreshRecord>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Jobs that refresh it.
    pub jobs: Vec<JobBody>,
    /// Channels that watch it.
    pub channels: Vec<ChannelBody>,
}

/// A view in a listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct ViewSummary {
    /// The view's name.
    pub view_name: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A failed unique index is the `unique_key` field's fault, not the SQL's: say so.
fn unique_key_error(e: sqlx::Error) -> ApiError {
    match &e {
        // An unknown column, a system column (`ctid`: feature_not_supported), a type without
        // a btree ordering (`xmin`, `json`, `point`: undefined_object).
        sqlx::Error::Database(db)
            if matches!(db.code().as_deref(), Some("42703" | "0A000" | "42704")) =>
        {
            ApiError::bad_request(
                "invalid_unique_key",
                format!(
                    "unique_key: {}; list columns of the view's result",
                    db.message()
                ),
            )
        }
        _ => tenant_sql_error(e),
    }
}

async fn describe(state: &AppState, tenant: &Ident, view: ViewRow) -> Result<ViewBody, ApiError> {
    let name = lookup_name(&view.view_name)?;
    let columns = tables_store::columns(&state.pool, tenant, &name).await?;
    let mut tx =
        tenant::begin_as(&state.pool, tenant, state.settings.tenant_statement_timeout).await?;
    let row_count = tables_store::row_count(&mut tx, tenant, &name).await?;
    tx.commit().await?;
    let incremental = incremental::store::load(&state.pool, view.view_id)
        .await?
        .map(|inc| IncrementalSpec {
            bucket_column: inc.bucket_column,
            source_column: inc.source_column,
        });
    let last_refresh = store::last_refresh(&state.pool, view.view_id).await?;
    let mut last_runs =
        crate::jobs::runs::last_runs(&state.pool, view.user_id, Some(view.view_id)).await?;
    let jobs = jobs_store::list(&state.pool, view.user_id, Some(view.view_id))
        .await?
        .into_iter()
        .map(|j| {
            let last = last_runs.remove(&j.job_id);
            JobBody::new(j, last)
        })
        .collect();
    let channels = channels_store::list(&state.pool, view.user_id, Some(view.view_id))
        .await?
        .into_iter()
        .map(ChannelBody::from)
        .collect();
    Ok(ViewBody {
        view_name: view.view_name,
        sql_query: view.sql_query,
        columns,
        row_count,
        unique_key: view.unique_key,
        volatile: view.volatile,
        base_relations: view.base_relations,
        incremental,
        last_refresh,
        created_at: view.created_at,
        jobs,
        channels,
    })
}

/// Create a materialized view from one checked SELECT, filled at once.
#[utoipa::path(post, path = "/views/create/", tag = "views", request_body = CreateView,
    responses((status = 201, body = ViewBody), (status = 400, body = Problem),
        (status = 409, body = Problem, description = "the name is taken, or a quota is reached"),
        (status = 429, body = Problem, description = "the tenant's heavy-work slots are busy")),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, view = tracing::field::Empty))]
pub async fn create_view(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<CreateView>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let name = table_name(body.view_name.trim())?;
    tracing::Span::current().record("view", name.as_str());
    let tenant = user.tenant.clone();
    let own = store::relation_names(&state.pool, user.user_id).await?;
    if own.contains(name.as_str()) {
        return Err(store::name_taken(&name));
    }
    let checked =
        sandbox::check_on_own_stack(body.sql_query.clone(), tenant.as_str().to_owned(), own)
            .await
            .map_err(|rejected| ApiError::bad_request("sql_rejected", rejected.0))?;
    if body.incremental.is_some() && body.unique_key.is_some() {
        return Err(ApiError::bad_request(
            "invalid_incremental",
            "incremental views take no unique_key: their refreshes never block readers anyway",
        ));
    }
    let unique_key = match &body.unique_key {
        Some(columns) if columns.is_empty() => {
            return Err(ApiError::bad_request(
                "invalid_unique_key",
                "unique_key names no column",
            ));
        }
        Some(columns)
            if columns
                .iter()
                .enumerate()
                .any(|(i, c)| columns[..i].contains(c)) =>
        {
            return Err(ApiError::bad_request(
                "invalid_unique_key",
                "unique_key lists a column twice",
            ));
        }
        Some(columns) => Some(
            columns
                .iter()
                .map(|c| {
                    ColumnIdent::new(c.clone())
                        .map_err(|e| ApiError::bad_request("invalid_unique_key", e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };

    let _slot = state.tenant_slots.admit(&tenant)?;
    let timeout = state.settings.tenant_statement_timeout;
    let mut tx = tenant::begin_as(&state.pool, &tenant, timeout).await?;
    store::create_view(&mut tx, &tenant, &name, &checked.sql)
        .await
        .map_err(|e| {
            // The name is no table's or view's (checked above) but the schema has a relation
            // of that name: one of the tenant's indexes (`ix_...`, or a view's key index).
            if let sqlx::Error::Database(db) = &e
                && db.code().as_deref() == Some("42P07")
            {
                return store::name_taken(&name);
            }
            // The checked text is the user's without trailing semicolons and blanks: a
            // position past it is in `WITH NO DATA`, which the user did not write.
            view_sql_error(e, &checked.sql, &store::create_view_head(&tenant, &name))
        })?;
    if let Some(columns) = &unique_key {
        store::create_unique_index(&mut tx, &tenant, &name, columns)
            .await
            .map_err(unique_key_error)?;
    }
    let mut tx = tx.into_service().await?;
    // Nothing of the query has run yet: decide on what PostgreSQL resolved it to. A refusal
    // drops the transaction, and the view with it.
    let resolved = resolved::check(&mut tx, &tenant, &name, sandbox::ALLOWED_FUNCTIONS)
        .await?
        .map_err(|refused| ApiError::bad_request("sql_rejected", refused.0))?;
    quota::check_locked(
        &mut tx,
        user.user_id,
        Counted::Relations,
        state.settings.max_tables_per_tenant,
    )
    .await?;
    let volatile = checked.volatile || resolved.volatile;
    let made_incremental = match &body.incremental {
        Some(spec) => Some(
            incremental::create(
                &mut tx,
                user.user_id,
                &tenant,
                &name,
                &checked.sql,
                spec,
                volatile,
            )
            .await?
            .map_err(|refused| ApiError::bad_request("invalid_incremental", refused.to_string()))?,
        ),
        None => None,
    };
    let view = store::register(
        &mut tx,
        user.user_id,
        &name,
        &checked.sql,
        body.unique_key.as_deref(),
        volatile,
        &resolved.relations,
    )
    .await?;
    if let Some(prepared) = &made_incremental {
        incremental::finish(&mut tx, &tenant, &name, prepared, view.view_id)
            .await?
            .map_err(|refused| ApiError::bad_request("invalid_incremental", refused.to_string()))?;
    }
    tx.commit().await?;
    // The first fill is a refresh like any other; if it fails, the empty view goes again.
    if let Err(e) = run_refresh(
        &state.pool,
        timeout,
        state.settings.tenant_storage_bytes,
        &tenant,
        &view,
        Trigger::Api,
    )
    .await
    {
        let mut tx = tenant::begin_as(&state.pool, &tenant, timeout).await?;
        if made_incremental.is_some() {
            incremental::store::drop_view(&mut tx, &tenant, &name, view.view_id, true).await?;
        } else {
            store::drop_view(&mut tx, &tenant, &name, true).await?;
        }
        let mut tx = tx.into_service().await?;
        store::forget_dropped(&mut tx, user.user_id, &tenant).await?;
        tx.commit().await?;
        return Err(e);
    }
    tracing::info!(view = %name.as_str(), "created a view");
    Ok(HttpResponse::Created().json(describe(&state, &tenant, view).await?))
}

/// The caller's views.
#[utoipa::path(get, path = "/views/", tag = "views",
    responses((status = 200, body = Vec<ViewSummary>)), security(("jwt" = []), ("api_key" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %caller.user_id()))]
pub async fn list_views(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let user = caller.require(Scope::List)?;
    let views: Vec<ViewSummary> = store::list(&state.pool, user.user_id)
        .await?
        .into_iter()
        .map(|v| ViewSummary {
            view_name: v.view_name,
            created_at: v.created_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

/// One view: SQL, columns, row count, last refresh.
#[utoipa::path(get, path = "/views/{name}/", tag = "views",
    params(("name" = String, Path, description = "view name")),
    responses((status = 200, body = ViewBody), (status = 404, body = Problem)), security(("jwt" = []), ("api_key" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %caller.user_id(), view = %path.as_str()))]
pub async fn describe_view(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = lookup_name(&path)?;
    let user = caller.require(Scope::ViewsRead(&name))?;
    let view = store::find(&state.pool, user.user_id, &name).await?;
    let tenant = user.tenant.clone();
    Ok(HttpResponse::Ok().json(describe(&state, &tenant, view).await?))
}

/// Refresh now (skipped when nothing it reads changed, unless it is volatile).
#[utoipa::path(post, path = "/views/{name}/refresh/", tag = "views",
    params(("name" = String, Path, description = "view name")),
    responses((status = 200, body = Refreshed), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "the tenant's storage quota would be exceeded"),
        (status = 429, body = Problem, description = "the tenant's heavy-work slots are busy")),
    security(("jwt" = []), ("api_key" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %caller.user_id(), view = %path.as_str()))]
pub async fn refresh_view(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = lookup_name(&path)?;
    let user = caller.require(Scope::ViewsRefresh(&name))?;
    let view = store::find(&state.pool, user.user_id, &name).await?;
    let tenant = user.tenant.clone();
    let _slot = state.tenant_slots.admit(&tenant)?;
    let record = run_refresh(
        &state.pool,
        state.settings.tenant_statement_timeout,
        state.settings.tenant_storage_bytes,
        &tenant,
        &view,
        Trigger::Api,
    )
    .await?;
    Ok(HttpResponse::Ok().json(record))
}

/// Rows of a view: the same parameters as table rows.
#[utoipa::path(get, path = "/views/{name}/rows/", tag = "views",
    params(("name" = String, Path, description = "view name"), RowsParams),
    responses((status = 200, description = "rows: a JSON page, or a CSV or Parquet export",
            content((RowsPage = "application/json"), (String = "text/csv"), (Vec<u8> = "application/vnd.apache.parquet"))),
        (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "a refresh kept the view locked past the lock timeout (`lock_timeout`)"),
        (status = 429, body = Problem, description = "all of the tenant's read slots are busy")),
    security(("jwt" = []), ("api_key" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %caller.user_id(), view = %path.as_str()))]
pub async fn list_view_rows(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let name = lookup_name(&path)?;
    let user = caller.require(Scope::ViewsRead(&name))?;
    crate::query::rows::read(
        &state.pool,
        &state.read_slots,
        crate::query::rows::ReadLimits::from_settings(&state.settings),
        (user.user_id, crate::query::rows::Kind::View),
        user.tenant,
        name,
        &query,
    )
    .await
}

/// Query of `DELETE /views/{name}/`.
#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    /// Also drop the views that read this one.
    #[serde(default)]
    pub cascade: bool,
}

/// Delete a view (409 while other views read it, unless `?cascade=true`).
#[utoipa::path(delete, path = "/views/{name}/", tag = "views",
    params(("name" = String, Path, description = "view name"), ("cascade" = Option<bool>, Query, description = "also drop the views that read this one")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)), security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, view = %path.as_str(), cascade = query.cascade))]
pub async fn delete_view(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    query: web::Query<DeleteQuery>,
) -> Result<HttpResponse, ApiError> {
    let name = lookup_name(&path)?;
    let view = store::find(&state.pool, user.user_id, &name).await?;
    let is_incremental = incremental::store::load(&state.pool, view.view_id)
        .await?
        .is_some();
    let tenant = user.tenant.clone();
    let mut tx = tenant::begin_as(
        &state.pool,
        &tenant,
        state.settings.tenant_statement_timeout,
    )
    .await?;
    if is_incremental {
        incremental::store::drop_view(&mut tx, &tenant, &name, view.view_id, query.cascade).await?;
    } else {
        store::drop_view(&mut tx, &tenant, &name, query.cascade).await?;
    }
    let mut tx = tx.into_service().await?;
    store::forget_dropped(&mut tx, user.user_id, &tenant).await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}
