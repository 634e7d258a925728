//! Edge cache flushes (`DELETE /tyk/cache/jwks[/{api_id}]`): one change-log row each, which
//! every edge receives as a `CacheFlush` in revision order. Nothing else is stored.

use serde_json::json;

use super::changelog::{ChangeKind, NewChange, commit_change};
use super::{Store, StoreError};

/// The JWKS cache of the edges.
pub const JWKS: &str = "jwks";
/// The target of a flush of every API's entries.
pub const EVERY_API: &str = "*";

/// `resource_id` of a flush of `cache` for `api_id` (`None`: every API).
pub fn flush_id(cache: &str, api_id: Option<&str>) -> String {
    format!("{cache}:{}", api_id.unwrap_or(EVERY_API))
}

/// The cache and the API (`None`: every API) a flush row names; `None` for an id no release
/// writes.
pub fn parse_flush_id(id: &str) -> Option<(&str, Option<&str>)> {
    let (cache, target) = id.split_once(':')?;
    Some((cache, (target != EVERY_API).then_some(target)))
}

impl Store {
    /// Commits a flush of `cache` for `api_id` (`None`: every API). Returns its revision.
    pub async fn flush_cache(&self, cache: &str, api_id: Option<&str>) -> Result<i64, StoreError> {
        let id = flush_id(cache, api_id);
        let body = json!({"cache": cache, "api_id": api_id.unwrap_or_default()});
        let mut tx = self.pool().begin().await?;
        // Every group: an API may be served by any group, and flushing a cache an edge does not
        // hold costs nothing.
        let revision = commit_change(
            &mut tx,
            NewChange {
                kind: ChangeKind::Cache,
                resource_id: &id,
                body: Some(&body),
                tags: Some(&[]),
                prev_tags: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(revision)
    }
}
