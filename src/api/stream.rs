//! The Twilio Media Streams WebSocket endpoint: authenticates the upgrade
//! and hands the socket, as a stream of provider frames, to the call
//! runtime ([`crate::gateway::session`]); and the route that sends messages
//! back on a call's open stream.
//!
//! Authentication happens before anything is allocated:
//! - a request carrying `X-Twilio-Signature` must be signed, over the stream
//!   URL as Twilio called it (public URL with http→ws / https→wss, path and
//!   query), by some tenant's auth token, or the upgrade is refused with 403;
//! - a request without it is upgraded only while fewer than
//!   `stream.max_pending_upgrades` such connections wait (else 503); its
//!   `start` must then carry a stream token (checked by the session).
//!
//! Signatures are checked against credentials held in memory
//! ([`crate::gateway::twilio_auth`]): a refusal writes nothing and normally
//! reads nothing.

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{Sink, SinkExt, Stream, StreamExt};

use super::auth::Auth;
use super::error::ApiJson;
use super::{AppError, AppState};
use crate::gateway::session::{self, Inbound, OutFrame, PreAuth, SocketError};
pub use crate::gateway::Outbound;
use crate::providers::twilio::signature;
use crate::providers::twilio::stream as proto;

/// `POST /v1/calls/{id}/stream/messages`: sends media, a mark or a clear back
/// on the call's open bidirectional stream.
pub async fn send_to_stream(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(call_id): Path<String>,
    ApiJson(msg): ApiJson<Outbound>,
) -> Result<StatusCode, AppError> {
    match &msg {
        Outbound::Media { payload } => {
            let mut buf = Vec::new();
            proto::decode_payload(payload, &mut buf)
                .map_err(|_| AppError::BadRequest("payload is not valid base64".into()))?;
        }
        Outbound::Mark { name } if name.len() > state.config.stream.max_mark_name_bytes => {
            return Err(AppError::BadRequest(format!(
                "mark name is longer than {} bytes",
                state.config.stream.max_mark_name_bytes
            )));
        }
        Outbound::Mark { .. } | Outbound::Clear => {}
    }
    let tx = state
        .sessions
        .outbound(&who.tenant_id, &call_id)
        .ok_or(AppError::NotFound)?;
    tx.try_send(msg)
        .map_err(|_| AppError::Unavailable("stream is not taking messages"))?;
    Ok(StatusCode::ACCEPTED)
}

/// `GET /v1/providers/twilio/stream`: the WebSocket upgrade.
pub async fn twilio_upgrade(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if state.sessions.is_shutting_down() {
        state.metrics.rejected("shutting_down");
        return (StatusCode::SERVICE_UNAVAILABLE, "gateway shutting down").into_response();
    }
    // A stream slot is only taken once the start is authenticated; an
    // unsigned upgrade meanwhile holds one of the few pending places.
    let mut pending = None;
    let auth = match headers.get("x-twilio-signature") {
        None => {
            let Some(slot) = state.sessions.try_pending(&state.metrics) else {
                state.metrics.rejected("pending_limit");
                tracing::warn!("unsigned stream refused: too many upgrades waiting for a start");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many unauthenticated streams waiting",
                )
                    .into_response();
            };
            pending = Some(slot);
            PreAuth::Pending
        }
        Some(sig) => {
            let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
            let url =
                match signature::stream_url(state.config.public_url().as_str(), path_and_query) {
                    Ok(url) => url,
                    Err(e) => return AppError::Internal(e.to_string()).into_response(),
                };
            let sig = sig.to_str().unwrap_or_default();
            match state.twilio.match_signature(&url, &[], sig).await {
                Ok(Some(creds)) => PreAuth::Signed(creds),
                Ok(None) => {
                    state.metrics.rejected("bad_signature");
                    tracing::debug!(%url, "stream refused: X-Twilio-Signature matches no tenant");
                    return (StatusCode::FORBIDDEN, "invalid X-Twilio-Signature").into_response();
                }
                Err(e) => return AppError::from(e).into_response(),
            }
        }
    };
    let max = state.config.stream.max_message_bytes;
    // tungstenite zero-fills its whole read buffer on every read; its 128 KiB
    // default made memset the top cost per frame. Frames are ~300 bytes, so
    // 8 KiB still takes a bunch of them per read.
    ws.read_buffer_size(8 * 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket: WebSocket| {
            let tracker = state.sessions.tracker();
            tracker.track_future(session::run_session_with(
                provider_socket(socket),
                state.runtime(),
                auth,
                pending,
            ))
        })
}

/// The WebSocket as the runtime sees it: text frames keep axum's buffer (no
/// copy), errors say whether the size cap was hit.
fn provider_socket(
    socket: WebSocket,
) -> impl Stream<Item = Result<Inbound<axum::extract::ws::Utf8Bytes>, SocketError>>
       + Sink<OutFrame, Error = axum::Error>
       + Unpin {
    socket
        .map(|msg| match msg {
            Ok(Message::Text(text)) => Ok(Inbound::Text(text)),
            Ok(Message::Binary(_)) => Ok(Inbound::Binary),
            Ok(Message::Close(_)) => Ok(Inbound::Close),
            Ok(Message::Ping(_) | Message::Pong(_)) => Ok(Inbound::Other),
            Err(e) if is_too_big(&e) => Err(SocketError::TooBig),
            Err(e) => Err(SocketError::Other(e.to_string())),
        })
        .with(|frame: OutFrame| {
            futures::future::ready(Ok::<_, axum::Error>(match frame {
                OutFrame::Text(text) => Message::Text(text.into()),
                OutFrame::Close { code, reason } => Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                })),
            }))
        })
}

fn is_too_big(e: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(err) = source {
        if let Some(tokio_tungstenite::tungstenite::Error::Capacity(_)) =
            err.downcast_ref::<tokio_tungstenite::tungstenite::Error>()
        {
            return true;
        }
        source = err.source();
    }
    e.to_string().contains("Space limit exceeded") || e.to_string().contains("too long")
}
