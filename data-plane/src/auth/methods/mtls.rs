//! Client certificates at the HTTP level (docs/certificates.md).
//!
//! * Static mTLS (`use_mutual_tls_auth`): a check that runs before the chain, keyless APIs
//!   included. The client's certificate must be allow-listed in `client_certificates` by id,
//!   or chain to an allow-listed CA. Tyk's messages, all 403.
//! * Dynamic mTLS (`auth.use_certificate`): an auth-token method whose key is derived from
//!   the client's certificate (`{org_id}{sha256hex(leaf DER)}`, the certificate's store id).
//!   Unlike Tyk, a token alone never stands in for the certificate.

use std::fmt::Write as _;

use http::request::Parts;
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;

use super::AuthMethod;
use crate::auth::context::RequestContext;
use crate::auth::identity::{Identity, Provider, Source};
use crate::certs::{CertStore, StoreCert};
use crate::conn::ConnInfo;
use crate::error::ProxyError;

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Lower-case hex of the sha256 of `der`.
pub fn sha256_hex(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut out = String::with_capacity(64);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Intermediates a client may send with its certificate. Path building is combinatorial in
/// them (a client can send several CAs of one name under different keys): ten of them cost a
/// quarter of a second of CPU per check. Real client chains carry one or two.
pub const MAX_INTERMEDIATES: usize = 4;

/// (notBefore, notAfter) of a DER certificate in Unix seconds, or `None` when it does not
/// parse.
fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// Why a presented chain is not allowed by an allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Expired,
    NotAllowed,
}

/// Whether `chain` (leaf first) is allowed by `allowed`: its leaf is one of the allow-listed
/// certificates (by sha256 of the DER), or it verifies with webpki to an allow-listed CA for
/// client authentication. Shared by the handshake verifier and the HTTP-level check so both
/// decide the same way.
pub fn chain_allowed<'a>(
    chain: &[CertificateDer<'_>],
    allowed: impl IntoIterator<Item = &'a StoreCert>,
    now: i64,
) -> Result<(), Rejection> {
    let Some(leaf) = chain.first() else {
        return Err(Rejection::NotAllowed);
    };
    if chain.len() > 1 + MAX_INTERMEDIATES {
        return Err(Rejection::NotAllowed);
    }
    let fingerprint: [u8; 32] = Sha256::digest(leaf.as_ref()).into();
    let mut anchors = Vec::new();
    for cert in allowed {
        if cert.fingerprint == fingerprint {
            // Tyk checks the allow-listed certificate's own expiry; a certificate not valid yet
            // is refused too, as webpki refuses one that chains to a CA.
            if cert.is_expired(now) {
                return Err(Rejection::Expired);
            }
            return match validity(leaf.as_ref()) {
                Some((not_before, not_after)) if not_before <= now && now <= not_after => Ok(()),
                Some((_, not_after)) if not_after < now => Err(Rejection::Expired),
                _ => Err(Rejection::NotAllowed),
            };
        }
        if cert.is_ca
            && !cert.is_expired(now)
            && let Some(ca) = cert.chain.first()
            && let Ok(anchor) = webpki::anchor_from_trusted_cert(ca)
        {
            anchors.push(anchor.to_owned());
        }
    }
    if anchors.is_empty() {
        return Err(Rejection::NotAllowed);
    }
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|_| Rejection::NotAllowed)?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now).unwrap_or(0),
    ));
    match ee.verify_for_usage(
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .all,
        &anchors,
        &chain[1..],
        time,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    ) {
        Ok(_) => Ok(()),
        Err(webpki::Error::CertExpired { .. }) => Err(Rejection::Expired),
        Err(_) => Err(Rejection::NotAllowed),
    }
}

/// The static mTLS check of one API.
#[derive(Debug)]
pub struct CertificateCheck {
    /// `client_certificates`, resolved against the store per request (the store changes
    /// without the route being rebuilt).
    allowed: Vec<String>,
}

impl CertificateCheck {
    pub fn new(allowed: &[String]) -> Self {
        Self {
            allowed: allowed.to_vec(),
        }
    }

    pub fn check(&self, conn: &ConnInfo, certs: &CertStore) -> Result<(), ProxyError> {
        let Some(tls) = &conn.tls else {
            return Err(ProxyError::TlsNotEnabled);
        };
        if tls.peer_chain.is_empty() {
            return Err(ProxyError::ClientCertMissing);
        }
        let allowed = self
            .allowed
            .iter()
            .filter_map(|id| certs.get(id))
            .map(|c| c.as_ref());
        match chain_allowed(&tls.peer_chain, allowed, now_unix()) {
            Ok(()) => Ok(()),
            Err(Rejection::Expired) => Err(ProxyError::CertExpired),
            Err(Rejection::NotAllowed) => Err(ProxyError::ClientCertNotAllowed(sha256_hex(
                tls.peer_chain[0].as_ref(),
            ))),
        }
    }

    /// Static-mTLS token binding: a key listing `mtls_static_certificate_bindings` may only be
    /// used with one of those certificates (by store id or bare sha256).
    pub fn check_binding(&self, conn: &ConnInfo, identity: &Identity) -> Result<(), ProxyError> {
        let bindings = &identity
            .session
            .state
            .spec()
            .mtls_static_certificate_bindings;
        if bindings.is_empty() {
            return Ok(());
        }
        let Some(leaf) = conn.peer_leaf() else {
            return Err(ProxyError::CertMismatch);
        };
        let hex = sha256_hex(leaf.as_ref());
        let org = &identity.session.state.spec().org_id;
        let bound = bindings
            .iter()
            .any(|b| b == &hex || b.strip_prefix(org.as_str()).is_some_and(|rest| rest == hex));
        if bound {
            Ok(())
        } else {
            Err(ProxyError::CertMismatch)
        }
    }
}

