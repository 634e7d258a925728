//! Issue 11: TLS from the edge to upstreams (docs/certificates.md, "Upstream TLS"). The
//! upstream is nginx, so OpenSSL (code we did not write) checks the client certificate the
//! gateway presents and reports which one it saw; every certificate reaches the edge through
//! `POST /tyk/certs` and the sync stream.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::{Method, StatusCode};
use portcullis_data_plane::proxy::upstream_tls::GatewayTls;
use portcullis_tests::{ADMIN_SECRET, Cp, Dp, DpOptions, TestDb, keyless_api};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};

/// A CA and the certificates it issued, as PEM.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    /// The store id the upload will get (no org: sha256 of the leaf's DER).
    id: String,
}

impl Leaf {
    fn bundle(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }
}

fn id_of(der: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(der))
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn id(&self) -> String {
        id_of(self.issuer.der())
    }

    fn leaf(&self, cn: &str, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            id: id_of(cert.der()),
        }
    }
}

fn self_signed(cn: &str) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = params.self_signed(&key).unwrap();
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        id: id_of(cert.der()),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx with one TLS server per case, each answering
/// `dn=<client DN> proto=<HTTP version> tls=<TLS version> host=<Host or :authority>`.
struct Nginx {
    child: Child,
    dir: PathBuf,
    /// Requires a client certificate issued by the client CA.
    mtls: u16,
    /// HTTP/2 by ALPN (and HTTP/1.1 for clients that do not offer h2).
    h2: u16,
    /// TLS 1.2 only, HTTP/1.1 only.
    tls12: u16,
    /// A self-signed certificate.
    selfsigned: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Nginx {
    async fn start(server: &Leaf, client_ca: &Ca, own: &Leaf) -> Self {
        let dir = std::env::temp_dir().join(format!("pc-up-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let write = |name: &str, body: &str| std::fs::write(dir.join(name), body).unwrap();
        write("server.pem", &server.cert_pem);
        write("server.key", &server.key_pem);
        write("self.pem", &own.cert_pem);
        write("self.key", &own.key_pem);
        write("client-ca.pem", &client_ca.pem());
        let (mtls, h2, tls12, selfsigned) = (free_port(), free_port(), free_port(), free_port());
        let d = dir.display();
        let answer = r#"location / { default_type text/plain; return 200 "dn=$ssl_client_s_dn proto=$server_protocol tls=$ssl_protocol host=$host"; }"#;
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 128; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
  ssl_certificate {d}/server.pem;
  ssl_certificate_key {d}/server.key;
  ssl_protocols TLSv1.2 TLSv1.3;
  server {{
    listen 127.0.0.1:{mtls} ssl;
    ssl_verify_client on;
    ssl_client_certificate {d}/client-ca.pem;
    {answer}
  }}
  server {{ listen 127.0.0.1:{h2} ssl http2; {answer} }}
  server {{ listen 127.0.0.1:{tls12} ssl; ssl_protocols TLSv1.2; {answer} }}
  server {{
    listen 127.0.0.1:{selfsigned} ssl;
    ssl_certificate {d}/self.pem;
    ssl_certificate_key {d}/self.key;
    {answer}
  }}
}}
"#
        );
        write("nginx.conf", &conf);
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let nginx = Self {
            child,
            dir,
            mtls,
            h2,
            tls12,
            selfsigned,
        };
        for port in [mtls, h2, tls12, selfsigned] {
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            portcullis_tests::eventually(Duration::from_secs(15), "nginx listening", || async {
                tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
            })
            .await;
        }
        nginx
    }
}

/// Uploads a PEM bundle through the management API, after the APIs that use it: the edge then
/// gets it in the delta that makes it visible. Returns the certificate id.
async fn upload(cp: &Cp, pem: &str, tags: Option<&str>) -> String {
    let path = match tags {
        Some(t) => format!("/tyk/certs?tags={t}"),
        None => "/tyk/certs".to_owned(),
    };
    let (status, body) = cp
        .call_raw(
            Method::POST,
            &path,
            Some(pem.to_owned()),
            Some(ADMIN_SECRET),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "upload: {body}");
    body["id"].as_str().expect("id in answer").to_owned()
}

fn api(id: &str, target: &str, extra: Value) -> Value {
    let mut def = keyless_api(id, &format!("/{id}/"), target);
    if let (Some(def), Value::Object(extra)) = (def.as_object_mut(), extra) {
        for (k, v) in extra {
            if k == "transport" || k == "preserve_host_header" {
                def["proxy"][k] = v;
            } else {
                def.insert(k, v);
            }
        }
    }
    def
}

async fn stack_with(db: &TestDb, upstream_tls: GatewayTls) -> (Cp, Dp) {
    let cp = Cp::start(&db.url).await;
    let dp = Dp::start(
        &cp,
        DpOptions {
            token: Some(cp.token("default").await),
            upstream_tls,
            ..Default::default()
        },
    )
    .await
    .expect("gateway starts");
    (cp, dp)
}

