//! Cron jobs that refresh views: the schedule math, the overlap rule and run statuses as types
//! (`states`), the registry (`store`), the scheduler's claims (`claims`), the run history
//! (`runs`), the scheduler loop every `serve` process runs, and the `/jobs/...` routes.

pub mod claims;
pub mod routes;
pub mod runs;
pub mod schedule;
pub mod scheduler;
pub mod states;
pub mod store;

use actix_web::web;

/// Registers the `/jobs/...` routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/jobs/create").route(web::post().to(routes::create_job)))
        .service(web::resource("/jobs").route(web::get().to(routes::list_jobs)))
        .service(web::resource("/jobs/{id}/runs").route(web::get().to(routes::list_runs)))
        .service(
            web::resource("/jobs/{id}")
                .route(web::get().to(routes::describe_job))
                .route(web::patch().to(routes::update_job))
                .route(web::delete().to(routes::delete_job)),
        );
}
