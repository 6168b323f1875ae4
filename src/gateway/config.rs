//! The `[stream]` section: what a provider stream may do, owned by the
//! runtime that enforces it. Loaded and layered by [`crate::config`].

use serde::Deserialize;

use crate::config::{invalid, ConfigError};

/// Provider media-stream settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Largest WebSocket message accepted; bigger ones close the stream.
    /// A Twilio media frame is about 300 bytes.
    pub max_message_bytes: usize,
    /// Concurrent authenticated streams. A stream takes a slot only once its
    /// `start` is authenticated; past the limit the start is refused (close
    /// 1013, try again later). Default 10000.
    pub max_streams: usize,
    /// Seconds a signed upgrade (`X-Twilio-Signature` verified) may take to
    /// send its `start`. Default 10.
    pub start_timeout_secs: u64,
    /// Upgrades without a signature still waiting for their token-carrying
    /// `start`, at once; more are refused with 503 before upgrade. They hold
    /// no stream slot. Default 64.
    pub max_pending_upgrades: usize,
    /// Milliseconds an unsigned upgrade may take to send its `start` (Twilio
    /// sends it at once). Default 3000.
    pub pending_start_timeout_ms: u64,
    /// After a signature or account matched no cached tenant, the database
    /// is asked again at most this often (tenants added by another process);
    /// changes made through this process are seen at once. Default 1000.
    pub credentials_refresh_ms: u64,
    /// Most `start.customParameters` entries; a start with more is refused.
    /// Default 16.
    pub max_custom_parameters: usize,
    /// Longest `customParameters` name or value, in bytes; a start with a
    /// longer one is refused (a stream token is about 130). Default 512.
    pub max_custom_parameter_bytes: usize,
    /// Longest `mark` name kept, in bytes; longer ones are cut (and flagged
    /// `truncated` in the call log). Default 256.
    pub max_mark_name_bytes: usize,
    /// Call-log entries one stream may add (its start and end are always
    /// written); past it, events are dropped and one `call_log_truncated`
    /// entry says so. Default 2000.
    pub max_call_log_entries: u32,
    /// Call-log writes queued per stream while the database catches up;
    /// when full, events are dropped (lifecycle entries keep a reserve).
    /// Default 256.
    pub call_log_queue: usize,
    /// DTMF events logged per second per stream (bursts of as many); more
    /// are dropped. Default 10.
    pub max_dtmf_per_second: u32,
    /// Messages read per second per stream, sustained; past it, messages are
    /// dropped unread. Twilio sends about 100 (two tracks). Default 1000.
    pub max_messages_per_second: u32,
    /// Messages a stream may send at once above the sustained rate (Twilio
    /// bunches frames after a network stall). Default 5000.
    pub message_burst: u32,
    /// Audio held to reorder frames before a gap is filled with silence.
    pub reorder_window_ms: u32,
    /// Longest a frame waits in the reorder buffer for an earlier one.
    pub max_hold_ms: u64,
    /// Lifetime of per-call stream tokens issued by the server.
    pub token_ttl_secs: u64,
    /// Lets a signed stream without a stream token create a call that
    /// neither our voice webhook nor an outbound call announced, unchecked.
    /// Off (the default), such a call is looked up at the provider's REST
    /// API first and refused unless it exists there and is live: one
    /// captured `X-Twilio-Signature` (it covers the URL only) cannot invent
    /// calls. On: for load tests and labs without the provider's API.
    pub accept_unannounced_calls: bool,
    /// Secret signing per-call stream tokens. Default: generated once and kept
    /// in `{data_dir}/keys/stream-token.key`.
    pub token_secret: Option<crate::secret::Secret>,
    /// Capacity (in chunks) of each per-track channel to a transcription sink;
    /// when full, chunks are shed and counted.
    pub transcription_queue: usize,
    /// Capacity (in chunks) of each channel to a recording sink; when full,
    /// chunks spill to an in-memory backlog (never dropped).
    pub recording_queue: usize,
}

