//! Jobs: one migrate or recall request, its files and its report, kept in the catalog's
//! `jobs` CF so a job survives a restart of the daemon.
//!
//! Keys: `j ‖ id (u64 BE)` → [`JobRecord`]; `f ‖ id ‖ absolute path` → [`FileRecord`], one
//! per selected file, written when the job is created (the backlog is exactly the files still
//! `pending`). Live counters are kept in memory and recomputed from the file records at start.

use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Migrate,
    Recall,
}

impl JobKind {
    pub fn verb(self) -> &'static str {
        match self {
            Self::Migrate => "offload",
            Self::Recall => "recall",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn finished(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pending,
    Done,
    Failed,
    Skipped,
    Noop,
    Dirty,
    Cancelled,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: u64,
    pub kind: JobKind,
    pub state: JobState,
    pub paths: Vec<Vec<u8>>,
    pub recursive: bool,
    pub created_ms: i64,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub files_total: u64,
    pub bytes_total: u64,
    pub gpairs: Vec<String>,
    /// Background work (policy runs, prefetch lists): after interactive work, within rate
    /// limits. Absent in records written before it existed: interactive.
    #[serde(default)]
    pub background: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRecord {
    pub outcome: Outcome,
    pub reason: String,
    /// Logical size when selected.
    pub size: u64,
    /// Bytes moved.
    pub bytes: u64,
    pub at_ms: i64,
}

pub fn job_key(id: u64) -> Vec<u8> {
    let mut k = b"j".to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn files_prefix(id: u64) -> Vec<u8> {
    let mut k = b"f".to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn file_key(id: u64, path: &[u8]) -> Vec<u8> {
    let mut k = files_prefix(id);
    k.extend_from_slice(path);
    k
}

/// Counters of a job, by outcome.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub files_done: u64,
    pub bytes_done: u64,
    pub failed: u64,
    pub skipped: u64,
    pub noop: u64,
    pub dirty: u64,
    pub cancelled: u64,
}

impl Counters {
    pub fn add(&mut self, f: &FileRecord) {
        match f.outcome {
            Outcome::Pending => return,
            Outcome::Done => self.bytes_done += f.bytes,
            Outcome::Failed => self.failed += 1,
            Outcome::Skipped => self.skipped += 1,
            Outcome::Noop => self.noop += 1,
            Outcome::Dirty => self.dirty += 1,
            Outcome::Cancelled => self.cancelled += 1,
        }
        if f.outcome == Outcome::Done {
            self.files_done += 1;
        }
    }

    pub fn finished_files(&self) -> u64 {
        self.files_done + self.failed + self.skipped + self.noop + self.dirty + self.cancelled
    }
}

/// A job in memory: its record, counters, and what watchers need.
pub struct JobRt {
    pub rec: Mutex<JobRecord>,
    pub counters: Mutex<Counters>,
    pub cancel: CancellationToken,
    /// Bumped at every change; watchers wait on it.
    pub changed: tokio::sync::watch::Sender<u64>,
    /// "gpeer NAME: last error" while a file waits for an unreachable gpeer.
    pub waiting_for: Mutex<String>,
    /// (when, bytes_done) samples for the rate.
    rate: Mutex<Vec<(Instant, u64)>>,
}

impl std::fmt::Debug for JobRt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRt")
            .field("rec", &self.record())
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl JobRt {
    pub fn new(rec: JobRecord, counters: Counters, cancel: CancellationToken) -> Self {
        Self {
            rec: Mutex::new(rec),
            counters: Mutex::new(counters),
            cancel,
            changed: tokio::sync::watch::channel(0).0,
            waiting_for: Mutex::new(String::new()),
            rate: Mutex::new(Vec::new()),
        }
    }

    pub fn record(&self) -> JobRecord {
        lock(&self.rec).clone()
    }

    pub fn counters(&self) -> Counters {
        *lock(&self.counters)
    }

    pub fn id(&self) -> u64 {
        lock(&self.rec).id
    }

    pub fn update(&self, f: impl FnOnce(&mut JobRecord)) {
        f(&mut lock(&self.rec));
        self.bump();
    }

    pub fn count(&self, file: &FileRecord) {
        let bytes = {
            let mut c = lock(&self.counters);
            c.add(file);
            c.bytes_done
        };
        let mut r = lock(&self.rate);
        r.push((Instant::now(), bytes));
        let horizon = Instant::now() - std::time::Duration::from_secs(10);
        let keep_from = r.iter().position(|(t, _)| *t >= horizon).unwrap_or(r.len());
        // Keep one sample older than the horizon as the baseline.
        r.drain(..keep_from.saturating_sub(1));
        drop(r);
        self.bump();
    }

    pub fn set_waiting(&self, why: String) {
        let mut w = lock(&self.waiting_for);
        if *w != why {
            *w = why;
            drop(w);
            self.bump();
        }
    }

    pub fn waiting(&self) -> String {
        lock(&self.waiting_for).clone()
    }

    /// Bytes per second over the last ~10 s.
    pub fn rate(&self) -> u64 {
        let r = lock(&self.rate);
        match (r.first(), r.last()) {
            (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => {
                let secs = t1.duration_since(*t0).as_secs_f64().max(0.001);
                ((b1 - b0) as f64 / secs) as u64
            }
            _ => 0,
        }
    }

    pub fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}
