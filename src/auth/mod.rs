//! Accounts and JWT sessions: registration (which provisions the tenant), login with
//! throttling, refresh-token rotation with reuse detection, logout by session revocation, the
//! `AuthUser` extractor every other feature authenticates with, and scoped API keys with the
//! `Caller` extractor of the routes keys may use.

pub mod caller;
pub mod extract;
pub mod jwt;
pub mod keys;
pub mod password;
pub mod query_token;
pub mod routes;
pub mod sessions;
pub mod store;
pub mod throttle;

use actix_web::web;

/// Registers the `/auth/...` routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/auth/users/register").route(web::post().to(routes::register_user)))
        .service(web::resource("/auth/users/me").route(web::get().to(routes::get_me)))
        .service(web::resource("/auth/tokens/obtain").route(web::post().to(routes::obtain_tokens)))
        .service(
            web::resource("/auth/tokens/refresh").route(web::post().to(routes::refresh_tokens)),
        )
        .service(
            web::resource("/auth/tokens/blacklist").route(web::post().to(routes::blacklist_token)),
        )
        .service(
            web::resource("/auth/keys")
                .route(web::post().to(keys::routes::create_key))
                .route(web::get().to(keys::routes::list_keys)),
        )
        .service(
            web::resource("/auth/keys/{id}").route(web::delete().to(keys::routes::delete_key)),
        );
}
