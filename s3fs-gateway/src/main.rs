//! `s3fs-gateway --root DIR [--listen ADDR] [--config FILE]`: parses flags and runs the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use s3fs_gateway::{Config, Overrides, RawConfig};

/// The west S3 server: serves a POSIX directory tree as S3.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Directory served as S3 (one subdirectory per bucket).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:9000 (port 0 picks a free port).
    #[arg(long)]
    listen: Option<String>,
    /// TOML config file (see deploy/s3fs-gateway.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Credentials file (default <root>/.gpair-gateway/credentials.toml).
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// Do not fsync writes (faster, not crash-safe).
    #[arg(long)]
    no_fsync: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,s3s=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let raw = match &args.config {
        Some(path) => match RawConfig::from_file(path) {
            Ok(raw) => raw,
            Err(e) => return fail(&e),
        },
        None => RawConfig::default(),
    };
    let flags = Overrides {
        root: args.root,
        listen: args.listen,
        credentials: args.credentials,
        no_fsync: args.no_fsync,
    };
    let config = match Config::build(raw, flags) {
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
    match runtime.block_on(s3fs_gateway::run(config, s3fs_gateway::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("s3fs-gateway: error: {e}");
    ExitCode::FAILURE
}
