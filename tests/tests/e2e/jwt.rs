//! JWT (`enable_jwt`) at the edge, with tokens signed by PyJWT and by the `openssl` command
//! line (`openssl_jwt.rs`): Tyk's statuses and messages, signing methods and sources (secret,
//! PEM, JWK set, per-key secret), time claims and skews, identity and policy claims, scopes
//! mapped to policies, policies and APIs written in either order, and where the token is read.

use std::time::Duration;

use base64::Engine;
use portcullis_tests::eventually;
use portcullis_tests::idp_server::IdpServer;
use portcullis_tests::idp_stack::{Stack, api, assert_error, assert_upstream, bearer, policy};
use portcullis_tests::openssl_jwt::{self, Signer};
use portcullis_tests::pyjwt::{self, Job, KeyDir, now, sign, sign_all, source};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Tyk's documented HMAC secret.
pub const TYK_SECRET: &[u8] = b"9879879878787878";

/// A JWT API at `/{id}/` whose tokens get policy `p1` by default, with `fields` merged in.
pub fn jwt_api(id: &str, target: &str, fields: Value) -> Value {
    let mut a = api(
        id,
        target,
        json!({"enable_jwt": true, "jwt_signing_method": "hmac", "jwt_source": source(TYK_SECRET),
               "jwt_default_policies": ["p1"], "auth": {"auth_header_name": "Authorization"}}),
    );
    if let (Some(a), Some(fields)) = (a.as_object_mut(), fields.as_object()) {
        for (k, v) in fields {
            a.insert(k.clone(), v.clone());
        }
    }
    a
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iat": now() - 5, "exp": now() + 600})
}

/// One HMAC API `hs` with policy `p1`.
async fn hmac_stack() -> Stack {
    let mut s = Stack::start().await;
    let target = s.target();
    s.create(
        &[jwt_api("hs", &target, json!({}))],
        &[policy("p1", &["hs"], 0, 0)],
    )
    .await;
    s
}

#[tokio::test]
async fn jwt_hs256_with_tyks_secret_reaches_the_upstream() {
    let s = hmac_stack().await;
    let token = sign(Job::hs256(TYK_SECRET, claims("user1"))).await;
    let got = s.get("/hs/x?a=1", &[("Authorization", &token)]).await;
    let seen = assert_upstream(&got);
    assert_eq!(
        (seen.path.as_str(), seen.query.as_deref()),
        ("/x", Some("a=1"))
    );
    let got = s.get("/hs/y", &[("Authorization", &bearer(&token))]).await;
    assert_eq!(assert_upstream(&got).path, "/y", "Bearer prefix accepted");
}

#[tokio::test]
async fn jwt_missing_token_is_400() {
    let s = hmac_stack().await;
    assert_error(
        &s.get("/hs/x", &[]).await,
        400,
        "Authorization field missing",
    );
}

#[tokio::test]
async fn jwt_garbage_appended_is_403() {
    let s = hmac_stack().await;
    let token = sign(Job::hs256(TYK_SECRET, claims("user1"))).await;
    assert_upstream(&s.get("/hs/x", &[("Authorization", &token)]).await);
    let tampered = format!("{token}garbage");
    assert_error(
        &s.get("/hs/x", &[("Authorization", &tampered)]).await,
        403,
        "Key not authorized",
    );
}

#[tokio::test]
async fn jwt_bearer_with_a_colon_is_403() {
    let s = hmac_stack().await;
    let token = sign(Job::hs256(TYK_SECRET, claims("user1"))).await;
    assert_error(
        &s.get("/hs/x", &[("Authorization", &format!("Bearer: {token}"))])
            .await,
        403,
        "Key not authorized",
    );
}

#[tokio::test]
async fn jwt_rs256_and_es256_with_pem_sources_are_accepted() {
    let keys = KeyDir::new();
    let (rsa, ec) = (keys.rsa("rsa").await, keys.ec("ec").await);
    let mut s = Stack::start().await;
    let t = s.target();
    s.create(
        &[
            jwt_api("rs", &t, json!({"jwt_signing_method": "rsa", "jwt_source": source(rsa.public_pem.as_bytes())})),
            jwt_api("es", &t, json!({"jwt_signing_method": "ecdsa", "jwt_source": source(ec.public_pem.as_bytes())})),
        ],
        &[policy("p1", &["rs", "es"], 0, 0)],
    )
    .await;
    let tokens = sign_all(vec![
        Job::signed("RS256", &rsa, claims("u1")),
        Job::signed("ES256", &ec, claims("u1")),
        Job::signed("ES256", &keys.ec("other").await, claims("u1")),
    ])
    .await;
    assert_upstream(&s.get("/rs/", &[("Authorization", &tokens[0])]).await);
    assert_upstream(&s.get("/es/", &[("Authorization", &tokens[1])]).await);
    assert_error(
        &s.get("/es/", &[("Authorization", &tokens[2])]).await,
        403,
        "Key not authorized",
    );
}

