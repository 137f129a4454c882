//! The embedded default: a PostgreSQL cluster of our own under the data directory, started from
//! the machine's server binaries (Debian package `postgresql`) when `DATABASE_URL` is unset.
//!
//! Layout of the data directory: `pgdata/` (the cluster), `run/` (its Unix socket), `lock` (held
//! by the one process that runs the cluster), `postgres.log`, and secrets kept by [`crate::secrets`].
//! As root, initdb and postgres refuse to run, so both run as the unprivileged `postgres`
//! system user; the server is our direct child (no `runuser` in between) so the stop signal
//! reaches it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, geteuid};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};

/// Name of the non-superuser role the service connects as.
pub const SERVICE_ROLE: &str = "tinydevcrm";
/// Name of the cluster's superuser, used only for bootstrap over the Unix socket.
pub const SUPERUSER: &str = "postgres";

const HARDEN_SQL: &str = include_str!("harden.sql");

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

/// A running managed cluster; stops the server when stopped or dropped.
#[derive(Debug)]
pub struct LocalCluster {
    data_dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
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
        let log_path = data_dir.join("postgres.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(format!("opening {}", log_path.display())))?;
        let log_err = log.try_clone().map_err(io("duplicating the log handle"))?;

        let mut command = Command::new(bin_dir.join("postgres"));
        command
            .arg("-D")
            .arg(&pgdata)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&socket_dir)
            .args(["-c", "listen_addresses=127.0.0.1"]);
        if !options.durable {
            command.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        for (name, value) in &options.settings {
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
        if let Some((uid, gid)) = owner {
            command.uid(uid).gid(gid);
        }
        let child = command.spawn().map_err(io(format!(
            "starting {}",
            bin_dir.join("postgres").display()
        )))?;

        let mut cluster = Self {
            data_dir,
            socket_dir,
            port,
            child: Some(child),
            _lock: lock,
        };
        cluster.wait_ready(&pgdata, &log_path, Duration::from_secs(60))?;
        Ok(cluster)
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

    /// Creates the service role (LOGIN, CREATEROLE, not superuser) or resets its password.
    pub async fn ensure_service_role(&self, password: &SecretString) -> Result<(), ClusterError> {
        let mut conn = PgConnection::connect_with(&self.superuser_options("postgres")).await?;
        let exists = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(SERVICE_ROLE)
            .fetch_optional(&mut conn)
            .await?
            .is_some();
        let template = if exists {
            "ALTER ROLE %I LOGIN CREATEROLE NOSUPERUSER PASSWORD %L"
        } else {
            "CREATE ROLE %I LOGIN CREATEROLE NOSUPERUSER PASSWORD %L"
        };
        // DDL takes no bind parameters: let the server quote the values with format().
        let statement: String = sqlx::query("SELECT format($1, $2::text, $3::text)")
            .bind(template)
            .bind(SERVICE_ROLE)
            .bind(password.expose_secret())
            .fetch_one(&mut conn)
            .await?
            .try_get(0)?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(())
    }

    /// Creates `database` owned by the service role when missing, and applies the privilege
    /// hardening of `harden.sql` (idempotent).
    pub async fn ensure_database(&self, database: &str) -> Result<(), ClusterError> {
        self.ensure_database_hardened(database, true).await
    }

    /// [`Self::ensure_database`], optionally without the hardening: what a managed PostgreSQL
    /// whose administrator never ran `harden.sql` looks like (tests run the attacks on both).
    pub async fn ensure_database_hardened(
        &self,
        database: &str,
        harden: bool,
    ) -> Result<(), ClusterError> {
        let mut conn = PgConnection::connect_with(&self.superuser_options("postgres")).await?;
        let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(database)
            .fetch_optional(&mut conn)
            .await?
            .is_some();
        if !exists {
            let statement: String =
                sqlx::query("SELECT format('CREATE DATABASE %I OWNER %I', $1::text, $2::text)")
                    .bind(database)
                    .bind(SERVICE_ROLE)
                    .fetch_one(&mut conn)
                    .await?
                    .try_get(0)?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut conn)
                .await?;
        }
        conn.close().await?;
        if harden {
            let mut conn = PgConnection::connect_with(&self.superuser_options(database)).await?;
            sqlx::raw_sql(HARDEN_SQL).execute(&mut conn).await?;
            conn.close().await?;
        }
        Ok(())
    }

    /// Stops the server with a fast shutdown (clients disconnected, data kept).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let _ = kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
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

fn take_lock(data_dir: &Path) -> Result<File, ClusterError> {
    let path = data_dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {
            // The holder's pid, for `make dev-down` and for people wondering who holds it.
            let mut file = file;
            file.set_len(0)
                .map_err(io(format!("writing {}", path.display())))?;
            file.write_all(std::process::id().to_string().as_bytes())
                .map_err(io(format!("writing {}", path.display())))?;
            Ok(file)
        }
        Err(fs::TryLockError::WouldBlock) => Err(ClusterError::Busy {
            dir: data_dir.display().to_string(),
            lock: path.display().to_string(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(io(format!("locking {}", path.display()))(e)),
    }
}

/// The directory holding `initdb` and `postgres`: the given one, the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian), or the `PATH`.
fn find_bin_dir(given: Option<&Path>) -> Result<PathBuf, ClusterError> {
    let has_binaries = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = given {
        return if has_binaries(dir) {
            Ok(dir.to_path_buf())
        } else {
            Err(ClusterError::MissingBinaries {
                searched: dir.display().to_string(),
            })
        };
    }
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    candidates.sort();
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates
        .into_iter()
        .rev()
        .map(|(_, dir)| dir)
        .chain(path_dirs)
        .find(|dir| has_binaries(dir))
        .ok_or_else(|| ClusterError::MissingBinaries {
            searched: "/usr/lib/postgresql/*/bin and PATH".to_owned(),
        })
}

/// The (uid, gid) to run PostgreSQL as when we are root; `None` when we are not.
fn server_owner() -> Result<Option<(u32, u32)>, ClusterError> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    match User::from_name(SUPERUSER) {
        Ok(Some(user)) => Ok(Some((user.uid.as_raw(), user.gid.as_raw()))),
        _ => Err(ClusterError::NoUnprivilegedUser),
    }
}

fn make_private_dir(dir: &Path, owner: Option<(u32, u32)>) -> Result<(), ClusterError> {
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(io(format!("setting permissions of {}", dir.display())))?;
    if let Some((uid, gid)) = owner {
        chown(dir, Some(uid), Some(gid))
            .map_err(io(format!("changing the owner of {}", dir.display())))?;
    }
    Ok(())
}

fn init_cluster(
    bin_dir: &Path,
    pgdata: &Path,
    owner: Option<(u32, u32)>,
    durable: bool,
) -> Result<(), ClusterError> {
    // A directory without PG_VERSION is an initdb that died half-way: start over.
    if pgdata.exists() {
        fs::remove_dir_all(pgdata)
            .map_err(io(format!("removing the incomplete {}", pgdata.display())))?;
    }
    make_private_dir(pgdata, owner)?;
    let mut command = Command::new(bin_dir.join("initdb"));
    command
        .arg("-D")
        .arg(pgdata)
        .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C"])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .current_dir("/")
        .stdin(Stdio::null());
    if !durable {
        command.arg("--no-sync");
    }
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    let output = command
        .output()
        .map_err(io(format!("running {}", bin_dir.join("initdb").display())))?;
    if !output.status.success() {
        let mut detail = String::from_utf8_lossy(&output.stderr).into_owned();
        if owner.is_some() {
            detail.push_str(
                "\n(hint: the data directory and every directory above it must be searchable by the `postgres` user)",
            );
        }
        return Err(ClusterError::Command {
            what: "initdb".to_owned(),
            detail,
        });
    }
    Ok(())
}

/// Stops a server left running by a process that died without stopping it; we hold the lock,
/// so nobody else owns it.
fn stop_orphan(pgdata: &Path) -> Result<(), ClusterError> {
    let pid_file = pgdata.join("postmaster.pid");
    let Some(pid) = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
    else {
        return Ok(());
    };
    // Only a postgres serving this very directory: after a reboot the pid may be anyone's.
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    let ours = cmdline.contains("postgres") && cmdline.contains(&*pgdata.to_string_lossy());
    let pid = Pid::from_raw(pid);
    if !ours || kill(pid, None).is_err() {
        return Ok(()); // a stale file; postgres replaces it itself
    }
    tracing::warn!(%pid, "stopping a PostgreSQL server left running by an earlier process");
    let _ = kill(pid, Signal::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(60);
    while kill(pid, None).is_ok() {
        if Instant::now() > deadline {
            return Err(ClusterError::Command {
                what: "stopping the orphaned PostgreSQL server".to_owned(),
                detail: format!("process {pid} is still running"),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn free_port() -> Result<u16, ClusterError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    let port = listener
        .local_addr()
        .map_err(io("finding a free port"))?
        .port();
    Ok(port)
}

fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(4000)));
        let _ = file.read_to_string(&mut text);
    }
    text.lines()
        .rev()
        .take(20)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n")
}
