//! [`Core`]: the operations of the mount on one east share.
//!
//! Every entry is reached through the inode table's path for it, resolved beneath the
//! share-root descriptor with no symlink followed, and checked to still be the inode the
//! table knows (a name replaced behind the mount's back answers ENOENT, never another
//! file's data); what is done to it is then done through that descriptor (see `sys`).
//!
//! Stubs (DESIGN 4.1): a file is a stub while its stub record attribute exists.
//! - `getattr`/`lookup` show `lstat` as it is — the stub keeps size, mode, owner and times —
//!   except `st_blocks`, reported as if the data were there so that tools which skip
//!   "all-hole" files (`tar --sparse`, `du`-driven scripts) still read it. Neither ever
//!   recalls. (The record is only read for files whose blocks look released, so local files
//!   pay nothing.)
//! - `read` of a stub is served by [`StubData`](super::StubData) — never from east, whose
//!   bytes are holes.
//! - Before anything that would change a stub's data — `write`, truncate to a non-zero size,
//!   `fallocate`, an `open` or `create` with write access — the core calls
//!   [`Recall`](super::Recall); the operation proceeds only once the record is gone.
//! - Truncation to zero (`setattr` size 0, an `O_TRUNC` open) needs none of the old data: the
//!   core truncates, then removes the stub record, and the file is an ordinary empty local
//!   file. Truncate first, drop the record second: in between, a reader still gets the
//!   west data it would have got a moment earlier, never zeros. West still holds the old
//!   object after that; the change report tells the backend, which owns the cleanup.

use std::collections::{HashMap, VecDeque};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::sys::{self, Res};
use super::table::{Key, Table};
use super::{Attr, ChangeKind, DirEntry, Errno, FileKind, Services, SetAttr, Statfs, TimeSet};
use crate::tier::stub::{self, StubRecord};

/// Largest read the core serves in one call (the kernel asks for at most 1 MiB by default).
pub const MAX_IO: usize = 16 << 20;
const DIRENT_BUF: usize = 32 * 1024;
/// Open flags passed on to the underlying file; the rest are the kernel's business
/// (`O_CREAT`/`O_EXCL` only mean something to `create`).
const OPEN_FLAGS: i32 =
    libc::O_ACCMODE | libc::O_APPEND | libc::O_TRUNC | libc::O_SYNC | libc::O_DSYNC;
