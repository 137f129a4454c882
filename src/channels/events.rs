//! The events table: appended in a refresh's own transaction, numbered per channel in commit
//! order, announced by `NOTIFY` with ids only, read back by the hub and by resuming clients.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::db::notify::{self, Notice};
use crate::db::tenant::ServiceTx;
use uuid::Uuid;

/// What one refresh tells every channel watching its view (`channel_id` is added per channel).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RefreshEvent {
    /// The refreshed view.
    pub view_name: String,
    /// The job whose run refreshed it; `null` for a refresh by the API.
    pub job_id: Option<Uuid>,
    /// The job run, or the manual refresh's id.
    pub run_id: Uuid,
    /// When the refresh finished.
    pub refreshed_at: DateTime<Utc>,
    /// Rows in the view afterwards.
    pub row_count: Option<i64>,
    /// How long the refresh took.
    pub duration_ms: i64,
    /// Always `succeeded`: only committed refreshes are announced.
    pub status: EventStatus,
    /// `full` (every row recomputed; always for materialized views) or `incremental`.
    pub mode: Mode,
    /// The buckets an incremental refresh recomputed (inclusive), so a listener can re-read
    /// only those rows; `null` for a full refresh, or an incremental one that changed none.
    pub buckets: Option<BucketRange>,
}

/// How a refresh recomputed a view, as refresh events say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every row was recomputed.
    Full,
    /// Only the buckets in `buckets` were.
    Incremental,
}

/// The buckets a refresh recomputed, inclusive, as PostgreSQL prints the bucket column
/// (`timestamptz` in UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BucketRange {
    /// The first bucket recomputed.
    pub from: String,
    /// The last bucket recomputed.
    pub to: String,
}

/// The `status` of every refresh event: one value, because only a refresh that committed is
/// announced (skips and failures never are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    /// The refresh committed.
    Succeeded,
}

/// Appends the event to every channel watching `view_id`, inside the caller's transaction.
/// The channel rows are locked in id order, so concurrent refreshes number events in the order
/// they commit, and each channel's [`Notice::Event`] is sent in the same transaction: delivered
/// at commit, never before. Returns how many channels were told.
pub async fn append(
    conn: &mut ServiceTx,
    view_id: Uuid,
    event: &RefreshEvent,
) -> Result<u64, sqlx::Error> {
    let data = serde_json::to_value(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let appended = sqlx::query!(
        r#"WITH locked AS (
             SELECT channel_id FROM tinydevcrm.channels WHERE view_id = $1
             ORDER BY channel_id FOR UPDATE
         ), numbered AS (
             UPDATE tinydevcrm.channels c SET last_seq = c.last_seq + 1
             FROM locked WHERE c.channel_id = locked.channel_id
             RETURNING c.channel_id, c.last_seq
         )
         INSERT INTO tinydevcrm.events (channel_id, seq, data)
         SELECT channel_id, last_seq, $2::jsonb || jsonb_build_object('channel_id', channel_id)
         FROM numbered
         RETURNING channel_id AS "channel_id!", seq AS "seq!""#,
        view_id,
        data,
    )
    .fetch_all(&mut **conn)
    .await?;
    let notices: Vec<Notice> = appended
        .iter()
        .map(|row| Notice::Event {
            channel_id: row.channel_id,
            seq: row.seq,
        })
        .collect();
    notify::send(conn, &notices).await?;
    Ok(notices.len() as u64)
}

/// One stored event.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The per-channel sequence number (the SSE `id:`).
    pub seq: i64,
    /// The JSON text sent as `data:`.
    pub data: String,
}

/// How many events one read of [`page_after`] returns at most.
pub const PAGE_SIZE: i64 = 500;

/// A page of a channel's events.
#[derive(Debug)]
pub struct Page {
    /// Oldest first, at most [`PAGE_SIZE`].
    pub events: Vec<StoredEvent>,
    /// The page was full: more events may follow its last one.
    pub more: bool,
}

/// The channel's events after `after`, oldest first, one page at a time: the only way the hub
/// and the listen stream read events back.
pub async fn page_after(pool: &PgPool, channel_id: Uuid, after: i64) -> Result<Page, sqlx::Error> {
    let events = sqlx::query_as!(
        StoredEvent,
        r#"SELECT seq, data::text AS "data!" FROM tinydevcrm.events
           WHERE channel_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"#,
        channel_id,
        after,
        PAGE_SIZE,
    )
    .fetch_all(pool)
    .await?;
    let more = events.len() as i64 == PAGE_SIZE;
    Ok(Page { events, more })
}

/// Deletes events older than `keep`, remembering per channel the highest seq deleted.
pub async fn prune(pool: &PgPool, keep: chrono::Duration) -> Result<u64, sqlx::Error> {
    let cutoff = Utc::now() - keep;
    let deleted = sqlx::query_scalar!(
        r#"WITH gone AS (
             DELETE FROM tinydevcrm.events WHERE created_at < $1 RETURNING channel_id, seq
         ), highest AS (
             SELECT channel_id, max(seq) AS seq FROM gone GROUP BY channel_id
         ), marked AS (
             UPDATE tinydevcrm.channels c SET pruned_through = greatest(c.pruned_through, h.seq)
             FROM highest h WHERE c.channel_id = h.channel_id RETURNING 1
         )
         SELECT count(*) AS "deleted!" FROM gone"#,
        cutoff,
    )
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(deleted).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_event_keeps_its_fields_and_says_its_mode_and_buckets() {
        let event = RefreshEvent {
            view_name: "daily".to_owned(),
            job_id: None,
            run_id: Uuid::nil(),
            refreshed_at: DateTime::parse_from_rfc3339("2024-05-06T07:08:09Z")
                .expect("a time")
                .with_timezone(&Utc),
            row_count: Some(3),
            duration_ms: 4,
            status: EventStatus::Succeeded,
            mode: Mode::Full,
            buckets: None,
        };
        assert_eq!(
            serde_json::to_string(&event).expect("json"),
            r#"{"view_name":"daily","job_id":null,"run_id":"00000000-0000-0000-0000-000000000000","refreshed_at":"2024-05-06T07:08:09Z","row_count":3,"duration_ms":4,"status":"succeeded","mode":"full","buckets":null}"#
        );
    }
}
