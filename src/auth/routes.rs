//! Handlers of `/auth/...`: registration, token pairs, rotation, logout and the caller.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use email_address::{EmailAddress, Options};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::AuthUser;
use super::jwt::TokenType;
use super::password;
use super::store::{self, Rotation, User};
use crate::db::{quota, tenant};
use crate::error::{ApiError, Problem};
use crate::state::AppState;

/// E-mail and password, for registration and login.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The account's e-mail; plus-addressed variants are distinct accounts.
    #[schema(example = "me@yingw787.com", format = Email, min_length = 3, max_length = 254)]
    pub primary_email: String,
    /// 8 to 1024 bytes.
    #[schema(example = "test1234", min_length = 8, max_length = 1024)]
    pub password: String,
}

/// An account as the API shows it (never the hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserBody {
    /// The user id.
    pub id: Uuid,
    /// The e-mail, domain lower-cased.
    pub primary_email: String,
    /// Registration time.
    pub created_at: DateTime<Utc>,
}

impl From<User> for UserBody {
    fn from(user: User) -> Self {
        Self {
            id: user.user_id,
            primary_email: user.primary_email,
            created_at: user.created_at,
        }
    }
}

/// The caller's account with its storage use.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeBody {
    /// The account.
    #[serde(flatten)]
    pub user: UserBody,
    /// Bytes the caller's tables and views take now (indexes and TOAST included).
    pub storage_bytes: i64,
    /// Bytes they may take (`TDC_TENANT_STORAGE_BYTES`); uploads and refreshes beyond it fail
    /// with 409 `storage_quota_exceeded`.
    pub storage_quota_bytes: u64,
}

/// A refresh token and an access token.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    /// Exchanged once at `/auth/tokens/refresh/` for a new pair.
    pub refresh: String,
    /// Sent as `Authorization: JWT <access>` or `Bearer <access>`.
    pub access: String,
}

/// A refresh token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The newest refresh token of the session.
    #[schema(min_length = 1)]
    pub refresh: String,
}

/// Validates an e-mail and normalises it: trimmed, domain lower-cased, local part kept.
pub fn normalise_email(raw: &str) -> Result<String, ApiError> {
    let raw = raw.trim();
    let options = Options::default()
        .without_display_text()
        .without_domain_literal();
    let invalid = || {
        ApiError::bad_request(
            "invalid_email",
            format!("{raw:?} is not a valid e-mail address"),
        )
    };
    let parsed = EmailAddress::parse_with_options(raw, options).map_err(|_| invalid())?;
    if raw.len() > 254 {
        return Err(invalid());
    }
    Ok(format!(
        "{}@{}",
        parsed.local_part(),
        parsed.domain().to_ascii_lowercase()
    ))
}

/// Register a user; also creates the user's tenant role and schema.
#[utoipa::path(post, path = "/auth/users/register/", tag = "auth", request_body = Credentials,
    responses((status = 201, body = UserBody), (status = 400, body = Problem), (status = 409, body = Problem)))]
// Never the credentials: no field is taken from the body.
#[tracing::instrument(skip_all, fields(user_id = tracing::field::Empty))]
pub async fn register_user(
    state: web::Data<AppState>,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let Credentials {
        primary_email,
        password: pw,
    } = body.into_inner();
    let email = normalise_email(&primary_email)?;
    password::validate(&pw)?;
    let hash = password::hash(pw).await?;

    // Random, not time-ordered: the tenant name derived from it is visible in the catalogs.
    let user_id = Uuid::new_v4();
    let mut tx = state.pool.begin().await?;
    let role = tenant::tenant_name(user_id);
    let user = store::insert_user(&mut tx, user_id, &email, &hash, role.as_str()).await?;
    tracing::Span::current().record("user_id", tracing::field::display(user_id));
    tenant::provision(&mut tx, user_id).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.user_id, "registered a user");
    Ok(HttpResponse::Created().json(UserBody::from(user)))
}

