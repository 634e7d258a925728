//! Tokens signed by an implementation independent of the gateway's: PyJWT (with `cryptography`)
//! in a virtualenv outside the clone, created once per machine under a lock because tests run
//! as parallel processes. Keys come from the `openssl` command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

/// Where the virtualenv lives (outside the clone: it is machine state, not project state).
pub const VENV: &str = "/var/tmp/portcullis-test-venv";
/// Exact versions, so every machine runs the same clients. Authlib and requests drive the OAuth
/// 2.0 grants (`py/oauth_client.py`); requests-oauthlib over oauthlib is the second,
/// independent OAuth client (`py/oauth_client_requests_oauthlib.py`).
const PINS: &[&str] = &[
    "PyJWT[crypto]==2.10.1",
    "cryptography==45.0.7",
    "Authlib==1.9.10",
    "requests==2.34.2",
    "requests-oauthlib==2.0.0",
    "oauthlib==4.0.1",
    // Verifies the gateway's upstream request signatures (tests/src/token_server.rs).
    "httpsig==1.3.0",
    "pycryptodome==3.24.1",
    "six==1.17.0",
    // httpsig imports pkg_resources, which setuptools removed in 81.
    "setuptools==80.9.0",
    // A Tyk gRPC coprocess plugin server (tests/src/coprocess.rs), its protos compiled at test
    // time.
    "grpcio==1.85.1",
    "grpcio-tools==1.85.1",
    "protobuf==7.36.2",
    // WebSocket peers (tests/src/py/ws_server.py, ws_client.py): an implementation of RFC 6455
    // independent of the gateway's tunnel.
    "websockets==17.4",
    // The OTLP trace collector (tests/src/py/otlp_collector.py): the OpenTelemetry project's
    // own generated protobuf code.
    "opentelemetry-proto==1.45.2",
];
const TOOL: &str = include_str!("py/jwt_tool.py");

/// The virtualenv's interpreter, creating the virtualenv first if needed.
pub fn python() -> PathBuf {
    static READY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    READY
        .get_or_init(|| {
            // `.ok` holds the pins it was made with: a virtualenv from other pins is remade.
            let pins = PINS.join(" ");
            let quoted: Vec<String> = PINS.iter().map(|p| format!("'{p}'")).collect();
            let quoted = quoted.join(" ");
            let script = format!(
                "test -x {VENV}/bin/python && test \"$(cat {VENV}/.ok 2>/dev/null)\" = '{pins}' || \
                 (rm -rf {VENV} && python3 -m venv {VENV} && \
                  {VENV}/bin/pip install --quiet {quoted} && printf '%s' '{pins}' > {VENV}/.ok)"
            );
            let status = Command::new("flock")
                .arg(format!("{VENV}.lock"))
                .args(["sh", "-c", &script])
                .status()
                .expect("flock and sh are installed");
            assert!(
                status.success(),
                "creating the Python virtualenv at {VENV} failed"
            );
            PathBuf::from(format!("{VENV}/bin/python"))
        })
        .clone()
}

/// Runs `script` with the virtualenv's Python, `input` on stdin; returns stdout.
pub fn run_python(script: &str, input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(input)
        .expect("write to python");
    let out = child.wait_with_output().expect("python runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A private key in a PEM file and its public key.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub private: PathBuf,
    pub public: PathBuf,
    /// The public key, PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_pem: String,
}

/// A directory of keys for one test, removed on drop.
pub struct KeyDir {
    dir: PathBuf,
}

impl Default for KeyDir {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("portcullis-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create key dir");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// An RSA 2048 key pair named `name`.
    pub async fn rsa(&self, name: &str) -> KeyPair {
        self.generate(
            name,
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        )
        .await
    }

    /// An EC P-256 key pair named `name`.
    pub async fn ec(&self, name: &str) -> KeyPair {
        self.generate(
            name,
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        )
        .await
    }

    async fn generate(&self, name: &str, args: &[&str]) -> KeyPair {
        let private = self.dir.join(format!("{name}.pem"));
        let public = self.dir.join(format!("{name}.pub.pem"));
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let (p, q) = (private.clone(), public.clone());
        tokio::task::spawn_blocking(move || {
            let ok = Command::new("openssl")
                .arg("genpkey")
                .args(&args)
                .arg("-out")
                .arg(&p)
                .stderr(Stdio::null())
                .status()
                .expect("openssl runs")
                .success();
            assert!(ok, "openssl genpkey {args:?}");
            let ok = Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&p)
                .arg("-out")
                .arg(&q)
                .status()
                .expect("openssl runs")
                .success();
            assert!(ok, "openssl pkey -pubout");
        })
        .await
        .expect("key generation");
        let public_pem = std::fs::read_to_string(&public).expect("public key written");
        KeyPair {
            private,
            public,
            public_pem,
        }
    }
}

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One token to sign (see `py/jwt_tool.py`).
#[derive(Debug, Clone)]
pub struct Job(Value);

