//! Policies, rate limits and quotas at the edge, counted in the regional Redis.

use std::time::Duration;

use futures_util::future::join_all;
use portcullis_tests::own_redis::OwnRedis;
use portcullis_tests::{Cp, Dp, DpOptions, EchoUpstream, TestDb, eventually, keyless_api};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn setup() -> (TestDb, Cp, EchoUpstream, Dp) {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let dp = Dp::regional(&cp, "eu").await;
    let mut api = keyless_api("svc", "/svc/", &echo.url());
    api["use_keyless"] = json!(false);
    cp.create_api(&api).await;
    let mut other = keyless_api("other", "/other/", &echo.url());
    other["use_keyless"] = json!(false);
    cp.create_api(&other).await;
    dp.wait_for_revision(2).await;
    (db, cp, echo, dp)
}

async fn key(cp: &Cp, session: Value) -> String {
    let (status, body) = cp.call(Method::POST, "/tyk/keys", Some(&session)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["key"].as_str().unwrap().to_owned()
}

async fn get(dp: &Dp, path: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(dp.url(path))
        .header("Authorization", key)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn rate_limit_answers_429_with_headers_and_quota_403() {
    let (_db, cp, _echo, dp) = setup().await;
    let limited = key(
        &cp,
        json!({"rate": 3, "per": 60, "quota_max": -1, "access_rights": {"svc": {"api_id": "svc"}}}),
    )
    .await;
    for remaining in [2, 1, 0] {
        let resp = get(&dp, "/svc/", &limited).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-ratelimit-limit"], "3");
        assert_eq!(
            resp.headers()["x-ratelimit-remaining"],
            remaining.to_string().as_str()
        );
    }
    let resp = get(&dp, "/svc/", &limited).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
    let reset: u64 = resp.headers()["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=60).contains(&reset),
        "seconds until a slot frees: {reset}"
    );
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "Rate Limit Exceeded"
    );

    let quota = key(&cp, json!({"quota_max": 2, "quota_renewal_rate": 3600, "access_rights": {"svc": {"api_id": "svc"}}})).await;
    assert_eq!(get(&dp, "/svc/", &quota).await.status(), StatusCode::OK);
    assert_eq!(get(&dp, "/svc/", &quota).await.status(), StatusCode::OK);
    let resp = get(&dp, "/svc/", &quota).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "Quota exceeded"
    );
}

