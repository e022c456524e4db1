//! Rate limits of background work per gpair (`policy set --max-files-per-sec N
//! --max-bytes-per-sec SIZE`): each file a background job starts takes one file and its size
//! in bytes from two token buckets refilled at the limits, holding at most one second's worth.
//! A file larger than a second's worth may start when the bucket is full and leaves it in
//! debt, so the next one waits until the debt is paid: over any long stretch the rate is the
//! limit, and no file is ever refused for its size.

use std::time::Duration;

use tokio::time::Instant;

/// The limits of one gpair; `None` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub files_per_sec: Option<u64>,
    pub bytes_per_sec: Option<u64>,
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        self.files_per_sec.is_none() && self.bytes_per_sec.is_none()
    }

    /// "10 files/s, 50.0 MiB/s", for waiting reasons.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(f) = self.files_per_sec {
            parts.push(format!("{f} files/s"));
        }
        if let Some(b) = self.bytes_per_sec {
            parts.push(format!("{:.1} MiB/s", b as f64 / (1u64 << 20) as f64));
        }
        parts.join(", ")
    }
}

#[derive(Debug)]
struct Bucket {
    /// Tokens per second.
    rate: f64,
    /// Can go negative (debt).
    tokens: f64,
}

impl Bucket {
    fn new(rate: u64) -> Self {
        Self {
            rate: rate as f64,
            tokens: rate as f64,
        }
    }

    fn refill(&mut self, secs: f64) {
        self.tokens = (self.tokens + secs * self.rate).min(self.rate);
    }

    /// How long until the bucket is out of debt and holds at least `need` tokens (capped at
    /// one second's worth).
    fn wait_for(&self, need: f64) -> Duration {
        let need = need.min(self.rate);
        if self.tokens >= need {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((need - self.tokens) / self.rate)
        }
    }
}

/// The two buckets of one gpair.
#[derive(Debug)]
pub struct Throttle {
    limits: Limits,
    files: Option<Bucket>,
    bytes: Option<Bucket>,
    at: Instant,
}

impl Throttle {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            files: limits.files_per_sec.map(Bucket::new),
            bytes: limits.bytes_per_sec.map(Bucket::new),
            at: Instant::now(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes one file of `size` bytes if the buckets allow it now; otherwise how long to wait
    /// before asking again.
    pub fn try_take(&mut self, size: u64) -> Result<(), Duration> {
        let now = Instant::now();
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        for b in [&mut self.files, &mut self.bytes].into_iter().flatten() {
            b.refill(secs);
        }
        let wait = [
            self.files.as_ref().map(|b| b.wait_for(1.0)),
            self.bytes.as_ref().map(|b| b.wait_for(size as f64)),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(Duration::ZERO);
        if !wait.is_zero() {
            return Err(wait);
        }
        if let Some(b) = &mut self.files {
            b.tokens -= 1.0;
        }
        if let Some(b) = &mut self.bytes {
            b.tokens -= size as f64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes `sizes` one after the other, sleeping as told; the virtual time it took.
    async fn take_all(limits: Limits, sizes: &[u64]) -> Duration {
        let start = Instant::now();
        let mut t = Throttle::new(limits);
        for &size in sizes {
            while let Err(wait) = t.try_take(size) {
                tokio::time::sleep(wait).await;
            }
        }
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn files_per_second() {
        // 10 files/s: the first second's worth at once, then one every 100 ms.
        let took = take_all(
            Limits {
                files_per_sec: Some(10),
                bytes_per_sec: None,
            },
            &[1; 30],
        )
        .await;
        assert!(took >= Duration::from_millis(1990), "{took:?}");
        assert!(took <= Duration::from_millis(2100), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_per_second_with_files_larger_than_a_second() {
        // 1 MiB/s and 4 MiB files: each leaves 3 s of debt behind it.
        let took = take_all(
            Limits {
                files_per_sec: None,
                bytes_per_sec: Some(1 << 20),
            },
            &[4 << 20; 4],
        )
        .await;
        // The first starts at once; the other three each wait for the debt plus a second.
        assert!(took >= Duration::from_millis(11_990), "{took:?}");
        assert!(took <= Duration::from_millis(12_100), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_limits_never_wait() {
        let took = take_all(Limits::default(), &[u64::MAX; 100]).await;
        assert_eq!(took, Duration::ZERO);
    }

    #[test]
    fn describe() {
        let l = Limits {
            files_per_sec: Some(5),
            bytes_per_sec: Some(50 << 20),
        };
        assert_eq!(l.describe(), "5 files/s, 50.0 MiB/s");
        assert!(Limits::default().is_unlimited());
    }
}
