//! A Tyk gRPC coprocess plugin server in Python (grpcio, `py/coprocess_server.py`) in a child
//! process, built from the gateway's own `.proto` files at start; it counts its calls per hook.
//! Killed on drop.

use std::path::PathBuf;
use std::process::Child;

const SERVER: &str = include_str!("py/coprocess_server.py");

pub struct PluginServer {
    child: Child,
    pub port: u16,
    counts: PathBuf,
}

impl PluginServer {
    pub async fn start() -> Self {
        crate::init();
        let protos = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto/proto/coprocess");
        let counts = std::env::temp_dir().join(format!(
            "portcullis-coprocess-{}.json",
            uuid::Uuid::new_v4().simple()
        ));
        let path = counts.to_string_lossy().into_owned();
        let protos = protos.to_string_lossy().into_owned();
        let (child, port) = tokio::task::spawn_blocking(move || {
            crate::idp_server::spawn_python_server(SERVER, &[&protos, &path])
        })
        .await
        .expect("plugin server start");
        Self {
            child,
            port,
            counts,
        }
    }

    /// `--coprocess-grpc-server` as Tyk writes it.
    pub fn address(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// How many times the plugin server ran `hook`.
    pub fn calls(&self, hook: &str) -> u64 {
        std::fs::read(&self.counts)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v[hook].as_u64())
            .unwrap_or(0)
    }
}

impl Drop for PluginServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.counts);
    }
}
