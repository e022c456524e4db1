//! An in-memory west (one `BTreeMap` per bucket) with the gateway's semantics: placeholders,
//! SetAttrObj with its refusals, native rename of whole prefixes, key/prefix conflicts. It
//! runs the same entry layer as the real stores ([`EntryStore`]), so unit tests of the sync
//! engine exercise the real key, metadata and rename logic without a server.
//!
//! With [`Dialect::S3`] it behaves like the `s3` dialect instead: no native rename (renames
//! are copy + delete through the entry layer) and COPY keeps gpair-name, like tags.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::entries::{
    entry_metadata, meta_names, EntryStore, MoveOutcome, ObjInfo, ObjectOps, PlainOps,
};
use super::{CheckFailure, CheckStage, Dialect, SetAttr, WestError, WestKey};
use crate::entry::EntryMeta;

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemObject {
    pub data: Vec<u8>,
    /// User metadata, names without `x-amz-meta-`.
    pub meta: BTreeMap<String, String>,
    pub gpair_name: Option<String>,
    /// Metadata only: the data lives on east (logical size in `gpair-size`).
    pub placeholder: bool,
}

type Buckets = BTreeMap<String, BTreeMap<String, MemObject>>;

/// Object primitives over memory.
pub struct MemoryOps {
    dialect: Dialect,
    buckets: Mutex<Buckets>,
    uploads: Mutex<BTreeMap<String, MemUpload>>,
}

/// A multipart upload in progress.
struct MemUpload {
    bucket: String,
    key: String,
    template: MemObject,
    parts: BTreeMap<i32, Vec<u8>>,
}

/// A [`super::WestStore`] in memory.
pub type MemoryWest = EntryStore<MemoryOps>;

impl Default for EntryStore<MemoryOps> {
    fn default() -> Self {
        Self::new()
    }
}

impl EntryStore<MemoryOps> {
    /// An empty store with the gateway's semantics.
    pub fn new() -> Self {
        Self::with_dialect(Dialect::Gateway)
    }

    pub fn with_dialect(dialect: Dialect) -> Self {
        EntryStore::from_ops(MemoryOps {
            dialect,
            buckets: Mutex::new(BTreeMap::new()),
            uploads: Mutex::new(BTreeMap::new()),
        })
    }

    /// The object stored under the object key `key` (`dir/` for markers).
    pub fn object(&self, bucket: &str, key: &str) -> Option<MemObject> {
        self.ops().lock().get(bucket)?.get(key).cloned()
    }

    /// Every object key of `bucket`, in order.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        self.ops()
            .lock()
            .get(bucket)
            .map(|b| b.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Stores data under an entry's key, as an offload's upload does (a PUT with a body and,
    /// optionally, `x-gpair-name`; the entry's metadata headers).
    pub fn put_data(
        &self,
        bucket: &str,
        key: &WestKey,
        data: Vec<u8>,
        meta: &EntryMeta,
        gpair_name: Option<&str>,
    ) -> Result<(), WestError> {
        let obj = MemObject {
            data,
            meta: entry_metadata(meta, key),
            gpair_name: gpair_name.map(str::to_owned),
            placeholder: false,
        };
        self.ops().insert(bucket, &key.key, obj)
    }
}

fn no_bucket(bucket: &str) -> WestError {
    WestError::permanent(format!("memory west: NoSuchBucket: {bucket}"))
}

fn conflict(what: String) -> WestError {
    WestError::permanent(format!("memory west: KeyConflict: {what}"))
}

/// Checks that `key` can be created: no ancestor is an object, and (for an object key) no
/// key lives below it.
fn check_writable(objects: &BTreeMap<String, MemObject>, key: &str) -> Result<(), WestError> {
    let body = key.trim_end_matches('/');
    let mut pos = 0;
    while let Some(i) = body[pos..].find('/') {
        let ancestor = &body[..pos + i];
        if objects.contains_key(ancestor) {
            return Err(conflict(format!(
                "{ancestor} is an object, so {key} cannot exist"
            )));
        }
        pos += i + 1;
    }
    if key.ends_with('/') {
        if objects.contains_key(body) {
            return Err(conflict(format!(
                "{body} is an object, so {key} cannot exist"
            )));
        }
    } else if has_prefix(objects, &format!("{key}/")) {
        return Err(conflict(format!(
            "{key}/ holds keys, so {key} cannot be an object"
        )));
    }
    Ok(())
}

fn has_prefix(objects: &BTreeMap<String, MemObject>, prefix: &str) -> bool {
    objects
        .range(prefix.to_owned()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(prefix))
}

fn keys_with_prefix(objects: &BTreeMap<String, MemObject>, prefix: &str) -> Vec<String> {
    objects
        .range(prefix.to_owned()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, _)| k.clone())
        .collect()
}

impl MemoryOps {
    /// Replaces an object behind the entry layer's back (tests of corruption and loss).
    pub fn insert_object(&self, bucket: &str, key: &str, obj: MemObject) {
        if let Some(b) = self.lock().get_mut(bucket) {
            b.insert(key.to_owned(), obj);
        }
    }

