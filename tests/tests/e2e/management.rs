//! The management API: admin secret, validation, Tyk shapes, tokens, CA, node registry, metrics.

use portcullis_tests::{Cp, Dp, DpOptions, TestDb, keyless_api};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const FORBIDDEN: &str = "Attempted administrative access with invalid or missing key!";

#[tokio::test]
async fn every_route_but_hello_needs_the_admin_secret() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let (status, body) = cp.call_raw(Method::GET, "/hello", None, None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("pass"))
    );
    for (method, path) in [
        (Method::GET, "/tyk/apis"),
        (Method::POST, "/tyk/apis"),
        (Method::DELETE, "/tyk/apis/x"),
        (Method::GET, "/tyk/policies"),
        (Method::GET, "/tyk/reload"),
        (Method::POST, "/portcullis/bootstrap-tokens"),
        (Method::GET, "/portcullis/nodes"),
        (Method::GET, "/portcullis/ca"),
        (Method::GET, "/metrics"),
        (Method::GET, "/openapi.json"),
        (Method::GET, "/no/such/route"),
    ] {
        for secret in [None, Some("wrong"), Some("")] {
            let (status, body) = cp
                .call_raw(method.clone(), path, Some("{}".into()), secret)
                .await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{method} {path} with {secret:?}"
            );
            assert_eq!(body, json!({"status": "error", "message": FORBIDDEN}));
        }
    }
    let (status, _) = cp.call(Method::GET, "/tyk/reload/group", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, doc) = cp.call(Method::GET, "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/tyk/apis/{api_id}"]["put"].is_object());
}

#[tokio::test]
async fn definitions_round_trip_and_invalid_ones_change_nothing() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let mut def = keyless_api("", "/orders/", "http://orders.internal:8080/v1/");
    def.as_object_mut().unwrap().remove("api_id");
    def["custom_middleware"] = json!({"pre": [{"name": "kept"}]});
    let added = cp.create_api(&def).await;
    assert_eq!(added["action"], "added");
    let id = added["key"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "a missing api_id is generated");
    let (status, stored) = cp.call(Method::GET, &format!("/tyk/apis/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        stored["custom_middleware"]["pre"][0]["name"], "kept",
        "unknown fields survive"
    );
    assert_eq!(stored["api_id"], id.as_str());

    let pool = db.pool().await;
    let revisions = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM change_log")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = revisions(pool.clone()).await;
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "body"),
        (json!([1, 2]).to_string(), "body"),
        (json!({"api_id": "a", "proxy": {"target_url": "http://u/"}}).to_string(), "proxy.listen_path"),
        (json!({"api_id": "a", "proxy": {"listen_path": "/a/", "target_url": "not a url"}}).to_string(), "proxy.target_url"),
        (json!({"api_id": "a", "proxy": {"listen_path": "/a/", "target_url": "/relative"}}).to_string(), "proxy.target_url"),
        (json!({"api_id": "a/b", "proxy": {"listen_path": "/a/", "target_url": "http://u/"}}).to_string(), "api_id"),
        (json!({"api_id": "a", "use_keyless": "yes", "proxy": {"listen_path": "/a/", "target_url": "http://u/"}}).to_string(), "use_keyless"),
        (json!({"api_id": "a", "proxy": {"listen_path": 5, "target_url": "http://u/"}}).to_string(), "proxy.listen_path"),
        (json!({"api_id": "dup", "proxy": {"listen_path": "/orders/", "target_url": "http://u/"}}).to_string(), "proxy.listen_path"),
        (json!({"api_id": id, "proxy": {"listen_path": "/other/", "target_url": "http://u/"}}).to_string(), "api_id"),
    ];
    for (body, field) in cases {
        let (status, answer) = cp
            .call_raw(
                Method::POST,
                "/tyk/apis",
                Some(body.clone()),
                Some(portcullis_tests::ADMIN_SECRET),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        assert_eq!(answer["status"], "error");
        assert_eq!(answer["field"], field, "{body} → {answer}");
        assert!(
            answer["message"].as_str().unwrap().starts_with(field),
            "message names the field: {answer}"
        );
    }
    // The same checks on update; the stored definition is untouched.
    let (status, _) = cp
        .call(
            Method::PUT,
            &format!("/tyk/apis/{id}"),
            Some(&json!({"proxy": {"listen_path": "/x/"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, still) = cp.call(Method::GET, &format!("/tyk/apis/{id}"), None).await;
    assert_eq!(still, stored);
    assert_eq!(
        revisions(pool.clone()).await,
        before,
        "nothing committed, so nothing streamed"
    );
    let (status, list) = cp.call(Method::GET, "/tyk/apis", None).await;
    assert_eq!(
        (status, list.as_array().unwrap().len()),
        (StatusCode::OK, 1)
    );

    let (status, body) = cp.call(Method::GET, "/tyk/apis/missing", None).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("API not found"))
    );
    let (status, _) = cp
        .call(
            Method::PUT,
            "/tyk/apis/missing",
            Some(&keyless_api("missing", "/m/", "http://u/")),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = cp.call(Method::DELETE, "/tyk/apis/missing", None).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("API not found"))
    );
}

#[tokio::test]
async fn policies_crud_in_tyk_shapes() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let policy = json!({"id": "gold", "name": "Gold", "rate": 100, "per": 1, "quota_max": -1,
        "access_rights": {"orders": {"api_id": "orders", "versions": ["Default"]}}, "partitions": {"quota": false}});
    let (status, body) = cp.call(Method::POST, "/tyk/policies", Some(&policy)).await;
    assert_eq!(
        (status, body.clone()),
        (
            StatusCode::OK,
            json!({"key": "gold", "status": "ok", "action": "added", "warnings": []})
        )
    );
    let (_, stored) = cp.call(Method::GET, "/tyk/policies/gold", None).await;
    assert_eq!(stored["partitions"], json!({"quota": false}));
    let (status, body) = cp
        .call(
            Method::POST,
            "/tyk/policies",
            Some(&json!({"id": "bad", "rate": "fast"})),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("rate"))
    );
    let mut changed = policy.clone();
    changed["rate"] = json!(5);
    let (status, body) = cp
        .call(Method::PUT, "/tyk/policies/gold", Some(&changed))
        .await;
    assert_eq!(
        (status, body["action"].as_str()),
        (StatusCode::OK, Some("modified"))
    );
    let (_, list) = cp.call(Method::GET, "/tyk/policies", None).await;
    assert_eq!(list[0]["rate"], 5);
    let (status, _) = cp.call(Method::DELETE, "/tyk/policies/gold", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = cp.call(Method::GET, "/tyk/policies/gold", None).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("Policy not found"))
    );
}

