//! The per-call recording task: placed PCM chunks in (from the stream's
//! lossless recording sink), an encrypted stereo WAV out.
//!
//! Lifecycle: a `recording` row linked from the call, a spool written as
//! audio arrives, then on the stream's end the spool is finalised and the
//! row becomes `completed` (everything received is in the file) or `failed`
//! (the sink overflowed, so the end is missing; the file keeps what came).
//! If storage, keys or the database fail, the recording is marked `failed`,
//! counted in `callstream_recording_failures_total{reason}` and explained
//! in the call log, and the task keeps draining its channel so the call
//! and its transcription carry on unaffected.
//!
//! Crash loss: the spool is sealed in records of at most
//! [`SEAL_AUDIO_MS`] of audio, and a record with any audio is also sealed
//! once it has waited [`SEAL_WALL`] (frames can arrive slowly), so a kill
//! -9 loses at most that half second plus what the interleaver holds back
//! (half a second at most): the last second of audio.
//!
//! Interleaving and small writes run on the async task; a write that seals
//! a record (encryption plus a storage write) and finalisation run on the
//! blocking pool.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::crypt;
use super::interleave::{Interleaver, FRAME_BYTES};
use super::spool::SpoolWriter;
use super::{keys, wav, ObjectKeys, RecordingError, Recordings};
use crate::media::PcmChunk;
use crate::store::{NewRecording, RecordingOutcome, RecordingSource, RecordingStatus};

/// Frames interleaved per write: about half a second at 8 kHz, so a long
/// zero-filled gap is written in bounded pieces.
const FRAMES_PER_WRITE: usize = 4096;

/// Rate assumed for a call that ends before any audio arrives.
const DEFAULT_RATE: u32 = 8000;

/// Audio per spool record: what a crash can lose of what reached the
/// recorder (with the interleaver's half-second lag, one second in all).
pub const SEAL_AUDIO_MS: u64 = 500;

/// Longest a record with audio in it waits before it is sealed anyway.
pub const SEAL_WALL: std::time::Duration = std::time::Duration::from_millis(500);

/// Spool record size at `sample_rate` (stereo 16-bit frames).
fn record_bytes(sample_rate: u32) -> usize {
    (u64::from(sample_rate) * SEAL_AUDIO_MS / 1000) as usize * FRAME_BYTES
}

/// Which failure, for the metric's bounded label.
#[derive(Debug, Clone, Copy)]
enum Reason {
    Storage,
    Key,
    Database,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Storage => "storage",
            Reason::Key => "key",
            Reason::Database => "database",
        }
    }

    fn of(e: &RecordingError) -> Self {
        match e {
            RecordingError::Key(_) => Reason::Key,
            RecordingError::Store(_) | RecordingError::NotFound => Reason::Database,
            _ => Reason::Storage,
        }
    }
}

struct Live {
    recording_id: String,
    key_id: String,
    keys: ObjectKeys,
    recipient: age::x25519::Recipient,
    /// `None` only while a write runs on the blocking pool.
    spool: Option<SpoolWriter>,
    interleaver: Option<Interleaver>,
    buf: Vec<u8>,
    /// When the pending (unsealed) audio must be sealed; `None` when
    /// nothing is pending.
    seal_by: Option<tokio::time::Instant>,
}

