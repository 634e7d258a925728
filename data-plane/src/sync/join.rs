//! Redeeming the bootstrap token: a fresh key pair, a CSR, and the certificate the CA signed.

use portcullis_proto::pin::spki_sha256;
use portcullis_proto::sync::JoinRequest;
use portcullis_proto::sync::sync_client::SyncClient as Grpc;
use portcullis_proto::version::BUILD_VERSION;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::client::SyncFatal;
use super::connect::{self, ConnectError};
use super::identity::Identity;

/// Why a join attempt failed: worth retrying, or not.
#[derive(Debug)]
pub enum JoinFailure {
    Retry(String),
    Fatal(SyncFatal),
}

pub struct JoinParams<'a> {
    pub url: &'a url::Url,
    pub token: &'a str,
    pub ca_hash: &'a str,
    pub node_name: &'a str,
    pub group: Option<&'a str>,
}

/// Flattens an error and its sources into one line (transport errors hide the cause deep).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

fn connect_failure(e: ConnectError) -> JoinFailure {
    let text = error_chain(&e);
    if text.contains(super::pin::PIN_MISMATCH) {
        JoinFailure::Fatal(SyncFatal::PinMismatch(text))
    } else {
        JoinFailure::Retry(text)
    }
}

pub async fn join(p: JoinParams<'_>) -> Result<Identity, JoinFailure> {
    let fatal = |m: String| JoinFailure::Fatal(SyncFatal::JoinRefused(m));
    let key =
        rcgen::KeyPair::generate().map_err(|e| fatal(format!("cannot generate a key: {e}")))?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .map_err(|e| fatal(format!("cannot build a CSR: {e}")))?;
    let tls = connect::join_tls(p.ca_hash).map_err(connect_failure)?;
    let channel = connect::channel(p.url, tls)
        .await
        .map_err(connect_failure)?;
    let request = JoinRequest {
        bootstrap_token: p.token.to_owned(),
        csr_der: csr.der().to_vec(),
        node_name: p.node_name.to_owned(),
        expected_group: p.group.unwrap_or_default().to_owned(),
        version: BUILD_VERSION.to_owned(),
    };
    let resp = match Grpc::new(channel).join(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            let text = format!("join refused by {}: {}", p.url, status.message());
            return Err(match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Internal
                | tonic::Code::DeadlineExceeded => {
                    // The transport error of a failed pin also arrives as Unavailable/Unknown.
                    let chain = error_chain(&status);
                    if chain.contains(super::pin::PIN_MISMATCH) {
                        JoinFailure::Fatal(SyncFatal::PinMismatch(chain))
                    } else {
                        JoinFailure::Retry(chain)
                    }
                }
                // Rate-limited or busy: the same token works once the control plane has room.
                tonic::Code::ResourceExhausted => JoinFailure::Retry(text),
                _ => fatal(text),
            });
        }
    };
    // Defence in depth: the CA we are told to trust from now on is the one we pinned.
    let ca_der = CertificateDer::from_pem_slice(resp.ca_pem.as_bytes())
        .map_err(|e| fatal(format!("CA certificate: {e}")))?;
    let hash = spki_sha256(&ca_der).map_err(|e| fatal(format!("CA certificate: {e}")))?;
    if !hash.eq_ignore_ascii_case(p.ca_hash) {
        return Err(JoinFailure::Fatal(SyncFatal::PinMismatch(format!(
            "{}: join answered with CA {hash}, expected {}",
            super::pin::PIN_MISMATCH,
            p.ca_hash
        ))));
    }
    Ok(Identity {
        node_id: resp.node_id,
        group: resp.group,
        key_pem: key.serialize_pem(),
        cert_pem: resp.certificate_pem,
        ca_pem: resp.ca_pem,
    })
}
