//! What the sync server records about each node: identity checks, connection, ACK/NACK.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError};

/// The registry's view of a node, as the sync server needs it per call.
#[derive(Debug, Clone)]
pub struct NodeRecord {
    pub id: Uuid,
    pub group: String,
    pub cert_serial: String,
    /// The serial that authenticated the last renewal ("" if none).
    pub prev_cert_serial: String,
    /// Expiry of the node's current certificate (moves forward at each renewal).
    pub cert_expires_at: DateTime<Utc>,
    pub revoked: bool,
}

/// Whether a node may keep its streams, as of now.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NodeStanding {
    pub id: Uuid,
    pub revoked: bool,
    /// Its current certificate (moved by renewals) has expired.
    pub expired: bool,
}

type RecordRow = (String, String, String, DateTime<Utc>, Option<DateTime<Utc>>);

impl Store {
    pub async fn node_record(&self, id: Uuid) -> Result<Option<NodeRecord>, StoreError> {
        let row: Option<RecordRow> = sqlx::query_as(
            "SELECT node_group, cert_serial, prev_cert_serial, cert_expires_at, revoked_at FROM nodes WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(
            |(group, cert_serial, prev_cert_serial, cert_expires_at, revoked_at)| NodeRecord {
                id,
                group,
                cert_serial,
                prev_cert_serial,
                cert_expires_at,
                revoked: revoked_at.is_some(),
            },
        ))
    }

    /// The standing of many nodes in one query; nodes not in the registry are left out.
    pub async fn node_standing(&self, ids: &[Uuid]) -> Result<Vec<NodeStanding>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, revoked_at IS NOT NULL AS revoked, cert_expires_at <= now() AS expired
             FROM nodes WHERE id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(self.pool())
        .await?)
    }

    /// A watch stream opened on `replica`.
    pub async fn node_connected(
        &self,
        id: Uuid,
        replica: &str,
        version: &str,
        capabilities: &[String],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE nodes SET connected = true, cp_replica = $2, version = $3, capabilities = $4, last_seen = now()
             WHERE id = $1",
        )
        .bind(id)
        .bind(replica)
        .bind(version)
        .bind(capabilities)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The stream on `replica` ended (a newer stream on another replica is left alone).
    pub async fn node_disconnected(&self, id: Uuid, replica: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET connected = false, last_seen = now() WHERE id = $1 AND cp_replica = $2")
            .bind(id)
            .bind(replica)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records many ACKs (node, revision, hash) in one statement.
    pub async fn nodes_acked(&self, acks: &[(Uuid, i64, String)]) -> Result<(), StoreError> {
        let ids: Vec<Uuid> = acks.iter().map(|a| a.0).collect();
        let revisions: Vec<i64> = acks.iter().map(|a| a.1).collect();
        let hashes: Vec<&str> = acks.iter().map(|a| a.2.as_str()).collect();
        sqlx::query(
            "UPDATE nodes SET acked_revision = a.revision, acked_hash = a.hash, acked_at = now(), last_seen = now()
             FROM unnest($1::uuid[], $2::bigint[], $3::text[]) AS a(id, revision, hash)
             WHERE nodes.id = a.id",
        )
        .bind(&ids)
        .bind(&revisions)
        .bind(&hashes)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// APIs the node answers 503 because they enable an authentication method it lacks.
    pub async fn node_unserved(&self, id: Uuid, apis: &[String]) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET unserved_apis = $2 WHERE id = $1")
            .bind(id)
            .bind(apis)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn node_nacked(&self, id: Uuid, nack: &serde_json::Value) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET last_nack = $2, last_seen = now() WHERE id = $1")
            .bind(id)
            .bind(nack)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

impl Store {
    pub async fn node_certificate_renewed(
        &self,
        id: Uuid,
        serial: &str,
        expires_at: DateTime<Utc>,
        renewed_with: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET cert_serial = $2, cert_expires_at = $3, prev_cert_serial = $4, last_seen = now() WHERE id = $1")
            .bind(id)
            .bind(serial)
            .bind(expires_at)
            .bind(renewed_with)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
