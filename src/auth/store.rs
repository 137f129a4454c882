//! SQL of accounts and sessions.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::db::notify::{NOTIFY_CHANNEL, Notice};
use crate::error::{ApiError, ResultExt};

/// An account row.
#[derive(Debug, Clone)]
pub struct User {
    /// Primary key, also the source of the tenant's opaque name.
    pub user_id: Uuid,
    /// As registered, with the domain lower-cased.
    pub primary_email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// The tenant's role and schema name.
    pub tenant_role: String,
    /// Registration time.
    pub created_at: DateTime<Utc>,
}

/// Inserts an account; a duplicate e-mail in any letter case is a 409.
pub async fn insert_user(
    conn: &mut PgConnection,
    user_id: Uuid,
    primary_email: &str,
    password_hash: &str,
    tenant_role: &str,
) -> Result<User, ApiError> {
    sqlx::query_as!(
        User,
        "INSERT INTO tinydevcrm.users (user_id, primary_email, password_hash, tenant_role)
         VALUES ($1, $2, $3, $4)
         RETURNING user_id, primary_email, password_hash, tenant_role, created_at",
        user_id,
        primary_email,
        password_hash,
        tenant_role,
    )
    .fetch_one(conn)
    .await
    .on_constraint("users_primary_email_key", || ApiError::Conflict {
        code: "email_taken",
        detail: "a user with this primary_email already exists".to_owned(),
    })
}

/// Finds an account by e-mail, ignoring case.
pub async fn find_user_by_email(
    pool: &PgPool,
    primary_email: &str,
) -> Result<Option<User>, ApiError> {
    Ok(sqlx::query_as!(
        User,
        "SELECT user_id, primary_email, password_hash, tenant_role, created_at
         FROM tinydevcrm.users WHERE lower(primary_email) = lower($1)",
        primary_email,
    )
    .fetch_optional(pool)
    .await?)
}

/// Finds an account by id.
pub async fn find_user(pool: &PgPool, user_id: Uuid) -> Result<Option<User>, ApiError> {
    Ok(sqlx::query_as!(
        User,
        "SELECT user_id, primary_email, password_hash, tenant_role, created_at
         FROM tinydevcrm.users WHERE user_id = $1",
        user_id,
    )
    .fetch_optional(pool)
    .await?)
}

/// Starts a session whose current refresh token is `refresh_jti`.
pub async fn create_session(
    pool: &PgPool,
    session_id: Uuid,
    user_id: Uuid,
    refresh_jti: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<(), ApiError> {
    sqlx::query!(
        "INSERT INTO tinydevcrm.sessions (session_id, user_id, current_refresh_jti, expires_at)
         VALUES ($1, $2, $3, $4)",
        session_id,
        user_id,
        refresh_jti,
        expires_at,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// What presenting a refresh token did to its session.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// It was the current token; `new_jti` is current now.
    Rotated,
    /// It was an old token (replayed, or a racing second use): the session is now revoked.
    ReuseDetected,
    /// The session was already revoked, expired or never existed.
    Dead,
}

/// Atomically replaces the session's current refresh token, or revokes the session (ending its
/// open streams on every process) when the presented token is not the current one. Of two
/// racing uses of one token exactly one matches the compare-and-set; the other revokes the
/// session.
pub async fn rotate_refresh(
    pool: &PgPool,
    session_id: Uuid,
    user_id: Uuid,
    presented_jti: Uuid,
    new_jti: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<Rotation, ApiError> {
    let rotated = sqlx::query!(
        "UPDATE tinydevcrm.sessions
         SET current_refresh_jti = $4, last_refreshed_at = now(), expires_at = $5
         WHERE session_id = $1 AND user_id = $2 AND current_refresh_jti = $3
           AND revoked_at IS NULL AND expires_at > now()",
        session_id,
        user_id,
        presented_jti,
        new_jti,
        expires_at,
    )
    .execute(pool)
    .await?
    .rows_affected();
    if rotated == 1 {
        return Ok(Rotation::Rotated);
    }
    // One statement: the notice that ends the session's streams on every process is sent only
    // when a row was revoked, and delivered when the revocation commits, never before.
    let revoked = sqlx::query_scalar!(
        r#"WITH revoked AS (
             UPDATE tinydevcrm.sessions
             SET revoked_at = now(), revoked_reason = 'refresh_reuse'
             WHERE session_id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > now()
             RETURNING session_id
         )
         SELECT session_id AS "session_id!" FROM revoked, LATERAL pg_notify($3, $4)"#,
        session_id,
        user_id,
        NOTIFY_CHANNEL,
        Notice::SessionRevoked { session_id }.to_string(),
    )
    .fetch_all(pool)
    .await?
    .len();
    Ok(if revoked == 1 {
        Rotation::ReuseDetected
    } else {
        Rotation::Dead
    })
}

/// Revokes a session (logout) and ends its open streams on every process; returns whether it
/// existed.
pub async fn revoke_session(
    pool: &PgPool,
    session_id: Uuid,
    user_id: Uuid,
) -> Result<bool, ApiError> {
    // One statement, like the reuse revocation in `rotate_refresh`.
    let found = sqlx::query_scalar!(
        r#"WITH revoked AS (
             UPDATE tinydevcrm.sessions
             SET revoked_at = COALESCE(revoked_at, now()),
                 revoked_reason = COALESCE(revoked_reason, 'logout')
             WHERE session_id = $1 AND user_id = $2
             RETURNING session_id
         )
         SELECT session_id AS "session_id!" FROM revoked, LATERAL pg_notify($3, $4)"#,
        session_id,
        user_id,
        NOTIFY_CHANNEL,
        Notice::SessionRevoked { session_id }.to_string(),
    )
    .fetch_all(pool)
    .await?
    .len();
    Ok(found == 1)
}

/// A live session's tenant, and how long the session has left.
#[derive(Debug)]
pub struct LiveSession {
    /// The user's tenant role.
    pub tenant_role: String,
    /// Milliseconds before the session expires.
    pub lifetime_ms: i64,
}

/// The tenant role of a live session's user (the session exists, is not revoked and has not
/// expired), or `None`. Checked on every authenticated request, so a revocation is seen at once
/// by every process sharing the database; the tenant comes with it in the same query.
pub async fn live_session_tenant(
    pool: &PgPool,
    session_id: Uuid,
    user_id: Uuid,
) -> Result<Option<LiveSession>, ApiError> {
    Ok(sqlx::query_as!(
        LiveSession,
        r#"SELECT u.tenant_role,
                (extract(epoch FROM s.expires_at - now()) * 1000)::bigint AS "lifetime_ms!"
         FROM tinydevcrm.sessions s JOIN tinydevcrm.users u ON u.user_id = s.user_id
         WHERE s.session_id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL AND s.expires_at > now()"#,
        session_id,
        user_id,
    )
    .fetch_optional(pool)
    .await?)
}
