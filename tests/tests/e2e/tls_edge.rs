//! HTTPS at the edge: certificates uploaded to the control plane's store are served by SNI on
//! every edge's TLS listener, hot-swapped and withdrawn; ALPN, TLS 1.2 and 1.3; client
//! certificates requested or required at the handshake (docs/certificates.md). Checked with
//! `openssl s_client`, `curl` and a rustls client that records whether it was asked for a
//! certificate.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use portcullis_tests::{ADMIN_SECRET, Cp, Dp, DpOptions, TestDb, eventually, keyless_api};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use reqwest::{Method, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Python's `http.server`, answering with the request's path and headers as JSON.
struct PyUpstream {
    child: Child,
    port: u16,
}

const PYTHON: &str = r#"
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

impl PyUpstream {
    fn start() -> Self {
        let mut child = Command::new("python3")
            .args(["-c", PYTHON])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        let port = line.trim().parse().expect("python prints its port");
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for PyUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pc-tls-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A server CA (rcgen) whose certificates the clients trust through `ca.pem`.
struct ServerPki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    ca_file: PathBuf,
}

impl ServerPki {
    fn new(dir: &Path) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Edge Test Server CA");
        let ca = params.self_signed(&key).unwrap();
        let ca_file = dir.join("server-ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            ca_pem: ca.pem(),
            ca_file,
        }
    }

    /// A leaf for `names` (CN = the first) with its key, as one PEM bundle.
    fn leaf_bundle(&self, names: &[&str]) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let leaf = params.signed_by(&key, &self.issuer).unwrap();
        format!("{}{}", leaf.pem(), key.serialize_pem())
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("openssl runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Client CA and client certificates made with the openssl CLI: `ca.pem`, `allowed.{pem,key}`
/// (signed by the CA, clientAuth) and `stranger.{pem,key}` (self-signed).
fn openssl_client_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509"])
        .args(ec)
        .args([
            "-keyout",
            "client-ca.key",
            "-out",
            "client-ca.pem",
            "-days",
            "30",
        ])
        .args(["-subj", "/CN=Portcullis Test Client CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]));
    run(Command::new("openssl")
        .current_dir(dir)
        .arg("req")
        .args(ec)
        .args(["-keyout", "allowed.key", "-out", "allowed.csr"])
        .args(["-subj", "/CN=allowed client"]));
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["x509", "-req", "-in", "allowed.csr", "-CA", "client-ca.pem"])
        .args(["-CAkey", "client-ca.key", "-CAcreateserial", "-days", "30"])
        .args(["-extfile", "client.ext", "-out", "allowed.pem"]));
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509"])
        .args(ec)
        .args([
            "-keyout",
            "stranger.key",
            "-out",
            "stranger.pem",
            "-days",
            "30",
        ])
        .args([
            "-subj",
            "/CN=stranger",
            "-addext",
            "extendedKeyUsage=clientAuth",
        ]));
}

async fn upload(cp: &Cp, pem: &str) -> String {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/tyk/certs", cp.api_addr))
        .header("X-Tyk-Authorization", ADMIN_SECRET)
        .header("content-type", "application/x-pem-file")
        .body(pem.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "upload: {body}");
    body["id"].as_str().unwrap().to_owned()
}

/// A keyless API on `domain` ("" = every name) serving `certs`.
fn api(id: &str, domain: &str, certs: &[&str], upstream: &str) -> Value {
    let mut def = keyless_api(id, &format!("/{id}/"), upstream);
    def["domain"] = json!(domain);
    def["certificates"] = json!(certs);
    def
}

/// A client certificate for the rustls client.
struct ClientCert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl ClientCert {
    fn load(dir: &Path, name: &str) -> Self {
        let chain = CertificateDer::pem_file_iter(dir.join(format!("{name}.pem")))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
        Self { chain, key }
    }
}

/// Answers a CertificateRequest with the configured certificate (or none) and remembers
/// that the server asked.
#[derive(Debug)]
struct Recording {
    asked: AtomicBool,
    key: Option<Arc<rustls::sign::CertifiedKey>>,
}

