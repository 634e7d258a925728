//! Bearer JWTs (`data-plane/src/jose`): any bytes. A token is refused or decodes strictly: its
//! signing input is its own prefix and it re-encodes to exactly what was sent (no padding, no
//! stray bits, so no two spellings of one signature); `alg` is `None` exactly when it is not
//! one the gateway verifies; a key of another family never verifies (alg confusion); a token
//! signed with a secret verifies with that secret only. The same bytes as a PEM or a JWK set
//! are refused or give a key.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use portcullis_data_plane::jose::{
    Alg, Family, JoseError, Key, KeySet, Skews, check_times, claim, decode, verify,
};

fuzz_target!(|data: &[u8]| {
    let _ = Key::from_pem(data);
    let _ = KeySet::parse(data);
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(jws) = decode(token) else {
        return;
    };
    assert!(token.starts_with(jws.signing_input));
    assert_eq!(
        token,
        format!(
            "{}.{}",
            jws.signing_input,
            URL_SAFE_NO_PAD.encode(&jws.signature)
        ),
        "a decoded token re-encodes to itself"
    );
    assert_eq!(jws.alg, Alg::parse(&jws.header.alg));
    let _ = check_times(&jws.claims, 1_800_000_000, Skews::default());
    let _ = claim(&jws.claims, "realm_access.roles");

    let hmac = Key::hmac(b"fuzz secret");
    match jws.alg {
        None => assert_eq!(verify(&jws, &hmac), Err(JoseError::UnsupportedAlg)),
        Some(alg) if alg.family() != Family::Hmac => {
            assert_eq!(verify(&jws, &hmac), Err(JoseError::KeyMismatch));
        }
        Some(alg) => {
            let hash = match alg {
                Alg::HS256 => independent_hmac::Hash::Sha256,
                Alg::HS384 => independent_hmac::Hash::Sha384,
                _ => independent_hmac::Hash::Sha512,
            };
            let tag = independent_hmac::sign(hash, b"fuzz secret", jws.signing_input.as_bytes());
            let signed = format!("{}.{}", jws.signing_input, URL_SAFE_NO_PAD.encode(&tag));
            let resigned = decode(&signed).expect("a re-signed token decodes");
            assert_eq!(verify(&resigned, &hmac), Ok(()));
            assert_eq!(
                verify(&resigned, &Key::hmac(b"other secret")),
                Err(JoseError::BadSignature)
            );
            if tag != jws.signature {
                assert_eq!(verify(&jws, &hmac), Err(JoseError::BadSignature));
            }
        }
    }
});

/// HMAC from RFC 2104 over `sha2`, independent of the `ring` code under test.
mod independent_hmac {
    pub enum Hash {
        Sha256,
        Sha384,
        Sha512,
    }

    fn hmac<D: sha2::Digest>(block: usize, key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut k = if key.len() > block {
            D::digest(key).to_vec()
        } else {
            key.to_vec()
        };
        k.resize(block, 0);
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let mut inner = D::new();
        inner.update(&ipad);
        inner.update(msg);
        let inner = inner.finalize();
        let mut outer = D::new();
        outer.update(&opad);
        outer.update(&inner);
        outer.finalize().to_vec()
    }

    pub fn sign(hash: Hash, key: &[u8], msg: &[u8]) -> Vec<u8> {
        match hash {
            Hash::Sha256 => hmac::<sha2::Sha256>(64, key, msg),
            Hash::Sha384 => hmac::<sha2::Sha384>(128, key, msg),
            Hash::Sha512 => hmac::<sha2::Sha512>(128, key, msg),
        }
    }
}
