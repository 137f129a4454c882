//! JSON Web Tokens: HS256 only, short-lived access tokens and rotating refresh tokens, both
//! bound to a session (`sid`) so that revoking the session revokes them all.

use std::time::Duration;

use chrono::Utc;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;

/// What an expired access token's 401 says: how to get a fresh one without logging in again.
pub const EXPIRED_ACCESS: &str = "the access token has expired; get a new one with POST /auth/tokens/refresh/ and the body {\"refresh\": \"<your refresh token>\"} (or log in again with POST /auth/tokens/obtain/)";

/// What an expired refresh token's 401 says: the session is over.
pub const EXPIRED_REFRESH: &str = "the refresh token has expired (a session lasts a fixed time from its last refresh); log in again with POST /auth/tokens/obtain/";

/// Which of the two tokens a JWT is; an access token is never accepted as a refresh token and
/// the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    /// Short-lived; authenticates API calls.
    Access,
    /// Long-lived; exchanged for a new pair, once.
    Refresh,
}

/// The claims of both token types.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: Uuid,
    /// The session (refresh-token family) the token belongs to.
    pub sid: Uuid,
    /// Unique token id; for refresh tokens, compared with the session's current one.
    pub jti: Uuid,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
    /// Access or refresh.
    pub typ: TokenType,
}

/// Signing and verification keys with the pinned validation rules.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

impl JwtKeys {
    /// Keys for an HMAC secret.
    pub fn new(secret: &[u8]) -> Self {
        // Only HS256: a token claiming `none`, RS256 or anything else fails verification.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Signs a new token of type `typ` for user `sub` in session `sid`.
    pub fn mint(
        &self,
        typ: TokenType,
        sub: Uuid,
        sid: Uuid,
        jti: Uuid,
        ttl: Duration,
    ) -> Result<String, ApiError> {
        let iat = Utc::now().timestamp();
        let claims = Claims {
            sub,
            sid,
            jti,
            iat,
            exp: iat.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            typ,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("signing a JWT: {e}")))
    }

    /// Verifies signature, algorithm, expiry and type; the reasons stay in the log, the client
    /// only learns `token_invalid` or `token_expired`.
    pub fn verify(&self, token: &str, expected: TokenType) -> Result<Claims, ApiError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::unauthorized(
                    "token_expired",
                    match expected {
                        TokenType::Access => EXPIRED_ACCESS,
                        TokenType::Refresh => EXPIRED_REFRESH,
                    },
                ),
                other => {
                    tracing::debug!(reason = ?other, "rejected a JWT");
                    ApiError::unauthorized("token_invalid", "the token is not valid")
                }
            })?
            .claims;
        if claims.typ != expected {
            let detail = match expected {
                TokenType::Access => "a refresh token cannot be used as an access token",
                TokenType::Refresh => "an access token cannot be used as a refresh token",
            };
            return Err(ApiError::unauthorized("token_invalid", detail));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(&[7u8; 32])
    }

    fn code(err: ApiError) -> &'static str {
        err.code()
    }

    #[test]
    fn a_minted_access_token_verifies_as_access_only() {
        let (sub, sid, jti) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let token = keys()
            .mint(TokenType::Access, sub, sid, jti, Duration::from_secs(60))
            .expect("mint");
        let claims = keys().verify(&token, TokenType::Access).expect("valid");
        assert_eq!((claims.sub, claims.sid, claims.jti), (sub, sid, jti));
        let err = keys()
            .verify(&token, TokenType::Refresh)
            .expect_err("wrong type");
        assert_eq!(code(err), "token_invalid");
    }

    #[test]
    fn a_token_signed_with_another_secret_is_invalid() {
        let other = JwtKeys::new(&[8u8; 32]);
        let token = other
            .mint(
                TokenType::Access,
                Uuid::new_v4(),
                Uuid::new_v4(),
                Uuid::new_v4(),
                Duration::from_secs(60),
            )
            .expect("mint");
        assert_eq!(
            code(
                keys()
                    .verify(&token, TokenType::Access)
                    .expect_err("bad sig")
            ),
            "token_invalid"
        );
    }

    #[test]
    fn an_expired_token_is_reported_as_expired() {
        let token = keys()
            .mint(
                TokenType::Access,
                Uuid::new_v4(),
                Uuid::new_v4(),
                Uuid::new_v4(),
                Duration::ZERO,
            )
            .expect("mint");
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(
            code(
                keys()
                    .verify(&token, TokenType::Access)
                    .expect_err("expired")
            ),
            "token_expired"
        );
    }

    #[test]
    fn an_expired_token_says_how_to_get_a_new_one() {
        let expired = |typ| {
            let token = keys()
                .mint(
                    typ,
                    Uuid::new_v4(),
                    Uuid::new_v4(),
                    Uuid::new_v4(),
                    Duration::ZERO,
                )
                .expect("mint");
            std::thread::sleep(Duration::from_millis(1100));
            keys().verify(&token, typ).expect_err("expired").to_string()
        };
        let access = expired(TokenType::Access);
        assert!(
            access.starts_with("the access token has expired")
                && access.contains("POST /auth/tokens/refresh/")
                && access.contains("{\"refresh\": "),
            "{access}"
        );
        let refresh = expired(TokenType::Refresh);
        assert!(
            refresh.starts_with("the refresh token has expired")
                && refresh.contains("log in again with POST /auth/tokens/obtain/"),
            "{refresh}"
        );
    }
}
