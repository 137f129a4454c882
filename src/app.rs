//! Wiring: the HTTP server with its middleware, and the `serve` and `migrate`
//! commands (including the managed local PostgreSQL when `DATABASE_URL` is unset).

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use actix_cors::Cors;
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::{self, Next, from_fn};
use actix_web::{App, HttpMessage, HttpServer, web};
use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tracing_actix_web::{RequestId, TracingLogger};

use crate::auth::{
    self,
    jwt::JwtKeys,
    password,
    throttle::{LoginLimits, LoginThrottle},
};
use crate::channels::heartbeat::Heartbeat;
use crate::channels::hub::Hub;
use crate::config::{DatabaseArgs, MIN_JWT_SECRET_BYTES, ServeArgs, Settings};
use crate::db::local_cluster::{ClusterOptions, LocalCluster};
use crate::error::{self, ApiError};
use crate::jobs::scheduler::SchedulerConfig;
use crate::notify::client::DeliveryClient;
use crate::notify::outbox::OutboxConfig;
use crate::state::{AppState, Background};
use crate::{channels, console, db, jobs, notify, secrets, service, tables, telemetry, views};

/// The database name inside the managed cluster.
pub const LOCAL_DATABASE: &str = "tinydevcrm";

/// Builds the HTTP server on an already bound listener (port 0 in tests), and starts the
/// background tasks (hub, scheduler, outbox drainer, janitor) on the current runtime.
pub fn build_server(
    listener: TcpListener,
    pool: PgPool,
    settings: Settings,
) -> std::io::Result<Server> {
    build_server_on(vec![listener], pool, settings)
}

