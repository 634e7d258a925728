//! `request_signing`: draft-cavage HTTP Signatures on the upstream request, in Tyk's format
//! (docs/upstream-auth.md): `Signature keyId="…",algorithm="…",headers="…",signature="…"` in
//! `signature_header` (default `Authorization`). HMAC signatures are base64 then URL-escaped
//! as Tyk writes (and its validator reads) them; RSA signatures are plain base64.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use portcullis_proto::model::upstream_auth::RequestSigning;
use portcullis_proto::model::{ApiDefinition, ValidationError};
use rustls::SignatureScheme;

use crate::auth::stored_secrets;
use crate::certs::CertStore;
use crate::error::ProxyError;

const REQUEST_TARGET: &str = "(request-target)";

enum Key {
    Hmac(ring::hmac::Key),
    /// Store id of the certificate whose private key signs: looked up in the store of the
    /// configuration serving the request, so a renewed certificate is used at once.
    Rsa(String),
}

pub(super) struct Signer {
    key_id: String,
    algorithm: &'static str,
    key: Key,
    /// Lower-case names to sign; empty means every header the request carries.
    header_list: Vec<String>,
    signature_header: HeaderName,
    /// Signed as `host` when listed and the request has no `Host` (HTTPS upstreams get it
    /// from the client).
    target_authority: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub(super) fn of(
        def: &ApiDefinition,
        rs: &RequestSigning,
        target_authority: String,
    ) -> Result<Option<Self>, ValidationError> {
        if !rs.is_enabled {
            return Ok(None);
        }
        let hmac = |alg: ring::hmac::Algorithm| -> Result<Key, ValidationError> {
            let secret = stored_secrets::open(def.api_id(), "request_signing.secret", &rs.secret)?;
            Ok(Key::Hmac(ring::hmac::Key::new(alg, secret.as_bytes())))
        };
        let (algorithm, key) = match rs.algorithm.as_str() {
            "hmac-sha1" => (
                "hmac-sha1",
                hmac(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY)?,
            ),
            "hmac-sha256" => ("hmac-sha256", hmac(ring::hmac::HMAC_SHA256)?),
            "hmac-sha384" => ("hmac-sha384", hmac(ring::hmac::HMAC_SHA384)?),
            "hmac-sha512" => ("hmac-sha512", hmac(ring::hmac::HMAC_SHA512)?),
            "rsa-sha256" => ("rsa-sha256", Key::Rsa(rs.certificate_id.clone())),
            _ => {
                return Err(ValidationError::new(
                    "request_signing.algorithm",
                    "Request signing algorithm is not supported",
                ));
            }
        };
        let signature_header = if rs.signature_header.is_empty() {
            header::AUTHORIZATION
        } else {
            HeaderName::from_bytes(rs.signature_header.as_bytes()).map_err(|_| {
                ValidationError::new(
                    "request_signing.signature_header",
                    "must be a valid HTTP header name",
                )
            })?
        };
        Ok(Some(Self {
            key_id: rs.key_id.clone(),
            algorithm,
            key,
            header_list: rs
                .header_list
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
            signature_header,
            target_authority,
        }))
    }

    /// Signs `parts` as they will be sent. `Date` is always the gateway's own: a client's
    /// far-future date, once signed, would widen the upstream's replay window.
    /// `authority` is the target this attempt goes to (a balanced API has several).
    pub(super) fn apply(
        &self,
        parts: &mut Parts,
        certs: &CertStore,
        authority: Option<&str>,
    ) -> Result<(), ProxyError> {
        let now = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT");
        if let Ok(v) = HeaderValue::from_str(&now.to_string()) {
            parts.headers.insert(header::DATE, v);
        }
        let names = self.names(parts);
        let text = self.signing_string(parts, &names, authority);
        let signature = match &self.key {
            Key::Hmac(k) => {
                let mac = B64.encode(ring::hmac::sign(k, text.as_bytes()));
                url::form_urlencoded::byte_serialize(mac.as_bytes()).collect::<String>()
            }
            Key::Rsa(id) => B64.encode(rsa_sign(certs, id, text.as_bytes())?),
        };
        let value = format!(
            "Signature keyId=\"{}\",algorithm=\"{}\",headers=\"{}\",signature=\"{}\"",
            self.key_id,
            self.algorithm,
            names.join(" "),
            signature
        );
        // The key id was validated to be printable, the rest is ASCII we made.
        let value = HeaderValue::from_str(&value).map_err(|_| {
            ProxyError::UpstreamAuthConfig("request_signing.key_id is not a valid header value")
        })?;
        parts.headers.insert(self.signature_header.clone(), value);
        Ok(())
    }

