//! The CA pin both planes agree on: sha256 of a certificate's SubjectPublicKeyInfo, written
//! `sha256:<hex>` (kubeadm's `--discovery-token-ca-cert-hash`).

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

/// `sha256:<hex>` of the SubjectPublicKeyInfo of a DER certificate.
pub fn spki_sha256(cert_der: &[u8]) -> Result<String, String> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| e.to_string())?;
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(cert.tbs_certificate.subject_pki.raw))
    ))
}
