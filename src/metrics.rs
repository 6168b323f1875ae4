//! Prometheus metrics. Each `AppState` owns its own registry so tests running
//! several servers in one process do not share counters.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Reasons a received stream message is dropped; fixed so label cardinality is bounded.
pub const DROP_REASONS: &[&str] = &[
    "malformed",
    "binary",
    "before_start",
    "stream_mismatch",
    "duplicate_start",
    "unknown_event",
    "oversized",
    "late",
    "duplicate",
    "overlap",
    "empty",
    "out_of_range",
    "recording_overflow",
];

/// Per-stream bounds on what a client controls ([`Metrics::limit_hit`]).
pub const STREAM_LIMITS: &[&str] = &[
    "mark_name",
    "call_log_entries",
    "call_log_queue",
    "dtmf_rate",
    "message_rate",
];

/// Why the HTTP server closed a connection itself ([`Metrics::http_closed`]).
pub const HTTP_CLOSE_REASONS: &[&str] = &["header_timeout", "idle_timeout", "body_timeout"];

/// How recordings end; fixed so label cardinality is bounded.
pub const RECORDING_OUTCOMES: &[&str] = &["completed", "interrupted", "failed"];

/// Why a recording failed: storage (full, unwritable), key (tenant key
/// unavailable), database, overflow (the writer fell a minute behind).
pub const RECORDING_FAILURES: &[&str] = &["storage", "key", "database", "overflow"];

pub struct Metrics {
    registry: Registry,
    pub active_streams: IntGauge,
    pub frames_in: IntCounter,
    frames_dropped: IntCounterVec,
    pub frame_latency: Histogram,
    pub stream_start_latency: Histogram,
    pub partial_latency: Histogram,
    pub final_latency: Histogram,
    streams_total: IntCounterVec,
    pub stream_rejections: IntCounterVec,
    recordings_total: IntCounterVec,
    recording_failures: IntCounterVec,
    /// Ciphertext bytes of finalised recordings.
    pub recording_bytes: IntCounter,
    /// Audio seconds in finalised recordings.
    pub recording_seconds: prometheus::Counter,
    quota_rejections: IntCounterVec,
    webhooks: IntCounterVec,
    /// Job attempts ended, by kind and outcome (succeeded, retried, failed).
    pub jobs_total: IntCounterVec,
    /// Unfinished jobs by kind and status (queued, running), refreshed by
    /// the worker pool.
    pub jobs_queue_depth: prometheus::IntGaugeVec,
    /// Calls streaming now by live-caption state: `live` (holding a live
    /// slot) or `waiting` (no slot: transcribed after the call).
    pub live_calls: prometheus::IntGaugeVec,
    /// Live-caption admissions: admitted, refused (no slot free), lost (a
    /// slot given up after falling a backlog behind).
    live_admissions: IntCounterVec,
    /// Calls queued for transcription from their recording after they ended.
    pub after_call_transcriptions: IntCounter,
    limit_hits: IntCounterVec,
    /// Database look-ups of tenant credentials (signature and token checks
    /// are answered from memory otherwise).
    pub credential_lookups: IntCounter,
    /// Unsigned upgrades waiting for their `start`.
    pub pending_upgrades: IntGauge,
    /// HTTP connections open (not yet upgraded).
    pub http_connections: IntGauge,
    http_closed: IntCounterVec,
}

