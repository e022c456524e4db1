//! Access to west: the [`WestStore`] trait, its two dialects (`gateway`: our s3fs-gateway with
//! SetAttrObj and native rename; `s3`: any S3, gpair-name as an object tag, rename as
//! copy + delete), an in-memory store for unit tests and a fault-injecting wrapper.
//!
//! This module never decides *when* to talk to west (that is the outbox's job) and never
//! retries on its own: every error says whether it is permanent, and the caller decides.

use async_trait::async_trait;

use crate::entry::EntryMeta;

pub mod batch;
pub mod data;
pub mod entries;
pub mod fault;
pub mod gateway;
pub mod keys;
pub mod memory;
pub mod observed;
pub mod s3;
mod sdk;

pub use keys::WestKey;

/// The store for one gpeer, in its dialect. Building it does no I/O: unreachable endpoints
/// show up on the first call (or in [`WestStore::check`]).
pub fn connect(conn: &GpeerConn) -> std::sync::Arc<dyn WestStore> {
    match conn.dialect {
        Dialect::Gateway => std::sync::Arc::new(gateway::GatewayWest::new(conn)),
        Dialect::S3 => std::sync::Arc::new(s3::S3West::new(conn)),
    }
}

/// Which protocol flavour a gpeer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    Gateway,
    S3,
}

/// How to reach a gpeer.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct GpeerConn {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    pub dialect: Dialect,
}

impl std::fmt::Debug for GpeerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpeerConn")
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("region", &self.region)
            .field("dialect", &self.dialect)
            .finish()
    }
}

/// SetAttrObj attribute keys (DESIGN 4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetAttr {
    /// West owns the data: west gpair-name := NULL.
    LocalToRemote,
    /// East owns the data again: west gpair-name := value, west data released.
    RemoteToLocal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Connection refused/reset, timeouts, 5xx, SlowDown, unparseable answers: retry later.
    Transient,
    /// 4xx other than throttling, checksum mismatches: retrying will not help.
    Permanent,
    /// A metadata update would have replaced an object whose data west owns (gpair-name
    /// NULL) and which is not the same file any more: refused, nothing written. The caller
    /// decides what becomes of that data. Permanent.
    OwnedData,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct WestError {
    pub kind: ErrorKind,
    pub message: String,
}

impl WestError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Transient,
            message: message.into(),
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            message: message.into(),
        }
    }
    pub fn owned_data(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::OwnedData,
            message: message.into(),
        }
    }
    /// Retrying will not help: fail the item with this reason.
    pub fn is_permanent(&self) -> bool {
        self.kind != ErrorKind::Transient
    }

    /// West is unreachable or misbehaving: pause the gpeer's work and retry later.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// `"transient"`, `"permanent"` or `"owned_data"`, as the CLI shows it.
    pub fn class(&self) -> &'static str {
        self.kind.as_str()
    }
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::OwnedData => "owned_data",
        }
    }
}

/// One part of a multipart upload in progress, as west lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPart {
    pub number: i32,
    pub size: u64,
    pub etag: String,
}

/// Which step of [`WestStore::check`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStage {
    Dns,
    Connect,
    Auth,
    Bucket,
    Protocol,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{stage:?}: {message}")]
pub struct CheckFailure {
    pub stage: CheckStage,
    pub message: String,
}

/// One entry as listed on west.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WestEntry {
    pub key: String,
    /// The east path relative to the share, decoded from the key (or from the long-key
    /// metadata), raw bytes.
    pub rel_path: Vec<u8>,
    /// Bytes of data the object holds on west.
    pub data_len: u64,
    /// `x-amz-meta-gpair-size`, when present.
    pub logical_size: Option<u64>,
    pub gpair_name: Option<String>,
    pub is_dir: bool,
    /// The POSIX metadata recorded with the entry (`x-amz-meta-mode` etc.), when present.
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime_ns: Option<i64>,
    pub symlink_target: Option<Vec<u8>>,
    /// CRC32C of the whole file (`x-amz-meta-gpair-crc32c`), recorded by an offload.
    pub crc32c: Option<u32>,
}

