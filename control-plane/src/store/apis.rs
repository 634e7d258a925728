//! API definitions: rows in `apis`, each write with its change-log entry.

use portcullis_proto::model::ApiDefinition;
use serde_json::Value;

use super::changelog::{ChangeKind, NewChange, commit_change};
use super::{Store, StoreError};

/// Maps the listen-path uniqueness rule to the field operators set.
fn map_conflict(e: sqlx::Error) -> StoreError {
    let constraint = e
        .as_database_error()
        .and_then(|d| d.constraint())
        .map(str::to_owned);
    match constraint.as_deref() {
        Some("apis_domain_listen_path_key") => StoreError::Conflict {
            field: "proxy.listen_path",
            reason: "already used by another API on the same domain".into(),
        },
        Some("apis_pkey") => StoreError::Conflict {
            field: "api_id",
            reason: "an API with this id already exists".into(),
        },
        _ => StoreError::Database(e),
    }
}

impl Store {
    pub async fn list_apis(&self) -> Result<Vec<Value>, StoreError> {
        let rows: Vec<(Value,)> = sqlx::query_as("SELECT definition FROM apis ORDER BY api_id")
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().map(|(v,)| v).collect())
    }

    pub async fn get_api(&self, api_id: &str) -> Result<Value, StoreError> {
        let row: Option<(Value,)> = sqlx::query_as("SELECT definition FROM apis WHERE api_id = $1")
            .bind(api_id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|(v,)| v).ok_or(StoreError::NotFound)
    }

    /// Inserts a new API; an existing id or a used listen path is a conflict. Returns the revision.
    pub async fn create_api(&self, def: &ApiDefinition) -> Result<i64, StoreError> {
        let spec = def.spec();
        let body = def.to_value();
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO apis (api_id, domain, listen_path, tags, definition, revision) VALUES ($1, $2, $3, $4, $5, 0)",
        )
        .bind(&spec.api_id)
        .bind(&spec.domain)
        .bind(&spec.proxy.listen_path)
        .bind(&spec.tags)
        .bind(&body)
        .execute(&mut *tx)
        .await
        .map_err(map_conflict)?;
        let revision = commit_change(
            &mut tx,
            NewChange {
                kind: ChangeKind::Api,
                resource_id: &spec.api_id,
                body: Some(&body),
                tags: Some(&spec.tags),
                prev_tags: None,
            },
        )
        .await?;
        sqlx::query("UPDATE apis SET revision = $2 WHERE api_id = $1")
            .bind(&spec.api_id)
            .bind(revision)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(revision)
    }

    /// Replaces an existing API. Returns the revision.
    pub async fn update_api(&self, def: &ApiDefinition) -> Result<i64, StoreError> {
        let spec = def.spec();
        let body = def.to_value();
        let mut tx = self.pool().begin().await?;
        // Locking the row keeps prev_tags exact when two writers race on one API.
        let prev: Option<(Vec<String>,)> =
            sqlx::query_as("SELECT tags FROM apis WHERE api_id = $1 FOR UPDATE")
                .bind(&spec.api_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((prev_tags,)) = prev else {
            return Err(StoreError::NotFound);
        };
        sqlx::query(
            "UPDATE apis SET domain = $2, listen_path = $3, tags = $4, definition = $5, updated_at = now() WHERE api_id = $1",
        )
        .bind(&spec.api_id)
        .bind(&spec.domain)
        .bind(&spec.proxy.listen_path)
        .bind(&spec.tags)
        .bind(&body)
        .execute(&mut *tx)
        .await
        .map_err(map_conflict)?;
        let revision = commit_change(
            &mut tx,
            NewChange {
                kind: ChangeKind::Api,
                resource_id: &spec.api_id,
                body: Some(&body),
                tags: Some(&spec.tags),
                prev_tags: Some(&prev_tags),
            },
        )
        .await?;
        sqlx::query("UPDATE apis SET revision = $2 WHERE api_id = $1")
            .bind(&spec.api_id)
            .bind(revision)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(revision)
    }

    pub async fn delete_api(&self, api_id: &str) -> Result<i64, StoreError> {
        let mut tx = self.pool().begin().await?;
        let prev: Option<(Vec<String>,)> =
            sqlx::query_as("DELETE FROM apis WHERE api_id = $1 RETURNING tags")
                .bind(api_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((prev_tags,)) = prev else {
            return Err(StoreError::NotFound);
        };
        let revision = commit_change(
            &mut tx,
            NewChange {
                kind: ChangeKind::Api,
                resource_id: api_id,
                body: None,
                tags: None,
                prev_tags: Some(&prev_tags),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(revision)
    }
}
