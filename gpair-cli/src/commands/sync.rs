//! `gpair sync status [NAME]`.

use gpair_proto::pb;

use super::Context;
use crate::cli::SyncCommand;
use crate::error::CliError;
use crate::format::Rendered;
use crate::validate;
use crate::view;

pub(super) async fn execute(cmd: SyncCommand, ctx: &Context) -> Result<Rendered, CliError> {
    match cmd {
        SyncCommand::Status { name } => {
            let name = match name {
                Some(n) => validate::name("NAME", &n)?,
                None => String::new(),
            };
            let resp = ctx
                .backend
                .connect()
                .await?
                .sync_status(pb::SyncStatusRequest { name })
                .await?;
            Ok(view::sync::status(&resp))
        }
    }
}
