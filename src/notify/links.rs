//! The capability links of e-mail notifications: confirm a subscription, unsubscribe from it.
//!
//! A link's token is the subscription id and an HMAC-SHA256 over (purpose, subscription id,
//! nonce) under a key derived from the server's JWT secret (so every process of a deployment
//! computes the same links). The database keeps only the nonces: a copy of the table confirms
//! nothing without the key, and the outbox recomputes a link when it sends the message instead
//! of storing it. Replacing or clearing a nonce revokes every link made from it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a nonce.
pub const NONCE_BYTES: usize = 16;

/// What a link does; part of what its HMAC covers, so one purpose's token is not another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Confirm the address (the subscription starts receiving).
    Confirm,
    /// Stop the subscription (RFC 8058 one-click, or the link in the message).
    Unsubscribe,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Confirm => b"confirm",
            Self::Unsubscribe => b"unsubscribe",
        }
    }

    /// The path of the public route, under the public URL.
    pub fn path(self) -> &'static str {
        match self {
            Self::Confirm => "/emails/confirm/",
            Self::Unsubscribe => "/emails/unsubscribe/",
        }
    }
}

/// The key links are signed with.
#[derive(Clone)]
pub struct LinkKey(SecretSlice<u8>);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(..)")
    }
}

impl LinkKey {
    /// The key for links, derived from the JWT secret with its own label: a link's HMAC is
    /// never a valid JWT signature, nor the reverse. Changing `JWT_SECRET` ends every link
    /// sent before (recipients ask for a new confirmation; unsubscribe links in old messages
    /// stop working, the new messages carry new ones).
    pub fn derive(jwt_secret: &str) -> Self {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(jwt_secret.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(b"tinydevcrm e-mail links v1");
        Self(SecretSlice::from(mac.finalize().into_bytes().to_vec()))
    }

    fn mac(&self, purpose: Purpose, subscription_id: Uuid, nonce: &[u8]) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(self.0.expose_secret())
            .expect("HMAC takes a key of any length");
        mac.update(purpose.label());
        mac.update(b"\0");
        mac.update(subscription_id.as_bytes());
        mac.update(nonce);
        mac
    }

    /// The token of a link: base64url of the subscription id and the HMAC (64 characters).
    pub fn token(&self, purpose: Purpose, subscription_id: Uuid, nonce: &[u8]) -> String {
        let mut bytes = subscription_id.as_bytes().to_vec();
        bytes.extend_from_slice(
            &self
                .mac(purpose, subscription_id, nonce)
                .finalize()
                .into_bytes(),
        );
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Whether `token` is this subscription's `purpose` token for `nonce` (in constant time).
    pub fn verifies(&self, purpose: Purpose, token: &Token, nonce: &[u8]) -> bool {
        self.mac(purpose, token.subscription_id, nonce)
            .verify_slice(&token.mac)
            .is_ok()
    }
}

/// A token read from a link: which subscription it names and the HMAC it carries (not yet
/// verified).
#[derive(Debug, Clone)]
pub struct Token {
    /// The subscription it claims to be for.
    pub subscription_id: Uuid,
    mac: Vec<u8>,
}

impl Token {
    /// Reads a token; `None` for anything that is not 16 id bytes and a 32-byte HMAC.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 64 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let (id, mac) = bytes.split_at_checked(16)?;
        (mac.len() == 32).then(|| Self {
            subscription_id: Uuid::from_slice(id).unwrap_or_default(),
            mac: mac.to_vec(),
        })
    }
}

/// A new random nonce.
pub fn nonce() -> Vec<u8> {
    let mut bytes = vec![0u8; NONCE_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// The full link: the public URL, the route, the token.
pub fn url(public_url: &str, purpose: Purpose, token: &str) -> String {
    format!("{public_url}{}{token}", purpose.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_for_its_purpose_subscription_and_nonce_only() {
        let key = LinkKey::derive("a jwt secret of at least thirty-two bytes");
        let (id, n) = (Uuid::new_v4(), nonce());
        let text = key.token(Purpose::Confirm, id, &n);
        assert_eq!(text.len(), 64);
        let token = Token::parse(&text).expect("parses");
        assert_eq!(token.subscription_id, id);
        assert!(key.verifies(Purpose::Confirm, &token, &n));
        assert!(
            !key.verifies(Purpose::Unsubscribe, &token, &n),
            "another purpose"
        );
        assert!(
            !key.verifies(Purpose::Confirm, &token, &nonce()),
            "another nonce"
        );
        let other = LinkKey::derive("another jwt secret of thirty-two bytes..");
        assert!(!other.verifies(Purpose::Confirm, &token, &n), "another key");
        // The same MAC under another subscription's id.
        let mut forged = URL_SAFE_NO_PAD.decode(&text).expect("b64");
        forged[..16].copy_from_slice(Uuid::new_v4().as_bytes());
        let forged = Token::parse(&URL_SAFE_NO_PAD.encode(forged)).expect("parses");
        assert!(!key.verifies(Purpose::Confirm, &forged, &n));
    }

    #[test]
    fn anything_but_64_base64url_characters_is_not_a_token() {
        for bad in [
            "",
            "x",
            &"A".repeat(63),
            &"A".repeat(65),
            &"+".repeat(64),
            &"=".repeat(64),
        ] {
            assert!(Token::parse(bad).is_none(), "{bad:?}");
        }
    }
}