/// A connection to one gpeer. Cheap to clone behind an `Arc`; rebuilt by the caller after
/// transient failures (new DNS lookup, new connections).
#[async_trait]
pub trait WestStore: Send + Sync + 'static {
    fn dialect(&self) -> Dialect;

    /// Checks DNS, connectivity, credentials and, if given, the bucket; names the step
    /// that failed.
    async fn check(&self, bucket: Option<&str>) -> Result<(), CheckFailure>;

    async fn bucket_exists(&self, bucket: &str) -> Result<bool, WestError>;

    async fn create_bucket(&self, bucket: &str) -> Result<(), WestError>;

    /// Writes the west metadata entry of one east entry. Files become placeholders
    /// (zero-length, gpair-name = `gpair_value`, `x-amz-meta-gpair-size`); directories
    /// become `dir/` markers; symlinks and special files become zero-length objects whose
    /// `x-amz-meta-gpair-*` headers record the kind, target and rdev. Every entry carries
    /// `x-amz-meta-mode`, `-uid`, `-gid`, `-mtime`. Idempotent.
    async fn put_entry(
        &self,
        bucket: &str,
        key: &WestKey,
        meta: &EntryMeta,
        gpair_value: &str,
    ) -> Result<(), WestError>;

    /// Removes an entry (the `dir/` marker when `is_dir`). A missing entry is not an error.
    async fn delete_entry(
        &self,
        bucket: &str,
        key: &WestKey,
        is_dir: bool,
    ) -> Result<(), WestError>;

    /// Moves an entry, or a whole directory with everything under it. Native on the
    /// gateway dialect; copy + delete of every object on the s3 dialect. Idempotent: if
    /// the source is gone and the destination exists, it succeeds.
    async fn rename(
        &self,
        bucket: &str,
        from: &WestKey,
        to: &WestKey,
        is_dir: bool,
    ) -> Result<(), WestError>;

    /// Every raw object key starting with `prefix` (no decoding, no HEADs), with data lengths.
    async fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<(String, u64)>, WestError>;

    /// Every entry whose key starts with `prefix`, in key order.
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<WestEntry>, WestError>;

    async fn head(
        &self,
        bucket: &str,
        key: &WestKey,
        is_dir: bool,
    ) -> Result<Option<WestEntry>, WestError>;

    /// SetAttrObj (DESIGN 4.4). Idempotent.
    async fn set_attr(
        &self,
        bucket: &str,
        key: &WestKey,
        attr: SetAttr,
        gpair_value: &str,
    ) -> Result<(), WestError>;

    /// Uploads a file's data in one PUT, with its entry metadata and whole-file checksum;
    /// gpair-name stays `gpair_value` (east still owns the data). Returns the ETag.
    async fn put_file(
        &self,
        bucket: &str,
        key: &WestKey,
        body: bytes::Bytes,
        meta: &EntryMeta,
        crc32c: u32,
        gpair_value: &str,
    ) -> Result<String, WestError>;

    /// Starts a multipart upload of a file's data (metadata as in [`WestStore::put_file`]).
    async fn start_upload(
        &self,
        bucket: &str,
        key: &WestKey,
        meta: &EntryMeta,
        crc32c: u32,
        gpair_value: &str,
    ) -> Result<String, WestError>;

    async fn upload_part(
        &self,
        bucket: &str,
        key: &WestKey,
        upload_id: &str,
        number: i32,
        body: bytes::Bytes,
    ) -> Result<String, WestError>;

    async fn finish_upload(
        &self,
        bucket: &str,
        key: &WestKey,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> Result<String, WestError>;

    /// The parts west holds for a multipart upload in progress (ListParts), in part order;
    /// `None` when west does not know the upload (completed, aborted, or never started): the
    /// caller starts afresh. A store that cannot list parts answers `None`.
    async fn list_parts(
        &self,
        bucket: &str,
        key: &WestKey,
        upload_id: &str,
    ) -> Result<Option<Vec<ListedPart>>, WestError> {
        let _ = (bucket, key, upload_id);
        Ok(None)
    }

    /// Aborts every multipart upload in progress for the key; returns how many.
    async fn abort_uploads(&self, bucket: &str, key: &WestKey) -> Result<usize, WestError>;

    /// `len` bytes of a file's data from `start`.
    async fn read_range(
        &self,
        bucket: &str,
        key: &WestKey,
        start: u64,
        len: u64,
    ) -> Result<bytes::Bytes, WestError>;

    /// A URL that lets its holder GET the file's data (with Range headers) for `expires`
    /// without credentials: the read grant mounts use (DESIGN 5.4).
    async fn presign_read(
        &self,
        bucket: &str,
        key: &WestKey,
        expires: std::time::Duration,
    ) -> Result<String, WestError>;
}
