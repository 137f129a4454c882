//! The embedded default: a PostgreSQL cluster of our own under the data directory, started from
//! the machine's server binaries (Debian package `postgresql`) when `DATABASE_URL` is unset.
//!
//! Layout of the data directory: `pgdata/` (the cluster), `run/` (its Unix socket), `lock` (held
//! by the one process that runs the cluster), `postgres.log`, and secrets kept by [`crate::secrets`].
//! As root, initdb and postgres refuse to run, so both run as the unprivileged `postgres`
//! system user; the server is our direct child (no `runuser` in between) so the stop signal
//! reaches it.
//!
//! Split by what each part talks to: this file starts, watches and stops the server process;
//! `host` prepares what it needs from the machine (lock, binaries, user, directories, initdb,
//! a free port); `bootstrap` sets up the service role and databases as the superuser.

mod bootstrap;
mod host;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;

use host::{
    find_bin_dir, free_port, init_cluster, log_tail, make_private_dir, server_owner, stop_orphan,
    take_lock,
};

/// Name of the non-superuser role the service connects as.
pub const SERVICE_ROLE: &str = "tinydevcrm";
/// Name of the cluster's superuser, used only for bootstrap over the Unix socket.
pub const SUPERUSER: &str = "postgres";

/// How to run the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The data directory (`pgdata/`, `run/`, lock and log go beneath it).
    pub data_dir: PathBuf,
    /// Where `initdb` and `postgres` live; searched for when `None`.
    pub bin_dir: Option<PathBuf>,
    /// Extra server settings passed as `-c name=value`.
    pub settings: Vec<(String, String)>,
    /// Whether to fsync; off is only for throwaway test clusters.
    pub durable: bool,
    /// A fixed port (a restart keeps its clients' address); a free one when `None`.
    pub port: Option<u16>,
}

impl ClusterOptions {
    /// Durable defaults for `serve`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            bin_dir: None,
            settings: Vec::new(),
            durable: true,
            port: None,
        }
    }
}

/// Why the managed cluster could not be started or bootstrapped.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The server binaries are not installed.
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found in {searched}; install the Debian package `postgresql` (apt-get install postgresql), or set DATABASE_URL to use an existing database"
    )]
    MissingBinaries {
        /// Where we looked.
        searched: String,
    },
    /// Another process holds the data directory.
    #[error(
        "the data directory {dir} is in use by another tinydevcrm process (it holds {lock}); stop that process or pass another --data-dir"
    )]
    Busy {
        /// The data directory.
        dir: String,
        /// The lock file.
        lock: String,
    },
    /// Running as root without a user to drop to.
    #[error(
        "running as root, and PostgreSQL refuses to run as root, but there is no `postgres` system user to run it as; install the Debian package `postgresql` or run as an unprivileged user"
    )]
    NoUnprivilegedUser,
    /// A cluster command failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// The command.
        what: String,
        /// Its output.
        detail: String,
    },
    /// The server did not come up.
    #[error("PostgreSQL did not become ready within {secs} s; the end of {log_path}:\n{log}")]
    NotReady {
        /// How long we waited.
        secs: u64,
        /// The server log.
        log_path: String,
        /// Its last lines.
        log: String,
    },
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Bootstrap SQL failed.
    #[error("bootstrapping the cluster failed: {0}")]
    Sql(#[from] sqlx::Error),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Io { context, source }
}

/// What it takes to (re)start the server process.
#[derive(Debug)]
struct Server {
    bin_dir: PathBuf,
    pgdata: PathBuf,
    owner: Option<(u32, u32)>,
    settings: Vec<(String, String)>,
    durable: bool,
}

