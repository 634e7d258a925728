//! HMAC and RSA request signatures (draft-cavage HTTP Signatures, docs/hmac.md).
//!
//! `Authorization: Signature keyId="..",algorithm="..",headers="..",signature=".."` (or the
//! same parameters in a `Signature` header). `keyId` is a stored key whose session holds the
//! secret (`hmac_string`, sealed at rest) or names the certificate of an RSA public key. Every
//! failure is Tyk's one 400, so a client learns nothing about which check failed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::request::Parts;
use http::{HeaderName, header};
use portcullis_proto::model::hmac::SIGNATURE_ALGORITHMS;
use portcullis_proto::model::{ApiDefinition, ValidationError};

use super::AuthMethod;
use crate::auth::context::RequestContext;
use crate::auth::identity::{Identity, Provider};
use crate::error::ProxyError;

/// The sealing field of a session's HMAC secret (doc id: the key's hash).
pub const HMAC_STRING_FIELD: &str = "hmac_string";

/// Bounds on what a client sends: far above any real signature, far below what hurts.
const MAX_HEADER_BYTES: usize = 8 * 1024;
const MAX_SIGNED_HEADERS: usize = 32;
const MAX_KEY_ID_BYTES: usize = 1024;
const MAX_SIGNATURE_BYTES: usize = 2048;

const SIGNATURE_HEADER: HeaderName = HeaderName::from_static("signature");
const AUX_DATE: &str = "x-aux-date";

#[derive(Debug)]
pub struct HmacAuth {
    /// Algorithms accepted on this API (the API's list, or every supported one).
    allowed: Vec<String>,
    /// Milliseconds; None: no window (a negative `hmac_allowed_clock_skew`).
    skew_ms: Option<f64>,
}

impl HmacAuth {
    pub fn new(def: &ApiDefinition) -> Result<Self, ValidationError> {
        let spec = def.hmac();
        spec.validate()?;
        let allowed = if spec.hmac_allowed_algorithms.is_empty() {
            SIGNATURE_ALGORITHMS.iter().map(|a| a.to_string()).collect()
        } else {
            spec.hmac_allowed_algorithms.clone()
        };
        Ok(Self {
            allowed,
            skew_ms: spec.clock_skew_ms(),
        })
    }
}

/// The parameters of a signature credential.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SignatureParams {
    pub key_id: String,
    pub algorithm: String,
    /// Lower-case names, in order; `date` when the client lists none (Tyk's default).
    pub headers: Vec<String>,
    /// As sent (possibly URL-escaped base64).
    pub signature: String,
}

/// The credential's text: `Authorization: Signature ...` first, else the `Signature` header.
fn credential(parts: &Parts) -> Option<&[u8]> {
    if let Some(v) = parts.headers.get(header::AUTHORIZATION)
        && let Some(rest) = strip_scheme(v.as_bytes())
    {
        return Some(rest);
    }
    parts.headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes())
}

fn strip_scheme(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = (value.get(..10)?, value.get(10..)?);
    scheme.eq_ignore_ascii_case(b"signature ").then_some(rest)
}

/// Parses `k="v",k=v,...`: field names case-insensitive, quoted or bare values, no field
/// unknown or repeated (a repeated field could make two readers see two credentials).
pub fn parse_params(raw: &[u8]) -> Option<SignatureParams> {
    if raw.len() > MAX_HEADER_BYTES {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?;
    // A `Signature` header may still carry the scheme word.
    let text = match text.get(..10) {
        Some(s) if s.eq_ignore_ascii_case("signature ") => text.get(10..)?,
        _ => text,
    };
    let mut out = SignatureParams::default();
    let mut seen = [false; 4];
    let mut rest = text.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let name = rest.get(..eq)?.trim();
        rest = rest.get(eq + 1..)?.trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"')?;
            value = quoted.get(..end)?;
            rest = quoted.get(end + 1..)?.trim_start();
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest.get(..end)?.trim();
            rest = rest.get(end..)?;
        }
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start(),
            None if rest.is_empty() => {}
            None => return None,
        }
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        let (slot, field) = if is("keyid") {
            (0, &mut out.key_id)
        } else if is("algorithm") {
            (1, &mut out.algorithm)
        } else if is("headers") {
            (2, &mut String::new())
        } else if is("signature") {
            (3, &mut out.signature)
        } else {
            return None;
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None;
        }
        if slot == 2 {
            out.headers = value
                .split_ascii_whitespace()
                .map(str::to_ascii_lowercase)
                .collect();
            if out.headers.is_empty() || out.headers.len() > MAX_SIGNED_HEADERS {
                return None;
            }
        } else {
            *field = value.to_owned();
        }
    }
    if out.key_id.is_empty()
        || out.key_id.len() > MAX_KEY_ID_BYTES
        || out.signature.is_empty()
        || out.signature.len() > MAX_SIGNATURE_BYTES
        || out.algorithm.is_empty()
    {
        return None;
    }
    if out.headers.is_empty() {
        out.headers = vec!["date".to_owned()];
    }
    Some(out)
}

