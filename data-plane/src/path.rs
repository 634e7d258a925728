//! The request path normaliser. Routing, `strip_listen_path`, `allowed_urls` and the upstream
//! must all see the same path; a path the gateway reads one way and an upstream another (dot
//! segments, encoded dots or slashes, backslashes) would let a client reach one API through
//! another's listen path. See docs/gateway.md, "Request paths".
//!
//! The rules, applied once per request before routing:
//! * `%XX` of an unreserved character (`A-Z a-z 0-9 - . _ ~`, RFC 3986 §2.3) is decoded, other
//!   escapes get upper-case hex (§6.2.2.1 and §6.2.2.2), so `%2e` is a dot and `%70` a `p`;
//! * `.` and `..` segments are removed (§5.2.4); a `..` above the root is refused;
//! * runs of `/` become one (as nginx's `merge_slashes`);
//! * refused: `%2F` (an encoded `/`), `\` and `%5C`, control bytes raw or encoded (`%00`-`%1F`,
//!   `%7F`), a `%` not followed by two hex digits, and `.`/`..` carrying `;` parameters (`..;`,
//!   which Java servlet containers read as `..`).

use std::borrow::Cow;

/// Why a path is refused; the message is the client's 400 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("Path contains an encoded slash")]
    EncodedSlash,
    #[error("Path contains a backslash")]
    Backslash,
    #[error("Path contains a control character")]
    ControlByte,
    #[error("Path contains a malformed percent-encoding")]
    BadPercent,
    #[error("Path goes above the root")]
    AboveRoot,
    #[error("Path contains a dot segment with parameters")]
    DotParams,
    #[error("Path is not absolute")]
    NotAbsolute,
}

/// What the gateway operator relaxed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathRules {
    /// Keep `%2F` (as `%2F`, inside its segment) instead of refusing it, for APIs that put
    /// encoded slashes in identifiers (`--allow-encoded-slashes`). The gateway then routes on
    /// a segment that an upstream decoding `%2F` splits in two.
    pub allow_encoded_slashes: bool,
}

/// The normal form of a request path (without its query) under the default rules. Borrows,
/// allocation-free, when the path is already normal; `""` (authority-form) and `*`
/// (asterisk-form) pass unchanged.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    normalize_with(path, PathRules::default())
}

/// [`normalize`] under `rules`.
pub fn normalize_with(path: &str, rules: PathRules) -> Result<Cow<'_, str>, PathError> {
    if path.is_empty() || path == "*" {
        return Ok(Cow::Borrowed(path));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path.as_bytes(), rules) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path, rules)?;
    remove_dot_segments(&decoded).map(Cow::Owned)
}

/// True when `normalize` would return `path` unchanged: no escapes but kept ones, no
/// backslashes or control bytes, no empty segment but a trailing one, no `.` or `..` segment
/// (with or without `;` parameters). `path` starts with `/`.
fn is_normal(path: &[u8], rules: PathRules) -> bool {
    let mut seg_start = 1;
    for i in 1..=path.len() {
        let b = path.get(i).copied();
        match b {
            Some(b'%') if !is_kept_escape(path.get(i + 1..i + 3), rules) => return false,
            Some(b'\\' | 0..0x20 | 0x7f) => return false,
            Some(b'/') | None => {
                let seg = &path[seg_start..i];
                let last = b.is_none();
                if (seg.is_empty() && !last) || is_dot_name(seg) {
                    return false;
                }
                seg_start = i + 1;
            }
            _ => {}
        }
    }
    true
}

/// An escape that `decode` leaves as it is: upper-case hex, not of an unreserved character nor
/// of one that is refused.
fn is_kept_escape(hex: Option<&[u8]>, rules: PathRules) -> bool {
    let Some(&[hi, lo]) = hex else {
        return false;
    };
    let upper = |h: u8| h.is_ascii_digit() || (b'A'..=b'F').contains(&h);
    if !(upper(hi) && upper(lo)) {
        return false;
    }
    match (hex_val(hi), hex_val(lo)) {
        (Some(2), Some(0xF)) => rules.allow_encoded_slashes,
        (Some(hi), Some(lo)) => !matches!(
            hi << 4 | lo,
            b'/' | b'\\' | 0..0x20 | 0x7f
                | b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~'
        ),
        _ => false,
    }
}

