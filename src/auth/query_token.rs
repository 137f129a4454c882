//! The `?access_token=` of browser `EventSource` clients (which cannot send headers): taken out
//! of the URI by middleware before anything logs it, and read back only by handlers that accept
//! it, through [`header_or_query_token`].

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest};

use super::extract::bearer_token;
use crate::error::ApiError;

/// The `?access_token=` of a request, moved out of the URI by [`strip_access_token`].
#[derive(Debug, Clone)]
struct QueryToken(String);

/// The `Authorization` header's token, else the `?access_token=` one; the header's error when
/// there is neither.
pub fn header_or_query_token(req: &HttpRequest) -> Result<String, ApiError> {
    match (bearer_token(req), req.extensions().get::<QueryToken>()) {
        (Ok(token), _) => Ok(token),
        (Err(_), Some(QueryToken(token))) => Ok(token.clone()),
        (Err(e), None) => Err(e),
    }
}

/// Moves `?access_token=` out of the URI into a request extension before anything logs the
/// URI, so tokens of browser `EventSource` clients never reach logs or metrics. The key is
/// matched after percent-decoding and ASCII case folding (`ACCESS_TOKEN`, `%61ccess_token`):
/// every such spelling is removed, and the first one is the token, as if spelled plainly.
pub async fn strip_access_token(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some((rest, token)) = split_access_token(req.query_string()) {
        let path = req.path().to_owned();
        let with_rest = if rest.is_empty() {
            path.clone()
        } else {
            format!("{path}?{rest}")
        };
        let mut parts = req.head().uri.clone().into_parts();
        // The bare path is the fallback: a URI that still holds the token must not survive.
        parts.path_and_query = with_rest.parse().ok().or_else(|| path.parse().ok());
        if let Ok(uri) = actix_web::http::Uri::from_parts(parts) {
            req.match_info_mut().get_mut().update(&uri);
            req.head_mut().uri = uri;
        }
        if let Some(token) = token {
            req.extensions_mut().insert(QueryToken(token));
        }
    }
    next.call(req).await
}

/// Splits a query string into the rest (re-encoded) and the first access token, or `None`
/// when it holds no access token under any spelling.
fn split_access_token(query: &str) -> Option<(String, Option<String>)> {
    if query.is_empty() {
        return None;
    }
    let is_token_key = |k: &str| k.trim().eq_ignore_ascii_case("access_token");
    let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(query) else {
        // Unparseable (never seen in practice): keep no query rather than risk logging a token.
        return Some((String::new(), None));
    };
    if !pairs.iter().any(|(k, _)| is_token_key(k)) {
        return None;
    }
    let (tokens, rest): (Vec<_>, Vec<_>) = pairs.into_iter().partition(|(k, _)| is_token_key(k));
    let rest = serde_urlencoded::to_string(&rest).unwrap_or_default();
    Some((rest, tokens.into_iter().next().map(|(_, v)| v)))
}

#[cfg(test)]
mod tests {
    use super::split_access_token;

    #[test]
    fn access_tokens_are_found_in_every_spelling_and_only_they_are_removed() {
        for query in [
            "access_token=s&x=1",
            "ACCESS_TOKEN=s&x=1",
            "Access_Token=s&x=1",
            "%61ccess_token=s&x=1",
            "ACCESS%5FTOKEN=s&x=1",
            "x=1&access_token=s&acCess_token=t",
        ] {
            assert_eq!(
                split_access_token(query),
                Some(("x=1".to_owned(), Some("s".to_owned()))),
                "{query}"
            );
        }
        assert_eq!(
            split_access_token("access_token=s&last_event_id=42"),
            Some(("last_event_id=42".to_owned(), Some("s".to_owned()))),
            "the resume point of a browser stream stays in the query"
        );
        assert_eq!(split_access_token("x=1&token=2"), None);
        assert_eq!(split_access_token(""), None);
    }
}