/// The signature's bytes. Tyk compares `url.QueryEscape(base64(mac))` and retries with
/// upper-cased escapes; decoding percent escapes (either case) and then base64 accepts those
/// clients and the plain base64 of draft-cavage libraries, and compares bytes, not spellings.
pub fn decode_signature(value: &str) -> Option<Vec<u8>> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    B64.decode(out).ok()
}

/// Appends one header's signed value: every value of it, trimmed, joined by `, `. None when
/// the request lacks it or a value is not visible ASCII.
fn push_header_value(out: &mut String, parts: &Parts, name: &str) -> Option<()> {
    let mut values = parts.headers.get_all(name).iter().peekable();
    values.peek()?;
    // Empty leading values add no separator (what Tyk-compatible clients sign).
    let start = out.len();
    for v in values {
        if out.len() > start {
            out.push_str(", ");
        }
        out.push_str(v.to_str().ok()?.trim());
    }
    Some(())
}

fn header_value(parts: &Parts, name: &str) -> Option<String> {
    let mut out = String::new();
    push_header_value(&mut out, parts, name)?;
    Some(out)
}

/// The signing strings the client may have signed: `(request-target)` over the path alone (as
/// Tyk), and over path and query (as draft-cavage) when there is a query. Each is written into
/// one buffer: this runs on every signed request.
pub fn signing_strings(parts: &Parts, headers: &[String]) -> Option<Vec<String>> {
    let method = parts.method.as_str();
    let path = parts.uri.path();
    let query = parts
        .uri
        .query()
        .filter(|_| headers.iter().any(|h| h == "(request-target)"));
    let build = |query: Option<&str>| -> Option<String> {
        let mut s = String::with_capacity(128 + path.len());
        for (i, name) in headers.iter().enumerate() {
            if i > 0 {
                s.push('\n');
            }
            if name == "(request-target)" {
                s.push_str("(request-target): ");
                s.extend(method.chars().map(|c| c.to_ascii_lowercase()));
                s.push(' ');
                s.push_str(path);
                if let Some(q) = query {
                    s.push('?');
                    s.push_str(q);
                }
            } else {
                s.push_str(name);
                s.push_str(": ");
                push_header_value(&mut s, parts, name)?;
            }
        }
        Some(s)
    };
    let mut out = Vec::with_capacity(2);
    out.push(build(None)?);
    if query.is_some() {
        out.push(build(query)?);
    }
    Some(out)
}

/// `Mon, 02 Jan 2006 15:04:05 MST` (any RFC 2822 zone) or Go's `... -07`, in unix ms.
pub fn parse_date(value: &str) -> Option<i64> {
    let value = value.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc2822(value) {
        return Some(t.timestamp_millis());
    }
    let (head, zone) = value.rsplit_once(' ')?;
    let hours_only = zone.len() == 3
        && zone.starts_with(['+', '-'])
        && zone.bytes().skip(1).all(|b| b.is_ascii_digit());
    if !hours_only {
        return None;
    }
    chrono::DateTime::parse_from_rfc2822(&format!("{head} {zone}00"))
        .ok()
        .map(|t| t.timestamp_millis())
}

