//! Open media sessions on this node: stream capacity, pending upgrades,
//! one live stream per call, per-tenant stream counts (the concurrent-stream
//! quota), graceful shutdown and the route for messages sent back to a stream.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Messages the gateway sends back on a bidirectional stream.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outbound {
    /// Base64 μ-law 8 kHz audio to play to the caller.
    Media { payload: String },
    /// Asks the provider to echo `name` once the audio before it has played.
    Mark { name: String },
    /// Flushes audio queued for playback (barge-in).
    Clear,
}

struct Entry {
    tenant_id: String,
    outbound: mpsc::Sender<Outbound>,
}

/// Open media sessions: capacity limit, graceful shutdown and the route for
/// messages sent back to a stream. Cheap to clone.
#[derive(Clone)]
pub struct SessionRegistry {
    inner: Arc<RegistryInner>,
}

struct RegistryInner {
    /// Authenticated streams (`stream.max_streams`).
    capacity: Arc<Semaphore>,
    /// Unsigned upgrades waiting for their `start` (`stream.max_pending_upgrades`).
    pending: Arc<Semaphore>,
    /// (tenant, provider call id) of every stream starting or open here:
    /// one live stream per call.
    live: Mutex<HashSet<(String, String)>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    sessions: Mutex<HashMap<String, Entry>>,
    /// Streams open (or starting) per tenant, for the concurrent-stream quota.
    per_tenant: Mutex<HashMap<String, u32>>,
}

/// One of a tenant's concurrent-stream slots; given back when dropped.
pub struct TenantSlot {
    inner: Arc<RegistryInner>,
    tenant_id: String,
}

impl Drop for TenantSlot {
    fn drop(&mut self) {
        let mut map = lock_map(&self.inner.per_tenant);
        if let Some(n) = map.get_mut(&self.tenant_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.tenant_id);
            }
        }
    }
}

/// A poisoned map is still consistent (single insert/update/remove).
fn lock_map<V>(m: &Mutex<HashMap<String, V>>) -> std::sync::MutexGuard<'_, HashMap<String, V>> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A call's claim to its one live stream on this node; given back when dropped.
pub(super) struct LiveCall {
    inner: Arc<RegistryInner>,
    key: (String, String),
}

impl Drop for LiveCall {
    fn drop(&mut self) {
        self.inner
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.key);
    }
}

/// An unsigned upgrade's place among the pending ones; given back when its
/// start is authenticated or the connection ends.
pub struct PendingSlot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.metrics.pending_upgrades.dec();
    }
}

impl SessionRegistry {
    /// A registry for `max_streams` streams and 64 pending upgrades.
    pub fn new(max_streams: usize) -> Self {
        Self::with_limits(max_streams, 64)
    }

    /// A registry for `max_streams` authenticated streams and `max_pending`
    /// unsigned upgrades waiting for their start.
    pub fn with_limits(max_streams: usize, max_pending: usize) -> Self {
        Self {
            inner: Arc::new(RegistryInner {
                capacity: Arc::new(Semaphore::new(max_streams)),
                pending: Arc::new(Semaphore::new(max_pending)),
                live: Mutex::new(HashSet::new()),
                tracker: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                sessions: Mutex::new(HashMap::new()),
                per_tenant: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub(super) fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        if self.inner.shutdown.is_cancelled() {
            return None;
        }
        self.inner.capacity.clone().try_acquire_owned().ok()
    }

    /// One of the places for unsigned upgrades waiting for their start
    /// (counted in `callstream_pending_upgrades` while held).
    pub fn try_pending(&self, metrics: &Arc<crate::metrics::Metrics>) -> Option<PendingSlot> {
        if self.inner.shutdown.is_cancelled() {
            return None;
        }
        let permit = self.inner.pending.clone().try_acquire_owned().ok()?;
        metrics.pending_upgrades.inc();
        Some(PendingSlot {
            _permit: permit,
            metrics: metrics.clone(),
        })
    }

    /// Whether shutdown has begun (no new streams).
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// Cancelled when shutdown begins: sessions wind down on it.
    pub(super) fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Claims the call's one live stream on this node, unless another
    /// stream (starting or open) holds it.
    pub(super) fn try_claim_call(&self, tenant_id: &str, call_sid: &str) -> Option<LiveCall> {
        let key = (tenant_id.to_string(), call_sid.to_string());
        let mut live = self
            .inner
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !live.insert(key.clone()) {
            return None;
        }
        Some(LiveCall {
            inner: self.inner.clone(),
            key,
        })
    }

    /// Takes one of the tenant's stream slots unless `limit` are taken
    /// (check and take are one step, so racing starts cannot both pass).
    pub fn try_reserve_tenant(&self, tenant_id: &str, limit: Option<u32>) -> Option<TenantSlot> {
        let mut map = lock_map(&self.inner.per_tenant);
        let n = map.entry(tenant_id.to_string()).or_insert(0);
        if limit.is_some_and(|limit| *n >= limit) {
            if *n == 0 {
                map.remove(tenant_id);
            }
            return None;
        }
        *n += 1;
        Some(TenantSlot {
            inner: self.inner.clone(),
            tenant_id: tenant_id.to_string(),
        })
    }

    /// Streams of the tenant open (or starting) on this node.
    pub fn tenant_streams(&self, tenant_id: &str) -> u32 {
        lock_map(&self.inner.per_tenant)
            .get(tenant_id)
            .copied()
            .unwrap_or(0)
    }

    pub(super) fn register(
        &self,
        call_id: &str,
        tenant_id: &str,
        outbound: mpsc::Sender<Outbound>,
    ) {
        let entry = Entry {
            tenant_id: tenant_id.to_string(),
            outbound,
        };
        self.lock().insert(call_id.to_string(), entry);
    }

    pub(super) fn unregister(&self, call_id: &str) {
        self.lock().remove(call_id);
    }

    /// The sender of the call's open stream, when it is open here.
    pub fn outbound(&self, tenant_id: &str, call_id: &str) -> Option<mpsc::Sender<Outbound>> {
        self.lock()
            .get(call_id)
            .filter(|e| e.tenant_id == tenant_id)
            .map(|e| e.outbound.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single insert/remove), so a poisoned lock is still usable.
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tracks work that shutdown must wait for (sessions, and the
    /// transcription of calls they ended).
    pub fn tracker(&self) -> TaskTracker {
        self.inner.tracker.clone()
    }

    /// Streams currently registered (authenticated and started).
    pub fn open_calls(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|(call, e)| (e.tenant_id.clone(), call.clone()))
            .collect()
    }

    /// Tells every session to wind down (calls marked interrupted, sockets
    /// closed with 1001) and stops accepting new streams.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
    }

    /// Waits for sessions to finish; `false` if the deadline passed first.
    pub async fn wait(&self, deadline: Duration) -> bool {
        self.wait_until(tokio::time::Instant::now() + deadline)
            .await
    }

    /// [`SessionRegistry::wait`] against a deadline shared with the rest of
    /// shutdown.
    pub async fn wait_until(&self, deadline: tokio::time::Instant) -> bool {
        tokio::time::timeout_at(deadline, self.inner.tracker.wait())
            .await
            .is_ok()
    }

    /// Per-call tasks alive now: sessions and the recording and live
    /// transcription work they started (what shutdown waits for). Zero
    /// when no call is streaming and every ended call is finalised.
    pub fn tracked_tasks(&self) -> usize {
        self.inner.tracker.len()
    }
}