impl StreamConfig {
    /// Checks every bound; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = self;
        if !(1024..=16 * 1024 * 1024).contains(&s.max_message_bytes) {
            return Err(invalid(
                "stream.max_message_bytes",
                "must be between 1 KiB and 16 MiB",
            ));
        }
        if s.max_streams == 0 {
            return Err(invalid("stream.max_streams", "must be at least 1"));
        }
        if s.start_timeout_secs == 0 {
            return Err(invalid("stream.start_timeout_secs", "must be at least 1"));
        }
        if s.reorder_window_ms > 2_000 {
            return Err(invalid("stream.reorder_window_ms", "must be at most 2000"));
        }
        if s.max_hold_ms > 2_000 {
            return Err(invalid("stream.max_hold_ms", "must be at most 2000"));
        }
        if !(10..=86_400).contains(&s.token_ttl_secs) {
            return Err(invalid(
                "stream.token_ttl_secs",
                "must be between 10 and 86400",
            ));
        }
        if let Some(secret) = &s.token_secret {
            if secret.expose().len() < 32 {
                return Err(invalid(
                    "stream.token_secret",
                    "must be at least 32 characters",
                ));
            }
        }
        if s.transcription_queue == 0 || s.recording_queue == 0 {
            return Err(invalid("stream.*_queue", "must be at least 1"));
        }
        if !(1..=100_000).contains(&s.max_pending_upgrades) {
            return Err(invalid(
                "stream.max_pending_upgrades",
                "must be between 1 and 100000",
            ));
        }
        if !(100..=60_000).contains(&s.pending_start_timeout_ms) {
            return Err(invalid(
                "stream.pending_start_timeout_ms",
                "must be between 100 and 60000",
            ));
        }
        if !(10..=3_600_000).contains(&s.credentials_refresh_ms) {
            return Err(invalid(
                "stream.credentials_refresh_ms",
                "must be between 10 and 3600000",
            ));
        }
        // Our own parameters (token, direction, from, to) must fit.
        if !(4..=64).contains(&s.max_custom_parameters) {
            return Err(invalid(
                "stream.max_custom_parameters",
                "must be between 4 and 64",
            ));
        }
        if !(crate::providers::twilio::token::MAX_TOKEN_LEN..=4096)
            .contains(&s.max_custom_parameter_bytes)
        {
            return Err(invalid(
                "stream.max_custom_parameter_bytes",
                "must be between 512 (a stream token) and 4096",
            ));
        }
        if !(16..=4096).contains(&s.max_mark_name_bytes) {
            return Err(invalid(
                "stream.max_mark_name_bytes",
                "must be between 16 and 4096",
            ));
        }
        if !(16..=1_000_000).contains(&s.max_call_log_entries) {
            return Err(invalid(
                "stream.max_call_log_entries",
                "must be between 16 and 1000000",
            ));
        }
        if !(16..=65_536).contains(&s.call_log_queue) {
            return Err(invalid(
                "stream.call_log_queue",
                "must be between 16 and 65536",
            ));
        }
        if !(1..=1_000).contains(&s.max_dtmf_per_second) {
            return Err(invalid(
                "stream.max_dtmf_per_second",
                "must be between 1 and 1000",
            ));
        }
        if !(100..=1_000_000).contains(&s.max_messages_per_second) {
            return Err(invalid(
                "stream.max_messages_per_second",
                "must be between 100 (two Twilio tracks) and 1000000",
            ));
        }
        if !(1..=10_000_000).contains(&s.message_burst) {
            return Err(invalid(
                "stream.message_burst",
                "must be between 1 and 10000000",
            ));
        }
        Ok(())
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            max_streams: 10_000,
            start_timeout_secs: 10,
            max_pending_upgrades: 64,
            pending_start_timeout_ms: 3_000,
            credentials_refresh_ms: 1_000,
            max_custom_parameters: 16,
            max_custom_parameter_bytes: 512,
            max_mark_name_bytes: 256,
            max_call_log_entries: 2_000,
            call_log_queue: 256,
            max_dtmf_per_second: 10,
            max_messages_per_second: 1_000,
            message_burst: 5_000,
            reorder_window_ms: 60,
            max_hold_ms: 100,
            token_ttl_secs: 300,
            accept_unannounced_calls: false,
            token_secret: None,
            transcription_queue: 2048,
            recording_queue: 1024,
        }
    }
}
