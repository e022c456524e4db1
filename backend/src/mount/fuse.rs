//! The `fuser::Filesystem` shell over [`Core`]: converts arguments, calls the core, replies,
//! and maps [`Errno`]. Its own decisions are about the kernel only:
//!
//! - **Passthrough** (kernel ≥ 6.9): an open of a local regular file hands the file to the
//!   kernel, which then reads and writes it without asking us. Never for a stub (its east
//!   bytes are holes), and never while the inode has an open that is not passthrough (the
//!   kernel refuses to mix the two on one inode). A handle opened for writing this way is
//!   reported as written at release, since the core does not see its writes.
//! - **Ownership** under `allow_other`: the core creates entries with the mount's
//!   credentials; the shell then gives new entries the caller's uid (and gid, unless the
//!   parent directory is setgid). The kernel checks permissions (`default_permissions`).
//! - Blocking: calls that may wait on west (reads, writes, opens for writing, creates,
//!   resizes, fallocate) run on a blocking pool and reply from there, so the session's worker
//!   threads stay free for local files however many readers wait on an unreachable west.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use fuser::{
    BackingId, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::west_read::WestReader;
use super::{Attr, Core, Errno, FileKind, SetAttr, TimeSet};

/// How long the kernel may cache attributes and names. Short: the backend changes files
/// behind the mount's back (offload, recall), though never their size or contents.
const TTL: Duration = Duration::from_secs(1);

/// Settings of the shell.
#[derive(Debug, Clone, Copy)]
pub struct ShellConfig {
    /// Use FUSE passthrough for local files where the kernel offers it.
    pub passthrough: bool,
    /// Hand new entries to the caller's uid/gid (the mount runs as root for others).
    pub own_for_caller: bool,
}

pub struct GpairFs {
    shell: Arc<Shell>,
    /// Where calls that may wait on west (reads of stubs, recalls before writes) run, so
    /// that the session's worker threads stay free for everything else.
    pool: tokio::runtime::Handle,
}

/// The shell's state, shared with the calls running on the pool.
pub struct Shell {
    core: Arc<Core>,
    reader: Option<Arc<WestReader>>,
    config: ShellConfig,
    /// Set at init: the kernel agreed to passthrough.
    passthrough: AtomicBool,
    opens: Mutex<Opens>,
}

/// How the kernel reads and writes an open file.
enum How {
    /// Directly, through the backing file.
    Passthrough(Arc<BackingId>),
    /// Through the mount, with these open flags.
    Through(FopenFlags),
}

/// Open files as the kernel sees them.
#[derive(Default)]
struct Opens {
    /// Passthrough handles and their backing files; one backing file per inode.
    backing_of_fh: HashMap<u64, Arc<BackingId>>,
    backing_of_ino: HashMap<u64, Weak<BackingId>>,
    /// Opens per inode that are not passthrough.
    cached: HashMap<u64, usize>,
    cached_fh: HashMap<u64, u64>,
}

impl GpairFs {
    pub fn new(
        core: Arc<Core>,
        reader: Option<Arc<WestReader>>,
        config: ShellConfig,
        pool: tokio::runtime::Handle,
    ) -> Self {
        Self {
            shell: Arc::new(Shell {
                core,
                reader,
                config,
                passthrough: AtomicBool::new(false),
                opens: Mutex::new(Opens::default()),
            }),
            pool,
        }
    }

    /// Runs `f` with the shell on the pool (it replies itself).
    fn off_thread(&self, f: impl FnOnce(&Shell) + Send + 'static) {
        let shell = Arc::clone(&self.shell);
        drop(self.pool.spawn_blocking(move || f(&shell)));
    }
}

impl std::ops::Deref for GpairFs {
    type Target = Shell;

    fn deref(&self) -> &Shell {
        &self.shell
    }
}

impl Shell {
    fn opens(&self) -> std::sync::MutexGuard<'_, Opens> {
        self.opens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives a new entry to the caller (see the module doc). A failure is logged: the entry
    /// exists, owned by the mount.
    fn own(&self, (uid, gid): (u32, u32), parent: u64, attr: &mut Attr) {
        if !self.config.own_for_caller || (uid == attr.uid && gid == attr.gid) {
            return;
        }
        let setgid = self
            .core
            .getattr(parent, None)
            .is_ok_and(|p| p.mode & libc::S_ISGID != 0);
        let set = SetAttr {
            uid: Some(uid),
            gid: (!setgid).then_some(gid),
            ..SetAttr::default()
        };
        match self.core.setattr(attr.ino, None, &set) {
            Ok(a) => *attr = a,
            Err(e) => tracing::warn!(
                ino = attr.ino,
                uid,
                "giving a new entry to its creator failed: {e}"
            ),
        }
    }

