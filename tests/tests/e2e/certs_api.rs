//! The certificate store (`/tyk/certs`, Tyk's certificate API): uploads, Tyk's refusals, listing,
//! metadata, deletion, private keys at rest, certificates in keys, and which edge groups receive
//! a certificate through the sync stream.

use std::process::Command;

use portcullis_tests::{ADMIN_SECRET, Cp, TestDb};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Uploads `pem` with the admin secret; returns status and JSON body.
async fn upload(cp: &Cp, query: &str, pem: &str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/tyk/certs{query}", cp.api_addr))
        .header("X-Tyk-Authorization", ADMIN_SECRET)
        .header("content-type", "application/x-pem-file")
        .body(pem.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A CA and a leaf for `name` it signs (rcgen).
struct Pki {
    ca_pem: String,
    leaf_pem: String,
    leaf_der: Vec<u8>,
    key_pem: String,
}

fn rcgen_pki(name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let leaf = params.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_pem: ca.pem(),
        leaf_pem: leaf.pem(),
        leaf_der: leaf.der().to_vec(),
        key_pem: key.serialize_pem(),
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("openssl runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A self-signed certificate and its key made by the openssl CLI, with the CLI's own sha256
/// fingerprint (lowercase hex, no colons): an oracle independent of our parser.
struct OpensslCert {
    cert_pem: String,
    key_pem: String,
    fingerprint: String,
}

fn openssl_cert(dir: &std::path::Path, name: &str, key_args: &[&str]) -> OpensslCert {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.crt"));
    run(Command::new("openssl")
        .args(["genpkey"])
        .args(key_args)
        .arg("-out")
        .arg(&key));
    run(Command::new("openssl")
        .args(["req", "-new", "-x509", "-days", "30", "-subj"])
        .arg(format!("/CN={name}"))
        .args(["-addext", &format!("subjectAltName=DNS:{name}")])
        .arg("-key")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    let fp = run(Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&cert));
    let fingerprint = fp
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_ascii_lowercase();
    OpensslCert {
        cert_pem: std::fs::read_to_string(&cert).unwrap(),
        key_pem: std::fs::read_to_string(&key).unwrap(),
        fingerprint,
    }
}

fn sha256_hex(der: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(der))
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("portcullis-certs-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn uploads_list_meta_and_delete_like_tyk() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let dir = temp_dir("meta");
    let ossl = openssl_cert(
        &dir,
        "ossl.example",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let rsa = openssl_cert(
        &dir,
        "rsa.example",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let pki = rcgen_pki("rc.example");

    let (status, body) = upload(
        &cp,
        "?org_id=org1",
        &format!("{}{}", ossl.cert_pem, ossl.key_pem),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ossl_id = format!("org1{}", ossl.fingerprint);
    assert_eq!(
        body,
        json!({"id": ossl_id, "status": "ok", "message": "Certificate added"})
    );

    let (status, body) = upload(
        &cp,
        "?org_id=org1",
        &format!("{}{}", rsa.cert_pem, rsa.key_pem).replace('\n', "\r\n"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rsa_id = format!("org1{}", rsa.fingerprint);
    assert_eq!(body["id"], rsa_id);

    let chain = format!("{}{}", pki.leaf_pem, pki.ca_pem);
    let (status, body) = upload(&cp, "?org_id=org2", &chain).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rc_id = format!("org2{}", sha256_hex(&pki.leaf_der));
    assert_eq!(body["id"], rc_id);

    // The same certificate again: Tyk's 403, whether or not the key comes along.
    let (status, body) = upload(&cp, "?org_id=org2", &format!("{chain}{}", pki.key_pem)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        json!({"status": "error", "message": format!("Certificate with {rc_id} id already exists")})
    );

    let (status, body) = cp.call(Method::GET, "/tyk/certs", None).await;
    assert_eq!(status, StatusCode::OK);
    let mut all = vec![ossl_id.clone(), rsa_id.clone(), rc_id.clone()];
    all.sort();
    assert_eq!(body, json!({"certs": all}));
    let (_, body) = cp.call(Method::GET, "/tyk/certs?org_id=org2", None).await;
    assert_eq!(body, json!({"certs": [rc_id]}));
    let (_, body) = cp
        .call(Method::GET, "/tyk/certs?org_id=org1&mode=detailed", None)
        .await;
    let detailed = body["certs"].as_array().unwrap();
    assert_eq!(detailed.len(), 2);
    let o = detailed
        .iter()
        .find(|c| c["id"] == ossl_id.as_str())
        .unwrap();
    assert_eq!(o["subject_cn"], "ossl.example");
    assert_eq!(o["issuer_cn"], "ossl.example");
    assert_eq!(o["dns_names"], json!(["ossl.example"]));
    assert_eq!(o["has_private"], true);
    // `openssl req -x509` marks its certificates CA:TRUE (OpenSSL's v3_ca section).
    assert_eq!(o["is_ca"], true);
    assert!(o["not_after"].as_str().unwrap().ends_with('Z'));

    let (status, meta) = cp
        .call(Method::GET, &format!("/tyk/certs/{ossl_id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(meta["id"], ossl_id);
    assert_eq!(
        meta["fingerprint"], ossl.fingerprint,
        "matches openssl's own fingerprint"
    );
    assert_eq!(meta["has_private"], true);
    assert!(
        meta["subject"]
            .as_str()
            .unwrap()
            .contains("CN=ossl.example")
    );
    let (_, meta) = cp
        .call(Method::GET, &format!("/tyk/certs/{rc_id}"), None)
        .await;
    assert_eq!(meta["has_private"], false);
    assert_eq!(meta["is_ca"], false);
    assert_eq!(meta["issuer"], "CN=rc.example CA");
    assert_eq!(meta["dns_names"], json!(["rc.example"]));
    let text = meta.to_string();
    assert!(
        !text.contains("PRIVATE") && !text.contains("sealed:"),
        "{text}"
    );

    let (status, metas) = cp
        .call(
            Method::GET,
            &format!("/tyk/certs/{rc_id},nosuch,{rsa_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let metas = metas.as_array().unwrap();
    assert_eq!(metas.len(), 3);
    assert_eq!(metas[0]["id"], rc_id);
    assert!(metas[1].is_null());
    assert_eq!(metas[2]["fingerprint"], rsa.fingerprint);

    let not_found = json!({"status": "error", "message": "Certificate with given SHA256 fingerprint not found"});
    let (status, body) = cp.call(Method::GET, "/tyk/certs/nosuch", None).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, not_found.clone()));

    let (status, body) = cp
        .call(Method::DELETE, &format!("/tyk/certs/{rsa_id}"), None)
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"status": "ok", "message": "removed"})
        )
    );
    let (status, body) = cp
        .call(Method::DELETE, &format!("/tyk/certs/{rsa_id}"), None)
        .await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, not_found.clone()));
    let (status, _) = cp
        .call(Method::GET, &format!("/tyk/certs/{rsa_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Deleted, it can be uploaded again.
    let (status, _) = upload(&cp, "?org_id=org1", &rsa.cert_pem).await;
    assert_eq!(status, StatusCode::OK);
    let _ = std::fs::remove_dir_all(dir);
}

async fn stored_certificate_rows(db: &TestDb) -> (i64, i64) {
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM certificates")
        .fetch_one(&pool)
        .await
        .unwrap();
    let (changes,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM change_log WHERE kind = 'certificate'")
            .fetch_one(&pool)
            .await
            .unwrap();
    (rows, changes)
}

#[tokio::test]
async fn every_bad_bundle_gets_tyks_403_and_stores_nothing() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let dir = temp_dir("bad");
    let a = openssl_cert(
        &dir,
        "a.example",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let b = openssl_cert(
        &dir,
        "b.example",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let pki = rcgen_pki("rc.example");
    // Expired in 2021, self-signed.
    let mut expired = CertificateParams::new(vec!["old.example".to_string()]).unwrap();
    expired.not_before = rcgen::date_time_ymd(2020, 1, 1);
    expired.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = expired
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap()
        .pem();
    let public = KeyPair::generate().unwrap().public_key_pem();

    let cases = [
        (
            String::new(),
            "Failed to decode certificate. It should be PEM encoded.",
        ),
        (
            "not a certificate".into(),
            "Failed to decode certificate. It should be PEM encoded.",
        ),
        (
            a.key_pem.clone(),
            "Failed to decode certificate. It should be PEM encoded.",
        ),
        (
            format!("{}{}{}", a.cert_pem, a.key_pem, b.key_pem),
            "Found multiple private keys",
        ),
        (
            format!("{}{public}", a.cert_pem),
            "Public keys can't be combined with certificates",
        ),
        (
            format!("{}{}", a.cert_pem, b.key_pem),
            "Certificate and private key do not match",
        ),
        (
            format!("{}{}{}", pki.leaf_pem, pki.ca_pem, b.key_pem),
            "Certificate and private key do not match",
        ),
        (expired, "certificate is expired"),
        (
            a.cert_pem.repeat(17),
            "Too many certificates in the chain (at most 16)",
        ),
        (
            format!("{}{}", a.cert_pem, " ".repeat(300 * 1024)),
            "Certificate bundle is too large (at most 262144 bytes)",
        ),
    ];
    for (bundle, message) in cases {
        let (status, body) = upload(&cp, "?org_id=org1", &bundle).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{message}: {body}");
        assert_eq!(body, json!({"status": "error", "message": message}));
    }
    let (status, body) = upload(&cp, "?org_id=org1&tags=a%20b", &a.cert_pem).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "tags");

    let (_, body) = cp.call(Method::GET, "/tyk/certs", None).await;
    assert_eq!(body, json!({"certs": []}));
    assert_eq!(
        stored_certificate_rows(&db).await,
        (0, 0),
        "no row and no change"
    );
    // A bare public key is accepted, named by its own digest.
    let (status, body) = upload(&cp, "?org_id=org1", &public).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(stored_certificate_rows(&db).await, (1, 1));
    let _ = std::fs::remove_dir_all(dir);
}

/// The key PEM's base64 lines and the DER as hex, as they would appear in a dump.
fn key_traces(key_pem: &str) -> Vec<String> {
    use base64::Engine;
    let b64: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .unwrap();
    let mut traces: Vec<String> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect();
    traces.push(hex::encode(&der));
    // Whatever the line breaks: any 40-character run of the base64.
    traces.extend(
        b64.as_bytes()
            .chunks(40)
            .filter(|c| c.len() == 40)
            .map(|c| String::from_utf8(c.to_vec()).unwrap()),
    );
    traces
}

#[tokio::test]
async fn private_keys_are_sealed_in_every_table() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let dir = temp_dir("rest");
    let rsa_key = dir.join("rsa.key");
    run(Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&rsa_key)
        .arg("2048"));
    let rsa_cert = run(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-x509",
            "-days",
            "30",
            "-subj",
            "/CN=pkcs1.example",
            "-key",
        ])
        .arg(&rsa_key));
    let rsa_key_pem = std::fs::read_to_string(&rsa_key).unwrap();
    assert!(rsa_key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let pki = rcgen_pki("sealed.example");

    let mut ids = Vec::new();
    for bundle in [
        format!("{rsa_cert}{rsa_key_pem}"),
        format!("{}{}{}", pki.key_pem, pki.leaf_pem, pki.ca_pem),
    ] {
        let (status, body) = upload(&cp, "?org_id=org1&tags=edge", &bundle).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let out = Command::new("pg_dump")
        .args(["--data-only", "--no-owner"])
        .arg(&db.url)
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(dump.contains(&ids[0]), "the dump holds the certificates");
    assert!(
        !dump.contains("PRIVATE KEY"),
        "no PEM key header in any table"
    );
    for key in [&rsa_key_pem, &pki.key_pem] {
        for trace in key_traces(key) {
            assert!(!dump.contains(&trace), "key material in the dump: {trace}");
        }
    }
    // Sealed under the certificate label and bound to the id: opens only there.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let (body,): (Value,) = sqlx::query_as("SELECT body FROM certificates WHERE id = $1")
        .bind(&ids[0])
        .fetch_one(&pool)
        .await
        .unwrap();
    let sealed = body["private_key"].as_str().unwrap();
    let key = portcullis_proto::sealed_field::certificate_key(portcullis_tests::ENCRYPTION_SECRET);
    let field = portcullis_proto::model::certificate::PRIVATE_KEY_FIELD;
    let opened = portcullis_proto::sealed_field::open(&key, &ids[0], field, sealed).unwrap();
    assert_eq!(opened.replace('\n', ""), rsa_key_pem.replace('\n', ""));
    assert!(portcullis_proto::sealed_field::open(&key, &ids[1], field, sealed).is_err());
    let api_key = portcullis_proto::sealed_field::key(portcullis_tests::ENCRYPTION_SECRET);
    assert!(portcullis_proto::sealed_field::open(&api_key, &ids[0], field, sealed).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

mod stream {
    use std::time::Duration;

    use portcullis_proto::sync::watch_request::Message as Send;
    use portcullis_proto::sync::watch_response::Message as Got;
    use portcullis_proto::sync::{Ack, Changes, Hello, Resource};
    use portcullis_tests::Cp;
    use portcullis_tests::raw_sync::{RawWatch, join_from};

    pub const CERTIFICATE: i32 = portcullis_proto::sync::ResourceKind::Certificate as i32;

    /// A node of `group` on a raw stream: what it was sent, nothing applied.
    pub struct Node {
        watch: RawWatch,
    }

    impl Node {
        pub async fn join(cp: &Cp, group: &str) -> Self {
            let token = cp.token(group).await;
            let identity = join_from(
                &cp.sync_url(),
                &cp.ca_hash,
                &token,
                &format!("raw-{group}"),
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            )
            .await
            .unwrap();
            let hello = Hello {
                build_version: portcullis_proto::version::BUILD_VERSION.into(),
                capabilities: vec!["keyless".into()],
                ..Default::default()
            };
            let watch = RawWatch::open(&cp.sync_url(), &identity, hello)
                .await
                .unwrap();
            Self { watch }
        }

        /// The whole first snapshot (all chunks), acknowledged.
        pub async fn snapshot(&mut self) -> Vec<Resource> {
            let mut resources = Vec::new();
            loop {
                match self.watch.next(Duration::from_secs(10)).await {
                    Some(Ok(Got::Snapshot(s))) => {
                        resources.extend(s.resources);
                        if s.chunk + 1 == s.chunks {
                            self.ack(s.revision, s.config_hash).await;
                            return resources;
                        }
                    }
                    Some(Ok(Got::Bookmark(_))) => {}
                    other => panic!("expected a snapshot, got {other:?}"),
                }
            }
        }

        /// The next delta reaching `revision`, acknowledged.
        pub async fn changes_to(&mut self, revision: u64) -> Changes {
            loop {
                match self.watch.next(Duration::from_secs(10)).await {
                    Some(Ok(Got::Changes(c))) => {
                        self.ack(c.to_revision, c.config_hash.clone()).await;
                        if c.to_revision >= revision {
                            return c;
                        }
                    }
                    Some(Ok(Got::Bookmark(b))) if b.revision >= revision => {
                        return Changes {
                            to_revision: b.revision,
                            ..Default::default()
                        };
                    }
                    Some(Ok(Got::Bookmark(_))) => {}
                    other => panic!("expected changes, got {other:?}"),
                }
            }
        }

        async fn ack(&self, revision: u64, config_hash: String) {
            self.watch
                .send(Send::Ack(Ack {
                    revision,
                    config_hash,
                    ..Default::default()
                }))
                .await;
        }
    }

    pub fn ids(resources: &[Resource], kind: i32) -> Vec<String> {
        let mut ids: Vec<String> = resources
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.id.clone())
            .collect();
        ids.sort();
        ids
    }
}

async fn head_revision(db: &TestDb) -> u64 {
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let (rev,): (i64,) = sqlx::query_as("SELECT revision FROM revision_counter")
        .fetch_one(&pool)
        .await
        .unwrap();
    rev as u64
}

#[tokio::test]
async fn a_certificate_reaches_only_groups_whose_apis_reference_it() {
    use stream::{CERTIFICATE, Node, ids};
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let server = rcgen_pki("a.example");
    let gateway_wide = rcgen_pki("gw.example");
    let (status, body) = upload(
        &cp,
        "?org_id=o",
        &format!("{}{}", server.leaf_pem, server.key_pem),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let server_id = body["id"].as_str().unwrap().to_owned();
    let (status, body) = upload(&cp, "?org_id=o&tags=b", &gateway_wide.leaf_pem).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let tagged_id = body["id"].as_str().unwrap().to_owned();
    let mut api = portcullis_tests::keyless_api("tls-a", "/tls-a/", "http://127.0.0.1:1/");
    api["tags"] = json!(["a"]);
    api["certificates"] = json!([server_id]);
    cp.create_api(&api).await;

    let mut a = Node::join(&cp, "a").await;
    let mut b = Node::join(&cp, "b").await;
    let got_a = a.snapshot().await;
    let got_b = b.snapshot().await;
    assert_eq!(ids(&got_a, CERTIFICATE), vec![server_id.clone()]);
    assert_eq!(
        ids(&got_b, CERTIFICATE),
        vec![tagged_id.clone()],
        "only the tagged one"
    );
    let record = got_a.iter().find(|r| r.kind == CERTIFICATE).unwrap();
    let record: Value = serde_json::from_slice(&record.body).unwrap();
    assert!(
        record["private_key"]
            .as_str()
            .unwrap()
            .starts_with("sealed:v1:")
    );
    assert!(!record.to_string().contains("PRIVATE KEY"));
    assert!(
        record["certificate_pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );

    // The API moves to b: b receives the certificate in the same delta; a is sent the API's
    // delete and drops the certificate itself, so it is told nothing about it.
    api["tags"] = json!(["b"]);
    let (status, body) = cp.call(Method::PUT, "/tyk/apis/tls-a", Some(&api)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let head = head_revision(&db).await;
    let to_b = b.changes_to(head).await;
    assert_eq!(ids(&to_b.upserts, CERTIFICATE), vec![server_id.clone()]);
    let to_a = a.changes_to(head).await;
    assert!(ids(&to_a.upserts, CERTIFICATE).is_empty());
    assert!(
        to_a.deletes.iter().all(|d| d.kind != CERTIFICATE),
        "{:?}",
        to_a.deletes
    );

    // Deleting the still-referenced certificate reaches b, and a learns nothing.
    let (status, _) = cp
        .call(Method::DELETE, &format!("/tyk/certs/{server_id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let head = head_revision(&db).await;
    let to_b = b.changes_to(head).await;
    assert_eq!(
        to_b.deletes
            .iter()
            .filter(|d| d.kind == CERTIFICATE)
            .map(|d| d.id.clone())
            .collect::<Vec<_>>(),
        vec![server_id.clone()]
    );
    let to_a = a.changes_to(head).await;
    assert!(
        to_a.deletes.is_empty() && to_a.upserts.is_empty(),
        "{to_a:?}"
    );
}

#[tokio::test]
async fn a_key_for_a_certificate_is_named_after_it() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    cp.create_api(&portcullis_tests::keyless_api(
        "orders",
        "/orders/",
        "http://127.0.0.1:1/",
    ))
    .await;
    let dir = temp_dir("keys");
    let client = openssl_cert(
        &dir,
        "client.example",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let session = |certificate: &str| {
        json!({
            "org_id": "org9",
            "access_rights": {"orders": {"api_id": "orders", "versions": ["Default"]}},
            "certificate": certificate,
        })
    };

    // A PEM certificate: added to the store (without a key), and the key derives from it.
    let (status, body) = cp
        .call(Method::POST, "/tyk/keys", Some(&session(&client.cert_pem)))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cert_id = format!("org9{}", client.fingerprint);
    assert_eq!(
        body["key"], cert_id,
        "org id + openssl's sha256 fingerprint"
    );
    let (status, meta) = cp
        .call(Method::GET, &format!("/tyk/certs/{cert_id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(meta["has_private"], false);
    let (status, stored) = cp
        .call(Method::GET, &format!("/tyk/keys/{cert_id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(
        stored["certificate"], cert_id,
        "the session names the store id"
    );

    // The same certificate again: the key exists.
    let (status, body) = cp
        .call(Method::POST, "/tyk/keys/create", Some(&session(&cert_id)))
        .await;
    assert_eq!(
        (status, &body["field"]),
        (StatusCode::BAD_REQUEST, &json!("certificate")),
        "{body}"
    );

    // A store id of a certificate uploaded beforehand, under another org.
    let other = rcgen_pki("other.example");
    let (_, up) = upload(&cp, "?org_id=certorg", &other.leaf_pem).await;
    let other_id = up["id"].as_str().unwrap();
    let (status, body) = cp
        .call(Method::POST, "/tyk/keys/create", Some(&session(other_id)))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["key"], format!("org9{}", sha256_hex(&other.leaf_der)));
    let (_, stored) = cp
        .call(
            Method::GET,
            &format!("/tyk/keys/{}", body["key"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(stored["certificate"], other_id);

    // Refusals name the field and store nothing.
    let public = KeyPair::generate().unwrap().public_key_pem();
    for (path, certificate) in [
        ("/tyk/keys", public),
        ("/tyk/keys", "org9nosuch".to_string()),
        (
            "/tyk/keys",
            format!("{}{}", client.cert_pem, client.key_pem),
        ),
        (
            "/tyk/keys",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_string(),
        ),
        ("/tyk/keys/chosen-name", cert_id.clone()),
    ] {
        let (status, body) = cp
            .call(Method::POST, path, Some(&session(&certificate)))
            .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{path} {certificate:.40}: {body}"
        );
        assert_eq!(body["field"], "certificate", "{body}");
    }
    // Re-posting a certificate's key by name (Tyk's upsert) would drop its binding: refused.
    let derived = format!("org9{}", sha256_hex(&other.leaf_der));
    let (status, body) = cp
        .call(
            Method::POST,
            &format!("/tyk/keys/{derived}"),
            Some(&json!({"org_id": "org9", "access_rights": {"a": {"api_id": "a"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "certificate", "{body}");
    let (_, stored) = cp
        .call(Method::GET, &format!("/tyk/keys/{derived}"), None)
        .await;
    assert_eq!(stored["certificate"], other_id, "the binding stays");
    let (_, keys) = cp.call(Method::GET, "/tyk/keys", None).await;
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    let (_, certs) = cp.call(Method::GET, "/tyk/certs", None).await;
    assert_eq!(certs["certs"].as_array().unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(dir);
}
