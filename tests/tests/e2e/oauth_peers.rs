//! The built-in OAuth 2.0 provider (issue 13, docs/oauth.md) against peers that misbehave or
//! differ: a notification webhook that refuses twice before it accepts, one that accepts and
//! holds every notification unanswered (token issuance must not wait for it), and a second
//! OAuth client library, requests-oauthlib, independent of Authlib, through both regions' edges.

use std::time::Duration;

use portcullis_tests::eventually;
use portcullis_tests::oauth::{
    HOOK_SECRET, REDIRECT, Setup, World, assert_oauth_error, assert_token,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("a string: {v}"))
        .to_owned()
}

/// `code` of the query of a redirect URI.
fn code_of(redirect: &str) -> String {
    url::Url::parse(redirect)
        .expect("redirect URI")
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code in the redirect")
}

/// The bearer call reached the upstream, which got the request below the listen path.
#[track_caller]
fn assert_reached(got: &(StatusCode, Value)) {
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert_eq!(
        (got.1["path"].as_str(), got.1["query"].as_str()),
        (Some("/resource"), Some("n=1")),
        "the upstream's record of the request: {}",
        got.1
    );
}

/// A raw answer of the requests-oauthlib client (`status`, `headers`, `body`) to a bearer call
/// of `{lp}resource?n=1`: answered 200 by the upstream, which got the request.
#[track_caller]
fn assert_call_reached(call: &Value) {
    assert_eq!(call["status"], 200, "the bearer call: {call:#}");
    assert_eq!(
        call["headers"]["x-upstream"], "python",
        "answered by the upstream: {call:#}"
    );
    assert_eq!(
        (
            call["body"]["path"].as_str(),
            call["body"]["query"].as_str()
        ),
        (Some("/resource"), Some("n=1")),
        "the upstream's record of the request: {call:#}"
    );
}

/// The webhook's first attempt carrying `access` as `new_oauth_token`, once there is one.
async fn attempt_for(w: &World, access: &str, what: &str) -> Value {
    eventually(Duration::from_secs(15), what, || async {
        w.side
            .hook_attempts()
            .await
            .into_iter()
            .find(|a| a["body"]["new_oauth_token"] == access)
    })
    .await
}

/// The delivery (a 2xx answer of the webhook) carrying `access`, once there is one.
async fn delivery_for(w: &World, access: &str, what: &str) -> Value {
    w.side.delivery("new_oauth_token", access, what).await
}

// ---------------------------------------------------------------- notifications that fail or stall

#[tokio::test]
async fn oauth_notification_refused_twice_is_delivered_on_the_third_attempt() {
    let w = World::with(Setup {
        notifications: true,
        ..Default::default()
    })
    .await;
    w.side
        .configure(json!({"hook": {"fail": 2, "fail_status": 500}}))
        .await;
    let (redirect, state) = w.code(&w.eu, true).await;
    let got = w.redeem(&w.eu, &redirect, &state, true).await;
    assert_token(&got);
    let access = s(&got["token"]["access_token"]);
    assert_reached(&w.bearer(&w.us, &access).await);

    let delivered = delivery_for(&w, &access, "the notification delivered after two 500s").await;
    assert_eq!(delivered["secret"], HOOK_SECRET, "{delivered:#}");
    assert_eq!(
        delivered["body"]["notification_type"], "new",
        "{delivered:#}"
    );
    assert_eq!(
        delivered["body"]["auth_code"],
        code_of(&redirect),
        "{delivered:#}"
    );
    assert_eq!(
        delivered["body"]["refresh_token"], got["token"]["refresh_token"],
        "{delivered:#}"
    );
    // The webhook saw three attempts of the same notification, each with the shared secret:
    // refused, refused, accepted; and one delivery.
    let attempts = w.side.hook_attempts().await;
    let answers: Vec<&Value> = attempts.iter().map(|a| &a["answer"]).collect();
    assert_eq!(
        answers,
        [&json!(500), &json!(500), &json!(200)],
        "{attempts:#?}"
    );
    for a in &attempts {
        assert_eq!(a["secret"], HOOK_SECRET, "{attempts:#?}");
        assert_eq!(a["body"], delivered["body"], "{attempts:#?}");
    }
    assert_eq!(w.side.hooks().await.len(), 1, "{attempts:#?}");
}

#[tokio::test]
async fn oauth_a_stalled_webhook_never_holds_up_token_issuance() {
    let w = World::with(Setup {
        notifications: true,
        ..Default::default()
    })
    .await;
    // Every notification is accepted and left unanswered until the test releases the webhook,
    // which it does only at the end.
    w.side.configure(json!({"hook": {"hold": true}})).await;

    let first = w.token(&w.eu, "client_credentials", json!({})).await;
    assert_token(&first);
    let first_access = s(&first["token"]["access_token"]);
    let held = attempt_for(&w, &first_access, "the first notification at the webhook").await;
    assert_eq!(held["answer"], "held", "{held:#}");
    assert_eq!(held["secret"], HOOK_SECRET, "{held:#}");

    // With that notification stalled at the webhook, a whole authorization-code flow at the
    // other edge, and both tokens in use in both regions.
    let (redirect, state) = w.code(&w.us, true).await;
    let second = w.redeem(&w.us, &redirect, &state, true).await;
    assert_token(&second);
    let second_access = s(&second["token"]["access_token"]);
    assert_reached(&w.bearer(&w.eu, &second_access).await);
    assert_reached(&w.bearer(&w.us, &first_access).await);
    // Nothing was answered yet: every token answer above came while the webhook held.
    assert_eq!(w.side.hooks().await, Vec::<Value>::new(), "no delivery yet");
    // The second token's notification is held too, its connection still open: the token
    // answer did not wait for that attempt to end (by an answer or a timeout).
    let held = attempt_for(&w, &second_access, "the second notification at the webhook").await;
    assert_eq!(
        (&held["answer"], held.get("abandoned")),
        (&json!("held"), None),
        "{held:#}"
    );
    assert_eq!(held["body"]["auth_code"], code_of(&redirect), "{held:#}");

    // Released: both notifications arrive, with the secret.
    w.side.release_hooks().await;
    for access in [&first_access, &second_access] {
        let d = delivery_for(&w, access, "a notification delivered after the release").await;
        assert_eq!(d["secret"], HOOK_SECRET, "{d:#}");
        assert_eq!(d["body"]["notification_type"], "new", "{d:#}");
    }
}

