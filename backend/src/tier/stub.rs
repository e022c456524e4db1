//! The east stub record (DESIGN 4.1) and the file-level calls around it: reading and writing
//! the record's extended attribute, releasing data with `fallocate(PUNCH_HOLE | KEEP_SIZE)`,
//! restoring the modification time, and the write lease that keeps writers out while a file's
//! data is released.
//!
//! A file is a stub because its stub record says so — never because of `st_blocks` or holes.
//! The record travels with the inode across renames and survives the loss of the catalog.
//!
//! Encoding: one format byte ([`STUB_FORMAT`]) then compact JSON. A record that does not
//! decode is reported as corrupt, never guessed at.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Current stub record format.
pub const STUB_FORMAT: u8 = 1;
/// Largest stub record we write or accept (ext4 keeps small xattrs in the inode).
pub const MAX_STUB_LEN: usize = 4000;

/// What identifies one version of a file's data: any write changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataVersion {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl DataVersion {
    pub fn of(md: &std::fs::Metadata) -> Self {
        Self {
            size: md.size(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        }
    }

    /// Same size and modification time: the data a stub stands for. (Writing the stub
    /// record and punching change the ctime, so a stub is compared without it.)
    pub fn same_data(&self, other: &Self) -> bool {
        self.size == other.size && self.mtime_ns == other.mtime_ns
    }
}

/// The stub record: "this file's data lives on west, here".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StubRecord {
    /// The gpair that offloaded the file.
    pub gpair: String,
    /// Its gpair value at the time (`LC,/local,RC,/bucket/prefix`).
    pub gpair_value: String,
    pub bucket: String,
    /// The west object key the data was uploaded to (the file may have been renamed since:
    /// the key of its current path comes first on recall, this one second).
    pub key: String,
    pub etag: String,
    /// Logical size and modification time of the data.
    pub size: u64,
    pub mtime_ns: i64,
    /// CRC32C of the whole data.
    pub crc32c: u32,
    /// The east data version that was uploaded.
    pub offloaded: DataVersion,
    pub offloaded_at_ms: i64,
}

impl StubRecord {
    pub fn checksum(&self) -> String {
        format_crc(self.crc32c)
    }
}

pub fn format_crc(crc: u32) -> String {
    format!("crc32c:{crc:08x}")
}

#[derive(Debug, thiserror::Error)]
pub enum StubError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: the stub record in {attr} is corrupt: {message}")]
    Corrupt {
        path: String,
        attr: String,
        message: String,
    },
}

pub fn encode(rec: &StubRecord) -> Vec<u8> {
    let mut out = vec![STUB_FORMAT];
    // A struct of strings and numbers: serialization cannot fail.
    out.extend(serde_json::to_vec(rec).unwrap_or_default());
    out
}

/// Decodes a stub record; the error says what is wrong with it.
pub fn decode(bytes: &[u8]) -> Result<StubRecord, String> {
    if bytes.len() > MAX_STUB_LEN {
        return Err(format!(
            "{} bytes, more than the {MAX_STUB_LEN} a stub record may have",
            bytes.len()
        ));
    }
    match bytes.split_first() {
        Some((&STUB_FORMAT, rest)) => {
            let rec: StubRecord = serde_json::from_slice(rest).map_err(|e| e.to_string())?;
            if rec.gpair.is_empty() || rec.bucket.is_empty() || rec.key.is_empty() {
                return Err("gpair, bucket and key must not be empty".into());
            }
            if rec.offloaded.size != rec.size {
                return Err(format!(
                    "size {} differs from the offloaded data version's {}",
                    rec.size, rec.offloaded.size
                ));
            }
            Ok(rec)
        }
        Some((v, _)) => Err(format!(
            "format {v} is not supported (this build knows {STUB_FORMAT})"
        )),
        None => Err("empty".into()),
    }
}

