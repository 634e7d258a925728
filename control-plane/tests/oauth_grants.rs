//! The OAuth 2.0 provider against a real Postgres: codes redeemed once (also when raced),
//! expiry, PKCE, refresh rotation with reuse detection, revocation, client_credentials, the
//! password grant against a basic-auth key, webhook notifications, and nothing issued kept in
//! plaintext. The token endpoint is called as the edges' `Sync.Oauth` relay calls it
//! (`OAuthServer::handle`); the management routes over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step should stop a test loudly

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portcullis_control_plane::oauth::{OAuthLifetimes, OAuthReply, OAuthServer};
use portcullis_control_plane::store::Store;
use portcullis_control_plane::store::oauth_grants::NewCode;
use portcullis_control_plane::{Config, ControlPlane, start};
use portcullis_proto::key_hash::key_hash;
use portcullis_proto::model::oauth::OAuthClient;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const ADMIN: &str = "admin-secret-for-the-oauth-grant-tests";
const ENCRYPTION: &str = "encryption-secret-for-the-oauth-grant-tests";
const API: &str = "oauth-api";
const CONF: &str = "conf-client";
const CONF_SECRET: &str = "conf s3cret:with+odd%chars";
const PUBLIC: &str = "public-client";
const REDIRECT: &str = "http://app.example/cb";
const HOOK_SECRET: &str = "hook-shared-secret";
/// RFC 7636 appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn base_url() -> String {
    std::env::var("PORTCULLIS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

struct Db {
    url: String,
    name: String,
}

impl Db {
    async fn new() -> Self {
        let name = format!("portcullis_cp_oauth_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&base_url())
            .await
            .expect("postgres reachable (PORTCULLIS_TEST_DATABASE_URL)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        let mut url = url::Url::parse(&base_url()).unwrap();
        url.set_path(&name);
        Self {
            url: url.to_string(),
            name,
        }
    }

    async fn drop_db(self) {
        if let Ok(admin) = sqlx::PgPool::connect(&base_url()).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&admin)
            .await;
        }
    }
}

/// Form fields of a request.
type Form<'a> = &'a [(&'a str, &'a str)];

/// One notification the webhook received: its `X-Tyk-Shared-Secret` and JSON body.
type Hook = (String, Value);

/// A minimal HTTP/1.1 webhook: answers 200 to each POST and reports what it got.
async fn webhook() -> (String, mpsc::UnboundedReceiver<Hook>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, len) = loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (i + 4, len);
                    }
                };
                while buf.len() < head_end + len {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let secret = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("x-tyk-shared-secret")
                            .then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default();
                let body: Value =
                    serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null);
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                let _ = tx.send((secret, body));
            });
        }
    });
    (url, rx)
}

struct Fixture {
    db: Option<Db>,
    cp: ControlPlane,
    store: Store,
    server: Arc<OAuthServer>,
    http: reqwest::Client,
    hooks: tokio::sync::Mutex<mpsc::UnboundedReceiver<Hook>>,
}

