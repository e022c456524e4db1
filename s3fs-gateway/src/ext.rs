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
            (Extension::Usage, _) => Err(s3_error!(
                InvalidRequest,
                "gpair-usage applies to a bucket: GET /BUCKET?gpair-usage"
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
            if store.fsync() {
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
            meta.user.insert("gpair-size".into(), size.to_string());
            let (staged_path, staged) = store.staging_file()?;
            let guard = RemoveOnDrop(Some(staged_path.clone()));
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
            std::mem::forget(guard);
            if let Some(parent) = found.path.parent() {
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
    store.sync_dir(dst_parent)?;
    if let Some(src_parent) = src_path.parent() {
        store.sync_dir(src_parent)?;
        store.prune_empty_dirs(&bucket_dir, src_parent);
    }
    Ok(())
}
