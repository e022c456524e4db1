//! Per-resource views: pure functions from protocol messages to [`crate::format::Rendered`]
//! (human text and JSON). One module per command group; new groups (policies, caps) add a
//! module here and never print anything themselves.
//!
//! Byte paths (names need not be UTF-8) are shown to people with [`crate::format::path`]
//! (`\xNN` for bytes that are not UTF-8) and given to scripts as two JSON fields: `path`
//! (UTF-8, lossy) and `path_b64` (the exact bytes, standard base64).

pub mod caps;
pub mod fsck;
pub mod gpair;
pub mod gpeer;
pub mod job;
pub mod policy;
pub mod quota;
pub mod state;
pub mod status;
pub mod sync;