impl Fixture {
    async fn new(allowed: &[&str]) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let db = Db::new().await;
        let cp = start(Config {
            api_listen: "127.0.0.1:0".parse().unwrap(),
            sync_listen: "127.0.0.1:0".parse().unwrap(),
            sync_names: vec!["localhost".into(), "127.0.0.1".into()],
            database_url: db.url.clone(),
            admin_secret: ADMIN.into(),
            encryption_secret: ENCRYPTION.into(),
            ca_secret: None,
            previous_ca_secret: None,
            allow_master_keys: false,
            api_tls: None,
            replica_name: "cp-test".into(),
            node_cert_ttl: Duration::from_secs(3600),
            max_db_connections: 8,
            lifetime_rules: Default::default(),
            sync_limits: Default::default(),
        })
        .await
        .expect("control plane starts");
        let store = Store::connect(&db.url, 4).await.unwrap();
        // The relay's engine, on the same database (every replica has one).
        let server = Arc::new(OAuthServer::new(
            store.clone(),
            portcullis_proto::sealed_field::key(ENCRYPTION),
            OAuthLifetimes::default(),
        ));
        let (hook_url, hooks) = webhook().await;
        let f = Self {
            db: Some(db),
            cp,
            store,
            server,
            http: reqwest::Client::new(),
            hooks: tokio::sync::Mutex::new(hooks),
        };
        let api = json!({
            "name": "OAuth API", "api_id": API, "org_id": "org1", "active": true,
            "use_keyless": false, "use_oauth2": true,
            "proxy": {"listen_path": "/oauth-api/", "target_url": "http://127.0.0.1:1", "strip_listen_path": true},
            "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default"}}},
            "oauth_meta": {
                "allowed_access_types": allowed,
                "allowed_authorize_types": ["code", "token"],
                "auth_login_redirect": "http://portal.example/login",
            },
            "notifications": {"shared_secret": HOOK_SECRET, "oauth_on_keychange_url": hook_url},
        });
        let (status, body) = f.admin(reqwest::Method::POST, "/tyk/apis", Some(api)).await;
        assert_eq!(status, 200, "{body}");
        let key = portcullis_proto::sealed_field::key(ENCRYPTION);
        for (id, secret, method) in [(CONF, CONF_SECRET, ""), (PUBLIC, "", "none")] {
            let client = OAuthClient {
                client_id: id.into(),
                secret: if secret.is_empty() {
                    String::new()
                } else {
                    portcullis_proto::sealed_field::seal(&key, id, "secret", secret)
                },
                redirect_uri: format!("{REDIRECT};http://app.example/other"),
                api_id: API.into(),
                org_id: "org1".into(),
                meta_data: serde_json::from_value(json!({"app": id})).unwrap(),
                token_endpoint_auth_method: method.into(),
                ..Default::default()
            };
            f.store.create_oauth_client(&client).await.unwrap();
        }
        f
    }

    async fn finish(mut self) {
        if let Some(db) = self.db.take() {
            drop(self.cp);
            db.drop_db().await;
        }
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("http://{}{path}", self.cp.api_addr))
            .header("X-Tyk-Authorization", ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// A management route taking a form.
    async fn admin_form(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("http://{}{path}", self.cp.api_addr))
            .header("X-Tyk-Authorization", ADMIN)
            .form(form)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// An edge's relay of `endpoint`.
    async fn relay(
        &self,
        endpoint: &str,
        form: &[(&str, &str)],
        authorization: &str,
    ) -> OAuthReply {
        let form: Vec<(String, String)> = form
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        self.server
            .handle(API, endpoint, &form, authorization)
            .await
    }

    /// A code for the confidential client through the management route.
    async fn code(&self, extra: &[(&str, &str)]) -> String {
        let mut form = vec![
            ("api_id", API),
            ("response_type", "code"),
            ("client_id", CONF),
            ("redirect_uri", REDIRECT),
            ("state", "st 1"),
        ];
        form.extend_from_slice(extra);
        let (status, body) = self.admin_form("/tyk/oauth/authorize-client/", &form).await;
        assert_eq!(status, 200, "{body}");
        let code = body["code"].as_str().unwrap().to_owned();
        assert_eq!(code.len(), 43);
        assert_eq!(
            body["redirect_to"],
            format!("{REDIRECT}?code={code}&state=st+1")
        );
        code
    }

    async fn redeem(&self, code: &str) -> OAuthReply {
        self.relay(
            "token",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
            ],
            &basic(CONF, CONF_SECRET),
        )
        .await
    }

    /// The next notification (waits up to 10 s).
    async fn hook(&self) -> Hook {
        let mut hooks = self.hooks.lock().await;
        tokio::time::timeout(Duration::from_secs(10), hooks.recv())
            .await
            .expect("a notification arrives")
            .unwrap()
    }

    async fn key_exists(&self, token: &str) -> bool {
        self.store.get_key(&key_hash(token)).await.is_ok()
    }
}

/// HTTP Basic with RFC 6749 2.3.1 form-encoding of id and secret.
fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

#[track_caller]
fn assert_error(r: &OAuthReply, status: u16, error: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["error"], error, "{}", r.body);
    assert!(r.body["error_description"].is_string(), "{}", r.body);
}

const ALL: &[&str] = &[
    "authorization_code",
    "refresh_token",
    "password",
    "client_credentials",
];