// ---------------------------------------------------------------- requests-oauthlib

#[tokio::test]
async fn oauth_requests_oauthlib_client_credentials_token_in_us_is_used_in_eu() {
    let w = World::start().await;
    let got = w
        .requests_oauthlib(
            "client_credentials",
            json!({"token_url": World::token_url(&w.us), "call_url": World::resource_url(&w.eu)}),
        )
        .await;
    assert_eq!(got["steps"], json!(["token", "call"]), "{got:#}");
    assert_token(&got["token"]);
    assert_eq!(
        got["token"]["body"]["refresh_token"],
        Value::Null,
        "{got:#}"
    );
    assert_call_reached(&got["call"]);
    assert_eq!(w.side.upstream().await.len(), 1, "one request upstream");

    // A wrong secret: requests-oauthlib reports the provider's error, and gets no token.
    let got = w
        .requests_oauthlib(
            "client_credentials",
            json!({"token_url": World::token_url(&w.eu), "client_secret": "not-the-secret",
                   "call_url": World::resource_url(&w.us)}),
        )
        .await;
    assert_eq!(got["steps"], json!([]), "{got:#}");
    assert_oauth_error(
        &got["token"],
        403,
        "invalid_client",
        Some("client authentication failed"),
    );
    assert_eq!(got["token"]["error"], "invalid_client", "{got:#}");
    assert_eq!(w.side.upstream().await.len(), 1, "nothing more upstream");
}

#[tokio::test]
async fn oauth_requests_oauthlib_authorization_code_in_eu_is_used_and_refreshed_in_us() {
    let w = World::start().await;
    // With requests-oauthlib's own PKCE (S256): authorized and redeemed in eu, the token used
    // in us, refreshed in us, the new token used in eu.
    let got = w
        .requests_oauthlib(
            "authorization_code",
            json!({
                "pkce": true,
                "authorize_url": World::authorize_url(&w.eu),
                "token_url": World::token_url(&w.eu),
                "call_url": World::resource_url(&w.us),
                "refresh_url": World::token_url(&w.us),
                "call_after_refresh_url": World::resource_url(&w.eu),
            }),
        )
        .await;
    assert_eq!(
        got["steps"],
        json!([
            "authorize",
            "portal",
            "token",
            "call",
            "refresh",
            "call_after_refresh"
        ]),
        "{got:#}"
    );
    assert_eq!(got["authorize"]["status"], 307, "{got:#}");
    assert_eq!(got["portal"]["status"], 302, "{got:#}");
    assert!(
        s(&got["redirect"]).starts_with(&format!("{REDIRECT}?")),
        "{got:#}"
    );
    // The portal got the library's challenge through the 307.
    let seen = w.side.seen().await;
    let form = seen["logins"][0]["form"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let field = |k: &str| {
        form.iter()
            .find(|p| p[0] == k)
            .and_then(|p| p[1].as_str())
            .map(str::to_owned)
    };
    assert_eq!(
        field("code_challenge_method").as_deref(),
        Some("S256"),
        "{seen:#}"
    );
    assert_eq!(
        field("code_challenge").map(|c| c.len()),
        Some(43),
        "{seen:#}"
    );
    assert_eq!(
        field("client_id").as_deref(),
        Some(w.client.id.as_str()),
        "{seen:#}"
    );

    assert_token(&got["token"]);
    let access = s(&got["token"]["body"]["access_token"]);
    let refresh = s(&got["token"]["body"]["refresh_token"]);
    assert_eq!(refresh.len(), 43, "{got:#}");
    assert_call_reached(&got["call"]);
    assert_token(&got["refresh"]);
    assert_ne!(
        s(&got["refresh"]["body"]["access_token"]),
        access,
        "{got:#}"
    );
    assert_ne!(
        s(&got["refresh"]["body"]["refresh_token"]),
        refresh,
        "refresh tokens rotate"
    );
    assert_call_reached(&got["call_after_refresh"]);
    // Both tokens in both regions, seen by the gateway's own client too.
    for dp in w.edges() {
        assert_reached(
            &w.bearer(dp, &s(&got["refresh"]["body"]["access_token"]))
                .await,
        );
    }

    // Without PKCE (a confidential client may leave it out): authorized in us, redeemed in
    // us, used in eu.
    let got = w
        .requests_oauthlib(
            "authorization_code",
            json!({
                "pkce": false,
                "authorize_url": World::authorize_url(&w.us),
                "token_url": World::token_url(&w.us),
                "call_url": World::resource_url(&w.eu),
            }),
        )
        .await;
    assert_eq!(
        got["steps"],
        json!(["authorize", "portal", "token", "call"]),
        "{got:#}"
    );
    assert_token(&got["token"]);
    assert_call_reached(&got["call"]);
}
