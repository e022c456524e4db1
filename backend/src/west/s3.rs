//! The `s3` dialect: any S3 server (AWS, MinIO, Ceph RGW, moto…), without gpair extensions.
//!
//! - gpair-name is the object tag `gpair-name`. Tag values may only hold letters, digits,
//!   spaces and `+ - = . _ : / @` (a gpair value holds commas), so the value is stored
//!   base64url without padding: `LC_1,/east,LC_2,west/p` → `TENfMSwvZWFzdCxMQ18yLHdlc3QvcA`.
//! - Placeholders are zero-byte objects carrying the tag and `x-amz-meta-gpair-size`.
//! - SetAttrObj is emulated: `ltr` removes the tag (the object must hold data, as on the
//!   gateway); `rtl` replaces the object with a zero-byte placeholder that keeps its metadata
//!   and sets the tag.
//! - Rename is copy + delete of every object (server-side copies; objects over
//!   [`S3Ops::multipart_copy_threshold`] are copied in parts with UploadPartCopy).

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, MetadataDirective, Tag, Tagging, TaggingDirective,
};
use base64::Engine as _;

use super::data::{etag_of_unparsed_success, normalize_etag};
use super::entries::{meta_names, EntryStore, ObjInfo, ObjectOps};
use super::sdk::{classify, copy_metadata, copy_source, Sdk, SdkBacked};
use super::{Dialect, GpeerConn, SetAttr, WestError};
use crate::entry::EntryKind;

/// The object tag that holds gpair-name.
pub const GPAIR_NAME_TAG: &str = "gpair-name";
/// S3's limit for a single CopyObject.
pub const DEFAULT_MULTIPART_COPY_THRESHOLD: u64 = 5 * 1024 * 1024 * 1024;
/// Part size of a multipart copy (grown when the object would need more than 10 000 parts).
pub const DEFAULT_COPY_PART_SIZE: u64 = 512 * 1024 * 1024;

/// The tag value of a gpair value.
pub fn encode_tag_value(v: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.as_bytes())
}

/// Inverse of [`encode_tag_value`]; `None` for a value we did not write.
pub fn decode_tag_value(v: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(v.trim().trim_end_matches('='))
        .ok()?;
    String::from_utf8(bytes).ok()
}

fn tagging_header(gpair_name: &str) -> String {
    // base64url needs no URL encoding.
    format!("{GPAIR_NAME_TAG}={}", encode_tag_value(gpair_name))
}

/// Object primitives over any S3.
pub struct S3Ops {
    sdk: Sdk,
    /// Objects larger than this are copied with UploadPartCopy.
    pub multipart_copy_threshold: u64,
    pub copy_part_size: u64,
}

/// A [`super::WestStore`] for any S3 server.
pub type S3West = EntryStore<S3Ops>;

impl EntryStore<S3Ops> {
    pub fn new(conn: &GpeerConn) -> Self {
        Self::with_copy_limits(
            conn,
            DEFAULT_MULTIPART_COPY_THRESHOLD,
            DEFAULT_COPY_PART_SIZE,
        )
    }

    /// Like [`Self::new`] with other multipart-copy limits (tests use small ones).
    pub fn with_copy_limits(conn: &GpeerConn, threshold: u64, part_size: u64) -> Self {
        EntryStore::from_ops(S3Ops {
            sdk: Sdk::new(conn),
            multipart_copy_threshold: threshold,
            copy_part_size: part_size.max(5 * 1024 * 1024),
        })
    }
}

impl SdkBacked for S3Ops {
    fn sdk(&self) -> &Sdk {
        &self.sdk
    }
}

crate::sdk_data_ops!(S3Ops, |v: &str| super::data::NameAttach::Tagging(
    tagging_header(v)
));

