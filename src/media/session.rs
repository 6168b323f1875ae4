//! The per-stream media state machine: encoded frames and time in, events out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::placement::{DropReason, Placement, Placer};
use super::resample::{Upsampler, WIDEBAND_RATE};
use super::{Codec, MediaError, Track};

/// How a stream is encoded and how patient its reorder buffer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Payload encoding of every frame.
    pub codec: Codec,
    /// Input sample rate in Hz; one of [`SUPPORTED_RATES`](super::resample::SUPPORTED_RATES).
    pub sample_rate: u32,
    /// Most audio held behind a missing frame before giving up on it; bounds the
    /// latency reordering can add while frames keep arriving.
    pub reorder_window_ms: u64,
    /// Frames starting this close to the expected position are placed there:
    /// timestamps have millisecond resolution and jitter, the audio does not.
    pub jitter_tolerance_ms: u64,
    /// Longest any frame waits for a missing one, so a lost frame costs bounded
    /// latency even when frames trickle in.
    pub max_hold: Duration,
    /// Longest gap filled with silence (a caller on hold sends nothing); a
    /// longer one is skipped and reported instead. A frame stamped further than
    /// this from the track, ahead or behind, is not trusted alone: it moves the
    /// timeline only once consistent followers confirm it (see
    /// [`Placer`]).
    pub max_gap_ms: u64,
}

impl SessionConfig {
    /// `codec` at `sample_rate` with the default timing: a 60 ms reorder window
    /// (three 20 ms frames), 10 ms jitter tolerance, 100 ms hold, 10 s gap cap.
    pub fn new(codec: Codec, sample_rate: u32) -> Self {
        Self {
            codec,
            sample_rate,
            reorder_window_ms: 60,
            jitter_tolerance_ms: 10,
            max_hold: Duration::from_millis(100),
            max_gap_ms: 10_000,
        }
    }

    /// Twilio Media Streams: μ-law at 8 kHz.
    pub fn twilio() -> Self {
        Self::new(Codec::Mulaw, 8_000)
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self::twilio()
    }
}

/// Output of a [`MediaSession`]. Events of one track come in timeline order.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// Placed audio at the input rate, for recording.
    Pcm(PcmChunk),
    /// The same audio at 16 kHz, for transcription.
    Wideband(WidebandChunk),
    /// A frame or part of one was discarded.
    Dropped { track: Track, reason: DropReason },
    /// A gap no frame filled in time; the silence follows as a [`PcmChunk`].
    GapFilled {
        track: Track,
        start_ms: u64,
        duration_ms: u64,
    },
    /// A gap longer than `max_gap_ms` was skipped: the next chunks start later
    /// than the previous ones ended.
    ///
    /// `duration_ms == 0` marks a timeline reset instead: the provider's
    /// timestamps restarted far behind the track, and from `start_ms` on its
    /// audio continues contiguously, re-anchored onto the track's timeline (see
    /// [`TrackStats::timeline_resets`]). A variant of its own would need every
    /// exhaustive `match` on this enum to change with it.
    GapSkipped {
        track: Track,
        start_ms: u64,
        duration_ms: u64,
    },
}

impl MediaEvent {
    pub fn track(&self) -> Track {
        match self {
            MediaEvent::Pcm(chunk) => chunk.track,
            MediaEvent::Wideband(chunk) => chunk.track,
            MediaEvent::Dropped { track, .. }
            | MediaEvent::GapFilled { track, .. }
            | MediaEvent::GapSkipped { track, .. } => *track,
        }
    }
}

/// Placed audio at the input rate.
///
/// Per track, each chunk starts where the previous one ended (except after a
/// [`MediaEvent::GapSkipped`] with a non-zero duration), and `start_sample /
/// sample_rate` is the time since stream start, so the two tracks align; after
/// a timeline reset it is the time on the track's re-anchored timeline.
/// Silence comes in chunks of at most one second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcmChunk {
    pub track: Track,
    pub sample_rate: u32,
    pub start_sample: u64,
    pub samples: Vec<i16>,
    /// Filled-in silence rather than received audio.
    pub silence: bool,
}

