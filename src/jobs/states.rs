//! The states of jobs and runs as types: a job's overlap rule and a run's status. Each has one
//! spelling per value, [`Overlap::as_str`] and [`RunStatus::as_str`], which is what the
//! registry stores, what the SQL compares against (bound, never written into the statement)
//! and what the API sends; each has one parse, its `FromStr`, which decoding a column uses.
//!
//! The JSON side is serde's derive with the same `rename_all` rule (it also gives the OpenAPI
//! schema its `enum` and keeps serde's own message for an unknown value in a request); the unit
//! tests below pin it to `as_str` for every value.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sqlx::Postgres;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use utoipa::ToSchema;

/// A stored value that is none of its type's spellings (the column's `CHECK` makes this a bug).
#[derive(Debug, thiserror::Error)]
#[error("{value:?} is not a {what}")]
pub struct UnknownState {
    what: &'static str,
    value: String,
}

impl UnknownState {
    /// `value` read where a `what` was expected (for the other modules' state types).
    pub(crate) fn new(what: &'static str, value: &str) -> Self {
        Self {
            what,
            value: value.to_owned(),
        }
    }
}

/// What a job does with a tick that comes while its previous run is still going, or while
/// its tenant has as many runs in progress as it may.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Record the tick as `skipped` (the default).
    #[default]
    Skip,
    /// Run the tick as soon as the previous run ends.
    Queue,
}

impl Overlap {
    const ALL: [Self; 2] = [Self::Skip, Self::Queue];

    /// The spelling in `tinydevcrm.jobs.overlap` and in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Queue => "queue",
        }
    }
}

impl FromStr for Overlap {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownState {
                what: "job overlap rule",
                value: s.to_owned(),
            })
    }
}

/// Where a run is: claimed and refreshing, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Claimed; its refresh is going on (or its process died and the lease has not expired).
    Running,
    /// The view was refreshed.
    Succeeded,
    /// The refresh failed on its last attempt, or the process running it stopped.
    Failed,
    /// Not run: the previous run held the lease, the tenant was at its limit, or nothing the
    /// view reads had changed.
    Skipped,
    /// The last attempt ran into the statement timeout.
    TimedOut,
}

impl RunStatus {
    /// Every status, in order.
    pub const ALL: [Self; 5] = [
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Skipped,
        Self::TimedOut,
    ];

    /// The spelling in `tinydevcrm.job_runs.status`, in JSON, logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::TimedOut => "timed_out",
        }
    }

    /// Whether another attempt may fix it (a failure or a timeout).
    pub const fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::TimedOut)
    }
}

impl FromStr for RunStatus {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownState {
                what: "run status",
                value: s.to_owned(),
            })
    }
}

// Both are `text` columns: the types say so to sqlx, and a column is read through `FromStr`.
// Binds go through `as_str()`, which `query!` type-checks as `text`.

impl sqlx::Type<Postgres> for Overlap {
    fn type_info() -> PgTypeInfo {
        <str as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <str as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for Overlap {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(<&str as sqlx::Decode<'r, Postgres>>::decode(value)?.parse()?)
    }
}

impl sqlx::Type<Postgres> for RunStatus {
    fn type_info() -> PgTypeInfo {
        <str as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <str as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for RunStatus {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(<&str as sqlx::Decode<'r, Postgres>>::decode(value)?.parse()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_overlap_rule_reads_back_and_json_spells_it_as_stored() {
        for v in Overlap::ALL {
            assert_eq!(v.as_str().parse::<Overlap>().ok(), Some(v));
            assert_eq!(
                serde_json::to_value(v).ok(),
                Some(serde_json::json!(v.as_str()))
            );
            assert_eq!(
                serde_json::from_value::<Overlap>(serde_json::json!(v.as_str())).ok(),
                Some(v)
            );
        }
        assert_eq!(Overlap::default(), Overlap::Skip);
    }

    #[test]
    fn every_run_status_reads_back_and_json_spells_it_as_stored() {
        for v in RunStatus::ALL {
            assert_eq!(v.as_str().parse::<RunStatus>().ok(), Some(v));
            assert_eq!(
                serde_json::to_value(v).ok(),
                Some(serde_json::json!(v.as_str()))
            );
            assert_eq!(
                serde_json::from_value::<RunStatus>(serde_json::json!(v.as_str())).ok(),
                Some(v)
            );
        }
    }

    #[test]
    fn the_spellings_are_the_ones_the_tables_check() {
        // migrations/0006_create_jobs.sql: jobs_overlap_check and job_runs_status_check.
        let overlap: Vec<&str> = Overlap::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(overlap, ["skip", "queue"]);
        let status: Vec<&str> = RunStatus::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(
            status,
            ["running", "succeeded", "failed", "skipped", "timed_out"]
        );
    }

    #[test]
    fn an_unknown_spelling_is_an_error_not_a_default() {
        for junk in ["", "Skip", "QUEUE", " skip", "sometimes"] {
            assert!(junk.parse::<Overlap>().is_err(), "{junk:?}");
        }
        for junk in ["", "Running", "ok", "timed-out", "timedout"] {
            assert!(junk.parse::<RunStatus>().is_err(), "{junk:?}");
        }
        let e = "nope".parse::<RunStatus>().err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("\"nope\" is not a run status"));
    }
}