#[tokio::test]
async fn tokens_ca_and_node_registry() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let (status, created) = cp
        .call(
            Method::POST,
            "/portcullis/bootstrap-tokens",
            Some(&json!({"group": "eu", "expires_in": 600, "description": "eu fleet"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let token = created["token"].as_str().unwrap();
    let (id, secret) = token.split_once('.').unwrap();
    assert!(
        id.len() == 6 && secret.len() == 16,
        "kubeadm-style token: {token}"
    );
    assert_eq!(created["ca_hash"], cp.ca_hash.as_str());
    let (_, ca) = cp.call(Method::GET, "/portcullis/ca", None).await;
    assert_eq!(ca["ca_hash"], cp.ca_hash.as_str());
    assert!(
        ca["certificate"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );

    let (_, list) = cp
        .call(Method::GET, "/portcullis/bootstrap-tokens", None)
        .await;
    assert_eq!(list["tokens"][0]["id"], id);
    assert!(
        !list.to_string().contains(secret),
        "listing never shows the secret"
    );
    let (status, body) = cp
        .call(
            Method::POST,
            "/portcullis/bootstrap-tokens",
            Some(&json!({"expires_in": -5})),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("expires_in"))
    );

    // The CA key is sealed in Postgres, never stored in the clear.
    let pool = db.pool().await;
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT key_sealed FROM node_ca")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains("PRIVATE KEY"));

    let dp = Dp::start(
        &cp,
        DpOptions {
            token: Some(token.to_owned()),
            group: Some("eu".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Propagation is measured for commits made while the stream is live.
    portcullis_tests::eventually(
        std::time::Duration::from_secs(10),
        "first snapshot",
        || async { (dp.snapshots() == 1).then_some(()) },
    )
    .await;
    cp.create_api(&keyless_api("a", "/a/", "http://127.0.0.1:9/"))
        .await;
    dp.wait_for_revision(1).await;
    let node = portcullis_tests::eventually(
        std::time::Duration::from_secs(10),
        "ACK recorded",
        || async {
            let (_, nodes) = cp.call(Method::GET, "/portcullis/nodes", None).await;
            let node = nodes["nodes"][0].clone();
            (node["applied_revision"] == 1).then_some(node)
        },
    )
    .await;
    assert_eq!(node["group"], "eu");
    assert_eq!(node["connected"], true);
    assert_eq!(node["lag"], 0);
    assert_eq!(node["version"], portcullis_proto::version::BUILD_VERSION);
    let (status, one) = cp
        .call(
            Method::GET,
            &format!("/portcullis/nodes/{}", node["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(
        (status, one["name"].as_str()),
        (StatusCode::OK, Some("edge-e2e"))
    );
    let (status, _) = cp
        .call(Method::GET, "/portcullis/nodes/not-a-uuid", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (_, metrics) = cp.call(Method::GET, "/metrics", None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains("portcullis_sync_propagation_seconds_count{group=\"eu\"} 1"),
        "{metrics}"
    );

    let (status, _) = cp
        .call(
            Method::DELETE,
            &format!("/portcullis/bootstrap-tokens/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = cp
        .call(Method::GET, "/portcullis/bootstrap-tokens", None)
        .await;
    assert_eq!(list["tokens"][0]["revoked"], Value::Bool(true));
}

/// libxcrypt's bcrypt (through Python's `crypt`), an implementation independent of ours.
fn libc_bcrypt_matches(password: &str, hash: &str) -> bool {
    let out = std::process::Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], sys.argv[2]) == sys.argv[2])",
            password,
            hash,
        ])
        .output()
        .expect("python3 runs");
    String::from_utf8_lossy(&out.stdout).trim() == "True"
}

#[tokio::test]
async fn keys_are_stored_hashed_and_round_trip_tyk_sessions() {
    use sha2::Digest;
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let session = json!({
        "org_id": "acme", "rate": 10, "per": 60, "quota_max": 1000, "quota_renewal_rate": 3600, "expires": 0,
        "access_rights": {"orders": {"api_id": "orders", "api_name": "Orders", "versions": ["Default"],
            "allowed_urls": [{"url": "/orders/.*", "methods": ["GET"]}]}},
        "meta_data": {"team": "blue"}, "tags": ["gold"], "custom_field": {"kept": true}
    });
    let (status, created) = cp.call(Method::POST, "/tyk/keys", Some(&session)).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["action"], "added");
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(
        key.starts_with("acme") && key.len() == 4 + 32,
        "org id + uuid hex: {key}"
    );
    let hash = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    assert_eq!(created["key_hash"], hash.as_str());

    // Only the hash reaches Postgres.
    let pool = db.pool().await;
    let dump: String =
        sqlx::query_scalar("SELECT string_agg(key_hash || session::text, '') FROM keys")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!dump.contains(&key), "the key itself is never stored");
    assert!(dump.contains(&hash));

    let (status, got) = cp
        .call(Method::GET, &format!("/tyk/keys/{key}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        got["access_rights"]["orders"]["allowed_urls"][0]["methods"],
        json!(["GET"])
    );
    assert_eq!(
        got["custom_field"],
        json!({"kept": true}),
        "unknown fields survive"
    );
    let created_at = got["date_created"].clone();
    let (status, by_hash) = cp
        .call(Method::GET, &format!("/tyk/keys/{hash}?hashed=true"), None)
        .await;
    assert_eq!(
        (status, by_hash["meta_data"]["team"].as_str()),
        (StatusCode::OK, Some("blue"))
    );

    let mut changed = session.clone();
    changed["rate"] = json!(99);
    let (status, body) = cp
        .call(
            Method::PUT,
            &format!("/tyk/keys/{hash}?hashed=true"),
            Some(&changed),
        )
        .await;
    assert_eq!(
        (status, body["action"].as_str()),
        (StatusCode::OK, Some("modified"))
    );
    let (_, got) = cp
        .call(Method::GET, &format!("/tyk/keys/{key}"), None)
        .await;
    assert_eq!(got["rate"], 99);
    assert_eq!(
        got["date_created"], created_at,
        "creation date kept on update"
    );
    let (_, list) = cp.call(Method::GET, "/tyk/keys", None).await;
    assert_eq!(list["keys"], json!([hash]));

    // Bad input names the field and changes nothing.
    for (body, field) in [
        (json!({"rate": "fast", "access_rights": {"a": {}}}), "rate"),
        (json!({"org_id": "x"}), "access_rights"),
        (
            json!({"access_rights": {"a": {"versions": "Default"}}}),
            "access_rights.a.versions",
        ),
    ] {
        let (status, answer) = cp.call(Method::POST, "/tyk/keys/create", Some(&body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["field"], field, "{answer}");
    }
    let (status, answer) = cp
        .call(
            Method::PUT,
            &format!("/tyk/keys/{key}"),
            Some(&json!({"quota_max": "lots"})),
        )
        .await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("quota_max"))
    );
    let (_, got) = cp
        .call(Method::GET, &format!("/tyk/keys/{key}"), None)
        .await;
    assert_eq!(got["rate"], 99);

    // Tyk's not-found messages, one per verb.
    let (status, body) = cp.call(Method::GET, "/tyk/keys/nope", None).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("Key not found"))
    );
    let (status, body) = cp.call(Method::PUT, "/tyk/keys/nope", Some(&session)).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("Key is not found"))
    );
    let (status, body) = cp.call(Method::DELETE, "/tyk/keys/nope", None).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("There is no such key found"))
    );

    let (status, body) = cp
        .call(Method::DELETE, &format!("/tyk/keys/{key}"), None)
        .await;
    assert_eq!(
        (status, body["action"].as_str()),
        (StatusCode::OK, Some("deleted"))
    );
    let (status, _) = cp
        .call(Method::GET, &format!("/tyk/keys/{key}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn basic_auth_users_get_bcrypt_passwords_and_custom_keys_keep_their_name() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let user = json!({"access_rights": {"a": {"api_id": "a"}}, "basic_auth_data": {"password": "s3cret!"},
        "expires": 1_000_000_000});
    let (status, body) = cp.call(Method::POST, "/tyk/keys/alice", Some(&user)).await;
    assert_eq!(
        (status, body["key"].as_str()),
        (StatusCode::OK, Some("alice"))
    );
    let (_, stored) = cp.call(Method::GET, "/tyk/keys/alice", None).await;
    let hash = stored["basic_auth_data"]["password"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(stored["basic_auth_data"]["hash_type"], "bcrypt");
    assert!(
        hash.starts_with("$2b$10$"),
        "bcrypt, cost 10 as Tyk: {hash}"
    );
    assert!(
        libc_bcrypt_matches("s3cret!", &hash),
        "an independent bcrypt accepts the password"
    );
    assert!(!libc_bcrypt_matches("s3cret?", &hash));
    assert_eq!(
        stored["expires"], 0,
        "an expiry already in the past at creation means never, as Tyk"
    );

    // Updating with the stored (already hashed) password does not hash it twice.
    let (status, _) = cp.call(Method::PUT, "/tyk/keys/alice", Some(&stored)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, again) = cp.call(Method::GET, "/tyk/keys/alice", None).await;
    assert_eq!(again["basic_auth_data"]["password"], hash.as_str());

    let (status, body) = cp
        .call(
            Method::POST,
            "/tyk/keys/bob",
            Some(&json!({"access_rights": {"a": {"api_id": "a"}}, "basic_auth_data": {"password": "x", "hash_type": "murmur32"}})),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("basic_auth_data.hash_type"))
    );
    let (status, _) = cp
        .call(Method::POST, "/tyk/keys/abc?hashed=true", Some(&user))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_empty_id_on_a_collection_path_is_not_found_not_a_routing_fault() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    for (method, path, message) in [
        (Method::PUT, "/tyk/apis/", "API not found"),
        (Method::DELETE, "/tyk/apis/", "API not found"),
        (Method::PUT, "/tyk/policies/", "Policy not found"),
        (Method::DELETE, "/tyk/policies/", "Policy not found"),
        (Method::PUT, "/tyk/keys/", "Key is not found"),
        (Method::DELETE, "/tyk/keys/", "There is no such key found"),
        (
            Method::DELETE,
            "/tyk/certs/",
            "Certificate with given SHA256 fingerprint not found",
        ),
    ] {
        let (status, body) = cp
            .call(method.clone(), path, Some(&json!({"id": ""})))
            .await;
        assert_eq!(
            (status, body["message"].as_str()),
            (StatusCode::NOT_FOUND, Some(message)),
            "{method} {path}"
        );
    }
}
