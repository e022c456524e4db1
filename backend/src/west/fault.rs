//! [`FaultyWest`]: a [`WestStore`] wrapper that injects failures and latency, for tests of
//! the code that must survive a misbehaving west (the outbox, health tracking, I5).
//!
//! Faults, checked in this order on every call:
//! 1. latency ([`FaultyWest::set_latency`]) is slept first;
//! 2. [`FaultyWest::fail_next`]: the next N calls fail without reaching the store;
//! 3. [`FaultyWest::fail_key`]: calls on that key (put/delete/head/set_attr, and rename
//!    from or to it) fail without reaching the store, until [`FaultyWest::clear_key`];
//! 4. [`FaultyWest::lose_next_replies`]: the next N calls *are applied* by the store, then
//!    fail with a transient error, as when the answer is lost on the way back. Idempotent
//!    callers must cope.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    CheckFailure, CheckStage, Dialect, ErrorKind, SetAttr, WestEntry, WestError, WestKey, WestStore,
};
use crate::entry::EntryMeta;

#[derive(Default)]
struct Faults {
    fail_next: Vec<ErrorKind>,
    lose_next: usize,
    keys: HashMap<String, ErrorKind>,
    latency: Duration,
    check: Option<CheckStage>,
}

/// Wraps a store and misbehaves on demand.
pub struct FaultyWest<S: ?Sized> {
    inner: Arc<S>,
    faults: Mutex<Faults>,
    calls: AtomicU64,
    injected: AtomicU64,
}

impl<S: WestStore + ?Sized> FaultyWest<S> {
    pub fn new(inner: Arc<S>) -> Self {
        Self {
            inner,
            faults: Mutex::new(Faults::default()),
            calls: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        }
    }

    /// The wrapped store (to inspect it, or to act on it without faults).
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next `n` calls fail with `kind` (added after any already queued).
    pub fn fail_next(&self, n: usize, kind: ErrorKind) {
        let mut f = self.faults();
        f.fail_next.extend(std::iter::repeat_n(kind, n));
    }

    /// Every call on `key` (a [`WestKey::key`]) fails with `kind` until cleared.
    pub fn fail_key(&self, key: &str, kind: ErrorKind) {
        self.faults().keys.insert(key.to_owned(), kind);
    }

    pub fn clear_key(&self, key: &str) {
        self.faults().keys.remove(key);
    }

    /// The next `n` calls are applied, then answer with a transient error.
    pub fn lose_next_replies(&self, n: usize) {
        self.faults().lose_next += n;
    }

    /// Sleeps this long before every call.
    pub fn set_latency(&self, latency: Duration) {
        self.faults().latency = latency;
    }

    /// `check()` fails at this stage (None: passes through).
    pub fn fail_check(&self, stage: Option<CheckStage>) {
        self.faults().check = stage;
    }

    /// Removes every fault and the latency.
    pub fn clear(&self) {
        *self.faults() = Faults::default();
    }

    /// Calls received so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Calls that failed because of an injected fault.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn error(&self, kind: ErrorKind, op: &str, what: &str) -> WestError {
        self.injected.fetch_add(1, Ordering::Relaxed);
        let message = format!("injected fault: {op} {what}");
        match kind {
            ErrorKind::Transient => WestError::transient(message),
            ErrorKind::Permanent => WestError::permanent(message),
            ErrorKind::OwnedData => WestError::owned_data(message),
        }
    }

    /// Applies latency and the faults that stop a call before the store sees it. Returns
    /// whether the reply of this call must be lost.
    async fn before(&self, op: &str, keys: &[&str]) -> Result<bool, WestError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let latency = self.faults().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut f = self.faults();
        if !f.fail_next.is_empty() {
            let kind = f.fail_next.remove(0);
            drop(f);
            return Err(self.error(kind, op, &keys.join(" -> ")));
        }
        if let Some((k, kind)) = keys
            .iter()
            .find_map(|k| f.keys.get(*k).map(|kind| (*k, *kind)))
        {
            drop(f);
            return Err(self.error(kind, op, k));
        }
        if f.lose_next > 0 {
            f.lose_next -= 1;
            return Ok(true);
        }
        Ok(false)
    }

    fn after<T>(&self, lose: bool, op: &str, r: Result<T, WestError>) -> Result<T, WestError> {
        if lose && r.is_ok() {
            return Err(self.error(ErrorKind::Transient, op, "(applied, reply lost)"));
        }
        r
    }
}

#[async_trait]
impl<S: WestStore + ?Sized> WestStore for FaultyWest<S> {
    fn dialect(&self) -> Dialect {
        self.inner.dialect()
    }

