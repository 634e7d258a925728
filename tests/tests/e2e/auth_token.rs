//! Auth token at the edge: credential sources, Tyk's statuses and messages, and keys that change
//! on the control plane reaching every region.

use std::time::Duration;

use portcullis_tests::{
    Cp, Dp, DpOptions, EchoUpstream, Received, TestDb, eventually, keyless_api, redis_url,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn protected_api(id: &str, target: &str, auth: Value) -> Value {
    let mut api = keyless_api(id, &format!("/{id}/"), target);
    api["use_keyless"] = json!(false);
    api["auth"] = auth;
    api
}

async fn call(dp: &Dp, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().get(dp.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn create_key(cp: &Cp, session: Value) -> String {
    let (status, body) = cp.call(Method::POST, "/tyk/keys", Some(&session)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn token_sources_and_session_checks_answer_as_tyk() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let dp = Dp::regional(&cp, "eu").await;
    cp.create_api(&protected_api("orders", &echo.url(), json!({"auth_header_name": "X-Api-Key", "use_param": true, "param_name": "key", "use_cookie": true, "cookie_name": "k"}))).await;
    let mut stripped = protected_api("billing", &echo.url(), json!({}));
    stripped["strip_auth_data"] = json!(true);
    cp.create_api(&stripped).await;
    dp.wait_for_revision(2).await;

    let rights = |apis: &[&str]| -> Value {
        apis.iter()
            .map(|a| (a.to_string(), json!({"api_id": a, "versions": ["Default"]})))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let key = create_key(
        &cp,
        json!({"access_rights": rights(&["orders", "billing"])}),
    )
    .await;

    let (status, body) = call(&dp, "/orders/x", &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("Authorization field missing")
        )
    );
    let (status, body) = call(&dp, "/orders/x", &[("X-Api-Key", "not-a-key")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::FORBIDDEN,
            Some("Access to this API has been disallowed")
        )
    );

    let (status, got) = call(&dp, "/orders/x", &[("X-Api-Key", &key)]).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let got: Received = serde_json::from_value(got).unwrap();
    assert_eq!(
        got.header("x-api-key"),
        Some(key.as_str()),
        "credential kept without strip_auth_data"
    );
    assert_eq!(
        call(&dp, &format!("/orders/x?key={key}"), &[]).await.0,
        StatusCode::OK,
        "query parameter"
    );
    assert_eq!(
        call(&dp, "/orders/x", &[("Cookie", &format!("a=b; k={key}"))])
            .await
            .0,
        StatusCode::OK,
        "cookie"
    );

    let (status, got) = call(
        &dp,
        "/billing/x",
        &[("Authorization", &format!("Bearer {key}"))],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "Bearer prefix on the default header"
    );
    let got: Received = serde_json::from_value(got).unwrap();
    assert_eq!(
        got.header("authorization"),
        None,
        "strip_auth_data removes the credential"
    );

    // Rights for one API only.
    let narrow = create_key(&cp, json!({"access_rights": rights(&["orders"])})).await;
    let (status, body) = call(&dp, "/billing/x", &[("Authorization", &narrow)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::FORBIDDEN,
            Some("Access to this API has been disallowed")
        )
    );

    // Expired (401) and inactive (403) keys.
    let expired = "expired-key";
    let (status, _) = cp
        .call(
            Method::POST,
            &format!("/tyk/keys/{expired}"),
            Some(&json!({"access_rights": rights(&["orders"])})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let past = chrono_like_now() - 60;
    let (status, _) = cp
        .call(
            Method::PUT,
            &format!("/tyk/keys/{expired}"),
            Some(&json!({"access_rights": rights(&["orders"]), "expires": past})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let body = eventually(Duration::from_secs(10), "expired key refused", || async {
        let (status, body) = call(&dp, "/orders/x", &[("X-Api-Key", expired)]).await;
        (status == StatusCode::UNAUTHORIZED).then_some(body)
    })
    .await;
    assert_eq!(body["error"], "Key has expired, please renew");
    let inactive = create_key(
        &cp,
        json!({"access_rights": rights(&["orders"]), "is_inactive": true}),
    )
    .await;
    let (status, body) = call(&dp, "/orders/x", &[("X-Api-Key", &inactive)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("Key is inactive, please renew"))
    );
}

fn chrono_like_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn keys_created_and_revoked_on_the_control_plane_reach_every_region() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let eu = Dp::regional(&cp, "eu").await;
    let us = Dp::regional(&cp, "us").await;
    cp.create_api(&protected_api("svc", &echo.url(), json!({})))
        .await;
    eu.wait_for_revision(1).await;
    us.wait_for_revision(1).await;

    // Unknown first (cached as missing), then created: the key event drops the negative entry.
    let name = format!("custom-{}", uuid::Uuid::new_v4().simple());
    assert_eq!(
        call(&eu, "/svc/", &[("Authorization", &name)]).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, _) = cp
        .call(
            Method::POST,
            &format!("/tyk/keys/{name}"),
            Some(&json!({"access_rights": {"svc": {"api_id": "svc"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for dp in [&eu, &us] {
        eventually(Duration::from_secs(5), "new key accepted", || async {
            (call(dp, "/svc/", &[("Authorization", &name)]).await.0 == StatusCode::OK).then_some(())
        })
        .await;
    }

    // Revoked on the CP: refused in both regions, although both had it cached.
    let (status, _) = cp
        .call(Method::DELETE, &format!("/tyk/keys/{name}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for dp in [&eu, &us] {
        let body = eventually(Duration::from_secs(5), "revoked key refused", || async {
            let (status, body) = call(dp, "/svc/", &[("Authorization", &name)]).await;
            (status == StatusCode::FORBIDDEN).then_some(body)
        })
        .await;
        assert_eq!(body["error"], "Access to this API has been disallowed");
    }
}

#[tokio::test]
async fn with_the_control_plane_down_known_keys_work_and_unknown_keys_are_refused() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let dp = Dp::regional(&cp, "eu").await;
    cp.create_api(&protected_api("svc", &echo.url(), json!({})))
        .await;
    dp.wait_for_revision(1).await;
    let key = create_key(&cp, json!({"access_rights": {"svc": {"api_id": "svc"}}})).await;
    // The key's own creation event drops it from the edge's cache and Redis when it arrives:
    // wait for it, so the lookup below is the one the edge keeps.
    dp.wait_for_revision(2).await;
    assert_eq!(
        call(&dp, "/svc/", &[("Authorization", &key)]).await.0,
        StatusCode::OK
    );

    cp.stop();
    eventually(Duration::from_secs(10), "gateway notices", || async {
        (!dp.connected()).then_some(())
    })
    .await;
    assert_eq!(
        call(&dp, "/svc/", &[("Authorization", &key)]).await.0,
        StatusCode::OK,
        "known key keeps working"
    );
    let (status, body) = call(&dp, "/svc/", &[("Authorization", "never-seen")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::FORBIDDEN,
            Some("Access to this API has been disallowed")
        )
    );
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn basic_auth_answers_as_tyk_and_never_caches_a_wrong_password() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let dp = Dp::regional(&cp, "eu").await;
    let mut api = protected_api("billing", &echo.url(), json!({}));
    api["name"] = json!("Billing");
    api["use_basic_auth"] = json!(true);
    cp.create_api(&api).await;
    dp.wait_for_revision(1).await;
    let user = format!("alice-{}", uuid::Uuid::new_v4().simple());
    let session = |pw: &str| json!({"access_rights": {"billing": {"api_id": "billing"}}, "basic_auth_data": {"password": pw}});
    let (status, _) = cp
        .call(
            Method::POST,
            &format!("/tyk/keys/{user}"),
            Some(&session("correct horse")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let raw = |header: Option<String>| {
        let dp = &dp;
        async move {
            let mut req = reqwest::Client::new().get(dp.url("/billing/x"));
            if let Some(h) = header {
                req = req.header("Authorization", h);
            }
            let resp = req.send().await.unwrap();
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (status, body["error"].as_str().map(str::to_owned), challenge)
        }
    };
    let realm = Some("Basic realm=\"Billing\"".to_owned());
    assert_eq!(
        raw(None).await,
        (
            StatusCode::UNAUTHORIZED,
            Some("Authorization field missing".into()),
            realm.clone()
        )
    );
    assert_eq!(
        raw(Some("Basic".into())).await.1.as_deref(),
        Some("Attempted access with malformed header, header not in basic auth format")
    );
    assert_eq!(
        raw(Some("Basic !!!".into())).await.1.as_deref(),
        Some("Attempted access with malformed header, auth data not encoded correctly")
    );
    let (status, message, _) = raw(Some(basic("a", "b:c"))).await;
    assert_eq!(
        (status, message.as_deref()),
        (
            StatusCode::BAD_REQUEST,
            Some("Attempted access with malformed header, values not in basic auth format")
        )
    );
    assert_eq!(
        raw(Some(basic("nobody", "x"))).await,
        (
            StatusCode::UNAUTHORIZED,
            Some("User not authorised".into()),
            realm.clone()
        )
    );
    assert_eq!(
        raw(Some(basic(&user, "wrong"))).await,
        (
            StatusCode::UNAUTHORIZED,
            Some("User not authorised".into()),
            realm.clone()
        )
    );
    assert_eq!(
        raw(Some(basic(&user, "correct horse"))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        raw(Some(basic(&user, "correct horse"))).await.0,
        StatusCode::OK,
        "cached success"
    );
    assert_eq!(
        raw(Some(basic(&user, "correct horsE"))).await.0,
        StatusCode::UNAUTHORIZED,
        "a wrong password after a cached success"
    );

    // A password changed on the control plane: the old one stops working at once.
    let (status, _) = cp
        .call(
            Method::PUT,
            &format!("/tyk/keys/{user}"),
            Some(&session("battery staple")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    eventually(Duration::from_secs(5), "old password refused", || async {
        (raw(Some(basic(&user, "correct horse"))).await.0 == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert_eq!(
        raw(Some(basic(&user, "battery staple"))).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn keys_past_their_lifetime_are_deleted_while_expired_keys_stay() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let dp = Dp::regional(&cp, "eu").await;
    cp.create_api(&protected_api("svc", &echo.url(), json!({})))
        .await;
    let mut short = protected_api("short", &echo.url(), json!({}));
    short["session_lifetime"] = json!(1);
    cp.create_api(&short).await;
    dp.wait_for_revision(2).await;

    let rights = json!({"svc": {"api_id": "svc"}, "short": {"api_id": "short"}});
    // Deleted by its own lifetime (403, gone from the CP too)...
    let by_key = create_key(
        &cp,
        json!({"access_rights": {"svc": {"api_id": "svc"}}, "session_lifetime": 1}),
    )
    .await;
    // ...by the lifetime of an API it has rights to...
    let by_api = create_key(&cp, json!({"access_rights": rights})).await;
    // ...while a key whose `expires` passes stays and answers 401.
    let soon = chrono_like_now() + 1;
    let expiring = create_key(
        &cp,
        json!({"access_rights": {"svc": {"api_id": "svc"}}, "expires": soon + 1}),
    )
    .await;
    for k in [&by_key, &by_api, &expiring] {
        assert_eq!(
            call(&dp, "/svc/", &[("Authorization", k)]).await.0,
            StatusCode::OK
        );
    }
    for k in [&by_key, &by_api] {
        let body = eventually(
            Duration::from_secs(10),
            "key deleted by lifetime",
            || async {
                let (status, body) = call(&dp, "/svc/", &[("Authorization", k)]).await;
                (status == StatusCode::FORBIDDEN).then_some(body)
            },
        )
        .await;
        assert_eq!(body["error"], "Access to this API has been disallowed");
        let (status, _) = cp.call(Method::GET, &format!("/tyk/keys/{k}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let body = eventually(Duration::from_secs(10), "key expired", || async {
        let (status, body) = call(&dp, "/svc/", &[("Authorization", &expiring)]).await;
        (status == StatusCode::UNAUTHORIZED).then_some(body)
    })
    .await;
    assert_eq!(body["error"], "Key has expired, please renew");
    let (status, _) = cp
        .call(Method::GET, &format!("/tyk/keys/{expiring}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "an expired key is kept");
}

#[tokio::test]
async fn allowed_urls_limit_paths_and_methods() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let dp = Dp::regional(&cp, "eu").await;
    cp.create_api(&protected_api("svc", &echo.url(), json!({})))
        .await;
    dp.wait_for_revision(1).await;
    let key = create_key(&cp, json!({"access_rights": {"svc": {"api_id": "svc", "allowed_urls": [
        {"url": "/svc/orders/[0-9]+$", "methods": ["GET"]}, {"url": "/svc/public", "methods": []}]}}})).await;
    let send = |method: reqwest::Method, path: &'static str| {
        let (dp, key) = (&dp, &key);
        async move {
            reqwest::Client::new()
                .request(method, dp.url(path))
                .header("Authorization", key)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        send(reqwest::Method::GET, "/svc/orders/42").await,
        StatusCode::OK
    );
    assert_eq!(
        send(reqwest::Method::DELETE, "/svc/orders/42").await,
        StatusCode::FORBIDDEN,
        "method not listed"
    );
    assert_eq!(
        send(reqwest::Method::GET, "/svc/orders/abc").await,
        StatusCode::FORBIDDEN,
        "path not matched"
    );
    assert_eq!(
        send(reqwest::Method::POST, "/svc/public/x").await,
        StatusCode::OK,
        "no methods listed: any"
    );
}

fn mashery_sha256(key: &str, secret: &str, t: i64) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("{key}{secret}{t}").as_bytes()))
}

#[tokio::test]
async fn mashery_signatures_are_checked_within_the_clock_skew() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let dp = Dp::regional(&cp, "eu").await;
    let signed = |id: &str, secret: &str, extra: Value| {
        let mut sig = json!({"algorithm": "MasherySHA256", "header": "X-Signature", "secret": secret, "allowed_clock_skew": 2});
        for (k, v) in extra.as_object().unwrap() {
            sig[k] = v.clone();
        }
        protected_api(
            id,
            &echo.url(),
            json!({"validate_signature": true, "signature": sig}),
        )
    };
    cp.create_api(&signed("literal", "shared-secret", json!({})))
        .await;
    cp.create_api(&signed(
        "meta",
        "$tyk_meta.sig_secret",
        json!({"error_code": 403, "error_message": "Signature \"bad\""}),
    ))
    .await;
    dp.wait_for_revision(2).await;
    let key = create_key(
        &cp,
        json!({"access_rights": {"literal": {"api_id": "literal"}, "meta": {"api_id": "meta"}}, "meta_data": {"sig_secret": "per-key"}}),
    )
    .await;
    let now = chrono_like_now();

    let good = mashery_sha256(&key, "shared-secret", now - 1);
    assert_eq!(
        call(
            &dp,
            "/literal/",
            &[("Authorization", &key), ("X-Signature", &good)]
        )
        .await
        .0,
        StatusCode::OK
    );
    let (status, body) = call(&dp, "/literal/", &[("Authorization", &key)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("Request signature verification failed")
        )
    );
    let stale = mashery_sha256(&key, "shared-secret", now - 60);
    assert_eq!(
        call(
            &dp,
            "/literal/",
            &[("Authorization", &key), ("X-Signature", &stale)]
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED,
        "outside the skew"
    );

    let per_key = mashery_sha256(&key, "per-key", now);
    assert_eq!(
        call(
            &dp,
            "/meta/",
            &[("Authorization", &key), ("X-Signature", &per_key)]
        )
        .await
        .0,
        StatusCode::OK,
        "secret from meta data"
    );
    let (status, body) = call(
        &dp,
        "/meta/",
        &[("Authorization", &key), ("X-Signature", &good)],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("Signature \"bad\"")),
        "configured status and message"
    );
}

#[tokio::test]
async fn basic_auth_from_the_body_is_checked_and_the_body_still_reaches_the_upstream() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let dp = Dp::regional(&cp, "eu").await;
    let mut api = protected_api("soap", &echo.url(), json!({}));
    api["use_basic_auth"] = json!(true);
    api["basic_auth"] = json!({"extract_from_body": true, "body_user_regexp": "<User>(.*)</User>", "body_password_regexp": "<Password>(.*)</Password>"});
    let mut no_group = api.clone();
    no_group["api_id"] = json!("bad");
    no_group["proxy"]["listen_path"] = json!("/bad/");
    no_group["basic_auth"]["body_user_regexp"] = json!("<User>.*</User>");
    let (status, body) = cp.call(Method::POST, "/tyk/apis", Some(&no_group)).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("basic_auth.body_user_regexp"))
    );
    cp.create_api(&api).await;
    dp.wait_for_revision(1).await;
    let user = format!("soap-{}", uuid::Uuid::new_v4().simple());
    let (status, _) = cp
        .call(Method::POST, &format!("/tyk/keys/{user}"), Some(&json!({"access_rights": {"soap": {"api_id": "soap"}}, "basic_auth_data": {"password": "pw"}})))
        .await;
    assert_eq!(status, StatusCode::OK);

    let post = |body: String| {
        let dp = &dp;
        async move {
            let resp = reqwest::Client::new()
                .post(dp.url("/soap/call"))
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            (status, resp.text().await.unwrap())
        }
    };
    let envelope =
        format!("<Envelope><User>{user}</User><Password>pw</Password><Data>42</Data></Envelope>");
    let (status, text) = post(envelope.clone()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let got: portcullis_tests::Received = serde_json::from_str(&text).unwrap();
    assert_eq!(
        got.body, envelope,
        "the body reaches the upstream unchanged"
    );

    let error = |text: String| {
        serde_json::from_str::<Value>(&text).unwrap()["error"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (status, text) = post("<Password>pw</Password>".into()).await;
    assert_eq!(
        (status, error(text).as_str()),
        (StatusCode::BAD_REQUEST, "Body do not contain username")
    );
    let (status, text) = post(format!("<User>{user}</User>")).await;
    assert_eq!(
        (status, error(text).as_str()),
        (StatusCode::BAD_REQUEST, "Body do not contain password")
    );
    let (status, text) = post(format!("<User>{user}</User><Password>nope</Password>")).await;
    assert_eq!(
        (status, error(text).as_str()),
        (StatusCode::UNAUTHORIZED, "User not authorised")
    );
}

#[tokio::test]
async fn a_key_revoked_while_no_gateway_of_the_region_ran_is_not_served_from_redis() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let prefix = format!("e2e:{}:region:", uuid::Uuid::new_v4().simple());
    let start = |prefix: String| {
        let cp = &cp;
        async move {
            Dp::start(
                cp,
                DpOptions {
                    token: Some(cp.token("default").await),
                    redis_url: Some(redis_url()),
                    redis_prefix: Some(prefix),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
        }
    };
    let first = start(prefix.clone()).await;
    cp.create_api(&protected_api("svc", &echo.url(), json!({})))
        .await;
    first.wait_for_revision(1).await;
    let key = create_key(&cp, json!({"access_rights": {"svc": {"api_id": "svc"}}})).await;
    // The lookup stores the session in the region's Redis.
    assert_eq!(
        call(&first, "/svc/", &[("Authorization", &key)]).await.0,
        StatusCode::OK
    );
    first.stop();

    // Revoked while no gateway of the region listens for the event: Redis still holds it.
    let (status, _) = cp
        .call(Method::DELETE, &format!("/tyk/keys/{key}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let second = start(prefix).await;
    second.wait_for_revision(3).await;
    let (status, body) = call(&second, "/svc/", &[("Authorization", &key)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::FORBIDDEN,
            Some("Access to this API has been disallowed")
        )
    );
}
