//! The Twilio Media Streams WebSocket endpoint and the per-stream session
//! that drives the media core, the sinks and the call lifecycle.
//!
//! Authentication happens before anything is allocated:
//! - a request carrying `X-Twilio-Signature` must be signed, over the stream
//!   URL as Twilio called it (public URL with http→ws / https→wss, path and
//!   query), by some tenant's auth token, or the upgrade is refused with 403;
//! - a request without it is upgraded, but must send a `start` carrying a
//!   valid per-call stream token (customParameters `token`, issued by us)
//!   within `stream.start_timeout_secs`, or it is closed.
//!
//! Either way the `start`'s accountSid must belong to the authenticated
//! tenant. Only then is the call row created and a media session set up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::Auth;
use super::error::ApiJson;
use super::quota::{self, At, Quota};
use super::{AppError, AppState};
use crate::media::codec::Codec;
use crate::media::session::{MediaEvent, MediaSession, PcmChunk, SessionConfig};
use crate::media::sink::{SpillingSender, TranscriptionInput};
use crate::media::Track;
use crate::providers::twilio::stream::{self as proto, StreamEvent, StreamTrack};
use crate::providers::twilio::{signature, token};
use crate::store::{CallPolicy, CallStatus, Direction, StreamCall, TwilioCredentials};

/// WebSocket close codes we use (RFC 6455 §7.4.1).
mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
}

// ---------------------------------------------------------------------------
// Sinks

/// Who a stream's audio belongs to, handed to sink factories.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub tenant_id: String,
    pub call_id: String,
    pub stream_sid: String,
    /// What may be done with the call's audio and text (pinned at start).
    pub policy: crate::store::CallPolicy,
}

