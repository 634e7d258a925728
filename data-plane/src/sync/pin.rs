//! Verifying the control plane before the node has its CA: the server's chain must contain a
//! certificate whose SPKI hash equals `--ca-hash`, and the leaf must verify against it.

use std::sync::Arc;

use portcullis_proto::pin::spki_sha256;
use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use subtle::ConstantTimeEq;

#[derive(Debug)]
pub struct PinnedCa {
    ca_hash: String,
    provider: Arc<CryptoProvider>,
}

/// Message of the error a wrong pin produces; the sync client recognises it as permanent.
pub const PIN_MISMATCH: &str = "control plane CA does not match --ca-hash";

impl PinnedCa {
    pub fn new(ca_hash: &str, provider: Arc<CryptoProvider>) -> Self {
        Self {
            ca_hash: ca_hash.to_ascii_lowercase(),
            provider,
        }
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut seen = Vec::new();
        for candidate in intermediates {
            let Ok(hash) = spki_sha256(candidate) else {
                continue;
            };
            if bool::from(hash.as_bytes().ct_eq(self.ca_hash.as_bytes())) {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(candidate.clone().into_owned())?;
                let verifier = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    self.provider.clone(),
                )
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
                return verifier.verify_server_cert(
                    end_entity,
                    &[],
                    server_name,
                    ocsp_response,
                    now,
                );
            }
            seen.push(hash);
        }
        Err(rustls::Error::General(format!(
            "{PIN_MISMATCH} (expected {}, server sent {})",
            self.ca_hash,
            seen.join(", ")
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
