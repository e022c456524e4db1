//! The mount core without a mount: a scripted pass over every operation on a temp share,
//! compared step by step with the same syscalls on a plain temp directory (results, modes,
//! times, errnos); inode numbers across renames; readdir offsets; the stub record attribute
//! hidden; symlinks that would lead outside the share refused; the change reports; and stubs
//! read from a fake west and recalled exactly when the contract says.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::OpenOptions;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gpair_backend::mount::{
    Attr, ChangeKind, Changes, Core, CoreConfig, DirEntry, Errno, FileKind, Recall, Services,
    SetAttr, StubData, TimeSet, ROOT_INO,
};
use gpair_backend::tier::stub::{self, DataVersion, StubRecord};

const ATTR: &str = "user.gpair";

// ---- fakes ------------------------------------------------------------------------------

type Change = (ChangeKind, PathBuf, Option<PathBuf>);

#[derive(Default)]
struct Recorder(Mutex<Vec<Change>>);

impl Changes for Recorder {
    fn changed(&self, kind: ChangeKind, path: &Path, new_path: Option<&Path>) {
        let c = (kind, path.to_owned(), new_path.map(Path::to_owned));
        self.0.lock().unwrap().push(c);
    }
}

impl Recorder {
    fn take(&self) -> Vec<Change> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[derive(Clone, Copy, PartialEq)]
enum RecallMode {
    /// Fetch the data back into the inode and drop the stub record, like the backend.
    Restore,
    Fail(i32),
    /// Claim success and do nothing.
    LeaveStub,
}

/// West for the core: objects by key, and every call it got.
struct FakeWest {
    share: PathBuf,
    objects: Mutex<HashMap<String, Vec<u8>>>,
    reads: Mutex<Vec<(PathBuf, u64, usize)>>,
    recalls: Mutex<Vec<PathBuf>>,
    discards: Mutex<Vec<PathBuf>>,
    mode: Mutex<RecallMode>,
    short_reads: Mutex<bool>,
}

impl FakeWest {
    fn reads(&self) -> Vec<(PathBuf, u64, usize)> {
        self.reads.lock().unwrap().clone()
    }

    fn recalls(&self) -> Vec<PathBuf> {
        self.recalls.lock().unwrap().clone()
    }

    fn set_mode(&self, m: RecallMode) {
        *self.mode.lock().unwrap() = m;
    }
}

impl StubData for FakeWest {
    fn read(
        &self,
        rel_path: &Path,
        stub: &StubRecord,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, Errno> {
        self.reads
            .lock()
            .unwrap()
            .push((rel_path.to_owned(), offset, len));
        let objects = self.objects.lock().unwrap();
        let data = objects.get(&stub.key).ok_or(Errno::EIO)?;
        let start = usize::try_from(offset).unwrap();
        let mut out = data[start..start + len].to_vec();
        if *self.short_reads.lock().unwrap() {
            out.pop();
        }
        Ok(out)
    }
}

impl Recall for FakeWest {
    fn discard(&self, rel_path: &Path) -> Result<(), Errno> {
        self.discards.lock().unwrap().push(rel_path.to_owned());
        if let RecallMode::Fail(e) = *self.mode.lock().unwrap() {
            return Err(Errno(e));
        }
        let path = self.share.join(rel_path);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        if stub::read_fd(&f, &path, ATTR).unwrap().is_some() {
            f.set_len(0).unwrap();
            stub::remove_fd(&f, ATTR).unwrap();
        }
        Ok(())
    }

    fn recall(&self, rel_path: &Path) -> Result<(), Errno> {
        self.recalls.lock().unwrap().push(rel_path.to_owned());
        match *self.mode.lock().unwrap() {
            RecallMode::Fail(e) => Err(Errno(e)),
            RecallMode::LeaveStub => Ok(()),
            RecallMode::Restore => {
                let path = self.share.join(rel_path);
                let f = OpenOptions::new().write(true).open(&path).unwrap();
                let Some(rec) = stub::read_fd(&f, &path, ATTR).unwrap() else {
                    return Ok(());
                };
                let data = self.objects.lock().unwrap()[&rec.key].clone();
                f.write_all_at(&data, 0).unwrap();
                stub::set_mtime(&f, rec.mtime_ns).unwrap();
                f.sync_all().unwrap();
                stub::remove_fd(&f, ATTR).unwrap();
                Ok(())
            }
        }
    }
}

// ---- fixture ----------------------------------------------------------------------------

struct Share {
    tmp: tempfile::TempDir,
    root: PathBuf,
    core: Core,
    west: Arc<FakeWest>,
    changes: Arc<Recorder>,
}

fn share() -> Share {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("share");
    std::fs::create_dir(&root).unwrap();
    let west = Arc::new(FakeWest {
        share: root.clone(),
        objects: Mutex::default(),
        reads: Mutex::default(),
        recalls: Mutex::default(),
        discards: Mutex::default(),
        mode: Mutex::new(RecallMode::Restore),
        short_reads: Mutex::new(false),
    });
    let changes = Arc::new(Recorder::default());
    let services = Services {
        stub_data: west.clone(),
        recall: west.clone(),
        changes: changes.clone(),
    };
    let core = Core::new(&root, CoreConfig::default(), services).unwrap();
    Share {
        tmp,
        root,
        core,
        west,
        changes,
    }
}

impl Share {
    /// The node of `rel`, looked up component by component as the kernel would.
    fn ino(&self, rel: &str) -> Result<u64, i32> {
        let mut ino = ROOT_INO;
        for c in Path::new(rel).iter() {
            ino = self.core.lookup(ino, c).map_err(|e| e.0)?.ino;
        }
        Ok(ino)
    }

    fn split(&self, rel: &str) -> Result<(u64, OsString), i32> {
        let p = Path::new(rel);
        let parent = p.parent().and_then(Path::to_str).unwrap_or("");
        let name = p.file_name().unwrap().to_os_string();
        Ok((self.ino(parent)?, name))
    }

    /// Offloads `rel` the way the migration engine does: data to the fake west, stub record
    /// on the file, data punched, mtime kept.
    fn offload(&self, rel: &str, data: &[u8]) -> StubRecord {
        let path = self.root.join(rel);
        std::fs::write(&path, data).unwrap();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        f.sync_all().unwrap();
        let dv = DataVersion::of(&f.metadata().unwrap());
        let rec = StubRecord {
            gpair: "p".into(),
            gpair_value: "LC_1,/e,RC_2,/b".into(),
            bucket: "b".into(),
            key: format!("k/{rel}"),
            etag: "etag".into(),
            size: data.len() as u64,
            mtime_ns: dv.mtime_ns,
            crc32c: crc32c::crc32c(data),
            offloaded: dv,
            offloaded_at_ms: 1,
        };
        self.west
            .objects
            .lock()
            .unwrap()
            .insert(rec.key.clone(), data.to_vec());
        stub::write_fd(&f, ATTR, &rec).unwrap();
        stub::punch(&f, rec.size).unwrap();
        stub::set_mtime(&f, rec.mtime_ns).unwrap();
        f.sync_all().unwrap();
        rec
    }

