//! Handlers of `/auth/keys/...`: create, list and revoke API keys. They take an `AuthUser`, so
//! only a login session manages keys: a key can never make, see or revoke keys.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{self as keys, Grant, KeyRow, MAX_RATE_LIMIT_PER_MINUTE, MAX_SCOPES, NewKeyRow};
use crate::auth::extract::AuthUser;
use crate::error::{ApiError, Problem};
use crate::state::AppState;

/// The body of `POST /auth/keys/`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label for people (1 to 100 characters), e.g. where the key is used.
    #[schema(example = "wall dashboard", min_length = 1, max_length = 100)]
    pub name: String,
    /// What the key may do: `views:read:<name>`, `tables:read:<name>`, `tables:append:<name>`,
    /// `channels:listen:<id>`, `views:refresh:<name>`, `*:read`.
    #[schema(example = json!(["views:read:hourly_usage"]), min_items = 1)]
    pub scopes: Vec<String>,
    /// When the key stops working (in the future); never when absent.
    pub expires_at: Option<DateTime<Utc>>,
    /// Requests per minute this key may make; the server's default when absent.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub rate_limit_per_minute: Option<u32>,
}

/// An API key as listed: never the key itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyBody {
    /// The key's id (for `DELETE /auth/keys/{id}/`).
    pub id: Uuid,
    /// Its label.
    pub name: String,
    /// The key's first characters, to tell keys apart (not a secret, not enough to use it).
    #[schema(example = "tdc_q3Zx9LmP")]
    pub prefix: String,
    /// Its scopes, names folded to lower case.
    pub scopes: Vec<String>,
    /// Requests per minute it may make (its own limit, or the server's default).
    pub rate_limit_per_minute: u32,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last used, to within about a minute; null when never used.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it stops working; null for never.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new key: the listing's fields and the key, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    /// The key's fields.
    #[serde(flatten)]
    pub body: KeyBody,
    /// The key: send it as `Authorization: Bearer <key>`. It is not stored and cannot be
    /// shown again.
    #[schema(example = "tdc_q3Zx9LmPexampleexampleexampleexampleexam")]
    pub key: String,
}

fn key_body(row: KeyRow, state: &AppState) -> KeyBody {
    KeyBody {
        id: row.key_id,
        name: row.name,
        prefix: row.prefix,
        scopes: row.scopes,
        rate_limit_per_minute: row
            .rate_limit_per_minute
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(state.settings.key_rate_limit_per_minute.get()),
        created_at: row.created_at,
        last_used_at: row.last_used_at,
        expires_at: row.expires_at,
    }
}

/// The canonical scopes of a request, deduplicated in their order; 400 naming the first
/// invalid one.
fn canonical_scopes(raw: &[String]) -> Result<Vec<String>, ApiError> {
    if raw.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_scope",
            "a key needs at least one scope",
        ));
    }
    if raw.len() > MAX_SCOPES {
        return Err(ApiError::bad_request(
            "invalid_scope",
            format!("a key may hold at most {MAX_SCOPES} scopes"),
        ));
    }
    let mut scopes: Vec<String> = Vec::with_capacity(raw.len());
    for scope in raw {
        let grant = Grant::parse(scope.trim())?;
        // The rules of table and view names beyond the identifier (no reserved words, no
        // `pg_`), so a scope never names what cannot exist.
        if let Some(name) = grant.name() {
            crate::tables::name::table_name(name.as_str()).map_err(|e| {
                ApiError::bad_request(
                    "invalid_scope",
                    format!("scope {scope:?} does not name a table or view: {e}"),
                )
                .with_members(serde_json::json!({ "scope": scope }))
            })?;
        }
        let canonical = grant.to_string();
        if !scopes.contains(&canonical) {
            scopes.push(canonical);
        }
    }
    Ok(scopes)
}

/// Create an API key. The answer holds the key, once: only its hash is stored.
#[utoipa::path(post, path = "/auth/keys/", tag = "auth", request_body = CreateKey,
    responses((status = 201, body = CreatedKey),
        (status = 400, body = Problem, description = "an unknown or invalid scope (`invalid_scope`, naming it), a bad name, expiry or rate limit"),
        (status = 409, body = Problem, description = "the account has its most keys")),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id))]
