//! gpair-backend: the backend daemon — catalog, metadata sync east → west, the gRPC admin
//! and change-notification API — the migration engine (offload, recall, jobs, quotas), the
//! FUSE client `gpair-mount` (`mount`) and the policy engine (`policy`, in progress).

pub mod caps;
pub mod catalog;
pub mod config;
pub mod daemon;
pub mod entry;
pub mod fsck;
pub mod grpc;
pub mod mount;
pub mod policy;
pub mod registry;
pub mod session;
pub mod sync;
pub mod tier;
pub mod west;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), in colour on a terminal: what
/// both binaries start with.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
