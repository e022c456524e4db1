//! The filesystem core of `gpair-mount` (DESIGN 3, 5.4): every FUSE operation on an east
//! share as a plain method taking and returning plain types, testable without a mount. The
//! `fuser::Filesystem` shell (not here yet) only converts arguments, calls [`Core`], replies
//! and maps [`Errno`]; see docs/mount.md.
//!
//! What the core owns: the inode table (kernel numbers ↔ paths below the share, lookup
//! counts), the table of open handles, and the rules for stubs — a stub's bytes are never
//! read from east (they are holes there) but from [`StubData`]; anything that would change a
//! stub's data asks [`Recall`] first; `stat` of a stub never does either.
//!
//! What it must never do: follow a symlink of the share while resolving a path (everything
//! is resolved beneath the share-root descriptor with no symlink followed: a share's symlinks
//! cannot lead the mount outside it), let a user read, set or remove the stub record
//! attribute, serve zeros for a stub's data, or panic.

mod errno;
mod fs;
pub mod fuse;
pub mod link;
pub mod run;
mod sys;
mod table;
pub mod west_read;

use std::path::Path;
use std::time::SystemTime;

pub use errno::Errno;
pub use fs::{Core, CoreConfig, OpenShareError, OpenState, MAX_IO};
pub use table::ROOT_INO;

use crate::tier::stub::StubRecord;

/// Attributes of an entry, from `lstat` (for a stub: its logical size, and the block count
/// its data would have, see [`Core::getattr`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// The kernel's number for the entry (not the east inode number, though usually equal).
    pub ino: u64,
    pub size: u64,
    /// 512-byte blocks.
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    /// `st_mode`: file type bits and permissions.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
}

impl Attr {
    pub fn kind(&self) -> FileKind {
        FileKind::from_mode(self.mode)
    }

    /// Permission bits (with setuid, setgid, sticky).
    pub fn perm(&self) -> u16 {
        (self.mode & 0o7777) as u16
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    pub fn from_mode(mode: u32) -> Self {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Self::Directory,
            libc::S_IFLNK => Self::Symlink,
            libc::S_IFIFO => Self::Fifo,
            libc::S_IFSOCK => Self::Socket,
            libc::S_IFCHR => Self::CharDevice,
            libc::S_IFBLK => Self::BlockDevice,
            _ => Self::Regular,
        }
    }

    fn from_dirent(d_type: u8) -> Option<Self> {
        Some(match d_type {
            libc::DT_REG => Self::Regular,
            libc::DT_DIR => Self::Directory,
            libc::DT_LNK => Self::Symlink,
            libc::DT_FIFO => Self::Fifo,
            libc::DT_SOCK => Self::Socket,
            libc::DT_CHR => Self::CharDevice,
            libc::DT_BLK => Self::BlockDevice,
            _ => return None,
        })
    }
}

/// A time to set: a given instant or "now" (UTIME_NOW).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSet {
    Now,
    At(SystemTime),
}

/// What a `setattr` changes; `None` leaves that attribute alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// Permission bits (the file type bits are ignored).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Truncate or extend to this size.
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
}

/// Filesystem statistics (`statvfs` of the share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statfs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// One directory entry. `offset` is the cookie that continues the listing *after* this
/// entry (FUSE's convention), stable for the directory stream it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub offset: i64,
    pub kind: FileKind,
    pub name: std::ffi::OsString,
}

/// Namespace changes the core reports through [`Changes`], for the backend's Notify RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// create, mkdir, symlink, link: `path` is the new entry.
    Create,
    /// Data or attributes changed: the release of a handle that wrote (or truncated at open,
    /// or fallocated), a setattr.
    Modify,
    /// unlink, rmdir.
    Delete,
    /// `path` moved to `new_path`, replacing whatever was there.
    Rename,
    /// `path` and `new_path` swapped (RENAME_EXCHANGE).
    Exchange,
}

/// Reads a stub's data from west. The core has already clamped the range to the stub's
/// logical size and never asks for an empty one; an answer of any other length than `len`
/// is refused with EIO (a short read would reach the application as zeros).
pub trait StubData: Send + Sync {
    fn read(
        &self,
        rel_path: &Path,
        stub: &StubRecord,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, Errno>;
}

/// Brings a stub's data back into its east inode and removes its stub record (DESIGN 5.3),
/// returning when that is done. The core calls it before anything that would change a
/// stub's data, with the path relative to the share root; its errno goes to the caller.
pub trait Recall: Send + Sync {
    fn recall(&self, rel_path: &Path) -> Result<(), Errno>;

    /// The stub at `rel_path` is being truncated to zero: make it an ordinary empty local
    /// file without fetching its data, serialized with any migration of it in flight (a
    /// recall in flight finishes first, and the file is then local with its data). Returns
    /// once the file is no longer a stub.
    fn discard(&self, rel_path: &Path) -> Result<(), Errno>;
}

/// Where namespace changes made through the mount are reported (paths relative to the share
/// root). Called after the change succeeded; must not block for long.
pub trait Changes: Send + Sync {
    fn changed(&self, kind: ChangeKind, path: &Path, new_path: Option<&Path>);
}

/// Write caps (DESIGN 6): told of every open for writing of a regular file and of every
/// close of one, so the backend knows which files a writer has open through this mount and
/// never releases their data under it. See `link.rs` for the protocol.
pub trait WriteCaps: Send + Sync {
    /// `rel_path` (east inode `ino`) is about to be opened for writing. An error fails the
    /// open with that errno (`EAGAIN`: the backend is releasing the file and kept it longer
    /// than its revoke wait).
    fn opening(&self, rel_path: &Path, ino: u64) -> Result<(), Errno>;

    /// A handle opened for writing of east inode `ino` was closed (or its open failed after
    /// [`WriteCaps::opening`]).
    fn closed(&self, ino: u64);
}

/// The services the core calls out to.
#[derive(Clone)]
pub struct Services {
    pub stub_data: std::sync::Arc<dyn StubData>,
    pub recall: std::sync::Arc<dyn Recall>,
    pub changes: std::sync::Arc<dyn Changes>,
}