const RENAME_FLAGS: u32 = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE;

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The extended attribute holding stub records (the backend's `stub_xattr`).
    pub stub_attr: String,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            stub_attr: "user.gpair".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenShareError {
    #[error("share root {path}: {source}")]
    Root {
        path: String,
        source: std::io::Error,
    },
    #[error("stub record attribute {0:?}: not a valid extended attribute name")]
    StubAttr(String),
    #[error("/proc/self/fd is not available ({0}); the mount core reaches files through it")]
    NoProc(std::io::Error),
}

/// The filesystem core over one share root. All methods take `&self` and may be called from
/// many threads; they block on the underlying filesystem and on the services.
pub struct Core {
    root: OwnedFd,
    stub_attr: CString,
    services: Services,
    table: Mutex<Table>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Write caps (set by the mount; none in tests of the core alone).
    write_caps: std::sync::OnceLock<Arc<dyn super::WriteCaps>>,
    /// Handles open for writing of regular files → their east inode (for the caps).
    writers: Mutex<HashMap<u64, u64>>,
}

/// An open file or directory.
struct Handle {
    ino: u64,
    fd: OwnedFd,
    /// The path at open (for reports and services once the table no longer knows the node).
    path: PathBuf,
    /// `flags & O_ACCMODE` of the open.
    access: i32,
    /// Data changed through this handle: reported at release.
    wrote: AtomicBool,
    dir: Option<Mutex<DirStream>>,
}

/// A directory listing in progress: entries read from the kernel and not handed out yet.
/// Invariant: `at` is the cookie of the first pending entry; with none pending, the
/// descriptor is positioned at `at`.
#[derive(Default)]
struct DirStream {
    pending: VecDeque<RawEntry>,
    at: i64,
    end: bool,
}

struct RawEntry {
    ino: u64,
    off: i64,
    d_type: u8,
    name: OsString,
}

/// See [`Core::open_state`].
pub struct OpenState {
    pub path: PathBuf,
    pub stub: Option<StubRecord>,
    pub fd: OwnedFd,
}

/// An entry reached through the table: its `O_PATH` descriptor, attributes and path.
struct Resolved {
    fd: OwnedFd,
    st: libc::stat,
    path: PathBuf,
}

enum Step {
    Taken,
    Skipped,
    Full,
}

impl Core {
    /// Opens the share root. The root path itself may be reached through symlinks (the
    /// operator chose it); nothing below it is.
    pub fn new(
        root: &Path,
        config: CoreConfig,
        services: Services,
    ) -> Result<Self, OpenShareError> {
        let root_err = |source| OpenShareError::Root {
            path: root.display().to_string(),
            source,
        };
        let file = std::fs::File::open(root).map_err(root_err)?;
        let md = file.metadata().map_err(root_err)?;
        if !md.is_dir() {
            return Err(root_err(std::io::Error::from_raw_os_error(libc::ENOTDIR)));
        }
        std::fs::metadata("/proc/self/fd").map_err(OpenShareError::NoProc)?;
        let stub_attr = CString::new(config.stub_attr.as_bytes())
            .ok()
            .filter(|a| !a.as_bytes().is_empty())
            .ok_or_else(|| OpenShareError::StubAttr(config.stub_attr.clone()))?;
        let root = OwnedFd::from(file);
        let st = sys::fstat(root.as_fd()).map_err(|e| root_err(e.into()))?;
        Ok(Self {
            root,
            stub_attr,
            services,
            table: Mutex::new(Table::new(Key::of(&st))),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            write_caps: std::sync::OnceLock::new(),
            writers: Mutex::new(HashMap::new()),
        })
    }

    // ---- names ------------------------------------------------------------------------

    /// `parent/name`: its attributes, and one more lookup the kernel holds on it.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Res<Attr> {
        let c = sys::entry_name(name)?;
        let dir = self.resolve(parent)?;
        let st = sys::lstatat(dir.fd.as_fd(), &c)?;
        self.entry(parent, name, &c, dir.fd.as_fd(), &st)
    }

    /// The kernel gives back `nlookup` lookups of `ino`.
    pub fn forget(&self, ino: u64, nlookup: u64) {
        self.table().forget(ino, nlookup);
    }

    /// Attributes of `ino` (through the open handle `fh` if given: the file may be unlinked).
    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> Res<Attr> {
        if let Some(fh) = fh {
            let h = self.handle(fh)?;
            let st = sys::fstat(h.fd.as_fd())?;
            return Ok(self.attr_of(ino, &st, h.fd.as_fd()));
        }
        match self.resolve(ino) {
            Ok(n) => Ok(self.attr_of(ino, &n.st, n.fd.as_fd())),
            // Unlinked but still open (the kernel asks without a handle for `fstat`).
            Err(Errno::ENOENT) => {
                let open = self.handles().values().find(|h| h.ino == ino).cloned();
                let h = open.ok_or(Errno::ENOENT)?;
                let st = sys::fstat(h.fd.as_fd())?;
                Ok(self.attr_of(ino, &st, h.fd.as_fd()))
            }
            Err(e) => Err(e),
        }
    }

    /// chmod, chown, truncate, utimens — in that order, stopping at the first error.
    pub fn setattr(&self, ino: u64, fh: Option<u64>, set: &SetAttr) -> Res<Attr> {
        let handle = fh.map(|fh| self.handle(fh)).transpose()?;
        let node;
        // `named`: where the entry is now, for the report; a handle's file may have none.
        let (fd, st, path, named) = match &handle {
            Some(h) => {
                let named = self.table().path(h.ino);
                let path = named.clone().unwrap_or_else(|| h.path.clone());
                (h.fd.as_fd(), sys::fstat(h.fd.as_fd())?, path, named)
            }
            None => {
                node = self.resolve(ino)?;
                (
                    node.fd.as_fd(),
                    node.st,
                    node.path.clone(),
                    Some(node.path.clone()),
                )
            }
        };
        // A stub to resize is recalled (or, to zero, discarded) before anything changes, so
        // a failure leaves the file exactly as it was.
        if let Some(size) = set.size {
            self.prepare_truncate(fd, &st, size, &path)?;
        }
        if let Some(mode) = set.mode {
            sys::chmod_fd(fd, mode & 0o7777)?;
        }
        if set.uid.is_some() || set.gid.is_some() {
            sys::chown_fd(fd, set.uid, set.gid)?;
        }
        if let Some(size) = set.size {
            match &handle {
                Some(h) if h.access != libc::O_RDONLY => sys::ftruncate(fd, size)?,
                _ => sys::truncate_fd(fd, size)?,
            }
        }
        if set.atime.is_some() || set.mtime.is_some() {
            sys::utimens_fd(fd, &[timespec(set.atime), timespec(set.mtime)])?;
        }
        let st = sys::fstat(fd)?;
        if let Some(named) = named {
            self.report(ChangeKind::Modify, &named, None);
        }
        Ok(self.attr_of(ino, &st, fd))
    }

    pub fn readlink(&self, ino: u64) -> Res<Vec<u8>> {
        let n = self.resolve(ino)?;
        if FileKind::from_mode(n.st.st_mode) != FileKind::Symlink {
            return Err(Errno::EINVAL);
        }
        sys::readlink_fd(n.fd.as_fd())
    }

    pub fn mkdir(&self, parent: u64, name: &OsStr, mode: u32) -> Res<Attr> {
        let c = sys::entry_name(name)?;
        let dir = self.resolve(parent)?;
        sys::mkdirat(dir.fd.as_fd(), &c, mode)?;
        let st = sys::lstatat(dir.fd.as_fd(), &c)?;
        let a = self.entry(parent, name, &c, dir.fd.as_fd(), &st)?;
        self.report(ChangeKind::Create, &dir.path.join(name), None);
        Ok(a)
    }

    /// A FIFO, socket, device node or (`mknod(2)` with `S_IFREG`) empty regular file; `mode`
    /// carries the type.
    pub fn mknod(&self, parent: u64, name: &OsStr, mode: u32, rdev: u64) -> Res<Attr> {
        match FileKind::from_mode(mode) {
            FileKind::Directory | FileKind::Symlink => return Err(Errno::EINVAL),
            _ => {}
        }
        let c = sys::entry_name(name)?;
        let dir = self.resolve(parent)?;
        sys::mknodat(dir.fd.as_fd(), &c, mode, rdev)?;
        let st = sys::lstatat(dir.fd.as_fd(), &c)?;
        let a = self.entry(parent, name, &c, dir.fd.as_fd(), &st)?;
        self.report(ChangeKind::Create, &dir.path.join(name), None);
        Ok(a)
    }

    pub fn symlink(&self, parent: u64, name: &OsStr, target: &OsStr) -> Res<Attr> {
        let c = sys::entry_name(name)?;
        let t = sys::cstring(target.as_bytes())?;
        let dir = self.resolve(parent)?;
        sys::symlinkat(&t, dir.fd.as_fd(), &c)?;
        let st = sys::lstatat(dir.fd.as_fd(), &c)?;
        let a = self.entry(parent, name, &c, dir.fd.as_fd(), &st)?;
        self.report(ChangeKind::Create, &dir.path.join(name), None);
        Ok(a)
    }

    /// A new name `new_parent/new_name` for `ino` (a hard link: same node, same number).
    pub fn link(&self, ino: u64, new_parent: u64, new_name: &OsStr) -> Res<Attr> {
        let c = sys::entry_name(new_name)?;
        let src = self.resolve(ino)?;
        let dir = self.resolve(new_parent)?;
        sys::link_fd(src.fd.as_fd(), dir.fd.as_fd(), &c)?;
        let st = sys::lstatat(dir.fd.as_fd(), &c)?;
        let a = self.entry(new_parent, new_name, &c, dir.fd.as_fd(), &st)?;
        self.report(ChangeKind::Create, &dir.path.join(new_name), None);
        Ok(a)
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> Res<()> {
        self.remove(parent, name, 0)
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Res<()> {
        self.remove(parent, name, libc::AT_REMOVEDIR)
    }

    /// `renameat2` with `flags` 0, RENAME_NOREPLACE or RENAME_EXCHANGE; anything else
    /// (RENAME_WHITEOUT, unknown bits, both at once) is EINVAL. Nodes keep their numbers.
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> Res<()> {
        if flags & !RENAME_FLAGS != 0 || flags == RENAME_FLAGS {
            return Err(Errno::EINVAL);
        }
        let c = sys::entry_name(name)?;
        let nc = sys::entry_name(new_name)?;
        let from = self.resolve(parent)?;
        let to = if new_parent == parent {
            None
        } else {
            Some(self.resolve(new_parent)?)
        };
        let to_dir = to.as_ref().unwrap_or(&from);
        sys::renameat2(from.fd.as_fd(), &c, to_dir.fd.as_fd(), &nc, flags)?;
        let (old_path, new_path) = (from.path.join(name), to_dir.path.join(new_name));
        if flags & libc::RENAME_EXCHANGE != 0 {
            self.table().exchanged(parent, name, new_parent, new_name);
            self.report(ChangeKind::Exchange, &old_path, Some(&new_path));
        } else {
            self.table().renamed(parent, name, new_parent, new_name);
            self.report(ChangeKind::Rename, &old_path, Some(&new_path));
        }
        Ok(())
    }

    // ---- files ------------------------------------------------------------------------

    /// Creates `parent/name` (or opens it if it exists, unless `O_EXCL`) and opens it with
    /// `flags`; `mode` is applied by the filesystem under the process umask (the shell
    /// passes the caller's mode with the caller's umask already applied and runs with
    /// umask 0). Returns the entry (one lookup) and a handle.
    pub fn create(&self, parent: u64, name: &OsStr, mode: u32, flags: i32) -> Res<(Attr, u64)> {
        let c = sys::entry_name(name)?;
        let dir = self.resolve(parent)?;
        let path = dir.path.join(name);
        let pass = flags & OPEN_FLAGS;
        let mut raced = 0;
        // O_EXCL first, so we know whether this call created the file.
        let (fd, created, before) = loop {
            match sys::openat(
                dir.fd.as_fd(),
                &c,
                pass | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                mode,
            ) {
                Ok(fd) => {
                    let st = sys::fstat(fd.as_fd())?;
                    break (fd, true, st);
                }
                Err(Errno::EEXIST) if flags & libc::O_EXCL == 0 => {}
                Err(e) => return Err(e),
            }
            match sys::openat(dir.fd.as_fd(), &c, libc::O_PATH | libc::O_NOFOLLOW, 0) {
                Ok(p) => {
                    let st = sys::fstat(p.as_fd())?;
                    openable(&st)?;
                    if FileKind::from_mode(st.st_mode) == FileKind::Directory {
                        return Err(Errno::EISDIR);
                    }
                    break (self.open_existing(p.as_fd(), &st, &path, flags)?, false, st);
                }
                // Removed between the two opens: try again.
                Err(Errno::ENOENT) if raced < 8 => raced += 1,
                Err(e) => return Err(e),
            }
        };
        let cap = self.cap_opening(&path, &before, flags)?;
        let wrote = self
            .settle_open(fd.as_fd(), &path, flags, &before)
            .inspect_err(|_| self.cap_closed(cap))?;
        let st = sys::fstat(fd.as_fd()).inspect_err(|_| self.cap_closed(cap))?;
        let ino = self
            .table()
            .remember(parent, name, Key::of(&st))
            .inspect_err(|_| self.cap_closed(cap))?;
        let attr = self.attr_of(ino, &st, fd.as_fd());
        let fh = self.add_writer_handle(
            cap,
            Handle {
                ino,
                fd,
                path: path.clone(),
                access: flags & libc::O_ACCMODE,
                wrote: AtomicBool::new(wrote),
                dir: None,
            },
        );
        if created {
            self.report(ChangeKind::Create, &path, None);
        }
        Ok((attr, fh))
    }

    /// Opens `ino` with `flags` (access mode, `O_APPEND`, `O_TRUNC`, `O_SYNC`/`O_DSYNC`).
    pub fn open(&self, ino: u64, flags: i32) -> Res<u64> {
        let n = self.resolve(ino)?;
        openable(&n.st)?;
        // The write cap first: no offload may release the file once this open goes on.
        let cap = self.cap_opening(&n.path, &n.st, flags)?;
        let fd = self
            .open_existing(n.fd.as_fd(), &n.st, &n.path, flags)
            .inspect_err(|_| self.cap_closed(cap))?;
        let wrote = self
            .settle_open(fd.as_fd(), &n.path, flags, &n.st)
            .inspect_err(|_| self.cap_closed(cap))?;
        Ok(self.add_writer_handle(
            cap,
            Handle {
                ino,
                fd,
                path: n.path,
                access: flags & libc::O_ACCMODE,
                wrote: AtomicBool::new(wrote),
                dir: None,
            },
        ))
    }

    /// Up to `size` bytes (at most [`MAX_IO`]) at `offset`; fewer only at the end of the
    /// file. A stub's bytes come from [`StubData`](super::StubData).
    pub fn read(&self, fh: u64, offset: u64, size: usize) -> Res<Vec<u8>> {
        let h = self.file_handle(fh)?;
        if h.access == libc::O_WRONLY {
            return Err(Errno::EBADF);
        }
        let size = size.min(MAX_IO);
        let path = self.handle_path(&h);
        if let Some(rec) = self.stub_of_open(h.fd.as_fd(), &path)? {
            if offset >= rec.size || size == 0 {
                return Ok(Vec::new());
            }
            let len = usize::try_from(rec.size - offset).map_or(size, |rest| rest.min(size));
            let data = match self.services.stub_data.read(&path, &rec, offset, len) {
                // Recalled meanwhile: the data is east's now, if the record is really gone.
                Err(Errno::ESTALE) if self.stub_of_open(h.fd.as_fd(), &path)?.is_none() => {
                    return self.read_local(&h, offset, size);
                }
                Err(Errno::ESTALE) => return Err(Errno::EIO),
                r => r?,
            };
            if data.len() != len {
                tracing::warn!(
                    path = %path.display(),
                    offset,
                    len,
                    got = data.len(),
                    "stub read answered with the wrong length; refusing it"
                );
                return Err(Errno::EIO);
            }
            return Ok(data);
        }
        self.read_local(&h, offset, size)
    }

    fn read_local(&self, h: &Handle, offset: u64, size: usize) -> Res<Vec<u8>> {
        let mut buf = vec![0u8; size];
        let mut got = 0;
        while got < size {
            let at = offset.checked_add(got as u64).ok_or(Errno::EINVAL)?;
            let rest = buf.get_mut(got..).unwrap_or_default();
            match sys::pread(h.fd.as_fd(), rest, at) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if got == 0 => return Err(e),
                Err(_) => break,
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    /// Writes `data` at `offset` (appends on an `O_APPEND` handle); returns the count
    /// written. A stub is recalled first.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Res<usize> {
        let h = self.file_handle(fh)?;
        if h.access == libc::O_RDONLY {
            return Err(Errno::EBADF);
        }
        self.recall_if_stub(&h)?;
        let mut done = 0;
        while done < data.len() {
            let at = offset.checked_add(done as u64).ok_or(Errno::EINVAL)?;
            let rest = data.get(done..).unwrap_or_default();
            match sys::pwrite(h.fd.as_fd(), rest, at) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            }
        }
        h.wrote.store(true, Ordering::Relaxed);
        Ok(done)
    }

    /// What the shell needs to know about an open file: its path now, its stub record if it
    /// is a stub, and a duplicate of its descriptor (to hand to the kernel for passthrough).
    pub fn open_state(&self, fh: u64) -> Res<OpenState> {
        let h = self.file_handle(fh)?;
        let path = self.handle_path(&h);
        let stub = self.stub_of_open(h.fd.as_fd(), &path)?;
        let fd = h.fd.try_clone().map_err(Errno::from)?;
        Ok(OpenState { path, stub, fd })
    }

    /// Data may change through this handle without the core seeing it (the kernel writes
    /// to the file directly — FUSE passthrough): report it at release.
    pub fn mark_written(&self, fh: u64) -> Res<()> {
        self.file_handle(fh)?.wrote.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The application closed a descriptor of this handle (there may be others).
    pub fn flush(&self, fh: u64) -> Res<()> {
        let h = self.file_handle(fh)?;
        sys::flush(h.fd.as_fd())
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> Res<()> {
        let h = self.file_handle(fh)?;
        sys::fsync(h.fd.as_fd(), datasync)
    }

    /// The last descriptor of the handle is closed: a handle that wrote is reported
    /// (`Modify`) unless its file no longer has a name.
    pub fn release(&self, fh: u64) -> Res<()> {
        let h = self.handles().remove(&fh).ok_or(Errno::EBADF)?;
        let cap = self.writers().remove(&fh);
        self.cap_closed(cap);
        if h.wrote.load(Ordering::Relaxed) {
            let path = self.table().path(h.ino);
            if let Some(path) = path {
                self.report(ChangeKind::Modify, &path, None);
            }
        }
        Ok(())
    }

    /// `fallocate(mode, offset, length)` on an open file; a stub is recalled first.
    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> Res<()> {
        let h = self.file_handle(fh)?;
        if h.access == libc::O_RDONLY {
            return Err(Errno::EBADF);
        }
        self.recall_if_stub(&h)?;
        sys::fallocate(h.fd.as_fd(), mode, offset, length)?;
        h.wrote.store(true, Ordering::Relaxed);
        Ok(())
    }

    // ---- directories ------------------------------------------------------------------

    pub fn opendir(&self, ino: u64) -> Res<u64> {
        let n = self.resolve(ino)?;
        if FileKind::from_mode(n.st.st_mode) != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        let fd = sys::reopen(n.fd.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
        Ok(self.add_handle(Handle {
            ino,
            fd,
            path: n.path,
            access: libc::O_RDONLY,
            wrote: AtomicBool::new(false),
            dir: Some(Mutex::new(DirStream::default())),
        }))
    }

    /// Entries from `offset` (0: the start; else an entry's `offset` from this stream),
    /// `.` and `..` included, handed to `add` until it answers `true` ("buffer full": that
    /// entry was not taken and comes first next time).
    pub fn readdir(&self, fh: u64, offset: i64, mut add: impl FnMut(&DirEntry) -> bool) -> Res<()> {
        self.list(fh, offset, |h, e| {
            let entry = self.dir_entry(h, e);
            Ok(if add(&entry) { Step::Full } else { Step::Taken })
        })
    }

    /// [`Self::readdir`] with attributes; every entry `add` takes (other than `.` and `..`)
    /// counts one lookup, as the kernel expects. Entries that vanish meanwhile are skipped.
    pub fn readdirplus(
        &self,
        fh: u64,
        offset: i64,
        mut add: impl FnMut(&DirEntry, &Attr) -> bool,
    ) -> Res<()> {
        self.list(fh, offset, |h, e| {
            let b = e.name.as_bytes();
            if b == b"." || b == b".." {
                // The kernel neither counts nor caches these two; the directory's own
                // attributes stand in for both.
                let entry = self.dir_entry(h, e);
                let st = sys::fstat(h.fd.as_fd())?;
                let a = attr(entry.ino, &st);
                return Ok(if add(&entry, &a) {
                    Step::Full
                } else {
                    Step::Taken
                });
            }
            let Ok(c) = sys::cstring(b) else {
                return Ok(Step::Skipped);
            };
            let st = match sys::lstatat(h.fd.as_fd(), &c) {
                Ok(st) => st,
                Err(Errno::ENOENT) => return Ok(Step::Skipped),
                Err(err) => return Err(err),
            };
            let a = self.entry(h.ino, &e.name, &c, h.fd.as_fd(), &st)?;
            let entry = DirEntry {
                ino: a.ino,
                offset: e.off,
                kind: FileKind::from_mode(st.st_mode),
                name: e.name.clone(),
            };
            if add(&entry, &a) {
                self.forget(a.ino, 1);
                Ok(Step::Full)
            } else {
                Ok(Step::Taken)
            }
        })
    }

    pub fn fsyncdir(&self, fh: u64, datasync: bool) -> Res<()> {
        let h = self.handle(fh)?;
        sys::fsync(h.fd.as_fd(), datasync)
    }

    pub fn releasedir(&self, fh: u64) -> Res<()> {
        self.handles().remove(&fh).map(|_| ()).ok_or(Errno::EBADF)
    }

    pub fn statfs(&self, ino: u64) -> Res<Statfs> {
        let n = self.resolve(ino)?;
        let s = sys::fstatvfs(n.fd.as_fd())?;
        Ok(Statfs {
            blocks: s.f_blocks,
            bfree: s.f_bfree,
            bavail: s.f_bavail,
            files: s.f_files,
            ffree: s.f_ffree,
            bsize: u32::try_from(s.f_bsize).unwrap_or(u32::MAX),
            namelen: u32::try_from(s.f_namemax).unwrap_or(255),
            frsize: u32::try_from(s.f_frsize).unwrap_or(u32::MAX),
        })
    }

    // ---- extended attributes ----------------------------------------------------------
    // The stub record attribute does not exist as far as users can tell: reading it is
    // ENODATA, it is left out of listings, and setting or removing it is EPERM.

    /// The whole value (the shell answers size queries and ERANGE from its length).
    pub fn getxattr(&self, ino: u64, name: &OsStr) -> Res<Vec<u8>> {
        let c = sys::cstring(name.as_bytes())?;
        if self.is_stub_attr(&c) {
            return Err(Errno::ENODATA);
        }
        let n = self.resolve(ino)?;
        sys::getxattr_fd(n.fd.as_fd(), &c)
    }

    /// `flags`: 0, XATTR_CREATE or XATTR_REPLACE.
    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> Res<()> {
        let c = sys::cstring(name.as_bytes())?;
        if self.is_stub_attr(&c) {
            return Err(Errno::EPERM);
        }
        let n = self.resolve(ino)?;
        sys::setxattr_fd(n.fd.as_fd(), &c, value, flags)
    }

    /// The NUL-terminated names, as the kernel wants them, without the stub record's.
    pub fn listxattr(&self, ino: u64) -> Res<Vec<u8>> {
        let n = self.resolve(ino)?;
        let raw = sys::listxattr_fd(n.fd.as_fd())?;
        let mut out = Vec::with_capacity(raw.len());
        for name in raw.split(|&b| b == 0).filter(|s| !s.is_empty()) {
            if name != self.stub_attr.as_bytes() {
                out.extend_from_slice(name);
                out.push(0);
            }
        }
        Ok(out)
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> Res<()> {
        let c = sys::cstring(name.as_bytes())?;
        if self.is_stub_attr(&c) {
            return Err(Errno::EPERM);
        }
        let n = self.resolve(ino)?;
        sys::removexattr_fd(n.fd.as_fd(), &c)
    }

    // ---- internals --------------------------------------------------------------------

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn handles(&self) -> MutexGuard<'_, HashMap<u64, Arc<Handle>>> {
        self.handles.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn handle(&self, fh: u64) -> Res<Arc<Handle>> {
        self.handles().get(&fh).cloned().ok_or(Errno::EBADF)
    }

    fn file_handle(&self, fh: u64) -> Res<Arc<Handle>> {
        let h = self.handle(fh)?;
        if h.dir.is_some() {
            return Err(Errno::EISDIR);
        }
        Ok(h)
    }

    /// Sets the write caps the core reports opens and closes for writing to.
    pub fn set_write_caps(&self, caps: Arc<dyn super::WriteCaps>) {
        let _ = self.write_caps.set(caps);
    }

    fn writers(&self) -> MutexGuard<'_, HashMap<u64, u64>> {
        self.writers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An open of a regular file for writing takes its write cap: the east inode, or
    /// `None` when there is nothing to take.
    fn cap_opening(&self, path: &Path, st: &libc::stat, flags: i32) -> Res<Option<u64>> {
        let Some(caps) = self.write_caps.get() else {
            return Ok(None);
        };
        if flags & libc::O_ACCMODE == libc::O_RDONLY
            || FileKind::from_mode(st.st_mode) != FileKind::Regular
        {
            return Ok(None);
        }
        caps.opening(path, st.st_ino)?;
        Ok(Some(st.st_ino))
    }

    fn cap_closed(&self, cap: Option<u64>) {
        if let (Some(ino), Some(caps)) = (cap, self.write_caps.get()) {
            caps.closed(ino);
        }
    }

    fn add_writer_handle(&self, cap: Option<u64>, h: Handle) -> u64 {
        let fh = self.add_handle(h);
        if let Some(ino) = cap {
            self.writers().insert(fh, ino);
        }
        fh
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles().insert(fh, Arc::new(h));
        fh
    }

    /// Where the handle's file is now (or was when opened, if it has no name left).
    fn handle_path(&self, h: &Handle) -> PathBuf {
        self.table().path(h.ino).unwrap_or_else(|| h.path.clone())
    }

    /// The entry of `ino`, through the first of its paths that still holds its inode. A
    /// resolution that raced a rename is retried.
    fn resolve(&self, ino: u64) -> Res<Resolved> {
        for _ in 0..4 {
            let (key, paths, generation) = {
                let t = self.table();
                let key = t.key(ino).ok_or(Errno::ENOENT)?;
                (key, t.paths(ino), t.generation())
            };
            for path in paths {
                match sys::open_beneath(self.root.as_fd(), &path) {
                    Ok(fd) => {
                        let st = sys::fstat(fd.as_fd())?;
                        if Key::of(&st) == key {
                            return Ok(Resolved { fd, st, path });
                        }
                    }
                    Err(e) if is_gone(e) => {}
                    Err(e) => return Err(e),
                }
            }
            if self.table().generation() == generation {
                break;
            }
        }
        Err(Errno::ENOENT)
    }

    /// Records the entry `parent/name` (`st` is its lstat) and returns its attributes.
    fn entry(
        &self,
        parent: u64,
        name: &OsStr,
        c: &CStr,
        dir: BorrowedFd<'_>,
        st: &libc::stat,
    ) -> Res<Attr> {
        let ino = self.table().remember(parent, name, Key::of(st))?;
        if looks_released(st) {
            if let Ok(fd) = sys::openat(dir, c, libc::O_PATH | libc::O_NOFOLLOW, 0) {
                return Ok(self.attr_of(ino, st, fd.as_fd()));
            }
        }
        Ok(attr(ino, st))
    }

    /// `attr`, with a stub's block count as if its data were there.
    fn attr_of(&self, ino: u64, st: &libc::stat, fd: BorrowedFd<'_>) -> Attr {
        let mut a = attr(ino, st);
        // Only the block count depends on it: an unreadable or corrupt record is left for
        // the data paths to report.
        if looks_released(st) {
            let raw = sys::getxattr_fd(fd, &self.stub_attr);
            if raw.is_ok_and(|b| stub::decode(&b).is_ok()) {
                a.blocks = a.blocks.max(a.size.div_ceil(512));
            }
        }
        a
    }

    fn remove(&self, parent: u64, name: &OsStr, flags: i32) -> Res<()> {
        let c = sys::entry_name(name)?;
        let dir = self.resolve(parent)?;
        sys::unlinkat(dir.fd.as_fd(), &c, flags)?;
        self.table().unlinked(parent, name);
        self.report(ChangeKind::Delete, &dir.path.join(name), None);
        Ok(())
    }

    /// After an open with `flags` of a file whose attributes before were `before`: a stub
    /// opened for writing is recalled, one truncated by `O_TRUNC` loses its record. Returns
    /// whether the open itself changed the data (a truncation).
    fn settle_open(
        &self,
        fd: BorrowedFd<'_>,
        path: &Path,
        flags: i32,
        before: &libc::stat,
    ) -> Res<bool> {
        let trunc = flags & libc::O_TRUNC != 0;
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY || trunc;
        let regular = FileKind::from_mode(before.st_mode) == FileKind::Regular;
        if writes && regular && self.stub_of_open(fd, path)?.is_some() {
            if trunc {
                // Offloaded between the caller's check and the open: emptied already.
                self.discard(path, fd)?;
            } else {
                self.recall(path, fd)?;
            }
        }
        Ok(trunc && before.st_size > 0)
    }

    /// Checks that `st` can be truncated and makes a stub an ordinary file first: recalled
    /// for any size but zero, discarded (no fetch) for zero.
    fn prepare_truncate(
        &self,
        fd: BorrowedFd<'_>,
        st: &libc::stat,
        size: u64,
        path: &Path,
    ) -> Res<()> {
        match FileKind::from_mode(st.st_mode) {
            FileKind::Regular => {}
            FileKind::Directory => return Err(Errno::EISDIR),
            _ => return Err(Errno::EINVAL),
        }
        if self
            .stub_from(sys::getxattr_fd(fd, &self.stub_attr), path)?
            .is_none()
        {
            return Ok(());
        }
        if size == 0 {
            return self.discard(path, fd);
        }
        self.recall(path, fd)
    }

    /// Opens the existing entry `p` (an `O_PATH` descriptor; `st` its attributes) with
    /// `flags`. A truncating open of a stub must not truncate before the backend has emptied
    /// it (serialized with migrations: a recall in flight would write the old data back), and
    /// the file may become a stub at any moment before the open: so the file is opened
    /// without `O_TRUNC`, emptied if it is a stub, then truncated.
    fn open_existing(
        &self,
        p: BorrowedFd<'_>,
        st: &libc::stat,
        path: &Path,
        flags: i32,
    ) -> Res<OwnedFd> {
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let regular = FileKind::from_mode(st.st_mode) == FileKind::Regular;
        if flags & libc::O_TRUNC == 0 || !writable || !regular {
            // (`O_RDONLY | O_TRUNC` truncates too on Linux; no descriptor could do it after.)
            self.discard_if_truncating(p, st, path, flags)?;
            return sys::reopen(p, flags & OPEN_FLAGS);
        }
        let fd = sys::reopen(p, flags & OPEN_FLAGS & !libc::O_TRUNC)?;
        if self.stub_of_open(fd.as_fd(), path)?.is_some() {
            self.discard(path, fd.as_fd())?;
        }
        sys::ftruncate(fd.as_fd(), 0)?;
        Ok(fd)
    }

    /// An `O_TRUNC` open of a stub: emptied (without a fetch, serialized with migrations)
    /// before the open truncates anything.
    fn discard_if_truncating(
        &self,
        fd: BorrowedFd<'_>,
        st: &libc::stat,
        path: &Path,
        flags: i32,
    ) -> Res<()> {
        if flags & libc::O_TRUNC == 0 || FileKind::from_mode(st.st_mode) != FileKind::Regular {
            return Ok(());
        }
        match self.stub_from(sys::getxattr_fd(fd, &self.stub_attr), path)? {
            Some(_) => self.discard(path, fd),
            None => Ok(()),
        }
    }

    /// Asks for the stub at `path` to be emptied without a fetch; it must have lost its
    /// record after.
    fn discard(&self, path: &Path, fd: BorrowedFd<'_>) -> Res<()> {
        if let Err(e) = self.services.recall.discard(path) {
            tracing::warn!(path = %path.display(), "emptying a stub failed: {e}");
            return Err(e);
        }
        self.no_record_left(path, fd, "discard")
    }

    /// Recalls the handle's file first if it is a stub (before a change of its data).
    fn recall_if_stub(&self, h: &Handle) -> Res<()> {
        let path = self.handle_path(h);
        if self.stub_of_open(h.fd.as_fd(), &path)?.is_some() {
            self.recall(&path, h.fd.as_fd())?;
        }
        Ok(())
    }

    /// Asks for the stub at `path` to be recalled; it must have lost its record after.
    fn recall(&self, path: &Path, fd: BorrowedFd<'_>) -> Res<()> {
        if let Err(e) = self.services.recall.recall(path) {
            tracing::warn!(path = %path.display(), "recall before a change failed: {e}");
            return Err(e);
        }
        self.no_record_left(path, fd, "recall")
    }

    fn no_record_left(&self, path: &Path, fd: BorrowedFd<'_>, what: &str) -> Res<()> {
        match self.stub_from(sys::getxattr_fd(fd, &self.stub_attr), path)? {
            None => Ok(()),
            Some(_) => {
                tracing::warn!(
                    path = %path.display(),
                    "{what} reported success but the stub record is still there"
                );
                Err(Errno::EIO)
            }
        }
    }

    fn stub_of_open(&self, fd: BorrowedFd<'_>, path: &Path) -> Res<Option<StubRecord>> {
        self.stub_from(sys::fgetxattr(fd, &self.stub_attr), path)
    }

    /// The stub record in an attribute read: none if absent or if the filesystem has no
    /// extended attributes; a record that does not decode is EIO (never guessed at).
    fn stub_from(&self, raw: Res<Vec<u8>>, path: &Path) -> Res<Option<StubRecord>> {
        match raw {
            Ok(bytes) => stub::decode(&bytes).map(Some).map_err(|m| {
                tracing::warn!(path = %path.display(), "corrupt stub record: {m}");
                Errno::EIO
            }),
            Err(Errno::ENODATA) | Err(Errno::EOPNOTSUPP) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn is_stub_attr(&self, name: &CStr) -> bool {
        name == self.stub_attr.as_c_str()
    }

    fn report(&self, kind: ChangeKind, path: &Path, new_path: Option<&Path>) {
        self.services.changes.changed(kind, path, new_path);
    }

    fn dir_entry(&self, h: &Handle, e: &RawEntry) -> DirEntry {
        let b = e.name.as_bytes();
        let ino = {
            let t = self.table();
            if b == b"." {
                h.ino
            } else if b == b".." {
                t.parent(h.ino)
            } else {
                t.child(h.ino, &e.name).unwrap_or(e.ino)
            }
        };
        let kind = FileKind::from_dirent(e.d_type)
            .or_else(|| {
                let c = sys::cstring(b).ok()?;
                let st = sys::lstatat(h.fd.as_fd(), &c).ok()?;
                Some(FileKind::from_mode(st.st_mode))
            })
            .unwrap_or(FileKind::Regular);
        DirEntry {
            ino,
            offset: e.off,
            kind,
            name: e.name.clone(),
        }
    }

    /// Walks a directory stream from `offset`, handing entries to `each` until it is full.
    fn list(
        &self,
        fh: u64,
        offset: i64,
        mut each: impl FnMut(&Handle, &RawEntry) -> Res<Step>,
    ) -> Res<()> {
        let h = self.handle(fh)?;
        let Some(dir) = &h.dir else {
            return Err(Errno::ENOTDIR);
        };
        let mut s = dir.lock().unwrap_or_else(PoisonError::into_inner);
        if s.at != offset {
            sys::lseek_set(h.fd.as_fd(), offset)?;
            s.pending.clear();
            s.at = offset;
            s.end = false;
        }
        loop {
            if s.pending.is_empty() {
                if s.end {
                    return Ok(());
                }
                let mut buf = vec![0u8; DIRENT_BUF];
                let n = sys::getdents(h.fd.as_fd(), &mut buf)?;
                parse_dirents(buf.get(..n).unwrap_or_default(), &mut s.pending);
                if s.pending.is_empty() {
                    s.end = true;
                    return Ok(());
                }
            }
            let Some(e) = s.pending.front() else {
                continue;
            };
            let off = e.off;
            match each(&h, e)? {
                Step::Full => return Ok(()),
                Step::Taken | Step::Skipped => {
                    s.at = off;
                    s.pending.pop_front();
                }
            }
        }
    }
}

/// Resolution failures that mean "not (or no longer) at this path".
fn is_gone(e: Errno) -> bool {
    matches!(
        e.0,
        libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EXDEV
    )
}

/// What `open` accepts: regular files and directories. A symlink is ELOOP (the kernel
/// resolves symlinks itself); special files are opened by the kernel, never through the
/// core: EINVAL.
fn openable(st: &libc::stat) -> Res<()> {
    match FileKind::from_mode(st.st_mode) {
        FileKind::Regular | FileKind::Directory => Ok(()),
        FileKind::Symlink => Err(Errno::ELOOP),
        _ => Err(Errno::EINVAL),
    }
}

/// A regular file with fewer blocks than its size needs: possibly a stub (or just sparse).
fn looks_released(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
        && st.st_size > 0
        && (st.st_blocks as i128) * 512 < st.st_size as i128
}

fn attr(ino: u64, st: &libc::stat) -> Attr {
    Attr {
        ino,
        size: u64::try_from(st.st_size).unwrap_or(0),
        blocks: u64::try_from(st.st_blocks).unwrap_or(0),
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        mode: st.st_mode,
        nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: u32::try_from(st.st_rdev).unwrap_or(0),
        blksize: u32::try_from(st.st_blksize).unwrap_or(4096),
    }
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    let nsec = u32::try_from(nsec).unwrap_or(0).min(999_999_999);
    let t = if sec >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(sec.unsigned_abs(), nsec))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(sec.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nsec))))
    };
    t.unwrap_or(UNIX_EPOCH)
}

fn timespec(t: Option<TimeSet>) -> libc::timespec {
    let (tv_sec, tv_nsec) = match t {
        None => (0, libc::UTIME_OMIT),
        Some(TimeSet::Now) => (0, libc::UTIME_NOW),
        Some(TimeSet::At(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                i64::from(d.subsec_nanos()),
            ),
            Err(before) => {
                let d = before.duration();
                let secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                match d.subsec_nanos() {
                    0 => (secs, 0),
                    n => (secs - 1, 1_000_000_000 - i64::from(n)),
                }
            }
        },
    };
    libc::timespec { tv_sec, tv_nsec }
}

/// Appends the `linux_dirent64` records of `buf`; a malformed record ends the parse.
fn parse_dirents(buf: &[u8], out: &mut VecDeque<RawEntry>) {
    const HEAD: usize = 19; // d_ino u64, d_off i64, d_reclen u16, d_type u8
    let mut pos: usize = 0;
    while let Some(rec) = buf.get(pos..pos.saturating_add(HEAD)) {
        let word = |r: std::ops::Range<usize>| rec.get(r).and_then(|b| <[u8; 8]>::try_from(b).ok());
        let (Some(ino), Some(off), Some(reclen), Some(&d_type)) = (
            word(0..8).map(u64::from_ne_bytes),
            word(8..16).map(i64::from_ne_bytes),
            rec.get(16..18)
                .and_then(|b| <[u8; 2]>::try_from(b).ok())
                .map(|b| usize::from(u16::from_ne_bytes(b))),
            rec.get(18),
        ) else {
            return;
        };
        let Some(name) = buf.get(pos + HEAD..pos.saturating_add(reclen)) else {
            return;
        };
        if reclen < HEAD {
            return;
        }
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        out.push_back(RawEntry {
            ino,
            off,
            d_type,
            name: OsString::from_vec(name.to_vec()),
        });
        pos += reclen;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::mount::{Changes, Recall, StubData, ROOT_INO};

    struct Nothing;
    impl StubData for Nothing {
        fn read(&self, _: &Path, _: &StubRecord, _: u64, _: usize) -> Result<Vec<u8>, Errno> {
            Err(Errno::EIO)
        }
    }
    impl Recall for Nothing {
        fn recall(&self, _: &Path) -> Result<(), Errno> {
            Err(Errno::EIO)
        }
        fn discard(&self, _: &Path) -> Result<(), Errno> {
            Err(Errno::EIO)
        }
    }
    impl Changes for Nothing {
        fn changed(&self, _: ChangeKind, _: &Path, _: Option<&Path>) {}
    }

    fn core(root: &Path) -> Core {
        let n = Arc::new(Nothing);
        let services = Services {
            stub_data: n.clone(),
            recall: n.clone(),
            changes: n,
        };
        Core::new(root, CoreConfig::default(), services).unwrap()
    }

    /// Records the write caps the core asks for; refuses files named `busy`.
    #[derive(Default)]
    struct Caps(Mutex<Vec<String>>);
    impl crate::mount::WriteCaps for Caps {
        fn opening(&self, rel: &Path, ino: u64) -> Result<(), Errno> {
            if rel.ends_with("busy") {
                return Err(Errno(libc::EAGAIN));
            }
            self.0
                .lock()
                .unwrap()
                .push(format!("open {} {ino}", rel.display()));
            Ok(())
        }
        fn closed(&self, ino: u64) {
            self.0.lock().unwrap().push(format!("close {ino}"));
        }
    }

    #[test]
    fn opens_for_writing_take_write_caps_and_closes_give_them_back() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a"), b"x").unwrap();
        std::fs::write(tmp.path().join("busy"), b"x").unwrap();
        let ino = std::fs::metadata(tmp.path().join("a")).unwrap().ino();
        let c = core(tmp.path());
        let caps = Arc::new(Caps::default());
        c.set_write_caps(caps.clone());
        let a = c.lookup(ROOT_INO, OsStr::new("a")).unwrap().ino;
        let r = c.open(a, libc::O_RDONLY).unwrap();
        let w = c.open(a, libc::O_RDWR).unwrap();
        c.release(r).unwrap();
        c.release(w).unwrap();
        let (_, created) = c
            .create(ROOT_INO, OsStr::new("new"), 0o644, libc::O_WRONLY)
            .unwrap();
        let new_ino = std::fs::metadata(tmp.path().join("new")).unwrap().ino();
        c.release(created).unwrap();
        // A refused cap fails the open with its errno.
        let busy = c.lookup(ROOT_INO, OsStr::new("busy")).unwrap().ino;
        assert_eq!(
            c.open(busy, libc::O_WRONLY).err(),
            Some(Errno(libc::EAGAIN))
        );
        assert_eq!(
            *caps.0.lock().unwrap(),
            vec![
                format!("open a {ino}"),
                format!("close {ino}"),
                format!("open new {new_ino}"),
                format!("close {new_ino}"),
            ]
        );
    }

    #[test]
    fn readdirplus_counts_a_lookup_only_for_entries_the_shell_took() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..10 {
            std::fs::write(tmp.path().join(format!("f{i}")), b"x").unwrap();
        }
        let c = core(tmp.path());
        let fh = c.opendir(ROOT_INO).unwrap();
        let mut taken: Vec<DirEntry> = Vec::new();
        let mut refused = None;
        c.readdirplus(fh, 0, |e, a| {
            assert_eq!(e.ino, a.ino);
            if taken.len() == 7 {
                refused = Some(e.clone());
                return true;
            }
            taken.push(e.clone());
            false
        })
        .unwrap();
        let refused = refused.unwrap();
        {
            let t = c.table();
            for e in taken.iter().filter(|e| e.name != "." && e.name != "..") {
                assert_eq!(t.lookups(e.ino), Some(1), "{:?}", e.name);
            }
            if refused.name != "." && refused.name != ".." {
                assert_eq!(t.lookups(refused.ino), None, "refused entry not counted");
            }
        }
        // The refused entry comes first when the listing resumes.
        let mut next = Vec::new();
        c.readdirplus(fh, taken.last().unwrap().offset, |e, _| {
            next.push(e.name.clone());
            false
        })
        .unwrap();
        assert_eq!(next.first(), Some(&refused.name));
        assert_eq!(taken.len() + next.len(), 12);
        c.releasedir(fh).unwrap();
        assert_eq!(c.releasedir(fh), Err(Errno::EBADF));
    }

    #[test]
    fn the_core_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Core>();
    }

    #[test]
    fn malformed_dirent_buffers_end_the_parse_without_panicking() {
        let mut out = VecDeque::new();
        parse_dirents(&[1, 2, 3], &mut out);
        let mut rec = vec![0u8; 24];
        rec[16] = 200; // reclen past the end
        parse_dirents(&rec, &mut out);
        rec[16] = 3; // reclen shorter than the header
        parse_dirents(&rec, &mut out);
        assert!(out.is_empty());
        rec[16] = 24;
        rec[19] = b'a';
        parse_dirents(&rec, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].name, "a");
    }

    #[test]
    fn times_before_the_epoch_survive_both_conversions() {
        let t = time(-2, 250_000_000);
        assert_eq!(
            UNIX_EPOCH.duration_since(t).unwrap(),
            Duration::from_millis(1750)
        );
        let ts = timespec(Some(TimeSet::At(t)));
        assert_eq!((ts.tv_sec, ts.tv_nsec), (-2, 250_000_000));
        assert_eq!(timespec(None).tv_nsec, libc::UTIME_OMIT);
        assert_eq!(timespec(Some(TimeSet::Now)).tv_nsec, libc::UTIME_NOW);
    }
}
