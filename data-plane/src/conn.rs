//! What the proxy knows about a client connection, fixed at accept (and after the TLS
//! handshake): every request on the connection sees the same facts, and auth methods read them
//! through the request context (docs/architecture.md).

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;

/// Facts about one accepted connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// Set when the client spoke TLS to the proxy's TLS port.
    pub tls: Option<TlsInfo>,
    /// The client's address as `X-Forwarded-For` writes it, formatted once per connection.
    pub forwarded_for: http::HeaderValue,
}

/// The outcome of the client's TLS handshake.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// The server name the client asked for (lower case), if it sent SNI.
    pub sni: Option<Arc<str>>,
    /// The negotiated ALPN protocol (`h2`, `http/1.1`).
    pub alpn: Option<Vec<u8>>,
    /// The client's certificate chain, leaf first; empty when it sent none. Whoever accepted
    /// the handshake checked that the client holds the leaf's private key; whether the chain
    /// is trusted is each auth method's question.
    pub peer_chain: Arc<[CertificateDer<'static>]>,
}

impl ConnInfo {
    pub fn plain(remote: SocketAddr) -> Self {
        Self {
            remote,
            tls: None,
            forwarded_for: crate::proxy::headers::address_value(remote.ip()),
        }
    }

    pub fn with_tls(remote: SocketAddr, tls: TlsInfo) -> Self {
        Self {
            tls: Some(tls),
            ..Self::plain(remote)
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The client's leaf certificate, if it presented one.
    pub fn peer_leaf(&self) -> Option<&CertificateDer<'static>> {
        self.tls.as_ref().and_then(|t| t.peer_chain.first())
    }

    /// `X-Forwarded-Proto` for requests on this connection.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() { "https" } else { "http" }
    }
}
