//! Property test: random API definitions, sessions and policies (huge, negative, fractional and
//! non-numeric values where numbers belong) go through validation and then through everything the
//! edge builds from them. Nothing may panic; whatever validation accepts stays within the bounds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use portcullis_data_plane::applied::AppliedConfig;
use portcullis_data_plane::auth::basic::BasicAuth;
use portcullis_data_plane::auth::token::TokenAuth;
use portcullis_data_plane::limits::{Cell, Limits};
use portcullis_data_plane::policies::{PolicyIndex, entitlements};
use portcullis_data_plane::router::Route;
use portcullis_proto::model::bounds::{MAX_CLOCK_SKEW_SECS, MAX_TIMEOUT_SECS};
use portcullis_proto::model::{
    ApiDefinition, AuthTokenSpec, BasicAuthSpec, Partitions, Policy, PolicySpec, SessionSpec,
    SessionState, SignatureSpec,
};
use portcullis_proto::sync::{Resource, ResourceKind, Snapshot};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::Arc;

/// Anything an operator (or schemathesis) could put where a number belongs.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        (-10.0..10.0f64).prop_map(Value::from),
        prop::sample::select(vec![
            json!(0),
            json!(-1),
            json!(-0.0),
            json!(1e20),
            json!(3.3e16),
            json!(1e308),
            json!(-1e308),
            json!(5e-324),
            json!(0.0001),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(null),
            json!("NaN"),
            json!("Infinity"),
        ]),
    ]
}

fn api_definition() -> impl Strategy<Value = Value> {
    (
        (number(), number(), number(), number(), number()),
        (any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |((timeout, lifetime, cache_ttl, skew, code), (basic, signed, keyless))| {
                json!({
                    "api_id": "fuzz",
                    "use_keyless": keyless,
                    "use_basic_auth": basic,
                    "session_lifetime": lifetime,
                    "basic_auth": {"cache_ttl": cache_ttl},
                    "auth": {"validate_signature": signed, "signature": {
                        "algorithm": "MasherySHA256", "header": "X-Sig", "secret": "s",
                        "allowed_clock_skew": skew, "error_code": code}},
                    "proxy": {"listen_path": "/fuzz/", "target_url": "http://127.0.0.1:9/", "timeout": timeout},
                })
            },
        )
}

fn limits_json() -> impl Strategy<Value = Value> {
    (number(), number(), number(), number()).prop_map(|(rate, per, quota_max, renewal)| {
        json!({"rate": rate, "per": per, "quota_max": quota_max, "quota_renewal_rate": renewal})
    })
}

fn with(mut base: Value, extra: &Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

fn session_json() -> impl Strategy<Value = Value> {
    (limits_json(), limits_json(), number(), number(), number()).prop_map(
        |(own, per_api, expires, lifetime, remaining)| {
            with(
                json!({
                    "expires": expires, "session_lifetime": lifetime, "quota_remaining": remaining,
                    "apply_policies": ["p1", "p2"],
                    "access_rights": {"fuzz": {"api_id": "fuzz", "limit": per_api}},
                }),
                &own,
            )
        },
    )
}

fn policy_json(id: &'static str) -> impl Strategy<Value = Value> {
    (limits_json(), limits_json(), any::<[bool; 5]>()).prop_map(move |(own, per_api, parts)| {
        with(
            json!({
                "id": id,
                "partitions": {"quota": parts[0], "rate_limit": parts[1], "acl": parts[2],
                    "complexity": parts[3], "per_api": parts[4]},
                "access_rights": {"fuzz": {"api_id": "fuzz", "limit": per_api}},
            }),
            &own,
        )
    })
}

/// Raw floats, NaN and infinities included: what the edge sees if a value slipped past validation.
fn raw_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN_POSITIVE,
            -1.0,
            0.0,
            1e-300,
        ]),
    ]
}

fn raw_spec(rate: f64, per: f64, quota: i64, renewal: i64) -> SessionSpec {
    SessionSpec {
        rate,
        per,
        quota_max: quota,
        quota_renewal_rate: renewal,
        apply_policies: vec!["p1".into(), "p2".into()],
        ..SessionSpec::default()
    }
}

