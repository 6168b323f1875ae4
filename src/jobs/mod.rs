//! Durable background jobs: a queue in the database (`jobs` table, see
//! [`crate::store::Job`]) and a pool of workers that claim due jobs under a
//! lease, run their handler, and finish, retry (exponential backoff with
//! jitter) or fail them.
//!
//! Guarantees: a job is held by one worker at a time (the claim is a
//! conditional UPDATE and every later write names the lease owner); a
//! worker that dies leaves a lease that lapses, after which any worker (of
//! any node, after a restart) claims the job again. A job may therefore run
//! more than once, so handlers make their effects idempotent (see
//! [`transcribe`] and [`fetch`]): together that gives exactly-once effects.
//!
//! - [`transcribe`]: batch re-transcription of a call's stored recording;
//! - [`fetch`]: download of a provider-side recording into our storage.

pub mod config;
pub mod fetch;
pub mod transcribe;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::jobs::config::JobsConfig;
use crate::metrics::Metrics;
use crate::store::{now_ms, Job, JobStatus, Store};

/// Why a handler's attempt did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    /// May work later (network, storage, busy database): retried with
    /// backoff until the job's attempts run out. `after` is a lower bound on
    /// the delay (a provider's `Retry-After`).
    #[error("{message}")]
    Retry {
        message: String,
        after: Option<Duration>,
    },
    /// Will never work (bad input, missing resource): failed at once.
    #[error("{0}")]
    Permanent(String),
}

impl JobError {
    pub fn retry(message: impl Into<String>) -> Self {
        JobError::Retry {
            message: message.into(),
            after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        JobError::Permanent(message.into())
    }
}

/// Runs the jobs of one kind. Must be idempotent: an attempt may be
/// repeated after a crash or a lost lease.
#[async_trait::async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// The `jobs.kind` this handler runs.
    fn kind(&self) -> &'static str;

    /// One attempt; the JSON it returns is stored as the job's result.
    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<serde_json::Value, JobError>;
}

/// What a running handler may tell the queue.
#[derive(Clone)]
pub struct JobContext {
    store: Store,
    job_id: String,
    owner: String,
    lease: Duration,
    lost: Arc<AtomicBool>,
}

impl JobContext {
    /// Records progress (0.0–1.0) and renews the lease. `false` once the
    /// lease is lost: another worker owns the job, stop early.
    pub async fn progress(&self, progress: f64) -> bool {
        let now = now_ms();
        match self
            .store
            .heartbeat_job(
                &self.job_id,
                &self.owner,
                Some(progress),
                now + self.lease.as_millis() as i64,
                now,
            )
            .await
        {
            Ok(true) => true,
            Ok(false) => {
                self.lost.store(true, Ordering::Relaxed);
                false
            }
            // A database hiccup does not lose the lease by itself.
            Err(_) => !self.lost.load(Ordering::Relaxed),
        }
    }

    /// Whether another worker has taken the job.
    pub fn lease_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }
}

/// The pool's timing, from `[jobs]`.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl From<&JobsConfig> for PoolSettings {
    fn from(c: &JobsConfig) -> Self {
        Self {
            concurrency: c.concurrency,
            poll_interval: Duration::from_millis(c.poll_interval_ms),
            lease: Duration::from_secs(c.lease_secs),
            backoff_base: Duration::from_millis(c.backoff_base_ms),
            backoff_max: Duration::from_millis(c.backoff_max_ms),
        }
    }
}

/// Delay before retry number `attempt` (1 = after the first failure):
/// `base · 2^(attempt-1)` capped at `max`, then jittered to a uniform
/// value in its upper half so workers that failed together spread out.
pub fn backoff(attempt: i64, base: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let full = base.saturating_mul(1u32 << exp).min(max);
    let half = full / 2;
    half + Duration::from_millis(rng.gen_range(0..=half.as_millis() as u64))
}

