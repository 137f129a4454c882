//! Configuration: every command-line flag also reads an environment variable (12-factor), and
//! the resolved [`Settings`] are what the application is built from (tests build them directly).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Write deterministic telephone call records as Parquet (for `sample.parquet` and
    /// benchmarks).
    Sample(SampleArgs),
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
}

/// Where the data lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Directory for the managed PostgreSQL cluster and local secrets.
    #[arg(long, env = "TDC_DATA_DIR", default_value = "./.tinydevcrm")]
    pub data_dir: PathBuf,
    /// An existing PostgreSQL database to use instead of the managed local cluster.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Largest number of pooled database connections.
    #[arg(long, env = "TDC_DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,
}

/// Flags of `serve`.
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
    pub jwt_secret: Option<String>,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "TDC_ACCESS_TOKEN_TTL_SECS", default_value_t = 300)]
    pub access_token_ttl_secs: u64,
    /// Lifetime of a session's refresh token, in seconds.
    #[arg(long, env = "TDC_REFRESH_TOKEN_TTL_SECS", default_value_t = 86_400)]
    pub refresh_token_ttl_secs: u64,
    /// Largest accepted JSON body, in bytes.
    #[arg(long, env = "TDC_JSON_LIMIT_BYTES", default_value_t = 256 * 1024)]
    pub json_limit_bytes: usize,
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
    #[arg(long, env = "TDC_LOGIN_BACKOFF_SECS", default_value_t = 1)]
    pub login_backoff_secs: u64,
    /// The longest wait between attempts of one account from one address, in seconds.
    #[arg(long, env = "TDC_LOGIN_BACKOFF_MAX_SECS", default_value_t = 900)]
    pub login_backoff_max_secs: u64,
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
    #[arg(long, env = "TDC_TENANT_STATEMENT_TIMEOUT_SECS", default_value_t = 300)]
    pub tenant_statement_timeout_secs: u64,
    /// Heavy statements (view creation and refresh) one tenant may run at once (429 beyond).
    #[arg(long, env = "TDC_TENANT_CONCURRENT_QUERIES", default_value_t = 4)]
    pub tenant_concurrent_queries: usize,
    /// Row reads and exports one tenant may have in progress at once, per process (429 beyond).
    #[arg(long, env = "TDC_TENANT_CONCURRENT_READS", default_value_t = 4)]
    pub tenant_concurrent_reads: usize,
    /// Largest CSV/Parquet export, in bytes (it is written to a temporary file before it is sent).
    #[arg(long, env = "TDC_EXPORT_SPOOL_LIMIT_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub export_spool_limit_bytes: u64,
    /// Seconds an export waits for a client that reads nothing before it ends the download.
    #[arg(long, env = "TDC_EXPORT_WRITE_TIMEOUT_SECS", default_value_t = 30)]
    pub export_write_timeout_secs: u64,
    /// Largest JSON page of rows, in bytes (built in memory; 400 `response_too_large` beyond).
    #[arg(long, env = "TDC_ROWS_RESPONSE_LIMIT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub rows_response_limit_bytes: usize,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "TDC_WORKERS")]
    pub workers: Option<usize>,
    /// A second address serving the same API, for the original walkthrough's listen URL
    /// (Pushpin's port); empty to turn it off.
    #[arg(long, env = "TDC_STREAM_BIND", default_value = "127.0.0.1:7999")]
    pub stream_bind: String,
    /// Most jobs a tenant may have.
    #[arg(long, env = "TDC_MAX_JOBS_PER_TENANT", default_value_t = 1000)]
    pub max_jobs_per_tenant: i64,
    /// Most channels a tenant may have.
    #[arg(long, env = "TDC_MAX_CHANNELS_PER_TENANT", default_value_t = 1000)]
    pub max_channels_per_tenant: i64,
    /// Run the job scheduler in this process.
    #[arg(long, env = "TDC_SCHEDULER", default_value_t = true, action = clap::ArgAction::Set)]
    pub scheduler: bool,
    /// Job runs one process executes at once.
    #[arg(long, env = "TDC_SCHEDULER_CONCURRENCY", default_value_t = 8)]
    pub scheduler_concurrency: usize,
    /// Job runs one tenant may have in progress at once, across every process.
    #[arg(long, env = "TDC_SCHEDULER_TENANT_CONCURRENCY", default_value_t = 2)]
    pub scheduler_tenant_concurrency: i64,
    /// First retry delay of a failed job run, in milliseconds (doubles per attempt).
    #[arg(long, env = "TDC_RETRY_BACKOFF_MS", default_value_t = 1000)]
    pub retry_backoff_ms: u64,
    /// Run history kept per job: at most this many runs...
    #[arg(long, env = "TDC_RUN_HISTORY_MAX", default_value_t = 1000)]
    pub run_history_max: i64,
    /// ...and none older than this many days.
    #[arg(long, env = "TDC_RUN_HISTORY_DAYS", default_value_t = 30)]
    pub run_history_days: i64,
    /// Channel events kept for resuming clients, in hours.
    #[arg(long, env = "TDC_EVENT_RETENTION_HOURS", default_value_t = 168)]
    pub event_retention_hours: i64,
    /// Seconds between SSE heartbeat comments.
    #[arg(long, env = "TDC_SSE_HEARTBEAT_SECS", default_value_t = 15)]
    pub sse_heartbeat_secs: u64,
    /// Events a listener may fall behind before it is disconnected (it then replays).
    #[arg(long, env = "TDC_SSE_QUEUE", default_value_t = 256)]
    pub sse_queue: usize,
    /// Seconds between re-checks of the sessions of open SSE streams against the database: the
    /// backstop for a revocation whose notification was missed (the hub was reconnecting).
    #[arg(long, env = "TDC_SSE_SESSION_RECHECK_SECS", default_value_t = 30)]
    pub sse_session_recheck_secs: u64,
}

