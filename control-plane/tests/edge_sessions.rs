//! Sessions made at the edge (`ReportSessions`) and JWKS cache flushes against a real Postgres,
//! with a raw gRPC client over real TLS: what a report may store, what operators see and revoke,
//! tombstones that late reports cannot undo, and flushes streamed as `CacheFlush`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step should stop a test loudly

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use portcullis_control_plane::store::Store;
use portcullis_control_plane::{Config, ControlPlane, start};
use portcullis_proto::key_hash::key_hash;
use portcullis_proto::sync::sync_client::SyncClient;
use portcullis_proto::sync::watch_request::Message as In;
use portcullis_proto::sync::watch_response::Message as Out;
use portcullis_proto::sync::{
    Ack, Hello, JoinRequest, LookupSessionRequest, LookupSessionResponse, ReportSessionsRequest,
    ReportedSession, WatchRequest, WatchResponse,
};
use portcullis_proto::version::BUILD_VERSION;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

const ADMIN: &str = "admin-secret-for-the-edge-session-tests";

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
        let name = format!("portcullis_cp_edge_{}", uuid::Uuid::new_v4().simple());
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
        encryption_secret: "encryption-secret-for-the-edge-session-tests".into(),
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

async fn token(store: &Store, group: &str) -> String {
    use sha2::Digest;
    let id: String = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let secret = format!("{:016x}", rand::random::<u64>());
    sqlx::query(
        "INSERT INTO bootstrap_tokens (id, secret_hash, node_group, expires_at)
         VALUES ($1, $2, $3, now() + interval '1 hour')",
    )
    .bind(&id)
    .bind(sha2::Sha256::digest(secret.as_bytes()).to_vec())
    .bind(group)
    .execute(store.pool())
    .await
    .unwrap();
    format!("{id}.{secret}")
}

async fn channel(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<(String, PrivateKeyDer<'static>)>,
) -> Channel {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert_pem, key)) => {
            let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let tls = connector
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .unwrap()
}

struct Node {
    id: String,
    client: SyncClient<Channel>,
}

