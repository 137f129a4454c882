//! Notifications of channel events to receivers outside the service (issue 14):
//!
//! - [`signature`]: Standard Webhooks secrets, signatures and their verification
//! - [`destination`]: which webhook URLs and addresses may be delivered to (the SSRF guard)
//! - [`client`]: the HTTP client that delivers, connecting only to checked addresses
//! - [`store`], [`routes`](mod@routes): the `/channels/{id}/webhooks/...` subscriptions and delivery log
//! - [`states`]: the statuses of subscriptions and deliveries
//! - [`outbox`]: the background task that claims due deliveries, sends them, and retries

pub mod client;
pub mod destination;
pub mod outbox;
pub mod routes;
pub mod signature;
pub mod states;
pub mod store;

use actix_web::web;

/// Registers the `/channels/{id}/webhooks/...` routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/channels/{id}/webhooks")
            .route(web::get().to(routes::list_webhooks))
            .route(web::post().to(routes::create_webhook)),
    )
    .service(
        web::resource("/channels/{id}/webhooks/{wid}/rotate-secret")
            .route(web::post().to(routes::rotate_secret)),
    )
    .service(
        web::resource("/channels/{id}/webhooks/{wid}/test")
            .route(web::post().to(routes::test_webhook)),
    )
    .service(
        web::resource("/channels/{id}/webhooks/{wid}/deliveries")
            .route(web::get().to(routes::list_deliveries)),
    )
    .service(
        web::resource("/channels/{id}/webhooks/{wid}/deliveries/{did}/retry")
            .route(web::post().to(routes::retry_delivery)),
    )
    .service(
        web::resource("/channels/{id}/webhooks/{wid}")
            .route(web::get().to(routes::describe_webhook))
            .route(web::patch().to(routes::update_webhook))
            .route(web::delete().to(routes::delete_webhook)),
    );
}
