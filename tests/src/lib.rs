//! Harness for end-to-end tests: starts the real binaries on loopback with temporary
//! directories and gives tests clients for them.
//!
//! Binaries are looked up in `$GPAIR_BIN_DIR` if set, else next to the test executable's
//! target directory (`target/<profile>/`). `scripts/test.sh` builds them before the tests run.
#![allow(clippy::unwrap_used)] // test harness: a failure here is a test failure

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// Path of one of the workspace's binaries.
pub fn bin_path(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("GPAIR_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    // target/<profile>/deps/<test-exe> -> target/<profile>/<name>
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "binary {} not found; run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// An access key of the gateway with its role.
#[derive(Clone, Debug)]
pub struct Key {
    pub access_key: String,
    pub secret_key: String,
}

/// A running `s3fs-gateway` on 127.0.0.1 with its own root directory.
pub struct Gateway {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub root: PathBuf,
    pub config: PathBuf,
    pub backend: Key,
    pub reader: Key,
    _dir: Option<tempfile::TempDir>,
    log: PathBuf,
    prefix: Vec<String>,
}

/// Options for [`Gateway::start_with`].
#[derive(Default, Clone)]
pub struct GatewayOptions {
    /// Extra TOML appended to the generated config file (e.g. `[quota.b]` tables).
    pub extra_config: String,
    /// `fsync = false` when set.
    pub no_fsync: bool,
    /// A command the gateway runs under, e.g. `ip netns exec NS` (empty: none).
    pub command_prefix: Vec<String>,
    /// The listen address (default `127.0.0.1:0`).
    pub listen: Option<String>,
}

impl Gateway {
    /// Starts a gateway with a backend key and a reader key.
    pub fn start() -> Gateway {
        Self::start_with(GatewayOptions::default())
    }

    pub fn start_with(opts: GatewayOptions) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("west");
        std::fs::create_dir_all(&root).unwrap();
        let backend = Key {
            access_key: "AKTESTBACKEND0000001".into(),
            secret_key: "backend-secret-key-for-tests-0000000001".into(),
        };
        let reader = Key {
            access_key: "AKTESTREADER00000001".into(),
            secret_key: "reader-secret-key-for-tests-00000000001".into(),
        };
        let creds = dir.path().join("credentials.toml");
        std::fs::write(
            &creds,
            format!(
                "[[keys]]\naccess_key = \"{}\"\nsecret_key = \"{}\"\nrole = \"backend\"\n\n\
                 [[keys]]\naccess_key = \"{}\"\nsecret_key = \"{}\"\nrole = \"reader\"\n",
                backend.access_key, backend.secret_key, reader.access_key, reader.secret_key
            ),
        )
        .unwrap();
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "credentials = \"{}\"\nfsync = {}\n{}\n",
                creds.display(),
                !opts.no_fsync,
                opts.extra_config
            ),
        )
        .unwrap();
        let log = dir.path().join("gateway.log");
        let mut gw = Gateway {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            root,
            config,
            backend,
            reader,
            _dir: Some(dir),
            log,
            prefix: opts.command_prefix.clone(),
        };
        gw.spawn(opts.listen.as_deref().unwrap_or("127.0.0.1:0"));
        gw
    }

    fn spawn(&mut self, listen: &str) {
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin_path("s3fs-gateway"));
                c
            }
            None => Command::new(bin_path("s3fs-gateway")),
        };
        let (child, addr) = spawn_until_listening(
            cmd.arg("--root")
                .arg(&self.root)
                .arg("--listen")
                .arg(listen)
                .arg("--config")
                .arg(&self.config),
            &self.log,
            "s3fs-gateway listening on http://",
            Duration::from_secs(30),
            "gateway",
        );
        self.addr = addr.parse().unwrap();
        self.child = Some(child);
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The gateway's log so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("gateway is not running");
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        child.wait().unwrap()
    }

    /// Kills the gateway with SIGKILL (a crash) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the gateway again on the same root and the same port.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        let addr = self.addr.to_string();
        self.spawn(&addr);
    }

    /// An aws-sdk-s3 client for `key`, path-style, us-east-1.
    pub fn client(&self, key: &Key) -> aws_sdk_s3::Client {
        let creds =
            aws_credential_types::Credentials::from_keys(&key.access_key, &key.secret_key, None);
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// A SigV4-signed raw HTTP request (for the gpair extensions and malformed input).
    /// `path_and_query` must already be percent-encoded.
    pub fn signed(
        &self,
        key: &Key,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> RawResponse {
        let signed = sign_headers(
            self.addr,
            key,
            method,
            path_and_query,
            headers,
            body,
            SystemTime::now(),
        );
        raw_request(self.addr, method, path_and_query, &signed, body)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Computes the SigV4 headers for a request and returns all headers to send (the given ones
/// plus host, x-amz-date, x-amz-content-sha256 and authorization).
pub fn sign_headers(
    addr: SocketAddr,
    key: &Key,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;
    let identity =
        aws_credential_types::Credentials::from_keys(&key.access_key, &key.secret_key, None).into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = aws_sigv4::http_request::PayloadChecksumKind::XAmzSha256;
    settings.percent_encoding_mode = aws_sigv4::http_request::PercentEncodingMode::Single;
    settings.uri_path_normalization_mode =
        aws_sigv4::http_request::UriPathNormalizationMode::Disabled;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let host = addr.to_string();
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.push(("host".into(), host.clone()));
    let url = format!("http://{host}{path_and_query}");
    let signable = SignableRequest::new(
        method,
        url.clone(),
        all.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in &all {
        req = req.header(k.as_str(), v.as_str());
    }
    let mut req = req.body(()).unwrap();
    instructions.apply_to_request_http1x(&mut req);
    req.headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect()
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The `<Code>` of an S3 XML error body, if any.
    pub fn s3_code(&self) -> Option<String> {
        let body = self.body_str();
        let start = body.find("<Code>")? + "<Code>".len();
        let end = body[start..].find("</Code>")? + start;
        Some(body[start..end].to_string())
    }
}

/// Sends one HTTP/1.1 request over a new connection (Connection: close) and reads the reply.
/// Adds Content-Length when the headers lack it.
pub fn raw_request(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> RawResponse {
    let mut req = format!("{method} {path_and_query} HTTP/1.1\r\n");
    let mut has_host = false;
    let mut has_len = false;
    for (k, v) in headers {
        has_host |= k.eq_ignore_ascii_case("host");
        has_len |= k.eq_ignore_ascii_case("content-length");
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_host {
        req.push_str(&format!("host: {addr}\r\n"));
    }
    if !has_len {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("connection: close\r\n\r\n");
    raw_exchange(addr, req.as_bytes(), body)
}

/// Writes `head` and `body` verbatim to a new connection and parses the reply.
pub fn raw_exchange(addr: SocketAddr, head: &[u8], body: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _ = stream.write_all(head);
    let _ = stream.write_all(body);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> RawResponse {
    let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return RawResponse {
            status: 0,
            headers: vec![],
            body: buf.to_vec(),
        };
    };
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_str = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// Percent-encodes a key for use in a URL path (keeps `/`).
pub fn encode_key(key: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(key, SET).to_string()
}

/// Deterministic pseudo-random bytes for test data.
pub fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

pub mod fault_proxy;
/// Whether `path` is on a filesystem where we can mount FUSE (`/dev/fuse` exists).
pub mod world;

pub fn have_fuse() -> bool {
    Path::new("/dev/fuse").exists()
}

// ---------------------------------------------------------------------------------------------
// Helpers for the gateway end-to-end tests (tests/tests/gateway_*.rs).
// ---------------------------------------------------------------------------------------------

/// Lower-case hex MD5 of `data` (an S3 single-part ETag without the quotes).
pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

/// Base64 MD5 of `data` (a `Content-MD5` header value).
pub fn md5_b64(data: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(data))
}

/// The S3 multipart ETag (`"hex(md5(md5(p1) ‖ … ‖ md5(pN)))-N"`, with the quotes).
pub fn multipart_etag(parts: &[&[u8]]) -> String {
    use md5::Digest;
    let mut all = Vec::new();
    for p in parts {
        all.extend_from_slice(&md5::Md5::digest(p));
    }
    format!(
        "\"{}-{}\"",
        hex::encode(md5::Md5::digest(&all)),
        parts.len()
    )
}

/// CRC32C (Castagnoli) of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `x-amz-checksum-crc32c` header value for `data`.
pub fn crc32c_b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(crc32c(data).to_be_bytes())
}

/// Lower-case hex SHA-256 of `data` (computed by the SigV4 signer, which hashes the payload).
pub fn sha256_hex(data: &[u8]) -> String {
    let key = Key {
        access_key: "AKX".into(),
        secret_key: "SKX".into(),
    };
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let headers = sign_headers(addr, &key, "PUT", "/x/y", &[], data, SystemTime::now());
    headers
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-content-sha256"))
        .map(|(_, v)| v)
        .unwrap()
}

/// `x-amz-checksum-sha256` header value for `data`.
pub fn sha256_b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(hex::decode(sha256_hex(data)).unwrap())
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // civil_from_days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(mo - 1) as usize];
    format!("{wd}, {d:02} {mon} {y} {h:02}:{m:02}:{s:02} GMT")
}

/// HTTP status and S3 error code of a failed SDK call (code is "" when the reply had no body,
/// e.g. HEAD or 304).
pub fn sdk_err<E>(
    e: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> (u16, String)
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    let status = e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
    let code = match e {
        aws_sdk_s3::error::SdkError::ServiceError(se) => se.err().code().unwrap_or("").to_string(),
        _ => String::new(),
    };
    (status, code)
}

/// Expects an SDK call to have failed; returns its status and S3 error code.
pub fn expect_err<T: std::fmt::Debug, E>(
    r: Result<
        T,
        aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
    >,
) -> (u16, String)
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug,
{
    match r {
        Ok(v) => panic!("expected an error, got success: {v:?}"),
        Err(e) => sdk_err(&e),
    }
}

/// Every path under `dir` (recursive, not following symlinks), relative to `dir`, sorted.
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().to_path_buf());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Regular files under `dir` (recursive).
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    tree(dir)
        .into_iter()
        .filter(|p| dir.join(p).is_file())
        .collect()
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes; returns the last result.
pub fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Signs a request with `UNSIGNED-PAYLOAD` as the payload hash (for bodies the test
/// deliberately gets wrong, or streams).
pub fn sign_headers_unsigned(
    addr: SocketAddr,
    key: &Key,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    time: SystemTime,
) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;
    let identity =
        aws_credential_types::Credentials::from_keys(&key.access_key, &key.secret_key, None).into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = aws_sigv4::http_request::PayloadChecksumKind::XAmzSha256;
    settings.percent_encoding_mode = aws_sigv4::http_request::PercentEncodingMode::Single;
    settings.uri_path_normalization_mode =
        aws_sigv4::http_request::UriPathNormalizationMode::Disabled;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let host = addr.to_string();
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.push(("host".into(), host.clone()));
    let url = format!("http://{host}{path_and_query}");
    let signable = SignableRequest::new(
        method,
        url.clone(),
        all.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::UnsignedPayload,
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in &all {
        req = req.header(k.as_str(), v.as_str());
    }
    let mut req = req.body(()).unwrap();
    instructions.apply_to_request_http1x(&mut req);
    req.headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect()
}

/// Like [`raw_exchange`], but writes from a separate thread while reading, so a server that
/// answers early (and closes) is still heard.
pub fn raw_exchange_concurrent(addr: SocketAddr, head: &[u8], body: &[u8]) -> RawResponse {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut data = head.to_vec();
    data.extend_from_slice(body);
    let t = std::thread::spawn(move || {
        for chunk in data.chunks(64 * 1024) {
            if writer.write_all(chunk).is_err() {
                return;
            }
        }
        let _ = writer.shutdown(std::net::Shutdown::Write);
    });
    let mut buf = Vec::new();
    let mut reader = stream;
    let mut tmp = [0u8; 65536];
    loop {
        match reader.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(_) => break,
        }
    }
    let _ = t.join();
    parse_response(&buf)
}

/// Formats a request head (request line + headers + blank line) verbatim, adding
/// `connection: close`.
pub fn request_head(method: &str, path_and_query: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut req = format!("{method} {path_and_query} HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("connection: close\r\n\r\n");
    req.into_bytes()
}

impl Gateway {
    /// The gateway's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends `signal` and waits up to `timeout` for the exit status (None: still running;
    /// the process is then killed).
    pub fn signal_and_wait(&mut self, signal: i32, timeout: Duration) -> Option<ExitStatus> {
        self.send_signal(signal);
        self.wait_exit(timeout)
    }

    /// Sends `signal` to the running gateway.
    pub fn send_signal(&self, signal: i32) {
        let child = self.child.as_ref().expect("gateway is not running");
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    }

    /// Waits up to `timeout` for the gateway to exit (None: still running; it is then killed).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take().expect("gateway is not running");
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return Some(st);
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the gateway again on the same root and port after [`Gateway::signal_and_wait`]
    /// or [`Gateway::kill`].
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "gateway still running");
        let addr = self.addr.to_string();
        self.spawn(&addr);
    }

    /// Path of the gateway's stderr log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `GET /{bucket}?gpair-usage` as JSON (backend key).
    pub fn usage(&self, bucket: &str) -> serde_json::Value {
        let r = self.signed(
            &self.backend,
            "GET",
            &format!("/{bucket}?gpair-usage"),
            &[],
            b"",
        );
        assert_eq!(
            r.status,
            200,
            "gpair-usage of {bucket}: {} {}",
            r.status,
            r.body_str()
        );
        serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("usage JSON: {e}: {}", r.body_str()))
    }

    /// Creates `bucket` with the backend key (signed raw request); panics on failure.
    pub fn create_bucket(&self, bucket: &str) {
        let r = self.signed(&self.backend, "PUT", &format!("/{bucket}"), &[], b"");
        assert_eq!(r.status, 200, "create bucket {bucket}: {}", r.body_str());
    }

    /// PUTs `key` with the backend key (signed raw request) and extra headers; returns the reply.
    pub fn put_raw(
        &self,
        bucket: &str,
        key: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> RawResponse {
        self.signed(
            &self.backend,
            "PUT",
            &format!("/{bucket}/{}", encode_key(key)),
            headers,
            body,
        )
    }

    /// GETs `key` with the backend key (signed raw request) and extra headers.
    pub fn get_raw(&self, bucket: &str, key: &str, headers: &[(&str, &str)]) -> RawResponse {
        self.signed(
            &self.backend,
            "GET",
            &format!("/{bucket}/{}", encode_key(key)),
            headers,
            b"",
        )
    }

    /// HEADs `key` with the backend key (signed raw request).
    pub fn head_raw(&self, bucket: &str, key: &str) -> RawResponse {
        self.signed(
            &self.backend,
            "HEAD",
            &format!("/{bucket}/{}", encode_key(key)),
            &[],
            b"",
        )
    }
}

/// The path part of `path_and_query` as an S3 server canonicalises it for SigV4
/// (percent-decoded, then encoded once keeping unreserved characters and `/`); the query is
/// kept as is.
pub fn canonical_path(path_and_query: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let mut out = encode_key(&decoded);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Whether the file at `path` has no data extents at all (`lseek(SEEK_DATA)` finds none):
/// a fully sparse file. Extended attributes stored out of the inode still count in
/// `st_blocks`, so this is the precise test for "no data blocks".
pub fn has_no_data(path: &Path) -> bool {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: lseek on a descriptor we own.
    let r = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_DATA) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO)
}

impl Gateway {
    /// A signed request whose path is sent exactly as given (hand-encoded, e.g. `%2F`, `%2e`),
    /// signed over the canonical form the server computes, so that the server's answer is
    /// about the key, not the signature.
    pub fn signed_hand_encoded(
        &self,
        key: &Key,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> RawResponse {
        let signed = sign_headers(
            self.addr,
            key,
            method,
            &canonical_path(path_and_query),
            headers,
            body,
            SystemTime::now(),
        );
        raw_request(self.addr, method, path_and_query, &signed, body)
    }
}

// ------------------------------------------------------------------ backend daemon

/// A running `gpair-backend` with its own catalog and socket.
pub struct Backend {
    child: Option<Child>,
    /// Extra environment of the daemon (e.g. `FAILPOINTS`), applied at every (re)start.
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub catalog: PathBuf,
    pub config: PathBuf,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Backend {
    /// Starts a daemon for cluster `cluster_id`; `extra_sync` is appended to its `[sync]`
    /// table (e.g. `"reconcile_interval_secs = 2\n"`).
    pub fn start(cluster_id: &str, extra_sync: &str) -> Backend {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let socket = dir.join("backend.sock");
        let catalog = dir.join("catalog");
        let config = dir.join("backend.toml");
        std::fs::write(
            &config,
            format!(
                "cluster_id = \"{cluster_id}\"\ncatalog = \"{}\"\nsocket = \"{}\"\nshutdown_grace_secs = 5\n\n[sync]\nworkers = 8\nretry_base_ms = 100\nretry_max_ms = 2000\ngpeer_backoff_max_ms = 1000\n{extra_sync}",
                catalog.display(),
                socket.display()
            ),
        )
        .unwrap();
        let log = dir.join("backend.log");
        let mut b = Backend {
            child: None,
            env: Vec::new(),
            dir,
            socket,
            catalog,
            config,
            log,
            _tmp: tmp,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let (child, _) = spawn_until_listening(
            Command::new(bin_path("gpair-backend"))
                .arg("--config")
                .arg(&self.config)
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            &self.log,
            "gpair-backend listening on ",
            Duration::from_secs(60),
            "backend",
        );
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `timeout` for `needle` to appear in the daemon's log.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        poll_until(timeout, || self.log().contains(needle))
    }

    /// Waits up to `timeout` until `needle` appears at least `count` times in the log.
    pub fn wait_log_count(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        poll_until(timeout, || self.log().matches(needle).count() >= count)
    }

    /// Starts the daemon again after a kill (no SIGTERM first).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the backend is still running");
        self.spawn();
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("backend is not running");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        child.wait().unwrap()
    }

    /// Starts the daemon again on the same catalog and socket.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        self.spawn();
    }

    /// Runs the real `gpair` CLI against this daemon.
    pub fn gpair(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin_path("gpair"))
            .arg("--backend")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs `gpair --output json ARGS`, asserts success and parses stdout.
    pub fn gpair_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let out = self.gpair(&all);
        assert!(
            out.status.success(),
            "gpair {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "gpair {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a daemon (`cmd` with its arguments) with `RUST_LOG=info`, its stderr appended to
/// `log`, and waits up to `timeout` for the stdout line that starts with `ready`. Returns the
/// child and the rest of that line, trimmed; kills the child and panics with the log if no such
/// line came (`what` names the daemon in the message).
pub(crate) fn spawn_until_listening(
    cmd: &mut Command,
    log: &Path,
    ready: &'static str,
    timeout: Duration,
    what: &str,
) -> (Child, String) {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix(ready) {
                let _ = tx.send(rest.trim().to_string());
            }
        }
    });
    match rx.recv_timeout(timeout) {
        Ok(rest) => (child, rest),
        Err(_) => {
            let _ = child.kill();
            panic!(
                "{what} did not start; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// s3fs-fuse

/// An s3fs mount that is always unmounted, even when the test fails half-way.
pub struct S3fsMount {
    /// The mount point.
    pub mnt: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl S3fsMount {
    /// What s3fs logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts (`fusermount3 -u`, else a lazy `umount`) and waits for s3fs to exit.
    pub fn unmount(&mut self) {
        if is_mounted(&self.mnt) {
            let ok = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for S3fsMount {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Whether something is mounted at `mnt` (per `/proc/self/mountinfo`).
pub fn is_mounted(mnt: &Path) -> bool {
    let mnt = mnt.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*mnt))
}

/// Mounts `bucket` of `gw` with s3fs at `scratch/mnt`, signing with `key`; `options` are extra
/// `-o` options. The passwd file and `s3fs.log` go to `scratch` too. Waits up to 20 s for the
/// mount; if s3fs exits or does not mount, panics with its log followed by `diagnostics()`.
pub fn mount_s3fs(
    gw: &Gateway,
    key: &Key,
    bucket: &str,
    scratch: &Path,
    options: &[&str],
    diagnostics: impl Fn() -> String,
) -> S3fsMount {
    let mnt = scratch.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap_or_else(|e| panic!("mkdir {}: {e}", mnt.display()));
    let passwd = scratch.join("passwd-s3fs");
    std::fs::write(&passwd, format!("{}:{}\n", key.access_key, key.secret_key)).unwrap();
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = scratch.join("s3fs.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new("s3fs");
    cmd.arg(bucket)
        .arg(&mnt)
        .arg("-f")
        .args(["-o", &format!("url={}", gw.endpoint())])
        .args(["-o", "use_path_request_style"])
        .args(["-o", &format!("passwd_file={}", passwd.display())]);
    for option in options {
        cmd.args(["-o", option]);
    }
    let child = match cmd
        .args(["-o", "dbglevel=warn"])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("s3fs is not installed; scripts/test.sh installs it (Debian package s3fs)")
        }
        Err(e) => panic!("cannot start s3fs: {e}"),
    };
    let mut mount = S3fsMount {
        mnt: mnt.clone(),
        child: Some(child),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_mounted(&mnt) {
        if let Some(status) = mount.child.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "s3fs exited ({status}) before mounting\n--- s3fs log ---\n{}\n{}",
                mount.log(),
                diagnostics()
            );
        }
        assert!(
            Instant::now() < deadline,
            "s3fs did not mount within 20 s\n--- s3fs log ---\n{}\n{}",
            mount.log(),
            diagnostics()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    mount
}
