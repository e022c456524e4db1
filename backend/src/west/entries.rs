//! The entry layer shared by every [`WestStore`]: how an east entry becomes a west object
//! (metadata headers, placeholders, directory markers, `.gpair-long/` keys), how listings are
//! decoded, and how renames keep long keys right. It is written once over [`ObjectOps`], the
//! handful of object primitives each backend provides (the gateway, any S3, memory), so the
//! in-memory store used by unit tests runs exactly the code the real stores run.

use std::collections::BTreeMap;

use async_trait::async_trait;
use base64::Engine as _;
use futures::StreamExt as _;

use super::keys::{self, WestKey, LONG_PREFIX, MAX_ENTRY_KEY_BYTES, PATH_META};
use super::{CheckFailure, Dialect, SetAttr, WestEntry, WestError, WestStore};
use crate::entry::{EntryKind, EntryMeta};

/// `x-amz-meta-*` names (without the prefix) written for every entry.
pub mod meta_names {
    pub const MODE: &str = "mode";
    pub const UID: &str = "uid";
    pub const GID: &str = "gid";
    /// Seconds since the epoch with nine decimals, e.g. `1600000000.123456789`.
    pub const MTIME: &str = "mtime";
    /// Only for modification times before 1970 (which `mtime` cannot carry: the gateway
    /// refuses negative values): the signed value, e.g. `-1.500000000`.
    pub const GPAIR_MTIME: &str = "gpair-mtime";
    pub const KIND: &str = "gpair-kind";
    pub const SIZE: &str = "gpair-size";
    pub const INO: &str = "gpair-ino";
    pub const SYMLINK: &str = "gpair-symlink";
    pub const RDEV: &str = "gpair-rdev";
    /// CRC32C of a file's whole data, 8 lower-case hex digits (set by an offload).
    pub const CRC32C: &str = "gpair-crc32c";
    pub const PATH: &str = super::PATH_META;
}

/// S3's limit on user metadata (names without `x-amz-meta-` plus values), in bytes.
pub const MAX_USER_METADATA: usize = 2048;

/// How many HEAD requests a listing keeps in flight.
const LIST_CONCURRENCY: usize = 16;
/// How many objects a copy + delete rename moves at once.
const RENAME_CONCURRENCY: usize = 16;

/// What a HEAD says about one object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjInfo {
    /// Bytes of data the object holds (`Content-Length`; 0 for placeholders).
    pub data_len: u64,
    /// User metadata, names lower-case without `x-amz-meta-`.
    pub meta: BTreeMap<String, String>,
    /// The object's gpair-name (gateway header or s3 tag), decoded.
    pub gpair_name: Option<String>,
}

/// Result of a native move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveOutcome {
    Moved,
    SourceMissing,
    DestinationExists,
}

/// The primitives that mean the same in every dialect: bucket checks, deletes and listings.
/// Both S3 dialects get them once, from their shared SDK client (`super::sdk::SdkBacked`).
/// Every method maps "not found" the way its doc says and classifies every other failure.
#[async_trait]
pub trait PlainOps: Send + Sync + 'static {
    async fn check(&self, bucket: Option<&str>) -> Result<(), CheckFailure>;
    async fn bucket_exists(&self, bucket: &str) -> Result<bool, WestError>;
    async fn create_bucket(&self, bucket: &str) -> Result<(), WestError>;
    /// A missing object is not an error.
    async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), WestError>;
    /// Every key starting with `prefix`, in key order, with its data length.
    async fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<(String, u64)>, WestError>;
    /// Whether any key starts with `prefix`.
    async fn any_key(&self, bucket: &str, prefix: &str) -> Result<bool, WestError>;
}

