//! The service surface: health (and the `health` command's client of it), the OpenAPI document
//! with its two viewers, Prometheus metrics.

pub mod health;
pub mod health_check;
pub mod metrics;
pub mod openapi;

use actix_web::web;

/// Registers `/` (an index of the links below), `/health`, `/metrics`, `/openapi.json`, `/docs` and `/redoc`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").route(web::get().to(openapi::index)))
        .service(web::resource("/health").route(web::get().to(health::health)))
        .service(web::resource("/metrics").route(web::get().to(metrics::render)))
        .service(web::resource("/openapi.json").route(web::get().to(openapi::document)))
        .service(web::resource("/docs").route(web::get().to(openapi::swagger_index)))
        .service(web::resource("/docs/{file:.*}").route(web::get().to(openapi::swagger_file)))
        .service(web::resource("/redoc").route(web::get().to(openapi::redoc_page)))
        .service(
            web::resource("/redoc/redoc.standalone.js").route(web::get().to(openapi::redoc_script)),
        );
}