#[tokio::test]
async fn jwt_rs256_token_on_an_hmac_api_is_an_unexpected_signing_method() {
    let keys = KeyDir::new();
    let rsa = keys.rsa("rsa").await;
    let s = hmac_stack().await;
    let token = sign(Job::signed("RS256", &rsa, claims("u1"))).await;
    assert_error(
        &s.get("/hs/", &[("Authorization", &token)]).await,
        403,
        "Key not authorized: Unexpected signing method",
    );
}

#[tokio::test]
async fn jwt_alg_none_is_an_unexpected_signing_method() {
    let s = hmac_stack().await;
    let token = sign(Job::unsigned(claims("u1"))).await;
    assert!(token.ends_with('.'), "an unsigned token: {token}");
    assert_error(
        &s.get("/hs/", &[("Authorization", &token)]).await,
        403,
        "Key not authorized: Unexpected signing method",
    );
}

#[tokio::test]
async fn jwt_hs256_keyed_with_the_rsa_public_key_is_refused() {
    let keys = KeyDir::new();
    let rsa = keys.rsa("rsa").await;
    let mut s = Stack::start().await;
    let t = s.target();
    s.create(
        &[jwt_api(
            "rs",
            &t,
            json!({"jwt_signing_method": "rsa", "jwt_source": source(rsa.public_pem.as_bytes())}),
        )],
        &[policy("p1", &["rs"], 0, 0)],
    )
    .await;
    let [good, forged]: [String; 2] = sign_all(vec![
        Job::signed("RS256", &rsa, claims("u1")),
        Job::forged_hs256(rsa.public_pem.as_bytes(), claims("u1")),
    ])
    .await
    .try_into()
    .unwrap();
    assert_upstream(&s.get("/rs/", &[("Authorization", &good)]).await);
    assert_error(
        &s.get("/rs/", &[("Authorization", &forged)]).await,
        403,
        "Key not authorized: Unexpected signing method",
    );
}