/// [`build_server`] on several listeners serving the same application.
pub fn build_server_on(
    listeners: Vec<TcpListener>,
    pool: PgPool,
    mut settings: Settings,
) -> std::io::Result<Server> {
    password::warm_up();
    // Links in e-mail need an address; without TDC_PUBLIC_URL, the first listener's.
    if settings.public_url.is_empty()
        && let Some(addr) = listeners.first().and_then(|l| l.local_addr().ok())
    {
        settings.public_url = format!("http://{addr}");
    }
    let mailer = notify::mailer::Mailer::from_settings(&settings).map_err(std::io::Error::other)?;
    let links = notify::links::LinkKey::derive(settings.jwt_secret.expose_secret());
    let workers = settings.workers;
    let hub = Hub::new(
        pool.clone(),
        settings.sse_queue,
        settings.sse_session_recheck,
    );
    let heartbeat = Heartbeat::new();
    let mut tasks = vec![
        hub.spawn(),
        heartbeat.spawn(settings.sse_heartbeat),
        spawn_janitor(pool.clone(), &settings),
    ];
    let on_signal = settings.close_streams_on_signal.then(|| Arc::clone(&hub));
    let mut scheduler_drain = None;
    if settings.scheduler {
        let (task, drain) = jobs::scheduler::spawn(
            pool.clone(),
            SchedulerConfig {
                statement_timeout: settings.tenant_statement_timeout,
                storage_quota: settings.tenant_storage_bytes,
                concurrency: settings.scheduler_concurrency,
                tenant_concurrency: settings.scheduler_tenant_concurrency,
                batch: 256,
                retry_backoff: settings.retry_backoff,
                max_sleep: std::time::Duration::from_secs(30),
            },
        );
        tasks.push(task);
        scheduler_drain = Some(drain);
    }
    let mut outbox_drain = None;
    let mut email_drain = None;
    if settings.outbox {
        let client = DeliveryClient::from_settings(&settings).map_err(std::io::Error::other)?;
        let (task, drain) = notify::outbox::spawn(
            pool.clone(),
            client,
            hub.deliveries_due(),
            OutboxConfig::from_settings(&settings),
        );
        tasks.push(task);
        outbox_drain = Some(drain);
        if let Some(mailer) = mailer.clone() {
            let (task, drain) = notify::email::spawn(
                pool.clone(),
                mailer,
                links.clone(),
                hub.deliveries_due(),
                notify::email::EmailConfig::from_settings(&settings),
            );
            tasks.push(task);
            email_drain = Some(drain);
        }
    }
    let state = web::Data::new(AppState {
        sessions: auth::sessions::SessionCache::new(settings.session_cache, hub.revocations()),
        keys: auth::keys::KeyCache::new(settings.session_cache, hub.revocations()),
        key_meter: auth::keys::KeyMeter::default(),
        hub,
        heartbeat,
        background: Background::new(tasks),
        links,
        mailer_configured: mailer.is_some(),
        health: db::probe::Probe::new(&pool),
        pool,
        jwt: JwtKeys::new(settings.jwt_secret.expose_secret().as_bytes()),
        login_throttle: LoginThrottle::new(LoginLimits {
            per_ip_per_minute: settings.login_per_ip_per_minute,
            per_account_per_minute: settings.login_per_account_per_minute,
            free_failures: settings.login_free_failures,
            backoff_base: settings.login_backoff,
            backoff_max: settings.login_backoff_max,
        }),
        metrics: service::metrics::handle(),
        tenant_slots: db::tenant::TenantSlots::new(settings.tenant_concurrent_queries),
        read_slots: db::tenant::TenantSlots::new(settings.tenant_concurrent_reads),
        upload_slots: db::tenant::TenantSlots::new(settings.tenant_concurrent_uploads),
        stream_slots: db::tenant::TenantSlots::new(settings.tenant_max_streams),
        key_stream_slots: db::tenant::TenantSlots::new(settings.key_max_streams),
        settings: Arc::new(settings),
    });
    // Connect /health's own connection now rather than on the first check, whose deadline
    // a slow connection set-up (password hashing, a new backend) on a busy host could miss.
    let warm = state.clone();
    tokio::spawn(async move {
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(10), warm.health.warm_up()).await;
    });
    let json_config = web::JsonConfig::default()
        .limit(state.settings.json_limit_bytes)
        .error_handler(error::json_error);
    let cors_origins = state.settings.cors_origins.clone();
    let cors_max_age = state.settings.cors_max_age;
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(json_config.clone())
            .configure(auth::routes)
            .configure(service::routes)
            .configure(tables::routes)
            .configure(views::routes)
            .configure(jobs::routes)
            .configure(channels::routes)
            .configure(notify::routes)
            .configure(console::routes)
            .default_service(web::to(not_found))
            // Innermost: its refusals become problem JSON like every other error, and
            // it answers preflights before routing (which knows no OPTIONS).
            .wrap(middleware::Condition::new(
                !cors_origins.is_empty(),
                cors(&cors_origins, cors_max_age),
            ))
            .wrap(error::problem_json_for_everything())
            // Outside the problem-JSON rewrite, so every key-authenticated answer keeps them.
            .wrap(from_fn(auth::caller::rate_limit_headers))
            .wrap(middleware::NormalizePath::trim())
            // Outside NormalizePath, which would make `/console` and `/console/` one path.
            .wrap(from_fn(console::redirect_bare_path))
            .wrap(from_fn(service::metrics::record))
            .wrap(from_fn(request_id_header))
            .wrap(from_fn(security_headers))
            .wrap(TracingLogger::<telemetry::AccessLog>::new())
            .wrap(from_fn(auth::query_token::strip_access_token))
    })
    .shutdown_timeout(10);
    for listener in listeners {
        server = server.listen(listener)?;
    }
    if let Some(workers) = workers {
        server = server.workers(workers);
    }
    if on_signal.is_some() {
        // actix stops at once on SIGINT (drains only on SIGTERM); we drain on both.
        server = server.disable_signals();
    }
    let server = server.run();
    if let Some(hub) = on_signal {
        spawn_drain_on_signal(
            hub,
            scheduler_drain,
            outbox_drain,
            email_drain,
            server.handle(),
        );
    }
    Ok(server)
}

