//! `gpair explain PATH` and pins: why a file is where it is, by the same rules a policy run
//! applies (`rules::Compiled::judge`), and the pins that keep files and directories on east.
//!
//! A pin is the extended attribute `STUB_ATTR.pin` (`user.gpair.pin` by default) on the file
//! or on a directory above it: it moves with renames, and `setfattr` can set it too.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gpair_proto::now_ms;

use super::rules::{Keep, Verdict};
use crate::tier::{stub, TierError, TierState, Tiering};

/// What `explain` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub gpair: String,
    pub state: &'static str,
    /// `offload`, `keep` or `none` (no policy).
    pub verdict: &'static str,
    pub reason: String,
    pub pinned_by: Option<PathBuf>,
    pub noatime: bool,
    pub reads: u32,
    /// When a recall last brought it back (0: not since the backend started).
    pub last_recall_ms: i64,
}

/// The name of the pin attribute for a stub record attribute.
pub fn pin_attr(stub_attr: &str) -> String {
    format!("{stub_attr}.pin")
}

/// The pinned path that keeps `abs` on east: itself or the nearest directory above it, up to
/// the share root `root`.
pub fn pinned_by(abs: &Path, root: &Path, attr: &str) -> Option<PathBuf> {
    let mut at = Some(abs);
    while let Some(p) = at {
        if xattr_present(p, attr) {
            return Some(p.to_path_buf());
        }
        if p == root {
            break;
        }
        at = p.parent().filter(|d| d.starts_with(root));
    }
    None
}

pub(super) fn xattr_present(path: &Path, attr: &str) -> bool {
    let (Ok(p), Ok(a)) = (
        std::ffi::CString::new(path.as_os_str().as_bytes()),
        std::ffi::CString::new(attr),
    ) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated; a zero-size buffer only asks for the length.
    unsafe { libc::lgetxattr(p.as_ptr(), a.as_ptr(), std::ptr::null_mut(), 0) >= 0 }
}