    /// Replies with a new entry, given to the caller first.
    fn new_entry(&self, req: &Request, parent: u64, r: Result<Attr, Errno>, reply: ReplyEntry) {
        entry_reply(
            reply,
            r.map(|mut a| {
                self.own((req.uid(), req.gid()), parent, &mut a);
                a
            }),
        );
    }

    /// Decides how the kernel reads the file just opened as `fh`: passthrough for a local
    /// file, through us otherwise.
    fn open_mode(
        &self,
        ino: u64,
        fh: u64,
        flags: i32,
        backing: impl FnOnce(&std::os::fd::OwnedFd) -> std::io::Result<BackingId>,
    ) -> How {
        let state = match self.core.open_state(fh) {
            Ok(s) => s,
            Err(_) => return self.cached_open(ino, fh),
        };
        if let Some(stub) = &state.stub {
            if let Some(r) = &self.reader {
                r.opened(&state.path, stub);
            }
            self.cached_open(ino, fh);
            // An offloaded file's data cannot change while it is one: what the kernel cached
            // of it at an earlier open is still right (and a changed mtime drops it anyway,
            // FUSE_AUTO_INVAL_DATA).
            return How::Through(FopenFlags::FOPEN_KEEP_CACHE);
        }
        if !self.passthrough.load(Ordering::Relaxed) {
            return self.cached_open(ino, fh);
        }
        let mut o = self.opens();
        if o.cached.get(&ino).is_some_and(|n| *n > 0) {
            drop(o);
            return self.cached_open(ino, fh);
        }
        let id = match o.backing_of_ino.get(&ino).and_then(Weak::upgrade) {
            Some(id) => id,
            None => match backing(&state.fd) {
                Ok(id) => {
                    let id = Arc::new(id);
                    o.backing_of_ino.insert(ino, Arc::downgrade(&id));
                    id
                }
                Err(e) => {
                    tracing::debug!(ino, "passthrough refused ({e}); serving through the mount");
                    drop(o);
                    return self.cached_open(ino, fh);
                }
            },
        };
        o.backing_of_fh.insert(fh, Arc::clone(&id));
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            let _ = self.core.mark_written(fh);
        }
        How::Passthrough(id)
    }

    fn cached_open(&self, ino: u64, fh: u64) -> How {
        let mut o = self.opens();
        *o.cached.entry(ino).or_default() += 1;
        o.cached_fh.insert(fh, ino);
        How::Through(FopenFlags::empty())
    }

    fn closed(&self, fh: u64) {
        let mut o = self.opens();
        o.backing_of_fh.remove(&fh);
        if let Some(ino) = o.cached_fh.remove(&fh) {
            if let Some(n) = o.cached.get_mut(&ino) {
                *n -= 1;
                if *n == 0 {
                    o.cached.remove(&ino);
                }
            }
        }
        if o.backing_of_ino.len() > 4096 {
            o.backing_of_ino.retain(|_, w| w.strong_count() > 0);
        }
    }
}

fn err(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.raw())
}

fn kind(k: FileKind) -> FileType {
    match k {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: SystemTime::UNIX_EPOCH,
        kind: kind(a.kind()),
        perm: a.perm(),
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(t),
    }
}

fn empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(err(e)),
    }
}

fn attr_reply(reply: ReplyAttr, r: Result<Attr, Errno>) {
    match r {
        Ok(a) => reply.attr(&TTL, &file_attr(&a)),
        Err(e) => reply.error(err(e)),
    }
}

fn entry_reply(reply: ReplyEntry, r: Result<Attr, Errno>) {
    match r {
        Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
        Err(e) => reply.error(err(e)),
    }
}

fn reply_xattr(value: Vec<u8>, size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(u32::try_from(value.len()).unwrap_or(u32::MAX));
    } else if value.len() > size as usize {
        reply.error(err(Errno::ERANGE));
    } else {
        reply.data(&value);
    }
}

