//! The west directory tree as an object store: where objects live, how they are written
//! atomically and durably, and how POSIX metadata is applied to them.
//!
//! All functions here are blocking; the S3 layer calls them from `spawn_blocking`. Nothing
//! here follows a symlink inside a bucket: a path whose ancestor is a symlink is treated as
//! absent, so a link a west admin left behind can never lead a request outside the root.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use md5::{Digest, Md5};

use crate::error::{Error, Result};
use crate::keys::ObjectKey;
use crate::meta::ObjectMeta;

/// The gateway's own directory under the root; not a valid bucket name, so never listed.
pub const STATE_DIR: &str = ".gpair-gateway";

#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    tmp: PathBuf,
    multipart: PathBuf,
    fsync: bool,
    /// Striped locks serializing the read-modify-write of one object's metadata (SetAttrObj,
    /// batch metadata updates, in-place copies, the swap of a PUT) so none undoes another.
    key_locks: Vec<std::sync::Mutex<()>>,
}

/// Stripes of [`Store::lock_key`].
const KEY_LOCK_STRIPES: usize = 64;

/// An object found on disk.
#[derive(Debug)]
pub struct Found {
    pub path: PathBuf,
    pub md: std::fs::Metadata,
    pub meta: ObjectMeta,
}

impl Found {
    /// Bytes the object serves.
    pub fn content_length(&self) -> u64 {
        self.meta.content_length(self.md.len())
    }
}

impl Store {
    /// Opens the store under `root`, creating the state directories and emptying the staging
    /// directory (no write is in flight when the gateway starts).
    pub fn open(root: &Path, fsync: bool) -> io::Result<Self> {
        let state = root.join(STATE_DIR);
        let tmp = state.join("tmp");
        let multipart = state.join("multipart");
        std::fs::create_dir_all(&tmp)?;
        std::fs::create_dir_all(&multipart)?;
        for entry in std::fs::read_dir(&tmp)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(Self {
            root: root.to_owned(),
            tmp,
            multipart,
            fsync,
            key_locks: (0..KEY_LOCK_STRIPES)
                .map(|_| std::sync::Mutex::new(()))
                .collect(),
        })
    }

    /// Holds the lock of one object key (a stripe shared with others): taken around every
    /// lookup → change → store of the object's metadata. Never held across two keys.
    pub fn lock_key(&self, bucket: &str, key: &str) -> std::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bucket.hash(&mut h);
        key.trim_end_matches('/').hash(&mut h);
        let i = (h.finish() as usize) % self.key_locks.len();
        self.key_locks[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn fsync(&self) -> bool {
        self.fsync
    }

    pub fn multipart_dir(&self) -> &Path {
        &self.multipart
    }

    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.join(bucket)
    }

    pub fn require_bucket(&self, bucket: &str) -> Result<PathBuf> {
        let dir = self.bucket_dir(bucket);
        match std::fs::symlink_metadata(&dir) {
            Ok(md) if md.is_dir() && s3s::path::check_bucket_name(bucket) => Ok(dir),
            _ => Err(Error::NoSuchBucket(bucket.to_owned())),
        }
    }

    pub fn object_path(&self, bucket: &str, key: &ObjectKey) -> PathBuf {
        self.bucket_dir(bucket).join(key.rel_path())
    }

    /// Whether every ancestor of `key` inside the bucket is a real directory (or absent).
    fn ancestors_are_dirs(&self, bucket_dir: &Path, key: &ObjectKey) -> bool {
        let rel = key.rel_path();
        let mut p = bucket_dir.to_path_buf();
        let components: Vec<_> = rel.components().collect();
        for c in components.iter().take(components.len().saturating_sub(1)) {
            p.push(c);
            match std::fs::symlink_metadata(&p) {
                Ok(md) if md.is_dir() => {}
                Ok(_) => return false,
                Err(_) => return true,
            }
        }
        true
    }

    /// Looks an object up. Implicit directories are not objects; `dir/` markers are.
    pub fn lookup(&self, bucket: &str, key: &ObjectKey) -> Result<Option<Found>> {
        let bucket_dir = self.require_bucket(bucket)?;
        if !self.ancestors_are_dirs(&bucket_dir, key) {
            return Ok(None);
        }
        let path = bucket_dir.join(key.rel_path());
        let md = match std::fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
        let meta = if key.is_dir() {
            if !md.is_dir() {
                return Ok(None);
            }
            match ObjectMeta::load(&path)? {
                Some(meta) if meta.dir_marker => meta,
                _ => return Ok(None),
            }
        } else {
            if !md.is_file() {
                return Ok(None);
            }
            match ObjectMeta::load(&path)? {
                Some(meta) => meta,
                None => ObjectMeta::foreign(&md),
            }
        };
        Ok(Some(Found { path, md, meta }))
    }

