//! This replica's view of the configuration at the head revision it has read, plus the recent
//! change log, from which it answers "what does group G need to go from revision R to head?"
//! with a delta, a bookmark or a (cached, chunked) snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use portcullis_proto::config_hash::{canonical_json, config_hash, resource_digest};
use portcullis_proto::model::ApiDefinition;
use portcullis_proto::sync::{
    Bookmark, CacheFlush, Changes, Resource, ResourceKind, ResourceRef, SessionEvent, Snapshot,
};

use crate::store::cache::parse_flush_id;
use crate::store::changelog::{Change, ChangeKind};

/// Changes kept in memory for deltas; a node further behind gets a snapshot.
pub const LOG_CAPACITY: usize = 10_000;
/// Largest snapshot chunk (sum of resource sizes). Each stream's encode buffer keeps the
/// capacity of the largest message it sent for as long as the stream lives, so chunks are small:
/// with 1 MiB chunks, 500 streams that had received a 2.6 MiB snapshot held 1 MiB each.
const CHUNK_BYTES: usize = 64 * 1024;

pub(crate) type ResourceKey = (i32, String);

#[derive(Clone, Debug)]
struct Entry {
    body: Bytes,
    digest: [u8; 32],
    /// Node-segmentation tags; empty = every group. For a certificate: the groups it is
    /// tagged for (`*` = all); empty = only the groups whose APIs reference it.
    tags: Vec<String>,
    /// For an API: the certificate ids it references (empty for every other kind).
    cert_refs: Arc<[String]>,
}

#[derive(Clone, Debug)]
struct LogEntry {
    revision: i64,
    key: ResourceKey,
    body: Option<Bytes>,
    tags: Option<Vec<String>>,
    prev_tags: Option<Vec<String>>,
    cert_refs: Arc<[String]>,
    committed_at: DateTime<Utc>,
}

/// A resource as loaded at start-up.
pub use crate::store::changelog::StoredResource as LoadedResource;

/// The configuration one group sees at one revision, shared by all of the group's streams.
#[derive(Debug)]
pub struct GroupView {
    pub revision: i64,
    pub hash: String,
    group: String,
    chunks: OnceLock<Arc<Vec<Snapshot>>>,
}

/// What a node needs next.
#[derive(Debug)]
pub enum Plan {
    Snapshot {
        reason: &'static str,
        view: Arc<GroupView>,
    },
    Changes(Changes),
    Bookmark(Bookmark),
}

/// The replica's configuration state. Guarded by a mutex held only for in-memory work.
#[derive(Debug, Default)]
pub struct ConfigState {
    head: i64,
    resources: BTreeMap<ResourceKey, Entry>,
    log: VecDeque<LogEntry>,
    /// The log holds every revision in `(log_floor, head]`.
    log_floor: i64,
    views: HashMap<String, Arc<GroupView>>,
    /// Nodes revoked as of `head`: a stream checks this under the same lock it plans with, so
    /// nothing committed after a revocation is ever planned for the revoked node.
    revoked: HashSet<String>,
}

/// Log entries about keys carry this code: they are events, not resources of the configuration.
const SESSION_CODE: i32 = -1;
/// Log entries about node revocations: read by every replica in order, sent to no node.
const NODE_CODE: i32 = -2;
/// Log entries about edge caches to drop: events like key events, sent to every group.
const CACHE_CODE: i32 = -3;

/// Whether log entries with this code are events rather than resources of the configuration:
/// they never reach a snapshot or the hash.
fn is_event(code: i32) -> bool {
    matches!(code, SESSION_CODE | NODE_CODE | CACHE_CODE)
}

const API_CODE: i32 = ResourceKind::Api as i32;
const CERT_CODE: i32 = ResourceKind::Certificate as i32;

/// The certificate ids an API body references, read the way an edge reads the definition
/// (`ApiDefinition::certificate_refs`), so both planes agree on what a group holds. A body that
/// does not parse references nothing (an edge cannot read its references either).
fn cert_refs(code: i32, body: Option<&serde_json::Value>) -> Arc<[String]> {
    match body {
        Some(b) if code == API_CODE => ApiDefinition::from_value(b.clone())
            .map(|d| {
                let mut refs: Vec<String> = d.certificate_refs().map(str::to_owned).collect();
                refs.sort();
                refs.dedup();
                refs
            })
            .unwrap_or_default()
            .into(),
        _ => Arc::from(Vec::new()),
    }
}