fn cstr(s: &str) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cpath(p: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn xattr_result(r: isize) -> io::Result<Option<usize>> {
    if r >= 0 {
        return Ok(Some(r as usize));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENODATA) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// Reads a raw attribute value; `None` when absent. `get` is called with (buf ptr, len).
fn read_xattr(
    mut get: impl FnMut(*mut libc::c_void, usize) -> isize,
) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 512];
    loop {
        match xattr_result(get(buf.as_mut_ptr().cast(), buf.len())) {
            Ok(Some(n)) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Ok(None) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 65536 => {
                buf.resize(buf.len() * 4, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

fn parse(path: &Path, attr: &str, raw: Option<Vec<u8>>) -> Result<Option<StubRecord>, StubError> {
    match raw {
        None => Ok(None),
        Some(bytes) => decode(&bytes)
            .map(Some)
            .map_err(|message| StubError::Corrupt {
                path: path.display().to_string(),
                attr: attr.to_owned(),
                message,
            }),
    }
}

fn io_err(path: &Path, source: io::Error) -> StubError {
    StubError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Whether an I/O error means "nothing at that path" (as opposed to "could not look").
pub fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// The stub record of the file at `path`, if there is a file there: a path with nothing at it
/// has none (`Ok(None)`); an unreadable one is an error.
pub fn read_path_if_present(path: &Path, attr: &str) -> Result<Option<StubRecord>, StubError> {
    match read_path(path, attr) {
        Err(StubError::Io { source, .. }) if is_gone(&source) => Ok(None),
        r => r,
    }
}

/// The stub record of the file at `path` (not following symlinks, not opening the file).
pub fn read_path(path: &Path, attr: &str) -> Result<Option<StubRecord>, StubError> {
    let p = cpath(path).map_err(|e| io_err(path, e))?;
    let a = cstr(attr).map_err(|e| io_err(path, e))?;
    // SAFETY: p and a are NUL-terminated; the buffer pointer and length come from a live Vec.
    let raw = read_xattr(|buf, len| unsafe { libc::lgetxattr(p.as_ptr(), a.as_ptr(), buf, len) })
        .map_err(|e| io_err(path, e))?;
    parse(path, attr, raw)
}

/// The stub record of an open file.
pub fn read_fd(file: &File, path: &Path, attr: &str) -> Result<Option<StubRecord>, StubError> {
    let a = cstr(attr).map_err(|e| io_err(path, e))?;
    let fd = file.as_raw_fd();
    // SAFETY: fd is open for the borrow of `file`; a is NUL-terminated.
    let raw = read_xattr(|buf, len| unsafe { libc::fgetxattr(fd, a.as_ptr(), buf, len) })
        .map_err(|e| io_err(path, e))?;
    parse(path, attr, raw)
}

/// Writes the stub record onto an open file (not yet durable: fsync after).
pub fn write_fd(file: &File, attr: &str, rec: &StubRecord) -> io::Result<()> {
    let bytes = encode(rec);
    if bytes.len() > MAX_STUB_LEN {
        return Err(io::Error::other(format!(
            "the stub record would take {} bytes (key too long for an xattr)",
            bytes.len()
        )));
    }
    let a = cstr(attr)?;
    // SAFETY: fd open for the borrow; a NUL-terminated; bytes live for the call.
    let r = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            a.as_ptr(),
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes the stub record from an open file; an absent record is not an error.
pub fn remove_fd(file: &File, attr: &str) -> io::Result<()> {
    let a = cstr(attr)?;
    // SAFETY: fd open for the borrow; a NUL-terminated.
    let r = unsafe { libc::fremovexattr(file.as_raw_fd(), a.as_ptr()) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENODATA) {
        Ok(())
    } else {
        Err(e)
    }
}

/// Releases the data of `[0, len)` while keeping the size. The range is rounded up to the
/// filesystem block, so the partial last block goes too (past the end of the file there is
/// nothing to keep).
pub fn punch(file: &File, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let block = file.metadata()?.blksize().max(512);
    let len = len.div_ceil(block).saturating_mul(block);
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: fd open for the borrow.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            len,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the modification time (the access time is left alone).
/// Whether `file` holds no data at all (every byte a hole): `SEEK_DATA` from 0 finds none.
/// `None` where the filesystem cannot tell.
pub fn all_holes(file: &File) -> Option<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: `file` is an open descriptor for the whole call; lseek moves only its offset.
    let r = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_DATA) };
    if r >= 0 {
        return Some(false);
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::ENXIO) => Some(true),
        _ => None,
    }
}

pub fn set_mtime(file: &File, mtime_ns: i64) -> io::Result<()> {
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000),
        },
    ];
    // SAFETY: fd open for the borrow; times is a valid array of two timespecs.
    let r = unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A write lease on an open file (`F_SETLEASE F_WRLCK`): granted only while nobody else has
/// the file open; while held, another open waits until it is released. Dropping releases it.
pub struct WriteLease<'a> {
    file: &'a File,
}

/// Why a lease was not granted.
pub enum LeaseRefused {
    /// Someone else has the file open.
    Busy,
    /// The filesystem does not support leases (the caller falls back to the data-version
    /// check alone).
    Unsupported(io::Error),
    Failed(io::Error),
}

impl<'a> WriteLease<'a> {
    pub fn take(file: &'a File) -> Result<Self, LeaseRefused> {
        // SAFETY: fd open for the borrow.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) };
        if r == 0 {
            return Ok(Self { file });
        }
        let e = io::Error::last_os_error();
        Err(match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EBUSY) => LeaseRefused::Busy,
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
                LeaseRefused::Unsupported(e)
            }
            _ => LeaseRefused::Failed(e),
        })
    }
}

