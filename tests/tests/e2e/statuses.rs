//! Every client-facing status and message of the auth chain, one test each, against a fresh
//! stack: control plane, gateway with its regional Redis, echo upstream.

use base64::Engine;
use portcullis_tests::{Cp, Dp, DpOptions, EchoUpstream, TestDb, keyless_api};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Fixture {
    _db: TestDb,
    cp: Cp,
    dp: Dp,
    _echo: EchoUpstream,
}

/// APIs: `/tok/` (auth token), `/other/` (auth token), `/basic/` (basic auth, realm "Basic API"),
/// `/signed/` (token + Mashery signature).
async fn fixture() -> Fixture {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let prefix = format!("e2e:{}:", uuid::Uuid::new_v4().simple());
    let redis = portcullis_tests::redis_url();
    let dp = Dp::start(
        &cp,
        DpOptions {
            token: Some(cp.token("default").await),
            redis_url: Some(redis),
            redis_prefix: Some(prefix),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let protected = |id: &str| {
        let mut api = keyless_api(id, &format!("/{id}/"), &echo.url());
        api["use_keyless"] = json!(false);
        api
    };
    cp.create_api(&protected("tok")).await;
    cp.create_api(&protected("other")).await;
    let mut basic = protected("basic");
    basic["name"] = json!("Basic API");
    basic["use_basic_auth"] = json!(true);
    cp.create_api(&basic).await;
    let mut signed = protected("signed");
    signed["auth"] = json!({"validate_signature": true, "signature": {"algorithm": "MasheryMD5", "header": "X-Signature", "secret": "s", "allowed_clock_skew": 1}});
    cp.create_api(&signed).await;
    dp.wait_for_revision(4).await;
    Fixture {
        _db: db,
        cp,
        dp,
        _echo: echo,
    }
}

/// Rights to every API of the fixture (a key without rights is refused).
fn every_api() -> Value {
    json!({
        "tok": {"api_id": "tok"},
        "other": {"api_id": "other"},
        "basic": {"api_id": "basic"},
        "signed": {"api_id": "signed"},
    })
}

impl Fixture {
    async fn key(&self, name: &str, session: Value) {
        let (status, body) = self
            .cp
            .call(Method::POST, &format!("/tyk/keys/{name}"), Some(&session))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, String, Option<String>) {
        self.send(Method::GET, path, headers).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, String, Option<String>) {
        let mut req = reqwest::Client::new().request(method, self.dp.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        (
            status,
            body["error"].as_str().unwrap_or_default().to_owned(),
            challenge,
        )
    }
}

fn basic(credentials: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn token_missing_is_401_authorization_field_missing() {
    let f = fixture().await;
    let (status, error, _) = f.get("/tok/", &[]).await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::UNAUTHORIZED, "Authorization field missing")
    );
}

#[tokio::test]
async fn token_unknown_is_403_disallowed() {
    let f = fixture().await;
    let (status, error, _) = f.get("/tok/", &[("Authorization", "no-such-key")]).await;
    assert_eq!(
        (status, error.as_str()),
        (
            StatusCode::FORBIDDEN,
            "Access to this API has been disallowed"
        )
    );
}

#[tokio::test]
async fn token_expired_is_401_key_has_expired() {
    let f = fixture().await;
    f.key(
        "old-key",
        json!({"access_rights": every_api(), "expires": now() + 3600}),
    )
    .await;
    let (status, _) =
        f.cp.call(
            Method::PUT,
            "/tyk/keys/old-key",
            Some(&json!({"access_rights": every_api(), "expires": now() - 10})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, error, _) = f.get("/tok/", &[("Authorization", "old-key")]).await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::UNAUTHORIZED, "Key has expired, please renew")
    );
}

#[tokio::test]
async fn token_inactive_is_403_key_is_inactive() {
    let f = fixture().await;
    f.key(
        "paused-key",
        json!({"access_rights": every_api(), "is_inactive": true}),
    )
    .await;
    let (status, error, _) = f.get("/tok/", &[("Authorization", "paused-key")]).await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::FORBIDDEN, "Key is inactive, please renew")
    );
}

#[tokio::test]
async fn token_without_rights_to_the_api_is_403_disallowed() {
    let f = fixture().await;
    f.key(
        "other-only",
        json!({"access_rights": {"other": {"api_id": "other"}}}),
    )
    .await;
    assert_eq!(
        f.get("/other/", &[("Authorization", "other-only")]).await.0,
        StatusCode::OK
    );
    let (status, error, _) = f.get("/tok/", &[("Authorization", "other-only")]).await;
    assert_eq!(
        (status, error.as_str()),
        (
            StatusCode::FORBIDDEN,
            "Access to this API has been disallowed"
        )
    );
}

#[tokio::test]
async fn path_outside_allowed_urls_is_403_disallowed() {
    let f = fixture().await;
    f.key("narrow", json!({"access_rights": {"tok": {"api_id": "tok", "allowed_urls": [{"url": "^/tok/read", "methods": ["GET"]}]}}})).await;
    assert_eq!(
        f.get("/tok/read", &[("Authorization", "narrow")]).await.0,
        StatusCode::OK
    );
    let (status, error, _) = f.get("/tok/write", &[("Authorization", "narrow")]).await;
    assert_eq!(
        (status, error.as_str()),
        (
            StatusCode::FORBIDDEN,
            "Access to this API has been disallowed"
        )
    );
}