/// Whether a certificate's own tags give it to `group` (see `CertificateRecord::tagged_for`).
fn tagged_for(tags: Option<&[String]>, group: &str) -> bool {
    tags.is_some_and(|t| t.iter().any(|g| g == "*" || g == group))
}

fn kind_code(kind: ChangeKind) -> i32 {
    match kind {
        ChangeKind::Api => ResourceKind::Api as i32,
        ChangeKind::Policy => ResourceKind::Policy as i32,
        ChangeKind::Session => SESSION_CODE,
        ChangeKind::Node => NODE_CODE,
        ChangeKind::Certificate => ResourceKind::Certificate as i32,
        ChangeKind::OAuthClient => ResourceKind::OauthClient as i32,
        ChangeKind::Cache => CACHE_CODE,
    }
}

fn visible(tags: Option<&[String]>, group: &str) -> bool {
    tags.is_some_and(|t| t.is_empty() || t.iter().any(|g| g == group))
}

impl ConfigState {
    /// State at `head` with `resources`, and the retained `log` (oldest first) ending at `head`.
    pub fn new(head: i64, resources: Vec<LoadedResource>, log: Vec<Change>) -> Self {
        let mut state = Self {
            head,
            log_floor: head,
            ..Self::default()
        };
        for r in resources
            .into_iter()
            .filter(|r| !is_event(kind_code(r.kind)))
        {
            let body = Bytes::from(canonical_json(&r.body));
            let code = kind_code(r.kind);
            let digest = resource_digest(code, &r.id, &body);
            let cert_refs = cert_refs(code, Some(&r.body));
            state.resources.insert(
                (code, r.id),
                Entry {
                    body,
                    digest,
                    tags: r.tags,
                    cert_refs,
                },
            );
        }
        let log: Vec<_> = log.into_iter().filter(|c| c.revision <= head).collect();
        if let Some(first) = log.first() {
            state.log_floor = first.revision - 1;
        }
        // Only a dense run ending at head is usable for deltas.
        let dense = log.windows(2).all(|w| w[1].revision == w[0].revision + 1)
            && log.last().is_none_or(|l| l.revision == head);
        for c in log.iter().filter(|c| c.kind == ChangeKind::Node) {
            state.revoked.insert(c.resource_id.clone());
        }
        if dense {
            state.log = log.into_iter().map(log_entry).collect();
        } else {
            state.log_floor = head;
        }
        state.trim_log();
        state
    }

    pub fn head(&self) -> i64 {
        self.head
    }

    /// Adds nodes the registry had revoked as of `head` (read with the start state).
    pub fn with_revoked(mut self, ids: impl IntoIterator<Item = String>) -> Self {
        self.revoked.extend(ids);
        self
    }

    /// Whether `node` was revoked at or before `head`.
    pub fn is_revoked(&self, node: &str) -> bool {
        self.revoked.contains(node)
    }