#[tokio::test]
async fn limits_are_exact_under_concurrency_and_counted_per_region() {
    let (_db, cp, _echo, eu) = setup().await;
    let us = Dp::regional(&cp, "us").await;
    us.wait_for_revision(2).await;
    let quota = key(
        &cp,
        json!({"quota_max": 10, "quota_renewal_rate": 3600, "access_rights": {"svc": {"api_id": "svc"}}}),
    )
    .await;
    let statuses =
        join_all((0..30).map(|_| async { get(&eu, "/svc/", &quota).await.status() })).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        10,
        "exactly the quota under 30 concurrent requests"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::FORBIDDEN)
            .count(),
        20
    );

    let rate = key(
        &cp,
        json!({"rate": 7, "per": 60, "access_rights": {"svc": {"api_id": "svc"}}}),
    )
    .await;
    let statuses =
        join_all((0..25).map(|_| async { get(&eu, "/svc/", &rate).await.status() })).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        7,
        "exactly the rate under 25 concurrent requests"
    );
    // Another region counts on its own Redis.
    assert_eq!(get(&us, "/svc/", &rate).await.status(), StatusCode::OK);
    assert_eq!(get(&us, "/svc/", &quota).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn policy_edits_change_existing_keys_without_touching_them() {
    let (_db, cp, _echo, dp) = setup().await;
    let policy = json!({"id": "gold", "rate": 100, "per": 1, "quota_max": -1, "access_rights": {"svc": {"api_id": "svc", "versions": ["Default"]}}});
    let (status, _) = cp.call(Method::POST, "/tyk/policies", Some(&policy)).await;
    assert_eq!(status, StatusCode::OK);
    let member = key(&cp, json!({"apply_policies": ["gold"]})).await;
    dp.wait_for_revision(3).await;
    assert_eq!(get(&dp, "/svc/", &member).await.status(), StatusCode::OK);
    assert_eq!(
        get(&dp, "/other/", &member).await.status(),
        StatusCode::FORBIDDEN,
        "rights come from the policy"
    );

    // The policy now grants only the other API, with a rate of one per minute.
    let moved = json!({"id": "gold", "rate": 1, "per": 60, "quota_max": -1, "access_rights": {"other": {"api_id": "other"}}});
    let (status, _) = cp
        .call(Method::PUT, "/tyk/policies/gold", Some(&moved))
        .await;
    assert_eq!(status, StatusCode::OK);
    eventually(Duration::from_secs(10), "policy change applied", || async {
        (get(&dp, "/svc/", &member).await.status() == StatusCode::FORBIDDEN).then_some(())
    })
    .await;
    // The key's requests so far count against the new rate (one counter per key), so a
    // fresh member shows the new limit from its first request.
    let fresh = key(&cp, json!({"apply_policies": ["gold"]})).await;
    assert_eq!(get(&dp, "/other/", &fresh).await.status(), StatusCode::OK);
    assert_eq!(
        get(&dp, "/other/", &fresh).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    // An inactive policy makes the key inactive; a missing lone policy refuses the key.
    let (status, _) = cp.call(Method::PUT, "/tyk/policies/gold", Some(&json!({"id": "gold", "is_inactive": true, "access_rights": {"other": {"api_id": "other"}}}))).await;
    assert_eq!(status, StatusCode::OK);
    let body = eventually(
        Duration::from_secs(10),
        "inactive policy applied",
        || async {
            let resp = get(&dp, "/other/", &member).await;
            (resp.status() == StatusCode::FORBIDDEN).then_some(resp.json::<Value>().await.unwrap())
        },
    )
    .await;
    assert_eq!(body["error"], "Key is inactive, please renew");
    // The control plane refuses a key whose policies grant nothing, so the policy goes after.
    let doomed = json!({"id": "doomed", "access_rights": {"svc": {"api_id": "svc"}}});
    let (status, _) = cp.call(Method::POST, "/tyk/policies", Some(&doomed)).await;
    assert_eq!(status, StatusCode::OK);
    let orphan = key(&cp, json!({"apply_policies": ["doomed"]})).await;
    let (status, _) = cp.call(Method::DELETE, "/tyk/policies/doomed", None).await;
    assert_eq!(status, StatusCode::OK);
    eventually(
        Duration::from_secs(10),
        "policy deletion applied",
        || async {
            (get(&dp, "/svc/", &orphan).await.status() == StatusCode::FORBIDDEN).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_redis_outage_lets_known_keys_through_unlimited_and_limits_return_with_redis() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let redis = OwnRedis::on_free_port().await;
    let port = redis.port;
    let dp = Dp::start(
        &cp,
        DpOptions {
            token: Some(cp.token("default").await),
            redis_url: Some(redis.url()),
            no_local_session_cache: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut api = keyless_api("svc", "/svc/", &echo.url());
    api["use_keyless"] = json!(false);
    cp.create_api(&api).await;
    dp.wait_for_revision(1).await;
    let limited = key(
        &cp,
        json!({"rate": 1, "per": 3600, "access_rights": {"svc": {"api_id": "svc"}}}),
    )
    .await;
    assert_eq!(get(&dp, "/svc/", &limited).await.status(), StatusCode::OK);
    assert_eq!(
        get(&dp, "/svc/", &limited).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    drop(redis);
    // Sessions come from the control plane; limits cannot be counted, so they are not enforced.
    for _ in 0..3 {
        assert_eq!(get(&dp, "/svc/", &limited).await.status(), StatusCode::OK);
    }
    assert_eq!(
        get(&dp, "/svc/", "unknown-key").await.status(),
        StatusCode::FORBIDDEN
    );

    let _redis = OwnRedis::start(port).await;
    eventually(Duration::from_secs(15), "limits enforced again", || async {
        (get(&dp, "/svc/", &limited).await.status() == StatusCode::TOO_MANY_REQUESTS).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_updated_rate_limit_applies_in_every_region() {
    let (_db, cp, _echo, eu) = setup().await;
    let us = Dp::regional(&cp, "us").await;
    us.wait_for_revision(2).await;
    let name = format!("regional-{}", uuid::Uuid::new_v4().simple());
    let session =
        |rate: u32| json!({"rate": rate, "per": 3600, "access_rights": {"svc": {"api_id": "svc"}}});
    let (status, _) = cp
        .call(
            Method::POST,
            &format!("/tyk/keys/{name}"),
            Some(&session(1)),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for dp in [&eu, &us] {
        assert_eq!(get(dp, "/svc/", &name).await.status(), StatusCode::OK);
        assert_eq!(
            get(dp, "/svc/", &name).await.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    // Raised on the control plane: both regions admit again, with the new limit in the headers.
    let (status, _) = cp
        .call(
            Method::PUT,
            &format!("/tyk/keys/{name}"),
            Some(&session(50)),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for dp in [&eu, &us] {
        let resp = eventually(Duration::from_secs(5), "new limit applied", || async {
            let resp = get(dp, "/svc/", &name).await;
            (resp.status() == StatusCode::OK).then_some(resp)
        })
        .await;
        assert_eq!(resp.headers()["x-ratelimit-limit"], "50");
    }
}
