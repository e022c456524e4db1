//! `gpair status`.

use gpair_proto::pb;

use super::Context;
use crate::error::CliError;
use crate::format::Rendered;
use crate::view;

pub(super) async fn status(ctx: &Context) -> Result<Rendered, CliError> {
    let s = ctx
        .backend
        .connect()
        .await?
        .status(pb::StatusRequest {})
        .await?;
    Ok(view::status::status(
        &s,
        &ctx.backend.socket().display().to_string(),
    ))
}
