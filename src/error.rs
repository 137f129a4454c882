//! The one HTTP error type: every failure a handler or extractor returns becomes RFC 9457
//! problem JSON here, and responses that actix-web produces on its own (404, 405, 413, ...) are
//! rewritten into the same shape by [`problem_json_for_everything`].

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::error::JsonPayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Everything an API call can fail with; each variant names its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or violates a validation rule.
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    /// 401: missing, invalid, expired or revoked credentials.
    #[error("{detail}")]
    Unauthorized { code: &'static str, detail: String },
    /// 403: authenticated, but the credentials do not allow this (an API key outside its
    /// scopes, or on a route only a login session may use).
    #[error("{detail}")]
    Forbidden { code: &'static str, detail: String },
    /// 404: no such resource, or it belongs to somebody else.
    #[error("{detail}")]
    NotFound { detail: String },
    /// 409: the request conflicts with existing state (duplicate e-mail, ...).
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    /// 413: the body exceeds the configured limit.
    #[error("{detail}")]
    PayloadTooLarge { detail: String },
    /// 415: the body has the wrong content type.
    #[error("{detail}")]
    UnsupportedMediaType { detail: String },
    /// 429: throttled; retry after the given number of seconds.
    #[error("too many requests; retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    /// 429 with a code and a detail of its own (which limit, which setting raises it), for
    /// the limits a client can reason about; `Retry-After` as above.
    #[error("{detail}")]
    Throttled {
        code: &'static str,
        detail: String,
        retry_after_secs: u64,
    },
    /// 503: a dependency (the database) does not answer.
    #[error("{detail}")]
    Unavailable { code: &'static str, detail: String },
    /// 500: a bug or an unexpected failure; details are logged, never sent.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
    /// 500: an unexpected database failure; details are logged, never sent.
    #[error(transparent)]
    Database(sqlx::Error),
    /// Any of the above with extension members for programs (`row`, `column`, `field`, ...),
    /// sent next to `detail`; see [`ApiError::with_members`].
    #[error("{0}")]
    WithMembers(Box<ApiError>, serde_json::Map<String, serde_json::Value>),
}

/// A lock held past the lock timeout is the client's to retry, wherever the statement ran;
/// every other database error is kept for the caller (or a 500).
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03") => {
                Self::lock_timeout()
            }
            _ => Self::Database(e),
        }
    }
}

impl ApiError {
    /// 409 `lock_timeout`: another statement held the relation longer than the lock timeout
    /// (an upload, a refresh, a long read of the same tenant, or an administrator).
    pub fn lock_timeout() -> Self {
        Self::Conflict {
            code: "lock_timeout",
            detail: "another statement held the table or view longer than the lock timeout; retry when it is done".to_owned(),
        }
    }

    /// A 400 with a machine-readable `code`.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    /// A 409 when a tenant already has `max` of something (`what`, plural).
    pub fn check_quota(count: i64, max: i64, code: &'static str, what: &str) -> Result<(), Self> {
        if count >= max {
            return Err(Self::Conflict {
                code,
                detail: format!("a tenant may have at most {max} {what}"),
            });
        }
        Ok(())
    }

    /// The id in a path; anything that is not a UUID is simply not found (`what`: "job").
    pub fn id_in_path(raw: &str, what: &str) -> Result<uuid::Uuid, Self> {
        uuid::Uuid::parse_str(raw.trim()).map_err(|_| Self::NotFound {
            detail: format!("no {what} {raw:?}"),
        })
    }

    /// A 403 with a machine-readable `code`.
    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            detail: detail.into(),
        }
    }

    /// A 401 with a machine-readable `code`.
    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Unauthorized {
            code,
            detail: detail.into(),
        }
    }

    /// This error with extension members (a JSON object's entries) added to its problem body;
    /// the standard members (`type`, `title`, `status`, `detail`, `code`) cannot be replaced.
    #[must_use]
    pub fn with_members(self, members: serde_json::Value) -> Self {
        let serde_json::Value::Object(mut members) = members else {
            return self;
        };
        for reserved in ["type", "title", "status", "detail", "code"] {
            members.remove(reserved);
        }
        match self {
            Self::WithMembers(inner, mut old) => {
                old.extend(members);
                Self::WithMembers(inner, old)
            }
            other => Self::WithMembers(Box::new(other), members),
        }
    }

    /// The machine-readable `code` of the problem body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::WithMembers(inner, _) => inner.code(),
            Self::BadRequest { code, .. }
            | Self::Unauthorized { code, .. }
            | Self::Forbidden { code, .. }
            | Self::Conflict { code, .. }
            | Self::Throttled { code, .. }
            | Self::Unavailable { code, .. } => code,
            Self::NotFound { .. } => "not_found",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::TooManyRequests { .. } => "too_many_requests",
            Self::Database(sqlx::Error::PoolTimedOut) => "database_unavailable",
            Self::Internal(_) | Self::Database(_) => "internal_error",
        }
    }
}

/// Extension for mapping a unique or check constraint violation to a client error by its name.
pub trait ResultExt<T> {
    /// Turns a violation of `constraint` into the error `map` builds; other errors pass through.
    fn on_constraint(self, constraint: &str, map: impl FnOnce() -> ApiError)
    -> Result<T, ApiError>;
}

