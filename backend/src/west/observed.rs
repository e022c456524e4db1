//! [`AnsweredWest`]: a [`WestStore`] wrapper that counts the calls west actually answered
//! (a success, or an error that came from west: permanent or owned-data). Gpeer health uses the
//! count as evidence: a work item that succeeded without asking west anything (nothing to do,
//! already remote…) must not declare a gpeer that is down healthy again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::{CheckFailure, Dialect, ListedPart, SetAttr, WestEntry, WestError, WestKey, WestStore};
use crate::entry::EntryMeta;

/// Counts west's answers; see the module docs.
pub struct AnsweredWest {
    inner: Arc<dyn WestStore>,
    answers: Arc<AtomicU64>,
}

impl AnsweredWest {
    pub fn wrap(inner: Arc<dyn WestStore>, answers: Arc<AtomicU64>) -> Arc<dyn WestStore> {
        Arc::new(Self { inner, answers })
    }

    fn seen<T>(&self, r: Result<T, WestError>) -> Result<T, WestError> {
        match &r {
            Err(e) if e.is_transient() => {}
            _ => {
                self.answers.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }
}

#[async_trait]
impl WestStore for AnsweredWest {
    fn dialect(&self) -> Dialect {
        self.inner.dialect()
    }

    async fn check(&self, bucket: Option<&str>) -> Result<(), CheckFailure> {
        self.inner.check(bucket).await
    }

    async fn bucket_exists(&self, bucket: &str) -> Result<bool, WestError> {
        self.seen(self.inner.bucket_exists(bucket).await)
    }

    async fn create_bucket(&self, bucket: &str) -> Result<(), WestError> {
        self.seen(self.inner.create_bucket(bucket).await)
    }

    async fn put_entry(
        &self,
        bucket: &str,
        key: &WestKey,
        meta: &EntryMeta,
        gpair_value: &str,
    ) -> Result<(), WestError> {
        self.seen(self.inner.put_entry(bucket, key, meta, gpair_value).await)
    }

    async fn delete_entry(
        &self,
        bucket: &str,
        key: &WestKey,
        is_dir: bool,
    ) -> Result<(), WestError> {
        self.seen(self.inner.delete_entry(bucket, key, is_dir).await)
    }

    async fn rename(
        &self,
        bucket: &str,
        from: &WestKey,
        to: &WestKey,
        is_dir: bool,
    ) -> Result<(), WestError> {
        self.seen(self.inner.rename(bucket, from, to, is_dir).await)
    }

    async fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<(String, u64)>, WestError> {
        self.seen(self.inner.list_keys(bucket, prefix).await)
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<WestEntry>, WestError> {
        self.seen(self.inner.list(bucket, prefix).await)
    }

    async fn head(
        &self,
        bucket: &str,
        key: &WestKey,
        is_dir: bool,
    ) -> Result<Option<WestEntry>, WestError> {
        self.seen(self.inner.head(bucket, key, is_dir).await)
    }

    async fn set_attr(
        &self,
        bucket: &str,
        key: &WestKey,
        attr: SetAttr,
        gpair_value: &str,
    ) -> Result<(), WestError> {
        self.seen(self.inner.set_attr(bucket, key, attr, gpair_value).await)
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
        self.seen(
            self.inner
                .put_file(bucket, key, body, meta, crc32c, gpair_value)
                .await,
        )
    }

    async fn start_upload(
        &self,
        bucket: &str,
        key: &WestKey,
        meta: &EntryMeta,
        crc32c: u32,
        gpair_value: &str,
    ) -> Result<String, WestError> {
        self.seen(
            self.inner
                .start_upload(bucket, key, meta, crc32c, gpair_value)
                .await,
        )
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &WestKey,
        upload_id: &str,
        number: i32,
        body: bytes::Bytes,
    ) -> Result<String, WestError> {
        self.seen(
            self.inner
                .upload_part(bucket, key, upload_id, number, body)
                .await,
        )
    }

    async fn finish_upload(
        &self,
        bucket: &str,
        key: &WestKey,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> Result<String, WestError> {
        self.seen(
            self.inner
                .finish_upload(bucket, key, upload_id, parts)
                .await,
        )
    }

    async fn list_parts(
        &self,
        bucket: &str,
        key: &WestKey,
        upload_id: &str,
    ) -> Result<Option<Vec<ListedPart>>, WestError> {
        self.seen(self.inner.list_parts(bucket, key, upload_id).await)
    }

    async fn abort_uploads(&self, bucket: &str, key: &WestKey) -> Result<usize, WestError> {
        self.seen(self.inner.abort_uploads(bucket, key).await)
    }

    async fn read_range(
        &self,
        bucket: &str,
        key: &WestKey,
        start: u64,
        len: u64,
    ) -> Result<bytes::Bytes, WestError> {
        self.seen(self.inner.read_range(bucket, key, start, len).await)
    }

    async fn presign_read(
        &self,
        bucket: &str,
        key: &WestKey,
        expires: std::time::Duration,
    ) -> Result<String, WestError> {
        // Signing is local: no answer from west, nothing counted.
        self.inner.presign_read(bucket, key, expires).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::west::fault::FaultyWest;
    use crate::west::memory::MemoryWest;
    use crate::west::ErrorKind;

    #[tokio::test]
    async fn counts_answers_not_transient_failures() {
        let faulty = Arc::new(FaultyWest::new(Arc::new(MemoryWest::new())));
        let answers = Arc::new(AtomicU64::new(0));
        let w = AnsweredWest::wrap(faulty.clone(), Arc::clone(&answers));
        assert!(!w.bucket_exists("b").await.unwrap());
        assert_eq!(answers.load(Ordering::Relaxed), 1);
        faulty.fail_next(1, ErrorKind::Transient);
        assert!(w.bucket_exists("b").await.is_err());
        assert_eq!(answers.load(Ordering::Relaxed), 1, "no answer");
        faulty.fail_next(1, ErrorKind::Permanent);
        assert!(w.bucket_exists("b").await.is_err());
        assert_eq!(answers.load(Ordering::Relaxed), 2, "west answered no");
    }
}
