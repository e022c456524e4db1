//! The S3 operations, on top of [`Store`]. Each handler validates its input into domain
//! types, runs the filesystem work on the blocking pool, and maps errors once (via
//! [`crate::error::Error`]). Handlers never trust a key, a header or a body they did not check.

use std::collections::BTreeMap;
use std::ops::Not;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use md5::Digest;
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3Request, S3Response, S3Result, S3};

use crate::body::FileStream;
use crate::error::{Error, Result};
use crate::keys::ObjectKey;
use crate::listing::{self, Item, ListParams};
use crate::meta::ObjectMeta;
use crate::multipart;
use crate::quota::{Contribution, Usage};
use crate::store::{Found, PosixAttrs, Staged, Store};

/// Times a GET looks an object up again when a PUT replaced it while it was being opened.
const GET_RETRIES: u32 = 8;

/// Size of the chunks written to and read from disk.
pub const IO_CHUNK: usize = 1 << 20;
/// S3's largest single object.
const MAX_OBJECT_SIZE: u64 = 5 << 40;
/// S3's limit on user metadata (keys + values).
const MAX_USER_METADATA: usize = 2048;
/// Header the gpair-name travels in (percent-encoded UTF-8).
pub const GPAIR_NAME_HEADER: &str = "x-gpair-name";

/// The gateway's S3 service state.
pub struct Gateway {
    pub store: Arc<Store>,
    pub usage: Arc<Usage>,
    pub region: String,
}

/// Runs blocking filesystem work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(Error::Io(std::io::Error::other(format!(
            "blocking task failed: {e}"
        )))),
    }
}

fn parse_key(key: &str) -> Result<ObjectKey> {
    Ok(ObjectKey::parse(key)?)
}

fn timestamp_ns(ns: i128) -> Timestamp {
    let t = if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    } else {
        UNIX_EPOCH
    };
    Timestamp::from(t)
}

fn to_offset(t: &Timestamp) -> time::OffsetDateTime {
    t.clone().into()
}

/// Percent-encodes a gpair value for a header (keeps printable ASCII except `%`).
pub fn encode_header_value(v: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    percent_encoding::utf8_percent_encode(v, SET).to_string()
}

pub fn decode_header_value(name: &str, v: &http::HeaderValue) -> Result<String> {
    let raw = v.to_str().map_err(|_| {
        Error::InvalidArgument(format!(
            "{name} must be ASCII (percent-encode other characters)"
        ))
    })?;
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::InvalidArgument(format!("{name} is not percent-encoded UTF-8")))
}

fn user_metadata(meta: Option<Metadata>) -> Result<BTreeMap<String, String>> {
    let user: BTreeMap<String, String> = meta
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let size: usize = user.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_USER_METADATA {
        return Err(Error::S3(s3_error!(
            MetadataTooLarge,
            "user metadata is {size} bytes; the limit is {MAX_USER_METADATA}"
        )));
    }
    Ok(user)
}

fn format_expires(t: Option<Timestamp>) -> Option<String> {
    let t = t?;
    let mut buf = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
    String::from_utf8(buf).ok()
}

fn parse_expires(s: &Option<String>) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, s.as_deref()?).ok()
}

/// The checksums a client asked us to verify, and the hasher that computes them.
fn checksum_plan(
    algorithm: Option<&ChecksumAlgorithm>,
    given: [&Option<String>; 5],
) -> S3Result<s3s::checksum::ChecksumHasher> {
    let mut h = s3s::checksum::ChecksumHasher::default();
    let [crc32, crc32c, sha1, sha256, crc64] = given;
    if crc32.is_some() {
        h.crc32 = Some(Default::default());
    }
    if crc32c.is_some() {
        h.crc32c = Some(Default::default());
    }
    if sha1.is_some() {
        h.sha1 = Some(Default::default());
    }
    if sha256.is_some() {
        h.sha256 = Some(Default::default());
    }
    if crc64.is_some() {
        h.crc64nvme = Some(Default::default());
    }
    if let Some(alg) = algorithm {
        match alg.as_str() {
            ChecksumAlgorithm::CRC32 => h.crc32 = Some(Default::default()),
            ChecksumAlgorithm::CRC32C => h.crc32c = Some(Default::default()),
            ChecksumAlgorithm::SHA1 => h.sha1 = Some(Default::default()),
            ChecksumAlgorithm::SHA256 => h.sha256 = Some(Default::default()),
            ChecksumAlgorithm::CRC64NVME => h.crc64nvme = Some(Default::default()),
            other => {
                return Err(s3_error!(
                    InvalidArgument,
                    "unsupported checksum algorithm {other}"
                ))
            }
        }
    }
    Ok(h)
}

/// The hasher and the expected checksums of an uploaded body, from the `Content-MD5`,
/// `x-amz-checksum-*` and `x-amz-sdk-checksum-algorithm` fields of a PutObject or UploadPart
/// input (both name them alike; the checksum and MD5 fields are moved out of `$input`).
macro_rules! body_checks {
    ($input:ident) => {
        body_checks(
            $input.checksum_algorithm.as_ref(),
            $input.content_md5,
            [
                $input.checksum_crc32,
                $input.checksum_crc32c,
                $input.checksum_sha1,
                $input.checksum_sha256,
                $input.checksum_crc64nvme,
            ],
        )
    };
}

/// See [`body_checks!`]: [`checksum_plan`] and [`Expected::new`] over the same fields.
fn body_checks(
    algorithm: Option<&ChecksumAlgorithm>,
    md5: Option<String>,
    given: [Option<String>; 5],
) -> S3Result<(s3s::checksum::ChecksumHasher, Expected)> {
    let hasher = checksum_plan(algorithm, given.each_ref())?;
    Ok((hasher, Expected::new(md5, given)))
}

