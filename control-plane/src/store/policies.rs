//! Policies: rows in `policies`, written through the shared resource path. Policies reach every
//! group (an empty tag list), because keys of any region may reference them.

use portcullis_proto::model::Policy;
use serde_json::Value;

use super::changelog::ChangeKind;
use super::resources::{self, Kind, RowTags};
use super::{Store, StoreError};

/// The `policies` kind.
pub(super) struct Policies;

impl Kind for Policies {
    type Record = Policy;
    const TABLE: &'static str = "policies";
    const ID_COLUMN: &'static str = "id";
    const BODY_COLUMN: &'static str = "definition";
    const CHANGE: ChangeKind = ChangeKind::Policy;
    const TAGS: RowTags = RowTags::EveryGroup;

    fn id(policy: &Policy) -> &str {
        policy.id()
    }

    fn body(policy: &Policy) -> Result<Value, StoreError> {
        Ok(policy.to_value())
    }

    fn duplicate_id(_id: &str) -> StoreError {
        StoreError::Conflict {
            field: "id",
            reason: "a policy with this id already exists".into(),
        }
    }
}

impl Store {
    pub async fn list_policies(&self) -> Result<Vec<Value>, StoreError> {
        resources::list::<Policies>(self.pool(), None).await
    }

    pub async fn get_policy(&self, id: &str) -> Result<Value, StoreError> {
        resources::get::<Policies>(self.pool(), id).await
    }

    /// Inserts (`create`) or replaces an existing policy. Returns the revision.
    pub async fn write_policy(&self, policy: &Policy, create: bool) -> Result<i64, StoreError> {
        if create {
            resources::create::<Policies>(self.pool(), policy).await
        } else {
            resources::replace::<Policies>(self.pool(), policy).await
        }
    }

    pub async fn delete_policy(&self, id: &str) -> Result<i64, StoreError> {
        resources::delete::<Policies>(self.pool(), id).await
    }
}
