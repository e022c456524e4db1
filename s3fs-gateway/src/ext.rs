//! The gpair extensions to S3 (see docs/gateway.md): SetAttrObj (`?gpair-setattr`), native
//! rename (`?gpair-rename`) and bucket usage (`?gpair-usage`). They are SigV4-signed like any
//! request; s3s verifies the signature before routing here, and [`GpairRoutes::check_access`]
//! applies the roles.

use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode, Uri};
use s3s::path::S3Path;
use s3s::route::S3Route;
use s3s::{s3_error, Body, S3Request, S3Response, S3Result};

use crate::credentials::{is_sigv2, Role, RoleAccess};
use crate::error::{Error, Result};
use crate::keys::ObjectKey;
use crate::quota::{Contribution, Usage};
use crate::s3impl::{blocking, decode_header_value};
use crate::store::{PosixAttrs, Store};

/// MD5 of zero bytes: the ETag of placeholders and directory markers.
pub const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

pub const ATTR_KEY_HEADER: &str = "x-gpair-attr-key";
pub const ATTR_VALUE_HEADER: &str = "x-gpair-attr-value";
pub const RENAME_TO_HEADER: &str = "x-gpair-rename-to";
pub const RENAME_REPLACE_HEADER: &str = "x-gpair-rename-replace";

/// West owns the data: gpair-name := NULL.
pub const LTR: &str = "ltr_local_to_remote";
/// East owns the data again: gpair-name := value, data released.
pub const RTL: &str = "rtl_remote_to_local";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extension {
    SetAttr,
    Rename,
    Usage,
    Batch,
}

fn extension(method: &Method, uri: &Uri) -> Option<Extension> {
    let query = uri.query()?;
    let has = |name: &str| {
        query
            .split('&')
            .any(|p| p == name || p.starts_with(&format!("{name}=")))
    };
    match *method {
        Method::POST if has("gpair-setattr") => Some(Extension::SetAttr),
        Method::POST if has("gpair-rename") => Some(Extension::Rename),
        Method::GET if has("gpair-usage") => Some(Extension::Usage),
        Method::POST if has("gpair-batch") => Some(Extension::Batch),
        _ => None,
    }
}

pub struct GpairRoutes {
    pub store: Arc<Store>,
    pub usage: Arc<Usage>,
    pub access: Arc<RoleAccess>,
}

#[async_trait::async_trait]
impl S3Route for GpairRoutes {
    fn is_match(
        &self,
        method: &Method,
        uri: &Uri,
        _headers: &HeaderMap,
        _ext: &mut http::Extensions,
    ) -> bool {
        extension(method, uri).is_some()
    }

    async fn check_access(&self, req: &mut S3Request<Body>) -> S3Result<()> {
        let needed = match extension(&req.method, &req.uri) {
            Some(Extension::Usage) => Role::Reader,
            _ => Role::Backend,
        };
        self.access.check_key(
            req.credentials.as_ref().map(|c| c.access_key.as_str()),
            is_sigv2(&req.headers, &req.uri),
            needed,
        )
    }

