//! Reading what the CA needs out of certificates: the SPKI pin and a node's identity.

use x509_parser::prelude::{FromDer, X509Certificate};

pub use portcullis_proto::pin::spki_sha256;

/// Identity carried by a node certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCertificate {
    pub node_id: String,
    pub serial_hex: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// Extracts the node id (subject CN) and validity of a node certificate. The chain itself was
/// verified against the node CA during the TLS handshake.
pub fn parse_node_certificate(cert_der: &[u8]) -> Result<NodeCertificate, String> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| e.to_string())?;
    let node_id = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or("certificate has no common name")?
        .to_owned();
    Ok(NodeCertificate {
        node_id,
        serial_hex: hex::encode(cert.raw_serial()),
        not_after: cert.validity().not_after.timestamp(),
    })
}
