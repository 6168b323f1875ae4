//! Placing one track's frames on its timeline by timestamp.
//!
//! Providers stamp each frame with its time since stream start; the network may
//! reorder, duplicate, lose or bunch frames. [`Placer`] turns that into one
//! contiguous run of samples: it releases in-order audio at once, holds frames
//! that arrive ahead of a gap for a bounded time, and fills what never comes
//! with silence so both tracks stay aligned to the stream clock.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::session::SessionConfig;
use super::MediaError;

/// Why a frame, or part of one, was not placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Entirely before the cursor: its slot was already played out, often as silence.
    Late,
    /// Starts where a frame already placed or held starts.
    Duplicate,
    /// Started before the cursor and ran past it: the overlapping head was cut
    /// and the rest placed.
    Overlap,
    /// Payload could not be decoded, or its timestamp is out of range.
    Malformed,
    /// Carried no audio.
    Empty,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::Late,
        DropReason::Duplicate,
        DropReason::Overlap,
        DropReason::Malformed,
        DropReason::Empty,
    ];

    /// Stable snake_case label, e.g. for a Prometheus `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Late => "late",
            DropReason::Duplicate => "duplicate",
            DropReason::Overlap => "overlap",
            DropReason::Malformed => "malformed",
            DropReason::Empty => "empty",
        }
    }

    /// Dense index into [`DropReason::ALL`], for per-reason counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One step of a track's timeline, in the order it must be consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Decoded audio placed at sample `start`.
    Audio { start: u64, samples: Vec<i16> },
    /// A gap of `len` samples at `start` that no frame filled in time: play silence.
    Silence { start: u64, len: u64 },
    /// A gap longer than `max_gap_ms`, skipped: the next audio starts `len` samples later.
    Skipped { start: u64, len: u64 },
    /// A frame (or its head, for [`DropReason::Overlap`]) was discarded.
    Dropped(DropReason),
}

/// Highest sample position we accept, so that positions, ends and their 16 kHz
/// equivalents all fit in `u64` (about three million years at 48 kHz).
pub const MAX_POSITION: u64 = 1 << 62;

/// How many recently placed frame starts we remember to tell a duplicate from a
/// late frame; duplicates come from retransmission, so they arrive soon after.
const RECENT: usize = 16;

/// Reorder buffer and jitter absorber for one track.
///
/// Positions are samples at the input rate since stream start; the *cursor* is
/// the position up to which audio has been released. A frame starting within
/// `jitter_tolerance_ms` of the cursor is released at the cursor (timestamps
/// have millisecond resolution and jitter; the audio itself is contiguous). A
/// frame further ahead waits behind the gap until a late frame fills it, or
/// until more than `reorder_window_ms` of audio waits or the oldest waiting
/// frame has waited `max_hold`; then the gap becomes silence (or, beyond
/// `max_gap_ms`, is skipped).
///
/// Sans-IO like the session: outputs queue up and are taken with [`poll`](Self::poll).
#[derive(Debug)]
pub struct Placer {
    rate: u32,
    window: u64,
    tolerance: u64,
    max_gap: u64,
    max_hold: Duration,
    cursor: u64,
    held: BTreeMap<u64, Held>,
    /// Total samples in `held`, compared against the window.
    held_samples: u64,
    /// Starts of recently placed frames (a ring; `u64::MAX` is never a position).
    recent: [u64; RECENT],
    recent_next: usize,
    out: VecDeque<Placement>,
}

#[derive(Debug)]
struct Held {
    samples: Vec<i16>,
    arrived: Instant,
}

impl Placer {
    /// Uses the rate and timing fields of `config`; the codec is not its concern.
    pub fn new(config: &SessionConfig) -> Self {
        let rate = config.sample_rate;
        Self {
            rate,
            window: ms_to_samples(config.reorder_window_ms, rate),
            tolerance: ms_to_samples(config.jitter_tolerance_ms, rate),
            max_gap: ms_to_samples(config.max_gap_ms, rate),
            max_hold: config.max_hold,
            cursor: 0,
            held: BTreeMap::new(),
            held_samples: 0,
            recent: [u64::MAX; RECENT],
            recent_next: 0,
            out: VecDeque::new(),
        }
    }

