//! Policies: rows in `policies`, each write with its change-log entry. Policies reach every
//! group (an empty tag list), because keys of any region may reference them.

use portcullis_proto::model::Policy;
use serde_json::Value;

use super::changelog::{ChangeKind, NewChange, commit_change};
use super::{Store, StoreError};

const EVERY_GROUP: &[String] = &[];

impl Store {
    pub async fn list_policies(&self) -> Result<Vec<Value>, StoreError> {
        let rows: Vec<(Value,)> = sqlx::query_as("SELECT definition FROM policies ORDER BY id")
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().map(|(v,)| v).collect())
    }

    pub async fn get_policy(&self, id: &str) -> Result<Value, StoreError> {
        let row: Option<(Value,)> = sqlx::query_as("SELECT definition FROM policies WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|(v,)| v).ok_or(StoreError::NotFound)
    }

    /// Inserts (`create`) or replaces an existing policy. Returns the revision.
    pub async fn write_policy(&self, policy: &Policy, create: bool) -> Result<i64, StoreError> {
        let body = policy.to_value();
        let id = policy.id();
        let mut tx = self.pool().begin().await?;
        let written = if create {
            sqlx::query("INSERT INTO policies (id, definition, revision) VALUES ($1, $2, 0) ON CONFLICT (id) DO NOTHING")
        } else {
            sqlx::query("UPDATE policies SET definition = $2, updated_at = now() WHERE id = $1")
        }
        .bind(id)
        .bind(&body)
        .execute(&mut *tx)
        .await?;
        if written.rows_affected() != 1 {
            return Err(if create {
                StoreError::Conflict {
                    field: "id",
                    reason: "a policy with this id already exists".into(),
                }
            } else {
                StoreError::NotFound
            });
        }
        let prev_tags = if create { None } else { Some(EVERY_GROUP) };
        let revision = commit_change(
            &mut tx,
            NewChange {
                kind: ChangeKind::Policy,
                resource_id: id,
                body: Some(&body),
                tags: Some(EVERY_GROUP),
                prev_tags,
            },
        )
        .await?;
        sqlx::query("UPDATE policies SET revision = $2 WHERE id = $1")
            .bind(id)
            .bind(revision)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(revision)
    }

    pub async fn delete_policy(&self, id: &str) -> Result<i64, StoreError> {
        let mut tx = self.pool().begin().await?;
        let gone = sqlx::query("DELETE FROM policies WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if gone.rows_affected() != 1 {
            return Err(StoreError::NotFound);
        }
        let revision = commit_change(
            &mut tx,
            NewChange {
                kind: ChangeKind::Policy,
                resource_id: id,
                body: None,
                tags: None,
                prev_tags: Some(EVERY_GROUP),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(revision)
    }
}
