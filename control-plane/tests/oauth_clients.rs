//! The OAuth client API (`/tyk/oauth/clients/...`, docs/oauth.md) against a real Postgres: Tyk's
//! shapes and errors, clients bound to an API or to a policy, secrets sealed at rest and
//! returned opened, token listings by key hash, and deletion revoking the client's tokens.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step should stop a test loudly

use std::time::Duration;

use portcullis_control_plane::store::Store;
use portcullis_control_plane::{Config, ControlPlane, start};
use portcullis_proto::key_hash::key_hash;
use portcullis_proto::sealed_field;
use serde_json::{Value, json};

const ADMIN: &str = "admin-secret-for-the-oauth-client-tests-0123";
const ENCRYPTION: &str = "encryption-secret-for-the-oauth-client-tests";

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

async fn control_plane(db: &Db) -> ControlPlane {
    start(Config {
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
    .expect("control plane starts")
}

/// The management API, authenticated.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(cp: &ControlPlane) -> Self {
        // reqwest is built without a default TLS provider; plain HTTP still asks for one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            base: format!("http://{}", cp.api_addr),
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-tyk-authorization", ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, body).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    async fn create_client(&self, body: Value) -> Value {
        let (status, client) = self.post("/tyk/oauth/clients/create", body).await;
        assert_eq!(status, 200, "{client}");
        client
    }
}

fn oauth_api(id: &str) -> Value {
    json!({
        "api_id": id, "name": id, "org_id": "org-1", "use_oauth2": true,
        "oauth_meta": {
            "allowed_access_types": ["authorization_code", "refresh_token", "client_credentials"],
            "allowed_authorize_types": ["code"],
            "auth_login_redirect": "https://login.example/portal",
        },
        "proxy": {"listen_path": format!("/{id}/"), "target_url": "http://127.0.0.1:1"},
    })
}

