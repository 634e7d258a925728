//! A Postgres server of the test's own (initdb in a temporary directory, its own port), so a test
//! can kill -9 it and start it again without touching the shared server other tests use.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct PrivatePostgres {
    dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

/// The server binaries of the installed Postgres (Debian keeps them out of PATH).
fn bin(name: &str) -> PathBuf {
    let base = PathBuf::from("/usr/lib/postgresql");
    let mut versions: Vec<_> = std::fs::read_dir(&base)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .last()
        .map(|v| v.join("bin").join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Runs as the `postgres` user when we are root: the server refuses to run as root.
fn as_postgres(program: PathBuf) -> Command {
    let root = std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(55432)
}

impl PrivatePostgres {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("portcullis-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status();
        let status = as_postgres(bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(dir.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed");
        let mut pg = Self {
            dir,
            port: free_port(),
            child: None,
        };
        pg.run().await;
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections. After a kill -9 the orphaned
    /// backends of the old server hold its shared memory for a moment: retry until they are gone.
    pub async fn run(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut child = as_postgres(bin("postgres"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-c",
                    "listen_addresses=127.0.0.1",
                ])
                .arg("-c")
                .arg(format!("unix_socket_directories={}", self.dir.display()))
                .args(["-c", "fsync=off"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let up = async {
                for _ in 0..100 {
                    if sqlx::PgPool::connect(&self.url()).await.is_ok() {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                false
            };
            tokio::select! {
                ok = up => if ok { self.child = Some(child); return; },
                _ = wait_exit(&mut child) => {}
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                tokio::time::Instant::now() < deadline,
                "private Postgres does not start"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// kill -9 of the postmaster, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // runuser forwards nothing on SIGKILL: kill the server, found by its pid file.
            let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next().map(str::to_owned));
            if let Some(pid) = pid {
                // The backends too, as when the machine dies: a backend outliving its postmaster
                // can still answer a query or two before it notices.
                // Stopped first, so that it forks no new backend meanwhile.
                let _ = Command::new("kill").args(["-STOP", &pid]).status();
                let _ = Command::new("pkill").args(["-9", "-P", &pid]).status();
                let _ = Command::new("kill").args(["-9", &pid]).status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn wait_exit(child: &mut Child) {
    loop {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
