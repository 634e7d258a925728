//! Client certificates at the handshake (docs/certificates.md, "Client certificates at the
//! handshake"). Where every API of a server name wants static mTLS, the handshake itself
//! refuses clients whose certificate is not allow-listed; where only some do (or dynamic
//! mTLS), a certificate is requested and only proof of its key is checked, leaving the
//! decision to the HTTP-level auth methods; elsewhere none is requested.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::sni::ApiTls;
use crate::auth::methods::mtls::{Rejection, chain_allowed};
use crate::certs::{CertStore, StoreCert};

/// What one server name asks of clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientAuth {
    /// No API on the name wants a client certificate: none is requested (browsers would
    /// prompt the user otherwise).
    None,
    /// Some APIs want one: requested, not required, any chain whose key the client proves.
    Request,
    /// Every API wants static mTLS: required, and allow-listed (store ids, sorted).
    Require(Vec<String>),
}

impl ClientAuth {
    pub fn for_apis(apis: &[&ApiTls]) -> Self {
        if !apis.is_empty() && apis.iter().all(|a| a.static_mtls) {
            let mut ids: Vec<String> = apis
                .iter()
                .flat_map(|a| a.client_certificates.iter().cloned())
                .collect();
            ids.sort();
            ids.dedup();
            return Self::Require(ids);
        }
        if apis.iter().any(|a| a.static_mtls || a.dynamic_mtls) {
            return Self::Request;
        }
        Self::None
    }
}

