//! What both S3 dialects share: the aws-sdk-s3 client (path-style, static credentials,
//! bounded timeouts, no retries: the caller retries), error classification, `check()`, and the
//! plain object calls.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, ConfigBag, Intercept, Region, RequestChecksumCalculation,
    ResponseChecksumValidation, RuntimeComponents,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use super::entries::{ObjectOps, PlainOps};
use super::{CheckFailure, CheckStage, GpeerConn, WestError};

/// Bound on DNS resolution and on establishing a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one whole operation (request, answer and body). A gateway that accepts connections
/// and never answers fails every call after this long, so the gpeer counts as down and the
/// worker slot is freed.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one server-side copy (CopyObject, UploadPartCopy), which moves data.
pub const COPY_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound on one data transfer (a part, a ranged GET): generous, data moves, but finite.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on the wait for the first byte of an answer once the request is sent: a server that
/// accepted the request and stays silent is down, whatever the operation's own bound.
pub const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Test and operator override of every bound above, in milliseconds
/// (`GPAIR_WEST_TIMEOUT_MS`): the fault suite shortens them so a hanging gateway is detected
/// in seconds. Read once per client, so a rebuilt client picks up a change.
pub const TIMEOUT_ENV: &str = "GPAIR_WEST_TIMEOUT_MS";

pub(super) fn bound(default: Duration) -> Duration {
    std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map_or(default, Duration::from_millis)
}

/// A classified SDK failure.
#[derive(Debug, Clone)]
pub struct Failure {
    /// HTTP status of the answer, when there was one.
    pub status: Option<u16>,
    /// S3 error code (`NoSuchKey`, `SlowDown`…), when the answer had one.
    pub code: Option<String>,
    /// The request never got an answer (connection refused or reset, DNS, timeout).
    pub no_answer: bool,
    pub error: WestError,
}

impl Failure {
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }
}

impl From<Failure> for WestError {
    fn from(f: Failure) -> Self {
        f.error
    }
}

/// S3 error codes that mean "retrying will not help", whatever the HTTP status says.
const PERMANENT_CODES: &[&str] = &[
    "AccessDenied",
    "AccountProblem",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "NoSuchBucket",
    "NoSuchKey",
    "NoSuchUpload",
    "InvalidBucketName",
    "BadDigest",
    "InvalidDigest",
    "XAmzContentChecksumMismatch",
    "InvalidPart",
    "InvalidPartOrder",
    "EntityTooLarge",
    "EntityTooSmall",
    "KeyTooLongError",
    "MethodNotAllowed",
    "NotImplemented",
    "InvalidArgument",
    "InvalidRequest",
    "InvalidRange",
    "PreconditionFailed",
    "QuotaExceeded",
    "BucketAlreadyExists",
    "BucketAlreadyOwnedByYou",
    "BucketNotEmpty",
];

/// S3 error codes that mean "try again later".
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "TooManyRequests",
    "RequestTimeTooSkewed",
    "OperationAborted",
];

/// HTTP statuses with a definite meaning that retrying will not change: client errors a
/// working S3 endpoint answers (credentials, missing bucket or key, bad request, conflict,
/// precondition, range) and redirects to another region. Every other status, and in particular
/// statuses no S3 server sends (a half-dead gateway or something else on the port answering
/// 418, 299, 520…), is transient.
const PERMANENT_STATUSES: &[u16] = &[
    301, 307, 400, 401, 403, 404, 405, 409, 411, 412, 413, 414, 416, 501,
];

/// Whether an S3 error answer is worth retrying: by S3 error code first, then by HTTP status.
/// An answer we could not read at all (`None`) is transient.
pub fn transient_status(status: Option<u16>, code: Option<&str>) -> bool {
    if let Some(c) = code {
        if TRANSIENT_CODES.contains(&c) {
            return true;
        }
        if PERMANENT_CODES.contains(&c) {
            return false;
        }
    }
    match status {
        // An error inside a 2xx answer (S3 does that for copies): odd, retry.
        Some(s) => !PERMANENT_STATUSES.contains(&s),
        None => true,
    }
}

