//! The recording sink: every stream whose call policy records it gets a
//! lossless channel into its own recorder task (see
//! [`crate::recording::recorder`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::sinks::{CallContext, SinkFactory, SinkSet};
use crate::media::sink::SpillingSender;
use crate::media::PcmChunk;
use crate::recording::Recordings;

/// Adds a recording to the sinks another factory opens (transcription, or
/// none), so recording can be switched on and off on its own.
pub struct RecordingSinks {
    pub recordings: Recordings,
    /// Channel capacity in chunks (`stream.recording_queue`); past it the
    /// sender spills to memory, and past a minute of backlog the recording
    /// fails as overflowed.
    pub queue: usize,
    /// Keeps shutdown waiting until recordings are finalised.
    pub tracker: TaskTracker,
    pub next: Arc<dyn SinkFactory>,
    /// Attempts of a queued after-call transcription job (`jobs.max_attempts`).
    pub after_call_attempts: u32,
}

impl SinkFactory for RecordingSinks {
    fn open(&self, call: &CallContext) -> SinkSet {
        let mut sinks = self.next.open(call);
        // The call's policy says no audio may be kept: no recorder, no file.
        if !call.policy.record {
            return sinks;
        }
        let (tx, rx) = mpsc::channel::<PcmChunk>(self.queue);
        let overflowed = Arc::new(AtomicBool::new(false));
        let recording = self.recordings.clone().record_call(
            call.tenant_id.clone(),
            call.call_id.clone(),
            rx,
            overflowed.clone(),
        );
        let after_call = sinks.after_call.clone();
        let (store, tenant, call_id) = (
            self.recordings.store().clone(),
            call.tenant_id.clone(),
            call.call_id.clone(),
        );
        let attempts = self.after_call_attempts;
        let metrics = self.recordings.metrics().clone();
        self.tracker.spawn(async move {
            recording.await;
            // A call without (all of) its live captions is transcribed now.
            if after_call.is_some_and(|f| f.load(Ordering::Acquire)) {
                queue_after_call(&store, &tenant, &call_id, attempts, &metrics).await;
            }
        });
        sinks.recording = Some(
            SpillingSender::new(tx, SpillingSender::<PcmChunk>::DEFAULT_MAX_BACKLOG)
                .with_failure_flag(overflowed),
        );
        sinks
    }
}

/// Queues the transcription of an ended call from its recording; what goes
/// wrong is logged on the call (the call keeps its recording either way).
async fn queue_after_call(
    store: &crate::store::Store,
    tenant: &str,
    call_id: &str,
    attempts: u32,
    metrics: &crate::metrics::Metrics,
) {
    use crate::jobs::transcribe;
    let queued = match store.get_call(tenant, call_id).await {
        Ok(call) => {
            let key = transcribe::after_call_key(call_id);
            transcribe::queue_for_call(store, &call, attempts, Some(&key))
                .await
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    let (event, detail) = match &queued {
        Ok(job) => {
            metrics.after_call_transcriptions.inc();
            (
                "after_call_transcription_queued",
                serde_json::json!({"job_id": job.id}),
            )
        }
        Err(e) => {
            tracing::error!(call_id, error = %e, "cannot queue the after-call transcription");
            (
                "after_call_transcription_failed",
                serde_json::json!({"error": e}),
            )
        }
    };
    if let Err(e) = store
        .append_call_log(tenant, call_id, event, &detail, crate::store::now_ms())
        .await
    {
        tracing::warn!(call_id, error = %e, "cannot log on the call");
    }
}
