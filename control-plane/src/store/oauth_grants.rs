//! Authorization codes, refresh tokens and access tokens of the built-in OAuth 2.0 provider
//! (docs/oauth.md). Each is stored by the sha256 of its value only.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{Store, StoreError};

/// Rows each sweep deletes at most, per table.
const SWEEP_BATCH: i64 = 1000;

/// An authorization code to store (`code_hash` = sha256 hex of the code).
#[derive(Debug, Clone)]
pub struct NewCode<'a> {
    pub code_hash: &'a str,
    pub client_id: &'a str,
    pub api_id: &'a str,
    pub redirect_uri: &'a str,
    pub session: &'a Value,
    pub scope: &'a str,
    pub code_challenge: Option<&'a str>,
    pub code_challenge_method: Option<&'a str>,
    pub expires_at: DateTime<Utc>,
}

/// A code that was just redeemed (and is gone).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RedeemedCode {
    pub client_id: String,
    pub api_id: String,
    pub redirect_uri: String,
    pub session: Value,
    pub scope: String,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
}

/// A refresh token to store (`token_hash` = sha256 hex of the token).
#[derive(Debug, Clone)]
pub struct NewRefreshToken<'a> {
    pub token_hash: &'a str,
    pub client_id: &'a str,
    pub api_id: &'a str,
    pub family: Uuid,
    pub access_key_hash: &'a str,
    pub session: &'a Value,
    pub scope: &'a str,
    pub expires_at: DateTime<Utc>,
}

/// The refresh token a rotation consumed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RotatedRefresh {
    pub family: Uuid,
    pub session: Value,
    pub scope: String,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone)]
pub enum Rotation {
    /// It was live and unused: now used; issue the next of its family.
    Rotated(RotatedRefresh),
    /// It had been used already: its family is revoked (tokens, access tokens).
    Reused { revoked_access_tokens: usize },
    /// Unknown, expired, or another client's or API's.
    NotFound,
}

