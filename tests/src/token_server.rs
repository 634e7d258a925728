//! Upstream authentication peers (docs/upstream-auth.md): a real OAuth 2.0 token endpoint,
//! `oauth2-mock-server` from npm run by Node, that counts the grants it answers; and an
//! upstream in Python that verifies request signatures with the `httpsig` package and reports
//! what it received. Both are killed on drop.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// Where the npm package lives (machine state, not project state).
pub const DIR: &str = "/var/tmp/portcullis-test-oauth2-mock";
const PACKAGE: &str = "oauth2-mock-server@8.1.0";

/// The token endpoint: `expires_in` from `/ttl/<s>`, an `instance_url` field that changes with
/// every grant, `/down` answers 503, `/refuse` 401; `/stats` lists every grant request.
const TOKEN_SCRIPT: &str = r#"
import { OAuth2Server } from 'oauth2-mock-server';
import http from 'node:http';
const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');
let grants = 0, mode = 'up', ttl = 3600;
const seen = [];
server.service.on('beforeResponse', (resp, req) => {
  const b = req.body || {};
  seen.push({grant_type: b.grant_type ?? null, authorization: req.headers['authorization'] ?? null,
    client_id: b.client_id ?? null, client_secret: b.client_secret ?? null,
    username: b.username ?? null, password: b.password ?? null, scope: b.scope ?? null});
  if (seen.length > 1000) seen.shift();
  if (mode === 'down') { resp.statusCode = 503; resp.body = {error: 'temporarily_unavailable'}; return; }
  if (mode === 'refuse') { resp.statusCode = 401; resp.body = {error: 'invalid_client'}; return; }
  grants++;
  resp.body.expires_in = ttl;
  resp.body.instance_url = 'https://instance.example/' + grants;
});
await server.start(0, '127.0.0.1');
const control = http.createServer((req, res) => {
  const u = req.url;
  if (u === '/stats') { res.end(JSON.stringify({grants, seen})); return; }
  if (u === '/down' || u === '/refuse' || u === '/up') { mode = u.slice(1); res.end('{}'); return; }
  if (u.startsWith('/ttl/')) { ttl = Number(u.slice(5)); res.end('{}'); return; }
  res.statusCode = 404; res.end();
});
control.listen(0, '127.0.0.1', () => {
  console.log(`${server.address().port} ${control.address().port}`);
});
"#;

fn ensure_installed() {
    static READY: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    READY.get_or_init(|| crate::npm_install(DIR, PACKAGE));
}

/// Reads the first stdout line of `child` (the ports it listens on).
fn first_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout piped");
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    line.trim().to_owned()
}

pub struct TokenServer {
    child: Child,
    pub port: u16,
    control: u16,
    http: reqwest::Client,
}

impl TokenServer {
    pub async fn start() -> Self {
        crate::init();
        let (child, port, control) = tokio::task::spawn_blocking(|| {
            ensure_installed();
            let mut child = Command::new("node")
                .args(["--input-type=module", "-e", TOKEN_SCRIPT])
                .current_dir(DIR)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("node starts");
            let line = first_line(&mut child);
            let ports: Vec<u16> = line.split(' ').filter_map(|p| p.parse().ok()).collect();
            if ports.len() != 2 {
                let _ = child.kill();
                panic!("oauth2-mock-server did not start: {line:?}");
            }
            (child, ports[0], ports[1])
        })
        .await
        .expect("start token server");
        Self {
            child,
            port,
            control,
            http: reqwest::Client::new(),
        }
    }

    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    async fn control(&self, path: &str) -> Value {
        let url = format!("http://127.0.0.1:{}{path}", self.control);
        let r = self
            .http
            .get(url)
            .send()
            .await
            .expect("token server control");
        r.json().await.expect("control answer is JSON")
    }

    /// Successful grants so far.
    pub async fn grants(&self) -> u64 {
        self.control("/stats").await["grants"].as_u64().unwrap_or(0)
    }

