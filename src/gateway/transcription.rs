//! Live transcription of streaming calls: the transcription sink of each
//! call runs the sans-IO [`LiveTranscriber`] against the shared speech
//! engine, persists finals, and publishes captions to the call's watchers.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use super::sinks::{CallContext, SinkFactory, SinkSet};
use crate::asr::captions::CaptionHub;
use crate::asr::live::{
    CaptionEvent, DecodeKind, DecodeRequest, FinalSegment, Hypothesis, LiveConfig, LiveTranscriber,
};
use crate::asr::scheduler::Permit;
use crate::media::sink::{SpillingSender, TranscriptionInput};
use crate::store::{Segment, Store, TranscriptStatus};

/// What live captioning needs from a speech recogniser.
pub trait SpeechToText: Send + Sync + 'static {
    /// Waits for a decoder slot for work of `kind` (finals are served
    /// before partials). Partials reserve first and take their audio after,
    /// so what they show is as fresh as the queue allows.
    fn reserve(&self, kind: DecodeKind) -> BoxFuture<'static, Permit>;

    /// Transcribes `req.audio` on a reserved slot; hypotheses are timed
    /// relative to the audio. The slot is released when the future ends.
    fn transcribe(
        &self,
        req: &DecodeRequest,
        slot: Permit,
    ) -> BoxFuture<'static, Result<Vec<Hypothesis>, String>>;

    /// Model name recorded with transcripts.
    fn model_name(&self) -> String;
}

/// Who gets live captions. Capacity is a fixed number of slots
/// (`[asr] max_live_calls`), taken first come, first served when a stream
/// starts: under overload one call goes without live captions, cleanly,
/// instead of every call losing a little audio. A call without a slot tells
/// its watchers so and is transcribed from its recording after it ends; an
/// admitted call keeps its slot to the end, never shedding audio, unless it
/// falls a whole backlog behind (then it too changes to after the call).
#[derive(Clone)]
pub struct LiveAdmission {
    slots: Arc<Semaphore>,
}

impl LiveAdmission {
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(capacity)),
        }
    }

    fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }
}

/// What watchers of a call without live captions are told.
fn unavailable(reason: &str) -> CaptionEvent {
    CaptionEvent::Status {
        status: "unavailable".into(),
        reason: reason.into(),
        message: format!(
            "captions unavailable: {reason}; the call is transcribed from its recording after it ends"
        ),
    }
}

/// The transcription sink factory: one live transcriber per admitted call.
pub struct TranscriptionSinks {
    pub engine: Arc<dyn SpeechToText>,
    pub store: Store,
    pub hub: CaptionHub,
    pub config: LiveConfig,
    /// Per-call channel capacity (chunks), before the sender's backlog.
    pub queue: usize,
    /// Keeps shutdown waiting until transcripts are complete.
    pub tracker: TaskTracker,
    /// Caption latency histograms, live-call gauges.
    pub metrics: Arc<crate::metrics::Metrics>,
    pub admission: LiveAdmission,
}

