//! Keys (Tyk sessions), stored by the sha256 of the key: the key itself is never stored.
//! Every operator write also commits a `session` change, which edges receive as a session event
//! that drops the key from their caches, in revision order with the rest of the configuration.
//!
//! Sessions made at the edge (origin `jwt`, docs/keys.md "Sessions made at the edge") live in the
//! same table. Reports from edges write them without a change-log row; an operator's DELETE turns
//! one into a tombstone (`revoked_at`) that outlives every token issued before it.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::changelog::{ChangeKind, NewChange, commit_change};
use super::{Store, StoreError};

const EVERY_GROUP: &[String] = &[];

/// An edge-made session is kept this long past its token's expiry (or past its last report when
/// the token never expires): each report refreshes it, and an edge that still holds the token
/// re-derives the session anyway.
pub const EDGE_SESSION_GRACE_SECS: i64 = 24 * 3600;

/// Who made a key (column `keys.origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Written through the management API.
    Operator,
    /// Made by an edge from a verified JWT and reported with `ReportSessions`.
    Jwt,
    /// An access token of the built-in OAuth 2.0 provider, issued by the control plane for an
    /// edge's token endpoint (docs/oauth.md). Deleted like an operator's key.
    OAuth,
}

impl KeyOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Jwt => "jwt",
            Self::OAuth => "oauth",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "operator" => Ok(Self::Operator),
            "jwt" => Ok(Self::Jwt),
            "oauth" => Ok(Self::OAuth),
            other => Err(StoreError::Corrupt(format!("unknown key origin {other}"))),
        }
    }
}

/// A key as `LookupSession` answers it: a tombstone too, so the edge can refuse tokens issued
/// at or before the revocation.
#[derive(Debug, Clone)]
pub struct LookedUpKey {
    pub session: Value,
    pub origin: KeyOrigin,
    /// Set on a revoked edge-made session (a tombstone).
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A session an edge reported, already checked and reduced to the fields the control plane
/// keeps (`sync::report`).
#[derive(Debug, Clone)]
pub struct ReportedKey {
    pub key_hash: String,
    pub session: Value,
    /// The session's `date_created`: only a session made after a revocation replaces its
    /// tombstone. `None` never replaces one.
    pub created: Option<DateTime<Utc>>,
    /// The token's `expires` (unix seconds, 0 or less: none).
    pub expires: i64,
}

/// What a report did, session by session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportOutcome {
    pub accepted: usize,
    /// Left alone: an operator's key, or a tombstone newer than the session.
    pub skipped: usize,
}

/// When an edge-made session with token expiry `expires` is deleted, from `now`.
pub fn edge_delete_at(expires: i64, now: DateTime<Utc>) -> DateTime<Utc> {
    let grace = chrono::Duration::seconds(EDGE_SESSION_GRACE_SECS);
    let base = if expires > 0 {
        DateTime::from_timestamp(expires, 0).unwrap_or(now)
    } else {
        now
    };
    // Bounded inputs (expires is at most year 9999), checked anyway.
    base.checked_add_signed(grace).unwrap_or(base)
}