    #[tracing::instrument(skip_all, fields(method = %req.method, path = %req.uri.path()))]
    async fn call(&self, req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        let path = percent_encoding::percent_decode_str(req.uri.path())
            .decode_utf8()
            .map_err(|_| s3_error!(InvalidURI, "the path is not percent-encoded UTF-8"))?;
        let s3_path = s3s::path::parse_path_style(&path)
            .map_err(|_| s3_error!(InvalidURI, "cannot parse the path"))?;
        let store = Arc::clone(&self.store);
        let usage = Arc::clone(&self.usage);
        let ext = extension(&req.method, &req.uri).ok_or_else(|| s3_error!(NotImplemented))?;
        match (ext, s3_path) {
            (Extension::Usage, S3Path::Bucket { bucket }) => {
                store.require_bucket(&bucket)?;
                let r = usage.report(&bucket);
                let json = serde_json::json!({
                    "bucket": bucket.as_ref(),
                    "bytes": r.bytes,
                    "objects": r.objects,
                    "max_bytes": r.limits.max_bytes,
                    "max_objects": r.limits.max_objects,
                });
                let mut resp = S3Response::new(Body::from(json.to_string()));
                resp.headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                Ok(resp)
            }
            (Extension::SetAttr, S3Path::Object { bucket, key }) => {
                let key = ObjectKey::parse(&key).map_err(Error::from)?;
                let attr = required_header(&req.headers, ATTR_KEY_HEADER)?;
                let value = required_header(&req.headers, ATTR_VALUE_HEADER)?;
                let bucket = bucket.to_string();
                blocking(move || set_attr(&store, &usage, &bucket, &key, &attr, &value)).await?;
                Ok(empty_ok())
            }
            (Extension::Rename, S3Path::Object { bucket, key }) => {
                let src = ObjectKey::parse(&key).map_err(Error::from)?;
                let dst = ObjectKey::parse(&required_header(&req.headers, RENAME_TO_HEADER)?)
                    .map_err(Error::from)?;
                let replace = match req
                    .headers
                    .get(RENAME_REPLACE_HEADER)
                    .map(|v| v.to_str().unwrap_or(""))
                {
                    None | Some("false") => false,
                    Some("true") => true,
                    Some(other) => {
                        return Err(Error::InvalidArgument(format!(
                            "{RENAME_REPLACE_HEADER} must be true or false, not {other:?}"
                        ))
                        .into())
                    }
                };
                let bucket = bucket.to_string();
                blocking(move || rename(&store, &usage, &bucket, &src, &dst, replace)).await?;
                Ok(empty_ok())
            }
            (Extension::Batch, S3Path::Bucket { bucket }) => {
                let mut body = req.input;
                let bytes = body.store_all_limited(MAX_BATCH_BODY).await.map_err(|_| {
                    s3_error!(
                        MaxMessageLengthExceeded,
                        "a batch body is limited to {MAX_BATCH_BODY} bytes"
                    )
                })?;
                let batch: BatchRequest = serde_json::from_slice(&bytes)
                    .map_err(|e| s3_error!(MalformedXML, "batch body is not a valid batch: {e}"))?;
                if batch.ops.len() > MAX_BATCH_OPS {
                    return Err(s3_error!(
                        InvalidRequest,
                        "a batch holds at most {MAX_BATCH_OPS} operations"
                    ));
                }
                let bucket = bucket.to_string();
                let results =
                    blocking(move || Ok(apply_batch(&store, &usage, &bucket, batch.ops))).await?;
                let mut resp = S3Response::new(Body::from(
                    serde_json::json!({ "results": results }).to_string(),
                ));
                resp.headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                Ok(resp)
            }
            (Extension::Usage | Extension::Batch, _) => Err(s3_error!(
                InvalidRequest,
                "gpair-usage and gpair-batch apply to a bucket: /BUCKET?gpair-..."
            )),
            (_, _) => Err(s3_error!(
                InvalidRequest,
                "this gpair extension applies to an object: POST /BUCKET/KEY?..."
            )),
        }
    }
}

fn empty_ok() -> S3Response<Body> {
    let mut resp = S3Response::new(Body::empty());
    resp.status = Some(StatusCode::OK);
    resp
}

fn required_header(headers: &HeaderMap, name: &str) -> Result<String> {
    let v = headers
        .get(name)
        .ok_or_else(|| Error::InvalidArgument(format!("missing header {name}")))?;
    let v = decode_header_value(name, v)?;
    if v.is_empty() {
        return Err(Error::InvalidArgument(format!("header {name} is empty")));
    }
    Ok(v)
}

/// SetAttrObj: see the table in docs/gateway.md. Idempotent.
pub fn set_attr(
    store: &Store,
    usage: &Usage,
    bucket: &str,
    key: &ObjectKey,
    attr: &str,
    value: &str,
) -> Result<()> {
    set_attr_with(store, usage, bucket, key, attr, value, true)
}

