//! The Twilio Media Streams WebSocket endpoint and the per-stream session
//! that drives the media core, the sinks and the call lifecycle.
//!
//! Authentication happens before anything is allocated:
//! - a request carrying `X-Twilio-Signature` must be signed, over the stream
//!   URL as Twilio called it (public URL with http→ws / https→wss, path and
//!   query), by some tenant's auth token, or the upgrade is refused with 403;
//! - a request without it is upgraded only while fewer than
//!   `stream.max_pending_upgrades` such connections wait (else 503), and must
//!   send a `start` carrying a valid per-call stream token (customParameters
//!   `token`, issued by us for this tenant and callSid) within
//!   `stream.pending_start_timeout_ms`, or it is closed.
//!
//! Signatures and tokens are checked against credentials held in memory
//! ([`super::twilio_auth`]): a refusal writes nothing and normally reads
//! nothing. Then the whole `start` is validated (SIDs, parameters, media
//! format: [`validate`]), its accountSid must belong to the authenticated
//! tenant, and only then does the stream take one of `stream.max_streams`
//! slots, the call's one live-stream claim, and a call row. A call that has
//! ended, or already has a stream, is refused and left untouched.
//!
//! Everything a client sends afterwards is bounded per stream (message
//! rate, DTMF rate, mark names, call-log entries and queued writes); each
//! overflow is counted in `callstream_stream_limit_hits_total` and logged
//! once per call.

use std::collections::{HashMap, HashSet};
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
use crate::media::session::{MediaEvent, MediaSession, PcmChunk, SessionConfig};
use crate::media::sink::{SpillingSender, TranscriptionInput};
use crate::media::Track;
use crate::providers::twilio::stream::{self as proto, StreamEvent, StreamTrack};
use crate::providers::twilio::{signature, token, validate};
use crate::store::{CallPolicy, CallStatus, Direction, StreamCall, TwilioCredentials};

/// WebSocket close codes we use (RFC 6455 §7.4.1).
mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const TRY_AGAIN_LATER: u16 = 1013;
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
struct LiveCall {
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
struct PendingSlot {
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

    fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        if self.inner.shutdown.is_cancelled() {
            return None;
        }
        self.inner.capacity.clone().try_acquire_owned().ok()
    }

    fn try_pending(&self) -> Option<OwnedSemaphorePermit> {
        if self.inner.shutdown.is_cancelled() {
            return None;
        }
        self.inner.pending.clone().try_acquire_owned().ok()
    }

