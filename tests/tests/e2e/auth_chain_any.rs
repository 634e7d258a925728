//! The "any of" chain (`auth_chain_mode: any`): the first method, in Tyk's order, whose
//! credential the request carries decides alone; a present but invalid credential fails the
//! request instead of falling through to a later method. Tokens are signed by PyJWT,
//! signatures by Python's httpsig, and one client is curl.

use portcullis_tests::idp_stack::{Stack, api, assert_error, assert_upstream, bearer, policy};
use portcullis_tests::pyjwt::{Job, now, sign, source};
use portcullis_tests::signatures::{http_date, httpsig_authorization};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const JWT_SECRET: &[u8] = b"any-of-chain-jwt-secret";
const HMAC_SECRET: &str = "any-of-chain-hmac-secret";

/// Basic auth, HMAC signatures and JWT in `Authorization`, auth token in `X-Api-Key`.
fn chained(id: &str, target: &str, mode: &str) -> Value {
    api(
        id,
        target,
        json!({
            "auth_chain_mode": mode,
            "use_basic_auth": true,
            "use_standard_auth": true,
            "enable_signature_checking": true,
            "enable_jwt": true, "jwt_signing_method": "hmac", "jwt_source": source(JWT_SECRET),
            "jwt_default_policies": ["jwt-users"],
            "auth": {"auth_header_name": "X-Api-Key"},
            "auth_configs": {"jwt": {"auth_header_name": "Authorization"}},
            "strip_auth_data": true,
        }),
    )
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn header<'a>(seen: &'a portcullis_tests::Received, name: &str) -> Option<&'a str> {
    seen.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

struct Credentials {
    token: String,
    user: String,
    jwt: String,
}