/// `.` or `..`, alone or followed by `;` parameters.
fn is_dot_name(seg: &[u8]) -> bool {
    let name = seg.split(|&b| b == b';').next().unwrap_or(seg);
    name == b"." || name == b".."
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Decodes escapes of unreserved characters and upper-cases the others; refuses what the rules
/// above refuse.
fn decode(path: &str, rules: PathRules) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|&h| hex_val(h));
                let lo = bytes.get(i + 2).and_then(|&l| hex_val(l));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadPercent);
                };
                let v = hi << 4 | lo;
                match v {
                    b'/' if !rules.allow_encoded_slashes => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    0..0x20 | 0x7f => return Err(PathError::ControlByte),
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        out.push(char::from(v));
                    }
                    _ => {
                        out.push('%');
                        out.push(char::from(HEX[usize::from(hi)]));
                        out.push(char::from(HEX[usize::from(lo)]));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0..0x20 | 0x7f => return Err(PathError::ControlByte),
            _ => {
                // Copy up to the next byte of interest in one go (keeps UTF-8 sequences whole).
                let end = bytes[i..]
                    .iter()
                    .position(|&c| matches!(c, b'%' | b'\\' | 0..0x20 | 0x7f))
                    .map_or(bytes.len(), |p| i + p);
                out.push_str(&path[i..end]);
                i = end;
            }
        }
    }
    Ok(out)
}

