//! Placing one track's frames on its timeline by timestamp.
//!
//! Providers stamp each frame with its time since stream start; the network may
//! reorder, duplicate, lose or bunch frames. [`Placer`] turns that into one
//! contiguous run of samples: it releases in-order audio at once, holds frames
//! that arrive ahead of a gap for a bounded time, and fills what never comes
//! with silence so both tracks stay aligned to the stream clock.
//!
//! A frame stamped more than `max_gap_ms` away from where the track is is not
//! trusted on its own: one bogus timestamp must not move the timeline. Such
//! frames wait aside until consistent followers confirm the new timeline.

use std::collections::btree_map::Entry;
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
    /// Stamped more than `max_gap_ms` ahead of the track and never confirmed by
    /// consistent followers: a bogus timestamp, not a jump of the timeline.
    OutOfRange,
}

impl DropReason {
    pub const ALL: [DropReason; 6] = [
        DropReason::Late,
        DropReason::Duplicate,
        DropReason::Overlap,
        DropReason::Malformed,
        DropReason::Empty,
        DropReason::OutOfRange,
    ];

    /// Stable snake_case label, e.g. for a Prometheus `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Late => "late",
            DropReason::Duplicate => "duplicate",
            DropReason::Overlap => "overlap",
            DropReason::Malformed => "malformed",
            DropReason::Empty => "empty",
            DropReason::OutOfRange => "out_of_range",
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
    /// The provider's timestamps restarted far behind the track (some providers
    /// reset them mid-stream). Audio stamped `resumed` onwards continues at
    /// `at`, contiguously, where a frame stamped `expected` was due; `expected`
    /// and `resumed` are sample positions on the provider's clock.
    Reanchored {
        at: u64,
        expected: u64,
        resumed: u64,
    },
    /// A frame (or its head, for [`DropReason::Overlap`]) was discarded.
    Dropped(DropReason),
}

/// Highest sample position we accept, so that positions, ends and their 16 kHz
/// equivalents all fit in `u64` (about three million years at 48 kHz).
pub const MAX_POSITION: u64 = 1 << 62;

/// How many recently placed frame starts we remember to tell a duplicate from a
/// late frame; duplicates come from retransmission, so they arrive soon after.
const RECENT: usize = 16;

/// Mutually consistent far-off frames that move the timeline: a lone bogus
/// timestamp is common, three that agree are a real jump or reset.
pub const CONFIRM_FRAMES: usize = 3;

/// Reorder buffer and jitter absorber for one track.
///
/// Positions are samples at the input rate since stream start (shifted by any
/// timeline reset); the *cursor* is the position up to which audio has been
/// released. A frame starting within `jitter_tolerance_ms` of the cursor is
/// released at the cursor (timestamps have millisecond resolution and jitter;
/// the audio itself is contiguous). A frame further ahead waits behind the gap
/// until a late frame fills it, or until more than `reorder_window_ms` of audio
/// waits or the oldest waiting frame has waited `max_hold`; then the gap
/// becomes silence (or, beyond `max_gap_ms`, is skipped).
///
/// A frame more than `max_gap_ms` ahead of or behind the cursor is a
/// *suspect*: one bogus timestamp must not move the timeline (everything after
/// it would be late), yet a real jump (a long hold) or a provider's timestamp
/// reset must. Suspects wait aside, delaying nothing, until [`CONFIRM_FRAMES`]
/// mutually consistent ones (or two holding the reorder window) confirm the
/// new timeline: ahead, the timeline jumps there like across any gap; behind,
/// the new timestamps are re-anchored so audio continues from the cursor. A
/// frame placed or held on the current timeline shows it is alive and drops
/// the suspects: [`DropReason::OutOfRange`] ahead, [`DropReason::Late`] behind.
/// So does an inconsistent suspect, which starts a new run, and [`finish`](Self::finish).
///
/// Sans-IO like the session: outputs queue up and are taken with [`poll`](Self::poll).
#[derive(Debug)]
pub struct Placer {
    rate: u32,
    window: u64,
    tolerance: u64,
    max_gap: u64,
    /// Distance from the cursor beyond which a frame is a suspect: `max_gap`,
    /// but never within reach of ordinary reordering.
    far: u64,
    max_hold: Duration,
    cursor: u64,
    /// Added to every timestamp's position since the last timeline reset.
    offset: u64,
    held: BTreeMap<u64, Held>,
    /// Total samples in `held`, compared against the window.
    held_samples: u64,
    suspects: Option<Suspects>,
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

/// Which way a suspect lies off the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Ahead,
    Behind,
}

