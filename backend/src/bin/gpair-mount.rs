//! `gpair-mount SHARE_DIR MOUNTPOINT [--backend SOCKET]`: mounts an east share so that
//! applications never notice which files are offloaded (docs/mount.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use gpair_backend::mount::link::Waits;
use gpair_backend::mount::run::{run, MountConfig};
use gpair_backend::mount::west_read::ReadConfig;

/// Mount an east share of a bound gpair; offloaded files read as if nothing moved.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The east share directory (the local path of a bound gpair).
    share: PathBuf,
    /// Where to mount it (an empty directory).
    mountpoint: PathBuf,
    /// The backend's socket.
    #[arg(
        long,
        value_name = "SOCKET",
        env = "GPAIR_BACKEND",
        default_value = "/run/gpair/backend.sock"
    )]
    backend: PathBuf,
    /// FUSE worker threads (calls that may wait on west run on a pool of their own).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: u16,
    /// Serve local files through the mount instead of handing them to the kernel (FUSE
    /// passthrough, kernel 6.9 and later).
    #[arg(long)]
    no_passthrough: bool,
    /// Seconds a read of an offloaded file (or a recall) waits while west is unreachable
    /// before it fails with EIO.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    west_wait: u64,
    /// Seconds a write to an offloaded file may wait for its recall.
    #[arg(long, value_name = "SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    recall_wait: u64,
    /// MiB of offloaded data kept in memory for readers.
    #[arg(long, value_name = "MIB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(16..=1 << 20))]
    cache_mib: u64,
    /// Largest read-ahead window for sequential reads of offloaded files, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    read_ahead_mib: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    gpair_backend::init_logging();
    let west_wait = Duration::from_secs(args.west_wait);
    let config = MountConfig {
        share: args.share,
        mountpoint: args.mountpoint,
        backend: args.backend,
        threads: usize::from(args.threads),
        passthrough: !args.no_passthrough,
        read: ReadConfig {
            max_window: args.read_ahead_mib << 20,
            cache_bytes: args.cache_mib << 20,
            west_wait,
            ..ReadConfig::default()
        },
        waits: Waits {
            west: west_wait,
            recall: Duration::from_secs(args.recall_wait),
        },
    };
    let mounted = |share: &std::path::Path, mp: &std::path::Path| {
        println!(
            "gpair-mount: {} mounted on {}",
            share.display(),
            mp.display()
        );
    };
    match run(config, mounted) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpair-mount: {e}");
            ExitCode::FAILURE
        }
    }
}