#[tokio::test]
async fn a_code_is_redeemed_once_even_when_raced() {
    let f = Fixture::new(ALL).await;
    let code = f.code(&[]).await;
    let (a, b) = tokio::join!(f.redeem(&code), f.redeem(&code));
    let (won, lost) = if a.status == 200 { (a, b) } else { (b, a) };
    assert_eq!(won.status, 200, "{}", won.body);
    assert_error(&lost, 400, "invalid_grant");
    let token = won.body["access_token"].as_str().unwrap();
    assert_eq!(won.body["token_type"], "bearer");
    assert_eq!(won.body["expires_in"], 3600);
    assert!(won.body["refresh_token"].is_string());
    // The token is a key every edge finds, tied to its client, with the client's rights.
    let session = f.store.get_key(&key_hash(token)).await.unwrap();
    assert_eq!(session["oauth_client_id"], CONF);
    assert_eq!(session["access_rights"][API]["api_id"], API);
    assert_eq!(session["meta_data"]["app"], CONF);
    let (origin, client): (String, Option<String>) =
        sqlx::query_as("SELECT origin, oauth_client_id FROM keys WHERE key_hash = $1")
            .bind(key_hash(token))
            .fetch_one(f.store.pool())
            .await
            .unwrap();
    assert_eq!((origin.as_str(), client.as_deref()), ("oauth", Some(CONF)));
    // Once more, later: still refused.
    assert_error(&f.redeem(&code).await, 400, "invalid_grant");
    // The webhook heard of it, with the shared secret.
    let (secret, body) = f.hook().await;
    assert_eq!(secret, HOOK_SECRET);
    assert_eq!(body["notification_type"], "new");
    assert_eq!(body["auth_code"], code);
    assert_eq!(body["new_oauth_token"], token);
    assert_eq!(body["refresh_token"], won.body["refresh_token"]);
    f.finish().await;
}

#[tokio::test]
async fn code_errors_each_with_its_status() {
    let f = Fixture::new(ALL).await;
    // Expired: stored with a past expiry.
    let session = json!({"org_id": "org1", "oauth_client_id": CONF});
    f.store
        .insert_oauth_code(&NewCode {
            code_hash: &key_hash("expired-code"),
            client_id: CONF,
            api_id: API,
            redirect_uri: REDIRECT,
            session: &session,
            scope: "",
            code_challenge: None,
            code_challenge_method: None,
            expires_at: chrono::Utc::now() - chrono::Duration::seconds(1),
        })
        .await
        .unwrap();
    assert_error(&f.redeem("expired-code").await, 400, "invalid_grant");
    // Wrong redirect URI (registered, but not the code's): the code is burned.
    let code = f.code(&[]).await;
    let r = f
        .relay(
            "token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "http://app.example/other"),
            ],
            &basic(CONF, CONF_SECRET),
        )
        .await;
    assert_error(&r, 400, "invalid_grant");
    assert_error(&f.redeem(&code).await, 400, "invalid_grant");
    // Wrong secret, unknown client, form authentication.
    let code = f.code(&[]).await;
    let grant = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    let r = f.relay("token", &grant, &basic(CONF, "wrong")).await;
    assert_error(&r, 401, "invalid_client");
    let r = f.relay("token", &grant, &basic("nobody", "x")).await;
    assert_error(&r, 401, "invalid_client");
    let r = f.relay("token", &grant, "").await;
    assert_error(&r, 401, "invalid_client");
    let mut by_form = grant.to_vec();
    by_form.extend([("client_id", CONF), ("client_secret", CONF_SECRET)]);
    assert_eq!(f.relay("token", &by_form, "").await.status, 200);
    // Unknown grant type, unregistered redirect URI at authorize-client, unknown API.
    let r = f
        .relay(
            "token",
            &[("grant_type", "implicit")],
            &basic(CONF, CONF_SECRET),
        )
        .await;
    assert_error(&r, 400, "unsupported_grant_type");
    let (status, body) = f
        .admin_form(
            "/tyk/oauth/authorize-client/",
            &[
                ("api_id", API),
                ("response_type", "code"),
                ("client_id", CONF),
                ("redirect_uri", "http://evil.example/cb"),
            ],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    // No redirect_uri, and the client registers two: which one is not guessed.
    let (status, body) = f
        .admin_form(
            "/tyk/oauth/authorize-client/",
            &[
                ("api_id", API),
                ("response_type", "code"),
                ("client_id", CONF),
            ],
        )
        .await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (400, Some("redirect_uri is required"))
    );
    // A repeated parameter is refused (no second redirect_uri past the check of the first).
    let r = f
        .relay(
            "token",
            &[
                ("grant_type", "client_credentials"),
                ("grant_type", "password"),
            ],
            &basic(CONF, CONF_SECRET),
        )
        .await;
    assert_error(&r, 400, "invalid_request");
    let r = f.server.handle("no-such-api", "token", &[], "").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body,
        json!({"error": "invalid_request", "error_description": "API not found or not OAuth 2.0"})
    );
    f.finish().await;
}

