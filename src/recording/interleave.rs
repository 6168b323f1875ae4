//! Sans-IO stereo interleaving of a call's two tracks: placed PCM chunks
//! in, 16-bit little-endian stereo frames out (caller left, agent right),
//! each sample at the position its `start_sample` gives it.
//!
//! Every call is recorded as stereo, one-track calls included (the absent
//! track is silence): one channel layout for every recording, and the
//! channel says who spoke without any metadata.
//!
//! Output advances as far as both tracks have audio. A track that falls
//! more than [`Interleaver::lag_frames`] (half a second) behind the other is
//! taken to be silent there and padded: a one-track call is not held back,
//! and what a crash can lose stays bounded (this half second plus the
//! recorder's half-second spool records: at most one second). Audio arriving for positions
//! already written (a track lagging by more than that) is dropped and
//! counted in [`Interleaver::late_samples`].

use std::collections::VecDeque;

use crate::media::{PcmChunk, Track};

/// Bytes per output frame: two 16-bit samples.
pub const FRAME_BYTES: usize = 4;

#[derive(Debug, Default)]
struct TrackQueue {
    /// Pending audio as (first position, samples), in order, not overlapping,
    /// all at or after the output position.
    segments: VecDeque<(u64, Vec<i16>)>,
    /// One past the last position received (0 before any audio).
    end: u64,
}

impl TrackQueue {
    /// The sample at `pos`, dropping segments that end before it.
    fn sample_at(&mut self, pos: u64) -> i16 {
        while let Some((start, s)) = self.segments.front() {
            if start + s.len() as u64 <= pos {
                self.segments.pop_front();
                continue;
            }
            return if *start <= pos {
                s[(pos - start) as usize]
            } else {
                0
            };
        }
        0
    }
}

/// See the module docs. Feed chunks with [`push`](Self::push), take frames
/// with [`poll`](Self::poll); after the last chunk call
/// [`finish`](Self::finish) and poll until nothing is left.
#[derive(Debug)]
pub struct Interleaver {
    sample_rate: u32,
    tracks: [TrackQueue; 2],
    /// Frames written so far = the position of the next frame.
    pos: u64,
    /// Frames never to exceed (bounds storage per recording).
    limit: u64,
    finished: bool,
    late: u64,
    truncated: bool,
}

impl Interleaver {
    /// Interleaves at `sample_rate`, writing at most `limit_frames` frames.
    pub fn new(sample_rate: u32, limit_frames: u64) -> Self {
        Self {
            sample_rate,
            tracks: Default::default(),
            pos: 0,
            limit: limit_frames,
            finished: false,
            late: 0,
            truncated: false,
        }
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// How far one track may run ahead before the other is padded.
    pub fn lag_frames(&self) -> u64 {
        u64::from(self.sample_rate) / 2
    }

    /// Takes a placed chunk. Chunks at another rate are refused (`false`):
    /// one stream has one rate.
    pub fn push(&mut self, chunk: PcmChunk) -> bool {
        if chunk.sample_rate != self.sample_rate {
            return false;
        }
        let t = &mut self.tracks[chunk.track.index()];
        let len = chunk.samples.len() as u64;
        let floor = t.end.max(self.pos);
        let start = chunk.start_sample;
        let end = start + len;
        let skip = floor.saturating_sub(start).min(len);
        if skip > 0 && !chunk.silence {
            self.late += skip;
        }
        if skip < len {
            let mut samples = chunk.samples;
            samples.drain(..skip as usize);
            t.segments.push_back((start + skip, samples));
        }
        t.end = t.end.max(end);
        true
    }

    /// No more chunks: everything received may be written.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    fn target(&self) -> u64 {
        let ends = [
            self.tracks[Track::Caller.index()].end,
            self.tracks[Track::Agent.index()].end,
        ];
        let lead = ends[0].max(ends[1]);
        let target = if self.finished {
            lead
        } else {
            ends[0]
                .min(ends[1])
                .max(lead.saturating_sub(self.lag_frames()))
        };
        target.min(self.limit).max(self.pos)
    }

