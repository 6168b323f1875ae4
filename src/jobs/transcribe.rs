//! Batch re-transcription of a call's stored recording.
//!
//! The worker decrypts the recording, splits its channels into the call's
//! tracks (stereo: left caller, right agent; mono: caller), transcribes
//! each with the shared engine at [`Priority::Batch`] (live captions go
//! first), and stores one completed transcript (`source = batch`) with its
//! segments and summary, linked from the call. Text is redacted as the
//! call's policy says (the pinned one, tightened by the settings now).
//!
//! Exactly once: the transcript's id is the job's id and it is written in
//! one transaction with its segments, so a re-run (after a crash or a lost
//! lease) finds it and stores nothing twice.

use std::io::Read;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{JobContext, JobError, JobHandler};
use crate::asr::engine::{AsrEngine, AsrError, DecodeOptions};
use crate::asr::live::FinalSegment;
use crate::asr::scheduler::Priority;
use crate::audio::{decode_bytes, DecodeError, DecodedAudio};
use crate::recording::{RecordingError, Recordings};
use crate::store::{now_ms, BatchTranscript, Job, Segment, Store, StoreError};
use crate::transcript::summary::summary_json;

/// `jobs.kind` of transcription jobs.
pub const KIND: &str = "transcription";

/// A transcription job's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TranscriptionPayload {
    pub call_id: String,
    pub recording_id: String,
}

/// Why a call's recording cannot be queued for transcription.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the call has no recording")]
    NoRecording,
    #[error("the call's recording is {0}, not readable")]
    NotReadable(crate::store::RecordingStatus),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Queues the batch transcription of `call`'s stored recording (the API's
/// re-transcription, and the after-call transcription of a call that had
/// no live captions). Jobs with the same `dedup_key` are one job.
pub async fn queue_for_call(
    store: &Store,
    call: &crate::store::Call,
    max_attempts: u32,
    dedup_key: Option<&str>,
) -> Result<Job, QueueError> {
    use crate::store::RecordingStatus as S;
    let tenant = call.tenant_id.as_str();
    let Some(recording_id) = call.recording_id.clone() else {
        return Err(QueueError::NoRecording);
    };
    let recording = store.get_recording(tenant, &recording_id).await?;
    let readable = match recording.status {
        S::Completed | S::Interrupted => true,
        S::Failed => recording.bytes.is_some(),
        S::Recording | S::Deleted => false,
    };
    if !readable {
        return Err(QueueError::NotReadable(recording.status));
    }
    let payload = serde_json::to_value(TranscriptionPayload {
        call_id: call.id.clone(),
        recording_id,
    })
    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(store
        .enqueue_job(
            tenant,
            &crate::store::NewJob {
                kind: KIND,
                payload: &payload,
                max_attempts,
                dedup_key,
                run_after: None,
            },
            now_ms(),
        )
        .await?)
}

/// The dedup key of a call's after-call transcription: one per call.
pub fn after_call_key(call_id: &str) -> String {
    format!("after-call:{call_id}")
}

/// A channel peaking below this (of full scale) holds no speech: a
/// one-track call's silent agent side would only feed Whisper's
/// hallucinations.
const SILENT_PEAK: f32 = 0.003;

/// Runs [`KIND`] jobs.
pub struct TranscriptionHandler {
    pub store: Store,
    pub recordings: Recordings,
    pub engine: Arc<AsrEngine>,
}

impl TranscriptionHandler {
    fn model_name(&self) -> String {
        self.engine
            .config()
            .model_path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(|s| s.trim_start_matches("ggml-").to_string())
            .unwrap_or_else(|| "whisper".into())
    }
}

fn store_err(e: StoreError) -> JobError {
    match e {
        StoreError::NotFound => JobError::permanent("not found"),
        StoreError::Corrupt(m) => JobError::permanent(format!("stored value is invalid: {m}")),
        other => JobError::retry(other.to_string()),
    }
}

fn recording_err(e: RecordingError) -> JobError {
    match e {
        RecordingError::NotFound => JobError::permanent("the recording no longer exists"),
        RecordingError::NotReadable(status) => {
            JobError::permanent(format!("the recording is {status}, not readable"))
        }
        e @ (RecordingError::Corrupt(_) | RecordingError::InvalidWav(_)) => {
            JobError::permanent(e.to_string())
        }
        other => JobError::retry(other.to_string()),
    }
}