/// Classifies an SDK error (see [`super::ErrorKind`]): no answer, timeouts, 5xx, throttling
/// and unparseable answers are transient; other 4xx and request-construction failures are
/// permanent.
pub fn classify<E>(err: SdkError<E, HttpResponse>, what: &str) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err
        .as_service_error()
        .and_then(|e| e.code())
        .map(str::to_owned);
    let (transient, no_answer, message) = match &err {
        SdkError::ConstructionFailure(_) => (
            false,
            true,
            format!(
                "{what}: cannot build the request: {}",
                DisplayErrorContext(&err)
            ),
        ),
        SdkError::TimeoutError(_) => (true, true, format!("{what}: no answer in time")),
        SdkError::DispatchFailure(d) => (
            !d.is_user(),
            true,
            format!("{what}: {}", DisplayErrorContext(&err)),
        ),
        SdkError::ResponseError(_) => (
            true,
            false,
            format!(
                "{what}: unreadable answer (HTTP {}): {}",
                status.map_or_else(|| "?".into(), |s| s.to_string()),
                DisplayErrorContext(&err)
            ),
        ),
        SdkError::ServiceError(se) => {
            let detail;
            let msg = match se.err().message() {
                Some(m) => m,
                None if code.is_none() => {
                    detail = DisplayErrorContext(&err).to_string();
                    detail.as_str()
                }
                None => "",
            };
            (
                transient_status(status, code.as_deref()),
                false,
                format!(
                    "{what}: HTTP {} {}{}{}",
                    status.map_or_else(|| "?".into(), |s| s.to_string()),
                    code.as_deref().unwrap_or(""),
                    if msg.is_empty() { "" } else { ": " },
                    msg
                ),
            )
        }
        _ => (true, true, format!("{what}: {}", DisplayErrorContext(&err))),
    };
    Failure {
        status,
        code,
        no_answer,
        error: if transient {
            WestError::transient(message)
        } else {
            WestError::permanent(message)
        },
    }
}

/// Captures one response header (the gateway's `x-gpair-name`, which the SDK's typed output
/// does not expose).
#[derive(Debug, Clone)]
pub struct CaptureHeader {
    name: &'static str,
    slot: Arc<Mutex<Option<String>>>,
}

impl CaptureHeader {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            slot: Arc::new(Mutex::new(None)),
        }
    }

    pub fn take(&self) -> Option<String> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Intercept for CaptureHeader {
    fn name(&self) -> &'static str {
        "gpair::CaptureHeader"
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let v = context
            .response()
            .headers()
            .get(self.name)
            .map(str::to_owned);
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = v;
        Ok(())
    }
}

/// Percent-encodes a header value the gateway percent-decodes (`x-gpair-name`,
/// `x-gpair-attr-value`, `x-gpair-rename-to`): controls, `%`, space and every non-ASCII byte.
pub fn encode_header_value(v: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%').add(b' ');
    percent_encoding::utf8_percent_encode(v, SET).to_string()
}

/// Inverse of [`encode_header_value`] (lossy on invalid UTF-8, which we never send).
pub fn decode_header_value(v: &str) -> String {
    percent_encoding::percent_decode_str(v)
        .decode_utf8_lossy()
        .into_owned()
}

/// `bucket/key` for `x-amz-copy-source`, the key URL-encoded.
pub fn copy_source(bucket: &str, key: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    format!(
        "{bucket}/{}",
        percent_encoding::utf8_percent_encode(key, SET)
    )
}

/// Lower-cases user-metadata names.
pub fn metadata_map(m: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    })
    .unwrap_or_default()
}

/// The SDK client of one gpeer.
pub struct Sdk {
    pub client: Client,
    pub endpoint: String,
    pub region: String,
}

impl Sdk {
    pub fn new(conn: &GpeerConn) -> Self {
        Self::with_timeouts(conn, Self::timeouts(OPERATION_TIMEOUT))
    }

    fn with_timeouts(conn: &GpeerConn, timeouts: TimeoutConfig) -> Self {
        let region = if conn.region.trim().is_empty() {
            "us-east-1".to_owned()
        } else {
            conn.region.trim().to_owned()
        };
        let endpoint = conn.endpoint.trim().trim_end_matches('/').to_owned();
        let creds =
            aws_credential_types::Credentials::from_keys(&conn.access_key, &conn.secret_key, None);
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(Region::new(region.clone()))
            .credentials_provider(creds)
            .force_path_style(true)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Self {
            client: Client::from_conf(conf),
            endpoint,
            region,
        }
    }