/// Dynamic mTLS: the key is the client certificate's id in the API's organisation.
#[derive(Debug)]
pub struct CertificateToken {
    org_id: String,
}

impl CertificateToken {
    pub fn new(org_id: &str) -> Self {
        Self {
            org_id: org_id.to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl AuthMethod for CertificateToken {
    fn provider(&self) -> Provider {
        Provider::AuthToken
    }

    fn needs_certs(&self) -> bool {
        true
    }

    fn presented(&self, ctx: &RequestContext<'_>) -> bool {
        ctx.conn.peer_leaf().is_some()
    }

    async fn authenticate(&self, ctx: &RequestContext<'_>) -> Result<Identity, ProxyError> {
        let Some(leaf) = ctx.conn.peer_leaf() else {
            return Err(ProxyError::CertRequired);
        };
        // Expiry first, as Tyk: an expired certificate never reaches the key lookup. One not
        // valid yet is refused the same way (Tyk does not check it).
        let now = now_unix();
        if validity(leaf.as_ref())
            .is_none_or(|(not_before, not_after)| not_after < now || now < not_before)
        {
            return Err(ProxyError::CertExpired);
        }
        let mut key = String::with_capacity(self.org_id.len() + 64);
        key.push_str(&self.org_id);
        key.push_str(&sha256_hex(leaf.as_ref()));
        let mut identity = ctx
            .stored_key(&key, Provider::AuthToken, ProxyError::Disallowed)
            .await?;
        // The chain also checks that a key made for a certificate comes with it
        // (`chain::certificate_bound`), whichever method found the key.
        identity.source = Source::Certificate;
        Ok(identity)
    }

    /// Nothing to strip: the credential is the connection's certificate.
    fn strip(&self, _parts: &mut Parts) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use std::sync::Arc;

    fn store_cert(der: &CertificateDer<'static>, is_ca: bool, not_after: i64) -> StoreCert {
        StoreCert {
            id: sha256_hex(der),
            chain: vec![der.clone()],
            fingerprint: Sha256::digest(der.as_ref()).into(),
            spki_sha256: [0; 32],
            not_after,
            is_ca,
            certified_key: None,
        }
    }

    #[test]
    fn leaf_ids_and_issuing_cas_are_allowed_others_are_not() {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(vec!["client".into()]).unwrap();
        leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let other = CertificateParams::new(vec!["other".into()])
            .unwrap()
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap();
        let later = now_unix() + 3600;
        let ca_entry = store_cert(ca.der(), true, later);
        let leaf_entry = store_cert(leaf.der(), false, later);
        let chain = [leaf.der().clone()];
        assert_eq!(chain_allowed(&chain, [&ca_entry], now_unix()), Ok(()));
        assert_eq!(chain_allowed(&chain, [&leaf_entry], now_unix()), Ok(()));
        assert_eq!(
            chain_allowed(&[other.der().clone()], [&ca_entry, &leaf_entry], now_unix()),
            Err(Rejection::NotAllowed)
        );
        let expired = store_cert(leaf.der(), false, now_unix() - 10);
        assert_eq!(
            chain_allowed(&chain, [&expired], now_unix()),
            Err(Rejection::Expired)
        );
        // A leaf that is allow-listed is not a CA for other leaves.
        let as_anchor = store_cert(other.der(), false, later);
        assert_eq!(
            chain_allowed(&chain, [&as_anchor], now_unix()),
            Err(Rejection::NotAllowed)
        );
        // A chain padded with intermediates is refused before any path building.
        let padded: Vec<_> = std::iter::once(leaf.der().clone())
            .chain(std::iter::repeat_n(ca.der().clone(), MAX_INTERMEDIATES + 1))
            .collect();
        assert_eq!(
            chain_allowed(&padded, [&ca_entry], now_unix()),
            Err(Rejection::NotAllowed)
        );
        assert_eq!(chain_allowed(&padded[..2], [&ca_entry], now_unix()), Ok(()));
        // An allow-listed leaf that is not valid yet.
        let mut future = CertificateParams::new(vec!["future".into()]).unwrap();
        future.not_before = rcgen::date_time_ymd(2090, 1, 1);
        future.not_after = rcgen::date_time_ymd(2091, 1, 1);
        let future = future.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let future_entry = store_cert(future.der(), false, later + 10_000_000_000);
        assert_eq!(
            chain_allowed(&[future.der().clone()], [&future_entry], now_unix()),
            Err(Rejection::NotAllowed)
        );
        let store = CertStore::new([Arc::new(ca_entry)]);
        let check = CertificateCheck::new(&[sha256_hex(ca.der())]);
        let remote = "127.0.0.1:1".parse().unwrap();
        assert_eq!(
            check.check(&ConnInfo::plain(remote), &store),
            Err(ProxyError::TlsNotEnabled)
        );
        let tls = |chain: Vec<CertificateDer<'static>>| {
            ConnInfo::with_tls(
                remote,
                crate::conn::TlsInfo {
                    peer_chain: chain.into(),
                    ..Default::default()
                },
            )
        };
        assert_eq!(
            check.check(&tls(vec![]), &store),
            Err(ProxyError::ClientCertMissing)
        );
        assert_eq!(check.check(&tls(vec![leaf.der().clone()]), &store), Ok(()));
        assert_eq!(
            check.check(&tls(vec![other.der().clone()]), &store),
            Err(ProxyError::ClientCertNotAllowed(sha256_hex(other.der())))
        );
    }
}
