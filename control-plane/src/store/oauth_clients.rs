//! OAuth clients (docs/oauth.md): rows in `oauth_clients`, written through the shared resource
//! path so they stream to every edge like the other kinds. A row holds the client as streamed:
//! its secret is sealed before it gets here.

use chrono::{DateTime, Utc};
use portcullis_proto::model::oauth::OAuthClient;
use serde_json::Value;

use super::changelog::ChangeKind;
use super::resources::{self, Column, Kind, RowTags};
use super::{Store, StoreError};

fn record(body: Value) -> Result<OAuthClient, StoreError> {
    serde_json::from_value(body).map_err(|e| StoreError::Corrupt(format!("oauth client: {e}")))
}

/// The `oauth_clients` kind: every group receives every client (keys of any group may be its
/// tokens); `api_id` and `org_id` are columns so SQL can narrow on them.
pub(super) struct OAuthClients;

impl Kind for OAuthClients {
    type Record = OAuthClient;
    const TABLE: &'static str = "oauth_clients";
    const ID_COLUMN: &'static str = "client_id";
    const BODY_COLUMN: &'static str = "body";
    const CHANGE: ChangeKind = ChangeKind::OAuthClient;
    const TAGS: RowTags = RowTags::EveryGroup;
    const COLUMNS: &'static [Column<OAuthClient>] = &[
        Column {
            name: "api_id",
            value: |c| &c.api_id,
        },
        Column {
            name: "org_id",
            value: |c| &c.org_id,
        },
    ];
    const SCOPE_COLUMN: Option<&'static str> = Some("api_id");

    fn id(client: &OAuthClient) -> &str {
        &client.client_id
    }

    fn body(client: &OAuthClient) -> Result<Value, StoreError> {
        serde_json::to_value(client).map_err(|e| StoreError::Corrupt(format!("oauth client: {e}")))
    }

    fn duplicate_id(id: &str) -> StoreError {
        StoreError::Conflict {
            field: "client_id",
            reason: format!("OAuth client {id} already exists"),
        }
    }
}

impl Store {
    /// Clients whose `api_id` column is `api_id` (`None`: every client), ordered by id.
    pub async fn list_oauth_clients(
        &self,
        api_id: Option<&str>,
    ) -> Result<Vec<OAuthClient>, StoreError> {
        resources::list::<OAuthClients>(self.pool(), api_id)
            .await?
            .into_iter()
            .map(record)
            .collect()
    }

    /// `StoreError::NotFound` when there is none.
    pub async fn get_oauth_client(&self, client_id: &str) -> Result<OAuthClient, StoreError> {
        record(resources::get::<OAuthClients>(self.pool(), client_id).await?)
    }

    /// Inserts a new client (secret already sealed); an existing id is a conflict. Returns the
    /// revision.
    pub async fn create_oauth_client(&self, client: &OAuthClient) -> Result<i64, StoreError> {
        resources::create::<OAuthClients>(self.pool(), client).await
    }

    /// Replaces an existing client (`StoreError::NotFound` otherwise).
    pub async fn replace_oauth_client(&self, client: &OAuthClient) -> Result<i64, StoreError> {
        resources::replace::<OAuthClients>(self.pool(), client).await
    }

    /// Deletes the client row only; edges then refuse its tokens ("OAuth client access was
    /// revoked"). The caller also revokes its tokens (`oauth_grants`).
    pub async fn delete_oauth_client(&self, client_id: &str) -> Result<i64, StoreError> {
        resources::delete::<OAuthClients>(self.pool(), client_id).await
    }

    /// The clients of `api_id` as Tyk's list shows them: those bound to it, and those bound to
    /// no API whose policy grants it (`access_rights` keyed by API id). Ordered by id.
    pub async fn list_api_oauth_clients(
        &self,
        api_id: &str,
    ) -> Result<Vec<OAuthClient>, StoreError> {
        let rows: Vec<(Value,)> = sqlx::query_as(
            "SELECT c.body FROM oauth_clients c
             WHERE c.api_id = $1
                OR (c.api_id = '' AND EXISTS (
                    SELECT 1 FROM policies p
                    WHERE p.id = c.body->>'policy_id'
                      AND jsonb_typeof(p.definition->'access_rights') = 'object'
                      AND jsonb_exists(p.definition->'access_rights', $1)))
             ORDER BY c.client_id",
        )
        .bind(api_id)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(|(v,)| record(v)).collect()
    }

    /// One page of a client's live access tokens, (key hash, expiry), and how many there are
    /// in all; the order is `list_client_tokens`'s.
    pub async fn client_tokens_page(
        &self,
        client_id: &str,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<(String, Option<DateTime<Utc>>)>, i64), StoreError> {
        let live = "oauth_client_id = $1 AND origin = 'oauth'
                    AND (delete_at IS NULL OR delete_at > now())";
        let (total,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM keys WHERE {live}"))
            .bind(client_id)
            .fetch_one(self.pool())
            .await?;
        let rows: Vec<(String, Option<DateTime<Utc>>)> = sqlx::query_as(&format!(
            "SELECT key_hash, delete_at FROM keys WHERE {live}
             ORDER BY delete_at, key_hash OFFSET $2 LIMIT $3"
        ))
        .bind(client_id)
        .bind(offset)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok((rows, total))
    }
}