/// Per-stream consumers of placed audio. Either may be absent. The set is
/// dropped when the stream ends, which is how its consumers learn it.
#[derive(Default)]
pub struct SinkSet {
    /// Lossless: 8 kHz (input-rate) PCM per track, for the recording.
    pub recording: Option<SpillingSender<PcmChunk>>,
    /// Lossless for a call admitted to live captions: 8 kHz PCM and 16 kHz
    /// f32 per track. Past its backlog cap the call loses its live slot
    /// (the sender is dropped, the transcriber told by its failure flag).
    pub transcription: Option<SpillingSender<TranscriptionInput>>,
    /// Raised when the call is to be transcribed from its recording once
    /// it ends (no live slot, or the slot was lost); read by the recording.
    pub after_call: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Held for the stream's life: its drop tells a consumer without audio
    /// (a call without a live slot) that the stream ended.
    pub ended: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Opens the sinks for a new stream (recording and transcription plug in here).
pub trait SinkFactory: Send + Sync {
    fn open(&self, call: &CallContext) -> SinkSet;
}

/// No consumers: audio is placed and resampled, then discarded.
pub struct NoSinks;

impl SinkFactory for NoSinks {
    fn open(&self, _call: &CallContext) -> SinkSet {
        SinkSet::default()
    }
}

// ---------------------------------------------------------------------------
// Session registry

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
    capacity: Arc<Semaphore>,
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

impl SessionRegistry {
    pub fn new(max_streams: usize) -> Self {
        Self {
            inner: Arc::new(RegistryInner {
                capacity: Arc::new(Semaphore::new(max_streams)),
                tracker: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                sessions: Mutex::new(HashMap::new()),
                per_tenant: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        if self.inner.shutdown.is_cancelled() {
            return None;
        }
        self.inner.capacity.clone().try_acquire_owned().ok()
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

    fn register(&self, call_id: &str, tenant_id: &str, outbound: mpsc::Sender<Outbound>) {
        let entry = Entry {
            tenant_id: tenant_id.to_string(),
            outbound,
        };
        self.lock().insert(call_id.to_string(), entry);
    }

    fn unregister(&self, call_id: &str) {
        self.lock().remove(call_id);
    }

    fn outbound(&self, tenant_id: &str, call_id: &str) -> Option<mpsc::Sender<Outbound>> {
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
        tokio::time::timeout(deadline, self.inner.tracker.wait())
            .await
            .is_ok()
    }
}

/// `POST /v1/calls/{id}/stream/messages`: sends media, a mark or a clear back
/// on the call's open bidirectional stream.
pub async fn send_to_stream(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(call_id): Path<String>,
    ApiJson(msg): ApiJson<Outbound>,
) -> Result<StatusCode, AppError> {
    if let Outbound::Media { payload } = &msg {
        let mut buf = Vec::new();
        proto::decode_payload(payload, &mut buf)
            .map_err(|_| AppError::BadRequest("payload is not valid base64".into()))?;
    }
    let tx = state
        .sessions
        .outbound(&who.tenant_id, &call_id)
        .ok_or(AppError::NotFound)?;
    tx.try_send(msg)
        .map_err(|_| AppError::Unavailable("stream is not taking messages"))?;
    Ok(StatusCode::ACCEPTED)
}

// ---------------------------------------------------------------------------
// Upgrade

/// How a connection authenticated at upgrade time.
#[derive(Debug)]
pub enum PreAuth {
    /// `X-Twilio-Signature` matched this tenant's auth token.
    Signed(TwilioCredentials),
    /// No signature: the `start` must carry a stream token.
    Pending,
}

/// `GET /v1/providers/twilio/stream`: the WebSocket upgrade.
pub async fn twilio_upgrade(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(permit) = state.sessions.try_acquire() else {
        state.metrics.rejected("capacity");
        tracing::warn!("stream refused: at capacity or shutting down");
        return (StatusCode::SERVICE_UNAVAILABLE, "stream capacity reached").into_response();
    };
    let auth = match headers.get("x-twilio-signature") {
        None => PreAuth::Pending,
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
                    tracing::warn!(%url, "stream refused: X-Twilio-Signature matches no tenant");
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
            let tracker = state.sessions.inner.tracker.clone();
            tracker.track_future(async move {
                run_session(socket, state, auth).await;
                drop(permit);
            })
        })
}

// ---------------------------------------------------------------------------
// Session

/// Why a session ended, for the call status, the call log and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// `stop` received: the call completed normally.
    Stopped,
    /// Socket closed or failed without `stop`.
    Disconnected,
    /// A message over the size cap.
    Oversized,
    /// The gateway is shutting down.
    Shutdown,
}

impl Ending {
    fn status(self) -> CallStatus {
        match self {
            Ending::Stopped => CallStatus::Completed,
            _ => CallStatus::Interrupted,
        }
    }

    fn log_event(self) -> &'static str {
        match self {
            Ending::Stopped => "stream_stopped",
            Ending::Disconnected => "stream_disconnected",
            Ending::Oversized => "stream_message_too_big",
            Ending::Shutdown => "gateway_shutdown",
        }
    }
}

/// A started, authenticated stream.
struct Active {
    ctx: CallContext,
    media: MediaSession,
    sinks: SinkSet,
    log: CallLog,
    outbound_rx: mpsc::Receiver<Outbound>,
    payload: Vec<u8>,
    recording_failed: bool,
    /// Held while the stream is open (concurrent-stream quota).
    _slot: TenantSlot,
    /// This stream's row in `stream_usage`, closed when it ends.
    usage_id: Option<String>,
}

/// Call-log writes go through one task per stream, in order, so ingest never
/// waits on the database.
struct CallLog {
    tx: mpsc::UnboundedSender<LogOp>,
    task: tokio::task::JoinHandle<()>,
}

enum LogOp {
    Append {
        event: &'static str,
        detail: serde_json::Value,
        at: i64,
    },
    End {
        status: CallStatus,
        at: i64,
    },
}

impl CallLog {
    fn spawn(state: &AppState, ctx: &CallContext) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<LogOp>();
        let store = state.store.clone();
        let (tenant, call) = (ctx.tenant_id.clone(), ctx.call_id.clone());
        let task = tokio::spawn(async move {
            while let Some(op) = rx.recv().await {
                let result = match op {
                    LogOp::Append { event, detail, at } => {
                        store
                            .append_call_log(&tenant, &call, event, &detail, at)
                            .await
                    }
                    LogOp::End { status, at } => {
                        store.end_call(&tenant, &call, status, at).await.map(|_| ())
                    }
                };
                if let Err(e) = result {
                    tracing::error!(call_id = %call, error = %e, "call log write failed");
                }
            }
        });
        Self { tx, task }
    }

    fn append(&self, event: &'static str, detail: serde_json::Value) {
        let at = crate::store::now_ms();
        let _ = self.tx.send(LogOp::Append { event, detail, at });
    }