/// CORS for the configured browser origins (exact, as validated by the configuration). Bearer
/// tokens, not cookies: no credentials mode. A request from another origin is served as usual
/// without CORS headers (its browser then hides the answer); a preflight from one is not
/// answered as a preflight.
fn cors(origins: &[String], max_age: std::time::Duration) -> Cors {
    origins
        .iter()
        .fold(Cors::default(), |cors, origin| cors.allowed_origin(origin))
        .allowed_methods(["GET", "POST", "PATCH", "DELETE"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            header::RETRY_AFTER,
            header::LOCATION,
            header::CONTENT_DISPOSITION,
            header::WWW_AUTHENTICATE,
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(usize::try_from(max_age.as_secs()).unwrap_or(usize::MAX))
        .block_on_origin_mismatch(false)
}

/// At SIGINT or SIGTERM, drains: ends the SSE streams (they never end by themselves, and would
/// hold the drain for its whole timeout), lets the job runs and webhook attempts this process
/// started finish (up to 10 s; it claims no new ones; an attempt cut off is sent again after
/// its lease), then stops the HTTP server gracefully (it stops accepting
/// and lets in-flight requests finish, up to the shutdown timeout). While the runs finish the
/// server still answers, so a load balancer that has not yet seen the replica go loses nothing.
fn spawn_drain_on_signal(
    hub: Arc<Hub>,
    scheduler: Option<crate::drain::Drain>,
    outbox: Option<crate::drain::Drain>,
    email: Option<crate::drain::Drain>,
    server: actix_web::dev::ServerHandle,
) {
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
        tracing::info!("shutting down: draining requests, ending SSE streams");
        hub.close_all();
        let limit = std::time::Duration::from_secs(10);
        tokio::join!(
            async {
                if let Some(scheduler) = scheduler {
                    scheduler.drain(limit).await;
                }
            },
            async {
                if let Some(outbox) = outbox {
                    outbox.drain(limit).await;
                }
            },
            async {
                if let Some(email) = email {
                    email.drain(limit).await;
                }
            }
        );
        server.stop(true).await;
    });
}

/// Deletes run history and channel events past their retention, once a minute.
fn spawn_janitor(pool: PgPool, settings: &Settings) -> tokio::task::JoinHandle<()> {
    let (run_age, run_max, event_age) = (
        settings.run_history_age,
        settings.run_history_max,
        settings.event_retention,
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            if let Err(e) = jobs::runs::prune_runs(&pool, run_age, run_max).await {
                tracing::warn!(error = %format!("{e:#}"), "janitor: pruning job runs failed");
            }
            if let Err(e) = channels::events::prune(&pool, event_age).await {
                tracing::warn!(error = %e, "janitor: pruning channel events failed");
            }
        }
    })
}

async fn not_found(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound {
        detail: format!("no route for {} {}", req.method(), req.path()),
    })
}

/// Echoes the request id that `TracingLogger` put in every log line as `x-request-id`, so a
/// client can quote it in a bug report.
async fn request_id_header(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req.extensions().get::<RequestId>().copied();
    let mut res = next.call(req).await?;
    if let Some(value) = id.and_then(|id| HeaderValue::from_str(&id.to_string()).ok()) {
        res.headers_mut()
            .insert(HeaderName::from_static("x-request-id"), value);
    }
    Ok(res)
}

/// Headers every answer carries: `nosniff`, so no answer (a CSV export, a problem document,
/// a tenant's value in JSON) is ever sniffed into HTML or script; and, on answers that set no
/// Content-Security-Policy of their own (the API's, not the console's or the e-mail pages'),
/// a refusal to be framed, so no page of another site can overlay them.
async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'"),
        );
        if !headers.contains_key(header::X_FRAME_OPTIONS) {
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        }
    }
    Ok(res)
}

/// A database to use: the configured URL, or the managed local cluster (kept running until
/// the returned cluster is stopped or dropped).
pub struct Database {
    /// Connection options of the service role.
    pub options: PgConnectOptions,
    /// The managed cluster, when we run one.
    pub cluster: Option<LocalCluster>,
}

/// Resolves `DATABASE_URL`, or starts (creating on first run) the managed local cluster under
/// the data directory with its service role and database.
pub async fn open_database(args: &DatabaseArgs) -> anyhow::Result<Database> {
    if let Some(url) = &args.database_url {
        let options: PgConnectOptions = url
            .expose_secret()
            .parse()
            .context("DATABASE_URL is not a valid PostgreSQL URL")?;
        return Ok(Database {
            options,
            cluster: None,
        });
    }
    anyhow::ensure!(
        !args.require_database_url,
        "DATABASE_URL is not set, and TDC_REQUIRE_DATABASE_URL=true says this installation has \
         no PostgreSQL of its own to start (the container image): set DATABASE_URL"
    );
    let mut cluster_options = ClusterOptions::new(&args.data_dir);
    // Server-level only (a role setting would not apply after SET ROLE): a tenant query that
    // spills more than this to disk is cancelled.
    cluster_options
        .settings
        .push(("temp_file_limit".to_owned(), "2GB".to_owned()));
    let cluster = tokio::task::spawn_blocking(move || LocalCluster::start(&cluster_options))
        .await
        .context("the cluster start task failed")??;
    tracing::info!(
        data_dir = %cluster.data_dir().display(),
        port = cluster.port(),
        "managed PostgreSQL is up"
    );
    let password: SecretString =
        secrets::read_or_create(&cluster.data_dir().join("service_password"))
            .context("reading the service role's password")?
            .into();
    cluster.ensure_service_role(&password).await?;
    cluster.ensure_database(LOCAL_DATABASE).await?;
    Ok(Database {
        options: cluster.service_options(LOCAL_DATABASE, &password),
        cluster: Some(cluster),
    })
}

