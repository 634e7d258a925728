//! Compact JWS (RFC 7515 §7.1): `base64url(header) . base64url(payload) . base64url(signature)`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::JoseError;
use super::alg::Alg;
use super::key::Key;

/// Tokens above this are refused unread: identity providers' tokens are a few KiB, and the
/// bound caps the base64 and JSON work one request can cause.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The protected header fields the gateway reads.
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub alg: String,
    pub kid: Option<String>,
}

/// A parsed, not yet verified, compact JWS.
#[derive(Debug)]
pub struct Jws<'a> {
    pub header: Header,
    /// `None` when `header.alg` is not one this gateway verifies.
    pub alg: Option<Alg>,
    pub claims: Map<String, Value>,
    /// `base64url(header) . base64url(payload)`, what the signature covers.
    pub signing_input: &'a str,
    pub signature: Vec<u8>,
}

/// Parses a compact JWS without checking its signature. Strict: exactly three parts, base64url
/// without padding and without stray bits, a header object with a string `alg`, no `crit`,
/// and a payload that is a JSON object.
pub fn decode(token: &str) -> Result<Jws<'_>, JoseError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JoseError::TooLarge);
    }
    let mut parts = token.splitn(3, '.');
    let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(JoseError::Malformed);
    };
    // A fourth part would be a JWE (five parts) or garbage; splitn left it inside `s`.
    if s.contains('.') {
        return Err(JoseError::Malformed);
    }
    let signing_input = &token[..h.len() + 1 + p.len()];

    // One buffer serves header then payload; the signature needs its own, it is returned.
    let mut buf = Vec::with_capacity(h.len().max(p.len()) * 3 / 4 + 3);
    URL_SAFE_NO_PAD
        .decode_vec(h, &mut buf)
        .map_err(|_| JoseError::Malformed)?;
    let header = parse_header(&buf)?;

    buf.clear();
    URL_SAFE_NO_PAD
        .decode_vec(p, &mut buf)
        .map_err(|_| JoseError::Malformed)?;
    // serde_json reads `null` as an empty map; a payload must be an object.
    if buf.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(JoseError::Malformed);
    }
    let claims: Map<String, Value> =
        serde_json::from_slice(&buf).map_err(|_| JoseError::Malformed)?;

    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| JoseError::Malformed)?;
    let alg = Alg::parse(&header.alg);
    Ok(Jws {
        header,
        alg,
        claims,
        signing_input,
        signature,
    })
}

/// Checks the signature. The key's family comes from how the key was built, so a token cannot
/// talk an RSA public key into serving as an HMAC secret.
pub fn verify(jws: &Jws<'_>, key: &Key) -> Result<(), JoseError> {
    let alg = jws.alg.ok_or(JoseError::UnsupportedAlg)?;
    key.verify(alg, jws.signing_input.as_bytes(), &jws.signature)
}

fn parse_header(json: &[u8]) -> Result<Header, JoseError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let header = de
        .deserialize_map(HeaderVisitor)
        .map_err(|_| JoseError::Malformed)?;
    de.end().map_err(|_| JoseError::Malformed)?;
    header.ok_or(JoseError::Malformed)
}

#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Alg,
    Kid,
    Crit,
    #[serde(other)]
    Other,
}

/// Reads only `alg`, `kid` and `crit`, skipping the rest without building a `Value`. Only a
/// JSON object is accepted (a derived struct would also take an array). `Ok(None)` means
/// "refuse": a duplicate `alg`/`kid` (RFC 7515 §4 wants unique names) or any `crit`, since
/// this gateway implements no header extension (RFC 7515 §4.1.11).
struct HeaderVisitor;

impl<'de> Visitor<'de> for HeaderVisitor {
    type Value = Option<Header>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JOSE header object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut alg: Option<String> = None;
        let mut kid: Option<String> = None;
        let mut refuse = false;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Alg => {
                    let v: String = map.next_value()?;
                    refuse |= alg.replace(v).is_some();
                }
                Field::Kid => {
                    let v: String = map.next_value()?;
                    refuse |= kid.replace(v).is_some();
                }
                Field::Crit => {
                    map.next_value::<IgnoredAny>()?;
                    refuse = true;
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if refuse {
            return Ok(None);
        }
        let Some(alg) = alg else {
            return Err(de::Error::missing_field("alg"));
        };
        Ok(Some(Header { alg, kid }))
    }
}
