//! JWTs signed by the `openssl` command line, a second implementation independent of the
//! gateway's (beside PyJWT, `pyjwt.rs`): `openssl dgst -sha256` computes the HMAC (`-mac HMAC`)
//! or the RSA PKCS#1 v1.5 / ECDSA signature (`-sign`), and for ES256 `openssl asn1parse` reads
//! the two integers of the DER `ECDSA-Sig-Value`, which become JOSE's raw `r || s` (RFC 7518
//! §3.4). This module only joins the base64url parts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::{Value, json};

/// What signs the token.
#[derive(Debug, Clone)]
pub enum Signer {
    /// HS256 with a shared secret.
    Hs256(Vec<u8>),
    /// RS256 with the RSA private key in this PEM file.
    Rs256(PathBuf),
    /// ES256 with the P-256 private key in this PEM file.
    Es256(PathBuf),
}

impl Signer {
    fn alg(&self) -> &'static str {
        match self {
            Self::Hs256(_) => "HS256",
            Self::Rs256(_) => "RS256",
            Self::Es256(_) => "ES256",
        }
    }
}

/// base64url without padding (RFC 7515 §2).
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Runs `openssl args…` with `input` on stdin; returns stdout, failing loudly otherwise.
fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(input)
        .expect("write to openssl");
    let out = child.wait_with_output().expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn path_arg(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 key path")
}

/// The signature of `input` as the JWS wants it.
fn signature(signer: &Signer, input: &[u8]) -> Vec<u8> {
    match signer {
        Signer::Hs256(secret) => {
            let key = format!("hexkey:{}", hex::encode(secret));
            let mac = openssl(
                &[
                    "dgst", "-sha256", "-mac", "HMAC", "-macopt", &key, "-binary",
                ],
                input,
            );
            assert_eq!(mac.len(), 32, "an HMAC-SHA256 is 32 bytes");
            mac
        }
        Signer::Rs256(key) => openssl(
            &["dgst", "-sha256", "-sign", path_arg(key), "-binary"],
            input,
        ),
        Signer::Es256(key) => der_to_jose(&der_signature(key, input)),
    }
}

/// The ECDSA signature of `input` with the private key in `key` as openssl writes it: DER.
pub fn der_signature(key: &Path, input: &[u8]) -> Vec<u8> {
    openssl(
        &["dgst", "-sha256", "-sign", path_arg(key), "-binary"],
        input,
    )
}

/// The DER `SEQUENCE { INTEGER r, INTEGER s }` of an ECDSA P-256 signature as 64 bytes
/// `r || s`, each left-padded to 32 bytes, read with `openssl asn1parse`.
pub fn der_to_jose(der: &[u8]) -> Vec<u8> {
    let parsed = openssl(&["asn1parse", "-inform", "DER"], der);
    let parsed = String::from_utf8(parsed).expect("asn1parse prints text");
    // Lines like `    2:d=1  hl=2 l=  33 prim: INTEGER           :9F3C…`.
    let ints: Vec<&str> = parsed
        .lines()
        .filter(|l| l.contains("prim: INTEGER"))
        .map(|l| l.rsplit(':').next().expect("a value").trim())
        .collect();
    assert_eq!(ints.len(), 2, "r and s: {parsed}");
    let mut raw = Vec::with_capacity(64);
    for int in ints {
        assert!(int.len() <= 64, "a P-256 integer fits 32 bytes: {int}");
        let padded = format!("{int:0>64}");
        raw.extend(hex::decode(padded).expect("asn1parse prints hex"));
    }
    raw
}

/// A compact JWS of `claims` signed by `signer`, with `typ: JWT` and `extra` header fields.
pub fn sign_with(signer: &Signer, extra: &Value, claims: &Value) -> String {
    let mut header = json!({"alg": signer.alg(), "typ": "JWT"});
    if let (Some(h), Some(extra)) = (header.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            h.insert(k.clone(), v.clone());
        }
    }
    let input = format!(
        "{}.{}",
        b64url(&serde_json::to_vec(&header).expect("header serialises")),
        b64url(&serde_json::to_vec(claims).expect("claims serialise"))
    );
    let sig = signature(signer, input.as_bytes());
    format!("{input}.{}", b64url(&sig))
}

/// [`sign_with`] on a blocking thread, no extra header fields.
pub async fn sign(signer: Signer, claims: Value) -> String {
    tokio::task::spawn_blocking(move || sign_with(&signer, &json!({}), &claims))
        .await
        .expect("openssl task")
}

/// `token` with bit `bit` (0 = the most significant) of byte `byte` of its part `part`
/// (0 header, 1 payload, 2 signature) flipped, the part re-encoded: a one-bit alteration.
pub fn flip_bit(token: &str, part: usize, byte: usize, bit: u8) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    assert_eq!(parts.len(), 3, "a compact JWS: {token}");
    let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&parts[part])
        .expect("base64url");
    bytes[byte] ^= 0x80 >> bit;
    parts[part] = b64url(&bytes);
    parts.join(".")
}