    /// Position up to which audio has been released.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Places (or holds, or drops) a frame that arrived at `now`, then releases
    /// whatever has waited too long.
    ///
    /// An out-of-range timestamp is reported both as an error and as a
    /// [`DropReason::Malformed`] drop, so counters that only watch drops see it.
    pub fn push(
        &mut self,
        now: Instant,
        timestamp_ms: u64,
        samples: Vec<i16>,
    ) -> Result<(), MediaError> {
        let len = samples.len() as u64;
        let start = u64::try_from(u128::from(timestamp_ms) * u128::from(self.rate) / 1000)
            .ok()
            .filter(|start| start.saturating_add(len) <= MAX_POSITION);
        let Some(start) = start else {
            self.reject(DropReason::Malformed);
            return Err(MediaError::TimestampOutOfRange(timestamp_ms));
        };
        if samples.is_empty() {
            self.reject(DropReason::Empty);
        } else if self.recent.contains(&start) || self.held.contains_key(&start) {
            self.reject(DropReason::Duplicate);
        } else if !self.within_tolerance(start) {
            self.held_samples += len;
            self.held.insert(
                start,
                Held {
                    samples,
                    arrived: now,
                },
            );
        } else {
            self.place(start, samples);
            self.release_contiguous();
        }
        self.handle_timeout(now);
        Ok(())
    }

