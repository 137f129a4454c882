//! Materialized views over a tenant's tables: SQL checked by the sandbox, created and refreshed
//! as the tenant role with limits, read through the shared rows API.

pub mod incremental;
pub mod refresh;
pub mod resolved;
pub mod routes;
pub mod sandbox;
pub mod store;

use actix_web::web;

/// Registers the `/views/...` routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/views/create").route(web::post().to(routes::create_view)))
        .service(web::resource("/views").route(web::get().to(routes::list_views)))
        .service(web::resource("/views/{name}/refresh").route(web::post().to(routes::refresh_view)))
        .service(web::resource("/views/{name}/rows").route(web::get().to(routes::list_view_rows)))
        .service(
            web::resource("/views/{name}")
                .route(web::get().to(routes::describe_view))
                .route(web::delete().to(routes::delete_view)),
        );
}
