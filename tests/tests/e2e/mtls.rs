//! Client mutual TLS at the edge, static (`use_mutual_tls_auth`) and dynamic
//! (`auth.use_certificate`), driven by OpenSSL's tools: the PKI is made with the `openssl` CLI
//! and the clients are `curl` and `openssl s_client`, so nothing here shares code with the
//! gateway's rustls stack.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use portcullis_tests::{ADMIN_SECRET, Cp, Dp, TestDb, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Pki {
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl on PATH");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A server certificate for `*.mtls.test` and `mtls.test`, a client CA with one client, and
    /// a self-signed client nobody allow-lists.
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("portcullis-mtls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.as_path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=mtls.test",
                "-addext",
                "subjectAltName=DNS:mtls.test,DNS:*.mtls.test",
                "-keyout",
                "server.key",
                "-out",
                "server.crt",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=Portcullis Test Client CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                "/CN=client-one",
                "-keyout",
                "client.key",
                "-out",
                "client.csr",
            ],
        );
        std::fs::write(
            d.join("client.ext"),
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "client.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "client.ext",
                "-out",
                "client.crt",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=stranger",
                "-addext",
                "extendedKeyUsage=clientAuth",
                "-keyout",
                "stranger.key",
                "-out",
                "stranger.crt",
            ],
        );
        Self { dir }
    }

    /// An expired client certificate (`expired.crt`/`expired.key`), made with rcgen because
    /// OpenSSL 3.0's tools cannot backdate one.
    fn add_expired_client(&self) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["expired-client".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 2);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(self.dir.join("expired.crt"), cert.pem()).unwrap();
        std::fs::write(self.dir.join("expired.key"), key.serialize_pem()).unwrap();
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap()
    }

    /// sha256 of a certificate's DER as OpenSSL prints it, lower-case without colons.
    fn fingerprint(&self, name: &str) -> String {
        let out = Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-fingerprint",
                "-sha256",
                "-in",
                &self.path(name),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        text.trim()
            .rsplit('=')
            .next()
            .unwrap()
            .replace(':', "")
            .to_ascii_lowercase()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn upload(cp: &Cp, pem: String) -> String {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/tyk/certs", cp.api_addr))
        .header("X-Tyk-Authorization", ADMIN_SECRET)
        .body(pem)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

struct Curl {
    code: String,
    body: String,
    exit: i32,
}

/// `curl` to the edge's TLS port as `host`, with an optional client certificate.
fn curl(
    dp: &Dp,
    pki: &Pki,
    host: &str,
    path: &str,
    client: Option<&str>,
    headers: &[&str],
) -> Curl {
    let port = dp.tls_addr.port();
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code}",
        "--cacert",
        &pki.path("server.crt"),
    ])
    .arg("--resolve")
    .arg(format!("{host}:{port}:127.0.0.1"));
    if let Some(name) = client {
        cmd.args([
            "--cert",
            &pki.path(&format!("{name}.crt")),
            "--key",
            &pki.path(&format!("{name}.key")),
        ]);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Curl {
        code: code.to_owned(),
        body: body.to_owned(),
        exit: out.status.code().unwrap_or(-1),
    }
}