#[tokio::test]
async fn method_outside_allowed_urls_is_403_disallowed() {
    let f = fixture().await;
    f.key("reader", json!({"access_rights": {"tok": {"api_id": "tok", "allowed_urls": [{"url": "^/tok/", "methods": ["GET"]}]}}})).await;
    let (status, error, _) = f
        .send(Method::DELETE, "/tok/x", &[("Authorization", "reader")])
        .await;
    assert_eq!(
        (status, error.as_str()),
        (
            StatusCode::FORBIDDEN,
            "Access to this API has been disallowed"
        )
    );
}

#[tokio::test]
async fn rate_limit_is_429_rate_limit_exceeded() {
    let f = fixture().await;
    f.key(
        "one-per-hour",
        json!({"rate": 1, "per": 3600, "access_rights": every_api()}),
    )
    .await;
    assert_eq!(
        f.get("/tok/", &[("Authorization", "one-per-hour")]).await.0,
        StatusCode::OK
    );
    let (status, error, _) = f.get("/tok/", &[("Authorization", "one-per-hour")]).await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "Rate Limit Exceeded")
    );
}

#[tokio::test]
async fn quota_is_403_quota_exceeded() {
    let f = fixture().await;
    f.key(
        "one-a-day",
        json!({"quota_max": 1, "quota_renewal_rate": 86400, "access_rights": every_api()}),
    )
    .await;
    assert_eq!(
        f.get("/tok/", &[("Authorization", "one-a-day")]).await.0,
        StatusCode::OK
    );
    let (status, error, _) = f.get("/tok/", &[("Authorization", "one-a-day")]).await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::FORBIDDEN, "Quota exceeded")
    );
}

#[tokio::test]
async fn inactive_policy_is_403_key_is_inactive() {
    let f = fixture().await;
    let (status, _) = f.cp.call(Method::POST, "/tyk/policies", Some(&json!({"id": "off", "is_inactive": true, "access_rights": {"tok": {"api_id": "tok"}}}))).await;
    assert_eq!(status, StatusCode::OK);
    f.dp.wait_for_revision(5).await;
    f.key("member", json!({"apply_policies": ["off"]})).await;
    let (status, error, _) = f.get("/tok/", &[("Authorization", "member")]).await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::FORBIDDEN, "Key is inactive, please renew")
    );
}

#[tokio::test]
async fn signature_missing_or_wrong_is_401_request_signature_verification_failed() {
    let f = fixture().await;
    f.key("signer", json!({"access_rights": every_api()})).await;
    let (status, error, _) = f
        .get(
            "/signed/",
            &[("Authorization", "signer"), ("X-Signature", "0000")],
        )
        .await;
    assert_eq!(
        (status, error.as_str()),
        (
            StatusCode::UNAUTHORIZED,
            "Request signature verification failed"
        )
    );
}

#[tokio::test]
async fn basic_missing_is_401_with_www_authenticate() {
    let f = fixture().await;
    let (status, error, challenge) = f.get("/basic/", &[]).await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::UNAUTHORIZED, "Authorization field missing")
    );
    assert_eq!(challenge.as_deref(), Some("Basic realm=\"Basic API\""));
}

#[tokio::test]
async fn basic_not_in_basic_format_is_400() {
    let f = fixture().await;
    let (status, error, _) = f.get("/basic/", &[("Authorization", "Basic")]).await;
    assert_eq!(
        (status, error.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "Attempted access with malformed header, header not in basic auth format"
        )
    );
}

#[tokio::test]
async fn basic_not_base64_is_400() {
    let f = fixture().await;
    let (status, error, _) = f.get("/basic/", &[("Authorization", "Basic %%%")]).await;
    assert_eq!(
        (status, error.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "Attempted access with malformed header, auth data not encoded correctly"
        )
    );
}

#[tokio::test]
async fn basic_without_a_single_colon_is_400() {
    let f = fixture().await;
    let (status, error, _) = f
        .get("/basic/", &[("Authorization", &basic("a:b:c"))])
        .await;
    assert_eq!(
        (status, error.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "Attempted access with malformed header, values not in basic auth format"
        )
    );
}

#[tokio::test]
async fn basic_unknown_user_is_401_user_not_authorised() {
    let f = fixture().await;
    let (status, error, challenge) = f
        .get("/basic/", &[("Authorization", &basic("nobody:pw"))])
        .await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::UNAUTHORIZED, "User not authorised")
    );
    assert!(challenge.is_some());
}

#[tokio::test]
async fn basic_wrong_password_is_401_user_not_authorised() {
    let f = fixture().await;
    f.key(
        "carol",
        json!({"access_rights": every_api(), "basic_auth_data": {"password": "right"}}),
    )
    .await;
    assert_eq!(
        f.get("/basic/", &[("Authorization", &basic("carol:right"))])
            .await
            .0,
        StatusCode::OK
    );
    let (status, error, _) = f
        .get("/basic/", &[("Authorization", &basic("carol:wrong"))])
        .await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::UNAUTHORIZED, "User not authorised")
    );
}