    /// Applies committed changes, which must continue from `head` without a gap.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), String> {
        // Even a batch that stops at a gap may have moved some resources: no view survives it.
        if !changes.is_empty() {
            self.views.clear();
        }
        for c in changes {
            if c.revision != self.head + 1 {
                return Err(format!(
                    "change log gap: head {} then revision {}",
                    self.head, c.revision
                ));
            }
            let entry = log_entry(c.clone());
            if entry.key.0 == NODE_CODE {
                self.revoked.insert(entry.key.1.clone());
            }
            if is_event(entry.key.0) {
                self.head = c.revision;
                self.log.push_back(entry);
                continue;
            }
            match &entry.body {
                Some(body) => {
                    let digest = resource_digest(entry.key.0, &entry.key.1, body);
                    let tags = entry.tags.clone().unwrap_or_default();
                    self.resources.insert(
                        entry.key.clone(),
                        Entry {
                            body: body.clone(),
                            digest,
                            tags,
                            cert_refs: entry.cert_refs.clone(),
                        },
                    );
                }
                None => {
                    self.resources.remove(&entry.key);
                }
            }
            self.head = c.revision;
            self.log.push_back(entry);
        }
        self.trim_log();
        Ok(())
    }

    fn trim_log(&mut self) {
        while self.log.len() > LOG_CAPACITY {
            if let Some(e) = self.log.pop_front() {
                self.log_floor = e.revision;
            }
        }
    }

    /// Commit times of revisions in `(after, upto]` still in the log.
    pub fn commit_times(&self, after: i64, upto: i64) -> Vec<DateTime<Utc>> {
        self.log_range(after.max(self.log_floor), upto)
            .map(|e| e.committed_at)
            .collect()
    }

    fn log_range(&self, after: i64, upto: i64) -> impl Iterator<Item = &LogEntry> {
        let start = usize::try_from(after - self.log_floor).unwrap_or(0);
        self.log
            .iter()
            .skip(start)
            .take_while(move |e| e.revision <= upto)
    }

    /// Certificate ids referenced by the APIs `group` sees at head.
    fn referenced_certs(&self, group: &str) -> HashSet<&str> {
        self.resources
            .range((API_CODE, String::new())..(API_CODE + 1, String::new()))
            .filter(|(_, e)| visible(Some(&e.tags), group))
            .flat_map(|(_, e)| e.cert_refs.iter().map(String::as_str))
            .collect()
    }

    /// Whether `group` holds a resource at head. A certificate goes where an API referencing it
    /// goes, or where its own tags send it (docs/sync.md, "Certificates"); anything else by tags.
    fn holds(key: &ResourceKey, entry: &Entry, group: &str, refs: &HashSet<&str>) -> bool {
        if key.0 == CERT_CODE {
            tagged_for(Some(&entry.tags), group) || refs.contains(key.1.as_str())
        } else {
            visible(Some(&entry.tags), group)
        }
    }

    /// The group's view at head (computed once per group and head).
    pub fn view(&mut self, group: &str) -> Arc<GroupView> {
        if let Some(v) = self.views.get(group) {
            return v.clone();
        }
        // Every commit invalidates every group's view, so this only hashes: the resources
        // themselves are listed when a snapshot is built, under the same lock and head.
        let refs = self.referenced_certs(group);
        let digests = self
            .resources
            .iter()
            .filter(|(k, e)| Self::holds(k, e, group, &refs))
            .map(|(_, e)| &e.digest);
        let view = Arc::new(GroupView {
            revision: self.head,
            hash: config_hash(digests),
            group: group.to_owned(),
            chunks: OnceLock::new(),
        });
        self.views.insert(group.to_owned(), view.clone());
        view
    }

    /// Snapshot chunks of a view, built once and shared by every stream of the group.
    pub fn snapshot_chunks(&self, view: &GroupView) -> Arc<Vec<Snapshot>> {
        debug_assert_eq!(
            view.revision, self.head,
            "a view is only used at its own head"
        );
        view.chunks
            .get_or_init(|| {
                let mut chunks: Vec<Vec<Resource>> = vec![Vec::new()];
                let mut size = 0;
                // Views are dropped at every commit and chunks are built under the lock that
                // produced the view, so the resources are still those of the view's revision.
                let refs = self.referenced_certs(&view.group);
                let visible = self
                    .resources
                    .iter()
                    .filter(|(k, e)| Self::holds(k, e, &view.group, &refs));
                for (key, entry) in visible {
                    let cost = entry.body.len() + key.1.len() + 16;
                    if size + cost > CHUNK_BYTES && chunks.last().is_some_and(|c| !c.is_empty()) {
                        chunks.push(Vec::new());
                        size = 0;
                    }
                    size += cost;
                    if let Some(chunk) = chunks.last_mut() {
                        chunk.push(Resource {
                            kind: key.0,
                            id: key.1.clone(),
                            body: entry.body.clone(),
                        });
                    }
                }
                let n = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
                Arc::new(
                    chunks
                        .into_iter()
                        .enumerate()
                        .map(|(i, resources)| Snapshot {
                            revision: view.revision as u64,
                            config_hash: view.hash.clone(),
                            chunk: u32::try_from(i).unwrap_or(u32::MAX),
                            chunks: n,
                            resources,
                            reason: String::new(),
                        })
                        .collect(),
                )
            })
            .clone()
    }

    /// What a node of `group` holding `(revision, hash)` needs to reach head. `hash` is only
    /// compared when the node claims to be at head; otherwise the node checks the hash we send
    /// after applying the delta, and NACKs on mismatch.
    pub fn plan(&mut self, group: &str, revision: i64, hash: &str) -> Plan {
        let view = self.view(group);
        if revision < 0 || hash.is_empty() {
            return Plan::Snapshot {
                reason: "no_config",
                view,
            };
        }
        if revision > self.head {
            return Plan::Snapshot {
                reason: "ahead_of_head",
                view,
            };
        }
        if revision < self.log_floor {
            return Plan::Snapshot {
                reason: "below_retention",
                view,
            };
        }
        if revision == self.head {
            if hash != view.hash {
                return Plan::Snapshot {
                    reason: "hash_mismatch",
                    view,
                };
            }
            return Plan::Bookmark(Bookmark {
                revision: self.head as u64,
                config_hash: view.hash.clone(),
            });
        }
        // First and last change of each resource touched since `revision`.
        let mut touched: BTreeMap<&ResourceKey, (bool, &LogEntry)> = BTreeMap::new();
        let mut session_events = Vec::new();
        let mut cache_flushes = Vec::new();
        // Certificates touched in the range, with whether their tags gave them to the group
        // before the range (the record the node holds, if it holds one).
        let mut certs: BTreeMap<&str, bool> = BTreeMap::new();
        for e in self.log_range(revision, self.head) {
            if e.key.0 == NODE_CODE {
                continue;
            }
            if e.key.0 == CERT_CODE {
                certs
                    .entry(e.key.1.as_str())
                    .or_insert_with(|| tagged_for(e.prev_tags.as_deref(), group));
                continue;
            }
            if e.key.0 == SESSION_CODE {
                // Every group gets key events: a key may be used in any region.
                session_events.push(SessionEvent {
                    key_hash: e.key.1.clone(),
                    revoked: e.body.is_none(),
                    revision: e.revision as u64,
                });
                continue;
            }
            if e.key.0 == CACHE_CODE {
                // Every group too: an API may be served anywhere, and a flush of a cache an edge
                // does not hold costs it nothing.
                if let Some((cache, api_id)) = parse_flush_id(&e.key.1) {
                    cache_flushes.push(CacheFlush {
                        cache: cache.to_owned(),
                        api_id: api_id.unwrap_or_default().to_owned(),
                        revision: e.revision as u64,
                    });
                }
                continue;
            }
            touched
                .entry(&e.key)
                .and_modify(|t| t.1 = e)
                .or_insert((visible(e.prev_tags.as_deref(), group), e));
        }
        let refs = self.referenced_certs(group);
        // A certificate the node lacks can become visible only by a change to it or to an API
        // referencing it: those APIs' references are candidates besides the touched certificates.
        let mut cert_candidates: BTreeSet<&str> = certs.keys().copied().collect();
        for key in touched.keys().filter(|k| k.0 == API_CODE) {
            if let Some(e) = self.resources.get(*key)
                && visible(Some(&e.tags), group)
            {
                cert_candidates.extend(e.cert_refs.iter().map(String::as_str));
            }
        }
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        for id in cert_candidates {
            let key = (CERT_CODE, id.to_owned());
            match self.resources.get(&key) {
                Some(e) if Self::holds(&key, e, group, &refs) => upserts.push(Resource {
                    kind: CERT_CODE,
                    id: key.1,
                    body: e.body.clone(),
                }),
                // A node may hold a certificate no longer visible to it only through its old
                // tags or an API that still references it; any other it drops by itself, since
                // none of its APIs references it (docs/sync.md). So other groups never learn
                // the ids of certificates they never held.
                _ if certs
                    .get(id)
                    .is_some_and(|was_tagged| *was_tagged || refs.contains(id)) =>
                {
                    deletes.push(ResourceRef {
                        kind: CERT_CODE,
                        id: key.1,
                    });
                }
                _ => {}
            }
        }
        for (key, (was_visible, last)) in touched {
            match &last.body {
                Some(body) if visible(last.tags.as_deref(), group) => upserts.push(Resource {
                    kind: key.0,
                    id: key.1.clone(),
                    body: body.clone(),
                }),
                _ if was_visible => deletes.push(ResourceRef {
                    kind: key.0,
                    id: key.1.clone(),
                }),
                _ => {}
            }
        }
        if upserts.is_empty()
            && deletes.is_empty()
            && session_events.is_empty()
            && cache_flushes.is_empty()
        {
            return Plan::Bookmark(Bookmark {
                revision: self.head as u64,
                config_hash: view.hash.clone(),
            });
        }
        Plan::Changes(Changes {
            from_revision: revision as u64,
            to_revision: self.head as u64,
            config_hash: view.hash.clone(),
            upserts,
            deletes,
            session_events,
            cache_flushes,
        })
    }
}

fn log_entry(c: Change) -> LogEntry {
    let code = kind_code(c.kind);
    LogEntry {
        revision: c.revision,
        key: (code, c.resource_id),
        body: c.body.as_ref().map(|b| Bytes::from(canonical_json(b))),
        cert_refs: cert_refs(code, c.body.as_ref()),
        tags: c.tags,
        prev_tags: c.prev_tags,
        committed_at: c.committed_at,
    }
}

#[cfg(test)]
mod tests;
