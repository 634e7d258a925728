use serde_json::{Value, json};

use super::*;

fn policy(v: Value) -> (String, Arc<PolicySpec>) {
    let p = portcullis_proto::model::Policy::from_value(v).unwrap();
    (p.id().to_owned(), Arc::new(p.spec().clone()))
}

fn session(v: Value) -> SessionSpec {
    portcullis_proto::model::SessionState::from_value(v)
        .unwrap()
        .spec()
        .clone()
}

fn index(ps: Vec<Value>) -> PolicyIndex {
    ps.into_iter().map(policy).collect()
}

#[test]
fn without_policies_the_key_speaks_for_itself() {
    let s = session(
        json!({"rate": 5, "per": 1, "quota_max": 10, "access_rights": {"a": {"api_id": "a", "limit": {"rate": 1, "per": 60}}}}),
    );
    let e = entitlements(&s, "h", &[], &PolicyIndex::new()).unwrap();
    assert_eq!(
        (e.limits.rate, e.limits.quota_max, e.limits.scope.as_str()),
        (5.0, 10, "h")
    );
    assert_eq!(
        e.limits_for("a").rate,
        1.0,
        "an access right with its own limit has its own counter"
    );
    assert_eq!(e.limits_for("a").scope, "h:a");
    assert_eq!(e.limits_for("b").scope, "h");
}

#[test]
fn the_most_permissive_values_win_and_policies_replace_the_keys_own() {
    let idx = index(vec![
        json!({"id": "slow", "rate": 10, "per": 60, "quota_max": 100, "quota_renewal_rate": 3600, "access_rights": {"a": {"api_id": "a", "versions": ["v1"], "allowed_urls": [{"url": "/x", "methods": ["GET"]}]}}}),
        json!({"id": "fast", "rate": 5, "per": 1, "quota_max": 50, "access_rights": {"a": {"api_id": "a", "versions": ["v2"], "allowed_urls": [{"url": "/x", "methods": ["POST"]}]}, "b": {"api_id": "b"}}}),
        json!({"id": "unlimited-quota", "rate": 1, "per": 3600, "quota_max": -1, "access_rights": {}}),
    ]);
    // The key's own (more generous) values are not what counts once policies own the parts.
    let s = session(
        json!({"rate": 1000, "per": 1, "quota_max": 5, "apply_policies": ["slow", "fast"], "access_rights": {"z": {"api_id": "z"}}}),
    );
    let e = entitlements(&s, "h", &["slow", "fast"], &idx).unwrap();
    assert_eq!(
        (e.limits.rate, e.limits.per),
        (5.0, 1.0),
        "5/s beats 10/min"
    );
    assert_eq!(e.limits.quota_max, 100, "the higher quota");
    assert_eq!(
        e.access_rights.keys().collect::<Vec<_>>(),
        ["a", "b"],
        "ACLs unioned; the key's own replaced"
    );
    assert_eq!(e.access_rights["a"].versions, ["v1", "v2"]);
    assert_eq!(
        e.access_rights["a"].allowed_urls[0].methods,
        ["GET", "POST"]
    );

    let e = entitlements(&s, "h", &["slow", "unlimited-quota"], &idx).unwrap();
    assert_eq!(e.limits.quota_max, -1, "-1 beats any quota");
    assert_eq!(
        e.access_rights.keys().collect::<Vec<_>>(),
        ["a"],
        "a policy without rights adds none"
    );
}

