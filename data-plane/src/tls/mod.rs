//! The HTTPS listener (`--tls-listen`): reads the ClientHello, picks the server name's
//! ServerConfig from the routing table in force at that moment (certificates hot-swap; open
//! connections keep theirs), finishes the handshake within `--tls-handshake-timeout`, then
//! serves HTTP/1.1 or HTTP/2 like the plain listener (docs/certificates.md).

pub mod client_verify;
pub mod expiry;
pub mod sni;

pub use sni::{ApiTls, TlsHosts};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use crate::certs::normal_name;
use crate::conn::{ConnInfo, TlsInfo};
use crate::proxy::{self, Proxy, head_timer};
use crate::shared::Shared;

/// Serves TLS connections until the listener fails. Like the plain listener, at
/// `--max-client-connections` open connections (handshakes included) this one stops accepting.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shared: Arc<Shared>,
    handshake_timeout: Duration,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(proxy.limits().max_connections));
    serve_with_slots(listener, proxy, shared, handshake_timeout, slots).await
}

/// [`serve`] counting open connections in `slots`, which the proxy workers share
/// (`proxy::workers`).
pub async fn serve_with_slots(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shared: Arc<Shared>,
    handshake_timeout: Duration,
    slots: Arc<Semaphore>,
) -> std::io::Result<()> {
    let builder = Arc::new(proxy.server_builder());
    while let Some((stream, remote, slot)) = proxy::accept_capped(&listener, &slots).await {
        let (proxy, builder, shared) = (proxy.clone(), builder.clone(), shared.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let Some((tls, info)) = handshake(stream, remote, &shared, handshake_timeout).await
            else {
                return;
            };
            let activity = Arc::new(head_timer::Activity::default());
            let conn = Arc::new(ConnInfo::with_tls(remote, info));
            head_timer::CONNECTION
                .scope(
                    activity.clone(),
                    proxy::connection(&proxy, &builder, tls, conn, activity),
                )
                .await;
        });
    }
    Ok(())
}

/// The whole handshake, ClientHello included, within `timeout`: a client trickling bytes
/// holds a connection slot for no longer than that.
async fn handshake(
    stream: TcpStream,
    remote: SocketAddr,
    shared: &Shared,
    timeout: Duration,
) -> Option<(TlsStream<TcpStream>, TlsInfo)> {
    let run = async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
        let sni: Option<Arc<str>> = start
            .client_hello()
            .server_name()
            .map(|s| Arc::from(normal_name(s)));
        // Loaded per handshake, dropped before the handshake's round trips.
        let config = shared
            .table
            .load()
            .tls
            .config_for(sni.as_deref())
            .cloned()
            .or_else(sni::refusing_config);
        let Some(config) = config else {
            return Err(std::io::Error::other("no TLS configuration"));
        };
        let tls = start.into_stream(config).await?;
        Ok::<_, std::io::Error>((tls, sni))
    };
    let (tls, sni) = match tokio::time::timeout(timeout, run).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            return None;
        }
    };
    let (_, conn) = tls.get_ref();
    let info = TlsInfo {
        sni,
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        peer_chain: conn
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default(),
    };
    Some((tls, info))
}