impl SinkFactory for TranscriptionSinks {
    fn open(&self, call: &CallContext) -> SinkSet {
        // Live transcription off for this call: no captions, no transcript.
        if !call.policy.transcribe_live {
            return SinkSet::default();
        }
        let after_call = Arc::new(AtomicBool::new(false));
        self.hub.open(&call.tenant_id, &call.call_id);
        let Some(slot) = self.admission.try_admit() else {
            self.metrics.live_admission("refused");
            after_call.store(true, Ordering::Release);
            self.hub.publish(&call.call_id, unavailable("capacity"));
            tracing::info!(call_id = %call.call_id, "no live caption slot; transcribed after the call");
            // The feed stays open (watchers keep the status) until the stream ends.
            let (ended, stream_end) = oneshot::channel::<()>();
            let (hub, metrics, call_id) =
                (self.hub.clone(), self.metrics.clone(), call.call_id.clone());
            metrics.live_calls.with_label_values(&["waiting"]).inc();
            self.tracker.spawn(async move {
                let _ = stream_end.await;
                metrics.live_calls.with_label_values(&["waiting"]).dec();
                hub.close(&call_id);
            });
            return SinkSet {
                after_call: Some(after_call),
                ended: Some(ended),
                ..SinkSet::default()
            };
        };
        self.metrics.live_admission("admitted");
        self.metrics.live_calls.with_label_values(&["live"]).inc();
        let (tx, rx) = mpsc::channel(self.queue);
        let fell_behind = Arc::new(AtomicBool::new(false));
        let job = CallTranscription {
            engine: self.engine.clone(),
            store: self.store.clone(),
            hub: self.hub.clone(),
            ctx: call.clone(),
            live: LiveTranscriber::new(self.config.clone()),
            metrics: self.metrics.clone(),
            arrivals: Default::default(),
            slot: Some(slot),
            fell_behind: fell_behind.clone(),
            after_call: after_call.clone(),
        };
        self.tracker.spawn(job.run(rx));
        SinkSet {
            transcription: Some(
                SpillingSender::new(
                    tx,
                    SpillingSender::<TranscriptionInput>::DEFAULT_MAX_BACKLOG,
                )
                .with_failure_flag(fell_behind),
            ),
            after_call: Some(after_call),
            ..SinkSet::default()
        }
    }
}

struct CallTranscription {
    engine: Arc<dyn SpeechToText>,
    store: Store,
    hub: CaptionHub,
    ctx: CallContext,
    live: LiveTranscriber,
    metrics: Arc<crate::metrics::Metrics>,
    /// Per track: (end of a narrowband chunk, as an 8 kHz position; when it
    /// arrived), to time captions against the audio they end with.
    arrivals: [std::collections::VecDeque<(u64, std::time::Instant)>; 2],
    /// The call's live slot, held while it is captioned live.
    slot: Option<OwnedSemaphorePermit>,
    /// Raised by the sender when this transcriber fell a backlog behind.
    fell_behind: Arc<AtomicBool>,
    /// Raised to have the call transcribed from its recording afterwards.
    after_call: Arc<AtomicBool>,
}

impl CallTranscription {
    /// Gives up the live slot (see [`LiveAdmission`]): watchers are told,
    /// the call goes to after-call transcription.
    fn lose_slot(&mut self) {
        if self.slot.take().is_some() {
            self.metrics.live_admission("lost");
            self.metrics.live_calls.with_label_values(&["live"]).dec();
            self.after_call.store(true, Ordering::Release);
            self.hub.publish(&self.ctx.call_id, unavailable("backlog"));
        }
    }
}

impl CallTranscription {
    fn note_arrival(&mut self, chunk: &crate::media::PcmChunk) {
        let q = &mut self.arrivals[chunk.track.index()];
        q.push_back((
            chunk.start_sample + chunk.samples.len() as u64,
            std::time::Instant::now(),
        ));
        // A minute of 20 ms chunks is plenty to look back over.
        while q.len() > 3_000 {
            q.pop_front();
        }
    }

    /// How long ago the audio at `end_ms` of `track` arrived.
    fn latency(&self, track: crate::media::Track, end_ms: u64) -> Option<f64> {
        let pos = end_ms * 8;
        self.arrivals[track.index()]
            .iter()
            .find(|(end, _)| *end >= pos)
            .map(|(_, at)| at.elapsed().as_secs_f64())
    }

    fn observe(&self, event: &CaptionEvent) {
        match event {
            CaptionEvent::Partial { track, end_ms, .. } => {
                if let Some(l) = self.latency(*track, *end_ms) {
                    self.metrics.partial_latency.observe(l);
                }
            }
            // Timed per utterance, when its result comes back (see `run`).
            CaptionEvent::Final(_) | CaptionEvent::Status { .. } => {}
        }
    }
}

