//! `gpair`: the admin CLI, a gRPC client of the backend. Its commands arrive with the
//! backend daemon; until then it says so.

fn main() -> std::process::ExitCode {
    eprintln!("gpair: the admin CLI needs the backend daemon, which is not part of this build yet");
    std::process::ExitCode::from(2)
}
