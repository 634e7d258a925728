//! The built-in OAuth 2.0 provider (issue 13, docs/oauth.md), driven by Authlib: every grant
//! through two edges in two regions with the login-portal step, each error case with its status
//! and body, a code raced at two edges, refresh-token reuse, revocations reaching every region,
//! notifications, the RFC 8414 document, and no secret, code or token left in plaintext.

use std::time::Duration;

use portcullis_tests::idp_stack::assert_error;
use portcullis_tests::oauth::{
    self, API_ID, CHALLENGE, HOOK_SECRET, LP, OTHER_REDIRECT, PORTAL_SECRET, REDIRECT, Setup,
    UNREGISTERED_REDIRECT, VERIFIER, World, assert_no_store, assert_oauth_error, assert_token,
    authlib, enc, no_redirects,
};
use portcullis_tests::{ADMIN_SECRET, CpOptions, Dp, DpOptions, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::secrets_at_rest::{LogBuffer, Place, Secret, leaks, postgres_places, redis_places};

const NOT_AUTHORISED: &str = "Key not authorised";
const CLIENT_REVOKED: &str = "Key not authorised. OAuth client access was revoked";
const ADMIN_REFUSED: &str = "Attempted administrative access with invalid or missing key!";

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("a string: {v}"))
        .to_owned()
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

/// `code` of the query of a redirect URI.
fn code_of(redirect: &str) -> String {
    url::Url::parse(redirect)
        .expect("redirect URI")
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code in the redirect")
}

/// GET `{lp}oauth/authorize?<query>` without following redirects: status, Location, body.
async fn authorize_raw(dp: &Dp, query: &str) -> (StatusCode, Option<String>, Value) {
    let resp = no_redirects()
        .get(format!("{}?{query}", World::authorize_url(dp)))
        .send()
        .await
        .expect("gateway reachable");
    let status = resp.status();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        location,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A form POST to `path` at `dp`: status, headers as a JSON object, body.
async fn post_form(dp: &Dp, path: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Value {
    let mut req = no_redirects().post(dp.url(path)).form(form);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("gateway reachable");
    let status = resp.status().as_u16();
    let hs: serde_json::Map<String, Value> = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or_default())))
        .collect();
    let text = resp.text().await.unwrap_or_default();
    json!({"status": status, "headers": hs,
           "body": serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text))})
}

fn auth_query(client_id: &str, redirect: &str, extra: &str) -> String {
    format!(
        "response_type=code&client_id={}&redirect_uri={}&state=st-1{extra}",
        enc(client_id),
        enc(redirect)
    )
}

// ---------------------------------------------------------------- grants, end to end

#[tokio::test]
async fn oauth_authorization_code_with_pkce_made_in_eu_is_used_and_refreshed_in_us() {
    let w = World::start().await;
    let (redirect, state) = w.code(&w.eu, true).await;
    assert!(redirect.starts_with(&format!("{REDIRECT}?")), "{redirect}");
    // The portal got the client's parameters, PKCE included, through the 307.
    let seen = w.side.seen().await;
    let form = &seen["logins"][0]["form"];
    for (k, v) in [
        ("client_id", w.client.id.as_str()),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("state", state.as_str()),
        ("code_challenge_method", "S256"),
    ] {
        assert!(
            form.as_array()
                .is_some_and(|f| f.iter().any(|p| p[0] == k && p[1] == v)),
            "{k}={v} reached the portal: {seen:#}"
        );
    }

    let got = w.redeem(&w.eu, &redirect, &state, true).await;
    assert_token(&got);
    let access = s(&got["token"]["access_token"]);
    let refresh = s(&got["token"]["refresh_token"]);
    assert_eq!(refresh.len(), 43, "{got:#}");

    // First use in the other region, with Authlib's bearer placement.
    let call = authlib(w.client.job(
        "call",
        json!({"url": w.us.url(&format!("{LP}resource?n=1")), "access_token": access}),
    ))
    .await;
    assert_reached(&(
        StatusCode::from_u16(call["status"].as_u64().unwrap() as u16).unwrap(),
        call["body"].clone(),
    ));
    assert_eq!(
        call["headers"]["x-upstream"], "python",
        "answered by the upstream: {call:#}"
    );
    assert_eq!(
        w.side.upstream().await.len(),
        1,
        "one request reached the upstream"
    );

    // Refreshed in the other region: a new pair, usable in the first region.
    let got = w.refresh(&w.us, &refresh).await;
    assert_token(&got);
    let access2 = s(&got["token"]["access_token"]);
    let refresh2 = s(&got["token"]["refresh_token"]);
    assert_ne!(access2, access);
    assert_ne!(refresh2, refresh, "refresh tokens rotate");
    assert_reached(&w.bearer(&w.eu, &access2).await);
    assert_reached(&w.bearer(&w.us, &access2).await);
}

#[tokio::test]
async fn oauth_authorization_code_through_the_edges_portal_route_with_form_client_auth() {
    let w = World::with(Setup {
        portal_at_edge: true,
        ..Default::default()
    })
    .await;
    let post = w
        .client
        .with("client_secret_post", w.client.secret.as_deref());
    let got = w
        .authorize_as(&post, &w.us, json!({"code_verifier": VERIFIER}))
        .await;
    assert_eq!(got["ok"], true, "{got:#}");
    let got = w
        .token_as(
            &post,
            &w.us,
            "authorization_code",
            json!({"authorization_response": got["redirect"], "state": got["state"], "code_verifier": VERIFIER}),
        )
        .await;
    assert_token(&got);
    assert_reached(&w.bearer(&w.eu, &s(&got["token"]["access_token"])).await);
}

