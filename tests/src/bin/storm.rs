//! `portcullis-bench-storm`: a fleet of simulated edge nodes against a real control plane process.
//!
//! Starts `portcullis-cp` (the binary next to this one) on a fresh Postgres database, optionally
//! loads it with many APIs and policies, connects `--nodes` simulated nodes (`sim_node`: real
//! join, real mTLS, real Watch stream) in `--groups` groups, then measures:
//! * the control plane's memory (VmRSS from /proc) before and after the streams open;
//! * commit→ACK: for each of `--updates` PUTs of one keyless API, the time from the PUT's answer
//!   to each node's receipt of the new revision (the ACK leaves right after);
//! * a `kill -9` of the control plane and its restart on the same addresses: the time until every
//!   node has a new stream on which a message at head arrived;
//! * with `--gateway`, the memory of a real `portcullis-gw` joined to the same control plane once
//!   it has applied the configuration.
//!
//! Prints a human-readable report and a final `RESULT {json}` line.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use futures_util::StreamExt;
use futures_util::future::join_all;
use portcullis_tests::keyless_api;
use portcullis_tests::sim_node::{SimNode, SimNodeOptions};
use reqwest::Method;
use serde_json::{Map, Value, json};

#[derive(Parser)]
#[command(
    name = "portcullis-bench-storm",
    about = "Fleet benchmark against a real control plane"
)]
struct Args {
    /// Simulated nodes.
    #[arg(long, default_value_t = 500)]
    nodes: usize,
    /// Node groups (node i joins group g{i % groups}).
    #[arg(long, default_value_t = 1)]
    groups: usize,
    /// Updates of the measured API for commit→ACK.
    #[arg(long, default_value_t = 50)]
    updates: usize,
    /// Pause between updates, in milliseconds.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Extra keyless APIs created before the nodes connect.
    #[arg(long, default_value_t = 0)]
    apis: usize,
    /// Policies created before the nodes connect.
    #[arg(long, default_value_t = 0)]
    policies: usize,
    /// Management API requests in flight while creating APIs and policies.
    #[arg(long, default_value_t = 16)]
    create_concurrency: usize,
    /// Joins in flight while the fleet connects.
    #[arg(long, default_value_t = 16)]
    join_concurrency: usize,
    /// Skip the kill -9 and restart of the control plane.
    #[arg(long)]
    no_restart: bool,
    /// Also start a real gateway and report its memory once it applied the configuration.
    #[arg(long)]
    gateway: bool,
    /// Control plane binary (default: portcullis-cp next to this binary).
    #[arg(long)]
    cp_bin: Option<PathBuf>,
    /// Gateway binary (default: portcullis-gw next to this binary).
    #[arg(long)]
    gw_bin: Option<PathBuf>,
    /// Postgres to create the benchmark database in (trust auth or a password in the URL).
    #[arg(
        long,
        env = "PORTCULLIS_TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Keep the benchmark database afterwards.
    #[arg(long)]
    keep_db: bool,
    /// Where the control plane and gateway write their logs (default: a new dir under /tmp).
    #[arg(long)]
    log_dir: Option<PathBuf>,
}

const ADMIN_SECRET: &str = "storm-admin-secret-0123456789abcdef";
const ENCRYPTION_SECRET: &str = "storm-encryption-secret-0123456789ab";
/// How long the control plane's CPU use is sampled with every stream idle.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// The API the updates move around.
const MEASURED_API: &str = "storm-measured";
/// Where every benchmark API points: nothing is proxied, only configuration moves.
const TARGET: &str = "http://127.0.0.1:9/";

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis-bench-storm: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-bench-storm: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Everything measured, printed as JSON at the end.
type Report = Map<String, Value>;

