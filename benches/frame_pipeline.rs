//! Per-frame cost of the media path: Twilio JSON text → the gateway's frame
//! parser (`providers::twilio::stream`) → base64 → `MediaSession::handle_frame`
//! (μ-law decode, placement, 8 → 16 kHz resample) → drained events. Throughput
//! is in frames; each iteration handles one frame per track, as a call does
//! every 20 ms.
//!
//! `cargo bench --bench frame_pipeline -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use callstream::media::{encode_mulaw, MediaEvent, MediaSession, SessionConfig, Track};
use callstream::providers::twilio::stream::{decode_payload, parse, StreamEvent};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Frames of one minute of call: both tracks, 20 ms each, timestamps advancing
/// so nothing is dropped as late or duplicate.
const PAIRS: u64 = 3_000;

fn frames() -> Vec<[String; 2]> {
    (0..PAIRS)
        .map(|n| {
            let ulaw: Vec<u8> = (0..160)
                .map(|j| {
                    let t = (n * 160 + j) as f32 / 8_000.0;
                    encode_mulaw((8_000.0 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()) as i16)
                })
                .collect();
            let payload = STANDARD.encode(&ulaw);
            ["inbound", "outbound"].map(|track| {
                format!(
                    r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"{track}","chunk":"{chunk}","timestamp":"{ts}","payload":"{payload}"}},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}}"#,
                    seq = 2 * n + 3,
                    chunk = n + 2,
                    ts = n * 20,
                )
            })
        })
        .collect()
}

/// Parses one media frame as the gateway does and base64-decodes its payload
/// into `payload`.
fn media_frame(text: &str, payload: &mut Vec<u8>) -> Option<(Track, u64)> {
    let StreamEvent::Media(media) = parse(text).ok()? else {
        return None;
    };
    decode_payload(&media.payload, payload).ok()?;
    Some((media.track.into(), media.timestamp_ms))
}

/// Replays the minute of frames in a loop, starting a fresh session at each
/// wrap (amortised over 6 000 frames, as a real call amortises its setup).
struct Replay {
    frames: Vec<[String; 2]>,
    next: usize,
    session: MediaSession,
    t0: Instant,
    payload: Vec<u8>,
}

impl Replay {
    fn new() -> Self {
        let frames = frames();
        // A frame the parser refused would be skipped and flatter the figure.
        let mut payload = Vec::new();
        assert!(frames
            .iter()
            .flatten()
            .all(|text| media_frame(text, &mut payload).is_some()));
        Self {
            frames,
            next: 0,
            session: new_session(),
            t0: Instant::now(),
            payload: Vec::with_capacity(160),
        }
    }

    fn step(&mut self, parse_only: bool) -> usize {
        if self.next == self.frames.len() {
            self.next = 0;
            self.session = new_session();
        }
        let mut samples = 0;
        for text in &self.frames[self.next] {
            let Some((track, ts)) = media_frame(text, &mut self.payload) else {
                continue;
            };
            if parse_only {
                samples += self.payload.len();
                continue;
            }
            let now = self.t0 + Duration::from_millis(ts);
            let _ = self.session.handle_frame(now, track, ts, &self.payload);
            while let Some(event) = self.session.poll_event() {
                samples += match event {
                    MediaEvent::Pcm(c) => c.samples.len(),
                    MediaEvent::Wideband(c) => c.samples.len(),
                    _ => 0,
                };
            }
        }
        self.next += 1;
        samples
    }
}

fn new_session() -> MediaSession {
    MediaSession::new(SessionConfig::twilio()).expect("Twilio config is valid")
}

fn frame_pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_pipeline");
    group.throughput(Throughput::Elements(2));
    let mut replay = Replay::new();
    group.bench_function("parse_base64", |b| b.iter(|| black_box(replay.step(true))));
    let mut replay = Replay::new();
    group.bench_function("parse_base64_session", |b| {
        b.iter(|| black_box(replay.step(false)))
    });
    group.finish();
}

criterion_group!(benches, frame_pipeline);
criterion_main!(benches);
