//! Caption fan-out: one live feed per call, many watchers.
//!
//! A watcher first gets the finals so far (so a late joiner sees the whole
//! conversation), then live partials and finals. Each watcher has its own
//! bounded queue (a broadcast channel): one that falls behind is told it
//! lagged and is dropped, never slowing the call or other watchers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::live::{CaptionEvent, FinalSegment};

/// Queue depth per watcher before it counts as lagging.
const WATCHER_QUEUE: usize = 256;

struct Feed {
    tenant_id: String,
    /// The latest status, if any, then the finals so far.
    status: Option<CaptionEvent>,
    finals: Vec<FinalSegment>,
    tx: broadcast::Sender<CaptionEvent>,
}

/// All live caption feeds of this node. Cheap to clone.
#[derive(Clone, Default)]
pub struct CaptionHub {
    feeds: Arc<Mutex<HashMap<String, Feed>>>,
}

/// What a new watcher gets: history, then the live feed (`None` when the
/// call is not live on this node).
pub struct Subscription {
    /// What a late watcher missed: the call's status, then its finals.
    pub history: Vec<CaptionEvent>,
    pub live: Option<broadcast::Receiver<CaptionEvent>>,
}

impl CaptionHub {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Feed>> {
        // Each critical section is a single map/vector operation: a
        // poisoned lock cannot hold half-applied state.
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens the feed of a call that starts streaming.
    pub fn open(&self, tenant_id: &str, call_id: &str) {
        let (tx, _) = broadcast::channel(WATCHER_QUEUE);
        self.lock().insert(
            call_id.to_string(),
            Feed {
                tenant_id: tenant_id.to_string(),
                status: None,
                finals: Vec::new(),
                tx,
            },
        );
    }

    /// Publishes an event to every watcher of the call.
    pub fn publish(&self, call_id: &str, event: CaptionEvent) {
        let mut feeds = self.lock();
        if let Some(feed) = feeds.get_mut(call_id) {
            match &event {
                CaptionEvent::Final(f) => feed.finals.push(f.clone()),
                CaptionEvent::Status { .. } => feed.status = Some(event.clone()),
                CaptionEvent::Partial { .. } => {}
            }
            // No watchers is fine.
            let _ = feed.tx.send(event);
        }
    }

    /// Closes the feed: watchers see the channel end after the last event.
    pub fn close(&self, call_id: &str) {
        self.lock().remove(call_id);
    }

    /// Subscribes atomically: no final can fall between history and live.
    pub fn subscribe(&self, tenant_id: &str, call_id: &str) -> Option<Subscription> {
        let feeds = self.lock();
        let feed = feeds.get(call_id).filter(|f| f.tenant_id == tenant_id)?;
        let history = feed
            .status
            .iter()
            .cloned()
            .chain(feed.finals.iter().cloned().map(CaptionEvent::Final))
            .collect();
        Some(Subscription {
            history,
            live: Some(feed.tx.subscribe()),
        })
    }

    /// Number of watchers of a call (for tests and metrics).
    pub fn watchers(&self, call_id: &str) -> usize {
        self.lock()
            .get(call_id)
            .map_or(0, |f| f.tx.receiver_count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Track;

    fn fin(text: &str) -> CaptionEvent {
        CaptionEvent::Final(FinalSegment {
            track: Track::Caller,
            start_ms: 0,
            end_ms: 1,
            text: text.into(),
            confidence: None,
        })
    }

    #[tokio::test]
    async fn late_watchers_get_history_then_live() {
        let hub = CaptionHub::new();
        hub.open("t", "c");
        hub.publish("c", fin("one"));
        let status = CaptionEvent::Status {
            status: "unavailable".into(),
            reason: "capacity".into(),
            message: "m".into(),
        };
        hub.publish("c", status.clone());
        let mut sub = hub.subscribe("t", "c").unwrap();
        // The status first, then the finals so far.
        assert_eq!(sub.history, [status, fin("one")]);
        hub.publish("c", fin("two"));
        let live = sub.live.as_mut().unwrap();
        assert_eq!(live.recv().await.unwrap(), fin("two"));
        assert!(hub.subscribe("other-tenant", "c").is_none());
        hub.close("c");
        assert!(live.recv().await.is_err());
    }

    #[tokio::test]
    async fn a_slow_watcher_lags_alone() {
        let hub = CaptionHub::new();
        hub.open("t", "c");
        let mut slow = hub.subscribe("t", "c").unwrap().live.unwrap();
        let mut fast = hub.subscribe("t", "c").unwrap().live.unwrap();
        for i in 0..(WATCHER_QUEUE + 10) {
            hub.publish("c", fin(&i.to_string()));
            assert_eq!(fast.recv().await.unwrap(), fin(&i.to_string()));
        }
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
    }
}