async fn run(args: Args) -> anyhow::Result<()> {
    if args.nodes == 0 || args.groups == 0 {
        bail!("--nodes and --groups must be at least 1");
    }
    check_open_files(args.nodes);
    let log_dir = match &args.log_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("portcullis-storm-{}", std::process::id())),
    };
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    println!("logs in {}", log_dir.display());
    let db = Database::create(&args.database_url).await?;
    let result = bench(&args, &db.url, &log_dir).await;
    if args.keep_db {
        println!("kept database {}", db.url);
    } else {
        db.drop_now().await;
    }
    let report = result?;
    println!("RESULT {}", Value::Object(report));
    Ok(())
}

async fn bench(args: &Args, db_url: &str, log_dir: &Path) -> anyhow::Result<Report> {
    let mut report = Report::new();
    report.insert("nodes".into(), json!(args.nodes));
    report.insert("groups".into(), json!(args.groups));
    report.insert("apis".into(), json!(args.apis));
    report.insert("policies".into(), json!(args.policies));
    let cp_bin = binary(args.cp_bin.as_deref(), "portcullis-cp")?;
    let ports = CpPorts::pick()?;
    let mut cp = start_cp(&cp_bin, db_url, &ports, &log_dir.join("cp.log"), 1).await?;
    let mgmt = Mgmt::new(ports.api)?;
    let idle = cp.rss()?;
    println!("control plane up (pid {}): {idle}", cp.pid());
    report.insert("cp_rss_idle_kib".into(), json!(idle.rss_kib));

    if args.apis > 0 || args.policies > 0 {
        load_config(args, &mgmt, &cp, &mut report).await?;
    }
    mgmt.call(
        Method::POST,
        "/tyk/apis",
        Some(keyless_api(MEASURED_API, "/storm-measured/0/", TARGET)),
    )
    .await
    .context("creating the measured API")?;

    let fleet = connect_fleet(args, &mgmt, &ports, &cp, &mut report).await?;
    measure_updates(args, &mgmt, &fleet, &mut report).await?;
    if !args.no_restart {
        cp = measure_restart(&cp_bin, db_url, &ports, log_dir, cp, &fleet, &mut report).await?;
    }
    if args.gateway {
        measure_gateway(args, &mgmt, &ports, log_dir, &fleet, &mut report).await?;
    }
    for node in fleet {
        node.stop().await;
    }
    // What the streams held: per-stream buffers are freed now, allocator retention is not.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let closed = cp.rss()?;
    println!("control plane after every stream closed: {closed}");
    report.insert("cp_rss_streams_closed_kib".into(), json!(closed.rss_kib));
    cp.kill9();
    Ok(report)
}

/// 500 nodes hold 500 sockets here and 500 in the control plane, which inherits our limits.
fn check_open_files(nodes: usize) {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|v| v.parse::<usize>().ok());
    match soft {
        Some(limit) if limit < nodes + 256 => println!(
            "!! open-files limit {limit} is below {} (one socket per node in each process, \
             plus database and spare): raise it with `ulimit -n {}` first",
            nodes + 256,
            (nodes + 256).max(4096)
        ),
        Some(limit) => println!("open-files limit {limit} (needs about {})", nodes + 256),
        None => println!("open-files limit unknown"),
    }
}

/// A fresh database for the run, dropped at the end.
struct Database {
    url: String,
    admin_url: String,
    name: String,
}

impl Database {
    async fn create(admin_url: &str) -> anyhow::Result<Self> {
        let name = format!("portcullis_storm_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(admin_url)
            .await
            .with_context(|| format!("Postgres at {admin_url}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .with_context(|| format!("creating database {name}"))?;
        admin.close().await;
        let mut url = url::Url::parse(admin_url).context("database URL")?;
        url.set_path(&name);
        Ok(Self {
            url: url.to_string(),
            admin_url: admin_url.to_owned(),
            name,
        })
    }

    async fn drop_now(self) {
        let dropped = async {
            let admin = sqlx::PgPool::connect(&self.admin_url).await?;
            sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&admin)
            .await?;
            admin.close().await;
            Ok::<_, sqlx::Error>(())
        };
        if let Err(e) = dropped.await {
            eprintln!("could not drop database {}: {e}", self.name);
        }
    }
}

/// `name` next to this executable, unless given.
fn binary(given: Option<&Path>, name: &str) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_owned(),
        None => std::env::current_exe()
            .context("locating this executable")?
            .with_file_name(name),
    };
    if !path.is_file() {
        bail!(
            "{} not found: build it (cargo build --release -p portcullis-control-plane -p portcullis-data-plane) or pass its path",
            path.display()
        );
    }
    Ok(path)
}