fn hmac_algorithm(name: &str) -> Option<ring::hmac::Algorithm> {
    Some(match name {
        "hmac-sha1" => ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        "hmac-sha256" => ring::hmac::HMAC_SHA256,
        "hmac-sha384" => ring::hmac::HMAC_SHA384,
        "hmac-sha512" => ring::hmac::HMAC_SHA512,
        _ => return None,
    })
}

/// True when `signature` is the HMAC of one of `strings` under `secret` (ring compares in
/// constant time).
pub fn hmac_matches(
    alg: ring::hmac::Algorithm,
    secret: &[u8],
    strings: &[String],
    sig: &[u8],
) -> bool {
    let key = ring::hmac::Key::new(alg, secret);
    strings
        .iter()
        .any(|s| ring::hmac::verify(&key, s.as_bytes(), sig).is_ok())
}

/// The RSA public key (PKCS#1 DER) of a store certificate.
fn rsa_public_key(ctx: &RequestContext<'_>, id: &str) -> Result<Vec<u8>, ProxyError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let cert = ctx
        .certs
        .and_then(|c| c.get(id))
        .ok_or(ProxyError::HmacCertNotFound)?;
    // A bare public key keeps no SPKI at the edge: only certificates verify (docs/hmac.md).
    let leaf = cert.chain.first().ok_or(ProxyError::HmacCertNotRsa)?;
    let (_, x509) =
        X509Certificate::from_der(leaf.as_ref()).map_err(|_| ProxyError::HmacCertNotRsa)?;
    let spki = x509.public_key();
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
        return Err(ProxyError::HmacCertNotRsa);
    }
    Ok(spki.subject_public_key.data.to_vec())
}

impl HmacAuth {
    fn date_ok(&self, parts: &Parts, signed: &[String]) -> bool {
        // The clock is read from the header the client signed: an unsigned date could be
        // refreshed by anyone replaying the request (Tyk does not require it signed).
        let name = if parts.headers.contains_key(AUX_DATE) {
            AUX_DATE
        } else {
            "date"
        };
        if !signed.iter().any(|h| h == name) {
            return false;
        }
        let Some(when) = header_value(parts, name).and_then(|v| parse_date(&v)) else {
            return false;
        };
        match self.skew_ms {
            None => true,
            Some(skew) => {
                let now = chrono::Utc::now().timestamp_millis();
                ((now - when).abs() as f64) <= skew
            }
        }
    }
}

#[async_trait::async_trait]
impl AuthMethod for HmacAuth {
    fn provider(&self) -> Provider {
        Provider::HmacKey
    }

    fn needs_certs(&self) -> bool {
        true
    }

    fn presented(&self, ctx: &RequestContext<'_>) -> bool {
        credential(ctx.parts).is_some()
    }

