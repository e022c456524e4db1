//! The backend modules under fuzz, compiled from their own source files so the fuzz build
//! stays small (the backend crate pulls in RocksDB, the AWS SDK and tonic). Each is a leaf
//! module: only `config` names another backend module, `session`, for which [`session`] below
//! stands in.
#![allow(dead_code)]

#[path = "../../backend/src/tier/stub.rs"]
pub mod stub;

#[path = "../../backend/src/west/keys.rs"]
pub mod keys;

#[path = "../../backend/src/config.rs"]
pub mod config;

/// Stand-in for `gpair_backend::session`: only [`session::SessionConfig`], which
/// `config.rs` builds. A field added there fails this build until it is added here too.
pub mod session {
    use std::time::Duration;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct SessionConfig {
        pub heartbeat: Duration,
        pub lease: Duration,
        pub reconnect_window: Duration,
        pub revoke_wait: Duration,
    }

    impl Default for SessionConfig {
        fn default() -> Self {
            Self {
                heartbeat: Duration::from_secs(5),
                lease: Duration::from_secs(30),
                reconnect_window: Duration::from_secs(45),
                revoke_wait: Duration::from_secs(10),
            }
        }
    }
}
