//! Test harness: per-test databases, an echo upstream, and control planes and gateways each on
//! their own runtime and thread, so a test can stop one (its runtime is dropped, its sockets
//! close) and start it again.

// Test support: a failed setup step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod blackhole;
pub mod browser;
pub mod component;
pub mod coprocess;
pub mod echo;
pub mod idp_server;
pub mod idp_stack;
pub mod kube_manifests;
pub mod oauth;
pub mod oidc_provider;
pub mod openssl_jwt;
pub mod own_redis;
pub mod peers;
pub mod private_pg;
pub mod pyjwt;
pub mod raw_sync;
pub mod redis_topology;
pub mod signatures;
pub mod sim_node;
pub mod stack;
pub mod token_server;
pub mod traffic;

use std::future::Future;
use std::time::Duration;

pub use component::{Cp, CpOptions, Dp, DpOptions, keyless_api};
pub use echo::{EchoUpstream, Received};
pub use stack::{ADMIN_SECRET, ENCRYPTION_SECRET, TestDb, redis_url};

/// Installs the process-wide rustls provider once (reqwest is built without one).
/// With `PORTCULLIS_TEST_LOG=debug` (any filter), components log to stderr.
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Ok(filter) = std::env::var("PORTCULLIS_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Polls `check` every 20 ms until it yields `Some`, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Installs an npm `package` into `dir` once per machine (a marker file), under a file lock so
/// concurrent tests do not race (the registry is the only network the tests use).
pub fn npm_install(dir: &str, package: &str) {
    let script = format!(
        "test -f {dir}/.ok || (mkdir -p {dir} && cd {dir} && \
         (test -f package.json || npm init -y >/dev/null) && \
         npm install --silent --no-audit --no-fund {package} && touch {dir}/.ok)"
    );
    let status = std::process::Command::new("flock")
        .arg(format!("{dir}.lock"))
        .args(["sh", "-c", &script])
        .status()
        .expect("flock, sh and npm are installed");
    assert!(status.success(), "installing {package} into {dir} failed");
}
