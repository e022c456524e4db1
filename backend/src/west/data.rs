//! Moving file data to and from west: single PUTs, multipart uploads and ranged GETs. The
//! dialects differ only in how an upload carries gpair-name (the gateway's `x-gpair-name`
//! header, or the `s3` dialect's object tag), so the SDK calls live here once and each dialect
//! passes its [`NameAttach`].
//!
//! An uploaded object keeps gpair-name = the gpair value ("the data is still on east") until
//! SetAttrObj `ltr_local_to_remote` makes west the owner (DESIGN 5.2 step 4).

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use bytes::Bytes;

use super::sdk::{classify, Sdk};
use super::WestError;

/// How an upload marks gpair-name.
pub enum NameAttach {
    /// A request header (the gateway's `x-gpair-name`).
    Header(&'static str, String),
    /// An `x-amz-tagging` value (the `s3` dialect).
    Tagging(String),
}

/// The data primitives of one west backend. Keys are object keys.
#[async_trait]
pub trait DataOps: Send + Sync + 'static {
    /// PUT with a body. `crc32c` is sent as `x-amz-checksum-crc32c`, so a server that checks
    /// it refuses a body damaged on the way. Returns the ETag.
    async fn put_data(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        meta: &BTreeMap<String, String>,
        gpair_name: Option<&str>,
        crc32c: u32,
    ) -> Result<String, WestError>;
    /// Starts a multipart upload; returns its id.
    async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        meta: &BTreeMap<String, String>,
        gpair_name: Option<&str>,
    ) -> Result<String, WestError>;
    /// Uploads one part (numbered from 1); returns its ETag.
    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String, WestError>;
    /// Completes an upload from its parts in order; returns the object's ETag.
    async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> Result<String, WestError>;
    /// Aborts an upload; an unknown upload is not an error.
    async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str)
        -> Result<(), WestError>;
    /// The parts of an upload in progress; `None` if west does not know the upload.
    async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<Vec<super::ListedPart>>, WestError> {
        let _ = (bucket, key, upload_id);
        Ok(None)
    }
    /// The ids of the uploads in progress for exactly `key`.
    async fn uploads_of(&self, bucket: &str, key: &str) -> Result<Vec<String>, WestError>;
    /// `len` bytes from `start` (a ranged GET). Fewer bytes than asked is an error.
    async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        start: u64,
        len: u64,
    ) -> Result<Bytes, WestError>;
    /// A presigned GET URL of the object, valid for `expires` (a read grant for mounts).
    async fn presign_get(
        &self,
        bucket: &str,
        key: &str,
        expires: std::time::Duration,
    ) -> Result<String, WestError> {
        let _ = (bucket, key, expires);
        Err(WestError::permanent(
            "this west store cannot grant reads (no presigned URLs)",
        ))
    }
}

fn crc_header(crc32c: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc32c.to_be_bytes())
}