impl Side {
    /// Unconfirmed, a suspect ahead is a bogus timestamp; one behind is just late.
    fn drop_reason(self) -> DropReason {
        match self {
            Side::Ahead => DropReason::OutOfRange,
            Side::Behind => DropReason::Late,
        }
    }
}

/// A run of mutually consistent suspects on one side of the timeline.
#[derive(Debug)]
struct Suspects {
    side: Side,
    frames: Vec<(u64, Held)>,
    /// Earliest start and latest end of `frames`.
    lo: u64,
    hi: u64,
    samples: u64,
}

impl Suspects {
    fn new(side: Side) -> Self {
        Self {
            side,
            frames: Vec::with_capacity(CONFIRM_FRAMES),
            lo: u64::MAX,
            hi: 0,
            samples: 0,
        }
    }

    /// Whether a frame at `start` fits this run's timeline, allowing `slack`
    /// for reordering within it.
    fn admits(&self, side: Side, start: u64, slack: u64) -> bool {
        side == self.side
            && start.saturating_add(slack) >= self.lo
            && start <= self.hi.saturating_add(slack)
    }

    fn add(&mut self, start: u64, held: Held) {
        let len = held.samples.len() as u64;
        self.lo = self.lo.min(start);
        self.hi = self.hi.max(start.saturating_add(len));
        self.samples = self.samples.saturating_add(len);
        self.frames.push((start, held));
    }

    /// Never one frame alone, however long: that is what an outlier looks like.
    fn confirmed(&self, window: u64) -> bool {
        self.frames.len() >= CONFIRM_FRAMES || (self.frames.len() >= 2 && self.samples >= window)
    }
}