/// Work waiting for a decoder slot.
enum Pending {
    /// A partial for this track: its audio is taken when the slot comes.
    Partial(crate::media::Track),
    Final(DecodeRequest),
}

impl CallTranscription {
    /// Starts `req` on `slot`; failures yield no hypotheses.
    fn run_decode(
        &self,
        req: &DecodeRequest,
        slot: Permit,
        call: &str,
    ) -> BoxFuture<'static, (u64, Option<Vec<Hypothesis>>)> {
        let fut = self.engine.transcribe(req, slot);
        let (id, kind) = (req.id, req.kind);
        let call_id = call.to_string();
        Box::pin(async move {
            match fut.await {
                Ok(h) => (id, Some(h)),
                Err(e) => {
                    if kind == DecodeKind::Final {
                        tracing::warn!(call_id = %call_id, error = %e, "final decode failed");
                    }
                    (id, None)
                }
            }
        })
    }

    async fn run(mut self, mut rx: mpsc::Receiver<TranscriptionInput>) {
        let (tenant, call) = (self.ctx.tenant_id.clone(), self.ctx.call_id.clone());
        let policy = self.ctx.policy.clone();
        let transcript = match self
            .store
            .create_call_transcript(
                &tenant,
                &call,
                TranscriptStatus::Live,
                &self.engine.model_name(),
                crate::store::now_ms(),
            )
            .await
        {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::error!(call_id = %call, error = %e, "cannot open transcript; captions stay live-only");
                None
            }
        };
        let mut in_flight: FuturesUnordered<BoxFuture<'static, (u64, Option<Vec<Hypothesis>>)>> =
            FuturesUnordered::new();
        // Slots being waited for: partials per track, finals with their request.
        let mut slots: FuturesUnordered<BoxFuture<'static, (Permit, Pending)>> =
            FuturesUnordered::new();
        let mut finals = Vec::new();
        let mut input_open = true;
        loop {
            tokio::select! {
                input = rx.recv(), if input_open => match input {
                    Some(TranscriptionInput::Narrowband(c)) => {
                        self.note_arrival(&c);
                        self.live.handle_narrowband(&c);
                    }
                    Some(TranscriptionInput::Wideband(c)) => self.live.handle_wideband(&c),
                    None => {
                        input_open = false;
                        // The sender gave up (a whole backlog behind): what
                        // came is captioned, the call is done after it ends.
                        if self.fell_behind.load(Ordering::Acquire) {
                            self.lose_slot();
                        }
                        self.live.finish();
                    }
                },
                Some((slot, pending)) = slots.next(), if !slots.is_empty() => {
                    let req = match pending {
                        Pending::Partial(track) => self.live.take_partial(track),
                        Pending::Final(req) => Some(req),
                    };
                    // No request: the utterance ended meanwhile; the slot goes back.
                    if let Some(req) = req {
                        in_flight.push(self.run_decode(&req, slot, &call));
                    }
                }
                Some((id, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.live.handle_result(id, result);
                }
                else => {}
            }
            while let Some(track) = self.live.poll_partial_ready() {
                let slot = self.engine.reserve(DecodeKind::Partial);
                slots.push(Box::pin(
                    async move { (slot.await, Pending::Partial(track)) },
                ));
            }
            // Final latency: end of the audio a batch of finals closes to
            // their text, once per batch.
            while let Some((track, end_ms)) = self.live.poll_final_timing() {
                if let Some(l) = self.latency(track, end_ms) {
                    self.metrics.final_latency.observe(l);
                }
            }
            while let Some(req) = self.live.poll_request() {
                let slot = self.engine.reserve(req.kind);
                slots.push(Box::pin(async move { (slot.await, Pending::Final(req)) }));
            }
            while let Some(mut event) = self.live.poll_event() {
                // Partials too: agents must not see live what is kept from them after.
                match &mut event {
                    CaptionEvent::Final(FinalSegment { text, .. }) => {
                        *text = policy.transcript_text(text);
                    }
                    CaptionEvent::Partial { text, .. } if policy.pii_redaction => {
                        *text = crate::transcript::redact::redact_tentative(text);
                    }
                    CaptionEvent::Partial { .. } | CaptionEvent::Status { .. } => {}
                }
                if let CaptionEvent::Final(f) = &mut event {
                    if let Some(t) = &transcript {
                        let seg = Segment {
                            track: f.track.as_str().to_string(),
                            start_ms: f.start_ms as i64,
                            end_ms: f.end_ms as i64,
                            text: f.text.clone(),
                            confidence: f.confidence.map(f64::from),
                        };
                        if let Err(e) = self
                            .store
                            .add_transcript_segment(&tenant, t, &seg, crate::store::now_ms())
                            .await
                        {
                            tracing::error!(call_id = %call, error = %e, "cannot store a final segment");
                        }
                    }
                    finals.push(f.clone());
                }
                self.observe(&event);
                self.hub.publish(&call, event);
            }
            if !input_open && in_flight.is_empty() && slots.is_empty() && self.live.is_idle() {
                break;
            }
        }
        // Incomplete when the slot was lost: the after-call transcript
        // replaces it.
        let status = if self.slot.take().is_some() {
            self.metrics.live_calls.with_label_values(&["live"]).dec();
            TranscriptStatus::Completed
        } else {
            TranscriptStatus::Failed
        };
        if let Some(t) = &transcript {
            let summary = crate::transcript::summary::summary_json(&finals);
            if let Err(e) = self
                .store
                .finish_transcript(&tenant, t, status, Some(&summary), crate::store::now_ms())
                .await
            {
                tracing::error!(call_id = %call, error = %e, "cannot complete the transcript");
            }
        }
        self.hub.close(&call);
    }
}

