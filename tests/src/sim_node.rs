//! A simulated edge node: it speaks the real sync protocol over real mTLS, but applies nothing.
//!
//! It joins with a bootstrap token (the control plane pinned by CA hash, as `portcullis-gw`
//! does), then keeps one `Watch` stream open: Hello with its last revision and hash, and an
//! `Ack{revision, hash}` for every Snapshot (after its last chunk), Changes and Bookmark, echoing
//! the hash the control plane sent (the node does not recompute it). When the stream ends it
//! reconnects with jittered exponential backoff, so a fleet of these behaves like a fleet of
//! gateways when the control plane restarts, at a fraction of the memory.
//!
//! One identity (key, certificate, TLS connection) per node, so the control plane sees one
//! authenticated stream per node, exactly as with real gateways.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use hyper_util::rt::TokioIo;
use portcullis_proto::pin::spki_sha256;
use portcullis_proto::sync::sync_client::SyncClient;
use portcullis_proto::sync::watch_request::Message as Outbound;
use portcullis_proto::sync::watch_response::Message as Inbound;
use portcullis_proto::sync::{Ack, Hello, JoinRequest, WatchRequest, WatchResponse};
use portcullis_proto::version::BUILD_VERSION;
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// Snapshots of many thousands of APIs arrive in 1 MiB chunks; deltas can be larger.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Reconnect backoff: 100 ms doubling to 5 s, full jitter.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How a simulated node joins and what it says in Hello.
#[derive(Clone, Debug)]
pub struct SimNodeOptions {
    /// `https://host:port` of the sync port.
    pub sync_url: url::Url,
    /// `sha256:<hex>` of the node CA's SubjectPublicKeyInfo (`ca_hash` of GET /portcullis/ca).
    pub ca_hash: String,
    pub token: String,
    pub node_name: String,
    /// The group the node expects (must equal the token's when set).
    pub expected_group: Option<String>,
    /// Version sent in `Join` (a skewed one tests version checks).
    pub join_version: String,
    /// Version sent in `Hello`.
    pub build_version: String,
    /// Revision and hash claimed in the first Hello (0 and "" = no configuration).
    pub last_revision: u64,
    pub config_hash: String,
}

impl SimNodeOptions {
    /// A node of this build, with no configuration.
    pub fn new(sync_url: url::Url, ca_hash: &str, token: &str, node_name: &str) -> Self {
        Self {
            sync_url,
            ca_hash: ca_hash.to_owned(),
            token: token.to_owned(),
            node_name: node_name.to_owned(),
            expected_group: None,
            join_version: BUILD_VERSION.to_owned(),
            build_version: BUILD_VERSION.to_owned(),
            last_revision: 0,
            config_hash: String::new(),
        }
    }
}

/// The last complete snapshot a node received.
#[derive(Clone, Debug, Default)]
pub struct SnapshotInfo {
    pub revision: u64,
    pub chunks: u32,
    pub resources: usize,
    /// Sum of the resource bodies.
    pub bytes: usize,
    pub reason: String,
}

/// What the node has seen, updated by its task and read by the test.
#[derive(Debug)]
struct Status {
    /// Last ACKed (revision, hash); the hash is echoed in the Hello after a reconnect.
    acked: watch::Sender<(u64, String)>,
    /// First receipt of each revision (the ACK leaves right after).
    received: Mutex<BTreeMap<u64, Instant>>,
    snapshots: AtomicU64,
    last_snapshot: Mutex<Option<SnapshotInfo>>,
    /// Streams on which at least one message arrived.
    streams: AtomicU64,
    /// When the first message of the latest such stream arrived.
    stream_started: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
}

/// Locks a mutex even if a panicking holder poisoned it: the data are plain counters and maps.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A joined node with its watch task running. Dropping it stops the task.
pub struct SimNode {
    pub node_id: String,
    pub group: String,
    status: Arc<Status>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl SimNode {
    /// Joins (errors are returned, not retried) and starts watching in a background task.
    pub async fn start(opts: SimNodeOptions) -> anyhow::Result<Self> {
        let identity = join_retrying(&opts).await?;
        let (acked, _) = watch::channel((opts.last_revision, opts.config_hash.clone()));
        let status = Arc::new(Status {
            acked,
            received: Mutex::new(BTreeMap::new()),
            snapshots: AtomicU64::new(0),
            last_snapshot: Mutex::new(None),
            streams: AtomicU64::new(0),
            stream_started: Mutex::new(None),
            last_error: Mutex::new(None),
        });
        let (stop, stop_rx) = watch::channel(false);
        let node_id = identity.node_id.clone();
        let group = identity.group.clone();
        let task = tokio::spawn(run(identity, opts, status.clone(), stop_rx));
        Ok(Self {
            node_id,
            group,
            status,
            stop,
            task: Some(task),
        })
    }

    /// Revision of the last ACK sent.
    pub fn acked_revision(&self) -> u64 {
        self.status.acked.borrow().0
    }

    /// Waits until the node has ACKed a revision for which `pred` holds; false on timeout.
    pub async fn wait_for_revision(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(u64) -> bool,
    ) -> bool {
        let mut rx = self.status.acked.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|(rev, _)| pred(*rev)))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// When the node first received `revision`.
    pub fn received_at(&self, revision: u64) -> Option<Instant> {
        lock(&self.status.received).get(&revision).copied()
    }