/// Pins or unpins `abs` (a file or a directory below a bound share). Returns whether that
/// changed anything.
pub async fn pin(tier: &Arc<Tiering>, abs: &Path, unpin: bool) -> Result<bool, TierError> {
    let (rec, _) = tier.locate_abs(abs)?;
    let attr = pin_attr(&tier.config.stub_xattr);
    let p = abs.to_path_buf();
    let root = rec.local_path.clone();
    tokio::task::spawn_blocking(move || -> Result<bool, TierError> {
        let md = std::fs::symlink_metadata(&p)
            .map_err(|e| TierError::NotFound(format!("{}: {e}", p.display())))?;
        if !(md.is_file() || md.is_dir()) {
            return Err(TierError::Invalid(format!(
                "{} is neither a regular file nor a directory",
                p.display()
            )));
        }
        let inside = p
            .parent()
            .and_then(|d| std::fs::canonicalize(d).ok())
            .is_some_and(|d| d.starts_with(&root));
        if !inside && p != root {
            return Err(TierError::Precondition(format!(
                "{} is not inside the share (a symlink on the way?)",
                p.display()
            )));
        }
        let had = xattr_present(&p, &attr);
        let io = |e: std::io::Error| TierError::Internal(format!("{}: {e}", p.display()));
        let cp = std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|e| TierError::Invalid(e.to_string()))?;
        let ca =
            std::ffi::CString::new(attr.as_str()).map_err(|e| TierError::Invalid(e.to_string()))?;
        match (unpin, had) {
            (false, false) => {
                // SAFETY: NUL-terminated strings; the value is one byte that lives through the call.
                let r = unsafe {
                    libc::lsetxattr(cp.as_ptr(), ca.as_ptr(), b"1".as_ptr().cast(), 1, 0)
                };
                if r != 0 {
                    return Err(io(std::io::Error::last_os_error()));
                }
                Ok(true)
            }
            (true, true) => {
                // SAFETY: NUL-terminated strings.
                if unsafe { libc::lremovexattr(cp.as_ptr(), ca.as_ptr()) } != 0 {
                    return Err(io(std::io::Error::last_os_error()));
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    })
    .await
    .map_err(|e| TierError::Internal(e.to_string()))?
}

/// Why `abs` is where it is.
pub async fn explain(tier: &Arc<Tiering>, abs: &Path) -> Result<Explanation, TierError> {
    let (rec, rel) = tier.locate_abs(abs)?;
    let state = tier.state(abs);
    let reads = tier.reads_of(abs);
    let last_recall_ms = tier.last_recall_of(abs);
    let quota = tier.engine.quotas.usage(&rec.name);
    let stub_attr = tier.config.stub_xattr.clone();
    let p = abs.to_path_buf();
    let root = rec.local_path.clone();
    let policy = rec.policy.clone();
    let state_name = state.state.name();
    let dirty = matches!(state.state, TierState::Dirty);
    // A stub whose west copy is lost or corrupt: say so wherever the state is shown.
    let trouble = matches!(state.state, TierState::Lost | TierState::Conflict)
        .then(|| state.detail.clone())
        .filter(|d| !d.is_empty());
    let t = Arc::clone(tier);
    tokio::task::spawn_blocking(move || {
        let md = std::fs::symlink_metadata(&p)
            .map_err(|e| TierError::NotFound(format!("{}: {e}", p.display())))?;
        let noatime = noatime(&root);
        let pinned = pinned_by(&p, &root, &pin_attr(&stub_attr));
        let offloaded = md.is_file() && matches!(stub::read_path(&p, &stub_attr), Ok(Some(_)));
        let open_for_write = md.is_file() && super::run::open_for_write(&t, &rec.name, &p, &md);
        let mut e = Explanation {
            gpair: rec.name.clone(),
            state: state_name,
            verdict: "none",
            reason: format!(
                "gpair {} has no policy (set one with `gpair policy set {}`)",
                rec.name, rec.name
            ),
            pinned_by: pinned.clone(),
            noatime,
            reads,
            last_recall_ms,
        };
        let Some(rules) = policy else {
            return Ok(e);
        };
        let compiled = rules.compile().map_err(TierError::Internal)?;
        let facts = super::rules::Facts {
            rel: &rel,
            regular: md.is_file(),
            size: md.size(),
            atime: md.atime(),
            mtime: md.mtime(),
            uid: md.uid(),
            offloaded,
            pinned: pinned.map(|p| p.display().to_string()),
            open_for_write,
            dirty,
            unsynced: !super::run::synced(&t, &rec.name, &rel, &md),
            noatime,
        };
        match compiled.judge(&facts, now_ms() / 1000) {
            Verdict::Offload { why, .. } => match quota_full(&rec.quota, &quota, md.size()) {
                Some(full) => {
                    e.verdict = "keep";
                    e.reason = format!("{why}, but {full}");
                }
                None => {
                    e.verdict = "offload";
                    e.reason = why;
                }
            },
            Verdict::Keep(k) => {
                e.verdict = "keep";
                e.reason = match k {
                    Keep::Offloaded => match &trouble {
                        Some(d) => format!("already offloaded ({state_name}: {d})"),
                        None => format!("already offloaded ({state_name})"),
                    },
                    k => k.to_string(),
                };
            }
        }
        Ok(e)
    })
    .await
    .map_err(|e| TierError::Internal(e.to_string()))?
}

/// Why the gpair's west quota has no room for one more file of `size` bytes, if it has not
/// (the offload would be refused for quota).
fn quota_full(
    limits: &crate::tier::quota::QuotaLimits,
    u: &crate::tier::quota::Usage,
    size: u64,
) -> Option<String> {
    let files = u.used_files + u.reserved_files;
    let bytes = u.used_bytes + u.reserved_bytes;
    if limits.max_files > 0 && files + 1 > limits.max_files {
        return Some(format!(
            "the gpair's quota is full: {files} of {} files on west",
            limits.max_files
        ));
    }
    if limits.max_bytes > 0 && bytes.saturating_add(size) > limits.max_bytes {
        return Some(format!(
            "the gpair's quota is full: {bytes} of {} bytes on west, this file needs {size}",
            limits.max_bytes
        ));
    }
    None
}

/// Whether some process has `path` open for writing (on this machine, a mount's writers
/// included: they write through the backing file): a read lease (`F_SETLEASE F_RDLCK`) is
/// refused exactly then. `None` when it cannot be told (the lease needs the file's owner or
/// CAP_LEASE). The lease is let go at once; a writer opening meanwhile waits that long.
/// Never probe a file a job is moving: the open would break that job's own write lease.
pub fn open_for_write(path: &Path) -> Option<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOATIME)
        .open(path)
        .or_else(|_| {
            // O_NOATIME is for the owner only.
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(path)
        })
        .ok()?;
    // SAFETY: `f` is an open descriptor for the whole call.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) };
    if r == 0 {
        // SAFETY: as above.
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
        return Some(false);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => Some(true),
        _ => None,
    }
}

/// Whether the filesystem holding `path` is mounted `noatime` (access times say nothing).
pub fn noatime(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is NUL-terminated; `st` is written by the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    st.f_flag & libc::ST_NOATIME != 0
}
