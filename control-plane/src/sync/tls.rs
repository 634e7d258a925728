//! TLS for the sync port: a rustls server whose client certificate is optional at the handshake
//! (Join has none) but must chain to the node CA when present; the verified peer certificate is
//! handed to each RPC through tonic's connect info.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::DistinguishedName;
use rustls::RootCertStore;
use rustls::SignatureScheme;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::UnixTime;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use super::limits::SyncLimits;
use crate::metrics::{Metrics, ReasonLabels};

/// Builds the sync server's rustls config (ring provider, ALPN h2).
pub fn server_config(
    ca: &CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(ExpiryLater(verifier)))
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Verifies the chain to the node CA as of the certificate's last valid second when it has
/// expired. The handshake would otherwise end with a bare TLS alert the node cannot explain; the
/// per-call check then refuses the expired certificate with a status that says so.
#[derive(Debug)]
struct ExpiryLater(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for ExpiryLater {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let not_after = crate::ca::parse_node_certificate(end_entity)
            .ok()
            .and_then(|c| u64::try_from(c.not_after).ok());
        let at = match not_after {
            Some(t) if t <= now.as_secs() => {
                UnixTime::since_unix_epoch(Duration::from_secs(t.saturating_sub(1)))
            }
            _ => now,
        };
        self.0.verify_client_cert(end_entity, intermediates, at)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// What an RPC learns about its connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The client's leaf certificate, already verified against the node CA.
    pub certificate: Option<CertificateDer<'static>>,
    pub remote: Option<std::net::SocketAddr>,
}

/// A server-side TLS connection that tells tonic who is on the other end.
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    info: PeerInfo,
    /// Counts against `--sync-max-connections` for as long as the connection lives.
    _slot: OwnedSemaphorePermit,
    /// A connection without a client certificate can only Join: it counts against its address's
    /// cap and reads EOF once `anonymous_deadline` passes, so idle anonymous connections cannot
    /// fill the connection slots that nodes need.
    _anonymous: Option<AddressSlot>,
    anonymous_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(deadline) = self.anonymous_deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Stream of accepted TLS connections for `serve_with_incoming`.
pub type TlsIncoming = ReceiverStream<Result<TlsConn, io::Error>>;

/// Handshakes in progress per source address, so one address cannot hold every handshake slot.
#[derive(Default)]
struct PerAddress(std::sync::Mutex<HashMap<IpAddr, usize>>);

/// One source address's handshake in progress; dropping it frees the slot.
struct AddressSlot {
    map: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn enter(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<AddressSlot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            map: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.map.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Accepts TCP connections and completes handshakes concurrently, so one slow or hostile client
/// cannot hold up the others. Handshakes are bounded in time, in number and per source address,
/// and established connections in number: a connection over any cap is closed at once (the
/// client sees a reset or EOF before its handshake completes) and counted.
pub fn accept_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    limits: &SyncLimits,
    metrics: Arc<Metrics>,
) -> TlsIncoming {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes));
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let anonymous = Arc::new(PerAddress::default());
    let per_address_cap = limits.max_handshakes_per_address;
    let timeout = limits.handshake_timeout;
    // Long enough for a Join that waited for its slot and ran to the request timeout.
    let anonymous_life = limits.request_timeout * 2;
    let metrics_in_tasks = metrics.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "sync accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let refuse = |reason: &'static str| {
                metrics
                    .sync_refused_connections_total
                    .get_or_create(&ReasonLabels { reason })
                    .inc();
                tracing::debug!(%remote, reason, "sync connection refused");
            };
            let Ok(slot) = connections.clone().try_acquire_owned() else {
                refuse("connections");
                continue;
            };
            let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
                refuse("handshakes");
                continue;
            };
            let Some(address_slot) = per_address.enter(remote.ip(), per_address_cap) else {
                refuse("handshakes_per_address");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let anonymous = anonymous.clone();
            let metrics = metrics_in_tasks.clone();
            tokio::spawn(async move {
                let accepted = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
                drop(address_slot);
                drop(handshake);
                match accepted {
                    Ok(Ok(tls)) => {
                        let certificate = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| c.clone().into_owned());
                        let (anonymous_slot, anonymous_deadline) = if certificate.is_some() {
                            (None, None)
                        } else {
                            let Some(s) = anonymous.enter(remote.ip(), per_address_cap) else {
                                metrics
                                    .sync_refused_connections_total
                                    .get_or_create(&ReasonLabels {
                                        reason: "anonymous_per_address",
                                    })
                                    .inc();
                                return;
                            };
                            (Some(s), Some(Box::pin(tokio::time::sleep(anonymous_life))))
                        };
                        let conn = TlsConn {
                            inner: tls,
                            info: PeerInfo {
                                certificate,
                                remote: Some(remote),
                            },
                            _slot: slot,
                            _anonymous: anonymous_slot,
                            anonymous_deadline,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "sync TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "sync TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