/// Placed audio resampled to 16 kHz mono in `[-1, 1]`, contiguous like [`PcmChunk`].
///
/// `start_sample / 16000` is the time since stream start: the resampler's delay is compensated.
#[derive(Debug, Clone, PartialEq)]
pub struct WidebandChunk {
    pub track: Track,
    pub start_sample: u64,
    pub samples: Vec<f32>,
}

/// Counters for one track, e.g. for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackStats {
    /// Frames that contributed audio (trimmed ones included).
    pub frames_placed: u64,
    /// Samples emitted at the input rate, silence included.
    pub samples_out: u64,
    /// Samples of silence filled into gaps.
    pub silence_samples: u64,
    /// Samples of timeline skipped over gaps longer than `max_gap_ms`.
    pub skipped_samples: u64,
    /// Samples emitted at 16 kHz.
    pub wideband_samples: u64,
    /// Times the provider's timestamps restarted far behind the track and the
    /// following audio was re-anchored to continue where the track was.
    pub timeline_resets: u64,
    drops: [u64; DropReason::ALL.len()],
}

impl TrackStats {
    /// Frames dropped (or trimmed, for [`DropReason::Overlap`]) for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// The media state machine for one stream (one call), both tracks.
///
/// Sans-IO: it never reads a clock or touches a socket, so it runs the same in
/// production and in simulated-time tests.
///
/// # Contract
/// - Pass every media frame to [`handle_frame`](Self::handle_frame) with the
///   time it arrived. An error rejects that frame only; the session stays usable.
/// - After any `handle_*` call or [`finish`](Self::finish), drain
///   [`poll_event`](Self::poll_event) until it returns `None`.
/// - After any `handle_*` call, re-read [`poll_timeout`](Self::poll_timeout) and
///   call [`handle_timeout`](Self::handle_timeout) once that instant has passed;
///   it is how held frames are released when the missing frame never comes.
/// - At end of stream call [`finish`](Self::finish) once: it releases held audio
///   and flushes the resamplers. Frames after that are refused.
pub struct MediaSession {
    codec: Codec,
    tracks: [TrackState; 2],
    events: VecDeque<MediaEvent>,
    finished: bool,
}

struct TrackState {
    track: Track,
    placer: Placer,
    upsampler: Upsampler,
    /// Position of the next wideband sample, at 16 kHz.
    wide_cursor: u64,
    stats: TrackStats,
}

impl MediaSession {
    /// Fails only for a sample rate the resampler does not support.
    pub fn new(config: SessionConfig) -> Result<Self, MediaError> {
        let track = |track| -> Result<_, MediaError> {
            Ok(TrackState {
                track,
                placer: Placer::new(&config),
                upsampler: Upsampler::new(config.sample_rate)?,
                wide_cursor: 0,
                stats: TrackStats::default(),
            })
        };
        Ok(Self {
            codec: config.codec,
            tracks: [track(Track::Caller)?, track(Track::Agent)?],
            events: VecDeque::new(),
            finished: false,
        })
    }

    /// Decodes a frame's payload (the bytes after base64) and places it at
    /// `timestamp_ms` on `track`'s timeline.
    ///
    /// A payload that does not decode, or a timestamp out of range, is an error
    /// and also a [`DropReason::Malformed`] event; nothing accepted before is lost.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        track: Track,
        timestamp_ms: u64,
        payload: &[u8],
    ) -> Result<(), MediaError> {
        if self.finished {
            return Err(MediaError::Finished);
        }
        let state = &mut self.tracks[track.index()];
        // The decoded Vec becomes the event's buffer as is: one allocation per frame.
        let mut samples = Vec::with_capacity(self.codec.samples_in(payload.len()));
        let placed = match self.codec.decode_into(payload, &mut samples) {
            Ok(()) => state.placer.push(now, timestamp_ms, samples),
            Err(err) => {
                state.dropped(DropReason::Malformed, &mut self.events);
                Err(err)
            }
        };
        state.drain(&mut self.events);
        placed
    }

