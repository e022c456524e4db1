//! The command line: clap definitions only. Values are checked in [`crate::validate`], not
//! here, so every bad value gets the same one-line `FLAG: problem` answer and exit code 2.
//!
//! Later command groups (policy, caps, session, fsck) add a variant to [`Command`] and a module
//! under `commands/`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::format::OutputFormat;

/// The backend socket when neither `--backend` nor `GPAIR_BACKEND` is set.
pub const DEFAULT_SOCKET: &str = "/run/gpair/backend.sock";

const AFTER_HELP: &str = "\
Exit codes:
    0  success
    1  the backend refused the request (invalid value, wrong state, already exists, not found),
       or `gpeer check` found a problem
    2  usage error: unknown command or flag, missing or invalid value (nothing was sent)
    3  the backend cannot be reached (no socket, connection refused, unavailable)
    4  any other failure (internal backend error, timeout, unexpected answer)
    5  a job waited for (--wait, `job watch`) finished failed: some of its files failed
    6  a job waited for was cancelled
  130  Ctrl-C while waiting for a job (the job goes on in the backend)

Environment:
  GPAIR_BACKEND     the backend's admin socket (default /run/gpair/backend.sock) or https://HOST:PORT
  GPAIR_CA_CERT     CA certificate for an https:// backend
  GPAIR_TOKEN       bearer token for an https:// backend (or GPAIR_TOKEN_FILE / --token-file)
  GPAIR_SECRET_KEY  the secret key for `gpeer add` when neither --secret-key nor
                    --secret-key-file is given

Results go to stdout, errors to stderr as one line starting with `gpair: `.
See docs/cli.md for every command with an example.";

/// Administer a gpair backend: gpeers (remote clusters), gpairs (share pairings), sync, and
/// the jobs that move file data between the tiers.
#[derive(Debug, Parser)]
#[command(name = "gpair", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    /// The backend's admin socket, or `https://HOST:PORT` for its TCP listener (TLS and a
    /// bearer token).
    #[arg(
        long,
        global = true,
        value_name = "SOCKET",
        env = "GPAIR_BACKEND",
        default_value = DEFAULT_SOCKET
    )]
    pub backend: PathBuf,

    /// CA certificate (PEM) that signed an `https://` backend's certificate.
    #[arg(long, global = true, value_name = "FILE", env = "GPAIR_CA_CERT")]
    pub ca_cert: Option<PathBuf>,

    /// File holding the bearer token for an `https://` backend (or set GPAIR_TOKEN).
    #[arg(long, global = true, value_name = "FILE", env = "GPAIR_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// How to print results.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Seconds to wait for the backend's answer.
    #[arg(
        long,
        global = true,
        value_name = "SECS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub timeout: u64,

    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage gpeers: remote clusters reached over S3.
    #[command(subcommand)]
    Gpeer(GpeerCommand),

    /// Bind a gpair: pair a local share with BUCKET[/PREFIX] on a gpeer.
    Bind(BindArgs),

    /// List the gpairs.
    Ls,

    /// Show one gpair.
    Show {
        /// The gpair's name.
        #[arg(value_name = "NAME")]
        name: String,
    },

    /// Unbind a gpair. Refused while it has offloaded files, unless --force.
    Unbind {
        /// The gpair's name.
        #[arg(value_name = "NAME")]
        name: String,
        /// Unbind even with offloaded files; their data stays on west.
        #[arg(long)]
        force: bool,
    },

    /// Metadata sync (east -> west).
    #[command(subcommand)]
    Sync(SyncCommand),

    /// Show the backend's status.
    Status,

    /// Offload files: queue a job that moves their data to west (the files stay, as stubs).
    Migrate(TierArgs),

    /// Recall files: queue a job that brings their data back from west into the same files.
    Recall(RecallArgs),

    /// Show the tier state of files: where their data is, and why.
    State {
        /// The files (relative paths are taken from the current directory).
        // Raw strings: see `TierArgs::paths`.
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<OsString>,
    },

    /// Migration and recall jobs.
    #[command(subcommand)]
    Job(JobCommand),

    /// West quotas per gpair (bytes and files).
    #[command(subcommand)]
    Quota(QuotaCommand),

    /// Caps mount sessions hold on files (read, write) and the backend's exclusive caps.
    #[command(subcommand)]
    Caps(CapsCommand),

    /// Mount sessions: list them, evict one.
    #[command(subcommand)]
    Session(SessionCommand),

    /// Offload policies per gpair: which files go west on their own.
    #[command(subcommand)]
    Policy(PolicyCommand),

    /// Why a file is where it is: the policy rule that would move it, or what keeps it.
    Explain {
        /// The files (relative paths are taken from the current directory).
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<OsString>,
    },

    /// Check a gpair's stub records, catalog and west listing against each other (every
    /// gpair without NAME); exits 1 while issues are left.
    Fsck {
        /// The gpair (all gpairs when absent).
        #[arg(value_name = "NAME")]
        name: Option<String>,
        /// Fix what is safe: catalog records, quota, orphans on west, placeholders; never a
        /// stub or east data.
        #[arg(long)]
        repair: bool,
        /// Rebuild the gpair's catalog records (remote records, tier marks, quota, entries)
        /// from the east stub records and the west listing, after the catalog was lost.
        #[arg(long)]
        rebuild: bool,
        /// Also read every west copy and check its CRC32C against the stub record.
        #[arg(long)]
        verify_data: bool,
    },

    /// Keep files, or everything under directories, on east whatever the policy says.
    Pin {
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<OsString>,
    },

    /// Remove a pin set with `gpair pin`.
    Unpin {
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<OsString>,
    },
}