/// Expected checksums: from headers, then from aws-chunked trailers (which win).
#[derive(Default, Clone)]
struct Expected {
    md5: Option<String>,
    sums: [(&'static str, Option<String>); 5],
}

impl Expected {
    fn new(md5: Option<String>, given: [Option<String>; 5]) -> Self {
        let [a, b, c, d, e] = given;
        Self {
            md5,
            sums: [
                ("crc32", a),
                ("crc32c", b),
                ("sha1", c),
                ("sha256", d),
                ("crc64nvme", e),
            ],
        }
    }

    fn add_trailers(&mut self, trailers: Option<&s3s::TrailingHeaders>) {
        let Some(map) = trailers.and_then(s3s::TrailingHeaders::take) else {
            return;
        };
        for (name, slot) in self.sums.iter_mut() {
            if let Some(v) = map
                .get(format!("x-amz-checksum-{name}"))
                .and_then(|v| v.to_str().ok())
            {
                *slot = Some(v.to_owned());
            }
        }
    }

    /// Compares with what was computed; returns the verified checksums to store.
    fn verify(&self, md5: &[u8], computed: s3s::dto::Checksum) -> Result<BTreeMap<String, String>> {
        use base64::Engine;
        if let Some(want) = &self.md5 {
            let want = base64::engine::general_purpose::STANDARD
                .decode(want.trim())
                .map_err(|_| Error::S3(s3_error!(InvalidDigest, "Content-MD5 is not base64")))?;
            if want.len() != 16 {
                return Err(Error::S3(s3_error!(
                    InvalidDigest,
                    "Content-MD5 is not 16 bytes"
                )));
            }
            if want != md5 {
                return Err(Error::S3(s3_error!(
                    BadDigest,
                    "the Content-MD5 you specified did not match what we received"
                )));
            }
        }
        let got = [
            computed.checksum_crc32,
            computed.checksum_crc32c,
            computed.checksum_sha1,
            computed.checksum_sha256,
            computed.checksum_crc64nvme,
        ];
        let mut verified = BTreeMap::new();
        for ((name, want), got) in self.sums.iter().zip(got) {
            if let Some(want) = want {
                if got.as_deref() != Some(want.as_str()) {
                    return Err(Error::S3(s3_error!(
                        BadDigest,
                        "the x-amz-checksum-{name} you specified did not match what we received"
                    )));
                }
                verified.insert((*name).to_owned(), want.clone());
            }
        }
        Ok(verified)
    }
}

/// Streams a request body into a staging file, in chunks of [`IO_CHUNK`] on the blocking pool.
/// Returns the staging file once exactly `len` bytes arrived.
async fn receive(
    store: &Arc<Store>,
    body: StreamingBlob,
    len: u64,
    hasher: s3s::checksum::ChecksumHasher,
) -> Result<Staged> {
    let store2 = Arc::clone(store);
    let staged = blocking(move || Ok(Staged::create(&store2, hasher)?)).await?;
    // One chunk is hashed and written on the blocking pool while the next one arrives. At
    // most one write is in flight and at most 4 chunks wait: when the disk is slower than the
    // network, we stop reading the body (backpressure) instead of buffering it.
    let mut writing: Option<tokio::task::JoinHandle<Result<Staged>>> = None;
    let mut idle = Some(staged);
    let mut body = body;
    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_len = 0usize;
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .map_err(|e| Error::S3(s3_error!(IncompleteBody, "request body ended early: {e}")))?;
        total += chunk.len() as u64;
        if total > len {
            return Err(Error::S3(s3_error!(
                IncompleteBody,
                "request body is longer than Content-Length ({len})"
            )));
        }
        pending_len += chunk.len();
        pending.push(chunk);
        if pending_len < IO_CHUNK {
            continue;
        }
        if let Some(w) = writing.take_if(|w| w.is_finished() || pending_len >= 4 * IO_CHUNK) {
            idle = Some(w.await.map_err(|e| Error::Io(std::io::Error::other(e)))??);
        }
        if let Some(mut staged) = idle.take() {
            let chunks = std::mem::take(&mut pending);
            pending_len = 0;
            writing = Some(tokio::task::spawn_blocking(move || {
                staged.write(&chunks)?;
                Ok(staged)
            }));
        }
    }
    if total != len {
        return Err(Error::S3(s3_error!(
            IncompleteBody,
            "request body has {total} bytes but Content-Length says {len}"
        )));
    }
    let mut staged = match (writing, idle) {
        (Some(w), _) => w.await.map_err(|e| Error::Io(std::io::Error::other(e)))??,
        (None, Some(s)) => s,
        (None, None) => return Err(Error::Io(std::io::Error::other("staging file lost"))),
    };
    if !pending.is_empty() {
        staged = blocking(move || {
            staged.write(&pending)?;
            Ok(staged)
        })
        .await?;
    }
    Ok(staged)
}

fn content_length(len: Option<i64>) -> Result<u64> {
    let len = len.ok_or_else(|| Error::S3(s3_error!(MissingContentLength)))?;
    let len = u64::try_from(len)
        .map_err(|_| Error::InvalidArgument("Content-Length is negative".into()))?;
    if len > MAX_OBJECT_SIZE {
        return Err(Error::S3(s3_error!(
            EntityTooLarge,
            "objects are limited to 5 TiB"
        )));
    }
    Ok(len)
}

fn etag_matches(cond: &ETagCondition, etag: &str, weak: bool) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(want) => {
            let have = ETag::Strong(etag.to_owned());
            if weak {
                have.weak_cmp(want)
            } else {
                have.strong_cmp(want)
            }
        }
    }
}

/// S3's precedence for GET/HEAD conditions.
fn check_read_conditions(
    found: &Found,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let etag = &found.meta.etag;
    let modified_secs = (found.meta.uploaded_ns / 1_000_000_000) as i64;
    match if_match {
        Some(c) if !etag_matches(c, etag, false) => return Err(s3_error!(PreconditionFailed)),
        Some(_) => {}
        None => {
            if let Some(t) = if_unmodified_since {
                if modified_secs > to_offset(t).unix_timestamp() {
                    return Err(s3_error!(PreconditionFailed));
                }
            }
        }
    }
    let not_modified = || {
        // A 304 carries the validators of the current object, as S3 sends them.
        let mut e = s3_error!(NotModified);
        let mut h = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&format!("\"{etag}\"")) {
            h.insert(http::header::ETAG, v);
        }
        let mut date = Vec::new();
        if timestamp_ns(found.meta.uploaded_ns)
            .format(TimestampFormat::HttpDate, &mut date)
            .is_ok()
        {
            if let Ok(v) = http::HeaderValue::from_bytes(&date) {
                h.insert(http::header::LAST_MODIFIED, v);
            }
        }
        e.set_headers(h);
        e
    };
    match if_none_match {
        Some(c) if etag_matches(c, etag, true) => return Err(not_modified()),
        Some(_) => {}
        None => {
            if let Some(t) = if_modified_since {
                if modified_secs <= to_offset(t).unix_timestamp() {
                    return Err(not_modified());
                }
            }
        }
    }
    Ok(())
}

