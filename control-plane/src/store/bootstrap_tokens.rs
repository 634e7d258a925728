//! Bootstrap tokens (kubeadm style `<id>.<secret>`): created, listed and revoked by operators.
//! Only sha256(secret) is stored; the token is shown once.

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Store, StoreError};

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random_part(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// What `create` returns: the only time the full token exists outside the caller.
#[derive(Debug)]
pub struct CreatedToken {
    pub id: String,
    pub token: String,
    pub group: String,
    pub expires_at: DateTime<Utc>,
}

/// A token as listed (no secret).
#[derive(Debug, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub group: String,
    pub description: String,
    pub expires_at: DateTime<Utc>,
    pub max_uses: Option<i32>,
    pub uses: i32,
    pub revoked: bool,
    pub created_at: DateTime<Utc>,
}

type TokenRow = (
    String,
    String,
    String,
    DateTime<Utc>,
    Option<i32>,
    i32,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
);

impl Store {
    pub async fn create_bootstrap_token(
        &self,
        group: &str,
        lifetime: chrono::Duration,
        max_uses: Option<i32>,
        description: &str,
    ) -> Result<CreatedToken, StoreError> {
        let id = random_part(6);
        let secret = random_part(16);
        let expires_at = Utc::now() + lifetime;
        sqlx::query(
            "INSERT INTO bootstrap_tokens (id, secret_hash, node_group, description, expires_at, max_uses)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(Sha256::digest(secret.as_bytes()).as_slice())
        .bind(group)
        .bind(description)
        .bind(expires_at)
        .bind(max_uses)
        .execute(self.pool())
        .await?;
        Ok(CreatedToken {
            token: format!("{id}.{secret}"),
            id,
            group: group.to_owned(),
            expires_at,
        })
    }

    pub async fn list_bootstrap_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows: Vec<TokenRow> = sqlx::query_as(
            "SELECT id, node_group, description, expires_at, max_uses, uses, revoked_at, created_at
             FROM bootstrap_tokens ORDER BY created_at, id",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, group, description, expires_at, max_uses, uses, revoked_at, created_at)| {
                    TokenInfo {
                        id,
                        group,
                        description,
                        expires_at,
                        max_uses,
                        uses,
                        revoked: revoked_at.is_some(),
                        created_at,
                    }
                },
            )
            .collect())
    }

    /// Revokes a token; nodes that already joined keep their identity.
    pub async fn revoke_bootstrap_token(&self, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE bootstrap_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1",
        )
        .bind(id)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }
}