/// The ETag named by a 2xx answer the SDK could not parse. Some servers (moto) answer a
/// completed multipart upload with a root element the SDK does not accept; S3's "error inside
/// a 200" bodies name no ETag. The caller still verifies the object.
pub fn etag_of_unparsed_success<E>(
    e: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> Option<String> {
    e.raw_response()
        .filter(|r| r.status().is_success())
        .and_then(|r| r.body().bytes())
        .and_then(xml_etag)
}

/// Splits how gpair-name is attached into an `x-amz-tagging` value and an extra header.
fn attach_parts(name: Option<NameAttach>) -> (Option<String>, Option<(&'static str, String)>) {
    match name {
        Some(NameAttach::Tagging(t)) => (Some(t), None),
        Some(NameAttach::Header(h, v)) => (None, Some((h, v))),
        None => (None, None),
    }
}

/// The `<ETag>` of an XML answer, without quotes.
pub fn xml_etag(body: &[u8]) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    let start = body.find("<ETag>")? + "<ETag>".len();
    let end = start + body[start..].find("</ETag>")?;
    Some(normalize_etag(&body[start..end]))
}

pub fn normalize_etag(v: &str) -> String {
    v.replace("&quot;", "").replace('"', "").trim().to_owned()
}

fn etag_of(v: Option<&str>) -> String {
    v.unwrap_or_default().trim_matches('"').to_owned()
}

impl Sdk {
    pub async fn presign_get(
        &self,
        bucket: &str,
        key: &str,
        expires: std::time::Duration,
    ) -> Result<String, WestError> {
        let conf = aws_sdk_s3::presigning::PresigningConfig::expires_in(expires)
            .map_err(|e| WestError::permanent(format!("presign expiry {expires:?}: {e}")))?;
        let req = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .presigned(conf)
            .await
            .map_err(|e| {
                WestError::permanent(format!("{}: {e}", self.what("presign GET of", bucket, key)))
            })?;
        Ok(req.uri().to_owned())
    }

    pub async fn put_data(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        meta: &BTreeMap<String, String>,
        name: Option<NameAttach>,
        crc32c: u32,
    ) -> Result<String, WestError> {
        let len = body.len();
        let mut req = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_length(i64::try_from(len).unwrap_or(i64::MAX))
            .checksum_crc32_c(crc_header(crc32c))
            .body(ByteStream::from(body))
            .set_metadata(Some(
                meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            ));
        let (tagging, header) = attach_parts(name);
        if let Some(t) = tagging {
            req = req.tagging(t);
        }
        req.customize()
            .config_override(Sdk::transfer_override())
            .mutate_request(move |r| {
                if let Some((h, v)) = &header {
                    r.headers_mut().insert(*h, v.clone());
                }
            })
            .send()
            .await
            .map(|o| etag_of(o.e_tag()))
            .map_err(|e| classify(e, &self.what("PUT", bucket, key)).error)
    }

    pub async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        meta: &BTreeMap<String, String>,
        name: Option<NameAttach>,
    ) -> Result<String, WestError> {
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .set_metadata(Some(
                meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            ));
        let (tagging, header) = attach_parts(name);
        if let Some(t) = tagging {
            req = req.tagging(t);
        }
        let out = req
            .customize()
            .mutate_request(move |r| {
                if let Some((h, v)) = &header {
                    r.headers_mut().insert(*h, v.clone());
                }
            })
            .send()
            .await
            .map_err(|e| classify(e, &self.what("CreateMultipartUpload", bucket, key)).error)?;
        out.upload_id()
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                WestError::transient(format!(
                    "{}: the answer has no upload id",
                    self.what("CreateMultipartUpload", bucket, key)
                ))
            })
    }

    pub async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String, WestError> {
        let len = body.len();
        self.client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(i64::try_from(len).unwrap_or(i64::MAX))
            .body(ByteStream::from(body))
            .customize()
            .config_override(Sdk::transfer_override())
            .send()
            .await
            .map(|o| etag_of(o.e_tag()))
            .map_err(|e| {
                classify(
                    e,
                    &self.what(&format!("UploadPart {number} of"), bucket, key),
                )
                .error
            })
    }

    pub async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> Result<String, WestError> {
        let parts: Vec<CompletedPart> = parts
            .iter()
            .map(|(n, etag)| CompletedPart::builder().part_number(*n).e_tag(etag).build())
            .collect();
        match self
            .client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .customize()
            .config_override(Sdk::copy_override())
            .send()
            .await
        {
            Ok(o) => Ok(etag_of(o.e_tag())),
            Err(e) => match etag_of_unparsed_success(&e) {
                Some(etag) => Ok(etag),
                None => Err(classify(e, &self.what("CompleteMultipartUpload", bucket, key)).error),
            },
        }
    }

    pub async fn abort_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), WestError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let f = classify(e, &self.what("AbortMultipartUpload", bucket, key));
                if f.code.as_deref() == Some("NoSuchUpload") || f.status == Some(404) {
                    Ok(())
                } else {
                    Err(f.error)
                }
            }
        }
    }

    pub async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<Vec<super::ListedPart>>, WestError> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut req = self
                .client
                .list_parts()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id);
            if let Some(m) = &marker {
                req = req.part_number_marker(m);
            }
            let page = match req.send().await {
                Ok(p) => p,
                Err(e) => {
                    let f = classify(e, &self.what("ListParts", bucket, key));
                    if f.code.as_deref() == Some("NoSuchUpload") || f.status == Some(404) {
                        return Ok(None);
                    }
                    return Err(f.error);
                }
            };
            for p in page.parts() {
                let (Some(number), Some(size)) = (p.part_number(), p.size()) else {
                    continue;
                };
                out.push(super::ListedPart {
                    number,
                    size: u64::try_from(size).unwrap_or(0),
                    etag: etag_of(p.e_tag()),
                });
            }
            match page.next_part_number_marker() {
                Some(m) if page.is_truncated().unwrap_or(false) && !m.is_empty() => {
                    marker = Some(m.to_owned())
                }
                _ => break,
            }
        }
        out.sort_by_key(|p| p.number);
        Ok(Some(out))
    }

    pub async fn uploads_of(&self, bucket: &str, key: &str) -> Result<Vec<String>, WestError> {
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let mut req = self
                .client
                .list_multipart_uploads()
                .bucket(bucket)
                .prefix(key);
            if let Some(k) = &key_marker {
                req = req.key_marker(k);
            }
            if let Some(i) = &id_marker {
                req = req.upload_id_marker(i);
            }
            let page = req
                .send()
                .await
                .map_err(|e| classify(e, &self.what("ListMultipartUploads", bucket, key)).error)?;
            for u in page.uploads() {
                if u.key() == Some(key) {
                    if let Some(id) = u.upload_id() {
                        out.push(id.to_owned());
                    }
                }
            }
            match (
                page.is_truncated().unwrap_or(false),
                page.next_key_marker(),
                page.next_upload_id_marker(),
            ) {
                (true, Some(k), i) if !k.is_empty() => {
                    key_marker = Some(k.to_owned());
                    id_marker = i.map(str::to_owned);
                }
                _ => break,
            }
        }
        Ok(out)
    }

    pub async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        start: u64,
        len: u64,
    ) -> Result<Bytes, WestError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let what = || self.what(&format!("GET bytes {start}+{len} of"), bucket, key);
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .range(format!("bytes={start}-{}", start + len - 1))
            .customize()
            .config_override(Sdk::transfer_override())
            .send()
            .await
            .map_err(|e| classify(e, &what()).error)?;
        // A server that ignores Range would send the whole object: refuse before reading it.
        if out
            .content_length()
            .is_some_and(|l| l > 0 && l as u64 != len)
        {
            return Err(WestError::permanent(format!(
                "{}: west answered with {} bytes (does it honour Range?)",
                what(),
                out.content_length().unwrap_or(0)
            )));
        }
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| WestError::transient(format!("{}: body cut short: {e}", what())))?
            .into_bytes();
        if body.len() as u64 != len {
            return Err(WestError::permanent(format!(
                "{}: west returned {} bytes",
                what(),
                body.len()
            )));
        }
        Ok(body)
    }
}