/// A free port on 127.0.0.1 (the listener is closed again; the child binds it).
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Fixed for the run, so the restarted control plane listens where the nodes reconnect.
struct CpPorts {
    api: u16,
    sync: u16,
}

impl CpPorts {
    fn pick() -> anyhow::Result<Self> {
        Ok(Self {
            api: free_port()?,
            sync: free_port()?,
        })
    }

    fn sync_url(&self) -> anyhow::Result<url::Url> {
        url::Url::parse(&format!("https://127.0.0.1:{}", self.sync)).context("sync URL")
    }
}

/// Resident and peak memory of a process, in KiB.
#[derive(Clone, Copy, Debug)]
struct Rss {
    rss_kib: u64,
    hwm_kib: u64,
}

impl std::fmt::Display for Rss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RSS {:.1} MiB (peak {:.1} MiB)",
            self.rss_kib as f64 / 1024.0,
            self.hwm_kib as f64 / 1024.0
        )
    }
}

/// A child process, killed with SIGKILL when dropped.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss(&self) -> anyhow::Result<Rss> {
        let path = format!("/proc/{}/status", self.pid());
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| anyhow!("{path} has no {name}"))
        };
        Ok(Rss {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }

    /// CPU time used so far (user + system), from /proc/PID/stat.
    fn cpu_time(&self) -> anyhow::Result<Duration> {
        let path = format!("/proc/{}/stat", self.pid());
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
        let rest = text
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| anyhow!("{path}: unexpected format"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| anyhow!("{path}: field {} missing", i + 3))
        };
        let ticks = tick(11)? + tick(12)?;
        Ok(Duration::from_secs_f64(
            ticks as f64 / clock_ticks_per_second(),
        ))
    }

    /// Still running (not exited)?
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `kill -9` and reap.
    fn kill9(&mut self) {
        // SIGKILL: no shutdown path runs, as when a machine or container dies.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.alive() {
            self.kill9();
        }
    }
}

/// `getconf CLK_TCK` (100 on practically every Linux), the unit of /proc/PID/stat times.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

fn spawn(
    name: &'static str,
    bin: &Path,
    args: &[String],
    env: &[(&str, String)],
    log: &Path,
) -> anyhow::Result<Proc> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Proc { name, child })
}

