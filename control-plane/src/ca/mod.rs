//! Node CA: created at first start, private key sealed in Postgres under a key derived from a
//! secret only control planes hold (`--ca-secret`, else the admin secret; never the encryption
//! secret every edge has); signs node CSRs (join, renewal) and the sync server certificate.

mod spki;

use std::sync::Arc;
use std::time::Duration;

use portcullis_proto::envelope::{EnvelopeError, EnvelopeKey, label};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use time::OffsetDateTime;

pub use spki::{NodeCertificate, parse_node_certificate, spki_sha256};

use crate::store::{Store, StoreError};

/// Associated data binding the sealed CA key to its purpose.
const CA_KEY_AAD: &[u8] = b"portcullis node ca key";
/// HKDF label of the CA sealing key, derived from the CA secret or the admin secret. Earlier
/// versions sealed under `label::CA_KEY` from the shared encryption secret.
const CA_SEAL_LABEL: &str = "portcullis/ca-seal/v2";

/// The secrets the stored CA key may be sealed under, newest first.
#[derive(Clone, Copy)]
pub struct CaSecrets<'a> {
    /// `--ca-secret`, or the admin secret when none is given: the CA key ends sealed under it.
    pub current: &'a str,
    /// `--previous-ca-secret`: what `current` was before a rotation.
    pub previous: Option<&'a str>,
    /// The encryption secret, which sealed the CA key before `--ca-secret` existed.
    pub legacy_shared: &'a str,
}

impl CaSecrets<'_> {
    fn current_key(&self) -> EnvelopeKey {
        EnvelopeKey::derive(self.current.as_bytes(), CA_SEAL_LABEL)
    }

    /// Keys that may still open a CA key sealed before a rotation or an upgrade.
    fn older_keys(&self) -> Vec<(&'static str, EnvelopeKey)> {
        let mut keys = Vec::new();
        if let Some(p) = self.previous {
            keys.push((
                "--previous-ca-secret",
                EnvelopeKey::derive(p.as_bytes(), CA_SEAL_LABEL),
            ));
        }
        keys.push((
            "--encryption-secret (earlier versions)",
            EnvelopeKey::derive(self.legacy_shared.as_bytes(), label::CA_KEY),
        ));
        keys
    }
}

/// What the management API shows of the CA.
#[derive(Debug, Clone)]
pub struct CaInfo {
    /// The CA certificate, PEM.
    pub certificate_pem: String,
    /// `sha256:<hex>` of the CA certificate's SubjectPublicKeyInfo (kubeadm's pin).
    pub ca_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(
        "the stored node CA key cannot be opened with this --ca-secret (or, without one, \
         --admin-secret), nor with --previous-ca-secret ({0}); see docs/operations.md"
    )]
    Unseal(#[from] EnvelopeError),
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the certificate signing request is invalid: {0}")]
    BadCsr(rcgen::Error),
    #[error("stored CA certificate is unreadable: {0}")]
    BadCertificate(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A certificate issued to a node.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub pem: String,
    pub serial_hex: String,
    pub not_after: OffsetDateTime,
}

/// The node CA of this control-plane cluster.
pub struct NodeCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    info: Arc<CaInfo>,
}

impl std::fmt::Debug for NodeCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCa")
            .field("ca_hash", &self.info.ca_hash)
            .finish_non_exhaustive()
    }
}

