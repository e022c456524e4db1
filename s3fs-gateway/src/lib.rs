//! s3fs-gateway: the west S3 server. It serves a POSIX directory tree as S3, keeping every
//! object a real file so the west namespace stays browsable, and adds the gpair extensions
//! (SetAttrObj, native rename, usage). See docs/gateway.md for the contract.

pub mod body;
pub mod config;
pub mod credentials;
pub mod error;
pub mod ext;
pub mod keys;
pub mod listing;
pub mod meta;
pub mod multipart;
pub mod quota;
pub mod s3impl;
pub mod server;
pub mod store;
pub mod xattr;

pub use config::{Config, Overrides, RawConfig};
pub use server::{run, shutdown_signal};
