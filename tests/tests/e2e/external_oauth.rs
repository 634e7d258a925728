//! External OAuth (`external_oauth`) at the edge: JWT access tokens signed by PyJWT, and RFC
//! 7662 introspection against a stand-in authorization server, with Tyk's statuses and messages.

use std::time::Duration;

use portcullis_tests::eventually;
use portcullis_tests::idp_server::IdpServer;
use portcullis_tests::idp_stack::{Stack, api, assert_error, assert_upstream, bearer};
use portcullis_tests::pyjwt::{self, Job, KeyDir, now, sign, sign_all, source};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::jwt::assert_nowhere_in_the_database;

const SECRET: &[u8] = b"external-oauth-secret-0123";
const CLIENT_SECRET: &str = "introspection-client-secret-4567";

fn jwt_provider(secret: &[u8], issuer: &str) -> Value {
    json!({"jwt": {"enabled": true, "signing_method": "hmac", "source": source(secret),
                   "identity_base_field": "sub", "issuer": issuer}})
}

fn introspection_provider(idp: &IdpServer, cache: Value) -> Value {
    json!({"introspection": {"enabled": true, "url": idp.introspection_url(),
                             "client_id": "gateway", "client_secret": CLIENT_SECRET,
                             "identity_base_field": "sub", "cache": cache}})
}

async fn stack(providers: Vec<Value>) -> Stack {
    let mut s = Stack::start().await;
    let t = s.target();
    s.create(
        &[api(
            "ext",
            &t,
            json!({"external_oauth": {"enabled": true, "providers": providers}}),
        )],
        &[],
    )
    .await;
    s
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iat": now() - 5, "exp": now() + 600})
}

#[tokio::test]
async fn external_oauth_hmac_jwt_is_accepted() {
    let s = stack(vec![jwt_provider(SECRET, "")]).await;
    let token = sign(Job::hs256(SECRET, claims("u1"))).await;
    let seen = assert_upstream(&s.get("/ext/a", &[("Authorization", &bearer(&token))]).await);
    assert_eq!(seen.path, "/a");
}

#[tokio::test]
async fn external_oauth_expired_jwt_is_401_with_the_jwt_message() {
    let s = stack(vec![jwt_provider(SECRET, "")]).await;
    let token = sign(Job::hs256(SECRET, json!({"sub": "u1", "exp": now() - 10}))).await;
    assert_error(
        &s.get("/ext/", &[("Authorization", &bearer(&token))]).await,
        401,
        "token has expired",
    );
}

#[tokio::test]
async fn external_oauth_rsa_jwt_checked_against_a_jwk_set() {
    let keys = KeyDir::new();
    let (k1, other) = (keys.rsa("k1").await, keys.rsa("other").await);
    let idp = IdpServer::start().await;
    idp.set_jwks(pyjwt::jwks(&[(&k1, "k1")]).await).await;
    let s = stack(vec![
        json!({"jwt": {"enabled": true, "signing_method": "rsa",
                                      "source": idp.jwks_url(), "identity_base_field": "sub"}}),
    ])
    .await;
    let tokens = sign_all(vec![
        Job::signed("RS256", &k1, claims("u1")).kid("k1"),
        Job::signed("RS256", &other, claims("u1")).kid("k1"),
    ])
    .await;
    assert_upstream(
        &s.get("/ext/", &[("Authorization", &bearer(&tokens[0]))])
            .await,
    );
    assert_error(
        &s.get("/ext/", &[("Authorization", &bearer(&tokens[1]))])
            .await,
        401,
        "access token is not valid",
    );
    assert_eq!(idp.count("/jwks").await, 1, "the set is fetched once");
}

#[tokio::test]
async fn external_oauth_bad_signature_is_401() {
    let s = stack(vec![jwt_provider(SECRET, "")]).await;
    let token = sign(Job::hs256(b"some-other-secret-0000", claims("u1"))).await;
    assert_error(
        &s.get("/ext/", &[("Authorization", &bearer(&token))]).await,
        401,
        "access token is not valid",
    );
}

#[tokio::test]
async fn external_oauth_missing_token_is_400() {
    let s = stack(vec![jwt_provider(SECRET, "")]).await;
    assert_error(
        &s.get("/ext/", &[]).await,
        400,
        "authorization field missing",
    );
}

#[tokio::test]
async fn external_oauth_rsa_token_on_an_hmac_provider_is_500() {
    let keys = KeyDir::new();
    let rsa = keys.rsa("rsa").await;
    let s = stack(vec![jwt_provider(SECRET, "")]).await;
    let token = sign(Job::signed("RS256", &rsa, claims("u1"))).await;
    assert_error(
        &s.get("/ext/", &[("Authorization", &bearer(&token))]).await,
        500,
        "error happened during the access token validation",
    );
}