impl S3Ops {
    /// The object's tags; `None` when the object does not exist.
    async fn tags(&self, bucket: &str, key: &str) -> Result<Option<Vec<Tag>>, WestError> {
        match self
            .sdk
            .client
            .get_object_tagging()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.tag_set().to_vec())),
            Err(e) => {
                let f = classify(e, &self.sdk.what("GET ?tagging", bucket, key));
                if f.is_not_found() && f.code.as_deref() != Some("NoSuchBucket") {
                    Ok(None)
                } else {
                    Err(f.error)
                }
            }
        }
    }

    async fn put_tags(&self, bucket: &str, key: &str, tags: Vec<Tag>) -> Result<(), WestError> {
        let what = self.sdk.what("PUT ?tagging", bucket, key);
        if tags.is_empty() {
            return self
                .sdk
                .client
                .delete_object_tagging()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(e, &what).error);
        }
        let tagging = Tagging::builder()
            .set_tag_set(Some(tags))
            .build()
            .map_err(|e| WestError::permanent(format!("{what}: {e}")))?;
        self.sdk
            .client
            .put_object_tagging()
            .bucket(bucket)
            .key(key)
            .tagging(tagging)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(e, &what).error)
    }

    /// Copies in parts (UploadPartCopy), for objects CopyObject cannot take.
    async fn multipart_copy(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        size: u64,
        meta: BTreeMap<String, String>,
        gpair_name: Option<String>,
    ) -> Result<(), WestError> {
        let what = self
            .sdk
            .what(&format!("multipart COPY {from} ->"), bucket, to);
        let mut create = self
            .sdk
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(to)
            .set_metadata(Some(meta.into_iter().collect()));
        if let Some(n) = &gpair_name {
            create = create.tagging(tagging_header(n));
        }
        let upload = create.send().await.map_err(|e| classify(e, &what).error)?;
        let upload_id = upload
            .upload_id()
            .ok_or_else(|| WestError::transient(format!("{what}: no upload id in the answer")))?
            .to_owned();
        let part_size = self.copy_part_size.max(size.div_ceil(10_000));
        let result = async {
            let mut parts = Vec::new();
            let mut start = 0u64;
            let mut number = 1i32;
            while start < size {
                let end = (start + part_size).min(size) - 1;
                let out = self
                    .sdk
                    .client
                    .upload_part_copy()
                    .bucket(bucket)
                    .key(to)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .copy_source(copy_source(bucket, from))
                    .copy_source_range(format!("bytes={start}-{end}"))
                    .customize()
                    .config_override(Sdk::copy_override())
                    .send()
                    .await
                    .map_err(|e| classify(e, &format!("{what} (part {number})")).error)?;
                let etag = out
                    .copy_part_result()
                    .and_then(|r| r.e_tag())
                    .ok_or_else(|| {
                        WestError::transient(format!("{what}: part {number} has no ETag"))
                    })?
                    .to_owned();
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .e_tag(etag)
                        .build(),
                );
                start = end + 1;
                number += 1;
            }
            let done = self
                .sdk
                .client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(to)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .customize()
                .config_override(Sdk::copy_override())
                .send()
                .await;
            match done {
                Ok(_) => Ok(()),
                Err(e) => {
                    // Accepted when the destination now has the answer's ETag and the expected
                    // size.
                    let etag = etag_of_unparsed_success(&e);
                    let f = classify(e, &what);
                    match etag {
                        Some(etag) if self.has_etag(bucket, to, &etag, size).await? => Ok(()),
                        _ => Err(f.error),
                    }
                }
            }
        }
        .await;
        if result.is_err() {
            let _ = self
                .sdk
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(to)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

impl S3Ops {
    /// Whether the object exists with this ETag and size.
    async fn has_etag(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        size: u64,
    ) -> Result<bool, WestError> {
        match self
            .sdk
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(out.e_tag().map(normalize_etag).as_deref() == Some(etag)
                && u64::try_from(out.content_length().unwrap_or(-1)).ok() == Some(size)),
            Err(e) => {
                let f = classify(e, &self.sdk.what("HEAD", bucket, key));
                if f.is_not_found() {
                    Ok(false)
                } else {
                    Err(f.error)
                }
            }
        }
    }
}

#[async_trait]
impl ObjectOps for S3Ops {
    fn dialect(&self) -> Dialect {
        Dialect::S3
    }

