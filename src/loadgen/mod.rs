//! Load generator: N concurrent Twilio Media Streams, paced in real time
//! (20 ms frames on both tracks), signed as Twilio signs them. What counts is
//! what the server saw, so the report is taken from the gateway's own
//! `/metrics`, before and after the run.

mod metrics_text;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::media::codec::encode_mulaw;
use crate::providers::twilio::signature;
use crate::providers::twilio::stream::{frames, StreamTrack};
use crate::secret::Secret;

pub use metrics_text::Snapshot;

/// Samples per 20 ms frame at 8 kHz.
const FRAME_SAMPLES: usize = 160;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Stream endpoint, e.g. ws://127.0.0.1:8080/v1/providers/twilio/stream
    #[arg(long)]
    pub url: String,
    /// Twilio account SID of the tenant to stream as.
    #[arg(long)]
    pub account_sid: String,
    /// File holding that account's auth token (signs each upgrade like
    /// Twilio does).
    #[arg(long, value_name = "PATH", conflicts_with = "auth_token_stdin")]
    pub auth_token_file: Option<std::path::PathBuf>,
    /// Read that account's auth token from standard input.
    #[arg(long)]
    pub auth_token_stdin: bool,
    /// Refused: a token on the command line shows in `ps`.
    #[arg(long, hide = true, value_name = "TOKEN")]
    pub auth_token: Option<String>,
    /// Concurrent streams.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Seconds each stream sends audio.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// WAV file sent on both tracks (any rate, mixed to mono, resampled to
    /// 8 kHz and μ-law encoded), looped as needed.
    #[arg(long)]
    pub audio: std::path::PathBuf,
    /// Gateway metrics URL (default: the stream URL's host, path /metrics).
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// Seconds over which stream starts are spread.
    #[arg(long, default_value_t = 5.0)]
    pub ramp: f64,
    /// Conversation instead of double talk: the caller plays the audio once
    /// while the agent sends silence, then the other way round, and so on.
    /// Without it both tracks play the audio all the time (the agent half a
    /// loop later), the worst case for live transcription.
    #[arg(long)]
    pub turns: bool,
}

/// What one run measured; printed as one JSON object.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Streams that ran to the end (stop sent, server closed normally).
    pub streams: usize,
    pub streams_requested: usize,
    pub frames_sent: u64,
    /// Media frames the server counted in.
    pub frames_received: u64,
    /// Frames the server dropped, all reasons.
    pub frames_dropped: u64,
    pub frames_dropped_by_reason: std::collections::BTreeMap<String, u64>,
    /// Server-side frame-handling latency, from its histogram.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Server-side time to set a stream up on `start` (auth, call row).
    pub start_p99_ms: f64,
    /// Live captions (when the gateway transcribes): speech in → partial
    /// out, and end of utterance → final out; `null` when none were made.
    pub partials: u64,
    pub partial_p50_ms: Option<f64>,
    pub partial_p95_ms: Option<f64>,
    pub finals: u64,
    pub final_p50_ms: Option<f64>,
    pub final_p95_ms: Option<f64>,
    /// Highest count of streams the server reported open at once (sampled).
    pub peak_active_streams: i64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Frames the generator itself sent more than one frame period (20 ms)
    /// behind their real-time schedule: non-zero means this machine could
    /// not keep the load real-time, so the run overstates nothing but
    /// understates pressure.
    pub frames_sent_late: u64,
    /// Worst lag of a frame behind its schedule, client side.
    pub max_send_lag_ms: f64,
    pub duration_s: f64,
}

