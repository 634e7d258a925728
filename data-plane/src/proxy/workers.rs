//! Proxy workers (`--proxy-workers N`, docs/architecture.md "Proxy workers"): N threads, each
//! with its own single-threaded runtime, accepting from the same listening sockets, as nginx's
//! worker processes do. A connection, its upstream connections, its timers and its wake-ups
//! stay on the thread that accepted it, so no request pays for work-stealing or for a wake-up
//! that crosses cores. Configuration, sessions, limits and caches are the process's, shared by
//! every worker; the control work (sync, admin, Redis, reporting) stays on the main runtime.
//!
//! Each worker polls its own duplicate of each listening socket: when a client connects, the
//! workers that are waiting race for `accept` and a busy one is not among them, which spreads
//! the connections by load rather than by hash.

use std::cell::Cell;
use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};

use super::Proxy;
use crate::shared::Shared;

/// The most `--proxy-workers`.
pub const MAX_WORKERS: usize = 256;

thread_local! {
    /// The worker's index plus one; 0 on every other thread.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// This thread's worker index; 0 outside the workers (one runtime serves everything).
pub fn current() -> usize {
    WORKER.with(Cell::get).saturating_sub(1)
}

/// True on a proxy worker's thread.
pub fn is_worker() -> bool {
    WORKER.with(Cell::get) > 0
}

/// What the workers serve.
pub struct Listeners {
    pub plain: TcpListener,
    pub tls: Option<TcpListener>,
    pub handshake_timeout: Duration,
}

/// The running workers. Dropping this stops them and waits for their threads: each closes its
/// listeners and its open connections (at most [`STOP_WAIT`] for its blocking tasks), so the
/// ports are closed once it is gone.
pub struct Workers {
    stop: Option<watch::Sender<()>>,
    failed: mpsc::UnboundedReceiver<(&'static str, std::io::Error)>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// How long a stopping worker waits for its blocking tasks (bcrypt, name lookups).
const STOP_WAIT: Duration = Duration::from_secs(1);

impl Drop for Workers {
    fn drop(&mut self) {
        drop(self.stop.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Workers {
    /// Starts `n` workers serving `listeners` (taken off the caller's runtime).
    pub fn start(
        n: usize,
        listeners: Listeners,
        proxy: Arc<Proxy>,
        shared: Arc<Shared>,
    ) -> std::io::Result<Self> {
        let plain = listeners.plain.into_std()?;
        let tls = listeners.tls.map(TcpListener::into_std).transpose()?;
        // One connection cap per listener for the whole process, as without workers.
        let plain_slots = Arc::new(Semaphore::new(proxy.limits().max_connections));
        let tls_slots = Arc::new(Semaphore::new(proxy.limits().max_connections));
        proxy.limits().warn_if_above_file_limit();
        let (stop, stopped) = watch::channel(());
        let (report, failed) = mpsc::unbounded_channel();
        // Built first so that an error below stops (and waits for) the workers already started.
        let mut workers = Self {
            stop: Some(stop),
            failed,
            threads: Vec::new(),
        };
        for index in 0..n.clamp(1, MAX_WORKERS) {
            let worker = Worker {
                index,
                plain: plain.try_clone()?,
                tls: tls.as_ref().map(StdListener::try_clone).transpose()?,
                handshake_timeout: listeners.handshake_timeout,
                plain_slots: plain_slots.clone(),
                tls_slots: tls_slots.clone(),
                proxy: proxy.clone(),
                shared: shared.clone(),
                stopped: stopped.clone(),
                report: report.clone(),
            };
            workers.threads.push(
                std::thread::Builder::new()
                    .name(format!("proxy-worker-{index}"))
                    .spawn(move || worker.run())?,
            );
        }
        Ok(workers)
    }

    /// Waits until a worker's server fails: which one, and why.
    pub async fn failed(&mut self) -> (&'static str, std::io::Error) {
        match self.failed.recv().await {
            Some(failure) => failure,
            // Every worker is gone without saying why (a panic).
            None => ("proxy", std::io::Error::other("every proxy worker stopped")),
        }
    }
}

struct Worker {
    index: usize,
    plain: StdListener,
    tls: Option<StdListener>,
    handshake_timeout: Duration,
    plain_slots: Arc<Semaphore>,
    tls_slots: Arc<Semaphore>,
    proxy: Arc<Proxy>,
    shared: Arc<Shared>,
    stopped: watch::Receiver<()>,
    report: mpsc::UnboundedSender<(&'static str, std::io::Error)>,
}

impl Worker {
    fn run(self) {
        WORKER.with(|w| w.set(self.index + 1));
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = self.report.send(("proxy worker runtime", e));
                return;
            }
        };
        let report = self.report.clone();
        // A connection's panic stays in its task; one in the accept loops would end the thread
        // without a word, and the gateway would serve on with a worker fewer.
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(self.serve())
        }));
        match served {
            Ok(Some(failure)) => drop(report.send(failure)),
            Ok(None) => {}
            Err(_) => drop(report.send(("proxy worker", std::io::Error::other("panicked")))),
        }
        // Cancels this worker's connections.
        runtime.shutdown_timeout(STOP_WAIT);
    }

    async fn serve(self) -> Option<(&'static str, std::io::Error)> {
        let Worker {
            plain,
            tls,
            handshake_timeout,
            plain_slots,
            tls_slots,
            proxy,
            shared,
            mut stopped,
            ..
        } = self;
        let plain = match TcpListener::from_std(plain) {
            Ok(l) => l,
            Err(e) => return Some(("proxy", e)),
        };
        let tls = match tls.map(TcpListener::from_std).transpose() {
            Ok(l) => l,
            Err(e) => return Some(("TLS proxy", e)),
        };
        let plain = super::serve_with_slots(plain, proxy.clone(), plain_slots);
        let tls = async move {
            match tls {
                Some(l) => {
                    crate::tls::serve_with_slots(l, proxy, shared, handshake_timeout, tls_slots)
                        .await
                }
                None => std::future::pending().await,
            }
        };
        // A server that ends is a failure even without an error: the gateway would otherwise
        // serve on with a worker fewer and never say so.
        let ended = |r: std::io::Result<()>| {
            r.err()
                .unwrap_or_else(|| std::io::Error::other("stopped accepting"))
        };
        tokio::select! {
            r = plain => Some(("proxy", ended(r))),
            r = tls => Some(("TLS proxy", ended(r))),
            // The sender is gone: the gateway was dropped.
            _ = stopped.changed() => None,
        }
    }
}
