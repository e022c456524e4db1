//! Thin wrappers over the libc calls the mount core makes, each returning the raw errno.
//!
//! Two rules keep the share's own symlinks from ever leading the core outside the share:
//! - a path is only ever resolved below the share-root fd, with no symlink followed on the way
//!   ([`open_beneath`]: `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, or a walk of
//!   `O_NOFOLLOW | O_DIRECTORY` opens where `openat2` is missing), and what it yields is an
//!   `O_PATH` descriptor of the entry itself, never of what a symlink points at;
//! - everything done to an existing entry goes through that descriptor: `f*`/`*at(fd, "",
//!   AT_EMPTY_PATH)` calls, or the calls that take a path on `/proc/self/fd/N`. That magic
//!   link lands on the very inode the descriptor holds (a symlink stays the symlink; the
//!   kernel does not follow it further), so no name is looked up twice.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, Ordering};

use super::Errno;

pub(crate) type Res<T> = Result<T, Errno>;

/// Set once `openat2` turned out to be missing (ENOSYS): resolve by walking from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Largest extended attribute value or list we hand out (the Linux limit, XATTR_SIZE_MAX).
const XATTR_MAX: usize = 65536;

fn zero(r: libc::c_int) -> Res<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

fn len(r: isize) -> Res<usize> {
    usize::try_from(r).map_err(|_| Errno::last())
}

fn owned(fd: libc::c_int) -> Res<OwnedFd> {
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a non-negative return from open/openat/dup is a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Retries a call interrupted by a signal.
fn again<T>(mut f: impl FnMut() -> Res<T>) -> Res<T> {
    loop {
        match f() {
            Err(Errno(libc::EINTR)) => continue,
            r => return r,
        }
    }
}

/// A C string of raw bytes; a NUL inside is EINVAL.
pub(crate) fn cstring(bytes: &[u8]) -> Res<CString> {
    CString::new(bytes).map_err(|_| Errno::EINVAL)
}

/// `/proc/self/fd/N`: the magic link to exactly the inode `fd` holds.
pub(crate) fn proc_path(fd: BorrowedFd<'_>) -> Res<CString> {
    cstring(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())
}

/// An `O_PATH` descriptor of the entry at `rel` below `root` (`rel` empty: root itself). No
/// symlink is followed, the last component's included: a symlink yields the symlink. A
/// symlink on the way is refused (ELOOP with `openat2`, ENOTDIR from the walk), so is
/// anything that would climb out of `root` (EXDEV).
pub(crate) fn open_beneath(root: BorrowedFd<'_>, rel: &Path) -> Res<OwnedFd> {
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        match openat2_beneath(root, rel) {
            Err(Errno(libc::ENOSYS)) => NO_OPENAT2.store(true, Ordering::Relaxed),
            r => return r,
        }
    }
    walk_beneath(root, rel)
}

fn openat2_beneath(root: BorrowedFd<'_>, rel: &Path) -> Res<OwnedFd> {
    let bytes = if rel.as_os_str().is_empty() {
        b".".as_slice()
    } else {
        rel.as_os_str().as_bytes()
    };
    let p = cstring(bytes)?;
    // SAFETY: open_how is plain old data; all-zero is its documented "no options" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: p is NUL-terminated, how is a live open_how and its size is passed with it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            p.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    owned(libc::c_int::try_from(r).map_err(|_| Errno::EIO)?)
}

/// The same as [`open_beneath`] one component at a time, for kernels without `openat2`.
pub(crate) fn walk_beneath(root: BorrowedFd<'_>, rel: &Path) -> Res<OwnedFd> {
    let mut names = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => names.push(n),
            // Table paths are built from validated names only; anything else is a bug we
            // refuse rather than follow.
            _ => return Err(Errno::EXDEV),
        }
    }
    let Some((last, dirs)) = names.split_last() else {
        return openat(root, c".", libc::O_PATH | libc::O_DIRECTORY, 0);
    };
    let mut cur: Option<OwnedFd> = None;
    for d in dirs {
        let at = cur.as_ref().map_or(root, |f| f.as_fd());
        let next = openat(
            at,
            &cstring(d.as_bytes())?,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
        cur = Some(next);
    }
    let at = cur.as_ref().map_or(root, |f| f.as_fd());
    openat(
        at,
        &cstring(last.as_bytes())?,
        libc::O_PATH | libc::O_NOFOLLOW,
        0,
    )
}

