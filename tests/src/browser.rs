//! A real browser for tests: Debian's `chromium` driven by `playwright-core` from npm (the
//! exact version of `js/browser/package-lock.json`, installed with `npm ci` once per machine
//! outside the clone, under a lock because tests run as parallel processes). A Node script
//! (`js/console_browser.mjs`) does what an operator would on the fleet console and prints what
//! the page showed, as one JSON document, for the test to assert on.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use sha2::Digest;

/// Where the npm package lives (machine state, not project state).
pub const DIR: &str = "/var/tmp/portcullis-test-browser";
/// Debian's build: Playwright's own browser download is not used.
pub const CHROMIUM: &str = "/usr/bin/chromium";
const PACKAGE_JSON: &str = include_str!("js/browser/package.json");
const PACKAGE_LOCK: &str = include_str!("js/browser/package-lock.json");
const CONSOLE_SCRIPT: &str = include_str!("js/console_browser.mjs");

/// Installs chromium (apt) and playwright-core (npm) once; a changed lock file reinstalls.
fn ensure_installed() {
    static READY: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    READY.get_or_init(|| {
        let status = Command::new("flock")
            .arg(CHROMIUM_LOCK)
            .args([
                "sh",
                "-c",
                &format!(
                    "test -x {CHROMIUM} || (export DEBIAN_FRONTEND=noninteractive; \
                 apt-get install -y -q chromium >/dev/null || \
                 (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null))"
                ),
            ])
            .status()
            .expect("flock and sh are installed");
        assert!(status.success(), "installing Debian's chromium failed");

        // The marker holds the lock file it was installed from.
        let lock_digest = hex::encode(sha2::Sha256::digest(PACKAGE_LOCK.as_bytes()));
        let script = format!(
            "test \"$(cat {DIR}/.ok 2>/dev/null)\" = '{lock_digest}' || \
             (rm -rf {DIR} && mkdir -p {DIR} && cd {DIR} && \
              printf '%s' \"$PORTCULLIS_PACKAGE_JSON\" > package.json && \
              printf '%s' \"$PORTCULLIS_PACKAGE_LOCK\" > package-lock.json && \
              npm ci --silent --no-audit --no-fund && printf '%s' '{lock_digest}' > .ok)"
        );
        let status = Command::new("flock")
            .arg(format!("{DIR}.lock"))
            .args(["sh", "-c", &script])
            .env("PORTCULLIS_PACKAGE_JSON", PACKAGE_JSON)
            .env("PORTCULLIS_PACKAGE_LOCK", PACKAGE_LOCK)
            .status()
            .expect("flock, sh and npm are installed");
        assert!(
            status.success(),
            "installing playwright-core into {DIR} failed"
        );
    });
}

/// apt's own lock is not enough: two tests would both see chromium missing and both install.
const CHROMIUM_LOCK: &str = "/var/tmp/portcullis-test-chromium.lock";

/// Runs the console scenario of `js/console_browser.mjs` with `input` (see the script for its
/// fields); returns what the page showed.
pub async fn console_session(input: Value) -> Value {
    tokio::task::spawn_blocking(move || {
        ensure_installed();
        let mut input = input;
        input["chromium"] = Value::from(CHROMIUM);
        let mut child = Command::new("node")
            .args(["--input-type=module", "-e", CONSOLE_SCRIPT])
            .current_dir(DIR)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node starts");
        child
            .stdin
            .take()
            .expect("stdin piped")
            .write_all(input.to_string().as_bytes())
            .expect("write to node");
        let out = child.wait_with_output().expect("node runs");
        assert!(
            out.status.success(),
            "the browser session failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "the browser script printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    })
    .await
    .expect("browser task")
}
