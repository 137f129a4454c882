//! The OpenAPI document, generated from the handlers' annotations, and its two viewers: Swagger
//! UI (compiled into the binary by utoipa-swagger-ui's `vendored` feature) at `/docs` and ReDoc
//! (its standalone bundle from the npm package `redoc`, embedded) at `/redoc`. Both work on a
//! closed network.

use std::sync::{Arc, LazyLock};

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::auth::routes as auth;
use crate::channels::events::RefreshEvent;
use crate::channels::routes as channels;
use crate::error::Problem;
use crate::jobs::routes as jobs;
use crate::service::{health, metrics};
use crate::tables::routes as tables;
use crate::views::routes as views;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "tinydevcrm", description = "Multi-tenant realtime data platform. Errors are RFC 9457 problem JSON with a `code`."),
    paths(
        auth::register_user, auth::obtain_tokens, auth::refresh_tokens, auth::blacklist_token, auth::get_me,
        health::health, metrics::render,
        tables::create_table, tables::list_tables, tables::describe_table, tables::delete_table, tables::list_rows, tables::add_rows,
        views::create_view, views::list_views, views::describe_view, views::refresh_view, views::list_view_rows, views::delete_view,
        jobs::create_job, jobs::list_jobs, jobs::describe_job, jobs::update_job, jobs::delete_job, jobs::list_runs,
        channels::create_channel, channels::list_channels, channels::describe_channel, channels::delete_channel, channels::listen,
    ),
    components(schemas(Problem, RefreshEvent)),
    modifiers(&JwtSecurity),
    tags((name = "auth", description = "accounts and JWT sessions"), (name = "tables", description = "tenant tables from Parquet"), (name = "views", description = "materialized views"), (name = "jobs", description = "cron jobs that refresh views"), (name = "channels", description = "Server-Sent Events on every refresh"), (name = "service", description = "health, metrics"))
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
    }
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|_| "{}".to_owned())
});

static SWAGGER_CONFIG: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> =
    LazyLock::new(|| Arc::new(utoipa_swagger_ui::Config::from("/openapi.json")));

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
