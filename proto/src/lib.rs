//! gpair-proto: the gRPC wire formats shared by the backend, the mount client and the CLI,
//! with validated domain types converted on receipt. The protocol is defined with the
//! backend daemon; this crate holds no messages yet.