impl SpeechToText for crate::asr::engine::AsrEngine {
    fn reserve(&self, kind: DecodeKind) -> BoxFuture<'static, Permit> {
        use crate::asr::scheduler::Priority;
        let priority = match kind {
            DecodeKind::Partial => Priority::LivePartial,
            DecodeKind::Final => Priority::LiveFinal,
        };
        let engine = self.clone();
        Box::pin(async move { engine.reserve(priority).await })
    }

    fn transcribe(
        &self,
        req: &DecodeRequest,
        slot: Permit,
    ) -> BoxFuture<'static, Result<Vec<Hypothesis>, String>> {
        use crate::asr::engine::DecodeOptions;
        let partial = req.kind == DecodeKind::Partial;
        let opts = DecodeOptions {
            // Live windows are short: a fitted encoder window (raised to the
            // engine's floor, redone in full when the text looks like a
            // loop) is cheaper than the full 30 s one.
            audio_ctx: DecodeOptions::fitted_audio_ctx(req.audio.len()),
            single_segment: partial,
            no_context: true,
            // Partials carry word times for LocalAgreement.
            token_timestamps: partial,
            // Deterministic, and no sampled re-runs eating a loaded CPU.
            no_fallback: true,
            ..DecodeOptions::default()
        };
        let engine = self.clone();
        let audio = req.audio.clone();
        Box::pin(async move {
            let t = engine
                .transcribe_reserved(slot, audio, opts)
                .await
                .map_err(|e| e.to_string())?;
            Ok(t.segments
                .into_iter()
                .map(|s| Hypothesis {
                    start_ms: s.start_ms.max(0) as u64,
                    end_ms: s.end_ms.max(0) as u64,
                    text: s.text,
                    confidence: s.confidence,
                    words: s.words,
                })
                .collect())
        })
    }

    fn model_name(&self) -> String {
        let path = &self.config().model_path;
        path.file_stem()
            .and_then(|s| s.to_str())
            .map(|s| s.trim_start_matches("ggml-").to_string())
            .unwrap_or_else(|| path.display().to_string())
    }
}
