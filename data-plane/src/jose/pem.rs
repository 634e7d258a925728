//! Just enough PEM (RFC 7468) for public keys: the first block's label and DER.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// PEM public keys and certificates are a few KiB; more is not a key.
pub(super) const MAX_PEM_LEN: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum PemError {
    TooLarge,
    NotPem,
    PrivateKey,
    BadBase64,
}

/// The first block of `input`: its label and decoded body. Any block anywhere in the input
/// that holds a private key refuses the whole input, so a bundle's key is never read.
pub(super) fn first_block(input: &[u8]) -> Result<(&str, Vec<u8>), PemError> {
    if input.len() > MAX_PEM_LEN {
        return Err(PemError::TooLarge);
    }
    let text = std::str::from_utf8(input).map_err(|_| PemError::NotPem)?;
    if text.contains("PRIVATE KEY-----") {
        return Err(PemError::PrivateKey);
    }
    let start = text.find("-----BEGIN ").ok_or(PemError::NotPem)?;
    let after = &text[start + "-----BEGIN ".len()..];
    let label_end = after.find("-----").ok_or(PemError::NotPem)?;
    let label = &after[..label_end];
    if label.contains(['\r', '\n']) {
        return Err(PemError::NotPem);
    }
    let body_and_rest = &after[label_end + "-----".len()..];
    let end_marker_at = body_and_rest.find("-----END ").ok_or(PemError::NotPem)?;
    let end_line = &body_and_rest[end_marker_at + "-----END ".len()..];
    if !end_line.starts_with(label) || !end_line[label.len()..].starts_with("-----") {
        return Err(PemError::NotPem);
    }
    let body = &body_and_rest[..end_marker_at];
    // RFC 7468 §2: whitespace (CRLF included) may appear anywhere in the body.
    let compact: Vec<u8> = body.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let der = STANDARD.decode(&compact).map_err(|_| PemError::BadBase64)?;
    Ok((label, der))
}
