//! The config file: `config.json` in the user's config directory (`TDC_CONFIG_DIR` overrides),
//! one profile per server and account, each with the session's tokens. The tokens are a login:
//! the directory is created `0700` and the file written `0600` (through a temporary file
//! renamed into place, so a crash never leaves half a file). A refresh rotates the refresh
//! token and the server revokes a session whose old refresh token comes back, so two client
//! processes must not refresh from the same stale copy: [`Store::lock`] serialises them.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::error::CliError;

/// The file's name in the config directory.
const FILE: &str = "config.json";
/// The lock file beside it.
const LOCK: &str = "config.lock";

/// One server and account.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Profile {
    /// The server's base URL the profile logged in to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The account's e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The current access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    /// The session's current refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
}

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

/// Where the file is, and which profile this process uses.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    profile: String,
}

/// An exclusive lock on the config directory, released when dropped.
#[derive(Debug)]
pub struct Lock {
    _held: Flock<File>,
}

impl Store {
    /// The store of `profile` in `dir`, or in the user's config directory.
    pub fn new(dir: Option<&Path>, profile: &str) -> Result<Self, CliError> {
        let dir = match dir {
            Some(dir) => dir.to_path_buf(),
            None => directories::ProjectDirs::from("", "", "tinydevcrm")
                .map(|d| d.config_dir().to_path_buf())
                .ok_or_else(|| {
                    CliError::usage("no home directory to keep the config in; set TDC_CONFIG_DIR")
                })?,
        };
        Ok(Self {
            dir,
            profile: profile.to_owned(),
        })
    }

    /// The config file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.profile
    }

    /// The profile as saved (empty when there is no file or no such profile).
    pub fn load(&self) -> Result<Profile, CliError> {
        Ok(self
            .read()?
            .profiles
            .remove(&self.profile)
            .unwrap_or_default())
    }

    /// Saves `profile`, keeping the file's other profiles.
    pub fn save(&self, profile: &Profile) -> Result<(), CliError> {
        let mut file = self.read()?;
        file.profiles.insert(self.profile.clone(), profile.clone());
        self.write(&file)
    }

    /// Takes the directory's lock (blocking until another client process lets go).
    pub fn lock(&self) -> Result<Lock, CliError> {
        self.ensure_dir()?;
        let path = self.dir.join(LOCK);
        // Never through a link: a planted `config.lock` link would make us create or open a
        // file elsewhere.
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&path)
            .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| CliError::usage(format!("locking {}: {e}", path.display())))?;
        Ok(Lock { _held: lock })
    }

    fn read(&self) -> Result<ConfigFile, CliError> {
        self.check_dir()?;
        let path = self.path();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                CliError::usage(format!(
                    "{} is not a valid config file: {e}",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
            Err(e) => Err(CliError::usage(format!("{}: {e}", path.display()))),
        }
    }

    /// Refuses a config directory somebody else could write to: another user who can create
    /// files in it can plant a config (a server of theirs, which then receives the password at
    /// the next login) or swap the files the tokens are written to. The client does not repair
    /// such a directory itself (it may be shared on purpose): the message says what to run.
    fn check_dir(&self) -> Result<(), CliError> {
        use std::os::unix::fs::MetadataExt;
        let meta = match std::fs::metadata(&self.dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(CliError::usage(format!("{}: {e}", self.dir.display()))),
        };
        if !meta.is_dir() {
            return Err(CliError::usage(format!(
                "{}: not a directory",
                self.dir.display()
            )));
        }
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(CliError::usage(format!(
                "the config directory {} belongs to another user: refusing to keep tokens there",
                self.dir.display()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(CliError::usage(format!(
                "the config directory {} is writable by group or others: run `chmod 700 {}`",
                self.dir.display(),
                self.dir.display()
            )));
        }
        Ok(())
    }

    fn ensure_dir(&self) -> Result<(), CliError> {
        if self.dir.is_dir() {
            return self.check_dir();
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| CliError::usage(format!("{}: {e}", self.dir.display())))
    }

    fn write(&self, file: &ConfigFile) -> Result<(), CliError> {
        self.ensure_dir()?;
        let path = self.path();
        let temp = self.dir.join(format!("{FILE}.{}.tmp", std::process::id()));
        let fail = |e: std::io::Error| CliError::usage(format!("{}: {e}", path.display()));
        let text = serde_json::to_string_pretty(file).map_err(CliError::usage)?;
        let _ = std::fs::remove_file(&temp);
        let mut out = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&temp)
            .map_err(fail)?;
        // The mode above is filtered by the umask; only narrower is fine, so set it outright.
        out.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(fail)?;
        out.write_all(text.as_bytes()).map_err(fail)?;
        out.sync_all().map_err(fail)?;
        std::fs::rename(&temp, &path).map_err(fail)
    }
}
