//! Reads of stubs from west (DESIGN 5.4): ranged GETs of the object through a short-lived
//! grant (a presigned URL from the backend), in fixed-size chunks that are cached, shared
//! and fetched ahead.
//!
//! - A chunk is fetched once however many readers want it: the fetch is a spawned task
//!   whose result every waiter shares, and it stays cached (LRU, bounded) for the next one.
//! - Read-ahead grows on sequential access (mountpoint-s3 style): each read that continues
//!   where the last one ended doubles the window, up to a maximum; a jump resets it.
//! - A fetch that cannot reach west retries with backoff for at most the configured wait,
//!   then the read fails with EIO — never zeros. A refused grant (the backend answers that
//!   the file is no longer a stub) is ESTALE, which the core answers by reading east.
//! - Every answer is checked: status 206, the exact length asked, and a `Content-Range`
//!   total equal to the stub's size (an object replaced under the stub is refused).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tonic::Code;

use super::link::Link;
use super::{Errno, StubData};
use crate::tier::stub::StubRecord;

/// Settings of west reads.
#[derive(Debug, Clone, Copy)]
pub struct ReadConfig {
    /// Size of a cached piece of an object (and of the smallest GET).
    pub chunk: u64,
    /// Largest GET (read-ahead fetches whole aligned groups of this size).
    pub max_request: u64,
    /// Largest read-ahead window.
    pub max_window: u64,
    /// Bytes of chunks kept.
    pub cache_bytes: u64,
    /// Ranged GETs in flight at once.
    pub parallel: usize,
    /// How long a read waits while west is unreachable before EIO.
    pub west_wait: Duration,
}

impl Default for ReadConfig {
    fn default() -> Self {
        Self {
            chunk: 256 << 10,
            max_request: 8 << 20,
            max_window: 64 << 20,
            cache_bytes: 512 << 20,
            parallel: 16,
            west_wait: Duration::from_secs(30),
        }
    }
}

/// Why a fetch failed; shared by every waiter of the chunk.
#[derive(Debug, Clone)]
enum FetchError {
    /// West (or the backend) did not answer, or answered "try again": retried for the wait.
    Transient(String),
    /// The grant's URL expired (403): ask for a new one.
    Expired(String),
    /// West has no such data where the grant pointed: ask for a verified grant.
    Missing(String),
    /// A permanent refusal: EIO.
    Failed(String),
    /// The backend says the file is not a stub any more.
    NotStub,
}

type Fetch = Shared<BoxFuture<'static, Result<Bytes, FetchError>>>;

/// One offloaded object as readers see it.
struct Object {
    id: u64,
    /// Absolute east path, for grants (the newest seen: the file may be renamed).
    path: Mutex<PathBuf>,
    size: u64,
    /// The stub record's identity of the data: grants are for this data only.
    etag: String,
    offloaded_at_ms: i64,
    grant: tokio::sync::Mutex<Option<(String, Instant)>>,
    /// The next grant must be verified (west did not have the data an unverified one named).
    verify: std::sync::atomic::AtomicBool,
    seq: Mutex<Seq>,
}

#[derive(Default)]
struct Seq {
    next: u64,
    window: u64,
}

struct Cached {
    fetch: Fetch,
    used: u64,
    /// The first chunk of the GET it came with: its bytes share that GET's buffer, so the
    /// chunks of one GET are evicted together (the buffer is freed only then).
    run: u64,
}

#[derive(Default)]
struct Cache {
    chunks: HashMap<(u64, u64), Cached>,
    tick: u64,
}

