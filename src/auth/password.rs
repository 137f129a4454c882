//! Password hashing with argon2id (OWASP parameters: m=19456 KiB, t=2, p=1), always on the
//! blocking thread pool so a login never stalls the async workers.

use std::sync::LazyLock;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::ApiError;

/// Shortest accepted password, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 8;
/// Longest accepted password, in bytes (argon2 would take more, but nobody types that).
pub const MAX_PASSWORD_BYTES: usize = 1024;

fn hasher() -> Argon2<'static> {
    let params =
        Params::new(19_456, 2, 1, None).expect("BUG: constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A hash of a random password, verified against when the e-mail is unknown so that an unknown
/// account and a wrong password take the same time.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let random = uuid::Uuid::new_v4();
    hasher()
        .hash_password(random.as_bytes())
        .map(|h| h.to_string())
        .unwrap_or_default()
});

/// Checks the length rules, naming the one that failed.
pub fn validate(password: &str) -> Result<(), ApiError> {
    let len = password.len();
    if len < MIN_PASSWORD_BYTES {
        return Err(ApiError::bad_request(
            "password_too_short",
            format!("password must be at least {MIN_PASSWORD_BYTES} bytes long"),
        ));
    }
    if len > MAX_PASSWORD_BYTES {
        return Err(ApiError::bad_request(
            "password_too_long",
            format!("password must be at most {MAX_PASSWORD_BYTES} bytes long"),
        ));
    }
    Ok(())
}

/// Bounds concurrent hashes (19 MiB each) to twice the cores; more requests queue here instead
/// of growing memory without limit.
static HASHING: LazyLock<tokio::sync::Semaphore> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    tokio::sync::Semaphore::new(cores * 2)
});

async fn on_blocking_pool<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = HASHING
        .acquire()
        .await
        .map_err(|e| anyhow::anyhow!("the hashing semaphore is closed: {e}"))?;
    Ok(tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| anyhow::anyhow!("the hashing task failed: {e}"))?)
}

/// Hashes a password into a PHC string.
pub async fn hash(password: String) -> Result<String, ApiError> {
    on_blocking_pool(move || {
        hasher()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
    })
    .await?
    .map_err(ApiError::from)
}

/// Verifies `password` against `phc`, or against a dummy hash when there is no account, so both
/// failures cost the same.
pub async fn verify(password: String, phc: Option<String>) -> Result<bool, ApiError> {
    on_blocking_pool(move || {
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| DUMMY_HASH.clone());
        let ok = hasher()
            .verify_password(password.as_bytes(), phc.as_str())
            .is_ok();
        known && ok
    })
    .await
}

/// Computes the dummy hash ahead of the first login so that login does not pay for it.
pub fn warm_up() {
    LazyLock::force(&DUMMY_HASH);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let phc = hash("correct horse".to_owned()).await.expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            verify("correct horse".to_owned(), Some(phc.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !verify("wrong horse!".to_owned(), Some(phc))
                .await
                .expect("verify")
        );
        assert!(!verify("anything".to_owned(), None).await.expect("verify"));
    }

    #[test]
    fn length_rules_are_in_bytes() {
        assert!(validate("1234567").is_err());
        assert!(validate("12345678").is_ok());
        assert!(validate(&"x".repeat(1024)).is_ok());
        assert!(validate(&"x".repeat(1025)).is_err());
    }
}
