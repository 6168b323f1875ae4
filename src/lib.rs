//! callstream: a real-time media gateway for a multi-tenant contact center.
//!
//! Data path: provider WebSocket → [`providers`] (wire frames, auth) →
//! [`gateway`] (the call runtime: per-call actor, sinks) → [`media`]
//! (sans-IO decode, placement, resampling) → sinks; lifecycle and records
//! in [`store`]; HTTP in [`api`]. Only `api`, `jobs` and this file wire
//! the domains together.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod asr;
pub mod audio;
pub mod config;
pub mod gateway;
pub mod jobs;
pub mod loadgen;
pub mod media;
pub mod metrics;
pub mod phone;
pub mod providers;
pub mod recording;
pub mod secret;
pub mod store;
pub mod transcript;

use std::future::Future;

use rand::RngCore;
use tokio::net::TcpListener;

pub use api::{app, AppState};

use crate::secret::Secret;

/// What shutdown had to force at its deadline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Streams still open at the deadline, marked interrupted.
    pub streams_forced: usize,
    /// Job attempts still running at the deadline were abandoned (their
    /// leases lapse; the jobs are claimed again later).
    pub jobs_forced: bool,
    /// A retention sweep still running at the deadline was stopped (the
    /// next one finishes it).
    pub retention_forced: bool,
}

/// Serves the assembled gateway on `listener` until `shutdown` resolves,
/// then winds everything down against one deadline, `shutdown_grace_secs`
/// from that moment: stop accepting, ask open streams to finish (calls
/// marked interrupted, sinks flushed), stop claiming jobs and stop the
/// retention worker, all at once; whatever still runs at the deadline is
/// forced (streams marked interrupted, job attempts and a retention sweep
/// abandoned). Connections are capped and timed out as `[http]` says
/// ([`api::server`]).
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<ShutdownReport> {
    let Gateway { state, jobs } = gateway;
    let sessions = state.sessions.clone();
    let grace = state.config.shutdown_grace();
    let stop_retention = tokio_util::sync::CancellationToken::new();
    let retention = state.recordings.clone().map(|recordings| {
        recording::retention::spawn(
            recordings,
            std::time::Duration::from_secs(state.config.recording.retention_interval_secs),
            recording::retention::system_clock(),
            stop_retention.clone(),
        )
    });
    let router = app(state.clone());
    let signal_sessions = sessions.clone();
    let signal_retention = stop_retention.clone();
    let jobs_ref = jobs.as_ref();
    let closing = state.closing.clone();
    // Not `axum::serve`: it has no header-read, idle or body timeout and
    // no connection cap (see `api::server`).
    let deadline = api::server::run(
        listener,
        router,
        api::server::Limits::from(&state.config.http),
        state.metrics.clone(),
        async move {
            shutdown.await;
            let deadline = tokio::time::Instant::now() + grace;
            tracing::info!("shutting down: no new streams or jobs; finishing open ones");
            signal_sessions.begin_shutdown();
            signal_retention.cancel();
            closing.cancel();
            if let Some(jobs) = jobs_ref {
                jobs.stop_claiming();
            }
            deadline
        },
    )
    .await?;
    let (sessions_done, jobs_done, retention_done) = tokio::join!(
        sessions.wait_until(deadline),
        async {
            match jobs {
                Some(jobs) => jobs.stop_by(deadline).await,
                None => true,
            }
        },
        async {
            let Some(mut task) = retention else {
                return true;
            };
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(_) => true,
                Err(_) => {
                    tracing::warn!("retention sweep still running at shutdown; stopped");
                    task.abort();
                    false
                }
            }
        },
    );
    let mut report = ShutdownReport {
        jobs_forced: !jobs_done,
        retention_forced: !retention_done,
        ..ShutdownReport::default()
    };
    if !sessions_done {
        let now = store::now_ms();
        for (tenant, call) in sessions.open_calls() {
            report.streams_forced += 1;
            tracing::warn!(call_id = %call, "stream did not finish within the grace period");
            let detail = serde_json::json!({"forced": true});
            let _ = state
                .store
                .append_call_log(&tenant, &call, "gateway_shutdown", &detail, now)
                .await;
            let _ = state
                .store
                .end_call(&tenant, &call, store::CallStatus::Interrupted, now)
                .await;
        }
    }
    Ok(report)
}

