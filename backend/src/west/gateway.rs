//! The `gateway` dialect: our s3fs-gateway (docs/gateway.md). gpair-name travels in the
//! `x-gpair-name` header (PUT creates a placeholder in one request), SetAttrObj is
//! `POST /{bucket}/{key}?gpair-setattr` and rename is `POST /{bucket}/{key}?gpair-rename`, one
//! `rename(2)` on the gateway however large the directory.
//!
//! The extensions are sent through the same aws-sdk-s3 client as everything else (same
//! connection pool, timeouts and SigV4 signer): a PutObject request is turned into the
//! extension POST before it is signed, so the signature covers the method, the query and the
//! `x-gpair-*` headers.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::entries::{EntryStore, MoveOutcome, ObjInfo, ObjectOps};
use super::sdk::{
    classify, copy_metadata, copy_source, decode_header_value, encode_header_value, Sdk, SdkBacked,
};
use super::{Dialect, GpeerConn, SetAttr, WestError};

pub const GPAIR_NAME_HEADER: &str = "x-gpair-name";
pub const ATTR_KEY_HEADER: &str = "x-gpair-attr-key";
pub const ATTR_VALUE_HEADER: &str = "x-gpair-attr-value";
pub const RENAME_TO_HEADER: &str = "x-gpair-rename-to";
pub const RENAME_REPLACE_HEADER: &str = "x-gpair-rename-replace";

/// The attr keys of SetAttrObj.
pub fn attr_key(attr: SetAttr) -> &'static str {
    match attr {
        SetAttr::LocalToRemote => "ltr_local_to_remote",
        SetAttr::RemoteToLocal => "rtl_remote_to_local",
    }
}

/// Object primitives over s3fs-gateway.
pub struct GatewayOps {
    sdk: Sdk,
}

/// A [`super::WestStore`] for s3fs-gateway.
pub type GatewayWest = EntryStore<GatewayOps>;

impl EntryStore<GatewayOps> {
    pub fn new(conn: &GpeerConn) -> Self {
        EntryStore::from_ops(GatewayOps {
            sdk: Sdk::new(conn),
        })
    }
}

impl SdkBacked for GatewayOps {
    fn sdk(&self) -> &Sdk {
        &self.sdk
    }
}

crate::sdk_data_ops!(GatewayOps, |v: &str| super::data::NameAttach::Header(
    GPAIR_NAME_HEADER,
    encode_header_value(v)
));

impl GatewayOps {
    /// Sends a gpair extension: a PutObject of `key` turned into `POST …?{ext}` with `headers`,
    /// before signing. Returns the classified failure so callers can look at the code.
    async fn extension(
        &self,
        bucket: &str,
        key: &str,
        ext: &'static str,
        headers: Vec<(&'static str, String)>,
    ) -> Result<(), super::sdk::Failure> {
        self.sdk
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_length(0)
            .customize()
            .mutate_request(move |r| {
                let _ = r.set_method("POST");
                let uri = r.uri().to_owned();
                let sep = if uri.contains('?') { '&' } else { '?' };
                let _ = r.set_uri(format!("{uri}{sep}{ext}"));
                for (k, v) in &headers {
                    r.headers_mut().insert(*k, v.clone());
                }
            })
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(e, &self.sdk.what(&format!("POST ?{ext}"), bucket, key)))
    }
}

#[async_trait]
impl ObjectOps for GatewayOps {
    fn dialect(&self) -> Dialect {
        Dialect::Gateway
    }

    fn native_rename(&self) -> bool {
        true
    }

    async fn head_object(&self, bucket: &str, key: &str) -> Result<Option<ObjInfo>, WestError> {
        Ok(self
            .sdk
            .head(bucket, key, Some(GPAIR_NAME_HEADER))
            .await?
            .map(|(data_len, meta, name)| ObjInfo {
                data_len,
                meta,
                gpair_name: name
                    .map(|v| decode_header_value(&v))
                    .filter(|v| !v.is_empty()),
            }))
    }

    async fn put_empty(
        &self,
        bucket: &str,
        key: &str,
        meta: &BTreeMap<String, String>,
        gpair_name: Option<&str>,
    ) -> Result<(), WestError> {
        let headers = gpair_name
            .map(|v| vec![(GPAIR_NAME_HEADER, encode_header_value(v))])
            .unwrap_or_default();
        self.sdk.put_empty(bucket, key, meta, headers, None).await
    }

    async fn copy_object(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        _size: u64,
        replace: Option<(&BTreeMap<String, String>, Option<&str>)>,
    ) -> Result<(), WestError> {
        // The gateway drops gpair-name on a COPY-directive copy: always REPLACE, with the
        // source's metadata when none is given.
        let (meta, name) = copy_metadata(self, bucket, from, replace).await?;
        let headers: Vec<(&'static str, String)> = name
            .map(|v| vec![(GPAIR_NAME_HEADER, encode_header_value(&v))])
            .unwrap_or_default();
        self.sdk
            .client
            .copy_object()
            .bucket(bucket)
            .key(to)
            .copy_source(copy_source(bucket, from))
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .set_metadata(Some(meta.into_iter().collect()))
            .customize()
            .config_override(Sdk::copy_override())
            .mutate_request(move |r| {
                for (k, v) in &headers {
                    r.headers_mut().insert(*k, v.clone());
                }
            })
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(e, &self.sdk.what(&format!("COPY {from} ->"), bucket, to)).error)
    }

    async fn move_native(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        replace: bool,
    ) -> Result<MoveOutcome, WestError> {
        let mut headers = vec![(RENAME_TO_HEADER, encode_header_value(to))];
        if replace {
            headers.push((RENAME_REPLACE_HEADER, "true".to_owned()));
        }
        match self.extension(bucket, from, "gpair-rename", headers).await {
            Ok(()) => Ok(MoveOutcome::Moved),
            Err(f) if f.status == Some(404) && f.code.as_deref() != Some("NoSuchBucket") => {
                Ok(MoveOutcome::SourceMissing)
            }
            Err(f)
                if f.status == Some(409)
                    && f.code.as_deref() == Some("KeyConflict")
                    && !replace =>
            {
                Ok(MoveOutcome::DestinationExists)
            }
            Err(f) => Err(f.error),
        }
    }

    async fn set_attr(
        &self,
        bucket: &str,
        key: &str,
        attr: SetAttr,
        value: &str,
    ) -> Result<(), WestError> {
        let headers = vec![
            (ATTR_KEY_HEADER, attr_key(attr).to_owned()),
            (ATTR_VALUE_HEADER, encode_header_value(value)),
        ];
        self.extension(bucket, key, "gpair-setattr", headers)
            .await
            .map_err(WestError::from)
    }
}