/// Starts the control plane and waits until its management API answers.
async fn start_cp(
    bin: &Path,
    db_url: &str,
    ports: &CpPorts,
    log: &Path,
    attempts: u32,
) -> anyhow::Result<Proc> {
    let args = [
        "serve".to_owned(),
        "--api-listen".to_owned(),
        format!("127.0.0.1:{}", ports.api),
        "--sync-listen".to_owned(),
        format!("127.0.0.1:{}", ports.sync),
        "--replica-name".to_owned(),
        "storm".to_owned(),
    ];
    let env = [
        ("PORTCULLIS_DATABASE_URL", db_url.to_owned()),
        ("PORTCULLIS_ADMIN_SECRET", ADMIN_SECRET.to_owned()),
        ("PORTCULLIS_ENCRYPTION_SECRET", ENCRYPTION_SECRET.to_owned()),
        // The whole simulated fleet is one source address: lift the per-address bounds that a
        // real fleet spread over many addresses never meets.
        ("PORTCULLIS_JOIN_BURST", "1000000".to_owned()),
        (
            "PORTCULLIS_SYNC_MAX_HANDSHAKES_PER_ADDRESS",
            "65536".to_owned(),
        ),
    ];
    let mut last = anyhow!("never started");
    // A port can stay busy for a moment after the previous process died; retry then.
    for _ in 0..attempts.max(1) {
        let mut cp = spawn("portcullis-cp", bin, &args, &env, log)?;
        match wait_http_ok(&mut cp, &format!("http://127.0.0.1:{}/hello", ports.api)).await {
            Ok(()) => return Ok(cp),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last.context(format!(
        "control plane did not start (log: {})",
        log.display()
    )))
}

/// Polls `url` every 5 ms until it answers 200, for at most 60 s, while `proc` lives.
async fn wait_http_ok(proc: &mut Proc, url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if !proc.alive() {
            bail!("{} exited", proc.name);
        }
        if let Ok(resp) = http.get(url).send().await
            && resp.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("{url} did not answer 200 within 60 s")
}

/// The management API with the admin secret.
#[derive(Clone)]
struct Mgmt {
    http: reqwest::Client,
    base: String,
}

impl Mgmt {
    fn new(port: u16) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Calls `path`; the answer's text, or an error naming the status and body.
    async fn text(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<String> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("X-Tyk-Authorization", ADMIN_SECRET);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{method} {path}: {status}: {text}");
        }
        Ok(text)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let text = self.text(method.clone(), path, body).await?;
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: answer is not JSON"))
    }

    async fn token(&self, group: &str) -> anyhow::Result<String> {
        let body = self
            .call(
                Method::POST,
                "/portcullis/bootstrap-tokens",
                Some(json!({"group": group, "max_uses": 1_000_000})),
            )
            .await?;
        body["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no token in {body}"))
    }

    async fn ca_hash(&self) -> anyhow::Result<String> {
        let body = self.call(Method::GET, "/portcullis/ca", None).await?;
        body["ca_hash"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no ca_hash in {body}"))
    }
}

