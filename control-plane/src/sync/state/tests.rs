use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use portcullis_proto::model::certificate::CertificateRecord;

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
    /// The group of the last `step`: after each delta the edge drops the certificates none of
    /// its APIs references and that are not tagged for it (docs/sync.md, "Certificates").
    group: Option<String>,
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
        self.group = Some(group.to_owned());
        let plan = state.plan(group, revision, hash);
        self.apply(state, plan)
    }

    fn collect_certificates(&mut self) {
        let Some(group) = self.group.clone() else {
            return;
        };
        let referenced: HashSet<String> = self
            .resources
            .iter()
            .filter(|(k, _)| k.0 == API_CODE)
            .filter_map(|(_, b)| ApiDefinition::from_value(serde_json::from_slice(b).unwrap()).ok())
            .flat_map(|d| d.certificate_refs().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        self.resources.retain(|k, b| {
            k.0 != CERT_CODE
                || referenced.contains(&k.1)
                || serde_json::from_slice::<CertificateRecord>(b)
                    .unwrap()
                    .tagged_for(&group)
        });
    }

    fn certs(&self) -> Vec<&str> {
        self.resources
            .keys()
            .filter(|k| k.0 == CERT_CODE)
            .map(|k| k.1.as_str())
            .collect()
    }

    /// Steps from where the edge is, and checks it then holds what a fresh snapshot holds.
    fn sync(&mut self, state: &mut ConfigState, group: &str) -> String {
        let h = self.hash();
        let what = self.step(state, group, self.revision, &h);
        let mut fresh = Edge::default();
        fresh.step(state, group, 0, "");
        assert_eq!(self.resources, fresh.resources, "{group} after {what}");
        what
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
                self.collect_certificates();
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

fn api_with_certs(path: &str, certs: &[&str]) -> serde_json::Value {
    let mut body = api(path);
    body["certificates"] = json!(certs);
    body
}

fn cert(revision: i64, id: &str, tags: Option<&[&str]>, prev: Option<&[&str]>) -> Change {
    let record = tags.map(|t| {
        serde_json::to_value(CertificateRecord {
            id: id.into(),
            certificate_pem: format!("-----BEGIN CERTIFICATE-----\n{id}\n"),
            tags: t.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    });
    Change {
        kind: ChangeKind::Certificate,
        ..change(revision, id, record, tags, prev)
    }
}

fn plan_ids(plan: Plan) -> (Vec<String>, Vec<String>) {
    match plan {
        Plan::Changes(c) => (
            c.upserts.into_iter().map(|r| r.id).collect(),
            c.deletes.into_iter().map(|r| r.id).collect(),
        ),
        Plan::Bookmark(_) => (vec![], vec![]),
        Plan::Snapshot { .. } => panic!("expected a delta"),
    }
}

#[test]
fn a_certificate_follows_the_api_that_references_it_between_groups() {
    let mut s = ConfigState::new(0, vec![], vec![]);
    let (mut eu, mut us) = (Edge::default(), Edge::default());
    eu.sync(&mut s, "eu");
    us.sync(&mut s, "us");
    let us_empty = us.hash();

    // Uploaded before any API references it: nobody receives it, not even its id.
    s.apply(&[cert(1, "c1", Some(&[]), None)]).unwrap();
    assert_eq!(plan_ids(s.plan("eu", 0, &eu.hash())), (vec![], vec![]));
    assert_eq!(eu.sync(&mut s, "eu"), "bookmark");

    s.apply(&[change(
        2,
        "a",
        Some(api_with_certs("a", &["c1"])),
        Some(&["eu"]),
        None,
    )])
    .unwrap();
    assert_eq!(eu.sync(&mut s, "eu"), "changes");
    assert_eq!(eu.certs(), vec!["c1"]);
    assert_eq!(us.sync(&mut s, "us"), "bookmark");
    assert!(us.certs().is_empty());
    assert_eq!(
        us.hash(),
        us_empty,
        "a group without certificates keeps its hash"
    );

    // The API moves to us: us gains the certificate it never had, eu drops it.
    s.apply(&[change(
        3,
        "a",
        Some(api_with_certs("a", &["c1"])),
        Some(&["us"]),
        Some(&["eu"]),
    )])
    .unwrap();
    let (up, _) = plan_ids(s.plan("us", us.revision, &us.hash()));
    assert!(up.contains(&"c1".to_string()), "{up:?}");
    us.sync(&mut s, "us");
    eu.sync(&mut s, "eu");
    assert_eq!(us.certs(), vec!["c1"]);
    assert!(eu.certs().is_empty());
}

#[test]
fn a_certificate_uploaded_after_its_api_reaches_only_that_group() {
    let mut s = ConfigState::new(0, vec![], vec![]);
    let (mut eu, mut us) = (Edge::default(), Edge::default());
    eu.sync(&mut s, "eu");
    us.sync(&mut s, "us");
    s.apply(&[change(
        1,
        "a",
        Some(api_with_certs("a", &["c1", "c2"])),
        Some(&["eu"]),
        None,
    )])
    .unwrap();
    eu.sync(&mut s, "eu");
    us.sync(&mut s, "us");
    assert!(
        eu.certs().is_empty(),
        "the references dangle until the upload"
    );
    s.apply(&[cert(2, "c1", Some(&[]), None)]).unwrap();
    assert_eq!(
        plan_ids(s.plan("eu", 1, &eu.hash())),
        (vec!["c1".into()], vec![])
    );
    assert_eq!(plan_ids(s.plan("us", 1, &us.hash())), (vec![], vec![]));
    eu.sync(&mut s, "eu");
    assert_eq!(us.sync(&mut s, "us"), "bookmark");
    assert_eq!(eu.certs(), vec!["c1"]);
}

#[test]
fn an_api_dropping_its_reference_or_being_deleted_takes_the_certificate_away() {
    let mut s = ConfigState::new(0, vec![], vec![]);
    let mut eu = Edge::default();
    eu.sync(&mut s, "eu");
    s.apply(&[
        cert(1, "c1", Some(&[]), None),
        cert(2, "c2", Some(&[]), None),
        change(
            3,
            "a",
            Some(api_with_certs("a", &["c1", "c2"])),
            Some(&[]),
            None,
        ),
        change(4, "b", Some(api_with_certs("b", &["c2"])), Some(&[]), None),
    ])
    .unwrap();
    eu.sync(&mut s, "eu");
    assert_eq!(eu.certs(), vec!["c1", "c2"]);
    s.apply(&[change(5, "a", Some(api("a")), Some(&[]), Some(&[]))])
        .unwrap();
    eu.sync(&mut s, "eu");
    assert_eq!(eu.certs(), vec!["c2"], "c2 is still referenced by b");
    s.apply(&[change(6, "b", None, None, Some(&[]))]).unwrap();
    eu.sync(&mut s, "eu");
    assert!(eu.certs().is_empty());
    assert_eq!(eu.hash(), s.view("eu").hash);
}

#[test]
fn deleting_a_referenced_certificate_reaches_its_holders_only() {
    let mut s = ConfigState::new(0, vec![], vec![]);
    let (mut eu, mut us) = (Edge::default(), Edge::default());
    eu.sync(&mut s, "eu");
    us.sync(&mut s, "us");
    s.apply(&[
        cert(1, "c1", Some(&[]), None),
        change(
            2,
            "a",
            Some(api_with_certs("a", &["c1"])),
            Some(&["eu"]),
            None,
        ),
    ])
    .unwrap();
    eu.sync(&mut s, "eu");
    us.sync(&mut s, "us");
    s.apply(&[cert(3, "c1", None, Some(&[]))]).unwrap();
    // The API still references it, so only an explicit delete removes it from eu.
    assert_eq!(
        plan_ids(s.plan("eu", 2, &eu.hash())),
        (vec![], vec!["c1".into()])
    );
    assert_eq!(plan_ids(s.plan("us", 2, &us.hash())), (vec![], vec![]));
    eu.sync(&mut s, "eu");
    us.sync(&mut s, "us");
    assert!(eu.certs().is_empty());
    // Uploaded again, it comes back.
    s.apply(&[cert(4, "c1", Some(&[]), None)]).unwrap();
    eu.sync(&mut s, "eu");
    assert_eq!(eu.certs(), vec!["c1"]);
}

#[test]
fn a_tagged_certificate_reaches_its_groups_without_any_api() {
    let mut s = ConfigState::new(0, vec![], vec![]);
    let (mut eu, mut us) = (Edge::default(), Edge::default());
    eu.sync(&mut s, "eu");
    us.sync(&mut s, "us");
    s.apply(&[
        cert(1, "gw", Some(&["us"]), None),
        cert(2, "all", Some(&["*"]), None),
    ])
    .unwrap();
    eu.sync(&mut s, "eu");
    us.sync(&mut s, "us");
    assert_eq!(eu.certs(), vec!["all"]);
    assert_eq!(us.certs(), vec!["all", "gw"]);
    // Deleted while tagged: the delete reaches us, eu learns nothing of "gw".
    s.apply(&[cert(3, "gw", None, Some(&["us"]))]).unwrap();
    assert_eq!(plan_ids(s.plan("eu", 2, &eu.hash())), (vec![], vec![]));
    assert_eq!(
        plan_ids(s.plan("us", 2, &us.hash())),
        (vec![], vec!["gw".into()])
    );
    eu.sync(&mut s, "eu");
    us.sync(&mut s, "us");
    assert_eq!(us.certs(), vec!["all"]);
    s.apply(&[cert(4, "all", None, Some(&["*"]))]).unwrap();
    eu.sync(&mut s, "eu");
    us.sync(&mut s, "us");
    assert!(eu.certs().is_empty() && us.certs().is_empty());
}

#[test]
fn certificates_loaded_at_start_are_in_views_by_reference() {
    let record = serde_json::to_value(CertificateRecord {
        id: "c1".into(),
        ..Default::default()
    })
    .unwrap();
    let loaded = vec![
        LoadedResource {
            kind: ChangeKind::Api,
            id: "a".into(),
            body: api_with_certs("a", &["c1"]),
            tags: vec!["eu".into()],
        },
        LoadedResource {
            kind: ChangeKind::Certificate,
            id: "c1".into(),
            body: record,
            tags: vec![],
        },
    ];
    let mut s = ConfigState::new(7, loaded, vec![]);
    let (mut eu, mut us) = (Edge::default(), Edge::default());
    eu.step(&mut s, "eu", 0, "");
    us.step(&mut s, "us", 0, "");
    assert_eq!(eu.certs(), vec!["c1"]);
    assert!(us.certs().is_empty());
    assert_eq!(us.hash(), config_hash(std::iter::empty()));
}

#[test]
fn deltas_with_certificates_match_snapshots_over_a_long_random_history() {
    // A fixed-seed walk over APIs moving between groups, changing references, and certificates
    // being uploaded, retagged and deleted; `sync` compares each delta with a fresh snapshot.
    let mut s = ConfigState::new(0, vec![], vec![]);
    let groups = ["eu", "us"];
    let mut edges: Vec<Edge> = groups.iter().map(|_| Edge::default()).collect();
    for (e, g) in edges.iter_mut().zip(groups) {
        e.sync(&mut s, g);
    }
    let tag_sets: [&[&str]; 4] = [&[], &["eu"], &["us"], &["*"]];
    let mut seed: u64 = 0x5eed;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut cert_tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut api_tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let own = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut held_by_reference = 0;
    for revision in 1..=400 {
        let c = if next(2) == 0 {
            let id = format!("c{}", next(4));
            let prev = cert_tags.get(&id).cloned();
            let prev_ref: Option<Vec<&str>> = prev
                .as_ref()
                .map(|p| p.iter().map(String::as_str).collect());
            if prev.is_some() && next(3) == 0 {
                cert_tags.remove(&id);
                cert(revision, &id, None, prev_ref.as_deref())
            } else {
                let tags = tag_sets[next(4) as usize];
                cert_tags.insert(id.clone(), own(tags));
                cert(revision, &id, Some(tags), prev_ref.as_deref())
            }
        } else {
            let id = format!("a{}", next(3));
            let prev = api_tags.get(&id).cloned();
            let prev_ref: Option<Vec<&str>> = prev
                .as_ref()
                .map(|p| p.iter().map(String::as_str).collect());
            if prev.is_some() && next(4) == 0 {
                api_tags.remove(&id);
                change(revision, &id, None, None, prev_ref.as_deref())
            } else {
                let tags = tag_sets[next(3) as usize];
                let refs: Vec<String> = (0..next(3)).map(|_| format!("c{}", next(4))).collect();
                let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
                api_tags.insert(id.clone(), own(tags));
                change(
                    revision,
                    &id,
                    Some(api_with_certs(&id, &refs)),
                    Some(tags),
                    prev_ref.as_deref(),
                )
            }
        };
        s.apply(&[c]).unwrap();
        // Edges sync at different paces, so deltas span several revisions.
        for (i, (e, g)) in edges.iter_mut().zip(groups).enumerate() {
            if next(2 + i as u64) == 0 {
                e.sync(&mut s, g);
                held_by_reference += e
                    .certs()
                    .iter()
                    .filter(|c| cert_tags.get(**c).is_some_and(|t| t.is_empty()))
                    .count();
            }
        }
    }
    assert!(
        held_by_reference > 20,
        "the walk exercises references ({held_by_reference})"
    );
    for (e, g) in edges.iter_mut().zip(groups) {
        e.sync(&mut s, g);
        assert_eq!(e.hash(), s.view(g).hash);
    }
}
