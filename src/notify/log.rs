//! What the delivery logs of webhooks and e-mail subscriptions share: the page, its query and
//! opaque cursor, the answer of a retry, and the statuses an owner may set. Kept out of the
//! route modules so that both use one definition (routes never import routes).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::states::SubscriptionStatus;
use sqlx::PgPool;

use super::store::{self, DeliveryBody};
use crate::error::ApiError;

/// Whether a webhook is delivered to; the owner may set these two.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SettableStatus {
    /// Delivered (also re-enables a disabled webhook).
    Active,
    /// Deliveries are queued and held until resumed.
    Paused,
}

impl SettableStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        SubscriptionStatus::from(self).as_str()
    }
}

impl From<SettableStatus> for SubscriptionStatus {
    fn from(status: SettableStatus) -> Self {
        match status {
            SettableStatus::Active => Self::Active,
            SettableStatus::Paused => Self::Paused,
        }
    }
}

/// The answer of a test delivery or a retry.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryQueued {
    /// The delivery (its `webhook-id` header).
    pub delivery_id: Uuid,
}

/// Query of `GET .../deliveries/`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Page size (1 to 200, default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Where to continue: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of a webhook's delivery log.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveriesPage {
    /// Deliveries, newest first.
    pub deliveries: Vec<DeliveryBody>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Where a page of a delivery log starts: its size, and the last delivery (time and id) of the
/// page before, if any.
pub type Position = (i64, Option<(DateTime<Utc>, Uuid)>);

impl DeliveriesQuery {
    /// The page size and the position in `subscription_id`'s log to read after: 400
    /// `invalid_limit` or `invalid_cursor` for anything else. Checked before the subscription
    /// is looked up, so the answer does not depend on whether it exists.
    pub fn position(&self, subscription_id: Uuid) -> Result<Position, ApiError> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_limit",
                format!("limit is {limit}; it must be between 1 and 200"),
            ));
        }
        let after = self
            .cursor
            .as_deref()
            .map(|cursor| decode_cursor(cursor, subscription_id))
            .transpose()?;
        Ok((limit, after))
    }
}

/// Up to `limit` deliveries of the subscription's log after `after`, newest first, with the
/// cursor of the next page when this one is full.
pub async fn page(
    pool: &PgPool,
    subscription_id: Uuid,
    (limit, after): Position,
) -> Result<DeliveriesPage, ApiError> {
    let deliveries = store::deliveries(pool, subscription_id, after, limit).await?;
    let next_cursor = match deliveries.last() {
        Some(last) if deliveries.len() as i64 == limit => Some(encode_cursor(
            subscription_id,
            last.created_at,
            last.delivery_id,
        )),
        _ => None,
    };
    Ok(DeliveriesPage {
        deliveries,
        next_cursor,
    })
}

/// A page position as an opaque cursor: the subscription whose log it pages, the last
/// delivery's time (microseconds, as PostgreSQL keeps it) and id. The subscription is in it so
/// that a cursor of another log is refused rather than read as a position in this one (it
/// would silently skip or repeat deliveries).
fn encode_cursor(subscription_id: Uuid, created_at: DateTime<Utc>, delivery_id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{subscription_id}.{}.{delivery_id}",
        created_at.timestamp_micros()
    ))
}

/// The position in `subscription_id`'s log that `cursor` names; 400 `invalid_cursor` for
/// anything but a cursor [`encode_cursor`] made for that subscription.
fn decode_cursor(cursor: &str, subscription_id: Uuid) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "invalid_cursor",
            "cursor is not a next_cursor of this list; read again from the first page",
        )
    };
    let text = URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(invalid)?;
    let mut parts = text.splitn(3, '.');
    let (Some(owner), Some(micros), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    if Uuid::parse_str(owner).map_err(|_| invalid())? != subscription_id {
        return Err(ApiError::bad_request(
            "invalid_cursor",
            "cursor is a next_cursor of another delivery log; read this one from its first page",
        ));
    }
    // No delivery predates 1970; an earlier time (which chrono reads back to year -262143)
    // is out of PostgreSQL's range and would fail the query as a 500.
    let at = micros
        .parse::<i64>()
        .ok()
        .filter(|micros| *micros >= 0)
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(invalid)?;
    let id = Uuid::parse_str(id).map_err(|_| invalid())?;
    Ok((at, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_the_position_it_was_made_from_and_anything_else_is_refused() {
        let at = DateTime::from_timestamp_micros(1_764_586_143_123_456).expect("time");
        let (owner, id) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(
            decode_cursor(&encode_cursor(owner, at, id), owner).expect("cursor"),
            (at, id)
        );
        for bad in [
            "",
            "x",
            "bm90LWEtY3Vyc29y",
            &URL_SAFE_NO_PAD.encode(format!("{owner}.12.nope")),
            &URL_SAFE_NO_PAD.encode(format!("{owner}.12")),
            &URL_SAFE_NO_PAD.encode(format!("nope.12.{id}")),
            // The form before cursors named their subscription.
            &URL_SAFE_NO_PAD.encode(format!("12.{id}")),
            // Before 1970: inside chrono's range, outside PostgreSQL's.
            &URL_SAFE_NO_PAD.encode(format!("{owner}.-1000000000000000000.{id}")),
            // Another subscription's.
            &encode_cursor(Uuid::new_v4(), at, id),
        ] {
            assert_eq!(
                decode_cursor(bad, owner).expect_err(bad).code(),
                "invalid_cursor",
                "{bad}"
            );
        }
    }
}