/// `gpair policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Set a gpair's policy (replacing the one it has).
    Set(Box<PolicySetArgs>),
    /// Show a gpair's policy.
    Show {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Remove a gpair's policy: nothing moves on its own any more.
    Clear {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Scan the share and offload what the policy selects, coldest first, as an ordinary job
    /// (`gpair job ...`); with --dry-run only say what would move and why.
    Run {
        #[arg(value_name = "NAME")]
        name: String,
        /// Move nothing: list the candidates and the totals.
        #[arg(long)]
        dry_run: bool,
        /// List at most this many candidates [default: 20].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        show: Option<u32>,
    },
}

/// `gpair policy set`: at least one age rule.
#[derive(Debug, Args)]
pub struct PolicySetArgs {
    /// The gpair's name.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Offload files not accessed for N days (not modified, where the filesystem is mounted
    /// noatime).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub idle_days: Option<u32>,

    /// Offload files not modified for N days.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub unmodified_days: Option<u32>,

    /// Only files of at least this size (bytes, or K, M, G, T; powers of 1024).
    #[arg(long, value_name = "SIZE")]
    pub min_size: Option<String>,

    /// Only files of at most this size.
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,

    /// Only paths matching this glob (repeatable; `*.log`, `logs/`, `data/**/*.bin`).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,

    /// Never paths matching this glob (repeatable; `*.db`, `ads/`).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// Only files of this owner (uid; repeatable).
    #[arg(long, value_name = "UID")]
    pub owner: Vec<u32>,

    /// Run the policy on its own this often: a whole number with s, m, h or d (15m, 6h, 1d).
    /// Without it the policy runs only with `gpair policy run`.
    #[arg(long, value_name = "DURATION")]
    pub every: Option<String>,

    /// When the filesystem holding the share is more than PCT full, offload the coldest
    /// candidates until it is under --low (both or neither).
    #[arg(long, value_name = "PCT", requires = "low", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub high: Option<u32>,

    /// The usage a --high run brings the filesystem under, percent.
    #[arg(long, value_name = "PCT", requires = "high", value_parser = clap::value_parser!(u32).range(0..=99))]
    pub low: Option<u32>,

    /// When the share's local data (files not offloaded) exceeds SIZE, offload the coldest
    /// candidates until it is under (checked every 30 s).
    #[arg(long, value_name = "SIZE")]
    pub east_soft_limit: Option<String>,

    /// Background work of this gpair (policy runs, prefetch lists) starts at most N files a
    /// second. Interactive work is never limited.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_files_per_sec: Option<u64>,

    /// Background work of this gpair starts at most SIZE of files a second (e.g. 50M).
    #[arg(long, value_name = "SIZE")]
    pub max_bytes_per_sec: Option<String>,

    /// Never a file modified within the last N hours [default: 1].
    #[arg(long, value_name = "HOURS", value_parser = clap::value_parser!(u32).range(0..=876_000))]
    pub min_age_hours: Option<u32>,
}

/// `gpair migrate` and `gpair recall`.
#[derive(Debug, Args)]
pub struct TierArgs {
    /// Files, or directories with --recursive (relative paths are taken from the current
    /// directory).
    // Raw strings, not PathBuf (whose parser refuses ""), so an empty path gets validate's
    // one-line answer.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<OsString>,

    /// Take every file under the directories given.
    #[arg(short, long)]
    pub recursive: bool,

    /// Wait for the job to finish, showing its progress on stderr, then print its report.
    /// Exits 5 if files failed, 6 if the job was cancelled.
    #[arg(long)]
    pub wait: bool,
}

/// `gpair recall`.
#[derive(Debug, Args)]
pub struct RecallArgs {
    /// Files, or directories with --recursive (relative paths are taken from the current
    /// directory).
    #[arg(value_name = "PATH", required_unless_present = "prefetch_list")]
    pub paths: Vec<OsString>,

    /// Take every file under the directories given.
    #[arg(short, long)]
    pub recursive: bool,

    /// Wait for the job to finish, showing its progress on stderr, then print its report.
    /// Exits 5 if files failed, 6 if the job was cancelled.
    #[arg(long)]
    pub wait: bool,

    /// Recall the files listed in FILE, one path per line (blank lines and lines starting
    /// with `#` are skipped; relative paths are taken from the current directory; `-` reads
    /// standard input), ahead of a job that will need them. This runs as background work:
    /// after interactive recalls and reads, within the gpair's rate limits.
    #[arg(long, value_name = "FILE")]
    pub prefetch_list: Option<PathBuf>,
}

/// `gpair job ...`.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// List the jobs, newest first.
    Ls {
        /// At most this many jobs [backend default: 50].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
    /// Show a job's report: counters, times, and the files that were not moved, with reasons.
    Show {
        /// The job's id.
        #[arg(value_name = "ID")]
        id: String,
        /// List at most this many files [backend default: 1000].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        files_limit: Option<u32>,
    },
    /// Follow a job's progress until it finishes, then print its report. Exits 5 if files
    /// failed, 6 if the job was cancelled.
    Watch {
        /// The job's id.
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Cancel a job. Files in flight finish or roll back; the rest are left as they are.
    Cancel {
        /// The job's id.
        #[arg(value_name = "ID")]
        id: String,
    },
}

/// `gpair caps ...`.
#[derive(Debug, Subcommand)]
pub enum CapsCommand {
    /// Which sessions hold which caps on which files, and since when.
    Ls {
        /// Only caps on this file, or on files under this directory (relative paths are
        /// taken from the current directory).
        #[arg(value_name = "PATH")]
        path: Option<OsString>,
    },
}

/// `gpair session ...`.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List the mount sessions: client, mount point, last heartbeat, caps held.
    Ls,
    /// Evict a session: its caps are dropped, files it had open for writing are marked
    /// dirty, and its mount must open a new session.
    Evict {
        /// The session's id (see `gpair session ls`).
        #[arg(value_name = "ID")]
        id: String,
    },
}

/// `gpair quota ...`.
#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Set a gpair's west quota. Limits not given stay as they are.
    Set(QuotaSetArgs),
    /// Show the quotas and their use, of one gpair or all.
    Show {
        /// Only this gpair (default: all).
        #[arg(value_name = "NAME")]
        name: Option<String>,
    },
}

