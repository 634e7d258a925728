//! Sessions made at the edge from JWT identities (docs/keys.md, "Sessions made at the edge"):
//! reported to the control plane, listed and readable there under Tyk's virtual key, revoked
//! in every region by `DELETE /tyk/keys/{key}`, kept across an edge restart, and never usable
//! as an auth token.

use std::time::Duration;

use portcullis_tests::idp_stack::{self, api, assert_error, assert_upstream, policy};
use portcullis_tests::pyjwt::{Job, md5_hex, now, sign, sign_all};
use portcullis_tests::{Cp, Dp, DpOptions, EchoUpstream, TestDb, eventually, redis_url};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::jwt::{TYK_SECRET, jwt_api};

const ORG: &str = "org1";

fn edge_a(token: Option<String>, state: &std::path::Path, prefix: &str) -> DpOptions {
    DpOptions {
        token,
        state_dir: Some(state.to_owned()),
        redis_url: Some(redis_url()),
        redis_prefix: Some(prefix.to_owned()),
        ..Default::default()
    }
}

async fn listed(cp: &Cp, hash: &str) -> bool {
    let (status, body) = cp.call(Method::GET, "/tyk/keys", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["keys"]
        .as_array()
        .is_some_and(|k| k.iter().any(|h| h == hash))
}

async fn wait_for(dp: &Dp, what: &str, token: &str, status: u16) -> (StatusCode, Value) {
    eventually(Duration::from_secs(10), what, || async {
        let got = idp_stack::get(dp, "/es/", &[("Authorization", token)]).await;
        (got.0.as_u16() == status).then_some(got)
    })
    .await
}

#[tokio::test]
async fn edge_sessions_are_listed_revoked_everywhere_and_survive_a_restart() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let state = std::env::temp_dir().join(format!("edge-a-{}", uuid::Uuid::new_v4()));
    let prefix = format!("e2e:{}:a:", uuid::Uuid::new_v4().simple());
    let a = Dp::start(
        &cp,
        edge_a(Some(cp.token("default").await), &state, &prefix),
    )
    .await
    .expect("edge A starts");
    let b = Dp::regional(&cp, "us").await;

    let mut es = jwt_api("es", &echo.url(), json!({}));
    es["org_id"] = json!(ORG);
    let mut tok = api(
        "tok",
        &echo.url(),
        json!({"auth": {"auth_header_name": "Authorization"}}),
    );
    tok["org_id"] = json!(ORG);
    cp.create_api(&es).await;
    cp.create_api(&tok).await;
    let (status, body) = cp
        .call(
            Method::POST,
            "/tyk/policies",
            Some(&policy("p1", &["es", "tok"], 0, 0)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    a.wait_for_revision(3).await;
    b.wait_for_revision(3).await;

    let sub = format!("alice-{}", uuid::Uuid::new_v4().simple());
    let key = format!("{ORG}{}", md5_hex(&sub).await);
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    let first = sign(Job::hs256(
        TYK_SECRET,
        json!({"sub": sub, "iat": now() - 5, "exp": now() + 600}),
    ))
    .await;

    // Used at edge A: the session is made there and reported.
    assert_upstream(&idp_stack::get(&a, "/es/", &[("Authorization", &first)]).await);
    eventually(
        Duration::from_secs(10),
        "the edge session listed",
        || async { listed(&cp, &hash).await.then_some(()) },
    )
    .await;
    let (status, session) = cp
        .call(Method::GET, &format!("/tyk/keys/{key}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(session["alias"], sub.as_str(), "{session}");
    assert_eq!(session["apply_policies"], json!(["p1"]), "{session}");
    assert_eq!(session["key_hash"], hash.as_str(), "{session}");
    assert_upstream(&idp_stack::get(&b, "/es/", &[("Authorization", &first)]).await);

    // The virtual key is named after a public claim: never a key to present.
    for dp in [&a, &b] {
        assert_error(
            &idp_stack::get(dp, "/tok/", &[("Authorization", &key)]).await,
            403,
            "Access to this API has been disallowed",
        );
    }

    // Revoked on the control plane: refused in both regions.
    let (status, body) = cp
        .call(Method::DELETE, &format!("/tyk/keys/{key}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deleted_at = now();
    for (dp, region) in [(&a, "A"), (&b, "B")] {
        let got = wait_for(
            dp,
            &format!("the revoked session refused at edge {region}"),
            &first,
            403,
        )
        .await;
        assert_error(&got, 403, "Key not authorized");
    }
    assert!(!listed(&cp, &hash).await, "a revoked session is not listed");
    let (status, _) = cp
        .call(Method::GET, &format!("/tyk/keys/{key}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A token issued after the revocation makes a new session.
    while now() <= deleted_at {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let [second, third]: [String; 2] = sign_all(vec![
        Job::hs256(
            TYK_SECRET,
            json!({"sub": sub, "iat": now(), "exp": now() + 600}),
        ),
        Job::hs256(
            TYK_SECRET,
            json!({"sub": sub, "iat": now(), "exp": now() + 900}),
        ),
    ])
    .await
    .try_into()
    .unwrap();
    assert_upstream(&idp_stack::get(&a, "/es/", &[("Authorization", &second)]).await);
    assert_upstream(&idp_stack::get(&b, "/es/", &[("Authorization", &second)]).await);
    eventually(
        Duration::from_secs(10),
        "the new session listed",
        || async { listed(&cp, &hash).await.then_some(()) },
    )
    .await;
    // The new session does not lift the revocation: the token issued before it stays refused,
    // at the edge that made the new session and in the other region.
    for dp in [&a, &b] {
        assert_error(
            &idp_stack::get(dp, "/es/", &[("Authorization", &first)]).await,
            403,
            "Key not authorized",
        );
    }

    // Edge A restarts from its state dir: the session is still listed and still works.
    a.stop();
    let a = Dp::start(&cp, edge_a(None, &state, &prefix))
        .await
        .expect("edge A restarts");
    a.wait_for_revision(3).await;
    assert_upstream(&idp_stack::get(&a, "/es/", &[("Authorization", &second)]).await);
    assert_upstream(&idp_stack::get(&a, "/es/", &[("Authorization", &third)]).await);
    assert!(listed(&cp, &hash).await, "still listed after the restart");
    assert_error(
        &idp_stack::get(&a, "/es/", &[("Authorization", &first)]).await,
        403,
        "Key not authorized",
    );
    let _ = std::fs::remove_dir_all(&state);
}

#[tokio::test]
async fn edge_session_policies_are_the_base_claim_then_the_mapped_scopes() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let dp = Dp::regional(&cp, "eu").await;
    let mut es = jwt_api(
        "es",
        &echo.url(),
        json!({"jwt_policy_field_name": "pol", "jwt_default_policies": [],
               "jwt_scope_to_policy_mapping": {"user:read": "p1", "user:write": "p2"}}),
    );
    es["org_id"] = json!(ORG);
    cp.create_api(&es).await;
    for id in ["base", "p1", "p2"] {
        let (status, body) = cp
            .call(
                Method::POST,
                "/tyk/policies",
                Some(&policy(id, &["es"], 0, 0)),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    dp.wait_for_revision(4).await;

    let sub = format!("user-{}", uuid::Uuid::new_v4().simple());
    let key = format!("{ORG}{}", md5_hex(&sub).await);
    let [both, read]: [String; 2] = sign_all(vec![
        Job::hs256(
            TYK_SECRET,
            json!({"sub": sub, "pol": "base", "scope": "user:read user:write", "exp": now() + 600}),
        ),
        Job::hs256(
            TYK_SECRET,
            json!({"sub": sub, "pol": "base", "scope": "user:read", "exp": now() + 600}),
        ),
    ])
    .await
    .try_into()
    .unwrap();
    let policies = |want: Value| {
        let (cp, key) = (&cp, &key);
        async move {
            eventually(
                Duration::from_secs(10),
                &format!("apply_policies {want}"),
                || async {
                    let (status, session) = cp
                        .call(Method::GET, &format!("/tyk/keys/{key}"), None)
                        .await;
                    (status == StatusCode::OK && session["apply_policies"] == want).then_some(())
                },
            )
            .await;
        }
    };
    assert_upstream(&idp_stack::get(&dp, "/es/", &[("Authorization", &both)]).await);
    policies(json!(["base", "p1", "p2"])).await;
    // Fewer scopes: the session is made again and reported with the new list.
    assert_upstream(&idp_stack::get(&dp, "/es/", &[("Authorization", &read)]).await);
    policies(json!(["base", "p1"])).await;
}
