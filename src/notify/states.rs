//! The states of subscriptions and deliveries as types. As for jobs (`jobs::states`), each has
//! one spelling per value, `as_str`, which is what the tables store and check, what the SQL
//! compares against (bound, never written into a statement) and what the API sends; each has
//! one parse, its `FromStr`, which decoding a column uses. The JSON side is serde's derive with
//! the same rule; the unit tests pin it to `as_str`.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sqlx::Postgres;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use utoipa::ToSchema;

use crate::jobs::states::UnknownState;

/// Whether a subscription's events are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionStatus {
    /// Delivered.
    Active,
    /// Deliveries are queued and held until resumed.
    Paused,
    /// Disabled by the service (a `410 Gone`, or failing for too long; the reason is kept): no
    /// deliveries are queued until the owner sets it active again.
    Disabled,
}

impl SubscriptionStatus {
    /// Every status, in order.
    pub const ALL: [Self; 3] = [Self::Active, Self::Paused, Self::Disabled];

    /// The spelling in `tinydevcrm.subscriptions.status` and in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Disabled => "disabled",
        }
    }
}

impl FromStr for SubscriptionStatus {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownState::new("subscription status", s))
    }
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not delivered yet: due, being attempted, or waiting for its next attempt.
    Pending,
    /// A receiver answered 2xx.
    Succeeded,
    /// Given up: retries exhausted, an answer that retrying cannot change, or the subscription
    /// disabled.
    Failed,
}

impl DeliveryStatus {
    /// Every status, in order.
    pub const ALL: [Self; 3] = [Self::Pending, Self::Succeeded, Self::Failed];

    /// The spelling in `tinydevcrm.deliveries.status` and in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

impl FromStr for DeliveryStatus {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownState::new("delivery status", s))
    }
}

// Both are `text` columns: the types say so to sqlx, and a column is read through `FromStr`.
// Binds go through `as_str()`, which `query!` type-checks as `text`.

impl sqlx::Type<Postgres> for SubscriptionStatus {
    fn type_info() -> PgTypeInfo {
        <str as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <str as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for SubscriptionStatus {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(<&str as sqlx::Decode<'r, Postgres>>::decode(value)?.parse()?)
    }
}

impl sqlx::Type<Postgres> for DeliveryStatus {
    fn type_info() -> PgTypeInfo {
        <str as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <str as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for DeliveryStatus {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(<&str as sqlx::Decode<'r, Postgres>>::decode(value)?.parse()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subscription_status_reads_back_and_json_spells_it_as_stored() {
        for v in SubscriptionStatus::ALL {
            assert_eq!(v.as_str().parse::<SubscriptionStatus>().ok(), Some(v));
            assert_eq!(
                serde_json::to_value(v).ok(),
                Some(serde_json::json!(v.as_str()))
            );
            assert_eq!(
                serde_json::from_value::<SubscriptionStatus>(serde_json::json!(v.as_str())).ok(),
                Some(v)
            );
        }
        assert!("Active".parse::<SubscriptionStatus>().is_err());
    }

    #[test]
    fn every_delivery_status_reads_back_and_json_spells_it_as_stored() {
        for v in DeliveryStatus::ALL {
            assert_eq!(v.as_str().parse::<DeliveryStatus>().ok(), Some(v));
            assert_eq!(
                serde_json::to_value(v).ok(),
                Some(serde_json::json!(v.as_str()))
            );
            assert_eq!(
                serde_json::from_value::<DeliveryStatus>(serde_json::json!(v.as_str())).ok(),
                Some(v)
            );
        }
        assert!("done".parse::<DeliveryStatus>().is_err());
    }

    #[test]
    fn the_spellings_are_the_ones_the_tables_check() {
        // migrations/0011_create_subscriptions.sql: the status CHECKs of both tables.
        let subscription: Vec<&str> = SubscriptionStatus::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(subscription, ["active", "paused", "disabled"]);
        let delivery: Vec<&str> = DeliveryStatus::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(delivery, ["pending", "succeeded", "failed"]);
    }
}