/// The verifier for `auth`, with the allow-listed certificates from `store`.
pub fn verifier(
    auth: &ClientAuth,
    store: &CertStore,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, Error> {
    let algs = super::sni::provider().signature_verification_algorithms;
    Ok(match auth {
        ClientAuth::None => None,
        ClientAuth::Request => Some(Arc::new(ProofOnly { algs })),
        ClientAuth::Require(ids) => Some(Arc::new(AllowList::new(ids, store, algs))),
    })
}

fn verify12(
    algs: &WebPkiSupportedAlgorithms,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
}

fn verify13(
    algs: &WebPkiSupportedAlgorithms,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
}

/// Requests a certificate and checks only that the client holds its key (CertificateVerify):
/// whether the certificate is trusted is each API's auth method's question.
#[derive(Debug)]
pub struct ProofOnly {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ProofOnly {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: with hints a browser offers only certificates of those issuers, and
        // dynamic mTLS accepts certificates of any issuer.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        // Every request on the connection may build a path through these: a long list is
        // refused here, as the HTTP-level check would refuse it (`mtls::MAX_INTERMEDIATES`).
        if intermediates.len() > crate::auth::methods::mtls::MAX_INTERMEDIATES {
            return Err(Error::InvalidCertificate(CertificateError::BadEncoding));
        }
        // Still a certificate: the auth methods parse it, and a signature is checked against it.
        webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify12(&self.algs, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify13(&self.algs, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Requires a certificate that is allow-listed by its sha256 fingerprint, or that chains
/// (webpki, clientAuth usage, validity) to an allow-listed CA: the same decision as the
/// HTTP-level check (`auth::methods::mtls::chain_allowed`).
#[derive(Debug)]
pub struct AllowList {
    allowed: Vec<Arc<StoreCert>>,
    hints: Vec<DistinguishedName>,
    algs: WebPkiSupportedAlgorithms,
}

fn push_hint(hints: &mut Vec<DistinguishedName>, dn: DistinguishedName) {
    if !hints.iter().any(|h| h.as_ref() == dn.as_ref()) {
        hints.push(dn);
    }
}

impl AllowList {
    pub fn new(ids: &[String], store: &CertStore, algs: WebPkiSupportedAlgorithms) -> Self {
        // Ids missing from the store (or bare public keys) allow nothing: fail closed.
        let allowed: Vec<Arc<StoreCert>> = ids
            .iter()
            .filter_map(|id| store.get(id))
            .filter(|c| !c.chain.is_empty())
            .cloned()
            .collect();
        let mut hints = Vec::new();
        for cert in &allowed {
            let Some(der) = cert.chain.first() else {
                continue;
            };
            if cert.is_ca {
                match webpki::anchor_from_trusted_cert(der) {
                    // The subject as a trust anchor holds it, without its SEQUENCE header.
                    Ok(anchor) => {
                        push_hint(&mut hints, DistinguishedName::in_sequence(&anchor.subject))
                    }
                    Err(_) => {
                        tracing::warn!(cert_id = %cert.id, "an allow-listed CA is not a usable trust anchor")
                    }
                }
            } else if let Ok((_, x)) = X509Certificate::from_der(der) {
                // The leaf's issuer, so a browser offers this certificate.
                push_hint(
                    &mut hints,
                    DistinguishedName::from(x.issuer().as_raw().to_vec()),
                );
            }
        }
        Self {
            allowed,
            hints,
            algs,
        }
    }
}

impl ClientCertVerifier for AllowList {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let chain: Vec<CertificateDer<'_>> = std::iter::once(end_entity.clone())
            .chain(intermediates.iter().cloned())
            .collect();
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        match chain_allowed(&chain, self.allowed.iter().map(|c| &**c), now) {
            Ok(()) => Ok(ClientCertVerified::assertion()),
            Err(Rejection::Expired) => Err(Error::InvalidCertificate(CertificateError::Expired)),
            // unknown_ca: neither allow-listed nor issued by an allow-listed CA.
            Err(Rejection::NotAllowed) => {
                Err(Error::InvalidCertificate(CertificateError::UnknownIssuer))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify12(&self.algs, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify13(&self.algs, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    use sha2::{Digest, Sha256};

    use super::*;

    fn make_ca(name: &str) -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        (cert.der().clone(), Issuer::new(params, key))
    }

    fn client(issuer: &Issuer<'_, KeyPair>) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "client");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.signed_by(&key, issuer).unwrap().der().clone()
    }

    fn store_cert(id: &str, der: &CertificateDer<'static>, is_ca: bool) -> Arc<StoreCert> {
        Arc::new(StoreCert {
            id: id.into(),
            chain: vec![der.clone()],
            fingerprint: Sha256::digest(der.as_ref()).into(),
            spki_sha256: [0; 32],
            not_after: i64::MAX,
            is_ca,
            certified_key: None,
        })
    }

    fn now() -> UnixTime {
        UnixTime::now()
    }

    #[test]
    fn the_allow_list_takes_listed_leaves_and_certificates_of_listed_cas_only() {
        let (ca_der, ca) = make_ca("Allowed CA");
        let (_, other_ca) = make_ca("Other CA");
        let by_ca = client(&ca);
        let listed = client(&other_ca);
        let stranger = client(&other_ca);
        let store = CertStore::new([
            store_cert("ca", &ca_der, true),
            store_cert("leaf", &listed, false),
        ]);
        let algs = super::super::sni::provider().signature_verification_algorithms;
        let v = AllowList::new(&["ca".into(), "leaf".into(), "gone".into()], &store, algs);
        assert!(v.client_auth_mandatory());
        assert!(v.verify_client_cert(&by_ca, &[], now()).is_ok());
        assert!(v.verify_client_cert(&listed, &[], now()).is_ok());
        assert_eq!(
            v.verify_client_cert(&stranger, &[], now()).unwrap_err(),
            Error::InvalidCertificate(CertificateError::UnknownIssuer)
        );
        // The CertificateRequest names the allowed CA (and the listed leaf's issuer).
        let names: Vec<String> = v
            .root_hint_subjects()
            .iter()
            .map(|dn| {
                let (_, name) = x509_parser::x509::X509Name::from_der(dn.as_ref()).unwrap();
                name.to_string()
            })
            .collect();
        assert_eq!(names, ["CN=Allowed CA", "CN=Other CA"]);

        // Nothing listed in the store: nothing passes.
        let empty = AllowList::new(&["gone".into()], &store, algs);
        assert!(empty.verify_client_cert(&by_ca, &[], now()).is_err());
    }

    #[test]
    fn proof_only_requests_without_requiring_and_takes_any_certificate() {
        let (_, ca) = make_ca("Any CA");
        let algs = super::super::sni::provider().signature_verification_algorithms;
        let v = ProofOnly { algs };
        assert!(v.offer_client_auth() && !v.client_auth_mandatory());
        assert!(v.root_hint_subjects().is_empty());
        assert!(v.verify_client_cert(&client(&ca), &[], now()).is_ok());
        assert!(
            v.verify_client_cert(&CertificateDer::from(vec![1, 2, 3]), &[], now())
                .is_err()
        );
    }

    #[test]
    fn a_name_requires_certificates_only_when_every_api_on_it_wants_static_mtls() {
        let api = |static_mtls, dynamic_mtls, allowed: &[&str]| ApiTls {
            static_mtls,
            dynamic_mtls,
            client_certificates: allowed.iter().map(|s| (*s).to_owned()).collect(),
            active: true,
            ..Default::default()
        };
        let (s1, s2) = (api(true, false, &["b", "a"]), api(true, false, &["a", "c"]));
        let (dynamic, plain) = (api(false, true, &[]), api(false, false, &[]));
        assert_eq!(
            ClientAuth::for_apis(&[&s1, &s2]),
            ClientAuth::Require(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(ClientAuth::for_apis(&[&s1, &plain]), ClientAuth::Request);
        assert_eq!(ClientAuth::for_apis(&[&dynamic]), ClientAuth::Request);
        assert_eq!(ClientAuth::for_apis(&[&plain]), ClientAuth::None);
        assert_eq!(ClientAuth::for_apis(&[]), ClientAuth::None);
    }
}
