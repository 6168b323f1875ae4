//! Live captioning policy, sans-IO: placed audio in, Whisper decode requests
//! out, decode results in, caption events out.
//!
//! Per track (caller and agent separately):
//! - a WebRTC-style VAD (earshot 0.1, fixed-point GMM) runs on the 8 kHz
//!   audio *before* upsampling: it is built for telephone-band audio, costs
//!   microseconds per 20 ms frame (so it scales to thousands of calls), and
//!   keeps silence away from Whisper, which hallucinates on it;
//! - speech opens an utterance (with a little pre-roll); while it lasts, a
//!   track becomes *ready* for a partial after every `partial_interval_ms`
//!   of new audio (one partial at a time per track). The driver then waits
//!   for a decoder slot and only then takes the partial's audio
//!   ([`LiveTranscriber::take_partial`]): under load partials come less
//!   often, but each one shows the speech up to the moment it runs;
//! - LocalAgreement (Macháček et al., "Turning Whisper into Real-Time
//!   Transcription System", 2023): when two consecutive partials of the same
//!   window agree on their first words, and a short pause the VAD heard lies
//!   where those words end, the audio up to that pause is decoded on its own
//!   as a *final*; if that decode agrees too, it is committed and the window
//!   moves past the pause. Whisper's token times are only estimates (off by
//!   up to a second on phone audio), so they pick the pause but never place
//!   the cut, and nothing is committed that a decode of exactly the committed
//!   audio does not confirm. Long utterances thus get finals while the
//!   speaker goes on, and partials keep decoding seconds, not the utterance;
//! - enough trailing silence, a too-long window, or the end of the call
//!   closes the utterance with a *final* decode of what is not yet committed.
//!
//! Time is the media timeline (sample positions), not a clock, so tests are
//! deterministic. Contract: feed `handle_narrowband`/`handle_wideband` as
//! audio arrives (any order between the two); for each track from
//! `poll_partial_ready`, get a slot, then `take_partial`; drain
//! `poll_request` (finals); run each request and hand its outcome to
//! `handle_result`; drain `poll_event`. Call `finish` at the end of the call
//! and keep draining until `is_idle`.

use std::collections::VecDeque;

use crate::asr::cleanup::{word_key, words_key, Blanks};
pub use crate::asr::engine::Word;
use crate::media::{PcmChunk, Track, WidebandChunk};

/// 20 ms at 8 kHz: the VAD frame.
const VAD_FRAME: usize = 160;
/// Silence kept after the last speech frame of an utterance.
const TAIL_MS: u64 = 300;
/// A partial whose audio ran this far past the last speech heard all of
/// the utterance: its text is the final, with no second decode.
const REUSE_MARGIN_MS: u64 = 100;
/// Silence after which a partial is taken at once, to become the final if
/// the silence goes on to end the utterance.
const ANTICIPATE_MS: u64 = 240;
/// Shortest silence inside an utterance that a commit may cut in.
const PAUSE_MS: u64 = 100;
/// How far from a pause Whisper's estimate of a word boundary may be.
const SNAP_MS: i64 = 400;

/// Tuning of the live policy.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// New audio between two partial decodes of the same utterance.
    pub partial_interval_ms: u64,
    /// Trailing silence that ends an utterance.
    pub end_silence_ms: u64,
    /// Past this much uncommitted speech, a shorter pause
    /// (`long_end_silence_ms`) ends the utterance: long finals cost more
    /// (the encoder's attention grows with the square of the audio) and
    /// wait longer, and a pause beats a cut at `max_utterance_ms`, which
    /// may fall inside a word.
    pub soft_utterance_ms: u64,
    pub long_end_silence_ms: u64,
    /// Longest utterance before a final is forced.
    pub max_utterance_ms: u64,
    /// Audio kept before the first speech frame (onsets are soft).
    pub pre_roll_ms: u64,
    /// Speech needed to open an utterance (filters clicks).
    pub min_speech_ms: u64,
    /// Shortest stretch LocalAgreement commits as a final (shorter agreed
    /// prefixes wait: tiny finals make choppy transcripts).
    pub min_commit_ms: u64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            partial_interval_ms: 700,
            end_silence_ms: 600,
            soft_utterance_ms: 6_000,
            long_end_silence_ms: 200,
            max_utterance_ms: 15_000,
            pre_roll_ms: 200,
            min_speech_ms: 60,
            min_commit_ms: 1_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeKind {
    Partial,
    Final,
}

/// Audio to transcribe: 16 kHz mono, starting at `start_ms` into the call.
#[derive(Debug, Clone)]
pub struct DecodeRequest {
    pub id: u64,
    pub track: Track,
    pub kind: DecodeKind,
    pub start_ms: u64,
    pub audio: Vec<f32>,
}

/// One piece of recognised text, times relative to the request's audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: String,
    pub confidence: Option<f32>,
    /// Word timings relative to the request's audio (partials; may be empty).
    pub words: Vec<Word>,
}

