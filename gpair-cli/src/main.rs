//! `gpair`: the admin CLI. Everything happens in [`gpair_cli::run`].

fn main() -> std::process::ExitCode {
    // Two TLS crypto providers are linked in; the https:// backend connection uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    gpair_cli::run(std::env::args_os())
}
