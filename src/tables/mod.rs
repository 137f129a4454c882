//! Tenant tables from Parquet uploads: streaming ingest into the caller's schema (as the
//! caller's role), type mapping, description, listing and deletion.
//!
//! An upload flows through the modules in this order, each using only those after it:
//! [`routes`] (handlers) -> [`upload`] (body to a temporary file or bytes) -> [`plan`] (schema
//! and column types) or [`json_rows`] (JSON rows to batches) -> [`convert`] (Arrow columns to
//! the encodable types) -> [`copy`] (binary COPY into the tenant's table) -> [`store`]
//! (registry and DDL SQL). [`types`] and [`name`] are the rules all of them share.

pub mod convert;
pub mod copy;
pub mod json_rows;
pub mod name;
pub mod plan;
pub mod routes;
pub mod sample;
pub mod store;
pub mod types;
pub mod upload;

use actix_web::web;

/// Registers the `/tables/...` routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/tables/create").route(web::post().to(routes::create_table)))
        .service(web::resource("/tables").route(web::get().to(routes::list_tables)))
        .service(
            web::resource("/tables/{name}/rows")
                .route(web::get().to(routes::list_rows))
                .route(web::post().to(routes::add_rows)),
        )
        .service(
            web::resource("/tables/{name}")
                .route(web::get().to(routes::describe_table))
                .route(web::delete().to(routes::delete_table)),
        );
}
