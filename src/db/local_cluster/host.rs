//! What starting the managed cluster needs from the machine: the data directory's lock, the
//! server binaries, the unprivileged user to run them as, private directories, `initdb`, a
//! server left behind by a crash, a free port, and the log to quote when it does not start.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, geteuid};

use super::{ClusterError, SUPERUSER, io};

pub(super) fn take_lock(data_dir: &Path) -> Result<File, ClusterError> {
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
pub(super) fn find_bin_dir(given: Option<&Path>) -> Result<PathBuf, ClusterError> {
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
pub(super) fn server_owner() -> Result<Option<(u32, u32)>, ClusterError> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    match User::from_name(SUPERUSER) {
        Ok(Some(user)) => Ok(Some((user.uid.as_raw(), user.gid.as_raw()))),
        _ => Err(ClusterError::NoUnprivilegedUser),
    }
}

pub(super) fn make_private_dir(dir: &Path, owner: Option<(u32, u32)>) -> Result<(), ClusterError> {
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(io(format!("setting permissions of {}", dir.display())))?;
    if let Some((uid, gid)) = owner {
        chown(dir, Some(uid), Some(gid))
            .map_err(io(format!("changing the owner of {}", dir.display())))?;
    }
    Ok(())
}

pub(super) fn init_cluster(
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
pub(super) fn stop_orphan(pgdata: &Path) -> Result<(), ClusterError> {
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

pub(super) fn free_port() -> Result<u16, ClusterError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    let port = listener
        .local_addr()
        .map_err(io("finding a free port"))?
        .port();
    Ok(port)
}

pub(super) fn log_tail(path: &Path) -> String {
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
