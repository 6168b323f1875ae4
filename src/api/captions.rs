//! `GET /v1/calls/{id}/captions`: live captions for agents, as a WebSocket
//! (when the request is an upgrade) or as Server-Sent Events.
//!
//! Every message is one JSON object: `{"type":"final",…}`,
//! `{"type":"partial",…}` and `{"type":"status",…}` (a call without live
//! captions says why; see `CaptionEvent`), then `{"type":"end"}` when the
//! call's transcript is complete. A watcher first receives the finals so
//! far. One that cannot keep up is dropped with a clear reason (WebSocket
//! close 4001, or an SSE `lagged` event), never slowing anyone else.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tokio::sync::broadcast;

use super::auth::Auth;
use super::{AppError, AppState};
use crate::asr::captions::Subscription;
use crate::asr::live::{CaptionEvent, FinalSegment};

/// Close code for a watcher dropped for falling behind (application range).
const LAGGED: u16 = 4001;

/// A WebSocket upgrade, if the request is one.
pub struct MaybeUpgrade(Option<WebSocketUpgrade>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeUpgrade {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Infallible> {
        Ok(Self(
            WebSocketUpgrade::from_request_parts(parts, state)
                .await
                .ok(),
        ))
    }
}

pub async fn captions(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(call_id): Path<String>,
    MaybeUpgrade(upgrade): MaybeUpgrade,
) -> Result<Response, AppError> {
    let sub = match state.captions.subscribe(&who.tenant_id, &call_id) {
        Some(sub) => sub,
        None => Subscription {
            history: stored_finals(&state, &who.tenant_id, &call_id)
                .await?
                .into_iter()
                .map(CaptionEvent::Final)
                .collect(),
            live: None,
        },
    };
    Ok(match upgrade {
        Some(ws) => ws
            .on_upgrade(move |socket| watch_ws(socket, sub))
            .into_response(),
        None => Sse::new(sse_stream(sub))
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response(),
    })
}

/// Finals of a call that is not live here (ended, or on another node).
pub async fn stored_finals(
    state: &AppState,
    tenant_id: &str,
    call_id: &str,
) -> Result<Vec<FinalSegment>, AppError> {
    let call = state.store.get_call(tenant_id, call_id).await?;
    let Some(transcript_id) = call.transcript_id.clone() else {
        return Ok(Vec::new());
    };
    // Served text follows the call's policy as it stands now: redaction
    // switched on after the call reaches what was stored before it.
    let policy = state
        .store
        .policy_after_call(tenant_id, Some(&call))
        .await?;
    let segments = state
        .store
        .list_transcript_segments(tenant_id, &transcript_id)
        .await?;
    Ok(segments
        .iter()
        .map(|s| FinalSegment {
            text: policy.transcript_text(&s.text),
            ..FinalSegment::from(s)
        })
        .collect())
}

fn json(event: &CaptionEvent) -> String {
    serde_json::to_string(event).unwrap_or_default()
}

const END: &str = r#"{"type":"end"}"#;

async fn watch_ws(mut socket: WebSocket, sub: Subscription) {
    for event in sub.history {
        if socket
            .send(Message::Text(json(&event).into()))
            .await
            .is_err()
        {
            return;
        }
    }
    if let Some(mut live) = sub.live {
        loop {
            match live.recv().await {
                Ok(event) => {
                    if socket
                        .send(Message::Text(json(&event).into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(missed, "caption watcher too slow; dropped");
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: LAGGED,
                            reason: "watcher too slow: captions skipped; reconnect to resume"
                                .into(),
                        })))
                        .await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }
    let _ = socket.send(Message::Text(END.into())).await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "transcript complete".into(),
        })))
        .await;
}

/// The SSE event name of a caption message (its `type`).
fn event_name(event: &CaptionEvent) -> &'static str {
    match event {
        CaptionEvent::Partial { .. } => "partial",
        CaptionEvent::Final(_) => "final",
        CaptionEvent::Status { .. } => "status",
    }
}

fn sse_stream(sub: Subscription) -> impl Stream<Item = Result<Event, Infallible>> {
    let history = futures::stream::iter(sub.history.into_iter().map(|event| {
        Ok(Event::default()
            .event(event_name(&event))
            .data(json(&event)))
    }));
    // State: Some(Some(rx)) live, Some(None) end to announce, None done.
    let live = futures::stream::unfold(Some(sub.live), |state| async move {
        let Some(mut rx) = state? else {
            return Some((Ok(Event::default().event("end").data(END)), None));
        };
        let event = match rx.recv().await {
            Ok(event) => {
                let name = event_name(&event);
                return Some((Ok(Event::default().event(name).data(json(&event))), Some(Some(rx))));
            }
            Err(broadcast::error::RecvError::Lagged(_)) => Event::default().event("lagged").data(
                r#"{"type":"lagged","reason":"watcher too slow: captions skipped; reconnect to resume"}"#,
            ),
            Err(broadcast::error::RecvError::Closed) => Event::default().event("end").data(END),
        };
        Some((Ok(event), None))
    });
    futures::StreamExt::chain(history, live)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// json (default), txt, vtt or srt.
    format: Option<String>,
}

/// `GET /v1/calls/{id}/transcript?format=json|txt|vtt|srt`: the call's final
/// segments, speakers labelled.
pub async fn transcript(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(call_id): Path<String>,
    super::error::ApiQuery(params): super::error::ApiQuery<ExportParams>,
) -> Result<Response, AppError> {
    use crate::transcript::export::{render, Format, LabelledSegment};
    let (format, content_type) = match params.format.as_deref().unwrap_or("json") {
        "json" => (Format::Json, "application/json"),
        "txt" => (Format::Txt, "text/plain; charset=utf-8"),
        "vtt" => (Format::Vtt, "text/vtt; charset=utf-8"),
        "srt" => (Format::Srt, "application/x-subrip; charset=utf-8"),
        other => {
            return Err(AppError::BadRequest(format!(
                "unknown format `{}`: use json, txt, vtt or srt",
                other.chars().take(16).collect::<String>()
            )))
        }
    };
    let segments: Vec<LabelledSegment> = stored_finals(&state, &who.tenant_id, &call_id)
        .await?
        .into_iter()
        .map(|f| LabelledSegment {
            track: Some(f.track),
            segment: crate::asr::engine::Segment {
                start_ms: f.start_ms as i64,
                end_ms: f.end_ms as i64,
                text: f.text,
                confidence: f.confidence,
                no_speech_prob: 0.0,
                words: Vec::new(),
            },
        })
        .collect();
    Ok((
        [(axum::http::header::CONTENT_TYPE, content_type)],
        render(format, &segments),
    )
        .into_response())
}
