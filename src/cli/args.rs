//! The client subcommands' flags, declared with clap like the server's (`crate::config` flattens
//! [`ClientCommand`] into the binary's `Command`). Every client command takes [`ClientOpts`]:
//! which server, which profile, JSON or people's output.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};

/// Options every client command takes, anywhere on its command line.
#[derive(Debug, Clone, Args)]
pub struct ClientOpts {
    /// The server's base URL; default: the profile's (the URL it logged in to), else
    /// `http://localhost:8000`.
    #[arg(long, env = "TDC_URL", global = true)]
    pub url: Option<String>,
    /// The profile in the config file: one server and account each.
    #[arg(long, env = "TDC_PROFILE", global = true, default_value = "default")]
    pub profile: String,
    /// Print the server's JSON (one document, or one line per event for `listen`) instead of
    /// tables and sentences.
    #[arg(long, global = true)]
    pub json: bool,
    /// The directory of the config file (default: the user's config directory, e.g.
    /// `~/.config/tinydevcrm`).
    #[arg(long, env = "TDC_CONFIG_DIR", global = true)]
    pub config_dir: Option<PathBuf>,
    /// A file whose first line is an API key (`tdc_...`) to use instead of the login session;
    /// refused when group or others may read or write it (`chmod 600`). `TDC_KEY` gives the key itself. There is no
    /// flag taking the key: `ps` would show it to every user of the machine.
    #[arg(long, global = true, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
}

/// The client's subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Log in and keep the session's tokens in the profile (password from the terminal without
    /// echo, `TDC_PASSWORD`, or `--password-stdin`).
    Login(LoginArgs),
    /// Revoke the profile's session on the server and forget its tokens.
    Logout(Plain),
    /// Create an account on the server (then `login`).
    Register(LoginArgs),
    /// Tables: upload Parquet files, list, read rows, export, drop.
    Tables(TablesArgs),
    /// Materialized views: create from SQL, list, refresh, read rows, drop.
    Views(ViewsArgs),
    /// Cron jobs that refresh views: create, list, run history, pause, resume, delete.
    Jobs(JobsArgs),
    /// Channels: create, list, and listen to a view's refresh events.
    Channels(ChannelsArgs),
    /// API keys for dashboards and services: create (the key is printed once), list, revoke.
    /// These need the login session: a key cannot manage keys.
    Keys(KeysArgs),
}

/// A command with nothing but the common options.
#[derive(Debug, Args)]
pub struct Plain {
    #[command(flatten)]
    pub opts: ClientOpts,
}

/// Flags of `login` and `register`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    /// The account's e-mail (asked for on a terminal when missing).
    #[arg(long, env = "TDC_EMAIL")]
    pub email: Option<String>,
    /// Read the password from the first line of standard input (for scripts; `TDC_PASSWORD`
    /// also works).
    #[arg(long)]
    pub password_stdin: bool,
}

/// `tables ...`.
#[derive(Debug, Args)]
pub struct TablesArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: TablesCommand,
}

/// The table subcommands.
#[derive(Debug, Subcommand)]
pub enum TablesCommand {
    /// Upload a Parquet file: a new table, or rows into an existing one with `--mode`.
    Upload(UploadArgs),
    /// List the tables.
    Ls,
    /// Describe a table: columns, rows, size.
    Show {
        /// The table.
        name: String,
    },
    /// Read rows (a table on a terminal; JSON when piped; `--format` chooses).
    Rows(RowsArgs),
    /// Download the rows (all, or `--limit`) to a file.
    Export(ExportArgs),
    /// Drop a table.
    Drop {
        /// The table.
        name: String,
        /// Also drop the views that read it.
        #[arg(long)]
        cascade: bool,
    },
}

/// Flags of `tables upload`.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The Parquet file.
    pub file: PathBuf,
    /// The table's name.
    #[arg(long)]
    pub name: String,
    /// A JSON list of `{"column_name", "column_type"}` overriding the file's types (new tables).
    #[arg(long, conflicts_with = "mode")]
    pub columns: Option<String>,
    /// Add the rows to the existing table: `append` them, or `replace` its rows.
    #[arg(long, value_enum)]
    pub mode: Option<UploadMode>,
}

/// How rows go into an existing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UploadMode {
    /// Keep the rows there and add these.
    Append,
    /// Replace the rows in one transaction.
    Replace,
}

/// What to read and how: a table's or a view's rows.
#[derive(Debug, Args)]
pub struct RowsArgs {
    /// The table or view.
    pub name: String,
    /// `column=op.value` (`eq`, `neq`, `gt`, `gte`, `lt`, `lte`, `like`, `ilike`, `in.(a,b)`,
    /// `is.null`); repeat for more, all apply.
    #[arg(long = "filter", value_name = "COL=OP.VALUE")]
    pub filters: Vec<String>,
    /// `a.desc.nullslast,b`.
    #[arg(long)]
    pub order: Option<String>,
    /// Columns to read: `a,b`.
    #[arg(long)]
    pub select: Option<String>,
    /// At most this many rows (the server's default is 100).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Output: a table, JSON (an array of rows) or CSV; default: a table on a terminal, JSON
    /// otherwise.
    #[arg(long, value_enum)]
    pub format: Option<RowsFormat>,
}

/// Output of `rows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RowsFormat {
    /// A table for people.
    Table,
    /// A JSON array of row objects, in column order.
    Json,
    /// CSV with a header row, as the server writes it.
    Csv,
}