    /// Every token request seen (grant type, Authorization header, form credentials, scope).
    pub async fn seen(&self) -> Vec<Value> {
        self.control("/stats").await["seen"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// `expires_in` of the next tokens.
    pub async fn set_ttl(&self, secs: u64) {
        self.control(&format!("/ttl/{secs}")).await;
    }

    /// `up`, `down` (503) or `refuse` (401).
    pub async fn set_mode(&self, mode: &str) {
        self.control(&format!("/{mode}")).await;
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python upstream: under `/hmac/…` it verifies a signature with the HMAC secret, under
/// `/rsa/…` with the public key; anything else only echoes. The answer is JSON:
/// `{"path", "headers", "verified": true | "<why not>", "signed_headers"}`.
const UPSTREAM_SCRIPT: &str = r#"
import json, sys, re, types, urllib.parse
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
try:
    import pkg_resources
except ImportError:
    # httpsig reads its version with pkg_resources, which newer setuptools no longer ship.
    shim = types.ModuleType('pkg_resources')
    class DistributionNotFound(Exception): pass
    def get_distribution(name): raise DistributionNotFound(name)
    shim.DistributionNotFound, shim.get_distribution = DistributionNotFound, get_distribution
    sys.modules['pkg_resources'] = shim
from httpsig.verify import HeaderVerifier
conf = json.loads(sys.stdin.readline())

class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def handle_one(self):
        headers = {k.lower(): v for k, v in self.headers.items()}
        out = {"path": self.path, "method": self.command, "headers": headers}
        mode = self.path.split('/')[1] if self.path.count('/') >= 1 else ''
        if mode in ('hmac', 'rsa'):
            name = conf.get('sign_header', 'authorization').lower()
            raw = headers.get(name, '')
            # Tyk URL-escapes HMAC signatures; httpsig reads plain base64.
            fixed = re.sub(r'signature="([^"]*)"', lambda m: 'signature="%s"' % urllib.parse.unquote(m.group(1)), raw)
            hs = dict(headers); hs[name] = fixed
            secret = conf['secret'].encode() if mode == 'hmac' else conf['public_key']
            try:
                v = HeaderVerifier(headers=hs, secret=secret, required_headers=conf.get('required', ['date']),
                                   method=self.command, path=self.path, host=headers.get('host'), sign_header=name)
                out['verified'] = True if v.verify() else 'signature mismatch'
            except Exception as e:
                out['verified'] = 'error: %r' % (e,)
            m = re.search(r'headers="([^"]*)"', raw)
            out['signed_headers'] = m.group(1) if m else None
        body = json.dumps(out).encode()
        n = int(self.headers.get('content-length') or 0)
        if n: self.rfile.read(n)
        self.send_response(200)
        self.send_header('content-type', 'application/json')
        self.send_header('content-length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_PUT = do_DELETE = handle_one

srv = ThreadingHTTPServer(('127.0.0.1', 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

pub struct SigningUpstream {
    child: Child,
    pub port: u16,
}

impl SigningUpstream {
    /// `secret`: the HMAC key; `public_key`: PEM for RSA; `sign_header`: where the signature
    /// is; `required`: headers the signature must cover.
    pub async fn start(
        secret: &str,
        public_key: &str,
        sign_header: &str,
        required: &[&str],
    ) -> Self {
        crate::init();
        let conf = serde_json::json!({"secret": secret, "public_key": public_key,
            "sign_header": sign_header, "required": required});
        tokio::task::spawn_blocking(move || {
            let mut child = Command::new(crate::pyjwt::python())
                .args(["-c", UPSTREAM_SCRIPT])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("python starts");
            let mut stdin = child.stdin.take().expect("stdin piped");
            writeln!(stdin, "{conf}").expect("write config");
            drop(stdin);
            let line = first_line(&mut child);
            let Ok(port) = line.parse() else {
                let _ = child.kill();
                panic!("the signing upstream did not start: {line:?}");
            };
            Self { child, port }
        })
        .await
        .expect("start signing upstream")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for SigningUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
