//! Real Redis topologies started by a test from Debian's `redis-server` and `redis-sentinel`:
//! a Redis Cluster of three primaries, each with a replica, and a Sentinel-managed primary with
//! a replica and three sentinels. Every process lives in a temporary folder of its own and is
//! killed on drop; a test can kill a primary to force a failover.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::eventually;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `redis-cli -p PORT ARGS...`: its output, trimmed ("" when it could not connect).
pub fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn folder(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-{kind}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    dir
}

/// One server process of a topology.
pub struct Node {
    pub port: u16,
    child: Option<Child>,
}

impl Node {
    fn spawn(program: &str, args: &[String], port: u16) -> Self {
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{program} on PATH (apt-get install redis-server redis-sentinel): {e}")
            });
        Self {
            port,
            child: Some(child),
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_alive(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn listening(port: u16) {
    eventually(
        Duration::from_secs(10),
        "redis process listening",
        || async { (cli(port, &["PING"]) == "PONG").then_some(()) },
    )
    .await;
}

/// Each server in a folder of its own (their RDB files would collide), replicating without the
/// default 5 s wait before a full sync.
fn server_args(port: u16, dir: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let dir = dir.join(port.to_string());
    std::fs::create_dir_all(&dir).expect("a server folder");
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--repl-diskless-sync-delay",
        "0",
        "--dir",
        dir.to_str().unwrap_or("."),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// Three primaries and three replicas, `cluster-node-timeout` 1 s.
pub struct RedisCluster {
    pub nodes: Vec<Node>,
    dir: PathBuf,
}

impl RedisCluster {
    pub async fn start() -> Self {
        let dir = folder("cluster");
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = free_port();
            let conf = dir.join(format!("nodes-{port}.conf"));
            let args = server_args(
                port,
                &dir,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    conf.to_str().unwrap_or("nodes.conf"),
                    "--cluster-node-timeout",
                    "1000",
                ],
            );
            nodes.push(Node::spawn("redis-server", &args, port));
        }
        for n in &nodes {
            listening(n.port).await;
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes, dir };
        cluster.wait_ok().await;
        // A replica that never synced refuses to take over ("disconnected for too long").
        eventually(Duration::from_secs(30), "every replica in sync", || async {
            cluster
                .nodes
                .iter()
                .filter(|n| cli(n.port, &["ROLE"]).starts_with("slave"))
                .all(|n| cli(n.port, &["INFO", "replication"]).contains("master_link_status:up"))
                .then_some(())
        })
        .await;
        cluster
    }

    /// Until every live node reports `cluster_state:ok` with all 16 384 slots served.
    pub async fn wait_ok(&self) {
        eventually(Duration::from_secs(30), "the cluster is ok", || async {
            self.nodes
                .iter()
                .filter(|n| n.is_alive())
                .all(|n| {
                    let info = cli(n.port, &["CLUSTER", "INFO"]);
                    info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
                })
                .then_some(())
        })
        .await;
    }

    /// `redis+cluster://` with the first three nodes as seeds.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes[..3]
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// Every key of every live primary matching `pattern`, with the primary's port.
    pub fn keys(&self, pattern: &str) -> Vec<(u16, String)> {
        let mut out = Vec::new();
        for n in self.nodes.iter().filter(|n| n.is_alive()) {
            if !cli(n.port, &["ROLE"]).starts_with("master") {
                continue;
            }
            for k in cli(n.port, &["--scan", "--pattern", pattern]).lines() {
                if !k.is_empty() {
                    out.push((n.port, k.to_owned()));
                }
            }
        }
        out
    }

    pub fn kill(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            n.kill();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A primary, its replica and three sentinels (quorum 2, primary down after 1 s).
pub struct RedisSentinel {
    pub primary: Node,
    pub replica: Node,
    pub sentinels: Vec<Node>,
    dir: PathBuf,
}

pub const SENTINEL_SERVICE: &str = "portcullis";

impl RedisSentinel {
    pub async fn start() -> Self {
        let dir = folder("sentinel");
        let p = free_port();
        let primary = Node::spawn("redis-server", &server_args(p, &dir, &[]), p);
        listening(p).await;
        let r = free_port();
        let replica_args = server_args(r, &dir, &["--replicaof", "127.0.0.1", &p.to_string()]);
        let replica = Node::spawn("redis-server", &replica_args, r);
        listening(r).await;
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = dir.join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {p} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
                     sentinel failover-timeout {SENTINEL_SERVICE} 5000\n\
                     sentinel parallel-syncs {SENTINEL_SERVICE} 1\n",
                    dir = dir.display()
                ),
            )
            .expect("sentinel.conf");
            let args = vec![conf.display().to_string()];
            sentinels.push(Node::spawn("redis-sentinel", &args, port));
        }
        for s in &sentinels {
            listening(s.port).await;
        }
        let topology = Self {
            primary,
            replica,
            sentinels,
            dir,
        };
        // Replication up and every sentinel aware of the replica: a failover can then happen.
        eventually(
            Duration::from_secs(30),
            "replica in sync, sentinels agreed",
            || async {
                let synced = cli(r, &["INFO", "replication"]).contains("master_link_status:up");
                let known = topology.sentinels.iter().all(|s| {
                    cli(s.port, &["SENTINEL", "REPLICAS", SENTINEL_SERVICE])
                        .contains(&r.to_string())
                });
                (synced && known).then_some(())
            },
        )
        .await;
        topology
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{SENTINEL_SERVICE}", hosts.join(","))
    }

    /// The port the sentinels name as primary now.
    pub fn current_primary(&self) -> Option<u16> {
        let s = self.sentinels.iter().find(|s| s.is_alive())?;
        let answer = cli(
            s.port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE],
        );
        answer.lines().nth(1)?.trim().parse().ok()
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        self.sentinels.clear();
        self.primary.kill();
        self.replica.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
