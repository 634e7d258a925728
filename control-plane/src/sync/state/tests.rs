use std::collections::BTreeMap;

use serde_json::json;

use super::*;

fn change(
    revision: i64,
    id: &str,
    body: Option<serde_json::Value>,
    tags: Option<&[&str]>,
    prev: Option<&[&str]>,
) -> Change {
    let v = |t: Option<&[&str]>| t.map(|t| t.iter().map(|s| s.to_string()).collect());
    Change {
        revision,
        kind: ChangeKind::Api,
        resource_id: id.into(),
        body,
        tags: v(tags),
        prev_tags: v(prev),
        committed_at: Utc::now(),
    }
}

/// What an edge holds: applies plans the way the data plane does and recomputes the hash.
#[derive(Default)]
struct Edge {
    revision: i64,
    resources: BTreeMap<ResourceKey, Bytes>,
}

impl Edge {
    fn hash(&self) -> String {
        let digests: Vec<_> = self
            .resources
            .iter()
            .map(|(k, b)| resource_digest(k.0, &k.1, b))
            .collect();
        config_hash(digests.iter())
    }

    fn step(&mut self, state: &mut ConfigState, group: &str, revision: i64, hash: &str) -> String {
        let plan = state.plan(group, revision, hash);
        self.apply(state, plan)
    }

    fn apply(&mut self, state: &ConfigState, plan: Plan) -> String {
        match plan {
            Plan::Snapshot { view, .. } => {
                self.resources.clear();
                for chunk in state.snapshot_chunks(&view).iter() {
                    for r in &chunk.resources {
                        self.resources
                            .insert((r.kind, r.id.clone()), r.body.clone());
                    }
                }
                self.revision = view.revision;
                assert_eq!(self.hash(), view.hash);
                "snapshot".into()
            }
            Plan::Changes(c) => {
                assert_eq!(c.from_revision as i64, self.revision);
                for r in c.upserts {
                    self.resources.insert((r.kind, r.id), r.body);
                }
                for d in c.deletes {
                    self.resources.remove(&(d.kind, d.id));
                }
                self.revision = c.to_revision as i64;
                assert_eq!(self.hash(), c.config_hash, "hash after delta");
                "changes".into()
            }
            Plan::Bookmark(b) => {
                assert_eq!(self.hash(), b.config_hash);
                self.revision = b.revision as i64;
                "bookmark".into()
            }
        }
    }
}

fn api(path: &str) -> serde_json::Value {
    json!({"api_id": path, "proxy": {"listen_path": format!("/{path}/"), "target_url": "http://u/"}})
}

#[test]
fn new_node_gets_a_snapshot_then_only_its_groups_changes() {
    let mut s = ConfigState::new(0, vec![], vec![]);
    let mut eu = Edge::default();
    let mut us = Edge::default();
    assert_eq!(eu.step(&mut s, "eu", 0, ""), "snapshot");
    assert_eq!(us.step(&mut s, "us", 0, ""), "snapshot");

    s.apply(&[
        change(1, "a", Some(api("a")), Some(&["eu"]), None),
        change(2, "b", Some(api("b")), Some(&[]), None),
    ])
    .unwrap();
    let h = eu.hash();
    assert_eq!(eu.step(&mut s, "eu", eu.revision, &h), "changes");
    assert_eq!(eu.resources.len(), 2);
    let h = us.hash();
    assert_eq!(us.step(&mut s, "us", us.revision, &h), "changes");
    assert_eq!(us.resources.len(), 1, "us sees only the untagged API");

    // Moving "a" from eu to us: eu deletes it, us gains it.
    s.apply(&[change(3, "a", Some(api("a")), Some(&["us"]), Some(&["eu"]))])
        .unwrap();
    let h = eu.hash();
    eu.step(&mut s, "eu", eu.revision, &h);
    let h = us.hash();
    us.step(&mut s, "us", us.revision, &h);
    assert!(!eu.resources.contains_key(&(1, "a".into())));
    assert!(us.resources.contains_key(&(1, "a".into())));

    // A change only for us is a bookmark for eu.
    s.apply(&[change(4, "c", Some(api("c")), Some(&["us"]), None)])
        .unwrap();
    let h = eu.hash();
    assert_eq!(eu.step(&mut s, "eu", eu.revision, &h), "bookmark");
    assert_eq!(eu.revision, 4);
}

#[test]
fn created_then_deleted_between_two_plans_sends_nothing_and_delete_reaches_holders() {
    let mut s = ConfigState::new(0, vec![], vec![]);
    let mut eu = Edge::default();
    eu.step(&mut s, "eu", 0, "");
    s.apply(&[
        change(1, "x", Some(api("x")), Some(&[]), None),
        change(2, "x", None, None, Some(&[])),
    ])
    .unwrap();
    let h = eu.hash();
    assert_eq!(eu.step(&mut s, "eu", eu.revision, &h), "bookmark");

    s.apply(&[change(3, "y", Some(api("y")), Some(&[]), None)])
        .unwrap();
    let h = eu.hash();
    eu.step(&mut s, "eu", eu.revision, &h);
    s.apply(&[change(4, "y", None, None, Some(&[]))]).unwrap();
    let h = eu.hash();
    assert_eq!(eu.step(&mut s, "eu", eu.revision, &h), "changes");
    assert!(eu.resources.is_empty());
}

