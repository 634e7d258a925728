//! Node certificate renewal. Certificates are short-lived, so the node asks for a new one at a
//! random point between 60 % and 75 % of the validity period (a fleet that joined together does
//! not renew together), with a fresh key pair each time. The watch stream in progress keeps its
//! connection; new connections use the new identity.

use std::time::Duration;

use portcullis_proto::pin::spki_sha256;
use portcullis_proto::sync::RenewCertificateRequest;
use portcullis_proto::sync::sync_client::SyncClient as Grpc;
use rand::Rng;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::connect;
use super::identity::Identity;
use super::join::error_chain;

/// When to renew, as fractions of the validity period.
const RENEW_FROM: f64 = 0.60;
const RENEW_TO: f64 = 0.75;

/// The validity period of a PEM certificate, in unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    pub fn of_pem(cert_pem: &str) -> Result<Self, String> {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| format!("node certificate: {e}"))?;
        let (_, cert) =
            X509Certificate::from_der(&der).map_err(|e| format!("node certificate: {e}"))?;
        Ok(Self {
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    pub fn expired(&self, now: i64) -> bool {
        self.not_after <= now
    }

    /// Milliseconds from `now_ms` until renewal at `fraction` of the period (0 if already due).
    pub fn renew_in(&self, now_ms: i64, fraction: f64) -> Duration {
        let life_ms = (self.not_after - self.not_before).max(0) as f64 * 1000.0;
        let at_ms = self.not_before * 1000 + (life_ms * fraction) as i64;
        Duration::from_millis(u64::try_from(at_ms - now_ms).unwrap_or(0))
    }

    /// The least time between two renewals: a tenth of the validity period, at least a second.
    pub fn min_gap(&self) -> Duration {
        Duration::from_secs(u64::try_from((self.not_after - self.not_before) / 10).unwrap_or(0))
            .max(Duration::from_secs(1))
    }

    /// A random renewal delay from `now_ms`, for this node.
    pub fn jittered_delay(&self, now_ms: i64) -> Duration {
        self.renew_in(now_ms, rand::rng().random_range(RENEW_FROM..RENEW_TO))
    }
}

/// Asks `url` for a new certificate for a new key, authenticated by the current identity.
pub async fn renew_once(url: &url::Url, current: &Identity) -> Result<Identity, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .map_err(|e| format!("cannot build a CSR: {e}"))?;
    let tls = connect::node_tls(current).map_err(|e| e.to_string())?;
    let channel = connect::channel(url, tls)
        .await
        .map_err(|e| error_chain(&e))?;
    let resp = Grpc::new(channel)
        .renew_certificate(RenewCertificateRequest {
            csr_der: csr.der().to_vec(),
        })
        .await
        .map_err(|s| format!("renewal refused by {url}: {}", s.message()))?
        .into_inner();
    // The CA is pinned at join; a renewal must not move the node to another one.
    let pin = |pem: &str| {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|der| spki_sha256(&der))
    };
    if pin(&resp.ca_pem)? != pin(&current.ca_pem)? {
        return Err(format!("renewal from {url} names another CA; ignored"));
    }
    Validity::of_pem(&resp.certificate_pem)?;
    Ok(Identity {
        key_pem: key.serialize_pem(),
        cert_pem: resp.certificate_pem,
        ..current.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::Validity;
    use std::time::Duration;

    #[test]
    fn renewal_falls_at_the_fraction_of_the_period_and_never_before_now() {
        let v = Validity {
            not_before: 1_000,
            not_after: 1_000 + 86_400,
        };
        // Two thirds of a day after not_before, seen from not_before.
        assert_eq!(
            v.renew_in(1_000_000, 2.0 / 3.0),
            Duration::from_millis(57_600_000)
        );
        // Already past the renewal point: renew at once.
        assert_eq!(v.renew_in(80_000_000, 0.6), Duration::ZERO);
        assert!(!v.expired(1_000 + 86_399));
        assert!(v.expired(1_000 + 86_400));
        for _ in 0..100 {
            let d = v.jittered_delay(1_000_000).as_secs();
            assert!((51_840..=64_800).contains(&d), "{d}");
        }
    }
}