/// Why `callstream serve` could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot close the calls left open by a previous run: {0}")]
    Recover(store::StoreError),
    #[error("cannot listen on {0}: {1}")]
    Listen(std::net::SocketAddr, std::io::Error),
    #[error(
        "live transcription is enabled (asr.enabled) but the Whisper model cannot be loaded: {0}"
    )]
    Model(asr::engine::AsrError),
    #[error("the model loader failed: {0}")]
    ModelTask(tokio::task::JoinError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("serving failed: {0}")]
    Io(#[from] std::io::Error),
}

/// `callstream serve`: opens the database (on SQLite, first closing what a
/// killed run left open: one node owns every stream), loads the Whisper
/// model when `[asr] enabled`, builds the gateway and serves it until
/// `shutdown` resolves ([`serve`]).
pub async fn run(
    cfg: config::Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ShutdownReport, ServeError> {
    let store = open_store(&cfg).await?;
    if store.backend() == store::Backend::Sqlite {
        // A single node owns every stream: whatever was open when it last
        // stopped cannot still be streaming.
        let now = store::now_ms();
        let open = store
            .interrupt_open_calls(now)
            .await
            .map_err(ServeError::Recover)?;
        for (tenant, call) in open {
            tracing::warn!(call_id = %call, "call left open by a previous run marked interrupted");
            let detail = serde_json::json!({"reason": "gateway restarted"});
            store
                .append_call_log(&tenant, &call, "gateway_restart", &detail, now)
                .await
                .map_err(ServeError::Recover)?;
        }
        store
            .close_open_stream_usage(now)
            .await
            .map_err(ServeError::Recover)?;
    }
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| ServeError::Listen(cfg.listen, e))?;
    tracing::info!(
        listen = %cfg.listen,
        public_url = %cfg.public_url(),
        "callstream serving"
    );
    let engine = if cfg.asr.enabled {
        let engine_cfg = cfg.asr.engine();
        let engine = tokio::task::spawn_blocking(move || asr::engine::AsrEngine::load(engine_cfg))
            .await
            .map_err(ServeError::ModelTask)?
            .map_err(ServeError::Model)?;
        tracing::info!(model = %cfg.asr.model_path.display(), "live transcription on");
        Some(std::sync::Arc::new(engine))
    } else {
        None
    };
    if cfg.recording.enabled {
        tracing::info!(dir = %cfg.recording_dir().display(), "recording on");
    } else {
        tracing::info!("recording off (recording.enabled = false)");
    }
    let gateway = Gateway::build(cfg, store.clone(), engine).await?;
    let report = serve(listener, gateway, shutdown).await?;
    store.close().await;
    tracing::info!("stopped");
    Ok(report)
}

/// Why the database or the master key could not be opened, or the master
/// key rotated. Carries no key material.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the data dir {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the database: {0}")]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    MasterKey(#[from] secret::MasterKeyError),
    #[error("the master key comes from the configuration (recording.master_key): give the new one with --new-key-file, then configure it on every node")]
    NewKeyNeeded,
    #[error("cannot replace the master key file {path}: {source}")]
    KeyFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Opens the configured database the way every command does: the data dir
/// owner-only (0700), SQLite files 0600, migrated, provider secrets sealed
/// and opened with the configured master key (created on first use; old
/// plaintext tokens sealed now). A master key rotation that was cut short
/// is finished or undone first, as the database says.
pub async fn open_store(cfg: &config::Config) -> Result<store::Store, OpenError> {
    secret::create_private_dir(&cfg.data_dir).map_err(|source| OpenError::DataDir {
        path: cfg.data_dir.clone(),
        source,
    })?;
    let store = store::Store::connect(&cfg.database_url()).await?;
    if cfg.recording.master_key.is_none() {
        settle_rotation(cfg, &store).await?;
    }
    let master = recording::master_key(cfg)?;
    Ok(store.with_master_key(std::sync::Arc::new(master)).await?)
}