/// The JWT key: `--jwt-secret`, else (managed cluster only) the one kept in the data directory.
fn jwt_secret(args: &ServeArgs, data_dir: &Path) -> anyhow::Result<SecretString> {
    let secret = match (&args.jwt_secret, &args.database.database_url) {
        (Some(secret), _) => secret.clone(),
        (None, Some(_)) => anyhow::bail!(
            "JWT_SECRET must be set (at least {MIN_JWT_SECRET_BYTES} bytes) when DATABASE_URL is set, so that every serve process signs tokens with the same key"
        ),
        (None, None) => secrets::read_or_create(&data_dir.join("jwt_secret"))
            .context("reading the JWT secret")?
            .into(),
    };
    let len = secret.expose_secret().len();
    anyhow::ensure!(
        len >= MIN_JWT_SECRET_BYTES,
        "JWT_SECRET is {len} bytes long; it must be at least {MIN_JWT_SECRET_BYTES}"
    );
    Ok(secret)
}

/// `tinydevcrm serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Fail on a missing secret before starting anything.
    if args.database.database_url.is_some() {
        jwt_secret(&args, &args.database.data_dir)?;
    }
    // Both addresses are bound before anything starts, so a busy port fails fast and loud.
    let listeners = bind_listeners(&args)?;
    let database = open_database(&args.database).await?;
    let data_dir = database.cluster.as_ref().map_or_else(
        || args.database.data_dir.clone(),
        |c| c.data_dir().to_path_buf(),
    );
    let mut settings = args.settings.clone();
    settings.jwt_secret = jwt_secret(&args, &data_dir)?;
    settings.close_streams_on_signal = true;
    let pool = db::pool(database.options.clone(), args.database.db_max_connections);
    db::migrate(&pool).await.context("applying migrations")?;
    db::check_privileges(&pool)
        .await
        .context("checking the database privileges")?;
    let hardening = db::hardening::checks(&pool)
        .await
        .context("checking which database hardening is in force")?;
    // The gauges need the recorder, which the server would install a moment later.
    service::metrics::handle();
    db::hardening::report(&hardening);
    // From here on, a managed server that dies is restarted; the pool reconnects by itself.
    let supervised = database.cluster.map(LocalCluster::supervise);
    let result = build_server_on(listeners, pool.clone(), settings)?.await;
    pool.close().await;
    if let Some(cluster) = supervised {
        let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
    }
    result.context("the HTTP server failed")
}

/// The main address and, unless `TDC_STREAM_BIND` is empty, the stream address. A stream port
/// that cannot be bound is an error naming the port and the setting: a warning let a client of
/// that port talk to whatever other process held it.
fn bind_listeners(args: &ServeArgs) -> anyhow::Result<Vec<TcpListener>> {
    let mut listeners = vec![
        TcpListener::bind(args.bind)
            .with_context(|| format!("binding {} (TDC_BIND / --bind)", args.bind))?,
    ];
    tracing::info!(address = %args.bind, "serving HTTP");
    let stream_bind = args.settings.stream_bind.trim();
    if !stream_bind.is_empty() {
        // The original served SSE on Pushpin's port; its walkthrough's listen URL works here.
        let listener = TcpListener::bind(stream_bind).with_context(|| {
            format!(
                "binding the stream port {stream_bind} (set TDC_STREAM_BIND / --stream-bind \
                 to another address, or empty to turn it off)"
            )
        })?;
        tracing::info!(address = %stream_bind, "serving HTTP (stream port)");
        listeners.push(listener);
    }
    Ok(listeners)
}

/// `tinydevcrm migrate`.
pub async fn migrate(args: DatabaseArgs) -> anyhow::Result<()> {
    let database = open_database(&args).await?;
    let pool = db::pool(database.options.clone(), 2);
    let result = db::migrate(&pool).await.context("applying migrations");
    pool.close().await;
    stop_cluster(database.cluster).await;
    result?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn stop_cluster(cluster: Option<LocalCluster>) {
    if let Some(cluster) = cluster {
        let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
    }
}
