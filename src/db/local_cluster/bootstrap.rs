//! Bootstrap as the cluster's superuser: the service role and its databases, with the privilege
//! hardening of `harden.sql`.

use secrecy::{ExposeSecret, SecretString};
use sqlx::{Connection, PgConnection, Row};

use super::{ClusterError, LocalCluster, SERVICE_ROLE};

const HARDEN_SQL: &str = include_str!("../harden.sql");

impl LocalCluster {
    /// Creates the service role (LOGIN, CREATEROLE, not superuser) or resets its password.
    pub async fn ensure_service_role(&self, password: &SecretString) -> Result<(), ClusterError> {
        let mut conn = PgConnection::connect_with(&self.superuser_options("postgres")).await?;
        let exists = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(SERVICE_ROLE)
            .fetch_optional(&mut conn)
            .await?
            .is_some();
        let template = if exists {
            "ALTER ROLE %I LOGIN CREATEROLE NOSUPERUSER PASSWORD %L"
        } else {
            "CREATE ROLE %I LOGIN CREATEROLE NOSUPERUSER PASSWORD %L"
        };
        // DDL takes no bind parameters: let the server quote the values with format().
        let statement: String = sqlx::query("SELECT format($1, $2::text, $3::text)")
            .bind(template)
            .bind(SERVICE_ROLE)
            .bind(password.expose_secret())
            .fetch_one(&mut conn)
            .await?
            .try_get(0)?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(())
    }

    /// Creates `database` owned by the service role when missing, and applies the privilege
    /// hardening of `harden.sql` (idempotent).
    pub async fn ensure_database(&self, database: &str) -> Result<(), ClusterError> {
        self.ensure_database_hardened(database, true).await
    }

    /// [`Self::ensure_database`], optionally without the hardening: what a managed PostgreSQL
    /// whose administrator never ran `harden.sql` looks like (tests run the attacks on both).
    pub async fn ensure_database_hardened(
        &self,
        database: &str,
        harden: bool,
    ) -> Result<(), ClusterError> {
        let mut conn = PgConnection::connect_with(&self.superuser_options("postgres")).await?;
        let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(database)
            .fetch_optional(&mut conn)
            .await?
            .is_some();
        if !exists {
            let statement: String =
                sqlx::query("SELECT format('CREATE DATABASE %I OWNER %I', $1::text, $2::text)")
                    .bind(database)
                    .bind(SERVICE_ROLE)
                    .fetch_one(&mut conn)
                    .await?
                    .try_get(0)?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut conn)
                .await?;
        }
        conn.close().await?;
        if harden {
            let mut conn = PgConnection::connect_with(&self.superuser_options(database)).await?;
            sqlx::raw_sql(HARDEN_SQL).execute(&mut conn).await?;
            conn.close().await?;
        }
        Ok(())
    }
}
