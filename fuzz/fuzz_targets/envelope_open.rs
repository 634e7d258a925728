//! Sealed envelope (AES-256-GCM). Arbitrary bytes never open; a value sealed here opens with
//! the same key and associated data, and never after any change: a flipped bit anywhere, a
//! truncation, an extension, other associated data, another secret or another purpose.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_fuzz::split;
use portcullis_proto::envelope::{EnvelopeKey, label};

fuzz_target!(|data: &[u8]| {
    let key = EnvelopeKey::derive(b"fuzz-shared-secret-of-32-bytes!!", label::BACKUP);
    let (aad, rest) = split(data, 0);

    // Nobody without the key can make a value that opens.
    assert!(key.open(data, aad).is_err(), "forged value opened");
    assert!(key.open(rest, aad).is_err(), "forged value opened");

    let (edit, plaintext) = match rest.split_first() {
        Some((e, p)) => (*e, p),
        None => (0, rest),
    };
    let sealed = key.seal(plaintext, aad);
    assert_eq!(
        key.open(&sealed, aad).as_deref(),
        Ok(plaintext),
        "round trip"
    );

    let position = usize::from(edit) * 7 % sealed.len();
    let mut flipped = sealed.clone();
    flipped[position] ^= 1 << (edit % 8);
    assert!(
        key.open(&flipped, aad).is_err(),
        "bit {edit} at {position} flipped, still opened"
    );

    let cut = usize::from(edit) % sealed.len();
    assert!(
        key.open(&sealed[..cut], aad).is_err(),
        "truncated to {cut}, still opened"
    );

    let mut longer = sealed.clone();
    longer.push(edit);
    assert!(key.open(&longer, aad).is_err(), "extended, still opened");

    let mut other_aad = aad.to_vec();
    other_aad.push(edit);
    assert!(
        key.open(&sealed, &other_aad).is_err(),
        "other associated data opened"
    );

    let other_secret = EnvelopeKey::derive(b"fuzz-shared-secret-of-32-bytes!?", label::BACKUP);
    assert!(
        other_secret.open(&sealed, aad).is_err(),
        "other secret opened"
    );
    let other_label = EnvelopeKey::derive(b"fuzz-shared-secret-of-32-bytes!!", label::CA_KEY);
    assert!(
        other_label.open(&sealed, aad).is_err(),
        "other purpose opened"
    );
});