    /// Appends up to `max_frames` ready frames to `out`; returns how many.
    pub fn poll(&mut self, out: &mut Vec<u8>, max_frames: usize) -> usize {
        let target = self.target();
        let n = (target - self.pos).min(max_frames as u64) as usize;
        out.reserve(n * FRAME_BYTES);
        for _ in 0..n {
            let pos = self.pos;
            let left = self.tracks[0].sample_at(pos);
            let right = self.tracks[1].sample_at(pos);
            out.extend_from_slice(&left.to_le_bytes());
            out.extend_from_slice(&right.to_le_bytes());
            self.pos += 1;
        }
        if self.pos >= self.limit {
            let beyond = self.tracks.iter().any(|t| t.end > self.limit);
            self.truncated |= beyond;
            for t in &mut self.tracks {
                t.segments.clear();
            }
        }
        n
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.pos
    }

    /// Received samples dropped because their position was already written.
    pub fn late_samples(&self) -> u64 {
        self.late
    }

    /// Audio was cut at the frame limit.
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(track: Track, start: u64, samples: Vec<i16>) -> PcmChunk {
        PcmChunk {
            track,
            sample_rate: 8000,
            start_sample: start,
            samples,
            silence: false,
        }
    }

    fn drain(i: &mut Interleaver) -> Vec<(i16, i16)> {
        let mut out = Vec::new();
        while i.poll(&mut out, 7) > 0 {}
        out.chunks(4)
            .map(|f| {
                (
                    i16::from_le_bytes([f[0], f[1]]),
                    i16::from_le_bytes([f[2], f[3]]),
                )
            })
            .collect()
    }

    #[test]
    fn tracks_are_aligned_by_position_caller_left() {
        let mut i = Interleaver::new(8000, u64::MAX);
        i.push(chunk(Track::Caller, 0, vec![1, 2, 3, 4]));
        // Nothing is written until the agent track is known there.
        assert!(drain(&mut i).is_empty());
        i.push(chunk(Track::Agent, 2, vec![-3, -4, -5]));
        assert_eq!(drain(&mut i), [(1, 0), (2, 0), (3, -3), (4, -4)]);
        i.push(chunk(Track::Caller, 6, vec![7]));
        i.finish();
        assert_eq!(drain(&mut i), [(0, -5), (0, 0), (7, 0)]);
        assert_eq!(i.frames(), 7);
        assert_eq!(i.late_samples(), 0);
    }

    #[test]
    fn a_silent_track_holds_output_back_by_at_most_the_lag() {
        let mut i = Interleaver::new(8000, u64::MAX);
        i.push(chunk(Track::Caller, 0, vec![5; 4000 + 10]));
        let out = drain(&mut i);
        assert_eq!(out.len(), 10);
        assert!(out.iter().all(|f| *f == (5, 0)));
        // Agent audio for positions already written is dropped and counted.
        i.push(chunk(Track::Agent, 0, vec![9; 20]));
        assert_eq!(i.late_samples(), 10);
        i.finish();
        let rest = drain(&mut i);
        assert_eq!(rest.len(), 4000);
        assert_eq!(&rest[..10], &[(5, 9); 10]);
    }

    #[test]
    fn the_limit_bounds_output() {
        let mut i = Interleaver::new(8000, 3);
        i.push(chunk(Track::Caller, 0, vec![1, 2, 3, 4, 5]));
        i.push(chunk(Track::Agent, 1_000_000, vec![1]));
        i.finish();
        assert_eq!(drain(&mut i).len(), 3);
        assert!(i.truncated());
        assert!(!i.push(PcmChunk {
            sample_rate: 16_000,
            ..chunk(Track::Caller, 9, vec![1])
        }));
    }
}
