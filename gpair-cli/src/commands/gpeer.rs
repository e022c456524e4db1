//! `gpair gpeer add | ls | show | check | rm`.

use std::io::Read;
use std::path::Path;

use gpair_proto::pb;

use super::{Context, Outcome};
use crate::cli::{DialectArg, GpeerAddArgs, GpeerCommand};
use crate::error::CliError;
use crate::validate;
use crate::view;

pub(super) async fn execute(cmd: GpeerCommand, ctx: &Context) -> Result<Outcome, CliError> {
    match cmd {
        GpeerCommand::Add(args) => {
            let req = add_request(args, ctx.env_secret_key.clone(), read_secret_file)?;
            let g = ctx.backend.connect().await?.add_gpeer(req).await?;
            Ok(view::gpeer::added(&g).into())
        }
        GpeerCommand::Ls => {
            let resp = ctx
                .backend
                .connect()
                .await?
                .list_gpeers(pb::ListGpeersRequest {})
                .await?;
            Ok(view::gpeer::list(&resp.gpeers).into())
        }
        GpeerCommand::Show { name } => {
            let name = validate::name("NAME", &name)?;
            let g = ctx
                .backend
                .connect()
                .await?
                .get_gpeer(pb::GetGpeerRequest { name })
                .await?;
            Ok(view::gpeer::show(&g).into())
        }
        GpeerCommand::Check { name } => {
            let name = validate::name("NAME", &name)?;
            let r = ctx
                .backend
                .connect()
                .await?
                .check_gpeer(pb::GetGpeerRequest { name: name.clone() })
                .await?;
            let failure = (r.stage != pb::CheckStage::Ok as i32).then(|| CliError::CheckFailed {
                name: name.clone(),
                stage: crate::format::check_stage(r.stage),
                message: crate::error::one_line(&r.message),
            });
            Ok(Outcome {
                rendered: view::gpeer::check(&name, &r),
                failure,
            })
        }
        GpeerCommand::Rm { name } => {
            let name = validate::name("NAME", &name)?;
            ctx.backend
                .connect()
                .await?
                .remove_gpeer(pb::RemoveGpeerRequest { name: name.clone() })
                .await?;
            Ok(view::gpeer::removed(&name).into())
        }
    }
}

/// Builds and validates the `AddGpeer` request. `env_secret` is `GPAIR_SECRET_KEY`; `read`
/// reads `--secret-key-file`.
pub fn add_request(
    args: GpeerAddArgs,
    env_secret: Option<String>,
    read: impl FnOnce(&Path) -> std::io::Result<String>,
) -> Result<pb::AddGpeerRequest, CliError> {
    Ok(pb::AddGpeerRequest {
        name: validate::name("NAME", &args.name)?,
        endpoint: validate::endpoint(&args.endpoint)?,
        cluster_id: validate::name("--cluster-id", &args.cluster_id)?,
        access_key: validate::token("--access-key", &args.access_key)?,
        secret_key: validate::secret_key(args.secret_key, args.secret_key_file, env_secret, read)?,
        region: match args.region {
            Some(r) => validate::token("--region", &r)?,
            None => String::new(),
        },
        dialect: match args.dialect {
            DialectArg::Gateway => pb::Dialect::Gateway,
            DialectArg::S3 => pb::Dialect::S3,
        } as i32,
        no_check: args.no_check,
    })
}

/// Reads a secret key file, or standard input for `-`.
fn read_secret_file(path: &Path) -> std::io::Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        Ok(s)
    } else {
        std::fs::read_to_string(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> GpeerAddArgs {
        GpeerAddArgs {
            name: "west1".into(),
            endpoint: "http://127.0.0.1:9000/".into(),
            cluster_id: "LC_222".into(),
            access_key: "AK".into(),
            secret_key: Some("SK".into()),
            secret_key_file: None,
            dialect: DialectArg::S3,
            region: None,
            no_check: true,
        }
    }

    fn no_file(_: &Path) -> std::io::Result<String> {
        Err(std::io::Error::other("not expected"))
    }

    #[test]
    fn add_request_is_normalised() {
        let req = add_request(args(), None, no_file).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            req,
            pb::AddGpeerRequest {
                name: "west1".into(),
                endpoint: "http://127.0.0.1:9000".into(),
                cluster_id: "LC_222".into(),
                access_key: "AK".into(),
                secret_key: "SK".into(),
                region: String::new(),
                dialect: pb::Dialect::S3 as i32,
                no_check: true,
            }
        );
    }

    #[test]
    fn add_request_names_the_bad_flag() {
        let mut a = args();
        a.cluster_id = "LC,222".into();
        let e = add_request(a, None, no_file).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("--cluster-id: ',' is not allowed")));

        let mut a = args();
        a.region = Some(String::new());
        let e = add_request(a, None, no_file).err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("--region: must not be empty"));
    }
}