    /// Connect, first-byte and whole-operation bounds (every one finite: a silent peer never
    /// holds a worker forever).
    pub fn timeouts(operation: Duration) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(bound(CONNECT_TIMEOUT).min(CONNECT_TIMEOUT))
            .read_timeout(bound(READ_TIMEOUT))
            .operation_timeout(bound(operation))
            .build()
    }

    /// A config override for calls that copy data.
    pub fn copy_override() -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::Config::builder().timeout_config(Self::timeouts(COPY_TIMEOUT))
    }

    /// A config override for calls that move a part's worth of data.
    pub fn transfer_override() -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::Config::builder().timeout_config(Self::timeouts(TRANSFER_TIMEOUT))
    }

    /// `"PUT bucket/key at http://…"`, for error messages.
    pub fn what(&self, op: &str, bucket: &str, key: &str) -> String {
        format!("{op} {bucket}/{key} at {}", self.endpoint)
    }

    /// `checks` DNS, TCP, credentials and the bucket, in that order.
    pub async fn check(&self, bucket: Option<&str>) -> Result<(), CheckFailure> {
        let ep = self.endpoint.as_str();
        let fail = |stage, message: String| CheckFailure { stage, message };
        let uri: http::Uri = ep.parse().map_err(|e| {
            fail(
                CheckStage::Protocol,
                format!("endpoint {ep:?} is not a valid URL: {e}"),
            )
        })?;
        let default_port = match uri.scheme_str() {
            Some("http") => 80,
            Some("https") => 443,
            _ => {
                return Err(fail(
                    CheckStage::Protocol,
                    format!("endpoint {ep:?}: the scheme must be http:// or https://"),
                ))
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| {
                fail(
                    CheckStage::Protocol,
                    format!("endpoint {ep:?} names no host"),
                )
            })?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(default_port);

        // 1. DNS.
        let lookup = tokio::net::lookup_host((host.as_str(), port));
        let addrs: Vec<SocketAddr> = match tokio::time::timeout(CONNECT_TIMEOUT, lookup).await {
            Ok(Ok(it)) => it.collect(),
            Ok(Err(e)) => {
                let msg = format!("cannot resolve {host} (endpoint {ep}): {e}");
                return Err(fail(CheckStage::Dns, msg));
            }
            Err(_) => {
                let msg = format!("cannot resolve {host} (endpoint {ep}): no answer within 5 s");
                return Err(fail(CheckStage::Dns, msg));
            }
        };
        if addrs.is_empty() {
            return Err(fail(
                CheckStage::Dns,
                format!("{host} (endpoint {ep}) resolves to no address"),
            ));
        }

        // 2. TCP.
        let mut errors = Vec::new();
        let mut connected = false;
        for a in &addrs {
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(a)).await {
                Ok(Ok(_)) => {
                    connected = true;
                    break;
                }
                Ok(Err(e)) => errors.push(format!("{a}: {e}")),
                Err(_) => errors.push(format!("{a}: no answer within {CONNECT_TIMEOUT:?}")),
            }
        }
        if !connected {
            return Err(fail(
                CheckStage::Connect,
                format!("cannot connect to {ep}: {}", errors.join("; ")),
            ));
        }

        // 3. Credentials: a signed ListBuckets.
        let auth_codes = [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "InvalidToken",
            "ExpiredToken",
            "RequestTimeTooSkewed",
            "AuthorizationHeaderMalformed",
        ];
        if let Err(e) = self.client.list_buckets().send().await {
            let f = classify(e, &format!("ListBuckets at {ep}"));
            let code = f.code.as_deref().unwrap_or("");
            if auth_codes.contains(&code) {
                return Err(fail(
                    CheckStage::Auth,
                    format!("{ep} refuses the credentials: {}", f.error),
                ));
            }
            match f.status {
                // Some servers let a key use one bucket but not list buckets: the bucket check
                // below decides.
                Some(403) if bucket.is_some() => {}
                Some(401 | 403) => {
                    return Err(fail(
                        CheckStage::Auth,
                        format!("{ep} refuses the credentials: {}", f.error),
                    ))
                }
                None if f.no_answer => {
                    return Err(fail(
                        CheckStage::Connect,
                        format!("{ep} does not answer S3 requests: {}", f.error),
                    ))
                }
                _ => {
                    return Err(fail(
                        CheckStage::Protocol,
                        format!("unexpected answer from {ep}: {}", f.error),
                    ))
                }
            }
        }

        // 4. The bucket.
        if let Some(b) = bucket {
            if let Err(e) = self.client.head_bucket().bucket(b).send().await {
                let f = classify(e, &format!("HeadBucket {b} at {ep}"));
                return Err(match f.status {
                    Some(404) => fail(
                        CheckStage::Bucket,
                        format!("bucket {b} does not exist on {ep}"),
                    ),
                    Some(401 | 403) => fail(
                        CheckStage::Auth,
                        format!(
                            "{ep} denies these credentials access to bucket {b}: {}",
                            f.error
                        ),
                    ),
                    Some(301 | 307 | 400) => fail(
                        CheckStage::Bucket,
                        format!(
                            "bucket {b} on {ep} cannot be used with region {} (HTTP {}): {}",
                            self.region,
                            f.status.unwrap_or(0),
                            f.error
                        ),
                    ),
                    None if f.no_answer => fail(
                        CheckStage::Connect,
                        format!("{ep} does not answer S3 requests: {}", f.error),
                    ),
                    _ => fail(
                        CheckStage::Protocol,
                        format!("unexpected answer from {ep}: {}", f.error),
                    ),
                });
            }
        }
        Ok(())
    }

    pub async fn bucket_exists(&self, bucket: &str) -> Result<bool, WestError> {
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(true),
            Err(e) => {
                let f = classify(e, &format!("HeadBucket {bucket} at {}", self.endpoint));
                if f.is_not_found() {
                    Ok(false)
                } else {
                    Err(f.error)
                }
            }
        }
    }

    pub async fn create_bucket(&self, bucket: &str) -> Result<(), WestError> {
        let mut req = self.client.create_bucket().bucket(bucket);
        if self.region != "us-east-1" {
            req = req.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                        self.region.as_str(),
                    ))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let f = classify(e, &format!("CreateBucket {bucket} at {}", self.endpoint));
                match f.code.as_deref() {
                    Some("BucketAlreadyOwnedByYou") => Ok(()),
                    Some("BucketAlreadyExists") if self.bucket_exists(bucket).await? => Ok(()),
                    _ => Err(f.error),
                }
            }
        }
    }

    /// HEAD; `None` on 404. Returns (data length, user metadata, captured header).
    pub async fn head(
        &self,
        bucket: &str,
        key: &str,
        capture: Option<&'static str>,
    ) -> Result<Option<(u64, BTreeMap<String, String>, Option<String>)>, WestError> {
        let cap = capture.map(CaptureHeader::new);
        let mut req = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .customize();
        if let Some(c) = &cap {
            req = req.interceptor(c.clone());
        }
        match req.send().await {
            Ok(out) => {
                let len = u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0);
                let meta = metadata_map(out.metadata());
                Ok(Some((len, meta, cap.and_then(|c| c.take()))))
            }
            Err(e) => {
                let f = classify(e, &self.what("HEAD", bucket, key));
                if f.is_not_found() {
                    Ok(None)
                } else {
                    Err(f.error)
                }
            }
        }
    }

    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), WestError> {
        match self
            .client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let f = classify(e, &self.what("DELETE", bucket, key));
                if f.code.as_deref() == Some("NoSuchKey") {
                    Ok(())
                } else {
                    Err(f.error)
                }
            }
        }
    }

    /// Every key under `prefix` in key order, with sizes (ListObjectsV2, paginated).
    pub async fn list_keys(
        &self,
        bucket: &str,
        prefix: &str,
        limit: Option<usize>,
    ) -> Result<Vec<(String, u64)>, WestError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self.client.list_objects_v2().bucket(bucket).max_keys(1000);
            if !prefix.is_empty() {
                req = req.prefix(prefix);
            }
            if let Some(t) = &token {
                req = req.continuation_token(t);
            }
            let page = req
                .send()
                .await
                .map_err(|e| classify(e, &self.what("LIST", bucket, prefix)))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push((
                        k.to_owned(),
                        u64::try_from(o.size().unwrap_or(0)).unwrap_or(0),
                    ));
                }
            }
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated().unwrap_or(false) && !t.is_empty() => {
                    token = Some(t.to_owned())
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// PUT of an empty body with metadata; `headers` are extra request headers, `tagging` an
    /// `x-amz-tagging` value.
    pub async fn put_empty(
        &self,
        bucket: &str,
        key: &str,
        meta: &BTreeMap<String, String>,
        headers: Vec<(&'static str, String)>,
        tagging: Option<String>,
    ) -> Result<(), WestError> {
        let mut req = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_length(0)
            .body(ByteStream::from_static(b""))
            .set_metadata(Some(
                meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            ));
        if let Some(t) = tagging {
            req = req.tagging(t);
        }
        req.customize()
            .mutate_request(move |r| {
                for (k, v) in &headers {
                    r.headers_mut().insert(*k, v.clone());
                }
            })
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(e, &self.what("PUT", bucket, key)).error)
    }
}

