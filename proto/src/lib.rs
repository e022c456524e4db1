//! gpair-proto: the gRPC wire formats shared by the backend, the mount client and the CLI.
//! Generated prost/tonic types live in [`pb`]; nothing outside this crate should build them
//! by hand from untrusted input without going through the backend's validation.

/// Generated code for package `gpair.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]
pub mod pb {
    tonic::include_proto!("gpair.v1");
}

/// Milliseconds since the Unix epoch, the time unit of every `*_ms` field.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