pub struct WestReader {
    link: Arc<Link>,
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
    config: ReadConfig,
    slots: Arc<Semaphore>,
    objects: Mutex<HashMap<String, Arc<Object>>>,
    cache: Mutex<Cache>,
    next_id: AtomicU64,
    gets: AtomicU64,
    bytes: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WestReader {
    pub fn new(link: Arc<Link>, config: ReadConfig) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.enforce_http(false);
        let connector = https_connector(connector);
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.parallel * 2)
            .build(connector);
        Arc::new(Self {
            link,
            http,
            slots: Arc::new(Semaphore::new(config.parallel.max(1))),
            config,
            objects: Mutex::new(HashMap::new()),
            cache: Mutex::new(Cache::default()),
            next_id: AtomicU64::new(1),
            gets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    /// Ranged GETs answered so far, and their bytes.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.gets.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// A stub was opened for reading: ask for a grant now (it counts the read for the
    /// gpair's read policy, and the first read then waits for data only).
    pub fn opened(self: &Arc<Self>, rel_path: &Path, stub: &StubRecord) {
        let obj = self.object(rel_path, stub);
        let me = Arc::clone(self);
        self.link.runtime().spawn(async move {
            if let Err(e) = me.refresh_grant(&obj, true).await {
                tracing::debug!("grant at open: {e:?}");
            }
        });
    }

    fn object(&self, rel_path: &Path, stub: &StubRecord) -> Arc<Object> {
        // The identity of the data: where it was uploaded, and when.
        let id = format!(
            "{}\0{}\0{}\0{}\0{}",
            stub.bucket, stub.key, stub.etag, stub.size, stub.offloaded_at_ms
        );
        let abs = self.link.abs(rel_path);
        let mut objects = lock(&self.objects);
        if objects.len() > 10_000 {
            objects.retain(|_, o| Arc::strong_count(o) > 1);
        }
        let obj = objects
            .entry(id)
            .or_insert_with(|| {
                Arc::new(Object {
                    id: self.next_id.fetch_add(1, Ordering::Relaxed),
                    path: Mutex::new(abs.clone()),
                    size: stub.size,
                    etag: stub.etag.clone(),
                    offloaded_at_ms: stub.offloaded_at_ms,
                    grant: tokio::sync::Mutex::new(None),
                    verify: std::sync::atomic::AtomicBool::new(false),
                    seq: Mutex::new(Seq::default()),
                })
            })
            .clone();
        *lock(&obj.path) = abs;
        obj
    }

    /// The chunks `[offset, offset+len)` needs, and those to fetch ahead of it.
    fn plan(
        &self,
        obj: &Object,
        offset: u64,
        len: u64,
    ) -> (std::ops::Range<u64>, std::ops::Range<u64>) {
        let c = self.config.chunk;
        let end = (offset + len).min(obj.size);
        let need = offset / c..end.div_ceil(c);
        let mut s = lock(&obj.seq);
        // Sequential: this read starts where the last ended (give or take a chunk: the
        // kernel's read-ahead sends reads in parallel). A first read is not: it gets its
        // bytes alone, as fast as they come (time to first byte), and the window opens at
        // the read that continues it.
        let sequential = s.next > 0 && offset + c >= s.next && offset <= s.next + c;
        s.window = if sequential {
            (s.window.max(c / 2) * 2).min(self.config.max_window)
        } else {
            0
        };
        s.next = if sequential { s.next.max(end) } else { end };
        let ahead_end = (end + s.window).min(obj.size).div_ceil(c);
        (need.clone(), need.end..ahead_end.max(need.end))
    }

    /// The fetches of `need` (started where missing, exactly those chunks: the first bytes
    /// come quickly), after starting the missing chunks of every request-sized group
    /// `ahead` touches (whole groups: read-ahead goes in large GETs).
    fn fetches(
        self: &Arc<Self>,
        obj: &Arc<Object>,
        need: std::ops::Range<u64>,
        ahead: std::ops::Range<u64>,
    ) -> Vec<(u64, Fetch)> {
        let c = self.config.chunk;
        let per_request = (self.config.max_request / c).max(1);
        let last = obj.size.div_ceil(c);
        let mut cache = lock(&self.cache);
        cache.tick += 1;
        let tick = cache.tick;
        self.start_missing(&mut cache, obj, need.clone(), per_request, tick, true);
        if !ahead.is_empty() {
            let groups = (ahead.start / per_request * per_request)
                ..(ahead.end.div_ceil(per_request) * per_request).min(last);
            self.start_missing(&mut cache, obj, groups, per_request, tick, false);
        }
        let out = need
            .filter_map(|i| cache.chunks.get(&(obj.id, i)).map(|e| (i, e.fetch.clone())))
            .collect();
        let max = (self.config.cache_bytes / c).max(64) as usize;
        if cache.chunks.len() > max {
            // Evict the least recently used GETs (all their chunks) down to 90%, never what
            // this read uses.
            let mut runs: HashMap<(u64, u64), u64> = HashMap::new();
            for ((obj_id, _), e) in &cache.chunks {
                let used = runs.entry((*obj_id, e.run)).or_insert(0);
                *used = (*used).max(e.used);
            }
            let mut by_age: Vec<((u64, u64), u64)> = runs.into_iter().collect();
            by_age.sort_by_key(|(_, used)| *used);
            let target = max * 9 / 10;
            for ((obj_id, run), used) in by_age {
                if cache.chunks.len() <= target || used == tick {
                    break;
                }
                cache
                    .chunks
                    .retain(|(o, _), e| !(*o == obj_id && e.run == run));
            }
        }
        out
    }

    /// Starts one ranged GET per run of missing (or failed) chunks in `range`, at most
    /// `per_request` chunks each; every chunk of a run shares that GET.
    fn start_missing(
        self: &Arc<Self>,
        cache: &mut Cache,
        obj: &Arc<Object>,
        range: std::ops::Range<u64>,
        per_request: u64,
        tick: u64,
        demand: bool,
    ) {
        let mut run: Option<std::ops::Range<u64>> = None;
        for i in range.clone() {
            let present = match cache.chunks.get_mut(&(obj.id, i)) {
                // A failed fetch is not kept: the next read tries again.
                Some(e) if !matches!(e.fetch.peek(), Some(Err(_))) => {
                    e.used = tick;
                    true
                }
                _ => false,
            };
            match (&mut run, present) {
                (Some(r), false) if r.end - r.start < per_request => r.end = i + 1,
                (Some(_), false) => {
                    if let Some(r) = run.replace(i..i + 1) {
                        self.start_run(cache, obj, r, tick, demand);
                    }
                }
                (None, false) => run = Some(i..i + 1),
                (_, true) => {
                    if let Some(r) = run.take() {
                        self.start_run(cache, obj, r, tick, demand);
                    }
                }
            }
        }
        if let Some(r) = run {
            self.start_run(cache, obj, r, tick, demand);
        }
    }

    fn start_run(
        self: &Arc<Self>,
        cache: &mut Cache,
        obj: &Arc<Object>,
        run: std::ops::Range<u64>,
        tick: u64,
        demand: bool,
    ) {
        let c = self.config.chunk;
        let start = run.start * c;
        let end = (run.end * c).min(obj.size);
        let me = Arc::clone(self);
        let o = Arc::clone(obj);
        let task = self
            .link
            .runtime()
            .spawn(async move { me.fetch_range(&o, start, end - start, demand).await });
        let whole: Fetch = async move {
            task.await
                .unwrap_or_else(|e| Err(FetchError::Failed(format!("fetch task: {e}"))))
        }
        .boxed()
        .shared();
        let first = run.start;
        for i in run {
            let from = (i * c - start) as usize;
            let to = ((i + 1) * c).min(end) as usize - start as usize;
            let w = whole.clone();
            let fetch: Fetch = async move { w.await.map(|b| b.slice(from..to)) }
                .boxed()
                .shared();
            cache.chunks.insert(
                (obj.id, i),
                Cached {
                    fetch,
                    used: tick,
                    run: first,
                },
            );
        }
    }

    /// A fresh demand fetch of one chunk, replacing a failed one.
    fn refetch(self: &Arc<Self>, obj: &Arc<Object>, idx: u64) -> Fetch {
        let mut cache = lock(&self.cache);
        cache.chunks.remove(&(obj.id, idx));
        cache.tick += 1;
        let tick = cache.tick;
        self.start_run(&mut cache, obj, idx..idx + 1, tick, true);
        cache
            .chunks
            .get(&(obj.id, idx))
            .map(|e| e.fetch.clone())
            .unwrap_or_else(|| {
                futures::future::ready(Err(FetchError::Failed("no fetch".into())))
                    .boxed()
                    .shared()
            })
    }

    async fn refresh_grant(&self, obj: &Object, new_read: bool) -> Result<String, FetchError> {
        let mut g = obj.grant.lock().await;
        if let Some((url, until)) = g.as_ref() {
            if !new_read && Instant::now() < *until {
                return Ok(url.clone());
            }
        }
        let path = lock(&obj.path).clone();
        let rel = path
            .strip_prefix(self.link.abs(Path::new("")))
            .unwrap_or(&path)
            .to_path_buf();
        let verify = obj.verify.load(Ordering::Relaxed);
        match self
            .link
            .grant(&rel, new_read, verify, (&obj.etag, obj.offloaded_at_ms))
            .await
        {
            Ok(r) => {
                if r.size != obj.size {
                    return Err(FetchError::Failed(format!(
                        "the backend's grant for {} is for {} bytes, the stub has {}",
                        path.display(),
                        r.size,
                        obj.size
                    )));
                }
                // Renew well before the URL expires.
                let ttl = Duration::from_millis(r.expires_in_ms / 2);
                *g = Some((r.url.clone(), Instant::now() + ttl));
                Ok(r.url)
            }
            Err(s)
                if s.code() == Code::FailedPrecondition
                    && s.message().contains("not offloaded") =>
            {
                Err(FetchError::NotStub)
            }
            Err(s) => Err(match s.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Internal => {
                    FetchError::Transient(format!("grant: {}", s.message()))
                }
                _ => FetchError::Failed(format!("grant refused: {}", s.message())),
            }),
        }
    }

    async fn invalidate_grant(&self, obj: &Object) {
        *obj.grant.lock().await = None;
    }

    /// `len` bytes from `start`, retried while west is unreachable, for at most the
    /// configured wait. Read-ahead (`demand` false) waits for one of the limited slots;
    /// what a reader waits for goes at once.
    async fn fetch_range(
        &self,
        obj: &Object,
        start: u64,
        len: u64,
        demand: bool,
    ) -> Result<Bytes, FetchError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let _slot = if demand {
            None
        } else {
            Some(
                self.slots
                    .acquire()
                    .await
                    .map_err(|_| FetchError::Failed("reader stopped".into()))?,
            )
        };
        let began = Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = match self.refresh_grant(obj, false).await {
                Ok(url) => self.get(&url, start, len, obj.size).await,
                Err(e) => Err(e),
            };
            let why = match attempt {
                Ok(b) => return Ok(b),
                Err(FetchError::Transient(m)) => m,
                Err(FetchError::Expired(m)) => {
                    self.invalidate_grant(obj).await;
                    m
                }
                Err(FetchError::Missing(_)) if !obj.verify.swap(true, Ordering::Relaxed) => {
                    // The unverified grant's key did not hold the data: look it up.
                    self.invalidate_grant(obj).await;
                    continue;
                }
                Err(FetchError::Missing(m) | FetchError::Failed(m)) => {
                    tracing::warn!(path = %lock(&obj.path).display(), start, len, "west read refused: {m}");
                    return Err(FetchError::Failed(m));
                }
                Err(e) => return Err(e),
            };
            if began.elapsed() >= self.config.west_wait {
                tracing::warn!(
                    path = %lock(&obj.path).display(),
                    start,
                    len,
                    "west read failed for {:?}: {why}",
                    self.config.west_wait
                );
                return Err(FetchError::Failed(why));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// One ranged GET through the grant's URL.
    async fn get(&self, url: &str, start: u64, len: u64, size: u64) -> Result<Bytes, FetchError> {
        let transient = FetchError::Transient;
        let req = http::Request::get(url)
            .header(
                http::header::RANGE,
                format!("bytes={start}-{}", start + len - 1),
            )
            .body(Empty::new())
            .map_err(|e| FetchError::Failed(format!("bad grant URL: {e}")))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), self.http.request(req))
            .await
            .map_err(|_| transient("GET timed out".into()))?
            .map_err(|e| transient(format!("GET: {e}")))?;
        let status = resp.status();
        if status == http::StatusCode::FORBIDDEN {
            return Err(FetchError::Expired(format!("GET answered {status}")));
        }
        if status == http::StatusCode::NOT_FOUND
            || status == http::StatusCode::RANGE_NOT_SATISFIABLE
        {
            return Err(FetchError::Missing(format!(
                "GET bytes {start}+{len} answered {status}"
            )));
        }
        if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
            return Err(transient(format!("GET answered {status}")));
        }
        if status != http::StatusCode::PARTIAL_CONTENT {
            return Err(FetchError::Failed(format!(
                "GET bytes {start}+{len} answered {status}"
            )));
        }
        let range = resp
            .headers()
            .get(http::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(content_range);
        let want = (start, start + len - 1, size);
        if range != Some(want) {
            return Err(FetchError::Missing(format!(
                "west answered the range {range:?} (first, last, total), not {want:?}"
            )));
        }
        let body = tokio::time::timeout(Duration::from_secs(60), resp.into_body().collect())
            .await
            .map_err(|_| transient("GET body timed out".into()))?
            .map_err(|e| transient(format!("GET body: {e}")))?
            .to_bytes();
        if body.len() as u64 != len {
            return Err(transient(format!(
                "GET answered {} bytes of {len}",
                body.len()
            )));
        }
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len, Ordering::Relaxed);
        Ok(body)
    }
}

