//! The recording sink: every stream whose call policy records it gets a
//! lossless channel into its own recorder task (see
//! [`crate::recording::recorder`]).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::stream::{CallContext, SinkFactory, SinkSet};
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
        self.tracker.spawn(self.recordings.clone().record_call(
            call.tenant_id.clone(),
            call.call_id.clone(),
            rx,
            overflowed.clone(),
        ));
        sinks.recording = Some(
            SpillingSender::new(tx, SpillingSender::<PcmChunk>::DEFAULT_MAX_BACKLOG)
                .with_failure_flag(overflowed),
        );
        sinks
    }
}