#[tokio::test]
async fn a_disallowed_grant_type_is_refused() {
    let f = Fixture::new(&["authorization_code"]).await;
    let r = f
        .relay(
            "token",
            &[("grant_type", "client_credentials")],
            &basic(CONF, CONF_SECRET),
        )
        .await;
    assert_error(&r, 400, "unsupported_grant_type");
    // No refresh token when refresh_token is not allowed.
    let code = f.code(&[]).await;
    let r = f.redeem(&code).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get("refresh_token").is_none(), "{}", r.body);
    f.finish().await;
}

#[tokio::test]
async fn pkce_is_required_of_public_clients() {
    let f = Fixture::new(ALL).await;
    let authorize = |extra: Vec<(&'static str, &'static str)>| {
        let mut form = vec![
            ("api_id", API),
            ("response_type", "code"),
            ("client_id", PUBLIC),
            ("redirect_uri", REDIRECT),
        ];
        form.extend(extra);
        let f = &f;
        async move { f.admin_form("/tyk/oauth/authorize-client/", &form).await }
    };
    let (status, body) = authorize(vec![]).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error_description"],
        "PKCE code_challenge (S256) is required for public clients"
    );
    let (status, _) = authorize(vec![
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "plain"),
    ])
    .await;
    assert_eq!(status, 400, "plain is refused");
    let (status, body) = authorize(vec![
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ])
    .await;
    assert_eq!(status, 200, "{body}");
    let code = body["code"].as_str().unwrap().to_owned();
    let token = |verifier: Option<&'static str>, code: String| {
        let f = &f;
        async move {
            let mut form = vec![
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("client_id", PUBLIC),
            ];
            if let Some(v) = verifier {
                form.push(("code_verifier", v));
            }
            f.relay("token", &form, "").await
        }
    };
    assert_error(&token(None, code).await, 400, "invalid_grant");
    let (_, body) = authorize(vec![
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ])
    .await;
    let code = body["code"].as_str().unwrap().to_owned();
    let wrong = "x".repeat(43).leak();
    assert_error(&token(Some(wrong), code).await, 400, "invalid_grant");
    let (_, body) = authorize(vec![
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ])
    .await;
    let code = body["code"].as_str().unwrap().to_owned();
    let r = token(Some(VERIFIER), code).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A public client has no client_credentials nor password grant, and no secret.
    let r = f
        .relay(
            "token",
            &[("grant_type", "client_credentials"), ("client_id", PUBLIC)],
            "",
        )
        .await;
    assert_error(&r, 400, "unauthorized_client");
    let r = f
        .relay(
            "token",
            &[("grant_type", "client_credentials")],
            &basic(PUBLIC, "guess"),
        )
        .await;
    assert_error(&r, 401, "invalid_client");
    f.finish().await;
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_revokes_the_family() {
    let f = Fixture::new(ALL).await;
    let code = f.code(&[]).await;
    let first = f.redeem(&code).await;
    let _ = f.hook().await;
    let r1 = first.body["refresh_token"].as_str().unwrap().to_owned();
    let a1 = first.body["access_token"].as_str().unwrap().to_owned();
    let refresh = |token: String| {
        let f = &f;
        async move {
            f.relay(
                "token",
                &[("grant_type", "refresh_token"), ("refresh_token", &token)],
                &basic(CONF, CONF_SECRET),
            )
            .await
        }
    };
    let second = refresh(r1.clone()).await;
    assert_eq!(second.status, 200, "{}", second.body);
    let r2 = second.body["refresh_token"].as_str().unwrap().to_owned();
    let a2 = second.body["access_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    assert!(f.key_exists(&a2).await);
    let (secret, hook) = f.hook().await;
    assert_eq!(secret, HOOK_SECRET);
    assert_eq!(hook["notification_type"], "refresh");
    assert_eq!(hook["old_refresh_token"], r1);
    assert_eq!(hook["refresh_token"], r2);
    // Another client cannot use it.
    let r = f
        .relay(
            "token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &r2),
                ("client_id", PUBLIC),
            ],
            "",
        )
        .await;
    assert_error(&r, 400, "invalid_grant");
    // The first one again: reuse. The whole family goes, access tokens included.
    assert_error(&refresh(r1).await, 400, "invalid_grant");
    assert!(!f.key_exists(&a1).await);
    assert!(!f.key_exists(&a2).await);
    assert_error(&refresh(r2).await, 400, "invalid_grant");
    f.finish().await;
}

