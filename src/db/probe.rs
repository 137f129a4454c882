//! `/health`'s database probe: one connection outside the pool, reconnected when it fails.

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Mutex;

/// `/health`'s own database connection, outside the pool: a pool that busy requests have
/// taken is not a database that is down, and a health check must never wait for one.
#[derive(Debug)]
pub struct Probe {
    options: PgConnectOptions,
    connection: Mutex<Option<PgConnection>>,
}

impl Probe {
    /// A probe that connects (lazily) with the pool's options.
    pub fn new(pool: &PgPool) -> Self {
        Self {
            options: pool.connect_options().as_ref().clone(),
            connection: Mutex::new(None),
        }
    }

    /// Opens the probe's connection ahead of the first check; a failure is left for the
    /// checks to report.
    pub async fn warm_up(&self) {
        if let Err(e) = self.ping().await {
            tracing::debug!(error = %e, "health probe: no connection yet");
        }
    }

    /// Pings the database on the probe's connection. A kept connection that fails (the
    /// database restarted, say) is dropped and the ping is tried once on a new one.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        let mut connection = self.connection.lock().await;
        if let Some(kept) = connection.as_mut() {
            if select_one(kept).await.is_ok() {
                return Ok(());
            }
            *connection = None;
        }
        let mut fresh = PgConnection::connect_with(&self.options).await?;
        select_one(&mut fresh).await?;
        *connection = Some(fresh);
        Ok(())
    }
}

async fn select_one(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(connection)
        .await
        .map(drop)
}