#[tokio::test]
async fn external_oauth_providers_are_chosen_by_issuer() {
    let (a, b) = (
        b"issuer-a-secret-000000".as_slice(),
        b"issuer-b-secret-111111".as_slice(),
    );
    let s = stack(vec![
        jwt_provider(a, "https://a.example"),
        jwt_provider(b, "https://b.example"),
    ])
    .await;
    let with_iss = |iss: &str| {
        let mut c = claims("u1");
        c["iss"] = json!(iss);
        c
    };
    let tokens = sign_all(vec![
        Job::hs256(a, with_iss("https://a.example")),
        Job::hs256(b, with_iss("https://b.example")),
        Job::hs256(b, with_iss("https://a.example")),
    ])
    .await;
    assert_upstream(
        &s.get("/ext/", &[("Authorization", &bearer(&tokens[0]))])
            .await,
    );
    assert_upstream(
        &s.get("/ext/", &[("Authorization", &bearer(&tokens[1]))])
            .await,
    );
    assert_error(
        &s.get("/ext/", &[("Authorization", &bearer(&tokens[2]))])
            .await,
        401,
        "access token is not valid",
    );
}

fn opaque() -> String {
    format!("opaque-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn external_oauth_introspection_active_token_is_accepted_with_client_credentials() {
    let idp = IdpServer::start().await;
    idp.set_clients(json!({"gateway": CLIENT_SECRET})).await;
    let token = opaque();
    idp.set_tokens(json!({&token: {"active": true, "sub": "u1", "exp": now() + 600}}))
        .await;
    let s = stack(vec![introspection_provider(
        &idp,
        json!({"enabled": false}),
    )])
    .await;
    assert_upstream(&s.get("/ext/", &[("Authorization", &bearer(&token))]).await);
    let seen = idp.seen().await;
    let form = seen.last().expect("one introspection request");
    assert_eq!(form["token"], token.as_str(), "{form}");
    assert_eq!(form["client_id"], "gateway", "{form}");
    assert_eq!(form["client_secret"], CLIENT_SECRET, "{form}");
    assert_eq!(form["_content_type"], "application/x-www-form-urlencoded");
}

#[tokio::test]
async fn external_oauth_introspection_inactive_token_is_401() {
    let idp = IdpServer::start().await;
    let token = opaque();
    idp.set_tokens(json!({&token: {"active": false}})).await;
    let s = stack(vec![introspection_provider(
        &idp,
        json!({"enabled": false}),
    )])
    .await;
    assert_error(
        &s.get("/ext/", &[("Authorization", &bearer(&token))]).await,
        401,
        "access token is not valid",
    );
    assert_eq!(idp.count("/introspect").await, 1);
}

#[tokio::test]
async fn external_oauth_introspection_cache_holds_until_its_timeout() {
    let idp = IdpServer::start().await;
    let token = opaque();
    idp.set_tokens(json!({&token: {"active": true, "sub": "u1", "exp": now() + 600}}))
        .await;
    let s = stack(vec![introspection_provider(
        &idp,
        json!({"enabled": true, "timeout": 3}),
    )])
    .await;
    let auth = bearer(&token);
    assert_upstream(&s.get("/ext/", &[("Authorization", &auth)]).await);
    idp.set_tokens(json!({&token: {"active": false}})).await;
    assert_upstream(&s.get("/ext/", &[("Authorization", &auth)]).await);
    assert_eq!(
        idp.count("/introspect").await,
        1,
        "the second answer came from the cache"
    );
    let got = eventually(
        Duration::from_secs(10),
        "the cached answer to end",
        || async {
            let got = s.get("/ext/", &[("Authorization", &auth)]).await;
            (got.0 != StatusCode::OK).then_some(got)
        },
    )
    .await;
    assert_error(&got, 401, "access token is not valid");
    assert!(
        idp.count("/introspect").await >= 2,
        "asked again once the cache ended"
    );
}

#[tokio::test]
async fn external_oauth_introspection_cache_never_outlives_exp() {
    let idp = IdpServer::start().await;
    let token = opaque();
    // The server keeps answering active: the gateway must apply exp itself.
    idp.set_tokens(json!({&token: {"active": true, "sub": "u1", "exp": now() + 2}}))
        .await;
    let s = stack(vec![introspection_provider(
        &idp,
        json!({"enabled": true, "timeout": 60}),
    )])
    .await;
    let auth = bearer(&token);
    assert_upstream(&s.get("/ext/", &[("Authorization", &auth)]).await);
    let got = eventually(Duration::from_secs(10), "the token to expire", || async {
        let got = s.get("/ext/", &[("Authorization", &auth)]).await;
        (got.0 != StatusCode::OK).then_some(got)
    })
    .await;
    assert_error(&got, 401, "access token is not valid");
}

#[tokio::test]
async fn external_oauth_introspection_server_down_without_cache_is_500() {
    let mut idp = IdpServer::start().await;
    let token = opaque();
    idp.set_tokens(json!({&token: {"active": true, "sub": "u1", "exp": now() + 600}}))
        .await;
    let s = stack(vec![introspection_provider(
        &idp,
        json!({"enabled": false}),
    )])
    .await;
    let auth = bearer(&token);
    assert_upstream(&s.get("/ext/", &[("Authorization", &auth)]).await);
    idp.stop();
    assert_error(
        &s.get("/ext/", &[("Authorization", &auth)]).await,
        500,
        "error happened during the access token validation",
    );
}

#[tokio::test]
async fn external_oauth_secrets_are_sealed_at_rest() {
    let idp = IdpServer::start().await;
    let s = stack(vec![
        jwt_provider(SECRET, "https://a.example"),
        introspection_provider(&idp, json!({"enabled": false})),
    ])
    .await;
    let (status, def) = s.cp.call(Method::GET, "/tyk/apis/ext", None).await;
    assert_eq!(status, StatusCode::OK);
    let providers = &def["external_oauth"]["providers"];
    for stored in [
        &providers[0]["jwt"]["source"],
        &providers[1]["introspection"]["client_secret"],
    ] {
        assert!(
            stored
                .as_str()
                .unwrap_or_default()
                .starts_with("sealed:v1:"),
            "{def}"
        );
    }
    // The edge opens both: a JWT and an introspected token work.
    let token = opaque();
    idp.set_clients(json!({"gateway": CLIENT_SECRET})).await;
    idp.set_tokens(json!({&token: {"active": true, "sub": "u2", "exp": now() + 600}}))
        .await;
    let mut c = claims("u1");
    c["iss"] = json!("https://a.example");
    let jwt = sign(Job::hs256(SECRET, c)).await;
    assert_upstream(&s.get("/ext/", &[("Authorization", &bearer(&jwt))]).await);
    assert_upstream(&s.get("/ext/", &[("Authorization", &bearer(&token))]).await);
    assert_nowhere_in_the_database(&s, &[SECRET, CLIENT_SECRET.as_bytes()]).await;
}

async fn refused_without_providers(external_oauth: Value) {
    let s = Stack::start().await;
    let def = api(
        "ext",
        "http://127.0.0.1:9",
        json!({"external_oauth": external_oauth}),
    );
    let (status, body) = s.cp.call(Method::POST, "/tyk/apis", Some(&def)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        (body["field"].as_str(), body["message"].as_str()),
        (
            Some("external_oauth.providers"),
            Some("external_oauth.providers: there should be at least one provider configured")
        ),
        "{body}"
    );
    let (status, _) = s.cp.call(Method::GET, "/tyk/apis/ext", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing stored");
}

#[tokio::test]
async fn external_oauth_with_an_empty_provider_list_is_refused_at_write() {
    refused_without_providers(json!({"enabled": true, "providers": []})).await;
}

#[tokio::test]
async fn external_oauth_without_a_provider_list_is_refused_at_write() {
    refused_without_providers(json!({"enabled": true})).await;
}

#[tokio::test]
async fn external_oauth_jwt_without_an_identity_claim_is_401() {
    let s = stack(vec![
        json!({"jwt": {"enabled": true, "signing_method": "hmac",
        "source": source(SECRET), "identity_base_field": "email"}}),
    ])
    .await;
    let [none, empty, good]: [String; 3] = sign_all(vec![
        Job::hs256(SECRET, json!({"name": "nobody", "exp": now() + 600})),
        Job::hs256(SECRET, json!({"email": "", "sub": "", "exp": now() + 600})),
        Job::hs256(
            SECRET,
            json!({"email": "a@example.com", "exp": now() + 600}),
        ),
    ])
    .await
    .try_into()
    .unwrap();
    assert_upstream(&s.get("/ext/", &[("Authorization", &bearer(&good))]).await);
    for token in [none, empty] {
        assert_error(
            &s.get("/ext/", &[("Authorization", &bearer(&token))]).await,
            401,
            "access token is not valid",
        );
    }
}

#[tokio::test]
async fn external_oauth_introspected_token_without_an_identity_is_401() {
    let idp = IdpServer::start().await;
    let (anonymous, named) = (opaque(), opaque());
    // Active, but neither the identity field, `sub` nor `username`.
    idp.set_tokens(json!({
        &anonymous: {"active": true, "client_id": "app", "exp": now() + 600},
        &named: {"active": true, "username": "bob", "exp": now() + 600},
    }))
    .await;
    let s = stack(vec![introspection_provider(
        &idp,
        json!({"enabled": false}),
    )])
    .await;
    assert_error(
        &s.get("/ext/", &[("Authorization", &bearer(&anonymous))])
            .await,
        401,
        "access token is not valid",
    );
    assert_upstream(&s.get("/ext/", &[("Authorization", &bearer(&named))]).await);
    assert_eq!(idp.count("/introspect").await, 2, "both were introspected");
}

#[tokio::test]
async fn external_oauth_jwt_issued_in_the_future_is_401() {
    let s = stack(vec![jwt_provider(SECRET, "")]).await;
    let token = sign(Job::hs256(
        SECRET,
        json!({"sub": "u1", "iat": now() + 60, "exp": now() + 600}),
    ))
    .await;
    assert_error(
        &s.get("/ext/", &[("Authorization", &bearer(&token))]).await,
        401,
        "token used before issued",
    );
}

#[tokio::test]
async fn external_oauth_jwt_not_yet_valid_is_401() {
    let s = stack(vec![jwt_provider(SECRET, "")]).await;
    let token = sign(Job::hs256(
        SECRET,
        json!({"sub": "u1", "nbf": now() + 60, "exp": now() + 600}),
    ))
    .await;
    assert_error(
        &s.get("/ext/", &[("Authorization", &bearer(&token))]).await,
        401,
        "token is not valid yet",
    );
}

#[tokio::test]
async fn external_oauth_skews_admit_iat_and_nbf_in_the_future() {
    // The provider's skews apply: what the two tests above refuse passes with 120 s of skew.
    let s = stack(vec![
        json!({"jwt": {"enabled": true, "signing_method": "hmac",
        "source": source(SECRET), "identity_base_field": "sub",
        "issued_at_validation_skew": 120, "not_before_validation_skew": 120}}),
    ])
    .await;
    let token = sign(Job::hs256(
        SECRET,
        json!({"sub": "u1", "iat": now() + 60, "nbf": now() + 60, "exp": now() + 600}),
    ))
    .await;
    assert_upstream(&s.get("/ext/", &[("Authorization", &bearer(&token))]).await);
}

#[tokio::test]
async fn external_oauth_session_is_refused_on_an_api_it_was_not_made_for() {
    const ORG: &str = "org-ext";
    let mut s = Stack::start().await;
    let t = s.target();
    let with_org = |mut def: Value| {
        def["org_id"] = json!(ORG);
        def
    };
    let other_secret = b"another-provider-secret-89".as_slice();
    s.create(
        &[
            with_org(api(
                "ext",
                &t,
                json!({"external_oauth": {"enabled": true,
                                          "providers": [jwt_provider(SECRET, "")]}}),
            )),
            // Another external-OAuth API, trusting another provider.
            with_org(api(
                "ext2",
                &t,
                json!({"external_oauth": {"enabled": true,
                                          "providers": [jwt_provider(other_secret, "")]}}),
            )),
            // An auth-token API of the same organisation.
            with_org(api(
                "tok",
                &t,
                json!({"auth": {"auth_header_name": "Authorization"}}),
            )),
        ],
        &[],
    )
    .await;
    let sub = format!("ext-user-{}", uuid::Uuid::new_v4().simple());
    let token = sign(Job::hs256(SECRET, claims(&sub))).await;
    let auth = bearer(&token);
    assert_upstream(&s.get("/ext/", &[("Authorization", &auth)]).await);

    assert_error(
        &s.get("/ext2/", &[("Authorization", &auth)]).await,
        401,
        "access token is not valid",
    );
    // The session's key (Tyk's virtual key, computable from `sub`) is not a key anywhere: the
    // session lives in the API that made it, and is never stored.
    let virtual_key = format!("{ORG}{}", pyjwt::md5_hex(&sub).await);
    for presented in [virtual_key.as_str(), token.as_str()] {
        assert_error(
            &s.get("/tok/", &[("Authorization", presented)]).await,
            403,
            "Access to this API has been disallowed",
        );
    }
    let (status, body) =
        s.cp.call(Method::GET, &format!("/tyk/keys/{virtual_key}"), None)
            .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // Still good where it was made.
    assert_upstream(&s.get("/ext/", &[("Authorization", &auth)]).await);
}
