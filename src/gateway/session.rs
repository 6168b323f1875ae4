//! The per-call actor: drives one provider stream from its `start` to its
//! end — authentication of the start, the call row, the call log, the
//! media session, the sinks and the drain — over any socket that yields
//! [`Inbound`] frames and takes [`OutFrame`]s (the HTTP layer adapts its
//! WebSocket; tests can use channels).
//!
//! Authentication happens before anything is allocated: a signed upgrade
//! ([`PreAuth::Signed`]) must start with the signing account's accountSid;
//! an unsigned one ([`PreAuth::Pending`]) must send a `start` carrying a
//! valid per-call stream token (customParameters `token`, issued by us for
//! this tenant and callSid) within `stream.pending_start_timeout_ms`. Then
//! the whole `start` is validated (SIDs, parameters, media format:
//! [`validate`]), and only then does the stream take one of
//! `stream.max_streams` slots, the call's one live-stream claim, and a call
//! row. A call that has ended, or already has a stream, is refused and left
//! untouched.
//!
//! Everything a client sends afterwards is bounded per stream (message
//! rate, DTMF rate, mark names, call-log entries and queued writes); each
//! overflow is counted in `callstream_stream_limit_hits_total` and logged
//! once per call.

use std::time::Duration;

use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::call_log::{CallLog, Limit};
use super::quota::{self, At, Quota};
use super::registry::{LiveCall, Outbound, PendingSlot, TenantSlot};
use super::sinks::{CallContext, SinkSet};
use super::Runtime;
use crate::media::session::{MediaEvent, MediaSession, SessionConfig};
use crate::media::sink::TranscriptionInput;
use crate::media::Track;
use crate::providers::twilio::stream::{self as proto, StreamEvent, StreamTrack};
use crate::providers::twilio::{token, validate};
use crate::store::{CallPolicy, CallStatus, Direction, StreamCall, TwilioCredentials};

/// WebSocket close codes we use (RFC 6455 §7.4.1).
mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// A frame read from the provider's socket, transport-neutral. Text is
/// kept in the transport's own buffer type (no copy per frame).
#[derive(Debug)]
pub enum Inbound<T> {
    Text(T),
    Binary,
    Close,
    /// Ping/pong: answered by the socket layer.
    Other,
}

/// Why reading the provider's socket failed.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A message over `stream.max_message_bytes`.
    #[error("message over the size cap")]
    TooBig,
    #[error("{0}")]
    Other(String),
}

/// A frame for the provider's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutFrame {
    Text(String),
    Close { code: u16, reason: &'static str },
}

/// How a connection authenticated at upgrade time.
#[derive(Debug)]
pub enum PreAuth {
    /// `X-Twilio-Signature` matched this tenant's auth token.
    Signed(TwilioCredentials),
    /// No signature: the `start` must carry a stream token.
    Pending,
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

/// Drives one provider stream to its end. Generic over the socket so it can
/// be tested without one.
pub async fn run_session<S, T>(socket: S, state: Runtime, auth: PreAuth)
where
    S: Stream<Item = Result<Inbound<T>, SocketError>> + Sink<OutFrame> + Unpin,
    T: std::ops::Deref<Target = str>,
{
    run_session_with(socket, state, auth, None).await
}

/// [`run_session`], holding an unsigned upgrade's pending place until its
/// start is authenticated.
pub async fn run_session_with<S, T>(
    mut socket: S,
    state: Runtime,
    auth: PreAuth,
    mut pending: Option<PendingSlot>,
) where
    S: Stream<Item = Result<Inbound<T>, SocketError>> + Sink<OutFrame> + Unpin,
    T: std::ops::Deref<Target = str>,
{
    let shutdown = state.sessions.shutdown_token();
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
                if matches!(msg, Some(Ok(Inbound::Text(_) | Inbound::Binary)))
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
                        if matches!(e, SocketError::TooBig) {
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
                    Some(Ok(Inbound::Text(text))) => {
                        match handle_text(&state, &auth, &mut active, &text, received).await {
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
                    Some(Ok(Inbound::Binary)) => {
                        state.metrics.dropped("binary", 1);
                        tracing::debug!("binary frame ignored: Twilio streams are text");
                    }
                    Some(Ok(Inbound::Close)) => break Ending::Disconnected,
                    Some(Ok(_)) => {} // ping/pong: answered by the socket layer
                }
            }
            Some(out) = outbound => {
                if let Some(a) = active.as_mut() {
                    write_outbound(&mut text_out, &a.ctx.stream_sid, &out);
                    if socket.send(OutFrame::Text(text_out.clone())).await.is_err() {
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

async fn finish_active(state: &Runtime, a: Active, ending: Ending) {
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
    state: &Runtime,
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
async fn start(state: &Runtime, auth: &PreAuth, s: &proto::Start<'_>) -> Result<Active, Refusal> {
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
    // The call must be one we know of: announced by our voice webhook or an
    // outbound call (a row), vouched for by a stream token, or found live
    // at the provider.
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
    } else if let PreAuth::Signed(creds) = auth {
        if !cfg.accept_unannounced_calls {
            verify_at_provider(state, creds, &s.call_sid).await?;
        }
    }
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
        quota::rejected(&state.metrics, Quota::ConcurrentStreams, At::StreamStart);
        return Err(Quota::ConcurrentStreams.message().into());
    };
    // The call's policy: pinned when it was answered, else resolved now.
    let policy = known
        .and_then(|c| c.policy)
        .unwrap_or_else(|| CallPolicy::from_settings(&settings, crate::store::now_ms()));
    match quota::exhausted_for_call(
        &state.store,
        &state.metrics,
        &tenant_id,
        &settings,
        &policy,
        At::StreamStart,
    )
    .await
    {
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

/// A signed stream for a call we were never told about: the signature
/// covers the URL only, so it proves the sender once held the auth token's
/// signature, not that this call exists. The provider's REST API says.
async fn verify_at_provider(
    state: &Runtime,
    creds: &crate::store::TwilioCredentials,
    call_sid: &str,
) -> Result<(), Refusal> {
    let account =
        crate::providers::Credentials::new(creds.account_sid.clone(), creds.auth_token.clone());
    match state.provider.fetch_call(&account, call_sid).await {
        Ok(Some(call)) if !call.status.is_terminal() => Ok(()),
        Ok(Some(_)) => Err(CALL_ENDED),
        Ok(None) => {
            tracing::warn!("signed stream for a call the provider does not know: refused");
            Err(UNKNOWN_CALL)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot verify an unannounced call at the provider");
            Err(Refusal {
                metric: "call_unverified",
                ..UNAVAILABLE
            })
        }
    }
}

const UNKNOWN_CALL: Refusal = Refusal {
    code: close_code::POLICY,
    reason: "unknown call: not announced to this gateway and not live at the provider",
    metric: "unknown_call",
};

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
fn drain(state: &Runtime, a: &mut Active) {
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
async fn close_handshake<S, T>(socket: &mut S, frame: OutFrame)
where
    S: Stream<Item = Result<Inbound<T>, SocketError>> + Sink<OutFrame> + Unpin,
    T: std::ops::Deref<Target = str>,
{
    if socket.send(frame).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(msg)) = socket.next().await {
            if matches!(msg, Inbound::Close) {
                break;
            }
        }
    })
    .await;
}

fn close(code: u16, reason: &'static str) -> OutFrame {
    OutFrame::Close { code, reason }
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