/// The shortest accepted JWT secret.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Resolved settings the application is built from.
#[derive(Debug, Clone)]
pub struct Settings {
    /// HMAC-SHA256 key for access and refresh tokens.
    pub jwt_secret: Vec<u8>,
    /// Lifetime of access tokens.
    pub access_token_ttl: Duration,
    /// Lifetime of a session (its refresh tokens).
    pub refresh_token_ttl: Duration,
    /// Largest accepted JSON body, in bytes.
    pub json_limit_bytes: usize,
    /// Token requests allowed per client IP per minute.
    pub login_per_ip_per_minute: NonZeroU32,
    /// Token requests allowed per account per minute, from all addresses together.
    pub login_per_account_per_minute: NonZeroU32,
    /// Failed logins of one account from one address before the backoff starts.
    pub login_free_failures: u32,
    /// The first backoff wait (doubling per failure).
    pub login_backoff: Duration,
    /// The longest backoff wait.
    pub login_backoff_max: Duration,
    /// Whether the client IP comes from proxy headers.
    pub trust_forwarded_for: bool,
    /// Largest accepted upload, in bytes.
    pub upload_limit_bytes: u64,
    /// Largest JSON/NDJSON body of rows, in bytes.
    pub rows_body_limit_bytes: usize,
    /// Most columns a table may have.
    pub max_columns: usize,
    /// Most tables and views a tenant may have.
    pub max_tables_per_tenant: i64,
    /// Bytes a tenant's tables and views may take.
    pub tenant_storage_bytes: u64,
    /// Statement timeout of tenant statements.
    pub tenant_statement_timeout: Duration,
    /// Heavy statements one tenant may run at once.
    pub tenant_concurrent_queries: usize,
    /// Reads and exports one tenant may have in progress at once (per process).
    pub tenant_concurrent_reads: usize,
    /// Largest export file.
    pub export_spool_limit_bytes: u64,
    /// How long an export waits for a client that reads nothing.
    pub export_write_stall: Duration,
    /// Largest JSON page of rows, in bytes.
    pub rows_response_limit_bytes: usize,
    /// HTTP worker threads; `None` means one per core.
    pub workers: Option<usize>,
    /// Most jobs a tenant may have.
    pub max_jobs_per_tenant: i64,
    /// Most channels a tenant may have.
    pub max_channels_per_tenant: i64,
    /// Whether this process runs the scheduler.
    pub scheduler: bool,
    /// Job runs one process executes at once.
    pub scheduler_concurrency: usize,
    /// Job runs one tenant may have in progress at once, across processes.
    pub scheduler_tenant_concurrency: i64,
    /// First retry delay of a failed run.
    pub retry_backoff: Duration,
    /// Runs kept per job.
    pub run_history_max: i64,
    /// Age beyond which runs are deleted.
    pub run_history_age: chrono::Duration,
    /// Age beyond which channel events are deleted.
    pub event_retention: chrono::Duration,
    /// Interval of SSE heartbeat comments.
    pub sse_heartbeat: Duration,
    /// Per-channel queue length of the hub.
    pub sse_queue: usize,
    /// Interval at which the hub re-checks the sessions of open streams (a revoked or expired
    /// session's streams end even if its revocation notice was missed).
    pub sse_session_recheck: Duration,
    /// End SSE streams at SIGINT/SIGTERM (`serve`; off in tests, where a signal handler would
    /// swallow Ctrl-C).
    pub close_streams_on_signal: bool,
}

