//! HMAC and RSA request signatures (docs/hmac.md): requests signed by Python's `httpsig`, an
//! implementation independent of the gateway's, for every algorithm; the clock window at its
//! boundary, tampering, replay, algorithms refused; and HMAC secrets sealed in Postgres.

use std::time::Duration;

use portcullis_tests::signatures::{http_date, httpsig_authorization};
use portcullis_tests::{ADMIN_SECRET, Cp, Dp, EchoUpstream, TestDb, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const INVALID: &str = "Authorization field missing, malformed or invalid";

fn api(id: &str, target: &str, extra: Value) -> Value {
    let mut def = json!({
        "api_id": id, "name": id,
        "enable_signature_checking": true,
        "hmac_allowed_clock_skew": 5000,
        "proxy": {"listen_path": format!("/{id}/"), "target_url": target, "strip_listen_path": true},
    });
    for (k, v) in extra.as_object().unwrap() {
        def[k] = v.clone();
    }
    def
}

async fn get(dp: &Dp, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().get(dp.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A signed GET of `path` at `date`, signing `(request-target)`, `date` and `x-test`.
fn signed(key: &str, secret: &str, alg: &str, path: &str, date: &str) -> String {
    httpsig_authorization(
        key,
        secret,
        alg,
        "GET",
        path,
        &[("Date", date), ("X-Test", "hello")],
        &["(request-target)", "date", "x-test"],
    )
}

fn rsa_pair(dir: &std::path::Path) -> (String, String) {
    portcullis_tests::signatures::rsa_self_signed(dir, "signer")
}

#[tokio::test]
async fn signatures_from_httpsig_authenticate_and_every_defect_is_refused() {
    // The signer runs in the test virtualenv: made first, so that building it cannot age a Date.
    tokio::task::spawn_blocking(portcullis_tests::pyjwt::python)
        .await
        .unwrap();
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let upstream = EchoUpstream::start().await;
    cp.create_api(&api("sig", &upstream.url(), json!({}))).await;
    cp.create_api(&api(
        "only256",
        &upstream.url(),
        json!({"hmac_allowed_algorithms": ["hmac-sha256"]}),
    ))
    .await;
    let rights = json!({"sig": {"api_id": "sig"}, "only256": {"api_id": "only256"}});

    // A caller-chosen secret is kept; /tyk/keys/create generates one and shows it once.
    let chosen = "caller-chosen-hmac-secret-4242";
    let (status, body) = cp
        .call(
            Method::POST,
            "/tyk/keys/signer",
            Some(&json!({"hmac_enabled": true, "hmac_string": chosen, "access_rights": rights})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["hmac_string"], chosen);
    let (status, body) = cp
        .call(
            Method::POST,
            "/tyk/keys/create",
            Some(&json!({"hmac_enabled": true, "access_rights": rights})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let generated_key = body["key"].as_str().unwrap().to_owned();
    let generated = body["hmac_string"].as_str().unwrap().to_owned();
    assert_eq!(generated.len(), 64, "{body}");
    // GET shows the sealed value, never the secret.
    let (_, got) = cp.call(Method::GET, "/tyk/keys/signer", None).await;
    let sealed = got["hmac_string"].as_str().unwrap();
    assert!(
        sealed.starts_with("sealed:v1:") && !sealed.contains(chosen),
        "{got}"
    );
    // A key with a secret but without hmac_enabled is no signing key.
    let (status, _) = cp
        .call(
            Method::POST,
            "/tyk/keys/not-hmac",
            Some(&json!({"hmac_string": "a-secret-that-is-not-enabled", "access_rights": rights})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // RSA: a certificate in the store verifies rsa-sha256.
    let dir = std::env::temp_dir().join(format!("portcullis-hmac-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (private_pem, cert_pem) = rsa_pair(&dir);
    let resp = reqwest::Client::new()
        // Only a key names it, so it reaches edges as a gateway-wide certificate does.
        .post(format!("http://{}/tyk/certs?tags=*", cp.api_addr))
        .header("X-Tyk-Authorization", ADMIN_SECRET)
        .header("content-type", "application/x-pem-file")
        .body(cert_pem)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cert_id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = cp
        .call(
            Method::POST,
            "/tyk/keys/rsa-signer",
            Some(&json!({"enable_http_signature_validation": true,
                "rsa_certificate_id": cert_id, "access_rights": rights})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let dp = Dp::joined(&cp).await;
    // Each section signs with a fresh Date: the 5 s window must not depend on how fast the
    // machine runs the sections before it.
    eventually(
        Duration::from_secs(15),
        "the edge has the certificate",
        || {
            let (dp, private_pem) = (&dp, &private_pem);
            async move {
                let now = http_date(0);
                let first = signed("rsa-signer", private_pem, "rsa-sha256", "/sig/x", &now);
                let (s, b) = get(
                    dp,
                    "/sig/x",
                    &[
                        ("Authorization", &first),
                        ("Date", &now),
                        ("X-Test", "hello"),
                    ],
                )
                .await;
                assert_ne!(s, StatusCode::BAD_REQUEST, "{b}");
                (s == StatusCode::OK).then_some(())
            }
        },
    )
    .await;

    // Every HMAC algorithm, through the Authorization header and the Signature header.
    for alg in ["hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512"] {
        let now = http_date(0);
        let auth = signed("signer", chosen, alg, "/sig/x", &now);
        let (status, body) = get(
            &dp,
            "/sig/x",
            &[
                ("Authorization", &auth),
                ("Date", &now),
                ("X-Test", "hello"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{alg}: {body}");
        let params = auth.strip_prefix("Signature ").unwrap();
        let (status, body) = get(
            &dp,
            "/sig/x",
            &[("Signature", params), ("Date", &now), ("X-Test", "hello")],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{alg} in Signature: {body}");
    }
    let now = http_date(0);
    let auth = signed(&generated_key, &generated, "hmac-sha256", "/sig/x", &now);
    let ok = [
        ("Authorization", auth.as_str()),
        ("Date", now.as_str()),
        ("X-Test", "hello"),
    ];
    assert_eq!(get(&dp, "/sig/x", &ok).await.0, StatusCode::OK);

    let refused = |what: &'static str| {
        move |(status, body): (StatusCode, Value)| {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
            assert_eq!(body["error"], INVALID, "{what}");
        }
    };
    // Tampered header, path and secret.
    refused("tampered header")(
        get(
            &dp,
            "/sig/x",
            &[
                ("Authorization", &auth),
                ("Date", &now),
                ("X-Test", "hellO"),
            ],
        )
        .await,
    );
    refused("other path")(
        get(
            &dp,
            "/sig/y",
            &[
                ("Authorization", &auth),
                ("Date", &now),
                ("X-Test", "hello"),
            ],
        )
        .await,
    );
    let wrong = signed(
        "signer",
        "not-the-secret-at-all",
        "hmac-sha256",
        "/sig/x",
        &now,
    );
    refused("wrong secret")(
        get(
            &dp,
            "/sig/x",
            &[
                ("Authorization", &wrong),
                ("Date", &now),
                ("X-Test", "hello"),
            ],
        )
        .await,
    );
    // Clock window of 5 s: 2 s away passes, 30 s away (a replayed old request) does not.
    for (offset, pass) in [(-2, true), (2, true), (-30, false), (30, false)] {
        let date = http_date(offset);
        let a = signed("signer", chosen, "hmac-sha256", "/sig/x", &date);
        let (status, body) = get(
            &dp,
            "/sig/x",
            &[("Authorization", &a), ("Date", &date), ("X-Test", "hello")],
        )
        .await;
        let want = if pass {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(status, want, "offset {offset}: {body}");
    }
    let now = http_date(0);
    // Unknown algorithm (Tyk would fall back to SHA-1: hmac-sha1's MAC under another name).
    let sha1 =
        signed("signer", chosen, "hmac-sha1", "/sig/x", &now).replace("hmac-sha1", "hmac-md5");
    refused("unknown algorithm")(
        get(
            &dp,
            "/sig/x",
            &[
                ("Authorization", &sha1),
                ("Date", &now),
                ("X-Test", "hello"),
            ],
        )
        .await,
    );
    // Not in the API's allowed list.
    let a1 = signed("signer", chosen, "hmac-sha1", "/only256/x", &now);
    refused("not allowed")(
        get(
            &dp,
            "/only256/x",
            &[("Authorization", &a1), ("Date", &now), ("X-Test", "hello")],
        )
        .await,
    );
    let a256 = signed("signer", chosen, "hmac-sha256", "/only256/x", &now);
    assert_eq!(
        get(
            &dp,
            "/only256/x",
            &[
                ("Authorization", &a256),
                ("Date", &now),
                ("X-Test", "hello")
            ]
        )
        .await
        .0,
        StatusCode::OK
    );
    let now = http_date(0);
    // A key without hmac_enabled, an unknown key, a malformed header, no header.
    let plain = signed(
        "not-hmac",
        "a-secret-that-is-not-enabled",
        "hmac-sha256",
        "/sig/x",
        &now,
    );
    refused("hmac not enabled")(
        get(
            &dp,
            "/sig/x",
            &[
                ("Authorization", &plain),
                ("Date", &now),
                ("X-Test", "hello"),
            ],
        )
        .await,
    );
    let unknown = signed("nobody", chosen, "hmac-sha256", "/sig/x", &now);
    refused("unknown key")(
        get(
            &dp,
            "/sig/x",
            &[
                ("Authorization", &unknown),
                ("Date", &now),
                ("X-Test", "hello"),
            ],
        )
        .await,
    );
    refused("malformed")(
        get(
            &dp,
            "/sig/x",
            &[
                ("Authorization", "Signature keyId=\"signer\",oops"),
                ("Date", &now),
            ],
        )
        .await,
    );
    refused("no credential")(get(&dp, "/sig/x", &[("Date", &now)]).await);
    // An RSA signature by another key.
    let (other_pem, _) = rsa_pair(
        &dir.join("..")
            .join(format!("portcullis-hmac-other-{}", std::process::id()))
            .tap_mkdir(),
    );
    let forged = signed("rsa-signer", &other_pem, "rsa-sha256", "/sig/x", &now);
    refused("other RSA key")(
        get(
            &dp,
            "/sig/x",
            &[
                ("Authorization", &forged),
                ("Date", &now),
                ("X-Test", "hello"),
            ],
        )
        .await,
    );

    // No HMAC secret in plaintext in any table (keys, change log, ...).
    for place in crate::secrets_at_rest::postgres_places(&db).await {
        for secret in [chosen, generated.as_str()] {
            assert!(
                !place
                    .bytes
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes()),
                "{} holds an HMAC secret in plaintext",
                place.name
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}
