//! The client socket with the bytes the direct server already read put back in front, for
//! hyper to take the connection over where the direct server stopped.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct Rewind<T> {
    pending: Bytes,
    inner: T,
    /// A socket error met while topping up a read of the put-back bytes, for the next read.
    failed: Option<std::io::Error>,
}

impl<T> Rewind<T> {
    pub fn new(pending: Bytes, inner: T) -> Self {
        Self {
            pending,
            inner,
            failed: None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(e) = self.failed.take() {
            return Poll::Ready(Err(e));
        }
        if self.pending.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        // Topped up from the socket, so hyper's read is as large as it would have been on its
        // own: hyper drains an unread request body in one read before it keeps a connection
        // alive, and a short first read would make it close instead.
        if self.pending.is_empty()
            && buf.remaining() > 0
            && let Poll::Ready(Err(e)) = Pin::new(&mut self.inner).poll_read(cx, buf)
        {
            self.failed = Some(e);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn the_put_back_bytes_come_first_then_the_socket_s() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b" world")
            .await
            .unwrap();
        drop(a);
        let mut r = Rewind::new(Bytes::from_static(b"hello"), b);
        let mut small = [0u8; 3];
        r.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hel");
        let mut rest = String::new();
        r.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "lo world");
    }

    #[tokio::test]
    async fn a_read_of_the_last_put_back_bytes_is_topped_up_from_the_socket() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b" world")
            .await
            .unwrap();
        let mut r = Rewind::new(Bytes::from_static(b"hello"), b);
        let mut big = [0u8; 64];
        let n = r.read(&mut big).await.unwrap();
        assert_eq!(
            &big[..n],
            b"hello world",
            "one read, as large as hyper asked for"
        );
    }
}
