//! The temporary file an export is written to before it is sent, and why writing it stopped:
//! a file past the spool limit is the client's 400, anything else already an answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::ApiError;
use crate::tables::types::PgType;

/// Why spooling an export stopped.
pub(super) enum SpoolError {
    /// The file reached the spool limit.
    TooLarge,
    /// Anything else, already an answer.
    Api(ApiError),
}

impl<E: Into<ApiError>> From<E> for SpoolError {
    fn from(e: E) -> Self {
        Self::Api(e.into())
    }
}

/// The temporary file an export is written to, refusing writes beyond its limit.
pub(super) struct Spool {
    pub(super) file: std::fs::File,
    written: u64,
    limit: u64,
    /// Set when a write was refused; the writers above wrap the I/O error in their own.
    pub(super) full: Arc<AtomicBool>,
}

impl Spool {
    pub(super) fn new(limit: u64) -> Result<Self, ApiError> {
        Ok(Self {
            file: tempfile::tempfile().map_err(anyhow::Error::from)?,
            written: 0,
            limit,
            full: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl std::io::Write for Spool {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        if self.written.saturating_add(len) > self.limit {
            self.full.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other("the export reached the spool limit"));
        }
        let n = self.file.write(buf)?;
        self.written += u64::try_from(n).unwrap_or(u64::MAX);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Maps a writer's failure: `TooLarge` when the spool refused the write.
pub(super) fn spool_error(full: &AtomicBool, e: impl Into<anyhow::Error>) -> SpoolError {
    if full.load(Ordering::Relaxed) {
        SpoolError::TooLarge
    } else {
        SpoolError::Api(ApiError::Internal(e.into()))
    }
}

/// What an export holds: its columns, and those it filters or orders on.
pub(super) struct Output<'a> {
    pub(super) columns: &'a [(String, Option<PgType>)],
    pub(super) compared: &'a [(String, String)],
}
