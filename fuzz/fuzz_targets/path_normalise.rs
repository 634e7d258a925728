//! The request path normaliser run before routing. Any path never panics; a normal form is
//! absolute, has no empty, `.` or `..` segment, no backslash, no encoded slash or backslash and
//! no control byte, and is its own normal form; an unchanged path is borrowed, not copied.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use portcullis_data_plane::path::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(out) = normalize(path) else {
        return;
    };
    if let Cow::Borrowed(b) = &out {
        assert_eq!(*b, path, "borrowed output differs from the input");
    }
    if out.is_empty() || out == "*" {
        assert_eq!(out, path, "only \"\" and \"*\" pass as they are");
        return;
    }
    assert!(out.starts_with('/'), "{path:?} -> {out:?} is not absolute");
    let segments: Vec<&str> = out[1..].split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        assert!(
            !seg.is_empty() || i + 1 == segments.len(),
            "{path:?} -> {out:?} has an empty segment"
        );
        let name = seg.split(';').next().unwrap_or_default();
        assert!(
            name != "." && name != "..",
            "{path:?} -> {out:?} has a dot segment"
        );
        let upper = seg.to_ascii_uppercase();
        assert!(
            !upper.contains("%2E%2E") && upper != "%2E" && !upper.starts_with("%2E;"),
            "{path:?} -> {out:?} keeps an encoded dot segment"
        );
    }
    let upper = out.to_ascii_uppercase();
    for bad in ["\\", "%2F", "%5C", "%00", "%7F"] {
        assert!(!upper.contains(bad), "{path:?} -> {out:?} contains {bad}");
    }
    assert!(
        !out.bytes().any(|b| b < 0x20 || b == 0x7f),
        "{path:?} -> {out:?} contains a control byte"
    );
    match normalize(&out) {
        Ok(Cow::Borrowed(again)) => assert_eq!(again, out.as_ref()),
        other => panic!("{path:?} -> {out:?} is not its own normal form: {other:?}"),
    }
});
