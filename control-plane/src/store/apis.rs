//! API definitions: rows in `apis`, written through the shared resource path.

use portcullis_proto::model::ApiDefinition;
use serde_json::Value;

use super::changelog::ChangeKind;
use super::resources::{self, Column, Kind, RowTags};
use super::{Store, StoreError};

/// The `apis` kind. Domain and listen path are columns so that Postgres enforces one API per
/// route (`apis_domain_listen_path_key`); tags are a column so start-state loads read them
/// without the definition.
pub(super) struct Apis;

impl Kind for Apis {
    type Record = ApiDefinition;
    const TABLE: &'static str = "apis";
    const ID_COLUMN: &'static str = "api_id";
    const BODY_COLUMN: &'static str = "definition";
    const CHANGE: ChangeKind = ChangeKind::Api;
    const TAGS: RowTags = RowTags::Column("tags");
    const COLUMNS: &'static [Column<ApiDefinition>] = &[
        Column {
            name: "domain",
            value: |def| &def.spec().domain,
        },
        Column {
            name: "listen_path",
            value: |def| &def.spec().proxy.listen_path,
        },
    ];

    fn id(def: &ApiDefinition) -> &str {
        def.api_id()
    }

    fn body(def: &ApiDefinition) -> Result<Value, StoreError> {
        Ok(def.to_value())
    }

    fn tags(def: &ApiDefinition) -> &[String] {
        &def.spec().tags
    }

    fn duplicate_id(_id: &str) -> StoreError {
        StoreError::Conflict {
            field: "api_id",
            reason: "an API with this id already exists".into(),
        }
    }

    fn unique_violation(constraint: &str) -> Option<StoreError> {
        (constraint == "apis_domain_listen_path_key").then(|| StoreError::Conflict {
            field: "proxy.listen_path",
            reason: "already used by another API on the same domain".into(),
        })
    }
}

impl Store {
    pub async fn list_apis(&self) -> Result<Vec<Value>, StoreError> {
        resources::list::<Apis>(self.pool(), None).await
    }

    pub async fn get_api(&self, api_id: &str) -> Result<Value, StoreError> {
        resources::get::<Apis>(self.pool(), api_id).await
    }

    /// Inserts a new API; an existing id or a used listen path is a conflict. Returns the revision.
    pub async fn create_api(&self, def: &ApiDefinition) -> Result<i64, StoreError> {
        resources::create::<Apis>(self.pool(), def).await
    }

    /// Replaces an existing API. Returns the revision.
    pub async fn update_api(&self, def: &ApiDefinition) -> Result<i64, StoreError> {
        resources::replace::<Apis>(self.pool(), def).await
    }

    pub async fn delete_api(&self, api_id: &str) -> Result<i64, StoreError> {
        resources::delete::<Apis>(self.pool(), api_id).await
    }
}
