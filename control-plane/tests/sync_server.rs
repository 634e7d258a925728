//! The sync server against a real Postgres, with a raw gRPC client over real TLS: join rules,
//! per-call certificate checks, snapshots, per-group deltas and bookmarks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step should stop a test loudly

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use portcullis_control_plane::store::Store;
use portcullis_control_plane::store::changelog::{ChangeKind, NewChange, commit_change};
use portcullis_control_plane::{Config, ControlPlane, start};
use portcullis_proto::sync::sync_client::SyncClient;
use portcullis_proto::sync::watch_request::Message as In;
use portcullis_proto::sync::watch_response::Message as Out;
use portcullis_proto::sync::{Ack, Hello, JoinRequest, WatchRequest, WatchResponse};
use portcullis_proto::version::BUILD_VERSION;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

struct Db {
    url: String,
    name: String,
}

impl Db {
    async fn new() -> Self {
        let base = std::env::var("PORTCULLIS_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("portcullis_cp_sync_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&base)
            .await
            .expect("postgres reachable (DATABASE_URL)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        let mut url = url::Url::parse(&base).unwrap();
        url.set_path(&name);
        Self {
            url: url.to_string(),
            name,
        }
    }

    async fn drop_db(self) {
        let base = std::env::var("PORTCULLIS_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        if let Ok(admin) = sqlx::PgPool::connect(&base).await {
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
        admin_secret: "admin-secret-for-the-sync-server-tests".into(),
        encryption_secret: "encryption-secret-for-the-sync-server-tests".into(),
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

/// A token straight in the table (the management API has its own tests).
async fn token(store: &Store, group: &str, expires_in_secs: i64, max_uses: Option<i32>) -> String {
    use sha2::Digest;
    let id: String = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let secret = format!("{:016x}", rand::random::<u64>());
    sqlx::query(
        "INSERT INTO bootstrap_tokens (id, secret_hash, node_group, expires_at, max_uses)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5)",
    )
    .bind(&id)
    .bind(sha2::Sha256::digest(secret.as_bytes()).to_vec())
    .bind(group)
    .bind(expires_in_secs as f64)
    .bind(max_uses)
    .execute(store.pool())
    .await
    .unwrap();
    format!("{id}.{secret}")
}

async fn write_api(store: &Store, id: &str, tags: &[&str], prev: Option<&[&str]>) -> i64 {
    let tags: Vec<String> = tags.iter().map(|s| s.to_string()).collect();
    let prev: Option<Vec<String>> = prev.map(|p| p.iter().map(|s| s.to_string()).collect());
    let body = json!({"api_id": id, "tags": tags, "proxy": {"listen_path": format!("/{id}/"), "target_url": "http://127.0.0.1:1/"}});
    let mut tx = store.pool().begin().await.unwrap();
    let rev = commit_change(
        &mut tx,
        NewChange {
            kind: ChangeKind::Api,
            resource_id: id,
            body: Some(&body),
            tags: Some(&tags),
            prev_tags: prev.as_deref(),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    rev
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
    group: String,
    client: SyncClient<Channel>,
}

async fn join(
    cp: &ControlPlane,
    ca_pem: &str,
    token: &str,
    expected_group: &str,
) -> Result<Node, tonic::Status> {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec![])
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let mut anon = SyncClient::new(channel(cp.sync_addr, ca_pem, None).await);
    let resp = anon
        .join(JoinRequest {
            bootstrap_token: token.into(),
            csr_der: csr.der().to_vec(),
            node_name: "edge-test".into(),
            expected_group: expected_group.into(),
            version: BUILD_VERSION.into(),
        })
        .await?
        .into_inner();
    let key_der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let client =
        SyncClient::new(channel(cp.sync_addr, ca_pem, Some((resp.certificate_pem, key_der))).await);
    Ok(Node {
        id: resp.node_id,
        group: resp.group,
        client,
    })
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

    async fn ack(&self, revision: u64, hash: &str) {
        let m = WatchRequest {
            message: Some(In::Ack(Ack {
                revision,
                config_hash: hash.into(),
                unserved_apis: Vec::new(),
            })),
        };
        self.tx.send(m).await.unwrap();
    }
}

async fn watch(node: &mut Node, revision: u64, hash: &str) -> Result<Stream, tonic::Status> {
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
        .await?
        .into_inner();
    Ok(Stream { tx, rx })
}

/// Waits until the control plane's tailer has read the change log up to `revision`: rows
/// written straight into the table reach it on its own schedule, and a watch opened before that
/// gets a snapshot of an older head.
async fn wait_head(cp: &ControlPlane, revision: i64) {
    let url = format!("http://{}/metrics", cp.api_addr);
    let admin = "admin-secret-for-the-sync-server-tests";
    let seen = async {
        loop {
            let text = reqwest::Client::new()
                .get(&url)
                .header("x-tyk-authorization", admin)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let head = text
                .lines()
                .find_map(|l| l.strip_prefix("portcullis_sync_head_revision "))
                .and_then(|v| v.trim().parse::<i64>().ok());
            if head.is_some_and(|h| h >= revision) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .expect("the tailer reaches the revision");
}

async fn ca_pem(store: &Store) -> String {
    store.load_node_ca().await.unwrap().unwrap().0
}

#[tokio::test]
async fn join_then_snapshot_then_group_filtered_changes() {
    let db = Db::new().await;
    let cp = control_plane(&db).await;
    let store = Store::connect(&db.url, 4).await.unwrap();
    let ca = ca_pem(&store).await;
    write_api(&store, "shared", &[], None).await;
    write_api(&store, "eu-only", &["eu"], None).await;
    write_api(&store, "us-only", &["us"], None).await;
    wait_head(&cp, 3).await;

    let t = token(&store, "eu", 3600, None).await;
    let mut node = join(&cp, &ca, &t, "eu").await.unwrap();
    assert_eq!(node.group, "eu");
    let mut s = watch(&mut node, 0, "").await.unwrap();
    let Out::Snapshot(snap) = s.next().await else {
        panic!("expected a snapshot")
    };
    assert_eq!(
        (snap.revision, snap.chunk, snap.chunks, snap.reason.as_str()),
        (3, 0, 1, "no_config")
    );
    let mut ids: Vec<_> = snap.resources.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["eu-only", "shared"]);
    s.ack(3, &snap.config_hash).await;

    // A change for us only: eu gets a bookmark at the new head, same hash.
    write_api(&store, "us-2", &["us"], None).await;
    let Out::Bookmark(b) = s.next().await else {
        panic!("expected a bookmark")
    };
    assert_eq!(
        (b.revision, b.config_hash.as_str()),
        (4, snap.config_hash.as_str())
    );

    // Moving eu-only to us: eu is told to delete it.
    write_api(&store, "eu-only", &["us"], Some(&["eu"])).await;
    let Out::Changes(c) = s.next().await else {
        panic!("expected changes")
    };
    assert_eq!((c.from_revision, c.to_revision), (4, 5));
    assert!(c.upserts.is_empty());
    assert_eq!(
        c.deletes.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["eu-only"]
    );
    s.ack(5, &c.config_hash).await;

    // The node registry records the ACK.
    let acked = async {
        loop {
            let (rev,): (i64,) = sqlx::query_as("SELECT acked_revision FROM nodes")
                .fetch_one(store.pool())
                .await
                .unwrap();
            if rev == 5 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), acked)
        .await
        .expect("ACK recorded");

    // Resuming at an old revision gives the changes since, not a snapshot.
    drop(s);
    let mut s = watch(&mut node, 3, &snap.config_hash).await.unwrap();
    let Out::Changes(c) = s.next().await else {
        panic!("expected changes on resume")
    };
    assert_eq!((c.from_revision, c.to_revision, c.deletes.len()), (3, 5, 1));
    // Resuming at head with a wrong hash gives a snapshot.
    let mut s2 = watch(&mut node, 5, "sha256:wrong").await.unwrap();
    let Out::Snapshot(snap) = s2.next().await else {
        panic!("expected a snapshot")
    };
    assert_eq!(snap.reason, "hash_mismatch");
    db.drop_db().await;
}

#[tokio::test]
async fn join_is_refused_for_bad_tokens_and_wrong_group() {
    let db = Db::new().await;
    let cp = control_plane(&db).await;
    let store = Store::connect(&db.url, 4).await.unwrap();
    let ca = ca_pem(&store).await;
    let code_and_msg = |r: Result<Node, tonic::Status>| match r {
        Ok(_) => panic!("join should fail"),
        Err(s) => (s.code(), s.message().to_owned()),
    };

    let (code, msg) = code_and_msg(join(&cp, &ca, "abcdef.0123456789abcdef", "").await);
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert!(msg.contains("unknown"), "{msg}");

    let good = token(&store, "eu", 3600, None).await;
    let wrong_secret = format!("{}.{}", good.split('.').next().unwrap(), "ffffffffffffffff");
    assert_eq!(
        code_and_msg(join(&cp, &ca, &wrong_secret, "").await).0,
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        code_and_msg(join(&cp, &ca, "no-dot", "").await).0,
        tonic::Code::PermissionDenied
    );

    let expired = token(&store, "eu", -1, None).await;
    let (code, msg) = code_and_msg(join(&cp, &ca, &expired, "").await);
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert!(msg.contains("expired"), "{msg}");

    let revoked = token(&store, "eu", 3600, None).await;
    sqlx::query("UPDATE bootstrap_tokens SET revoked_at = now()")
        .execute(store.pool())
        .await
        .unwrap();
    let (_, msg) = code_and_msg(join(&cp, &ca, &revoked, "").await);
    assert!(msg.contains("revoked"), "{msg}");

    let once = token(&store, "us", 3600, Some(1)).await;
    join(&cp, &ca, &once, "us").await.unwrap();
    let (_, msg) = code_and_msg(join(&cp, &ca, &once, "us").await);
    assert!(msg.contains("no uses left"), "{msg}");

    let other = token(&store, "us", 3600, None).await;
    let (code, msg) = code_and_msg(join(&cp, &ca, &other, "eu").await);
    assert_eq!(code, tonic::Code::FailedPrecondition);
    assert!(msg.contains("\"eu\"") && msg.contains("\"us\""), "{msg}");
    db.drop_db().await;
}

#[tokio::test]
async fn watch_needs_a_valid_unrevoked_node_certificate() {
    let db = Db::new().await;
    let cp = control_plane(&db).await;
    let store = Store::connect(&db.url, 4).await.unwrap();
    let ca = ca_pem(&store).await;

    // No client certificate at all.
    let mut anon = Node {
        id: "x".into(),
        group: String::new(),
        client: SyncClient::new(channel(cp.sync_addr, &ca, None).await),
    };
    let status = watch(&mut anon, 0, "").await.err().expect("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // A certificate from another CA does not even pass the handshake.
    let rogue_ca_key = rcgen::KeyPair::generate().unwrap();
    let mut rogue_params = rcgen::CertificateParams::new(vec![]).unwrap();
    rogue_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, uuid::Uuid::new_v4().to_string());
    let rogue = rogue_params.self_signed(&rogue_ca_key).unwrap();
    let key = PrivateKeyDer::try_from(rogue_ca_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![rogue.der().clone()], key)
        .unwrap();
    let tcp = TcpStream::connect(cp.sync_addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    // TLS 1.3 reports a refused client certificate on the first read.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let mut buf = [0u8; 16];
    assert!(
        tls.read(&mut buf).await.is_err(),
        "a foreign client certificate must be refused"
    );

    // A revoked node is refused.
    let t = token(&store, "eu", 3600, None).await;
    let mut node = join(&cp, &ca, &t, "").await.unwrap();
    let mut s = watch(&mut node, 0, "").await.unwrap();
    assert!(matches!(s.next().await, Out::Snapshot(_)));
    sqlx::query("UPDATE nodes SET revoked_at = now()")
        .execute(store.pool())
        .await
        .unwrap();
    let status = watch(&mut node, 0, "")
        .await
        .err()
        .expect("revoked node refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    // ...and its open stream is cut off within seconds.
    let cut = tokio::time::timeout(Duration::from_secs(10), s.rx.message())
        .await
        .expect("stream closed within 10 s");
    assert_eq!(
        cut.err().map(|e| e.code()),
        Some(tonic::Code::PermissionDenied)
    );
    db.drop_db().await;
}

#[tokio::test]
async fn compaction_keeps_what_retention_and_live_nodes_need() {
    use portcullis_control_plane::store::changelog::Retention;
    let db = Db::new().await;
    let store = Store::connect(&db.url, 4).await.unwrap();
    store.migrate().await.unwrap();
    for i in 0..20 {
        write_api(&store, &format!("api{i}"), &[], None).await;
    }
    let count = |store: Store| async move {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM change_log")
            .fetch_one(store.pool())
            .await
            .unwrap();
        n
    };
    // Everything is younger than the age rule: nothing goes.
    let young = Retention {
        min_revisions: 5,
        min_age_secs: 3600,
        node_seen_within_secs: 3600,
        node_hold_max_secs: 7 * 24 * 3600,
    };
    assert_eq!(store.compact_change_log(young).await.unwrap(), 0);
    // A live node at revision 8 pins the log there even when age and count would allow more.
    sqlx::query(
        "INSERT INTO nodes (id, name, node_group, version, cert_serial, cert_expires_at, acked_revision, last_seen)
         VALUES ($1, 'n', 'eu', '0.1.0', 's', now(), 8, now())",
    )
    .bind(uuid::Uuid::new_v4())
    .execute(store.pool())
    .await
    .unwrap();
    let old = Retention {
        min_revisions: 5,
        min_age_secs: 0,
        node_seen_within_secs: 3600,
        node_hold_max_secs: 7 * 24 * 3600,
    };
    assert_eq!(store.compact_change_log(old).await.unwrap(), 8);
    assert_eq!(count(store.clone()).await, 12);
    // Once the node is gone, the count rule keeps the newest 5.
    sqlx::query("UPDATE nodes SET last_seen = now() - interval '2 hours'")
        .execute(store.pool())
        .await
        .unwrap();
    store.compact_change_log(old).await.unwrap();
    assert_eq!(count(store.clone()).await, 5);
    assert_eq!(store.oldest_retained_revision().await.unwrap(), Some(16));
    db.drop_db().await;
}

#[tokio::test]
async fn a_stuck_node_holds_the_log_no_longer_than_the_age_bound() {
    use portcullis_control_plane::store::changelog::Retention;
    let db = Db::new().await;
    let store = Store::connect(&db.url, 4).await.unwrap();
    store.migrate().await.unwrap();
    for i in 0..20 {
        write_api(&store, &format!("api{i}"), &[], None).await;
    }
    // Revisions 1..=15 were committed ten days ago, 16..=20 just now.
    sqlx::query(
        "UPDATE change_log SET committed_at = now() - interval '10 days' WHERE revision <= 15",
    )
    .execute(store.pool())
    .await
    .unwrap();
    // A node connected all along (seen now) that never ACKed past revision 2.
    sqlx::query(
        "INSERT INTO nodes (id, name, node_group, version, cert_serial, cert_expires_at, acked_revision, last_seen, connected)
         VALUES ($1, 'stuck', 'eu', '0.1.0', 's', now() + interval '1 day', 2, now(), true)",
    )
    .bind(uuid::Uuid::new_v4())
    .execute(store.pool())
    .await
    .unwrap();
    let retention = Retention {
        min_revisions: 1,
        min_age_secs: 24 * 3600,
        node_seen_within_secs: 3600,
        node_hold_max_secs: 7 * 24 * 3600,
    };
    // Before the bound, the stuck node kept everything after revision 2 for ever.
    assert_eq!(store.compact_change_log(retention).await.unwrap(), 15);
    assert_eq!(store.oldest_retained_revision().await.unwrap(), Some(16));
    // A bound longer than the log's age leaves the node's pin in force.
    for i in 20..25 {
        write_api(&store, &format!("api{i}"), &[], None).await;
    }
    sqlx::query("UPDATE nodes SET acked_revision = 17")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE change_log SET committed_at = now() - interval '3 days'")
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(store.compact_change_log(retention).await.unwrap(), 2);
    assert_eq!(store.oldest_retained_revision().await.unwrap(), Some(18));
    db.drop_db().await;
}

#[tokio::test]
async fn key_writes_stream_as_session_events_and_lookups_need_a_node_certificate() {
    use portcullis_proto::sync::LookupSessionRequest;
    let db = Db::new().await;
    let cp = control_plane(&db).await;
    let store = Store::connect(&db.url, 4).await.unwrap();
    let ca = ca_pem(&store).await;
    let t = token(&store, "eu", 3600, None).await;
    let mut node = join(&cp, &ca, &t, "eu").await.unwrap();
    let mut s = watch(&mut node, 0, "").await.unwrap();
    let Out::Snapshot(snap) = s.next().await else {
        panic!("expected a snapshot")
    };
    s.ack(0, &snap.config_hash).await;

    let hash = portcullis_proto::key_hash::key_hash("my-key");
    store
        .put_key(&hash, &json!({"rate": 5, "access_rights": {}}), None)
        .await
        .unwrap();
    let Out::Changes(c) = s.next().await else {
        panic!("expected changes")
    };
    assert_eq!(c.session_events.len(), 1);
    assert_eq!(
        (
            c.session_events[0].key_hash.as_str(),
            c.session_events[0].revoked
        ),
        (hash.as_str(), false)
    );
    assert_eq!(
        c.config_hash, snap.config_hash,
        "keys do not change the configuration hash"
    );

    let found = node
        .client
        .lookup_session(LookupSessionRequest {
            key_hash: hash.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(found.found);
    assert_eq!(found.revision, 1);
    let session: serde_json::Value = serde_json::from_slice(&found.session_json).unwrap();
    assert_eq!(session["rate"], 5);
    let missing = node
        .client
        .lookup_session(LookupSessionRequest {
            key_hash: "00".repeat(32),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!missing.found);
    let bad = node
        .client
        .lookup_session(LookupSessionRequest {
            key_hash: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    store.delete_key(&hash).await.unwrap();
    let Out::Changes(c) = s.next().await else {
        panic!("expected changes")
    };
    assert!(c.session_events[0].revoked);
    assert_eq!(c.session_events[0].revision, 2);

    let mut anonymous = SyncClient::new(channel(cp.sync_addr, &ca, None).await);
    let refused = anonymous
        .lookup_session(LookupSessionRequest { key_hash: hash })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    db.drop_db().await;
}
