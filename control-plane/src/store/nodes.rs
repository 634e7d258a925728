//! The node registry as operators see it, and revocation.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::changelog::{ChangeKind, NewChange, commit_change};
use super::{Store, StoreError};

/// One node in `GET /portcullis/nodes`.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct NodeInfo {
    pub id: Uuid,
    pub name: String,
    pub group: String,
    pub version: String,
    pub capabilities: Vec<String>,
    pub connected: bool,
    pub cp_replica: Option<String>,
    pub applied_revision: i64,
    pub applied_hash: String,
    pub applied_at: Option<DateTime<Utc>>,
    /// Revisions committed since the one the node applied (0 when up to date).
    pub lag: i64,
    pub last_nack: Option<Value>,
    /// APIs the node answers 503: `"<api_id>: <method>"` (a method it does not implement).
    pub unserved_apis: Vec<String>,
    pub last_seen: Option<DateTime<Utc>>,
    pub cert_expires_at: DateTime<Utc>,
    pub revoked: bool,
    pub created_at: DateTime<Utc>,
}

const SELECT_NODES: &str = "SELECT n.id, n.name, n.node_group AS \"group\", n.version, n.capabilities, n.connected,
        n.cp_replica, n.acked_revision AS applied_revision, n.acked_hash AS applied_hash, n.acked_at AS applied_at,
        greatest(c.revision - n.acked_revision, 0) AS lag, n.last_nack, n.unserved_apis, n.last_seen, n.cert_expires_at,
        n.revoked_at IS NOT NULL AS revoked, n.created_at
     FROM nodes n CROSS JOIN revision_counter c";

impl Store {
    pub async fn list_nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let sql = format!("{SELECT_NODES} ORDER BY n.node_group, n.name, n.id");
        Ok(sqlx::query_as(&sql).fetch_all(self.pool()).await?)
    }

    pub async fn get_node(&self, id: Uuid) -> Result<NodeInfo, StoreError> {
        let sql = format!("{SELECT_NODES} WHERE n.id = $1");
        sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// Marks a node revoked; its certificate is refused from then on. The revocation is also a
    /// change-log entry in the same transaction: every replica's tailer reads it before any
    /// later commit and closes the node's streams before it could forward one (`docs/sync.md`).
    /// `connected` stays as it is until the stream has really closed.
    pub async fn revoke_node(&self, id: Uuid) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let done =
            sqlx::query("UPDATE nodes SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            let (exists,): (bool,) =
                sqlx::query_as("SELECT EXISTS (SELECT 1 FROM nodes WHERE id = $1)")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            return if exists {
                Ok(())
            } else {
                Err(StoreError::NotFound)
            };
        }
        let id_text = id.to_string();
        commit_change(
            &mut tx,
            NewChange {
                kind: ChangeKind::Node,
                resource_id: &id_text,
                body: None,
                tags: None,
                prev_tags: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
