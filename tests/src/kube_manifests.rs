//! The Kubernetes manifests of `deploy/kubernetes/`, rendered and checked by code independent of
//! ours: kubernetes-validate (the API's OpenAPI schemas, strict) in a virtualenv of its own
//! outside the clone, created once per machine under a lock because tests run as parallel
//! processes. The rendering (a subset of kustomize) is `py/kube_manifests.py`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// Where the virtualenv lives (machine state, not project state).
pub const VENV: &str = "/var/tmp/portcullis-test-kube-venv";
/// Exact versions, dependencies included, so every machine validates against the same schemas.
const PINS: &[&str] = &[
    "kubernetes-validate==1.37.0",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "referencing==0.37.0",
    "rpds-py==2026.9.1",
    "attrs==26.1.0",
    "PyYAML==6.0.4",
    "packaging==26.4",
    "importlib_resources==7.1.0",
    "typing_extensions==4.16.0",
];
const TOOL: &str = include_str!("py/kube_manifests.py");

/// The Kubernetes versions whose schemas every object must satisfy: the oldest release the
/// manifests claim to support and the newest the validator knows.
pub const VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

/// The repository's root (the tests crate sits one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn python() -> PathBuf {
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
            assert!(status.success(), "creating the virtualenv at {VENV} failed");
            PathBuf::from(format!("{VENV}/bin/python"))
        })
        .clone()
}

/// Runs the tool with `args`, `input` on stdin: its JSON answer, or its error message.
fn tool(args: &[&str], input: &[u8]) -> Result<Value, String> {
    let mut child = Command::new(python())
        .args(["-c", TOOL])
        .args(args)
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
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("tool answered no JSON: {e}"))
}

/// `deploy/kubernetes/` rendered: `"base"` and `"overlays/<name>"` to their objects.
pub fn render_all(root: &Path) -> serde_json::Map<String, Value> {
    let root = root.to_str().expect("UTF-8 path");
    match tool(&["render", root], b"") {
        Ok(Value::Object(m)) => m,
        other => panic!("rendering {root}: {other:?}"),
    }
}

/// One kustomization directory rendered, or the renderer's refusal.
pub fn render_dir(dir: &Path) -> Result<Vec<Value>, String> {
    let dir = dir.to_str().expect("UTF-8 path");
    match tool(&["render-dir", dir], b"")? {
        Value::Array(objects) => Ok(objects),
        other => Err(format!("not a list: {other}")),
    }
}

/// For each object, `None` when it satisfies every schema of [`VERSIONS`], or the first error.
pub fn validate(objects: &[Value]) -> Vec<Option<String>> {
    let input = serde_json::to_vec(objects).expect("objects serialize");
    let mut args = vec!["validate"];
    args.extend(VERSIONS);
    match tool(&args, &input) {
        Ok(Value::Array(results)) => results
            .into_iter()
            .map(|r| r.as_str().map(str::to_owned))
            .collect(),
        other => panic!("validating: {other:?}"),
    }
}
