//! Postgres persistence. Knows nothing of HTTP or gRPC: functions take and return model values.
//!
//! Every configuration write goes through [`changelog::commit_change`] inside the same transaction
//! as the row it changes, so the row, its change-log entry and the revision commit together.

pub mod apis;
pub mod bootstrap_tokens;
pub mod ca;
pub mod cache;
pub mod certificates;
pub mod changelog;
pub mod config;
mod error;
pub mod join;
pub mod keys;
pub mod node_status;
pub mod nodes;
pub mod oauth_clients;
pub mod oauth_grants;
pub mod policies;
mod resources;

pub use error::StoreError;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects (bounded pool) without migrating.
    pub async fn connect(database_url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(database_url)
            .await?;
        Ok(Self { pool })
    }

    /// Applies pending migrations. Safe to run from several replicas at once (sqlx takes an
    /// advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}
