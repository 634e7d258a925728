//! gRPC channels to a control plane over rustls: pinned by CA hash for the join, then with the
//! node CA as the only root and the node certificate as client identity.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use super::identity::Identity;
use super::pin::PinnedCa;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("control plane URL {0} has no host")]
    NoHost(url::Url),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("stored node identity is unreadable: {0}")]
    Identity(String),
    #[error("cannot reach the control plane: {0}")]
    Transport(#[from] tonic::transport::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS for the join: no client certificate, server pinned by `ca_hash`.
pub fn join_tls(ca_hash: &str) -> Result<ClientConfig, ConnectError> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa::new(ca_hash, provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// TLS once joined: the node CA is the only trusted root, the node certificate authenticates us.
pub fn node_tls(identity: &Identity) -> Result<ClientConfig, ConnectError> {
    let bad = |e: rustls_pki_types::pem::Error| ConnectError::Identity(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(identity.ca_pem.as_bytes()).map_err(bad)?)?;
    let chain = vec![CertificateDer::from_pem_slice(identity.cert_pem.as_bytes()).map_err(bad)?];
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).map_err(bad)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Opens an HTTP/2 channel to `url` (`https://host:port`) with `tls`.
pub async fn channel(url: &url::Url, tls: ClientConfig) -> Result<Channel, ConnectError> {
    let host = url
        .host_str()
        .ok_or_else(|| ConnectError::NoHost(url.clone()))?
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(7443);
    let server_name = ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    )
    .map_err(|_| ConnectError::NoHost(url.clone()))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    // The URI only names the authority for HTTP/2; TLS is done by the connector below.
    let endpoint = Endpoint::from_shared(format!("http://{host}:{port}"))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let addr = format!("{host}:{port}");
            async move {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(channel)
}