pub(super) async fn session_event(
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
    /// Inserts or replaces a key. Returns true when it was new. The key is the operator's from
    /// then on, even when it replaces an edge-made session or its tombstone: an explicit
    /// operator action.
    pub async fn put_key(
        &self,
        key_hash: &str,
        session: &Value,
        delete_at: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let (inserted,): (bool,) = sqlx::query_as(
            "INSERT INTO keys (key_hash, session, delete_at) VALUES ($1, $2, $3)
             ON CONFLICT (key_hash) DO UPDATE SET session = EXCLUDED.session, delete_at = EXCLUDED.delete_at,
                 origin = 'operator', revoked_at = NULL, reported_by = NULL, updated_at = now()
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

    /// Inserts an access token of the built-in OAuth 2.0 provider (origin `oauth`, tied to its
    /// client, deleted at its expiry) with its session event, like [`Store::put_key`]. A token
    /// is 256 random bits, so a collision is an error, never an overwrite.
    pub async fn put_oauth_token(
        &self,
        key_hash: &str,
        session: &Value,
        client_id: &str,
        delete_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        // A client deleted while its grant ran gets no token: the share lock orders this insert
        // before the delete, or the delete before it (then the row is gone).
        let client: Option<(String,)> =
            sqlx::query_as("SELECT client_id FROM oauth_clients WHERE client_id = $1 FOR SHARE")
                .bind(client_id)
                .fetch_optional(&mut *tx)
                .await?;
        if client.is_none() {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "INSERT INTO keys (key_hash, session, delete_at, origin, oauth_client_id)
             VALUES ($1, $2, $3, 'oauth', $4)",
        )
        .bind(key_hash)
        .bind(session)
        .bind(delete_at)
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
        // No session event: no edge can hold anything about a key of 32 random bytes made just
        // now, and a change-log revision per token would stream every issue to every edge.
        tx.commit().await?;
        Ok(())
    }

    /// Replaces an existing (not yet deleted by lifetime, not revoked) key only. An edge-made
    /// session stays edge-made, with the edge rule for its deletion (token expiry plus a day)
    /// instead of `delete_at`.
    pub async fn update_key(
        &self,
        key_hash: &str,
        session: &Value,
        delete_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let expires = session.get("expires").and_then(Value::as_i64).unwrap_or(0);
        let edge = edge_delete_at(expires, Utc::now());
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(
            // An operator's PUT of an edge-made session keeps it one (its mark and its
            // revocation floor survive whatever the body says).
            "UPDATE keys SET updated_at = now(),
                 session = CASE WHEN origin = 'jwt' THEN $2::jsonb
                     || jsonb_build_object('portcullis_origin', 'jwt')
                     || CASE WHEN session ? 'portcullis_tokens_after'
                        THEN jsonb_build_object('portcullis_tokens_after', session->'portcullis_tokens_after')
                        ELSE '{}'::jsonb END
                     ELSE $2 END,
                 delete_at = CASE WHEN origin = 'jwt' THEN $4 ELSE $3 END
             WHERE key_hash = $1 AND revoked_at IS NULL AND (delete_at IS NULL OR delete_at > now())",
        )
        .bind(key_hash)
        .bind(session)
        .bind(delete_at)
        .bind(edge)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound);
        }
        session_event(&mut tx, key_hash, false).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The session of a key (a tombstone included) and the revision it was read at, in one
    /// snapshot (for ordering against events).
    pub async fn lookup_key(
        &self,
        key_hash: &str,
    ) -> Result<(Option<LookedUpKey>, i64), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let (revision,): (i64,) =
            sqlx::query_as("SELECT revision FROM revision_counter WHERE singleton")
                .fetch_one(&mut *tx)
                .await?;
        // A tombstone has no delete_at: it is found for as long as it exists.
        let row: Option<(Value, String, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT session, origin, revoked_at FROM keys
             WHERE key_hash = $1 AND (delete_at IS NULL OR delete_at > now())",
        )
        .bind(key_hash)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let found = match row {
            Some((session, origin, revoked_at)) => Some(LookedUpKey {
                session,
                origin: KeyOrigin::parse(&origin)?,
                revoked_at,
            }),
            None => None,
        };
        Ok((found, revision))
    }

    /// A live key (a tombstone is not one).
    pub async fn get_key(&self, key_hash: &str) -> Result<Value, StoreError> {
        let row: Option<(Value,)> = sqlx::query_as(
            "SELECT session FROM keys WHERE key_hash = $1 AND revoked_at IS NULL
             AND (delete_at IS NULL OR delete_at > now())",
        )
        .bind(key_hash)
        .fetch_optional(self.pool())
        .await?;
        row.map(|(v,)| v).ok_or(StoreError::NotFound)
    }

    /// Deletes an operator's key; revokes an edge-made session, keeping it as a tombstone with
    /// no `delete_at` so that it outlives every token issued before it (a late report cannot
    /// bring it back). Either way every edge drops it at once (session event). A tombstone is
    /// not found.
    pub async fn delete_key(&self, key_hash: &str) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let row: Option<(String, Option<DateTime<Utc>>)> =
            sqlx::query_as("SELECT origin, revoked_at FROM keys WHERE key_hash = $1 FOR UPDATE")
                .bind(key_hash)
                .fetch_optional(&mut *tx)
                .await?;
        match row {
            None | Some((_, Some(_))) => return Err(StoreError::NotFound),
            Some((origin, None)) => match KeyOrigin::parse(&origin)? {
                KeyOrigin::Operator | KeyOrigin::OAuth => {
                    sqlx::query("DELETE FROM keys WHERE key_hash = $1")
                        .bind(key_hash)
                        .execute(&mut *tx)
                        .await?;
                }
                KeyOrigin::Jwt => {
                    sqlx::query(
                        "UPDATE keys SET revoked_at = now(), delete_at = NULL, updated_at = now()
                         WHERE key_hash = $1",
                    )
                    .bind(key_hash)
                    .execute(&mut *tx)
                    .await?;
                }
            },
        }
        session_event(&mut tx, key_hash, true).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores sessions edges made (checked by the caller). An operator's key is never
    /// overwritten; a tombstone is replaced only by a session created after the revocation.
    ///
    /// No change-log row is committed: a report adds no information any edge needs. Every edge
    /// derives a JWT identity's session from the verified token at each request, and a lookup
    /// finds the stored one; there is nothing cached to invalidate, and an event per report
    /// would let one edge flood every edge's stream and the log.
    pub async fn report_keys(
        &self,
        node: Uuid,
        reported: &[ReportedKey],
    ) -> Result<ReportOutcome, StoreError> {
        let now = Utc::now();
        // One lock order for every report, so two nodes reporting the same keys never deadlock.
        let mut order: Vec<&ReportedKey> = reported.iter().collect();
        order.sort_by(|a, b| a.key_hash.cmp(&b.key_hash));
        order.dedup_by(|a, b| a.key_hash == b.key_hash);
        let mut outcome = ReportOutcome {
            skipped: reported.len() - order.len(),
            ..ReportOutcome::default()
        };
        let mut tx = self.pool().begin().await?;
        for r in order {
            let written: Option<(String,)> = sqlx::query_as(
                "INSERT INTO keys (key_hash, session, origin, reported_by, delete_at)
                 VALUES ($1, $2, 'jwt', $3, $4)
                 ON CONFLICT (key_hash) DO UPDATE SET
                     -- A session replacing a revoked one inherits the revocation as a floor:
                     -- tokens issued before it stay refused for good, whatever the edge says.
                     session = EXCLUDED.session || CASE
                         WHEN keys.revoked_at IS NOT NULL THEN jsonb_build_object('portcullis_tokens_after',
                             GREATEST(floor(extract(epoch FROM keys.revoked_at))::bigint,
                                      COALESCE((keys.session->>'portcullis_tokens_after')::bigint, 0)))
                         WHEN keys.session ? 'portcullis_tokens_after'
                             THEN jsonb_build_object('portcullis_tokens_after', keys.session->'portcullis_tokens_after')
                         ELSE '{}'::jsonb END,
                     reported_by = EXCLUDED.reported_by, delete_at = EXCLUDED.delete_at,
                     revoked_at = NULL, updated_at = now()
                 WHERE keys.origin = 'jwt' AND (keys.revoked_at IS NULL OR keys.revoked_at < $5)
                 RETURNING key_hash",
            )
            .bind(&r.key_hash)
            .bind(&r.session)
            .bind(node)
            .bind(edge_delete_at(r.expires, now))
            .bind(r.created)
            .fetch_optional(&mut *tx)
            .await?;
            if written.is_some() {
                outcome.accepted += 1;
            } else {
                outcome.skipped += 1;
            }
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// Policy ids among `ids` that exist, with their `org_id` ("" when unset).
    pub async fn policy_orgs(&self, ids: &[String]) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, coalesce(definition->>'org_id', '') FROM policies WHERE id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(self.pool())
        .await?)
    }

    /// Deletes keys whose lifetime has passed, streaming each deletion. Returns how many.
    /// Tombstones have no `delete_at` and are never swept.
    pub async fn sweep_expired_keys(&self) -> Result<usize, StoreError> {
        let mut tx = self.pool().begin().await?;
        let gone: Vec<String> = sqlx::query_scalar(
            "DELETE FROM keys WHERE key_hash IN
               (SELECT key_hash FROM keys WHERE delete_at <= now() AND revoked_at IS NULL ORDER BY delete_at LIMIT 1000 FOR UPDATE SKIP LOCKED)
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

    /// Live keys, edge-made sessions included, tombstones not.
    pub async fn list_key_hashes(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT key_hash FROM keys WHERE revoked_at IS NULL AND (delete_at IS NULL OR delete_at > now()) ORDER BY created_at, key_hash")
                .fetch_all(self.pool())
                .await?,
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn edge_sessions_outlive_their_token_by_a_day() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let day = EDGE_SESSION_GRACE_SECS;
        assert_eq!(edge_delete_at(2_000_000, now).timestamp(), 2_000_000 + day);
        for never in [0, -1] {
            assert_eq!(edge_delete_at(never, now).timestamp(), 1_000_000 + day);
        }
        // The largest `expires` the model accepts (year 9999) still gives a time.
        assert!(edge_delete_at(253_402_300_799, now).timestamp() >= 253_402_300_799);
        assert!(KeyOrigin::parse("nobody").is_err());
        assert_eq!(KeyOrigin::parse("jwt").unwrap().as_str(), "jwt");
    }
}
