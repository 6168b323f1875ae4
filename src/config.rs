//! Gateway configuration: an optional TOML file, then `CALLSTREAM_*` environment
//! variables, then command-line flags, each overriding the one before.
//!
//! Everything has a default so `callstream serve` needs no file at all; the
//! result is validated once at start so a typo fails loudly instead of being
//! ignored (unknown keys in the file and unknown `CALLSTREAM_*` variables are
//! errors).
//!
//! Each section's struct, defaults and bounds live in the domain that owns
//! it (`[stream]` in [`crate::gateway::config`], `[http]`, `[auth]` and
//! `[events]` in [`crate::api::config`], `[asr]` in [`crate::asr::config`],
//! `[providers]` in [`crate::providers::config`], `[recording]` in
//! [`crate::recording::config`], `[jobs]` in [`crate::jobs::config`]); this
//! module holds the root keys, the layering, and a `validate` that asks each
//! section in turn.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::api::config::{AuthConfig, EventsConfig, HttpConfig};
use crate::asr::config::AsrConfig;
use crate::gateway::config::StreamConfig;
use crate::jobs::config::JobsConfig;
use crate::providers::config::ProvidersConfig;
use crate::recording::config::RecordingConfig;

/// Errors found while loading or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("unknown environment variable {0} (no such setting)")]
    UnknownEnv(String),
    #[error("invalid setting `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP/WebSocket server binds to.
    pub listen: SocketAddr,
    /// Directory for the SQLite database, keys and (later) recordings.
    pub data_dir: PathBuf,
    /// Base URL providers use to reach us (scheme, host, port as seen from
    /// outside, e.g. behind a proxy). Provider signatures are computed over
    /// URLs built from it. Default: `http://{listen}`.
    #[serde(deserialize_with = "de_url")]
    pub public_url: Option<Url>,
    /// Database URL (`sqlite://…` or `postgres://…`). Default: a SQLite file in
    /// the data dir, created and migrated on first start.
    pub database_url: Option<String>,
    /// Media stream settings.
    pub stream: StreamConfig,
    /// Local speech recognition.
    pub asr: AsrConfig,
    /// Telephony provider APIs.
    pub providers: ProvidersConfig,
    /// Encrypted call recordings.
    pub recording: RecordingConfig,
    /// Background jobs (batch transcription, provider recording fetch).
    pub jobs: JobsConfig,
    /// HTTP server limits (API and WebSocket upgrades).
    pub http: HttpConfig,
    /// People signing in to the browser console: sessions, login limits.
    pub auth: AuthConfig,
    /// The tenant event log behind `/v1/events`.
    pub events: EventsConfig,
    /// How long shutdown waits, from the signal, for open streams, running
    /// jobs and a retention sweep to finish (one deadline for all) before
    /// forcing them.
    pub shutdown_grace_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            public_url: None,
            database_url: None,
            stream: StreamConfig::default(),
            asr: AsrConfig::default(),
            providers: ProvidersConfig::default(),
            recording: RecordingConfig::default(),
            jobs: JobsConfig::default(),
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            events: EventsConfig::default(),
            shutdown_grace_secs: 10,
        }
    }
}

/// A bad value for `key` (the dotted name the operator wrote), and why.
pub(crate) fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Values given on the command line; `None` leaves the lower layers alone.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub public_url: Option<Url>,
}

fn de_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
    let raw = String::deserialize(d)?;
    Url::parse(&raw).map(Some).map_err(serde::de::Error::custom)
}

pub(crate) fn de_url_required<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Url, D::Error> {
    let raw = String::deserialize(d)?;
    Url::parse(&raw).map_err(serde::de::Error::custom)
}

fn parse_env<T: FromStr>(name: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| ConfigError::Env {
        name: name.to_string(),
        message: e.to_string(),
    })
}

/// Environment variables that are not settings but are read by the CLI.
const NON_SETTING_ENV: &[&str] = &["CALLSTREAM_CONFIG", "CALLSTREAM_LOG"];

