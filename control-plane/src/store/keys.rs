//! Keys (Tyk sessions), stored by the sha256 of the key: the key itself is never stored.

use serde_json::Value;

use super::{Store, StoreError};

impl Store {
    /// Inserts or replaces a key. Returns true when it was new.
    pub async fn put_key(&self, key_hash: &str, session: &Value) -> Result<bool, StoreError> {
        let (inserted,): (bool,) = sqlx::query_as(
            "INSERT INTO keys (key_hash, session) VALUES ($1, $2)
             ON CONFLICT (key_hash) DO UPDATE SET session = EXCLUDED.session, updated_at = now()
             RETURNING (xmax = 0)",
        )
        .bind(key_hash)
        .bind(session)
        .fetch_one(self.pool())
        .await?;
        Ok(inserted)
    }

    /// Replaces an existing key only.
    pub async fn update_key(&self, key_hash: &str, session: &Value) -> Result<(), StoreError> {
        let done =
            sqlx::query("UPDATE keys SET session = $2, updated_at = now() WHERE key_hash = $1")
                .bind(key_hash)
                .bind(session)
                .execute(self.pool())
                .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    pub async fn get_key(&self, key_hash: &str) -> Result<Value, StoreError> {
        let row: Option<(Value,)> = sqlx::query_as("SELECT session FROM keys WHERE key_hash = $1")
            .bind(key_hash)
            .fetch_optional(self.pool())
            .await?;
        row.map(|(v,)| v).ok_or(StoreError::NotFound)
    }

    pub async fn delete_key(&self, key_hash: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM keys WHERE key_hash = $1")
            .bind(key_hash)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    pub async fn list_key_hashes(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT key_hash FROM keys ORDER BY created_at, key_hash")
                .fetch_all(self.pool())
                .await?,
        )
    }
}