/// [`set_attr`]; `durable`: fsync what it changed (a batch leaves that to its `syncfs`).
fn set_attr_with(
    store: &Store,
    usage: &Usage,
    bucket: &str,
    key: &ObjectKey,
    attr: &str,
    value: &str,
    durable: bool,
) -> Result<()> {
    let _one_at_a_time = store.lock_key(bucket, &key.to_string());
    let found = store
        .lookup(bucket, key)?
        .ok_or_else(|| Error::NoSuchKey(key.to_string()))?;
    if found.meta.dir_marker {
        return Err(Error::InvalidArgument(format!(
            "{key} is a directory; directories carry no data"
        )));
    }
    let mut meta = found.meta.clone();
    let mismatch = |have: &str| {
        Error::GpairMismatch(format!("{key} is marked for gpair {have:?}, not {value:?}"))
    };
    match attr {
        LTR => {
            let Some(have) = meta.gpair_name.as_deref() else {
                return Ok(());
            };
            if have != value {
                return Err(mismatch(have));
            }
            if meta.placeholder && meta.size > 0 {
                return Err(Error::InvalidObjectState(format!(
                    "{key} is a placeholder without data; upload the data before {LTR}"
                )));
            }
            meta.gpair_name = None;
            meta.placeholder = false;
            meta.store(&found.path)?;
            if durable && store.fsync() {
                std::fs::File::open(&found.path)?.sync_all()?;
            }
            Ok(())
        }
        RTL => {
            if let Some(have) = meta.gpair_name.as_deref() {
                if have != value {
                    return Err(mismatch(have));
                }
                if meta.placeholder {
                    return Ok(());
                }
            }
            // Replace the object with a placeholder of the same logical size, atomically.
            let size = found.md.len();
            meta.gpair_name = Some(value.to_owned());
            meta.placeholder = true;
            meta.size = size;
            // The object now serves zero bytes: its validators must describe that.
            meta.etag = EMPTY_MD5.into();
            meta.checksums.clear();
            meta.user.insert("gpair-size".into(), size.to_string());
            let (staged_path, staged) = store.staging_file()?;
            let mut guard = RemoveOnDrop(Some(staged_path.clone()));
            staged.set_len(size)?;
            meta.store(&staged_path)?;
            PosixAttrs::from_user_meta(&meta.user)
                .unwrap_or_default()
                .apply(&staged_path)?;
            if store.fsync() {
                staged.sync_all()?;
            }
            usage.apply(bucket, || {
                let removed = Contribution::of_path(&found.path);
                std::fs::rename(&staged_path, &found.path)?;
                Ok((removed, Contribution::NONE, ()))
            })?;
            guard.0 = None; // installed: keep it
            if let Some(parent) = found.path.parent().filter(|_| durable) {
                store.sync_dir(parent)?;
            }
            Ok(())
        }
        other => Err(Error::InvalidArgument(format!(
            "unknown {ATTR_KEY_HEADER} {other:?}; expected {LTR} or {RTL}"
        ))),
    }
}