impl Job {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8], claims: Value) -> Self {
        Self(json!({"op": "sign", "alg": "HS256", "secret_b64": b64(secret), "claims": claims}))
    }

    /// `alg` (RS256, ES256, ...) with a private key.
    pub fn signed(alg: &str, key: &KeyPair, claims: Value) -> Self {
        Self(json!({"op": "sign", "alg": alg, "key_file": key.private, "claims": claims}))
    }

    /// An unsigned token (`alg: none`).
    pub fn unsigned(claims: Value) -> Self {
        Self(json!({"op": "sign", "alg": "none", "claims": claims}))
    }

    /// HS256 keyed with any bytes, a public key PEM included (the algorithm-confusion forgery).
    pub fn forged_hs256(key_bytes: &[u8], claims: Value) -> Self {
        Self(json!({"op": "raw_hs256", "secret_b64": b64(key_bytes), "claims": claims}))
    }

    /// Adds a protected header (`kid`, ...).
    pub fn header(mut self, name: &str, value: impl Into<Value>) -> Self {
        if !self.0["headers"].is_object() {
            self.0["headers"] = json!({});
        }
        self.0["headers"][name] = value.into();
        self
    }

    pub fn kid(self, kid: &str) -> Self {
        self.header("kid", kid)
    }
}

async fn run_jobs(jobs: Vec<Value>) -> Vec<Value> {
    let input = serde_json::to_vec(&jobs).expect("jobs serialise");
    let out = tokio::task::spawn_blocking(move || run_python(TOOL, &input))
        .await
        .expect("python task");
    serde_json::from_slice(&out).expect("the tool prints JSON")
}

/// Signs every job in one Python run, in order.
pub async fn sign_all(jobs: Vec<Job>) -> Vec<String> {
    run_jobs(jobs.into_iter().map(|j| j.0).collect())
        .await
        .into_iter()
        .map(|v| v.as_str().expect("a token").to_owned())
        .collect()
}

pub async fn sign(job: Job) -> String {
    sign_all(vec![job]).await.remove(0)
}

/// The public JWK of `key` (with `kid`, `alg`, `use`), as PyJWT writes it.
pub async fn jwks(keys: &[(&KeyPair, &str)]) -> Value {
    let jobs = keys
        .iter()
        .map(|(k, kid)| json!({"op": "jwk", "public_file": k.public, "kid": kid}))
        .collect();
    json!({"keys": run_jobs(jobs).await})
}

/// base64 of `bytes`, as `jwt_source` and provider sources take them.
pub fn source(bytes: &[u8]) -> String {
    b64(bytes)
}

/// Lowercase hex MD5 of `s`, computed by Python (Tyk's virtual key is `org_id + md5hex(id)`).
pub async fn md5_hex(s: &str) -> String {
    let input = s.as_bytes().to_vec();
    let out = tokio::task::spawn_blocking(move || {
        run_python(
            "import hashlib,sys; sys.stdout.write(hashlib.md5(sys.stdin.buffer.read()).hexdigest())",
            &input,
        )
    })
    .await
    .expect("python task");
    String::from_utf8(out).expect("hex")
}
