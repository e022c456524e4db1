//! `gpair migrate | recall | state`: queue a job that moves file data between the tiers, or
//! ask where the data of files is.

use std::ffi::OsString;
use std::path::Path;

use gpair_proto::pb;

use super::{job, Context, Outcome};
use crate::cli::{RecallArgs, TierArgs};
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

/// `gpair recall`: an interactive job, or with `--prefetch-list` background work.
pub(super) async fn recall(args: RecallArgs, ctx: &Context) -> Result<Outcome, CliError> {
    let Some(list) = &args.prefetch_list else {
        let tier = TierArgs {
            paths: args.paths,
            recursive: args.recursive,
            wait: args.wait,
        };
        return start(Direction::Recall, tier, ctx).await;
    };
    let mut paths = validate::east_paths(&args.paths, &ctx.cwd)?;
    paths.extend(validate::east_paths(&read_list(list)?, &ctx.cwd)?);
    if paths.is_empty() {
        return Err(CliError::usage(
            "--prefetch-list",
            format!("{} lists no paths", list.display()),
        ));
    }
    let mut client = ctx.backend.connect().await?;
    // One job per PREFETCH_CHUNK paths (the backend's limit per request).
    let mut jobs = Vec::new();
    for chunk in paths.chunks(PREFETCH_CHUNK) {
        let req = pb::MigrateRequest {
            paths: chunk.to_vec(),
            recursive: args.recursive,
            background: true,
        };
        jobs.push(client.recall(req).await?);
    }
    if args.wait {
        let mut last = None;
        for j in &jobs {
            last = Some(job::wait(&mut client, j.id).await?);
        }
        return last.ok_or_else(|| CliError::usage("--prefetch-list", "no job was started"));
    }
    Ok(view::job::queued_all(&jobs).into())
}

/// Paths per prefetch job.
const PREFETCH_CHUNK: usize = 100_000;

/// The paths of a prefetch list: one per line, raw bytes; blank lines and `#` comments
/// skipped; `-` is standard input.
fn read_list(list: &Path) -> Result<Vec<std::path::PathBuf>, CliError> {
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = Vec::new();
    let read = if list.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(list).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    read.map_err(|e| {
        CliError::usage(
            "--prefetch-list",
            format!("cannot read {}: {e}", list.display()),
        )
    })?;
    let mut out = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        if line.contains(&0) {
            return Err(CliError::usage(
                "--prefetch-list",
                format!(
                    "{} line {}: a path cannot hold a NUL byte",
                    list.display(),
                    i + 1
                ),
            ));
        }
        out.push(std::path::PathBuf::from(std::ffi::OsStr::from_bytes(line)));
    }
    Ok(out)
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
        background: false,
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
                background: false,
            }
        );
    }

    #[test]
    fn prefetch_lists_skip_blanks_and_comments_and_refuse_nul() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let list = dir.path().join("list");
        std::fs::write(&list, b"# warm these\n/a/b\n\nrel/c\r\n/d e \n")
            .unwrap_or_else(|e| panic!("{e}"));
        let got = read_list(&list).unwrap_or_else(|e| panic!("{e}"));
        let want: Vec<std::path::PathBuf> = vec!["/a/b".into(), "rel/c".into(), "/d e ".into()];
        assert_eq!(got, want);
        std::fs::write(&list, b"/a\n/b\0c\n").unwrap_or_else(|e| panic!("{e}"));
        let e = read_list(&list).err().map(|e| e.to_string());
        assert_eq!(
            e,
            Some(format!(
                "--prefetch-list: {} line 2: a path cannot hold a NUL byte",
                list.display()
            ))
        );
        let e = read_list(&dir.path().join("missing"))
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("cannot read")), "missing list");
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