/// The client address for throttling: the peer, or behind a trusted proxy the right-most
/// `X-Forwarded-For` entry (the one the proxy added; entries left of it are the client's word).
/// IPv6 clients are keyed by their /64, which one subscriber usually holds whole.
fn client_ip(req: &HttpRequest, trust_forwarded: bool) -> IpAddr {
    let forwarded = || -> Option<IpAddr> {
        let header = req.headers().get("x-forwarded-for")?.to_str().ok()?;
        header.rsplit(',').next()?.trim().parse().ok()
    };
    let ip = trust_forwarded
        .then(forwarded)
        .flatten()
        .or_else(|| req.peer_addr().map(|a| a.ip()))
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 @ IpAddr::V4(_) => v4,
    }
}

async fn issue_pair(
    state: &AppState,
    user_id: Uuid,
    session_id: Uuid,
    refresh_jti: Uuid,
) -> Result<TokenPair, ApiError> {
    let settings = &state.settings;
    Ok(TokenPair {
        refresh: state.jwt.mint(
            TokenType::Refresh,
            user_id,
            session_id,
            refresh_jti,
            settings.refresh_token_ttl,
        )?,
        access: state.jwt.mint(
            TokenType::Access,
            user_id,
            session_id,
            Uuid::new_v4(),
            settings.access_token_ttl,
        )?,
    })
}

fn session_expiry(state: &AppState) -> DateTime<Utc> {
    let ttl = chrono::Duration::from_std(state.settings.refresh_token_ttl)
        .unwrap_or(chrono::Duration::days(1));
    Utc::now() + ttl
}

/// Log in: a new session with a refresh and an access token.
#[utoipa::path(post, path = "/auth/tokens/obtain/", tag = "auth", request_body = Credentials,
    responses((status = 200, body = TokenPair), (status = 401, body = Problem), (status = 429, body = Problem)))]
// Never the credentials or the tokens: the ids are recorded once the login succeeded.
#[tracing::instrument(skip_all, fields(user_id = tracing::field::Empty, session_id = tracing::field::Empty))]
pub async fn obtain_tokens(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let ip = client_ip(&req, state.settings.trust_forwarded_for);
    state.login_throttle.check_ip(ip)?;
    let Credentials {
        primary_email,
        password: pw,
    } = body.into_inner();
    // A malformed e-mail cannot match an account: answer like any failed login (after the same
    // work), without sending it to the database or using it as a throttle key.
    let email = normalise_email(&primary_email).ok();
    let throttle_key = email.as_ref().map(|email| email.to_lowercase());
    if let Some(key) = &throttle_key {
        state.login_throttle.check_account(key, ip)?;
    }
    let user = match &email {
        Some(email) => store::find_user_by_email(&state.pool, email).await?,
        None => None,
    };
    let matched = password::verify(pw, user.as_ref().map(|u| u.password_hash.clone())).await?;
    let user = match user {
        Some(user) if matched => {
            if let Some(key) = &throttle_key {
                state.login_throttle.succeeded(key, ip);
            }
            user
        }
        _ => {
            return Err(ApiError::unauthorized(
                "invalid_credentials",
                "no active account found with the given credentials",
            ));
        }
    };
    let session_id = Uuid::new_v4();
    let refresh_jti = Uuid::new_v4();
    tracing::Span::current()
        .record("user_id", tracing::field::display(user.user_id))
        .record("session_id", tracing::field::display(session_id));
    store::create_session(
        &state.pool,
        session_id,
        user.user_id,
        refresh_jti,
        session_expiry(&state),
    )
    .await?;
    let pair = issue_pair(&state, user.user_id, session_id, refresh_jti).await?;
    Ok(HttpResponse::Ok().json(pair))
}

