//! The certificate store: rows in `certificates`, written through the shared resource path. Rows
//! hold the record as streamed, so a private key arrives here already sealed (docs/security.md).

use portcullis_proto::model::certificate::CertificateRecord;
use serde_json::Value;

use super::changelog::ChangeKind;
use super::resources::{self, Column, Kind, RowTags};
use super::{Store, StoreError};

fn record(body: Value) -> Result<CertificateRecord, StoreError> {
    serde_json::from_value(body)
        .map_err(|e| StoreError::Corrupt(format!("certificate record: {e}")))
}

/// The `certificates` kind. Its tags are the record's (groups that hold it without an API
/// referencing it); `org_id` is a column so listing one organisation's needs no body.
pub(super) struct Certificates;

impl Kind for Certificates {
    type Record = CertificateRecord;
    const TABLE: &'static str = "certificates";
    const ID_COLUMN: &'static str = "id";
    const BODY_COLUMN: &'static str = "body";
    const CHANGE: ChangeKind = ChangeKind::Certificate;
    const TAGS: RowTags = RowTags::Body(|body| Ok(record(body)?.tags));
    const COLUMNS: &'static [Column<CertificateRecord>] = &[Column {
        name: "org_id",
        value: |cert| &cert.org_id,
    }];
    const SCOPE_COLUMN: Option<&'static str> = Some("org_id");
    // A certificate is immutable (its id is its fingerprint): the table has no updated_at.
    const UPDATED_AT_COLUMN: Option<&'static str> = None;

    fn id(cert: &CertificateRecord) -> &str {
        &cert.id
    }

    fn body(cert: &CertificateRecord) -> Result<Value, StoreError> {
        serde_json::to_value(cert)
            .map_err(|e| StoreError::Corrupt(format!("certificate record: {e}")))
    }

    fn tags(cert: &CertificateRecord) -> &[String] {
        &cert.tags
    }

    fn duplicate_id(id: &str) -> StoreError {
        // Tyk's wording: the certificate API answers it as is.
        StoreError::Conflict {
            field: "id",
            reason: format!("Certificate with {id} id already exists"),
        }
    }
}

impl Store {
    /// Every certificate (of `org_id` when given), ordered by id.
    pub async fn list_certificates(
        &self,
        org_id: Option<&str>,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        resources::list::<Certificates>(self.pool(), org_id)
            .await?
            .into_iter()
            .map(record)
            .collect()
    }

    pub async fn get_certificate(&self, id: &str) -> Result<CertificateRecord, StoreError> {
        record(resources::get::<Certificates>(self.pool(), id).await?)
    }

    /// Inserts a new certificate; an existing id is a conflict on `id`. Returns the revision.
    pub async fn create_certificate(&self, cert: &CertificateRecord) -> Result<i64, StoreError> {
        resources::create::<Certificates>(self.pool(), cert).await
    }

    pub async fn delete_certificate(&self, id: &str) -> Result<i64, StoreError> {
        resources::delete::<Certificates>(self.pool(), id).await
    }
}
