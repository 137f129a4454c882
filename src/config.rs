//! Configuration: every command-line flag also reads an environment variable (12-factor). Each
//! setting is declared once, as a clap argument of [`Settings`] (flattened into `serve`'s flags)
//! whose value parser yields the type the application uses; its default lives in that attribute
//! only. Secrets (the JWT key, the database URL) are [`SecretString`]s, so no `Debug` shows them.

use std::net::SocketAddr;
use std::num::{NonZeroU32, ParseIntError};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, FromArgMatches, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

use crate::secrets;

/// The `tinydevcrm` command line.
#[derive(Debug, Parser)]
#[command(
    name = "tinydevcrm",
    version,
    about = "Multi-tenant realtime data platform"
)]
pub struct Cli {
    /// Log output format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format: human-readable or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, coloured when the output is a terminal.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API; with DATABASE_URL unset, also run a managed local PostgreSQL.
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseArgs),
    /// Ask a running `serve` for `/health`: exit 0 when it answers 200 with status UP within
    /// 3 s, else say why and exit 1 (the container's health check).
    Health(HealthArgs),
    /// Write deterministic telephone call records as Parquet (for `sample.parquet` and
    /// benchmarks).
    Sample(SampleArgs),
    /// The command-line client's commands (`login`, `tables`, `views`, ...), which talk to a
    /// server over HTTP.
    #[command(flatten)]
    Client(crate::cli::args::ClientCommand),
}

/// Flags of `health`.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// The service's base URL (`http://host:port`); default: the address of `--bind`.
    #[arg(long)]
    pub url: Option<String>,
    /// The address `serve` listens on (read like `serve`'s, so the check finds it); an
    /// unspecified address (`0.0.0.0`) is asked on loopback.
    #[arg(long, env = "TDC_BIND", default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,
}

/// Flags of `sample`.
#[derive(Debug, Clone, Args)]
pub struct SampleArgs {
    /// Number of calls (each is a start and an end record).
    #[arg(long, default_value_t = 3000)]
    pub calls: usize,
    /// Seed: the same seed writes the same file.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output file.
    #[arg(long, default_value = "sample.parquet")]
    pub out: PathBuf,
    /// What to write: call records, or the SIM-usage tutorial's inventory or usage (fixed
    /// contents; `--calls` and `--seed` apply to call records only).
    #[arg(long, value_enum, default_value_t = SampleDataset::Calls)]
    pub dataset: SampleDataset,
}

/// The data sets `sample` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SampleDataset {
    /// Telephone call records (`sample.parquet`).
    Calls,
    /// SIM cards and their organisations (`docs/tutorials/data/inventory.parquet`).
    SimInventory,
    /// 48 hours of SIM usage (`docs/tutorials/data/usage.parquet`).
    SimUsage,
}

/// Where the data lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Directory for the managed PostgreSQL cluster and local secrets.
    #[arg(long, env = "TDC_DATA_DIR", default_value = "./.tinydevcrm")]
    pub data_dir: PathBuf,
    /// An existing PostgreSQL database to use instead of the managed local cluster.
    // A secret: the URL usually carries the password.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,
    /// Largest number of pooled database connections.
    #[arg(long, env = "TDC_DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,
    /// Refuse to start a managed local PostgreSQL: DATABASE_URL must be set (the container
    /// image sets this; it has no PostgreSQL of its own).
    #[arg(long, env = "TDC_REQUIRE_DATABASE_URL", default_value_t = false, action = clap::ArgAction::Set)]
    pub require_database_url: bool,
}

/// Flags of `serve`: where to listen and which key to sign with, then the [`Settings`].
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address to listen on.
    #[arg(long, env = "TDC_BIND", default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,
    /// HMAC secret for JWTs (at least 32 bytes); required with DATABASE_URL, else generated once
    /// and kept in the data directory.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,
    #[command(flatten)]
    pub settings: Settings,
}

