//! The client's errors and the exit code each gives: 1 for the user's mistakes and local
//! trouble, 2 when the server answered no, 3 when it could not be reached. Scripts branch on
//! these (docs/CLI.md).

use std::process::ExitCode;

use super::output::escape;

/// What went wrong in a client command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Wrong arguments, a missing login, an unreadable local file: exit 1.
    #[error("{0}")]
    Usage(String),
    /// The server answered with an error status (its problem's `detail` and `code`): exit 2.
    #[error("{detail} ({code}, HTTP {status})")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The problem's `code`.
        code: String,
        /// The problem's `detail`.
        detail: String,
    },
    /// No answer: connection refused, timed out or cut: exit 3.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The server's base URL.
        url: String,
        /// Why, as the HTTP client says it.
        reason: String,
    },
}

impl CliError {
    /// A local problem (exit 1) from anything displayable.
    pub fn usage(message: impl std::fmt::Display) -> Self {
        Self::Usage(message.to_string())
    }

    /// The process exit code of this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 1,
            Self::Server { .. } => 2,
            Self::Unreachable { .. } => 3,
        }
    }

    /// Prints the error to standard error (escaped: `detail` is the server's text) and gives
    /// the exit code.
    pub fn report(&self) -> ExitCode {
        eprintln!("error: {}", escape(&self.to_string()));
        ExitCode::from(self.exit_code())
    }
}

/// Transport failures: the request did not get an answer.
pub fn unreachable(url: &str, e: &reqwest::Error) -> CliError {
    // The source chain says why (connection refused, reset); reqwest's own text alone does not.
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        reason = format!("{reason}: {inner}");
        source = inner.source();
    }
    CliError::Unreachable {
        url: url.to_owned(),
        reason,
    }
}
