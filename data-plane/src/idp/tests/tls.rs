use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncWriteExt;

use super::server::read_request;
use super::{jwks, quick};
use crate::idp::{Idp, IdpConfig, IdpError, Why};

/// An HTTPS provider on 127.0.0.1 with a certificate from a private CA; returns the CA.
async fn tls_provider(hits: Arc<AtomicUsize>) -> (u16, CertificateDer<'static>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (acceptor, hits) = (acceptor.clone(), hits.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(s).await else {
                    return;
                };
                if read_request(&mut s).await.is_none() {
                    return;
                }
                hits.fetch_add(1, Ordering::SeqCst);
                let body = jwks(&["tls"]);
                let out = format!(
                    "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(out.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (port, ca.der().clone())
}

#[tokio::test]
async fn https_providers_are_trusted_through_the_extra_roots_only() {
    let hits = Arc::new(AtomicUsize::new(0));
    let (port, ca) = tls_provider(hits.clone()).await;
    let url = format!("https://127.0.0.1:{port}/jwks");
    let untrusting = Idp::new(quick());
    assert_eq!(
        untrusting.key_set("api", &url, None).await.unwrap_err(),
        IdpError::Unavailable(Why::Connect)
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "no request over an unverified connection"
    );
    let trusting = Idp::new(IdpConfig {
        extra_roots: vec![ca],
        ..quick()
    });
    let set = trusting.key_set("api", &url, Some("tls")).await.unwrap();
    assert!(set.has_kid("tls"));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
