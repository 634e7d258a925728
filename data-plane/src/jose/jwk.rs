//! JWKs (RFC 7517) and JWK sets as identity providers publish them at their `jwks_uri`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::Value;

use super::JoseError;
use super::alg::{Alg, Family};
use super::key::{Curve, Key};

/// A key set document above this is refused unread.
pub const MAX_KEY_SET_LEN: usize = 1024 * 1024;
/// Only the first this many entries of `keys` are read; the rest count as skipped.
pub const MAX_KEYS: usize = 100;

fn bad(msg: impl Into<String>) -> JoseError {
    JoseError::BadKey(msg.into())
}

fn b64url(jwk: &serde_json::Map<String, Value>, name: &str) -> Result<Vec<u8>, JoseError> {
    let s = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("the JWK has no string {name:?}")))?;
    // Some publishers pad; the value is public either way, so padding is forgiven here.
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| bad(format!("the JWK's {name:?} is not base64url")))
}

impl Key {
    /// One JWK: `kty` RSA (`n`, `e`), EC (`crv` P-256/P-384, `x`, `y`) or oct (`k`); an RSA JWK
    /// without `n`/`e` (or a JWK without `kty`) may carry its key in `x5c`'s first certificate,
    /// as Tyk accepts. A `use` other than `sig`, `key_ops` without `verify`, or an `alg` the key
    /// cannot serve refuses the key; a supported `alg` pins the key to that alg.
    pub fn from_jwk(jwk: &Value) -> Result<Key, JoseError> {
        let jwk = jwk
            .as_object()
            .ok_or_else(|| bad("the JWK is not an object"))?;
        match jwk.get("use") {
            None => {}
            Some(Value::String(u)) if u == "sig" => {}
            Some(_) => return Err(bad("the JWK's use is not \"sig\"")),
        }
        if let Some(ops) = jwk.get("key_ops") {
            let verifies = ops
                .as_array()
                .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
            if !verifies {
                return Err(bad("the JWK's key_ops do not include \"verify\""));
            }
        }
        let pin = match jwk.get("alg") {
            None => None,
            Some(Value::String(a)) => Some(
                Alg::parse(a)
                    .ok_or_else(|| bad(format!("the JWK's alg {a:?} is not supported")))?,
            ),
            Some(_) => return Err(bad("the JWK's alg is not a string")),
        };
        let kty = match jwk.get("kty") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(bad("the JWK's kty is not a string")),
        };
        let key = match kty {
            Some("RSA") if jwk.contains_key("n") || jwk.contains_key("e") => {
                Key::rsa(&b64url(jwk, "n")?, &b64url(jwk, "e")?)?
            }
            Some("RSA") | None if jwk.contains_key("x5c") => from_x5c(jwk)?,
            Some("RSA") => return Err(bad("the RSA JWK has neither n/e nor x5c")),
            None => return Err(bad("the JWK has no kty")),
            Some("EC") => {
                let curve = match jwk.get("crv").and_then(Value::as_str) {
                    Some("P-256") => Curve::P256,
                    Some("P-384") => Curve::P384,
                    _ => return Err(bad("the EC JWK's crv is not P-256 or P-384")),
                };
                let x = b64url(jwk, "x")?;
                let y = b64url(jwk, "y")?;
                let len = curve.coordinate_len();
                // RFC 7518 §6.2.1.2: coordinates are full length, leading zeros kept.
                if x.len() != len || y.len() != len {
                    return Err(bad("the EC JWK's x or y has the wrong length for its crv"));
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Key::ec_point(curve, point)?
            }
            Some("oct") => {
                let k = b64url(jwk, "k")?;
                if k.is_empty() {
                    return Err(bad("the oct JWK's k is empty"));
                }
                Key::hmac(&k)
            }
            Some(other) => return Err(bad(format!("JWK kty {other:?} is not RSA, EC or oct"))),
        };
        match pin {
            Some(alg) if alg.family() != key.family() => Err(bad(format!(
                "the JWK's alg {alg} does not fit its key type"
            ))),
            Some(alg) => Ok(key.pinned(alg)),
            None => Ok(key),
        }
    }
}

/// `x5c` (RFC 7517 §4.7): standard base64 DER, the first certificate holds the key.
fn from_x5c(jwk: &serde_json::Map<String, Value>) -> Result<Key, JoseError> {
    let first = jwk
        .get("x5c")
        .and_then(Value::as_array)
        .and_then(|chain| chain.first())
        .and_then(Value::as_str)
        .ok_or_else(|| bad("the JWK's x5c is not an array of strings"))?;
    let der = STANDARD
        .decode(first)
        .map_err(|_| bad("the JWK's x5c certificate is not base64"))?;
    Key::from_cert_der(&der)
}

/// A JWK set: keys by `kid`, in document order.
#[derive(Debug, Default, Clone)]
pub struct KeySet {
    keys: Vec<(Option<String>, Key)>,
    skipped: usize,
}

impl KeySet {
    /// `{"keys":[...]}`. Keys that cannot be used (unsupported kty, `use: enc`, bad values)
    /// are skipped and counted; a set left with no usable key is an error.
    pub fn parse(json: &[u8]) -> Result<KeySet, JoseError> {
        if json.len() > MAX_KEY_SET_LEN {
            return Err(JoseError::TooLarge);
        }
        let doc: Value =
            serde_json::from_slice(json).map_err(|_| bad("the key set is not JSON"))?;
        let entries = doc
            .as_object()
            .and_then(|o| o.get("keys"))
            .and_then(Value::as_array)
            .ok_or_else(|| bad("the key set has no \"keys\" array"))?;
        let mut set = KeySet {
            keys: Vec::with_capacity(entries.len().min(MAX_KEYS)),
            skipped: entries.len().saturating_sub(MAX_KEYS),
        };
        for entry in entries.iter().take(MAX_KEYS) {
            let kid = match entry.get("kid") {
                None => None,
                Some(Value::String(kid)) => Some(kid.clone()),
                Some(_) => {
                    set.skipped += 1;
                    continue;
                }
            };
            match Key::from_jwk(entry) {
                Ok(key) => set.keys.push((kid, key)),
                Err(_) => set.skipped += 1,
            }
        }
        if set.keys.is_empty() {
            return Err(bad(format!(
                "the key set has no usable key ({} skipped)",
                set.skipped
            )));
        }
        Ok(set)
    }

    /// With a `kid`: the first key with that kid and family. Without: the one key of that
    /// family, and none when several could be meant.
    pub fn find(&self, kid: Option<&str>, family: Family) -> Option<&Key> {
        let mut of_family = self.keys.iter().filter(|(_, k)| k.family() == family);
        match kid {
            Some(kid) => of_family
                .find(|(k, _)| k.as_deref() == Some(kid))
                .map(|(_, key)| key),
            None => {
                let (_, only) = of_family.next()?;
                match of_family.next() {
                    None => Some(only),
                    Some(_) => None,
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many entries were not usable (or beyond [`MAX_KEYS`]).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Whether any usable key has this kid: an unknown kid can prompt a refetch (rotation).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|(k, _)| k.as_deref() == Some(kid))
    }

    pub fn iter(&self) -> impl Iterator<Item = (Option<&str>, &Key)> {
        self.keys.iter().map(|(kid, key)| (kid.as_deref(), key))
    }
}
