//! The cap table (DESIGN 6): which mount session holds which capability on which file, and
//! the backend's own exclusive cap. This module is the pure state machine — no locks, no
//! clocks, no I/O — so it can be checked against a reference model (proptest) and under
//! every interleaving of its callers (shuttle). [`crate::session::Sessions`] wraps it with a
//! mutex, persistence, revoke delivery, leases and waiting.
//!
//! What it owns: per file, the caps of each session and the exclusive cap, and the rule
//! that **the exclusive cap never coexists with a write cap** (offload releases data only
//! while nobody may be writing, invariant I2). What it must never do: grant a write cap
//! while the exclusive cap is held, or grant the exclusive cap while a write cap is held —
//! whatever order calls arrive in.
//!
//! A file is identified by its gpair and east inode number ([`FileId`]): the tier code
//! locates files by gpair and the mount knows the inode of what it has open; an inode
//! follows renames, a path does not. (Device numbers are left out on purpose: on a cluster
//! filesystem they differ between the hosts of the backend and of the mounts, inode numbers
//! do not.)

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The identity of a file the caps are about: its gpair and east inode number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileId {
    pub gpair: String,
    pub ino: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CapKind {
    /// May cache data and attributes. Never conflicts.
    Read,
    /// Has the file open for writing. Conflicts with the exclusive cap.
    Write,
    /// The backend's own, while it releases (offloads) a file. Never held by a session.
    Exclusive,
}

impl CapKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CapKind::Read => "read",
            CapKind::Write => "write",
            CapKind::Exclusive => "exclusive",
        }
    }
}

/// The life of one session's cap on one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CapState {
    /// Held. Entered by [`CapTable::take`] (a first take, or a take by a session that asked
    /// while the file was exclusive — it waits outside the table and takes again). Leaves to
    /// `RevokeRequested` when the backend wants the file exclusive, to `Released` at the
    /// client's last close, to `Evicted` with its session.
    Granted { since_ms: i64 },
    /// The backend asked for it back ([`CapTable::request_exclusive`]). `busy`: the client
    /// answered that a writer still has the file open ([`CapTable::busy`]). Leaves to
    /// `Released` when the client gives it back, back to `Granted` when the backend stops
    /// asking (it deferred the file: [`CapTable::abandon_exclusive`]), to `Evicted` with its
    /// session.
    RevokeRequested {
        since_ms: i64,
        requested_ms: i64,
        busy: bool,
    },
    /// Given back (terminal: the cap leaves the table).
    Released,
    /// Dropped because its session was evicted (terminal: the cap leaves the table and its
    /// file is treated as dirty if it was a write cap).
    Evicted,
}

impl CapState {
    pub fn since_ms(&self) -> i64 {
        match *self {
            CapState::Granted { since_ms } | CapState::RevokeRequested { since_ms, .. } => since_ms,
            CapState::Released | CapState::Evicted => 0,
        }
    }

    /// `granted`, `revoking`, `revoking-busy`, `released`, `evicted`.
    pub fn label(&self) -> &'static str {
        match self {
            CapState::Granted { .. } => "granted",
            CapState::RevokeRequested { busy: false, .. } => "revoking",
            CapState::RevokeRequested { busy: true, .. } => "revoking-busy",
            CapState::Released => "released",
            CapState::Evicted => "evicted",
        }
    }
}

/// One session's cap on one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cap {
    pub session: String,
    pub kind: CapKind,
    /// The absolute east path the session gave when it took the cap (for people; the
    /// identity is the inode).
    pub path: PathBuf,
    pub state: CapState,
}

/// The backend's exclusive cap on a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusive {
    /// Which request holds it (each request has its own token).
    pub token: u64,
    pub path: PathBuf,
    pub since_ms: i64,
    pub reason: String,
}

/// Why a take was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TakeRefused {
    #[error("the backend holds the exclusive cap ({0}); ask again when it is released")]
    Exclusive(String),
    #[error("the exclusive cap belongs to the backend; sessions cannot take it")]
    NotForSessions,
}

