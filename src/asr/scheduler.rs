//! The engine's CPU budget as slots, granted live work first (see
//! [`Scheduler`]), so captions never wait behind a batch job.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Scheduling class of a job. Waiting jobs are served in the order
/// `LiveFinal`, `LivePartial`, `Batch`: a final fixes text agents act on and
/// is never superseded, while a partial is replaced by the next one (and can
/// be aborted); batch work has no one waiting on it in real time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    LivePartial,
    LiveFinal,
    Batch,
}

impl Priority {
    /// Lower is served first.
    fn rank(self) -> u8 {
        match self {
            Priority::LiveFinal => 0,
            Priority::LivePartial => 1,
            Priority::Batch => 2,
        }
    }
}

/// Grants at most `slots` concurrent jobs, by [`Priority`] then arrival.
///
/// Independent of Whisper so the policy is testable without a model. A
/// [`Permit`] returns its slot on drop — also when the job panics or the
/// waiting future is dropped — and a slot freed while jobs wait goes straight
/// to the best waiter, so a late high-priority job cannot be overtaken by an
/// earlier low-priority one.
pub struct Scheduler {
    state: Mutex<SchedulerState>,
}

struct SchedulerState {
    free: usize,
    waiting: BinaryHeap<Waiter>,
    next_seq: u64,
}

struct Waiter {
    rank: u8,
    seq: u64,
    grant: oneshot::Sender<Permit>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        (self.rank, self.seq) == (other.rank, other.seq)
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    /// The heap's maximum is the best waiter: lowest rank, then oldest.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.rank, other.seq).cmp(&(self.rank, self.seq))
    }
}

/// One granted slot; dropping it frees the slot.
pub struct Permit {
    scheduler: Option<Arc<Scheduler>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(s) = self.scheduler.take() {
            s.release();
        }
    }
}

impl Scheduler {
    pub fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(SchedulerState {
                free: slots,
                waiting: BinaryHeap::new(),
                next_seq: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SchedulerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Jobs waiting for a slot.
    pub fn queued(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Slots free right now.
    pub fn available(&self) -> usize {
        self.lock().free
    }

    /// Waits for a slot. Cancel-safe: dropping the future gives up the place
    /// in the queue, and a slot granted to a dropped waiter moves on.
    pub async fn acquire(self: &Arc<Self>, priority: Priority) -> Permit {
        loop {
            let granted = {
                let mut s = self.lock();
                if s.free > 0 {
                    s.free -= 1;
                    return Permit {
                        scheduler: Some(self.clone()),
                    };
                }
                let (grant, granted) = oneshot::channel();
                let seq = s.next_seq;
                s.next_seq += 1;
                s.waiting.push(Waiter {
                    rank: priority.rank(),
                    seq,
                    grant,
                });
                granted
            };
            // The sender is only dropped unsent if this receiver was dropped
            // first, so this loops only in theory.
            if let Ok(permit) = granted.await {
                return permit;
            }
        }
    }

    /// Hands a freed slot to the best live waiter, else marks it free.
    fn release(self: Arc<Self>) {
        let mut permit = Permit {
            scheduler: Some(self.clone()),
        };
        loop {
            let waiter = {
                let mut s = self.lock();
                match s.waiting.pop() {
                    Some(w) => w,
                    None => {
                        s.free += 1;
                        // Disarm: the slot is now counted in `free`.
                        permit.scheduler = None;
                        return;
                    }
                }
            };
            // Outside the lock: a failed send hands the permit back to us.
            match waiter.grant.send(permit) {
                Ok(()) => return,
                Err(p) => permit = p,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    #[tokio::test]
    async fn live_work_is_served_before_batch() {
        let scheduler = Scheduler::new(1);
        let busy = scheduler.acquire(Priority::Batch).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // Arrival order: batch, partial, batch, final, partial.
        let arrivals = [
            ("batch-1", Priority::Batch),
            ("partial-1", Priority::LivePartial),
            ("batch-2", Priority::Batch),
            ("final-1", Priority::LiveFinal),
            ("partial-2", Priority::LivePartial),
        ];
        for (n, (name, priority)) in arrivals.into_iter().enumerate() {
            let (s, tx) = (scheduler.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = s.acquire(priority).await;
                tx.send(name).unwrap();
            });
            while scheduler.queued() < n + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(tx);
        drop(busy);
        let mut order = Vec::new();
        while let Some(name) = rx.recv().await {
            order.push(name);
        }
        assert_eq!(
            order,
            ["final-1", "partial-1", "partial-2", "batch-1", "batch-2"]
        );
        assert_eq!(scheduler.available(), 1);
    }

    #[tokio::test]
    async fn slots_bound_concurrency() {
        let scheduler = Scheduler::new(2);
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (s, running, peak) = (scheduler.clone(), running.clone(), peak.clone());
                tokio::spawn(async move {
                    let p = if i % 2 == 0 {
                        Priority::Batch
                    } else {
                        Priority::LivePartial
                    };
                    let _permit = s.acquire(p).await;
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert_eq!(scheduler.available(), 2);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_does_not_lose_the_slot() {
        let scheduler = Scheduler::new(1);
        let busy = scheduler.acquire(Priority::Batch).await;
        let s = scheduler.clone();
        let cancelled = tokio::spawn(async move { s.acquire(Priority::LiveFinal).await });
        while scheduler.queued() < 1 {
            tokio::task::yield_now().await;
        }
        cancelled.abort();
        let _ = cancelled.await;
        let s = scheduler.clone();
        let batch = tokio::spawn(async move { drop(s.acquire(Priority::Batch).await) });
        while scheduler.queued() < 2 {
            tokio::task::yield_now().await;
        }
        drop(busy);
        tokio::time::timeout(Duration::from_secs(5), batch)
            .await
            .expect("the slot reached the live waiter")
            .unwrap();
        assert_eq!(scheduler.available(), 1);
    }
}