/// `openssl s_client` without a client certificate: what the server asked for, and whether
/// an HTTP request got an answer.
fn s_client(dp: &Dp, pki: &Pki, host: &str, path: &str) -> Output {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &dp.tls_addr.to_string(),
            "-servername",
            host,
            "-CAfile",
            &pki.path("server.crt"),
            "-ign_eof",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    let _ = write!(
        stdin,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn keyless(id: &str, domain: &str, target: &str, server_cert: &str) -> Value {
    json!({
        "api_id": id, "name": id, "use_keyless": true, "domain": domain,
        "certificates": [server_cert],
        "proxy": {"listen_path": format!("/{id}/"), "target_url": target, "strip_listen_path": true},
    })
}

async fn served(dp: &Dp, pki: &Pki, host: &str, path: &str, client: Option<&str>, code: &str) {
    eventually(
        Duration::from_secs(15),
        &format!("{host}{path} answers {code}"),
        || {
            let got = curl(dp, pki, host, path, client, &[]);
            async move { (got.code == code).then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn static_mtls_on_a_dedicated_host_is_decided_in_the_handshake() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let pki = Pki::new();
    let echo = portcullis_tests::EchoUpstream::start().await;
    let server = upload(&cp, pki.read("server.crt") + &pki.read("server.key")).await;
    let ca = upload(&cp, pki.read("ca.crt")).await;
    let mut api = keyless("only", "only.mtls.test", &echo.url(), &server);
    api["use_mutual_tls_auth"] = json!(true);
    api["client_certificates"] = json!([ca]);
    cp.create_api(&api).await;
    let dp = Dp::joined(&cp).await;
    served(
        &dp,
        &pki,
        "only.mtls.test",
        "/only/x",
        Some("client"),
        "200",
    )
    .await;

    // The CertificateRequest names the allow-listed CA, and no certificate means no session.
    let out = s_client(&dp, &pki, "only.mtls.test", "/only/x");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("Acceptable client certificate CA names"),
        "{text}"
    );
    assert!(text.contains("CN = Portcullis Test Client CA"), "{text}");
    assert!(
        !text.contains("HTTP/1.1 200"),
        "served without a client certificate: {text}"
    );
    let none = curl(&dp, &pki, "only.mtls.test", "/only/x", None, &[]);
    assert_ne!(none.code, "200", "{}", none.body);
    assert_ne!(none.exit, 0, "the handshake (or the first read) fails");
    let stranger = curl(
        &dp,
        &pki,
        "only.mtls.test",
        "/only/x",
        Some("stranger"),
        &[],
    );
    assert_ne!(stranger.code, "200");
    assert_ne!(
        stranger.exit, 0,
        "a certificate from another CA fails the handshake"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn static_mtls_on_a_shared_host_answers_tyk_403s_over_http() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let pki = Pki::new();
    let echo = portcullis_tests::EchoUpstream::start().await;
    let server = upload(&cp, pki.read("server.crt") + &pki.read("server.key")).await;
    let client = upload(&cp, pki.read("client.crt")).await;
    let mut guarded = keyless("guarded", "shared.mtls.test", &echo.url(), &server);
    guarded["use_mutual_tls_auth"] = json!(true);
    guarded["client_certificates"] = json!([client]);
    cp.create_api(&guarded).await;
    cp.create_api(&keyless("open", "shared.mtls.test", &echo.url(), &server))
        .await;
    let dp = Dp::joined(&cp).await;
    served(&dp, &pki, "shared.mtls.test", "/open/x", None, "200").await;

    let none = curl(&dp, &pki, "shared.mtls.test", "/guarded/x", None, &[]);
    assert_eq!(none.code, "403", "{}", none.body);
    assert_eq!(
        serde_json::from_str::<Value>(&none.body).unwrap()["error"],
        "Client TLS certificate is required"
    );
    let stranger = curl(
        &dp,
        &pki,
        "shared.mtls.test",
        "/guarded/x",
        Some("stranger"),
        &[],
    );
    assert_eq!(stranger.code, "403", "{}", stranger.body);
    assert_eq!(
        serde_json::from_str::<Value>(&stranger.body).unwrap()["error"],
        format!(
            "Certificate with SHA256 {} not allowed",
            pki.fingerprint("stranger.crt")
        )
    );
    let allowed = curl(
        &dp,
        &pki,
        "shared.mtls.test",
        "/guarded/x",
        Some("client"),
        &[],
    );
    assert_eq!(allowed.code, "200", "{}", allowed.body);
    // The client certificate is asked for but not required on a shared host.
    assert_eq!(
        curl(
            &dp,
            &pki,
            "shared.mtls.test",
            "/open/x",
            Some("stranger"),
            &[]
        )
        .code,
        "200"
    );

    // Over plain HTTP there is no certificate to check.
    let resp = reqwest::Client::new()
        .get(dp.url("/guarded/x"))
        .header("Host", "shared.mtls.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "TLS not enabled"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dynamic_mtls_finds_the_key_from_the_certificate_and_never_from_a_token_alone() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let pki = Pki::new();
    let echo = portcullis_tests::EchoUpstream::start().await;
    let server = upload(&cp, pki.read("server.crt") + &pki.read("server.key")).await;
    let mut api = keyless("dyn", "dyn.mtls.test", &echo.url(), &server);
    api["use_keyless"] = json!(false);
    api["auth"] = json!({"use_certificate": true});
    cp.create_api(&api).await;
    // A plain auth-token API the same key may use.
    let mut token_api = keyless("tok", "dyn.mtls.test", &echo.url(), &server);
    token_api["use_keyless"] = json!(false);
    cp.create_api(&token_api).await;
    let rights = json!({"dyn": {"api_id": "dyn"}, "tok": {"api_id": "tok"}});
    let (status, body) = cp
        .call(
            Method::POST,
            "/tyk/keys/create",
            Some(&json!({"certificate": pki.read("client.crt"), "access_rights": rights})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let key = body["key"].as_str().unwrap().to_owned();
    assert!(
        key.ends_with(&pki.fingerprint("client.crt")),
        "the key is derived from the certificate: {key}"
    );
    let dp = Dp::joined(&cp).await;
    served(&dp, &pki, "dyn.mtls.test", "/dyn/x", Some("client"), "200").await;

    let none = curl(&dp, &pki, "dyn.mtls.test", "/dyn/x", None, &[]);
    assert_eq!(none.code, "401", "{}", none.body);
    assert_eq!(
        serde_json::from_str::<Value>(&none.body).unwrap()["error"],
        "Client certificate required"
    );
    // Tyk's bypass (tyk PR 7665): the key as a token without the certificate is refused.
    let auth = format!("Authorization: {key}");
    let token_only = curl(&dp, &pki, "dyn.mtls.test", "/dyn/x", None, &[&auth]);
    assert_eq!(token_only.code, "401", "{}", token_only.body);
    // The key is computable from the public certificate: as a plain token it is refused on
    // every API unless that certificate is presented too.
    let token_elsewhere = curl(&dp, &pki, "dyn.mtls.test", "/tok/x", None, &[&auth]);
    assert_eq!(token_elsewhere.code, "401", "{}", token_elsewhere.body);
    let other_cert = curl(
        &dp,
        &pki,
        "dyn.mtls.test",
        "/tok/x",
        Some("stranger"),
        &[&auth],
    );
    assert_eq!(other_cert.code, "401", "{}", other_cert.body);
    let with_cert = curl(
        &dp,
        &pki,
        "dyn.mtls.test",
        "/tok/x",
        Some("client"),
        &[&auth],
    );
    assert_eq!(with_cert.code, "200", "{}", with_cert.body);
    let stranger = curl(&dp, &pki, "dyn.mtls.test", "/dyn/x", Some("stranger"), &[]);
    assert_eq!(stranger.code, "403", "{}", stranger.body);
    assert_eq!(
        serde_json::from_str::<Value>(&stranger.body).unwrap()["error"],
        "Access to this API has been disallowed"
    );

    // Expiry is checked before the key is looked up.
    pki.add_expired_client();
    let expired = curl(&dp, &pki, "dyn.mtls.test", "/dyn/x", Some("expired"), &[]);
    assert_eq!(expired.code, "403", "{}", expired.body);
    assert_eq!(
        serde_json::from_str::<Value>(&expired.body).unwrap()["error"],
        "Certificate has expired"
    );

    // Deleting the key ends the client's access.
    let (status, body) = cp
        .call(Method::DELETE, &format!("/tyk/keys/{key}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    served(&dp, &pki, "dyn.mtls.test", "/dyn/x", Some("client"), "403").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_bound_to_certificates_works_only_with_them() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let pki = Pki::new();
    let echo = portcullis_tests::EchoUpstream::start().await;
    let server = upload(&cp, pki.read("server.crt") + &pki.read("server.key")).await;
    let ca = upload(&cp, pki.read("ca.crt")).await;
    let stranger = upload(&cp, pki.read("stranger.crt")).await;
    let mut api = keyless("bound", "bound.mtls.test", &echo.url(), &server);
    api["use_keyless"] = json!(false);
    api["use_mutual_tls_auth"] = json!(true);
    api["client_certificates"] = json!([ca, stranger]);
    cp.create_api(&api).await;
    let create = |bindings: Vec<String>| json!({"access_rights": {"bound": {"api_id": "bound"}}, "mtls_static_certificate_bindings": bindings});
    let (status, body) = cp
        .call(
            Method::POST,
            "/tyk/keys",
            Some(&create(vec![stranger.clone()])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bound = format!("Authorization: {}", body["key"].as_str().unwrap());
    let dp = Dp::joined(&cp).await;
    eventually(
        Duration::from_secs(15),
        "bound key served with its certificate",
        || {
            let got = curl(
                &dp,
                &pki,
                "bound.mtls.test",
                "/bound/x",
                Some("stranger"),
                &[&bound],
            );
            async move { (got.code == "200").then_some(()) }
        },
    )
    .await;
    // An allow-listed certificate, but not the one the key is bound to.
    let other = curl(
        &dp,
        &pki,
        "bound.mtls.test",
        "/bound/x",
        Some("client"),
        &[&bound],
    );
    assert_eq!(other.code, "401", "{}", other.body);
    assert_eq!(
        serde_json::from_str::<Value>(&other.body).unwrap()["error"],
        "Access to this API has been disallowed"
    );
}
