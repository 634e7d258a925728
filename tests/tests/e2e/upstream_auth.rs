//! Issue 14, item 4: the gateway authenticating itself to upstreams (docs/upstream-auth.md).
//! Signatures are checked by Python's `httpsig`, tokens come from npm's `oauth2-mock-server`
//! (which counts its grants), basic credentials and static headers by what the upstream saw.

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use portcullis_tests::token_server::{SigningUpstream, TokenServer};
use portcullis_tests::{
    ADMIN_SECRET, Cp, Dp, DpOptions, EchoUpstream, Received, TestDb, keyless_api, redis_url,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::secrets_at_rest::{Secret, leaks, postgres_places, redis_places};

fn api(id: &str, target: &str, extra: Value) -> Value {
    let mut def = keyless_api(id, &format!("/{id}/"), target);
    for (k, v) in extra.as_object().unwrap() {
        def[k] = v.clone();
    }
    def
}

/// A self-signed RSA certificate with its key (PEM bundle) and its public key (PEM).
fn rsa_certificate() -> (String, String) {
    let dir = std::env::temp_dir().join(format!("portcullis-ua-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key_pem, cert_pem) =
        portcullis_tests::signatures::rsa_self_signed(&dir, "upstream-signer");
    let cert = dir.join("cert.pem");
    let public = Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let bundle = cert_pem + &key_pem;
    let _ = std::fs::remove_dir_all(&dir);
    (bundle, String::from_utf8(public.stdout).unwrap())
}

async fn get_json(url: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut r = reqwest::Client::new().get(url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn echoed(dp: &Dp, path: &str, headers: &[(&str, &str)]) -> Received {
    let (status, body) = get_json(&dp.url(path), headers).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    serde_json::from_value(body).unwrap()
}

#[tokio::test]
async fn signatures_verify_with_httpsig_for_hmac_and_rsa() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let (bundle, public) = rsa_certificate();
    let (status, body) = cp
        .call_raw(Method::POST, "/tyk/certs", Some(bundle), Some(ADMIN_SECRET))
        .await;
    assert_eq!(status, StatusCode::OK, "upload: {body}");
    let cert_id = body["id"].as_str().unwrap().to_owned();
    let secret = "9879879878787878";
    let hmac_up = SigningUpstream::start(
        secret,
        &public,
        "authorization",
        &["(request-target)", "date"],
    )
    .await;
    let rsa_up = SigningUpstream::start(
        secret,
        &public,
        "signature",
        &["(request-target)", "date", "x-client"],
    )
    .await;
    cp.create_api(&api(
        "sig-hmac",
        &hmac_up.url("/hmac"),
        json!({"request_signing": {
        "is_enabled": true, "secret": secret, "key_id": "gw-key", "algorithm": "hmac-sha256"}}),
    ))
    .await;
    cp.create_api(&api(
        "sig-wrong",
        &hmac_up.url("/hmac"),
        json!({"request_signing": {
        "is_enabled": true, "secret": "another-secret-entirely", "key_id": "gw-key",
        "algorithm": "hmac-sha256"}}),
    ))
    .await;
    cp.create_api(&api("sig-rsa", &rsa_up.url("/rsa"), json!({"request_signing": {
        "is_enabled": true, "key_id": "gw-rsa", "algorithm": "rsa-sha256", "certificate_id": cert_id,
        "signature_header": "Signature", "header_list": ["(request-target)", "date", "x-client", "x-absent"]}})))
        .await;
    let dp = Dp::joined(&cp).await;
    dp.wait_for_status("/sig-rsa/x", 200).await;

    let (_, body) = get_json(&dp.url("/sig-hmac/a/b?q=1&r=two"), &[("X-Client", "c1")]).await;
    assert_eq!(body["verified"], true, "{body}");
    assert_eq!(body["path"], "/hmac/a/b?q=1&r=two");
    let signed = body["signed_headers"].as_str().unwrap();
    assert!(signed.starts_with("(request-target) "), "{signed}");
    for h in ["date", "x-client", "x-forwarded-for"] {
        assert!(signed.split(' ').any(|s| s == h), "{h} not in {signed}");
    }
    assert!(!signed.split(' ').any(|s| s == "host"), "{signed}");
    assert!(
        body["headers"]["authorization"]
            .as_str()
            .unwrap()
            .starts_with("Signature keyId=\"gw-key\",algorithm=\"hmac-sha256\"")
    );

    // The verifier does check: the same request under another secret is refused.
    let (_, body) = get_json(&dp.url("/sig-wrong/a"), &[]).await;
    assert_ne!(body["verified"], true, "{body}");

    let (_, body) = get_json(
        &dp.url("/sig-rsa/p?x=%20y"),
        &[
            ("X-Client", "c2"),
            ("Date", "Wed, 02 Dec 2026 10:00:00 GMT"),
        ],
    )
    .await;
    assert_eq!(body["verified"], true, "{body}");
    assert_eq!(
        body["signed_headers"], "(request-target) date x-client",
        "{body}"
    );
    // The gateway signs its own clock's Date: a client cannot get an old or far-future one
    // signed.
    assert_ne!(
        body["headers"]["date"], "Wed, 02 Dec 2026 10:00:00 GMT",
        "the client's Date is replaced"
    );
    assert!(
        body["headers"]["date"]
            .as_str()
            .is_some_and(|d| d.ends_with(" GMT")),
        "{body}"
    );
    // Without X-Client the signature no longer covers what the verifier requires.
    let (_, body) = get_json(&dp.url("/sig-rsa/p"), &[]).await;
    assert_ne!(body["verified"], true, "{body}");
}

#[tokio::test]
async fn basic_credentials_replace_the_clients_and_static_headers_apply() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let headers = json!({"not_versioned": true, "versions": {"Default": {"name": "Default",
        "global_headers": {"X-Static": "from-definition", "X-Env": "prod"},
        "global_headers_remove": ["X-Drop", "Cookie"]}}});
    cp.create_api(&api(
        "basic",
        &echo.url(),
        json!({"version_data": headers,
        "upstream_auth": {"enabled": true, "basic_auth": {"enabled": true,
            "username": "gateway", "password": "upstream-basic-password"}}}),
    ))
    .await;
    cp.create_api(&api("basic-custom", &echo.url(), json!({
        "upstream_auth": {"enabled": true, "basic_auth": {"enabled": true,
            "username": "gw2", "password": "pw2", "header": {"enabled": true, "name": "X-Upstream-Auth"}}}})))
        .await;
    let dp = Dp::joined(&cp).await;
    dp.wait_for_status("/basic-custom/", 200).await;

    let got = echoed(
        &dp,
        "/basic/x",
        &[
            ("Authorization", "Basic Y2xpZW50OnNlY3JldA=="),
            ("X-Drop", "1"),
            ("Cookie", "a=b"),
            ("X-Static", "client"),
        ],
    )
    .await;
    let want = format!("Basic {}", B64.encode("gateway:upstream-basic-password"));
    assert_eq!(got.header("authorization"), Some(want.as_str()));
    assert_eq!(got.header("x-static"), Some("from-definition"));
    assert_eq!(got.header("x-env"), Some("prod"));
    assert_eq!(got.header("x-drop"), None);
    assert_eq!(got.header("cookie"), None);

    let got = echoed(
        &dp,
        "/basic-custom/x",
        &[("Authorization", "Bearer client-token")],
    )
    .await;
    let want = format!("Basic {}", B64.encode("gw2:pw2"));
    assert_eq!(got.header("x-upstream-auth"), Some(want.as_str()));
    assert_eq!(
        got.header("authorization"),
        Some("Bearer client-token"),
        "the client's own header is left"
    );
}

fn oauth_api(id: &str, target: &str, grant: &str, settings: Value) -> Value {
    let key = if grant == "password" {
        "password"
    } else {
        "client_credentials"
    };
    let mut oauth = json!({"enabled": true, "allowed_authorize_types": [grant]});
    oauth[key] = settings;
    api(
        id,
        target,
        json!({"upstream_auth": {"enabled": true, "oauth": oauth}}),
    )
}

async fn gateway(cp: &Cp, prefix: &str) -> Dp {
    Dp::start(
        cp,
        DpOptions {
            token: Some(cp.token("default").await),
            redis_url: Some(redis_url()),
            redis_prefix: Some(prefix.to_owned()),
            ..Default::default()
        },
    )
    .await
    .expect("gateway starts")
}

#[tokio::test]
async fn client_credentials_one_fetch_per_expiry_across_two_edges() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let tokens = TokenServer::start().await;
    let client_secret = "cc-client-secret-1234";
    cp.create_api(&oauth_api(
        "cc",
        &echo.url(),
        "clientCredentials",
        json!({
        "client_id": "gw-client", "client_secret": client_secret, "token_url": tokens.token_url(),
        "scopes": ["read", "write"], "extra_metadata": ["instance_url"]}),
    ))
    .await;
    cp.create_api(&oauth_api(
        "cc-short",
        &echo.url(),
        "clientCredentials",
        json!({
        "client_id": "gw-short", "client_secret": client_secret, "token_url": tokens.token_url(),
        "header": {"enabled": true, "name": "X-Api-Token"}}),
    ))
    .await;
    let prefix = format!("e2e:{}:ua:", uuid::Uuid::new_v4().simple());
    let (a, b) = (gateway(&cp, &prefix).await, gateway(&cp, &prefix).await);
    a.wait_for_revision(2).await;
    b.wait_for_revision(2).await;

    // 100 concurrent requests over both edges: one grant.
    let mut calls = Vec::new();
    for i in 0..100 {
        let url = if i % 2 == 0 {
            a.url("/cc/x")
        } else {
            b.url("/cc/x")
        };
        calls.push(tokio::spawn(async move { get_json(&url, &[]).await }));
    }
    let mut bearers = std::collections::HashSet::new();
    for c in calls {
        let (status, body) = c.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        let got: Received = serde_json::from_value(body).unwrap();
        bearers.insert(got.header("authorization").unwrap().to_owned());
        assert_eq!(
            got.header("instance_url"),
            Some("https://instance.example/1")
        );
    }
    assert_eq!(tokens.grants().await, 1, "one token fetch for both edges");
    assert_eq!(bearers.len(), 1, "{bearers:?}");
    let bearer = bearers.into_iter().next().unwrap();
    assert!(bearer.starts_with("Bearer ey"), "{bearer}");
    let seen = tokens.seen().await;
    assert_eq!(seen[0]["grant_type"], "client_credentials");
    assert_eq!(seen[0]["scope"], "read write");
    let basic = format!("Basic {}", B64.encode(format!("gw-client:{client_secret}")));
    assert_eq!(
        seen[0]["authorization"],
        basic.as_str(),
        "client_secret_basic by default"
    );
    assert_eq!(seen[0]["client_secret"], Value::Null);

    // The token sits in Redis sealed: neither it nor the client secret is readable there.
    let token = bearer.trim_start_matches("Bearer ").to_owned();
    let found = leaks(
        &redis_places(&prefix).await,
        &[
            Secret::new("access token", token.as_bytes()),
            Secret::new("client secret", client_secret.as_bytes()),
        ],
    );
    assert!(found.is_empty(), "{found:?}");
    assert!(
        leaks(
            &postgres_places(&db).await,
            &[Secret::new("client secret", client_secret.as_bytes())]
        )
        .is_empty()
    );

    // A token living 2 s is used for 1 s, then fetched again.
    tokens.set_ttl(2).await;
    let first = echoed(&a, "/cc-short/x", &[]).await;
    assert_eq!(tokens.grants().await, 2);
    let t1 = first.header("x-api-token").unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = echoed(&b, "/cc-short/x", &[]).await;
    assert_eq!(tokens.grants().await, 3, "refetched after expiry");
    assert_ne!(again.header("x-api-token").unwrap(), t1);
}

#[tokio::test]
async fn password_grant_posts_credentials_and_outages_are_clear() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let tokens = TokenServer::start().await;
    let (client_secret, password) = ("pw-client-secret-5678", "resource-owner-password-9");
    cp.create_api(&oauth_api(
        "pw",
        &echo.url(),
        "password",
        json!({
        "client_id": "gw-pw", "client_secret": client_secret, "method": "client_secret_post",
        "username": "svc-user", "password": password, "token_url": tokens.token_url(),
        "scopes": ["orders"]}),
    ))
    .await;
    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    cp.create_api(&oauth_api(
        "down",
        &echo.url(),
        "clientCredentials",
        json!({
        "client_id": "c", "client_secret": "s", "token_url": format!("http://{closed}/token")}),
    ))
    .await;
    cp.create_api(&oauth_api(
        "refused",
        &echo.url(),
        "clientCredentials",
        json!({
        "client_id": "c2", "client_secret": "s2", "token_url": tokens.token_url()}),
    ))
    .await;
    let dp = Dp::joined(&cp).await;
    dp.wait_for_revision(3).await;

    let got = echoed(&dp, "/pw/x", &[]).await;
    assert!(
        got.header("authorization")
            .unwrap()
            .starts_with("Bearer ey")
    );
    let seen = tokens.seen().await;
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s["grant_type"], "password");
    assert_eq!(s["username"], "svc-user");
    assert_eq!(s["password"], password);
    assert_eq!(s["client_id"], "gw-pw");
    assert_eq!(s["client_secret"], client_secret);
    assert_eq!(
        s["authorization"],
        Value::Null,
        "client_secret_post sends no header"
    );
    assert_eq!(s["scope"], "orders");

    let (status, body) = get_json(&dp.url("/down/x"), &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body["error"],
        "The upstream OAuth token endpoint is unavailable"
    );
    tokens.set_mode("refuse").await;
    let (status, body) = get_json(&dp.url("/refused/x"), &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(
        body["error"],
        "The upstream OAuth token endpoint refused the gateway's credentials"
    );

    // Every upstream secret is sealed in every table and change-log row.
    let found = leaks(
        &postgres_places(&db).await,
        &[
            Secret::new("client secret", client_secret.as_bytes()),
            Secret::new("password", password.as_bytes()),
        ],
    );
    assert!(found.is_empty(), "{found:?}");
}