impl Recordings {
    /// Records one call from `rx` until the channel closes. `overflowed` is
    /// the sink's failure flag (the audio stopped early). Never fails: what
    /// goes wrong is recorded on the recording, the call log and metrics.
    pub async fn record_call(
        self,
        tenant_id: String,
        call_id: String,
        mut rx: mpsc::Receiver<PcmChunk>,
        overflowed: Arc<AtomicBool>,
    ) {
        let mut live = match self.begin(&tenant_id, &call_id).await {
            Ok(l) => Some(l),
            Err((id, e)) => {
                self.fail(&tenant_id, &call_id, id.as_deref(), Reason::of(&e), &e)
                    .await;
                None
            }
        };
        loop {
            let seal_by = live.as_ref().and_then(|l| l.seal_by);
            let next = match seal_by {
                Some(at) => match tokio::time::timeout_at(at, rx.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        // Audio waited long enough unsealed: seal it now.
                        if let Some(l) = live.as_mut() {
                            if let Err(e) = seal(l).await {
                                let l = live.take();
                                self.fail_live(&tenant_id, &call_id, l, &e).await;
                            }
                        }
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            let Some(chunk) = next else { break };
            let Some(l) = live.as_mut() else {
                continue; // failed: keep draining so the call goes on
            };
            if let Err(e) = self.push(l, chunk).await {
                let l = live.take();
                self.fail_live(&tenant_id, &call_id, l, &e).await;
            }
        }
        if let Some(l) = live {
            self.end(&tenant_id, &call_id, l, overflowed.load(Ordering::Acquire))
                .await;
        }
    }

    async fn begin(
        &self,
        tenant_id: &str,
        call_id: &str,
    ) -> Result<Live, (Option<String>, RecordingError)> {
        let (key, recipient) = self
            .keys()
            .active(tenant_id)
            .await
            .map_err(|e| (None, e.into()))?;
        let id = crate::store::new_id();
        let now = crate::store::now_ms();
        let keys = ObjectKeys::new(tenant_id, &id, now);
        let new = NewRecording {
            id: &id,
            call_id: Some(call_id),
            source: RecordingSource::Stream,
            status: RecordingStatus::Recording,
            format: "wav",
            channels: 2,
            sample_rate: DEFAULT_RATE,
            storage_path: &keys.object,
            key_id: &key.id,
            algorithm: keys::ALGORITHM,
        };
        self.store()
            .create_recording(tenant_id, &new, now)
            .await
            .map_err(|e| (None, e.into()))?;
        let storage = self.storage().clone();
        let spool_key = keys.spool.clone();
        let r = recipient.clone();
        let spool = tokio::task::spawn_blocking(move || {
            SpoolWriter::create(storage.as_ref(), &spool_key, &r, record_bytes(DEFAULT_RATE))
        })
        .await
        .map_err(|e| (Some(id.clone()), e.into()))?
        .map_err(|e| (Some(id.clone()), e))?;
        let detail = serde_json::json!({"recording_id": id, "key_id": key.id});
        if let Err(e) = self
            .store()
            .append_call_log(tenant_id, call_id, "recording_started", &detail, now)
            .await
        {
            tracing::warn!(call_id, error = %e, "cannot log the recording start");
        }
        Ok(Live {
            recording_id: id,
            key_id: key.id,
            keys,
            recipient,
            spool: Some(spool),
            interleaver: None,
            buf: Vec::new(),
            seal_by: None,
        })
    }

    async fn push(&self, l: &mut Live, chunk: PcmChunk) -> Result<(), RecordingError> {
        if l.interleaver.is_none() {
            let limit = self.max_duration_secs() * u64::from(chunk.sample_rate);
            l.interleaver = Some(Interleaver::new(chunk.sample_rate, limit));
            if let Some(spool) = l.spool.as_mut() {
                spool.set_record_bytes(record_bytes(chunk.sample_rate));
            }
            let header = wav::pcm16_header(2, chunk.sample_rate, u32::MAX);
            l.buf.clear();
            l.buf.extend_from_slice(&header);
            write(l).await?;
        }
        if let Some(i) = l.interleaver.as_mut() {
            if !i.push(chunk) {
                tracing::warn!(recording_id = %l.recording_id, "chunk at another sample rate not recorded");
            }
        }
        drain(l).await
    }

    async fn end(&self, tenant_id: &str, call_id: &str, mut l: Live, overflowed: bool) {
        let result = async {
            if let Some(i) = l.interleaver.as_mut() {
                i.finish();
            } else {
                l.buf.clear();
                l.buf
                    .extend_from_slice(&wav::pcm16_header(2, DEFAULT_RATE, u32::MAX));
                write(&mut l).await?;
            }
            drain(&mut l).await?;
            let spool = l
                .spool
                .take()
                .ok_or_else(|| RecordingError::Task("spool writer lost".into()))?;
            let data_bytes = spool.plaintext_len().saturating_sub(wav::HEADER_LEN as u64);
            let identity = self.keys().identity(tenant_id, &l.key_id).await?;
            let storage = self.storage().clone();
            let (keys, recipient) = (l.keys.clone(), l.recipient.clone());
            tokio::task::spawn_blocking(move || {
                spool.finish()?;
                crypt::finalise(
                    storage.as_ref(),
                    &keys.spool,
                    &keys.object,
                    &identity.identity,
                    &recipient,
                    Some(data_bytes),
                    (2, DEFAULT_RATE),
                )
            })
            .await?
        }
        .await;
        let fin = match result {
            Ok(f) => f,
            Err(e) => return self.fail_live(tenant_id, call_id, Some(l), &e).await,
        };
        let status = if overflowed {
            RecordingStatus::Failed
        } else {
            RecordingStatus::Completed
        };
        let outcome = RecordingOutcome {
            channels: Some(fin.channels),
            sample_rate: Some(fin.sample_rate),
            duration_ms: Some(fin.duration_ms() as i64),
            bytes: Some(fin.wav_bytes() as i64),
            stored_bytes: Some(fin.stored_bytes as i64),
        };
        let metrics = self.metrics();
        let (late, truncated) = l
            .interleaver
            .as_ref()
            .map_or((0, false), |i| (i.late_samples(), i.truncated()));
        let mut detail = serde_json::json!({
            "recording_id": l.recording_id,
            "duration_ms": fin.duration_ms(),
            "bytes": fin.wav_bytes(),
            "stored_bytes": fin.stored_bytes,
            "late_samples_dropped": late,
            "truncated_at_max_duration": truncated,
        });
        let event = if overflowed {
            detail["reason"] =
                "overflow: the recording writer fell behind; the end is missing".into();
            "recording_failed"
        } else {
            "recording_completed"
        };
        // Metrics and the log first: whoever sees the final status also
        // finds why.
        metrics.recording_bytes.inc_by(fin.stored_bytes);
        metrics
            .recording_seconds
            .inc_by(fin.duration_ms() as f64 / 1000.0);
        if overflowed {
            metrics.recording_failed("overflow");
            metrics.recording_ended("failed");
        } else {
            metrics.recording_ended("completed");
        }
        let now = crate::store::now_ms();
        if let Err(e) = self
            .store()
            .append_call_log(tenant_id, call_id, event, &detail, now)
            .await
        {
            tracing::warn!(call_id, error = %e, "cannot log the recording end");
        }
        if let Err(e) = self
            .store()
            .finish_recording(tenant_id, &l.recording_id, status, &outcome, now)
            .await
        {
            // The file is complete; startup recovery finds the row still
            // `recording`, sees the finished object and completes it.
            tracing::error!(recording_id = %l.recording_id, error = %e, "cannot mark the recording finished");
            return;
        }
        tracing::info!(call_id, recording_id = %l.recording_id, duration_ms = fin.duration_ms(), status = status.as_str(), "recording finalised");
    }

    async fn fail_live(
        &self,
        tenant_id: &str,
        call_id: &str,
        live: Option<Live>,
        e: &RecordingError,
    ) {
        let id = live.as_ref().map(|l| l.recording_id.clone());
        if let Some(mut l) = live {
            // Whatever was written is useless without its end: remove it.
            let spool = l.spool.take();
            let storage = self.storage().clone();
            let keys = l.keys.clone();
            let _ = tokio::task::spawn_blocking(move || {
                drop(spool);
                let _ = storage.delete(&keys.spool);
                let _ = storage.delete(&keys.object);
            })
            .await;
        }
        self.fail(tenant_id, call_id, id.as_deref(), Reason::of(e), e)
            .await;
    }

    async fn fail(
        &self,
        tenant_id: &str,
        call_id: &str,
        recording_id: Option<&str>,
        reason: Reason,
        e: &RecordingError,
    ) {
        let metrics = self.metrics();
        metrics.recording_failed(reason.as_str());
        metrics.recording_ended("failed");
        tracing::error!(call_id, recording_id = recording_id.unwrap_or(""), reason = reason.as_str(), error = %e, "recording failed; the call goes on");
        let now = crate::store::now_ms();
        let detail = serde_json::json!({
            "recording_id": recording_id,
            "reason": reason.as_str(),
            "error": e.to_string(),
        });
        if let Err(err) = self
            .store()
            .append_call_log(tenant_id, call_id, "recording_failed", &detail, now)
            .await
        {
            tracing::warn!(call_id, error = %err, "cannot log the recording failure");
        }
        if let Some(id) = recording_id {
            if let Err(err) = self
                .store()
                .finish_recording(
                    tenant_id,
                    id,
                    RecordingStatus::Failed,
                    &RecordingOutcome::default(),
                    now,
                )
                .await
            {
                tracing::error!(recording_id = id, error = %err, "cannot mark the recording failed");
            }
        }
    }
}

/// Interleaves what is ready and writes it.
async fn drain(l: &mut Live) -> Result<(), RecordingError> {
    loop {
        l.buf.clear();
        let n = match l.interleaver.as_mut() {
            Some(i) => i.poll(&mut l.buf, FRAMES_PER_WRITE),
            None => 0,
        };
        if n == 0 {
            return Ok(());
        }
        debug_assert_eq!(l.buf.len(), n * FRAME_BYTES);
        write(l).await?;
    }
}

/// Writes `l.buf` to the spool, on the blocking pool when it seals a chunk.
async fn write(l: &mut Live) -> Result<(), RecordingError> {
    let mut spool = l
        .spool
        .take()
        .ok_or_else(|| RecordingError::Task("spool writer lost".into()))?;
    if !spool.writes_through(l.buf.len()) {
        let r = spool.write(&l.buf);
        l.seal_by = l
            .seal_by
            .or_else(|| Some(tokio::time::Instant::now() + SEAL_WALL));
        l.spool = Some(spool);
        return r.map_err(Into::into);
    }
    let buf = std::mem::take(&mut l.buf);
    let (spool, buf, r) = tokio::task::spawn_blocking(move || {
        let r = spool.write(&buf);
        (spool, buf, r)
    })
    .await?;
    // What is left pending after the sealed records started just now.
    l.seal_by = (spool.pending_len() > 0).then(|| tokio::time::Instant::now() + SEAL_WALL);
    l.spool = Some(spool);
    l.buf = buf;
    r.map_err(Into::into)
}

/// Seals the pending audio as a (short) record, on the blocking pool.
async fn seal(l: &mut Live) -> Result<(), RecordingError> {
    l.seal_by = None;
    let Some(mut spool) = l.spool.take() else {
        return Err(RecordingError::Task("spool writer lost".into()));
    };
    let (spool, r) = tokio::task::spawn_blocking(move || {
        let r = spool.seal();
        (spool, r)
    })
    .await?;
    l.spool = Some(spool);
    r.map_err(Into::into)
}