/// Where [`rotate_master_key`] puts the new key until the database has
/// moved to it.
fn next_key_file(cfg: &config::Config) -> std::path::PathBuf {
    let mut path = cfg.master_key_file().into_os_string();
    path.push(".next");
    path.into()
}

/// A rotation killed between its commit and the file rename leaves
/// `master.key.next`: keep it if the database is sealed by it, else drop it.
async fn settle_rotation(cfg: &config::Config, store: &store::Store) -> Result<(), OpenError> {
    let next_path = next_key_file(cfg);
    let next = match secret::MasterKey::load(&next_path) {
        Ok(k) => k,
        Err(secret::MasterKeyError::File { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(())
        }
        Err(e) => return Err(e.into()),
    };
    let key_file = |source| OpenError::KeyFile {
        path: cfg.master_key_file(),
        source,
    };
    if store
        .sealing_key_ids()
        .await?
        .iter()
        .any(|id| id == next.id())
    {
        std::fs::rename(&next_path, cfg.master_key_file()).map_err(key_file)?;
        tracing::warn!(master_key_id = %next.id(), "finished a master key rotation that was cut short");
    } else {
        std::fs::remove_file(&next_path).map_err(key_file)?;
        tracing::warn!("dropped the new key of a master key rotation that did not commit");
    }
    Ok(())
}

/// `callstream keys rotate-master`: re-seals every sealed secret (recording
/// keys, provider tokens) under a new master key in one transaction, then
/// makes it the configured one. `new` is the new key; `None` generates one,
/// which needs the key to live in `master_key_file` (a key given in the
/// configuration must be replaced there by the operator, so they give the
/// new one). Gateways holding the old key must be restarted.
pub async fn rotate_master_key(
    cfg: &config::Config,
    new: Option<secret::MasterKey>,
) -> Result<(String, String, store::ResealCount), OpenError> {
    let store = open_store(cfg).await?;
    let old_id = store.master_key_id().unwrap_or_default().to_string();
    let from_config = cfg.recording.master_key.is_some();
    let new = match new {
        Some(k) => k,
        None if from_config => return Err(OpenError::NewKeyNeeded),
        None => secret::MasterKey::generate(),
    };
    let next_path = next_key_file(cfg);
    if !from_config {
        // The new key is on disk before the database depends on it.
        new.write_new(&next_path)
            .map_err(|source| OpenError::KeyFile {
                path: next_path.clone(),
                source,
            })?;
    }
    let moved = match store.reseal_secrets(&new).await {
        Ok(moved) => moved,
        Err(e) => {
            if !from_config {
                let _ = std::fs::remove_file(&next_path);
            }
            store.close().await;
            return Err(e.into());
        }
    };
    store.close().await;
    if !from_config {
        std::fs::rename(&next_path, cfg.master_key_file()).map_err(|source| {
            OpenError::KeyFile {
                path: cfg.master_key_file(),
                source,
            }
        })?;
    }
    tracing::warn!(old = %old_id, new = %new.id(), "master key rotated");
    Ok((old_id, new.id().to_string(), moved))
}

/// Why [`Gateway::build`] could not assemble the gateway.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot load the stream token secret: {0}")]
    TokenSecret(std::io::Error),
    #[error("cannot set up recording storage and keys: {0}")]
    Recording(#[from] recording::RecordingError),
    #[error("cannot load the download link signing keys: {0}")]
    SigningKeys(recording::signing::KeyringError),
    #[error("cannot open the database with the master key: {0}")]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    MasterKey(#[from] secret::MasterKeyError),
}

/// The assembled gateway: the state the router serves and the background
/// job workers. The one composition root: `callstream serve` and the tests
/// build it the same way, so what the tests run is what users run.
pub struct Gateway {
    pub state: AppState,
    /// The job workers, when `[jobs] enabled`.
    pub jobs: Option<jobs::WorkerPool>,
}

impl Gateway {
    /// Wires the domains as `config` says: live transcription on `engine`
    /// (the caller loads it, once, when `[asr] enabled`), encrypted
    /// recordings (unfinished ones from a killed run recovered first) and
    /// the job workers that need them.
    pub async fn build(
        config: config::Config,
        store: store::Store,
        engine: Option<std::sync::Arc<asr::engine::AsrEngine>>,
    ) -> Result<Self, BuildError> {
        use std::sync::Arc;
        // Provider tokens are sealed: a store opened without the master key
        // (not through `open_store`) gets the configured one.
        let store = match store.master_key_id() {
            Some(_) => store,
            None => {
                let master = Arc::new(recording::master_key(&config)?);
                store.with_master_key(master).await?
            }
        };
        let token_secret = load_token_secret(&config).map_err(BuildError::TokenSecret)?;
        let mut state = AppState::new(store.clone(), config.clone(), token_secret);
        if let Some(engine) = &engine {
            state.sinks = Arc::new(gateway::transcription::TranscriptionSinks {
                engine: engine.clone(),
                store: store.clone(),
                hub: state.captions.clone(),
                config: config.asr.live(),
                queue: config.stream.transcription_queue,
                tracker: state.sessions.tracker(),
                metrics: state.metrics.clone(),
                admission: gateway::transcription::LiveAdmission::new(config.asr.live_capacity()),
            });
        }
        if config.recording.enabled {
            let recordings =
                recording::Recordings::from_config(&config, store.clone(), state.metrics.clone())?;
            // Before any stream: what a killed run left open is finalised and
            // marked interrupted (every complete encryption chunk kept).
            let recovered = recordings.recover().await?;
            if !recovered.is_empty() {
                tracing::warn!(
                    count = recovered.len(),
                    "recordings recovered from a previous run"
                );
            }
            state.sinks = Arc::new(gateway::recording::RecordingSinks {
                recordings: recordings.clone(),
                queue: config.stream.recording_queue,
                tracker: state.sessions.tracker(),
                next: state.sinks.clone(),
                after_call_attempts: config.jobs.max_attempts,
            });
            state.recordings = Some(recordings);
            if config.recording.url_signing_keys.is_none() {
                let path = config.url_signing_key_file();
                state.url_signer = Arc::new(
                    recording::signing::UrlSigner::load_or_create(&path)
                        .map_err(BuildError::SigningKeys)?,
                );
            }
        }
        let jobs = start_jobs(&state, engine);
        Ok(Self { state, jobs })
    }
}

/// The background job workers: batch transcription (needs the Whisper
/// engine and recordings) and provider recording downloads (need
/// recordings). A job kind without its handler here stays queued for a
/// node that has it.
fn start_jobs(
    state: &AppState,
    engine: Option<std::sync::Arc<asr::engine::AsrEngine>>,
) -> Option<jobs::WorkerPool> {
    use jobs::{fetch, transcribe, JobHandler, PoolSettings, WorkerPool};
    use std::sync::Arc;
    let cfg = &state.config;
    if !cfg.jobs.enabled {
        tracing::info!("job workers off (jobs.enabled = false)");
        return None;
    }
    let mut handlers: Vec<Arc<dyn JobHandler>> = Vec::new();
    if let Some(recordings) = &state.recordings {
        handlers.push(Arc::new(fetch::RecordingFetchHandler {
            store: state.store.clone(),
            recordings: recordings.clone(),
            provider: state.provider.clone(),
        }));
        if let Some(engine) = engine {
            handlers.push(Arc::new(transcribe::TranscriptionHandler {
                store: state.store.clone(),
                recordings: recordings.clone(),
                engine,
            }));
        }
    }
    tracing::info!(
        concurrency = cfg.jobs.concurrency,
        kinds = ?handlers.iter().map(|h| h.kind()).collect::<Vec<_>>(),
        "job workers on"
    );
    Some(WorkerPool::start(
        state.store.clone(),
        handlers,
        PoolSettings::from(&cfg.jobs),
        state.metrics.clone(),
    ))
}

/// The per-call stream token secret: from config, else generated once and
/// kept (mode 0600) in `{data_dir}/keys/stream-token.key`.
pub fn load_token_secret(config: &config::Config) -> std::io::Result<Secret> {
    if let Some(secret) = &config.stream.token_secret {
        return Ok(secret.clone());
    }
    let path = config.data_dir.join("keys").join("stream-token.key");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => return Ok(Secret::new(s.trim())),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is too short", path.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    secret::write_new_private(&path, secret.as_bytes())?;
    Ok(Secret::new(secret))
}
