//! `portcullis-gw`: one-line errors and a non-zero exit on bad configuration, never a panic.

use std::process::ExitCode;

use clap::Parser;

// The proxy allocates small, short-lived buffers on every request; mimalloc's per-thread free
// lists are measurably cheaper than glibc's malloc there (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use portcullis_data_plane::cli::{Cli, Command, RunArgs};

fn init_logs(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// SIGINT or SIGTERM (what Kubernetes and systemd send first): both stop the process the
/// same way, before a SIGKILL would cut it off mid-write.
async fn stop_signal() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

async fn run(args: RunArgs) -> Result<(), String> {
    let config = args.to_config().map_err(|e| e.to_string())?;
    let gateway = portcullis_data_plane::start(config)
        .await
        .map_err(|e| e.to_string())?;
    tokio::select! {
        r = gateway.wait() => r.map_err(|e| e.to_string()),
        signal = stop_signal() => {
            tracing::info!(signal, "stopping");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Run(args) = cli.command.unwrap_or(Command::Run(cli.run));
    init_logs(args.log_json);
    let _ = rustls::crypto::ring::default_provider().install_default();
    // One worker: the current-thread scheduler avoids work-stealing bookkeeping on every wake-up.
    // With proxy workers the main runtime only does the control work: one thread unless asked.
    let threads = match args.worker_threads {
        None | Some(0) if args.proxy_workers > 0 => Some(1),
        n => n,
    };
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) if n > 1 => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis-gw: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-gw: {e}");
            ExitCode::FAILURE
        }
    }
}