/// Implements [`DataOps`] for an SDK-backed dialect, given how it attaches gpair-name.
#[macro_export]
macro_rules! sdk_data_ops {
    ($ty:ty, $attach:expr) => {
        #[async_trait::async_trait]
        impl $crate::west::data::DataOps for $ty {
            async fn put_data(
                &self,
                bucket: &str,
                key: &str,
                body: bytes::Bytes,
                meta: &std::collections::BTreeMap<String, String>,
                gpair_name: Option<&str>,
                crc32c: u32,
            ) -> Result<String, $crate::west::WestError> {
                let attach = gpair_name.map($attach);
                self.sdk
                    .put_data(bucket, key, body, meta, attach, crc32c)
                    .await
            }
            async fn create_upload(
                &self,
                bucket: &str,
                key: &str,
                meta: &std::collections::BTreeMap<String, String>,
                gpair_name: Option<&str>,
            ) -> Result<String, $crate::west::WestError> {
                let attach = gpair_name.map($attach);
                self.sdk.create_upload(bucket, key, meta, attach).await
            }
            async fn upload_part(
                &self,
                bucket: &str,
                key: &str,
                upload_id: &str,
                number: i32,
                body: bytes::Bytes,
            ) -> Result<String, $crate::west::WestError> {
                self.sdk
                    .upload_part(bucket, key, upload_id, number, body)
                    .await
            }
            async fn complete_upload(
                &self,
                bucket: &str,
                key: &str,
                upload_id: &str,
                parts: &[(i32, String)],
            ) -> Result<String, $crate::west::WestError> {
                self.sdk
                    .complete_upload(bucket, key, upload_id, parts)
                    .await
            }
            async fn abort_upload(
                &self,
                bucket: &str,
                key: &str,
                upload_id: &str,
            ) -> Result<(), $crate::west::WestError> {
                self.sdk.abort_upload(bucket, key, upload_id).await
            }
            async fn list_parts(
                &self,
                bucket: &str,
                key: &str,
                upload_id: &str,
            ) -> Result<Option<Vec<$crate::west::ListedPart>>, $crate::west::WestError> {
                self.sdk.list_parts(bucket, key, upload_id).await
            }
            async fn uploads_of(
                &self,
                bucket: &str,
                key: &str,
            ) -> Result<Vec<String>, $crate::west::WestError> {
                self.sdk.uploads_of(bucket, key).await
            }
            async fn get_range(
                &self,
                bucket: &str,
                key: &str,
                start: u64,
                len: u64,
            ) -> Result<bytes::Bytes, $crate::west::WestError> {
                self.sdk.get_range(bucket, key, start, len).await
            }
            async fn presign_get(
                &self,
                bucket: &str,
                key: &str,
                expires: std::time::Duration,
            ) -> Result<String, $crate::west::WestError> {
                self.sdk.presign_get(bucket, key, expires).await
            }
        }
    };
}