fn gpair_header(resp_headers: &mut http::HeaderMap, meta: &ObjectMeta) {
    if let Some(name) = &meta.gpair_name {
        if let Ok(v) = http::HeaderValue::from_str(&encode_header_value(name)) {
            resp_headers.insert(GPAIR_NAME_HEADER, v);
        }
    }
}

fn user_meta_out(meta: &ObjectMeta) -> Option<Metadata> {
    meta.user.is_empty().not().then(|| {
        meta.user
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
}

fn checksum_out(meta: &ObjectMeta, name: &str, full: bool) -> Option<String> {
    full.then(|| meta.checksums.get(name).cloned()).flatten()
}

/// What a write of a new object should carry, taken from request headers.
struct NewObject {
    meta: ObjectMeta,
    posix: PosixAttrs,
}

#[allow(clippy::too_many_arguments)]
fn new_object(
    user: Option<Metadata>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<Timestamp>,
    website_redirect_location: Option<String>,
    headers: &http::HeaderMap,
) -> Result<NewObject> {
    let user = user_metadata(user)?;
    let posix = PosixAttrs::from_user_meta(&user)?;
    let gpair_name = match headers.get(GPAIR_NAME_HEADER) {
        Some(v) => {
            let v = decode_header_value(GPAIR_NAME_HEADER, v)?;
            if v.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "{GPAIR_NAME_HEADER} is empty"
                )));
            }
            Some(v)
        }
        None => None,
    };
    let meta = ObjectMeta {
        content_type,
        content_encoding,
        content_disposition,
        content_language,
        cache_control,
        expires: format_expires(expires),
        website_redirect_location,
        user,
        gpair_name,
        ..ObjectMeta::new(String::new(), 0)
    };
    Ok(NewObject { meta, posix })
}

/// The logical size a placeholder PUT declares in `x-amz-meta-gpair-size`.
fn declared_size(meta: &ObjectMeta) -> Result<Option<u64>> {
    match meta.user.get("gpair-size") {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| {
            Error::InvalidArgument(format!(
                "x-amz-meta-gpair-size: {v:?} is not a size in bytes"
            ))
        }),
    }
}

impl Gateway {
    /// Finishes a write: verifies, stores metadata and POSIX attributes on the staging file,
    /// makes it durable and renames it over the key, all under the bucket's usage lock.
    fn commit(
        store: &Store,
        usage: &Usage,
        bucket: &str,
        key: &ObjectKey,
        mut staged: Staged,
        mut meta: ObjectMeta,
        posix: PosixAttrs,
    ) -> Result<ObjectMeta> {
        let bucket_dir = store.require_bucket(bucket)?;
        meta.size = staged.written;
        if meta.gpair_name.is_some() && staged.written == 0 {
            // A placeholder: sparse file of the logical size, no data.
            if let Some(size) = declared_size(&meta)? {
                staged.file.set_len(size)?;
                meta.size = size;
            }
            meta.placeholder = true;
        }
        meta.store(&staged.path)?;
        posix.apply(&staged.path)?;
        if store.fsync() {
            staged.file.sync_all()?;
        }
        let dest = store.object_path(bucket, key);
        let added = if meta.placeholder {
            Contribution::NONE
        } else {
            Contribution::data(staged.written)
        };
        let parent = dest
            .parent()
            .ok_or_else(|| Error::Io(std::io::Error::other("object path has no parent")))?
            .to_path_buf();
        store.check_writable(&bucket_dir, key)?;
        store.create_dirs(&parent)?;
        // Only the swap itself runs under the usage lock (and the key's, so a SetAttrObj never
        // interleaves with it); the directory fsync comes after.
        let one_at_a_time = store.lock_key(bucket, &key.to_string());
        let swapped = usage.apply(bucket, || {
            store.check_writable(&bucket_dir, key)?;
            let removed = Contribution::of_path(&dest);
            let mut tries = 0;
            // A concurrent delete may prune the (empty) parent between create_dirs and the
            // rename: recreate it and try again.
            while let Err(e) = std::fs::rename(&staged.path, &dest) {
                tries += 1;
                if e.kind() != std::io::ErrorKind::NotFound || tries > 3 {
                    return Err(e.into());
                }
                store.create_dirs(&parent)?;
            }
            staged.keep();
            Ok((removed, added, ()))
        });
        drop(one_at_a_time);
        swapped?;
        store.restore_dir_mtime(&parent);
        store.sync_dir(&parent)?;
        Ok(meta)
    }

    async fn put_dir_marker(
        &self,
        bucket: String,
        key: ObjectKey,
        obj: NewObject,
        len: u64,
    ) -> Result<ObjectMeta> {
        if len > 0 {
            return Err(Error::InvalidArgument(format!(
                "{key} names a directory and cannot hold data"
            )));
        }
        let store = Arc::clone(&self.store);
        blocking(move || {
            let bucket_dir = store.require_bucket(&bucket)?;
            store.check_writable(&bucket_dir, &key)?;
            let path = store.object_path(&bucket, &key);
            store.create_dirs(&path)?;
            let mut meta = obj.meta;
            meta.dir_marker = true;
            meta.etag = "d41d8cd98f00b204e9800998ecf8427e".into(); // MD5 of nothing
            meta.store(&path)?;
            obj.posix.apply(&path)?;
            store.sync_dir(&path)?;
            Ok(meta)
        })
        .await
    }

    async fn lookup(&self, bucket: &str, key: &ObjectKey) -> Result<Option<Found>> {
        let store = Arc::clone(&self.store);
        let (bucket, key) = (bucket.to_owned(), key.clone());
        blocking(move || store.lookup(&bucket, &key)).await
    }