#[async_trait::async_trait]
impl JobHandler for TranscriptionHandler {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<serde_json::Value, JobError> {
        let p: TranscriptionPayload = serde_json::from_value(job.payload.clone())
            .map_err(|_| JobError::permanent("invalid job payload"))?;
        let tenant = job.tenant_id.as_str();
        let transcript_id = job.id.clone();
        // Done by an earlier attempt that died before marking the job.
        if let Ok(t) = self.store.get_transcript(tenant, &transcript_id).await {
            return Ok(serde_json::json!({"transcript_id": t.id, "reused": true}));
        }
        // Redaction as the call's policy says now (see `CallPolicy::after_call`).
        let call = self
            .store
            .get_call(tenant, &p.call_id)
            .await
            .map_err(store_err)?;
        let policy = self
            .store
            .policy_after_call(tenant, Some(&call))
            .await
            .map_err(store_err)?;
        let (_, mut reader) = self
            .recordings
            .open_wav(tenant, &p.recording_id)
            .await
            .map_err(recording_err)?;
        let wav = tokio::task::spawn_blocking(move || {
            let mut buf = Vec::new();
            reader.read_to_end(&mut buf).map(|_| buf)
        })
        .await
        .map_err(|_| JobError::retry("decrypting task failed"))?
        .map_err(|e| JobError::permanent(format!("cannot decrypt the recording: {e}")))?;
        ctx.progress(0.1).await;
        let tracks = tokio::task::spawn_blocking(move || split_tracks(wav))
            .await
            .map_err(|_| JobError::retry("decoding task failed"))?
            .map_err(|e| JobError::permanent(format!("cannot decode the recording: {e}")))?;
        let n = tracks.len().max(1);
        let mut segments = Vec::new();
        let mut audio_ms = 0;
        let mut heard = Vec::new();
        for (i, (track, audio)) in tracks.into_iter().enumerate() {
            audio_ms = audio_ms.max(audio.duration_ms());
            let peak = audio.samples.iter().fold(0f32, |m, s| m.max(s.abs()));
            if peak >= SILENT_PEAK {
                heard.push(track);
                let opts = DecodeOptions::batch(audio.samples.len());
                let t = self
                    .engine
                    .transcribe(audio.samples, opts, Priority::Batch)
                    .await
                    .map_err(|e| match e {
                        AsrError::EmptyAudio => JobError::permanent(e.to_string()),
                        other => JobError::retry(other.to_string()),
                    })?;
                segments.extend(
                    t.segments
                        .into_iter()
                        .filter(|s| !s.text.trim().is_empty())
                        .map(|s| Segment {
                            track: track.to_string(),
                            start_ms: s.start_ms,
                            end_ms: s.end_ms,
                            text: policy.transcript_text(s.text.trim()),
                            confidence: s.confidence.map(f64::from),
                        }),
                );
            }
            if !ctx.progress(0.1 + 0.8 * (i + 1) as f64 / n as f64).await {
                return Err(JobError::retry("lease lost"));
            }
        }
        segments.sort_by_key(|s| (s.start_ms, s.track.clone()));
        let finals: Vec<FinalSegment> = segments.iter().map(FinalSegment::from).collect();
        let summary = summary_json(&finals);
        let created = self
            .store
            .store_batch_transcript(
                tenant,
                &BatchTranscript {
                    id: &transcript_id,
                    call_id: &p.call_id,
                    model: &self.model_name(),
                    segments: &segments,
                    summary: &summary,
                },
                now_ms(),
            )
            .await
            .map_err(store_err)?;
        Ok(serde_json::json!({
            "transcript_id": transcript_id,
            "segments": segments.len(),
            "audio_ms": audio_ms,
            "tracks": heard,
            "reused": !created,
        }))
    }
}

/// The recording's tracks as 16 kHz mono audio: a 16-bit stereo WAV gives
/// caller (left) and agent (right); anything else is decoded whole as the
/// caller's.
pub fn split_tracks(wav: Vec<u8>) -> Result<Vec<(&'static str, DecodedAudio)>, DecodeError> {
    if let Ok(reader) = hound::WavReader::new(std::io::Cursor::new(&wav)) {
        let spec = reader.spec();
        if spec.channels == 2
            && spec.bits_per_sample == 16
            && spec.sample_format == hound::SampleFormat::Int
        {
            let samples: Vec<i16> = reader
                .into_samples::<i16>()
                .collect::<Result<_, _>>()
                .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
            let mut out = Vec::new();
            for (ch, track) in [(0, "caller"), (1, "agent")] {
                let mono: Vec<i16> = samples.iter().skip(ch).step_by(2).copied().collect();
                out.push((
                    track,
                    decode_bytes(mono_wav(&mono, spec.sample_rate)?, Some("wav"))?,
                ));
            }
            return Ok(out);
        }
    }
    Ok(vec![("caller", decode_bytes(wav, None)?)])
}

fn mono_wav(samples: &[i16], rate: u32) -> Result<Vec<u8>, DecodeError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut buf = std::io::Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    let corrupt = |e: hound::Error| DecodeError::Corrupt(e.to_string());
    let mut w = hound::WavWriter::new(&mut buf, spec).map_err(corrupt)?;
    for s in samples {
        w.write_sample(*s).map_err(corrupt)?;
    }
    w.finalize().map_err(corrupt)?;
    Ok(buf.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stereo_splits_into_caller_and_agent() {
        // Left: a 440 Hz tone; right: silence. One second at 8 kHz.
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut buf, spec).unwrap();
        for i in 0..8000 {
            let v = (f32::sin(i as f32 * 440.0 * std::f32::consts::TAU / 8000.0) * 8000.0) as i16;
            w.write_sample(v).unwrap();
            w.write_sample(0i16).unwrap();
        }
        w.finalize().unwrap();
        let tracks = split_tracks(buf.into_inner()).unwrap();
        assert_eq!(tracks.len(), 2);
        assert_eq!((tracks[0].0, tracks[1].0), ("caller", "agent"));
        let peak = |a: &DecodedAudio| a.samples.iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!(peak(&tracks[0].1) > 0.1);
        assert!(peak(&tracks[1].1) < SILENT_PEAK);
        assert!((990..=1010).contains(&tracks[0].1.duration_ms()));
        assert!(split_tracks(b"not audio".to_vec()).is_err());
    }
}
