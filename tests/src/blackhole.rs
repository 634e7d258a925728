//! A TCP relay that can be partitioned: while partitioned it stops moving bytes in both
//! directions but keeps every socket open, as a network that silently drops packets does. Only
//! timeouts and keepalives notice; a kill would have been seen at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Blackhole {
    pub addr: SocketAddr,
    partitioned: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl Blackhole {
    /// Relays connections made to `addr` to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let partitioned = Arc::new(AtomicBool::new(false));
        let flag = partitioned.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, flag.clone()), pump(sr, cw, flag));
                });
            }
        });
        Self {
            addr,
            partitioned,
            accept,
        }
    }

    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("https://127.0.0.1:{}", self.addr.port())).unwrap()
    }

    pub fn partition(&self, on: bool) {
        self.partitioned.store(on, Ordering::Release);
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    partitioned: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Neither read nor write while partitioned: the sender's window fills and nothing
        // arrives on the other side, with no FIN or RST either way.
        while partitioned.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while partitioned.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
