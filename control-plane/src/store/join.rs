//! Redeeming a bootstrap token and registering the node, in one transaction.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{Store, StoreError};

/// Why a bootstrap token was refused. Messages are safe to show the joining node.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenRefusal {
    #[error("bootstrap token is malformed (expected <id>.<secret>)")]
    Malformed,
    #[error("bootstrap token is unknown or its secret is wrong")]
    Unknown,
    #[error("bootstrap token has been revoked")]
    Revoked,
    #[error("bootstrap token has expired")]
    Expired,
    #[error("bootstrap token has no uses left")]
    UsedUp,
}

/// A token that passed every check (not yet consumed).
#[derive(Debug, Clone)]
pub struct ValidToken {
    pub id: String,
    pub group: String,
}

/// What the node registry records at join.
#[derive(Debug)]
pub struct NewNode<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub group: &'a str,
    pub version: &'a str,
    pub token_id: &'a str,
    pub cert_serial: &'a str,
    pub cert_expires_at: DateTime<Utc>,
}

type TokenRow = (
    Vec<u8>,
    String,
    DateTime<Utc>,
    Option<i32>,
    i32,
    Option<DateTime<Utc>>,
);

impl Store {
    /// Checks a presented token without consuming it.
    pub async fn check_bootstrap_token(
        &self,
        presented: &str,
    ) -> Result<Result<ValidToken, TokenRefusal>, StoreError> {
        let Some((id, secret)) = presented.split_once('.') else {
            return Ok(Err(TokenRefusal::Malformed));
        };
        if id.is_empty() || secret.is_empty() {
            return Ok(Err(TokenRefusal::Malformed));
        }
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT secret_hash, node_group, expires_at, max_uses, uses, revoked_at FROM bootstrap_tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        let Some((hash, group, expires_at, max_uses, uses, revoked_at)) = row else {
            return Ok(Err(TokenRefusal::Unknown));
        };
        let presented_hash = Sha256::digest(secret.as_bytes());
        if !bool::from(presented_hash.as_slice().ct_eq(&hash)) {
            return Ok(Err(TokenRefusal::Unknown));
        }
        if revoked_at.is_some() {
            return Ok(Err(TokenRefusal::Revoked));
        }
        if expires_at <= Utc::now() {
            return Ok(Err(TokenRefusal::Expired));
        }
        if max_uses.is_some_and(|m| uses >= m) {
            return Ok(Err(TokenRefusal::UsedUp));
        }
        Ok(Ok(ValidToken {
            id: id.to_owned(),
            group,
        }))
    }

    /// Consumes one use of the token and inserts the node, atomically: a token with one use
    /// left admits exactly one of two racing joins.
    pub async fn register_node(
        &self,
        node: NewNode<'_>,
    ) -> Result<Result<(), TokenRefusal>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let consumed = sqlx::query(
            "UPDATE bootstrap_tokens SET uses = uses + 1
             WHERE id = $1 AND revoked_at IS NULL AND expires_at > now() AND (max_uses IS NULL OR uses < max_uses)",
        )
        .bind(node.token_id)
        .execute(&mut *tx)
        .await?;
        if consumed.rows_affected() != 1 {
            return Ok(Err(TokenRefusal::UsedUp));
        }
        sqlx::query(
            "INSERT INTO nodes (id, name, node_group, version, bootstrap_token_id, cert_serial, cert_expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(node.id)
        .bind(node.name)
        .bind(node.group)
        .bind(node.version)
        .bind(node.token_id)
        .bind(node.cert_serial)
        .bind(node.cert_expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }
}
