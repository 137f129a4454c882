//! Where a command's API key comes from: `TDC_KEY`, or the first line of `--key-file` (never a
//! flag, which `ps` shows to every user). A key is a secret like a password: it is never
//! printed, neither by `Debug` nor in an error message (a malformed one is described, not
//! echoed).

use std::fmt;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::args::ClientOpts;
use super::error::CliError;

/// The environment variable holding a key.
pub const KEY_ENV: &str = "TDC_KEY";

/// What every key starts with (the server's `tdc_`).
const KEY_PREFIX: &str = "tdc_";

/// The longest key accepted (a real one is 47 characters; this only bounds garbage).
const MAX_KEY_LEN: usize = 256;

/// The most of a key file read: its first line is the key.
const MAX_KEY_FILE: u64 = 4096;

/// An API key. `Debug` shows only that there is one.
#[derive(Clone)]
pub struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

impl ApiKey {
    /// The `Authorization` value for it.
    pub fn authorization(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Checks that `text` looks like a key (`tdc_` and visible ASCII), saying where it came
    /// from (`from`) but never what it held.
    fn parse(text: &str, from: &str) -> Result<Self, CliError> {
        if !text.starts_with(KEY_PREFIX)
            || text.len() > MAX_KEY_LEN
            || !text.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(CliError::usage(format!(
                "{from} does not hold an API key (one line starting with {KEY_PREFIX}, as `tinydevcrm keys create` prints it)"
            )));
        }
        Ok(Self(text.to_owned()))
    }
}

/// The key a command was given: `--key-file` first, else `TDC_KEY` (unset or empty: none).
pub fn from_opts(opts: &ClientOpts) -> Result<Option<ApiKey>, CliError> {
    if let Some(path) = &opts.key_file {
        return read_key_file(path).map(Some);
    }
    match std::env::var_os(KEY_ENV) {
        None => Ok(None),
        Some(value) if value.is_empty() => Ok(None),
        Some(value) => {
            let text = value.to_str().unwrap_or_default();
            ApiKey::parse(text.trim(), KEY_ENV).map(Some)
        }
    }
}

/// The first line of `path`, refused like ssh refuses a private key when group or others may
/// read or write the file, or when it belongs to somebody else than the user (or root): then
/// the key is not the user's secret any more. The mode is read from the opened file, so the
/// file checked is the file read.
fn read_key_file(path: &Path) -> Result<ApiKey, CliError> {
    let shown = path.display();
    let fail = |e: std::io::Error| CliError::usage(format!("the key file {shown}: {e}"));
    let file = std::fs::File::open(path).map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if !meta.is_file() {
        return Err(CliError::usage(format!(
            "the key file {shown} is not a regular file"
        )));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(CliError::usage(format!(
            "the key file {shown} belongs to another user: refusing to use it"
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(CliError::usage(format!(
            "the key file {shown} is accessible by group or others (mode {:o}): run `chmod 600 {shown}`",
            meta.mode() & 0o777
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    let text = String::from_utf8_lossy(&bytes);
    let line = text.lines().next().unwrap_or_default().trim();
    ApiKey::parse(line, &format!("the first line of {shown}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_key_is_described_without_its_text() {
        for bad in ["secret-not-a-key", "tdc_has space", "tdc_\u{1b}[2J", ""] {
            let error = ApiKey::parse(bad, "TDC_KEY").expect_err(bad);
            let message = error.to_string();
            assert!(message.contains("TDC_KEY"), "{message}");
            if !bad.is_empty() {
                assert!(!message.contains(bad), "{message}");
            }
        }
        let key = ApiKey::parse("tdc_abcDEF-_123", "TDC_KEY").expect("a key");
        assert_eq!(format!("{key:?}"), "ApiKey(..)");
        assert_eq!(key.authorization(), "Bearer tdc_abcDEF-_123");
    }
}
