//! OpenID Connect (`use_openid`) at the edge, against a real OpenID provider (panva's
//! `oidc-provider`, run by Node): ID tokens come from its authorization code flow, and the
//! gateway reads its discovery document and JWK set. Forged tokens are signed by PyJWT.

use std::time::Duration;

use base64::Engine;
use portcullis_tests::eventually;
use portcullis_tests::idp_stack::{Stack, api, assert_error, assert_upstream, bearer, policy};
use portcullis_tests::oidc_provider::{OidcProvider, parts};
use portcullis_tests::pyjwt::{Job, KeyDir, now, sign};
use reqwest::{Method, StatusCode};
use serde_json::json;

struct Oidc {
    s: Stack,
    op: OidcProvider,
}

/// An API trusting `op` for client-1 and client-short (policy p1); client-2 is not mapped.
async fn oidc() -> Oidc {
    let op = OidcProvider::start().await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut s = Stack::start().await;
    let t = s.target();
    s.create(
        &[api(
            "oid",
            &t,
            json!({"use_openid": true, "openid_options": {
                "providers": [{"issuer": op.issuer(),
                               "client_ids": {b64("client-1"): "p1", b64("client-short"): "p1"}}],
                "segregate_by_client": false}}),
        )],
        &[policy("p1", &["oid"], 0, 0)],
    )
    .await;
    Oidc { s, op }
}

impl Oidc {
    async fn call(&self, token: &str) -> (reqwest::StatusCode, serde_json::Value) {
        self.s
            .get("/oid/", &[("Authorization", &bearer(token))])
            .await
    }
}

#[tokio::test]
async fn oidc_id_token_of_a_known_client_is_accepted() {
    let o = oidc().await;
    let token = o.op.id_token("alice", "client-1").await;
    let (header, claims) = parts(&token);
    assert_eq!(header["alg"], "RS256", "{header}");
    assert_eq!(
        (
            claims["iss"].as_str(),
            claims["aud"].as_str(),
            claims["sub"].as_str()
        ),
        (
            Some(o.op.issuer().as_str()),
            Some("client-1"),
            Some("alice")
        ),
        "{claims}"
    );
    let seen = assert_upstream(&o.call(&token).await);
    assert_eq!(seen.path, "/");
}

#[tokio::test]
async fn oidc_unknown_client_is_401() {
    let o = oidc().await;
    let token = o.op.id_token("alice", "client-2").await;
    assert_eq!(parts(&token).1["aud"], "client-2");
    assert_error(&o.call(&token).await, 401, "Key not authorised");
}

#[tokio::test]
async fn oidc_wrong_issuer_is_401() {
    let o = oidc().await;
    // Another provider (another issuer), with a client the API maps for its own issuer.
    let other = OidcProvider::start().await;
    let token = other.id_token("alice", "client-1").await;
    assert_ne!(parts(&token).1["iss"], o.op.issuer().as_str());
    assert_error(&o.call(&token).await, 401, "Key not authorised");
}

#[tokio::test]
async fn oidc_expired_id_token_is_401() {
    let o = oidc().await;
    // client-short's ID tokens live one second.
    let token = o.op.id_token("alice", "client-short").await;
    let exp = parts(&token).1["exp"].as_i64().expect("exp");
    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_error(&o.call(&token).await, 401, "Key not authorised");
}

/// A token with the provider's issuer, client and `kid`, signed by someone else.
async fn forged(o: &Oidc, job: impl FnOnce(serde_json::Value) -> Job) -> String {
    let real = o.op.id_token("alice", "client-1").await;
    let (header, mut claims) = parts(&real);
    claims["sub"] = json!("mallory");
    claims["exp"] = json!(now() + 600);
    let kid = header["kid"].as_str().expect("kid").to_owned();
    // The provider's keys are in the gateway's cache once a real token has been checked.
    assert_upstream(&o.call(&real).await);
    sign(job(claims).kid(&kid)).await
}

#[tokio::test]
async fn oidc_token_signed_by_another_key_is_401() {
    let o = oidc().await;
    let keys = KeyDir::new();
    let other = keys.rsa("other").await;
    let token = forged(&o, |c| Job::signed("RS256", &other, c)).await;
    assert_error(&o.call(&token).await, 401, "Key not authorised");
}