fn dn(body: &str) -> &str {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("dn="))
        .unwrap_or("")
}

fn error_of(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap_or_default()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn upstream_tls_client_certificates_follow_host_patterns_and_the_api_map_wins() {
    let server_ca = Ca::new("Upstream server CA");
    let client_ca = Ca::new("Upstream client CA");
    let server = server_ca.leaf("upstream", &["localhost", "127.0.0.1"]);
    let nginx = Nginx::start(&server, &client_ca, &self_signed("unused")).await;
    let clients: Vec<Leaf> = ["any", "host", "host-port", "global-host-port", "global-any"]
        .iter()
        .map(|cn| client_ca.leaf(&format!("client-{cn}"), &[]))
        .collect();
    let db = TestDb::new().await;
    let ids: Vec<String> = clients.iter().map(|c| c.id.clone()).collect();
    let ca_id = server_ca.id();
    let mtls = nginx.mtls;
    let gateway = GatewayTls::parse(
        &[
            format!("localhost:{mtls}={}", ids[3]),
            format!("*={}", ids[4]),
        ],
        &[],
    )
    .unwrap();
    let (cp, dp) = stack_with(&db, gateway).await;
    let target = format!("https://localhost:{mtls}/");
    let trust = json!({"ssl_ca_certificates": [ca_id]});
    let cases = [
        // Most specific API pattern wins…
        (
            "hostport",
            json!({"*": ids[0], "localhost": ids[1], format!("localhost:{mtls}"): ids[2]}),
            "CN=client-host-port",
        ),
        (
            "host",
            json!({"*": ids[0], "localhost": ids[1], "localhost:1": ids[2]}),
            "CN=client-host",
        ),
        (
            "any",
            json!({"*": ids[0], "other.test": ids[1]}),
            "CN=client-any",
        ),
        // …an API `*` beats the gateway's exact host:port…
        ("apiwins", json!({"*": ids[0]}), "CN=client-any"),
        // …and without an API match the gateway's most specific pattern applies.
        (
            "global",
            json!({"other.test": ids[1]}),
            "CN=client-global-host-port",
        ),
    ];
    for (id, map, _) in &cases {
        cp.create_api(&api(
            id,
            &target,
            json!({"upstream_certificates": map, "transport": trust}),
        ))
        .await;
    }
    // The same host on an IP: only the gateway's `*` matches it.
    cp.create_api(&api(
        "globalany",
        &format!("https://127.0.0.1:{mtls}/"),
        json!({"transport": trust}),
    ))
    .await;
    cp.create_api(&api(
        "disabled",
        &target,
        json!({"upstream_certificates": {"*": ids[0]}, "upstream_certificates_disabled": true, "transport": trust}),
    ))
    .await;
    assert_eq!(upload(&cp, &server_ca.pem(), None).await, ca_id);
    for (i, c) in clients.iter().enumerate() {
        // The gateway-wide ones reach the edge by their tag: no API references them.
        let tags = (i >= 3).then_some("default");
        assert_eq!(upload(&cp, &c.bundle(), tags).await, c.id);
    }
    portcullis_tests::eventually(
        Duration::from_secs(20),
        "the last certificate in use",
        || async {
            let (_, body) = dp.get("/globalany/").await;
            (dn(&body) == "CN=client-global-any").then_some(())
        },
    )
    .await;

    for (id, _, want) in &cases {
        let (status, body) = dp.get(&format!("/{id}/")).await;
        assert_eq!(status, StatusCode::OK, "{id}: {body}");
        assert_eq!(dn(&body), *want, "{id}: {body}");
    }
    let (status, body) = dp.get("/globalany/").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(dn(&body), "CN=client-global-any");
    // No certificate presented: nginx itself refuses (its 400 page comes through).
    let (_, body) = dp.get("/disabled/").await;
    assert!(body.contains("No required SSL certificate"), "{body}");
}

#[tokio::test]
async fn upstream_tls_verification_pins_cas_and_skip_verify() {
    let server_ca = Ca::new("Upstream server CA");
    let client_ca = Ca::new("Upstream client CA");
    let server = server_ca.leaf("upstream", &["localhost"]);
    let own = self_signed("self-signed upstream");
    let nginx = Nginx::start(&server, &client_ca, &own).await;
    let db = TestDb::new().await;
    let (ca_id, server_id, other_id) = (server_ca.id(), server.id.clone(), own.id.clone());
    let (cp, dp) = stack_with(&db, GatewayTls::default()).await;
    let (h1, selfsigned) = (nginx.tls12, nginx.selfsigned);
    let local = format!("https://localhost:{h1}/");
    let trust = json!({"ssl_ca_certificates": [ca_id]});
    let defs = [
        ("webroots", local.clone(), json!({})),
        ("ca", local.clone(), json!({"transport": trust})),
        // The certificate names localhost only.
        (
            "byip",
            format!("https://127.0.0.1:{h1}/"),
            json!({"transport": trust}),
        ),
        (
            "pinok",
            local.clone(),
            json!({"transport": trust, "pinned_public_keys": {"localhost": format!("{other_id},{server_id}")}}),
        ),
        (
            "pinbad",
            local.clone(),
            json!({"transport": trust, "pinned_public_keys": {"*": other_id}}),
        ),
        (
            "pinoff",
            local.clone(),
            json!({"transport": trust, "pinned_public_keys": {"*": other_id}, "certificate_pinning_disabled": true}),
        ),
        (
            "selfsigned",
            format!("https://localhost:{selfsigned}/"),
            json!({"transport": trust}),
        ),
        (
            "skip",
            format!("https://localhost:{selfsigned}/"),
            json!({"transport": {"ssl_insecure_skip_verify": true}}),
        ),
        // Skip-verify still checks pins.
        (
            "skippinned",
            format!("https://localhost:{selfsigned}/"),
            json!({"transport": {"ssl_insecure_skip_verify": true}, "pinned_public_keys": {"*": server_id}}),
        ),
        ("last", local.clone(), json!({"transport": trust})),
    ];
    for (id, target, extra) in &defs {
        cp.create_api(&api(id, target, extra.clone())).await;
    }
    // Public certificates only: pins and CAs need no private key.
    assert_eq!(upload(&cp, &own.cert_pem, None).await, other_id);
    assert_eq!(upload(&cp, &server.cert_pem, None).await, server_id);
    assert_eq!(upload(&cp, &server_ca.pem(), None).await, ca_id);
    dp.wait_for_status("/last/", 200).await;

    let expect = [
        ("webroots", 502, "Upstream certificate is not trusted"),
        ("ca", 200, ""),
        (
            "byip",
            502,
            "Upstream certificate does not match the upstream host",
        ),
        ("pinok", 200, ""),
        (
            "pinbad",
            502,
            "Upstream public key does not match the pinned public keys",
        ),
        ("pinoff", 200, ""),
        ("selfsigned", 502, "Upstream certificate is not trusted"),
        ("skip", 200, ""),
        (
            "skippinned",
            502,
            "Upstream public key does not match the pinned public keys",
        ),
    ];
    for (id, status, error) in expect {
        let (got, body) = dp.get(&format!("/{id}/")).await;
        assert_eq!(got.as_u16(), status, "{id}: {body}");
        if status == 200 {
            assert!(body.starts_with("dn= proto=HTTP/1.1"), "{id}: {body}");
        } else {
            assert_eq!(error_of(&body), error, "{id}: {body}");
        }
    }
}

#[tokio::test]
async fn upstream_tls_versions_and_http2_by_alpn() {
    let server_ca = Ca::new("Upstream server CA");
    let client_ca = Ca::new("Upstream client CA");
    let server = server_ca.leaf("upstream", &["localhost"]);
    let nginx = Nginx::start(&server, &client_ca, &self_signed("unused")).await;
    let db = TestDb::new().await;
    let ca_id = server_ca.id();
    let (cp, dp) = stack_with(&db, GatewayTls::default()).await;
    let at = |port: u16| format!("https://localhost:{port}/");
    let defs = [
        (
            "tls13only",
            at(nginx.tls12),
            json!({"ssl_ca_certificates": [ca_id], "ssl_min_version": 772}),
        ),
        (
            "tls12max",
            at(nginx.h2),
            json!({"ssl_ca_certificates": [ca_id], "ssl_max_version": 771}),
        ),
        (
            "h1",
            at(nginx.tls12),
            json!({"ssl_ca_certificates": [ca_id]}),
        ),
        ("h2", at(nginx.h2), json!({"ssl_ca_certificates": [ca_id]})),
    ];
    for (id, target, transport) in &defs {
        cp.create_api(&api(id, target, json!({"transport": transport})))
            .await;
    }
    // HTTP/2 cannot carry a Host other than the target: such an API stays on HTTP/1.1.
    cp.create_api(&api(
        "preserve",
        &at(nginx.h2),
        json!({"transport": {"ssl_ca_certificates": [ca_id]}, "preserve_host_header": true}),
    ))
    .await;
    assert_eq!(upload(&cp, &server_ca.pem(), None).await, ca_id);
    dp.wait_for_status("/h2/", 200).await;

    let (status, body) = dp.get("/tls13only/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(
        error_of(&body),
        "Upstream does not support the allowed TLS versions"
    );
    let (status, body) = dp.get("/tls12max/").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(" tls=TLSv1.2 "), "{body}");
    let (status, body) = dp.get("/h1/").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("proto=HTTP/1.1 tls=TLSv1.2"), "{body}");
    // Several requests, so connection reuse on the h2 pool is exercised too.
    for _ in 0..3 {
        let (status, body) = dp.get("/h2/").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body.contains("proto=HTTP/2.0 tls=TLSv1.3 host=localhost"),
            "{body}"
        );
    }
    let (status, body) = dp.get("/preserve/").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("proto=HTTP/1.1 tls=TLSv1.3 host=127.0.0.1"),
        "{body}"
    );
}
