//! The OpenAPI document, generated from the handlers' annotations, and its two viewers: Swagger
//! UI (compiled into the binary by utoipa-swagger-ui's `vendored` feature) at `/docs` and ReDoc
//! (its standalone bundle from the npm package `redoc`, embedded) at `/redoc`. Both work on a
//! closed network.

use std::sync::{Arc, LazyLock};

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi};

use crate::auth::keys::routes as keys;
use crate::auth::routes as auth;
use crate::channels::events::RefreshEvent;
use crate::channels::routes as channels;
use crate::error::{PROBLEM_JSON, Problem};
use crate::jobs::routes as jobs;
use crate::notify::email::routes as emails;
use crate::notify::routes as webhooks;
use crate::service::{health, metrics};
use crate::tables::indexes::routes as table_indexes;
use crate::tables::routes as tables;
use crate::views::routes as views;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "tinydevcrm", description = "Multi-tenant realtime data platform. Errors are RFC 9457 problem JSON with a `code`."),
    paths(
        auth::register_user, auth::obtain_tokens, auth::refresh_tokens, auth::blacklist_token, auth::get_me,
        keys::create_key, keys::list_keys, keys::delete_key,
        index, health::health, metrics::render,
        tables::create_table, tables::list_tables, tables::describe_table, tables::delete_table, tables::list_rows, tables::add_rows,
        table_indexes::create_index, table_indexes::list_indexes, table_indexes::delete_index,
        views::create_view, views::list_views, views::describe_view, views::refresh_view, views::list_view_rows, views::delete_view,
        jobs::create_job, jobs::list_jobs, jobs::describe_job, jobs::update_job, jobs::delete_job, jobs::list_runs,
        channels::create_channel, channels::list_channels, channels::describe_channel, channels::delete_channel, channels::listen,
        webhooks::create_webhook, webhooks::list_webhooks, webhooks::describe_webhook, webhooks::update_webhook, webhooks::delete_webhook,
        webhooks::rotate_secret, webhooks::test_webhook, webhooks::list_deliveries, webhooks::retry_delivery,
        emails::create_email, emails::list_emails, emails::describe_email, emails::update_email, emails::delete_email,
        emails::resend_confirmation, emails::list_email_deliveries, emails::retry_email_delivery,
        emails::confirm_page, emails::confirm, emails::unsubscribe_page, emails::unsubscribe,
    ),
    components(schemas(Problem, RefreshEvent)),
    modifiers(&JwtSecurity, &ProblemResponses),
    tags((name = "auth", description = "accounts, JWT sessions and API keys"), (name = "tables", description = "tenant tables from Parquet"), (name = "views", description = "materialized views"), (name = "jobs", description = "cron jobs that refresh views"), (name = "channels", description = "Server-Sent Events on every refresh"), (name = "webhooks", description = "signed HTTP notifications of a channel's events"), (name = "emails", description = "e-mail notifications of a channel's events, sent once the recipient confirms"), (name = "service", description = "health, metrics"))
)]
pub struct ApiDoc;

struct JwtSecurity;

impl Modify for JwtSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        // The same header with a key (`tdc_...`): accepted only by the operations that list it,
        // and there only within the key's scopes (403 `missing_scope` otherwise).
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tdc_ API key")
                    .description(Some(
                        "A scoped API key from POST /auth/keys/, as `Authorization: Bearer tdc_...`",
                    ))
                    .build(),
            ),
        );
    }
}

/// Adds to every operation the error statuses it can answer for reasons common to many routes,
/// and makes every error response problem JSON (`application/problem+json` with the `Problem`
/// schema). The statuses peculiar to one route (409, 429, a 400 of its own) are in its
/// annotation; this adds, by what the operation has:
/// - a JSON or multipart request body: 400 (malformed or invalid), 413 (too large), 415 (other
///   content type), from the body extractors;
/// - query parameters: 400, from the query extractor;
/// - path parameters: 404 (no such resource, or somebody else's);
/// - `security`: 401 (missing, invalid, expired or revoked token) and 403 (an API key where it
///   is not allowed or outside its scopes); with the `api_key` scheme also 429 (its rate limit);
/// - every operation but `/health` and `/metrics`: 500 (a bug) and 503 (no database connection
///   became free in time).
///
/// `/health` answers 503 only when the database does not, and `/metrics` never fails.
struct ProblemResponses;

/// Routes that touch no database through a failing path: nothing common is added to them.
const SERVICE_PATHS: &[&str] = &["/", "/health", "/metrics"];

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in &mut openapi.paths.paths {
            let service = SERVICE_PATHS.contains(&path.as_str());
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                for status in common_statuses(path, operation, service) {
                    operation
                        .responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| RefOr::T(Response::new(reason(status))));
                }
                for (status, response) in &mut operation.responses.responses {
                    let is_error = status.starts_with('4') || status.starts_with('5');
                    if let (true, RefOr::T(response)) = (is_error, response) {
                        response.content.clear();
                        response.content.insert(
                            PROBLEM_JSON.to_owned(),
                            RefOr::T(Content::new(Some(Ref::from_schema_name("Problem")))),
                        );
                    }
                }
            }
        }
    }
}

