//! SSE channels: the registry, the events table (numbered per channel in commit order), the
//! per-process hub fed by one `PgListener`, the listen stream of each client, and the
//! `/channels/...` routes.

pub mod events;
pub mod frame;
pub mod heartbeat;
pub mod hub;
pub mod routes;
pub mod store;
pub mod stream;

use actix_web::web;

/// Registers the `/channels/...` routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/channels/create").route(web::post().to(routes::create_channel)))
        .service(web::resource("/channels").route(web::get().to(routes::list_channels)))
        .service(web::resource("/channels/{id}/listen").route(web::get().to(routes::listen)))
        .service(
            web::resource("/channels/{id}")
                .route(web::get().to(routes::describe_channel))
                .route(web::delete().to(routes::delete_channel)),
        );
}