/// A CP with two OAuth APIs, a plain keyed API and a policy granting the first OAuth API.
async fn setup(db: &Db) -> (ControlPlane, Api, Store) {
    let cp = control_plane(db).await;
    let api = Api::new(&cp);
    let store = Store::connect(&db.url, 4).await.unwrap();
    for def in [
        oauth_api("oa"),
        oauth_api("ob"),
        json!({"api_id": "plain", "name": "plain",
            "proxy": {"listen_path": "/plain/", "target_url": "http://127.0.0.1:1"}}),
    ] {
        let (status, body) = api.post("/tyk/apis", def).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = api
        .post(
            "/tyk/policies",
            json!({"id": "pol-a", "org_id": "org-p", "rate": 100, "per": 1,
                "access_rights": {"oa": {"api_id": "oa", "versions": ["Default"]}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    (cp, api, store)
}

/// Every row of the tables a secret could reach, as text.
async fn stored_text(store: &Store) -> String {
    let mut all = String::new();
    for table in ["oauth_clients", "change_log", "apis", "keys"] {
        let rows: Vec<(String,)> = sqlx::query_as(&format!("SELECT t::text FROM {table} t"))
            .fetch_all(store.pool())
            .await
            .unwrap();
        for (row,) in rows {
            all.push_str(&row);
            all.push('\n');
        }
    }
    all
}

async fn stored_secret(store: &Store, client_id: &str) -> String {
    let (secret,): (String,) =
        sqlx::query_as("SELECT body->>'secret' FROM oauth_clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_one(store.pool())
            .await
            .unwrap();
    secret
}

/// An access token of `client_id` as the grants store it: a key row of origin `oauth`.
async fn put_token(
    store: &Store,
    client_id: &str,
    token: &str,
    expires: chrono::DateTime<chrono::Utc>,
) {
    let hash = key_hash(token);
    store
        .put_key(
            &hash,
            &json!({"org_id": "org-1", "oauth_client_id": client_id}),
            Some(expires),
        )
        .await
        .unwrap();
    sqlx::query("UPDATE keys SET origin = 'oauth', oauth_client_id = $2 WHERE key_hash = $1")
        .bind(&hash)
        .bind(client_id)
        .execute(store.pool())
        .await
        .unwrap();
}

fn error(message: &str) -> Value {
    json!({"status": "error", "message": message})
}

#[tokio::test]
async fn a_client_is_created_listed_read_updated_rotated_and_deleted() {
    let db = Db::new().await;
    let (_cp, api, store) = setup(&db).await;

    // Generated id and secret; Tyk's shape with ours added; the org is the API's.
    let created = api
        .create_client(json!({
            "redirect_uri": "https://app.example/cb;https://app.example/cb2",
            "api_id": "oa", "policy_id": "pol-a", "org_id": "forged-org",
            "meta_data": {"tier": "gold"}, "description": "the app",
        }))
        .await;
    let id = created["client_id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "uuid hex: {id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(secret.len(), 43, "32 bytes base64url: {secret}");
    assert_eq!(
        created,
        json!({
            "client_id": id, "secret": secret,
            "redirect_uri": "https://app.example/cb;https://app.example/cb2",
            "api_id": "oa", "policy_id": "pol-a", "org_id": "org-1",
            "meta_data": {"tier": "gold"}, "description": "the app",
            "token_endpoint_auth_method": "client_secret_basic",
        })
    );

    // Sealed at rest for this client and field; nowhere in plaintext.
    let sealed = stored_secret(&store, &id).await;
    assert!(sealed_field::is_sealed(&sealed), "{sealed}");
    let key = sealed_field::key(ENCRYPTION);
    assert_eq!(
        sealed_field::open(&key, &id, "secret", &sealed).unwrap(),
        secret
    );
    assert!(!stored_text(&store).await.contains(&secret));

    // Read back with the secret opened; listed under its API only.
    let path = format!("/tyk/oauth/clients/oa/{id}");
    assert_eq!(api.get(&path).await, (200, created.clone()));
    for url in [path.clone(), "/tyk/oauth/clients/oa".to_owned()] {
        let resp = api
            .http
            .get(format!("{}{url}", api.base))
            .header("x-tyk-authorization", ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["cache-control"], "no-store", "{url}");
    }
    assert_eq!(
        api.get("/tyk/oauth/clients/oa").await,
        (200, json!([created]))
    );
    assert_eq!(api.get("/tyk/oauth/clients/ob").await, (200, json!([])));

    // PUT sending back what GET returned (the plaintext secret) keeps the stored value.
    let mut changed = created.clone();
    changed["redirect_uri"] = json!("https://app.example/new");
    changed["description"] = json!("renamed");
    changed["meta_data"] = json!({"tier": "silver"});
    changed["api_id"] = json!("ob");
    changed["client_id"] = json!("other-id");
    let (status, updated) = api.put(&path, Some(changed)).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        (
            &updated["redirect_uri"],
            &updated["description"],
            &updated["meta_data"]
        ),
        (
            &json!("https://app.example/new"),
            &json!("renamed"),
            &json!({"tier": "silver"})
        )
    );
    assert_eq!(
        (&updated["client_id"], &updated["api_id"]),
        (&json!(id), &json!("oa")),
        "from the path"
    );
    assert_eq!(updated["secret"], json!(secret));
    assert_eq!(
        stored_secret(&store, &id).await,
        sealed,
        "unchanged, not re-sealed"
    );
    assert_eq!(api.get(&path).await, (200, updated.clone()));

    // Without a secret the stored one is kept too; a new plaintext one replaces it.
    let (status, kept) = api
        .put(
            &path,
            Some(json!({"redirect_uri": "https://app.example/new", "policy_id": "pol-a"})),
        )
        .await;
    assert_eq!((status, &kept["secret"]), (200, &json!(secret)));
    assert_eq!(kept["description"], "", "PUT replaces the fields");
    let (status, replaced) = api
        .put(&path, Some(json!({"redirect_uri": "https://app.example/new", "secret": "operator-chosen-secret"})))
        .await;
    assert_eq!(
        (status, &replaced["secret"]),
        (200, &json!("operator-chosen-secret"))
    );
    assert!(sealed_field::is_sealed(&stored_secret(&store, &id).await));

    // Rotation: a new generated secret, returned once more by GET.
    let (status, rotated) = api.put(&format!("{path}/rotate"), None).await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_eq!(new_secret.len(), 43);
    assert_ne!(new_secret, secret);
    assert_eq!(api.get(&path).await.1["secret"], json!(new_secret));
    let text = stored_text(&store).await;
    for plain in [&secret, &new_secret, "operator-chosen-secret"] {
        assert!(!text.contains(plain), "{plain} stored in plaintext");
    }

    // Delete revokes the client's tokens, then it is gone.
    let soon = chrono::Utc::now() + chrono::Duration::hours(1);
    put_token(&store, &id, "token-of-the-deleted-client", soon).await;
    let (status, tokens) = api.get(&format!("{path}/tokens")).await;
    assert_eq!(
        (status, tokens),
        (
            200,
            json!([{"code": key_hash("token-of-the-deleted-client"), "expires": soon.timestamp()}])
        )
    );
    assert_eq!(
        api.delete(&path).await,
        (200, json!({"key": id, "status": "ok", "action": "deleted"}))
    );
    // Kept until they expire, inactive, so edges answer "OAuth client access was revoked".
    let (live,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM keys WHERE oauth_client_id = $1
         AND coalesce((session->>'is_inactive')::boolean, false) = false",
    )
    .bind(&id)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(live, 0, "tokens revoked");
    assert_eq!(
        api.get(&path).await,
        (404, error("OAuth Client ID not found"))
    );
    assert_eq!(
        api.delete(&path).await,
        (404, error("OAuth Client ID not found"))
    );
    assert_eq!(api.get("/tyk/oauth/clients/oa").await, (200, json!([])));
    db.drop_db().await;
}

#[tokio::test]
async fn a_client_bound_to_a_policy_belongs_to_every_api_the_policy_grants() {
    let db = Db::new().await;
    let (_cp, api, _store) = setup(&db).await;
    let created = api
        .create_client(json!({"client_id": "by-policy", "secret": "chosen-secret",
            "redirect_uri": "https://app.example/cb", "policy_id": "pol-a"}))
        .await;
    assert_eq!(
        (&created["client_id"], &created["secret"]),
        (&json!("by-policy"), &json!("chosen-secret"))
    );
    assert_eq!(
        (&created["api_id"], &created["org_id"]),
        (&json!(""), &json!("org-p")),
        "org from the policy"
    );
    assert_eq!(
        api.get("/tyk/oauth/clients/oa").await,
        (200, json!([created.clone()]))
    );
    assert_eq!(api.get("/tyk/oauth/clients/ob").await, (200, json!([])));
    assert_eq!(
        api.get("/tyk/oauth/clients/oa/by-policy").await,
        (200, created.clone())
    );
    assert_eq!(
        api.get("/tyk/oauth/clients/ob/by-policy").await,
        (404, error("OAuth Client ID not found"))
    );

    // The policy granting the other API too makes it a client there as well.
    let (status, _) = api
        .put(
            "/tyk/policies/pol-a",
            Some(json!({"org_id": "org-p", "access_rights": {
                "oa": {"api_id": "oa", "versions": ["Default"]},
                "ob": {"api_id": "ob", "versions": ["Default"]}}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        api.get("/tyk/oauth/clients/ob").await,
        (200, json!([created]))
    );

    // A PUT through an API must keep the client on it (Tyk's rule); no policy and no API: 400.
    let (status, _) = api
        .post(
            "/tyk/policies",
            json!({"id": "pol-b", "access_rights": {"ob": {"api_id": "ob", "versions": []}}}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = api
        .put(
            "/tyk/oauth/clients/oa/by-policy",
            Some(json!({"policy_id": "pol-b"})),
        )
        .await;
    assert_eq!(
        (status, &body["field"]),
        (400, &json!("policy_id")),
        "{body}"
    );
    assert_eq!(
        body["message"],
        "policy_id: Policy access rights doesn't contain API this OAuth client belongs to"
    );
    let (status, body) = api
        .put("/tyk/oauth/clients/oa/by-policy", Some(json!({})))
        .await;
    assert_eq!((status, &body["field"]), (400, &json!("api_id")), "{body}");
    assert_eq!(
        api.delete("/tyk/oauth/clients/oa/by-policy").await,
        (
            200,
            json!({"key": "by-policy", "status": "ok", "action": "deleted"})
        )
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_public_client_has_no_secret_to_show_set_or_rotate() {
    let db = Db::new().await;
    let (_cp, api, store) = setup(&db).await;
    let created = api
        .create_client(
            json!({"api_id": "oa", "redirect_uri": "https://spa.example/cb",
            "token_endpoint_auth_method": "none"}),
        )
        .await;
    assert_eq!(
        (&created["secret"], &created["token_endpoint_auth_method"]),
        (&json!(""), &json!("none"))
    );
    let id = created["client_id"].as_str().unwrap().to_owned();
    assert_eq!(stored_secret(&store, &id).await, "");
    let path = format!("/tyk/oauth/clients/oa/{id}");
    let (status, body) = api.put(&format!("{path}/rotate"), None).await;
    assert_eq!(
        (status, &body["field"]),
        (400, &json!("token_endpoint_auth_method")),
        "{body}"
    );
    let (status, body) = api
        .put(
            &path,
            Some(json!({"token_endpoint_auth_method": "none", "secret": "x"})),
        )
        .await;
    assert_eq!((status, &body["field"]), (400, &json!("secret")), "{body}");
    let (status, body) = api
        .post(
            "/tyk/oauth/clients/create",
            json!({"api_id": "oa", "secret": "s", "token_endpoint_auth_method": "none"}),
        )
        .await;
    assert_eq!((status, &body["field"]), (400, &json!("secret")), "{body}");

    // Made confidential, it gets a generated secret; made public again, it loses it.
    let (status, body) = api
        .put(&path, Some(json!({"redirect_uri": "https://spa.example/cb", "token_endpoint_auth_method": "client_secret_post"})))
        .await;
    assert_eq!(status, 200, "{body}");
    let secret = body["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 43);
    assert!(sealed_field::is_sealed(&stored_secret(&store, &id).await));
    let (status, body) = api
        .put(
            &path,
            Some(json!({"token_endpoint_auth_method": "none", "secret": secret})),
        )
        .await;
    assert_eq!((status, &body["secret"]), (200, &json!("")), "{body}");
    assert_eq!(stored_secret(&store, &id).await, "");
    db.drop_db().await;
}

#[tokio::test]
async fn refused_writes_and_unknown_clients_answer_with_tyk_errors() {
    let db = Db::new().await;
    let (_cp, api, _store) = setup(&db).await;
    let create = |body: Value| api.post("/tyk/oauth/clients/create", body);
    // Tyk's exact wording (clients match on it), plus the field.
    let refused =
        |field: &str, message: &str| json!({"status": "error", "message": message, "field": field});
    assert_eq!(
        create(json!({"api_id": "missing"})).await,
        (400, refused("api_id", "API doesn't exist"))
    );
    assert_eq!(
        create(json!({"api_id": "plain"})).await,
        (400, refused("api_id", "API is not OAuth2"))
    );
    assert_eq!(
        create(json!({"api_id": "oa", "policy_id": "nope"})).await,
        (400, refused("policy_id", "Policy doesn't exist"))
    );
    assert_eq!(
        create(json!({"policy_id": "nope"})).await,
        (400, refused("policy_id", "Policy doesn't exist"))
    );
    let (status, body) = create(json!({"redirect_uri": "https://a.example/cb"})).await;
    assert_eq!((status, &body["field"]), (400, &json!("api_id")), "{body}");
    for (body, field) in [
        (json!({"api_id": "oa", "client_id": "a/b"}), "client_id"),
        (
            json!({"api_id": "oa", "redirect_uri": "https://a.example/cb#x"}),
            "redirect_uri",
        ),
        (
            json!({"api_id": "oa", "redirect_uri": "not a uri"}),
            "redirect_uri",
        ),
        (
            json!({"api_id": "oa", "token_endpoint_auth_method": "private_key_jwt"}),
            "token_endpoint_auth_method",
        ),
        (
            json!({"api_id": "oa", "meta_data": {"pad": "x".repeat(65 * 1024)}}),
            "meta_data",
        ),
        (
            json!({"api_id": "oa", "meta_data": {"k": "\u{0}"}}),
            "meta_data.k",
        ),
        (json!({"api_id": "oa", "meta_data": []}), "meta_data"),
        (
            json!({"api_id": "oa", "description": "d".repeat(5000)}),
            "description",
        ),
        (json!({"api_id": "oa", "secret": "x".repeat(600)}), "secret"),
        (
            json!({"api_id": "oa", "secret": "sealed:v1:AAAA"}),
            "secret",
        ),
        (json!(["not", "an", "object"]), "body"),
    ] {
        let (status, answer) = create(body).await;
        assert_eq!((status, &answer["field"]), (400, &json!(field)), "{answer}");
        assert_eq!(answer["status"], "error");
    }
    let (status, body) = api
        .http
        .post(format!("{}/tyk/oauth/clients/create", api.base))
        .header("x-tyk-authorization", ADMIN)
        .body("{not json")
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 400);
    assert_eq!(body.json::<Value>().await.unwrap()["field"], "body");

    // A client id is taken once.
    api.create_client(json!({"client_id": "taken", "api_id": "oa"}))
        .await;
    let (status, body) = create(json!({"client_id": "taken", "api_id": "oa"})).await;
    assert_eq!(
        (status, &body["field"]),
        (400, &json!("client_id")),
        "{body}"
    );

    // Unknown API, unknown client, a client of another API: 404 with Tyk's messages.
    assert_eq!(
        api.get("/tyk/oauth/clients/missing").await,
        (404, error("API not found"))
    );
    let not_found = (404, error("OAuth Client ID not found"));
    let too_long = format!("/tyk/oauth/clients/oa/{}", "c".repeat(300));
    for path in [
        "/tyk/oauth/clients/oa/missing",
        "/tyk/oauth/clients/ob/taken",
        "/tyk/oauth/clients/ob/taken/tokens",
        &too_long,
    ] {
        assert_eq!(api.get(path).await, not_found, "{path}");
    }
    assert_eq!(
        api.put("/tyk/oauth/clients/ob/taken", Some(json!({})))
            .await,
        not_found
    );
    assert_eq!(
        api.put("/tyk/oauth/clients/ob/taken/rotate", None).await,
        not_found
    );
    assert_eq!(api.delete("/tyk/oauth/clients/ob/taken").await, not_found);
    assert_eq!(
        api.get("/tyk/oauth/clients/oa/taken").await.0,
        200,
        "still there"
    );

    // Without the admin secret: Tyk's 403.
    let resp = reqwest::Client::new()
        .get(format!("{}/tyk/oauth/clients/oa/taken", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    db.drop_db().await;
}

#[tokio::test]
async fn tokens_are_listed_by_hash_whole_or_in_tyk_pages() {
    let db = Db::new().await;
    let (_cp, api, store) = setup(&db).await;
    api.create_client(json!({"client_id": "busy", "api_id": "oa"}))
        .await;
    api.create_client(json!({"client_id": "idle", "api_id": "oa"}))
        .await;
    let base = chrono::Utc::now() + chrono::Duration::hours(1);
    for i in 0..150 {
        put_token(
            &store,
            "busy",
            &format!("token-{i:03}"),
            base + chrono::Duration::seconds(i),
        )
        .await;
    }
    // Expired tokens are not listed (the lifetime sweeper removes them).
    put_token(
        &store,
        "busy",
        "expired-token",
        chrono::Utc::now() - chrono::Duration::seconds(5),
    )
    .await;

    let (status, all) = api.get("/tyk/oauth/clients/oa/busy/tokens").await;
    assert_eq!(status, 200);
    let all = all.as_array().unwrap().clone();
    assert_eq!(all.len(), 150);
    assert_eq!(
        all[0],
        json!({"code": key_hash("token-000"), "expires": base.timestamp()})
    );
    assert!(!all.iter().any(|t| t["code"] == key_hash("expired-token")));
    let text = serde_json::to_string(&all).unwrap();
    assert!(!text.contains("token-0"), "hashes only");

    let (status, page) = api.get("/tyk/oauth/clients/oa/busy/tokens?page=2").await;
    assert_eq!(status, 200);
    assert_eq!(
        page["pagination"],
        json!({"page_size": 100, "page_num": 2, "page_total": 2})
    );
    assert_eq!(page["tokens"].as_array().unwrap()[..], all[100..]);
    let (_, first) = api
        .get("/tyk/oauth/clients/oa/busy/tokens?page=nonsense")
        .await;
    assert_eq!(first["pagination"]["page_num"], 1);
    assert_eq!(first["tokens"].as_array().unwrap()[..], all[..100]);
    let (_, past) = api.get("/tyk/oauth/clients/oa/busy/tokens?page=9").await;
    assert_eq!(
        past,
        json!({"pagination": {"page_size": 100, "page_num": 9, "page_total": 2}, "tokens": []})
    );
    assert_eq!(
        api.get("/tyk/oauth/clients/oa/idle/tokens").await,
        (200, json!([]))
    );
    assert_eq!(
        api.get("/tyk/oauth/clients/oa/idle/tokens?page=1").await,
        (
            200,
            json!({"pagination": {"page_size": 100, "page_num": 1, "page_total": 0}, "tokens": []})
        )
    );

    // A chosen id reused after a delete does not inherit tokens left behind.
    put_token(&store, "reused", "left-behind", base).await;
    api.create_client(json!({"client_id": "reused", "api_id": "oa"}))
        .await;
    assert_eq!(
        api.get("/tyk/oauth/clients/oa/reused/tokens").await,
        (200, json!([]))
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_secret_that_does_not_open_is_a_500_that_shows_nothing() {
    let db = Db::new().await;
    let (_cp, api, store) = setup(&db).await;
    api.create_client(json!({"client_id": "victim", "api_id": "oa", "secret": "victim-secret"}))
        .await;
    // A sealed value moved from another client does not open for this one.
    let key = sealed_field::key(ENCRYPTION);
    let foreign = sealed_field::seal(&key, "another-client", "secret", "foreign-secret");
    sqlx::query("UPDATE oauth_clients SET body = jsonb_set(body, '{secret}', to_jsonb($1::text)) WHERE client_id = 'victim'")
        .bind(&foreign)
        .execute(store.pool())
        .await
        .unwrap();
    let internal = (500, error("Internal error"));
    assert_eq!(api.get("/tyk/oauth/clients/oa/victim").await, internal);
    assert_eq!(api.get("/tyk/oauth/clients/oa").await, internal);
    assert_eq!(
        api.put("/tyk/oauth/clients/oa/victim", Some(json!({})))
            .await,
        internal
    );
    // Rotation does not need the old secret: it repairs the client.
    let (status, body) = api.put("/tyk/oauth/clients/oa/victim/rotate", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        api.get("/tyk/oauth/clients/oa/victim").await.1["secret"],
        body["secret"]
    );
    db.drop_db().await;
}

#[tokio::test]
async fn the_notifications_shared_secret_of_an_api_is_sealed_at_rest() {
    let db = Db::new().await;
    let (_cp, api, store) = setup(&db).await;
    let mut def = oauth_api("notified");
    def["notifications"] = json!({"shared_secret": "hook-shared-secret",
        "oauth_on_keychange_url": "https://hooks.example/oauth"});
    let (status, body) = api.post("/tyk/apis", def).await;
    assert_eq!(status, 200, "{body}");
    let (_, stored) = api.get("/tyk/apis/notified").await;
    let sealed = stored["notifications"]["shared_secret"].as_str().unwrap();
    assert!(sealed_field::is_sealed(sealed), "{sealed}");
    let key = sealed_field::key(ENCRYPTION);
    assert_eq!(
        sealed_field::open(&key, "notified", "notifications.shared_secret", sealed).unwrap(),
        "hook-shared-secret"
    );
    assert!(!stored_text(&store).await.contains("hook-shared-secret"));
    db.drop_db().await;
}
