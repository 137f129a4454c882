//! What bounds a rows request besides its parameters, taken from the settings.

use std::time::Duration;

use crate::config::Settings;

/// What bounds a rows request besides its parameters.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Statement timeout of the query.
    pub statement_timeout: Duration,
    /// Largest export file written before it is sent (`export_too_large` beyond).
    pub spool_limit_bytes: u64,
    /// How long an export waits for a client that reads nothing before it ends the stream.
    pub write_stall: Duration,
    /// Largest JSON page, in bytes: a page is built in memory, so huge rows must not add up.
    pub page_limit_bytes: usize,
}

impl ReadLimits {
    /// The limits the settings give.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            statement_timeout: settings.tenant_statement_timeout,
            spool_limit_bytes: settings.export_spool_limit_bytes,
            write_stall: settings.export_write_stall,
            page_limit_bytes: settings.rows_response_limit_bytes,
        }
    }
}