fn raw_policy(id: &str, rate: f64, per: f64, quota: i64, parts: [bool; 5]) -> PolicySpec {
    let mut p = Policy::parse(format!(r#"{{"id":"{id}"}}"#).as_bytes())
        .unwrap()
        .spec()
        .clone();
    p.rate = rate;
    p.per = per;
    p.quota_max = quota;
    p.quota_renewal_rate = quota;
    p.partitions = Partitions {
        quota: parts[0],
        rate_limit: parts[1],
        acl: parts[2],
        complexity: parts[3],
        per_api: parts[4],
    };
    p
}

fn check_limits(l: &Limits) {
    let _ = l.window();
    let _ = l.is_unlimited();
    if let Some(cell) = Cell::of(l) {
        assert!(cell.interval >= 1 && cell.tolerance >= cell.interval);
        for backlog in [0, cell.tolerance, u64::MAX] {
            let _ = cell.admit(cell.carried(backlog, 1));
            assert!(cell.admitted(backlog).remaining <= cell.burst());
            assert!(cell.refused(backlog).reset_secs >= 1);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn api_definitions_never_panic_the_edge(def in api_definition()) {
        let body = serde_json::to_vec(&def).unwrap();
        if let Ok(parsed) = ApiDefinition::parse(&body) {
            let spec = parsed.spec();
            prop_assert!((0.0..=MAX_TIMEOUT_SECS).contains(&spec.proxy.timeout));
            prop_assert!((0..=MAX_CLOCK_SKEW_SECS).contains(&spec.auth.signature.allowed_clock_skew)
                || !spec.auth.validate_signature);
            let route = Route::from_definition(&parsed);
            if let Ok(route) = route {
                prop_assert!(route.timeout.is_none_or(|t| t.as_secs_f64() <= MAX_TIMEOUT_SECS));
            }
        }
        // The edge's own apply path (a snapshot from the CP) refuses or applies, never panics.
        let snapshot = Snapshot {
            revision: 1,
            config_hash: String::new(),
            chunk: 0,
            chunks: 1,
            resources: vec![Resource { kind: ResourceKind::Api as i32, id: "fuzz".into(), body: body.into() }],
            reason: String::new(),
        };
        let _ = AppliedConfig::from_snapshot(&[snapshot], "default");
    }

    #[test]
    fn sessions_and_policies_never_panic_the_edge(
        session in session_json(),
        p1 in policy_json("p1"),
        p2 in policy_json("p2"),
    ) {
        let session = SessionState::parse(&serde_json::to_vec(&session).unwrap());
        let mut index = PolicyIndex::new();
        for p in [&p1, &p2] {
            let body = serde_json::to_vec(p).unwrap();
            if let Ok(policy) = Policy::parse(&body) {
                index.insert(policy.id().to_owned(), Arc::new(policy.spec().clone()));
            }
            let snapshot = Snapshot {
                revision: 1,
                config_hash: String::new(),
                chunk: 0,
                chunks: 1,
                resources: vec![Resource { kind: ResourceKind::Policy as i32, id: "p".into(), body: body.clone().into() }],
                reason: String::new(),
            };
            let _ = AppliedConfig::from_snapshot(&[snapshot], "default");
        }
        if let Ok(session) = session {
            let ids: Vec<&str> = session.policy_ids().collect();
            for ids in [&ids[..], &[][..]] {
                if let Ok(eff) = entitlements(session.spec(), "hash", ids, &index) {
                    check_limits(&eff.limits);
                    check_limits(eff.limits_for("fuzz"));
                }
            }
        }
    }

    #[test]
    fn unvalidated_numbers_never_panic_the_edge(
        (rate, per, prate, pper) in (raw_f64(), raw_f64(), raw_f64(), raw_f64()),
        (quota, skew, ttl) in (any::<i64>(), any::<i64>(), any::<i64>()),
        parts in any::<[bool; 5]>(),
    ) {
        // Defence in depth: specs built without validation, as if a bound had been missed.
        let spec = raw_spec(rate, per, quota, quota);
        let mut index = PolicyIndex::new();
        index.insert("p1".into(), Arc::new(raw_policy("p1", prate, pper, quota, parts)));
        index.insert("p2".into(), Arc::new(raw_policy("p2", per, rate, -1, [false; 5])));
        for ids in [&["p1", "p2"][..], &["p1"][..], &[][..]] {
            if let Ok(eff) = entitlements(&spec, "hash", ids, &index) {
                check_limits(&eff.limits);
                check_limits(eff.limits_for("fuzz"));
            }
        }
        check_limits(&Limits { rate, per, quota_max: quota, quota_renewal_rate: quota, scope: "s".into() });
        let _ = TokenAuth::new(&AuthTokenSpec {
            validate_signature: true,
            signature: SignatureSpec {
                algorithm: "MasheryMD5".into(),
                header: "X-Sig".into(),
                secret: "s".into(),
                allowed_clock_skew: skew,
                ..SignatureSpec::default()
            },
            ..AuthTokenSpec::default()
        });
        let _ = BasicAuth::new("realm", &BasicAuthSpec { cache_ttl: ttl, ..BasicAuthSpec::default() });
    }
}
