//! The node CA row.

use super::{Store, StoreError};

impl Store {
    /// The CA certificate PEM and its sealed private key, if created.
    pub async fn load_node_ca(&self) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT certificate_pem, key_sealed FROM node_ca WHERE singleton")
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Stores a new CA unless another replica already did (the first one wins).
    pub async fn insert_node_ca_if_absent(
        &self,
        certificate_pem: &str,
        key_sealed: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO node_ca (singleton, certificate_pem, key_sealed) VALUES (true, $1, $2)
             ON CONFLICT (singleton) DO NOTHING",
        )
        .bind(certificate_pem)
        .bind(key_sealed)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Replaces the sealed CA key if it is still `old` (a re-seal); false when it changed.
    pub async fn reseal_node_ca(&self, old: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE node_ca SET key_sealed = $2 WHERE singleton AND key_sealed = $1")
                .bind(old)
                .bind(new)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() == 1)
    }
}