    /// Removes an object behind the entry layer's back.
    pub fn remove_object(&self, bucket: &str, key: &str) {
        if let Some(b) = self.lock().get_mut(bucket) {
            b.remove(key);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Buckets> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, bucket: &str, key: &str, obj: MemObject) -> Result<(), WestError> {
        let mut g = self.lock();
        let objects = g.get_mut(bucket).ok_or_else(|| no_bucket(bucket))?;
        check_writable(objects, key)?;
        objects.insert(key.to_owned(), obj);
        Ok(())
    }
}

#[async_trait]
impl super::data::DataOps for MemoryOps {
    async fn put_data(
        &self,
        bucket: &str,
        key: &str,
        body: bytes::Bytes,
        meta: &BTreeMap<String, String>,
        gpair_name: Option<&str>,
        crc32c: u32,
    ) -> Result<String, WestError> {
        if crc32c::crc32c(&body) != crc32c {
            return Err(WestError::permanent(format!(
                "memory west: BadDigest: {key}: the body does not match x-amz-checksum-crc32c"
            )));
        }
        let etag = format!("{:08x}", crc32c::crc32c(&body));
        self.insert(
            bucket,
            key,
            MemObject {
                data: body.to_vec(),
                meta: meta.clone(),
                gpair_name: gpair_name.map(str::to_owned),
                placeholder: false,
            },
        )?;
        Ok(etag)
    }

    async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        meta: &BTreeMap<String, String>,
        gpair_name: Option<&str>,
    ) -> Result<String, WestError> {
        if !self.lock().contains_key(bucket) {
            return Err(no_bucket(bucket));
        }
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        let id = format!("mem-{}", uploads.len() + 1);
        uploads.insert(
            id.clone(),
            MemUpload {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                template: MemObject {
                    data: Vec::new(),
                    meta: meta.clone(),
                    gpair_name: gpair_name.map(str::to_owned),
                    placeholder: false,
                },
                parts: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    async fn upload_part(
        &self,
        _bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: bytes::Bytes,
    ) -> Result<String, WestError> {
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        let u = uploads
            .get_mut(upload_id)
            .filter(|u| u.key == key)
            .ok_or_else(|| {
                WestError::permanent(format!("memory west: NoSuchUpload: {upload_id}"))
            })?;
        let etag = format!("{:08x}", crc32c::crc32c(&body));
        u.parts.insert(number, body.to_vec());
        Ok(etag)
    }

    async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> Result<String, WestError> {
        let u = self
            .uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(upload_id)
            .filter(|u| u.key == key && u.bucket == bucket)
            .ok_or_else(|| {
                WestError::permanent(format!("memory west: NoSuchUpload: {upload_id}"))
            })?;
        let mut obj = u.template;
        for (n, _) in parts {
            let part = u
                .parts
                .get(n)
                .ok_or_else(|| WestError::permanent(format!("memory west: InvalidPart: {n}")))?;
            obj.data.extend_from_slice(part);
        }
        let etag = format!("{:08x}-{}", crc32c::crc32c(&obj.data), parts.len());
        self.insert(bucket, key, obj)?;
        Ok(etag)
    }

    async fn abort_upload(
        &self,
        _bucket: &str,
        _key: &str,
        upload_id: &str,
    ) -> Result<(), WestError> {
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(upload_id);
        Ok(())
    }

    async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<Vec<super::ListedPart>>, WestError> {
        let uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        Ok(uploads
            .get(upload_id)
            .filter(|u| u.bucket == bucket && u.key == key)
            .map(|u| {
                u.parts
                    .iter()
                    .map(|(n, data)| super::ListedPart {
                        number: *n,
                        size: data.len() as u64,
                        etag: format!("{:08x}", crc32c::crc32c(data)),
                    })
                    .collect()
            }))
    }

    async fn uploads_of(&self, bucket: &str, key: &str) -> Result<Vec<String>, WestError> {
        Ok(self
            .uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, u)| u.bucket == bucket && u.key == key)
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        start: u64,
        len: u64,
    ) -> Result<bytes::Bytes, WestError> {
        let g = self.lock();
        let obj = g
            .get(bucket)
            .ok_or_else(|| no_bucket(bucket))?
            .get(key)
            .ok_or_else(|| WestError::permanent(format!("memory west: NoSuchKey: {key}")))?;
        let end = start.saturating_add(len);
        if end > obj.data.len() as u64 {
            return Err(WestError::permanent(format!(
                "memory west: InvalidRange: {key} holds {} bytes",
                obj.data.len()
            )));
        }
        Ok(bytes::Bytes::copy_from_slice(
            &obj.data[start as usize..end as usize],
        ))
    }
}

#[async_trait]
impl PlainOps for MemoryOps {
    async fn check(&self, bucket: Option<&str>) -> Result<(), CheckFailure> {
        match bucket {
            Some(b) if !self.lock().contains_key(b) => Err(CheckFailure {
                stage: CheckStage::Bucket,
                message: format!("bucket {b} does not exist on memory west"),
            }),
            _ => Ok(()),
        }
    }

    async fn bucket_exists(&self, bucket: &str) -> Result<bool, WestError> {
        Ok(self.lock().contains_key(bucket))
    }

    async fn create_bucket(&self, bucket: &str) -> Result<(), WestError> {
        self.lock().entry(bucket.to_owned()).or_default();
        Ok(())
    }

    async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), WestError> {
        let mut g = self.lock();
        let objects = g.get_mut(bucket).ok_or_else(|| no_bucket(bucket))?;
        objects.remove(key);
        Ok(())
    }

    async fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<(String, u64)>, WestError> {
        let g = self.lock();
        let objects = g.get(bucket).ok_or_else(|| no_bucket(bucket))?;
        Ok(objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, o)| (k.clone(), o.data.len() as u64))
            .collect())
    }