macro_rules! apply_env {
    ($cfg:expr, $name:expr, $value:expr; $($key:literal => $($field:ident).+ $(as $opt:ident)?),+ $(,)?) => {
        match $name.strip_prefix("CALLSTREAM_").unwrap_or_default() {
            $($key => { apply_env!(@set $cfg, $name, $value, $($field).+ $(, $opt)?); })+
            _ => return Err(ConfigError::UnknownEnv($name.to_string())),
        }
    };
    (@set $cfg:expr, $name:expr, $value:expr, $($field:ident).+, opt) => {
        $cfg.$($field).+ = Some(parse_env($name, $value)?)
    };
    (@set $cfg:expr, $name:expr, $value:expr, $($field:ident).+) => {
        $cfg.$($field).+ = parse_env($name, $value)?
    };
}

impl Config {
    /// Loads file (if any), then environment, then flags; validates the result.
    /// The defaults, serving on `listen` with data under `data_dir` (no
    /// file, no environment): what an embedded gateway starts from (tests,
    /// the evaluation).
    pub fn local(listen: SocketAddr, data_dir: &Path) -> Result<Self, ConfigError> {
        Self::load(
            None,
            Vec::new(),
            &Overrides {
                listen: Some(listen),
                data_dir: Some(data_dir.to_path_buf()),
                public_url: None,
            },
        )
    }

    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut cfg = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        cfg.apply_env(env)?;
        if let Some(listen) = flags.listen {
            cfg.listen = listen;
        }
        if let Some(dir) = &flags.data_dir {
            cfg.data_dir = dir.clone();
        }
        if let Some(url) = &flags.public_url {
            cfg.public_url = Some(url.clone());
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })
    }

    fn apply_env(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (name, value) in env {
            if !name.starts_with("CALLSTREAM_") || NON_SETTING_ENV.contains(&name.as_str()) {
                continue;
            }
            let value = value.as_str();
            apply_env!(self, name.as_str(), value;
                "LISTEN" => listen,
                "DATA_DIR" => data_dir,
                "PUBLIC_URL" => public_url as opt,
                "DATABASE_URL" => database_url as opt,
                "SHUTDOWN_GRACE_SECS" => shutdown_grace_secs,
                "STREAM__MAX_MESSAGE_BYTES" => stream.max_message_bytes,
                "STREAM__MAX_STREAMS" => stream.max_streams,
                "STREAM__START_TIMEOUT_SECS" => stream.start_timeout_secs,
                "STREAM__REORDER_WINDOW_MS" => stream.reorder_window_ms,
                "STREAM__MAX_HOLD_MS" => stream.max_hold_ms,
                "STREAM__TOKEN_TTL_SECS" => stream.token_ttl_secs,
                "STREAM__TOKEN_SECRET" => stream.token_secret as opt,
                "STREAM__ACCEPT_UNANNOUNCED_CALLS" => stream.accept_unannounced_calls,
                "STREAM__TRANSCRIPTION_QUEUE" => stream.transcription_queue,
                "STREAM__RECORDING_QUEUE" => stream.recording_queue,
                "STREAM__MAX_PENDING_UPGRADES" => stream.max_pending_upgrades,
                "STREAM__PENDING_START_TIMEOUT_MS" => stream.pending_start_timeout_ms,
                "STREAM__CREDENTIALS_REFRESH_MS" => stream.credentials_refresh_ms,
                "STREAM__MAX_CUSTOM_PARAMETERS" => stream.max_custom_parameters,
                "STREAM__MAX_CUSTOM_PARAMETER_BYTES" => stream.max_custom_parameter_bytes,
                "STREAM__MAX_MARK_NAME_BYTES" => stream.max_mark_name_bytes,
                "STREAM__MAX_CALL_LOG_ENTRIES" => stream.max_call_log_entries,
                "STREAM__CALL_LOG_QUEUE" => stream.call_log_queue,
                "STREAM__MAX_DTMF_PER_SECOND" => stream.max_dtmf_per_second,
                "STREAM__MAX_MESSAGES_PER_SECOND" => stream.max_messages_per_second,
                "STREAM__MESSAGE_BURST" => stream.message_burst,
                "HTTP__MAX_CONNECTIONS" => http.max_connections,
                "HTTP__HEADER_READ_TIMEOUT_SECS" => http.header_read_timeout_secs,
                "HTTP__IDLE_TIMEOUT_SECS" => http.idle_timeout_secs,
                "HTTP__BODY_TIMEOUT_SECS" => http.body_timeout_secs,
                "ASR__ENABLED" => asr.enabled,
                "ASR__MODEL_PATH" => asr.model_path,
                "ASR__THREADS_PER_JOB" => asr.threads_per_job,
                "ASR__MAX_PARALLEL_JOBS" => asr.max_parallel_jobs,
                "ASR__PARTIAL_INTERVAL_MS" => asr.partial_interval_ms,
                "ASR__END_SILENCE_MS" => asr.end_silence_ms,
                "ASR__MAX_UTTERANCE_MS" => asr.max_utterance_ms,
                "ASR__MIN_AUDIO_CTX" => asr.min_audio_ctx,
                "ASR__MAX_LIVE_CALLS" => asr.max_live_calls,
                "PROVIDERS__TWILIO__API_BASE_URL" => providers.twilio.api_base_url,
                "PROVIDERS__TWILIO__REQUEST_TIMEOUT_MS" => providers.twilio.request_timeout_ms,
                "RECORDING__ENABLED" => recording.enabled,
                "RECORDING__DIR" => recording.dir as opt,
                "RECORDING__MASTER_KEY_FILE" => recording.master_key_file as opt,
                "RECORDING__MASTER_KEY" => recording.master_key as opt,
                "RECORDING__MAX_DURATION_SECS" => recording.max_duration_secs,
                "RECORDING__URL_SIGNING_KEYS" => recording.url_signing_keys as opt,
                "RECORDING__URL_TTL_MINUTES" => recording.url_ttl_minutes,
                "RECORDING__RETENTION_INTERVAL_SECS" => recording.retention_interval_secs,
                "JOBS__ENABLED" => jobs.enabled,
                "JOBS__CONCURRENCY" => jobs.concurrency,
                "JOBS__POLL_INTERVAL_MS" => jobs.poll_interval_ms,
                "JOBS__LEASE_SECS" => jobs.lease_secs,
                "JOBS__MAX_ATTEMPTS" => jobs.max_attempts,
                "JOBS__BACKOFF_BASE_MS" => jobs.backoff_base_ms,
                "JOBS__BACKOFF_MAX_MS" => jobs.backoff_max_ms,
                "AUTH__SESSION_IDLE_MINUTES" => auth.session_idle_minutes,
                "AUTH__SESSION_ABSOLUTE_HOURS" => auth.session_absolute_hours,
                "AUTH__LOGIN_MAX_FAILURES_PER_ACCOUNT" => auth.login_max_failures_per_account,
                "AUTH__LOGIN_MAX_FAILURES_PER_ADDRESS" => auth.login_max_failures_per_address,
                "AUTH__LOGIN_WINDOW_SECS" => auth.login_window_secs,
                "AUTH__LOGIN_TRACKED_KEYS" => auth.login_tracked_keys,
                "EVENTS__MAX_PER_TENANT" => events.max_per_tenant,
                "EVENTS__MAX_AGE_HOURS" => events.max_age_hours,
            );
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.public_url {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid("public_url", "scheme must be http or https"));
            }
            if url.host().is_none() {
                return Err(invalid("public_url", "must name a host"));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(invalid("public_url", "must not carry a query or fragment"));
            }
        }
        if let Some(db) = &self.database_url {
            if !(db.starts_with("sqlite:") || db.starts_with("postgres")) {
                return Err(invalid(
                    "database_url",
                    "must start with sqlite: or postgres://",
                ));
            }
        }
        self.stream.validate()?;
        self.auth.validate()?;
        self.events.validate()?;
        self.http.validate()?;
        self.asr.validate()?;
        self.providers.validate()?;
        self.recording.validate()?;
        self.jobs.validate()?;
        Ok(())
    }

    /// Root of the local recording storage.
    pub fn recording_dir(&self) -> PathBuf {
        self.recording
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("recordings"))
    }

    /// Where the recording master key is kept when not given directly.
    pub fn master_key_file(&self) -> PathBuf {
        self.recording
            .master_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys").join("master.key"))
    }

    /// Where the download link signing keys are kept when not configured.
    pub fn url_signing_key_file(&self) -> PathBuf {
        self.data_dir.join("keys").join("url-signing.keys")
    }

    /// The base URL providers call, defaulting to `http://{listen}`.
    pub fn public_url(&self) -> Url {
        match &self.public_url {
            Some(url) => url.clone(),
            None => {
                let host = match self.listen.ip() {
                    ip if ip.is_unspecified() => "localhost".to_string(),
                    std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                    ip => ip.to_string(),
                };
                // Only a malformed host could fail here, and ours come from an IP.
                Url::parse(&format!("http://{host}:{}", self.listen.port()))
                    .unwrap_or_else(|_| Url::parse("http://localhost").expect("literal URL"))
            }
        }
    }

    /// The database URL, defaulting to a SQLite file in the data dir.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("callstream.db").display()
            )
        })
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_nothing() {
        let cfg = Config::load(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(cfg.public_url().as_str(), "http://127.0.0.1:8080/");
        assert!(cfg
            .database_url()
            .starts_with("sqlite://data/callstream.db"));
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\nshutdown_grace_secs = 3\n[stream]\nmax_streams = 5\n",
        )
        .unwrap();
        let cfg = Config::load(
            Some(&path),
            env(&[
                ("CALLSTREAM_STREAM__MAX_STREAMS", "7"),
                ("CALLSTREAM_LISTEN", "0.0.0.0:9001"),
                ("HOME", "/root"),
            ]),
            &Overrides {
                listen: Some("127.0.0.1:9002".parse().unwrap()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.stream.max_streams, 7);
        assert_eq!(cfg.shutdown_grace_secs, 3);
        assert_eq!(cfg.listen.port(), 9002);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listn = \"0.0.0.0:9000\"\n").unwrap();
        let err = Config::load(Some(&path), env(&[]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");

        let err = Config::load(
            None,
            env(&[("CALLSTREAM_LISTN", "x")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::UnknownEnv(_)), "{err}");
    }

    #[test]
    fn invalid_values_are_explained() {
        let err = Config::load(
            None,
            env(&[("CALLSTREAM_STREAM__MAX_STREAMS", "many")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("CALLSTREAM_STREAM__MAX_STREAMS"));

        let err = Config::load(
            None,
            env(&[("CALLSTREAM_PUBLIC_URL", "ftp://example.com")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("public_url"), "{err}");

        let err = Config::load(
            None,
            env(&[("CALLSTREAM_STREAM__MAX_STREAMS", "0")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("max_streams"), "{err}");
    }

    #[test]
    fn hostile_client_limits_are_settings_with_checked_ranges() {
        let cfg = Config::load(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(cfg.stream.max_pending_upgrades, 64);
        assert_eq!(cfg.http.header_read_timeout_secs, 10);
        let cfg = Config::load(
            None,
            env(&[
                ("CALLSTREAM_STREAM__MAX_PENDING_UPGRADES", "8"),
                ("CALLSTREAM_STREAM__MAX_MARK_NAME_BYTES", "32"),
                ("CALLSTREAM_HTTP__MAX_CONNECTIONS", "100"),
                ("CALLSTREAM_HTTP__IDLE_TIMEOUT_SECS", "5"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(cfg.stream.max_pending_upgrades, 8);
        assert_eq!(cfg.stream.max_mark_name_bytes, 32);
        assert_eq!(cfg.http.max_connections, 100);
        assert_eq!(cfg.http.idle_timeout_secs, 5);
        for (name, value, key) in [
            (
                "CALLSTREAM_STREAM__MAX_PENDING_UPGRADES",
                "0",
                "stream.max_pending_upgrades",
            ),
            (
                "CALLSTREAM_STREAM__MAX_CUSTOM_PARAMETER_BYTES",
                "100",
                "stream.max_custom_parameter_bytes",
            ),
            (
                "CALLSTREAM_STREAM__MAX_MESSAGES_PER_SECOND",
                "10",
                "stream.max_messages_per_second",
            ),
            (
                "CALLSTREAM_HTTP__HEADER_READ_TIMEOUT_SECS",
                "0",
                "http.header_read_timeout_secs",
            ),
            (
                "CALLSTREAM_HTTP__MAX_CONNECTIONS",
                "0",
                "http.max_connections",
            ),
        ] {
            let err = Config::load(None, env(&[(name, value)]), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }
}