/// The first pause before restarting a server that died; it doubles per failed attempt.
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest pause between restart attempts.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the watchdog looks at the server process.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// The watchdog loop: restarts a dead server until told to stop (or its handle is dropped),
/// then stops the server.
fn supervise(mut cluster: LocalCluster, stopped: &std::sync::mpsc::Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut backoff = RESTART_BACKOFF_MIN;
    let mut attempt = 0u32;
    loop {
        match stopped.recv_timeout(WATCH_INTERVAL) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if !cluster.exited() {
            continue;
        }
        attempt += 1;
        tracing::warn!(
            attempt,
            delay_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
            "restarting the managed PostgreSQL"
        );
        match stopped.recv_timeout(backoff) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        // Backends of the dead server may linger a moment, holding its shared memory: the
        // new server refuses to start until they are gone, and the next attempt retries.
        match cluster.launch() {
            Ok(()) => {
                tracing::info!(attempt, port = cluster.port, "managed PostgreSQL restarted");
                metrics::counter!("tdc_managed_postgres_restarts_total").increment(1);
                backoff = RESTART_BACKOFF_MIN;
                attempt = 0;
            }
            Err(e) => {
                tracing::error!(attempt, error = %e, "restarting the managed PostgreSQL failed");
                cluster.kill_child();
                backoff = next_backoff(backoff);
            }
        }
    }
    cluster.stop();
}

/// The pause after a failed restart: double the last, at most [`RESTART_BACKOFF_MAX`].
fn next_backoff(last: Duration) -> Duration {
    last.saturating_mul(2).min(RESTART_BACKOFF_MAX)
}

/// A managed cluster under a watchdog thread ([`LocalCluster::supervise`]).
#[derive(Debug)]
pub struct SupervisedCluster {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SupervisedCluster {
    /// Stops the watchdog, then the server (fast shutdown); blocks until both are done.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SupervisedCluster {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A running managed cluster; stops the server when stopped or dropped.
#[derive(Debug)]
pub struct LocalCluster {
    data_dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    server: Server,
    child: Option<Child>,
    // Held for the life of the cluster: a second process on the same data dir fails fast.
    _lock: File,
}

impl LocalCluster {
    /// Creates the cluster on first use (initdb), or reuses it, and starts the server on a free
    /// loopback port. Blocks until the server accepts connections.
    pub fn start(options: &ClusterOptions) -> Result<Self, ClusterError> {
        fs::create_dir_all(&options.data_dir).map_err(io(format!(
            "creating the data directory {}",
            options.data_dir.display()
        )))?;
        let data_dir = fs::canonicalize(&options.data_dir)
            .map_err(io(format!("resolving {}", options.data_dir.display())))?;
        let lock = take_lock(&data_dir)?;
        let bin_dir = find_bin_dir(options.bin_dir.as_deref())?;
        let owner = server_owner()?;

        if owner.is_some() {
            // The server's user must be able to reach pgdata/ and run/ below us, whatever the
            // umask made of the directory; the secrets inside stay 0600.
            fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o711))
                .map_err(io(format!("setting permissions of {}", data_dir.display())))?;
        }
        let pgdata = data_dir.join("pgdata");
        if !pgdata.join("PG_VERSION").exists() {
            init_cluster(&bin_dir, &pgdata, owner, options.durable)?;
        }
        stop_orphan(&pgdata)?;

        let socket_dir = data_dir.join("run");
        make_private_dir(&socket_dir, owner)?;
        let port = match options.port {
            Some(port) => port,
            None => free_port()?,
        };
        let mut cluster = Self {
            data_dir,
            socket_dir,
            port,
            server: Server {
                bin_dir,
                pgdata,
                owner,
                settings: options.settings.clone(),
                durable: options.durable,
            },
            child: None,
            _lock: lock,
        };
        cluster.launch()?;
        Ok(cluster)
    }

