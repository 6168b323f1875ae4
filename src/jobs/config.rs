//! The `[jobs]` section: the durable job queue's worker pool, owned by
//! the pool it configures. Loaded and layered by [`crate::config`].

use serde::Deserialize;

use crate::config::{invalid, ConfigError};

/// The durable job queue's worker pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Run a worker pool in this process (several nodes may run one each).
    pub enabled: bool,
    /// Jobs run at once by this process.
    pub concurrency: usize,
    /// How often an idle worker looks for due jobs.
    pub poll_interval_ms: u64,
    /// A claimed job is the worker's for this long, renewed while it runs;
    /// a dead worker's job is claimed again once it lapses.
    pub lease_secs: u64,
    /// Attempts before a job fails for good.
    pub max_attempts: u32,
    /// First retry delay; doubled each attempt, with jitter.
    pub backoff_base_ms: u64,
    /// Longest retry delay.
    pub backoff_max_ms: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            concurrency: 2,
            poll_interval_ms: 500,
            lease_secs: 60,
            max_attempts: 5,
            backoff_base_ms: 2_000,
            backoff_max_ms: 300_000,
        }
    }
}

impl JobsConfig {
    /// Checks every bound; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let j = self;
        if !(1..=64).contains(&j.concurrency) {
            return Err(invalid("jobs.concurrency", "must be between 1 and 64"));
        }
        if !(10..=60_000).contains(&j.poll_interval_ms) {
            return Err(invalid(
                "jobs.poll_interval_ms",
                "must be between 10 and 60000",
            ));
        }
        if !(1..=3600).contains(&j.lease_secs) {
            return Err(invalid("jobs.lease_secs", "must be between 1 and 3600"));
        }
        if !(1..=100).contains(&j.max_attempts) {
            return Err(invalid("jobs.max_attempts", "must be between 1 and 100"));
        }
        if j.backoff_base_ms == 0 || j.backoff_base_ms > j.backoff_max_ms {
            return Err(invalid(
                "jobs.backoff_base_ms",
                "must be at least 1 and at most jobs.backoff_max_ms",
            ));
        }
        Ok(())
    }
}