impl StubData for Arc<WestReader> {
    fn read(
        &self,
        rel_path: &Path,
        stub: &StubRecord,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, Errno> {
        let obj = self.object(rel_path, stub);
        let (need, ahead) = self.plan(&obj, offset, len as u64);
        let fetches = self.fetches(&obj, need, ahead);
        let c = self.config.chunk;
        let mut out = Vec::with_capacity(len);
        // One deadline for the whole read, however many chunks it spans.
        let deadline =
            tokio::time::Instant::now() + self.config.west_wait + Duration::from_secs(30);
        let wait = |f: Fetch| {
            self.link
                .runtime()
                .block_on(async { tokio::time::timeout_at(deadline, f).await })
        };
        for (idx, f) in fetches {
            let got = match wait(f) {
                // A failure seen first here may be a read-ahead's from a while ago (an outage
                // since over): this read tries once itself.
                Ok(Err(FetchError::NotStub)) => return Err(Errno::ESTALE),
                Ok(Err(_)) => wait(self.refetch(&obj, idx)),
                r => r,
            };
            let data = match got {
                Ok(Ok(b)) => b,
                Ok(Err(FetchError::NotStub)) => return Err(Errno::ESTALE),
                Ok(Err(_)) | Err(_) => return Err(Errno::EIO),
            };
            let from = (offset.max(idx * c) - idx * c) as usize;
            let want = len - out.len();
            let to = (from + want).min(data.len());
            out.extend_from_slice(data.get(from..to).unwrap_or_default());
        }
        Ok(out)
    }
}

/// http:// and https:// gpeers alike (https with the system's trusted roots).
fn https_connector(http: HttpConnector) -> hyper_rustls::HttpsConnector<HttpConnector> {
    // ring, named: two crypto providers are linked in (the AWS SDK brings aws-lc).
    let ring = || Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(ring()) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(
                    "no trusted root certificates ({e}): https west endpoints cannot be read"
                );
                let config = rustls::ClientConfig::builder_with_provider(ring())
                    .with_safe_default_protocol_versions()
                    .expect("ring supports rustls's default protocol versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
    builder.https_or_http().enable_http1().wrap_connector(http)
}

/// `bytes FIRST-LAST/TOTAL` of a `Content-Range` header.
fn content_range(v: &str) -> Option<(u64, u64, u64)> {
    let (range, total) = v.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?, total.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::content_range;

    #[test]
    fn content_range_parses_only_what_it_must() {
        assert_eq!(content_range("bytes 0-99/1000"), Some((0, 99, 1000)));
        assert_eq!(content_range("bytes 0-99/*"), None);
        assert_eq!(content_range("bytes */1000"), None);
        assert_eq!(content_range("0-99/1000"), None);
    }
}