async fn join(cp: &ControlPlane, store: &Store) -> (Node, String) {
    let ca_pem = store.load_node_ca().await.unwrap().unwrap().0;
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec![])
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let mut anon = SyncClient::new(channel(cp.sync_addr, &ca_pem, None).await);
    let resp = anon
        .join(JoinRequest {
            bootstrap_token: token(store, "eu").await,
            csr_der: csr.der().to_vec(),
            node_name: "edge-test".into(),
            expected_group: "eu".into(),
            version: BUILD_VERSION.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let key_der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let client = SyncClient::new(
        channel(cp.sync_addr, &ca_pem, Some((resp.certificate_pem, key_der))).await,
    );
    (
        Node {
            id: resp.node_id,
            client,
        },
        ca_pem,
    )
}

struct Stream {
    tx: mpsc::Sender<WatchRequest>,
    rx: tonic::Streaming<WatchResponse>,
}

impl Stream {
    async fn next(&mut self) -> Out {
        let msg = tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("message within 10 s");
        msg.unwrap().unwrap().message.unwrap()
    }

    /// The next message that is not a bookmark.
    async fn next_changes(&mut self) -> portcullis_proto::sync::Changes {
        loop {
            match self.next().await {
                Out::Changes(c) => return c,
                Out::Bookmark(_) => {}
                other => panic!("expected changes, got {other:?}"),
            }
        }
    }
}

async fn watch(node: &mut Node, revision: u64, hash: &str) -> Stream {
    let (tx, rx) = mpsc::channel(8);
    tx.send(WatchRequest {
        message: Some(In::Hello(Hello {
            node_id: node.id.clone(),
            protocol_version: portcullis_proto::PROTOCOL_VERSION,
            capabilities: vec![],
            build_version: BUILD_VERSION.into(),
            last_revision: revision,
            config_hash: hash.into(),
        })),
    })
    .await
    .unwrap();
    let rx = node
        .client
        .watch(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    Stream { tx, rx }
}

async fn ack(stream: &Stream, revision: u64, hash: &str) {
    stream
        .tx
        .send(WatchRequest {
            message: Some(In::Ack(Ack {
                revision,
                config_hash: hash.into(),
                unserved_apis: Vec::new(),
            })),
        })
        .await
        .unwrap();
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

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

/// A session as an edge makes it for a JWT identity (docs/keys.md).
fn edge_session(key_id: &str, org: &str, created: chrono::DateTime<chrono::Utc>) -> Value {
    json!({
        "org_id": org,
        "alias": "alice@example.com",
        "apply_policies": ["p1"],
        "meta_data": {"TykJWTSessionID": key_id},
        "expires": chrono::Utc::now().timestamp() + 3600,
        "date_created": created.to_rfc3339(),
        "access_rights": {"a": {"api_id": "a", "versions": ["Default"]}},
        "rate": 1000000,
        "per": 1,
        "jwt_data": {"secret": "not-kept"},
    })
}

fn report_of(key_id: &str, session: &Value) -> ReportedSession {
    ReportedSession {
        key_hash: key_hash(key_id),
        session_json: session.to_string().into_bytes(),
        origin: "jwt".into(),
    }
}

async fn report(node: &mut Node, sessions: Vec<ReportedSession>) -> Result<(), tonic::Status> {
    node.client
        .report_sessions(ReportSessionsRequest { sessions })
        .await
        .map(|_| ())
}

async fn lookup(node: &mut Node, hash: &str) -> LookupSessionResponse {
    node.client
        .lookup_session(LookupSessionRequest {
            key_hash: hash.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

fn session_of(found: &LookupSessionResponse) -> Value {
    serde_json::from_slice(&found.session_json).unwrap()
}

#[tokio::test]
async fn reported_sessions_are_bounded_listed_revoked_and_never_resurrected() {
    let db = Db::new().await;
    let cp = control_plane(&db).await;
    let store = Store::connect(&db.url, 4).await.unwrap();
    let api = Api::new(&cp);
    let (mut node, ca) = join(&cp, &store).await;
    let (status, _) = api
        .call(
            reqwest::Method::POST,
            "/tyk/policies",
            Some(json!({"id": "p1", "org_id": "o1", "rate": 10, "per": 1,
                "access_rights": {"a": {"api_id": "a", "versions": ["Default"]}}})),
        )
        .await;
    assert_eq!(status, 200);

    // Accepted, reduced to the kept fields, visible to lookups and to operators.
    let id = format!("o1{}", "0123456789abcdef".repeat(2));
    let hash = key_hash(&id);
    let now = chrono::Utc::now();
    report(
        &mut node,
        vec![report_of(&id, &edge_session(&id, "o1", now))],
    )
    .await
    .unwrap();
    let found = lookup(&mut node, &hash).await;
    assert!(found.found);
    assert_eq!((found.origin.as_str(), found.revoked_at), ("jwt", 0));
    let s = session_of(&found);
    assert_eq!(s["alias"], "alice@example.com");
    assert_eq!(s["access_rights"], json!({}), "a report grants no rights");
    for dropped in ["rate", "per", "jwt_data"] {
        assert!(s.get(dropped).is_none(), "{dropped} kept");
    }
    let (status, list) = api.get("/tyk/keys").await;
    assert_eq!(status, 200);
    assert!(list["keys"].as_array().unwrap().contains(&json!(hash)));
    let (status, got) = api.get(&format!("/tyk/keys/{hash}?hashed=true")).await;
    assert_eq!(
        (status, got["alias"].as_str()),
        (200, Some("alice@example.com"))
    );
    let (reporter, delete_at): (Option<uuid::Uuid>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT reported_by, delete_at FROM keys WHERE key_hash = $1")
            .bind(&hash)
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(reporter.map(|u| u.to_string()), Some(node.id.clone()));
    let expires = s["expires"].as_i64().unwrap();
    assert_eq!(delete_at.unwrap().timestamp(), expires + 24 * 3600);

    // A session that does not name its key, or breaks a bound, refuses the call.
    let mut wrong = report_of(&id, &edge_session(&id, "o1", now));
    wrong.key_hash = key_hash("someone-else");
    let mut bad_hex = report_of(&id, &edge_session(&id, "o1", now));
    bad_hex.key_hash = "zz".repeat(32);
    let mut upper = report_of(&id, &edge_session(&id, "o1", now));
    upper.key_hash = upper.key_hash.to_ascii_uppercase();
    let mut big_session = edge_session(&id, "o1", now);
    big_session["meta_data"]["pad"] = json!("x".repeat(64 * 1024));
    let mut origin = report_of(&id, &edge_session(&id, "o1", now));
    origin.origin = String::new();
    let too_many = vec![report_of(&id, &edge_session(&id, "o1", now)); 257];
    for (what, batch) in [
        ("hash mismatch", vec![wrong]),
        ("bad hex", vec![bad_hex]),
        ("uppercase hex", vec![upper]),
        ("oversize JSON", vec![report_of(&id, &big_session)]),
        ("no origin", vec![origin]),
        ("257 sessions", too_many),
    ] {
        let refused = report(&mut node, batch).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{what}");
    }

    // An operator's key is never overwritten by a report.
    let (status, _) = api
        .call(
            reqwest::Method::POST,
            "/tyk/keys/operator-key",
            Some(json!({"rate": 5, "per": 1, "access_rights": {"a": {"api_id": "a", "versions": ["Default"]}}})),
        )
        .await;
    assert_eq!(status, 200);
    report(
        &mut node,
        vec![report_of(
            "operator-key",
            &edge_session("operator-key", "o1", now),
        )],
    )
    .await
    .unwrap();
    let op = lookup(&mut node, &key_hash("operator-key")).await;
    assert_eq!(op.origin, "");
    assert_eq!(session_of(&op)["rate"], 5);

    // A session applying a policy of another org is not stored; one naming a policy that does
    // not exist yet is (an API may name a policy created later).
    let later = format!("o1{}", "e".repeat(32));
    let mut pending = edge_session(&later, "o1", now);
    pending["apply_policies"] = json!(["created-later"]);
    report(&mut node, vec![report_of(&later, &pending)])
        .await
        .unwrap();
    assert!(lookup(&mut node, &key_hash(&later)).await.found);
    let foreign = format!("o2{}", "f".repeat(32));
    report(
        &mut node,
        vec![report_of(&foreign, &edge_session(&foreign, "o2", now))],
    )
    .await
    .unwrap();
    assert!(!lookup(&mut node, &key_hash(&foreign)).await.found);

    // DELETE makes a tombstone, streamed as a revocation to every edge at once.
    let mut stream = watch(&mut node, 0, "").await;
    let Out::Snapshot(snap) = stream.next().await else {
        panic!("expected a snapshot")
    };
    ack(&stream, snap.revision, &snap.config_hash).await;
    let (status, _) = api.delete(&format!("/tyk/keys/{hash}?hashed=true")).await;
    assert_eq!(status, 200);
    let c = stream.next_changes().await;
    assert_eq!(c.session_events.len(), 1);
    assert_eq!(
        (
            c.session_events[0].key_hash.as_str(),
            c.session_events[0].revoked
        ),
        (hash.as_str(), true)
    );
    let tomb = lookup(&mut node, &hash).await;
    assert!(tomb.found, "a tombstone is found, with its revocation time");
    assert_eq!(tomb.origin, "jwt");
    assert!(
        tomb.revoked_at >= now.timestamp() && tomb.revoked_at <= chrono::Utc::now().timestamp()
    );
    assert_eq!(session_of(&tomb)["alias"], "alice@example.com");
    assert_eq!(
        api.get(&format!("/tyk/keys/{hash}?hashed=true")).await.0,
        404
    );
    let (_, list) = api.get("/tyk/keys").await;
    assert!(!list["keys"].as_array().unwrap().contains(&json!(hash)));
    let (status, body) = api.delete(&format!("/tyk/keys/{hash}?hashed=true")).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("There is no such key found"))
    );
    let (status, _) = api
        .call(
            reqwest::Method::PUT,
            &format!("/tyk/keys/{hash}?hashed=true"),
            Some(json!({"apply_policies": ["p1"]})),
        )
        .await;
    assert_eq!(status, 404, "a tombstone cannot be updated");
    // The lifetime sweeper leaves it alone, even with its old delete_at long gone.
    assert_eq!(store.sweep_expired_keys().await.unwrap(), 0);

    // A late report (a session made before the revocation) does not bring it back...
    report(
        &mut node,
        vec![report_of(
            &id,
            &edge_session(&id, "o1", now - chrono::Duration::hours(1)),
        )],
    )
    .await
    .unwrap();
    let still = lookup(&mut node, &hash).await;
    assert_eq!(still.revoked_at, tomb.revoked_at);
    // ...a session made after it (a new token) replaces the tombstone.
    report(
        &mut node,
        vec![report_of(
            &id,
            &edge_session(&id, "o1", chrono::Utc::now() + chrono::Duration::seconds(2)),
        )],
    )
    .await
    .unwrap();
    let back = lookup(&mut node, &hash).await;
    assert_eq!(
        (back.found, back.revoked_at, back.origin.as_str()),
        (true, 0, "jwt")
    );
    // ...and carries the revocation as a floor the edges check, whatever the report said;
    // a report cannot lower it either.
    let floor = session_of(&back)["portcullis_tokens_after"].clone();
    assert_eq!(floor, json!(tomb.revoked_at), "{}", session_of(&back));
    assert_eq!(session_of(&back)["portcullis_origin"], "jwt");
    let mut lowered = edge_session(&id, "o1", chrono::Utc::now() + chrono::Duration::seconds(3));
    lowered["portcullis_tokens_after"] = json!(0);
    report(&mut node, vec![report_of(&id, &lowered)])
        .await
        .unwrap();
    assert_eq!(
        session_of(&lookup(&mut node, &hash).await)["portcullis_tokens_after"],
        floor
    );
    assert_eq!(
        api.get(&format!("/tyk/keys/{hash}?hashed=true")).await.0,
        200
    );

    // PUT keeps it edge-made; POST by its key id makes it the operator's.
    let (status, _) = api
        .call(
            reqwest::Method::PUT,
            &format!("/tyk/keys/{hash}?hashed=true"),
            Some(json!({"apply_policies": ["p1"], "org_id": "o1", "meta_data": {"TykJWTSessionID": id}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(lookup(&mut node, &hash).await.origin, "jwt");
    let (status, _) = api
        .call(
            reqwest::Method::POST,
            &format!("/tyk/keys/{id}"),
            Some(json!({"apply_policies": ["p1"], "org_id": "o1"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(lookup(&mut node, &hash).await.origin, "");

    // Reports commit nothing to the change log: no session event per report.
    let (kinds,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM change_log WHERE kind = 'session' AND resource_id = $1",
    )
    .bind(&hash)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(kinds, 3, "DELETE, PUT and POST only");

    // Each node has a rate bound on what it reports.
    let burst: Vec<ReportedSession> = (0..256)
        .map(|i| {
            let id = format!("o1{i:032x}");
            report_of(&id, &edge_session(&id, "o1", now))
        })
        .collect();
    // At once, so that a slow machine cannot refill the bucket between calls: 24 × 256
    // sessions is three times the burst.
    let calls = (0..24).map(|_| {
        let mut client = node.client.clone();
        let sessions = burst.clone();
        async move {
            client
                .report_sessions(ReportSessionsRequest { sessions })
                .await
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let exhausted: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(!exhausted.is_empty(), "rate bound reached");
    assert!(
        exhausted
            .iter()
            .all(|e| e.code() == tonic::Code::ResourceExhausted),
        "{exhausted:?}"
    );

    let (_, metrics) = api.get("/metrics").await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    for outcome in ["accepted", "skipped", "refused"] {
        assert!(
            metrics.contains(&format!(
                "portcullis_sync_reported_sessions_total{{outcome=\"{outcome}\"}}"
            )),
            "{outcome} counted"
        );
    }

    // Only a registered, unrevoked node may report.
    sqlx::query("UPDATE nodes SET revoked_at = now()")
        .execute(store.pool())
        .await
        .unwrap();
    let one = report_of(&id, &edge_session(&id, "o1", chrono::Utc::now()));
    let refused = report(&mut node, vec![one.clone()]).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let mut anonymous = Node {
        id: String::new(),
        client: SyncClient::new(channel(cp.sync_addr, &ca, None).await),
    };
    let refused = report(&mut anonymous, vec![one]).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    db.drop_db().await;
}

#[tokio::test]
async fn jwks_flushes_stream_to_edges_as_cache_flushes() {
    let db = Db::new().await;
    let cp = control_plane(&db).await;
    let store = Store::connect(&db.url, 4).await.unwrap();
    let api = Api::new(&cp);
    let (mut node, _) = join(&cp, &store).await;
    let mut stream = watch(&mut node, 0, "").await;
    let Out::Snapshot(snap) = stream.next().await else {
        panic!("expected a snapshot")
    };
    ack(&stream, snap.revision, &snap.config_hash).await;

    let (status, body) = api.delete("/tyk/cache/jwks/api-1").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"status": "ok", "message": "cache invalidated"})
    );
    let c = stream.next_changes().await;
    assert_eq!(c.cache_flushes.len(), 1);
    let f = &c.cache_flushes[0];
    assert_eq!(
        (f.cache.as_str(), f.api_id.as_str(), f.revision),
        ("jwks", "api-1", 1)
    );
    assert_eq!(
        c.config_hash, snap.config_hash,
        "a flush is not configuration"
    );
    assert!(c.upserts.is_empty() && c.deletes.is_empty() && c.session_events.is_empty());
    ack(&stream, c.to_revision, &c.config_hash).await;

    let (status, body) = api.delete("/tyk/cache/jwks").await;
    assert_eq!(
        (status, body["message"].as_str()),
        (200, Some("cache invalidated"))
    );
    let c = stream.next_changes().await;
    assert_eq!(c.cache_flushes.len(), 1);
    assert_eq!(
        (
            c.cache_flushes[0].api_id.as_str(),
            c.cache_flushes[0].revision
        ),
        ("", 2)
    );

    // The log rows: kind cache, every group.
    type Row = (i64, String, String, String, Option<Vec<String>>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT revision, kind, resource_id, op, tags FROM change_log ORDER BY revision",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (
                1,
                "cache".into(),
                "jwks:api-1".into(),
                "upsert".into(),
                Some(vec![])
            ),
            (
                2,
                "cache".into(),
                "jwks:*".into(),
                "upsert".into(),
                Some(vec![])
            ),
        ]
    );

    // A node resuming from before them gets both, in revision order; a new node's snapshot
    // holds no trace of them.
    let mut resumed = watch(&mut node, 0, &snap.config_hash).await;
    let c = resumed.next_changes().await;
    let got: Vec<(&str, u64)> = c
        .cache_flushes
        .iter()
        .map(|f| (f.api_id.as_str(), f.revision))
        .collect();
    assert_eq!(got, [("api-1", 1), ("", 2)]);
    let mut fresh = watch(&mut node, 0, "").await;
    let Out::Snapshot(again) = fresh.next().await else {
        panic!("expected a snapshot")
    };
    assert_eq!(
        (again.revision, again.config_hash.as_str()),
        (2, snap.config_hash.as_str())
    );
    assert!(again.resources.is_empty());

    // API ids follow the API rules; the admin secret is required.
    assert_eq!(api.delete("/tyk/cache/jwks/a%2Fb").await.0, 400);
    assert_eq!(api.delete("/tyk/cache/jwks/a%20b").await.0, 400);
    assert_eq!(api.delete("/tyk/cache/jwks/a%01b").await.0, 404);
    assert_eq!(api.delete("/tyk/cache/jwks/a%00b").await.0, 404);
    let anonymous = api
        .http
        .delete(format!("http://{}/tyk/cache/jwks", cp.api_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 403);
    assert_eq!(
        store.head_revision().await.unwrap(),
        2,
        "refusals commit nothing"
    );
    db.drop_db().await;
}
