//! Batched metadata updates on the gateway dialect: `POST /{bucket}?gpair-batch` carries up
//! to thousands of "make this entry carry this metadata" / "delete this entry" operations
//! in one signed request, and the gateway makes them durable with one `syncfs`
//! (docs/gateway.md, "Batch"). This is what lets metadata sync run at tens of thousands of
//! entries per second instead of one HTTP round trip and two fsyncs per entry.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::entries::entry_metadata;
use super::{GpeerConn, WestError, WestKey};
use crate::entry::{EntryKind, EntryMeta};

/// One operation of a batch.
#[derive(Debug, Clone)]
pub enum BatchOp {
    /// Make the west entry match `meta` (a placeholder for files, a marker for directories;
    /// a file whose data lives on west keeps it).
    Meta { key: WestKey, meta: EntryMeta },
    /// Remove the west entry.
    Delete { key: WestKey, is_dir: bool },
    /// SetAttrObj on a file's object.
    SetAttr { key: WestKey, attr: super::SetAttr },
}

/// Bound on one batch request and its answer.
const BATCH_TIMEOUT: Duration = Duration::from_secs(60);

pub struct BatchClient {
    endpoint: String,
    host: String,
    conn: GpeerConn,
    http: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

#[derive(serde::Deserialize)]
struct Reply {
    results: Vec<OpResult>,
}

#[derive(serde::Deserialize)]
struct OpResult {
    status: u16,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl BatchClient {
    pub fn new(conn: &GpeerConn) -> Self {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let endpoint = conn.endpoint.trim_end_matches('/').to_string();
        let host = endpoint
            .split_once("://")
            .map_or(endpoint.as_str(), |(_, h)| h)
            .to_string();
        Self {
            endpoint,
            host,
            conn: conn.clone(),
            http: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Applies `ops`; the outer error is for the whole request (transient: retry the batch),
    /// the inner results are per operation.
    pub async fn apply(
        &self,
        bucket: &str,
        gpair_value: &str,
        ops: &[BatchOp],
    ) -> Result<Vec<Result<(), WestError>>, WestError> {
        let body = serde_json::json!({
            "ops": ops.iter().map(|op| match op {
                BatchOp::Meta { key, meta } => {
                    let is_dir = meta.kind == EntryKind::Dir;
                    serde_json::json!({
                        "op": "meta",
                        "key": key.object_key(is_dir),
                        "gpair_name": if is_dir { None } else { Some(gpair_value) },
                        "size": if is_dir { 0 } else { meta.size },
                        "meta": entry_metadata(meta, key),
                    })
                }
                BatchOp::Delete { key, is_dir } => serde_json::json!({ "op": "delete", "key": key.object_key(*is_dir) }),
                BatchOp::SetAttr { key, attr } => serde_json::json!({
                    "op": "set_attr",
                    "key": key.object_key(false),
                    "attr": super::gateway::attr_key(*attr),
                    "value": gpair_value,
                }),
            }).collect::<Vec<_>>()
        });
        let body = Bytes::from(body.to_string());
        let path = format!("/{bucket}?gpair-batch");
        let headers = self.sign("POST", &path, &body)?;
        let mut req = http::Request::builder()
            .method("POST")
            .uri(format!("{}{path}", self.endpoint));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(Full::new(body))
            .map_err(|e| WestError::permanent(format!("cannot build the batch request: {e}")))?;
        let what = format!("POST {}/{bucket}?gpair-batch", self.endpoint);
        // Bounded like every west call: a gateway that accepts and stays silent is down.
        let limit = super::sdk::bound(BATCH_TIMEOUT);
        let resp = tokio::time::timeout(limit, self.http.request(req))
            .await
            .map_err(|_| WestError::transient(format!("{what}: timed out")))?
            .map_err(|e| WestError::transient(format!("{what}: {e}")))?;
        let status = resp.status();
        let bytes = tokio::time::timeout(limit, resp.into_body().collect())
            .await
            .map_err(|_| WestError::transient(format!("{what}: timed out reading the answer")))?
            .map_err(|e| WestError::transient(format!("{what}: {e}")))?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let code = text
                .split("<Code>")
                .nth(1)
                .and_then(|r| r.split("</Code>").next())
                .unwrap_or("");
            let msg = format!("{what}: HTTP {status} {code}");
            let code = Some(code).filter(|c| !c.is_empty());
            return Err(
                if super::sdk::transient_status(Some(status.as_u16()), code) {
                    WestError::transient(msg)
                } else {
                    WestError::permanent(msg)
                },
            );
        }
        let reply: Reply = serde_json::from_slice(&bytes)
            .map_err(|e| WestError::transient(format!("{what}: unreadable answer ({e})")))?;
        if reply.results.len() != ops.len() {
            return Err(WestError::transient(format!(
                "{what}: {} results for {} operations",
                reply.results.len(),
                ops.len()
            )));
        }
        Ok(reply
            .results
            .into_iter()
            .zip(ops)
            .map(|(r, op)| {
                if (200..300).contains(&r.status) {
                    return Ok(());
                }
                if let BatchOp::SetAttr {
                    attr: super::SetAttr::RemoteToLocal,
                    ..
                } = op
                {
                    if r.status == 404 && r.code.as_deref() == Some("NoSuchKey") {
                        // Nothing left to release.
                        return Ok(());
                    }
                }
                let transient = super::sdk::transient_status(Some(r.status), r.code.as_deref());
                let msg = format!(
                    "HTTP {} {}: {}",
                    r.status,
                    r.code.unwrap_or_default(),
                    r.message.unwrap_or_default()
                );
                if transient {
                    Err(WestError::transient(msg))
                } else {
                    Err(WestError::permanent(msg))
                }
            })
            .collect())
    }

    fn sign(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Vec<(String, String)>, WestError> {
        use aws_sigv4::http_request::{
            sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
            SigningSettings, UriPathNormalizationMode,
        };
        use aws_sigv4::sign::v4;
        let identity = aws_credential_types::Credentials::from_keys(
            &self.conn.access_key,
            &self.conn.secret_key,
            None,
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.conn.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| WestError::permanent(format!("cannot sign: {e}")))?
            .into();
        let url = format!("{}{path}", self.endpoint);
        let base = [("host", self.host.as_str())];
        let signable = SignableRequest::new(
            method,
            url.clone(),
            base.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| WestError::permanent(format!("cannot sign: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| WestError::permanent(format!("cannot sign: {e}")))?
            .into_parts();
        let mut req = http::Request::builder()
            .method(method)
            .uri(url)
            .header("host", &self.host)
            .body(())
            .map_err(|e| WestError::permanent(format!("cannot sign: {e}")))?;
        instructions.apply_to_request_http1x(&mut req);
        Ok(req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect())
    }
}