/// What a request for the exclusive cap found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExclusiveStep {
    /// Held by this request now.
    Granted,
    /// Another request holds it.
    HeldByOther(String),
    /// Sessions hold write caps: wait for them to be released. `revoke` lists the caps
    /// whose revoke was requested by this call (the ones to send a revoke to now);
    /// `holders` every write cap still in the way, and whether all of them answered busy.
    Wait {
        revoke: Vec<Cap>,
        holders: Vec<Cap>,
        all_busy: bool,
    },
}

#[derive(Debug, Default, Clone)]
struct FileCaps {
    caps: BTreeMap<(String, CapKind), Cap>,
    exclusive: Option<Exclusive>,
}

impl FileCaps {
    fn is_empty(&self) -> bool {
        self.caps.is_empty() && self.exclusive.is_none()
    }

    fn writers(&self) -> impl Iterator<Item = &Cap> {
        self.caps.values().filter(|c| c.kind == CapKind::Write)
    }
}

/// Every cap of every session, and the backend's exclusive caps.
#[derive(Debug, Default, Clone)]
pub struct CapTable {
    files: BTreeMap<FileId, FileCaps>,
}

impl CapTable {
    /// `session` takes `kind` (read or write) on `file`. Taking a cap already held keeps it
    /// as it is (a revoke asked for stays asked for). Refused while the backend holds the
    /// exclusive cap and `kind` is write.
    pub fn take(
        &mut self,
        session: &str,
        file: &FileId,
        path: PathBuf,
        kind: CapKind,
        now_ms: i64,
    ) -> Result<(), TakeRefused> {
        if kind == CapKind::Exclusive {
            return Err(TakeRefused::NotForSessions);
        }
        let f = self.files.entry(file.clone()).or_default();
        if kind == CapKind::Write {
            if let Some(x) = &f.exclusive {
                let reason = x.reason.clone();
                if f.is_empty() {
                    self.files.remove(file);
                }
                return Err(TakeRefused::Exclusive(reason));
            }
        }
        f.caps
            .entry((session.to_string(), kind))
            .or_insert_with(|| Cap {
                session: session.to_string(),
                kind,
                path,
                state: CapState::Granted { since_ms: now_ms },
            });
        Ok(())
    }

    /// `session` gives `kind` on `file` back: the cap as it was, now `Released`.
    pub fn release(&mut self, session: &str, file: &FileId, kind: CapKind) -> Option<Cap> {
        let f = self.files.get_mut(file)?;
        let mut cap = f.caps.remove(&(session.to_string(), kind))?;
        if f.is_empty() {
            self.files.remove(file);
        }
        cap.state = CapState::Released;
        Some(cap)
    }

    /// The backend asks for the exclusive cap on `file` with request `token`. Granted at
    /// once when no session holds a write cap; otherwise every write cap still `Granted`
    /// moves to `RevokeRequested` (returned in `revoke`, for the caller to send) and the
    /// caller waits for releases, asking again after each change.
    pub fn request_exclusive(
        &mut self,
        file: &FileId,
        path: PathBuf,
        token: u64,
        reason: &str,
        now_ms: i64,
    ) -> ExclusiveStep {
        let f = self.files.entry(file.clone()).or_default();
        if let Some(x) = &f.exclusive {
            return if x.token == token {
                ExclusiveStep::Granted
            } else {
                ExclusiveStep::HeldByOther(x.reason.clone())
            };
        }
        if f.writers().next().is_none() {
            f.exclusive = Some(Exclusive {
                token,
                path,
                since_ms: now_ms,
                reason: reason.to_string(),
            });
            return ExclusiveStep::Granted;
        }
        let mut revoke = Vec::new();
        for cap in f.caps.values_mut().filter(|c| c.kind == CapKind::Write) {
            if let CapState::Granted { since_ms } = cap.state {
                cap.state = CapState::RevokeRequested {
                    since_ms,
                    requested_ms: now_ms,
                    busy: false,
                };
                revoke.push(cap.clone());
            }
        }
        let holders: Vec<Cap> = f.writers().cloned().collect();
        let all_busy = holders
            .iter()
            .all(|c| matches!(c.state, CapState::RevokeRequested { busy: true, .. }));
        ExclusiveStep::Wait {
            revoke,
            holders,
            all_busy,
        }
    }