async fn stack() -> (Stack, Credentials) {
    let mut s = Stack::regional().await;
    let target = s.target();
    s.create(
        &[
            chained("any", &target, "any"),
            chained("all", &target, "all"),
        ],
        &[policy("jwt-users", &["any", "all"], 100, 60)],
    )
    .await;
    let rights = json!({"any": {"api_id": "any"}, "all": {"api_id": "all"}});
    let (status, body) =
        s.cp.call(
            Method::POST,
            "/tyk/keys/alice",
            Some(&json!({"rate": 50, "per": 60, "access_rights": rights,
                "basic_auth_data": {"password": "alice-password"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) =
        s.cp.call(
            Method::POST,
            "/tyk/keys",
            Some(&json!({"rate": 2, "per": 60, "access_rights": rights})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["key"].as_str().unwrap().to_owned();
    let (status, body) =
        s.cp.call(
            Method::POST,
            "/tyk/keys/hmac-user",
            Some(&json!({"rate": 70, "per": 60, "access_rights": rights,
                "hmac_enabled": true, "hmac_string": HMAC_SECRET})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let jwt = sign(Job::hs256(
        JWT_SECRET,
        json!({"sub": "jwt-user", "iat": now() - 5, "exp": now() + 600}),
    ))
    .await;
    (
        s,
        Credentials {
            token,
            user: basic("alice", "alice-password"),
            jwt,
        },
    )
}

#[tokio::test]
async fn any_of_each_credential_alone_opens_the_api_and_its_own_session_applies() {
    let (s, c) = stack().await;
    // Auth token alone: its limit of 2 per minute is the one counted.
    let got = s.get("/any/t", &[("X-Api-Key", &c.token)]).await;
    let seen = assert_upstream(&got);
    assert_eq!(header(&seen, "x-api-key"), None, "credential stripped");
    assert_eq!(
        s.get("/any/t", &[("X-Api-Key", &c.token)]).await.0,
        StatusCode::OK
    );
    assert_error(
        &s.get("/any/t", &[("X-Api-Key", &c.token)]).await,
        429,
        "Rate Limit Exceeded",
    );
    // Basic alone: alice's own session (limit 50), untouched by the token's exhausted window.
    let resp = reqwest::Client::new()
        .get(s.dp.url("/any/b"))
        .header("Authorization", &c.user)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-ratelimit-limit"], "50");
    // A JWT alone, with or without the Bearer prefix: the policy's session (limit 100).
    for value in [c.jwt.clone(), bearer(&c.jwt)] {
        let resp = reqwest::Client::new()
            .get(s.dp.url("/any/j"))
            .header("Authorization", &value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{value}");
        assert_eq!(resp.headers()["x-ratelimit-limit"], "100");
    }
    // curl as the client, basic credentials from its own -u (off the runtime: the echo upstream
    // runs on it).
    let url = s.dp.url("/any/curl");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-u"])
            .arg("alice:alice-password")
            .arg(url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}

/// `Date` and an httpsig `Authorization: Signature …` over it for key `hmac-user`.
fn signed(secret: &str) -> (String, String) {
    let date = http_date(0);
    let auth = httpsig_authorization(
        "hmac-user",
        secret,
        "hmac-sha256",
        "GET",
        "/any/h",
        &[("Date", &date)],
        &["date"],
    );
    (date, auth)
}

#[tokio::test]
async fn any_of_an_hmac_signature_decides_alone_and_a_bad_one_is_final() {
    let (s, c) = stack().await;
    let (date, auth) = signed(HMAC_SECRET);
    let resp = reqwest::Client::new()
        .get(s.dp.url("/any/h"))
        .header("Date", &date)
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The signing key's own session: its limit of 70.
    assert_eq!(resp.headers()["x-ratelimit-limit"], "70");
    // Signed with another secret, beside a valid key: HMAC's refusal stands.
    let (date, forged) = signed("not-the-secret");
    assert_error(
        &s.get(
            "/any/h",
            &[
                ("Date", &date),
                ("Authorization", &forged),
                ("X-Api-Key", &c.token),
            ],
        )
        .await,
        400,
        "Authorization field missing, malformed or invalid",
    );
}

#[tokio::test]
async fn any_of_a_present_but_invalid_credential_fails_even_beside_a_valid_one() {
    let (s, c) = stack().await;
    // Basic comes before auth token in Tyk's order: a wrong password is final.
    assert_error(
        &s.get(
            "/any/x",
            &[
                ("Authorization", &basic("alice", "wrong")),
                ("X-Api-Key", &c.token),
            ],
        )
        .await,
        401,
        "User not authorised",
    );
    // A JWT with a bad signature is final too, beside a valid key.
    let forged = sign(Job::hs256(
        b"another-secret",
        json!({"sub": "jwt-user", "exp": now() + 600}),
    ))
    .await;
    let got = s
        .get(
            "/any/x",
            &[("Authorization", &forged), ("X-Api-Key", &c.token)],
        )
        .await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
    // An unknown key in the token header, with nothing in Authorization: the token's answer.
    assert_error(
        &s.get("/any/x", &[("X-Api-Key", "not-a-key")]).await,
        403,
        "Access to this API has been disallowed",
    );
    // No credential at all: the first method's answer (basic, with its challenge).
    let resp = reqwest::Client::new()
        .get(s.dp.url("/any/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers()["www-authenticate"].to_str().unwrap(),
        "Basic realm=\"any\""
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "Authorization field missing");
}

#[tokio::test]
async fn all_mode_still_needs_every_method_and_an_unknown_mode_is_refused() {
    let (s, c) = stack().await;
    // Tyk's mode: one credential alone is not enough.
    assert_error(
        &s.get("/all/x", &[("X-Api-Key", &c.token)]).await,
        401,
        "Authorization field missing",
    );
    // Basic passes, then JWT finds no token in `Authorization` (it holds the basic credential).
    let got = s.get("/all/x", &[("Authorization", &c.user)]).await;
    assert_ne!(got.0, StatusCode::OK, "{}", got.1);
    let (status, body) =
        s.cp.call(
            Method::POST,
            "/tyk/apis",
            Some(&chained("odd", &s.target(), "first")),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "auth_chain_mode", "{body}");
}