async fn refused_source(def: Value) {
    let s = Stack::start().await;
    let (status, body) = s.cp.call(Method::POST, "/tyk/apis", Some(&def)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "jwt_source", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("jwt_source"),
        "{body}"
    );
    let (status, _) = s.cp.call(Method::GET, "/tyk/apis/bad", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing stored");
}

#[tokio::test]
async fn jwt_the_control_plane_refuses_a_public_key_as_an_hmac_source() {
    let keys = KeyDir::new();
    let rsa = keys.rsa("rsa").await;
    refused_source(jwt_api(
        "bad",
        "http://127.0.0.1:9",
        json!({"jwt_signing_method": "hmac", "jwt_source": source(rsa.public_pem.as_bytes())}),
    ))
    .await;
}

#[tokio::test]
async fn jwt_the_control_plane_refuses_a_source_neither_base64_nor_url() {
    refused_source(jwt_api(
        "bad",
        "http://127.0.0.1:9",
        json!({"jwt_source": "not base64, not a URL!"}),
    ))
    .await;
}

#[tokio::test]
async fn jwt_expired_one_second_ago_is_401() {
    let s = hmac_stack().await;
    let t = now();
    let token = sign(Job::hs256(TYK_SECRET, json!({"sub": "u1", "exp": t - 1}))).await;
    assert_error(
        &s.get("/hs/", &[("Authorization", &token)]).await,
        401,
        "Key not authorized: token has expired",
    );
}

#[tokio::test]
async fn jwt_expiry_skew_of_two_accepts_a_token_one_second_past() {
    let mut s = Stack::start().await;
    let t = s.target();
    s.create(
        &[jwt_api(
            "hs",
            &t,
            json!({"jwt_expires_at_validation_skew": 2}),
        )],
        &[policy("p1", &["hs"], 0, 0)],
    )
    .await;
    // exp one second before the second the request is served in; a run that crosses a
    // second boundary proves nothing and is repeated.
    for _ in 0..5 {
        let t = now();
        let token = sign(Job::hs256(TYK_SECRET, json!({"sub": "u1", "exp": t - 1}))).await;
        let got = s.get("/hs/", &[("Authorization", &token)]).await;
        if now() == t {
            assert_upstream(&got);
            return;
        }
    }
    panic!("never served a request within one second");
}

#[tokio::test]
async fn jwt_issued_in_the_future_is_401() {
    let s = hmac_stack().await;
    let token = sign(Job::hs256(
        TYK_SECRET,
        json!({"sub": "u1", "iat": now() + 60}),
    ))
    .await;
    assert_error(
        &s.get("/hs/", &[("Authorization", &token)]).await,
        401,
        "Key not authorized: token used before issued",
    );
}

#[tokio::test]
async fn jwt_not_yet_valid_is_401() {
    let s = hmac_stack().await;
    let token = sign(Job::hs256(
        TYK_SECRET,
        json!({"sub": "u1", "nbf": now() + 60}),
    ))
    .await;
    assert_error(
        &s.get("/hs/", &[("Authorization", &token)]).await,
        401,
        "Key not authorized: token is not valid yet",
    );
}

#[tokio::test]
async fn jwt_without_an_identity_claim_is_403() {
    let s = hmac_stack().await;
    let token = sign(Job::hs256(
        TYK_SECRET,
        json!({"name": "nobody", "exp": now() + 60}),
    ))
    .await;
    assert_error(
        &s.get("/hs/", &[("Authorization", &token)]).await,
        403,
        "no suitable claims for user ID were found",
    );
}

#[tokio::test]
async fn jwt_with_an_empty_sub_is_403() {
    let s = hmac_stack().await;
    let token = sign(Job::hs256(
        TYK_SECRET,
        json!({"sub": "", "exp": now() + 60}),
    ))
    .await;
    assert_error(
        &s.get("/hs/", &[("Authorization", &token)]).await,
        403,
        "found an empty user ID in sub claim",
    );
}

/// An API that reads identity from `user_id` and policies from `pol`, without defaults.
async fn claims_stack(fields: Value) -> Stack {
    let mut s = Stack::start().await;
    let t = s.target();
    let mut f = json!({"jwt_identity_base_field": "user_id", "jwt_policy_field_name": "pol",
                       "jwt_default_policies": []});
    for (k, v) in fields.as_object().cloned().unwrap_or_default() {
        f[k] = v;
    }
    s.create(&[jwt_api("hs", &t, f)], &[policy("p1", &["hs"], 0, 0)])
        .await;
    s
}

#[tokio::test]
async fn jwt_identity_and_policy_claims_give_the_session() {
    let s = claims_stack(json!({})).await;
    let token = sign(Job::hs256(
        TYK_SECRET,
        json!({"user_id": "u-base", "pol": "p1", "exp": now() + 60}),
    ))
    .await;
    assert_upstream(&s.get("/hs/", &[("Authorization", &token)]).await);
}

#[tokio::test]
async fn jwt_with_an_empty_policy_claim_is_403() {
    let s = claims_stack(json!({})).await;
    let token = sign(Job::hs256(
        TYK_SECRET,
        json!({"user_id": "u1", "pol": "", "exp": now() + 60}),
    ))
    .await;
    assert_error(
        &s.get("/hs/", &[("Authorization", &token)]).await,
        403,
        "key not authorized: no matching policy",
    );
}

#[tokio::test]
async fn jwt_without_a_policy_claim_or_defaults_is_403() {
    let s = claims_stack(json!({})).await;
    let token = sign(Job::hs256(
        TYK_SECRET,
        json!({"user_id": "u1", "exp": now() + 60}),
    ))
    .await;
    assert_error(
        &s.get("/hs/", &[("Authorization", &token)]).await,
        403,
        "key not authorized: no matching policy found",
    );
}

#[tokio::test]
async fn jwt_with_no_mapped_scope_is_403() {
    let s = claims_stack(
        json!({"jwt_scope_to_policy_mapping": {"read": "p1"}, "jwt_scope_claim_name": "perms"}),
    )
    .await;
    let token = sign(Job::hs256(
        TYK_SECRET,
        json!({"user_id": "u1", "perms": "admin delete", "exp": now() + 60}),
    ))
    .await;
    assert_error(
        &s.get("/hs/", &[("Authorization", &token)]).await,
        403,
        "key not authorized: no matching policy found in scope claim",
    );
}

/// An API whose scopes map to p1 (2 per minute) and p2 (100 per minute), on a gateway that
/// counts rates in Redis.
async fn scoped_stack(mapping: Value) -> Stack {
    let mut s = Stack::regional().await;
    let t = s.target();
    let mut def = jwt_api("hs", &t, json!({"jwt_default_policies": []}));
    for (k, v) in mapping.as_object().cloned().unwrap_or_default() {
        def[k] = v;
    }
    s.create(
        &[def],
        &[policy("p1", &["hs"], 2, 60), policy("p2", &["hs"], 100, 60)],
    )
    .await;
    s
}

async fn three_requests(s: &Stack, token: &str) -> Vec<(StatusCode, Value)> {
    let mut out = Vec::new();
    for _ in 0..3 {
        out.push(s.get("/hs/", &[("Authorization", token)]).await);
    }
    out
}

async fn scopes_change_the_rate_limit(s: &Stack, read: Value, write: Value) {
    let sub = format!("scoped-{}", uuid::Uuid::new_v4().simple());
    let [read, write]: [String; 2] = sign_all(vec![
        Job::hs256(
            TYK_SECRET,
            json!({"sub": sub, "scope": read, "exp": now() + 600}),
        ),
        Job::hs256(
            TYK_SECRET,
            json!({"sub": sub, "scope": write, "exp": now() + 600}),
        ),
    ])
    .await
    .try_into()
    .unwrap();
    let got = three_requests(s, &read).await;
    assert_upstream(&got[0]);
    assert_upstream(&got[1]);
    assert_error(&got[2], 429, "Rate Limit Exceeded");
    // Same identity, other scopes: the session is made again with the write policy.
    for got in three_requests(s, &write).await {
        assert_upstream(&got);
    }
}

#[tokio::test]
async fn jwt_scopes_mapped_to_policies_change_the_rate_limit() {
    let s = scoped_stack(json!({"scopes": {"jwt": {"scope_claim_name": "scope", "scope_to_policy": {"read": "p1", "write": "p2"}}}})).await;
    scopes_change_the_rate_limit(&s, json!("read"), json!("write")).await;
}

#[tokio::test]
async fn jwt_array_scope_claim_maps_policies() {
    let s = scoped_stack(json!({"jwt_scope_to_policy_mapping": {"read": "p1", "write": "p2"}, "jwt_scope_claim_name": "scope"})).await;
    scopes_change_the_rate_limit(&s, json!(["read"]), json!(["other", "write"])).await;
}

/// A JWT API checked against the JWK set of `idp`; `base64_url` gives the URL base64-encoded.
async fn jwks_stack(idp: &IdpServer, base64_url: bool) -> Stack {
    let mut s = Stack::start().await;
    let t = s.target();
    let url = idp.jwks_url();
    let src = if base64_url {
        source(url.as_bytes())
    } else {
        url
    };
    s.create(
        &[jwt_api(
            "jw",
            &t,
            json!({"jwt_signing_method": "rsa", "jwt_source": src}),
        )],
        &[policy("p1", &["jw"], 0, 0)],
    )
    .await;
    s
}

/// A fresh token (its own `jti`, so no verified-token cache answers for it).
fn fresh(key: &pyjwt::KeyPair, kid: &str) -> Job {
    Job::signed(
        "RS256",
        key,
        json!({"sub": "u1", "exp": now() + 600, "jti": uuid::Uuid::new_v4().to_string()}),
    )
    .kid(kid)
}

async fn flush(s: &Stack, path: &str) {
    let before = s.dp.revision();
    let (status, body) = s.cp.call(Method::DELETE, path, None).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"status": "ok", "message": "cache invalidated"})
        ),
        "{path}"
    );
    s.dp.wait_for_revision(before + 1).await;
}