    /// Releases held audio whose wait is over; see [`poll_timeout`](Self::poll_timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        for state in &mut self.tracks {
            state.placer.handle_timeout(now);
            state.drain(&mut self.events);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tracks
            .iter()
            .filter_map(|state| state.placer.poll_timeout())
            .min()
    }

    /// End of stream: places everything held (filling gaps) and flushes the
    /// resamplers, so each track's output covers its whole input. Idempotent.
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        for state in &mut self.tracks {
            state.placer.finish();
            state.drain(&mut self.events);
            state.flush_wideband(&mut self.events);
        }
    }

    /// Next output event, if any.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    pub fn stats(&self, track: Track) -> &TrackStats {
        &self.tracks[track.index()].stats
    }
}

impl TrackState {
    /// Turns the placer's output into events, resampling as it goes.
    fn drain(&mut self, events: &mut VecDeque<MediaEvent>) {
        let rate = self.upsampler.input_rate();
        while let Some(placement) = self.placer.poll() {
            match placement {
                Placement::Audio { start, samples } => {
                    self.stats.frames_placed += 1;
                    self.pcm(start, samples, false, events);
                }
                Placement::Silence { start, len } => {
                    events.push_back(MediaEvent::GapFilled {
                        track: self.track,
                        start_ms: samples_to_ms(start, rate),
                        duration_ms: samples_to_ms(len, rate),
                    });
                    self.stats.silence_samples += len;
                    // Up to `max_gap_ms` of it: in bounded chunks, so no consumer
                    // meets a surprise allocation of many seconds.
                    let end = start.saturating_add(len);
                    let mut at = start;
                    while at < end {
                        let n = (end - at).min(u64::from(rate) * SILENCE_CHUNK_SECS);
                        self.pcm(at, vec![0; n as usize], true, events);
                        at += n;
                    }
                }
                Placement::Skipped { start, len } => {
                    // Close the resampled segment so its tail lands before the jump.
                    self.flush_wideband(events);
                    let resume = (u128::from(start + len) * u128::from(WIDEBAND_RATE))
                        .div_ceil(u128::from(rate)) as u64;
                    self.wide_cursor = self.wide_cursor.max(resume);
                    self.stats.skipped_samples += len;
                    events.push_back(MediaEvent::GapSkipped {
                        track: self.track,
                        start_ms: samples_to_ms(start, rate),
                        // Rounded up: zero is how a timeline reset is told apart.
                        duration_ms: (u128::from(len) * 1000).div_ceil(u128::from(rate)) as u64,
                    });
                }
                Placement::Reanchored { at, .. } => {
                    // Contiguous at both rates: the resampler just carries on.
                    self.stats.timeline_resets += 1;
                    events.push_back(MediaEvent::GapSkipped {
                        track: self.track,
                        start_ms: samples_to_ms(at, rate),
                        duration_ms: 0,
                    });
                }
                Placement::Dropped(reason) => self.dropped(reason, events),
            }
        }
    }

    fn pcm(
        &mut self,
        start: u64,
        samples: Vec<i16>,
        silence: bool,
        events: &mut VecDeque<MediaEvent>,
    ) {
        let mut wide = Vec::new();
        self.upsampler.process(&samples, &mut wide);
        self.stats.samples_out += samples.len() as u64;
        events.push_back(MediaEvent::Pcm(PcmChunk {
            track: self.track,
            sample_rate: self.upsampler.input_rate(),
            start_sample: start,
            samples,
            silence,
        }));
        self.wideband(wide, events);
    }

    fn flush_wideband(&mut self, events: &mut VecDeque<MediaEvent>) {
        let mut tail = Vec::new();
        self.upsampler.flush(&mut tail);
        self.wideband(tail, events);
    }

    fn wideband(&mut self, samples: Vec<f32>, events: &mut VecDeque<MediaEvent>) {
        if samples.is_empty() {
            return;
        }
        let start_sample = self.wide_cursor;
        self.wide_cursor += samples.len() as u64;
        self.stats.wideband_samples += samples.len() as u64;
        events.push_back(MediaEvent::Wideband(WidebandChunk {
            track: self.track,
            start_sample,
            samples,
        }));
    }

    fn dropped(&mut self, reason: DropReason, events: &mut VecDeque<MediaEvent>) {
        self.stats.drops[reason.index()] += 1;
        events.push_back(MediaEvent::Dropped {
            track: self.track,
            reason,
        });
    }
}

