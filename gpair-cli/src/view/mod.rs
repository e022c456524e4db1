//! Per-resource views: pure functions from protocol messages to [`crate::format::Rendered`]
//! (human text and JSON). One module per command group; new groups (jobs, quotas, policies)
//! add a module here and never print anything themselves.

pub mod gpair;
pub mod gpeer;
pub mod status;
pub mod sync;
