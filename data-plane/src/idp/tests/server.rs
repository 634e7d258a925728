//! A tiny HTTP/1.1 server that answers each request as a test says, including the ways a
//! hostile or broken provider answers: never, endlessly, or too much.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub head: String,
    pub body: String,
}

pub enum Reply {
    Json(u16, String),
    /// Headers and body as given, after the status line.
    Raw(u16, String),
    /// Accept and never answer.
    Silent,
    /// A chunked body that never ends.
    Endless,
    /// Answer after a pause.
    Slow(Duration, String),
}

pub struct Server {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<Req> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut first = head.split_whitespace();
    Some(Req {
        method: first.next().unwrap_or_default().to_owned(),
        path: first.next().unwrap_or_default().to_owned(),
        body: String::from_utf8_lossy(&buf[head_end..]).to_string(),
        head,
    })
}

fn status_line(code: u16) -> String {
    format!("HTTP/1.1 {code} X\r\nconnection: close\r\n")
}

pub async fn serve<F>(handler: F) -> Server
where
    F: Fn(&Req) -> Reply + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let handler = Arc::new(handler);
    let counted = hits.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let handler = handler.clone();
            let hits = counted.clone();
            tokio::spawn(async move {
                let Some(req) = read_request(&mut s).await else {
                    return;
                };
                hits.fetch_add(1, Ordering::SeqCst);
                let reply = handler(&req);
                let out = match reply {
                    Reply::Json(code, body) => format!(
                        "{}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        status_line(code),
                        body.len()
                    ),
                    Reply::Raw(code, rest) => format!("{}{rest}", status_line(code)),
                    Reply::Slow(pause, body) => {
                        tokio::time::sleep(pause).await;
                        format!(
                            "{}content-length: {}\r\n\r\n{body}",
                            status_line(200),
                            body.len()
                        )
                    }
                    Reply::Silent => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    Reply::Endless => {
                        let head =
                            format!("{}transfer-encoding: chunked\r\n\r\n", status_line(200));
                        if s.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let chunk = format!("400\r\n{}\r\n", "x".repeat(0x400));
                        while s.write_all(chunk.as_bytes()).await.is_ok() {}
                        return;
                    }
                };
                let _ = s.write_all(out.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Server { addr, hits, task }
}
