//! The change log: one row per committed revision, read by every replica's tailer.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, Transaction};

use super::{Store, StoreError};

/// Postgres channel used as a doorbell; the payload is the revision, never the data.
pub const NOTIFY_CHANNEL: &str = "portcullis_changes";

/// Kind of resource a change is about (column `change_log.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    Api,
    Policy,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Policy => "policy",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "api" => Ok(Self::Api),
            "policy" => Ok(Self::Policy),
            other => Err(StoreError::Corrupt(format!("unknown change kind {other}"))),
        }
    }
}

/// A write about to be committed.
#[derive(Debug)]
pub struct NewChange<'a> {
    pub kind: ChangeKind,
    pub resource_id: &'a str,
    /// The resource after the change; `None` deletes it.
    pub body: Option<&'a Value>,
    /// Node-segmentation tags after the change (`None`: deleted; empty: every group).
    pub tags: Option<&'a [String]>,
    /// Tags before the change (`None`: did not exist).
    pub prev_tags: Option<&'a [String]>,
}

/// Takes the next revision and records `change`, as the last statements of `tx`. Returns the
/// revision; the caller commits right after.
pub async fn commit_change(tx: &mut Transaction<'_, Postgres>, change: NewChange<'_>) -> Result<i64, StoreError> {
    // Taking the counter last keeps its row lock short and still orders commits by revision.
    let (revision,): (i64,) = sqlx::query_as(
        "UPDATE revision_counter SET revision = revision + 1 WHERE singleton RETURNING revision",
    )
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO change_log (revision, kind, resource_id, op, body, tags, prev_tags)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(revision)
    .bind(change.kind.as_str())
    .bind(change.resource_id)
    .bind(if change.body.is_some() { "upsert" } else { "delete" })
    .bind(change.body)
    .bind(change.tags)
    .bind(change.prev_tags)
    .execute(&mut **tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(NOTIFY_CHANNEL)
        .bind(revision.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(revision)
}

/// A committed change as the tailer reads it.
#[derive(Debug, Clone)]
pub struct Change {
    pub revision: i64,
    pub kind: ChangeKind,
    pub resource_id: String,
    pub body: Option<Value>,
    pub tags: Option<Vec<String>>,
    pub prev_tags: Option<Vec<String>>,
    pub committed_at: DateTime<Utc>,
}

type ChangeRow = (i64, String, String, Option<Value>, Option<Vec<String>>, Option<Vec<String>>, DateTime<Utc>);

impl Store {
    /// Changes with `revision > after`, oldest first, at most `limit`.
    pub async fn changes_since(&self, after: i64, limit: i64) -> Result<Vec<Change>, StoreError> {
        let rows: Vec<ChangeRow> = sqlx::query_as(
            "SELECT revision, kind, resource_id, body, tags, prev_tags, committed_at
             FROM change_log WHERE revision > $1 ORDER BY revision LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(revision, kind, resource_id, body, tags, prev_tags, committed_at)| {
                Ok(Change { revision, kind: ChangeKind::parse(&kind)?, resource_id, body, tags, prev_tags, committed_at })
            })
            .collect()
    }

    /// Oldest revision still in the log (`None` when empty). A node whose revision is below
    /// `oldest - 1` cannot be served deltas.
    pub async fn oldest_retained_revision(&self) -> Result<Option<i64>, StoreError> {
        let (min,): (Option<i64>,) = sqlx::query_as("SELECT min(revision) FROM change_log").fetch_one(self.pool()).await?;
        Ok(min)
    }

    /// The current head revision.
    pub async fn head_revision(&self) -> Result<i64, StoreError> {
        let (rev,): (i64,) =
            sqlx::query_as("SELECT revision FROM revision_counter WHERE singleton").fetch_one(self.pool()).await?;
        Ok(rev)
    }
}