/// `gpair quota set`.
#[derive(Debug, Args)]
pub struct QuotaSetArgs {
    /// The gpair's name.
    #[arg(value_name = "NAME")]
    pub name: String,

    #[command(flatten)]
    pub limits: QuotaLimits,
}

/// The limits of `gpair quota set`: at least one.
#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
pub struct QuotaLimits {
    /// Bytes on west: a number with K, M, G, T or KiB, MiB, GiB, TiB (powers of 1024), or
    /// none (or 0) for no limit.
    // A negative value reaches the size check, which names the flag, instead of clap's
    // "unexpected argument '-1'".
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_bytes: Option<String>,

    /// Files on west, or none (or 0) for no limit.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_files: Option<String>,
}

/// `gpair gpeer ...`.
#[derive(Debug, Subcommand)]
pub enum GpeerCommand {
    /// Add a gpeer. The backend checks it can reach it first, unless --no-check.
    Add(GpeerAddArgs),
    /// List the gpeers.
    Ls,
    /// Show one gpeer, with its health.
    Show {
        /// The gpeer's name.
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Check that the backend can reach a gpeer (DNS, connect, auth, bucket, protocol).
    Check {
        /// The gpeer's name.
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Remove a gpeer. Refused while gpairs are bound to it.
    Rm {
        /// The gpeer's name.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

/// The S3 dialect of a gpeer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DialectArg {
    /// Our s3fs-gateway: SetAttrObj, native rename.
    Gateway,
    /// Any S3 (MinIO, Ceph RGW, AWS): gpair-name as an object tag.
    S3,
}

/// `gpair gpeer add`.
#[derive(Debug, Args)]
pub struct GpeerAddArgs {
    /// The gpeer's name, [A-Za-z0-9_.-]{1,64}.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// The S3 endpoint, http(s)://host[:port].
    #[arg(long, value_name = "URL")]
    pub endpoint: String,

    /// The remote cluster's id, e.g. LC_222.
    #[arg(long, value_name = "ID")]
    pub cluster_id: String,

    /// The S3 access key.
    #[arg(long, value_name = "K")]
    pub access_key: String,

    /// The S3 secret key. Visible to other users in `ps`: prefer --secret-key-file or
    /// GPAIR_SECRET_KEY.
    #[arg(long, value_name = "S", conflicts_with = "secret_key_file")]
    pub secret_key: Option<String>,

    /// Read the secret key from the first line of FILE (`-` = standard input).
    #[arg(long, value_name = "FILE")]
    pub secret_key_file: Option<PathBuf>,

    /// The S3 dialect.
    #[arg(long, value_enum, default_value_t = DialectArg::Gateway)]
    pub dialect: DialectArg,

    /// The S3 region [backend default: us-east-1].
    #[arg(long, value_name = "R")]
    pub region: Option<String>,

    /// Add without checking that the gpeer answers.
    #[arg(long)]
    pub no_check: bool,
}

/// `gpair bind`.
#[derive(Debug, Args)]
pub struct BindArgs {
    /// The gpair's name, [A-Za-z0-9_.-]{1,64}.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// The gpeer holding the remote side.
    #[arg(long, value_name = "G")]
    pub gpeer: String,

    /// The local share (relative paths are taken from the current directory).
    #[arg(long, value_name = "PATH")]
    pub local: PathBuf,

    /// BUCKET or BUCKET/PREFIX on the gpeer.
    #[arg(long, value_name = "BUCKET[/PREFIX]")]
    pub remote: String,

    /// Create the bucket if it does not exist.
    #[arg(long)]
    pub create_bucket: bool,

    /// Keep the west data of deleted offloaded files this many days (under
    /// `.gpair-trash/NAME/` in the bucket) before purging it; 0 deletes it at once.
    #[arg(long, value_name = "DAYS", default_value_t = 0)]
    pub retain_deleted_days: u32,

    /// How mounts read this gpair's stubs: `stream` reads through from west and leaves the
    /// file offloaded; `recall` also recalls it in the background at its first read.
    #[arg(long, value_name = "stream|recall", default_value = "stream")]
    pub read_policy: String,

    /// With `--read-policy stream`: recall a stub once it was opened for reading N times
    /// within an hour through mounts (0 = never).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub recall_after_reads: u32,
}

/// `gpair sync ...`.
#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Show metadata sync per gpair, with the entries that keep failing.
    Status {
        /// Only this gpair (default: all).
        #[arg(value_name = "NAME")]
        name: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_command() {
        let cli = Cli::try_parse_from([
            "gpair",
            "gpeer",
            "ls",
            "--output",
            "json",
            "--backend",
            "/s",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.output, OutputFormat::Json);
        assert_eq!(cli.backend, PathBuf::from("/s"));
        assert!(matches!(cli.command, Command::Gpeer(GpeerCommand::Ls)));
    }

    #[test]
    fn secret_key_and_file_conflict() {
        let r = Cli::try_parse_from([
            "gpair",
            "gpeer",
            "add",
            "w",
            "--endpoint",
            "http://x",
            "--cluster-id",
            "C",
            "--access-key",
            "a",
            "--secret-key",
            "s",
            "--secret-key-file",
            "/f",
        ]);
        assert!(r.is_err());
    }

    #[test]
    fn tier_commands_parse() {
        let cli = Cli::try_parse_from(["gpair", "migrate", "-r", "a", "--wait", "b"])
            .unwrap_or_else(|e| panic!("{e}"));
        match cli.command {
            Command::Migrate(a) => {
                assert!(a.recursive && a.wait);
                assert_eq!(a.paths, vec![OsString::from("a"), OsString::from("b")]);
            }
            other => panic!("{other:?}"),
        }
        // An empty path gets through the parser, for validate's one-line answer.
        assert!(Cli::try_parse_from(["gpair", "state", ""]).is_ok());
        assert!(Cli::try_parse_from(["gpair", "recall"]).is_err());
    }

    #[test]
    fn quota_set_needs_a_limit() {
        assert!(Cli::try_parse_from(["gpair", "quota", "set", "p1"]).is_err());
        let cli = Cli::try_parse_from(["gpair", "quota", "set", "p1", "--max-files", "3"])
            .unwrap_or_else(|e| panic!("{e}"));
        match cli.command {
            Command::Quota(QuotaCommand::Set(a)) => {
                assert_eq!(a.name, "p1");
                assert_eq!(a.limits.max_files.as_deref(), Some("3"));
                assert_eq!(a.limits.max_bytes, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn policy_set_parses_repeated_globs() {
        let cli = Cli::try_parse_from([
            "gpair",
            "policy",
            "set",
            "p1",
            "--idle-days",
            "30",
            "--exclude",
            "*.db",
            "--exclude",
            "ads/",
            "--owner",
            "1000",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        match cli.command {
            Command::Policy(PolicyCommand::Set(a)) => {
                assert_eq!(a.idle_days, Some(30));
                assert_eq!(a.exclude, vec!["*.db".to_string(), "ads/".to_string()]);
                assert_eq!(a.owner, vec![1000]);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["gpair", "policy", "set", "p1", "--idle-days", "-1"]).is_err()
        );
    }

    #[test]
    fn help_lists_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:"));
        assert!(help.contains("  130  Ctrl-C while waiting for a job"));
        assert!(help.contains("GPAIR_SECRET_KEY"));
    }
}
