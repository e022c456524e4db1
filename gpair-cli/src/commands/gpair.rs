//! `gpair bind | ls | show | unbind`.

use std::path::Path;

use gpair_proto::pb;

use super::Context;
use crate::cli::BindArgs;
use crate::error::CliError;
use crate::format::Rendered;
use crate::validate;
use crate::view;

pub(super) async fn bind(args: BindArgs, ctx: &Context) -> Result<Rendered, CliError> {
    let req = bind_request(&args, &ctx.cwd)?;
    let g = ctx.backend.connect().await?.bind(req).await?;
    Ok(view::gpair::bound(&g))
}

pub(super) async fn list(ctx: &Context) -> Result<Rendered, CliError> {
    let resp = ctx
        .backend
        .connect()
        .await?
        .list_gpairs(pb::ListGpairsRequest {})
        .await?;
    Ok(view::gpair::list(&resp.gpairs))
}

pub(super) async fn show(name: &str, ctx: &Context) -> Result<Rendered, CliError> {
    let name = validate::name("NAME", name)?;
    let g = ctx
        .backend
        .connect()
        .await?
        .get_gpair(pb::GetGpairRequest { name })
        .await?;
    Ok(view::gpair::show(&g))
}

pub(super) async fn unbind(name: &str, force: bool, ctx: &Context) -> Result<Rendered, CliError> {
    let name = validate::name("NAME", name)?;
    let r = ctx
        .backend
        .connect()
        .await?
        .unbind(pb::UnbindRequest {
            name: name.clone(),
            force,
        })
        .await?;
    Ok(view::gpair::unbound(&name, &r))
}

/// Builds and validates the `Bind` request; `--local` is made absolute against `cwd`.
pub fn bind_request(args: &BindArgs, cwd: &Path) -> Result<pb::BindRequest, CliError> {
    Ok(pb::BindRequest {
        name: validate::name("NAME", &args.name)?,
        gpeer: validate::name("--gpeer", &args.gpeer)?,
        local_path: validate::local_path(&args.local, cwd)?,
        remote: validate::remote(&args.remote)?,
        create_bucket: args.create_bucket,
        retain_deleted_days: args.retain_deleted_days,
        read_policy: match args.read_policy.as_str() {
            "stream" => pb::ReadPolicy::Stream,
            "recall" => pb::ReadPolicy::Recall,
            other => {
                return Err(CliError::Usage {
                    flag: "--read-policy",
                    problem: format!("{other:?} is neither `stream` nor `recall`"),
                })
            }
        } as i32,
        recall_after_reads: args.recall_after_reads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_request_resolves_local_and_normalises_remote() {
        let args = BindArgs {
            name: "p1".into(),
            gpeer: "west1".into(),
            local: "share".into(),
            remote: "cold/east/".into(),
            create_bucket: true,
            retain_deleted_days: 0,
            read_policy: "stream".into(),
            recall_after_reads: 0,
        };
        let req = bind_request(&args, Path::new("/srv")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            req,
            pb::BindRequest {
                name: "p1".into(),
                gpeer: "west1".into(),
                local_path: "/srv/share".into(),
                remote: "cold/east".into(),
                create_bucket: true,
                retain_deleted_days: 0,
                read_policy: pb::ReadPolicy::Stream as i32,
                recall_after_reads: 0,
            }
        );
    }

    #[test]
    fn bind_request_names_the_bad_flag() {
        let args = BindArgs {
            name: "p1".into(),
            gpeer: "west 1".into(),
            local: "/x".into(),
            remote: "cold".into(),
            create_bucket: false,
            retain_deleted_days: 0,
            read_policy: "stream".into(),
            recall_after_reads: 0,
        };
        let e = bind_request(&args, Path::new("/"))
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("--gpeer: ")));
    }

    #[test]
    fn bind_request_refuses_an_unknown_read_policy() {
        let args = BindArgs {
            name: "p1".into(),
            gpeer: "west1".into(),
            local: "/x".into(),
            remote: "cold".into(),
            create_bucket: false,
            retain_deleted_days: 0,
            read_policy: "sometimes".into(),
            recall_after_reads: 0,
        };
        let e = bind_request(&args, Path::new("/"))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("--read-policy: \"sometimes\" is neither `stream` nor `recall`")
        );
    }
}
