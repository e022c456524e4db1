//! `gpair caps ls [PATH]`, `gpair session ls`, `gpair session evict ID`.

use gpair_proto::pb;

use super::Context;
use crate::cli::{CapsCommand, SessionCommand};
use crate::error::CliError;
use crate::format::Rendered;
use crate::validate;
use crate::view;

/// Longest session id the backend hands out (16 hex digits); a little room for others.
const MAX_SESSION_ID: usize = 64;

pub(super) async fn caps(cmd: CapsCommand, ctx: &Context) -> Result<Rendered, CliError> {
    match cmd {
        CapsCommand::Ls { path } => {
            let path = match path {
                Some(p) => validate::east_paths(&[p], &ctx.cwd)?
                    .pop()
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            let resp = ctx
                .backend
                .connect()
                .await?
                .list_caps(pb::ListCapsRequest { path })
                .await?;
            Ok(view::caps::caps(&resp.caps))
        }
    }
}

pub(super) async fn session(cmd: SessionCommand, ctx: &Context) -> Result<Rendered, CliError> {
    match cmd {
        SessionCommand::Ls => {
            let resp = ctx
                .backend
                .connect()
                .await?
                .list_sessions(pb::ListSessionsRequest {})
                .await?;
            Ok(view::caps::sessions(&resp))
        }
        SessionCommand::Evict { id } => {
            let id = session_id(&id)?;
            let resp = ctx
                .backend
                .connect()
                .await?
                .evict_session(pb::EvictSessionRequest { id })
                .await?;
            Ok(view::caps::evicted(&resp))
        }
    }
}

/// A session id as `gpair session ls` shows it.
pub fn session_id(s: &str) -> Result<String, CliError> {
    if s.is_empty() || s.len() > MAX_SESSION_ID || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(CliError::usage(
            "ID",
            format!(
                "{s:?} is not a session id (letters and digits, as `gpair session ls` shows them)"
            ),
        ));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_checked() {
        assert_eq!(
            session_id("00ab12cd34ef5678").ok().as_deref(),
            Some("00ab12cd34ef5678")
        );
        for bad in ["", "a b", "../x", &"a".repeat(65)] {
            assert!(session_id(bad).is_err(), "{bad:?}");
        }
    }
}