#[test]
fn resume_rules_pick_snapshot_reasons() {
    let mut s = ConfigState::new(0, vec![], vec![]);
    s.apply(&[change(1, "a", Some(api("a")), Some(&[]), None)])
        .unwrap();
    let reason = |p: Plan| match p {
        Plan::Snapshot { reason, .. } => reason,
        Plan::Changes(_) => "changes",
        Plan::Bookmark(_) => "bookmark",
    };
    assert_eq!(reason(s.plan("eu", 0, "")), "no_config");
    assert_eq!(reason(s.plan("eu", 9, "sha256:x")), "ahead_of_head");
    assert_eq!(reason(s.plan("eu", 1, "sha256:wrong")), "hash_mismatch");
    let good = s.view("eu").hash.clone();
    assert_eq!(reason(s.plan("eu", 1, &good)), "bookmark");

    // A state loaded from a log that starts at revision 5 cannot serve a node at revision 2.
    let log = vec![
        change(5, "a", Some(api("a")), Some(&[]), None),
        change(6, "b", Some(api("b")), Some(&[]), None),
    ];
    let loaded = vec![
        LoadedResource {
            kind: ChangeKind::Api,
            id: "a".into(),
            body: api("a"),
            tags: vec![],
        },
        LoadedResource {
            kind: ChangeKind::Api,
            id: "b".into(),
            body: api("b"),
            tags: vec![],
        },
    ];
    let mut s = ConfigState::new(6, loaded, log);
    assert_eq!(reason(s.plan("eu", 2, "sha256:x")), "below_retention");
    assert_eq!(reason(s.plan("eu", 4, "sha256:x")), "changes");
}

#[test]
fn gaps_are_refused() {
    let mut s = ConfigState::new(0, vec![], vec![]);
    assert!(
        s.apply(&[change(2, "a", Some(api("a")), Some(&[]), None)])
            .is_err()
    );
}

#[test]
fn large_snapshots_are_chunked_under_a_mebibyte_and_complete() {
    let mut s = ConfigState::new(0, vec![], vec![]);
    let filler = "x".repeat(1500);
    let changes: Vec<_> = (1..=3000)
        .map(|i| {
            let mut body = api(&format!("api{i}"));
            body["description"] = json!(filler);
            change(i, &format!("api{i}"), Some(body), Some(&[]), None)
        })
        .collect();
    s.apply(&changes).unwrap();
    let view = s.view("eu");
    let chunks = s.snapshot_chunks(&view);
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    let mut total = 0;
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.chunk as usize, i);
        assert_eq!(c.chunks as usize, chunks.len());
        let size: usize = c
            .resources
            .iter()
            .map(|r| r.body.len() + r.id.len() + 16)
            .sum();
        assert!(size <= CHUNK_BYTES, "chunk {i} is {size} bytes");
        total += c.resources.len();
    }
    assert_eq!(total, 3000);
    let mut edge = Edge::default();
    edge.apply(
        &s,
        Plan::Snapshot {
            reason: "no_config",
            view,
        },
    );
}

#[test]
fn key_changes_reach_every_group_as_events_without_touching_the_hash() {
    let mut s = ConfigState::new(0, vec![], vec![]);
    let mut eu = Edge::default();
    eu.step(&mut s, "eu", 0, "");
    let before = eu.hash();
    let key = |revision, deleted: bool| Change {
        revision,
        kind: ChangeKind::Session,
        resource_id: "ab".repeat(32),
        body: (!deleted).then(|| json!({})),
        tags: (!deleted).then(Vec::new),
        prev_tags: Some(vec![]),
        committed_at: Utc::now(),
    };
    s.apply(&[key(1, false), key(2, true)]).unwrap();
    let Plan::Changes(c) = s.plan("eu", 0, &before) else {
        panic!("expected changes")
    };
    assert!(c.upserts.is_empty() && c.deletes.is_empty());
    let events: Vec<_> = c
        .session_events
        .iter()
        .map(|e| (e.revision, e.revoked))
        .collect();
    assert_eq!(events, vec![(1, false), (2, true)], "in revision order");
    assert_eq!(
        c.config_hash, before,
        "keys are not part of the configuration hash"
    );
    assert_eq!(c.to_revision, 2);
    assert!(matches!(s.plan("us", 2, &before), Plan::Bookmark(_)));
}

#[test]
fn a_revocation_fences_its_node_from_the_batch_it_arrives_in_and_is_sent_to_nobody() {
    let mut s = ConfigState::new(0, vec![], vec![]);
    let mut eu = Edge::default();
    eu.step(&mut s, "eu", 0, "");
    let hash = eu.hash();
    let revoked = uuid::Uuid::new_v4().to_string();
    let revocation = Change {
        revision: 1,
        kind: ChangeKind::Node,
        resource_id: revoked.clone(),
        body: None,
        tags: None,
        prev_tags: None,
        committed_at: Utc::now(),
    };
    // The revocation and a later commit arrive in one batch: the fence holds before either is
    // visible to a stream, which plans under the same lock.
    s.apply(&[
        revocation.clone(),
        change(2, "a", Some(json!({"api_id": "a"})), Some(&[]), None),
    ])
    .unwrap();
    assert!(s.is_revoked(&revoked));
    assert!(!s.is_revoked(&uuid::Uuid::new_v4().to_string()));
    // Other nodes get the API and nothing about the revocation.
    let Plan::Changes(c) = s.plan("eu", 0, &hash) else {
        panic!("expected changes")
    };
    assert_eq!(
        (c.upserts.len(), c.deletes.len(), c.session_events.len()),
        (1, 0, 0)
    );
    assert!(matches!(s.plan("eu", 2, &c.config_hash), Plan::Bookmark(_)));
    // A replica starting later reads the revocation back from the retained log.
    let restarted = ConfigState::new(2, vec![], vec![revocation]);
    assert!(restarted.is_revoked(&revoked));
}
