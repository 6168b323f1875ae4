//! `GET /v1/events` (Server-Sent Events) and `GET /v1/events/ws`
//! (WebSocket): the tenant's event stream.
//!
//! Each event is one JSON object `{"id","type","call_id","data","created_at"}`
//! (see [`TenantEvent`]); over SSE its `id:` line is the event id, so a
//! browser's `EventSource` resumes by itself (`Last-Event-ID`); over
//! WebSocket pass `?last_event_id=N` (SSE takes it too). Resuming yields
//! exactly the events after N that are still retained; without an id the
//! stream starts with the next event. Events are filtered by the caller's
//! role: `call.*` need `CALLS_READ`, `transcript.ready` `TRANSCRIPTS_READ`,
//! `recording.ready` `RECORDINGS_READ`. Streams end when the gateway shuts
//! down.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use super::auth::Auth;
use super::error::ApiQuery;
use super::rbac::Permission;
use super::{AppError, AppState};
use crate::store::{EventType, Principal, Role, Store, TenantEvent};

/// Events read from the store at once.
const BATCH: i64 = 200;

/// The permission a role needs to see an event of this type.
pub fn permission_for(kind: EventType) -> Permission {
    match kind {
        EventType::TranscriptReady => Permission::TranscriptsRead,
        EventType::RecordingReady => Permission::RecordingsRead,
        EventType::CallRinging
        | EventType::CallAnswered
        | EventType::CallStarted
        | EventType::CallHeld
        | EventType::CallCompleted
        | EventType::CallInterrupted => Permission::CallsRead,
    }
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Resume after this event id (WebSocket; SSE also reads `Last-Event-ID`).
    last_event_id: Option<i64>,
}

/// Where a stream starts: `Last-Event-ID`, else `?last_event_id=`.
fn resume_point(headers: &HeaderMap, query: &EventsQuery) -> Result<Option<i64>, AppError> {
    match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|id| *id >= 0)
            .map(Some)
            .ok_or_else(|| AppError::BadRequest("Last-Event-ID must be an event id".into())),
        None => match query.last_event_id {
            Some(id) if id < 0 => Err(AppError::BadRequest(
                "last_event_id must be an event id".into(),
            )),
            other => Ok(other),
        },
    }
}

/// The caller's events from `after` (exclusive; `None`: from the next one),
/// live, until the store fails or `closing` fires. Subscribes before the
/// first read, so nothing committed in between is missed.
pub fn tenant_events(
    store: Store,
    who: &Principal,
    after: Option<i64>,
    closing: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = Result<TenantEvent, AppError>> + Send + 'static {
    struct St {
        store: Store,
        tenant: String,
        role: Role,
        cursor: Option<i64>,
        buffer: VecDeque<TenantEvent>,
        notices: tokio::sync::broadcast::Receiver<crate::store::EventNotice>,
        closing: tokio_util::sync::CancellationToken,
        failed: bool,
    }
    let st = St {
        notices: store.subscribe_events(),
        store,
        tenant: who.tenant_id.clone(),
        role: who.role,
        cursor: after,
        buffer: VecDeque::new(),
        closing,
        failed: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        if st.failed {
            return None;
        }
        loop {
            if let Some(e) = st.buffer.pop_front() {
                return Some((Ok(e), st));
            }
            let cursor = match st.cursor {
                Some(c) => c,
                None => match st.store.last_event_id(&st.tenant).await {
                    Ok(id) => *st.cursor.insert(id),
                    Err(e) => {
                        st.failed = true;
                        return Some((Err(e.into()), st));
                    }
                },
            };
            let batch = match st.store.events_after(&st.tenant, cursor, BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    st.failed = true;
                    return Some((Err(e.into()), st));
                }
            };
            if let Some(last) = batch.last() {
                st.cursor = Some(last.id);
                let role = st.role;
                st.buffer.extend(
                    batch
                        .into_iter()
                        .filter(|e| permission_for(e.kind).granted_to(role)),
                );
                continue;
            }
            // Caught up: wait for a notice of this tenant's next event.
            loop {
                tokio::select! {
                    _ = st.closing.cancelled() => return None,
                    notice = st.notices.recv() => match notice {
                        Ok(n) if n.tenant_id == st.tenant && n.id > cursor => break,
                        Ok(_) => continue,
                        // Notices were lost, not events: read again.
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => return None,
                    },
                }
            }
        }
    })
}

/// `GET /v1/events`: Server-Sent Events.
pub async fn sse(
    State(state): State<AppState>,
    Auth(who): Auth,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, AppError> {
    let after = resume_point(&headers, &query)?;
    let events = tenant_events(state.store.clone(), &who, after, state.closing.clone());
    let stream = events
        .take_while(|e| std::future::ready(e.is_ok()))
        .filter_map(|e| async move {
            let e = e.ok()?;
            let data = serde_json::to_string(&e).ok()?;
            Some(Ok::<_, Infallible>(
                Event::default().id(e.id.to_string()).data(data),
            ))
        });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// `GET /v1/events/ws`: the same events as WebSocket text messages.
pub async fn ws(
    State(state): State<AppState>,
    Auth(who): Auth,
    ApiQuery(query): ApiQuery<EventsQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    // A plain GET gets the API's JSON error, not axum's text rejection.
    let upgrade = upgrade
        .map_err(|e| AppError::BadRequest(format!("a WebSocket upgrade is required: {e}")))?;
    let after = resume_point(&HeaderMap::new(), &query)?;
    let events = tenant_events(state.store.clone(), &who, after, state.closing.clone());
    Ok(upgrade.on_upgrade(move |socket| forward_ws(socket, events)))
}

/// Sends events until the client leaves, the stream ends (1001: shutting
/// down) or fails (1011).
async fn forward_ws(
    socket: WebSocket,
    events: impl Stream<Item = Result<TenantEvent, AppError>> + Send + 'static,
) {
    use axum::extract::ws::CloseFrame;
    let (mut tx, mut rx) = socket.split();
    let mut events = std::pin::pin!(events);
    let close = loop {
        tokio::select! {
            incoming = rx.next() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
            next = events.next() => match next {
                Some(Ok(e)) => {
                    let Ok(text) = serde_json::to_string(&e) else { continue };
                    if tx.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Some(Err(_)) => break (1011, "event log unavailable"),
                None => break (1001, "gateway shutting down"),
            },
        }
    };
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code: close.0,
            reason: close.1.into(),
        })))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_a_permission_and_agents_see_no_recordings() {
        for &kind in EventType::ALL {
            assert!(permission_for(kind).granted_to(Role::Admin), "{kind}");
        }
        assert!(!permission_for(EventType::RecordingReady).granted_to(Role::Agent));
        assert!(permission_for(EventType::TranscriptReady).granted_to(Role::Agent));
    }

    #[test]
    fn the_resume_point_comes_from_the_header_first() {
        let q = |id| EventsQuery { last_event_id: id };
        let mut h = HeaderMap::new();
        assert_eq!(resume_point(&h, &q(None)).unwrap(), None);
        assert_eq!(resume_point(&h, &q(Some(7))).unwrap(), Some(7));
        assert!(resume_point(&h, &q(Some(-1))).is_err());
        h.insert("last-event-id", "42".parse().unwrap());
        assert_eq!(resume_point(&h, &q(Some(7))).unwrap(), Some(42));
        h.insert("last-event-id", "x".parse().unwrap());
        assert!(resume_point(&h, &q(None)).is_err());
    }
}