    /// Refuses a write of `key` that the filesystem cannot hold next to what exists: an
    /// ancestor that is a file, or (for a file key) a directory at the key's path.
    pub fn check_writable(&self, bucket_dir: &Path, key: &ObjectKey) -> Result<()> {
        let rel = key.rel_path();
        let mut p = bucket_dir.to_path_buf();
        let mut so_far = String::new();
        let components: Vec<_> = rel.components().collect();
        for (i, c) in components.iter().enumerate() {
            p.push(c);
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(&c.as_os_str().to_string_lossy());
            let last = i + 1 == components.len();
            match std::fs::symlink_metadata(&p) {
                Err(_) => return Ok(()),
                Ok(md) if md.is_dir() => {
                    if last && !key.is_dir() {
                        return Err(Error::KeyConflict(format!(
                            "key {key} conflicts with the prefix {so_far}/, which holds other keys"
                        )));
                    }
                }
                Ok(md) if md.is_file() && last && !key.is_dir() => {}
                Ok(_) => {
                    return Err(Error::KeyConflict(format!(
                        "key {key} conflicts with the object {so_far}: a key cannot be both an object and a prefix here"
                    )))
                }
            }
        }
        Ok(())
    }

    /// A new empty file in the staging directory.
    pub fn staging_file(&self) -> io::Result<(PathBuf, File)> {
        let path = self.tmp.join(uuid::Uuid::new_v4().simple().to_string());
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)?;
        Ok((path, file))
    }

    /// Creates the missing directories of `dir` (below the bucket), durably.
    pub fn create_dirs(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.create_dirs(parent)?;
        }
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
            Err(e) => return Err(e),
        }
        if let Some(parent) = dir.parent() {
            self.sync_dir(parent)?;
        }
        Ok(())
    }

    pub fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.fsync {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Moves a finished staging file over `dest` (creating parents) and makes it durable.
    pub fn install(&self, staged: &Path, dest: &Path) -> io::Result<()> {
        let parent = dest
            .parent()
            .ok_or_else(|| io::Error::other("object path has no parent"))?;
        self.create_dirs(parent)?;
        std::fs::rename(staged, dest)?;
        self.sync_dir(parent)
    }

    /// Puts back the mtime a `dir/` marker records (x-amz-meta-mtime) after something was
    /// created, removed or renamed inside it, so the west tree keeps east's directory times.
    pub fn restore_dir_mtime(&self, dir: &Path) {
        if let Ok(Some(meta)) = ObjectMeta::load(dir) {
            if meta.dir_marker && meta.user.contains_key("mtime") {
                if let Ok(attrs) = PosixAttrs::from_user_meta(&meta.user) {
                    let only_mtime = PosixAttrs {
                        mtime: attrs.mtime,
                        ..PosixAttrs::default()
                    };
                    let _ = only_mtime.apply(dir);
                }
            }
        }
    }

    /// Removes now-empty implicit directories from `dir` up to (not including) the bucket.
    pub fn prune_empty_dirs(&self, bucket_dir: &Path, mut dir: &Path) {
        while dir != bucket_dir && dir.starts_with(bucket_dir) {
            if matches!(ObjectMeta::load(dir), Ok(Some(m)) if m.dir_marker) {
                return;
            }
            if std::fs::remove_dir(dir).is_err() {
                return;
            }
            match dir.parent() {
                Some(p) => dir = p,
                None => return,
            }
        }
    }
}

/// A file being written in the staging directory. Dropped without [`Staged::keep`], it is
/// removed, so no failed or abandoned write leaves anything behind.
pub struct Staged {
    pub path: PathBuf,
    pub file: File,
    pub md5: Md5,
    pub checksums: s3s::checksum::ChecksumHasher,
    pub written: u64,
    keep: bool,
}

impl Staged {
    pub fn create(store: &Store, checksums: s3s::checksum::ChecksumHasher) -> io::Result<Self> {
        let (path, file) = store.staging_file()?;
        Ok(Self {
            path,
            file,
            md5: Md5::new(),
            checksums,
            written: 0,
            keep: false,
        })
    }

    pub fn write(&mut self, chunks: &[Bytes]) -> io::Result<()> {
        for chunk in chunks {
            self.md5.update(chunk);
            self.checksums.update(chunk);
            self.file.write_all(chunk)?;
            self.written += chunk.len() as u64;
        }
        Ok(())
    }