/// Workers claiming and running jobs until stopped.
pub struct WorkerPool {
    cancel: CancellationToken,
    tracker: TaskTracker,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Worker {
    store: Store,
    handlers: Arc<HashMap<&'static str, Arc<dyn JobHandler>>>,
    kinds: Arc<Vec<&'static str>>,
    owner: String,
    settings: PoolSettings,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
}

impl WorkerPool {
    /// Starts `settings.concurrency` workers for `handlers`' kinds, plus a
    /// task refreshing the queue-depth gauge.
    pub fn start(
        store: Store,
        handlers: Vec<Arc<dyn JobHandler>>,
        settings: PoolSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let kinds: Vec<&'static str> = handlers.iter().map(|h| h.kind()).collect();
        let handlers: HashMap<_, _> = handlers.into_iter().map(|h| (h.kind(), h)).collect();
        let handlers = Arc::new(handlers);
        let kinds = Arc::new(kinds);
        let node = uuid::Uuid::new_v4().simple().to_string();
        let mut tasks = Vec::new();
        for i in 0..settings.concurrency.max(1) {
            let worker = Worker {
                store: store.clone(),
                handlers: handlers.clone(),
                kinds: kinds.clone(),
                owner: format!("{}-{i}", &node[..12]),
                settings: settings.clone(),
                metrics: metrics.clone(),
                cancel: cancel.clone(),
            };
            tasks.push(tracker.spawn(worker.run()));
        }
        let gauge_cancel = cancel.clone();
        let every = settings.poll_interval.max(Duration::from_secs(5));
        tasks.push(tracker.spawn(async move {
            loop {
                refresh_queue_depth(&store, &metrics).await;
                tokio::select! {
                    _ = gauge_cancel.cancelled() => break,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        }));
        tracker.close();
        Self {
            cancel,
            tracker,
            tasks,
        }
    }

    /// Stops claiming, lets running attempts finish for up to `grace`,
    /// then abandons them: their leases lapse and the jobs are claimed
    /// again by the next pool (here after a restart, or on another node).
    pub async fn stop(self, grace: Duration) {
        self.stop_by(tokio::time::Instant::now() + grace).await;
    }

    /// [`WorkerPool::stop`] against a deadline shared with the rest of
    /// shutdown; `false` when running attempts had to be abandoned.
    pub async fn stop_by(self, deadline: tokio::time::Instant) -> bool {
        self.cancel.cancel();
        if tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_ok()
        {
            return true;
        }
        tracing::warn!("jobs still running at shutdown; they will be retried after their lease");
        for t in &self.tasks {
            t.abort();
        }
        false
    }

    /// Stops claiming jobs now (running attempts go on); the first step of
    /// [`WorkerPool::stop_by`], for a shutdown that begins before it waits.
    pub fn stop_claiming(&self) {
        self.cancel.cancel();
    }

    /// Kills the workers at once, as a crash would (tests of lease expiry).
    pub fn abort(self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Aborts a spawned task when dropped, so a worker that is itself aborted
/// (shutdown past the grace period) leaves no handler running and no
/// heartbeat renewing a lease nobody will finish.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sets `callstream_jobs_queue_depth` from the database.
pub async fn refresh_queue_depth(store: &Store, metrics: &Metrics) {
    match store.count_open_jobs().await {
        Ok(counts) => {
            metrics.jobs_queue_depth.reset();
            for c in counts {
                metrics
                    .jobs_queue_depth
                    .with_label_values(&[&c.kind, c.status.as_str()])
                    .set(c.count);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count open jobs"),
    }
}

impl Worker {
    async fn run(self) {
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            let lease_ms = self.settings.lease.as_millis() as i64;
            match self
                .store
                .claim_job(&self.kinds, &self.owner, lease_ms, now_ms())
                .await
            {
                Ok(Some(job)) => self.attempt(job).await,
                Ok(None) => self.idle().await,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim jobs");
                    self.idle().await;
                }
            }
        }
    }

    async fn idle(&self) {
        tokio::select! {
            _ = self.cancel.cancelled() => {}
            _ = tokio::time::sleep(self.settings.poll_interval) => {}
        }
    }

    async fn attempt(&self, job: Job) {
        let kind = job.kind.clone();
        // Leases that lapsed count as attempts too: a job that kills its
        // worker every time must end.
        if job.attempts > job.max_attempts {
            let error = format!(
                "gave up after {} attempts (workers lost); last error: {}",
                job.max_attempts,
                job.error.as_deref().unwrap_or("none")
            );
            self.finish_failed(&job, &error).await;
            return;
        }
        let Some(handler) = self.handlers.get(kind.as_str()).cloned() else {
            self.finish_failed(&job, "no handler for this kind").await;
            return;
        };
        tracing::info!(job_id = %job.id, kind = %kind, attempt = job.attempts, "job started");
        let ctx = JobContext {
            store: self.store.clone(),
            job_id: job.id.clone(),
            owner: self.owner.clone(),
            lease: self.settings.lease,
            lost: Arc::new(AtomicBool::new(false)),
        };
        // Renew the lease while the handler runs.
        let beat_ctx = ctx.clone();
        let beat_every = (self.settings.lease / 3).max(Duration::from_millis(50));
        let _heartbeat = AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(beat_every).await;
                let now = now_ms();
                if let Ok(false) = beat_ctx
                    .store
                    .heartbeat_job(
                        &beat_ctx.job_id,
                        &beat_ctx.owner,
                        None,
                        now + beat_ctx.lease.as_millis() as i64,
                        now,
                    )
                    .await
                {
                    beat_ctx.lost.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }));
        // Its own task, so a panicking handler costs an attempt, not the worker.
        let run_job = job.clone();
        let run_ctx = ctx.clone();
        let mut running = AbortOnDrop(tokio::spawn(async move {
            handler.run(&run_job, &run_ctx).await
        }));
        let outcome = (&mut running.0).await;
        drop(_heartbeat);
        let outcome = outcome.unwrap_or_else(|e| {
            Err(JobError::retry(if e.is_panic() {
                "the job's handler panicked"
            } else {
                "the job's handler was cancelled"
            }))
        });
        if ctx.lease_lost() {
            tracing::warn!(job_id = %job.id, kind = %kind, "lease lost; another worker has the job");
            return;
        }
        let now = now_ms();
        match outcome {
            Ok(result) => {
                match self
                    .store
                    .complete_job(&job.id, &self.owner, &result, now)
                    .await
                {
                    Ok(true) => {
                        self.count(&kind, "succeeded");
                        tracing::info!(job_id = %job.id, kind = %kind, "job succeeded");
                    }
                    Ok(false) => tracing::warn!(job_id = %job.id, "lease lost before completion"),
                    Err(e) => tracing::warn!(job_id = %job.id, error = %e, "cannot complete job"),
                }
            }
            Err(JobError::Retry { message, after }) if job.attempts < job.max_attempts => {
                let mut delay = backoff(
                    job.attempts,
                    self.settings.backoff_base,
                    self.settings.backoff_max,
                    &mut rand::thread_rng(),
                );
                if let Some(after) = after {
                    delay = delay.max(after.min(self.settings.backoff_max));
                }
                let run_after = now + delay.as_millis() as i64;
                match self
                    .store
                    .retry_job(&job.id, &self.owner, &message, run_after, now)
                    .await
                {
                    Ok(_) => {
                        self.count(&kind, "retried");
                        tracing::warn!(
                            job_id = %job.id, kind = %kind, attempt = job.attempts,
                            retry_in_ms = delay.as_millis() as u64, error = %message,
                            "job attempt failed; will retry"
                        );
                    }
                    Err(e) => tracing::warn!(job_id = %job.id, error = %e, "cannot requeue job"),
                }
            }
            Err(e) => {
                let error = match &e {
                    JobError::Retry { message, .. } => {
                        format!("gave up after {} attempts: {message}", job.attempts)
                    }
                    JobError::Permanent(m) => m.clone(),
                };
                self.finish_failed(&job, &error).await;
            }
        }
    }

    async fn finish_failed(&self, job: &Job, error: &str) {
        match self
            .store
            .fail_job(&job.id, &self.owner, error, now_ms())
            .await
        {
            Ok(true) => {
                self.count(&job.kind, "failed");
                tracing::warn!(job_id = %job.id, kind = %job.kind, error = %error, "job failed");
            }
            Ok(false) => tracing::warn!(job_id = %job.id, "lease lost before failing the job"),
            Err(e) => tracing::warn!(job_id = %job.id, error = %e, "cannot mark job failed"),
        }
    }

    fn count(&self, kind: &str, outcome: &str) {
        self.metrics
            .jobs_total
            .with_label_values(&[kind, outcome])
            .inc();
    }
}

/// Whether a job is finished (for pollers).
pub fn is_finished(status: JobStatus) -> bool {
    matches!(status, JobStatus::Succeeded | JobStatus::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(10);
        for attempt in 1..=12 {
            let full = (base * 2u32.pow(attempt as u32 - 1)).min(max);
            for _ in 0..50 {
                let d = backoff(attempt, base, max, &mut rng);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
            }
        }
        // Jitter spreads retries.
        let spread: std::collections::HashSet<_> =
            (0..20).map(|_| backoff(5, base, max, &mut rng)).collect();
        assert!(spread.len() > 10);
        assert!(backoff(0, base, max, &mut rng) <= base);
    }
}
