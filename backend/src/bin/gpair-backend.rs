//! `gpair-backend --config FILE`: parses flags, builds the config and runs the daemon.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

/// The gpair backend daemon.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// TOML config file (see deploy/gpair-backend.toml).
    #[arg(long, required_unless_present = "features")]
    config: Option<PathBuf>,
    /// Print the optional features this build has (e.g. `failpoints`) and exit.
    #[arg(long)]
    features: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(config_path) = args.config.filter(|_| !args.features) else {
        let features: &[&str] = if cfg!(feature = "failpoints") {
            &["failpoints"]
        } else {
            &[]
        };
        println!("{}", features.join(" "));
        return ExitCode::SUCCESS;
    };
    // Two TLS crypto providers are linked in (ring for gRPC, aws-lc for the AWS SDK); say which
    // one the gRPC listener uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    gpair_backend::init_logging();
    let config = match gpair_backend::config::Config::from_file(&config_path) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    let west: gpair_backend::sync::WestFactory =
        Arc::new(|conn| gpair_backend::west::connect(conn));
    match runtime.block_on(gpair_backend::daemon::run(config, west, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("gpair-backend: error: {e}");
    ExitCode::FAILURE
}