    fn stub_record(&self, rel: &str) -> Option<StubRecord> {
        stub::read_path(&self.root.join(rel), ATTR).unwrap()
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

fn ok(r: libc::c_int) -> Result<libc::c_int, i32> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

fn secs(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            if d.subsec_nanos() == 0 {
                (-(d.as_secs() as i64), 0)
            } else {
                (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
            }
        }
    }
}

// ---- the scripted comparison ------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Op {
    Mkdir(&'static str, u32),
    /// create with flags, then release.
    Create(&'static str, u32, i32),
    /// open with flags, then release.
    Open(&'static str, i32),
    Write(&'static str, u64, &'static [u8]),
    /// open O_WRONLY|O_APPEND and write "at 0".
    Append(&'static str, &'static [u8]),
    Read(&'static str, u64, usize),
    Truncate(&'static str, u64),
    Chmod(&'static str, u32),
    /// To 1234:5678 as root, else to our own ids.
    Chown(&'static str),
    Utimens(&'static str, Option<(i64, i64)>, Option<(i64, i64)>),
    Stat(&'static str),
    /// Stat including atime and mtime (after they were set explicitly).
    StatTimes(&'static str),
    Readlink(&'static str),
    Symlink(&'static str, &'static str),
    Link(&'static str, &'static str),
    Unlink(&'static str),
    Rmdir(&'static str),
    Rename(&'static str, &'static str, u32),
    SetX(&'static str, &'static str, &'static [u8], i32),
    GetX(&'static str, &'static str),
    ListX(&'static str),
    RemoveX(&'static str, &'static str),
    Fallocate(&'static str, i32, u64, u64),
    Readdir(&'static str),
    Statfs(&'static str),
}

#[derive(Debug, PartialEq)]
struct Norm {
    mode: u32,
    size: u64,
    nlink: u32,
    uid: u32,
    gid: u32,
    times: Option<((i64, u32), (i64, u32))>,
}

#[derive(Debug, PartialEq)]
enum Out {
    Unit,
    Count(usize),
    Data(Vec<u8>),
    Stat(Norm),
    Names(Vec<(OsString, FileKind)>),
    Fs(u32, u32, u64),
}

fn owner() -> (u32, u32) {
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 {
        (1234, 5678)
    } else {
        (uid, gid)
    }
}

fn norm_attr(a: &Attr, times: bool) -> Norm {
    Norm {
        mode: a.mode,
        size: a.size,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        times: times.then(|| (secs(a.atime), secs(a.mtime))),
    }
}

fn to_time((s, ns): (i64, i64)) -> SystemTime {
    if s >= 0 {
        UNIX_EPOCH + Duration::new(s as u64, ns as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(s.unsigned_abs()) + Duration::from_nanos(ns as u64)
    }
}

fn xattr_names(raw: &[u8]) -> Vec<(OsString, FileKind)> {
    let mut v: Vec<_> = raw
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| (OsString::from_vec(s.to_vec()), FileKind::Regular))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn on_core(s: &Share, op: Op) -> Result<Out, i32> {
    let c = &s.core;
    let e = |e: Errno| e.0;
    Ok(match op {
        Op::Mkdir(p, mode) => {
            let (parent, name) = s.split(p)?;
            c.mkdir(parent, &name, mode).map_err(e)?;
            Out::Unit
        }
        Op::Create(p, mode, flags) => {
            let (parent, name) = s.split(p)?;
            let (_, fh) = c.create(parent, &name, mode, flags).map_err(e)?;
            c.release(fh).map_err(e)?;
            Out::Unit
        }
        Op::Open(p, flags) => {
            let fh = c.open(s.ino(p)?, flags).map_err(e)?;
            c.release(fh).map_err(e)?;
            Out::Unit
        }
        Op::Write(p, off, data) => {
            let fh = c.open(s.ino(p)?, libc::O_WRONLY).map_err(e)?;
            let n = c.write(fh, off, data).map_err(e)?;
            c.release(fh).map_err(e)?;
            Out::Count(n)
        }
        Op::Append(p, data) => {
            let fh = c
                .open(s.ino(p)?, libc::O_WRONLY | libc::O_APPEND)
                .map_err(e)?;
            let n = c.write(fh, 0, data).map_err(e)?;
            c.release(fh).map_err(e)?;
            Out::Count(n)
        }
        Op::Read(p, off, len) => {
            let fh = c.open(s.ino(p)?, libc::O_RDONLY).map_err(e)?;
            let d = c.read(fh, off, len).map_err(e)?;
            c.release(fh).map_err(e)?;
            Out::Data(d)
        }
        Op::Truncate(p, size) => {
            let set = SetAttr {
                size: Some(size),
                ..SetAttr::default()
            };
            c.setattr(s.ino(p)?, None, &set).map_err(e)?;
            Out::Unit
        }
        Op::Chmod(p, mode) => {
            let set = SetAttr {
                mode: Some(mode),
                ..SetAttr::default()
            };
            c.setattr(s.ino(p)?, None, &set).map_err(e)?;
            Out::Unit
        }
        Op::Chown(p) => {
            let (uid, gid) = owner();
            let set = SetAttr {
                uid: Some(uid),
                gid: Some(gid),
                ..SetAttr::default()
            };
            c.setattr(s.ino(p)?, None, &set).map_err(e)?;
            Out::Unit
        }
        Op::Utimens(p, a, m) => {
            let set = SetAttr {
                atime: a.map(|t| TimeSet::At(to_time(t))),
                mtime: m.map(|t| TimeSet::At(to_time(t))),
                ..SetAttr::default()
            };
            c.setattr(s.ino(p)?, None, &set).map_err(e)?;
            Out::Unit
        }
        Op::Stat(p) | Op::StatTimes(p) => {
            let a = c.getattr(s.ino(p)?, None).map_err(e)?;
            Out::Stat(norm_attr(&a, matches!(op, Op::StatTimes(_))))
        }
        Op::Readlink(p) => Out::Data(c.readlink(s.ino(p)?).map_err(e)?),
        Op::Symlink(target, p) => {
            let (parent, name) = s.split(p)?;
            c.symlink(parent, &name, os(target)).map_err(e)?;
            Out::Unit
        }
        Op::Link(from, to) => {
            let ino = s.ino(from)?;
            let (parent, name) = s.split(to)?;
            let a = c.link(ino, parent, &name).map_err(e)?;
            assert_eq!(a.ino, ino, "a hard link is the same node");
            Out::Unit
        }
        Op::Unlink(p) => {
            let (parent, name) = s.split(p)?;
            c.unlink(parent, &name).map_err(e)?;
            Out::Unit
        }
        Op::Rmdir(p) => {
            let (parent, name) = s.split(p)?;
            c.rmdir(parent, &name).map_err(e)?;
            Out::Unit
        }
        Op::Rename(from, to, flags) => {
            let (p1, n1) = s.split(from)?;
            let (p2, n2) = s.split(to)?;
            c.rename(p1, &n1, p2, &n2, flags).map_err(e)?;
            Out::Unit
        }
        Op::SetX(p, name, value, flags) => {
            c.setxattr(s.ino(p)?, os(name), value, flags).map_err(e)?;
            Out::Unit
        }
        Op::GetX(p, name) => Out::Data(c.getxattr(s.ino(p)?, os(name)).map_err(e)?),
        Op::ListX(p) => Out::Names(xattr_names(&c.listxattr(s.ino(p)?).map_err(e)?)),
        Op::RemoveX(p, name) => {
            c.removexattr(s.ino(p)?, os(name)).map_err(e)?;
            Out::Unit
        }
        Op::Fallocate(p, mode, off, len) => {
            let fh = c.open(s.ino(p)?, libc::O_RDWR).map_err(e)?;
            let r = c.fallocate(fh, off, len, mode);
            c.release(fh).map_err(e)?;
            r.map_err(e)?;
            Out::Unit
        }
        Op::Readdir(p) => {
            let fh = c.opendir(s.ino(p)?).map_err(e)?;
            let mut names = Vec::new();
            c.readdir(fh, 0, |d| {
                if d.name != "." && d.name != ".." {
                    names.push((d.name.clone(), d.kind));
                }
                false
            })
            .map_err(e)?;
            c.releasedir(fh).map_err(e)?;
            names.sort_by(|a, b| a.0.cmp(&b.0));
            Out::Names(names)
        }
        Op::Statfs(p) => {
            let f = c.statfs(s.ino(p)?).map_err(e)?;
            Out::Fs(f.bsize, f.namelen, f.blocks)
        }
    })
}

fn kind_of(ft: std::fs::FileType) -> FileKind {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        FileKind::Directory
    } else if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_fifo() {
        FileKind::Fifo
    } else if ft.is_socket() {
        FileKind::Socket
    } else if ft.is_char_device() {
        FileKind::CharDevice
    } else if ft.is_block_device() {
        FileKind::BlockDevice
    } else {
        FileKind::Regular
    }
}

/// The same operation with plain syscalls on `root/…` (no-follow variants where the core's
/// semantics are "the entry itself").
fn on_plain(root: &Path, op: Op) -> Result<Out, i32> {
    let p = |r: &str| cpath(&root.join(r));
    // SAFETY (all blocks below): arguments are NUL-terminated strings and live buffers.
    Ok(match op {
        Op::Mkdir(r, mode) => {
            ok(unsafe { libc::mkdir(p(r).as_ptr(), mode) })?;
            Out::Unit
        }
        Op::Create(r, mode, flags) => {
            let fd = ok(unsafe { libc::open(p(r).as_ptr(), flags | libc::O_CREAT, mode) })?;
            unsafe { libc::close(fd) };
            Out::Unit
        }
        Op::Open(r, flags) => {
            let fd = ok(unsafe { libc::open(p(r).as_ptr(), flags | libc::O_NOFOLLOW) })?;
            unsafe { libc::close(fd) };
            Out::Unit
        }
        Op::Write(r, off, data) => plain_write(&p(r), libc::O_WRONLY, off, data)?,
        Op::Append(r, data) => plain_write(&p(r), libc::O_WRONLY | libc::O_APPEND, 0, data)?,
        Op::Read(r, off, len) => {
            let fd = ok(unsafe { libc::open(p(r).as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW) })?;
            let mut buf = vec![0u8; len];
            let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), len, off as i64) };
            let err = errno();
            unsafe { libc::close(fd) };
            if n < 0 {
                return Err(err);
            }
            buf.truncate(n as usize);
            Out::Data(buf)
        }
        Op::Truncate(r, size) => {
            ok(unsafe { libc::truncate(p(r).as_ptr(), size as i64) })?;
            Out::Unit
        }
        Op::Chmod(r, mode) => {
            ok(unsafe { libc::chmod(p(r).as_ptr(), mode) })?;
            Out::Unit
        }
        Op::Chown(r) => {
            let (uid, gid) = owner();
            ok(unsafe { libc::lchown(p(r).as_ptr(), uid, gid) })?;
            Out::Unit
        }
        Op::Utimens(r, a, m) => {
            let ts = |t: Option<(i64, i64)>| match t {
                Some((s, ns)) => libc::timespec {
                    tv_sec: s,
                    tv_nsec: ns,
                },
                None => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_OMIT,
                },
            };
            let times = [ts(a), ts(m)];
            ok(unsafe {
                libc::utimensat(
                    libc::AT_FDCWD,
                    p(r).as_ptr(),
                    times.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            })?;
            Out::Unit
        }
        Op::Stat(r) | Op::StatTimes(r) => {
            let md =
                std::fs::symlink_metadata(root.join(r)).map_err(|e| e.raw_os_error().unwrap())?;
            let times = matches!(op, Op::StatTimes(_)).then(|| {
                (
                    (md.atime(), md.atime_nsec() as u32),
                    (md.mtime(), md.mtime_nsec() as u32),
                )
            });
            Out::Stat(Norm {
                mode: md.mode(),
                size: md.size(),
                nlink: md.nlink() as u32,
                uid: md.uid(),
                gid: md.gid(),
                times,
            })
        }
        Op::Readlink(r) => {
            let t = std::fs::read_link(root.join(r)).map_err(|e| e.raw_os_error().unwrap())?;
            Out::Data(t.into_os_string().into_vec())
        }
        Op::Symlink(target, r) => {
            let t = CString::new(target).unwrap();
            ok(unsafe { libc::symlink(t.as_ptr(), p(r).as_ptr()) })?;
            Out::Unit
        }
        Op::Link(from, to) => {
            ok(unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    p(from).as_ptr(),
                    libc::AT_FDCWD,
                    p(to).as_ptr(),
                    0,
                )
            })?;
            Out::Unit
        }
        Op::Unlink(r) => {
            ok(unsafe { libc::unlink(p(r).as_ptr()) })?;
            Out::Unit
        }
        Op::Rmdir(r) => {
            ok(unsafe { libc::rmdir(p(r).as_ptr()) })?;
            Out::Unit
        }
        Op::Rename(from, to, flags) => {
            let r = unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    libc::AT_FDCWD,
                    p(from).as_ptr(),
                    libc::AT_FDCWD,
                    p(to).as_ptr(),
                    flags,
                )
            };
            if r < 0 {
                return Err(errno());
            }
            Out::Unit
        }
        Op::SetX(r, name, value, flags) => {
            let n = CString::new(name).unwrap();
            ok(unsafe {
                libc::lsetxattr(
                    p(r).as_ptr(),
                    n.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    flags,
                )
            })?;
            Out::Unit
        }
        Op::GetX(r, name) => {
            let n = CString::new(name).unwrap();
            let mut buf = vec![0u8; 65536];
            let len = unsafe {
                libc::lgetxattr(
                    p(r).as_ptr(),
                    n.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if len < 0 {
                return Err(errno());
            }
            buf.truncate(len as usize);
            Out::Data(buf)
        }
        Op::ListX(r) => {
            let mut buf = vec![0u8; 65536];
            let len =
                unsafe { libc::llistxattr(p(r).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            if len < 0 {
                return Err(errno());
            }
            buf.truncate(len as usize);
            Out::Names(xattr_names(&buf))
        }
        Op::RemoveX(r, name) => {
            let n = CString::new(name).unwrap();
            ok(unsafe { libc::lremovexattr(p(r).as_ptr(), n.as_ptr()) })?;
            Out::Unit
        }
        Op::Fallocate(r, mode, off, len) => {
            let fd = ok(unsafe { libc::open(p(r).as_ptr(), libc::O_RDWR | libc::O_NOFOLLOW) })?;
            let res = unsafe { libc::fallocate(fd, mode, off as i64, len as i64) };
            let err = errno();
            unsafe { libc::close(fd) };
            if res < 0 {
                return Err(err);
            }
            Out::Unit
        }
        Op::Readdir(r) => {
            let rd = std::fs::read_dir(root.join(r)).map_err(|e| e.raw_os_error().unwrap())?;
            let mut names: Vec<_> = rd
                .map(|e| {
                    let e = e.unwrap();
                    (e.file_name(), kind_of(e.file_type().unwrap()))
                })
                .collect();
            names.sort_by(|a, b| a.0.cmp(&b.0));
            Out::Names(names)
        }
        Op::Statfs(r) => {
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            ok(unsafe { libc::statvfs(p(r).as_ptr(), &mut st) })?;
            Out::Fs(st.f_bsize as u32, st.f_namemax as u32, st.f_blocks)
        }
    })
}

fn plain_write(path: &CString, flags: i32, off: u64, data: &[u8]) -> Result<Out, i32> {
    // SAFETY: path NUL-terminated, data live; the descriptor is closed here.
    let fd = ok(unsafe { libc::open(path.as_ptr(), flags | libc::O_NOFOLLOW) })?;
    // SAFETY: as above.
    let n = unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), off as i64) };
    let err = errno();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if n < 0 {
        return Err(err);
    }
    Ok(Out::Count(n as usize))
}

/// `None`: must succeed; `Some(e)`: must fail with errno `e` — on both sides.
type Expect = Option<i32>;

fn script() -> Vec<(Op, Expect)> {
    use libc::*;
    use Op::*;
    let long: &'static str = Box::leak("n".repeat(300).into_boxed_str());
    vec![
        (Mkdir("d", 0o755), None),
        (Mkdir("d", 0o755), Some(EEXIST)),
        (Mkdir("d/e", 0o700), None),
        (Mkdir("nope/x", 0o755), Some(ENOENT)),
        (Mkdir(long, 0o755), Some(ENAMETOOLONG)),
        (Create("f", 0o644, O_WRONLY), None),
        (Create("f", 0o644, O_WRONLY | O_EXCL), Some(EEXIST)),
        (Create("f", 0o600, O_RDWR), None),
        (Create("d/g", 0o600, O_RDWR | O_EXCL), None),
        (Create("d", 0o644, O_RDONLY), Some(EISDIR)),
        (Mkdir("f/x", 0o755), Some(ENOTDIR)),
        (Stat("f"), None),
        (Stat("d"), None),
        (Stat("d/g"), None),
        (Stat("missing"), Some(ENOENT)),
        (Stat("f/x"), Some(ENOTDIR)),
        (Write("f", 0, b"hello world"), None),
        (Write("f", 20, b"tail"), None),
        (Read("f", 0, 100), None),
        (Read("f", 6, 5), None),
        (Read("f", 1000, 10), None),
        (Append("f", b"++"), None),
        (Stat("f"), None),
        (Read("f", 0, 100), None),
        (Open("f", O_WRONLY | O_TRUNC), None),
        (Stat("f"), None),
        (Write("f", 0, b"0123456789"), None),
        (Truncate("f", 4), None),
        (Truncate("f", 8192), None),
        (Read("f", 0, 16), None),
        (Stat("f"), None),
        (Truncate("d", 0), Some(EISDIR)),
        (Truncate("missing", 0), Some(ENOENT)),
        (Open("missing", O_RDONLY), Some(ENOENT)),
        (Open("d", O_WRONLY), Some(EISDIR)),
        (Open("d", O_RDONLY), None),
        (Open("d/g", O_RDWR | O_APPEND), None),
        (Chmod("f", 0o640), None),
        (Stat("f"), None),
        (Chmod("d", 0o1777), None),
        (Stat("d"), None),
        (Chmod("f", 0o4755), None),
        (Stat("f"), None),
        (Chown("f"), None),
        (Stat("f"), None),
        (Chown("d"), None),
        (Stat("d"), None),
        (Chmod("missing", 0o600), Some(ENOENT)),
        (
            Utimens(
                "f",
                Some((1_000_000_000, 123_456_789)),
                Some((1_200_000_000, 987_654_321)),
            ),
            None,
        ),
        (StatTimes("f"), None),
        (Utimens("f", Some((-86_400, 500)), None), None),
        (StatTimes("f"), None),
        (Utimens("f", None, Some((42, 0))), None),
        (StatTimes("f"), None),
        (Symlink("f", "l"), None),
        (Symlink("../outside/x", "l2"), None),
        (Symlink("x", "l"), Some(EEXIST)),
        (Readlink("l"), None),
        (Readlink("l2"), None),
        (Readlink("f"), Some(EINVAL)),
        (Readlink("missing"), Some(ENOENT)),
        (Stat("l"), None),
        (Open("l", O_RDONLY), Some(ELOOP)),
        (Utimens("l", Some((5, 0)), Some((6, 7))), None),
        (StatTimes("l"), None),
        (StatTimes("f"), None),
        (Link("f", "d/f2"), None),
        (Link("f", "d/f2"), Some(EEXIST)),
        (Link("d", "d2"), Some(EPERM)),
        (Link("missing", "x"), Some(ENOENT)),
        (Link("l", "l3"), None),
        (Stat("f"), None),
        (Stat("l3"), None),
        (Unlink("d/f2"), None),
        (Unlink("d/f2"), Some(ENOENT)),
        (Unlink("d"), Some(EISDIR)),
        (Stat("f"), None),
        (Rmdir("f"), Some(ENOTDIR)),
        (Rmdir("d"), Some(ENOTEMPTY)),
        (Rmdir("missing"), Some(ENOENT)),
        (Rename("f", "f3", 0), None),
        (Rename("f", "x", 0), Some(ENOENT)),
        (Create("g", 0o644, O_WRONLY), None),
        (Write("g", 0, b"gee"), None),
        (Rename("g", "f3", RENAME_NOREPLACE), Some(EEXIST)),
        (Rename("g", "f3", RENAME_EXCHANGE), None),
        (Read("g", 0, 100), None),
        (Read("f3", 0, 100), None),
        (Rename("g", "f3", 1 << 7), Some(EINVAL)),
        (
            Rename("g", "f3", RENAME_NOREPLACE | RENAME_EXCHANGE),
            Some(EINVAL),
        ),
        (Rename("g", "d", 0), Some(EISDIR)),
        (Mkdir("d3", 0o755), None),
        (Create("d3/x", 0o644, O_WRONLY), None),
        (Rename("d3", "g", 0), Some(ENOTDIR)),
        (Rename("d3", "d", 0), Some(ENOTEMPTY)),
        (Rename("d", "d/e/inner", 0), Some(EINVAL)),
        (Rename("d3", "d4", 0), None),
        (Rename("d4/x", "d/x", 0), None),
        (Rename("nope", "x", RENAME_EXCHANGE), Some(ENOENT)),
        (Rename("d/x", "d4", RENAME_EXCHANGE), None),
        (Stat("d4"), None),
        (Stat("d/x"), None),
        (Rmdir("d/x"), None),
        (Readdir("d"), None),
        (Readdir(""), None),
        (Readdir("f3"), Some(ENOTDIR)),
        (Readdir("missing"), Some(ENOENT)),
        (SetX("f3", "user.a", b"1", 0), None),
        (SetX("f3", "user.a", b"2", XATTR_CREATE), Some(EEXIST)),
        (SetX("f3", "user.b", b"2", XATTR_REPLACE), Some(ENODATA)),
        (SetX("f3", "user.b", b"22", 0), None),
        (GetX("f3", "user.a"), None),
        (GetX("f3", "user.zz"), Some(ENODATA)),
        (ListX("f3"), None),
        (RemoveX("f3", "user.a"), None),
        (RemoveX("f3", "user.a"), Some(ENODATA)),
        (ListX("f3"), None),
        (SetX("l", "user.a", b"1", 0), Some(EPERM)),
        (GetX("l", "user.a"), Some(ENODATA)),
        (SetX("d", "user.dir", b"v", 0), None),
        (ListX("d"), None),
        (Fallocate("f3", 0, 0, 65536), None),
        (Stat("f3"), None),
        (Fallocate("f3", FALLOC_FL_KEEP_SIZE, 65536, 65536), None),
        (
            Fallocate("f3", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096),
            None,
        ),
        (
            Fallocate("f3", FALLOC_FL_PUNCH_HOLE, 0, 4096),
            Some(EOPNOTSUPP),
        ),
        (Stat("f3"), None),
        (Read("f3", 0, 10), None),
        (Statfs(""), None),
    ]
}

/// Names, kinds, modes, sizes, link counts, owners, contents, link targets and user
/// attributes of a whole tree.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for e in std::fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let abs = root.join(&r);
            let md = std::fs::symlink_metadata(&abs).unwrap();
            let body = if md.is_dir() {
                todo.push(r.clone());
                String::new()
            } else if md.file_type().is_symlink() {
                format!("-> {:?}", std::fs::read_link(&abs).unwrap())
            } else {
                format!("{:?}", std::fs::read(&abs).unwrap())
            };
            let mut buf = vec![0u8; 65536];
            let c = cpath(&abs);
            // SAFETY: c NUL-terminated, buf live.
            let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            buf.truncate(n.max(0) as usize);
            out.insert(
                r,
                format!(
                    "{:o} {} n{} {}:{} {:?} {body}",
                    md.mode(),
                    md.size(),
                    md.nlink(),
                    md.uid(),
                    md.gid(),
                    xattr_names(&buf)
                ),
            );
        }
    }
    out
}

#[test]
fn every_operation_matches_the_plain_filesystem() {
    let s = share();
    let plain = s.tmp.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    for (i, (op, expect)) in script().into_iter().enumerate() {
        let want = on_plain(&plain, op);
        let got = on_core(&s, op);
        match expect {
            None => assert!(
                want.is_ok(),
                "step {i} {op:?}: the plain directory said {want:?}"
            ),
            Some(e) => assert_eq!(
                want.as_ref().err(),
                Some(&e),
                "step {i} {op:?}: the plain directory said {want:?}"
            ),
        }
        assert_eq!(got, want, "step {i} {op:?}");
    }
    assert_eq!(tree(&s.root), tree(&plain));
    assert!(!s.changes.take().is_empty());
    assert!(s.west.recalls().is_empty() && s.west.reads().is_empty());
}

#[test]
fn setattr_now_sets_times_to_now_and_create_honours_the_umask_given() {
    let s = share();
    let (a, fh) = s
        .core
        .create(ROOT_INO, os("f"), 0o640, libc::O_WRONLY)
        .unwrap();
    assert_eq!(a.perm(), 0o640 & !current_umask());
    s.core.release(fh).unwrap();
    let old = SetAttr {
        atime: Some(TimeSet::At(UNIX_EPOCH + Duration::from_secs(10))),
        mtime: Some(TimeSet::At(UNIX_EPOCH + Duration::from_secs(20))),
        ..SetAttr::default()
    };
    let a = s.core.setattr(a.ino, None, &old).unwrap();
    assert_eq!(a.mtime, UNIX_EPOCH + Duration::from_secs(20));
    let before = SystemTime::now() - Duration::from_millis(50);
    let now = SetAttr {
        atime: Some(TimeSet::Now),
        mtime: Some(TimeSet::Now),
        ..SetAttr::default()
    };
    let a = s.core.setattr(a.ino, None, &now).unwrap();
    let after = SystemTime::now() + Duration::from_millis(50);
    for t in [a.atime, a.mtime] {
        assert!(t > before && t < after, "{t:?} not now");
    }
}

fn current_umask() -> u16 {
    // Read without setting it: other tests in this process create files meanwhile.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u16::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
}

#[test]
fn inode_numbers_survive_renames_links_and_exchanges() {
    let s = share();
    let c = &s.core;
    assert_eq!(c.getattr(ROOT_INO, None).unwrap().ino, ROOT_INO);
    let d = c.mkdir(ROOT_INO, os("d"), 0o755).unwrap().ino;
    let (f, fh) = c.create(d, os("f"), 0o644, libc::O_WRONLY).unwrap();
    c.write(fh, 0, b"content of f").unwrap();
    c.release(fh).unwrap();
    let f = f.ino;
    assert_eq!(
        f,
        std::fs::metadata(s.root.join("d/f")).unwrap().ino(),
        "a node gets its own inode number where free"
    );

    c.rename(ROOT_INO, os("d"), ROOT_INO, os("e"), 0).unwrap();
    assert_eq!(
        c.getattr(f, None).unwrap().size,
        12,
        "the child follows its directory"
    );
    assert_eq!(c.lookup(ROOT_INO, os("e")).unwrap().ino, d);
    assert_eq!(c.lookup(d, os("f")).unwrap().ino, f);
    let fh = c.open(f, libc::O_RDONLY).unwrap();
    assert_eq!(c.read(fh, 0, 100).unwrap(), b"content of f");
    c.release(fh).unwrap();

    c.rename(d, os("f"), ROOT_INO, os("g"), 0).unwrap();
    assert_eq!(c.lookup(ROOT_INO, os("g")).unwrap().ino, f);
    let h = c.link(f, ROOT_INO, os("h")).unwrap();
    assert_eq!((h.ino, h.nlink), (f, 2));
    c.unlink(ROOT_INO, os("g")).unwrap();
    assert_eq!(
        c.getattr(f, None).unwrap().nlink,
        1,
        "still reachable through h"
    );

    let (x, fh) = c.create(ROOT_INO, os("x"), 0o644, libc::O_WRONLY).unwrap();
    c.write(fh, 0, b"xxx").unwrap();
    c.release(fh).unwrap();
    let (y, fh) = c.create(ROOT_INO, os("y"), 0o644, libc::O_WRONLY).unwrap();
    c.write(fh, 0, b"yyyyy").unwrap();
    c.release(fh).unwrap();
    c.rename(ROOT_INO, os("x"), ROOT_INO, os("y"), libc::RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(c.lookup(ROOT_INO, os("x")).unwrap().ino, y.ino);
    assert_eq!(c.lookup(ROOT_INO, os("y")).unwrap().ino, x.ino);
    assert_eq!(
        c.getattr(x.ino, None).unwrap().size,
        3,
        "data follows the inode"
    );

    // Behind the mount's back: h moves away and an impostor takes its name. The node must
    // not show the impostor; looking up the new name finds the node again.
    std::fs::rename(s.root.join("h"), s.root.join("h2")).unwrap();
    std::fs::write(s.root.join("h"), b"impostor").unwrap();
    assert_eq!(c.getattr(f, None).unwrap_err(), Errno::ENOENT);
    assert_eq!(c.open(f, libc::O_RDONLY).unwrap_err(), Errno::ENOENT);
    assert_eq!(c.lookup(ROOT_INO, os("h2")).unwrap().ino, f);
    assert_eq!(c.getattr(f, None).unwrap().size, 12);
    assert_ne!(c.lookup(ROOT_INO, os("h")).unwrap().ino, f);

    // An open file stays usable through its handle after its last name is gone.
    let fh = c.open(f, libc::O_RDWR).unwrap();
    c.unlink(ROOT_INO, os("h2")).unwrap();
    // The kernel asks without a handle for `fstat`: answered through the open handle.
    assert_eq!(c.getattr(f, None).unwrap().nlink, 0);
    assert_eq!(c.getattr(f, Some(fh)).unwrap().nlink, 0);
    c.write(fh, 0, b"C").unwrap();
    let set = SetAttr {
        size: Some(1),
        ..SetAttr::default()
    };
    assert_eq!(c.setattr(f, Some(fh), &set).unwrap().size, 1);
    assert_eq!(c.read(fh, 0, 10).unwrap(), b"C");
    c.release(fh).unwrap();
    c.forget(f, 10);
    assert_eq!(c.getattr(f, None).unwrap_err(), Errno::ENOENT);
}

#[test]
fn readdir_offsets_are_stable_for_a_stream() {
    let s = share();
    let dir = s.root.join("many");
    std::fs::create_dir(&dir).unwrap();
    let want: HashSet<OsString> = (0..300)
        .map(|i| OsString::from(format!("f{i:03}")))
        .chain([".".into(), "..".into()])
        .collect();
    for n in want.iter().filter(|n| *n != "." && *n != "..") {
        std::fs::write(dir.join(n), b"").unwrap();
    }
    let c = &s.core;
    let d = s.ino("many").unwrap();
    let looked_up = c.lookup(d, os("f007")).unwrap().ino;
    let fh = c.opendir(d).unwrap();
    // Seven at a time, each call resuming from the last entry taken.
    let mut all: Vec<DirEntry> = Vec::new();
    loop {
        let from = all.last().map_or(0, |e| e.offset);
        let mut batch = Vec::new();
        c.readdir(fh, from, |e| {
            if batch.len() == 7 {
                return true;
            }
            batch.push(e.clone());
            false
        })
        .unwrap();
        if batch.is_empty() {
            break;
        }
        all.extend(batch);
    }
    let names: Vec<OsString> = all.iter().map(|e| e.name.clone()).collect();
    assert_eq!(names.len(), want.len(), "no duplicates, nothing missing");
    assert_eq!(names.iter().cloned().collect::<HashSet<_>>(), want);
    for e in &all {
        let expected_ino = match e.name.to_str().unwrap() {
            "." => d,
            ".." => ROOT_INO,
            "f007" => looked_up,
            n => std::fs::metadata(dir.join(n)).unwrap().ino(),
        };
        assert_eq!(e.ino, expected_ino, "{:?}", e.name);
        let kind = if e.name == "." || e.name == ".." {
            FileKind::Directory
        } else {
            FileKind::Regular
        };
        assert_eq!(e.kind, kind);
    }
    // Seeking back into the middle of the stream continues exactly from there…
    let mut again = Vec::new();
    c.readdir(fh, all[100].offset, |e| {
        again.push(e.name.clone());
        again.len() == 20
    })
    .unwrap();
    assert_eq!(again[..19], names[101..120]);
    // …and offset 0 starts over.
    let mut first = None;
    c.readdir(fh, 0, |e| {
        first = Some(e.name.clone());
        true
    })
    .unwrap();
    assert_eq!(first.as_ref(), Some(&names[0]));
    // A directory changing under a stream does no harm.
    std::fs::remove_file(dir.join("f150")).unwrap();
    let mut rest = 0;
    c.readdir(fh, all[10].offset, |_| {
        rest += 1;
        false
    })
    .unwrap();
    assert!(rest > 200);
    c.releasedir(fh).unwrap();
    assert_eq!(c.readdir(fh, 0, |_| false), Err(Errno::EBADF));
    let fh = c.open(looked_up, libc::O_RDONLY).unwrap();
    assert_eq!(c.readdir(fh, 0, |_| false), Err(Errno::ENOTDIR));
    assert_eq!(c.opendir(looked_up), Err(Errno::ENOTDIR));
}

#[test]
fn the_stub_record_attribute_is_hidden_and_untouchable() {
    let s = share();
    let rec = s.offload("s", &pattern(5000));
    let c = &s.core;
    let ino = s.ino("s").unwrap();
    assert_eq!(c.listxattr(ino).unwrap(), b"");
    c.setxattr(ino, os("user.a"), b"1", 0).unwrap();
    assert_eq!(c.listxattr(ino).unwrap(), b"user.a\0");
    assert_eq!(c.getxattr(ino, os(ATTR)), Err(Errno::ENODATA));
    assert_eq!(c.setxattr(ino, os(ATTR), b"forged", 0), Err(Errno::EPERM));
    assert_eq!(c.removexattr(ino, os(ATTR)), Err(Errno::EPERM));
    assert_eq!(s.stub_record("s"), Some(rec));
    // Nor can a local file be made into a stub by hand.
    let (f, fh) = c.create(ROOT_INO, os("f"), 0o644, libc::O_WRONLY).unwrap();
    c.release(fh).unwrap();
    assert_eq!(c.setxattr(f.ino, os(ATTR), b"\x01{}", 0), Err(Errno::EPERM));
    assert_eq!(s.stub_record("f"), None);
    assert_eq!(c.getxattr(f.ino, os("user.a")), Err(Errno::ENODATA));
    assert!(s.west.recalls().is_empty());
}

#[test]
fn symlinks_never_lead_outside_the_share() {
    let s = share();
    let c = &s.core;
    let outside = s.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"s3cret").unwrap();
    let outside_mode = std::fs::metadata(&outside).unwrap().mode();
    std::os::unix::fs::symlink("../outside", s.root.join("esc")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), s.root.join("abs")).unwrap();

    let esc = c.lookup(ROOT_INO, os("esc")).unwrap();
    assert_eq!(esc.kind(), FileKind::Symlink);
    assert_eq!(c.readlink(esc.ino).unwrap(), b"../outside");
    assert_eq!(c.lookup(esc.ino, os("secret")).unwrap_err(), Errno::ENOTDIR);
    assert!(c
        .create(esc.ino, os("planted"), 0o644, libc::O_WRONLY)
        .is_err());
    assert!(c.mkdir(esc.ino, os("planted"), 0o755).is_err());
    assert!(c.symlink(esc.ino, os("planted"), os("x")).is_err());
    assert_eq!(c.open(esc.ino, libc::O_RDONLY), Err(Errno::ELOOP));
    assert_eq!(c.opendir(esc.ino), Err(Errno::ENOTDIR));
    let chmod = SetAttr {
        mode: Some(0o777),
        ..SetAttr::default()
    };
    assert!(c.setattr(esc.ino, None, &chmod).is_err());
    assert_eq!(
        c.setxattr(esc.ino, os("user.x"), b"1", 0),
        Err(Errno::EPERM)
    );
    let abs = c.lookup(ROOT_INO, os("abs")).unwrap();
    let trunc = SetAttr {
        size: Some(0),
        ..SetAttr::default()
    };
    assert_eq!(c.setattr(abs.ino, None, &trunc), Err(Errno::EINVAL));
    assert_eq!(
        c.open(abs.ino, libc::O_RDWR | libc::O_TRUNC),
        Err(Errno::ELOOP)
    );
    // A hard link of a symlink links the symlink.
    c.link(abs.ino, ROOT_INO, os("abs2")).unwrap();
    assert!(std::fs::symlink_metadata(s.root.join("abs2"))
        .unwrap()
        .file_type()
        .is_symlink());

    // A directory the kernel knows is swapped for a symlink behind the mount's back.
    let d = c.mkdir(ROOT_INO, os("d"), 0o755).unwrap().ino;
    let sub = c.mkdir(d, os("sub"), 0o755).unwrap().ino;
    std::fs::rename(s.root.join("d"), s.root.join("d.old")).unwrap();
    std::os::unix::fs::symlink("../outside", s.root.join("d")).unwrap();
    std::fs::create_dir(outside.join("sub")).unwrap();
    assert_eq!(c.lookup(d, os("secret")).unwrap_err(), Errno::ENOENT);
    assert_eq!(c.getattr(d, None).unwrap_err(), Errno::ENOENT);
    assert!(c.create(d, os("planted"), 0o644, libc::O_WRONLY).is_err());
    assert!(c.create(sub, os("planted"), 0o644, libc::O_WRONLY).is_err());
    assert!(c.rename(d, os("x"), ROOT_INO, os("y"), 0).is_err());
    assert!(c.unlink(d, os("secret")).is_err());
    assert!(c.opendir(d).is_err());
    // Found again under its new name, the directory works as before.
    assert_eq!(c.lookup(ROOT_INO, os("d.old")).unwrap().ino, d);
    assert_eq!(c.getattr(sub, None).unwrap().kind(), FileKind::Directory);

    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"s3cret");
    assert_eq!(std::fs::metadata(&outside).unwrap().mode(), outside_mode);
    let mut left: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["secret", "sub"]);
    assert_eq!(std::fs::read_dir(outside.join("sub")).unwrap().count(), 0);
}

#[test]
fn every_namespace_change_is_reported_once_it_succeeded() {
    use ChangeKind::*;
    let s = share();
    let c = &s.core;
    let p = |x: &str| PathBuf::from(x);
    let d = c.mkdir(ROOT_INO, os("d"), 0o755).unwrap().ino;
    assert!(c.mkdir(ROOT_INO, os("d"), 0o755).is_err());
    let (f, fh) = c.create(d, os("f"), 0o644, libc::O_WRONLY).unwrap();
    c.write(fh, 0, b"x").unwrap();
    c.release(fh).unwrap();
    let fh = c.open(f.ino, libc::O_RDONLY).unwrap();
    c.release(fh).unwrap();
    let chmod = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    c.setattr(f.ino, None, &chmod).unwrap();
    c.symlink(d, os("l"), os("f")).unwrap();
    c.link(f.ino, ROOT_INO, os("h")).unwrap();
    c.rename(d, os("f"), d, os("g"), 0).unwrap();
    c.rename(ROOT_INO, os("h"), d, os("l"), libc::RENAME_EXCHANGE)
        .unwrap();
    c.unlink(ROOT_INO, os("h")).unwrap();
    // A handle that writes after its directory moved reports the new path.
    let fh = c.open(f.ino, libc::O_WRONLY).unwrap();
    c.rename(ROOT_INO, os("d"), ROOT_INO, os("e"), 0).unwrap();
    c.write(fh, 0, b"y").unwrap();
    c.release(fh).unwrap();
    // An O_TRUNC open changes the data even with no write.
    let fh = c.open(f.ino, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    c.release(fh).unwrap();
    c.unlink(d, os("g")).unwrap();
    c.unlink(d, os("l")).unwrap();
    c.rmdir(ROOT_INO, os("e")).unwrap();
    assert!(c.rmdir(ROOT_INO, os("e")).is_err());
    assert_eq!(
        s.changes.take(),
        vec![
            (Create, p("d"), None),
            (Create, p("d/f"), None),
            (Modify, p("d/f"), None),
            (Modify, p("d/f"), None),
            (Create, p("d/l"), None),
            (Create, p("h"), None),
            (Rename, p("d/f"), Some(p("d/g"))),
            (Exchange, p("h"), Some(p("d/l"))),
            (Delete, p("h"), None),
            (Rename, p("d"), Some(p("e"))),
            (Modify, p("e/g"), None),
            (Modify, p("e/g"), None),
            (Delete, p("e/g"), None),
            (Delete, p("e/l"), None),
            (Delete, p("e"), None),
        ]
    );
}

// ---- stubs ------------------------------------------------------------------------------

#[test]
fn stub_reads_come_from_west_with_exact_bytes_and_stat_never_recalls() {
    let s = share();
    let data = pattern(200_000);
    let rec = s.offload("s", &data);
    let c = &s.core;
    let on_disk = std::fs::metadata(s.root.join("s")).unwrap();
    assert!(on_disk.blocks() < 40, "the fixture punched the data");

    let a = c.lookup(ROOT_INO, os("s")).unwrap();
    assert_eq!(a.size, 200_000);
    assert_eq!(
        secs(a.mtime),
        (on_disk.mtime(), on_disk.mtime_nsec() as u32)
    );
    assert_eq!(
        a.blocks,
        200_000u64.div_ceil(512),
        "blocks as if the data were there"
    );
    assert_eq!(c.getattr(a.ino, None).unwrap(), a);
    let fh = c.opendir(ROOT_INO).unwrap();
    c.readdirplus(fh, 0, |e, attr| {
        if e.name == "s" {
            assert_eq!(attr.size, 200_000);
        }
        false
    })
    .unwrap();
    c.releasedir(fh).unwrap();

    let fh = c.open(a.ino, libc::O_RDONLY).unwrap();
    let ranges: [(u64, usize); 6] = [
        (0, 4096),
        (4000, 200),
        (12_345, 131_072),
        (199_990, 100),
        (200_000, 10),
        (250_000, 10),
    ];
    for (off, len) in ranges {
        let start = (off as usize).min(data.len());
        let end = (off as usize + len).min(data.len());
        assert_eq!(
            c.read(fh, off, len).unwrap(),
            &data[start..end],
            "{off}+{len}"
        );
    }
    c.release(fh).unwrap();
    assert_eq!(
        s.west.reads(),
        vec![
            (p("s"), 0, 4096),
            (p("s"), 4000, 200),
            (p("s"), 12_345, 131_072),
            (p("s"), 199_990, 10),
        ],
        "clamped to the stub's size, nothing asked past its end"
    );
    assert!(s.west.recalls().is_empty());
    assert_eq!(s.stub_record("s"), Some(rec));
    assert!(std::fs::metadata(s.root.join("s")).unwrap().blocks() < 40);
    assert!(s.changes.take().is_empty(), "reads change nothing");
    // A renamed stub is read from its own object, under its new path.
    c.rename(ROOT_INO, os("s"), ROOT_INO, os("t"), 0).unwrap();
    let fh = c.open(a.ino, libc::O_RDONLY).unwrap();
    assert_eq!(c.read(fh, 10, 5).unwrap(), &data[10..15]);
    c.release(fh).unwrap();
    assert_eq!(s.west.reads().last().unwrap(), &(p("t"), 10, 5));
}

fn p(x: &str) -> PathBuf {
    PathBuf::from(x)
}

#[test]
fn opening_a_stub_for_write_recalls_it_first() {
    let s = share();
    let data = pattern(50_000);
    let rec = s.offload("s", &data);
    let c = &s.core;
    let ino = s.ino("s").unwrap();
    let fh = c.open(ino, libc::O_RDWR).unwrap();
    assert_eq!(s.west.recalls(), vec![p("s")]);
    assert_eq!(s.stub_record("s"), None);
    assert_eq!(c.read(fh, 0, 10).unwrap(), &data[..10]);
    assert!(s.west.reads().is_empty(), "a recalled file is read locally");
    assert_eq!(c.write(fh, 5, b"XYZ").unwrap(), 3);
    c.release(fh).unwrap();
    let mut want = data.clone();
    want[5..8].copy_from_slice(b"XYZ");
    assert_eq!(std::fs::read(s.root.join("s")).unwrap(), want);
    assert_eq!(s.changes.take(), vec![(ChangeKind::Modify, p("s"), None)]);
    assert_eq!(s.west.recalls().len(), 1, "recalled once");
    let _ = rec;

    // create() of an existing stub with write access, no O_TRUNC: recalled too.
    s.offload("e", &data);
    let (a, fh) = c.create(ROOT_INO, os("e"), 0o644, libc::O_RDWR).unwrap();
    assert_eq!(a.size, 50_000);
    assert_eq!(s.west.recalls(), vec![p("s"), p("e")]);
    c.release(fh).unwrap();
    assert_eq!(std::fs::read(s.root.join("e")).unwrap(), data);
    // Opening a stub read-only recalls nothing.
    s.offload("r", &data);
    let fh = c.open(s.ino("r").unwrap(), libc::O_RDONLY).unwrap();
    c.release(fh).unwrap();
    assert_eq!(s.west.recalls().len(), 2);
}

#[test]
fn truncating_a_stub_recalls_unless_to_zero() {
    let s = share();
    let data = pattern(30_000);
    let c = &s.core;
    let size = |n| SetAttr {
        size: Some(n),
        ..SetAttr::default()
    };

    s.offload("a", &data);
    let a = s.ino("a").unwrap();
    assert_eq!(c.setattr(a, None, &size(1000)).unwrap().size, 1000);
    assert_eq!(s.west.recalls(), vec![p("a")]);
    assert_eq!(std::fs::read(s.root.join("a")).unwrap(), &data[..1000]);
    assert_eq!(s.stub_record("a"), None);

    // Extending a stub needs its data too.
    s.offload("x", &data);
    let x = s.ino("x").unwrap();
    c.setattr(x, None, &size(40_000)).unwrap();
    assert_eq!(s.west.recalls(), vec![p("a"), p("x")]);
    let got = std::fs::read(s.root.join("x")).unwrap();
    assert_eq!(&got[..30_000], &data[..]);
    assert!(got[30_000..].iter().all(|&b| b == 0));

    // To zero: no fetch; the backend empties it (serialized with migrations), the record
    // goes.
    s.offload("b", &data);
    let b = s.ino("b").unwrap();
    s.changes.take();
    let attr = c.setattr(b, None, &size(0)).unwrap();
    assert_eq!((attr.size, attr.blocks), (0, 0));
    assert_eq!(s.west.recalls().len(), 2);
    assert_eq!(s.stub_record("b"), None);
    assert_eq!(std::fs::metadata(s.root.join("b")).unwrap().len(), 0);
    assert_eq!(s.changes.take(), vec![(ChangeKind::Modify, p("b"), None)]);

    // An O_TRUNC open: the same, and the file is an ordinary local file after.
    s.offload("c", &data);
    let cino = s.ino("c").unwrap();
    let fh = c.open(cino, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    assert_eq!(s.stub_record("c"), None);
    c.write(fh, 0, b"new").unwrap();
    c.release(fh).unwrap();
    assert_eq!(std::fs::read(s.root.join("c")).unwrap(), b"new");
    // create() with O_TRUNC over an existing stub: the same.
    s.offload("d", &data);
    let (attr, fh) = c
        .create(ROOT_INO, os("d"), 0o644, libc::O_RDWR | libc::O_TRUNC)
        .unwrap();
    assert_eq!(attr.size, 0);
    assert_eq!(c.read(fh, 0, 10).unwrap(), b"");
    c.release(fh).unwrap();
    assert_eq!(s.stub_record("d"), None);
    assert_eq!(s.west.recalls().len(), 2, "no fetch for truncation to zero");
    assert!(s.west.reads().is_empty());
    assert_eq!(
        *s.west.discards.lock().unwrap(),
        vec![p("b"), p("c"), p("d")],
        "each truncation to zero went through discard"
    );

    // Metadata-only setattr of a stub: no recall, still a stub.
    let rec = s.offload("m", &data);
    let m = s.ino("m").unwrap();
    let meta = SetAttr {
        mode: Some(0o600),
        mtime: Some(TimeSet::Now),
        ..SetAttr::default()
    };
    let attr = c.setattr(m, None, &meta).unwrap();
    assert_eq!((attr.size, attr.perm()), (30_000, 0o600));
    assert_eq!(s.stub_record("m"), Some(rec));
    assert_eq!(s.west.recalls().len(), 2);
}

#[test]
fn writes_and_fallocate_on_a_handle_whose_file_became_a_stub_recall_first() {
    let s = share();
    let data = pattern(10_000);
    std::fs::write(s.root.join("w"), b"local").unwrap();
    std::fs::write(s.root.join("f"), b"local").unwrap();
    let c = &s.core;
    let w = c.open(s.ino("w").unwrap(), libc::O_RDWR).unwrap();
    let f = c.open(s.ino("f").unwrap(), libc::O_RDWR).unwrap();
    // Offloaded while open (the engine's lease check prevents this; the core must not
    // depend on it).
    s.offload("w", &data);
    s.offload("f", &data);
    assert_eq!(
        c.read(w, 0, 4).unwrap(),
        &data[..4],
        "read through from west"
    );
    assert!(s.west.recalls().is_empty());
    c.write(w, 0, b"W").unwrap();
    assert_eq!(s.west.recalls(), vec![p("w")]);
    c.fallocate(f, 0, 20_000, 0).unwrap();
    assert_eq!(s.west.recalls(), vec![p("w"), p("f")]);
    c.release(w).unwrap();
    c.release(f).unwrap();
    let mut want = data.clone();
    want[0] = b'W';
    assert_eq!(std::fs::read(s.root.join("w")).unwrap(), want);
    let got = std::fs::read(s.root.join("f")).unwrap();
    assert_eq!((&got[..10_000], got.len()), (&data[..], 20_000));
    // A read-only handle never recalls: the write is refused first.
    s.offload("w", &data);
    let r = c.open(s.ino("w").unwrap(), libc::O_RDONLY).unwrap();
    assert_eq!(c.write(r, 0, b"x"), Err(Errno::EBADF));
    assert_eq!(c.fallocate(r, 0, 1, 0), Err(Errno::EBADF));
    assert_eq!(s.west.recalls().len(), 2);
    c.release(r).unwrap();
}

#[test]
fn a_failing_recall_returns_its_errno_and_leaves_the_stub_untouched() {
    let s = share();
    let data = pattern(20_000);
    let c = &s.core;
    std::fs::write(s.root.join("s"), b"local").unwrap();
    let ino = s.ino("s").unwrap();
    let rw = c.open(ino, libc::O_RDWR).unwrap();
    let rec = s.offload("s", &data);
    let before = std::fs::metadata(s.root.join("s")).unwrap();
    s.west.set_mode(RecallMode::Fail(libc::EHOSTUNREACH));
    let e = Errno(libc::EHOSTUNREACH);
    let size = |n| SetAttr {
        size: Some(n),
        ..SetAttr::default()
    };

    assert_eq!(c.open(ino, libc::O_RDWR).unwrap_err(), e);
    assert_eq!(c.open(ino, libc::O_WRONLY | libc::O_APPEND).unwrap_err(), e);
    assert_eq!(
        c.create(ROOT_INO, os("s"), 0o644, libc::O_WRONLY)
            .unwrap_err(),
        e
    );
    assert_eq!(c.setattr(ino, None, &size(10)).unwrap_err(), e);
    assert_eq!(c.setattr(ino, Some(rw), &size(10)).unwrap_err(), e);
    assert_eq!(c.write(rw, 0, b"x").unwrap_err(), e);
    assert_eq!(c.fallocate(rw, 0, 10, 0).unwrap_err(), e);
    let chmod_and_resize = SetAttr {
        mode: Some(0o600),
        size: Some(10),
        ..SetAttr::default()
    };
    assert_eq!(c.setattr(ino, None, &chmod_and_resize).unwrap_err(), e);
    assert_eq!(s.west.recalls().len(), 8);

    // Nothing changed: record, size, mtime, released blocks; reads still come from west.
    assert_eq!(s.stub_record("s"), Some(rec.clone()));
    let after = std::fs::metadata(s.root.join("s")).unwrap();
    assert_eq!(
        (
            after.len(),
            after.mtime(),
            after.mtime_nsec(),
            after.blocks(),
            after.mode()
        ),
        (
            before.len(),
            before.mtime(),
            before.mtime_nsec(),
            before.blocks(),
            before.mode()
        )
    );
    assert_eq!(c.read(rw, 100, 50).unwrap(), &data[100..150]);
    c.release(rw).unwrap();
    assert!(
        s.changes.take().iter().all(|c| c.0 != ChangeKind::Modify),
        "nothing was modified"
    );

    // A recall that claims success but leaves the record: EIO, nothing written.
    s.west.set_mode(RecallMode::LeaveStub);
    assert_eq!(c.open(ino, libc::O_RDWR), Err(Errno::EIO));
    assert_eq!(c.setattr(ino, None, &size(5)).map(|_| ()), Err(Errno::EIO));
    assert_eq!(s.stub_record("s"), Some(rec));
    assert_eq!(std::fs::metadata(s.root.join("s")).unwrap().len(), 20_000);
}

#[test]
fn a_stub_is_never_served_as_zeros() {
    let s = share();
    let data = pattern(8192);
    s.offload("s", &data);
    let c = &s.core;
    let ino = s.ino("s").unwrap();
    let fh = c.open(ino, libc::O_RDONLY).unwrap();
    // West answers with the wrong length: refused.
    *s.west.short_reads.lock().unwrap() = true;
    assert_eq!(c.read(fh, 0, 100), Err(Errno::EIO));
    *s.west.short_reads.lock().unwrap() = false;
    // The object is missing on west: its errno.
    s.west.objects.lock().unwrap().clear();
    assert_eq!(c.read(fh, 0, 100), Err(Errno::EIO));
    c.release(fh).unwrap();
    // A corrupt stub record: EIO for data, never the holes; stat still works.
    let path = cpath(&s.root.join("s"));
    let name = CString::new(ATTR).unwrap();
    // SAFETY: strings NUL-terminated, value live for the call.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            b"\x01junk".as_ptr().cast(),
            5,
            0,
        )
    };
    assert_eq!(r, 0);
    assert_eq!(c.getattr(ino, None).unwrap().size, 8192);
    let fh = c.open(ino, libc::O_RDONLY).unwrap();
    assert_eq!(c.read(fh, 0, 100), Err(Errno::EIO));
    c.release(fh).unwrap();
    assert_eq!(c.open(ino, libc::O_RDWR), Err(Errno::EIO));
    assert!(
        s.west.recalls().is_empty(),
        "a corrupt record is not recalled blindly"
    );
}

#[test]
fn a_share_root_that_is_not_a_directory_is_refused_with_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f");
    std::fs::write(&file, b"").unwrap();
    let s = share();
    let services = Services {
        stub_data: s.west.clone(),
        recall: s.west.clone(),
        changes: s.changes.clone(),
    };
    let err = Core::new(&file, CoreConfig::default(), services.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/f") && err.contains("directory"), "{err}");
    let err = Core::new(&tmp.path().join("missing"), CoreConfig::default(), services)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("missing"), "{err}");
}