/// `openat(dir, name, flags | O_CLOEXEC, mode)`.
pub(crate) fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mode: u32) -> Res<OwnedFd> {
    again(|| {
        // SAFETY: name is NUL-terminated; dir is open for the borrow.
        owned(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        })
    })
}

/// Opens the inode `fd` holds (usually an `O_PATH` descriptor) for real I/O with `flags`.
pub(crate) fn reopen(fd: BorrowedFd<'_>, flags: i32) -> Res<OwnedFd> {
    let p = proc_path(fd)?;
    // SAFETY: p is NUL-terminated.
    again(|| owned(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) }))
}

pub(crate) fn fstat(fd: BorrowedFd<'_>) -> Res<libc::stat> {
    // SAFETY: stat is plain old data; the kernel fills it on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open for the borrow (O_PATH descriptors may be fstat'ed); st is live.
    zero(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub(crate) fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> Res<libc::stat> {
    // SAFETY: as in fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: name NUL-terminated, dir open for the borrow, st live.
    zero(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

pub(crate) fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> Res<()> {
    // SAFETY: name NUL-terminated, dir open for the borrow.
    zero(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) })
}

/// A FIFO, socket or device node (regular files come from `create`).
pub(crate) fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> Res<()> {
    // SAFETY: `name` is NUL-terminated; `dir` is a live descriptor.
    zero(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) })
}

pub(crate) fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> Res<()> {
    // SAFETY: both strings NUL-terminated, dir open for the borrow.
    zero(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

/// A new name `dir/name` for the inode `fd` holds (through `/proc`, which needs no
/// CAP_DAC_READ_SEARCH unlike `AT_EMPTY_PATH`; a symlink is linked, not its target).
pub(crate) fn link_fd(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &CStr) -> Res<()> {
    let p = proc_path(fd)?;
    // SAFETY: strings NUL-terminated, dir open for the borrow.
    zero(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            p.as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
}

pub(crate) fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> Res<()> {
    // SAFETY: name NUL-terminated, dir open for the borrow.
    zero(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

pub(crate) fn renameat2(
    dir: BorrowedFd<'_>,
    name: &CStr,
    new_dir: BorrowedFd<'_>,
    new_name: &CStr,
    flags: u32,
) -> Res<()> {
    // SAFETY: names NUL-terminated, both dirs open for the borrow. The raw syscall avoids
    // depending on the C library's wrapper.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            new_dir.as_raw_fd(),
            new_name.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// The target of the symlink `fd` holds (`O_PATH | O_NOFOLLOW` descriptor).
pub(crate) fn readlink_fd(fd: BorrowedFd<'_>) -> Res<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: the empty path with an O_PATH symlink fd reads that symlink; buf is live.
        let n = len(unsafe {
            libc::readlinkat(
                fd.as_raw_fd(),
                c"".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        })?;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        if buf.len() >= 1 << 20 {
            return Err(Errno(libc::ENAMETOOLONG));
        }
        buf.resize(buf.len() * 4, 0);
    }
}

pub(crate) fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> Res<()> {
    let p = proc_path(fd)?;
    // SAFETY: p NUL-terminated.
    zero(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) })
}

pub(crate) fn chown_fd(fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> Res<()> {
    // (uid_t)-1 leaves that id alone.
    let uid = uid.unwrap_or(u32::MAX);
    let gid = gid.unwrap_or(u32::MAX);
    // SAFETY: the empty path with AT_EMPTY_PATH names fd itself (O_PATH is fine), no follow.
    zero(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

pub(crate) fn utimens_fd(fd: BorrowedFd<'_>, times: &[libc::timespec; 2]) -> Res<()> {
    let p = proc_path(fd)?;
    // SAFETY: p NUL-terminated, times is two live timespecs.
    zero(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) })
}

/// `truncate` of the inode `fd` holds: the permission check of truncate(2), and EISDIR /
/// EINVAL for what is not a regular file.
pub(crate) fn truncate_fd(fd: BorrowedFd<'_>, size: u64) -> Res<()> {
    let p = proc_path(fd)?;
    let size = libc::off_t::try_from(size).map_err(|_| Errno(libc::EFBIG))?;
    // SAFETY: p NUL-terminated.
    again(|| zero(unsafe { libc::truncate(p.as_ptr(), size) }))
}

pub(crate) fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> Res<()> {
    let size = libc::off_t::try_from(size).map_err(|_| Errno(libc::EFBIG))?;
    // SAFETY: fd open for the borrow.
    again(|| zero(unsafe { libc::ftruncate(fd.as_raw_fd(), size) }))
}

pub(crate) fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, length: u64) -> Res<()> {
    let offset = libc::off_t::try_from(offset).map_err(|_| Errno(libc::EFBIG))?;
    let length = libc::off_t::try_from(length).map_err(|_| Errno(libc::EFBIG))?;
    // SAFETY: fd open for the borrow.
    again(|| zero(unsafe { libc::fallocate(fd.as_raw_fd(), mode, offset, length) }))
}

pub(crate) fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> Res<usize> {
    let offset = libc::off_t::try_from(offset).map_err(|_| Errno::EINVAL)?;
    // SAFETY: buf is live and writable for its length; fd open for the borrow.
    again(|| {
        len(unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), offset) })
    })
}

pub(crate) fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> Res<usize> {
    let offset = libc::off_t::try_from(offset).map_err(|_| Errno::EINVAL)?;
    // SAFETY: buf is live for its length; fd open for the borrow.
    again(|| len(unsafe { libc::pwrite(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), offset) }))
}