#[tokio::test]
async fn oidc_hs256_id_token_is_401() {
    let o = oidc().await;
    let token = forged(&o, |c| Job::hs256(b"a-guessable-shared-secret", c)).await;
    assert_error(&o.call(&token).await, 401, "Key not authorised");
}

/// The sessions the control plane holds for organisation `org`.
async fn sessions_of(s: &Stack, org: &str) -> Vec<serde_json::Value> {
    let (status, body) = s.cp.call(Method::GET, "/tyk/keys", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut out = Vec::new();
    for hash in body["keys"].as_array().cloned().unwrap_or_default() {
        let hash = hash.as_str().expect("a key hash").to_owned();
        let (status, session) =
            s.cp.call(Method::GET, &format!("/tyk/keys/{hash}?hashed=true"), None)
                .await;
        if status == StatusCode::OK && session["org_id"] == org {
            out.push(session);
        }
    }
    out
}

#[tokio::test]
async fn oidc_segregate_by_client_gives_each_client_its_own_session() {
    let op = OidcProvider::start().await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut s = Stack::regional().await;
    let t = s.target();
    // Two APIs trusting one provider, client-1 → p1 and client-2 → p2; only `seg` segregates.
    // Each is its own organisation, so their sessions never meet.
    let oidc_api = |id: &str, org: &str, segregate: bool| {
        let mut def = api(
            id,
            &t,
            json!({"use_openid": true, "openid_options": {
                "providers": [{"issuer": op.issuer(),
                               "client_ids": {b64("client-1"): "p1", b64("client-2"): "p2"}}],
                "segregate_by_client": segregate}}),
        );
        def["org_id"] = json!(org);
        def
    };
    s.create(
        &[
            oidc_api("seg", "org-seg", true),
            oidc_api("shr", "org-shr", false),
        ],
        &[
            policy("p1", &["seg", "shr"], 2, 60),
            policy("p2", &["seg", "shr"], 2, 60),
        ],
    )
    .await;
    let sub = format!("alice-{}", uuid::Uuid::new_v4().simple());
    let (t1, t2) = (
        op.id_token(&sub, "client-1").await,
        op.id_token(&sub, "client-2").await,
    );
    let call = |path: &'static str, token: &str| {
        let auth = bearer(token);
        let s = &s;
        async move { s.get(path, &[("Authorization", &auth)]).await }
    };

    // Segregated: client-1 spends its two requests a minute; the same user through client-2
    // has a session (and a limit) of its own.
    for token in [&t1, &t1] {
        assert_upstream(&call("/seg/", token).await);
    }
    assert_error(&call("/seg/", &t1).await, 429, "Rate Limit Exceeded");
    for token in [&t2, &t2] {
        assert_upstream(&call("/seg/", token).await);
    }
    assert_error(&call("/seg/", &t2).await, 429, "Rate Limit Exceeded");

    // Not segregated: one session for the user whatever the client, so client-2 meets the
    // limit client-1 used up.
    for token in [&t1, &t1] {
        assert_upstream(&call("/shr/", token).await);
    }
    assert_error(&call("/shr/", &t2).await, 429, "Rate Limit Exceeded");

    // On the control plane: two sessions of the user in org-seg, each with its client's
    // policy; one in org-shr.
    let (seg, shr) = eventually(
        Duration::from_secs(10),
        "the edge sessions reported",
        || async {
            let seg = sessions_of(&s, "org-seg").await;
            let shr = sessions_of(&s, "org-shr").await;
            (seg.len() >= 2 && !shr.is_empty()).then_some((seg, shr))
        },
    )
    .await;
    let mut policies: Vec<String> = seg
        .iter()
        .map(|x| x["apply_policies"].to_string())
        .collect();
    policies.sort();
    assert_eq!(policies, [r#"["p1"]"#, r#"["p2"]"#], "{seg:?}");
    assert_eq!(shr.len(), 1, "{shr:?}");
    for session in seg.iter().chain(&shr) {
        assert_eq!(session["alias"], sub.as_str(), "{session}");
    }
}
