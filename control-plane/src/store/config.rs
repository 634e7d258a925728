//! One transaction over the configuration kinds, for `config apply` (docs/config.md): the
//! current rows are read locked, every change goes through the shared resource path, and
//! nothing is visible (to edges or to readers) until all of it commits.

use portcullis_proto::model::certificate::CertificateMeta;
use portcullis_proto::model::{ApiDefinition, Policy};
use serde_json::Value;

use super::apis::Apis;
use super::certificates::Certificates;
use super::policies::Policies;
use super::resources::{self, Tx};
use super::{Store, StoreError};

/// Serialises applies: two folders applied at once would each plan against rows the other is
/// about to change. Plain API writes are ordered by the row locks instead.
const APPLY_LOCK: i64 = 0x706f_7274_6366_6731; // "portcfg1"

/// An open apply. Dropping it without [`ConfigTx::commit`] rolls everything back (a dry run, or
/// the first failed change).
pub struct ConfigTx<'c> {
    tx: Tx<'c>,
}

impl Store {
    pub async fn begin_config(&self) -> Result<ConfigTx<'static>, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(APPLY_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(ConfigTx { tx })
    }
}

impl ConfigTx<'_> {
    /// Every stored API definition, locked until the apply ends.
    pub async fn apis(&mut self) -> Result<Vec<Value>, StoreError> {
        resources::list_locked::<Apis>(&mut self.tx).await
    }

    pub async fn policies(&mut self) -> Result<Vec<Value>, StoreError> {
        resources::list_locked::<Policies>(&mut self.tx).await
    }

    /// What the certificate store holds (metadata only: no key leaves the table here).
    pub async fn certificates(&mut self) -> Result<Vec<CertificateMeta>, StoreError> {
        resources::list_locked::<Certificates>(&mut self.tx)
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

    pub async fn put_api(&mut self, def: &ApiDefinition, create: bool) -> Result<i64, StoreError> {
        if create {
            resources::create_in::<Apis>(&mut self.tx, def).await
        } else {
            resources::replace_in::<Apis>(&mut self.tx, def).await
        }
    }

    pub async fn delete_api(&mut self, id: &str) -> Result<i64, StoreError> {
        resources::delete_in::<Apis>(&mut self.tx, id).await
    }

    pub async fn put_policy(&mut self, policy: &Policy, create: bool) -> Result<i64, StoreError> {
        if create {
            resources::create_in::<Policies>(&mut self.tx, policy).await
        } else {
            resources::replace_in::<Policies>(&mut self.tx, policy).await
        }
    }

    pub async fn delete_policy(&mut self, id: &str) -> Result<i64, StoreError> {
        resources::delete_in::<Policies>(&mut self.tx, id).await
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}
