//! SQL of the channel registry.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::notify::{self, Notice};
use crate::db::quota::{self, Counted};
use crate::error::ApiError;

/// A channel as stored, with its view's name.
#[derive(Debug, Clone)]
pub struct ChannelRow {
    /// Primary key (public, unguessable).
    pub channel_id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// The watched view.
    pub view_id: Uuid,
    /// Its name.
    pub view_name: String,
    /// The job it was created from, if any.
    pub job_id: Option<Uuid>,
    /// The last event's sequence number.
    pub last_seq: i64,
    /// Events up to this one were deleted by retention.
    pub pruned_through: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Creates a channel on a view; 409 `too_many_channels` when the user already has
/// `max_channels` (checked atomically with the insert).
pub async fn create(
    pool: &PgPool,
    user_id: Uuid,
    view_id: Uuid,
    job_id: Option<Uuid>,
    max_channels: i64,
) -> Result<ChannelRow, ApiError> {
    let channel_id = Uuid::new_v4();
    let mut tx = pool.begin().await?;
    quota::check_locked(&mut tx, user_id, Counted::Channels, max_channels).await?;
    sqlx::query!(
        "INSERT INTO tinydevcrm.channels (channel_id, user_id, view_id, job_id) VALUES ($1, $2, $3, $4)",
        channel_id,
        user_id,
        view_id,
        job_id,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    find(pool, user_id, channel_id).await
}

/// A user's channel; anyone else's is simply not found.
pub async fn find(pool: &PgPool, user_id: Uuid, channel_id: Uuid) -> Result<ChannelRow, ApiError> {
    sqlx::query_as!(
        ChannelRow,
        "SELECT c.channel_id, c.user_id, c.view_id, v.view_name, c.job_id, c.last_seq,
                c.pruned_through, c.created_at
         FROM tinydevcrm.channels c JOIN tinydevcrm.views v USING (view_id)
         WHERE c.user_id = $1 AND c.channel_id = $2",
        user_id,
        channel_id,
    )
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ApiError::NotFound {
        detail: format!("no channel {channel_id}"),
    })
}

/// A user's channels, oldest first; `view_id` narrows to one view's.
pub async fn list(
    pool: &PgPool,
    user_id: Uuid,
    view_id: Option<Uuid>,
) -> Result<Vec<ChannelRow>, ApiError> {
    Ok(sqlx::query_as!(
        ChannelRow,
        "SELECT c.channel_id, c.user_id, c.view_id, v.view_name, c.job_id, c.last_seq,
                c.pruned_through, c.created_at
         FROM tinydevcrm.channels c JOIN tinydevcrm.views v USING (view_id)
         WHERE c.user_id = $1 AND ($2::uuid IS NULL OR c.view_id = $2)
         ORDER BY c.created_at, c.channel_id",
        user_id,
        view_id,
    )
    .fetch_all(pool)
    .await?)
}

/// Deletes a user's channel and its events; the [`Notice::ChannelDeleted`] sent in the same
/// transaction ends the channel's open streams on every process once the deletion commits.
pub async fn delete(pool: &PgPool, user_id: Uuid, channel_id: Uuid) -> Result<(), ApiError> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query!(
        "DELETE FROM tinydevcrm.channels WHERE user_id = $1 AND channel_id = $2",
        user_id,
        channel_id,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if deleted == 0 {
        return Err(ApiError::NotFound {
            detail: format!("no channel {channel_id}"),
        });
    }
    notify::send(&mut tx, &[Notice::ChannelDeleted { channel_id }]).await?;
    tx.commit().await?;
    Ok(())
}

/// A channel as the API describes it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelBody {
    /// The channel's public id.
    pub channel_id: Uuid,
    /// The watched view.
    pub view_name: String,
    /// The job it was created from, if any.
    pub job_id: Option<Uuid>,
    /// The id of the latest event (0 before the first).
    pub last_event_id: i64,
    /// Where to listen.
    pub listen_url: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl From<ChannelRow> for ChannelBody {
    fn from(c: ChannelRow) -> Self {
        Self {
            listen_url: format!("/channels/{}/listen/", c.channel_id),
            channel_id: c.channel_id,
            view_name: c.view_name,
            job_id: c.job_id,
            last_event_id: c.last_seq,
            created_at: c.created_at,
        }
    }
}
