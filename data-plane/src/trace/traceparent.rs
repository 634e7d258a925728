//! W3C Trace Context `traceparent` (version 00): `00-<32 hex trace id>-<16 hex parent id>-<2 hex
//! flags>`. A header that is not exactly that, or has an all-zero id, is ignored and the
//! gateway starts a new trace, as the specification asks.

/// Where a request's trace came from: the client's span, when it sent a valid `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// Bit 0: sampled.
    pub flags: u8,
}

pub const SAMPLED: u8 = 0x01;

/// Length of a version-00 header.
const LEN: usize = 55;

fn hex_into(out: &mut [u8], text: &[u8]) -> Option<()> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            // Lowercase only: the specification forbids uppercase hex.
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(())
}

impl TraceParent {
    pub fn parse(value: &[u8]) -> Option<Self> {
        // A later version may append fields after a dash; version ff is invalid.
        let (head, version_ok) = match value.get(..2)? {
            b"00" => (value, value.len() == LEN),
            b"ff" => return None,
            _ => (
                value.get(..LEN)?,
                value.len() == LEN || value.get(LEN) == Some(&b'-'),
            ),
        };
        if !version_ok || head[2] != b'-' || head[35] != b'-' || head[52] != b'-' {
            return None;
        }
        let mut version = [0u8; 1];
        hex_into(&mut version, &head[..2])?;
        let mut out = Self {
            trace_id: [0; 16],
            span_id: [0; 8],
            flags: 0,
        };
        hex_into(&mut out.trace_id, &head[3..35])?;
        hex_into(&mut out.span_id, &head[36..52])?;
        let mut flags = [0u8; 1];
        hex_into(&mut flags, &head[53..55])?;
        out.flags = flags[0];
        if out.trace_id == [0; 16] || out.span_id == [0; 8] {
            return None;
        }
        Some(out)
    }

    /// The header value for the next hop, with `span_id` as its parent.
    pub fn header(&self) -> http::HeaderValue {
        let mut text = [0u8; LEN];
        text[..3].copy_from_slice(b"00-");
        hex_write(&mut text[3..35], &self.trace_id);
        text[35] = b'-';
        hex_write(&mut text[36..52], &self.span_id);
        text[52] = b'-';
        hex_write(&mut text[53..55], &[self.flags]);
        // Only hex digits and dashes: always a valid header value.
        http::HeaderValue::from_bytes(&text).unwrap_or_else(|_| http::HeaderValue::from_static(""))
    }
}

fn hex_write(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the W3C Trace Context specification, §3.2.
    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_round_trips() {
        let p = TraceParent::parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(p.trace_id[0], 0x4b);
        assert_eq!(p.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(p.flags, SAMPLED);
        assert_eq!(p.header(), EXAMPLE);
    }

    #[test]
    fn invalid_headers_start_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad}");
        }
        // A later version's extra fields are ignored.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        assert!(TraceParent::parse(later.as_bytes()).is_some());
    }
}