    /// The header list: the configured headers the request has (`(request-target)` always,
    /// `host` from the target), or else `(request-target)` and every header sent except `Host`
    /// and the signature header itself. Hop-by-hop headers are gone by now.
    fn names(&self, parts: &Parts) -> Vec<String> {
        if !self.header_list.is_empty() {
            let present: Vec<String> = self
                .header_list
                .iter()
                .filter(|h| {
                    *h == REQUEST_TARGET
                        || *h == "host"
                        || HeaderName::from_bytes(h.as_bytes())
                            .is_ok_and(|n| parts.headers.contains_key(n))
                })
                .cloned()
                .collect();
            if !present.is_empty() {
                return present;
            }
            return vec![REQUEST_TARGET.to_owned(), "date".to_owned()];
        }
        let mut names = vec![REQUEST_TARGET.to_owned()];
        for name in parts.headers.keys() {
            if name != header::HOST && *name != self.signature_header {
                names.push(name.as_str().to_owned());
            }
        }
        names
    }

    fn signing_string(&self, parts: &Parts, names: &[String], authority: Option<&str>) -> String {
        let lines: Vec<String> = names
            .iter()
            .map(|name| {
                if name == REQUEST_TARGET {
                    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
                    let method = parts.method.as_str().to_ascii_lowercase();
                    return format!("{REQUEST_TARGET}: {method} {target}");
                }
                // draft-cavage §2.3: several values are joined with ", ".
                let values: Vec<&str> = parts
                    .headers
                    .get_all(name.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(str::trim)
                    .collect();
                let value = if values.is_empty() && name == "host" {
                    authority.unwrap_or(&self.target_authority).to_owned()
                } else {
                    values.join(", ")
                };
                format!("{name}: {value}")
            })
            .collect();
        lines.join("\n")
    }
}

/// PKCS#1 v1.5 over SHA-256 with the private key of store certificate `id`.
fn rsa_sign(certs: &CertStore, id: &str, message: &[u8]) -> Result<Vec<u8>, ProxyError> {
    let key = certs.get(id).and_then(|c| c.certified_key.clone()).ok_or(
        ProxyError::UpstreamAuthConfig(
            "Request signing certificate (with its private key) is not in the certificate store",
        ),
    )?;
    let signer = key
        .key
        .choose_scheme(&[SignatureScheme::RSA_PKCS1_SHA256])
        .ok_or(ProxyError::UpstreamAuthConfig(
            "Request signing certificate's private key is not an RSA key",
        ))?;
    signer
        .sign(message)
        .map_err(|_| ProxyError::UpstreamAuthConfig("Request signing failed"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use serde_json::json;

    fn signer(rs: serde_json::Value) -> Signer {
        let body = json!({"api_id": "s", "use_keyless": true, "request_signing": rs,
            "proxy": {"listen_path": "/s/", "target_url": "http://up.example:8080"}});
        let def = ApiDefinition::parse(body.to_string().as_bytes()).unwrap();
        Signer::of(
            &def,
            &def.upstream_auth().request_signing,
            "up.example:8080".into(),
        )
        .unwrap()
        .unwrap()
    }

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().method("POST").uri("/a/b?x=1&y=%20");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn signs_tyks_string_with_an_url_escaped_hmac() {
        let s = signer(
            json!({"is_enabled": true, "secret": "9879879878787878", "key_id": "k1",
            "algorithm": "hmac-sha256", "header_list": ["(request-target)", "date", "x-test", "x-absent"]}),
        );
        let mut p = parts(&[("date", "Mon, 02 Jan 2006 15:04:05 GMT"), ("x-test", " a ")]);
        s.apply(&mut p, &CertStore::default(), None).unwrap();
        // The client's Date is replaced by the gateway's own.
        let date = p.headers["date"].to_str().unwrap().to_owned();
        assert_ne!(date, "Mon, 02 Jan 2006 15:04:05 GMT");
        let text = format!("(request-target): post /a/b?x=1&y=%20\ndate: {date}\nx-test: a");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"9879879878787878");
        let mac = B64.encode(ring::hmac::sign(&key, text.as_bytes()));
        let escaped: String = url::form_urlencoded::byte_serialize(mac.as_bytes()).collect();
        assert_eq!(
            p.headers["authorization"],
            format!(
                "Signature keyId=\"k1\",algorithm=\"hmac-sha256\",headers=\"(request-target) date x-test\",signature=\"{escaped}\""
            )
        );
    }

    #[test]
    fn the_default_list_adds_date_and_leaves_out_host_and_the_signature_header() {
        let s = signer(json!({"is_enabled": true, "secret": "s", "key_id": "k",
            "algorithm": "hmac-sha1", "signature_header": "Signature"}));
        let mut p = parts(&[("host", "up.example"), ("x-a", "1"), ("signature", "old")]);
        s.apply(&mut p, &CertStore::default(), None).unwrap();
        let v = p.headers["signature"].to_str().unwrap();
        assert!(v.contains("headers=\"(request-target) x-a date\""), "{v}");
        assert!(p.headers.contains_key("date"));
    }

    #[test]
    fn rsa_without_the_certificate_is_a_clear_500() {
        let s = signer(
            json!({"is_enabled": true, "key_id": "k", "algorithm": "rsa-sha256",
            "certificate_id": "missing"}),
        );
        let err = s
            .apply(&mut parts(&[]), &CertStore::default(), None)
            .unwrap_err();
        assert_eq!(err.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
    }
}