/// Runs the load and reports what the gateway's metrics saw.
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    if opts.auth_token.is_some() {
        bail!(crate::secret::argv_refused("--auth-token"));
    }
    let auth_token: Secret =
        crate::secret::read_secret(opts.auth_token_file.as_deref(), opts.auth_token_stdin)
            .map_err(|e| anyhow::anyhow!("--auth-token-file/--auth-token-stdin: {e}"))?
            .ok_or_else(|| anyhow::anyhow!("give --auth-token-file PATH or --auth-token-stdin"))?;
    if opts.streams == 0 {
        bail!("--streams must be at least 1");
    }
    let frames = Arc::new(mulaw_frames(&opts.audio)?);
    let metrics_url = match &opts.metrics_url {
        Some(u) => u.clone(),
        None => derive_metrics_url(&opts.url)?,
    };
    let before = metrics_text::fetch(&metrics_url).await?;
    let signature = signature::compute(auth_token.expose(), &opts.url, &[]);
    let sent = Arc::new(AtomicU64::new(0));
    let pacing = Arc::new(Pacing::default());
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    let frame_count = (opts.duration * 1000 / 20) as usize;

    // Sample the server's active-stream gauge while the load runs.
    let peak = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (url, peak) = (metrics_url.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Ok(s) = metrics_text::fetch(&url).await {
                    peak.fetch_max(
                        s.gauge("callstream_active_streams") as i64,
                        Ordering::Relaxed,
                    );
                }
            }
        })
    };

    let mut tasks = Vec::with_capacity(opts.streams);
    for i in 0..opts.streams {
        let stream = StreamSpec {
            url: opts.url.clone(),
            signature: signature.clone(),
            account_sid: opts.account_sid.clone(),
            index: i,
            frame_count,
            // Spread starts over the ramp and over the 20 ms frame period so
            // streams do not tick in lockstep (real calls do not).
            start_at: started
                + Duration::from_secs_f64(opts.ramp * i as f64 / opts.streams as f64)
                + Duration::from_micros((i as u64 * 20_000 / opts.streams as u64) % 20_000),
            turns: opts.turns,
        };
        let frames = frames.clone();
        let sent = sent.clone();
        let pacing = pacing.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            match run_stream(stream, &frames, &sent, &pacing).await {
                Ok(()) => true,
                Err(e) => {
                    if let Ok(mut errs) = errors.lock() {
                        errs.push(format!("{e:#}"));
                    }
                    false
                }
            }
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap_or(false) {
            ok += 1;
        }
    }
    let duration_s = started.elapsed().as_secs_f64();
    // Let the server finish the last frames' bookkeeping.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = metrics_text::fetch(&metrics_url).await?;
    sampler.abort();
    let peak_active_streams = peak.load(Ordering::Relaxed);

    let delta = after.delta(&before);
    let by_reason = delta.labelled_counter("callstream_frames_dropped_total", "reason");
    let errs = errors.lock().map(|e| e.clone()).unwrap_or_default();
    Ok(Report {
        streams: ok,
        streams_requested: opts.streams,
        frames_sent: sent.load(Ordering::Relaxed),
        frames_received: delta.counter("callstream_frames_in_total") as u64,
        frames_dropped: by_reason.values().sum(),
        frames_dropped_by_reason: by_reason.into_iter().filter(|(_, v)| *v > 0).collect(),
        p50_ms: delta.histogram_quantile("callstream_frame_handling_seconds", 0.50) * 1000.0,
        p99_ms: delta.histogram_quantile("callstream_frame_handling_seconds", 0.99) * 1000.0,
        start_p99_ms: delta.histogram_quantile("callstream_stream_start_seconds", 0.99) * 1000.0,
        partials: delta.counter("callstream_caption_partial_latency_seconds_count") as u64,
        partial_p50_ms: quantile_ms(&delta, "callstream_caption_partial_latency_seconds", 0.50),
        partial_p95_ms: quantile_ms(&delta, "callstream_caption_partial_latency_seconds", 0.95),
        finals: delta.counter("callstream_caption_final_latency_seconds_count") as u64,
        final_p50_ms: quantile_ms(&delta, "callstream_caption_final_latency_seconds", 0.50),
        final_p95_ms: quantile_ms(&delta, "callstream_caption_final_latency_seconds", 0.95),
        peak_active_streams,
        errors: errs.len() as u64,
        error_samples: errs.into_iter().take(5).collect(),
        frames_sent_late: pacing.late.load(Ordering::Relaxed),
        max_send_lag_ms: pacing.max_lag_us.load(Ordering::Relaxed) as f64 / 1000.0,
        duration_s,
    })
}

/// How well the generator kept to real time.
#[derive(Default)]
struct Pacing {
    late: AtomicU64,
    max_lag_us: AtomicU64,
}

/// A histogram quantile in ms, or `None` when it recorded nothing.
fn quantile_ms(delta: &Snapshot, name: &str, q: f64) -> Option<f64> {
    (delta.counter(&format!("{name}_count")) > 0.0)
        .then(|| delta.histogram_quantile(name, q) * 1000.0)
}

struct StreamSpec {
    url: String,
    signature: String,
    account_sid: String,
    index: usize,
    frame_count: usize,
    start_at: Instant,
    turns: bool,
}

