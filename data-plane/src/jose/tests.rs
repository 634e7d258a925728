#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair};
use serde_json::{Map, Value, json};

use super::*;

const RSA_PK8: &[u8] = include_bytes!("testdata/rsa2048.pk8.der");
const RSA_SPKI: &str = include_str!("testdata/rsa2048.spki.pem");
const RSA_PKCS1: &str = include_str!("testdata/rsa2048.pkcs1.pem");
const RSA_CERT: &str = include_str!("testdata/rsa2048.cert.pem");
const RSA_PRIVATE: &str = include_str!("testdata/rsa2048.private.pem");
const RSA1024_SPKI: &str = include_str!("testdata/rsa1024.spki.pem");
const EC256_PK8: &[u8] = include_bytes!("testdata/ec256.pk8.der");
const EC256_SPKI: &str = include_str!("testdata/ec256.spki.pem");
const EC384_PK8: &[u8] = include_bytes!("testdata/ec384.pk8.der");
const EC384_SPKI: &str = include_str!("testdata/ec384.spki.pem");
/// Signed by `openssl dgst -sha256 -sign` with the rsa2048 key: an independent signer.
const RS256_OPENSSL: &str = include_str!("testdata/rs256.openssl.jwt");
const PS256_OPENSSL: &str = include_str!("testdata/ps256.openssl.jwt");

// RFC 7515 Appendix A.
const A1_TOKEN: &str = concat!(
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.",
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.",
    "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
);
const A1_K: &str =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
const A2_TOKEN: &str = concat!(
    "eyJhbGciOiJSUzI1NiJ9.",
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.",
    "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5",
    "jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb",
    "1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QO",
    "YEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"
);
const A2_N: &str = concat!(
    "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4",
    "d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5re",
    "xMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxX",
    "FvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"
);
const A3_TOKEN: &str = concat!(
    "eyJhbGciOiJFUzI1NiJ9.",
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.",
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
);
const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

fn hs(alg: &str, secret: &[u8], claims: &Value) -> String {
    let input = signing_input(&json!({"alg": alg, "typ": "JWT"}), claims);
    let algorithm = match alg {
        "HS256" => ring::hmac::HMAC_SHA256,
        "HS384" => ring::hmac::HMAC_SHA384,
        _ => ring::hmac::HMAC_SHA512,
    };
    let tag = ring::hmac::sign(&ring::hmac::Key::new(algorithm, secret), input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

fn rsa(alg: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({"alg": alg});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    let input = signing_input(&header, claims);
    let pair = RsaKeyPair::from_pkcs8(RSA_PK8).unwrap();
    let padding: &dyn signature::RsaEncoding = match alg {
        "RS256" => &signature::RSA_PKCS1_SHA256,
        "RS384" => &signature::RSA_PKCS1_SHA384,
        "RS512" => &signature::RSA_PKCS1_SHA512,
        "PS256" => &signature::RSA_PSS_SHA256,
        "PS384" => &signature::RSA_PSS_SHA384,
        _ => &signature::RSA_PSS_SHA512,
    };
    let mut sig = vec![0; pair.public().modulus_len()];
    pair.sign(padding, &SystemRandom::new(), input.as_bytes(), &mut sig)
        .unwrap();
    format!("{input}.{}", b64(&sig))
}

fn es(alg: &str, claims: &Value) -> String {
    let input = signing_input(&json!({"alg": alg}), claims);
    let rng = SystemRandom::new();
    let pair = match alg {
        "ES256" => {
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, EC256_PK8, &rng)
        }
        _ => EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, EC384_PK8, &rng),
    }
    .unwrap();
    let sig = pair.sign(&rng, input.as_bytes()).unwrap();
    format!("{input}.{}", b64(sig.as_ref()))
}

fn pem(s: &str) -> Key {
    Key::from_pem(s.as_bytes()).unwrap()
}

fn claims() -> Value {
    json!({"sub": "alice", "exp": 4_102_444_800_i64})
}

fn bad_key(r: Result<Key, JoseError>) -> String {
    match r {
        Err(JoseError::BadKey(m)) => m,
        other => panic!("expected BadKey, got {other:?}"),
    }
}

