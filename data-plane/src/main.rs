//! `portcullis-gw`: one-line errors and a non-zero exit on bad configuration, never a panic.

use std::process::ExitCode;

use clap::Parser;
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

async fn run(args: RunArgs) -> Result<(), String> {
    let config = args.to_config().map_err(|e| e.to_string())?;
    let gateway = portcullis_data_plane::start(config)
        .await
        .map_err(|e| e.to_string())?;
    tokio::select! {
        r = gateway.wait() => r.map_err(|e| e.to_string()),
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted, stopping");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Run(args) = cli.command.unwrap_or(Command::Run(cli.run));
    init_logs(args.log_json);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.worker_threads.filter(|n| *n > 0) {
        builder.worker_threads(n);
    }
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