/// Object-level primitives of one west backend, where the dialects differ. Keys are object
/// keys (`dir/` for markers). Every method maps "not found" the way its doc says and
/// classifies every other failure.
#[async_trait]
pub trait ObjectOps: PlainOps + super::data::DataOps {
    fn dialect(&self) -> Dialect;
    /// Whether [`ObjectOps::move_native`] is available (one request moves a whole prefix).
    fn native_rename(&self) -> bool {
        false
    }
    /// `None` when the object does not exist.
    async fn head_object(&self, bucket: &str, key: &str) -> Result<Option<ObjInfo>, WestError>;
    /// Writes a zero-length object (a directory marker when `key` ends in `/`) with this
    /// metadata; with `gpair_name` it is a placeholder (logical size in `gpair-size`).
    async fn put_empty(
        &self,
        bucket: &str,
        key: &str,
        meta: &BTreeMap<String, String>,
        gpair_name: Option<&str>,
    ) -> Result<(), WestError>;
    /// Copies an object that holds data (`from == to` allowed with `replace`). `replace`:
    /// new metadata and gpair-name; `None`: keep both. `size` is the source's data length.
    async fn copy_object(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        size: u64,
        replace: Option<(&BTreeMap<String, String>, Option<&str>)>,
    ) -> Result<(), WestError>;
    /// Moves one object, or a whole prefix when both keys end in `/`. `replace` (objects only)
    /// overwrites an existing destination.
    async fn move_native(
        &self,
        _bucket: &str,
        _from: &str,
        _to: &str,
        _replace: bool,
    ) -> Result<MoveOutcome, WestError> {
        Err(WestError::permanent(
            "native rename is not available on this dialect",
        ))
    }
    /// SetAttrObj with the gateway's semantics (docs/gateway.md).
    async fn set_attr(
        &self,
        bucket: &str,
        key: &str,
        attr: SetAttr,
        value: &str,
    ) -> Result<(), WestError>;
}

/// A [`WestStore`] over any [`ObjectOps`]. The dialect stores are type aliases of this:
/// [`super::gateway::GatewayWest`], [`super::s3::S3West`], [`super::memory::MemoryWest`].
pub struct EntryStore<O> {
    ops: O,
}

impl<O: ObjectOps> EntryStore<O> {
    pub fn from_ops(ops: O) -> Self {
        Self { ops }
    }

    /// The object primitives (for tests and tools that need to look below the entry layer).
    pub fn ops(&self) -> &O {
        &self.ops
    }
}

/// `1600000000.123456789` (only for non-negative times).
fn format_mtime(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let abs = ns.unsigned_abs();
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
}

