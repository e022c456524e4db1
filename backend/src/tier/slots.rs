//! Transfer slots with priority: interactive work (admin commands, recalls for mounts) goes
//! before background work (policy runs, prefetch lists).
//!
//! `total` slots bound the transfers in flight. Background work may hold at most
//! `total - 1` of them, so one is always left for an interactive request however busy a
//! policy run keeps the engine, and it takes a slot only while no interactive request is
//! waiting for one. Slots are handed out in arrival order within each class (tokio's
//! semaphores are fair); a background request already queued on the shared semaphore when an
//! interactive one arrives may still go first — one slot at most, by the reserve above.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// One transfer slot; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _total: OwnedSemaphorePermit,
    _background: Option<OwnedSemaphorePermit>,
}

#[derive(Debug)]
pub struct Slots {
    total: Arc<Semaphore>,
    background: Arc<Semaphore>,
    /// Interactive requests waiting for a slot.
    interactive_waiting: AtomicUsize,
    /// Woken when the last waiting interactive request got its slot.
    idle: Notify,
}

/// Counts an interactive request as waiting until dropped.
struct Waiting<'a>(&'a Slots);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.0.interactive_waiting.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Slots {
    /// `total` slots (at least one).
    pub fn new(total: usize) -> Self {
        let total = total.max(1);
        Self {
            total: Arc::new(Semaphore::new(total)),
            background: Arc::new(Semaphore::new(total.saturating_sub(1).max(1))),
            interactive_waiting: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    /// Waits for a slot. `None` only if the slots were closed.
    pub async fn acquire(&self, background: bool) -> Option<Slot> {
        if !background {
            self.interactive_waiting.fetch_add(1, Ordering::SeqCst);
            let _waiting = Waiting(self);
            let total = Arc::clone(&self.total).acquire_owned().await.ok()?;
            return Some(Slot {
                _total: total,
                _background: None,
            });
        }
        let bg = Arc::clone(&self.background).acquire_owned().await.ok()?;
        loop {
            let idle = self.idle.notified();
            if self.interactive_waiting.load(Ordering::SeqCst) == 0 {
                break;
            }
            idle.await;
        }
        let total = Arc::clone(&self.total).acquire_owned().await.ok()?;
        Some(Slot {
            _total: total,
            _background: Some(bg),
        })
    }

    /// Slots free right now (for tests and status).
    pub fn available(&self) -> usize {
        self.total.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn background_work_leaves_a_slot_for_interactive_work() {
        let slots = Arc::new(Slots::new(3));
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(slots.acquire(true).await.expect("slot"));
        }
        // A third background request waits: two of three is its share.
        let s = Arc::clone(&slots);
        let third = tokio::spawn(async move { s.acquire(true).await });
        tokio::task::yield_now().await;
        assert!(!third.is_finished());
        // An interactive one gets the reserved slot at once.
        let mine = slots.acquire(false).await;
        assert!(mine.is_some());
        assert_eq!(slots.available(), 0);
        drop(mine);
        held.pop();
        let got = third.await.expect("task");
        assert!(got.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn background_work_waits_while_interactive_work_waits() {
        let slots = Arc::new(Slots::new(2));
        // Interactive work holds every slot; more interactive work waits.
        let a = slots.acquire(false).await.expect("slot");
        let b = slots.acquire(false).await.expect("slot");
        let s = Arc::clone(&slots);
        let waiting_interactive = tokio::spawn(async move { s.acquire(false).await });
        tokio::time::sleep(Duration::from_millis(1)).await;
        let s = Arc::clone(&slots);
        let waiting_background = tokio::spawn(async move { s.acquire(true).await });
        tokio::time::sleep(Duration::from_millis(1)).await;
        // One slot frees: the interactive request takes it, the background one keeps waiting.
        drop(a);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(waiting_interactive.is_finished());
        assert!(!waiting_background.is_finished());
        drop(b);
        let got = waiting_background.await.expect("task");
        assert!(got.is_some());
        drop(waiting_interactive);
    }

    #[tokio::test]
    async fn one_slot_is_shared_by_both_classes() {
        let slots = Slots::new(1);
        let s = slots.acquire(true).await;
        assert!(s.is_some());
        drop(s);
        assert!(slots.acquire(false).await.is_some());
    }
}