    /// `session` answered a revoke of its write cap on `file` with "a writer still has it
    /// open". False if it holds no such cap being revoked.
    pub fn busy(&mut self, session: &str, file: &FileId) -> bool {
        let Some(cap) = self
            .files
            .get_mut(file)
            .and_then(|f| f.caps.get_mut(&(session.to_string(), CapKind::Write)))
        else {
            return false;
        };
        match &mut cap.state {
            CapState::RevokeRequested { busy, .. } => {
                *busy = true;
                true
            }
            _ => false,
        }
    }

    /// The backend stopped asking for `file` (it deferred the file): revokes asked for go
    /// back to `Granted`. Does nothing once the exclusive cap was granted.
    pub fn abandon_exclusive(&mut self, file: &FileId) {
        let Some(f) = self.files.get_mut(file) else {
            return;
        };
        if f.exclusive.is_some() {
            return;
        }
        for cap in f.caps.values_mut() {
            if let CapState::RevokeRequested { since_ms, .. } = cap.state {
                cap.state = CapState::Granted { since_ms };
            }
        }
    }

    /// Gives the exclusive cap of request `token` back; false if that request does not
    /// hold it.
    pub fn release_exclusive(&mut self, file: &FileId, token: u64) -> bool {
        let Some(f) = self.files.get_mut(file) else {
            return false;
        };
        if f.exclusive.as_ref().is_some_and(|x| x.token == token) {
            f.exclusive = None;
            if f.is_empty() {
                self.files.remove(file);
            }
            true
        } else {
            false
        }
    }

    /// Drops every exclusive cap (shutdown, or stale ones at start); returns their files.
    pub fn clear_exclusive(&mut self) -> Vec<(FileId, Exclusive)> {
        let mut out = Vec::new();
        for (id, f) in &mut self.files {
            if let Some(x) = f.exclusive.take() {
                out.push((id.clone(), x));
            }
        }
        self.files.retain(|_, f| !f.is_empty());
        out
    }

    /// Drops every cap of `session` (`Evicted`), returning them.
    pub fn evict(&mut self, session: &str) -> Vec<(FileId, Cap)> {
        self.drop_session(session, CapState::Evicted)
    }

    /// Drops every cap of `session` as given back (the session closed cleanly).
    pub fn release_all(&mut self, session: &str) -> Vec<(FileId, Cap)> {
        self.drop_session(session, CapState::Released)
    }

    fn drop_session(&mut self, session: &str, end: CapState) -> Vec<(FileId, Cap)> {
        let mut out = Vec::new();
        for (id, f) in &mut self.files {
            let keys: Vec<(String, CapKind)> = f
                .caps
                .keys()
                .filter(|(s, _)| s == session)
                .cloned()
                .collect();
            for k in keys {
                if let Some(mut cap) = f.caps.remove(&k) {
                    cap.state = end;
                    out.push((id.clone(), cap));
                }
            }
        }
        self.files.retain(|_, f| !f.is_empty());
        out
    }

    /// `session`'s `kind` cap on `file`.
    pub fn get(&self, session: &str, file: &FileId, kind: CapKind) -> Option<&Cap> {
        self.files.get(file)?.caps.get(&(session.to_string(), kind))
    }

    /// The write caps on `file`.
    pub fn writers(&self, file: &FileId) -> Vec<Cap> {
        self.files
            .get(file)
            .map(|f| f.writers().cloned().collect())
            .unwrap_or_default()
    }

