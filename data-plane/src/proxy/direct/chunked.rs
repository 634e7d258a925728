//! The chunked transfer coding of upstream responses (RFC 9112 §7.1), decoded in place: data
//! comes out as slices of the read buffer, never copied.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::DirectError;

/// Longest chunk-size line, extensions included.
const MAX_LINE: usize = 4096;
/// Most bytes and fields of trailers.
const MAX_TRAILER_BYTES: usize = 64 * 1024;
const MAX_TRAILERS: usize = 100;

#[derive(Debug)]
pub enum Step {
    Data(Bytes),
    /// The last chunk and its trailer section were read; trailers when there were any.
    End(Option<Box<HeaderMap>>),
    /// The buffer holds no complete next element.
    NeedMore,
}

#[derive(Debug, Default)]
pub struct Chunked {
    state: State,
    /// Boxed: most chunked bodies have none, and the body is moved as a value.
    trailers: Option<Box<HeaderMap>>,
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl Chunked {
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, DirectError> {
        loop {
            match self.state {
                State::Size => {
                    let Some(line) = take_line(buf, MAX_LINE)? else {
                        return Ok(Step::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(DirectError::BadFraming("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    let room = MAX_TRAILER_BYTES.saturating_sub(self.trailer_bytes);
                    let Some(line) = take_line(buf, room)? else {
                        return Ok(Step::NeedMore);
                    };
                    self.trailer_bytes += line.len() + 2;
                    if line.is_empty() {
                        self.state = State::Done;
                        return Ok(Step::End(self.trailers.take()));
                    }
                    self.trailer(&line)?;
                }
                State::Done => return Ok(Step::End(None)),
            }
        }
    }

    fn trailer(&mut self, line: &[u8]) -> Result<(), DirectError> {
        let bad = || DirectError::BadFraming("invalid trailer field");
        let colon = line.iter().position(|b| *b == b':').ok_or_else(bad)?;
        let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| bad())?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).map_err(|_| bad())?;
        // Fields that frame the message, route it or describe the connection must not come
        // after the body (RFC 9110 §6.5.1); they are dropped rather than handed on.
        if forbidden_trailer(&name) {
            return Ok(());
        }
        let trailers = self.trailers.get_or_insert_with(Box::default);
        if trailers.len() >= MAX_TRAILERS {
            return Err(DirectError::BadFraming("too many trailer fields"));
        }
        trailers.append(name, value);
        Ok(())
    }
}

fn forbidden_trailer(name: &HeaderName) -> bool {
    use http::header::*;
    [
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        HOST,
        CONNECTION,
        TE,
        TRAILER,
    ]
    .contains(name)
}

/// The next CRLF-terminated line without its CRLF, or `None` when it has not all arrived. A
/// bare LF or a line longer than `max` is an error.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, DirectError> {
    let window = &buf[..buf.len().min(max.saturating_add(2))];
    let Some(lf) = window.iter().position(|b| *b == b'\n') else {
        if buf.len() > max {
            return Err(DirectError::BadFraming("chunk line too long"));
        }
        return Ok(None);
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(DirectError::BadFraming("chunk line not ended by CRLF"));
    }
    let mut line = buf.split_to(lf + 1);
    line.truncate(lf - 1);
    Ok(Some(line))
}

/// `1*HEXDIG [ BWS ";" chunk-ext ]`; at most 16 digits, so the size fits a u64.
fn chunk_size(line: &[u8]) -> Result<u64, DirectError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(DirectError::BadFraming("invalid chunk size"));
    }
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return Err(DirectError::BadFraming("invalid chunk size"));
    }
    if rest.iter().any(|b| b.is_ascii_control() && *b != b'\t') {
        return Err(DirectError::BadFraming("control byte in a chunk extension"));
    }
    Ok(line[..digits].iter().fold(0u64, |n, d| {
        let v = (*d as char).to_digit(16).unwrap_or(0);
        (n << 4) | u64::from(v)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `raw` one byte at a time and collects what comes out.
    fn decode_bytewise(raw: &[u8]) -> Result<(Vec<u8>, Option<Box<HeaderMap>>), DirectError> {
        let mut dec = Chunked::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for b in raw {
            buf.extend_from_slice(&[*b]);
            loop {
                match dec.decode(&mut buf)? {
                    Step::Data(d) => body.extend_from_slice(&d),
                    Step::End(t) => return Ok((body, t)),
                    Step::NeedMore => break,
                }
            }
        }
        Err(DirectError::Closed)
    }

    #[test]
    fn decodes_sizes_extensions_and_trailers_split_anywhere() {
        let raw = b"5;name=value\r\nhello\r\nA \r\n0123456789\r\n0\r\nx-checksum: abc\r\ncontent-length: 9\r\n\r\n";
        let (body, trailers) = decode_bytewise(raw).unwrap();
        assert_eq!(body, b"hello0123456789");
        let trailers = trailers.unwrap();
        assert_eq!(trailers["x-checksum"], "abc");
        assert!(!trailers.contains_key("content-length"));
    }

    #[test]
    fn leaves_what_follows_the_message_in_the_buffer() {
        let mut dec = Chunked::default();
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1"[..]);
        assert!(matches!(dec.decode(&mut buf).unwrap(), Step::Data(d) if &d[..] == b"abc"));
        assert!(matches!(dec.decode(&mut buf).unwrap(), Step::End(None)));
        assert_eq!(&buf[..], b"HTTP/1.1");
    }

    #[test]
    fn refuses_malformed_framing() {
        for raw in [
            &b"g\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"3\r\nabcX\r\n",
            b"11111111111111111\r\n",
            b"3 x\r\nabc\r\n",
            b"3;a\x00b\r\nabc\r\n",
            b"0\r\nno-colon\r\n\r\n",
        ] {
            assert!(
                matches!(decode_bytewise(raw), Err(DirectError::BadFraming(_))),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let long = format!("1;{}\r\n", "a".repeat(MAX_LINE));
        assert!(matches!(
            decode_bytewise(long.as_bytes()),
            Err(DirectError::BadFraming(_))
        ));
    }

    #[test]
    fn the_largest_size_does_not_overflow() {
        let mut dec = Chunked::default();
        let mut buf = BytesMut::from(&b"ffffffffffffffff\r\nab"[..]);
        assert!(matches!(dec.decode(&mut buf).unwrap(), Step::Data(d) if &d[..] == b"ab"));
        assert!(matches!(dec.decode(&mut buf).unwrap(), Step::NeedMore));
    }
}