#[test]
fn partitions_limit_what_a_policy_sets() {
    let idx = index(vec![
        json!({"id": "acl", "partitions": {"acl": true}, "rate": 1, "per": 1, "access_rights": {"a": {"api_id": "a"}}}),
        json!({"id": "quota", "partitions": {"quota": true}, "quota_max": 7, "quota_renewal_rate": 60, "rate": 999, "per": 1}),
    ]);
    let s = session(json!({"rate": 3, "per": 1, "quota_max": 1}));
    let e = entitlements(&s, "h", &["acl", "quota"], &idx).unwrap();
    assert_eq!(e.access_rights.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(e.limits.quota_max, 7);
    assert_eq!(
        (e.limits.rate, e.limits.per),
        (3.0, 1.0),
        "no policy owns the rate: the key's stays"
    );
}

#[test]
fn per_api_policies_give_separate_counters_and_cannot_mix_with_partitions() {
    let idx = index(vec![
        json!({"id": "pa", "partitions": {"per_api": true}, "rate": 2, "per": 1, "quota_max": 20,
               "access_rights": {"a": {"api_id": "a", "limit": {"rate": 100, "per": 1, "quota_max": -1}}, "b": {"api_id": "b"}}}),
        json!({"id": "bad", "partitions": {"per_api": true, "quota": true}}),
        json!({"id": "part", "partitions": {"acl": true}, "access_rights": {"c": {"api_id": "c"}}}),
    ]);
    let s = session(json!({}));
    let e = entitlements(&s, "h", &["pa"], &idx).unwrap();
    assert_eq!(
        (e.limits_for("a").rate, e.limits_for("a").scope.as_str()),
        (100.0, "h:a"),
        "own limit, own counter"
    );
    assert_eq!(
        (e.limits_for("b").rate, e.limits_for("b").scope.as_str()),
        (2.0, "h:pa"),
        "inherits the policy's limits"
    );
    assert_eq!(
        entitlements(&s, "h", &["bad"], &idx),
        Err(PolicyError::PerApiWithPartitions("bad".into()))
    );
    assert_eq!(
        entitlements(&s, "h", &["pa", "part"], &idx),
        Err(PolicyError::Mixed)
    );
}

#[test]
fn missing_and_inactive_policies() {
    let idx = index(vec![
        json!({"id": "ok", "access_rights": {"a": {"api_id": "a"}}}),
        json!({"id": "off", "is_inactive": true}),
    ]);
    let s = session(json!({}));
    assert_eq!(
        entitlements(&s, "h", &["gone"], &idx),
        Err(PolicyError::Missing("gone".into())),
        "a lone missing policy fails"
    );
    let e = entitlements(&s, "h", &["gone", "ok"], &idx).unwrap();
    assert!(
        e.access_rights.contains_key("a"),
        "with several, a missing one is skipped"
    );
    assert!(
        entitlements(&s, "h", &["ok", "off"], &idx)
            .unwrap()
            .inactive,
        "one inactive policy makes the key inactive"
    );
    let active_key_inactive_flag = session(json!({"is_inactive": true}));
    assert!(
        !entitlements(&active_key_inactive_flag, "h", &["ok"], &idx)
            .unwrap()
            .inactive,
        "policies decide, not the key's own flag"
    );
}

#[test]
fn several_acl_policies_give_each_api_the_granting_policys_counter() {
    let idx = index(vec![
        json!({"id": "p1", "rate": 10, "per": 60, "quota_max": 5, "access_rights": {"a": {"api_id": "a"}}}),
        json!({"id": "p2", "rate": 100, "per": 1, "quota_max": 50, "access_rights": {"b": {"api_id": "b"}}}),
        json!({"id": "p3", "partitions": {"acl": true}, "access_rights": {"c": {"api_id": "c"}}}),
    ]);
    let s = session(json!({}));
    let e = entitlements(&s, "h", &["p1", "p2", "p3"], &idx).unwrap();
    let a = e.limits_for("a");
    assert_eq!(
        (a.rate, a.per, a.quota_max, a.scope.as_str()),
        (10.0, 60.0, 5, "h:p1")
    );
    let b = e.limits_for("b");
    assert_eq!((b.rate, b.quota_max, b.scope.as_str()), (100.0, 50, "h:p2"));
    let c = e.limits_for("c");
    assert_eq!(
        (c.rate, c.quota_max, c.scope.as_str()),
        (100.0, 50, "h:p3"),
        "an ACL-only policy inherits the merged limits"
    );
    // With a single granting policy the key's own counter is used.
    let one = entitlements(&s, "h", &["p1"], &idx).unwrap();
    assert_eq!(one.limits_for("a").scope, "h");
}

#[test]
fn a_policy_of_another_organisation_is_refused() {
    let idx = index(vec![
        json!({"id": "theirs", "org_id": "org-b", "access_rights": {"b": {"api_id": "b"}}}),
        json!({"id": "shared", "access_rights": {"a": {"api_id": "a"}}}),
    ]);
    let mine = session(json!({"org_id": "org-a", "apply_policies": ["theirs"]}));
    assert_eq!(
        entitlements(&mine, "h", &["theirs"], &idx).unwrap_err(),
        PolicyError::OtherOrg("theirs".into())
    );
    // A policy without an org, or a key without one, applies as before.
    assert!(entitlements(&mine, "h", &["shared"], &idx).is_ok());
    let orgless = session(json!({"apply_policies": ["theirs"]}));
    assert!(entitlements(&orgless, "h", &["theirs"], &idx).is_ok());
}
