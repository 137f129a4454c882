//! Notifications of channel events to receivers outside the service (issue 14):
//!
//! - [`signature`]: Standard Webhooks secrets, signatures and their verification
//! - [`destination`]: which webhook URLs and addresses may be delivered to (the SSRF guard)
//! - [`client`]: the HTTP client that delivers, connecting only to checked addresses
//! - [`store`], [`routes`](mod@routes): the `/channels/{id}/webhooks/...` subscriptions and delivery log
//! - [`states`]: the statuses of subscriptions and deliveries
//! - [`outbox`]: the background task that claims due deliveries, sends them, and retries
//! - [`recipient`], [`links`], [`mailer`]: e-mail addresses, the confirmation and unsubscribe
//!   links, and SMTP messages from templates
//! - [`log`]: what the webhook and e-mail delivery logs share (pages, cursors, retries)
//! - [`email`]: the `/channels/{id}/emails/...` subscriptions, the public `/emails/...` link
//!   pages, and the background task that sends e-mail, one message per subscription per
//!   interval

pub mod client;
pub mod destination;
pub mod email;
pub mod links;
pub mod log;
pub mod mailer;
pub mod outbox;
pub mod recipient;
pub mod routes;
pub mod signature;
pub mod states;
pub mod store;

use actix_web::web;

/// Registers the `/channels/{id}/webhooks/...`, `/channels/{id}/emails/...` and `/emails/...`
/// routes.
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
    )
    .service(
        web::resource("/channels/{id}/emails")
            .route(web::get().to(email::routes::list_emails))
            .route(web::post().to(email::routes::create_email)),
    )
    .service(
        web::resource("/channels/{id}/emails/{eid}/resend-confirmation")
            .route(web::post().to(email::routes::resend_confirmation)),
    )
    .service(
        web::resource("/channels/{id}/emails/{eid}/deliveries")
            .route(web::get().to(email::routes::list_email_deliveries)),
    )
    .service(
        web::resource("/channels/{id}/emails/{eid}/deliveries/{did}/retry")
            .route(web::post().to(email::routes::retry_email_delivery)),
    )
    .service(
        web::resource("/channels/{id}/emails/{eid}")
            .route(web::get().to(email::routes::describe_email))
            .route(web::patch().to(email::routes::update_email))
            .route(web::delete().to(email::routes::delete_email)),
    )
    .service(
        web::resource("/emails/confirm/{token}")
            .route(web::get().to(email::routes::confirm_page))
            .route(web::post().to(email::routes::confirm)),
    )
    .service(
        web::resource("/emails/unsubscribe/{token}")
            .route(web::get().to(email::routes::unsubscribe_page))
            .route(web::post().to(email::routes::unsubscribe)),
    );
}