#[tokio::test]
async fn revoke_one_token_and_every_token_of_a_client() {
    let f = Fixture::new(ALL).await;
    let code = f.code(&[]).await;
    let t = f.redeem(&code).await;
    let _ = f.hook().await;
    let access = t.body["access_token"].as_str().unwrap().to_owned();
    let refresh = t.body["refresh_token"].as_str().unwrap().to_owned();
    // The edge's /oauth/revoke: Tyk's errors, then RFC 7009.
    let auth = basic(CONF, CONF_SECRET);
    let r = f.relay("revoke", &[], &auth).await;
    assert_eq!(
        (r.status, &r.body),
        (
            400,
            &json!({"status": "error", "message": "token is required"})
        )
    );
    let r = f.relay("revoke", &[("token", "x")], "").await;
    assert_eq!(
        (r.status, &r.body),
        (
            400,
            &json!({"status": "error", "message": "client_id is required"})
        )
    );
    let r = f
        .relay("revoke", &[("token", "x"), ("client_id", "nobody")], "")
        .await;
    assert_eq!(
        (r.status, &r.body),
        (
            404,
            &json!({"status": "error", "message": "oauth client doesn't exist"})
        )
    );
    let r = f
        .relay("revoke", &[("token", &access)], &basic(CONF, "wrong"))
        .await;
    assert_error(&r, 401, "invalid_client");
    assert!(f.key_exists(&access).await);
    let ok = json!({"status": "ok", "message": "token revoked successfully"});
    let r = f
        .relay(
            "revoke",
            &[("token", &access), ("token_type_hint", "access_token")],
            &auth,
        )
        .await;
    assert_eq!((r.status, &r.body), (200, &ok));
    assert!(!f.key_exists(&access).await);
    let (_, hook) = f.hook().await;
    assert_eq!(hook["notification_type"], "revoke");
    let r = f.relay("revoke", &[("token", "never-issued")], &auth).await;
    assert_eq!(
        (r.status, &r.body),
        (200, &ok),
        "unknown tokens too (RFC 7009)"
    );
    // The management route revokes a refresh token by client id alone: refresh fails after.
    let (status, body) = f
        .admin_form(
            "/tyk/oauth/revoke",
            &[
                ("token", &refresh),
                ("token_type_hint", "refresh_token"),
                ("client_id", CONF),
            ],
        )
        .await;
    assert_eq!((status, &body), (200, &ok));
    let r = f
        .relay(
            "token",
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
            &auth,
        )
        .await;
    assert_error(&r, 400, "invalid_grant");
    let (status, body) = f
        .admin_form("/tyk/oauth/revoke", &[("client_id", CONF)])
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("token is required"))
    );

    // revoke_all.
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let r = f
            .relay("token", &[("grant_type", "client_credentials")], &auth)
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.body.get("refresh_token").is_none(),
            "none for client_credentials"
        );
        tokens.push(r.body["access_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(f.store.list_client_tokens(CONF).await.unwrap().len(), 3);
    let cases: [(Form<'_>, u16, &str); 4] = [
        (&[("client_secret", "x")], 401, "client_id is required"),
        (&[("client_id", CONF)], 401, "client_secret is required"),
        (
            &[("client_id", "nobody"), ("client_secret", "x")],
            404,
            "oauth client doesn't exist",
        ),
        (
            &[("client_id", CONF), ("client_secret", "wrong")],
            401,
            "client credentials invalid",
        ),
    ];
    for (form, status, message) in cases {
        let (s, body) = f.admin_form("/tyk/oauth/revoke_all", form).await;
        assert_eq!(
            (s, &body),
            (status, &json!({"status": "error", "message": message}))
        );
    }
    let (s, body) = f
        .admin_form(
            "/tyk/oauth/revoke_all",
            &[("client_id", CONF), ("client_secret", CONF_SECRET)],
        )
        .await;
    assert_eq!(
        (s, &body),
        (
            200,
            &json!({"status": "ok", "message": "tokens revoked successfully"})
        )
    );
    for t in &tokens {
        assert!(!f.key_exists(t).await);
    }
    assert!(f.store.list_client_tokens(CONF).await.unwrap().is_empty());
    f.finish().await;
}

#[tokio::test]
async fn password_grant_against_a_basic_auth_key() {
    let f = Fixture::new(ALL).await;
    let user = json!({
        "org_id": "org1",
        "access_rights": {API: {"api_id": API, "versions": ["Default"]}},
        "basic_auth_data": {"password": "alice-pw"},
    });
    let (status, body) = f
        .admin(reqwest::Method::POST, "/tyk/keys/alice", Some(user))
        .await;
    assert_eq!(status, 200, "{body}");
    let auth = basic(CONF, CONF_SECRET);
    let grant = |password: &'static str| {
        let f = &f;
        let auth = auth.clone();
        async move {
            f.relay(
                "token",
                &[
                    ("grant_type", "password"),
                    ("username", "alice"),
                    ("password", password),
                ],
                &auth,
            )
            .await
        }
    };
    let r = grant("alice-pw").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["refresh_token"].is_string());
    assert!(f.key_exists(r.body["access_token"].as_str().unwrap()).await);
    assert_error(&grant("wrong").await, 400, "invalid_grant");
    let r = f
        .relay(
            "token",
            &[
                ("grant_type", "password"),
                ("username", "bob"),
                ("password", "x"),
            ],
            &auth,
        )
        .await;
    assert_error(&r, 400, "invalid_grant");
    f.finish().await;
}

