//! The certificate store's resource: what the control plane keeps in `certificates` and
//! streams to edges (kind `CERTIFICATE`). The private key never appears in plaintext here: it
//! is sealed under [`crate::envelope::label::CERT_PRIVATE_KEY`], bound to the certificate id,
//! before the record is built (docs/certificates.md).

use serde::{Deserialize, Serialize};

/// Field name bound into the private key's envelope.
pub const PRIVATE_KEY_FIELD: &str = "private_key";

/// Metadata shown by `GET /tyk/certs/{id}` (Tyk's `CertificateMeta` shape).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertificateMeta {
    pub id: String,
    /// Hex sha256 of the leaf's DER (of the public key's DER for a bare public key).
    pub fingerprint: String,
    pub has_private: bool,
    pub issuer: String,
    pub subject: String,
    #[serde(default)]
    pub issuer_cn: String,
    #[serde(default)]
    pub subject_cn: String,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    #[serde(default)]
    pub dns_names: Vec<String>,
    pub is_ca: bool,
}

/// One store entry as stored and streamed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertificateRecord {
    pub id: String,
    #[serde(default)]
    pub org_id: String,
    /// The certificate chain as PEM, leaf first; empty for a bare public key.
    #[serde(default)]
    pub certificate_pem: String,
    /// A bare `PUBLIC KEY` PEM (public-key uploads, used for pinning).
    #[serde(default)]
    pub public_key_pem: String,
    /// `sealed:v1:…` of the private key PEM (see `crate::sealed_field`), or empty.
    #[serde(default)]
    pub private_key: String,
    /// Groups that receive this certificate even when none of their APIs references it
    /// (gateway-wide certificates); `"*"` means every group.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Unix seconds of the leaf's notAfter (0 for a bare public key): the expiry checks read
    /// this without parsing the certificate.
    #[serde(default)]
    pub not_after_unix: i64,
    pub meta: CertificateMeta,
}

impl CertificateRecord {
    /// Whether an edge of `group` holds this certificate regardless of references.
    pub fn tagged_for(&self, group: &str) -> bool {
        self.tags.iter().any(|t| t == "*" || t == group)
    }
}

/// A bundle accepted by [`parse_bundle`]: the record to store (without its key) and the
/// private key PEM, which the control plane seals into `record.private_key` before the record
/// reaches a table or the change log.
pub struct ParsedBundle {
    pub record: CertificateRecord,
    pub private_key_pem: Option<String>,
}

impl std::fmt::Debug for ParsedBundle {
    // The key must not reach a log through a `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedBundle")
            .field("record", &self.record)
            .field("has_private_key", &self.private_key_pem.is_some())
            .finish()
    }
}

/// Why a bundle was refused. `Display` is Tyk's message where Tyk has one, because clients
/// match on it (Tyk answers every upload error with 403 and this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("Failed to decode certificate. It should be PEM encoded.")]
    NotPem,
    #[error("Found multiple private keys")]
    MultiplePrivateKeys,
    #[error("Found multiple public keys")]
    MultiplePublicKeys,
    #[error("Public keys can't be combined with certificates")]
    PublicKeyWithCertificates,
    #[error("Public keys can't be combined with private keys")]
    PublicKeyWithPrivateKey,
    #[error("Error while parsing certificate: {0}")]
    BadCertificate(String),
    #[error("Error while parsing public key: {0}")]
    BadPublicKey(String),
    #[error("tls: failed to parse private key")]
    BadPrivateKey,
    #[error("Certificate and private key do not match")]
    KeyMismatch,
    #[error("certificate is expired")]
    Expired,
    #[error("Certificate bundle is too large (at most {max} bytes)")]
    TooLarge { max: usize },
    #[error("Too many certificates in the chain (at most {max})")]
    TooManyCertificates { max: usize },
    #[error("Organisation id is too long or contains white space, commas or slashes")]
    BadOrgId,
}