    /// Fills gaps whose frames have waited past `max_hold` or that push the held
    /// audio over the reorder window.
    pub fn handle_timeout(&mut self, now: Instant) {
        while !self.held.is_empty()
            && (self.held_samples > self.window || self.deadline().is_some_and(|d| d <= now))
        {
            self.fill_first_gap();
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work: the oldest
    /// held frame's arrival plus `max_hold`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline()
    }

    /// End of stream: fills every remaining gap and releases all held audio.
    pub fn finish(&mut self) {
        while !self.held.is_empty() {
            self.fill_first_gap();
        }
    }

    /// Next output, in timeline order.
    pub fn poll(&mut self) -> Option<Placement> {
        self.out.pop_front()
    }

    fn reject(&mut self, reason: DropReason) {
        self.out.push_back(Placement::Dropped(reason));
    }

    fn deadline(&self) -> Option<Instant> {
        let oldest = self.held.values().map(|h| h.arrived).min()?;
        oldest.checked_add(self.max_hold)
    }

    fn first_held(&self) -> Option<u64> {
        self.held.keys().next().copied()
    }

    /// Whether a frame starting at `start` continues the cursor (or lies behind it).
    fn within_tolerance(&self, start: u64) -> bool {
        start <= self.cursor.saturating_add(self.tolerance)
    }

    /// Releases a frame that starts at most `tolerance` after the cursor.
    fn place(&mut self, start: u64, mut samples: Vec<i16>) {
        let len = samples.len() as u64;
        if start.saturating_add(self.tolerance) < self.cursor {
            if start + len <= self.cursor {
                self.reject(DropReason::Late);
                return;
            }
            // Beyond jitter: the head really overlaps audio already out.
            samples.drain(..(self.cursor - start) as usize);
            self.reject(DropReason::Overlap);
        }
        self.recent[self.recent_next] = start;
        self.recent_next = (self.recent_next + 1) % RECENT;
        let placed = samples.len() as u64;
        self.out.push_back(Placement::Audio {
            start: self.cursor,
            samples,
        });
        self.cursor += placed;
    }

    /// Releases held frames for as long as they continue the cursor.
    fn release_contiguous(&mut self) {
        while let Some(start) = self.first_held().filter(|&s| self.within_tolerance(s)) {
            if let Some(held) = self.held.remove(&start) {
                self.held_samples -= held.samples.len() as u64;
                self.place(start, held.samples);
            }
        }
    }

    /// Gives up on the gap before the first held frame, then releases what follows it.
    fn fill_first_gap(&mut self) {
        let Some(next) = self.first_held() else {
            return;
        };
        // Held frames always start more than `tolerance` past the cursor.
        let gap = Placement::gap(self.cursor, next - self.cursor, self.max_gap);
        self.out.push_back(gap);
        self.cursor = next;
        self.release_contiguous();
    }
}

impl Placement {
    fn gap(start: u64, len: u64, max_gap: u64) -> Self {
        if len <= max_gap {
            Placement::Silence { start, len }
        } else {
            Placement::Skipped { start, len }
        }
    }
}

/// Milliseconds to samples at `rate`, saturating (config values are not trusted to be small).
pub(crate) fn ms_to_samples(ms: u64, rate: u32) -> u64 {
    u64::try_from(u128::from(ms) * u128::from(rate) / 1000).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placer() -> (Placer, Instant) {
        (Placer::new(&SessionConfig::twilio()), Instant::now())
    }

    fn frame(len: usize, value: i16) -> Vec<i16> {
        vec![value; len]
    }

    fn drain(p: &mut Placer) -> Vec<Placement> {
        std::iter::from_fn(|| p.poll()).collect()
    }

    #[test]
    fn small_jitter_snaps_to_the_cursor() {
        let (mut p, t) = placer();
        for (ts, v) in [(0, 1), (21, 2), (39, 3), (65, 4)] {
            p.push(t, ts, frame(160, v)).unwrap();
        }
        let starts: Vec<_> = drain(&mut p)
            .into_iter()
            .map(|x| match x {
                Placement::Audio { start, .. } => start,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(starts, [0, 160, 320, 480]);
    }

    #[test]
    fn partial_overlap_is_trimmed() {
        let (mut p, t) = placer();
        p.push(t, 0, frame(160, 1)).unwrap();
        p.push(t, 20, frame(160, 2)).unwrap();
        drain(&mut p);
        // Starts at 200, 120 samples before the cursor (beyond the 80-sample tolerance).
        p.push(t, 25, frame(160, 3)).unwrap();
        assert_eq!(
            drain(&mut p),
            [
                Placement::Dropped(DropReason::Overlap),
                Placement::Audio {
                    start: 320,
                    samples: frame(40, 3)
                },
            ]
        );
    }

    #[test]
    fn held_audio_over_the_window_forces_the_gap() {
        let (mut p, t) = placer();
        p.push(t, 0, frame(160, 1)).unwrap();
        drain(&mut p);
        for ts in [40, 60, 80] {
            p.push(t, ts, frame(160, 2)).unwrap();
        }
        // 60 ms held: still waiting for ts 20.
        assert_eq!(drain(&mut p), []);
        p.push(t, 100, frame(160, 2)).unwrap();
        let out = drain(&mut p);
        assert_eq!(
            out[0],
            Placement::Silence {
                start: 160,
                len: 160
            }
        );
        assert_eq!(out.len(), 5);
        assert_eq!(p.cursor(), 960);
    }

    #[test]
    fn timeout_counts_from_the_oldest_arrival() {
        let (mut p, t) = placer();
        p.push(t + Duration::from_millis(30), 60, frame(160, 1))
            .unwrap();
        p.push(t + Duration::from_millis(10), 40, frame(160, 1))
            .unwrap();
        let deadline = t + Duration::from_millis(110);
        assert_eq!(p.poll_timeout(), Some(deadline));
        p.handle_timeout(deadline - Duration::from_millis(1));
        assert_eq!(drain(&mut p), []);
        p.handle_timeout(deadline);
        assert_eq!(drain(&mut p)[0], Placement::Silence { start: 0, len: 320 });
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn long_gaps_are_skipped_not_filled() {
        let (mut p, t) = placer();
        p.push(t, 0, frame(160, 1)).unwrap();
        p.push(t, 20_020, frame(160, 2)).unwrap();
        p.finish();
        let out = drain(&mut p);
        assert_eq!(
            out[1],
            Placement::Skipped {
                start: 160,
                len: 160_000
            }
        );
        assert_eq!(
            out[2],
            Placement::Audio {
                start: 160_160,
                samples: frame(160, 2)
            }
        );
    }

    #[test]
    fn out_of_range_timestamps_are_errors() {
        let (mut p, t) = placer();
        for ts in [u64::MAX, u64::MAX / 8, MAX_POSITION / 8] {
            assert_eq!(
                p.push(t, ts, frame(160, 1)),
                Err(MediaError::TimestampOutOfRange(ts))
            );
            assert_eq!(drain(&mut p), [Placement::Dropped(DropReason::Malformed)]);
        }
        assert_eq!(p.cursor(), 0);
    }

    #[test]
    fn drop_reason_labels_are_snake_case_and_indexed() {
        for (i, reason) in DropReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), i);
            let label = reason.as_str();
            assert!(label.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }
}
