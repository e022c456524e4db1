//! The CLI's errors and the one place they become an exit code and a stderr line.
//!
//! Every failure the user sees goes through [`CliError`]: its `Display` is the single line
//! printed after `gpair: `, and [`CliError::exit_code`] is the documented process status. The
//! mapping from `tonic::Status` lives here too, so no command matches on gRPC codes itself.

use tonic::Code;

/// The documented exit codes of `gpair` (see `gpair --help` and docs/cli.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// The command did what was asked.
    Success = 0,
    /// The backend refused the request (bad value, wrong state, exists already, not found), or
    /// a check the command ran did not pass.
    Refused = 1,
    /// The command line is wrong: unknown flag, missing argument, invalid value.
    Usage = 2,
    /// The backend cannot be reached (socket missing, connection refused, unavailable).
    Unreachable = 3,
    /// Anything else: an internal backend error, a timeout, an unexpected answer.
    Failed = 4,
    /// A job that was waited for (`--wait`, `job watch`) finished FAILED: at least one of its
    /// files failed.
    JobFailed = 5,
    /// A job that was waited for finished CANCELLED.
    JobCancelled = 6,
    /// Waiting for a job was interrupted with Ctrl-C (SIGINT); the job itself goes on. 128 + 2,
    /// what a shell reports for a command killed by SIGINT.
    Interrupted = 130,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// Everything that can make a `gpair` command fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A flag or argument failed client-side validation.
    #[error("{flag}: {problem}")]
    Usage {
        /// The flag or argument as the user typed it, e.g. `--endpoint` or `NAME`.
        flag: &'static str,
        /// What is wrong with it and, where useful, what is expected.
        problem: String,
    },

    /// The backend socket could not be connected to.
    #[error(
        "cannot reach the backend at {socket}: {reason} \
         (is gpair-backend running? set --backend or GPAIR_BACKEND)"
    )]
    Unreachable {
        /// The socket path as given.
        socket: String,
        /// Why the connection failed, in words.
        reason: String,
    },

    /// The backend answered with a gRPC error.
    #[error("{}", backend_message(*code, message))]
    Backend {
        /// The gRPC status code.
        code: Code,
        /// The status message (the backend names the thing it is about).
        message: String,
    },

    /// The backend accepted the connection but did not answer within `--timeout`.
    #[error(
        "the backend at {socket} did not answer within {secs}s \
         (is it overloaded or stuck? raise --timeout to wait longer)"
    )]
    Timeout {
        /// The socket path as given.
        socket: String,
        /// The `--timeout` that expired.
        secs: u64,
    },

    /// `gpeer check` ran and the gpeer did not pass.
    #[error("gpeer \"{name}\" check failed at stage {stage}: {message}")]
    CheckFailed {
        /// The gpeer's name.
        name: String,
        /// The failed stage, lowercase (`connect`, `auth`, ...).
        stage: String,
        /// The backend's explanation.
        message: String,
    },

    /// A job that was waited for finished with failed files.
    #[error(
        "job {id} failed: {failed} of {total} file(s) failed \
         (see the reasons with `gpair job show {id}`)"
    )]
    JobFailed {
        /// The job's id.
        id: u64,
        /// How many of its files failed.
        failed: u64,
        /// How many files it had.
        total: u64,
    },

    /// A job that was waited for was cancelled before it finished.
    #[error("job {id} was cancelled ({unprocessed} file(s) left as they were)")]
    JobCancelled {
        /// The job's id.
        id: u64,
        /// Files the cancellation left unprocessed.
        unprocessed: u64,
    },

    /// The backend closed the watch of a job that had not finished.
    #[error(
        "the backend stopped reporting on job {id} while it was {state} \
         (follow it again with `gpair job watch {id}`)"
    )]
    WatchEnded {
        /// The job's id.
        id: u64,
        /// Its last known state, lowercase.
        state: String,
    },

    /// The connection broke while waiting for a job. The job lives in the backend, so only
    /// the watching stopped.
    #[error(
        "{cause} (job {id} was not stopped by this; \
         follow it again with `gpair job watch {id}`)"
    )]
    WatchLost {
        /// The job's id.
        id: u64,
        /// What broke; its exit code is the process's.
        cause: Box<CliError>,
    },

    /// Ctrl-C while waiting for a job.
    #[error(
        "stopped waiting for job {id}; it goes on in the backend \
         (follow it with `gpair job watch {id}`, stop it with `gpair job cancel {id}`)"
    )]
    Interrupted {
        /// The job's id.
        id: u64,
    },

    /// A local failure that is not the user's fault (runtime, stdout, reading a key file).
    #[error("{0}")]
    Local(String),

    /// `gpair fsck` found disagreements that are still there after it ran.
    #[error("fsck: {left} of {found} issue(s) left{hint}")]
    FsckIssues {
        /// Issues found.
        found: u64,
        /// Issues not repaired.
        left: u64,
        /// What to run next, if anything (starts with "; ").
        hint: String,
    },
}