    pub fn exclusive(&self, file: &FileId) -> Option<&Exclusive> {
        self.files.get(file)?.exclusive.as_ref()
    }

    /// Every session cap, in file order.
    pub fn caps(&self) -> impl Iterator<Item = (&FileId, &Cap)> {
        self.files
            .iter()
            .flat_map(|(id, f)| f.caps.values().map(move |c| (id, c)))
    }

    /// Every exclusive cap.
    pub fn exclusives(&self) -> impl Iterator<Item = (&FileId, &Exclusive)> {
        self.files
            .iter()
            .filter_map(|(id, f)| f.exclusive.as_ref().map(|x| (id, x)))
    }

    /// Caps held by `session`.
    pub fn count_of(&self, session: &str) -> usize {
        self.caps().filter(|(_, c)| c.session == session).count()
    }

    /// Puts back a cap as it was persisted (at start).
    pub fn restore(&mut self, file: FileId, cap: Cap) {
        self.files
            .entry(file)
            .or_default()
            .caps
            .insert((cap.session.clone(), cap.kind), cap);
    }

    /// The rule this table exists for; `Err` names the first file that breaks it.
    pub fn check(&self) -> Result<(), String> {
        for (id, f) in &self.files {
            if f.exclusive.is_some() && f.writers().next().is_some() {
                return Err(format!("{id:?}: exclusive cap held with write caps"));
            }
            if f.is_empty() {
                return Err(format!("{id:?}: empty entry kept"));
            }
            for ((s, k), c) in &f.caps {
                if *s != c.session || *k != c.kind {
                    return Err(format!("{id:?}: cap filed under the wrong key"));
                }
                if matches!(c.state, CapState::Released | CapState::Evicted) {
                    return Err(format!("{id:?}: a terminal cap is still in the table"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(ino: u64) -> FileId {
        FileId {
            gpair: "p1".into(),
            ino,
        }
    }

    #[test]
    fn exclusive_waits_for_writers_and_blocks_new_ones() {
        let mut t = CapTable::default();
        assert_eq!(t.take("a", &f(1), "/s/x".into(), CapKind::Write, 1), Ok(()));
        assert_eq!(t.take("b", &f(1), "/s/x".into(), CapKind::Read, 1), Ok(()));
        let step = t.request_exclusive(&f(1), "/s/x".into(), 7, "offload", 2);
        let ExclusiveStep::Wait {
            revoke,
            holders,
            all_busy,
        } = step
        else {
            panic!("{step:?}")
        };
        assert_eq!(revoke.len(), 1);
        assert_eq!(revoke[0].session, "a");
        assert_eq!(holders.len(), 1);
        assert!(!all_busy);
        // Asking again sends no second revoke.
        let again = t.request_exclusive(&f(1), "/s/x".into(), 7, "offload", 3);
        assert!(matches!(again, ExclusiveStep::Wait { ref revoke, .. } if revoke.is_empty()));
        assert!(t.busy("a", &f(1)));
        assert!(matches!(
            t.request_exclusive(&f(1), "/s/x".into(), 7, "offload", 3),
            ExclusiveStep::Wait { all_busy: true, .. }
        ));
        let released = t.release("a", &f(1), CapKind::Write);
        assert_eq!(released.map(|c| c.state), Some(CapState::Released));
        assert_eq!(
            t.request_exclusive(&f(1), "/s/x".into(), 7, "offload", 4),
            ExclusiveStep::Granted
        );
        assert_eq!(
            t.take("a", &f(1), "/s/x".into(), CapKind::Write, 5),
            Err(TakeRefused::Exclusive("offload".into()))
        );
        // Reads never conflict.
        assert_eq!(t.take("c", &f(1), "/s/x".into(), CapKind::Read, 5), Ok(()));
        assert!(matches!(
            t.request_exclusive(&f(1), "/s/x".into(), 8, "other", 5),
            ExclusiveStep::HeldByOther(_)
        ));
        assert!(!t.release_exclusive(&f(1), 8));
        assert!(t.release_exclusive(&f(1), 7));
        assert_eq!(t.take("a", &f(1), "/s/x".into(), CapKind::Write, 6), Ok(()));
        t.check().unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn abandon_and_evict() {
        let mut t = CapTable::default();
        t.take("a", &f(1), "/s/x".into(), CapKind::Write, 1)
            .unwrap_or_else(|e| panic!("{e}"));
        t.take("a", &f(2), "/s/y".into(), CapKind::Write, 1)
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = t.request_exclusive(&f(1), "/s/x".into(), 1, "offload", 2);
        t.abandon_exclusive(&f(1));
        assert_eq!(t.writers(&f(1))[0].state, CapState::Granted { since_ms: 1 });
        let gone = t.evict("a");
        assert_eq!(gone.len(), 2);
        assert!(gone.iter().all(|(_, c)| c.state == CapState::Evicted));
        assert_eq!(t.caps().count(), 0);
        assert_eq!(
            t.request_exclusive(&f(1), "/s/x".into(), 1, "offload", 3),
            ExclusiveStep::Granted
        );
        assert_eq!(t.clear_exclusive().len(), 1);
        assert!(t.files.is_empty());
        assert_eq!(
            t.take("a", &f(1), "/s/x".into(), CapKind::Exclusive, 1),
            Err(TakeRefused::NotForSessions)
        );
    }

    /// Model-based test: the table against a reference model of sets.
    mod model {
        use super::*;
        use proptest::prelude::*;
        use std::collections::{BTreeMap, BTreeSet};

        #[derive(Debug, Clone)]
        enum Op {
            Take(u8, u8, bool),
            Release(u8, u8, bool),
            Request(u8, u8),
            Busy(u8, u8),
            Abandon(u8),
            ReleaseExclusive(u8, u8),
            Evict(u8),
            Close(u8),
        }

        fn op() -> impl Strategy<Value = Op> {
            let s = 0u8..3;
            let file = 0u8..3;
            let tok = 0u8..2;
            prop_oneof![
                (s.clone(), file.clone(), any::<bool>()).prop_map(|(a, b, c)| Op::Take(a, b, c)),
                (s.clone(), file.clone(), any::<bool>()).prop_map(|(a, b, c)| Op::Release(a, b, c)),
                (file.clone(), tok.clone()).prop_map(|(a, b)| Op::Request(a, b)),
                (s.clone(), file.clone()).prop_map(|(a, b)| Op::Busy(a, b)),
                file.clone().prop_map(Op::Abandon),
                (file, tok).prop_map(|(a, b)| Op::ReleaseExclusive(a, b)),
                s.clone().prop_map(Op::Evict),
                s.prop_map(Op::Close),
            ]
        }

        /// The reference: per file, writers (session → revoke asked, busy), readers, the
        /// exclusive token.
        #[derive(Default, Debug)]
        struct Model {
            writers: BTreeMap<u8, BTreeMap<u8, (bool, bool)>>,
            readers: BTreeMap<u8, BTreeSet<u8>>,
            exclusive: BTreeMap<u8, u8>,
        }

        fn kind(write: bool) -> CapKind {
            if write {
                CapKind::Write
            } else {
                CapKind::Read
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
            #[test]
            fn table_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
                let mut t = CapTable::default();
                let mut m = Model::default();
                for (now, op) in ops.into_iter().enumerate() {
                    let now = now as i64;
                    match op {
                        Op::Take(s, file, write) => {
                            let got = t.take(&s.to_string(), &f(file.into()), "/p".into(), kind(write), now);
                            let refused = write && m.exclusive.contains_key(&file);
                            prop_assert_eq!(got.is_err(), refused);
                            if !refused {
                                if write {
                                    m.writers.entry(file).or_default().entry(s).or_insert((false, false));
                                } else {
                                    m.readers.entry(file).or_default().insert(s);
                                }
                            }
                        }
                        Op::Release(s, file, write) => {
                            let got = t.release(&s.to_string(), &f(file.into()), kind(write));
                            let had = if write {
                                m.writers.entry(file).or_default().remove(&s).is_some()
                            } else {
                                m.readers.entry(file).or_default().remove(&s)
                            };
                            prop_assert_eq!(got.is_some(), had);
                        }
                        Op::Request(file, tok) => {
                            let got = t.request_exclusive(&f(file.into()), "/p".into(), tok.into(), "r", now);
                            let w = m.writers.entry(file).or_default();
                            match m.exclusive.get(&file) {
                                Some(&held) if held == tok => prop_assert_eq!(got, ExclusiveStep::Granted),
                                Some(_) => prop_assert!(matches!(got, ExclusiveStep::HeldByOther(_))),
                                None if w.is_empty() => {
                                    prop_assert_eq!(got, ExclusiveStep::Granted);
                                    m.exclusive.insert(file, tok);
                                }
                                None => {
                                    let ExclusiveStep::Wait { revoke, holders, all_busy } = got else {
                                        return Err(TestCaseError::fail("expected Wait"));
                                    };
                                    let want: BTreeSet<String> = w.iter().filter(|(_, (asked, _))| !asked).map(|(s, _)| s.to_string()).collect();
                                    let sent: BTreeSet<String> = revoke.iter().map(|c| c.session.clone()).collect();
                                    prop_assert_eq!(sent, want);
                                    prop_assert_eq!(holders.len(), w.len());
                                    for v in w.values_mut() {
                                        v.0 = true;
                                    }
                                    prop_assert_eq!(all_busy, w.values().all(|(_, busy)| *busy));
                                }
                            }
                        }
                        Op::Busy(s, file) => {
                            let got = t.busy(&s.to_string(), &f(file.into()));
                            let want = match m.writers.entry(file).or_default().get_mut(&s) {
                                Some((true, busy)) => {
                                    *busy = true;
                                    true
                                }
                                _ => false,
                            };
                            prop_assert_eq!(got, want);
                        }
                        Op::Abandon(file) => {
                            t.abandon_exclusive(&f(file.into()));
                            if !m.exclusive.contains_key(&file) {
                                for v in m.writers.entry(file).or_default().values_mut() {
                                    *v = (false, false);
                                }
                            }
                        }
                        Op::ReleaseExclusive(file, tok) => {
                            let got = t.release_exclusive(&f(file.into()), tok.into());
                            let want = m.exclusive.get(&file) == Some(&tok);
                            if want {
                                m.exclusive.remove(&file);
                            }
                            prop_assert_eq!(got, want);
                        }
                        Op::Evict(s) | Op::Close(s) => {
                            let evict = matches!(op, Op::Evict(_));
                            let got = if evict { t.evict(&s.to_string()) } else { t.release_all(&s.to_string()) };
                            let mut want = 0;
                            for w in m.writers.values_mut() {
                                want += usize::from(w.remove(&s).is_some());
                            }
                            for r in m.readers.values_mut() {
                                want += usize::from(r.remove(&s));
                            }
                            prop_assert_eq!(got.len(), want);
                            let end = if evict { CapState::Evicted } else { CapState::Released };
                            prop_assert!(got.iter().all(|(_, c)| c.state == end));
                        }
                    }
                    t.check().map_err(TestCaseError::fail)?;
                    // The whole state agrees with the model.
                    for file in 0u8..3 {
                        let id = f(file.into());
                        let w: BTreeMap<u8, (bool, bool)> = t.writers(&id).iter().map(|c| {
                            let s: u8 = c.session.parse().unwrap_or(99);
                            let st = match c.state {
                                CapState::RevokeRequested { busy, .. } => (true, busy),
                                _ => (false, false),
                            };
                            (s, st)
                        }).collect();
                        prop_assert_eq!(w, m.writers.get(&file).cloned().unwrap_or_default());
                        let r: BTreeSet<u8> = t.caps().filter(|(i, c)| **i == id && c.kind == CapKind::Read).map(|(_, c)| c.session.parse().unwrap_or(99)).collect();
                        prop_assert_eq!(r, m.readers.get(&file).cloned().unwrap_or_default());
                        prop_assert_eq!(t.exclusive(&id).map(|x| x.token), m.exclusive.get(&file).map(|&t| u64::from(t)));
                    }
                }
            }
        }
    }

    /// Concurrency: mounts taking and releasing write caps, an offload asking for the
    /// exclusive cap and waiting, and an evictor, under shuttle's scheduler. The table is
    /// shared the way `Sessions` shares it (one mutex, a condition variable for "caps
    /// changed"); the check is that the exclusive cap never coexists with a write cap and
    /// that the offload always ends (granted or deferred).
    #[test]
    fn shuttle_exclusive_never_meets_a_writer() {
        use shuttle::sync::{Arc, Condvar, Mutex};
        use shuttle::thread;

        shuttle::check_random(
            || {
                let shared = Arc::new((Mutex::new(CapTable::default()), Condvar::new()));
                let file = f(1);
                let mut handles = Vec::new();
                for s in 0..2 {
                    let shared = Arc::clone(&shared);
                    let file = file.clone();
                    handles.push(thread::spawn(move || {
                        let (table, changed) = &*shared;
                        let session = format!("s{s}");
                        for _ in 0..2 {
                            let took = {
                                let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
                                let r = t.take(&session, &file, "/p".into(), CapKind::Write, 0);
                                t.check().unwrap_or_else(|e| panic!("{e}"));
                                r.is_ok()
                            };
                            if took {
                                // Write, then answer a revoke (busy) or close.
                                let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
                                t.busy(&session, &file);
                                drop(t);
                                thread::yield_now();
                                let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
                                t.release(&session, &file, CapKind::Write);
                                t.check().unwrap_or_else(|e| panic!("{e}"));
                                changed.notify_all();
                            }
                        }
                    }));
                }
                {
                    let shared = Arc::clone(&shared);
                    handles.push(thread::spawn(move || {
                        let (table, changed) = &*shared;
                        let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
                        t.evict("s1");
                        t.check().unwrap_or_else(|e| panic!("{e}"));
                        changed.notify_all();
                    }));
                }
                let offload = {
                    let shared = Arc::clone(&shared);
                    let file = file.clone();
                    thread::spawn(move || {
                        let (table, changed) = &*shared;
                        let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
                        let mut waits = 0;
                        loop {
                            match t.request_exclusive(&file, "/p".into(), 1, "offload", 0) {
                                ExclusiveStep::Granted => {
                                    t.check().unwrap_or_else(|e| panic!("{e}"));
                                    assert!(t.writers(&file).is_empty());
                                    assert!(t.release_exclusive(&file, 1));
                                    changed.notify_all();
                                    return true;
                                }
                                ExclusiveStep::HeldByOther(_) => unreachable!(),
                                ExclusiveStep::Wait { .. } if waits >= 3 => {
                                    // Deferred: the revokes are withdrawn.
                                    t.abandon_exclusive(&file);
                                    changed.notify_all();
                                    return false;
                                }
                                ExclusiveStep::Wait { .. } => {
                                    waits += 1;
                                    t = changed.wait(t).unwrap_or_else(|e| e.into_inner());
                                }
                            }
                        }
                    })
                };
                for h in handles {
                    h.join().unwrap_or_else(|_| panic!("mount thread panicked"));
                }
                // Every writer is gone: the offload is not left waiting forever.
                shared.1.notify_all();
                let _ = offload.join();
                let t = shared.0.lock().unwrap_or_else(|e| e.into_inner());
                t.check().unwrap_or_else(|e| panic!("{e}"));
                assert!(t.exclusive(&file).is_none());
            },
            2_000,
        );
    }
}