/// An [`ObjectOps`] over an [`Sdk`] client. Implementing it gives the dialect every
/// [`PlainOps`] primitive (they are the same on the gateway and on any S3); what differs between
/// the dialects stays in their own [`ObjectOps`] impls.
pub trait SdkBacked: Send + Sync + 'static {
    fn sdk(&self) -> &Sdk;
}

#[async_trait]
impl<T: SdkBacked> PlainOps for T {
    async fn check(&self, bucket: Option<&str>) -> Result<(), CheckFailure> {
        self.sdk().check(bucket).await
    }

    async fn bucket_exists(&self, bucket: &str) -> Result<bool, WestError> {
        self.sdk().bucket_exists(bucket).await
    }

    async fn create_bucket(&self, bucket: &str) -> Result<(), WestError> {
        self.sdk().create_bucket(bucket).await
    }

    async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), WestError> {
        self.sdk().delete(bucket, key).await
    }

    async fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<(String, u64)>, WestError> {
        self.sdk().list_keys(bucket, prefix, None).await
    }

    async fn any_key(&self, bucket: &str, prefix: &str) -> Result<bool, WestError> {
        Ok(!self
            .sdk()
            .list_keys(bucket, prefix, Some(1))
            .await?
            .is_empty())
    }
}

/// The metadata and gpair-name a copy of `from` writes when the dialect must send them itself:
/// `replace`'s, else the source's own (read with a HEAD; a missing source is permanent).
pub async fn copy_metadata<O: ObjectOps + SdkBacked>(
    ops: &O,
    bucket: &str,
    from: &str,
    replace: Option<(&BTreeMap<String, String>, Option<&str>)>,
) -> Result<(BTreeMap<String, String>, Option<String>), WestError> {
    match replace {
        Some((m, n)) => Ok((m.clone(), n.map(str::to_owned))),
        None => match ops.head_object(bucket, from).await? {
            Some(info) => Ok((info.meta, info.gpair_name)),
            None => Err(WestError::permanent(ops.sdk().what(
                "COPY (source missing)",
                bucket,
                from,
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_by_status_and_code() {
        // Throttling and server trouble: retry.
        for (status, code) in [
            (Some(503), Some("SlowDown")),
            (Some(503), None),
            (Some(500), Some("InternalError")),
            (Some(502), None),
            (Some(429), None),
            (Some(408), None),
            (Some(400), Some("RequestTimeout")),
            (None, None),
        ] {
            assert!(transient_status(status, code), "{status:?} {code:?}");
        }
        // Odd statuses from a half-dead gateway or whatever else answers on the port.
        for s in [200, 204, 299, 302, 418, 420, 451, 499, 520, 599, 999] {
            assert!(transient_status(Some(s), None), "HTTP {s}");
        }
        // Definite answers: retrying will not help.
        for (status, code) in [
            (Some(403), None),
            (Some(403), Some("AccessDenied")),
            (Some(404), Some("NoSuchBucket")),
            (Some(404), None),
            (Some(400), Some("BadDigest")),
            (Some(400), Some("XAmzContentChecksumMismatch")),
            (Some(400), None),
            (Some(409), Some("BucketNotEmpty")),
            (Some(501), None),
        ] {
            assert!(!transient_status(status, code), "{status:?} {code:?}");
        }
        // The code wins over a status that says otherwise.
        assert!(transient_status(Some(403), Some("RequestTimeTooSkewed")));
        assert!(!transient_status(Some(503), Some("NoSuchBucket")));
    }

    #[test]
    fn every_bound_is_set() {
        let t = Sdk::timeouts(OPERATION_TIMEOUT);
        assert!(t.connect_timeout().is_some());
        assert!(t.read_timeout().is_some());
        assert!(t.operation_timeout().is_some());
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient() {
        // A port nobody listens on: bind, learn the port, close.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let sdk = Sdk::new(&GpeerConn {
            endpoint: format!("http://127.0.0.1:{port}"),
            access_key: "AK".into(),
            secret_key: "SK".into(),
            region: String::new(),
            dialect: super::super::Dialect::Gateway,
        });
        let err = sdk.head("b", "k", None).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
    }

    #[tokio::test]
    async fn a_silent_server_is_transient_within_the_bound() {
        // Accepts and never answers.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let conn = GpeerConn {
            endpoint: format!("http://{addr}"),
            access_key: "AK".into(),
            secret_key: "SK".into(),
            region: String::new(),
            dialect: super::super::Dialect::Gateway,
        };
        let bound = Duration::from_secs(2);
        let sdk = Sdk::with_timeouts(
            &conn,
            TimeoutConfig::builder()
                .connect_timeout(bound)
                .read_timeout(bound)
                .operation_timeout(bound)
                .build(),
        );
        // The bound, not a hang: the call comes back on its own.
        let r = tokio::time::timeout(Duration::from_secs(60), sdk.head("b", "k", None))
            .await
            .expect("a silent server must not hold the call past its bound");
        let err = r.unwrap_err();
        assert!(err.is_transient(), "{err}");
        hold.abort();
    }
}
