//! The response body of the direct client, read from the connection by whoever polls it (the
//! client connection's task, as it writes the response out), so no task or channel sits in
//! between.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::chunked::{Chunked, Step};
use super::head::{Framing, ResponseHead};
use super::{Conn, DirectError, READ_CHUNK};

#[derive(Debug)]
enum Left {
    Nothing,
    Bytes(u64),
    Chunked(Chunked),
    UntilClose,
}

#[derive(Debug)]
pub struct DirectBody {
    /// `None` once the body has been read to its end, unless it is spare.
    conn: Option<Conn>,
    left: Left,
    reusable: bool,
    /// The body ended cleanly on a connection that may carry another request.
    spare: bool,
}

impl DirectBody {
    pub fn new(conn: Conn, head: &ResponseHead) -> Self {
        let left = match head.framing {
            Framing::Empty => Left::Nothing,
            Framing::Length(n) => Left::Bytes(n),
            Framing::Chunked => Left::Chunked(Chunked::default()),
            Framing::UntilClose => Left::UntilClose,
        };
        let mut body = Self {
            conn: Some(conn),
            left,
            reusable: head.reusable,
            spare: false,
        };
        if matches!(body.left, Left::Nothing) {
            body.finish();
        }
        body
    }

    /// The connection, when the body is done and it can be used again.
    pub fn take_spare(&mut self) -> Option<Conn> {
        if !self.spare {
            return None;
        }
        self.spare = false;
        self.conn.take()
    }

    fn finish(&mut self) {
        // Bytes past the end of the message: the upstream and we disagree on framing.
        if self.reusable && self.conn.as_ref().is_some_and(|c| c.buf.is_empty()) {
            self.spare = true;
        } else {
            self.conn = None;
        }
    }
}

impl http_body::Body for DirectBody {
    type Data = Bytes;
    type Error = DirectError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, DirectError>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut().filter(|_| !this.spare) else {
                return Poll::Ready(None);
            };
            match &mut this.left {
                Left::Nothing => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Left::Bytes(left) if !conn.buf.is_empty() => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(conn.buf.len());
                    let data = conn.buf.split_to(n).freeze();
                    *left -= n as u64;
                    if *left == 0 {
                        this.left = Left::Nothing;
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Left::Chunked(dec) => match dec.decode(&mut conn.buf) {
                    Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Step::End(trailers)) => {
                        this.left = Left::Nothing;
                        this.finish();
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(*t))));
                    }
                    Ok(Step::NeedMore) => {}
                    Err(e) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                Left::UntilClose if !conn.buf.is_empty() => {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Left::Bytes(_) | Left::UntilClose => {}
            }
            if conn.buf.capacity() - conn.buf.len() < 1024 {
                conn.buf.reserve(READ_CHUNK);
            }
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut conn.stream),
                cx,
                &mut conn.buf
            ));
            match read {
                Ok(0) if matches!(this.left, Left::UntilClose) => {
                    this.conn = None;
                    this.left = Left::Nothing;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(DirectError::Truncated)));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.spare || matches!(self.left, Left::Nothing | Left::Bytes(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Left::Nothing => SizeHint::with_exact(0),
            Left::Bytes(n) => SizeHint::with_exact(n),
            Left::Chunked(_) | Left::UntilClose => SizeHint::default(),
        }
    }
}