pub(crate) fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> Res<()> {
    // SAFETY: fd open for the borrow.
    again(|| {
        zero(unsafe {
            if datasync {
                libc::fdatasync(fd.as_raw_fd())
            } else {
                libc::fsync(fd.as_raw_fd())
            }
        })
    })
}

/// What `close(2)` of one of the application's descriptors would do to the file (write-back
/// errors, POSIX lock release) without closing ours: close a duplicate.
pub(crate) fn flush(fd: BorrowedFd<'_>) -> Res<()> {
    // SAFETY: fd open for the borrow; the duplicate is ours and closed right here.
    let dup = owned(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
    let raw = std::os::fd::IntoRawFd::into_raw_fd(dup);
    // SAFETY: raw is the duplicate we own; it is closed exactly once.
    zero(unsafe { libc::close(raw) })
}

pub(crate) fn fstatvfs(fd: BorrowedFd<'_>) -> Res<libc::statvfs> {
    // SAFETY: statvfs is plain old data.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: fd open for the borrow (O_PATH allowed), st live.
    zero(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

pub(crate) fn lseek_set(fd: BorrowedFd<'_>, offset: i64) -> Res<()> {
    // SAFETY: fd open for the borrow.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), offset, libc::SEEK_SET) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Raw `getdents64` records into `buf`; 0 at the end of the directory.
pub(crate) fn getdents(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Res<usize> {
    // SAFETY: buf is live and writable for its length; fd is an open directory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    usize::try_from(r).map_err(|_| Errno::last())
}

/// Reads a value (or a list, `get(None/Some(buf))`) whose size may change between the size
/// query and the read: retry on ERANGE a few times.
fn sized_read(mut get: impl FnMut(*mut libc::c_void, usize) -> isize) -> Res<Vec<u8>> {
    for _ in 0..8 {
        let need = len(get(std::ptr::null_mut(), 0))?;
        let mut buf = vec![0u8; need.clamp(1, XATTR_MAX)];
        match len(get(buf.as_mut_ptr().cast(), buf.len())) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno(libc::ERANGE)) if need < XATTR_MAX => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno(libc::ERANGE))
}

/// An attribute of the inode `fd` holds (any descriptor, O_PATH included).
pub(crate) fn getxattr_fd(fd: BorrowedFd<'_>, name: &CStr) -> Res<Vec<u8>> {
    let p = proc_path(fd)?;
    // SAFETY: strings NUL-terminated; the buffer pointer/length pair comes from sized_read.
    sized_read(|buf, n| unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), buf, n) })
}

/// The same through a descriptor open for I/O (no path lookup: the read/write fast path).
pub(crate) fn fgetxattr(fd: BorrowedFd<'_>, name: &CStr) -> Res<Vec<u8>> {
    // SAFETY: as above; fd open for the borrow.
    sized_read(|buf, n| unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), buf, n) })
}

