//! Secrets the edge checks or recovers: basic-auth passwords longer than bcrypt reads, and the
//! Mashery signature secret of an API definition, sealed before it reaches any table.

use std::time::Duration;

use portcullis_tests::{Cp, Dp, EchoUpstream, TestDb, eventually, keyless_api};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn protected_api(id: &str, target: &str) -> Value {
    let mut api = keyless_api(id, &format!("/{id}/"), target);
    api["use_keyless"] = json!(false);
    api
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Status code curl (an independent client) gets for `url` with basic auth `user:password`.
/// It blocks its thread: the tests run on a multi-thread runtime so the echo upstream, spawned
/// on the same runtime, keeps answering meanwhile.
fn curl_basic(url: &str, user: &str, password: &str) -> u16 {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-u"])
        .arg(format!("{user}:{password}"))
        .arg(url)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_longer_than_bcrypt_reads_is_refused_even_with_the_right_first_72_bytes() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let dp = Dp::regional(&cp, "eu").await;
    let mut api = protected_api("vault", &echo.url());
    api["name"] = json!("Vault");
    api["use_basic_auth"] = json!(true);
    cp.create_api(&api).await;

    let password: String = "correct-horse-battery-staple-"
        .repeat(3)
        .chars()
        .take(72)
        .collect();
    assert_eq!(password.len(), 72);
    let user = format!("long-{}", uuid::Uuid::new_v4().simple());
    let (status, body) = cp
        .call(
            Method::POST,
            &format!("/tyk/keys/{user}"),
            Some(&json!({"access_rights": {"vault": {"api_id": "vault"}}, "basic_auth_data": {"password": password}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let url = dp.url("/vault/x");
    eventually(Duration::from_secs(30), "72-byte password accepted", || {
        let (url, user, password) = (url.clone(), user.clone(), password.clone());
        async move { (curl_basic(&url, &user, &password) == 200).then_some(()) }
    })
    .await;

    // bcrypt would have compared only the first 72 bytes and let these in.
    for extra in ["x", "-anything-at-all", "\u{e9}"] {
        let longer = format!("{password}{extra}");
        assert_eq!(
            curl_basic(&url, &user, &longer),
            401,
            "curl, suffix {extra:?}"
        );
        let resp = reqwest::Client::new()
            .get(&url)
            .header("Authorization", basic(&user, &longer))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Basic realm=\"Vault\"")
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], json!("User not authorised"));
    }
    // The refusal is not a lockout: the right password still works.
    assert_eq!(curl_basic(&url, &user, &password), 200);
}

/// `hex(sha256(key + secret + t))` computed by Python's hashlib, not by our code.
fn python_mashery_sha256(key: &str, secret: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import hashlib, sys, time; \
             print(hashlib.sha256((sys.argv[1] + sys.argv[2] + str(int(time.time()))).encode()).hexdigest())",
        ])
        .arg(key)
        .arg(secret)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn rows_as_text(db: &TestDb) -> Vec<String> {
    let pool = db.pool().await;
    let mut rows: Vec<(String,)> = sqlx::query_as("SELECT definition::text FROM apis")
        .fetch_all(&pool)
        .await
        .unwrap();
    rows.extend(
        sqlx::query_as::<_, (String,)>(
            "SELECT coalesce(body::text, '') FROM change_log WHERE kind = 'api'",
        )
        .fetch_all(&pool)
        .await
        .unwrap(),
    );
    pool.close().await;
    rows.into_iter().map(|(r,)| r).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mashery_signature_secret_is_sealed_at_rest_and_opened_only_by_the_edge() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let dp = Dp::regional(&cp, "eu").await;
    let secret = format!("mashery-{}", uuid::Uuid::new_v4().simple());
    let mut api = protected_api("signed", &echo.url());
    api["auth"] = json!({"validate_signature": true, "signature": {
        "algorithm": "MasherySHA256", "header": "X-Signature", "secret": secret,
        "allowed_clock_skew": 2,
    }});
    cp.create_api(&api).await;

    let (status, stored) = cp.call(Method::GET, "/tyk/apis/signed", None).await;
    assert_eq!(status, StatusCode::OK);
    let sealed = stored["auth"]["signature"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(sealed.starts_with("sealed:v1:"), "{sealed}");
    assert!(
        !stored.to_string().contains(&secret),
        "GET returns the plaintext"
    );
    let (_, all) = cp.call(Method::GET, "/tyk/apis", None).await;
    assert!(
        !all.to_string().contains(&secret),
        "list returns the plaintext"
    );
    let rows = rows_as_text(&db).await;
    assert!(rows.len() >= 2, "apis row and change-log row: {rows:?}");
    assert!(rows.iter().all(|r| !r.contains(&secret)), "{rows:?}");

    let key = {
        let (status, body) = cp
            .call(
                Method::POST,
                "/tyk/keys",
                Some(&json!({"access_rights": {"signed": {"api_id": "signed"}}})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["key"].as_str().unwrap().to_owned()
    };
    let call = |signature: String| {
        let (dp, key) = (&dp, key.clone());
        async move {
            reqwest::Client::new()
                .get(dp.url("/signed/"))
                .header("Authorization", key)
                .header("X-Signature", signature)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    eventually(Duration::from_secs(10), "signed request accepted", || {
        let sig = python_mashery_sha256(&key, &secret);
        let call = &call;
        async move { (call(sig).await == StatusCode::OK).then_some(()) }
    })
    .await;
    assert_eq!(
        call(python_mashery_sha256(&key, "not-the-secret")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(python_mashery_sha256(&key, &sealed)).await,
        StatusCode::UNAUTHORIZED,
        "the sealed string is not the secret"
    );

    // A PUT that sends back what GET returned keeps the sealed value as it is.
    let before = dp.revision();
    let mut edited = stored.clone();
    edited["name"] = json!("renamed");
    let (status, body) = cp
        .call(Method::PUT, "/tyk/apis/signed", Some(&edited))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, after) = cp.call(Method::GET, "/tyk/apis/signed", None).await;
    assert_eq!(after["name"], json!("renamed"));
    assert_eq!(after["auth"]["signature"]["secret"], json!(sealed));
    eventually(Duration::from_secs(10), "the edge applies the PUT", || {
        let dp = &dp;
        async move { (dp.revision() > before).then_some(()) }
    })
    .await;
    assert_eq!(
        call(python_mashery_sha256(&key, &secret)).await,
        StatusCode::OK,
        "still opened after the PUT"
    );

    // A sealed value copied to another API does not open there: refused, naming the field.
    let mut copy = stored.clone();
    copy["api_id"] = json!("copied");
    copy["proxy"]["listen_path"] = json!("/copied/");
    let (status, body) = cp.call(Method::POST, "/tyk/apis", Some(&copy)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("auth.signature.secret"), "{body}");
    assert!(
        rows_as_text(&db).await.iter().all(|r| !r.contains(&secret)),
        "after the PUT"
    );
}
