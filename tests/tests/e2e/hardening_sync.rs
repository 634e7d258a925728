//! Issue 10, items 7 and 9 on the sync port: exact revocation across replicas, a revoked edge
//! that backs off, and bounds on what unauthenticated clients and misbehaving nodes can make
//! the control plane do.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use portcullis_control_plane::sync::SyncLimits;
use portcullis_proto::sync::watch_request::Message as Send;
use portcullis_proto::sync::watch_response::Message as Got;
use portcullis_proto::sync::{Hello, Nack};
use portcullis_tests::raw_sync::{RawWatch, join_from};
use portcullis_tests::{Cp, CpOptions, Dp, DpOptions, TestDb, eventually, keyless_api};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// "Another host" on the loopback network.
const OTHER_HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A TCP relay that counts the connections made through it: a gateway's connect attempts.
struct CountingRelay {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingRelay {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self {
            addr,
            accepted,
            task,
        }
    }

    fn url(&self) -> url::Url {
        url::Url::parse(&format!("https://127.0.0.1:{}", self.addr.port())).unwrap()
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Python's `http.server` as the upstream: a server we did not write.
struct PythonUpstream {
    child: Child,
    port: u16,
}

impl PythonUpstream {
    async fn start() -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        eventually(
            Duration::from_secs(10),
            "python upstream listening",
            || async {
                TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for PythonUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn cp_with(db: &TestDb, name: &str, limits: SyncLimits) -> Cp {
    Cp::start_with(
        &db.url,
        CpOptions {
            replica: Some(name.into()),
            sync_limits: Some(limits),
            ..Default::default()
        },
    )
    .await
    .expect("control plane starts")
}

async fn metrics(cp: &Cp) -> String {
    let (status, body) = cp.call(Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    body.as_str().unwrap_or_default().to_owned()
}

/// The value of the first series whose line starts with `prefix` (0 when absent).
fn series(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn node(cp: &Cp, id: &str) -> Value {
    let (status, body) = cp
        .call(Method::GET, &format!("/portcullis/nodes/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn a_node_revoked_through_one_replica_gets_nothing_more_from_another() {
    let db = TestDb::new().await;
    let a = Cp::replica(&db.url, "replica-a").await;
    let b = Cp::replica(&db.url, "replica-b").await;
    let upstream = PythonUpstream::start().await;
    let relay = CountingRelay::start(b.sync_addr).await;
    let dp = Dp::start(
        &b,
        DpOptions {
            token: Some(b.token("default").await),
            control_planes: vec![relay.url()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // A fresh database: the API is revision 1, the revocation 2, the next API 3.
    a.create_api(&keyless_api("kept", "/kept/", &upstream.url()))
        .await;
    dp.wait_for_revision(1).await;
    eventually(Duration::from_secs(10), "the API answers 200", || async {
        (dp.get("/kept/").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    let id = dp.node_id().expect("joined");
    eventually(
        Duration::from_secs(5),
        "node connected to replica B",
        || async {
            let n = node(&a, &id).await;
            (n["connected"] == true && n["cp_replica"] == "replica-b").then_some(())
        },
    )
    .await;

    let (status, body) = a
        .call(Method::DELETE, &format!("/portcullis/nodes/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    a.create_api(&keyless_api("after-revocation", "/after/", &upstream.url()))
        .await;
    let after = 3;

    // The registry says "disconnected" only once replica B has closed the stream.
    eventually(
        Duration::from_secs(10),
        "registry shows the node disconnected",
        || async { (node(&a, &id).await["connected"] == false).then_some(()) },
    )
    .await;
    let open = series(
        &metrics(&b).await,
        "portcullis_sync_connected_streams{group=\"default\"}",
    );
    assert_eq!(
        open, 0.0,
        "the registry said disconnected while B still streamed"
    );

    // Well past the old 2 s sweep: the change committed after the DELETE never arrived.
    let attempts_before = relay.accepted();
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        dp.revision(),
        1,
        "revoked node received a revision committed after its revocation ({after})"
    );
    assert_eq!(dp.get("/after/").await.0, StatusCode::NOT_FOUND);
    // It keeps serving what it had.
    assert_eq!(dp.get("/kept/").await.0, StatusCode::OK);
    assert_eq!(dp.admin("/ready").await, StatusCode::OK);
    // It backs off instead of retrying every second or so, and says why.
    let attempts = relay.accepted() - attempts_before;
    assert!(
        attempts <= 2,
        "revoked edge connected {attempts} times in 12 s"
    );
    let error = dp.last_error().unwrap_or_default();
    assert!(error.contains("has been revoked"), "last error: {error}");
}

#[tokio::test]
async fn a_handshake_flood_from_one_address_is_cut_and_other_nodes_still_join() {
    let db = TestDb::new().await;
    let cp = cp_with(
        &db,
        "cp-flood",
        SyncLimits {
            max_handshakes_per_address: 4,
            handshake_timeout: Duration::from_secs(5),
            ..SyncLimits::default()
        },
    )
    .await;
    // Raw TCP sockets from another address that never start their TLS handshake.
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(OTHER_HOST, 0)).unwrap();
        let mut s = socket.connect(cp.sync_addr).await.unwrap();
        reads.spawn(async move {
            let mut byte = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(1500), s.read(&mut byte)).await {
                Ok(Ok(0)) | Ok(Err(_)) => None,
                Ok(Ok(_)) => panic!("the server spoke first"),
                Err(_) => Some(s),
            }
        });
    }
    let mut open = Vec::new();
    while let Some(r) = reads.join_next().await {
        open.extend(r.unwrap());
    }
    assert_eq!(
        open.len(),
        4,
        "connections over the per-address cap are closed at once"
    );
    // While those four hold their slots, a real gateway joins and streams.
    let dp = Dp::joined(&cp).await;
    cp.create_api(&keyless_api("x", "/x/", "http://127.0.0.1:9/"))
        .await;
    dp.wait_for_revision(1).await;
    let m = metrics(&cp).await;
    assert_eq!(
        series(
            &m,
            "portcullis_sync_refused_connections_total{reason=\"handshakes_per_address\"}"
        ),
        36.0,
        "{m}"
    );
    // The four that hold a slot are dropped once the handshake timeout passes.
    for mut s in open {
        let mut byte = [0u8; 1];
        let end = tokio::time::timeout(Duration::from_secs(15), s.read(&mut byte)).await;
        assert!(
            matches!(end, Ok(Ok(0)) | Ok(Err(_))),
            "an unfinished handshake outlived its timeout"
        );
    }
}

#[tokio::test]
async fn a_join_flood_from_one_address_is_refused_with_resource_exhausted() {
    let db = TestDb::new().await;
    let cp = cp_with(
        &db,
        "cp-joins",
        SyncLimits {
            join_burst: 5,
            join_rate_per_sec: 0.01,
            ..SyncLimits::default()
        },
    )
    .await;
    let url = cp.sync_url();
    for i in 0..5 {
        let refused = join_from(&url, &cp.ca_hash, "nosuch.token", "flood", OTHER_HOST)
            .await
            .unwrap_err();
        assert!(
            refused.starts_with("PermissionDenied"),
            "join {i} is judged on its token: {refused}"
        );
    }
    let refused = join_from(&url, &cp.ca_hash, "nosuch.token", "flood", OTHER_HOST)
        .await
        .unwrap_err();
    assert!(
        refused.starts_with("ResourceExhausted: too many joins from 127.0.0.2; retry in"),
        "{refused}"
    );
    // A good token from that address waits too; another address is not affected.
    let token = cp.token("default").await;
    let refused = join_from(&url, &cp.ca_hash, &token, "flood", OTHER_HOST)
        .await
        .unwrap_err();
    assert!(refused.starts_with("ResourceExhausted"), "{refused}");
    let joined = join_from(&url, &cp.ca_hash, &token, "edge", LOCALHOST)
        .await
        .expect("another address joins");
    assert!(!joined.node_id.is_empty());
    let m = metrics(&cp).await;
    assert_eq!(
        series(&m, "portcullis_sync_joins_total{outcome=\"rate_limited\"}"),
        2.0,
        "{m}"
    );
}

#[tokio::test]
async fn oversized_node_strings_are_truncated_or_refused() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let token = cp.token("default").await;
    let url = cp.sync_url();
    let identity = join_from(&url, &cp.ca_hash, &token, "raw-node", LOCALHOST)
        .await
        .unwrap();
    let hello = Hello {
        build_version: portcullis_proto::version::BUILD_VERSION.into(),
        capabilities: vec!["keyless".into()],
        ..Default::default()
    };

    // A Join claiming a 100 kB version is refused before the version reaches a message or a log.
    let refused =
        portcullis_tests::raw_sync::join_as(&url, &cp.ca_hash, &token, &"9".repeat(100_000))
            .await
            .unwrap_err();
    assert_eq!(
        refused,
        "invalid request: version must be at most 64 printable ASCII characters"
    );

    // A Hello naming a thousand capabilities is refused, and says why.
    let mut flood = RawWatch::open(
        &url,
        &identity,
        Hello {
            capabilities: (0..1000).map(|i| format!("cap-{i}")).collect(),
            ..hello.clone()
        },
    )
    .await
    .unwrap();
    match flood.next(Duration::from_secs(5)).await {
        Some(Err(s)) => {
            assert_eq!(s.code(), tonic::Code::InvalidArgument);
            assert!(s.message().contains("capabilities"), "{}", s.message());
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // A 100 kB NACK error and 500 resource ids are stored cut to their bounds.
    let mut w = RawWatch::open(&url, &identity, hello).await.unwrap();
    let Some(Ok(Got::Snapshot(_))) = w.next(Duration::from_secs(5)).await else {
        panic!("expected a snapshot");
    };
    w.send(Send::Nack(Nack {
        revision: 0,
        error: "x".repeat(100_000),
        resource_ids: (0..500)
            .map(|i| format!("api-{i}-{}", "y".repeat(1000)))
            .collect(),
    }))
    .await;
    let nack = eventually(Duration::from_secs(5), "NACK recorded", || async {
        let n = node(&cp, &identity.node_id).await;
        (!n["last_nack"].is_null()).then(|| n["last_nack"].clone())
    })
    .await;
    let error = nack["error"].as_str().unwrap();
    assert!(
        error.len() <= 1024,
        "stored NACK error of {} bytes",
        error.len()
    );
    assert!(error.ends_with("(truncated)"), "{error}");
    let ids = nack["resource_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 33);
    assert!(
        ids.iter()
            .take(32)
            .all(|i| i.as_str().unwrap().len() <= 256)
    );
    assert_eq!(ids[32], "… and 468 more");
}

#[tokio::test]
async fn a_node_forcing_snapshots_in_a_loop_is_throttled() {
    let db = TestDb::new().await;
    let cp = cp_with(
        &db,
        "cp-snap",
        SyncLimits {
            snapshot_burst: 2,
            snapshot_every: Duration::from_secs(120),
            ..SyncLimits::default()
        },
    )
    .await;
    cp.create_api(&keyless_api("x", "/x/", "http://127.0.0.1:9/"))
        .await;
    let token = cp.token("default").await;
    let url = cp.sync_url();
    let identity = join_from(&url, &cp.ca_hash, &token, "looper", LOCALHOST)
        .await
        .unwrap();
    let hello = Hello {
        build_version: portcullis_proto::version::BUILD_VERSION.into(),
        capabilities: vec!["keyless".into()],
        ..Default::default()
    };
    let mut w = RawWatch::open(&url, &identity, hello).await.unwrap();
    // Every snapshot is answered with a drift NACK, which asks for another one.
    let mut snapshots = 0;
    while let Some(Ok(Got::Snapshot(s))) = w.next(Duration::from_secs(3)).await {
        snapshots += 1;
        if snapshots > 10 {
            break;
        }
        w.send(Send::Nack(Nack {
            revision: s.revision,
            error: "config hash mismatch: the node computed something else".into(),
            resource_ids: Vec::new(),
        }))
        .await;
    }
    assert_eq!(snapshots, 2, "the burst, then the node waits");
    let m = metrics(&cp).await;
    assert!(
        series(
            &m,
            "portcullis_sync_snapshots_throttled_total{group=\"default\"}"
        ) >= 1.0,
        "{m}"
    );
}

/// `openssl s_client` holding a TLS connection without a client certificate: it completes the
/// handshake (the sync port asks for a certificate but does not require one) and then waits.
fn s_client(port: u16) -> Child {
    Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-alpn",
            "h2",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl runs")
}

fn running(children: &mut [Child]) -> usize {
    children
        .iter_mut()
        .map(|c| c.try_wait())
        .filter(|w| matches!(w, Ok(None)))
        .count()
}

#[tokio::test]
async fn connections_without_a_certificate_are_capped_per_address_and_expire() {
    let db = TestDb::new().await;
    let cp = cp_with(
        &db,
        "cp-anonymous",
        SyncLimits {
            max_handshakes_per_address: 4,
            request_timeout: Duration::from_secs(3),
            ..SyncLimits::default()
        },
    )
    .await;
    let mut clients: Vec<Child> = (0..10).map(|_| s_client(cp.sync_addr.port())).collect();
    // Over the cap, the server closes the connection right after the handshake.
    eventually(Duration::from_secs(10), "six clients cut off", || {
        let left = running(&mut clients);
        async move { (left == 4).then_some(()) }
    })
    .await;
    // Another address is not affected: a node joins and streams meanwhile.
    let token = cp.token("default").await;
    let identity = join_from(&cp.sync_url(), &cp.ca_hash, &token, "edge", OTHER_HOST)
        .await
        .expect("another address joins");
    let hello = Hello {
        build_version: portcullis_proto::version::BUILD_VERSION.into(),
        capabilities: vec!["keyless".into()],
        ..Default::default()
    };
    let mut w = RawWatch::open(&cp.sync_url(), &identity, hello)
        .await
        .unwrap();
    assert!(matches!(
        w.next(Duration::from_secs(5)).await,
        Some(Ok(Got::Snapshot(_)))
    ));
    // The four that stayed can only have joined; they are closed once twice the request
    // timeout has passed.
    eventually(
        Duration::from_secs(20),
        "anonymous connections expire",
        || {
            let left = running(&mut clients);
            async move { (left == 0).then_some(()) }
        },
    )
    .await;
    let m = metrics(&cp).await;
    // Whether a client over the cap is cut while its handshake is still running or right after
    // it depends on scheduling; either way each of the six is counted once.
    assert_eq!(
        series(
            &m,
            "portcullis_sync_refused_connections_total{reason=\"anonymous_per_address\"}"
        ) + series(
            &m,
            "portcullis_sync_refused_connections_total{reason=\"handshakes_per_address\"}"
        ),
        6.0,
        "{m}"
    );
    for mut c in clients {
        let _ = c.kill();
        let _ = c.wait();
    }
}