struct RemoveOnDrop(Option<std::path::PathBuf>);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn rename_noreplace(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &std::path::Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: valid C strings; AT_FDCWD with absolute paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Native rename of an object or a whole prefix (one `rename(2)`).
pub fn rename(
    store: &Store,
    usage: &Usage,
    bucket: &str,
    src: &ObjectKey,
    dst: &ObjectKey,
    replace: bool,
) -> Result<()> {
    let bucket_dir = store.require_bucket(bucket)?;
    if src.is_dir() != dst.is_dir() {
        return Err(Error::InvalidArgument(
            "source and destination must both be prefixes (ending in '/') or both objects".into(),
        ));
    }
    if src == dst {
        return Ok(());
    }
    if src.is_dir() && dst.as_str().starts_with(src.as_str()) {
        return Err(Error::InvalidArgument(format!(
            "cannot move {src} into itself ({dst})"
        )));
    }
    let src_path = store.object_path(bucket, src);
    let dst_path = store.object_path(bucket, dst);
    if src.is_dir() {
        match std::fs::symlink_metadata(&src_path) {
            Ok(md) if md.is_dir() => {}
            _ => return Err(Error::NoSuchKey(src.to_string())),
        }
    } else if store.lookup(bucket, src)?.is_none() {
        return Err(Error::NoSuchKey(src.to_string()));
    }
    store.check_writable(&bucket_dir, dst)?;
    let dst_parent = dst_path
        .parent()
        .ok_or_else(|| Error::InvalidArgument("bad destination".into()))?;
    store.create_dirs(dst_parent)?;
    let conflict = || Error::KeyConflict(format!("destination {dst} already exists"));
    if replace && !src.is_dir() {
        usage.apply(bucket, || {
            let removed = Contribution::of_path(&dst_path);
            std::fs::rename(&src_path, &dst_path)?;
            Ok((removed, Contribution::NONE, ()))
        })?;
    } else {
        match rename_noreplace(&src_path, &dst_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(conflict()),
            Err(e) => return Err(e.into()),
        }
    }
    store.restore_dir_mtime(dst_parent);
    store.sync_dir(dst_parent)?;
    if let Some(src_parent) = src_path.parent() {
        store.restore_dir_mtime(src_parent);
        store.sync_dir(src_parent)?;
        store.prune_empty_dirs(&bucket_dir, src_parent);
    }
    Ok(())
}

/// Largest batch request body and operation count.
pub const MAX_BATCH_BODY: usize = 8 << 20;
pub const MAX_BATCH_OPS: usize = 5000;

#[derive(Debug, serde::Deserialize)]
struct BatchRequest {
    ops: Vec<BatchOp>,
}

/// One metadata operation of a batch (see docs/gateway.md, "Batch").
#[derive(Debug, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum BatchOp {
    /// Make the entry carry this metadata. A key ending in `/` is a directory marker. A
    /// file that holds data keeps its data and gpair-name and takes the new metadata;
    /// otherwise it becomes a placeholder of `size` bytes marked with `gpair_name`.
    Meta {
        key: String,
        #[serde(default)]
        gpair_name: Option<String>,
        #[serde(default)]
        size: u64,
        #[serde(default)]
        meta: std::collections::BTreeMap<String, String>,
    },
    /// Remove the entry (a missing one is fine).
    Delete { key: String },
    /// SetAttrObj (`attr` = ltr_local_to_remote or rtl_remote_to_local), made durable by the
    /// batch's `syncfs` instead of an fsync of its own.
    SetAttr {
        key: String,
        attr: String,
        value: String,
    },
}