/// Parses `secs[.fraction]` (optionally signed) into nanoseconds.
pub fn parse_mtime(v: &str) -> Option<i64> {
    let v = v.trim();
    let (neg, v) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: i64 = digits.parse().ok()?;
    let total = secs.checked_mul(1_000_000_000)?.checked_add(nanos)?;
    Some(if neg { -total } else { total })
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

fn unb64(v: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(v.trim().trim_end_matches('='))
        .ok()
}

/// Size of user metadata as S3 counts it.
fn metadata_size(meta: &BTreeMap<String, String>) -> usize {
    meta.iter().map(|(k, v)| k.len() + v.len()).sum()
}

fn check_metadata_size(meta: &BTreeMap<String, String>, key: &str) -> Result<(), WestError> {
    let size = metadata_size(meta);
    if size > MAX_USER_METADATA {
        let what = if meta.contains_key(meta_names::PATH) {
            "the path of this long-named entry"
        } else if meta.contains_key(meta_names::SYMLINK) {
            "the symlink target"
        } else {
            "the entry's metadata"
        };
        return Err(WestError::permanent(format!(
            "cannot record {key} on west: {what} makes {size} bytes of user metadata; S3 allows \
             {MAX_USER_METADATA} (see docs/west-keys.md, limits)"
        )));
    }
    Ok(())
}

/// The user metadata of an east entry (docs/west-keys.md, "Metadata").
pub fn entry_metadata(meta: &EntryMeta, key: &WestKey) -> BTreeMap<String, String> {
    use meta_names as n;
    let mut m = BTreeMap::new();
    m.insert(n::MODE.into(), meta.mode.to_string());
    m.insert(n::UID.into(), meta.uid.to_string());
    m.insert(n::GID.into(), meta.gid.to_string());
    if meta.mtime_ns >= 0 {
        m.insert(n::MTIME.into(), format_mtime(meta.mtime_ns));
    } else {
        m.insert(n::GPAIR_MTIME.into(), format_mtime(meta.mtime_ns));
    }
    m.insert(n::KIND.into(), meta.kind.as_str().into());
    m.insert(n::SIZE.into(), meta.size.to_string());
    m.insert(n::INO.into(), meta.ino.to_string());
    if meta.kind == EntryKind::Symlink {
        m.insert(
            n::SYMLINK.into(),
            b64(meta.symlink_target.as_deref().unwrap_or_default()),
        );
    }
    if matches!(meta.kind, EntryKind::CharDev | EntryKind::BlockDev) {
        m.insert(n::RDEV.into(), meta.rdev.to_string());
    }
    if let Some(p) = key.recorded_path() {
        m.insert(n::PATH.into(), p);
    }
    m
}

/// Builds the listing/HEAD view of an object.
pub fn west_entry(key: String, rel_path: Vec<u8>, is_dir: bool, info: &ObjInfo) -> WestEntry {
    use meta_names as n;
    let int = |name: &str| {
        info.meta
            .get(name)
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let u32_of = |name: &str| {
        info.meta
            .get(name)
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    WestEntry {
        key,
        rel_path,
        data_len: info.data_len,
        logical_size: int(n::SIZE),
        gpair_name: info.gpair_name.clone(),
        is_dir,
        mode: u32_of(n::MODE),
        uid: u32_of(n::UID),
        gid: u32_of(n::GID),
        mtime_ns: info
            .meta
            .get(n::MTIME)
            .or_else(|| info.meta.get(n::GPAIR_MTIME))
            .and_then(|v| parse_mtime(v)),
        symlink_target: info.meta.get(n::SYMLINK).and_then(|v| unb64(v)),
        crc32c: info
            .meta
            .get(n::CRC32C)
            .and_then(|v| u32::from_str_radix(v.trim(), 16).ok()),
    }
}

fn empty_key_error(op: &str) -> WestError {
    WestError::permanent(format!(
        "{op}: the empty key (the root of a share at the top of a bucket) has no west entry"
    ))
}

/// The long entries' data (`.gpair-long/…`) with their recorded full paths.
struct LongEntry {
    object_key: String,
    full: Vec<u8>,
    info: ObjInfo,
}

impl<O: ObjectOps> EntryStore<O> {
    /// Whether the existing object at a file's key holds the west copy of this very east
    /// file (west owns the data: gpair-name NULL, same inode, same size). A metadata update
    /// must then keep the data instead of writing a placeholder over it.
    /// The same holds for data an offload has uploaded but not yet marked as west's (gpair-name
    /// still set, data present).
    fn holds_owned_data(existing: &ObjInfo, meta: &EntryMeta) -> bool {
        (existing.gpair_name.is_none() || existing.data_len > 0)
            && existing.data_len == meta.size
            && existing.meta.get(meta_names::INO).map(|v| v.trim())
                == Some(meta.ino.to_string().as_str())
            && existing
                .meta
                .get(meta_names::KIND)
                .is_none_or(|k| k == EntryKind::File.as_str())
    }

    /// The object key and metadata of a file's data upload.
    fn data_target(
        key: &WestKey,
        meta: &EntryMeta,
        crc32c: u32,
    ) -> Result<(String, BTreeMap<String, String>), WestError> {
        if key.key.is_empty() || meta.kind != EntryKind::File {
            return Err(WestError::permanent(format!(
                "only regular files carry data to west ({:?} is a {})",
                key.key,
                meta.kind.as_str()
            )));
        }
        let obj = key.object_key(false);
        let mut md = entry_metadata(meta, key);
        md.insert(meta_names::CRC32C.into(), format!("{crc32c:08x}"));
        check_metadata_size(&md, &obj)?;
        Ok((obj, md))
    }

    /// Re-creates the object at `src` under `dst` (with `dst`'s recorded path), then deletes
    /// `src`. `Ok(false)` when `src` does not exist.
    async fn relocate(
        &self,
        bucket: &str,
        src: &str,
        dst: &WestKey,
        is_dir: bool,
    ) -> Result<bool, WestError> {
        let Some(info) = self.ops.head_object(bucket, src).await? else {
            return Ok(false);
        };
        let dst_obj = dst.object_key(is_dir);
        if dst_obj == src {
            return Ok(true);
        }
        let mut meta = info.meta.clone();
        match dst.recorded_path() {
            Some(p) => meta.insert(PATH_META.into(), p),
            None => meta.remove(PATH_META),
        };
        let path_changed = meta.get(PATH_META) != info.meta.get(PATH_META);
        if is_dir || info.data_len == 0 {
            check_metadata_size(&meta, &dst_obj)?;
            self.ops
                .put_empty(bucket, &dst_obj, &meta, info.gpair_name.as_deref())
                .await?;
        } else if !path_changed && self.ops.dialect() == Dialect::S3 {
            self.ops
                .copy_object(bucket, src, &dst_obj, info.data_len, None)
                .await?;
        } else {
            check_metadata_size(&meta, &dst_obj)?;
            self.ops
                .copy_object(
                    bucket,
                    src,
                    &dst_obj,
                    info.data_len,
                    Some((&meta, info.gpair_name.as_deref())),
                )
                .await?;
        }
        self.ops.delete_object(bucket, src).await?;
        Ok(true)
    }

    /// Moves one object of a directory being renamed without native rename. A plain key that
    /// stays plain is a server-side copy that keeps everything (metadata, tags); anything else
    /// goes through [`Self::relocate`], which rewrites the recorded path.
    async fn move_one(
        &self,
        bucket: &str,
        src: &str,
        size: u64,
        dst: &WestKey,
        is_dir: bool,
    ) -> Result<(), WestError> {
        if self.ops.dialect() == Dialect::S3 && !dst.is_long() && !src.starts_with(LONG_PREFIX) {
            self.ops
                .copy_object(bucket, src, &dst.object_key(is_dir), size, None)
                .await?;
            return self.ops.delete_object(bucket, src).await;
        }
        self.relocate(bucket, src, dst, is_dir).await.map(|_| ())
    }

    /// Every `.gpair-long/` entry with its recorded path (entries that vanish meanwhile or
    /// carry no valid path are left out, with a warning for the latter).
    async fn long_entries(&self, bucket: &str) -> Result<Vec<LongEntry>, WestError> {
        let keys = self.ops.list_keys(bucket, LONG_PREFIX).await?;
        let heads = futures::stream::iter(keys)
            .map(|(k, _)| async move {
                let info = self.ops.head_object(bucket, &k).await?;
                Ok::<_, WestError>((k, info))
            })
            .buffered(LIST_CONCURRENCY);
        futures::pin_mut!(heads);
        let mut out = Vec::new();
        while let Some(r) = heads.next().await {
            let (k, info) = r?;
            let Some(info) = info else { continue };
            match keys::full_path_of(&k, info.meta.get(PATH_META).map(String::as_str)) {
                Some(full) => out.push(LongEntry {
                    object_key: k,
                    full,
                    info,
                }),
                None => {
                    tracing::warn!(bucket, key = %k, "long-key object without a valid recorded path; ignored")
                }
            }
        }
        Ok(out)
    }

    async fn exists(&self, bucket: &str, key: &WestKey, is_dir: bool) -> Result<bool, WestError> {
        if self
            .ops
            .head_object(bucket, &key.object_key(is_dir))
            .await?
            .is_some()
        {
            return Ok(true);
        }
        if is_dir && !key.is_long() {
            return self.ops.any_key(bucket, &key.object_key(true)).await;
        }
        Ok(false)
    }

    /// The source of a rename is gone: fine if the destination exists (the rename was done).
    async fn rename_source_missing(
        &self,
        bucket: &str,
        from: &WestKey,
        to: &WestKey,
        is_dir: bool,
    ) -> Result<(), WestError> {
        if self.exists(bucket, to, is_dir).await? {
            Ok(())
        } else {
            Err(WestError::permanent(format!(
                "rename {bucket}/{} -> {}: neither the source nor the destination exists",
                from.object_key(is_dir),
                to.object_key(is_dir)
            )))
        }
    }

    async fn rename_object(
        &self,
        bucket: &str,
        from: &WestKey,
        to: &WestKey,
    ) -> Result<(), WestError> {
        if self.ops.native_rename() && !from.is_long() && !to.is_long() {
            return match self
                .ops
                .move_native(bucket, &from.key, &to.key, true)
                .await?
            {
                MoveOutcome::Moved => Ok(()),
                MoveOutcome::SourceMissing => {
                    self.rename_source_missing(bucket, from, to, false).await
                }
                MoveOutcome::DestinationExists => Err(WestError::permanent(format!(
                    "rename {bucket}/{} -> {}: the destination exists",
                    from.key, to.key
                ))),
            };
        }
        if self.relocate(bucket, &from.key, to, false).await? {
            Ok(())
        } else {
            self.rename_source_missing(bucket, from, to, false).await
        }
    }

    async fn rename_dir(
        &self,
        bucket: &str,
        from: &WestKey,
        to: &WestKey,
    ) -> Result<(), WestError> {
        let undecodable = |k: &WestKey| {
            WestError::permanent(format!(
                "rename in {bucket}: {} is not a key west_key() produces",
                k.key
            ))
        };
        let from_full = from.full_path().ok_or_else(|| undecodable(from))?;
        let to_full = to.full_path().ok_or_else(|| undecodable(to))?;
        let mut from_slash = from_full.clone();
        from_slash.push(b'/');
        if to_full.starts_with(&from_slash) {
            return Err(WestError::permanent(format!(
                "rename {bucket}/{}/ -> {}/: cannot move a directory into itself",
                from.key, to.key
            )));
        }
        let new_full_of = |suffix_after_from: &[u8]| {
            let mut p = to_full.clone();
            p.extend_from_slice(suffix_after_from);
            p
        };
        let mut found = false;

        // 1. The plain-key subtree under `from/`.
        if !from.is_long() {
            let src_prefix = from.object_key(true);
            if self.ops.native_rename() && !to.is_long() {
                // Entries whose key would grow past the limit move to .gpair-long first.
                if to.key.len() > from.key.len() {
                    for (k, _) in self.ops.list_keys(bucket, &src_prefix).await? {
                        let suffix = &k[src_prefix.len()..];
                        let is_dir = k.ends_with('/');
                        let new_len = to.key.len() + 1 + suffix.trim_end_matches('/').len();
                        if new_len <= MAX_ENTRY_KEY_BYTES {
                            continue;
                        }
                        let Some(rest) = keys::unescape_key(suffix.trim_end_matches('/')) else {
                            tracing::warn!(bucket, key = %k, "foreign key under a renamed directory; moved as is");
                            continue;
                        };
                        let mut tail = b"/".to_vec();
                        tail.extend_from_slice(&rest);
                        let dst = keys::west_key_for_path(&new_full_of(&tail));
                        found |= self.relocate(bucket, &k, &dst, is_dir).await?;
                    }
                }
                let to_prefix = to.object_key(true);
                match self
                    .ops
                    .move_native(bucket, &src_prefix, &to_prefix, false)
                    .await?
                {
                    MoveOutcome::Moved => found = true,
                    MoveOutcome::SourceMissing => {}
                    MoveOutcome::DestinationExists => {
                        // POSIX rename replaces an empty directory: so do we, when the
                        // destination holds nothing but its own marker.
                        let dst_keys = self.ops.list_keys(bucket, &to_prefix).await?;
                        if dst_keys.iter().all(|(k, _)| *k == to_prefix) {
                            self.ops.delete_object(bucket, &to_prefix).await?;
                            match self.ops.move_native(bucket, &src_prefix, &to_prefix, false).await? {
                                MoveOutcome::Moved => found = true,
                                MoveOutcome::SourceMissing => {}
                                MoveOutcome::DestinationExists => {
                                    return Err(WestError::transient(format!(
                                        "rename {bucket}/{src_prefix} -> {to_prefix}: the destination reappeared"
                                    )))
                                }
                            }
                        } else {
                            return Err(WestError::permanent(format!(
                                "rename {bucket}/{src_prefix} -> {to_prefix}: the destination directory is not empty"
                            )));
                        }
                    }
                }
            } else {
                // Copy + delete, object by object, a few at a time.
                let mut moves = Vec::new();
                for (k, size) in self.ops.list_keys(bucket, &src_prefix).await? {
                    let suffix_key = k[src_prefix.len()..].trim_end_matches('/');
                    let dst = if suffix_key.is_empty() {
                        to.clone()
                    } else {
                        let Some(rest) = keys::unescape_key(suffix_key) else {
                            tracing::warn!(bucket, key = %k, "foreign key under a renamed directory; left in place");
                            continue;
                        };
                        let mut tail = b"/".to_vec();
                        tail.extend_from_slice(&rest);
                        keys::west_key_for_path(&new_full_of(&tail))
                    };
                    let is_dir = k.ends_with('/');
                    moves.push((k, size, dst, is_dir));
                }
                found |= !moves.is_empty();
                let results = futures::stream::iter(moves)
                    .map(|(k, size, dst, is_dir)| async move {
                        self.move_one(bucket, &k, size, &dst, is_dir).await
                    })
                    .buffer_unordered(RENAME_CONCURRENCY);
                futures::pin_mut!(results);
                while let Some(r) = results.next().await {
                    r?;
                }
            }
        }

        // 2. A long-keyed `from` has its marker under .gpair-long.
        if from.is_long() {
            found |= self
                .relocate(bucket, &from.object_key(true), to, true)
                .await?;
        }

        // 3. Long-keyed descendants (wherever `from` lives), found by their recorded path.
        for e in self.long_entries(bucket).await? {
            if let Some(rest) = e.full.strip_prefix(from_full.as_slice()) {
                if rest.first() == Some(&b'/') {
                    let dst = keys::west_key_for_path(&new_full_of(rest));
                    let is_dir = e.object_key.ends_with('/');
                    found |= self.relocate(bucket, &e.object_key, &dst, is_dir).await?;
                }
            }
        }

        if found {
            Ok(())
        } else {
            self.rename_source_missing(bucket, from, to, true).await
        }
    }
}

#[async_trait]
impl<O: ObjectOps> WestStore for EntryStore<O> {
    fn dialect(&self) -> Dialect {
        self.ops.dialect()
    }

    async fn check(&self, bucket: Option<&str>) -> Result<(), CheckFailure> {
        self.ops.check(bucket).await
    }

    async fn bucket_exists(&self, bucket: &str) -> Result<bool, WestError> {
        self.ops.bucket_exists(bucket).await
    }

    async fn create_bucket(&self, bucket: &str) -> Result<(), WestError> {
        self.ops.create_bucket(bucket).await
    }

    async fn put_entry(
        &self,
        bucket: &str,
        key: &WestKey,
        meta: &EntryMeta,
        gpair_value: &str,
    ) -> Result<(), WestError> {
        let is_dir = meta.kind == EntryKind::Dir;
        if key.key.is_empty() {
            // The bucket itself is the root directory.
            return if is_dir {
                Ok(())
            } else {
                Err(empty_key_error("put_entry"))
            };
        }
        let obj = key.object_key(is_dir);
        let md = entry_metadata(meta, key);
        check_metadata_size(&md, &obj)?;
        match meta.kind {
            EntryKind::File => {
                if gpair_value.is_empty() {
                    return Err(WestError::permanent(format!(
                        "put_entry {bucket}/{obj}: empty gpair value"
                    )));
                }
                match self.ops.head_object(bucket, &obj).await? {
                    Some(existing) if Self::holds_owned_data(&existing, meta) => {
                        // A stub's metadata changed: update it in place, keep west's data,
                        // its checksum and its gpair-name.
                        let mut md = md;
                        if let Some(c) = existing.meta.get(meta_names::CRC32C) {
                            md.insert(meta_names::CRC32C.into(), c.clone());
                        }
                        self.ops
                            .copy_object(
                                bucket,
                                &obj,
                                &obj,
                                existing.data_len,
                                Some((&md, existing.gpair_name.as_deref())),
                            )
                            .await
                    }
                    Some(existing) if existing.gpair_name.is_none() && existing.data_len > 0 => {
                        // West owns data here that is not this file's any more (appended,
                        // replaced): a placeholder would destroy it.
                        Err(WestError::owned_data(format!(
                            "{bucket}/{obj}: west owns {} bytes of data here that are not this file's ({} bytes, inode {}); not overwriting them with a placeholder",
                            existing.data_len, meta.size, meta.ino
                        )))
                    }
                    _ => {
                        self.ops
                            .put_empty(bucket, &obj, &md, Some(gpair_value))
                            .await
                    }
                }
            }
            _ => self.ops.put_empty(bucket, &obj, &md, None).await,
        }
    }

    async fn delete_entry(
        &self,
        bucket: &str,
        key: &WestKey,
        is_dir: bool,
    ) -> Result<(), WestError> {
        if key.key.is_empty() {
            return Ok(());
        }
        self.ops
            .delete_object(bucket, &key.object_key(is_dir))
            .await
    }

    async fn rename(
        &self,
        bucket: &str,
        from: &WestKey,
        to: &WestKey,
        is_dir: bool,
    ) -> Result<(), WestError> {
        if from.key.is_empty() || to.key.is_empty() {
            return Err(empty_key_error("rename"));
        }
        if from == to {
            return Ok(());
        }
        if is_dir {
            self.rename_dir(bucket, from, to).await
        } else {
            self.rename_object(bucket, from, to).await
        }
    }

    async fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<(String, u64)>, WestError> {
        self.ops.list_keys(bucket, prefix).await
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<WestEntry>, WestError> {
        let lp = keys::list_prefix(prefix);
        let plain: Vec<String> = self
            .ops
            .list_keys(bucket, &lp)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !k.starts_with(LONG_PREFIX))
            .collect();
        let heads = futures::stream::iter(plain)
            .map(|k| async move {
                let info = self.ops.head_object(bucket, &k).await?;
                Ok::<_, WestError>((k, info))
            })
            .buffered(LIST_CONCURRENCY);
        futures::pin_mut!(heads);
        let mut out = Vec::new();
        while let Some(r) = heads.next().await {
            let (k, info) = r?;
            let Some(info) = info else { continue };
            let is_dir = k.ends_with('/');
            match keys::rel_path_of(prefix, &k, None) {
                Some(rel) => out.push(west_entry(
                    k.trim_end_matches('/').to_owned(),
                    rel,
                    is_dir,
                    &info,
                )),
                None => {
                    tracing::warn!(bucket, key = %k, "object whose key gpair does not produce; not listed")
                }
            }
        }
        for e in self.long_entries(bucket).await? {
            if let Some(rel) = keys::strip_prefix(prefix, &e.full) {
                let is_dir = e.object_key.ends_with('/');
                out.push(west_entry(
                    e.object_key.trim_end_matches('/').to_owned(),
                    rel,
                    is_dir,
                    &e.info,
                ));
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn head(
        &self,
        bucket: &str,
        key: &WestKey,
        is_dir: bool,
    ) -> Result<Option<WestEntry>, WestError> {
        if key.key.is_empty() {
            return Err(empty_key_error("head"));
        }
        let Some(info) = self
            .ops
            .head_object(bucket, &key.object_key(is_dir))
            .await?
        else {
            return Ok(None);
        };
        let full = key
            .full_path()
            .unwrap_or_else(|| key.key.as_bytes().to_vec());
        Ok(Some(west_entry(key.key.clone(), full, is_dir, &info)))
    }

    async fn set_attr(
        &self,
        bucket: &str,
        key: &WestKey,
        attr: SetAttr,
        gpair_value: &str,
    ) -> Result<(), WestError> {
        if key.key.is_empty() {
            return Err(empty_key_error("set_attr"));
        }
        if gpair_value.is_empty() {
            return Err(WestError::permanent(format!(
                "set_attr {bucket}/{}: empty gpair value",
                key.key
            )));
        }
        self.ops.set_attr(bucket, &key.key, attr, gpair_value).await
    }

    async fn put_file(
        &self,
        bucket: &str,
        key: &WestKey,
        body: bytes::Bytes,
        meta: &EntryMeta,
        crc32c: u32,
        gpair_value: &str,
    ) -> Result<String, WestError> {
        let (obj, md) = Self::data_target(key, meta, crc32c)?;
        self.ops
            .put_data(bucket, &obj, body, &md, Some(gpair_value), crc32c)
            .await
    }

    async fn start_upload(
        &self,
        bucket: &str,
        key: &WestKey,
        meta: &EntryMeta,
        crc32c: u32,
        gpair_value: &str,
    ) -> Result<String, WestError> {
        let (obj, md) = Self::data_target(key, meta, crc32c)?;
        self.ops
            .create_upload(bucket, &obj, &md, Some(gpair_value))
            .await
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &WestKey,
        upload_id: &str,
        number: i32,
        body: bytes::Bytes,
    ) -> Result<String, WestError> {
        self.ops
            .upload_part(bucket, &key.object_key(false), upload_id, number, body)
            .await
    }

    async fn finish_upload(
        &self,
        bucket: &str,
        key: &WestKey,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> Result<String, WestError> {
        self.ops
            .complete_upload(bucket, &key.object_key(false), upload_id, parts)
            .await
    }

    async fn list_parts(
        &self,
        bucket: &str,
        key: &WestKey,
        upload_id: &str,
    ) -> Result<Option<Vec<super::ListedPart>>, WestError> {
        self.ops
            .list_parts(bucket, &key.object_key(false), upload_id)
            .await
    }

    async fn abort_uploads(&self, bucket: &str, key: &WestKey) -> Result<usize, WestError> {
        let obj = key.object_key(false);
        let ids = self.ops.uploads_of(bucket, &obj).await?;
        for id in &ids {
            self.ops.abort_upload(bucket, &obj, id).await?;
        }
        Ok(ids.len())
    }

    async fn read_range(
        &self,
        bucket: &str,
        key: &WestKey,
        start: u64,
        len: u64,
    ) -> Result<bytes::Bytes, WestError> {
        self.ops
            .get_range(bucket, &key.object_key(false), start, len)
            .await
    }

    async fn presign_read(
        &self,
        bucket: &str,
        key: &WestKey,
        expires: std::time::Duration,
    ) -> Result<String, WestError> {
        self.ops
            .presign_get(bucket, &key.object_key(false), expires)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtime_format_and_parse() {
        assert_eq!(
            format_mtime(1_600_000_000_123_456_789),
            "1600000000.123456789"
        );
        assert_eq!(format_mtime(0), "0.000000000");
        assert_eq!(format_mtime(-1_500_000_000), "-1.500000000");
        for ns in [
            0,
            1,
            999_999_999,
            1_600_000_000_123_456_789,
            -1,
            -1_500_000_000,
            i64::MAX / 2,
        ] {
            assert_eq!(parse_mtime(&format_mtime(ns)), Some(ns), "{ns}");
        }
        assert_eq!(parse_mtime("1600000000"), Some(1_600_000_000_000_000_000));
        assert_eq!(parse_mtime("1.5"), Some(1_500_000_000));
        assert_eq!(parse_mtime("x"), None);
        assert_eq!(parse_mtime("1.5e3"), None);
        assert_eq!(parse_mtime(""), None);
    }
}
