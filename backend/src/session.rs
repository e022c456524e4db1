//! Mount sessions (DESIGN 6): each `gpair-mount` opens one, keeps it alive with heartbeats and
//! closes it at unmount. A session not heard from for its lease is dropped; the client
//! notices at its next heartbeat (`known = false`) and opens a new one. Caps held per
//! session build on this table.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// How often clients heartbeat, and how long a silent session lives.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
pub const LEASE: Duration = Duration::from_secs(30);
/// Most sessions at once (each mount holds one).
const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub client: String,
    pub share: std::path::PathBuf,
    pub mountpoint: std::path::PathBuf,
    pub opened_ms: i64,
    pub last_heartbeat_ms: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("too many mount sessions ({MAX_SESSIONS}); close some mounts")]
    TooMany,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn open(
        &self,
        client: String,
        share: std::path::PathBuf,
        mountpoint: std::path::PathBuf,
        now: i64,
    ) -> Result<Session, SessionError> {
        let mut m = self.map();
        Self::expire_locked(&mut m, now);
        if m.len() >= MAX_SESSIONS {
            return Err(SessionError::TooMany);
        }
        let id = loop {
            let id = format!("{:016x}", rand::random::<u64>());
            if !m.contains_key(&id) {
                break id;
            }
        };
        let s = Session {
            id: id.clone(),
            client,
            share,
            mountpoint,
            opened_ms: now,
            last_heartbeat_ms: now,
        };
        m.insert(id, s.clone());
        Ok(s)
    }

    /// Renews a session; false if it is not known (expired, closed, or the backend restarted).
    pub fn heartbeat(&self, id: &str, now: i64) -> bool {
        let mut m = self.map();
        Self::expire_locked(&mut m, now);
        match m.get_mut(id) {
            Some(s) => {
                s.last_heartbeat_ms = now;
                true
            }
            None => false,
        }
    }

    pub fn close(&self, id: &str) -> bool {
        self.map().remove(id).is_some()
    }

    pub fn is_open(&self, id: &str, now: i64) -> bool {
        let mut m = self.map();
        Self::expire_locked(&mut m, now);
        m.contains_key(id)
    }

    pub fn list(&self, now: i64) -> Vec<Session> {
        let mut m = self.map();
        Self::expire_locked(&mut m, now);
        let mut v: Vec<Session> = m.values().cloned().collect();
        v.sort_by(|a, b| a.opened_ms.cmp(&b.opened_ms).then(a.id.cmp(&b.id)));
        v
    }

    fn expire_locked(m: &mut HashMap<String, Session>, now: i64) {
        let lease = LEASE.as_millis() as i64;
        m.retain(|id, s| {
            let alive = now - s.last_heartbeat_ms <= lease;
            if !alive {
                tracing::info!(session = id, client = s.client, "mount session expired");
            }
            alive
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_live_while_heartbeating() {
        let s = Sessions::default();
        let a = s
            .open("h:1".into(), "/s".into(), "/m".into(), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        let lease = LEASE.as_millis() as i64;
        assert!(s.heartbeat(&a.id, lease));
        assert!(s.is_open(&a.id, 2 * lease));
        // Silent past its lease: gone, and the heartbeat says so.
        assert!(!s.heartbeat(&a.id, 2 * lease + 1 + lease));
        assert!(s.list(0).is_empty());
        let b = s
            .open("h:2".into(), "/s".into(), "/m".into(), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(s.close(&b.id));
        assert!(!s.close(&b.id));
    }
}