impl NodeCa {
    /// Loads the CA from Postgres, creating it on the very first start. Replicas starting
    /// together race on an insert that only one wins; all then use the stored one.
    ///
    /// A CA key sealed under an older secret (`--previous-ca-secret`, or the shared encryption
    /// secret of earlier versions) is re-sealed under the current one.
    pub async fn load_or_create(store: &Store, secrets: CaSecrets<'_>) -> Result<Self, CaError> {
        let key = secrets.current_key();
        if store.load_node_ca().await?.is_none() {
            let (pem, key_der) = generate_ca()?;
            let sealed = key.seal(&key_der, CA_KEY_AAD);
            store.insert_node_ca_if_absent(&pem, &sealed).await?;
        }
        let (pem, sealed) = store
            .load_node_ca()
            .await?
            .ok_or_else(|| CaError::BadCertificate("node CA row vanished".into()))?;
        let current_err = match key.open(&sealed, CA_KEY_AAD) {
            Ok(der) => return Self::from_parts(&pem, &der),
            Err(e) => e,
        };
        for (which, older) in secrets.older_keys() {
            let Ok(der) = older.open(&sealed, CA_KEY_AAD) else {
                continue;
            };
            let ca = Self::from_parts(&pem, &der)?;
            // Compare-and-set: replicas re-sealing at once write one value, and a row changed
            // meanwhile is left alone.
            let resealed = key.seal(&der, CA_KEY_AAD);
            if store.reseal_node_ca(&sealed, &resealed).await? {
                tracing::info!(from = which, "node CA key re-sealed under the CA secret");
            }
            return Ok(ca);
        }
        Err(CaError::Unseal(current_err))
    }

    fn from_parts(pem: &str, key_der: &[u8]) -> Result<Self, CaError> {
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.to_vec()));
        let key_pair = KeyPair::try_from(&key_der)?;
        let cert_der = pem_to_der(pem)?;
        let ca_hash = spki_sha256(&cert_der).map_err(CaError::BadCertificate)?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key_pair)?;
        Ok(Self {
            issuer,
            cert_der,
            info: Arc::new(CaInfo {
                certificate_pem: pem.to_owned(),
                ca_hash,
            }),
        })
    }

    pub fn info(&self) -> Arc<CaInfo> {
        self.info.clone()
    }

    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Signs a node's CSR. The CA decides the subject (node id) and lifetime; only the public key
    /// is taken from the request, so a node cannot claim another identity or group.
    pub fn sign_node_csr(
        &self,
        csr_der: &[u8],
        node_id: &str,
        ttl: Duration,
    ) -> Result<IssuedCertificate, CaError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(CaError::BadCsr)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, node_id);
        params.subject_alt_names = vec![SanType::URI(
            format!("urn:portcullis:node:{node_id}").try_into()?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (serial, serial_hex) = random_serial();
        params.serial_number = Some(serial);
        let now = OffsetDateTime::now_utc();
        let life = time::Duration::try_from(ttl).unwrap_or(time::Duration::DAY);
        // Back-dating tolerates small clock differences between CP and edges; a tenth of the life
        // at most, so edges that renew at two thirds of the validity period renew in time.
        let backdate: time::Duration = life / 10;
        params.not_before = now - backdate.min(time::Duration::minutes(1));
        let not_after = now + life;
        params.not_after = not_after;
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(IssuedCertificate {
            pem: cert.pem(),
            serial_hex,
            not_after,
        })
    }

    /// Issues a fresh sync server certificate for `names` (DNS names or IP addresses), valid for
    /// 90 days, and returns the chain `[leaf, CA]` with its key.
    pub fn issue_server_certificate(
        &self,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        params
            .distinguished_name
            .push(DnType::CommonName, "portcullis control plane");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial().0);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + time::Duration::days(90);
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![cert.der().clone(), self.cert_der.clone()], key_der))
    }
}

fn generate_ca() -> Result<(String, Vec<u8>), CaError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "Portcullis node CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Portcullis");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial().0);
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(3650);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_der()))
}

fn random_serial() -> (SerialNumber, String) {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    // Positive INTEGER (top bit clear) whose first byte is not zero: DER drops leading zero
    // bytes, and the serial read back from the certificate must equal the one recorded.
    bytes[0] = (bytes[0] & 0x3f) | 0x40;
    (SerialNumber::from_slice(&bytes), hex::encode(bytes))
}

fn pem_to_der(pem: &str) -> Result<CertificateDer<'static>, CaError> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| CaError::BadCertificate(e.to_string()))
}

#[cfg(test)]
mod tests;
