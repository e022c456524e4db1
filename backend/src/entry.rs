//! What the backend knows about one east entry: its kind and POSIX metadata, read with
//! `lstat` (never following symlinks). Shared by metadata sync and the west stores.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl EntryKind {
    pub fn from_mode(mode: u32) -> Self {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Self::Dir,
            libc::S_IFLNK => Self::Symlink,
            libc::S_IFIFO => Self::Fifo,
            libc::S_IFSOCK => Self::Socket,
            libc::S_IFCHR => Self::CharDev,
            libc::S_IFBLK => Self::BlockDev,
            _ => Self::File,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Dir => "dir",
            Self::Symlink => "symlink",
            Self::Fifo => "fifo",
            Self::Socket => "socket",
            Self::CharDev => "chardev",
            Self::BlockDev => "blockdev",
        }
    }
}

/// POSIX metadata of an east entry, as mirrored on west.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    pub kind: EntryKind,
    /// Logical size in bytes (0 for directories and special files).
    pub size: u64,
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Change time, nanoseconds since the epoch (part of the data version).
    pub ctime_ns: i64,
    pub ino: u64,
    pub nlink: u64,
    /// Device number of character and block devices.
    pub rdev: u64,
    /// Target of a symlink, raw bytes.
    pub symlink_target: Option<Vec<u8>>,
}

impl EntryMeta {
    /// Reads an entry's metadata (and a symlink's target) without following symlinks.
    pub fn read(path: &Path) -> std::io::Result<Self> {
        let md = std::fs::symlink_metadata(path)?;
        let kind = EntryKind::from_mode(md.mode());
        let symlink_target = if kind == EntryKind::Symlink {
            Some(
                std::os::unix::ffi::OsStrExt::as_bytes(std::fs::read_link(path)?.as_os_str())
                    .to_vec(),
            )
        } else {
            None
        };
        Ok(Self {
            kind,
            size: if matches!(kind, EntryKind::File | EntryKind::Symlink) {
                md.size()
            } else {
                0
            },
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            ino: md.ino(),
            nlink: md.nlink(),
            rdev: md.rdev(),
            symlink_target,
        })
    }
}
