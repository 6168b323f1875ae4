//! Sample-rate conversion of mono `f32` audio between arbitrary rates.
//!
//! This is the one rate converter of the file-audio path (decoding, batch
//! transcription). [`crate::media::Upsampler`] serves live telephony: `i16`
//! input from a fixed list of rates. Files come as `f32` at whatever rate the
//! encoder chose (96 kHz, 37.8 kHz, ...), so this generalises the same
//! technique — rubato's fixed-ratio FFT resampler with its filter delay
//! compensated — to any pair of rates.

use rubato::{FftFixedInOut, Resampler as _};

/// Highest rate accepted on either side. Real audio stops at 384 kHz; the cap
/// bounds the FFT length (which can reach the rate itself for coprime rates),
/// since a rate read from a file header is untrusted input.
pub const MAX_RATE: u32 = 384_000;

/// The rate pair cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot resample from {from} Hz to {to} Hz (rates must be 1..={MAX_RATE} Hz)")]
pub struct ResampleError {
    pub from: u32,
    pub to: u32,
}

/// Converts one mono stream from `from` Hz to `to` Hz, accepting input in
/// pieces of any size.
///
/// Output sample `k` is input time `k / to` seconds: the FFT filter's delay
/// is dropped at the start and pushed out with zeros on [`flush`], so `N`
/// input samples yield exactly `ceil(N * to / from)` output samples.
/// Timestamps computed from output positions therefore match the source.
///
/// [`flush`]: StreamResampler::flush
pub struct StreamResampler {
    from: u32,
    to: u32,
    /// `None` when the rates are equal.
    fft: Option<Fft>,
    consumed: u64,
    produced: u64,
}

struct Fft {
    resampler: FftFixedInOut<f32>,
    chunk_in: usize,
    /// Input not yet processed; never longer than one chunk.
    pending: Vec<f32>,
    chunk_out: Vec<f32>,
    /// Leading output samples still to drop (filter delay).
    to_skip: usize,
}

impl StreamResampler {
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        let valid = 1..=MAX_RATE;
        if !valid.contains(&from) || !valid.contains(&to) {
            return Err(ResampleError { from, to });
        }
        let build = |chunk_hint: usize| {
            FftFixedInOut::<f32>::new(from as usize, to as usize, chunk_hint.max(1), 1)
                .map_err(|_| ResampleError { from, to })
        };
        let fft = if from == to {
            None
        } else {
            // Chunks of about 20 ms, or the smallest the rate ratio allows.
            let mut resampler = build(from as usize / 50)?;
            // The sinc is centred on sample `len / 2`: only even chunk lengths
            // have the whole-sample delay that `output_delay()` reports.
            if resampler.input_frames_next() % 2 == 1 || resampler.output_frames_next() % 2 == 1 {
                resampler = build(2 * resampler.input_frames_next())?;
            }
            Some(Fft {
                chunk_in: resampler.input_frames_next(),
                pending: Vec::with_capacity(resampler.input_frames_next()),
                chunk_out: vec![0.0; resampler.output_frames_next()],
                to_skip: resampler.output_delay(),
                resampler,
            })
        };
        Ok(Self {
            from,
            to,
            fft,
            consumed: 0,
            produced: 0,
        })
    }

    pub fn input_rate(&self) -> u32 {
        self.from
    }

    pub fn output_rate(&self) -> u32 {
        self.to
    }

    /// Resamples `input`, appending whatever output is ready to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.consumed += input.len() as u64;
        let before = out.len();
        match &mut self.fft {
            None => out.extend_from_slice(input),
            Some(fft) => {
                let mut rest = input;
                while !rest.is_empty() {
                    let room = fft.chunk_in - fft.pending.len();
                    let (now, later) = rest.split_at(room.min(rest.len()));
                    fft.pending.extend_from_slice(now);
                    rest = later;
                    if fft.pending.len() == fft.chunk_in {
                        fft.run_chunk(out, usize::MAX);
                    }
                }
            }
        }
        self.produced += (out.len() - before) as u64;
    }

    /// Ends the stream: appends the delayed tail so the output covers the
    /// whole input, then resets for a new stream.
    pub fn flush(&mut self, out: &mut Vec<f32>) {
        let expected = (u128::from(self.consumed) * u128::from(self.to))
            .div_ceil(u128::from(self.from)) as u64;
        if let Some(fft) = &mut self.fft {
            while self.produced < expected {
                fft.pending.resize(fft.chunk_in, 0.0);
                let before = out.len();
                fft.run_chunk(out, (expected - self.produced) as usize);
                self.produced += (out.len() - before) as u64;
            }
            fft.resampler.reset();
            fft.pending.clear();
            fft.to_skip = fft.resampler.output_delay();
        }
        self.consumed = 0;
        self.produced = 0;
    }
}