/// The shortest accepted JWT secret.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// What the application is built from: each field is its own `serve` flag and environment
/// variable, declared (with its default) only here. Tests start from [`Settings::defaults`].
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// HMAC-SHA256 key for access and refresh tokens. Not a flag of its own: `serve` sets it
    /// from `--jwt-secret` or the data directory; elsewhere it starts as a fresh random key,
    /// which only one process knows.
    #[arg(skip = SecretString::from(secrets::generate()))]
    pub jwt_secret: SecretString,
    /// Lifetime of access tokens, in seconds.
    #[arg(
        long = "access-token-ttl-secs",
        value_name = "ACCESS_TOKEN_TTL_SECS",
        env = "TDC_ACCESS_TOKEN_TTL_SECS",
        default_value = "300",
        value_parser = seconds
    )]
    pub access_token_ttl: Duration,
    /// Lifetime of a session's refresh token, in seconds.
    #[arg(
        long = "refresh-token-ttl-secs",
        value_name = "REFRESH_TOKEN_TTL_SECS",
        env = "TDC_REFRESH_TOKEN_TTL_SECS",
        default_value = "86400",
        value_parser = seconds
    )]
    pub refresh_token_ttl: Duration,
    /// Largest accepted JSON body, in bytes.
    #[arg(long, env = "TDC_JSON_LIMIT_BYTES", default_value_t = 256 * 1024)]
    pub json_limit_bytes: usize,
    /// Requests per minute an API key may make unless it has its own limit (counted per
    /// process).
    #[arg(long, env = "TDC_KEY_RATE_LIMIT_PER_MINUTE", default_value = "600")]
    pub key_rate_limit_per_minute: NonZeroU32,
    /// Listen streams one API key may hold open at once, per process (429 beyond): a leaked
    /// listen key must not take every stream slot of its tenant from the owner.
    #[arg(long, env = "TDC_KEY_MAX_STREAMS", default_value_t = 10)]
    pub key_max_streams: usize,
    /// Token requests allowed per client IP per minute.
    #[arg(long, env = "TDC_LOGIN_PER_IP_PER_MINUTE", default_value = "30")]
    pub login_per_ip_per_minute: NonZeroU32,
    /// Token requests allowed per account (e-mail) per minute from all addresses together: a
    /// ceiling against distributed guessing, well above what one address gets through its
    /// backoff.
    #[arg(long, env = "TDC_LOGIN_PER_ACCOUNT_PER_MINUTE", default_value = "100")]
    pub login_per_account_per_minute: NonZeroU32,
    /// Consecutive failed logins of one account from one address before each further attempt
    /// must wait.
    #[arg(long, env = "TDC_LOGIN_FREE_FAILURES", default_value_t = 5)]
    pub login_free_failures: u32,
    /// The first wait after the free failures, in seconds; it doubles with every failure.
    #[arg(
        long = "login-backoff-secs",
        value_name = "LOGIN_BACKOFF_SECS",
        env = "TDC_LOGIN_BACKOFF_SECS",
        default_value = "1",
        value_parser = seconds
    )]
    pub login_backoff: Duration,
    /// The longest wait between attempts of one account from one address, in seconds.
    #[arg(
        long = "login-backoff-max-secs",
        value_name = "LOGIN_BACKOFF_MAX_SECS",
        env = "TDC_LOGIN_BACKOFF_MAX_SECS",
        default_value = "900",
        value_parser = seconds
    )]
    pub login_backoff_max: Duration,
    /// Take the client IP for throttling from the right-most `X-Forwarded-For` entry (only
    /// behind a proxy that appends it).
    #[arg(long, env = "TDC_TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,
    /// Largest accepted upload, in bytes.
    #[arg(long, env = "TDC_UPLOAD_LIMIT_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub upload_limit_bytes: u64,
    /// Largest JSON/NDJSON body of rows, in bytes.
    #[arg(long, env = "TDC_ROWS_BODY_LIMIT_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub rows_body_limit_bytes: usize,
    /// Most columns a table may have.
    #[arg(long, env = "TDC_MAX_COLUMNS", default_value_t = 1000)]
    pub max_columns: usize,
    /// Most tables and views (together) a tenant may have.
    #[arg(long, env = "TDC_MAX_TABLES_PER_TENANT", default_value_t = 1000)]
    pub max_tables_per_tenant: i64,
    /// Storage a tenant's tables and views may take, in bytes (as PostgreSQL measures it,
    /// indexes and TOAST included).
    #[arg(long, env = "TDC_TENANT_STORAGE_BYTES", default_value_t = 10 * 1024 * 1024 * 1024)]
    pub tenant_storage_bytes: u64,
    /// Statement timeout of every statement run as a tenant, in seconds.
    #[arg(
        long = "tenant-statement-timeout-secs",
        value_name = "TENANT_STATEMENT_TIMEOUT_SECS",
        env = "TDC_TENANT_STATEMENT_TIMEOUT_SECS",
        default_value = "300",
        value_parser = seconds
    )]
    pub tenant_statement_timeout: Duration,
    /// Heavy statements (view creation and refresh) one tenant may run at once (429 beyond).
    #[arg(long, env = "TDC_TENANT_CONCURRENT_QUERIES", default_value_t = 4)]
    pub tenant_concurrent_queries: usize,
    /// Row reads and exports one tenant may have in progress at once, per process (429 beyond).
    #[arg(long, env = "TDC_TENANT_CONCURRENT_READS", default_value_t = 4)]
    pub tenant_concurrent_reads: usize,
    /// Uploads (new tables, more rows) one tenant may have in progress at once, per process
    /// (429 beyond): each holds a pooled connection and its decoded rows in memory.
    #[arg(long, env = "TDC_TENANT_CONCURRENT_UPLOADS", default_value_t = 2)]
    pub tenant_concurrent_uploads: usize,
    /// Listen streams one tenant may hold open at once, per process (429 beyond): each holds a
    /// socket, and a process has a limited number of open files.
    #[arg(long, env = "TDC_TENANT_MAX_STREAMS", default_value_t = 100)]
    pub tenant_max_streams: usize,
    /// Largest CSV/Parquet export, in bytes (it is written to a temporary file before it is sent).
    #[arg(long, env = "TDC_EXPORT_SPOOL_LIMIT_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub export_spool_limit_bytes: u64,
    /// Seconds an export waits for a client that reads nothing before it ends the download.
    #[arg(
        long = "export-write-timeout-secs",
        value_name = "EXPORT_WRITE_TIMEOUT_SECS",
        env = "TDC_EXPORT_WRITE_TIMEOUT_SECS",
        default_value = "30",
        value_parser = seconds_at_least_one
    )]
    pub export_write_stall: Duration,
    /// Largest JSON page of rows, in bytes (built in memory; 400 `response_too_large` beyond).
    #[arg(long, env = "TDC_ROWS_RESPONSE_LIMIT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub rows_response_limit_bytes: usize,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "TDC_WORKERS")]
    pub workers: Option<usize>,
    /// A second address serving the same API, for the original walkthrough's listen URL
    /// (Pushpin's port); empty to turn it off.
    // Read by `serve` only; declared here to keep its place in `--help`.
    #[arg(long, env = "TDC_STREAM_BIND", default_value = "127.0.0.1:7999")]
    pub stream_bind: String,
    /// Most jobs a tenant may have.
    #[arg(long, env = "TDC_MAX_JOBS_PER_TENANT", default_value_t = 1000)]
    pub max_jobs_per_tenant: i64,
    /// Most channels a tenant may have.
    #[arg(long, env = "TDC_MAX_CHANNELS_PER_TENANT", default_value_t = 1000)]
    pub max_channels_per_tenant: i64,
    /// Most webhook subscriptions one channel may have.
    #[arg(long, env = "TDC_MAX_WEBHOOKS_PER_CHANNEL", default_value_t = 10)]
    pub max_webhooks_per_channel: i64,
    /// Most notification subscriptions (webhooks and e-mail, over all channels) a tenant may have.
    #[arg(long, env = "TDC_MAX_SUBSCRIPTIONS_PER_TENANT", default_value_t = 100)]
    pub max_subscriptions_per_tenant: i64,
    /// After a webhook's secret is rotated, how long the previous secret keeps signing next to
    /// the new one (receivers switch within it), in seconds.
    #[arg(
        long = "webhook-rotation-overlap-secs",
        value_name = "WEBHOOK_ROTATION_OVERLAP_SECS",
        env = "TDC_WEBHOOK_ROTATION_OVERLAP_SECS",
        default_value = "86400",
        value_parser = seconds
    )]
    pub webhook_rotation_overlap: Duration,
    /// Run the job scheduler in this process.
    #[arg(long, env = "TDC_SCHEDULER", default_value_t = true, action = clap::ArgAction::Set)]
    pub scheduler: bool,
    /// Job runs one process executes at once.
    #[arg(long, env = "TDC_SCHEDULER_CONCURRENCY", default_value_t = 8)]
    pub scheduler_concurrency: usize,
    /// Job runs one tenant may have in progress at once, across every process.
    #[arg(
        long,
        env = "TDC_SCHEDULER_TENANT_CONCURRENCY",
        default_value_t = 2,
        value_parser = at_least_one
    )]
    pub scheduler_tenant_concurrency: i64,
    /// First retry delay of a failed job run, in milliseconds (doubles per attempt).
    #[arg(
        long = "retry-backoff-ms",
        value_name = "RETRY_BACKOFF_MS",
        env = "TDC_RETRY_BACKOFF_MS",
        default_value = "1000",
        value_parser = milliseconds
    )]
    pub retry_backoff: Duration,
    /// Run history kept per job: at most this many runs...
    #[arg(long, env = "TDC_RUN_HISTORY_MAX", default_value_t = 1000)]
    pub run_history_max: i64,
    /// ...and none older than this many days.
    #[arg(
        long = "run-history-days",
        value_name = "RUN_HISTORY_DAYS",
        env = "TDC_RUN_HISTORY_DAYS",
        default_value = "30",
        value_parser = days
    )]
    pub run_history_age: chrono::Duration,
    /// Channel events kept for resuming clients, in hours.
    #[arg(
        long = "event-retention-hours",
        value_name = "EVENT_RETENTION_HOURS",
        env = "TDC_EVENT_RETENTION_HOURS",
        default_value = "168",
        value_parser = hours
    )]
    pub event_retention: chrono::Duration,
    /// Seconds between SSE heartbeat comments.
    #[arg(
        long = "sse-heartbeat-secs",
        value_name = "SSE_HEARTBEAT_SECS",
        env = "TDC_SSE_HEARTBEAT_SECS",
        default_value = "15",
        value_parser = seconds_at_least_one
    )]
    pub sse_heartbeat: Duration,
    /// Events a listener may fall behind before it is disconnected (it then replays).
    #[arg(long, env = "TDC_SSE_QUEUE", default_value_t = 256)]
    pub sse_queue: usize,
    /// Seconds between re-checks of the sessions of open SSE streams against the database: the
    /// backstop for a revocation whose notification was missed (the hub was reconnecting).
    #[arg(
        long = "sse-session-recheck-secs",
        value_name = "SSE_SESSION_RECHECK_SECS",
        env = "TDC_SSE_SESSION_RECHECK_SECS",
        default_value = "30",
        value_parser = seconds_at_least_one
    )]
    pub sse_session_recheck: Duration,
    /// Seconds an authenticated request may trust a session found live by an earlier request
    /// of this process, instead of reading it again (0 reads it every time). Revocations end
    /// the trust at once: see `auth::sessions`.
    #[arg(
        long = "session-cache-secs",
        value_name = "SESSION_CACHE_SECS",
        env = "TDC_SESSION_CACHE_SECS",
        default_value = "10",
        value_parser = seconds
    )]
    pub session_cache: Duration,
    /// Browser origins (`https://dash.example.com`, comma-separated, exact) allowed to call the
    /// API from their pages (CORS); none by default, and then no CORS headers are sent at all.
    // One value holding the list (the path spelled out keeps clap from reading `Vec` as a
    // repeated flag), so that an empty variable means none rather than an invalid origin.
    #[arg(
        long,
        env = "TDC_CORS_ORIGINS",
        default_value = "",
        hide_default_value = true,
        value_parser = cors_origins
    )]
    pub cors_origins: std::vec::Vec<String>,
    /// How long browsers may cache a CORS preflight answer, in seconds.
    #[arg(
        long = "cors-max-age-secs",
        value_name = "CORS_MAX_AGE_SECS",
        env = "TDC_CORS_MAX_AGE_SECS",
        default_value = "600",
        value_parser = seconds
    )]
    pub cors_max_age: Duration,
    /// Deliver webhooks to plain `http://` URLs too (https only by default).
    #[arg(long, env = "TDC_WEBHOOK_ALLOW_HTTP", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_http: bool,
    /// Address ranges (`10.1.0.0/16`, `fd00::/8` or a single address, comma-separated) that
    /// webhooks may be delivered to although they are loopback, private, link-local or
    /// otherwise internal; none by default.
    // One value holding the list, as for `cors_origins`.
    #[arg(
        long,
        env = "TDC_WEBHOOK_ALLOW_CIDRS",
        default_value = "",
        hide_default_value = true,
        value_parser = cidrs
    )]
    pub webhook_allow_cidrs: std::vec::Vec<ipnet::IpNet>,
    /// Time one webhook delivery attempt may take, in seconds.
    #[arg(
        long = "webhook-timeout-secs",
        value_name = "WEBHOOK_TIMEOUT_SECS",
        env = "TDC_WEBHOOK_TIMEOUT_SECS",
        default_value = "15",
        value_parser = seconds_at_least_one
    )]
    pub webhook_timeout: Duration,
    /// What a delivery's lease adds to the attempt timeout, in milliseconds: the time to record
    /// the outcome. A process killed mid-attempt holds the delivery this much past the timeout
    /// before another process sends it again; too short, and a slow database write lets a
    /// second process send a delivery whose outcome is still being recorded.
    #[arg(
        long = "webhook-lease-margin-ms",
        value_name = "WEBHOOK_LEASE_MARGIN_MS",
        env = "TDC_WEBHOOK_LEASE_MARGIN_MS",
        default_value = "30000",
        value_parser = milliseconds
    )]
    pub webhook_lease_margin: Duration,
    /// Drain the notification outbox (deliver webhooks) in this process.
    #[arg(long, env = "TDC_OUTBOX", default_value_t = true, action = clap::ArgAction::Set)]
    pub outbox: bool,
    /// Longest wait between two looks at the outbox, in milliseconds: the safety net for a
    /// wake-up lost while the LISTEN connection was down, and the pace of retries coming due.
    #[arg(
        long = "outbox-poll-ms",
        value_name = "OUTBOX_POLL_MS",
        env = "TDC_OUTBOX_POLL_MS",
        default_value = "1000",
        value_parser = milliseconds_at_least_one
    )]
    pub outbox_poll: Duration,
    /// Webhook attempts one process makes at once (0 is read as 1).
    #[arg(long, env = "TDC_WEBHOOK_CONCURRENCY", default_value_t = 16)]
    pub webhook_concurrency: usize,
    /// Webhook attempts one process makes at once to one destination host (0 is read as 1), so
    /// that a slow receiver cannot take every slot.
    #[arg(long, env = "TDC_WEBHOOK_CONCURRENCY_PER_HOST", default_value_t = 4)]
    pub webhook_concurrency_per_host: usize,
    /// Delays before each retry of a failed webhook attempt, comma-separated, each a number
    /// with a unit (`ms`, `s`, `m`, `h`); ±10% jitter is added. After the last one the delivery
    /// fails. Empty: no retries.
    // One value holding the list, as for `cors_origins`.
    #[arg(
        long,
        env = "TDC_WEBHOOK_RETRY_SCHEDULE",
        default_value = "5s,5m,30m,2h,5h,10h,10h",
        value_parser = delays
    )]
    pub webhook_retry_schedule: std::vec::Vec<Duration>,
    /// A subscription whose deliveries have failed without a success in between for this many
    /// seconds is disabled (5 days by default).
    #[arg(
        long = "webhook-disable-after-secs",
        value_name = "WEBHOOK_DISABLE_AFTER_SECS",
        env = "TDC_WEBHOOK_DISABLE_AFTER_SECS",
        default_value = "432000",
        value_parser = seconds
    )]
    pub webhook_disable_after: Duration,
    /// Finished (succeeded or failed) deliveries are kept this many seconds in the delivery log.
    #[arg(
        long = "delivery-retention-secs",
        value_name = "DELIVERY_RETENTION_SECS",
        env = "TDC_DELIVERY_RETENTION_SECS",
        default_value = "604800",
        value_parser = seconds
    )]
    pub delivery_retention: Duration,
    /// The service's address as recipients' browsers reach it (`https://crm.example.com`): the
    /// base of the confirmation and unsubscribe links in e-mail. Empty: `http://` and the
    /// address the server listens on, which only works for local use.
    #[arg(long, env = "TDC_PUBLIC_URL", default_value = "", hide_default_value = true, value_parser = public_url)]
    pub public_url: String,
    /// The SMTP server e-mail notifications go through: `smtp://host:port` (plain, local use),
    /// `smtp://host:587?tls=required` (STARTTLS), `smtps://host:465` (TLS); credentials may be
    /// in the URL (`smtps://user:pass@host`). Unset: the e-mail routes answer 503
    /// `email_not_configured`.
    // A secret: the URL may carry the password.
    #[arg(long, env = "TDC_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<SecretString>,
    /// SMTP user name, when it is not in `TDC_SMTP_URL`.
    #[arg(long, env = "TDC_SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    /// SMTP password, when it is not in `TDC_SMTP_URL`.
    #[arg(long, env = "TDC_SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<SecretString>,
    /// The `From` address of notification e-mail (`Notifications <noreply@example.com>`);
    /// required with `TDC_SMTP_URL`.
    #[arg(long, env = "TDC_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// Time one SMTP conversation (connect to the end of the message) may take, in seconds.
    #[arg(
        long = "smtp-timeout-secs",
        value_name = "SMTP_TIMEOUT_SECS",
        env = "TDC_SMTP_TIMEOUT_SECS",
        default_value = "30",
        value_parser = seconds_at_least_one
    )]
    pub smtp_timeout: Duration,
    /// At most one message per e-mail subscription per this many seconds: the first event goes
    /// out at once, the events that follow within the interval go together in the next one.
    #[arg(
        long = "email-interval-secs",
        value_name = "EMAIL_INTERVAL_SECS",
        env = "TDC_EMAIL_INTERVAL_SECS",
        default_value = "300",
        value_parser = seconds
    )]
    pub email_interval: Duration,
    /// How long a confirmation link works, in seconds (72 h by default).
    #[arg(
        long = "email-confirm-ttl-secs",
        value_name = "EMAIL_CONFIRM_TTL_SECS",
        env = "TDC_EMAIL_CONFIRM_TTL_SECS",
        default_value = "259200",
        value_parser = seconds_at_least_one
    )]
    pub email_confirm_ttl: Duration,
    /// At most one confirmation message per address per tenant per this many seconds (the
    /// address normalised: case, `+tag` and dots of the local part ignored).
    #[arg(
        long = "email-confirm-resend-secs",
        value_name = "EMAIL_CONFIRM_RESEND_SECS",
        env = "TDC_EMAIL_CONFIRM_RESEND_SECS",
        default_value = "900",
        value_parser = seconds
    )]
    pub email_confirm_resend: Duration,
    /// Confirmation messages one tenant may have sent in any rolling hour (over all its
    /// addresses); past it, creating and resending answer 429.
    #[arg(
        long,
        env = "TDC_EMAIL_CONFIRMATIONS_PER_TENANT_PER_HOUR",
        default_value_t = 20
    )]
    pub email_confirmations_per_tenant_per_hour: i64,
    /// Confirmation messages one address may receive in any rolling hour over every tenant
    /// (higher than one tenant's share, `3600 / TDC_EMAIL_CONFIRM_RESEND_SECS`, so that one
    /// tenant alone cannot use up another's).
    #[arg(
        long,
        env = "TDC_EMAIL_CONFIRMATIONS_PER_ADDRESS_PER_HOUR",
        default_value_t = 10
    )]
    pub email_confirmations_per_address_per_hour: i64,
    /// Most e-mail subscriptions one channel may have (they count toward
    /// `TDC_MAX_SUBSCRIPTIONS_PER_TENANT` too).
    #[arg(long, env = "TDC_MAX_EMAILS_PER_CHANNEL", default_value_t = 10)]
    pub max_emails_per_channel: i64,
    /// E-mail messages one process sends at once (0 is read as 1).
    #[arg(long, env = "TDC_EMAIL_CONCURRENCY", default_value_t = 4)]
    pub email_concurrency: usize,
    /// E-mail messages one process sends at once for one tenant (0 is read as 1), so that one
    /// tenant's backlog cannot take every slot.
    #[arg(long, env = "TDC_EMAIL_CONCURRENCY_PER_TENANT", default_value_t = 2)]
    pub email_concurrency_per_tenant: usize,
    /// Drain at SIGINT/SIGTERM alike: end the SSE streams, stop accepting, finish the requests
    /// in flight. Not a flag: `serve` turns it on; tests leave it off, where a signal handler
    /// would swallow Ctrl-C.
    #[arg(skip)]
    pub close_streams_on_signal: bool,
}