/// Quotas that can turn work away, and where ([`Metrics::quota_rejected`]).
pub const QUOTAS: &[&str] = &[
    "concurrent_streams",
    "transcription_minutes",
    "recording_minutes",
];
pub const QUOTA_POINTS: &[&str] = &["call_answer", "stream_start", "job_create"];
/// Outcomes of live-caption admission ([`Metrics::live_admission`]).
pub const LIVE_ADMISSIONS: &[&str] = &["admitted", "refused", "lost"];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let active_streams = IntGauge::new(
            "callstream_active_streams",
            "Provider media streams currently open and authenticated",
        )
        .expect("valid metric");
        let frames_in = IntCounter::new(
            "callstream_frames_in_total",
            "Media frames received on provider streams",
        )
        .expect("valid metric");
        let frames_dropped = IntCounterVec::new(
            Opts::new(
                "callstream_frames_dropped_total",
                "Stream messages or media chunks dropped, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        // Fine buckets at the low end: a frame normally takes microseconds.
        let frame_latency = Histogram::with_opts(
            HistogramOpts::new(
                "callstream_frame_handling_seconds",
                "Time from a media frame read off the socket to its audio handed to sinks",
            )
            .buckets(vec![
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
                0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        )
        .expect("valid metric");
        let stream_start_latency = Histogram::with_opts(
            HistogramOpts::new(
                "callstream_stream_start_seconds",
                "Time from a stream's start message to its session being set up (auth, call row)",
            )
            .buckets(vec![
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("valid metric");
        // Caption latencies: from the arrival of the audio a caption ends
        // with to the caption being published.
        let caption_buckets = vec![
            0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 20.0,
        ];
        let partial_latency = Histogram::with_opts(
            HistogramOpts::new(
                "callstream_caption_partial_latency_seconds",
                "Speech in to partial caption out (arrival of the audio a partial ends with)",
            )
            .buckets(caption_buckets.clone()),
        )
        .expect("valid metric");
        let final_latency = Histogram::with_opts(
            HistogramOpts::new(
                "callstream_caption_final_latency_seconds",
                "End of an utterance's speech to its final segment out",
            )
            .buckets(caption_buckets),
        )
        .expect("valid metric");
        let streams_total = IntCounterVec::new(
            Opts::new(
                "callstream_streams_total",
                "Media streams ended, by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let stream_rejections = IntCounterVec::new(
            Opts::new(
                "callstream_stream_rejections_total",
                "Media streams refused before any state was allocated, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let recordings_total = IntCounterVec::new(
            Opts::new(
                "callstream_recordings_total",
                "Recordings finalised, by outcome (completed, interrupted: recovered after a crash, failed)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let recording_failures = IntCounterVec::new(
            Opts::new(
                "callstream_recording_failures_total",
                "Recordings that failed while the call went on, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let recording_bytes = IntCounter::new(
            "callstream_recording_bytes_total",
            "Encrypted bytes of finalised recordings",
        )
        .expect("valid metric");
        let recording_seconds = prometheus::Counter::new(
            "callstream_recording_seconds_total",
            "Seconds of audio in finalised recordings",
        )
        .expect("valid metric");
        let quota_rejections = IntCounterVec::new(
            Opts::new(
                "callstream_quota_rejections_total",
                "Work refused because a tenant quota was used up, by quota and where",
            ),
            &["quota", "at"],
        )
        .expect("valid metric");
        let webhooks = IntCounterVec::new(
            Opts::new(
                "callstream_webhooks_total",
                "Provider webhooks received, by kind and outcome",
            ),
            &["kind", "outcome"],
        )
        .expect("valid metric");
        let jobs_total = IntCounterVec::new(
            Opts::new(
                "callstream_jobs_total",
                "Background job attempts ended, by kind and outcome",
            ),
            &["kind", "outcome"],
        )
        .expect("valid metric");
        let jobs_queue_depth = prometheus::IntGaugeVec::new(
            Opts::new(
                "callstream_jobs_queue_depth",
                "Unfinished background jobs, by kind and status",
            ),
            &["kind", "status"],
        )
        .expect("valid metric");
        let live_calls = prometheus::IntGaugeVec::new(
            Opts::new(
                "callstream_live_calls",
                "Calls streaming now, by live-caption state (live, waiting)",
            ),
            &["state"],
        )
        .expect("valid metric");
        let live_admissions = IntCounterVec::new(
            Opts::new(
                "callstream_live_admissions_total",
                "Live-caption admissions of calls, by outcome (admitted, refused, lost)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let after_call_transcriptions = IntCounter::new(
            "callstream_after_call_transcriptions_total",
            "Calls queued for transcription from their recording after they ended",
        )
        .expect("valid metric");
        let limit_hits = IntCounterVec::new(
            Opts::new(
                "callstream_stream_limit_hits_total",
                "Stream messages or call-log entries dropped or cut by a per-stream bound, by bound",
            ),
            &["limit"],
        )
        .expect("valid metric");
        let credential_lookups = IntCounter::new(
            "callstream_tenant_credential_lookups_total",
            "Database look-ups of tenant provider credentials for signature and token checks",
        )
        .expect("valid metric");
        let pending_upgrades = IntGauge::new(
            "callstream_pending_upgrades",
            "Unsigned stream upgrades waiting for an authenticated start",
        )
        .expect("valid metric");
        let http_connections = IntGauge::new(
            "callstream_http_connections",
            "HTTP connections open (WebSockets leave this count once upgraded)",
        )
        .expect("valid metric");
        let http_closed = IntCounterVec::new(
            Opts::new(
                "callstream_http_connections_closed_total",
                "HTTP connections the server closed itself, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for m in [
            Box::new(live_calls.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(live_admissions.clone()),
            Box::new(after_call_transcriptions.clone()),
            Box::new(active_streams.clone()),
            Box::new(frames_in.clone()),
            Box::new(frames_dropped.clone()),
            Box::new(frame_latency.clone()),
            Box::new(stream_start_latency.clone()),
            Box::new(partial_latency.clone()),
            Box::new(final_latency.clone()),
            Box::new(streams_total.clone()),
            Box::new(stream_rejections.clone()),
            Box::new(recordings_total.clone()),
            Box::new(recording_failures.clone()),
            Box::new(recording_bytes.clone()),
            Box::new(recording_seconds.clone()),
            Box::new(quota_rejections.clone()),
            Box::new(webhooks.clone()),
            Box::new(jobs_total.clone()),
            Box::new(jobs_queue_depth.clone()),
            Box::new(limit_hits.clone()),
            Box::new(credential_lookups.clone()),
            Box::new(pending_upgrades.clone()),
            Box::new(http_connections.clone()),
            Box::new(http_closed.clone()),
        ] {
            registry.register(m).expect("metric registered once");
        }
        for reason in DROP_REASONS {
            frames_dropped.with_label_values(&[reason]);
        }
        for limit in STREAM_LIMITS {
            limit_hits.with_label_values(&[limit]);
        }
        for reason in HTTP_CLOSE_REASONS {
            http_closed.with_label_values(&[reason]);
        }
        for outcome in RECORDING_OUTCOMES {
            recordings_total.with_label_values(&[outcome]);
        }
        for reason in RECORDING_FAILURES {
            recording_failures.with_label_values(&[reason]);
        }
        for state in ["live", "waiting"] {
            live_calls.with_label_values(&[state]);
        }
        for outcome in LIVE_ADMISSIONS {
            live_admissions.with_label_values(&[outcome]);
        }
        for quota in QUOTAS {
            for at in QUOTA_POINTS {
                quota_rejections.with_label_values(&[quota, at]);
            }
        }
        Self {
            registry,
            active_streams,
            frames_in,
            frames_dropped,
            frame_latency,
            stream_start_latency,
            partial_latency,
            final_latency,
            streams_total,
            stream_rejections,
            recordings_total,
            recording_failures,
            recording_bytes,
            recording_seconds,
            quota_rejections,
            webhooks,
            jobs_total,
            jobs_queue_depth,
            live_calls,
            live_admissions,
            after_call_transcriptions,
            limit_hits,
            credential_lookups,
            pending_upgrades,
            http_connections,
            http_closed,
        }
    }

    /// Counts a live-caption admission; `outcome` is one of [`LIVE_ADMISSIONS`].
    pub fn live_admission(&self, outcome: &'static str) {
        debug_assert!(LIVE_ADMISSIONS.contains(&outcome));
        self.live_admissions.with_label_values(&[outcome]).inc();
    }

    /// Counts a message or entry a per-stream bound turned away; `limit`
    /// is one of [`STREAM_LIMITS`].
    pub fn limit_hit(&self, limit: &'static str) {
        debug_assert!(STREAM_LIMITS.contains(&limit), "unknown limit {limit}");
        self.limit_hits.with_label_values(&[limit]).inc();
    }

    pub fn limit_hit_count(&self, limit: &str) -> u64 {
        self.limit_hits.with_label_values(&[limit]).get()
    }

    /// Counts a connection the HTTP server closed; `reason` is one of
    /// [`HTTP_CLOSE_REASONS`].
    pub fn http_closed(&self, reason: &'static str) {
        debug_assert!(HTTP_CLOSE_REASONS.contains(&reason));
        self.http_closed.with_label_values(&[reason]).inc();
    }

    /// Counts work refused by a quota; names from [`QUOTAS`] and
    /// [`QUOTA_POINTS`].
    pub fn quota_rejected(&self, quota: &'static str, at: &'static str) {
        debug_assert!(QUOTAS.contains(&quota) && QUOTA_POINTS.contains(&at));
        self.quota_rejections.with_label_values(&[quota, at]).inc();
    }

    /// Counts a provider webhook: `kind` voice/call/stream/recording,
    /// `outcome` a fixed word (applied, duplicate, rejected, …).
    pub fn webhook(&self, kind: &'static str, outcome: &'static str) {
        self.webhooks.with_label_values(&[kind, outcome]).inc();
    }

    /// Counts a dropped message; `reason` must be one of [`DROP_REASONS`].
    pub fn dropped(&self, reason: &'static str, n: u64) {
        debug_assert!(
            DROP_REASONS.contains(&reason),
            "unknown drop reason {reason}"
        );
        self.frames_dropped.with_label_values(&[reason]).inc_by(n);
    }

    pub fn dropped_count(&self, reason: &str) -> u64 {
        self.frames_dropped.with_label_values(&[reason]).get()
    }

    pub fn stream_ended(&self, outcome: &'static str) {
        self.streams_total.with_label_values(&[outcome]).inc();
    }

    pub fn rejected(&self, reason: &'static str) {
        self.stream_rejections.with_label_values(&[reason]).inc();
    }

    /// Counts a finalised recording; `outcome` is one of [`RECORDING_OUTCOMES`].
    pub fn recording_ended(&self, outcome: &'static str) {
        debug_assert!(RECORDING_OUTCOMES.contains(&outcome));
        self.recordings_total.with_label_values(&[outcome]).inc();
    }

    /// Counts a recording failure; `reason` is one of [`RECORDING_FAILURES`].
    pub fn recording_failed(&self, reason: &'static str) {
        debug_assert!(RECORDING_FAILURES.contains(&reason));
        self.recording_failures.with_label_values(&[reason]).inc();
    }

    pub fn recording_failure_count(&self, reason: &str) -> u64 {
        self.recording_failures.with_label_values(&[reason]).get()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