impl CliError {
    /// A usage error on `flag`.
    pub fn usage(flag: &'static str, problem: impl Into<String>) -> Self {
        CliError::Usage {
            flag,
            problem: problem.into(),
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> Exit {
        match self {
            CliError::Usage { .. } => Exit::Usage,
            CliError::Unreachable { .. } => Exit::Unreachable,
            CliError::Backend { code, .. } => exit_for_code(*code),
            CliError::Timeout { .. } => Exit::Failed,
            CliError::CheckFailed { .. } => Exit::Refused,
            CliError::JobFailed { .. } => Exit::JobFailed,
            CliError::JobCancelled { .. } => Exit::JobCancelled,
            CliError::WatchEnded { .. } => Exit::Failed,
            CliError::WatchLost { cause, .. } => cause.exit_code(),
            CliError::Interrupted { .. } => Exit::Interrupted,
            CliError::Local(_) => Exit::Failed,
            CliError::FsckIssues { .. } => Exit::Refused,
        }
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        CliError::Backend {
            code: s.code(),
            message: one_line(s.message()),
        }
    }
}

/// Which exit code a gRPC status code means for the user.
pub fn exit_for_code(code: Code) -> Exit {
    match code {
        Code::Ok => Exit::Success,
        Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists | Code::NotFound => {
            Exit::Refused
        }
        Code::Unavailable => Exit::Unreachable,
        _ => Exit::Failed,
    }
}

/// The stderr text for a backend error. Codes the user can act on show the backend's own
/// message, which names the thing; the others say what kind of failure it was.
fn backend_message(code: Code, message: &str) -> String {
    let refused = exit_for_code(code) == Exit::Refused;
    match (code, message.is_empty()) {
        (_, false) if refused || code == Code::Unavailable => message.to_string(),
        (Code::Unavailable, true) => "the backend is unavailable".to_string(),
        (Code::Unimplemented, _) => format!(
            "the backend does not implement this command (is it older than this gpair?){}",
            suffix(message)
        ),
        (Code::PermissionDenied | Code::Unauthenticated, _) => format!(
            "the backend refused access (the admin socket is for its owner){}",
            suffix(message)
        ),
        (_, true) => format!("backend error ({})", code_name(code)),
        (_, false) => format!("backend error ({}): {message}", code_name(code)),
    }
}

fn suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// A gRPC code as lowercase words, as in the gRPC spec (`internal`, `resource exhausted`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// Collapses a multi-line message into one line, so every error stays one stderr line, and
/// escapes any other control characters (a remote error text cannot drive the terminal).
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, line) in s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(line);
    }
    crate::format::printable(&out)
}

/// Describes a connection failure: the innermost cause, with the common ones in plain words.
pub fn connect_reason(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut last = err;
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io_reason(io);
        }
        if e.is::<tonic::TimeoutExpired>() {
            return "timed out".to_string();
        }
        last = e;
        cur = e.source();
    }
    one_line(&last.to_string())
}

/// Whether a failed call ran out of the client's own deadline (`--timeout`). tonic reports
/// that either with the `TimeoutExpired` error in the source chain or, having flattened the
/// chain, as CANCELLED with that error's text.
pub fn is_client_timeout(s: &tonic::Status) -> bool {
    let expired = tonic::TimeoutExpired(()).to_string();
    if s.code() == Code::Cancelled && s.message() == expired {
        return true;
    }
    let mut cur = std::error::Error::source(s);
    while let Some(e) = cur {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// An I/O error from connecting to a Unix socket, in words.
pub fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound => "no such socket".to_string(),
        K::ConnectionRefused => "connection refused (no process is listening)".to_string(),
        K::PermissionDenied => {
            "permission denied (the socket is mode 0600: run as its owner)".to_string()
        }
        K::TimedOut => "timed out".to_string(),
        _ => one_line(&e.to_string()),
    }
}

