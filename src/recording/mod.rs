//! Call recordings, encrypted at rest.
//!
//! - [`keys`]: the master key and per-tenant age identities it wraps;
//! - [`storage`]: the object store trait and its local filesystem form;
//! - [`spool`]: a live call's encrypted spool, sealed at least every
//!   second of audio so a crash loses at most that;
//! - [`crypt`]: finalisation/recovery of spools into age files, the
//!   seekable decrypting [`WavReader`];
//! - [`interleave`]: sans-IO stereo placement of a call's two tracks;
//! - [`recorder`]: the per-call task that turns placed PCM into a recording;
//! - [`Recordings`]: the service the rest of the gateway calls (open,
//!   store, delete, recover).
//!
//! This domain consumes media types and uses the store for its rows and
//! keys; it knows nothing of HTTP. No plaintext audio ever touches storage.
//!
//! Storage layout (keys): `{tenant}/{yyyy}/{mm}/{dd}/{recording}.wav.age`
//! for the finished recording and `….wav.age.spool` while a call is being
//! written.

pub mod config;
pub mod crypt;
pub mod interleave;
pub mod keys;
pub mod recorder;
pub mod retention;
pub mod signing;
pub mod spool;
pub mod storage;
pub mod wav;

use std::io::Read;
use std::sync::Arc;

pub use crypt::{WavReader, CHUNK_BYTES};
pub use keys::{Keyring, MasterKey, TenantIdentity};
pub use storage::{LocalStorage, Storage, StorageError};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{
    CallStatus, NewRecording, Recording, RecordingOutcome, RecordingSource, RecordingStatus, Store,
    StoreError,
};

/// Errors of the recording domain. Messages name what failed, never key
/// material or audio.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("recording not found")]
    NotFound,
    #[error("recording is {0}, not readable")]
    NotReadable(RecordingStatus),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("recording is corrupt: {0}")]
    Corrupt(String),
    #[error("recording key: {0}")]
    Key(String),
    #[error("not a usable WAV file: {0}")]
    InvalidWav(String),
    #[error("reading the source failed: {0}")]
    Source(std::io::Error),
    #[error(transparent)]
    Store(StoreError),
    #[error("recording task failed: {0}")]
    Task(String),
}

impl From<StoreError> for RecordingError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => RecordingError::NotFound,
            other => RecordingError::Store(other),
        }
    }
}

impl From<keys::KeyError> for RecordingError {
    fn from(e: keys::KeyError) -> Self {
        match e {
            keys::KeyError::Store(s) => RecordingError::Store(s),
            other => RecordingError::Key(other.to_string()),
        }
    }
}

impl From<keys::MasterKeyError> for RecordingError {
    fn from(e: keys::MasterKeyError) -> Self {
        RecordingError::Key(e.to_string())
    }
}

impl From<tokio::task::JoinError> for RecordingError {
    fn from(e: tokio::task::JoinError) -> Self {
        RecordingError::Task(e.to_string())
    }
}

/// Storage keys of one recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKeys {
    /// The finished, committed recording.
    pub object: String,
    /// The spool a live call writes before finalisation.
    pub spool: String,
}

impl ObjectKeys {
    /// Keys by tenant, UTC date of creation and recording id.
    pub fn new(tenant_id: &str, recording_id: &str, created_at_ms: i64) -> Self {
        let date =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(created_at_ms) * 1_000_000)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let object = format!(
            "{tenant_id}/{:04}/{:02}/{:02}/{recording_id}.wav.age",
            date.year(),
            u8::from(date.month()),
            date.day()
        );
        Self::from_object(&object)
    }

    /// Keys of a recording whose `storage_path` is `object`.
    pub fn from_object(object: &str) -> Self {
        Self {
            object: object.to_string(),
            spool: format!("{object}.spool"),
        }
    }
}