/// Hex sha256, the fingerprint Tyk names certificates by.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(der))
}

/// PEM with 64-column lines and LF, whatever line endings the upload had.
fn encode_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn common_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The leaf's metadata (everything but the id).
fn leaf_meta(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    fingerprint: String,
) -> CertificateMeta {
    let dns_names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    CertificateMeta {
        id: String::new(),
        fingerprint,
        has_private: false,
        issuer: cert.issuer().to_string(),
        subject: cert.subject().to_string(),
        issuer_cn: common_name(cert.issuer()),
        subject_cn: common_name(cert.subject()),
        not_before: rfc3339(cert.validity().not_before.timestamp()),
        not_after: rfc3339(cert.validity().not_after.timestamp()),
        dns_names,
        is_ca,
    }
}

/// The raw public key (the SPKI's BIT STRING) of a private key, parsed the way the edge will
/// load it (rustls' ring provider), so a key the edge cannot use is refused here.
fn private_key_public_bits(kind: SectionKind, der: &[u8]) -> Result<Vec<u8>, BundleError> {
    use rustls_pki_types::{
        PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    };
    let key = match kind {
        SectionKind::PrivateKey => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
        SectionKind::RsaPrivateKey => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)),
        SectionKind::EcPrivateKey => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)),
        _ => return Err(BundleError::BadPrivateKey),
    };
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| BundleError::BadPrivateKey)?;
    let spki = signer.public_key().ok_or(BundleError::BadPrivateKey)?;
    // Comparing the key bits rather than whole SPKIs ignores encodings of the algorithm
    // parameters (an explicit NULL or not for RSA) that do not change the key.
    let (_, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki.as_ref())
        .map_err(|_| BundleError::BadPrivateKey)?;
    Ok(parsed.subject_public_key.data.to_vec())
}

use rustls_pki_types::pem::SectionKind;
use x509_parser::prelude::FromDer;

/// Whether `signer` holds the private key of the certificate `leaf_der`, comparing the public
/// key bits (not the whole SubjectPublicKeyInfo, whose algorithm parameters may be encoded in
/// more than one valid way). The control plane decides uploads with it and the edge decides
/// what it serves with it, so an upload the control plane accepts never makes edges refuse a
/// configuration.
pub fn signer_matches_leaf(signer: &dyn rustls::sign::SigningKey, leaf_der: &[u8]) -> bool {
    let Some(spki) = signer.public_key() else {
        return false;
    };
    let Ok((_, key)) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki.as_ref()) else {
        return false;
    };
    let Ok((_, leaf)) = x509_parser::certificate::X509Certificate::from_der(leaf_der) else {
        return false;
    };
    key.subject_public_key.data == leaf.public_key().subject_public_key.data
}

