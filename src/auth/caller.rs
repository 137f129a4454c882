//! The `Caller` extractor: a login session or an API key. Unlike `AuthUser` (sessions only), it
//! gives a handler no tenant until the handler names the scope it needs
//! ([`Caller::require`]): a session may do anything its user may, a key only what its scopes
//! say. So a route is open to keys only where a handler asks for a scope, and a route nobody
//! migrated stays closed to them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload, web};
use uuid::Uuid;

use super::extract::{AuthUser, authenticate, bearer_token};
use super::keys::{self, KeyAuth, RateState, Scope};
use crate::db::ident::Ident;
use crate::error::ApiError;
use crate::state::AppState;
use crate::telemetry;

/// Who is calling: a login session, or an API key with its scopes.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A login session's access token: everything its user may do.
    Session(AuthUser),
    /// An API key: only its scopes.
    Key(Arc<KeyAuth>),
}

/// What a handler may act as once its scope is granted.
#[derive(Debug, Clone)]
pub struct Granted {
    /// The owner of the session or key.
    pub user_id: Uuid,
    /// Their tenant role and schema.
    pub tenant: Ident,
}

impl Caller {
    /// The user, for logs (grants nothing).
    pub fn user_id(&self) -> Uuid {
        match self {
            Self::Session(user) => user.user_id,
            Self::Key(key) => key.user_id,
        }
    }

    /// The tenant to act as, when the caller may do `scope`; 403 `missing_scope` naming the
    /// scope otherwise.
    pub fn require(&self, scope: Scope<'_>) -> Result<Granted, ApiError> {
        match self {
            Self::Session(user) => Ok(Granted {
                user_id: user.user_id,
                tenant: user.tenant.clone(),
            }),
            Self::Key(key) if key.grants.iter().any(|g| scope.granted_by(g)) => Ok(Granted {
                user_id: key.user_id,
                tenant: key.tenant.clone(),
            }),
            Self::Key(_) => {
                let needed = scope.needed();
                let detail = match scope {
                    Scope::TablesReplace(_) => format!(
                        "no API key may replace a table's rows ({needed}); use a login session"
                    ),
                    _ => format!("this API key lacks the scope {needed}"),
                };
                Err(ApiError::forbidden("missing_scope", detail)
                    .with_members(serde_json::json!({ "scope": needed })))
            }
        }
    }

    /// Authenticates `token` (a JWT or a key) for `req`. A key is also counted against its
    /// rate limit: the answer carries `RateLimit-*` headers (see [`rate_limit_headers`]), and
    /// over the limit this is a 429.
    pub async fn from_token(
        state: &AppState,
        req: &HttpRequest,
        token: &str,
    ) -> Result<Self, ApiError> {
        if !keys::is_key(token) {
            let user = authenticate(state, token).await?;
            telemetry::record_caller(req, user.user_id, user.tenant.as_str());
            return Ok(Self::Session(user));
        }
        let key = state
            .keys
            .authenticate(
                &state.pool,
                &keys::hash(token),
                state.settings.key_rate_limit_per_minute,
            )
            .await?;
        telemetry::record_caller(req, key.user_id, key.tenant.as_str());
        let admission = state.key_meter.admit(key.key_id, key.rate_limit);
        req.extensions_mut().insert(admission.state);
        if admission.new_window {
            let (pool, key_id) = (state.pool.clone(), key.key_id);
            // Not awaited: the request does not wait for bookkeeping, and a failed write only
            // leaves `last_used_at` a minute older.
            tokio::spawn(async move {
                if let Err(e) = keys::touch(&pool, key_id).await {
                    tracing::warn!(error = %e, "recording an API key's last use failed");
                }
            });
        }
        if admission.refused {
            return Err(ApiError::Throttled {
                code: "rate_limited",
                detail: format!(
                    "this API key may make {} requests a minute; retry in {} s",
                    admission.state.limit, admission.state.reset_secs
                ),
                retry_after_secs: admission.state.reset_secs,
            });
        }
        Ok(Self::Key(key))
    }
}

impl FromRequest for Caller {
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
            Self::from_token(&state, &req, &token?).await
        })
    }
}

/// Adds the `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` headers to every
/// answer of a key-authenticated request (errors and streams included), from what
/// [`Caller::from_token`] left in the request.
pub async fn rate_limit_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut res = next.call(req).await?;
    let state = res.request().extensions().get::<RateState>().copied();
    if let Some(state) = state {
        let headers = res.headers_mut();
        for (name, value) in [
            ("ratelimit-limit", u64::from(state.limit)),
            ("ratelimit-remaining", u64::from(state.remaining)),
            ("ratelimit-reset", state.reset_secs),
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
    Ok(res)
}