/// The recording service: rows, keys and objects together. Cheap to clone.
#[derive(Clone)]
pub struct Recordings {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    storage: Arc<dyn Storage>,
    keys: Keyring,
    metrics: Arc<Metrics>,
    max_duration_secs: u64,
}

impl Recordings {
    pub fn new(
        store: Store,
        storage: Arc<dyn Storage>,
        keys: Keyring,
        metrics: Arc<Metrics>,
        max_duration_secs: u64,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                storage,
                keys,
                metrics,
                max_duration_secs,
            }),
        }
    }

    /// Local storage and the configured master key (created on first start
    /// when it comes from the default file).
    pub fn from_config(
        cfg: &Config,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RecordingError> {
        let storage = LocalStorage::new(cfg.recording_dir())?;
        let keys = Keyring::new(store.clone(), master_key(cfg)?);
        Ok(Self::new(
            store,
            Arc::new(storage),
            keys,
            metrics,
            cfg.recording.max_duration_secs,
        ))
    }

    pub fn keys(&self) -> &Keyring {
        &self.inner.keys
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub(crate) fn max_duration_secs(&self) -> u64 {
        self.inner.max_duration_secs
    }

    /// Opens a tenant's recording as its decrypted WAV, `Read + Seek`
    /// (blocking reads: use it from `spawn_blocking`, or stream it from a
    /// blocking task). Readable: completed and interrupted recordings, and
    /// a failed one that still has a file (its sink overflowed: the start is
    /// there, the end is missing). Another tenant's id is `NotFound`.
    pub async fn open_wav(
        &self,
        tenant_id: &str,
        recording_id: &str,
    ) -> Result<(Recording, WavReader), RecordingError> {
        let rec = self
            .inner
            .store
            .get_recording(tenant_id, recording_id)
            .await?;
        let readable = match rec.status {
            RecordingStatus::Completed | RecordingStatus::Interrupted => true,
            RecordingStatus::Failed => rec.bytes.is_some(),
            RecordingStatus::Recording | RecordingStatus::Deleted => false,
        };
        if !readable {
            return Err(RecordingError::NotReadable(rec.status));
        }
        let (Some(path), Some(key_id)) = (rec.storage_path.clone(), rec.key_id.clone()) else {
            return Err(RecordingError::NotReadable(rec.status));
        };
        let identity = self.inner.keys.identity(tenant_id, &key_id).await?;
        let storage = self.inner.storage.clone();
        let reader = tokio::task::spawn_blocking(move || {
            WavReader::open(storage.open(&path)?, &identity.identity)
        })
        .await??;
        Ok((rec, reader))
    }

    /// Stores an already complete WAV (e.g. fetched from the provider) for
    /// a tenant, encrypted to its active key, optionally linked to a call.
    /// The WAV is kept byte for byte (any WAV encoding); its format and
    /// duration are read from its header. `source` is read on a blocking
    /// thread.
    pub async fn store_wav(
        &self,
        tenant_id: &str,
        call_id: Option<&str>,
        source: impl Read + Send + 'static,
    ) -> Result<Recording, RecordingError> {
        let (key, recipient) = self.inner.keys.active(tenant_id).await?;
        let id = crate::store::new_id();
        let now = crate::store::now_ms();
        let keys = ObjectKeys::new(tenant_id, &id, now);
        let storage = self.inner.storage.clone();
        let object = keys.object.clone();
        let (info, plain, stored) = tokio::task::spawn_blocking(move || {
            crypt::store_wav(storage.as_ref(), &object, &recipient, source)
        })
        .await??;
        let new = NewRecording {
            id: &id,
            call_id,
            source: RecordingSource::Provider,
            status: RecordingStatus::Recording,
            format: "wav",
            channels: info.channels,
            sample_rate: info.sample_rate,
            storage_path: &keys.object,
            key_id: &key.id,
            algorithm: keys::ALGORITHM,
        };
        let outcome = RecordingOutcome {
            channels: Some(info.channels),
            sample_rate: Some(info.sample_rate),
            duration_ms: Some(info.duration_ms() as i64),
            bytes: Some(plain as i64),
            stored_bytes: Some(stored as i64),
        };
        let stored_row = async {
            self.inner
                .store
                .create_recording(tenant_id, &new, now)
                .await?;
            self.inner
                .store
                .finish_recording(tenant_id, &id, RecordingStatus::Completed, &outcome, now)
                .await?
                .ok_or(RecordingError::NotFound)
        }
        .await;
        if stored_row.is_err() {
            // No row points at the object: do not leave it behind.
            let storage = self.inner.storage.clone();
            let object = keys.object.clone();
            let _ = tokio::task::spawn_blocking(move || storage.delete(&object)).await;
        }
        stored_row
    }

    /// Deletes a recording's object and with it its key material (the file
    /// key lives, wrapped to the tenant key, in the object's header, which
    /// local storage overwrites before unlinking), then marks the row
    /// `deleted` and, when it belongs to a call, logs `recording_deleted`
    /// with `reason` in the call log. The tenant key stays: other
    /// recordings need it. Deleting twice is fine.
    pub async fn delete(
        &self,
        tenant_id: &str,
        recording_id: &str,
        reason: &str,
    ) -> Result<Recording, RecordingError> {
        let rec = self
            .inner
            .store
            .get_recording(tenant_id, recording_id)
            .await?;
        if rec.status == RecordingStatus::Deleted {
            return Ok(rec);
        }
        if rec.status == RecordingStatus::Recording {
            return Err(RecordingError::NotReadable(rec.status));
        }
        if let Some(path) = rec.storage_path.clone() {
            let storage = self.inner.storage.clone();
            tokio::task::spawn_blocking(move || {
                let keys = ObjectKeys::from_object(&path);
                storage.delete(&keys.spool)?;
                storage.delete(&keys.object)
            })
            .await??;
        }
        let now = crate::store::now_ms();
        let done = self
            .inner
            .store
            .mark_recording_deleted(tenant_id, recording_id, now)
            .await?;
        if let (Some(done), Some(call)) = (&done, &rec.call_id) {
            let detail = serde_json::json!({"recording_id": done.id, "reason": reason});
            self.inner
                .store
                .append_call_log(tenant_id, call, "recording_deleted", &detail, now)
                .await?;
        }
        match done {
            Some(d) => Ok(d),
            None => Ok(self
                .inner
                .store
                .get_recording(tenant_id, recording_id)
                .await?),
        }
    }

    /// Startup recovery: finalises recordings a dead process left in
    /// `recording` (see [`crypt`]: every complete chunk is kept), marks them
    /// and their calls `interrupted` and says so in the call log. Run before
    /// the gateway takes streams. A spool still held by a live writer
    /// (another process on this host) is left alone, and so, on a shared
    /// database, is a row whose objects are not in this node's storage.
    pub async fn recover(&self) -> Result<Vec<Recording>, RecordingError> {
        let single_node = self.inner.store.backend() == crate::store::Backend::Sqlite;
        let mut done = Vec::new();
        for rec in self.inner.store.unfinished_recordings().await? {
            match self.recover_one(&rec, single_node).await {
                Ok(Some(r)) => done.push(r),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(recording_id = %rec.id, error = %e, "recording recovery failed; will retry at next start");
                }
            }
        }
        Ok(done)
    }

    async fn recover_one(
        &self,
        rec: &Recording,
        single_node: bool,
    ) -> Result<Option<Recording>, RecordingError> {
        let store = &self.inner.store;
        let tenant = rec.tenant_id.as_str();
        let now = crate::store::now_ms();
        let (Some(path), Some(key_id)) = (rec.storage_path.clone(), rec.key_id.clone()) else {
            return self.recovery_failed(rec, "no storage path or key").await;
        };
        let keys = ObjectKeys::from_object(&path);
        let identity = self.inner.keys.identity(tenant, &key_id).await?;
        let recipient = identity.identity.to_public();
        let storage = self.inner.storage.clone();
        let fallback = (
            u16::try_from(rec.channels).unwrap_or(2),
            u32::try_from(rec.sample_rate).unwrap_or(8000),
        );
        let spool = keys.spool.clone();
        let object = keys.object.clone();
        let result = tokio::task::spawn_blocking(move || {
            crypt::finalise(
                storage.as_ref(),
                &spool,
                &object,
                &identity.identity,
                &recipient,
                None,
                fallback,
            )
        })
        .await?;
        let (status, fin) = match result {
            Ok(f) => (RecordingStatus::Interrupted, f),
            Err(RecordingError::Storage(StorageError::Busy)) => return Ok(None),
            Err(RecordingError::Storage(StorageError::NotFound)) => {
                // No spool. Finalised before the crash but not marked?
                let storage = self.inner.storage.clone();
                let object = keys.object.clone();
                let identity = self.inner.keys.identity(tenant, &key_id).await?;
                let opened = tokio::task::spawn_blocking(move || {
                    WavReader::open(storage.open(&object)?, &identity.identity).and_then(|mut r| {
                        let mut head = [0u8; wav::HEADER_LEN];
                        r.read_exact(&mut head)
                            .map_err(|e| RecordingError::Corrupt(e.to_string()))?;
                        let info = wav::parse(&head, r.len()).map_err(RecordingError::Corrupt)?;
                        Ok((info, r.len()))
                    })
                })
                .await?;
                match opened {
                    Ok((info, _)) => (
                        RecordingStatus::Completed,
                        crypt::Finalised {
                            channels: info.channels,
                            sample_rate: info.sample_rate,
                            data_bytes: info.data_len,
                            stored_bytes: 0,
                        },
                    ),
                    Err(RecordingError::Storage(StorageError::NotFound)) if !single_node => {
                        // Perhaps another node's, still being written.
                        return Ok(None);
                    }
                    Err(RecordingError::Storage(StorageError::NotFound)) => {
                        return self.recovery_failed(rec, "no spool and no object").await;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let outcome = RecordingOutcome {
            channels: Some(fin.channels),
            sample_rate: Some(fin.sample_rate),
            duration_ms: Some(fin.duration_ms() as i64),
            bytes: Some(fin.wav_bytes() as i64),
            stored_bytes: (fin.stored_bytes > 0).then_some(fin.stored_bytes as i64),
        };
        let Some(updated) = store
            .finish_recording(tenant, &rec.id, status, &outcome, now)
            .await?
        else {
            return Ok(None);
        };
        let outcome_label = if status == RecordingStatus::Interrupted {
            "interrupted"
        } else {
            "completed"
        };
        self.inner.metrics.recording_ended(outcome_label);
        self.inner.metrics.recording_bytes.inc_by(fin.stored_bytes);
        self.inner
            .metrics
            .recording_seconds
            .inc_by(fin.duration_ms() as f64 / 1000.0);
        if let Some(call) = &rec.call_id {
            // The call ended where its audio did, not at this restart
            // (which may have marked it interrupted already).
            let audio_end = rec.created_at + fin.duration_ms() as i64;
            store
                .end_call(tenant, call, CallStatus::Interrupted, audio_end)
                .await?;
            store
                .set_interrupted_call_end(tenant, call, audio_end, now)
                .await?;
            let detail = serde_json::json!({
                "recording_id": rec.id,
                "recovered_ms": fin.duration_ms(),
                "reason": "gateway restarted while recording",
                "lost": "audio after the last sealed spool record (at most the last second)",
            });
            let event = if status == RecordingStatus::Interrupted {
                "recording_interrupted"
            } else {
                "recording_completed"
            };
            store
                .append_call_log(tenant, call, event, &detail, now)
                .await?;
        }
        tracing::warn!(
            recording_id = %rec.id,
            call_id = rec.call_id.as_deref().unwrap_or(""),
            recovered_ms = fin.duration_ms(),
            status = status.as_str(),
            "recording left open by a previous run recovered"
        );
        Ok(Some(updated))
    }

    async fn recovery_failed(
        &self,
        rec: &Recording,
        why: &str,
    ) -> Result<Option<Recording>, RecordingError> {
        let store = &self.inner.store;
        let now = crate::store::now_ms();
        let updated = store
            .finish_recording(
                &rec.tenant_id,
                &rec.id,
                RecordingStatus::Failed,
                &RecordingOutcome::default(),
                now,
            )
            .await?;
        self.inner.metrics.recording_ended("failed");
        if let Some(call) = &rec.call_id {
            store
                .end_call(&rec.tenant_id, call, CallStatus::Interrupted, now)
                .await?;
            let detail = serde_json::json!({"recording_id": rec.id, "reason": why});
            store
                .append_call_log(&rec.tenant_id, call, "recording_failed", &detail, now)
                .await?;
        }
        tracing::error!(recording_id = %rec.id, reason = why, "recording left open by a previous run is lost");
        Ok(updated)
    }
}

/// The master key the configuration names: the value itself, else the key
/// file (created when absent).
pub fn master_key(cfg: &Config) -> Result<MasterKey, keys::MasterKeyError> {
    match &cfg.recording.master_key {
        Some(k) => Ok(MasterKey::from_hex(k.expose())?),
        None => Ok(MasterKey::load_or_create(&cfg.master_key_file())?),
    }
}

/// The tenant key ring the configuration names (for the CLI).
pub fn keyring(cfg: &Config, store: Store) -> Result<Keyring, RecordingError> {
    Ok(Keyring::new(store, master_key(cfg)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    fn service(store: &Store, dir: &std::path::Path) -> Recordings {
        Recordings::new(
            store.clone(),
            Arc::new(LocalStorage::new(dir).unwrap()),
            Keyring::new(store.clone(), MasterKey::generate()),
            Arc::new(Metrics::new()),
            3600,
        )
    }

    async fn call(store: &Store, tenant: &str) -> String {
        let c = testing::stream_call("CA1", "MZ1");
        store.start_stream_call(tenant, &c, 1_000).await.unwrap().id
    }

    #[tokio::test]
    async fn provider_wavs_are_stored_read_back_and_deleted() {
        for store in testing::stores().await {
            let dir = tempfile::tempdir().unwrap();
            let recs = service(&store, dir.path());
            let t = store.create_tenant("A", None).await.unwrap();
            let call_id = call(&store, &t.id).await;
            let wav = std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/media-fixtures/jfk-8k-ulaw.wav"
            ))
            .unwrap();
            let rec = recs
                .store_wav(&t.id, Some(&call_id), std::io::Cursor::new(wav.clone()))
                .await
                .unwrap();
            assert_eq!(rec.status, RecordingStatus::Completed);
            assert_eq!(rec.source, RecordingSource::Provider);
            assert_eq!((rec.channels, rec.sample_rate), (1, 8000));
            assert_eq!(rec.duration_ms, Some(11_000));
            assert_eq!(rec.bytes, Some(wav.len() as i64));
            let (_, mut r) = recs.open_wav(&t.id, &rec.id).await.unwrap();
            let mut back = Vec::new();
            r.read_to_end(&mut back).unwrap();
            assert_eq!(back, wav);

            // Not a WAV: refused, nothing stored.
            let err = recs
                .store_wav(&t.id, None, std::io::Cursor::new(b"<html/>".to_vec()))
                .await
                .unwrap_err();
            assert!(matches!(err, RecordingError::InvalidWav(_)), "{err}");

            let other = store.create_tenant("B", None).await.unwrap();
            assert!(matches!(
                recs.delete(&other.id, &rec.id, "retention").await,
                Err(RecordingError::NotFound)
            ));
            let gone = recs.delete(&t.id, &rec.id, "retention").await.unwrap();
            assert_eq!(gone.status, RecordingStatus::Deleted);
            assert!(gone.deleted_at.is_some());
            assert!(recs.storage().list("").unwrap().is_empty());
            assert!(matches!(
                recs.open_wav(&t.id, &rec.id).await,
                Err(RecordingError::NotReadable(RecordingStatus::Deleted))
            ));
            let logs = store.list_call_logs(&t.id, &call_id).await.unwrap();
            let deleted = logs
                .iter()
                .find(|l| l.event == "recording_deleted")
                .unwrap();
            assert_eq!(deleted.detail["reason"], "retention");
            // Twice is fine.
            recs.delete(&t.id, &rec.id, "retention").await.unwrap();
        }
    }

    #[tokio::test]
    async fn recovery_finalises_what_a_dead_writer_left() {
        for store in testing::stores().await {
            let dir = tempfile::tempdir().unwrap();
            let recs = service(&store, dir.path());
            let t = store.create_tenant("A", None).await.unwrap();
            let call_id = call(&store, &t.id).await;
            // A recorder that never gets to finish: the channel stays open
            // while the task is dropped, like a killed process.
            let (tx, rx) = tokio::sync::mpsc::channel(4096);
            let task = tokio::spawn(recs.clone().record_call(
                t.id.clone(),
                call_id.clone(),
                rx,
                Arc::new(std::sync::atomic::AtomicBool::new(false)),
            ));
            for i in 0..150u64 {
                for track in crate::media::Track::ALL {
                    let chunk = crate::media::PcmChunk {
                        track,
                        sample_rate: 8000,
                        start_sample: i * 160,
                        samples: vec![(i as i16) * if track.index() == 0 { 1 } else { -1 }; 160],
                        silence: false,
                    };
                    tx.send(chunk).await.unwrap();
                }
            }
            // 24 000 frames = 96 044 bytes: six whole half-second records
            // (16 000 bytes, 20 bytes of framing and tag each) on disk, the
            // last 44 bytes sealed too once they have waited half a second.
            let six_records = 6 * (4 + 16_000 + 16);
            for _ in 0..200 {
                let sealed = recs
                    .storage()
                    .list("")
                    .unwrap()
                    .iter()
                    .any(|o| o.partial && o.size > six_records);
                if sealed && tx.capacity() == tx.max_capacity() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            task.abort();
            let _ = task.await;
            drop(tx);

            let recovered = recs.recover().await.unwrap();
            assert_eq!(recovered.len(), 1);
            let rec = &recovered[0];
            assert_eq!(rec.status, RecordingStatus::Interrupted);
            let plaintext = rec.bytes.unwrap() as u64;
            assert!(plaintext == 96_000 || plaintext == 96_044, "{plaintext}");
            let frames = (plaintext - 44) / 4;
            assert_eq!(rec.duration_ms, Some((frames / 8) as i64));
            let (_, mut r) = recs.open_wav(&t.id, &rec.id).await.unwrap();
            let mut wav_bytes = Vec::new();
            r.read_to_end(&mut wav_bytes).unwrap();
            let info = wav::parse(&wav_bytes, wav_bytes.len() as u64).unwrap();
            assert_eq!(info.data_len, frames * 4);
            // Frame 200 is in 20 ms slot 1: caller +1, agent -1.
            let at = 44 + 200 * 4;
            assert_eq!(&wav_bytes[at..at + 4], &[1, 0, 0xff, 0xff]);
            let logs = store.list_call_logs(&t.id, &call_id).await.unwrap();
            assert!(logs.iter().any(|l| l.event == "recording_interrupted"));
            let ended = store.get_call(&t.id, &call_id).await.unwrap();
            assert_eq!(ended.status, CallStatus::Interrupted);
            // The call ends where the recovered audio does.
            assert_eq!(
                ended.ended_at,
                Some(rec.created_at + rec.duration_ms.unwrap())
            );
            // Nothing left to recover.
            assert!(recs.recover().await.unwrap().is_empty());
        }
    }
}