#[tokio::test]
async fn jwt_jwks_rotation_refetches_on_an_unknown_kid_and_flushes() {
    let keys = KeyDir::new();
    let (k1, k2) = (keys.rsa("k1").await, keys.rsa("k2").await);
    let idp = IdpServer::start().await;
    idp.set_jwks(pyjwt::jwks(&[(&k1, "k1")]).await).await;
    let s = jwks_stack(&idp, true).await;
    let tokens = sign_all(vec![
        fresh(&k1, "k1"),
        fresh(&k2, "k2"),
        fresh(&k2, "k9"),
        fresh(&k2, "k8"),
        fresh(&k1, "k1"),
        fresh(&k1, "k1"),
    ])
    .await;
    assert_upstream(&s.get("/jw/", &[("Authorization", &tokens[0])]).await);
    assert_eq!(idp.count("/jwks").await, 1);

    // The provider rotates. A refetch for an unknown kid waits for the gateway's refetch
    // interval (10 s) since the last fetch; past it, the new kid works at its first request.
    idp.set_jwks(pyjwt::jwks(&[(&k1, "k1"), (&k2, "k2")]).await)
        .await;
    tokio::time::sleep(Duration::from_millis(10_300)).await;
    assert_upstream(&s.get("/jw/", &[("Authorization", &tokens[1])]).await);
    let after_rotation = idp.count("/jwks").await;
    assert_eq!(after_rotation, 2, "one refetch for the new kid");

    // Unknown kids in quick succession: at most one more fetch.
    for t in &tokens[2..4] {
        assert_error(
            &s.get("/jw/", &[("Authorization", t)]).await,
            403,
            "Key not authorized",
        );
    }
    assert!(
        idp.count("/jwks").await <= after_rotation + 1,
        "unknown kids must not each refetch: {} fetches",
        idp.count("/jwks").await
    );

    // A flush makes the next token fetch the set again.
    let before = idp.count("/jwks").await;
    flush(&s, "/tyk/cache/jwks/jw").await;
    assert_upstream(&s.get("/jw/", &[("Authorization", &tokens[4])]).await);
    assert_eq!(
        idp.count("/jwks").await,
        before + 1,
        "fetched after the API's flush"
    );
    flush(&s, "/tyk/cache/jwks").await;
    assert_upstream(&s.get("/jw/", &[("Authorization", &tokens[5])]).await);
    assert_eq!(
        idp.count("/jwks").await,
        before + 2,
        "fetched after the global flush"
    );
}

