//! The `AuthUser` extractor: a handler that takes one is authenticated by a login session (never
//! by an API key; see `auth::caller` for the routes keys may use).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use uuid::Uuid;

use super::jwt::{Claims, TokenType};
use super::store;
use crate::db::ident::Ident;
use crate::error::ApiError;
use crate::state::AppState;
use crate::telemetry;

/// The caller, from a valid access token of a live session.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// The user id (`sub`).
    pub user_id: Uuid,
    /// The session the token was minted in (`sid`).
    pub session_id: Uuid,
    /// The user's tenant role and schema.
    pub tenant: Ident,
    /// When the access token expires (seconds since the epoch): streams end then.
    pub expires_at: i64,
}

/// Checks an access token and its session: the caller, or 401. An API key is refused with 403
/// `key_not_allowed` without a lookup: routes that take an `AuthUser` are for login sessions
/// only (keys reach only the routes that take a `Caller` and name a scope).
pub async fn authenticate(state: &AppState, token: &str) -> Result<AuthUser, ApiError> {
    if super::keys::is_key(token) {
        return Err(ApiError::forbidden(
            "key_not_allowed",
            "API keys cannot be used on this route; it needs a login session's access token",
        ));
    }
    let claims = state.jwt.verify(token, TokenType::Access)?;
    authenticate_claims(state, claims).await
}

/// Checks the session of already verified access-token claims: the caller, or 401. Split from
/// [`authenticate`] for the listen stream, which registers with the hub between the two.
pub async fn authenticate_claims(state: &AppState, claims: Claims) -> Result<AuthUser, ApiError> {
    let user = |tenant| AuthUser {
        user_id: claims.sub,
        session_id: claims.sid,
        tenant,
        expires_at: claims.exp,
    };
    if let Some(tenant) = state.sessions.get(claims.sid, claims.sub) {
        return Ok(user(tenant));
    }
    let ticket = state.sessions.ticket();
    let live = store::live_session_tenant(&state.pool, claims.sid, claims.sub)
        .await?
        .ok_or_else(|| {
            ApiError::unauthorized(
                "token_revoked",
                "the session of this token has been revoked",
            )
        })?;
    let tenant = Ident::new(live.tenant_role).map_err(|e| {
        ApiError::Internal(anyhow::anyhow!("BUG: stored tenant role is invalid: {e}"))
    })?;
    let lifetime = Duration::from_millis(u64::try_from(live.lifetime_ms).unwrap_or(0));
    state
        .sessions
        .remember(ticket, claims.sid, claims.sub, tenant.clone(), lifetime);
    Ok(user(tenant))
}

/// The token of `Authorization: JWT <t>` or `Authorization: Bearer <t>` (scheme in any case).
pub fn bearer_token(req: &HttpRequest) -> Result<String, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "token_missing",
            "missing Authorization header; send `Authorization: Bearer <access token>` (or `JWT <access token>`)",
        ));
    };
    let value = value.to_str().map_err(|_| {
        ApiError::unauthorized("token_invalid", "the Authorization header is not ASCII")
    })?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    let token = token.trim();
    if !(scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("jwt"))
        || token.is_empty()
    {
        return Err(ApiError::unauthorized(
            "token_invalid",
            "the Authorization header must be `Bearer <token>` or `JWT <token>`",
        ));
    }
    Ok(token.to_owned())
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer_token(req);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let req = req.clone();
        Box::pin(async move {
            let state = state.ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("BUG: AppState is not registered"))
            })?;
            let user = authenticate(&state, &token?).await?;
            telemetry::record_caller(&req, user.user_id, user.tenant.as_str());
            Ok(user)
        })
    }
}
