//! `portcullis-cp`: one-line errors and a non-zero exit on bad configuration, never a panic.

use std::process::ExitCode;

// Memory freed after a burst of snapshot sends goes back to the system instead of staying in
// glibc's arenas.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use portcullis_control_plane::cli::{Cli, Command, run_client};
use portcullis_control_plane::store::Store;

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

async fn run(cli: Cli) -> Result<(), String> {
    let command = cli.command.unwrap_or(Command::Serve(cli.serve));
    match command {
        Command::Serve(args) => {
            let config = args.to_config().map_err(|e| e.to_string())?;
            let cp = portcullis_control_plane::start(config)
                .await
                .map_err(|e| e.to_string())?;
            tokio::select! {
                r = cp.wait() => r.map_err(|e| e.to_string()),
                signal = stop_signal() => {
                    tracing::info!(signal, "stopping");
                    Ok(())
                }
            }
        }
        Command::Migrate(args) => {
            let url = args.database_url().map_err(|e| e.to_string())?;
            let store = Store::connect(&url, 2)
                .await
                .map_err(|e| format!("database: {e}"))?;
            store
                .migrate()
                .await
                .map_err(|e| format!("migrations: {e}"))?;
            println!("migrations applied");
            Ok(())
        }
        other => {
            println!("{}", run_client(other).await.map_err(|e| e.to_string())?);
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // reqwest and rustls share ring; installing it once up front keeps every client consistent.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let json_logs = match &cli.command {
        Some(Command::Serve(args)) => args.log_json,
        _ => cli.serve.log_json,
    };
    init_logs(json_logs);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis-cp: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-cp: {e}");
            ExitCode::FAILURE
        }
    }
}
