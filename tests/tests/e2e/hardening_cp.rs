//! Control-plane hardening (issue 10, items 3, 4 and 8): bounded numbers, keys without rights,
//! secret lengths, the CA sealing secret, `/hello`, one-use tokens, HTTPS and bcrypt's 72 bytes.

use std::time::Duration;

use clap::Parser;
use portcullis_proto::envelope::{EnvelopeKey, label};
use portcullis_tests::{
    ADMIN_SECRET, Cp, CpOptions, Dp, DpOptions, ENCRYPTION_SECRET, EchoUpstream, TestDb,
    eventually, keyless_api,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn assert_bad(answer: &(StatusCode, Value), field: &str, what: &str) {
    assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{what}: {}", answer.1);
    assert_eq!(answer.1["status"], "error", "{what}: {}", answer.1);
    assert_eq!(answer.1["field"], field, "{what}: {}", answer.1);
}

#[tokio::test]
async fn hardening_cp_out_of_range_api_numbers_are_400_naming_the_field() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let base = keyless_api("big", "/big/", "http://127.0.0.1:9/");
    let with = |path: &[&str], v: Value| {
        let mut api = base.clone();
        let mut at = &mut api;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at[path[path.len() - 1]] = v;
        api
    };
    // 1e20 seconds panicked every edge in Duration::from_secs_f64 (a crash loop for the group).
    for (api, field) in [
        (with(&["proxy", "timeout"], json!(1e20)), "proxy.timeout"),
        (with(&["proxy", "timeout"], json!(-1)), "proxy.timeout"),
        (
            with(&["session_lifetime"], json!(i64::MAX)),
            "session_lifetime",
        ),
        (
            with(&["basic_auth"], json!({"cache_ttl": i64::MAX})),
            "basic_auth.cache_ttl",
        ),
        (
            with(
                &["auth"],
                json!({"validate_signature": true, "signature": {"algorithm": "MasheryMD5", "header": "X-Sig", "secret": "s", "allowed_clock_skew": 1_000_000_000}}),
            ),
            "auth.signature.allowed_clock_skew",
        ),
    ] {
        let answer = cp.call(Method::POST, "/tyk/apis", Some(&api)).await;
        assert_bad(&answer, field, "POST /tyk/apis");
    }
    cp.create_api(&base).await;
    let answer = cp
        .call(
            Method::PUT,
            "/tyk/apis/big",
            Some(&with(&["proxy", "timeout"], json!(1e20))),
        )
        .await;
    assert_bad(&answer, "proxy.timeout", "PUT /tyk/apis/big");
    // The largest documented timeout is accepted.
    let (status, body) = cp
        .call(
            Method::PUT,
            "/tyk/apis/big",
            Some(&with(&["proxy", "timeout"], json!(3600))),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn hardening_cp_policy_numbers_out_of_range_are_400_not_500() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let policy = |extra: Value| {
        let mut p =
            json!({"id": "p1", "rate": 10, "per": 1, "access_rights": {"a": {"api_id": "a"}}});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };
    let cases = [
        (json!({"per": 3.3e16}), "per"),
        (json!({"per": 0.0001}), "per"),
        (json!({"rate": 1e300}), "rate"),
        (json!({"quota_max": i64::MAX}), "quota_max"),
        (
            json!({"quota_renewal_rate": i64::MAX}),
            "quota_renewal_rate",
        ),
        (
            json!({"access_rights": {"a": {"api_id": "a", "limit": {"rate": -5, "per": 1}}}}),
            "access_rights.a.limit.rate",
        ),
        (json!({"name": "nul \u{0} inside"}), "name"),
    ];
    for (extra, field) in &cases {
        let answer = cp
            .call(Method::POST, "/tyk/policies", Some(&policy(extra.clone())))
            .await;
        assert_bad(&answer, field, &format!("POST /tyk/policies {extra}"));
    }
    let (status, body) = cp
        .call(Method::POST, "/tyk/policies", Some(&policy(json!({}))))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (extra, field) in &cases {
        let answer = cp
            .call(
                Method::PUT,
                "/tyk/policies/p1",
                Some(&policy(extra.clone())),
            )
            .await;
        assert_bad(&answer, field, &format!("PUT /tyk/policies/p1 {extra}"));
    }
}

#[tokio::test]
async fn hardening_cp_key_lifetimes_that_overflowed_the_clock_are_400() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let rights = json!({"a": {"api_id": "a"}});
    // A session_lifetime of 2^62 seconds panicked the handler in chrono (keys.rs:112).
    for (session, field) in [
        (
            json!({"access_rights": rights, "session_lifetime": 1_i64 << 62}),
            "session_lifetime",
        ),
        (
            json!({"access_rights": rights, "expires": i64::MAX}),
            "expires",
        ),
        (
            json!({"access_rights": rights, "per": 3.3e16, "rate": 1}),
            "per",
        ),
        (
            json!({"access_rights": {"a": {"api_id": "a", "limit": {"rate": 1, "per": 1, "quota_max": -7}}}}),
            "access_rights.a.limit.quota_max",
        ),
    ] {
        for (method, path) in [
            (Method::POST, "/tyk/keys".to_owned()),
            (Method::POST, "/tyk/keys/named-key".to_owned()),
        ] {
            let answer = cp.call(method.clone(), &path, Some(&session)).await;
            assert_bad(&answer, field, &format!("{method} {path} {session}"));
        }
    }
    // The control plane is still up and answers normally.
    let (status, body) = cp
        .call(
            Method::POST,
            "/tyk/keys",
            Some(&json!({"access_rights": rights, "session_lifetime": 3600})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn write_routes(cp: &Cp, session: &Value) -> Vec<(String, StatusCode, Value)> {
    let mut answers = Vec::new();
    // A key to update, created with rights so that only the update is under test.
    let (status, made) = cp
        .call(
            Method::POST,
            "/tyk/keys/existing",
            Some(&json!({"access_rights": {"a": {"api_id": "a"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let hash = made["key_hash"].as_str().unwrap().to_owned();
    for (method, path) in [
        (Method::POST, "/tyk/keys".to_owned()),
        (Method::POST, "/tyk/keys/create".to_owned()),
        (
            Method::POST,
            format!("/tyk/keys/new-{}", uuid::Uuid::new_v4().simple()),
        ),
        (Method::PUT, "/tyk/keys/existing".to_owned()),
        (Method::PUT, format!("/tyk/keys/{hash}?hashed=true")),
    ] {
        let (status, body) = cp.call(method.clone(), &path, Some(session)).await;
        answers.push((format!("{method} {path}"), status, body));
    }
    answers
}

#[tokio::test]
async fn hardening_cp_keys_without_rights_are_refused_on_every_write_route() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    // A policy that only sets limits (a partition) grants no API; one that grants does.
    let (status, _) = cp
        .call(
            Method::POST,
            "/tyk/policies",
            Some(&json!({"id": "limits-only", "rate": 5, "per": 1, "partitions": {"rate_limit": true}, "access_rights": {"a": {"api_id": "a"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = cp
        .call(
            Method::POST,
            "/tyk/policies",
            Some(&json!({"id": "grants", "access_rights": {"a": {"api_id": "a"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for session in [
        json!({}),
        json!({"access_rights": {}}),
        json!({"access_rights": null, "rate": 10, "per": 1}),
        json!({"apply_policies": ["does-not-exist"]}),
        json!({"apply_policies": ["limits-only"]}),
        json!({"apply_policy_id": "limits-only"}),
    ] {
        for (route, status, body) in write_routes(&cp, &session).await {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{route} {session}: {body}");
            assert_eq!(body["field"], "access_rights", "{route}: {body}");
            let message = body["message"].as_str().unwrap();
            assert!(
                message.contains("keys must have at least one Access Rights record set")
                    && message.contains("--allow-master-keys"),
                "{route}: {message}"
            );
        }
    }
    // curl sees the same answer (status, Tyk's JSON error shape).
    let out = std::process::Command::new("curl")
        .args(["-sS", "-X", "POST", "-w", "\n%{http_code}", "-H"])
        .arg(format!("X-Tyk-Authorization: {ADMIN_SECRET}"))
        .args(["--data-binary", r#"{"access_rights":{}}"#])
        .arg(format!("http://{}/tyk/keys/curl-key", cp.api_addr))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(code, "400", "{text}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        (body["status"].as_str(), body["field"].as_str()),
        (Some("error"), Some("access_rights"))
    );
    for session in [
        json!({"apply_policies": ["grants"]}),
        json!({"apply_policies": ["limits-only", "grants"]}),
        json!({"access_rights": {"a": {"api_id": "a"}}}),
    ] {
        for (route, status, body) in write_routes(&cp, &session).await {
            assert_eq!(status, StatusCode::OK, "{route} {session}: {body}");
        }
    }
}

#[tokio::test]
async fn hardening_cp_allow_master_keys_accepts_keys_without_rights() {
    let db = TestDb::new().await;
    let cp = Cp::start_with(
        &db.url,
        CpOptions {
            allow_master_keys: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for (route, status, body) in write_routes(&cp, &json!({"access_rights": {}})).await {
        assert_eq!(status, StatusCode::OK, "{route}: {body}");
    }
    // The switch is a flag and an environment variable of the binary, off by default.
    use portcullis_control_plane::cli::Cli;
    let parse = |extra: &[&str]| {
        let mut args = vec!["portcullis-cp"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).unwrap().serve
    };
    assert!(!parse(&[]).allow_master_keys);
    assert!(parse(&["--allow-master-keys"]).allow_master_keys);
}

fn serve_args(admin: &str, encryption: &str, extra: &[&str]) -> Result<(), String> {
    use portcullis_control_plane::cli::Cli;
    let mut args = vec![
        "portcullis-cp",
        "--database-url",
        "postgres://postgres@127.0.0.1:5432/postgres",
        "--admin-secret",
        admin,
        "--encryption-secret",
        encryption,
    ];
    args.extend_from_slice(extra);
    let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
    cli.serve.to_config().map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test]
async fn hardening_cp_short_secrets_are_refused_at_start() {
    let long = "x".repeat(32);
    let other = "z".repeat(40);
    assert_eq!(serve_args(&long, &other, &[]), Ok(()));
    let e = serve_args("short-admin", &long, &[]).unwrap_err();
    assert!(
        e.contains("--admin-secret must be at least 32 bytes"),
        "{e}"
    );
    let e = serve_args(&long, &"y".repeat(31), &[]).unwrap_err();
    assert!(
        e.contains("--encryption-secret must be at least 32 bytes"),
        "{e}"
    );
    let e = serve_args(&long, &long, &[]).unwrap_err();
    assert!(
        e.contains("--admin-secret must differ from --encryption-secret"),
        "{e}"
    );
    let e = serve_args(&other, &long, &["--ca-secret", &long]).unwrap_err();
    assert!(
        e.contains("--ca-secret must differ from --encryption-secret"),
        "{e}"
    );
    let e = serve_args(&long, &other, &["--ca-secret", "tiny"]).unwrap_err();
    assert!(e.contains("--ca-secret must be at least 32 bytes"), "{e}");
    // Out-of-range numbers on the command line are refused too.
    let e = serve_args(
        &long,
        &other,
        &["--global-session-lifetime", "9223372036854775807"],
    )
    .unwrap_err();
    assert!(e.contains("--global-session-lifetime"), "{e}");
    let e = serve_args(&long, &other, &["--node-cert-ttl", "18446744073709551615"]).unwrap_err();
    assert!(e.contains("--node-cert-ttl"), "{e}");
    let e = serve_args(&long, &other, &["--max-db-connections", "0"]).unwrap_err();
    assert!(e.contains("--max-db-connections"), "{e}");

    // `start` itself refuses them, whatever built the configuration.
    let db = TestDb::new().await;
    let config = portcullis_control_plane::Config {
        admin_secret: "short".into(),
        ..portcullis_control_plane::cli::Cli::try_parse_from([
            "portcullis-cp",
            "--database-url",
            &db.url,
            "--admin-secret",
            ADMIN_SECRET,
            "--encryption-secret",
            ENCRYPTION_SECRET,
            "--api-listen",
            "127.0.0.1:0",
            "--sync-listen",
            "127.0.0.1:0",
        ])
        .unwrap()
        .serve
        .to_config()
        .unwrap()
    };
    let e = portcullis_control_plane::start(config).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("--admin-secret must be at least 32 bytes"),
        "{e}"
    );

    // The gateway refuses a short shared secret, and a timeout that overflowed Duration.
    let gw = |secret: &str, timeout: &str| {
        portcullis_data_plane::cli::Cli::try_parse_from([
            "portcullis-gw",
            "--control-plane",
            "https://127.0.0.1:7443",
            "--ca-hash",
            "sha256:00",
            "--encryption-secret",
            secret,
            "--upstream-timeout",
            timeout,
        ])
        .unwrap()
        .run
        .to_config()
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    assert_eq!(gw(&long, "30"), Ok(()));
    let e = gw("short-shared", "30").unwrap_err();
    assert!(
        e.contains("--encryption-secret must be at least 32 bytes"),
        "{e}"
    );
    let e = gw(&long, "1e20").unwrap_err();
    assert!(e.contains("--upstream-timeout"), "{e}");
}

/// A CA made the way earlier versions made it: key sealed under the shared encryption secret.
fn legacy_ca() -> (String, Vec<u8>, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "Portcullis node CA (legacy)");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    let sealed = EnvelopeKey::derive(ENCRYPTION_SECRET.as_bytes(), label::CA_KEY)
        .seal(&key.serialize_der(), b"portcullis node ca key");
    let hash = portcullis_proto::pin::spki_sha256(cert.der()).unwrap();
    (cert.pem(), sealed, hash)
}

#[tokio::test]
async fn hardening_cp_a_ca_sealed_under_the_shared_secret_is_resealed_at_start() {
    let db = TestDb::new().await;
    // The first start creates the schema; the CA row is then replaced by an old-style one.
    Cp::start(&db.url).await.stop();
    let (pem, legacy_sealed, legacy_hash) = legacy_ca();
    let pool = db.pool().await;
    sqlx::query("UPDATE node_ca SET certificate_pem = $1, key_sealed = $2")
        .bind(&pem)
        .bind(&legacy_sealed)
        .execute(&pool)
        .await
        .unwrap();

    let cp = Cp::start(&db.url).await;
    assert_eq!(cp.ca_hash, legacy_hash, "the stored CA is kept");
    let resealed: Vec<u8> = sqlx::query_scalar("SELECT key_sealed FROM node_ca")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_ne!(resealed, legacy_sealed, "re-sealed at start");
    assert!(
        EnvelopeKey::derive(ENCRYPTION_SECRET.as_bytes(), label::CA_KEY)
            .open(&resealed, b"portcullis node ca key")
            .is_err(),
        "the secret every edge holds no longer opens the CA key"
    );
    // The CA still works: an edge pinned to it joins and serves.
    let echo = EchoUpstream::start().await;
    let dp = Dp::joined(&cp).await;
    cp.create_api(&keyless_api("open", "/open/", &echo.url()))
        .await;
    dp.wait_for_status("/open/", 200).await;
    cp.stop();

    // Rotating to a CA secret of its own: the previous (admin) secret opens it once.
    let ca_secret = "a-ca-secret-that-edges-never-hold-0123".to_owned();
    let rotated = Cp::start_with(
        &db.url,
        CpOptions {
            ca_secret: Some(ca_secret.clone()),
            previous_ca_secret: Some(ADMIN_SECRET.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(rotated.ca_hash, legacy_hash);
    rotated.stop();
    let again = Cp::start_with(
        &db.url,
        CpOptions {
            ca_secret: Some(ca_secret),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(again.ca_hash, legacy_hash);
    again.stop();
    let e = Cp::start_with(
        &db.url,
        CpOptions {
            ca_secret: Some("a-different-ca-secret-0123456789abcdef".into()),
            ..Default::default()
        },
    )
    .await
    .err()
    .expect("a CA secret that opens nothing is refused");
    assert!(e.contains("--ca-secret"), "{e}");
}

#[tokio::test]
async fn hardening_cp_hello_never_shows_database_errors() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let (status, hello) = cp.call_raw(Method::GET, "/hello", None, None).await;
    assert_eq!(
        (status, hello["status"].as_str()),
        (StatusCode::OK, Some("pass"))
    );
    // The database goes away under the running control plane.
    let name = url::Url::parse(&db.url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned();
    let admin = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    let hello = eventually(Duration::from_secs(20), "/hello fails", || async {
        let (_, hello) = cp.call_raw(Method::GET, "/hello", None, None).await;
        (hello["status"] == "fail").then_some(hello)
    })
    .await;
    let text = hello.to_string();
    assert_eq!(hello["details"]["postgres"]["status"], "fail", "{text}");
    for leak in [
        name.as_str(),
        "database",
        "error returned",
        "does not exist",
        "connection",
    ] {
        assert!(
            !text.to_ascii_lowercase().contains(leak),
            "{leak:?} in /hello: {text}"
        );
    }
}

#[tokio::test]
async fn hardening_cp_bootstrap_tokens_join_one_node_unless_told_more() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let (status, created) = cp
        .call(
            Method::POST,
            "/portcullis/bootstrap-tokens",
            Some(&json!({"group": "default"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(created["max_uses"], 1, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    let opts = || DpOptions {
        token: Some(token.clone()),
        ..Default::default()
    };
    let first = Dp::start(&cp, opts()).await.unwrap();
    eventually(Duration::from_secs(10), "first node joins", || async {
        let (status, list) = cp
            .call(Method::GET, "/portcullis/bootstrap-tokens", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{list}");
        (list["tokens"][0]["uses"] == 1).then_some(())
    })
    .await;
    let second = Dp::start(&cp, opts()).await.unwrap();
    let error = eventually(Duration::from_secs(10), "second join refused", || async {
        second.last_error()
    })
    .await;
    assert!(
        error.contains("bootstrap token has no uses left"),
        "{error}"
    );
    drop(first);

    let (_, list) = cp
        .call(Method::GET, "/portcullis/bootstrap-tokens", None)
        .await;
    assert_eq!(list["tokens"][0]["max_uses"], 1);
    let many = cp.token_for("default", 2).await;
    let (_, list) = cp
        .call(Method::GET, "/portcullis/bootstrap-tokens", None)
        .await;
    let id = many.split_once('.').unwrap().0;
    let listed = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap();
    assert_eq!(listed["max_uses"], 2);
}

#[tokio::test]
async fn hardening_cp_management_api_defaults_to_loopback_and_serves_https() {
    use portcullis_control_plane::cli::Cli;
    let default = Cli::try_parse_from(["portcullis-cp"])
        .unwrap()
        .serve
        .api_listen;
    assert_eq!(default.to_string(), "127.0.0.1:7080");

    let dir = std::env::temp_dir().join(format!("portcullis-https-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.join("api.crt"), dir.join("api.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let db = TestDb::new().await;
    let cp = Cp::start_with(
        &db.url,
        CpOptions {
            api_tls: Some(portcullis_control_plane::config::ApiTls {
                cert: cert_path.clone(),
                key: key_path,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let base = format!("https://localhost:{}", cp.api_addr.port());
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap())
        .resolve("localhost", cp.api_addr)
        .build()
        .unwrap();
    let hello: Value = client
        .get(format!("{base}/hello"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hello["status"], "pass");
    let resp = client
        .post(format!("{base}/tyk/apis"))
        .header("X-Tyk-Authorization", ADMIN_SECRET)
        .json(&keyless_api("tls", "/tls/", "http://127.0.0.1:9/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // curl (OpenSSL or GnuTLS, not rustls) verifies the same certificate.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(&cert_path)
        .args([
            "--resolve",
            &format!("localhost:{}:127.0.0.1", cp.api_addr.port()),
        ])
        .args(["-H", &format!("X-Tyk-Authorization: {ADMIN_SECRET}")])
        .arg(format!("{base}/tyk/apis/tls"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let api: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(api["api_id"], "tls");
    // The binary's client commands trust the same certificate with --api-ca-cert.
    let command = Cli::try_parse_from([
        "portcullis-cp",
        "token",
        "create",
        "--api-url",
        &base,
        "--admin-secret",
        ADMIN_SECRET,
        "--api-ca-cert",
        cert_path.to_str().unwrap(),
    ])
    .unwrap()
    .command
    .unwrap();
    let printed = portcullis_control_plane::cli::run_client(command)
        .await
        .unwrap();
    assert!(printed.contains("--bootstrap-token"), "{printed}");
    // Plain HTTP on the HTTPS port gets no answer from the API.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/hello", cp.api_addr))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP must not be served"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn hardening_cp_basic_auth_passwords_over_72_bytes_are_refused() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let user = |pw: String| json!({"access_rights": {"a": {"api_id": "a"}}, "basic_auth_data": {"password": pw}});
    // bcrypt ignores everything after byte 72: this password would equal its first 72 bytes.
    let answer = cp
        .call(
            Method::POST,
            "/tyk/keys/long-pw",
            Some(&user("p".repeat(73))),
        )
        .await;
    assert_bad(&answer, "basic_auth_data.password", "73-byte password");
    assert!(
        answer.1["message"].as_str().unwrap().contains("72 bytes"),
        "{}",
        answer.1
    );
    let (status, body) = cp
        .call(
            Method::POST,
            "/tyk/keys/long-pw",
            Some(&user("p".repeat(72))),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer = cp
        .call(
            Method::PUT,
            "/tyk/keys/long-pw",
            Some(&user("é".repeat(37))),
        )
        .await;
    assert_bad(
        &answer,
        "basic_auth_data.password",
        "74 bytes in 37 characters",
    );
}

#[tokio::test]
async fn hardening_cp_nul_bytes_are_refused_before_postgres_sees_them() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    // Postgres stores no U+0000: these were 500s.
    for (method, path) in [
        (Method::GET, "/tyk/apis/a%00b"),
        (Method::DELETE, "/tyk/apis/%00"),
        (Method::GET, "/tyk/policies/%00"),
        (Method::DELETE, "/tyk/policies/x%00"),
        (Method::DELETE, "/portcullis/bootstrap-tokens/%00"),
        (Method::GET, "/portcullis/nodes/%1F"),
    ] {
        let (status, body) = cp.call(method.clone(), path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
    }
    let mut api = keyless_api("nul", "/nul/", "http://127.0.0.1:9/");
    api["name"] = json!("a\u{0}b");
    let answer = cp.call(Method::POST, "/tyk/apis", Some(&api)).await;
    assert_bad(&answer, "name", "NUL in an API name");
    let answer = cp
        .call(
            Method::POST,
            "/tyk/keys",
            Some(&json!({"access_rights": {"a": {"api_id": "a"}}, "meta_data": {"k": ["x\u{0}"]}})),
        )
        .await;
    assert_bad(&answer, "meta_data.k[0]", "NUL in key meta data");
    let answer = cp
        .call(
            Method::POST,
            "/portcullis/bootstrap-tokens",
            Some(&json!({"description": "a\u{0}b"})),
        )
        .await;
    assert_bad(&answer, "description", "NUL in a token description");
}

#[tokio::test]
async fn hardening_cp_numbers_postgres_cannot_read_back_are_refused() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    // Stored, such a number made the resource unreadable (500 on every GET) and stalled the
    // change log for every edge.
    let huge = json!([1.797_693_134_862_315_5e308]);
    let mut api = keyless_api("big", "/big/", "http://127.0.0.1:9/");
    api["x"] = huge.clone();
    let answer = cp.call(Method::POST, "/tyk/apis", Some(&api)).await;
    assert_bad(&answer, "x[0]", "huge number in an API");
    let answer = cp
        .call(
            Method::POST,
            "/tyk/policies",
            Some(&json!({"id": "p", "x": huge})),
        )
        .await;
    assert_bad(&answer, "x[0]", "huge number in a policy");
    let answer = cp
        .call(
            Method::POST,
            "/tyk/keys/mykey123",
            Some(&json!({"access_rights": {"a": {"api_id": "a"}}, "meta_data": {"n": huge}})),
        )
        .await;
    assert_bad(&answer, "meta_data.n[0]", "huge number in a key");
    for path in ["/tyk/apis", "/tyk/policies", "/tyk/keys"] {
        let (status, body) = cp.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    // A query string that does not parse is a 400 in Tyk's JSON shape, not plain text.
    let (status, body) = cp
        .call(Method::GET, "/tyk/keys/k?hashed=1&hashed=2", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["field"].as_str()),
        (Some("error"), Some("query")),
        "{body}"
    );
}

#[tokio::test]
async fn hardening_cp_an_edge_refuses_a_definition_an_older_control_plane_let_through() {
    use portcullis_control_plane::store::Store;
    use portcullis_control_plane::store::changelog::{ChangeKind, NewChange, commit_change};
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let dp = Dp::joined(&cp).await;
    cp.create_api(&keyless_api("ok", "/ok/", &echo.url())).await;
    dp.wait_for_status("/ok/", 200).await;

    // What an earlier control plane stored and streamed: a timeout that panicked Duration.
    let mut bomb = keyless_api("bomb", "/bomb/", &echo.url());
    bomb["proxy"]["timeout"] = json!(1e20);
    let store = Store::connect(&db.url, 2).await.unwrap();
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query(
        "INSERT INTO apis (api_id, domain, listen_path, tags, definition, revision)
         VALUES ('bomb', '', '/bomb/', '{}', $1, 0)",
    )
    .bind(&bomb)
    .execute(&mut *tx)
    .await
    .unwrap();
    commit_change(
        &mut tx,
        NewChange {
            kind: ChangeKind::Api,
            resource_id: "bomb",
            body: Some(&bomb),
            tags: Some(&[]),
            prev_tags: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    eventually(Duration::from_secs(10), "the edge NACKs it", || async {
        (dp.shared
            .stats
            .nacks
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0)
        .then_some(())
    })
    .await;
    // The control plane's registry shows why, naming the field.
    let nack = eventually(Duration::from_secs(10), "the NACK is recorded", || async {
        let (status, nodes) = cp.call(Method::GET, "/portcullis/nodes", None).await;
        if status != StatusCode::OK {
            return None;
        }
        nodes["nodes"][0]["last_nack"]["error"]
            .as_str()
            .filter(|n| n.contains("proxy.timeout"))
            .map(str::to_owned)
    })
    .await;
    assert!(nack.contains("bomb"), "{nack}");
    // The edge is alive and serves what it had; the bad API is not served.
    assert_eq!(dp.get("/ok/").await.0, StatusCode::OK);
    assert_ne!(dp.get("/bomb/").await.0, StatusCode::OK);
}