    /// The first revision received after `revision`, and when.
    pub fn first_received_after(&self, revision: u64) -> Option<(u64, Instant)> {
        lock(&self.status.received)
            .range(revision + 1..)
            .next()
            .map(|(r, t)| (*r, *t))
    }

    pub fn snapshots(&self) -> u64 {
        self.status.snapshots.load(Ordering::Relaxed)
    }

    pub fn last_snapshot(&self) -> Option<SnapshotInfo> {
        lock(&self.status.last_snapshot).clone()
    }

    /// Watch streams on which at least one message arrived (1 after the first snapshot).
    pub fn streams(&self) -> u64 {
        self.status.streams.load(Ordering::Acquire)
    }

    /// When the first message of the latest stream arrived.
    pub fn stream_started(&self) -> Option<Instant> {
        *lock(&self.status.stream_started)
    }

    /// Why the last stream or connection attempt ended.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.status.last_error).clone()
    }

    /// Stops the watch task and waits for it (its connection closes).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What the node keeps after joining.
struct Identity {
    node_id: String,
    group: String,
    /// mTLS: the node CA as the only root, the node certificate as client identity.
    tls: Arc<ClientConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Joins, waiting out the control plane's join rate limit (a fleet on one host is one source
/// address); every other refusal is returned.
async fn join_retrying(opts: &SimNodeOptions) -> anyhow::Result<Identity> {
    let mut backoff = Backoff(BACKOFF_MIN);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        match join(opts).await {
            Err(e) if e.to_string().contains("ResourceExhausted") && Instant::now() < deadline => {
                tokio::time::sleep(backoff.next().max(Duration::from_millis(50))).await;
            }
            other => return other,
        }
    }
}

/// Redeems the token: fresh key, CSR, pinned TLS, and a check that the returned CA is the pinned one.
async fn join(opts: &SimNodeOptions) -> anyhow::Result<Identity> {
    let key = rcgen::KeyPair::generate().context("generating the node key")?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .context("building the CSR")?;
    let pinned = portcullis_data_plane::sync::pin::PinnedCa::new(&opts.ca_hash, provider());
    let mut tls = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(pinned))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let channel = channel(&opts.sync_url, Arc::new(tls))
        .await
        .context("connecting to join")?;
    let request = JoinRequest {
        bootstrap_token: opts.token.clone(),
        csr_der: csr.der().to_vec(),
        node_name: opts.node_name.clone(),
        expected_group: opts.expected_group.clone().unwrap_or_default(),
        version: opts.join_version.clone(),
    };
    let resp = SyncClient::new(channel)
        .join(request)
        .await
        .map_err(|s| anyhow!("join refused: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    let ca = CertificateDer::from_pem_slice(resp.ca_pem.as_bytes()).context("CA in the answer")?;
    let ca_hash = spki_sha256(&ca).map_err(|e| anyhow!("CA in the answer: {e}"))?;
    if !ca_hash.eq_ignore_ascii_case(&opts.ca_hash) {
        bail!("join answered with CA {ca_hash}, pinned {}", opts.ca_hash);
    }
    let cert = CertificateDer::from_pem_slice(resp.certificate_pem.as_bytes())
        .context("certificate in the answer")?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca)?;
    let mut tls = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![cert],
            PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Identity {
        node_id: resp.node_id,
        group: resp.group,
        tls: Arc::new(tls),
    })
}

/// Opens TCP + TLS for tonic, which only needs the authority from the URI.
#[derive(Clone)]
struct TlsConnector {
    addr: String,
    server_name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
}

type Connecting = Pin<
    Box<
        dyn Future<Output = std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>>
            + Send,
    >,
>;

