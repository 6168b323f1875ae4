//! What a stream's placed audio flows into: the per-call sink set and the
//! factory that opens it (recording and live transcription plug in here).

use std::sync::Arc;

use crate::media::session::PcmChunk;
use crate::media::sink::{SpillingSender, TranscriptionInput};

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