#[tokio::test]
async fn oauth_edge_portal_route_needs_the_portal_secret_and_is_closed_without_one() {
    let w = World::start().await;
    let path = format!("{LP}tyk/oauth/authorize-client/");
    let form = [
        ("response_type", "code"),
        ("client_id", w.client.id.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    for secret in [None, Some("wrong"), Some(ADMIN_SECRET)] {
        let headers: Vec<(&str, &str)> = secret
            .map(|s| ("X-Tyk-Authorization", s))
            .into_iter()
            .collect();
        let got = post_form(&w.eu, &path, &form, &headers).await;
        assert_eq!(
            (got["status"].as_u64(), &got["body"]),
            (
                Some(403),
                &json!({"status": "error", "message": ADMIN_REFUSED})
            ),
            "secret {secret:?}: {got:#}"
        );
    }
    let got = post_form(
        &w.eu,
        &path,
        &form,
        &[("X-Tyk-Authorization", PORTAL_SECRET)],
    )
    .await;
    assert_eq!(got["status"], 200, "{got:#}");
    assert!(
        s(&got["body"]["redirect_to"]).starts_with(&format!("{REDIRECT}?code=")),
        "{got:#}"
    );

    // An edge without --oauth-portal-secret has no such route.
    let closed = Dp::start(
        &w.cp,
        DpOptions {
            token: Some(w.cp.token("default").await),
            ..Default::default()
        },
    )
    .await
    .expect("gateway starts");
    w.wait_for_client(&closed).await;
    let got = post_form(
        &closed,
        &path,
        &form,
        &[("X-Tyk-Authorization", PORTAL_SECRET)],
    )
    .await;
    assert_eq!(got["status"], 404, "{got:#}");
}

#[tokio::test]
async fn oauth_implicit_token_response_type_gives_a_token_in_the_fragment() {
    let w = World::start().await;
    let got = w
        .authorize_as(&w.client, &w.eu, json!({"response_type": "token"}))
        .await;
    assert_eq!(got["ok"], true, "{got:#}");
    assert!(
        s(&got["redirect"]).starts_with(&format!("{REDIRECT}#access_token=")),
        "{got:#}"
    );
    let token = &got["token"];
    assert_eq!(token["token_type"], "bearer", "{got:#}");
    assert_eq!(token["state"], got["state"], "{got:#}");
    assert_reached(&w.bearer(&w.us, &s(&token["access_token"])).await);
}

#[tokio::test]
async fn oauth_password_grant_against_a_basic_auth_user() {
    let w = World::start().await;
    w.basic_user("alice", "alice-password-123").await;
    let got = w
        .token(
            &w.eu,
            "password",
            json!({"username": "alice", "password": "alice-password-123"}),
        )
        .await;
    assert_token(&got);
    assert_reached(&w.bearer(&w.us, &s(&got["token"]["access_token"])).await);
    let got = w
        .token(
            &w.us,
            "password",
            json!({"username": "alice", "password": "wrong-password"}),
        )
        .await;
    assert_oauth_error(
        &got,
        403,
        "invalid_grant",
        Some("invalid username or password"),
    );
    let got = w
        .token(
            &w.us,
            "password",
            json!({"username": "nobody", "password": "alice-password-123"}),
        )
        .await;
    assert_oauth_error(
        &got,
        403,
        "invalid_grant",
        Some("invalid username or password"),
    );
}

#[tokio::test]
async fn oauth_client_credentials_grant_gives_a_token_without_refresh() {
    let w = World::start().await;
    let got = w.token(&w.us, "client_credentials", json!({})).await;
    assert_token(&got);
    assert_eq!(got["body"]["refresh_token"], Value::Null, "{got:#}");
    assert_reached(&w.bearer(&w.eu, &s(&got["token"]["access_token"])).await);
}

#[tokio::test]
async fn oauth_public_client_with_pkce_gets_tokens_but_not_client_credentials() {
    let w = World::with(Setup {
        public_client: true,
        ..Default::default()
    })
    .await;
    let (redirect, state) = w.code(&w.us, true).await;
    let got = w.redeem(&w.eu, &redirect, &state, true).await;
    assert_token(&got);
    assert_reached(&w.bearer(&w.us, &s(&got["token"]["access_token"])).await);
    let got = w.token(&w.eu, "client_credentials", json!({})).await;
    assert_oauth_error(
        &got,
        403,
        "unauthorized_client",
        Some("a public client may use authorization_code and refresh_token only"),
    );
}

// ---------------------------------------------------------------- revocation

#[tokio::test]
async fn oauth_revoked_access_token_is_refused_in_every_region() {
    let w = World::start().await;
    let t = w.tokens().await;
    let access = s(&t["access_token"]);
    for dp in w.edges() {
        assert_reached(&w.bearer(dp, &access).await);
    }
    let got = w.revoke(&w.us, &access, Some("access_token")).await;
    assert_eq!(
        (got["status"].as_u64(), &got["body"]),
        (
            Some(200),
            &json!({"status": "ok", "message": "token revoked successfully"})
        ),
        "{got:#}"
    );
    assert_no_store(&got);
    w.wait_refused(&access, NOT_AUTHORISED).await;
    // RFC 7009: an unknown token is still a 200.
    let got = w
        .revoke(&w.eu, "no-such-token-0123456789abcdef", None)
        .await;
    assert_eq!(got["status"], 200, "{got:#}");
}

#[tokio::test]
async fn oauth_refresh_after_revoke_is_invalid_grant() {
    let w = World::start().await;
    let t = w.tokens().await;
    let refresh = s(&t["refresh_token"]);
    let got = w.revoke(&w.eu, &refresh, Some("refresh_token")).await;
    assert_eq!(got["status"], 200, "{got:#}");
    let got = w.refresh(&w.us, &refresh).await;
    assert_oauth_error(
        &got,
        403,
        "invalid_grant",
        Some("the refresh token is unknown, expired or revoked"),
    );
}

#[tokio::test]
async fn oauth_revoke_all_revokes_every_token_of_the_client() {
    let w = World::start().await;
    let a = s(&w.tokens().await["access_token"]);
    let b = s(&w.token(&w.us, "client_credentials", json!({})).await["token"]["access_token"]);
    for t in [&a, &b] {
        assert_reached(&w.bearer(&w.us, t).await);
    }
    let path = format!("{LP}oauth/revoke_all");
    let got = post_form(&w.eu, &path, &[("client_id", w.client.id.as_str())], &[]).await;
    assert_eq!(
        (got["status"].as_u64(), &got["body"]),
        (
            Some(403),
            &json!({"status": "error", "message": "client_secret is required"})
        ),
        "{got:#}"
    );
    let secret = w.client.secret.clone().unwrap();
    let got = post_form(
        &w.eu,
        &path,
        &[
            ("client_id", w.client.id.as_str()),
            ("client_secret", &secret),
        ],
        &[],
    )
    .await;
    assert_eq!(
        (got["status"].as_u64(), &got["body"]),
        (
            Some(200),
            &json!({"status": "ok", "message": "tokens revoked successfully"})
        ),
        "{got:#}"
    );
    w.wait_refused(&a, NOT_AUTHORISED).await;
    w.wait_refused(&b, NOT_AUTHORISED).await;
}

#[tokio::test]
async fn oauth_deleting_a_client_refuses_its_tokens_at_every_edge() {
    let w = World::start().await;
    let t = w.tokens().await;
    let access = s(&t["access_token"]);
    for dp in w.edges() {
        assert_reached(&w.bearer(dp, &access).await);
    }
    let (status, body) =
        w.cp.call(
            Method::DELETE,
            &format!("/tyk/oauth/clients/{API_ID}/{}", w.client.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    w.wait_refused(&access, CLIENT_REVOKED).await;
    let got = w.refresh(&w.eu, &s(&t["refresh_token"])).await;
    assert_oauth_error(&got, 403, "invalid_client", None);
}

#[tokio::test]
async fn oauth_deleting_the_tokens_key_revokes_it_at_every_edge() {
    let w = World::start().await;
    let access = s(&w.tokens().await["access_token"]);
    for dp in w.edges() {
        assert_reached(&w.bearer(dp, &access).await);
    }
    let (status, body) =
        w.cp.call(Method::DELETE, &format!("/tyk/keys/{access}"), None)
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    w.wait_refused(&access, NOT_AUTHORISED).await;
}

#[tokio::test]
async fn oauth_bearer_header_errors_are_tyks() {
    let w = World::start().await;
    for dp in w.edges() {
        let path = format!("{LP}resource?n=1");
        assert_error(
            &portcullis_tests::idp_stack::get(dp, &path, &[]).await,
            400,
            "Authorization field missing",
        );
        assert_error(
            &portcullis_tests::idp_stack::get(dp, &path, &[("Authorization", "Basic x")]).await,
            400,
            "Bearer token malformed",
        );
        assert_error(
            &w.bearer(dp, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
                .await,
            403,
            NOT_AUTHORISED,
        );
    }
    assert!(
        w.side.upstream().await.is_empty(),
        "nothing reached the upstream"
    );
}

// ---------------------------------------------------------------- error cases

#[tokio::test]
async fn oauth_wrong_client_secret_is_invalid_client() {
    let w = World::start().await;
    let (redirect, state) = w.code(&w.eu, true).await;
    for method in ["client_secret_basic", "client_secret_post"] {
        let wrong = w.client.with(method, Some("not-the-secret"));
        let got = w
            .token_as(
                &wrong,
                &w.eu,
                "authorization_code",
                json!({"authorization_response": redirect, "state": state, "code_verifier": VERIFIER}),
            )
            .await;
        assert_oauth_error(
            &got,
            403,
            "invalid_client",
            Some("client authentication failed"),
        );
        assert_no_store(&got);
    }
    let got = w
        .token_as(
            &w.client.with("client_secret_basic", Some("not-the-secret")),
            &w.us,
            "client_credentials",
            json!({}),
        )
        .await;
    assert_oauth_error(
        &got,
        403,
        "invalid_client",
        Some("client authentication failed"),
    );
}

#[tokio::test]
async fn oauth_unregistered_redirect_uri_at_authorize_is_refused_without_a_redirect() {
    let w = World::start().await;
    let pkce = format!("&code_challenge={CHALLENGE}&code_challenge_method=S256");
    for bad in [
        UNREGISTERED_REDIRECT.to_owned(),
        format!("{REDIRECT}/more"),
        format!("{REDIRECT}?x=1"),
    ] {
        let (status, location, body) =
            authorize_raw(&w.eu, &auth_query(&w.client.id, &bad, &pkce)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{bad}: {body}");
        assert_eq!(location, None, "never a redirect to {bad}");
        assert!(
            matches!(
                body["error"].as_str(),
                Some("invalid_request" | "unauthorized_client")
            ),
            "{bad}: {body}"
        );
        assert!(body["error_description"].is_string(), "{body}");
    }
    // An unknown client: the same, no redirect.
    let (status, location, body) =
        authorize_raw(&w.us, &auth_query("no-such-client", REDIRECT, &pkce)).await;
    assert_eq!((status, location), (StatusCode::FORBIDDEN, None), "{body}");
    assert!(
        matches!(
            body["error"].as_str(),
            Some("invalid_request" | "unauthorized_client")
        ),
        "{body}"
    );
    // Through Authlib too; the portal never saw a login.
    let got = authlib(w.client.job(
        "authorize",
        json!({"authorize_url": World::authorize_url(&w.eu), "redirect_uri": UNREGISTERED_REDIRECT,
               "code_verifier": VERIFIER}),
    ))
    .await;
    assert_eq!(
        (got["ok"].as_bool(), got["authorize"]["status"].as_u64()),
        (Some(false), Some(403)),
        "{got:#}"
    );
    assert_eq!(
        got["authorize"]["headers"]["location"],
        Value::Null,
        "{got:#}"
    );
    assert_eq!(w.side.seen().await["logins"], json!([]), "no login");
    // The second registered URI is an exact match.
    let (status, location, body) =
        authorize_raw(&w.eu, &auth_query(&w.client.id, OTHER_REDIRECT, &pkce)).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT, "{body}");
    assert!(
        location.is_some_and(|l| l.starts_with(&format!("{}?", w.side.login_url()))),
        "to the portal"
    );
}

#[tokio::test]
async fn oauth_unsupported_response_type_at_authorize() {
    let w = World::with(Setup {
        authorize_types: vec!["code"],
        ..Default::default()
    })
    .await;
    let q = format!(
        "response_type=token&client_id={}&redirect_uri={}",
        enc(&w.client.id),
        enc(REDIRECT)
    );
    let (status, location, body) = authorize_raw(&w.eu, &q).await;
    assert_eq!((status, location), (StatusCode::FORBIDDEN, None), "{body}");
    assert_eq!(body["error"], "unsupported_response_type", "{body}");
}

#[tokio::test]
async fn oauth_redirect_uri_differing_at_the_token_endpoint_is_invalid_grant() {
    let w = World::start().await;
    let (redirect, state) = w.code(&w.eu, true).await;
    let got = w
        .token(
            &w.us,
            "authorization_code",
            json!({"authorization_response": redirect, "state": state, "code_verifier": VERIFIER,
                   "redirect_uri": OTHER_REDIRECT}),
        )
        .await;
    assert_oauth_error(
        &got,
        403,
        "invalid_grant",
        Some("redirect_uri differs from the one the code was issued for"),
    );
}

#[tokio::test]
async fn oauth_expired_code_is_invalid_grant() {
    let w = World::with(Setup {
        cp: CpOptions {
            oauth_code_ttl: Some(Duration::from_secs(1)),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let (kept, kept_state) = w.code(&w.eu, true).await;
    let (redirect, state) = w.code(&w.eu, true).await;
    let pool = w.db.pool().await;
    let hash = portcullis_proto::key_hash::key_hash(&code_of(&redirect));
    let (lifetime,): (f64,) = sqlx::query_as(
        "SELECT extract(epoch FROM expires_at - created_at)::float8 FROM oauth_codes WHERE code_hash = $1",
    )
    .bind(&hash)
    .fetch_one(&pool)
    .await
    .expect("the code is stored by its hash");
    assert!(
        lifetime <= 1.5,
        "--oauth-code-ttl 1 sets the lifetime: {lifetime} s"
    );
    // The control: the other code outlives the wait, so what differs below is expiry alone.
    let kept_hash = portcullis_proto::key_hash::key_hash(&code_of(&kept));
    let updated = sqlx::query(
        "UPDATE oauth_codes SET expires_at = now() + interval '1 hour' WHERE code_hash = $1",
    )
    .bind(&kept_hash)
    .execute(&pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(updated, 1);
    pool.close().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let got = w.redeem(&w.us, &redirect, &state, true).await;
    assert_oauth_error(
        &got,
        403,
        "invalid_grant",
        Some("the code is unknown, expired or already used"),
    );
    assert_token(&w.redeem(&w.us, &kept, &kept_state, true).await);
}

#[tokio::test]
async fn oauth_reused_code_is_invalid_grant() {
    let w = World::start().await;
    let (redirect, state) = w.code(&w.eu, true).await;
    assert_token(&w.redeem(&w.eu, &redirect, &state, true).await);
    for dp in w.edges() {
        let got = w.redeem(dp, &redirect, &state, true).await;
        assert_oauth_error(
            &got,
            403,
            "invalid_grant",
            Some("the code is unknown, expired or already used"),
        );
    }
}

#[tokio::test]
async fn oauth_disallowed_grant_type_is_unsupported_grant_type() {
    let w = World::with(Setup {
        grants: vec!["authorization_code", "refresh_token"],
        ..Default::default()
    })
    .await;
    w.basic_user("bob", "bob-password-123").await;
    for (grant, fields) in [
        ("client_credentials", json!({})),
        (
            "password",
            json!({"username": "bob", "password": "bob-password-123"}),
        ),
    ] {
        let got = w.token(&w.eu, grant, fields).await;
        assert_oauth_error(
            &got,
            403,
            "unsupported_grant_type",
            Some("the grant type is not supported by this API"),
        );
    }
}

#[tokio::test]
async fn oauth_missing_or_wrong_pkce_verifier_is_invalid_grant() {
    let w = World::start().await;
    let (redirect, state) = w.code(&w.eu, true).await;
    let got = w.redeem(&w.us, &redirect, &state, false).await;
    assert_oauth_error(
        &got,
        403,
        "invalid_grant",
        Some("code_verifier is required for this code"),
    );
    let (redirect, state) = w.code(&w.eu, true).await;
    let got = w
        .token(
            &w.us,
            "authorization_code",
            json!({"authorization_response": redirect, "state": state,
                   "code_verifier": "x".repeat(43)}),
        )
        .await;
    assert_oauth_error(
        &got,
        403,
        "invalid_grant",
        Some("code_verifier does not match"),
    );
}

#[tokio::test]
async fn oauth_public_client_without_code_challenge_is_refused_at_authorize() {
    let w = World::with(Setup {
        public_client: true,
        ..Default::default()
    })
    .await;
    for (extra, description) in [
        (
            "",
            "PKCE code_challenge (S256) is required for public clients",
        ),
        (
            "&code_challenge=abc&code_challenge_method=plain",
            "code_challenge_method must be S256",
        ),
    ] {
        let (status, location, body) =
            authorize_raw(&w.eu, &auth_query(&w.client.id, REDIRECT, extra)).await;
        assert_eq!(
            (status, location),
            (StatusCode::FORBIDDEN, None),
            "{extra}: {body}"
        );
        assert_eq!(
            body,
            json!({"error": "invalid_request", "error_description": description}),
            "{extra}"
        );
    }
    assert_eq!(w.side.seen().await["logins"], json!([]), "no login");
}

// ---------------------------------------------------------------- races and rotation

#[tokio::test]
async fn oauth_a_code_raced_at_two_edges_is_redeemed_once() {
    let w = World::start().await;
    for round in 0..3 {
        let (redirect, state) = w.code(&w.eu, true).await;
        let (a, b) = tokio::join!(
            w.redeem(&w.eu, &redirect, &state, true),
            w.redeem(&w.us, &redirect, &state, true)
        );
        let wins: Vec<&Value> = [&a, &b].into_iter().filter(|r| r["ok"] == true).collect();
        assert_eq!(
            wins.len(),
            1,
            "round {round}: exactly one 200:\n{a:#}\n{b:#}"
        );
        let lost = if a["ok"] == true { &b } else { &a };
        assert_oauth_error(
            lost,
            403,
            "invalid_grant",
            Some("the code is unknown, expired or already used"),
        );
        assert_token(wins[0]);
    }
}

#[tokio::test]
async fn oauth_refresh_token_reuse_revokes_the_family() {
    let w = World::start().await;
    let t = w.tokens().await;
    let (access1, refresh1) = (s(&t["access_token"]), s(&t["refresh_token"]));
    let got = w.refresh(&w.us, &refresh1).await;
    assert_token(&got);
    let (access2, refresh2) = (
        s(&got["token"]["access_token"]),
        s(&got["token"]["refresh_token"]),
    );
    for dp in w.edges() {
        assert_reached(&w.bearer(dp, &access2).await);
    }
    let got = w.refresh(&w.eu, &refresh1).await;
    assert_oauth_error(
        &got,
        403,
        "invalid_grant",
        Some("the refresh token was already used"),
    );
    w.wait_refused(&access2, NOT_AUTHORISED).await;
    w.wait_refused(&access1, NOT_AUTHORISED).await;
    let got = w.refresh(&w.us, &refresh2).await;
    assert_oauth_error(
        &got,
        403,
        "invalid_grant",
        Some("the refresh token is unknown, expired or revoked"),
    );
}

// ---------------------------------------------------------------- notifications, metadata

async fn hook(w: &World, kind: &str) -> Value {
    w.side
        .delivery("notification_type", kind, &format!("a {kind} notification"))
        .await
}

#[tokio::test]
async fn oauth_notifications_reach_the_webhook_with_the_shared_secret() {
    let w = World::with(Setup {
        notifications: true,
        ..Default::default()
    })
    .await;
    let (redirect, state) = w.code(&w.eu, true).await;
    let got = w.redeem(&w.eu, &redirect, &state, true).await;
    assert_token(&got);
    let (access, refresh) = (
        s(&got["token"]["access_token"]),
        s(&got["token"]["refresh_token"]),
    );
    let new = hook(&w, "new").await;
    assert_eq!(new["secret"], HOOK_SECRET, "{new:#}");
    assert_eq!(new["body"]["auth_code"], code_of(&redirect), "{new:#}");
    assert_eq!(new["body"]["new_oauth_token"], access.as_str(), "{new:#}");
    assert_eq!(new["body"]["refresh_token"], refresh.as_str(), "{new:#}");

    let got = w.refresh(&w.us, &refresh).await;
    assert_token(&got);
    let refreshed = hook(&w, "refresh").await;
    assert_eq!(refreshed["secret"], HOOK_SECRET, "{refreshed:#}");
    assert_eq!(
        refreshed["body"]["old_refresh_token"],
        refresh.as_str(),
        "{refreshed:#}"
    );
    assert_eq!(
        refreshed["body"]["new_oauth_token"], got["token"]["access_token"],
        "{refreshed:#}"
    );
    assert_eq!(
        refreshed["body"]["refresh_token"], got["token"]["refresh_token"],
        "{refreshed:#}"
    );

    let new_access = s(&got["token"]["access_token"]);
    let r = w.revoke(&w.eu, &new_access, Some("access_token")).await;
    assert_eq!(r["status"], 200, "{r:#}");
    let revoked = hook(&w, "revoke").await;
    assert_eq!(revoked["secret"], HOOK_SECRET, "{revoked:#}");
    // Every notification carries the secret; each change is announced once.
    let hooks = w.side.hooks().await;
    assert!(
        hooks.iter().all(|h| h["secret"] == HOOK_SECRET),
        "{hooks:#?}"
    );
    for kind in ["new", "refresh", "revoke"] {
        let n = hooks
            .iter()
            .filter(|h| h["body"]["notification_type"] == kind)
            .count();
        assert_eq!(n, 1, "{kind} notifications: {hooks:#?}");
    }
}

#[tokio::test]
async fn oauth_metadata_document_per_rfc_8414() {
    let w = World::start().await;
    for dp in w.edges() {
        let url = dp.url(&format!("{LP}.well-known/oauth-authorization-server"));
        let got = authlib(json!({"op": "metadata", "url": url})).await;
        assert_eq!(got["status"], 200, "{got:#}");
        assert_eq!(got["valid"], true, "Authlib's RFC 8414 validation: {got:#}");
        let issuer = format!("http://{}/oa", dp.proxy_addr);
        let m = &got["body"];
        assert_eq!(m["issuer"], issuer.as_str(), "{m:#}");
        assert_eq!(
            m["authorization_endpoint"],
            format!("{issuer}/oauth/authorize")
        );
        assert_eq!(m["token_endpoint"], format!("{issuer}/oauth/token"));
        assert_eq!(m["revocation_endpoint"], format!("{issuer}/oauth/revoke"));
        assert_eq!(m["response_types_supported"], json!(["code", "token"]));
        assert_eq!(m["grant_types_supported"], json!(oauth::ALL_GRANTS));
        assert_eq!(
            m["token_endpoint_auth_methods_supported"],
            json!(["client_secret_basic", "client_secret_post", "none"])
        );
        assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
    }
}

#[tokio::test]
async fn oauth_token_endpoint_answers_are_never_cached() {
    let w = World::start().await;
    let got = w.token(&w.eu, "client_credentials", json!({})).await;
    assert_token(&got);
    assert!(
        got["headers"]["content-type"]
            .as_str()
            .is_some_and(|c| c.starts_with("application/json")),
        "{got:#}"
    );
    let got = w.refresh(&w.us, "unknown-refresh-token-0123456789").await;
    assert_oauth_error(&got, 403, "invalid_grant", None);
    assert_no_store(&got);
    // A form the edge refuses before relaying it is not cached either.
    let got = post_form(&w.eu, &format!("{LP}oauth/token"), &[], &[]).await;
    assert_eq!(got["status"], 403, "{got:#}");
    assert_no_store(&got);
}

// ---------------------------------------------------------------- error statuses

#[tokio::test]
async fn oauth_errors_are_403_by_default_and_rfc_statuses_with_rfc() {
    for (mode, client_status, grant_status) in [(None, 403, 403), (Some("rfc"), 401, 400)] {
        let w = World::with(Setup {
            dp: DpOptions {
                oauth_portal_secret: Some(PORTAL_SECRET.into()),
                oauth_error_status_code: mode.map(str::to_owned),
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
        let wrong = w.client.with("client_secret_basic", Some("wrong-secret"));
        let got = w
            .token_as(&wrong, &w.eu, "client_credentials", json!({}))
            .await;
        assert_oauth_error(
            &got,
            client_status,
            "invalid_client",
            Some("client authentication failed"),
        );
        let got = w.refresh(&w.us, "unknown-refresh-token-0123456789").await;
        assert_oauth_error(&got, grant_status, "invalid_grant", None);
        let (status, _, body) =
            authorize_raw(&w.eu, &auth_query(&w.client.id, UNREGISTERED_REDIRECT, "")).await;
        assert_eq!(status.as_u16(), grant_status, "{mode:?}: {body}");
        // Successes keep their status.
        assert_token(&w.token(&w.us, "client_credentials", json!({})).await);
    }
}

// ---------------------------------------------------------------- secrecy

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_no_client_secret_code_or_token_is_stored_or_logged_in_plaintext() {
    let logs = LogBuffer::install();
    let w = World::with(Setup {
        notifications: true,
        ..Default::default()
    })
    .await;
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    w.basic_user("carol", &password).await;
    let mut values: Vec<(&'static str, String)> = vec![
        ("client secret", w.client.secret.clone().unwrap()),
        ("portal secret", PORTAL_SECRET.to_owned()),
        ("notifications shared secret", HOOK_SECRET.to_owned()),
        ("basic-auth password", password.clone()),
    ];
    let take = |values: &mut Vec<(&'static str, String)>, got: &Value| {
        assert_token(got);
        values.push(("access token", s(&got["token"]["access_token"])));
        if let Some(r) = got["token"]["refresh_token"].as_str() {
            values.push(("refresh token", r.to_owned()));
        }
    };
    // Every grant: code (redeemed, refreshed, revoked), a code never redeemed, password,
    // client credentials, implicit.
    let (redirect, state) = w.code(&w.eu, true).await;
    values.push(("authorization code", code_of(&redirect)));
    let got = w.redeem(&w.eu, &redirect, &state, true).await;
    take(&mut values, &got);
    let got = w.refresh(&w.us, &s(&got["token"]["refresh_token"])).await;
    take(&mut values, &got);
    let (unused, _) = w.code(&w.us, true).await;
    values.push(("unredeemed authorization code", code_of(&unused)));
    let got = w
        .token(
            &w.eu,
            "password",
            json!({"username": "carol", "password": password}),
        )
        .await;
    take(&mut values, &got);
    let got = w.token(&w.us, "client_credentials", json!({})).await;
    take(&mut values, &got);
    let got = w
        .authorize_as(&w.client, &w.eu, json!({"response_type": "token"}))
        .await;
    assert_eq!(got["ok"], true, "{got:#}");
    values.push(("implicit access token", s(&got["token"]["access_token"])));
    // Tokens used at both edges (sessions cached in both regions' Redis), one revoked.
    let access: Vec<String> = values
        .iter()
        .filter(|(n, _)| n.contains("access token"))
        .map(|(_, v)| v.clone())
        .collect();
    for t in &access {
        for dp in w.edges() {
            let got = w.bearer(dp, t).await;
            assert!(got.0 == StatusCode::OK, "{}", got.1);
        }
    }
    let r = w.revoke(&w.eu, &access[0], Some("access_token")).await;
    assert_eq!(r["status"], 200, "{r:#}");
    hook(&w, "revoke").await;
    eventually(
        Duration::from_secs(15),
        "sessions written to both regions' Redis",
        || async {
            let h = portcullis_proto::key_hash::key_hash(&access[1]);
            let mut all = true;
            for p in &w.prefixes {
                all &= redis_places(p).await.iter().any(|pl| pl.name.contains(&h));
            }
            all.then_some(())
        },
    )
    .await;

    // Self-check: a canary in a table, a Redis key and the logs is found there.
    let canary = format!(
        "canary-{}-planted-by-the-test",
        uuid::Uuid::new_v4().simple()
    );
    let pool = w.db.pool().await;
    sqlx::query("CREATE TABLE oauth_canary (v text)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO oauth_canary VALUES ($1)")
        .bind(&canary)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let client = redis::Client::open(portcullis_tests::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{}canary", w.prefixes[1]))
        .arg(&canary)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (status, body) =
        w.cp.call(
            Method::POST,
            "/portcullis/bootstrap-tokens",
            Some(&json!({"group": canary})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let mut places = postgres_places(&w.db).await;
    for p in &w.prefixes {
        places.extend(redis_places(p).await);
    }
    places.push(Place {
        name: "the logs".to_owned(),
        bytes: logs.bytes(),
    });
    let planted = leaks(&places, &[Secret::new("canary", canary.as_bytes())]);
    for place in ["Postgres table oauth_canary", "Redis key", "the logs"] {
        assert!(
            planted.iter().any(|l| l.contains(place)),
            "the search does not reach {place}: {planted:?}"
        );
    }
    let secrets: Vec<Secret> = values
        .iter()
        .map(|(name, v)| Secret::new(name, v.as_bytes()))
        .collect();
    let found = leaks(&places, &secrets);
    let keys: Vec<&str> = places
        .iter()
        .filter_map(|p| p.name.strip_prefix("Redis key "))
        .collect();
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut conn)
        .await
        .unwrap_or(());
    assert!(
        found.is_empty(),
        "in plaintext after the OAuth flows:\n  {}",
        found.join("\n  ")
    );
}

// ---------------------------------------------------------------- more edges of the contract

/// A form POST to the control plane's management API with the admin secret.
async fn cp_form(w: &World, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(format!("http://{}{path}", w.cp.api_addr))
        .header("X-Tyk-Authorization", ADMIN_SECRET)
        .form(form)
        .send()
        .await
        .expect("management API reachable");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn oauth_control_plane_revoke_routes_reach_every_edge() {
    let w = World::start().await;
    let a = s(&w.tokens().await["access_token"]);
    let b = s(&w.token(&w.us, "client_credentials", json!({})).await["token"]["access_token"]);
    for t in [&a, &b] {
        for dp in w.edges() {
            assert_reached(&w.bearer(dp, t).await);
        }
    }
    let (status, body) = cp_form(
        &w,
        "/tyk/oauth/revoke",
        &[
            ("token", a.as_str()),
            ("token_type_hint", "access_token"),
            ("client_id", w.client.id.as_str()),
        ],
    )
    .await;
    assert_eq!(
        (status, &body),
        (
            StatusCode::OK,
            &json!({"status": "ok", "message": "token revoked successfully"})
        )
    );
    w.wait_refused(&a, NOT_AUTHORISED).await;
    assert_reached(&w.bearer(&w.eu, &b).await);
    let secret = w.client.secret.clone().unwrap();
    let (status, body) = cp_form(
        &w,
        "/tyk/oauth/revoke_all",
        &[
            ("client_id", w.client.id.as_str()),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(
        (status, &body),
        (
            StatusCode::OK,
            &json!({"status": "ok", "message": "tokens revoked successfully"})
        )
    );
    w.wait_refused(&b, NOT_AUTHORISED).await;
}

#[tokio::test]
async fn oauth_revoke_errors_have_tyks_shape() {
    let w = World::start().await;
    let path = format!("{LP}oauth/revoke");
    let secret = w.client.secret.clone().unwrap();
    for (form, message) in [
        (
            vec![
                ("client_id", w.client.id.as_str()),
                ("client_secret", &secret),
            ],
            "token is required",
        ),
        (
            vec![("token", "some-token-0123456789")],
            "client_id is required",
        ),
        (
            vec![
                ("token", "some-token-0123456789"),
                ("client_id", "no-such-client"),
            ],
            "oauth client doesn't exist",
        ),
    ] {
        let got = post_form(&w.eu, &path, &form, &[]).await;
        assert_eq!(
            (got["status"].as_u64(), &got["body"]),
            (Some(403), &json!({"status": "error", "message": message})),
            "{form:?}: {got:#}"
        );
    }
    // A confidential client revokes only with its secret: the token stays usable.
    let access = s(&w.tokens().await["access_token"]);
    let got = post_form(
        &w.us,
        &path,
        &[
            ("token", access.as_str()),
            ("client_id", w.client.id.as_str()),
            ("client_secret", "wrong-secret"),
        ],
        &[],
    )
    .await;
    assert_eq!(got["status"], 403, "{got:#}");
    assert_ne!(got["body"]["status"], "ok", "{got:#}");
    assert_reached(&w.bearer(&w.eu, &access).await);
}

#[tokio::test]
async fn oauth_a_client_of_another_api_is_invalid_client_here() {
    let w = World::start().await;
    let mut other = oauth::oauth_api(
        &w.side.upstream_url(),
        oauth::ALL_GRANTS,
        &["code"],
        &w.side.login_url(),
    );
    other["api_id"] = json!("ob");
    other["name"] = json!("ob");
    other["proxy"]["listen_path"] = json!("/ob/");
    w.cp.create_api(&other).await;
    let (status, created) = oauth::create_client(
        &w.cp,
        &json!({"api_id": "ob", "redirect_uri": REDIRECT, "policy_id": oauth::POLICY_ID}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let theirs = w
        .client
        .with("client_secret_basic", created["secret"].as_str());
    let theirs = oauth::Client {
        id: s(&created["client_id"]),
        ..theirs
    };
    // Known at the edge (its API's endpoint works), refused on this API's.
    let ob_token = w.eu.url("/ob/oauth/token");
    let got = eventually(
        Duration::from_secs(20),
        "the other API's client",
        || async {
            let got = authlib(theirs.job(
                "token",
                json!({"token_url": ob_token, "grant_type": "client_credentials"}),
            ))
            .await;
            (got["status"] == 200).then_some(got)
        },
    )
    .await;
    assert_token(&got);
    let got = w
        .token_as(&theirs, &w.eu, "client_credentials", json!({}))
        .await;
    assert_oauth_error(
        &got,
        403,
        "invalid_client",
        Some("client authentication failed"),
    );
    // Nor can it start a login for this API.
    let (status, location, body) = authorize_raw(
        &w.eu,
        &auth_query(&theirs.id, REDIRECT, "&code_challenge_method=S256"),
    )
    .await;
    assert_eq!((status, location), (StatusCode::FORBIDDEN, None), "{body}");
}

#[tokio::test]
async fn oauth_token_endpoint_takes_json_and_bounds_its_body() {
    let w = World::start().await;
    let secret = w.client.secret.clone().unwrap();
    let url = World::token_url(&w.eu);
    let http = reqwest::Client::new();
    let resp = http
        .post(&url)
        .json(
            &json!({"grant_type": "client_credentials", "client_id": w.client.id,
                      "client_secret": secret}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "Tyk accepts a JSON body");
    let body: Value = resp.json().await.unwrap();
    assert_reached(&w.bearer(&w.us, &s(&body["access_token"])).await);

    let mut many: Vec<(String, String)> = (0..70).map(|i| (format!("f{i}"), "v".into())).collect();
    many.push(("grant_type".into(), "client_credentials".into()));
    many.push(("client_id".into(), w.client.id.clone()));
    many.push(("client_secret".into(), secret.clone()));
    let big = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}&pad={}",
        enc(&w.client.id),
        enc(&secret),
        "x".repeat(17 * 1024)
    );
    let twice = format!(
        "grant_type=client_credentials&grant_type=password&client_id={}&client_secret={}",
        enc(&w.client.id),
        enc(&secret)
    );
    for (what, req) in [
        ("65+ fields", http.post(&url).form(&many)),
        (
            "over 16 KiB",
            http.post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(big),
        ),
        (
            "a field twice",
            http.post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(twice),
        ),
    ] {
        let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("invalid_request")),
            "{what}: {body}"
        );
    }
}

#[tokio::test]
async fn oauth_expired_access_token_is_refused_in_every_region() {
    let w = World::with(Setup {
        cp: CpOptions {
            oauth_token_ttl: Some(Duration::from_secs(4)),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let got = w.token(&w.eu, "client_credentials", json!({})).await;
    assert_token(&got);
    assert_eq!(got["body"]["expires_in"], 4, "--oauth-token-ttl: {got:#}");
    let access = s(&got["token"]["access_token"]);
    assert_reached(&w.bearer(&w.eu, &access).await);
    for (dp, region) in [(&w.eu, "eu"), (&w.us, "us")] {
        let got = eventually(
            Duration::from_secs(20),
            &format!("the expired token refused at {region}"),
            || async {
                let got = w.bearer(dp, &access).await;
                (got.0 != StatusCode::OK).then_some(got)
            },
        )
        .await;
        // Refused as expired, or as unknown once the CP's sweeper has deleted it.
        assert!(
            matches!(
                (got.0.as_u16(), got.1["error"].as_str()),
                (401, Some("Key has expired, please renew")) | (403, Some(NOT_AUTHORISED))
            ),
            "{region}: {} {}",
            got.0,
            got.1
        );
    }
}

#[tokio::test]
async fn oauth_a_client_update_reaches_every_edge_and_keeps_its_secret() {
    let w = World::start().await;
    let path = format!("/tyk/oauth/clients/{API_ID}/{}", w.client.id);
    let (status, mut client) = w.cp.call(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{client}");
    // As Tyk's client API: GET shows the secret (sealed at rest, docs/oauth.md).
    assert_eq!(
        client["secret"].as_str(),
        w.client.secret.as_deref(),
        "GET shows the client's secret: {client}"
    );
    client["redirect_uri"] = json!(OTHER_REDIRECT);
    let (status, body) = w.cp.call(Method::PUT, &path, Some(&client)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pkce = format!("&code_challenge={CHALLENGE}&code_challenge_method=S256");
    for dp in w.edges() {
        eventually(
            Duration::from_secs(20),
            "the old redirect URI refused",
            || async {
                let (status, location, _) =
                    authorize_raw(dp, &auth_query(&w.client.id, REDIRECT, &pkce)).await;
                (status == StatusCode::FORBIDDEN && location.is_none()).then_some(())
            },
        )
        .await;
        let (status, _, body) =
            authorize_raw(dp, &auth_query(&w.client.id, OTHER_REDIRECT, &pkce)).await;
        assert_eq!(status, StatusCode::TEMPORARY_REDIRECT, "{body}");
    }
    // The sealed secret sent back is kept: the plaintext one still authenticates.
    assert_token(&w.token(&w.us, "client_credentials", json!({})).await);
}

// ---------------------------------------------------------------- Tyk's remaining token routes

#[tokio::test]
async fn oauth_tyk_routes_list_a_clients_apis_delete_a_refresh_token_and_purge_lapsed_ones() {
    let w = World::start().await;
    // The APIs a client may use; an unknown client, or another org's, has none.
    let (status, apis) =
        w.cp.call(
            Method::GET,
            &format!("/tyk/oauth/clients/apis/{}", w.client.id),
            None,
        )
        .await;
    assert_eq!((status, apis), (StatusCode::OK, json!([API_ID])));
    let (_, none) =
        w.cp.call(Method::GET, "/tyk/oauth/clients/apis/no-such-client", None)
            .await;
    assert_eq!(none, json!([]));
    let (_, other_org) =
        w.cp.call(
            Method::GET,
            &format!("/tyk/oauth/clients/apis/{}?orgID=other-org", w.client.id),
            None,
        )
        .await;
    assert_eq!(other_org, json!([]));
    // A client of an API whose id is `apis`: the static segment does not hide its routes.
    let mut api = oauth::oauth_api(
        &w.side.upstream_url(),
        &["client_credentials"],
        &["code"],
        &w.side.login_url(),
    );
    api["api_id"] = json!("apis");
    api["name"] = json!("apis");
    api["proxy"]["listen_path"] = json!("/apis-lp/");
    w.cp.create_api(&api).await;
    let (status, made) =
        oauth::create_client(&w.cp, &json!({"api_id": "apis", "redirect_uri": REDIRECT})).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let cid = s(&made["client_id"]);
    let (status, body) =
        w.cp.call(
            Method::GET,
            &format!("/tyk/oauth/clients/apis/{cid}/tokens"),
            None,
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!([])));
    let mut changed = made.clone();
    changed["description"] = json!("changed through the shadowed path");
    let (status, body) =
        w.cp.call(
            Method::PUT,
            &format!("/tyk/oauth/clients/apis/{cid}"),
            Some(&changed),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["description"], "changed through the shadowed path");
    let (_, apis) =
        w.cp.call(Method::GET, &format!("/tyk/oauth/clients/apis/{cid}"), None)
            .await;
    assert_eq!(apis, json!(["apis"]));
    let (status, body) =
        w.cp.call(
            Method::DELETE,
            &format!("/tyk/oauth/clients/apis/{cid}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, apis) =
        w.cp.call(Method::GET, &format!("/tyk/oauth/clients/apis/{cid}"), None)
            .await;
    assert_eq!(apis, json!([]), "deleted");

    // One refresh token deleted: it no longer refreshes, its access token still works.
    let t = w.tokens().await;
    let (access, refresh) = (s(&t["access_token"]), s(&t["refresh_token"]));
    let (status, body) =
        w.cp.call(
            Method::DELETE,
            &format!("/tyk/oauth/refresh/{refresh}"),
            None,
        )
        .await;
    assert_eq!(
        (status, &body["field"]),
        (StatusCode::BAD_REQUEST, &json!("api_id"))
    );
    let (status, body) =
        w.cp.call(
            Method::DELETE,
            &format!("/tyk/oauth/refresh/{refresh}?api_id=another-api"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) =
        w.cp.call(
            Method::DELETE,
            &format!("/tyk/oauth/refresh/{refresh}?api_id={API_ID}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["action"], &body["status"]),
        (&json!("deleted"), &json!("ok"))
    );
    let got = w.refresh(&w.us, &refresh).await;
    assert_oauth_error(
        &got,
        403,
        "invalid_grant",
        Some("the refresh token is unknown, expired or revoked"),
    );
    assert_reached(&w.bearer(&w.eu, &access).await);

    // Lapsed tokens are purged on demand; the scope is required, as in Tyk.
    let (status, body) = w.cp.call(Method::DELETE, "/tyk/oauth/tokens", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["message"], "scope parameter is required");
    // (What it deletes, the periodic sweep also deletes within about a second, so only the
    // answers are asserted here.)
    let (status, body) =
        w.cp.call(Method::DELETE, "/tyk/oauth/tokens?scope=lapsed", None)
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["purged"].is_u64(), "{body}");
    let (status, body) =
        w.cp.call(Method::DELETE, "/tyk/oauth/tokens?scope=everything", None)
            .await;
    assert_eq!(
        (status, &body["field"]),
        (StatusCode::BAD_REQUEST, &json!("scope"))
    );
    assert_reached(&w.bearer(&w.us, &access).await);
}