#[test]
fn names() {
    assert_eq!(Family::parse("hmac"), Some(Family::Hmac));
    assert_eq!(Family::parse("rsa"), Some(Family::Rsa));
    assert_eq!(Family::parse("ecdsa"), Some(Family::Ecdsa));
    assert_eq!(Family::parse("RSA"), None);
    assert_eq!(Family::parse(""), None);
    for a in [
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
        "ES384",
    ] {
        assert_eq!(Alg::parse(a).unwrap().as_str(), a);
    }
    for a in ["none", "None", "hs256", "ES512", "EdDSA", "HS256 ", ""] {
        assert_eq!(Alg::parse(a), None, "{a}");
    }
    assert_eq!(Alg::PS384.family(), Family::Rsa);
    assert_eq!(Alg::ES384.family(), Family::Ecdsa);
    assert_eq!(Alg::HS512.family(), Family::Hmac);
}

#[test]
fn rfc7515_a1_hs256() {
    let jws = decode(A1_TOKEN).unwrap();
    assert_eq!(jws.alg, Some(Alg::HS256));
    assert_eq!(jws.claims["iss"], "joe");
    assert_eq!(jws.claims["http://example.com/is_root"], true);
    assert_eq!(jws.signing_input, A1_TOKEN.rsplit_once('.').unwrap().0);
    let key = Key::from_jwk(&json!({"kty": "oct", "k": A1_K})).unwrap();
    assert_eq!(key.family(), Family::Hmac);
    verify(&jws, &key).unwrap();
    let raw = URL_SAFE_NO_PAD.decode(A1_K).unwrap();
    verify(&jws, &Key::hmac(&raw)).unwrap();
    assert_eq!(
        verify(&jws, &Key::hmac(b"another secret")),
        Err(JoseError::BadSignature)
    );
}

#[test]
fn rfc7515_a2_rs256() {
    let jws = decode(A2_TOKEN).unwrap();
    assert_eq!(jws.alg, Some(Alg::RS256));
    let key = Key::from_jwk(&json!({"kty": "RSA", "n": A2_N, "e": "AQAB"})).unwrap();
    assert_eq!(key.family(), Family::Rsa);
    verify(&jws, &key).unwrap();
    assert_eq!(verify(&jws, &pem(RSA_SPKI)), Err(JoseError::BadSignature));
}

#[test]
fn rfc7515_a3_es256() {
    let jws = decode(A3_TOKEN).unwrap();
    assert_eq!(jws.alg, Some(Alg::ES256));
    assert_eq!(jws.signature.len(), 64);
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y});
    let key = Key::from_jwk(&jwk).unwrap();
    assert_eq!(key.family(), Family::Ecdsa);
    verify(&jws, &key).unwrap();
    assert_eq!(verify(&jws, &pem(EC256_SPKI)), Err(JoseError::BadSignature));
}

#[test]
fn rfc7515_a4_es512_is_not_supported() {
    // A.4's payload is the text "Payload", not claims: not a token this gateway reads.
    let a4 = "eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA.AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZqwqT2SI-KGDKB34XO0aw_7XdtAG8GaSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8KpEHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn";
    assert_eq!(decode(a4).unwrap_err(), JoseError::Malformed);
    // The same alg over claims decodes, and is refused at verification.
    let token = format!(
        "eyJhbGciOiJFUzUxMiJ9.{}.{}",
        b64(br#"{"sub":"x"}"#),
        a4.rsplit_once('.').unwrap().1
    );
    let jws = decode(&token).unwrap();
    assert_eq!(jws.header.alg, "ES512");
    assert_eq!(jws.alg, None);
    assert_eq!(
        verify(&jws, &pem(EC384_SPKI)),
        Err(JoseError::UnsupportedAlg)
    );
}

#[test]
fn hmac_all_sizes() {
    for alg in ["HS256", "HS384", "HS512"] {
        let token = hs(alg, b"secret", &claims());
        let jws = decode(&token).unwrap();
        verify(&jws, &Key::hmac(b"secret")).unwrap();
        assert_eq!(
            verify(&jws, &Key::hmac(b"secreT")),
            Err(JoseError::BadSignature)
        );
    }
}

#[test]
fn rsa_all_algs_and_pem_forms() {
    let keys = [pem(RSA_SPKI), pem(RSA_PKCS1), pem(RSA_CERT)];
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        let token = rsa(alg, None, &claims());
        let jws = decode(&token).unwrap();
        for key in &keys {
            assert_eq!(key.family(), Family::Rsa);
            verify(&jws, key).unwrap();
        }
    }
}

