//! Separate header-read and idle timeouts for HTTP/1 client connections.
//!
//! hyper arms its header-read timer as soon as a connection waits for a request, so on its own
//! one value bounds both the idle time between keep-alive requests and the time a slow client
//! may take to trickle a head in. This timer, given to hyper for HTTP/1 only, tells the two
//! apart: while no byte of the next request has arrived the idle timeout runs; from its first
//! byte, the header timeout. It learns about bytes and requests from the connection's
//! [`Activity`], reached through a task-local so that one shared hyper builder serves every
//! connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use hyper::rt::{Sleep, Timer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What one client connection has done so far.
#[derive(Debug, Default)]
pub struct Activity {
    bytes_read: AtomicU64,
    requests: AtomicU64,
}

impl Activity {
    /// Called for each request the connection delivers.
    pub fn request_started(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

tokio::task_local! {
    /// The activity of the connection whose task is running.
    pub static CONNECTION: Arc<Activity>;
}

/// The client socket, counting what it reads. Bytes the direct HTTP/1 server read and then
/// left to hyper (`h1_server`) are put back in front, already counted.
pub struct CountingIo<T> {
    inner: T,
    activity: Arc<Activity>,
    put_back: Bytes,
    /// A socket error met while topping up a read of the put-back bytes, for the next read.
    failed: Option<std::io::Error>,
}

impl<T> CountingIo<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity,
            put_back: Bytes::new(),
            failed: None,
        }
    }

    /// `bytes` are read again before anything more from the socket.
    pub fn put_back(&mut self, bytes: Bytes) {
        self.put_back = bytes;
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CountingIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(e) = self.failed.take() {
            return Poll::Ready(Err(e));
        }
        if !self.put_back.is_empty() {
            let n = self.put_back.len().min(buf.remaining());
            buf.put_slice(&self.put_back[..n]);
            self.put_back.advance(n);
            // Topped up from the socket, so hyper's read is as large as it would have been on
            // its own: hyper drains an unread request body in one read before it keeps a
            // connection alive, and a short first read would make it close instead.
            if self.put_back.is_empty() && buf.remaining() > 0 {
                let polled = self.as_mut().poll_read_counted(cx, buf);
                if let Poll::Ready(Err(e)) = polled {
                    self.failed = Some(e);
                }
            }
            return Poll::Ready(Ok(()));
        }
        self.poll_read_counted(cx, buf)
    }
}

impl<T: AsyncRead + Unpin> CountingIo<T> {
    fn poll_read_counted(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.activity
                .bytes_read
                .fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountingIo<T> {
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

/// hyper's HTTP/1 timer; hyper must be given `header` as its header-read timeout.
#[derive(Debug, Clone)]
pub struct HeadTimer {
    header: Duration,
    idle: Duration,
}

impl HeadTimer {
    pub fn new(header: Duration, idle: Duration) -> Self {
        Self { header, idle }
    }
}

enum Phase {
    /// Waiting for the first byte of a request after `bytes_at` bytes.
    Idle { bytes_at: u64 },
    /// Reading a head; the deadline is the inner sleep's.
    Head,
}

pin_project_lite::pin_project! {
    struct HeadSleep {
        #[pin]
        inner: tokio::time::Sleep,
        phase: Phase,
        header: Duration,
        activity: Option<Arc<Activity>>,
    }
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        // hyper polls this sleep whenever a read leaves the head incomplete, so the first
        // byte of a request is seen here.
        if let (Phase::Idle { bytes_at }, Some(activity)) = (&*this.phase, &*this.activity)
            && activity.bytes_read.load(Ordering::Relaxed) != *bytes_at
        {
            *this.phase = Phase::Head;
            let deadline = tokio::time::Instant::now() + *this.header;
            this.inner.as_mut().reset(deadline);
        }
        this.inner.poll(cx)
    }
}

impl Sleep for HeadSleep {}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        Box::pin(HeadSleep {
            inner: tokio::time::sleep(duration),
            phase: Phase::Head,
            header: self.header,
            activity: None,
        })
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let activity = CONNECTION.try_with(Arc::clone).ok();
        // Before the first request the whole wait is for a head (no keep-alive idle yet).
        let (phase, deadline) = match &activity {
            Some(a) if a.requests() > 0 => (
                Phase::Idle {
                    bytes_at: a.bytes_read.load(Ordering::Relaxed),
                },
                tokio::time::Instant::now() + self.idle,
            ),
            _ => (Phase::Head, deadline.into()),
        };
        Box::pin(HeadSleep {
            inner: tokio::time::sleep_until(deadline),
            phase,
            header: self.header,
            activity,
        })
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn put_back_bytes_come_first_and_are_not_counted_again() {
        let activity = Arc::new(Activity::default());
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b" world")
            .await
            .unwrap();
        drop(a);
        let mut io = CountingIo::new(b, activity.clone());
        io.put_back(Bytes::from_static(b"hello"));
        let mut small = [0u8; 3];
        io.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hel");
        let mut rest = String::new();
        io.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "lo world");
        assert_eq!(activity.bytes_read.load(Ordering::Relaxed), 6);
    }

    #[tokio::test]
    async fn a_read_of_the_last_put_back_bytes_is_topped_up_from_the_socket() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b" world")
            .await
            .unwrap();
        let mut io = CountingIo::new(b, Arc::default());
        io.put_back(Bytes::from_static(b"hello"));
        let mut big = [0u8; 64];
        let n = io.read(&mut big).await.unwrap();
        assert_eq!(
            &big[..n],
            b"hello world",
            "one read, as large as hyper asked for"
        );
    }
}