impl tonic::codegen::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&this.addr).await?;
            tcp.set_nodelay(true)?;
            let tls = this.tls.connect(this.server_name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// One HTTP/2 connection to the sync port (the gateway's settings: 5 s connect, 10 s keepalive).
async fn channel(url: &url::Url, tls: Arc<ClientConfig>) -> anyhow::Result<Channel> {
    let host = url
        .host_str()
        .ok_or_else(|| anyhow!("{url} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(7443);
    let connector = TlsConnector {
        addr: format!("{host}:{port}"),
        server_name: ServerName::try_from(host.clone()).context("server name")?,
        tls: tokio_rustls::TlsConnector::from(tls),
    };
    let endpoint = Endpoint::from_shared(format!("http://{}", connector.addr))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let channel = endpoint
        .connect_with_connector(connector)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(channel)
}

/// Exponential backoff with full jitter: a uniformly random pause in [0, d].
struct Backoff(Duration);

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        // A v4 UUID is 122 random bits; it spares the crate a dependency on `rand`.
        let r = uuid::Uuid::new_v4().as_u128() as u64;
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(r % micros.saturating_add(1))
    }
}

/// Watches until stopped, reconnecting after every ended stream.
async fn run(
    identity: Identity,
    opts: SimNodeOptions,
    status: Arc<Status>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff(BACKOFF_MIN);
    loop {
        let before = status.streams.load(Ordering::Acquire);
        tokio::select! {
            error = watch_once(&identity, &opts, &status) => {
                *lock(&status.last_error) = Some(error);
            }
            _ = stop.wait_for(|s| *s) => return,
        }
        // A stream that delivered something was a success: start the next wait from scratch.
        if status.streams.load(Ordering::Acquire) > before {
            backoff = Backoff(BACKOFF_MIN);
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next()) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One stream, from connect to its end; returns why it ended.
async fn watch_once(identity: &Identity, opts: &SimNodeOptions, status: &Status) -> String {
    let channel = match channel(&opts.sync_url, identity.tls.clone()).await {
        Ok(c) => c,
        Err(e) => return format!("{e:#}"),
    };
    let mut grpc = SyncClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
    let (tx, rx) = mpsc::channel(16);
    let (last_revision, config_hash) = status.acked.borrow().clone();
    let hello = Hello {
        node_id: identity.node_id.clone(),
        protocol_version: portcullis_proto::PROTOCOL_VERSION,
        capabilities: vec!["keyless".into()],
        build_version: opts.build_version.clone(),
        last_revision,
        config_hash,
    };
    let hello = WatchRequest {
        message: Some(Outbound::Hello(hello)),
    };
    if tx.send(hello).await.is_err() {
        return "request stream closed before Hello".into();
    }
    let mut inbound = match grpc.watch(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return format!("watch refused: {:?}: {}", s.code(), s.message()),
    };
    let mut chunks = Chunks::default();
    let mut first = true;
    loop {
        let msg = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return "control plane closed the stream".into(),
            Err(s) => return format!("stream error: {:?}: {}", s.code(), s.message()),
        };
        let Some((revision, hash)) = chunks.complete(msg, status) else {
            continue;
        };
        let now = Instant::now();
        lock(&status.received).entry(revision).or_insert(now);
        if first {
            first = false;
            *lock(&status.stream_started) = Some(now);
            status.streams.fetch_add(1, Ordering::AcqRel);
        }
        let ack = WatchRequest {
            message: Some(Outbound::Ack(Ack {
                revision,
                config_hash: hash.clone(),
                unserved_apis: Vec::new(),
            })),
        };
        if tx.send(ack).await.is_err() {
            return "request stream closed while answering".into();
        }
        status.acked.send_replace((revision, hash));
    }
}

/// Snapshot chunks seen so far on the stream.
#[derive(Default)]
struct Chunks {
    seen: u32,
    resources: usize,
    bytes: usize,
}

impl Chunks {
    /// The (revision, hash) to ACK once `msg` completes a configuration message.
    fn complete(&mut self, msg: WatchResponse, status: &Status) -> Option<(u64, String)> {
        match msg.message? {
            Inbound::Snapshot(s) => {
                if s.chunk == 0 {
                    *self = Self::default();
                }
                self.seen += 1;
                self.resources += s.resources.len();
                self.bytes += s.resources.iter().map(|r| r.body.len()).sum::<usize>();
                if s.chunk + 1 < s.chunks {
                    return None;
                }
                status.snapshots.fetch_add(1, Ordering::Relaxed);
                *lock(&status.last_snapshot) = Some(SnapshotInfo {
                    revision: s.revision,
                    chunks: self.seen,
                    resources: self.resources,
                    bytes: self.bytes,
                    reason: s.reason,
                });
                Some((s.revision, s.config_hash))
            }
            Inbound::Changes(c) => Some((c.to_revision, c.config_hash)),
            Inbound::Bookmark(b) => Some((b.revision, b.config_hash)),
        }
    }
}