impl<T, E: Into<ApiError>> ResultExt<T> for Result<T, E> {
    fn on_constraint(
        self,
        constraint: &str,
        map: impl FnOnce() -> ApiError,
    ) -> Result<T, ApiError> {
        self.map_err(|e| match e.into() {
            ApiError::Database(sqlx::Error::Database(db))
                if db.constraint() == Some(constraint) =>
            {
                map()
            }
            other => other,
        })
    }
}

/// RFC 9457 problem details plus our machine-readable `code`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: `title` is the HTTP status phrase and `code` says what went wrong.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The HTTP reason phrase.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong, for a person.
    pub detail: String,
    /// What went wrong, for a program (`token_expired`, `invalid_json`, ...).
    pub code: String,
    /// Extension members some problems add (`row`, `column`, `value`, `expected_type`,
    /// `field`, `allowed`, `position`, `hint`, ...; docs/API.md lists them per code).
    /// Not in the schema as a property: extra members are allowed (no `additionalProperties:
    /// false`), and API.md lists them.
    #[serde(flatten)]
    #[schema(ignore)]
    pub members: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    fn new(status: StatusCode, code: &str, detail: String) -> Self {
        Self {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            code: code.to_owned(),
            members: serde_json::Map::new(),
        }
    }

    fn into_response(self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        HttpResponse::build(status)
            .content_type(PROBLEM_JSON)
            .json(self)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::WithMembers(inner, _) => inner.status_code(),
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } | Self::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(sqlx::Error::PoolTimedOut) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) | Self::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        let (this, members) = match self {
            Self::WithMembers(inner, members) => (inner.as_ref(), Some(members)),
            other => (other, None),
        };
        this.problem_response(members)
    }
}

impl ApiError {
    fn problem_response(
        &self,
        members: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> HttpResponse<BoxBody> {
        let status = self.status_code();
        let detail = match self {
            Self::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                "internal error; see the server log".to_owned()
            }
            Self::Database(sqlx::Error::PoolTimedOut) => {
                tracing::warn!("no database connection became free in time");
                "the database is busy or unreachable; retry later".to_owned()
            }
            Self::Database(e) => {
                tracing::error!(error = ?e, "database error");
                "internal error; see the server log".to_owned()
            }
            other => other.to_string(),
        };
        let mut problem = Problem::new(status, self.code(), detail);
        if let Some(members) = members {
            problem.members.clone_from(members);
        }
        let mut response = problem.into_response();
        let headers = response.headers_mut();
        match self {
            Self::Unauthorized { .. } => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::TooManyRequests { retry_after_secs }
            | Self::Throttled {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

/// Maps the JSON extractor's failures to 400, 413 and 415 problems that name the problem.
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType {
            detail: "expected Content-Type: application/json".to_owned(),
        },
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::PayloadTooLarge {
            detail: format!("the JSON body exceeds the limit of {limit} bytes"),
        },
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            ApiError::bad_request("invalid_body", format!("invalid request body: {e}"))
        }
        JsonPayloadError::Deserialize(e) => {
            ApiError::bad_request("invalid_json", format!("malformed JSON: {e}"))
        }
        other => ApiError::bad_request("invalid_body", format!("could not read the body: {other}")),
    };
    api.into()
}

/// Rewrites every error response that is not problem JSON yet (unknown route, 405, errors of
/// actix-web's own extractors) into problem JSON, so no client ever sees HTML or an empty body.
pub fn problem_json_for_everything<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(|res: ServiceResponse<B>| {
        let is_problem = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(PROBLEM_JSON));
        if is_problem {
            return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
        }
        let status = res.status();
        let (code, detail) = match status {
            StatusCode::NOT_FOUND => (
                "not_found",
                format!("no route for {}", res.request().path()),
            ),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method_not_allowed",
                format!(
                    "{} is not allowed on {}",
                    res.request().method(),
                    res.request().path()
                ),
            ),
            StatusCode::PAYLOAD_TOO_LARGE => {
                ("payload_too_large", "the body is too large".to_owned())
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported_media_type",
                "unsupported content type".to_owned(),
            ),
            StatusCode::TOO_MANY_REQUESTS => ("too_many_requests", "too many requests".to_owned()),
            s if s.is_server_error() => (
                "internal_error",
                "internal error; see the server log".to_owned(),
            ),
            _ => (
                "bad_request",
                res.response()
                    .error()
                    .map_or_else(|| "bad request".to_owned(), ToString::to_string),
            ),
        };
        let (req, old) = res.into_parts();
        let mut new = Problem::new(status, code, detail).into_response();
        for (name, value) in old.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                new.headers_mut().insert(name.clone(), value.clone());
            }
        }
        let res = ServiceResponse::new(req, new).map_into_right_body();
        Ok(ErrorHandlerResponse::Response(res))
    })
}

/// Body type produced by [`problem_json_for_everything`].
pub type ProblemBody<B> = EitherBody<B, BoxBody>;

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn members_go_next_to_detail_and_never_replace_the_standard_ones() {
        let error = ApiError::bad_request("invalid_value", "row 2, column \"day\": ...")
            .with_members(serde_json::json!({"row": 2, "column": "day"}))
            .with_members(serde_json::json!({"code": "other", "detail": "x", "value": "\"x\""}));
        let response = error.error_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = actix_web::body::to_bytes(response.into_body())
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            body,
            serde_json::json!({
                "type": "about:blank",
                "title": "Bad Request",
                "status": 400,
                "detail": "row 2, column \"day\": ...",
                "code": "invalid_value",
                "row": 2,
                "column": "day",
                "value": "\"x\"",
            })
        );
        assert_eq!(error.code(), "invalid_value");
    }
}