#[tokio::test]
async fn implicit_grant_and_key_rules() {
    let f = Fixture::new(ALL).await;
    let rules = json!({
        "access_rights": {API: {"api_id": API, "versions": []}},
        "meta_data": {"user": "u1"},
        "portcullis_origin": "jwt",
    })
    .to_string();
    let (status, body) = f
        .admin_form(
            "/tyk/oauth/authorize-client/",
            &[
                ("api_id", API),
                ("response_type", "token"),
                ("client_id", CONF),
                ("redirect_uri", REDIRECT),
                ("state", "s"),
                ("key_rules", &rules),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        body["redirect_to"],
        format!("{REDIRECT}#access_token={token}&token_type=bearer&expires_in=3600&state=s")
    );
    let session = f.store.get_key(&key_hash(token)).await.unwrap();
    assert!(session.get("portcullis_origin").is_none());
    assert_eq!(session["meta_data"], json!({"app": CONF, "user": "u1"}));
    f.finish().await;
}

#[tokio::test]
async fn nothing_issued_is_stored_in_plaintext() {
    let f = Fixture::new(ALL).await;
    let mut secrets: Vec<String> = vec![CONF_SECRET.into(), HOOK_SECRET.into()];
    let code = f.code(&[]).await;
    secrets.push(code.clone());
    let t = f.redeem(&code).await;
    let _ = f.hook().await;
    let refresh = t.body["refresh_token"].as_str().unwrap().to_owned();
    secrets.push(t.body["access_token"].as_str().unwrap().into());
    secrets.push(refresh.clone());
    let r = f
        .relay(
            "token",
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
            &basic(CONF, CONF_SECRET),
        )
        .await;
    secrets.push(r.body["access_token"].as_str().unwrap().into());
    secrets.push(r.body["refresh_token"].as_str().unwrap().into());
    secrets.push(f.code(&[]).await);
    let cc = f
        .relay(
            "token",
            &[("grant_type", "client_credentials")],
            &basic(CONF, CONF_SECRET),
        )
        .await;
    secrets.push(cc.body["access_token"].as_str().unwrap().into());
    let mut dump = String::new();
    for table in [
        "keys",
        "oauth_codes",
        "oauth_refresh_tokens",
        "change_log",
        "oauth_clients",
        "apis",
    ] {
        let rows: Vec<(String,)> = sqlx::query_as(&format!("SELECT t::text FROM {table} t"))
            .fetch_all(f.store.pool())
            .await
            .unwrap();
        assert!(!rows.is_empty() || table == "apis", "{table} has rows");
        for (r,) in rows {
            dump.push_str(&r);
            dump.push('\n');
        }
    }
    for s in &secrets {
        assert!(
            !dump.contains(s.as_str()),
            "a secret is stored in plaintext"
        );
    }
    f.finish().await;
}
