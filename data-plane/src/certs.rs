//! The certificate store as this edge holds it: every certificate streamed to its group,
//! parsed once per configuration, private keys opened only here, in memory
//! (docs/certificates.md).

use std::collections::HashMap;
use std::sync::Arc;

use portcullis_proto::envelope::EnvelopeKey;
use portcullis_proto::model::certificate::{self, CertificateRecord, PRIVATE_KEY_FIELD};
use portcullis_proto::sealed_field;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, SubjectPublicKeyInfoDer};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// One certificate of the store, ready for the TLS acceptor, the client verifiers and the
/// upstream connector.
#[derive(Debug)]
pub struct StoreCert {
    pub id: String,
    /// The chain, leaf first; empty for a bare public key.
    pub chain: Vec<CertificateDer<'static>>,
    /// sha256 of the leaf's DER (of the public key's DER for a bare public key).
    pub fingerprint: [u8; 32],
    /// sha256 of the leaf's SubjectPublicKeyInfo DER (or of the bare public key): what pinning
    /// compares.
    pub spki_sha256: [u8; 32],
    /// Unix seconds of the leaf's notAfter; 0 for a bare public key.
    pub not_after: i64,
    pub is_ca: bool,
    /// The chain with its opened private key, when the store has one.
    pub certified_key: Option<Arc<rustls::sign::CertifiedKey>>,
}

/// Why a streamed certificate record cannot be used; the edge NACKs the configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    #[error("malformed certificate record: {0}")]
    Record(String),
    #[error("resource id {resource} does not match the record id {record}")]
    IdMismatch { resource: String, record: String },
    #[error("certificate_pem: {0}")]
    Pem(String),
    #[error("public_key_pem: {0}")]
    PublicKey(String),
    #[error("neither certificate_pem nor public_key_pem is set")]
    Empty,
    /// Deliberately vague, like `sealed_field::OpenError`: wrong secret or tampered value.
    #[error("private_key does not open with this gateway's --encryption-secret")]
    KeyDoesNotOpen,
    #[error("private_key: {0}")]
    Key(String),
    #[error("private_key does not belong to the leaf certificate")]
    KeyMismatch,
}

/// Opens the private keys the control plane sealed. Process-wide like the stored-secret key
/// (`auth::token`): records are parsed wherever a configuration is applied.
static CERT_KEY: std::sync::RwLock<Option<EnvelopeKey>> = std::sync::RwLock::new(None);

/// Installs the key for `--encryption-secret`; called once at start.
pub fn set_encryption_secret(encryption_secret: &str) {
    *CERT_KEY.write().unwrap_or_else(|p| p.into_inner()) =
        Some(sealed_field::certificate_key(encryption_secret));
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A DNS name as SNI is compared: lower case, no trailing dot.
pub fn normal_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

struct Leaf {
    spki_sha256: [u8; 32],
    not_after: i64,
    is_ca: bool,
}

/// The DNS names of a certificate, lower case without a trailing dot: its subjectAltName
/// dNSNames, or its subject CN when it has none. What SNI is matched against.
pub fn dns_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut dns_names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(normal_name(d)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if dns_names.is_empty()
        && let Some(cn) = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
    {
        dns_names.push(normal_name(cn));
    }
    dns_names
}

fn parse_leaf(der: &[u8]) -> Result<Leaf, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::Pem(e.to_string()))?;
    Ok(Leaf {
        spki_sha256: sha256(cert.public_key().raw),
        not_after: cert.validity().not_after.timestamp(),
        is_ca: cert.is_ca(),
    })
}

impl StoreCert {
    pub fn is_expired(&self, now_unix: i64) -> bool {
        self.not_after != 0 && self.not_after < now_unix
    }

    /// Parses a streamed record, opening its private key with the process's certificate key.
    pub fn from_record(record: &CertificateRecord) -> Result<Self, CertError> {
        let key = CERT_KEY.read().unwrap_or_else(|p| p.into_inner());
        Self::from_record_with(record, key.as_ref())
    }

