//! `gpair quota set | show`.

use gpair_proto::pb;

use super::Context;
use crate::cli::{QuotaCommand, QuotaSetArgs};
use crate::error::CliError;
use crate::format::Rendered;
use crate::validate;
use crate::view;

pub(super) async fn execute(cmd: QuotaCommand, ctx: &Context) -> Result<Rendered, CliError> {
    match cmd {
        QuotaCommand::Set(args) => {
            let req = set_request(&args)?;
            let q = ctx.backend.connect().await?.set_quota(req).await?;
            Ok(view::quota::set(&q))
        }
        QuotaCommand::Show { name } => {
            let name = match name {
                Some(n) => validate::name("NAME", &n)?,
                None => String::new(),
            };
            let resp = ctx
                .backend
                .connect()
                .await?
                .get_quotas(pb::GetQuotasRequest { name })
                .await?;
            Ok(view::quota::show(&resp.quotas))
        }
    }
}

/// Builds and validates the `SetQuota` request: limits not given stay absent (unchanged),
/// `none` and `0` are sent as `0` (no limit).
pub fn set_request(args: &QuotaSetArgs) -> Result<pb::SetQuotaRequest, CliError> {
    Ok(pb::SetQuotaRequest {
        name: validate::name("NAME", &args.name)?,
        max_bytes: args
            .limits
            .max_bytes
            .as_deref()
            .map(|s| validate::size_limit("--max-bytes", s))
            .transpose()?,
        max_files: args
            .limits
            .max_files
            .as_deref()
            .map(|s| validate::count_limit("--max-files", s))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::QuotaLimits;

    fn args(bytes: Option<&str>, files: Option<&str>) -> QuotaSetArgs {
        QuotaSetArgs {
            name: "p1".into(),
            limits: QuotaLimits {
                max_bytes: bytes.map(str::to_string),
                max_files: files.map(str::to_string),
            },
        }
    }

    #[test]
    fn absent_limits_stay_absent() {
        let req = set_request(&args(Some("10G"), None)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            req,
            pb::SetQuotaRequest {
                name: "p1".into(),
                max_bytes: Some(10 << 30),
                max_files: None,
            }
        );
        let req = set_request(&args(None, Some("none"))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(req.max_bytes, None);
        assert_eq!(req.max_files, Some(0));
    }

    #[test]
    fn bad_values_name_the_flag() {
        let e = set_request(&args(Some("10GB"), None))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("--max-bytes: \"10GB\": sizes are powers of 1024; write 10G or 10GiB")
        );
        let e = set_request(&args(None, Some("1k")))
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("--max-files: ")));
    }
}
