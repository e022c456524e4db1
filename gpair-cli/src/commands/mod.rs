//! Command execution: validate the input, connect, call the backend, hand back a
//! [`Rendered`] result. Nothing here prints; `lib.rs` does, so every command obeys
//! `--output` and the stdout/stderr split the same way.
//!
//! A new command group adds a module here and an arm to [`execute`].

mod caps;
mod fsck;
mod gpair;
mod gpeer;
mod job;
mod policy;
mod quota;
mod status;
mod sync;
mod tier;

use std::path::PathBuf;

use crate::backend::Backend;
use crate::cli::Command;
use crate::error::CliError;
use crate::format::Rendered;

pub use gpair::bind_request;
pub use gpeer::add_request;
pub use job::ending_failure;
pub use policy::set_policy_request;
pub use quota::set_request;
pub use tier::migrate_request;

/// What a command needs from its surroundings, gathered once in `run` so commands stay
/// testable without touching the process environment.
#[derive(Debug, Clone)]
pub struct Context {
    /// Where the backend is.
    pub backend: Backend,
    /// The working directory relative paths are resolved against.
    pub cwd: PathBuf,
    /// `GPAIR_SECRET_KEY`, if set.
    pub env_secret_key: Option<String>,
}

/// A command's result, and whether the process should still fail after printing it (a
/// `gpeer check` that did not pass prints its findings, then exits 1; a job waited for that
/// failed prints its report, then exits 5).
#[derive(Debug)]
pub struct Outcome {
    /// What to print on stdout.
    pub rendered: Rendered,
    /// The error to report after printing, if any.
    pub failure: Option<CliError>,
}

impl From<Rendered> for Outcome {
    fn from(rendered: Rendered) -> Self {
        Outcome {
            rendered,
            failure: None,
        }
    }
}

/// Runs one command.
pub async fn execute(cmd: Command, ctx: &Context) -> Result<Outcome, CliError> {
    match cmd {
        Command::Gpeer(c) => gpeer::execute(c, ctx).await,
        Command::Bind(args) => gpair::bind(args, ctx).await.map(Outcome::from),
        Command::Ls => gpair::list(ctx).await.map(Outcome::from),
        Command::Show { name } => gpair::show(&name, ctx).await.map(Outcome::from),
        Command::Unbind { name, force } => {
            gpair::unbind(&name, force, ctx).await.map(Outcome::from)
        }
        Command::Sync(c) => sync::execute(c, ctx).await.map(Outcome::from),
        Command::Status => status::status(ctx).await.map(Outcome::from),
        Command::Migrate(args) => tier::start(tier::Direction::Migrate, args, ctx).await,
        Command::Recall(args) => tier::recall(args, ctx).await,
        Command::State { paths } => tier::state(&paths, ctx).await.map(Outcome::from),
        Command::Job(c) => job::execute(c, ctx).await,
        Command::Quota(c) => quota::execute(c, ctx).await.map(Outcome::from),
        Command::Caps(c) => caps::caps(c, ctx).await.map(Outcome::from),
        Command::Session(c) => caps::session(c, ctx).await.map(Outcome::from),
        Command::Policy(c) => policy::execute(c, ctx).await.map(Outcome::from),
        Command::Explain { paths } => policy::explain(&paths, ctx).await.map(Outcome::from),
        Command::Fsck {
            name,
            repair,
            rebuild,
            verify_data,
        } => fsck::fsck(name, repair, rebuild, verify_data, ctx).await,
        Command::Pin { paths } => policy::pin(&paths, false, ctx).await.map(Outcome::from),
        Command::Unpin { paths } => policy::pin(&paths, true, ctx).await.map(Outcome::from),
    }
}