    /// The staging file was renamed into place; do not remove it.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// POSIX attributes carried in s3fs-fuse's `x-amz-meta-*` headers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PosixAttrs {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// (seconds, nanoseconds)
    pub mtime: Option<(i64, u32)>,
}

impl PosixAttrs {
    /// Reads them from user metadata; values that do not parse are refused by name.
    pub fn from_user_meta(user: &std::collections::BTreeMap<String, String>) -> Result<Self> {
        let int = |name: &str| -> Result<Option<u32>> {
            match user.get(name) {
                None => Ok(None),
                Some(v) => v.trim().parse::<u32>().map(Some).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "x-amz-meta-{name}: {v:?} is not a non-negative integer"
                    ))
                }),
            }
        };
        let mtime = match user.get("mtime") {
            None => None,
            Some(v) => Some(parse_mtime(v).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "x-amz-meta-mtime: {v:?} is not seconds since the epoch"
                ))
            })?),
        };
        Ok(Self {
            mode: int("mode")?,
            uid: int("uid")?,
            gid: int("gid")?,
            mtime,
        })
    }

    /// Applies them to an open file. Ownership needs privileges; without them it is skipped.
    pub fn apply(&self, path: &Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if self.uid.is_some() || self.gid.is_some() {
            if let Err(e) = std::os::unix::fs::lchown(path, self.uid, self.gid) {
                if e.raw_os_error() != Some(libc::EPERM) {
                    return Err(e);
                }
                tracing::debug!(path = %path.display(), "no privilege to chown; ownership not applied");
            }
        }
        if let Some(mode) = self.mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))?;
        }
        if let Some((secs, nanos)) = self.mtime {
            let c =
                std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL")
                    })?;
            let times = [
                libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_OMIT,
                },
                libc::timespec {
                    tv_sec: secs,
                    tv_nsec: i64::from(nanos),
                },
            ];
            // SAFETY: c is a valid C string and times points at two timespecs.
            let r = unsafe {
                libc::utimensat(
                    libc::AT_FDCWD,
                    c.as_ptr(),
                    times.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// `"1600000000"`, `"1600000000.5"` → (secs, nanos).
fn parse_mtime(v: &str) -> Option<(i64, u32)> {
    let v = v.trim();
    let (negative, v) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    if secs.is_empty()
        || !secs.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: u32 = digits.parse().ok()?;
    if !negative {
        return Some((secs, nanos));
    }
    // Before 1970: -5.25 s is 5.25 s before the epoch = (-6 s, 0.75 s).
    Some(if nanos == 0 {
        (-secs, 0)
    } else {
        (-secs - 1, 1_000_000_000 - nanos)
    })
}

/// Inode number of a path (used by tests and rename checks).
pub fn inode(path: &Path) -> io::Result<u64> {
    Ok(std::fs::symlink_metadata(path)?.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtime_formats() {
        assert_eq!(parse_mtime("1600000000"), Some((1_600_000_000, 0)));
        assert_eq!(
            parse_mtime("1600000000.5"),
            Some((1_600_000_000, 500_000_000))
        );
        assert_eq!(
            parse_mtime("1600000000.123456789123"),
            Some((1_600_000_000, 123_456_789))
        );
        assert_eq!(parse_mtime("-5"), Some((-5, 0)));
        assert_eq!(parse_mtime("-5.25"), Some((-6, 750_000_000)));
        assert_eq!(parse_mtime("--5"), None);
        assert_eq!(parse_mtime("soon"), None);
    }

    #[test]
    fn conflicts_between_keys_and_prefixes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let bucket = dir.path().join("bkt");
        std::fs::create_dir_all(bucket.join("a")).unwrap();
        std::fs::write(bucket.join("f"), b"x").unwrap();
        let err = store
            .check_writable(&bucket, &ObjectKey::parse("a").unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("prefix a/"), "{err}");
        let err = store
            .check_writable(&bucket, &ObjectKey::parse("f/x").unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("object f"), "{err}");
        assert!(store
            .check_writable(&bucket, &ObjectKey::parse("a/x").unwrap())
            .is_ok());
        assert!(store
            .check_writable(&bucket, &ObjectKey::parse("f").unwrap())
            .is_ok());
        assert!(store
            .check_writable(&bucket, &ObjectKey::parse("a/").unwrap())
            .is_ok());
    }

    #[test]
    fn staged_files_vanish_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), true).unwrap();
        let s = Staged::create(&store, Default::default()).unwrap();
        let path = s.path.clone();
        assert!(path.exists());
        drop(s);
        assert!(!path.exists());
    }
}
