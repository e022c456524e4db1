//! `gpair fsck [NAME] [--repair] [--rebuild] [--verify-data]`.

use gpair_proto::pb;

use super::{Context, Outcome};
use crate::error::CliError;
use crate::validate;
use crate::view;

pub(super) async fn fsck(
    name: Option<String>,
    repair: bool,
    rebuild: bool,
    verify_data: bool,
    ctx: &Context,
) -> Result<Outcome, CliError> {
    let name = match name {
        Some(n) => validate::name("NAME", &n)?,
        None => String::new(),
    };
    let resp = ctx
        .backend
        .connect()
        .await?
        .fsck(pb::FsckRequest {
            name,
            repair,
            rebuild,
            verify_data,
        })
        .await?;
    Ok(Outcome {
        failure: failure(&resp.gpairs, repair || rebuild),
        rendered: view::fsck::reports(&resp.gpairs),
    })
}

/// Exit 1 while issues are left, with what to run next.
fn failure(reports: &[pb::FsckReport], repaired: bool) -> Option<CliError> {
    let found: u64 = reports.iter().map(|r| r.issues.len() as u64).sum();
    let left = found - reports.iter().map(|r| r.repaired).sum::<u64>().min(found);
    (left > 0).then(|| CliError::FsckIssues {
        found,
        left,
        hint: if repaired {
            "; the ACTION column says why (docs/operations.md)".into()
        } else {
            "; run again with --repair to fix what is safe".into()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(issues: usize, repaired: u64) -> pb::FsckReport {
        pb::FsckReport {
            gpair: "p".into(),
            issues: vec![pb::FsckIssue::default(); issues],
            repaired,
            ..Default::default()
        }
    }

    #[test]
    fn exits_non_zero_only_while_issues_are_left() {
        assert!(failure(&[report(0, 0)], false).is_none());
        assert!(failure(&[report(2, 2)], true).is_none());
        let e = failure(&[report(3, 1), report(1, 0)], false).unwrap_or_else(|| panic!());
        assert_eq!(e.exit_code(), crate::error::Exit::Refused);
        let msg = e.to_string();
        assert!(msg.contains("3 of 4") && msg.contains("--repair"), "{msg}");
    }
}