impl Settings {
    /// Every flag at its default, whatever the environment says, and a random JWT secret: what
    /// tests and benchmarks start from.
    pub fn defaults() -> Self {
        let command = Self::augment_args(clap::Command::new("tinydevcrm"))
            .mut_args(|arg| arg.env(None::<&str>));
        let matches = command
            .try_get_matches_from(["tinydevcrm"])
            .expect("BUG: every setting has a default");
        Self::from_arg_matches(&matches).expect("BUG: every default parses")
    }
}

/// A comma-separated list of origins (empty entries skipped), each as [`cors_origin`] reads it.
fn cors_origins(value: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .filter(|origin| !origin.trim().is_empty())
        .map(cors_origin)
        .collect()
}

/// A browser origin as the `Origin` header spells it: `http` or `https`, a host and an optional
/// port, nothing else (no path, no `*`, no `null`); lower-cased, its default port dropped.
fn cors_origin(value: &str) -> Result<String, String> {
    let value = value.trim();
    let refuse = |why: &str| {
        format!(
            "{value:?} is not an origin ({why}); write scheme://host[:port], e.g. https://dash.example.com"
        )
    };
    let lower = value.to_ascii_lowercase();
    let Some((scheme @ ("http" | "https"), rest)) = lower.split_once("://") else {
        return Err(refuse("the scheme must be http or https"));
    };
    if rest.contains(['/', '?', '#', '@', '*', ' ']) {
        return Err(refuse("only a host and a port may follow the scheme"));
    }
    // An IPv6 address is written in brackets; its colons are not the port's.
    let host_end = if rest.starts_with('[') {
        rest.find(']').map(|i| i + 1)
    } else {
        Some(rest.find(':').unwrap_or(rest.len()))
    };
    let Some((host, port)) = host_end.map(|i| rest.split_at(i)) else {
        return Err(refuse("an unclosed bracket"));
    };
    if host.is_empty() || host == "[]" {
        return Err(refuse("the host is missing"));
    }
    let port = match port.strip_prefix(':') {
        None if port.is_empty() => None,
        Some(port) if port.parse::<u16>().is_ok() => Some(port),
        _ => return Err(refuse("the port must be a number")),
    };
    Ok(match (scheme, port) {
        ("http", Some("80")) | ("https", Some("443")) | (_, None) => format!("{scheme}://{host}"),
        (_, Some(port)) => format!("{scheme}://{host}:{port}"),
    })
}