#[test]
fn openssl_signed_tokens() {
    for token in [RS256_OPENSSL.trim(), PS256_OPENSSL.trim()] {
        let jws = decode(token).unwrap();
        assert_eq!(jws.claims["sub"], "openssl-signed");
        verify(&jws, &pem(RSA_SPKI)).unwrap();
        verify(&jws, &pem(RSA_CERT)).unwrap();
    }
    assert_eq!(
        decode(RS256_OPENSSL.trim()).unwrap().header.kid.as_deref(),
        Some("openssl")
    );
}

#[test]
fn ecdsa_both_curves_and_curve_must_match() {
    let p256 = pem(EC256_SPKI);
    let p384 = pem(EC384_SPKI);
    let t256 = decode_owned(es("ES256", &claims()));
    let t384 = decode_owned(es("ES384", &claims()));
    verify(&t256.jws(), &p256).unwrap();
    verify(&t384.jws(), &p384).unwrap();
    assert_eq!(verify(&t256.jws(), &p384), Err(JoseError::KeyMismatch));
    assert_eq!(verify(&t384.jws(), &p256), Err(JoseError::KeyMismatch));
}

struct Owned(String);
impl Owned {
    fn jws(&self) -> Jws<'_> {
        decode(&self.0).unwrap()
    }
}
fn decode_owned(s: String) -> Owned {
    Owned(s)
}