impl Filesystem for GpairFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        // The kernel's read-ahead for the mount can only be lowered here (it offers its
        // default, 128 KiB); `run` raises it through sysfs once mounted.
        let _ = config.set_max_background(64);
        let wanted = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_AUTO_INVAL_DATA;
        let _ = config.add_capabilities(wanted & config.capabilities());
        if self.config.passthrough && config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH) {
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            self.passthrough.store(ok, Ordering::Relaxed);
        }
        tracing::info!(
            passthrough = self.passthrough.load(Ordering::Relaxed),
            kernel = %format!("{:?}", config.kernel_abi()),
            "mounted"
        );
        Ok(())
    }

    fn destroy(&mut self) {
        tracing::info!("unmounted");
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        entry_reply(reply, self.core.lookup(parent.0, name))
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.core.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        attr_reply(reply, self.core.getattr(ino.0, fh.map(|f| f.0)))
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
        };
        let fh = fh.map(|f| f.0);
        if set.size.is_some() {
            // Resizing a stub recalls it (or empties it through the backend): on the pool.
            self.off_thread(move |s| attr_reply(reply, s.core.setattr(ino.0, fh, &set)));
        } else {
            attr_reply(reply, self.core.setattr(ino.0, fh, &set));
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.core.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(err(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self
            .core
            .mknod(parent.0, name, mode & !umask, u64::from(rdev));
        self.new_entry(req, parent.0, r, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.new_entry(
            req,
            parent.0,
            self.core.mkdir(parent.0, name, mode & !umask),
            reply,
        )
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.core.unlink(parent.0, name))
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.core.rmdir(parent.0, name))
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.new_entry(
            req,
            parent.0,
            self.core.symlink(parent.0, link_name, target.as_os_str()),
            reply,
        )
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            self.core
                .rename(parent.0, name, newparent.0, newname, flags.bits()),
        )
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        entry_reply(reply, self.core.link(ino.0, newparent.0, newname))
    }

    /// An open for writing may wait for a recall: on the pool.
    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let open = move |s: &Shell| {
            let fh = match s.core.open(ino.0, flags.0) {
                Ok(fh) => fh,
                Err(e) => return reply.error(err(e)),
            };
            match s.open_mode(ino.0, fh, flags.0, |fd| reply.open_backing(fd)) {
                How::Passthrough(id) => {
                    reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
                }
                How::Through(f) => reply.opened(FileHandle(fh), f),
            }
        };
        if flags.0 & (libc::O_ACCMODE | libc::O_TRUNC) == libc::O_RDONLY {
            open(self);
        } else {
            self.off_thread(open);
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // A read of a stub may wait on west.
        self.off_thread(move |s| match s.core.read(fh.0, offset, size as usize) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(err(e)),
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // A write to a stub recalls it first.
        let data = data.to_vec();
        self.off_thread(move |s| match s.core.write(fh.0, offset, &data) {
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => reply.error(err(e)),
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.core.flush(fh.0))
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.core.release(fh.0);
        self.closed(fh.0);
        empty(reply, r);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.core.fsync(fh.0, datasync))
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.core.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.core.readdir(fh.0, offset as i64, |e| {
            reply.add(INodeNo(e.ino), e.offset as u64, kind(e.kind), &e.name)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self.core.readdirplus(fh.0, offset as i64, |e, a| {
            reply.add(
                INodeNo(e.ino),
                e.offset as u64,
                &e.name,
                &TTL,
                &file_attr(a),
                Generation(0),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.core.releasedir(fh.0))
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.core.fsyncdir(fh.0, datasync))
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.core.statfs(ino.0) {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(err(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.core.setxattr(ino.0, name, value, flags))
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.core.getxattr(ino.0, name) {
            Ok(v) => reply_xattr(v, size, reply),
            Err(e) => reply.error(err(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.core.listxattr(ino.0) {
            Ok(v) => reply_xattr(v, size, reply),
            Err(e) => reply.error(err(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.core.removexattr(ino.0, name))
    }

    /// The kernel checks permissions itself (`default_permissions`); what reaches here is
    /// only asked to confirm the entry exists.
    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.core.getattr(ino.0, None) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        // Over an existing stub, a create for writing recalls it: on the pool.
        let caller = (req.uid(), req.gid());
        let name = name.to_os_string();
        self.off_thread(move |s| {
            let (mut a, fh) = match s.core.create(parent.0, &name, mode & !umask, flags) {
                Ok(r) => r,
                Err(e) => return reply.error(err(e)),
            };
            s.own(caller, parent.0, &mut a);
            let attr = file_attr(&a);
            match s.open_mode(a.ino, fh, flags, |fd| reply.open_backing(fd)) {
                How::Passthrough(id) => reply.created_passthrough(
                    &TTL,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                    &id,
                ),
                How::Through(f) => reply.created(&TTL, &attr, Generation(0), FileHandle(fh), f),
            }
        });
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.off_thread(move |s| empty(reply, s.core.fallocate(fh.0, offset, length, mode)));
    }
}