    async fn require(&self, bucket: &str, key: &ObjectKey) -> Result<Found> {
        self.lookup(bucket, key)
            .await?
            .ok_or_else(|| Error::NoSuchKey(key.to_string()))
    }

    fn object_entry(found: &Found, key: String) -> Object {
        Object {
            key: Some(key),
            size: Some(found.content_length() as i64),
            e_tag: Some(ETag::Strong(found.meta.etag.clone())),
            last_modified: Some(timestamp_ns(found.meta.uploaded_ns)),
            storage_class: Some(ObjectStorageClass::from_static(
                ObjectStorageClass::STANDARD,
            )),
            ..Default::default()
        }
    }

    /// Runs a listing and looks up each object's size and ETag.
    async fn list(
        &self,
        bucket: &str,
        prefix: String,
        delimiter: Option<String>,
        after: Option<String>,
        max: usize,
    ) -> Result<(Vec<Object>, Vec<CommonPrefix>, bool, Option<String>)> {
        let store = Arc::clone(&self.store);
        let bucket = bucket.to_owned();
        blocking(move || {
            let dir = store.require_bucket(&bucket)?;
            let params = ListParams {
                prefix: &prefix,
                delimiter: delimiter.as_deref(),
                after: after.as_deref(),
                max,
            };
            let listing = listing::list(&dir, &params)?;
            let last = listing.items.last().map(|i| i.key().to_owned());
            let mut objects = Vec::new();
            let mut prefixes = Vec::new();
            for item in listing.items {
                match item {
                    Item::Prefix(p) => prefixes.push(CommonPrefix { prefix: Some(p) }),
                    Item::Object(k) => {
                        let Ok(key) = ObjectKey::parse(&k) else {
                            continue;
                        };
                        // Entries can vanish between the walk and the lookup; skip them.
                        if let Some(found) = store.lookup(&bucket, &key)? {
                            objects.push(Self::object_entry(&found, k));
                        }
                    }
                }
            }
            Ok((objects, prefixes, listing.truncated, last))
        })
        .await
    }
}

/// `encoding-type=url` on a listing: keys, prefixes and markers in the answer are
/// percent-encoded (clients decode them), so keys with `+`, `%` or control-like characters
/// survive clients that always ask for it (the AWS CLI does).
struct KeyEncoding(bool);

impl KeyEncoding {
    fn of(e: &Option<EncodingType>) -> Self {
        Self(e.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL))
    }

    fn one(&self, s: String) -> String {
        const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'_')
            .remove(b'.')
            .remove(b'~')
            .remove(b'/');
        if self.0 {
            percent_encoding::utf8_percent_encode(&s, SET).to_string()
        } else {
            s
        }
    }

    fn opt(&self, s: Option<String>) -> Option<String> {
        s.map(|s| self.one(s))
    }

    fn listing(&self, objects: &mut [Object], prefixes: &mut [CommonPrefix]) {
        for o in objects {
            o.key = self.opt(o.key.take());
        }
        for p in prefixes {
            p.prefix = self.opt(p.prefix.take());
        }
    }
}

fn max_keys(v: Option<i32>) -> Result<usize> {
    match v {
        None => Ok(1000),
        Some(n) if n < 0 => Err(Error::InvalidArgument(
            "max-keys must not be negative".into(),
        )),
        Some(n) => Ok((n as usize).min(1000)),
    }
}

fn encode_token(key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn decode_token(token: &str) -> Result<String> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            Error::InvalidArgument("the continuation token is not one this gateway issued".into())
        })
}

