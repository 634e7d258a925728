//! The authentication chain: every enabled method must pass, in Tyk's order, and
//! `base_identity_provided_by` decides whose session (and so whose rate limit) applies.
//! The upstream is Node's `http` module, which reports the headers it received.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portcullis_tests::{Cp, Dp, TestDb, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct NodeUpstream {
    port: u16,
    child: Child,
}

impl NodeUpstream {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = r#"
const http = require('http');
http.createServer((req, res) => {
  const body = JSON.stringify({url: req.url, headers: req.headers});
  res.writeHead(200, {'content-type': 'application/json', 'content-length': Buffer.byteLength(body)});
  res.end(body);
}).listen(Number(process.argv[1]), '127.0.0.1');
"#;
        let child = Command::new("node")
            .args(["-e", script, &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("node on PATH");
        let addr = format!("127.0.0.1:{port}");
        eventually(Duration::from_secs(10), "node upstream", || async {
            tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ())
        })
        .await;
        Self { port, child }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for NodeUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chained_api(id: &str, target: &str, base: &str) -> Value {
    json!({
        "api_id": id, "name": id,
        "use_basic_auth": true,
        "use_standard_auth": true,
        "auth": {"auth_header_name": "X-Api-Key"},
        "base_identity_provided_by": base,
        "strip_auth_data": true,
        "proxy": {"listen_path": format!("/{id}/"), "target_url": target, "strip_listen_path": true},
    })
}

async fn call(
    dp: &Dp,
    path: &str,
    headers: &[(&str, &str)],
) -> (
    StatusCode,
    Option<String>,
    Value,
    reqwest::header::HeaderMap,
) {
    let mut req = reqwest::Client::new().get(dp.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let challenge = headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, challenge, body, headers)
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn every_method_must_pass_and_the_base_identity_decides_the_rate_limit() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let upstream = NodeUpstream::start().await;
    cp.create_api(&chained_api("by-token", &upstream.url(), "auth_token"))
        .await;
    cp.create_api(&chained_api("by-user", &upstream.url(), "basic_auth_user"))
        .await;
    // Rate limits are counted in the region's Redis.
    let dp = Dp::regional(&cp, "chain").await;
    dp.wait_for_revision(2).await;
    let rights = json!({"by-token": {"api_id": "by-token"}, "by-user": {"api_id": "by-user"}});
    let (status, body) = cp
        .call(
            Method::POST,
            "/tyk/keys/alice",
            Some(&json!({"rate": 100, "per": 60, "access_rights": rights,
                "basic_auth_data": {"password": "alice-password"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = cp
        .call(
            Method::POST,
            "/tyk/keys",
            Some(&json!({"rate": 2, "per": 60, "access_rights": rights})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["key"].as_str().unwrap().to_owned();
    let user = basic("alice", "alice-password");

    // Each credential alone fails with the other method's answer.
    let (status, challenge, body, _) = call(&dp, "/by-token/x", &[("X-Api-Key", &token)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "Authorization field missing");
    assert_eq!(challenge.as_deref(), Some("Basic realm=\"by-token\""));
    let (status, challenge, body, _) = call(&dp, "/by-token/x", &[("Authorization", &user)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "Authorization field missing");
    assert_eq!(challenge, None, "auth token sends no challenge");
    let (status, _, body, _) = call(
        &dp,
        "/by-token/x",
        &[
            ("Authorization", &basic("alice", "wrong")),
            ("X-Api-Key", &token),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "User not authorised");
    let (status, _, body, _) = call(
        &dp,
        "/by-token/x",
        &[("Authorization", &user), ("X-Api-Key", "not-a-key")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "Access to this API has been disallowed");

    // Both: served, both credentials stripped before the upstream.
    let both = [
        ("Authorization", user.as_str()),
        ("X-Api-Key", token.as_str()),
    ];
    let (status, _, body, headers) = call(&dp, "/by-token/x", &both).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["url"], "/x");
    assert!(body["headers"].get("authorization").is_none(), "{body}");
    assert!(body["headers"].get("x-api-key").is_none(), "{body}");
    // The token's session is the base: its limit of 2 per minute applies.
    assert_eq!(headers["x-ratelimit-limit"], "2");
    assert_eq!(call(&dp, "/by-token/x", &both).await.0, StatusCode::OK);
    let (status, _, body, _) = call(&dp, "/by-token/x", &both).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"], "Rate Limit Exceeded");

    // Same credentials, the basic-auth user as the base: its limit of 100 applies.
    let (status, _, _, headers) = call(&dp, "/by-user/x", &both).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-ratelimit-limit"], "100");

    // The second factor must stand on its own too (Tyk checks only the base): an expired token
    // or one without rights to this API does not open it.
    for (session, status, message) in [
        (
            // A past `expires` on creation means "never" (as Tyk): set it by an update.
            json!({"expires": 1_000_000_000, "access_rights": rights}),
            StatusCode::UNAUTHORIZED,
            "Key has expired, please renew",
        ),
        (
            json!({"access_rights": {"by-token": {"api_id": "by-token"}}}),
            StatusCode::FORBIDDEN,
            "Access to this API has been disallowed",
        ),
    ] {
        let (code, body) = cp
            .call(
                Method::POST,
                "/tyk/keys",
                Some(&json!({"access_rights": rights})),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let weak = body["key"].as_str().unwrap().to_owned();
        let (code, body) = cp
            .call(Method::PUT, &format!("/tyk/keys/{weak}"), Some(&session))
            .await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let headers = [
            ("Authorization", user.as_str()),
            ("X-Api-Key", weak.as_str()),
        ];
        let body = eventually(Duration::from_secs(10), message, || async {
            let (got, _, body, _) = call(&dp, "/by-user/x", &headers).await;
            (got == status).then_some(body)
        })
        .await;
        assert_eq!(body["error"], message);
    }
}

#[tokio::test]
async fn a_base_identity_naming_a_method_the_api_does_not_enable_is_refused() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let mut api = chained_api("odd", "http://127.0.0.1:1/", "basic_auth_user");
    api["use_basic_auth"] = json!(false);
    let (status, body) = cp.call(Method::POST, "/tyk/apis", Some(&api)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "base_identity_provided_by", "{body}");
    api["base_identity_provided_by"] = json!("somebody");
    let (status, body) = cp.call(Method::POST, "/tyk/apis", Some(&api)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "base_identity_provided_by", "{body}");
}