pub async fn create_key(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<CreateKey>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner();
    let name = request.name.trim();
    if !key_name_is_plain(name) {
        return Err(ApiError::bad_request(
            "invalid_key_name",
            "a key's name must be 1 to 100 characters, with something visible and without \
             control or format characters (bidirectional overrides, zero-width characters)",
        ));
    }
    let scopes = canonical_scopes(&request.scopes)?;
    if request.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(ApiError::bad_request(
            "invalid_expiry",
            "expires_at must be in the future",
        ));
    }
    let rate_limit = match request.rate_limit_per_minute {
        None => None,
        Some(n @ 1..=MAX_RATE_LIMIT_PER_MINUTE) => Some(i32::try_from(n).map_err(|_| {
            ApiError::Internal(anyhow::anyhow!("BUG: the rate limit bound exceeds i32"))
        })?),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_rate_limit",
                format!("rate_limit_per_minute must be 1 to {MAX_RATE_LIMIT_PER_MINUTE}"),
            ));
        }
    };
    let key = keys::generate();
    let row = keys::create(
        &state.pool,
        user.user_id,
        &key,
        NewKeyRow {
            name,
            scopes: &scopes,
            rate_limit_per_minute: rate_limit,
            expires_at: request.expires_at,
        },
    )
    .await?;
    tracing::info!(key_id = %row.key_id, "created an API key");
    Ok(HttpResponse::Created().json(CreatedKey {
        body: key_body(row, &state),
        key: key.secret,
    }))
}

/// The caller's API keys, newest first (never the keys themselves).
#[utoipa::path(get, path = "/auth/keys/", tag = "auth",
    responses((status = 200, body = Vec<KeyBody>)), security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id))]
pub async fn list_keys(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let keys: Vec<KeyBody> = keys::list(&state.pool, user.user_id)
        .await?
        .into_iter()
        .map(|row| key_body(row, &state))
        .collect();
    Ok(HttpResponse::Ok().json(keys))
}

/// Revoke an API key: refused at once on every process, its streams end.
#[utoipa::path(delete, path = "/auth/keys/{id}/", tag = "auth",
    params(("id" = Uuid, Path, description = "key id")),
    responses((status = 204), (status = 404, body = Problem)), security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id, key = %path.as_str()))]
pub async fn delete_key(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key_id = ApiError::id_in_path(&path, "API key")?;
    keys::delete(&state.pool, user.user_id, key_id).await?;
    // This process at once; the others (and this one's streams, again) from the notice.
    state.keys.revoked();
    state
        .hub
        .end_session(key_id, crate::channels::hub::SessionEnd::Revoked);
    tracing::info!(%key_id, "revoked an API key");
    Ok(HttpResponse::NoContent().finish())
}

/// A key's name as its owner will read it in the listing: no control characters, no format
/// characters that hide or reorder text (a name must not pass for another), and at least one
/// character that is neither those nor white space.
fn key_name_is_plain(name: &str) -> bool {
    let hidden = |c: char| {
        c.is_control()
            || matches!(
                c.general_category(),
                GeneralCategory::Format
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
            )
    };
    (1..=100).contains(&name.chars().count())
        && !name.chars().any(hidden)
        && name.chars().any(|c| !c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::key_name_is_plain;

    #[test]
    fn key_names_that_hide_or_reorder_text_are_refused() {
        for name in [
            "dashboard",
            "billing service",
            "Zählerstand 7",
            "ダッシュボード",
        ] {
            assert!(key_name_is_plain(name), "{name:?} refused");
        }
        let long = "x".repeat(101);
        for name in [
            "",
            " ",
            "\u{3000}",
            "\u{202e}abc",
            "\u{200b}",
            "a\u{200d}b",
            "a\u{2066}b",
            "a\u{061c}b",
            "a\u{feff}",
            "a\u{2028}b",
            "tag\u{e0041}",
            "a\u{0007}",
            "a\nb",
            "a\u{0085}b",
            long.as_str(),
        ] {
            assert!(!key_name_is_plain(name), "{name:?} accepted");
        }
    }
}