pub(crate) fn setxattr_fd(fd: BorrowedFd<'_>, name: &CStr, value: &[u8], flags: i32) -> Res<()> {
    let p = proc_path(fd)?;
    // SAFETY: strings NUL-terminated; value live for the call.
    zero(unsafe {
        libc::setxattr(
            p.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
}

/// The NUL-separated attribute name list of the inode `fd` holds.
pub(crate) fn listxattr_fd(fd: BorrowedFd<'_>) -> Res<Vec<u8>> {
    let p = proc_path(fd)?;
    // SAFETY: p NUL-terminated; buffer pair from sized_read.
    sized_read(|buf, n| unsafe { libc::listxattr(p.as_ptr(), buf.cast(), n) })
}

pub(crate) fn removexattr_fd(fd: BorrowedFd<'_>, name: &CStr) -> Res<()> {
    let p = proc_path(fd)?;
    // SAFETY: strings NUL-terminated.
    zero(unsafe { libc::removexattr(p.as_ptr(), name.as_ptr()) })
}

/// `name` as one directory entry name: not empty, not `.` or `..`, no `/` or NUL.
pub(crate) fn entry_name(name: &OsStr) -> Res<CString> {
    let b = name.as_bytes();
    if b.is_empty() {
        return Err(Errno::ENOENT);
    }
    if b == b"." || b == b".." || b.contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    cstring(b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn both_resolvers_stay_beneath_the_root_and_follow_no_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::write(root.join("d/e/f"), b"x").unwrap();
        std::fs::create_dir(tmp.path().join("outside")).unwrap();
        std::fs::write(tmp.path().join("outside/secret"), b"s").unwrap();
        std::os::unix::fs::symlink("../outside", root.join("esc")).unwrap();
        std::os::unix::fs::symlink("d", root.join("ind")).unwrap();
        let rfd = std::fs::File::open(&root).unwrap();
        let r = rfd.as_fd();
        for resolve in [open_beneath, walk_beneath] {
            let f = resolve(r, Path::new("d/e/f")).unwrap();
            assert_eq!(fstat(f.as_fd()).unwrap().st_size, 1);
            let root_st = fstat(resolve(r, Path::new("")).unwrap().as_fd()).unwrap();
            assert_eq!(root_st.st_mode & libc::S_IFMT, libc::S_IFDIR);
            // The trailing symlink is the symlink itself.
            let l = resolve(r, Path::new("esc")).unwrap();
            assert_eq!(
                fstat(l.as_fd()).unwrap().st_mode & libc::S_IFMT,
                libc::S_IFLNK
            );
            // A symlink on the way is refused, whether it leads out or stays in.
            for p in ["esc/secret", "ind/e/f"] {
                let e = resolve(r, Path::new(p)).unwrap_err();
                assert!(e == Errno::ELOOP || e == Errno::ENOTDIR, "{p}: {e}");
            }
            assert_eq!(
                resolve(r, Path::new("d/missing")).unwrap_err(),
                Errno::ENOENT
            );
        }
        assert_eq!(
            walk_beneath(r, Path::new("d/../../outside")).unwrap_err(),
            Errno::EXDEV
        );
        assert!(open_beneath(r, Path::new("../outside/secret")).is_err());
    }

    #[test]
    fn entry_names_are_single_components() {
        assert!(entry_name(OsStr::new("a b")).is_ok());
        assert_eq!(entry_name(OsStr::new("")).unwrap_err(), Errno::ENOENT);
        for bad in [".", "..", "a/b", "/", "a\0b"] {
            assert_eq!(
                entry_name(OsStr::new(bad)).unwrap_err(),
                Errno::EINVAL,
                "{bad:?}"
            );
        }
    }
}
