//! The optional access log (`--access-log`): one JSON line per proxied request, written by a
//! task of its own so a slow disk or pipe never holds a request (docs/observability.md).
//!
//! A line names the API, method, path (never the query, which may carry a key), status,
//! latency, the first 8 hex digits of the key hash (never the key) and the client address.
//! When the writer falls behind, lines are dropped and counted rather than queued without
//! bound.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

/// Lines waiting for the writer before new ones are dropped.
const QUEUE: usize = 8192;

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    /// Appended to; created if missing.
    File(PathBuf),
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" => Err("must be stdout or a file path".into()),
            "stdout" | "-" => Ok(Self::Stdout),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }
}

/// The first 8 hex digits of a key hash: enough to find the key (`GET /tyk/keys`), too few to
/// be one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyTag([u8; 8]);

impl KeyTag {
    pub fn of(key_hash: &str) -> Option<Self> {
        let b = key_hash.as_bytes().get(..8)?;
        let mut tag = [0; 8];
        tag.copy_from_slice(b);
        tag.iter().all(u8::is_ascii_hexdigit).then_some(Self(tag))
    }

    pub fn to_bits(self) -> u64 {
        u64::from_ne_bytes(self.0)
    }

    /// The tag [`KeyTag::to_bits`] gave; 0 (no tag) is `None`.
    pub fn from_bits(bits: u64) -> Option<Self> {
        (bits != 0).then(|| Self(bits.to_ne_bytes()))
    }

    fn as_str(&self) -> &str {
        // Checked hex digits at construction.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// One proxied request, as the proxy saw it.
pub struct Entry<'a> {
    pub api_id: &'a str,
    pub method: &'a http::Method,
    pub path: &'a str,
    pub status: u16,
    pub latency: Duration,
    pub key: Option<KeyTag>,
    pub client: IpAddr,
}

/// Lines dropped because the writer fell behind, process-wide (`/metrics`).
static DROPPED: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
pub struct AccessLog {
    tx: mpsc::Sender<String>,
}

impl AccessLog {
    /// Opens the target and starts the writer.
    pub fn start(target: &Target) -> std::io::Result<Arc<Self>> {
        let mut out: Box<dyn Write + Send> = match target {
            Target::Stdout => Box::new(std::io::stdout()),
            Target::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        // Blocking writes stay off the runtime's workers.
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(64);
                while rx.blocking_recv_many(&mut batch, 256) > 0 {
                    let mut buf = Vec::with_capacity(batch.len() * 160);
                    for line in batch.drain(..) {
                        buf.extend_from_slice(line.as_bytes());
                        buf.push(b'\n');
                    }
                    if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
                        // Nowhere to say it but the log itself; keep serving requests.
                        tracing::warn!("the access log could not be written");
                    }
                }
            })?;
        Ok(Arc::new(Self { tx }))
    }

    pub fn record(&self, e: &Entry<'_>) {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let line = serde_json::json!({
            "ts_ms": ts as u64,
            "api_id": e.api_id,
            "method": e.method.as_str(),
            "path": e.path,
            "status": e.status,
            "latency_ms": e.latency.as_secs_f64() * 1000.0,
            "key": e.key.as_ref().map(KeyTag::as_str),
            "client": e.client.to_string(),
        })
        .to_string();
        if self.tx.try_send(line).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The access log's counter in the Prometheus text format.
pub fn render(out: &mut String) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "# HELP portcullis_gateway_access_log_dropped_total Access log lines dropped because the writer fell behind.\n\
         # TYPE portcullis_gateway_access_log_dropped_total counter\nportcullis_gateway_access_log_dropped_total {}\n",
        DROPPED.load(Ordering::Relaxed)
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_key_tag_is_eight_hex_digits_or_nothing() {
        let tag = KeyTag::of("0123abcdef9999").unwrap();
        assert_eq!(tag.as_str(), "0123abcd");
        assert!(KeyTag::of("0123").is_none());
        assert!(KeyTag::of("secret-key-text").is_none(), "never a non-hash");
    }

    #[test]
    fn targets_parse() {
        assert_eq!("stdout".parse::<Target>().unwrap(), Target::Stdout);
        assert_eq!(
            "/var/log/gw.json".parse::<Target>().unwrap(),
            Target::File("/var/log/gw.json".into())
        );
        assert!("".parse::<Target>().is_err());
    }

    #[tokio::test]
    async fn lines_reach_the_file_without_the_query() {
        let path =
            std::env::temp_dir().join(format!("portcullis-access-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let log = AccessLog::start(&Target::File(path.clone())).unwrap();
        log.record(&Entry {
            api_id: "orders",
            method: &http::Method::GET,
            path: "/orders/1",
            status: 200,
            latency: Duration::from_micros(1500),
            key: KeyTag::of("abcdef0123456789"),
            client: "127.0.0.1".parse().unwrap(),
        });
        let mut text = String::new();
        for _ in 0..100 {
            text = std::fs::read_to_string(&path).unwrap_or_default();
            if !text.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["api_id"], "orders");
        assert_eq!(v["key"], "abcdef01");
        assert_eq!(v["latency_ms"], 1.5);
        let _ = std::fs::remove_file(&path);
    }
}
