//! A real OpenID provider for tests: panva's `oidc-provider` from npm, installed once per
//! machine outside the clone (under a lock: tests run as parallel processes) and run by Node in
//! a child process (`js/oidc_provider.mjs`). Killed on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use base64::Engine;
use serde_json::Value;

/// Where the npm package lives (machine state, not project state).
pub const DIR: &str = "/var/tmp/portcullis-test-oidc";
const PACKAGE: &str = "oidc-provider@9.13.3";
const SCRIPT: &str = include_str!("js/oidc_provider.mjs");

fn ensure_installed() {
    static READY: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    READY.get_or_init(|| crate::npm_install(DIR, PACKAGE));
}

pub struct OidcProvider {
    child: Option<Child>,
    pub port: u16,
    http: reqwest::Client,
}

impl OidcProvider {
    pub async fn start() -> Self {
        crate::init();
        let http = reqwest::Client::new();
        let (child, port) = tokio::task::spawn_blocking(|| {
            ensure_installed();
            let mut child = Command::new("node")
                .args(["--input-type=module", "-e", SCRIPT])
                .current_dir(DIR)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("node starts");
            let stdout = child.stdout.take().expect("stdout piped");
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            let port = read.ok().and_then(|_| line.trim().parse::<u16>().ok());
            match port {
                Some(port) => (child, port),
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the OpenID provider did not start: {line:?}");
                }
            }
        })
        .await
        .expect("provider start");
        Self {
            child: Some(child),
            port,
            http,
        }
    }

    /// The provider's issuer, `http://127.0.0.1:<port>`.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An ID token for `sub` issued to `client` (client-1, client-2, client-short) through the
    /// authorization code flow.
    pub async fn id_token(&self, sub: &str, client: &str) -> String {
        let resp = self
            .http
            .get(format!("{}/test/id-token", self.issuer()))
            .query(&[("sub", sub), ("client", client)])
            .send()
            .await
            .expect("provider reachable");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "no ID token: {status} {text}");
        text
    }
}

/// The decoded header and claims of a compact JWS (not verified).
pub fn parts(token: &str) -> (Value, Value) {
    let decode = |s: &str| -> Value {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("JSON")
    };
    let mut it = token.split('.');
    let header = decode(it.next().expect("header"));
    let claims = decode(it.next().expect("claims"));
    (header, claims)
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