    async fn any_key(&self, bucket: &str, prefix: &str) -> Result<bool, WestError> {
        let g = self.lock();
        let objects = g.get(bucket).ok_or_else(|| no_bucket(bucket))?;
        Ok(has_prefix(objects, prefix))
    }
}

#[async_trait]
impl ObjectOps for MemoryOps {
    fn dialect(&self) -> Dialect {
        self.dialect
    }

    fn native_rename(&self) -> bool {
        self.dialect == Dialect::Gateway
    }

    async fn head_object(&self, bucket: &str, key: &str) -> Result<Option<ObjInfo>, WestError> {
        let g = self.lock();
        let objects = g.get(bucket).ok_or_else(|| no_bucket(bucket))?;
        Ok(objects.get(key).map(|o| ObjInfo {
            data_len: o.data.len() as u64,
            meta: o.meta.clone(),
            gpair_name: o.gpair_name.clone(),
        }))
    }

    async fn put_empty(
        &self,
        bucket: &str,
        key: &str,
        meta: &BTreeMap<String, String>,
        gpair_name: Option<&str>,
    ) -> Result<(), WestError> {
        if let Some(v) = meta.get(meta_names::SIZE) {
            if v.trim().parse::<u64>().is_err() {
                return Err(WestError::permanent(format!(
                    "memory west: InvalidArgument: x-amz-meta-gpair-size {v:?}"
                )));
            }
        }
        let obj = MemObject {
            data: Vec::new(),
            meta: meta.clone(),
            gpair_name: gpair_name.map(str::to_owned),
            placeholder: gpair_name.is_some() && !key.ends_with('/'),
        };
        self.insert(bucket, key, obj)
    }

    async fn copy_object(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        _size: u64,
        replace: Option<(&BTreeMap<String, String>, Option<&str>)>,
    ) -> Result<(), WestError> {
        let src = {
            let g = self.lock();
            let objects = g.get(bucket).ok_or_else(|| no_bucket(bucket))?;
            objects
                .get(from)
                .cloned()
                .ok_or_else(|| WestError::permanent(format!("memory west: NoSuchKey: {from}")))?
        };
        // The gateway refuses to copy placeholders and markers; S3 copies any object.
        if self.dialect == Dialect::Gateway && src.placeholder {
            return Err(WestError::permanent(format!(
                "memory west: InvalidObjectState: {from} is a placeholder and cannot be copied"
            )));
        }
        if self.dialect == Dialect::Gateway && (from.ends_with('/') || to.ends_with('/')) {
            return Err(WestError::permanent(
                "memory west: directory markers cannot be copied",
            ));
        }
        if from == to && replace.is_none() {
            return Err(WestError::permanent(
                "memory west: copying an object onto itself needs REPLACE",
            ));
        }
        let obj = match replace {
            Some((meta, name)) => MemObject {
                data: src.data,
                meta: meta.clone(),
                gpair_name: name.map(str::to_owned),
                placeholder: false,
            },
            None => MemObject {
                gpair_name: if self.dialect == Dialect::S3 {
                    src.gpair_name
                } else {
                    None
                },
                ..src
            },
        };
        self.insert(bucket, to, obj)
    }

