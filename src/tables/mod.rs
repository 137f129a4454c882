//! Tenant tables from Parquet uploads: streaming ingest into the caller's schema (as the
//! caller's role), type mapping, description, listing and deletion.

pub mod ingest;
pub mod name;
pub mod routes;
pub mod sample;
pub mod store;
pub mod types;

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
