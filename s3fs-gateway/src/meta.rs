//! The per-object metadata record, kept in one extended attribute of the object's file.
//!
//! Versioned JSON (`"v": 1`): an unknown version is refused rather than guessed at, so a
//! future format change comes with an explicit migration here. This module never decides
//! policy; it only encodes, decodes and derives values from a record.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::xattr;

/// Name of the extended attribute that holds the record.
pub const XATTR_NAME: &str = "user.s3fs-gateway";
/// Current record format.
pub const FORMAT_VERSION: u8 = 1;

/// Everything S3 knows about an object except its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Format version of this record.
    pub v: u8,
    /// ETag without quotes, fixed at write time.
    pub etag: String,
    /// Upload time, nanoseconds since the epoch (reported as Last-Modified).
    pub uploaded_ns: i128,
    /// Data bytes at write time; for a placeholder, the logical size of the east file.
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website_redirect_location: Option<String>,
    /// `x-amz-meta-*` values, keys lower case without the prefix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, String>,
    /// Checksums the client sent and we verified: algorithm (`crc32c`, `sha256`, ...) → base64.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checksums: BTreeMap<String, String>,
    /// The gpair-name: set means "this entry's data lives on east" (a placeholder once released).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpair_name: Option<String>,
    /// The data was released by `rtl_remote_to_local`; the file is sparse and serves no bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub placeholder: bool,
    /// An explicit `dir/` marker object.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dir_marker: bool,
}

impl ObjectMeta {
    pub fn new(etag: String, size: u64) -> Self {
        Self {
            v: FORMAT_VERSION,
            etag,
            uploaded_ns: now_ns(),
            size,
            ..Self::default()
        }
    }

    /// Bytes the object serves over S3.
    pub fn content_length(&self, file_len: u64) -> u64 {
        if self.placeholder || self.dir_marker {
            0
        } else {
            file_len
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing a struct of strings and maps cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> io::Result<Self> {
        let meta: Self = serde_json::from_slice(bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("corrupt object metadata: {e}"),
            )
        })?;
        if meta.v != FORMAT_VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("object metadata format v{} is not supported (this gateway knows v{FORMAT_VERSION})", meta.v),
            ));
        }
        Ok(meta)
    }

    /// Reads the record of `path`; `None` for a file the gateway did not write.
    pub fn load(path: &Path) -> io::Result<Option<Self>> {
        match xattr::get(path, XATTR_NAME)? {
            Some(bytes) => Self::decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn store(&self, path: &Path) -> io::Result<()> {
        xattr::set(path, XATTR_NAME, &self.encode())
    }

    /// A record for a file a west admin put there by hand: the ETag is derived from the
    /// inode, size and mtime, so it changes whenever the file does without hashing it.
    pub fn foreign(md: &std::fs::Metadata) -> Self {
        let mut h = Md5::new();
        h.update(
            format!(
                "{}:{}:{}:{}",
                md.ino(),
                md.len(),
                md.mtime(),
                md.mtime_nsec()
            )
            .as_bytes(),
        );
        let mut meta = Self::new(hex::encode(h.finalize()), md.len());
        meta.uploaded_ns = i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec());
        meta
    }
}

pub fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_unknown_versions() {
        let mut m = ObjectMeta::new("abc".into(), 7);
        m.user.insert("mode".into(), "33188".into());
        m.gpair_name = Some("LC_1,/a,LC_2,/b".into());
        let back = ObjectMeta::decode(&m.encode()).unwrap();
        assert_eq!(back, m);

        let mut future = serde_json::to_value(&m).unwrap();
        future["v"] = 2.into();
        let err = ObjectMeta::decode(&serde_json::to_vec(&future).unwrap()).unwrap_err();
        assert!(err.to_string().contains("v2"), "{err}");
        assert!(ObjectMeta::decode(b"{not json").is_err());
    }

    #[test]
    fn placeholders_serve_no_bytes() {
        let mut m = ObjectMeta::new("e".into(), 100);
        assert_eq!(m.content_length(100), 100);
        m.placeholder = true;
        assert_eq!(m.content_length(100), 0);
    }
}
