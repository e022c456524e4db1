//! `gpair`: the admin CLI. Everything happens in [`gpair_cli::run`].

fn main() -> std::process::ExitCode {
    gpair_cli::run(std::env::args_os())
}