async fn run_stream(
    spec: StreamSpec,
    frames: &[String],
    sent: &AtomicU64,
    pacing: &Pacing,
) -> anyhow::Result<()> {
    tokio::time::sleep_until(spec.start_at).await;
    let mut request = spec.url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("X-Twilio-Signature", spec.signature.parse()?);
    // Small read buffer: tungstenite zero-fills all of it on every read.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(8 * 1024);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .with_context(|| format!("stream {}: connect", spec.index))?;
    let stream_sid = format!("MZ{:032x}", rand::random::<u128>());
    let call_sid = format!("CA{:032x}", rand::random::<u128>());
    let tracks = [StreamTrack::Inbound, StreamTrack::Outbound];
    ws.send(Message::text(frames::connected())).await?;
    ws.send(Message::text(frames::start(&frames::StartInfo {
        sequence_number: 1,
        account_sid: &spec.account_sid,
        stream_sid: &stream_sid,
        call_sid: &call_sid,
        tracks: &tracks,
        custom_parameters: &[],
        encoding: "audio/x-mulaw",
        sample_rate: 8000,
        channels: 1,
    })))
    .await?;

    let mut seq = 2u64;
    let mut text = String::with_capacity(512);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    // A late loop sends the missed frames at once, like a bunching provider.
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    // The agent track plays the same audio half a loop later, or (turns)
    // only while the caller is silent.
    let n = frames.len().max(1);
    let offset = n / 2;
    // μ-law silence.
    let silence = base64::engine::general_purpose::STANDARD.encode([0xFFu8; 160]);
    let first_tick = Instant::now();
    for chunk in 0..spec.frame_count {
        tick.tick().await;
        let due = first_tick + Duration::from_millis(chunk as u64 * 20);
        let lag = Instant::now().saturating_duration_since(due);
        if lag > Duration::from_millis(20) {
            pacing.late.fetch_add(2, Ordering::Relaxed);
        }
        pacing
            .max_lag_us
            .fetch_max(lag.as_micros() as u64, Ordering::Relaxed);
        let timestamp = chunk as u64 * 20;
        let caller_turn = (chunk / n) % 2 == 0;
        for (track, pos) in [
            (StreamTrack::Inbound, chunk),
            (StreamTrack::Outbound, chunk + offset),
        ] {
            let payload = match (spec.turns, track) {
                (false, _) => &frames[pos % n],
                (true, StreamTrack::Inbound) if caller_turn => &frames[chunk % n],
                (true, StreamTrack::Outbound) if !caller_turn => &frames[chunk % n],
                (true, _) => &silence,
            };
            text.clear();
            frames::media(
                &mut text,
                &stream_sid,
                seq,
                track,
                chunk as u64 + 1,
                timestamp,
                payload,
            );
            seq += 1;
            ws.feed(Message::text(text.as_str())).await?;
        }
        ws.flush().await?;
        sent.fetch_add(2, Ordering::Relaxed);
    }
    ws.send(Message::text(frames::stop(
        &stream_sid,
        seq,
        &spec.account_sid,
        &call_sid,
    )))
    .await?;
    // The server closes once the call is finalised.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = ws.next().await {
            if let Message::Close(frame) = msg? {
                return Ok::<_, anyhow::Error>(frame.map(|f| u16::from(f.code)));
            }
        }
        Ok(None)
    })
    .await
    .context("server did not close the stream after stop")??;
    match closed {
        Some(1000) => Ok(()),
        other => bail!("stream {}: closed with {other:?}", spec.index),
    }
}

/// A WAV file as base64 μ-law 20 ms frames at 8 kHz, as a phone line and
/// Twilio would carry it.
pub fn mulaw_frames(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let mut reader =
        hound::WavReader::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let spec = reader.spec();
    let channels = spec.channels.max(1) as usize;
    let raw: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1i64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()?
        }
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>()?,
    };
    let mono: Vec<f32> = raw
        .chunks(channels)
        .map(|c| c.iter().sum::<f32>() / c.len() as f32)
        .collect();
    // The gateway's own delay-compensated converter: the audio starts on time.
    let at_8k = crate::media::resample::resample(&mono, spec.sample_rate, 8000)?;
    if at_8k.len() < FRAME_SAMPLES {
        bail!("{} holds less than 20 ms of audio", path.display());
    }
    Ok(at_8k
        .chunks_exact(FRAME_SAMPLES)
        .map(|frame| {
            let bytes: Vec<u8> = frame
                .iter()
                .map(|s| encode_mulaw((s.clamp(-1.0, 1.0) * 32767.0) as i16))
                .collect();
            base64::engine::general_purpose::STANDARD.encode(bytes)
        })
        .collect())
}

fn derive_metrics_url(stream_url: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(stream_url).context("--url is not a URL")?;
    let scheme = match url.scheme() {
        "ws" | "http" => "http",
        "wss" | "https" => bail!("give --metrics-url for TLS gateways"),
        other => bail!("unsupported scheme {other}"),
    };
    url.set_scheme(scheme)
        .map_err(|_| anyhow::anyhow!("cannot derive metrics URL"))?;
    url.set_path("/metrics");
    url.set_query(None);
    Ok(url.to_string())
}
