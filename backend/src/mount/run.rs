//! Mounting: the session with the backend, the core, the FUSE session, and a clean unmount
//! on SIGTERM/SIGINT or `fusermount3 -u`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::fuse::{GpairFs, ShellConfig};
use super::link::{Link, LinkError, Waits};
use super::west_read::{ReadConfig, WestReader};
use super::{Core, CoreConfig, OpenShareError, Services};

/// Everything `gpair-mount` needs.
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub share: PathBuf,
    pub mountpoint: PathBuf,
    pub backend: PathBuf,
    /// FUSE worker threads (each blocked read of a stub or recall holds one).
    pub threads: usize,
    pub passthrough: bool,
    pub read: ReadConfig,
    pub waits: Waits,
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("share {path}: {source}")]
    Share {
        path: String,
        source: std::io::Error,
    },
    #[error("mount point {path}: {problem}")]
    Mountpoint { path: String, problem: String },
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Core(#[from] OpenShareError),
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("mounting on {path}: {source}")]
    Mount {
        path: String,
        source: std::io::Error,
    },
}

/// Mounts the share and serves it until unmounted or signalled; `mounted` is called once
/// the mount is in place.
pub fn run(config: MountConfig, mounted: impl FnOnce(&Path, &Path)) -> Result<(), MountError> {
    let share = std::fs::canonicalize(&config.share).map_err(|source| MountError::Share {
        path: config.share.display().to_string(),
        source,
    })?;
    let mountpoint = prepare_mountpoint(&config.mountpoint)?;
    if mountpoint.starts_with(&share) {
        return Err(MountError::Mountpoint {
            path: mountpoint.display().to_string(),
            problem: format!(
                "is inside the share {}; mount it elsewhere",
                share.display()
            ),
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gpair-mount-io")
        .enable_all()
        .build()
        .map_err(MountError::Runtime)?;
    let cancel = CancellationToken::new();
    let opened = Link::open(
        runtime.handle(),
        &config.backend,
        &share,
        &mountpoint,
        config.waits,
        cancel.clone(),
    )?;
    let link = opened.link;
    let reader = WestReader::new(Arc::clone(&link), config.read);
    let core = Core::new(
        &share,
        CoreConfig {
            stub_attr: opened.stub_attr,
        },
        Services {
            stub_data: Arc::new(Arc::clone(&reader)),
            recall: Arc::clone(&link) as _,
            changes: Arc::clone(&link) as _,
        },
    )?;
    core.set_write_caps(Arc::clone(&link) as _);
    // Modes come from the caller with its umask applied; ours must not apply again.
    // SAFETY: umask only sets the process's file mode creation mask.
    unsafe { libc::umask(0) };
    let root = nix_is_root();
    let fs = GpairFs::new(
        Arc::new(core),
        Some(Arc::clone(&reader)),
        ShellConfig {
            passthrough: config.passthrough,
            own_for_caller: root,
        },
        runtime.handle().clone(),
    );
    let mut options = vec![
        fuser::MountOption::FSName(format!("gpair:{}", share.display())),
        fuser::MountOption::Subtype("gpair".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::RW,
    ];
    if root {
        options.push(fuser::MountOption::Dev);
        options.push(fuser::MountOption::Suid);
    }
    let mut fuse_config = fuser::Config::default();
    fuse_config.mount_options = options;
    fuse_config.acl = if root {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    fuse_config.n_threads = Some(config.threads.max(1));
    fuse_config.clone_fd = true;
    let mount_err = |source| MountError::Mount {
        path: mountpoint.display().to_string(),
        source,
    };
    let mut session = fuser::Session::new(fs, &mountpoint, &fuse_config).map_err(mount_err)?;
    let mut unmounter = session.unmount_callable();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let serving = std::thread::Builder::new()
        .name("gpair-mount".into())
        .spawn(move || {
            let r = session.run();
            let _ = done_tx.send(());
            r
        })
        .map_err(mount_err)?;
    // A stat of the mount point is answered by the session: only now.
    raise_read_ahead(&mountpoint);
    mounted(&share, &mountpoint);
    let signalled = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = done_rx => false,
            _ = tokio::signal::ctrl_c() => true,
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => true,
        }
    });
    if signalled {
        tracing::info!("signalled: unmounting");
        if let Err(e) = unmounter.unmount() {
            tracing::warn!("unmount: {e}; detaching it");
            detach(&mountpoint);
        }
    }
    let served = serving.join();
    let (gets, bytes) = reader.stats();
    tracing::info!(gets, bytes, "west reads: {gets} ranged GETs, {bytes} bytes");
    cancel.cancel();
    // Let the heartbeat task close the session.
    runtime.block_on(async { tokio::time::sleep(Duration::from_millis(200)).await });
    match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(mount_err(e)),
        Err(_) => Err(mount_err(std::io::Error::other(
            "the FUSE session thread panicked",
        ))),
    }
}

/// The kernel's read-ahead for this mount, in KiB: large reads of offloaded files become
/// 1 MiB FUSE requests instead of 128 KiB ones.
const READ_AHEAD_KB: u32 = 1024;

/// Raises the mount's read-ahead (its backing device info in sysfs; root only, best
/// effort: the default works, with smaller requests).
fn raise_read_ahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = md.dev();
    let path = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    match std::fs::write(&path, format!("{READ_AHEAD_KB}\n")) {
        Ok(()) => tracing::debug!(path, "read-ahead set to {READ_AHEAD_KB} KiB"),
        Err(e) => tracing::info!(path, "read-ahead left at the kernel's default: {e}"),
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The mount point, absolute; a dead mount left there by a crashed `gpair-mount`
/// ("Transport endpoint is not connected") is detached first.
fn prepare_mountpoint(path: &Path) -> Result<PathBuf, MountError> {
    let bad = |problem: String| MountError::Mountpoint {
        path: path.display().to_string(),
        problem,
    };
    // Listing it asks the filesystem (a stat may be answered from the kernel's attribute
    // cache of a mount that just died).
    let probe = std::fs::read_dir(path).and_then(|_| std::fs::metadata(path));
    match probe {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!(mountpoint = %path.display(), "a dead mount is in the way (a crashed gpair-mount?); detaching it");
            detach(path);
        }
        Err(e) => return Err(bad(e.to_string())),
        Ok(m) if !m.is_dir() => return Err(bad("not a directory".into())),
        Ok(_) => {}
    }
    let abs = std::fs::canonicalize(path).map_err(|e| bad(e.to_string()))?;
    let md = std::fs::metadata(&abs).map_err(|e| bad(e.to_string()))?;
    if !md.is_dir() {
        return Err(bad("not a directory".into()));
    }
    Ok(abs)
}

/// Lazily unmounts whatever is mounted at `path`.
fn detach(path: &Path) {
    let Ok(c) = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
    else {
        return;
    };
    // SAFETY: `c` is NUL-terminated.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        // Not root: fusermount3 may do it for the owner.
        let _ = std::process::Command::new("fusermount3")
            .arg("-uz")
            .arg(path)
            .status();
    }
}
