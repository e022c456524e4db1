//! `gpair migrate | recall | state`: queue a job that moves file data between the tiers, or
//! ask where the data of files is.

use std::ffi::OsString;
use std::path::Path;

use gpair_proto::pb;

use super::{job, Context, Outcome};
use crate::cli::TierArgs;
use crate::error::CliError;
use crate::format::Rendered;
use crate::validate;
use crate::view;

/// Which way a job moves data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    /// Offload: east to west (`gpair migrate`).
    Migrate,
    /// Recall: west to east (`gpair recall`).
    Recall,
}

pub(super) async fn start(
    direction: Direction,
    args: TierArgs,
    ctx: &Context,
) -> Result<Outcome, CliError> {
    let req = migrate_request(&args, &ctx.cwd)?;
    let mut client = ctx.backend.connect().await?;
    let j = match direction {
        Direction::Migrate => client.migrate(req).await?,
        Direction::Recall => client.recall(req).await?,
    };
    if args.wait {
        job::wait(&mut client, j.id).await
    } else {
        Ok(view::job::queued(&j).into())
    }
}

pub(super) async fn state(paths: &[OsString], ctx: &Context) -> Result<Rendered, CliError> {
    let paths = validate::east_paths(paths, &ctx.cwd)?;
    let resp = ctx
        .backend
        .connect()
        .await?
        .state(pb::StateRequest { paths })
        .await?;
    Ok(view::state::states(&resp.files))
}

/// Builds the `Migrate` / `Recall` request; the paths are made absolute against `cwd`.
pub fn migrate_request(args: &TierArgs, cwd: &Path) -> Result<pb::MigrateRequest, CliError> {
    Ok(pb::MigrateRequest {
        paths: validate::east_paths(&args.paths, cwd)?,
        recursive: args.recursive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_has_absolute_raw_paths() {
        use std::os::unix::ffi::OsStrExt;
        let args = TierArgs {
            paths: vec![
                OsString::from("a/./b"),
                OsString::from("/abs//x/"),
                std::ffi::OsStr::from_bytes(b"../n\xffme").to_owned(),
            ],
            recursive: true,
            wait: false,
        };
        let req = migrate_request(&args, Path::new("/home/op")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            req,
            pb::MigrateRequest {
                paths: vec![
                    b"/home/op/a/b".to_vec(),
                    b"/abs/x/".to_vec(),
                    b"/home/op/../n\xffme".to_vec(),
                ],
                recursive: true,
            }
        );
    }

    #[test]
    fn empty_path_is_refused() {
        let args = TierArgs {
            paths: vec![OsString::from("/a"), OsString::new()],
            recursive: false,
            wait: true,
        };
        let e = migrate_request(&args, Path::new("/"))
            .err()
            .map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("PATH: path number 2 is empty"));
    }
}
