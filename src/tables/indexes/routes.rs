//! Handlers of `/tables/{name}/indexes/...`.

use actix_web::{HttpResponse, web};

use super::{IndexBody, IndexRequest};
use crate::auth::extract::AuthUser;
use crate::db::ident::Ident;
use crate::db::quota;
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use crate::tables::name::table_name;
use crate::tables::store;

/// A name in a path: an invalid one cannot exist, so it is a 404.
fn lookup(raw: &str, what: &str) -> Result<Ident, ApiError> {
    let not_found = || ApiError::NotFound {
        detail: format!("no {what} named {raw:?}"),
    };
    match what {
        "table" => table_name(raw).map_err(|_| not_found()),
        _ => Ident::new(raw).map_err(|_| not_found()),
    }
}

/// Add an index with `CREATE INDEX CONCURRENTLY`: reads and writes of the table go on while it
/// builds. At most 8 indexes per table and 8 columns per index; the index counts in the storage
/// quota.
#[utoipa::path(post, path = "/tables/{name}/indexes/", tag = "tables",
    params(("name" = String, Path, description = "table name")),
    request_body = IndexRequest,
    responses((status = 201, body = IndexBody),
        (status = 400, body = Problem, description = "an unknown or unindexable column, too many indexes, or the build failed (duplicates under a unique index, say); nothing is left behind"),
        (status = 409, body = Problem, description = "the tenant is over its storage quota, or the table stayed locked past the lock timeout"),
        (status = 429, body = Problem, description = "all of the tenant's heavy-work slots are busy")),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user = %user.user_id, table = %path.as_str()))]
pub async fn create_index(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    body: web::Json<IndexRequest>,
) -> Result<HttpResponse, ApiError> {
    let name = lookup(&path, "table")?;
    store::find(&state.pool, user.user_id, &name).await?;
    let tenant = user.tenant.clone();
    let _slot = state.tenant_slots.admit(&tenant)?;
    let columns = store::columns(&state.pool, &tenant, &name).await?;
    let existing = super::list(&state.pool, &tenant, &name).await?;
    let spec = super::validate(std::slice::from_ref(&body), existing.len(), &columns)?
        .pop()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("BUG: one request, no spec")))?;
    let quota_bytes = state.settings.tenant_storage_bytes;
    quota::check_storage(
        super::storage_bytes(&state.pool, &tenant).await?,
        quota_bytes,
    )?;
    let index = spec.name.clone();
    let timeout = state.settings.tenant_statement_timeout;
    super::build_concurrently(&state.pool, &tenant, &name, spec, timeout).await?;
    if let Err(over) = quota::check_storage(
        super::storage_bytes(&state.pool, &tenant).await?,
        quota_bytes,
    ) {
        super::drop_given_up(&state.pool, &tenant, &index, timeout).await?;
        return Err(over);
    }
    // Builds of one tenant may pass the count at once: one that finds the table over the
    // limit gives way (both may; a retry then succeeds).
    let now = super::list(&state.pool, &tenant, &name).await?;
    if now.len() > super::MAX_INDEXES_PER_TABLE {
        super::drop_given_up(&state.pool, &tenant, &index, timeout).await?;
        return Err(ApiError::bad_request(
            "too_many_indexes",
            format!(
                "a table may have at most {} indexes; another build of this table finished first",
                super::MAX_INDEXES_PER_TABLE
            ),
        ));
    }
    let body = now
        .into_iter()
        .find(|i| i.index_name == index.as_str())
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the index just built is gone")))?;
    tracing::info!(index = %index.as_str(), "built an index");
    Ok(HttpResponse::Created().json(body))
}

/// The table's indexes: name, columns, unique, size, valid.
#[utoipa::path(get, path = "/tables/{name}/indexes/", tag = "tables",
    params(("name" = String, Path, description = "table name")),
    responses((status = 200, body = Vec<IndexBody>)),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user = %user.user_id, table = %path.as_str()))]
pub async fn list_indexes(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = lookup(&path, "table")?;
    store::find(&state.pool, user.user_id, &name).await?;
    Ok(HttpResponse::Ok().json(super::list(&state.pool, &user.tenant, &name).await?))
}

/// Drop an index with `DROP INDEX CONCURRENTLY`.
#[utoipa::path(delete, path = "/tables/{name}/indexes/{index}/", tag = "tables",
    params(("name" = String, Path, description = "table name"), ("index" = String, Path, description = "index name, as listed")),
    responses((status = 204),
        (status = 409, body = Problem, description = "the table stayed locked past the lock timeout"),
        (status = 429, body = Problem, description = "all of the tenant's heavy-work slots are busy")),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user = %user.user_id, table = %path.0.as_str()))]
pub async fn delete_index(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (table, index) = path.into_inner();
    let name = lookup(&table, "table")?;
    store::find(&state.pool, user.user_id, &name).await?;
    let tenant = user.tenant.clone();
    let index_name = lookup(&index, "index")?;
    let known = super::list(&state.pool, &tenant, &name)
        .await?
        .iter()
        .any(|i| i.index_name == index_name.as_str());
    if !known {
        return Err(ApiError::NotFound {
            detail: format!("table {:?} has no index named {index:?}", name.as_str()),
        });
    }
    let _slot = state.tenant_slots.admit(&tenant)?;
    super::drop_concurrently(
        &state.pool,
        &tenant,
        &index_name,
        state.settings.tenant_statement_timeout,
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