    /// As `from_record`, with the key given (None: a sealed key cannot be opened).
    pub fn from_record_with(
        record: &CertificateRecord,
        key: Option<&EnvelopeKey>,
    ) -> Result<Self, CertError> {
        if !record.certificate_pem.trim().is_empty() {
            let chain = CertificateDer::pem_slice_iter(record.certificate_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CertError::Pem(e.to_string()))?;
            let leaf_der = chain
                .first()
                .ok_or_else(|| CertError::Pem("no CERTIFICATE block".into()))?;
            let leaf = parse_leaf(leaf_der)?;
            let fingerprint = sha256(leaf_der);
            let certified_key = match record.private_key.as_str() {
                "" => None,
                sealed => Some(Arc::new(certified_key(
                    &record.id,
                    sealed,
                    chain.clone(),
                    key,
                )?)),
            };
            return Ok(Self {
                id: record.id.clone(),
                chain,
                fingerprint,
                spki_sha256: leaf.spki_sha256,
                not_after: leaf.not_after,
                is_ca: leaf.is_ca,
                certified_key,
            });
        }
        if !record.public_key_pem.trim().is_empty() {
            let spki = SubjectPublicKeyInfoDer::from_pem_slice(record.public_key_pem.as_bytes())
                .map_err(|e| CertError::PublicKey(e.to_string()))?;
            let digest = sha256(spki.as_ref());
            return Ok(Self {
                id: record.id.clone(),
                chain: Vec::new(),
                fingerprint: digest,
                spki_sha256: digest,
                not_after: 0,
                is_ca: false,
                certified_key: None,
            });
        }
        Err(CertError::Empty)
    }
}

fn certified_key(
    id: &str,
    sealed: &str,
    chain: Vec<CertificateDer<'static>>,
    key: Option<&EnvelopeKey>,
) -> Result<rustls::sign::CertifiedKey, CertError> {
    // A plaintext key in the stream would mean the CP skipped sealing: refused, not served.
    let key = key.ok_or(CertError::KeyDoesNotOpen)?;
    let pem = sealed_field::open(key, id, PRIVATE_KEY_FIELD, sealed)
        .map_err(|_| CertError::KeyDoesNotOpen)?;
    // The message never quotes the PEM: it goes back to the CP in the NACK and to the log.
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| CertError::Key("not a PEM private key (PKCS#8, PKCS#1 or SEC1)".into()))?;
    drop(pem);
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|_| CertError::Key("unsupported key type".into()))?;
    // The control plane's rule (key bits, not SPKI encodings): an upload it accepted is
    // never a reason to refuse a whole configuration here.
    let matches = chain
        .first()
        .is_some_and(|leaf| certificate::signer_matches_leaf(signer.as_ref(), leaf.as_ref()));
    if !matches {
        return Err(CertError::KeyMismatch);
    }
    Ok(rustls::sign::CertifiedKey::new(chain, signer))
}

/// Every certificate of the applied configuration, by store id.
#[derive(Debug, Default)]
pub struct CertStore {
    by_id: HashMap<String, Arc<StoreCert>>,
}

impl CertStore {
    pub fn new(certs: impl IntoIterator<Item = Arc<StoreCert>>) -> Self {
        Self {
            by_id: certs.into_iter().map(|c| (c.id.clone(), c)).collect(),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<StoreCert>> {
        self.by_id.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<StoreCert>> {
        self.by_id.values()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Parses a CERTIFICATE resource body for `resource_id`.
pub fn parse_resource(
    resource_id: &str,
    body: &[u8],
) -> Result<(CertificateRecord, StoreCert), CertError> {
    let record: CertificateRecord =
        serde_json::from_slice(body).map_err(|e| CertError::Record(e.to_string()))?;
    if record.id != resource_id {
        return Err(CertError::IdMismatch {
            resource: resource_id.to_owned(),
            record: record.id.clone(),
        });
    }
    let cert = StoreCert::from_record(&record)?;
    Ok((record, cert))
}