/// Flags of `tables export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The table.
    pub name: String,
    /// The file's format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Parquet)]
    pub format: ExportFormat,
    /// The file to write.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// `column=op.value`, as for `rows`.
    #[arg(long = "filter", value_name = "COL=OP.VALUE")]
    pub filters: Vec<String>,
    /// `a.desc,b`.
    #[arg(long)]
    pub order: Option<String>,
    /// At most this many rows.
    #[arg(long)]
    pub limit: Option<u32>,
}

/// Formats of `tables export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Apache Parquet, with the columns' types.
    Parquet,
    /// CSV with a header row.
    Csv,
    /// A JSON array of row objects.
    Json,
}

/// `views ...`.
#[derive(Debug, Args)]
pub struct ViewsArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: ViewsCommand,
}

/// The view subcommands.
#[derive(Debug, Subcommand)]
pub enum ViewsCommand {
    /// Create a materialized view from a `SELECT`.
    #[command(group(ArgGroup::new("sql_source").required(true).args(["sql", "sql_file"])))]
    Create {
        /// The view's name.
        name: String,
        /// The SQL.
        #[arg(long)]
        sql: Option<String>,
        /// A file holding the SQL.
        #[arg(long)]
        sql_file: Option<PathBuf>,
        /// Columns that identify a row (comma-separated), as a primary key would.
        #[arg(long, value_delimiter = ',')]
        unique_key: Vec<String>,
    },
    /// List the views.
    Ls,
    /// Describe a view: its SQL, columns, last refresh, jobs and channels.
    Show {
        /// The view.
        name: String,
    },
    /// Refresh a view now.
    Refresh {
        /// The view.
        name: String,
    },
    /// Read rows (as `tables rows`).
    Rows(RowsArgs),
    /// Drop a view (its jobs and channels too).
    Drop {
        /// The view.
        name: String,
        /// Also drop the views that read it.
        #[arg(long)]
        cascade: bool,
    },
}

/// `jobs ...`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: JobsCommand,
}

/// The job subcommands.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Refresh a view on a cron schedule.
    Create {
        /// The view to refresh.
        view: String,
        /// 5 fields (minute hour day-of-month month day-of-week), 6 with leading seconds, or
        /// `@hourly`, `@daily`, ...
        #[arg(long)]
        cron: String,
        /// The IANA time zone the schedule is read in (default UTC).
        #[arg(long)]
        tz: Option<String>,
        /// What a tick does while the previous run still goes.
        #[arg(long, value_enum)]
        overlap: Option<Overlap>,
        /// Extra attempts after a failed refresh (0 to 10).
        #[arg(long)]
        retries: Option<u8>,
        /// Create it paused.
        #[arg(long)]
        paused: bool,
    },
    /// List the jobs.
    Ls,
    /// Describe a job.
    Show {
        /// The job's id.
        job: String,
    },
    /// A job's runs, newest first.
    Runs {
        /// The job's id.
        job: String,
        /// At most this many runs.
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Stop running a job until `resume`.
    Pause {
        /// The job's id.
        job: String,
    },
    /// Run a paused job again, from its next tick.
    Resume {
        /// The job's id.
        job: String,
    },
    /// Delete a job.
    Delete {
        /// The job's id.
        job: String,
    },
}

/// A job's overlap policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Overlap {
    /// Record the tick as skipped.
    Skip,
    /// Run it when the previous run ends.
    Queue,
}

/// `channels ...`.
#[derive(Debug, Args)]
pub struct ChannelsArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: ChannelsCommand,
}

/// The channel subcommands.
#[derive(Debug, Subcommand)]
pub enum ChannelsCommand {
    /// A channel that gets an event at every refresh of a view (or of a job's view).
    #[command(group(ArgGroup::new("source").required(true).args(["view", "job"])))]
    Create {
        /// The view to watch.
        #[arg(long)]
        view: Option<String>,
        /// The job whose view to watch.
        #[arg(long)]
        job: Option<String>,
    },
    /// List the channels.
    Ls,
    /// Describe a channel.
    Show {
        /// The channel's id.
        channel: String,
    },
    /// Delete a channel.
    Delete {
        /// The channel's id.
        channel: String,
    },
    /// Print each event as it arrives; reconnects (with `Last-Event-ID`) after a drop and
    /// refreshes the token when it expires. Stops on Ctrl-C.
    Listen {
        /// The channel's id.
        channel: String,
        /// Start after this event (replays the ones after it first).
        #[arg(long)]
        last_event_id: Option<u64>,
    },
}

/// `keys ...`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// The key subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints the key alone on standard output (shown this once), so that
    /// `export TDC_KEY=$(tinydevcrm keys create ...)` works; `--json` prints the whole answer.
    Create {
        /// A label for the key (1 to 100 characters).
        #[arg(long)]
        name: String,
        /// What the key may do: `views:read:<name>`, `tables:read:<name>`,
        /// `tables:append:<name>`, `channels:listen:<id>`, `views:refresh:<name>` or `*:read`;
        /// repeat for more.
        #[arg(long = "scope", value_name = "SCOPE", required = true)]
        scopes: Vec<String>,
        /// When the key stops working (RFC 3339, e.g. `2027-01-01T00:00:00Z`); never by
        /// default.
        #[arg(long, value_name = "RFC3339")]
        expires_at: Option<String>,
        /// Requests per minute the key may make (the server's default otherwise).
        #[arg(long, value_name = "N")]
        rate_limit: Option<u32>,
    },
    /// List the keys (never the keys themselves: name, prefix, scopes, dates).
    Ls,
    /// Revoke a key at once (its open streams end).
    Revoke {
        /// The key's id (from `keys ls` or `keys create --json`).
        id: String,
    },
}
