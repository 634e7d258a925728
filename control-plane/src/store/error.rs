//! Errors of the store boundary.

/// What went wrong talking to Postgres, as facts the API layer maps to statuses.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken; `field` names the JSON field operators know.
    #[error("{field}: {reason}")]
    Conflict { field: &'static str, reason: String },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}