/// Longest [`PcmChunk`] of filled-in silence, in seconds; its [`WidebandChunk`]
/// is no longer either.
const SILENCE_CHUNK_SECS: u64 = 1;

fn samples_to_ms(samples: u64, rate: u32) -> u64 {
    (u128::from(samples) * 1000 / u128::from(rate)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::encode_mulaw;

    const FRAME_MS: u64 = 20;
    const FRAME_LEN: usize = 160;

    /// A continuous 440 Hz tone cut into frames, so misordered output shows.
    fn payload(frame: u64) -> Vec<u8> {
        (0..FRAME_LEN)
            .map(|j| {
                let n = frame as f32 * FRAME_LEN as f32 + j as f32;
                let x = (2.0 * std::f32::consts::PI * 440.0 * n / 8_000.0).sin();
                encode_mulaw((x * 12_000.0) as i16)
            })
            .collect()
    }

    fn decoded(frames: std::ops::Range<u64>) -> Vec<i16> {
        let mut out = Vec::new();
        for f in frames {
            Codec::Mulaw.decode_into(&payload(f), &mut out).unwrap();
        }
        out
    }

    /// Everything a session emitted, checked for per-track contiguity on the way in.
    #[derive(Default)]
    struct Output {
        pcm: [Vec<i16>; 2],
        silence: [Vec<bool>; 2],
        wide: [Vec<f32>; 2],
        drops: Vec<(Track, DropReason)>,
        gaps: Vec<MediaEvent>,
        /// Where each track's next chunk must start, unless a skip came between.
        next_pcm: [Option<u64>; 2],
        next_wide: [Option<u64>; 2],
        /// Longest chunk seen per track, at the input rate and at 16 kHz.
        longest: [(usize, usize); 2],
    }

    impl Output {
        fn collect(&mut self, session: &mut MediaSession) {
            while let Some(event) = session.poll_event() {
                let i = event.track().index();
                match event {
                    MediaEvent::Pcm(c) => {
                        assert_eq!(c.sample_rate, 8_000);
                        let expected = self.next_pcm[i].unwrap_or(c.start_sample);
                        assert_eq!(c.start_sample, expected, "pcm contiguity");
                        self.next_pcm[i] = Some(c.start_sample + c.samples.len() as u64);
                        self.longest[i].0 = self.longest[i].0.max(c.samples.len());
                        self.silence[i].extend(c.samples.iter().map(|_| c.silence));
                        self.pcm[i].extend(c.samples);
                    }
                    MediaEvent::Wideband(c) => {
                        let expected = self.next_wide[i].unwrap_or(c.start_sample);
                        assert_eq!(c.start_sample, expected, "wideband contiguity");
                        assert!(c.samples.iter().all(|s| (-1.0..=1.0).contains(s)));
                        self.next_wide[i] = Some(c.start_sample + c.samples.len() as u64);
                        self.longest[i].1 = self.longest[i].1.max(c.samples.len());
                        self.wide[i].extend(c.samples);
                    }
                    MediaEvent::Dropped { track, reason } => self.drops.push((track, reason)),
                    MediaEvent::GapFilled { .. } => self.gaps.push(event),
                    // A timeline reset: output stays contiguous.
                    MediaEvent::GapSkipped { duration_ms: 0, .. } => self.gaps.push(event),
                    MediaEvent::GapSkipped { .. } => {
                        self.next_pcm[i] = None;
                        self.next_wide[i] = None;
                        self.gaps.push(event);
                    }
                }
            }
        }
    }

    struct Sim {
        session: MediaSession,
        t0: Instant,
        out: Output,
    }

    impl Sim {
        fn new() -> Self {
            Self::with(SessionConfig::twilio())
        }

        fn with(config: SessionConfig) -> Self {
            Self {
                session: MediaSession::new(config).unwrap(),
                t0: Instant::now(),
                out: Output::default(),
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        /// Delivers frame number `frame` of `track` at simulated time `at_ms`,
        /// firing any timer that expired first, as a driver loop would.
        fn send(&mut self, at_ms: u64, track: Track, frame: u64) {
            self.advance(at_ms);
            let now = self.at(at_ms);
            self.session
                .handle_frame(now, track, frame * FRAME_MS, &payload(frame))
                .unwrap();
            self.out.collect(&mut self.session);
        }

        fn advance(&mut self, to_ms: u64) {
            let now = self.at(to_ms);
            while let Some(deadline) = self.session.poll_timeout().filter(|&d| d <= now) {
                self.session.handle_timeout(deadline);
                self.out.collect(&mut self.session);
            }
        }

        fn finish(&mut self) {
            self.session.finish();
            self.out.collect(&mut self.session);
        }
    }

    #[test]
    fn in_order_frames_are_contiguous() {
        let mut sim = Sim::new();
        for f in 0..50 {
            sim.send(f * FRAME_MS, Track::Caller, f);
        }
        assert_eq!(sim.out.pcm[0], decoded(0..50));
        // Everything but the resampler's 10 ms delay is out before the end of stream.
        assert_eq!(sim.out.wide[0].len(), 16_000 - 160);
        sim.finish();
        assert_eq!(sim.out.wide[0].len(), 16_000);
        assert!(sim.out.drops.is_empty() && sim.out.gaps.is_empty());
        let stats = sim.session.stats(Track::Caller);
        assert_eq!((stats.frames_placed, stats.samples_out), (50, 8_000));
        assert_eq!(stats.wideband_samples, 16_000);
    }

    #[test]
    fn reordered_pair_comes_out_in_order() {
        let mut sim = Sim::new();
        sim.send(0, Track::Caller, 0);
        sim.send(20, Track::Caller, 2);
        assert_eq!(sim.out.pcm[0].len(), FRAME_LEN, "frame 2 waits for frame 1");
        sim.send(25, Track::Caller, 1);
        assert_eq!(sim.out.pcm[0], decoded(0..3));
        assert!(sim.out.drops.is_empty() && sim.out.gaps.is_empty());
    }

    #[test]
    fn missing_frame_becomes_silence_after_max_hold() {
        let mut sim = Sim::new();
        sim.send(0, Track::Caller, 0);
        sim.send(40, Track::Caller, 2);
        assert_eq!(sim.session.poll_timeout(), Some(sim.at(140)));
        sim.advance(139);
        assert_eq!(sim.out.pcm[0].len(), FRAME_LEN);
        sim.advance(140);
        let expected = MediaEvent::GapFilled {
            track: Track::Caller,
            start_ms: 20,
            duration_ms: 20,
        };
        assert_eq!(sim.out.gaps, [expected]);
        let mut pcm = decoded(0..1);
        pcm.extend([0; FRAME_LEN]);
        pcm.extend(decoded(2..3));
        assert_eq!(sim.out.pcm[0], pcm);
        assert_eq!(sim.out.silence[0].iter().filter(|&&s| s).count(), FRAME_LEN);
        assert_eq!(sim.session.stats(Track::Caller).silence_samples, 160);
    }

    #[test]
    fn missing_frame_becomes_silence_when_the_window_overflows() {
        let mut sim = Sim::new();
        // Frame 1 never comes; frames 2..=4 (60 ms) still fit the window.
        for f in [0, 2, 3, 4] {
            sim.send(f * FRAME_MS, Track::Caller, f);
        }
        assert!(sim.out.gaps.is_empty());
        sim.send(100, Track::Caller, 5);
        assert_eq!(sim.out.gaps.len(), 1);
        assert_eq!(sim.out.pcm[0].len(), 6 * FRAME_LEN);
    }

    #[test]
    fn frame_after_its_silence_is_late() {
        let mut sim = Sim::new();
        sim.send(0, Track::Caller, 0);
        sim.send(20, Track::Caller, 2);
        sim.advance(200);
        sim.send(210, Track::Caller, 1);
        assert_eq!(sim.out.drops, [(Track::Caller, DropReason::Late)]);
        assert_eq!(sim.out.pcm[0].len(), 3 * FRAME_LEN);
        assert_eq!(sim.session.stats(Track::Caller).drops(DropReason::Late), 1);
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut sim = Sim::new();
        sim.send(0, Track::Caller, 0);
        sim.send(1, Track::Caller, 0);
        sim.send(40, Track::Caller, 2); // held
        sim.send(41, Track::Caller, 2); // duplicate of a held frame
        sim.send(42, Track::Caller, 1);
        sim.send(43, Track::Caller, 1);
        let dup = (Track::Caller, DropReason::Duplicate);
        assert_eq!(sim.out.drops, [dup; 3]);
        assert_eq!(sim.out.pcm[0], decoded(0..3));
        assert_eq!(sim.session.stats(Track::Caller).total_drops(), 3);
    }

    #[test]
    fn tracks_are_independent() {
        let mut sim = Sim::new();
        sim.send(0, Track::Caller, 0);
        sim.send(0, Track::Agent, 0);
        sim.send(40, Track::Caller, 2); // caller's frame 1 is missing
        sim.send(40, Track::Agent, 1);
        sim.send(40, Track::Agent, 2);
        assert_eq!(sim.out.pcm[0].len(), FRAME_LEN);
        assert_eq!(sim.out.pcm[1], decoded(0..3));
        sim.advance(1_000);
        assert_eq!(sim.out.pcm[0].len(), 3 * FRAME_LEN);
        assert!(sim.out.gaps.iter().all(|g| g.track() == Track::Caller));
    }

    #[test]
    fn finish_releases_held_audio_and_flushes() {
        let mut sim = Sim::new();
        sim.send(0, Track::Agent, 0);
        sim.send(5, Track::Agent, 3);
        sim.finish();
        assert_eq!(sim.out.pcm[1].len(), 4 * FRAME_LEN);
        assert_eq!(sim.out.wide[1].len(), 8 * FRAME_LEN);
        assert_eq!(sim.session.poll_timeout(), None);
        let again = sim
            .session
            .handle_frame(sim.at(10), Track::Agent, 80, &payload(4));
        assert_eq!(again, Err(MediaError::Finished));
        sim.finish();
        assert!(sim.session.poll_event().is_none());
    }

    #[test]
    fn two_seconds_in_make_two_seconds_out_per_track() {
        let mut sim = Sim::new();
        for f in 0..100 {
            // The agent's frames arrive in swapped pairs.
            sim.send(f * FRAME_MS, Track::Caller, f);
            sim.send(f * FRAME_MS, Track::Agent, f ^ 1);
        }
        sim.finish();
        for track in Track::ALL {
            let i = track.index();
            assert_eq!(sim.out.pcm[i], decoded(0..100));
            assert_eq!(sim.out.wide[i].len(), 32_000);
            assert_eq!(sim.session.stats(track).samples_out, 16_000);
        }
        assert!(sim.out.drops.is_empty() && sim.out.gaps.is_empty());
    }

    /// SplitMix64: a tiny deterministic PRNG so tests need no extra dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn run_in_order() -> Output {
        run_in_order_for(250)
    }

    fn run_in_order_for(frames: u64) -> Output {
        let mut sim = Sim::new();
        for f in 0..frames {
            sim.send(f * FRAME_MS, Track::Caller, f);
        }
        sim.finish();
        sim.out
    }

    #[test]
    fn an_outlier_in_normal_audio_costs_only_that_frame() {
        let reference = run_in_order();
        let mut sim = Sim::new();
        for f in 0..250 {
            if f == 120 {
                // A bogus timestamp an hour ahead; frame 120 itself arrives too.
                let now = sim.at(f * FRAME_MS);
                sim.session
                    .handle_frame(now, Track::Caller, 3_600_000, &payload(f))
                    .unwrap();
            }
            sim.send(f * FRAME_MS, Track::Caller, f);
        }
        sim.finish();
        assert_eq!(sim.out.pcm[0], reference.pcm[0]);
        assert_eq!(sim.out.wide[0], reference.wide[0]);
        assert_eq!(sim.out.drops, [(Track::Caller, DropReason::OutOfRange)]);
        assert!(sim.out.gaps.is_empty());
        let stats = sim.session.stats(Track::Caller);
        assert_eq!(stats.drops(DropReason::OutOfRange), 1);
        assert_eq!(stats.frames_placed, 250);
    }

    #[test]
    fn a_timestamp_reset_continues_seamlessly() {
        // 12 s of a continuous tone; at frame 600 the provider's timestamps restart at 0.
        let reference = run_in_order_for(650);
        let mut sim = Sim::new();
        for f in 0..650 {
            let ts = if f < 600 { f } else { f - 600 } * FRAME_MS;
            let now = sim.at(f * FRAME_MS);
            sim.advance(f * FRAME_MS);
            sim.session
                .handle_frame(now, Track::Caller, ts, &payload(f))
                .unwrap();
            sim.out.collect(&mut sim.session);
        }
        sim.finish();
        // Contiguous at both rates across the reset (the collector checks it),
        // and sample for sample what an unbroken timeline gives.
        assert_eq!(sim.out.pcm[0], reference.pcm[0]);
        assert_eq!(sim.out.wide[0], reference.wide[0]);
        let reset = MediaEvent::GapSkipped {
            track: Track::Caller,
            start_ms: 12_000,
            duration_ms: 0,
        };
        assert_eq!(sim.out.gaps, [reset]);
        assert!(sim.out.drops.is_empty());
        let stats = sim.session.stats(Track::Caller);
        assert_eq!((stats.timeline_resets, stats.skipped_samples), (1, 0));
    }

    #[test]
    fn long_silence_comes_in_bounded_chunks() {
        let mut sim = Sim::new();
        sim.send(0, Track::Caller, 0);
        // On hold for almost 9 s (under `max_gap_ms`): the gap is filled.
        sim.send(9_000, Track::Caller, 450);
        sim.advance(9_100);
        let expected = MediaEvent::GapFilled {
            track: Track::Caller,
            start_ms: 20,
            duration_ms: 8_980,
        };
        assert_eq!(sim.out.gaps, [expected]);
        assert_eq!(sim.out.pcm[0].len(), 451 * FRAME_LEN);
        assert_eq!(sim.session.stats(Track::Caller).silence_samples, 71_840);
        let (pcm, wide) = sim.out.longest[0];
        assert_eq!(pcm, 8_000, "at most one second per PcmChunk");
        assert!(
            wide <= 16_000,
            "at most one second per WidebandChunk: {wide}"
        );
    }

    #[test]
    fn shuffles_within_the_window_match_in_order_output() {
        let reference = run_in_order();
        for seed in 0..20 {
            let mut rng = Rng(seed);
            // Network delay of 0..=60 ms (the window) per frame, in 5 ms steps.
            let mut arrivals: Vec<(u64, u64)> = (0..250)
                .map(|f| (f * FRAME_MS + 5 * rng.below(13), f))
                .collect();
            arrivals.sort();
            let mut sim = Sim::new();
            for (at_ms, f) in arrivals {
                sim.send(at_ms, Track::Caller, f);
            }
            sim.finish();
            assert_eq!(sim.out.pcm[0], reference.pcm[0], "seed {seed}");
            assert_eq!(sim.out.wide[0], reference.wide[0], "seed {seed}");
            assert!(
                sim.out.drops.is_empty() && sim.out.gaps.is_empty(),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn timestamp_jitter_within_tolerance_matches_in_order_output() {
        let reference = run_in_order();
        let mut rng = Rng(7);
        let mut sim = Sim::new();
        for f in 0..250 {
            let ts = (f * FRAME_MS + rng.below(9)).saturating_sub(4);
            let now = sim.at(f * FRAME_MS);
            sim.session
                .handle_frame(now, Track::Caller, ts, &payload(f))
                .unwrap();
            sim.out.collect(&mut sim.session);
        }
        sim.finish();
        assert_eq!(sim.out.pcm[0], reference.pcm[0]);
        assert_eq!(sim.out.wide[0], reference.wide[0]);
    }

    #[test]
    fn long_gap_is_skipped_and_wideband_stays_aligned() {
        let mut sim = Sim::new();
        sim.send(0, Track::Caller, 0);
        // 20 s later, confirmed by the frames that follow.
        for (i, f) in (1_000..1_003).enumerate() {
            sim.send(20 + 20 * i as u64, Track::Caller, f);
        }
        sim.finish();
        let skip = MediaEvent::GapSkipped {
            track: Track::Caller,
            start_ms: 20,
            duration_ms: 19_980,
        };
        assert_eq!(sim.out.gaps, [skip]);
        assert!(sim.out.drops.is_empty());
        assert_eq!(sim.out.next_pcm[0], Some(1_003 * FRAME_LEN as u64));
        assert_eq!(sim.out.next_wide[0], Some(2 * 1_003 * FRAME_LEN as u64));
        assert_eq!(sim.out.wide[0].len(), 8 * FRAME_LEN);
        let stats = sim.session.stats(Track::Caller);
        assert_eq!(stats.skipped_samples, 999 * FRAME_LEN as u64);
    }

    #[test]
    fn decode_errors_lose_nothing_accepted() {
        let config = SessionConfig::new(Codec::L16 { big_endian: false }, 8_000);
        let mut sim = Sim::with(config);
        let now = sim.at(0);
        let good = vec![0x01; 2 * FRAME_LEN];
        sim.session
            .handle_frame(now, Track::Caller, 0, &good)
            .unwrap();
        let bad = sim.session.handle_frame(now, Track::Caller, 20, &[1, 2, 3]);
        assert_eq!(bad, Err(MediaError::OddPayloadLength(3)));
        sim.session
            .handle_frame(now, Track::Caller, 20, &good)
            .unwrap();
        sim.out.collect(&mut sim.session);
        assert_eq!(sim.out.pcm[0], vec![0x0101; 2 * FRAME_LEN]);
        assert_eq!(sim.out.drops, [(Track::Caller, DropReason::Malformed)]);
    }

    #[test]
    fn bad_timestamps_are_malformed() {
        let mut sim = Sim::new();
        sim.send(0, Track::Caller, 0);
        let now = sim.at(20);
        let err = sim
            .session
            .handle_frame(now, Track::Caller, u64::MAX, &payload(1));
        assert_eq!(err, Err(MediaError::TimestampOutOfRange(u64::MAX)));
        sim.send(20, Track::Caller, 1);
        assert_eq!(sim.out.pcm[0], decoded(0..2));
        assert_eq!(sim.out.drops, [(Track::Caller, DropReason::Malformed)]);
    }

    #[test]
    fn unsupported_rate_is_refused() {
        let config = SessionConfig::new(Codec::Mulaw, 7_999);
        assert_eq!(
            MediaSession::new(config).err(),
            Some(MediaError::UnsupportedSampleRate(7_999))
        );
    }

    /// Random payloads, timestamps (u64::MAX included), tracks and clock steps must
    /// never panic, and output must stay ordered and contiguous per track.
    #[test]
    fn random_input_never_panics() {
        let codecs = [Codec::Mulaw, Codec::Alaw, Codec::L16 { big_endian: true }];
        for (seed, codec) in codecs.into_iter().enumerate() {
            let mut rng = Rng(seed as u64 + 100);
            // A short gap cap keeps silence small and exercises skipping too.
            let config = SessionConfig {
                max_gap_ms: 1_000,
                ..SessionConfig::new(codec, 8_000)
            };
            let mut sim = Sim::with(config);
            let mut now_ms = 0;
            let mut ts = 0u64;
            for _ in 0..5_000 {
                now_ms += rng.below(30);
                ts = match rng.below(10) {
                    0 => u64::MAX - rng.below(3),
                    1 => rng.next(),
                    2 => ts.saturating_sub(rng.below(200)),
                    4 => rng.below(100),
                    3 => ts.saturating_add(rng.below(3_000)),
                    _ => ts.saturating_add(rng.below(40)),
                };
                let payload: Vec<u8> = (0..rng.below(400)).map(|_| rng.next() as u8).collect();
                let track = Track::ALL[rng.below(2) as usize];
                sim.advance(now_ms);
                let _ = sim
                    .session
                    .handle_frame(sim.at(now_ms), track, ts, &payload);
                sim.out.collect(&mut sim.session);
            }
            sim.finish();
            for track in Track::ALL {
                let i = track.index();
                let stats = sim.session.stats(track);
                assert_eq!(stats.samples_out, sim.out.pcm[i].len() as u64);
                assert_eq!(stats.wideband_samples, sim.out.wide[i].len() as u64);
            }
        }
    }
}
