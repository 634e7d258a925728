//! Split tokens: a login through the gateway reaches a token endpoint (a Python server whose
//! access tokens PyJWT signs), the client gets only the signature, and the gateway rebuilds
//! the whole JWT for its checks and for the upstream.

use std::process::Child;

use portcullis_tests::idp_server::spawn_python_server;
use portcullis_tests::idp_stack::{Stack, api, assert_error, assert_upstream, policy};
use portcullis_tests::pyjwt::source;
use serde_json::{Value, json};

const SECRET: &[u8] = b"split-token-hmac-secret";

/// A token endpoint: `client_credentials` for `app`/`app-secret` get an HS256 access token
/// (sub = the client id) plus a refresh token; anything else is 401 `invalid_client`.
const TOKEN_SERVER: &str = r#"
import json, sys, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import jwt

SECRET = sys.argv[1].encode()

class H(BaseHTTPRequestHandler):
    def do_POST(self):
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode())
        one = lambda k: (form.get(k) or [""])[0]
        if one("grant_type") != "client_credentials" or one("client_id") != "app" or one("client_secret") != "app-secret":
            body, code = {"error": "invalid_client"}, 401
        else:
            now = int(time.time())
            token = jwt.encode({"sub": one("client_id"), "iat": now - 5, "exp": now + 300,
                                "email": "private@example.com"}, SECRET, algorithm="HS256")
            body, code = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                          "refresh_token": "r-1", "refresh_expires_in": 1800}, 200
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *_):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

struct TokenServer {
    child: Child,
    port: u16,
}

impl TokenServer {
    fn start() -> Self {
        let secret = String::from_utf8_lossy(SECRET).into_owned();
        let (child, port) = spawn_python_server(TOKEN_SERVER, &[&secret]);
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn login(s: &Stack, form: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(s.dp.url("/split/token"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .expect("gateway reachable");
    let status = resp.status().as_u16();
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "a token answer is never cached"
    );
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn split_token_login_returns_the_signature_and_the_upstream_gets_the_whole_jwt() {
    let idp = TokenServer::start();
    let mut s = Stack::start().await;
    let target = s.target();
    s.create(
        &[api(
            "split",
            &target,
            json!({"enable_jwt": true, "jwt_signing_method": "hmac",
                   "jwt_source": source(SECRET), "jwt_default_policies": ["p1"],
                   "split_token": {"enabled": true, "token_url": idp.url()}}),
        )],
        &[policy("p1", &["split"], 0, 0)],
    )
    .await;

    // A refused login reaches the client unchanged.
    let (status, body) = login(
        &s,
        "grant_type=client_credentials&client_id=app&client_secret=no",
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    let (status, body) = login(
        &s,
        "grant_type=client_credentials&client_id=app&client_secret=app-secret",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let signature = body["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned();
    assert!(!signature.contains('.'), "only the signature: {signature}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert!(body.get("refresh_token").is_none() && body.get("refresh_expires_in").is_none());

    let got = s
        .get("/split/orders", &[("Authorization", &signature)])
        .await;
    let seen = assert_upstream(&got);
    let forwarded = seen
        .header("authorization")
        .expect("Authorization upstream");
    let whole = forwarded.strip_prefix("Bearer ").expect("Bearer prefix");
    assert_eq!(whole.split('.').count(), 3, "the whole JWT: {forwarded}");
    assert!(whole.ends_with(&format!(".{signature}")));

    // The whole token still works; a signature the gateway never handed out does not.
    assert_upstream(&s.get("/split/x", &[("Authorization", whole)]).await);
    let mut forged = signature.clone();
    forged.replace_range(
        ..4,
        if forged.starts_with("AAAA") {
            "BBBB"
        } else {
            "AAAA"
        },
    );
    assert_error(
        &s.get("/split/x", &[("Authorization", &forged)]).await,
        403,
        "Key not authorized",
    );
}

#[tokio::test]
async fn split_token_needs_jwt_and_a_url() {
    let s = Stack::start().await;
    for (fields, field) in [
        (
            json!({"split_token": {"enabled": true, "token_url": "http://127.0.0.1:1/token"}}),
            "split_token.enabled",
        ),
        (
            json!({"enable_jwt": true, "jwt_source": source(SECRET),
                   "split_token": {"enabled": true, "token_url": "not a url"}}),
            "split_token.token_url",
        ),
    ] {
        let (status, body) =
            s.cp.call(
                reqwest::Method::POST,
                "/tyk/apis",
                Some(&api("bad-split", "http://127.0.0.1:1/", fields)),
            )
            .await;
        assert_eq!(status.as_u16(), 400, "{body}");
        assert!(
            body["message"].as_str().unwrap_or("").starts_with(field),
            "{body}"
        );
    }
}