/// Creates `--apis` keyless APIs and `--policies` policies, `--create-concurrency` at a time.
async fn load_config(
    args: &Args,
    mgmt: &Mgmt,
    cp: &Proc,
    report: &mut Report,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let apis = (0..args.apis).map(|i| {
        let def = keyless_api(&format!("storm-{i}"), &format!("/storm-{i}/"), TARGET);
        (Method::POST, "/tyk/apis", def)
    });
    let policies = (0..args.policies).map(|i| {
        // Each policy grants one of the loaded APIs, so the policy is realistic and valid.
        let api = if args.apis > 0 {
            format!("storm-{}", i % args.apis)
        } else {
            MEASURED_API.to_owned()
        };
        let policy = json!({"id": format!("storm-policy-{i}"), "name": format!("Storm {i}"),
            "rate": 100, "per": 1, "quota_max": -1,
            "access_rights": {api.as_str(): {"api_id": api, "versions": ["Default"]}}});
        (Method::POST, "/tyk/policies", policy)
    });
    let mut calls = futures_util::stream::iter(apis.chain(policies))
        .map(|(method, path, body)| mgmt.call(method, path, Some(body)))
        .buffer_unordered(args.create_concurrency.max(1));
    let mut done = 0usize;
    while let Some(result) = calls.next().await {
        result.context("loading the configuration")?;
        done += 1;
        if done.is_multiple_of(2000) {
            println!("  created {done} resources");
        }
    }
    let took = started.elapsed();
    // Let the tailer and any transient buffers settle before reading memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = cp.rss()?;
    println!(
        "created {} APIs and {} policies in {:.1} s ({:.0}/s); control plane {rss}",
        args.apis,
        args.policies,
        took.as_secs_f64(),
        done as f64 / took.as_secs_f64()
    );
    report.insert("load_seconds".into(), json!(took.as_secs_f64()));
    report.insert("cp_rss_loaded_kib".into(), json!(rss.rss_kib));
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// Waits until every node satisfies `done`, polling; on timeout names a few laggards.
async fn wait_all(
    fleet: &[SimNode],
    timeout: Duration,
    what: &str,
    done: impl Fn(&SimNode) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let pending: Vec<&SimNode> = fleet.iter().filter(|n| !done(n)).collect();
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let examples: Vec<String> = pending
                .iter()
                .take(3)
                .map(|n| {
                    format!(
                        "{} at {}: {}",
                        n.node_id,
                        n.acked_revision(),
                        n.last_error().unwrap_or_default()
                    )
                })
                .collect();
            bail!(
                "{} of {} nodes not {what} after {timeout:?}; e.g. {}",
                pending.len(),
                fleet.len(),
                examples.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Rounds of re-joining nodes whose fresh certificate the control plane refused.
const MAX_REJOIN_ROUNDS: usize = 5;

/// A node the control plane refuses on Watch although it just issued its certificate.
///
/// Control plane bug: a random certificate serial whose first byte is 0x00 is stored with that
/// byte but encoded (and parsed back) without it, so authentication compares different serials
/// and answers "superseded by a renewal" for ever. A fresh join gets a fresh serial.
fn refused(node: &SimNode) -> bool {
    node.acked_revision() == 0
        && node
            .last_error()
            .is_some_and(|e| e.contains("superseded by a renewal"))
}

/// Node 0 alone: join time and then snapshot time (cold: the group's snapshot is built for it).
async fn first_node(opts: SimNodeOptions) -> anyhow::Result<(SimNode, Duration, Duration)> {
    for _ in 0..MAX_REJOIN_ROUNDS {
        let started = Instant::now();
        let node = SimNode::start(opts.clone()).await.context("node 0 joins")?;
        let joined = started.elapsed();
        let deadline = started + Duration::from_secs(120);
        while node.acked_revision() == 0 && !refused(&node) {
            if Instant::now() >= deadline {
                bail!(
                    "node 0 got no snapshot within 120 s: {}",
                    node.last_error().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if let Some((_, at)) = node.first_received_after(0) {
            return Ok((node, joined, at.saturating_duration_since(started)));
        }
        println!("!! node 0 was refused its fresh certificate; joining again");
    }
    bail!("node 0 was refused {MAX_REJOIN_ROUNDS} fresh certificates")
}

/// Joins node 0 alone (its snapshot is the cold one), then the rest `--join-concurrency` at a time.
async fn connect_fleet(
    args: &Args,
    mgmt: &Mgmt,
    ports: &CpPorts,
    cp: &Proc,
    report: &mut Report,
) -> anyhow::Result<Vec<SimNode>> {
    let ca_hash = mgmt.ca_hash().await?;
    let mut tokens = Vec::with_capacity(args.groups);
    for g in 0..args.groups {
        tokens.push(mgmt.token(&format!("g{g}")).await?);
    }
    let url = ports.sync_url()?;
    let options = |i: usize| {
        SimNodeOptions::new(
            url.clone(),
            &ca_hash,
            &tokens[i % args.groups],
            &format!("storm-{i}"),
        )
    };
    let before = cp.rss()?;

    let (first, joined, snapshot_at) = first_node(options(0)).await?;
    let head = first.acked_revision();
    let info = first.last_snapshot().unwrap_or_default();
    println!(
        "fresh node: join {:.1} ms, then snapshot of revision {head} ({} resources, {:.2} MiB in {} chunks) after {:.1} ms",
        ms(joined),
        info.resources,
        info.bytes as f64 / (1024.0 * 1024.0),
        info.chunks,
        ms(snapshot_at - joined)
    );
    report.insert("fresh_join_ms".into(), json!(ms(joined)));
    report.insert("fresh_snapshot_ms".into(), json!(ms(snapshot_at - joined)));
    report.insert("snapshot_bytes".into(), json!(info.bytes));
    report.insert("snapshot_chunks".into(), json!(info.chunks));

    let started = Instant::now();
    let mut fleet = vec![first];
    let mut joins = futures_util::stream::iter(1..args.nodes)
        .map(|i| {
            let opts = options(i);
            async move {
                SimNode::start(opts)
                    .await
                    .with_context(|| format!("node {i} joins"))
            }
        })
        .buffer_unordered(args.join_concurrency.max(1));
    while let Some(node) = joins.next().await {
        fleet.push(node?);
    }
    let all_joined = started.elapsed();
    let timeout = Duration::from_secs(60) + Duration::from_millis(200) * args.nodes as u32;
    let mut rejoins = 0usize;
    for _ in 0..MAX_REJOIN_ROUNDS {
        let settled = |n: &SimNode| n.acked_revision() >= head || refused(n);
        wait_all(&fleet, timeout, "at head", settled).await?;
        let bad: Vec<usize> = (0..fleet.len()).filter(|i| refused(&fleet[*i])).collect();
        if bad.is_empty() {
            break;
        }
        for i in bad {
            fleet[i] = SimNode::start(options(i))
                .await
                .with_context(|| format!("node {i} joins again"))?;
            rejoins += 1;
        }
    }
    wait_all(&fleet, timeout, "at head", |n| n.acked_revision() >= head).await?;
    let all_synced = started.elapsed();
    if rejoins > 0 {
        println!(
            "!! {rejoins} of {} nodes had to join again: the control plane refused the certificate it had just issued (\"superseded by a renewal\")",
            args.nodes
        );
    }
    report.insert("rejoins_refused_certificate".into(), json!(rejoins));
    // ACK bookkeeping (one database write per node) settles before memory is read.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = cp.rss()?;
    let per_stream = (after.rss_kib as f64 - before.rss_kib as f64) / args.nodes as f64;
    println!(
        "{} nodes in {} groups: all joined after {:.2} s, all holding revision {head} after {:.2} s",
        args.nodes,
        args.groups,
        all_joined.as_secs_f64(),
        all_synced.as_secs_f64()
    );
    println!(
        "control plane before the streams: {before}; with {} streams: {after}; {per_stream:.1} KiB per stream",
        args.nodes
    );
    // Idle streams still cost something (periodic revocation checks, keepalives, bookmarks).
    let cpu_before = cp.cpu_time()?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_cpu =
        cp.cpu_time()?.saturating_sub(cpu_before).as_secs_f64() / IDLE_WINDOW.as_secs_f64();
    println!(
        "control plane CPU with {} idle streams: {:.1} % of one core",
        args.nodes,
        idle_cpu * 100.0
    );
    report.insert("cp_idle_cpu_percent".into(), json!(idle_cpu * 100.0));
    report.insert(
        "fleet_connect_seconds".into(),
        json!(all_synced.as_secs_f64()),
    );
    report.insert("cp_rss_before_streams_kib".into(), json!(before.rss_kib));
    report.insert("cp_rss_with_streams_kib".into(), json!(after.rss_kib));
    report.insert("cp_rss_per_stream_kib".into(), json!(per_stream));
    Ok(fleet)
}

/// PUTs the measured API `--updates` times; per update, the time from the PUT's answer to each
/// node's receipt of the new revision.
async fn measure_updates(
    args: &Args,
    mgmt: &Mgmt,
    fleet: &[SimNode],
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut samples = Vec::with_capacity(args.updates * fleet.len());
    // From the PUT's request instead: the commit lies between the two, so these bound it.
    let mut from_sent = Vec::with_capacity(args.updates * fleet.len());
    let mut put_times = Vec::with_capacity(args.updates);
    // Receipts that raced ahead of the PUT's answer (the stream beat the HTTP response).
    let mut early = 0usize;
    for u in 1..=args.updates {
        let base = fleet.iter().map(SimNode::acked_revision).max().unwrap_or(0);
        let def = keyless_api(MEASURED_API, &format!("/storm-measured/{u}/"), TARGET);
        let sent = Instant::now();
        mgmt.call(Method::PUT, &format!("/tyk/apis/{MEASURED_API}"), Some(def))
            .await
            .with_context(|| format!("update {u}"))?;
        let answered = Instant::now();
        put_times.push(answered - sent);
        let waits = fleet
            .iter()
            .map(|n| n.wait_for_revision(Duration::from_secs(30), |r| r > base));
        let arrived = join_all(waits).await;
        let missing = arrived.iter().filter(|ok| !**ok).count();
        if missing > 0 {
            bail!("update {u}: {missing} nodes did not receive it within 30 s");
        }
        for node in fleet {
            let (_, at) = node
                .first_received_after(base)
                .ok_or_else(|| anyhow!("update {u}: node {} has no receipt time", node.node_id))?;
            if at < answered {
                early += 1;
            }
            samples.push(at.saturating_duration_since(answered));
            from_sent.push(at.saturating_duration_since(sent));
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    samples.sort();
    from_sent.sort();
    put_times.sort();
    let (p50, p99, max) = (
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        percentile(&samples, 1.0),
    );
    println!(
        "commit→ACK over {} (node, update) pairs: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({early} arrived before the PUT's answer, counted as 0); PUT p50 {:.2} ms",
        samples.len(),
        ms(p50),
        ms(p99),
        ms(max),
        ms(percentile(&put_times, 0.5)),
    );
    report.insert("commit_ack_p50_ms".into(), json!(ms(p50)));
    report.insert("commit_ack_p99_ms".into(), json!(ms(p99)));
    report.insert("commit_ack_max_ms".into(), json!(ms(max)));
    report.insert("commit_ack_early".into(), json!(early));
    let (sent_p50, sent_p99) = (percentile(&from_sent, 0.5), percentile(&from_sent, 0.99));
    println!(
        "PUT sent→ACK (upper bound, includes the whole PUT): p50 {:.2} ms  p99 {:.2} ms",
        ms(sent_p50),
        ms(sent_p99)
    );
    report.insert("sent_ack_p50_ms".into(), json!(ms(sent_p50)));
    report.insert("sent_ack_p99_ms".into(), json!(ms(sent_p99)));
    report.insert("put_p50_ms".into(), json!(ms(percentile(&put_times, 0.5))));
    if let Some((count, mean)) = cp_propagation(mgmt).await {
        println!(
            "control plane's own commit→ACK histogram: {count} observations, mean {mean:.2} ms"
        );
        report.insert("cp_histogram_mean_ms".into(), json!(mean));
    }
    Ok(())
}

/// Count and mean (ms) of `portcullis_sync_propagation_seconds` summed over groups.
async fn cp_propagation(mgmt: &Mgmt) -> Option<(f64, f64)> {
    let text = mgmt.text(Method::GET, "/metrics", None).await.ok()?;
    let sum_of = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let count = sum_of("portcullis_sync_propagation_seconds_count");
    let sum = sum_of("portcullis_sync_propagation_seconds_sum");
    (count > 0.0).then(|| (count, sum / count * 1e3))
}

/// `kill -9`, restart on the same addresses, and wait until every node has a new stream at head.
async fn measure_restart(
    cp_bin: &Path,
    db_url: &str,
    ports: &CpPorts,
    log_dir: &Path,
    mut cp: Proc,
    fleet: &[SimNode],
    report: &mut Report,
) -> anyhow::Result<Proc> {
    let head = fleet.iter().map(SimNode::acked_revision).max().unwrap_or(0);
    let streams: Vec<u64> = fleet.iter().map(SimNode::streams).collect();
    let snapshots: u64 = fleet.iter().map(SimNode::snapshots).sum();
    let killed = Instant::now();
    cp.kill9();
    drop(cp);
    let cp = start_cp(cp_bin, db_url, ports, &log_dir.join("cp.log"), 20).await?;
    let up = killed.elapsed();
    let timeout = Duration::from_secs(60) + Duration::from_millis(100) * fleet.len() as u32;
    let back = |n: &SimNode, before: u64| n.streams() > before && n.acked_revision() >= head;
    let deadline = Instant::now() + timeout;
    while !fleet.iter().zip(&streams).all(|(n, s)| back(n, *s)) {
        if Instant::now() >= deadline {
            let missing = fleet
                .iter()
                .zip(&streams)
                .filter(|(n, s)| !back(n, **s))
                .count();
            bail!("{missing} nodes not back at head {timeout:?} after the restart");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut per_node: Vec<Duration> = fleet
        .iter()
        .filter_map(|n| n.stream_started())
        .map(|t| t.saturating_duration_since(killed))
        .collect();
    per_node.sort();
    let all_back = percentile(&per_node, 1.0);
    let resent: u64 = fleet.iter().map(SimNode::snapshots).sum::<u64>() - snapshots;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = cp.rss()?;
    println!(
        "kill -9 and restart: management API up after {:.2} s; nodes back at head p50 {:.2} s, all {:.2} s after the kill; {resent} snapshots resent; control plane {rss}",
        up.as_secs_f64(),
        percentile(&per_node, 0.5).as_secs_f64(),
        all_back.as_secs_f64()
    );
    report.insert("restart_cp_up_seconds".into(), json!(up.as_secs_f64()));
    report.insert(
        "restart_p50_seconds".into(),
        json!(percentile(&per_node, 0.5).as_secs_f64()),
    );
    report.insert("restart_all_seconds".into(), json!(all_back.as_secs_f64()));
    report.insert("restart_snapshots".into(), json!(resent));
    report.insert("cp_rss_after_restart_kib".into(), json!(rss.rss_kib));
    Ok(cp)
}

/// Reads a gauge from the gateway's admin `/metrics`.
async fn gauge(http: &reqwest::Client, url: &str, name: &str) -> Option<i64> {
    let text = http.get(url).send().await.ok()?.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A real gateway joins group g0; its memory once it serves the head revision.
async fn measure_gateway(
    args: &Args,
    mgmt: &Mgmt,
    ports: &CpPorts,
    log_dir: &Path,
    fleet: &[SimNode],
    report: &mut Report,
) -> anyhow::Result<()> {
    let bin = binary(args.gw_bin.as_deref(), "portcullis-gw")?;
    let head = fleet.iter().map(SimNode::acked_revision).max().unwrap_or(0);
    let (listen, admin) = (free_port()?, free_port()?);
    let gw_args = [
        "run".to_owned(),
        "--listen".to_owned(),
        format!("127.0.0.1:{listen}"),
        "--admin-listen".to_owned(),
        format!("127.0.0.1:{admin}"),
        "--tls-listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--control-plane".to_owned(),
        ports.sync_url()?.to_string(),
        "--ca-hash".to_owned(),
        mgmt.ca_hash().await?,
        "--node-name".to_owned(),
        "storm-gateway".to_owned(),
    ];
    let env = [
        ("PORTCULLIS_BOOTSTRAP_TOKEN", mgmt.token("g0").await?),
        ("PORTCULLIS_ENCRYPTION_SECRET", ENCRYPTION_SECRET.to_owned()),
    ];
    let started = Instant::now();
    let mut gw = spawn(
        "portcullis-gw",
        &bin,
        &gw_args,
        &env,
        &log_dir.join("gw.log"),
    )?;
    let metrics = format!("http://127.0.0.1:{admin}/metrics");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = started + Duration::from_secs(120);
    loop {
        if !gw.alive() {
            bail!(
                "the gateway exited (log: {})",
                log_dir.join("gw.log").display()
            );
        }
        let at = gauge(&http, &metrics, "portcullis_gateway_applied_revision").await;
        if at.is_some_and(|r| r >= i64::try_from(head).unwrap_or(i64::MAX)) {
            break;
        }
        if Instant::now() >= deadline {
            bail!("the gateway did not reach revision {head} within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let applied = started.elapsed();
    let apis = gauge(&http, &metrics, "portcullis_gateway_apis")
        .await
        .unwrap_or(-1);
    let just_applied = gw.rss()?;
    // Transient buffers of the snapshot (decode, build aside) are freed by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = gw.rss()?;
    println!(
        "real gateway: process start → revision {head} applied ({apis} APIs routed) in {:.2} s; {just_applied} right after, {settled} 2 s later",
        applied.as_secs_f64()
    );
    report.insert("gw_apply_seconds".into(), json!(applied.as_secs_f64()));
    report.insert("gw_apis".into(), json!(apis));
    report.insert("gw_rss_kib".into(), json!(settled.rss_kib));
    report.insert("gw_rss_peak_kib".into(), json!(settled.hwm_kib));
    gw.kill9();
    Ok(())
}
