//! Python peers for the traffic tests (WebSocket, gRPC, streaming and load-balanced upstreams,
//! and the WebSocket and gRPC clients), each an implementation independent of the gateway's:
//! servers run as child processes that print their port first and are killed on drop; clients
//! run once per command and print one JSON answer.

use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// `py/ws_server.py`: a `websockets` echo server that records the requests it saw.
pub const WS_SERVER: &str = include_str!("py/ws_server.py");
/// `py/ws_client.py`: a `websockets` client (see the file for its commands).
pub const WS_CLIENT: &str = include_str!("py/ws_client.py");
/// `py/grpc_server.py`: a grpcio server, service `portcullis.test.Echo`.
pub const GRPC_SERVER: &str = include_str!("py/grpc_server.py");
/// `py/grpc_client.py`: a grpcio client over h2c.
pub const GRPC_CLIENT: &str = include_str!("py/grpc_client.py");
/// `py/stream_server.py`: SSE, chunked, upload-counting and endless responses (http.server).
pub const STREAM_SERVER: &str = include_str!("py/stream_server.py");
/// `py/named_server.py NAME PORT`: answers every GET with its name.
pub const NAMED_SERVER: &str = include_str!("py/named_server.py");
/// `py/header_echo.py`: answers every GET with the path and headers it received, as JSON.
pub const HEADER_ECHO: &str = include_str!("py/header_echo.py");
/// `py/otlp_collector.py`: an OTLP/gRPC trace collector (PyPI opentelemetry-proto and grpcio)
/// whose HTTP port answers the spans it received.
pub const OTLP_COLLECTOR: &str = include_str!("py/otlp_collector.py");
/// `py/framing_server.py`: a raw-socket upstream with one response framing per path.
pub const FRAMING_SERVER: &str = include_str!("py/framing_server.py");
/// An upstream answering 101 to everything (`py/bad_upgrade_server.py`).
pub const BAD_UPGRADE_SERVER: &str = include_str!("py/bad_upgrade_server.py");
/// `py/pipeline_client.py`: raw bytes out, answers read back with `http.client`'s parser.
pub const PIPELINE_CLIENT: &str = include_str!("py/pipeline_client.py");

/// A Python server in a child process.
pub struct PyPeer {
    child: Option<Child>,
    pub port: u16,
}

impl PyPeer {
    pub async fn start(script: &'static str, args: &[&str]) -> Self {
        crate::init();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let (child, port) = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::idp_server::spawn_python_server(script, &args)
        })
        .await
        .expect("python server start");
        Self {
            child: Some(child),
            port,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Kills the server: its port is closed from now on.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PyPeer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the client `script` with `command` (JSON) as its argument; returns the JSON it prints.
pub async fn py_client(script: &'static str, command: Value) -> Value {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(crate::pyjwt::python())
            .arg("-c")
            .arg(script)
            .arg(command.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("python runs")
    })
    .await
    .expect("python client task");
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the client prints JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs `curl` with `args` (`-s` added); returns its exit code, stdout and stderr.
pub async fn curl(args: Vec<String>) -> (i32, String, String) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .arg("-s")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("curl runs")
    })
    .await
    .expect("curl task");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `sh -c script` (a pipeline feeding curl, say); returns its exit code and stdout.
pub async fn sh(script: String) -> (i32, String) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .output()
            .expect("sh runs")
    })
    .await
    .expect("sh task");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The peak resident set of this process in KiB (`VmHWM`): the gateway runs in-process, so a
/// body it buffered whole would show here even after it was freed.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .expect("/proc/self/status has VmHWM")
}