    async fn head_object(&self, bucket: &str, key: &str) -> Result<Option<ObjInfo>, WestError> {
        let Some((data_len, meta, _)) = self.sdk.head(bucket, key, None).await? else {
            return Ok(None);
        };
        // Only files carry gpair-name: skip the tagging call for the others.
        let may_have_name = !key.ends_with('/')
            && meta
                .get(meta_names::KIND)
                .is_none_or(|k| k == EntryKind::File.as_str());
        let gpair_name = if may_have_name {
            match self.tags(bucket, key).await? {
                None => return Ok(None),
                Some(tags) => tags
                    .iter()
                    .find(|t| t.key() == GPAIR_NAME_TAG)
                    .and_then(|t| decode_tag_value(t.value())),
            }
        } else {
            None
        };
        Ok(Some(ObjInfo {
            data_len,
            meta,
            gpair_name,
        }))
    }

    async fn put_empty(
        &self,
        bucket: &str,
        key: &str,
        meta: &BTreeMap<String, String>,
        gpair_name: Option<&str>,
    ) -> Result<(), WestError> {
        self.sdk
            .put_empty(
                bucket,
                key,
                meta,
                Vec::new(),
                gpair_name.map(tagging_header),
            )
            .await
    }

    async fn copy_object(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        size: u64,
        replace: Option<(&BTreeMap<String, String>, Option<&str>)>,
    ) -> Result<(), WestError> {
        if size > self.multipart_copy_threshold {
            let (meta, name) = copy_metadata(self, bucket, from, replace).await?;
            return self
                .multipart_copy(bucket, from, to, size, meta, name)
                .await;
        }
        let mut req = self
            .sdk
            .client
            .copy_object()
            .bucket(bucket)
            .key(to)
            .copy_source(copy_source(bucket, from));
        req = match replace {
            None => req
                .metadata_directive(MetadataDirective::Copy)
                .tagging_directive(TaggingDirective::Copy),
            Some((meta, name)) => {
                let r = req
                    .metadata_directive(MetadataDirective::Replace)
                    .set_metadata(Some(
                        meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    ))
                    .tagging_directive(TaggingDirective::Replace);
                match name {
                    Some(n) => r.tagging(tagging_header(n)),
                    None => r,
                }
            }
        };
        req.customize()
            .config_override(Sdk::copy_override())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(e, &self.sdk.what(&format!("COPY {from} ->"), bucket, to)).error)
    }

    async fn set_attr(
        &self,
        bucket: &str,
        key: &str,
        attr: SetAttr,
        value: &str,
    ) -> Result<(), WestError> {
        let what = |op: &str| self.sdk.what(op, bucket, key);
        if key.ends_with('/') {
            return Err(WestError::permanent(format!(
                "{}: a directory carries no data",
                what("SetAttrObj")
            )));
        }
        let Some(info) = self.head_object(bucket, key).await? else {
            return Err(WestError::permanent(format!(
                "{}: NoSuchKey",
                what("SetAttrObj")
            )));
        };
        let mismatch = |have: &str| {
            WestError::permanent(format!(
                "{}: GpairMismatch: marked for gpair {have:?}, not {value:?}",
                what("SetAttrObj")
            ))
        };
        match attr {
            SetAttr::LocalToRemote => {
                let Some(have) = info.gpair_name.as_deref() else {
                    return Ok(());
                };
                if have != value {
                    return Err(mismatch(have));
                }
                let logical = info
                    .meta
                    .get(meta_names::SIZE)
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                if info.data_len == 0 && logical > 0 {
                    return Err(WestError::permanent(format!(
                        "{}: InvalidObjectState: a placeholder without data; upload the data first",
                        what("SetAttrObj ltr")
                    )));
                }
                let Some(tags) = self.tags(bucket, key).await? else {
                    return Err(WestError::permanent(format!(
                        "{}: NoSuchKey",
                        what("SetAttrObj")
                    )));
                };
                let rest: Vec<Tag> = tags
                    .into_iter()
                    .filter(|t| t.key() != GPAIR_NAME_TAG)
                    .collect();
                self.put_tags(bucket, key, rest).await
            }
            SetAttr::RemoteToLocal => {
                match info.gpair_name.as_deref() {
                    Some(have) if have != value => return Err(mismatch(have)),
                    Some(_) if info.data_len == 0 => return Ok(()),
                    _ => {}
                }
                let mut meta = info.meta.clone();
                meta.insert(meta_names::SIZE.into(), info.data_len.to_string());
                self.put_empty(bucket, key, &meta, Some(value)).await
            }
        }
    }
}