    /// Ends the call and waits for every queued write to land.
    async fn finish(self, status: CallStatus) {
        let _ = self.tx.send(LogOp::End {
            status,
            at: crate::store::now_ms(),
        });
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// Drives one provider stream to its end. Generic over the socket so it can
/// be tested without one.
pub async fn run_session<S>(mut socket: S, state: AppState, auth: PreAuth)
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message> + Unpin,
{
    let shutdown = state.sessions.inner.shutdown.clone();
    let start_deadline =
        Instant::now() + Duration::from_secs(state.config.stream.start_timeout_secs);
    let mut active: Option<Active> = None;
    let mut text_out = String::new();

    let ending = loop {
        let timer = match &active {
            None => Some(start_deadline),
            Some(a) => a.media.poll_timeout().map(Instant::from_std),
        };
        let outbound = async {
            match active.as_mut() {
                Some(a) => a.outbound_rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ending::Shutdown,
            msg = socket.next() => {
                let received = std::time::Instant::now();
                match msg {
                    None => break Ending::Disconnected,
                    Some(Err(e)) => {
                        if is_too_big(&e) {
                            state.metrics.dropped("oversized", 1);
                            tracing::warn!("stream message over the size cap; closing");
                            let _ = socket
                                .send(close(close_code::TOO_BIG, "message too big"))
                                .await;
                            break Ending::Oversized;
                        }
                        tracing::debug!(error = %e, "stream socket error");
                        break Ending::Disconnected;
                    }
                    Some(Ok(Message::Text(text))) => {
                        match handle_text(&state, &auth, &mut active, text.as_str(), received).await {
                            Flow::Continue => {}
                            Flow::Stop => break Ending::Stopped,
                            Flow::Reject(reason) => {
                                state.metrics.rejected("start_refused");
                                tracing::warn!(%reason, "stream closed before start");
                                close_handshake(&mut socket, close(close_code::POLICY, reason)).await;
                                return;
                            }
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        state.metrics.dropped("binary", 1);
                        tracing::debug!("binary frame ignored: Twilio streams are text");
                    }
                    Some(Ok(Message::Close(_))) => break Ending::Disconnected,
                    Some(Ok(_)) => {} // ping/pong: answered by the socket layer
                }
            }
            Some(out) = outbound => {
                if let Some(a) = &active {
                    write_outbound(&mut text_out, &a.ctx.stream_sid, &out);
                    if socket.send(Message::Text(text_out.as_str().into())).await.is_err() {
                        break Ending::Disconnected;
                    }
                    a.log.append("stream_message_sent", outbound_detail(&out));
                }
            }
            _ = sleep_until_opt(timer) => {
                match active.as_mut() {
                    None => {
                        state.metrics.rejected("start_timeout");
                        tracing::warn!("stream closed: no authenticated start in time");
                        let frame = close(close_code::POLICY, "no authenticated start received in time");
                        close_handshake(&mut socket, frame).await;
                        return;
                    }
                    Some(a) => {
                        a.media.handle_timeout(std::time::Instant::now());
                        drain(&state, a);
                    }
                }
            }
        }
    };

    let Some(mut a) = active else {
        return;
    };
    // Flush whatever audio was accepted before ending, whatever the reason.
    a.media.finish();
    drain(&state, &mut a);
    match ending {
        Ending::Stopped => {
            let _ = socket
                .send(close(close_code::NORMAL, "stream stopped"))
                .await;
        }
        Ending::Shutdown => {
            let _ = socket
                .send(close(close_code::GOING_AWAY, "gateway shutting down"))
                .await;
        }
        Ending::Disconnected | Ending::Oversized => {}
    }
    finish_active(&state, a, ending).await;
}

async fn finish_active(state: &AppState, a: Active, ending: Ending) {
    state.sessions.unregister(&a.ctx.call_id);
    state.metrics.active_streams.dec();
    state.metrics.stream_ended(match ending {
        Ending::Stopped => "completed",
        _ => "interrupted",
    });
    let stats: Vec<_> = Track::ALL
        .iter()
        .map(|t| {
            let s = a.media.stats(*t);
            serde_json::json!({"track": t.as_str(), "frames": s.frames_placed, "silence_samples": s.silence_samples})
        })
        .collect();
    a.log
        .append(ending.log_event(), serde_json::json!({ "tracks": stats }));
    if let Some(rec) = a.sinks.recording {
        if let Err(e) = rec.close().await {
            tracing::error!(call_id = %a.ctx.call_id, error = %e, "recording sink incomplete");
        }
    }
    if ending != Ending::Stopped {
        tracing::info!(call_id = %a.ctx.call_id, reason = ending.log_event(), "stream ended abnormally");
    }
    if let Some(id) = &a.usage_id {
        let now = crate::store::now_ms();
        if let Err(e) = state
            .store
            .close_stream_usage(&a.ctx.tenant_id, id, now)
            .await
        {
            tracing::error!(call_id = %a.ctx.call_id, error = %e, "stream usage not closed");
        }
    }
    a.log.finish(ending.status()).await;
}

enum Flow {
    Continue,
    Stop,
    Reject(&'static str),
}

async fn handle_text(
    state: &AppState,
    auth: &PreAuth,
    active: &mut Option<Active>,
    text: &str,
    received: std::time::Instant,
) -> Flow {
    let event = match proto::parse(text) {
        Ok(e) => e,
        Err(e) => {
            state.metrics.dropped("malformed", 1);
            tracing::debug!(error = %e, "malformed stream message dropped");
            return Flow::Continue;
        }
    };
    match (event, active.as_mut()) {
        (StreamEvent::Media(m), Some(a)) => {
            state.metrics.frames_in.inc();
            if m.stream_sid != a.ctx.stream_sid {
                state.metrics.dropped("stream_mismatch", 1);
                return Flow::Continue;
            }
            if proto::decode_payload(&m.payload, &mut a.payload).is_err() {
                state.metrics.dropped("malformed", 1);
                return Flow::Continue;
            }
            let track = track_of(m.track);
            // A refused frame also comes out as a `Dropped` event, which is
            // where it is counted.
            if let Err(e) = a
                .media
                .handle_frame(received, track, m.timestamp_ms, &a.payload)
            {
                tracing::debug!(error = %e, "undecodable media frame dropped");
            }
            drain(state, a);
            state
                .metrics
                .frame_latency
                .observe(received.elapsed().as_secs_f64());
            Flow::Continue
        }
        (StreamEvent::Media(_), None) => {
            state.metrics.frames_in.inc();
            state.metrics.dropped("before_start", 1);
            Flow::Continue
        }
        (StreamEvent::Connected(_), _) => Flow::Continue,
        (StreamEvent::Start(s), None) => match start(state, auth, &s).await {
            Ok(a) => {
                state
                    .metrics
                    .stream_start_latency
                    .observe(received.elapsed().as_secs_f64());
                *active = Some(a);
                Flow::Continue
            }
            Err(reason) => Flow::Reject(reason),
        },
        (StreamEvent::Start(_), Some(_)) => {
            state.metrics.dropped("duplicate_start", 1);
            tracing::warn!("second start on a stream ignored");
            Flow::Continue
        }
        (StreamEvent::Dtmf(d), Some(a)) if d.stream_sid == a.ctx.stream_sid => {
            // The digit is call content (could be a card number): it goes to
            // the call log, never to tracing.
            a.log.append(
                "dtmf",
                serde_json::json!({"track": track_of(d.track).as_str(), "digit": d.digit.to_string()}),
            );
            Flow::Continue
        }
        (StreamEvent::Mark(m), Some(a)) if m.stream_sid == a.ctx.stream_sid => {
            a.log.append("mark", serde_json::json!({"name": m.name}));
            Flow::Continue
        }
        (StreamEvent::Stop(s), Some(a)) if s.stream_sid == a.ctx.stream_sid => Flow::Stop,
        (StreamEvent::Dtmf(_) | StreamEvent::Mark(_) | StreamEvent::Stop(_), Some(_)) => {
            state.metrics.dropped("stream_mismatch", 1);
            Flow::Continue
        }
        (StreamEvent::Dtmf(_) | StreamEvent::Mark(_) | StreamEvent::Stop(_), None) => {
            state.metrics.dropped("before_start", 1);
            Flow::Continue
        }
        (StreamEvent::Unknown { event }, _) => {
            state.metrics.dropped("unknown_event", 1);
            tracing::info!(event = %event.chars().take(32).collect::<String>(), "unknown stream event ignored");
            Flow::Continue
        }
    }
}

fn track_of(t: StreamTrack) -> Track {
    t.into()
}

/// Authenticates a `start` and sets the stream up. Nothing is allocated until
/// the tenant is known.
async fn start(
    state: &AppState,
    auth: &PreAuth,
    s: &proto::Start<'_>,
) -> Result<Active, &'static str> {
    let tenant_id = match auth {
        PreAuth::Signed(creds) => {
            if creds.account_sid != s.account_sid {
                return Err("accountSid does not match the signing account");
            }
            creds.tenant_id.clone()
        }
        PreAuth::Pending => {
            let Some(tok) = s.custom_parameters.get("token") else {
                return Err("unauthenticated: no X-Twilio-Signature and no stream token");
            };
            let claims = token::verify(
                state.token_secret.expose().as_bytes(),
                tok,
                crate::store::now_ms() / 1000,
            )
            .map_err(|_| "invalid or expired stream token")?;
            if claims.call_sid != s.call_sid {
                return Err("stream token was issued for another call");
            }
            let creds = match state.store.twilio_credentials_for(&s.account_sid).await {
                Ok(c) => c,
                Err(crate::store::StoreError::NotFound) => return Err("unknown account"),
                Err(_) => return Err("temporarily unable to authenticate"),
            };
            if creds.tenant_id != claims.tenant_id {
                return Err("stream token was issued for another account");
            }
            claims.tenant_id
        }
    };
    let codec =
        Codec::from_mime(&s.media_format.encoding).map_err(|_| "unsupported media encoding")?;
    // Quotas, before the call row and the media session exist.
    let settings = state.store.tenant_settings(&tenant_id).await.map_err(|e| {
        tracing::error!(error = %e, "cannot read tenant settings");
        "temporarily unable to start the call"
    })?;
    let Some(slot) = state
        .sessions
        .try_reserve_tenant(&tenant_id, settings.quotas.max_concurrent_streams)
    else {
        quota::rejected(state, Quota::ConcurrentStreams, At::StreamStart);
        return Err(Quota::ConcurrentStreams.message());
    };
    // The call's policy: pinned when it was answered, else resolved now.
    let known = state
        .store
        .find_call_by_external_id(&tenant_id, "twilio", &s.call_sid)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot look the call up");
            "temporarily unable to start the call"
        })?;
    let policy = known
        .and_then(|c| c.policy)
        .unwrap_or_else(|| CallPolicy::from_settings(&settings, crate::store::now_ms()));
    match quota::exhausted_for_call(state, &tenant_id, &settings, &policy, At::StreamStart).await {
        Ok(None) => {}
        Ok(Some(q)) => return Err(q.message()),
        Err(e) => {
            tracing::error!(error = %e, "cannot check quotas");
            return Err("temporarily unable to start the call");
        }
    }
    if s.media_format.channels != 1 {
        return Err("only mono media is supported");
    }
    let direction = match s.custom_parameters.get("direction") {
        Some("outbound") => Direction::Outbound,
        _ => Direction::Inbound,
    };
    let call = state
        .store
        .start_stream_call(
            &tenant_id,
            &StreamCall {
                provider: "twilio",
                external_call_id: &s.call_sid,
                stream_id: &s.stream_sid,
                direction,
                from_number: s.custom_parameters.get("from"),
                to_number: s.custom_parameters.get("to"),
            },
            crate::store::now_ms(),
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot record call start");
            "temporarily unable to start the call"
        })?;
    let policy = match call.policy.clone() {
        Some(p) => p,
        None => state
            .store
            .pin_call_policy(&tenant_id, &call.id, &policy)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot pin the call policy");
                "temporarily unable to start the call"
            })?,
    };
    // The CRM link: the caller (or callee) as a known customer. Best effort:
    // a failure here must not cost the call its media.
    if call.customer_id.is_none() {
        if let Err(e) = state.store.match_call_customer(&tenant_id, &call.id).await {
            tracing::warn!(error = %e, "cannot match the call to a customer");
        }
    }