/// A comma-separated list of address ranges (empty entries skipped); a bare address is a
/// range of one.
fn cidrs(value: &str) -> Result<Vec<ipnet::IpNet>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|cidr| !cidr.is_empty())
        .map(|cidr| {
            cidr.parse::<ipnet::IpNet>()
                .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    format!("{cidr:?} is not an address range; write e.g. 10.1.0.0/16 or fd00::/8")
                })
        })
        .collect()
}

/// A base URL for links: `http` or `https`, a host, maybe a port and a path; kept without its
/// trailing slash. Empty stays empty (the listen address is used).
fn public_url(value: &str) -> Result<String, String> {
    let value = value.trim().trim_end_matches('/');
    if value.is_empty() {
        return Ok(String::new());
    }
    let refuse = |why: &str| {
        format!("{value:?} is not a public URL ({why}); write e.g. https://crm.example.com")
    };
    let url = url::Url::parse(value).map_err(|e| refuse(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refuse("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(refuse("the host is missing"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(refuse("no query, fragment or credentials"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A number of seconds.
fn seconds(value: &str) -> Result<Duration, ParseIntError> {
    value.parse().map(Duration::from_secs)
}

/// A number of seconds, 0 read as 1: these pace loops that must not spin.
fn seconds_at_least_one(value: &str) -> Result<Duration, ParseIntError> {
    value
        .parse()
        .map(|secs: u64| Duration::from_secs(secs.max(1)))
}

/// A number of milliseconds.
fn milliseconds(value: &str) -> Result<Duration, ParseIntError> {
    value.parse().map(Duration::from_millis)
}

/// A number of milliseconds, 0 read as 1 (it paces a loop).
fn milliseconds_at_least_one(value: &str) -> Result<Duration, ParseIntError> {
    value
        .parse()
        .map(|ms: u64| Duration::from_millis(ms.max(1)))
}

/// A comma-separated list of delays (empty entries skipped), each a whole number and a unit:
/// `250ms`, `5s`, `5m`, `2h`.
fn delays(value: &str) -> Result<Vec<Duration>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|delay| !delay.is_empty())
        .map(|delay| {
            let digits = delay.find(|c: char| !c.is_ascii_digit()).unwrap_or(delay.len());
            let (number, unit) = delay.split_at(digits);
            let refuse = || format!("{delay:?} is not a delay; write a whole number and ms, s, m or h, e.g. 5s,5m,30m");
            let number: u64 = number.parse().map_err(|_| refuse())?;
            let millis = match unit.trim() {
                "ms" => Some(number),
                "s" => number.checked_mul(1000),
                "m" => number.checked_mul(60_000),
                "h" => number.checked_mul(3_600_000),
                _ => return Err(refuse()),
            };
            millis.map(Duration::from_millis).ok_or_else(|| format!("{delay:?} is out of range"))
        })
        .collect()
}

/// A count of which at least one is needed, 0 or less read as 1.
fn at_least_one(value: &str) -> Result<i64, ParseIntError> {
    value.parse().map(|n: i64| n.max(1))
}

/// A number of days.
fn days(value: &str) -> Result<chrono::Duration, String> {
    let days: i64 = value.parse().map_err(|e: ParseIntError| e.to_string())?;
    chrono::Duration::try_days(days).ok_or_else(|| format!("{days} days is out of range"))
}

/// A number of hours.
fn hours(value: &str) -> Result<chrono::Duration, String> {
    let hours: i64 = value.parse().map_err(|e: ParseIntError| e.to_string())?;
    chrono::Duration::try_hours(hours).ok_or_else(|| format!("{hours} hours is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use secrecy::ExposeSecret;

    fn serve_args(args: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(["tinydevcrm", "serve"].iter().chain(args)).expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        *args
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_defaults_match_the_documented_ones() {
        let cli = Cli::try_parse_from(["tinydevcrm", "serve"]).expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        assert_eq!(args.bind.to_string(), "127.0.0.1:8000");
        assert_eq!(args.settings.access_token_ttl, Duration::from_secs(300));
    }

    #[test]
    fn the_test_defaults_are_the_flag_defaults() {
        let s = Settings::defaults();

        assert_eq!(s.access_token_ttl, Duration::from_secs(300));
        assert_eq!(s.refresh_token_ttl, Duration::from_secs(86_400));
        assert_eq!(s.json_limit_bytes, 256 * 1024);
        assert_eq!(s.login_per_ip_per_minute.get(), 30);
        assert_eq!(s.login_per_account_per_minute.get(), 100);
        assert_eq!(s.login_free_failures, 5);
        assert_eq!(s.login_backoff, Duration::from_secs(1));
        assert_eq!(s.login_backoff_max, Duration::from_secs(900));
        assert!(!s.trust_forwarded_for);
        assert_eq!(s.upload_limit_bytes, 1024 * 1024 * 1024);
        assert_eq!(s.rows_body_limit_bytes, 16 * 1024 * 1024);
        assert_eq!(s.max_columns, 1000);
        assert_eq!(s.max_tables_per_tenant, 1000);
        assert_eq!(s.tenant_storage_bytes, 10 * 1024 * 1024 * 1024);
        assert_eq!(s.tenant_statement_timeout, Duration::from_secs(300));
        assert_eq!(s.tenant_concurrent_queries, 4);
        assert_eq!(s.tenant_concurrent_reads, 4);
        assert_eq!(s.tenant_concurrent_uploads, 2);
        assert_eq!(s.tenant_max_streams, 100);
        assert_eq!(s.key_max_streams, 10);
        assert_eq!(s.export_spool_limit_bytes, 1024 * 1024 * 1024);
        assert_eq!(s.export_write_stall, Duration::from_secs(30));
        assert_eq!(s.rows_response_limit_bytes, 64 * 1024 * 1024);
        assert_eq!(s.workers, None);
        assert_eq!(s.stream_bind, "127.0.0.1:7999");
        assert_eq!(s.max_jobs_per_tenant, 1000);
        assert_eq!(s.max_channels_per_tenant, 1000);
        assert_eq!(s.max_webhooks_per_channel, 10);
        assert_eq!(s.max_subscriptions_per_tenant, 100);
        assert_eq!(s.webhook_rotation_overlap, Duration::from_secs(86_400));
        assert!(s.scheduler);
        assert_eq!(s.scheduler_concurrency, 8);
        assert_eq!(s.scheduler_tenant_concurrency, 2);
        assert_eq!(s.retry_backoff, Duration::from_secs(1));
        assert_eq!(s.run_history_max, 1000);
        assert_eq!(s.run_history_age, chrono::Duration::days(30));
        assert_eq!(s.event_retention, chrono::Duration::hours(168));
        assert_eq!(s.sse_heartbeat, Duration::from_secs(15));
        assert_eq!(s.sse_queue, 256);
        assert_eq!(s.sse_session_recheck, Duration::from_secs(30));
        assert!(s.cors_origins.is_empty());
        assert_eq!(s.cors_max_age, Duration::from_secs(600));
        assert!(!s.webhook_allow_http);
        assert!(s.webhook_allow_cidrs.is_empty());
        assert_eq!(s.webhook_timeout, Duration::from_secs(15));
        assert_eq!(s.webhook_lease_margin, Duration::from_secs(30));
        assert!(s.outbox);
        assert_eq!(s.outbox_poll, Duration::from_secs(1));
        assert_eq!(s.webhook_concurrency, 16);
        assert_eq!(s.webhook_concurrency_per_host, 4);
        assert_eq!(
            s.webhook_retry_schedule,
            [5, 300, 1800, 7200, 18_000, 36_000, 36_000].map(Duration::from_secs)
        );
        assert_eq!(s.webhook_disable_after, Duration::from_secs(432_000));
        assert_eq!(s.delivery_retention, Duration::from_secs(604_800));
        assert_eq!(s.public_url, "");
        assert!(s.smtp_url.is_none() && s.smtp_from.is_none());
        assert_eq!(s.email_interval, Duration::from_secs(300));
        assert_eq!(s.email_confirm_ttl, Duration::from_secs(259_200));
        assert_eq!(s.email_confirm_resend, Duration::from_secs(900));
        assert_eq!(s.max_emails_per_channel, 10);
        assert_eq!(s.email_confirmations_per_tenant_per_hour, 20);
        assert_eq!(s.email_concurrency_per_tenant, 2);
        assert_eq!(s.email_confirmations_per_address_per_hour, 10);
        assert!(!s.close_streams_on_signal);
        assert!(s.jwt_secret.expose_secret().len() >= MIN_JWT_SECRET_BYTES);
        assert_ne!(
            s.jwt_secret.expose_secret(),
            Settings::defaults().jwt_secret.expose_secret(),
            "each default gets its own random key"
        );
    }

    #[test]
    fn flags_are_read_in_their_units_and_loop_intervals_are_at_least_one() {
        let args = serve_args(&[
            "--access-token-ttl-secs=42",
            "--retry-backoff-ms=250",
            "--run-history-days=2",
            "--event-retention-hours=3",
            "--sse-heartbeat-secs=0",
            "--sse-session-recheck-secs=0",
            "--export-write-timeout-secs=0",
            "--scheduler-tenant-concurrency=0",
        ]);

        let s = args.settings;
        assert_eq!(s.access_token_ttl, Duration::from_secs(42));
        assert_eq!(s.retry_backoff, Duration::from_millis(250));
        assert_eq!(s.run_history_age, chrono::Duration::days(2));
        assert_eq!(s.event_retention, chrono::Duration::hours(3));
        assert_eq!(s.sse_heartbeat, Duration::from_secs(1));
        assert_eq!(s.sse_session_recheck, Duration::from_secs(1));
        assert_eq!(s.export_write_stall, Duration::from_secs(1));
        assert_eq!(s.scheduler_tenant_concurrency, 1);
    }

    #[test]
    fn cors_origins_are_read_as_browsers_send_them_and_anything_else_is_refused() {
        let args = serve_args(&[
            "--cors-origins=https://Dash.Example.com,http://localhost:5173, http://127.0.0.1:80,https://[::1]:443,http://[::1]:8080,",
        ]);
        assert_eq!(
            args.settings.cors_origins,
            [
                "https://dash.example.com",
                "http://localhost:5173",
                "http://127.0.0.1",
                "https://[::1]",
                "http://[::1]:8080"
            ]
        );
        for bad in [
            "*",
            "null",
            "dash.example.com",
            "ftp://dash.example.com",
            "https://dash.example.com/",
            "https://dash.example.com/app",
            "https://*.example.com",
            "https://user@dash.example.com",
            "https://dash.example.com:http",
            "https://dash.example.com:99999",
            "https://",
            "https://[::1",
        ] {
            let error = Cli::try_parse_from([
                "tinydevcrm",
                "serve",
                "--cors-origins",
                &format!("https://ok.example.com,{bad}"),
            ])
            .expect_err(bad);
            assert!(
                error.to_string().contains("not an origin"),
                "{bad}: {error}"
            );
        }
        // Empty (an unset variable in a template) is none.
        assert!(
            serve_args(&["--cors-origins="])
                .settings
                .cors_origins
                .is_empty()
        );
        assert!(
            serve_args(&["--cors-origins= , "])
                .settings
                .cors_origins
                .is_empty()
        );
    }

    #[test]
    fn a_retry_schedule_is_read_in_its_units_and_anything_else_is_refused() {
        let s = serve_args(&[
            "--webhook-retry-schedule=250ms, 5s,2m,1h,",
            "--outbox-poll-ms=0",
        ])
        .settings;
        assert_eq!(
            s.webhook_retry_schedule,
            [
                Duration::from_millis(250),
                Duration::from_secs(5),
                Duration::from_secs(120),
                Duration::from_secs(3600)
            ]
        );
        assert_eq!(s.outbox_poll, Duration::from_millis(1));
        assert!(
            serve_args(&["--webhook-retry-schedule="])
                .settings
                .webhook_retry_schedule
                .is_empty()
        );
        for bad in ["5", "5d", "s", "-5s", "1.5s", "5 s s", "99999999999999999h"] {
            let parsed = Cli::try_parse_from([
                "tinydevcrm",
                "serve",
                &format!("--webhook-retry-schedule={bad}"),
            ]);
            assert!(parsed.is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_public_url_is_an_http_base_kept_without_its_trailing_slash() {
        for (given, kept) in [
            ("", ""),
            ("https://crm.example.com/", "https://crm.example.com"),
            ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
            ("https://example.com/tdc/", "https://example.com/tdc"),
        ] {
            assert_eq!(public_url(given).expect(given), kept);
        }
        for bad in [
            "crm.example.com",
            "ftp://x",
            "https://",
            "https://x/?a=1",
            "https://u:p@x",
        ] {
            assert!(public_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn webhook_allow_cidrs_read_ranges_and_single_addresses_and_refuse_anything_else() {
        let args = serve_args(&[
            "--webhook-allow-cidrs=127.0.0.0/8, 10.1.2.3,fd00::/8,::1,",
            "--webhook-allow-http=true",
            "--webhook-timeout-secs=0",
        ]);

        let s = args.settings;
        let shown: Vec<String> = s
            .webhook_allow_cidrs
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["127.0.0.0/8", "10.1.2.3/32", "fd00::/8", "::1/128"]);
        assert!(s.webhook_allow_http);
        assert_eq!(s.webhook_timeout, Duration::from_secs(1));
        assert!(
            serve_args(&["--webhook-allow-cidrs= , "])
                .settings
                .webhook_allow_cidrs
                .is_empty()
        );
        for bad in ["localhost", "10.0.0.0/33", "10.0.0", "*"] {
            let error = Cli::try_parse_from([
                "tinydevcrm",
                "serve",
                "--webhook-allow-cidrs",
                &format!("127.0.0.0/8,{bad}"),
            ])
            .expect_err(bad);
            assert!(
                error.to_string().contains("not an address range"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn an_out_of_range_retention_is_refused_rather_than_a_panic() {
        let error = Cli::try_parse_from([
            "tinydevcrm",
            "serve",
            "--run-history-days",
            &i64::MAX.to_string(),
        ])
        .expect_err("out of range");

        assert!(error.to_string().contains("out of range"), "{error}");
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        const JWT: &str = "planted-jwt-secret-0123456789abcdef0123456789";
        const PASSWORD: &str = "planted-db-password-42";
        let url = format!("postgres://tinydevcrm:{PASSWORD}@db.example:5432/tinydevcrm");
        let args = serve_args(&["--jwt-secret", JWT, "--database-url", &url]);
        let mut settings = args.settings.clone();
        settings.jwt_secret = SecretString::from(JWT);

        let shown = [
            format!("{args:?}"),
            format!("{:?}", args.database),
            format!("{settings:?}"),
            format!("{settings:#?}"),
        ];

        for text in &shown {
            assert!(!text.contains(JWT), "the JWT secret leaked: {text}");
            assert!(!text.contains(PASSWORD), "the password leaked: {text}");
        }
        // Still there for the code that needs them.
        assert_eq!(
            args.jwt_secret.as_ref().map(|s| s.expose_secret()),
            Some(JWT)
        );
        assert_eq!(
            args.database
                .database_url
                .as_ref()
                .map(|s| s.expose_secret()),
            Some(url.as_str())
        );
    }
}