impl Placer {
    /// Uses the rate and timing fields of `config`; the codec is not its concern.
    pub fn new(config: &SessionConfig) -> Self {
        let rate = config.sample_rate;
        let window = ms_to_samples(config.reorder_window_ms, rate);
        let tolerance = ms_to_samples(config.jitter_tolerance_ms, rate);
        let max_gap = ms_to_samples(config.max_gap_ms, rate);
        Self {
            rate,
            window,
            tolerance,
            max_gap,
            far: max_gap.max(window.saturating_add(tolerance)),
            max_hold: config.max_hold,
            cursor: 0,
            offset: 0,
            held: BTreeMap::new(),
            held_samples: 0,
            suspects: None,
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
            .and_then(|start| start.checked_add(self.offset))
            .filter(|start| start.saturating_add(len) <= MAX_POSITION);
        let Some(start) = start else {
            self.reject(DropReason::Malformed);
            return Err(MediaError::TimestampOutOfRange(timestamp_ms));
        };
        let frame = Held {
            samples,
            arrived: now,
        };
        if len == 0 {
            self.reject(DropReason::Empty);
        } else if self.is_duplicate(start) {
            self.reject(DropReason::Duplicate);
        } else if let Some(side) = self.far_side(start) {
            self.suspect(side, start, frame);
        } else if self.is_late(start, len) {
            self.reject(DropReason::Late);
        } else {
            // The current timeline is alive, so far-off frames were not a new one.
            self.drop_suspects();
            if self.within_tolerance(start) {
                self.place(start, frame.samples);
                self.release_contiguous();
            } else {
                self.hold(start, frame);
            }
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
    /// held frame's arrival plus `max_hold`. Suspects have no deadline: only
    /// later frames can confirm or refute them.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline()
    }

    /// End of stream: drops unconfirmed suspects, fills every remaining gap and
    /// releases all held audio.
    pub fn finish(&mut self) {
        self.drop_suspects();
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

    fn is_duplicate(&self, start: u64) -> bool {
        self.recent.contains(&start)
            || self.held.contains_key(&start)
            || self
                .suspects
                .as_ref()
                .is_some_and(|run| run.frames.iter().any(|(s, _)| *s == start))
    }

    /// Whether a frame starting at `start` is too far from the cursor to trust alone.
    fn far_side(&self, start: u64) -> Option<Side> {
        if start > self.cursor.saturating_add(self.far) {
            Some(Side::Ahead)
        } else if start.saturating_add(self.far) < self.cursor {
            Some(Side::Behind)
        } else {
            None
        }
    }

    /// Whether a frame's slot has entirely been played out already.
    fn is_late(&self, start: u64, len: u64) -> bool {
        start.saturating_add(self.tolerance) < self.cursor
            && start.saturating_add(len) <= self.cursor
    }

    /// Whether a frame starting at `start` continues the cursor (or lies behind it).
    fn within_tolerance(&self, start: u64) -> bool {
        start <= self.cursor.saturating_add(self.tolerance)
    }

    fn hold(&mut self, start: u64, frame: Held) {
        match self.held.entry(start) {
            Entry::Occupied(_) => self.reject(DropReason::Duplicate),
            Entry::Vacant(slot) => {
                self.held_samples += frame.samples.len() as u64;
                slot.insert(frame);
            }
        }
    }

    /// Sets a far-off frame aside; once its run is confirmed, moves the timeline.
    fn suspect(&mut self, side: Side, start: u64, frame: Held) {
        let slack = self.window.saturating_add(self.tolerance);
        if !self
            .suspects
            .as_ref()
            .is_some_and(|run| run.admits(side, start, slack))
        {
            self.drop_suspects();
        }
        let run = self.suspects.get_or_insert_with(|| Suspects::new(side));
        run.add(start, frame);
        if !run.confirmed(self.window) {
            return;
        }
        if let Some(run) = self.suspects.take() {
            match run.side {
                Side::Ahead => self.jump(run),
                Side::Behind => self.reanchor(run),
            }
        }
    }

    fn drop_suspects(&mut self) {
        if let Some(run) = self.suspects.take() {
            for _ in &run.frames {
                self.reject(run.side.drop_reason());
            }
        }
    }

    /// A confirmed jump ahead: what is held of the old timeline goes out, then
    /// the gap up to the new one becomes silence or a skip, by its length.
    fn jump(&mut self, run: Suspects) {
        let target = run.lo;
        for (start, frame) in run.frames {
            self.hold(start, frame);
        }
        while self.cursor < target && !self.held.is_empty() {
            self.fill_first_gap();
        }
    }

    /// A confirmed reset behind: the old timeline is finished (its held audio
    /// goes out, gaps filled), then the new timestamps are shifted so they
    /// continue at the cursor. Moving the output back is never an option:
    /// consumers rely on each track's positions only growing.
    fn reanchor(&mut self, run: Suspects) {
        while !self.held.is_empty() {
            self.fill_first_gap();
        }
        let shift = self.cursor.saturating_sub(run.lo);
        self.out.push_back(Placement::Reanchored {
            at: self.cursor,
            expected: self.cursor.saturating_sub(self.offset),
            resumed: run.lo.saturating_sub(self.offset),
        });
        self.offset = self.offset.saturating_add(shift);
        for (start, frame) in run.frames {
            self.hold(start.saturating_add(shift), frame);
        }
        self.release_contiguous();
    }

    /// Releases a frame that starts at most `tolerance` after the cursor.
    fn place(&mut self, start: u64, mut samples: Vec<i16>) {
        if start.saturating_add(self.tolerance) < self.cursor {
            if self.is_late(start, samples.len() as u64) {
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
        // Held frames normally start more than `tolerance` past the cursor.
        let len = next.saturating_sub(self.cursor);
        if len > 0 {
            let gap = Placement::gap(self.cursor, len, self.max_gap);
            self.out.push_back(gap);
            self.cursor = next;
        }
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
        // A jump needs confirming frames (see the suspect tests below).
        for ts in [20_020, 20_040, 20_060] {
            p.push(t, ts, frame(160, 2)).unwrap();
        }
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

    /// Asserts the positional steps are contiguous (a skip moves on by its
    /// length) and returns the value of each placed frame, in order.
    fn placed_values(out: &[Placement]) -> Vec<i16> {
        let mut next = None;
        let mut values = Vec::new();
        for step in out {
            let (start, end) = match step {
                Placement::Audio { start, samples } => {
                    values.push(samples[0]);
                    (*start, start + samples.len() as u64)
                }
                Placement::Silence { start, len } | Placement::Skipped { start, len } => {
                    (*start, start + len)
                }
                Placement::Reanchored { at, .. } => (*at, *at),
                Placement::Dropped(_) => continue,
            };
            assert_eq!(start, next.unwrap_or(start), "contiguity at {step:?}");
            next = Some(end);
        }
        values
    }

    fn drops(out: &[Placement]) -> Vec<DropReason> {
        out.iter()
            .filter_map(|step| match step {
                Placement::Dropped(reason) => Some(*reason),
                _ => None,
            })
            .collect()
    }

    /// Ten 20 ms frames valued 1..=10, with `extra` pushed before frame `at`.
    fn ten_frames_with(p: &mut Placer, t: Instant, at: u64, extra: &[u64]) {
        for i in 0..10u64 {
            if i == at {
                for &ts in extra {
                    p.push(t, ts, frame(160, 99)).unwrap();
                }
            }
            p.push(t, i * 20, frame(160, i as i16 + 1)).unwrap();
        }
    }

    #[test]
    fn an_outlier_in_normal_audio_costs_only_that_frame() {
        let (mut p, t) = placer();
        ten_frames_with(&mut p, t, 5, &[3_600_000]);
        // Nothing waited behind the outlier.
        assert_eq!(p.cursor(), 1_600);
        assert_eq!(p.poll_timeout(), None);
        let out = drain(&mut p);
        assert_eq!(placed_values(&out), (1..=10).collect::<Vec<_>>());
        assert_eq!(drops(&out), [DropReason::OutOfRange]);
    }

    #[test]
    fn two_agreeing_outliers_are_not_a_jump() {
        let (mut p, t) = placer();
        ten_frames_with(&mut p, t, 5, &[50_000, 50_020]);
        let out = drain(&mut p);
        assert_eq!(placed_values(&out), (1..=10).collect::<Vec<_>>());
        assert_eq!(drops(&out), [DropReason::OutOfRange; 2]);
    }

    #[test]
    fn outliers_that_disagree_never_confirm() {
        let (mut p, t) = placer();
        // Random-looking far timestamps, each starting a run of its own.
        let garbage = [50_000, 90_000, 40_020, 3_000_000, 70_000, 50_020];
        ten_frames_with(&mut p, t, 5, &garbage);
        let out = drain(&mut p);
        assert_eq!(placed_values(&out), (1..=10).collect::<Vec<_>>());
        assert_eq!(drops(&out), [DropReason::OutOfRange; 6]);
    }

    #[test]
    fn a_repeated_outlier_does_not_confirm_itself() {
        let (mut p, t) = placer();
        ten_frames_with(&mut p, t, 5, &[50_000; 3]);
        let out = drain(&mut p);
        assert_eq!(placed_values(&out), (1..=10).collect::<Vec<_>>());
        assert_eq!(
            drops(&out),
            [
                DropReason::Duplicate,
                DropReason::Duplicate,
                DropReason::OutOfRange
            ]
        );
    }

    #[test]
    fn unconfirmed_outliers_are_dropped_at_the_end() {
        let (mut p, t) = placer();
        p.push(t, 0, frame(160, 1)).unwrap();
        p.push(t, 50_000, frame(160, 2)).unwrap();
        p.finish();
        let out = drain(&mut p);
        assert_eq!(placed_values(&out), [1]);
        assert_eq!(drops(&out), [DropReason::OutOfRange]);
    }

    #[test]
    fn a_confirmed_jump_flushes_the_old_timeline_then_jumps() {
        let (mut p, t) = placer();
        p.push(t, 0, frame(160, 1)).unwrap();
        p.push(t, 40, frame(160, 2)).unwrap(); // held: ts 20 is missing
        for (ts, v) in [(30_020, 4), (30_000, 3)] {
            p.push(t, ts, frame(160, v)).unwrap();
        }
        assert_eq!(p.cursor(), 160, "two frames do not move the timeline");
        p.push(t, 30_040, frame(160, 5)).unwrap();
        let out = drain(&mut p);
        assert_eq!(placed_values(&out), [1, 2, 3, 4, 5]);
        assert_eq!(
            out[1],
            Placement::Silence {
                start: 160,
                len: 160
            }
        );
        assert_eq!(
            out[3],
            Placement::Skipped {
                start: 480,
                len: 240_000 - 480
            }
        );
        assert!(drops(&out).is_empty());
        assert_eq!(p.cursor(), 240_480);
    }

    #[test]
    fn a_timestamp_reset_is_reanchored() {
        let (mut p, t) = placer();
        // 12 s of audio, then the provider's timestamps restart at zero.
        for i in 0..600u64 {
            p.push(t, i * 20, frame(160, 1)).unwrap();
        }
        drain(&mut p);
        for (i, ts) in [0, 20, 40, 60, 80].into_iter().enumerate() {
            p.push(t, ts, frame(160, i as i16 + 2)).unwrap();
        }
        let out = drain(&mut p);
        assert_eq!(
            out[0],
            Placement::Reanchored {
                at: 96_000,
                expected: 96_000,
                resumed: 0
            }
        );
        assert_eq!(placed_values(&out), [2, 3, 4, 5, 6]);
        assert!(drops(&out).is_empty());
        assert_eq!(p.cursor(), 96_800);
        // The new timeline is the current one now: a merely late frame is late.
        p.push(t, 20, frame(160, 9)).unwrap();
        p.push(t, 10, frame(160, 9)).unwrap();
        assert_eq!(
            drain(&mut p),
            [
                Placement::Dropped(DropReason::Duplicate),
                Placement::Dropped(DropReason::Late)
            ]
        );
    }

    #[test]
    fn a_single_far_late_frame_stays_late() {
        let (mut p, t) = placer();
        for i in 0..600u64 {
            if i == 599 {
                p.push(t, 40, frame(160, 9)).unwrap();
            }
            p.push(t, i * 20, frame(160, 1)).unwrap();
        }
        let out = drain(&mut p);
        assert_eq!(placed_values(&out).len(), 600);
        assert_eq!(drops(&out), [DropReason::Late]);
    }

    #[test]
    fn a_confirmed_bogus_jump_heals_by_reanchoring() {
        let (mut p, t) = placer();
        ten_frames_with(&mut p, t, 5, &[100_000, 100_020, 100_040]);
        let out = drain(&mut p);
        // The jump costs the real timeline nothing but its position.
        let mut expected: Vec<i16> = (1..=5).collect();
        expected.extend([99; 3]);
        expected.extend(6..=10);
        assert_eq!(placed_values(&out), expected);
        assert!(drops(&out).is_empty());
        assert!(out
            .iter()
            .any(|step| matches!(step, Placement::Reanchored { resumed: 800, .. })));
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
