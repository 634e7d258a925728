//! A stand-in identity provider (Python's `http.server`, `py/idp_server.py`) in a child
//! process: a JWK set the test can replace, an RFC 7662 introspection endpoint with a token
//! table the test can change, an OpenID discovery document, and request counters. Killed on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

const SERVER: &str = include_str!("py/idp_server.py");

/// Runs a Python server script (with the test venv's packages) that prints the port it
/// listens on as its first line; the caller kills the child.
pub fn spawn_python_server(script: &str, args: &[&str]) -> (Child, u16) {
    let mut child = Command::new(crate::pyjwt::python())
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the server prints its port");
    let port: u16 = line.trim().parse().expect("a port number");
    (child, port)
}

pub struct IdpServer {
    child: Option<Child>,
    pub port: u16,
    http: reqwest::Client,
}

impl IdpServer {
    pub async fn start() -> Self {
        crate::init();
        let http = reqwest::Client::new();
        let (child, port) = tokio::task::spawn_blocking(|| spawn_python_server(SERVER, &[]))
            .await
            .expect("server start");
        Self {
            child: Some(child),
            port,
            http,
        }
    }

    /// `http://127.0.0.1:<port>` (the default issuer of the discovery document).
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    pub fn jwks_url(&self) -> String {
        self.url("/jwks")
    }

    pub fn introspection_url(&self) -> String {
        self.url("/introspect")
    }

    async fn admin(&self, update: Value) {
        let resp = self
            .http
            .post(self.url("/admin"))
            .json(&update)
            .send()
            .await
            .expect("IdP admin reachable");
        assert!(resp.status().is_success());
    }

    /// Serves `set` (`{"keys": [...]}`) from now on.
    pub async fn set_jwks(&self, set: Value) {
        self.admin(json!({ "jwks": set })).await;
    }

    /// Introspection answers by token (`{"tok": {"active": true, ...}}`); others are inactive.
    pub async fn set_tokens(&self, tokens: Value) {
        self.admin(json!({ "tokens": tokens })).await;
    }

    /// Client credentials the introspection endpoint accepts (`{"id": "secret"}`).
    pub async fn set_clients(&self, clients: Value) {
        self.admin(json!({ "clients": clients })).await;
    }

    /// The `issuer` of the discovery document (default: [`Self::base`]).
    pub async fn set_issuer(&self, issuer: &str) {
        self.admin(json!({ "issuer": issuer })).await;
    }

    /// Requests served at `path` so far.
    pub async fn count(&self, path: &str) -> u64 {
        let counts: Value = self
            .http
            .get(self.url("/count"))
            .send()
            .await
            .expect("IdP reachable")
            .json()
            .await
            .expect("counts");
        counts[path].as_u64().unwrap_or(0)
    }

    /// The introspection requests received: their form fields, plus `_authorization` and
    /// `_content_type` (the request's headers).
    pub async fn seen(&self) -> Vec<Value> {
        self.http
            .get(self.url("/seen"))
            .send()
            .await
            .expect("IdP reachable")
            .json()
            .await
            .expect("seen")
    }

    /// Kills the server, as a provider that went down.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for IdpServer {
    fn drop(&mut self) {
        self.stop();
    }
}