impl rustls::client::ResolvesClientCert for Recording {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.asked.store(true, Ordering::SeqCst);
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
    /// Whether the server sent a CertificateRequest.
    asked: bool,
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection with SNI `sni` (None: no SNI) trusting `ca_pem`, and whether the server
/// asked for a client certificate.
async fn tls_connect(
    addr: std::net::SocketAddr,
    sni: Option<&str>,
    ca_pem: &str,
    client: Option<&ClientCert>,
) -> Result<(Tls, bool), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = client.map(|c| {
        Arc::new(
            rustls::sign::CertifiedKey::from_der(c.chain.clone(), c.key.clone_key(), &provider)
                .unwrap(),
        )
    });
    let recording = Arc::new(Recording {
        asked: AtomicBool::new(false),
        key,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(recording.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Without SNI the certificate is still checked, for the name the test expects.
    config.enable_sni = sni.is_some();
    let name = sni.unwrap_or("any.example.test");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok((tls, recording.asked.load(Ordering::SeqCst)))
}

/// One HTTP/1.1 GET on an open connection, kept open; the answer must have a Content-Length.
async fn get_on(tls: &mut Tls, host: &str, path: &str) -> Result<(u16, String), String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("not HTTP: {head}"))?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                return Ok((status, body.to_owned()));
            }
        }
        let n = tls.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("connection closed: {text}"));
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// GET over a new HTTPS connection; Err when the handshake or the request fails.
async fn https_get(
    addr: std::net::SocketAddr,
    sni: Option<&str>,
    ca_pem: &str,
    path: &str,
    client: Option<&ClientCert>,
) -> Result<Reply, String> {
    let (mut tls, asked) = tls_connect(addr, sni, ca_pem, client).await?;
    let (status, body) = get_on(&mut tls, sni.unwrap_or("any.example.test"), path).await?;
    // In TLS 1.3 the server's verdict on a client certificate arrives after the client's
    // handshake: a refused one shows up as the read error above.
    Ok(Reply {
        status,
        body,
        asked,
    })
}