/// Every code and refresh token of a client: nothing can be redeemed for it any more.
async fn delete_codes_and_refresh_tokens(
    conn: &mut sqlx::PgConnection,
    client_id: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM oauth_codes WHERE client_id = $1")
        .bind(client_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM oauth_refresh_tokens WHERE client_id = $1")
        .bind(client_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The row half of [`Store::disable_client_tokens`]: codes and refresh tokens deleted, access
/// tokens marked inactive, their hashes returned for the session events. A transaction that
/// writes resource rows too runs this before it takes any revision (rows first, then the
/// revision counter, as every single write does).
pub(super) async fn disable_client_token_rows(
    tx: &mut Transaction<'_, Postgres>,
    client_id: &str,
) -> Result<Vec<String>, StoreError> {
    delete_codes_and_refresh_tokens(tx, client_id).await?;
    let hashes: Vec<(String,)> = sqlx::query_as(
        "UPDATE keys SET session = jsonb_set(session, '{is_inactive}', 'true'::jsonb),
             updated_at = now()
         WHERE oauth_client_id = $1 AND origin = 'oauth' RETURNING key_hash",
    )
    .bind(client_id)
    .fetch_all(&mut **tx)
    .await?;
    Ok(hashes.into_iter().map(|(h,)| h).collect())
}

impl Store {
    /// Access tokens of a client still alive: (key hash, expiry).
    pub async fn list_client_tokens(
        &self,
        client_id: &str,
    ) -> Result<Vec<(String, Option<DateTime<Utc>>)>, StoreError> {
        let rows: Vec<(String, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT key_hash, delete_at FROM keys
             WHERE oauth_client_id = $1 AND origin = 'oauth'
               AND (delete_at IS NULL OR delete_at > now())
             ORDER BY delete_at, key_hash",
        )
        .bind(client_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// Revokes every access token, refresh token and code of a client (a deleted client, or
    /// `revoke_all`). Each access token is deleted as a key, so every edge drops it. Returns
    /// how many access tokens were revoked.
    pub async fn revoke_client_tokens(&self, client_id: &str) -> Result<usize, StoreError> {
        delete_codes_and_refresh_tokens(&mut *self.pool().acquire().await?, client_id).await?;
        let hashes: Vec<(String,)> = sqlx::query_as(
            "SELECT key_hash FROM keys WHERE oauth_client_id = $1 AND origin = 'oauth'",
        )
        .bind(client_id)
        .fetch_all(self.pool())
        .await?;
        let mut revoked = 0;
        for (hash,) in hashes {
            match self.delete_key(&hash).await {
                Ok(()) => revoked += 1,
                // Deleted meanwhile (expired, revoked one by one): what was asked is done.
                Err(StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(revoked)
    }

    /// A deleted client: its codes and refresh tokens go, and its access tokens are marked
    /// inactive (each with a session event, so every edge drops its cached copy). They stay
    /// until they expire so that the bearer check answers Tyk's "OAuth client access was
    /// revoked" rather than an unknown key, and inactive keeps them refused by every other
    /// method. A client created again under the same id clears them first.
    pub async fn disable_client_tokens(&self, client_id: &str) -> Result<usize, StoreError> {
        let mut tx = self.pool().begin().await?;
        let hashes = disable_client_token_rows(&mut tx, client_id).await?;
        for hash in &hashes {
            super::keys::session_event(&mut tx, hash, false).await?;
        }
        tx.commit().await?;
        Ok(hashes.len())
    }

    /// Stores a new authorization code.
    pub async fn insert_oauth_code(&self, code: &NewCode<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oauth_codes (code_hash, client_id, api_id, redirect_uri, session, scope,
                 code_challenge, code_challenge_method, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(code.code_hash)
        .bind(code.client_id)
        .bind(code.api_id)
        .bind(code.redirect_uri)
        .bind(code.session)
        .bind(code.scope)
        .bind(code.code_challenge)
        .bind(code.code_challenge_method)
        .bind(code.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Redeems a code: deletes it and returns what it was issued for. One statement, so of two
    /// redemptions racing (at two edges of two regions) exactly one gets the row. An expired
    /// code is deleted too and answers `None`, like an unknown one.
    pub async fn redeem_oauth_code(
        &self,
        code_hash: &str,
    ) -> Result<Option<RedeemedCode>, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            code: RedeemedCode,
            live: bool,
        }
        let row: Option<Row> = sqlx::query_as(
            "DELETE FROM oauth_codes WHERE code_hash = $1
             RETURNING client_id, api_id, redirect_uri, session, scope, code_challenge,
                 code_challenge_method, expires_at > now() AS live",
        )
        .bind(code_hash)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.and_then(|r| r.live.then_some(r.code)))
    }

    /// Stores a new refresh token.
    pub async fn insert_refresh_token(&self, t: &NewRefreshToken<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oauth_refresh_tokens (token_hash, client_id, api_id, family,
                 access_key_hash, session, scope, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(t.token_hash)
        .bind(t.client_id)
        .bind(t.api_id)
        .bind(t.family)
        .bind(t.access_key_hash)
        .bind(t.session)
        .bind(t.scope)
        .bind(t.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Presents a refresh token of `client_id` on `api_id`: the first presentation marks it
    /// used (one conditional UPDATE: two racing presentations cannot both rotate it); a later
    /// one is a reuse, and revokes the whole family.
    pub async fn rotate_refresh_token(
        &self,
        token_hash: &str,
        client_id: &str,
        api_id: &str,
    ) -> Result<Rotation, StoreError> {
        let mut tx = self.pool().begin().await?;
        let rotated: Option<RotatedRefresh> = sqlx::query_as(
            "UPDATE oauth_refresh_tokens SET used_at = now()
             WHERE token_hash = $1 AND client_id = $2 AND api_id = $3
               AND used_at IS NULL AND expires_at > now()
             RETURNING family, session, scope",
        )
        .bind(token_hash)
        .bind(client_id)
        .bind(api_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = rotated {
            tx.commit().await?;
            return Ok(Rotation::Rotated(r));
        }
        let used: Option<(Uuid,)> = sqlx::query_as(
            "SELECT family FROM oauth_refresh_tokens
             WHERE token_hash = $1 AND client_id = $2 AND api_id = $3 AND used_at IS NOT NULL",
        )
        .bind(token_hash)
        .bind(client_id)
        .bind(api_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        match used {
            Some((family,)) => Ok(Rotation::Reused {
                revoked_access_tokens: self.revoke_refresh_family(family).await?,
            }),
            None => Ok(Rotation::NotFound),
        }
    }

    /// Revokes a refresh-token family: its refresh tokens and every access token issued with
    /// one of them. Returns how many access tokens were deleted.
    pub async fn revoke_refresh_family(&self, family: Uuid) -> Result<usize, StoreError> {
        let access: Vec<(String,)> = sqlx::query_as(
            "DELETE FROM oauth_refresh_tokens WHERE family = $1 RETURNING access_key_hash",
        )
        .bind(family)
        .fetch_all(self.pool())
        .await?;
        self.delete_oauth_access_tokens(access.into_iter().map(|(h,)| h))
            .await
    }

    /// Deletes access tokens (as keys: every edge drops them). Already gone ones are skipped.
    async fn delete_oauth_access_tokens(
        &self,
        hashes: impl IntoIterator<Item = String>,
    ) -> Result<usize, StoreError> {
        let mut revoked = 0;
        for hash in hashes {
            match self.delete_key(&hash).await {
                Ok(()) => revoked += 1,
                Err(StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(revoked)
    }

    /// Revokes one access token of `client_id` (`false`: no such token of that client).
    pub async fn revoke_oauth_access_token(
        &self,
        key_hash: &str,
        client_id: &str,
    ) -> Result<bool, StoreError> {
        let mine: Option<(String,)> = sqlx::query_as(
            "SELECT key_hash FROM keys
             WHERE key_hash = $1 AND origin = 'oauth' AND oauth_client_id = $2",
        )
        .bind(key_hash)
        .bind(client_id)
        .fetch_optional(self.pool())
        .await?;
        if mine.is_none() {
            return Ok(false);
        }
        Ok(self
            .delete_oauth_access_tokens([key_hash.to_owned()])
            .await?
            > 0)
    }

    /// Revokes a refresh token of `client_id` and, as RFC 7009 2.1 allows, the whole grant
    /// behind it (its family and their access tokens). `false`: no such token of that client.
    pub async fn revoke_oauth_refresh_token(
        &self,
        token_hash: &str,
        client_id: &str,
    ) -> Result<bool, StoreError> {
        let family: Option<(Uuid,)> = sqlx::query_as(
            "SELECT family FROM oauth_refresh_tokens WHERE token_hash = $1 AND client_id = $2",
        )
        .bind(token_hash)
        .bind(client_id)
        .fetch_optional(self.pool())
        .await?;
        match family {
            Some((family,)) => {
                self.revoke_refresh_family(family).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Deletes one refresh token of `api_id` (Tyk's `DELETE /tyk/oauth/refresh/{token}`); the
    /// access tokens of its grant stay, as in Tyk. `false`: there is none.
    pub async fn delete_refresh_token(
        &self,
        token_hash: &str,
        api_id: &str,
    ) -> Result<bool, StoreError> {
        let deleted =
            sqlx::query("DELETE FROM oauth_refresh_tokens WHERE token_hash = $1 AND api_id = $2")
                .bind(token_hash)
                .bind(api_id)
                .execute(self.pool())
                .await?
                .rows_affected();
        Ok(deleted > 0)
    }

    /// Deletes expired codes and refresh tokens (their access tokens go by the keys' own
    /// lifetime). Returns how many rows.
    pub async fn sweep_expired_oauth(&self) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for (table, id) in [
            ("oauth_codes", "code_hash"),
            ("oauth_refresh_tokens", "token_hash"),
        ] {
            deleted += sqlx::query(&format!(
                "DELETE FROM {table} WHERE {id} IN
                   (SELECT {id} FROM {table} WHERE expires_at <= now() LIMIT $1)"
            ))
            .bind(SWEEP_BATCH)
            .execute(self.pool())
            .await?
            .rows_affected();
        }
        Ok(deleted)
    }
}