impl Drop for WriteLease<'_> {
    fn drop(&mut self) {
        // SAFETY: fd open for the borrow.
        unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
    }
}

/// Ignores SIGIO: a lease break is signalled to the holder, and its default action would end
/// the process. We hold leases for milliseconds and check for writers ourselves.
pub fn ignore_lease_break_signal() {
    // SAFETY: installing SIG_IGN for SIGIO has no preconditions.
    unsafe {
        libc::signal(libc::SIGIO, libc::SIG_IGN);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    fn rec() -> StubRecord {
        StubRecord {
            gpair: "p".into(),
            gpair_value: "LC_1,/e,RC_2,/b".into(),
            bucket: "b".into(),
            key: "dir/f".into(),
            etag: "abc".into(),
            size: 3,
            mtime_ns: 1_600_000_000_123_456_789,
            crc32c: 0xdead_beef,
            offloaded: DataVersion {
                size: 3,
                mtime_ns: 1_600_000_000_123_456_789,
                ctime_ns: 5,
            },
            offloaded_at_ms: 9,
        }
    }

    #[test]
    fn records_round_trip_and_garbage_is_named() {
        let r = rec();
        assert_eq!(decode(&encode(&r)).unwrap(), r);
        assert!(decode(b"").unwrap_err().contains("empty"));
        assert!(decode(&[7, b'{', b'}']).unwrap_err().contains("format 7"));
        assert!(decode(&[STUB_FORMAT, b'x']).is_err());
        assert!(decode(&[STUB_FORMAT, b'{', b'}']).is_err());
        let mut bad = r.clone();
        bad.size = 4;
        assert!(decode(&encode(&bad)).unwrap_err().contains("differs"));
        assert!(decode(&vec![STUB_FORMAT; MAX_STUB_LEN + 1])
            .unwrap_err()
            .contains("more than"));
    }

    #[test]
    fn stub_on_a_real_file_keeps_size_and_mtime_and_drops_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let before = std::fs::metadata(&path).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        assert!(read_fd(&file, &path, "user.gpair").unwrap().is_none());
        let mut r = rec();
        r.size = 1 << 20;
        r.offloaded.size = 1 << 20;
        write_fd(&file, "user.gpair", &r).unwrap();
        punch(&file, 1 << 20).unwrap();
        let mt = DataVersion::of(&before).mtime_ns;
        set_mtime(&file, mt).unwrap();
        file.sync_all().unwrap();
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(after.len(), 1 << 20);
        assert_eq!(DataVersion::of(&after).mtime_ns, mt);
        assert!(
            after.blocks() < before.blocks() / 8,
            "{} blocks",
            after.blocks()
        );
        assert_eq!(read_path(&path, "user.gpair").unwrap(), Some(r));
        remove_fd(&file, "user.gpair").unwrap();
        remove_fd(&file, "user.gpair").unwrap();
        assert!(read_path(&path, "user.gpair").unwrap().is_none());
        // Garbage in the attribute is an error naming the file, not a panic.
        let a = std::ffi::CString::new("user.gpair").unwrap();
        // SAFETY: valid fd and NUL-terminated name; the value slice lives for the call.
        unsafe {
            libc::fsetxattr(
                file.as_raw_fd(),
                a.as_ptr(),
                b"\x01garbage".as_ptr().cast(),
                8,
                0,
            )
        };
        let err = read_path(&path, "user.gpair").unwrap_err().to_string();
        assert!(err.contains("corrupt") && err.contains("/f"), "{err}");
    }

    #[test]
    fn a_punched_file_is_all_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 64 << 10]).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        assert_eq!(all_holes(&f), Some(false));
        punch(&f, 64 << 10).unwrap();
        assert_eq!(all_holes(&f), Some(true));
        assert_eq!(f.metadata().unwrap().len(), 64 << 10);
    }

    #[test]
    fn a_write_lease_is_refused_while_someone_else_has_the_file_open() {
        ignore_lease_break_signal();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let mine = File::open(&path).unwrap();
        {
            let other = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            assert!(matches!(WriteLease::take(&mine), Err(LeaseRefused::Busy)));
            drop(other);
        }
        let lease = WriteLease::take(&mine);
        assert!(lease.is_ok());
    }
}