#[async_trait::async_trait]
impl S3 for Gateway {
    #[tracing::instrument(skip_all)]
    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let store = Arc::clone(&self.store);
        let buckets = blocking(move || {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(store.root())? {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if !s3s::path::check_bucket_name(&name) || !entry.file_type()?.is_dir() {
                    continue;
                }
                let md = entry.metadata()?;
                let created = md
                    .created()
                    .or_else(|_| md.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                out.push(Bucket {
                    name: Some(name),
                    creation_date: Some(Timestamp::from(created)),
                    bucket_region: None,
                });
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await?;
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some("gpair".into()),
                id: Some("gpair".into()),
            }),
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket))]
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket;
        let store = Arc::clone(&self.store);
        let usage = Arc::clone(&self.usage);
        blocking(move || {
            let dir = store.bucket_dir(&bucket);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::S3(s3_error!(
                        BucketAlreadyOwnedByYou,
                        "bucket {bucket} already exists"
                    )))
                }
                Err(e) => return Err(e.into()),
            }
            store.sync_dir(store.root())?;
            usage.bucket_created(&bucket);
            Ok(())
        })
        .await?;
        Ok(S3Response::new(CreateBucketOutput::default()))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket))]
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.store.require_bucket(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(self.region.clone()),
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket))]
    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.store.require_bucket(&req.input.bucket)?;
        // S3 reports us-east-1 as an empty constraint.
        let constraint = (self.region != "us-east-1")
            .then(|| BucketLocationConstraint::from(self.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: constraint,
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket))]
    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        self.store.require_bucket(&req.input.bucket)?;
        // Buckets are never versioned: no status, as S3 answers for a bucket that never was.
        Ok(S3Response::new(GetBucketVersioningOutput::default()))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket))]
    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = req.input.bucket;
        let store = Arc::clone(&self.store);
        let usage = Arc::clone(&self.usage);
        blocking(move || {
            let dir = store.require_bucket(&bucket)?;
            if holds_objects(&dir)? {
                return Err(Error::S3(s3_error!(
                    BucketNotEmpty,
                    "bucket {bucket} is not empty"
                )));
            }
            for (id, _) in multipart::list(&store, &bucket, "")? {
                let _ = std::fs::remove_dir_all(store.multipart_dir().join(id));
            }
            std::fs::remove_dir_all(&dir)?;
            store.sync_dir(store.root())?;
            usage.bucket_deleted(&bucket);
            Ok(())
        })
        .await?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let headers = req.headers;
        let trailers = req.trailing_headers;
        let input = req.input;
        let key = parse_key(&input.key)?;
        let bucket = input.bucket;
        self.store.require_bucket(&bucket)?;
        let len = content_length(input.content_length)?;
        let obj = new_object(
            input.metadata,
            input.content_type,
            input.content_encoding,
            input.content_disposition,
            input.content_language,
            input.cache_control,
            input.expires,
            input.website_redirect_location,
            &headers,
        )?;
        if input.if_match.is_some() || input.if_none_match.is_some() {
            let existing = self.lookup(&bucket, &key).await?;
            match (&input.if_none_match, &existing) {
                (Some(c), Some(f)) if etag_matches(c, &f.meta.etag, true) => {
                    return Err(s3_error!(PreconditionFailed, "key {key} already exists"))
                }
                _ => {}
            }
            match (&input.if_match, &existing) {
                (Some(_), None) => {
                    return Err(s3_error!(NoSuchKey, "key {key} does not exist (If-Match)"))
                }
                (Some(c), Some(f)) if !etag_matches(c, &f.meta.etag, false) => {
                    return Err(s3_error!(
                        PreconditionFailed,
                        "ETag of {key} does not match If-Match"
                    ))
                }
                _ => {}
            }
        }
        if key.is_dir() {
            let meta = self.put_dir_marker(bucket, key, obj, len).await?;
            return Ok(S3Response::new(PutObjectOutput {
                e_tag: Some(ETag::Strong(meta.etag)),
                ..Default::default()
            }));
        }
        let (hasher, mut expected) = body_checks!(input)?;
        let body = input
            .body
            .ok_or_else(|| s3_error!(IncompleteBody, "PUT without a body"))?;

        let reservation = {
            let (store, usage, bucket, key) = (
                Arc::clone(&self.store),
                Arc::clone(&self.usage),
                bucket.clone(),
                key.clone(),
            );
            blocking(move || {
                let old = Contribution::of_path(&store.object_path(&bucket, &key));
                usage.reserve(&bucket, len, old)
            })
            .await?
        };
        let staged = receive(&self.store, body, len, hasher).await?;
        expected.add_trailers(trailers.as_ref());

        let (store, usage) = (Arc::clone(&self.store), Arc::clone(&self.usage));
        let meta = blocking(move || {
            let mut staged = staged;
            let md5 = std::mem::take(&mut staged.md5).finalize();
            let computed = std::mem::take(&mut staged.checksums).finalize();
            let mut meta = obj.meta;
            meta.checksums = expected.verify(&md5, computed)?;
            meta.etag = hex::encode(md5);
            let meta = Self::commit(&store, &usage, &bucket, &key, staged, meta, obj.posix)?;
            drop(reservation);
            Ok(meta)
        })
        .await?;
        let output = PutObjectOutput {
            e_tag: Some(ETag::Strong(meta.etag.clone())),
            checksum_crc32: meta.checksums.get("crc32").cloned(),
            checksum_crc32c: meta.checksums.get("crc32c").cloned(),
            checksum_sha1: meta.checksums.get("sha1").cloned(),
            checksum_sha256: meta.checksums.get("sha256").cloned(),
            checksum_crc64nvme: meta.checksums.get("crc64nvme").cloned(),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let key = parse_key(&input.key)?;
        let store = Arc::clone(&self.store);
        let bucket = input.bucket.clone();
        let key2 = key.clone();
        let range = input.range;
        let (found, first, file, served) = blocking(move || {
            // The metadata and the data file are read separately: a PUT renamed over the key
            // between the two would pair one version's ETag with another's bytes. The lookup
            // is made again once the file is open, until both name the same version.
            let mut tries = 0;
            let (found, file) = loop {
                let found = store
                    .lookup(&bucket, &key2)?
                    .ok_or_else(|| Error::NoSuchKey(key2.to_string()))?;
                let file = match std::fs::File::open(&found.path) {
                    Ok(f) => Some(f),
                    Err(e) if tries >= GET_RETRIES => return Err(e.into()),
                    // Replaced or deleted meanwhile: look again.
                    Err(_) => None,
                };
                let again = store.lookup(&bucket, &key2)?;
                let same = again.as_ref().is_some_and(|a| {
                    a.meta.etag == found.meta.etag && a.meta.uploaded_ns == found.meta.uploaded_ns
                });
                match file {
                    Some(f) if same => break (found, f),
                    _ if tries < GET_RETRIES => tries += 1,
                    // Never a mismatched pair: the client retries a SlowDown.
                    _ => {
                        return Err(Error::S3(S3Error::with_message(
                            s3s::S3ErrorCode::SlowDown,
                            "the object is being overwritten faster than it can be read; retry",
                        )))
                    }
                }
            };
            let total = found.content_length();
            let served = match &range {
                None => 0..total,
                Some(r) => r.check(total).map_err(|e| Error::S3(e.into()))?,
            };
            if served.is_empty() {
                return Ok((found, Bytes::new(), None, served));
            }
            let first_len = (served.end - served.start).min(IO_CHUNK as u64) as usize;
            let first = crate::body::read_at(&file, served.start, first_len)?;
            Ok((found, first, Some(file), served))
        })
        .await?;
        check_read_conditions(
            &found,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let total = found.content_length();
        let len = served.end - served.start;
        let body = FileStream::new(first, file, served.start, len);
        let full = len == total;
        let meta = &found.meta;
        let output = GetObjectOutput {
            body: Some(StreamingBlob::new(body)),
            content_length: Some(len as i64),
            content_range: range.map(|_| {
                format!(
                    "bytes {}-{}/{}",
                    served.start,
                    served.end.saturating_sub(1),
                    total
                )
            }),
            accept_ranges: Some("bytes".into()),
            last_modified: Some(timestamp_ns(meta.uploaded_ns)),
            e_tag: Some(ETag::Strong(meta.etag.clone())),
            metadata: user_meta_out(meta),
            content_type: meta.content_type.clone(),
            content_encoding: meta.content_encoding.clone(),
            content_disposition: meta.content_disposition.clone(),
            content_language: meta.content_language.clone(),
            cache_control: meta.cache_control.clone(),
            expires: parse_expires(&meta.expires),
            website_redirect_location: meta.website_redirect_location.clone(),
            checksum_crc32: checksum_out(meta, "crc32", full),
            checksum_crc32c: checksum_out(meta, "crc32c", full),
            checksum_sha1: checksum_out(meta, "sha1", full),
            checksum_sha256: checksum_out(meta, "sha256", full),
            checksum_crc64nvme: checksum_out(meta, "crc64nvme", full),
            ..Default::default()
        };
        let mut resp = S3Response::new(output);
        gpair_header(&mut resp.headers, meta);
        Ok(resp)
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let key = parse_key(&input.key)?;
        let found = self.require(&input.bucket, &key).await?;
        check_read_conditions(
            &found,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let total = found.content_length();
        let (len, content_range) = match &input.range {
            None => (total, None),
            Some(r) => {
                let served = r.check(total)?;
                (
                    served.end - served.start,
                    Some(format!(
                        "bytes {}-{}/{}",
                        served.start,
                        served.end.saturating_sub(1),
                        total
                    )),
                )
            }
        };
        let meta = &found.meta;
        let output = HeadObjectOutput {
            content_length: Some(len as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            last_modified: Some(timestamp_ns(meta.uploaded_ns)),
            e_tag: Some(ETag::Strong(meta.etag.clone())),
            metadata: user_meta_out(meta),
            content_type: meta.content_type.clone(),
            content_encoding: meta.content_encoding.clone(),
            content_disposition: meta.content_disposition.clone(),
            content_language: meta.content_language.clone(),
            cache_control: meta.cache_control.clone(),
            expires: parse_expires(&meta.expires),
            website_redirect_location: meta.website_redirect_location.clone(),
            checksum_crc32: checksum_out(meta, "crc32", true),
            checksum_crc32c: checksum_out(meta, "crc32c", true),
            checksum_sha1: checksum_out(meta, "sha1", true),
            checksum_sha256: checksum_out(meta, "sha256", true),
            checksum_crc64nvme: checksum_out(meta, "crc64nvme", true),
            ..Default::default()
        };
        let mut resp = S3Response::new(output);
        gpair_header(&mut resp.headers, meta);
        Ok(resp)
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let key = parse_key(&req.input.key)?;
        let bucket = req.input.bucket;
        let (store, usage) = (Arc::clone(&self.store), Arc::clone(&self.usage));
        blocking(move || delete_one(&store, &usage, &bucket, &key)).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket))]
    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let bucket = req.input.bucket;
        let quiet = req.input.delete.quiet.unwrap_or(false);
        let ids = req.input.delete.objects;
        if ids.len() > 1000 {
            return Err(s3_error!(
                MalformedXML,
                "DeleteObjects takes at most 1000 keys"
            ));
        }
        self.store.require_bucket(&bucket)?;
        let (store, usage) = (Arc::clone(&self.store), Arc::clone(&self.usage));
        let (deleted, errors) = blocking(move || {
            let mut deleted = Vec::new();
            let mut errors = Vec::new();
            for id in ids {
                let result =
                    parse_key(&id.key).and_then(|k| delete_one(&store, &usage, &bucket, &k));
                match result {
                    Ok(()) => {
                        if !quiet {
                            deleted.push(DeletedObject {
                                key: Some(id.key),
                                ..Default::default()
                            });
                        }
                    }
                    Err(e) => {
                        let e = S3Error::from(e);
                        errors.push(s3s::dto::Error {
                            code: Some(e.code().as_str().to_owned()),
                            key: Some(id.key),
                            message: e.message().map(str::to_owned),
                            version_id: None,
                        });
                    }
                }
            }
            Ok((deleted, errors))
        })
        .await?;
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: errors.is_empty().not().then_some(errors),
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let headers = req.headers;
        let input = req.input;
        let (src_bucket, src_key) = match &input.copy_source {
            CopySource::Bucket { bucket, key, .. } => (bucket.to_string(), parse_key(key)?),
            _ => {
                return Err(s3_error!(
                    NotImplemented,
                    "only bucket copy sources are supported"
                ))
            }
        };
        let dst_key = parse_key(&input.key)?;
        self.store.require_bucket(&input.bucket)?;
        let src = self.require(&src_bucket, &src_key).await?;
        check_copy_conditions(&src, &input)?;
        let dst_bucket = input.bucket;
        if src.meta.placeholder {
            return Err(Error::InvalidObjectState(format!(
                "{src_key} is a placeholder (its data lives on east) and cannot be copied"
            ))
            .into());
        }
        if src.meta.dir_marker || dst_key.is_dir() {
            return Err(s3_error!(
                InvalidRequest,
                "directory markers cannot be copied"
            ));
        }
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let same = src_bucket == dst_bucket && src_key == dst_key;
        if same && !replace {
            return Err(s3_error!(
                InvalidRequest,
                "copying an object onto itself needs x-amz-metadata-directive: REPLACE"
            ));
        }
        let (mut meta, posix) = if replace {
            let obj = new_object(
                input.metadata,
                input.content_type,
                input.content_encoding,
                input.content_disposition,
                input.content_language,
                input.cache_control,
                input.expires,
                input.website_redirect_location,
                &headers,
            )?;
            (obj.meta, obj.posix)
        } else {
            let mut m = src.meta.clone();
            m.gpair_name = None;
            let posix = PosixAttrs::from_user_meta(&m.user)?;
            (m, posix)
        };
        meta.etag = src.meta.etag.clone();
        meta.checksums = src.meta.checksums.clone();
        meta.uploaded_ns = crate::meta::now_ns();
        meta.v = crate::meta::FORMAT_VERSION;

        let (store, usage) = (Arc::clone(&self.store), Arc::clone(&self.usage));
        let old = Contribution::of_path(&self.store.object_path(&dst_bucket, &dst_key));
        let reservation = self.usage.reserve(&dst_bucket, src.md.len(), old)?;
        let meta = blocking(move || {
            if same {
                // Metadata-only update in place, of the object as it is now: a SetAttrObj may
                // have replaced it since it was looked up.
                let _one_at_a_time = store.lock_key(&dst_bucket, &dst_key.to_string());
                let now = store.lookup(&dst_bucket, &dst_key)?;
                let unchanged = now.as_ref().is_some_and(|n| {
                    n.path == src.path && n.meta.etag == src.meta.etag && !n.meta.placeholder
                });
                if !unchanged {
                    return Err(Error::InvalidObjectState(format!(
                        "{dst_key} changed while its metadata was being replaced; retry"
                    )));
                }
                meta.size = src.md.len();
                meta.store(&src.path)?;
                posix.apply(&src.path)?;
                return Ok(meta);
            }
            let mut staged = Staged::create(&store, Default::default())?;
            let mut from = std::fs::File::open(&src.path)?;
            staged.written = std::io::copy(&mut from, &mut staged.file)?;
            let meta = Self::commit(&store, &usage, &dst_bucket, &dst_key, staged, meta, posix)?;
            drop(reservation);
            Ok(meta)
        })
        .await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(meta.etag)),
                last_modified: Some(timestamp_ns(meta.uploaded_ns)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket))]
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let max = max_keys(input.max_keys)?;
        let after = match &input.continuation_token {
            Some(t) => Some(decode_token(t)?),
            None => input.start_after.clone(),
        };
        let prefix = input.prefix.clone().unwrap_or_default();
        let (mut objects, mut prefixes, truncated, last) = self
            .list(&input.bucket, prefix, input.delimiter.clone(), after, max)
            .await?;
        let key_count = (objects.len() + prefixes.len()) as i32;
        let enc = KeyEncoding::of(&input.encoding_type);
        enc.listing(&mut objects, &mut prefixes);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: enc.opt(input.prefix),
            delimiter: enc.opt(input.delimiter),
            max_keys: Some(max as i32),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            start_after: enc.opt(input.start_after),
            is_truncated: Some(truncated),
            next_continuation_token: if truncated {
                last.map(|k| encode_token(&k))
            } else {
                None
            },
            contents: Some(objects),
            common_prefixes: Some(prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket))]
    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let max = max_keys(input.max_keys)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let (mut objects, mut prefixes, truncated, last) = self
            .list(
                &input.bucket,
                prefix,
                input.delimiter.clone(),
                input.marker.clone().filter(|m| !m.is_empty()),
                max,
            )
            .await?;
        let enc = KeyEncoding::of(&input.encoding_type);
        enc.listing(&mut objects, &mut prefixes);
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: enc.opt(input.prefix),
            delimiter: enc.opt(input.delimiter),
            marker: enc.opt(input.marker),
            max_keys: Some(max as i32),
            is_truncated: Some(truncated),
            next_marker: if truncated { enc.opt(last) } else { None },
            contents: Some(objects),
            common_prefixes: Some(prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket))]
    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let input = req.input;
        let max = max_keys(input.max_keys)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let (mut objects, mut prefixes, truncated, last) = self
            .list(
                &input.bucket,
                prefix,
                input.delimiter.clone(),
                input.key_marker.clone().filter(|m| !m.is_empty()),
                max,
            )
            .await?;
        let enc = KeyEncoding::of(&input.encoding_type);
        enc.listing(&mut objects, &mut prefixes);
        let versions = objects
            .into_iter()
            .map(|o| ObjectVersion {
                key: o.key,
                size: o.size,
                e_tag: o.e_tag,
                last_modified: o.last_modified,
                is_latest: Some(true),
                version_id: Some("null".into()),
                storage_class: Some(ObjectVersionStorageClass::from_static(
                    ObjectVersionStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: enc.opt(input.prefix),
            delimiter: enc.opt(input.delimiter),
            key_marker: enc.opt(input.key_marker),
            max_keys: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: if truncated { enc.opt(last) } else { None },
            encoding_type: input.encoding_type,
            next_version_id_marker: if truncated { Some("null".into()) } else { None },
            versions: Some(versions),
            common_prefixes: Some(prefixes),
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let headers = req.headers;
        let input = req.input;
        let key = parse_key(&input.key)?;
        if key.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "{key} names a directory and cannot hold data"
            ))
            .into());
        }
        self.store.require_bucket(&input.bucket)?;
        let obj = new_object(
            input.metadata,
            input.content_type,
            input.content_encoding,
            input.content_disposition,
            input.content_language,
            input.cache_control,
            input.expires,
            input.website_redirect_location,
            &headers,
        )?;
        let store = Arc::clone(&self.store);
        let (bucket, k) = (input.bucket.clone(), key.to_string());
        let id = blocking(move || multipart::create(&store, &bucket, &k, obj.meta)).await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key, part = req.input.part_number))]
    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let trailers = req.trailing_headers;
        let input = req.input;
        let number = input.part_number;
        if !(1..=multipart::MAX_PART_NUMBER).contains(&number) {
            return Err(s3_error!(
                InvalidArgument,
                "part number must be between 1 and 10000"
            ));
        }
        let len = content_length(input.content_length)?;
        if len > 5 << 30 {
            return Err(s3_error!(EntityTooLarge, "parts are limited to 5 GiB"));
        }
        let store = Arc::clone(&self.store);
        let (id, bucket, key) = (
            input.upload_id.clone(),
            input.bucket.clone(),
            input.key.clone(),
        );
        let (dir, _) = blocking(move || multipart::load(&store, &id, &bucket, &key)).await?;
        let (hasher, mut expected) = body_checks!(input)?;
        let body = input
            .body
            .ok_or_else(|| s3_error!(IncompleteBody, "UploadPart without a body"))?;
        let staged = receive(&self.store, body, len, hasher).await?;
        expected.add_trailers(trailers.as_ref());
        let store = Arc::clone(&self.store);
        let (etag, sums) = blocking(move || {
            let mut staged = staged;
            let md5 = std::mem::take(&mut staged.md5).finalize();
            let computed = std::mem::take(&mut staged.checksums).finalize();
            let sums = expected.verify(&md5, computed)?;
            let etag = hex::encode(md5);
            multipart::install_part(&store, &dir, number, &mut staged, &etag)?;
            Ok((etag, sums))
        })
        .await?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(etag)),
            checksum_crc32: sums.get("crc32").cloned(),
            checksum_crc32c: sums.get("crc32c").cloned(),
            checksum_sha1: sums.get("sha1").cloned(),
            checksum_sha256: sums.get("sha256").cloned(),
            checksum_crc64nvme: sums.get("crc64nvme").cloned(),
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let store = Arc::clone(&self.store);
        let (id, bucket, key) = (
            input.upload_id.clone(),
            input.bucket.clone(),
            input.key.clone(),
        );
        let marker = input.part_number_marker.unwrap_or(0);
        let max = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
        let parts = blocking(move || {
            let (dir, _) = multipart::load(&store, &id, &bucket, &key)?;
            multipart::parts(&dir)
        })
        .await?;
        let rest: Vec<_> = parts.into_iter().filter(|p| p.number > marker).collect();
        let truncated = rest.len() > max;
        let page: Vec<Part> = rest
            .into_iter()
            .take(max)
            .map(|p| Part {
                part_number: Some(p.number),
                e_tag: Some(ETag::Strong(p.etag)),
                size: Some(p.size as i64),
                last_modified: Some(timestamp_ns(p.modified_ns)),
                ..Default::default()
            })
            .collect();
        let next = page.last().and_then(|p| p.part_number);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: if truncated { next } else { None },
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            parts: Some(page),
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let key = parse_key(&input.key)?;
        let listed: Vec<(i32, String)> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                (
                    p.part_number.unwrap_or(0),
                    p.e_tag.map(ETag::into_value).unwrap_or_default(),
                )
            })
            .collect();
        let (store, usage) = (Arc::clone(&self.store), Arc::clone(&self.usage));
        let (id, bucket) = (input.upload_id.clone(), input.bucket.clone());
        let meta = blocking(move || {
            let (dir, upload) = multipart::load(&store, &id, &bucket, key.as_str())?;
            let (staged, etag) = multipart::assemble(&store, &dir, &listed)?;
            let old = Contribution::of_path(&store.object_path(&bucket, &key));
            let reservation = usage.reserve(&bucket, staged.written, old)?;
            let mut meta = upload.template;
            meta.etag = etag;
            meta.uploaded_ns = crate::meta::now_ns();
            let posix = PosixAttrs::from_user_meta(&meta.user)?;
            let meta = Self::commit(&store, &usage, &bucket, &key, staged, meta, posix)?;
            drop(reservation);
            multipart::remove(&dir)?;
            Ok(meta)
        })
        .await?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(ETag::Strong(meta.etag)),
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        let store = Arc::clone(&self.store);
        blocking(move || multipart::abort(&store, &input.upload_id, &input.bucket, &input.key))
            .await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    #[tracing::instrument(skip_all, fields(bucket = %req.input.bucket))]
    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        self.store.require_bucket(&input.bucket)?;
        let store = Arc::clone(&self.store);
        let (bucket, prefix) = (
            input.bucket.clone(),
            input.prefix.clone().unwrap_or_default(),
        );
        let all = blocking(move || multipart::list(&store, &bucket, &prefix)).await?;
        let max = input.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
        let key_marker = input.key_marker.clone().unwrap_or_default();
        let rest: Vec<_> = all
            .into_iter()
            .filter(|(_, u)| key_marker.is_empty() || u.key > key_marker)
            .collect();
        let truncated = rest.len() > max;
        let uploads: Vec<MultipartUpload> = rest
            .into_iter()
            .take(max)
            .map(|(id, u)| MultipartUpload {
                key: Some(u.key),
                upload_id: Some(id),
                initiated: Some(timestamp_ns(u.initiated_ns)),
                ..Default::default()
            })
            .collect();
        let next_key = uploads.last().and_then(|u| u.key.clone());
        let next_id = uploads.last().and_then(|u| u.upload_id.clone());
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: if truncated { next_key } else { None },
            next_upload_id_marker: if truncated { next_id } else { None },
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}