impl Settings {
    /// Settings from `serve` flags and an already resolved JWT secret.
    pub fn from_args(args: &ServeArgs, jwt_secret: Vec<u8>) -> Self {
        Self {
            jwt_secret,
            access_token_ttl: Duration::from_secs(args.access_token_ttl_secs),
            refresh_token_ttl: Duration::from_secs(args.refresh_token_ttl_secs),
            json_limit_bytes: args.json_limit_bytes,
            login_per_ip_per_minute: args.login_per_ip_per_minute,
            login_per_account_per_minute: args.login_per_account_per_minute,
            login_free_failures: args.login_free_failures,
            login_backoff: Duration::from_secs(args.login_backoff_secs),
            login_backoff_max: Duration::from_secs(args.login_backoff_max_secs),
            trust_forwarded_for: args.trust_forwarded_for,
            upload_limit_bytes: args.upload_limit_bytes,
            rows_body_limit_bytes: args.rows_body_limit_bytes,
            max_columns: args.max_columns,
            max_tables_per_tenant: args.max_tables_per_tenant,
            tenant_storage_bytes: args.tenant_storage_bytes,
            tenant_statement_timeout: Duration::from_secs(args.tenant_statement_timeout_secs),
            tenant_concurrent_queries: args.tenant_concurrent_queries,
            tenant_concurrent_reads: args.tenant_concurrent_reads,
            export_spool_limit_bytes: args.export_spool_limit_bytes,
            export_write_stall: Duration::from_secs(args.export_write_timeout_secs.max(1)),
            rows_response_limit_bytes: args.rows_response_limit_bytes,
            workers: args.workers,
            max_jobs_per_tenant: args.max_jobs_per_tenant,
            max_channels_per_tenant: args.max_channels_per_tenant,
            scheduler: args.scheduler,
            scheduler_concurrency: args.scheduler_concurrency,
            scheduler_tenant_concurrency: args.scheduler_tenant_concurrency.max(1),
            retry_backoff: Duration::from_millis(args.retry_backoff_ms),
            run_history_max: args.run_history_max,
            run_history_age: chrono::Duration::days(args.run_history_days),
            event_retention: chrono::Duration::hours(args.event_retention_hours),
            sse_heartbeat: Duration::from_secs(args.sse_heartbeat_secs.max(1)),
            sse_queue: args.sse_queue,
            sse_session_recheck: Duration::from_secs(args.sse_session_recheck_secs.max(1)),
            close_streams_on_signal: true,
        }
    }

    /// Defaults suitable for tests and examples, with the given secret.
    pub fn with_secret(jwt_secret: Vec<u8>) -> Self {
        Self {
            jwt_secret,
            access_token_ttl: Duration::from_secs(300),
            refresh_token_ttl: Duration::from_secs(86_400),
            json_limit_bytes: 256 * 1024,
            login_per_ip_per_minute: NonZeroU32::MIN.saturating_add(29),
            login_per_account_per_minute: NonZeroU32::MIN.saturating_add(99),
            login_free_failures: 5,
            login_backoff: Duration::from_secs(1),
            login_backoff_max: Duration::from_secs(900),
            trust_forwarded_for: false,
            upload_limit_bytes: 1024 * 1024 * 1024,
            rows_body_limit_bytes: 16 * 1024 * 1024,
            max_columns: 1000,
            max_tables_per_tenant: 1000,
            tenant_storage_bytes: 10 * 1024 * 1024 * 1024,
            tenant_statement_timeout: Duration::from_secs(300),
            tenant_concurrent_queries: 4,
            tenant_concurrent_reads: 4,
            export_spool_limit_bytes: 1024 * 1024 * 1024,
            export_write_stall: Duration::from_secs(30),
            rows_response_limit_bytes: 64 * 1024 * 1024,
            workers: None,
            max_jobs_per_tenant: 1000,
            max_channels_per_tenant: 1000,
            scheduler: true,
            scheduler_concurrency: 8,
            scheduler_tenant_concurrency: 2,
            retry_backoff: Duration::from_secs(1),
            run_history_max: 1000,
            run_history_age: chrono::Duration::days(30),
            event_retention: chrono::Duration::hours(168),
            sse_heartbeat: Duration::from_secs(15),
            sse_queue: 256,
            sse_session_recheck: Duration::from_secs(30),
            close_streams_on_signal: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
        assert_eq!(args.access_token_ttl_secs, 300);
    }
}