    /// Starts the server process on the cluster's port and waits until it is ready.
    fn launch(&mut self) -> Result<(), ClusterError> {
        let log_path = self.data_dir.join("postgres.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(format!("opening {}", log_path.display())))?;
        let log_err = log.try_clone().map_err(io("duplicating the log handle"))?;

        let server = &self.server;
        let mut command = Command::new(server.bin_dir.join("postgres"));
        command
            .arg("-D")
            .arg(&server.pgdata)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.socket_dir)
            .args(["-c", "listen_addresses=127.0.0.1"]);
        if !server.durable {
            command.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        for (name, value) in &server.settings {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .current_dir("/")
            // Its own process group: a terminal's Ctrl-C reaches us, and we stop the server
            // after the HTTP server has drained, not before.
            .process_group(0);
        if let Some((uid, gid)) = server.owner {
            command.uid(uid).gid(gid);
        }
        let child = command.spawn().map_err(io(format!(
            "starting {}",
            server.bin_dir.join("postgres").display()
        )))?;
        self.child = Some(child);
        let pgdata = self.server.pgdata.clone();
        self.wait_ready(&pgdata, &log_path, Duration::from_secs(60))
    }

    /// Whether the server process has exited (reaping it if so); `true` when there is none.
    fn exited(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => false,
            Some(Ok(Some(status))) => {
                tracing::error!(%status, "managed PostgreSQL exited unexpectedly");
                self.child = None;
                true
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot watch the managed PostgreSQL");
                false
            }
            None => true,
        }
    }

    /// Hands the cluster to a watchdog thread that restarts the server whenever it dies
    /// (killed, crashed), with a growing pause between failed attempts, until stopped.
    pub fn supervise(self) -> SupervisedCluster {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("postgres-supervisor".to_owned())
            .spawn(move || supervise(self, &stopped))
            .ok();
        SupervisedCluster { stop, thread }
    }

    fn wait_ready(
        &mut self,
        pgdata: &Path,
        log_path: &Path,
        limit: Duration,
    ) -> Result<(), ClusterError> {
        let started = Instant::now();
        let not_ready = || ClusterError::NotReady {
            secs: limit.as_secs(),
            log_path: log_path.display().to_string(),
            log: log_tail(log_path),
        };
        loop {
            if let Some(child) = self.child.as_mut()
                && child
                    .try_wait()
                    .map_err(io("waiting for postgres"))?
                    .is_some()
            {
                self.child = None;
                return Err(not_ready());
            }
            // Line 1 of postmaster.pid is the postmaster's pid (a file left by a crash names
            // another), line 8 its status: "ready" once it accepts connections.
            let our_pid = self.pid().map(|p| p.to_string());
            let ready = fs::read_to_string(pgdata.join("postmaster.pid"))
                .ok()
                .is_some_and(|s| {
                    let lines: Vec<&str> = s.lines().map(str::trim).collect();
                    lines.first().copied() == our_pid.as_deref() && lines.get(7) == Some(&"ready")
                });
            if ready {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(not_ready());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The loopback TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory, canonicalised.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's process id, for watchdogs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Superuser connection over the Unix socket (trust auth; the socket directory is private).
    pub fn superuser_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(self.port)
            .username(SUPERUSER)
            .database(database)
    }

    /// The service role's connection over loopback TCP with its password.
    pub fn service_options(&self, database: &str, password: &SecretString) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(SERVICE_ROLE)
            .password(password.expose_secret())
            .database(database)
    }

    /// Stops the server with a fast shutdown (clients disconnected, data kept).
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Kills a server that did not become ready, so that the next attempt starts afresh.
    fn kill_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn shutdown(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let _ = kill(pid, Signal::SIGINT);
        // The shutdown checkpoint fsyncs every file written since the last one: with thousands
        // of tenants that took over a minute (6,510 tenants: 60 s was not enough), and a kill
        // then costs a crash recovery at the next start (37 s there). Five minutes, then SIGQUIT.
        let started = Instant::now();
        let deadline = started + Duration::from_secs(300);
        let mut told = false;
        while Instant::now() < deadline {
            if !told && started.elapsed() > Duration::from_secs(30) {
                tracing::info!("managed PostgreSQL is still writing its shutdown checkpoint");
                told = true;
            }
            if let Ok(Some(_)) = child.try_wait() {
                tracing::info!("managed PostgreSQL stopped");
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        tracing::warn!("managed PostgreSQL did not stop in time; sending SIGQUIT");
        let _ = kill(pid, Signal::SIGQUIT);
        let _ = child.wait();
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_pauses_double_from_100_ms_up_to_5_s() {
        let mut pauses = vec![RESTART_BACKOFF_MIN];
        for _ in 0..8 {
            pauses.push(next_backoff(pauses[pauses.len() - 1]));
        }
        let ms: Vec<u128> = pauses.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }
}