    async fn authenticate(&self, ctx: &RequestContext<'_>) -> Result<Identity, ProxyError> {
        let params = credential(ctx.parts)
            .and_then(parse_params)
            .ok_or(ProxyError::HmacInvalid)?;
        if !self.allowed.contains(&params.algorithm) {
            return Err(ProxyError::HmacInvalid);
        }
        let sig = decode_signature(&params.signature).ok_or(ProxyError::HmacInvalid)?;
        let strings = signing_strings(ctx.parts, &params.headers).ok_or(ProxyError::HmacInvalid)?;
        let identity = ctx
            .stored_key(&params.key_id, Provider::HmacKey, ProxyError::HmacInvalid)
            .await?;
        let spec = identity.session.state.spec();
        let verified = if let Some(alg) = hmac_algorithm(&params.algorithm) {
            if !spec.hmac_enabled || spec.hmac_string.is_empty() {
                return Err(ProxyError::HmacInvalid);
            }
            let secret = identity
                .session
                .hmac_secret(|| {
                    crate::auth::stored_secrets::open(
                        &identity.key_hash,
                        HMAC_STRING_FIELD,
                        &spec.hmac_string,
                    )
                    .map_err(|_| {
                        tracing::warn!(key_hash = %identity.key_hash, "hmac_string does not open with this gateway's --encryption-secret");
                    })
                    .ok()
                })
                .ok_or(ProxyError::HmacInvalid)?;
            hmac_matches(alg, secret.as_bytes(), &strings, &sig)
        } else if params.algorithm == "rsa-sha256" {
            if !spec.enable_http_signature_validation || spec.rsa_certificate_id.is_empty() {
                return Err(ProxyError::HmacInvalid);
            }
            let key = rsa_public_key(ctx, &spec.rsa_certificate_id)?;
            let key = ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                key,
            );
            strings
                .iter()
                .any(|s| key.verify(s.as_bytes(), &sig).is_ok())
        } else {
            false
        };
        if !verified || !self.date_ok(ctx.parts, &params.headers) {
            return Err(ProxyError::HmacInvalid);
        }
        Ok(identity)
    }

    fn strip(&self, parts: &mut Parts) {
        if parts
            .headers
            .get(header::AUTHORIZATION)
            .is_some_and(|v| strip_scheme(v.as_bytes()).is_some())
        {
            parts.headers.remove(header::AUTHORIZATION);
        }
        parts.headers.remove(SIGNATURE_HEADER);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"9879879878787878";
    const DATE: &str = "Mon, 02 Jan 2006 15:04:05 MST";

    fn request(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method("GET").uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn check(alg: &str, headers: &[String], parts: &Parts, sig: &str) -> bool {
        let strings = signing_strings(parts, headers).unwrap();
        let sig = decode_signature(sig).unwrap();
        hmac_matches(hmac_algorithm(alg).unwrap(), SECRET, &strings, &sig)
    }

    #[test]
    fn tyk_test_vectors_verify() {
        let date_only = request("/", &[("date", DATE)]);
        let d = vec!["date".to_owned()];
        assert!(check(
            "hmac-sha1",
            &d,
            &date_only,
            "VpxtVE7Q7yq9o%2BhaY2A5Ie9c3ww%3D"
        ));
        assert!(check(
            "hmac-sha256",
            &d,
            &date_only,
            "3VXI44cRGLuLtE1b%2FRfdD5jR%2F9ykZjZI3QQsM8mlCjw%3D"
        ));
        assert!(check(
            "hmac-sha512",
            &d,
            &date_only,
            "E%2FT39Kb5zecFuJU5krtHs2RKGI9%2Fua7nh2mClscqlwkhZFx2uYH1zxFWZVxmnPOQJINirPcahQCB4%2F2e2jMqiA%3D%3D"
        ));
        // Lower-case escapes (the .NET quirk Tyk retries) and plain base64 both verify.
        assert!(check(
            "hmac-sha1",
            &d,
            &date_only,
            "VpxtVE7Q7yq9o%2bhaY2A5Ie9c3ww%3d"
        ));
        assert!(check(
            "hmac-sha1",
            &d,
            &date_only,
            "VpxtVE7Q7yq9o+haY2A5Ie9c3ww="
        ));
        // Another algorithm's name over the same MAC does not.
        assert!(!check(
            "hmac-sha256",
            &d,
            &date_only,
            "VpxtVE7Q7yq9o%2BhaY2A5Ie9c3ww%3D"
        ));

        let full = request(
            "/",
            &[("date", DATE), ("x-test-1", "hello"), ("x-test-2", "world")],
        );
        let h: Vec<String> = "(request-target) date x-test-1 x-test-2"
            .split(' ')
            .map(str::to_owned)
            .collect();
        assert!(check(
            "hmac-sha1",
            &h,
            &full,
            "%2FcBajzFBVGgoxuXHntg0hnYA%2FVo%3D"
        ));
        assert!(check(
            "hmac-sha256",
            &h,
            &full,
            "F%2BmZ0YaHamFGMPAm3bIYknGgeUuksNihUPp%2FeSWbQb8%3D"
        ));
        // A tampered header value breaks it.
        let tampered = request(
            "/",
            &[("date", DATE), ("x-test-1", "hellO"), ("x-test-2", "world")],
        );
        assert!(!check(
            "hmac-sha1",
            &h,
            &tampered,
            "%2FcBajzFBVGgoxuXHntg0hnYA%2FVo%3D"
        ));
    }

    #[test]
    fn parses_tyk_and_draft_forms() {
        let p = parse_params(
            br#"KeyId="9876",algorithm="hmac-sha1",headers="(request-target) Date",signature="a%2Fb""#,
        )
        .unwrap();
        assert_eq!(p.key_id, "9876");
        assert_eq!(p.headers, ["(request-target)", "date"]);
        assert_eq!(p.signature, "a%2Fb");
        let p = parse_params(b"Signature keyId=k, algorithm=hmac-sha256, signature=abc=").unwrap();
        assert_eq!(p.headers, ["date"]);
        assert_eq!(p.signature, "abc=");
        // Commas inside a quoted value stay in it.
        let p = parse_params(br#"keyId="a,b",algorithm="x",signature="s""#).unwrap();
        assert_eq!(p.key_id, "a,b");
    }

    #[test]
    fn malformed_credentials_are_refused_without_panic() {
        let bad: &[&[u8]] = &[
            b"",
            b"keyId",
            b"keyId=",
            br#"keyId="unterminated"#,
            br#"keyId="k",algorithm="a",signature="s",extra="x""#,
            br#"keyId="k",keyId="j",algorithm="a",signature="s""#,
            br#"keyId="k",algorithm="a",signature="s",signature="t""#,
            br#"keyId="k",algorithm="a""#,
            br#"keyId="k",signature="s""#,
            br#"keyId="k"x,algorithm="a",signature="s""#,
            br#"keyId="k",algorithm="a",headers="",signature="s""#,
            b"\xff\xfe=\"\"",
            b"=,=,=,",
            b",,,,",
        ];
        for b in bad {
            assert!(
                parse_params(b).is_none(),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        let huge = format!(
            r#"keyId="{}",algorithm="a",signature="s""#,
            "k".repeat(MAX_HEADER_BYTES)
        );
        assert!(parse_params(huge.as_bytes()).is_none());
        let many = format!(
            r#"keyId="k",algorithm="a",headers="{}",signature="s""#,
            "x ".repeat(MAX_SIGNED_HEADERS + 1)
        );
        assert!(parse_params(many.as_bytes()).is_none());
        for s in ["%", "%4", "%zz", "%%%", "not base64!", "é%"] {
            assert!(decode_signature(s).is_none(), "{s}");
        }
        // A listed header the request lacks makes no signing string.
        let parts = request("/", &[]);
        assert!(signing_strings(&parts, &["date".to_owned()]).is_none());
    }

    #[test]
    fn dates_in_either_tyk_layout() {
        assert_eq!(
            parse_date("Mon, 02 Jan 2006 15:04:05 GMT"),
            Some(1_136_214_245_000)
        );
        assert_eq!(
            parse_date("Mon, 02 Jan 2006 15:04:05 MST"),
            Some(1_136_239_445_000)
        );
        assert_eq!(
            parse_date("Mon, 02 Jan 2006 15:04:05 -07"),
            Some(1_136_239_445_000)
        );
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(parse_date("Mon, 02 Jan 2006 15:04:05 -0"), None);
    }

    #[test]
    fn repeated_headers_join_without_a_separator_for_empty_leading_values() {
        let parts = request("/p", &[("x-a", ""), ("x-a", " a "), ("x-a", "b")]);
        let s = signing_strings(&parts, &["x-a".to_owned()]).unwrap();
        assert_eq!(s, ["x-a: a, b"]);
        let parts = request("/p?", &[("date", DATE)]);
        let s =
            signing_strings(&parts, &["(request-target)".to_owned(), "date".to_owned()]).unwrap();
        assert_eq!(s[1], format!("(request-target): get /p?\ndate: {DATE}"));
    }

    #[test]
    fn request_target_with_and_without_query() {
        let parts = request("/p/q?a=1", &[("date", DATE)]);
        let s =
            signing_strings(&parts, &["(request-target)".to_owned(), "date".to_owned()]).unwrap();
        assert_eq!(s[0], format!("(request-target): get /p/q\ndate: {DATE}"));
        assert_eq!(
            s[1],
            format!("(request-target): get /p/q?a=1\ndate: {DATE}")
        );
    }
}