/// Writes `gpair: <error>` to stderr. The only place errors are printed.
pub fn report(err: &CliError) {
    eprintln!("gpair: {err}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_documented_exit_codes() {
        for c in [
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::AlreadyExists,
            Code::NotFound,
        ] {
            assert_eq!(exit_for_code(c), Exit::Refused, "{c:?}");
        }
        assert_eq!(exit_for_code(Code::Unavailable), Exit::Unreachable);
        for c in [
            Code::Internal,
            Code::Unknown,
            Code::DeadlineExceeded,
            Code::Unimplemented,
            Code::DataLoss,
            Code::PermissionDenied,
        ] {
            assert_eq!(exit_for_code(c), Exit::Failed, "{c:?}");
        }
    }

    #[test]
    fn refusals_print_the_backend_message_as_is() {
        let e = CliError::from(tonic::Status::not_found("gpeer \"nope\" not found"));
        assert_eq!(e.to_string(), "gpeer \"nope\" not found");
        assert_eq!(e.exit_code(), Exit::Refused);

        let e = CliError::from(tonic::Status::failed_precondition(
            "gpair \"p1\" has 3 offloaded files",
        ));
        assert_eq!(e.to_string(), "gpair \"p1\" has 3 offloaded files");
    }

    #[test]
    fn other_codes_say_what_kind_of_failure() {
        let e = CliError::from(tonic::Status::internal("catalog write failed"));
        assert_eq!(
            e.to_string(),
            "backend error (internal): catalog write failed"
        );
        assert_eq!(e.exit_code(), Exit::Failed);

        let e = CliError::from(tonic::Status::unimplemented(""));
        assert!(
            e.to_string().starts_with("the backend does not implement"),
            "{e}"
        );

        let e = CliError::from(tonic::Status::unavailable(""));
        assert_eq!(e.to_string(), "the backend is unavailable");
        assert_eq!(e.exit_code(), Exit::Unreachable);

        let e = CliError::from(tonic::Status::new(Code::DataLoss, ""));
        assert_eq!(e.to_string(), "backend error (data loss)");
    }

    #[test]
    fn multi_line_messages_become_one_line() {
        let e = CliError::from(tonic::Status::invalid_argument("first\n\n  second  \n"));
        assert_eq!(e.to_string(), "first; second");
        let e = CliError::from(tonic::Status::not_found("a\u{1b}[2Jb\tc"));
        assert_eq!(e.to_string(), "a\\u{1b}[2Jb\\tc");
    }

    #[test]
    fn unreachable_names_socket_and_the_fix() {
        let e = CliError::Unreachable {
            socket: "/run/x.sock".into(),
            reason: io_reason(&std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        assert_eq!(
            e.to_string(),
            "cannot reach the backend at /run/x.sock: no such socket \
             (is gpair-backend running? set --backend or GPAIR_BACKEND)"
        );
        assert_eq!(e.exit_code(), Exit::Unreachable);
    }

    #[test]
    fn connect_reason_finds_the_io_error_in_a_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("transport error")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(
            connect_reason(&e),
            "connection refused (no process is listening)"
        );
    }

    #[test]
    fn client_timeouts_are_recognised() {
        assert!(is_client_timeout(&tonic::Status::cancelled(
            "Timeout expired"
        )));
        let wrapped = tonic::Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert!(is_client_timeout(&wrapped), "{wrapped:?}");
        assert!(!is_client_timeout(&tonic::Status::cancelled(
            "the job was cancelled"
        )));
        assert!(!is_client_timeout(&tonic::Status::internal(
            "Timeout expired"
        )));
        let e = CliError::Timeout {
            socket: "/s".into(),
            secs: 2,
        };
        assert_eq!(e.exit_code(), Exit::Failed);
        assert!(e
            .to_string()
            .starts_with("the backend at /s did not answer within 2s"));
    }

    #[test]
    fn job_endings_have_their_own_exit_codes() {
        let e = CliError::JobFailed {
            id: 17,
            failed: 2,
            total: 100,
        };
        assert_eq!(e.exit_code(), Exit::JobFailed);
        assert_eq!(Exit::JobFailed as u8, 5);
        assert_eq!(
            e.to_string(),
            "job 17 failed: 2 of 100 file(s) failed (see the reasons with `gpair job show 17`)"
        );
        let e = CliError::JobCancelled {
            id: 17,
            unprocessed: 40,
        };
        assert_eq!(e.exit_code(), Exit::JobCancelled);
        assert_eq!(Exit::JobCancelled as u8, 6);
        assert_eq!(
            e.to_string(),
            "job 17 was cancelled (40 file(s) left as they were)"
        );
        let e = CliError::Interrupted { id: 3 };
        assert_eq!(e.exit_code() as u8, 130);
        assert!(
            e.to_string().starts_with("stopped waiting for job 3; "),
            "{e}"
        );
        let e = CliError::WatchEnded {
            id: 3,
            state: "running".into(),
        };
        assert_eq!(e.exit_code(), Exit::Failed);
    }

    #[test]
    fn a_lost_watch_keeps_the_exit_code_of_its_cause() {
        let e = CliError::WatchLost {
            id: 9,
            cause: Box::new(CliError::Unreachable {
                socket: "/s".into(),
                reason: "connection reset".into(),
            }),
        };
        assert_eq!(e.exit_code(), Exit::Unreachable);
        assert!(
            e.to_string().ends_with(
                "(job 9 was not stopped by this; follow it again with `gpair job watch 9`)"
            ),
            "{e}"
        );
    }

    #[test]
    fn usage_errors_name_the_flag() {
        let e = CliError::usage("--endpoint", "must start with http:// or https://");
        assert_eq!(
            e.to_string(),
            "--endpoint: must start with http:// or https://"
        );
        assert_eq!(e.exit_code(), Exit::Usage);
    }
}