impl Fft {
    /// Resamples the full `pending` chunk, appending at most `limit` samples
    /// past the delay.
    fn run_chunk(&mut self, out: &mut Vec<f32>, limit: usize) {
        let result =
            self.resampler
                .process_into_buffer(&[&self.pending], &mut [&mut self.chunk_out], None);
        // Both buffers are sized from the resampler's own frame counts, so this
        // cannot fail; should it ever, emitting silence keeps the timing intact.
        if result.is_err() {
            self.chunk_out.fill(0.0);
        }
        self.pending.clear();
        let skip = self.to_skip.min(self.chunk_out.len());
        self.to_skip -= skip;
        let ready = &self.chunk_out[skip..];
        out.extend_from_slice(&ready[..ready.len().min(limit)]);
    }
}

/// Resamples a whole buffer; see [`StreamResampler`] for the length contract.
pub fn resample(input: &[f32], from: u32, to: u32) -> Result<Vec<f32>, ResampleError> {
    let mut resampler = StreamResampler::new(from, to)?;
    let expected = (input.len() as u128 * u128::from(to)).div_ceil(u128::from(from)) as usize;
    let mut out = Vec::with_capacity(expected);
    resampler.process(input, &mut out);
    resampler.flush(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::PI;

    fn sine(rate: u32, freq: f32, len: usize) -> Vec<f32> {
        (0..len)
            .map(|n| 0.5 * (2.0 * PI * freq * n as f32 / rate as f32).sin())
            .collect()
    }

    /// Largest deviation from the ideal sine at `rate`, ignoring the edges.
    fn sine_error(out: &[f32], rate: u32, freq: f32) -> f32 {
        let edge = out.len() / 20;
        out[edge..out.len() - edge]
            .iter()
            .enumerate()
            .map(|(i, &y)| {
                let t = (i + edge) as f32 / rate as f32;
                (y - 0.5 * (2.0 * PI * freq * t).sin()).abs()
            })
            .fold(0.0, f32::max)
    }

    #[test]
    fn common_and_odd_rates_to_16k_align_with_exact_length() {
        // 440 Hz: no filter delay is a whole number of periods, so any lag shows.
        for from in [
            8_000, 11_025, 22_050, 44_100, 48_000, 88_200, 96_000, 8_009, 37_800,
        ] {
            let out = resample(&sine(from, 440.0, from as usize), from, 16_000).unwrap();
            assert_eq!(out.len(), 16_000, "{from} Hz");
            let err = sine_error(&out, 16_000, 440.0);
            assert!(err < 0.01, "{from} Hz: max error {err}");
        }
    }

    #[test]
    fn downsampling_removes_content_above_the_new_nyquist() {
        // 12 kHz cannot exist at 16 kHz; it must not alias down to 4 kHz.
        let out = resample(&sine(48_000, 12_000.0, 48_000), 48_000, 16_000).unwrap();
        let mid = &out[1_000..15_000];
        let rms = (mid.iter().map(|s| s * s).sum::<f32>() / mid.len() as f32).sqrt();
        assert!(rms < 0.01, "aliased energy {rms}");
    }

    #[test]
    fn piece_sizes_do_not_matter() {
        let input = sine(44_100, 700.0, 10_007);
        let whole = resample(&input, 44_100, 16_000).unwrap();
        let mut r = StreamResampler::new(44_100, 16_000).unwrap();
        let mut pieces = Vec::new();
        for chunk in input.chunks(333) {
            r.process(chunk, &mut pieces);
        }
        r.flush(&mut pieces);
        assert_eq!(pieces, whole);
    }

    #[test]
    fn equal_rates_pass_through() {
        let input = [0.0, 0.5, -1.0, 0.25];
        assert_eq!(resample(&input, 16_000, 16_000).unwrap(), input);
    }

    #[test]
    fn rates_out_of_range_are_errors() {
        for (from, to) in [(0, 16_000), (16_000, 0), (MAX_RATE + 1, 16_000)] {
            assert_eq!(
                StreamResampler::new(from, to).err(),
                Some(ResampleError { from, to })
            );
        }
    }
}
