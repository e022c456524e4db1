//! `gpair`, the admin CLI: a gRPC client of the backend's admin socket.
//!
//! [`run`] is the whole program: parse the command line ([`cli`]), validate the input
//! ([`validate`]), call the backend ([`commands`], through [`backend`]), and print the result
//! ([`view`], [`format`]) as a table or JSON. Errors surface in one place ([`error`]) as one
//! stderr line and a documented exit code; the only other stderr output is the progress of a
//! job being waited for ([`progress`]). This crate never interprets backend state beyond
//! displaying it: decisions belong to the daemon.

pub mod backend;
pub mod cli;
pub mod commands;
pub mod error;
pub mod format;
pub mod progress;
pub mod validate;
pub mod view;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::backend::Backend;
use crate::cli::Cli;
use crate::commands::Context;
use crate::error::{CliError, Exit};

/// Runs `gpair` with these arguments (the first is the program name) and returns the exit
/// status. Results go to stdout, errors to stderr.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints usage errors with a hint (exit 2) and --help/--version (exit 0).
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(Exit::Usage as u8));
        }
    };
    match execute(cli) {
        Ok(()) => Exit::Success.into(),
        Err(e) => {
            error::report(&e);
            e.exit_code().into()
        }
    }
}

fn execute(cli: Cli) -> Result<(), CliError> {
    let token = match (&cli.token_file, std::env::var("GPAIR_TOKEN")) {
        (Some(f), _) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| CliError::usage("--token-file", format!("{}: {e}", f.display())))?
                .trim()
                .to_string(),
        ),
        (None, Ok(t)) if !t.is_empty() => Some(t),
        _ => None,
    };
    let ctx = Context {
        backend: Backend::new(cli.backend, Duration::from_secs(cli.timeout))
            .with_tls(cli.ca_cert, token),
        // Unknown only if the directory was removed; relative --local paths then fail validation.
        cwd: std::env::current_dir().unwrap_or_default(),
        env_secret_key: std::env::var_os("GPAIR_SECRET_KEY")
            .map(|v| v.to_string_lossy().into_owned()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Local(format!("cannot start the async runtime: {e}")))?;
    let outcome = runtime.block_on(commands::execute(cli.command, &ctx))?;
    print_stdout(&outcome.rendered.text(cli.output))?;
    match outcome.failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Writes the result. A closed pipe (`gpair ls | head -1`) is not an error.
fn print_stdout(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Local(format!(
            "cannot write the result to stdout: {e}"
        ))),
    }
}