/// Parses an uploaded PEM bundle as Tyk's certificate manager does: a chain (leaf first) with
/// at most one private key that must match the leaf, or one bare `PUBLIC KEY`. Other PEM
/// sections are ignored, as Tyk does. `org_id` prefixes the id; `now_unix` decides expiry.
pub fn parse_bundle(org_id: &str, pem: &[u8], now_unix: i64) -> Result<ParsedBundle, BundleError> {
    use rustls_pki_types::pem::PemObject;
    if pem.len() > super::bounds::MAX_CERTIFICATE_BUNDLE_BYTES {
        return Err(BundleError::TooLarge {
            max: super::bounds::MAX_CERTIFICATE_BUNDLE_BYTES,
        });
    }
    // The id is org + 64 hex digits and must stay a valid reference (api_definition.rs).
    if org_id.len() + 64 > super::bounds::MAX_CERTIFICATE_ID_BYTES
        || org_id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == '/')
    {
        return Err(BundleError::BadOrgId);
    }
    let mut certs: Vec<Vec<u8>> = Vec::new();
    let mut key: Option<(SectionKind, Vec<u8>)> = None;
    let mut public: Option<Vec<u8>> = None;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = section.map_err(|_| BundleError::NotPem)?;
        match kind {
            SectionKind::Certificate => {
                if certs.len() == super::bounds::MAX_CERTIFICATES_PER_CHAIN {
                    return Err(BundleError::TooManyCertificates {
                        max: super::bounds::MAX_CERTIFICATES_PER_CHAIN,
                    });
                }
                certs.push(der);
            }
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                if key.is_some() {
                    return Err(BundleError::MultiplePrivateKeys);
                }
                key = Some((kind, der));
            }
            SectionKind::PublicKey => {
                if public.is_some() {
                    return Err(BundleError::MultiplePublicKeys);
                }
                public = Some(der);
            }
            _ => {}
        }
    }
    if let Some(public) = public {
        if !certs.is_empty() {
            return Err(BundleError::PublicKeyWithCertificates);
        }
        if key.is_some() {
            return Err(BundleError::PublicKeyWithPrivateKey);
        }
        return public_key_bundle(org_id, &public);
    }
    let Some(leaf_der) = certs.first() else {
        return Err(BundleError::NotPem);
    };
    let mut leaf_meta_and_bits = None;
    for (i, der) in certs.iter().enumerate() {
        let (rest, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| BundleError::BadCertificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(BundleError::BadCertificate(
                "trailing data after the certificate".into(),
            ));
        }
        if i == 0 {
            if cert.validity().not_after.timestamp() < now_unix {
                return Err(BundleError::Expired);
            }
            leaf_meta_and_bits = Some((
                leaf_meta(&cert, fingerprint(der)),
                cert.public_key().subject_public_key.data.to_vec(),
                cert.validity().not_after.timestamp(),
            ));
        }
    }
    let Some((mut meta, leaf_bits, not_after_unix)) = leaf_meta_and_bits else {
        return Err(BundleError::NotPem);
    };
    let private_key_pem = match key {
        None => None,
        Some((kind, der)) => {
            if private_key_public_bits(kind, &der)? != leaf_bits {
                return Err(BundleError::KeyMismatch);
            }
            let label = match kind {
                SectionKind::RsaPrivateKey => "RSA PRIVATE KEY",
                SectionKind::EcPrivateKey => "EC PRIVATE KEY",
                _ => "PRIVATE KEY",
            };
            Some(encode_pem(label, &der))
        }
    };
    let id = format!("{org_id}{}", fingerprint(leaf_der));
    meta.id = id.clone();
    meta.has_private = private_key_pem.is_some();
    let certificate_pem = certs
        .iter()
        .map(|der| encode_pem("CERTIFICATE", der))
        .collect::<String>();
    Ok(ParsedBundle {
        record: CertificateRecord {
            id,
            org_id: org_id.to_owned(),
            certificate_pem,
            public_key_pem: String::new(),
            private_key: String::new(),
            tags: Vec::new(),
            not_after_unix,
            meta,
        },
        private_key_pem,
    })
}

