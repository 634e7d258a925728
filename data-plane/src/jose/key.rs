//! Verification keys: HMAC secrets, RSA public keys and P-256/P-384 points. Built from a shared
//! secret, a PEM (SPKI, PKCS#1 or certificate) or a JWK (`jwk.rs`); never from a private key.

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::RSAPublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::JoseError;
use super::alg::{Alg, Family};
use super::pem::{self, PemError};

/// ring verifies RSA from 2048 to 8192 bits; keys outside are refused when built, not per token.
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Curve {
    P256,
    P384,
}

impl Curve {
    pub(super) fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

/// A verification key. Opaque: its family is fixed by the constructor.
#[derive(Clone)]
pub struct Key {
    inner: Inner,
    /// A JWK's `alg` (RFC 7517 §4.4) pins the key to that one alg.
    only: Option<Alg>,
}

/// One ring key per hash, since ring binds the hash into the key; built once per secret.
#[derive(Clone)]
struct HmacKeys {
    hs256: ring::hmac::Key,
    hs384: ring::hmac::Key,
    hs512: ring::hmac::Key,
}

#[derive(Clone)]
enum Inner {
    /// Boxed: three ring keys are large next to the other variants.
    Hmac(Box<HmacKeys>),
    /// Big-endian modulus (no leading zeros) and exponent.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Uncompressed SEC1 point `0x04 || x || y`.
    Ec { curve: Curve, point: Vec<u8> },
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, not even a public key's: logs are not for keys.
        match &self.inner {
            Inner::Hmac(_) => f.write_str("Key(hmac)"),
            Inner::Rsa { n, .. } => write!(f, "Key(rsa {} bits)", n.len() * 8),
            Inner::Ec { curve, .. } => write!(f, "Key(ec {curve:?})"),
        }
    }
}

fn bad(msg: impl Into<String>) -> JoseError {
    JoseError::BadKey(msg.into())
}

impl Key {
    /// A shared secret for HS256/384/512, used as given (Tyk does not base64-decode it).
    pub fn hmac(secret: &[u8]) -> Key {
        Key {
            inner: Inner::Hmac(Box::new(HmacKeys {
                hs256: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
                hs384: ring::hmac::Key::new(ring::hmac::HMAC_SHA384, secret),
                hs512: ring::hmac::Key::new(ring::hmac::HMAC_SHA512, secret),
            })),
            only: None,
        }
    }

    /// `PUBLIC KEY` (SPKI: RSA, EC P-256/P-384), `RSA PUBLIC KEY` (PKCS#1) or `CERTIFICATE`
    /// (its SPKI; the certificate's dates and issuer are not checked: it is a key carrier).
    pub fn from_pem(pem: &[u8]) -> Result<Key, JoseError> {
        let (label, der) = pem::first_block(pem).map_err(|e| match e {
            PemError::TooLarge => bad("the PEM is larger than 64 KiB"),
            PemError::NotPem => bad("not a PEM public key or certificate"),
            PemError::PrivateKey => {
                bad("a private key was given: give the public key or the certificate")
            }
            PemError::BadBase64 => bad("the PEM body is not base64"),
        })?;
        match label {
            "PUBLIC KEY" => Key::from_spki_der(&der),
            "RSA PUBLIC KEY" => {
                let (rest, rsa) = RSAPublicKey::from_der(&der)
                    .map_err(|_| bad("the RSA PUBLIC KEY is not PKCS#1 DER"))?;
                if !rest.is_empty() {
                    return Err(bad("trailing bytes after the RSA PUBLIC KEY"));
                }
                Key::rsa(rsa.modulus, rsa.exponent)
            }
            "CERTIFICATE" => Key::from_cert_der(&der),
            other => Err(bad(format!(
                "PEM label {other:?} is not PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE"
            ))),
        }
    }