#[tokio::test]
async fn jwt_jwks_provider_down_keeps_the_cached_set() {
    let keys = KeyDir::new();
    let k1 = keys.rsa("k1").await;
    let mut idp = IdpServer::start().await;
    idp.set_jwks(pyjwt::jwks(&[(&k1, "k1")]).await).await;
    let s = jwks_stack(&idp, false).await;
    let tokens = sign_all(vec![fresh(&k1, "k1"), fresh(&k1, "k1"), fresh(&k1, "k7")]).await;
    assert_upstream(&s.get("/jw/", &[("Authorization", &tokens[0])]).await);
    idp.stop();
    assert_upstream(&s.get("/jw/", &[("Authorization", &tokens[1])]).await);
    // An unknown kid while the provider is down is refused, not an error page.
    assert_error(
        &s.get("/jw/", &[("Authorization", &tokens[2])]).await,
        403,
        "Key not authorized",
    );
}

async fn per_key_stack() -> (Stack, String) {
    let mut s = Stack::start().await;
    let t = s.target();
    s.create(
        &[jwt_api(
            "pk",
            &t,
            json!({"jwt_source": "", "jwt_default_policies": []}),
        )],
        &[],
    )
    .await;
    let name = format!("jwtkey{}", uuid::Uuid::new_v4().simple());
    let (status, body) =
        s.cp.call(
            Method::POST,
            &format!("/tyk/keys/{name}"),
            Some(&json!({"jwt_data": {"secret": "per-key-secret-0123"},
                         "access_rights": {"pk": {"api_id": "pk", "versions": ["Default"]}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (s, name)
}

#[tokio::test]
async fn jwt_per_key_secret_verifies_a_token_naming_the_key() {
    let (s, name) = per_key_stack().await;
    let token = sign(Job::hs256(b"per-key-secret-0123", claims("u1")).kid(&name)).await;
    let got = eventually(
        Duration::from_secs(10),
        "the key reaches the edge",
        || async {
            let got = s.get("/pk/", &[("Authorization", &token)]).await;
            (got.0 == StatusCode::OK).then_some(got)
        },
    )
    .await;
    assert_upstream(&got);
}

#[tokio::test]
async fn jwt_per_key_wrong_secret_is_403() {
    let (s, name) = per_key_stack().await;
    let [good, bad]: [String; 2] = sign_all(vec![
        Job::hs256(b"per-key-secret-0123", claims("u1")).kid(&name),
        Job::hs256(b"another-secret-0123", claims("u1")).kid(&name),
    ])
    .await
    .try_into()
    .unwrap();
    eventually(
        Duration::from_secs(10),
        "the key reaches the edge",
        || async {
            (s.get("/pk/", &[("Authorization", &good)]).await.0 == StatusCode::OK).then_some(())
        },
    )
    .await;
    assert_error(
        &s.get("/pk/", &[("Authorization", &bad)]).await,
        403,
        "Key not authorized",
    );
}

async fn sources_stack() -> Stack {
    let mut s = Stack::start().await;
    let t = s.target();
    s.create(
        &[jwt_api(
            "src",
            &t,
            json!({"auth_configs": {"jwt": {"auth_header_name": "X-Jwt", "use_param": true, "param_name": "jwt", "use_cookie": true, "cookie_name": "jwtc"}}}),
        )],
        &[policy("p1", &["src"], 0, 0)],
    )
    .await;
    s
}

#[tokio::test]
async fn jwt_token_from_a_query_parameter() {
    let s = sources_stack().await;
    let token = sign(Job::hs256(TYK_SECRET, claims("u1"))).await;
    assert_upstream(&s.get(&format!("/src/x?jwt={token}"), &[]).await);
    assert_error(
        &s.get("/src/x?other=1", &[]).await,
        400,
        "Authorization field missing",
    );
}

#[tokio::test]
async fn jwt_token_from_a_cookie() {
    let s = sources_stack().await;
    let token = sign(Job::hs256(TYK_SECRET, claims("u1"))).await;
    assert_upstream(
        &s.get("/src/x", &[("Cookie", &format!("a=b; jwtc={token}"))])
            .await,
    );
    assert_upstream(&s.get("/src/x", &[("X-Jwt", &token)]).await);
}

#[tokio::test]
async fn jwt_hmac_source_is_sealed_at_rest() {
    let secret = format!("jwt-secret-{}", uuid::Uuid::new_v4().simple());
    let mut s = Stack::start().await;
    let t = s.target();
    s.create(
        &[jwt_api(
            "hs",
            &t,
            json!({"jwt_source": source(secret.as_bytes())}),
        )],
        &[policy("p1", &["hs"], 0, 0)],
    )
    .await;
    let (status, def) = s.cp.call(Method::GET, "/tyk/apis/hs", None).await;
    assert_eq!(status, StatusCode::OK);
    let stored = def["jwt_source"].as_str().unwrap_or_default();
    assert!(stored.starts_with("sealed:v1:"), "{def}");
    // The edge opens it: tokens signed with the secret work.
    let token = sign(Job::hs256(secret.as_bytes(), claims("u1"))).await;
    assert_upstream(&s.get("/hs/", &[("Authorization", &token)]).await);
    // What GET returned can be PUT back: the sealed value is kept and still opens.
    let before = s.dp.revision();
    let (status, body) = s.cp.call(Method::PUT, "/tyk/apis/hs", Some(&def)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    s.dp.wait_for_revision(before + 1).await;
    let (_, again) = s.cp.call(Method::GET, "/tyk/apis/hs", None).await;
    assert!(
        again["jwt_source"]
            .as_str()
            .unwrap_or_default()
            .starts_with("sealed:v1:"),
        "{again}"
    );
    let token = sign(Job::hs256(secret.as_bytes(), claims("u2"))).await;
    assert_upstream(&s.get("/hs/", &[("Authorization", &token)]).await);
    assert_nowhere_in_the_database(&s, &[secret.as_bytes()]).await;
}

/// Fails when any of `secrets` (raw or base64) is in the stored definitions or change log.
pub async fn assert_nowhere_in_the_database(s: &Stack, secrets: &[&[u8]]) {
    let pool = s.db.pool().await;
    let mut rows: Vec<String> = sqlx::query_scalar("SELECT definition::text FROM apis")
        .fetch_all(&pool)
        .await
        .unwrap();
    rows.extend(
        sqlx::query_scalar::<_, String>("SELECT COALESCE(body::text, '') FROM change_log")
            .fetch_all(&pool)
            .await
            .unwrap(),
    );
    assert!(!rows.is_empty());
    for secret in secrets {
        for form in [secret.to_vec(), source(secret).into_bytes()] {
            let form = String::from_utf8_lossy(&form).into_owned();
            for row in &rows {
                assert!(!row.contains(&form), "a secret in plaintext at rest: {row}");
            }
        }
    }
}

#[tokio::test]
async fn jwt_jwks_rotation_to_a_new_key_only_retires_the_old_kid() {
    let keys = KeyDir::new();
    let (k1, k2) = (keys.rsa("k1").await, keys.rsa("k2").await);
    let idp = IdpServer::start().await;
    idp.set_jwks(pyjwt::jwks(&[(&k1, "k1")]).await).await;
    let s = jwks_stack(&idp, false).await;
    let tokens = sign_all(vec![fresh(&k1, "k1"), fresh(&k2, "k2"), fresh(&k1, "k1")]).await;
    assert_upstream(&s.get("/jw/", &[("Authorization", &tokens[0])]).await);
    idp.set_jwks(pyjwt::jwks(&[(&k2, "k2")]).await).await;
    tokio::time::sleep(Duration::from_millis(10_300)).await;
    assert_upstream(&s.get("/jw/", &[("Authorization", &tokens[1])]).await);
    assert_eq!(idp.count("/jwks").await, 2);
    // A token of the withdrawn key, never seen before, no longer verifies.
    assert_error(
        &s.get("/jw/", &[("Authorization", &tokens[2])]).await,
        403,
        "Key not authorized",
    );
}

#[tokio::test]
async fn jwt_empty_predefined_base_claim_is_403() {
    // The identity claim is present but empty: refused, even though `sub` would do.
    let s = claims_stack(json!({"jwt_default_policies": ["p1"]})).await;
    let [empty, good]: [String; 2] = sign_all(vec![
        Job::hs256(
            TYK_SECRET,
            json!({"user_id": "", "sub": "u1", "exp": now() + 60}),
        ),
        Job::hs256(
            TYK_SECRET,
            json!({"user_id": "u1", "sub": "u1", "exp": now() + 60}),
        ),
    ])
    .await
    .try_into()
    .unwrap();
    assert_upstream(&s.get("/hs/", &[("Authorization", &good)]).await);
    assert_error(
        &s.get("/hs/", &[("Authorization", &empty)]).await,
        403,
        "found an empty user ID in predefined base claim",
    );
}

#[tokio::test]
async fn jwt_one_to_one_token_without_kid_or_identity_is_403() {
    // Tyk answers 404 here (one-to-one mode); Portcullis keeps the 403 of the other mode.
    let (s, _name) = per_key_stack().await;
    let token = sign(Job::hs256(
        b"per-key-secret-0123",
        json!({"name": "nobody", "exp": now() + 60}),
    ))
    .await;
    assert_error(
        &s.get("/pk/", &[("Authorization", &token)]).await,
        403,
        "no suitable claims for user ID were found",
    );
}

async fn create_policy(s: &mut Stack, p: &Value) {
    let (status, body) = s.cp.call(Method::POST, "/tyk/policies", Some(p)).await;
    assert_eq!(status, StatusCode::OK, "create policy: {body}");
    s.revisions += 1;
    s.dp.wait_for_revision(s.revisions).await;
}

async fn create_api(s: &mut Stack, def: &Value) {
    s.cp.create_api(def).await;
    s.revisions += 1;
    s.dp.wait_for_revision(s.revisions).await;
}

#[tokio::test]
async fn jwt_policy_written_before_its_api_grants_it_once_the_api_exists() {
    let mut s = Stack::start().await;
    let t = s.target();
    // The policy names `late`, which does not exist yet.
    create_policy(&mut s, &policy("p-early", &["late"], 0, 0)).await;
    let (status, stored) = s.cp.call(Method::GET, "/tyk/policies/p-early", None).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert!(
        stored["access_rights"]["late"].is_object(),
        "the right for the missing API is kept: {stored}"
    );
    create_api(
        &mut s,
        &jwt_api("late", &t, json!({"jwt_default_policies": ["p-early"]})),
    )
    .await;
    let token = sign(Job::hs256(TYK_SECRET, claims("u1"))).await;
    let seen = assert_upstream(&s.get("/late/x", &[("Authorization", &token)]).await);
    assert_eq!(seen.path, "/x");
}

#[tokio::test]
async fn jwt_api_naming_a_policy_written_later_works_once_it_exists() {
    let mut s = Stack::start().await;
    let t = s.target();
    create_api(
        &mut s,
        &jwt_api("early", &t, json!({"jwt_default_policies": ["p-later"]})),
    )
    .await;
    let token = sign(Job::hs256(TYK_SECRET, claims("u1"))).await;
    // The token is good but its policy does not exist yet.
    assert_error(
        &s.get("/early/", &[("Authorization", &token)]).await,
        403,
        "Access to this API has been disallowed",
    );
    create_policy(&mut s, &policy("p-later", &["early"], 0, 0)).await;
    // The same token, the same session: the policy applies as soon as the edge has it.
    assert_upstream(&s.get("/early/", &[("Authorization", &token)]).await);
}

#[tokio::test]
async fn jwt_scopes_mapped_only_to_missing_policies_are_disallowed() {
    // Tyk: "could not apply several policies"; here the policies are applied per request and a
    // set with no existing policy is refused like any session without rights.
    let s = claims_stack(json!({
        "jwt_scope_to_policy_mapping": {"read": "ghost-1", "write": "ghost-2", "ok": "p1"},
        "jwt_scope_claim_name": "scope"}))
    .await;
    let [ghosts, mixed]: [String; 2] = sign_all(vec![
        Job::hs256(
            TYK_SECRET,
            json!({"user_id": "u1", "scope": "read write", "exp": now() + 60}),
        ),
        Job::hs256(
            TYK_SECRET,
            json!({"user_id": "u2", "scope": "read ok", "exp": now() + 60}),
        ),
    ])
    .await
    .try_into()
    .unwrap();
    assert_error(
        &s.get("/hs/", &[("Authorization", &ghosts)]).await,
        403,
        "Access to this API has been disallowed",
    );
    // Among several policies a missing one is skipped (as Tyk's ApplyPolicies does).
    assert_upstream(&s.get("/hs/", &[("Authorization", &mixed)]).await);
}

/// The claims every openssl-signed token carries: `sub` is `u1`, so changing its last
/// character to `0` is a one-bit change of the payload that keeps it valid JSON.
fn openssl_claims() -> Value {
    json!({"sub": "u1", "iat": now() - 5, "exp": now() + 600,
           "jti": uuid::Uuid::new_v4().to_string()})
}

/// The token with `"sub":"u1"` turned into `"sub":"u0"` (bit 0 of one payload byte), the
/// signature left as it was.
fn payload_bit_flipped(token: &str) -> String {
    let payload = token.split('.').nth(1).expect("a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    let at = bytes
        .windows(10)
        .position(|w| w == b"\"sub\":\"u1\"")
        .expect("the sub claim")
        + 8;
    let altered = openssl_jwt::flip_bit(token, 1, at, 7);
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(altered.split('.').nth(1).expect("a payload"))
        .expect("base64url");
    let claims: Value = serde_json::from_slice(&decoded).expect("still JSON");
    assert_eq!(claims["sub"], "u0", "one bit changed the subject");
    altered
}

/// `token` is accepted at `path`; the same token with one bit of its signature flipped, or
/// one bit of its payload, is refused.
async fn openssl_token_accepted_and_one_bit_off_refused(s: &Stack, path: &str, token: &str) {
    let (header, _) = portcullis_tests::oidc_provider::parts(token);
    assert_eq!(header["typ"], "JWT", "{header}");
    assert_upstream(&s.get(path, &[("Authorization", token)]).await);
    let bad_sig = openssl_jwt::flip_bit(token, 2, 0, 0);
    assert_ne!(bad_sig, token);
    assert_error(
        &s.get(path, &[("Authorization", &bad_sig)]).await,
        403,
        "Key not authorized",
    );
    assert_error(
        &s.get(path, &[("Authorization", &payload_bit_flipped(token))])
            .await,
        403,
        "Key not authorized",
    );
    // The good token still works after the refusals.
    assert_upstream(&s.get(path, &[("Authorization", &bearer(token))]).await);
}

#[tokio::test]
async fn jwt_hs256_signed_by_the_openssl_cli_is_accepted_and_one_bit_off_refused() {
    let s = hmac_stack().await;
    let token = openssl_jwt::sign(Signer::Hs256(TYK_SECRET.to_vec()), openssl_claims()).await;
    assert_eq!(
        portcullis_tests::oidc_provider::parts(&token).0["alg"],
        "HS256"
    );
    openssl_token_accepted_and_one_bit_off_refused(&s, "/hs/", &token).await;
}

/// APIs `rs` (RSA PEM source) and `es` (EC PEM source) with policy p1.
async fn pem_stack(rsa: &pyjwt::KeyPair, ec: &pyjwt::KeyPair) -> Stack {
    let mut s = Stack::start().await;
    let t = s.target();
    s.create(
        &[
            jwt_api("rs", &t, json!({"jwt_signing_method": "rsa", "jwt_source": source(rsa.public_pem.as_bytes())})),
            jwt_api("es", &t, json!({"jwt_signing_method": "ecdsa", "jwt_source": source(ec.public_pem.as_bytes())})),
        ],
        &[policy("p1", &["rs", "es"], 0, 0)],
    )
    .await;
    s
}

#[tokio::test]
async fn jwt_rs256_signed_by_the_openssl_cli_is_accepted_and_one_bit_off_refused() {
    let keys = KeyDir::new();
    let (rsa, ec) = (keys.rsa("rsa").await, keys.ec("ec").await);
    let s = pem_stack(&rsa, &ec).await;
    let token = openssl_jwt::sign(Signer::Rs256(rsa.private.clone()), openssl_claims()).await;
    assert_eq!(
        portcullis_tests::oidc_provider::parts(&token).0["alg"],
        "RS256"
    );
    openssl_token_accepted_and_one_bit_off_refused(&s, "/rs/", &token).await;
}

#[tokio::test]
async fn jwt_es256_signed_by_the_openssl_cli_is_accepted_and_one_bit_off_refused() {
    let keys = KeyDir::new();
    let (rsa, ec) = (keys.rsa("rsa").await, keys.ec("ec").await);
    let s = pem_stack(&rsa, &ec).await;
    let token = openssl_jwt::sign(Signer::Es256(ec.private.clone()), openssl_claims()).await;
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').nth(2).expect("a signature"))
        .expect("base64url");
    assert_eq!(sig.len(), 64, "JOSE's raw r || s, not DER");
    openssl_token_accepted_and_one_bit_off_refused(&s, "/es/", &token).await;
    // The DER signature openssl wrote, sent as it is, is not a JWS signature.
    let input = token.rsplit_once('.').expect("three parts").0.to_owned();
    let private = ec.private.clone();
    let der = tokio::task::spawn_blocking(move || {
        let sig = openssl_jwt::der_signature(&private, input.as_bytes());
        assert_eq!(sig[0], 0x30, "a DER SEQUENCE");
        format!("{input}.{}", openssl_jwt::b64url(&sig))
    })
    .await
    .expect("openssl task");
    assert_error(
        &s.get("/es/", &[("Authorization", &der)]).await,
        403,
        "Key not authorized",
    );
}