/// What agents see.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CaptionEvent {
    /// Tentative text of the utterance in progress; replaced by the next.
    Partial {
        track: Track,
        start_ms: u64,
        end_ms: u64,
        text: String,
    },
    /// Immutable text with times relative to the call.
    Final(FinalSegment),
    /// Why the call has no live captions (`status` "unavailable", with a
    /// `reason` such as "capacity"), and what happens instead. Not made by
    /// the transcriber: the gateway says it when a call gets no live slot.
    Status {
        status: String,
        reason: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FinalSegment {
    pub track: Track,
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: String,
    pub confidence: Option<f32>,
}

impl From<&crate::store::Segment> for FinalSegment {
    /// A stored segment as a final (its text as stored).
    fn from(s: &crate::store::Segment) -> Self {
        Self {
            track: if s.track == "agent" {
                Track::Agent
            } else {
                Track::Caller
            },
            start_ms: s.start_ms.max(0) as u64,
            end_ms: s.end_ms.max(0) as u64,
            text: s.text.clone(),
            confidence: s.confidence.map(|c| c as f32),
        }
    }
}

/// Utterance bookkeeping for one track, in 8 kHz sample positions.
struct TrackState {
    vad: earshot::VoiceActivityDetector,
    /// Narrowband samples not yet a whole VAD frame, and where they start.
    vad_pending: Vec<i16>,
    vad_pos: u64,
    /// Consecutive speech at the current position (samples).
    speech_run: u64,
    silence_run: u64,
    /// Open utterance: start, and end of its last speech frame.
    utterance: Option<(u64, u64)>,
    /// Start of the open utterance's audio not yet committed as finals.
    window_start: u64,
    /// The words of the last partial of this window, in call ms (what the
    /// next partial must agree with).
    last_words: Vec<Word>,
    /// Ready for a partial: waiting for the driver to take it.
    partial_ready: bool,
    /// The call ended: closings no longer wait for audio.
    finished: bool,
    /// Pauses (silence runs of at least [`PAUSE_MS`] that speech followed)
    /// in the open utterance, as 8 kHz positions: where a commit may cut.
    pauses: Vec<(u64, u64)>,
    /// A commit being confirmed: the request, where it cuts, and the words
    /// (keys) the partials agreed on.
    verifying: Option<(u64, u64, Vec<String>)>,
    /// End of the audio covered by the last partial request.
    partial_upto: u64,
    /// Wideband audio from `wide_base` (16 kHz positions).
    wide: Vec<f32>,
    wide_base: u64,
    /// Utterances closed, waiting for their wideband audio to arrive.
    closing: VecDeque<Closing>,
    /// The last partial of the open window: where its audio ended and what
    /// it heard. When it heard all the speech, it is the utterance's final.
    heard: Option<(u64, Vec<Hypothesis>)>,
    /// The partial request in flight, if any.
    partial_in_flight: Option<u64>,
    /// Partial result arrived for this utterance generation only.
    generation: u64,
}

impl TrackState {
    fn new() -> Self {
        Self {
            vad: earshot::VoiceActivityDetector::new(earshot::VoiceActivityProfile::QUALITY),
            vad_pending: Vec::with_capacity(VAD_FRAME),
            vad_pos: 0,
            speech_run: 0,
            silence_run: 0,
            utterance: None,
            window_start: 0,
            last_words: Vec::new(),
            partial_ready: false,
            finished: false,
            pauses: Vec::new(),
            verifying: None,
            partial_upto: 0,
            wide: Vec::new(),
            wide_base: 0,
            closing: VecDeque::new(),
            heard: None,
            partial_in_flight: None,
            generation: 0,
        }
    }

    /// Wideband samples available up to (exclusive), as an 8 kHz position.
    fn wide_end_8k(&self) -> u64 {
        (self.wide_base + self.wide.len() as u64) / 2
    }

    /// Closes the open window at `end`; `last_speech` decides whether the
    /// last partial heard it all.
    fn close(&mut self, end: u64, last_speech: u64) {
        let enough = last_speech + ms_to_samples(REUSE_MARGIN_MS);
        let reuse = self
            .heard
            .take()
            .filter(|(upto, _)| *upto >= enough)
            .map(|(_, hyps)| hyps);
        // `partial_upto` is where the partial in flight (if any) ends.
        let awaiting = self
            .partial_in_flight
            .filter(|_| reuse.is_none() && self.partial_upto >= enough);
        self.partial_ready = false;
        self.closing.push_back(Closing {
            start: self.window_start,
            end,
            reuse,
            awaiting,
        });
    }

    fn open_utterance(&mut self, start: u64, last_speech: u64) {
        self.utterance = Some((start, last_speech));
        self.window_start = start;
        self.partial_upto = start;
        self.last_words.clear();
        self.pauses.clear();
        self.verifying = None;
        self.heard = None;
        self.generation += 1;
    }

    /// Copies wideband audio for [from, to) (8 kHz positions), zero-filling
    /// anything shed or not yet arrived.
    fn wide_slice(&self, from: u64, to: u64) -> Vec<f32> {
        let (from, to) = (from * 2, to * 2);
        let mut out = vec![0.0; (to.saturating_sub(from)) as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let pos = from + i as u64;
            if pos >= self.wide_base {
                if let Some(s) = self.wide.get((pos - self.wide_base) as usize) {
                    *slot = *s;
                }
            }
        }
        out
    }

    /// Forgets wideband audio no request can need any more.
    fn trim(&mut self, pre_roll: u64) {
        let keep_from_8k = match (self.utterance, self.closing.front()) {
            (_, Some(c)) => c.start,
            (Some(_), None) => self.window_start,
            (None, None) => self.vad_pos.saturating_sub(pre_roll),
        };
        let keep_from = keep_from_8k * 2;
        if keep_from > self.wide_base {
            let n = ((keep_from - self.wide_base) as usize).min(self.wide.len());
            self.wide.drain(..n);
            self.wide_base += n as u64;
        }
    }
}

/// An utterance (the part not committed yet) waiting for its final.
struct Closing {
    start: u64,
    end: u64,
    /// The final's text from the last partial, when it heard everything.
    reuse: Option<Vec<Hypothesis>>,
    /// A partial still running that heard everything: its answer is the
    /// final (or, if it fails, the final is decoded after all).
    awaiting: Option<u64>,
}

/// A request handed out: enough to place its answer.
struct Outstanding {
    id: u64,
    track: Track,
    /// `Final` also for a commit being confirmed (see `TrackState::verifying`).
    kind: DecodeKind,
    start_ms: u64,
    /// Length of its audio: hypotheses never end past it.
    len_ms: u64,
    /// Utterance generation of a partial (stale once the track moved on).
    generation: u64,
}

/// The live policy for one call (both tracks).
pub struct LiveTranscriber {
    config: LiveConfig,
    tracks: [TrackState; 2],
    next_id: u64,
    requests: VecDeque<DecodeRequest>,
    events: VecDeque<CaptionEvent>,
    /// Requests handed out and not yet answered.
    outstanding: Vec<Outstanding>,
    /// Tracks that became ready for a partial, oldest first.
    ready: VecDeque<Track>,
    /// Per batch of finals emitted: track and the end of the audio they
    /// close (call ms), to time them against its arrival.
    final_timings: VecDeque<(Track, u64)>,
}

fn ms_to_samples(ms: u64) -> u64 {
    ms * 8
}

fn samples_to_ms(samples: u64) -> u64 {
    samples / 8
}

impl LiveTranscriber {
    pub fn new(config: LiveConfig) -> Self {
        Self {
            config,
            tracks: [TrackState::new(), TrackState::new()],
            next_id: 1,
            requests: VecDeque::new(),
            events: VecDeque::new(),
            outstanding: Vec::new(),
            ready: VecDeque::new(),
            final_timings: VecDeque::new(),
        }
    }

    /// Placed 8 kHz audio (the VAD's input). Chunks must come in order per
    /// track; a gap (shed chunks) counts as silence.
    pub fn handle_narrowband(&mut self, chunk: &PcmChunk) {
        if chunk.sample_rate != 8000 {
            return;
        }
        let t = &mut self.tracks[chunk.track.index()];
        let expected = t.vad_pos + t.vad_pending.len() as u64;
        if chunk.start_sample > expected {
            // Shed audio: treat the hole as silence frames.
            let missing = chunk.start_sample - expected;
            t.vad_pending
                .extend(std::iter::repeat_n(0, missing.min(8000 * 60) as usize));
        } else if chunk.start_sample < expected {
            return; // already seen
        }
        t.vad_pending.extend_from_slice(&chunk.samples);
        let mut offset = 0;
        while t.vad_pending.len() - offset >= VAD_FRAME {
            let frame = &t.vad_pending[offset..offset + VAD_FRAME];
            let speech = t.vad.predict_8khz(frame).unwrap_or(false);
            offset += VAD_FRAME;
            let frame_start = t.vad_pos;
            t.vad_pos += VAD_FRAME as u64;
            if Self::step(&self.config, t, speech, frame_start) {
                self.ready.push_back(chunk.track);
            }
        }
        t.vad_pending.drain(..offset);
        self.flush_closing(chunk.track);
    }

    /// Upsampled 16 kHz audio (what Whisper hears), placed by position.
    pub fn handle_wideband(&mut self, chunk: &WidebandChunk) {
        let t = &mut self.tracks[chunk.track.index()];
        let end = t.wide_base + t.wide.len() as u64;
        if chunk.start_sample + chunk.samples.len() as u64 <= end {
            return;
        }
        if t.wide.is_empty() && chunk.start_sample > end {
            t.wide_base = chunk.start_sample;
        } else if chunk.start_sample > end {
            t.wide.extend(std::iter::repeat_n(
                0.0,
                (chunk.start_sample - end).min(16_000 * 60) as usize,
            ));
        }
        let end = t.wide_base + t.wide.len() as u64;
        let skip = end.saturating_sub(chunk.start_sample) as usize;
        t.wide
            .extend_from_slice(&chunk.samples[skip.min(chunk.samples.len())..]);
        self.flush_closing(chunk.track);
        let pre_roll = ms_to_samples(self.config.pre_roll_ms);
        self.tracks[chunk.track.index()].trim(pre_roll);
    }

    /// One VAD frame's decision drives the utterance state machine. Returns
    /// whether the track just became ready for a partial.
    fn step(config: &LiveConfig, t: &mut TrackState, speech: bool, frame_start: u64) -> bool {
        let frame_end = frame_start + VAD_FRAME as u64;
        if speech {
            t.speech_run += VAD_FRAME as u64;
            t.silence_run = 0;
        } else {
            t.silence_run += VAD_FRAME as u64;
            t.speech_run = 0;
        }
        match t.utterance {
            None => {
                if t.speech_run >= ms_to_samples(config.min_speech_ms) {
                    let onset = frame_end - t.speech_run;
                    let start = onset.saturating_sub(ms_to_samples(config.pre_roll_ms));
                    t.open_utterance(start, frame_end);
                }
                false
            }
            Some((start, last_speech)) => {
                if speech && t.speech_run == VAD_FRAME as u64 {
                    // Speech resumes: the silence before it may be a pause.
                    let silence = frame_start - last_speech;
                    if silence >= ms_to_samples(PAUSE_MS) && last_speech > t.window_start {
                        t.pauses.push((last_speech, frame_start));
                    }
                }
                let last_speech = if speech { frame_end } else { last_speech };
                t.utterance = Some((start, last_speech));
                let too_long = frame_end - t.window_start >= ms_to_samples(config.max_utterance_ms);
                let long = frame_end - t.window_start >= ms_to_samples(config.soft_utterance_ms);
                let end_silence = if long {
                    config.long_end_silence_ms.min(config.end_silence_ms)
                } else {
                    config.end_silence_ms
                };
                if t.silence_run >= ms_to_samples(end_silence) || too_long {
                    // Keep some trailing silence: word endings (an "s" on
                    // the phone) fade below the VAD's threshold.
                    let end = if too_long {
                        frame_end
                    } else {
                        (last_speech + ms_to_samples(TAIL_MS)).min(frame_end)
                    };
                    t.utterance = None;
                    t.close(end, last_speech);
                    if too_long && speech {
                        // Speech goes on: the next utterance starts here.
                        t.open_utterance(end, frame_end);
                    }
                    false
                } else if t.partial_in_flight.is_none()
                    && !t.partial_ready
                    && t.wide_end_8k() > t.window_start
                    && (frame_end - t.partial_upto >= ms_to_samples(config.partial_interval_ms)
                        // Speech has probably ended: a partial now hears all
                        // of it and will serve as the final, so the final
                        // costs no second decode and comes sooner.
                        || (t.silence_run == ms_to_samples(ANTICIPATE_MS)
                            && t.partial_upto < last_speech + ms_to_samples(REUSE_MARGIN_MS)))
                {
                    t.partial_ready = true;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Tracks ready for a partial: get a decoder slot for each, then call
    /// [`LiveTranscriber::take_partial`].
    pub fn poll_partial_ready(&mut self) -> Option<Track> {
        self.ready.pop_front()
    }

    /// The partial for `track` with all the audio there is now, or `None`
    /// when the utterance ended meanwhile (its final covers it).
    pub fn take_partial(&mut self, track: Track) -> Option<DecodeRequest> {
        let t = &mut self.tracks[track.index()];
        if !std::mem::take(&mut t.partial_ready) || t.utterance.is_none() {
            return None;
        }
        let start = t.window_start;
        let upto = t.vad_pos.min(t.wide_end_8k());
        if upto <= start {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        t.partial_upto = upto;
        t.partial_in_flight = Some(id);
        self.outstanding.push(Outstanding {
            id,
            track,
            kind: DecodeKind::Partial,
            start_ms: samples_to_ms(start),
            len_ms: samples_to_ms(upto - start),
            generation: t.generation,
        });
        Some(DecodeRequest {
            id,
            track,
            kind: DecodeKind::Partial,
            start_ms: samples_to_ms(start),
            audio: t.wide_slice(start, upto),
        })
    }

    /// Issues finals for closed utterances whose audio has fully arrived
    /// (`force` at the end of the call: whatever is there).
    fn flush_closing_inner(&mut self, track: Track, force: bool) {
        loop {
            let t = &mut self.tracks[track.index()];
            let Some(c) = t.closing.front() else { break };
            let force = force || t.finished;
            if c.awaiting.is_some() || (!force && c.reuse.is_none() && t.wide_end_8k() < c.end) {
                break;
            }
            let Some(Closing {
                start, end, reuse, ..
            }) = t.closing.pop_front()
            else {
                break;
            };
            // Anything still running for this track is now stale.
            t.partial_in_flight = None;
            let (start_ms, len_ms) = (
                samples_to_ms(start),
                samples_to_ms(end.saturating_sub(start)),
            );
            if let Some(hyps) = reuse {
                self.push_finals(track, start_ms, len_ms, hyps, true);
                continue;
            }
            let audio = t.wide_slice(start, end);
            let id = self.next_id;
            self.next_id += 1;
            self.outstanding.push(Outstanding {
                id,
                track,
                kind: DecodeKind::Final,
                start_ms,
                len_ms,
                generation: 0,
            });
            self.requests.push_back(DecodeRequest {
                id,
                track,
                kind: DecodeKind::Final,
                start_ms,
                audio,
            });
        }
    }

    fn flush_closing(&mut self, track: Track) {
        self.flush_closing_inner(track, false);
    }

    /// End of the call: close open utterances and issue their finals.
    pub fn finish(&mut self) {
        for track in Track::ALL {
            let t = &mut self.tracks[track.index()];
            t.finished = true;
            if let Some((_, last_speech)) = t.utterance.take() {
                let end = (last_speech + ms_to_samples(TAIL_MS)).min(t.vad_pos.max(last_speech));
                t.close(end, last_speech);
            }
            self.flush_closing_inner(track, true);
        }
    }

    pub fn poll_request(&mut self) -> Option<DecodeRequest> {
        self.requests.pop_front()
    }

    /// Whether a request is still worth running (a newer partial or a final
    /// for the same track makes a partial stale).
    pub fn is_current(&self, id: u64) -> bool {
        self.outstanding.iter().any(|o| {
            o.id == id
                && (o.kind == DecodeKind::Final
                    || self.tracks[o.track.index()].partial_in_flight == Some(id))
        })
    }

    /// The outcome of request `id`. Failed decodes produce nothing; a final's
    /// audio is not retried (the recording keeps it for batch re-runs).
    pub fn handle_result(&mut self, id: u64, result: Option<Vec<Hypothesis>>) {
        let Some(pos) = self.outstanding.iter().position(|o| o.id == id) else {
            return;
        };
        let Outstanding {
            track,
            kind,
            start_ms,
            len_ms,
            generation,
            ..
        } = self.outstanding.swap_remove(pos);
        let t = &mut self.tracks[track.index()];
        match kind {
            DecodeKind::Partial => {
                if let Some(c) = t.closing.iter_mut().find(|c| c.awaiting == Some(id)) {
                    // The utterance closed while this partial, which heard
                    // all of it, ran: it is the final (a failed one leaves
                    // the final to be decoded).
                    c.awaiting = None;
                    c.reuse = result;
                    t.partial_in_flight = None;
                    self.flush_closing(track);
                    return;
                }
                let current = t.partial_in_flight == Some(id);
                if current {
                    t.partial_in_flight = None;
                }
                // A partial of a closed utterance is stale: its final follows.
                if !current
                    || t.generation != generation
                    || t.utterance.is_none()
                    || samples_to_ms(t.window_start) != start_ms
                {
                    return;
                }
                let Some(hyps) = result else { return };
                t.heard = Some((ms_to_samples(start_ms + len_ms), hyps.clone()));
                let proposal =
                    local_agreement(&mut t.last_words, &hyps, start_ms, len_ms, &t.pauses);
                let min_cut = t.window_start + ms_to_samples(self.config.min_commit_ms);
                if let Some((cut, expected)) = proposal.filter(|(cut, _)| *cut >= min_cut) {
                    if t.verifying.is_none() {
                        let id = self.next_id;
                        self.next_id += 1;
                        let from = t.window_start;
                        t.verifying = Some((id, cut, expected));
                        self.outstanding.push(Outstanding {
                            id,
                            track,
                            kind: DecodeKind::Final,
                            start_ms: samples_to_ms(from),
                            len_ms: samples_to_ms(cut - from),
                            generation,
                        });
                        self.requests.push_back(DecodeRequest {
                            id,
                            track,
                            kind: DecodeKind::Final,
                            start_ms: samples_to_ms(from),
                            audio: t.wide_slice(from, cut),
                        });
                    }
                }
                let text = join_text(&hyps);
                if text.is_empty() {
                    return;
                }
                // Whisper may time text into the padding past the audio.
                let end_ms = start_ms + hyps.last().map_or(0, |h| h.end_ms).min(len_ms);
                self.events.push_back(CaptionEvent::Partial {
                    track,
                    start_ms,
                    end_ms,
                    text,
                });
            }
            DecodeKind::Final => {
                if let Some((vid, cut, expected)) = t.verifying.take() {
                    if vid != id {
                        t.verifying = Some((vid, cut, expected));
                    } else {
                        // A commit being confirmed: only while its window is
                        // still open and only when the decode agrees.
                        let hyps = result.unwrap_or_default();
                        let open = t.generation == generation
                            && t.utterance.is_some()
                            && samples_to_ms(t.window_start) == start_ms;
                        if !open || words_key(&join_text(&hyps), Blanks::Skip) != expected {
                            return;
                        }
                        t.window_start = cut;
                        t.last_words.clear();
                        t.heard = None;
                        t.pauses.retain(|(from, _)| *from > cut);
                        // The partial in flight decodes the old window.
                        t.partial_in_flight = None;
                        t.partial_upto = t.partial_upto.max(cut);
                        self.push_finals(track, start_ms, len_ms, hyps, false);
                        return;
                    }
                }
                self.push_finals(track, start_ms, len_ms, result.unwrap_or_default(), true);
            }
        }
    }

    /// Final segments from a final decode of audio at `start_ms`. `timed`:
    /// they end an utterance, so their latency counts (a commit by
    /// agreement comes mid-utterance, by design later than its audio).
    fn push_finals(
        &mut self,
        track: Track,
        start_ms: u64,
        len_ms: u64,
        hyps: Vec<Hypothesis>,
        timed: bool,
    ) {
        let before = self.events.len();
        for h in hyps {
            let text = h.text.trim().to_string();
            if is_annotation(&text) {
                continue;
            }
            let (from, to) = (h.start_ms.min(len_ms), h.end_ms.min(len_ms));
            self.events.push_back(CaptionEvent::Final(FinalSegment {
                track,
                start_ms: start_ms + from,
                end_ms: start_ms + to.max(from),
                text,
                confidence: h.confidence,
            }));
        }
        if timed && self.events.len() > before {
            self.final_timings.push_back((track, start_ms + len_ms));
        }
    }

    /// For each batch of finals that ends an utterance: the track and the
    /// end (call ms) of the audio they close. Final latency is timed from that audio's arrival.
    pub fn poll_final_timing(&mut self) -> Option<(Track, u64)> {
        self.final_timings.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<CaptionEvent> {
        self.events.pop_front()
    }

    /// Nothing queued, nothing outstanding.
    pub fn is_idle(&self) -> bool {
        self.requests.is_empty()
            && self.final_timings.is_empty()
            && self.outstanding.is_empty()
            && self.events.is_empty()
            && self.ready.is_empty()
    }
}

/// Whisper's non-speech annotations (`[BLANK_AUDIO]`, `(music)`, `*cough*`):
/// not captions.
fn is_annotation(text: &str) -> bool {
    let t = text.trim();
    t.is_empty()
        || (t.starts_with('[') && t.ends_with(']'))
        || (t.starts_with('(') && t.ends_with(')'))
        || (t.starts_with('*') && t.ends_with('*'))
}

/// LocalAgreement-2 on one partial of a window that starts at `start_ms`:
/// remembers its words (in call ms) in `last`, and when the previous
/// partial agrees with it on a prefix whose last word ends near one of the
/// `pauses`, proposes to commit that prefix: the cut (8 kHz position, in
/// the middle of the pause, the latest such) and the agreed words' keys.
fn local_agreement(
    last: &mut Vec<Word>,
    hyps: &[Hypothesis],
    start_ms: u64,
    len_ms: u64,
    pauses: &[(u64, u64)],
) -> Option<(u64, Vec<String>)> {
    // Annotations split into odd words: no agreement on such a hypothesis.
    let usable = hyps
        .iter()
        .all(|h| !h.text.contains(['[', '(', '*']) && !h.words.is_empty());
    let words: Vec<Word> = if usable {
        let base = start_ms as i64;
        let len = len_ms as i64;
        hyps.iter()
            .flat_map(|h| &h.words)
            .map(|w| Word {
                start_ms: base + w.start_ms.clamp(0, len),
                end_ms: base + w.end_ms.clamp(0, len),
                ..w.clone()
            })
            .collect()
    } else {
        Vec::new()
    };
    let previous = std::mem::replace(last, words);
    let words = &*last;
    let agreed = previous
        .iter()
        .zip(words)
        .take_while(|(a, b)| {
            let key = word_key(&a.text);
            !key.is_empty() && key == word_key(&b.text)
        })
        .count();
    // From the latest pause back: the agreed word boundary (words j and
    // j+1) nearest to it, if near enough.
    pauses.iter().rev().find_map(|&(from, to)| {
        let (from_ms, to_ms) = (samples_to_ms(from) as i64, samples_to_ms(to) as i64);
        let (distance, j) = (0..agreed)
            .filter_map(|j| {
                let next = words.get(j + 1)?;
                let boundary = (words[j].end_ms + next.start_ms) / 2;
                let distance = (from_ms - boundary).max(boundary - to_ms).max(0);
                Some((distance, j))
            })
            .min()?;
        (distance <= SNAP_MS).then(|| {
            let keys = words[..=j].iter().map(|w| word_key(&w.text)).collect();
            (from + (to - from) / 2, keys)
        })
    })
}

fn join_text(hyps: &[Hypothesis]) -> String {
    hyps.iter()
        .map(|h| h.text.trim())
        .filter(|t| !is_annotation(t))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The transcriber and the partials a driver with free decoder slots
    /// has taken so far.
    struct Driven {
        lt: LiveTranscriber,
        taken: VecDeque<DecodeRequest>,
    }

    impl Driven {
        fn new(config: LiveConfig) -> Self {
            Self {
                lt: LiveTranscriber::new(config),
                taken: VecDeque::new(),
            }
        }
    }

    impl std::ops::Deref for Driven {
        type Target = LiveTranscriber;
        fn deref(&self) -> &LiveTranscriber {
            &self.lt
        }
    }

    impl std::ops::DerefMut for Driven {
        fn deref_mut(&mut self) -> &mut LiveTranscriber {
            &mut self.lt
        }
    }

    /// A synthetic "voice": a loud vowel-like tone the VAD accepts as speech.
    fn voiced(n: usize, phase0: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = (i + phase0) as f32 / 8000.0;
                let s = (2.0 * std::f32::consts::PI * 220.0 * t).sin() * 0.5
                    + (2.0 * std::f32::consts::PI * 440.0 * t).sin() * 0.3
                    + (2.0 * std::f32::consts::PI * 880.0 * t).sin() * 0.15;
                (s * 12_000.0) as i16
            })
            .collect()
    }

    /// Feeds `pattern` (true = voice, false = silence) in 20 ms frames on one
    /// track, with matching wideband chunks; a driver with a free decoder
    /// slot takes each partial at once.
    fn feed(lt: &mut Driven, track: Track, pattern: &[bool], from_frame: usize) {
        for (k, speech) in pattern.iter().enumerate() {
            feed_busy(&mut lt.lt, track, &[*speech], from_frame + k);
            while let Some(t) = lt.poll_partial_ready() {
                if let Some(r) = lt.take_partial(t) {
                    lt.taken.push_back(r);
                }
            }
        }
    }

    /// Partials taken while feeding, then finals, in order.
    fn drain_requests(lt: &mut Driven) -> Vec<DecodeRequest> {
        let mut out: Vec<_> = lt.taken.drain(..).collect();
        out.extend(std::iter::from_fn(|| lt.poll_request()));
        out
    }

    fn pattern(silence: usize, speech: usize, after: usize) -> Vec<bool> {
        let mut p = vec![false; silence];
        p.extend(vec![true; speech]);
        p.extend(vec![false; after]);
        p
    }

    #[test]
    fn silence_never_reaches_whisper() {
        let mut lt = Driven::new(LiveConfig::default());
        feed(&mut lt, Track::Caller, &vec![false; 500], 0);
        lt.finish();
        assert!(drain_requests(&mut lt).is_empty());
        assert!(lt.is_idle());
    }

    #[test]
    fn an_utterance_gets_partials_then_one_final() {
        let mut lt = Driven::new(LiveConfig::default());
        // 1 s silence, 2 s speech, 1 s silence.
        feed(&mut lt, Track::Caller, &pattern(50, 100, 50), 0);
        let reqs = drain_requests(&mut lt);
        let partials: Vec<_> = reqs
            .iter()
            .filter(|r| r.kind == DecodeKind::Partial)
            .collect();
        let finals: Vec<_> = reqs
            .iter()
            .filter(|r| r.kind == DecodeKind::Final)
            .collect();
        // Only one partial can be in flight (nobody answered), then the final.
        assert_eq!(partials.len(), 1);
        assert_eq!(finals.len(), 1);
        let f = finals[0];
        // Starts near the onset (1 s) minus pre-roll, covers the 2 s of speech.
        assert!((700..=1000).contains(&f.start_ms), "{}", f.start_ms);
        let dur_ms = f.audio.len() as u64 / 16;
        assert!((2000..=2700).contains(&dur_ms), "{dur_ms}");
        assert_eq!(f.track, Track::Caller);
    }

    #[test]
    fn partials_follow_answers_and_stale_ones_are_dropped() {
        let mut lt = Driven::new(LiveConfig::default());
        feed(&mut lt, Track::Agent, &pattern(10, 60, 0), 0);
        let first = drain_requests(&mut lt);
        assert_eq!(first.len(), 1);
        assert!(lt.is_current(first[0].id));
        // Whisper timed the text past the window's audio: clamped to it.
        let audio_ms = first[0].audio.len() as u64 / 16;
        assert!(audio_ms < 900);
        let hyp = |text: &str| {
            Some(vec![Hypothesis {
                start_ms: 0,
                end_ms: 900,
                text: text.into(),
                confidence: Some(0.9),
                words: Vec::new(),
            }])
        };
        lt.handle_result(first[0].id, hyp(" hello"));
        assert_eq!(
            lt.poll_event(),
            Some(CaptionEvent::Partial {
                track: Track::Agent,
                start_ms: 0,
                end_ms: audio_ms,
                text: "hello".into()
            })
        );
        // More speech: a second partial; then the utterance ends before it is answered.
        feed(&mut lt, Track::Agent, &[true; 40], 70);
        let second = drain_requests(&mut lt);
        assert_eq!(second.len(), 1);
        feed(&mut lt, Track::Agent, &[false; 40], 110);
        let fin = drain_requests(&mut lt);
        assert_eq!(fin[0].kind, DecodeKind::Final);
        assert!(
            !lt.is_current(second[0].id),
            "a final makes the partial stale"
        );
        lt.handle_result(second[0].id, hyp("hello there"));
        assert_eq!(lt.poll_event(), None, "stale partial is not shown");
        lt.handle_result(
            fin[0].id,
            Some(vec![Hypothesis {
                start_ms: 100,
                end_ms: 1800,
                text: " Hello there. ".into(),
                confidence: Some(0.8),
                words: Vec::new(),
            }]),
        );
        match lt.poll_event() {
            Some(CaptionEvent::Final(f)) => {
                assert_eq!(f.text, "Hello there.");
                assert_eq!(f.start_ms, fin[0].start_ms + 100);
                assert_eq!(f.track, Track::Agent);
            }
            other => panic!("{other:?}"),
        }
        // One batch of finals, timed once.
        assert!(lt.poll_final_timing().is_some());
        assert_eq!(lt.poll_final_timing(), None);
        assert!(lt.is_idle());
    }

    #[test]
    fn annotations_are_not_captions() {
        assert!(is_annotation(" [BLANK_AUDIO] "));
        assert!(is_annotation("(music)"));
        assert!(!is_annotation("I need help [with] this"));
        let h = |t: &str| Hypothesis {
            start_ms: 0,
            end_ms: 1,
            text: t.into(),
            confidence: None,
            words: Vec::new(),
        };
        assert_eq!(join_text(&[h("[BLANK_AUDIO]"), h(" hi ")]), "hi");
    }

    #[test]
    fn tracks_are_independent() {
        let mut lt = Driven::new(LiveConfig::default());
        feed(&mut lt, Track::Caller, &pattern(0, 60, 40), 0);
        feed(&mut lt, Track::Agent, &pattern(100, 60, 40), 0);
        let finals: Vec<_> = drain_requests(&mut lt)
            .into_iter()
            .filter(|r| r.kind == DecodeKind::Final)
            .collect();
        assert_eq!(finals.len(), 2);
        assert_eq!(finals[0].track, Track::Caller);
        assert_eq!(finals[1].track, Track::Agent);
        assert!(finals[1].start_ms >= 1700);
    }

    #[test]
    fn long_speech_is_cut_into_finals() {
        let cfg = LiveConfig {
            max_utterance_ms: 3_000,
            ..LiveConfig::default()
        };
        let mut lt = Driven::new(cfg);
        feed(&mut lt, Track::Caller, &vec![true; 400], 0); // 8 s of speech
        lt.finish();
        let finals: Vec<_> = drain_requests(&mut lt)
            .into_iter()
            .filter(|r| r.kind == DecodeKind::Final)
            .collect();
        assert!(finals.len() >= 3, "{}", finals.len());
        let total: usize = finals.iter().map(|f| f.audio.len()).sum();
        assert!(total >= 8 * 16_000 - 3_200, "no audio lost between cuts");
    }

    #[test]
    fn end_of_call_closes_open_speech() {
        let mut lt = Driven::new(LiveConfig::default());
        feed(&mut lt, Track::Caller, &pattern(5, 50, 0), 0);
        drain_requests(&mut lt);
        lt.finish();
        let reqs = drain_requests(&mut lt);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].kind, DecodeKind::Final);
    }

    fn word(text: &str, start_ms: i64, end_ms: i64) -> Word {
        Word {
            start_ms,
            end_ms,
            text: text.into(),
            probability: 0.9,
        }
    }

    fn hyp(words: Vec<Word>) -> Option<Vec<Hypothesis>> {
        let text = words
            .iter()
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        Some(vec![Hypothesis {
            start_ms: 0,
            end_ms: words.last().map_or(0, |w| w.end_ms as u64),
            text,
            confidence: Some(0.9),
            words,
        }])
    }

    /// Takes the next partial of `track` (the driver got a slot).
    fn next_partial(lt: &mut Driven, track: Track) -> DecodeRequest {
        drain_requests(lt)
            .into_iter()
            .find(|r| r.kind == DecodeKind::Partial && r.track == track)
            .expect("a partial")
    }

    /// Feeds frames with no driver taking partials (all decoder slots busy).
    fn feed_busy(lt: &mut LiveTranscriber, track: Track, pattern: &[bool], from_frame: usize) {
        for (k, speech) in pattern.iter().enumerate() {
            let i = from_frame + k;
            let samples = if *speech {
                voiced(160, i * 160)
            } else {
                vec![0; 160]
            };
            let wide: Vec<f32> = samples
                .iter()
                .flat_map(|s| [*s as f32 / 32768.0; 2])
                .collect();
            lt.handle_narrowband(&PcmChunk {
                track,
                sample_rate: 8000,
                start_sample: i as u64 * 160,
                samples,
                silence: !speech,
            });
            lt.handle_wideband(&WidebandChunk {
                track,
                start_sample: i as u64 * 320,
                samples: wide,
            });
        }
    }

    #[test]
    fn a_partial_takes_the_audio_there_is_when_its_slot_comes() {
        let mut lt = LiveTranscriber::new(LiveConfig::default());
        feed_busy(&mut lt, Track::Caller, &pattern(10, 100, 0), 0);
        assert_eq!(lt.poll_partial_ready(), Some(Track::Caller));
        assert_eq!(lt.poll_partial_ready(), None, "one partial at a time");
        let req = lt
            .take_partial(Track::Caller)
            .expect("utterance still open");
        // All 2.2 s there are (from onset minus pre-roll), not the 0.7 s
        // there were when the track became ready.
        let ms = req.audio.len() as u64 / 16;
        assert!(ms >= 1_900, "{ms}");
        assert!(lt.take_partial(Track::Caller).is_none(), "taken once");

        // An utterance that ends before the slot comes gets no partial.
        let mut lt = LiveTranscriber::new(LiveConfig::default());
        feed_busy(&mut lt, Track::Agent, &[true; 40], 0);
        assert_eq!(lt.poll_partial_ready(), Some(Track::Agent));
        feed_busy(&mut lt, Track::Agent, &[false; 40], 40);
        assert!(lt.take_partial(Track::Agent).is_none());
        assert_eq!(lt.poll_request().map(|r| r.kind), Some(DecodeKind::Final));
    }

    /// One hypothesis with `text` (a partial or a final's answer).
    fn heard(text: &str) -> Option<Vec<Hypothesis>> {
        Some(vec![Hypothesis {
            start_ms: 0,
            end_ms: 900,
            text: text.into(),
            confidence: Some(0.9),
            words: Vec::new(),
        }])
    }

    /// The texts of the finals among the events not yet polled.
    fn final_texts(lt: &mut Driven) -> Vec<String> {
        std::iter::from_fn(|| lt.poll_event())
            .filter_map(|e| match e {
                CaptionEvent::Final(f) => Some(f.text),
                _ => None,
            })
            .collect()
    }

    /// The final requests among `reqs`.
    fn finals(reqs: Vec<DecodeRequest>) -> Vec<DecodeRequest> {
        reqs.into_iter()
            .filter(|r| r.kind == DecodeKind::Final)
            .collect()
    }

    #[test]
    fn agreed_words_at_a_pause_are_confirmed_then_committed() {
        let mut lt = Driven::new(LiveConfig::default());
        // Speech from 0.2 s; a 400 ms pause at 1.4-1.8 s; speech goes on.
        let mut p = pattern(10, 60, 0);
        p.extend([false; 20]);
        p.extend([true; 20]);
        feed(&mut lt, Track::Caller, &p, 0);
        let p1 = next_partial(&mut lt, Track::Caller);
        let base = p1.start_ms as i64;
        assert_eq!(base, 0);
        let said = || {
            vec![
                word("Hello,", 250, 500),
                word("my", 560, 640),
                word("name", 640, 800),
                word("is", 820, 900),
                // Whisper's estimate is 300 ms late: still near the pause.
                word("Anna.", 900, 1_700),
                word("I", 1_800, 1_850),
            ]
        };
        lt.handle_result(p1.id, hyp(said()));
        assert!(matches!(
            lt.poll_event(),
            Some(CaptionEvent::Partial { .. })
        ));
        assert!(
            finals(drain_requests(&mut lt)).is_empty(),
            "nothing agreed yet"
        );

        feed(&mut lt, Track::Caller, &[true; 40], 110);
        let p2 = next_partial(&mut lt, Track::Caller);
        assert_eq!(p2.start_ms, 0, "same window until a commit");
        let mut more = said();
        more.push(word("need", 1_860, 2_000));
        lt.handle_result(p2.id, hyp(more));
        // "... Anna." agreed and ends near the pause: confirm that stretch,
        // cut in the pause (the VAD's hangover shortens it a little).
        let check = finals(drain_requests(&mut lt));
        assert_eq!(check.len(), 1);
        assert_eq!(check[0].start_ms, 0);
        let cut = check[0].audio.len() as u64 / 16;
        assert!((1_450..=1_750).contains(&cut), "{cut}");
        assert!(matches!(
            lt.poll_event(),
            Some(CaptionEvent::Partial { .. })
        ));

        // The confirming decode agrees (punctuation and case aside).
        lt.handle_result(
            check[0].id,
            Some(vec![Hypothesis {
                start_ms: 250,
                end_ms: 1_450,
                text: " hello my name is Anna".into(),
                confidence: Some(0.9),
                words: Vec::new(),
            }]),
        );
        match lt.poll_event() {
            Some(CaptionEvent::Final(f)) => {
                assert_eq!(f.text, "hello my name is Anna");
                assert_eq!((f.start_ms, f.end_ms), (250, 1_450));
                assert_eq!(f.track, Track::Caller);
            }
            other => panic!("{other:?}"),
        }
        // Partials and the utterance's final now start at the cut.
        feed(&mut lt, Track::Caller, &[true; 40], 150);
        let p3 = next_partial(&mut lt, Track::Caller);
        assert_eq!(p3.start_ms, cut);
        feed(&mut lt, Track::Caller, &[false; 40], 190);
        let fin = finals(drain_requests(&mut lt));
        assert_eq!(fin.len(), 1);
        assert_eq!(fin[0].start_ms, cut);
    }

    #[test]
    fn nothing_is_committed_without_a_pause_or_a_confirming_decode() {
        let said = || {
            vec![
                word("Thanks", 0, 300),
                word("for", 320, 400),
                word("calling.", 400, 1_100),
                word("Bye", 1_300, 1_600),
            ]
        };
        // Continuous speech: no pause, no commit however much partials agree.
        let mut lt = Driven::new(LiveConfig::default());
        feed(&mut lt, Track::Agent, &[true; 80], 0);
        let p1 = next_partial(&mut lt, Track::Agent);
        lt.handle_result(p1.id, hyp(said()));
        feed(&mut lt, Track::Agent, &[true; 40], 80);
        let p2 = next_partial(&mut lt, Track::Agent);
        lt.handle_result(p2.id, hyp(said()));
        assert!(finals(drain_requests(&mut lt)).is_empty());

        // A pause at 1.2-1.6 s, but the confirming decode disagrees.
        let mut lt = Driven::new(LiveConfig::default());
        let mut p = vec![true; 60];
        p.extend([false; 20]);
        p.extend([true; 20]);
        feed(&mut lt, Track::Agent, &p, 0);
        let p1 = next_partial(&mut lt, Track::Agent);
        lt.handle_result(p1.id, hyp(said()));
        feed(&mut lt, Track::Agent, &[true; 40], 100);
        let p2 = next_partial(&mut lt, Track::Agent);
        lt.handle_result(p2.id, hyp(said()));
        let check = finals(drain_requests(&mut lt));
        assert_eq!(check.len(), 1);
        lt.handle_result(
            check[0].id,
            Some(vec![Hypothesis {
                start_ms: 0,
                end_ms: 1_200,
                text: "Thanks for calling, bye".into(),
                confidence: Some(0.9),
                words: Vec::new(),
            }]),
        );
        assert!(
            !std::iter::from_fn(|| lt.poll_event()).any(|e| matches!(e, CaptionEvent::Final(_)))
        );
        // The window did not move: the next partial still starts at 0.
        feed(&mut lt, Track::Agent, &[true; 40], 140);
        let p3 = next_partial(&mut lt, Track::Agent);
        assert_eq!(p3.start_ms, 0);
        // An annotated hypothesis agrees with nothing.
        let mut h = hyp(said());
        if let Some(v) = h.as_mut() {
            v[0].text = "[BLANK_AUDIO] Thanks for calling. Bye".into();
        }
        lt.handle_result(p3.id, h);
        assert!(finals(drain_requests(&mut lt)).is_empty());
    }

    #[test]
    fn a_partial_that_heard_the_whole_utterance_is_its_final() {
        let mut lt = Driven::new(LiveConfig::default());
        // 1 s of speech; the first partial (0.7 s) is answered at once.
        feed(&mut lt, Track::Caller, &[true; 50], 0);
        let p1 = next_partial(&mut lt, Track::Caller);
        lt.handle_result(p1.id, heard("hello"));
        // In the silence after it, a second partial hears all of the speech.
        feed(&mut lt, Track::Caller, &[false; 20], 50);
        let p2 = next_partial(&mut lt, Track::Caller);
        assert!(p2.audio.len() / 16 >= 1_100);
        lt.handle_result(p2.id, heard("hello there"));
        feed(&mut lt, Track::Caller, &[false; 30], 70);
        assert!(
            finals(drain_requests(&mut lt)).is_empty(),
            "no second decode of the same audio"
        );
        assert_eq!(final_texts(&mut lt), ["hello there"]);
        // One batch of finals, timed once.
        assert!(lt.poll_final_timing().is_some());
        assert_eq!(lt.poll_final_timing(), None);
        assert!(lt.is_idle());
    }

    #[test]
    fn a_long_utterance_ends_at_a_shorter_pause() {
        let mut lt = Driven::new(LiveConfig::default());
        // 3 s of speech, a 400 ms pause: too short to end an utterance.
        let mut p = vec![true; 150];
        p.extend([false; 20]);
        // 4 s more, then the same pause: past 6 s, it ends the utterance.
        p.extend([true; 200]);
        p.extend([false; 20]);
        p.extend([true; 50]);
        feed(&mut lt, Track::Caller, &p, 0);
        let fin = finals(drain_requests(&mut lt));
        assert_eq!(fin.len(), 1, "one final, at the second pause");
        let end_ms = fin[0].start_ms + fin[0].audio.len() as u64 / 16;
        // Speech ended at 7.4 s; the final keeps a little of the pause.
        assert!((7_400..=7_800).contains(&end_ms), "{end_ms}");
    }

    #[test]
    fn the_final_waits_for_a_partial_that_heard_everything() {
        let mut lt = Driven::new(LiveConfig::default());
        // 1 s of speech; the first partial at 0.7 s is answered at once.
        feed(&mut lt, Track::Caller, &[true; 50], 0);
        let p1 = next_partial(&mut lt, Track::Caller);
        lt.handle_result(p1.id, heard("hello"));
        // A little silence: a partial is taken at once (speech may be over).
        feed(&mut lt, Track::Caller, &[false; 20], 50);
        let p2 = next_partial(&mut lt, Track::Caller);
        // The utterance closes before it is answered: no final decode yet.
        feed(&mut lt, Track::Caller, &[false; 30], 70);
        assert!(finals(drain_requests(&mut lt)).is_empty());
        assert!(!lt.is_idle());
        // Its answer is the final.
        lt.handle_result(p2.id, heard("hello there"));
        assert_eq!(final_texts(&mut lt), ["hello there"]);
        // One batch of finals, timed once.
        assert!(lt.poll_final_timing().is_some());
        assert_eq!(lt.poll_final_timing(), None);
        assert!(lt.is_idle());

        // Same again, but that partial fails: the final is decoded after all.
        let mut lt = Driven::new(LiveConfig::default());
        feed(&mut lt, Track::Agent, &[true; 50], 0);
        let p1 = next_partial(&mut lt, Track::Agent);
        lt.handle_result(p1.id, heard("hello"));
        feed(&mut lt, Track::Agent, &[false; 20], 50);
        let p2 = next_partial(&mut lt, Track::Agent);
        feed(&mut lt, Track::Agent, &[false; 30], 70);
        lt.handle_result(p2.id, None);
        assert_eq!(finals(drain_requests(&mut lt)).len(), 1);
    }
}