    /// The key a DER X.509 certificate carries.
    pub(super) fn from_cert_der(der: &[u8]) -> Result<Key, JoseError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|_| bad("the certificate is not X.509 DER"))?;
        Key::from_spki(cert.public_key())
    }

    fn from_spki_der(der: &[u8]) -> Result<Key, JoseError> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|_| bad("the PUBLIC KEY is not SubjectPublicKeyInfo DER"))?;
        if !rest.is_empty() {
            return Err(bad("trailing bytes after the PUBLIC KEY"));
        }
        Key::from_spki(&spki)
    }

    fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Key, JoseError> {
        let oid = &spki.algorithm.algorithm;
        if *oid == OID_PKCS1_RSAENCRYPTION {
            let (_, rsa) = RSAPublicKey::from_der(&spki.subject_public_key.data)
                .map_err(|_| bad("the RSA key inside the SPKI is not PKCS#1 DER"))?;
            Key::rsa(rsa.modulus, rsa.exponent)
        } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve_oid = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .ok_or_else(|| bad("the EC key names no curve"))?;
            let curve = if curve_oid == OID_EC_P256 {
                Curve::P256
            } else if curve_oid == OID_NIST_EC_P384 {
                Curve::P384
            } else {
                return Err(bad("EC curve is not P-256 or P-384"));
            };
            Key::ec_point(curve, spki.subject_public_key.data.to_vec())
        } else {
            Err(bad(format!(
                "key type {oid} is not RSA or EC (P-256, P-384)"
            )))
        }
    }

    /// From big-endian modulus and exponent; leading zero bytes are ignored.
    pub(super) fn rsa(n: &[u8], e: &[u8]) -> Result<Key, JoseError> {
        let n = strip_zeros(n);
        let e = strip_zeros(e);
        let bits = n
            .first()
            .map_or(0, |top| n.len() * 8 - top.leading_zeros() as usize);
        if bits < RSA_MIN_BITS {
            return Err(bad(format!(
                "RSA key of {bits} bits: at least {RSA_MIN_BITS} bits are needed"
            )));
        }
        if bits > RSA_MAX_BITS {
            return Err(bad(format!(
                "RSA key of {bits} bits: at most {RSA_MAX_BITS} bits are supported"
            )));
        }
        // ring's rule: an odd public exponent from 3 to 2^33 - 1.
        let e_value = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        if e.len() > 5 || e_value & 1 == 0 || !(3..1 << 33).contains(&e_value) {
            return Err(bad("RSA public exponent must be odd, from 3 to 2^33 - 1"));
        }
        Ok(Key {
            inner: Inner::Rsa {
                n: n.to_vec(),
                e: e.to_vec(),
            },
            only: None,
        })
    }

    /// From an uncompressed point; ring checks it lies on the curve when it verifies.
    pub(super) fn ec_point(curve: Curve, point: Vec<u8>) -> Result<Key, JoseError> {
        if point.len() != 1 + 2 * curve.coordinate_len() || point.first() != Some(&0x04) {
            return Err(bad(
                "EC public key is not an uncompressed point of its curve",
            ));
        }
        Ok(Key {
            inner: Inner::Ec { curve, point },
            only: None,
        })
    }

    pub(super) fn pinned(mut self, alg: Alg) -> Key {
        self.only = Some(alg);
        self
    }

    pub fn family(&self) -> Family {
        match self.inner {
            Inner::Hmac(_) => Family::Hmac,
            Inner::Rsa { .. } => Family::Rsa,
            Inner::Ec { .. } => Family::Ecdsa,
        }
    }

    /// The one alg a JWK's `alg` pinned this key to, if any.
    pub fn pinned_alg(&self) -> Option<Alg> {
        self.only
    }

    pub(super) fn verify(&self, alg: Alg, msg: &[u8], sig: &[u8]) -> Result<(), JoseError> {
        if alg.family() != self.family() || self.only.is_some_and(|only| only != alg) {
            return Err(JoseError::KeyMismatch);
        }
        let ok = match &self.inner {
            Inner::Hmac(keys) => {
                let key = match alg {
                    Alg::HS256 => &keys.hs256,
                    Alg::HS384 => &keys.hs384,
                    _ => &keys.hs512,
                };
                // Constant time in the signature's bytes.
                ring::hmac::verify(key, msg, sig).is_ok()
            }
            Inner::Rsa { n, e } => {
                let params: &signature::RsaParameters = match alg {
                    Alg::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Alg::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Alg::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Alg::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Alg::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
                    _ => &signature::RSA_PSS_2048_8192_SHA512,
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, msg, sig)
                    .is_ok()
            }
            Inner::Ec { curve, point } => {
                let algorithm: &dyn signature::VerificationAlgorithm = match (alg, curve) {
                    (Alg::ES256, Curve::P256) => &signature::ECDSA_P256_SHA256_FIXED,
                    (Alg::ES384, Curve::P384) => &signature::ECDSA_P384_SHA384_FIXED,
                    _ => return Err(JoseError::KeyMismatch),
                };
                UnparsedPublicKey::new(algorithm, point)
                    .verify(msg, sig)
                    .is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(JoseError::BadSignature)
        }
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[first..]
}
