//! `gpair policy set | show | clear`, `gpair explain`, `gpair pin | unpin`.

use std::ffi::OsString;

use gpair_proto::pb;

use super::Context;
use crate::cli::{PolicyCommand, PolicySetArgs};
use crate::error::CliError;
use crate::format::Rendered;
use crate::validate;
use crate::view;

const DAY: u64 = 86_400;

pub(super) async fn execute(cmd: PolicyCommand, ctx: &Context) -> Result<Rendered, CliError> {
    let mut client = ctx.backend.connect().await?;
    match cmd {
        PolicyCommand::Set(args) => {
            let req = set_policy_request(&args)?;
            Ok(view::policy::set(&client.set_policy(req).await?))
        }
        PolicyCommand::Show { name } => {
            let name = validate::name("NAME", &name)?;
            Ok(view::policy::show(
                &client.get_policy(pb::GetPolicyRequest { name }).await?,
            ))
        }
        PolicyCommand::Run {
            name,
            dry_run,
            show,
        } => {
            let req = pb::RunPolicyRequest {
                name: validate::name("NAME", &name)?,
                dry_run,
                show: show.unwrap_or(0),
            };
            Ok(view::policy::run(&client.run_policy(req).await?))
        }
        PolicyCommand::Clear { name } => {
            let req = pb::SetPolicyRequest {
                name: validate::name("NAME", &name)?,
                rules: None,
                clear: true,
            };
            Ok(view::policy::set(&client.set_policy(req).await?))
        }
    }
}

/// Builds and validates the `SetPolicy` request.
pub fn set_policy_request(args: &PolicySetArgs) -> Result<pb::SetPolicyRequest, CliError> {
    if args.idle_days.is_none() && args.unmodified_days.is_none() {
        return Err(CliError::Usage {
            flag: "--idle-days",
            problem: "a policy needs --idle-days and/or --unmodified-days".into(),
        });
    }
    let size = |flag: &'static str, v: &Option<String>| -> Result<Option<u64>, CliError> {
        v.as_deref()
            .map(|s| validate::size_limit(flag, s))
            .transpose()
            .map(|o| o.filter(|n| *n > 0))
    };
    for (flag, globs) in [("--include", &args.include), ("--exclude", &args.exclude)] {
        if let Some(bad) = globs
            .iter()
            .find(|g| g.trim().is_empty() || g.contains('\0'))
        {
            return Err(CliError::Usage {
                flag,
                problem: format!("{bad:?} is not a glob"),
            });
        }
    }
    Ok(pb::SetPolicyRequest {
        name: validate::name("NAME", &args.name)?,
        rules: Some(pb::PolicyRules {
            idle_secs: args.idle_days.map(|d| u64::from(d) * DAY),
            unmodified_secs: args.unmodified_days.map(|d| u64::from(d) * DAY),
            min_size: size("--min-size", &args.min_size)?,
            max_size: size("--max-size", &args.max_size)?,
            include: args.include.clone(),
            exclude: args.exclude.clone(),
            owners: args.owner.clone(),
            min_age_secs: args.min_age_hours.map(|h| u64::from(h) * 3600),
            interval_secs: args
                .every
                .as_deref()
                .map(|s| validate::duration_secs("--every", s))
                .transpose()?,
            high_percent: args.high,
            low_percent: args.low,
            east_soft_limit: size("--east-soft-limit", &args.east_soft_limit)?,
            max_files_per_sec: args.max_files_per_sec,
            max_bytes_per_sec: size("--max-bytes-per-sec", &args.max_bytes_per_sec)?,
        }),
        clear: false,
    })
}

pub(super) async fn explain(paths: &[OsString], ctx: &Context) -> Result<Rendered, CliError> {
    let paths = validate::east_paths(paths, &ctx.cwd)?;
    let mut client = ctx.backend.connect().await?;
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        out.push(client.explain(pb::ExplainRequest { path }).await?);
    }
    Ok(view::policy::explanations(&out))
}

pub(super) async fn pin(
    paths: &[OsString],
    unpin: bool,
    ctx: &Context,
) -> Result<Rendered, CliError> {
    let paths = validate::east_paths(paths, &ctx.cwd)?;
    let mut client = ctx.backend.connect().await?;
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let r = client
            .pin(pb::PinRequest {
                path: path.clone(),
                unpin,
            })
            .await?;
        out.push((path, r.changed));
    }
    Ok(view::policy::pinned(&out, unpin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> PolicySetArgs {
        PolicySetArgs {
            name: "p1".into(),
            idle_days: Some(30),
            unmodified_days: None,
            min_size: Some("4K".into()),
            max_size: None,
            include: vec![],
            exclude: vec!["*.db".into()],
            owner: vec![],
            min_age_hours: None,
            every: Some("6h".into()),
            high: None,
            low: None,
            east_soft_limit: None,
            max_files_per_sec: Some(20),
            max_bytes_per_sec: Some("50M".into()),
        }
    }

    #[test]
    fn policy_request_in_seconds_and_bytes() {
        let req = set_policy_request(&args()).unwrap_or_else(|e| panic!("{e}"));
        let r = req.rules.unwrap_or_default();
        assert_eq!(r.idle_secs, Some(30 * DAY));
        assert_eq!(r.max_files_per_sec, Some(20));
        assert_eq!(r.max_bytes_per_sec, Some(50 << 20));
        assert_eq!(r.min_size, Some(4096));
        assert_eq!(r.min_age_secs, None, "the backend's default");
        assert_eq!(r.exclude, vec!["*.db".to_string()]);
        assert_eq!(r.interval_secs, Some(6 * 3600));
    }

    #[test]
    fn policy_request_names_what_is_wrong() {
        let mut a = args();
        a.idle_days = None;
        let e = set_policy_request(&a).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("--unmodified-days")));
        let mut a = args();
        a.exclude = vec![" ".into()];
        let e = set_policy_request(&a).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("--exclude: ")));
    }
}