    let cfg = &state.config.stream;
    let mut media_cfg = SessionConfig::new(codec, s.media_format.sample_rate);
    media_cfg.reorder_window_ms = cfg.reorder_window_ms.into();
    media_cfg.max_hold = Duration::from_millis(cfg.max_hold_ms);
    let media = MediaSession::new(media_cfg).map_err(|_| "unsupported media format")?;

    let usage_id = match state
        .store
        .open_stream_usage(&tenant_id, &call.id, crate::store::now_ms())
        .await
    {
        Ok(id) => Some(id),
        Err(e) => {
            // Accounting must not drop a live call; the gap is logged.
            tracing::error!(call_id = %call.id, error = %e, "stream usage not recorded");
            None
        }
    };
    let ctx = CallContext {
        tenant_id,
        call_id: call.id.clone(),
        stream_sid: s.stream_sid.to_string(),
        policy,
    };
    let log = CallLog::spawn(state, &ctx);
    let tracks: Vec<&str> = s.tracks.iter().map(|t| track_of(*t).as_str()).collect();
    let params: Vec<&str> = s.custom_parameters.iter().map(|(k, _)| k).collect();
    log.append(
        "stream_started",
        serde_json::json!({
            "stream_sid": ctx.stream_sid,
            "tracks": tracks,
            "media_format": {
                "encoding": s.media_format.encoding,
                "sample_rate": s.media_format.sample_rate,
                "channels": s.media_format.channels,
            },
            "custom_parameters": params,
            "auth": match auth { PreAuth::Signed(_) => "signature", PreAuth::Pending => "token" },
            "policy": {
                "record": ctx.policy.record,
                "transcribe_live": ctx.policy.transcribe_live,
                "pii_redaction": ctx.policy.pii_redaction,
            },
        }),
    );
    let (outbound_tx, outbound_rx) = mpsc::channel(64);
    state
        .sessions
        .register(&ctx.call_id, &ctx.tenant_id, outbound_tx);
    state.metrics.active_streams.inc();
    let sinks = state.sinks.open(&ctx);
    tracing::info!(call_id = %ctx.call_id, stream_sid = %ctx.stream_sid, "stream started");
    Ok(Active {
        ctx,
        media,
        sinks,
        log,
        outbound_rx,
        payload: Vec::with_capacity(512),
        recording_failed: false,
        _slot: slot,
        usage_id,
    })
}