    async fn check(&self, bucket: Option<&str>) -> Result<(), CheckFailure> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let stage = self.faults().check;
        if let Some(stage) = stage {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(CheckFailure {
                stage,
                message: "injected fault: check".into(),
            });
        }
        self.inner.check(bucket).await
    }

    async fn bucket_exists(&self, bucket: &str) -> Result<bool, WestError> {
        let lose = self.before("bucket_exists", &[]).await?;
        let r = self.inner.bucket_exists(bucket).await;
        self.after(lose, "bucket_exists", r)
    }

    async fn create_bucket(&self, bucket: &str) -> Result<(), WestError> {
        let lose = self.before("create_bucket", &[]).await?;
        let r = self.inner.create_bucket(bucket).await;
        self.after(lose, "create_bucket", r)
    }

    async fn put_entry(
        &self,
        bucket: &str,
        key: &WestKey,
        meta: &EntryMeta,
        gpair_value: &str,
    ) -> Result<(), WestError> {
        let lose = self.before("put_entry", &[&key.key]).await?;
        let r = self.inner.put_entry(bucket, key, meta, gpair_value).await;
        self.after(lose, "put_entry", r)
    }

    async fn delete_entry(
        &self,
        bucket: &str,
        key: &WestKey,
        is_dir: bool,
    ) -> Result<(), WestError> {
        let lose = self.before("delete_entry", &[&key.key]).await?;
        let r = self.inner.delete_entry(bucket, key, is_dir).await;
        self.after(lose, "delete_entry", r)
    }

    async fn rename(
        &self,
        bucket: &str,
        from: &WestKey,
        to: &WestKey,
        is_dir: bool,
    ) -> Result<(), WestError> {
        let lose = self.before("rename", &[&from.key, &to.key]).await?;
        let r = self.inner.rename(bucket, from, to, is_dir).await;
        self.after(lose, "rename", r)
    }

    async fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<(String, u64)>, WestError> {
        let lose = self.before("list_keys", &[]).await?;
        let r = self.inner.list_keys(bucket, prefix).await;
        self.after(lose, "list_keys", r)
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<WestEntry>, WestError> {
        let lose = self.before("list", &[]).await?;
        let r = self.inner.list(bucket, prefix).await;
        self.after(lose, "list", r)
    }

    async fn head(
        &self,
        bucket: &str,
        key: &WestKey,
        is_dir: bool,
    ) -> Result<Option<WestEntry>, WestError> {
        let lose = self.before("head", &[&key.key]).await?;
        let r = self.inner.head(bucket, key, is_dir).await;
        self.after(lose, "head", r)
    }

    async fn set_attr(
        &self,
        bucket: &str,
        key: &WestKey,
        attr: SetAttr,
        gpair_value: &str,
    ) -> Result<(), WestError> {
        let lose = self.before("set_attr", &[&key.key]).await?;
        let r = self.inner.set_attr(bucket, key, attr, gpair_value).await;
        self.after(lose, "set_attr", r)
    }

    async fn put_file(
        &self,
        bucket: &str,
        key: &WestKey,
        body: bytes::Bytes,
        meta: &EntryMeta,
        crc32c: u32,
        gpair_value: &str,
    ) -> Result<String, WestError> {
        let lose = self.before("put_file", &[&key.key]).await?;
        let r = self
            .inner
            .put_file(bucket, key, body, meta, crc32c, gpair_value)
            .await;
        self.after(lose, "put_file", r)
    }

    async fn start_upload(
        &self,
        bucket: &str,
        key: &WestKey,
        meta: &EntryMeta,
        crc32c: u32,
        gpair_value: &str,
    ) -> Result<String, WestError> {
        let lose = self.before("start_upload", &[&key.key]).await?;
        let r = self
            .inner
            .start_upload(bucket, key, meta, crc32c, gpair_value)
            .await;
        self.after(lose, "start_upload", r)
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &WestKey,
        upload_id: &str,
        number: i32,
        body: bytes::Bytes,
    ) -> Result<String, WestError> {
        let lose = self.before("upload_part", &[&key.key]).await?;
        let r = self
            .inner
            .upload_part(bucket, key, upload_id, number, body)
            .await;
        self.after(lose, "upload_part", r)
    }

    async fn finish_upload(
        &self,
        bucket: &str,
        key: &WestKey,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> Result<String, WestError> {
        let lose = self.before("finish_upload", &[&key.key]).await?;
        let r = self
            .inner
            .finish_upload(bucket, key, upload_id, parts)
            .await;
        self.after(lose, "finish_upload", r)
    }

    async fn list_parts(
        &self,
        bucket: &str,
        key: &WestKey,
        upload_id: &str,
    ) -> Result<Option<Vec<super::ListedPart>>, WestError> {
        let lose = self.before("list_parts", &[&key.key]).await?;
        let r = self.inner.list_parts(bucket, key, upload_id).await;
        self.after(lose, "list_parts", r)
    }

    async fn abort_uploads(&self, bucket: &str, key: &WestKey) -> Result<usize, WestError> {
        let lose = self.before("abort_uploads", &[&key.key]).await?;
        let r = self.inner.abort_uploads(bucket, key).await;
        self.after(lose, "abort_uploads", r)
    }

    async fn read_range(
        &self,
        bucket: &str,
        key: &WestKey,
        start: u64,
        len: u64,
    ) -> Result<bytes::Bytes, WestError> {
        let lose = self.before("read_range", &[&key.key]).await?;
        let r = self.inner.read_range(bucket, key, start, len).await;
        self.after(lose, "read_range", r)
    }

    async fn presign_read(
        &self,
        bucket: &str,
        key: &WestKey,
        expires: std::time::Duration,
    ) -> Result<String, WestError> {
        self.inner.presign_read(bucket, key, expires).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::entry::EntryKind;
    use crate::west::keys::west_key;
    use crate::west::memory::MemoryWest;

    fn file(size: u64) -> EntryMeta {
        EntryMeta {
            kind: EntryKind::File,
            size,
            mode: libc::S_IFREG | 0o644,
            uid: 1,
            gid: 1,
            mtime_ns: 1_600_000_000_000_000_000,
            ctime_ns: 1_600_000_000_000_000_000,
            ino: 7,
            nlink: 1,
            rdev: 0,
            symlink_target: None,
        }
    }

    async fn setup() -> (Arc<MemoryWest>, FaultyWest<MemoryWest>) {
        let mem = Arc::new(MemoryWest::new());
        mem.create_bucket("b").await.unwrap();
        let f = FaultyWest::new(Arc::clone(&mem));
        (mem, f)
    }

    #[tokio::test]
    async fn fail_next_fails_without_reaching_the_store() {
        let (mem, f) = setup().await;
        let k = west_key("p", b"a");
        f.fail_next(1, ErrorKind::Transient);
        f.fail_next(1, ErrorKind::Permanent);
        let e = f.put_entry("b", &k, &file(1), "v").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Transient);
        let e = f.put_entry("b", &k, &file(1), "v").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert!(mem.keys("b").is_empty());
        f.put_entry("b", &k, &file(1), "v").await.unwrap();
        assert_eq!(mem.keys("b"), vec!["p/a".to_string()]);
        assert_eq!((f.calls(), f.injected()), (3, 2));
    }

    #[tokio::test]
    async fn fail_key_hits_only_that_key_until_cleared() {
        let (_mem, f) = setup().await;
        let (a, b) = (west_key("p", b"a"), west_key("p", b"b"));
        f.fail_key(&a.key, ErrorKind::Permanent);
        assert!(f
            .put_entry("b", &a, &file(1), "v")
            .await
            .unwrap_err()
            .is_permanent());
        f.put_entry("b", &b, &file(1), "v").await.unwrap();
        // A rename to the key fails too.
        assert!(f.rename("b", &b, &a, false).await.is_err());
        f.clear_key(&a.key);
        f.rename("b", &b, &a, false).await.unwrap();
        assert!(f.head("b", &a, false).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_lost_reply_is_applied_then_reported_transient() {
        let (mem, f) = setup().await;
        let k = west_key("p", b"a");
        f.lose_next_replies(1);
        let e = f.put_entry("b", &k, &file(1), "v").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Transient);
        assert_eq!(mem.keys("b"), vec!["p/a".to_string()]);
        // The retry succeeds: put_entry is idempotent.
        f.put_entry("b", &k, &file(1), "v").await.unwrap();
    }

    #[tokio::test]
    async fn latency_and_check_faults() {
        let (_mem, f) = setup().await;
        f.set_latency(Duration::from_millis(30));
        let start = std::time::Instant::now();
        f.bucket_exists("b").await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(30));
        f.fail_check(Some(CheckStage::Connect));
        assert_eq!(f.check(None).await.unwrap_err().stage, CheckStage::Connect);
        f.clear();
        f.check(Some("b")).await.unwrap();
    }

    #[tokio::test]
    async fn wraps_a_trait_object() {
        let inner: Arc<dyn WestStore> = Arc::new(MemoryWest::new());
        let f = FaultyWest::new(inner);
        f.create_bucket("b").await.unwrap();
        assert_eq!(f.dialect(), Dialect::Gateway);
        assert!(f.inner().bucket_exists("b").await.unwrap());
    }
}