fn check_copy_conditions(src: &Found, input: &CopyObjectInput) -> S3Result<()> {
    let etag = &src.meta.etag;
    let modified = (src.meta.uploaded_ns / 1_000_000_000) as i64;
    match &input.copy_source_if_match {
        Some(c) if !etag_matches(c, etag, false) => return Err(s3_error!(PreconditionFailed)),
        Some(_) => {}
        None => {
            if let Some(t) = &input.copy_source_if_unmodified_since {
                if modified > to_offset(t).unix_timestamp() {
                    return Err(s3_error!(PreconditionFailed));
                }
            }
        }
    }
    match &input.copy_source_if_none_match {
        Some(c) if etag_matches(c, etag, true) => return Err(s3_error!(PreconditionFailed)),
        Some(_) => {}
        None => {
            if let Some(t) = &input.copy_source_if_modified_since {
                if modified <= to_offset(t).unix_timestamp() {
                    return Err(s3_error!(PreconditionFailed));
                }
            }
        }
    }
    Ok(())
}

/// Deletes one key; a missing key is not an error (S3 semantics).
pub fn delete_one(store: &Store, usage: &Usage, bucket: &str, key: &ObjectKey) -> Result<()> {
    let bucket_dir = store.require_bucket(bucket)?;
    let Some(found) = store.lookup(bucket, key)? else {
        return Ok(());
    };
    if key.is_dir() {
        crate::xattr::remove(&found.path, crate::meta::XATTR_NAME)?;
        store.prune_empty_dirs(&bucket_dir, &found.path);
    } else {
        usage.apply(bucket, || {
            let removed = Contribution::of_path(&found.path);
            match std::fs::remove_file(&found.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok((Contribution::NONE, Contribution::NONE, ()))
                }
                Err(e) => return Err(e.into()),
            }
            Ok((removed, Contribution::NONE, ()))
        })?;
        if let Some(parent) = found.path.parent() {
            store.restore_dir_mtime(parent);
            match store.sync_dir(parent) {
                // A concurrent delete of the directory's last key pruned it: nothing to sync.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
            store.prune_empty_dirs(&bucket_dir, parent);
        }
    }
    Ok(())
}

/// Whether a bucket directory holds any object (a file or a `dir/` marker).
fn holds_objects(dir: &std::path::Path) -> Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            if matches!(ObjectMeta::load(&entry.path()), Ok(Some(m)) if m.dir_marker)
                || holds_objects(&entry.path())?
            {
                return Ok(true);
            }
        } else {
            return Ok(true);
        }
    }
    Ok(false)
}