/// Moves the media core's output to the sinks, applying each sink's policy.
fn drain(state: &AppState, a: &mut Active) {
    while let Some(event) = a.media.poll_event() {
        match event {
            MediaEvent::Pcm(chunk) => {
                if let Some(asr) = a.sinks.transcription.as_mut() {
                    if asr
                        .send(TranscriptionInput::Narrowband(chunk.clone()))
                        .is_err()
                    {
                        lose_live_slot(a);
                    }
                }
                if let Some(rec) = a.sinks.recording.as_mut() {
                    if rec.send(chunk).is_err() && !a.recording_failed {
                        a.recording_failed = true;
                        state.metrics.dropped("recording_overflow", 1);
                        tracing::error!(call_id = %a.ctx.call_id, "recording sink overflowed");
                        a.log.append(
                            "recording_failed",
                            serde_json::json!({"reason": "overflow"}),
                        );
                    }
                }
            }
            MediaEvent::Wideband(chunk) => {
                if let Some(asr) = a.sinks.transcription.as_mut() {
                    if asr.send(TranscriptionInput::Wideband(chunk)).is_err() {
                        lose_live_slot(a);
                    }
                }
            }
            MediaEvent::Dropped { reason, .. } => state.metrics.dropped(reason.as_str(), 1),
            MediaEvent::GapFilled { .. } => {}
            MediaEvent::GapSkipped {
                track, duration_ms, ..
            } => {
                tracing::warn!(call_id = %a.ctx.call_id, track = track.as_str(), duration_ms, "timestamp jump: gap too long to fill");
            }
        }
    }
}