    /// Claims the call's one live stream on this node, unless another
    /// stream (starting or open) holds it.
    fn try_claim_call(&self, tenant_id: &str, call_sid: &str) -> Option<LiveCall> {
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
    if state.sessions.inner.shutdown.is_cancelled() {
        state.metrics.rejected("shutting_down");
        return (StatusCode::SERVICE_UNAVAILABLE, "gateway shutting down").into_response();
    }
    // A stream slot is only taken once the start is authenticated; an
    // unsigned upgrade meanwhile holds one of the few pending places.
    let mut pending = None;
    let auth = match headers.get("x-twilio-signature") {
        None => {
            let Some(permit) = state.sessions.try_pending() else {
                state.metrics.rejected("pending_limit");
                tracing::warn!("unsigned stream refused: too many upgrades waiting for a start");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many unauthenticated streams waiting",
                )
                    .into_response();
            };
            state.metrics.pending_upgrades.inc();
            pending = Some(PendingSlot {
                _permit: permit,
                metrics: state.metrics.clone(),
            });
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
            let tracker = state.sessions.inner.tracker.clone();
            tracker.track_future(run_session_with(socket, state, auth, pending))
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
    /// DTMF events the call log takes (`stream.max_dtmf_per_second`).
    dtmf_rate: RateLimit,
    /// Held while the stream is open (concurrent-stream quota).
    _slot: TenantSlot,
    /// One of `stream.max_streams`, held while the stream is open.
    _capacity: OwnedSemaphorePermit,
    /// The call's one live stream on this node.
    _live: LiveCall,
    /// This stream's row in `stream_usage`, closed when it ends.
    usage_id: Option<String>,
}

/// A per-stream bound on what the client controls, counted in
/// `callstream_stream_limit_hits_total{limit}` and logged once per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    MarkName,
    CallLogEntries,
    CallLogQueue,
    DtmfRate,
    MessageRate,
}

impl Limit {
    fn name(self) -> &'static str {
        match self {
            Limit::MarkName => "mark_name",
            Limit::CallLogEntries => "call_log_entries",
            Limit::CallLogQueue => "call_log_queue",
            Limit::DtmfRate => "dtmf_rate",
            Limit::MessageRate => "message_rate",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A token bucket: `rate` events a second sustained, `burst` at once.
/// Sans-IO: the caller passes the time.
#[derive(Debug, Clone)]
struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: std::time::Instant,
}

impl RateLimit {
    fn new(rate: u32, burst: u32, now: std::time::Instant) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Whether one more event is allowed at `now` (and takes its token).
    fn allow(&mut self, now: std::time::Instant) -> bool {
        if now > self.last {
            let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.burst);
            self.last = now;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Queue slots kept for lifecycle entries (start, failures, end), which
/// are never dropped for the sake of client-driven ones.
const LOG_RESERVE: usize = 8;

/// Call-log writes go through one task per stream, in order, so ingest never
/// waits on the database. The queue and the number of entries are bounded
/// (`stream.call_log_queue`, `stream.max_call_log_entries`).
struct CallLog {
    tx: mpsc::Sender<LogOp>,
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<crate::metrics::Metrics>,
    call_id: String,
    entries: u32,
    max_entries: u32,
    /// Limits already logged for this call ([`Limit::bit`]).
    hit: u8,
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
        let cfg = &state.config.stream;
        let (tx, mut rx) = mpsc::channel::<LogOp>(cfg.call_log_queue + LOG_RESERVE);
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
        Self {
            tx,
            task,
            metrics: state.metrics.clone(),
            call_id: ctx.call_id.clone(),
            entries: 0,
            max_entries: cfg.max_call_log_entries,
            hit: 0,
        }
    }

    /// Counts a bound reached; the first time per call it is also logged.
    fn limit_hit(&mut self, limit: Limit) {
        self.metrics.limit_hit(limit.name());
        if self.hit & limit.bit() == 0 {
            self.hit |= limit.bit();
            tracing::warn!(call_id = %self.call_id, limit = limit.name(), "stream limit reached; the excess is dropped");
        }
    }

    /// Queues an entry the client caused (DTMF, marks, messages sent back);
    /// dropped, and counted, past the call's bounds.
    fn append(&mut self, event: &'static str, detail: serde_json::Value) {
        if self.entries >= self.max_entries {
            if self.hit & Limit::CallLogEntries.bit() == 0 {
                let max = self.max_entries;
                self.append_lifecycle(
                    "call_log_truncated",
                    serde_json::json!({ "max_entries": max }),
                );
            }
            self.limit_hit(Limit::CallLogEntries);
            return;
        }
        if self.tx.capacity() <= LOG_RESERVE {
            self.limit_hit(Limit::CallLogQueue);
            return;
        }
        self.entries += 1;
        self.send(event, detail);
    }

    /// Queues a lifecycle entry: it may use the reserve and is not counted
    /// against `max_call_log_entries`.
    fn append_lifecycle(&mut self, event: &'static str, detail: serde_json::Value) {
        self.send(event, detail);
    }

    fn send(&mut self, event: &'static str, detail: serde_json::Value) {
        let at = crate::store::now_ms();
        if self
            .tx
            .try_send(LogOp::Append { event, detail, at })
            .is_err()
        {
            self.limit_hit(Limit::CallLogQueue);
        }
    }

    /// Writes the last entry, ends the call and waits for every queued
    /// write to land (waiting for room: these are never dropped).
    async fn finish(self, last: (&'static str, serde_json::Value), status: CallStatus) {
        let at = crate::store::now_ms();
        let (event, detail) = last;
        let _ = self.tx.send(LogOp::Append { event, detail, at }).await;
        let _ = self.tx.send(LogOp::End { status, at }).await;
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// Drives one provider stream to its end. Generic over the socket so it can
/// be tested without one.
pub async fn run_session<S>(socket: S, state: AppState, auth: PreAuth)
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message> + Unpin,
{
    run_session_with(socket, state, auth, None).await
}

/// [`run_session`], holding an unsigned upgrade's pending place until its
/// start is authenticated.
async fn run_session_with<S>(
    mut socket: S,
    state: AppState,
    auth: PreAuth,
    mut pending: Option<PendingSlot>,
) where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message> + Unpin,
{
    let shutdown = state.sessions.inner.shutdown.clone();
    let cfg = &state.config.stream;
    let start_timeout = match auth {
        PreAuth::Signed(_) => Duration::from_secs(cfg.start_timeout_secs),
        PreAuth::Pending => Duration::from_millis(cfg.pending_start_timeout_ms),
    };
    let start_deadline = Instant::now() + start_timeout;
    let mut messages = RateLimit::new(
        cfg.max_messages_per_second,
        cfg.message_burst,
        std::time::Instant::now(),
    );
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
                if matches!(msg, Some(Ok(Message::Text(_) | Message::Binary(_))))
                    && !messages.allow(received)
                {
                    match active.as_mut() {
                        Some(a) => a.log.limit_hit(Limit::MessageRate),
                        None => state.metrics.limit_hit(Limit::MessageRate.name()),
                    }
                    continue;
                }
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
                            Flow::Continue => {
                                if active.is_some() {
                                    // Authenticated: no longer pending.
                                    pending = None;
                                }
                            }
                            Flow::Stop => break Ending::Stopped,
                            Flow::Reject(r) => {
                                state.metrics.rejected(r.metric);
                                tracing::warn!(reason = r.reason, "stream closed before start");
                                close_handshake(&mut socket, close(r.code, r.reason)).await;
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
                if let Some(a) = active.as_mut() {
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
                        tracing::debug!("stream closed: no authenticated start in time");
                        let frame = close(close_code::POLICY, "no authenticated start received in time");
                        drop(pending.take());
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

    drop(pending);
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
    a.log
        .finish(
            (ending.log_event(), serde_json::json!({ "tracks": stats })),
            ending.status(),
        )
        .await;
}

/// Why a stream is closed before it starts: the close frame and the
/// rejection metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refusal {
    code: u16,
    reason: &'static str,
    /// `callstream_stream_rejections_total{reason}`.
    metric: &'static str,
}

impl Refusal {
    /// Not allowed (authentication, quota, the call's state): 1008.
    const fn policy(reason: &'static str) -> Self {
        Self {
            code: close_code::POLICY,
            reason,
            metric: "start_refused",
        }
    }

    const fn with_metric(self, metric: &'static str) -> Self {
        Self { metric, ..self }
    }
}

impl From<&'static str> for Refusal {
    fn from(reason: &'static str) -> Self {
        Refusal::policy(reason)
    }
}

enum Flow {
    Continue,
    Stop,
    Reject(Refusal),
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
            Err(refusal) => Flow::Reject(refusal),
        },
        (StreamEvent::Start(_), Some(_)) => {
            state.metrics.dropped("duplicate_start", 1);
            tracing::warn!("second start on a stream ignored");
            Flow::Continue
        }
        (StreamEvent::Dtmf(d), Some(a)) if d.stream_sid == a.ctx.stream_sid => {
            if !a.dtmf_rate.allow(received) {
                a.log.limit_hit(Limit::DtmfRate);
                return Flow::Continue;
            }
            // The digit is call content (could be a card number): it goes to
            // the call log, never to tracing.
            a.log.append(
                "dtmf",
                serde_json::json!({"track": track_of(d.track).as_str(), "digit": d.digit.to_string()}),
            );
            Flow::Continue
        }
        (StreamEvent::Mark(m), Some(a)) if m.stream_sid == a.ctx.stream_sid => {
            let max = state.config.stream.max_mark_name_bytes;
            let detail = if m.name.len() > max {
                a.log.limit_hit(Limit::MarkName);
                let mut end = max;
                while !m.name.is_char_boundary(end) {
                    end -= 1;
                }
                serde_json::json!({"name": &m.name[..end], "truncated": true})
            } else {
                serde_json::json!({"name": m.name})
            };
            a.log.append("mark", detail);
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

/// Why a `start` failed validation, as a close reason (field names only).
fn invalid_start(e: validate::StartError) -> Refusal {
    use validate::StartError as E;
    let reason = match e {
        E::BadSid("accountSid") => "start.accountSid is not a Twilio SID",
        E::BadSid("callSid") => "start.callSid is not a Twilio SID",
        E::BadSid(_) => "start.streamSid is not a Twilio SID",
        E::TooManyParameters => "start.customParameters has too many entries",
        E::ParameterTooLong => "start.customParameters has a name or value that is too long",
        E::Encoding => "unsupported media encoding",
        E::SampleRate => "unsupported sample rate",
        E::Channels => "only mono media is supported",
        E::Tracks => "start.tracks must name one or two distinct tracks",
    };
    Refusal::policy(reason).with_metric("invalid_start")
}

const UNAVAILABLE: Refusal = Refusal {
    code: close_code::TRY_AGAIN_LATER,
    reason: "temporarily unable to start the call",
    metric: "start_failed",
};

/// Authenticates a `start` and sets the stream up. Nothing is allocated
/// (no stream slot, no row, no media session) until the whole start is
/// valid and the tenant known; a refusal writes nothing.
async fn start(state: &AppState, auth: &PreAuth, s: &proto::Start<'_>) -> Result<Active, Refusal> {
    let cfg = &state.config.stream;
    let valid = validate::check_start(
        s,
        validate::ParamLimits {
            max_count: cfg.max_custom_parameters,
            max_bytes: cfg.max_custom_parameter_bytes,
        },
    )
    .map_err(invalid_start)?;
    let tenant_id = match auth {
        PreAuth::Signed(creds) => {
            if creds.account_sid != s.account_sid {
                return Err("accountSid does not match the signing account".into());
            }
            creds.tenant_id.clone()
        }
        PreAuth::Pending => {
            let Some(tok) = s.custom_parameters.get(token::TOKEN_PARAMETER) else {
                return Err("unauthenticated: no X-Twilio-Signature and no stream token".into());
            };
            let claims = token::verify(
                state.token_secret.expose().as_bytes(),
                tok,
                crate::store::now_ms() / 1000,
            )
            .map_err(|_| Refusal::from("invalid or expired stream token"))?;
            if claims.call_sid != s.call_sid {
                return Err("stream token was issued for another call".into());
            }
            let creds = match state.twilio.for_account(&s.account_sid).await {
                Ok(Some(c)) => c,
                Ok(None) => return Err("unknown account".into()),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read tenant credentials");
                    return Err(UNAVAILABLE);
                }
            };
            if creds.tenant_id != claims.tenant_id {
                return Err("stream token was issued for another account".into());
            }
            claims.tenant_id
        }
    };
    // Authenticated: now it may take a stream slot and the call's claim.
    let Some(capacity) = state.sessions.try_acquire() else {
        tracing::warn!("stream refused: at capacity or shutting down");
        return Err(Refusal {
            code: close_code::TRY_AGAIN_LATER,
            reason: "stream capacity reached",
            metric: "capacity",
        });
    };
    let Some(live) = state.sessions.try_claim_call(&tenant_id, &s.call_sid) else {
        return Err(STREAM_LIVE);
    };
    // Quotas, before the call row and the media session exist.
    let settings = state.store.tenant_settings(&tenant_id).await.map_err(|e| {
        tracing::error!(error = %e, "cannot read tenant settings");
        UNAVAILABLE
    })?;
    let Some(slot) = state
        .sessions
        .try_reserve_tenant(&tenant_id, settings.quotas.max_concurrent_streams)
    else {
        quota::rejected(state, Quota::ConcurrentStreams, At::StreamStart);
        return Err(Quota::ConcurrentStreams.message().into());
    };
    // The call's policy: pinned when it was answered, else resolved now.
    let known = state
        .store
        .find_call_by_external_id(&tenant_id, "twilio", &s.call_sid)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot look the call up");
            UNAVAILABLE
        })?;
    if let Some(call) = &known {
        if call.status.is_terminal() {
            return Err(CALL_ENDED);
        }
        if call.stream_id.is_some() {
            return Err(STREAM_LIVE);
        }
    }
    let policy = known
        .and_then(|c| c.policy)
        .unwrap_or_else(|| CallPolicy::from_settings(&settings, crate::store::now_ms()));
    match quota::exhausted_for_call(state, &tenant_id, &settings, &policy, At::StreamStart).await {
        Ok(None) => {}
        Ok(Some(q)) => return Err(q.message().into()),
        Err(e) => {
            tracing::error!(error = %e, "cannot check quotas");
            return Err(UNAVAILABLE);
        }
    }
    let mut media_cfg = SessionConfig::new(valid.codec, valid.sample_rate);
    media_cfg.reorder_window_ms = cfg.reorder_window_ms.into();
    media_cfg.max_hold = Duration::from_millis(cfg.max_hold_ms);
    let media = MediaSession::new(media_cfg)
        .map_err(|_| Refusal::policy("unsupported media format").with_metric("invalid_start"))?;
    let direction = match s.custom_parameters.get("direction") {
        Some("outbound") => Direction::Outbound,
        _ => Direction::Inbound,
    };
    let claim = state
        .store
        .claim_stream_call(
            &tenant_id,
            &StreamCall {
                provider: "twilio",
                external_call_id: &s.call_sid,
                stream_id: &s.stream_sid,
                direction,
                from_number: valid.from.as_ref().map(|n| n.as_str()),
                to_number: valid.to.as_ref().map(|n| n.as_str()),
            },
            crate::store::now_ms(),
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot record call start");
            UNAVAILABLE
        })?;
    let call = match claim {
        crate::store::StreamClaim::Started(call) => *call,
        crate::store::StreamClaim::Ended(_) => return Err(CALL_ENDED),
        crate::store::StreamClaim::Taken => return Err(STREAM_LIVE),
    };
    let policy = match call.policy.clone() {
        Some(p) => p,
        None => state
            .store
            .pin_call_policy(&tenant_id, &call.id, &policy)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot pin the call policy");
                UNAVAILABLE
            })?,
    };
    // The CRM link: the caller (or callee) as a known customer. Best effort:
    // a failure here must not cost the call its media.
    if call.customer_id.is_none() {
        if let Err(e) = state.store.match_call_customer(&tenant_id, &call.id).await {
            tracing::warn!(error = %e, "cannot match the call to a customer");
        }
    }

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
    let mut log = CallLog::spawn(state, &ctx);
    let tracks: Vec<&str> = s.tracks.iter().map(|t| track_of(*t).as_str()).collect();
    let params: Vec<&str> = s.custom_parameters.iter().map(|(k, _)| k).collect();
    log.append_lifecycle(
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
        dtmf_rate: RateLimit::new(
            cfg.max_dtmf_per_second,
            cfg.max_dtmf_per_second,
            std::time::Instant::now(),
        ),
        _slot: slot,
        _capacity: capacity,
        _live: live,
        usage_id,
    })
}

const CALL_ENDED: Refusal = Refusal {
    code: close_code::POLICY,
    reason: "the call has ended",
    metric: "call_ended",
};

const STREAM_LIVE: Refusal = Refusal {
    code: close_code::POLICY,
    reason: "the call already has a live stream",
    metric: "stream_live",
};

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
                        a.log.append_lifecycle(
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

#[cfg(test)]
mod limit_tests {
    use super::RateLimit;
    use std::time::{Duration, Instant};

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10, 3, t0);
        assert_eq!((0..5).filter(|_| r.allow(t0)).count(), 3);
        // 100 ms at 10/s refills one token; time going backwards refills none.
        assert!(r.allow(t0 + Duration::from_millis(100)));
        assert!(!r.allow(t0 + Duration::from_millis(100)));
        assert!(!r.allow(t0));
        // A long pause refills up to the burst only.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| r.allow(later)).count(), 3);
    }
}