fn hex_val(h: u8) -> Option<u8> {
    match h {
        b'0'..=b'9' => Some(h - b'0'),
        b'a'..=b'f' => Some(h - b'a' + 10),
        b'A'..=b'F' => Some(h - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §5.2.4 on an absolute path, with empty segments merged and `..` above the root
/// refused. A path ending in `/`, `/.` or `/..` keeps its trailing slash.
fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len());
    let mut segments = path[1..].split('/').peekable();
    let mut trailing = false;
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            "" | "." => trailing = last,
            ".." => {
                let Some(cut) = out.rfind('/') else {
                    return Err(PathError::AboveRoot);
                };
                out.truncate(cut);
                trailing = last;
            }
            _ if is_dot_name(seg.as_bytes()) => return Err(PathError::DotParams),
            _ => {
                out.push('/');
                out.push_str(seg);
                trailing = false;
            }
        }
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/a",
            "/a/",
            "/a/b/c.txt",
            "/a/.hidden/..x/x..",
            "/caf\u{e9}/",
            "/a;b=c/d",
            "/a%20b/%C3%A9%3F",
            "",
            "*",
        ] {
            assert!(
                matches!(normalize(p), Ok(Cow::Borrowed(b)) if b == p),
                "{p:?}"
            );
        }
    }

    /// RFC 3986 §5.2.4's examples and the §5.4 reference resolutions that reduce to
    /// remove_dot_segments on an absolute path (base "http://a/b/c/d;p?q").
    #[test]
    fn rfc3986_dot_segment_removal() {
        assert_eq!(n("/a/b/c/./../../g").unwrap(), "/a/g");
        assert_eq!(n("/b/c/./g").unwrap(), "/b/c/g");
        assert_eq!(n("/b/c/g/").unwrap(), "/b/c/g/");
        assert_eq!(n("/b/c/.").unwrap(), "/b/c/");
        assert_eq!(n("/b/c/./").unwrap(), "/b/c/");
        assert_eq!(n("/b/c/..").unwrap(), "/b/");
        assert_eq!(n("/b/c/../").unwrap(), "/b/");
        assert_eq!(n("/b/c/../g").unwrap(), "/b/g");
        assert_eq!(n("/b/c/../..").unwrap(), "/");
        assert_eq!(n("/b/c/../../g").unwrap(), "/g");
        assert_eq!(n("/b/c/g.").unwrap(), "/b/c/g.");
        assert_eq!(n("/b/c/.g").unwrap(), "/b/c/.g");
        assert_eq!(n("/b/c/g..").unwrap(), "/b/c/g..");
        assert_eq!(n("/b/c/..g").unwrap(), "/b/c/..g");
        assert_eq!(n("/b/c/./../g").unwrap(), "/b/g");
        assert_eq!(n("/b/c/g/./h").unwrap(), "/b/c/g/h");
        assert_eq!(n("/b/c/g/../h").unwrap(), "/b/c/h");
        // "mid/content=5/../6" from §5.2.4's own table.
        assert_eq!(n("/mid/content=5/../6").unwrap(), "/mid/6");
    }

    #[test]
    fn above_the_root_is_refused_not_clamped() {
        // RFC 3986 resolves "../../../g" against "/b/c/d" to "/g"; a client that sends it
        // directly is probing, so it gets a 400.
        assert_eq!(n("/.."), Err(PathError::AboveRoot));
        assert_eq!(n("/../g"), Err(PathError::AboveRoot));
        assert_eq!(n("/b/../../g"), Err(PathError::AboveRoot));
        assert_eq!(n("/b/%2e%2E/%2E./g"), Err(PathError::AboveRoot));
    }

    #[test]
    fn encoded_dots_are_dots_and_unreserved_escapes_are_decoded() {
        assert_eq!(n("/public/%2e%2e/private/x").unwrap(), "/private/x");
        assert_eq!(n("/public/%2E./private/x").unwrap(), "/private/x");
        assert_eq!(n("/public/.%2e/private/x").unwrap(), "/private/x");
        assert_eq!(n("/a/%2e/b").unwrap(), "/a/b");
        assert_eq!(n("/%70rivate/x").unwrap(), "/private/x");
        assert_eq!(n("/a%7Eb%5fc%2D").unwrap(), "/a~b_c-");
        assert_eq!(
            n("/a%20b%c3%a9").unwrap(),
            "/a%20b%C3%A9",
            "other escapes kept"
        );
        assert_eq!(n("/x%3fy").unwrap(), "/x%3Fy", "an encoded ? stays encoded");
    }

    #[test]
    fn slash_runs_are_merged() {
        assert_eq!(n("//private/x").unwrap(), "/private/x");
        assert_eq!(n("/a//b///c//").unwrap(), "/a/b/c/");
        assert_eq!(n("//").unwrap(), "/");
        assert_eq!(n("/a/.//./b").unwrap(), "/a/b");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        assert_eq!(n("/public/..%2Fprivate/x"), Err(PathError::EncodedSlash));
        assert_eq!(n("/a%2fb"), Err(PathError::EncodedSlash));
        assert_eq!(n("/a\\b"), Err(PathError::Backslash));
        assert_eq!(n("/a%5cb"), Err(PathError::Backslash));
        assert_eq!(n("/a%5C..%5Cb"), Err(PathError::Backslash));
        assert_eq!(n("/a%00b"), Err(PathError::ControlByte));
        assert_eq!(n("/a%0d%0aX: y"), Err(PathError::ControlByte));
        assert_eq!(n("/a\u{0}b"), Err(PathError::ControlByte));
        assert_eq!(n("/a%7f"), Err(PathError::ControlByte));
        assert_eq!(n("/a%"), Err(PathError::BadPercent));
        assert_eq!(n("/a%2"), Err(PathError::BadPercent));
        assert_eq!(n("/a%zz"), Err(PathError::BadPercent));
        assert_eq!(n("/public/..;/private/x"), Err(PathError::DotParams));
        assert_eq!(n("/public/.;x=1/private"), Err(PathError::DotParams));
        assert_eq!(n("/public/%2e%2e;/private"), Err(PathError::DotParams));
        assert_eq!(n("a/b"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn encoded_slashes_can_be_allowed_and_stay_encoded() {
        let allow = PathRules {
            allow_encoded_slashes: true,
        };
        let n = |p| normalize_with(p, allow).map(Cow::into_owned);
        assert_eq!(
            n("/projects/group%2fname").unwrap(),
            "/projects/group%2Fname"
        );
        assert!(matches!(
            normalize_with("/projects/group%2Fname", allow),
            Ok(Cow::Borrowed(_))
        ));
        assert_eq!(
            n("/public/..%2Fprivate/x").unwrap(),
            "/public/..%2Fprivate/x",
            "not a dot segment for the gateway"
        );
        assert_eq!(n("/a/../b%2F").unwrap(), "/b%2F");
        assert_eq!(
            n("/a%5Cb"),
            Err(PathError::Backslash),
            "backslashes stay refused"
        );
    }

    #[test]
    fn results_are_fixed_points_and_borrowed_means_unchanged() {
        let alphabet = [
            "/", ".", "..", "a", "%2e", "%2F", "%41", "//", ";", "%", "\\", "b;c",
        ];
        // Every string of up to 4 pieces: normalising twice changes nothing more.
        let mut stack = vec![(String::from("/"), 0)];
        while let Some((p, depth)) = stack.pop() {
            match normalize(&p) {
                Ok(Cow::Borrowed(b)) => assert_eq!(b, p),
                Ok(Cow::Owned(o)) => {
                    assert!(
                        is_normal(o.as_bytes(), PathRules::default()),
                        "{p:?} -> {o:?} is not normal"
                    );
                    assert!(matches!(normalize(&o), Ok(Cow::Borrowed(_))), "{p:?}");
                }
                Err(_) => {}
            }
            if depth < 4 {
                stack.extend(alphabet.iter().map(|a| (format!("{p}{a}"), depth + 1)));
            }
        }
    }
}