/// Rotate: exchange the current refresh token for a new pair. Presenting an old refresh token
/// revokes the whole session.
#[utoipa::path(post, path = "/auth/tokens/refresh/", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = Problem)))]
// Never the tokens: only the session of a verified one.
#[tracing::instrument(skip_all, fields(session_id = tracing::field::Empty))]
pub async fn refresh_tokens(
    state: web::Data<AppState>,
    body: web::Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let claims = state.jwt.verify(&body.refresh, TokenType::Refresh)?;
    tracing::Span::current().record("session_id", tracing::field::display(claims.sid));
    let new_jti = Uuid::new_v4();
    let rotation = store::rotate_refresh(
        &state.pool,
        claims.sid,
        claims.sub,
        claims.jti,
        new_jti,
        session_expiry(&state),
    )
    .await?;
    // The session row changed (a later expiry, or revoked): what this process remembers of
    // it goes; other processes hear of a revocation from its notice.
    match rotation {
        Rotation::ReuseDetected => state.sessions.revoked(claims.sid),
        Rotation::Rotated | Rotation::Dead => state.sessions.forget(claims.sid),
    }
    match rotation {
        Rotation::Rotated => {
            let pair = issue_pair(&state, claims.sub, claims.sid, new_jti).await?;
            Ok(HttpResponse::Ok().json(pair))
        }
        Rotation::ReuseDetected => {
            tracing::warn!(session_id = %claims.sid, user_id = %claims.sub, "refresh token reuse; session revoked");
            Err(ApiError::unauthorized(
                "token_revoked",
                "this refresh token was already used; the session has been revoked, log in again",
            ))
        }
        Rotation::Dead => Err(ApiError::unauthorized(
            "token_revoked",
            "the session of this token has been revoked",
        )),
    }
}

/// Log out: revoke the session of a refresh token, with every access token minted in it; its
/// open SSE streams end on every process.
#[utoipa::path(post, path = "/auth/tokens/blacklist/", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, description = "the session is revoked"), (status = 401, body = Problem)))]
// Never the token: only the session of a verified one.
#[tracing::instrument(skip_all, fields(session_id = tracing::field::Empty))]
pub async fn blacklist_token(
    state: web::Data<AppState>,
    body: web::Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let claims = state.jwt.verify(&body.refresh, TokenType::Refresh)?;
    tracing::Span::current().record("session_id", tracing::field::display(claims.sid));
    let revoked = store::revoke_session(&state.pool, claims.sid, claims.sub).await?;
    state.sessions.revoked(claims.sid);
    if !revoked {
        return Err(ApiError::unauthorized(
            "token_revoked",
            "the session of this token no longer exists",
        ));
    }
    tracing::info!(session_id = %claims.sid, "session revoked by logout");
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}

/// The caller's account.
#[utoipa::path(get, path = "/auth/users/me/", tag = "auth",
    responses((status = 200, body = MeBody), (status = 401, body = Problem)),
    security(("jwt" = [])))]
#[tracing::instrument(skip_all, fields(user_id = %user.user_id))]
pub async fn get_me(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    let tenant = user.tenant;
    let user = store::find_user(&state.pool, user.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("token_revoked", "the account no longer exists"))?;
    let mut conn = state.pool.acquire().await?;
    let storage_bytes = quota::storage_bytes(&mut conn, &tenant).await?;
    Ok(HttpResponse::Ok().json(MeBody {
        user: UserBody::from(user),
        storage_bytes,
        storage_quota_bytes: state.settings.tenant_storage_bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_keep_their_local_part_and_lower_case_their_domain() {
        assert_eq!(
            normalise_email(" Me+App@YingW787.COM ").expect("valid"),
            "Me+App@yingw787.com"
        );
    }

    #[test]
    fn malformed_emails_are_rejected() {
        for bad in [
            "",
            "me",
            "me@",
            "@x.com",
            "Me <me@x.com>",
            "me@[127.0.0.1]",
            "a b@x.com",
        ] {
            assert!(normalise_email(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
