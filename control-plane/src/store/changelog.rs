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
    /// A key was created, changed or deleted. Only its hash travels (as a session event that
    /// invalidates edge caches); the session itself is looked up on demand.
    Session,
    /// A node was revoked (`resource_id` is its id). Every replica's tailer reads it in revision
    /// order and fences the node's streams before anything committed later could reach it.
    Node,
    /// A certificate of the store (`resource_id` is its id, the body its record with the
    /// private key sealed). Groups receive it by reference, not by its tags alone (docs/sync.md).
    Certificate,
    /// An OAuth client (`resource_id` is its `client_id`, the body the client with its secret
    /// sealed). Every group receives every client.
    OAuthClient,
    /// An edge cache to drop (`resource_id` is `<cache>:<target>`, e.g. `jwks:<api_id>`, or
    /// `jwks:*` for every API). Streamed to every group in revision order, like session events,
    /// and never part of a snapshot or the configuration hash.
    Cache,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Policy => "policy",
            Self::Session => "session",
            Self::Node => "node",
            Self::Certificate => "certificate",
            Self::OAuthClient => "oauth_client",
            Self::Cache => "cache",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "api" => Ok(Self::Api),
            "policy" => Ok(Self::Policy),
            "session" => Ok(Self::Session),
            "node" => Ok(Self::Node),
            "certificate" => Ok(Self::Certificate),
            "oauth_client" => Ok(Self::OAuthClient),
            "cache" => Ok(Self::Cache),
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
pub async fn commit_change(
    tx: &mut Transaction<'_, Postgres>,
    change: NewChange<'_>,
) -> Result<i64, StoreError> {
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
    .bind(if change.body.is_some() {
        "upsert"
    } else {
        "delete"
    })
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

type ChangeRow = (
    i64,
    String,
    String,
    Option<Value>,
    Option<Vec<String>>,
    Option<Vec<String>>,
    DateTime<Utc>,
);

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
            .map(
                |(revision, kind, resource_id, body, tags, prev_tags, committed_at)| {
                    Ok(Change {
                        revision,
                        kind: ChangeKind::parse(&kind)?,
                        resource_id,
                        body,
                        tags,
                        prev_tags,
                        committed_at,
                    })
                },
            )
            .collect()
    }

    /// Oldest revision still in the log (`None` when empty). A node whose revision is below
    /// `oldest - 1` cannot be served deltas.
    pub async fn oldest_retained_revision(&self) -> Result<Option<i64>, StoreError> {
        let (min,): (Option<i64>,) = sqlx::query_as("SELECT min(revision) FROM change_log")
            .fetch_one(self.pool())
            .await?;
        Ok(min)
    }

    /// The current head revision.
    pub async fn head_revision(&self) -> Result<i64, StoreError> {
        let (rev,): (i64,) =
            sqlx::query_as("SELECT revision FROM revision_counter WHERE singleton")
                .fetch_one(self.pool())
                .await?;
        Ok(rev)
    }
}

/// A current resource, as the tailer loads it at start.
#[derive(Debug, Clone)]
pub struct StoredResource {
    pub kind: ChangeKind,
    pub id: String,
    pub body: Value,
    /// Node-segmentation tags; empty = every group.
    pub tags: Vec<String>,
}

/// Everything a replica needs to start tailing: a consistent head, the resources at that head,
/// and the last `log_len` changes up to it.
#[derive(Debug)]
pub struct StartState {
    pub head: i64,
    /// Nodes revoked as of `head`.
    pub revoked_nodes: Vec<uuid::Uuid>,
    pub resources: Vec<StoredResource>,
    pub log: Vec<Change>,
}