/// The statuses `operation` can answer for the reasons shared by many routes.
fn common_statuses(path: &str, operation: &Operation, service: bool) -> Vec<u16> {
    let mut statuses = Vec::new();
    if operation.request_body.is_some() {
        statuses.extend([400, 413, 415]);
    }
    let parameters = operation.parameters.iter().flatten();
    let mut in_query = false;
    for parameter in parameters {
        if let RefOr::T(p) = parameter {
            in_query |= matches!(p.parameter_in, ParameterIn::Query);
        }
    }
    if in_query {
        statuses.push(400);
    }
    if path.contains('{') {
        statuses.push(404);
    }
    if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
        // 403: an API key on a route for login sessions, or outside its scopes.
        statuses.extend([401, 403]);
    }
    let takes_keys = operation
        .security
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .is_some_and(|s| s.to_string().contains("\"api_key\""));
    if takes_keys {
        // The key's rate limit.
        statuses.push(429);
    }
    if !service {
        statuses.extend([500, 503]);
    }
    statuses
}

fn reason(status: u16) -> &'static str {
    actix_web::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|_| "{}".to_owned())
});

static SWAGGER_CONFIG: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> =
    LazyLock::new(|| Arc::new(utoipa_swagger_ui::Config::from("/openapi.json")));

/// The links of `GET /`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Index {
    /// The service's name.
    pub name: &'static str,
    /// Its version.
    pub version: &'static str,
    /// This OpenAPI document.
    pub openapi: &'static str,
    /// Swagger UI over it.
    pub docs: &'static str,
    /// ReDoc over it.
    pub redoc: &'static str,
    /// Liveness and readiness.
    pub health: &'static str,
}

/// `GET /`: where things are. The OpenAPI document (what a `PostgREST` server describes at its
/// root), its two viewers and health.
#[utoipa::path(get, path = "/", tag = "service", responses((status = 200, body = Index)))]
pub async fn index() -> HttpResponse {
    HttpResponse::Ok().json(Index {
        name: "tinydevcrm",
        version: env!("CARGO_PKG_VERSION"),
        openapi: "/openapi.json",
        docs: "/docs",
        redoc: "/redoc",
        health: "/health",
    })
}

/// `GET /openapi.json`.
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.as_str())
}

/// `GET /docs`: to the viewer's index, so its relative asset paths resolve under `/docs/`.
pub async fn swagger_index() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/docs/index.html"))
        .finish()
}

/// `GET /docs/{file}`: Swagger UI's files.
pub async fn swagger_file(path: web::Path<String>) -> HttpResponse {
    let file = path.into_inner();
    let file = if file.is_empty() {
        "index.html".to_owned()
    } else {
        file
    };
    match utoipa_swagger_ui::serve(&file, SWAGGER_CONFIG.clone()) {
        Ok(Some(found)) => HttpResponse::Ok()
            .content_type(found.content_type)
            .body(found.bytes.into_owned()),
        Ok(None) => HttpResponse::NotFound().finish(),
        Err(e) => {
            tracing::error!(error = %e, "serving Swagger UI");
            HttpResponse::InternalServerError().finish()
        }
    }
}

const REDOC_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>tinydevcrm API</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><redoc spec-url="/openapi.json"></redoc>
<script src="/redoc/redoc.standalone.js"></script></body>
</html>
"#;

const REDOC_SCRIPT: &[u8] = include_bytes!("assets/redoc.standalone.js");

/// `GET /redoc`.
pub async fn redoc_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(REDOC_PAGE)
}

/// `GET /redoc/redoc.standalone.js`: the embedded bundle.
pub async fn redoc_script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=86400"))
        .body(REDOC_SCRIPT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_allow_extension_members_and_the_jobs_enabled_flag_is_deprecated() {
        let document: serde_json::Value =
            serde_json::from_str(&DOCUMENT).expect("the document is JSON");
        let schemas = &document["components"]["schemas"];
        let problem = &schemas["Problem"];
        assert!(problem["properties"]["code"].is_object(), "{problem}");
        assert!(problem["properties"]["members"].is_null(), "{problem}");
        assert!(
            problem["additionalProperties"] != serde_json::Value::Bool(false),
            "{problem}"
        );
        assert_eq!(
            schemas["JobBody"]["properties"]["enabled"]["deprecated"], true,
            "{}",
            schemas["JobBody"]
        );
        assert!(schemas["CreateJob"]["properties"]["paused"].is_object());
    }
}