    async fn move_native(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        replace: bool,
    ) -> Result<MoveOutcome, WestError> {
        if self.dialect != Dialect::Gateway {
            return Err(WestError::permanent(
                "memory west: native rename needs the gateway dialect",
            ));
        }
        let mut g = self.lock();
        let objects = g.get_mut(bucket).ok_or_else(|| no_bucket(bucket))?;
        if from.ends_with('/') != to.ends_with('/') {
            return Err(WestError::permanent(
                "memory west: InvalidArgument: source and destination must both be prefixes or both objects",
            ));
        }
        if from == to {
            return Ok(MoveOutcome::Moved);
        }
        if from.ends_with('/') {
            if to.starts_with(from) {
                return Err(WestError::permanent(format!(
                    "memory west: InvalidArgument: cannot move {from} into itself ({to})"
                )));
            }
            let src = keys_with_prefix(objects, from);
            if src.is_empty() {
                return Ok(MoveOutcome::SourceMissing);
            }
            if has_prefix(objects, to) || objects.contains_key(to.trim_end_matches('/')) {
                return Ok(MoveOutcome::DestinationExists);
            }
            check_writable(objects, to)?;
            for k in src {
                if let Some(o) = objects.remove(&k) {
                    objects.insert(format!("{to}{}", &k[from.len()..]), o);
                }
            }
            return Ok(MoveOutcome::Moved);
        }
        if !objects.contains_key(from) {
            return Ok(MoveOutcome::SourceMissing);
        }
        check_writable(objects, to)?;
        if objects.contains_key(to) && !replace {
            return Ok(MoveOutcome::DestinationExists);
        }
        if let Some(o) = objects.remove(from) {
            objects.insert(to.to_owned(), o);
        }
        Ok(MoveOutcome::Moved)
    }

    async fn set_attr(
        &self,
        bucket: &str,
        key: &str,
        attr: SetAttr,
        value: &str,
    ) -> Result<(), WestError> {
        let mut g = self.lock();
        let objects = g.get_mut(bucket).ok_or_else(|| no_bucket(bucket))?;
        if key.ends_with('/')
            || (!objects.contains_key(key) && objects.contains_key(&format!("{key}/")))
        {
            return Err(WestError::permanent(format!(
                "memory west: InvalidArgument: {key} is a directory; directories carry no data"
            )));
        }
        let obj = objects
            .get_mut(key)
            .ok_or_else(|| WestError::permanent(format!("memory west: NoSuchKey: {key}")))?;
        let mismatch = |have: &str| {
            WestError::permanent(format!(
                "memory west: GpairMismatch: {key} is marked for gpair {have:?}, not {value:?}"
            ))
        };
        match attr {
            SetAttr::LocalToRemote => {
                let Some(have) = obj.gpair_name.as_deref() else {
                    return Ok(());
                };
                if have != value {
                    return Err(mismatch(have));
                }
                let logical = obj
                    .meta
                    .get(meta_names::SIZE)
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                if obj.placeholder && logical > 0 {
                    return Err(WestError::permanent(format!(
                        "memory west: InvalidObjectState: {key} is a placeholder without data"
                    )));
                }
                obj.gpair_name = None;
                obj.placeholder = false;
                Ok(())
            }
            SetAttr::RemoteToLocal => {
                if let Some(have) = obj.gpair_name.as_deref() {
                    if have != value {
                        return Err(mismatch(have));
                    }
                    if obj.placeholder {
                        return Ok(());
                    }
                }
                let size = obj.data.len();
                obj.meta.insert(meta_names::SIZE.into(), size.to_string());
                obj.data = Vec::new();
                obj.gpair_name = Some(value.to_owned());
                obj.placeholder = true;
                Ok(())
            }
        }
    }
}