#[test]
fn alg_none_is_refused() {
    let token = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(br#"{"sub":"x"}"#));
    let jws = decode(&token).unwrap();
    assert_eq!(jws.alg, None);
    assert!(jws.signature.is_empty());
    for key in [Key::hmac(b""), pem(RSA_SPKI), pem(EC256_SPKI)] {
        assert_eq!(verify(&jws, &key), Err(JoseError::UnsupportedAlg));
    }
}

#[test]
fn alg_confusion_rsa_public_key_as_hmac_secret() {
    // The classic attack: sign HS256 with the public key's PEM bytes as the secret.
    let token = hs("HS256", RSA_SPKI.as_bytes(), &claims());
    let jws = decode(&token).unwrap();
    assert_eq!(verify(&jws, &pem(RSA_SPKI)), Err(JoseError::KeyMismatch));
    assert_eq!(verify(&jws, &pem(RSA_CERT)), Err(JoseError::KeyMismatch));
    let token = hs("HS256", EC256_SPKI.as_bytes(), &claims());
    assert_eq!(
        verify(&decode(&token).unwrap(), &pem(EC256_SPKI)),
        Err(JoseError::KeyMismatch)
    );
}

#[test]
fn wrong_family() {
    let rs = rsa("RS256", None, &claims());
    let jws = decode(&rs).unwrap();
    assert_eq!(verify(&jws, &Key::hmac(b"s")), Err(JoseError::KeyMismatch));
    assert_eq!(verify(&jws, &pem(EC256_SPKI)), Err(JoseError::KeyMismatch));
    let es = es("ES256", &claims());
    assert_eq!(
        verify(&decode(&es).unwrap(), &pem(RSA_SPKI)),
        Err(JoseError::KeyMismatch)
    );
}

#[test]
fn tampering() {
    let token = rsa("RS256", None, &claims());
    let (input, sig) = token.rsplit_once('.').unwrap();
    let (h, _) = input.split_once('.').unwrap();
    let forged = format!(
        "{h}.{}.{sig}",
        b64(br#"{"sub":"mallory","exp":4102444800}"#)
    );
    assert_eq!(
        verify(&decode(&forged).unwrap(), &pem(RSA_SPKI)),
        Err(JoseError::BadSignature)
    );
    let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
    raw[10] ^= 1;
    let flipped = format!("{input}.{}", b64(&raw));
    assert_eq!(
        verify(&decode(&flipped).unwrap(), &pem(RSA_SPKI)),
        Err(JoseError::BadSignature)
    );
    let short = format!("{input}.{}", b64(&raw[..raw.len() - 1]));
    assert_eq!(
        verify(&decode(&short).unwrap(), &pem(RSA_SPKI)),
        Err(JoseError::BadSignature)
    );
    let hs = hs("HS256", b"k", &claims());
    let (input, _) = hs.rsplit_once('.').unwrap();
    let empty = format!("{input}.");
    assert_eq!(
        verify(&decode(&empty).unwrap(), &Key::hmac(b"k")),
        Err(JoseError::BadSignature)
    );
    // The header is signed too: switching HS256 to HS384 breaks the signature.
    let swapped = format!(
        "{}.{}",
        b64(br#"{"alg":"HS384","typ":"JWT"}"#),
        hs.split_once('.').unwrap().1
    );
    assert_eq!(
        verify(&decode(&swapped).unwrap(), &Key::hmac(b"k")),
        Err(JoseError::BadSignature)
    );
}

#[test]
fn malformed_tokens() {
    let h = b64(br#"{"alg":"HS256"}"#);
    let p = b64(br#"{"sub":"x"}"#);
    let s = b64(b"sig");
    let cases: Vec<String> = vec![
        String::new(),
        "abc".into(),
        format!("{h}.{p}"),
        format!("{h}.{p}.{s}.{s}"),
        format!("{h}.{p}.{s}.{s}.{s}"),
        format!("{h}.{p}.{s}."),
        format!("{h}=.{p}.{s}"),
        format!("{h}.{p}.c2ln=="),
        format!("{h}.{p}.{s}="),
        format!("{h}.{p}.si+g"),
        format!("{h}.{p}.si/g"),
        format!("{h}.{p}.s!g"),
        format!("{h} .{p}.{s}"),
        format!(" {h}.{p}.{s}"),
        // Non-canonical trailing bits ("sih" and "sig" both decode to the same bytes otherwise).
        format!("{h}.{p}.sih"),
        format!(".{p}.{s}"),
        format!("{h}..{s}"),
        format!("{}.{p}.{s}", b64(b"[\"HS256\"]")),
        format!("{}.{p}.{s}", b64(b"\"HS256\"")),
        format!("{}.{p}.{s}", b64(b"{}")),
        format!("{}.{p}.{s}", b64(br#"{"alg":256}"#)),
        format!("{}.{p}.{s}", b64(br#"{"alg":null}"#)),
        format!("{}.{p}.{s}", b64(br#"{"alg":"HS256","kid":7}"#)),
        format!("{}.{p}.{s}", b64(br#"{"alg":"HS256","alg":"none"}"#)),
        format!("{}.{p}.{s}", b64(br#"{"alg":"HS256"} x"#)),
        format!(
            "{}.{p}.{s}",
            b64(br#"{"alg":"HS256","crit":["exp"],"exp":1}"#)
        ),
        format!(
            "{}.{p}.{s}",
            b64(br#"{"alg":"HS256","b64":false,"crit":["b64"]}"#)
        ),
        format!("{}.{p}.{s}", b64(b"\xff\xfe")),
        format!("{h}.{}.{s}", b64(b"[1,2]")),
        format!("{h}.{}.{s}", b64(b"null")),
        format!("{h}.{}.{s}", b64(b"\"claims\"")),
        format!("{h}.{}.{s}", b64(b"42")),
        format!("{h}.{}.{s}", b64(br#"{"a":1}{"b":2}"#)),
        format!("{h}.{}.{s}", b64(b"{")),
    ];
    for token in &cases {
        assert_eq!(
            decode(token).unwrap_err(),
            JoseError::Malformed,
            "{token:?}"
        );
    }
    assert!(decode(&format!("{h}.{p}.{s}")).is_ok());
    // A header with other fields and a whitespace-wrapped payload are fine.
    let ok = format!(
        "{}.{}.{s}",
        b64(br#"{"typ":"JWT","x5t":"abc","alg":"RS256","kid":"k1","nested":{"a":[1]}}"#),
        b64(b" \r\n{\"sub\":\"x\"} ")
    );
    let jws = decode(&ok).unwrap();
    assert_eq!(jws.alg, Some(Alg::RS256));
    assert_eq!(jws.header.kid.as_deref(), Some("k1"));
}

#[test]
fn size_and_depth_bounds() {
    let big = "a".repeat(MAX_TOKEN_LEN + 1);
    assert_eq!(decode(&big).unwrap_err(), JoseError::TooLarge);
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    let token = format!("{}.{}.", b64(br#"{"alg":"HS256"}"#), b64(deep.as_bytes()));
    assert_eq!(decode(&token).unwrap_err(), JoseError::Malformed);
    // Ignored header members are skipped without recursion: as deep as the size bound
    // allows, and no stack overflow.
    let deep_header = format!(
        "{{\"alg\":\"HS256\",\"x\":{}1{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let token = format!("{}.{}.", b64(deep_header.as_bytes()), b64(b"{}"));
    assert!(token.len() < MAX_TOKEN_LEN);
    assert_eq!(decode(&token).unwrap().alg, Some(Alg::HS256));
    let unbalanced = format!("{{\"alg\":\"HS256\",\"x\":{}", "[".repeat(5000));
    let token = format!("{}.{}.", b64(unbalanced.as_bytes()), b64(b"{}"));
    assert_eq!(decode(&token).unwrap_err(), JoseError::Malformed);
}

#[test]
fn pem_forms_and_refusals() {
    let crlf = RSA_SPKI.replace('\n', "\r\n");
    assert_eq!(pem(&format!("\n\n  {crlf}  \n")).family(), Family::Rsa);
    assert_eq!(pem(EC384_SPKI).family(), Family::Ecdsa);
    let m = bad_key(Key::from_pem(RSA_PRIVATE.as_bytes()));
    assert!(m.contains("private key"), "{m}");
    let bundle = format!("{RSA_CERT}{RSA_PRIVATE}");
    assert!(bad_key(Key::from_pem(bundle.as_bytes())).contains("private key"));
    let ec_private = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
    assert!(bad_key(Key::from_pem(ec_private.as_bytes())).contains("private key"));
    let m = bad_key(Key::from_pem(RSA1024_SPKI.as_bytes()));
    assert!(m.contains("1024 bits") && m.contains("2048"), "{m}");
    bad_key(Key::from_pem(b"not a pem"));
    bad_key(Key::from_pem(b""));
    bad_key(Key::from_pem(
        b"-----BEGIN PUBLIC KEY-----\nMIIB!!\n-----END PUBLIC KEY-----\n",
    ));
    bad_key(Key::from_pem(
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    ));
    bad_key(Key::from_pem(
        RSA_SPKI
            .replace("END PUBLIC KEY", "END CERTIFICATE")
            .as_bytes(),
    ));
    bad_key(Key::from_pem(
        RSA_SPKI.replace("PUBLIC KEY", "X509 CRL").as_bytes(),
    ));
    // An SPKI labelled as PKCS#1 is not PKCS#1.
    bad_key(Key::from_pem(
        RSA_SPKI.replace("PUBLIC KEY", "RSA PUBLIC KEY").as_bytes(),
    ));
    let huge = vec![b'A'; 70 * 1024];
    assert!(bad_key(Key::from_pem(&huge)).contains("64 KiB"));
    // Ed25519 SPKI (RFC 8410 example).
    let ed = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
    assert!(bad_key(Key::from_pem(ed.as_bytes())).contains("not RSA or EC"));
}

#[test]
fn jwk_forms_and_refusals() {
    let rsa = json!({"kty": "RSA", "n": A2_N, "e": "AQAB", "use": "sig", "alg": "RS256"});
    let key = Key::from_jwk(&rsa).unwrap();
    assert_eq!(key.pinned_alg(), Some(Alg::RS256));
    // A key pinned to RS256 does not serve PS256 even though the family matches.
    let ps = rsa_fixture_key_jwk(Some("RS256"));
    let jws_ps = decode_owned(self::rsa("PS256", None, &claims()));
    assert_eq!(verify(&jws_ps.jws(), &ps), Err(JoseError::KeyMismatch));
    verify(&jws_ps.jws(), &rsa_fixture_key_jwk(None)).unwrap();

    let m = bad_key(Key::from_jwk(
        &json!({"kty": "RSA", "n": A2_N, "e": "AQAB", "use": "enc"}),
    ));
    assert!(m.contains("use"), "{m}");
    bad_key(Key::from_jwk(
        &json!({"kty": "RSA", "n": A2_N, "e": "AQAB", "alg": "RSA-OAEP"}),
    ));
    bad_key(Key::from_jwk(
        &json!({"kty": "RSA", "n": A2_N, "e": "AQAB", "alg": "ES256"}),
    ));
    bad_key(Key::from_jwk(
        &json!({"kty": "RSA", "n": A2_N, "e": "AQAB", "key_ops": ["encrypt"]}),
    ));
    Key::from_jwk(&json!({"kty": "RSA", "n": A2_N, "e": "AQAB", "key_ops": ["verify"]})).unwrap();
    bad_key(Key::from_jwk(&json!({"kty": "RSA", "n": A2_N})));
    bad_key(Key::from_jwk(
        &json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
    ));
    bad_key(Key::from_jwk(
        &json!({"kty": "RSA", "n": A2_N, "e": "AQAC"}),
    ));
    bad_key(Key::from_jwk(
        &json!({"kty": "RSA", "n": "!!", "e": "AQAB"}),
    ));
    bad_key(Key::from_jwk(&json!({"kty": "RSA"})));
    bad_key(Key::from_jwk(
        &json!({"kty": "OKP", "crv": "Ed25519", "x": A3_X}),
    ));
    bad_key(Key::from_jwk(
        &json!({"kty": "EC", "crv": "P-521", "x": A3_X, "y": A3_Y}),
    ));
    bad_key(Key::from_jwk(
        &json!({"kty": "EC", "crv": "P-384", "x": A3_X, "y": A3_Y}),
    ));
    bad_key(Key::from_jwk(
        &json!({"kty": "EC", "crv": "P-256", "x": A3_X}),
    ));
    bad_key(Key::from_jwk(
        &json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": "AAAA"}),
    ));
    bad_key(Key::from_jwk(&json!({"kty": "oct", "k": ""})));
    bad_key(Key::from_jwk(&json!({"kty": 1})));
    bad_key(Key::from_jwk(&json!({})));
    bad_key(Key::from_jwk(&json!([1])));
    // Padded values are forgiven.
    Key::from_jwk(&json!({"kty": "oct", "k": format!("{A1_K}==")})).unwrap();

    // x5c only (Tyk's legacy form): the first certificate's key.
    let der = cert_der();
    let x5c = json!({"kty": "RSA", "kid": "c", "x5c": [STANDARD.encode(&der)]});
    let key = Key::from_jwk(&x5c).unwrap();
    verify(&decode(RS256_OPENSSL.trim()).unwrap(), &key).unwrap();
    let no_kty = json!({"x5c": [STANDARD.encode(&der), "ignored"]});
    Key::from_jwk(&no_kty).unwrap();
    bad_key(Key::from_jwk(&json!({"kty": "RSA", "x5c": ["!!"]})));
    bad_key(Key::from_jwk(&json!({"kty": "RSA", "x5c": []})));
    bad_key(Key::from_jwk(
        &json!({"kty": "RSA", "x5c": [STANDARD.encode(b"junk")]}),
    ));
}

fn cert_der() -> Vec<u8> {
    let body: String = RSA_CERT
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    STANDARD.decode(body).unwrap()
}

/// The rsa2048 fixture as a JWK, via its certificate, optionally pinned.
fn rsa_fixture_key_jwk(alg: Option<&str>) -> Key {
    let mut jwk = json!({"kty": "RSA", "x5c": [STANDARD.encode(cert_der())]});
    if let Some(alg) = alg {
        jwk["alg"] = json!(alg);
    }
    Key::from_jwk(&jwk).unwrap()
}

#[test]
fn key_set_rotation_and_lookup() {
    let doc = json!({"keys": [
        {"kid": "old", "kty": "RSA", "n": A2_N, "e": "AQAB", "use": "sig"},
        {"kid": "new", "kty": "RSA", "x5c": [STANDARD.encode(cert_der())]},
        {"kid": "enc", "kty": "RSA", "n": A2_N, "e": "AQAB", "use": "enc"},
        {"kid": "ec", "kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y},
        {"kid": "okp", "kty": "OKP", "crv": "Ed25519", "x": A3_X},
        {"kid": 5, "kty": "oct", "k": A1_K},
        "not an object"
    ]});
    let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
    assert_eq!(set.len(), 3);
    assert!(!set.is_empty());
    assert_eq!(set.skipped(), 4);
    assert!(set.has_kid("old") && set.has_kid("new") && set.has_kid("ec"));
    assert!(!set.has_kid("enc") && !set.has_kid("unknown"));

    let old = decode(A2_TOKEN).unwrap();
    let new = decode(RS256_OPENSSL.trim()).unwrap();
    verify(&old, set.find(Some("old"), Family::Rsa).unwrap()).unwrap();
    verify(&new, set.find(Some("new"), Family::Rsa).unwrap()).unwrap();
    assert_eq!(
        verify(&new, set.find(Some("old"), Family::Rsa).unwrap()),
        Err(JoseError::BadSignature)
    );
    assert!(set.find(Some("unknown"), Family::Rsa).is_none());
    assert!(set.find(Some("ec"), Family::Rsa).is_none());
    assert!(set.find(Some("old"), Family::Hmac).is_none());
    // No kid: only when one key of the family could be meant.
    assert!(set.find(None, Family::Rsa).is_none());
    assert!(set.find(None, Family::Ecdsa).is_some());
    assert!(set.find(None, Family::Hmac).is_none());
    assert_eq!(set.iter().count(), 3);
}

#[test]
fn key_set_refusals() {
    for doc in [
        &b"{\"keys\":[]}"[..],
        b"{\"keys\":[{\"kty\":\"OKP\"}]}",
        b"{\"keys\":{}}",
        b"{}",
        b"[]",
        b"not json",
        b"",
    ] {
        assert!(
            matches!(KeySet::parse(doc), Err(JoseError::BadKey(_))),
            "{}",
            String::from_utf8_lossy(doc)
        );
    }
    let huge = vec![b' '; 1024 * 1024 + 1];
    assert_eq!(KeySet::parse(&huge).unwrap_err(), JoseError::TooLarge);
    let many: Vec<Value> = (0..150)
        .map(|i| json!({"kid": i.to_string(), "kty": "oct", "k": "c2VjcmV0"}))
        .collect();
    let set = KeySet::parse(json!({ "keys": many }).to_string().as_bytes()).unwrap();
    assert_eq!(set.len(), 100);
    assert_eq!(set.skipped(), 50);
    assert!(set.has_kid("99") && !set.has_kid("100"));
}

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

#[test]
fn nested_claims() {
    let c = map(json!({
        "sub": "alice",
        "realm_access": {"roles": ["admin", "user"]},
        "a.b": "exact",
        "a": {"b": "nested", "c": {"d": 4}},
        "resource_access": {"account": {"roles": ["view"]}},
    }));
    assert_eq!(claim(&c, "sub"), Some(&json!("alice")));
    assert_eq!(
        claim(&c, "realm_access.roles"),
        Some(&json!(["admin", "user"]))
    );
    assert_eq!(claim(&c, "a.b"), Some(&json!("exact")));
    assert_eq!(claim(&c, "a.c.d"), Some(&json!(4)));
    assert_eq!(
        claim(&c, "resource_access.account.roles"),
        Some(&json!(["view"]))
    );
    assert_eq!(claim(&c, "sub.x"), None);
    assert_eq!(claim(&c, "realm_access.roles.0"), None);
    assert_eq!(claim(&c, "missing"), None);
    assert_eq!(claim(&c, ""), None);
    assert_eq!(claim(&c, "."), None);
    assert_eq!(claim(&c, "a..b"), None);
}

#[test]
fn time_checks() {
    const NOW: i64 = 1_700_000_000;
    let s = |expires_at, issued_at, not_before| Skews {
        issued_at,
        expires_at,
        not_before,
    };
    use TimeError::*;
    let cases: Vec<(Value, Skews, Result<(), TimeError>)> = vec![
        (json!({}), s(0, 0, 0), Ok(())),
        (json!({"exp": NOW + 10}), s(0, 0, 0), Ok(())),
        (json!({"exp": NOW}), s(0, 0, 0), Err(Expired)),
        (json!({"exp": NOW + 1}), s(0, 0, 0), Ok(())),
        // Tyk: exp one second in the past is refused unless the skew is at least 2.
        (json!({"exp": NOW - 1}), s(0, 0, 0), Err(Expired)),
        (json!({"exp": NOW - 1}), s(1, 0, 0), Err(Expired)),
        (json!({"exp": NOW - 1}), s(2, 0, 0), Ok(())),
        (
            json!({"exp": (NOW - 1) as f64 + 0.9}),
            s(1, 0, 0),
            Err(Expired),
        ),
        (json!({"exp": NOW as f64 + 1.5}), s(0, 0, 0), Ok(())),
        (json!({"exp": 0}), s(0, 0, 0), Ok(())),
        (json!({"exp": 0.0}), s(0, 0, 0), Ok(())),
        (json!({"exp": -5}), s(0, 0, 0), Err(Expired)),
        (json!({"exp": 1e300}), s(0, 0, 0), Ok(())),
        (json!({"exp": "4102444800"}), s(0, 0, 0), Err(Expired)),
        (json!({"exp": null}), s(0, 0, 0), Err(Expired)),
        (json!({"exp": NOW - 1}), s(u64::MAX, 0, 0), Ok(())),
        (json!({"iat": NOW}), s(0, 0, 0), Ok(())),
        (json!({"iat": NOW + 1}), s(0, 0, 0), Err(UsedBeforeIssued)),
        (json!({"iat": NOW + 1}), s(0, 1, 0), Ok(())),
        (json!({"iat": NOW + 2}), s(0, 1, 0), Err(UsedBeforeIssued)),
        (json!({"iat": "now"}), s(0, 0, 0), Err(UsedBeforeIssued)),
        (json!({"nbf": NOW}), s(0, 0, 0), Ok(())),
        (json!({"nbf": NOW + 1}), s(0, 0, 0), Err(NotYetValid)),
        (json!({"nbf": NOW + 5}), s(0, 0, 5), Ok(())),
        (json!({"nbf": NOW + 6}), s(0, 0, 5), Err(NotYetValid)),
        (json!({"nbf": [1]}), s(0, 0, 0), Err(NotYetValid)),
        (json!({"nbf": NOW + 1}), s(0, 0, u64::MAX), Ok(())),
        // Several failures: Tyk reports the last one checked (exp, iat, nbf).
        (
            json!({"exp": NOW - 9, "iat": NOW + 9}),
            s(0, 0, 0),
            Err(UsedBeforeIssued),
        ),
        (
            json!({"exp": NOW - 9, "iat": NOW + 9, "nbf": NOW + 9}),
            s(0, 0, 0),
            Err(NotYetValid),
        ),
        (
            json!({"exp": NOW - 9, "iat": NOW - 99, "nbf": NOW - 99}),
            s(0, 0, 0),
            Err(Expired),
        ),
        // The skews are separate.
        (json!({"exp": NOW - 1}), s(0, 5, 5), Err(Expired)),
    ];
    for (claims, skews, want) in cases {
        assert_eq!(
            check_times(&map(claims.clone()), NOW, skews),
            want,
            "{claims} {skews:?}"
        );
    }
    assert_eq!(Expired.message(), "Key not authorized: token has expired");
    assert_eq!(
        UsedBeforeIssued.message(),
        "Key not authorized: token used before issued"
    );
    assert_eq!(
        NotYetValid.message(),
        "Key not authorized: token is not valid yet"
    );
}

#[test]
fn digest() {
    let d = token_digest("abc");
    assert_eq!(
        d[..4],
        [0xba, 0x78, 0x16, 0xbf],
        "sha256(\"abc\") starts ba7816bf"
    );
    assert_ne!(token_digest(A1_TOKEN), token_digest(A2_TOKEN));
}

#[test]
fn debug_shows_no_key_material() {
    let s = format!("{:?}", Key::hmac(b"topsecret"));
    assert!(!s.contains("topsecret"));
    assert_eq!(format!("{:?}", pem(RSA_SPKI)), "Key(rsa 2048 bits)");
}

proptest::proptest! {
    #[test]
    fn decode_never_panics(s in "\\PC{0,300}") {
        let _ = decode(&s);
    }

    #[test]
    fn decode_never_panics_on_token_shapes(
        h in "[A-Za-z0-9_=+/-]{0,60}",
        p in "[A-Za-z0-9_=+/-]{0,60}",
        s in "[A-Za-z0-9_=+/.-]{0,60}",
    ) {
        let token = format!("{h}.{p}.{s}");
        if let Ok(jws) = decode(&token) {
            let _ = verify(&jws, &Key::hmac(b"k"));
        }
    }

    #[test]
    fn decode_never_panics_on_json_parts(header in "\\PC{0,80}", payload in "\\PC{0,80}", sig in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
        let token = format!("{}.{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()), b64(&sig));
        if let Ok(jws) = decode(&token) {
            let _ = check_times(&jws.claims, 0, Skews::default());
            let _ = verify(&jws, &Key::hmac(b"k"));
        }
    }

    #[test]
    fn from_pem_and_jwk_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
        let _ = Key::from_pem(&bytes);
        let _ = KeySet::parse(&bytes);
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            let _ = Key::from_jwk(&v);
        }
    }
}
