//! gpair-backend: the backend daemon — catalog, metadata sync east → west, the gRPC admin
//! and change-notification API — and the migration engine (offload, recall, jobs, quotas);
//! (later) the FUSE client.

pub mod catalog;
pub mod config;
pub mod daemon;
pub mod entry;
pub mod grpc;
pub mod mount;
pub mod policy;
pub mod registry;
pub mod session;
pub mod sync;
pub mod tier;
pub mod west;