fn public_key_bundle(org_id: &str, der: &[u8]) -> Result<ParsedBundle, BundleError> {
    let (rest, _) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der)
        .map_err(|e| BundleError::BadPublicKey(e.to_string()))?;
    if !rest.is_empty() {
        return Err(BundleError::BadPublicKey(
            "trailing data after the key".into(),
        ));
    }
    let fp = fingerprint(der);
    let id = format!("{org_id}{fp}");
    // Tyk lists a public key under a made-up subject naming its fingerprint.
    let cn = format!("Public Key: {fp}");
    Ok(ParsedBundle {
        record: CertificateRecord {
            id: id.clone(),
            org_id: org_id.to_owned(),
            certificate_pem: String::new(),
            public_key_pem: encode_pem("PUBLIC KEY", der),
            private_key: String::new(),
            tags: Vec::new(),
            not_after_unix: 0,
            meta: CertificateMeta {
                id,
                fingerprint: fp,
                has_private: false,
                issuer: format!("CN={cn}"),
                subject: format!("CN={cn}"),
                issuer_cn: cn.clone(),
                subject_cn: cn,
                not_before: String::new(),
                not_after: String::new(),
                dns_names: Vec::new(),
                is_ca: false,
            },
        },
        private_key_pem: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    const NOW: i64 = 1_800_000_000;

    fn leaf(names: &[&str]) -> (String, KeyPair, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key, cert.der().to_vec())
    }

    fn openssl(args: &[&str], stdin: &str) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("openssl")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "openssl {args:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn a_chain_with_its_key_yields_metadata_and_the_key_apart() {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["api.example.com".into(), "*.example.com".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "api.example.com");
        let cert = params.signed_by(&key, &issuer).unwrap();
        // CRLF and blank lines around the sections, as Windows tools write them.
        let bundle = format!(
            "\r\n{}\r\n\r\n{}\n  \n{}",
            cert.pem(),
            ca.pem(),
            key.serialize_pem()
        )
        .replace('\n', "\r\n");
        let parsed = parse_bundle("org1", bundle.as_bytes(), NOW).unwrap();
        let fp = fingerprint(cert.der());
        let r = &parsed.record;
        assert_eq!(r.id, format!("org1{fp}"));
        assert_eq!(r.meta.id, r.id);
        assert_eq!(r.meta.fingerprint, fp);
        assert_eq!(r.meta.subject_cn, "api.example.com");
        assert_eq!(r.meta.issuer_cn, "Test CA");
        assert!(
            r.meta.subject.contains("CN=api.example.com"),
            "{}",
            r.meta.subject
        );
        assert_eq!(r.meta.dns_names, vec!["api.example.com", "*.example.com"]);
        assert!(r.meta.has_private);
        assert!(!r.meta.is_ca);
        assert!(r.meta.not_after.ends_with('Z'), "{}", r.meta.not_after);
        assert!(r.not_after_unix > NOW);
        assert!(r.private_key.is_empty(), "the caller seals the key");
        assert_eq!(r.certificate_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(!r.certificate_pem.contains('\r'));
        assert!(
            r.certificate_pem
                .starts_with(&cert.pem().replace("\r\n", "\n")[..64])
        );
        let key_pem = parsed.private_key_pem.as_deref().unwrap();
        assert_eq!(
            key_pem.replace('\n', ""),
            key.serialize_pem().replace(['\n', '\r'], "")
        );
        assert!(!serde_json::to_string(r).unwrap().contains("PRIVATE"));
        assert!(!format!("{parsed:?}").contains("PRIVATE"));

        let ca_only = parse_bundle("", ca.pem().as_bytes(), NOW).unwrap();
        assert!(ca_only.record.meta.is_ca);
        assert!(!ca_only.record.meta.has_private);
        assert_eq!(ca_only.record.id, fingerprint(ca.der()));
        assert!(ca_only.private_key_pem.is_none());
    }

    #[test]
    fn pkcs1_rsa_and_sec1_ec_keys_are_accepted() {
        let ec = openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout"], "");
        assert!(ec.contains("BEGIN EC PRIVATE KEY"), "{ec}");
        let rsa = openssl(&["genrsa", "-traditional", "2048"], "");
        assert!(rsa.contains("BEGIN RSA PRIVATE KEY"), "{rsa}");
        for key in [ec, rsa] {
            let cert = openssl(
                &[
                    "req",
                    "-new",
                    "-x509",
                    "-key",
                    "/dev/stdin",
                    "-subj",
                    "/CN=legacy",
                    "-days",
                    "3650",
                ],
                &key,
            );
            let parsed = parse_bundle("o", format!("{cert}{key}").as_bytes(), NOW).unwrap();
            assert!(parsed.record.meta.has_private);
            assert_eq!(parsed.record.meta.subject_cn, "legacy");
            let stored = parsed.private_key_pem.unwrap();
            assert_eq!(stored.lines().next(), key.lines().next(), "label kept");
        }
    }

    #[test]
    fn a_bare_public_key_is_named_by_its_own_digest() {
        let key = KeyPair::generate().unwrap();
        let parsed = parse_bundle("org", key.public_key_pem().as_bytes(), NOW).unwrap();
        let der = rcgen::PublicKeyData::subject_public_key_info(&key);
        let fp = fingerprint(&der);
        assert_eq!(parsed.record.id, format!("org{fp}"));
        assert_eq!(parsed.record.meta.fingerprint, fp);
        assert!(parsed.record.certificate_pem.is_empty());
        assert!(parsed.record.public_key_pem.contains("BEGIN PUBLIC KEY"));
        assert!(!parsed.record.meta.has_private);
    }

    #[test]
    fn every_bad_bundle_has_tyks_message() {
        let (cert, key, _) = leaf(&["a.example"]);
        let (other_cert, other_key, _) = leaf(&["b.example"]);
        let pub_pem = key.public_key_pem();
        let mut expired = CertificateParams::new(vec!["old.example".to_string()]).unwrap();
        expired.not_before = rcgen::date_time_ymd(2019, 1, 1);
        expired.not_after = rcgen::date_time_ymd(2020, 1, 1);
        let expired = expired.self_signed(&key).unwrap().pem();
        let garbage_b64 = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let cases: Vec<(String, &str)> = vec![
            (
                String::new(),
                "Failed to decode certificate. It should be PEM encoded.",
            ),
            (
                "hello".into(),
                "Failed to decode certificate. It should be PEM encoded.",
            ),
            (
                key.serialize_pem(),
                "Failed to decode certificate. It should be PEM encoded.",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".into(),
                "Failed to decode certificate. It should be PEM encoded.",
            ),
            (
                cert.replace("-----END CERTIFICATE-----", ""),
                "Failed to decode certificate. It should be PEM encoded.",
            ),
            (
                format!("{cert}{}{}", key.serialize_pem(), other_key.serialize_pem()),
                "Found multiple private keys",
            ),
            (
                format!("{cert}{pub_pem}"),
                "Public keys can't be combined with certificates",
            ),
            (
                format!("{pub_pem}{}", key.serialize_pem()),
                "Public keys can't be combined with private keys",
            ),
            (format!("{pub_pem}{pub_pem}"), "Found multiple public keys"),
            (
                format!("{cert}{}", other_key.serialize_pem()),
                "Certificate and private key do not match",
            ),
            (
                // The key of the second certificate of the chain, not of the leaf.
                format!("{cert}{other_cert}{}", other_key.serialize_pem()),
                "Certificate and private key do not match",
            ),
            (
                format!("{cert}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
                "tls: failed to parse private key",
            ),
            (expired, "certificate is expired"),
            (
                cert.repeat(17),
                "Too many certificates in the chain (at most 16)",
            ),
            (
                " ".repeat(super::super::bounds::MAX_CERTIFICATE_BUNDLE_BYTES + 1),
                "Certificate bundle is too large (at most 262144 bytes)",
            ),
        ];
        for (bundle, message) in cases {
            let err = parse_bundle("org", bundle.as_bytes(), NOW).unwrap_err();
            assert_eq!(err.to_string(), message, "{bundle:.80}");
        }
        let err = parse_bundle("org", garbage_b64.as_bytes(), NOW).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Error while parsing certificate: "),
            "{err}"
        );
        assert_eq!(
            parse_bundle("o/rg", cert.as_bytes(), NOW).unwrap_err(),
            BundleError::BadOrgId
        );
        // Unknown sections are skipped, as Tyk does.
        let with_csr = format!("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n{cert}");
        assert!(parse_bundle("org", with_csr.as_bytes(), NOW).is_ok());
    }
}
