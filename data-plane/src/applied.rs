//! The configuration this edge holds: resources by (kind, id) with their digests and parsed
//! routes. Snapshots and changes are applied all or nothing; the caller builds the routing
//! table from the result and swaps it in.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use portcullis_proto::config_hash::{config_hash, resource_digest};
use portcullis_proto::model::{ApiDefinition, Policy, PolicySpec};
use portcullis_proto::sync::{Changes, Resource, ResourceKind, Snapshot};

use crate::router::{Route, RoutingTable};

/// Why a message could not be applied; the text goes back to the CP in the NACK. The prefixes
/// "config hash mismatch" and "base revision mismatch" ask the CP for a snapshot.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error("config hash mismatch: control plane says {expected}, edge computed {computed}")]
    HashMismatch { expected: String, computed: String },
    #[error("base revision mismatch: edge holds {held}, changes start at {from}")]
    BaseMismatch { held: i64, from: i64 },
    #[error("invalid resource {id}: {reason}")]
    Invalid { id: String, reason: String },
    #[error("snapshot chunks out of order: expected chunk {expected} of revision {revision}")]
    Chunks { expected: u32, revision: u64 },
}

impl ApplyError {
    pub fn resource_ids(&self) -> Vec<String> {
        match self {
            Self::Invalid { id, .. } => vec![id.clone()],
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct Held {
    body: Bytes,
    digest: [u8; 32],
    route: Option<Arc<Route>>,
    policy: Option<Arc<PolicySpec>>,
}

#[derive(Debug, Clone, Default)]
pub struct AppliedConfig {
    pub revision: i64,
    pub hash: String,
    resources: BTreeMap<(i32, String), Held>,
}

fn held(r: &Resource) -> Result<Held, ApplyError> {
    let invalid = |reason: String| ApplyError::Invalid {
        id: r.id.clone(),
        reason,
    };
    let json = || -> Result<serde_json::Value, ApplyError> {
        serde_json::from_slice(&r.body).map_err(|e| invalid(format!("malformed JSON: {e}")))
    };
    let (mut route, mut policy) = (None, None);
    if r.kind == ResourceKind::Api as i32 {
        let def = ApiDefinition::from_value(json()?).map_err(|e| invalid(e.to_string()))?;
        route = Some(Arc::new(
            Route::from_definition(&def).map_err(|e| invalid(e.to_string()))?,
        ));
    } else if r.kind == ResourceKind::Policy as i32 {
        let p = Policy::from_value(json()?).map_err(|e| invalid(e.to_string()))?;
        policy = Some(Arc::new(p.spec().clone()));
    }
    Ok(Held {
        body: r.body.clone(),
        digest: resource_digest(r.kind, &r.id, &r.body),
        route,
        policy,
    })
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl AppliedConfig {
    /// Builds a configuration from every chunk of one snapshot.
    pub fn from_snapshot(chunks: &[Snapshot]) -> Result<Self, ApplyError> {
        let Some(first) = chunks.first() else {
            return Err(ApplyError::Chunks {
                expected: 0,
                revision: 0,
            });
        };
        let mut resources = BTreeMap::new();
        for (i, chunk) in chunks.iter().enumerate() {
            if chunk.chunk as usize != i
                || chunk.revision != first.revision
                || chunk.chunks != first.chunks
            {
                return Err(ApplyError::Chunks {
                    expected: i as u32,
                    revision: first.revision,
                });
            }
            for r in &chunk.resources {
                resources.insert((r.kind, r.id.clone()), held(r)?);
            }
        }
        let config = Self {
            revision: to_i64(first.revision),
            hash: first.config_hash.clone(),
            resources,
        };
        config.check_hash(&first.config_hash)?;
        Ok(config)
    }

    /// Applies a delta in place, or leaves `self` untouched and says why not.
    pub fn apply_changes(&mut self, c: &Changes) -> Result<(), ApplyError> {
        if to_i64(c.from_revision) != self.revision {
            return Err(ApplyError::BaseMismatch {
                held: self.revision,
                from: to_i64(c.from_revision),
            });
        }
        // Applied in place with an undo log: a delta touches a few resources, and copying a
        // configuration of thousands of APIs for each one would cost more than the delta.
        let mut undo: Vec<((i32, String), Option<Held>)> = Vec::new();
        let result = self.apply_in_place(c, &mut undo);
        if let Err(e) = result {
            for (key, old) in undo.into_iter().rev() {
                match old {
                    Some(h) => self.resources.insert(key, h),
                    None => self.resources.remove(&key),
                };
            }
            return Err(e);
        }
        self.revision = to_i64(c.to_revision);
        self.hash = c.config_hash.clone();
        Ok(())
    }

    fn apply_in_place(
        &mut self,
        c: &Changes,
        undo: &mut Vec<((i32, String), Option<Held>)>,
    ) -> Result<(), ApplyError> {
        for r in &c.upserts {
            let key = (r.kind, r.id.clone());
            let old = self.resources.insert(key.clone(), held(r)?);
            undo.push((key, old));
        }
        for d in &c.deletes {
            let key = (d.kind, d.id.clone());
            if let Some(old) = self.resources.remove(&key) {
                undo.push((key, Some(old)));
            }
        }
        self.check_hash(&c.config_hash)
    }

    /// A bookmark moves the revision when the content is what the CP says it is.
    pub fn apply_bookmark(&mut self, revision: u64, hash: &str) -> Result<(), ApplyError> {
        self.check_hash(hash)?;
        self.revision = to_i64(revision);
        Ok(())
    }

    fn check_hash(&self, expected: &str) -> Result<(), ApplyError> {
        let computed = self.computed_hash();
        if computed != expected {
            return Err(ApplyError::HashMismatch {
                expected: expected.to_owned(),
                computed,
            });
        }
        Ok(())
    }

    pub fn computed_hash(&self) -> String {
        config_hash(self.resources.values().map(|h| &h.digest))
    }

    pub fn routing_table(&self) -> RoutingTable {
        let policies = self
            .resources
            .values()
            .filter_map(|h| h.policy.as_ref())
            .map(|p| (p.id.clone(), p.clone()))
            .collect();
        RoutingTable::new(self.resources.values().filter_map(|h| h.route.as_ref()))
            .with_policies(policies)
    }

    pub fn len(&self) -> usize {
        self.resources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// The configuration as one snapshot message, for the state dir and backups.
    pub fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            revision: u64::try_from(self.revision).unwrap_or(0),
            config_hash: self.hash.clone(),
            chunk: 0,
            chunks: 1,
            resources: self
                .resources
                .iter()
                .map(|((kind, id), h)| Resource {
                    kind: *kind,
                    id: id.clone(),
                    body: h.body.clone(),
                })
                .collect(),
            reason: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use portcullis_proto::sync::ResourceRef;

    use super::*;

    fn api(id: &str, path: &str) -> Resource {
        let body = format!(
            r#"{{"api_id":"{id}","proxy":{{"listen_path":"{path}","target_url":"http://127.0.0.1:9/"}}}}"#
        );
        Resource {
            kind: ResourceKind::Api as i32,
            id: id.into(),
            body: Bytes::from(body),
        }
    }

    fn hash_of(resources: &[Resource]) -> String {
        let mut digests: Vec<_> = resources
            .iter()
            .map(|r| {
                (
                    (r.kind, r.id.clone()),
                    resource_digest(r.kind, &r.id, &r.body),
                )
            })
            .collect();
        digests.sort();
        config_hash(digests.iter().map(|(_, d)| d))
    }

    #[test]
    fn snapshot_then_changes_then_a_bad_change_leaves_the_config_untouched() {
        let a = api("a", "/a/");
        let snap = Snapshot {
            revision: 3,
            config_hash: hash_of(std::slice::from_ref(&a)),
            chunk: 0,
            chunks: 1,
            resources: vec![a.clone()],
            reason: String::new(),
        };
        let mut c = AppliedConfig::from_snapshot(&[snap]).unwrap();
        assert_eq!(c.routing_table().len(), 1);

        let b = api("b", "/b/");
        let ok = Changes {
            from_revision: 3,
            to_revision: 5,
            config_hash: hash_of(std::slice::from_ref(&b)),
            upserts: vec![b],
            deletes: vec![ResourceRef {
                kind: 1,
                id: "a".into(),
            }],
            session_events: vec![],
        };
        c.apply_changes(&ok).unwrap();
        assert_eq!(c.revision, 5);
        assert!(c.routing_table().lookup(None, "/b/x").is_some());
        assert!(c.routing_table().lookup(None, "/a/x").is_none());

        let broken = Resource {
            kind: 1,
            id: "c".into(),
            body: Bytes::from_static(b"{\"api_id\":\"c\"}"),
        };
        let bad = Changes {
            from_revision: 5,
            to_revision: 6,
            config_hash: "sha256:x".into(),
            upserts: vec![broken],
            deletes: vec![],
            session_events: vec![],
        };
        let err = c.apply_changes(&bad).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid resource c: proxy.listen_path"),
            "{err}"
        );
        assert_eq!(c.revision, 5);

        // Valid resources but a hash that does not match: every step is undone.
        let before = c.computed_hash();
        let drift = Changes {
            from_revision: 5,
            to_revision: 6,
            config_hash: "sha256:x".into(),
            upserts: vec![api("d", "/d/"), api("b", "/moved/")],
            deletes: vec![ResourceRef {
                kind: 1,
                id: "b".into(),
            }],
            session_events: vec![],
        };
        assert!(
            c.apply_changes(&drift)
                .unwrap_err()
                .to_string()
                .starts_with("config hash mismatch")
        );
        assert_eq!((c.revision, c.computed_hash()), (5, before));
        assert!(c.routing_table().lookup(None, "/b/x").is_some());
        assert!(c.routing_table().lookup(None, "/d/x").is_none());

        let stale = Changes {
            from_revision: 4,
            ..ok
        };
        assert!(
            c.apply_changes(&stale)
                .unwrap_err()
                .to_string()
                .starts_with("base revision mismatch")
        );
        assert!(
            c.apply_bookmark(9, "sha256:wrong")
                .unwrap_err()
                .to_string()
                .starts_with("config hash mismatch")
        );
    }
}