/// `openssl s_client` against the edge's TLS port; stdout and stderr together.
fn s_client(dp: &Dp, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .arg("s_client")
        .args(["-connect", &dp.tls_addr.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `curl` to `https://host:port/path` resolved to the edge, trusting `ca`: (exit ok, output
/// with `\n<status> <http version>` appended).
fn curl(dp: &Dp, host: &str, path: &str, ca: &Path, extra: &[&str]) -> (bool, String) {
    let port = dp.tls_addr.port();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .arg("--cacert")
        .arg(ca)
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("curl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Waits until `path` answers 200 over HTTPS with `sni` at `dp`.
async fn wait_served(dp: &Dp, sni: &str, ca_pem: &str, path: &str) -> Reply {
    eventually(
        Duration::from_secs(20),
        &format!("https://{sni}{path} served"),
        || async {
            https_get(dp.tls_addr, Some(sni), ca_pem, path, None)
                .await
                .ok()
                .filter(|r| r.status == 200)
        },
    )
    .await
}

async fn two_edges(cp: &Cp) -> (Dp, Dp) {
    let token = cp.token_for("default", 2).await;
    let start = || {
        Dp::start(
            cp,
            DpOptions {
                token: Some(token.clone()),
                ..Default::default()
            },
        )
    };
    (start().await.unwrap(), start().await.unwrap())
}

#[tokio::test]
async fn an_uploaded_certificate_is_served_at_every_edge_and_withdrawn_after_delete() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let (edge1, edge2) = two_edges(&cp).await;
    let dir = temp_dir("upload");
    let pki = ServerPki::new(&dir);
    let upstream = PyUpstream::start();
    let id = upload(&cp, &pki.leaf_bundle(&["shop.example.test"])).await;
    cp.create_api(&api("shop", "shop.example.test", &[&id], &upstream.url()))
        .await;

    for edge in [&edge1, &edge2] {
        let reply = wait_served(edge, "shop.example.test", &pki.ca_pem, "/shop/items").await;
        let seen: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(seen["path"], "/items");
        // What the upstream learns of the client's scheme.
        assert_eq!(seen["headers"]["x-forwarded-proto"], "https", "{seen}");
        assert!(
            !reply.asked,
            "no API wants a client certificate: none is requested"
        );
    }
    // Both planes agree on which certificates the group holds: nothing was refused.
    for edge in [&edge1, &edge2] {
        assert_eq!(
            edge.shared.stats.nacks.load(Ordering::Relaxed),
            0,
            "{:?}",
            edge.last_error()
        );
    }
    // The certificate's expiry on the admin port.
    let metrics = reqwest::get(format!("http://{}/metrics", edge1.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "portcullis_gateway_certificate_expiry_seconds{{cert_id=\"{id}\"}}"
            ))
        })
        .unwrap_or_else(|| panic!("no expiry gauge for {id}: {metrics}"));
    let left: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(left > 86_400, "{line}");
    // The same through curl, trusting only the test CA (curl offers h2 by ALPN).
    let (ok, out) = curl(&edge1, "shop.example.test", "/shop/x", &pki.ca_file, &[]);
    assert!(ok && out.ends_with("200 2"), "{out}");
    let (status, _) = cp
        .call(Method::GET, &format!("/tyk/certs/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // A connection opened before the certificate goes keeps it.
    let (mut open, _) = tls_connect(edge1.tls_addr, Some("shop.example.test"), &pki.ca_pem, None)
        .await
        .unwrap();
    assert_eq!(
        get_on(&mut open, "shop.example.test", "/shop/1")
            .await
            .unwrap()
            .0,
        200
    );
    let (status, body) = cp
        .call(Method::DELETE, &format!("/tyk/certs/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for edge in [&edge1, &edge2] {
        let err = eventually(
            Duration::from_secs(20),
            "the deleted certificate withdrawn",
            || async {
                https_get(
                    edge.tls_addr,
                    Some("shop.example.test"),
                    &pki.ca_pem,
                    "/shop/x",
                    None,
                )
                .await
                .err()
            },
        )
        .await;
        assert!(err.contains("handshake"), "{err}");
    }
    assert_eq!(
        get_on(&mut open, "shop.example.test", "/shop/2")
            .await
            .unwrap()
            .0,
        200,
        "the open connection still serves"
    );
    for edge in [&edge1, &edge2] {
        assert_eq!(
            edge.shared.stats.nacks.load(Ordering::Relaxed),
            0,
            "{:?}",
            edge.last_error()
        );
    }
    // openssl names the alert: the edge has no certificate for the name any more.
    let out = s_client(&edge1, &["-servername", "shop.example.test"]);
    assert!(out.contains("alert access denied"), "{out}");
    // The plain listener is unaffected.
    let plain = reqwest::Client::new()
        .get(edge1.url("/shop/x"))
        .header("host", "shop.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
}

#[tokio::test]
async fn sni_picks_each_domains_certificate_and_a_wildcard_covers_one_label() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let edge = Dp::joined(&cp).await;
    let dir = temp_dir("sni");
    let pki = ServerPki::new(&dir);
    let upstream = PyUpstream::start();
    let a = upload(&cp, &pki.leaf_bundle(&["a.example.test"])).await;
    let b = upload(&cp, &pki.leaf_bundle(&["b.example.test"])).await;
    let wild = upload(&cp, &pki.leaf_bundle(&["*.wild.example.test"])).await;
    cp.create_api(&api("a", "a.example.test", &[&a], &upstream.url()))
        .await;
    cp.create_api(&api("b", "b.example.test", &[&b], &upstream.url()))
        .await;
    // Domain-less: served on every name its certificate covers, and without SNI.
    cp.create_api(&api("any", "", &[&wild], &upstream.url()))
        .await;
    wait_served(&edge, "x.wild.example.test", &pki.ca_pem, "/any/").await;
    wait_served(&edge, "a.example.test", &pki.ca_pem, "/a/").await;
    wait_served(&edge, "b.example.test", &pki.ca_pem, "/b/").await;

    let ca = pki.ca_file.display().to_string();
    for (sni, cn) in [
        ("a.example.test", "a.example.test"),
        ("B.Example.Test", "b.example.test"),
        ("x.wild.example.test", "*.wild.example.test"),
    ] {
        let out = s_client(&edge, &["-servername", sni, "-CAfile", &ca]);
        assert!(out.contains(&format!("subject=CN = {cn}")), "{sni}: {out}");
        assert!(out.contains("Verify return code: 0 (ok)"), "{sni}: {out}");
    }
    let (ok, out) = curl(&edge, "b.example.test", "/b/hello", &pki.ca_file, &[]);
    assert!(ok && out.contains(r#""path": "/hello""#), "{out}");
    // No SNI: the domain-less API's certificate.
    let out = s_client(&edge, &["-noservername", "-CAfile", &ca]);
    assert!(out.contains("subject=CN = *.wild.example.test"), "{out}");
    // The star is one label: two levels down, and the bare parent, get no certificate.
    for sni in [
        "y.x.wild.example.test",
        "wild.example.test",
        "c.example.test",
    ] {
        let out = s_client(&edge, &["-servername", sni, "-CAfile", &ca]);
        assert!(out.contains("alert access denied"), "{sni}: {out}");
        assert!(
            https_get(edge.tls_addr, Some(sni), &pki.ca_pem, "/any/", None)
                .await
                .is_err()
        );
    }
}

#[tokio::test]
async fn https_speaks_h2_and_http1_over_tls_1_2_and_1_3() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let edge = Dp::joined(&cp).await;
    let dir = temp_dir("alpn");
    let pki = ServerPki::new(&dir);
    let upstream = PyUpstream::start();
    let id = upload(&cp, &pki.leaf_bundle(&["api.example.test"])).await;
    cp.create_api(&api("v", "api.example.test", &[&id], &upstream.url()))
        .await;
    wait_served(&edge, "api.example.test", &pki.ca_pem, "/v/").await;

    let (ok, out) = curl(
        &edge,
        "api.example.test",
        "/v/h2",
        &pki.ca_file,
        &["--http2"],
    );
    assert!(ok && out.ends_with("200 2"), "{out}");
    assert!(out.contains(r#""x-forwarded-proto": "https""#), "{out}");
    let (ok, out) = curl(
        &edge,
        "api.example.test",
        "/v/h1",
        &pki.ca_file,
        &["--http1.1"],
    );
    assert!(ok && out.ends_with("200 1.1"), "{out}");
    let ca = pki.ca_file.display().to_string();
    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let out = s_client(
            &edge,
            &[
                "-servername",
                "api.example.test",
                "-CAfile",
                &ca,
                flag,
                "-alpn",
                "h2",
            ],
        );
        assert!(out.contains(&format!("New, {version}")), "{flag}: {out}");
        assert!(out.contains("ALPN protocol: h2"), "{flag}: {out}");
    }
    // Older versions are not spoken.
    let out = s_client(&edge, &["-servername", "api.example.test", "-tls1_1"]);
    assert!(!out.contains("New, TLSv1.1"), "{out}");
}

#[tokio::test]
async fn a_static_mtls_host_requires_an_allowed_certificate_and_names_its_ca() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let edge = Dp::joined(&cp).await;
    let dir = temp_dir("mtls");
    let pki = ServerPki::new(&dir);
    openssl_client_pki(&dir);
    let upstream = PyUpstream::start();
    let server = upload(&cp, &pki.leaf_bundle(&["secure.example.test"])).await;
    let client_ca = upload(
        &cp,
        &std::fs::read_to_string(dir.join("client-ca.pem")).unwrap(),
    )
    .await;
    let mut def = api("m", "secure.example.test", &[&server], &upstream.url());
    def["use_mutual_tls_auth"] = json!(true);
    def["client_certificates"] = json!([client_ca]);
    cp.create_api(&def).await;

    let allowed = ClientCert::load(&dir, "allowed");
    let stranger = ClientCert::load(&dir, "stranger");
    let reply = eventually(Duration::from_secs(20), "mTLS host served", || async {
        https_get(
            edge.tls_addr,
            Some("secure.example.test"),
            &pki.ca_pem,
            "/m/",
            Some(&allowed),
        )
        .await
        .ok()
        .filter(|r| r.status == 200)
    })
    .await;
    assert!(reply.asked);

    let ca = pki.ca_file.display().to_string();
    let out = s_client(
        &edge,
        &["-servername", "secure.example.test", "-CAfile", &ca],
    );
    assert!(
        out.contains("Acceptable client certificate CA names\nCN = Portcullis Test Client CA"),
        "{out}"
    );
    // TLS 1.2 decides within the handshake itself: openssl sees the verdict.
    let (cert, key) = (
        dir.join("allowed.pem").display().to_string(),
        dir.join("allowed.key").display().to_string(),
    );
    let tls12 = [
        "-servername",
        "secure.example.test",
        "-CAfile",
        &ca,
        "-tls1_2",
    ];
    let out = s_client(
        &edge,
        &[&tls12[..], &["-cert", &cert, "-key", &key]].concat(),
    );
    assert!(
        out.contains("New, TLSv1.2") && !out.contains("alert"),
        "{out}"
    );
    let out = s_client(&edge, &tls12);
    assert!(out.contains("alert certificate required"), "{out}");
    // Without a certificate, or with one the allow-list does not cover: no connection.
    for client in [None, Some(&stranger)] {
        let r = https_get(
            edge.tls_addr,
            Some("secure.example.test"),
            &pki.ca_pem,
            "/m/",
            client,
        )
        .await;
        assert!(r.is_err(), "{r:?}");
    }
    let (ok, out) = curl(&edge, "secure.example.test", "/m/", &pki.ca_file, &[]);
    assert!(!ok, "{out}");
    let (ok, out) = curl(
        &edge,
        "secure.example.test",
        "/m/",
        &pki.ca_file,
        &[
            "--cert",
            &dir.join("stranger.pem").display().to_string(),
            "--key",
            &dir.join("stranger.key").display().to_string(),
        ],
    );
    assert!(!ok, "{out}");
    let (ok, out) = curl(
        &edge,
        "secure.example.test",
        "/m/ok",
        &pki.ca_file,
        &[
            "--cert",
            &dir.join("allowed.pem").display().to_string(),
            "--key",
            &dir.join("allowed.key").display().to_string(),
        ],
    );
    assert!(ok && out.ends_with("200 2"), "{out}");
}

#[tokio::test]
async fn a_mixed_host_requests_a_certificate_without_requiring_one() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let edge = Dp::joined(&cp).await;
    let dir = temp_dir("mixed");
    let pki = ServerPki::new(&dir);
    openssl_client_pki(&dir);
    let upstream = PyUpstream::start();
    let mixed = upload(&cp, &pki.leaf_bundle(&["mixed.example.test"])).await;
    let plain = upload(&cp, &pki.leaf_bundle(&["plain.example.test"])).await;
    let client_ca = upload(
        &cp,
        &std::fs::read_to_string(dir.join("client-ca.pem")).unwrap(),
    )
    .await;
    let mut secure = api("secure", "mixed.example.test", &[&mixed], &upstream.url());
    secure["use_mutual_tls_auth"] = json!(true);
    secure["client_certificates"] = json!([client_ca]);
    cp.create_api(&secure).await;
    cp.create_api(&api(
        "open",
        "mixed.example.test",
        &[&mixed],
        &upstream.url(),
    ))
    .await;
    cp.create_api(&api(
        "plain",
        "plain.example.test",
        &[&plain],
        &upstream.url(),
    ))
    .await;

    // Requested, not required: a client without a certificate reaches the open API.
    let reply = wait_served(&edge, "mixed.example.test", &pki.ca_pem, "/open/").await;
    assert!(reply.asked, "a certificate is requested on the mixed host");
    // Any certificate whose key the client proves passes the handshake; the allow-list is
    // the HTTP-level check's business.
    let stranger = ClientCert::load(&dir, "stranger");
    let r = https_get(
        edge.tls_addr,
        Some("mixed.example.test"),
        &pki.ca_pem,
        "/open/",
        Some(&stranger),
    )
    .await
    .unwrap();
    assert_eq!((r.status, r.asked), (200, true));
    let out = s_client(&edge, &["-servername", "mixed.example.test"]);
    assert!(out.contains("No client certificate CA names sent"), "{out}");

    // A host where no API wants certificates never asks (browsers would prompt).
    let reply = wait_served(&edge, "plain.example.test", &pki.ca_pem, "/plain/").await;
    assert!(!reply.asked);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_disconnected() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let edge = Dp::start(
        &cp,
        DpOptions {
            token: Some(cp.token("default").await),
            tls_handshake_timeout: Some(Duration::from_millis(500)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Half a ClientHello record header, then silence.
    let mut tcp = tokio::net::TcpStream::connect(edge.tls_addr).await.unwrap();
    tcp.write_all(&[0x16, 0x03]).await.unwrap();
    let mut buf = [0u8; 64];
    // Ten times the flag's value, and half the 10 s default: the flag is what closes it.
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("the edge closes the connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

/// `--proxy-workers 2`: both listeners are served by the worker threads (the runtime that
/// started the gateway no longer accepts on them), many connections at once over HTTP/1.1 and h2,
/// and dropping the gateway closes them.
#[tokio::test]
async fn proxy_workers_serve_plain_and_https_and_stop_with_the_gateway() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let edge = Dp::start(
        &cp,
        DpOptions {
            token: Some(cp.token("default").await),
            proxy_workers: 2,
            ..Default::default()
        },
    )
    .await
    .expect("gateway with proxy workers starts");
    let dir = temp_dir("workers");
    let pki = ServerPki::new(&dir);
    let upstream = PyUpstream::start();
    let id = upload(&cp, &pki.leaf_bundle(&["w.example.test"])).await;
    cp.create_api(&api("w", "w.example.test", &[&id], &upstream.url()))
        .await;
    wait_served(&edge, "w.example.test", &pki.ca_pem, "/w/").await;

    // Twelve curl processes at once, each reusing its connection for three requests.
    let plain = format!("http://w.example.test:{}", edge.proxy_addr.port());
    let tls = format!("https://w.example.test:{}", edge.tls_addr.port());
    let resolve = |port: u16| format!("w.example.test:{port}:127.0.0.1");
    let children: Vec<_> = (0..12)
        .map(|i| {
            let (base, port, version) = match i % 3 {
                0 => (&plain, edge.proxy_addr.port(), "--http1.1"),
                1 => (&tls, edge.tls_addr.port(), "--http1.1"),
                _ => (&tls, edge.tls_addr.port(), "--http2"),
            };
            Command::new("curl")
                .args(["-sS", "--max-time", "20", version])
                .args(["--resolve", &resolve(port)])
                .arg("--cacert")
                .arg(&pki.ca_file)
                .args(["-w", "\n%{http_code} %{num_connects}\n"])
                .args((0..3).map(|n| format!("{base}/w/c{i}-{n}")))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("curl runs")
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "curl {i}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for n in 0..3 {
            assert!(text.contains(&format!(r#""path": "/c{i}-{n}""#)), "{text}");
        }
        let statuses: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("200 ") || l.starts_with("000 "))
            .collect();
        // One connection for the first request, reused for the other two.
        assert_eq!(statuses, ["200 1", "200 0", "200 0"], "curl {i}: {text}");
    }

    let (plain_addr, tls_addr) = (edge.proxy_addr, edge.tls_addr);
    drop(edge);
    for addr in [plain_addr, tls_addr] {
        eventually(
            Duration::from_secs(10),
            &format!("{addr} closed once the gateway is dropped"),
            || async move { tokio::net::TcpStream::connect(addr).await.err().map(|_| ()) },
        )
        .await;
    }
}