/// Live transcription fell a whole backlog behind (or went away): the call
/// gives up its live slot rather than shed audio, and is transcribed from
/// its recording after it ends (the transcriber sees its failure flag).
fn lose_live_slot(a: &mut Active) {
    a.sinks.transcription = None;
    tracing::warn!(call_id = %a.ctx.call_id, "live transcription fell behind; the call loses its live slot");
    a.log.append(
        "live_captions_lost",
        serde_json::json!({"reason": "backlog", "after_call": true}),
    );
}

fn write_outbound(out: &mut String, stream_sid: &str, msg: &Outbound) {
    out.clear();
    match msg {
        Outbound::Media { payload } => proto::outbound::media(out, stream_sid, payload),
        Outbound::Mark { name } => proto::outbound::mark(out, stream_sid, name),
        Outbound::Clear => proto::outbound::clear(out, stream_sid),
    }
}

fn outbound_detail(msg: &Outbound) -> serde_json::Value {
    match msg {
        Outbound::Media { payload } => {
            serde_json::json!({"type": "media", "payload_b64_len": payload.len()})
        }
        Outbound::Mark { name } => serde_json::json!({"type": "mark", "name": name}),
        Outbound::Clear => serde_json::json!({"type": "clear"}),
    }
}

/// Sends `frame` and reads (discarding) until the peer's close, briefly, so
/// the peer gets the reason instead of a TCP reset from unread data.
async fn close_handshake<S>(socket: &mut S, frame: Message)
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message> + Unpin,
{
    if socket.send(frame).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(msg)) = socket.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
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

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
