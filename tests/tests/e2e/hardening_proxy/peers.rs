//! Upstreams we did not write, each answering with the raw request target it received (as
//! JSON: `target`, and `peer_port`, the gateway's side of the upstream connection).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process serving HTTP on `addr`, killed on drop.
pub struct Peer {
    pub addr: SocketAddr,
    child: Child,
    _dir: Option<TempDir>,
}

impl Peer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn started(mut cmd: Command, port: u16, dir: Option<TempDir>) -> Peer {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("peer starts");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let peer = Peer {
        addr,
        child,
        _dir: dir,
    };
    portcullis_tests::eventually(Duration::from_secs(15), "peer listening", || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await;
    peer
}

const PYTHON: &str = r#"
import json, sys
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        body = json.dumps({"target": self.path, "requestline": self.requestline,
                           "peer_port": self.client_address[1]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_PUT = do_DELETE = answer
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// Python's `http.server`: `self.path` is the request target as sent.
pub async fn python() -> Peer {
    let port = free_port();
    let mut cmd = Command::new("python3");
    cmd.args(["-c", PYTHON, &port.to_string()]);
    started(cmd, port, None).await
}

const NODE: &str = r#"
const http = require('http');
http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    const b = JSON.stringify({target: req.url, peer_port: req.socket.remotePort});
    res.writeHead(200, {'content-type': 'application/json', 'content-length': Buffer.byteLength(b)});
    res.end(b);
  });
}).listen(+process.argv[1], '127.0.0.1');
"#;

/// Node's `http`: `req.url` is the request target as sent.
pub async fn node() -> Peer {
    let port = free_port();
    let mut cmd = Command::new("node");
    cmd.args(["-e", NODE, &port.to_string()]);
    started(cmd, port, None).await
}

/// nginx answering `$request_uri` (the target as sent, before nginx's own normalisation).
pub async fn nginx() -> Peer {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("pc-nginx-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 128; }}
http {{
  log_format raw '$request_uri ${{connection}}';
  access_log {d}/access.log raw;
  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      default_type application/json;
      return 200 '{{"target":"$request_uri","peer_port":${{remote_port}}}}';
    }}
  }}
}}
"#
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut cmd = Command::new("/usr/sbin/nginx");
    cmd.arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"));
    started(cmd, port, Some(TempDir(dir))).await
}
