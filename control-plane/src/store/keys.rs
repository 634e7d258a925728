//! Keys (Tyk sessions), stored by the sha256 of the key: the key itself is never stored.
//! Every write also commits a `session` change, which edges receive as a session event that
//! drops the key from their caches, in revision order with the rest of the configuration.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, Transaction};

use super::changelog::{ChangeKind, NewChange, commit_change};
use super::{Store, StoreError};

const EVERY_GROUP: &[String] = &[];

async fn session_event(
    tx: &mut Transaction<'_, Postgres>,
    key_hash: &str,
    deleted: bool,
) -> Result<i64, StoreError> {
    // The log carries no session content: an empty object marks "changed", NULL "deleted".
    let marker = Value::Object(serde_json::Map::new());
    let change = NewChange {
        kind: ChangeKind::Session,
        resource_id: key_hash,
        body: (!deleted).then_some(&marker),
        tags: (!deleted).then_some(EVERY_GROUP),
        prev_tags: Some(EVERY_GROUP),
    };
    commit_change(tx, change).await
}

impl Store {
    /// Inserts or replaces a key. Returns true when it was new.
    pub async fn put_key(
        &self,
        key_hash: &str,
        session: &Value,
        delete_at: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let (inserted,): (bool,) = sqlx::query_as(
            "INSERT INTO keys (key_hash, session, delete_at) VALUES ($1, $2, $3)
             ON CONFLICT (key_hash) DO UPDATE SET session = EXCLUDED.session, delete_at = EXCLUDED.delete_at, updated_at = now()
             RETURNING (xmax = 0)",
        )
        .bind(key_hash)
        .bind(session)
        .bind(delete_at)
        .fetch_one(&mut *tx)
        .await?;
        session_event(&mut tx, key_hash, false).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Replaces an existing (not yet deleted by lifetime) key only.
    pub async fn update_key(
        &self,
        key_hash: &str,
        session: &Value,
        delete_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(
            "UPDATE keys SET session = $2, delete_at = $3, updated_at = now()
             WHERE key_hash = $1 AND (delete_at IS NULL OR delete_at > now())",
        )
        .bind(key_hash)
        .bind(session)
        .bind(delete_at)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound);
        }
        session_event(&mut tx, key_hash, false).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The session of a key and the revision it was read at (for ordering against events).
    pub async fn lookup_key(&self, key_hash: &str) -> Result<(Option<Value>, i64), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let (revision,): (i64,) =
            sqlx::query_as("SELECT revision FROM revision_counter WHERE singleton")
                .fetch_one(&mut *tx)
                .await?;
        let row: Option<(Value,)> = sqlx::query_as("SELECT session FROM keys WHERE key_hash = $1 AND (delete_at IS NULL OR delete_at > now())")
            .bind(key_hash)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((row.map(|(v,)| v), revision))
    }

    pub async fn get_key(&self, key_hash: &str) -> Result<Value, StoreError> {
        let row: Option<(Value,)> = sqlx::query_as("SELECT session FROM keys WHERE key_hash = $1 AND (delete_at IS NULL OR delete_at > now())")
            .bind(key_hash)
            .fetch_optional(self.pool())
            .await?;
        row.map(|(v,)| v).ok_or(StoreError::NotFound)
    }

    pub async fn delete_key(&self, key_hash: &str) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query("DELETE FROM keys WHERE key_hash = $1")
            .bind(key_hash)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound);
        }
        session_event(&mut tx, key_hash, true).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes keys whose lifetime has passed, streaming each deletion. Returns how many.
    pub async fn sweep_expired_keys(&self) -> Result<usize, StoreError> {
        let mut tx = self.pool().begin().await?;
        let gone: Vec<String> = sqlx::query_scalar(
            "DELETE FROM keys WHERE key_hash IN
               (SELECT key_hash FROM keys WHERE delete_at <= now() ORDER BY delete_at LIMIT 1000 FOR UPDATE SKIP LOCKED)
             RETURNING key_hash",
        )
        .fetch_all(&mut *tx)
        .await?;
        for hash in &gone {
            session_event(&mut tx, hash, true).await?;
        }
        tx.commit().await?;
        Ok(gone.len())
    }

    /// The largest `session_lifetime` among the given APIs (0 when none sets one).
    pub async fn max_api_session_lifetime(&self, api_ids: &[String]) -> Result<i64, StoreError> {
        let (max,): (Option<i64>,) = sqlx::query_as(
            "SELECT max(CASE WHEN jsonb_typeof(definition->'session_lifetime') = 'number'
                             THEN (definition->>'session_lifetime')::numeric::bigint END)
             FROM apis WHERE api_id = ANY($1)",
        )
        .bind(api_ids)
        .fetch_one(self.pool())
        .await?;
        Ok(max.unwrap_or(0))
    }

    pub async fn list_key_hashes(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT key_hash FROM keys WHERE delete_at IS NULL OR delete_at > now() ORDER BY created_at, key_hash")
                .fetch_all(self.pool())
                .await?,
        )
    }
}