/// The outcome of one batch operation.
#[derive(Debug, serde::Serialize)]
pub struct BatchResult {
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Applies a batch; one operation's failure does not stop the others. With fsync on, the
/// whole batch is made durable by one `syncfs` at the end (a group commit).
pub fn apply_batch(
    store: &Store,
    usage: &Usage,
    bucket: &str,
    ops: Vec<BatchOp>,
) -> Vec<BatchResult> {
    let mut touched: std::collections::BTreeSet<std::path::PathBuf> = Default::default();
    for op in &ops {
        let (BatchOp::Meta { key, .. } | BatchOp::Delete { key } | BatchOp::SetAttr { key, .. }) =
            op;
        if let Ok(k) = ObjectKey::parse(key) {
            if let Some(parent) = store.object_path(bucket, &k).parent() {
                touched.insert(parent.to_path_buf());
            }
        }
    }
    let results: Vec<BatchResult> = ops
        .into_iter()
        .map(|op| match apply_batch_op(store, usage, bucket, op) {
            Ok(()) => BatchResult {
                status: 200,
                code: None,
                message: None,
            },
            Err(e) => {
                let e = s3s::S3Error::from(e);
                BatchResult {
                    status: e.status_code().map_or(500, |s| s.as_u16()),
                    code: Some(e.code().as_str().to_owned()),
                    message: e.message().map(str::to_owned),
                }
            }
        })
        .collect();
    // Deepest first: restoring a child's time does not touch its parent's.
    for dir in touched.iter().rev() {
        store.restore_dir_mtime(dir);
    }
    if store.fsync() {
        if let Ok(dir) = std::fs::File::open(store.bucket_dir(bucket)) {
            use std::os::fd::AsRawFd;
            // SAFETY: syncfs on a descriptor we own.
            unsafe { libc::syncfs(dir.as_raw_fd()) };
        }
    }
    results
}

fn apply_batch_op(store: &Store, usage: &Usage, bucket: &str, op: BatchOp) -> Result<()> {
    let bucket_dir = store.require_bucket(bucket)?;
    match op {
        BatchOp::Delete { key } => {
            let key = ObjectKey::parse(&key)?;
            crate::s3impl::delete_one(store, usage, bucket, &key)
        }
        BatchOp::SetAttr { key, attr, value } => {
            let key = ObjectKey::parse(&key)?;
            set_attr_with(store, usage, bucket, &key, &attr, &value, false)
        }
        BatchOp::Meta {
            key,
            gpair_name,
            size,
            meta,
        } => {
            let key = ObjectKey::parse(&key)?;
            let _one_at_a_time = store.lock_key(bucket, &key.to_string());
            let user: std::collections::BTreeMap<String, String> = meta
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
            if user.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > 2048 {
                return Err(Error::S3(s3_error!(
                    MetadataTooLarge,
                    "metadata of {key} is over 2048 bytes"
                )));
            }
            let posix = PosixAttrs::from_user_meta(&user)?;
            store.check_writable(&bucket_dir, &key)?;
            let path = store.object_path(bucket, &key);
            if key.is_dir() {
                store.create_dirs(&path)?;
                let mut m = crate::meta::ObjectMeta::load(&path)?
                    .unwrap_or_else(|| crate::meta::ObjectMeta::new(EMPTY_MD5.into(), 0));
                m.dir_marker = true;
                m.user = user;
                m.store(&path)?;
                posix.apply(&path)?;
                return Ok(());
            }
            if let Some(found) = store.lookup(bucket, &key)? {
                let mut m = found.meta.clone();
                if found.meta.placeholder {
                    // A placeholder holds no bytes: it is updated in place.
                    let mut user = user;
                    user.insert("gpair-size".into(), size.to_string());
                    if let Some(g) = gpair_name.filter(|g| !g.is_empty()) {
                        m.gpair_name = Some(g);
                    }
                    m.user = user;
                    m.size = size;
                    if m == found.meta && found.md.len() == size {
                        return Ok(());
                    }
                    if found.md.len() != size {
                        std::fs::OpenOptions::new()
                            .write(true)
                            .open(&found.path)?
                            .set_len(size)?;
                    }
                } else {
                    // West holds this file's data: only its metadata changes.
                    if m.user == user {
                        return Ok(());
                    }
                    m.user = user;
                }
                m.store(&found.path)?;
                posix.apply(&found.path)?;
                return Ok(());
            }
            let gpair_name = gpair_name.filter(|g| !g.is_empty()).ok_or_else(|| {
                Error::InvalidArgument(format!("{key}: a placeholder needs gpair_name"))
            })?;
            let mut m = crate::meta::ObjectMeta::new(EMPTY_MD5.into(), size);
            m.placeholder = true;
            m.gpair_name = Some(gpair_name);
            m.user = user;
            m.user.insert("gpair-size".into(), size.to_string());
            let (staged_path, staged) = store.staging_file()?;
            let mut guard = RemoveOnDrop(Some(staged_path.clone()));
            staged.set_len(size)?;
            m.store(&staged_path)?;
            posix.apply(&staged_path)?;
            let parent = path
                .parent()
                .ok_or_else(|| Error::InvalidArgument("bad key".into()))?;
            store.create_dirs(parent)?;
            usage.apply(bucket, || {
                store.check_writable(&bucket_dir, &key)?;
                let removed = Contribution::of_path(&path);
                std::fs::rename(&staged_path, &path)?;
                Ok((removed, Contribution::NONE, ()))
            })?;
            guard.0 = None; // installed: keep it
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn batch_creates_placeholders_keeps_data_and_reports_each_failure() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), true).unwrap();
        std::fs::create_dir(dir.path().join("bkt")).unwrap();
        let usage = Usage::scan(dir.path(), Default::default()).unwrap();
        // An object that holds data (offloaded) and a file in the way of a directory.
        std::fs::write(dir.path().join("bkt/data"), b"west bytes").unwrap();
        std::fs::write(dir.path().join("bkt/x"), b"file").unwrap();
        let meta: BTreeMap<String, String> = [("mode".to_string(), "33152".to_string())].into();
        let ops = vec![
            BatchOp::Meta {
                key: "d/".into(),
                gpair_name: None,
                size: 0,
                meta: BTreeMap::new(),
            },
            BatchOp::Meta {
                key: "d/f".into(),
                gpair_name: Some("v".into()),
                size: 1000,
                meta: meta.clone(),
            },
            BatchOp::Meta {
                key: "data".into(),
                gpair_name: Some("v".into()),
                size: 10,
                meta: meta.clone(),
            },
            BatchOp::Meta {
                key: "x/child".into(),
                gpair_name: Some("v".into()),
                size: 1,
                meta: BTreeMap::new(),
            },
            BatchOp::Meta {
                key: "../escape".into(),
                gpair_name: Some("v".into()),
                size: 1,
                meta: BTreeMap::new(),
            },
            BatchOp::Delete {
                key: "nothing-here".into(),
            },
        ];
        let results = apply_batch(&store, &usage, "bkt", ops);
        let statuses: Vec<u16> = results.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 200, 200, 409, 400, 200], "{results:?}");
        let f = store
            .lookup("bkt", &ObjectKey::parse("d/f").unwrap())
            .unwrap()
            .unwrap();
        assert!(f.meta.placeholder);
        assert_eq!(f.md.len(), 1000);
        assert_eq!(
            f.meta.user.get("gpair-size").map(String::as_str),
            Some("1000")
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(f.md.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read(dir.path().join("bkt/data")).unwrap(),
            b"west bytes"
        );
        assert!(store
            .lookup("bkt", &ObjectKey::parse("d/").unwrap())
            .unwrap()
            .is_some());
        assert!(!dir.path().join("escape").exists());

        // SetAttrObj in a batch: rtl releases the data object, ltr on a placeholder without
        // data is refused, a missing key is NoSuchKey; each result on its own.
        std::fs::write(dir.path().join("bkt/data2"), b"more west bytes").unwrap();
        let ops = vec![
            BatchOp::SetAttr {
                key: "data2".into(),
                attr: RTL.into(),
                value: "v".into(),
            },
            BatchOp::SetAttr {
                key: "d/f".into(),
                attr: LTR.into(),
                value: "v".into(),
            },
            BatchOp::SetAttr {
                key: "missing".into(),
                attr: RTL.into(),
                value: "v".into(),
            },
            BatchOp::SetAttr {
                key: "data2".into(),
                attr: "sideways".into(),
                value: "v".into(),
            },
        ];
        let results = apply_batch(&store, &usage, "bkt", ops);
        let statuses: Vec<u16> = results.iter().map(|r| r.status).collect();
        assert_eq!(statuses[0], 200, "{results:?}");
        assert_eq!(results[2].code.as_deref(), Some("NoSuchKey"), "{results:?}");
        assert!(statuses[1] >= 400 && statuses[3] == 400, "{results:?}");
        let released = store
            .lookup("bkt", &ObjectKey::parse("data2").unwrap())
            .unwrap()
            .unwrap();
        assert!(released.meta.placeholder);
        assert_eq!(released.meta.gpair_name.as_deref(), Some("v"));
    }
}
