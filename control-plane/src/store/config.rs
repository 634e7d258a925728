//! One transaction over the configuration kinds, for `config dump`, `diff` and `apply`
//! (docs/config.md). An apply reads the current rows locked, writes every row through the
//! shared resource path and takes its revisions last, so nothing is visible (to edges or to
//! readers) until all of it commits; a read (dump, diff, dry run) takes no lock at all and sees
//! one snapshot.

use portcullis_proto::model::certificate::CertificateMeta;
use portcullis_proto::model::oauth::OAuthClient;
use portcullis_proto::model::{ApiDefinition, Policy};
use serde_json::Value;

use super::apis::Apis;
use super::certificates::Certificates;
use super::oauth_clients::OAuthClients;
use super::oauth_grants::disable_client_token_rows;
use super::policies::Policies;
use super::resources::{self, Pending, Tx};
use super::{Store, StoreError};

/// Serialises applies: two folders applied at once would each plan against rows the other is
/// about to change. Plain API writes are ordered by the row locks instead.
const APPLY_LOCK: i64 = 0x706f_7274_6366_6731; // "portcfg1"

/// What a configuration transaction is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigMode {
    /// Dump, diff or dry run: a read-only snapshot, so it never waits on a writer or holds one
    /// up.
    Read,
    /// An apply: serialised with other applies, rows locked from the plan to the commit.
    Apply,
}

/// An open configuration transaction. Dropping it without [`ConfigTx::commit`] rolls
/// everything back (the first failed change).
pub struct ConfigTx<'c> {
    tx: Tx<'c>,
    lock: bool,
    /// Rows written, their change-log entries taken at commit.
    pending: Vec<Pending>,
    /// OAuth clients deleted or created: their tokens (a deleted client's, or leftovers of an
    /// earlier client of the same id) are disabled at commit.
    client_tokens: Vec<String>,
}

impl Store {
    pub async fn begin_config(&self, mode: ConfigMode) -> Result<ConfigTx<'static>, StoreError> {
        let mut tx = self.pool().begin().await?;
        match mode {
            ConfigMode::Read => {
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await?;
            }
            ConfigMode::Apply => {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(APPLY_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        Ok(ConfigTx {
            tx,
            lock: mode == ConfigMode::Apply,
            pending: Vec::new(),
            client_tokens: Vec::new(),
        })
    }
}

impl ConfigTx<'_> {
    /// Every stored API definition (locked until the end of an apply).
    pub async fn apis(&mut self) -> Result<Vec<Value>, StoreError> {
        resources::list_in::<Apis>(&mut self.tx, self.lock).await
    }

    pub async fn policies(&mut self) -> Result<Vec<Value>, StoreError> {
        resources::list_in::<Policies>(&mut self.tx, self.lock).await
    }

    /// What the certificate store holds (metadata only: no key leaves the table here).
    pub async fn certificates(&mut self) -> Result<Vec<CertificateMeta>, StoreError> {
        resources::list_in::<Certificates>(&mut self.tx, self.lock)
            .await?
            .into_iter()
            .map(|body| {
                let record: portcullis_proto::model::certificate::CertificateRecord =
                    serde_json::from_value(body)
                        .map_err(|e| StoreError::Corrupt(format!("certificate record: {e}")))?;
                Ok(record.meta)
            })
            .collect()
    }

    pub async fn put_api(&mut self, def: &ApiDefinition, create: bool) -> Result<(), StoreError> {
        let row = if create {
            resources::create_row::<Apis>(&mut self.tx, def).await?
        } else {
            resources::replace_row::<Apis>(&mut self.tx, def).await?
        };
        self.pending.push(row);
        Ok(())
    }

    pub async fn delete_api(&mut self, id: &str) -> Result<(), StoreError> {
        let row = resources::delete_row::<Apis>(&mut self.tx, id).await?;
        self.pending.push(row);
        Ok(())
    }

    pub async fn put_policy(&mut self, policy: &Policy, create: bool) -> Result<(), StoreError> {
        let row = if create {
            resources::create_row::<Policies>(&mut self.tx, policy).await?
        } else {
            resources::replace_row::<Policies>(&mut self.tx, policy).await?
        };
        self.pending.push(row);
        Ok(())
    }

    pub async fn delete_policy(&mut self, id: &str) -> Result<(), StoreError> {
        let row = resources::delete_row::<Policies>(&mut self.tx, id).await?;
        self.pending.push(row);
        Ok(())
    }

    /// Every OAuth client as stored (secrets sealed).
    pub async fn oauth_clients(&mut self) -> Result<Vec<Value>, StoreError> {
        resources::list_in::<OAuthClients>(&mut self.tx, self.lock).await
    }

    /// Writes a client whose secret is already sealed. A new one also disables any token left
    /// under its id, so a reused id never revives an earlier client's tokens.
    pub async fn put_oauth_client(
        &mut self,
        client: &OAuthClient,
        create: bool,
    ) -> Result<(), StoreError> {
        let row = if create {
            self.client_tokens.push(client.client_id.clone());
            resources::create_row::<OAuthClients>(&mut self.tx, client).await?
        } else {
            resources::replace_row::<OAuthClients>(&mut self.tx, client).await?
        };
        self.pending.push(row);
        Ok(())
    }

    /// Deletes the client; its tokens are refused from the commit on ("OAuth client access was
    /// revoked"), as after `DELETE /tyk/oauth/clients/...`.
    pub async fn delete_oauth_client(&mut self, id: &str) -> Result<(), StoreError> {
        let row = resources::delete_row::<OAuthClients>(&mut self.tx, id).await?;
        self.pending.push(row);
        self.client_tokens.push(id.to_owned());
        Ok(())
    }

    /// Disables the tokens of deleted and new OAuth clients (their rows: still before any
    /// revision), takes one revision per written row in write order, then one session event
    /// per disabled token, and commits.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        let mut disabled = Vec::new();
        for client_id in &self.client_tokens {
            disabled.extend(disable_client_token_rows(&mut self.tx, client_id).await?);
        }
        for row in &self.pending {
            row.log(&mut self.tx).await?;
        }
        for hash in &disabled {
            super::keys::session_event(&mut self.tx, hash, false).await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}