impl Store {
    /// Reads the start state in one REPEATABLE READ snapshot, so head, rows and log agree.
    pub async fn load_start_state(&self, log_len: i64) -> Result<StartState, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let (head,): (i64,) =
            sqlx::query_as("SELECT revision FROM revision_counter WHERE singleton")
                .fetch_one(&mut *tx)
                .await?;
        let apis: Vec<(String, Vec<String>, Value)> =
            sqlx::query_as("SELECT api_id, tags, definition FROM apis")
                .fetch_all(&mut *tx)
                .await?;
        let policies: Vec<(String, Value)> = sqlx::query_as("SELECT id, definition FROM policies")
            .fetch_all(&mut *tx)
            .await?;
        let certificates: Vec<(String, Value)> =
            sqlx::query_as("SELECT id, body FROM certificates")
                .fetch_all(&mut *tx)
                .await?;
        let oauth_clients: Vec<(String, Value)> =
            sqlx::query_as("SELECT client_id, body FROM oauth_clients")
                .fetch_all(&mut *tx)
                .await?;
        let revoked_nodes: Vec<(uuid::Uuid,)> =
            sqlx::query_as("SELECT id FROM nodes WHERE revoked_at IS NOT NULL")
                .fetch_all(&mut *tx)
                .await?;
        let rows: Vec<ChangeRow> = sqlx::query_as(
            "SELECT revision, kind, resource_id, body, tags, prev_tags, committed_at
             FROM change_log WHERE revision > $1 ORDER BY revision",
        )
        .bind(head - log_len)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut resources: Vec<StoredResource> = apis
            .into_iter()
            .map(|(id, tags, body)| StoredResource {
                kind: ChangeKind::Api,
                id,
                body,
                tags,
            })
            .collect();
        resources.extend(policies.into_iter().map(|(id, body)| StoredResource {
            kind: ChangeKind::Policy,
            id,
            body,
            tags: Vec::new(),
        }));
        resources.extend(oauth_clients.into_iter().map(|(id, body)| StoredResource {
            kind: ChangeKind::OAuthClient,
            id,
            body,
            tags: Vec::new(),
        }));
        resources.extend(certificates.into_iter().map(|(id, body)| {
            // The tags column of a certificate change is the record's tags: the same here.
            let tags = body
                .get("tags")
                .and_then(|t| serde_json::from_value(t.clone()).ok())
                .unwrap_or_default();
            StoredResource {
                kind: ChangeKind::Certificate,
                id,
                body,
                tags,
            }
        }));
        let log = rows
            .into_iter()
            .map(
                |(revision, kind, resource_id, body, tags, prev_tags, committed_at)| {
                    Ok(Change {
                        revision,
                        kind: ChangeKind::parse(&kind)?,
                        resource_id,
                        body,
                        tags,
                        prev_tags,
                        committed_at,
                    })
                },
            )
            .collect::<Result<_, StoreError>>()?;
        Ok(StartState {
            head,
            revoked_nodes: revoked_nodes.into_iter().map(|(id,)| id).collect(),
            resources,
            log,
        })
    }
}

/// Retention of the change log (docs/sync.md).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Always keep at least this many newest revisions.
    pub min_revisions: i64,
    /// Always keep what was committed within this many seconds.
    pub min_age_secs: i64,
    /// Nodes seen within this many seconds pin the log at their ACKed revision.
    pub node_seen_within_secs: i64,
    /// ... but no node holds back what was committed longer ago than this: a node connected and
    /// never ACKing would otherwise stop compaction for ever. It gets a below-retention
    /// snapshot when it catches up, like any late node.
    pub node_hold_max_secs: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            min_revisions: 10_000,
            min_age_secs: 24 * 3600,
            node_seen_within_secs: 3600,
            node_hold_max_secs: 7 * 24 * 3600,
        }
    }
}

impl Store {
    /// Deletes change-log rows no rule keeps. Safe to run from every replica at once. Returns
    /// how many rows went.
    pub async fn compact_change_log(&self, r: Retention) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM change_log WHERE revision <= LEAST(
                 (SELECT revision FROM revision_counter WHERE singleton) - $1,
                 (SELECT coalesce(max(revision), 0) FROM change_log
                   WHERE committed_at < now() - make_interval(secs => $2)),
                 GREATEST(
                   (SELECT coalesce(min(acked_revision), 9223372036854775807) FROM nodes
                     WHERE revoked_at IS NULL AND last_seen > now() - make_interval(secs => $3)),
                   (SELECT coalesce(max(revision), 0) FROM change_log
                     WHERE committed_at < now() - make_interval(secs => $4))))",
        )
        .bind(r.min_revisions)
        .bind(r.min_age_secs as f64)
        .bind(r.node_seen_within_secs as f64)
        .bind(r.node_hold_max_secs as f64)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }
}
